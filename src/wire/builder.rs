//! [`PacketBuilder`] and [`PacketBuilder6`]: complete Ethernet + IPv4 and
//! Ethernet + IPv6 frames (with extension headers and fragments) with valid
//! checksums,
//! the one way tests, benchmarks, fuzz targets and `ulvs-bench-gen` make
//! frames (slow path: every frame is a fresh `Vec`; build templates before a
//! measured or allocation-counted section, then edit them in place).
//!
//! Emitting is the inverse of the views: byte offsets are those of the
//! [`ethernet`](super::ethernet), [`ipv4`](super::ipv4), [`tcp`](super::tcp),
//! [`udp`](super::udp), [`icmp`](super::icmp), [`ipv6`](super::ipv6) and
//! [`icmpv6`](super::icmpv6) modules.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ipv6::next_header;
use super::{checksum, ethernet, icmp, icmpv6, ipv4, ipv6, put16, put32, tcp, udp};

/// IP protocol numbers the builder emits.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// The test topology's director MAC (`02:00:00:00:00:02`), the default
/// destination of built frames (a frame routed to a VIP).
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The test topology's router MAC (`02:00:00:00:00:01`), the default source.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The IPv4 pseudo-header sum of RFC 793/768, folded but not inverted: what
/// a partial (virtio `NEEDS_CSUM`) checksum field holds. The fast path's
/// [`checksum::pseudo_header`] in the address types tests use.
pub fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: usize) -> u16 {
    checksum::pseudo_header(src.into(), dst.into(), protocol.into(), l4_len as u16)
}

/// The TCP/UDP checksum field value of transport bytes `l4` (whose own
/// checksum field must be zero) between `src` and `dst`.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> u16 {
    let s = pseudo_sum(src, dst, protocol, l4.len());
    !checksum::sum(l4, u32::from(s))
}

/// Header fields of the frames to build; each `*_frame`-style method emits
/// one frame from them. Defaults: router -> director MACs, TTL 64,
/// identification 1, DF set, not a fragment, TCP sequence `0x01020304`,
/// acknowledgment 0, window 64240.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketBuilder {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub ident: u16,
    pub df: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: usize,
    pub more_fragments: bool,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
}

impl PacketBuilder {
    pub fn new(src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Self {
        PacketBuilder {
            dst_mac: DIRECTOR_MAC,
            src_mac: ROUTER_MAC,
            src: src.into(),
            dst: dst.into(),
            ttl: 64,
            ident: 1,
            df: true,
            frag_offset: 0,
            more_fragments: false,
            seq: 0x0102_0304,
            ack: 0,
            window: 64240,
        }
    }

    /// Ethernet destination and source.
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn ident(mut self, ident: u16) -> Self {
        self.ident = ident;
        self
    }

    pub fn df(mut self, df: bool) -> Self {
        self.df = df;
        self
    }

    /// A fragment at byte `offset` (a multiple of 8) with MF = `more`.
    ///
    /// # Panics
    /// If `offset` is not a multiple of 8 or exceeds the 13-bit field.
    pub fn fragment(mut self, offset: usize, more: bool) -> Self {
        assert!(offset % 8 == 0 && offset / 8 <= usize::from(ipv4::OFFSET_MASK));
        self.frag_offset = offset;
        self.more_fragments = more;
        self
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// TCP window.
    pub fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }

    /// The 14-byte Ethernet header (IPv4 ethertype).
    pub fn ethernet_header(&self) -> [u8; ethernet::HEADER_LEN] {
        let mut h = [0u8; ethernet::HEADER_LEN];
        h[0..6].copy_from_slice(&self.dst_mac);
        h[6..12].copy_from_slice(&self.src_mac);
        put16(&mut h, 12, 0x0800);
        h
    }

    /// A 20-byte IPv4 header (no options) for `payload_len` bytes of
    /// `protocol`, with a valid checksum.
    ///
    /// # Panics
    /// If the total length exceeds 65,535.
    pub fn ipv4_header(&self, protocol: u8, payload_len: usize) -> [u8; ipv4::MIN_HEADER_LEN] {
        let total = u16::try_from(ipv4::MIN_HEADER_LEN + payload_len).expect("IPv4 total length");
        let mut h = [0u8; ipv4::MIN_HEADER_LEN];
        h[0] = 0x45;
        put16(&mut h, 2, total);
        put16(&mut h, 4, self.ident);
        let mut flags = (self.frag_offset / 8) as u16;
        if self.df {
            flags |= ipv4::FLAG_DF;
        }
        if self.more_fragments {
            flags |= ipv4::FLAG_MF;
        }
        put16(&mut h, 6, flags);
        h[8] = self.ttl;
        h[9] = protocol;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&h);
        put16(&mut h, 10, c);
        h
    }

