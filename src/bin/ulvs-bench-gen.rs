//! `ulvs-bench-gen`: the benchmark's traffic tools (not part of the director).
//!
//! * `send` writes prebuilt UDP or TCP SYN frames of one size to a given MAC
//!   from an AF_PACKET socket in `sendmmsg` batches, cycling over `--flows`
//!   distinct 5-tuples (source IPs and ports vary) so that flows spread over
//!   the real servers. It stops by itself after `--seconds` or `--count`,
//!   whichever comes first, and prints `{sent, seconds, pps, ...}` as JSON.
//! * `count` counts, for `--seconds`, the frames arriving on one or more
//!   interfaces whose destination MAC is the interface's own (or `--mac`). It
//!   prints `{frames, pps, ...}` as JSON, and can sample the CPU time of given
//!   processes and CPUs over exactly the same window.
//!
//! Why `count` works this way: a classic BPF filter on the destination MAC
//! runs in the kernel for each frame, and the socket's receive buffer is kept
//! tiny and never read, so a matching frame costs a filter run and a counter
//! increment, never a copy to userspace; `PACKET_STATISTICS` returns queued +
//! dropped, that is every frame that passed the filter. Unlike interface
//! counters (`rx_packets`) this counts only frames addressed to the server,
//! so a bridge that floods unknown unicast cannot inflate the result; the
//! interface counter delta is still reported next to it as a cross-check.
//!
//! IPv6: a `--dst-ip` that is an IPv6 address makes IPv6 frames (the
//! sources then count up from `--src-ip`, default 2001:db8:2::1); the
//! frame sizes are the same wire sizes, so an IPv6 frame carries 20 bytes
//! less payload than an IPv4 one of the same `--size`.
//!
//! Safety net: every address written into a frame must be in 198.18.0.0/15
//! (RFC 2544 benchmarking space) or 2001:db8::/32 (RFC 3849 documentation
//! space), one family per run, and both bounds are always in force.
//!
//! No `unsafe` here: the sockets are `ulvs::io::sys`'s, like the director's.
#![deny(unsafe_code)]

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use ulvs::io::bpf::Asm;
use ulvs::io::sys::{self, FilterCounter, PacketSender};
use ulvs::wire::builder::{PacketBuilder, PacketBuilder6};
use ulvs::wire::{tcp, udp};

/// Longest bound accepted for `--seconds`.
const MAX_SECONDS: f64 = 3600.0;

#[derive(Parser, Debug)]
#[command(version, about = "ulvs benchmark traffic generator and frame counter")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send frames to a MAC address until --seconds or --count is reached.
    Send(SendArgs),
    /// Count frames addressed to an interface's MAC for --seconds.
    Count(CountArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    Udp,
    TcpSyn,
}

#[derive(Parser, Debug)]
struct SendArgs {
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// Destination MAC (the box under test).
    #[arg(long, value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source MAC (default: the interface's own).
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Destination IP (the VIP), in 198.18.0.0/15 or 2001:db8::/32.
    #[arg(long)]
    dst_ip: IpAddr,
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
    /// First source IP, of the destination's family (default 198.18.2.1 or
    /// 2001:db8:2::1).
    #[arg(long)]
    src_ip: Option<IpAddr>,
    /// Number of consecutive source IPs used.
    #[arg(long, default_value_t = 16)]
    src_ips: u32,
    /// First source port.
    #[arg(long, default_value_t = 1024)]
    src_port: u16,
    /// Distinct 5-tuples, cycled over (each a prebuilt frame).
    #[arg(long, default_value_t = 1024)]
    flows: u32,
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    proto: Proto,
    /// Frame length in bytes from the destination MAC to the end of the
    /// payload (veth carries no FCS): 64 and 1400 are the usual choices.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Frames per sendmmsg call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Stop after this many frames.
    #[arg(long, default_value_t = 100_000_000)]
    count: u64,
    /// Also stop once this file exists (looked for every 10 ms), so that a
    /// counting window that opened late still lies inside the run.
    #[arg(long)]
    until_file: Option<std::path::PathBuf>,
    /// Send no faster than this (frames per second).
    #[arg(long)]
    pps_limit: Option<u64>,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

#[derive(Parser, Debug)]
struct CountArgs {
    /// Interface to count on (repeatable).
    #[arg(long, required = true)]
    iface: Vec<String>,
    /// Destination MAC to count, one per --iface in order (default: the
    /// interface's own MAC).
    #[arg(long, value_parser = parse_mac)]
    mac: Vec<[u8; 6]>,
    /// Length of the counting window.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Also report the CPU use of a process over the window, as NAME=PID (repeatable).
    #[arg(long)]
    watch_pid: Vec<String>,
    /// Also report the busy share of a CPU over the window (repeatable).
    #[arg(long)]
    watch_cpu: Vec<usize>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "'{s}' is not a MAC address (six hex bytes separated by ':')"
        ));
    }
    let mut mac = [0u8; 6];
    for (d, p) in mac.iter_mut().zip(parts) {
        *d = u8::from_str_radix(p, 16).map_err(|_| format!("'{s}' is not a MAC address"))?;
    }
    Ok(mac)
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// 198.18.0.0/15 and 2001:db8::/32, the only addresses this tool writes
/// into frames.
fn in_bench_range(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => u32::from(v) & 0xfffe_0000 == 0xc612_0000,
        IpAddr::V6(v) => v.segments()[..2] == [0x2001, 0x0db8],
    }
}

