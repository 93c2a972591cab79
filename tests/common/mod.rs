//! Helpers shared by the integration tests: frames of the test topology
//! (from `ulvs::wire::builder`, the crate's one frame builder), `.hex`
//! fixture files, the test topology's config, and counter snapshots so a
//! test can assert exactly which counters moved.
//!
//! Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ulvs::control::config::Config;
use ulvs::control::publish::{build_table, Runtime};
use ulvs::dataplane::classify::Reason;
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::worker::{Shared, Worker};
use ulvs::fwd::table::FwdTable;
use ulvs::io::mem::{MemDevice, Sent};
use ulvs::io::{RxMeta, VnetHdr};
use ulvs::wire::builder::{self, PacketBuilder};
use ulvs::wire::checksum;

/// The director's MAC (the destination of frames routed to a VIP) and the
/// router's (their source): the frame builder's defaults.
#[allow(unused_imports)] // each test crate uses a different subset
pub use ulvs::wire::builder::{DIRECTOR_MAC, ROUTER_MAC};
/// 198.18.100.1
pub const VIP: u32 = 0xc612_6401;
/// 203.0.113.7
pub const CLIENT: u32 = 0xcb00_7107;
/// The three real servers of `web` and `dns`.
pub const SERVERS: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];

/// A real server's MAC: `02:00` followed by its IPv4 address, so a frame's
/// destination MAC names the server it went to.
pub fn mac_of(a: Ipv4Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// The server a MAC made by [`mac_of`] belongs to.
pub fn server_of(mac: &[u8]) -> Ipv4Addr {
    assert_eq!(&mac[..2], &[0x02, 0x00], "not a real server's MAC: {mac:02x?}");
    Ipv4Addr::new(mac[2], mac[3], mac[4], mac[5])
}

/// The test topology: a DR service on VIP 198.18.100.1 for TCP :80 (`web`)
/// and UDP :53 (`dns`) with three servers each, `idle` on :8080 whose only
/// server has weight 0, and `drained` on :8081 (its server is drained by
/// [`runtime`]). `answer_ping: false`, so an ICMP echo to the VIP is dropped
/// (`icmp_other`) rather than answered.
pub const TOPOLOGY: &str = "\
interface: eth0
maglev_table_size: 251
answer_ping: false
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    mode: dr
    real_servers:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.13
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    mode: dr
    real_servers:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.13
  - name: idle
    vip: 198.18.100.1
    port: 8080
    protocol: tcp
    real_servers:
      - address: 198.18.0.21
        weight: 0
  - name: drained
    vip: 198.18.100.1
    port: 8081
    protocol: tcp
    real_servers:
      - address: 198.18.0.22
";

/// Parse a config, panicking with the validator's messages.
pub fn config(yaml: &str) -> Config {
    match Config::from_str(yaml, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("config refused:\n{e}"),
    }
}

/// The runtime of [`TOPOLOGY`]: every server up except `drained`'s.
pub fn runtime(cfg: &Config) -> Runtime {
    let mut rt = Runtime::default();
    rt.sync(cfg).unwrap();
    if cfg.service("drained").is_some() {
        rt.find_mut(cfg, "drained", "198.18.0.22").unwrap().drained = true;
    }
    rt
}

/// The table of [`TOPOLOGY`] with every MAC resolved.
pub fn topology_table() -> FwdTable {
    let cfg = config(TOPOLOGY);
    let rt = runtime(&cfg);
    build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0, 1)
}

/// Backend id of a server of a service.
pub fn id_of(rt: &Runtime, service: &str, addr: &str) -> u32 {
    rt.get(service, addr.parse().unwrap(), None).unwrap().id
}

// ---------------------------------------------------------------------------
// Frames.

/// Frames of the test topology (router -> director MACs, TTL 64, DF) from
/// the crate's one frame builder.
pub fn builder(src: u32, dst: u32) -> PacketBuilder {
    PacketBuilder::new(src, dst)
}

/// Ethernet header: director <- router, IPv4.
pub fn eth_ipv4() -> Vec<u8> {
    builder(0, 0).ethernet_header().to_vec()
}

