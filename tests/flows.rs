//! Worker-level flow behaviour on an explicit clock: flows keep their server
//! across table changes, drain and down, the active/inactive gauges follow
//! the TCP state and expiry, the incremental sweep covers the whole table, a
//! SYN flood into a full table evicts only embryonic flows, replayed SYNs
//! cost no table walk, and counters never go backwards.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use common::*;
use std::sync::Arc;
use ulvs::control::config::Config;
use ulvs::control::publish::{build_table, Health, Runtime};

use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::worker::{Shared, Worker, SYN_SECOND_CHANCE_MS};
use ulvs::fwd::flow::WAYS;
use ulvs::fwd::table::FwdTable;
use ulvs::io::mem::MemDevice;
use ulvs::io::{Action, BatchStats, Device, Frame, RxMeta, TxArena, VnetHdr};
use ulvs::wire::tcp;

/// `web`: TCP :80, and `dns`: UDP :53, on the VIP, with `servers`; short
/// timeouts (SYN 3 s, established 10 s, FIN 2 s, UDP 5 s).
fn cfg(servers: &[&str], on_server_down: &str) -> Config {
    let list: String = servers
        .iter()
        .map(|s| format!("      - address: {s}\n"))
        .collect();
    config(&format!(
        "\
interface: eth0
maglev_table_size: 251
on_server_down: {on_server_down}
timeouts:
  tcp_syn: 3
  tcp: 10
  tcp_fin: 2
  udp: 5
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    real_servers:
{list}  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    real_servers:
{list}"
    ))
}

const TCP_SYN_MS: u64 = 3000;
const TCP_FIN_MS: u64 = 2000;
const UDP_MS: u64 = 5000;

fn table(c: &Config, rt: &Runtime, generation: u64) -> FwdTable {
    build_table(c, rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0, generation)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Open `n` established flows (SYN then ACK) from source ports `first..`;
/// returns each port's server.
fn open_flows(rig: &mut Rig, first: u16, n: u16) -> BTreeMap<u16, Ipv4Addr> {
    (first..first + n)
        .map(|sport| {
            let s = rig.forward(&tcp_to_vip(sport, 80, tcp::SYN));
            assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::ACK)), s);
            (sport, s)
        })
        .collect()
}

/// Publish `t` and let the worker pick it up with an empty poll.
fn publish(rig: &mut Rig, t: FwdTable) {
    let generation = t.generation;
    rig.publish(t);
    assert_eq!(rig.worker.poll_once(rig.now).unwrap(), 0);
    assert_eq!(rig.stats().generation.load(Ordering::Relaxed), generation);
}

fn rescheduled(rig: &Rig) -> u64 {
    rig.stats().rescheduled.load(Ordering::Relaxed)
}

fn gauges(rig: &Rig, id: u32) -> (i64, i64) {
    let b = rig.stats().backend(id);
    (
        b.active.load(Ordering::Relaxed),
        b.inactive.load(Ordering::Relaxed),
    )
}

fn count(m: &BTreeMap<u16, Ipv4Addr>, server: &str) -> usize {
    m.values().filter(|s| **s == ip(server)).count()
}

