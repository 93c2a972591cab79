//! The fast path's two queues to and from the flow-sync thread
//! (`crate::sync`), one pair per worker. This file fixes the interface; the
//! worker side (pushing notes, taking synced flows, walking its table on
//! request) lives in `worker.rs`, the sync side in `crate::sync`.
//!
//! * `notes` (worker -> sync): a flow this worker created, or a change of one
//!   that matters to a peer (state established/closing, another server, the
//!   NAT mapping), or a copy made by a table walk (bulk transfer, refresh).
//!   Bounded, lock-free, allocation-free `push`; a full queue is counted in
//!   `notes_full` and the note is dropped — the worker never waits.
//! * `synced` (sync -> worker): flows received from peers, already resolved
//!   to this director's backend ids and checked (the server is a configured
//!   server of the flow's service). The worker takes at most a bounded number
//!   per batch and inserts them marked as synced.
//! * A walk: the sync thread bumps `walk_asked` (bulk transfer to a peer that
//!   asked, or the periodic refresh); the worker copies its live flows into
//!   `notes` as `NoteKind::Copy` a few buckets per batch (pausing, not
//!   dropping, while `notes` is full) and stores the request's number in
//!   `walk_done` when it has gone through the whole table. `walk_all` says
//!   which flows a walk copies: all of them (a bulk transfer: the peer has
//!   nothing yet), or only those with a packet since the previous walk
//!   began, plus every flow this director created (a refresh: a peer keeps
//!   alive only the flows that are alive somewhere, so two directors never
//!   keep each other's dead flows forever).
//! * Which worker's queue a synced flow goes to: [`worker_for`], the worker
//!   whose device sees that flow's frames.
//! * IPv6 flows travel in their own pair of queues (`notes6`, `synced6`,
//!   [`SyncKey`] picks the pair by key type): an IPv6 key is 37 bytes, not
//!   13, and the IPv4 queues keep their size and entry layout. One walk
//!   goes through both flow tables, IPv4 first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::fwd::flow::{FlowKey, FlowKey6, FlowState, Key};
use crate::fwd::table::BackendId;

/// Notes a worker may have queued before it counts `notes_full`.
pub const NOTES: usize = 65_536;
/// Synced flows waiting for one worker.
pub const SYNCED: usize = 65_536;
/// The same for IPv6 flows: an eighth, as the IPv6 flow table is an eighth
/// of the IPv4 one (a walk pauses while `notes6` is full; a bulk transfer
/// fills `synced6` no faster than the worker drains it, 256 per batch).
pub const NOTES6: usize = NOTES / 8;
pub const SYNCED6: usize = SYNCED / 8;
/// Synced flows a worker takes per batch (and per idle poll): bounded so a
/// bulk transfer delays the frames of one batch by tens of microseconds at
/// most, yet 65,536 queued flows go in within 256 polls.
pub const SYNCED_PER_BATCH: usize = 256;
/// Flow-table buckets (8 ways each) a walk copies after a batch with frames,
/// and after an idle poll (a 1M-flow table has 131,072 buckets).
pub const WALK_BUCKETS_BUSY: usize = 64;
pub const WALK_BUCKETS_IDLE: usize = 4096;

/// How frames are spread over the workers (the device kind the director
/// opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// AF_PACKET rings in a `PACKET_FANOUT_CBPF` group: the director's own
    /// [`crate::io::packet_ring::fanout_program`] picks the worker.
    Fanout,
    /// AF_XDP: one worker per RX queue, the queue chosen by the NIC's RSS
    /// (a hash with a key and an indirection table the director does not
    /// know in general).
    RxQueue,
}