/// An IPv4 header (IHL 5, DF, TTL 64, identification 1) with a valid checksum.
pub fn ipv4_header(src: u32, dst: u32, proto: u8, l4_len: usize) -> [u8; 20] {
    builder(src, dst).ipv4_header(proto, l4_len)
}

/// The transport checksum over the IPv4 pseudo-header and `l4` (whose
/// checksum field must be zero).
pub fn l4_checksum(src: u32, dst: u32, proto: u8, l4: &[u8]) -> u16 {
    builder::l4_checksum(src.into(), dst.into(), proto, l4)
}

/// Ethernet + IPv4 + TCP (20-byte header, window 64240) + payload, with valid
/// checksums.
pub fn tcp_frame(src: u32, sport: u16, dst: u32, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    builder(src, dst).tcp(sport, dport, flags, payload)
}

/// Ethernet + IPv4 + UDP + payload, with valid checksums.
pub fn udp_frame(src: u32, sport: u16, dst: u32, dport: u16, payload: &[u8]) -> Vec<u8> {
    builder(src, dst).udp(sport, dport, payload)
}

/// A TCP frame from the client to the VIP.
pub fn tcp_to_vip(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp_frame(CLIENT, sport, VIP, dport, flags, &[])
}

/// What a DR rewrite of `input` to `server` must produce: the same bytes
/// with destination MAC = the server's and source MAC = the director's.
pub fn dr_rewritten(input: &[u8], server: Ipv4Addr) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&mac_of(server));
    out[6..12].copy_from_slice(&DIRECTOR_MAC);
    out
}

