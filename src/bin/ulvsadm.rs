//! `ulvsadm`: the control client (argument parsing and output formatting
//! only; the protocol is `ulvs::control::ctl`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use ulvs::cli::ulvsadm::{Args, Cmd, OnOff, Proto};
use ulvs::control::ctl::{self, call, call_waiting, Request};
use ulvs::control::rates::Rates;
use ulvs::control::snapshot::{Flows, List, ServerSnap, ServiceSnap, Stats, SyncSnap, STAT_FIELDS};
use ulvs::control::trace::Trace;

/// How long `ulvsadm list` and `flows` wait for the next byte of the
/// answer (a flow listing waits up to 2 s for the workers first). The
/// director streams a listing as the client reads it, so a long one (tens
/// of megabytes at 200,000 servers) takes as long as it takes.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `ulvsadm reload` checks whether it should say it still waits.
const RELOAD_TICK: Duration = Duration::from_secs(5);

fn socket_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("ULVS_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ulvs::control::config::DEFAULT_CONTROL_SOCKET))
}

/// Which columns `list` shows (as `ipvsadm -L -n`, `--stats`, `--rate`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    Conns,
    Stats,
    Rate,
}

/// The totals and rates a service and a real server both have.
struct Traffic<'a> {
    conns: u64,
    packets: u64,
    out_packets: u64,
    bytes: u64,
    out_bytes: u64,
    rates: &'a Rates,
}

/// `From<&$snap>` for each snapshot type that carries the traffic fields.
macro_rules! traffic_from {
    ($($snap:ty),*) => {$(
        impl<'a> From<&'a $snap> for Traffic<'a> {
            fn from(s: &'a $snap) -> Self {
                Traffic {
                    conns: s.conns,
                    packets: s.packets,
                    out_packets: s.out_packets,
                    bytes: s.bytes,
                    out_bytes: s.out_bytes,
                    rates: &s.rates,
                }
            }
        }
    )*};
}

traffic_from!(ServiceSnap, ServerSnap);

/// The `--stats` or `--rate` columns.
fn traffic_columns(t: &Traffic, view: View) -> String {
    if view == View::Rate {
        let r = t.rates;
        format!(
            "{:>8.0} {:>10.0} {:>10.0} {:>12.0} {:>12.0}",
            r.conns_per_s, r.in_packets_per_s, r.out_packets_per_s, r.in_bytes_per_s, r.out_bytes_per_s
        )
    } else {
        format!(
            "{:>8} {:>10} {:>10} {:>12} {:>12}",
            t.conns, t.packets, t.out_packets, t.bytes, t.out_bytes
        )
    }
}

fn server_columns(r: &ServerSnap, view: View) -> String {
    match view {
        View::Conns => format!(
            "{:>6} {:<9} {:>10} {:>10}",
            r.weight, r.state, r.active_flows, r.inactive_flows
        ),
        _ => traffic_columns(&r.into(), view),
    }
}

/// `ulvsadm list`: through one buffer (200,000 servers are as many lines,
/// and stdout writes each line by itself otherwise).
fn print_list(list: &List, view: View, sync: Option<&SyncSnap>) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    // A closed stdout (`| head`) ends the listing quietly.
    let _ = write_list(&mut out, list, view, sync).and_then(|()| out.flush());
}

fn write_list(
    out: &mut impl std::io::Write,
    list: &List,
    view: View,
    sync: Option<&SyncSnap>,
) -> std::io::Result<()> {
    writeln!(out, "ulvs director (userspace IPVS-style)")?;
    for line in sync.map(SyncSnap::peer_lines).unwrap_or_default() {
        writeln!(out, "{line}")?;
    }
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
    writeln!(out, "Prot LocalAddress:Port            Scheduler Mode  Name")?;
    writeln!(out, "  -> RemoteAddress:Port          {hdr}")?;
    for s in &list.services {
        let vip = s.vip_port();
        let svc_cols = if view == View::Conns {
            String::new()
        } else {
            traffic_columns(&s.into(), view)
        };
        writeln!(
            out,
            "{:<4} {:<26} {:<9} {:<5} {} {}",
            s.protocol.to_uppercase(),
            vip,
            s.scheduler,
            s.mode,
            s.name,
            svc_cols
        )?;
        for r in &s.real_servers {
            let mut extra = String::new();
            if view == View::Conns {
                extra.push_str(&format!("  mac {}", r.mac.as_deref().unwrap_or("-")));
                if let Some(h) = &r.health_reason {
                    extra.push_str(&format!("  [health: {h}]"));
                }
                if let Some(note) = &r.note {
                    extra.push_str(&format!("  [{note}]"));
                }
            }
            writeln!(out, "  -> {:<26} {}{}", r.address, server_columns(r, view), extra)?;
        }
    }
    Ok(())
}

