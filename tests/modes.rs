//! Worker-level tests of the forwarding modes and the packets around them:
//! NAT both ways (full and partial checksums, next hops), TUN encapsulation
//! (frag-needed, too big, software segmentation, checksum completion), ICMP
//! (echo, errors forwarded in DR/NAT/TUN), fragments, the SYN second chance
//! on the worker's clock, and UDP / port-0 services.
//!
//! Every case runs a frame through a real `Worker<MemDevice>` on a table
//! `build_table` makes of [`MODES`], asserts exactly which counters moved,
//! and compares the output frame byte for byte with one built independently
//! (plus checksum checks where the frame is complete).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::*;
use ulvs::control::publish::{build_table, Runtime};
use ulvs::dataplane::worker::SYN_SECOND_CHANCE_MS;
use ulvs::fwd::table::FwdTable;
use ulvs::io::mem::Sent;
use ulvs::io::{RxMeta, VnetHdr};
use ulvs::wire::builder::proto;
use ulvs::wire::{icmp, tcp};

/// `web`/`dns` (DR, three servers) on [`VIP`]; `nat-web` (TCP :80 ->
/// 198.18.0.21:8080) and `nat-dns` (UDP :53 -> 198.18.0.21:5353) on
/// [`VIP_NAT`]; `tun-web` (TCP :80 -> 198.18.0.31) on [`VIP_TUN`]; `any`
/// (DR, TCP port 0) on [`VIP_ANY`]; `nat-any` (NAT, TCP port 0, server
/// without a port) on [`VIP_NAT_ANY`].
const MODES: &str = "\
interface: eth0
maglev_table_size: 251
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
  - name: nat-web
    vip: 198.18.100.2
    port: 80
    protocol: tcp
    mode: nat
    real_servers:
      - address: 198.18.0.21:8080
  - name: nat-dns
    vip: 198.18.100.2
    port: 53
    protocol: udp
    mode: nat
    real_servers:
      - address: 198.18.0.21:5353
  - name: tun-web
    vip: 198.18.100.3
    port: 80
    protocol: tcp
    mode: tun
    real_servers:
      - address: 198.18.0.31
  - name: any
    vip: 198.18.100.4
    port: 0
    protocol: tcp
    mode: dr
    real_servers:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.13
  - name: nat-any
    vip: 198.18.100.5
    port: 0
    protocol: tcp
    mode: nat
    real_servers:
      - address: 198.18.0.25
";

/// 198.18.100.2
const VIP_NAT: u32 = 0xc612_6402;
/// 198.18.100.3
const VIP_TUN: u32 = 0xc612_6403;
/// 198.18.100.4
const VIP_ANY: u32 = 0xc612_6404;
/// 198.18.100.5
const VIP_NAT_ANY: u32 = 0xc612_6405;
/// 198.18.0.21, the server of `nat-web` (:8080) and `nat-dns` (:5353).
const NAT_RS: u32 = 0xc612_0015;
/// 198.18.0.25, the server of `nat-any`.
const NAT_ANY_RS: u32 = 0xc612_0019;
/// 198.18.0.31, the server of `tun-web`.
const TUN_RS: u32 = 0xc612_001f;
/// 198.18.0.2, the director's own address (outer source of TUN).
const DIRECTOR_IP: u32 = 0xc612_0002;
/// 192.0.2.1, a router on the path that sends ICMP errors to a VIP.
const PATH_ROUTER: u32 = 0xc000_0201;
/// The default gateway's MAC in the table (next hop of NAT replies to
/// off-link clients). Deliberately not [`ROUTER_MAC`], the source of inbound
/// frames, so a test sees which one the director used.
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// 198.18.5.5, a client on the director's own segment, in the neighbour table.
const ONLINK_CLIENT: u32 = 0xc612_0505;
const ONLINK_CLIENT_MAC: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x05];
/// 198.18.5.6, an on-link client whose MAC is not known.
const ONLINK_UNKNOWN: u32 = 0xc612_0506;
/// The interface MTU of [`modes`].
const MTU: u32 = 1500;

type Moved = BTreeMap<String, i64>;

fn addr(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// The table of [`MODES`] with every server MAC resolved, the gateway
/// resolved, the on-link prefix 198.18.0.0/16 with one known neighbour, the
/// director's address and an MTU of 1500.
fn modes() -> (Runtime, FwdTable) {
    let cfg = config(MODES);
    let rt = runtime(&cfg);
    let mut t = build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, DIRECTOR_IP, 1);
    t.gateway_mac = Some(GATEWAY_MAC);
    t.onlink = (0xc612_0000, 0xffff_0000);
    t.neighbours = vec![(ONLINK_CLIENT, ONLINK_CLIENT_MAC)];
    t.mtu = MTU;
    (rt, t)
}

fn rig() -> (Runtime, Rig) {
    let (rt, t) = modes();
    (rt, Rig::new(t, 1024))
}

/// Counters the first packet of a new flow moves (`flows` is 2 for NAT:
/// the reply direction gets its own entry).
fn new_flow(id: u32, len: usize, flows: i64) -> Moved {
    let len = len as i64;
    moved(&[
        ("frames_seen", 1),
        ("forwarded", 1),
        ("bytes_forwarded", len),
        ("flows", flows),
        (&format!("backend[{id}].packets"), 1),
        (&format!("backend[{id}].bytes"), len),
        (&format!("backend[{id}].conns"), 1),
        (&format!("backend[{id}].active"), 1),
    ])
}

/// Counters a later packet of a known flow moves.
fn same_flow(id: u32, len: usize) -> Moved {
    let len = len as i64;
    moved(&[
        ("frames_seen", 1),
        ("forwarded", 1),
        ("bytes_forwarded", len),
        (&format!("backend[{id}].packets"), 1),
        (&format!("backend[{id}].bytes"), len),
    ])
}

/// Counters a NAT reply moves.
fn reply(id: u32, len: usize) -> Moved {
    let len = len as i64;
    moved(&[
        ("frames_seen", 1),
        ("forwarded", 1),
        ("bytes_forwarded", len),
        (&format!("backend[{id}].out_packets"), 1),
        (&format!("backend[{id}].out_bytes"), len),
    ])
}

/// A drop under `reason` and nothing else.
fn dropped(reason: &str) -> Moved {
    moved(&[("frames_seen", 1), (&format!("drops.{reason}"), 1)])
}

/// `m` with `extra` added (a zero sum removes the entry).
fn plus(mut m: Moved, extra: &[(&str, i64)]) -> Moved {
    for (k, v) in extra {
        let e = m.entry(k.to_string()).or_insert(0);
        *e += v;
        if *e == 0 {
            m.remove(*k);
        }
    }
    m
}

/// `f` as the director sends it on: destination MAC `dst_mac`, source MAC
/// the director's, TTL `ttl`, the IPv4 checksum refreshed.
fn sent_as(mut f: Vec<u8>, dst_mac: [u8; 6], ttl: u8) -> Vec<u8> {
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&DIRECTOR_MAC);
    f[22] = ttl;
    refresh_ipv4_checksum(&mut f);
    f
}

/// `f` with source MAC `mac` (a frame from a real server).
fn from_mac(mut f: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    f[6..12].copy_from_slice(&mac);
    f
}