/// The `i`-th address after `ip` in its family, if there is one.
fn nth_after(ip: IpAddr, i: u32) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => u32::from(v).checked_add(i).map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        IpAddr::V6(v) => u128::from(v)
            .checked_add(u128::from(i))
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    }
}

fn check_seconds(s: f64) -> Result<Duration, String> {
    if !(s > 0.0 && s <= MAX_SECONDS) {
        return Err(format!("--seconds must be in (0, {MAX_SECONDS}]"));
    }
    Ok(Duration::from_secs_f64(s))
}

// ------------------------------------------------------------------ interfaces

fn read_trim(path: &str) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

fn ifindex(name: &str) -> io::Result<i32> {
    read_trim(&format!("/sys/class/net/{name}/ifindex"))?
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ifindex"))
}

fn if_mac(name: &str) -> io::Result<[u8; 6]> {
    parse_mac(&read_trim(&format!("/sys/class/net/{name}/address"))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn if_stat(name: &str, stat: &str) -> Option<u64> {
    read_trim(&format!("/sys/class/net/{name}/statistics/{stat}"))
        .ok()?
        .parse()
        .ok()
}

// ------------------------------------------------------------------ frames

struct FrameSpec {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: Proto,
    size: usize,
    id: u16,
}

/// One complete Ethernet + IPv4 or IPv6 + UDP/TCP SYN frame with valid
/// checksums (IPv4: DF, TTL 64, identification `id`; IPv6: hop limit 64);
/// the payload fills the rest of `size` with byte `k * 31` at offset `k` of
/// the transport segment. `src` and `dst` are of one family (checked by
/// [`send`]).
fn build_frame(s: &FrameSpec) -> Vec<u8> {
    let ip_end = match s.dst {
        IpAddr::V4(_) => 34,
        IpAddr::V6(_) => 54,
    };
    let filler = |l4_header: usize| -> Vec<u8> {
        (l4_header..s.size - ip_end)
            .map(|k| (k as u8).wrapping_mul(31))
            .collect()
    };
    let seq = u32::from(s.id) * 7919;
    match (s.src, s.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let b = PacketBuilder::new(src, dst)
                .macs(s.dst_mac, s.src_mac)
                .ident(s.id);
            match s.proto {
                Proto::Udp => b.udp(s.sport, s.dport, &filler(udp::HEADER_LEN)),
                Proto::TcpSyn => {
                    b.seq(seq)
                        .window(65535)
                        .tcp(s.sport, s.dport, tcp::SYN, &filler(tcp::MIN_HEADER_LEN))
                }
            }
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let b = PacketBuilder6::new(src, dst).macs(s.dst_mac, s.src_mac);
            match s.proto {
                Proto::Udp => b.udp(s.sport, s.dport, &filler(udp::HEADER_LEN)),
                Proto::TcpSyn => b
                    .seq(seq)
                    .tcp(s.sport, s.dport, tcp::SYN, &filler(tcp::MIN_HEADER_LEN)),
            }
        }
        _ => panic!("build_frame: source and destination of different families"),
    }
}

// ------------------------------------------------------------------ send

fn send(a: &SendArgs) -> Result<Value, String> {
    let limit = check_seconds(a.seconds)?;
    let ip_header = if a.dst_ip.is_ipv6() { 40 } else { 20 };
    let min = match a.proto {
        Proto::Udp => 14 + ip_header + 8,
        Proto::TcpSyn => 14 + ip_header + 20,
    };
    if a.size < min.max(60) || a.size > 1514 {
        return Err(format!("--size must be in {}..=1514", min.max(60)));
    }
    if a.flows == 0 || a.flows > 1 << 20 || a.src_ips == 0 {
        return Err("--flows must be 1..=1048576 and --src-ips at least 1".into());
    }
    if a.batch == 0 || a.batch > 1024 {
        return Err("--batch must be 1..=1024".into());
    }
    if a.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let src_ip = match (a.src_ip, a.dst_ip) {
        (Some(s), d) if s.is_ipv6() != d.is_ipv6() => {
            return Err("--src-ip and --dst-ip must be of one family".into())
        }
        (Some(s), _) => s,
        (None, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
        (None, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1)),
    };
    let last_src = nth_after(src_ip, a.src_ips - 1);
    if !in_bench_range(a.dst_ip) || !in_bench_range(src_ip) || !last_src.is_some_and(in_bench_range) {
        return Err("--dst-ip and every source IP must be in 198.18.0.0/15 or 2001:db8::/32".into());
    }
    let ports_per_ip = a.flows.div_ceil(a.src_ips);
    if u32::from(a.src_port) + ports_per_ip > 65536 {
        return Err("--src-port + flows/src-ips exceeds 65535".into());
    }
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))?;
    }
    let idx = ifindex(&a.iface).map_err(|e| format!("interface {}: {e}", a.iface))?;
    let src_mac = match a.src_mac {
        Some(m) => m,
        None => if_mac(&a.iface).map_err(|e| format!("interface {}: {e}", a.iface))?,
    };

    let frames: Vec<Vec<u8>> = (0..a.flows)
        .map(|i| {
            build_frame(&FrameSpec {
                dst_mac: a.dst_mac,
                src_mac,
                src: nth_after(src_ip, i % a.src_ips).expect("checked above"),
                dst: a.dst_ip,
                sport: (u32::from(a.src_port) + i / a.src_ips) as u16,
                dport: a.dst_port,
                proto: a.proto,
                size: a.size,
                id: i as u16,
            })
        })
        .collect();

    let mut sock = PacketSender::new(idx, a.batch, 4 << 20)
        .map_err(|e| format!("AF_PACKET sender on {}: {e} (run as root)", a.iface))?;

    // The benchmark starts its counting window only after this line (see
    // `measure` in scripts/bench), and compares the wall-clock times.
    eprintln!("ulvs-bench-gen: sending");
    let started_unix = unix_now();
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next = 0usize;
    let mut calls: u64 = 0;
    let mut busy_retries: u64 = 0;
    let mut errors: u64 = 0;
    let mut last_error = String::new();
    let mut stopped_by = "count";
    let mut looked = Duration::ZERO;
    while sent < a.count {
        let now = start.elapsed();
        if now >= limit {
            stopped_by = "seconds";
            break;
        }
        if let Some(f) = &a.until_file {
            if now >= looked + Duration::from_millis(10) {
                looked = now;
                if f.exists() {
                    stopped_by = "until_file";
                    break;
                }
            }
        }
        if let Some(pps) = a.pps_limit {
            let due = Duration::from_secs_f64(sent as f64 / pps.max(1) as f64);
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(10)));
                continue;
            }
        }
        let mut n = a.batch.min((a.count - sent) as usize);
        if let Some(pps) = a.pps_limit {
            // Keep bursts short when rate-limited.
            n = n.min((pps / 1000).max(1) as usize);
        }
        let r = sock.send_cycle(&frames, next, n);
        calls += 1;
        let done = match r {
            Ok(done) => done,
            Err(e) => {
                match e.raw_os_error() {
                    // The device or the socket is full: back off briefly and
                    // retry the same frames (trafgen gives up here).
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                        busy_retries += 1;
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    Some(libc::EINTR) => {}
                    _ => {
                        errors += 1;
                        last_error = e.to_string();
                        if errors > 1000 {
                            return Err(format!("sendmmsg keeps failing: {e}"));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                continue;
            }
        };
        sent += done as u64;
        next = (next + done) % frames.len();
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "mode": "send",
        "sent": sent,
        "seconds": round3(secs),
        "pps": (sent as f64 / secs).round(),
        "gbps": round3(sent as f64 * a.size as f64 * 8.0 / secs / 1e9),
        "size": a.size,
        "proto": match a.proto { Proto::Udp => "udp", Proto::TcpSyn => "tcp-syn" },
        "flows": a.flows,
        "dst_mac": mac_str(&a.dst_mac),
        "dst_ip": a.dst_ip.to_string(),
        "sendmmsg_calls": calls,
        "busy_retries": busy_retries,
        "errors": errors,
        "last_error": last_error,
        "stopped_by": stopped_by,
        "started_unix": started_unix,
        "ended_unix": unix_now(),
    }))
}

