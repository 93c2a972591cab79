//! UDP header view (fast path).

use super::{be16, put16, WireError};

pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field within the UDP header.
pub const CHECKSUM_OFFSET: usize = 6;

/// A view of a UDP datagram; after `new_checked` the 8-byte header is present.
#[derive(Debug)]
pub struct Datagram<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// # Errors
    /// `Truncated` when fewer than 8 bytes.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Datagram { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buf.as_mut(), 0, p)
    }
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buf.as_mut(), 2, p)
    }
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), CHECKSUM_OFFSET, c)
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
}
