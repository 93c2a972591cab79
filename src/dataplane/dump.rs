//! `ulvsadm flows` without locking the fast path: the slow path asks each
//! worker for a copy of its flow table through a per-worker [`FlowDump`],
//! and the worker copies between batches.
//!
//! The protocol: the slow path fills the request ([`FlowDump::ask`]: a
//! filter and a buffer preallocated to the most entries it takes), then
//! bumps `asked`. After each batch a worker reads `asked` (one atomic load,
//! the only per-batch cost when nobody asks); when it differs from `done`
//! it takes the slot with `try_lock` (never waiting: the slow path holds it
//! only to fill or read it) and copies the live flows of
//! [`CHUNK_BUCKETS_BUSY`] buckets — the whole table after an idle poll —
//! into the buffer, within its capacity, so it never allocates. When the
//! table is done or the buffer full it sets `done`, and the slow path reads
//! the copy ([`FlowDump::take`]). A copy taken in pieces is not one instant
//! of the table: a flow may show its state from one piece and miss the
//! others, like `ipvsadm -Lnc` reading /proc while the kernel forwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::fwd::flow::{FlowKey, FlowState, FlowTable};
use crate::fwd::table::BackendId;

/// Buckets (8 flows each) a busy worker copies after one batch: about
/// 32,768 flows, 1 MiB read, well under a millisecond.
pub const CHUNK_BUCKETS_BUSY: usize = 4096;

/// Which flows a copy keeps: those to `vip` with protocol `proto` and, when
/// `port` is not 0, destination port `port` (a service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpFilter {
    /// Host order.
    pub vip: u32,
    pub port: u16,
    pub proto: u8,
}

impl DumpFilter {
    #[inline]
    fn keeps(&self, k: &FlowKey) -> bool {
        let (dst, dport, proto) = (k.dst, k.dport, k.proto);
        dst == self.vip && proto == self.proto && (self.port == 0 || dport == self.port)
    }
}

/// One flow as copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpedFlow {
    /// Original direction: client → VIP.
    pub key: FlowKey,
    pub state: FlowState,
    pub backend: BackendId,
    /// Milliseconds until it expires if no packet comes.
    pub expires_in_ms: u32,
    /// Who created it: 0 = this director, else 1 + the index of the sync
    /// peer it came from ([`crate::fwd::flow::FlowEntry::origin`]).
    pub origin: u8,
}

/// The request and the copy (behind the slot's mutex).
#[derive(Debug, Default)]
struct Slot {
    filter: Option<DumpFilter>,
    out: Vec<DumpedFlow>,
    /// Next bucket to copy.
    cursor: usize,
    /// The buffer filled up before the table was done.
    truncated: bool,
}

/// One worker's side of `ulvsadm flows`.
#[derive(Debug, Default)]
pub struct FlowDump {
    asked: AtomicU64,
    done: AtomicU64,
    slot: Mutex<Slot>,
}

/// What a worker copied.
#[derive(Debug, Default)]
pub struct Dumped {
    pub flows: Vec<DumpedFlow>,
    /// More flows matched than the buffer held.
    pub truncated: bool,
}

impl FlowDump {
    /// Slow path: ask for a copy of at most `limit` flows (`filter`: only
    /// those). A request still running is replaced.
    pub fn ask(&self, filter: Option<DumpFilter>, limit: usize) {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        s.filter = filter;
        s.out = Vec::with_capacity(limit);
        s.cursor = 0;
        s.truncated = false;
        self.asked.fetch_add(1, Ordering::Release);
    }

    /// Slow path: has the worker answered the last request?
    pub fn answered(&self) -> bool {
        self.done.load(Ordering::Acquire) == self.asked.load(Ordering::Acquire)
    }

    /// Slow path: the copy, once [`FlowDump::answered`] (else `None`).
    pub fn take(&self) -> Option<Dumped> {
        if !self.answered() {
            return None;
        }
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        Some(Dumped {
            flows: std::mem::take(&mut s.out),
            truncated: s.truncated,
        })
    }

    /// Worker, between batches: go on with a pending request (`idle`: the
    /// last poll had no frames, so copy the whole rest at once).
    #[inline]
    pub fn serve(&self, flows: &FlowTable, now: u32, idle: bool) {
        let asked = self.asked.load(Ordering::Acquire);
        if asked == self.done.load(Ordering::Relaxed) {
            return;
        }
        self.copy(flows, now, idle, asked);
    }

    #[cold]
    fn copy(&self, flows: &FlowTable, now: u32, idle: bool, asked: u64) {
        let Ok(mut guard) = self.slot.try_lock() else {
            return;
        };
        let s = &mut *guard;
        let buckets = if idle {
            flows.bucket_count()
        } else {
            CHUNK_BUCKETS_BUSY
        };
        let (filter, out) = (s.filter, &mut s.out);
        let mut full = false;
        s.cursor = flows.copy_out(s.cursor, buckets, now, &mut |e, left| {
            if filter.is_some_and(|f| !f.keeps(&e.key)) {
                return true;
            }
            if out.len() == out.capacity() {
                full = true;
                return false;
            }
            out.push(DumpedFlow {
                key: e.key,
                state: e.state,
                backend: e.backend,
                expires_in_ms: left,
                origin: e.origin(),
            });
            true
        });
        s.truncated |= full;
        if full || s.cursor >= flows.bucket_count() {
            self.done.store(asked, Ordering::Release);
        }
    }
}
