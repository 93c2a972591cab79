//! The rules of a config that span fields and services (slow path): required
//! fields, health settings that depend on the kind, real-server addresses
//! that depend on the mode, duplicates and overlapping services.
//!
//! They run on the deserialized [`Config`] after every value was read, and
//! skip a rule whose inputs were already reported wrong, so that one mistake
//! is reported once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::field::{allowed, first_at, ServiceWritten, Written};
use super::place::LazyPlaces;
use super::{
    shortest_timeout_ms, Announce, Config, HealthKind, IoBackend, Mode, Problem, RealServer, Service,
    Transport, MAX_WORKERS,
};

/// Applies the rules, adding to the problems found so far.
pub(super) struct Rules<'a> {
    /// Where fields are written, to place a problem (read on first use).
    places: &'a LazyPlaces<'a>,
    /// Which fields are written, for the rules every valid file runs.
    written: &'a Written,
    problems: &'a mut Vec<Problem>,
    /// Fields whose value was reported wrong.
    bad: HashSet<String>,
}

/// A service's identity, for overlap checks.
struct ServiceKey<'s> {
    vip: IpAddr,
    port: u16,
    protocol: Transport,
    name: &'s str,
    line: Option<usize>,
}

impl<'a> Rules<'a> {
    pub(super) fn new(
        places: &'a LazyPlaces<'a>,
        written: &'a Written,
        problems: &'a mut Vec<Problem>,
    ) -> Rules<'a> {
        let bad = problems.iter().map(|p| p.field.clone()).collect();
        Rules {
            places,
            written,
            problems,
            bad,
        }
    }

    /// Whether the field was reported wrong (formatted only when some was).
    fn is_bad(&self, path: fmt::Arguments<'_>) -> bool {
        !self.bad.is_empty() && self.bad.contains(&path.to_string())
    }

    fn error(&mut self, line: Option<usize>, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// Written with a value (`given`), and that value was not reported wrong.
    fn valid(&self, given: Option<Option<usize>>, path: fmt::Arguments<'_>) -> bool {
        given.is_some() && !self.is_bad(path)
    }

    pub(super) fn apply(mut self, c: &mut Config) {
        if self.written.interface.is_none() {
            self.error(
                self.places.get().key_line("interface"),
                "interface",
                "required: the director's interface on the shared segment",
            );
        }
        if c.workers == 0 {
            c.workers = if c.cpus.is_empty() {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                c.cpus.len()
            }
            .min(MAX_WORKERS);
        }
        self.announce(c);
        self.xdp_fast_path(c);
        self.sync(c);
        if c.services.is_empty() {
            self.error(
                self.places.get().key_line("services"),
                "services",
                "at least one service is required",
            );
        }
        let mut names: HashMap<&str, Option<usize>> = HashMap::with_capacity(c.services.len());
        // The services seen so far by VIP and protocol (in file order), so
        // that an overlap is looked for among those alone.
        let mut keys: HashMap<(IpAddr, Transport), Vec<ServiceKey>> =
            HashMap::with_capacity(c.services.len());
        let unnoted = ServiceWritten::default();
        // Every service has its record; were one missing, the file's
        // places answer for it.
        let placed: Vec<ServiceWritten>;
        let written: &[ServiceWritten] = if self.written.services.len() == c.services.len() {
            &self.written.services
        } else {
            placed = (0..c.services.len())
                .map(|i| self.places.get().service_written(i))
                .collect();
            &placed
        };
        for (i, s) in c.services.iter_mut().enumerate() {
            self.service(s, i, written.get(i).unwrap_or(&unnoted), c.maglev_table_size);
        }
        for (i, s) in c.services.iter().enumerate() {
            let w = written.get(i).unwrap_or(&unnoted);
            if self.valid(w.name, format_args!("services[{i}].name")) {
                let line = w.name.flatten().or(s.line);
                if let Some(first) = names.get(s.name.as_str()) {
                    self.error(
                        line,
                        &format!("services[{i}].name"),
                        format!("duplicate service name \"{}\"{}", s.name, first_at(*first)),
                    );
                } else {
                    names.insert(&s.name, line);
                }
            }
            let identified = self.valid(w.vip, format_args!("services[{i}].vip"))
                && self.valid(w.port, format_args!("services[{i}].port"))
                && !self.is_bad(format_args!("services[{i}].protocol"));
            if !identified {
                continue;
            }
            let (vip, port, protocol) = (s.vip, s.port, s.protocol);
            let same = keys.entry((vip, protocol)).or_default();
            let clash = same.iter().find(|k| k.port == port || k.port == 0 || port == 0);
            if let Some(k) = clash {
                let what = if port == 0 || k.port == 0 {
                    " (port 0 takes every port of the VIP)"
                } else {
                    ""
                };
                let message = format!(
                    "{}/{} overlaps service \"{}\" ({}/{}{}){what}",
                    SocketAddr::new(vip, port),
                    protocol.as_str(),
                    k.name,
                    SocketAddr::new(k.vip, k.port),
                    k.protocol.as_str(),
                    k.line.map(|l| format!(", line {l}")).unwrap_or_default()
                );
                self.problems.push(Problem {
                    line: s.line,
                    field: format!("services[{i}]"),
                    message,
                });
            } else {
                same.push(ServiceKey {
                    vip,
                    port,
                    protocol,
                    name: &s.name,
                    line: s.line,
                });
            }
        }
    }

    /// `announce: route` needs `route_table` (the table the routing daemon
    /// imports: no default, since the daemon's config must name the same);
    /// `route_table` means nothing without it.
    fn announce(&mut self, c: &Config) {
        if c.announce == Announce::Route {
            if c.route_table.is_none() && !self.bad.contains("route_table") {
                self.error(
                    self.places.get().line("announce"),
                    "route_table",
                    "required with announce: route (the kernel table your routing daemon imports, \
                     e.g. route_table: 4096)",
                );
            }
        } else if self.valid(self.written.route_table, format_args!("route_table"))
            && !self.bad.contains("announce")
        {
            self.error(
                self.places.get().line("route_table"),
                "route_table",
                format!(
                    "only meaningful with announce: route (announce is {})",
                    c.announce.as_str()
                ),
            );
        }
    }

    /// `xdp_fast_path` lives in the XDP program: refused with
    /// `io: af_packet`, which has none (with `auto`, the director says at
    /// start when it ends up without AF_XDP).
    fn xdp_fast_path(&mut self, c: &Config) {
        if c.xdp_fast_path && c.io == IoBackend::AfPacket && !self.bad.contains("io") {
            self.error(
                self.places.get().line("xdp_fast_path"),
                "xdp_fast_path",
                "only meaningful with io: af_xdp or auto (io is af_packet)",
            );
        }
    }

    /// `sync`: a listen address and at least one peer that is not this
    /// director; a refresh that keeps flows alive on the peers.
    fn sync(&mut self, c: &Config) {
        let Some(s) = &c.sync else { return };
        if self.written.sync_listen.is_none() {
            self.error(
                self.places.get().key_line("sync"),
                "sync.listen",
                "required: the address (IP:PORT) this director receives and sends sync datagrams on",
            );
        }
        // An empty list because every item was reported wrong is said once.
        let bad_item = self.bad.iter().any(|f| f.starts_with("sync.peers"));
        if s.peers.is_empty() && !bad_item {
            let places = self.places.get();
            let line = places.line("sync.peers").or(places.key_line("sync"));
            {
                self.error(
                    line,
                    "sync.peers",
                    "at least one peer is required: the other directors' sync.listen addresses",
                );
            }
        }
        if self.valid(self.written.sync_listen, format_args!("sync.listen")) {
            if let Some(i) = s.peers.iter().position(|p| *p == s.listen) {
                let f = format!("sync.peers[{i}]");
                self.error(
                    self.places.get().line(&f),
                    &f,
                    format!(
                        "{} is this director's own sync.listen; list the other directors only",
                        s.listen
                    ),
                );
            }
        }
        if let Some(ms) = s.refresh_ms {
            let shortest = shortest_timeout_ms(&c.timeouts);
            if u64::from(ms) * 2 > u64::from(shortest) {
                self.error(
                    self.places.get().line("sync.refresh_ms"),
                    "sync.refresh_ms",
                    format!(
                        "{ms} ms is more than half the shortest idle timeout ({shortest} ms): synced flows \
                         that stay active would expire on the peers between refreshes"
                    ),
                );
            }
        }
    }

    fn service(&mut self, s: &mut Service, i: usize, w: &ServiceWritten, maglev: u32) {
        let f = &format!("services[{i}]");
        for (key, given, what) in [
            ("name", w.name, "required"),
            ("vip", w.vip, "required"),
            ("port", w.port, "required (0 means every port of the VIP)"),
        ] {
            if given.is_none() {
                self.error(s.line, &format!("{f}.{key}"), what);
            }
        }
        self.health(s, f, w);
        let servers = self.real_servers(s, f, w);
        if s.health.kind != HealthKind::None
            && s.health.port.is_none()
            && self.valid(w.port, format_args!("{f}.port"))
            && s.port == 0
            && servers.iter().any(|r| r.port.is_none())
        {
            let line = w.health.flatten().or(s.line);
            self.error(
                line,
                &format!("{f}.health.port"),
                "required: the service port is 0, so there is no port to probe",
            );
        }
        if servers.len() > maglev as usize {
            let line = self.places.get().line(&format!("{f}.real_servers")).or(s.line);
            self.error(
                line,
                &format!("{f}.real_servers"),
                format!(
                    "{} real servers do not fit a Maglev table of {maglev} entries",
                    servers.len()
                ),
            );
        }
    }

    fn health(&mut self, s: &mut Service, f: &str, w: &ServiceWritten) {
        let f = format!("{f}.health");
        if w.health.is_none() {
            return;
        }
        let field = |name: &str| format!("{f}.{name}");
        let h = &mut s.health;
        if w.health_kind.is_none() {
            self.error(
                w.health.flatten(),
                &field("kind"),
                format!(
                    "required when `health` is given; allowed: {}",
                    allowed::<HealthKind>().join(", ")
                ),
            );
        }
        // Settings for HTTP only are refused with another kind unless they
        // are the defaults (see the module documentation).
        if self.valid(w.health_kind, format_args!("{f}.kind")) && h.kind != HealthKind::Http {
            let kind = h.kind.as_str();
            // Either differs from its default only when written (null and
            // a wrong number read as the default; a wrong path is bad).
            if h.path != "/" && !self.is_bad(format_args!("{f}.path")) {
                self.error(
                    self.places.get().line(&field("path")),
                    &field("path"),
                    format!("is only used with kind http, not {kind}"),
                );
            }
            if h.expect_status != 200 && !self.is_bad(format_args!("{f}.expect_status")) {
                self.error(
                    self.places.get().line(&field("expect_status")),
                    &field("expect_status"),
                    format!("is only used with kind http, not {kind}"),
                );
            }
        }
        // Compare against the interval only when that one is valid.
        if self.is_bad(format_args!("{f}.interval_ms")) {
            return;
        }
        if w.health_timeout_ms.is_some() {
            if self.valid(w.health_timeout_ms, format_args!("{f}.timeout_ms")) && h.timeout_ms > h.interval_ms
            {
                self.error(
                    w.health_timeout_ms.flatten(),
                    &field("timeout_ms"),
                    format!("{} must not exceed interval_ms ({})", h.timeout_ms, h.interval_ms),
                );
            }
        } else {
            // Only the default timeout is too long for a short interval: use the interval.
            h.timeout_ms = h.timeout_ms.min(h.interval_ms);
        }
    }

    /// Checks the servers; returns those whose every field is valid.
    fn real_servers(&mut self, s: &Service, f: &str, w: &ServiceWritten) -> Vec<RealServer> {
        let mode = (!self.is_bad(format_args!("{f}.mode"))).then_some(s.mode);
        let service_port = self.valid(w.port, format_args!("{f}.port")).then_some(s.port);
        // The family the servers must have, once the VIP is known good.
        let family = self.valid(w.vip, format_args!("{f}.vip")).then_some(s.vip);
        let mut seen: HashMap<(IpAddr, Option<u16>), Option<usize>> =
            HashMap::with_capacity(s.real_servers.len());
        let mut out = Vec::with_capacity(s.real_servers.len());
        for (j, r) in s.real_servers.iter().enumerate() {
            // The field's path, made only for a problem.
            let field = || format!("{f}.real_servers[{j}].address");
            let Some(line) = w.addresses.get(j).copied().flatten() else {
                self.error(r.line, &field(), "required");
                continue;
            };
            if self.is_bad(format_args!("{f}.real_servers[{j}].address")) {
                continue;
            }
            let address = r.address;
            if let Some(vip) = family.filter(|v| v.is_ipv6() != address.is_ipv6()) {
                let (is, other) = if address.is_ipv6() {
                    ("IPv6", "IPv4")
                } else {
                    ("IPv4", "IPv6")
                };
                self.error(
                    line,
                    &field(),
                    format!(
                        "{address} is {is} but the service's vip {vip} is {other}: a service's real servers \
                         are of its VIP's family (make a separate {is} service)"
                    ),
                );
                continue;
            }
            match (r.port, mode) {
                (Some(_), Some(Mode::Dr | Mode::Tun)) => {
                    self.error(
                        line,
                        &field(),
                        format!(
                            "IP:PORT is only allowed in nat mode; {} forwards to the service's port, write just {address}",
                            mode.map_or("this mode", Mode::as_str)
                        ),
                    );
                    continue;
                }
                (Some(0), _) => {
                    self.error(line, &field(), "port 0 is not allowed");
                    continue;
                }
                (Some(_), Some(Mode::Nat)) if service_port == Some(0) => {
                    // Every VIP port would map onto one server port, and the
                    // reply could not tell which VIP port to answer from.
                    self.error(
                        line,
                        &field(),
                        format!("a port-0 (all ports) nat service keeps each port: write just {address}"),
                    );
                    continue;
                }
                _ => {}
            }
            // A nat server without a port receives the service's port, so
            // `IP` and `IP:PORT` are the same server when PORT is that port.
            let key = (address, r.port.or(service_port.filter(|p| *p != 0)));
            if let Some(first) = seen.get(&key) {
                self.error(
                    line,
                    &field(),
                    format!("duplicate real server {}{}", r.endpoint(), first_at(*first)),
                );
                continue;
            }
            seen.insert(key, line);
            if !self.is_bad(format_args!("{f}.real_servers[{j}].weight")) {
                out.push(r.clone());
            }
        }
        out
    }
}
