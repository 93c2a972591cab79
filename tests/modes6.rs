//! Worker-level tests of IPv6 direct routing: TCP and UDP to an IPv6 VIP
//! leave for a server's MAC with nothing but the MACs changed, flows stick
//! to their server, every malformed class is counted under its own name,
//! and IPv6 stays the kernel's when no IPv6 service is configured.
//!
//! The IPv6 services are added to the [`TOPOLOGY`] table by hand (the
//! config does not take IPv6 addresses yet) with the members and Maglev
//! table of its `web` and `dns` services, so their servers' MACs (made by
//! `mac_of`) name the server a frame went to.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use ulvs::fwd::table::{FwdTable, ServiceFwd6};
use ulvs::wire::builder::{Ext6, PacketBuilder6, DIRECTOR_MAC};
use ulvs::wire::ipv6::next_header;
use ulvs::wire::tcp;

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 7);

/// [`TOPOLOGY`] plus IPv6 `web` (TCP :80) and `dns` (UDP :53) on [`VIP6`].
fn table6() -> FwdTable {
    let mut t = topology_table();
    let of = |t: &FwdTable, port: u16, proto: u8| {
        let i = t.find_service(VIP, proto, port).unwrap();
        t.services[i].clone()
    };
    for (port, proto) in [(80u16, 6u8), (53, 17)] {
        let s = of(&t, port, proto);
        t.services6.push(ServiceFwd6 {
            vip: u128::from(VIP6),
            port,
            proto,
            mode: ulvs::fwd::table::Mode::Dr,
            maglev: s.maglev,
            members: s.members,
            client_affinity: false,
        });
    }
    t.sort();
    t
}

fn b6(sport_client: Ipv6Addr) -> PacketBuilder6 {
    PacketBuilder6::new(sport_client, VIP6)
}

/// The frame as a DR director sends it: MACs replaced, every other byte kept.
fn dr6(input: &[u8], server: Ipv4Addr) -> Vec<u8> {
    let mut v = input.to_vec();
    v[0..6].copy_from_slice(&mac_of(server));
    v[6..12].copy_from_slice(&DIRECTOR_MAC);
    v
}

fn servers() -> BTreeSet<Ipv4Addr> {
    SERVERS.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn tcp_to_v6_vip_goes_to_a_server_mac() {
    let mut rig = Rig::new(table6(), 1024);
    let f = b6(CLIENT6).tcp(40000, 80, tcp::SYN, &[]);
    let o = rig.send(&f);
    let sent = o.sent.expect("forwarded");
    let server = server_of(&sent.bytes[0..6]);
    assert!(servers().contains(&server), "{server}");
    assert_eq!(sent.bytes, dr6(&f, server));
    assert_eq!(o.moved["forwarded"], 1);
    assert_eq!(o.moved["frames_seen"], 1);
    assert_eq!(o.moved["flows"], 1);
    assert_eq!(o.moved["bytes_forwarded"], f.len() as i64);
    assert!(o.moved.keys().all(|k| !k.starts_with("drops.")), "{:?}", o.moved);
    // Its ACK and data follow the same server, and no new flow appears.
    for flags in [tcp::ACK, tcp::ACK | tcp::PSH, tcp::FIN | tcp::ACK] {
        let f = b6(CLIENT6).tcp(40000, 80, flags, b"data");
        let o = rig.send(&f);
        assert_eq!(o.sent.unwrap().bytes, dr6(&f, server));
        assert!(!o.moved.contains_key("flows"));
    }
    assert!(accounting_holds(rig.stats()));
}

#[test]
fn udp_to_v6_vip_and_extension_headers() {
    let mut rig = Rig::new(table6(), 1024);
    let f = b6(CLIENT6).udp(5353, 53, b"query");
    let server = rig.forward(&f);
    assert!(servers().contains(&server));
    // Destination options and an atomic fragment header before UDP: the
    // walk finds the ports, so the same flow meets the same server.
    let f = b6(CLIENT6)
        .ext(Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]))
        .ext(Ext6::Fragment {
            offset: 0,
            more: false,
            ident: 9,
        })
        .udp(5353, 53, b"query");
    let o = rig.send(&f);
    assert_eq!(o.sent.unwrap().bytes, dr6(&f, server));
    assert!(!o.moved.contains_key("flows"));
}