fn sent(o: &Outcome) -> &Sent {
    o.sent.as_ref().expect("a frame was sent")
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A partial-checksum (virtio `NEEDS_CSUM`) version of a TCP frame: the
/// checksum field holds the pseudo-header sum, and the vnet header says
/// where the kernel must complete it.
fn partial_tcp(mut f: Vec<u8>) -> (Vec<u8>, VnetHdr) {
    let l4_len = usize::from(be16(&f, 16)) - 20;
    let ps = pseudo_sum(be32(&f, 26), be32(&f, 30), 6, l4_len);
    f[50..52].copy_from_slice(&ps.to_be_bytes());
    let vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    (f, vnet)
}

/// Complete a partial checksum the way the kernel (or a NIC) does: the sum
/// from `csum_start`, over the pseudo-header sum in the field.
fn complete(f: &mut [u8], vnet: &VnetHdr) {
    let start = usize::from(vnet.csum_start);
    let at = start + usize::from(vnet.csum_offset);
    let c = !ulvs::wire::checksum::sum(&f[start..], 0);
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// 1. NAT inbound.

/// client -> VIP:80 becomes client -> 198.18.0.21:8080: TTL - 1, MACs
/// server <- director, full checksums updated (the SYN and a data segment).
#[test]
fn nat_inbound_rewrites_destination_with_full_checksums() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-web", "198.18.0.21", 8080);
    let rs_mac = mac_of(addr(NAT_RS));

    let syn = tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]);
    let o = rig.send(&syn);
    assert_eq!(o.moved, new_flow(id, syn.len(), 2));
    let s = sent(&o);
    let want = sent_as(tcp_frame(CLIENT, 40000, NAT_RS, 8080, tcp::SYN, &[]), rs_mac, 63);
    assert_eq!(s.bytes, want);
    assert!(ipv4_checksum_ok(&s.bytes, 14) && l4_checksum_ok(&s.bytes, 14));
    assert_eq!(s.vnet, VnetHdr::default());

    let payload = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
    let data = tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::ACK | tcp::PSH, payload);
    let o = rig.send(&data);
    assert_eq!(o.moved, same_flow(id, data.len()));
    let s = sent(&o);
    let want = sent_as(
        tcp_frame(CLIENT, 40000, NAT_RS, 8080, tcp::ACK | tcp::PSH, payload),
        rs_mac,
        63,
    );
    assert_eq!(s.bytes, want);
    assert!(ipv4_checksum_ok(&s.bytes, 14) && l4_checksum_ok(&s.bytes, 14));
    assert!(accounting_holds(rig.stats()));
}

/// A partial checksum (NEEDS_CSUM: the field holds the pseudo-header sum)
/// becomes the pseudo-header sum of the new addresses (the port is not part
/// of it), and the vnet header goes out unchanged; completing it as the
/// kernel would gives a valid checksum. Same for a GSO super-frame.
#[test]
fn nat_inbound_partial_checksum_keeps_pseudo_header_sum_and_vnet() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-web", "198.18.0.21", 8080);
    let rs_mac = mac_of(addr(NAT_RS));
    let payload: Vec<u8> = (0..300).map(|i| (i * 7 % 251) as u8).collect();

    let (f, vnet) = partial_tcp(tcp_frame(
        CLIENT,
        40001,
        VIP_NAT,
        80,
        tcp::ACK | tcp::PSH,
        &payload,
    ));
    let o = rig.send_with(&f, RxMeta::default(), vnet);
    // An ACK opens the flow as established (a connection picked up mid-way).
    assert_eq!(o.moved, new_flow(id, f.len(), 2));
    let s = sent(&o);
    assert_eq!(s.vnet, vnet, "vnet header passed through");
    let (mut want, _) = partial_tcp(tcp_frame(
        CLIENT,
        40001,
        NAT_RS,
        8080,
        tcp::ACK | tcp::PSH,
        &payload,
    ));
    want = sent_as(want, rs_mac, 63);
    assert_eq!(s.bytes, want);
    assert_eq!(
        be16(&s.bytes, 50),
        pseudo_sum(CLIENT, NAT_RS, 6, 20 + payload.len())
    );
    assert!(ipv4_checksum_ok(&s.bytes, 14));
    let mut done = s.bytes.clone();
    complete(&mut done, &s.vnet);
    assert!(l4_checksum_ok(&done, 14), "completes to a valid checksum");

    // A super-frame: the same rewrite, gso fields untouched (the kernel
    // segments it on the way out).
    let big: Vec<u8> = (0..2 * 1448).map(|i| (i % 253) as u8).collect();
    let (f, vnet) = partial_tcp(tcp_frame(CLIENT, 40002, VIP_NAT, 80, tcp::ACK, &big));
    let vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 1448,
        hdr_len: 54,
        ..vnet
    };
    let o = rig.send_with(&f, RxMeta::default(), vnet);
    assert_eq!(o.moved, new_flow(id, f.len(), 2));
    let s = sent(&o);
    assert_eq!(s.vnet, vnet);
    let (want, _) = partial_tcp(tcp_frame(CLIENT, 40002, NAT_RS, 8080, tcp::ACK, &big));
    assert_eq!(s.bytes, sent_as(want, rs_mac, 63));
    assert!(accounting_holds(rig.stats()));
}

/// TTL 1 cannot be forwarded through NAT (the director is a router there).
#[test]
fn nat_inbound_ttl_exceeded() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-web", "198.18.0.21", 8080);
    let mut syn = tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]);
    syn[22] = 1;
    refresh_ipv4_checksum(&mut syn);
    let o = rig.send(&syn);
    assert!(o.sent.is_none());
    // The flow is made (and its connection counted) before the rewrite fails.
    assert_eq!(
        o.moved,
        moved(&[
            ("frames_seen", 1),
            ("drops.ttl_exceeded", 1),
            ("flows", 2),
            (&format!("backend[{id}].conns"), 1),
            (&format!("backend[{id}].active"), 1),
        ])
    );
}

// ---------------------------------------------------------------------------
// 2. NAT outbound.

/// The server's SYN-ACK (198.18.0.21:8080 -> client) after the client's
/// SYN goes out as VIP:80 -> client to the gateway's MAC, TTL - 1, valid
/// checksums, counted as the backend's outbound traffic.
#[test]
fn nat_reply_is_rewritten_to_the_vip_and_sent_to_the_gateway() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-web", "198.18.0.21", 8080);
    let rs_mac = mac_of(addr(NAT_RS));
    rig.send(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));

    let synack = from_mac(
        tcp_frame(NAT_RS, 8080, CLIENT, 40000, tcp::SYN | tcp::ACK, &[]),
        rs_mac,
    );
    let o = rig.send(&synack);
    assert_eq!(o.moved, reply(id, synack.len()));
    let s = sent(&o);
    let want = sent_as(
        tcp_frame(VIP_NAT, 80, CLIENT, 40000, tcp::SYN | tcp::ACK, &[]),
        GATEWAY_MAC,
        63,
    );
    assert_eq!(s.bytes, want);
    assert!(ipv4_checksum_ok(&s.bytes, 14) && l4_checksum_ok(&s.bytes, 14));

    // Data, with a partial checksum: the pseudo-header sum of VIP -> client.
    let payload = b"HTTP/1.1 204 No Content\r\n\r\n";
    let (data, vnet) = partial_tcp(from_mac(
        tcp_frame(NAT_RS, 8080, CLIENT, 40000, tcp::ACK | tcp::PSH, payload),
        rs_mac,
    ));
    let o = rig.send_with(&data, RxMeta::default(), vnet);
    assert_eq!(o.moved, reply(id, data.len()));
    let s = sent(&o);
    assert_eq!(s.vnet, vnet);
    let (want, _) = partial_tcp(tcp_frame(
        VIP_NAT,
        80,
        CLIENT,
        40000,
        tcp::ACK | tcp::PSH,
        payload,
    ));
    assert_eq!(s.bytes, sent_as(want, GATEWAY_MAC, 63));
    let mut done = s.bytes.clone();
    complete(&mut done, &s.vnet);
    assert!(l4_checksum_ok(&done, 14));
    assert!(accounting_holds(rig.stats()));
}

