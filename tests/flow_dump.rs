//! `ulvsadm flows` at the worker: the slow path asks for a copy of a
//! worker's flow table through its `FlowDump`, and the worker answers
//! between batches (whole table when idle, in pieces when busy), within the
//! buffer the slow path preallocated, with each flow's server, state and
//! time to expiry.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use common::*;
use ulvs::dataplane::dump::{DumpFilter, DumpedFlow, CHUNK_BUCKETS_BUSY};
use ulvs::fwd::flow::{FlowState, WAYS};
use ulvs::io::{RxMeta, VnetHdr};
use ulvs::wire::tcp;

/// Ask for a copy and poll the worker idle once: it answers at once.
fn dump_idle(rig: &mut Rig, filter: Option<DumpFilter>, limit: usize) -> (Vec<DumpedFlow>, bool) {
    let dump = &rig.worker.stats().dump;
    dump.ask(filter, limit);
    assert!(!dump.answered(), "nobody copied yet");
    assert!(dump.take().is_none(), "no copy before the worker answers");
    assert_eq!(rig.worker.poll_once(rig.now).unwrap(), 0);
    let d = rig
        .worker
        .stats()
        .dump
        .take()
        .expect("an idle worker answers after one poll");
    (d.flows, d.truncated)
}

#[test]
fn an_idle_worker_copies_every_flow_with_its_server_state_and_expiry() {
    let cfg = config(TOPOLOGY);
    let rt = runtime(&cfg);
    let mut rig = Rig::new(topology_table(), 1024);
    let mut server_of_port: HashMap<u16, Ipv4Addr> = HashMap::new();
    for sport in 40_000..40_020u16 {
        server_of_port.insert(sport, rig.forward(&tcp_to_vip(sport, 80, tcp::SYN)));
    }
    // One established, one closing, five UDP.
    rig.forward(&tcp_to_vip(40_001, 80, tcp::ACK));
    rig.forward(&tcp_to_vip(40_002, 80, tcp::FIN | tcp::ACK));
    for sport in 50_000..50_005u16 {
        server_of_port.insert(sport, rig.forward(&udp_frame(CLIENT, sport, VIP, 53, b"q")));
    }
    rig.now += 5_000;
    let (flows, truncated) = dump_idle(&mut rig, None, 1000);
    assert!(!truncated);
    assert_eq!(flows.len(), 25);
    for f in &flows {
        let (src, dst, sport, dport, proto) = (f.key.src, f.key.dst, f.key.sport, f.key.dport, f.key.proto);
        assert_eq!(Ipv4Addr::from(src), Ipv4Addr::from(CLIENT));
        assert_eq!(dst, VIP);
        let service = if proto == 6 { "web" } else { "dns" };
        assert_eq!(dport, if proto == 6 { 80 } else { 53 });
        let server = server_of_port[&sport];
        assert_eq!(
            f.backend,
            id_of(&rt, service, &server.to_string()),
            "flow {sport}"
        );
        // TOPOLOGY keeps the default timeouts; 5 s have passed.
        let (state, expires) = match sport {
            40_001 => (FlowState::TcpEstablished, 895_000),
            40_002 => (FlowState::TcpClosing, 115_000),
            s if s >= 50_000 => (FlowState::Udp, 295_000),
            _ => (FlowState::TcpSyn, 115_000),
        };
        assert_eq!((f.state, f.expires_in_ms), (state, expires), "flow {sport}");
    }
    // A service filter keeps only its flows.
    let web = DumpFilter {
        vip: VIP,
        port: 80,
        proto: 6,
    };
    let (flows, _) = dump_idle(&mut rig, Some(web), 1000);
    assert_eq!(flows.len(), 20);
    assert!(flows.iter().all(|f| f.key.proto == 6));
    // An expired flow is not listed (the sweep may not have reached it).
    rig.now += 116_000;
    let (flows, _) = dump_idle(&mut rig, None, 1000);
    assert_eq!(
        flows.len(),
        6,
        "only the established flow and the UDP ones remain"
    );
    assert!(flows
        .iter()
        .all(|f| matches!(f.state, FlowState::TcpEstablished | FlowState::Udp)));
}

#[test]
fn the_copy_stops_at_the_buffer_and_says_so() {
    let mut rig = Rig::new(topology_table(), 1024);
    for sport in 40_000..40_030u16 {
        rig.forward(&tcp_to_vip(sport, 80, tcp::SYN));
    }
    let (flows, truncated) = dump_idle(&mut rig, None, 10);
    assert_eq!(flows.len(), 10);
    assert!(truncated);
    let (flows, truncated) = dump_idle(&mut rig, None, 30);
    assert_eq!(flows.len(), 30);
    assert!(!truncated, "exactly as many as fit");
    // Nobody asking: polls leave the slot alone.
    assert!(rig.worker.stats().dump.answered());
    rig.forward(&tcp_to_vip(41_000, 80, tcp::SYN));
    assert!(
        rig.worker.stats().dump.take().unwrap().flows.is_empty(),
        "taken already"
    );
}

#[test]
fn a_busy_worker_copies_in_pieces_between_batches() {
    // Two pieces' worth of buckets.
    let capacity = 2 * CHUNK_BUCKETS_BUSY * WAYS;
    let mut rig = Rig::new(topology_table(), capacity);
    for sport in 1000..3000u16 {
        rig.forward(&tcp_to_vip(sport, 80, tcp::SYN));
    }
    let dump = &rig.worker.stats().dump;
    dump.ask(None, 10_000);
    // A busy batch (8 frames; fewer drain the ring and count as quiet):
    // one piece only.
    let busy = |rig: &mut Rig, base: u16| {
        for p in base..base + 8 {
            let f = tcp_to_vip(p, 80, tcp::SYN);
            assert!(rig
                .worker
                .device()
                .push_rx(&f, RxMeta::default(), VnetHdr::default()));
        }
        assert_eq!(rig.worker.poll_once(rig.now).unwrap(), 8);
    };
    busy(&mut rig, 5000);
    assert!(!rig.worker.stats().dump.answered(), "half the table is left");
    busy(&mut rig, 5010);
    let d = rig
        .worker
        .stats()
        .dump
        .take()
        .expect("done after the second piece");
    assert!(!d.truncated);
    // Every flow that was there before the request, once; the 16 sent
    // during the copy may or may not be in it.
    let mut ports: Vec<u16> = d.flows.iter().map(|f| f.key.sport).collect();
    ports.sort_unstable();
    let before: Vec<u16> = ports.iter().copied().filter(|&p| p < 5000).collect();
    assert_eq!(before, (1000..3000).collect::<Vec<u16>>());
    assert!(ports.len() <= 2016);
}
