//! ICMPv6 message view (fast path, RFC 4443): type, code, the checksum over
//! the IPv6 pseudo-header, echo, errors with their quoted packet
//! ([`Quote`]), and Packet Too Big's MTU. Neighbor Discovery messages are
//! in [`ndp`](super::ndp).

use super::checksum::{self, State};
use super::ipv6::{self, next_header, Chain, Ipv6Error};
use super::{be16, be32, put16, put32, WireError};

/// Type, code, checksum and the 4 bytes every message has after them.
pub const HEADER_LEN: usize = 8;
pub const DEST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAM_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
/// Destination unreachable code 4: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 4;
/// The minimum IPv6 link MTU (RFC 8200 section 5): a Packet Too Big never
/// asks for less, and an ICMPv6 error is never longer.
pub const MIN_MTU: u32 = 1280;

/// Most bytes of the invoking packet an error quotes: the whole error then
/// fits the minimum MTU (RFC 4443 section 2.4 (c)): 1280 - 40 - 8.
pub const MAX_QUOTE_LEN: usize = MIN_MTU as usize - ipv6::HEADER_LEN - HEADER_LEN;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: core::ops::Range<usize> = 4..8;
    pub const ECHO_ID: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const MTU: usize = 4;
}

/// Offset of the checksum field (what a vnet header's `csum_offset` names).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// The ICMPv6 checksum field value of `msg` (its checksum field zero or
/// not: it is skipped) between `src` and `dst`.
///
/// # Panics
/// Never for messages of an IPv6 packet (at most 65,535 bytes); longer
/// slices are summed with a truncated length.
#[inline]
pub fn compute_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let ps = checksum::pseudo_header6(src, dst, next_header::ICMPV6, msg.len() as u32);
    let mut acc = checksum::sum(msg, u32::from(ps));
    // Take the stored field back out: ~field is its one's-complement negative.
    if msg.len() >= HEADER_LEN {
        acc = checksum::fold(u64::from(acc) + u64::from(!be16(msg, field::CHECKSUM)));
    }
    !acc
}

