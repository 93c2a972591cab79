//! Packet fixtures (STYLE habit 11): each case names an input frame, the
//! verdict (forwarded, or the drop counter that must move) and, when
//! forwarded, the output frame byte for byte. Every case runs through a real
//! `Worker<MemDevice>` on the table `build_table` makes of the test topology
//! (see `common::TOPOLOGY`), and asserts exactly which counters moved.
//!
//! Frames come from `tests/fixtures/*.hex` (commented hex) or are spelled out
//! as edits of those. The server a forwarded fixture goes to is Maglev's
//! choice (fixed permutations, fixed-seed flow hash), so it is part of the
//! fixture: if the hash or the permutation ever changes, the `.out.hex`
//! files and the `server` fields change with it.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::*;
use ulvs::control::publish::Runtime;
use ulvs::dataplane::classify::Reason;
use ulvs::fwd::table::{BackendFwd, BackendState, FwdTable, Mode, ServiceFwd};
use ulvs::io::{pkttype, RxMeta, VnetHdr};
use ulvs::wire::{checksum, tcp};

/// What must happen to a fixture's frame.
enum Verdict {
    /// Sent to `server` of `service` as `output`, as the first packet of a
    /// new flow.
    Forward {
        service: &'static str,
        server: &'static str,
        output: Vec<u8>,
    },
    /// Dropped, counted under this reason and nothing else.
    Drop(Reason),
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    meta: RxMeta,
    verdict: Verdict,
}

/// `base` with `bytes` written at `at`.
fn edit(base: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    f[at..at + bytes.len()].copy_from_slice(bytes);
    f
}

fn drop(name: &'static str, input: Vec<u8>, reason: Reason) -> Case {
    Case {
        name,
        input,
        meta: RxMeta::default(),
        verdict: Verdict::Drop(reason),
    }
}

fn drop_meta(name: &'static str, input: Vec<u8>, meta: RxMeta, reason: Reason) -> Case {
    Case {
        name,
        input,
        meta,
        verdict: Verdict::Drop(reason),
    }
}

fn forward(name: &'static str, service: &'static str, server: &'static str) -> Case {
    Case {
        name,
        input: hex_fixture(name),
        meta: RxMeta::default(),
        verdict: Verdict::Forward {
            service,
            server,
            output: hex_fixture(&format!("{name}.out")),
        },
    }
}