/// A packet from a NAT server that no flow expects is not ours to rewrite:
/// another client port, another server port.
#[test]
fn nat_reply_without_flow() {
    let (_, mut rig) = rig();
    let rs_mac = mac_of(addr(NAT_RS));
    rig.send(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    for (sport, dport) in [(8080, 40999), (8081, 40000), (80, 40000)] {
        let f = from_mac(tcp_frame(NAT_RS, sport, CLIENT, dport, tcp::ACK, &[]), rs_mac);
        let o = rig.send(&f);
        assert!(o.sent.is_none(), "{sport} -> {dport}");
        assert_eq!(o.moved, dropped("nat_no_flow"), "{sport} -> {dport}");
    }
    // UDP from the server's :8080 (the flow is TCP).
    let f = from_mac(udp_frame(NAT_RS, 8080, CLIENT, 40000, b"x"), rs_mac);
    assert_eq!(rig.send(&f).moved, dropped("nat_no_flow"));
    assert!(accounting_holds(rig.stats()));
}

/// A reply to an on-link client goes to that client's MAC from the
/// neighbour table; an on-link client with no known MAC, or an off-link one
/// with no gateway MAC, cannot be sent (`next_hop_unknown`).
#[test]
fn nat_reply_next_hop() {
    let (rt, t) = modes();
    let id = id_of_port(&rt, "nat-web", "198.18.0.21", 8080);
    let rs_mac = mac_of(addr(NAT_RS));
    let mut rig = Rig::new(t.clone(), 1024);

    rig.send(&tcp_frame(ONLINK_CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    let f = from_mac(
        tcp_frame(NAT_RS, 8080, ONLINK_CLIENT, 40000, tcp::SYN | tcp::ACK, &[]),
        rs_mac,
    );
    let o = rig.send(&f);
    assert_eq!(o.moved, reply(id, f.len()));
    let want = sent_as(
        tcp_frame(VIP_NAT, 80, ONLINK_CLIENT, 40000, tcp::SYN | tcp::ACK, &[]),
        ONLINK_CLIENT_MAC,
        63,
    );
    assert_eq!(sent(&o).bytes, want);

    rig.send(&tcp_frame(ONLINK_UNKNOWN, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    let f = from_mac(
        tcp_frame(NAT_RS, 8080, ONLINK_UNKNOWN, 40000, tcp::SYN | tcp::ACK, &[]),
        rs_mac,
    );
    let o = rig.send(&f);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("next_hop_unknown"));

    // No gateway MAC: off-link clients are unreachable, on-link ones are not.
    let mut rig = Rig::new(
        FwdTable {
            gateway_mac: None,
            ..t
        },
        1024,
    );
    rig.send(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    let f = from_mac(
        tcp_frame(NAT_RS, 8080, CLIENT, 40000, tcp::SYN | tcp::ACK, &[]),
        rs_mac,
    );
    let o = rig.send(&f);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("next_hop_unknown"));
    rig.send(&tcp_frame(ONLINK_CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    let f = from_mac(
        tcp_frame(NAT_RS, 8080, ONLINK_CLIENT, 40000, tcp::SYN | tcp::ACK, &[]),
        rs_mac,
    );
    assert_eq!(rig.send(&f).moved, reply(id, f.len()));
    assert!(accounting_holds(rig.stats()));
}

// ---------------------------------------------------------------------------
// 3. TUN.

/// The outer header the director puts in front of an inner IPv4 packet of
/// `inner_len` bytes: director -> server, protocol 4, TTL 64, DF as given,
/// identification `id`, valid checksum; Ethernet server <- director.
fn outer(inner_len: usize, df: bool, id: u16) -> Vec<u8> {
    builder(DIRECTOR_IP, TUN_RS)
        .macs(mac_of(addr(TUN_RS)), DIRECTOR_MAC)
        .ident(id)
        .df(df)
        .headers(proto::IPIP, inner_len)
}

/// `f` with the DF flag cleared (IPv4 checksum refreshed).
fn without_df(mut f: Vec<u8>) -> Vec<u8> {
    f[20] &= !0x40;
    refresh_ipv4_checksum(&mut f);
    f
}

/// A SYN to a TUN service: outer header (director -> server, proto 4, DF
/// copied, TTL 64, valid checksum) + the inner packet unchanged; each
/// encapsulation gets a fresh outer identification.
#[test]
fn tun_encapsulates_in_ipip() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    let syn = tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::SYN, &[]);
    let o = rig.send(&syn);
    // Bytes are counted as received (before the outer header).
    assert_eq!(o.moved, new_flow(id, syn.len(), 1));
    let s = sent(&o);
    let ip_id = be16(&s.bytes, 18);
    assert_eq!(s.bytes.len(), syn.len() + 20);
    assert_eq!(&s.bytes[..34], &outer(syn.len() - 14, true, ip_id)[..]);
    assert_eq!(&s.bytes[34..], &syn[14..], "inner packet unchanged");
    assert!(ipv4_checksum_ok(&s.bytes, 14));
    assert!(ipv4_checksum_ok(&s.bytes, 34) && l4_checksum_ok(&s.bytes, 34));
    assert_eq!(s.vnet, VnetHdr::default());

    // No DF inside, none outside; a new identification.
    let ack = without_df(tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::ACK, b"hello"));
    let o = rig.send(&ack);
    assert_eq!(o.moved, same_flow(id, ack.len()));
    let s = sent(&o);
    let ip_id2 = be16(&s.bytes, 18);
    assert_ne!(ip_id2, ip_id, "fresh outer identification");
    assert_eq!(&s.bytes[..34], &outer(ack.len() - 14, false, ip_id2)[..]);
    assert_eq!(&s.bytes[34..], &ack[14..]);

    // The largest packet that fits: 1480 inner bytes in a 1500 MTU.
    let full = tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::ACK, &[0x5a; 1440]);
    assert_eq!(full.len() - 14 + 20, MTU as usize);
    let o = rig.send(&full);
    assert_eq!(o.moved, same_flow(id, full.len()));
    assert_eq!(&sent(&o).bytes[34..], &full[14..]);
    assert!(accounting_holds(rig.stats()));
}

/// The ICMP "fragmentation needed" the director owes the client for a
/// packet one byte too big to encapsulate (with DF).
fn frag_needed_case() -> (u32, Vec<u8>, Outcome) {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    rig.forward_any(&tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::SYN, &[]));
    let big = tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::ACK, &[0x5a; 1441]);
    assert_eq!(big.len() - 14 + 20, MTU as usize + 1);
    let o = rig.send(&big);
    (id, big, o)
}

/// Too big with DF: an ICMP "fragmentation needed" (MTU - 20 = 1480) from
/// the VIP back to the client through the router it came from, quoting the
/// IP header and 8 bytes; `tun_frag_needed`.
#[test]
fn tun_too_big_with_df_sends_frag_needed() {
    let (id, big, o) = frag_needed_case();
    let s = sent(&o);
    let mut want = icmp_frame(
        VIP_TUN,
        CLIENT,
        icmp::DEST_UNREACHABLE,
        icmp::CODE_FRAG_NEEDED,
        [0, 0, 0x05, 0xc8],
        &quote_of(&big),
    );
    want[0..6].copy_from_slice(&ROUTER_MAC);
    want[6..12].copy_from_slice(&DIRECTOR_MAC);
    want[18..20].copy_from_slice(&[0, 0]); // identification 0
    refresh_ipv4_checksum(&mut want);
    assert_eq!(s.bytes, want);
    assert!(ipv4_checksum_ok(&s.bytes, 14) && icmp_checksum_ok(&s.bytes, 14));
    assert_eq!(s.vnet, VnetHdr::default());
    // What the frame did to the counters, leaving aside whether it also
    // counts as forwarded to the server (see the ignored test below).
    let disputed = [
        "forwarded".to_string(),
        "bytes_forwarded".to_string(),
        format!("backend[{id}].packets"),
        format!("backend[{id}].bytes"),
    ];
    let mut m = o.moved.clone();
    m.retain(|k, _| !disputed.contains(k));
    assert_eq!(m, dropped("tun_frag_needed"));
}

