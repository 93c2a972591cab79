//! Oracle tests: the `wire` views against etherparse, an independent
//! parser, on generated frames (IPv4 and IPv6; TCP, UDP, ICMP, ICMPv6,
//! other protocols; IPv6 extension headers and fragments; then random byte
//! edits, truncations and link padding) and on random bytes.
//!
//! The rule: when our views accept a frame, etherparse parses it to the
//! same fields (addresses, upper-layer protocol, offset of the upper-layer
//! header, fragment fields, ports, ICMP type and code; an ICMPv6 error's
//! quoted flow; a Neighbor Solicitation/Advertisement's target and
//! link-layer address), and the checksums we compute equal etherparse's.
//! When etherparse refuses a frame, ours do too. Each difference below is
//! allowed by name, justified, and pinned by `documented_differences`:
//!
//! Ours refuse, etherparse accepts (ours are stricter):
//! - D1 `v6_ext_chain_too_long`: we bound the walk (8 headers, 512 bytes);
//!   etherparse walks any chain.
//! - D2 `v6_duplicate_fragment`: a second fragment header; etherparse
//!   takes it.
//! - D3 `v6_fragment_no_transport`: a first fragment without the whole
//!   chain and upper-layer header (RFC 7112); etherparse does not look at
//!   the transport of any fragment.
//! - D4 payload length 0: etherparse takes the rest of the slice as the
//!   payload (its "jumbogram" fallback); we take the payload as empty
//!   (link padding after it), and refuse 0 before a hop-by-hop header as
//!   `v6_jumbo` or `v6_bad_payload_length` (RFC 2675).
//!
//! Etherparse refuses, ours accept (what the director does not read):
//! - D5 the UDP length field (etherparse: beyond the bytes, or below 8);
//!   the director forwards UDP without it, the receiver checks it.
//! - D6 protocols we do not parse: ICMPv4 timestamps' exact length, IGMP,
//!   ICMPv4 inside IPv6 and ICMPv6 inside IPv4 are opaque to us.
//! - D7 an IPv4 authentication header (protocol 51): etherparse walks it,
//!   we report protocol 51 (so its fields differ too when both accept).
//! - D8 a non-first IPv6 fragment whose fragment header names an extension
//!   header: that header is in the first fragment; etherparse parses the
//!   fragment's data as one (so its fields differ too when both accept).
//!
//! And two in what is compared: D9 checksums (at `typed_header_is_raw`),
//! D10 Neighbor Discovery options (at `compare_icmpv6`).

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::err::packet::SliceError;
use etherparse::err::Layer;
use etherparse::icmpv6::{Icmpv6PayloadSlice, NdpOptionSlice};
use etherparse::{Ipv6ExtensionSlice, LaxIpSlice, NetSlice, SlicedPacket, TransportSlice};
use proptest::collection::vec;
use proptest::prelude::*;
use ulvs::wire::builder::{Ext6, PacketBuilder, PacketBuilder6};
use ulvs::wire::ipv6::{next_header as nh, Ipv6Error};
use ulvs::wire::{ethernet, icmp, icmpv6, ipv4, ipv6, ndp, tcp, udp};

/// The upper-layer header as both parsers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        header_len: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        kind: u8,
        code: u8,
    },
    Icmpv6 {
        kind: u8,
        code: u8,
    },
    /// Not parsed (a fragment, or a protocol we keep opaque).
    None,
}

/// What both parsers must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    v6: bool,
    src: Vec<u8>,
    dst: Vec<u8>,
    protocol: u8,
    /// Offset of the upper-layer header (or a later fragment's data) from
    /// the start of the IP header.
    l4_offset: usize,
    /// Fragment offset (8-byte units), M flag, identification, for a
    /// fragment (IPv4: MF or an offset; IPv6: any fragment header).
    fragment: Option<(u16, bool, u32)>,
    l4: L4,
    /// The checksum we compute for the upper-layer header, when parsed.
    checksum: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ours {
    Ethernet,
    Ipv4(ipv4::Ipv4Error),
    Ipv6(Ipv6Error),
    L4(ulvs::wire::WireError),
    Other,
}

fn ours(frame: &[u8]) -> Result<Fields, Ours> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| Ours::Ethernet)?;
    match eth.ethertype() {
        ethernet::EtherType::Ipv4 => ours4(eth.payload()),
        ethernet::EtherType::Ipv6 => ours6(eth.payload()),
        _ => Err(Ours::Other),
    }
}

fn ours4(b: &[u8]) -> Result<Fields, Ours> {
    let ip = ipv4::Packet::new_checked(b).map_err(Ours::Ipv4)?;
    let (src, dst) = (ip.src(), ip.dst());
    let proto = u8::from(ip.protocol());
    let mut f = Fields {
        v6: false,
        src: src.to_be_bytes().to_vec(),
        dst: dst.to_be_bytes().to_vec(),
        protocol: proto,
        l4_offset: ip.header_len(),
        fragment: ip
            .is_fragment()
            .then(|| (ip.frag_offset(), ip.more_fragments(), u32::from(ip.ident()))),
        l4: L4::None,
        checksum: None,
    };
    if ip.is_fragment() {
        return Ok(f);
    }
    let l4 = ip.payload();
    match proto {
        6 => {
            let s = tcp::Segment::new_checked(l4).map_err(Ours::L4)?;
            f.l4 = L4::Tcp {
                sport: s.src_port(),
                dport: s.dst_port(),
                header_len: s.header_len(),
            };
            let mut copy = l4.to_vec();
            let mut c = tcp::Segment::new_checked(&mut copy[..]).map_err(Ours::L4)?;
            c.fill_checksum(src, dst);
            f.checksum = Some(c.checksum());
        }
        17 => {
            let d = udp::Datagram::new_checked(l4).map_err(Ours::L4)?;
            f.l4 = L4::Udp {
                sport: d.src_port(),
                dport: d.dst_port(),
            };
            let mut copy = l4.to_vec();
            copy[6..8].fill(0);
            let c = ulvs::wire::builder::l4_checksum(src.into(), dst.into(), 17, &copy);
            f.checksum = Some(if c == 0 { 0xffff } else { c });
        }
        1 => {
            let m = icmp::Message::new_checked(l4).map_err(Ours::L4)?;
            f.l4 = L4::Icmp {
                kind: m.msg_type(),
                code: m.code(),
            };
            let mut copy = l4.to_vec();
            let mut c = icmp::Message::new_checked(&mut copy[..]).map_err(Ours::L4)?;
            c.fill_checksum();
            f.checksum = Some(c.checksum());
        }
        _ => {}
    }
    Ok(f)
}

