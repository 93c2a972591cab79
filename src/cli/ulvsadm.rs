//! `ulvsadm`'s command line: its clap definitions alone, so that `build.rs`
//! can load this file too and write the man page and shell completions from
//! the same text `--help` prints. Keep it free of any `ulvs` import.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Control client for the ulvs director (named after ipvsadm).
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Control socket (else $ULVS_SOCKET, else /run/ulvs/ulvs.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Services and their real servers with state and counters.
    List {
        /// Print one JSON object (services, real servers, counters) instead of a table.
        #[arg(long)]
        json: bool,
        /// Totals: connections, packets and bytes in and out (as `ipvsadm --stats`).
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Rates: connections, packets and bytes per second (as `ipvsadm --rate`).
        #[arg(long)]
        rate: bool,
    },
    /// Director-wide counters: frames seen, forwarded, drops by reason, flows.
    Stats {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// No new flows to that server; its established flows stay.
    Drain {
        /// The service's name (as in the config file).
        service: String,
        /// The real server's address as in the config file (IP, or IP:PORT for NAT).
        address: String,
    },
    /// Undo drain.
    Enable {
        /// The service's name (as in the config file).
        service: String,
        /// The real server's address as in the config file (IP, or IP:PORT for NAT).
        address: String,
    },
    /// Set a server's weight (0..=65535; 0 = no new flows).
    Weight {
        /// The service's name (as in the config file).
        service: String,
        /// The real server's address as in the config file (IP, or IP:PORT for NAT).
        address: String,
        /// The new weight, 0..=65535 (0: no new flows).
        weight: u64,
    },
    /// Re-read the config file, as SIGHUP.
    Reload,
    /// Answer ARP for the VIPs and announce them (on; gratuitous ARP at
    /// once), or stop answering (off). Without an argument: print on or off.
    Announce {
        /// on or off; omitted: print the current state.
        state: Option<OnOff>,
    },
    /// Exit 0 when the director forwards (data plane running, every service
    /// has a real server up), else 1 with the reason on one line (for
    /// keepalived's track_script).
    Check,
    /// Connections: protocol, client, VIP, real server, state, time to
    /// expiry (as `ipvsadm -Lnc`); at most 100,000 (then "truncated").
    Flows {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the flows of this service.
        #[arg(long)]
        service: Option<String>,
    },
}

/// The argument of `announce`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Answer ARP for the VIPs and announce them.
    On,
    /// Stop answering ARP for the VIPs (a standby).
    Off,
}
