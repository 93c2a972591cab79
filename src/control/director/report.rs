//! Fills the snapshots behind `ulvsadm list`, `ulvsadm stats` and metrics:
//! per-worker counters summed on demand, joined with the config and the
//! runtime state (slow path).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::control::arp::NeighbourCache;
use crate::control::config::{Config, Service as ServiceConfig};
use crate::control::publish::{state_name, Health, Runtime};
use crate::control::publish6::Host6;
use crate::control::rates::{Counters, RateMeter};
use crate::control::snapshot::{List, ServerSnap, ServiceSnap, Stats};
use crate::dataplane::classify::Reason;
use crate::dataplane::stats::WorkerStats;
use crate::io::xdp::FastCounters;
use crate::wire::ethernet::fmt_mac;

/// Director-wide totals kept by the slow path.
#[derive(Debug, Default)]
pub struct SlowCounters {
    pub arp_replies: u64,
    pub arp_requests: u64,
    pub generation: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub gratuitous_arps: u64,
}

fn sum(stats: &[Arc<WorkerStats>], f: impl Fn(&WorkerStats) -> u64) -> u64 {
    stats.iter().map(|s| f(s)).fold(0u64, u64::wrapping_add)
}

/// `ulvsadm stats`.
pub fn stats(stats: &[Arc<WorkerStats>], slow: &SlowCounters) -> Stats {
    Stats {
        frames_seen: sum(stats, |s| s.frames_seen.load(Relaxed)),
        forwarded: sum(stats, |s| s.forwarded.load(Relaxed)),
        bytes_forwarded: sum(stats, |s| s.bytes_forwarded.load(Relaxed)),
        arp_replies: slow.arp_replies,
        arp_requests: slow.arp_requests,
        ring_drops: sum(stats, |s| s.ring_drops.load(Relaxed)),
        flows: sum(stats, |s| s.flows.load(Relaxed)),
        flow_capacity: sum(stats, |s| s.flow_capacity.load(Relaxed)),
        flow_evictions: sum(stats, |s| s.evictions.load(Relaxed)),
        flow_expirations: sum(stats, |s| s.expirations.load(Relaxed)),
        flow_evictions_expired: sum(stats, |s| s.evictions_expired.load(Relaxed)),
        flow_evictions_embryonic: sum(stats, |s| s.evictions_embryonic.load(Relaxed)),
        flow_evictions_established: sum(stats, |s| s.evictions_established.load(Relaxed)),
        rescheduled: sum(stats, |s| s.rescheduled.load(Relaxed)),
        syn_second_chance: sum(stats, |s| s.syn_second_chance.load(Relaxed)),
        echo_replies: sum(stats, |s| s.echo_replies.load(Relaxed)),
        icmp_errors_forwarded: sum(stats, |s| s.icmp_errors_forwarded.load(Relaxed)),
        fragments_forwarded: sum(stats, |s| s.fragments_forwarded.load(Relaxed)),
        tun_segments: sum(stats, |s| s.tun_segmented.load(Relaxed)),
        workers: stats.len() as u64,
        generation: slow.generation,
        reloads: slow.reloads,
        reload_failures: slow.reload_failures,
        gratuitous_arps: slow.gratuitous_arps,
        drops: Reason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    sum(stats, |s| s.drops[*r as usize].load(Relaxed)),
                )
            })
            .collect(),
        // The listeners' counters are the caller's.
        ..Stats::default()
    }
}

/// The monotonically increasing counters of one backend, summed over
/// workers, plus what the XDP fast path forwarded to it (`fast`, indexed by
/// backend id: empty without the fast path).
pub fn backend_counters(stats: &[Arc<WorkerStats>], fast: &[FastCounters], id: u32) -> Counters {
    let f = fast.get(id as usize).copied().unwrap_or_default();
    Counters {
        conns: sum(stats, |w| w.backend(id).conns.load(Relaxed)),
        in_packets: sum(stats, |w| w.backend(id).packets.load(Relaxed)).wrapping_add(f.frames),
        in_bytes: sum(stats, |w| w.backend(id).bytes.load(Relaxed)).wrapping_add(f.bytes),
        out_packets: sum(stats, |w| w.backend(id).out_packets.load(Relaxed)),
        out_bytes: sum(stats, |w| w.backend(id).out_bytes.load(Relaxed)),
    }
}

