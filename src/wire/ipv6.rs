//! IPv6 header view and the bounded extension-header walker (fast path).
//!
//! [`Packet::new_checked`] checks the fixed header against the bytes;
//! [`Packet::walk`] then follows the extension headers to the upper-layer
//! protocol and returns a [`Chain`]: the protocol, where its header starts
//! and the fragment header, if any. Every refusal is an [`Ipv6Error`] with a
//! stable [`name`](Ipv6Error::name), so that each malformed class has its
//! own drop counter.
//!
//! The walk is bounded: at most [`MAX_EXT_HEADERS`] extension headers and
//! [`MAX_EXT_BYTES`] bytes of them. Real traffic to a VIP carries none or
//! one or two (a fragment header, destination options, a segment routing
//! header of a few segments), while the chain is attacker-chosen and each
//! header may claim 2 KiB: a bound keeps the per-frame cost and the
//! ICMPv6-quote cost small and fixed.
//!
//! Known extension headers (RFC 8200 section 4, RFC 4302): hop-by-hop
//! options (only directly after the fixed header), routing, destination
//! options, fragment, authentication. Everything else ends the chain and
//! is the "upper-layer protocol" (TCP 6, UDP 17, ICMPv6 58, none 59, ESP 50
//! and unknown numbers alike), as etherparse and Linux's `ipv6_skip_exthdr`
//! treat it.

use super::{be16, be32, put16, WireError};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// At most this many extension headers are walked; one more is
/// [`Ipv6Error::ChainTooLong`].
pub const MAX_EXT_HEADERS: usize = 8;
/// At most this many bytes of extension headers (a segment routing header
/// of 16 segments is 264); more is [`Ipv6Error::ChainTooLong`].
pub const MAX_EXT_BYTES: usize = 512;
/// Length of a fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// Hop-by-hop option type of the jumbo payload option (RFC 2675).
pub const OPT_JUMBO: u8 = 0xc2;

/// Next-header values the walker and the builders name.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// IPv6-in-IPv6 (TUN mode's encapsulation).
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

use next_header as nh;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

/// Why an IPv6 packet (or the packet an ICMPv6 error quotes) was refused.
/// Each variant is one drop class; [`Ipv6Error::name`] is its counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Error {
    /// Fewer than 40 bytes: no fixed header.
    Truncated,
    /// The version nibble is not 6.
    BadVersion,
    /// The payload length claims more bytes than the frame has; or it is 0
    /// with a hop-by-hop header that has no jumbo option (RFC 2675 section 3).
    BadPayloadLength,
    /// A jumbogram (payload length 0, jumbo payload option): not supported;
    /// no Ethernet link of this director carries one.
    Jumbo,
    /// A hop-by-hop header anywhere but directly after the fixed header.
    HopByHopNotFirst,
    /// More than [`MAX_EXT_HEADERS`] extension headers or more than
    /// [`MAX_EXT_BYTES`] bytes of them.
    ChainTooLong,
    /// An extension header runs past the end of the packet (not fragmented).
    TruncatedExtension,
    /// An authentication header whose length field is 0 (below its 12
    /// fixed bytes).
    BadAuthHeader,
    /// A second fragment header in one chain.
    DuplicateFragment,
    /// The upper-layer header (TCP with its options, UDP, ICMPv6: 8 bytes)
    /// runs past the end of an unfragmented packet.
    TruncatedTransport,
    /// A first fragment (offset 0, more fragments) that does not hold the
    /// whole header chain up to and including the upper-layer header
    /// (RFC 7112). Later fragments have no transport header and are fine.
    FragmentNoTransport,
}

impl Ipv6Error {
    /// Every variant, in declaration order (counters are indexed by it).
    pub const ALL: [Ipv6Error; 11] = [
        Ipv6Error::Truncated,
        Ipv6Error::BadVersion,
        Ipv6Error::BadPayloadLength,
        Ipv6Error::Jumbo,
        Ipv6Error::HopByHopNotFirst,
        Ipv6Error::ChainTooLong,
        Ipv6Error::TruncatedExtension,
        Ipv6Error::BadAuthHeader,
        Ipv6Error::DuplicateFragment,
        Ipv6Error::TruncatedTransport,
        Ipv6Error::FragmentNoTransport,
    ];

