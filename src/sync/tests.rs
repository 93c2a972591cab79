//! Engine tests: two engines over loopback UDP in one thread, and each
//! rejection reason with exactly its counter moving.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::Key;
use super::thread::{sender_id, Engine, Settings, TICK};
use super::wire::{Builder, Header, MsgType, Record, MAC_LEN};
use crate::control::snapshot::SyncSnap;
use crate::dataplane::synclink::{worker_for, worker_for6, Note, NoteKind, Placement, WorkerLink};
use crate::dataplane::worker::Shared;
use crate::fwd::flow::{FlowKey, FlowKey6, FlowState};
use crate::fwd::maglev::MaglevTable;
use crate::fwd::table::{Backend6, BackendFwd, BackendState, FwdTable, Mode, ServiceFwd, ServiceFwd6};

const VIP: u32 = 0xc612_6401; // 198.18.100.1
const S1: u32 = 0xc612_000b; // 198.18.0.11
const S2: u32 = 0xc612_000c; // 198.18.0.12
const OTHER: u32 = 0xc612_000d; // 198.18.0.13, a server of another service
const VIP6: u128 = 0x2001_0db8_0100_0000_0000_0000_0000_0001; // 2001:db8:100::1
const S6: [u128; 2] = [
    0x2001_0db8_0002_0000_0000_0000_0000_0011, // 2001:db8:2::11
    0x2001_0db8_0002_0000_0000_0000_0000_0012,
];

/// web 198.18.100.1:80/tcp with servers .11 and .12 under backend ids
/// `ids`, dns 198.18.100.1:53/udp with server .13 (id 9), and web6
/// [2001:db8:100::1]:80/tcp with servers 2001:db8:2::11 and ::12 under ids
/// `ids` + 2.
fn table(ids: [u32; 2]) -> FwdTable {
    let mut t = FwdTable::empty([2; 6]);
    let be = |addr, port, svc_port| BackendFwd {
        addr,
        port,
        mac: Some([4; 6]),
        state: BackendState::Up,
        svc_vip: VIP,
        svc_port,
        mode: Mode::Dr,
    };
    t.backends = vec![BackendFwd::REMOVED; 10];
    t.backends[ids[0] as usize] = be(S1, 0, 80);
    t.backends[ids[1] as usize] = be(S2, 0, 80);
    t.backends[9] = be(OTHER, 0, 53);
    let svc = |port, proto, members| ServiceFwd {
        vip: VIP,
        port,
        proto,
        mode: Mode::Dr,
        maglev: MaglevTable::default(),
        members,
        client_affinity: false,
    };
    t.services = vec![svc(80, 6, ids.to_vec()), svc(53, 17, vec![9])];
    t.backends6 = vec![Backend6::default(); 10];
    let ids6 = ids.map(|i| i + 2);
    for (id, addr) in ids6.iter().zip(S6) {
        t.backends[*id as usize] = BackendFwd {
            addr: 0,
            svc_vip: 0,
            ..be(0, 0, 80)
        };
        t.backends6[*id as usize] = Backend6 { addr, svc_vip: VIP6 };
    }
    t.services6 = vec![ServiceFwd6 {
        vip: VIP6,
        port: 80,
        proto: 6,
        mode: Mode::Dr,
        maglev: MaglevTable::default(),
        members: ids6.to_vec(),
        client_affinity: false,
    }];
    t.sort();
    t
}

struct Side {
    engine: Engine,
    links: Vec<Arc<WorkerLink>>,
}

fn bind() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

fn side(sock: UdpSocket, peer: SocketAddr, key: Option<&[u8]>, workers: usize, ids: [u32; 2]) -> Side {
    let listen = sock.local_addr().unwrap();
    let settings = Settings {
        listen,
        peers: vec![peer],
        key: key.map(Key::new),
        refresh: Duration::from_secs(3600),
    };
    let links: Vec<Arc<WorkerLink>> = (0..workers).map(|_| Arc::new(WorkerLink::new())).collect();
    let shared = Arc::new(Shared::new(table(ids)));
    let engine = Engine::with_socket(sock, &settings, links.clone(), Placement::Fanout, shared);
    Side { engine, links }
}

