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
    let mut rig = Rig::new(table6(), 4096);
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
