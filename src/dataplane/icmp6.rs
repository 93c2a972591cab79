//! ICMPv6 and later fragments on the IPv6 path (fast path): what the
//! director does with an ICMPv6 message to a VIP, an ICMPv6 error a NAT
//! server sends about one of its flows, and an IPv6 fragment that carries no
//! ports.
//!
//! * An echo request to a VIP is answered in place (when `answer_ping`, as
//!   for IPv4): type 129, addresses swapped (the pseudo-header sum does not
//!   change, so the checksum is updated for the type alone).
//! * An error to a VIP (Packet Too Big above all: without it a server never
//!   learns a path MTU and large transfers stall; destination unreachable,
//!   time exceeded, parameter problem) quotes a packet the VIP sent, VIP:vport
//!   -> client:cport: the reverse of a flow key. It goes to that flow's
//!   server in the flow's mode: DR (MACs only), TUN (IPv6-in-IPv6), NAT (outer
//!   destination and the quoted source address and port become the server's,
//!   the hop limit drops by one, the ICMPv6 checksum is redone).
//! * NAT: an error a server sends to a client about a packet it got
//!   (client -> RIP:rport) goes on to the client as if the VIP sent it.
//! * Fragments: the first fragment of a datagram (the one with the
//!   transport header) is a flow packet and records its server in the
//!   per-worker [`FragTable<FragKey6>`](crate::fwd::frag::FragTable); a later
//!   fragment follows it here. Keyed on the fragment header's next header,
//!   which both the first and the later fragments carry (the chain's
//!   upper-layer protocol may lie beyond extension headers the later ones
//!   lack).
//!
//! Fanout: the IPv6 cBPF program hashes the XOR of the address words, and
//! for ICMPv6 those of the quoted packet, so every fragment of a datagram
//! (same addresses) and an error quoting VIP -> client reach the worker that
//! holds the flow (client, VIP). NAT runs one worker.

use crate::fwd::flow::FlowKey6;
use crate::fwd::frag::FragKey6;
use crate::fwd::table::{Backend6, BackendFwd, FwdTable, Mode};
use crate::io::{Frame, VnetHdr};
use crate::wire::ethernet::{self, EtherType, Mac, HEADER_LEN as ETH};
use crate::wire::icmpv6;
use crate::wire::ipv6::{self, next_header, Chain};

use super::classify::Reason;
use super::rewrite::NatSide;

/// What an ICMPv6 message to a VIP (or from a NAT server) asks of the
/// worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp6 {
    /// An echo request to a VIP, to answer in place.
    Echo,
    /// An error to a VIP about a packet of flow `key` (the flow as the
    /// client sends it: the quote reversed) of service `service`.
    Error { key: FlowKey6, service: usize },
    /// NAT: an error a server sent to a client about a packet of the flow
    /// whose reply-direction key (server -> client) is `rkey`.
    FromServer { rkey: FlowKey6 },
}

/// The ICMPv6 message of `ip`, whose walked `chain` ends in ICMPv6.
#[inline]
fn message<'a>(ip: &'a ipv6::Packet<&[u8]>, chain: &Chain) -> Result<icmpv6::Message<&'a [u8]>, Reason> {
    let b = ip
        .bytes()
        .get(chain.transport_offset..)
        .ok_or(Reason::V6TruncatedL4)?;
    icmpv6::Message::new_checked(b).map_err(|_| Reason::V6TruncatedL4)
}

/// The quoted packet's (protocol, source port, destination port), when it
/// is a TCP/UDP packet with its ports.
#[inline]
fn quoted_ports(q: &icmpv6::Quote<&[u8]>) -> Result<(u8, u16, u16), Reason> {
    let proto = q.protocol();
    if !matches!(proto, next_header::TCP | next_header::UDP) {
        return Err(Reason::V6Icmp);
    }
    // A quoted later fragment has no ports: nothing names its flow.
    let (sport, dport) = q.ports().ok_or(Reason::V6Icmp)?;
    Ok((proto, sport, dport))
}

