//! The fast path: a real `Worker<MemDevice>` in every mode (DR, NAT both
//! directions, TUN, ICMP echo and errors, fragments, all-port services) fed
//! arbitrary frames after a valid handshake prefix.
//!
//! The input's first bytes choose the setup (ping answering, short
//! timeouts, rescheduling, a small MTU so TUN must fragment or refuse, a
//! known gateway or not, a tiny flow table so eviction runs); then the
//! valid template frames of every mode run once, so the flow table holds
//! flows of every kind; then the rest of the input is a list of operations:
//! raw frames, template frames with edits (so mutations start from frames
//! that reach deep), clock jumps, and table publishes that change a
//! server's state. After every batch the accounting identity
//! `frames_seen == forwarded + sum(drops)` must hold.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ulvs::control::config::Config;
use ulvs::control::publish::{build_table, Health, Runtime};
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::worker::{Shared, Worker};
use ulvs::fwd::table::FwdTable;
use ulvs::io::mem::MemDevice;
use ulvs::io::{RxMeta, VnetHdr};
use ulvs::wire::builder::{proto, PacketBuilder, DIRECTOR_MAC};
use ulvs::wire::{icmp, tcp};

const VIP: u32 = 0xc612_6401; // 198.18.100.1: DR web :80, dns :53
const VIP_NAT: u32 = 0xc612_6402; // NAT web :80 -> .21:8080, dns :53 -> .21:5353
const VIP_TUN: u32 = 0xc612_6403; // TUN web :80 -> .31, dns :53 -> .32
const VIP_ANY: u32 = 0xc612_6404; // DR, every TCP port
const VIP_NAT_ANY: u32 = 0xc612_6405; // NAT, every TCP port -> .25
const NAT_RS: u32 = 0xc612_0015;
const NAT_ANY_RS: u32 = 0xc612_0019;
const DIRECTOR_IP: u32 = 0xc612_0002;
const CLIENT: u32 = 0xcb00_7107; // 203.0.113.7, off-link
const ONLINK_CLIENT: u32 = 0xc612_0505;
const PATH_ROUTER: u32 = 0xc000_0201;
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

const SERVICES: &str = "\
services:
  - {name: web, vip: 198.18.100.1, port: 80, protocol: tcp, mode: dr,
     real_servers: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]}
  - {name: dns, vip: 198.18.100.1, port: 53, protocol: udp, mode: dr,
     real_servers: [{address: 198.18.0.11}, {address: 198.18.0.12, weight: 2}]}
  - {name: nat-web, vip: 198.18.100.2, port: 80, protocol: tcp, mode: nat,
     real_servers: [{address: '198.18.0.21:8080'}, {address: '198.18.0.22:8080'}]}
  - {name: nat-dns, vip: 198.18.100.2, port: 53, protocol: udp, mode: nat,
     real_servers: [{address: '198.18.0.21:5353'}]}
  - {name: tun-web, vip: 198.18.100.3, port: 80, protocol: tcp, mode: tun,
     real_servers: [{address: 198.18.0.31}]}
  - {name: tun-dns, vip: 198.18.100.3, port: 53, protocol: udp, mode: tun,
     real_servers: [{address: 198.18.0.31}, {address: 198.18.0.32}]}
  - {name: any, vip: 198.18.100.4, port: 0, protocol: tcp, mode: dr,
     real_servers: [{address: 198.18.0.11}, {address: 198.18.0.12}]}
  - {name: nat-any, vip: 198.18.100.5, port: 0, protocol: tcp, mode: nat,
     real_servers: [{address: 198.18.0.25}]}
";

