//! `ulvsadm flows` on the slow path: ask every worker for a copy of its
//! flows (see `dataplane::dump` for the worker's side), wait a bounded time
//! for the answers, and name each flow's service and server.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Director;
use crate::control::config::Config;
use crate::control::publish::Runtime;
use crate::control::snapshot::{FlowSnap, Flows};
use crate::dataplane::dump::{DumpFilter, DumpedFlow};
use crate::dataplane::stats::WorkerStats;
use crate::fwd::flow::FlowState;
use crate::fwd::table::BackendId;

/// Most flows one listing holds (all workers together); more are cut and
/// the listing says `truncated`.
pub const MAX_FLOWS_LISTED: usize = 100_000;
/// How long the loop waits for the workers' copies. A worker answers after
/// its next batch or idle poll (at most 100 ms), a busy one in pieces.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

impl Director {
    /// `ulvsadm flows [--service NAME]`.
    pub(super) fn flows(&self, service: Option<&str>) -> Result<Flows, String> {
        let filter = match service {
            None => None,
            Some(name) => {
                let s = self
                    .cfg
                    .service(name)
                    .ok_or_else(|| format!("no service named \"{name}\""))?;
                Some(DumpFilter {
                    vip: u32::from(s.vip),
                    port: s.port,
                    proto: s.protocol.ip_protocol(),
                })
            }
        };
        let copies = collect(&self.stats, filter, ANSWER_WAIT);
        Ok(describe(&self.cfg, &self.rt, copies))
    }
}

/// What each worker copied (`None`: it did not answer in time), and whether
/// any copy was cut.
pub(super) struct Copies {
    per_worker: Vec<Option<Vec<DumpedFlow>>>,
    truncated: bool,
}

/// Ask every worker, wait up to `wait` for all answers, take them.
pub(super) fn collect(stats: &[Arc<WorkerStats>], filter: Option<DumpFilter>, wait: Duration) -> Copies {
    let per = MAX_FLOWS_LISTED.div_ceil(stats.len().max(1));
    for w in stats {
        w.dump.ask(filter, per);
    }
    let deadline = Instant::now() + wait;
    while !stats.iter().all(|w| w.dump.answered()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut truncated = false;
    let per_worker = stats
        .iter()
        .map(|w| {
            w.dump.take().map(|d| {
                truncated |= d.truncated;
                d.flows
            })
        })
        .collect();
    Copies {
        per_worker,
        truncated,
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        n => n.to_string(),
    }
}

fn state_name(s: FlowState) -> &'static str {
    match s {
        FlowState::TcpSyn => "syn",
        FlowState::TcpEstablished => "established",
        FlowState::TcpClosing => "closing",
        FlowState::Udp => "udp",
        FlowState::Other | FlowState::Empty => "other",
    }
}

/// Who created a flow, for the listing: `local`, or the sync peer it came
/// from by its place in the config's `sync.peers` (from 1).
fn origin_name(origin: u8) -> String {
    match origin {
        0 => "local".into(),
        n => format!("peer#{n}"),
    }
}

/// The copies as listing rows, sorted by service, client.
fn describe(cfg: &Config, rt: &Runtime, copies: Copies) -> Flows {
    let mut servers: HashMap<BackendId, String> = HashMap::new();
    for (k, s) in &rt.servers {
        let ep = match k.port {
            Some(p) => format!("{}:{p}", k.addr),
            None => k.addr.to_string(),
        };
        servers.insert(s.id, ep);
    }
    for (id, c) in &rt.removed {
        servers
            .entry(*id)
            .or_insert_with(|| format!("{} (removed)", c.key.addr));
    }
    let service_of = |vip: u32, port: u16, proto: u8| {
        cfg.services
            .iter()
            .find(|s| {
                u32::from(s.vip) == vip
                    && s.protocol.ip_protocol() == proto
                    && (s.port == 0 || s.port == port)
            })
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let workers = copies.per_worker.len();
    let workers_answered = copies.per_worker.iter().filter(|c| c.is_some()).count();
    let mut flows = Vec::new();
    for (worker, copy) in copies.per_worker.into_iter().enumerate() {
        for f in copy.into_iter().flatten() {
            let (src, dst, sport, dport, proto) =
                (f.key.src, f.key.dst, f.key.sport, f.key.dport, f.key.proto);
            flows.push(FlowSnap {
                protocol: protocol_name(proto),
                client: format!("{}:{sport}", Ipv4Addr::from(src)),
                vip: format!("{}:{dport}", Ipv4Addr::from(dst)),
                service: service_of(dst, dport, proto),
                server: servers
                    .get(&f.backend)
                    .cloned()
                    .unwrap_or_else(|| format!("id {}", f.backend)),
                state: state_name(f.state).into(),
                expires_in: u64::from(f.expires_in_ms).div_ceil(1000),
                worker,
                origin: origin_name(f.origin),
            });
        }
    }
    flows.sort_by(|a, b| (&a.service, &a.client).cmp(&(&b.service, &b.client)));
    Flows {
        flows,
        truncated: copies.truncated,
        workers,
        workers_answered,
    }
}
