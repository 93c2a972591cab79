//! The worker loop (fast path): one per ring/queue, each with its own flow
//! table and counters. It loads the published table once per batch.
//!
//! With flow sync ([`Worker::attach_sync`]) it also talks to the sync thread
//! through its [`WorkerLink`] (see `synclink`): a note for every flow it
//! creates and every change a peer must know (state established or
//! closing, another server, a new connection on a reused tuple), pushed
//! without waiting or allocating; before each batch it takes up to
//! [`SYNCED_PER_BATCH`] flows synced from peers; after each batch it goes
//! on with a table walk the sync thread asked for. Without a link each of
//! these is one untaken branch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::classify::{
    classify6_packet, classify_packet, is_ipv6, Classified, Classified6, Kind, Kind6, Reason,
};
use super::icmp6::{self, Icmp6, What6};
use super::rewrite::{self, Macs, Nat, Nat6, NatSide, Payload, Sent, ToServer, TunOuter6};
use super::stats::{bump, bump_i, WorkerStats};
use super::synclink::{
    Note, NoteKind, SyncKey, Synced, WorkerLink, SYNCED_PER_BATCH, WALK_BUCKETS_BUSY, WALK_BUCKETS_IDLE,
};
use crate::fwd::flow::{FlowEntry, FlowKey, FlowKey6, FlowState, FlowTable, Key, WAYS};
use crate::fwd::frag::{FragKey, FragKey6, FragTable};
use crate::fwd::table::{BackendFwd, BackendId, BackendState, FwdTable, Mode, ServiceFwd};
use crate::io::{Action, Device, FastFlow, Frame, RxMeta, TxArena};
use crate::wire::tcp;

/// Frames per batch.
pub const BATCH: usize = 64;
/// Flow-table buckets the incremental expiry sweep visits after a batch
/// that had frames (kept small: it is per-frame cost) and after an empty one
/// (idle time is free; a 1M-flow table is 131072 buckets).
pub const SWEEP_BUCKETS_BUSY: usize = 16;
pub const SWEEP_BUCKETS_IDLE: usize = 1024;
/// How long [`Worker::run`] blocks waiting for frames: [`WAIT_MS`] while
/// frames came within the last [`QUIET_AFTER_MS`] or the worker has work
/// asked of it (a flow dump, a sync walk, synced flows to take), else
/// [`QUIET_WAIT_MS`]. An idle director wakes only to sweep and beat its
/// heartbeat; the XDP fast path leaves a worker idle under load too, and
/// every wake-up costs CPU (issue 14: CPU per frame at an equal load).
/// [`QUIET_WAIT_MS`] stays well inside the watchdog's 1 s minimum stall
/// (`control::watchdog`), the 2 s a flow dump or trace waits for its
/// answer, and a stop's latency.
pub const WAIT_MS: u32 = 100;
pub const QUIET_WAIT_MS: u32 = 250;
pub const QUIET_AFTER_MS: u64 = 1000;
/// A SYN retransmitted this long after the first moves to the next server.
pub const SYN_SECOND_CHANCE_MS: u32 = 500;
/// Most SYN second chances one flow takes (and servers its walk remembers);
/// fewer when its service has fewer servers. As many as a flow entry
/// records.
const MAX_SECOND_CHANCES: u8 = crate::fwd::flow::MAX_SECOND_CHANCES;
/// Fragment table size and lifetime (per worker).
const FRAG_SLOTS: usize = 4096;
const FRAG_TIMEOUT_MS: u64 = 30_000;
/// The IPv6 flow table holds this fraction of the IPv4 capacity (at least
/// [`MIN_FLOWS6`]): its entries are 60 bytes, not 32, and IPv6 is the
/// smaller share of traffic here; 1M IPv4 flows bring 131072 IPv6 ones
/// (~8.5 MB), keeping the 1M-flow budget under 128 MB.
const FLOWS6_DIVISOR: usize = 8;
const MIN_FLOWS6: usize = 1024;
/// A DR flow is handed to the device's fast path (XDP) once it is this old
/// and established (TCP) or sending (UDP): a short connection then costs no
/// install and remove system calls, a long one gets its frames forwarded by
/// XDP from its first fraction of a second on.
pub const FAST_PATH_AFTER_MS: u32 = 100;
/// Most installed flows one sweep step keeps from expiring (those still
/// active in the fast path); any more expire, and are taken from it too.
const FAST_KEEP: usize = 64;
/// A batch of fewer frames than this drained the ring, so the worker is
/// mostly waiting: a flow-sync walk and an `ulvsadm flows` copy then go on
/// at their idle pace. With the XDP fast path a worker may see only a
/// trickle of frames (handshakes, frames XDP leaves to it) and almost
/// every poll has one or two; counted as busy, a bulk walk of a 1M-flow
/// table went 64 buckets per poll, ~20 s at ~100 polls a second, and the
/// peer asking for it took over before it was complete (ha-failback with
/// the fast path on); `ulvsadm flows` missed its deadline the same way
/// (pair-failover).
const QUIET_BATCH: usize = BATCH / 8;
/// A refresh walk asks the fast path for the last-seen time of a flow the
/// worker itself has not seen for this long (one map lookup each): a flow
/// the worker saw within the last second is refreshed with its own time,
/// which is at most that much older than the fast path's.
const FAST_ASK_AFTER_MS: u32 = 1000;

/// State shared between the slow path and every worker.
pub struct Shared {
    /// The published forwarding table.
    pub table: ArcSwap<FwdTable>,
    /// Set by the slow path to stop the workers.
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new(table: FwdTable) -> Self {
        Shared {
            table: ArcSwap::from_pointee(table),
            stop: AtomicBool::new(false),
        }
    }
}

/// One worker: a device, a flow table and counters.
pub struct Worker<D: Device> {
    dev: D,
    flows: FlowTable,
    /// IPv6 flows: the same table design over [`FlowKey6`], so the IPv4
    /// table and its per-frame code are untouched.
    flows6: FlowTable<FlowKey6>,
    frags: FragTable,
    /// IPv6 fragments (same design, keyed by the fragment header's
    /// identification).
    frags6: FragTable<FragKey6>,
    /// Per backend id: when a flow to it last completed a handshake (SYN
    /// state -> established); evidence that it is alive. Never swept, so on
    /// the worker's non-wrapping clock.
    last_est: Box<[u64]>,
    stats: Arc<WorkerStats>,
    shared: Arc<Shared>,
    epoch: Instant,
    ip_id: u16,
    /// Flow sync, when configured.
    sync: Option<SyncSide>,
    /// The device's fast path, when it has one.
    fast: Option<Box<FastBatch>>,
    /// When the last poll ran and when one last had frames (worker clock,
    /// ms): what the idle sweep and the wait depend on.
    last_poll_ms: u64,
    last_frames_ms: u64,
}

/// What a batch hands to the device's fast path afterwards, and the flows
/// a sweep keeps because the fast path still forwards them. Fixed arrays,
/// allocated once: nothing per frame.
struct FastBatch {
    install: [FastFlow; BATCH],
    n_install: usize,
    remove: [FastFlow; BATCH],
    n_remove: usize,
    keep: [Option<(FlowEntry, u32)>; FAST_KEEP],
    n_keep: usize,
}

/// What the fast path should do with the flow of the frame at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastHint {
    None,
    Install,
    Remove,
}

impl FastBatch {
    fn new() -> Box<Self> {
        Box::new(FastBatch {
            install: [FastFlow::default(); BATCH],
            n_install: 0,
            remove: [FastFlow::default(); BATCH],
            n_remove: 0,
            keep: [None; FAST_KEEP],
            n_keep: 0,
        })
    }
}

/// The fast-path identity of flow `key` (MACs left zero).
#[inline]
fn fast_flow(key: &FlowKey) -> FastFlow {
    FastFlow {
        src: key.src,
        dst: key.dst,
        sport: key.sport,
        dport: key.dport,
        proto: key.proto,
        ..FastFlow::default()
    }
}

/// Whether flow `e` may be in the fast path: TCP established or UDP, old
/// enough, to a DR server.
#[inline]
fn fast_candidate(e: &FlowEntry, table: &FwdTable) -> bool {
    matches!(e.state, FlowState::TcpEstablished | FlowState::Udp)
        && e.last_ms.wrapping_sub(e.first_ms) >= FAST_PATH_AFTER_MS
        && table.backend(e.backend).mode == Mode::Dr
}

