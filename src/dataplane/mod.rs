//! The fast path: classify a frame, find or pick its real server, rewrite it
//! in place, send it. Uses `fwd` and `io::Device`; never allocates, locks,
//! logs or formats per frame.

pub mod classify;
pub mod dump;
pub mod icmp6;
pub mod rewrite;
pub mod stats;
pub mod synclink;
pub mod worker;
