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
    Weight { service: String, address: String, weight: u64 },
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

fn print_list(data: &Value) {
    println!("ulvs director");
    println!(
        "{:<5} {:<24} {:<10} {:<5}",
        "Prot", "LocalAddress:Port", "Scheduler", "Mode"
    );
    println!(
        "  -> {:<21} {:>6} {:<9} {:>9} {:>9} {:>10} {:>12}  {}",
        "RemoteAddress", "Weight", "State", "ActiveConn", "InActConn", "Packets", "Bytes", "MAC"
    );
    for s in data["services"].as_array().into_iter().flatten() {
        let vip = format!("{}:{}", s["vip"].as_str().unwrap_or("?"), n(s, "port"));
        println!(
            "{:<5} {:<24} {:<10} {:<5} ({})",
            s["protocol"].as_str().unwrap_or("?").to_uppercase(),
            vip,
            s["scheduler"].as_str().unwrap_or("?"),
            s["mode"].as_str().unwrap_or("?"),
            s["name"].as_str().unwrap_or("?"),
        );
        for r in s["real_servers"].as_array().into_iter().flatten() {
            println!(
                "  -> {:<21} {:>6} {:<9} {:>9} {:>9} {:>10} {:>12}  {}{}",
                r["address"].as_str().unwrap_or("?"),
                n(r, "weight"),
                r["state"].as_str().unwrap_or("?"),
                n(r, "active_flows"),
                n(r, "inactive_flows"),
                n(r, "packets"),
                n(r, "bytes"),
                r["mac"].as_str().unwrap_or("-"),
                r["note"].as_str().map(|s| format!("  [{s}]")).unwrap_or_default(),
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
        "rescheduled",
        "arp_replies",
        "arp_requests",
        "ring_drops",
        "workers",
        "generation",
        "reloads",
        "reload_failures",
    ] {
        println!("{k:<20} {}", n(data, k));
    }
    println!("drops:");
    if let Some(d) = data["drops"].as_object() {
        for (k, v) in d {
            println!("  {k:<18} {}", v.as_u64().unwrap_or(0));
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = socket_path(args.socket);
    let (req, json) = match args.cmd {
        Cmd::List { json } => (Request::List, json),
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
        print_list(&resp.data);
    } else if is_stats {
        print_stats(&resp.data);
    } else if let Some(m) = resp.data.get("message").and_then(Value::as_str) {
        println!("{m}");
    }
    ExitCode::SUCCESS
}