/// A view of an ICMPv6 message; after `new_checked` the 8-byte header is
/// present. The buffer must be exactly the message (the checksum covers
/// it all): slice it at the packet's end, not the frame's.
#[derive(Debug)]
pub struct Message<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// # Errors
    /// `Truncated` when fewer than 8 bytes.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Message { buf })
    }
    /// Wrap without checks, for a message this crate is writing.
    ///
    /// # Panics
    /// Accessors panic if `buf` is shorter than 8 bytes.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Message { buf }
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[field::TYPE]
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[field::CODE]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// The 4 bytes after the checksum.
    #[inline]
    pub fn rest(&self) -> [u8; 4] {
        let mut r = [0; 4];
        r.copy_from_slice(&self.buf.as_ref()[field::REST]);
        r
    }
    /// An echo's identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::ECHO_ID)
    }
    /// An echo's sequence number.
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf.as_ref(), field::ECHO_SEQ)
    }
    /// A Packet Too Big's MTU (for other types: the same 4 bytes).
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buf.as_ref(), field::MTU)
    }
    /// A Parameter Problem's pointer (the same 4 bytes).
    #[inline]
    pub fn pointer(&self) -> u32 {
        be32(self.buf.as_ref(), field::MTU)
    }
    /// True for the error messages that quote the packet which caused
    /// them (types 1 to 4; RFC 4443 section 2.1: types below 128).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACHABLE | PACKET_TOO_BIG | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }
    /// True when the checksum verifies between `src` and `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let b = self.buf.as_ref();
        match u32::try_from(b.len()) {
            Ok(len) => {
                let ps = checksum::pseudo_header6(src, dst, next_header::ICMPV6, len);
                checksum::sum(b, u32::from(ps)) == 0xffff
            }
            Err(_) => false,
        }
    }
    /// The whole message.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Bytes after the 8-byte header (an error's quoted packet, an echo's
    /// data).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    /// The quoted packet of an error.
    ///
    /// # Errors
    /// See [`Quote::new_checked`].
    #[inline]
    pub fn quote(&self) -> Result<Quote<&[u8]>, Ipv6Error> {
        Quote::new_checked(self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    #[inline]
    pub fn set_type(&mut self, t: u8) {
        self.buf.as_mut()[field::TYPE] = t;
    }
    #[inline]
    pub fn set_code(&mut self, c: u8) {
        self.buf.as_mut()[field::CODE] = c;
    }
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c)
    }
    /// The 4 bytes after the checksum (identifier and sequence, MTU,
    /// pointer, or unused).
    #[inline]
    pub fn set_rest(&mut self, v: [u8; 4]) {
        self.buf.as_mut()[field::REST].copy_from_slice(&v);
    }
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        put32(self.buf.as_mut(), field::MTU, mtu)
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
    /// Set the type, keeping the checksum valid (RFC 1624) without a pass
    /// over the message (an echo reply answers in place; the addresses
    /// swap, which leaves the pseudo-header sum as it was).
    #[inline]
    pub fn rewrite_type(&mut self, t: u8) {
        let b = self.buf.as_mut();
        let old = be16(b, field::TYPE);
        b[field::TYPE] = t;
        let c = checksum::update16(be16(b, field::CHECKSUM), old, be16(b, field::TYPE));
        put16(b, field::CHECKSUM, c);
    }
    /// Keep the checksum right after an address of the pseudo-header
    /// changed (the message's own bytes did not).
    #[inline]
    pub fn pseudo_header_changed(&mut self, old: &[u8; 16], new: &[u8; 16]) {
        let c = checksum::update_pseudo128(self.checksum(), State::Full, old, new);
        self.set_checksum(c);
    }
    /// Recompute the checksum over the whole message between `src` and
    /// `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = compute_checksum(src, dst, self.buf.as_ref());
        self.set_checksum(c);
    }
    /// The quoted packet of an error, to rewrite (then fix this message's
    /// checksum: [`Message::fill_checksum`]).
    ///
    /// # Errors
    /// See [`Quote::new_checked`].
    #[inline]
    pub fn quote_mut(&mut self) -> Result<Quote<&mut [u8]>, Ipv6Error> {
        Quote::new_checked(&mut self.buf.as_mut()[HEADER_LEN..])
    }
}

/// Write an ICMPv6 error packet around a quote already in place: `packet`
/// starts where the IPv6 header goes and holds the quoted bytes at
/// `48..48 + quote_len` (so a frame can become its own error in place, by
/// making 48 bytes of room in front of it, as `rewrite::icmp_frag_needed`
/// does for IPv4). Fills the IPv6 header (`src` -> `dst`, `hop_limit`,
/// next header 58) and the ICMPv6 header (`kind`, `code`, `rest`: the MTU
/// of a Packet Too Big, the pointer of a Parameter Problem) with its
/// checksum. Returns the packet's length.
///
/// # Errors
/// `Truncated` when `packet` is shorter than `48 + quote_len`; `Malformed`
/// when `quote_len` exceeds [`MAX_QUOTE_LEN`].
#[allow(clippy::too_many_arguments)]
pub fn write_error(
    packet: &mut [u8],
    src: &[u8; 16],
    dst: &[u8; 16],
    hop_limit: u8,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    quote_len: usize,
) -> Result<usize, WireError> {
    if quote_len > MAX_QUOTE_LEN {
        return Err(WireError::Malformed);
    }
    let len = ipv6::HEADER_LEN + HEADER_LEN + quote_len;
    if packet.len() < len {
        return Err(WireError::Truncated);
    }
    let packet = &mut packet[..len];
    let mut ip = ipv6::Packet::new_unchecked(&mut packet[..]);
    ip.set_ver_tc_flow(0, 0);
    ip.set_payload_len((HEADER_LEN + quote_len) as u16);
    ip.set_next_header(next_header::ICMPV6);
    ip.set_hop_limit(hop_limit);
    ip.set_src(*src);
    ip.set_dst(*dst);
    let mut m = Message::new_unchecked(&mut packet[ipv6::HEADER_LEN..]);
    m.set_type(kind);
    m.set_code(code);
    m.set_rest(rest);
    m.fill_checksum(src, dst);
    Ok(len)
}