    /// This class's position in [`Ipv6Error::ALL`] (a counter array index).
    #[inline]
    pub fn index(&self) -> usize {
        *self as usize
    }

    /// The stable counter name of this class.
    pub fn name(&self) -> &'static str {
        match self {
            Ipv6Error::Truncated => "v6_truncated",
            Ipv6Error::BadVersion => "v6_bad_version",
            Ipv6Error::BadPayloadLength => "v6_bad_payload_length",
            Ipv6Error::Jumbo => "v6_jumbo",
            Ipv6Error::HopByHopNotFirst => "v6_hop_by_hop_not_first",
            Ipv6Error::ChainTooLong => "v6_ext_chain_too_long",
            Ipv6Error::TruncatedExtension => "v6_truncated_ext_header",
            Ipv6Error::BadAuthHeader => "v6_bad_auth_header",
            Ipv6Error::DuplicateFragment => "v6_duplicate_fragment",
            Ipv6Error::TruncatedTransport => "v6_truncated_l4",
            Ipv6Error::FragmentNoTransport => "v6_fragment_no_transport",
        }
    }
}

impl core::fmt::Display for Ipv6Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Ipv6Error> for WireError {
    #[inline]
    fn from(e: Ipv6Error) -> Self {
        match e {
            Ipv6Error::Truncated => WireError::Truncated,
            _ => WireError::Malformed,
        }
    }
}

/// A fragment header's fields (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of the fragment header from the start of the IPv6 header.
    pub header_offset: usize,
    /// The next header of the fragmentable part (the upper-layer protocol,
    /// or an extension header that follows in the first fragment).
    pub next_header: u8,
    /// Fragment offset in 8-byte units.
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
    pub ident: u32,
}

impl Fragment {
    /// The fragment offset in bytes.
    #[inline]
    pub fn byte_offset(&self) -> usize {
        usize::from(self.offset) * 8
    }
    /// True for the first fragment (offset 0), the one with the transport
    /// header.
    #[inline]
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
    /// True for an atomic fragment (offset 0, no M flag: RFC 6946), a whole
    /// packet that only carries a fragment header.
    #[inline]
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// Where the extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The upper-layer protocol (for a non-first fragment: its fragment
    /// header's next header, whose header is in the first fragment).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header
    /// (for a non-first fragment: of the fragment's data).
    pub transport_offset: usize,
    /// The fragment header, if the chain has one.
    pub fragment: Option<Fragment>,
}

impl Chain {
    /// True when the upper-layer header is in these bytes: the packet is
    /// not a fragment, or it is the first one.
    #[inline]
    pub fn has_transport(&self) -> bool {
        self.fragment.is_none_or(|f| f.is_first())
    }
    /// True for a real fragment (not an atomic one): it needs the
    /// fragment table.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| !f.is_atomic())
    }
}

/// How much of the upper-layer header the walk requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The whole header: TCP with its options, UDP 8, ICMPv6 8 bytes.
    Header,
    /// The 8 bytes an ICMPv6 error quotes at least (ports and more).
    Quote,
}