fn cases() -> Vec<Case> {
    // 58 bytes: Ethernet 0..14, IPv4 14..34, TCP 34..58 (with MSS option).
    let syn = hex_fixture("tcp_syn_vip");
    let meta = RxMeta::default();
    let eth_ip = |proto: u8, l4: &[u8]| {
        let mut f = eth_ipv4();
        f.extend_from_slice(&ipv4_header(CLIENT, VIP, proto, l4.len()));
        f.extend_from_slice(l4);
        f
    };
    vec![
        // Forwarded: only the MACs change.
        forward("tcp_syn_vip", "web", "198.18.0.13"),
        forward("udp_dns_vip", "dns", "198.18.0.12"),
        // IPv4 total length 40 in a 60-byte frame: the padding goes out too.
        forward("tcp_syn_padded", "web", "198.18.0.11"),
        // Malformed.
        drop("runt_ethernet", syn[..13].to_vec(), Reason::Runt),
        drop("runt_ipv4_header", syn[..33].to_vec(), Reason::Runt),
        drop("bad_version_6", edit(&syn, 14, &[0x65]), Reason::BadVersion),
        drop("bad_version_0", edit(&syn, 14, &[0x05]), Reason::BadVersion),
        drop("bad_ihl_4", edit(&syn, 14, &[0x44]), Reason::BadIhl),
        drop("bad_ihl_0", edit(&syn, 14, &[0x40]), Reason::BadIhl),
        drop(
            "total_length_beyond_frame",
            edit(&syn, 16, &[0x00, 0x2d]),
            Reason::BadTotalLength,
        ),
        drop(
            "total_length_below_header",
            edit(&syn, 16, &[0x00, 0x13]),
            Reason::BadTotalLength,
        ),
        drop(
            "ip_options",
            hex_fixture("ip_options_tcp_syn_vip"),
            Reason::IpOptions,
        ),
        // A later fragment whose first fragment was never seen (see
        // `fragments_follow_their_first` for the forwarded ones).
        drop("fragment_offset", edit(&syn, 20, &[0x00, 0xb9]), Reason::Fragment),
        drop(
            "fragment_offset_mf",
            edit(&syn, 20, &[0x20, 0xb9]),
            Reason::Fragment,
        ),
        // TCP with 8 bytes of header (IPv4 total length 28).
        drop(
            "truncated_tcp_8_bytes",
            eth_ip(6, &[0x9c, 0x40, 0x00, 0x50, 0x11, 0x22, 0x33, 0x44]),
            Reason::TruncatedL4,
        ),
        // TCP data offset 4 (< 5) and 15 (options beyond the packet).
        drop("tcp_data_offset_4", edit(&syn, 46, &[0x40]), Reason::TruncatedL4),
        drop("tcp_data_offset_15", edit(&syn, 46, &[0xf0]), Reason::TruncatedL4),
        // UDP with 4 bytes of header (IPv4 total length 24).
        drop(
            "truncated_udp_4_bytes",
            eth_ip(17, &[0xcf, 0x08, 0x00, 0x35]),
            Reason::TruncatedL4,
        ),
        drop("vlan_tag_in_bytes", hex_fixture("vlan_tcp_syn_vip"), Reason::Vlan),
        drop("qinq_tag_in_bytes", edit(&syn, 12, &[0x88, 0xa8]), Reason::Vlan),
        drop_meta(
            "vlan_tci_in_meta",
            syn.clone(),
            RxMeta {
                vlan_tci: Some(100),
                ..meta
            },
            Reason::Vlan,
        ),
        drop_meta(
            "oversize",
            syn.clone(),
            RxMeta {
                truncated: true,
                ..meta
            },
            Reason::Oversize,
        ),
        // Not ours.
        drop("arp_reply", hex_fixture("arp_reply"), Reason::NotIpv4),
        drop("ipv6", hex_fixture("ipv6_tcp_syn"), Reason::NotIpv4),
        drop_meta(
            "otherhost",
            syn.clone(),
            RxMeta {
                pkttype: pkttype::OTHERHOST,
                ..meta
            },
            Reason::NotForUs,
        ),
        drop_meta(
            "broadcast",
            syn.clone(),
            RxMeta {
                pkttype: pkttype::BROADCAST,
                ..meta
            },
            Reason::NotForUs,
        ),
        // 198.18.100.2
        drop(
            "not_vip",
            tcp_frame(CLIENT, 40000, 0xc612_6402, 80, tcp::SYN, &[]),
            Reason::NotVip,
        ),
        drop("vip_tcp_443", tcp_to_vip(40000, 443, tcp::SYN), Reason::NoService),
        drop(
            "vip_udp_80",
            udp_frame(CLIENT, 40000, VIP, 80, b"x"),
            Reason::NoService,
        ),
        // `answer_ping: false`, so an echo request is just ICMP that is not an error.
        drop("vip_icmp_echo", hex_fixture("icmp_echo_vip"), Reason::IcmpOther),
        // `idle`: its only server has weight 0; `drained`: its only server is drained.
        drop(
            "weight_0_only",
            tcp_to_vip(40000, 8080, tcp::SYN),
            Reason::NoServer,
        ),
        drop(
            "drained_only",
            tcp_to_vip(40000, 8081, tcp::SYN),
            Reason::NoServer,
        ),
    ]
}

/// The counters a first packet of a new flow moves.
fn new_flow_moved(id: u32, len: usize) -> BTreeMap<String, i64> {
    let len = len as i64;
    moved(&[
        ("frames_seen", 1),
        ("forwarded", 1),
        ("bytes_forwarded", len),
        ("flows", 1),
        (&format!("backend[{id}].packets"), 1),
        (&format!("backend[{id}].bytes"), len),
        (&format!("backend[{id}].conns"), 1),
        (&format!("backend[{id}].active"), 1),
    ])
}

fn topology() -> (Runtime, FwdTable) {
    let cfg = config(TOPOLOGY);
    let rt = runtime(&cfg);
    let table = ulvs::control::publish::build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0, 1);
    (rt, table)
}

