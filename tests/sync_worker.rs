//! Flow sync at the worker (the fast path's side of `dataplane::synclink`):
//! the notes a worker hands the sync thread, the flows it takes from it,
//! and the table walks it makes on request, on a real `Worker<MemDevice>`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use common::*;
use ulvs::control::publish::{build_table, Runtime};
use ulvs::control::publish6::build_table_dual;
use ulvs::dataplane::synclink::{Note, NoteKind, Synced, WorkerLink, NOTES, NOTES6, SYNCED_PER_BATCH};
use ulvs::fwd::flow::{FlowKey, FlowKey6, FlowState};
use ulvs::fwd::table::FwdTable;
use ulvs::wire::builder::PacketBuilder6;
use ulvs::wire::tcp;

/// A worker with a sync link, its clock at 100 s.
fn linked(table: FwdTable) -> (Rig, Arc<WorkerLink>) {
    let mut rig = Rig::new(table, 1024);
    let link = Arc::new(WorkerLink::new());
    rig.worker.attach_sync(link.clone());
    rig.now = 100_000;
    (rig, link)
}

fn poll(rig: &mut Rig) {
    rig.worker.poll_once(rig.now).unwrap();
}

/// Every note queued so far, in order.
fn notes(link: &WorkerLink) -> Vec<Note> {
    std::iter::from_fn(|| link.notes.pop()).collect()
}

/// (kind, key, backend, state, idle_ms, origin) of each note.
type NoteRow = (NoteKind, FlowKey, u32, FlowState, u32, u8);

fn rows(n: &[Note]) -> Vec<NoteRow> {
    n.iter()
        .map(|n| (n.kind, n.key, n.backend, n.state, n.idle_ms, n.origin))
        .collect()
}

fn web_key(sport: u16) -> FlowKey {
    FlowKey {
        src: CLIENT,
        dst: VIP,
        sport,
        dport: 80,
        proto: 6,
    }
}

fn dns_key(sport: u16) -> FlowKey {
    FlowKey {
        dport: 53,
        proto: 17,
        ..web_key(sport)
    }
}

fn synced(key: FlowKey, backend: u32, state: FlowState, idle_ms: u32, origin: u8) -> Synced {
    Synced {
        key,
        backend,
        state,
        idle_ms,
        origin,
    }
}

fn gauge(rig: &Rig, id: u32) -> (i64, i64) {
    let b = rig.stats().backend(id);
    (b.active.load(Relaxed), b.inactive.load(Relaxed))
}

/// The worker's flows as `ulvsadm flows` copies them: key -> (server id,
/// state, ms to expiry, origin).
fn dump(rig: &mut Rig) -> BTreeMap<(u16, u8), (u32, FlowState, u32, u8)> {
    rig.stats().dump.ask(None, 4096);
    poll(rig);
    let d = rig.stats().dump.take().expect("answered after an idle poll");
    d.flows
        .iter()
        .map(|f| {
            let (sport, proto) = (f.key.sport, f.key.proto);
            ((sport, proto), (f.backend, f.state, f.expires_in_ms, f.origin))
        })
        .collect()
}