mod quote {
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

/// The packet an ICMPv6 error quotes (RFC 4443: "as much of invoking packet
/// as possible without the ICMPv6 packet exceeding the minimum IPv6 MTU"):
/// a fixed IPv6 header, its extension headers, and at least 8 bytes of the
/// upper-layer header, unless the quoted packet is a non-first fragment
/// (then there are no ports: [`Quote::ports`] is `None`; the fragment
/// table maps its identification). Its payload length is not checked (the
/// rest of the packet is not there). After [`Quote::new_checked`] no
/// accessor can panic.
#[derive(Debug)]
pub struct Quote<T> {
    buf: T,
    chain: Chain,
}

impl<T: AsRef<[u8]>> Quote<T> {
    /// # Errors
    /// See [`ipv6::walk_quote`].
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, Ipv6Error> {
        let chain = ipv6::walk_quote(buf.as_ref())?;
        Ok(Quote { buf, chain })
    }
    /// Where the quoted chain ends: its upper-layer protocol, the offset of
    /// its transport header within the quote, its fragment header.
    #[inline]
    pub fn chain(&self) -> Chain {
        self.chain
    }
    /// The quoted upper-layer protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.chain.protocol
    }
    /// The fixed header's next header (not the upper-layer protocol when
    /// extension headers follow it).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[quote::NEXT_HEADER]
    }
    #[inline]
    pub fn src(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[quote::SRC]);
        a
    }
    #[inline]
    pub fn dst(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[quote::DST]);
        a
    }
    /// The quoted TCP/UDP (source, destination) ports, or an ICMPv6
    /// message's (type and code, checksum) words; `None` for a non-first
    /// fragment.
    #[inline]
    pub fn ports(&self) -> Option<(u16, u16)> {
        if !self.chain.has_transport() {
            return None;
        }
        let at = self.chain.transport_offset;
        let b = self.buf.as_ref();
        // The walk checked 8 bytes at `at` for TCP, UDP and ICMPv6 only.
        match self.chain.protocol {
            next_header::TCP | next_header::UDP | next_header::ICMPV6 => Some((be16(b, at), be16(b, at + 2))),
            _ => None,
        }
    }
    /// The quote's bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

