//! Prometheus exposition of the director's counters and the scrape endpoint's
//! HTTP handling (slow path). `render` turns one `Stats` + `List` snapshot into
//! the text format 0.0.4; `http_response` answers one request head. Neither
//! does I/O: the binary owns the listening socket and calls them per scrape.
//!
//! Every family is written whole under one `# HELP` and one `# TYPE` line,
//! because the text format (and promtool) reject a family split in two.

use super::rates::Rates;
use super::snapshot::{List, ServerSnap, ServiceSnap, Stats};

/// The `Content-Type` of a scrape response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the snapshots do not carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extra {
    /// When the director started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// The `version` label of `ulvs_build_info`.
    pub version: &'static str,
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
    rates: Rates,
}

impl From<&ServiceSnap> for Traffic {
    fn from(s: &ServiceSnap) -> Self {
        Traffic {
            active_flows: s.active_flows,
            inactive_flows: s.inactive_flows,
            conns: s.conns,
            packets: s.packets,
            bytes: s.bytes,
            out_packets: s.out_packets,
            out_bytes: s.out_bytes,
            rates: s.rates,
        }
    }
}

impl From<&ServerSnap> for Traffic {
    fn from(s: &ServerSnap) -> Self {
        Traffic {
            active_flows: s.active_flows,
            inactive_flows: s.inactive_flows,
            conns: s.conns,
            packets: s.packets,
            bytes: s.bytes,
            out_packets: s.out_packets,
            out_bytes: s.out_bytes,
            rates: s.rates,
        }
    }
}

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
    (
        "connections_per_second",
        Kind::Gauge,
        "New flows per second, smoothed",
        Read::One(|t| Val::Float(t.rates.conns_per_s)),
    ),
    (
        "packets_per_second",
        Kind::Gauge,
        "Frames forwarded per second, smoothed",
        Read::Dir(
            |t| Val::Float(t.rates.in_packets_per_s),
            |t| Val::Float(t.rates.out_packets_per_s),
        ),
    ),
    (
        "bytes_per_second",
        Kind::Gauge,
        "Bytes forwarded per second, smoothed",
        Read::Dir(
            |t| Val::Float(t.rates.in_bytes_per_s),
            |t| Val::Float(t.rates.out_bytes_per_s),
        ),
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

/// The states of `ulvs_server_state`, one series each.
const SERVER_STATES: [&str; 3] = ["up", "down", "draining"];

/// Prometheus text exposition format 0.0.4 for one scrape.
pub fn render(stats: &Stats, list: &List, extra: &Extra) -> String {
    use Kind::{Counter, Gauge};
    use Val::{Float, Int};
    let mut out = Out(String::with_capacity(4096 + 2048 * list.services.len()));
    let o = &mut out;

    o.family("ulvs_build_info", Gauge, "Always 1; the version label is the ulvs version.");
    o.sample("ulvs_build_info", &[("version", extra.version)], Int(1));
    o.single(
        "ulvs_start_time_seconds",
        Gauge,
        "When the director started, in seconds since the Unix epoch.",
        Float(extra.start_time_seconds),
    );
    let counters = [
        ("ulvs_frames_seen_total", "Frames taken from the rings.", stats.frames_seen),
        ("ulvs_frames_forwarded_total", "Frames rewritten and sent.", stats.forwarded),
        ("ulvs_bytes_forwarded_total", "Bytes of frames rewritten and sent.", stats.bytes_forwarded),
        (
            "ulvs_ring_drops_total",
            "Frames the kernel dropped because a receive ring was full.",
            stats.ring_drops,
        ),
        ("ulvs_arp_replies_total", "ARP replies sent for the VIPs.", stats.arp_replies),
        ("ulvs_arp_requests_total", "ARP requests sent to resolve real servers.", stats.arp_requests),
        (
            "ulvs_flow_evictions_total",
            "Flows evicted from a full flow table.",
            stats.flow_evictions,
        ),
        ("ulvs_flow_expirations_total", "Flows removed after their idle timeout.", stats.flow_expirations),
        (
            "ulvs_flows_rescheduled_total",
            "Flows moved off a real server that went down or was removed.",
            stats.rescheduled,
        ),
        (
            "ulvs_syn_second_chance_total",
            "SYN retransmits moved to the next real server in Maglev order.",
            stats.syn_second_chance,
        ),
        ("ulvs_reloads_total", "Configuration reloads that took effect.", stats.reloads),
        (
            "ulvs_reload_failures_total",
            "Configuration reloads rejected; the previous configuration stays.",
            stats.reload_failures,
        ),
    ];
    for (name, help, v) in counters {
        o.single(name, Counter, help, Int(v));
    }
    o.family("ulvs_drops_total", Counter, "Frames not forwarded, by reason.");
    for (reason, n) in &stats.drops {
        o.sample("ulvs_drops_total", &[("reason", reason)], Int(*n));
    }
    let gauges = [
        ("ulvs_flows", "Flows in the flow tables of all workers.", stats.flows),
        ("ulvs_flow_capacity", "Capacity of the flow tables of all workers.", stats.flow_capacity),
        ("ulvs_config_generation", "Generation of the forwarding table in use.", stats.generation),
        ("ulvs_workers", "Forwarding worker threads.", stats.workers),
    ];
    for (name, help, v) in gauges {
        o.single(name, Gauge, help, Int(v));
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
                ("protocol", s.protocol),
                ("mode", s.mode),
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
            s.real_servers.iter().map(move |r| (vec![("service", svc), ("server", r.address.as_str())], r))
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
    o.family("ulvs_server_weight", Gauge, "Configured weight of the real server.");
    for (labels, r) in &servers {
        o.sample("ulvs_server_weight", labels, Int(u64::from(r.weight)));
    }
    let rows: Vec<_> = servers.into_iter().map(|(labels, r)| (labels, Traffic::from(r))).collect();
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
        || !version.strip_prefix("HTTP/1.").is_some_and(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit())
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

const INDEX: &str = "<html><head><title>ulvs</title></head><body>\
                     <h1>ulvs director</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// Minimal HTTP/1.x handling for the scrape endpoint: `request_head` is the
/// bytes of one request head (with or without its final blank line); the result
/// is the full response, always with `Content-Length` and `Connection: close`.
///
/// `GET /metrics` (or `HEAD`) answers 200 with [`CONTENT_TYPE`] and the body
/// made by `body_for_metrics`, which is called for nothing else; `GET /` answers
/// a small page pointing at `/metrics`; other paths 404, other methods 405 and
/// a malformed head 400. A query string is ignored.
pub fn http_response(request_head: &[u8], body_for_metrics: impl FnOnce() -> String) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(req) = parse(request_head) else {
        return response("400 Bad Request", "", TEXT, "Bad Request\n", false);
    };
    let head_only = match req.method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let allow = "Allow: GET, HEAD\r\n";
            return response("405 Method Not Allowed", allow, TEXT, "Method Not Allowed\n", false);
        }
    };
    match req.path {
        "/metrics" => response("200 OK", "", CONTENT_TYPE, &body_for_metrics(), head_only),
        "/" => response("200 OK", "", "text/html; charset=utf-8", INDEX, head_only),
        _ => response("404 Not Found", "", TEXT, "Not Found\n", head_only),
    }
}
