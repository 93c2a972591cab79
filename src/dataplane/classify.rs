//! Classification: frame bytes -> the flow key and service of a VIP packet, or
//! the named reason it is not forwarded (fast path). Every malformed class has
//! its own reason so tests can assert exactly which counter moved.

use crate::fwd::flow::{FlowKey, FlowKey6};
use crate::fwd::frag::{FragKey, FragKey6};
use crate::fwd::table::FwdTable;
use crate::io::{pkttype, RxMeta};
use crate::wire::ethernet::{self, EtherType};
use crate::wire::ipv4::{self, Ipv4Error, Protocol};
use crate::wire::ipv6::{self, next_header, Ipv6Error};
use crate::wire::{icmp, tcp, udp};

/// Why a frame was not forwarded. The discriminant indexes counter arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Reason {
    /// Too short for Ethernet + a minimal IPv4 header.
    Runt,
    /// EtherType IPv4 but the version nibble is not 4.
    BadVersion,
    /// IHL below 5.
    BadIhl,
    /// Total length below the header or beyond the frame.
    BadTotalLength,
    /// IPv4 options on a VIP packet (not supported, like Katran).
    IpOptions,
    /// A non-first fragment whose first fragment was not seen (or expired).
    Fragment,
    /// The TCP/UDP header is cut short.
    TruncatedL4,
    /// An 802.1Q/802.1ad tagged frame (in the bytes or stripped by the NIC).
    Vlan,
    /// The ring slot cut the frame short.
    Oversize,
    /// Not IPv4 (ARP and others: the kernel and the slow path handle those).
    NotIpv4,
    /// Not addressed to the director's MAC.
    NotForUs,
    /// IPv4, but not to a VIP.
    NotVip,
    /// To a VIP, but no service matches the protocol and port.
    NoService,
    /// The service has no server able to take a new flow.
    NoServer,
    /// The chosen server's MAC is not resolved.
    ServerMacUnknown,
    /// The send failed.
    TxError,
    /// NAT: a packet from a real server with no flow entry.
    NatNoFlow,
    /// NAT: the TTL ran out.
    TtlExceeded,
    /// TUN: too big to encapsulate and DF set: an ICMP "fragmentation needed" was sent.
    TunFragNeeded,
    /// TUN: too big to encapsulate, DF clear: dropped.
    TunTooBig,
    /// An ICMP error to a VIP whose quoted flow is unknown.
    IcmpNoFlow,
    /// ICMP to a VIP that is neither an echo request (when answered) nor an error.
    IcmpOther,
    /// NAT/TUN: no next-hop MAC (gateway or on-link host unresolved).
    NextHopUnknown,
    /// No room to build a frame (headroom or segmentation arena).
    NoBuffer,
    /// A rewrite would need a length or fragment offset beyond its 16-bit
    /// (13-bit) field, e.g. an IP-in-IP header on a 65,516-byte packet.
    LengthOverflow,
    /// IPv6 to a VIP refused by the header check or the extension-header
    /// walk: one reason per [`Ipv6Error`], named as it names itself.
    V6Truncated,
    V6BadVersion,
    V6BadPayloadLength,
    V6Jumbo,
    V6HopByHopNotFirst,
    V6ExtChainTooLong,
    V6TruncatedExtHeader,
    V6BadAuthHeader,
    V6DuplicateFragment,
    V6TruncatedL4,
    V6FragmentNoTransport,
    /// A later IPv6 fragment to a VIP whose first fragment was not seen
    /// (or expired, or was not forwarded).
    V6Fragment,
    /// ICMPv6 to a VIP (or from a NAT server) that is neither an answered
    /// echo request nor an error quoting a TCP/UDP packet of a VIP flow;
    /// also a fragmented ICMPv6 message.
    V6Icmp,
    /// NAT over IPv6: the hop limit ran out (arrived with 1 or 0).
    HopLimitExceeded,
    /// TUN over IPv6: too big for the tunnel (MTU - 40): an ICMPv6 Packet
    /// Too Big was sent to the client instead.
    TunPacketTooBig,
    /// An ICMPv6 error to a VIP (or from a NAT server) whose quoted flow is
    /// unknown.
    V6IcmpNoFlow,
    /// An ICMPv6 error whose quote is not an IPv6 packet (cut inside its
    /// header or extension headers, or another version).
    V6IcmpBadQuote,
}

