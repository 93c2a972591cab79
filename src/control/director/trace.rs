//! `ulvsadm trace PROTO CLIENT:PORT VIP:PORT` on the slow path: the
//! service the tuple matches in the published table, its flow entries (a
//! copy through the workers' dump slots, filtered to the one key, so the
//! fast path is never locked), the Maglev slot a new flow would get, and
//! what the worker would do with the next frame — decided by the same
//! functions the worker uses ([`ServiceFwd::hash`], [`ServiceFwd::pick`],
//! [`BackendState::keeps_flows`]). An IPv6 tuple (`[2001:db8::7]:40000
//! [2001:db8:100::1]:80`) is traced the same way through the IPv6 table
//! and flow copies ([`Director::trace6`]).

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use super::dump::{collect, collect_ask, origin_name, state_name, Ask};
use super::Director;
use crate::control::publish::state_name as server_state_name;
use crate::control::trace::{Trace, TraceFlow, TraceServer};
use crate::dataplane::classify::Reason;
use crate::dataplane::dump::{ClientFilter, DumpFilter};
use crate::dataplane::synclink::{worker_for, worker_for6, Placement};
use crate::fwd::flow::{FlowKey, FlowKey6, FlowState};
use crate::fwd::table::{BackendFwd, BackendId, FwdTable, Mode, ServiceFwd, ServiceFwd6};
use crate::wire::ethernet::fmt_mac;

/// How long the trace waits for the workers' copies (as `flows`).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

fn addr(what: &str, s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{what} \"{s}\" is not IPv4:PORT or [IPv6]:PORT"))
}

/// A trace with nothing decided yet (verdict drop).
fn blank(protocol: &str, client: String, vip: String, workers: usize) -> Trace {
    Trace {
        protocol: protocol.to_ascii_lowercase(),
        client,
        vip,
        service: None,
        mode: None,
        scheduler: None,
        worker: None,
        flows: Vec::new(),
        hash_on: None,
        slot: None,
        table_size: None,
        slot_server: None,
        chosen_by: None,
        server: None,
        verdict: "drop".into(),
        drop_counter: None,
        action: String::new(),
        workers,
        workers_answered: 0,
    }
}

impl Director {
    /// `ulvsadm trace`.
    pub(super) fn trace(&self, protocol: &str, client: &str, vip: &str) -> Result<Trace, String> {
        let proto = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            p => return Err(format!("protocol \"{p}\": tcp or udp")),
        };
        let (c, v) = match (addr("client", client)?, addr("VIP", vip)?) {
            (SocketAddr::V4(c), SocketAddr::V4(v)) => (c, v),
            (SocketAddr::V6(c), SocketAddr::V6(v)) => return Ok(self.trace6(protocol, proto, c, v)),
            (c, v) => return Err(format!("client {c} and VIP {v} are not of the same family")),
        };
        let key = FlowKey {
            src: u32::from(*c.ip()),
            dst: u32::from(*v.ip()),
            sport: c.port(),
            dport: v.port(),
            proto,
        };
        let table = self.shared.table.load_full();
        let mut t = blank(protocol, c.to_string(), v.to_string(), self.stats.len());
        let Some(si) = table.find_service(key.dst, proto, key.dport) else {
            not_served(&mut t, table.is_vip(key.dst), IpAddr::from(*v.ip()), v.port());
            return Ok(t);
        };
        let svc = &table.services[si];
        let cfg_svc = self.cfg.services.iter().find(|s| {
            crate::control::publish::ipv4(s.vip) == Some(svc.vip)
                && s.port == svc.port
                && s.protocol.ip_protocol() == svc.proto
        });
        t.service = Some(cfg_svc.map_or_else(|| "?".into(), |s| s.name.clone()));
        t.mode = Some(svc.mode.as_str().into());
        t.scheduler = cfg_svc.map(|s| s.scheduler.as_str().into());
        let placement = self.placement();
        t.worker = worker_for(&key, self.stats.len(), placement);

