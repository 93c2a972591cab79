//! Prometheus exposition of the director's counters and the scrape endpoint's
//! HTTP handling (slow path). `render` turns one `Stats` + `List` snapshot into
//! the text format 0.0.4; `http_response` answers one request head (`/metrics`
//! with that text, `/` with the status page of [`super::status_page`], made
//! from the same snapshot). Neither does I/O: the binary owns the listening
//! socket and calls them per scrape.
//!
//! Names follow the Prometheus conventions: counters end in `_total`, units
//! are base units (`_seconds`, `_bytes`), the process is described by the
//! standard `process_*` families, and nothing is exported that `rate()` over a
//! counter already gives (the smoothed rates stay in `ulvsadm list --rate`
//! and on the status page).
//!
//! Every family is written whole under one `# HELP` and one `# TYPE` line:
//! the text format requires a family's lines to form one group, and parsers
//! reject a second `# TYPE` (promtool 2.42 does not notice a split family, so
//! the tests check the grouping themselves).

use super::process::ProcessStats;
use super::snapshot::{ConnCounters, List, MetricKind, ServerSnap, ServiceSnap, Stats, STAT_FIELDS};

/// The `Content-Type` of a scrape response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the snapshots do not carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extra {
    /// When the director started, in seconds since the Unix epoch
    /// (`process_start_time_seconds` when `/proc` does not say).
    pub start_time_seconds: f64,
    /// The `version` label of `ulvs_build_info`.
    pub version: &'static str,
    /// Whether the last attempt to load the config (at start, SIGHUP or
    /// `ulvsadm reload`) took effect.
    pub last_reload_successful: bool,
    /// When the config in use was loaded, in seconds since the Unix epoch.
    pub last_reload_success_time_seconds: f64,
    /// The process's own resources (`process_*`).
    pub process: ProcessStats,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, Copy)]
enum Val {
    Int(u64),
    Float(f64),
}

/// The exposition being written.
struct Out(String);

impl Out {
    /// Start a family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let s = &mut self.0;
        s.push_str("# HELP ");
        s.push_str(name);
        s.push(' ');
        escape_into(s, help, false);
        s.push_str("\n# TYPE ");
        s.push_str(name);
        s.push_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
    }

    /// One sample line of the family last started.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: Val) {
        let s = &mut self.0;
        s.push_str(name);
        if !labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(k);
                s.push_str("=\"");
                escape_into(s, v, true);
                s.push('"');
            }
            s.push('}');
        }
        s.push(' ');
        match v {
            Val::Int(n) => s.push_str(&n.to_string()),
            Val::Float(f) => s.push_str(&float(f)),
        }
        s.push('\n');
    }

    /// A family of exactly one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, v: Val) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

/// Escape a label value (`\`, `"`, newline) or a HELP text (`\`, newline).
fn escape_into(s: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if quote => s.push_str("\\\""),
            c => s.push(c),
        }
    }
}

/// A float as Go's `ParseFloat` (and so Prometheus) reads it. Rust's `Display`
/// never uses an exponent and round-trips; only the non-finite spellings differ.
fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        f.to_string()
    }
}

/// The traffic counters a service and a real server have in common.
struct Traffic {
    active_flows: u64,
    inactive_flows: u64,
    conns: u64,
    packets: u64,
    bytes: u64,
    out_packets: u64,
    out_bytes: u64,
}

/// `From<&$snap>` for each snapshot type that carries the traffic fields.
macro_rules! traffic_from {
    ($($snap:ty),*) => {$(
        impl From<&$snap> for Traffic {
            fn from(s: &$snap) -> Self {
                Traffic {
                    active_flows: s.active_flows,
                    inactive_flows: s.inactive_flows,
                    conns: s.conns,
                    packets: s.packets,
                    bytes: s.bytes,
                    out_packets: s.out_packets,
                    out_bytes: s.out_bytes,
                }
            }
        }
    )*};
}

traffic_from!(ServiceSnap, ServerSnap);

/// How a traffic family's series are read.
enum Read {
    /// One series.
    One(fn(&Traffic) -> Val),
    /// Two series: `direction="in"` (client to server) and `direction="out"`.
    Dir(fn(&Traffic) -> Val, fn(&Traffic) -> Val),
}

/// The traffic families, named `ulvs_service_<suffix>` and `ulvs_server_<suffix>`.
const TRAFFIC: &[(&str, Kind, &str, Read)] = &[
    (
        "active_flows",
        Kind::Gauge,
        "Flows not yet closed (TCP before FIN/RST, UDP until timeout)",
        Read::One(|t| Val::Int(t.active_flows)),
    ),
    (
        "inactive_flows",
        Kind::Gauge,
        "Closed TCP flows still remembered",
        Read::One(|t| Val::Int(t.inactive_flows)),
    ),
    (
        "connections_total",
        Kind::Counter,
        "New flows scheduled",
        Read::One(|t| Val::Int(t.conns)),
    ),
    (
        "packets_total",
        Kind::Counter,
        "Frames forwarded; direction=\"out\" (server to client) is seen in NAT mode only",
        Read::Dir(|t| Val::Int(t.packets), |t| Val::Int(t.out_packets)),
    ),
    (
        "bytes_total",
        Kind::Counter,
        "Bytes of frames forwarded; direction=\"out\" (server to client) is seen in NAT mode only",
        Read::Dir(|t| Val::Int(t.bytes), |t| Val::Int(t.out_bytes)),
    ),
];

