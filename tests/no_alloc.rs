//! The fast path does not allocate: 100,000 mixed frames (new TCP flows,
//! repeated flows, UDP, malformed and foreign frames, with evictions,
//! expirations and table swaps along the way) go through a real
//! `Worker<MemDevice>` while a counting global allocator watches this thread;
//! then again with a flow-sync link attached (notes pushed, a full notes
//! queue, synced flows taken, table walks). The mix carries IPv6 too (new
//! and repeated flows to an IPv6 VIP, malformed IPv6 classes, ICMPv6 echo
//! answered, ICMPv6 errors forwarded in DR, TUN and NAT and translated back
//! from a NAT server, first and later fragments): the IPv6 services are
//! added to every published table.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use ulvs::control::publish::build_table;
use ulvs::dataplane::classify::Reason;
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::synclink::{Note, NoteKind, Synced, WorkerLink};
use ulvs::dataplane::worker::{Shared, Worker};
use ulvs::fwd::flow::{FlowKey, FlowState};
use ulvs::fwd::table::{Backend6, FwdTable, Mode, ServiceFwd6};
use ulvs::io::mem::MemDevice;
use ulvs::io::{pkttype, RxMeta, VnetHdr};
use ulvs::wire::builder::{Ext6, PacketBuilder6};
use ulvs::wire::tcp;

/// Allocations (alloc, alloc_zeroed, realloc) made while counting. This
/// file holds a single test, so no other test thread adds to it.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Deallocations made while counting.
static FREES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Counting is on for this thread. Const-initialised `Cell<bool>`: no
    /// lazy registration and no destructor, so the allocator may read it.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments; the
// counting touches only atomics and a destructor-less thread-local.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Count allocations made by this thread while `f` runs.
fn count<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let (a0, f0) = (ALLOCS.load(Ordering::Relaxed), FREES.load(Ordering::Relaxed));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    let (a1, f1) = (ALLOCS.load(Ordering::Relaxed), FREES.load(Ordering::Relaxed));
    (r, a1 - a0, f1 - f0)
}

const FRAMES: usize = 100_000;
/// Device slots: frames are pushed up to this many, then polled.
const SLOTS: usize = 256;
/// A table is published (outside the counted sections) this often.
const PUBLISH_EVERY: usize = 20_000;

/// The frames of the mix, built before counting starts.
struct Templates {
    syn: Vec<u8>,
    ack: Vec<u8>,
    fin: Vec<u8>,
    udp: Vec<u8>,
    malformed: Vec<(Vec<u8>, RxMeta)>,
    syn6: Vec<u8>,
    udp6: Vec<u8>,
    malformed6: Vec<Vec<u8>>,
    /// ICMPv6 and fragments, in an order where a flow comes before the
    /// errors about it and a first fragment before the later one.
    icmp6: Vec<Vec<u8>>,
    /// To the NAT6 VIP, and the server's answer (from the first NAT6
    /// server; a flow the other server took meets `nat_no_flow`).
    nat6: Vec<u8>,
    nat6_reply: Vec<u8>,
    /// To the TUN6 VIP: small (encapsulated) and too big (Packet Too Big).
    tun6: Vec<u8>,
    tun6_big: Vec<u8>,
}

/// 2001:db8:100::1, the IPv6 VIP.
const VIP6: u128 = 0x2001_0db8_0100_0000_0000_0000_0000_0001;
const CLIENT6: u128 = 0x2001_0db8_0200_0000_0000_0000_0000_0000;
/// IPv6 VIPs of a TUN and of a NAT UDP :53 service.
const TUN_VIP6: u128 = VIP6 + 0x10;
const NAT_VIP6: u128 = VIP6 + 0x20;
/// Backend id `id`'s IPv6 address.
fn rip6(id: usize) -> u128 {
    0x2001_0db8_0010_0000_0000_0000_0000_0000 + id as u128 + 1
}