/// The worker that sees the frames of flow `key` (client -> VIP, either
/// direction: the fanout hash is symmetric) when `workers` workers run
/// with `placement`; `None` when that cannot be known, and the flow must
/// go to every worker.
///
/// * One worker sees everything: `Some(0)` (NAT always runs one; a
///   single-queue veth under AF_XDP runs one).
/// * [`Placement::Fanout`]: the fanout program's hash of the 4-tuple modulo
///   `workers`, as the kernel computes it. Later fragments of a datagram
///   hash on the addresses alone and go to whichever worker that picks;
///   they follow their first fragment through that worker's fragment table
///   only, so a synced flow is placed for its unfragmented packets.
/// * [`Placement::RxQueue`] with several workers: `None`. The NIC's RSS
///   (Toeplitz with a device key, through an indirection table, on fields
///   the driver chooses) is not computable here in general; inserting the
///   flow into every worker costs memory, never correctness: a worker that
///   never sees the flow lets it expire.
///
/// # Panics
/// Never; `workers == 0` is treated as 1.
#[inline]
pub fn worker_for(key: &FlowKey, workers: usize, placement: Placement) -> Option<usize> {
    if workers <= 1 {
        return Some(0);
    }
    match placement {
        Placement::Fanout => {
            let h = crate::io::packet_ring::fanout_hash(key.src, key.dst, key.sport, key.dport);
            Some(h as usize % workers)
        }
        Placement::RxQueue => None,
    }
}

/// The IPv6 twin of [`worker_for`]: the fanout program hashes an IPv6
/// packet on its two addresses alone (ports and fragments aside), so the
/// worker depends on the client and the VIP only.
#[inline]
pub fn worker_for6(key: &FlowKey6, workers: usize, placement: Placement) -> Option<usize> {
    if workers <= 1 {
        return Some(0);
    }
    match placement {
        Placement::Fanout => {
            let h = crate::io::packet_ring::fanout_hash6(key.src, key.dst);
            Some(h as usize % workers)
        }
        Placement::RxQueue => None,
    }
}

/// A flow key the sync carries: which of a link's queues hold its notes
/// and synced flows, and which worker sees its frames.
pub trait SyncKey: Key {
    fn notes(link: &WorkerLink) -> &ArrayQueue<Note<Self>>;
    fn synced(link: &WorkerLink) -> &ArrayQueue<Synced<Self>>;
    fn worker(&self, workers: usize, placement: Placement) -> Option<usize>;
}

impl SyncKey for FlowKey {
    #[inline]
    fn notes(link: &WorkerLink) -> &ArrayQueue<Note<Self>> {
        &link.notes
    }
    #[inline]
    fn synced(link: &WorkerLink) -> &ArrayQueue<Synced<Self>> {
        &link.synced
    }
    #[inline]
    fn worker(&self, workers: usize, placement: Placement) -> Option<usize> {
        worker_for(self, workers, placement)
    }
}

impl SyncKey for FlowKey6 {
    #[inline]
    fn notes(link: &WorkerLink) -> &ArrayQueue<Note<Self>> {
        &link.notes6
    }
    #[inline]
    fn synced(link: &WorkerLink) -> &ArrayQueue<Synced<Self>> {
        &link.synced6
    }
    #[inline]
    fn worker(&self, workers: usize, placement: Placement) -> Option<usize> {
        worker_for6(self, workers, placement)
    }
}

/// Why a worker hands a flow to the sync thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// The worker created the flow (its first packet).
    New,
    /// State, server or NAT mapping changed.
    Change,
    /// A copy made by a table walk (bulk transfer or periodic refresh).
    Copy,
}

/// Worker -> sync: one flow, in this director's terms (the sync thread
/// translates `backend` into the server's address with the published table).
#[derive(Clone, Copy, Debug)]
pub struct Note<K = FlowKey> {
    pub kind: NoteKind,
    pub key: K,
    pub backend: BackendId,
    pub state: FlowState,
    /// Milliseconds since the flow's last packet (0 for New/Change).
    pub idle_ms: u32,
    /// Who created the flow: 0 = this director, else 1 + the index of the
    /// peer (in the config's `sync.peers`) it was synced from.
    pub origin: u8,
}

