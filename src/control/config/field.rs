//! How each config field is read from YAML (slow path): the `deserialize_with`
//! functions of the schema types.
//!
//! A value that parses but is wrong (out of range, not an address, an unknown
//! choice) must not stop deserialization, or only the first of several
//! mistakes would be reported. So these functions read the value with its
//! [`Spanned`] location, and when it is wrong they note a [`BadValue`] with
//! [`bad`] and return the field's default; [`collecting`] gathers the notes
//! of one deserialization. A null value (`key:` with nothing after it) reads
//! as if the key were absent; [`super::check`] tells the two apart where it
//! matters.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{
    default_timeouts, Mode, RealServer, Service, SyncKey, Timeouts, DEFAULT_CONTROL_SOCKET,
    DEFAULT_MAGLEV_TABLE_SIZE, MAX_CPU_INDEX, MAX_MAGLEV_TABLE_SIZE, MAX_SYNC_PEERS, MAX_SYNC_REFRESH_MS,
    MIN_MAGLEV_TABLE_SIZE, MIN_SYNC_KEY_LEN, MIN_SYNC_REFRESH_MS,
};
use crate::fwd::maglev::is_prime;

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_IFNAME_LEN: usize = 15;
/// Longest path that fits in `sockaddr_un.sun_path` with its NUL.
const MAX_SOCKET_PATH_LEN: usize = 107;

/// A value found wrong while deserializing, at the location of the value.
#[derive(Debug)]
pub(super) struct BadValue {
    pub(super) at: Location,
    pub(super) message: String,
}

thread_local! {
    /// The bad values of the deserialization running on this thread, if any.
    static BAD_VALUES: RefCell<Option<Vec<BadValue>>> = const { RefCell::new(None) };
}

/// Runs `f` (a deserialization) and returns its result with the bad values
/// it noted.
pub(super) fn collecting<T>(f: impl FnOnce() -> T) -> (T, Vec<BadValue>, Written) {
    BAD_VALUES.with(|b| *b.borrow_mut() = Some(Vec::new()));
    WRITTEN.with(|w| *w.borrow_mut() = Some(Written::default()));
    let out = f();
    let bad = BAD_VALUES.with(|b| b.borrow_mut().take()).unwrap_or_default();
    let written = WRITTEN.with(|w| w.borrow_mut().take()).unwrap_or_default();
    (out, bad, written)
}

/// Whether a field is written with a value other than null, and the line
/// of that value: `None` when absent or null.
pub(super) type Given = Option<Option<usize>>;

/// The fields whose presence the rules of [`super::check`] ask about for
/// every valid file, noted while deserializing. Asking the loose reading of
/// `super::place` instead would cost a second parse of the whole file on
/// every load (at 10,000 services, most of a reload's time); that reading is
/// now made only for a file with problems, to place them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) interface: Given,
    pub(super) route_table: Given,
    pub(super) sync_listen: Given,
    /// One per item of `services`, in file order.
    pub(super) services: Vec<ServiceWritten>,
}

/// The noted fields of one service.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ServiceWritten {
    pub(super) name: Given,
    pub(super) vip: Given,
    pub(super) port: Given,
    pub(super) health: Given,
    pub(super) health_kind: Given,
    pub(super) health_timeout_ms: Given,
    /// The `address` of each item of `real_servers`, in file order.
    pub(super) addresses: Vec<Given>,
}

/// A noted field.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Interface,
    RouteTable,
    SyncListen,
    Name,
    Vip,
    Port,
    Health,
    HealthKind,
    HealthTimeout,
    Address,
}

thread_local! {
    /// What the deserialization running on this thread noted as written.
    static WRITTEN: RefCell<Option<Written>> = const { RefCell::new(None) };
    /// The line of the value the last [`read`] found, if it found one.
    static LAST: std::cell::Cell<Given> = const { std::cell::Cell::new(None) };
}