/// The IPv6 NAT and TUN VIPs and their servers (two each).
const VIP6_NAT: u128 = VIP6 + 2;
const VIP6_TUN: u128 = VIP6 + 3;
const NAT6_SERVER: u128 = 0x2001_0db8_0001_0000_0000_0000_0000_0021;
const TUN6_SERVER: u128 = 0x2001_0db8_0001_0000_0000_0000_0000_0031;

/// `t` with IPv6 TCP :80 and UDP :53 services sharing the IPv4 ones' servers,
/// a NAT TCP :80 service (servers :8080) and a TUN TCP :80 service.
fn with_v6(mut t: FwdTable) -> FwdTable {
    use ulvs::fwd::maglev::{MaglevTable, Member};
    use ulvs::fwd::table::{BackendFwd, BackendState};
    t.director_ip6 = VIP6 - 0x100;
    t.gateway6_mac = Some(ulvs::wire::builder::ROUTER_MAC);
    t.backends6 = vec![Backend6::default(); t.backends.len()];
    for (vip, mode, first, port) in [
        (VIP6_NAT, Mode::Nat, NAT6_SERVER, 8080),
        (VIP6_TUN, Mode::Tun, TUN6_SERVER, 0),
    ] {
        let mut members = Vec::new();
        for k in 0..2u128 {
            members.push(t.backends.len() as u32);
            t.backends.push(BackendFwd {
                addr: 0,
                port,
                mac: Some([2, 0x66, 0, 0, 0, k as u8]),
                state: BackendState::Up,
                svc_vip: 0,
                svc_port: 80,
                mode,
            });
            t.backends6.push(Backend6 {
                addr: first + k,
                svc_vip: vip,
            });
            if mode == Mode::Nat {
                t.nat_backends6.push(first + k);
            }
        }
        t.services6.push(ServiceFwd6 {
            vip,
            port: 80,
            proto: 6,
            mode,
            maglev: MaglevTable::from_slots((0..13).map(|i| Member::new(i % 2)).collect()),
            members,
            client_affinity: false,
        });
    }
    for (port, proto) in [(80u16, 6u8), (53, 17)] {
        let s = t.services[t.find_service(VIP, proto, port).unwrap()].clone();
        t.services6.push(ServiceFwd6 {
            vip: VIP6,
            port,
            proto,
            mode: ulvs::fwd::table::Mode::Dr,
            maglev: s.maglev,
            members: s.members,
            client_affinity: false,
        });
    }
    // TUN and NAT UDP services on their own VIPs with dns's servers (their
    // errors and NAT translations are the paths this covers).
    let dns = t.services[t.find_service(VIP, 17, 53).unwrap()].clone();
    for (vip, mode) in [(TUN_VIP6, Mode::Tun), (NAT_VIP6, Mode::Nat)] {
        t.services6.push(ServiceFwd6 {
            vip,
            port: 53,
            proto: 17,
            mode,
            maglev: dns.maglev.clone(),
            members: dns.members.clone(),
            client_affinity: false,
        });
    }
    // The IPv4 servers' IPv6 side (the NAT6/TUN6 servers above have theirs).
    for (id, b) in t.backends6.iter_mut().enumerate() {
        if b.addr == 0 {
            *b = Backend6 {
                addr: rip6(id),
                svc_vip: NAT_VIP6,
            };
        }
    }
    t.nat_backends6
        .extend(dns.members.iter().map(|&id| rip6(id as usize)));
    t.nat_backends6.sort_unstable();
    t.answer_ping = true;
    t.sort();
    t
}

