//! Worker-level tests of ICMPv6 and IPv6 fragments to a VIP, with
//! etherparse as the oracle (every emitted frame is parsed by it, and every
//! ICMPv6/UDP checksum is verified from the addresses it reads):
//!
//! * an echo request to an IPv6 VIP is answered (when `answer_ping`);
//! * an ICMPv6 error to a VIP (Packet Too Big, destination unreachable, time
//!   exceeded) reaches the server of the flow it quotes in DR, NAT and TUN;
//!   NAT rewrites the quote; an error about no known flow is a named drop;
//! * NAT: an error a server sends about a flow reaches its client from the
//!   VIP;
//! * later fragments follow their first fragment to its server in every
//!   mode (the datagram reassembles with a valid checksum behind NAT), a
//!   later fragment of an unknown datagram is a named drop;
//! * each malformed ICMPv6 class moves exactly its own counter.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use etherparse::{
    EtherType, Ethernet2HeaderSlice, Icmpv6Slice, Ipv6HeaderSlice, Ipv6Slice, UdpHeader, UdpHeaderSlice,
};
use ulvs::fwd::table::{Backend6, FwdTable, Mode, ServiceFwd6};
use ulvs::wire::builder::{Ext6, PacketBuilder6, DIRECTOR_MAC, ROUTER_MAC};
use ulvs::wire::icmpv6;
use ulvs::wire::ipv6::next_header;
use ulvs::wire::tcp;

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 7);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 2);
/// NAT maps the web service's port 80 to this port on the servers.
const RPORT: u16 = 8080;

/// The IPv6 address of the server whose IPv4 address is `a` (same last
/// octet, in the servers' on-link prefix 2001:db8:10::/64).
fn rip6(a: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, u16::from(a.octets()[3]))
}

/// [`TOPOLOGY`] plus IPv6 `web` (TCP :80) and `dns` (UDP :53) on [`VIP6`]
/// in `mode`, with everything NAT and TUN need: the servers' IPv6
/// addresses, the director's, the router as the IPv6 gateway; echo
/// answered.
fn table6(mode: Mode) -> FwdTable {
    let mut t = topology_table();
    t.answer_ping = true;
    t.backends6 = vec![Backend6::default(); t.backends.len()];
    for (port, proto) in [(80u16, 6u8), (53, 17)] {
        let i = t.find_service(VIP, proto, port).unwrap();
        let s = t.services[i].clone();
        for &id in &s.members {
            let b = &mut t.backends[id as usize];
            b.mode = mode;
            b.port = if mode == Mode::Nat && port == 80 { RPORT } else { 0 };
            let a = rip6(Ipv4Addr::from(b.addr));
            t.backends6[id as usize] = Backend6 {
                addr: u128::from(a),
                svc_vip: u128::from(VIP6),
            };
            if mode == Mode::Nat {
                t.nat_backends6.push(u128::from(a));
            }
        }
        t.services6.push(ServiceFwd6 {
            vip: u128::from(VIP6),
            port,
            proto,
            mode,
            maglev: s.maglev,
            members: s.members,
            client_affinity: false,
        });
    }
    t.nat_backends6.sort_unstable();
    t.nat_backends6.dedup();
    t.director_ip6 = u128::from(DIRECTOR6);
    t.gateway6_mac = Some(ROUTER_MAC);
    t.onlink6 = (
        u128::from(DIRECTOR6) & !0xffff_ffff_ffff_ffff,
        !0xffff_ffff_ffff_ffff,
    );
    t.mtu = 1500;
    t.sort();
    t
}

/// The server (by IPv4 address, as `mac_of` names it) a frame went to.
fn server(out: &[u8]) -> Ipv4Addr {
    server_of(&out[0..6])
}

/// Parse an emitted frame: Ethernet to a server's MAC from the director's,
/// EtherType IPv6.
fn eth_ipv6(out: &[u8]) -> &[u8] {
    let eth = Ethernet2HeaderSlice::from_slice(out).expect("ethernet");
    assert_eq!(eth.source(), DIRECTOR_MAC);
    assert_eq!(eth.ether_type(), EtherType::IPV6);
    &out[14..]
}