        // The entry of exactly this tuple, from every worker.
        let copies = collect(
            &self.stats,
            Some(DumpFilter {
                vip: key.dst,
                port: key.dport,
                proto,
            }),
            Some(ClientFilter {
                addr: key.src,
                port: Some(key.sport),
            }),
            ANSWER_WAIT,
        );
        t.workers_answered = copies.per_worker.iter().filter(|c| c.is_some()).count();
        let rows = copies.per_worker.iter().enumerate().flat_map(|(w, c)| {
            c.iter()
                .flatten()
                .filter(|f| f.key == key)
                .map(move |f| (w, f.state, f.expires_in_ms, f.origin, f.backend))
        });
        let found = self.record_flows(&mut t, &table, rows);

        let hash = svc.hash(&key);
        let pick = svc.pick(hash);
        slot_fields(&mut t, svc.client_affinity, hash, svc.maglev.len());
        t.slot_server = pick.map(|(id, _)| self.endpoint(&table, id));

        // The entry the receiving worker holds (else any: a synced copy).
        let entry = found
            .iter()
            .find(|(w, _)| Some(*w) == t.worker)
            .or(found.first())
            .map(|(_, id)| *id);
        let chosen = choose(&table, entry, pick.map(|(id, _)| id));
        let Some((id, by)) = chosen else {
            dropped(
                &mut t,
                Reason::NoServer,
                "the service has no server that takes new flows",
            );
            return Ok(t);
        };
        let b = *table.backend(id);
        t.chosen_by = Some(by.into());
        t.server = Some(self.server_of(&table, id, &b));
        let Some(mac) = b.mac else {
            dropped(
                &mut t,
                Reason::ServerMacUnknown,
                "the server's MAC is not resolved",
            );
            return Ok(t);
        };
        t.verdict = "forward".into();
        t.action = forward_words(&table, svc, &b, &key, &fmt_mac(&mac), &self.cfg.interface);
        if by == "rescheduled" {
            t.action
                .push_str(" (its flow's server may not keep it: counter rescheduled)");
        }
        Ok(t)
    }

    /// `ulvsadm trace` of an IPv6 tuple: as for IPv4, over the IPv6
    /// services, flow copies and placement (`worker_for6`), with the
    /// worker's IPv6 choices (no SYN second chance; TUN needs the
    /// director's IPv6 address).
    fn trace6(&self, protocol: &str, proto: u8, c: SocketAddrV6, v: SocketAddrV6) -> Trace {
        let key = FlowKey6 {
            src: u128::from(*c.ip()),
            dst: u128::from(*v.ip()),
            sport: c.port(),
            dport: v.port(),
            proto,
        };
        let table = self.shared.table.load_full();
        let mut t = blank(protocol, c.to_string(), v.to_string(), self.stats.len());
        let Some(si) = table.find_service6(key.dst, proto, key.dport) else {
            not_served(&mut t, table.is_vip6(key.dst), IpAddr::from(*v.ip()), v.port());
            return t;
        };
        let svc = &table.services6[si];
        let cfg_svc = self.cfg.services.iter().find(|s| {
            s.vip == IpAddr::V6(*v.ip()) && s.port == svc.port && s.protocol.ip_protocol() == svc.proto
        });
        t.service = Some(cfg_svc.map_or_else(|| "?".into(), |s| s.name.clone()));
        t.mode = Some(svc.mode.as_str().into());
        t.scheduler = cfg_svc.map(|s| s.scheduler.as_str().into());
        let placement = self.placement();
        t.worker = worker_for6(&key, self.stats.len(), placement);

        let ask = Ask::V6(
            Some(DumpFilter {
                vip: key.dst,
                port: key.dport,
                proto,
            }),
            Some(ClientFilter {
                addr: key.src,
                port: Some(key.sport),
            }),
        );
        let copies = collect_ask(&self.stats, ask, ANSWER_WAIT);
        t.workers_answered = copies.per_worker6.iter().filter(|c| c.is_some()).count();
        let rows = copies.per_worker6.iter().enumerate().flat_map(|(w, c)| {
            c.iter()
                .flatten()
                .filter(|f| f.key == key)
                .map(move |f| (w, f.state, f.expires_in_ms, f.origin, f.backend))
        });
        let found = self.record_flows(&mut t, &table, rows);

        let hash = svc.hash(&key);
        let pick = svc.pick(hash);
        slot_fields(&mut t, svc.client_affinity, hash, svc.maglev.len());
        t.slot_server = pick.map(|id| self.endpoint(&table, id));

        let entry = found
            .iter()
            .find(|(w, _)| Some(*w) == t.worker)
            .or(found.first())
            .map(|(_, id)| *id);
        let chosen = choose(&table, entry, pick);
        let Some((id, by)) = chosen else {
            dropped(
                &mut t,
                Reason::NoServer,
                "the service has no server that takes new flows",
            );
            return t;
        };
        let b = *table.backend(id);
        t.chosen_by = Some(by.into());
        t.server = Some(self.server_of(&table, id, &b));
        let Some(mac) = b.mac else {
            dropped(
                &mut t,
                Reason::ServerMacUnknown,
                "the server's MAC is not resolved",
            );
            return t;
        };
        if svc.mode == Mode::Tun && table.director_ip6 == 0 {
            dropped(
                &mut t,
                Reason::NextHopUnknown,
                "TUN needs an IPv6 address of the director's as the outer source, and it has none",
            );
            return t;
        }
        t.verdict = "forward".into();
        t.action = forward_words6(&table, svc, id, &key, &fmt_mac(&mac), &self.cfg.interface);
        if by == "rescheduled" {
            t.action
                .push_str(" (its flow's server may not keep it: counter rescheduled)");
        }
        t
    }

    /// How frames reach workers: by RX queue under AF_XDP, by the fanout
    /// program under AF_PACKET.
    fn placement(&self) -> Placement {
        if self.xdp.is_some() {
            Placement::RxQueue
        } else {
            Placement::Fanout
        }
    }

    /// The workers' copies of the traced tuple (worker, state, expiry in
    /// ms, origin, server) into the trace; returns (worker, server) of each.
    fn record_flows(
        &self,
        t: &mut Trace,
        table: &FwdTable,
        rows: impl Iterator<Item = (usize, FlowState, u32, u8, BackendId)>,
    ) -> Vec<(usize, BackendId)> {
        let peers = self.sync_peers();
        let mut found = Vec::new();
        for (w, state, expires_in_ms, origin, backend) in rows {
            found.push((w, backend));
            t.flows.push(TraceFlow {
                worker: w,
                state: state_name(state).into(),
                expires_in: u64::from(expires_in_ms).div_ceil(1000),
                origin: origin_name(origin, &peers),
                server: self.endpoint(table, backend),
            });
        }
        found
    }

    /// A backend id as the operator knows it (`IP` or `IP:PORT`).
    fn endpoint(&self, table: &FwdTable, id: BackendId) -> String {
        if let Some((k, _)) = self.rt.servers.iter().find(|(_, s)| s.id == id) {
            return match k.port {
                Some(p) => format!("{}:{p}", k.addr),
                None => k.addr.to_string(),
            };
        }
        if let Some(c) = self.rt.removed.get(&id) {
            return format!("{} (removed)", c.key.addr);
        }
        let a6 = table.backend6(id).addr;
        if a6 != 0 {
            return format!("{} (id {id})", std::net::Ipv6Addr::from(a6));
        }
        format!("{} (id {id})", std::net::Ipv4Addr::from(table.backend(id).addr))
    }

    fn server_of(&self, table: &FwdTable, id: BackendId, b: &BackendFwd) -> TraceServer {
        let rt = self.rt.servers.values().find(|s| s.id == id);
        TraceServer {
            address: self.endpoint(table, id),
            state: rt.map_or(b.state.as_str(), server_state_name).into(),
            weight: rt.map_or(0, |s| s.weight()),
            mac: b.mac.map(|m| fmt_mac(&m)),
            health_reason: self.health_reasons.get(&id).cloned(),
        }
    }
}