/// ICMPv6 and fragment frames (see [`Templates::icmp6`]); `dns` holds the
/// backend ids of the UDP :53 servers.
fn icmp6_frames(dns: &[u32]) -> Vec<Vec<u8>> {
    let client = CLIENT6 | 7;
    let from = |vip: u128| PacketBuilder6::new(client, vip);
    let router = 0x2001_0db8_0001_0000_0000_0000_0000_0001u128;
    // A router's Packet Too Big about what `vip`:53 sent to client:`cport`.
    let ptb = |vip: u128, cport: u16| {
        let q = PacketBuilder6::new(vip, client).udp(53, cport, &[0; 200]);
        PacketBuilder6::new(router, vip).icmpv6(2, 0, 1280u32.to_be_bytes(), &q[14..])
    };
    let mut v = vec![
        from(TUN_VIP6).udp(7000, 53, b"q"),
        ptb(TUN_VIP6, 7000),
        from(NAT_VIP6).udp(7001, 53, b"q"),
        ptb(NAT_VIP6, 7001),
    ];
    // Port unreachable from each NAT server about client:7001 -> it:53;
    // the one that has the flow is translated, the others are no flow.
    for &id in dns {
        let got = PacketBuilder6::new(client, rip6(id as usize)).udp(7001, 53, b"q");
        v.push(PacketBuilder6::new(rip6(id as usize), client).icmpv6(1, 4, [0; 4], &got[14..]));
    }
    let dgram = from(VIP6).udp_datagram(7002, 53, &[3; 600]);
    let frags = from(VIP6).fragments(ulvs::wire::ipv6::next_header::UDP, &dgram, &[304], 0x77);
    let orphan = from(VIP6).fragments(ulvs::wire::ipv6::next_header::UDP, &dgram, &[304], 0x78);
    v.extend([
        from(VIP6).icmpv6(128, 0, [0, 1, 0, 1], b"ping"),
        frags[0].clone(),
        frags[1].clone(),
        orphan[1].clone(),
        ptb(VIP6, 7002),
    ]);
    v
}

fn templates() -> Templates {
    let syn = tcp_to_vip(1, 80, tcp::SYN);
    let m = RxMeta::default();
    let edit = |at: usize, b: &[u8]| {
        let mut f = syn.clone();
        f[at..at + b.len()].copy_from_slice(b);
        f
    };
    let malformed = vec![
        (syn[..20].to_vec(), m),            // runt
        (edit(14, &[0x65]), m),             // bad_version
        (edit(14, &[0x44]), m),             // bad_ihl
        (edit(16, &[0x04, 0x00]), m),       // bad_total_length
        (edit(20, &[0x00, 0x10]), m),       // later fragment, no first
        (edit(12, &[0x81, 0x00]), m),       // vlan tag in bytes
        (edit(12, &[0x08, 0x06]), m),       // not_ipv4
        (edit(33, &[0x63]), m),             // not_vip
        (tcp_to_vip(1, 443, tcp::SYN), m),  // no_service
        (tcp_to_vip(1, 8080, tcp::SYN), m), // no_server (weight 0)
        (hex_fixture("icmp_echo_vip"), m),  // icmp_other
        (hex_fixture("ip_options_tcp_syn_vip"), m),
        (
            syn.clone(),
            RxMeta {
                pkttype: pkttype::OTHERHOST,
                ..m
            },
        ),
        (syn.clone(), RxMeta { truncated: true, ..m }),
        (
            syn.clone(),
            RxMeta {
                vlan_tci: Some(7),
                ..m
            },
        ),
    ];
    let b6 = || PacketBuilder6::new(CLIENT6 | 7, VIP6);
    let syn6 = b6().tcp(1, 80, tcp::SYN, &[]);
    let mut bad_plen = syn6.clone();
    bad_plen[18..20].copy_from_slice(&2000u16.to_be_bytes());
    let mut chain = b6();
    for _ in 0..9 {
        chain = chain.ext(Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]));
    }
    let malformed6 = vec![
        syn6[..40].to_vec(),                                              // v6_truncated
        bad_plen,                                                         // v6_bad_payload_length
        chain.tcp(1, 80, tcp::SYN, &[]),                                  // v6_ext_chain_too_long
        b6().tcp(1, 443, tcp::SYN, &[]),                                  // no_service
        b6().icmpv6(200, 0, [0, 1, 0, 1], b"what"), // v6_icmp (echo is answered: answer_ping)
        PacketBuilder6::new(CLIENT6, VIP6 + 1).tcp(1, 80, tcp::SYN, &[]), // not_vip
    ];
    let t = topology_table();
    let dns = t.services[t.find_service(VIP, 17, 53).unwrap()].members.clone();
    Templates {
        icmp6: icmp6_frames(&dns),
        nat6: PacketBuilder6::new(CLIENT6 | 7, VIP6_NAT).tcp(1, 80, tcp::ACK, b"nat"),
        nat6_reply: PacketBuilder6::new(NAT6_SERVER, CLIENT6 | 7).tcp(8080, 1, tcp::ACK, b"reply"),
        tun6: PacketBuilder6::new(CLIENT6 | 7, VIP6_TUN).tcp(1, 80, tcp::ACK, b"tun"),
        tun6_big: PacketBuilder6::new(CLIENT6 | 7, VIP6_TUN).tcp(2, 80, tcp::ACK, &[0; 1480]),
        syn6,
        udp6: b6().udp(1, 53, b"0123456789abcdef"),
        malformed6,
        ack: tcp_to_vip(1, 80, tcp::ACK),
        fin: tcp_to_vip(1, 80, tcp::FIN | tcp::ACK),
        udp: udp_frame(CLIENT, 1, VIP, 53, b"0123456789abcdef"),
        syn,
        malformed,
    }
}

