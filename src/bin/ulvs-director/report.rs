//! What `ulvsadm list` and `ulvsadm stats` show: per-worker counters summed
//! on demand, joined with the config and runtime state (slow path).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use ulvs::control::arp::NeighbourCache;
use ulvs::control::config::Config;
use ulvs::control::publish::{state_name, Runtime};
use ulvs::dataplane::classify::Reason;
use ulvs::dataplane::stats::WorkerStats;
use ulvs::wire::ethernet::fmt_mac;

/// Director-wide totals not kept by workers.
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

/// `ulvsadm stats --json`.
pub fn stats(stats: &[Arc<WorkerStats>], slow: &SlowCounters) -> Value {
    let mut drops = Map::new();
    for r in Reason::ALL {
        drops.insert(r.name().to_string(), json!(sum(stats, |s| s.drops[r as usize].load(Relaxed))));
    }
    json!({
        "frames_seen": sum(stats, |s| s.frames_seen.load(Relaxed)),
        "forwarded": sum(stats, |s| s.forwarded.load(Relaxed)),
        "bytes_forwarded": sum(stats, |s| s.bytes_forwarded.load(Relaxed)),
        "arp_replies": slow.arp_replies,
        "arp_requests": slow.arp_requests,
        "ring_drops": sum(stats, |s| s.ring_drops.load(Relaxed)),
        "flows": sum(stats, |s| s.flows.load(Relaxed)),
        "flow_capacity": sum(stats, |s| s.flow_capacity.load(Relaxed)),
        "flow_evictions": sum(stats, |s| s.evictions.load(Relaxed)),
        "flow_expirations": sum(stats, |s| s.expirations.load(Relaxed)),
        "rescheduled": sum(stats, |s| s.rescheduled.load(Relaxed)),
        "workers": stats.len(),
        "generation": slow.generation,
        "reloads": slow.reloads,
        "reload_failures": slow.reload_failures,
        "drops": Value::Object(drops),
    })
}

/// `ulvsadm list --json`.
pub fn list(cfg: &Config, rt: &Runtime, neigh: &NeighbourCache, stats: &[Arc<WorkerStats>]) -> Value {
    let services: Vec<Value> = cfg
        .services
        .iter()
        .map(|s| {
            let servers: Vec<Value> = s
                .real_servers
                .iter()
                .filter_map(|r| {
                    let srt = rt.get(&s.name, r.address, r.port)?;
                    let b = |f: &dyn Fn(&WorkerStats) -> u64| sum(stats, |w| f(w));
                    let id = srt.id;
                    let active = stats
                        .iter()
                        .map(|w| w.backend(id).active.load(Relaxed))
                        .sum::<i64>()
                        .max(0);
                    let inactive = stats
                        .iter()
                        .map(|w| w.backend(id).inactive.load(Relaxed))
                        .sum::<i64>()
                        .max(0);
                    let mac = neigh.mac(u32::from(r.address));
                    let mut v = json!({
                        "address": r.endpoint(),
                        "weight": srt.weight(),
                        "state": state_name(srt),
                        "active_flows": active,
                        "inactive_flows": inactive,
                        "conns": b(&|w| w.backend(id).conns.load(Relaxed)),
                        "packets": b(&|w| w.backend(id).packets.load(Relaxed)),
                        "bytes": b(&|w| w.backend(id).bytes.load(Relaxed)),
                        "mac": mac.map(|m| fmt_mac(&m)),
                    });
                    if mac.is_none() {
                        v["note"] = json!("MAC unresolved: no ARP answer yet, so it gets no flows");
                    } else if srt.weight() == 0 {
                        v["note"] = json!("weight 0: no new flows");
                    }
                    Some(v)
                })
                .collect();
            json!({
                "name": s.name,
                "vip": s.vip.to_string(),
                "port": s.port,
                "protocol": s.protocol.as_str(),
                "mode": s.mode.as_str(),
                "scheduler": s.scheduler.as_str(),
                "real_servers": servers,
            })
        })
        .collect();
    json!({ "services": services })
}
