//! The IPv6 wire layer on arbitrary bytes: the fixed-header view, the
//! extension-header walker, the transport views at the offset it returns,
//! ICMPv6 messages with their quotes, Neighbor Discovery, the setters and
//! the incremental checksum updates. Nothing may panic; and where it is
//! cheap, etherparse (an independent parser) must agree:
//!
//! - a packet we accept (fixed header and walk) with a non-zero payload
//!   length is one etherparse's `Ipv6Slice` accepts with the same
//!   upper-layer protocol and payload offset, unless it is a later
//!   fragment naming an extension header (tests/wire_oracle.rs D8);
//! - a packet etherparse accepts we refuse only for the differences
//!   tests/wire_oracle.rs documents (D1-D4);
//! - an incremental checksum update for a changed address equals a full
//!   recomputation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::wire::checksum::{self, State};
use ulvs::wire::ipv6::{self, next_header as nh, Ipv6Error};
use ulvs::wire::{icmpv6, ndp, tcp, udp};

fn same_ones_complement(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && a & b == 0)
}

fn is_ext(p: u8) -> bool {
    matches!(p, nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS | nh::FRAGMENT | nh::AUTH)
}

/// Every view over `data` as an IPv6 packet; returns our verdict.
fn packet(data: &[u8]) -> Result<ipv6::Chain, Ipv6Error> {
    let ip = ipv6::Packet::new_checked(data)?;
    let _ = (
        ip.version(),
        ip.traffic_class(),
        ip.flow_label(),
        ip.hop_limit(),
        ip.src_u128(),
        ip.dst_u128(),
        ip.payload().len(),
    );
    let chain = ip.walk()?;
    assert!(chain.transport_offset <= ip.total_len());
    assert!(chain.transport_offset - ipv6::HEADER_LEN <= ipv6::MAX_EXT_BYTES);
    if !chain.has_transport() || chain.is_fragment() {
        return Ok(chain);
    }
    let (src, dst) = (ip.src(), ip.dst());
    let new = {
        let mut a = dst;
        a[15] ^= 0x5a;
        a[3] = a[3].wrapping_add(1);
        a
    };
    let mut l4 = ip.bytes()[chain.transport_offset..].to_vec();
    match chain.protocol {
        nh::TCP => {
            // A data offset below 5 passes the walk (20 bytes) and is the
            // TCP view's to refuse.
            let Ok(mut s) = tcp::Segment::new_checked(&mut l4[..]) else {
                return Ok(chain);
            };
            let _ = (s.src_port(), s.dst_port(), s.flags(), s.payload().len());
            s.fill_checksum6(&src, &dst);
            assert!(s.verify_checksum6(&src, &dst));
            s.pseudo_header_changed6(&dst, &new, State::Full);
            let c = s.checksum();
            s.fill_checksum6(&src, &new);
            assert!(same_ones_complement(c, s.checksum()));
        }
        nh::UDP => {
            let mut d = udp::Datagram::new_checked(&mut l4[..]).expect("the walk checked the header");
            let _ = (d.src_port(), d.dst_port(), d.len());
            d.fill_checksum6(&src, &dst);
            assert!(d.verify_checksum6(&src, &dst));
            d.pseudo_header_changed6(&dst, &new, State::Full);
            let c = d.checksum();
            d.fill_checksum6(&src, &new);
            assert!(same_ones_complement(c, d.checksum()));
        }
        nh::ICMPV6 => {
            let mut m = icmpv6::Message::new_checked(&mut l4[..]).expect("the walk checked 8 bytes");
            let _ = (m.msg_type(), m.code(), m.mtu(), m.echo_ident(), m.is_error());
            m.fill_checksum(&src, &dst);
            assert!(m.verify_checksum(&src, &dst));
            m.pseudo_header_changed(&dst, &new);
            assert!(m.verify_checksum(&src, &new));
            m.rewrite_type(icmpv6::ECHO_REPLY);
            assert!(m.verify_checksum(&src, &new));
            if let Ok(mut q) = m.quote_mut() {
                let _ = (q.src(), q.dst(), q.protocol(), q.next_header(), q.ports(), q.chain());
                q.set_src(new);
                q.set_src_port(1);
                q.set_dst_port(2);
            }
            m.fill_checksum(&src, &dst);
            assert!(m.verify_checksum(&src, &dst));
            if let Ok(n) = ndp::Message::new_checked(ip.bytes()[chain.transport_offset..].as_ref()) {
                let _ = (n.target(), n.flags(), n.link_layer(), n.option_mac(3));
            }
        }
        _ => {}
    }
    // Setters on a copy: the header view never panics after new_checked.
    let mut copy = data.to_vec();
    let mut w = ipv6::Packet::new_checked(&mut copy[..]).expect("checked above");
    if w.hop_limit() > 0 {
        w.decrement_hop_limit();
    }
    let old = w.replace_dst(new);
    w.set_src(old);
    w.payload_mut().reverse();
    Ok(chain)
}