/// Classify an ICMPv6 packet `ip` (its `chain` ends in ICMPv6, it is not a
/// fragment) to a VIP (`to_vip`) or from a NAT server.
///
/// # Errors
/// [`Reason::V6TruncatedL4`] (message under 8 bytes),
/// [`Reason::V6IcmpBadQuote`] (an error whose quote is no IPv6 packet),
/// [`Reason::V6Icmp`] (neither an answered echo nor an error about a
/// TCP/UDP packet of the VIP or of a NAT server), [`Reason::NoService`].
#[inline]
pub fn classify(
    ip: &ipv6::Packet<&[u8]>,
    chain: &Chain,
    to_vip: bool,
    table: &FwdTable,
) -> Result<Icmp6, Reason> {
    let m = message(ip, chain)?;
    let (src, dst) = (ip.src(), ip.dst());
    if to_vip && m.msg_type() == icmpv6::ECHO_REQUEST && table.answer_ping {
        // Only a bare echo is answered: reflecting extension headers (a
        // routing header above all) would send the reply somewhere else.
        if chain.transport_offset != ipv6::HEADER_LEN {
            return Err(Reason::V6Icmp);
        }
        return Ok(Icmp6::Echo);
    }
    if !m.is_error() {
        return Err(Reason::V6Icmp);
    }
    let q = m.quote().map_err(|_| Reason::V6IcmpBadQuote)?;
    let (proto, qsport, qdport) = quoted_ports(&q)?;
    if to_vip {
        // The quote is VIP:vport -> client:cport, a packet the VIP sent.
        if q.src() != dst {
            return Err(Reason::V6Icmp);
        }
        let vip = u128::from_be_bytes(dst);
        let service = table.find_service6(vip, proto, qsport).ok_or(Reason::NoService)?;
        return Ok(Icmp6::Error {
            key: FlowKey6 {
                src: u128::from_be_bytes(q.dst()),
                dst: vip,
                sport: qdport,
                dport: qsport,
                proto,
            },
            service,
        });
    }
    // From a NAT server: the quote is client:cport -> RIP:rport, a packet
    // the server got from the director, and the error goes to its client.
    if q.dst() != src || q.src() != dst {
        return Err(Reason::V6Icmp);
    }
    Ok(Icmp6::FromServer {
        rkey: FlowKey6 {
            src: u128::from_be_bytes(src),
            dst: u128::from_be_bytes(dst),
            sport: qdport,
            dport: qsport,
            proto,
        },
    })
}

/// The fragment-table key of the fragmented packet `ip` with `chain` (whose
/// fragment header is `f`).
#[inline]
pub fn frag_key(ip: &ipv6::Packet<&[u8]>, f: &ipv6::Fragment) -> FragKey6 {
    FragKey6 {
        src: ip.src_u128(),
        dst: ip.dst_u128(),
        id: f.ident,
        proto: f.next_header,
    }
}

/// Turn an ICMPv6 echo request to a VIP (no extension headers: see
/// [`classify`]) into its reply, in place: back to the sender's MAC, hop
/// limit 64. The checksum is updated for the type only (swapping the
/// addresses leaves the pseudo-header sum as it was), so a request with a
/// bad checksum gets a reply with a bad checksum, as a host would not
/// answer it either way.
///
/// # Errors
/// A header reason when the frame is not an ICMPv6 packet (classify
/// guarantees it is).
pub fn echo_reply(f: &mut Frame<'_>, my_mac: Mac) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(f.data_mut()).map_err(|_| Reason::Runt)?;
    let sender = eth.src();
    eth.set_dst(sender);
    eth.set_src(my_mac);
    let mut ip = ipv6::Packet::new_checked(eth.payload_mut())?;
    icmpv6::Message::new_checked(ip.payload_mut())
        .map_err(|_| Reason::V6TruncatedL4)?
        .rewrite_type(icmpv6::ECHO_REPLY);
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_hop_limit(64);
    f.vnet = VnetHdr::default();
    Ok(())
}

/// What is sent to a real server by [`to_server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What6 {
    /// An ICMPv6 error to the VIP (NAT rewrites its quote).
    Error,
    /// A later fragment (no transport header: NAT rewrites the address).
    LaterFragment,
}

/// Send the frame (an IPv6 packet to a VIP: an error quoting a packet of
/// backend `b`'s flow, or a later fragment of a datagram sent to it) on to
/// that server in `mode`. `b6` is the server's IPv6 side. TUN here never
/// answers Packet Too Big (an error must not cause another error); the
/// worker sends later fragments through `rewrite::tun6`, which does.
///
/// # Errors
/// [`Reason::ServerMacUnknown`]; NAT: [`Reason::HopLimitExceeded`],
/// [`Reason::V6IcmpBadQuote`]; TUN: [`Reason::NextHopUnknown`] (no
/// director IPv6 address to send from), [`Reason::TunTooBig`] (the packet
/// and 40 bytes exceed the MTU), [`Reason::NoBuffer`],
/// [`Reason::LengthOverflow`].
pub fn to_server(
    f: &mut Frame<'_>,
    table: &FwdTable,
    mode: Mode,
    b: &BackendFwd,
    b6: &Backend6,
    what: What6,
) -> Result<(), Reason> {
    let mac = b.mac.ok_or(Reason::ServerMacUnknown)?;
    match mode {
        Mode::Dr => set_macs(f.data_mut(), mac, table.director_mac),
        Mode::Nat => {
            let rport = (b.port != 0).then_some(b.port);
            nat_to_server(f.data_mut(), b6.addr, rport, what)?;
            f.vnet = VnetHdr::default();
            set_macs(f.data_mut(), mac, table.director_mac)
        }
        Mode::Tun => {
            if table.director_ip6 == 0 {
                return Err(Reason::NextHopUnknown);
            }
            encap6(f, table.director_ip6, b6.addr, mac, table.director_mac, table.mtu)
        }
    }
}

