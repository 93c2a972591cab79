//! The director's configuration file (slow path): the YAML schema, its parsing
//! and validation, and the compiled [`Config`] the rest of the director uses.
//!
//! This module owns everything between the YAML text and a validated
//! [`Config`]: defaults, range checks, cross-field and cross-service rules, and
//! the error messages users see from `ulvs-director --check`. Besides `std`,
//! `serde`, `serde-saphyr`, `thiserror` and `xxhash-rust` (the digest of a
//! file's bytes, [`FileDigest`]) it uses only `fwd` (the forwarding
//! [`Mode`], the flow [`Timeouts`], the prime test of Maglev), and never runs
//! on the packet path.
//!
//! # Pipeline
//!
//! The types below are the schema: they derive `Deserialize` and are filled
//! straight from the YAML by `serde-saphyr`.
//!
//! 1. `place` reads the document once more loosely (any shape) and notes
//!    where each field is written, so that every problem can name its line
//!    and field path (`services[1].real_servers[0].weight`). A YAML syntax
//!    error stops here: it is then the single reported problem.
//! 2. `serde-saphyr` deserializes [`Config`]. Each field whose value can be
//!    wrong goes through a function of `field` that checks it with its
//!    [`serde_saphyr::Spanned`] location and, when it is wrong, notes the
//!    problem and carries on with the default, so that one pass reports every
//!    bad value. A type or unknown-field error stops here: it is then the
//!    single reported problem.
//! 3. `check` applies the rules that span fields and services (required
//!    fields, duplicates, overlaps, health settings that depend on the kind).
//!    *All* problems are sorted by line and returned together as
//!    [`ConfigErrors`].
//!
//! # Rules worth knowing
//!
//! * At least one service is required. A service with no real servers is
//!   valid: all its traffic is dropped and counted as "no server".
//! * A service with `port: 0` takes every port of its VIP for its protocol, so
//!   it conflicts with any other service on the same VIP and protocol.
//! * A `vip` is IPv4 or IPv6; a service's real servers are of its VIP's
//!   family (no translation between families). A real server's `address` is
//!   `IP` in every mode (`[IPv6]` too); `IP:PORT` (`[IPv6]:PORT`) is allowed
//!   only in `nat` mode (port 1..=65535). IPv6 link-local and IPv4-mapped
//!   addresses are refused.
//! * `health.path` and `health.expect_status` are meant for `kind: http`. So
//!   that the contract's own example (which lists them with `kind: tcp`) stays
//!   valid, they are accepted with other kinds only when equal to their
//!   defaults (`/` and `200`); any other value is an error.
//! * When `health` is given, `health.kind` is required. When the service port
//!   is 0 and some real server has no port of its own, a checked service needs
//!   `health.port` (there is nothing else to probe).
//! * `workers` absent or 0: the number of entries in `cpus` when pinning is
//!   configured, else the number of CPUs; capped at [`MAX_WORKERS`].
//! * `announce: route` requires `route_table` (no default: the routing
//!   daemon's config names the same table), and `route_table` is refused
//!   without it. A reload keeps the running `announce` and `route_table`.
//! * Enumerated values (`mode`, `protocol`, ...) are forgiving about case and
//!   take `-` for `_` (`AF-XDP` is `af_xdp`).

mod check;
mod field;
mod place;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::fwd::flow::Timeouts;
pub use crate::fwd::table::Mode;

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
/// Most YAML nodes (values, lists and mappings) a config may hold: room for
/// 16,384 real servers (the most backend ids a director hands out) in as many
/// services, about ten times what such a file needs, while an absurd file
/// is still refused before it costs much memory.
pub const MAX_YAML_NODES: usize = 2_000_000;