/// Active plus inactive flows pinned to backend `id`, over all workers.
pub fn flows_of(stats: &[Arc<WorkerStats>], id: u32) -> u64 {
    let n: i64 = stats
        .iter()
        .map(|w| w.backend(id).active.load(Relaxed) + w.backend(id).inactive.load(Relaxed))
        .sum();
    n.max(0) as u64
}

/// What `ulvsadm list` is made of.
pub struct Sources<'a> {
    pub cfg: &'a Config,
    pub rt: &'a Runtime,
    pub neigh: &'a NeighbourCache,
    pub host6: &'a Host6,
    pub stats: &'a [Arc<WorkerStats>],
    pub rates: &'a RateMeter<u32>,
    pub health_reasons: &'a HashMap<u32, String>,
    /// Per service, the digest of its published Maglev table.
    pub digests: &'a HashMap<String, u64>,
    /// Counters an id had before its server took it over.
    pub baseline: &'a HashMap<u32, Counters>,
    /// What the XDP fast path forwarded per backend id (empty without it).
    pub fast: &'a [FastCounters],
}

/// `ulvsadm list`.
pub fn list(src: &Sources<'_>) -> List {
    List {
        services: src.cfg.services.iter().map(|s| service(src, s)).collect(),
    }
}

/// One service of `ulvsadm list` (a listing is streamed a service at a
/// time: `director::listing`).
pub fn service(src: &Sources<'_>, s: &ServiceConfig) -> ServiceSnap {
    let Sources {
        cfg: _,
        rt,
        neigh,
        host6,
        stats,
        rates,
        health_reasons,
        digests,
        baseline,
        fast,
    } = *src;
    let real_servers = s
        .real_servers
        .iter()
        .filter_map(|r| {
            let srt = rt.get(&s.name, r.address, r.port)?;
            let id = srt.id;
            let gauge =
                |f: &dyn Fn(&WorkerStats) -> i64| stats.iter().map(|w| f(w)).sum::<i64>().max(0) as u64;
            let c = backend_counters(stats, fast, id).since(&baseline.get(&id).copied().unwrap_or_default());
            let mac = match r.address {
                IpAddr::V4(a) => neigh.mac(u32::from(a)),
                IpAddr::V6(a) => host6.mac(u128::from(a)),
            };
            let note = if mac.is_none() {
                let (v4, v6) = ("no ARP answer", "no Neighbor Advertisement");
                let why = if r.address.is_ipv6() { v6 } else { v4 };
                Some(format!("MAC unresolved: {why} yet, so it gets no flows"))
            } else if srt.health == Health::Pending {
                Some("waiting for its first health check: no new flows until it passes".to_string())
            } else if srt.weight() == 0 {
                Some("weight 0: no new flows".to_string())
            } else {
                None
            };
            Some(ServerSnap {
                address: r.endpoint(),
                weight: srt.weight(),
                state: state_name(srt).into(),
                health: match srt.health {
                    Health::Up => "up",
                    Health::Down => "down",
                    Health::Pending => "pending",
                }
                .into(),
                health_reason: health_reasons.get(&id).cloned(),
                active_flows: gauge(&|w| w.backend(id).active.load(Relaxed)),
                inactive_flows: gauge(&|w| w.backend(id).inactive.load(Relaxed)),
                conns: c.conns,
                packets: c.in_packets,
                bytes: c.in_bytes,
                out_packets: c.out_packets,
                out_bytes: c.out_bytes,
                rates: rates.rates(&id),
                mac: mac.map(|m| fmt_mac(&m)),
                note,
            })
        })
        .collect();
    let mut snap = ServiceSnap {
        name: s.name.clone(),
        vip: s.vip.to_string(),
        port: s.port,
        protocol: s.protocol.as_str().into(),
        mode: s.mode.as_str().into(),
        scheduler: s.scheduler.as_str().into(),
        table_digest: digests
            .get(&s.name)
            .map(|d| format!("{d:016x}"))
            .unwrap_or_default(),
        real_servers,
        ..Default::default()
    };
    snap.total();
    snap
}