#[test]
fn v6_flows_stick_and_spread() {
    // 16384 IPv4 flows bring 2048 IPv6 ones (256 buckets): 300 flows then
    // never fill a bucket, whatever the random hash seed (with 128 buckets
    // one overflowed in about 1 run in 12 and a flow was evicted).
    let mut rig = Rig::new(table6(), 16384);
    let mut first: BTreeMap<(u16, u16), Ipv4Addr> = BTreeMap::new();
    for round in 0..3 {
        for i in 0..300u16 {
            // Clients differ in address (low 16 bits) and port.
            let client = Ipv6Addr::from(u128::from(CLIENT6) + u128::from(i % 37));
            let flags = if round == 0 { tcp::SYN } else { tcp::ACK };
            let s = rig.forward(&b6(client).tcp(20000 + i, 80, flags, &[]));
            let e = first.entry((i % 37, i)).or_insert(s);
            assert_eq!(*e, s, "flow {i} moved in round {round}");
        }
    }
    let mut per: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for s in first.values() {
        *per.entry(*s).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    assert!(per.values().all(|&n| n >= 50), "{per:?}");
    assert_eq!(rig.worker.flow_count(), 300);
}

/// Every malformed class to the VIP moves exactly its own drop counter.
#[test]
fn v6_malformed_classes_counted_by_name() {
    let mut rig = Rig::new(table6(), 1024);
    let ok = b6(CLIENT6).tcp(40000, 80, tcp::SYN, &[]);
    let set_plen = |mut f: Vec<u8>, v: u16| {
        f[18..20].copy_from_slice(&v.to_be_bytes());
        f
    };
    let mut bad_version = ok.clone();
    bad_version[14] = 0x45;
    let mut dest_opts_9 = b6(CLIENT6);
    for _ in 0..9 {
        dest_opts_9 = dest_opts_9.ext(Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]));
    }
    // A destination-options header claiming 2 KiB in a short packet.
    let trunc_ext = b6(CLIENT6).ext(Ext6::Raw {
        kind: next_header::DEST_OPTS,
        bytes: vec![0, 255, 1, 4, 0, 0, 0, 0],
    });
    let jumbo = set_plen(
        b6(CLIENT6)
            .ext(Ext6::HopByHop(vec![0xc2, 4, 0, 0, 0x10, 0]))
            .tcp(40000, 80, tcp::SYN, &[]),
        0,
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("v6_truncated", ok[..14 + 30].to_vec()),
        ("v6_bad_version", bad_version),
        ("v6_bad_payload_length", set_plen(ok.clone(), 2000)),
        ("v6_jumbo", jumbo),
        (
            "v6_hop_by_hop_not_first",
            b6(CLIENT6)
                .ext(Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]))
                .ext(Ext6::HopByHop(vec![1, 4, 0, 0, 0, 0]))
                .tcp(40000, 80, tcp::SYN, &[]),
        ),
        ("v6_ext_chain_too_long", dest_opts_9.tcp(40000, 80, tcp::SYN, &[])),
        ("v6_truncated_ext_header", trunc_ext.ip(next_header::TCP, &[])),
        (
            "v6_bad_auth_header",
            b6(CLIENT6)
                .ext(Ext6::Raw {
                    kind: next_header::AUTH,
                    bytes: vec![0, 0, 0, 0, 0, 0, 0, 0],
                })
                .tcp(40000, 80, tcp::SYN, &[]),
        ),
        (
            "v6_duplicate_fragment",
            b6(CLIENT6)
                .ext(Ext6::Fragment {
                    offset: 0,
                    more: false,
                    ident: 1,
                })
                .ext(Ext6::Fragment {
                    offset: 0,
                    more: false,
                    ident: 1,
                })
                .tcp(40000, 80, tcp::SYN, &[]),
        ),
        ("v6_truncated_l4", b6(CLIENT6).ip(next_header::TCP, &[0; 12])),
        (
            "v6_fragment_no_transport",
            b6(CLIENT6)
                .ext(Ext6::Fragment {
                    offset: 0,
                    more: true,
                    ident: 2,
                })
                .ip(next_header::TCP, &[0; 8]),
        ),
        (
            "v6_fragment",
            b6(CLIENT6)
                .ext(Ext6::Fragment {
                    offset: 64,
                    more: false,
                    ident: 3,
                })
                .ip(next_header::TCP, &[0; 8]),
        ),
        ("v6_icmp", b6(CLIENT6).icmpv6(128, 0, [0, 1, 0, 1], b"ping")),
        ("no_service", b6(CLIENT6).tcp(40000, 443, tcp::SYN, &[])),
        (
            "not_vip",
            PacketBuilder6::new(CLIENT6, Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2)).tcp(
                40000,
                80,
                tcp::SYN,
                &[],
            ),
        ),
    ];
    for (name, f) in cases {
        let o = rig.send(&f);
        assert!(o.sent.is_none(), "{name}: sent");
        let want = BTreeMap::from([("frames_seen".to_string(), 1), (format!("drops.{name}"), 1)]);
        assert_eq!(o.moved, want, "{name}");
    }
    // Clients are unaffected: a good frame still goes through.
    rig.forward(&ok);
    assert!(accounting_holds(rig.stats()));
}