    /// Ethernet + IPv4 headers announcing `payload_len` bytes of `protocol`,
    /// without the payload (an outer header to put in front of a packet).
    pub fn headers(&self, protocol: u8, payload_len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + payload_len);
        f.extend_from_slice(&self.ethernet_header());
        f.extend_from_slice(&self.ipv4_header(protocol, payload_len));
        f
    }

    /// Ethernet + IPv4 + `payload` as given (a fragment's bytes, an inner
    /// packet of IP-in-IP).
    pub fn ip(&self, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = self.headers(protocol, payload.len());
        f.extend_from_slice(payload);
        f
    }

    /// The TCP segment (20-byte header, no options) + `payload` with a valid
    /// checksum, without IP and Ethernet headers.
    pub fn tcp_segment(&self, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; tcp::MIN_HEADER_LEN];
        put16(&mut t, 0, sport);
        put16(&mut t, 2, dport);
        put32(&mut t, 4, self.seq);
        put32(&mut t, 8, self.ack);
        t[12] = 0x50; // data offset 5
        t[13] = flags;
        put16(&mut t, 14, self.window);
        t.extend_from_slice(payload);
        let c = l4_checksum(self.src, self.dst, proto::TCP, &t);
        put16(&mut t, tcp::CHECKSUM_OFFSET, c);
        t
    }

    /// The UDP datagram + `payload` with a valid checksum (0 is sent as
    /// 0xffff), without IP and Ethernet headers.
    pub fn udp_datagram(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; udp::HEADER_LEN];
        put16(&mut u, 0, sport);
        put16(&mut u, 2, dport);
        put16(&mut u, 4, (udp::HEADER_LEN + payload.len()) as u16);
        u.extend_from_slice(payload);
        let c = match l4_checksum(self.src, self.dst, proto::UDP, &u) {
            0 => 0xffff,
            c => c,
        };
        put16(&mut u, udp::CHECKSUM_OFFSET, c);
        u
    }

    /// Ethernet + IPv4 + TCP (20-byte header) + `payload`, valid checksums.
    pub fn tcp(&self, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        self.ip(proto::TCP, &self.tcp_segment(sport, dport, flags, payload))
    }

    /// Ethernet + IPv4 + UDP + `payload`, valid checksums.
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        self.ip(proto::UDP, &self.udp_datagram(sport, dport, payload))
    }

    /// Ethernet + IPv4 + ICMP: `icmp_type`, `code`, the 4 bytes after the
    /// checksum (`rest`: identifier and sequence, or unused/MTU) and `body`,
    /// valid checksums.
    pub fn icmp(&self, icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(icmp::HEADER_LEN + body.len());
        m.extend_from_slice(&[icmp_type, code, 0, 0]);
        m.extend_from_slice(&rest);
        m.extend_from_slice(body);
        let c = checksum::checksum(&m);
        put16(&mut m, 2, c);
        self.ip(proto::ICMP, &m)
    }

    /// `l4` (a whole transport segment with its checksum) cut into IPv4
    /// fragments at the byte offsets `cuts` (each a multiple of 8), in order,
    /// all with this builder's identification.
    ///
    /// # Panics
    /// If a cut is not a multiple of 8, not increasing, or beyond `l4`.
    pub fn fragments(&self, protocol: u8, l4: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(l4.len());
        bounds
            .windows(2)
            .map(|w| {
                assert!(w[0] < w[1] && w[1] <= l4.len(), "bad fragment cuts {cuts:?}");
                let more = w[1] < l4.len();
                self.fragment(w[0], more).ip(protocol, &l4[w[0]..w[1]])
            })
            .collect()
    }
}

