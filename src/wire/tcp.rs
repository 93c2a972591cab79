//! TCP header view (fast path): ports, flags, checksum.

use super::{be16, put16, WireError};

pub const MIN_HEADER_LEN: usize = 20;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

/// Offset of the checksum field within the TCP header.
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
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), field::DST_PORT)
    }
    pub fn seq(&self) -> u32 {
        super::be32(self.buf.as_ref(), field::SEQ)
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buf.as_mut(), field::SRC_PORT, p)
    }
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buf.as_mut(), field::DST_PORT, p)
    }
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c)
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