fn note(slot: Slot, given: Given) {
    if given.is_none() {
        return;
    }
    WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        let Some(w) = w.as_mut() else { return };
        let top = match slot {
            Slot::Interface => Some(&mut w.interface),
            Slot::RouteTable => Some(&mut w.route_table),
            Slot::SyncListen => Some(&mut w.sync_listen),
            _ => None,
        };
        if let Some(t) = top {
            *t = given;
            return;
        }
        // A service field belongs to the service item started last (serde
        // reads one item whole before the next).
        let Some(s) = w.services.last_mut() else { return };
        let field = match slot {
            Slot::Name => &mut s.name,
            Slot::Vip => &mut s.vip,
            Slot::Port => &mut s.port,
            Slot::Health => &mut s.health,
            Slot::HealthKind => &mut s.health_kind,
            Slot::HealthTimeout => &mut s.health_timeout_ms,
            Slot::Address => match s.addresses.last_mut() {
                Some(a) => a,
                None => return,
            },
            Slot::Interface | Slot::RouteTable | Slot::SyncListen => return,
        };
        *field = given;
    });
}

/// Runs the reading `f` of one scalar field and notes it as written when
/// `f`'s [`read`] found a value.
fn noting<T, E>(slot: Slot, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    LAST.with(|l| l.set(None));
    let out = f()?;
    note(slot, LAST.with(std::cell::Cell::take));
    Ok(out)
}

/// A list item the rules want noted fields of: starting one opens its record.
pub(super) trait Listed {
    fn started();
}

impl Listed for Service {
    fn started() {
        WRITTEN.with(|w| {
            if let Some(w) = w.borrow_mut().as_mut() {
                w.services.push(ServiceWritten::default());
            }
        });
    }
}

impl Listed for RealServer {
    fn started() {
        WRITTEN.with(|w| {
            if let Some(s) = w.borrow_mut().as_mut().and_then(|w| w.services.last_mut()) {
                s.addresses.push(None);
            }
        });
    }
}

/// A list item, its record opened before it is read.
struct Item<T>(T);

impl<'de, T: Deserialize<'de> + Listed> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::started();
        T::deserialize(d).map(Item)
    }
}

/// Notes a wrong value (outside [`collecting`] the note is dropped: the
/// schema types are only deserialized through [`super::Config::from_str`]).
fn bad(at: Location, message: impl Into<String>) {
    let message = message.into();
    BAD_VALUES.with(|b| {
        if let Some(v) = b.borrow_mut().as_mut() {
            v.push(BadValue { at, message });
        }
    });
}

type Read<T> = Option<Spanned<T>>;

/// An optional value with its location; [`noting`] learns from it whether
/// the field was written.
fn read<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Read<T>, D::Error> {
    let v = Read::<T>::deserialize(d)?;
    LAST.with(|l| l.set(v.as_ref().map(|v| line_of(&v.referenced))));
    Ok(v)
}

/// An integer in `LO..=HI`; `DEFAULT` when null or wrong.
pub(super) fn int<'de, D, T, const LO: i64, const HI: i64, const DEFAULT: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let n = match read::<_, i64>(d)? {
        Some(v) => in_range(&v, LO, HI).unwrap_or(DEFAULT),
        None => DEFAULT,
    };
    // The bounds are chosen to fit T; a mismatch is a bug in the schema.
    T::try_from(n).map_err(|_| de::Error::custom(format!("{n} does not fit the field")))
}

fn in_range(v: &Spanned<i64>, lo: i64, hi: i64) -> Option<i64> {
    if (lo..=hi).contains(&v.value) {
        Some(v.value)
    } else {
        bad(
            v.referenced,
            format!("must be between {lo} and {hi}, got {}", v.value),
        );
        None
    }
}

pub(super) fn health_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(read::<_, i64>(d)?
        .and_then(|v| in_range(&v, 1, 65535))
        .and_then(|p| u16::try_from(p).ok()))
}

pub(super) fn interface<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(String::new());
    };
    let name = v.value.as_str();
    if name.is_empty() {
        bad(v.referenced, "must not be empty");
    } else if name.len() > MAX_IFNAME_LEN {
        bad(
            v.referenced,
            format!("\"{name}\" is longer than {MAX_IFNAME_LEN} characters"),
        );
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        bad(
            v.referenced,
            format!(
                "\"{}\" is not an interface name (no whitespace or '/')",
                name.escape_debug()
            ),
        );
    }
    Ok(v.value)
}

pub(super) fn control_socket<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(PathBuf::from(DEFAULT_CONTROL_SOCKET));
    };
    if v.value.is_empty() {
        bad(v.referenced, "must not be empty");
    } else if v.value.len() > MAX_SOCKET_PATH_LEN {
        bad(
            v.referenced,
            format!("a Unix socket path is at most {MAX_SOCKET_PATH_LEN} bytes"),
        );
    }
    Ok(PathBuf::from(v.value))
}