/// Walk the extension headers of `b`, which starts with a fixed IPv6
/// header (at least [`HEADER_LEN`] bytes, not checked further) and ends
/// where the packet (or the quote) ends.
#[inline]
fn walk_from(b: &[u8], first: u8, need: Need) -> Result<Chain, Ipv6Error> {
    let mut next = first;
    let mut at = HEADER_LEN;
    let mut count = 0usize;
    let mut fragment: Option<Fragment> = None;
    loop {
        if !matches!(
            next,
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS | nh::FRAGMENT | nh::AUTH
        ) {
            break;
        }
        if next == nh::HOP_BY_HOP && count != 0 {
            return Err(Ipv6Error::HopByHopNotFirst);
        }
        count += 1;
        if count > MAX_EXT_HEADERS {
            return Err(Ipv6Error::ChainTooLong);
        }
        // Inside a first fragment, a chain cut short is RFC 7112's case.
        let cut = if fragment.is_some() {
            Ipv6Error::FragmentNoTransport
        } else {
            Ipv6Error::TruncatedExtension
        };
        let min = if next == nh::AUTH { 12 } else { 8 };
        if at + min > b.len() {
            return Err(cut);
        }
        let len = match next {
            nh::FRAGMENT => FRAGMENT_HEADER_LEN,
            nh::AUTH => {
                if b[at + 1] == 0 {
                    return Err(Ipv6Error::BadAuthHeader);
                }
                (usize::from(b[at + 1]) + 2) * 4
            }
            _ => (usize::from(b[at + 1]) + 1) * 8,
        };
        if at + len > b.len() {
            return Err(cut);
        }
        if at + len - HEADER_LEN > MAX_EXT_BYTES {
            return Err(Ipv6Error::ChainTooLong);
        }
        if next == nh::FRAGMENT {
            if fragment.is_some() {
                return Err(Ipv6Error::DuplicateFragment);
            }
            let off_m = be16(b, at + 2);
            let f = Fragment {
                header_offset: at,
                next_header: b[at],
                offset: off_m >> 3,
                more: off_m & 1 != 0,
                ident: be32(b, at + 4),
            };
            fragment = Some(f);
            if !f.is_first() {
                // The rest of the chain and the transport header are in
                // the first fragment.
                return Ok(Chain {
                    protocol: f.next_header,
                    transport_offset: at + len,
                    fragment,
                });
            }
        }
        next = b[at];
        at += len;
    }
    let want = match (next, need) {
        (nh::TCP, Need::Header) => match b.get(at + 12) {
            Some(&off) if off >> 4 > 5 => usize::from(off >> 4) * 4,
            _ => 20,
        },
        (nh::UDP | nh::ICMPV6, Need::Header) => 8,
        (nh::TCP | nh::UDP | nh::ICMPV6, Need::Quote) => 8,
        _ => 0,
    };
    if at + want > b.len() {
        return Err(if fragment.is_some() {
            Ipv6Error::FragmentNoTransport
        } else {
            Ipv6Error::TruncatedTransport
        });
    }
    Ok(Chain {
        protocol: next,
        transport_offset: at,
        fragment,
    })
}

/// Walk the chain of the packet an ICMPv6 error quotes: `quote` starts
/// with its fixed IPv6 header and usually holds only part of the packet,
/// so a payload length beyond the quote is not an error and the
/// upper-layer header needs only 8 bytes (ports, or an ICMPv6 echo's
/// identifier). A payload length that ends *inside* the quote bounds the
/// walk: the bytes after it were never part of the quoted packet (the
/// quote is malformed), so a chain that needs them is cut, as etherparse
/// reads it too. A payload length of 0 (jumbo) does not bound it.
///
/// # Errors
/// [`Ipv6Error::Truncated`] below 40 bytes, [`Ipv6Error::BadVersion`], or
/// the walk's own refusals (a cut chain is `TruncatedExtension`, a quoted
/// transport header under 8 bytes `TruncatedTransport`).
#[inline]
pub fn walk_quote(quote: &[u8]) -> Result<Chain, Ipv6Error> {
    if quote.len() < HEADER_LEN {
        return Err(Ipv6Error::Truncated);
    }
    if quote[0] >> 4 != 6 {
        return Err(Ipv6Error::BadVersion);
    }
    let plen = usize::from(be16(quote, field::PAYLOAD_LEN));
    let end = if plen == 0 {
        quote.len()
    } else {
        quote.len().min(HEADER_LEN + plen)
    };
    walk_from(&quote[..end], quote[field::NEXT_HEADER], Need::Quote)
}

/// True when the hop-by-hop header after a fixed header of `b` holds a
/// jumbo payload option (looked for only within the bytes present).
fn has_jumbo_option(b: &[u8]) -> bool {
    if b.len() < HEADER_LEN + 8 {
        return false;
    }
    let end = (HEADER_LEN + (usize::from(b[HEADER_LEN + 1]) + 1) * 8).min(b.len());
    let mut at = HEADER_LEN + 2;
    while at < end {
        match b[at] {
            0 => at += 1, // Pad1
            OPT_JUMBO => return true,
            _ => match b.get(at + 1) {
                Some(&l) => at += 2 + usize::from(l),
                None => return false,
            },
        }
    }
    false
}

