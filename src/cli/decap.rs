//! `ulvs-decap`'s command line: its clap definitions alone, so that `build.rs`
//! can load this file too and write the man page and shell completions from
//! the same text `--help` prints. Keep it free of any `ulvs` import.

use std::net::Ipv4Addr;

use clap::Parser;

/// Userspace IP-in-IP decapsulator for TUN-mode real servers.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// A VIP whose tunnelled packets are accepted (repeatable).
    #[arg(long = "vip", required = true)]
    pub vips: Vec<Ipv4Addr>,
    /// Name of the TUN device to create.
    #[arg(long, default_value = "ulvs-tun0")]
    pub tun: String,
}