#[test]
fn removing_a_server_moves_only_its_flows() {
    let c1 = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c1).unwrap();
    let ids: Vec<u32> = SERVERS.iter().map(|s| id_of(&rt, "web", s)).collect();
    let mut rig = Rig::new(table(&c1, &rt, 1), 16384);
    let before = open_flows(&mut rig, 10_000, 600);
    let on13 = count(&before, "198.18.0.13");
    assert!(on13 > 100, "{on13} of 600 flows on .13");
    assert_eq!(gauges(&rig, ids[2]), (on13 as i64, 0));

    let c2 = cfg(&SERVERS[..2], "reschedule");
    rt.sync(&c2).unwrap();
    publish(&mut rig, table(&c2, &rt, 2));

    // The first packet of a moved flow: exactly these counters move.
    let (&sport, _) = before.iter().find(|(_, s)| **s == ip("198.18.0.13")).unwrap();
    let f = tcp_to_vip(sport, 80, tcp::ACK);
    let o = rig.send(&f);
    let to = server_of(&o.sent.unwrap().bytes[0..6]);
    let new = id_of(&rt, "web", &to.to_string());
    let len = f.len() as i64;
    assert_eq!(
        o.moved,
        moved(&[
            ("frames_seen", 1),
            ("forwarded", 1),
            ("bytes_forwarded", len),
            ("rescheduled", 1),
            (&format!("backend[{}].active", ids[2]), -1),
            (&format!("backend[{new}].active"), 1),
            (&format!("backend[{new}].packets"), 1),
            (&format!("backend[{new}].bytes"), len),
        ])
    );

    let mut after = BTreeMap::new();
    for (&sport, &was) in &before {
        let now = rig.forward(&tcp_to_vip(sport, 80, tcp::ACK));
        if was == ip("198.18.0.13") {
            assert_ne!(now, was, "port {sport} still sent to the removed server");
        } else {
            assert_eq!(now, was, "port {sport} moved off a remaining server");
        }
        after.insert(sport, now);
    }
    assert_eq!(rescheduled(&rig), on13 as u64);
    // Moved once, then pinned to the new server.
    for (&sport, &s) in &after {
        assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::ACK)), s);
    }
    assert_eq!(rescheduled(&rig), on13 as u64);
    assert_eq!(gauges(&rig, ids[2]), (0, 0));
    let active: i64 = ids[..2].iter().map(|&id| gauges(&rig, id).0).sum();
    assert_eq!(active, 600);
    assert_eq!(rig.worker.flow_count(), 600);
    // New flows never go to the removed server.
    let fresh = open_flows(&mut rig, 20_000, 300);
    assert_eq!(count(&fresh, "198.18.0.13"), 0);
}

#[test]
fn adding_a_server_does_not_steal_pinned_flows() {
    let mut rt = Runtime::default();
    let c1 = cfg(&SERVERS[..2], "reschedule");
    rt.sync(&c1).unwrap();
    let mut rig = Rig::new(table(&c1, &rt, 1), 16384);
    let before = open_flows(&mut rig, 10_000, 600);

    let c2 = cfg(&SERVERS, "reschedule");
    rt.sync(&c2).unwrap();
    let t2 = table(&c2, &rt, 2);
    // Without the flow table, Maglev would now send some of them to .13.
    let mut fresh = Rig::new(t2.clone(), 16384);
    let remapped = before
        .keys()
        .filter(|&&p| fresh.forward(&tcp_to_vip(p, 80, tcp::ACK)) == ip("198.18.0.13"))
        .count();
    assert!(remapped > 100, "only {remapped} of 600 flows remapped to .13");

    publish(&mut rig, t2);
    for (&sport, &was) in &before {
        assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::ACK)), was, "port {sport}");
    }
    assert_eq!(rescheduled(&rig), 0);
    // New flows use the new server.
    let new = open_flows(&mut rig, 20_000, 300);
    assert!(count(&new, "198.18.0.13") > 50);
}

#[test]
fn draining_keeps_existing_flows_and_refuses_new_ones() {
    let c = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let mut rig = Rig::new(table(&c, &rt, 1), 16384);
    let before = open_flows(&mut rig, 10_000, 600);
    let on12 = count(&before, "198.18.0.12");
    assert!(on12 > 100);

    rt.find_mut(&c, "web", "198.18.0.12").unwrap().drained = true;
    publish(&mut rig, table(&c, &rt, 2));
    for (&sport, &was) in &before {
        assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::ACK)), was, "port {sport}");
    }
    assert_eq!(rescheduled(&rig), 0);
    assert_eq!(gauges(&rig, id_of(&rt, "web", "198.18.0.12")), (on12 as i64, 0));
    let new = open_flows(&mut rig, 20_000, 300);
    assert_eq!(count(&new, "198.18.0.12"), 0, "a drained server took new flows");
    assert!(count(&new, "198.18.0.11") > 50 && count(&new, "198.18.0.13") > 50);
}

