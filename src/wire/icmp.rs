//! ICMPv4 header view (fast path): type, code, checksum, and the quoted
//! packet of error messages ([`Quote`], built with the IPv4 header check
//! as smoltcp's `icmpv4::Repr::parse` builds it with `Ipv4Packet::new_checked`).

use super::ipv4::{self, Protocol};
use super::{be16, be32, checksum, put16, put32, WireError};

pub const HEADER_LEN: usize = 8;
pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
/// Code of "fragmentation needed and DF set" under `DEST_UNREACHABLE`.
pub const CODE_FRAG_NEEDED: u8 = 4;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: core::ops::Range<usize> = 4..8;
}

/// Bytes of the quoted packet's payload an error carries at least
/// (RFC 792: "the Internet Header + 64 bits of Original Data Datagram");
/// the first four are a TCP/UDP packet's ports.
pub const QUOTED_PAYLOAD_LEN: usize = 8;

/// A view of an ICMP message; after `new_checked` the 8-byte header is present.
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
    /// True when the checksum verifies over the whole message.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buf.as_ref(), 0) == 0xffff
    }
    /// True for the error types that quote a packet the VIP sent.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), DEST_UNREACHABLE | TIME_EXCEEDED)
    }
    /// Bytes after the 8-byte header (the quoted packet of an error).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    /// The quoted packet of an error.
    ///
    /// # Errors
    /// See [`Quote::new_checked`].
    #[inline]
    pub fn quote(&self) -> Result<Quote<&[u8]>, WireError> {
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
    /// The 4 bytes after type/code/checksum (id+seq, or unused+MTU).
    #[inline]
    pub fn set_rest(&mut self, v: [u8; 4]) {
        self.buf.as_mut()[field::REST].copy_from_slice(&v);
    }
    /// Set the type, keeping the checksum valid (RFC 1624) without a pass
    /// over the message (an echo reply answers in place).
    #[inline]
    pub fn rewrite_type(&mut self, t: u8) {
        let b = self.buf.as_mut();
        let old = be16(b, field::TYPE);
        b[field::TYPE] = t;
        let c = checksum::update16(be16(b, field::CHECKSUM), old, be16(b, field::TYPE));
        put16(b, field::CHECKSUM, c);
    }
    /// The quoted packet of an error, to rewrite.
    ///
    /// # Errors
    /// See [`Quote::new_checked`].
    #[inline]
    pub fn quote_mut(&mut self) -> Result<Quote<&mut [u8]>, WireError> {
        Quote::new_checked(&mut self.buf.as_mut()[HEADER_LEN..])
    }
    /// Recompute the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = super::checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
    }
}

mod quote {
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// The packet an ICMP error quotes: an IPv4 header and at least the first
/// [`QUOTED_PAYLOAD_LEN`] bytes of its payload. Its total length is not
/// checked (the rest of the packet is not there); after
/// [`Quote::new_checked`] no accessor can panic.
#[derive(Debug)]
pub struct Quote<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Quote<T> {
    /// # Errors
    /// `Truncated` when the header it claims or the 8 bytes after it are
    /// missing; `Malformed` when it is not an IPv4 header (version, IHL < 5).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let ihl = ipv4::check_header(buf.as_ref())?;
        if buf.as_ref().len() < ihl + QUOTED_PAYLOAD_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Quote { buf })
    }
    /// Length of the quoted IPv4 header.
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[0] & 0xf) as usize) * 4
    }
    #[inline]
    pub fn protocol(&self) -> Protocol {
        Protocol::from(self.buf.as_ref()[quote::PROTOCOL])
    }
    #[inline]
    pub fn src(&self) -> u32 {
        be32(self.buf.as_ref(), quote::SRC)
    }
    #[inline]
    pub fn dst(&self) -> u32 {
        be32(self.buf.as_ref(), quote::DST)
    }
    /// The quoted TCP/UDP source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), self.header_len())
    }
    /// The quoted TCP/UDP destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), self.header_len() + 2)
    }
    /// True when the quoted header's checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buf.as_ref()[..self.header_len()], 0) == 0xffff
    }
}