/// A worker creates a flow: exactly one `New` note; afterwards a `Change`
/// when the state becomes established or closing, and none for packets
/// that change nothing a peer needs.
#[test]
fn a_new_flow_makes_one_new_note_and_changes_follow() {
    let table = topology_table();
    let rt = runtime(&config(TOPOLOGY));
    let (mut rig, link) = linked(table);
    let server = rig.forward(&tcp_to_vip(40000, 80, tcp::SYN));
    let id = id_of(&rt, "web", &server.to_string());
    let k = web_key(40000);
    assert_eq!(
        rows(&notes(&link)),
        vec![(NoteKind::New, k, id, FlowState::TcpSyn, 0, 0)]
    );
    rig.forward(&tcp_to_vip(40000, 80, tcp::ACK));
    assert_eq!(
        rows(&notes(&link)),
        vec![(NoteKind::Change, k, id, FlowState::TcpEstablished, 0, 0)]
    );
    rig.forward(&tcp_to_vip(40000, 80, tcp::ACK));
    rig.forward(&tcp_to_vip(40000, 80, tcp::ACK | tcp::PSH));
    assert!(notes(&link).is_empty(), "packets of an established flow");
    rig.forward(&tcp_to_vip(40000, 80, tcp::FIN | tcp::ACK));
    assert_eq!(
        rows(&notes(&link)),
        vec![(NoteKind::Change, k, id, FlowState::TcpClosing, 0, 0)]
    );
    rig.forward(&tcp_to_vip(40000, 80, tcp::ACK));
    assert!(notes(&link).is_empty(), "closing stays closing");
    // A new connection on the reused tuple.
    rig.forward(&tcp_to_vip(40000, 80, tcp::SYN));
    let n = notes(&link);
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].kind, n[0].state), (NoteKind::Change, FlowState::TcpSyn));
    // UDP: one New, then nothing.
    let udp = udp_frame(CLIENT, 5000, VIP, 53, b"q");
    rig.forward(&udp);
    rig.forward(&udp);
    let n = notes(&link);
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].kind, n[0].key, n[0].state),
        (NoteKind::New, dns_key(5000), FlowState::Udp)
    );
    assert_eq!(link.notes_full.load(Relaxed), 0);
    assert!(accounting_holds(rig.stats()));
}

/// `web` with the servers `addrs`, every MAC resolved.
fn web_table(addrs: &[&str]) -> (Runtime, FwdTable) {
    let mut yaml = "interface: eth0\nmaglev_table_size: 251\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n".to_string();
    for a in addrs {
        yaml += &format!("      - address: {a}\n");
    }
    let cfg = config(&yaml);
    let rt = runtime(&cfg);
    let t = build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0, 1);
    (rt, t)
}

/// The contract: a director that receives a frame of a flow another
/// director created sends it to that flow's server, even where its own
/// table would now pick another (here: a server was added). The peer,
/// with two servers, created flows; this director has three. For a flow
/// whose server the third one's arrival changes, the frame still goes to
/// the peer's choice; without the sync it would not (so the test can fail).
#[test]
fn a_synced_flow_keeps_its_server_where_the_table_now_picks_another() {
    let (_, before) = web_table(&SERVERS[..2]);
    let (rt, after) = web_table(&SERVERS);
    let mut peer = Rig::new(before, 1024);
    let mut unsynced = Rig::new(after.clone(), 1024);
    // A client port whose pick the added server changes.
    let (sport, was, now_picked) = (41000..42000u16)
        .find_map(|p| {
            let a = peer.forward(&tcp_to_vip(p, 80, tcp::ACK));
            let b = unsynced.forward(&tcp_to_vip(p, 80, tcp::ACK));
            (a != b).then_some((p, a, b))
        })
        .expect("adding a third server moves about a third of the flows");
    let (mut rig, link) = linked(after);
    let was_id = id_of(&rt, "web", &was.to_string());
    assert!(link
        .synced
        .push(synced(web_key(sport), was_id, FlowState::TcpEstablished, 2000, 1))
        .is_ok());
    poll(&mut rig);
    assert_eq!(link.synced_applied.load(Relaxed), 1);
    // Counted on its server like any flow (active), not as a new connection.
    assert_eq!(gauge(&rig, was_id), (1, 0));
    assert_eq!(rig.stats().backend(was_id).conns.load(Relaxed), 0);
    let frame = tcp_to_vip(sport, 80, tcp::ACK | tcp::PSH);
    let sent = rig
        .run(&frame, Default::default(), Default::default())
        .expect("forwarded");
    assert_eq!(
        sent.bytes,
        dr_rewritten(&frame, was),
        "not to {now_picked}, the table's pick"
    );
    // The synced flow is listed with its origin; this director sent no
    // note about it (nothing changed).
    assert!(notes(&link).is_empty());
    let d = dump(&mut rig);
    assert_eq!(d[&(sport, 6)].0, was_id);
    assert_eq!(d[&(sport, 6)].3, 1);
    // Without the sync the same frame goes to the new pick.
    let sent = unsynced
        .run(&frame, Default::default(), Default::default())
        .expect("forwarded");
    assert_eq!(server_of(&sent.bytes[0..6]), now_picked);
}