/// Without IPv6 services IPv6 stays the kernel's (`not_ipv4`, as before),
/// and IPv4 goes on as usual next to IPv6 services.
#[test]
fn v6_without_services_and_ipv4_alongside() {
    let mut rig = Rig::new(topology_table(), 1024);
    let o = rig.send(&b6(CLIENT6).tcp(40000, 80, tcp::SYN, &[]));
    assert!(o.sent.is_none());
    assert_eq!(o.moved["drops.not_ipv4"], 1);

    let mut rig = Rig::new(table6(), 1024);
    let s4 = rig.forward(&tcp_to_vip(40000, 80, tcp::SYN));
    let s6 = rig.forward(&b6(CLIENT6).tcp(40000, 80, tcp::SYN, &[]));
    assert!(servers().contains(&s4) && servers().contains(&s6));
    assert_eq!(rig.worker.flow_count(), 2);
}

// ---------------------------------------------------------------------------
// NAT and TUN over IPv6, and ICMPv6 Packet Too Big. Every frame the
// director emits is parsed by etherparse (an independent parser) and its
// checksums computed by etherparse from the fields it parsed.

use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use ulvs::fwd::maglev::{MaglevTable, Member};
use ulvs::fwd::table::{Backend6, BackendFwd, BackendState, Mode};
use ulvs::io::{RxMeta, VnetHdr};

const VIP_NAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
const VIP_TUN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 3);
const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const NAT_SERVERS6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x21),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x22),
];
const TUN_SERVERS6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x31),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x32),
];
const NAT_PORT: u16 = 8080;

/// An IPv6 server's MAC: `02:66` and the address's last four bytes.
fn mac6(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x66, o[12], o[13], o[14], o[15]]
}

/// [`table6`] plus a NAT service (TCP and UDP :80 -> the servers' :8080) on
/// [`VIP_NAT6`] and a TUN service (TCP :80) on [`VIP_TUN6`], two servers
/// each, on the on-link prefix 2001:db8:1::/64; clients are behind the
/// router (`ROUTER_MAC`). Link MTU `mtu`.
fn table6_modes(mtu: u32) -> FwdTable {
    let mut t = table6();
    t.mtu = mtu;
    t.director_ip6 = u128::from(DIRECTOR6);
    t.gateway6_mac = Some(ROUTER_MAC);
    t.onlink6 = (
        u128::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0)),
        !0u128 << 64,
    );
    t.backends6 = vec![Backend6::default(); t.backends.len()];
    let add = |t: &mut FwdTable, vip: Ipv6Addr, proto: u8, mode: Mode, servers: [Ipv6Addr; 2], port: u16| {
        let mut members = Vec::new();
        for s in servers {
            let id = t.backends.len() as u32;
            t.backends.push(BackendFwd {
                addr: 0,
                port,
                mac: Some(mac6(s)),
                state: BackendState::Up,
                svc_vip: 0,
                svc_port: 80,
                mode,
            });
            t.backends6.push(Backend6 {
                addr: u128::from(s),
                svc_vip: u128::from(vip),
            });
            if mode == Mode::Nat {
                t.nat_backends6.push(u128::from(s));
            }
            t.neighbours6.push((u128::from(s), mac6(s)));
            members.push(id);
        }
        t.services6.push(ServiceFwd6 {
            vip: u128::from(vip),
            port: 80,
            proto,
            mode,
            maglev: MaglevTable::from_slots((0..13).map(|i| Member::new(i % 2)).collect()),
            members,
            client_affinity: false,
        });
    };
    add(&mut t, VIP_NAT6, 6, Mode::Nat, NAT_SERVERS6, NAT_PORT);
    add(&mut t, VIP_NAT6, 17, Mode::Nat, NAT_SERVERS6, NAT_PORT);
    add(&mut t, VIP_TUN6, 6, Mode::Tun, TUN_SERVERS6, 0);
    t.nat_backends6.sort();
    t.nat_backends6.dedup();
    t.neighbours6.sort();
    t.neighbours6.dedup();
    t.sort();
    t
}