/// The validated, compiled configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "config")]
pub struct Config {
    /// The director's interface on the shared segment.
    #[serde(deserialize_with = "field::interface_noted")]
    pub interface: String,
    /// Unix socket `ulvsadm` talks to.
    #[serde(deserialize_with = "field::control_socket")]
    pub control_socket: PathBuf,
    /// Where Prometheus metrics are served, if anywhere.
    #[serde(deserialize_with = "field::metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Number of forwarding workers, 1..=64 (already resolved from "auto").
    #[serde(deserialize_with = "field::int::<_, _, 0, { MAX_WORKERS as i64 }, 0>")]
    pub workers: usize,
    /// Flow-table capacity for all workers together.
    #[serde(
        deserialize_with = "field::int::<_, _, { MIN_FLOW_CAPACITY as i64 }, { MAX_FLOW_CAPACITY as i64 }, { DEFAULT_FLOW_CAPACITY as i64 }>"
    )]
    pub flow_capacity: usize,
    /// Maglev lookup-table size, a prime.
    #[serde(deserialize_with = "field::maglev_table_size")]
    pub maglev_table_size: u32,
    /// Idle timeouts of flows (the YAML gives seconds: `tcp`, `tcp_fin`,
    /// `udp`, `tcp_syn`; flows of other protocols idle out like UDP).
    #[serde(deserialize_with = "field::timeouts")]
    pub timeouts: Timeouts,
    /// What happens to established flows when their server goes down.
    #[serde(deserialize_with = "field::choice")]
    pub on_server_down: OnServerDown,
    /// Whether the director answers ICMP echo requests sent to its VIPs.
    #[serde(deserialize_with = "field::answer_ping")]
    pub answer_ping: bool,
    /// Packet I/O backend.
    #[serde(deserialize_with = "field::choice")]
    pub io: IoBackend,
    /// With AF_XDP: the XDP program forwards established DR flows of IPv4
    /// itself (`xdp_fast_path`, off by default).
    #[serde(deserialize_with = "field::off_by_default")]
    pub xdp_fast_path: bool,
    /// CPUs to pin workers to (worker `i` on `cpus[i % cpus.len()]`); empty = no pinning.
    #[serde(deserialize_with = "field::cpus")]
    pub cpus: Vec<usize>,
    /// How the segment learns that the VIPs are here (`arp`, `none` or
    /// `route`).
    #[serde(deserialize_with = "field::choice")]
    pub announce: Announce,
    /// The kernel routing table for `announce: route` (refused elsewhere).
    #[serde(deserialize_with = "field::route_table_noted")]
    pub route_table: Option<u32>,
    /// The virtual services, in file order.
    #[serde(deserialize_with = "field::services")]
    pub services: Vec<Service>,
    /// Flow sync with other directors, when the file has a `sync` section.
    pub sync: Option<SyncConfig>,
}

impl Default for Config {
    /// The value of every field the file leaves out; `interface` and
    /// `services` are required, so this default is not a valid config.
    fn default() -> Self {
        Config {
            interface: String::new(),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            metrics_listen: None,
            workers: 0,
            flow_capacity: DEFAULT_FLOW_CAPACITY,
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
            timeouts: default_timeouts(),
            on_server_down: OnServerDown::Reschedule,
            answer_ping: true,
            io: IoBackend::Auto,
            xdp_fast_path: false,
            cpus: Vec::new(),
            announce: Announce::Arp,
            route_table: None,
            services: Vec::new(),
            sync: None,
        }
    }
}

/// LVS-like idle timeouts: SYN 120 s, established 900 s, closing 120 s,
/// UDP 300 s; flows of other protocols (ICMP) follow UDP's.
pub fn default_timeouts() -> Timeouts {
    Timeouts {
        tcp_syn_ms: 120_000,
        tcp_ms: 900_000,
        tcp_closing_ms: 120_000,
        udp_ms: 300_000,
        other_ms: 300_000,
    }
}

/// Most peers in `sync.peers`: a flow records its origin (1 + the peer's
/// index) in 5 bits of its flow-table entry.
pub const MAX_SYNC_PEERS: usize = crate::fwd::flow::MAX_ORIGIN as usize;
/// Shortest `sync.key_file` (see `crate::sync::auth::MIN_KEY_LEN`).
pub const MIN_SYNC_KEY_LEN: usize = 16;
/// Bounds of `sync.refresh_ms`.
pub const MIN_SYNC_REFRESH_MS: u32 = 100;
pub const MAX_SYNC_REFRESH_MS: u32 = 3_600_000;
/// The refresh interval when the file gives none and the timeouts allow it.
pub const DEFAULT_SYNC_REFRESH_MS: u32 = 10_000;

/// The `sync` section: flow sync with other directors (see `crate::sync`
/// and `docs/sync-protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "sync")]
pub struct SyncConfig {
    /// The UDP address this director receives sync datagrams on and sends
    /// them from: a concrete address of this host (its peers list it).
    #[serde(deserialize_with = "field::sync_listen_noted")]
    pub listen: SocketAddr,
    /// The other directors' `listen` addresses (at least one).
    #[serde(deserialize_with = "field::sync_peers")]
    pub peers: Vec<SocketAddr>,
    /// The shared HMAC key, read from `key_file` when the config is loaded.
    #[serde(deserialize_with = "field::sync_key")]
    pub key_file: Option<SyncKey>,
    /// How often long-lived flows are sent again; `None`: the default (see
    /// [`SyncConfig::refresh_interval_ms`]).
    #[serde(deserialize_with = "field::sync_refresh_ms")]
    pub refresh_ms: Option<u32>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            peers: Vec::new(),
            key_file: None,
            refresh_ms: None,
        }
    }
}

