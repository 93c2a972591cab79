//! The command lines of the binaries, as plain clap definitions (each file
//! stands alone so `build.rs` can include it to generate man pages and
//! completions).

pub mod decap;
pub mod director;
pub mod ulvsadm;