/// A pair A <-> B; B has two workers and other backend ids than A.
fn pair(key: Option<&[u8]>) -> (Side, Side) {
    let (sa, a) = bind();
    let (sb, b) = bind();
    (side(sa, b, key, 1, [0, 1]), side(sb, a, key, 2, [5, 6]))
}

fn key(i: u16) -> FlowKey {
    FlowKey {
        src: 0xc612_0164,
        dst: VIP,
        sport: 30000 + i,
        dport: 80,
        proto: 6,
    }
}

fn note(i: u16, backend: u32, kind: NoteKind) -> Note {
    Note {
        kind,
        key: key(i),
        backend,
        state: FlowState::TcpEstablished,
        idle_ms: 7,
        origin: 0,
    }
}

fn key6(i: u16) -> FlowKey6 {
    FlowKey6 {
        src: 0x2001_0db8_0200_0000_0000_0000_0000_0000 | u128::from(i % 7),
        dst: VIP6,
        sport: 30000 + i,
        dport: 80,
        proto: 6,
    }
}

fn note6(i: u16, backend: u32, kind: NoteKind) -> Note<FlowKey6> {
    Note {
        kind,
        key: key6(i),
        backend,
        state: FlowState::TcpEstablished,
        idle_ms: 7,
        origin: 0,
    }
}

/// Poll `s` until `cond` holds on its snapshot or 2 s pass.
fn poll_until(s: &mut Side, cond: impl Fn(&SyncSnap) -> bool) -> SyncSnap {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        s.engine.poll().unwrap();
        let snap = s.engine.status().snapshot(&s.links);
        if cond(&snap) || Instant::now() > deadline {
            return snap;
        }
    }
}

fn synced_total(s: &Side) -> usize {
    s.links.iter().map(|l| l.synced.len()).sum()
}

#[test]
fn a_flow_crosses_loopback_into_the_right_worker() {
    for key_bytes in [None, Some(&b"0123456789abcdef0123"[..])] {
        let (mut a, mut b) = pair(key_bytes);
        let n = 50u16;
        for i in 0..n {
            a.links[0].notes.push(note(i, 1, NoteKind::New)).unwrap();
        }
        a.engine.tick(Instant::now());
        let snap = poll_until(&mut b, |s| s.flows_received >= u64::from(n));
        assert_eq!(snap.flows_received, u64::from(n), "{snap:?}");
        assert_eq!(snap.rejected.values().sum::<u64>(), 0, "{snap:?}");
        assert_eq!(synced_total(&b), n as usize);
        // Each flow is in the worker the fanout sends its frames to, with
        // B's id for 198.18.0.12.
        for (w, l) in b.links.iter().enumerate() {
            while let Some(s) = l.synced.pop() {
                assert_eq!(worker_for(&s.key, 2, Placement::Fanout), Some(w));
                assert_eq!(s.backend, 6);
                assert_eq!(s.state, FlowState::TcpEstablished);
                assert_eq!(s.idle_ms, 7);
                assert_eq!(s.origin, 1);
            }
        }
        let sa = a.engine.status().snapshot(&a.links);
        // 50 flows: 3 datagrams of up to 19, plus the bulk request.
        assert_eq!(sa.flows_sent, 50);
        assert_eq!(sa.datagrams_sent, 3 + 1);
        assert_eq!(sa.authenticated, key_bytes.is_some());
    }
}