#[inline]
fn set_macs(frame: &mut [u8], dst: Mac, src: Mac) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    eth.set_dst(dst);
    eth.set_src(src);
    Ok(())
}

/// NAT toward a server: the destination becomes `rip`, hop limit - 1; an
/// error's quote (VIP:vport -> client) gets `rip` (and `rport`) as its
/// source, and the ICMPv6 checksum is recomputed (the quote is inside it).
fn nat_to_server(frame: &mut [u8], rip: u128, rport: Option<u16>, what: What6) -> Result<(), Reason> {
    let rip = rip.to_be_bytes();
    let quote = |q: &mut icmpv6::Quote<&mut [u8]>| {
        q.set_src(rip);
        if let Some(p) = rport {
            q.set_src_port(p);
        }
    };
    nat_hop(frame, NatSide::Dst, rip, (what == What6::Error).then_some(quote))
}

/// NAT: an ICMPv6 error from a server (RIP -> client, quoting client:cport
/// -> RIP:rport) sent on to the client from the VIP: the outer source and
/// the quoted destination become `vip` (and `vport`), hop limit - 1, the
/// ICMPv6 checksum is recomputed, and the frame goes to `macs`.
///
/// # Errors
/// [`Reason::HopLimitExceeded`], [`Reason::V6IcmpBadQuote`], a header
/// reason when the frame is malformed (classify guarantees it is not).
pub fn nat_from_server(
    f: &mut Frame<'_>,
    vip: u128,
    vport: u16,
    dst_mac: Mac,
    src_mac: Mac,
) -> Result<(), Reason> {
    let vip = vip.to_be_bytes();
    let quote = |q: &mut icmpv6::Quote<&mut [u8]>| {
        q.set_dst(vip);
        q.set_dst_port(vport);
    };
    nat_hop(f.data_mut(), NatSide::Src, vip, Some(quote))?;
    set_macs(f.data_mut(), dst_mac, src_mac)?;
    f.vnet = VnetHdr::default();
    Ok(())
}

/// NAT: a later fragment of a server's reply (no transport header) on to
/// the client: its source becomes `vip`, hop limit - 1, new MACs.
///
/// # Errors
/// [`Reason::HopLimitExceeded`], a header reason when malformed.
pub fn nat_fragment_to_client(
    f: &mut Frame<'_>,
    vip: u128,
    dst_mac: Mac,
    src_mac: Mac,
) -> Result<(), Reason> {
    let no_quote: Option<fn(&mut icmpv6::Quote<&mut [u8]>)> = None;
    nat_hop(f.data_mut(), NatSide::Src, vip.to_be_bytes(), no_quote)?;
    set_macs(f.data_mut(), dst_mac, src_mac)
}

/// What the NAT rewrites of this module share: check and decrement the hop
/// limit and give `side`'s outer address `addr`; for an error (`quote`
/// given) let `quote` rewrite the quoted packet and recompute the ICMPv6
/// checksum (the quote is inside it). The extension header chain is walked
/// only for an error, the one case that needs the ICMPv6 header's place
/// (a later fragment's chain was walked by classify already).
fn nat_hop(
    frame: &mut [u8],
    side: NatSide,
    addr: [u8; 16],
    quote: Option<impl FnOnce(&mut icmpv6::Quote<&mut [u8]>)>,
) -> Result<(), Reason> {
    let eth = frame.get_mut(ETH..).ok_or(Reason::Runt)?;
    let mut ip = ipv6::Packet::new_checked(eth)?;
    if ip.hop_limit() <= 1 {
        return Err(Reason::HopLimitExceeded);
    }
    let chain = match quote {
        Some(_) => Some(ipv6::Packet::new_checked(ip.bytes())?.walk()?),
        None => None,
    };
    ip.decrement_hop_limit();
    match side {
        NatSide::Dst => ip.set_dst(addr),
        NatSide::Src => ip.set_src(addr),
    }
    let (Some(quote), Some(chain)) = (quote, chain) else {
        return Ok(());
    };
    let (src, dst) = (ip.src(), ip.dst());
    let msg = ip
        .bytes_mut()
        .get_mut(chain.transport_offset..)
        .ok_or(Reason::V6TruncatedL4)?;
    let mut m = icmpv6::Message::new_checked(msg).map_err(|_| Reason::V6TruncatedL4)?;
    quote(&mut m.quote_mut().map_err(|_| Reason::V6IcmpBadQuote)?);
    m.fill_checksum(&src, &dst);
    Ok(())
}