/// The frame that became an ICMP error was not forwarded to the server, and
/// `frames_seen == forwarded + sum(drops)` (README) must hold.
#[test]
fn tun_frag_needed_is_not_counted_as_forwarded() {
    let (_, _, o) = frag_needed_case();
    assert!(o.sent.is_some());
    assert_eq!(o.moved, dropped("tun_frag_needed"));
}

/// Too big without DF: the outer packet is fragmented (as IPVS lets the
/// kernel do): two fragments of at most the MTU that together carry the
/// whole inner packet, which stays intact.
#[test]
fn tun_too_big_without_df_is_fragmented() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    rig.forward_any(&tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::SYN, &[]));
    let big = without_df(tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::ACK, &[0x5a; 1441]));
    let (moved_, sent) = rig.send_all(&big, RxMeta::default(), VnetHdr::default());
    assert_eq!(sent.len(), 2);
    let mut inner = Vec::new();
    for (k, s) in sent.iter().enumerate() {
        let b = &s.bytes;
        assert!(b.len() - 14 <= 1500, "fragment {k} fits the MTU");
        assert_eq!(b[23], 4, "IP-in-IP");
        assert!(ipv4_checksum_ok(b, 14));
        let ff = u16::from_be_bytes([b[20], b[21]]);
        assert_eq!(ff & 0x2000 != 0, k == 0, "MF on the first only");
        inner.extend_from_slice(&b[34..]);
    }
    assert_eq!(inner, big[14..].to_vec());
    assert_eq!(moved_.get(&format!("backend[{id}].packets")), Some(&1));
    assert_eq!(moved_.get("drops.tun_too_big"), None);
    assert!(accounting_holds(rig.stats()));
}

/// A GSO super-frame (gso_size = MTU - 60, the largest that fits) is cut
/// into segments in software, each a complete TCP/IP packet with valid
/// checksums wrapped in its own outer header.
#[test]
fn tun_segments_gso_super_frames() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    let mss = (MTU - 60) as usize;
    let payload: Vec<u8> = (0..3 * mss - 100).map(|i| (i % 249) as u8).collect();
    let (f, vnet) = partial_tcp(tcp_frame(
        CLIENT,
        40002,
        VIP_TUN,
        80,
        tcp::ACK | tcp::PSH | tcp::FIN,
        &payload,
    ));
    let vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: mss as u16,
        hdr_len: 54,
        ..vnet
    };
    let (m, out) = rig.send_all(&f, RxMeta::default(), vnet);
    // One frame in, counted once as forwarded; three segments out. (The FIN
    // opens the flow as closing: inactive, not active.)
    let closing = [
        ("tun_segmented", 3),
        (&format!("backend[{id}].active")[..], -1),
        (&format!("backend[{id}].inactive")[..], 1),
    ];
    assert_eq!(m, plus(new_flow(id, f.len(), 1), &closing));
    assert_eq!(out.len(), 3);
    let mut joined = Vec::new();
    let mut outer_ids = Vec::new();
    for (i, s) in out.iter().enumerate() {
        let chunk = &payload[i * mss..((i + 1) * mss).min(payload.len())];
        let b = &s.bytes;
        assert_eq!(b.len(), 14 + 20 + 40 + chunk.len(), "segment {i}");
        assert!(b.len() - 14 <= MTU as usize);
        outer_ids.push(be16(b, 18));
        assert_eq!(
            &b[..34],
            &outer(40 + chunk.len(), true, be16(b, 18))[..],
            "segment {i}"
        );
        assert!(
            ipv4_checksum_ok(b, 34) && l4_checksum_ok(b, 34),
            "segment {i} checksums"
        );
        // The inner packet is the super-frame's headers with this chunk.
        let mut want = tcp_frame_seq(
            CLIENT,
            40002,
            VIP_TUN,
            80,
            if i == 2 {
                tcp::ACK | tcp::PSH | tcp::FIN
            } else {
                tcp::ACK
            },
            0x0102_0304 + (i * mss) as u32,
            chunk,
        );
        want[18..20].copy_from_slice(&(1 + i as u16).to_be_bytes()); // IP id 1, 2, 3
        refresh_ipv4_checksum(&mut want);
        assert_eq!(&b[34..], &want[14..], "segment {i}");
        assert_eq!(s.vnet, VnetHdr::default(), "segment {i}: complete, no offload");
        joined.extend_from_slice(&b[74..]);
    }
    assert_eq!(joined, payload);
    outer_ids.sort_unstable();
    outer_ids.dedup();
    assert_eq!(outer_ids.len(), 3, "fresh outer identification per segment");
    assert!(accounting_holds(rig.stats()));
}

/// A super-frame whose segments would not fit (gso_size = MTU - 59), with
/// DF: frag-needed like any other too-big packet.
#[test]
fn tun_gso_too_big_sends_frag_needed() {
    let (_, mut rig) = rig();
    let mss = (MTU - 59) as usize;
    let (f, vnet) = partial_tcp(tcp_frame(CLIENT, 40003, VIP_TUN, 80, tcp::ACK, &vec![1; 2 * mss]));
    let vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: mss as u16,
        hdr_len: 54,
        ..vnet
    };
    let (m, out) = rig.send_all(&f, RxMeta::default(), vnet);
    assert_eq!(out.len(), 1);
    assert_eq!(m.get("drops.tun_frag_needed"), Some(&1));
    assert_eq!(m.get("tun_segmented"), None);
    let b = &out[0].bytes;
    assert_eq!((b[34], b[35]), (icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED));
    assert_eq!(be16(b, 40), 1480);
    assert_eq!(out[0].vnet, VnetHdr::default());
    assert!(ipv4_checksum_ok(b, 14) && icmp_checksum_ok(b, 14));
}

/// A partial checksum on a non-GSO frame is completed before encapsulation
/// (the server decapsulates in software and needs final checksums).
#[test]
fn tun_completes_partial_checksums() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    let payload = b"partial checksum, please complete";
    let full = tcp_frame(CLIENT, 40004, VIP_TUN, 80, tcp::ACK | tcp::PSH, payload);
    let (f, vnet) = partial_tcp(full.clone());
    assert_ne!(f, full);
    let o = rig.send_with(&f, RxMeta::default(), vnet);
    assert_eq!(o.moved, new_flow(id, f.len(), 1));
    let s = sent(&o);
    assert_eq!(&s.bytes[34..], &full[14..], "the inner checksum is complete");
    assert!(l4_checksum_ok(&s.bytes, 34));
    assert_eq!(
        &s.bytes[..34],
        &outer(full.len() - 14, true, be16(&s.bytes, 18))[..]
    );
    assert!(!s.vnet.needs_csum(), "{:?}", s.vnet);
    assert!(!s.vnet.is_gso());
}

// ---------------------------------------------------------------------------
// 4. ICMP.

fn echo_request(ttl: u8) -> Vec<u8> {
    builder(CLIENT, VIP).ttl(ttl).icmp(
        icmp::ECHO_REQUEST,
        0,
        [0x12, 0x34, 0x00, 0x07],
        b"abcdefghijklmnopqrstuvwxyz012345",
    )
}

fn echo_case() -> (Rig, Outcome) {
    let (_, mut rig) = rig();
    let o = rig.send(&echo_request(57));
    (rig, o)
}