/// IPv6 flows go as family-6 records, come out in the IPv6 queue of the
/// worker the fanout sends their frames to, with the receiver's id for
/// the same server; IPv4 notes in the same tick share the datagrams.
#[test]
fn an_ipv6_flow_crosses_loopback_into_the_right_worker() {
    let (mut a, mut b) = pair(Some(b"sixteen byte key"));
    let n = 30u16;
    for i in 0..n {
        // A's ids 2/3 are 2001:db8:2::11/::12; B's are 7/8.
        a.links[0]
            .notes6
            .push(note6(i, 2 + u32::from(i % 2), NoteKind::New))
            .unwrap();
    }
    a.links[0].notes.push(note(0, 1, NoteKind::New)).unwrap();
    a.engine.tick(Instant::now());
    let snap = poll_until(&mut b, |s| s.flows_received > u64::from(n));
    assert_eq!(snap.flows_received, u64::from(n) + 1, "{snap:?}");
    assert_eq!(snap.rejected.values().sum::<u64>(), 0, "{snap:?}");
    assert_eq!(synced_total(&b), 1, "the IPv4 flow in the IPv4 queue");
    let mut seen = [0; 2];
    for (w, l) in b.links.iter().enumerate() {
        while let Some(s) = l.synced6.pop() {
            assert_eq!(worker_for6(&s.key, 2, Placement::Fanout), Some(w));
            assert_eq!({ s.key.dst }, VIP6);
            let i = { s.key.sport } - 30000;
            assert_eq!(s.key, key6(i));
            assert_eq!(s.backend, 7 + u32::from(i % 2), "flow {i}");
            assert_eq!((s.state, s.idle_ms, s.origin), (FlowState::TcpEstablished, 7, 1));
            seen[w] += 1;
        }
    }
    assert_eq!(seen.iter().sum::<usize>(), n as usize);
    assert!(seen.iter().all(|&k| k > 0), "both workers get some: {seen:?}");
    let sa = a.engine.status().snapshot(&a.links);
    // 31 records: 2 datagrams of up to 19, plus the bulk request.
    assert_eq!((sa.flows_sent, sa.datagrams_sent), (31, 2 + 1));
}

/// An IPv6 record naming a server the receiver does not have, or a VIP it
/// does not serve, moves its counter; a note of an IPv6
/// flow whose server id has no IPv6 address is not sent.
#[test]
fn ipv6_records_of_unknown_servers_and_services_are_counted() {
    let (mut a, mut b) = pair(None);
    let from = a.engine.local_addr().unwrap();
    let h = Header {
        msg: MsgType::Flows,
        sender: 7,
        boot: 1,
        seq: 1,
    };
    let v6 = |s: &str| std::net::IpAddr::V6(s.parse().unwrap());
    let base = Record {
        proto: 6,
        state: FlowState::TcpEstablished,
        kind: NoteKind::New,
        client: v6("2001:db8:200::9"),
        client_port: 40000,
        vip: v6("2001:db8:100::1"),
        vip_port: 80,
        server: v6("2001:db8:2::12"),
        server_port: 0,
        idle_ms: 0,
        creator: 7,
    };
    let recs = [
        base,
        Record {
            server: v6("2001:db8:2::99"),
            ..base
        },
        Record {
            vip: v6("2001:db8:100::2"),
            ..base
        },
    ];
    b.engine.receive(&forge(h, &recs, None), from, Instant::now());
    let s = b.engine.status().snapshot(&b.links);
    assert_eq!(s.flows_received, 1);
    assert_eq!(s.rejected["unknown_server"], 1);
    assert_eq!(s.rejected["unknown_service"], 1);
    let got: Vec<_> = b.links.iter().filter_map(|l| l.synced6.pop()).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].backend, 8);
    // Id 4 names no server at all: not sendable.
    a.links[0].notes6.push(note6(1, 4, NoteKind::New)).unwrap();
    a.engine.tick(Instant::now());
    let s = a.engine.status().snapshot(&a.links);
    assert_eq!((s.notes_unresolved, s.flows_sent), (1, 0));
}