/// Frame `i` of the mix, written into `scratch` when it varies.
fn frame<'a>(i: usize, t: &'a Templates, scratch: &'a mut [u8; 128]) -> (&'a [u8], RxMeta) {
    let m = RxMeta::default();
    let vary = |scratch: &'a mut [u8; 128], base: &[u8], src: u32, sport: u16| -> &'a [u8] {
        let f = &mut scratch[..base.len()];
        f.copy_from_slice(base);
        f[26..30].copy_from_slice(&src.to_be_bytes());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f
    };
    match i % 10 {
        // New TCP flows: a new (source, port) every time.
        0..=3 => (vary(scratch, &t.syn, 0x0a00_0000 | (i >> 16) as u32, i as u16), m),
        // 64 long-lived flows, again and again.
        4 | 5 => (vary(scratch, &t.ack, CLIENT, 1000 + (i % 64) as u16), m),
        // UDP over 512 ports: new flows at first, repeated later.
        6 | 7 => (vary(scratch, &t.udp, CLIENT, 2000 + (i % 512) as u16), m),
        // A FIN for one of the long-lived flows (they come back with the next ACK).
        8 => (vary(scratch, &t.fin, CLIENT, 1000 + (i % 64) as u16), m),
        // Every other tenth frame is IPv6: new TCP flows, UDP flows over
        // 512 ports, malformed classes, NAT flows over 256 ports and their
        // replies, TUN flows, too big for the tunnel.
        _ if (i / 10) % 2 == 1 => {
            let port = |scratch: &'a mut [u8; 128], base: &[u8], at: usize| -> &'a [u8] {
                let f = &mut scratch[..base.len()];
                f.copy_from_slice(base);
                f[at..at + 2].copy_from_slice(&(3000 + (i / 160 % 256) as u16).to_be_bytes());
                f
            };
            let f = match (i / 20) % 8 {
                4 => port(scratch, &t.nat6, 54),
                5 => port(scratch, &t.nat6_reply, 56),
                6 => port(scratch, &t.tun6, 54),
                7 => &t.tun6_big[..],
                0 | 1 => {
                    let f = &mut scratch[..t.syn6.len()];
                    f.copy_from_slice(&t.syn6);
                    f[34..38].copy_from_slice(&(i as u32).to_be_bytes());
                    f[54..56].copy_from_slice(&(i as u16).to_be_bytes());
                    f
                }
                2 => {
                    let f = &mut scratch[..t.udp6.len()];
                    f.copy_from_slice(&t.udp6);
                    f[54..56].copy_from_slice(&(2000 + (i % 512) as u16).to_be_bytes());
                    f
                }
                _ if (i / 160) % 2 == 0 => &t.malformed6[(i / 320) % t.malformed6.len()][..],
                _ => &t.icmp6[(i / 320) % t.icmp6.len()][..],
            };
            (f, m)
        }
        _ => {
            let (f, meta) = &t.malformed[(i / 20) % t.malformed.len()];
            (f, *meta)
        }
    }
}

