//! The worker's side of the XDP fast path for established DR flows, on a
//! `MemDevice` that stands in for it: which flows it installs (DR, TCP
//! established or UDP, at least `FAST_PATH_AFTER_MS` old, untagged) with
//! which MACs, which it removes (FIN/RST), how expiry asks it whether
//! a flow is still busy there before letting it go, and how a flow-sync
//! refresh walk asks it when a flow was last forwarded there.

mod common;

use std::sync::Arc;

use common::*;
use ulvs::control::publish::build_table;
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::synclink::{Note, NoteKind, Synced, WorkerLink};
use ulvs::dataplane::worker::{Shared, Worker, FAST_PATH_AFTER_MS};
use ulvs::fwd::flow::{FlowKey, FlowState};
use ulvs::io::mem::{MemDevice, MemFast};
use ulvs::io::{FastFlow, RxMeta, VnetHdr};
use ulvs::wire::tcp;

/// `web` (TCP :80) and `dns` (UDP :53) in DR on 198.18.100.1, `nat-web`
/// (TCP :80, NAT) on 198.18.100.2; short timeouts so expiry is quick.
const CFG: &str = "\
interface: eth0
maglev_table_size: 251
timeouts:
  tcp: 60
  udp: 30
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    mode: dr
    real_servers:
      - address: 198.18.0.11
      - address: 198.18.0.12
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    mode: dr
    real_servers:
      - address: 198.18.0.11
      - address: 198.18.0.12
  - name: nat-web
    vip: 198.18.100.2
    port: 80
    protocol: tcp
    mode: nat
    real_servers:
      - address: 198.18.0.21:8080
";

const VIP_NAT: u32 = 0xc612_6402;

struct Rig {
    worker: Worker<MemDevice>,
    now: u64,
}

impl Rig {
    fn new(fast: bool) -> Self {
        let cfg = config(CFG);
        let rt = runtime(&cfg);
        let t = build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0xc612_0002, 1);
        let mut dev = MemDevice::new(64, 4096);
        dev.capture = true;
        if fast {
            dev.fast = Some(MemFast::default());
        }
        let shared = Arc::new(Shared::new(t));
        let mut worker = Worker::new(dev, 1024, shared, Arc::new(WorkerStats::default()));
        worker.poll_once(1000).unwrap();
        Rig { worker, now: 1000 }
    }

    /// Send `frame` at `at` ms; the server it went to.
    fn send_at(&mut self, at: u64, frame: &[u8]) -> std::net::Ipv4Addr {
        self.now = at;
        let dev = self.worker.device();
        dev.sent.clear();
        assert!(dev.push_rx(frame, RxMeta::default(), VnetHdr::default()));
        assert_eq!(self.worker.poll_once(at).unwrap(), 1);
        let sent = self.worker.device().sent.pop().expect("forwarded");
        server_of(&sent.bytes[0..6])
    }

    fn fast(&mut self) -> &mut MemFast {
        self.worker.device().fast.as_mut().unwrap()
    }

    /// Idle polls at `at` (each sweeps the whole small table).
    fn idle_at(&mut self, at: u64) {
        self.now = at;
        for _ in 0..4 {
            self.worker.poll_once(at).unwrap();
        }
    }
}

fn tuple(src: u32, sport: u16, dst: u32, dport: u16, proto: u8) -> FastFlow {
    FastFlow {
        src,
        dst,
        sport,
        dport,
        proto,
        ..FastFlow::default()
    }
}

const LATER: u64 = FAST_PATH_AFTER_MS as u64;