/// An echo request to the VIP is answered in place: VIP -> client, TTL 64,
/// back to the router it came from, valid checksums.
#[test]
fn echo_request_to_vip_is_answered() {
    let (_, o) = echo_case();
    let s = sent(&o);
    let mut want = icmp_frame(
        VIP,
        CLIENT,
        icmp::ECHO_REPLY,
        0,
        [0x12, 0x34, 0x00, 0x07],
        b"abcdefghijklmnopqrstuvwxyz012345",
    );
    want[0..6].copy_from_slice(&ROUTER_MAC);
    want[6..12].copy_from_slice(&DIRECTOR_MAC);
    assert_eq!(s.bytes, want);
    assert!(ipv4_checksum_ok(&s.bytes, 14) && icmp_checksum_ok(&s.bytes, 14));
    assert_eq!(s.vnet, VnetHdr::default());
    // Leaving aside whether a reply counts as forwarded (ignored test below).
    let mut m = o.moved.clone();
    m.remove("forwarded");
    m.remove("bytes_forwarded");
    assert_eq!(m, moved(&[("frames_seen", 1), ("echo_replies", 1)]));
}

#[test]
fn echo_reply_keeps_the_accounting_identity() {
    let (rig, o) = echo_case();
    assert!(o.sent.is_some());
    assert!(accounting_holds(rig.stats()), "{:?}", o.moved);
}

/// `answer_ping: false`, or ICMP that is neither an echo request nor an
/// error: `icmp_other`.
#[test]
fn icmp_other() {
    let (_, t) = modes();
    let mut rig = Rig::new(
        FwdTable {
            answer_ping: false,
            ..t.clone()
        },
        1024,
    );
    let o = rig.send(&echo_request(64));
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("icmp_other"));

    let mut rig = Rig::new(t, 1024);
    let reply = icmp_frame(CLIENT, VIP, icmp::ECHO_REPLY, 0, [0, 1, 0, 1], b"pong");
    assert_eq!(rig.send(&reply).moved, dropped("icmp_other"));
    // An error quoting a packet the VIP did not send.
    let other = tcp_frame(0xc612_0063, 80, CLIENT, 40000, tcp::ACK, &[]);
    let err = icmp_frame(
        PATH_ROUTER,
        VIP,
        icmp::DEST_UNREACHABLE,
        1,
        [0; 4],
        &quote_of(&other),
    );
    assert_eq!(rig.send(&err).moved, dropped("icmp_other"));
    assert!(accounting_holds(rig.stats()));
}

/// An ICMP error from a router on the path, to `vip`, quoting a packet
/// `vip:vport -> CLIENT:cport` (its IP header and 8 bytes of TCP).
fn icmp_error_to(vip: u32, vport: u16, cport: u16) -> Vec<u8> {
    let quoted = tcp_frame(vip, vport, CLIENT, cport, tcp::ACK, &[]);
    icmp_frame(
        PATH_ROUTER,
        vip,
        icmp::DEST_UNREACHABLE,
        icmp::CODE_FRAG_NEEDED,
        [0, 0, 0x05, 0x78],
        &quote_of(&quoted),
    )
}

fn icmp_forwarded(id: u32, len: usize) -> Moved {
    plus(same_flow(id, len), &[("icmp_errors_forwarded", 1)])
}

/// DR: an error quoting VIP:80 -> client:port of a known flow goes to that
/// flow's server, only the MACs changed; an unknown flow: `icmp_no_flow`.
#[test]
fn icmp_error_follows_its_flow_dr() {
    let (rt, mut rig) = rig();
    let server = rig.forward(&tcp_to_vip(40000, 80, tcp::SYN));
    let id = id_of(&rt, "web", &server.to_string());
    let err = icmp_error_to(VIP, 80, 40000);
    let o = rig.send(&err);
    assert_eq!(o.moved, icmp_forwarded(id, err.len()));
    assert_eq!(sent(&o).bytes, dr_rewritten(&err, server));

    let err = icmp_error_to(VIP, 80, 40999);
    let o = rig.send(&err);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("icmp_no_flow"));
    // A quoted port no service has.
    let err = icmp_error_to(VIP, 443, 40000);
    assert_eq!(rig.send(&err).moved, dropped("no_service"));
    assert!(accounting_holds(rig.stats()));
}

/// NAT: the error goes to the server (outer destination, TTL - 1), and the quoted
/// packet becomes the one the server sent (source = its IP:port), with
/// valid outer, quoted-header and ICMP checksums.
#[test]
fn icmp_error_follows_its_flow_nat() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-web", "198.18.0.21", 8080);
    rig.send(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    let err = icmp_error_to(VIP_NAT, 80, 40000);
    let o = rig.send(&err);
    assert_eq!(o.moved, icmp_forwarded(id, err.len()));
    let s = sent(&o);
    let quoted = tcp_frame(NAT_RS, 8080, CLIENT, 40000, tcp::ACK, &[]);
    let want = icmp_frame(
        PATH_ROUTER,
        NAT_RS,
        icmp::DEST_UNREACHABLE,
        icmp::CODE_FRAG_NEEDED,
        [0, 0, 0x05, 0x78],
        &quote_of(&quoted),
    );
    // Routed on to the server: TTL - 1 like any NAT packet.
    let want = sent_as(want, mac_of(addr(NAT_RS)), 63);
    assert_eq!(s.bytes, want);
    assert!(ipv4_checksum_ok(&s.bytes, 14) && icmp_checksum_ok(&s.bytes, 14));
    assert!(ipv4_checksum_ok(&s.bytes, 42), "quoted header checksum");

    let o = rig.send(&icmp_error_to(VIP_NAT, 80, 40999));
    assert_eq!(o.moved, dropped("icmp_no_flow"));
    assert!(accounting_holds(rig.stats()));
}

/// TUN: the error is encapsulated to the flow's server unchanged.
#[test]
fn icmp_error_follows_its_flow_tun() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    rig.forward_any(&tcp_frame(CLIENT, 40000, VIP_TUN, 80, tcp::SYN, &[]));
    let err = icmp_error_to(VIP_TUN, 80, 40000);
    let o = rig.send(&err);
    assert_eq!(o.moved, icmp_forwarded(id, err.len()));
    let s = sent(&o);
    assert_eq!(
        &s.bytes[..34],
        &outer(err.len() - 14, true, be16(&s.bytes, 18))[..]
    );
    assert_eq!(&s.bytes[34..], &err[14..]);
}

/// NAT: an ICMP error a server sends a client about a flow (UDP port
/// unreachable) is part of the reply direction: it must leave from the VIP,
/// quoting the packet as the client sent it (client -> VIP:53), as IPVS's
/// `ip_vs_out_icmp` does.
#[test]
fn nat_icmp_error_from_server_is_translated() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-dns", "198.18.0.21", 5353);
    let rs_mac = mac_of(addr(NAT_RS));
    let q = udp_frame(CLIENT, 5000, VIP_NAT, 53, b"query");
    let got = sent_as(udp_frame(CLIENT, 5000, NAT_RS, 5353, b"query"), rs_mac, 63);
    assert_eq!(rig.forward_any(&q).bytes, got);
    let err = from_mac(
        icmp_frame(NAT_RS, CLIENT, icmp::DEST_UNREACHABLE, 3, [0; 4], &quote_of(&got)),
        rs_mac,
    );
    let o = rig.send(&err);
    assert_eq!(o.moved, reply(id, err.len()));
    let s = sent(&o);
    // The quoted UDP checksum (quote bytes 26..28) is left as it was (IPVS
    // does not touch it either); everything else is the translated error.
    let mut quote = quote_of(&sent_as(q.clone(), rs_mac, 63));
    quote[26..28].copy_from_slice(&s.bytes[68..70]);
    let want = icmp_frame(VIP_NAT, CLIENT, icmp::DEST_UNREACHABLE, 3, [0; 4], &quote);
    assert_eq!(s.bytes, sent_as(want, GATEWAY_MAC, 63));
    assert!(ipv4_checksum_ok(&s.bytes, 14) && icmp_checksum_ok(&s.bytes, 14));
    assert!(ipv4_checksum_ok(&s.bytes, 42));
}

