//! `ulvs-director`'s command line: its clap definitions alone, so that `build.rs`
//! can load this file too and write the man page and shell completions from
//! the same text `--help` prints. Keep it free of any `ulvs` import.

use std::path::PathBuf;

use clap::Parser;

/// Where the config file is when `--config` is not given (the Debian
/// package installs an example there).
pub const DEFAULT_CONFIG: &str = "/etc/ulvs/ulvs.yaml";

/// The ulvs director: a userspace LVS-style L4 load balancer.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// The YAML configuration file (see ulvs.yaml(5)).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Validate the file and exit (0 = valid, 1 = problems, one per line on stderr).
    #[arg(long)]
    pub check: bool,
    /// Remove what a director of this config left behind when it did not stop
    /// cleanly (its kernel drop rule, a stale control socket), then exit; does
    /// nothing while a director answers on the control socket (systemd's
    /// ExecStopPost=).
    #[arg(long, conflicts_with = "check")]
    pub cleanup: bool,
}