/// The TCP/UDP/ICMPv6 checksum field value of upper-layer bytes `l4`
/// (whose own checksum field must be zero) between `src` and `dst` over IPv6.
pub fn l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4: &[u8]) -> u16 {
    let s = checksum::pseudo_header6(&src.octets(), &dst.octets(), next_header, l4.len() as u32);
    !checksum::sum(l4, u32::from(s))
}

/// An IPv6 extension header for [`PacketBuilder6`]. Option and routing
/// data are padded with zeros to the header's 8-byte multiple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ext6 {
    /// Hop-by-hop options: the option bytes after next header and length.
    HopByHop(Vec<u8>),
    /// Destination options: the option bytes after next header and length.
    DestOpts(Vec<u8>),
    /// Routing: type, segments left, then `data` (after the 4 fixed bytes).
    Routing {
        routing_type: u8,
        segments_left: u8,
        data: Vec<u8>,
    },
    /// Authentication (RFC 4302): SPI, sequence, then the ICV (padded to
    /// make the header a multiple of 8 bytes).
    Auth { spi: u32, seq: u32, icv: Vec<u8> },
    /// Fragment: offset in bytes (a multiple of 8), M flag, identification.
    Fragment { offset: usize, more: bool, ident: u32 },
    /// Bytes as given, with `kind` as its protocol number; the first byte
    /// is overwritten with the next header (for malformed chains).
    Raw { kind: u8, bytes: Vec<u8> },
}

impl Ext6 {
    /// The next-header number that announces this header.
    pub fn kind(&self) -> u8 {
        match self {
            Ext6::HopByHop(_) => next_header::HOP_BY_HOP,
            Ext6::DestOpts(_) => next_header::DEST_OPTS,
            Ext6::Routing { .. } => next_header::ROUTING,
            Ext6::Auth { .. } => next_header::AUTH,
            Ext6::Fragment { .. } => next_header::FRAGMENT,
            Ext6::Raw { kind, .. } => *kind,
        }
    }

    /// The header's bytes, followed by `next`.
    ///
    /// # Panics
    /// If a fragment offset is not a multiple of 8 or above 65,528, or an
    /// option or routing area is longer than 2,040 bytes.
    pub fn emit(&self, next: u8) -> Vec<u8> {
        let padded = |head: &[u8], data: &[u8]| {
            let mut h = head.to_vec();
            h.extend_from_slice(data);
            while h.len() % 8 != 0 {
                h.push(0);
            }
            let units = h.len() / 8 - 1;
            assert!(units <= 255, "extension header too long");
            h[1] = units as u8;
            h
        };
        let mut h = match self {
            Ext6::HopByHop(o) | Ext6::DestOpts(o) => padded(&[next, 0], o),
            Ext6::Routing {
                routing_type,
                segments_left,
                data,
            } => padded(&[next, 0, *routing_type, *segments_left], data),
            Ext6::Auth { spi, seq, icv } => {
                let mut h = vec![next, 0, 0, 0];
                h.extend_from_slice(&spi.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(icv);
                while h.len() % 8 != 0 {
                    h.push(0);
                }
                h[1] = (h.len() / 4 - 2) as u8;
                h
            }
            Ext6::Fragment { offset, more, ident } => {
                assert!(offset % 8 == 0 && *offset <= 0xfff8, "bad fragment offset");
                let mut h = vec![next, 0, 0, 0];
                put16(&mut h, 2, (*offset as u16) | u16::from(*more));
                h.extend_from_slice(&ident.to_be_bytes());
                h
            }
            Ext6::Raw { bytes, .. } => bytes.clone(),
        };
        if let Some(b) = h.first_mut() {
            *b = next;
        }
        h
    }
}

/// Header fields of the IPv6 frames to build; as [`PacketBuilder`], each
/// frame method emits one frame. Defaults: router -> director MACs, hop
/// limit 64, traffic class 0, flow label 0, no extension headers, TCP
/// sequence `0x01020304`, acknowledgment 0, window 64240. Transport
/// checksums use `dst` (not a routing header's final segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketBuilder6 {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    /// Extension headers, in order, between the fixed header and the
    /// upper-layer header.
    pub exts: Vec<Ext6>,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
}

