//! [`PacketBuilder`]: complete Ethernet + IPv4 frames with valid checksums,
//! the one way tests, benchmarks, fuzz targets and `ulvs-bench-gen` make
//! frames (slow path: every frame is a fresh `Vec`; build templates before a
//! measured or allocation-counted section, then edit them in place).
//!
//! Emitting is the inverse of the views: byte offsets are those of the
//! [`ethernet`](super::ethernet), [`ipv4`](super::ipv4), [`tcp`](super::tcp),
//! [`udp`](super::udp) and [`icmp`](super::icmp) modules.

use std::net::Ipv4Addr;

use super::{checksum, ethernet, icmp, ipv4, put16, put32, tcp, udp};

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
}
