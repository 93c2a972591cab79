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
//!   `walk_done` when it has gone through the whole table.

use std::sync::atomic::AtomicU64;

use crossbeam_queue::ArrayQueue;

use crate::fwd::flow::{FlowKey, FlowState};
use crate::fwd::table::BackendId;

/// Notes a worker may have queued before it counts `notes_full`.
pub const NOTES: usize = 65_536;
/// Synced flows waiting for one worker.
pub const SYNCED: usize = 65_536;

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
pub struct Note {
    pub kind: NoteKind,
    pub key: FlowKey,
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
pub struct Synced {
    pub key: FlowKey,
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
    /// Notes dropped because `notes` was full.
    pub notes_full: AtomicU64,
    /// Synced flows dropped because `synced` was full (written by the sync
    /// thread).
    pub synced_full: AtomicU64,
    /// Walk requests: the sync thread increments `walk_asked`; the worker
    /// stores it into `walk_done` when its walk is complete.
    pub walk_asked: AtomicU64,
    pub walk_done: AtomicU64,
}

impl WorkerLink {
    pub fn new() -> Self {
        WorkerLink {
            notes: ArrayQueue::new(NOTES),
            synced: ArrayQueue::new(SYNCED),
            notes_full: AtomicU64::new(0),
            synced_full: AtomicU64::new(0),
            walk_asked: AtomicU64::new(0),
            walk_done: AtomicU64::new(0),
        }
    }
}

impl Default for WorkerLink {
    fn default() -> Self {
        Self::new()
    }
}