impl PacketBuilder6 {
    pub fn new(src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Self {
        PacketBuilder6 {
            dst_mac: DIRECTOR_MAC,
            src_mac: ROUTER_MAC,
            src: src.into(),
            dst: dst.into(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            exts: Vec::new(),
            seq: 0x0102_0304,
            ack: 0,
            window: 64240,
        }
    }

    /// Ethernet destination and source.
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    /// Traffic class and (20-bit) flow label.
    pub fn class_flow(mut self, traffic_class: u8, flow_label: u32) -> Self {
        self.traffic_class = traffic_class;
        self.flow_label = flow_label & 0x000f_ffff;
        self
    }

    /// Append an extension header.
    pub fn ext(mut self, e: Ext6) -> Self {
        self.exts.push(e);
        self
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// The 14-byte Ethernet header (IPv6 ethertype).
    pub fn ethernet_header(&self) -> [u8; ethernet::HEADER_LEN] {
        let mut h = [0u8; ethernet::HEADER_LEN];
        h[0..6].copy_from_slice(&self.dst_mac);
        h[6..12].copy_from_slice(&self.src_mac);
        put16(&mut h, 12, 0x86dd);
        h
    }

    /// The 40-byte fixed header for `payload_len` bytes after it, the
    /// first of which is `next`.
    ///
    /// # Panics
    /// If `payload_len` exceeds 65,535 (jumbograms are not built).
    pub fn ipv6_header(&self, next: u8, payload_len: usize) -> [u8; ipv6::HEADER_LEN] {
        let mut h = [0u8; ipv6::HEADER_LEN];
        let mut p = ipv6::Packet::new_unchecked(&mut h[..]);
        p.set_ver_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(u16::try_from(payload_len).expect("payload length"));
        p.set_next_header(next);
        p.set_hop_limit(self.hop_limit);
        p.set_src(self.src.octets());
        p.set_dst(self.dst.octets());
        h
    }

    /// Ethernet + IPv6 + this builder's extension headers + `extra` ones +
    /// `payload` (upper-layer protocol `upper`) as given.
    fn frame_with(&self, extra: &[Ext6], upper: u8, payload: &[u8]) -> Vec<u8> {
        let all: Vec<&Ext6> = self.exts.iter().chain(extra).collect();
        let mut exts = Vec::new();
        for (i, e) in all.iter().enumerate() {
            let next = all.get(i + 1).map_or(upper, |n| n.kind());
            exts.extend_from_slice(&e.emit(next));
        }
        let first = all.first().map_or(upper, |e| e.kind());
        let mut f = Vec::with_capacity(14 + 40 + exts.len() + payload.len());
        f.extend_from_slice(&self.ethernet_header());
        f.extend_from_slice(&self.ipv6_header(first, exts.len() + payload.len()));
        f.extend_from_slice(&exts);
        f.extend_from_slice(payload);
        f
    }

    /// Ethernet + IPv6 (+ extension headers) + `payload` of protocol
    /// `upper` as given (a fragment's bytes, an inner packet of
    /// IPv6-in-IPv6).
    pub fn ip(&self, upper: u8, payload: &[u8]) -> Vec<u8> {
        self.frame_with(&[], upper, payload)
    }

    /// The TCP segment (20-byte header) + `payload`, checksum over IPv6.
    pub fn tcp_segment(&self, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; tcp::MIN_HEADER_LEN];
        put16(&mut t, 0, sport);
        put16(&mut t, 2, dport);
        put32(&mut t, 4, self.seq);
        put32(&mut t, 8, self.ack);
        t[12] = 0x50;
        t[13] = flags;
        put16(&mut t, 14, self.window);
        t.extend_from_slice(payload);
        let c = l4_checksum6(self.src, self.dst, next_header::TCP, &t);
        put16(&mut t, tcp::CHECKSUM_OFFSET, c);
        t
    }

    /// The UDP datagram + `payload`, checksum over IPv6 (0 sent as 0xffff).
    pub fn udp_datagram(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; udp::HEADER_LEN];
        put16(&mut u, 0, sport);
        put16(&mut u, 2, dport);
        put16(&mut u, 4, (udp::HEADER_LEN + payload.len()) as u16);
        u.extend_from_slice(payload);
        let c = match l4_checksum6(self.src, self.dst, next_header::UDP, &u) {
            0 => 0xffff,
            c => c,
        };
        put16(&mut u, udp::CHECKSUM_OFFSET, c);
        u
    }

    /// The ICMPv6 message: type, code, the 4 bytes after the checksum
    /// (identifier and sequence, MTU, pointer, flags) and `body`.
    pub fn icmpv6_message(&self, icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(icmpv6::HEADER_LEN + body.len());
        m.extend_from_slice(&[icmp_type, code, 0, 0]);
        m.extend_from_slice(&rest);
        m.extend_from_slice(body);
        let c = l4_checksum6(self.src, self.dst, next_header::ICMPV6, &m);
        put16(&mut m, icmpv6::CHECKSUM_OFFSET, c);
        m
    }

    /// Ethernet + IPv6 + TCP + `payload`, valid checksum.
    pub fn tcp(&self, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        self.ip(next_header::TCP, &self.tcp_segment(sport, dport, flags, payload))
    }

    /// Ethernet + IPv6 + UDP + `payload`, valid checksum.
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        self.ip(next_header::UDP, &self.udp_datagram(sport, dport, payload))
    }

