//! `ulvs-decap`'s command line: its clap definitions alone, so that `build.rs`
//! can load this file too and write the man page and shell completions from
//! the same text `--help` prints. Keep it free of any `ulvs` import.

use std::net::IpAddr;

use clap::Parser;

/// Userspace decapsulator for TUN-mode real servers: IP-in-IP (protocol 4)
/// for IPv4 VIPs, IPv6-in-IPv6 (next header 41) for IPv6 VIPs.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// A VIP (IPv4 or IPv6) whose tunnelled packets are accepted (repeatable).
    #[arg(long = "vip", required = true)]
    pub vips: Vec<IpAddr>,
    /// Name of the TUN device to create.
    #[arg(long, default_value = "ulvs-tun0")]
    pub tun: String,
}
