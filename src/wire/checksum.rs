//! Internet checksum helpers (RFC 1071 full sums, RFC 1624 incremental
//! updates). Fast path.

/// One's-complement sum of `data` folded into 16 bits, not inverted.
pub fn sum(data: &[u8], initial: u32) -> u16 {
    let mut acc = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    fold(acc)
}

/// Fold a wide accumulator into 16 bits.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (whose checksum field must be zero).
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data, 0)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old`
/// to `new`: HC' = ~(~HC + ~m + m').
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = (!hc as u64) + (!old as u64) + new as u64;
    !fold(acc)
}

/// RFC 1624 update for a 32-bit field (two 16-bit words).
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: sum of 0001 f203 f4f5 f6f7 = ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&d, 0), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn incremental_matches_full() {
        let mut d = [
            0x45u8, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&d);
        d[10..12].copy_from_slice(&c.to_be_bytes());
        // change the destination address and TTL incrementally
        let old_dst = u32::from_be_bytes([d[16], d[17], d[18], d[19]]);
        let new_dst = 0xc612_640au32;
        let mut hc = update32(c, old_dst, new_dst);
        d[16..20].copy_from_slice(&new_dst.to_be_bytes());
        let old_w = u16::from_be_bytes([d[8], d[9]]);
        d[8] -= 1;
        hc = update16(hc, old_w, u16::from_be_bytes([d[8], d[9]]));
        d[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(hc, checksum(&d));
    }
}
