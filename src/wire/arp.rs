//! ARP (Ethernet/IPv4) packet view and builder (slow path).

use super::ethernet::Mac;
use super::{be16, be32, put16, put32, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Op {
    fn from(v: u16) -> Self {
        match v {
            1 => Op::Request,
            2 => Op::Reply,
            x => Op::Unknown(x),
        }
    }
}

impl From<Op> for u16 {
    fn from(v: Op) -> u16 {
        match v {
            Op::Request => 1,
            Op::Reply => 2,
            Op::Unknown(x) => x,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug)]
pub struct Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// # Errors
    /// `Truncated` below 28 bytes; `Malformed` when not Ethernet/IPv4.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buf })
    }
    pub fn op(&self) -> Op {
        Op::from(be16(self.buf.as_ref(), 6))
    }
    pub fn sender_mac(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[8..14]);
        m
    }
    pub fn sender_ip(&self) -> u32 {
        be32(self.buf.as_ref(), 14)
    }
    pub fn target_mac(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[18..24]);
        m
    }
    pub fn target_ip(&self) -> u32 {
        be32(self.buf.as_ref(), 24)
    }
}

/// Write a whole Ethernet + ARP frame (42 bytes) into `out`.
///
/// # Panics
/// If `out` is shorter than 42 bytes.
#[allow(clippy::too_many_arguments)]
pub fn emit_frame(
    out: &mut [u8],
    eth_dst: Mac,
    eth_src: Mac,
    op: Op,
    sender_mac: Mac,
    sender_ip: u32,
    target_mac: Mac,
    target_ip: u32,
) -> usize {
    out[0..6].copy_from_slice(&eth_dst);
    out[6..12].copy_from_slice(&eth_src);
    put16(out, 12, 0x0806);
    let a = &mut out[14..14 + LEN];
    put16(a, 0, 1);
    put16(a, 2, 0x0800);
    a[4] = 6;
    a[5] = 4;
    put16(a, 6, op.into());
    a[8..14].copy_from_slice(&sender_mac);
    put32(a, 14, sender_ip);
    a[18..24].copy_from_slice(&target_mac);
    put32(a, 24, target_ip);
    14 + LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut junk = [0xeeu8; 60];
        let n = emit_frame(
            &mut junk,
            [0xff; 6],
            [2, 0, 0, 0, 0, 1],
            Op::Request,
            [2, 0, 0, 0, 0, 1],
            0xc612_0002,
            [0; 6],
            0xc612_000b,
        );
        assert_eq!(n, 42);
        assert_eq!(&junk[12..14], &[0x08, 0x06]);
        let p = Packet::new_checked(&junk[14..n]).unwrap();
        assert_eq!(p.op(), Op::Request);
        assert_eq!(p.sender_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(p.sender_ip(), 0xc612_0002);
        assert_eq!(p.target_mac(), [0; 6]);
        assert_eq!(p.target_ip(), 0xc612_000b);
        assert_eq!(&junk[n..], &[0xee; 18]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Packet::new_checked(&[0u8; 27][..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&[0u8; 28][..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
