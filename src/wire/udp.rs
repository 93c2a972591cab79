//! UDP header view (fast path).

use super::checksum::{self, State};
use super::{be16, put16, WireError};

pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Offset of the checksum field within the UDP header (what a vnet
/// header's `csum_offset` names).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// A view of a UDP datagram; after `new_checked` the 8-byte header is present.
#[derive(Debug)]
pub struct Datagram<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// # Errors
    /// `Truncated` when fewer than 8 bytes.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Datagram { buf })
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
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), field::LENGTH)
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    /// True when the checksum verifies over the whole buffer (which must be
    /// exactly the datagram) with the IPv6 pseudo-header of `src` -> `dst`.
    /// A checksum of 0 does not: it is mandatory over IPv6 (RFC 8200
    /// section 8.1).
    #[inline]
    pub fn verify_checksum6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let b = self.buf.as_ref();
        match u32::try_from(b.len()) {
            Ok(len) if self.checksum() != 0 => {
                let ps = checksum::pseudo_header6(src, dst, 17, len);
                checksum::sum(b, u32::from(ps)) == 0xffff
            }
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
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
        put16(self.buf.as_mut(), CHECKSUM_OFFSET, c)
    }
    /// Keep the checksum right after an address of the pseudo-header changed.
    #[inline]
    pub fn pseudo_header_changed(&mut self, old: u32, new: u32, state: State) {
        self.update(state, |c| checksum::update_pseudo32(c, state, old, new));
    }
    /// Set the source port, keeping the checksum right (RFC 1624).
    #[inline]
    pub fn rewrite_src_port(&mut self, p: u16, state: State) {
        let old = self.src_port();
        self.update(state, |c| checksum::update_covered16(c, state, old, p));
        self.set_src_port(p);
    }
    /// Set the destination port, keeping the checksum right (RFC 1624).
    #[inline]
    pub fn rewrite_dst_port(&mut self, p: u16, state: State) {
        let old = self.dst_port();
        self.update(state, |c| checksum::update_covered16(c, state, old, p));
        self.set_dst_port(p);
    }
    /// Keep the checksum right after an IPv6 address of the pseudo-header
    /// changed (NAT over IPv6).
    #[inline]
    pub fn pseudo_header_changed6(&mut self, old: &[u8; 16], new: &[u8; 16], state: State) {
        self.update(state, |c| checksum::update_pseudo128(c, state, old, new));
    }
    /// Compute the full checksum over the whole buffer (exactly the
    /// datagram) with the IPv6 pseudo-header; a computed 0 is sent as
    /// 0xffff.
    #[inline]
    pub fn fill_checksum6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let b = self.buf.as_ref();
        let ps = checksum::pseudo_header6(src, dst, 17, b.len() as u32);
        let c = match !checksum::sum(b, u32::from(ps)) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }
    /// A full checksum of 0 means "none" (RFC 768) and stays 0; a computed 0
    /// is sent as 0xffff. A partial field always holds a sum.
    #[inline]
    fn update(&mut self, state: State, f: impl FnOnce(u16) -> u16) {
        let old = self.checksum();
        if state == State::Full && old == 0 {
            return;
        }
        let c = match f(old) {
            0 if state == State::Full => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_emit() {
        let mut b = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0xab, 0xcd, 1, 2, 3, 4];
        let d = Datagram::new_checked(&b[..]).unwrap();
        assert_eq!((d.src_port(), d.dst_port(), d.len()), (12345, 53, 12));
        assert_eq!(d.checksum(), 0xabcd);
        let mut d = Datagram::new_checked(&mut b[..]).unwrap();
        d.set_dst_port(5353);
        d.set_checksum(0);
        assert_eq!(&b[2..4], &5353u16.to_be_bytes());
        assert_eq!(&b[6..8], &[0, 0]);
        assert_eq!(Datagram::new_checked(&b[..7]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn rewrites_keep_the_checksum() {
        // 198.18.1.2:12345 -> 198.18.100.1:53, "abcd".
        let (src, dst) = (0xc612_0102u32, 0xc612_6401u32);
        let mut b = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd'];
        let full = |b: &[u8], dst: u32| {
            let ps = checksum::pseudo_header(src, dst, super::super::ipv4::Protocol::Udp, 12);
            !checksum::sum(b, u32::from(ps))
        };
        let c = full(&b, dst);
        b[6..8].copy_from_slice(&c.to_be_bytes());
        let mut d = Datagram::new_checked(&mut b[..]).unwrap();
        d.pseudo_header_changed(dst, 0xc612_000b, State::Full);
        d.rewrite_dst_port(5353, State::Full);
        let got = d.checksum();
        b[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(got, full(&b, 0xc612_000b));
        // No checksum stays none.
        let mut d = Datagram::new_checked(&mut b[..]).unwrap();
        d.rewrite_dst_port(53, State::Full);
        d.pseudo_header_changed(0xc612_000b, dst, State::Full);
        assert_eq!(d.checksum(), 0);
        assert_eq!(&b[2..4], &53u16.to_be_bytes());
    }
}