/// Wrap the frame's IPv6 packet in an outer IPv6 header (next header 41,
/// `src` -> `dst`, hop limit 64), in place; link padding is left out. A
/// packet that would not fit `mtu` with the 40 extra bytes is refused (the
/// error and fragment paths carry no transfer to slow down: a client's
/// fragments are resent smaller only after a Packet Too Big, which the
/// flow path sends).
///
/// # Errors
/// [`Reason::TunTooBig`], [`Reason::LengthOverflow`], [`Reason::NoBuffer`].
pub fn encap6(
    f: &mut Frame<'_>,
    src: u128,
    dst: u128,
    dst_mac: Mac,
    src_mac: Mac,
    mtu: u32,
) -> Result<(), Reason> {
    let inner = {
        let eth = f.data().get(ETH..).ok_or(Reason::Runt)?;
        ipv6::Packet::new_checked(eth)?.total_len()
    };
    if inner + ipv6::HEADER_LEN > mtu as usize {
        return Err(Reason::TunTooBig);
    }
    let plen = u16::try_from(inner).map_err(|_| Reason::LengthOverflow)?;
    f.set_len(ETH + inner);
    if !f.push_front(ipv6::HEADER_LEN) {
        return Err(Reason::NoBuffer);
    }
    let mut eth = ethernet::Frame::new_unchecked(f.data_mut());
    eth.set_dst(dst_mac);
    eth.set_src(src_mac);
    eth.set_ethertype(EtherType::Ipv6);
    let mut o = ipv6::Packet::new_unchecked(&mut eth.payload_mut()[..ipv6::HEADER_LEN]);
    o.set_ver_tc_flow(0, 0);
    o.set_payload_len(plen);
    o.set_next_header(next_header::IPV6);
    o.set_hop_limit(64);
    o.set_src(src.to_be_bytes());
    o.set_dst(dst.to_be_bytes());
    f.vnet = VnetHdr::default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::table::BackendState;
    use crate::io::RxMeta;
    use crate::wire::builder::PacketBuilder6;
    use std::net::Ipv6Addr;

    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 7);
    const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    const RIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 11);
    const ME: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn frame_of(bytes: &[u8], buf: &mut Vec<u8>) -> usize {
        let head = 128;
        buf.clear();
        buf.resize(head + bytes.len() + 64, 0xaa);
        buf[head..head + bytes.len()].copy_from_slice(bytes);
        head
    }

    fn parse(b: &[u8]) -> (ipv6::Packet<&[u8]>, Chain) {
        let ip = ipv6::Packet::new_checked(&b[ETH..]).unwrap();
        let c = ip.walk().unwrap();
        (ip, c)
    }

    fn table() -> FwdTable {
        let mut t = FwdTable::empty(ME);
        t.services6.push(crate::fwd::table::ServiceFwd6 {
            vip: u128::from(VIP),
            port: 80,
            proto: 6,
            mode: Mode::Dr,
            maglev: crate::fwd::maglev::MaglevTable::from_slots(vec![crate::fwd::maglev::Member::new(0); 7]),
            members: vec![0],
            client_affinity: false,
        });
        t.sort();
        t
    }

    /// What the VIP sent (server -> client, as the server wrote it).
    fn reply() -> Vec<u8> {
        PacketBuilder6::new(VIP, CLIENT).tcp(80, 40000, 0x12, &[7; 1300])
    }

    #[test]
    fn error_to_vip_names_the_reversed_flow() {
        let t = table();
        let r = reply();
        let quote = &r[ETH..ETH + icmpv6::MAX_QUOTE_LEN];
        let ptb =
            PacketBuilder6::new(ROUTER, VIP).icmpv6(icmpv6::PACKET_TOO_BIG, 0, 1280u32.to_be_bytes(), quote);
        let (ip, c) = parse(&ptb);
        let k = classify(&ip, &c, true, &t).unwrap();
        assert_eq!(
            k,
            Icmp6::Error {
                key: FlowKey6 {
                    src: u128::from(CLIENT),
                    dst: u128::from(VIP),
                    sport: 40000,
                    dport: 80,
                    proto: 6
                },
                service: 0
            }
        );
        // Not about the VIP's packet; a broken quote; an unknown message.
        let other = PacketBuilder6::new(CLIENT, VIP).tcp(80, 40000, 0x12, &[]);
        let e = PacketBuilder6::new(ROUTER, VIP).icmpv6(1, 4, [0; 4], &other[ETH..]);
        let (ip, c) = parse(&e);
        assert_eq!(classify(&ip, &c, true, &t), Err(Reason::V6Icmp));
        let e = PacketBuilder6::new(ROUTER, VIP).icmpv6(1, 4, [0; 4], &quote[..30]);
        let (ip, c) = parse(&e);
        assert_eq!(classify(&ip, &c, true, &t), Err(Reason::V6IcmpBadQuote));
        let e = PacketBuilder6::new(ROUTER, VIP).icmpv6(200, 0, [0; 4], &[]);
        let (ip, c) = parse(&e);
        assert_eq!(classify(&ip, &c, true, &t), Err(Reason::V6Icmp));
        // A quote of another port of the VIP has no service.
        let r = PacketBuilder6::new(VIP, CLIENT).tcp(81, 40000, 0x12, &[]);
        let e = PacketBuilder6::new(ROUTER, VIP).icmpv6(3, 0, [0; 4], &r[ETH..]);
        let (ip, c) = parse(&e);
        assert_eq!(classify(&ip, &c, true, &t), Err(Reason::NoService));
    }

    #[test]
    fn echo_answered_only_when_asked_and_bare() {
        let mut t = table();
        let req = PacketBuilder6::new(CLIENT, VIP)
            .macs(ME, [2, 0, 0, 0, 0, 1])
            .icmpv6(icmpv6::ECHO_REQUEST, 0, [0, 1, 0, 9], b"ping");
        let (ip, c) = parse(&req);
        assert_eq!(classify(&ip, &c, true, &t), Ok(Icmp6::Echo));
        let mut buf = Vec::new();
        let head = frame_of(&req, &mut buf);
        let mut f = Frame::new(&mut buf, head, req.len(), RxMeta::default(), VnetHdr::default());
        echo_reply(&mut f, ME).unwrap();
        let out = f.data().to_vec();
        let (ip, _) = parse(&out);
        assert_eq!(ip.src(), VIP.octets());
        assert_eq!(ip.dst(), CLIENT.octets());
        assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 1]);
        let m = icmpv6::Message::new_checked(ip.payload()).unwrap();
        assert_eq!(m.msg_type(), icmpv6::ECHO_REPLY);
        assert!(m.verify_checksum(&ip.src(), &ip.dst()));
        t.answer_ping = false;
        let (ip, c) = parse(&req);
        assert_eq!(classify(&ip, &c, true, &t), Err(Reason::V6Icmp));
    }

    #[test]
    fn nat_error_rewrites_quote_and_checksum() {
        let r = reply();
        let e = PacketBuilder6::new(ROUTER, VIP).icmpv6(
            icmpv6::PACKET_TOO_BIG,
            0,
            1400u32.to_be_bytes(),
            &r[ETH..ETH + 200],
        );
        let b = BackendFwd {
            addr: 0,
            port: 8080,
            mac: Some([2, 0, 0, 0, 0, 11]),
            state: BackendState::Up,
            svc_vip: 0,
            svc_port: 80,
            mode: Mode::Nat,
        };
        let b6 = Backend6 {
            addr: u128::from(RIP),
            svc_vip: u128::from(VIP),
        };
        let mut buf = Vec::new();
        let head = frame_of(&e, &mut buf);
        let mut f = Frame::new(&mut buf, head, e.len(), RxMeta::default(), VnetHdr::default());
        to_server(&mut f, &table(), Mode::Nat, &b, &b6, What6::Error).unwrap();
        let out = f.data().to_vec();
        let (ip, c) = parse(&out);
        assert_eq!(ip.dst(), RIP.octets());
        assert_eq!(ip.hop_limit(), 63);
        let m = icmpv6::Message::new_checked(&ip.bytes()[c.transport_offset..]).unwrap();
        assert!(m.verify_checksum(&ip.src(), &ip.dst()));
        let q = m.quote().unwrap();
        assert_eq!(q.src(), RIP.octets());
        assert_eq!(q.ports(), Some((8080, 40000)));
        assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 11]);
    }
}