    /// Ethernet + IPv6 + ICMPv6, valid checksum.
    pub fn icmpv6(&self, icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        self.ip(
            next_header::ICMPV6,
            &self.icmpv6_message(icmp_type, code, rest, body),
        )
    }

    /// `l4` (a whole upper-layer message with its checksum, protocol
    /// `upper`) cut into fragments at byte offsets `cuts` (multiples of 8),
    /// each with this builder's extension headers then a fragment header
    /// of identification `ident`.
    ///
    /// # Panics
    /// If a cut is not a multiple of 8, not increasing, or beyond `l4`.
    pub fn fragments(&self, upper: u8, l4: &[u8], cuts: &[usize], ident: u32) -> Vec<Vec<u8>> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(l4.len());
        bounds
            .windows(2)
            .map(|w| {
                assert!(w[0] < w[1] && w[1] <= l4.len(), "bad fragment cuts {cuts:?}");
                let frag = Ext6::Fragment {
                    offset: w[0],
                    more: w[1] < l4.len(),
                    ident,
                };
                self.frame_with(&[frag], upper, &l4[w[0]..w[1]])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ethernet, icmp, ipv4, tcp, udp};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

    /// The frames parse back through the views with the fields given and
    /// checksums that verify.
    #[test]
    fn frames_parse_back_with_valid_checksums() {
        let b = PacketBuilder::new(CLIENT, VIP).ttl(57).ident(0x1234);
        let f = b.tcp(40000, 80, tcp::SYN | tcp::ACK, b"hello");
        let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst(), DIRECTOR_MAC);
        assert_eq!(eth.src(), ROUTER_MAC);
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(
            (ip.src(), ip.dst(), ip.ttl(), ip.ident()),
            (u32::from(CLIENT), u32::from(VIP), 57, 0x1234)
        );
        assert_eq!(checksum::sum(&f[14..34], 0), 0xffff);
        let seg = tcp::Segment::new_checked(&f[34..]).unwrap();
        assert_eq!(
            (seg.src_port(), seg.dst_port(), seg.flags()),
            (40000, 80, tcp::SYN | tcp::ACK)
        );
        let s = pseudo_sum(CLIENT, VIP, proto::TCP, f.len() - 34);
        assert_eq!(checksum::sum(&f[34..], u32::from(s)), 0xffff);

        let f = b.udp(5000, 53, b"query");
        let d = udp::Datagram::new_checked(&f[34..]).unwrap();
        assert_eq!((d.src_port(), d.dst_port()), (5000, 53));
        let s = pseudo_sum(CLIENT, VIP, proto::UDP, f.len() - 34);
        assert_eq!(checksum::sum(&f[34..], u32::from(s)), 0xffff);

        let f = b.icmp(icmp::ECHO_REQUEST, 0, [0, 1, 0, 2], b"ping");
        assert_eq!(f.len(), 14 + 20 + 8 + 4);
        assert_eq!(checksum::sum(&f[34..], 0), 0xffff);
    }