/// Wall-clock seconds since the epoch, for lining up the generator's run
/// with the counter's window (they are separate processes).
fn unix_now() -> f64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (t.as_secs_f64() * 1000.0).round() / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ------------------------------------------------------------------ count

/// Classic BPF: accept (first 64 bytes of) frames whose destination MAC is `mac`.
fn mac_filter(mac: &[u8; 6]) -> Vec<libc::sock_filter> {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Reject;
    use libc::{BPF_ABS, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let lo = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut a = Asm::new();
    a.push(op(BPF_LD | BPF_W | BPF_ABS, 0));
    a.push_branch(op(BPF_JMP | BPF_JEQ | BPF_K, hi), None, Some(Reject));
    a.push(op(BPF_LD | BPF_H | BPF_ABS, 4));
    a.push_branch(op(BPF_JMP | BPF_JEQ | BPF_K, lo), None, Some(Reject));
    a.push(op(BPF_RET | BPF_K, 64));
    a.label(Reject);
    a.push(op(BPF_RET | BPF_K, 0));
    a.finish()
}

fn counter_socket(iface: &str, mac: &[u8; 6]) -> Result<FilterCounter, String> {
    let idx = ifindex(iface).map_err(|e| format!("interface {iface}: {e}"))?;
    FilterCounter::new(idx, &mac_filter(mac))
        .map_err(|e| format!("AF_PACKET counter on {iface}: {e} (run as root)"))
}

/// CPU time of a process in nanoseconds: the scheduler's exact run time
/// (`/proc/PID/task/*/schedstat`) summed over its threads, or else utime +
/// stime from `/proc/PID/stat`, which is sampled at each timer tick.
fn proc_cpu_ns(pid: &str, tck: f64) -> Option<(u64, &'static str)> {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let ns = fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()));
            if let Some(ns) = ns {
                total += ns;
                found = true;
            }
        }
    }
    if found {
        return Some((total, "schedstat"));
    }
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 of stat(5).
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(((ticks as f64 / tck * 1e9) as u64, "ticks"))
}