/// The ICMPv6 message of an IPv6 packet without extension headers, its
/// checksum verified from the addresses etherparse reads.
fn icmp_of(ip: &[u8]) -> (Ipv6HeaderSlice<'_>, Icmpv6Slice<'_>) {
    let h = Ipv6HeaderSlice::from_slice(ip).expect("ipv6");
    assert_eq!(h.next_header(), etherparse::IpNumber::IPV6_ICMP);
    let end = 40 + usize::from(h.payload_length());
    let m = Icmpv6Slice::from_slice(&ip[40..end]).expect("icmpv6");
    assert!(
        m.is_checksum_valid(h.source(), h.destination()),
        "ICMPv6 checksum"
    );
    (h, m)
}

/// The packet a server sends the client (VIP:80 -> client), as a router on
/// the way would quote it: its first `len` bytes.
fn quote(sport: u16, cport: u16, len: usize) -> Vec<u8> {
    let p = PacketBuilder6::new(VIP6, CLIENT6).tcp(sport, cport, tcp::ACK, &[0x5a; 1400]);
    p[14..14 + len].to_vec()
}

/// Establish flow CLIENT6:40000 -> VIP6:80; the server it went to.
fn open_flow(rig: &mut Rig, mode: Mode) -> Ipv4Addr {
    let o = rig.send(&PacketBuilder6::new(CLIENT6, VIP6).tcp(40000, 80, tcp::SYN, &[]));
    let sent = o
        .sent
        .unwrap_or_else(|| panic!("SYN not forwarded ({mode:?}): {:?}", o.moved));
    server(&sent.bytes)
}

#[test]
fn echo_to_v6_vip_is_answered() {
    let mut rig = Rig::new(table6(Mode::Dr), 1024);
    let req =
        PacketBuilder6::new(CLIENT6, VIP6).icmpv6(icmpv6::ECHO_REQUEST, 0, [0x12, 0x34, 0, 7], b"ping6");
    let o = rig.send(&req);
    let out = o.sent.expect("answered").bytes;
    let eth = Ethernet2HeaderSlice::from_slice(&out).unwrap();
    assert_eq!((eth.destination(), eth.source()), (ROUTER_MAC, DIRECTOR_MAC));
    let (h, m) = icmp_of(&out[14..]);
    assert_eq!(Ipv6Addr::from(h.source()), VIP6);
    assert_eq!(Ipv6Addr::from(h.destination()), CLIENT6);
    assert_eq!(h.hop_limit(), 64);
    assert_eq!(
        m.icmp_type(),
        etherparse::Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 0x1234, seq: 7 })
    );
    assert_eq!(m.payload(), b"ping6");
    assert_eq!(
        o.moved,
        moved(&[
            ("frames_seen", 1),
            ("forwarded", 1),
            ("echo_replies", 1),
            ("bytes_forwarded", req.len() as i64)
        ])
    );
    // Not answered when the config says so: a named drop.
    let mut t = table6(Mode::Dr);
    t.answer_ping = false;
    rig.publish(t);
    let o = rig.send(&req);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, moved(&[("frames_seen", 1), ("drops.v6_icmp", 1)]));
    assert!(accounting_holds(rig.stats()));
}

/// Each error kind, with its type, code and 4 bytes.
fn errors() -> Vec<(&'static str, u8, u8, [u8; 4])> {
    vec![
        ("packet too big", icmpv6::PACKET_TOO_BIG, 0, 1280u32.to_be_bytes()),
        (
            "port unreachable",
            icmpv6::DEST_UNREACHABLE,
            icmpv6::CODE_PORT_UNREACHABLE,
            [0; 4],
        ),
        ("time exceeded", icmpv6::TIME_EXCEEDED, 0, [0; 4]),
    ]
}