#[test]
fn a_tcp_flow_is_installed_once_established_and_old_enough_and_removed_by_fin() {
    let mut r = Rig::new(true);
    let f = |flags, payload: &[u8]| tcp_frame(CLIENT, 40000, VIP, 80, flags, payload);
    let server = r.send_at(1000, &f(tcp::SYN, b""));
    r.send_at(1001, &f(tcp::ACK, b""));
    r.send_at(1002, &f(tcp::PSH | tcp::ACK, b"GET /"));
    assert_eq!(r.fast().installs, 0, "a young flow stays with the worker");
    assert_eq!(r.send_at(1000 + LATER, &f(tcp::ACK, b"more")), server);
    let want = tuple(CLIENT, 40000, VIP, 80, 6);
    let got = *r.fast().get(&want).expect("installed");
    assert_eq!(got.dst_mac, mac_of(server));
    assert_eq!(got.src_mac, DIRECTOR_MAC);
    assert_eq!(r.fast().installs, 1);
    r.send_at(1001 + LATER, &f(tcp::FIN | tcp::ACK, b""));
    assert!(r.fast().get(&want).is_none(), "FIN gives the flow back");
    assert_eq!(r.fast().removes, 1);
    // RST as well, on another connection.
    let g = |flags| tcp_frame(CLIENT, 40001, VIP, 80, flags, b"");
    r.send_at(2000, &g(tcp::SYN));
    r.send_at(2001 + LATER, &g(tcp::ACK));
    assert!(r.fast().get(&tuple(CLIENT, 40001, VIP, 80, 6)).is_some());
    r.send_at(2002 + LATER, &g(tcp::RST));
    assert!(r.fast().get(&tuple(CLIENT, 40001, VIP, 80, 6)).is_none());
    // A FIN of a flow the worker no longer knows (evicted) still removes
    // what the fast path may hold.
    let before = r.fast().removes;
    r.send_at(3000, &tcp_frame(CLIENT, 40002, VIP, 80, tcp::FIN | tcp::ACK, b""));
    assert_eq!(r.fast().removes, before + 1);
}

#[test]
fn short_connections_cost_the_fast_path_nothing() {
    let mut r = Rig::new(true);
    for port in 0..20u16 {
        let t0 = 1000 + u64::from(port) * 1000;
        let f = |flags| tcp_frame(CLIENT, 41000 + port, VIP, 80, flags, b"");
        r.send_at(t0, &f(tcp::SYN));
        r.send_at(t0 + 1, &f(tcp::ACK));
        r.send_at(t0 + 2, &f(tcp::PSH | tcp::ACK));
        r.send_at(t0 + 3, &f(tcp::FIN | tcp::ACK));
    }
    let m = r.fast();
    assert_eq!((m.installs, m.removes), (0, 0));
}

#[test]
fn udp_flows_are_installed_nat_and_tagged_ones_never() {
    let mut r = Rig::new(true);
    let u = udp_frame(CLIENT, 5000, VIP, 53, b"q");
    let server = r.send_at(1000, &u);
    assert_eq!(r.fast().installs, 0);
    r.send_at(1000 + LATER, &u);
    let got = *r
        .fast()
        .get(&tuple(CLIENT, 5000, VIP, 53, 17))
        .expect("installed");
    assert_eq!((got.dst_mac, got.src_mac), (mac_of(server), DIRECTOR_MAC));
    // NAT: the worker rewrites addresses, the fast path cannot.
    let n = |flags| tcp_frame(CLIENT, 40000, VIP_NAT, 80, flags, b"x");
    r.worker
        .device()
        .push_rx(&n(tcp::SYN), RxMeta::default(), VnetHdr::default());
    r.worker.poll_once(3000).unwrap();
    r.worker
        .device()
        .push_rx(&n(tcp::ACK), RxMeta::default(), VnetHdr::default());
    r.worker.poll_once(3000 + LATER).unwrap();
    assert!(r.fast().get(&tuple(CLIENT, 40000, VIP_NAT, 80, 6)).is_none());
    // A frame whose tag the driver stripped: the program never sees the
    // tag, so it must not take such a flow.
    let v = udp_frame(CLIENT, 5001, VIP, 53, b"q");
    let tagged = RxMeta {
        vlan_tci: Some(10),
        ..RxMeta::default()
    };
    r.worker.device().push_rx(&v, tagged, VnetHdr::default());
    r.worker.poll_once(4000).unwrap();
    r.worker.device().push_rx(&v, tagged, VnetHdr::default());
    r.worker.poll_once(4000 + LATER).unwrap();
    assert!(r.fast().get(&tuple(CLIENT, 5001, VIP, 53, 17)).is_none());
    assert_eq!(r.fast().installs, 1);
}

