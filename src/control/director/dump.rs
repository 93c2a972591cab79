//! `ulvsadm flows` on the slow path: ask every worker for a copy of its
//! flows (see `dataplane::dump` for the worker's side), wait a bounded time
//! for the answers, and name each flow's service and server.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Director;
use crate::control::config::Config;
use crate::control::publish::{Runtime, ServerKey};
use crate::control::snapshot::{FlowSnap, Flows};
use crate::dataplane::dump::{ClientFilter, DumpFilter, DumpedFlow, DumpedFlow6};
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
        // The service's VIP (or else the client's address) picks the flow
        // table: IPv4 and IPv6 flows live apart in each worker.
        let svc_key = svc.map(|s| (s.vip, s.port, s.protocol.ip_protocol()));
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
        let client = client.map(endpoint).transpose()?;
        let ask = ask_for(svc_key, client).map_err(|c| {
            format!(
                "client {c} and service \"{}\" are of different address families",
                service.unwrap_or_default()
            )
        })?;
        let mut copies = collect_ask(&self.stats, ask, ANSWER_WAIT);
        if let Some(ids) = ids {
            for c in copies.per_worker.iter_mut().flatten() {
                c.retain(|f| ids.contains(&f.backend));
            }
            for c in copies.per_worker6.iter_mut().flatten() {
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

/// Which flows a listing asks the workers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// IPv4 flows these filters keep (both families when neither filters).
    V4(Option<DumpFilter>, Option<ClientFilter>),
    /// IPv6 flows these filters keep.
    V6(Option<DumpFilter<u128>>, Option<ClientFilter<u128>>),
}

/// The request for a service key (VIP, port, protocol) and a client
/// (address, port), either optional: the family of whichever is given.
///
/// # Errors
/// The client's address when it is not of the service VIP's family.
pub(super) fn ask_for(
    svc: Option<(IpAddr, u16, u8)>,
    client: Option<(IpAddr, Option<u16>)>,
) -> Result<Ask, IpAddr> {
    let v6 = match (svc, client) {
        (Some((vip, ..)), Some((c, _))) if vip.is_ipv6() != c.is_ipv6() => return Err(c),
        (Some((vip, ..)), _) => vip.is_ipv6(),
        (None, Some((c, _))) => c.is_ipv6(),
        (None, None) => false,
    };
    // Both filters of one family, its addresses as `bits` writes them.
    fn filters<A>(
        svc: Option<(IpAddr, u16, u8)>,
        client: Option<(IpAddr, Option<u16>)>,
        bits: fn(IpAddr) -> A,
    ) -> (Option<DumpFilter<A>>, Option<ClientFilter<A>>) {
        (
            svc.map(|(vip, port, proto)| DumpFilter {
                vip: bits(vip),
                port,
                proto,
            }),
            client.map(|(a, port)| ClientFilter { addr: bits(a), port }),
        )
    }
    Ok(if v6 {
        let bits6 = |a: IpAddr| match a {
            IpAddr::V6(a) => u128::from(a),
            IpAddr::V4(_) => 0,
        };
        let (f, c) = filters(svc, client, bits6);
        Ask::V6(f, c)
    } else {
        let bits4 = |a: IpAddr| match a {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(_) => 0,
        };
        let (f, c) = filters(svc, client, bits4);
        Ask::V4(f, c)
    })
}

/// What each worker copied (`None`: it did not answer in time), and whether
/// any copy was cut.
pub(super) struct Copies {
    pub(super) per_worker: Vec<Option<Vec<DumpedFlow>>>,
    /// The IPv6 flows, per worker as `per_worker`.
    pub(super) per_worker6: Vec<Option<Vec<DumpedFlow6>>>,
    truncated: bool,
}

/// Ask every worker for its IPv4 flows that `filter` and `client` keep
/// (and its IPv6 flows when neither filters), wait up to `wait` for all
/// answers, take them.
pub(super) fn collect(
    stats: &[Arc<WorkerStats>],
    filter: Option<DumpFilter>,
    client: Option<ClientFilter>,
    wait: Duration,
) -> Copies {
    collect_ask(stats, Ask::V4(filter, client), wait)
}

/// [`collect`] for any [`Ask`].
pub(super) fn collect_ask(stats: &[Arc<WorkerStats>], ask: Ask, wait: Duration) -> Copies {
    let per = MAX_FLOWS_LISTED.div_ceil(stats.len().max(1));
    for w in stats {
        match ask {
            Ask::V4(filter, client) => w.dump.ask_client(filter, client, per),
            Ask::V6(filter, client) => w.dump.ask6(filter, client, per),
        }
    }
    let deadline = Instant::now() + wait;
    while !stats.iter().all(|w| w.dump.answered()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut truncated = false;
    let (per_worker, per_worker6) = stats
        .iter()
        .map(|w| match w.dump.take() {
            Some(d) => {
                truncated |= d.truncated;
                (Some(d.flows), Some(d.flows6))
            }
            None => (None, None),
        })
        .unzip();
    Copies {
        per_worker,
        per_worker6,
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
    let service_of = |vip: IpAddr, port: u16, proto: u8| {
        cfg.services
            .iter()
            .find(|s| s.vip == vip && s.protocol.ip_protocol() == proto && (s.port == 0 || s.port == port))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let workers = copies.per_worker.len();
    let workers_answered = copies.per_worker.iter().filter(|c| c.is_some()).count();
    let v4 = endpoints(copies.per_worker, |k| {
        let (src, dst) = (Ipv4Addr::from(k.src).into(), Ipv4Addr::from(k.dst).into());
        (
            SocketAddr::new(src, k.sport),
            SocketAddr::new(dst, k.dport),
            k.proto,
        )
    });
    let v6 = endpoints(copies.per_worker6, |k| {
        let (src, dst) = (Ipv6Addr::from(k.src).into(), Ipv6Addr::from(k.dst).into());
        (
            SocketAddr::new(src, k.sport),
            SocketAddr::new(dst, k.dport),
            k.proto,
        )
    });
    let mut flows: Vec<FlowSnap> = v4
        .chain(v6)
        .map(|(worker, f)| {
            let (client, vip, proto) = f.key;
            FlowSnap {
                protocol: protocol_name(proto),
                client: client.to_string(),
                vip: vip.to_string(),
                service: service_of(vip.ip(), vip.port(), proto),
                server: servers
                    .get(&f.backend)
                    .cloned()
                    .unwrap_or_else(|| format!("id {}", f.backend)),
                state: state_name(f.state).into(),
                expires_in: u64::from(f.expires_in_ms).div_ceil(1000),
                worker,
                origin: origin_name(f.origin, peers),
            }
        })
        .collect();
    flows.sort_by(|a, b| (&a.service, &a.client).cmp(&(&b.service, &b.client)));
    Flows {
        flows,
        truncated: copies.truncated,
        workers,
        workers_answered,
    }
}

/// A flow's key as a listing shows it, the same for both families:
/// (client, VIP, protocol).
type Ends = (SocketAddr, SocketAddr, u8);

/// One family's copies, each flow with its worker and its key as [`Ends`]
/// (`ends` says how, per family).
fn endpoints<K>(
    per_worker: Vec<Option<Vec<DumpedFlow<K>>>>,
    ends: fn(&K) -> Ends,
) -> impl Iterator<Item = (usize, DumpedFlow<Ends>)> {
    per_worker
        .into_iter()
        .enumerate()
        .flat_map(move |(worker, copy)| {
            copy.into_iter().flatten().map(move |f| {
                let flow = DumpedFlow {
                    key: ends(&f.key),
                    state: f.state,
                    backend: f.backend,
                    expires_in_ms: f.expires_in_ms,
                    origin: f.origin,
                };
                (worker, flow)
            })
        })
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
            per_worker6: vec![Some(Vec::new())],
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

    /// IPv6 flows are listed beside IPv4 ones, bracketed, with their
    /// service and server; a listing's filters pick the family.
    #[test]
    fn ipv6_flows_are_listed() {
        let yaml = "interface: eth0\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n  - name: web6\n    vip: 2001:db8:100::1\n    port: 80\n    real_servers:\n      - address: 2001:db8:2::11\n";
        let cfg = Config::from_str(yaml, "t.yaml").expect("valid");
        let mut rt = Runtime::default();
        rt.sync(&cfg).expect("ids");
        let id6 = rt
            .servers
            .iter()
            .find(|(k, _)| k.service == "web6")
            .expect("the IPv6 server")
            .1
            .id;
        let v6 = |s: &str| u128::from(s.parse::<Ipv6Addr>().unwrap());
        let flow6 = DumpedFlow6 {
            key: crate::fwd::flow::FlowKey6 {
                src: v6("2001:db8:1::2"),
                dst: v6("2001:db8:100::1"),
                sport: 40000,
                dport: 80,
                proto: 6,
            },
            state: FlowState::TcpSyn,
            backend: id6,
            expires_in_ms: 2500,
            origin: 0,
        };
        let copies = Copies {
            per_worker: vec![Some(Vec::new()), Some(Vec::new())],
            per_worker6: vec![Some(Vec::new()), Some(vec![flow6])],
            truncated: false,
        };
        let out = describe(&cfg, &rt, &[], copies);
        assert_eq!(out.flows.len(), 1);
        let f = &out.flows[0];
        assert_eq!(
            (
                f.client.as_str(),
                f.vip.as_str(),
                f.service.as_str(),
                f.server.as_str()
            ),
            (
                "[2001:db8:1::2]:40000",
                "[2001:db8:100::1]:80",
                "web6",
                "2001:db8:2::11"
            )
        );
        assert_eq!((f.state.as_str(), f.expires_in, f.worker), ("syn", 3, 1));

        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ask_for(None, None), Ok(Ask::V4(None, None)));
        assert_eq!(
            ask_for(Some((ip("2001:db8:100::1"), 80, 6)), None),
            Ok(Ask::V6(
                Some(DumpFilter {
                    vip: v6("2001:db8:100::1"),
                    port: 80,
                    proto: 6
                }),
                None
            ))
        );
        assert_eq!(
            ask_for(None, Some((ip("2001:db8:1::2"), Some(7)))),
            Ok(Ask::V6(
                None,
                Some(ClientFilter {
                    addr: v6("2001:db8:1::2"),
                    port: Some(7)
                })
            ))
        );
        assert_eq!(
            ask_for(
                Some((ip("198.18.100.1"), 80, 6)),
                Some((ip("2001:db8:1::2"), None))
            ),
            Err(ip("2001:db8:1::2"))
        );
    }
}
