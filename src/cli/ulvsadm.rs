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
        /// Print the answer as one JSON object.
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
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// No new flows to that server; its established flows stay.
    Drain {
        /// The service's name (as in the config file).
        service: String,
        /// The real server's address as in the config file (IP, or IP:PORT for NAT).
        address: String,
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Undo drain.
    Enable {
        /// The service's name (as in the config file).
        service: String,
        /// The real server's address as in the config file (IP, or IP:PORT for NAT).
        address: String,
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set a server's weight (0..=65535; 0 = no new flows).
    Weight {
        /// The service's name (as in the config file).
        service: String,
        /// The real server's address as in the config file (IP, or IP:PORT for NAT).
        address: String,
        /// The new weight, 0..=65535 (0: no new flows).
        weight: u64,
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config file, as SIGHUP.
    Reload {
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Answer ARP for the VIPs and announce them (on; gratuitous ARP at
    /// once), or stop answering (off). Without an argument: print on or off.
    Announce {
        /// on or off; omitted: print the current state.
        state: Option<OnOff>,
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the director forwards (data plane running, every service
    /// has a real server up), else 1 with the reason on one line (for
    /// keepalived's track_script).
    Check {
        /// Print {"forwarding": BOOL, "reason": TEXT|null} (same exit codes).
        #[arg(long)]
        json: bool,
    },
    /// Connections: protocol, client, VIP, real server, state, time to
    /// expiry (as `ipvsadm -Lnc`); at most 100,000 (then "truncated").
    Flows {
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
        /// Only the flows of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only the flows to this real server: IP (any port) or IP:PORT.
        #[arg(long)]
        server: Option<String>,
        /// Only the flows from this client: IP (any port) or IP:PORT.
        #[arg(long)]
        client: Option<String>,
    },
    /// Explain what the director does with one connection's next frame.
    ///
    /// The service it matches, its flow entry if one exists (which worker,
    /// created here or synced), else the Maglev slot and the server in it,
    /// that server's state, and what happens to the frame (forwarded where
    /// and how, or dropped with which counter).
    Trace {
        /// tcp or udp.
        #[arg(ignore_case = true)]
        protocol: Proto,
        /// The client's IP:PORT.
        client: String,
        /// The VIP:PORT it connects to.
        vip: String,
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a ulvs config equivalent to a keepalived.conf's virtual servers.
    ///
    /// The config goes to stdout; each thing that cannot be translated goes
    /// to stderr as FILE:LINE: what. Exit 0 when all was translated, 3 when
    /// some was not, 1 when the file is unreadable.
    ImportKeepalived {
        /// The keepalived.conf to read (its includes are followed).
        file: PathBuf,
        /// The director's interface to write into the config (default: the
        /// interface of the vrrp_instance that holds a VIP, else eth0).
        #[arg(long)]
        interface: Option<String>,
        /// Print {"config": YAML, "services": N, "notes": [...]} instead of
        /// the YAML (the notes still go to stderr; same exit codes).
        #[arg(long)]
        json: bool,
    },
}

/// The protocol of `trace`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// A TCP 5-tuple.
    Tcp,
    /// A UDP 5-tuple.
    Udp,
}

/// The argument of `announce`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Answer ARP for the VIPs and announce them.
    On,
    /// Stop answering ARP for the VIPs (a standby).
    Off,
}