/// One test (the counters are process-wide): without, then with a link.
#[test]
fn fast_path_does_not_allocate() {
    mix(None, false);
    mix(Some(Arc::new(WorkerLink::new())), false);
    // With a device that has an XDP fast path (its stand-in's list is
    // preallocated: only the worker's side is measured).
    mix(None, true);
}

/// What the sync thread does between the counted sections, `round` of
/// them: take the notes (or, once, fill the queue so the worker meets it
/// full), hand over synced flows (more than a batch takes, some of the
/// mix's own keys), ask for a walk, bulk and refresh in turn.
fn sync_thread(link: &WorkerLink, round: usize) {
    if round == 2 {
        let filler = Note {
            kind: NoteKind::New,
            key: FlowKey::default(),
            backend: 0,
            state: FlowState::Udp,
            idle_ms: 0,
            origin: 0,
        };
        while link.notes.push(filler).is_ok() {}
    } else {
        while link.notes.pop().is_some() {}
    }
    for p in 0..300u16 {
        let _ = link.synced.push(Synced {
            key: FlowKey {
                src: CLIENT,
                dst: VIP,
                sport: if p % 2 == 0 { 1000 + p % 64 } else { 30_000 + p },
                dport: 80,
                proto: 6,
            },
            backend: 1 + u32::from(p % 3),
            state: FlowState::TcpEstablished,
            idle_ms: u32::from(p),
            origin: 1,
        });
    }
    link.ask_walk(round % 2 == 0);
}