/// Rewrites of a quoted packet. The quoted header's checksum is recomputed
/// (it is short); the quoted transport checksum is left as it is, as IPVS
/// leaves it (only 8 bytes of the segment are there to check it against).
impl<T: AsRef<[u8]> + AsMut<[u8]>> Quote<T> {
    #[inline]
    pub fn set_src(&mut self, a: u32) {
        put32(self.buf.as_mut(), quote::SRC, a);
        self.fill_checksum();
    }
    #[inline]
    pub fn set_dst(&mut self, a: u32) {
        put32(self.buf.as_mut(), quote::DST, a);
        self.fill_checksum();
    }
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        let at = self.header_len();
        put16(self.buf.as_mut(), at, p);
    }
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        let at = self.header_len() + 2;
        put16(self.buf.as_mut(), at, p);
    }
    #[inline]
    fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        put16(b, quote::CHECKSUM, 0);
        let c = checksum::checksum(&b[..hl]);
        put16(b, quote::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip() {
        let mut b = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        m.fill_checksum();
        assert_eq!(crate::wire::checksum::sum(&b, 0), 0xffff);
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!((m.msg_type(), m.code(), m.is_error()), (ECHO_REQUEST, 0, false));
        assert_eq!(m.payload(), b"hi");
        assert_eq!(Message::new_checked(&b[..7]).unwrap_err(), WireError::Truncated);
    }

    /// A "port unreachable" quoting 198.18.100.1:80 -> 198.18.1.2:40000 (TCP).
    fn unreachable() -> [u8; 36] {
        let mut b = [0u8; 36];
        b[..8].copy_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        b[8..28].copy_from_slice(&[
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 100, 1, 198, 18, 1, 2,
        ]);
        let c = checksum::checksum(&b[8..28]);
        b[18..20].copy_from_slice(&c.to_be_bytes());
        b[28..36].copy_from_slice(&[0, 80, 0x9c, 0x40, 0, 0, 0, 7]);
        let c = checksum::checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn quote_parse() {
        let b = unreachable();
        let m = Message::new_checked(&b[..]).unwrap();
        assert!(m.is_error() && m.verify_checksum());
        let q = m.quote().unwrap();
        assert_eq!((q.src(), q.dst()), (0xc612_6401, 0xc612_0102));
        assert_eq!((q.src_port(), q.dst_port()), (80, 40000));
        assert_eq!((q.protocol(), q.header_len()), (Protocol::Tcp, 20));
        assert!(q.verify_checksum());
    }

    #[test]
    fn quote_refusals() {
        let b = unreachable();
        let m = Message::new_checked(&b[..35]).unwrap();
        assert_eq!(m.quote().unwrap_err(), WireError::Truncated);
        for (ver_ihl, e) in [
            (0x44, WireError::Malformed), // IHL 4: 16 bytes, no IPv4 header
            (0x40, WireError::Malformed),
            (0x65, WireError::Malformed),
            (0x46, WireError::Truncated), // options claimed: 8 bytes short
        ] {
            let mut b = unreachable();
            b[8] = ver_ihl;
            assert_eq!(Quote::new_checked(&b[8..]).unwrap_err(), e, "{ver_ihl:#x}");
        }
    }

    #[test]
    fn quote_rewrite_into_junk() {
        // Rewrite a junk quote into the one above, field by field.
        let want = unreachable();
        let mut b = want;
        b[20..28].fill(0xa5);
        b[28..32].fill(0xa5);
        b[18..20].fill(0xa5);
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        let mut q = m.quote_mut().unwrap();
        q.set_src(0xc612_6401);
        q.set_dst(0xc612_0102);
        q.set_src_port(80);
        q.set_dst_port(40000);
        m.fill_checksum();
        assert_eq!(b, want);
    }

    #[test]
    fn rewrite_type_keeps_the_checksum() {
        let mut b = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        m.fill_checksum();
        m.rewrite_type(ECHO_REPLY);
        assert!(m.verify_checksum());
        let mut want = [ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let c = checksum::checksum(&want);
        want[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(b, want);
    }
}
