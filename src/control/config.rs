//! The director's configuration file (slow path): the YAML schema, its parsing
//! and validation, and the compiled [`Config`] the rest of the director uses.
//!
//! This module owns everything between the YAML text and a validated
//! [`Config`]: defaults, range checks, cross-field and cross-service rules, and
//! the error messages users see from `ulvs-director --check`. It depends on
//! nothing else in the crate (only `std`, `serde`, `serde-saphyr` and
//! `thiserror`), and never runs on the packet path.
//!
//! # Pipeline
//!
//! 1. The text is deserialized by `serde-saphyr` into private *raw* structs
//!    (every one `#[serde(deny_unknown_fields)]`). Nearly every raw field is
//!    optional and wrapped in [`serde_saphyr::Spanned`], so that missing or
//!    invalid values are reported by this module with the line of the
//!    offending key, the item, or the value. A YAML syntax, type or
//!    unknown-field error stops here: it is then the single reported problem.
//! 2. The raw structs are checked and compiled into [`Config`]. *All* semantic
//!    problems are collected, sorted by line, and returned together as
//!    [`ConfigErrors`].
//!
//! # Line numbers and field paths
//!
//! * Semantic errors take their line from the `Spanned` location of the value
//!   at fault (for example the `weight:` value), or of the enclosing list item
//!   when the value is missing. Field paths are built while walking the raw
//!   structs (`services[1].real_servers[0].weight`).
//! * Errors from `serde-saphyr` carry a location; the field path for that line
//!   is recovered by [`line_paths`], a light indentation-based scan of the
//!   block-style YAML text that maps every line to the path of the key or list
//!   item it holds. For unknown fields the path ends with the unknown key
//!   (`services[0].real_servers[0].wieght`).
//!
//! # Rules worth knowing
//!
//! * At least one service is required. A service with no real servers is
//!   valid: all its traffic is dropped and counted as "no server".
//! * A service with `port: 0` takes every port of its VIP for its protocol, so
//!   it conflicts with any other service on the same VIP and protocol.
//! * A real server's `address` is `IP` in every mode; `IP:PORT` is allowed only
//!   in `nat` mode (port 1..=65535).
//! * `health.path` and `health.expect_status` are meant for `kind: http`. So
//!   that the contract's own example (which lists them with `kind: tcp`) stays
//!   valid, they are accepted with other kinds only when equal to their
//!   defaults (`/` and `200`); any other value is an error.
//! * When `health` is given, `health.kind` is required. When the service port
//!   is 0 and some real server has no port of its own, a checked service needs
//!   `health.port` (there is nothing else to probe).
//! * `workers` absent or 0: the number of entries in `cpus` when pinning is
//!   configured, else the number of CPUs; capped at [`MAX_WORKERS`].

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

/// Control socket used when the config does not name one.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ulvs/ulvs.sock";
/// Upper bound on `workers`.
pub const MAX_WORKERS: usize = 64;
/// Default total flow-table capacity (all workers together).
pub const DEFAULT_FLOW_CAPACITY: usize = 1_048_576;
/// Smallest accepted `flow_capacity`.
pub const MIN_FLOW_CAPACITY: usize = 1024;
/// Largest accepted `flow_capacity` (64 Mi flows).
pub const MAX_FLOW_CAPACITY: usize = 64 * 1024 * 1024;
/// Default Maglev lookup-table size (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
/// Smallest accepted Maglev table size.
pub const MIN_MAGLEV_TABLE_SIZE: u32 = 7;
/// Largest accepted Maglev table size.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 4_000_037;
/// Largest CPU index accepted in `cpus` (`CPU_SETSIZE` - 1).
pub const MAX_CPU_INDEX: usize = 1023;
/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_IFNAME_LEN: usize = 15;
/// Longest path that fits in `sockaddr_un.sun_path` with its NUL.
const MAX_SOCKET_PATH_LEN: usize = 107;
/// Longest health-check interval, in ms (one day).
const MAX_HEALTH_INTERVAL_MS: i64 = 86_400_000;
/// Largest `rise` / `fall`.
const MAX_RISE_FALL: i64 = 1000;

/// The validated, compiled configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The director's interface on the shared segment.
    pub interface: String,
    /// Unix socket `ulvsadm` talks to.
    pub control_socket: PathBuf,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Number of forwarding workers, 1..=64 (already resolved from "auto").
    pub workers: usize,
    /// Flow-table capacity for all workers together.
    pub flow_capacity: usize,
    /// Maglev lookup-table size, a prime.
    pub maglev_table_size: u32,
    /// Idle timeouts of flows.
    pub timeouts: Timeouts,
    /// What happens to established flows when their server goes down.
    pub on_server_down: OnServerDown,
    /// Whether the director answers ICMP echo requests sent to its VIPs.
    pub answer_ping: bool,
    /// Packet I/O backend.
    pub io: IoBackend,
    /// CPUs to pin workers to (worker `i` on `cpus[i % cpus.len()]`); empty = no pinning.
    pub cpus: Vec<usize>,
    /// The virtual services, in file order.
    pub services: Vec<Service>,
}

/// Flow idle timeouts, in milliseconds (the YAML gives seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Established TCP flows (YAML `tcp`, default 900 s).
    pub tcp_ms: u32,
    /// TCP flows after a FIN or RST (YAML `tcp_fin`, default 120 s).
    pub tcp_fin_ms: u32,
    /// UDP flows (YAML `udp`, default 300 s).
    pub udp_ms: u32,
    /// TCP flows that have seen only a SYN (YAML `tcp_syn`, default 120 s).
    pub tcp_syn_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_ms: 900_000,
            tcp_fin_ms: 120_000,
            udp_ms: 300_000,
            tcp_syn_ms: 120_000,
        }
    }
}

/// Generates a fieldless config enum with its YAML spellings.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant with its YAML spelling, in documentation order.
            pub const ALL: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            /// The YAML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// What to do with established flows whose real server goes down.
    OnServerDown {
        /// Move them to a live server (their next packet is rescheduled).
        Reschedule => "reschedule",
        /// Keep sending them to the dead server until they time out.
        Keep => "keep",
    }
}

config_enum! {
    /// Packet I/O backend.
    IoBackend {
        /// AF_XDP when the interface supports it, else AF_PACKET.
        Auto => "auto",
        /// AF_XDP only.
        AfXdp => "af_xdp",
        /// AF_PACKET only.
        AfPacket => "af_packet",
    }
}

config_enum! {
    /// L4 protocol of a service.
    Protocol {
        /// TCP.
        Tcp => "tcp",
        /// UDP.
        Udp => "udp",
    }
}

config_enum! {
    /// Forwarding method, as in LVS.
    Mode {
        /// Direct routing: rewrite the destination MAC only.
        Dr => "dr",
        /// NAT: rewrite destination IP (and port); replies come back through the director.
        Nat => "nat",
        /// IP-in-IP tunnelling.
        Tun => "tun",
    }
}

config_enum! {
    /// Real-server selection algorithm.
    Scheduler {
        /// Maglev consistent hashing.
        Maglev => "maglev",
    }
}

config_enum! {
    /// Health-check probe type.
    HealthKind {
        /// A TCP connect.
        Tcp => "tcp",
        /// An HTTP GET that must answer `expect_status`.
        Http => "http",
        /// No checks: every server is up.
        None => "none",
    }
}

/// One virtual service: a VIP, port and protocol balanced over real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique name, no whitespace.
    pub name: String,
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// The port; 0 means every port of the VIP.
    pub port: u16,
    /// `tcp` (default) or `udp`.
    pub protocol: Protocol,
    /// `dr` (default), `nat` or `tun`.
    pub mode: Mode,
    /// `maglev` (default, only choice).
    pub scheduler: Scheduler,
    /// Health checking; kind `None` when the YAML has no `health`.
    pub health: Health,
    /// The real servers, in file order. May be empty: then every packet for
    /// the service is dropped and counted as "no server".
    pub real_servers: Vec<RealServer>,
    /// Line of the service's list item in the file.
    pub line: Option<usize>,
}

/// Health checking of a service's real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Probe type; `None` means every server is always up.
    pub kind: HealthKind,
    /// HTTP request path (starts with `/`), default `/`.
    pub path: String,
    /// HTTP status that counts as healthy, default 200.
    pub expect_status: u16,
    /// Time between probes, default 1000 ms.
    pub interval_ms: u64,
    /// Probe timeout, default 500 ms, at most `interval_ms`.
    pub timeout_ms: u64,
    /// Consecutive successes to become up, default 2.
    pub rise: u32,
    /// Consecutive failures to become down, default 2.
    pub fall: u32,
    /// Probed port, when not the real server's (or the service's) port.
    pub port: Option<u16>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            kind: HealthKind::None,
            path: "/".to_string(),
            expect_status: 200,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
            port: None,
        }
    }
}