#[test]
fn fixture_table() {
    let (rt, table) = topology();
    let mut failures = Vec::new();
    for case in cases() {
        let mut rig = Rig::new(table.clone(), 1024);
        let o = rig.send_with(&case.input, case.meta, VnetHdr::default());
        let (want_moved, want_out) = match &case.verdict {
            Verdict::Drop(r) => (
                moved(&[("frames_seen", 1), (&format!("drops.{}", r.name()), 1)]),
                None,
            ),
            Verdict::Forward {
                service,
                server,
                output,
            } => (
                new_flow_moved(id_of(&rt, service, server), case.input.len()),
                Some(output.clone()),
            ),
        };
        let got_out = o.sent.as_ref().map(|s| s.bytes.clone());
        if o.moved != want_moved {
            failures.push(format!(
                "{}: counters moved {:?}, want {:?}",
                case.name, o.moved, want_moved
            ));
        }
        if got_out != want_out {
            failures.push(format!(
                "{}: sent {:02x?}, want {:02x?}",
                case.name, got_out, want_out
            ));
        }
        if let Some(s) = &o.sent {
            if s.vnet != VnetHdr::default() {
                failures.push(format!("{}: virtio header changed to {:?}", case.name, s.vnet));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fixture files are well-formed packets, so a verdict is about the
/// condition the case names and nothing else.
#[test]
fn fixture_inputs_have_valid_checksums() {
    for name in [
        "tcp_syn_vip",
        "udp_dns_vip",
        "tcp_syn_padded",
        "icmp_echo_vip",
        "ip_options_tcp_syn_vip",
    ] {
        let f = hex_fixture(name);
        let ihl = usize::from(f[14] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        assert_eq!(
            checksum::sum(&f[14..14 + ihl], 0),
            0xffff,
            "{name}: IPv4 checksum"
        );
        let l4 = &f[14 + ihl..14 + total];
        let proto = f[23];
        if proto == 1 {
            assert_eq!(checksum::sum(l4, 0), 0xffff, "{name}: ICMP checksum");
        } else {
            let src = u32::from_be_bytes(f[26..30].try_into().unwrap());
            let dst = u32::from_be_bytes(f[30..34].try_into().unwrap());
            let mut zeroed = l4.to_vec();
            let at = if proto == 6 { 16 } else { 6 };
            zeroed[at..at + 2].copy_from_slice(&[0, 0]);
            let want = l4_checksum(src, dst, proto, &zeroed);
            assert_eq!(&l4[at..at + 2], &want.to_be_bytes(), "{name}: L4 checksum");
        }
    }
    // The outputs differ from the inputs in the 12 MAC bytes alone.
    for name in ["tcp_syn_vip", "udp_dns_vip", "tcp_syn_padded"] {
        let (i, o) = (hex_fixture(name), hex_fixture(&format!("{name}.out")));
        assert_eq!(i.len(), o.len(), "{name}");
        assert_eq!(&i[12..], &o[12..], "{name}");
        assert_eq!(&o[6..12], &DIRECTOR_MAC, "{name}");
    }
}

/// The second packet of a 5-tuple follows the first, and is not a new
/// connection.
#[test]
fn same_five_tuple_same_server() {
    let (rt, table) = topology();
    let mut rig = Rig::new(table, 1024);
    let syn = hex_fixture("tcp_syn_vip");
    let first = rig.send(&syn);
    let server = server_of(&first.sent.unwrap().bytes[0..6]);
    let id = id_of(&rt, "web", &server.to_string());
    // The client's ACK: same 5-tuple, flags ACK (byte 47), no MSS option.
    let ack = tcp_to_vip(40000, 80, tcp::ACK);
    for (i, f) in [&syn, &ack, &ack].into_iter().enumerate() {
        let o = rig.send(f);
        let len = f.len() as i64;
        assert_eq!(
            o.moved,
            moved(&[
                ("frames_seen", 1),
                ("forwarded", 1),
                ("bytes_forwarded", len),
                (&format!("backend[{id}].packets"), 1),
                (&format!("backend[{id}].bytes"), len),
            ]),
            "packet {i}"
        );
        assert_eq!(o.sent.unwrap().bytes, dr_rewritten(f, server), "packet {i}");
    }
    assert_eq!(rig.worker.flow_count(), 1);
    // Many 5-tuples spread over all three servers, and each keeps its own.
    let mut seen = BTreeMap::new();
    for sport in 1000..1300u16 {
        let f = tcp_to_vip(sport, 80, tcp::SYN);
        let s = rig.forward(&f);
        assert_eq!(rig.forward(&tcp_to_vip(sport, 80, tcp::ACK)), s);
        *seen.entry(s).or_insert(0) += 1;
    }
    let servers: Vec<Ipv4Addr> = SERVERS.iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), servers, "{seen:?}");
    assert!(seen.values().all(|&n| n > 60), "{seen:?}");
}

/// A hand-built table whose only server has no resolved MAC (`build_table`
/// keeps MAC-less servers out of Maglev, so only a hand-built table or a
/// MAC lost after pinning reaches this).
#[test]
fn server_mac_unknown() {
    let mut t = FwdTable::empty(DIRECTOR_MAC);
    t.backends = vec![
        BackendFwd {
            addr: 0xc612_000b,
            mac: Some(mac_of(Ipv4Addr::new(198, 18, 0, 11))),
            state: BackendState::Up,
            svc_vip: VIP,
            svc_port: 80,
            mode: Mode::Dr,
            ..BackendFwd::REMOVED
        },
        BackendFwd {
            addr: 0xc612_000c,
            mac: None,
            state: BackendState::Up,
            svc_vip: VIP,
            svc_port: 80,
            mode: Mode::Dr,
            ..BackendFwd::REMOVED
        },
    ];
    t.services.push(ServiceFwd {
        vip: VIP,
        port: 80,
        proto: 6,
        mode: Mode::Dr,
        maglev: ulvs::fwd::maglev::MaglevTable::from_slots(vec![ulvs::fwd::maglev::Member::new(1); 7]),
        members: vec![0, 1],
        client_affinity: false,
    });
    t.sort();
    let mut rig = Rig::new(t, 1024);
    let syn = hex_fixture("tcp_syn_vip");
    let o = rig.send(&syn);
    assert!(o.sent.is_none());
    // The flow is created, pinned and counted as a connection (conns,
    // active) of backend 1 before the MAC check drops the frame. (Published
    // tables never put a MAC-less server in Maglev; this hand-built one does.)
    assert_eq!(
        o.moved,
        moved(&[
            ("frames_seen", 1),
            ("drops.server_mac_unknown", 1),
            ("flows", 1),
            ("backend[1].conns", 1),
            ("backend[1].active", 1),
        ])
    );
    // A later packet finds its server unreachable and is rescheduled (like a
    // server that went down); Maglev here has only the MAC-less server, so it
    // is dropped the same way.
    let o = rig.send(&tcp_to_vip(40000, 80, tcp::ACK));
    assert!(o.sent.is_none());
    assert_eq!(
        o.moved,
        moved(&[
            ("frames_seen", 1),
            ("rescheduled", 1),
            ("drops.server_mac_unknown", 1)
        ])
    );
}

/// A GSO super-frame with a partial checksum: the bytes change only in the
/// MACs (the checksum field keeps its pseudo-header sum) and the virtio
/// header goes out exactly as it came in.
#[test]
fn gso_frame_keeps_vnet_header() {
    let (rt, table) = topology();
    let mut rig = Rig::new(table, 1024);
    let payload: Vec<u8> = (0..2 * 1448).map(|i| (i % 251) as u8).collect();
    let mut f = tcp_frame(CLIENT, 40100, VIP, 80, tcp::ACK | tcp::PSH, &payload);
    // NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum only.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&CLIENT.to_be_bytes());
    pseudo.extend_from_slice(&VIP.to_be_bytes());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    let partial = checksum::sum(&pseudo, 0);
    f[50..52].copy_from_slice(&partial.to_be_bytes());
    assert_eq!(f.len(), 14 + 20 + 20 + 2896);
    let vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let o = rig.send_with(&f, RxMeta::default(), vnet);
    let sent = o.sent.expect("forwarded");
    assert_eq!(sent.vnet, vnet);
    let server = server_of(&sent.bytes[0..6]);
    assert_eq!(sent.bytes, dr_rewritten(&f, server));
    assert_eq!(&sent.bytes[50..52], &partial.to_be_bytes());
    let id = id_of(&rt, "web", &server.to_string());
    assert_eq!(o.moved, new_flow_moved(id, f.len()));
}

/// The first fragment of a VIP datagram (MF, offset 0) is forwarded like any
/// first packet of a flow; a later fragment (no ports) follows it by
/// (src, dst, id, proto); a later fragment nobody announced is dropped.
#[test]
fn fragments_follow_their_first() {
    let (rt, table) = topology();
    let mut rig = Rig::new(table, 1024);
    // The SYN of tcp_syn_vip.hex as a first fragment: MF set (DF cleared),
    // offset 0. The IPv4 checksum is not refreshed: the director does not
    // check it, and DR leaves it to the server.
    let first = edit(&hex_fixture("tcp_syn_vip"), 20, &[0x20, 0x00]);
    let o = rig.send(&first);
    let sent = o.sent.expect("first fragment forwarded");
    let server = server_of(&sent.bytes[0..6]);
    assert_eq!(sent.bytes, dr_rewritten(&first, server));
    let id = id_of(&rt, "web", &server.to_string());
    assert_eq!(o.moved, new_flow_moved(id, first.len()));

    // A later fragment: same id (1), offset 3 (24 bytes), no TCP header.
    let mut later = eth_ipv4();
    later.extend_from_slice(&ipv4_header(CLIENT, VIP, 6, 8));
    later[20..22].copy_from_slice(&[0x00, 0x03]);
    later.extend_from_slice(b"fragment");
    let o = rig.send(&later);
    assert_eq!(
        o.sent.expect("later fragment forwarded").bytes,
        dr_rewritten(&later, server)
    );
    let len = later.len() as i64;
    assert_eq!(
        o.moved,
        moved(&[
            ("frames_seen", 1),
            ("forwarded", 1),
            ("bytes_forwarded", len),
            ("fragments_forwarded", 1),
            (&format!("backend[{id}].packets"), 1),
            (&format!("backend[{id}].bytes"), len),
        ])
    );

    // The same later fragment of another datagram (id 2) has no first.
    let other = edit(&later, 18, &[0x00, 0x02]);
    let o = rig.send(&other);
    assert!(o.sent.is_none());
    assert_eq!(o.moved, moved(&[("frames_seen", 1), ("drops.fragment", 1)]));
}