/// user, nice, system, idle, iowait, irq, softirq, steal of one CPU, in ticks.
fn cpu_ticks(cpu: usize) -> Option<[u64; 8]> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu}");
    let line = s
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let mut out = [0u64; 8];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x;
    }
    Some(out)
}

fn clk_tck() -> f64 {
    sys::clock_ticks_per_second().map_or(100.0, |t| t as f64)
}

fn count(a: &CountArgs) -> Result<Value, String> {
    let window = check_seconds(a.seconds)?;
    if !a.mac.is_empty() && a.mac.len() != a.iface.len() {
        return Err("give either no --mac or one per --iface".into());
    }
    let mut socks = Vec::new();
    for (i, ifn) in a.iface.iter().enumerate() {
        let mac = match a.mac.get(i) {
            Some(m) => *m,
            None => if_mac(ifn).map_err(|e| format!("interface {ifn}: {e}"))?,
        };
        socks.push((ifn.clone(), mac, counter_socket(ifn, &mac)?));
    }
    let mut pids = Vec::new();
    for w in &a.watch_pid {
        let (name, pid) = w
            .split_once('=')
            .ok_or_else(|| format!("--watch-pid '{w}': expected NAME=PID"))?;
        pids.push((name.to_string(), pid.to_string()));
    }

    // Open the window: reset the socket counters, read every start value.
    for (_, _, fd) in &socks {
        fd.take().map_err(|e| format!("PACKET_STATISTICS: {e}"))?;
    }
    let rx0: Vec<Option<u64>> = socks.iter().map(|(i, _, _)| if_stat(i, "rx_packets")).collect();
    let tck = clk_tck();
    let p0: Vec<Option<(u64, &str)>> = pids.iter().map(|(_, p)| proc_cpu_ns(p, tck)).collect();
    let c0: Vec<Option<[u64; 8]>> = a.watch_cpu.iter().map(|c| cpu_ticks(*c)).collect();
    let started_unix = unix_now();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let mut matched = Vec::new();
    for (_, _, fd) in &socks {
        matched.push(fd.take().map_err(|e| format!("PACKET_STATISTICS: {e}"))?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let ended_unix = unix_now();
    let rx1: Vec<Option<u64>> = socks.iter().map(|(i, _, _)| if_stat(i, "rx_packets")).collect();
    let p1: Vec<Option<(u64, &str)>> = pids.iter().map(|(_, p)| proc_cpu_ns(p, tck)).collect();
    let c1: Vec<Option<[u64; 8]>> = a.watch_cpu.iter().map(|c| cpu_ticks(*c)).collect();

    let total: u64 = matched.iter().sum();
    let ifaces: Vec<Value> = socks
        .iter()
        .enumerate()
        .map(|(i, (ifn, mac, _))| {
            let rx = match (rx0[i], rx1[i]) {
                (Some(a), Some(b)) => json!(b.saturating_sub(a)),
                _ => Value::Null,
            };
            json!({"iface": ifn, "mac": mac_str(mac), "frames": matched[i],
                   "pps": (matched[i] as f64 / secs).round(), "rx_packets_delta": rx})
        })
        .collect();
    let mut procs = serde_json::Map::new();
    for (i, (name, pid)) in pids.iter().enumerate() {
        let v = match (p0[i], p1[i]) {
            (Some((a, _)), Some((b, src))) => json!({"pid": pid, "source": src,
                "cpu_pct": round3(b.saturating_sub(a) as f64 / 1e9 / secs * 100.0)}),
            _ => json!({"pid": pid, "cpu_pct": null}),
        };
        procs.insert(name.clone(), v);
    }
    let mut cpus = serde_json::Map::new();
    for (i, cpu) in a.watch_cpu.iter().enumerate() {
        let v = match (c0[i], c1[i]) {
            (Some(a), Some(b)) => {
                let d: Vec<u64> = a
                    .iter()
                    .zip(b.iter())
                    .map(|(x, y)| y.saturating_sub(*x))
                    .collect();
                let all: u64 = d.iter().sum::<u64>().max(1);
                let share = |t: u64| round3(t as f64 / all as f64 * 100.0);
                json!({"user_pct": share(d[0] + d[1]), "system_pct": share(d[2]),
                       "irq_pct": share(d[5]), "softirq_pct": share(d[6]), "steal_pct": share(d[7]),
                       "busy_pct": share(all - d[3] - d[4])})
            }
            _ => Value::Null,
        };
        cpus.insert(cpu.to_string(), v);
    }
    Ok(json!({
        "mode": "count",
        "started_unix": started_unix,
        "ended_unix": ended_unix,
        "frames": total,
        "seconds": round3(secs),
        "pps": (total as f64 / secs).round(),
        "ifaces": ifaces,
        "procs": procs,
        "cpus": cpus,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Send(a) => send(a),
        Cmd::Count(a) => count(a),
    };
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ulvs-bench-gen: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulvs::wire::builder;
    use ulvs::wire::checksum;

    fn spec(proto: Proto, size: usize) -> FrameSpec {
        FrameSpec {
            dst_mac: [2, 0, 0xc6, 0x12, 0, 3],
            src_mac: [2, 0, 0xc6, 0x12, 0xa0, 1],
            src: Ipv4Addr::new(198, 18, 2, 1).into(),
            dst: Ipv4Addr::new(198, 18, 100, 1).into(),
            sport: 1024,
            dport: 9,
            proto,
            size,
            id: 7,
        }
    }

    #[test]
    fn frames_have_valid_checksums() {
        for proto in [Proto::Udp, Proto::TcpSyn] {
            for size in [64, 1400] {
                let f = build_frame(&spec(proto, size));
                assert_eq!(f.len(), size);
                assert_eq!(checksum::sum(&f[14..34], 0), 0xffff, "ip header");
                let l4 = &f[34..];
                let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
                let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
                let pseudo = builder::pseudo_sum(src, dst, f[23], l4.len());
                assert_eq!(
                    checksum::sum(l4, u32::from(pseudo)),
                    0xffff,
                    "l4 {proto:?} {size}"
                );
            }
        }
    }

    /// IPv6 frames of the asked wire size, with checksums an independent
    /// parser (etherparse) accepts, to the asked addresses and port.
    #[test]
    fn ipv6_frames_have_valid_checksums() {
        use etherparse::{SlicedPacket, TransportSlice};
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8:2::1".parse().unwrap(),
            "2001:db8:100::1".parse().unwrap(),
        );
        // 62 and 74 bytes are the smallest IPv6 UDP and TCP frames.
        for (proto, smallest) in [(Proto::Udp, 64), (Proto::TcpSyn, 74)] {
            for size in [smallest, 78, 1400] {
                let f = build_frame(&FrameSpec {
                    src: src.into(),
                    dst: dst.into(),
                    ..spec(proto, size)
                });
                assert_eq!(f.len(), size);
                assert_eq!(&f[12..14], &[0x86, 0xdd]);
                let p = SlicedPacket::from_ethernet(&f).unwrap();
                let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
                    panic!("not IPv6")
                };
                assert_eq!(ip.header().source_addr(), src);
                assert_eq!(ip.header().destination_addr(), dst);
                match (&p.transport, proto) {
                    (Some(TransportSlice::Udp(u)), Proto::Udp) => {
                        let h = u.to_header();
                        assert_eq!(h.destination_port, 9);
                        let c = h.calc_checksum_ipv6_raw(src.octets(), dst.octets(), u.payload());
                        assert_eq!(c.unwrap(), h.checksum);
                    }
                    (Some(TransportSlice::Tcp(t)), Proto::TcpSyn) => {
                        assert!(t.syn() && !t.ack());
                        let h = t.to_header();
                        let c = h.calc_checksum_ipv6_raw(src.octets(), dst.octets(), t.payload());
                        assert_eq!(c.unwrap(), t.checksum());
                    }
                    (t, p) => panic!("{p:?}: {t:?}"),
                }
            }
        }
    }

    #[test]
    fn range_and_mac_parsing() {
        let ok = |s: &str| in_bench_range(s.parse().unwrap());
        assert!(ok("198.18.0.1"));
        assert!(ok("198.19.255.254"));
        assert!(!ok("198.20.0.1"));
        assert!(!ok("10.0.0.1"));
        assert!(ok("2001:db8::1"));
        assert!(ok("2001:db8:ffff::1"));
        assert!(!ok("2001:db9::1"));
        assert!(!ok("fe80::1"));
        assert!(
            !ok("::ffff:198.18.0.1"),
            "a mapped IPv4 address is IPv6, outside 2001:db8::/32"
        );
        assert_eq!(
            nth_after("2001:db8::ffff".parse().unwrap(), 1),
            Some("2001:db8::1:0".parse().unwrap())
        );
        assert_eq!(nth_after("255.255.255.255".parse().unwrap(), 1), None);
        assert_eq!(parse_mac("02:00:c6:12:00:0b"), Ok([2, 0, 0xc6, 0x12, 0, 0x0b]));
        assert!(parse_mac("02:00:c6:12:00").is_err());
    }

    #[test]
    fn filter_matches_mac_words() {
        let p = mac_filter(&[2, 0, 0xc6, 0x12, 0, 0x0b]);
        let got: Vec<_> = p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        // ld [0]; jeq hi, 0, 3; ldh [4]; jeq lo, 0, 1; ret 64; ret 0
        assert_eq!(
            got,
            [
                (0x20, 0, 0, 0),
                (0x15, 0, 3, 0x0200_c612),
                (0x28, 0, 0, 4),
                (0x15, 0, 1, 0x000b),
                (0x06, 0, 0, 64),
                (0x06, 0, 0, 0),
            ]
        );
    }
}
