//! ICMPv4 header view (fast path): type, code, checksum, and the quoted
//! packet of error messages.

use super::{be16, put16, WireError};

pub const HEADER_LEN: usize = 8;
pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
/// Code of "fragmentation needed and DF set" under `DEST_UNREACHABLE`.
pub const CODE_FRAG_NEEDED: u8 = 4;

/// A view of an ICMP message; after `new_checked` the 8-byte header is present.
#[derive(Debug)]
pub struct Message<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// # Errors
    /// `Truncated` when fewer than 8 bytes.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Message { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// True for the error types that quote a packet the VIP sent.
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), DEST_UNREACHABLE | TIME_EXCEEDED)
    }
    /// Bytes after the 8-byte header (the quoted packet of an error).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    pub fn set_type(&mut self, t: u8) {
        self.buf.as_mut()[0] = t;
    }
    pub fn set_code(&mut self, c: u8) {
        self.buf.as_mut()[1] = c;
    }
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), 2, c)
    }
    /// The 4 bytes after type/code/checksum (id+seq, or unused+MTU).
    pub fn set_rest(&mut self, v: [u8; 4]) {
        self.buf.as_mut()[4..8].copy_from_slice(&v);
    }
    /// Recompute the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = super::checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
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
}