fn ours6(b: &[u8]) -> Result<Fields, Ours> {
    let ip = ipv6::Packet::new_checked(b).map_err(Ours::Ipv6)?;
    let chain = ip.walk().map_err(Ours::Ipv6)?;
    let (src, dst) = (ip.src(), ip.dst());
    let mut f = Fields {
        v6: true,
        src: src.to_vec(),
        dst: dst.to_vec(),
        protocol: chain.protocol,
        l4_offset: chain.transport_offset,
        fragment: chain.fragment.map(|fr| (fr.offset, fr.more, fr.ident)),
        l4: L4::None,
        checksum: None,
    };
    if !chain.has_transport() || chain.is_fragment() {
        return Ok(f);
    }
    let l4 = &ip.bytes()[chain.transport_offset..];
    match chain.protocol {
        nh::TCP => {
            let s = tcp::Segment::new_checked(l4).map_err(Ours::L4)?;
            f.l4 = L4::Tcp {
                sport: s.src_port(),
                dport: s.dst_port(),
                header_len: s.header_len(),
            };
            let mut copy = l4.to_vec();
            let mut c = tcp::Segment::new_checked(&mut copy[..]).map_err(Ours::L4)?;
            c.fill_checksum6(&src, &dst);
            f.checksum = Some(c.checksum());
        }
        nh::UDP => {
            let d = udp::Datagram::new_checked(l4).map_err(Ours::L4)?;
            f.l4 = L4::Udp {
                sport: d.src_port(),
                dport: d.dst_port(),
            };
            let mut copy = l4.to_vec();
            let mut c = udp::Datagram::new_checked(&mut copy[..]).map_err(Ours::L4)?;
            c.fill_checksum6(&src, &dst);
            f.checksum = Some(c.checksum());
        }
        nh::ICMPV6 => {
            let m = icmpv6::Message::new_checked(l4).map_err(Ours::L4)?;
            f.l4 = L4::Icmpv6 {
                kind: m.msg_type(),
                code: m.code(),
            };
            f.checksum = Some(icmpv6::compute_checksum(&src, &dst, l4));
        }
        _ => {}
    }
    Ok(f)
}

/// Etherparse's view, normalised to [`Fields`] (its transport of the
/// protocols we keep opaque is dropped: D6).
fn theirs(frame: &[u8]) -> Result<Fields, SliceError> {
    let p = SlicedPacket::from_ethernet(frame)?;
    let ip_start = frame.as_ptr() as usize + ethernet::HEADER_LEN;
    let (mut f, src, dst) = match p.net {
        Some(NetSlice::Ipv4(ref s)) => {
            let h = s.header();
            let pl = s.payload();
            let f = Fields {
                v6: false,
                src: h.source().to_vec(),
                dst: h.destination().to_vec(),
                protocol: pl.ip_number.0,
                l4_offset: pl.payload.as_ptr() as usize - ip_start,
                fragment: h.is_fragmenting_payload().then(|| {
                    (
                        h.fragments_offset().value(),
                        h.more_fragments(),
                        u32::from(h.identification()),
                    )
                }),
                l4: L4::None,
                checksum: None,
            };
            (f, h.source().to_vec(), h.destination().to_vec())
        }
        Some(NetSlice::Ipv6(ref s)) => {
            let h = s.header();
            let pl = s.payload();
            let fragment = s.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(fr) => Some((
                    fr.fragment_offset().value(),
                    fr.more_fragments(),
                    fr.identification(),
                )),
                _ => None,
            });
            let f = Fields {
                v6: true,
                src: h.source().to_vec(),
                dst: h.destination().to_vec(),
                protocol: pl.ip_number.0,
                l4_offset: pl.payload.as_ptr() as usize - ip_start,
                fragment,
                l4: L4::None,
                checksum: None,
            };
            (f, h.source().to_vec(), h.destination().to_vec())
        }
        _ => panic!("etherparse parsed no IP from an IP ethertype: {frame:02x?}"),
    };
    let a4 = |v: &[u8]| <[u8; 4]>::try_from(v).unwrap();
    let a16 = |v: &[u8]| <[u8; 16]>::try_from(v).unwrap();
    match (&p.transport, f.v6) {
        (Some(TransportSlice::Tcp(t)), v6) => {
            f.l4 = L4::Tcp {
                sport: t.source_port(),
                dport: t.destination_port(),
                header_len: t.header_len(),
            };
            let h = t.to_header();
            f.checksum = Some(if typed_header_is_raw(&h.to_bytes(), t.slice()) {
                let c = if v6 {
                    h.calc_checksum_ipv6_raw(a16(&src), a16(&dst), t.payload())
                } else {
                    h.calc_checksum_ipv4_raw(a4(&src), a4(&dst), t.payload())
                };
                c.unwrap()
            } else {
                raw_sum(&src, &dst, 6, t.slice(), 16)
            });
        }
        (Some(TransportSlice::Udp(u)), v6) => {
            f.l4 = L4::Udp {
                sport: u.source_port(),
                dport: u.destination_port(),
            };
            let h = u.to_header();
            let c = if v6 {
                h.calc_checksum_ipv6_raw(a16(&src), a16(&dst), u.payload())
            } else {
                h.calc_checksum_ipv4_raw(a4(&src), a4(&dst), u.payload())
            };
            f.checksum = Some(c.unwrap());
        }
        (Some(TransportSlice::Icmpv4(m)), false) => {
            f.l4 = L4::Icmp {
                kind: m.type_u8(),
                code: m.code_u8(),
            };
            f.checksum = Some(if typed_header_is_raw(&m.header().to_bytes(), m.slice()) {
                m.icmp_type().calc_checksum(m.payload())
            } else {
                raw_sum(&[], &[], 1, m.slice(), 2)
            });
        }
        (Some(TransportSlice::Icmpv6(m)), true) => {
            f.l4 = L4::Icmpv6 {
                kind: m.type_u8(),
                code: m.code_u8(),
            };
            f.checksum = Some(if typed_header_is_raw(&m.header().to_bytes(), m.slice()) {
                let c = m.icmp_type().calc_checksum(a16(&src), a16(&dst), m.payload());
                c.unwrap()
            } else {
                raw_sum(&src, &dst, 58, m.slice(), 2)
            });
        }
        _ => {}
    }
    Ok(f)
}