/// Why the director does not forward, for `ulvsadm check` (keepalived's
/// `track_script`); `None` when it does: every worker made progress
/// recently and every service has a real server that takes new flows (up,
/// weight > 0, MAC resolved). The first reason found, as one line.
pub fn not_forwarding(list: &List, workers_live: bool) -> Option<String> {
    if !workers_live {
        return Some(
            "the data plane is stalled: a worker made no progress recently (see the director log)".into(),
        );
    }
    for s in &list.services {
        let up: Vec<_> = s.real_servers.iter().filter(|r| r.state == "up").collect();
        if up.is_empty() {
            return Some(format!("service {} has no real server up", s.name));
        }
        if !up.iter().any(|r| r.weight > 0 && r.mac.is_some()) {
            return Some(format!(
                "service {} has no real server that takes new flows ({} up, but each has weight 0 or no resolved MAC)",
                s.name,
                up.len()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(state: &str, weight: u32, mac: bool) -> ServerSnap {
        ServerSnap {
            address: "198.18.0.11".into(),
            weight,
            state: state.into(),
            mac: mac.then(|| "02:00:00:00:00:0b".into()),
            ..Default::default()
        }
    }

    fn service(name: &str, real_servers: Vec<ServerSnap>) -> ServiceSnap {
        ServiceSnap {
            name: name.into(),
            real_servers,
            ..Default::default()
        }
    }

    #[test]
    fn check_names_the_first_reason() {
        let good = service("web", vec![server("down", 1, true), server("up", 1, true)]);
        let list = List {
            services: vec![good.clone()],
        };
        assert_eq!(not_forwarding(&list, true), None);
        assert_eq!(
            not_forwarding(&list, false).as_deref(),
            Some("the data plane is stalled: a worker made no progress recently (see the director log)")
        );
        let list = List {
            services: vec![
                good.clone(),
                service("dns", vec![server("down", 1, true), server("draining", 1, true)]),
            ],
        };
        assert_eq!(
            not_forwarding(&list, true).as_deref(),
            Some("service dns has no real server up")
        );
        let list = List {
            services: vec![service("empty", vec![])],
        };
        assert_eq!(
            not_forwarding(&list, true).as_deref(),
            Some("service empty has no real server up")
        );
        let list = List {
            services: vec![service(
                "web",
                vec![server("up", 0, true), server("up", 1, false)],
            )],
        };
        assert_eq!(
            not_forwarding(&list, true).as_deref(),
            Some("service web has no real server that takes new flows (2 up, but each has weight 0 or no resolved MAC)")
        );
    }

    /// `ulvsadm list` / `--json` of an IPv6 service: the VIP and the
    /// servers in their written forms, the MAC from neighbour discovery,
    /// and the note of an unresolved one naming NDP, not ARP.
    /// Frames the XDP fast path forwarded are in their server's packets
    /// and bytes (listing and rates read the same sum), a reused id's
    /// baseline taken from that sum too.
    #[test]
    fn fast_path_frames_count_for_their_server() {
        let text = "interface: eth0\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n";
        let cfg = Config::from_str(text, "t.yaml").unwrap();
        let mut rt = Runtime::default();
        rt.sync(&cfg).unwrap();
        let id = |a: &str| rt.get("web", a.parse().unwrap(), None).unwrap().id;
        let (a, b) = (id("198.18.0.11"), id("198.18.0.12"));
        let stats = vec![Arc::new(WorkerStats::default()), Arc::new(WorkerStats::default())];
        for w in &stats {
            w.backend(a).packets.store(3, Relaxed);
            w.backend(a).bytes.store(300, Relaxed);
        }
        let mut fast = vec![FastCounters::default(); a.max(b) as usize + 1];
        fast[a as usize] = FastCounters {
            frames: 1000,
            bytes: 66_000,
        };
        fast[b as usize] = FastCounters {
            frames: 7,
            bytes: 700,
        };
        let c = backend_counters(&stats, &fast, a);
        assert_eq!((c.in_packets, c.in_bytes), (1006, 66_600));
        assert_eq!(
            backend_counters(&stats, &[], a).in_packets,
            6,
            "without a fast path"
        );
        let mut baseline = HashMap::new();
        baseline.insert(
            b,
            Counters {
                in_packets: 5,
                in_bytes: 500,
                ..Counters::default()
            },
        );
        let list = list(&Sources {
            cfg: &cfg,
            rt: &rt,
            neigh: &NeighbourCache::default(),
            host6: &Host6::default(),
            stats: &stats,
            rates: &RateMeter::default(),
            health_reasons: &HashMap::new(),
            digests: &HashMap::new(),
            baseline: &baseline,
            fast: &fast,
        });
        let s = &list.services[0];
        let row = |addr: &str| s.real_servers.iter().find(|r| r.address == addr).unwrap();
        assert_eq!(
            (row("198.18.0.11").packets, row("198.18.0.11").bytes),
            (1006, 66_600)
        );
        assert_eq!((row("198.18.0.12").packets, row("198.18.0.12").bytes), (2, 200));
        assert_eq!(s.packets, 1008, "the service's total");
    }

    #[test]
    fn ipv6_services_are_listed() {
        let text = "interface: eth0\nservices:\n  - name: api6\n    vip: 2001:db8:100::2\n    port: 443\n    mode: nat\n    real_servers:\n      - address: \"[2001:db8::21]:8443\"\n      - address: 2001:db8::22\n";
        let cfg = Config::from_str(text, "t.yaml").unwrap();
        let mut rt = Runtime::default();
        rt.sync(&cfg).unwrap();
        let mut host6 = Host6::default();
        let a21 = u128::from("2001:db8::21".parse::<std::net::Ipv6Addr>().unwrap());
        host6.neighbours.insert(a21, [2, 0, 0, 0, 0, 0x21]);
        let stats = vec![Arc::new(WorkerStats::default())];
        let list = list(&Sources {
            cfg: &cfg,
            rt: &rt,
            neigh: &NeighbourCache::default(),
            host6: &host6,
            stats: &stats,
            rates: &RateMeter::default(),
            health_reasons: &HashMap::new(),
            digests: &HashMap::new(),
            baseline: &HashMap::new(),
            fast: &[],
        });
        let s = &list.services[0];
        assert_eq!(
            (s.vip.as_str(), s.vip_port().as_str()),
            ("2001:db8:100::2", "[2001:db8:100::2]:443")
        );
        let (r21, r22) = (&s.real_servers[0], &s.real_servers[1]);
        assert_eq!(r21.address, "[2001:db8::21]:8443");
        assert_eq!(r21.mac.as_deref(), Some("02:00:00:00:00:21"));
        assert_eq!(r21.note, None);
        assert_eq!(r22.address, "2001:db8::22");
        assert_eq!(r22.mac, None);
        assert_eq!(
            r22.note.as_deref(),
            Some("MAC unresolved: no Neighbor Advertisement yet, so it gets no flows")
        );
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["services"][0]["vip"], "2001:db8:100::2");
        assert_eq!(
            json["services"][0]["real_servers"][0]["address"],
            "[2001:db8::21]:8443"
        );
    }
}