/// What etherparse reads in an IPv6 frame the director sent.
#[derive(Debug)]
struct Parsed6 {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    /// The upper-layer protocol after the extension headers.
    protocol: u8,
    /// The IPv6 payload length field.
    payload_len: u16,
    /// Source and destination port (TCP/UDP).
    ports: Option<(u16, u16)>,
    /// The transport checksum field equals the one etherparse computes.
    checksum_ok: bool,
}

/// Parse `bytes` (an Ethernet frame or, `ip_only`, an IPv6 packet) with
/// etherparse and check the transport checksum with its computation.
fn parse6(bytes: &[u8], ip_only: bool) -> Parsed6 {
    let p = if ip_only {
        SlicedPacket::from_ip(bytes)
    } else {
        SlicedPacket::from_ethernet(bytes)
    }
    .unwrap_or_else(|e| panic!("etherparse refused {bytes:02x?}: {e:?}"));
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6: {bytes:02x?}");
    };
    let h = ip.header();
    let (src, dst) = (h.source(), h.destination());
    let (ports, checksum_ok) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let c = t
                .to_header()
                .calc_checksum_ipv6_raw(src, dst, t.payload())
                .unwrap();
            (Some((t.source_port(), t.destination_port())), c == t.checksum())
        }
        Some(TransportSlice::Udp(u)) => {
            let c = u
                .to_header()
                .calc_checksum_ipv6_raw(src, dst, u.payload())
                .unwrap();
            (Some((u.source_port(), u.destination_port())), c == u.checksum())
        }
        Some(TransportSlice::Icmpv6(m)) => {
            let c = m.icmp_type().calc_checksum(src, dst, m.payload()).unwrap();
            (None, c == m.checksum())
        }
        _ => (None, true),
    };
    let (dst_mac, src_mac) = if ip_only {
        ([0; 6], [0; 6])
    } else {
        (bytes[0..6].try_into().unwrap(), bytes[6..12].try_into().unwrap())
    };
    Parsed6 {
        dst_mac,
        src_mac,
        src: src.into(),
        dst: dst.into(),
        hop_limit: h.hop_limit(),
        protocol: ip.payload().ip_number.0,
        payload_len: h.payload_length(),
        ports,
        checksum_ok,
    }
}

fn nat_server_of(a: Ipv6Addr) -> usize {
    NAT_SERVERS6
        .iter()
        .position(|s| *s == a)
        .unwrap_or_else(|| panic!("{a} is not a NAT server"))
}

#[test]
fn nat6_to_server_and_replies_back() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    let syn = PacketBuilder6::new(CLIENT6, VIP_NAT6).tcp(40000, 80, tcp::SYN, &[]);
    let o = rig.send(&syn);
    let sent = o.sent.expect("forwarded");
    let p = parse6(&sent.bytes, false);
    let server = NAT_SERVERS6[nat_server_of(p.dst)];
    assert_eq!(p.dst_mac, mac6(server));
    assert_eq!(p.src_mac, DIRECTOR_MAC);
    assert_eq!((p.src, p.ports), (CLIENT6, Some((40000, NAT_PORT))));
    assert_eq!(p.hop_limit, 63);
    assert!(p.checksum_ok, "{p:?}");
    assert_eq!(sent.bytes.len(), syn.len());
    assert_eq!(o.moved["forwarded"], 1);
    // The flow and its reply key (two ways, as for IPv4 NAT).
    assert_eq!(o.moved["flows"], 2);

    // The server's SYN-ACK goes back to the client from VIP:80, through
    // the router, with data and an ACK after it on the same flow.
    for (flags, data) in [
        (tcp::SYN | tcp::ACK, &b""[..]),
        (tcp::ACK | tcp::PSH, b"hello over v6"),
    ] {
        let reply = PacketBuilder6::new(server, CLIENT6)
            .macs(DIRECTOR_MAC, mac6(server))
            .tcp(NAT_PORT, 40000, flags, data);
        let o = rig.send(&reply);
        let sent = o.sent.expect("reply sent");
        let p = parse6(&sent.bytes, false);
        assert_eq!(p.dst_mac, ROUTER_MAC);
        assert_eq!(p.src_mac, DIRECTOR_MAC);
        assert_eq!((p.src, p.dst), (VIP_NAT6, CLIENT6));
        assert_eq!(p.ports, Some((80, 40000)));
        assert_eq!(p.hop_limit, 63);
        assert!(p.checksum_ok, "{p:?}");
        assert_eq!(o.moved["forwarded"], 1);
        assert!(!o.moved.contains_key("flows"), "{:?}", o.moved);
    }
    let ack = PacketBuilder6::new(CLIENT6, VIP_NAT6).tcp(40000, 80, tcp::ACK, b"GET /");
    let p = parse6(&rig.forward_any(&ack).bytes, false);
    assert_eq!(p.dst, server);
    assert!(p.checksum_ok);
    assert!(accounting_holds(rig.stats()));
}