/// D9 (checksums only): etherparse's typed ICMP header keeps no "unused"
/// bytes (destination unreachable's bytes 5-8, say), so its
/// `calc_checksum` sums zeros there; where the typed header is not the raw
/// one, the raw bytes are summed with etherparse's own adder instead.
/// (TCP: its typed header keeps no reserved bits either.)
fn typed_header_is_raw(typed: &[u8], raw: &[u8]) -> bool {
    let n = typed.len().min(raw.len()).min(60);
    typed[..n] == raw[..n]
}

/// The checksum of `bytes` (its field at `field` taken as zero) summed by
/// etherparse's adder, with the pseudo-header of `src` -> `dst` when
/// those are given (ICMPv4 has none).
fn raw_sum(src: &[u8], dst: &[u8], proto: u8, bytes: &[u8], field: usize) -> u16 {
    let mut raw = bytes.to_vec();
    raw[field..field + 2].fill(0);
    let mut s = etherparse::checksum::Sum16BitWords::new();
    if !src.is_empty() {
        s = s.add_slice(src).add_slice(dst);
        if src.len() == 16 {
            s = s.add_4bytes((raw.len() as u32).to_be_bytes());
        } else {
            s = s.add_2bytes((raw.len() as u16).to_be_bytes());
        }
        s = s.add_2bytes([0, proto]);
    }
    // It sums native-endian words, as etherparse does itself.
    s.add_slice(&raw).ones_complement().to_be()
}

/// The IPv6 payload length of an IPv6 frame.
fn plen6(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 54 && frame[12..14] == [0x86, 0xdd]).then(|| u16::from_be_bytes([frame[18], frame[19]]))
}

/// D8: a non-first IPv6 fragment naming an extension header.
fn later_fragment_names_an_extension(f: &Fields) -> bool {
    f.v6 && f.fragment.is_some_and(|(off, _, _)| off != 0)
        && matches!(
            f.protocol,
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS | nh::FRAGMENT | nh::AUTH
        )
}

/// Which documented difference, if any, explains our refusal of a frame
/// etherparse accepted.
fn ours_stricter(e: Ours, frame: &[u8]) -> Option<&'static str> {
    match e {
        Ours::Ipv6(Ipv6Error::ChainTooLong) => Some("D1"),
        Ours::Ipv6(Ipv6Error::DuplicateFragment) => Some("D2"),
        Ours::Ipv6(Ipv6Error::FragmentNoTransport) => Some("D3"),
        Ours::Ipv6(
            Ipv6Error::Jumbo
            | Ipv6Error::BadPayloadLength
            | Ipv6Error::TruncatedExtension
            | Ipv6Error::TruncatedTransport,
        ) if plen6(frame) == Some(0) => Some("D4"),
        _ => None,
    }
}

/// Which documented difference, if any, explains etherparse's refusal of a
/// frame we accepted.
fn theirs_stricter(o: &Fields, e: &SliceError) -> Option<&'static str> {
    if later_fragment_names_an_extension(o) {
        return Some("D8");
    }
    if !o.v6 && o.protocol == 51 {
        return Some("D7");
    }
    match e {
        SliceError::Len(l) => match l.layer {
            Layer::UdpPayload | Layer::UdpHeader if o.protocol == 17 => Some("D5"),
            Layer::Icmpv4Timestamp | Layer::Icmpv4TimestampReply => Some("D6"),
            Layer::Igmp => Some("D6"),
            Layer::Icmpv4 if o.v6 => Some("D6"),
            Layer::Icmpv6 if !o.v6 => Some("D6"),
            _ => None,
        },
        _ => None,
    }
}

