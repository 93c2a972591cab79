//! `ulvsadm trace PROTO CLIENT:PORT VIP:PORT` on the slow path: the
//! service the tuple matches in the published table, its flow entries (a
//! copy through the workers' dump slots, filtered to the one key, so the
//! fast path is never locked), the Maglev slot a new flow would get, and
//! what the worker would do with the next frame — decided by the same
//! functions the worker uses ([`ServiceFwd::hash`], [`ServiceFwd::pick`],
//! [`BackendState::keeps_flows`]).

use std::net::SocketAddrV4;
use std::time::Duration;

use super::dump::{collect, origin_name, state_name};
use super::Director;
use crate::control::publish::state_name as server_state_name;
use crate::control::trace::{Trace, TraceFlow, TraceServer};
use crate::dataplane::classify::Reason;
use crate::dataplane::dump::{ClientFilter, DumpFilter};
use crate::dataplane::synclink::{worker_for, Placement};
use crate::fwd::flow::FlowKey;
use crate::fwd::table::{BackendFwd, BackendId, FwdTable, Mode, ServiceFwd};
use crate::wire::ethernet::fmt_mac;

/// How long the trace waits for the workers' copies (as `flows`).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

fn addr(what: &str, s: &str) -> Result<SocketAddrV4, String> {
    s.parse().map_err(|_| format!("{what} \"{s}\" is not IPv4:PORT"))
}

impl Director {
    /// `ulvsadm trace`.
    pub(super) fn trace(&self, protocol: &str, client: &str, vip: &str) -> Result<Trace, String> {
        let proto = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            p => return Err(format!("protocol \"{p}\": tcp or udp")),
        };
        let (c, v) = (addr("client", client)?, addr("VIP", vip)?);
        let key = FlowKey {
            src: u32::from(*c.ip()),
            dst: u32::from(*v.ip()),
            sport: c.port(),
            dport: v.port(),
            proto,
        };
        let table = self.shared.table.load_full();
        let mut t = Trace {
            protocol: protocol.to_ascii_lowercase(),
            client: c.to_string(),
            vip: v.to_string(),
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
            workers: self.stats.len(),
            workers_answered: 0,
        };
        let Some(si) = table.find_service(key.dst, proto, key.dport) else {
            let reason = if table.is_vip(key.dst) {
                Reason::NoService
            } else {
                Reason::NotVip
            };
            t.action = match reason {
                Reason::NoService => format!(
                    "drop: {} is a VIP, but no service takes {} port {} (counter {})",
                    v.ip(),
                    t.protocol,
                    v.port(),
                    reason.name()
                ),
                _ => format!(
                    "not for the data path: {} is no VIP of this director (counter {}; the host's stack gets it)",
                    v.ip(),
                    reason.name()
                ),
            };
            t.drop_counter = Some(reason.name().into());
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
        let placement = if self.xdp.is_some() {
            Placement::RxQueue
        } else {
            Placement::Fanout
        };
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
        let mut found = Vec::new();
        let peers = self.sync_peers();
        for (w, copy) in copies.per_worker.iter().enumerate() {
            for f in copy.iter().flatten().filter(|f| f.key == key) {
                found.push((w, f.backend));
                t.flows.push(TraceFlow {
                    worker: w,
                    state: state_name(f.state).into(),
                    expires_in: u64::from(f.expires_in_ms).div_ceil(1000),
                    origin: origin_name(f.origin, &peers),
                    server: self.endpoint(&table, f.backend),
                });
            }
        }

        let hash = svc.hash(&key);
        let pick = svc.pick(hash);
        t.hash_on = Some(
            if svc.client_affinity {
                "client address"
            } else {
                "5-tuple"
            }
            .into(),
        );
        t.slot = Some((hash % svc.maglev.len().max(1) as u64) as u32);
        t.table_size = Some(svc.maglev.len() as u32);
        t.slot_server = pick.map(|(id, _)| self.endpoint(&table, id));

        // The entry the receiving worker holds (else any: a synced copy).
        let entry = found
            .iter()
            .find(|(w, _)| Some(*w) == t.worker)
            .or(found.first())
            .map(|(_, id)| *id);
        let chosen = match entry {
            Some(id) => {
                let b = table.backend(id);
                if b.state.keeps_flows(table.reschedule_on_down) && b.mac.is_some() {
                    Some((id, "flow"))
                } else {
                    pick.map(|(nid, _)| (nid, "rescheduled"))
                }
            }
            None => pick.map(|(id, _)| (id, "maglev")),
        };
        let Some((id, by)) = chosen else {
            t.drop_counter = Some(Reason::NoServer.name().into());
            t.action = format!(
                "drop: the service has no server that takes new flows (counter {})",
                Reason::NoServer.name()
            );
            return Ok(t);
        };
        let b = *table.backend(id);
        t.chosen_by = Some(by.into());
        t.server = Some(self.server_of(&table, id, &b));
        let Some(mac) = b.mac else {
            t.drop_counter = Some(Reason::ServerMacUnknown.name().into());
            t.action = format!(
                "drop: the server's MAC is not resolved (counter {})",
                Reason::ServerMacUnknown.name()
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