/// The fast-path hint for a frame (flags `flags`) of flow `e` (`tick`: now).
#[inline]
fn fast_hint(e: &FlowEntry, flags: u8, tick: u32) -> FastHint {
    let old = tick.wrapping_sub(e.first_ms) >= FAST_PATH_AFTER_MS;
    if !old {
        return FastHint::None;
    }
    match e.key.proto {
        17 => FastHint::Install,
        6 if flags & (tcp::FIN | tcp::RST) != 0 => FastHint::Remove,
        6 if e.state == FlowState::TcpEstablished && flags & tcp::SYN == 0 => FastHint::Install,
        _ => FastHint::None,
    }
}

/// The worker's side of flow sync.
struct SyncSide {
    link: Arc<WorkerLink>,
    /// The walk under way, if any.
    walk: Option<Walk>,
    /// When the last walk began (flow-table clock): a refresh copies the
    /// flows with a packet since. `None` before the first walk, whose
    /// refresh copies every flow.
    last_walk_began: Option<u32>,
}

/// A table walk under way.
#[derive(Clone, Copy, Debug)]
struct Walk {
    /// The request it answers (stored into `walk_done` at the end).
    asked: u64,
    /// Next bucket of the IPv4 table, then of the IPv6 table (the walk
    /// goes through both, in that order).
    cursor: usize,
    cursor6: usize,
    /// Every flow (bulk), or a refresh.
    all: bool,
    /// Refresh: the previous walk's start (copy flows with a packet since).
    since: Option<u32>,
}

/// Milliseconds since the worker started: does not wrap in the lifetime of
/// a process. The flow table takes its low 32 bits (it sweeps every entry
/// well within a wrap); timestamps nothing sweeps keep all 64.
#[inline]
fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl<D: Device> Worker<D> {
    /// A worker with a flow table of `flow_capacity` entries.
    pub fn new(dev: D, flow_capacity: usize, shared: Arc<Shared>, stats: Arc<WorkerStats>) -> Self {
        let timeouts = shared.table.load().timeouts;
        let flows = FlowTable::new(flow_capacity, timeouts);
        stats
            .flow_capacity
            .store(flows.capacity() as u64, Ordering::Relaxed);
        let flows6 = FlowTable::new((flow_capacity / FLOWS6_DIVISOR).max(MIN_FLOWS6), timeouts);
        Worker {
            dev,
            flows,
            flows6,
            frags: FragTable::new(FRAG_SLOTS, FRAG_TIMEOUT_MS),
            frags6: FragTable::new(FRAG_SLOTS, FRAG_TIMEOUT_MS),
            last_est: vec![0u64; crate::fwd::table::MAX_BACKEND_IDS].into_boxed_slice(),
            stats,
            shared,
            epoch: Instant::now(),
            ip_id: 1,
            sync: None,
            fast: None,
            last_poll_ms: 0,
            last_frames_ms: 0,
        }
        .with_fast_path()
    }

    /// Take the device's fast path, if it has one.
    fn with_fast_path(mut self) -> Self {
        if self.dev.fast_path() {
            self.fast = Some(FastBatch::new());
        }
        self
    }

    /// Take part in flow sync through `link` (before the worker runs).
    pub fn attach_sync(&mut self, link: Arc<WorkerLink>) {
        self.sync = Some(SyncSide {
            link,
            walk: None,
            last_walk_began: None,
        });
    }

    /// The counters this worker writes.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The device (tests inspect what was sent).
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Run until the slow path sets `stop`.
    ///
    /// # Errors
    /// A device-level failure (the interface went away).
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut last_ring_check = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let timeout = wait_ms(now_ms(self.epoch), self.last_frames_ms, self.has_work());
            self.dev.wait(timeout as i32)?;
            self.poll_once(now_ms(self.epoch))?;
            bump(&self.stats.heartbeat, 1);
            if last_ring_check.elapsed().as_millis() >= 500 {
                last_ring_check = Instant::now();
                let d = self.dev.ring_drops();
                bump(&self.stats.ring_drops, d);
            }
        }
        Ok(())
    }

    /// Process one batch at time `now` (milliseconds on the worker's clock,
    /// which must not go backwards). Returns the number of frames received.
    ///
    /// # Errors
    /// A device-level failure.
    pub fn poll_once(&mut self, now: u64) -> std::io::Result<usize> {
        let table = self.shared.table.load();
        if self.flows.timeouts() != table.timeouts {
            self.flows.set_timeouts(table.timeouts);
        }
        let stats = &*self.stats;
        if stats.generation.load(Ordering::Relaxed) != table.generation {
            stats.generation.store(table.generation, Ordering::Relaxed);
        }
        // The IPv6 flow table costs nothing without IPv6 services (or
        // IPv6 flows left from before a reload removed them).
        let v6 = !table.services6.is_empty() || !self.flows6.is_empty();
        if v6 && self.flows6.timeouts() != table.timeouts {
            self.flows6.set_timeouts(table.timeouts);
        }
        let flows = &mut self.flows;
        if let Some(sync) = &self.sync {
            take_synced(&sync.link, flows, &table, stats, now as u32);
            take_synced(&sync.link, &mut self.flows6, &table, stats, now as u32);
        }
        // First pass: start loading the flow-table lines of every frame of
        // the batch, so their cache misses overlap rather than each frame
        // waiting for its own (a 1M-flow table is 35 MB, far beyond the
        // cache). The second pass below handles the frames.
        self.dev
            .peek_batch(BATCH, |d, meta| prefetch_flow(d, meta, &table, flows));
        let mut cx = Ctx {
            table: &table,
            flows,
            flows6: &mut self.flows6,
            frags: &mut self.frags,
            frags6: &mut self.frags6,
            last_est: &mut self.last_est,
            stats,
            now,
            tick: now as u32,
            ip_id: &mut self.ip_id,
            sent: 0,
            link: self.sync.as_ref().map(|s| &*s.link),
            fast: self.fast.as_deref_mut(),
            fast_hint: FastHint::None,
        };
        let st = self
            .dev
            .process_batch(BATCH, |f, arena| handle(f, arena, &mut cx))?;
        // Frames are counted as forwarded once the device said how many it
        // could not send, never before: a counter that went up and then
        // down again would read as a reset to whoever scraped in between.
        let sent = cx.sent;
        bump(&stats.forwarded, sent.saturating_sub(st.tx_failed as u64));
        if st.tx_failed > 0 {
            bump(&stats.drops[Reason::TxError as usize], st.tx_failed as u64);
        }
        let flows = &mut self.flows;
        let sweep = if st.received == 0 {
            idle_sweep_buckets(now.saturating_sub(self.last_poll_ms))
        } else {
            self.last_frames_ms = now;
            SWEEP_BUCKETS_BUSY
        };
        self.last_poll_ms = now;
        if let Some(fb) = &mut self.fast {
            // After the batch's frames went out, so an install never
            // overtakes the frame that asked for it.
            if fb.n_remove > 0 {
                self.dev.fast_remove(&fb.remove[..fb.n_remove]);
                fb.n_remove = 0;
            }
            if fb.n_install > 0 {
                self.dev.fast_install(&fb.install[..fb.n_install]);
                fb.n_install = 0;
            }
            if !flows.is_empty() {
                sweep_keeping_fast(flows, &mut self.dev, fb, &table, stats, now as u32, sweep);
            }
        } else if !flows.is_empty() {
            // An empty table has nothing to expire: the walk over its
            // (131,072 for 1M flows) empty buckets is skipped.
            flows.sweep(now as u32, sweep, &mut |e| on_removed(stats, e));
        }
        if v6 && !self.flows6.is_empty() {
            self.flows6
                .sweep(now as u32, sweep, &mut |e| on_removed(stats, e));
        }
        // A short batch drained the ring: the worker has time (see
        // `QUIET_BATCH`) for the flow dump and the sync walk.
        let quiet = st.received < QUIET_BATCH;
        stats.dump.serve(flows, &self.flows6, now as u32, quiet);
        if let Some(sync) = &mut self.sync {
            // With a fast path the walk asks it how long ago it forwarded
            // the flows the worker has not seen lately.
            let fast = self.fast.is_some().then_some(&mut self.dev);
            sync.walk_step(flows, &self.flows6, &table, fast, now as u32, quiet);
        }
        stats
            .flows
            .store((flows.len() + self.flows6.len()) as u64, Ordering::Relaxed);
        stats.evictions.store(flows.evictions(), Ordering::Relaxed);
        stats.expirations.store(flows.expirations(), Ordering::Relaxed);
        let ev = flows.evictions_by_kind();
        stats.evictions_expired.store(ev.expired, Ordering::Relaxed);
        stats.evictions_embryonic.store(ev.embryonic, Ordering::Relaxed);
        stats
            .evictions_established
            .store(ev.established, Ordering::Relaxed);
        Ok(st.received)
    }

    /// Whether something asked of the worker waits for its next poll: a
    /// flow dump, a sync walk under way or asked for, synced flows to take.
    fn has_work(&self) -> bool {
        !self.stats.dump.answered()
            || self.sync.as_ref().is_some_and(|s| {
                s.walk.is_some()
                    || s.link.walk_asked.load(Ordering::Relaxed) != s.link.walk_done.load(Ordering::Relaxed)
                    || !s.link.synced.is_empty()
                    || !s.link.synced6.is_empty()
            })
    }

    /// Number of live flows (both families).
    pub fn flow_count(&self) -> usize {
        self.flows.len() + self.flows6.len()
    }
}