/// Compare our parse of `frame` with etherparse's; returns the difference
/// met, if any (for the tests that count them).
fn compare(frame: &[u8]) -> Option<&'static str> {
    let (o, t) = (ours(frame), theirs(frame));
    match (o, t) {
        (Ok(o), Ok(mut t)) => {
            if later_fragment_names_an_extension(&o) {
                return Some("D8");
            }
            if !o.v6 && o.protocol == 51 {
                return Some("D7");
            }
            // Etherparse's transport of protocols we keep opaque (D6).
            let parsed = matches!((o.v6, o.protocol), (_, 6 | 17) | (false, 1) | (true, 58));
            if !parsed {
                t.l4 = L4::None;
                t.checksum = None;
            }
            // Etherparse sums a UDP datagram as far as its length field
            // says; we sum the bytes up to the IP payload's end.
            if o.protocol == 17 && o.l4 != L4::None {
                let l4 = &frame[14 + o.l4_offset..];
                let ip_end = if o.v6 {
                    14 + 40 + usize::from(plen6(frame).unwrap())
                } else {
                    14 + usize::from(u16::from_be_bytes([frame[16], frame[17]]))
                };
                let udp_len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
                if udp_len != ip_end - 14 - o.l4_offset {
                    t.checksum = o.checksum;
                }
            }
            assert_eq!(o, t, "fields differ for {frame:02x?}");
            if o.v6 && matches!(o.l4, L4::Icmpv6 { .. }) {
                compare_icmpv6(frame, &o);
            }
            None
        }
        (Ok(o), Err(e)) => {
            let d = theirs_stricter(&o, &e);
            assert!(
                d.is_some(),
                "etherparse refuses ({e:?}) what we accept ({o:?}): {frame:02x?}"
            );
            d
        }
        (Err(e), Ok(t)) => {
            let d = ours_stricter(e, frame);
            assert!(
                d.is_some(),
                "we refuse ({e:?}) what etherparse accepts ({t:?}): {frame:02x?}"
            );
            d
        }
        (Err(_), Err(_)) => None,
    }
}

/// ICMPv6 errors' quoted flow and NS/NA fields against etherparse.
fn compare_icmpv6(frame: &[u8], o: &Fields) {
    let msg = &frame[14 + o.l4_offset..14 + 40 + usize::from(plen6(frame).unwrap())];
    let m = icmpv6::Message::new_checked(msg).unwrap();
    let theirs = etherparse::Icmpv6Slice::from_slice(msg).unwrap();
    let src: [u8; 16] = o.src[..].try_into().unwrap();
    let dst: [u8; 16] = o.dst[..].try_into().unwrap();
    assert_eq!(m.verify_checksum(&src, &dst), theirs.is_checksum_valid(src, dst));
    let payload = Icmpv6PayloadSlice::from_slice(&theirs.icmp_type(), theirs.payload());
    if m.is_error() {
        let Ok(q) = m.quote() else { return };
        let invoking = match payload {
            Ok(Icmpv6PayloadSlice::DestinationUnreachable(p)) => p.invoking_packet(),
            Ok(Icmpv6PayloadSlice::PacketTooBig(p)) => p.invoking_packet(),
            Ok(Icmpv6PayloadSlice::TimeExceeded(p)) => p.invoking_packet(),
            Ok(Icmpv6PayloadSlice::ParameterProblem(p)) => p.invoking_packet(),
            // Codes etherparse does not know make an "unknown" type.
            Ok(Icmpv6PayloadSlice::Raw(p)) => p,
            other => panic!("etherparse: no quote in {other:?}"),
        };
        assert_eq!(invoking, q.bytes());
        let (lax, _stop) = LaxIpSlice::from_slice(invoking).expect("a quote etherparse reads");
        let LaxIpSlice::Ipv6(l) = lax else {
            panic!("not IPv6")
        };
        let c = q.chain();
        let d8 = c.fragment.is_some_and(|f| !f.is_first())
            && matches!(
                c.protocol,
                nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS | nh::FRAGMENT | nh::AUTH
            );
        assert_eq!(l.header().source(), q.src());
        assert_eq!(l.header().destination(), q.dst());
        if !d8 {
            assert_eq!(l.payload().ip_number.0, q.protocol());
            let off = l.payload().payload.as_ptr() as usize - invoking.as_ptr() as usize;
            assert_eq!(off, c.transport_offset);
            if let Some((sp, dp)) = q.ports() {
                let p = l.payload().payload;
                assert_eq!((sp, dp), (be16(p, 0), be16(p, 2)));
            }
        }
    } else if let Ok(n) = ndp::Message::new_checked(msg) {
        let (target, options) = match payload {
            Ok(Icmpv6PayloadSlice::NeighborSolicitation(p)) => (p.target_address(), p.options_iterator()),
            Ok(Icmpv6PayloadSlice::NeighborAdvertisement(p)) => (p.target_address(), p.options_iterator()),
            other => panic!("etherparse: not NS/NA: {other:?}"),
        };
        assert_eq!(target.octets(), n.target());
        // D10: etherparse checks the sizes of options NS/NA do not use
        // (prefix information, MTU) and stops at the first bad one; we skip
        // what we do not read (RFC 4861 section 4.6 "ignore").
        let mut ll = None;
        let mut stopped = false;
        for o in options {
            match o {
                Ok(NdpOptionSlice::SourceLinkLayerAddress(s)) if n.is_solicitation() => {
                    ll = Some(s.link_layer_address().to_vec());
                    break;
                }
                Ok(NdpOptionSlice::TargetLinkLayerAddress(s)) if n.is_advertisement() => {
                    ll = Some(s.link_layer_address().to_vec());
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    stopped = true;
                    break;
                }
            }
        }
        if !stopped {
            assert_eq!(n.link_layer().map(|m| m.to_vec()), ll.map(|v| v[..6].to_vec()));
        }
        if n.is_advertisement() {
            if let etherparse::Icmpv6Type::NeighborAdvertisement(h) = theirs.icmp_type() {
                assert_eq!(
                    (h.router, h.solicited, h.r#override),
                    (n.router(), n.solicited(), n.override_flag())
                );
            }
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

// ---- generators ----

fn v6addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|x| Ipv6Addr::from(0x2001_0db8u128 << 96 | (x & ((1u128 << 96) - 1))))
}

fn v4addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(|x| Ipv4Addr::from(0xc612_0000 | (x & 0x1_ffff)))
}

fn ext() -> impl Strategy<Value = Ext6> {
    prop_oneof![
        vec(any::<u8>(), 0..14).prop_map(Ext6::HopByHop),
        vec(any::<u8>(), 0..22).prop_map(Ext6::DestOpts),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..36)).prop_map(|(t, s, d)| Ext6::Routing {
            routing_type: t,
            segments_left: s,
            data: d
        }),
        (any::<u32>(), any::<u32>(), vec(any::<u8>(), 0..16)).prop_map(|(spi, seq, icv)| Ext6::Auth {
            spi,
            seq,
            icv
        }),
        (0usize..4, any::<bool>(), any::<u32>()).prop_map(|(o, more, ident)| Ext6::Fragment {
            offset: o * 8,
            more,
            ident
        }),
    ]
}