pub(super) fn metrics_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(None);
    };
    Ok(match v.value.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        Ok(_) => {
            bad(v.referenced, "port 0 is not allowed");
            None
        }
        Err(_) => {
            bad(
                v.referenced,
                format!(
                    "\"{}\" is not IP:PORT or [IPv6]:PORT (for example 127.0.0.1:9469 or [::1]:9469)",
                    v.value.escape_debug()
                ),
            );
            None
        }
    })
}

pub(super) fn maglev_table_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let Some(v) = read::<_, i64>(d)? else {
        return Ok(DEFAULT_MAGLEV_TABLE_SIZE);
    };
    let lo = i64::from(MIN_MAGLEV_TABLE_SIZE);
    let hi = i64::from(MAX_MAGLEV_TABLE_SIZE);
    let Some(m) = in_range(&v, lo, hi).and_then(|m| u32::try_from(m).ok()) else {
        return Ok(DEFAULT_MAGLEV_TABLE_SIZE);
    };
    if !is_prime(m) {
        bad(
            v.referenced,
            format!(
                "must be a prime number; {m} is not (nearest primes: {} and {})",
                prev_prime(m),
                next_prime(m)
            ),
        );
        return Ok(DEFAULT_MAGLEV_TABLE_SIZE);
    }
    Ok(m)
}

pub(super) fn prev_prime(n: u32) -> u32 {
    (2..n).rev().find(|&m| is_prime(m)).unwrap_or(2)
}

pub(super) fn next_prime(n: u32) -> u32 {
    (n.saturating_add(1)..=u32::MAX)
        .find(|&m| is_prime(m))
        .unwrap_or(u32::MAX)
}

/// The `timeouts` section as written: seconds, possibly fractional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "timeouts")]
struct TimeoutSeconds {
    #[serde(default)]
    tcp: Read<f64>,
    #[serde(default)]
    tcp_fin: Read<f64>,
    #[serde(default)]
    udp: Read<f64>,
    #[serde(default)]
    tcp_syn: Read<f64>,
}

pub(super) fn timeouts<'de, D: Deserializer<'de>>(d: D) -> Result<Timeouts, D::Error> {
    let mut t = default_timeouts();
    let Some(secs) = Option::<TimeoutSeconds>::deserialize(d)? else {
        return Ok(t);
    };
    let set = |given: Read<f64>, slot: &mut u32| {
        let Some(s) = given else { return };
        let ms = s.value * 1000.0;
        let max_secs = f64::from(u32::MAX) / 1000.0;
        if !ms.is_finite() || ms.round() < 1.0 || ms.round() > f64::from(u32::MAX) {
            bad(
                s.referenced,
                format!(
                    "must be a number of seconds > 0 (at least 0.001) and at most {max_secs}, got {}",
                    s.value
                ),
            );
        } else {
            *slot = ms.round() as u32;
        }
    };
    set(secs.tcp, &mut t.tcp_ms);
    set(secs.tcp_fin, &mut t.tcp_closing_ms);
    set(secs.udp, &mut t.udp_ms);
    set(secs.tcp_syn, &mut t.tcp_syn_ms);
    t.other_ms = t.udp_ms;
    Ok(t)
}

/// A sync address: `IP:PORT`, a concrete address (the peers must be able to
/// name it and check datagrams' source against it) and a nonzero port.
fn sync_addr(v: &Spanned<String>) -> Option<SocketAddr> {
    match v.value.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => bad(v.referenced, "port 0 is not allowed"),
        Ok(a) if a.ip().is_unspecified() || a.ip().is_multicast() => bad(
            v.referenced,
            format!(
                "{} is not the address of one director (give the address its peers send to)",
                a.ip()
            ),
        ),
        Ok(a) => return Some(a),
        Err(_) => bad(
            v.referenced,
            format!(
                "\"{}\" is not IP:PORT (for example 198.18.0.2:8848)",
                v.value.escape_debug()
            ),
        ),
    }
    None
}

pub(super) fn sync_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let unset = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    Ok(read::<_, String>(d)?.and_then(|v| sync_addr(&v)).unwrap_or(unset))
}