/// A view of an IPv6 packet. After [`Packet::new_checked`], the fixed
/// header and `payload_len` bytes after it are known to be present; the
/// extension headers are checked by [`Packet::walk`].
#[derive(Debug)]
pub struct Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap `buf` (which may carry link padding after the packet).
    ///
    /// # Errors
    /// [`Ipv6Error::Truncated`], [`Ipv6Error::BadVersion`],
    /// [`Ipv6Error::BadPayloadLength`] or [`Ipv6Error::Jumbo`].
    #[inline(always)]
    pub fn new_checked(buf: T) -> Result<Self, Ipv6Error> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Ipv6Error::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(Ipv6Error::BadVersion);
        }
        let plen = usize::from(be16(b, field::PAYLOAD_LEN));
        if HEADER_LEN + plen > b.len() {
            return Err(Ipv6Error::BadPayloadLength);
        }
        if plen == 0 && b[field::NEXT_HEADER] == nh::HOP_BY_HOP {
            return Err(if has_jumbo_option(b) {
                Ipv6Error::Jumbo
            } else {
                Ipv6Error::BadPayloadLength
            });
        }
        Ok(Packet { buf })
    }

    /// Wrap without checks, for buffers this crate just wrote.
    ///
    /// # Panics
    /// Accessors panic if `buf` is shorter than the header it claims.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }

    /// Walk the extension headers to the upper-layer protocol.
    ///
    /// # Errors
    /// The walk's refusals: [`Ipv6Error::HopByHopNotFirst`],
    /// [`Ipv6Error::ChainTooLong`], [`Ipv6Error::TruncatedExtension`],
    /// [`Ipv6Error::BadAuthHeader`], [`Ipv6Error::DuplicateFragment`],
    /// [`Ipv6Error::TruncatedTransport`], [`Ipv6Error::FragmentNoTransport`].
    #[inline]
    pub fn walk(&self) -> Result<Chain, Ipv6Error> {
        walk_from(self.bytes(), self.next_header(), Need::Header)
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_TC_FLOW] >> 4
    }
    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buf.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }
    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buf.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }
    /// Header and payload: `40 + payload_len`.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }
    /// The fixed header's next header (an extension header or the
    /// upper-layer protocol).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NEXT_HEADER]
    }
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    #[inline]
    pub fn src(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        a
    }
    #[inline]
    pub fn dst(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::DST]);
        a
    }
    /// Source address as a host-order integer.
    #[inline]
    pub fn src_u128(&self) -> u128 {
        u128::from_be_bytes(self.src())
    }
    /// Destination address as a host-order integer.
    #[inline]
    pub fn dst_u128(&self) -> u128 {
        u128::from_be_bytes(self.dst())
    }
    /// The packet itself without link padding (`..40 + payload_len`).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf.as_ref()[..self.total_len()]
    }
    /// Everything after the fixed header (extension headers included).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 6, traffic class and flow label (masked to 20 bits).
    #[inline]
    pub fn set_ver_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = 6u32 << 28 | u32::from(traffic_class) << 20 | (flow_label & 0x000f_ffff);
        self.buf.as_mut()[..4].copy_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::PAYLOAD_LEN, v)
    }
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buf.as_mut()[field::NEXT_HEADER] = v;
    }
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = v;
    }
    /// Decrement the hop limit (IPv6 has no header checksum to update).
    ///
    /// # Panics
    /// In debug builds, when it is already 0 (callers drop hop limit <= 1).
    #[inline]
    pub fn decrement_hop_limit(&mut self) {
        self.buf.as_mut()[field::HOP_LIMIT] -= 1;
    }
    #[inline]
    pub fn set_src(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a);
    }
    #[inline]
    pub fn set_dst(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a);
    }
    /// Set the source address; returns the old one (for the transport
    /// checksum: [`checksum::update_pseudo128`](super::checksum::update_pseudo128)).
    #[inline]
    pub fn replace_src(&mut self, a: [u8; 16]) -> [u8; 16] {
        let old = self.src();
        self.set_src(a);
        old
    }
    /// Set the destination address; returns the old one.
    #[inline]
    pub fn replace_dst(&mut self, a: [u8; 16]) -> [u8; 16] {
        let old = self.dst();
        self.set_dst(a);
        old
    }
    /// Everything after the fixed header, to rewrite.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let t = self.total_len();
        &mut self.buf.as_mut()[HEADER_LEN..t]
    }
    /// The whole packet without link padding, to rewrite.
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let t = self.total_len();
        &mut self.buf.as_mut()[..t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    /// A fixed header for `exts` then an 8-byte UDP header and `data`.
    fn packet(first: u8, exts: &[&[u8]], l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0x12, 0x34, 0x56, 0, 0, first, 64];
        b.extend_from_slice(&SRC);
        b.extend_from_slice(&DST);
        for e in exts {
            b.extend_from_slice(e);
        }
        b.extend_from_slice(l4);
        let plen = (b.len() - HEADER_LEN) as u16;
        b[4..6].copy_from_slice(&plen.to_be_bytes());
        b
    }

    const UDP8: [u8; 8] = [0x13, 0x88, 0, 53, 0, 8, 0, 0];

    #[test]
    fn parse_fixed_header() {
        let mut b = packet(nh::UDP, &[], &UDP8);
        b.extend_from_slice(&[0xee; 6]); // link padding
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x01);
        assert_eq!(p.flow_label(), 0x23456);
        assert_eq!((p.payload_len(), p.total_len()), (8, 48));
        assert_eq!((p.next_header(), p.hop_limit()), (nh::UDP, 64));
        assert_eq!((p.src(), p.dst()), (SRC, DST));
        assert_eq!(p.dst_u128(), 0x2001_0db8_0064_0000_0000_0000_0000_0001);
        assert_eq!(p.src_u128() & 0xff, 7);
        assert_eq!(p.payload(), &UDP8);
        assert_eq!(p.bytes().len(), 48);
        let c = p.walk().unwrap();
        assert_eq!(
            c,
            Chain {
                protocol: nh::UDP,
                transport_offset: 40,
                fragment: None
            }
        );
        assert!(c.has_transport() && !c.is_fragment());
    }

    #[test]
    fn emit_into_junk() {
        let want = packet(nh::UDP, &[], &UDP8);
        let mut junk = vec![0xa5u8; 48];
        let mut p = Packet::new_unchecked(&mut junk[..]);
        p.set_ver_tc_flow(0x01, 0xfff2_3456); // high bits masked off
        p.set_payload_len(8);
        p.set_next_header(nh::UDP);
        p.set_hop_limit(65);
        p.decrement_hop_limit();
        p.set_src(SRC);
        assert_eq!(p.replace_dst(DST)[0], 0xa5);
        p.payload_mut().copy_from_slice(&UDP8);
        assert_eq!(junk, want);
    }

    #[test]
    fn fixed_header_refusals() {
        let b = packet(nh::UDP, &[], &UDP8);
        let e = |b: &[u8]| Packet::new_checked(b).unwrap_err();
        assert_eq!(e(&b[..39]), Ipv6Error::Truncated);
        assert_eq!(e(&b[..47]), Ipv6Error::BadPayloadLength);
        let mut v = b.clone();
        v[0] = 0x40;
        assert_eq!(e(&v), Ipv6Error::BadVersion);
        // Payload length 0 with a following hop-by-hop header: jumbo when it
        // holds the jumbo option (after a Pad1), else a bad length.
        let hbh_jumbo = [nh::UDP, 0, 0, OPT_JUMBO, 4, 0, 1, 0];
        let mut j = packet(nh::HOP_BY_HOP, &[&hbh_jumbo], &UDP8);
        j[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(e(&j), Ipv6Error::Jumbo);
        j[43] = 1; // PadN instead
        assert_eq!(e(&j), Ipv6Error::BadPayloadLength);
        // Payload length 0 otherwise is an empty payload.
        let mut z = packet(nh::NO_NEXT, &[], &[]);
        z.extend_from_slice(&[0; 6]);
        let p = Packet::new_checked(&z[..]).unwrap();
        assert_eq!(p.walk().unwrap().protocol, nh::NO_NEXT);
        z[6] = nh::TCP;
        let p = Packet::new_checked(&z[..]).unwrap();
        assert_eq!(p.walk().unwrap_err(), Ipv6Error::TruncatedTransport);
    }

    #[test]
    fn walks_every_known_extension() {
        let hbh = [nh::ROUTING, 0, 1, 4, 0, 0, 0, 0];
        let rt = [
            nh::DEST_OPTS,
            2,
            0,
            1,
            0,
            0,
            0,
            0,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            13,
            14,
            15,
            16,
        ];
        let dst = [nh::AUTH, 0, 1, 4, 0, 0, 0, 0];
        let ah = [nh::UDP, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
        let b = packet(nh::HOP_BY_HOP, &[&hbh, &rt, &dst, &ah], &UDP8);
        let c = Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        assert_eq!((c.protocol, c.transport_offset), (nh::UDP, 40 + 8 + 24 + 8 + 12));
        assert_eq!(c.fragment, None);
        // An unknown protocol ends the chain and needs no bytes.
        let b = packet(nh::DEST_OPTS, &[&[nh::ESP, 0, 1, 4, 0, 0, 0, 0]], &[]);
        let c = Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        assert_eq!((c.protocol, c.transport_offset), (nh::ESP, 48));
    }

    #[test]
    fn fragments() {
        // First fragment: ident 0xdeadbeef, more fragments, UDP after a
        // destination options header in the fragmentable part.
        let frag = [nh::DEST_OPTS, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        let dopt = [nh::UDP, 0, 1, 4, 0, 0, 0, 0];
        let b = packet(nh::FRAGMENT, &[&frag, &dopt], &UDP8);
        let c = Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        let f = Fragment {
            header_offset: 40,
            next_header: nh::DEST_OPTS,
            offset: 0,
            more: true,
            ident: 0xdead_beef,
        };
        assert_eq!(
            c,
            Chain {
                protocol: nh::UDP,
                transport_offset: 56,
                fragment: Some(f)
            }
        );
        assert!(c.has_transport() && c.is_fragment() && f.is_first() && !f.is_atomic());
        // A later fragment (offset 185 * 8 = 1480): no transport header.
        let frag = [nh::UDP, 0, 0x05, 0xc8, 0xde, 0xad, 0xbe, 0xef];
        let b = packet(nh::FRAGMENT, &[&frag], &[1, 2, 3]);
        let c = Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        let f = c.fragment.unwrap();
        assert_eq!((c.protocol, c.transport_offset), (nh::UDP, 48));
        assert_eq!((f.offset, f.byte_offset(), f.more), (185, 1480, false));
        assert!(!c.has_transport() && c.is_fragment());
        // An atomic fragment is a whole packet.
        let frag = [nh::UDP, 0, 0, 0, 0, 0, 0, 9];
        let b = packet(nh::FRAGMENT, &[&frag], &UDP8);
        let c = Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        assert!(c.has_transport() && !c.is_fragment() && c.fragment.unwrap().is_atomic());
    }

    #[test]
    fn walk_refusals() {
        let walk = |b: &[u8]| Packet::new_checked(b).unwrap().walk();
        let d = |next: u8| [next, 0, 1, 4, 0, 0, 0, 0];
        // Hop-by-hop after another header.
        let b = packet(nh::DEST_OPTS, &[&d(nh::HOP_BY_HOP), &d(nh::UDP)], &UDP8);
        assert_eq!(walk(&b), Err(Ipv6Error::HopByHopNotFirst));
        // 8 headers pass, 9 do not.
        let eight: Vec<[u8; 8]> = (0..8)
            .map(|i| d(if i == 7 { nh::UDP } else { nh::DEST_OPTS }))
            .collect();
        let refs: Vec<&[u8]> = eight.iter().map(|e| &e[..]).collect();
        assert!(walk(&packet(nh::DEST_OPTS, &refs, &UDP8)).is_ok());
        let nine: Vec<[u8; 8]> = (0..9)
            .map(|i| d(if i == 8 { nh::UDP } else { nh::DEST_OPTS }))
            .collect();
        let refs: Vec<&[u8]> = nine.iter().map(|e| &e[..]).collect();
        assert_eq!(
            walk(&packet(nh::DEST_OPTS, &refs, &UDP8)),
            Err(Ipv6Error::ChainTooLong)
        );
        // 520 bytes of one routing header: too long; 512 fit.
        let mut big = vec![0u8; 520];
        big[0] = nh::UDP;
        big[1] = 64;
        assert_eq!(
            walk(&packet(nh::ROUTING, &[&big], &UDP8)),
            Err(Ipv6Error::ChainTooLong)
        );
        big.truncate(512);
        big[1] = 63;
        assert!(walk(&packet(nh::ROUTING, &[&big], &UDP8)).is_ok());
        // An extension header cut by the payload length.
        let b = packet(nh::DEST_OPTS, &[&[nh::UDP, 1, 0, 0]], &[]);
        assert_eq!(walk(&b), Err(Ipv6Error::TruncatedExtension));
        let b = packet(nh::DEST_OPTS, &[&[nh::UDP, 1, 0, 0, 0, 0, 0, 0, 0, 0]], &[]);
        assert_eq!(walk(&b), Err(Ipv6Error::TruncatedExtension));
        // AH: length 0 is malformed, 8 bytes of it truncated.
        let b = packet(nh::AUTH, &[&[nh::UDP, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]], &UDP8);
        assert_eq!(walk(&b), Err(Ipv6Error::BadAuthHeader));
        let b = packet(nh::AUTH, &[&[nh::UDP, 1, 0, 0, 0, 0, 0, 1]], &[]);
        assert_eq!(walk(&b), Err(Ipv6Error::TruncatedExtension));
        // Two fragment headers.
        let f = |next: u8| [next, 0, 0, 1, 0, 0, 0, 1];
        let b = packet(nh::FRAGMENT, &[&f(nh::FRAGMENT), &f(nh::UDP)], &UDP8);
        assert_eq!(walk(&b), Err(Ipv6Error::DuplicateFragment));
        // Transport cut: TCP needs 20 bytes, or its data offset's worth.
        let b = packet(nh::TCP, &[], &[0; 19]);
        assert_eq!(walk(&b), Err(Ipv6Error::TruncatedTransport));
        let mut tcp = [0u8; 20];
        tcp[12] = 0x60;
        assert_eq!(
            walk(&packet(nh::TCP, &[], &tcp)),
            Err(Ipv6Error::TruncatedTransport)
        );
        assert!(walk(&packet(nh::TCP, &[], &[tcp.as_slice(), &[0; 4]].concat())).is_ok());
        assert_eq!(
            walk(&packet(nh::UDP, &[], &UDP8[..7])),
            Err(Ipv6Error::TruncatedTransport)
        );
        assert_eq!(
            walk(&packet(nh::ICMPV6, &[], &[128, 0, 0, 0])),
            Err(Ipv6Error::TruncatedTransport)
        );
        // A first fragment without the whole transport header, or without
        // the whole chain.
        let b = packet(nh::FRAGMENT, &[&f(nh::UDP)], &UDP8[..4]);
        assert_eq!(walk(&b), Err(Ipv6Error::FragmentNoTransport));
        let b = packet(nh::FRAGMENT, &[&f(nh::DEST_OPTS)], &[nh::UDP, 0, 1, 4]);
        assert_eq!(walk(&b), Err(Ipv6Error::FragmentNoTransport));
    }

    #[test]
    fn quotes_need_8_bytes_of_transport() {
        // A quoted TCP packet: only 8 bytes of its header, payload length
        // larger than the quote.
        let mut b = packet(nh::TCP, &[], &[0x9c, 0x40, 0, 80, 0, 0, 0, 1]);
        b[4..6].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(walk_quote(&b).unwrap().transport_offset, 40);
        assert_eq!(walk_quote(&b[..47]), Err(Ipv6Error::TruncatedTransport));
        assert_eq!(walk_quote(&b[..39]), Err(Ipv6Error::Truncated));
        b[0] = 0x45;
        assert_eq!(walk_quote(&b), Err(Ipv6Error::BadVersion));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = Ipv6Error::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Ipv6Error::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("v6_")));
        for (i, e) in Ipv6Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(WireError::from(Ipv6Error::Truncated), WireError::Truncated);
        assert_eq!(WireError::from(Ipv6Error::Jumbo), WireError::Malformed);
    }
}