/// A server goes down: `on_server_down: reschedule` moves its flows, `keep`
/// leaves them; new flows avoid it either way.
#[test]
fn server_down_follows_the_policy() {
    for (policy, moves) in [("reschedule", true), ("keep", false)] {
        let c = cfg(&SERVERS, policy);
        let mut rt = Runtime::default();
        rt.sync(&c).unwrap();
        let mut rig = Rig::new(table(&c, &rt, 1), 16384);
        assert_eq!(rig.shared.table.load().reschedule_on_down, moves);
        let before = open_flows(&mut rig, 10_000, 600);
        let on11 = count(&before, "198.18.0.11");
        assert!(on11 > 100);

        rt.find_mut(&c, "web", "198.18.0.11").unwrap().health = Health::Down;
        publish(&mut rig, table(&c, &rt, 2));
        for (&sport, &was) in &before {
            let now = rig.forward(&tcp_to_vip(sport, 80, tcp::ACK));
            if was == ip("198.18.0.11") && moves {
                assert_ne!(now, was, "{policy}: port {sport} stayed on the down server");
            } else {
                assert_eq!(now, was, "{policy}: port {sport}");
            }
        }
        let want = if moves { on11 as u64 } else { 0 };
        assert_eq!(rescheduled(&rig), want, "{policy}");
        let id11 = id_of(&rt, "web", "198.18.0.11");
        let want_active = if moves { 0 } else { on11 as i64 };
        assert_eq!(gauges(&rig, id11), (want_active, 0), "{policy}");
        let new = open_flows(&mut rig, 20_000, 300);
        assert_eq!(
            count(&new, "198.18.0.11"),
            0,
            "{policy}: a down server took new flows"
        );
    }
}

#[test]
fn tcp_gauges_follow_syn_fin_and_expiry() {
    let c = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let mut rig = Rig::new(table(&c, &rt, 1), 1024);
    let syn = tcp_to_vip(40000, 80, tcp::SYN);
    let server = rig.forward(&syn);
    let id = id_of(&rt, "web", &server.to_string());
    assert_eq!(gauges(&rig, id), (1, 0));
    assert_eq!(rig.stats().backend(id).conns.load(Ordering::Relaxed), 1);

    rig.now += 100;
    rig.forward(&tcp_to_vip(40000, 80, tcp::ACK));
    assert_eq!(gauges(&rig, id), (1, 0));

    rig.now += 100;
    let o = rig.send(&tcp_to_vip(40000, 80, tcp::FIN | tcp::ACK));
    assert!(o.sent.is_some());
    assert_eq!(gauges(&rig, id), (0, 1));
    assert_eq!(o.moved[&format!("backend[{id}].active")], -1);
    assert_eq!(o.moved[&format!("backend[{id}].inactive")], 1);
    assert_eq!(rig.worker.flow_count(), 1);

    // Live at exactly the FIN timeout, gone one millisecond later. A 1024
    // flow table has 128 buckets: one poll (64 buckets) may miss the flow's
    // bucket, two cover the table.
    rig.now += TCP_FIN_MS;
    for _ in 0..2 {
        rig.worker.poll_once(rig.now).unwrap();
    }
    assert_eq!(rig.worker.flow_count(), 1);
    rig.now += 1;
    let before = snapshot(rig.stats());
    for _ in 0..2 {
        rig.worker.poll_once(rig.now).unwrap();
    }
    assert_eq!(rig.worker.flow_count(), 0);
    assert_eq!(gauges(&rig, id), (0, 0));
    assert_eq!(
        diff(&before, &snapshot(rig.stats())),
        moved(&[
            ("flows", -1),
            ("expirations", 1),
            (&format!("backend[{id}].inactive"), -1),
        ])
    );
}