/// The upper layer of a generated packet.
#[derive(Debug, Clone)]
enum Upper {
    Tcp(u16, u16, u8),
    Udp(u16, u16),
    /// ICMP or ICMPv6: type, code, the 4 bytes after the checksum.
    Icmp(u8, u8, [u8; 4]),
    Other(u8),
}

fn upper() -> impl Strategy<Value = Upper> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(s, d, f)| Upper::Tcp(s, d, f)),
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| Upper::Udp(s, d)),
        (
            prop_oneof![
                Just(1u8),
                Just(2),
                Just(3),
                Just(4),
                Just(8),
                Just(0),
                Just(11),
                Just(13),
                Just(128),
                Just(129),
                Just(135),
                Just(136),
                any::<u8>()
            ],
            prop_oneof![Just(0u8), any::<u8>()],
            any::<[u8; 4]>()
        )
            .prop_map(|(t, c, r)| Upper::Icmp(t, c, r)),
        prop_oneof![
            Just(59u8),
            Just(50),
            Just(2),
            Just(51),
            Just(1),
            Just(58),
            any::<u8>()
        ]
        .prop_map(Upper::Other),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    v6: bool,
    src4: Ipv4Addr,
    dst4: Ipv4Addr,
    src6: Ipv6Addr,
    dst6: Ipv6Addr,
    exts: Vec<Ext6>,
    /// IPv4 fragment: offset (8-byte units) and MF.
    frag4: Option<(usize, bool)>,
    upper: Upper,
    data: Vec<u8>,
    /// For ICMPv6 errors: the quoted packet's extension headers, and where
    /// the quote is cut.
    quote_exts: Vec<Ext6>,
    quote_cut: usize,
    /// NS/NA options: (type, length in 8-byte units, bytes).
    nd_options: Vec<(u8, u8)>,
    edits: Vec<(usize, u8)>,
    /// Where the frame is cut, and whether the length field follows.
    cut: Option<(usize, bool)>,
    pad: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), v4addr(), v4addr(), v6addr(), v6addr()),
        (
            vec(ext(), 0..4),
            prop_oneof![3 => Just(None), 1 => (0usize..4, any::<bool>()).prop_map(Some)],
            upper(),
            vec(any::<u8>(), 0..48),
        ),
        (vec(ext(), 0..2), 0usize..120, vec((1u8..4, 0u8..3), 0..3)),
        (
            prop_oneof![3 => Just(vec![]), 2 => vec((0usize..200, any::<u8>()), 1..4)],
            prop_oneof![2 => Just(None), 1 => (0usize..200, any::<bool>()).prop_map(Some)],
            prop_oneof![3 => Just(0usize), 1 => 1usize..12],
        ),
    )
        .prop_map(
            |(
                (v6, src4, dst4, src6, dst6),
                (exts, frag4, upper, data),
                (quote_exts, quote_cut, nd_options),
                (edits, cut, pad),
            )| Case {
                v6,
                src4,
                dst4,
                src6,
                dst6,
                exts,
                frag4,
                upper,
                data,
                quote_exts,
                quote_cut,
                nd_options,
                edits,
                cut,
                pad,
            },
        )
}

impl Case {
    fn frame(&self) -> Vec<u8> {
        let mut f = if self.v6 { self.frame6() } else { self.frame4() };
        for &(at, b) in &self.edits {
            // Only the IP layer: a changed ethertype is another test.
            let n = f.len() - 14;
            if n > 0 {
                f[14 + at % n] = b;
            }
        }
        if let Some((c, fix)) = self.cut {
            f.truncate(14 + c.min(f.len() - 14));
            // A short packet whose length field agrees: the cut lands in
            // the chain or the transport header, not in the length check.
            if fix && f.len() >= 14 + 40 && self.v6 {
                let plen = (f.len() - 54) as u16;
                f[18..20].copy_from_slice(&plen.to_be_bytes());
            } else if fix && f.len() >= 14 + 20 && !self.v6 {
                let total = (f.len() - 14) as u16;
                f[16..18].copy_from_slice(&total.to_be_bytes());
            }
        }
        f.extend(std::iter::repeat_n(0, self.pad));
        f
    }

