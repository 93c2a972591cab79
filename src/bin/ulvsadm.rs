//! `ulvsadm`: the control client (argument parsing and output formatting
//! only; the protocol is `ulvs::control::ctl`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use ulvs::control::ctl::{call, Request};

/// Control client for the ulvs director (named after ipvsadm).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Control socket (else $ULVS_SOCKET, else /run/ulvs/ulvs.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Services and their real servers with state and counters.
    List {
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
        #[arg(long)]
        json: bool,
    },
    /// No new flows to that server; its established flows stay.
    Drain { service: String, address: String },
    /// Undo drain.
    Enable { service: String, address: String },
    /// Set a server's weight (0..=65535; 0 = no new flows).
    Weight {
        service: String,
        address: String,
        weight: u64,
    },
    /// Re-read the config file, as SIGHUP.
    Reload,
}

fn socket_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("ULVS_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ulvs::control::config::DEFAULT_CONTROL_SOCKET))
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Which columns `list` shows (as `ipvsadm -L -n`, `--stats`, `--rate`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    Conns,
    Stats,
    Rate,
}

fn f(v: &Value, k: &str) -> f64 {
    v.get("rates")
        .and_then(|r| r.get(k))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn columns(v: &Value, view: View) -> String {
    match view {
        View::Conns => format!(
            "{:>6} {:<9} {:>10} {:>10}",
            n(v, "weight"),
            v["state"].as_str().unwrap_or(""),
            n(v, "active_flows"),
            n(v, "inactive_flows")
        ),
        View::Stats => format!(
            "{:>8} {:>10} {:>10} {:>12} {:>12}",
            n(v, "conns"),
            n(v, "packets"),
            n(v, "out_packets"),
            n(v, "bytes"),
            n(v, "out_bytes")
        ),
        View::Rate => format!(
            "{:>8.0} {:>10.0} {:>10.0} {:>12.0} {:>12.0}",
            f(v, "conns_per_s"),
            f(v, "in_packets_per_s"),
            f(v, "out_packets_per_s"),
            f(v, "in_bytes_per_s"),
            f(v, "out_bytes_per_s")
        ),
    }
}

fn print_list(data: &Value, view: View) {
    println!("ulvs director (userspace IPVS-style)");
    let hdr = match view {
        View::Conns => format!(
            "{:>6} {:<9} {:>10} {:>10}",
            "Weight", "State", "ActiveConn", "InActConn"
        ),
        View::Stats => format!(
            "{:>8} {:>10} {:>10} {:>12} {:>12}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        View::Rate => format!(
            "{:>8} {:>10} {:>10} {:>12} {:>12}",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
    };
    println!("Prot LocalAddress:Port            Scheduler Mode  Name");
    println!("  -> RemoteAddress:Port          {hdr}");
    for s in data["services"].as_array().into_iter().flatten() {
        let vip = format!("{}:{}", s["vip"].as_str().unwrap_or("?"), n(s, "port"));
        let svc_cols = if view == View::Conns {
            String::new()
        } else {
            columns(s, view)
        };
        println!(
            "{:<4} {:<26} {:<9} {:<5} {} {}",
            s["protocol"].as_str().unwrap_or("?").to_uppercase(),
            vip,
            s["scheduler"].as_str().unwrap_or("?"),
            s["mode"].as_str().unwrap_or("?"),
            s["name"].as_str().unwrap_or("?"),
            svc_cols
        );
        for r in s["real_servers"].as_array().into_iter().flatten() {
            let mut extra = String::new();
            if view == View::Conns {
                extra.push_str(&format!("  mac {}", r["mac"].as_str().unwrap_or("-")));
                if let Some(h) = r["health_reason"].as_str() {
                    extra.push_str(&format!("  [health: {h}]"));
                }
                if let Some(note) = r["note"].as_str() {
                    extra.push_str(&format!("  [{note}]"));
                }
            }
            println!(
                "  -> {:<26} {}{}",
                r["address"].as_str().unwrap_or("?"),
                columns(r, view),
                extra
            );
        }
    }
}

fn print_stats(data: &Value) {
    for k in [
        "frames_seen",
        "forwarded",
        "bytes_forwarded",
        "flows",
        "flow_capacity",
        "flow_evictions",
        "flow_expirations",
        "flow_evictions_expired",
        "flow_evictions_embryonic",
        "flow_evictions_established",
        "rescheduled",
        "syn_second_chance",
        "echo_replies",
        "icmp_errors_forwarded",
        "fragments_forwarded",
        "tun_segments",
        "arp_replies",
        "arp_requests",
        "ring_drops",
        "workers",
        "generation",
        "reloads",
        "reload_failures",
    ] {
        println!("{k:<27} {}", n(data, k));
    }
    println!("drops:");
    if let Some(d) = data["drops"].as_object() {
        for (k, v) in d {
            println!("  {k:<25} {}", v.as_u64().unwrap_or(0));
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = socket_path(args.socket);
    let mut view = View::Conns;
    let (req, json) = match args.cmd {
        Cmd::List { json, stats, rate } => {
            view = if stats {
                View::Stats
            } else if rate {
                View::Rate
            } else {
                View::Conns
            };
            (Request::List, json)
        }
        Cmd::Stats { json } => (Request::Stats, json),
        Cmd::Drain { service, address } => (Request::Drain { service, address }, false),
        Cmd::Enable { service, address } => (Request::Enable { service, address }, false),
        Cmd::Weight {
            service,
            address,
            weight,
        } => (
            Request::Weight {
                service,
                address,
                weight,
            },
            false,
        ),
        Cmd::Reload => (Request::Reload, false),
    };
    let is_list = matches!(req, Request::List);
    let is_stats = matches!(req, Request::Stats);
    let resp = match call(&socket, &req, Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ulvsadm: {e}");
            return ExitCode::from(2);
        }
    };
    if !resp.ok {
        eprintln!("ulvsadm: {}", resp.error.unwrap_or_else(|| "failed".into()));
        return ExitCode::from(1);
    }
    if json {
        println!("{}", resp.data);
    } else if is_list {
        print_list(&resp.data, view);
    } else if is_stats {
        print_stats(&resp.data);
    } else if let Some(m) = resp.data.get("message").and_then(Value::as_str) {
        println!("{m}");
    }
    ExitCode::SUCCESS
}