#[test]
fn errors_to_the_vip_reach_the_flows_server_in_every_mode() {
    for mode in [Mode::Dr, Mode::Nat, Mode::Tun] {
        let mut rig = Rig::new(table6(mode), 1024);
        let s = open_flow(&mut rig, mode);
        let rip = rip6(s);
        for (what, kind, code, rest) in errors() {
            // A full-size quote (1232 bytes: the error fills 1280) and a
            // short one.
            for qlen in [icmpv6::MAX_QUOTE_LEN, 48] {
                let q = quote(80, 40000, qlen);
                let e = PacketBuilder6::new(ROUTER6, VIP6)
                    .hop_limit(60)
                    .icmpv6(kind, code, rest, &q);
                let o = rig.send(&e);
                let out = o
                    .sent
                    .unwrap_or_else(|| panic!("{mode:?} {what}: {:?}", o.moved))
                    .bytes;
                assert_eq!(server(&out), s, "{mode:?} {what}: another server");
                let ip = eth_ipv6(&out);
                match mode {
                    Mode::Dr => assert_eq!(&out[12..], &e[12..], "DR changes the MACs only"),
                    Mode::Tun => {
                        let outer = Ipv6HeaderSlice::from_slice(ip).unwrap();
                        assert_eq!(outer.next_header(), etherparse::IpNumber::IPV6);
                        assert_eq!(Ipv6Addr::from(outer.source()), DIRECTOR6);
                        assert_eq!(Ipv6Addr::from(outer.destination()), rip);
                        assert_eq!(usize::from(outer.payload_length()), e.len() - 14);
                        assert_eq!(&ip[40..], &e[14..], "the error, whole, inside");
                    }
                    Mode::Nat => {
                        let (h, m) = icmp_of(ip);
                        assert_eq!(Ipv6Addr::from(h.source()), ROUTER6);
                        assert_eq!(Ipv6Addr::from(h.destination()), rip);
                        assert_eq!(h.hop_limit(), 59);
                        assert_eq!((m.type_u8(), m.code_u8(), m.bytes5to8()), (kind, code, rest));
                        // The quote now reads RIP:8080 -> client, the packet
                        // the server sent before NAT.
                        let qh = Ipv6HeaderSlice::from_slice(m.payload()).unwrap();
                        assert_eq!(Ipv6Addr::from(qh.source()), rip);
                        assert_eq!(Ipv6Addr::from(qh.destination()), CLIENT6);
                        let qp = &m.payload()[40..];
                        assert_eq!(&qp[0..2], &RPORT.to_be_bytes());
                        assert_eq!(&qp[2..4], &40000u16.to_be_bytes());
                        assert_eq!(&m.payload()[44..], &q[44..], "rest of the quote kept");
                    }
                }
                let global: BTreeMap<String, i64> = o
                    .moved
                    .clone()
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("backend["))
                    .collect();
                assert_eq!(
                    global,
                    moved(&[
                        ("frames_seen", 1),
                        ("forwarded", 1),
                        ("icmp_errors_forwarded", 1),
                        ("bytes_forwarded", e.len() as i64),
                    ]),
                    "{mode:?} {what}"
                );
            }
        }
        // An error about a flow the director does not know: named drop.
        let e = PacketBuilder6::new(ROUTER6, VIP6).icmpv6(
            icmpv6::PACKET_TOO_BIG,
            0,
            1280u32.to_be_bytes(),
            &quote(80, 40001, 200),
        );
        let o = rig.send(&e);
        assert!(o.sent.is_none());
        assert_eq!(
            o.moved,
            moved(&[("frames_seen", 1), ("drops.v6_icmp_no_flow", 1)]),
            "{mode:?}"
        );
        assert!(accounting_holds(rig.stats()));
    }
}

#[test]
fn nat_error_from_a_server_reaches_the_client_from_the_vip() {
    let mut rig = Rig::new(table6(Mode::Nat), 1024);
    let s = open_flow(&mut rig, Mode::Nat);
    let rip = rip6(s);
    // What the server got: client:40000 -> RIP:8080; it answers port
    // unreachable (say its socket closed) to the client.
    let got = PacketBuilder6::new(CLIENT6, rip).tcp(40000, RPORT, tcp::ACK, &[1; 100]);
    let e = PacketBuilder6::new(rip, CLIENT6)
        .macs(DIRECTOR_MAC, mac_of(s))
        .hop_limit(64)
        .icmpv6(
            icmpv6::DEST_UNREACHABLE,
            icmpv6::CODE_PORT_UNREACHABLE,
            [0; 4],
            &got[14..],
        );
    let o = rig.send(&e);
    let out = o.sent.unwrap_or_else(|| panic!("{:?}", o.moved)).bytes;
    let eth = Ethernet2HeaderSlice::from_slice(&out).unwrap();
    assert_eq!((eth.destination(), eth.source()), (ROUTER_MAC, DIRECTOR_MAC));
    let (h, m) = icmp_of(&out[14..]);
    assert_eq!(Ipv6Addr::from(h.source()), VIP6);
    assert_eq!(Ipv6Addr::from(h.destination()), CLIENT6);
    assert_eq!(h.hop_limit(), 63);
    let qh = Ipv6HeaderSlice::from_slice(m.payload()).unwrap();
    assert_eq!(Ipv6Addr::from(qh.source()), CLIENT6);
    assert_eq!(Ipv6Addr::from(qh.destination()), VIP6);
    assert_eq!(
        &m.payload()[40..44],
        &[&40000u16.to_be_bytes()[..], &80u16.to_be_bytes()[..]].concat()[..]
    );
    assert_eq!(o.moved["forwarded"], 1);
    assert!(o.moved.keys().all(|k| !k.starts_with("drops.")), "{:?}", o.moved);
    // About a connection the director never saw: named drop.
    let got = PacketBuilder6::new(CLIENT6, rip).tcp(40009, RPORT, tcp::ACK, &[]);
    let e = PacketBuilder6::new(rip, CLIENT6).icmpv6(icmpv6::DEST_UNREACHABLE, 4, [0; 4], &got[14..]);
    let o = rig.send(&e);
    assert!(o.sent.is_none());
    assert_eq!(
        o.moved,
        moved(&[("frames_seen", 1), ("drops.v6_icmp_no_flow", 1)])
    );
    assert!(accounting_holds(rig.stats()));
}