fuzz_target!(|data: &[u8]| {
    let ours = packet(data);

    // The same bytes as the quote of an ICMPv6 error, and as an ICMPv6
    // message and a Neighbor Discovery message.
    if let Ok(q) = icmpv6::Quote::new_checked(data) {
        let _ = (q.src(), q.dst(), q.protocol(), q.ports(), q.chain());
    }
    if let Ok(m) = icmpv6::Message::new_checked(data) {
        let _ = m.quote();
    }
    if let Ok(n) = ndp::Message::new_checked(data) {
        let _ = (n.target(), n.flags(), n.link_layer(), n.is_solicitation());
        assert!(data.len() >= ndp::FIXED_LEN);
    }
    if data.len() >= 32 {
        let a: [u8; 16] = data[..16].try_into().expect("16 bytes");
        let b: [u8; 16] = data[16..32].try_into().expect("16 bytes");
        let rest = &data[32..];
        let before = checksum::sum(rest, u32::from(checksum::pseudo_header6(&a, &a, 58, rest.len() as u32)));
        let moved = checksum::update128(!before, &a, &b);
        let after = checksum::sum(rest, u32::from(checksum::pseudo_header6(&a, &b, 58, rest.len() as u32)));
        assert!(same_ones_complement(moved, !after));
        let _ = (ndp::solicited_node(&a), ndp::multicast_mac(&b), ndp::is_solicited_node(&a));
    }

    // An error written around these bytes as its quote parses back: the
    // checksum verifies and the quote reads as the bytes alone do.
    let quote_len = data.len().min(icmpv6::MAX_QUOTE_LEN);
    let mut err = vec![0u8; 48 + quote_len];
    err[48..].copy_from_slice(&data[..quote_len]);
    let (a, b) = ([0x20; 16], [0x01; 16]);
    let n = icmpv6::write_error(&mut err, &a, &b, 64, icmpv6::PACKET_TOO_BIG, 0, [0, 0, 5, 0], quote_len);
    assert_eq!(n, Ok(48 + quote_len));
    let ip = ipv6::Packet::new_checked(&err[..]).expect("a packet we wrote");
    assert_eq!(ip.walk().map(|c| c.protocol), Ok(nh::ICMPV6));
    let m = icmpv6::Message::new_checked(ip.payload()).expect("8 bytes");
    assert!(m.verify_checksum(&a, &b));
    assert_eq!(m.quote().map(|q| q.chain()), ipv6::walk_quote(&data[..quote_len]));

    // etherparse, where it is cheap.
    let plen_zero = data.len() >= 6 && data[4] == 0 && data[5] == 0;
    let theirs = etherparse::Ipv6Slice::from_slice(data);
    match (&ours, &theirs) {
        (Ok(c), Ok(t)) if !plen_zero => {
            let later_ext = !c.has_transport() && is_ext(c.protocol);
            if !later_ext {
                assert_eq!(t.payload().ip_number.0, c.protocol);
                let off = t.payload().payload.as_ptr() as usize - data.as_ptr() as usize;
                assert_eq!(off, c.transport_offset);
            }
        }
        (Ok(c), Err(e)) if !plen_zero => {
            assert!(!c.has_transport() && is_ext(c.protocol), "etherparse refuses {e:?}, we accept {c:?}");
        }
        (Err(e), Ok(_)) => {
            let documented = matches!(
                e,
                Ipv6Error::ChainTooLong | Ipv6Error::DuplicateFragment | Ipv6Error::FragmentNoTransport
            ) || plen_zero;
            // The transport header is ours to check, not Ipv6Slice's.
            assert!(documented || *e == Ipv6Error::TruncatedTransport, "we refuse ({e:?}) what etherparse accepts");
        }
        _ => {}
    }
});