const NAT_YAML: &str = "interface: eth0\nmaglev_table_size: 251\nservices:\n  - name: nat-web\n    vip: 198.18.100.2\n    port: 80\n    mode: nat\n    real_servers:\n      - address: 198.18.0.21:8080\n      - address: 198.18.0.22:8080\n";
const VIP_NAT: u32 = 0xc612_6402;
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

fn nat_table() -> (Runtime, FwdTable) {
    let cfg = config(NAT_YAML);
    let rt = runtime(&cfg);
    let mut t = build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0xc612_0002, 1);
    t.gateway_mac = Some(GATEWAY_MAC);
    (rt, t)
}

/// NAT: a synced flow sends the client's frames to its server (address and
/// port rewritten), and that server's replies are translated back to the
/// VIP, though this director never saw the flow's first packet.
#[test]
fn a_synced_nat_flow_translates_the_servers_replies() {
    let (rt, t) = nat_table();
    let mut probe = Rig::new(t.clone(), 1024);
    let picked = probe.forward_any(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::ACK, &[]));
    let picked = Ipv4Addr::new(
        picked.bytes[30],
        picked.bytes[31],
        picked.bytes[32],
        picked.bytes[33],
    );
    let other: Ipv4Addr = if picked == Ipv4Addr::new(198, 18, 0, 21) {
        "198.18.0.22".parse().unwrap()
    } else {
        "198.18.0.21".parse().unwrap()
    };
    let id = id_of_port(&rt, "nat-web", &other.to_string(), 8080);
    let (mut rig, link) = linked(t);
    let key = FlowKey {
        dst: VIP_NAT,
        ..web_key(40000)
    };
    link.synced
        .push(synced(key, id, FlowState::TcpEstablished, 0, 1))
        .unwrap();
    poll(&mut rig);
    // The server speaks first (a download under way when the peer died):
    // its reply comes back from VIP:80.
    let mut reply = tcp_frame(u32::from(other), 8080, CLIENT, 40000, tcp::ACK, b"200");
    reply[6..12].copy_from_slice(&mac_of(other));
    let o = rig.send(&reply);
    let s = o.sent.expect("the reply is translated");
    assert_eq!(&s.bytes[0..6], &GATEWAY_MAC);
    assert_eq!(&s.bytes[26..30], &VIP_NAT.to_be_bytes());
    assert_eq!(&s.bytes[34..36], &80u16.to_be_bytes());
    assert!(ipv4_checksum_ok(&s.bytes, 14) && l4_checksum_ok(&s.bytes, 14));
    assert_eq!(o.moved[&format!("backend[{id}].out_packets")], 1);
    // Client -> VIP goes to the synced server, not the table's pick.
    let s = rig.forward_any(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::ACK, b"GET"));
    assert_eq!(&s.bytes[0..6], &mac_of(other));
    assert_eq!(&s.bytes[30..34], &other.octets());
    assert_eq!(&s.bytes[36..38], &8080u16.to_be_bytes());
    // A NAT flow takes two ways (its reply key), the table's gauge says so.
    assert_eq!(rig.stats().flows.load(Relaxed), 2);
}