/// UDP behind extension headers: the walk finds the transport header, so
/// the port and checksum are rewritten where they are.
#[test]
fn nat6_udp_after_extension_headers() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    let f = PacketBuilder6::new(CLIENT6, VIP_NAT6)
        .ext(Ext6::HopByHop(vec![1, 4, 0, 0, 0, 0]))
        .ext(Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]))
        .udp(5353, 80, b"query");
    let p = parse6(&rig.forward_any(&f).bytes, false);
    let server = NAT_SERVERS6[nat_server_of(p.dst)];
    assert_eq!(p.protocol, 17);
    assert_eq!(p.ports, Some((5353, NAT_PORT)));
    assert!(p.checksum_ok, "{p:?}");
    let reply = PacketBuilder6::new(server, CLIENT6)
        .macs(DIRECTOR_MAC, mac6(server))
        .udp(NAT_PORT, 5353, b"answer");
    let p = parse6(&rig.forward_any(&reply).bytes, false);
    assert_eq!((p.src, p.ports), (VIP_NAT6, Some((80, 5353))));
    assert!(p.checksum_ok, "{p:?}");
}

/// A partial checksum (vnet NEEDS_CSUM, as GRO'd frames from AF_PACKET
/// carry) stays a valid pseudo-header sum: completed over the bytes as the
/// kernel would, it is the full checksum etherparse computes.
#[test]
fn nat6_partial_checksum_stays_right() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    let mut f = PacketBuilder6::new(CLIENT6, VIP_NAT6).tcp(40001, 80, tcp::ACK, b"partial");
    // Replace the full checksum with the pseudo-header sum (not inverted).
    let l4 = 14 + 40;
    let len = f.len() - l4;
    let mut acc: u32 = 6 + len as u32;
    for c in f[22..54].chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    f[l4 + 16..l4 + 18].copy_from_slice(&(acc as u16).to_be_bytes());
    let vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let mut sent = rig.run(&f, RxMeta::default(), vnet).expect("sent");
    assert!(sent.vnet.needs_csum());
    // Complete it as the kernel would: sum from csum_start, field included.
    let mut acc: u32 = 0;
    for c in sent.bytes[l4..].chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    sent.bytes[l4 + 16..l4 + 18].copy_from_slice(&(!(acc as u16)).to_be_bytes());
    let p = parse6(&sent.bytes, false);
    assert_eq!(p.ports, Some((40001, NAT_PORT)));
    assert!(p.checksum_ok, "{p:?}");
}

#[test]
fn nat6_hop_limit_and_unknown_replies_are_named_drops() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    for hl in [1u8, 0] {
        let f = PacketBuilder6::new(CLIENT6, VIP_NAT6)
            .hop_limit(hl)
            .tcp(40002, 80, tcp::SYN, &[]);
        let o = rig.send(&f);
        assert!(o.sent.is_none());
        assert_eq!(o.moved["drops.hop_limit_exceeded"], 1, "{:?}", o.moved);
    }
    // A hop limit of 2 still passes (with 1 left).
    let f = PacketBuilder6::new(CLIENT6, VIP_NAT6)
        .hop_limit(2)
        .tcp(40003, 80, tcp::SYN, &[]);
    assert_eq!(parse6(&rig.forward_any(&f).bytes, false).hop_limit, 1);
    // From a NAT server, but no flow of it: not sent to anyone.
    let f = PacketBuilder6::new(NAT_SERVERS6[0], CLIENT6).tcp(NAT_PORT, 1, tcp::ACK, &[]);
    let o = rig.send(&f);
    assert!(o.sent.is_none());
    assert_eq!(
        o.moved,
        BTreeMap::from([
            ("frames_seen".to_string(), 1),
            ("drops.nat_no_flow".to_string(), 1)
        ])
    );
    assert!(accounting_holds(rig.stats()));
}