fn mix(link: Option<Arc<WorkerLink>>, fast: bool) {
    // Short timeouts and a small flow table, so that expiry, the sweep and
    // eviction all run during the counted phase.
    let yaml = TOPOLOGY.replace(
        "answer_ping: false\n",
        "answer_ping: false\ntimeouts:\n  tcp_syn: 1\n  tcp: 2\n  tcp_fin: 1\n  udp: 1\n",
    );
    let cfg = config(&yaml);
    let rt = runtime(&cfg);
    let tables: Vec<_> = (1..=FRAMES / PUBLISH_EVERY)
        .map(|g| {
            Arc::new(with_v6(build_table(
                &cfg,
                &rt,
                |a| Some(mac_of(a)),
                DIRECTOR_MAC,
                0,
                g as u64,
            )))
        })
        .collect();
    let shared = Arc::new(Shared::new((*tables[0]).clone()));
    let mut dev = MemDevice::new(SLOTS, 2048);
    dev.capture = false;
    if fast {
        dev.fast = Some(ulvs::io::mem::MemFast {
            flows: Vec::with_capacity(1 << 16),
            ..Default::default()
        });
    }
    let stats = Arc::new(WorkerStats::default());
    let mut worker = Worker::new(dev, 1024, shared.clone(), stats.clone());
    if let Some(l) = &link {
        worker.attach_sync(l.clone());
    }
    let t = templates();
    let mut scratch = [0u8; 128];
    let mut now = 1000u64;

    // Warm-up: every kind of frame once (first-use lazy state, such as
    // arc-swap's per-thread debt node, is set up here).
    for i in 0..2 * SLOTS {
        let (f, meta) = frame(i, &t, &mut scratch);
        assert!(worker.device().push_rx(f, meta, VnetHdr::default()));
        if worker.device().pending() == SLOTS {
            while worker.poll_once(now).unwrap() > 0 {}
        }
    }
    while worker.poll_once(now).unwrap() > 0 {}
    let seen0 = stats.frames_seen.load(Ordering::Relaxed);

    let mut allocs = 0;
    let mut frees = 0;
    let mut i = 0;
    let mut next_publish = PUBLISH_EVERY;
    while i < FRAMES {
        if i >= next_publish {
            // The slow path's swap (allocation-free here: the Arc is built).
            shared.table.store(tables[i / PUBLISH_EVERY].clone());
            next_publish += PUBLISH_EVERY;
            // `ulvsadm flows` asks (the slow path preallocates the copy's
            // buffer, here, uncounted); the worker's copies between the
            // counted batches must not allocate, even when the buffer fills.
            stats.dump.ask(None, 16);
            if let Some(l) = &link {
                sync_thread(l, i / PUBLISH_EVERY);
            }
        }
        let ((), a, f) = count(|| {
            while i < FRAMES && i < next_publish {
                let (f, meta) = frame(i, &t, &mut scratch);
                if !worker.device().push_rx(f, meta, VnetHdr::default()) {
                    break;
                }
                i += 1;
            }
            while worker.device().pending() > 0 {
                worker.poll_once(now).unwrap();
                now += 50;
            }
        });
        allocs += a;
        frees += f;
    }
    // The counter does count (checked here, not in a test of its own: the
    // counters are process-wide, and tests run in parallel).
    let (v, a, _) = count(|| std::hint::black_box(vec![1u8; 100]));
    assert!(a >= 1, "the counting allocator saw {a} allocations of a Vec");
    drop(v);

    let sync = match (&link, fast) {
        (Some(_), _) => " with a sync link",
        (None, true) => " with an XDP fast path",
        (None, false) => "",
    };
    if let Some(m) = &worker.device().fast {
        // The worker did hand flows over and asked about expiring ones.
        assert!(m.installs > 0 && m.removes > 0 && m.keep_asked > 0, "{m:?}");
    }
    assert_eq!(allocs, 0, "the fast path{sync} allocated {allocs} times");
    let copy = stats
        .dump
        .take()
        .expect("the worker answered the last flows request");
    assert_eq!(copy.flows.len(), 16, "the copy filled its buffer");
    assert_eq!(frees, 0, "the fast path{sync} freed {frees} times");

    let s = &*stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(get(&s.frames_seen) - seen0, FRAMES as u64);
    assert!(accounting_holds(s));
    assert_eq!(get(&s.generation), (FRAMES / PUBLISH_EVERY) as u64);
    // The counted phase did exercise the paths it claims to.
    assert!(get(&s.forwarded) > FRAMES as u64 / 2, "{}", get(&s.forwarded));
    assert!(get(&s.evictions) > 0, "no evictions");
    assert!(get(&s.expirations) > 0, "no expirations");
    let dropped: u64 = s.drops.iter().map(get).sum();
    assert!(dropped >= FRAMES as u64 / 20, "{dropped}");
    // IPv6 went through classification and the IPv6 flow table.
    for r in [
        Reason::V6Truncated,
        Reason::V6BadPayloadLength,
        Reason::V6ExtChainTooLong,
        Reason::V6Icmp,
        Reason::V6Fragment,
        Reason::V6IcmpNoFlow,
        Reason::TunPacketTooBig,
        Reason::NatNoFlow,
    ] {
        assert!(get(&s.drops[r as usize]) > 0, "no {} drop", r.name());
    }
    for (name, c) in [
        ("echo_replies", &s.echo_replies),
        ("icmp_errors_forwarded", &s.icmp_errors_forwarded),
        ("fragments_forwarded", &s.fragments_forwarded),
    ] {
        assert!(get(c) > 0, "no {name}");
    }
    // NAT6 replies went back, and NAT6 and TUN6 packets to their servers
    // (the last four backend ids).
    let n = tables[0].backends.len() as u32;
    assert!(
        (n - 4..n - 2)
            .map(|id| get(&s.backend(id).out_packets))
            .sum::<u64>()
            > 0
    );
    assert!((n - 4..n).all(|id| get(&s.backend(id).packets) > 0));
    // Sent: the forwarded frames and the Packet Too Big answers (whose
    // packets count as drops).
    assert_eq!(
        worker.device().sent_count,
        get(&s.forwarded) + get(&s.drops[Reason::TunPacketTooBig as usize])
    );
    if let Some(l) = &link {
        // Every sync path ran in the counted phase.
        assert!(get(&l.notes_full) > 0, "the worker never met a full queue");
        assert!(!l.notes.is_empty(), "no notes pushed");
        assert!(get(&l.synced_applied) > 0 && get(&l.synced_kept_local) > 0);
        assert!(get(&l.walk_copied) > 0, "no walk copied");
    }
}