/// A flow this director created is its own: a synced copy of it changes
/// neither its server, its state nor its origin; a later last packet is
/// taken (the flow lives as long as either director sees it).
#[test]
fn a_local_flow_is_not_overwritten_by_a_synced_one() {
    let (mut rig, link) = linked(topology_table());
    let rt = runtime(&config(TOPOLOGY));
    let local = rig.forward(&tcp_to_vip(40000, 80, tcp::SYN));
    let local_id = id_of(&rt, "web", &local.to_string());
    let other = SERVERS.iter().find(|s| **s != local.to_string()).unwrap();
    let other_id = id_of(&rt, "web", other);
    notes(&link);
    rig.now += 50_000;
    link.synced
        .push(synced(web_key(40000), other_id, FlowState::TcpEstablished, 0, 1))
        .unwrap();
    poll(&mut rig);
    assert_eq!(link.synced_kept_local.load(Relaxed), 1);
    assert_eq!(link.synced_applied.load(Relaxed), 0);
    let d = dump(&mut rig);
    // SYN state (120 s) from the synced packet time, not the local 50 s ago.
    assert_eq!(d[&(40000, 6)], (local_id, FlowState::TcpSyn, 120_000, 0));
    assert_eq!(gauge(&rig, other_id), (0, 0));
    assert_eq!(gauge(&rig, local_id), (1, 0));
    assert_eq!(rig.forward(&tcp_to_vip(40000, 80, tcp::ACK)), local);
    // An older synced packet time is not taken.
    rig.now += 10_000;
    link.synced
        .push(synced(
            web_key(40000),
            other_id,
            FlowState::TcpEstablished,
            30_000,
            1,
        ))
        .unwrap();
    poll(&mut rig);
    let d = dump(&mut rig);
    assert_eq!(
        d[&(40000, 6)],
        (local_id, FlowState::TcpEstablished, 900_000 - 10_000, 0)
    );
}

/// A synced flow takes later syncs of itself (server, state, origin) with
/// the gauges moved; dead or unknown ones are not taken; synced flows
/// expire like any other and leave the gauges at zero.
#[test]
fn synced_flows_update_expire_and_keep_the_gauges_exact() {
    let (mut rig, link) = linked(topology_table());
    let rt = runtime(&config(TOPOLOGY));
    let [a, b] = [id_of(&rt, "web", SERVERS[0]), id_of(&rt, "web", SERVERS[1])];
    let k = web_key(40001);
    link.synced
        .push(synced(k, a, FlowState::TcpSyn, 1000, 1))
        .unwrap();
    poll(&mut rig);
    assert_eq!(gauge(&rig, a), (1, 0));
    link.synced
        .push(synced(k, b, FlowState::TcpClosing, 0, 2))
        .unwrap();
    poll(&mut rig);
    assert_eq!((gauge(&rig, a), gauge(&rig, b)), ((0, 0), (0, 1)));
    assert_eq!(
        dump(&mut rig)[&(40001, 6)],
        (b, FlowState::TcpClosing, 120_000, 2)
    );
    assert_eq!(link.synced_applied.load(Relaxed), 2);
    // Dead on arrival: idle past its state's timeout; a server id the
    // table does not know.
    link.synced
        .push(synced(web_key(40002), a, FlowState::TcpSyn, 120_001, 1))
        .unwrap();
    link.synced
        .push(synced(web_key(40003), 60_000, FlowState::TcpEstablished, 0, 1))
        .unwrap();
    poll(&mut rig);
    assert_eq!(link.synced_stale.load(Relaxed), 2);
    assert_eq!(rig.stats().flows.load(Relaxed), 1);
    // Idle 119 s at arrival: gone 1 s later (the sweep sees it).
    link.synced
        .push(synced(web_key(40004), a, FlowState::TcpSyn, 119_000, 1))
        .unwrap();
    poll(&mut rig);
    assert_eq!(gauge(&rig, a), (1, 0));
    rig.now += 1001;
    poll(&mut rig);
    assert_eq!(gauge(&rig, a), (0, 0));
    rig.now += 120_000;
    poll(&mut rig);
    assert_eq!(gauge(&rig, b), (0, 0));
    assert_eq!(rig.stats().flows.load(Relaxed), 0);
    // A flood of synced flows is taken a bounded number per batch.
    for i in 0..(SYNCED_PER_BATCH + 10) as u16 {
        link.synced
            .push(synced(web_key(i), a, FlowState::TcpEstablished, 0, 1))
            .unwrap();
    }
    poll(&mut rig);
    assert_eq!(link.synced.len(), 10);
    poll(&mut rig);
    assert!(link.synced.is_empty());
}

