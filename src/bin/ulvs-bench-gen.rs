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
//! Safety net: every address written into a frame must be in 198.18.0.0/15
//! (RFC 2544 benchmarking space) and both bounds are always in force.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
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
    /// Destination IP (the VIP), in 198.18.0.0/15.
    #[arg(long)]
    dst_ip: Ipv4Addr,
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
    /// First source IP, in 198.18.0.0/15.
    #[arg(long, default_value = "198.18.2.1")]
    src_ip: Ipv4Addr,
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

/// 198.18.0.0/15, the only addresses this tool writes into frames.
fn in_bench_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) & 0xfffe_0000 == 0xc612_0000
}

fn check_seconds(s: f64) -> Result<Duration, String> {
    if !(s > 0.0 && s <= MAX_SECONDS) {
        return Err(format!("--seconds must be in (0, {MAX_SECONDS}]"));
    }
    Ok(Duration::from_secs_f64(s))
}

// ------------------------------------------------------------------ syscalls

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value whose exact size is passed; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// An AF_PACKET raw socket created with protocol 0, so it receives nothing
/// until it is bound with a protocol.
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_packet(fd: &OwnedFd, ifindex: i32, proto: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is valid for the call and its size is passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

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

fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; CPU_SET only writes inside it (it
    // bounds-checks `cpu`), and sched_setaffinity reads exactly its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ frames

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct FrameSpec {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    proto: Proto,
    size: usize,
    id: u16,
}

/// One complete Ethernet + IPv4 + UDP/TCP frame with valid checksums; the
/// payload fills the rest of `size`.
fn build_frame(s: &FrameSpec) -> Vec<u8> {
    let mut f = vec![0u8; s.size];
    f[0..6].copy_from_slice(&s.dst_mac);
    f[6..12].copy_from_slice(&s.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = s.size - 14;
    let l4_len = ip_len - 20;
    let proto_num: u8 = match s.proto {
        Proto::Udp => 17,
        Proto::TcpSyn => 6,
    };
    {
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&s.id.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64;
        ip[9] = proto_num;
        ip[12..16].copy_from_slice(&s.src.octets());
        ip[16..20].copy_from_slice(&s.dst.octets());
        let c = csum_fold(csum_add(0, ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    for (i, b) in f[34..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let l4 = &mut f[34..];
    let csum_at = match s.proto {
        Proto::Udp => {
            l4[0..2].copy_from_slice(&s.sport.to_be_bytes());
            l4[2..4].copy_from_slice(&s.dport.to_be_bytes());
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4[6..8].fill(0);
            6
        }
        Proto::TcpSyn => {
            l4[0..2].copy_from_slice(&s.sport.to_be_bytes());
            l4[2..4].copy_from_slice(&s.dport.to_be_bytes());
            l4[4..8].copy_from_slice(&(u32::from(s.id) * 7919).to_be_bytes());
            l4[8..12].fill(0);
            l4[12] = 5 << 4;
            l4[13] = 0x02; // SYN
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            l4[16..20].fill(0);
            16
        }
    };
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&s.src.octets());
    pseudo[4..8].copy_from_slice(&s.dst.octets());
    pseudo[9] = proto_num;
    pseudo[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
    let mut c = csum_fold(csum_add(csum_add(0, &pseudo), l4));
    if c == 0 && s.proto == Proto::Udp {
        c = 0xffff;
    }
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

// ------------------------------------------------------------------ send

fn send(a: &SendArgs) -> Result<Value, String> {
    let limit = check_seconds(a.seconds)?;
    let min = match a.proto {
        Proto::Udp => 14 + 20 + 8,
        Proto::TcpSyn => 14 + 20 + 20,
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
    let last_src = u32::from(a.src_ip).checked_add(a.src_ips - 1).map(Ipv4Addr::from);
    if !in_bench_range(a.dst_ip) || !in_bench_range(a.src_ip) || !last_src.is_some_and(in_bench_range) {
        return Err("--dst-ip and every source IP must be in 198.18.0.0/15".into());
    }
    let ports_per_ip = a.flows.div_ceil(a.src_ips);
    if u32::from(a.src_port) + ports_per_ip > 65536 {
        return Err("--src-port + flows/src-ips exceeds 65535".into());
    }
    if let Some(cpu) = a.cpu {
        pin_to_cpu(cpu).map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))?;
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
                src: Ipv4Addr::from(u32::from(a.src_ip) + i % a.src_ips),
                dst: a.dst_ip,
                sport: (u32::from(a.src_port) + i / a.src_ips) as u16,
                dport: a.dst_port,
                proto: a.proto,
                size: a.size,
                id: i as u16,
            })
        })
        .collect();

    let sock = packet_socket().map_err(|e| format!("AF_PACKET socket: {e} (run as root)"))?;
    // Straight to the driver: no qdisc in the way of the measurement.
    setsockopt(&sock, libc::SOL_PACKET, PACKET_QDISC_BYPASS, &(1 as libc::c_int))
        .map_err(|e| e.to_string())?;
    let sndbuf: libc::c_int = 4 << 20;
    setsockopt(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &sndbuf)
        .or_else(|_| setsockopt(&sock, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf))
        .map_err(|e| e.to_string())?;
    // Protocol 0: bound to the interface for sending, receives nothing.
    bind_packet(&sock, idx, 0).map_err(|e| format!("bind to {}: {e}", a.iface))?;

    // SAFETY: iovec and mmsghdr are plain old data; all-zero is valid.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; a.batch];
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; a.batch];

    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next = 0usize;
    let mut calls: u64 = 0;
    let mut busy_retries: u64 = 0;
    let mut errors: u64 = 0;
    let mut last_error = String::new();
    let mut stopped_by = "count";
    while sent < a.count {
        let now = start.elapsed();
        if now >= limit {
            stopped_by = "seconds";
            break;
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
        for k in 0..n {
            let fr = &frames[(next + k) % frames.len()];
            iov[k].iov_base = fr.as_ptr() as *mut libc::c_void;
            iov[k].iov_len = fr.len();
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_len = 0;
        }
        // SAFETY: msgs[..n] point at iov[..n], which point into `frames`; all
        // stay alive and unmoved for the call; the kernel only reads them
        // (and writes msg_len).
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        calls += 1;
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The device or the socket is full: back off briefly and retry
                // the same frames (trafgen gives up here).
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
        let done = r as usize;
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
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ------------------------------------------------------------------ count

/// Classic BPF: accept (first 64 bytes of) frames whose destination MAC is `mac`.
fn mac_filter(mac: &[u8; 6]) -> [libc::sock_filter; 6] {
    let hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let lo = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    [
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        ins(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 3, hi),
        ins(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 4),
        ins(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, lo),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, 64),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ]
}

/// Every frame that passed the filter since the last call (queued + dropped);
/// reading resets the kernel's counters.
fn take_matched(fd: &OwnedFd) -> io::Result<u64> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` and `len` are valid and writable; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut st as *mut libc::tpacket_stats as *mut libc::c_void,
            &mut len,
        )
    })?;
    // The kernel already adds the drops into tp_packets for TPACKET_V1/V2 sockets.
    Ok(u64::from(st.tp_packets))
}

fn counter_socket(iface: &str, mac: &[u8; 6]) -> Result<OwnedFd, String> {
    let idx = ifindex(iface).map_err(|e| format!("interface {iface}: {e}"))?;
    let fd = packet_socket().map_err(|e| format!("AF_PACKET socket: {e} (run as root)"))?;
    let prog = mac_filter(mac);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // The filter and a tiny buffer go on before bind, so no frame is ever
    // copied to userspace: past the first few, matching frames are dropped
    // (and counted) right after the filter.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog).map_err(|e| format!("filter: {e}"))?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &(4096 as libc::c_int)).map_err(|e| e.to_string())?;
    setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &(1 as libc::c_int))
        .map_err(|e| e.to_string())?;
    bind_packet(&fd, idx, ETH_P_ALL).map_err(|e| format!("bind to {iface}: {e}"))?;
    Ok(fd)
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
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
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
        take_matched(fd).map_err(|e| format!("PACKET_STATISTICS: {e}"))?;
    }
    let rx0: Vec<Option<u64>> = socks.iter().map(|(i, _, _)| if_stat(i, "rx_packets")).collect();
    let tck = clk_tck();
    let p0: Vec<Option<(u64, &str)>> = pids.iter().map(|(_, p)| proc_cpu_ns(p, tck)).collect();
    let c0: Vec<Option<[u64; 8]>> = a.watch_cpu.iter().map(|c| cpu_ticks(*c)).collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let mut matched = Vec::new();
    for (_, _, fd) in &socks {
        matched.push(take_matched(fd).map_err(|e| format!("PACKET_STATISTICS: {e}"))?);
    }
    let secs = t0.elapsed().as_secs_f64();
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

    fn spec(proto: Proto, size: usize) -> FrameSpec {
        FrameSpec {
            dst_mac: [2, 0, 0xc6, 0x12, 0, 3],
            src_mac: [2, 0, 0xc6, 0x12, 0xa0, 1],
            src: Ipv4Addr::new(198, 18, 2, 1),
            dst: Ipv4Addr::new(198, 18, 100, 1),
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
                assert_eq!(csum_fold(csum_add(0, &f[14..34])), 0, "ip header");
                let l4 = &f[34..];
                let mut pseudo = [0u8; 12];
                pseudo[0..4].copy_from_slice(&f[26..30]);
                pseudo[4..8].copy_from_slice(&f[30..34]);
                pseudo[9] = f[23];
                pseudo[10..12].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                assert_eq!(
                    csum_fold(csum_add(csum_add(0, &pseudo), l4)),
                    0,
                    "l4 {proto:?} {size}"
                );
            }
        }
    }

    #[test]
    fn range_and_mac_parsing() {
        assert!(in_bench_range(Ipv4Addr::new(198, 18, 0, 1)));
        assert!(in_bench_range(Ipv4Addr::new(198, 19, 255, 254)));
        assert!(!in_bench_range(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!in_bench_range(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(parse_mac("02:00:c6:12:00:0b"), Ok([2, 0, 0xc6, 0x12, 0, 0x0b]));
        assert!(parse_mac("02:00:c6:12:00").is_err());
    }

    #[test]
    fn filter_matches_mac_words() {
        let p = mac_filter(&[2, 0, 0xc6, 0x12, 0, 0x0b]);
        assert_eq!(p[1].k, 0x0200_c612);
        assert_eq!(p[3].k, 0x000b);
    }
}