impl Reason {
    pub const COUNT: usize = 42;
    /// Every reason, in discriminant order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::Runt,
        Reason::BadVersion,
        Reason::BadIhl,
        Reason::BadTotalLength,
        Reason::IpOptions,
        Reason::Fragment,
        Reason::TruncatedL4,
        Reason::Vlan,
        Reason::Oversize,
        Reason::NotIpv4,
        Reason::NotForUs,
        Reason::NotVip,
        Reason::NoService,
        Reason::NoServer,
        Reason::ServerMacUnknown,
        Reason::TxError,
        Reason::NatNoFlow,
        Reason::TtlExceeded,
        Reason::TunFragNeeded,
        Reason::TunTooBig,
        Reason::IcmpNoFlow,
        Reason::IcmpOther,
        Reason::NextHopUnknown,
        Reason::NoBuffer,
        Reason::LengthOverflow,
        Reason::V6Truncated,
        Reason::V6BadVersion,
        Reason::V6BadPayloadLength,
        Reason::V6Jumbo,
        Reason::V6HopByHopNotFirst,
        Reason::V6ExtChainTooLong,
        Reason::V6TruncatedExtHeader,
        Reason::V6BadAuthHeader,
        Reason::V6DuplicateFragment,
        Reason::V6TruncatedL4,
        Reason::V6FragmentNoTransport,
        Reason::V6Fragment,
        Reason::V6Icmp,
        Reason::HopLimitExceeded,
        Reason::TunPacketTooBig,
        Reason::V6IcmpNoFlow,
        Reason::V6IcmpBadQuote,
    ];

    /// The counter name used in `ulvsadm stats` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Runt => "runt",
            Reason::BadVersion => "bad_version",
            Reason::BadIhl => "bad_ihl",
            Reason::BadTotalLength => "bad_total_length",
            Reason::IpOptions => "ip_options",
            Reason::Fragment => "fragment",
            Reason::TruncatedL4 => "truncated_l4",
            Reason::Vlan => "vlan",
            Reason::Oversize => "oversize",
            Reason::NotIpv4 => "not_ipv4",
            Reason::NotForUs => "not_for_us",
            Reason::NotVip => "not_vip",
            Reason::NoService => "no_service",
            Reason::NoServer => "no_server",
            Reason::ServerMacUnknown => "server_mac_unknown",
            Reason::TxError => "tx_error",
            Reason::NatNoFlow => "nat_no_flow",
            Reason::TtlExceeded => "ttl_exceeded",
            Reason::TunFragNeeded => "tun_frag_needed",
            Reason::TunTooBig => "tun_too_big",
            Reason::IcmpNoFlow => "icmp_no_flow",
            Reason::IcmpOther => "icmp_other",
            Reason::NextHopUnknown => "next_hop_unknown",
            Reason::NoBuffer => "no_buffer",
            Reason::LengthOverflow => "length_overflow",
            Reason::V6Truncated => Ipv6Error::Truncated.name(),
            Reason::V6BadVersion => Ipv6Error::BadVersion.name(),
            Reason::V6BadPayloadLength => Ipv6Error::BadPayloadLength.name(),
            Reason::V6Jumbo => Ipv6Error::Jumbo.name(),
            Reason::V6HopByHopNotFirst => Ipv6Error::HopByHopNotFirst.name(),
            Reason::V6ExtChainTooLong => Ipv6Error::ChainTooLong.name(),
            Reason::V6TruncatedExtHeader => Ipv6Error::TruncatedExtension.name(),
            Reason::V6BadAuthHeader => Ipv6Error::BadAuthHeader.name(),
            Reason::V6DuplicateFragment => Ipv6Error::DuplicateFragment.name(),
            Reason::V6TruncatedL4 => Ipv6Error::TruncatedTransport.name(),
            Reason::V6FragmentNoTransport => Ipv6Error::FragmentNoTransport.name(),
            Reason::V6Fragment => "v6_fragment",
            Reason::V6Icmp => "v6_icmp",
            Reason::HopLimitExceeded => "hop_limit_exceeded",
            Reason::TunPacketTooBig => "tun_packet_too_big",
            Reason::V6IcmpNoFlow => "v6_icmp_no_flow",
            Reason::V6IcmpBadQuote => "v6_icmp_bad_quote",
        }
    }
}