/// A synced flow in its handshake: the client's retransmitted SYN is the
/// same connection (its sequence number is unknown here), so it stays with
/// the synced server.
#[test]
fn a_synced_syn_is_not_rescheduled_by_its_retransmission() {
    let (_, before) = web_table(&SERVERS[..2]);
    let (rt, after) = web_table(&SERVERS);
    let mut peer = Rig::new(before, 1024);
    let mut unsynced = Rig::new(after.clone(), 1024);
    let (sport, was) = (41000..42000u16)
        .find_map(|p| {
            let a = peer.forward(&tcp_to_vip(p, 80, tcp::SYN));
            (a != unsynced.forward(&tcp_to_vip(p, 80, tcp::SYN))).then_some((p, a))
        })
        .unwrap();
    let (mut rig, link) = linked(after);
    let id = id_of(&rt, "web", &was.to_string());
    link.synced
        .push(synced(web_key(sport), id, FlowState::TcpSyn, 100, 1))
        .unwrap();
    poll(&mut rig);
    assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::SYN)), was);
    assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::ACK)), was);
}

/// A bulk walk copies every live flow once; a refresh copies the flows this
/// director created and those with a packet since the previous walk began,
/// not the synced flows nobody here has seen since.
#[test]
fn walks_copy_every_flow_or_only_the_active_ones() {
    let (mut rig, link) = linked(topology_table());
    let rt = runtime(&config(TOPOLOGY));
    let a = id_of(&rt, "web", SERVERS[0]);
    for p in 0..10 {
        rig.forward(&udp_frame(CLIENT, 1000 + p, VIP, 53, b"q"));
    }
    for p in 0..10 {
        link.synced
            .push(synced(web_key(2000 + p), a, FlowState::TcpEstablished, 500, 2))
            .unwrap();
    }
    poll(&mut rig);
    notes(&link);
    let n = link.ask_walk(true);
    assert!(!link.walk_complete(n));
    poll(&mut rig); // idle: the whole (1024-flow) table at once
    assert!(link.walk_complete(n));
    let got = notes(&link);
    assert!(got.iter().all(|n| n.kind == NoteKind::Copy));
    let keys: HashSet<_> = got.iter().map(|n| (n.key.sport, n.origin, n.idle_ms)).collect();
    let mut want: HashSet<_> = (0..10).map(|p| (1000 + p, 0, 0)).collect();
    want.extend((0..10).map(|p| (2000 + p, 2, 500)));
    assert_eq!(got.len(), 20);
    assert_eq!(keys, want);
    assert_eq!(link.walk_copied.load(Relaxed), 20);

    // Three synced flows see frames here; then a refresh.
    rig.now += 10_000;
    for p in 0..3 {
        assert_eq!(
            rig.forward(&tcp_to_vip(2000 + p, 80, tcp::ACK)).to_string(),
            SERVERS[0]
        );
    }
    rig.now += 1000;
    let n = link.ask_walk(false);
    poll(&mut rig);
    assert!(link.walk_complete(n));
    let got: HashSet<_> = notes(&link)
        .iter()
        .map(|n| (n.key.sport, n.origin, n.idle_ms))
        .collect();
    let mut want: HashSet<_> = (0..10).map(|p| (1000 + p, 0, 11_000)).collect();
    want.extend((0..3).map(|p| (2000 + p, 2, 1000)));
    assert_eq!(got, want);
    // Nothing seen since: the next refresh copies only this director's own.
    rig.now += 1000;
    let n = link.ask_walk(false);
    poll(&mut rig);
    assert!(link.walk_complete(n));
    let got: HashSet<_> = notes(&link).iter().map(|n| n.key.sport).collect();
    assert_eq!(got, (1000..1010).collect());
}