/// How long to block for frames at `now`, frames last seen at
/// `last_frames` (see [`WAIT_MS`]).
#[inline]
fn wait_ms(now: u64, last_frames: u64, has_work: bool) -> u32 {
    if has_work || now.saturating_sub(last_frames) < QUIET_AFTER_MS {
        WAIT_MS
    } else {
        QUIET_WAIT_MS
    }
}

/// Buckets an idle poll sweeps `elapsed` ms after the previous poll:
/// [`SWEEP_BUCKETS_IDLE`] per [`WAIT_MS`], so that the table is swept at
/// the same pace in buckets per second whether the worker wakes every
/// [`WAIT_MS`] or every [`QUIET_WAIT_MS`] (flows expire as late as
/// before, not later), and never less per poll than before; bounded, so
/// that a worker that was not scheduled for a long time does not stall
/// on one long sweep.
#[inline]
fn idle_sweep_buckets(elapsed: u64) -> usize {
    let per = elapsed.clamp(u64::from(WAIT_MS), u64::from(QUIET_WAIT_MS));
    SWEEP_BUCKETS_IDLE * per as usize / WAIT_MS as usize
}

/// A sweep step that asks the device before expiring a flow it may
/// forward by itself: one the fast path forwarded a frame of within the
/// flow's timeout stays (its gauges untouched, its last packet time moved
/// to the fast path's), so that a flow busy in XDP keeps its server, its
/// place in flow sync and its gauges; one it did not is expired here and
/// forgotten there.
#[cold]
#[inline(never)]
fn sweep_keeping_fast<D: Device>(
    flows: &mut FlowTable,
    dev: &mut D,
    fb: &mut FastBatch,
    table: &FwdTable,
    stats: &WorkerStats,
    tick: u32,
    buckets: usize,
) {
    let timeouts = flows.timeouts();
    fb.n_keep = 0;
    let (keep, n_keep) = (&mut fb.keep, &mut fb.n_keep);
    flows.sweep(tick, buckets, &mut |e| {
        if *n_keep < FAST_KEEP && fast_candidate(e, table) {
            let timeout = if e.state == FlowState::Udp {
                timeouts.udp_ms
            } else {
                timeouts.tcp_ms
            };
            if let Some(idle) = dev.fast_keep(&fast_flow(&e.key), timeout) {
                keep[*n_keep] = Some((*e, idle));
                *n_keep += 1;
                return;
            }
        } else if fast_candidate(e, table) {
            // No room to keep it: the fast path must not go on without it.
            dev.fast_remove(&[fast_flow(&e.key)]);
        }
        on_removed(stats, e);
    });
    for &(old, idle) in fb.keep[..fb.n_keep].iter().flatten() {
        let e = flows.insert(old.key, old.state, old.backend, tick, &mut |e| {
            on_removed(stats, e)
        });
        e.first_ms = old.first_ms;
        e.isn = old.isn;
        e.set_origin(old.origin());
        e.set_second_chances(old.second_chances());
        e.last_ms = tick.wrapping_sub(idle);
    }
}

/// Hand a note to the sync thread; a full queue drops it and counts.
#[inline]
fn note<K: SyncKey>(link: &WorkerLink, kind: NoteKind, e: &FlowEntry<K>, idle_ms: u32) {
    let n = Note {
        kind,
        key: e.key,
        backend: e.backend,
        state: e.state,
        idle_ms,
        origin: e.origin(),
    };
    if K::notes(link).push(n).is_err() {
        bump(&link.notes_full, 1);
    }
}

/// What taking a synced flow needs of its address family.
trait SyncFamily: SyncKey {
    /// Whether server `id` has an address of this family in `table` (a
    /// reload may have removed it since the sync thread resolved it).
    fn server_known(table: &FwdTable, id: BackendId) -> bool;
    /// The reply-direction key of a NAT flow `key` to server `id`.
    fn nat_reply(table: &FwdTable, id: BackendId, key: &Self) -> Self;
}

impl SyncFamily for FlowKey {
    #[inline]
    fn server_known(table: &FwdTable, id: BackendId) -> bool {
        table.backend(id).addr != 0
    }
    #[inline]
    fn nat_reply(table: &FwdTable, id: BackendId, key: &Self) -> Self {
        nat_reply_key(table.backend(id), key)
    }
}

impl SyncFamily for FlowKey6 {
    #[inline]
    fn server_known(table: &FwdTable, id: BackendId) -> bool {
        table.backend6(id).addr != 0
    }
    /// As `flow6_packet` links it.
    #[inline]
    fn nat_reply(table: &FwdTable, id: BackendId, key: &Self) -> Self {
        let port = table.backend(id).port;
        FlowKey6 {
            src: table.backend6(id).addr,
            dst: key.src,
            sport: if port != 0 { port } else { key.dport },
            dport: key.sport,
            proto: key.proto,
        }
    }
}

/// Whether `a` is later than `b` on the flow table's wrapping clock, seen
/// from `now` (both at most 2^31 ms before it).
#[inline]
fn later(a: u32, b: u32, now: u32) -> bool {
    now.wrapping_sub(a) < now.wrapping_sub(b)
}

/// The reply-direction key of a NAT flow `key` to server `b`.
#[inline]
fn nat_reply_key(b: &BackendFwd, key: &FlowKey) -> FlowKey {
    let rport = if b.port != 0 { b.port } else { key.dport };
    FlowKey {
        src: b.addr,
        dst: key.src,
        sport: rport,
        dport: key.sport,
        proto: key.proto,
    }
}

/// Take up to [`SYNCED_PER_BATCH`] flows synced from peers (of one
/// family: called once per flow table).
#[inline]
fn take_synced<K: SyncFamily>(
    link: &WorkerLink,
    flows: &mut FlowTable<K>,
    table: &FwdTable,
    stats: &WorkerStats,
    tick: u32,
) {
    if K::synced(link).is_empty() {
        return;
    }
    take_synced_cold(link, flows, table, stats, tick);
}

#[cold]
#[inline(never)]
fn take_synced_cold<K: SyncFamily>(
    link: &WorkerLink,
    flows: &mut FlowTable<K>,
    table: &FwdTable,
    stats: &WorkerStats,
    tick: u32,
) {
    for _ in 0..SYNCED_PER_BATCH {
        let Some(s) = K::synced(link).pop() else {
            break;
        };
        let counter = match apply_synced(&s, flows, table, stats, tick) {
            Applied::Yes => &link.synced_applied,
            Applied::KeptLocal => &link.synced_kept_local,
            Applied::Stale => &link.synced_stale,
        };
        bump(counter, 1);
    }
}

/// What became of one synced flow.
enum Applied {
    Yes,
    KeptLocal,
    Stale,
}

/// Insert a flow synced from a peer, or update the synced flow of that key
/// this worker has. A flow this director created stays as it is (this
/// director sees its frames and decides its server and state); it only
/// takes a later last-packet time, so a flow both directors forward lives
/// as long as either sees it. The server's gauges move as for a local flow;
/// a NAT flow gets its reply key, so the server's replies are translated
/// after a failover.
fn apply_synced<K: SyncFamily>(
    s: &Synced<K>,
    flows: &mut FlowTable<K>,
    table: &FwdTable,
    stats: &WorkerStats,
    tick: u32,
) -> Applied {
    let timeout = flows.timeouts().of(s.state);
    let b = table.backend(s.backend);
    // Dead on arrival (idle past its timeout, or a state that is no flow),
    // or a server id the table has no address for (a reload removed it
    // between the sync thread's check and now).
    if s.state == FlowState::Empty || s.idle_ms > timeout || !K::server_known(table, s.backend) {
        return Applied::Stale;
    }
    let last = tick.wrapping_sub(s.idle_ms);
    let removed = &mut |e: &FlowEntry<K>| on_removed(stats, e);
    match flows.get(&s.key, tick, removed) {
        Some(e) if e.origin() == 0 => {
            if later(last, e.last_ms, tick) {
                e.last_ms = last;
            }
            return Applied::KeptLocal;
        }
        Some(e) => {
            let (old, was_active) = (e.backend, is_active(e.state));
            if e.backend != s.backend {
                e.set_second_chances(0);
            }
            e.backend = s.backend;
            e.state = s.state;
            e.set_origin(s.origin);
            if later(last, e.last_ms, tick) {
                e.last_ms = last;
            }
            move_gauges(stats, old, was_active, s.backend, is_active(s.state));
        }
        None => {
            let e = flows.insert(s.key, s.state, s.backend, tick, removed);
            e.last_ms = last;
            e.first_ms = last;
            e.set_origin(s.origin);
            let c = stats.backend(s.backend);
            bump_i(
                if is_active(s.state) {
                    &c.active
                } else {
                    &c.inactive
                },
                1,
            );
        }
    }
    if b.mode == Mode::Nat {
        flows.set_reply(&s.key, K::nat_reply(table, s.backend, &s.key), tick, removed);
    }
    Applied::Yes
}