impl From<Ipv4Error> for Reason {
    fn from(e: Ipv4Error) -> Self {
        match e {
            Ipv4Error::Truncated => Reason::Runt,
            Ipv4Error::BadVersion => Reason::BadVersion,
            Ipv4Error::BadIhl => Reason::BadIhl,
            Ipv4Error::BadTotalLength => Reason::BadTotalLength,
        }
    }
}

impl From<Ipv6Error> for Reason {
    #[inline]
    fn from(e: Ipv6Error) -> Self {
        match e {
            Ipv6Error::Truncated => Reason::V6Truncated,
            Ipv6Error::BadVersion => Reason::V6BadVersion,
            Ipv6Error::BadPayloadLength => Reason::V6BadPayloadLength,
            Ipv6Error::Jumbo => Reason::V6Jumbo,
            Ipv6Error::HopByHopNotFirst => Reason::V6HopByHopNotFirst,
            Ipv6Error::ChainTooLong => Reason::V6ExtChainTooLong,
            Ipv6Error::TruncatedExtension => Reason::V6TruncatedExtHeader,
            Ipv6Error::BadAuthHeader => Reason::V6BadAuthHeader,
            Ipv6Error::DuplicateFragment => Reason::V6DuplicateFragment,
            Ipv6Error::TruncatedTransport => Reason::V6TruncatedL4,
            Ipv6Error::FragmentNoTransport => Reason::V6FragmentNoTransport,
        }
    }
}

/// What kind of frame the worker acts on (the bytes themselves are viewed
/// with `wire::ipv4::Packet` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP/UDP to a VIP service (also the first fragment of a datagram).
    Flow(Classified),
    /// A later fragment to a VIP (no ports): follows its first fragment.
    LaterFragment(FragKey),
    /// An ICMP echo request to a VIP.
    Echo,
    /// An ICMP error to a VIP quoting a packet the VIP sent; `key` is the
    /// flow as the client sent it (reversed quote), `service` its service.
    IcmpError { key: FlowKey, service: usize },
    /// NAT: a packet from a real server back to a client.
    NatReply(Classified),
    /// NAT: a later fragment of a reply (follows its first fragment).
    NatReplyFragment(FragKey),
    /// NAT: an ICMP error a real server sent to a client about a packet of a
    /// flow; `rkey` is that flow's reply-direction key.
    NatIcmpFromServer { rkey: FlowKey },
}

