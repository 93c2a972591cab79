//! ulvs — a userspace LVS-style Layer-4 load balancer.
//!
//! # Two speeds
//!
//! The director runs at two speeds.
//!
//! * The **fast path** is a [`dataplane::worker::Worker`]: it takes a batch of
//!   frames from its [`io::Device`], classifies each one
//!   ([`dataplane::classify`]), finds the flow's real server in its own
//!   [`fwd::flow::FlowTable`] or picks one with Maglev
//!   ([`fwd::maglev`]), rewrites the frame in place ([`dataplane::rewrite`]) and
//!   sends the batch. Nothing on the fast path allocates, locks, logs or
//!   formats.
//! * The **slow path** ([`control`]) owns everything else: configuration,
//!   ARP, the kernel drop rule, the control socket, counters, table builds. It
//!   reaches the fast path only by publishing a new immutable
//!   [`fwd::table::FwdTable`] with one atomic pointer swap; workers load it
//!   once per batch.
//!
//! Dependencies point one way: `wire` and `fwd` import nothing else of the
//! crate; `dataplane` adds `io::Device`; `control` uses `fwd`; only
//! [`control::director`], which starts the workers, and the binaries see
//! everything. `unsafe` code lives in `io::sys` alone.
#![deny(unsafe_code)]

pub mod cli;
pub mod control;
pub mod dataplane;
pub mod fwd;
pub mod io;
pub mod sync;
pub mod wire;