/// TUN: the client's packet, unchanged, inside an outer IPv6 header
/// (next header 41) from the director to the server.
#[test]
fn tun6_encapsulates_in_ipv6() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    let f = PacketBuilder6::new(CLIENT6, VIP_TUN6)
        .class_flow(0x28, 0xbeef)
        .tcp(40000, 80, tcp::SYN, &[]);
    let o = rig.send(&f);
    let sent = o.sent.expect("sent");
    let p = parse6(&sent.bytes, false);
    assert!(TUN_SERVERS6.contains(&p.dst), "{p:?}");
    assert_eq!(p.dst_mac, mac6(p.dst));
    assert_eq!(p.src_mac, DIRECTOR_MAC);
    assert_eq!((p.src, p.protocol, p.hop_limit), (DIRECTOR6, 41, 64));
    assert_eq!(usize::from(p.payload_len), f.len() - 14);
    assert_eq!(sent.bytes.len(), f.len() + 40);
    assert_eq!(&sent.bytes[14 + 40..], &f[14..], "inner packet changed");
    // The outer header carries the inner traffic class and flow label.
    assert_eq!(&sent.bytes[14..18], &f[14..18]);
    let inner = parse6(&sent.bytes[14 + 40..], true);
    assert_eq!((inner.src, inner.dst, inner.hop_limit), (CLIENT6, VIP_TUN6, 64));
    assert!(inner.checksum_ok);
    assert_eq!(o.moved["forwarded"], 1);
    // The same flow stays on its server.
    let server = p.dst;
    for _ in 0..3 {
        let f = PacketBuilder6::new(CLIENT6, VIP_TUN6).tcp(40000, 80, tcp::ACK, b"x");
        assert_eq!(parse6(&rig.forward_any(&f).bytes, false).dst, server);
    }
}

/// TUN without an IPv6 address of the director's own (none learnt yet):
/// nothing is sent with an outer source of `::`; the frame is a named drop.
#[test]
fn tun6_without_a_director_address_is_a_named_drop() {
    let mut t = table6_modes(1500);
    t.director_ip6 = 0;
    let mut rig = Rig::new(t, 1024);
    let f = PacketBuilder6::new(CLIENT6, VIP_TUN6).tcp(40000, 80, tcp::SYN, &[]);
    let o = rig.send(&f);
    assert!(o.sent.is_none());
    assert_eq!(o.moved["drops.next_hop_unknown"], 1, "{:?}", o.moved);
}

/// The largest packet that fits the tunnel (MTU - 40) goes through; one
/// byte more is answered with an ICMPv6 Packet Too Big (MTU - 40) from the
/// VIP to the client, through the MAC it came from, quoting as much of the
/// packet as keeps the error within 1280 bytes.
#[test]
fn tun6_packet_too_big_to_the_client() {
    let mtu = 1500usize;
    let mut rig = Rig::new(table6_modes(mtu as u32), 1024);
    let fits = PacketBuilder6::new(CLIENT6, VIP_TUN6).tcp(40000, 80, tcp::ACK, &vec![7; mtu - 40 - 60]);
    let sent = rig.forward_any(&fits);
    assert_eq!(sent.bytes.len(), 14 + mtu);
    let big = PacketBuilder6::new(CLIENT6, VIP_TUN6).tcp(40000, 80, tcp::ACK, &vec![7; mtu - 40 - 60 + 1]);
    let o = rig.send(&big);
    let sent = o.sent.expect("the error is sent");
    let p = parse6(&sent.bytes, false);
    assert_eq!(p.dst_mac, ROUTER_MAC);
    assert_eq!(p.src_mac, DIRECTOR_MAC);
    assert_eq!((p.src, p.dst, p.protocol), (VIP_TUN6, CLIENT6, 58));
    assert!(p.checksum_ok, "ICMPv6 checksum");
    assert_eq!(sent.bytes.len(), 14 + 1280);
    assert_eq!(usize::from(p.payload_len), 1280 - 40);
    let m = etherparse::Icmpv6Slice::from_slice(&sent.bytes[14 + 40..]).unwrap();
    assert_eq!(
        m.icmp_type(),
        Icmpv6Type::PacketTooBig {
            mtu: (mtu - 40) as u32
        }
    );
    assert_eq!(m.payload(), &big[14..14 + 1280 - 48], "the quote");
    assert_eq!(
        o.moved,
        BTreeMap::from([
            ("frames_seen".to_string(), 1),
            ("drops.tun_packet_too_big".to_string(), 1)
        ])
    );
    assert!(accounting_holds(rig.stats()));
}

