//! In-place frame rewrites (fast path).
//!
//! DR: only the Ethernet header changes: destination = the server's MAC,
//! source = the director's own. Keeping the router's source MAC would make the
//! switch learn the router's MAC on the director's port, and every reply to
//! the router would be lost.

/// Rewrite a frame for direct routing.
///
/// # Panics
/// If `frame` is shorter than an Ethernet header (classify guarantees it is not).
#[inline]
pub fn dr(frame: &mut [u8], server_mac: [u8; 6], director_mac: [u8; 6]) {
    frame[0..6].copy_from_slice(&server_mac);
    frame[6..12].copy_from_slice(&director_mac);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::checksum;

    /// An Ethernet + IPv4 + TCP frame with valid checksums (fixture builder).
    pub(crate) fn tcp_frame(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip.copy_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut f[34..54];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        t[14..16].copy_from_slice(&[0xff, 0xff]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.to_be_bytes());
        pseudo.extend_from_slice(&dst.to_be_bytes());
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        let s = checksum::sum(&pseudo, 0);
        let c = !checksum::sum(&f[34..54], s as u32);
        f[50..52].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn dr_changes_only_macs() {
        let orig = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x02);
        let mut f = orig.clone();
        dr(&mut f, [2, 0, 0, 0, 0, 0x0b], [2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[12..], &orig[12..]);
    }
}