pub(super) fn sync_peers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let mut peers = Vec::new();
    let mut seen: HashMap<SocketAddr, Option<usize>> = HashMap::new();
    for v in Option::<Vec<Spanned<String>>>::deserialize(d)?.unwrap_or_default() {
        let Some(a) = sync_addr(&v) else { continue };
        if let Some(first) = seen.get(&a) {
            bad(
                v.referenced,
                format!("peer {a} is listed twice{}", first_at(*first)),
            );
            continue;
        }
        if peers.len() == MAX_SYNC_PEERS {
            bad(v.referenced, format!("at most {MAX_SYNC_PEERS} peers"));
            continue;
        }
        seen.insert(a, line_of(&v.referenced));
        peers.push(a);
    }
    Ok(peers)
}

/// `sync.key_file`: read now, so that `--check` and a reload report a
/// missing or short key instead of a director that starts and then rejects
/// every datagram.
pub(super) fn sync_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SyncKey>, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(None);
    };
    let path = PathBuf::from(&v.value);
    if v.value.is_empty() {
        bad(v.referenced, "must not be empty");
        return Ok(None);
    }
    match std::fs::read(&path) {
        Err(e) => bad(v.referenced, format!("cannot read {}: {e}", path.display())),
        Ok(bytes) if bytes.len() < MIN_SYNC_KEY_LEN => bad(
            v.referenced,
            format!(
                "{} holds {} bytes; the key is the whole file and needs at least {MIN_SYNC_KEY_LEN} \
                 (make one with: head -c 32 /dev/urandom > {})",
                path.display(),
                bytes.len(),
                path.display()
            ),
        ),
        Ok(bytes) => return Ok(Some(SyncKey { path, bytes })),
    }
    Ok(None)
}

pub(super) fn sync_refresh_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(read::<_, i64>(d)?
        .and_then(|v| in_range(&v, i64::from(MIN_SYNC_REFRESH_MS), i64::from(MAX_SYNC_REFRESH_MS)))
        .and_then(|n| u32::try_from(n).ok()))
}

pub(super) fn answer_ping<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// A flag that is off unless the file says `true`.
pub(super) fn off_by_default<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// `route_table`: a kernel table id, not one of the kernel's own (0
/// unspecified, 253 default, 254 main, 255 local).
pub(super) fn route_table<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(v) = read::<_, i64>(d)? else {
        return Ok(None);
    };
    let Some(t) = in_range(&v, 1, i64::from(u32::MAX)).and_then(|t| u32::try_from(t).ok()) else {
        return Ok(None);
    };
    if (253..=255).contains(&t) {
        bad(
            v.referenced,
            format!(
                "table {t} is one of the kernel's own (253 default, 254 main, 255 local); choose another"
            ),
        );
        return Ok(None);
    }
    Ok(Some(t))
}

pub(super) fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    let mut cpus = Vec::new();
    let mut seen: HashMap<i64, Option<usize>> = HashMap::new();
    for cpu in Option::<Vec<Spanned<i64>>>::deserialize(d)?.unwrap_or_default() {
        if let Some(first) = seen.get(&cpu.value) {
            bad(
                cpu.referenced,
                format!("CPU {} is listed twice{}", cpu.value, first_at(*first)),
            );
            continue;
        }
        seen.insert(cpu.value, line_of(&cpu.referenced));
        if let Some(c) = in_range(&cpu, 0, MAX_CPU_INDEX as i64) {
            cpus.push(c as usize);
        }
    }
    Ok(cpus)
}

/// " (first at line N)", or "" when the line is unknown.
pub(super) fn first_at(line: Option<usize>) -> String {
    line.map(|l| format!(" (first at line {l})")).unwrap_or_default()
}

pub(super) fn services<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Service>, D::Error> {
    with_lines(d, |s, line| Service { line, ..s })
}

pub(super) fn real_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RealServer>, D::Error> {
    with_lines(d, |r, line| RealServer { line, ..r })
}

/// An optional list, each item given the line it starts at by `at`.
fn with_lines<'de, D: Deserializer<'de>, T: Deserialize<'de> + Listed>(
    d: D,
    at: fn(T, Option<usize>) -> T,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<Spanned<Item<T>>>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|s| at(s.value.0, line_of(&s.referenced)))
        .collect())
}

// The fields the rules ask about, noted (see [`Written`]).

pub(super) fn interface_noted<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    noting(Slot::Interface, || interface(d))
}

pub(super) fn route_table_noted<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    noting(Slot::RouteTable, || route_table(d))
}