/// One real server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    /// Its IPv4 address.
    pub address: Ipv4Addr,
    /// Destination port (nat `IP:PORT` only); `None` keeps the client's port.
    pub port: Option<u16>,
    /// Maglev weight, 0..=65535; 0 takes no new flows.
    pub weight: u32,
    /// Line of the real server's list item in the file.
    pub line: Option<usize>,
}

impl RealServer {
    /// The address as written in the config and used by `ulvsadm`: `IP` or `IP:PORT`.
    pub fn endpoint(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.address),
            None => self.address.to_string(),
        }
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given by the caller.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Path of the field at fault, like `services[1].real_servers[0].weight`;
    /// empty when the problem is with the file as a whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": ")?;
            one_line(f, &self.field)?;
        }
        write!(f, ": ")?;
        one_line(f, &self.message)
    }
}

/// Write `s` with control characters escaped (`\n`, `\u{1b}`): a message
/// may quote the operator's input, and each problem must stay one line
/// (found by the config fuzz target: a quoted interface name with a newline).
fn one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file; displays as one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn display_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Parse and validate YAML text; `file` is only used in messages.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        if line_paths(text).content_lines == 0 {
            return Err(ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                line: None,
                field: String::new(),
                message: "the file is empty: expected a mapping with `interface` and `services`".to_string(),
            }]));
        }
        let raw: RawConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![serde_error(&e, text, file)]))?;
        let mut checker = Checker {
            file,
            paths: line_paths(text).paths,
            errors: Vec::new(),
        };
        let config = checker.config(&raw);
        if checker.errors.is_empty() {
            Ok(config)
        } else {
            let mut errors = checker.errors;
            errors.sort_by_key(|e| e.line);
            Err(ConfigErrors(errors))
        }
    }

    /// Read, parse and validate a config file. A read error becomes a
    /// [`ConfigError`] without line or field.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_str(&text, &file),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file,
                line: None,
                field: String::new(),
                message: format!("cannot read the file: {e}"),
            }])),
        }
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------
// Raw YAML shapes.

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "config")]
struct RawConfig {
    #[serde(default)]
    interface: Option<S<String>>,
    #[serde(default)]
    control_socket: Option<S<String>>,
    #[serde(default)]
    metrics_listen: Option<S<String>>,
    #[serde(default)]
    workers: Option<S<i64>>,
    #[serde(default)]
    flow_capacity: Option<S<i64>>,
    #[serde(default)]
    maglev_table_size: Option<S<i64>>,
    #[serde(default)]
    timeouts: Option<S<RawTimeouts>>,
    #[serde(default)]
    on_server_down: Option<S<String>>,
    #[serde(default)]
    answer_ping: Option<bool>,
    #[serde(default)]
    io: Option<S<String>>,
    #[serde(default)]
    cpus: Option<S<Vec<S<i64>>>>,
    #[serde(default)]
    services: Option<S<Vec<S<RawService>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "timeouts")]
struct RawTimeouts {
    #[serde(default)]
    tcp: Option<S<f64>>,
    #[serde(default)]
    tcp_fin: Option<S<f64>>,
    #[serde(default)]
    udp: Option<S<f64>>,
    #[serde(default)]
    tcp_syn: Option<S<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "service")]
struct RawService {
    #[serde(default)]
    name: Option<S<String>>,
    #[serde(default)]
    vip: Option<S<String>>,
    #[serde(default)]
    port: Option<S<i64>>,
    #[serde(default)]
    protocol: Option<S<String>>,
    #[serde(default)]
    mode: Option<S<String>>,
    #[serde(default)]
    scheduler: Option<S<String>>,
    #[serde(default)]
    health: Option<S<RawHealth>>,
    #[serde(default)]
    real_servers: Option<S<Vec<S<RawRealServer>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "health")]
struct RawHealth {
    #[serde(default)]
    kind: Option<S<String>>,
    #[serde(default)]
    path: Option<S<String>>,
    #[serde(default)]
    expect_status: Option<S<i64>>,
    #[serde(default)]
    interval_ms: Option<S<i64>>,
    #[serde(default)]
    timeout_ms: Option<S<i64>>,
    #[serde(default)]
    rise: Option<S<i64>>,
    #[serde(default)]
    fall: Option<S<i64>>,
    #[serde(default)]
    port: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "real_server")]
struct RawRealServer {
    #[serde(default)]
    address: Option<S<String>>,
    #[serde(default)]
    weight: Option<S<i64>>,
}

/// The 1-based line of a spanned value, `None` when unknown.
fn line_of<T>(s: &S<T>) -> Option<usize> {
    match s.referenced.line() {
        0 => None,
        l => usize::try_from(l).ok(),
    }
}

// ---------------------------------------------------------------------------
// Validation.

/// Collects errors while compiling the raw config.
struct Checker<'a> {
    file: &'a str,
    /// The field path of every line (see [`line_paths`]), to place errors
    /// about keys present with an empty value.
    paths: Vec<String>,
    errors: Vec<ConfigError>,
}

/// A service's identity, for conflict checks.
struct ServiceKey {
    vip: Ipv4Addr,
    port: u16,
    protocol: Protocol,
    name: String,
    line: Option<usize>,
}