/// A full notes queue: new flows are forwarded all the same and the lost
/// notes counted; a walk pauses (copies nothing twice, loses nothing) until
/// there is room.
#[test]
fn a_full_queue_is_counted_and_a_walk_waits_for_room() {
    let (mut rig, link) = linked(topology_table());
    let filler = Note {
        kind: NoteKind::New,
        key: web_key(1),
        backend: 0,
        state: FlowState::Udp,
        idle_ms: 0,
        origin: 0,
    };
    while link.notes.push(filler).is_ok() {}
    assert_eq!(link.notes.len(), NOTES);
    for p in 0..40 {
        rig.forward(&udp_frame(CLIENT, 3000 + p, VIP, 53, b"q"));
    }
    assert_eq!(link.notes_full.load(Relaxed), 40);
    assert_eq!(rig.stats().flows.load(Relaxed), 40);
    let n = link.ask_walk(true);
    poll(&mut rig);
    assert!(!link.walk_complete(n));
    assert_eq!(link.walk_copied.load(Relaxed), 0);
    // Room for 20 notes: a few buckets' worth, then a pause.
    for _ in 0..20 {
        link.notes.pop();
    }
    poll(&mut rig);
    let partial = link.walk_copied.load(Relaxed);
    assert!(!link.walk_complete(n) && partial <= 20, "{partial}");
    let mut copies: Vec<Note> = Vec::new();
    while !link.walk_complete(n) {
        copies.extend(notes(&link).into_iter().filter(|n| n.kind == NoteKind::Copy));
        poll(&mut rig);
    }
    copies.extend(notes(&link).into_iter().filter(|n| n.kind == NoteKind::Copy));
    let ports: HashSet<_> = copies.iter().map(|n| n.key.sport).collect();
    assert_eq!(copies.len(), 40, "each flow once");
    assert_eq!(ports, (3000..3040).collect());
    assert_eq!(link.notes_full.load(Relaxed), 40, "a walk drops nothing");
}

// IPv6: the same notes, synced flows and walks, through the link's IPv6
// queues.

const V6_YAML: &str = "interface: eth0\nmaglev_table_size: 251\nservices:\n  - name: web6\n    vip: 2001:db8:100::1\n    port: 80\n    real_servers:\n      - address: 2001:db8::11\n      - address: 2001:db8::12\n      - address: 2001:db8::13\n  - name: nat6\n    vip: 2001:db8:100::2\n    port: 80\n    mode: nat\n    real_servers:\n      - address: '[2001:db8::21]:8080'\n      - address: '[2001:db8::22]:8080'\n";
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const VIP6_NAT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 7);

/// An IPv6 server's MAC: its address's last four bytes behind 02:66.
fn mac6(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x66, o[12], o[13], o[14], o[15]]
}

fn server6(mac: &[u8]) -> Ipv6Addr {
    assert_eq!(&mac[..2], &[0x02, 0x66], "an IPv6 server's MAC");
    Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])))
}

fn v6_table() -> (Runtime, FwdTable) {
    let cfg = config(V6_YAML);
    let rt = runtime(&cfg);
    let mac = |a: IpAddr| match a {
        IpAddr::V6(a) => Some(mac6(a)),
        IpAddr::V4(a) => Some(mac_of(a)),
    };
    let mut t = build_table_dual(&cfg, &rt, mac, DIRECTOR_MAC, (0xc612_0002, 0), 1);
    t.gateway6_mac = Some(GATEWAY_MAC);
    (rt, t)
}

fn key6(vip: Ipv6Addr, sport: u16) -> FlowKey6 {
    FlowKey6 {
        src: u128::from(CLIENT6),
        dst: u128::from(vip),
        sport,
        dport: 80,
        proto: 6,
    }
}

fn to_vip6(vip: Ipv6Addr, sport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    PacketBuilder6::new(CLIENT6, vip).tcp(sport, 80, flags, payload)
}

fn notes6(link: &WorkerLink) -> Vec<Note<FlowKey6>> {
    std::iter::from_fn(|| link.notes6.pop()).collect()
}