pub(super) fn sync_listen_noted<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    noting(Slot::SyncListen, || sync_listen(d))
}

pub(super) fn service_name_noted<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    noting(Slot::Name, || service_name(d))
}

pub(super) fn vip_noted<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    noting(Slot::Vip, || vip(d))
}

pub(super) fn service_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    noting(Slot::Port, || int::<_, _, 0, 65535, 0>(d))
}

pub(super) fn health_kind<'de, D: Deserializer<'de>>(d: D) -> Result<super::HealthKind, D::Error> {
    noting(Slot::HealthKind, || choice(d))
}

pub(super) fn health_timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    noting(Slot::HealthTimeout, || {
        int::<_, _, 1, { super::MAX_HEALTH_INTERVAL_MS }, 500>(d)
    })
}

/// `health`: the checks, noted as written where the mapping starts.
pub(super) fn health<'de, D: Deserializer<'de>>(d: D) -> Result<super::HealthCheck, D::Error> {
    let v = Option::<Spanned<super::HealthCheck>>::deserialize(d)?;
    note(Slot::Health, v.as_ref().map(|v| line_of(&v.referenced)));
    Ok(v.map(|v| v.value).unwrap_or_default())
}

fn endpoint_noted<'de, D: Deserializer<'de>>(d: D) -> Result<(IpAddr, Option<u16>), D::Error> {
    noting(Slot::Address, || endpoint(d))
}

/// The 1-based line of a location, `None` when unknown.
pub(super) fn line_of(at: &Location) -> Option<usize> {
    match at.line() {
        0 => None,
        l => usize::try_from(l).ok(),
    }
}

pub(super) fn service_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(String::new());
    };
    if v.value.is_empty() {
        bad(v.referenced, "must not be empty");
    } else if v.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bad(
            v.referenced,
            format!("\"{}\" must not contain whitespace", v.value.escape_debug()),
        );
    }
    Ok(v.value)
}

pub(super) fn vip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(UNSET);
    };
    Ok(parse_vip(&v.value).unwrap_or_else(|message| {
        bad(v.referenced, message);
        UNSET
    }))
}

/// The HTTP path: it must start with '/' and hold no whitespace. Whether it
/// may differ from `/` depends on the kind ([`super::check`]).
pub(super) fn http_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok("/".to_string());
    };
    if !v.value.starts_with('/') {
        bad(
            v.referenced,
            format!("\"{}\" must start with '/'", v.value.escape_debug()),
        );
    } else if v.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bad(
            v.referenced,
            format!(
                "\"{}\" must not contain whitespace or control characters",
                v.value.escape_debug()
            ),
        );
    }
    Ok(v.value)
}

/// A real server's entry as written: `address` holds the IP and, in nat
/// mode, a port, which [`RealServer`] keeps apart.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "real_server")]
pub(super) struct ServerEntry {
    #[serde(default = "no_endpoint", deserialize_with = "endpoint_noted")]
    address: (IpAddr, Option<u16>),
    #[serde(default = "one", deserialize_with = "int::<_, _, 0, 65535, 1>")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// The placeholder of a missing or wrong address or VIP ([`super::check`]
/// reports it).
const UNSET: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn no_endpoint() -> (IpAddr, Option<u16>) {
    (UNSET, None)
}

impl From<ServerEntry> for RealServer {
    fn from(e: ServerEntry) -> Self {
        RealServer {
            address: e.address.0,
            port: e.address.1,
            weight: e.weight,
            line: None,
        }
    }
}

fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<(IpAddr, Option<u16>), D::Error> {
    let Some(v) = read::<_, String>(d)? else {
        return Ok(no_endpoint());
    };
    Ok(parse_endpoint(&v.value).unwrap_or_else(|message| {
        bad(v.referenced, message);
        no_endpoint()
    }))
}

/// Whether the text looks like an IPv6 address, with or without brackets/port.
fn looks_like_ipv6(s: &str) -> bool {
    s.starts_with('[') || s.matches(':').count() >= 2
}

/// A unicast address usable as a VIP or real server. IPv6 link-local
/// addresses need a zone (an interface) that the config cannot say, and an
/// IPv4-mapped IPv6 address is an IPv4 address written the long way: both
/// would make a second name for a server, so they are refused.
fn check_unicast(ip: IpAddr) -> Result<IpAddr, String> {
    let unusable = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.is_loopback(),
    };
    match ip {
        _ if unusable => Err(format!(
            "{ip} is not a usable address (unspecified, broadcast, multicast or loopback)"
        )),
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => Err(format!(
            "{ip} is link-local (fe80::/10), which needs an interface: use a global or unique-local address"
        )),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => Err(format!(
            "{ip} is an IPv4-mapped IPv6 address: write the IPv4 address {}",
            a.to_ipv4_mapped().map(|v| v.to_string()).unwrap_or_default()
        )),
        _ => Ok(ip),
    }
}