impl SyncConfig {
    /// The refresh interval in ms: `refresh_ms`, else 10 s or a third of
    /// the shortest idle timeout when that is shorter, so that a flow that
    /// stays active is refreshed at least twice per timeout on the peers.
    pub fn refresh_interval_ms(&self, t: &Timeouts) -> u32 {
        self.refresh_ms.unwrap_or_else(|| {
            (shortest_timeout_ms(t) / 3).clamp(MIN_SYNC_REFRESH_MS, DEFAULT_SYNC_REFRESH_MS)
        })
    }
}

/// The shortest idle timeout of any flow state, in ms.
pub fn shortest_timeout_ms(t: &Timeouts) -> u32 {
    [t.tcp_syn_ms, t.tcp_ms, t.tcp_closing_ms, t.udp_ms, t.other_ms]
        .into_iter()
        .min()
        .unwrap_or(0)
}

/// The content of `sync.key_file` and where it came from. Debug output
/// never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncKey({}, {} bytes)", self.path.display(), self.bytes.len())
    }
}

/// What to do with established flows whose real server goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnServerDown {
    /// Move them to a live server (their next packet is rescheduled).
    #[default]
    Reschedule,
    /// Keep sending them to the dead server until they time out.
    Keep,
}

/// How the director makes the segment send it the VIPs' frames (YAML
/// `announce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Announce {
    /// Answer ARP for the VIPs and announce them gratuitously (the director
    /// starts announcing).
    #[default]
    Arp,
    /// Forward every VIP frame that arrives but never answer ARP for a VIP:
    /// a standby (it starts silent; `ulvsadm announce on` switches it).
    None,
    /// A host route per served VIP in `route_table`, on a TUN device that
    /// vanishes with the process; no ARP answers for the VIPs.
    Route,
}

impl Announce {
    /// The spelling in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Announce::Arp => "arp",
            Announce::None => "none",
            Announce::Route => "route",
        }
    }
}

/// Packet I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// AF_XDP when the interface supports it, else AF_PACKET.
    #[default]
    Auto,
    /// AF_XDP only.
    AfXdp,
    /// AF_PACKET only.
    AfPacket,
}

impl IoBackend {
    /// The spelling in the config (for logs).
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::AfXdp => "af_xdp",
            IoBackend::AfPacket => "af_packet",
        }
    }
}

/// The transport protocol a service balances (YAML `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    /// The spelling in the config, `ulvsadm list` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }

    /// The IP protocol number (6 or 17).
    pub fn ip_protocol(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }
}

/// Real-server selection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Maglev consistent hashing of the whole 5-tuple.
    #[default]
    Maglev,
    /// Maglev on the client address alone (client affinity, the job of
    /// IPVS persistence): every connection of one client lands on one
    /// server while the set of servers is stable.
    MaglevClient,
}

impl Scheduler {
    /// The spelling in the config and `ulvsadm list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Maglev => "maglev",
            Scheduler::MaglevClient => "maglev_client",
        }
    }
}

/// Health-check probe type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP GET that must answer `expect_status`.
    Http,
    /// No checks: every server is up.
    #[default]
    None,
}

impl HealthKind {
    /// The spelling in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthKind::Tcp => "tcp",
            HealthKind::Http => "http",
            HealthKind::None => "none",
        }
    }
}

impl Service {
    /// `VIP:PORT`, with the IPv6 VIP in brackets.
    pub fn vip_port(&self) -> String {
        SocketAddr::new(self.vip, self.port).to_string()
    }
}