// ---------------------------------------------------------------------------
// 5. Fragments.

/// A UDP datagram `src:sport -> dst:dport` with 56 bytes of payload (64
/// bytes of UDP), cut into three fragments of 24, 24 and 16 bytes
/// (offsets 0, 3 and 6 in 8-byte units), identification `ident`.
fn udp_fragments(src: u32, sport: u16, dst: u32, dport: u16, ident: u16) -> (Vec<u8>, [Vec<u8>; 3]) {
    let payload: Vec<u8> = (0..56).map(|i| 0xa0 ^ i as u8).collect();
    let b = builder(src, dst).ident(ident).df(false);
    let udp = b.udp_datagram(sport, dport, &payload);
    let frags = b.fragments(proto::UDP, &udp, &[24, 48]);
    (udp, frags.try_into().expect("three fragments"))
}

/// DR: the first fragment (MF, offset 0, with the UDP header) picks the
/// server; the later ones (no ports) follow it by identification.
#[test]
fn fragments_follow_the_first_dr() {
    let (rt, mut rig) = rig();
    let (_, [first, second, third]) = udp_fragments(CLIENT, 5000, VIP, 53, 0x4242);
    let o = rig.send(&first);
    let server = server_of(&sent(&o).bytes[0..6]);
    let id = id_of(&rt, "dns", &server.to_string());
    assert_eq!(o.moved, new_flow(id, first.len(), 1));
    assert_eq!(sent(&o).bytes, dr_rewritten(&first, server));
    for f in [&second, &third] {
        let o = rig.send(f);
        assert_eq!(
            o.moved,
            plus(same_flow(id, f.len()), &[("fragments_forwarded", 1)])
        );
        assert_eq!(sent(&o).bytes, dr_rewritten(f, server));
    }
    assert_eq!(
        rig.stats()
            .fragments_forwarded
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // A later fragment of a datagram whose first was never seen.
    let (_, [_, stray, _]) = udp_fragments(CLIENT, 5000, VIP, 53, 0x4343);
    let o = rig.send(&stray);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("fragment"));
    assert!(accounting_holds(rig.stats()));
}

/// NAT: the first fragment gets address and port rewritten (its UDP
/// checksum, over the whole datagram, updated incrementally); later
/// fragments get the address only, TTL - 1, a valid IPv4 checksum. The
/// reassembled datagram carries a valid checksum for the new addresses.
#[test]
fn fragments_follow_the_first_nat() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-dns", "198.18.0.21", 5353);
    let rs_mac = mac_of(addr(NAT_RS));
    let (udp, frags) = udp_fragments(CLIENT, 5000, VIP_NAT, 53, 0x4242);
    let mut l4 = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        let o = rig.send(f);
        let want_moved = if i == 0 {
            new_flow(id, f.len(), 2)
        } else {
            plus(same_flow(id, f.len()), &[("fragments_forwarded", 1)])
        };
        assert_eq!(o.moved, want_moved, "fragment {i}");
        let s = sent(&o);
        assert!(ipv4_checksum_ok(&s.bytes, 14), "fragment {i}");
        let mut want = f.clone();
        want[30..34].copy_from_slice(&NAT_RS.to_be_bytes());
        if i == 0 {
            want[36..38].copy_from_slice(&5353u16.to_be_bytes());
            want[40..42].copy_from_slice(&s.bytes[40..42]); // checked below
        }
        assert_eq!(s.bytes, sent_as(want, rs_mac, 63), "fragment {i}");
        l4.extend_from_slice(&s.bytes[34..]);
    }
    assert_eq!(l4.len(), udp.len());
    assert_eq!(&l4[2..4], &5353u16.to_be_bytes());
    // Reassembled: the datagram as if sent to the server, whose full
    // checksum the incremental update produced.
    let whole = udp_frame(CLIENT, 5000, NAT_RS, 5353, &udp[8..]);
    assert_eq!(&whole[34..], &l4[..]);
    assert!(accounting_holds(rig.stats()));
}

/// NAT: a server's reply too big for one packet comes back fragmented; each
/// fragment must leave as the VIP's (IPVS reassembles replies for this:
/// `ip_vs_gather_frags`).
#[test]
fn nat_fragmented_reply_is_translated() {
    let (_, mut rig) = rig();
    let rs_mac = mac_of(addr(NAT_RS));
    rig.forward_any(&udp_frame(CLIENT, 5000, VIP_NAT, 53, b"query"));
    let (_, frags) = udp_fragments(NAT_RS, 5353, CLIENT, 5000, 0x5151);
    let mut l4 = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        let o = rig.send(&from_mac(f.clone(), rs_mac));
        let s = sent(&o);
        assert_eq!(&s.bytes[0..6], &GATEWAY_MAC, "fragment {i}");
        assert_eq!(be32(&s.bytes, 26), VIP_NAT, "fragment {i}");
        assert!(ipv4_checksum_ok(&s.bytes, 14), "fragment {i}");
        l4.extend_from_slice(&s.bytes[34..]);
    }
    let (udp, _) = udp_fragments(VIP_NAT, 53, CLIENT, 5000, 0x5151);
    assert_eq!(l4, udp, "reassembled: VIP:53 -> client, valid checksum");
    assert!(accounting_holds(rig.stats()));
}

// ---------------------------------------------------------------------------
// 6. SYN second chance.

/// The web service's SYN from `sport` with sequence number `seq`.
fn syn(sport: u16, seq: u32) -> Vec<u8> {
    tcp_frame_seq(CLIENT, sport, VIP, 80, tcp::SYN, seq, &[])
}

/// Counters of a SYN moved from server `from` to `to`.
fn second_chance(from: u32, to: u32, len: usize) -> Moved {
    plus(
        same_flow(to, len),
        &[
            ("syn_second_chance", 1),
            (&format!("backend[{from}].active"), -1),
            (&format!("backend[{to}].active"), 1),
        ],
    )
}

/// A SYN retransmitted 500 ms after the first (same ISN, no handshake with
/// its server since) goes to another server; at 499 ms it stays.
#[test]
fn syn_retransmit_after_500ms_moves_to_another_server() {
    let (rt, mut rig) = rig();
    let id = |s: Ipv4Addr| id_of(&rt, "web", &s.to_string());
    let f = syn(41000, 7777);
    let a = rig.forward(&f);
    assert_eq!(SYN_SECOND_CHANCE_MS, 500);
    rig.now += 499;
    let o = rig.send(&f);
    assert_eq!(o.moved, same_flow(id(a), f.len()), "499 ms: stays");
    assert_eq!(sent(&o).bytes, dr_rewritten(&f, a));
    rig.now += 1;
    let o = rig.send(&f);
    let b = server_of(&sent(&o).bytes[0..6]);
    assert_ne!(b, a, "500 ms: moves");
    assert_eq!(sent(&o).bytes, dr_rewritten(&f, b));
    assert_eq!(o.moved, second_chance(id(a), id(b), f.len()));
    // The flow now lives on the new server.
    let ack = tcp_frame_seq(CLIENT, 41000, VIP, 80, tcp::ACK, 7778, &[]);
    rig.now += 10;
    let o = rig.send(&ack);
    assert_eq!(o.moved, same_flow(id(b), ack.len()));
    assert_eq!(sent(&o).bytes, dr_rewritten(&ack, b));
    assert!(accounting_holds(rig.stats()));
}

