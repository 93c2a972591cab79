//! IPv4 header view (fast path).

use super::{be16, be32, checksum, put16, put32, WireError};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Flag: more fragments.
pub const FLAG_MF: u16 = 0x2000;
/// Flag: don't fragment.
pub const FLAG_DF: u16 = 0x4000;
/// Mask of the fragment offset.
pub const OFFSET_MASK: u16 = 0x1fff;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// IP protocol numbers the director knows; others are `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Icmp,
    IpIp,
    Tcp,
    Udp,
    Unknown(u8),
}

impl From<u8> for Protocol {
    #[inline]
    fn from(v: u8) -> Self {
        match v {
            1 => Protocol::Icmp,
            4 => Protocol::IpIp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            x => Protocol::Unknown(x),
        }
    }
}

impl From<Protocol> for u8 {
    #[inline]
    fn from(v: Protocol) -> u8 {
        match v {
            Protocol::Icmp => 1,
            Protocol::IpIp => 4,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Unknown(x) => x,
        }
    }
}

/// Why an IPv4 header was refused, finer than [`WireError`] so that each
/// malformed class has its own drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Fewer than 20 bytes.
    Truncated,
    /// Version nibble is not 4.
    BadVersion,
    /// IHL below 5.
    BadIhl,
    /// Total length below the header length or beyond the bytes present.
    BadTotalLength,
}

impl From<Ipv4Error> for WireError {
    #[inline]
    fn from(e: Ipv4Error) -> Self {
        match e {
            Ipv4Error::Truncated => WireError::Truncated,
            _ => WireError::Malformed,
        }
    }
}

/// Check that `b` starts with a whole IPv4 header (version 4, IHL at least
/// 5, the options it claims present) and return its length. The total
/// length is not checked: the header quoted by an ICMP error is followed by
/// only 8 bytes of its packet.
///
/// # Errors
/// The specific [`Ipv4Error`] for the first check that fails.
#[inline(always)]
pub fn check_header(b: &[u8]) -> Result<usize, Ipv4Error> {
    if b.len() < MIN_HEADER_LEN {
        return Err(Ipv4Error::Truncated);
    }
    if b[field::VER_IHL] >> 4 != 4 {
        return Err(Ipv4Error::BadVersion);
    }
    let ihl = ((b[field::VER_IHL] & 0xf) as usize) * 4;
    if ihl < MIN_HEADER_LEN {
        return Err(Ipv4Error::BadIhl);
    }
    if ihl > b.len() {
        return Err(Ipv4Error::Truncated);
    }
    Ok(ihl)
}