/// One virtual service: a VIP, port and protocol balanced over real servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "service")]
pub struct Service {
    /// Unique name, no whitespace.
    #[serde(deserialize_with = "field::service_name_noted")]
    pub name: String,
    /// The virtual IP, IPv4 or IPv6; its real servers are of its family.
    #[serde(deserialize_with = "field::vip_noted")]
    pub vip: IpAddr,
    /// The port; 0 means every port of the VIP.
    #[serde(deserialize_with = "field::service_port")]
    pub port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(deserialize_with = "field::choice")]
    pub protocol: Transport,
    /// `dr` (default), `nat` or `tun`.
    #[serde(deserialize_with = "field::mode")]
    pub mode: Mode,
    /// `maglev` (default) or `maglev-client` (client affinity).
    #[serde(deserialize_with = "field::choice")]
    pub scheduler: Scheduler,
    /// Health checking; kind `None` when the YAML has no `health`.
    #[serde(deserialize_with = "field::health")]
    pub health: HealthCheck,
    /// The real servers, in file order. May be empty: then every packet for
    /// the service is dropped and counted as "no server".
    #[serde(deserialize_with = "field::real_servers")]
    pub real_servers: Vec<RealServer>,
    /// Line of the service's list item in the file.
    #[serde(skip)]
    pub line: Option<usize>,
}

impl Default for Service {
    /// The value of every field the file leaves out (`name`, `vip` and
    /// `port` are required).
    fn default() -> Self {
        Service {
            name: String::new(),
            vip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            protocol: Transport::Tcp,
            mode: Mode::Dr,
            scheduler: Scheduler::Maglev,
            health: HealthCheck::default(),
            real_servers: Vec::new(),
            line: None,
        }
    }
}

/// How a service's real servers are health-checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "health")]
pub struct HealthCheck {
    /// Probe type; `None` means every server is always up.
    #[serde(deserialize_with = "field::health_kind")]
    pub kind: HealthKind,
    /// HTTP request path (starts with `/`), default `/`.
    #[serde(deserialize_with = "field::http_path")]
    pub path: String,
    /// HTTP status that counts as healthy, default 200.
    #[serde(deserialize_with = "field::int::<_, _, 100, 599, 200>")]
    pub expect_status: u16,
    /// Time between probes, default 1000 ms.
    #[serde(deserialize_with = "field::int::<_, _, 1, { MAX_HEALTH_INTERVAL_MS }, 1000>")]
    pub interval_ms: u64,
    /// Probe timeout, default 500 ms, at most `interval_ms`.
    #[serde(deserialize_with = "field::health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes to become up, default 2.
    #[serde(deserialize_with = "field::int::<_, _, 1, { MAX_RISE_FALL }, 2>")]
    pub rise: u32,
    /// Consecutive failures to become down, default 2.
    #[serde(deserialize_with = "field::int::<_, _, 1, { MAX_RISE_FALL }, 2>")]
    pub fall: u32,
    /// Probed port, when not the real server's (or the service's) port.
    #[serde(deserialize_with = "field::health_port")]
    pub port: Option<u16>,
}

/// Longest health-check interval, in ms (one day).
const MAX_HEALTH_INTERVAL_MS: i64 = 86_400_000;
/// Largest `rise` / `fall`.
const MAX_RISE_FALL: i64 = 1000;

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
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

/// One real server of a service. In the YAML, `address` is `IP` or, in nat
/// mode, `IP:PORT` (`[IPv6]:PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "field::ServerEntry")]
pub struct RealServer {
    /// Its address, of the service VIP's family.
    pub address: IpAddr,
    /// Destination port (nat `IP:PORT` only); `None` keeps the client's port.
    pub port: Option<u16>,
    /// Maglev weight, 0..=65535; 0 takes no new flows.
    pub weight: u32,
    /// Line of the real server's list item in the file.
    pub line: Option<usize>,
}

impl RealServer {
    /// The address as written in the config and used by `ulvsadm`: `IP`,
    /// `IP:PORT` or `[IPv6]:PORT`.
    pub fn endpoint(&self) -> String {
        match self.port {
            Some(port) => SocketAddr::new(self.address, port).to_string(),
            None => self.address.to_string(),
        }
    }

    /// Whether `text` names this server: its endpoint, or its address alone
    /// (`ulvsadm drain web 2001:db8::11` for `[2001:db8::11]:8080`), in any
    /// spelling of the address (`[2001:db8::11]`, `2001:DB8:0::11`).
    pub fn is_named(&self, text: &str) -> bool {
        let t = text.trim();
        if let Ok(sa) = t.parse::<SocketAddr>() {
            return sa.ip() == self.address && Some(sa.port()) == self.port;
        }
        let bare = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(t);
        bare.parse::<IpAddr>().is_ok_and(|ip| ip == self.address)
    }
}