/// A SYN with another ISN on the same tuple is a new connection (port
/// reuse), not a retransmission: it is scheduled afresh (Maglev gives the
/// same server here, and a new connection is counted), and its own 500 ms
/// start then.
#[test]
fn syn_with_a_new_isn_does_not_move() {
    let (rt, mut rig) = rig();
    let f = syn(41001, 1000);
    let a = rig.forward(&f);
    let id = id_of(&rt, "web", &a.to_string());
    rig.now += 600;
    let g = syn(41001, 2000);
    let o = rig.send(&g);
    let mut want = same_flow(id, g.len());
    want.insert(format!("backend[{id}].conns"), 1);
    assert_eq!(o.moved, want);
    assert_eq!(sent(&o).bytes, dr_rewritten(&g, a));
    rig.now += 499;
    assert_eq!(
        rig.send(&g).moved,
        same_flow(id, g.len()),
        "499 ms after the new ISN"
    );
    rig.now += 1;
    let o = rig.send(&g);
    let b = server_of(&sent(&o).bytes[0..6]);
    assert_ne!(b, a, "500 ms after the new ISN");
    let to = id_of(&rt, "web", &b.to_string());
    assert_eq!(o.moved, second_chance(id, to, g.len()));
}

/// Evidence the server is alive: another flow to it completed a handshake
/// after this SYN was first seen, so the retransmission stays. A handshake
/// before the first SYN is no such evidence.
#[test]
fn syn_retransmit_stays_when_its_server_answered_another_flow() {
    let (rt, mut rig) = rig();
    let f = syn(41002, 3333);
    let a = rig.forward(&f);
    let id = id_of(&rt, "web", &a.to_string());
    // Another client port whose flow Maglev gives to the same server.
    rig.now += 100;
    let other = (42000..43000)
        .find(|&p| rig.forward(&syn(p, 1)) == a)
        .expect("some port maps to the same server");
    rig.now += 100;
    let ack = tcp_frame_seq(CLIENT, other, VIP, 80, tcp::ACK, 2, &[]);
    assert_eq!(rig.forward(&ack), a, "handshake completed with {a}");
    rig.now += 400; // 600 ms after the first SYN
    let o = rig.send(&f);
    assert_eq!(o.moved, same_flow(id, f.len()));
    assert_eq!(sent(&o).bytes, dr_rewritten(&f, a));

    // A new SYN now (after that handshake): its retransmission 500 ms
    // later has no evidence newer than itself, and moves.
    let g = syn(41003, 4444);
    let ga = rig.forward(&g);
    rig.now += 500;
    let o = rig.send(&g);
    let gb = server_of(&sent(&o).bytes[0..6]);
    assert_ne!(gb, ga);
    let (ia, ib) = (
        id_of(&rt, "web", &ga.to_string()),
        id_of(&rt, "web", &gb.to_string()),
    );
    assert_eq!(o.moved, second_chance(ia, ib, g.len()));
}

/// A SYN that keeps being retransmitted walks the servers: with three
/// servers, the third attempt goes to the one not tried yet rather than
/// back to the first, which never answered.
#[test]
fn syn_third_chance_tries_an_untried_server() {
    let (rt, mut rig) = rig();
    let id = |s: Ipv4Addr| id_of(&rt, "web", &s.to_string());
    let mut bounced = Vec::new();
    for sport in 41100..41164u16 {
        let f = syn(sport, u32::from(sport));
        let a = rig.forward(&f);
        rig.now += 500;
        let b = rig.forward(&f);
        assert_ne!(b, a, "port {sport}");
        rig.now += 500;
        let o = rig.send(&f);
        let c = server_of(&sent(&o).bytes[0..6]);
        if c == a || c == b {
            bounced.push((sport, a, b, c));
            continue;
        }
        assert_eq!(o.moved, second_chance(id(b), id(c), f.len()));
    }
    assert!(
        bounced.is_empty(),
        "third SYN went back to a tried server: {bounced:?}"
    );
}

// ---------------------------------------------------------------------------
// 7. UDP and port-0 services.

/// A port-0 service takes every port of its VIP; the hash includes the
/// destination port, so the same client tuple may go to different servers
/// for different ports, but always to the same one for the same input.
#[test]
fn port_zero_service_takes_every_port() {
    let (rt, t) = modes();
    let servers = |t: &FwdTable| {
        // The flow table's bucket depends on the client's address and port
        // (random seed per table), so each sport's two flows share one:
        // 64 pairs in the 128 buckets of a 1024-flow table overflowed one
        // (an eviction) in a few runs in a hundred. This test is about the
        // port-0 hash, not about a full table: 65,536 flows.
        let mut rig = Rig::new(t.clone(), 1 << 16);
        let mut out = BTreeMap::new();
        for sport in 43000..43064u16 {
            for dport in [80, 8443] {
                let f = tcp_frame(CLIENT, sport, VIP_ANY, dport, tcp::SYN, &[]);
                let o = rig.send(&f);
                let s = sent(&o);
                let server = server_of(&s.bytes[0..6]);
                assert_eq!(s.bytes, dr_rewritten(&f, server));
                assert_eq!(
                    o.moved,
                    new_flow(id_of(&rt, "any", &server.to_string()), f.len(), 1)
                );
                out.insert((sport, dport), server);
            }
        }
        out
    };
    let first = servers(&t);
    assert_eq!(first, servers(&t), "same input, same server");
    // Across 64 client ports, :80 and :8443 do not map identically (the
    // hash is fixed-seed, so this is deterministic too).
    assert!((43000..43064u16).any(|p| first[&(p, 80)] != first[&(p, 8443)]));
    // TCP only: UDP to the same VIP has no service.
    let mut rig = Rig::new(t, 1024);
    let o = rig.send(&udp_frame(CLIENT, 43000, VIP_ANY, 80, b"x"));
    assert_eq!(o.moved, dropped("no_service"));
}

/// NAT with port 0 and a server without a port: the client's destination
/// port is kept on the way in and restored on the way out.
#[test]
fn nat_port_zero_keeps_the_port() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "nat-any", "198.18.0.25");
    let rs_mac = mac_of(addr(NAT_ANY_RS));
    for (sport, dport) in [(44000, 8443), (44000, 22), (44001, 8443)] {
        let f = tcp_frame(CLIENT, sport, VIP_NAT_ANY, dport, tcp::SYN, &[]);
        let o = rig.send(&f);
        assert_eq!(o.moved, new_flow(id, f.len(), 2), "{sport} -> {dport}");
        let want = sent_as(
            tcp_frame(CLIENT, sport, NAT_ANY_RS, dport, tcp::SYN, &[]),
            rs_mac,
            63,
        );
        assert_eq!(sent(&o).bytes, want);
        let r = from_mac(
            tcp_frame(NAT_ANY_RS, dport, CLIENT, sport, tcp::SYN | tcp::ACK, &[]),
            rs_mac,
        );
        let o = rig.send(&r);
        assert_eq!(o.moved, reply(id, r.len()));
        let want = sent_as(
            tcp_frame(VIP_NAT_ANY, dport, CLIENT, sport, tcp::SYN | tcp::ACK, &[]),
            GATEWAY_MAC,
            63,
        );
        assert_eq!(sent(&o).bytes, want, "{sport} -> {dport}");
    }
}

/// NAT with port 0 and a server `IP:PORT` would map every VIP port onto one
/// server port, and replies could not tell which VIP port to answer from: the
/// validator refuses it (file, line, field).
#[test]
fn nat_port_zero_with_mapped_port_is_refused() {
    let yaml = "interface: eth0\nservices:\n  - name: m\n    vip: 198.18.100.6\n    port: 0\n    mode: nat\n    real_servers:\n      - address: 198.18.0.26:8080\n";
    let e = ulvs::control::config::Config::from_str(yaml, "t.yaml").unwrap_err();
    let first = &e.0[0];
    assert_eq!(first.line, Some(8));
    assert_eq!(first.field, "services[0].real_servers[0].address");
}