/// A small link MTU: the whole packet fits in the quote.
#[test]
fn tun6_packet_too_big_quotes_a_short_packet_whole() {
    let mut rig = Rig::new(table6_modes(1000), 1024);
    let big = PacketBuilder6::new(CLIENT6, VIP_TUN6).tcp(40000, 80, tcp::ACK, &vec![1; 1000 - 60 - 40 + 1]);
    let sent = rig.send(&big).sent.expect("the error is sent");
    let p = parse6(&sent.bytes, false);
    assert!(p.checksum_ok);
    let m = etherparse::Icmpv6Slice::from_slice(&sent.bytes[14 + 40..]).unwrap();
    assert_eq!(m.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 960 });
    assert_eq!(m.payload(), &big[14..]);
}

/// A GSO super-frame whose segments fit the tunnel is cut into segments,
/// each in its own outer header with a complete inner checksum; one whose
/// segments do not fit gets Packet Too Big.
#[test]
fn tun6_segments_gso_super_frames() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    let mss = 1500 - 40 - 40 - 20;
    let data: Vec<u8> = (0..3 * mss + 100).map(|i| i as u8).collect();
    let f = PacketBuilder6::new(CLIENT6, VIP_TUN6)
        .seq(1000)
        .tcp(40000, 80, tcp::ACK | tcp::PSH, &data);
    let vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV6,
        gso_size: mss as u16,
        ..VnetHdr::default()
    };
    let (moved, sent) = rig.send_all(&f, RxMeta::default(), vnet);
    assert_eq!(sent.len(), 4, "{moved:?}");
    let mut got = Vec::new();
    for (i, s) in sent.iter().enumerate() {
        let outer = parse6(&s.bytes, false);
        assert_eq!((outer.src, outer.protocol), (DIRECTOR6, 41));
        assert!(s.bytes.len() - 14 <= 1500);
        let inner = parse6(&s.bytes[54..], true);
        assert!(inner.checksum_ok, "segment {i}");
        let t = etherparse::TcpSlice::from_slice(&s.bytes[54 + 40..]).unwrap();
        assert_eq!(t.sequence_number(), 1000 + (i * mss) as u32);
        assert_eq!(t.psh(), i == 3);
        got.extend_from_slice(t.payload());
    }
    assert_eq!(got, data);
    assert_eq!(moved["tun_segmented"], 4);
    let vnet = VnetHdr {
        gso_size: mss as u16 + 1,
        ..vnet
    };
    let (moved, sent) = rig.send_all(&f, RxMeta::default(), vnet);
    assert_eq!(sent.len(), 1);
    assert_eq!(moved["drops.tun_packet_too_big"], 1);
    let m = etherparse::Icmpv6Slice::from_slice(&sent[0].bytes[54..]).unwrap();
    assert_eq!(m.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1460 });
}

/// IPv4 NAT next to IPv6 NAT: both families' flows in one worker, each
/// reply back on its own path.
#[test]
fn nat6_next_to_ipv4() {
    let mut rig = Rig::new(table6_modes(1500), 1024);
    let s4 = rig.forward(&tcp_to_vip(41000, 80, tcp::SYN));
    assert!(servers().contains(&s4));
    let p = parse6(
        &rig.forward_any(&PacketBuilder6::new(CLIENT6, VIP_NAT6).tcp(41000, 80, tcp::SYN, &[]))
            .bytes,
        false,
    );
    assert!(NAT_SERVERS6.contains(&p.dst));
    // The IPv4 DR flow, the IPv6 NAT flow and its reply key.
    assert_eq!(rig.worker.flow_count(), 3);
}