/// Rewrites of a quoted packet (NAT translating an error back). There is
/// no IPv6 header checksum; the quoted transport checksum is left as it
/// is, as IPVS leaves it. The enclosing message's checksum must be
/// recomputed afterwards.
impl<T: AsRef<[u8]> + AsMut<[u8]>> Quote<T> {
    #[inline]
    pub fn set_src(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[quote::SRC].copy_from_slice(&a);
    }
    #[inline]
    pub fn set_dst(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[quote::DST].copy_from_slice(&a);
    }
    /// Set the quoted TCP/UDP source port; false (and nothing written)
    /// when the quote has no ports.
    #[inline]
    pub fn set_src_port(&mut self, p: u16) -> bool {
        self.set_port(0, p)
    }
    /// Set the quoted TCP/UDP destination port; false when it has none.
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) -> bool {
        self.set_port(2, p)
    }
    #[inline]
    fn set_port(&mut self, within: usize, p: u16) -> bool {
        let has =
            self.chain.has_transport() && matches!(self.chain.protocol, next_header::TCP | next_header::UDP);
        if has {
            let at = self.chain.transport_offset + within;
            put16(self.buf.as_mut(), at, p);
        }
        has
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTER: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    const VIP: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0x71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

    /// A Packet Too Big (MTU 1400) from ROUTER quoting VIP:80 -> CLIENT:40000
    /// (TCP, first 8 bytes of its header).
    fn ptb() -> Vec<u8> {
        let mut m = vec![PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x78];
        m.extend_from_slice(&[0x60, 0, 0, 0, 0x05, 0xa0, 6, 63]);
        m.extend_from_slice(&VIP);
        m.extend_from_slice(&CLIENT);
        m.extend_from_slice(&[0, 80, 0x9c, 0x40, 0, 0, 0, 1]);
        let c = compute_checksum(&ROUTER, &VIP, &m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    #[test]
    fn packet_too_big_and_its_quote() {
        let b = ptb();
        let m = Message::new_checked(&b[..]).unwrap();
        assert!(m.verify_checksum(&ROUTER, &VIP));
        assert!(!m.verify_checksum(&ROUTER, &CLIENT));
        assert_eq!((m.msg_type(), m.code(), m.mtu()), (PACKET_TOO_BIG, 0, 1400));
        assert!(m.is_error());
        let q = m.quote().unwrap();
        assert_eq!((q.src(), q.dst()), (VIP, CLIENT));
        assert_eq!(
            (q.protocol(), q.next_header()),
            (next_header::TCP, next_header::TCP)
        );
        assert_eq!(q.ports(), Some((80, 40000)));
        assert_eq!(q.chain().transport_offset, 40);
        // A quote cut inside the transport header is refused.
        let m = Message::new_checked(&b[..b.len() - 1]).unwrap();
        assert_eq!(m.quote().unwrap_err(), Ipv6Error::TruncatedTransport);
    }

    #[test]
    fn a_quoted_payload_length_that_ends_inside_the_quote_bounds_the_walk() {
        // The quoted packet says it had 1 byte of payload; the quote holds
        // a hop-by-hop header and a TCP header after it. Those bytes were
        // never the quoted packet's: the chain is cut (etherparse reads it
        // so too; found by tests/wire_oracle.rs in CI).
        let mut m = vec![DEST_UNREACHABLE, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0x60, 0, 0, 0, 0, 1, next_header::HOP_BY_HOP, 64]);
        m.extend_from_slice(&VIP);
        m.extend_from_slice(&CLIENT);
        m.extend_from_slice(&[next_header::TCP, 0, 1, 4, 0, 0, 0, 0]);
        m.extend_from_slice(&[0, 80, 0x9c, 0x40, 0, 0, 0, 1]);
        let msg = Message::new_checked(&m[..]).unwrap();
        assert_eq!(msg.quote().unwrap_err(), Ipv6Error::TruncatedExtension);
        // The same quote with the payload length it should have: read whole.
        m[12..14].copy_from_slice(&16u16.to_be_bytes());
        let q = Message::new_checked(&m[..]).unwrap().quote().unwrap().ports();
        assert_eq!(q, Some((80, 40000)));
        // 0 (a jumbogram's) does not bound it.
        m[12..14].copy_from_slice(&0u16.to_be_bytes());
        assert!(Message::new_checked(&m[..]).unwrap().quote().is_ok());
    }

    #[test]
    fn quote_of_a_later_fragment_has_no_ports() {
        let mut m = vec![TIME_EXCEEDED, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0x60, 0, 0, 0, 0, 16, next_header::FRAGMENT, 1]);
        m.extend_from_slice(&VIP);
        m.extend_from_slice(&CLIENT);
        m.extend_from_slice(&[next_header::UDP, 0, 0, 0x08, 0, 0, 0x12, 0x34]);
        m.extend_from_slice(&[1, 2, 3]);
        let mut msg = Message::new_checked(&mut m[..]).unwrap();
        let mut q = msg.quote_mut().unwrap();
        assert_eq!(q.ports(), None);
        assert!(!q.set_src_port(1) && !q.set_dst_port(2));
        let f = q.chain().fragment.unwrap();
        assert_eq!((f.ident, f.offset, q.protocol()), (0x1234, 1, next_header::UDP));
        q.set_src(ROUTER);
        assert_eq!(&m[16..32], &ROUTER);
    }

    #[test]
    fn quote_rewrite_then_checksum() {
        // NAT: the server's error quoting RS:8080 -> CLIENT becomes one
        // quoting VIP:80 -> CLIENT; compare with the error built directly.
        let want = ptb();
        let mut b = want.clone();
        b[16..32].copy_from_slice(&ROUTER);
        b[48..50].copy_from_slice(&8080u16.to_be_bytes());
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        let mut q = m.quote_mut().unwrap();
        q.set_src(VIP);
        assert!(q.set_src_port(80));
        assert!(q.set_dst_port(40000));
        q.set_dst(CLIENT);
        m.fill_checksum(&ROUTER, &VIP);
        assert_eq!(b, want);
    }

    #[test]
    fn error_written_around_its_quote() {
        // A 1400-byte packet VIP -> CLIENT becomes a Packet Too Big
        // quoting its first 1232 bytes.
        let mut buf = vec![0xa5u8; 48 + 1400];
        buf[48..88].copy_from_slice(&{
            let mut h = [0u8; 40];
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0x05, 0x50, next_header::TCP, 64]);
            h[8..24].copy_from_slice(&CLIENT);
            h[24..40].copy_from_slice(&VIP);
            h
        });
        buf[88..92].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        let n = write_error(
            &mut buf,
            &VIP,
            &CLIENT,
            64,
            PACKET_TOO_BIG,
            0,
            1360u32.to_be_bytes(),
            MAX_QUOTE_LEN,
        );
        assert_eq!(n, Ok(1280));
        let ip = ipv6::Packet::new_checked(&buf[..1280]).unwrap();
        assert_eq!(
            (ip.payload_len(), ip.hop_limit(), ip.src(), ip.dst()),
            (1240, 64, VIP, CLIENT)
        );
        let m = Message::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum(&VIP, &CLIENT));
        assert_eq!((m.msg_type(), m.mtu()), (PACKET_TOO_BIG, 1360));
        let q = m.quote().unwrap();
        assert_eq!((q.src(), q.dst(), q.ports()), (CLIENT, VIP, Some((40000, 80))));
        let e = |len: usize, q: usize| {
            let mut b = vec![0u8; len];
            write_error(&mut b, &VIP, &CLIENT, 64, 1, 4, [0; 4], q).unwrap_err()
        };
        assert_eq!(e(48 + 9, 10), WireError::Truncated);
        assert_eq!(e(2000, MAX_QUOTE_LEN + 1), WireError::Malformed);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut b = vec![ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 9, b'h', b'i'];
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        m.fill_checksum(&CLIENT, &VIP);
        assert!(m.verify_checksum(&CLIENT, &VIP));
        assert_eq!((m.echo_ident(), m.echo_seq(), m.is_error()), (0x1234, 9, false));
        m.rewrite_type(ECHO_REPLY);
        // The reply goes VIP -> CLIENT: the same pseudo-header sum.
        assert!(m.verify_checksum(&VIP, &CLIENT));
        let mut want = vec![ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 9, b'h', b'i'];
        let c = compute_checksum(&VIP, &CLIENT, &want);
        want[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(b, want);
        assert_eq!(Message::new_checked(&b[..7]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn address_change_keeps_the_checksum() {
        let mut b = ptb();
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        m.pseudo_header_changed(&VIP, &CLIENT);
        assert!(m.verify_checksum(&ROUTER, &CLIENT));
        let mut mm = Message::new_checked(&mut b[..]).unwrap();
        mm.set_mtu(1280);
        mm.set_type(PACKET_TOO_BIG);
        mm.set_code(0);
        mm.fill_checksum(&ROUTER, &CLIENT);
        assert_eq!(mm.mtu(), MIN_MTU);
        assert!(mm.verify_checksum(&ROUTER, &CLIENT));
        // compute_checksum skips the stored field.
        assert_eq!(
            compute_checksum(&ROUTER, &CLIENT, &b),
            u16::from_be_bytes([b[2], b[3]])
        );
    }
}