#[test]
fn bulk_transfer_walks_every_worker_then_says_done() {
    let (mut a, mut b) = pair(Some(b"sixteen byte key"));
    // A starts: its first tick asks B for everything.
    a.engine.tick(Instant::now());
    let snap = a.engine.status().snapshot(&a.links);
    assert_eq!(snap.peers[0].bulk, "requested");
    assert_eq!(snap.peers[0].bulk_requests, 1);
    poll_until(&mut b, |s| s.datagrams_received >= 1);
    for l in &b.links {
        assert_eq!(l.walk_asked.load(SeqCst), 1, "every worker is asked to walk");
        assert!(l.walk_all.load(SeqCst), "a bulk walk copies every flow");
    }
    // Worker 0 walks (3 flows), worker 1 not yet: no "done" yet.
    for i in 0..3 {
        b.links[0].notes.push(note(i, 5, NoteKind::Copy)).unwrap();
    }
    b.links[0].walk_done.store(1, SeqCst);
    b.engine.tick(Instant::now());
    let sa = poll_until(&mut a, |s| s.peers[0].bulk_flows >= 3);
    assert_eq!(sa.peers[0].bulk, "receiving");
    // Worker 1 finishes with 2 more.
    for i in 3..5 {
        b.links[1].notes.push(note(i, 6, NoteKind::Copy)).unwrap();
    }
    b.links[1].walk_done.store(1, SeqCst);
    b.engine.tick(Instant::now());
    let sa = poll_until(&mut a, |s| s.peers[0].bulk == "complete");
    assert_eq!(sa.peers[0].bulk, "complete");
    assert_eq!(sa.peers[0].bulk_flows, 5);
    assert!(sa.peers[0].bulk_seconds.is_some());
    assert_eq!(synced_total(&a), 5);
    let sb = b.engine.status().snapshot(&b.links);
    assert_eq!(sb.bulk_served, 1);
    assert_eq!(sb.peers[0].bulk, "requested", "B asks A in its own first tick");
}

#[test]
fn unanswered_bulk_requests_are_retried_then_given_up() {
    let (mut a, b) = pair(None);
    let t0 = Instant::now();
    for i in 0..40u64 {
        a.engine.tick(t0 + Duration::from_millis(1001 * i));
    }
    let s = a.engine.status().snapshot(&a.links);
    assert_eq!(s.peers[0].bulk, "unanswered");
    assert_eq!(s.peers[0].bulk_requests, 30);
    // The peer comes up (its own bulk request arrives): ask it again.
    let mut b = b;
    b.engine.tick(Instant::now());
    let s = poll_until(&mut a, |s| s.peers[0].bulk == "requested");
    assert_eq!(s.peers[0].bulk_requests, 0);
    a.engine.tick(Instant::now());
    let s = a.engine.status().snapshot(&a.links);
    assert_eq!(
        (s.peers[0].bulk.as_str(), s.peers[0].bulk_requests),
        ("requested", 1)
    );
}

#[test]
fn refresh_asks_for_a_partial_walk_when_none_runs() {
    let (sa, _) = bind();
    let (_, b) = bind();
    let mut a = side(sa, b, None, 2, [0, 1]);
    let t0 = Instant::now();
    a.engine.tick(t0);
    assert_eq!(a.links[0].walk_asked.load(SeqCst), 0);
    a.engine.tick(t0 + Duration::from_secs(3601));
    for l in &a.links {
        assert_eq!(l.walk_asked.load(SeqCst), 1);
        assert!(!l.walk_all.load(SeqCst));
    }
    // Worker 1 is still walking at the next refresh: it is not asked again.
    a.links[0].walk_done.store(1, SeqCst);
    a.engine.tick(t0 + Duration::from_secs(7202));
    assert_eq!(a.links[0].walk_asked.load(SeqCst), 2);
    assert_eq!(a.links[1].walk_asked.load(SeqCst), 1);
}

/// A datagram as peer `from_id` would make it.
fn forge(h: Header, recs: &[Record], key: Option<&[u8]>) -> Vec<u8> {
    let mut b = Builder::new();
    b.start(&h, key.is_some());
    for r in recs {
        b.push(r).unwrap();
    }
    let k = key.map(Key::new);
    b.finish(|s| k.as_ref().map_or([0; MAC_LEN], |k| k.sign(s)))
        .to_vec()
}

fn rec(server: u32, vip_port: u16, proto: u8) -> Record {
    Record {
        proto,
        state: FlowState::TcpEstablished,
        kind: NoteKind::New,
        client: std::net::Ipv4Addr::from(0xc612_0164u32).into(),
        client_port: 40000,
        vip: std::net::Ipv4Addr::from(VIP).into(),
        vip_port,
        server: std::net::Ipv4Addr::from(server).into(),
        server_port: 0,
        idle_ms: 0,
        creator: 1,
    }
}