/// Sync -> worker: a flow received from a peer, checked and resolved.
#[derive(Clone, Copy, Debug)]
pub struct Synced<K = FlowKey> {
    pub key: K,
    pub backend: BackendId,
    pub state: FlowState,
    /// Milliseconds since the flow's last packet on the sender.
    pub idle_ms: u32,
    /// 1 + the index of the peer it came from (never 0).
    pub origin: u8,
}

/// One worker's pair of queues and its walk handshake.
pub struct WorkerLink {
    pub notes: ArrayQueue<Note>,
    pub synced: ArrayQueue<Synced>,
    /// The IPv6 flows' queues (same roles, same counters).
    pub notes6: ArrayQueue<Note<FlowKey6>>,
    pub synced6: ArrayQueue<Synced<FlowKey6>>,
    /// Notes dropped because `notes` or `notes6` was full (written by the
    /// worker; a walk pauses instead, its copies are never dropped).
    pub notes_full: AtomicU64,
    /// Synced flows dropped because `synced` or `synced6` was full
    /// (written by the sync thread).
    pub synced_full: AtomicU64,
    /// Walk requests: the sync thread increments `walk_asked`; the worker
    /// stores it into `walk_done` when its walk is complete.
    pub walk_asked: AtomicU64,
    pub walk_done: AtomicU64,
    /// Read by the worker when it starts a walk: true = copy every live
    /// flow (bulk transfer), false = a refresh (only flows with a packet
    /// since the previous walk began, and flows this director created).
    /// The sync thread stores true before bumping `walk_asked` for a bulk
    /// transfer (and false, if at all, only once no bulk is pending); the
    /// worker takes it (`swap(false)`) when it starts a walk, so a bulk
    /// asked while a refresh runs makes the next walk a full one, and one
    /// bulk walk answers every request made before it started.
    pub walk_all: AtomicBool,
    /// Written by the worker: synced flows it inserted, or applied to a
    /// synced flow it had (`synced_applied`); synced flows it did not take
    /// because it holds the flow as its own (`synced_kept_local`: this
    /// director created it and sees its frames; only the last-packet time
    /// is taken when later), or because they were already expired on
    /// arrival or name a server id the current table does not know
    /// (`synced_stale`).
    pub synced_applied: AtomicU64,
    pub synced_kept_local: AtomicU64,
    pub synced_stale: AtomicU64,
    /// Written by the worker: flows copied into `notes` by walks.
    pub walk_copied: AtomicU64,
}

impl WorkerLink {
    pub fn new() -> Self {
        WorkerLink {
            notes: ArrayQueue::new(NOTES),
            synced: ArrayQueue::new(SYNCED),
            notes6: ArrayQueue::new(NOTES6),
            synced6: ArrayQueue::new(SYNCED6),
            notes_full: AtomicU64::new(0),
            synced_full: AtomicU64::new(0),
            walk_asked: AtomicU64::new(0),
            walk_done: AtomicU64::new(0),
            walk_all: AtomicBool::new(false),
            synced_applied: AtomicU64::new(0),
            synced_kept_local: AtomicU64::new(0),
            synced_stale: AtomicU64::new(0),
            walk_copied: AtomicU64::new(0),
        }
    }

    /// Sync thread: ask for a walk (`all`: a bulk transfer, else a
    /// refresh). The copies arrive in `notes` as [`NoteKind::Copy`]; the
    /// walk is complete when [`WorkerLink::walk_complete`] says so for the
    /// returned number.
    pub fn ask_walk(&self, all: bool) -> u64 {
        if all {
            self.walk_all.store(true, Ordering::Release);
        }
        self.walk_asked.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Sync thread: has the walk `asked` (from [`WorkerLink::ask_walk`])
    /// gone through the whole table?
    pub fn walk_complete(&self, asked: u64) -> bool {
        self.walk_done.load(Ordering::Acquire) >= asked
    }
}

/// Every worker's link and how frames are spread over them: what the sync
/// thread holds.
pub struct Links {
    pub workers: Vec<Arc<WorkerLink>>,
    pub placement: Placement,
}

impl Links {
    /// `workers` fresh links (at least one).
    pub fn new(workers: usize, placement: Placement) -> Self {
        Links {
            workers: (0..workers.max(1)).map(|_| Arc::new(WorkerLink::new())).collect(),
            placement,
        }
    }