impl SyncSide {
    /// After a batch: start a walk the sync thread asked for, or go on
    /// with the one under way.
    #[inline]
    fn walk_step<D: Device>(
        &mut self,
        flows: &FlowTable,
        flows6: &FlowTable<FlowKey6>,
        table: &FwdTable,
        fast: Option<&mut D>,
        tick: u32,
        idle: bool,
    ) {
        if self.walk.is_none() {
            let asked = self.link.walk_asked.load(Ordering::Acquire);
            if asked == self.link.walk_done.load(Ordering::Relaxed) {
                return;
            }
            self.walk = Some(Walk {
                asked,
                cursor: 0,
                cursor6: 0,
                all: self.link.walk_all.swap(false, Ordering::AcqRel),
                since: self.last_walk_began,
            });
            self.last_walk_began = Some(tick);
        }
        self.walk_cold(flows, flows6, table, fast, tick, idle);
    }

    /// Copy the next buckets of the walk into `notes`: only while a whole
    /// bucket's flows fit (the worker is the only producer, so the room it
    /// sees can only grow), so a full queue pauses the walk and no flow is
    /// copied twice or lost.
    ///
    /// `fast`: the device, when it forwards flows by itself. A flow whose
    /// frames all take the fast path is not seen by the worker, so its
    /// entry's last packet time stays at the install; the walk then takes
    /// the fast path's time instead (for the refresh's choice and the idle
    /// time the copy carries), so the peers' copies live as long as the
    /// flow does, not until the worker's stale time runs out.
    #[cold]
    #[inline(never)]
    fn walk_cold<D: Device>(
        &mut self,
        flows: &FlowTable,
        flows6: &FlowTable<FlowKey6>,
        table: &FwdTable,
        mut fast: Option<&mut D>,
        tick: u32,
        idle: bool,
    ) {
        let Some(w) = &mut self.walk else {
            return;
        };
        let link = &*self.link;
        let mut budget = if idle {
            WALK_BUCKETS_IDLE
        } else {
            WALK_BUCKETS_BUSY
        };
        let mut copied = 0u64;
        let (all, since) = (w.all, w.since);
        let mut fast_idle = |e: &FlowEntry| match fast.as_deref_mut() {
            Some(dev) if tick.wrapping_sub(e.last_ms) >= FAST_ASK_AFTER_MS && fast_candidate(e, table) => {
                dev.fast_idle(&fast_flow(&e.key))
            }
            _ => None,
        };
        let full = walk_buckets(
            link,
            flows,
            &mut w.cursor,
            &mut budget,
            all,
            since,
            tick,
            &mut copied,
            &mut fast_idle,
        );
        // The IPv6 table once the IPv4 one is done, with what is left of
        // the budget (an empty IPv6 table is one bucket or none).
        if !full && w.cursor >= flows.bucket_count() {
            walk_buckets(
                link,
                flows6,
                &mut w.cursor6,
                &mut budget,
                all,
                since,
                tick,
                &mut copied,
                &mut |_| None,
            );
        }
        bump(&link.walk_copied, copied);
        if w.cursor >= flows.bucket_count() && w.cursor6 >= flows6.bucket_count() {
            link.walk_done.store(w.asked, Ordering::Release);
            self.walk = None;
        }
    }
}

/// Copy up to `budget` buckets of `flows` from `cursor` into the link's
/// notes of that family; stops early (true) when the queue has no room
/// for a whole bucket. `fast_idle(e)`: how long ago the fast path last
/// forwarded a frame of `e`, when it did (the more recent of that and the
/// worker's own time counts).
#[allow(clippy::too_many_arguments)]
fn walk_buckets<K: SyncKey>(
    link: &WorkerLink,
    flows: &FlowTable<K>,
    cursor: &mut usize,
    budget: &mut usize,
    all: bool,
    since: Option<u32>,
    tick: u32,
    copied: &mut u64,
    fast_idle: &mut impl FnMut(&FlowEntry<K>) -> Option<u32>,
) -> bool {
    let q = K::notes(link);
    while *budget > 0 && *cursor < flows.bucket_count() {
        if q.capacity() - q.len() < WAYS {
            return true;
        }
        *budget -= 1;
        *cursor = flows.copy_out(*cursor, 1, tick, &mut |e, _left| {
            let mut idle = tick.wrapping_sub(e.last_ms);
            if let Some(i) = fast_idle(e) {
                idle = idle.min(i);
            }
            let last = tick.wrapping_sub(idle);
            let wanted = all || e.origin() == 0 || since.is_none_or(|s| !later(s, last, tick));
            if wanted {
                note(link, NoteKind::Copy, e, idle);
                *copied += 1;
            }
            true
        });
    }
    false
}

/// A flow left the table: undo its share of its server's gauges.
fn on_removed<K: Key>(stats: &WorkerStats, e: &FlowEntry<K>) {
    let b = stats.backend(e.backend);
    if is_active(e.state) {
        bump_i(&b.active, -1);
    } else {
        bump_i(&b.inactive, -1);
    }
}

#[inline]
fn is_active(s: FlowState) -> bool {
    !matches!(s, FlowState::TcpClosing)
}

/// Whether a pinned flow may stay with its backend. A server removed from
/// the config keeps its established flows while the table still knows how to
/// reach it (its MAC; the caller checks), as a drained one does.
#[inline]
fn keeps_backend(state: BackendState, reschedule_on_down: bool) -> bool {
    state.keeps_flows(reschedule_on_down)
}

/// State of a new flow from its first packet.
#[inline]
fn initial_state(proto: u8, tcp_flags: u8) -> FlowState {
    if proto == 17 {
        FlowState::Udp
    } else if tcp_flags & (tcp::FIN | tcp::RST) != 0 {
        FlowState::TcpClosing
    } else if tcp_flags & tcp::SYN != 0 && tcp_flags & tcp::ACK == 0 {
        FlowState::TcpSyn
    } else {
        FlowState::TcpEstablished
    }
}

/// Advance a TCP entry's state with one packet's flags (seen at `now`).
#[inline]
fn advance<K: Key>(e: &mut FlowEntry<K>, proto: u8, flags: u8, now: u32, seq: u32) {
    if proto != 6 {
        return;
    }
    if flags & (tcp::FIN | tcp::RST) != 0 {
        e.state = FlowState::TcpClosing;
    } else if e.state == FlowState::TcpSyn && flags & tcp::SYN == 0 {
        e.state = FlowState::TcpEstablished;
    } else if e.state == FlowState::TcpClosing && flags & tcp::SYN != 0 && flags & tcp::ACK == 0 {
        // Port reuse: a new connection on a remembered tuple.
        e.state = FlowState::TcpSyn;
        e.first_ms = now;
        e.isn = seq;
    }
}

/// Move a flow's share of the gauges from one backend/state to another.
#[inline]
fn move_gauges(stats: &WorkerStats, old: u32, was_active: bool, new: u32, now_active: bool) {
    if old == new && was_active == now_active {
        return;
    }
    let (o, n) = (stats.backend(old), stats.backend(new));
    bump_i(if was_active { &o.active } else { &o.inactive }, -1);
    bump_i(if now_active { &n.active } else { &n.inactive }, 1);
}

/// SYN second chances a flow of `svc` may take: one per other server in its
/// table (so it never walks the table looking for a server that is not
/// there), at most [`MAX_SECOND_CHANCES`].
#[inline]
fn second_chances_allowed(svc: &ServiceFwd) -> u8 {
    let others = svc.maglev.servers().saturating_sub(1);
    others.min(usize::from(MAX_SECOND_CHANCES)) as u8
}