fn print_stats(stats: &Stats) {
    for f in STAT_FIELDS {
        println!("{:<27} {}", f.key, (f.get)(stats));
    }
    println!("{:<27} {}", "announcing", on_off(stats.announcing));
    if let Some(routes) = &stats.announced_routes {
        let shown = if routes.is_empty() {
            "none".to_string()
        } else {
            routes.join(" ")
        };
        println!("{:<27} {shown}", "announced_routes");
    }
    println!("drops:");
    for (k, v) in &stats.drops {
        println!("  {k:<18} {v}");
    }
    let listeners = [
        ("control", &stats.control_connections),
        ("http", &stats.http_connections),
    ]
    .into_iter()
    .filter_map(|(l, c)| Some((l, c.as_ref()?)));
    for (name, c) in listeners {
        println!("{name} connections:");
        for (k, v) in c.fields() {
            println!("  {k:<18} {v}");
        }
    }
    if let Some(s) = &stats.sync {
        print_sync(s);
    }
}

/// The `sync` part of `ulvsadm stats`.
fn print_sync(s: &SyncSnap) {
    println!(
        "sync: listen {} id {} {} refresh {} ms",
        s.listen,
        s.id,
        if s.authenticated { "hmac-sha256" } else { "no-key" },
        s.refresh_ms
    );
    for (k, v) in [
        ("datagrams_sent", s.datagrams_sent),
        ("flows_sent", s.flows_sent),
        ("send_errors", s.send_errors),
        ("datagrams_received", s.datagrams_received),
        ("flows_received", s.flows_received),
        ("notes_full", s.notes_full),
        ("synced_full", s.synced_full),
        ("notes_unresolved", s.notes_unresolved),
        ("bulk_served", s.bulk_served),
        ("bulk_walk_timeouts", s.bulk_walk_timeouts),
    ] {
        println!("  {k:<25} {v}");
    }
    println!("  rejected:");
    for (k, v) in &s.rejected {
        println!("    {k:<23} {v}");
    }
    for line in s.peer_lines() {
        println!("  {line}");
    }
}

/// The `data` of a reply as the type the director serialized it from.
fn decode<T: DeserializeOwned>(data: &Value) -> Result<T, String> {
    T::deserialize(data).map_err(|e| format!("bad answer from the daemon: {e}"))
}