/// Read `tests/fixtures/NAME.hex`: hex digits, whitespace ignored, `#` starts
/// a comment.
pub fn hex_fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    assert!(digits.len() % 2 == 0, "{path}: odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).unwrap();
            u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("{path}: bad hex {s:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Counters.

/// Every counter of a worker by name, backend counters as
/// `backend[ID].FIELD` (zero ones left out).
pub fn snapshot(s: &WorkerStats) -> BTreeMap<String, i64> {
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as i64;
    let mut m = BTreeMap::new();
    m.insert("frames_seen".to_string(), r(&s.frames_seen));
    m.insert("forwarded".to_string(), r(&s.forwarded));
    m.insert("bytes_forwarded".to_string(), r(&s.bytes_forwarded));
    for reason in Reason::ALL {
        m.insert(format!("drops.{}", reason.name()), r(&s.drops[reason as usize]));
    }
    m.insert("ring_drops".to_string(), r(&s.ring_drops));
    m.insert("flows".to_string(), r(&s.flows));
    m.insert("flow_capacity".to_string(), r(&s.flow_capacity));
    m.insert("evictions".to_string(), r(&s.evictions));
    m.insert("expirations".to_string(), r(&s.expirations));
    m.insert("rescheduled".to_string(), r(&s.rescheduled));
    m.insert("syn_second_chance".to_string(), r(&s.syn_second_chance));
    m.insert("echo_replies".to_string(), r(&s.echo_replies));
    m.insert("icmp_errors_forwarded".to_string(), r(&s.icmp_errors_forwarded));
    m.insert("fragments_forwarded".to_string(), r(&s.fragments_forwarded));
    m.insert("tun_segmented".to_string(), r(&s.tun_segmented));
    m.insert("generation".to_string(), r(&s.generation));
    for (id, b) in s.backends.iter().enumerate() {
        let fields = [
            ("packets", r(&b.packets)),
            ("bytes", r(&b.bytes)),
            ("out_packets", r(&b.out_packets)),
            ("out_bytes", r(&b.out_bytes)),
            ("conns", r(&b.conns)),
            ("active", b.active.load(Ordering::Relaxed)),
            ("inactive", b.inactive.load(Ordering::Relaxed)),
        ];
        for (name, v) in fields {
            if v != 0 {
                m.insert(format!("backend[{id}].{name}"), v);
            }
        }
    }
    m
}

/// The counters that changed from `before` to `after`, with their change.
pub fn diff(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    for k in before.keys().chain(after.keys()) {
        let delta = after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        if delta != 0 {
            d.insert(k.clone(), delta);
        }
    }
    d
}

/// Build an expected counter change from `(name, delta)` pairs.
pub fn moved(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `frames_seen == forwarded + sum(drops)`.
pub fn accounting_holds(s: &WorkerStats) -> bool {
    let seen = s.frames_seen.load(Ordering::Relaxed);
    let fwd = s.forwarded.load(Ordering::Relaxed);
    let drops: u64 = s.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    seen == fwd + drops
}

// ---------------------------------------------------------------------------
// A worker on an in-memory device.

/// A worker, its shared table and an explicit clock.
pub struct Rig {
    pub worker: Worker<MemDevice>,
    pub shared: Arc<Shared>,
    /// The clock passed to `poll_once`, in ms.
    pub now: u64,
}

/// What one frame did.
#[derive(Debug)]
pub struct Outcome {
    /// Counters that moved, by how much.
    pub moved: BTreeMap<String, i64>,
    /// The frame sent, if any.
    pub sent: Option<Sent>,
}

impl Rig {
    /// A worker with a flow table of `flow_capacity` on a 64-slot device
    /// with 16 KiB slots, already polled once so that one-time gauges
    /// (generation) are set before any test snapshot.
    pub fn new(table: FwdTable, flow_capacity: usize) -> Self {
        let shared = Arc::new(Shared::new(table));
        let dev = MemDevice::new(64, 16384);
        let stats = Arc::new(WorkerStats::default());
        let mut worker = Worker::new(dev, flow_capacity, shared.clone(), stats);
        let now = 1000;
        worker.poll_once(now).unwrap();
        Rig { worker, shared, now }
    }

    /// Publish a new table (the slow path's atomic swap).
    pub fn publish(&self, table: FwdTable) {
        self.shared.table.store(Arc::new(table));
    }

    pub fn stats(&self) -> &WorkerStats {
        self.worker.stats()
    }

    /// Run one frame through the worker at the current clock; what was sent.
    pub fn run(&mut self, frame: &[u8], meta: RxMeta, vnet: VnetHdr) -> Option<Sent> {
        let dev = self.worker.device();
        assert!(dev.push_rx(frame, meta, vnet), "frame does not fit the device");
        assert_eq!(self.worker.poll_once(self.now).unwrap(), 1);
        let dev = self.worker.device();
        assert!(dev.sent.len() <= 1);
        dev.sent.pop()
    }

    /// Run one frame and report which counters moved.
    pub fn send_with(&mut self, frame: &[u8], meta: RxMeta, vnet: VnetHdr) -> Outcome {
        let before = snapshot(self.worker.stats());
        let sent = self.run(frame, meta, vnet);
        let after = snapshot(self.worker.stats());
        Outcome {
            moved: diff(&before, &after),
            sent,
        }
    }

    /// Run one frame with default metadata.
    pub fn send(&mut self, frame: &[u8]) -> Outcome {
        self.send_with(frame, RxMeta::default(), VnetHdr::default())
    }

    /// Send one frame that must be forwarded; returns the server it went to.
    pub fn forward(&mut self, frame: &[u8]) -> Ipv4Addr {
        let Some(sent) = self.run(frame, RxMeta::default(), VnetHdr::default()) else {
            let drops: Vec<_> = snapshot(self.worker.stats())
                .into_iter()
                .filter(|(k, v)| k.starts_with("drops.") && *v != 0)
                .collect();
            panic!("not forwarded; drop counters so far: {drops:?}");
        };
        assert_eq!(sent.bytes.len(), frame.len());
        let server = server_of(&sent.bytes[0..6]);
        assert_eq!(sent.bytes, dr_rewritten(frame, server));
        server
    }
}

// ---------------------------------------------------------------------------
// NAT, TUN, ICMP and fragments (tests/modes.rs).

/// Backend id of a server given as `IP:PORT` (NAT).
pub fn id_of_port(rt: &Runtime, service: &str, addr: &str, port: u16) -> u32 {
    rt.get(service, addr.parse().unwrap(), Some(port)).unwrap().id
}

fn be16_at(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn be32_at(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// The IPv4 header at offset `at` of `f` (IHL from its first byte) has a
/// valid checksum.
pub fn ipv4_checksum_ok(f: &[u8], at: usize) -> bool {
    let ihl = usize::from(f[at] & 0xf) * 4;
    checksum::sum(&f[at..at + ihl], 0) == 0xffff
}

/// The TCP or UDP checksum of the IPv4 packet at offset `at` of `f` is valid
/// (over its IPv4 total length; a UDP checksum of 0 means "none" and passes).
pub fn l4_checksum_ok(f: &[u8], at: usize) -> bool {
    let ihl = usize::from(f[at] & 0xf) * 4;
    let total = usize::from(be16_at(f, at + 2));
    let proto = f[at + 9];
    let l4 = &f[at + ihl..at + total];
    if proto == 17 && be16_at(l4, 6) == 0 {
        return true;
    }
    let s = pseudo_sum(be32_at(f, at + 12), be32_at(f, at + 16), proto, l4.len());
    checksum::sum(l4, u32::from(s)) == 0xffff
}

/// The ICMP checksum of the IPv4 packet at offset `at` of `f` is valid.
pub fn icmp_checksum_ok(f: &[u8], at: usize) -> bool {
    let ihl = usize::from(f[at] & 0xf) * 4;
    let total = usize::from(be16_at(f, at + 2));
    checksum::sum(&f[at + ihl..at + total], 0) == 0xffff
}

/// The IPv4 pseudo-header sum, folded, not inverted: what a partial
/// (virtio `NEEDS_CSUM`) checksum field holds.
pub fn pseudo_sum(src: u32, dst: u32, proto: u8, l4_len: usize) -> u16 {
    builder::pseudo_sum(src.into(), dst.into(), proto, l4_len)
}

/// Recompute the IPv4 header checksum of the packet at offset 14.
pub fn refresh_ipv4_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0xf) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the TCP/UDP checksum of the IPv4 packet at offset 14 (full, not
/// partial; a UDP result of 0 is sent as 0xffff).
pub fn refresh_l4_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0xf) * 4;
    let total = usize::from(be16_at(f, 16));
    let proto = f[23];
    let (src, dst) = (be32_at(f, 26), be32_at(f, 30));
    let at = 14 + ihl + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let c = match l4_checksum(src, dst, proto, &f[14 + ihl..14 + total]) {
        0 if proto == 17 => 0xffff,
        c => c,
    };
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// [`tcp_frame`] with sequence number `seq`.
pub fn tcp_frame_seq(
    src: u32,
    sport: u16,
    dst: u32,
    dport: u16,
    flags: u8,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    builder(src, dst).seq(seq).tcp(sport, dport, flags, payload)
}

/// Ethernet (director <- router) + IPv4 + ICMP: `icmp_type`, `code`, the 4
/// bytes after the checksum (`rest`) and `body`, with valid checksums.
pub fn icmp_frame(src: u32, dst: u32, icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    builder(src, dst).icmp(icmp_type, code, rest, body)
}

/// The first 28 bytes of the IPv4 packet in a frame (its header and 8
/// bytes of transport header): what an ICMP error quotes.
pub fn quote_of(frame: &[u8]) -> Vec<u8> {
    frame[14..14 + 28].to_vec()
}

impl Rig {
    /// Run one frame that may produce any number of frames (segmentation);
    /// the counters that moved and every frame sent.
    pub fn send_all(
        &mut self,
        frame: &[u8],
        meta: RxMeta,
        vnet: VnetHdr,
    ) -> (BTreeMap<String, i64>, Vec<Sent>) {
        let before = snapshot(self.worker.stats());
        let dev = self.worker.device();
        assert!(dev.push_rx(frame, meta, vnet), "frame does not fit the device");
        assert_eq!(self.worker.poll_once(self.now).unwrap(), 1);
        let sent = std::mem::take(&mut self.worker.device().sent);
        let after = snapshot(self.worker.stats());
        (diff(&before, &after), sent)
    }
}

impl Rig {
    /// Send one frame that must be sent on, whatever the rewrite; the frame sent.
    pub fn forward_any(&mut self, frame: &[u8]) -> Sent {
        match self.run(frame, RxMeta::default(), VnetHdr::default()) {
            Some(s) => s,
            None => panic!("not sent; counters: {:?}", snapshot(self.worker.stats())),
        }
    }
}