/// The server `moves` steps along a flow's Maglev preference order: walking
/// the table from the flow's slot, the (moves+1)-th distinct server met (the
/// SYN second chance; every move tries a server not tried before). `moves`
/// is capped at the number of other servers in the table, so the walk ends
/// as soon as it has met every distinct server; `probes` counts the slots
/// it read.
#[inline]
fn maglev_step(svc: &ServiceFwd, hash: u64, moves: u8, probes: &mut u64) -> Option<BackendId> {
    const MAX_TRIED: usize = MAX_SECOND_CHANCES as usize + 1;
    let m = svc.maglev.len();
    if m == 0 {
        return None;
    }
    let mut slot = (hash % m as u64) as usize;
    let first = svc.pick_slot(slot as u32)?;
    let want = moves.min(second_chances_allowed(svc)) as usize;
    let mut tried: [BackendId; MAX_TRIED] = [first; MAX_TRIED];
    let mut n = 1;
    // Bounded by `m` too, so an inconsistent table (a member listed twice)
    // costs one walk, never a hang.
    let mut left = m;
    while n <= want && left > 0 {
        left -= 1;
        slot += 1;
        if slot == m {
            slot = 0;
        }
        *probes += 1;
        let Some(id) = svc.pick_slot(slot as u32) else {
            continue;
        };
        if !tried[..n].contains(&id) {
            tried[n] = id;
            n += 1;
        }
    }
    Some(tried[n - 1])
}

/// Everything `handle` works with.
struct Ctx<'a> {
    table: &'a FwdTable,
    flows: &'a mut FlowTable,
    flows6: &'a mut FlowTable<FlowKey6>,
    frags: &'a mut FragTable,
    frags6: &'a mut FragTable<FragKey6>,
    last_est: &'a mut [u64],
    stats: &'a WorkerStats,
    /// The worker's clock (ms, does not wrap).
    now: u64,
    /// Its low 32 bits: the flow table's wrapping clock.
    tick: u32,
    ip_id: &'a mut u16,
    /// Frames handed to the device for sending in this batch; counted as
    /// forwarded once the device has reported its failures.
    sent: u64,
    /// Flow sync's queues, when configured.
    link: Option<&'a WorkerLink>,
    /// The device's fast path, when it has one: what to hand it after the
    /// batch.
    fast: Option<&'a mut FastBatch>,
    /// Set by `backend_for` for the frame at hand.
    fast_hint: FastHint,
}

/// Prefetch the flow-table lines [`handle`] will read for the frame `d`: a
/// cheap look at an untagged IPv4 TCP or UDP header without options (what
/// the classifier takes as a flow), read as a flow key, or as a reply key
/// when it comes from a NAT server to a non-VIP. Anything else, or a frame
/// the classifier will drop, costs a wasted hint at most: nothing here
/// decides what happens to the frame.
#[inline(always)]
fn prefetch_flow(d: &[u8], meta: &RxMeta, table: &FwdTable, flows: &FlowTable) {
    let Some(h) = d.get(..38) else {
        return;
    };
    if meta.vlan_tci.is_some() || h[12..14] != [0x08, 0x00] || h[14] != 0x45 || !matches!(h[23], 6 | 17) {
        return;
    }
    let addr = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let port = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let key = FlowKey {
        src: addr(26),
        dst: addr(30),
        sport: port(34),
        dport: port(36),
        proto: h[23],
    };
    let reply = table.is_nat_backend(key.src) && !table.is_vip(key.dst);
    flows.prefetch(&key, reply, crate::io::sys::hint::prefetch);
}

/// Find the flow's backend, creating or re-pinning the flow as needed.
#[inline]
fn backend_for(c: &Classified, svc: &ServiceFwd, cx: &mut Ctx<'_>) -> Result<BackendId, Reason> {
    let (table, stats, now, tick) = (cx.table, cx.stats, cx.now, cx.tick);
    if let Some(e) = cx.flows.get(&c.key, tick, &mut |e| on_removed(stats, e)) {
        let was_active = is_active(e.state);
        let old_state = e.state;
        let bare_syn = c.key.proto == 6 && c.tcp_flags & tcp::SYN != 0 && c.tcp_flags & tcp::ACK == 0;
        if bare_syn && e.isn == 0 && e.origin() != 0 && e.state == FlowState::TcpSyn {
            // A flow synced in its handshake: the sync does not carry the
            // initial sequence number, so the first SYN seen here sets it
            // (a retransmission of the SYN the peer saw, not a new
            // connection to schedule afresh).
            e.isn = c.tcp_seq;
        }
        // A retransmission repeats the initial sequence number; a new
        // connection on a reused tuple does not (and starts afresh).
        let waited = tick.wrapping_sub(e.first_ms);
        // Only when the server shows no sign of life: no flow to it completed
        // a handshake since this SYN was first seen. A live server that lost
        // or delayed one SYN-ACK keeps the flow, so its late SYN-ACK cannot
        // meet a different server (which would answer the client's ACK with
        // a reset).
        let silent = |id: BackendId| {
            let i = (id as usize).min(cx.last_est.len() - 1);
            now.saturating_sub(cx.last_est[i]) >= u64::from(waited)
        };
        // Once it has tried every server, a replayed SYN is just a packet of
        // its flow: no walk, whatever the rate of replays.
        let syn_retransmit = e.state == FlowState::TcpSyn
            && bare_syn
            && e.isn == c.tcp_seq
            && waited >= SYN_SECOND_CHANCE_MS
            && e.second_chances() < second_chances_allowed(svc)
            && silent(e.backend);
        // A new connection on a remembered tuple (the client reused its
        // port): scheduled afresh like any new flow, so a drained or
        // weight-0 server gets none.
        let new_conn = bare_syn
            && (e.state == FlowState::TcpClosing || (e.state == FlowState::TcpSyn && e.isn != c.tcp_seq));
        if e.state == FlowState::TcpSyn && bare_syn && e.isn != c.tcp_seq {
            e.isn = c.tcp_seq;
            e.first_ms = tick;
        }
        let was_syn = e.state == FlowState::TcpSyn;
        advance(e, c.key.proto, c.tcp_flags, tick, c.tcp_seq);
        if was_syn && e.state == FlowState::TcpEstablished {
            let i = (e.backend as usize).min(cx.last_est.len() - 1);
            cx.last_est[i] = now;
        }
        e.last_ms = tick;
        let old = e.backend;
        let mut id = old;
        let ob = table.backend(old);
        if new_conn {
            let Some((nid, _)) = svc.pick(svc.hash(&c.key)) else {
                move_gauges(stats, old, was_active, old, is_active(e.state));
                return Err(Reason::NoServer);
            };
            e.set_second_chances(0);
            id = nid;
            bump(&stats.backend(nid).conns, 1);
        } else if !keeps_backend(ob.state, table.reschedule_on_down) || ob.mac.is_none() {
            // Its server is gone, down or unreachable: pick a live one (IPVS
            // expire_nodest_conn).
            let Some((nid, _)) = svc.pick(svc.hash(&c.key)) else {
                // The flow stays pinned; keep its gauges in step with its state.
                move_gauges(stats, old, was_active, old, is_active(e.state));
                return Err(Reason::NoServer);
            };
            e.set_second_chances(0);
            id = nid;
            bump(&stats.rescheduled, 1);
        } else if syn_retransmit {
            // The server did not answer the first SYN: a silent failure the
            // health check has not seen yet. Try the next server.
            let moves = e.second_chances() + 1;
            let mut probes = 0;
            let next = maglev_step(svc, svc.hash(&c.key), moves, &mut probes);
            bump(&stats.maglev_probes, probes);
            // Counted as taken even when the walk ends on the same server
            // (it met fewer distinct servers than the table has), so the
            // number of walks per flow stays bounded.
            e.set_second_chances(moves);
            if let Some(nid) = next.filter(|&nid| nid != old) {
                e.first_ms = tick;
                id = nid;
                bump(&stats.syn_second_chance, 1);
            }
        }
        e.backend = id;
        move_gauges(stats, old, was_active, id, is_active(e.state));
        if cx.fast.is_some() {
            cx.fast_hint = fast_hint(e, c.tcp_flags, tick);
        }
        if let Some(link) = cx.link {
            let to_peers = matches!(e.state, FlowState::TcpEstablished | FlowState::TcpClosing);
            if id != old || new_conn || (e.state != old_state && to_peers) {
                note(link, NoteKind::Change, e, 0);
            }
        }
        return Ok(id);
    }
    let Some((id, _)) = svc.pick(svc.hash(&c.key)) else {
        return Err(Reason::NoServer);
    };
    let state = initial_state(c.key.proto, c.tcp_flags);
    if cx.fast.is_some() && state == FlowState::TcpClosing {
        // A FIN or RST of a flow the table lost (evicted) may end one the
        // fast path still holds.
        cx.fast_hint = FastHint::Remove;
    }
    let e = cx
        .flows
        .insert(c.key, state, id, tick, &mut |e| on_removed(stats, e));
    e.isn = c.tcp_seq;
    if let Some(link) = cx.link {
        note(link, NoteKind::New, e, 0);
    }
    let b = stats.backend(id);
    bump(&b.conns, 1);
    bump_i(if is_active(state) { &b.active } else { &b.inactive }, 1);
    Ok(id)
}