impl Checker<'_> {
    fn error(&mut self, line: Option<usize>, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// The line of a top-level key written with an empty value (`services:`).
    fn key_line(&self, key: &str) -> Option<usize> {
        self.paths.iter().position(|p| p == key).map(|i| i + 1)
    }

    /// An integer in `lo..=hi`, or an error on the value's line.
    fn int(&mut self, v: &S<i64>, field: &str, lo: i64, hi: i64) -> Option<i64> {
        if (lo..=hi).contains(&v.value) {
            Some(v.value)
        } else {
            self.error(
                line_of(v),
                field,
                format!("must be between {lo} and {hi}, got {}", v.value),
            );
            None
        }
    }

    /// One of `allowed` (case-insensitive, `-` taken as `_`), or an error listing them.
    fn choice<T: Copy>(
        &mut self,
        v: Option<&S<String>>,
        field: &str,
        allowed: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        let Some(v) = v else {
            return Some(default);
        };
        let wanted = v.value.trim().to_ascii_lowercase().replace('-', "_");
        if let Some((_, t)) = allowed.iter().find(|(text, _)| *text == wanted) {
            return Some(*t);
        }
        let names: Vec<&str> = allowed.iter().map(|(text, _)| *text).collect();
        self.error(
            line_of(v),
            field,
            format!(
                "unknown value \"{}\"; allowed: {}",
                v.value.escape_debug(),
                names.join(", ")
            ),
        );
        None
    }

    fn config(&mut self, raw: &RawConfig) -> Config {
        let interface = self.interface(raw.interface.as_ref());
        let control_socket = self.control_socket(raw.control_socket.as_ref());
        let metrics_listen =
            raw.metrics_listen
                .as_ref()
                .and_then(|m| match m.value.trim().parse::<SocketAddr>() {
                    Ok(a) if a.port() != 0 => Some(a),
                    Ok(_) => {
                        self.error(line_of(m), "metrics_listen", "port 0 is not allowed");
                        None
                    }
                    Err(_) => {
                        self.error(
                            line_of(m),
                            "metrics_listen",
                            format!(
                                "\"{}\" is not IP:PORT (for example 127.0.0.1:9469)",
                                m.value.escape_debug()
                            ),
                        );
                        None
                    }
                });
        let cpus = self.cpus(raw.cpus.as_ref());
        let workers = self.workers(raw.workers.as_ref(), cpus.len());
        let flow_capacity = raw
            .flow_capacity
            .as_ref()
            .and_then(|v| {
                self.int(
                    v,
                    "flow_capacity",
                    MIN_FLOW_CAPACITY as i64,
                    MAX_FLOW_CAPACITY as i64,
                )
            })
            .map_or(DEFAULT_FLOW_CAPACITY, |v| v as usize);
        let maglev_table_size = self.maglev(raw.maglev_table_size.as_ref());
        let timeouts = self.timeouts(raw.timeouts.as_ref());
        let on_server_down = self
            .choice(
                raw.on_server_down.as_ref(),
                "on_server_down",
                OnServerDown::ALL,
                OnServerDown::Reschedule,
            )
            .unwrap_or(OnServerDown::Reschedule);
        let io = self
            .choice(raw.io.as_ref(), "io", IoBackend::ALL, IoBackend::Auto)
            .unwrap_or(IoBackend::Auto);
        let services = self.services(raw.services.as_ref(), maglev_table_size);
        Config {
            interface,
            control_socket,
            metrics_listen,
            workers,
            flow_capacity,
            maglev_table_size,
            timeouts,
            on_server_down,
            answer_ping: raw.answer_ping.unwrap_or(true),
            io,
            cpus,
            services,
        }
    }

    fn interface(&mut self, v: Option<&S<String>>) -> String {
        let Some(v) = v else {
            self.error(
                self.key_line("interface"),
                "interface",
                "required: the director's interface on the shared segment",
            );
            return String::new();
        };
        let name = v.value.as_str();
        if name.is_empty() {
            self.error(line_of(v), "interface", "must not be empty");
        } else if name.len() > MAX_IFNAME_LEN {
            self.error(
                line_of(v),
                "interface",
                format!("\"{name}\" is longer than {MAX_IFNAME_LEN} characters"),
            );
        } else if name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            self.error(
                line_of(v),
                "interface",
                format!(
                    "\"{}\" is not an interface name (no whitespace or '/')",
                    name.escape_debug()
                ),
            );
        }
        name.to_string()
    }

    fn control_socket(&mut self, v: Option<&S<String>>) -> PathBuf {
        let Some(v) = v else {
            return PathBuf::from(DEFAULT_CONTROL_SOCKET);
        };
        if v.value.is_empty() {
            self.error(line_of(v), "control_socket", "must not be empty");
        } else if v.value.len() > MAX_SOCKET_PATH_LEN {
            self.error(
                line_of(v),
                "control_socket",
                format!("a Unix socket path is at most {MAX_SOCKET_PATH_LEN} bytes"),
            );
        }
        PathBuf::from(&v.value)
    }

    fn cpus(&mut self, v: Option<&S<Vec<S<i64>>>>) -> Vec<usize> {
        let mut cpus = Vec::new();
        let mut seen: HashMap<i64, Option<usize>> = HashMap::new();
        for (i, cpu) in v
            .map(|v| v.value.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let field = format!("cpus[{i}]");
            if let Some(first) = seen.get(&cpu.value) {
                self.error(
                    line_of(cpu),
                    &field,
                    format!("CPU {} is listed twice{}", cpu.value, at_line(*first)),
                );
                continue;
            }
            seen.insert(cpu.value, line_of(cpu));
            if let Some(c) = self.int(cpu, &field, 0, MAX_CPU_INDEX as i64) {
                cpus.push(c as usize);
            }
        }
        cpus
    }

    fn workers(&mut self, v: Option<&S<i64>>, cpus: usize) -> usize {
        let configured = v
            .and_then(|v| self.int(v, "workers", 0, MAX_WORKERS as i64))
            .unwrap_or(0) as usize;
        if configured > 0 {
            configured
        } else if cpus > 0 {
            cpus.min(MAX_WORKERS)
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS)
        }
    }

    fn maglev(&mut self, v: Option<&S<i64>>) -> u32 {
        let Some(v) = v else {
            return DEFAULT_MAGLEV_TABLE_SIZE;
        };
        let field = "maglev_table_size";
        let Some(m) = self.int(
            v,
            field,
            i64::from(MIN_MAGLEV_TABLE_SIZE),
            i64::from(MAX_MAGLEV_TABLE_SIZE),
        ) else {
            return DEFAULT_MAGLEV_TABLE_SIZE;
        };
        let m = m as u32;
        if !is_prime(m) {
            self.error(
                line_of(v),
                field,
                format!(
                    "must be a prime number; {m} is not (nearest primes: {} and {})",
                    prev_prime(m),
                    next_prime(m)
                ),
            );
            return DEFAULT_MAGLEV_TABLE_SIZE;
        }
        m
    }

    fn timeouts(&mut self, v: Option<&S<RawTimeouts>>) -> Timeouts {
        let mut t = Timeouts::default();
        let Some(v) = v else {
            return t;
        };
        let raw = &v.value;
        for (value, field, slot) in [
            (&raw.tcp, "timeouts.tcp", &mut t.tcp_ms),
            (&raw.tcp_fin, "timeouts.tcp_fin", &mut t.tcp_fin_ms),
            (&raw.udp, "timeouts.udp", &mut t.udp_ms),
            (&raw.tcp_syn, "timeouts.tcp_syn", &mut t.tcp_syn_ms),
        ] {
            let Some(secs) = value else { continue };
            let ms = secs.value * 1000.0;
            let max_secs = f64::from(u32::MAX) / 1000.0;
            if !ms.is_finite() || ms.round() < 1.0 || ms.round() > f64::from(u32::MAX) {
                self.error(
                    line_of(secs),
                    field,
                    format!(
                        "must be a number of seconds > 0 (at least 0.001) and at most {max_secs}, got {}",
                        secs.value
                    ),
                );
            } else {
                *slot = ms.round() as u32;
            }
        }
        t
    }

    fn services(&mut self, v: Option<&S<Vec<S<RawService>>>>, maglev: u32) -> Vec<Service> {
        let Some(list) = v else {
            let line = self.key_line("services");
            self.error(line, "services", "at least one service is required");
            return Vec::new();
        };
        if list.value.is_empty() {
            self.error(line_of(list), "services", "at least one service is required");
        }
        let mut names: HashMap<String, Option<usize>> = HashMap::new();
        let mut keys: Vec<ServiceKey> = Vec::new();
        let mut out = Vec::new();
        for (i, raw) in list.value.iter().enumerate() {
            let f = format!("services[{i}]");
            let svc = self.service(raw, &f, maglev);
            let name_line = raw.value.name.as_ref().and_then(line_of);
            if let Some(name) = &svc.name {
                if let Some(first) = names.get(name) {
                    self.error(
                        name_line.or(line_of(raw)),
                        &format!("{f}.name"),
                        format!("duplicate service name \"{name}\"{}", at_line(*first)),
                    );
                } else {
                    names.insert(name.clone(), name_line.or(line_of(raw)));
                }
            }
            if let (Some(vip), Some(port), Some(protocol)) = (svc.vip, svc.port, svc.protocol) {
                let clash = keys.iter().find(|k| {
                    k.vip == vip && k.protocol == protocol && (k.port == port || k.port == 0 || port == 0)
                });
                if let Some(k) = clash {
                    let what = if port == 0 || k.port == 0 {
                        " (port 0 takes every port of the VIP)"
                    } else {
                        ""
                    };
                    let message = format!(
                        "{vip}:{port}/{protocol} overlaps service \"{}\" ({}:{}/{}{}){what}",
                        k.name,
                        k.vip,
                        k.port,
                        k.protocol,
                        k.line.map(|l| format!(", line {l}")).unwrap_or_default()
                    );
                    self.error(line_of(raw), &f, message);
                } else {
                    keys.push(ServiceKey {
                        vip,
                        port,
                        protocol,
                        name: svc.name.clone().unwrap_or_default(),
                        line: line_of(raw),
                    });
                }
            }
            out.push(Service {
                name: svc.name.unwrap_or_default(),
                vip: svc.vip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                port: svc.port.unwrap_or(0),
                protocol: svc.protocol.unwrap_or(Protocol::Tcp),
                mode: svc.mode.unwrap_or(Mode::Dr),
                scheduler: svc.scheduler,
                health: svc.health,
                real_servers: svc.real_servers,
                line: line_of(raw),
            });
        }
        out
    }

    /// Checks one service; `None` fields were invalid (and reported).
    fn service(&mut self, raw: &S<RawService>, f: &str, maglev: u32) -> CheckedService {
        let item_line = line_of(raw);
        let s = &raw.value;
        let name = match &s.name {
            None => {
                self.error(item_line, &format!("{f}.name"), "required");
                None
            }
            Some(n) if n.value.is_empty() => {
                self.error(line_of(n), &format!("{f}.name"), "must not be empty");
                None
            }
            Some(n) if n.value.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                self.error(
                    line_of(n),
                    &format!("{f}.name"),
                    format!("\"{}\" must not contain whitespace", n.value.escape_debug()),
                );
                None
            }
            Some(n) => Some(n.value.clone()),
        };
        let vip = match &s.vip {
            None => {
                self.error(item_line, &format!("{f}.vip"), "required");
                None
            }
            Some(v) => match parse_ipv4(&v.value) {
                Ok(ip) => Some(ip),
                Err(message) => {
                    self.error(line_of(v), &format!("{f}.vip"), message);
                    None
                }
            },
        };
        let port = match &s.port {
            None => {
                self.error(
                    item_line,
                    &format!("{f}.port"),
                    "required (0 means every port of the VIP)",
                );
                None
            }
            Some(p) => self.int(p, &format!("{f}.port"), 0, 65535).map(|p| p as u16),
        };
        let protocol = self.choice(
            s.protocol.as_ref(),
            &format!("{f}.protocol"),
            Protocol::ALL,
            Protocol::Tcp,
        );
        let mode = self.choice(s.mode.as_ref(), &format!("{f}.mode"), Mode::ALL, Mode::Dr);
        let scheduler = self
            .choice(
                s.scheduler.as_ref(),
                &format!("{f}.scheduler"),
                Scheduler::ALL,
                Scheduler::Maglev,
            )
            .unwrap_or(Scheduler::Maglev);
        let health = self.health(s.health.as_ref(), f);
        let real_servers = self.real_servers(s.real_servers.as_ref(), f, mode, port);
        if health.kind != HealthKind::None
            && health.port.is_none()
            && port == Some(0)
            && real_servers.iter().any(|r| r.port.is_none())
        {
            let line = s.health.as_ref().and_then(line_of).or(item_line);
            self.error(
                line,
                &format!("{f}.health.port"),
                "required: the service port is 0, so there is no port to probe",
            );
        }
        if real_servers.len() > maglev as usize {
            let line = s.real_servers.as_ref().and_then(line_of).or(item_line);
            self.error(
                line,
                &format!("{f}.real_servers"),
                format!(
                    "{} real servers do not fit a Maglev table of {maglev} entries",
                    real_servers.len()
                ),
            );
        }
        CheckedService {
            name,
            vip,
            port,
            protocol,
            mode,
            scheduler,
            health,
            real_servers,
        }
    }

    fn health(&mut self, v: Option<&S<RawHealth>>, f: &str) -> Health {
        let mut h = Health::default();
        let Some(v) = v else {
            return h;
        };
        let raw = &v.value;
        let f = format!("{f}.health");
        let kind = match &raw.kind {
            None => {
                let names: Vec<&str> = HealthKind::ALL.iter().map(|(t, _)| *t).collect();
                self.error(
                    line_of(v),
                    &format!("{f}.kind"),
                    format!("required when `health` is given; allowed: {}", names.join(", ")),
                );
                None
            }
            Some(_) => self.choice(
                raw.kind.as_ref(),
                &format!("{f}.kind"),
                HealthKind::ALL,
                HealthKind::None,
            ),
        };
        if let Some(kind) = kind {
            h.kind = kind;
        }
        let http = kind == Some(HealthKind::Http);
        if let Some(p) = &raw.path {
            let field = format!("{f}.path");
            if !p.value.starts_with('/') {
                self.error(
                    line_of(p),
                    &field,
                    format!("\"{}\" must start with '/'", p.value.escape_debug()),
                );
            } else if p.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    line_of(p),
                    &field,
                    format!(
                        "\"{}\" must not contain whitespace or control characters",
                        p.value.escape_debug()
                    ),
                );
            } else if kind.is_some() && !http && p.value != h.path {
                self.error(
                    line_of(p),
                    &field,
                    format!("is only used with kind http, not {}", h.kind),
                );
            } else {
                h.path = p.value.clone();
            }
        }
        if let Some(s) = &raw.expect_status {
            let field = format!("{f}.expect_status");
            if let Some(code) = self.int(s, &field, 100, 599) {
                if kind.is_some() && !http && code != i64::from(h.expect_status) {
                    self.error(
                        line_of(s),
                        &field,
                        format!("is only used with kind http, not {}", h.kind),
                    );
                } else {
                    h.expect_status = code as u16;
                }
            }
        }
        let interval = raw
            .interval_ms
            .as_ref()
            .map(|i| self.int(i, &format!("{f}.interval_ms"), 1, MAX_HEALTH_INTERVAL_MS));
        if let Some(Some(i)) = interval {
            h.interval_ms = i as u64;
        }
        if let Some(t) = &raw.timeout_ms {
            let field = format!("{f}.timeout_ms");
            if let Some(ms) = self.int(t, &field, 1, MAX_HEALTH_INTERVAL_MS) {
                // Compare against the interval only when that one is valid.
                if interval != Some(None) && ms as u64 > h.interval_ms {
                    self.error(
                        line_of(t),
                        &field,
                        format!("{ms} must not exceed interval_ms ({})", h.interval_ms),
                    );
                } else {
                    h.timeout_ms = ms as u64;
                }
            }
        } else if interval != Some(None) && h.timeout_ms > h.interval_ms {
            // Only the default timeout is too long for a short interval: use the interval.
            h.timeout_ms = h.interval_ms;
        }
        if let Some(r) = &raw.rise {
            if let Some(r) = self.int(r, &format!("{f}.rise"), 1, MAX_RISE_FALL) {
                h.rise = r as u32;
            }
        }
        if let Some(r) = &raw.fall {
            if let Some(r) = self.int(r, &format!("{f}.fall"), 1, MAX_RISE_FALL) {
                h.fall = r as u32;
            }
        }
        if let Some(p) = &raw.port {
            if let Some(p) = self.int(p, &format!("{f}.port"), 1, 65535) {
                h.port = Some(p as u16);
            }
        }
        h
    }

    fn real_servers(
        &mut self,
        v: Option<&S<Vec<S<RawRealServer>>>>,
        f: &str,
        mode: Option<Mode>,
        service_port: Option<u16>,
    ) -> Vec<RealServer> {
        let mut out = Vec::new();
        let mut seen: HashMap<(Ipv4Addr, Option<u16>), Option<usize>> = HashMap::new();
        let list = v.map(|v| v.value.as_slice()).unwrap_or_default();
        for (j, raw) in list.iter().enumerate() {
            let f = format!("{f}.real_servers[{j}]");
            let item_line = line_of(raw);
            let r = &raw.value;
            let weight = match &r.weight {
                None => Some(1),
                Some(w) => self.int(w, &format!("{f}.weight"), 0, 65535).map(|w| w as u32),
            };
            let Some(a) = &r.address else {
                self.error(item_line, &format!("{f}.address"), "required");
                continue;
            };
            let field = format!("{f}.address");
            let (address, port) = match parse_endpoint(&a.value) {
                Ok(endpoint) => endpoint,
                Err(message) => {
                    self.error(line_of(a), &field, message);
                    continue;
                }
            };
            match (port, mode) {
                (Some(_), Some(Mode::Dr | Mode::Tun)) => {
                    self.error(
                        line_of(a),
                        &field,
                        format!(
                            "IP:PORT is only allowed in nat mode; {} forwards to the service's port, write just {address}",
                            mode.map_or("this mode", Mode::as_str)
                        ),
                    );
                    continue;
                }
                (Some(0), _) => {
                    self.error(line_of(a), &field, "port 0 is not allowed");
                    continue;
                }
                (Some(_), Some(Mode::Nat)) if service_port == Some(0) => {
                    // Every VIP port would map onto one server port, and the
                    // reply could not tell which VIP port to answer from.
                    self.error(
                        line_of(a),
                        &field,
                        format!("a port-0 (all ports) nat service keeps each port: write just {address}"),
                    );
                    continue;
                }
                _ => {}
            }
            // A nat server without a port receives the service's port, so
            // `IP` and `IP:PORT` are the same server when PORT is that port.
            let effective = port.or(service_port.filter(|p| *p != 0));
            let key = (address, effective);
            if let Some(first) = seen.get(&key) {
                self.error(
                    line_of(a),
                    &field,
                    format!("duplicate real server {}{}", a.value.trim(), at_line(*first)),
                );
                continue;
            }
            seen.insert(key, line_of(a));
            if let Some(weight) = weight {
                out.push(RealServer {
                    address,
                    port,
                    weight,
                    line: item_line,
                });
            }
        }
        out
    }
}