/// Classify one received frame against the published table.
///
/// # Errors
/// The [`Reason`] the frame is not acted on.
#[inline]
pub fn classify_packet(frame: &[u8], meta: &RxMeta, table: &FwdTable) -> Result<Kind, Reason> {
    if meta.vlan_tci.is_some() {
        return Err(Reason::Vlan);
    }
    if meta.truncated {
        return Err(Reason::Oversize);
    }
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    if meta.pkttype != pkttype::HOST {
        return Err(Reason::NotForUs);
    }
    match eth.ethertype() {
        EtherType::Ipv4 => {}
        EtherType::Vlan => return Err(Reason::Vlan),
        _ => return Err(Reason::NotIpv4),
    }
    let ip = ipv4::Packet::new_checked(eth.payload())?;
    let dst = ip.dst();
    let to_vip = table.is_vip(dst);
    if !to_vip && !table.is_nat_backend(ip.src()) {
        return Err(Reason::NotVip);
    }
    if ip.header_len() != ipv4::MIN_HEADER_LEN {
        return Err(Reason::IpOptions);
    }
    let proto = ip.protocol();
    let proto_num: u8 = proto.into();
    let first_fragment = ip.more_fragments() && ip.frag_offset() == 0;
    if ip.frag_offset() != 0 {
        let k = FragKey {
            src: ip.src(),
            dst,
            id: ip.ident(),
            proto: proto_num,
        };
        // Without ports it follows its first fragment (to a server, or
        // back from one as a NAT reply).
        return Ok(if to_vip {
            Kind::LaterFragment(k)
        } else {
            Kind::NatReplyFragment(k)
        });
    }
    if !to_vip && proto == Protocol::Icmp {
        // An ICMP error from a NAT server about a packet it received
        // (client -> RIP:rport): find the flow by its reply-direction key.
        let m = icmp::Message::new_checked(ip.payload()).map_err(|_| Reason::TruncatedL4)?;
        if first_fragment || !m.is_error() {
            return Err(Reason::IcmpOther);
        }
        let q = m.quote().map_err(|_| Reason::TruncatedL4)?;
        if q.dst() != ip.src() || q.src() != dst {
            return Err(Reason::IcmpOther);
        }
        return Ok(Kind::NatIcmpFromServer {
            rkey: FlowKey {
                src: q.dst(),
                dst: q.src(),
                sport: q.dst_port(),
                dport: q.src_port(),
                proto: q.protocol().into(),
            },
        });
    }
    if !to_vip {
        // NAT reply candidate (maybe a first fragment): the caller checks
        // the flow table.
        let c = ports(&ip, proto)?;
        return Ok(Kind::NatReply(Classified {
            key: FlowKey {
                src: ip.src(),
                dst,
                sport: c.0,
                dport: c.1,
                proto: proto_num,
            },
            service: usize::MAX,
            tcp_flags: c.2,
            tcp_seq: c.3,
            l4_offset: ethernet::HEADER_LEN + ip.header_len(),
            first_fragment,
            ip_id: ip.ident(),
        }));
    }
    if proto == Protocol::Icmp {
        if first_fragment {
            return Err(Reason::Fragment);
        }
        let m = icmp::Message::new_checked(ip.payload()).map_err(|_| Reason::TruncatedL4)?;
        if m.msg_type() == icmp::ECHO_REQUEST && table.answer_ping {
            return Ok(Kind::Echo);
        }
        if !m.is_error() {
            return Err(Reason::IcmpOther);
        }
        // The quoted packet: VIP:vport -> client:cport.
        let q = m.quote().map_err(|_| Reason::TruncatedL4)?;
        let qproto = q.protocol();
        if q.src() != dst || !matches!(qproto, Protocol::Tcp | Protocol::Udp) {
            return Err(Reason::IcmpOther);
        }
        let key = FlowKey {
            src: q.dst(),
            dst,
            sport: q.dst_port(),
            dport: q.src_port(),
            proto: qproto.into(),
        };
        let service = table
            .find_service(dst, qproto.into(), q.src_port())
            .ok_or(Reason::NoService)?;
        return Ok(Kind::IcmpError { key, service });
    }
    let c = ports(&ip, proto)?;
    let service = table.find_service(dst, proto_num, c.1).ok_or(Reason::NoService)?;
    Ok(Kind::Flow(Classified {
        key: FlowKey {
            src: ip.src(),
            dst,
            sport: c.0,
            dport: c.1,
            proto: proto_num,
        },
        service,
        tcp_flags: c.2,
        tcp_seq: c.3,
        l4_offset: ethernet::HEADER_LEN + ip.header_len(),
        first_fragment,
        ip_id: ip.ident(),
    }))
}

/// True when `frame` carries IPv6 (EtherType 0x86dd): the worker sends
/// such frames down the IPv6 path before [`classify_packet`] sees them, so
/// the IPv4 classification and its [`Kind`] stay as small as without IPv6.
#[inline(always)]
pub fn is_ipv6(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x86, 0xdd][..])
}

/// What kind of IPv6 frame the worker acts on. Kept apart from [`Kind`]
/// (an IPv6 key is 37 bytes, an IPv4 one 13) so IPv4 frames never carry
/// IPv6-sized results. ICMPv6 and fragments get their own variants here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind6 {
    /// TCP/UDP to an IPv6 VIP service.
    Flow(Classified6),
    /// NAT: a TCP/UDP packet from an IPv6 real server back to a client
    /// (`service` is `usize::MAX`: the flow table knows it).
    NatReply(Classified6),
    /// ICMPv6 to a VIP, or an error from a NAT server (`icmp6`).
    Icmp(super::icmp6::Icmp6),
    /// A later fragment to a VIP (no ports): follows its first fragment.
    LaterFragment(FragKey6),
    /// NAT: a later fragment of a server's reply: follows its first.
    NatReplyFragment(FragKey6),
}