/// Write the traffic families of `rows` (label set, counters).
fn traffic(out: &mut Out, prefix: &str, noun: &str, rows: &[(Vec<(&str, &str)>, Traffic)]) {
    for (suffix, kind, help, read) in TRAFFIC {
        let name = format!("{prefix}_{suffix}");
        out.family(&name, *kind, &format!("{help}, per {noun}."));
        for (labels, t) in rows {
            match read {
                Read::One(f) => out.sample(&name, labels, f(t)),
                Read::Dir(fin, fout) => {
                    for (dir, f) in [("in", fin), ("out", fout)] {
                        let mut l = labels.clone();
                        l.push(("direction", dir));
                        out.sample(&name, &l, f(t));
                    }
                }
            }
        }
    }
}

/// The flow-sync thread's families (`ulvs_sync_*`, with `sync` only).
fn sync_families(o: &mut Out, s: &crate::control::snapshot::SyncSnap) {
    use Kind::{Counter, Gauge};
    use Val::{Float, Int};
    for (name, help, v) in [
        (
            "ulvs_sync_datagrams_sent_total",
            "Flow-sync datagrams sent (to all peers).",
            s.datagrams_sent,
        ),
        (
            "ulvs_sync_flows_sent_total",
            "Flow records sent to peers.",
            s.flows_sent,
        ),
        (
            "ulvs_sync_send_errors_total",
            "Flow-sync datagrams the socket refused to send.",
            s.send_errors,
        ),
        (
            "ulvs_sync_datagrams_received_total",
            "Flow-sync datagrams accepted (peer, format, MAC and replay checks passed).",
            s.datagrams_received,
        ),
        (
            "ulvs_sync_flows_received_total",
            "Flow records from peers handed to a worker.",
            s.flows_received,
        ),
        (
            "ulvs_sync_notes_full_total",
            "Flows the workers could not queue for sync (queue full).",
            s.notes_full,
        ),
        (
            "ulvs_sync_synced_full_total",
            "Flows from peers dropped because a worker's queue was full.",
            s.synced_full,
        ),
        (
            "ulvs_sync_notes_unresolved_total",
            "Worker notes whose server id named no server any more.",
            s.notes_unresolved,
        ),
        (
            "ulvs_sync_bulk_served_total",
            "Bulk transfers sent to peers that asked.",
            s.bulk_served,
        ),
        (
            "ulvs_sync_bulk_walk_timeouts_total",
            "Bulk transfers ended by the time limit before every worker finished its walk.",
            s.bulk_walk_timeouts,
        ),
    ] {
        o.single(name, Counter, help, Int(v));
    }
    o.family(
        "ulvs_sync_rejected_total",
        Counter,
        "Flow-sync input dropped, by reason: datagrams (not_peer, malformed, version, bad_mac, replay) and \
         flow records (unknown_service, unknown_server).",
    );
    for (reason, n) in &s.rejected {
        o.sample("ulvs_sync_rejected_total", &[("reason", reason)], Int(*n));
    }
    o.family(
        "ulvs_sync_peer_bulk_state",
        Gauge,
        "1 for the state of the bulk transfer this director asked each peer for, else 0.",
    );
    for p in &s.peers {
        for st in ["idle", "requested", "receiving", "complete", "unanswered"] {
            let labels = [("peer", p.address.as_str()), ("state", st)];
            o.sample("ulvs_sync_peer_bulk_state", &labels, Int(u64::from(p.bulk == st)));
        }
    }
    o.family(
        "ulvs_sync_peer_bulk_flows",
        Gauge,
        "Flows received from each peer in the bulk transfer this director asked for.",
    );
    for p in &s.peers {
        o.sample(
            "ulvs_sync_peer_bulk_flows",
            &[("peer", &p.address)],
            Int(p.bulk_flows),
        );
    }
    o.family(
        "ulvs_sync_peer_bulk_duration_seconds",
        Gauge,
        "Seconds from the first bulk request to each peer until its bulk done (complete transfers only).",
    );
    for p in &s.peers {
        if let Some(secs) = p.bulk_seconds {
            o.sample(
                "ulvs_sync_peer_bulk_duration_seconds",
                &[("peer", &p.address)],
                Float(secs),
            );
        }
    }
    o.family(
        "ulvs_sync_peer_datagrams_received_total",
        Counter,
        "Flow-sync datagrams accepted from each peer.",
    );
    for p in &s.peers {
        o.sample(
            "ulvs_sync_peer_datagrams_received_total",
            &[("peer", &p.address)],
            Int(p.datagrams_received),
        );
    }
}