fn mac_of(a: Ipv4Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// The configs, indexed by `answer_ping | short_timeouts << 1 | keep << 2`
/// (parsed once: the YAML parser is not what this target measures).
fn configs() -> &'static [Config] {
    static C: OnceLock<Vec<Config>> = OnceLock::new();
    C.get_or_init(|| {
        (0..8)
            .map(|v| {
                let mut y = String::from("interface: eth0\nmaglev_table_size: 251\n");
                y += &format!("answer_ping: {}\n", v & 1 != 0);
                if v & 2 != 0 {
                    y += "timeouts: {tcp_syn: 1, tcp: 2, tcp_fin: 1, udp: 1}\n";
                }
                if v & 4 != 0 {
                    y += "on_server_down: keep\n";
                }
                y += SERVICES;
                Config::from_str(&y, "fuzz.yaml").unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    })
}

/// Valid frames of every mode, in handshake order.
fn templates() -> &'static [Vec<u8>] {
    static T: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| {
        let to = |dst: u32| PacketBuilder::new(CLIENT, dst);
        let from_rs = |rs: u32| PacketBuilder::new(rs, CLIENT).macs(DIRECTOR_MAC, mac_of(rs.into()));
        let big: Vec<u8> = (0..1400).map(|i| i as u8).collect();
        let mut t = vec![
            to(VIP).tcp(40000, 80, tcp::SYN, &[]),
            to(VIP).tcp(40000, 80, tcp::ACK | tcp::PSH, b"GET / HTTP/1.0\r\n\r\n"),
            to(VIP).udp(5000, 53, b"query"),
            to(VIP_NAT).tcp(40001, 80, tcp::SYN, &[]),
            from_rs(NAT_RS).tcp(8080, 40001, tcp::SYN | tcp::ACK, &[]),
            to(VIP_NAT).tcp(40001, 80, tcp::ACK, b"data"),
            to(VIP_NAT).udp(5001, 53, b"query"),
            from_rs(NAT_RS).udp(5353, 5001, b"answer"),
            to(VIP_TUN).tcp(40002, 80, tcp::SYN, &[]),
            to(VIP_TUN).tcp(40002, 80, tcp::ACK, &big),
            to(VIP_TUN).df(false).udp(5002, 53, &big),
            to(VIP).icmp(icmp::ECHO_REQUEST, 0, [0x12, 0x34, 0, 1], b"ping"),
            to(VIP_ANY).tcp(40003, 8443, tcp::SYN, &[]),
            to(VIP_NAT_ANY).tcp(40004, 2222, tcp::SYN, &[]),
            from_rs(NAT_ANY_RS).tcp(2222, 40004, tcp::SYN | tcp::ACK, &[]),
            PacketBuilder::new(ONLINK_CLIENT, VIP_NAT).tcp(40005, 80, tcp::SYN, &[]),
            to(VIP).tcp(40000, 80, tcp::FIN | tcp::ACK, &[]),
        ];
        // ICMP errors from a router on the path, quoting VIP:port -> client
        // of the DR, NAT and TUN flows above.
        for (vip, cport) in [(VIP, 40000), (VIP_NAT, 40001), (VIP_TUN, 40002)] {
            let quoted = PacketBuilder::new(vip, CLIENT).tcp(80, cport, tcp::ACK, &[]);
            t.push(PacketBuilder::new(PATH_ROUTER, vip).icmp(
                icmp::DEST_UNREACHABLE,
                icmp::CODE_FRAG_NEEDED,
                [0, 0, 0x05, 0x78],
                &quoted[14..42],
            ));
        }
        // A NAT server's port unreachable to the client (reply direction).
        let quoted = PacketBuilder::new(CLIENT, NAT_RS).udp(5001, 5353, b"query");
        t.push(from_rs(NAT_RS).icmp(icmp::DEST_UNREACHABLE, 3, [0; 4], &quoted[14..42]));
        // Fragmented UDP datagrams to DR and NAT services.
        for (dst, ident) in [(VIP, 0x100), (VIP_NAT, 0x101)] {
            let b = to(dst).ident(ident).df(false);
            let l4 = b.udp_datagram(5003, 53, &[0xa5; 56]);
            t.extend(b.fragments(proto::UDP, &l4, &[24, 48]));
        }
        t
    })
}