/// Classify one received IPv6 frame (see [`is_ipv6`]) against the
/// published table: the same link checks as [`classify_packet`], then the
/// IPv6 header. The fixed header is checked before the address lookups
/// (it holds the addresses); the extension-header walk only for packets to
/// a VIP or from a NAT server, so other IPv6 traffic costs no walk.
///
/// # Errors
/// The [`Reason`] the frame is not acted on.
#[inline]
pub fn classify6_packet(frame: &[u8], meta: &RxMeta, table: &FwdTable) -> Result<Kind6, Reason> {
    if meta.vlan_tci.is_some() {
        return Err(Reason::Vlan);
    }
    if meta.truncated {
        return Err(Reason::Oversize);
    }
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    if meta.pkttype != pkttype::HOST {
        return Err(Reason::NotForUs);
    }
    let ip = ipv6::Packet::new_checked(eth.payload())?;
    let (src, dst) = (ip.src_u128(), ip.dst_u128());
    let to_vip = table.is_vip6(dst);
    if !to_vip && !table.is_nat_backend6(src) {
        return Err(Reason::NotVip);
    }
    let chain = ip.walk()?;
    // A real fragment (not an atomic one): a later one carries no ports
    // and follows its first through the fragment table; the first is a
    // flow packet that records where its datagram goes.
    let frag = match chain.fragment {
        Some(f) if !f.is_atomic() => {
            let k = super::icmp6::frag_key(&ip, &f);
            if !f.is_first() {
                return Ok(if to_vip {
                    Kind6::LaterFragment(k)
                } else {
                    Kind6::NatReplyFragment(k)
                });
            }
            Some(k)
        }
        _ => None,
    };
    let l4 = &ip.bytes()[chain.transport_offset..];
    let (sport, dport, tcp_flags, tcp_seq) = match chain.protocol {
        next_header::TCP => {
            let t = tcp::Segment::new_checked(l4).map_err(|_| Reason::V6TruncatedL4)?;
            (t.src_port(), t.dst_port(), t.flags(), t.seq())
        }
        next_header::UDP => {
            let u = udp::Datagram::new_checked(l4).map_err(|_| Reason::V6TruncatedL4)?;
            (u.src_port(), u.dst_port(), 0, 0)
        }
        next_header::ICMPV6 if frag.is_none() => {
            return super::icmp6::classify(&ip, &chain, to_vip, table).map(Kind6::Icmp);
        }
        // ICMPv6 is never fragmented in practice (errors fit 1280 bytes).
        next_header::ICMPV6 => return Err(Reason::V6Icmp),
        _ => return Err(Reason::NoService),
    };
    let key = FlowKey6 {
        src,
        dst,
        sport,
        dport,
        proto: chain.protocol,
    };
    let l4_offset = ethernet::HEADER_LEN + chain.transport_offset;
    if !to_vip {
        return Ok(Kind6::NatReply(Classified6 {
            key,
            service: usize::MAX,
            tcp_flags,
            tcp_seq,
            l4_offset,
            frag,
        }));
    }
    let service = table
        .find_service6(dst, chain.protocol, dport)
        .ok_or(Reason::NoService)?;
    Ok(Kind6::Flow(Classified6 {
        key,
        service,
        tcp_flags,
        tcp_seq,
        l4_offset,
        frag,
    }))
}

/// An IPv6 TCP/UDP packet to a VIP service (or from a NAT server), ready
/// for the IPv6 flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified6 {
    pub key: FlowKey6,
    /// Index into `FwdTable::services6`.
    pub service: usize,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// TCP sequence number (0 for UDP).
    pub tcp_seq: u32,
    /// Offset of the transport header in the frame (after the extension
    /// headers).
    pub l4_offset: usize,
    /// The first fragment of a fragmented datagram: its fragment-table key.
    pub frag: Option<FragKey6>,
}

/// Source port, destination port, TCP flags and sequence number.
#[inline]
fn ports(ip: &ipv4::Packet<&[u8]>, proto: Protocol) -> Result<(u16, u16, u8, u32), Reason> {
    let l4 = ip.payload();
    match proto {
        Protocol::Tcp => {
            let t = tcp::Segment::new_checked(l4).map_err(|_| Reason::TruncatedL4)?;
            Ok((t.src_port(), t.dst_port(), t.flags(), t.seq()))
        }
        Protocol::Udp => {
            let u = udp::Datagram::new_checked(l4).map_err(|_| Reason::TruncatedL4)?;
            Ok((u.src_port(), u.dst_port(), 0, 0))
        }
        _ => Err(Reason::NoService),
    }
}