    /// Hand a synced flow to the worker that sees its frames, or to every
    /// worker when that cannot be known ([`worker_for`]). A full queue
    /// drops it there and counts `synced_full`. Returns how many queues
    /// took it.
    pub fn deliver<K: SyncKey>(&self, s: Synced<K>) -> usize {
        let put = |l: &WorkerLink| {
            let ok = K::synced(l).push(s).is_ok();
            if !ok {
                l.synced_full.fetch_add(1, Ordering::Relaxed);
            }
            usize::from(ok)
        };
        match s.key.worker(self.workers.len(), self.placement) {
            Some(i) => put(&self.workers[i]),
            None => self.workers.iter().map(|l| put(l)).sum(),
        }
    }
}

impl Default for WorkerLink {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients of one /16 on ephemeral ports: what the fanout spreads.
    fn key(i: u32) -> FlowKey {
        let h = i.wrapping_mul(0x9e37_79b1);
        FlowKey {
            src: 0xc612_0000 | (h >> 16),
            dst: 0xc612_6401,
            sport: 32768 | (h as u16 >> 1),
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn one_worker_sees_everything() {
        for p in [Placement::Fanout, Placement::RxQueue] {
            assert_eq!(worker_for(&key(1), 1, p), Some(0));
            assert_eq!(worker_for(&key(1), 0, p), Some(0));
        }
    }

    #[test]
    fn fanout_spreads_and_rss_is_unknown() {
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            let w = worker_for(&key(i), 4, Placement::Fanout).unwrap();
            let h = crate::io::packet_ring::fanout_hash(key(i).src, key(i).dst, key(i).sport, 80);
            assert_eq!(w, h as usize % 4);
            seen[w] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
        assert_eq!(worker_for(&key(1), 4, Placement::RxQueue), None);
    }

    #[test]
    fn deliver_reaches_the_worker_that_sees_the_flow_or_all() {
        let s = |i| Synced {
            key: key(i),
            backend: 1,
            state: FlowState::TcpEstablished,
            idle_ms: 0,
            origin: 1,
        };
        let fanout = Links::new(4, Placement::Fanout);
        for i in 0..100 {
            assert_eq!(fanout.deliver(s(i)), 1);
            let w = worker_for(&key(i), 4, Placement::Fanout).unwrap();
            let got = fanout.workers[w].synced.pop().expect("queued at its worker");
            assert_eq!(got.key, key(i));
            assert!(fanout.workers.iter().all(|l| l.synced.is_empty()));
        }
        let rss = Links::new(3, Placement::RxQueue);
        assert_eq!(rss.deliver(s(7)), 3);
        assert!(rss.workers.iter().all(|l| l.synced.len() == 1));
        // A full queue drops and counts.
        let one = Links::new(1, Placement::RxQueue);
        while one.workers[0].synced.push(s(1)).is_ok() {}
        assert_eq!(one.deliver(s(2)), 0);
        assert_eq!(one.workers[0].synced_full.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_bulk_request_outlasts_a_refresh_asked_after_it() {
        let l = WorkerLink::new();
        let a = l.ask_walk(true);
        let b = l.ask_walk(false);
        assert!(b > a && !l.walk_complete(a));
        assert!(l.walk_all.load(Ordering::Acquire), "a refresh does not clear it");
        l.walk_done.store(b, Ordering::Release);
        assert!(l.walk_complete(a) && l.walk_complete(b));
    }
}