/// A tuple no service takes: a VIP without this port and protocol is a
/// drop; an address that is no VIP goes to the host's stack.
fn not_served(t: &mut Trace, is_vip: bool, ip: IpAddr, port: u16) {
    let reason = if is_vip { Reason::NoService } else { Reason::NotVip };
    t.action = match reason {
        Reason::NoService => format!(
            "drop: {ip} is a VIP, but no service takes {} port {port} (counter {})",
            t.protocol,
            reason.name()
        ),
        _ => format!(
            "not for the data path: {ip} is no VIP of this director (counter {}; the host's stack gets it)",
            reason.name()
        ),
    };
    t.drop_counter = Some(reason.name().into());
}

/// A drop the worker counts under `reason`, with why.
fn dropped(t: &mut Trace, reason: Reason, why: &str) {
    t.drop_counter = Some(reason.name().into());
    t.action = format!("drop: {why} (counter {})", reason.name());
}

/// What the Maglev hash is taken over and which slot it falls in.
fn slot_fields(t: &mut Trace, client_affinity: bool, hash: u64, table_len: usize) {
    t.hash_on = Some(
        if client_affinity {
            "client address"
        } else {
            "5-tuple"
        }
        .into(),
    );
    t.slot = Some((hash % table_len.max(1) as u64) as u32);
    t.table_size = Some(table_len as u32);
}