/// Rewrite the frame for backend `b` by its service's mode.
#[inline(always)]
fn send_to(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    cx: &mut Ctx<'_>,
    b: &BackendFwd,
    what: Payload,
) -> Result<Sent, Reason> {
    let how = ToServer::new(cx.table, b)?;
    rewrite::to_server(f, arena, &how, what, cx.ip_id)
}

/// Count what `send_to` did. A frame sent in place or as fragments or
/// segments reached the server; one answered with "fragmentation needed"
/// is a drop by that reason (the answer goes out).
#[inline(always)]
fn forwarded(cx: &mut Ctx<'_>, id: BackendId, len: usize, sent: Sent) -> Result<Action, Reason> {
    match sent {
        Sent::Frame => {
            count_in(cx, id, len);
            Ok(Action::Transmit)
        }
        Sent::Fragmented => {
            count_in(cx, id, len);
            Ok(Action::Drop)
        }
        Sent::Segmented(n) => {
            bump(&cx.stats.tun_segmented, n as u64);
            count_in(cx, id, len);
            Ok(Action::Drop)
        }
        Sent::FragNeeded => {
            cx.stats.drop(Reason::TunFragNeeded);
            Ok(Action::Transmit)
        }
        Sent::PacketTooBig => {
            cx.stats.drop(Reason::TunPacketTooBig);
            Ok(Action::Transmit)
        }
    }
}

/// Count a frame from backend `id` sent on to a client (NAT replies).
#[inline]
fn count_out(cx: &mut Ctx<'_>, id: BackendId, len: usize) {
    let b = cx.stats.backend(id);
    bump(&b.out_packets, 1);
    bump(&b.out_bytes, len as u64);
    cx.sent += 1;
    bump(&cx.stats.bytes_forwarded, len as u64);
}

/// Count a frame sent to backend `id`.
#[inline]
fn count_in(cx: &mut Ctx<'_>, id: BackendId, len: usize) {
    let b = cx.stats.backend(id);
    bump(&b.packets, 1);
    bump(&b.bytes, len as u64);
    cx.sent += 1;
    bump(&cx.stats.bytes_forwarded, len as u64);
}

#[inline]
fn flow_packet(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    cx: &mut Ctx<'_>,
    c: &Classified,
) -> Result<Action, Reason> {
    let svc = &cx.table.services[c.service];
    cx.fast_hint = FastHint::None;
    let id = backend_for(c, svc, cx)?;
    let b = *cx.table.backend(id);
    if b.mac.is_none() {
        return Err(Reason::ServerMacUnknown);
    }
    if c.first_fragment {
        cx.frags.insert(c.frag_key(), id, cx.now);
    }
    if b.mode == Mode::Nat {
        // Make sure the reply direction is known: linked to the flow, so the
        // two share one lifetime; replaced when the flow changed server.
        let rkey = nat_reply_key(&b, &c.key);
        let stats = cx.stats;
        cx.flows
            .set_reply(&c.key, rkey, cx.tick, &mut |e| on_removed(stats, e));
    }
    let len = f.len();
    let sent = send_to(f, arena, cx, &b, Payload::Packet)?;
    if cx.fast_hint != FastHint::None && sent == Sent::Frame && b.mode == Mode::Dr {
        fast_note(f, cx, c, &b, id);
    }
    forwarded(cx, id, len, sent)
}

/// Queue the fast-path install or removal `backend_for` asked for. Only
/// untagged frames: the XDP program leaves tagged ones to the worker.
#[inline]
fn fast_note(f: &Frame<'_>, cx: &mut Ctx<'_>, c: &Classified, b: &BackendFwd, id: BackendId) {
    let untagged = f.meta.vlan_tci.is_none() && f.data().get(12..14) == Some(&[0x08, 0x00][..]);
    let (Some(fb), Some(mac)) = (cx.fast.as_deref_mut(), b.mac) else {
        return;
    };
    let mut flow = fast_flow(&c.key);
    match cx.fast_hint {
        FastHint::Install if untagged && fb.n_install < BATCH => {
            flow.dst_mac = mac;
            flow.src_mac = cx.table.director_mac;
            flow.backend = id;
            fb.install[fb.n_install] = flow;
            fb.n_install += 1;
        }
        FastHint::Remove if fb.n_remove < BATCH => {
            fb.remove[fb.n_remove] = flow;
            fb.n_remove += 1;
        }
        _ => {}
    }
}

#[inline]
fn later_fragment(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    cx: &mut Ctx<'_>,
    k: &FragKey,
) -> Result<Action, Reason> {
    let id = cx.frags.get(k, cx.now).ok_or(Reason::Fragment)?;
    let b = *cx.table.backend(id);
    if b.addr == 0 {
        return Err(Reason::Fragment);
    }
    let len = f.len();
    let sent = send_to(f, arena, cx, &b, Payload::Packet)?;
    let a = forwarded(cx, id, len, sent);
    bump(&cx.stats.fragments_forwarded, 1);
    a
}

#[inline]
fn icmp_error(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    cx: &mut Ctx<'_>,
    key: &FlowKey,
) -> Result<Action, Reason> {
    let stats = cx.stats;
    let id = cx
        .flows
        .get(key, cx.tick, &mut |e| on_removed(stats, e))
        .map(|e| e.backend)
        .ok_or(Reason::IcmpNoFlow)?;
    let b = *cx.table.backend(id);
    let len = f.len();
    let sent = send_to(f, arena, cx, &b, Payload::IcmpError)?;
    let a = forwarded(cx, id, len, sent);
    bump(&cx.stats.icmp_errors_forwarded, 1);
    a
}

/// The NAT flow whose reply direction (server -> client key) is `key`.
#[inline]
fn reply_flow<'a>(cx: &'a mut Ctx<'_>, key: &FlowKey) -> Option<&'a mut FlowEntry> {
    let stats = cx.stats;
    cx.flows.get_reply(key, cx.tick, &mut |e| on_removed(stats, e))
}

#[inline]
fn nat_reply(f: &mut Frame<'_>, cx: &mut Ctx<'_>, c: &Classified) -> Result<Action, Reason> {
    let (now, tick) = (cx.now, cx.tick);
    let e = reply_flow(cx, &c.key).ok_or(Reason::NatNoFlow)?;
    // The server's packets keep the flow alive (one lifetime for both
    // directions); its TCP state follows the client's packets, as it did
    // when the reply direction had an entry of its own.
    e.last_ms = tick;
    let id = e.backend;
    let b = *cx.table.backend(id);
    if c.first_fragment {
        cx.frags.insert(c.frag_key(), id, now);
    }
    let vport = if b.svc_port != 0 { b.svc_port } else { c.key.sport };
    nat_to_client(f, cx, id, c.key.dst, Some(vport))
}

/// Send a NAT reply (or a later fragment of one, `vport` None) to the next
/// hop toward `client` with the VIP of backend `id`'s service as its source.
#[inline]
fn nat_to_client(
    f: &mut Frame<'_>,
    cx: &mut Ctx<'_>,
    id: BackendId,
    client: u32,
    vport: Option<u16>,
) -> Result<Action, Reason> {
    let mac = cx.table.next_hop_mac(client).ok_or(Reason::NextHopUnknown)?;
    let len = f.len();
    let n = Nat {
        side: NatSide::Src,
        addr: cx.table.backend(id).svc_vip,
        port: vport,
        macs: Macs {
            dst: mac,
            src: cx.table.director_mac,
        },
    };
    let csum = rewrite::checksum_state(&f.vnet);
    rewrite::nat(f.data_mut(), csum, &n)?;
    count_out(cx, id, len);
    Ok(Action::Transmit)
}

/// A later fragment of a NAT reply: the source address becomes the VIP (the
/// port was in the first fragment).
#[inline]
fn nat_reply_fragment(f: &mut Frame<'_>, cx: &mut Ctx<'_>, k: &FragKey) -> Result<Action, Reason> {
    let id = cx.frags.get(k, cx.now).ok_or(Reason::Fragment)?;
    let action = nat_to_client(f, cx, id, k.dst, None)?;
    bump(&cx.stats.fragments_forwarded, 1);
    Ok(action)
}