    /// The bytes spelled out: one SYN, field by field.
    #[test]
    fn tcp_syn_bytes() {
        let f = PacketBuilder::new(CLIENT, VIP).tcp(0x1234, 80, tcp::SYN, &[]);
        #[rustfmt::skip]
        let want: [u8; 54] = [
            2, 0, 0, 0, 0, 2,   2, 0, 0, 0, 0, 1,   0x08, 0x00,
            0x45, 0, 0, 40,  0, 1, 0x40, 0,  64, 6, 0xd4, 0xb3,
            203, 0, 113, 7,  198, 18, 100, 1,
            0x12, 0x34, 0, 80,  1, 2, 3, 4,  0, 0, 0, 0,
            0x50, 0x02, 0xfa, 0xf0,  0x38, 0x4c, 0, 0,
        ];
        // Checksums computed by hand (RFC 1071) from the fields.
        assert_eq!(f, want);
    }

    #[test]
    fn fragments_cover_the_segment() {
        let b = PacketBuilder::new(CLIENT, VIP).ident(7).df(false);
        let l4 = b.udp_datagram(5000, 53, &[0xa5; 56]);
        let frags = b.fragments(proto::UDP, &l4, &[24, 48]);
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
            assert_eq!(ip.ident(), 7);
            let mf = if i < 2 { ipv4::FLAG_MF } else { 0 };
            assert_eq!(ip.flags_frag(), mf | [0, 3, 6][i]);
            assert_eq!(checksum::sum(&f[14..34], 0), 0xffff);
            joined.extend_from_slice(&f[34..]);
        }
        assert_eq!(joined, l4);
    }

    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 7);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 1);

    #[test]
    fn ipv6_frames_parse_back() {
        use crate::wire::{icmpv6, ipv6};
        let b = PacketBuilder6::new(CLIENT6, VIP6)
            .hop_limit(57)
            .class_flow(0xb8, 0x12345)
            .ext(Ext6::HopByHop(vec![1, 0]))
            .ext(Ext6::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![0; 20],
            })
            .ext(Ext6::DestOpts(vec![]))
            .ext(Ext6::Auth {
                spi: 1,
                seq: 2,
                icv: vec![9; 12],
            });
        let f = b.tcp(40000, 80, tcp::SYN, b"hello");
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(
            (ip.hop_limit(), ip.traffic_class(), ip.flow_label()),
            (57, 0xb8, 0x12345)
        );
        assert_eq!((ip.src(), ip.dst()), (CLIENT6.octets(), VIP6.octets()));
        let c = ip.walk().unwrap();
        // 8 (HBH) + 24 (routing) + 8 (dest opts) + 24 (AH with 12 bytes ICV)
        assert_eq!((c.protocol, c.transport_offset), (6, 40 + 64));
        let seg = tcp::Segment::new_checked(&f[14 + c.transport_offset..]).unwrap();
        assert_eq!((seg.src_port(), seg.dst_port()), (40000, 80));
        assert!(seg.verify_checksum6(&CLIENT6.octets(), &VIP6.octets()));

        let b = PacketBuilder6::new(CLIENT6, VIP6);
        let f = b.udp(5000, 53, b"q");
        let d = udp::Datagram::new_checked(&f[54..]).unwrap();
        assert!(d.verify_checksum6(&CLIENT6.octets(), &VIP6.octets()));
        let f = b.icmpv6(icmpv6::ECHO_REQUEST, 0, [0, 1, 0, 2], b"ping");
        let m = icmpv6::Message::new_checked(&f[54..]).unwrap();
        assert!(m.verify_checksum(&CLIENT6.octets(), &VIP6.octets()));
        assert_eq!((m.echo_ident(), m.echo_seq()), (1, 2));
    }

    #[test]
    fn ipv6_fragments_cover_the_datagram() {
        use crate::wire::ipv6;
        let b = PacketBuilder6::new(CLIENT6, VIP6).ext(Ext6::DestOpts(vec![]));
        let l4 = b.udp_datagram(5000, 53, &[0xa5; 56]);
        let frags = b.fragments(next_header::UDP, &l4, &[24, 48], 0xabcd);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
            let c = ip.walk().unwrap();
            let fr = c.fragment.unwrap();
            assert_eq!((fr.ident, fr.offset, fr.more), (0xabcd, [0, 3, 6][i], i < 2));
            assert_eq!(fr.header_offset, 48);
            assert_eq!(c.transport_offset, 56);
            assert_eq!(c.protocol, next_header::UDP);
            joined.extend_from_slice(&f[14 + 56..]);
        }
        assert_eq!(joined, l4);
    }
}
