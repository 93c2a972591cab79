//! Fills the snapshots behind `ulvsadm list`, `ulvsadm stats` and metrics:
//! per-worker counters summed on demand, joined with the config and the
//! runtime state (slow path).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ulvs::control::arp::NeighbourCache;
use ulvs::control::config::Config;
use ulvs::control::publish::{state_name, Health, Runtime};
use ulvs::control::rates::{Counters, RateMeter};
use ulvs::control::snapshot::{List, ServerSnap, ServiceSnap, Stats};
use ulvs::dataplane::classify::Reason;
use ulvs::dataplane::stats::WorkerStats;
use ulvs::wire::ethernet::fmt_mac;

/// Director-wide totals kept by the slow path.
#[derive(Debug, Default)]
pub struct SlowCounters {
    pub arp_replies: u64,
    pub arp_requests: u64,
    pub generation: u64,
    pub reloads: u64,
    pub reload_failures: u64,
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
        drops: Reason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    sum(stats, |s| s.drops[*r as usize].load(Relaxed)),
                )
            })
            .collect(),
    }
}

/// The monotonically increasing counters of one backend, summed over workers.
pub fn backend_counters(stats: &[Arc<WorkerStats>], id: u32) -> Counters {
    Counters {
        conns: sum(stats, |w| w.backend(id).conns.load(Relaxed)),
        in_packets: sum(stats, |w| w.backend(id).packets.load(Relaxed)),
        in_bytes: sum(stats, |w| w.backend(id).bytes.load(Relaxed)),
        out_packets: sum(stats, |w| w.backend(id).out_packets.load(Relaxed)),
        out_bytes: sum(stats, |w| w.backend(id).out_bytes.load(Relaxed)),
    }
}

/// `ulvsadm list`.
pub fn list(
    cfg: &Config,
    rt: &Runtime,
    neigh: &NeighbourCache,
    stats: &[Arc<WorkerStats>],
    rates: &RateMeter<u32>,
    health_reasons: &HashMap<u32, String>,
) -> List {
    let services = cfg
        .services
        .iter()
        .map(|s| {
            let real_servers = s
                .real_servers
                .iter()
                .filter_map(|r| {
                    let srt = rt.get(&s.name, r.address, r.port)?;
                    let id = srt.id;
                    let gauge = |f: &dyn Fn(&WorkerStats) -> i64| {
                        stats.iter().map(|w| f(w)).sum::<i64>().max(0) as u64
                    };
                    let c = backend_counters(stats, id);
                    let mac = neigh.mac(u32::from(r.address));
                    let note = if mac.is_none() {
                        Some("MAC unresolved: no ARP answer yet, so it gets no flows".to_string())
                    } else if srt.weight() == 0 {
                        Some("weight 0: no new flows".to_string())
                    } else {
                        None
                    };
                    Some(ServerSnap {
                        address: r.endpoint(),
                        weight: srt.weight(),
                        state: state_name(srt),
                        health: if srt.health == Health::Up { "up" } else { "down" },
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
                protocol: s.protocol.as_str(),
                mode: s.mode.as_str(),
                scheduler: s.scheduler.as_str(),
                real_servers,
                ..Default::default()
            };
            snap.total();
            snap
        })
        .collect();
    List { services }
}