/// The states of `ulvs_server_state`, one series each.
const SERVER_STATES: [&str; 3] = ["up", "down", "draining"];

/// The standard `process_*` families (as client_golang names them); one
/// whose `/proc` source could not be read is left out, never exported as 0.
fn process(o: &mut Out, extra: &Extra) {
    use Kind::{Counter, Gauge};
    use Val::{Float, Int};
    let p = &extra.process;
    let start = p.start_time_seconds.unwrap_or(extra.start_time_seconds);
    o.single(
        "process_start_time_seconds",
        Gauge,
        "Start time of the process since unix epoch in seconds.",
        Float(start),
    );
    let floats = [(
        "process_cpu_seconds_total",
        Counter,
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    )];
    for (name, kind, help, v) in floats {
        if let Some(v) = v {
            o.single(name, kind, help, Float(v));
        }
    }
    let ints = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_memory_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes,
        ),
        ("process_open_fds", "Number of open file descriptors.", p.open_fds),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds,
        ),
    ];
    for (name, help, v) in ints {
        if let Some(v) = v {
            o.single(name, Gauge, help, Int(v));
        }
    }
}

/// Prometheus text exposition format 0.0.4 for one scrape.
pub fn render(stats: &Stats, list: &List, extra: &Extra) -> String {
    use Kind::{Counter, Gauge};
    use Val::{Float, Int};
    let mut out = Out(String::with_capacity(4096 + 2048 * list.services.len()));
    let o = &mut out;

    o.family(
        "ulvs_build_info",
        Gauge,
        "Always 1; the version label is the ulvs version.",
    );
    o.sample("ulvs_build_info", &[("version", extra.version)], Int(1));
    process(o, extra);
    o.single(
        "ulvs_config_last_reload_successful",
        Gauge,
        "1 if the last attempt to load the configuration (start, SIGHUP, ulvsadm reload) took effect, else 0.",
        Int(u64::from(extra.last_reload_successful)),
    );
    o.single(
        "ulvs_config_last_reload_success_timestamp_seconds",
        Gauge,
        "When the configuration in use was loaded, in seconds since the Unix epoch.",
        Float(extra.last_reload_success_time_seconds),
    );
    let mut family = "";
    for f in STAT_FIELDS {
        let kind = match f.kind {
            MetricKind::Counter => Counter,
            MetricKind::Gauge => Gauge,
        };
        if f.metric != family {
            o.family(f.metric, kind, f.help);
            family = f.metric;
        }
        let labels = f.label.as_slice();
        o.sample(f.metric, labels, Int((f.get)(stats)));
    }
    o.single(
        "ulvs_announcing",
        Gauge,
        "1 while the director answers ARP for its VIPs (announce on), else 0.",
        Int(u64::from(stats.announcing)),
    );
    if let Some(routes) = &stats.announced_routes {
        o.single(
            "ulvs_announced_routes",
            Gauge,
            "announce: route: host routes (VIP/32) installed in route_table.",
            Int(routes.len() as u64),
        );
    }
    if let Some(f) = &stats.xdp_fast_path {
        o.single(
            "ulvs_xdp_fast_path_frames_total",
            Counter,
            "xdp_fast_path: frames of established DR flows the XDP program forwarded itself (not in ulvs_frames_forwarded_total; in their servers' packets_total).",
            Int(f.frames),
        );
        o.single(
            "ulvs_xdp_fast_path_bytes_total",
            Counter,
            "xdp_fast_path: their bytes (Ethernet header plus IPv4 total length).",
            Int(f.bytes),
        );
    }
    o.family("ulvs_drops_total", Counter, "Frames not forwarded, by reason.");
    for (reason, n) in &stats.drops {
        o.sample("ulvs_drops_total", &[("reason", reason)], Int(*n));
    }
    let listeners: Vec<(&str, ConnCounters)> = [
        ("control", stats.control_connections),
        ("http", stats.http_connections),
    ]
    .into_iter()
    .filter_map(|(l, c)| Some((l, c?)))
    .collect();
    o.family(
        "ulvs_listener_connections_open",
        Gauge,
        "Connections open on the control socket and metrics_listen.",
    );
    for (l, c) in &listeners {
        o.sample("ulvs_listener_connections_open", &[("listener", l)], Int(c.open));
    }
    o.family(
        "ulvs_listener_connections_total",
        Counter,
        "Connections of the control socket and metrics_listen, by what became of them: accepted, \
         refused_limit (too many open), served, timed_out (no request in time), too_large, bad_request, \
         reply_timed_out (reply not taken in time), closed_early.",
    );
    for (l, c) in &listeners {
        for (event, n) in c.fields().into_iter().skip(1) {
            o.sample(
                "ulvs_listener_connections_total",
                &[("listener", l), ("event", event)],
                Int(n),
            );
        }
    }

    if let Some(sync) = &stats.sync {
        sync_families(o, sync);
    }

    let ports: Vec<String> = list.services.iter().map(|s| s.port.to_string()).collect();
    let services: Vec<_> = list
        .services
        .iter()
        .zip(&ports)
        .map(|(s, port)| {
            let labels = vec![
                ("service", s.name.as_str()),
                ("vip", s.vip.as_str()),
                ("port", port.as_str()),
                ("protocol", s.protocol.as_str()),
                ("mode", s.mode.as_str()),
            ];
            (labels, Traffic::from(s))
        })
        .collect();
    traffic(o, "ulvs_service", "virtual service", &services);

    let servers: Vec<(Vec<(&str, &str)>, &ServerSnap)> = list
        .services
        .iter()
        .flat_map(|s| {
            let svc = s.name.as_str();
            s.real_servers
                .iter()
                .map(move |r| (vec![("service", svc), ("server", r.address.as_str())], r))
        })
        .collect();
    o.family(
        "ulvs_server_up",
        Gauge,
        "Health-check result of the real server: 1 up, 0 down (independent of draining).",
    );
    for (labels, r) in &servers {
        o.sample("ulvs_server_up", labels, Int(u64::from(r.health == "up")));
    }
    o.family(
        "ulvs_server_state",
        Gauge,
        "State of the real server: 1 for the current state, 0 for the others.",
    );
    for (labels, r) in &servers {
        for state in SERVER_STATES {
            let mut l = labels.clone();
            l.push(("state", state));
            o.sample("ulvs_server_state", &l, Int(u64::from(r.state == state)));
        }
    }
    o.family(
        "ulvs_server_weight",
        Gauge,
        "Configured weight of the real server.",
    );
    for (labels, r) in &servers {
        o.sample("ulvs_server_weight", labels, Int(u64::from(r.weight)));
    }
    let rows: Vec<_> = servers
        .into_iter()
        .map(|(labels, r)| (labels, Traffic::from(r)))
        .collect();
    traffic(o, "ulvs_server", "real server", &rows);
    out.0
}

