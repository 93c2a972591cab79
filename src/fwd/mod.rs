//! Forwarding state: the Maglev table builder ([`maglev`], slow path), the
//! per-worker flow table ([`flow`], fast path) and the immutable snapshot the
//! slow path publishes for the workers ([`table`]). Imports nothing else of
//! the crate.

pub mod flow;
pub mod frag;
pub mod maglev;
pub mod table;