type NoteRow6 = (NoteKind, FlowKey6, u32, FlowState, u32, u8);

fn rows6(n: &[Note<FlowKey6>]) -> Vec<NoteRow6> {
    n.iter()
        .map(|n| (n.kind, n.key, n.backend, n.state, n.idle_ms, n.origin))
        .collect()
}

/// An IPv6 flow makes its notes in the IPv6 queue, as an IPv4 flow does
/// in the IPv4 one: New, then Change at established and at closing.
#[test]
fn an_ipv6_flow_makes_its_notes_in_the_ipv6_queue() {
    let (rt, t) = v6_table();
    let (mut rig, link) = linked(t);
    let o = rig.send(&to_vip6(VIP6, 40000, tcp::SYN, &[]));
    let server = server6(&o.sent.expect("forwarded").bytes[0..6]);
    let id = id_of(&rt, "web6", &server.to_string());
    let k = key6(VIP6, 40000);
    assert_eq!(
        rows6(&notes6(&link)),
        vec![(NoteKind::New, k, id, FlowState::TcpSyn, 0, 0)]
    );
    rig.send(&to_vip6(VIP6, 40000, tcp::ACK, &[]));
    rig.send(&to_vip6(VIP6, 40000, tcp::ACK | tcp::PSH, b"GET"));
    assert_eq!(
        rows6(&notes6(&link)),
        vec![(NoteKind::Change, k, id, FlowState::TcpEstablished, 0, 0)]
    );
    rig.send(&to_vip6(VIP6, 40000, tcp::FIN | tcp::ACK, &[]));
    assert_eq!(
        rows6(&notes6(&link)),
        vec![(NoteKind::Change, k, id, FlowState::TcpClosing, 0, 0)]
    );
    assert!(notes(&link).is_empty(), "nothing in the IPv4 queue");
    assert_eq!(link.notes_full.load(Relaxed), 0);
}

/// An IPv6 flow synced from a peer: its frames go to the synced server, not
/// to the one the table picks here; for NAT the server's replies are
/// translated back to the VIP before this director saw a client packet.
#[test]
fn a_synced_ipv6_flow_keeps_its_server_and_its_nat_replies() {
    let (rt, t) = v6_table();
    let web: &[&str] = &["2001:db8::11", "2001:db8::12", "2001:db8::13"];
    let nat: &[&str] = &["2001:db8::21", "2001:db8::22"];
    for (vip, service, port, servers) in [(VIP6, "web6", 0u16, web), (VIP6_NAT, "nat6", 8080, nat)] {
        let mut probe = Rig::new(t.clone(), 1024);
        let picked = server6(&probe.forward_any(&to_vip6(vip, 40000, tcp::ACK, &[])).bytes[0..6]);
        let other: Ipv6Addr = servers
            .iter()
            .map(|a| a.parse().unwrap())
            .find(|a| *a != picked)
            .unwrap();
        let id = if port == 0 {
            id_of(&rt, service, &other.to_string())
        } else {
            id_of_port(&rt, service, &other.to_string(), port)
        };
        let (mut rig, link) = linked(t.clone());
        link.synced6
            .push(Synced {
                key: key6(vip, 40000),
                backend: id,
                state: FlowState::TcpEstablished,
                idle_ms: 0,
                origin: 1,
            })
            .unwrap();
        poll(&mut rig);
        assert_eq!(link.synced_applied.load(Relaxed), 1);
        assert_eq!(gauge(&rig, id), (1, 0));
        if port != 0 {
            // The server speaks first: its reply leaves from VIP:80.
            let reply = PacketBuilder6::new(other, CLIENT6).tcp(port, 40000, tcp::ACK, b"200");
            let s = rig.send(&reply).sent.expect("the reply is translated");
            assert_eq!(&s.bytes[0..6], &GATEWAY_MAC);
            assert_eq!(&s.bytes[22..38], &VIP6_NAT.octets());
            assert_eq!(&s.bytes[54..56], &80u16.to_be_bytes());
        }
        let s = rig.forward_any(&to_vip6(vip, 40000, tcp::ACK, b"GET"));
        assert_eq!(server6(&s.bytes[0..6]), other, "{service}: the synced server");
        if port != 0 {
            assert_eq!(&s.bytes[38..54], &other.octets());
            assert_eq!(&s.bytes[56..58], &port.to_be_bytes());
        }
        assert!(notes6(&link).is_empty(), "a synced flow's packets are no change");
    }
}