/// A service whose fields are `None` where invalid.
struct CheckedService {
    name: Option<String>,
    vip: Option<Ipv4Addr>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    mode: Option<Mode>,
    scheduler: Scheduler,
    health: Health,
    real_servers: Vec<RealServer>,
}

/// " (first at line N)" or "".
fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (first at line {l})")).unwrap_or_default()
}

/// Whether the text looks like an IPv6 address, with or without brackets/port.
fn looks_like_ipv6(s: &str) -> bool {
    s.starts_with('[') || s.matches(':').count() >= 2
}

/// A unicast IPv4 address usable as a VIP or real server.
fn check_unicast(ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        Err(format!(
            "{ip} is not a usable address (unspecified, broadcast, multicast or loopback)"
        ))
    } else {
        Ok(ip)
    }
}

/// A VIP: an IPv4 address, no port.
fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("must not be empty".to_string());
    }
    match t.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => check_unicast(ip),
        Ok(IpAddr::V6(_)) => Err(format!("{t}: IPv6 is not supported")),
        Err(_) if looks_like_ipv6(t) => Err(format!("{t}: IPv6 is not supported")),
        Err(_) if t.parse::<SocketAddr>().is_ok() => Err(format!(
            "\"{t}\" must be an IPv4 address without a port (the port goes in `port`)"
        )),
        Err(_) => Err(format!("\"{}\" is not a valid IPv4 address", t.escape_debug())),
    }
}

/// A real server's address: `IP` or `IP:PORT` (the mode decides whether a port may be given).
fn parse_endpoint(text: &str) -> Result<(Ipv4Addr, Option<u16>), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(ip) => check_unicast(ip).map(|ip| (ip, None)),
            IpAddr::V6(_) => Err(format!("{t}: IPv6 is not supported")),
        };
    }
    if looks_like_ipv6(t) {
        return Err(format!("{t}: IPv6 is not supported"));
    }
    if let Some((host, port)) = t.rsplit_once(':') {
        let ip = host
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("\"{}\" is not a valid IPv4 address", host.escape_debug()))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("\"{}\" is not a port number (0..=65535)", port.escape_debug()))?;
        return check_unicast(ip).map(|ip| (ip, Some(port)));
    }
    Err(format!("\"{}\" is not a valid IPv4 address", t.escape_debug()))
}