/// The request line of a request head, if it is well formed.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

/// Parse a request head: `METHOD SP request-target SP HTTP/1.x`, then header
/// lines of `name: value`, up to an optional blank line. Header values are not
/// interpreted: the scrape endpoint needs none of them.
fn parse(head: &[u8]) -> Option<Request<'_>> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if parts.next().is_some()
        || method.is_empty()
        || !method.chars().all(tchar)
        || !version
            .strip_prefix("HTTP/1.")
            .is_some_and(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit())
        || target.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return None;
    }
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, _) = line.split_once(':')?;
        if name.is_empty() || !name.chars().all(tchar) {
            return None;
        }
    }
    // absolute-form (`http://host/path`) is allowed too; its path is what counts.
    let path = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ if target.starts_with('/') => target,
        _ => return None,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Some(Request { method, path })
}

/// A complete response; the body is left out for `HEAD`.
fn response(status: &str, extra_headers: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}\
         Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        r.push_str(body);
    }
    r.into_bytes()
}

/// A complete plain-text error response (`status` as `"431 Request Header
/// Fields Too Large"`), for requests refused before they were parsed.
pub fn http_error(status: &str, body: &str) -> Vec<u8> {
    response(status, "", "text/plain; charset=utf-8", body, false)
}

/// What a request asks the director to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `GET /metrics`: the Prometheus text ([`render`]).
    Metrics,
    /// `GET /`: the HTML status page ([`super::status_page::render`]).
    Status,
}

/// Headers of the status page: it must never be cached (it refreshes itself)
/// and, since it carries operator-supplied names, may load nothing and run
/// nothing even if an escaping bug let markup through (inline CSS only).
const STATUS_HEADERS: &str = "Cache-Control: no-store\r\n\
                              X-Content-Type-Options: nosniff\r\n\
                              Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; \
                              frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n";