/// A VIP: an IPv4 or IPv6 address, no port and no brackets.
fn parse_vip(text: &str) -> Result<IpAddr, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return check_unicast(ip);
    }
    let message = if t.parse::<SocketAddr>().is_ok() {
        "must be an address without a port (the port goes in `port`)"
    } else if t.starts_with('[') && t.ends_with(']') {
        "must be an IPv6 address without brackets (they are for `[IPv6]:PORT`)"
    } else if looks_like_ipv6(t) {
        "is not a valid IPv6 address"
    } else {
        "is not a valid IPv4 address"
    };
    Err(format!("\"{}\" {message}", t.escape_debug()))
}

/// A real server's address: `IP`, `IP:PORT`, `IPv6`, `[IPv6]` or
/// `[IPv6]:PORT` (the mode decides whether a port may be given).
fn parse_endpoint(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return check_unicast(ip).map(|ip| (ip, None));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("\"{}\" is not a port number (0..=65535)", p.escape_debug()))
    };
    if let Some(rest) = t.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("\"{}\" has no closing ']'", t.escape_debug()));
        };
        let ip = host
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{}\" is not a valid IPv6 address", host.escape_debug()))?;
        let ip = check_unicast(IpAddr::V6(ip))?;
        return match after {
            "" => Ok((ip, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((ip, Some(port(p)?))),
                None => Err(format!(
                    "\"{}\" is not [IPv6]:PORT (for example [2001:db8::11]:8080)",
                    t.escape_debug()
                )),
            },
        };
    }
    if looks_like_ipv6(t) {
        return Err(format!(
            "\"{}\" is not a valid IPv6 address (with a port, write [IPv6]:PORT)",
            t.escape_debug()
        ));
    }
    if let Some((host, p)) = t.rsplit_once(':') {
        let ip = host
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("\"{}\" is not a valid IPv4 address", host.escape_debug()))?;
        let p = port(p)?;
        return check_unicast(IpAddr::V4(ip)).map(|ip| (ip, Some(p)));
    }
    Err(format!("\"{}\" is not a valid IPv4 address", t.escape_debug()))
}

/// One of the enum's spellings, forgiving about case and `-` for `_`; the
/// default when null or wrong.
pub(super) fn choice<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    choice_or(d, T::default())
}

/// `mode`: dr unless given ([`Mode`] belongs to the forwarding table, which
/// has no default).
pub(super) fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    choice_or(d, Mode::Dr)
}

fn choice_or<'de, D, T>(d: D, default: T) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let Some(v) = read::<_, String>(d)? else {
        return Ok(default);
    };
    let wanted = v.value.trim().to_ascii_lowercase().replace('-', "_");
    match T::deserialize(StrDeserializer::<VariantError>::new(&wanted)) {
        Ok(t) => Ok(t),
        Err(e) => {
            bad(
                v.referenced,
                format!(
                    "unknown value \"{}\"; allowed: {}",
                    v.value.escape_debug(),
                    e.allowed.join(", ")
                ),
            );
            Ok(default)
        }
    }
}

/// Every spelling of a fieldless enum, in declaration order.
pub(super) fn allowed<T: DeserializeOwned>() -> &'static [&'static str] {
    // No variant is spelled with a NUL: this asks serde for the list.
    T::deserialize(StrDeserializer::<VariantError>::new("\0"))
        .err()
        .map_or(&[], |e| e.allowed)
}

/// What deserializing an enum from a string says when the string is no
/// variant: the variants serde knows.
#[derive(Debug)]
struct VariantError {
    allowed: &'static [&'static str],
}

impl de::Error for VariantError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        VariantError { allowed: &[] }
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        VariantError { allowed: expected }
    }
}

impl fmt::Display for VariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected one of {}", self.allowed.join(", "))
    }
}

impl std::error::Error for VariantError {}