/// `ulvsadm flows` as `ipvsadm -Lnc` prints connections (expiry mm:ss).
fn print_flows(f: &Flows) {
    println!(
        "{:<4} {:>7} {:<11} {:<21} {:<21} {:<21} {:<21} Service",
        "Pro", "Expire", "State", "Source", "Virtual", "Destination", "Origin"
    );
    for c in &f.flows {
        println!(
            "{:<4} {:>4}:{:02} {:<11} {:<21} {:<21} {:<21} {:<21} {}",
            c.protocol.to_uppercase(),
            c.expires_in / 60,
            c.expires_in % 60,
            c.state.to_uppercase(),
            c.client,
            c.vip,
            c.server,
            c.origin,
            c.service
        );
    }
    if f.truncated {
        println!("(truncated: more flows than one listing holds)");
    }
    if f.workers_answered < f.workers {
        println!(
            "(incomplete: {} of {} workers answered in time)",
            f.workers_answered, f.workers
        );
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The answer of `announce`: the state, and a message when it was set.
#[derive(Deserialize)]
struct Announcing {
    announcing: bool,
    #[serde(default)]
    message: Option<String>,
}

/// The answer of `check`.
#[derive(Deserialize)]
struct Forwarding {
    forwarding: bool,
    reason: Option<String>,
}

/// `ulvsadm check`: 0 when the director forwards, else 1 with the reason
/// on one line, whatever the failure (no director is a reason too).
fn check(socket: &std::path::Path, json: bool) -> ExitCode {
    let answer = call(socket, &Request::Check, Duration::from_secs(5))
        .map_err(|e| e.to_string())
        .and_then(|r| {
            if r.ok {
                decode::<Forwarding>(&r.data)
            } else {
                Err(r.error.unwrap_or_else(|| "failed".into()))
            }
        });
    let (forwarding, line) = match answer {
        Ok(Forwarding { forwarding: true, .. }) => (true, "forwarding".to_string()),
        Ok(Forwarding { reason, .. }) => (false, reason.unwrap_or_else(|| "not forwarding".into())),
        Err(e) => (false, e),
    };
    if json {
        let reason = (!forwarding).then_some(&line);
        println!(
            "{}",
            serde_json::json!({ "forwarding": forwarding, "reason": reason })
        );
    } else {
        println!("{line}");
    }
    if forwarding {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The answer of drain, enable, weight and reload.
#[derive(Deserialize)]
struct Message {
    message: String,
}

/// The answer of `list` and `flows` with its `data` as the director wrote it.
#[derive(Deserialize)]
struct RawAnswer<'a> {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// `ulvsadm list` and `ulvsadm flows`, whose answers are tens of megabytes
/// at scale (200,000 servers; 100,000 flows): read while the director
/// sends ([`LIST_TIMEOUT`] without a byte ends the wait), decoded straight
/// into `T` and printed by `print`, or with `json` printed as the director
/// wrote `data` once it decodes (no `Value` tree of it either way).
fn listing<T: DeserializeOwned>(
    socket: &std::path::Path,
    req: &Request,
    json: bool,
    print: impl FnOnce(T),
) -> ExitCode {
    let line = match ctl::call_line(socket, req, LIST_TIMEOUT) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ulvsadm: {e}");
            return ExitCode::from(2);
        }
    };
    let bad = |e: &dyn std::fmt::Display| {
        eprintln!("ulvsadm: bad answer from the daemon: {e}");
        ExitCode::from(2)
    };
    let answer: RawAnswer = match serde_json::from_slice(&line) {
        Ok(a) => a,
        Err(e) => return bad(&e),
    };
    if !answer.ok {
        eprintln!("ulvsadm: {}", answer.error.unwrap_or_else(|| "failed".into()));
        return ExitCode::from(1);
    }
    let Some(raw) = answer.data else {
        return bad(&"no data");
    };
    let v: T = match serde_json::from_str(raw.get()) {
        Ok(v) => v,
        Err(e) => return bad(&e),
    };
    if json {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) ends the listing quietly.
        let _ = out
            .write_all(raw.get().as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
    } else {
        print(v);
    }
    ExitCode::SUCCESS
}

/// `list`'s data: the contract's `services` and the sync peers' state.
#[derive(Deserialize)]
struct ListData {
    services: Vec<ServiceSnap>,
    /// Decoded apart, so that a sync part this client cannot read leaves
    /// the listing (as with `--json` off before).
    #[serde(default)]
    sync: Option<Value>,
}

/// `ulvsadm list [--json]`.
fn list(socket: &std::path::Path, view: View, json: bool) -> ExitCode {
    listing(socket, &Request::List, json, |d: ListData| {
        let list = List { services: d.services };
        let sync: Option<SyncSnap> = d.sync.as_ref().and_then(|s| decode(s).ok());
        print_list(&list, view, sync.as_ref());
    })
}

/// Print `data` as it came (`json`) or decoded as a `T` by `print`.
fn show<T: DeserializeOwned>(data: &Value, json: bool, print: impl FnOnce(&T)) -> Result<(), String> {
    let v: T = decode(data)?;
    if json {
        println!("{data}");
    } else {
        print(&v);
    }
    Ok(())
}

/// Print the reply to `req`.
fn print_reply(req: &Request, data: &Value, json: bool) -> Result<(), String> {
    match req {
        Request::Stats => show(data, json, print_stats)?,
        Request::Announce { .. } => show(data, json, |a: &Announcing| {
            println!("{}", a.message.as_deref().unwrap_or(on_off(a.announcing)));
        })?,
        Request::Trace { .. } => show(data, json, |t: &Trace| {
            for l in t.lines() {
                println!("{l}");
            }
        })?,
        _ => show(data, json, |m: &Message| println!("{}", m.message))?,
    }
    Ok(())
}

/// `ulvsadm import-keepalived`: the config on stdout, the notes on stderr;
/// 0 when all was translated, 3 when some was not, 1 when unreadable.
fn import_keepalived(file: &std::path::Path, interface: Option<String>, json: bool) -> ExitCode {
    use ulvs::control::import::keepalived::{import, Options};
    match import(file, &Options { interface }) {
        Ok(i) => {
            if json {
                let notes: Vec<Value> = i
                    .notes
                    .iter()
                    .map(|n| serde_json::json!({ "file": n.loc.file, "line": n.loc.line, "what": n.what }))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "config": i.yaml, "services": i.services, "notes": notes })
                );
            } else {
                print!("{}", i.yaml);
            }
            for n in &i.notes {
                eprintln!("{n}");
            }
            if i.notes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("ulvsadm: {e}");
            ExitCode::from(1)
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
        Cmd::Drain {
            service,
            address,
            json,
        } => (Request::Drain { service, address }, json),
        Cmd::Enable {
            service,
            address,
            json,
        } => (Request::Enable { service, address }, json),
        Cmd::Weight {
            service,
            address,
            weight,
            json,
        } => (
            Request::Weight {
                service,
                address,
                weight,
            },
            json,
        ),
        Cmd::Reload { json } => (Request::Reload, json),
        Cmd::Check { json } => return check(&socket, json),
        Cmd::ImportKeepalived {
            file,
            interface,
            json,
        } => return import_keepalived(&file, interface, json),
        Cmd::Flows {
            json,
            service,
            server,
            client,
        } => (
            Request::Flows {
                service,
                server,
                client,
            },
            json,
        ),
        Cmd::Trace {
            protocol,
            client,
            vip,
            json,
        } => (
            Request::Trace {
                protocol: match protocol {
                    Proto::Tcp => "tcp".into(),
                    Proto::Udp => "udp".into(),
                },
                client,
                vip,
            },
            json,
        ),
        Cmd::Announce { state, json } => (
            Request::Announce {
                on: state.map(|s| s == OnOff::On),
            },
            json,
        ),
    };
    match req {
        Request::List => return list(&socket, view, json),
        Request::Flows { .. } => return listing(&socket, &req, json, |f: Flows| print_flows(&f)),
        _ => {}
    }
    let answer = if req == Request::Reload {
        // The director answers when the reload is done or refused: at
        // 10,000 services that takes seconds. Say once that it is waited for.
        let mut said = false;
        call_waiting(&socket, &req, ctl::RELOAD_TIMEOUT, RELOAD_TICK, |waited| {
            if !said {
                said = true;
                eprintln!(
                    "ulvsadm: the director is still reloading ({:.0} s so far); waiting up to {} s for its answer",
                    waited.as_secs_f64(),
                    ctl::RELOAD_TIMEOUT.as_secs()
                );
            }
        })
    } else {
        call(&socket, &req, ctl::TIMEOUT)
    };
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ulvsadm: {e}");
            if req == Request::Reload && matches!(e, ctl::ClientError::Timeout { .. }) {
                eprintln!(
                    "ulvsadm: the reload may still complete: the director logs \"reloaded\" or \"reload rejected\" when done"
                );
            }
            return ExitCode::from(2);
        }
    };
    if !resp.ok {
        eprintln!("ulvsadm: {}", resp.error.unwrap_or_else(|| "failed".into()));
        return ExitCode::from(1);
    }
    // `--json` prints the director's object as it came (a newer director's
    // extra fields included), once it is known to decode.
    match print_reply(&req, &resp.data, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ulvsadm: {e}");
            ExitCode::from(2)
        }
    }
}