/// What a config file held when it was read: its length and the XXH3-128
/// hash of its bytes. A reload compares the file's digest with the one of
/// the config in force and, when equal, knows the file unchanged without
/// parsing it (an accidental 128-bit collision is not a practical concern;
/// the file is not an adversary's: whoever writes it configures the
/// director anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    len: u64,
    hash: u128,
}

impl FileDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> FileDigest {
        FileDigest {
            len: bytes.len() as u64,
            hash: xxhash_rust::xxh3::xxh3_128(bytes),
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
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
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

/// A problem with a line and a field path, before it is tied to a file.
#[derive(Debug)]
struct Problem {
    line: Option<usize>,
    field: String,
    message: String,
}

impl Problem {
    /// The problem as one line of `--check` output: text quoted from the
    /// file (a key, a value) may hold line breaks and other control
    /// characters, which are shown escaped.
    fn into_error(self, file: &str) -> ConfigError {
        let one_line = |s: String| {
            if s.contains(char::is_control) {
                s.chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_debug().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect()
            } else {
                s
            }
        };
        ConfigError {
            file: file.to_string(),
            line: self.line,
            field: one_line(self.field),
            message: one_line(self.message),
        }
    }
}

impl Config {
    /// Parse and validate YAML text; `file` is only used in messages.
    ///
    /// # Errors
    ///
    /// Every problem found, in line order: one for a YAML syntax, type or
    /// unknown-field error (parsing stops there), else all of them.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, file, MAX_YAML_NODES)
    }

    /// [`Config::from_str`] with another size limit (tests reach it cheaply).
    fn parse(text: &str, file: &str, max_nodes: usize) -> Result<Config, ConfigErrors> {
        let single = |p: Problem| ConfigErrors(vec![p.into_error(file)]);
        let options = || place::options(max_nodes);
        // A file of only blanks and comments: the loose reading says so (or
        // finds the syntax error), as it always did first.
        if !place::has_content(text) {
            place::Places::of(text, options()).map_err(single)?;
        }
        let (parsed, bad_values, written) =
            field::collecting(|| serde_saphyr::from_str_with_options::<Config>(text, options()));
        let places = place::LazyPlaces::new(text, max_nodes);
        let mut config = match parsed {
            Ok(c) => c,
            // The loose reading fails first where the file is no YAML (its
            // error names the field it was in), else places this error.
            Err(e) => {
                let places = place::Places::of(text, options()).map_err(single)?;
                return Err(single(places.serde_problem(&e, text)));
            }
        };
        let mut problems: Vec<Problem> = bad_values.into_iter().map(|b| places.get().problem(b)).collect();
        check::Rules::new(&places, &written, &mut problems).apply(&mut config);
        if problems.is_empty() {
            Ok(config)
        } else {
            problems.sort_by_key(|p| p.line);
            Err(ConfigErrors(
                problems.into_iter().map(|p| p.into_error(file)).collect(),
            ))
        }
    }

    /// Read, parse and validate a config file. A read error becomes a
    /// [`ConfigError`] without line or field.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or the problems [`Config::from_str`] finds.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_digested(path).map(|(c, _)| c)
    }

    /// [`Config::load`], with the digest of the bytes it parsed (what a
    /// reload compares the file with, see [`FileDigest`]).
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn load_digested(path: &Path) -> Result<(Config, FileDigest), ConfigErrors> {
        let (text, digest) = Config::read(path)?;
        Ok((Config::from_str(&text, &path.display().to_string())?, digest))
    }

    /// A config file's text and the digest of its bytes, read once (so the
    /// digest is of exactly the text that is then parsed).
    ///
    /// # Errors
    ///
    /// The file cannot be read (or is not UTF-8): one [`ConfigError`]
    /// without line or field.
    pub fn read(path: &Path) -> Result<(String, FileDigest), ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let digest = FileDigest::of(text.as_bytes());
                Ok((text, digest))
            }
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: None,
                field: String::new(),
                message: format!("cannot read the file: {e}"),
            }])),
        }
    }

    /// Whether the other files a load of this config read still hold what
    /// they held then: today only `sync.key_file`, whose bytes the config
    /// keeps. A reload may take an unchanged config file for an unchanged
    /// config only when this holds (else a key file that went missing, or
    /// a new key, would go unnoticed). Any file a future field reads at
    /// load time belongs here too.
    pub fn side_files_unchanged(&self) -> bool {
        match self.sync.as_ref().and_then(|s| s.key_file.as_ref()) {
            None => true,
            Some(k) => std::fs::read(&k.path).is_ok_and(|b| b == k.bytes),
        }
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}