#[derive(Arbitrary, Debug)]
struct Setup {
    answer_ping: bool,
    short_timeouts: bool,
    keep_on_down: bool,
    /// 576 instead of 1500: the big TUN frames must be fragmented or refused.
    small_mtu: bool,
    gateway_known: bool,
    /// Flow table capacity 2^(2 + n % 9): 4 .. 1024 entries.
    flow_capacity_log2: u8,
}

#[derive(Arbitrary, Debug)]
struct Rx {
    /// Values >= 0xf8 give pkttype `v & 7`; the rest are for this host.
    pkttype: u8,
    vlan_tci: Option<u16>,
    truncated: bool,
    vnet: Option<(u8, u8, u16, u16, u16, u16)>,
}

impl Rx {
    fn meta(&self) -> (RxMeta, VnetHdr) {
        let meta = RxMeta {
            pkttype: if self.pkttype >= 0xf8 { self.pkttype & 7 } else { 0 },
            vlan_tci: self.vlan_tci,
            truncated: self.truncated,
        };
        let vnet = self.vnet.map_or(
            VnetHdr::default(),
            |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| VnetHdr {
                flags,
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
            },
        );
        (meta, vnet)
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Arbitrary bytes as a frame.
    Raw { bytes: Vec<u8>, rx: Rx },
    /// A template with bytes overwritten, then cut short or extended.
    Edit {
        template: u8,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
        tail: Vec<u8>,
        rx: Rx,
    },
    /// Several frames in one batch (templates, unchanged).
    Burst(Vec<u8>),
    /// Advance the worker's clock (wrapping, like the real one).
    Tick(u16),
    /// Change one server's state and publish a new table.
    Publish { server: u8, change: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

/// What the slow path knows: config, server states, neighbours.
struct SlowPath {
    cfg: &'static Config,
    rt: Runtime,
    mtu: u32,
    gateway: bool,
    /// Backend ids (below 32) whose MAC is not resolved.
    unresolved: u32,
    generation: u64,
}

impl SlowPath {
    fn table(&self) -> FwdTable {
        // The config is IPv4 only: every server key is an IPv4 address.
        let ids: Vec<(Ipv4Addr, u32)> = self
            .rt
            .servers
            .iter()
            .filter_map(|(k, s)| match k.addr {
                std::net::IpAddr::V4(a) => Some((a, s.id)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let unresolved = self.unresolved;
        let mut t = build_table(
            self.cfg,
            &self.rt,
            |a| {
                let hidden = ids
                    .iter()
                    .any(|&(addr, id)| addr == a && id < 32 && unresolved & (1 << id) != 0);
                (!hidden).then(|| mac_of(a))
            },
            DIRECTOR_MAC,
            DIRECTOR_IP,
            self.generation,
        );
        if self.gateway {
            t.gateway_mac = Some(GATEWAY_MAC);
        }
        t.onlink = (0xc612_0000, 0xffff_0000);
        t.neighbours = vec![(ONLINK_CLIENT, [0x02, 0x11, 0, 0, 0x05, 0x05])];
        t.mtu = self.mtu;
        t
    }
}

struct Rig {
    worker: Worker<MemDevice>,
    shared: Arc<Shared>,
    slow: SlowPath,
    now: u64,
}

impl Rig {
    fn push(&mut self, frame: &[u8], meta: RxMeta, vnet: VnetHdr) {
        // A frame larger than a slot is refused by the device, as a ring
        // would truncate it; nothing to test then.
        if !self.worker.device().push_rx(frame, meta, vnet) {
            self.poll();
            let _ = self.worker.device().push_rx(frame, meta, vnet);
        }
    }

    fn poll(&mut self) {
        while self
            .worker
            .poll_once(self.now)
            .expect("the memory device never fails")
            > 0
        {}
        self.worker.device().sent.clear();
        let s = self.worker.stats();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let drops: u64 = s.drops.iter().map(get).sum();
        assert_eq!(
            get(&s.frames_seen),
            get(&s.forwarded) + drops,
            "frames_seen != forwarded + drops"
        );
    }
}

fuzz_target!(|input: Input| {
    let s = &input.setup;
    let v =
        usize::from(s.answer_ping) | usize::from(s.short_timeouts) << 1 | usize::from(s.keep_on_down) << 2;
    let cfg = &configs()[v];
    let mut rt = Runtime::default();
    rt.sync(cfg).expect("ids");
    let slow = SlowPath {
        cfg,
        rt,
        mtu: if s.small_mtu { 576 } else { 1500 },
        gateway: s.gateway_known,
        unresolved: 0,
        generation: 1,
    };
    // The first table of each setup is built once per process (Maglev
    // builds would otherwise dominate every run).
    static FIRST: [OnceLock<FwdTable>; 32] = [const { OnceLock::new() }; 32];
    let first = FIRST[v | usize::from(s.small_mtu) << 3 | usize::from(s.gateway_known) << 4]
        .get_or_init(|| slow.table())
        .clone();
    let shared = Arc::new(Shared::new(first));
    let capacity = 1usize << (2 + s.flow_capacity_log2 % 9);
    // Small slots and arena: a fresh device per input is zeroed, and the
    // input is at most a few KiB anyway (a full arena is a path too).
    let dev = MemDevice::with_arena(32, 4096, 64 << 10, 256);
    let worker = Worker::new(dev, capacity, shared.clone(), Arc::new(WorkerStats::default()));
    let mut rig = Rig {
        worker,
        shared,
        slow,
        now: 1000,
    };

    // The handshake prefix: every template once, valid.
    let t = templates();
    for f in t {
        rig.push(f, RxMeta::default(), VnetHdr::default());
    }
    rig.poll();

    for op in input.ops.iter().take(256) {
        match op {
            Op::Raw { bytes, rx } => {
                let (meta, vnet) = rx.meta();
                rig.push(bytes, meta, vnet);
            }
            Op::Edit {
                template,
                edits,
                cut,
                tail,
                rx,
            } => {
                let mut f = t[usize::from(*template) % t.len()].clone();
                for &(at, b) in edits.iter().take(16) {
                    let at = usize::from(at) % f.len();
                    f[at] = b;
                }
                match cut {
                    Some(c) => f.truncate(usize::from(*c) % (f.len() + 1)),
                    None => f.extend_from_slice(tail),
                }
                let (meta, vnet) = rx.meta();
                rig.push(&f, meta, vnet);
            }
            Op::Burst(which) => {
                for &i in which.iter().take(64) {
                    rig.push(
                        &t[usize::from(i) % t.len()],
                        RxMeta::default(),
                        VnetHdr::default(),
                    );
                }
            }
            Op::Tick(ms) => {
                rig.now = rig.now.wrapping_add(u64::from(*ms) * 64);
            }
            Op::Publish { server, change } => {
                let mut ids: Vec<u32> = rig.slow.rt.servers.values().map(|s| s.id).collect();
                ids.sort_unstable();
                let id = ids[usize::from(*server) % ids.len()];
                let srt = rig.slow.rt.servers.values_mut().find(|s| s.id == id).expect("id");
                match change % 5 {
                    0 => srt.drained = !srt.drained,
                    1 => {
                        // Up -> Down -> Pending -> Up: every state a
                        // server can be in reaches the fast path.
                        srt.health = match srt.health {
                            Health::Up => Health::Down,
                            Health::Down => Health::Pending,
                            Health::Pending => Health::Up,
                        }
                    }
                    2 => srt.weight_override = Some(u32::from(change / 5 % 4)),
                    3 => srt.weight_override = None,
                    _ => rig.slow.unresolved ^= 1 << (id % 32),
                }
                rig.slow.generation += 1;
                let table = rig.slow.table();
                rig.shared.table.store(Arc::new(table));
            }
        }
        rig.poll();
    }
});
