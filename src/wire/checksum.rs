//! Internet checksum helpers (RFC 1071 full sums, RFC 1624 incremental
//! updates, the IPv4 and IPv6 pseudo-headers). Fast path.

use super::ipv4::Protocol;
use super::{put16, WireError};

/// One's-complement sum of `data` folded into 16 bits, not inverted.
#[inline]
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
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (whose checksum field must be zero).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data, 0)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old`
/// to `new`: HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = (!hc as u64) + (!old as u64) + new as u64;
    !fold(acc)
}

/// RFC 1624 update for a 32-bit field (two 16-bit words).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

/// The IPv4 pseudo-header sum (RFC 793, RFC 768): folded, not inverted.
/// It starts a TCP/UDP checksum, and it is what a partial checksum field
/// (vnet `NEEDS_CSUM`, Linux `CHECKSUM_PARTIAL`) holds.
#[inline]
pub fn pseudo_header(src: u32, dst: u32, proto: Protocol, l4_len: u16) -> u16 {
    let acc = (src >> 16) as u64
        + (src & 0xffff) as u64
        + (dst >> 16) as u64
        + (dst & 0xffff) as u64
        + u64::from(u8::from(proto))
        + u64::from(l4_len);
    fold(acc)
}

/// The IPv6 pseudo-header sum (RFC 8200 section 8.1: source, destination,
/// 32-bit upper-layer length, next header): folded, not inverted. It starts
/// a TCP/UDP/ICMPv6 checksum over IPv6 and is what a partial checksum field
/// holds. `next_header` is the upper-layer protocol (6, 17, 58), never an
/// extension header's number; `l4_len` counts the upper-layer header and
/// its data, not the extension headers before it.
#[inline]
pub fn pseudo_header6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u16 {
    let mut acc = u64::from(next_header) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff);
    acc += words128(src) + words128(dst);
    fold(acc)
}

/// Sum of the eight 16-bit words of an address, unfolded (at most
/// 8 * 0xffff, so sums of a few never overflow a u64).
#[inline]
fn words128(a: &[u8; 16]) -> u64 {
    let v = u128::from_be_bytes(*a);
    (0..8).map(|i| ((v >> (16 * i)) & 0xffff) as u64).sum()
}

/// RFC 1624 eqn. 3 for a 128-bit field (an IPv6 address of the
/// pseudo-header): HC' = ~(~HC + ~m + m') over its eight words at once.
#[inline]
pub fn update128(hc: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    // ~m summed word by word is 8 * 0xffff - sum(m).
    let acc = u64::from(!hc) + (8 * 0xffff - words128(old)) + words128(new);
    !fold(acc)
}

/// A TCP/UDP/ICMPv6 checksum field after an IPv6 address of the
/// pseudo-header changed from `old` to `new` (NAT over IPv6); the
/// [`State`] rules are those of [`update_pseudo32`].
#[inline]
pub fn update_pseudo128(field: u16, state: State, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    match state {
        State::Full => update128(field, old, new),
        State::Partial => !update128(!field, old, new),
    }
}

/// Complete a partial checksum in place, as Linux's `skb_checksum_help`
/// does: the field at `start + field` holds the pseudo-header sum, so the
/// sum over `data[start..]` (the field included) is the checksum. `data`
/// must end where the packet ends (not with the frame's link padding). A
/// result of 0 is sent as 0xffff (the same in one's complement; 0 means
/// "no checksum" to UDP).
///
/// # Errors
/// [`WireError::Truncated`] when the field is not inside `data[start..]`.
#[inline]
pub fn complete_partial(data: &mut [u8], start: usize, field: usize) -> Result<(), WireError> {
    let at = start.checked_add(field).ok_or(WireError::Truncated)?;
    if at.checked_add(2).is_none_or(|end| end > data.len()) {
        return Err(WireError::Truncated);
    }
    let c = match !sum(&data[start..], 0) {
        0 => 0xffff,
        c => c,
    };
    put16(data, at, c);
    Ok(())
}

/// What a TCP/UDP checksum field holds, which decides how a rewrite keeps
/// it right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The complete checksum (RFC 1071): every change updates it (RFC 1624).
    Full,
    /// Only the pseudo-header sum, un-complemented, which the sender's
    /// offload completes later over the bytes (vnet `NEEDS_CSUM`). Address
    /// changes update it un-complemented; changes to covered bytes (ports)
    /// must not touch it, as Linux's `inet_proto_csum_replace*` does.
    Partial,
}

/// A TCP/UDP checksum field after an address of the pseudo-header changed
/// from `old` to `new`.
#[inline]
pub fn update_pseudo32(field: u16, state: State, old: u32, new: u32) -> u16 {
    match state {
        State::Full => update32(field, old, new),
        State::Partial => !update32(!field, old, new),
    }
}

/// A TCP/UDP checksum field after a 16-bit word of the segment (not of the
/// pseudo-header, e.g. a port) changed from `old` to `new`.
#[inline]
pub fn update_covered16(field: u16, state: State, old: u16, new: u16) -> u16 {
    match state {
        State::Full => update16(field, old, new),
        State::Partial => field,
    }
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

    #[test]
    fn pseudo_header_matches_the_bytes() {
        // 198.18.1.2 -> 198.18.100.1, TCP, 20 bytes.
        let bytes = [198, 18, 1, 2, 198, 18, 100, 1, 0, 6, 0, 20];
        assert_eq!(
            pseudo_header(0xc612_0102, 0xc612_6401, Protocol::Tcp, 20),
            sum(&bytes, 0)
        );
    }

    fn v6(last: u16) -> [u8; 16] {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[14..].copy_from_slice(&last.to_be_bytes());
        a
    }

    #[test]
    fn pseudo_header6_matches_the_bytes() {
        // 2001:db8::1 -> 2001:db8::ffff, ICMPv6, 70000 bytes (the length
        // is 32 bits wide in the IPv6 pseudo-header).
        let (s, d) = (v6(1), v6(0xffff));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s);
        bytes.extend_from_slice(&d);
        bytes.extend_from_slice(&70000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(pseudo_header6(&s, &d, 58, 70000), sum(&bytes, 0));
    }

    #[test]
    fn update128_matches_a_full_sum() {
        let data = [0x12u8, 0x34, 0xab, 0xcd, 0xff, 0xff, 0, 1];
        for (old, new) in [
            (v6(1), v6(0xffff)),
            ([0xff; 16], [0; 16]),
            ([0; 16], [0xff; 16]),
            (v6(7), v6(7)),
            (
                [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0x11],
                v6(0x8000),
            ),
        ] {
            let ps = pseudo_header6(&old, &v6(2), 6, 8);
            let c = !sum(&data, u32::from(ps));
            let ps2 = pseudo_header6(&new, &v6(2), 6, 8);
            let want = !sum(&data, u32::from(ps2));
            let got = update128(c, &old, &new);
            // 0x0000 and 0xffff are the same one's-complement value.
            assert!(
                got == want || (got ^ want == 0xffff && got & want == 0),
                "{got:#x} {want:#x}"
            );
            let partial = update_pseudo128(ps, State::Partial, &old, &new);
            assert_eq!(fold(u64::from(partial)) % 0xffff, ps2 % 0xffff);
        }
    }

    #[test]
    fn partial_fields_follow_addresses_not_ports() {
        let ps = pseudo_header(0x0a00_0001, 0x0a00_0002, Protocol::Udp, 8);
        let moved = update_pseudo32(ps, State::Partial, 0x0a00_0002, 0xc612_000b);
        assert_eq!(moved, pseudo_header(0x0a00_0001, 0xc612_000b, Protocol::Udp, 8));
        assert_eq!(update_covered16(moved, State::Partial, 53, 5353), moved);
        assert_eq!(
            update_covered16(0x1234, State::Full, 1, 2),
            update16(0x1234, 1, 2)
        );
    }
}