#[test]
fn expiry_keeps_a_flow_busy_in_the_fast_path_and_lets_an_idle_one_go() {
    let mut r = Rig::new(true);
    let u = udp_frame(CLIENT, 5000, VIP, 53, b"q");
    let server = r.send_at(1000, &u);
    r.send_at(1000 + LATER, &u);
    assert_eq!(r.worker.flow_count(), 1);
    // 40 s later (UDP timeout 30 s): the program forwarded a frame 5 ms ago.
    r.fast().idle_ms = Some(5);
    r.idle_at(41_000);
    assert_eq!(r.worker.flow_count(), 1, "kept: busy in XDP");
    assert!(r.fast().keep_asked >= 1);
    assert!(r.fast().get(&tuple(CLIENT, 5000, VIP, 53, 17)).is_some());
    // Kept with its server and as a known flow: a frame the worker sees
    // now goes to the same server.
    assert_eq!(r.send_at(41_001, &u), server);
    // Now the program saw nothing for longer than the timeout.
    r.fast().idle_ms = None;
    r.idle_at(120_000);
    assert_eq!(r.worker.flow_count(), 0, "expired");
    assert!(
        r.fast().get(&tuple(CLIENT, 5000, VIP, 53, 17)).is_none(),
        "and gone from XDP"
    );
}

#[test]
fn without_a_fast_path_nothing_is_asked() {
    let mut r = Rig::new(false);
    let u = udp_frame(CLIENT, 5000, VIP, 53, b"q");
    r.send_at(1000, &u);
    r.send_at(1000 + LATER, &u);
    assert!(r.worker.device().fast.is_none());
    r.idle_at(41_000);
    assert_eq!(r.worker.flow_count(), 0);
}

fn dns_key(sport: u16) -> FlowKey {
    FlowKey {
        src: CLIENT,
        dst: VIP,
        sport,
        dport: 53,
        proto: 17,
    }
}

/// A flow whose frames all take the fast path is never seen by its worker
/// after the install, so the worker's last packet time goes stale. A
/// flow-sync refresh walk then asks the fast path: the copy carries the
/// fast path's idle time (the peer's copy lives as long as the flow), and
/// a flow synced from a peer is copied at all (a refresh copies a peer's
/// flow only when it had a packet since the last walk).
#[test]
fn a_refresh_walk_carries_the_fast_paths_last_seen_time() {
    let mut r = Rig::new(true);
    let link = Arc::new(WorkerLink::new());
    r.worker.attach_sync(link.clone());
    let rt = runtime(&config(CFG));
    let id = id_of(&rt, "dns", SERVERS[1]);
    // A flow of this director and one synced from director 2.
    let own = udp_frame(CLIENT, 5000, VIP, 53, b"q");
    let theirs = udp_frame(CLIENT, 5001, VIP, 53, b"q");
    r.send_at(1000, &own);
    link.synced
        .push(Synced {
            key: dns_key(5001),
            backend: id,
            state: FlowState::Udp,
            idle_ms: 0,
            origin: 2,
        })
        .unwrap();
    r.idle_at(1000);
    r.send_at(1000 + LATER, &own);
    assert_eq!(
        r.send_at(1000 + LATER, &theirs),
        SERVERS[1].parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert!(r.fast().get(&tuple(CLIENT, 5000, VIP, 53, 17)).is_some());
    assert!(r.fast().get(&tuple(CLIENT, 5001, VIP, 53, 17)).is_some());
    // The first walk copies everything (after the new flow's note).
    let drain = |link: &WorkerLink| std::iter::from_fn(|| link.notes.pop()).collect::<Vec<Note>>();
    assert_eq!(drain(&link).len(), 1);
    let n = link.ask_walk(false);
    r.idle_at(1200);
    assert!(link.walk_complete(n));
    assert_eq!(drain(&link).len(), 2);
    // 20 s on (UDP timeout 30 s) the worker has seen nothing, the program
    // forwarded a frame of each 5 ms ago.
    r.fast().idle_ms = Some(5);
    let asked = r.fast().idle_asked;
    let n = link.ask_walk(false);
    r.idle_at(21_200);
    assert!(link.walk_complete(n));
    let mut got: Vec<(u16, NoteKind, u32, u8)> = drain(&link)
        .iter()
        .map(|n| (n.key.sport, n.kind, n.idle_ms, n.origin))
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        vec![(5000, NoteKind::Copy, 5, 0), (5001, NoteKind::Copy, 5, 2)],
        "both copied, idle as the fast path saw them"
    );
    assert!(r.fast().idle_asked >= asked + 2);
    // Idle in the fast path too: the worker's own time, and the peer's
    // flow is no longer copied.
    r.fast().idle_ms = None;
    let n = link.ask_walk(false);
    r.idle_at(22_200);
    assert!(link.walk_complete(n));
    let got: Vec<(u16, u32)> = drain(&link).iter().map(|n| (n.key.sport, n.idle_ms)).collect();
    assert_eq!(got, vec![(5000, 22_200 - 1000 - LATER as u32)]);
}