/// UDP through NAT: port and address rewritten with a valid checksum both
/// ways; a datagram without a checksum (0) keeps none.
#[test]
fn nat_udp_both_ways() {
    let (rt, mut rig) = rig();
    let id = id_of_port(&rt, "nat-dns", "198.18.0.21", 5353);
    let rs_mac = mac_of(addr(NAT_RS));
    let q = udp_frame(CLIENT, 5000, VIP_NAT, 53, b"query");
    let o = rig.send(&q);
    assert_eq!(o.moved, new_flow(id, q.len(), 2));
    let s = sent(&o);
    assert_eq!(
        s.bytes,
        sent_as(udp_frame(CLIENT, 5000, NAT_RS, 5353, b"query"), rs_mac, 63)
    );
    assert!(l4_checksum_ok(&s.bytes, 14));

    let r = from_mac(udp_frame(NAT_RS, 5353, CLIENT, 5000, b"answer"), rs_mac);
    let o = rig.send(&r);
    assert_eq!(o.moved, reply(id, r.len()));
    let s = sent(&o);
    assert_eq!(
        s.bytes,
        sent_as(udp_frame(VIP_NAT, 53, CLIENT, 5000, b"answer"), GATEWAY_MAC, 63)
    );
    assert!(l4_checksum_ok(&s.bytes, 14));

    // No checksum: stays 0 (a rewritten 0 would be wrong, not absent).
    let mut q0 = udp_frame(CLIENT, 5001, VIP_NAT, 53, b"query");
    q0[40..42].copy_from_slice(&[0, 0]);
    let o = rig.send(&q0);
    assert_eq!(o.moved, new_flow(id, q0.len(), 2));
    let mut want = sent_as(udp_frame(CLIENT, 5001, NAT_RS, 5353, b"query"), rs_mac, 63);
    want[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(sent(&o).bytes, want);
    assert!(accounting_holds(rig.stats()));
}

/// A client that reuses its port for a new connection after the old one
/// closed is scheduled afresh: when the old server is now draining, the new
/// connection goes elsewhere ("draining" means no new flows, whatever tuple).
#[test]
fn reused_tuple_after_close_avoids_a_draining_server() {
    let (_rt, mut rig) = rig();
    let a = rig.forward(&syn(41100, 500));
    rig.forward(&tcp_frame_seq(
        CLIENT,
        41100,
        VIP,
        80,
        tcp::FIN | tcp::ACK,
        501,
        &[],
    ));
    let mut t = (*rig.shared.table.load_full()).clone();
    for b in t.backends.iter_mut() {
        if b.addr == u32::from(a) {
            b.state = ulvs::fwd::table::BackendState::Draining;
        }
    }
    // Rebuild the service's Maglev table without the drained server, as
    // the slow path would.
    let drained = t.backends.iter().position(|b| b.addr == u32::from(a)).unwrap() as u32;
    for s in t.services.iter_mut() {
        if let Some(pos) = s.members.iter().position(|&m| m == drained) {
            let other = (0..s.members.len()).find(|&i| i != pos).unwrap();
            let slots = s.maglev.slots().iter().map(|e| match e {
                Some(m) if m.index() == pos => ulvs::fwd::maglev::Member::new(other),
                e => *e,
            });
            s.maglev = ulvs::fwd::maglev::MaglevTable::from_slots(slots.collect());
        }
    }
    rig.publish(t);
    rig.now += 50;
    let o = rig.send(&syn(41100, 90_000));
    let b = server_of(&sent(&o).bytes[0..6]);
    assert_ne!(
        b, a,
        "a new connection on a reused tuple must avoid the draining server"
    );
}

// ---------------------------------------------------------------------------
// 6. Review defects (issue 8 §5): each test failed on the code before its fix.

/// A partial checksum is completed over the IP packet, not over the
/// Ethernet padding after it, and the padding is not encapsulated.
#[test]
fn tun_partial_checksum_ignores_ethernet_padding() {
    let (rt, mut rig) = rig();
    let id = id_of(&rt, "tun-web", "198.18.0.31");
    let full = tcp_frame(CLIENT, 40005, VIP_TUN, 80, tcp::ACK | tcp::PSH, b"hi");
    let (mut f, vnet) = partial_tcp(full.clone());
    // A 56-byte frame padded to the Ethernet minimum with non-zero bytes.
    f.resize(64, 0xee);
    let o = rig.send_with(&f, RxMeta::default(), vnet);
    assert_eq!(o.moved, new_flow(id, f.len(), 1));
    let s = sent(&o);
    assert!(l4_checksum_ok(&s.bytes, 34), "inner checksum over the IP length");
    assert_eq!(&s.bytes[34..], &full[14..], "no padding inside the tunnel");
    assert_eq!(
        &s.bytes[..34],
        &outer(full.len() - 14, true, be16(&s.bytes, 18))[..]
    );
}

/// NAT: an ICMP error forwarded to a server is routed, so its TTL drops by
/// one like every other NAT packet; one that arrives with TTL 1 is dropped
/// as `ttl_exceeded`.
#[test]
fn nat_icmp_error_to_server_decrements_ttl() {
    let (_, mut rig) = rig();
    rig.send(&tcp_frame(CLIENT, 40000, VIP_NAT, 80, tcp::SYN, &[]));
    let err = icmp_error_to(VIP_NAT, 80, 40000);
    let s = rig.forward_any(&err);
    assert_eq!(s.bytes[22], err[22] - 1, "TTL decremented");
    assert!(ipv4_checksum_ok(&s.bytes, 14));
    let mut expiring = err.clone();
    expiring[22] = 1;
    refresh_ipv4_checksum(&mut expiring);
    let o = rig.send(&expiring);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("ttl_exceeded"));
    assert!(accounting_holds(rig.stats()));
}

/// NAT: an ICMP error from a server that arrives with TTL 1 is dropped as
/// `ttl_exceeded` (it was counted as `truncated_l4`).
#[test]
fn nat_icmp_from_server_expired_ttl_is_named() {
    let (_, mut rig) = rig();
    let rs_mac = mac_of(addr(NAT_RS));
    let q = udp_frame(CLIENT, 5001, VIP_NAT, 53, b"query");
    let got = rig.forward_any(&q).bytes;
    let mut err = from_mac(
        icmp_frame(NAT_RS, CLIENT, icmp::DEST_UNREACHABLE, 3, [0; 4], &quote_of(&got)),
        rs_mac,
    );
    err[22] = 1;
    refresh_ipv4_checksum(&mut err);
    let o = rig.send(&err);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, dropped("ttl_exceeded"));
}

/// TUN on a link with a 65,536-byte MTU (loopback's): a 65,516-byte packet
/// passes the MTU check, but its outer length (65,536) does not fit the
/// 16-bit field: a counted drop, never a wrapped length on the wire.
#[test]
fn tun_outer_length_over_65535_is_a_counted_drop() {
    let (_, mut t) = modes();
    t.mtu = 65_536;
    let shared = std::sync::Arc::new(ulvs::dataplane::worker::Shared::new(t));
    let stats = std::sync::Arc::new(ulvs::dataplane::stats::WorkerStats::default());
    let dev = ulvs::io::mem::MemDevice::new(2, 70_000);
    let mut w = ulvs::dataplane::worker::Worker::new(dev, 64, shared, stats);
    let f = tcp_frame(CLIENT, 40006, VIP_TUN, 80, tcp::ACK, &vec![7; 65_516 - 40]);
    assert_eq!(be16(&f, 16), 65_516);
    let before = snapshot(w.stats());
    assert!(w.device().push_rx(&f, RxMeta::default(), VnetHdr::default()));
    assert_eq!(w.poll_once(1000).unwrap(), 1);
    let sent: Vec<_> = w.device().sent.drain(..).collect();
    assert!(sent.is_empty(), "sent {} frame(s)", sent.len());
    let m = diff(&before, &snapshot(w.stats()));
    assert_eq!(m.get("drops.length_overflow"), Some(&1), "{m:?}");
}