    fn frame4(&self) -> Vec<u8> {
        let mut b = PacketBuilder::new(self.src4, self.dst4);
        if let Some((off, more)) = self.frag4 {
            b = b.df(false).fragment(off * 8, more);
        }
        match self.upper {
            Upper::Tcp(s, d, fl) => b.tcp(s, d, fl, &self.data),
            Upper::Udp(s, d) => b.udp(s, d, &self.data),
            Upper::Icmp(t, c, r) => b.icmp(t, c, r, &self.data),
            Upper::Other(p) => b.ip(p, &self.data),
        }
    }

    fn frame6(&self) -> Vec<u8> {
        let mut b = PacketBuilder6::new(self.src6, self.dst6);
        b.exts = self.exts.clone();
        match self.upper {
            Upper::Tcp(s, d, fl) => b.tcp(s, d, fl, &self.data),
            Upper::Udp(s, d) => b.udp(s, d, &self.data),
            Upper::Icmp(t, c, r) => {
                let body = match t {
                    1..=4 => {
                        let mut q = PacketBuilder6::new(self.dst6, self.src6);
                        q.exts = self.quote_exts.clone();
                        let inner = if c % 2 == 0 {
                            q.tcp(80, 40000, tcp::ACK, &self.data)
                        } else {
                            q.udp(53, 5000, &self.data)
                        };
                        let inner = &inner[14..];
                        inner[..self.quote_cut.min(inner.len()).max(40)].to_vec()
                    }
                    135 | 136 => {
                        let mut body = self.dst6.octets()[..].to_vec();
                        for (i, &(kind, units)) in self.nd_options.iter().enumerate() {
                            body.extend_from_slice(&[kind, units]);
                            let fill = (usize::from(units) * 8).saturating_sub(2);
                            body.extend((0..fill).map(|j| (i * 16 + j) as u8));
                        }
                        body
                    }
                    _ => self.data.clone(),
                };
                b.icmpv6(t, if matches!(t, 135 | 136) { 0 } else { c }, r, &body)
            }
            Upper::Other(p) => b.ip(p, &self.data),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Generated frames, edited: both parsers agree, up to the documented
    /// differences.
    #[test]
    fn views_agree_with_etherparse(c in case()) {
        compare(&c.frame());
    }

    /// Random bytes after an IPv4 or IPv6 ethertype (the version nibble
    /// mostly right, so that the walk is reached).
    #[test]
    fn random_bytes_agree(v6 in any::<bool>(), fix in any::<bool>(), mut bytes in vec(any::<u8>(), 0..160)) {
        let mut f = PacketBuilder::new([198, 18, 0, 1], [198, 18, 0, 2]).ethernet_header().to_vec();
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
        }
        if fix && !bytes.is_empty() {
            bytes[0] = (bytes[0] & 0x0f) | if v6 { 0x60 } else { 0x40 };
            if v6 && bytes.len() >= 6 {
                let plen = (bytes.len().saturating_sub(40) as u16).min(u16::from(bytes[5]));
                bytes[4..6].copy_from_slice(&plen.to_be_bytes());
            }
        }
        f.extend_from_slice(&bytes);
        compare(&f);
    }

    /// Incremental checksum updates for an IPv6 address change (NAT) equal
    /// a checksum etherparse computes from scratch.
    #[test]
    fn incremental_v6_updates_match_etherparse(
        src in v6addr(), dst in v6addr(), new in v6addr(),
        data in vec(any::<u8>(), 0..40), change_src in any::<bool>(),
    ) {
        use ulvs::wire::checksum::State;
        let b = PacketBuilder6::new(src, dst);
        let (new_src, new_dst) = if change_src { (new, dst) } else { (src, new) };
        let (old_a, new_a) = if change_src { (src, new) } else { (dst, new) };
        // TCP
        let mut seg = b.tcp_segment(40000, 80, tcp::ACK, &data);
        let mut s = tcp::Segment::new_checked(&mut seg[..]).unwrap();
        s.pseudo_header_changed6(&old_a.octets(), &new_a.octets(), State::Full);
        s.rewrite_dst_port(8080, State::Full);
        let want = PacketBuilder6::new(new_src, new_dst).tcp(40000, 8080, tcp::ACK, &data);
        let t = SlicedPacket::from_ethernet(&want).unwrap();
        let Some(TransportSlice::Tcp(ts)) = t.transport else { panic!() };
        prop_assert!(same_ones_complement(s.checksum(), ts.checksum()));
        prop_assert!(s.verify_checksum6(&new_src.octets(), &new_dst.octets()));
        // UDP
        let mut dg = b.udp_datagram(5000, 53, &data);
        let mut d = udp::Datagram::new_checked(&mut dg[..]).unwrap();
        d.pseudo_header_changed6(&old_a.octets(), &new_a.octets(), State::Full);
        prop_assert!(d.verify_checksum6(&new_src.octets(), &new_dst.octets()));
        let dc = d.checksum();
        let h = etherparse::UdpHeader::from_slice(&dg).unwrap().0;
        let c = h.calc_checksum_ipv6_raw(new_src.octets(), new_dst.octets(), &dg[8..]).unwrap();
        prop_assert!(same_ones_complement(dc, c));
        // ICMPv6
        let mut m = b.icmpv6_message(icmpv6::ECHO_REQUEST, 0, [0, 1, 0, 2], &data);
        let mut msg = icmpv6::Message::new_checked(&mut m[..]).unwrap();
        msg.pseudo_header_changed(&old_a.octets(), &new_a.octets());
        let e = etherparse::Icmpv6Slice::from_slice(&m).unwrap();
        prop_assert!(e.is_checksum_valid(new_src.octets(), new_dst.octets()));
    }
}

/// 0x0000 and 0xffff are the same one's-complement number; an incremental
/// update may give either where a full sum gives the other.
fn same_ones_complement(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && a & b == 0)
}