fn rejected(s: &Side) -> Vec<(String, u64)> {
    s.engine
        .status()
        .snapshot(&s.links)
        .rejected
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn only(reason: &str, n: u64) -> Vec<(String, u64)> {
    vec![(reason.to_string(), n)]
}

#[test]
fn each_rejection_moves_exactly_its_counter() {
    const KEY: &[u8] = b"the right key, 24 bytes!";
    let (sa, a) = bind();
    drop(sa);
    let (sb, _) = bind();
    let mut b = side(sb, a, Some(KEY), 2, [5, 6]);
    let now = Instant::now();
    let mut seq = 0;
    let mut h = |msg| {
        seq += 1;
        Header {
            msg,
            sender: 7,
            boot: 100,
            seq,
        }
    };
    let good = forge(h(MsgType::Flows), &[rec(S1, 80, 6)], Some(KEY));

    let stranger: SocketAddr = "127.0.0.1:1".parse().unwrap();
    b.engine.receive(&good, stranger, now);
    assert_eq!(rejected(&b), only("not_peer", 1));

    let mut bad = good.clone();
    bad[5] = 77;
    let mut b2 = |d: &[u8]| b.engine.receive(d, a, now);
    b2(&bad);
    let mut v2 = good.clone();
    v2[4] = 2;
    b2(&v2);
    b2(&good[..good.len() - 1]);
    let no_mac = forge(h(MsgType::Flows), &[rec(S1, 80, 6)], None);
    b2(&no_mac);
    let wrong_key = forge(
        h(MsgType::Flows),
        &[rec(S1, 80, 6)],
        Some(b"another key of 24 bytes!"),
    );
    b2(&wrong_key);
    let mut flipped = forge(h(MsgType::Flows), &[rec(S1, 80, 6)], Some(KEY));
    flipped[37] ^= 1; // a client address byte, under the MAC
    b2(&flipped);
    assert_eq!(synced_total(&b), 0);
    let r = rejected(&b);
    assert_eq!(
        r,
        vec![
            ("bad_mac".to_string(), 3),
            ("malformed".to_string(), 2),
            ("not_peer".to_string(), 1),
            ("version".to_string(), 1),
        ]
    );

    // Good, then replayed; an older boot; a service and a server unknown.
    b.engine.receive(&good, a, now);
    assert_eq!(synced_total(&b), 1);
    b.engine.receive(&good, a, now);
    let old_boot = forge(
        Header {
            boot: 99,
            ..h(MsgType::Flows)
        },
        &[rec(S1, 80, 6)],
        Some(KEY),
    );
    b.engine.receive(&old_boot, a, now);
    let mixed = forge(
        h(MsgType::Flows),
        &[
            rec(S2, 80, 6),         // fine
            rec(S1, 81, 6),         // no service on port 81
            rec(S1, 80, 17),        // no web service over UDP
            rec(OTHER, 80, 6),      // a server, but of the dns service
            rec(0x0a000001, 80, 6), // not a server at all
        ],
        Some(KEY),
    );
    b.engine.receive(&mixed, a, now);
    let s = b.engine.status().snapshot(&b.links);
    assert_eq!(s.rejected["replay"], 2);
    assert_eq!(s.rejected["unknown_service"], 2);
    assert_eq!(s.rejected["unknown_server"], 2);
    assert_eq!(s.flows_received, 2);
    assert_eq!(s.datagrams_received, 2);
    assert_eq!(synced_total(&b), 2, "only the resolvable records reach a worker");
}

#[test]
fn without_a_key_a_mac_is_refused_and_a_full_queue_counted() {
    let (sa, a) = bind();
    drop(sa);
    let (sb, _) = bind();
    let mut b = side(sb, a, None, 1, [5, 6]);
    let now = Instant::now();
    let h = |seq| Header {
        msg: MsgType::Flows,
        sender: 7,
        boot: 1,
        seq,
    };
    b.engine
        .receive(&forge(h(1), &[rec(S1, 80, 6)], Some(b"0123456789abcdef")), a, now);
    assert_eq!(rejected(&b), only("bad_mac", 1));
    // Fill the worker's queue, then one more.
    let cap = b.links[0].synced.capacity();
    let mut seq = 2;
    let mut sent = 0;
    while sent <= cap {
        let recs: Vec<Record> = (0..19).map(|_| rec(S1, 80, 6)).collect();
        b.engine.receive(&forge(h(seq), &recs, None), a, now);
        seq += 1;
        sent += 19;
    }
    let s = b.engine.status().snapshot(&b.links);
    assert_eq!(s.synced_full, (sent - cap) as u64);
    assert_eq!(b.links[0].synced.len(), cap);
}

#[test]
fn notes_full_is_the_workers_sum_and_unknown_ids_are_counted() {
    let (mut a, _b) = pair(None);
    a.links[0].notes_full.store(3, Relaxed);
    a.links[0].notes.push(note(1, 4, NoteKind::New)).unwrap(); // id 4: no server
    a.engine.tick(Instant::now());
    let s = a.engine.status().snapshot(&a.links);
    assert_eq!(s.notes_full, 3);
    assert_eq!(s.notes_unresolved, 1);
    assert_eq!(s.flows_sent, 0);
}

#[test]
fn sender_id_is_the_listen_address() {
    assert_eq!(sender_id("198.18.0.2:8848".parse().unwrap()), 0xc612_0002);
    assert_eq!(sender_id("[2001:db8::c612:3]:8848".parse().unwrap()), 0xc612_0003);
    let _ = TICK;
}

/// Two sync threads (as the director runs them) over loopback: flows a
/// worker notes on A reach B's workers' queues; each asked the other for a
/// bulk transfer, answered once the (simulated) workers finish their walks.
#[test]
fn two_threads_over_loopback() {
    let (sa, a) = bind();
    let (sb, b) = bind();
    let key = Key::new(b"two threads, one key");
    let run = |sock, listen, peer, workers, ids| {
        let settings = Settings {
            listen,
            peers: vec![peer],
            key: Some(key.clone()),
            refresh: Duration::from_secs(3600),
        };
        let links: Vec<Arc<WorkerLink>> = (0..workers).map(|_| Arc::new(WorkerLink::new())).collect();
        let shared = Arc::new(Shared::new(table(ids)));
        let h = super::thread::spawn_on(sock, &settings, links.clone(), Placement::Fanout, shared).unwrap();
        (h, links)
    };
    let (ha, la) = run(sa, a, b, 1, [0, 1]);
    let (hb, lb) = run(sb, b, a, 3, [5, 6]);
    for i in 0..100 {
        la[0].notes.push(note(i, i as u32 % 2, NoteKind::New)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let total = |l: &[Arc<WorkerLink>]| l.iter().map(|l| l.synced.len()).sum::<usize>();
    while total(&lb) < 100 && Instant::now() < deadline {
        // Play the workers: finish every walk asked for at once.
        for l in la.iter().chain(&lb) {
            l.walk_done.store(l.walk_asked.load(SeqCst), SeqCst);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(total(&lb), 100);
    let mut ids = [0; 2];
    for (w, l) in lb.iter().enumerate() {
        while let Some(s) = l.synced.pop() {
            assert_eq!(worker_for(&s.key, 3, Placement::Fanout), Some(w));
            ids[(s.backend - 5) as usize] += 1;
        }
    }
    assert_eq!(ids, [50, 50], "ids 0/1 on A are 5/6 on B");
    while Instant::now() < deadline {
        let (sa, sb) = (ha.snapshot(), hb.snapshot());
        if sa.peers[0].bulk == "complete" && sb.peers[0].bulk == "complete" {
            break;
        }
        for l in la.iter().chain(&lb) {
            l.walk_done.store(l.walk_asked.load(SeqCst), SeqCst);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (sa, sb) = (ha.snapshot(), hb.snapshot());
    assert_eq!(sa.peers[0].bulk, "complete", "{sa:?}");
    assert_eq!(sb.peers[0].bulk, "complete", "{sb:?}");
    assert_eq!(sb.flows_received, 100);
    assert_eq!(sb.rejected.values().sum::<u64>(), 0);
    assert!(sa.authenticated && sb.authenticated);
    ha.stop();
    hb.stop();
}