/// Trial division; plenty for numbers up to a few million.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn prev_prime(n: u32) -> u32 {
    (2..n).rev().find(|&m| is_prime(m)).unwrap_or(2)
}

fn next_prime(n: u32) -> u32 {
    (n.saturating_add(1)..=u32::MAX)
        .find(|&m| is_prime(m))
        .unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// serde-saphyr errors.

/// Converts a `serde-saphyr` error into a [`ConfigError`], with the line of
/// its location and the field path found for that line.
fn serde_error(err: &serde_saphyr::Error, text: &str, file: &str) -> ConfigError {
    let mut inner = err.without_snippet();
    if let serde_saphyr::Error::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let line = err
        .location()
        .map(|l| l.line())
        .filter(|&l| l > 0)
        .and_then(|l| usize::try_from(l).ok());
    // The parser points into the second document; the `---` before it is what to remove.
    let line = match (inner, line) {
        (serde_saphyr::Error::MultipleDocuments { .. }, Some(l)) => Some(
            (1..=l)
                .rev()
                .find(|&n| text.split('\n').nth(n - 1).is_some_and(|t| t.starts_with("---")))
                .unwrap_or(l),
        ),
        _ => line,
    };
    let syntax = matches!(
        inner,
        serde_saphyr::Error::ExternalMessage { .. }
            | serde_saphyr::Error::Eof { .. }
            | serde_saphyr::Error::MultipleDocuments { .. }
    );
    let mut field = match (line, syntax) {
        (Some(line), false) => {
            let column = err
                .location()
                .and_then(|l| usize::try_from(l.column()).ok())
                .unwrap_or(0);
            field_at(text, line, column)
        }
        _ => String::new(),
    };
    if let serde_saphyr::Error::SerdeUnknownField { field: name, .. } = inner {
        let last = field.rsplit(['.', '[']).next().unwrap_or("");
        if last != name {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(name);
        }
    }
    let message: String = match inner {
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "only one YAML document is allowed (remove the `---` separator)".to_string()
        }
        serde_saphyr::Error::Unexpected { expected, .. } if expected.contains("mapping") => {
            "expected a mapping of `key: value` fields here".to_string()
        }
        _ => {
            let text = serde_saphyr::DefaultMessageFormatter.format_message(inner);
            let text = if syntax {
                format!("YAML syntax error: {text}")
            } else {
                text.into_owned()
            };
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        }
    };
    ConfigError {
        file: file.to_string(),
        line,
        field,
        message,
    }
}

// ---------------------------------------------------------------------------
// Line → field path scan.

/// What [`line_paths`] finds.
struct LinePaths {
    /// For each line (index = line - 1), the path of the deepest key or list
    /// item open on that line, like `services[0].real_servers[1].weight`.
    paths: Vec<String>,
    /// For each line, the byte offset where a flow collection (`{` or `[`)
    /// starts as the value of that line's key or list item.
    flow_starts: Vec<Option<usize>>,
    /// Lines holding something other than blanks and comments.
    content_lines: usize,
}

enum Seg {
    Key(String),
    Index(usize),
}

/// Maps each line of block-style YAML to a field path by indentation. Flow
/// collections (`{...}`, `[...]`) map to the key that holds them. Best effort:
/// only used to name the field of errors reported by the YAML parser.
fn line_paths(text: &str) -> LinePaths {
    let mut stack: Vec<(usize, Seg)> = Vec::new();
    let mut paths = Vec::new();
    let mut flow_starts = Vec::new();
    let mut content_lines = 0;
    // Lines indented deeper than this belong to a block scalar (`|`, `>`).
    let mut block_scalar: Option<usize> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut rest = &line[indent..];
        if let Some(parent) = block_scalar {
            if rest.trim().is_empty() || indent > parent {
                content_lines += 1;
                paths.push(render_path(&stack));
                flow_starts.push(None);
                continue;
            }
            block_scalar = None;
        }
        if rest.trim().is_empty() || rest.starts_with('#') {
            paths.push(render_path(&stack));
            flow_starts.push(None);
            continue;
        }
        content_lines += 1;
        if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
            stack.clear();
            paths.push(String::new());
            flow_starts.push(None);
            continue;
        }
        let mut col = indent;
        // List-item dashes, possibly nested on one line (`- - x`).
        while rest == "-" || rest.starts_with("- ") {
            while stack.last().is_some_and(|(c, _)| *c > col) {
                stack.pop();
            }
            match stack.last_mut() {
                Some((c, Seg::Index(i))) if *c == col => *i += 1,
                _ => stack.push((col, Seg::Index(0))),
            }
            let after = &rest[1..];
            let spaces = after.len() - after.trim_start_matches(' ').len();
            col += 1 + spaces;
            rest = &after[spaces..];
        }
        let mut value = rest;
        if let Some((key, v)) = split_key(rest) {
            while stack.last().is_some_and(|(c, _)| *c >= col) {
                stack.pop();
            }
            stack.push((col, Seg::Key(key)));
            if v.starts_with('|') || v.starts_with('>') {
                block_scalar = Some(col);
            }
            value = v;
        }
        paths.push(render_path(&stack));
        // `value` is a suffix of `line`.
        flow_starts.push(value.starts_with(['{', '[']).then(|| line.len() - value.len()));
    }
    LinePaths {
        paths,
        flow_starts,
        content_lines,
    }
}

/// The field path at a 1-based line and column: the block path of the line,
/// extended through a flow collection on that line up to the column.
fn field_at(text: &str, line: usize, column: usize) -> String {
    let scan = line_paths(text);
    let Some(mut path) = scan.paths.get(line - 1).cloned() else {
        return String::new();
    };
    let start = scan.flow_starts.get(line - 1).copied().flatten();
    let source = text.split('\n').nth(line - 1).unwrap_or("");
    let end = source
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(source.len(), |(i, _)| i);
    if let Some(start) = start.filter(|s| *s < end) {
        for segment in flow_path(&source[start..end]) {
            match segment {
                Seg::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&k);
                }
                Seg::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
    }
    path
}

/// The keys and indices open at the end of `flow`, the start of a one-line
/// flow collection (`{a: [1, {b: ...`).
fn flow_path(flow: &str) -> Vec<Seg> {
    enum Frame {
        Map(Option<String>),
        Seq(usize),
    }
    let mut frames: Vec<Frame> = Vec::new();
    let mut token = String::new();
    let mut chars = flow.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                token.clear();
                while let Some(q) = chars.next() {
                    if q == c {
                        if c == '\'' && chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    } else if q == '\\' && c == '"' {
                        chars.next();
                    }
                    token.push(q);
                }
            }
            '{' => {
                frames.push(Frame::Map(None));
                token.clear();
            }
            '[' => {
                frames.push(Frame::Seq(0));
                token.clear();
            }
            '}' | ']' => {
                frames.pop();
                token.clear();
            }
            ',' => {
                match frames.last_mut() {
                    Some(Frame::Seq(i)) => *i += 1,
                    Some(Frame::Map(key)) => *key = None,
                    None => {}
                }
                token.clear();
            }
            ':' if chars.peek().is_none_or(|n| matches!(n, ' ' | ',' | '}' | ']')) => {
                if let Some(Frame::Map(key)) = frames.last_mut() {
                    *key = Some(token.trim().to_string());
                }
                token.clear();
            }
            _ => token.push(c),
        }
    }
    frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Map(key) => key.map(Seg::Key),
            Frame::Seq(i) => Some(Seg::Index(i)),
        })
        .collect()
}

/// `key: value` → (key, value without comment); `None` when the text is not a key.
fn split_key(text: &str) -> Option<(String, &str)> {
    let (key, after) = if let Some(quote @ ('"' | '\'')) = text.chars().next() {
        let end = text[1..].find(quote)? + 1;
        (text[1..end].to_string(), &text[end + 1..])
    } else {
        if text.starts_with(['{', '[', '&', '*', '!', '|', '>', '%', '@', '`', '#']) {
            return None;
        }
        let mut split = None;
        for (i, c) in text.char_indices() {
            if c == ':' {
                let next = text[i + 1..].chars().next();
                if next.is_none_or(|n| n == ' ' || n == '\t') {
                    split = Some(i);
                    break;
                }
            } else if c == '#' && text[..i].ends_with([' ', '\t']) {
                return None;
            }
        }
        let i = split?;
        (text[..i].trim_end().to_string(), &text[i..])
    };
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) {
        return None;
    }
    let value = value.trim_start();
    let value = if value.starts_with('#') { "" } else { value };
    Some((key, value))
}

