//! TCP header view (fast path): ports, flags, checksum.

use super::checksum::{self, State};
use super::ipv4::Protocol;
use super::{be16, put16, put32, WireError};

pub const MIN_HEADER_LEN: usize = 20;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
/// Congestion window reduced (RFC 3168): only on the first segment of a burst.
pub const CWR: u8 = 0x80;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

/// Offset of the checksum field within the TCP header (what a vnet
/// header's `csum_offset` names).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// A view of a TCP segment; after `new_checked` the whole header (with
/// options) is present.
#[derive(Debug)]
pub struct Segment<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    /// # Errors
    /// `Truncated` when the fixed header or the options it claims are missing;
    /// `Malformed` when the data offset is below 5.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let off = ((b[field::DATA_OFF] >> 4) as usize) * 4;
        if off < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if off > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Segment { buf })
    }
    /// Wrap without checks, for a header this crate copied from a checked one.
    ///
    /// # Panics
    /// Accessors panic if `buf` is shorter than the header.
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Segment { buf }
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }
    #[inline]
    pub fn seq(&self) -> u32 {
        super::be32(self.buf.as_ref(), field::SEQ)
    }
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Header length with options (the data offset).
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[field::DATA_OFF] >> 4) as usize) * 4
    }
    /// The bytes after the header (options included in the header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// True when the checksum verifies over the whole buffer (which must be
    /// exactly the segment) and the pseudo-header of `src` -> `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: u32, dst: u32) -> bool {
        let b = self.buf.as_ref();
        match u16::try_from(b.len()) {
            Ok(len) => {
                let ps = checksum::pseudo_header(src, dst, Protocol::Tcp, len);
                checksum::sum(b, u32::from(ps)) == 0xffff
            }
            Err(_) => false,
        }
    }
    /// [`Segment::verify_checksum`] over IPv6: the pseudo-header of
    /// `src` -> `dst` with 128-bit addresses.
    #[inline]
    pub fn verify_checksum6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let b = self.buf.as_ref();
        match u32::try_from(b.len()) {
            Ok(len) => {
                let ps = checksum::pseudo_header6(src, dst, 6, len);
                checksum::sum(b, u32::from(ps)) == 0xffff
            }
            Err(_) => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buf.as_mut(), field::SRC_PORT, p)
    }
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buf.as_mut(), field::DST_PORT, p)
    }
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c)
    }
    #[inline]
    pub fn set_seq(&mut self, v: u32) {
        put32(self.buf.as_mut(), field::SEQ, v)
    }
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buf.as_mut()[field::FLAGS] = v;
    }
    /// Keep the checksum right after an address of the pseudo-header changed.
    #[inline]
    pub fn pseudo_header_changed(&mut self, old: u32, new: u32, state: State) {
        let c = checksum::update_pseudo32(self.checksum(), state, old, new);
        self.set_checksum(c);
    }
    /// Set the source port, keeping the checksum right (RFC 1624).
    #[inline]
    pub fn rewrite_src_port(&mut self, p: u16, state: State) {
        let c = checksum::update_covered16(self.checksum(), state, self.src_port(), p);
        self.set_src_port(p);
        self.set_checksum(c);
    }
    /// Set the destination port, keeping the checksum right (RFC 1624).
    #[inline]
    pub fn rewrite_dst_port(&mut self, p: u16, state: State) {
        let c = checksum::update_covered16(self.checksum(), state, self.dst_port(), p);
        self.set_dst_port(p);
        self.set_checksum(c);
    }
    /// Keep the checksum right after an IPv6 address of the pseudo-header
    /// changed (NAT over IPv6).
    #[inline]
    pub fn pseudo_header_changed6(&mut self, old: &[u8; 16], new: &[u8; 16], state: State) {
        let c = checksum::update_pseudo128(self.checksum(), state, old, new);
        self.set_checksum(c);
    }
    /// [`Segment::fill_checksum`] over IPv6 (the buffer is exactly the
    /// segment; its length is the pseudo-header's 32-bit length).
    #[inline]
    pub fn fill_checksum6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let b = self.buf.as_ref();
        let ps = checksum::pseudo_header6(src, dst, 6, b.len() as u32);
        let c = !checksum::sum(b, u32::from(ps));
        self.set_checksum(c);
    }
    /// Compute the full checksum over the whole buffer (which must be
    /// exactly the segment) with the pseudo-header of `src` -> `dst`.
    ///
    /// # Panics
    /// If the buffer is longer than 65,535 bytes (no IPv4 packet is).
    #[inline]
    pub fn fill_checksum(&mut self, src: u32, dst: u32) {
        self.set_checksum(0);
        let b = self.buf.as_ref();
        let len = u16::try_from(b.len()).expect("a segment of an IPv4 packet");
        let ps = checksum::pseudo_header(src, dst, Protocol::Tcp, len);
        let c = !checksum::sum(b, u32::from(ps));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN_SEG: [u8; 20] = [
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, SYN, 0xff, 0xff, 0x12, 0x34, 0, 0,
    ];

    #[test]
    fn parse() {
        let s = Segment::new_checked(&SYN_SEG[..]).unwrap();
        assert_eq!(s.src_port(), 40000);
        assert_eq!(s.dst_port(), 80);
        assert_eq!(s.flags(), SYN);
        assert_eq!(s.seq(), 1);
        assert_eq!(s.checksum(), 0x1234);
        assert!(s.payload().is_empty());
        let mut with_data = [0u8; 23];
        with_data[..20].copy_from_slice(&SYN_SEG);
        with_data[20..].copy_from_slice(b"abc");
        assert_eq!(Segment::new_checked(&with_data[..]).unwrap().payload(), b"abc");
    }

    #[test]
    fn emit() {
        let mut b = SYN_SEG;
        let mut s = Segment::new_checked(&mut b[..]).unwrap();
        s.set_src_port(1);
        s.set_dst_port(2);
        s.set_checksum(3);
        assert_eq!(&b[..4], &[0, 1, 0, 2]);
        assert_eq!(&b[16..18], &[0, 3]);
    }

    #[test]
    fn emit_into_junk() {
        let (src, dst) = (0xc612_0102, 0xc612_6401);
        let mut b = [0x5au8; 20];
        b[12] = 0x50;
        let mut s = Segment::new_checked(&mut b[..]).unwrap();
        s.set_src_port(40000);
        s.set_dst_port(80);
        s.set_seq(1);
        s.set_flags(SYN);
        s.fill_checksum(src, dst);
        assert!(s.verify_checksum(src, dst));
        assert_eq!(s.header_len(), 20);
        let mut want = [0x5au8; 20];
        want[..8].copy_from_slice(&SYN_SEG[..8]);
        want[12..14].copy_from_slice(&[0x50, SYN]);
        let mut ps = vec![198, 18, 1, 2, 198, 18, 100, 1, 0, 6, 0, 20];
        want[16..18].copy_from_slice(&[0, 0]);
        ps.extend_from_slice(&want);
        want[16..18].copy_from_slice(&checksum::checksum(&ps).to_be_bytes());
        assert_eq!(b, want);
    }

    #[test]
    fn incremental_port_rewrites_match_a_full_checksum() {
        let (src, dst) = (0xc612_0102, 0xc612_6401);
        let mut b = SYN_SEG;
        let mut s = Segment::new_checked(&mut b[..]).unwrap();
        s.fill_checksum(src, dst);
        s.pseudo_header_changed(dst, 0xc612_000b, State::Full);
        s.rewrite_dst_port(8080, State::Full);
        assert!(s.verify_checksum(src, 0xc612_000b));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Segment::new_checked(&SYN_SEG[..8]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = SYN_SEG;
        b[12] = 0x40;
        assert_eq!(Segment::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        b[12] = 0x60;
        assert_eq!(Segment::new_checked(&b[..]).unwrap_err(), WireError::Truncated);
    }
}