/// Fixed frames for every class of the walk, and each documented
/// difference pinned: if etherparse changes, this says which note is stale.
#[test]
fn documented_differences() {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 7);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 1);
    let b6 = PacketBuilder6::new(src, dst);
    let d = |n: u8| Ext6::DestOpts(vec![n]);
    // D1: nine extension headers.
    let mut b = b6.clone();
    for i in 0..9 {
        b = b.ext(d(i));
    }
    let f = b.udp(5000, 53, b"x");
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::ChainTooLong)));
    assert_eq!(compare(&f), Some("D1"));
    // D2: two fragment headers.
    let fr = Ext6::Fragment {
        offset: 0,
        more: true,
        ident: 1,
    };
    let f = b6.clone().ext(fr.clone()).ext(fr.clone()).udp(5000, 53, b"x");
    assert_eq!(compare(&f), Some("D2"));
    // D3: a first fragment cut inside the UDP header.
    let l4 = b6.udp_datagram(5000, 53, &[7; 40]);
    let first = b6.fragments(nh::UDP, &l4[..], &[8], 9).remove(0);
    assert_eq!(ours(&first).unwrap().fragment, Some((0, true, 9)));
    let mut short = b6.clone().ext(fr.clone()).ip(nh::UDP, &l4[..4]);
    assert_eq!(ours(&short), Err(Ours::Ipv6(Ipv6Error::FragmentNoTransport)));
    assert_eq!(compare(&short), Some("D3"));
    // A later fragment with 4 bytes is fine for both.
    short[14 + 40 + 3] = 0x08;
    assert_eq!(ours(&short).unwrap().l4_offset, 48);
    assert_eq!(compare(&short), None);
    // D4: payload length 0 then a UDP datagram.
    let mut f = b6.udp(5000, 53, b"x");
    f[18..20].fill(0);
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::TruncatedTransport)));
    assert_eq!(compare(&f), Some("D4"));
    // D4: a jumbogram.
    let mut f = b6
        .clone()
        .ext(Ext6::HopByHop(vec![0xc2, 4, 0, 1, 0, 0]))
        .udp(5000, 53, b"x");
    f[18..20].fill(0);
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::Jumbo)));
    assert_eq!(compare(&f), Some("D4"));
    // D5: a UDP length beyond the bytes.
    let mut f = b6.udp(5000, 53, b"x");
    f[54 + 5] = 200;
    assert!(ours(&f).is_ok());
    assert_eq!(compare(&f), Some("D5"));
    // D6: ICMPv6 in IPv4, 4 bytes.
    let f = PacketBuilder::new([198, 18, 0, 1], [198, 18, 0, 2]).ip(58, &[128, 0, 0, 0]);
    assert_eq!(compare(&f), Some("D6"));
    // D7: an IPv4 authentication header.
    let f = PacketBuilder::new([198, 18, 0, 1], [198, 18, 0, 2]).ip(51, &[17, 0, 0, 0]);
    assert_eq!(compare(&f), Some("D7"));
    // D8: a later fragment naming destination options.
    let f = b6
        .clone()
        .ext(Ext6::Fragment {
            offset: 8,
            more: false,
            ident: 3,
        })
        .ip(nh::DEST_OPTS, &[0xff; 3]);
    assert_eq!(ours(&f).unwrap().protocol, nh::DEST_OPTS);
    assert_eq!(compare(&f), Some("D8"));
    // The classes where both refuse.
    let mut f = b6.clone().ext(d(0)).ext(Ext6::HopByHop(vec![])).udp(1, 2, b"");
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::HopByHopNotFirst)));
    assert!(theirs(&f).is_err());
    f.truncate(14 + 40 + 4);
    f[18..20].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::TruncatedExtension)));
    assert!(theirs(&f).is_err());
    let mut f = b6.udp(5000, 53, b"x");
    f[19] += 1;
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::BadPayloadLength)));
    assert!(theirs(&f).is_err());
    let mut f = b6
        .clone()
        .ext(Ext6::Auth {
            spi: 1,
            seq: 1,
            icv: vec![],
        })
        .udp(1, 2, b"");
    f[14 + 41] = 0;
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::BadAuthHeader)));
    assert!(theirs(&f).is_err());
    let mut f = b6.tcp(1, 2, tcp::SYN, b"");
    f.truncate(f.len() - 1);
    f[19] -= 1;
    assert_eq!(ours(&f), Err(Ours::Ipv6(Ipv6Error::TruncatedTransport)));
    assert!(theirs(&f).is_err());
}