/// Minimal HTTP/1.x handling for the scrape endpoint: `request_head` is the
/// bytes of one request head (with or without its final blank line); the result
/// is the full response, always with `Content-Length` and `Connection: close`.
///
/// `GET /metrics` (or `HEAD`) answers 200 with [`CONTENT_TYPE`] and the body
/// `body(Page::Metrics)`; `GET /` answers the HTML status page
/// `body(Page::Status)`; `body` is called for nothing else. Other paths 404,
/// other methods 405 and a malformed head 400. A query string is ignored.
pub fn http_response(request_head: &[u8], body: impl FnOnce(Page) -> String) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(req) = parse(request_head) else {
        return response("400 Bad Request", "", TEXT, "Bad Request\n", false);
    };
    let head_only = match req.method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let allow = "Allow: GET, HEAD\r\n";
            return response(
                "405 Method Not Allowed",
                allow,
                TEXT,
                "Method Not Allowed\n",
                false,
            );
        }
    };
    match req.path {
        "/metrics" => response("200 OK", "", CONTENT_TYPE, &body(Page::Metrics), head_only),
        "/" => response(
            "200 OK",
            STATUS_HEADERS,
            "text/html; charset=utf-8",
            &body(Page::Status),
            head_only,
        ),
        _ => response("404 Not Found", "", TEXT, "Not Found\n", head_only),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::super::rates::Rates;
    use super::super::snapshot::service_fixture;
    use super::*;

    fn fixture() -> (Stats, List, Extra) {
        let stats = Stats {
            frames_seen: 100,
            forwarded: 90,
            bytes_forwarded: 12_345,
            flows: 5,
            flow_capacity: 65_536,
            workers: 2,
            generation: 3,
            drops: BTreeMap::from([("no_server".to_string(), 3), ("runt".to_string(), 7)]),
            control_connections: Some(ConnCounters {
                open: 2,
                accepted: 9,
                too_large: 1,
                ..ConnCounters::default()
            }),
            ..Stats::default()
        };
        let web = service_fixture(
            "web",
            ("198.18.100.1", 80, "tcp"),
            "dr",
            vec![
                ServerSnap {
                    address: "198.18.0.11".into(),
                    weight: 1,
                    state: "up".into(),
                    health: "up".into(),
                    active_flows: 3,
                    conns: 40,
                    packets: 120,
                    bytes: 9000,
                    rates: Rates {
                        conns_per_s: 2.5,
                        in_packets_per_s: 10.0,
                        ..Rates::default()
                    },
                    ..ServerSnap::default()
                },
                ServerSnap {
                    address: "198.18.0.12:8080".into(),
                    weight: 2,
                    state: "draining".into(),
                    health: "down".into(),
                    active_flows: 2,
                    inactive_flows: 1,
                    packets: 1,
                    ..ServerSnap::default()
                },
            ],
        );
        let odd = service_fixture(
            "odd \"name\" \\ with\nnewline",
            ("2001:db8::1", 53, "udp"),
            "nat",
            vec![ServerSnap {
                address: "[2001:db8::11]:53".into(),
                weight: 0,
                state: "down".into(),
                health: "down".into(),
                out_packets: 4,
                out_bytes: 400,
                rates: Rates {
                    out_bytes_per_s: 1.0 / 3.0,
                    ..Rates::default()
                },
                ..ServerSnap::default()
            }],
        );
        let extra = Extra {
            start_time_seconds: 1_700_000_000.25,
            version: "0.1.0",
            last_reload_successful: false,
            last_reload_success_time_seconds: 1_700_000_100.5,
            process: ProcessStats {
                start_time_seconds: Some(1_699_999_999.5),
                cpu_seconds: Some(12.25),
                resident_memory_bytes: Some(8 << 20),
                virtual_memory_bytes: Some(100 << 20),
                open_fds: Some(17),
                max_fds: Some(1024),
            },
        };
        (
            stats,
            List {
                services: vec![web, odd],
            },
            extra,
        )
    }

    /// The families the contract names, by type.
    const FAMILIES: &[(&str, &str)] = &[
        ("ulvs_frames_seen_total", "counter"),
        ("ulvs_frames_forwarded_total", "counter"),
        ("ulvs_bytes_forwarded_total", "counter"),
        ("ulvs_drops_total", "counter"),
        ("ulvs_ring_drops_total", "counter"),
        ("ulvs_arp_replies_total", "counter"),
        ("ulvs_arp_requests_total", "counter"),
        ("ulvs_flows", "gauge"),
        ("ulvs_flow_capacity", "gauge"),
        ("ulvs_flow_evictions_total", "counter"),
        ("ulvs_flow_expirations_total", "counter"),
        ("ulvs_flow_evictions_by_kind_total", "counter"),
        ("ulvs_flows_rescheduled_total", "counter"),
        ("ulvs_syn_second_chance_total", "counter"),
        ("ulvs_icmp_echo_replies_total", "counter"),
        ("ulvs_icmp_errors_forwarded_total", "counter"),
        ("ulvs_fragments_forwarded_total", "counter"),
        ("ulvs_tun_segments_total", "counter"),
        ("ulvs_config_generation", "gauge"),
        ("ulvs_reloads_total", "counter"),
        ("ulvs_reload_failures_total", "counter"),
        ("ulvs_workers", "gauge"),
        ("ulvs_gratuitous_arps_total", "counter"),
        ("ulvs_announcing", "gauge"),
        ("ulvs_listener_connections_open", "gauge"),
        ("ulvs_listener_connections_total", "counter"),
        ("ulvs_build_info", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("ulvs_config_last_reload_successful", "gauge"),
        ("ulvs_config_last_reload_success_timestamp_seconds", "gauge"),
        ("ulvs_service_active_flows", "gauge"),
        ("ulvs_service_inactive_flows", "gauge"),
        ("ulvs_service_connections_total", "counter"),
        ("ulvs_service_packets_total", "counter"),
        ("ulvs_service_bytes_total", "counter"),
        ("ulvs_server_up", "gauge"),
        ("ulvs_server_state", "gauge"),
        ("ulvs_server_weight", "gauge"),
        ("ulvs_server_active_flows", "gauge"),
        ("ulvs_server_inactive_flows", "gauge"),
        ("ulvs_server_connections_total", "counter"),
        ("ulvs_server_packets_total", "counter"),
        ("ulvs_server_bytes_total", "counter"),
    ];

    fn rendered() -> String {
        let (s, l, e) = fixture();
        render(&s, &l, &e)
    }

    #[test]
    fn golden_lines() {
        let text = rendered();
        let web = r#"service="web",vip="198.18.100.1",port="80",protocol="tcp",mode="dr""#;
        let s11 = r#"service="web",server="198.18.0.11""#;
        let s12 = r#"service="web",server="198.18.0.12:8080""#;
        for want in [
            "# HELP ulvs_frames_seen_total Frames taken from the rings.\n\
             # TYPE ulvs_frames_seen_total counter\n\
             ulvs_frames_seen_total 100\n"
                .to_string(),
            "# TYPE ulvs_drops_total counter\n\
             ulvs_drops_total{reason=\"no_server\"} 3\n\
             ulvs_drops_total{reason=\"runt\"} 7\n"
                .to_string(),
            "# TYPE ulvs_build_info gauge\nulvs_build_info{version=\"0.1.0\"} 1\n".to_string(),
            "# TYPE ulvs_listener_connections_open gauge\nulvs_listener_connections_open{listener=\"control\"} 2\n"
                .to_string(),
            "\nulvs_listener_connections_total{listener=\"control\",event=\"accepted\"} 9\n".to_string(),
            "\nulvs_listener_connections_total{listener=\"control\",event=\"too_large\"} 1\n".to_string(),
            "\nprocess_start_time_seconds 1699999999.5\n".to_string(),
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.25\n".to_string(),
            "\nprocess_resident_memory_bytes 8388608\n".to_string(),
            "\nprocess_open_fds 17\n".to_string(),
            "\nprocess_max_fds 1024\n".to_string(),
            "# TYPE ulvs_config_last_reload_successful gauge\nulvs_config_last_reload_successful 0\n".to_string(),
            "\nulvs_config_last_reload_success_timestamp_seconds 1700000100.5\n".to_string(),
            "# TYPE ulvs_flow_capacity gauge\nulvs_flow_capacity 65536\n".to_string(),
            format!(
                "# TYPE ulvs_service_packets_total counter\n\
                 ulvs_service_packets_total{{{web},direction=\"in\"}} 121\n\
                 ulvs_service_packets_total{{{web},direction=\"out\"}} 0\n"
            ),
            format!("\nulvs_service_active_flows{{{web}}} 5\n"),
            format!("\nulvs_service_connections_total{{{web}}} 40\n"),
            format!(
                "# TYPE ulvs_server_state gauge\n\
                 ulvs_server_state{{{s11},state=\"up\"}} 1\n\
                 ulvs_server_state{{{s11},state=\"down\"}} 0\n\
                 ulvs_server_state{{{s11},state=\"draining\"}} 0\n\
                 ulvs_server_state{{{s12},state=\"up\"}} 0\n\
                 ulvs_server_state{{{s12},state=\"down\"}} 0\n\
                 ulvs_server_state{{{s12},state=\"draining\"}} 1\n"
            ),
            format!("# TYPE ulvs_server_up gauge\nulvs_server_up{{{s11}}} 1\nulvs_server_up{{{s12}}} 0\n"),
            format!("\nulvs_server_weight{{{s12}}} 2\n"),
            format!("\nulvs_server_inactive_flows{{{s12}}} 1\n"),
        ] {
            assert!(text.contains(&want), "missing:\n{want}\nin:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let text = rendered();
        let name = r#"service="odd \"name\" \\ with\nnewline""#;
        let want = format!(
            "\nulvs_server_bytes_total{{{name},server=\"[2001:db8::11]:53\",direction=\"out\"}} 400\n"
        );
        assert!(text.contains(&want), "{text}");
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\nd", false);
        assert_eq!(s, "a\"b\\\\c\\nd", "HELP text keeps quotes");
    }

    #[test]
    fn every_family_once_with_help_and_type_and_grouped() {
        for (stats, list) in [(fixture().0, fixture().1), (Stats::default(), List::default())] {
            let text = render(&stats, &list, &fixture().2);
            assert!(text.ends_with('\n'));
            let (mut help, mut ty) = (Vec::new(), BTreeMap::new());
            let mut done: HashSet<&str> = HashSet::new();
            let mut series = HashSet::new();
            let mut current = "";
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    let name = rest.split(' ').next().unwrap();
                    assert!(!help.contains(&name), "HELP twice: {name}");
                    assert!(!ty.contains_key(name), "HELP after TYPE: {name}");
                    done.insert(current);
                    current = name;
                    help.push(name);
                } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, t) = rest.split_once(' ').unwrap();
                    assert_eq!(name, current, "TYPE right after its HELP");
                    assert!(ty.insert(name, t).is_none(), "TYPE twice: {name}");
                } else {
                    let name = line.split(['{', ' ']).next().unwrap();
                    assert_eq!(name, current, "sample outside its family: {line}");
                    assert!(!done.contains(name), "family split: {name}");
                    let (id, value) = line.rsplit_once(' ').unwrap();
                    assert!(series.insert(id.to_string()), "duplicate series {id}");
                    value.parse::<f64>().unwrap();
                }
            }
            let want: BTreeMap<&str, &str> = FAMILIES.iter().copied().collect();
            assert_eq!(ty, want);
            assert_eq!(help.len(), FAMILIES.len());
        }
    }

    #[test]
    fn announced_routes_only_in_route_mode() {
        let (mut stats, list, extra) = fixture();
        assert!(!render(&stats, &list, &extra).contains("ulvs_announced_routes"));
        stats.announced_routes = Some(vec!["198.18.100.1/32".into(), "198.18.100.2/32".into()]);
        let text = render(&stats, &list, &extra);
        assert!(
            text.contains("# TYPE ulvs_announced_routes gauge\nulvs_announced_routes 2\n"),
            "{text}"
        );
    }

    #[test]
    fn xdp_fast_path_counters_only_with_it() {
        let (mut stats, list, extra) = fixture();
        assert!(!render(&stats, &list, &extra).contains("ulvs_xdp_fast_path"));
        stats.xdp_fast_path = Some(crate::control::snapshot::FastPathCounters {
            frames: 42,
            bytes: 4200,
        });
        let text = render(&stats, &list, &extra);
        assert!(
            text.contains(
                "# TYPE ulvs_xdp_fast_path_frames_total counter\nulvs_xdp_fast_path_frames_total 42\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE ulvs_xdp_fast_path_bytes_total counter\nulvs_xdp_fast_path_bytes_total 4200\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn floats_as_prometheus_reads_them() {
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(3.0), "3");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(1e-7), "0.0000001");
        assert_eq!(float(1e21), "1000000000000000000000");
    }

    /// (status line, headers, body), checking Content-Length and Connection.
    fn split(r: &[u8]) -> (String, Vec<(String, String)>, String) {
        split_head(r, false)
    }

    fn split_head(r: &[u8], head_only: bool) -> (String, Vec<(String, String)>, String) {
        let r = String::from_utf8(r.to_vec()).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let get = |k: &str| headers.iter().find(|h| h.0 == k).map(|h| h.1.clone());
        assert_eq!(get("Connection").as_deref(), Some("close"));
        assert!(get("Content-Type").is_some());
        let len: usize = get("Content-Length").unwrap().parse().unwrap();
        if head_only {
            assert_eq!(body, "", "HEAD has no body");
        } else {
            assert_eq!(len, body.len());
        }
        (status, headers, body.to_string())
    }

    fn no_body(page: Page) -> String {
        panic!("{page:?} rendered for a request that does not want it")
    }

    #[test]
    fn http_metrics() {
        let body = "ulvs_workers 2\n";
        let req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9469\r\nAccept: text/plain;version=0.0.4\r\n\r\n";
        let (st, h, b) = split(&http_response(req.as_bytes(), |_| body.into()));
        assert_eq!(st, "HTTP/1.1 200 OK");
        assert!(h.contains(&("Content-Type".into(), CONTENT_TYPE.into())));
        assert_eq!(b, body);
        for req in [
            "GET /metrics?x=1 HTTP/1.0\n\n",
            "GET /metrics HTTP/1.1",
            "GET http://localhost:9469/metrics HTTP/1.1\r\n\r\n",
        ] {
            let (st, _, b) = split(&http_response(req.as_bytes(), |_| body.into()));
            assert_eq!((st.as_str(), b.as_str()), ("HTTP/1.1 200 OK", body), "{req:?}");
        }
        let (st, h, b) = split_head(
            &http_response(b"HEAD /metrics HTTP/1.1\r\n\r\n", |_| body.into()),
            true,
        );
        assert_eq!(st, "HTTP/1.1 200 OK");
        assert!(h.contains(&("Content-Length".into(), body.len().to_string())));
        assert_eq!(b, "");
    }

    #[test]
    fn http_index_404_405_400() {
        let page = |p: Page| {
            assert_eq!(p, Page::Status);
            "<html>status</html>".to_string()
        };
        let (st, h, b) = split(&http_response(b"GET /?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", page));
        assert_eq!(st, "HTTP/1.1 200 OK");
        assert!(h.contains(&("Content-Type".into(), "text/html; charset=utf-8".into())));
        assert!(h.contains(&("Cache-Control".into(), "no-store".into())));
        let csp = h.iter().find(|(k, _)| k == "Content-Security-Policy").unwrap();
        assert!(
            csp.1
                .starts_with("default-src 'none'; style-src 'unsafe-inline';"),
            "{csp:?}"
        );
        assert_eq!(b, "<html>status</html>");
        let (st, _, b) = split_head(&http_response(b"HEAD / HTTP/1.1\r\n\r\n", page), true);
        assert_eq!((st.as_str(), b.as_str()), ("HTTP/1.1 200 OK", ""));

        let (st, _, _) = split(&http_response(b"GET /metricsx HTTP/1.1\r\n\r\n", no_body));
        assert_eq!(st, "HTTP/1.1 404 Not Found");
        let (st, _, _) = split(&http_response(b"GET /favicon.ico HTTP/1.1\r\n\r\n", no_body));
        assert_eq!(st, "HTTP/1.1 404 Not Found");

        for m in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
            let req = format!("{m} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
            let (st, h, _) = split(&http_response(req.as_bytes(), no_body));
            assert_eq!(st, "HTTP/1.1 405 Method Not Allowed", "{m}");
            assert!(h.contains(&("Allow".into(), "GET, HEAD".into())));
        }

        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
            b"GET /m\xffetrics HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            let (st, _, b) = split(&http_response(bad, no_body));
            assert_eq!(
                st,
                "HTTP/1.1 400 Bad Request",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(b, "Bad Request\n");
        }
    }

    /// Run `promtool check metrics` (Debian's `prometheus` package) on
    /// `text` and assert it accepts it, lint included; a note and no check
    /// when promtool is not installed.
    fn assert_promtool_accepts(text: &str) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        if Command::new("promtool").arg("--version").output().is_err() {
            println!("note: promtool not found (apt-get install prometheus); check skipped");
            return;
        }
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("promtool check metrics: {:?}, output: {said:?}", out.status);
        assert!(out.status.success() && said.trim().is_empty(), "{said}\n{text}");
    }

    /// promtool accepts the exposition, with and without traffic.
    #[test]
    fn promtool_accepts_the_exposition() {
        let (s, l, e) = fixture();
        for text in [
            render(&s, &l, &e),
            render(&Stats::default(), &List::default(), &e),
        ] {
            assert_promtool_accepts(&text);
        }
    }

    /// With `sync`: the `ulvs_sync_*` families, each with HELP and TYPE,
    /// counters named `_total`, and promtool content.
    #[test]
    fn sync_families() {
        use crate::control::snapshot::{SyncPeerSnap, SyncSnap};
        let (mut s, l, e) = fixture();
        s.sync = Some(SyncSnap {
            listen: "198.18.0.2:8848".into(),
            datagrams_sent: 4,
            flows_sent: 50,
            rejected: BTreeMap::from([("bad_mac".to_string(), 2), ("replay".to_string(), 1)]),
            notes_full: 3,
            peers: vec![SyncPeerSnap {
                address: "198.18.0.3:8848".into(),
                bulk: "complete".into(),
                bulk_flows: 120,
                bulk_seconds: Some(0.5),
                datagrams_received: 9,
                ..Default::default()
            }],
            ..Default::default()
        });
        let text = render(&s, &l, &e);
        let p = r#"peer="198.18.0.3:8848""#;
        for want in [
            "# TYPE ulvs_sync_flows_sent_total counter\nulvs_sync_flows_sent_total 50\n".to_string(),
            "\nulvs_sync_rejected_total{reason=\"bad_mac\"} 2\n".to_string(),
            "\nulvs_sync_notes_full_total 3\n".to_string(),
            format!("\nulvs_sync_peer_bulk_state{{{p},state=\"complete\"}} 1\n"),
            format!("\nulvs_sync_peer_bulk_state{{{p},state=\"requested\"}} 0\n"),
            format!("\nulvs_sync_peer_bulk_flows{{{p}}} 120\n"),
            format!("\nulvs_sync_peer_bulk_duration_seconds{{{p}}} 0.5\n"),
            format!("\nulvs_sync_peer_datagrams_received_total{{{p}}} 9\n"),
        ] {
            assert!(text.contains(&want), "missing:\n{want}\nin:\n{text}");
        }
        let mut families = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE ulvs_sync_")) {
            let (name, t) = line["# TYPE ".len()..].split_once(' ').unwrap();
            assert_eq!(t == "counter", name.ends_with("_total"), "{line}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            families += 1;
        }
        assert_eq!(families, 15);
        assert!(
            !rendered().contains("ulvs_sync_"),
            "no sync families without sync"
        );
        assert_promtool_accepts(&text);
    }
}
