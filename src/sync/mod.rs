//! Flow sync between directors (slow path): the job of the IPVS sync daemon.
//!
//! One thread ([`thread`]) per director owns a UDP socket bound to
//! `sync.listen`. It drains the workers' notes (new and changed flows, walk
//! copies) through their [`crate::dataplane::synclink::WorkerLink`]s,
//! translates backend ids into addresses with the published table, and sends
//! the flows in batches to every peer; it verifies what peers send
//! ([`auth`]: HMAC-SHA256 and a replay window), resolves each flow to one of
//! this director's configured servers of that service, and hands it to the
//! worker that sees that flow's frames. [`wire`] is the datagram format
//! (pure encode/decode). None of this runs on the fast path: the workers
//! only push to and pop from bounded lock-free queues.
//!
//! The protocol follows, as `docs/sync-protocol.md` has it (the file is
//! included here, so the two cannot differ).
//!
#![doc = include_str!("../../docs/sync-protocol.md")]

pub mod auth;
pub mod thread;
pub mod wire;

#[cfg(test)]
mod tests;