/// An ICMP error from a NAT server about one of its flows: sent on to the
/// client as if the VIP had sent it.
#[inline]
fn nat_icmp_from_server(f: &mut Frame<'_>, cx: &mut Ctx<'_>, rkey: &FlowKey) -> Result<Action, Reason> {
    let id = reply_flow(cx, rkey)
        .map(|e| e.backend)
        .ok_or(Reason::IcmpNoFlow)?;
    let b = *cx.table.backend(id);
    let mac = cx.table.next_hop_mac(rkey.dst).ok_or(Reason::NextHopUnknown)?;
    let vport = if b.svc_port != 0 { b.svc_port } else { rkey.sport };
    let len = f.len();
    let macs = Macs {
        dst: mac,
        src: cx.table.director_mac,
    };
    rewrite::nat_icmp_from_server(f.data_mut(), b.svc_vip, vport, macs)?;
    count_out(cx, id, len);
    Ok(Action::Transmit)
}

/// The server of an IPv6 flow: its pinned one while that may keep it, else
/// a fresh Maglev pick (new flow, or its server went away). Notes for flow
/// sync as [`backend_for`] makes them; the SYN second chance is IPv4-only
/// for now.
#[inline]
fn backend_for6(c: &Classified6, cx: &mut Ctx<'_>) -> Result<BackendId, Reason> {
    let (table, stats, tick) = (cx.table, cx.stats, cx.tick);
    let svc = &table.services6[c.service];
    if let Some(e) = cx.flows6.get(&c.key, tick, &mut |e| on_removed(stats, e)) {
        let was_active = is_active(e.state);
        let old_state = e.state;
        let bare_syn = c.key.proto == 6 && c.tcp_flags & tcp::SYN != 0 && c.tcp_flags & tcp::ACK == 0;
        let new_conn = bare_syn && e.state == FlowState::TcpClosing;
        advance(e, c.key.proto, c.tcp_flags, tick, c.tcp_seq);
        e.last_ms = tick;
        let old = e.backend;
        let ob = table.backend(old);
        let mut id = old;
        if new_conn || !keeps_backend(ob.state, table.reschedule_on_down) || ob.mac.is_none() {
            let Some(nid) = svc.pick(svc.hash(&c.key)) else {
                move_gauges(stats, old, was_active, old, is_active(e.state));
                return Err(Reason::NoServer);
            };
            if nid != old && !new_conn {
                bump(&stats.rescheduled, 1);
            }
            if new_conn {
                bump(&stats.backend(nid).conns, 1);
            }
            id = nid;
        }
        e.backend = id;
        move_gauges(stats, old, was_active, id, is_active(e.state));
        if let Some(link) = cx.link {
            let to_peers = matches!(e.state, FlowState::TcpEstablished | FlowState::TcpClosing);
            if id != old || new_conn || (e.state != old_state && to_peers) {
                note(link, NoteKind::Change, e, 0);
            }
        }
        return Ok(id);
    }
    let id = svc.pick(svc.hash(&c.key)).ok_or(Reason::NoServer)?;
    let state = initial_state(c.key.proto, c.tcp_flags);
    let e = cx
        .flows6
        .insert(c.key, state, id, tick, &mut |e| on_removed(stats, e));
    e.isn = c.tcp_seq;
    if let Some(link) = cx.link {
        note(link, NoteKind::New, e, 0);
    }
    let b = stats.backend(id);
    bump(&b.conns, 1);
    bump_i(if is_active(state) { &b.active } else { &b.inactive }, 1);
    Ok(id)
}

/// An IPv6 packet to a VIP, sent to its flow's server by the service's
/// mode: DR changes the MACs only (the server has the VIP on a loopback and
/// answers the client itself); NAT rewrites the destination to the server's
/// IPv6 address and port and links the reply key; TUN wraps it in IPv6.
#[inline]
fn flow6_packet(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    cx: &mut Ctx<'_>,
    c: &Classified6,
) -> Result<Action, Reason> {
    let id = backend_for6(c, cx)?;
    let table = cx.table;
    let b = table.backend(id);
    let macs = Macs {
        dst: b.mac.ok_or(Reason::ServerMacUnknown)?,
        src: table.director_mac,
    };
    if let Some(k) = c.frag {
        cx.frags6.insert(k, id, cx.now);
    }
    let len = f.len();
    match table.services6[c.service].mode {
        Mode::Dr => rewrite::dr(f.data_mut(), macs)?,
        Mode::Nat => {
            let b6 = table.backend6(id);
            let rport = (b.port != 0).then_some(b.port);
            // The reply direction (server -> client), linked to the flow
            // so the two share one lifetime; replaced when the flow
            // changed server.
            let rkey = FlowKey6 {
                src: b6.addr,
                dst: c.key.src,
                sport: rport.unwrap_or(c.key.dport),
                dport: c.key.sport,
                proto: c.key.proto,
            };
            let stats = cx.stats;
            cx.flows6
                .set_reply(&c.key, rkey, cx.tick, &mut |e| on_removed(stats, e));
            let n = Nat6 {
                side: NatSide::Dst,
                addr: b6.addr,
                port: rport,
                macs,
            };
            let csum = rewrite::checksum_state(&f.vnet);
            rewrite::nat6(f.data_mut(), c.l4_offset, c.key.proto, csum, &n)?;
        }
        Mode::Tun => {
            // No IPv6 address of our own (yet): an outer source of `::`
            // would be dropped by the server; count it instead.
            if table.director_ip6 == 0 {
                return Err(Reason::NextHopUnknown);
            }
            let o = TunOuter6 {
                src: table.director_ip6,
                dst: table.backend6(id).addr,
                macs,
                hop_limit: 64,
            };
            let sent = rewrite::tun6(f, arena, &o, table.mtu, c.l4_offset)?;
            return forwarded(cx, id, len, sent);
        }
    }
    count_in(cx, id, len);
    Ok(Action::Transmit)
}

/// A packet from an IPv6 NAT server: sent on to the client (next hop
/// toward it) from the VIP and port of its flow.
#[inline]
fn nat6_reply(f: &mut Frame<'_>, cx: &mut Ctx<'_>, c: &Classified6) -> Result<Action, Reason> {
    let stats = cx.stats;
    let e = cx
        .flows6
        .get_reply(&c.key, cx.tick, &mut |e| on_removed(stats, e))
        .ok_or(Reason::NatNoFlow)?;
    // One lifetime for both directions; the TCP state follows the client.
    e.last_ms = cx.tick;
    let id = e.backend;
    if let Some(k) = c.frag {
        cx.frags6.insert(k, id, cx.now);
    }
    let table = cx.table;
    let b = table.backend(id);
    let vport = if b.svc_port != 0 { b.svc_port } else { c.key.sport };
    let mac = table.next_hop_mac6(c.key.dst).ok_or(Reason::NextHopUnknown)?;
    let n = Nat6 {
        side: NatSide::Src,
        addr: table.backend6(id).svc_vip,
        port: Some(vport),
        macs: Macs {
            dst: mac,
            src: table.director_mac,
        },
    };
    let len = f.len();
    let csum = rewrite::checksum_state(&f.vnet);
    rewrite::nat6(f.data_mut(), c.l4_offset, c.key.proto, csum, &n)?;
    count_out(cx, id, len);
    Ok(Action::Transmit)
}

/// An ICMPv6 echo request to a VIP, answered in place: counted as
/// forwarded (it leaves the director), so frames_seen = forwarded + drops
/// holds, as for IPv4.
#[inline]
fn echo6(f: &mut Frame<'_>, cx: &mut Ctx<'_>) -> Result<Action, Reason> {
    icmp6::echo_reply(f, cx.table.director_mac)?;
    bump(&cx.stats.echo_replies, 1);
    cx.sent += 1;
    bump(&cx.stats.bytes_forwarded, f.len() as u64);
    Ok(Action::Transmit)
}

/// An ICMPv6 error to a VIP about a packet of flow `key`: on to the flow's
/// server in its service's mode.
#[inline]
fn icmp6_error(
    f: &mut Frame<'_>,
    cx: &mut Ctx<'_>,
    key: &FlowKey6,
    service: usize,
) -> Result<Action, Reason> {
    let stats = cx.stats;
    let id = cx
        .flows6
        .get(key, cx.tick, &mut |e| on_removed(stats, e))
        .map(|e| e.backend)
        .ok_or(Reason::V6IcmpNoFlow)?;
    let table = cx.table;
    let mode = table.services6[service].mode;
    let len = f.len();
    icmp6::to_server(
        f,
        table,
        mode,
        table.backend(id),
        &table.backend6(id),
        What6::Error,
    )?;
    count_in(cx, id, len);
    bump(&cx.stats.icmp_errors_forwarded, 1);
    Ok(Action::Transmit)
}