#[test]
fn syn_only_and_udp_flows_expire_active() {
    let c = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let mut rig = Rig::new(table(&c, &rt, 1), 1024);
    let tcp_server = rig.forward(&tcp_to_vip(40000, 80, tcp::SYN));
    let udp_server = rig.forward(&udp_frame(CLIENT, 40000, VIP, 53, b"q"));
    let tid = id_of(&rt, "web", &tcp_server.to_string());
    let uid = id_of(&rt, "dns", &udp_server.to_string());
    assert_eq!((gauges(&rig, tid), gauges(&rig, uid)), ((1, 0), (1, 0)));

    rig.now += TCP_SYN_MS + 1;
    for _ in 0..2 {
        rig.worker.poll_once(rig.now).unwrap();
    }
    assert_eq!((gauges(&rig, tid), gauges(&rig, uid)), ((0, 0), (1, 0)));
    assert_eq!(rig.worker.flow_count(), 1);

    rig.now += UDP_MS - TCP_SYN_MS;
    for _ in 0..2 {
        rig.worker.poll_once(rig.now).unwrap();
    }
    assert_eq!((gauges(&rig, tid), gauges(&rig, uid)), ((0, 0), (0, 0)));
    assert_eq!(rig.worker.flow_count(), 0);
    assert_eq!(rig.stats().expirations.load(Ordering::Relaxed), 2);
    assert_eq!(rig.stats().flows.load(Ordering::Relaxed), 0);
}

/// An empty poll sweeps `worker::SWEEP_BUCKETS_IDLE` buckets, so expiring a
/// whole idle table takes buckets / SWEEP_BUCKETS_IDLE polls, where
/// buckets = capacity / WAYS.
#[test]
fn sweep_covers_the_table_in_buckets_over_idle_sweep_polls() {
    use ulvs::dataplane::worker::SWEEP_BUCKETS_IDLE as SWEEP_BUCKETS;
    let c = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    // 8192 buckets: 1000 flows overflow no 8-way bucket (so none is evicted).
    let capacity = 65536;
    let mut rig = Rig::new(table(&c, &rt, 1), capacity);
    let buckets = capacity / WAYS;
    let polls = buckets.div_ceil(SWEEP_BUCKETS);
    assert_eq!(polls, 8);

    let n = 1000;
    open_flows(&mut rig, 10_000, n);
    assert_eq!(rig.worker.flow_count(), n as usize);
    let active: i64 = SERVERS.iter().map(|s| gauges(&rig, id_of(&rt, "web", s)).0).sum();
    assert_eq!(active, i64::from(n));

    rig.now += 10_000 + 1; // past the established timeout
                           // One poll sweeps 1024 of 8192 buckets: about 1/8 of the flows go.
    rig.worker.poll_once(rig.now).unwrap();
    let left = rig.worker.flow_count();
    assert!(left > 0 && left < n as usize, "{left} flows left after one poll");
    for _ in 1..polls {
        rig.worker.poll_once(rig.now).unwrap();
    }
    assert_eq!(
        rig.worker.flow_count(),
        0,
        "{polls} polls did not sweep the table"
    );
    for s in SERVERS {
        assert_eq!(gauges(&rig, id_of(&rt, "web", s)), (0, 0), "{s}");
    }
    assert_eq!(rig.stats().expirations.load(Ordering::Relaxed), n as u64);
    assert_eq!(rig.stats().evictions.load(Ordering::Relaxed), 0);
}