/// A walk goes through the IPv4 table, then the IPv6 one: the IPv6 flows
/// come out of `notes6`, each once, also when `notes6` is full for a while;
/// the walk is complete only when both tables are done.
#[test]
fn walks_copy_ipv6_flows_too_and_wait_for_room() {
    let (rt, t) = v6_table();
    let (mut rig, link) = linked(t);
    for p in 0..40 {
        rig.send(&to_vip6(VIP6, 3000 + p, tcp::SYN, &[]));
    }
    let a = id_of(&rt, "web6", "2001:db8::11");
    for p in 0..5 {
        link.synced6
            .push(Synced {
                key: key6(VIP6, 4000 + p),
                backend: a,
                state: FlowState::TcpEstablished,
                idle_ms: 300,
                origin: 2,
            })
            .unwrap();
    }
    poll(&mut rig);
    assert_eq!(notes6(&link).len(), 40);
    let filler = Note {
        kind: NoteKind::New,
        key: key6(VIP6, 1),
        backend: 0,
        state: FlowState::Udp,
        idle_ms: 0,
        origin: 0,
    };
    while link.notes6.push(filler).is_ok() {}
    assert_eq!(link.notes6.len(), NOTES6);
    let n = link.ask_walk(true);
    poll(&mut rig);
    assert!(!link.walk_complete(n), "waits for room in notes6");
    assert_eq!(link.walk_copied.load(Relaxed), 0);
    let mut copies = Vec::new();
    for _ in 0..NOTES6 {
        link.notes6.pop();
    }
    for _ in 0..100 {
        poll(&mut rig);
        copies.extend(notes6(&link));
        if link.walk_complete(n) {
            break;
        }
    }
    assert!(link.walk_complete(n));
    assert!(copies.iter().all(|n| n.kind == NoteKind::Copy));
    let got: HashSet<_> = copies.iter().map(|n| (n.key.sport, n.origin)).collect();
    let mut want: HashSet<_> = (0..40).map(|p| (3000 + p, 0)).collect();
    want.extend((0..5).map(|p| (4000 + p, 2)));
    assert_eq!(copies.len(), 45, "each flow once");
    assert_eq!(got, want);
    assert!(notes(&link).is_empty(), "no IPv4 flows");
    assert_eq!(link.notes_full.load(Relaxed), 0, "a walk drops nothing");
}

/// A worker that sees only a trickle of frames (one per poll, as with the
/// XDP fast path carrying the rest) walks at its idle pace: a bulk walk of
/// a 65,536-flow table (8,192 buckets) is done within a few polls, not the
/// 128 a busy pace of 64 buckets per poll would take.
#[test]
fn a_trickle_of_frames_does_not_slow_a_walk_down() {
    let mut rig = Rig::new(topology_table(), 65_536);
    let link = Arc::new(WorkerLink::new());
    rig.worker.attach_sync(link.clone());
    rig.now = 100_000;
    rig.forward(&udp_frame(CLIENT, 1000, VIP, 53, b"q"));
    notes(&link);
    let n = link.ask_walk(true);
    let mut polls = 0;
    while !link.walk_complete(n) && polls < 200 {
        rig.forward(&udp_frame(CLIENT, 1000, VIP, 53, b"q"));
        polls += 1;
    }
    assert!(link.walk_complete(n));
    assert!(polls <= 4, "{polls} polls with one frame each");
    assert_eq!(notes(&link).len(), 1, "the one flow, copied once");
}