/// A VIP packet, ready for the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub key: FlowKey,
    /// Index into `FwdTable::services`.
    pub service: usize,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// TCP sequence number (0 for UDP): a retransmitted SYN repeats it, a new
    /// connection on a reused tuple does not.
    pub tcp_seq: u32,
    /// Offset of the transport header in the frame.
    pub l4_offset: usize,
    /// The first fragment of a fragmented datagram.
    pub first_fragment: bool,
    /// IPv4 identification (for the fragment table).
    pub ip_id: u16,
}

impl Classified {
    /// The fragment-table key of this packet's datagram.
    #[inline]
    pub fn frag_key(&self) -> FragKey {
        FragKey {
            src: self.key.src,
            dst: self.key.dst,
            id: self.ip_id,
            proto: self.key.proto,
        }
    }
}

/// Classify a frame that must be a TCP/UDP packet to a VIP service (the
/// DR-only view used by tests and benchmarks).
///
/// # Errors
/// The [`Reason`] the frame is not forwarded.
#[inline]
pub fn classify(frame: &[u8], meta: &RxMeta, table: &FwdTable) -> Result<Classified, Reason> {
    match classify_packet(frame, meta, table)? {
        Kind::Flow(c) if !c.first_fragment => Ok(c),
        Kind::Flow(_) | Kind::LaterFragment(_) => Err(Reason::Fragment),
        Kind::NatReply(_) | Kind::NatReplyFragment(_) | Kind::NatIcmpFromServer { .. } => Err(Reason::NotVip),
        Kind::Echo | Kind::IcmpError { .. } => Err(Reason::NoService),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::table::{Mode, ServiceFwd};

    pub(crate) fn table() -> FwdTable {
        let mut t = FwdTable::empty([2, 0, 0, 0, 0, 2]);
        t.services.push(ServiceFwd {
            vip: 0xc612_6401,
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

    fn syn() -> Vec<u8> {
        crate::dataplane::rewrite::tests::tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, tcp::SYN)
    }

    #[test]
    fn vip_tcp_syn() {
        let c = classify(&syn(), &RxMeta::default(), &table()).unwrap();
        assert_eq!(c.key.sport, 40000);
        assert_eq!(c.key.dport, 80);
        assert_eq!(c.key.proto, 6);
        assert_eq!(c.tcp_flags, tcp::SYN);
        assert_eq!(c.l4_offset, 34);
    }

    #[test]
    fn each_reason() {
        let t = table();
        let m = RxMeta::default();
        let f = syn();
        let err = |b: &[u8], m: &RxMeta| classify(b, m, &t).unwrap_err();
        assert_eq!(err(&f[..10], &m), Reason::Runt);
        assert_eq!(err(&f[..30], &m), Reason::Runt);
        let mut b = f.clone();
        b[14] = 0x65;
        assert_eq!(err(&b, &m), Reason::BadVersion);
        b[14] = 0x44;
        assert_eq!(err(&b, &m), Reason::BadIhl);
        let mut b = f.clone();
        b[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(err(&b, &m), Reason::BadTotalLength);
        let mut b = f.clone();
        b[14] = 0x46;
        assert_eq!(err(&b, &m), Reason::IpOptions);
        let mut b = f.clone();
        b[20] = 0x20;
        assert_eq!(err(&b, &m), Reason::Fragment);
        let mut b = f.clone();
        b[16..18].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(err(&b, &m), Reason::TruncatedL4);
        let mut b = f.clone();
        b[12..14].copy_from_slice(&[0x81, 0]);
        assert_eq!(err(&b, &m), Reason::Vlan);
        let vm = RxMeta {
            vlan_tci: Some(10),
            ..m
        };
        assert_eq!(err(&f, &vm), Reason::Vlan);
        let mut b = f.clone();
        b[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(err(&b, &m), Reason::NotIpv4);
        let om = RxMeta {
            pkttype: pkttype::OTHERHOST,
            ..m
        };
        assert_eq!(err(&f, &om), Reason::NotForUs);
        let mut b = f.clone();
        b[33] = 2;
        assert_eq!(err(&b, &m), Reason::NotVip);
        let mut b = f.clone();
        b[36..38].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(err(&b, &m), Reason::NoService);
    }

    #[test]
    fn names_are_unique_and_ordered() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Reason::COUNT);
    }
}