/// NAT: an ICMPv6 error from a server about the flow whose reply key is
/// `rkey`, on to the client from the VIP.
#[inline]
fn nat6_icmp_from_server(f: &mut Frame<'_>, cx: &mut Ctx<'_>, rkey: &FlowKey6) -> Result<Action, Reason> {
    let stats = cx.stats;
    let id = cx
        .flows6
        .get_reply(rkey, cx.tick, &mut |e| on_removed(stats, e))
        .map(|e| e.backend)
        .ok_or(Reason::V6IcmpNoFlow)?;
    let table = cx.table;
    let b = table.backend(id);
    let vport = if b.svc_port != 0 { b.svc_port } else { rkey.sport };
    let mac = table.next_hop_mac6(rkey.dst).ok_or(Reason::NextHopUnknown)?;
    let len = f.len();
    icmp6::nat_from_server(f, table.backend6(id).svc_vip, vport, mac, table.director_mac)?;
    count_out(cx, id, len);
    Ok(Action::Transmit)
}

/// A later IPv6 fragment to a VIP: to the server its first fragment went
/// to, in that server's mode (TUN as for flows: a fragment too big for the
/// tunnel gets a Packet Too Big, so the client fragments smaller).
#[inline]
fn later_fragment6(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    cx: &mut Ctx<'_>,
    k: &FragKey6,
) -> Result<Action, Reason> {
    let id = cx.frags6.get(k, cx.now).ok_or(Reason::V6Fragment)?;
    let table = cx.table;
    let (b, b6) = (table.backend(id), table.backend6(id));
    if b6.addr == 0 {
        // Removed by a reload since its first fragment.
        return Err(Reason::V6Fragment);
    }
    let len = f.len();
    let a = if b.mode == Mode::Tun {
        if table.director_ip6 == 0 {
            return Err(Reason::NextHopUnknown);
        }
        let o = TunOuter6 {
            src: table.director_ip6,
            dst: b6.addr,
            macs: Macs {
                dst: b.mac.ok_or(Reason::ServerMacUnknown)?,
                src: table.director_mac,
            },
            hop_limit: 64,
        };
        // A fragment is never a GSO super-frame: the transport offset
        // (only read for those) does not matter.
        let l4 = crate::wire::ethernet::HEADER_LEN + crate::wire::ipv6::HEADER_LEN;
        let sent = rewrite::tun6(f, arena, &o, table.mtu, l4)?;
        forwarded(cx, id, len, sent)?
    } else {
        icmp6::to_server(f, table, b.mode, b, &b6, What6::LaterFragment)?;
        count_in(cx, id, len);
        Action::Transmit
    };
    bump(&cx.stats.fragments_forwarded, 1);
    Ok(a)
}

/// NAT: a later fragment of a server's reply: its source becomes the VIP
/// (the port was in the first fragment).
#[inline]
fn nat6_reply_fragment(f: &mut Frame<'_>, cx: &mut Ctx<'_>, k: &FragKey6) -> Result<Action, Reason> {
    let id = cx.frags6.get(k, cx.now).ok_or(Reason::V6Fragment)?;
    let table = cx.table;
    let mac = table.next_hop_mac6(k.dst).ok_or(Reason::NextHopUnknown)?;
    let len = f.len();
    icmp6::nat_fragment_to_client(f, table.backend6(id).svc_vip, mac, table.director_mac)?;
    count_out(cx, id, len);
    bump(&cx.stats.fragments_forwarded, 1);
    Ok(Action::Transmit)
}

/// The IPv6 path of [`handle`]: kept out of line so the IPv4 path's code
/// stays as compact as without IPv6. ICMPv6 and fragments add their
/// [`Kind6`] arms here.
#[inline(never)]
fn handle6(f: &mut Frame<'_>, arena: &mut TxArena, cx: &mut Ctx<'_>) -> Result<Action, Reason> {
    match classify6_packet(f.data(), &f.meta, cx.table)? {
        Kind6::Flow(c) => flow6_packet(f, arena, cx, &c),
        Kind6::NatReply(c) => nat6_reply(f, cx, &c),
        Kind6::Icmp(Icmp6::Echo) => echo6(f, cx),
        Kind6::Icmp(Icmp6::Error { key, service }) => icmp6_error(f, cx, &key, service),
        Kind6::Icmp(Icmp6::FromServer { rkey }) => nat6_icmp_from_server(f, cx, &rkey),
        Kind6::LaterFragment(k) => later_fragment6(f, arena, cx, &k),
        Kind6::NatReplyFragment(k) => nat6_reply_fragment(f, cx, &k),
    }
}

/// Decide and rewrite one frame.
#[inline]
fn handle(f: &mut Frame<'_>, arena: &mut TxArena, cx: &mut Ctx<'_>) -> Action {
    bump(&cx.stats.frames_seen, 1);
    // Without IPv6 services IPv6 is the kernel's, as it always was
    // (`not_ipv4` from the IPv4 classification).
    if is_ipv6(f.data()) && !cx.table.services6.is_empty() {
        return match handle6(f, arena, cx) {
            Ok(a) => a,
            Err(reason) => {
                cx.stats.drop(reason);
                Action::Drop
            }
        };
    }
    let r = match classify_packet(f.data(), &f.meta, cx.table) {
        Ok(Kind::Flow(c)) => flow_packet(f, arena, cx, &c),
        Ok(Kind::LaterFragment(k)) => later_fragment(f, arena, cx, &k),
        Ok(Kind::IcmpError { key, .. }) => icmp_error(f, arena, cx, &key),
        Ok(Kind::NatReply(c)) => nat_reply(f, cx, &c),
        Ok(Kind::NatReplyFragment(k)) => nat_reply_fragment(f, cx, &k),
        Ok(Kind::NatIcmpFromServer { rkey }) => nat_icmp_from_server(f, cx, &rkey),
        Ok(Kind::Echo) => rewrite::icmp_echo_reply(f.data_mut(), cx.table.director_mac).map(|()| {
            f.vnet = crate::io::VnetHdr::default();
            // Answered in place: counted as forwarded (it leaves the
            // director), so frames_seen = forwarded + drops holds.
            bump(&cx.stats.echo_replies, 1);
            cx.sent += 1;
            bump(&cx.stats.bytes_forwarded, f.len() as u64);
            Action::Transmit
        }),
        Err(r) => Err(r),
    };
    match r {
        Ok(a) => a,
        Err(reason) => {
            cx.stats.drop(reason);
            Action::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker blocks for [`WAIT_MS`] while frames came within
    /// [`QUIET_AFTER_MS`] or work is asked of it, else for
    /// [`QUIET_WAIT_MS`], which stays far below the watchdog's 1 s stall.
    #[test]
    fn waits_longer_only_when_quiet_and_unasked() {
        assert_eq!(wait_ms(5_000, 5_000, false), WAIT_MS);
        assert_eq!(wait_ms(5_000 + QUIET_AFTER_MS - 1, 5_000, false), WAIT_MS);
        assert_eq!(wait_ms(5_000 + QUIET_AFTER_MS, 5_000, false), QUIET_WAIT_MS);
        assert_eq!(wait_ms(60_000, 0, true), WAIT_MS, "a dump or walk waits");
        const { assert!(QUIET_WAIT_MS > WAIT_MS && QUIET_WAIT_MS * 4 <= 1000) };
    }

    /// An idle poll sweeps [`SWEEP_BUCKETS_IDLE`] per [`WAIT_MS`] elapsed:
    /// as many as before after a short wait, proportionally more after a
    /// quiet one (the same buckets per second), bounded after a long gap.
    #[test]
    fn idle_sweep_keeps_its_pace_in_buckets_per_second() {
        assert_eq!(idle_sweep_buckets(0), SWEEP_BUCKETS_IDLE);
        assert_eq!(idle_sweep_buckets(u64::from(WAIT_MS)), SWEEP_BUCKETS_IDLE);
        let quiet = idle_sweep_buckets(u64::from(QUIET_WAIT_MS));
        assert_eq!(
            quiet * WAIT_MS as usize,
            SWEEP_BUCKETS_IDLE * QUIET_WAIT_MS as usize,
            "buckets per second at the quiet wait"
        );
        assert_eq!(idle_sweep_buckets(3_600_000), quiet);
    }
}