/// A view of an IPv4 packet. After [`Packet::new_checked`], the header
/// (including options) and `total_len` bytes are known to be present.
#[derive(Debug)]
pub struct Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap `buf` (which may carry link padding after the packet).
    ///
    /// # Errors
    /// The specific [`Ipv4Error`] for the first check that fails.
    // Always inlined: on every frame's path, from classify and rewrite.
    #[inline(always)]
    pub fn new_checked(buf: T) -> Result<Self, Ipv4Error> {
        let b = buf.as_ref();
        let ihl = check_header(b).map_err(|e| match e {
            // Options claimed beyond the bytes: the total length is wrong too.
            Ipv4Error::Truncated if b.len() >= MIN_HEADER_LEN => Ipv4Error::BadTotalLength,
            e => e,
        })?;
        let total = be16(b, field::TOTAL_LEN) as usize;
        if total < ihl || total > b.len() {
            return Err(Ipv4Error::BadTotalLength);
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

    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[field::VER_IHL] & 0xf) as usize) * 4
    }
    #[inline]
    pub fn total_len(&self) -> usize {
        be16(self.buf.as_ref(), field::TOTAL_LEN) as usize
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        be16(self.buf.as_ref(), field::FLAGS_FRAG)
    }
    /// True for any fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | OFFSET_MASK) != 0
    }
    #[inline]
    pub fn dont_fragment(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }
    #[inline]
    pub fn more_fragments(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }
    /// The fragment offset in 8-byte units (non-zero: no transport header).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & OFFSET_MASK
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> Protocol {
        Protocol::from(self.buf.as_ref()[field::PROTOCOL])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Source address as a host-order integer.
    #[inline]
    pub fn src(&self) -> u32 {
        be32(self.buf.as_ref(), field::SRC)
    }
    /// Destination address as a host-order integer.
    #[inline]
    pub fn dst(&self) -> u32 {
        be32(self.buf.as_ref(), field::DST)
    }
    /// True when the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buf.as_ref()[..self.header_len()], 0) == 0xffff
    }
    /// The packet itself, header and payload, without the link padding
    /// that may follow it (`..total_len`).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf.as_ref()[..self.total_len()]
    }
    /// The transport payload (`header_len..total_len`).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_ver_ihl(&mut self, ihl_bytes: usize) {
        self.buf.as_mut()[field::VER_IHL] = 0x40 | ((ihl_bytes / 4) as u8 & 0xf);
    }
    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buf.as_mut()[1] = v;
    }
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::TOTAL_LEN, v)
    }
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::IDENT, v)
    }
    #[inline]
    pub fn set_flags_frag(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::FLAGS_FRAG, v)
    }
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[field::TTL] = v;
    }
    #[inline]
    pub fn set_protocol(&mut self, p: Protocol) {
        self.buf.as_mut()[field::PROTOCOL] = p.into();
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, v)
    }
    #[inline]
    pub fn set_src(&mut self, a: u32) {
        put32(self.buf.as_mut(), field::SRC, a)
    }
    #[inline]
    pub fn set_dst(&mut self, a: u32) {
        put32(self.buf.as_mut(), field::DST, a)
    }
    /// Decrement the TTL, keeping the checksum valid (RFC 1624).
    ///
    /// # Panics
    /// In debug builds, when the TTL is already 0 (callers drop TTL <= 1).
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let b = self.buf.as_mut();
        let old = be16(b, field::TTL);
        b[field::TTL] -= 1;
        let new = be16(b, field::TTL);
        let c = checksum::update16(be16(b, field::CHECKSUM), old, new);
        put16(b, field::CHECKSUM, c);
    }
    /// Set the source address, keeping the checksum valid (RFC 1624);
    /// returns the old one (for the transport checksum).
    #[inline]
    pub fn replace_src(&mut self, a: u32) -> u32 {
        self.replace_addr(field::SRC, a)
    }
    /// Set the destination address, keeping the checksum valid (RFC 1624);
    /// returns the old one (for the transport checksum).
    #[inline]
    pub fn replace_dst(&mut self, a: u32) -> u32 {
        self.replace_addr(field::DST, a)
    }
    #[inline]
    fn replace_addr(&mut self, at: usize, a: u32) -> u32 {
        let b = self.buf.as_mut();
        let old = be32(b, at);
        let c = checksum::update32(be16(b, field::CHECKSUM), old, a);
        put32(b, at, a);
        put16(b, field::CHECKSUM, c);
        old
    }
    /// Recompute the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buf.as_ref()[..hl]);
        self.set_checksum(c);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buf.as_mut()[h..t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 20-byte header, total length 28, UDP, 198.18.1.2 -> 198.18.100.1, valid checksum.
    fn sample() -> [u8; 28] {
        let mut b = [0u8; 28];
        b[..20].copy_from_slice(&[
            0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 18, 1, 2, 198, 18, 100, 1,
        ]);
        let c = checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parse() {
        let b = sample();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.protocol(), Protocol::Udp);
        assert_eq!(p.src(), 0xc612_0102);
        assert_eq!(p.dst(), 0xc612_6401);
        assert!(p.dont_fragment());
        assert!(!p.is_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
        // Link padding after the packet is not part of it.
        let mut padded = [0xeeu8; 46];
        padded[..28].copy_from_slice(&b);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.bytes(), &b[..]);
        assert_eq!(p.payload(), &b[20..]);
    }

    #[test]
    fn emit_matches() {
        let want = sample();
        let mut junk = [0xa5u8; 28];
        let mut p = Packet::new_unchecked(&mut junk[..]);
        p.set_ver_ihl(20);
        p.set_tos(0);
        p.set_total_len(28);
        p.set_ident(0x1234);
        p.set_flags_frag(FLAG_DF);
        p.set_ttl(64);
        p.set_protocol(Protocol::Udp);
        p.set_src(0xc612_0102);
        p.set_dst(0xc612_6401);
        p.fill_checksum();
        p.payload_mut().fill(0);
        assert_eq!(junk, want);
    }

    #[test]
    fn refusals() {
        let mut b = sample();
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Ipv4Error::Truncated);
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Ipv4Error::BadVersion);
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Ipv4Error::BadIhl);
        b[0] = 0x45;
        b[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Ipv4Error::BadTotalLength
        );
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Ipv4Error::BadTotalLength
        );
    }

    #[test]
    fn fragments() {
        let mut b = sample();
        b[6..8].copy_from_slice(&FLAG_MF.to_be_bytes());
        assert!(Packet::new_checked(&b[..]).unwrap().is_fragment());
        b[6..8].copy_from_slice(&5u16.to_be_bytes());
        assert!(Packet::new_checked(&b[..]).unwrap().is_fragment());
    }

    #[test]
    fn incremental_setters_keep_the_checksum() {
        let mut b = sample();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.decrement_ttl();
        assert_eq!(p.replace_dst(0xc612_000b), 0xc612_6401);
        assert_eq!(p.replace_src(0xc612_6402), 0xc612_0102);
        assert!(p.verify_checksum());
        assert_eq!((p.ttl(), p.src(), p.dst()), (63, 0xc612_6402, 0xc612_000b));
        let mut want = [0xa5u8; 28];
        let mut q = Packet::new_unchecked(&mut want[..]);
        q.set_ver_ihl(20);
        q.set_tos(0);
        q.set_total_len(28);
        q.set_ident(0x1234);
        q.set_flags_frag(FLAG_DF);
        q.set_ttl(63);
        q.set_protocol(Protocol::Udp);
        q.set_src(0xc612_6402);
        q.set_dst(0xc612_000b);
        q.fill_checksum();
        q.payload_mut().fill(0);
        assert_eq!(b, want);
    }

    #[test]
    fn quoted_header_check() {
        // A quoted header: total length 28, only the header and 4 bytes here.
        let b = sample();
        assert_eq!(check_header(&b[..24]), Ok(20));
        assert_eq!(check_header(&b[..19]), Err(Ipv4Error::Truncated));
        let mut b = sample();
        b[0] = 0x44;
        assert_eq!(check_header(&b), Err(Ipv4Error::BadIhl));
        b[0] = 0x4f; // 60 bytes of header claimed, 28 present
        assert_eq!(check_header(&b), Err(Ipv4Error::Truncated));
        b[0] = 0x55;
        assert_eq!(check_header(&b), Err(Ipv4Error::BadVersion));
    }
}