/// The worker's choice: the flow's own server while it keeps flows and
/// its MAC is known (else the Maglev pick, "rescheduled"), or the pick
/// for a new flow.
fn choose(
    table: &FwdTable,
    entry: Option<BackendId>,
    pick: Option<BackendId>,
) -> Option<(BackendId, &'static str)> {
    match entry {
        Some(id) => {
            let b = table.backend(id);
            if b.state.keeps_flows(table.reschedule_on_down) && b.mac.is_some() {
                Some((id, "flow"))
            } else {
                pick.map(|nid| (nid, "rescheduled"))
            }
        }
        None => pick.map(|id| (id, "maglev")),
    }
}

/// What the worker does with a frame it forwards to `b`.
fn forward_words(
    table: &FwdTable,
    svc: &ServiceFwd,
    b: &BackendFwd,
    key: &FlowKey,
    mac: &str,
    ifname: &str,
) -> String {
    let server = std::net::Ipv4Addr::from(b.addr);
    match svc.mode {
        Mode::Dr => format!("forward (DR): destination MAC set to {mac} ({server}), out {ifname}; the server answers the client directly"),
        Mode::Nat => {
            let port = if b.port != 0 { b.port } else { key.dport };
            format!(
                "forward (NAT): destination rewritten to {server}:{port}, MAC {mac}, out {ifname}; replies come back through the director"
            )
        }
        Mode::Tun => format!(
            "forward (TUN): encapsulated IP-in-IP {} -> {server}, to MAC {mac}, out {ifname}; the server answers the client directly",
            std::net::Ipv4Addr::from(table.director_ip)
        ),
    }
}

/// [`forward_words`] for an IPv6 flow to server `id`.
fn forward_words6(
    table: &FwdTable,
    svc: &ServiceFwd6,
    id: BackendId,
    key: &FlowKey6,
    mac: &str,
    ifname: &str,
) -> String {
    let server = std::net::Ipv6Addr::from(table.backend6(id).addr);
    match svc.mode {
        Mode::Dr => format!("forward (DR): destination MAC set to {mac} ({server}), out {ifname}; the server answers the client directly"),
        Mode::Nat => {
            let b = table.backend(id);
            let port = if b.port != 0 { b.port } else { key.dport };
            format!(
                "forward (NAT): destination rewritten to [{server}]:{port}, MAC {mac}, out {ifname}; replies come back through the director"
            )
        }
        Mode::Tun => format!(
            "forward (TUN): encapsulated IPv6-in-IPv6 {} -> {server}, to MAC {mac}, out {ifname}; the server answers the client directly",
            std::net::Ipv6Addr::from(table.director_ip6)
        ),
    }
}