/// A UDP datagram to VIP6:53 of `len` bytes, fragmented at 1232-byte cuts
/// (each fragment fits a 1280 link with room for 6in6).
fn fragments(ident: u32, sport: u16, len: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let b = PacketBuilder6::new(CLIENT6, VIP6);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let dgram = b.udp_datagram(sport, 53, &data);
    let cuts: Vec<usize> = (1..).map(|k| k * 1232).take_while(|&c| c < dgram.len()).collect();
    let frames = b.fragments(next_header::UDP, &dgram, &cuts, ident);
    (dgram, frames)
}

#[test]
fn later_fragments_follow_the_first_in_every_mode() {
    for mode in [Mode::Dr, Mode::Nat, Mode::Tun] {
        let mut rig = Rig::new(table6(mode), 1024);
        let mut seen = std::collections::BTreeSet::new();
        // Datagrams of several clients ports: each whole at one server.
        for (n, sport) in (5000u16..5012).enumerate() {
            let (dgram, frames) = fragments(0x1000 + n as u32, sport, 3000);
            assert_eq!(frames.len(), 3);
            let mut s0 = None;
            let mut data = Vec::new();
            let mut dst = [0u8; 16];
            for (k, f) in frames.iter().enumerate() {
                let o = rig.send(f);
                let out = o
                    .sent
                    .unwrap_or_else(|| panic!("{mode:?} fragment {k}: {:?}", o.moved))
                    .bytes;
                let s = server(&out);
                assert_eq!(*s0.get_or_insert(s), s, "{mode:?}: fragment {k} went elsewhere");
                let mut ip = eth_ipv6(&out);
                if mode == Mode::Tun {
                    let outer = Ipv6HeaderSlice::from_slice(ip).unwrap();
                    assert_eq!(outer.next_header(), etherparse::IpNumber::IPV6);
                    assert_eq!(Ipv6Addr::from(outer.destination()), rip6(s));
                    ip = &ip[40..];
                    assert_eq!(ip, &f[14..]);
                }
                let p = Ipv6Slice::from_slice(ip).expect("fragment parses");
                assert!(p.is_payload_fragmented(), "{mode:?}: still a fragment");
                let h = p.header();
                dst = h.destination();
                match mode {
                    Mode::Dr => assert_eq!(&out[12..], &f[12..]),
                    Mode::Tun => {}
                    Mode::Nat => {
                        assert_eq!(Ipv6Addr::from(dst), rip6(s));
                        assert_eq!(h.hop_limit(), 63);
                    }
                }
                data.extend_from_slice(p.payload().payload);
                if k > 0 {
                    assert_eq!(o.moved["fragments_forwarded"], 1, "{mode:?}");
                }
            }
            seen.insert(s0.unwrap());
            // Reassembled behind the director: the datagram, with a UDP
            // checksum that verifies for the addresses the server sees.
            assert_eq!(data.len(), dgram.len());
            let u = UdpHeaderSlice::from_slice(&data).unwrap();
            let want = UdpHeader {
                source_port: u.source_port(),
                destination_port: u.destination_port(),
                length: u.length(),
                checksum: 0,
            }
            .calc_checksum_ipv6_raw(CLIENT6.octets(), dst, &data[8..])
            .unwrap();
            assert_eq!(
                u.checksum(),
                want,
                "{mode:?}: UDP checksum of the reassembled datagram"
            );
            assert_eq!(&data[8..], &dgram[8..]);
        }
        assert!(seen.len() > 1, "{mode:?}: 12 datagrams all at one server");
        // A later fragment of a datagram whose first was never seen.
        let (_, frames) = fragments(0xdead, 6000, 3000);
        let o = rig.send(&frames[1]);
        assert!(o.sent.is_none());
        assert_eq!(
            o.moved,
            moved(&[("frames_seen", 1), ("drops.v6_fragment", 1)]),
            "{mode:?}"
        );
        assert!(accounting_holds(rig.stats()));
    }
}