fn render_path(stack: &[(usize, Seg)]) -> String {
    let mut out = String::new();
    for (_, seg) in stack {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config section of CONTRACT.md, verbatim.
    const CONTRACT_EXAMPLE: &str = "\
interface: eth0                 # the director's interface on the shared segment
control_socket: /run/ulvs/ulvs.sock   # optional, this is the default
metrics_listen: 127.0.0.1:9469  # optional; Prometheus text format at GET /metrics
services:
  - name: web                   # unique
    vip: 198.18.100.1
    port: 80                    # 0 means every port of the VIP
    protocol: tcp               # tcp | udp
    mode: dr                    # dr | nat | tun
    scheduler: maglev           # maglev is the default
    health:                     # optional; omitted means every server is up
      kind: tcp                 # tcp | http | none
      path: /                   # http only
      expect_status: 200        # http only
      interval_ms: 1000
      timeout_ms: 500
      rise: 2
      fall: 2
    real_servers:
      - address: 198.18.0.11    # dr and tun: an IP; nat: IP or IP:PORT
        weight: 1               # 0 takes no new flows
";

    /// A small valid config; line numbers are in the comments.
    const BASE: &str = "\
interface: eth0
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    real_servers:
      - address: 198.18.0.11
        weight: 1
";

    fn cpus() -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS)
    }

    fn ok(text: &str) -> Config {
        match Config::from_str(text, "t.yaml") {
            Ok(c) => c,
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    fn errs(text: &str) -> Vec<ConfigError> {
        match Config::from_str(text, "t.yaml") {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.0,
        }
    }

    /// Exactly one error, with this line and field, whose message contains `needle`.
    fn one(text: &str, line: Option<usize>, field: &str, needle: &str) -> ConfigError {
        let e = errs(text);
        assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
        let e = e.into_iter().next().unwrap();
        assert_eq!(e.line, line, "{e}");
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(needle), "{e} lacks {needle:?}");
        e
    }

    #[test]
    fn contract_example_parses() {
        let c = ok(CONTRACT_EXAMPLE);
        let expected = Config {
            interface: "eth0".into(),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            metrics_listen: Some("127.0.0.1:9469".parse().unwrap()),
            workers: cpus(),
            flow_capacity: 1_048_576,
            maglev_table_size: 65_537,
            timeouts: Timeouts {
                tcp_ms: 900_000,
                tcp_fin_ms: 120_000,
                udp_ms: 300_000,
                tcp_syn_ms: 120_000,
            },
            on_server_down: OnServerDown::Reschedule,
            answer_ping: true,
            io: IoBackend::Auto,
            cpus: vec![],
            services: vec![Service {
                name: "web".into(),
                vip: Ipv4Addr::new(198, 18, 100, 1),
                port: 80,
                protocol: Protocol::Tcp,
                mode: Mode::Dr,
                scheduler: Scheduler::Maglev,
                health: Health {
                    kind: HealthKind::Tcp,
                    path: "/".into(),
                    expect_status: 200,
                    interval_ms: 1000,
                    timeout_ms: 500,
                    rise: 2,
                    fall: 2,
                    port: None,
                },
                real_servers: vec![RealServer {
                    address: Ipv4Addr::new(198, 18, 0, 11),
                    port: None,
                    weight: 1,
                    line: Some(20),
                }],
                line: Some(5),
            }],
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn defaults() {
        let c = ok("interface: eth0\nservices:\n  - name: a\n    vip: 198.18.100.1\n    port: 0\n");
        let s = &c.services[0];
        assert_eq!(s.protocol, Protocol::Tcp);
        assert_eq!(s.mode, Mode::Dr);
        assert_eq!(s.scheduler, Scheduler::Maglev);
        assert_eq!(s.health, Health::default());
        assert!(s.real_servers.is_empty(), "a service without servers is valid");
        assert_eq!(c.workers, cpus());
        assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        assert_eq!(c.metrics_listen, None);
        assert!(c.answer_ping);
    }

    #[test]
    fn all_options() {
        let c = ok("\
interface: eth1
control_socket: /tmp/x.sock
workers: 3
flow_capacity: 2048
maglev_table_size: 251
timeouts: {tcp: 0.5, tcp_fin: 2, udp: 1.25, tcp_syn: 3}
on_server_down: keep
answer_ping: false
io: af_packet
cpus: [2, 3]
services:
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    mode: nat
    health: {kind: http, path: /healthz, expect_status: 204, interval_ms: 200, timeout_ms: 100, rise: 3, fall: 4, port: 8080}
    real_servers:
      - {address: \"198.18.0.11:5353\", weight: 0}
      - address: 198.18.0.12
");
        assert_eq!(c.interface, "eth1");
        assert_eq!(c.control_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.workers, 3);
        assert_eq!(c.flow_capacity, 2048);
        assert_eq!(c.maglev_table_size, 251);
        assert_eq!(
            c.timeouts,
            Timeouts {
                tcp_ms: 500,
                tcp_fin_ms: 2000,
                udp_ms: 1250,
                tcp_syn_ms: 3000
            }
        );
        assert_eq!(c.on_server_down, OnServerDown::Keep);
        assert!(!c.answer_ping);
        assert_eq!(c.io, IoBackend::AfPacket);
        assert_eq!(c.cpus, vec![2, 3]);
        let s = &c.services[0];
        assert_eq!((s.protocol, s.mode), (Protocol::Udp, Mode::Nat));
        assert_eq!(
            s.health,
            Health {
                kind: HealthKind::Http,
                path: "/healthz".into(),
                expect_status: 204,
                interval_ms: 200,
                timeout_ms: 100,
                rise: 3,
                fall: 4,
                port: Some(8080),
            }
        );
        assert_eq!(s.real_servers[0].port, Some(5353));
        assert_eq!(s.real_servers[0].weight, 0);
        assert_eq!(s.real_servers[0].endpoint(), "198.18.0.11:5353");
        assert_eq!(s.real_servers[1].port, None);
        assert_eq!(s.real_servers[1].line, Some(20));
        assert_eq!(c.service("dns").map(|s| s.port), Some(53));
    }

    #[test]
    fn workers_follow_cpus() {
        let c = ok(&format!("cpus: [0, 1]\n{BASE}"));
        assert_eq!(c.workers, 2);
        let c = ok(&format!("workers: 0\n{BASE}"));
        assert_eq!(c.workers, cpus());
        one(
            &format!("workers: 65\n{BASE}"),
            Some(1),
            "workers",
            "between 0 and 64",
        );
        one(
            &format!("cpus: [0, 0]\n{BASE}"),
            Some(1),
            "cpus[1]",
            "listed twice",
        );
        one(
            &format!("cpus:\n  - 1\n  - 1024\n{BASE}"),
            Some(3),
            "cpus[1]",
            "between 0 and 1023",
        );
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text = BASE.replace("        weight: 1", "        wieght: 1");
        let e = one(
            &text,
            Some(8),
            "services[0].real_servers[0].wieght",
            "unknown field `wieght`",
        );
        assert!(e.message.contains("weight"), "lists allowed fields: {e}");
        let text = format!("{BASE}    colour: red\n");
        one(&text, Some(9), "services[0].colour", "unknown field `colour`");
        one(
            &format!("intrface: eth0\n{BASE}"),
            Some(1),
            "intrface",
            "unknown field",
        );
        let text = BASE.replace(
            "  - name: web\n",
            "  - name: web\n    health: {kind: tcp, rize: 2}\n",
        );
        one(&text, Some(4), "services[0].health.rize", "unknown field `rize`");
    }

    #[test]
    fn type_and_syntax_errors_carry_line() {
        let text = BASE.replace("port: 80", "port: eighty");
        let e = errs(&text);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(5));
        assert_eq!(e[0].field, "services[0].port");
        let e = errs("interface: [eth0\nservices: []\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].line.is_some());
        let e = errs("interface: eth0\ninterface: eth1\n");
        assert_eq!((e[0].line, e[0].field.as_str()), (Some(2), "interface"));
        assert!(e[0].message.contains("duplicate"), "{}", e[0]);
        let e = errs("");
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("empty"));
        let e = errs("# nothing\n\n");
        assert!(e[0].message.contains("empty"));
    }

    #[test]
    fn flow_style_and_syntax_errors() {
        one(
            "interface: eth0\nservices:\n  - {name: a, vip: 198.18.100.1, port: 80, real_servers: [{address: 198.18.0.11}, {address: 198.18.0.12, wieght: 1}]}\n",
            Some(3),
            "services[0].real_servers[1].wieght",
            "unknown field `wieght`",
        );
        one(
            "interface: eth0\nservices: [{name: a, vip: 198.18.100.1, port: x}]\n",
            Some(2),
            "services[0].port",
            "",
        );
        one(
            "interface: eth0\nservices:\n  - name: a\n    port: 80\n  weird\n",
            Some(5),
            "",
            "YAML syntax error",
        );
        one(
            &format!("{BASE}---\ninterface: eth1\n"),
            Some(9),
            "",
            "only one YAML document",
        );
        one(
            "interface: eth0\nservices:\n  - name: a\n    real_servers:\n      - 198.18.0.11\n",
            Some(5),
            "services[0].real_servers[0]",
            "expected a mapping",
        );
    }

    #[test]
    fn interface_rules() {
        one(
            &BASE.replace("interface: eth0", "interface: \"\""),
            Some(1),
            "interface",
            "must not be empty",
        );
        one(
            &BASE.replace("interface: eth0\n", ""),
            None,
            "interface",
            "required",
        );
        one(
            &BASE.replace("eth0", "averyveryverylongname0"),
            Some(1),
            "interface",
            "longer than 15",
        );
    }

    #[test]
    fn services_required() {
        one("interface: eth0\n", None, "services", "at least one service");
        one(
            "interface: eth0\n\nservices:  # none yet\n",
            Some(3),
            "services",
            "at least one service",
        );
        one(
            &BASE.replace("interface: eth0", "interface:"),
            Some(1),
            "interface",
            "required",
        );
        one(
            "interface: eth0\nservices: []\n",
            Some(2),
            "services",
            "at least one service",
        );
    }

    #[test]
    fn duplicate_names_and_keys() {
        let text = format!("{BASE}  - name: web\n    vip: 198.18.100.2\n    port: 80\n");
        let e = one(
            &text,
            Some(9),
            "services[1].name",
            "duplicate service name \"web\"",
        );
        assert!(e.message.contains("line 3"), "{e}");
        let text = format!("{BASE}  - name: web2\n    vip: 198.18.100.1\n    port: 80\n");
        one(&text, Some(9), "services[1]", "overlaps service \"web\"");
        // Same VIP and port, other protocol: fine.
        ok(&format!(
            "{BASE}  - name: web2\n    vip: 198.18.100.1\n    port: 80\n    protocol: udp\n"
        ));
        // Port 0 takes every port of the VIP for its protocol.
        let text = format!("{BASE}  - name: all\n    vip: 198.18.100.1\n    port: 0\n");
        one(&text, Some(9), "services[1]", "port 0 takes every port");
        ok(&format!(
            "{BASE}  - name: all\n    vip: 198.18.100.1\n    port: 0\n    protocol: udp\n"
        ));
    }

    #[test]
    fn addresses() {
        one(
            &BASE.replace("vip: 198.18.100.1", "vip: 2001:db8::1"),
            Some(4),
            "services[0].vip",
            "IPv6 is not supported",
        );
        one(
            &BASE.replace("vip: 198.18.100.1", "vip: 198.18.100.300"),
            Some(4),
            "services[0].vip",
            "not a valid IPv4 address",
        );
        one(
            &BASE.replace("vip: 198.18.100.1", "vip: 198.18.100.1:80"),
            Some(4),
            "services[0].vip",
            "without a port",
        );
        one(
            &BASE.replace("address: 198.18.0.11", "address: \"[2001:db8::2]:80\""),
            Some(7),
            "services[0].real_servers[0].address",
            "IPv6 is not supported",
        );
        one(
            &BASE.replace("address: 198.18.0.11", "address: 198.18.0"),
            Some(7),
            "services[0].real_servers[0].address",
            "not a valid IPv4 address",
        );
        one(
            &BASE.replace("vip: 198.18.100.1", "vip: 0.0.0.0"),
            Some(4),
            "services[0].vip",
            "not a usable address",
        );
    }

    #[test]
    fn ip_port_only_in_nat() {
        let text = BASE.replace("address: 198.18.0.11", "address: 198.18.0.11:8080");
        one(
            &text,
            Some(7),
            "services[0].real_servers[0].address",
            "only allowed in nat mode",
        );
        let text = text.replace("    port: 80\n", "    port: 80\n    mode: tun\n");
        one(
            &text,
            Some(8),
            "services[0].real_servers[0].address",
            "only allowed in nat mode",
        );
        let c = ok(&text.replace("mode: tun", "mode: nat"));
        let rs = &c.services[0].real_servers[0];
        assert_eq!((rs.address, rs.port), (Ipv4Addr::new(198, 18, 0, 11), Some(8080)));
        let text = BASE
            .replace("    port: 80\n", "    port: 80\n    mode: nat\n")
            .replace("address: 198.18.0.11", "address: 198.18.0.11:0");
        one(
            &text,
            Some(8),
            "services[0].real_servers[0].address",
            "port 0 is not allowed",
        );
        let text = BASE
            .replace("    port: 80\n", "    port: 80\n    mode: nat\n")
            .replace("address: 198.18.0.11", "address: 198.18.0.11:70000");
        one(
            &text,
            Some(8),
            "services[0].real_servers[0].address",
            "not a port number",
        );
    }

    #[test]
    fn real_server_rules() {
        let text = format!("{BASE}      - address: 198.18.0.11\n");
        let e = one(
            &text,
            Some(9),
            "services[0].real_servers[1].address",
            "duplicate real server 198.18.0.11",
        );
        assert!(e.message.contains("line 7"), "{e}");
        // nat port 0 (all ports): a server port is refused.
        one(
            "interface: eth0\nservices:\n  - name: a\n    vip: 198.18.100.1\n    port: 0\n    mode: nat\n    real_servers:\n      - address: 198.18.0.11:8080\n",
            Some(8),
            "services[0].real_servers[0].address",
            "a port-0 (all ports) nat service keeps each port",
        );
        // nat: IP and IP:PORT with the service's port are the same server.
        let text = format!("{BASE}      - address: 198.18.0.11:80\n")
            .replace("    port: 80\n", "    port: 80\n    mode: nat\n");
        one(
            &text,
            Some(10),
            "services[0].real_servers[1].address",
            "duplicate",
        );
        // nat: other ports on the same IP are other servers.
        ok(&format!("{BASE}      - address: 198.18.0.11:81\n")
            .replace("    port: 80\n", "    port: 80\n    mode: nat\n"));
        one(
            &BASE.replace("weight: 1", "weight: 65536"),
            Some(8),
            "services[0].real_servers[0].weight",
            "between 0 and 65535",
        );
        one(
            &BASE.replace("weight: 1", "weight: -1"),
            Some(8),
            "services[0].real_servers[0].weight",
            "between 0 and 65535",
        );
        one(
            &BASE
                .replace("      - address: 198.18.0.11\n", "      - weight: 3\n")
                .replace("        weight: 1\n", ""),
            Some(7),
            "services[0].real_servers[0].address",
            "required",
        );
    }

    #[test]
    fn service_field_rules() {
        one(
            &BASE.replace("port: 80", "port: 65536"),
            Some(5),
            "services[0].port",
            "between 0 and 65535",
        );
        one(
            &BASE.replace("    port: 80\n", ""),
            Some(3),
            "services[0].port",
            "required",
        );
        one(
            &BASE.replace("name: web", "name: my web"),
            Some(3),
            "services[0].name",
            "whitespace",
        );
        one(
            &BASE.replace("name: web", "name: \"\""),
            Some(3),
            "services[0].name",
            "must not be empty",
        );
        one(
            &BASE.replace("    port: 80\n", "    port: 80\n    protocol: sctp\n"),
            Some(6),
            "services[0].protocol",
            "allowed: tcp, udp",
        );
        one(
            &BASE.replace("    port: 80\n", "    port: 80\n    mode: fullnat\n"),
            Some(6),
            "services[0].mode",
            "allowed: dr, nat, tun",
        );
        one(
            &BASE.replace("    port: 80\n", "    port: 80\n    scheduler: rr\n"),
            Some(6),
            "services[0].scheduler",
            "allowed: maglev",
        );
        one(
            &format!("io: dpdk\n{BASE}"),
            Some(1),
            "io",
            "allowed: auto, af_xdp, af_packet",
        );
        one(
            &format!("on_server_down: panic\n{BASE}"),
            Some(1),
            "on_server_down",
            "allowed: reschedule, keep",
        );
        // Spelling is forgiving about case and dashes.
        let c = ok(&format!(
            "io: AF-XDP\n{}",
            BASE.replace("port: 80\n", "port: 80\n    protocol: UDP\n")
        ));
        assert_eq!(c.io, IoBackend::AfXdp);
        assert_eq!(c.services[0].protocol, Protocol::Udp);
    }

    fn with_health(health: &str) -> String {
        BASE.replace("    port: 80\n", &format!("    port: 80\n    health:\n{health}"))
    }

    #[test]
    fn health_rules() {
        // Lines: health at 6, its first field at 7.
        one(
            &with_health("      kind: icmp\n"),
            Some(7),
            "services[0].health.kind",
            "allowed: tcp, http, none",
        );
        one(
            &with_health("      interval_ms: 1000\n"),
            Some(7),
            "services[0].health.kind",
            "required",
        );
        one(
            &with_health("      kind: tcp\n      path: /status\n"),
            Some(8),
            "services[0].health.path",
            "only used with kind http",
        );
        one(
            &with_health("      kind: tcp\n      expect_status: 204\n"),
            Some(8),
            "services[0].health.expect_status",
            "only used with kind http",
        );
        one(
            &with_health("      kind: http\n      path: status\n"),
            Some(8),
            "services[0].health.path",
            "must start with '/'",
        );
        one(
            &with_health("      kind: http\n      interval_ms: 100\n      timeout_ms: 200\n"),
            Some(9),
            "services[0].health.timeout_ms",
            "must not exceed interval_ms (100)",
        );
        one(
            &with_health("      kind: http\n      timeout_ms: 0\n"),
            Some(8),
            "services[0].health.timeout_ms",
            "between 1",
        );
        one(
            &with_health("      kind: tcp\n      interval_ms: 0\n"),
            Some(8),
            "services[0].health.interval_ms",
            "between 1",
        );
        one(
            &with_health("      kind: tcp\n      rise: 0\n"),
            Some(8),
            "services[0].health.rise",
            "between 1",
        );
        one(
            &with_health("      kind: tcp\n      fall: 0\n"),
            Some(8),
            "services[0].health.fall",
            "between 1",
        );
        one(
            &with_health("      kind: tcp\n      port: 0\n"),
            Some(8),
            "services[0].health.port",
            "between 1 and 65535",
        );
        one(
            &with_health("      kind: tcp\n").replace("port: 80", "port: 0"),
            Some(7),
            "services[0].health.port",
            "service port is 0",
        );
        // A short interval alone shortens the default timeout.
        let c = ok(&with_health("      kind: tcp\n      interval_ms: 200\n"));
        assert_eq!(c.services[0].health.timeout_ms, 200);
        let c = ok(&with_health("      kind: none\n"));
        assert_eq!(c.services[0].health.kind, HealthKind::None);
    }

    #[test]
    fn global_ranges() {
        one(
            &format!("flow_capacity: 1000\n{BASE}"),
            Some(1),
            "flow_capacity",
            "between 1024 and 67108864",
        );
        one(
            &format!("maglev_table_size: 65536\n{BASE}"),
            Some(1),
            "maglev_table_size",
            "must be a prime",
        );
        one(
            &format!("maglev_table_size: 5\n{BASE}"),
            Some(1),
            "maglev_table_size",
            "between 7 and 4000037",
        );
        assert_eq!(
            ok(&format!("maglev_table_size: 4000037\n{BASE}")).maglev_table_size,
            4_000_037
        );
        one(
            &format!("metrics_listen: localhost\n{BASE}"),
            Some(1),
            "metrics_listen",
            "not IP:PORT",
        );
        one(
            &format!("control_socket: \"\"\n{BASE}"),
            Some(1),
            "control_socket",
            "must not be empty",
        );
    }

    #[test]
    fn timeouts_accept_floats() {
        let c = ok(&format!("timeouts:\n  tcp: 0.5\n  udp: 10\n{BASE}"));
        assert_eq!(c.timeouts.tcp_ms, 500);
        assert_eq!(c.timeouts.udp_ms, 10_000);
        assert_eq!(c.timeouts.tcp_fin_ms, 120_000);
        one(
            &format!("timeouts:\n  tcp: 0\n{BASE}"),
            Some(2),
            "timeouts.tcp",
            "> 0",
        );
        one(
            &format!("timeouts:\n  tcp_syn: -3\n{BASE}"),
            Some(2),
            "timeouts.tcp_syn",
            "> 0",
        );
        one(
            &format!("timeouts:\n  udp: 1e10\n{BASE}"),
            Some(2),
            "timeouts.udp",
            "at most",
        );
    }

    #[test]
    fn collects_all_errors_in_line_order() {
        let text = "\
interface: \"\"
services:
  - name: a b
    vip: 2001:db8::1
    port: 70000
    real_servers:
      - address: 198.18.0.11
        weight: 70000
      - address: 198.18.0.11
";
        let e = errs(text);
        let got: Vec<(Option<usize>, &str)> = e.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(1), "interface"),
                (Some(3), "services[0].name"),
                (Some(4), "services[0].vip"),
                (Some(5), "services[0].port"),
                (Some(8), "services[0].real_servers[0].weight"),
                (Some(9), "services[0].real_servers[1].address"),
            ]
        );
    }

    #[test]
    fn error_display() {
        let e = ConfigError {
            file: "a.yaml".into(),
            line: Some(9),
            field: "services[0].real_servers[0].weight".into(),
            message: "must be between 0 and 65535, got 70000".into(),
        };
        assert_eq!(
            e.to_string(),
            "a.yaml:9: services[0].real_servers[0].weight: must be between 0 and 65535, got 70000"
        );
        let f = ConfigError {
            file: "a.yaml".into(),
            line: None,
            field: "services".into(),
            message: "at least one service is required".into(),
        };
        assert_eq!(
            f.to_string(),
            "a.yaml: services: at least one service is required"
        );
        let all = ConfigErrors(vec![e.clone(), f.clone()]);
        assert_eq!(all.to_string(), format!("{e}\n{f}"));
        assert_eq!(all.to_string().lines().count(), 2);
        // From the parser, through `from_str`.
        let errs = Config::from_str(&BASE.replace("weight:", "wieght:"), "demo.yaml").unwrap_err();
        assert!(
            errs.to_string()
                .starts_with("demo.yaml:8: services[0].real_servers[0].wieght: unknown field `wieght`"),
            "{errs}"
        );
    }

    #[test]
    fn load_reports_read_errors() {
        let e = Config::load(Path::new("/nonexistent/ulvs.yaml")).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].file, "/nonexistent/ulvs.yaml");
        assert_eq!(e.0[0].line, None);
        assert!(e.0[0].message.contains("cannot read"), "{e}");
    }

    #[test]
    fn line_paths_scan() {
        let text = "\
a: 1
services:
- name: x
  real_servers:
    -
      address: y
    - address: z
      weight: 2
  # comment
  note: |
    key: not a key
- name: w
";
        let p = line_paths(text).paths;
        assert_eq!(p[0], "a");
        assert_eq!(p[2], "services[0].name");
        assert_eq!(p[4], "services[0].real_servers[0]");
        assert_eq!(p[5], "services[0].real_servers[0].address");
        assert_eq!(p[6], "services[0].real_servers[1].address");
        assert_eq!(p[7], "services[0].real_servers[1].weight");
        assert_eq!(p[10], "services[0].note");
        assert_eq!(p[11], "services[1].name");
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(is_prime(4_000_037));
        assert!(!is_prime(65_535));
        assert_eq!((prev_prime(65_536), next_prime(65_536)), (65_521, 65_537));
    }

    #[test]
    fn example_files_are_valid() {
        let demo = ok(include_str!("../../director/examples/demo.yaml"));
        assert_eq!(demo.services.len(), 2);
        assert_eq!(demo.control_socket, PathBuf::from("/run/ulvs/demo.sock"));
        ok(include_str!("../../director/examples/full.yaml"));
        ok(include_str!("../../tests/config_files/good-minimal.yaml"));
        let nat = ok(include_str!("../../tests/config_files/good-nat.yaml"));
        assert_eq!(nat.services[0].real_servers[0].port, Some(8080));
        assert_eq!(nat.timeouts.udp_ms, 500);
    }

    /// Each `tests/config_files/bad-*.yaml` states on its first line how
    /// `--check` reports it, after the file name: `# expect: LINE: FIELD: MESSAGE`
    /// (`# expect: FIELD: MESSAGE` when the line is unknown), where MESSAGE may
    /// be just the start of the message.
    #[test]
    fn bad_fixture_files() {
        macro_rules! fixture {
            ($name:literal) => {
                (
                    $name,
                    include_str!(concat!("../../tests/config_files/", $name)),
                )
            };
        }
        let files = [
            fixture!("bad-unknown-field.yaml"),
            fixture!("bad-ipv6-vip.yaml"),
            fixture!("bad-dr-ip-port.yaml"),
            fixture!("bad-duplicate-service.yaml"),
            fixture!("bad-port0-overlap.yaml"),
            fixture!("bad-weight.yaml"),
            fixture!("bad-health-timeout.yaml"),
            fixture!("bad-no-services.yaml"),
            fixture!("bad-protocol.yaml"),
        ];
        for (name, text) in files {
            let first = text.lines().next().unwrap_or_default();
            let Some(spec) = first.strip_prefix("# expect: ") else {
                panic!("{name}: the first line must be `# expect: ...`");
            };
            let want = if spec.starts_with(|c: char| c.is_ascii_digit()) {
                format!("{name}:{spec}")
            } else {
                format!("{name}: {spec}")
            };
            let rendered = Config::from_str(text, name).expect_err(name).to_string();
            assert!(
                rendered.lines().any(|l| l.starts_with(&want)),
                "{name}: want a line starting {want:?}, got:\n{rendered}"
            );
        }
    }
}
