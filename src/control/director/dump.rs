//! `ulvsadm flows` on the slow path: ask every worker for a copy of its
//! flows (see `dataplane::dump` for the worker's side), wait a bounded time
//! for the answers, and name each flow's service and server.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Director;
use crate::control::config::Config;
use crate::control::publish::{Runtime, ServerKey};
use crate::control::snapshot::{FlowSnap, Flows};
use crate::dataplane::dump::{ClientFilter, DumpFilter, DumpedFlow};
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
    /// `ulvsadm flows [--service NAME] [--server ADDRESS] [--client ADDRESS]`.
    /// The service and client filters run in the workers; the server filter
    /// here, on what they copied (so with more than [`MAX_FLOWS_LISTED`]
    /// flows of other servers a listing may miss some).
    pub(super) fn flows(
        &self,
        service: Option<&str>,
        server: Option<&str>,
        client: Option<&str>,
    ) -> Result<Flows, String> {
        let svc = match service {
            None => None,
            Some(name) => Some(
                self.cfg
                    .service(name)
                    .ok_or_else(|| format!("no service named \"{name}\""))?,
            ),
        };
        // An IPv6 service's flows are not in the IPv4 flow tables: its
        // filter (VIP 0) matches none of them.
        let filter = svc.map(|s| DumpFilter {
            vip: crate::control::publish::ipv4(s.vip).unwrap_or(0),
            port: s.port,
            proto: s.protocol.ip_protocol(),
        });
        let ids = match server {
            None => None,
            Some(a) => {
                let (ip, port) = endpoint(a)?;
                let wanted = |k: &ServerKey| {
                    k.addr == ip
                        && port.is_none_or(|p| k.port == Some(p))
                        && svc.is_none_or(|s| s.name == k.service)
                };
                let mut ids: HashSet<BackendId> = self
                    .rt
                    .servers
                    .iter()
                    .filter(|(k, _)| wanted(k))
                    .map(|(_, s)| s.id)
                    .collect();
                ids.extend(
                    self.rt
                        .removed
                        .iter()
                        .filter(|(_, c)| wanted(&c.key))
                        .map(|(id, _)| *id),
                );
                if ids.is_empty() {
                    return Err(match svc {
                        Some(s) => format!("no real server {a} in service \"{}\"", s.name),
                        None => format!("no real server {a}"),
                    });
                }
                Some(ids)
            }
        };
        let client = match client.map(endpoint).transpose()? {
            None => None,
            Some((IpAddr::V4(ip), port)) => Some(ClientFilter {
                addr: u32::from(ip),
                port,
            }),
            Some((IpAddr::V6(_), _)) => return Err("listing IPv6 clients' flows is not supported".into()),
        };
        let mut copies = collect(&self.stats, filter, client, ANSWER_WAIT);
        if let Some(ids) = ids {
            for c in copies.per_worker.iter_mut().flatten() {
                c.retain(|f| ids.contains(&f.backend));
            }
        }
        Ok(describe(&self.cfg, &self.rt, &self.sync_peers(), copies))
    }

    /// The running sync thread's peers (a reload changes them only at the
    /// next start), in the order a flow's origin counts them.
    pub(super) fn sync_peers(&self) -> Vec<String> {
        self.sync
            .as_ref()
            .map(|h| h.snapshot().peers.into_iter().map(|p| p.address).collect())
            .unwrap_or_default()
    }
}

/// `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT` as the operator writes a
/// server or a client.
pub(super) fn endpoint(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    s.parse::<SocketAddr>()
        .map(|a| (a.ip(), Some(a.port())))
        .map_err(|_| format!("\"{s}\" is not an address (IP, IP:PORT or [IPv6]:PORT)"))
}

/// What each worker copied (`None`: it did not answer in time), and whether
/// any copy was cut.
pub(super) struct Copies {
    pub(super) per_worker: Vec<Option<Vec<DumpedFlow>>>,
    truncated: bool,
}

/// Ask every worker for its flows that `filter` and `client` keep, wait up
/// to `wait` for all answers, take them.
pub(super) fn collect(
    stats: &[Arc<WorkerStats>],
    filter: Option<DumpFilter>,
    client: Option<ClientFilter>,
    wait: Duration,
) -> Copies {
    let per = MAX_FLOWS_LISTED.div_ceil(stats.len().max(1));
    for w in stats {
        w.dump.ask_client(filter, client, per);
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

pub(super) fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        n => n.to_string(),
    }
}

pub(super) fn state_name(s: FlowState) -> &'static str {
    match s {
        FlowState::TcpSyn => "syn",
        FlowState::TcpEstablished => "established",
        FlowState::TcpClosing => "closing",
        FlowState::Udp => "udp",
        FlowState::Other | FlowState::Empty => "other",
    }
}

/// Who created a flow, for the listing: `local`, or the sync peer it came
/// from (`peers[origin - 1]`: the running sync thread's `sync.peers`), or
/// `peer#N` should that list not have it.
pub(super) fn origin_name(origin: u8, peers: &[String]) -> String {
    match origin {
        0 => "local".into(),
        n => peers
            .get(usize::from(n) - 1)
            .cloned()
            .unwrap_or_else(|| format!("peer#{n}")),
    }
}

/// The copies as listing rows, sorted by service, client.
fn describe(cfg: &Config, rt: &Runtime, peers: &[String], copies: Copies) -> Flows {
    let mut servers: HashMap<BackendId, String> = HashMap::new();
    for (k, s) in &rt.servers {
        let ep = match k.port {
            Some(p) => SocketAddr::new(k.addr, p).to_string(),
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
                s.vip == IpAddr::V4(Ipv4Addr::from(vip))
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
                origin: origin_name(f.origin, peers),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::flow::FlowKey;

    /// Each flow names who created it: this director, or a sync peer by
    /// its address (a number when the peer list lacks it).
    #[test]
    fn flows_name_their_origin() {
        let yaml = "interface: eth0\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n";
        let cfg = Config::from_str(yaml, "t.yaml").expect("valid");
        let mut rt = Runtime::default();
        rt.sync(&cfg).expect("ids");
        let id = rt.servers.values().next().expect("a server").id;
        let flow = |sport, origin| DumpedFlow {
            key: FlowKey {
                src: 0xcb00_7107,
                dst: 0xc612_6401,
                sport,
                dport: 80,
                proto: 6,
            },
            state: FlowState::TcpEstablished,
            backend: id,
            expires_in_ms: 1500,
            origin,
        };
        let copies = Copies {
            per_worker: vec![Some(vec![flow(1, 0), flow(2, 1), flow(3, 2)])],
            truncated: false,
        };
        let out = describe(&cfg, &rt, &["198.18.0.3:8848".to_string()], copies);
        let got: Vec<_> = out
            .flows
            .iter()
            .map(|f| (f.client.as_str(), f.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("203.0.113.7:1", "local"),
                ("203.0.113.7:2", "198.18.0.3:8848"),
                ("203.0.113.7:3", "peer#2")
            ]
        );
        assert_eq!(out.flows[1].server, "198.18.0.11");
    }
}