/// Fragments with extension headers after the fragment header (in the
/// first fragment only, as RFC 8200 puts them) still follow it.
#[test]
fn fragment_key_is_the_fragment_headers_next_header() {
    let mut rig = Rig::new(table6(Mode::Dr), 1024);
    let b = PacketBuilder6::new(CLIENT6, VIP6);
    let data = [9u8; 2000];
    let dgram = b.udp_datagram(7000, 53, &data);
    // Unfragmentable part: none; fragmentable: destination options + UDP.
    let mut fragable = Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]).emit(next_header::UDP);
    fragable.extend_from_slice(&dgram);
    let frames = b.fragments(next_header::DEST_OPTS, &fragable, &[1200], 77);
    let s = rig.forward(&frames[0]);
    let o = rig.send(&frames[1]);
    assert_eq!(server(&o.sent.expect("follows").bytes), s);
}

#[test]
fn malformed_icmp6_is_counted_by_name() {
    let mut rig = Rig::new(table6(Mode::Dr), 1024);
    let b = PacketBuilder6::new(ROUTER6, VIP6);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("v6_truncated_l4", b.ip(next_header::ICMPV6, &[1, 4, 0])),
        (
            "v6_icmp_bad_quote",
            b.icmpv6(icmpv6::PACKET_TOO_BIG, 0, [0, 0, 5, 0], &quote(80, 40000, 30)),
        ),
        (
            "v6_icmp_bad_quote",
            b.icmpv6(icmpv6::DEST_UNREACHABLE, 0, [0; 4], &{
                let mut q = quote(80, 40000, 60);
                q[0] = 0x45;
                q
            }),
        ),
        ("v6_icmp", b.icmpv6(200, 0, [0; 4], b"unknown")),
        ("v6_icmp", b.icmpv6(icmpv6::ECHO_REPLY, 0, [0; 4], b"pong")),
        // An echo with a routing header is not reflected.
        (
            "v6_icmp",
            PacketBuilder6::new(CLIENT6, VIP6)
                .ext(Ext6::Raw {
                    kind: next_header::ROUTING,
                    bytes: vec![0, 0, 0, 0, 0, 0, 0, 0],
                })
                .icmpv6(icmpv6::ECHO_REQUEST, 0, [0; 4], b"x"),
        ),
        // A quote of a UDP packet of no service of the VIP.
        (
            "no_service",
            b.icmpv6(icmpv6::DEST_UNREACHABLE, 4, [0; 4], &{
                let p = PacketBuilder6::new(VIP6, CLIENT6).udp(54, 5000, b"x");
                p[14..].to_vec()
            }),
        ),
        // A first fragment of an ICMPv6 message.
        ("v6_icmp", {
            let m = PacketBuilder6::new(CLIENT6, VIP6).icmpv6(icmpv6::ECHO_REQUEST, 0, [0; 4], &[0; 100]);
            PacketBuilder6::new(CLIENT6, VIP6).fragments(next_header::ICMPV6, &m[54..], &[64], 5)[0].clone()
        }),
    ];
    for (name, f) in cases {
        let o = rig.send(&f);
        assert!(o.sent.is_none(), "{name}: sent");
        let want = BTreeMap::from([("frames_seen".to_string(), 1), (format!("drops.{name}"), 1)]);
        assert_eq!(o.moved, want, "{name}");
    }
    // Clients are unaffected.
    let s = open_flow(&mut rig, Mode::Dr);
    let f = PacketBuilder6::new(CLIENT6, VIP6).tcp(40000, 80, tcp::ACK, b"x");
    assert_eq!(server(&rig.send(&f).sent.unwrap().bytes), s);
    assert!(accounting_holds(rig.stats()));
}
