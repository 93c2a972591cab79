//! Per-worker counters (written by one worker, read by the slow path, which
//! sums them over workers). The worker writes with a plain load+store, not a
//! locked read-modify-write: it is the only writer.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::classify::Reason;
use super::dump::FlowDump;
use crate::fwd::table::MAX_BACKEND_IDS;

/// Add `n` to a counter this thread alone writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Add `n` (maybe negative) to a gauge this thread alone writes.
#[inline]
pub fn bump_i(c: &AtomicI64, n: i64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Counters of one real server within one worker.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Frames forwarded to it (inbound).
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames seen from it (outbound, NAT only).
    pub out_packets: AtomicU64,
    pub out_bytes: AtomicU64,
    /// New flows given to it.
    pub conns: AtomicU64,
    /// Flows not yet closed (TCP before FIN/RST, UDP until timeout).
    pub active: AtomicI64,
    /// Closed TCP flows still remembered.
    pub inactive: AtomicI64,
}

/// All counters of one worker.
#[derive(Debug)]
pub struct WorkerStats {
    pub frames_seen: AtomicU64,
    pub forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub drops: [AtomicU64; Reason::COUNT],
    pub ring_drops: AtomicU64,
    pub flows: AtomicU64,
    pub flow_capacity: AtomicU64,
    /// Live flows evicted from full buckets (embryonic + established).
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    /// Flows taken out of full buckets, by kind: expired (also counted in
    /// `expirations`), embryonic (SYN only), established (everything else).
    pub evictions_expired: AtomicU64,
    pub evictions_embryonic: AtomicU64,
    pub evictions_established: AtomicU64,
    /// Maglev slots read by SYN second-chance walks (bounded per flow by
    /// the number of servers; the cost of replayed SYNs shows here).
    pub maglev_probes: AtomicU64,
    pub rescheduled: AtomicU64,
    pub syn_second_chance: AtomicU64,
    pub echo_replies: AtomicU64,
    pub icmp_errors_forwarded: AtomicU64,
    pub fragments_forwarded: AtomicU64,
    pub tun_segmented: AtomicU64,
    pub generation: AtomicU64,
    /// Loop iterations, idle polls included: the slow path's liveness check
    /// (systemd watchdog) sees a worker that stops moving it as stuck.
    pub heartbeat: AtomicU64,
    pub backends: Box<[BackendCounters]>,
    /// `ulvsadm flows`: the slow path's request for a copy of this
    /// worker's flows, and the copy (not a counter, but per worker and
    /// shared the same way).
    pub dump: FlowDump,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            frames_seen: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            ring_drops: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            flow_capacity: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            evictions_expired: AtomicU64::new(0),
            evictions_embryonic: AtomicU64::new(0),
            evictions_established: AtomicU64::new(0),
            maglev_probes: AtomicU64::new(0),
            rescheduled: AtomicU64::new(0),
            syn_second_chance: AtomicU64::new(0),
            echo_replies: AtomicU64::new(0),
            icmp_errors_forwarded: AtomicU64::new(0),
            fragments_forwarded: AtomicU64::new(0),
            tun_segmented: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            heartbeat: AtomicU64::new(0),
            backends: (0..MAX_BACKEND_IDS).map(|_| BackendCounters::default()).collect(),
            dump: FlowDump::default(),
        }
    }
}

impl WorkerStats {
    /// Count a drop.
    #[inline]
    pub fn drop(&self, r: Reason) {
        bump(&self.drops[r as usize], 1);
    }

    /// Counters of backend `id` (a dummy sink beyond the id space).
    #[inline]
    pub fn backend(&self, id: u32) -> &BackendCounters {
        let i = (id as usize).min(self.backends.len() - 1);
        &self.backends[i]
    }
}