/// A flow whose server went down while no other server can take it: its
/// packets are dropped as `no_server`; a FIN among them must still move the
/// flow from active to inactive, so that expiry brings both gauges to 0.
#[test]
fn gauges_stay_exact_when_a_closing_flow_has_no_server() {
    let c = cfg(&SERVERS[..1], "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let mut rig = Rig::new(table(&c, &rt, 1), 1024);
    let id = id_of(&rt, "web", SERVERS[0]);
    open_flows(&mut rig, 40000, 1);
    assert_eq!(gauges(&rig, id), (1, 0));
    rt.find_mut(&c, "web", SERVERS[0]).unwrap().health = Health::Down;
    publish(&mut rig, table(&c, &rt, 2));
    let o = rig.send(&tcp_to_vip(40000, 80, tcp::FIN | tcp::ACK));
    assert!(o.sent.is_none());
    assert_eq!(o.moved["drops.no_server"], 1);
    rig.now += 10_000 + 1;
    for _ in 0..2 {
        rig.worker.poll_once(rig.now).unwrap();
    }
    assert_eq!(rig.worker.flow_count(), 0);
    assert_eq!(gauges(&rig, id), (0, 0));
}

fn probes(rig: &Rig) -> u64 {
    rig.stats().maglev_probes.load(Ordering::Relaxed)
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A SYN replayed over and over (same tuple, same ISN, 600 ms apart, the
/// server never completing a handshake) reads no more Maglev slots than a
/// fresh SYN does (one: its pick): the second-chance walk happens at most
/// once per other server, then never again. Before the fix, every replay
/// after the last distinct server walked the whole table (251 slots here;
/// 65,537 by default), and with one server from the first replay on.
#[test]
fn replayed_syn_costs_no_table_walk() {
    for n in 1..=3 {
        let c = cfg(&SERVERS[..n], "reschedule");
        let mut rt = Runtime::default();
        rt.sync(&c).unwrap();
        let mut rig = Rig::new(table(&c, &rt, 1), 1024);
        let f = tcp_frame_seq(CLIENT, 41_000, VIP, 80, tcp::SYN, 7777, &[]);
        let mut servers = std::collections::BTreeSet::from([rig.forward(&f)]);
        const REPLAYS: u64 = 200;
        let mut walks = 0;
        for i in 0..REPLAYS {
            rig.now += u64::from(SYN_SECOND_CHANCE_MS) + 100;
            let before = probes(&rig);
            servers.insert(rig.forward(&f));
            let read = probes(&rig) - before;
            if read > 0 {
                walks += 1;
                // A walk ends at the first server not tried yet.
                assert!(read < 251, "{n} servers, replay {i}: walked {read} slots");
            }
        }
        // Every server was tried, each once, and nothing more was walked.
        assert_eq!(servers.len(), n, "{n} servers");
        assert_eq!(walks, n as u64 - 1, "{n} servers: walks");
        assert_eq!(
            rig.stats().syn_second_chance.load(Ordering::Relaxed),
            n as u64 - 1
        );
        // Per replay, the slot reads besides the flow lookup stay under one:
        // a replayed SYN costs what a fresh one does, within 2x.
        let per_replay = probes(&rig) as f64 / REPLAYS as f64;
        assert!(
            per_replay <= 1.0,
            "{n} servers: {per_replay} slots per replayed SYN"
        );
    }
}

/// The SYN second chance asks whether the server completed any handshake
/// since the SYN was first seen. That evidence is never swept, so it must
/// not look fresh again when a 32-bit millisecond clock wraps (49.7 days):
/// a handshake completed 2^32 ms ago is no sign of life now.
#[test]
fn handshake_evidence_does_not_look_fresh_after_the_32_bit_wrap() {
    let c = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let mut rig = Rig::new(table(&c, &rt, 1), 1024);
    // Flows to every server complete their handshakes at t = 1000..
    let open = open_flows(&mut rig, 10_000, 30);
    assert_eq!(open.values().collect::<std::collections::BTreeSet<_>>().len(), 3);
    // Exactly 2^32 ms later (the sweep keeps the table clean meanwhile).
    let wrap = 1u64 << 32;
    for _ in 0..4 {
        rig.now += wrap / 4;
        for _ in 0..8 {
            rig.worker.poll_once(rig.now).unwrap();
        }
    }
    rig.now -= 300;
    let f = tcp_frame_seq(CLIENT, 42_000, VIP, 80, tcp::SYN, 99, &[]);
    let first = rig.forward(&f);
    rig.now += u64::from(SYN_SECOND_CHANCE_MS) + 100;
    // Its server has been silent for 49.7 days: the retransmission moves.
    assert_ne!(rig.forward(&f), first, "old handshakes looked fresh");
    assert_eq!(rig.stats().syn_second_chance.load(Ordering::Relaxed), 1);
}

/// `web` in NAT mode (TCP :80 -> `servers` :8080) with the gateway known,
/// so server replies can be sent on.
fn nat_table(servers: &[&str]) -> (Runtime, FwdTable) {
    let list: String = servers
        .iter()
        .map(|s| format!("      - address: {s}:8080\n"))
        .collect();
    let c = config(&format!(
        "\
interface: eth0
maglev_table_size: 251
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    mode: nat
    real_servers:
{list}"
    ));
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let mut t = table(&c, &rt, 1);
    t.gateway_mac = Some([2, 0, 0, 0, 0, 0xfe]);
    t.onlink = (0xc612_0000, 0xffff_0000);
    (rt, t)
}

/// Run `frames` through the worker in device-sized batches.
fn blast(rig: &mut Rig, frames: impl Iterator<Item = Vec<u8>>) {
    let mut pending = 0;
    for f in frames {
        assert!(rig
            .worker
            .device()
            .push_rx(&f, RxMeta::default(), VnetHdr::default()));
        pending += 1;
        if pending == 64 {
            rig.worker.poll_once(rig.now).unwrap();
            rig.worker.device().sent.clear();
            pending = 0;
        }
    }
    while rig.worker.poll_once(rig.now).unwrap() > 0 {}
    rig.worker.device().sent.clear();
}

/// A spoofed SYN from 198.18.0.0/15 (splitmix-like, deterministic).
fn spoofed_syn(i: u32) -> Vec<u8> {
    let h = i.wrapping_mul(0x9e37_79b9) ^ (i >> 7);
    let src = 0xc612_0000 | (h & 0x1_ffff);
    tcp_frame_seq(src, (h >> 16) as u16 | 1024, VIP, 80, tcp::SYN, h, &[])
}

/// A spoofed SYN flood into a table far too small for it evicts embryonic
/// flows only: every established flow keeps its server (no new connection
/// is counted for it), a NAT flow keeps both directions, and the evictions
/// are counted by kind. Under plain LRU the idle established flows were the
/// oldest and went first.
#[test]
fn syn_flood_evicts_embryonic_flows_only() {
    for nat in [false, true] {
        let (rt, t) = if nat {
            nat_table(&SERVERS)
        } else {
            let c = cfg(&SERVERS, "reschedule");
            let mut rt = Runtime::default();
            rt.sync(&c).unwrap();
            let t = table(&c, &rt, 1);
            (rt, t)
        };
        // 512 buckets: 40 established flows (80 ways with NAT: a flow and
        // its reply share a bucket) leave each bucket room for the flood.
        // The buckets are hashed with a random seed; with 128 buckets about
        // one NAT run in 30 put 4 flows (8 ways: a full bucket) in one, and
        // the flood then had to evict an established flow.
        let mut rig = Rig::new(t, 4096);
        let to = |rig: &mut Rig, sport: u16, flags: u8| {
            server_of(&rig.forward_any(&tcp_to_vip(sport, 80, flags)).bytes[0..6])
        };
        let open: BTreeMap<u16, Ipv4Addr> = (10_000..10_040)
            .map(|sport| {
                let s = to(&mut rig, sport, tcp::SYN);
                assert_eq!(to(&mut rig, sport, tcp::ACK), s);
                (sport, s)
            })
            .collect();
        let _ = &rt;
        let conns0: u64 = (0..16384u32).map(|id| load(&rig.stats().backend(id).conns)).sum();
        assert_eq!(conns0, 40);
        rig.now += 1000;
        blast(&mut rig, (0..20_000).map(spoofed_syn));
        let s = rig.stats();
        assert_eq!(load(&s.evictions_established), 0, "nat={nat}");
        assert!(
            load(&s.evictions_embryonic) > 10_000,
            "{}",
            load(&s.evictions_embryonic)
        );
        assert_eq!(load(&s.evictions_expired), 0);
        assert_eq!(load(&s.evictions), load(&s.evictions_embryonic));
        assert!(accounting_holds(s));
        // Every established flow is still there: its next packet goes to the
        // same server and is no new connection.
        rig.now += 1000;
        for (&sport, &server) in &open {
            assert_eq!(to(&mut rig, sport, tcp::ACK), server, "port {sport}");
            if nat {
                let reply = tcp_frame(u32::from(server), 8080, CLIENT, sport, tcp::ACK, &[]);
                let o = rig.send(&reply);
                assert!(
                    o.sent.is_some(),
                    "nat reply of port {sport} dropped: {:?}",
                    o.moved
                );
            }
        }
        let conns1: u64 = (0..16384u32).map(|id| load(&rig.stats().backend(id).conns)).sum();
        assert_eq!(conns1 - conns0, 20_000, "an established flow was recreated");
        assert!(rig.worker.flow_count() <= 4096);
        // The gauges count exactly the flows in the table (in NAT mode each
        // with its reply key).
        let active: i64 = (0..16384u32)
            .map(|id| rig.stats().backend(id).active.load(Ordering::Relaxed))
            .sum();
        let ways = rig.worker.flow_count() as i64;
        assert_eq!(active, if nat { ways / 2 } else { ways }, "nat={nat}");
    }
}

/// A device that fails to send every frame, and records `forwarded` as a
/// scrape would see it after each frame of a batch.
struct FailingTx {
    inner: MemDevice,
    stats: Arc<WorkerStats>,
    seen: Vec<u64>,
}

impl Device for FailingTx {
    fn wait(&mut self, t: i32) -> std::io::Result<()> {
        self.inner.wait(t)
    }

    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> std::io::Result<BatchStats> {
        let (stats, seen) = (&self.stats, &mut self.seen);
        let mut st = self.inner.process_batch(max, |fr, arena| {
            let a = f(fr, arena);
            seen.push(stats.forwarded.load(Ordering::Relaxed));
            a
        })?;
        st.tx_failed = st.sent;
        st.sent = 0;
        Ok(st)
    }
}

/// Frames the device failed to send are counted as `tx_error` drops and
/// never as forwarded, and `forwarded` never goes down in between (a
/// Prometheus scrape would read a decrease as a counter reset).
#[test]
fn forwarded_never_goes_backwards_on_tx_failure() {
    let c = cfg(&SERVERS, "reschedule");
    let mut rt = Runtime::default();
    rt.sync(&c).unwrap();
    let stats = Arc::new(WorkerStats::default());
    let dev = FailingTx {
        inner: MemDevice::new(64, 2048),
        stats: stats.clone(),
        seen: vec![],
    };
    let shared = Arc::new(Shared::new(table(&c, &rt, 1)));
    let mut w = Worker::new(dev, 1024, shared, stats.clone());
    for i in 0..10u16 {
        let f = tcp_to_vip(20_000 + i, 80, tcp::SYN);
        assert!(w
            .device()
            .inner
            .push_rx(&f, RxMeta::default(), VnetHdr::default()));
    }
    assert_eq!(w.poll_once(5).unwrap(), 10);
    let mut seen = std::mem::take(&mut w.device().seen);
    seen.push(load(&stats.forwarded));
    assert!(
        seen.windows(2).all(|p| p[0] <= p[1]),
        "forwarded went backwards: {seen:?}"
    );
    assert_eq!(load(&stats.forwarded), 0);
    assert_eq!(
        load(&stats.drops[ulvs::dataplane::classify::Reason::TxError as usize]),
        10
    );
    assert_eq!(load(&stats.frames_seen), 10);
}