/// ICMPv6 errors quoting flows with extension headers, NS and NA frames
/// written by `ndp`, all read alike by etherparse.
#[test]
fn icmpv6_quotes_and_neighbor_discovery() {
    let vip = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0x12, 0x3456);
    let client = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 7);
    let router = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
    let quoted = PacketBuilder6::new(vip, client)
        .ext(Ext6::DestOpts(vec![1, 2, 0, 0]))
        .tcp(80, 40000, tcp::ACK, &[0; 1200]);
    let body = &quoted[14..14 + icmpv6::MAX_QUOTE_LEN];
    let f = PacketBuilder6::new(router, vip).icmpv6(icmpv6::PACKET_TOO_BIG, 0, 1400u32.to_be_bytes(), body);
    let o = ours(&f).unwrap();
    assert_eq!(o.l4, L4::Icmpv6 { kind: 2, code: 0 });
    assert_eq!(compare(&f), None);
    let m = icmpv6::Message::new_checked(&f[54..]).unwrap();
    let q = m.quote().unwrap();
    assert_eq!(
        (q.ports(), q.protocol(), m.mtu()),
        (Some((80, 40000)), nh::TCP, 1400)
    );

    // The same error written in place around the quote.
    let mut g = PacketBuilder6::new(router, vip).ethernet_header().to_vec();
    g.extend_from_slice(&[0; 48]);
    g.extend_from_slice(&quoted[14..]);
    let n = icmpv6::write_error(
        &mut g[14..],
        &router.octets(),
        &vip.octets(),
        64,
        icmpv6::PACKET_TOO_BIG,
        0,
        1400u32.to_be_bytes(),
        icmpv6::MAX_QUOTE_LEN,
    )
    .unwrap();
    g.truncate(14 + n);
    assert_eq!(g, f);
    assert_eq!(compare(&g), None);

    let mut buf = [0u8; ndp::FRAME_LEN];
    ndp::write_solicitation(&mut buf, [2, 0, 0, 0, 0, 1], &router.octets(), &vip.octets()).unwrap();
    assert_eq!(compare(&buf), None);
    {
        let t = SlicedPacket::from_ethernet(&buf).unwrap();
        let Some(NetSlice::Ipv6(ip)) = t.net else { panic!() };
        assert_eq!(ip.header().destination(), ndp::solicited_node(&vip.octets()));
    }
    ndp::write_advertisement(
        &mut buf,
        ndp::multicast_mac(&ndp::ALL_NODES),
        [2, 0, 0, 0, 0, 2],
        &vip.octets(),
        &ndp::ALL_NODES,
        &vip.octets(),
        ndp::FLAG_OVERRIDE,
    )
    .unwrap();
    assert_eq!(compare(&buf), None);
    let t = SlicedPacket::from_ethernet(&buf).unwrap();
    let Some(TransportSlice::Icmpv6(m)) = t.transport else {
        panic!()
    };
    let etherparse::Icmpv6Type::NeighborAdvertisement(h) = m.icmp_type() else {
        panic!()
    };
    assert!(h.r#override && !h.solicited && !h.router);
}

/// The case CI's run of `views_agree_with_etherparse` found: an error
/// quoting a packet whose payload length (edited to 1) ends inside the
/// quote, before its hop-by-hop header is whole. Etherparse stops the
/// quoted chain at the payload length; ours now do too (the bytes after it
/// were never the quoted packet's), instead of reading TCP ports there.
#[test]
fn quote_with_a_payload_length_inside_the_quote() {
    let c = Case {
        v6: true,
        src4: Ipv4Addr::new(198, 18, 0, 0),
        dst4: Ipv4Addr::new(198, 18, 0, 0),
        src6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        dst6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        exts: vec![],
        frag4: None,
        upper: Upper::Icmp(1, 0, [0; 4]),
        data: vec![0; 14],
        quote_exts: vec![Ext6::HopByHop(vec![0; 7])],
        quote_cut: 90,
        nd_options: vec![],
        edits: vec![(191, 1)],
        cut: None,
        pad: 0,
    };
    let f = c.frame();
    // The edit landed on the low byte of the quote's payload length.
    assert_eq!(&f[14 + 40 + 8 + 4..14 + 40 + 8 + 6], &[0, 1]);
    let m = icmpv6::Message::new_checked(&f[54..]).unwrap();
    assert_eq!(m.quote().unwrap_err(), Ipv6Error::TruncatedExtension);
    assert_eq!(compare(&f), None);
    // Unedited, the quote is read whole by both.
    let whole = Case { edits: vec![], ..c }.frame();
    let m = icmpv6::Message::new_checked(&whole[54..]).unwrap();
    assert_eq!(m.quote().unwrap().ports(), Some((80, 40000)));
    assert_eq!(compare(&whole), None);
}

/// The generator reaches deep: over 3000 deterministic cases, both parsers
/// accept frames of every upper layer, fragments and quotes, and ours
/// refuse in several named classes (so the agreement above is not only
/// agreement on garbage).
#[test]
fn generator_coverage() {
    use proptest::strategy::ValueTree;
    use std::collections::BTreeMap;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = case();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..3000 {
        let c = strategy.new_tree(&mut runner).unwrap().current();
        let f = c.frame();
        let diff = compare(&f);
        let class = match ours(&f) {
            Ok(o) => match (o.l4, o.fragment, o.v6) {
                (L4::None, Some(_), true) => "v6 fragment".to_string(),
                (L4::None, Some(_), false) => "v4 fragment".to_string(),
                (l4, _, v6) => format!("{} {:?}", if v6 { "v6" } else { "v4" }, l4)
                    .split([' ', '{'])
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            Err(Ours::Ipv6(e)) => e.name().to_string(),
            Err(e) => format!("{e:?}"),
        };
        *seen.entry(class).or_default() += 1;
        if let Some(d) = diff {
            *seen.entry(d.to_string()).or_default() += 1;
        }
    }
    eprintln!("{seen:#?}");
    for want in [
        "v4 Tcp",
        "v4 Udp",
        "v4 Icmp",
        "v4 fragment",
        "v6 Tcp",
        "v6 Udp",
        "v6 Icmpv6",
        "v6 fragment",
        "v6_truncated_ext_header",
        "v6_truncated_l4",
        "v6_bad_payload_length",
        "v6_hop_by_hop_not_first",
        "D5",
        "D8",
    ] {
        assert!(
            seen.get(want).copied().unwrap_or(0) >= 5,
            "{want} reached < 5 times: {seen:?}"
        );
    }
    // Rarer: a first fragment cut short, two fragment headers.
    for want in ["v6_fragment_no_transport", "v6_duplicate_fragment", "D2"] {
        assert!(seen.contains_key(want), "{want} never reached: {seen:?}");
    }
}
