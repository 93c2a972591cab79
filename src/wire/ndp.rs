//! Neighbor Discovery (RFC 4861) Neighbor Solicitation and Advertisement:
//! a view over the ICMPv6 message, writers of whole Ethernet + IPv6 +
//! ICMPv6 frames, and the solicited-node multicast address and MAC a
//! director listens on for its IPv6 VIPs. Parsing runs on the fast path
//! (every NS reaches the classifier); writing answers is slow path.
//!
//! RFC 4861 section 7.1 also requires the IPv6 hop limit to be 255 (a
//! message from off-link cannot have it): the caller checks
//! [`HOP_LIMIT`] on the IPv6 header, which this view does not see.

use super::ethernet::{self, EtherType, Mac};
use super::icmpv6::{self, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT};
use super::ipv6::{self, next_header};
use super::{put16, WireError};

/// The hop limit of every ND message, sent and accepted.
pub const HOP_LIMIT: u8 = 255;
/// Type, code, checksum, reserved/flags, target address.
pub const FIXED_LEN: usize = 24;
/// Option: source link-layer address.
pub const OPT_SOURCE_LL: u8 = 1;
/// Option: target link-layer address.
pub const OPT_TARGET_LL: u8 = 2;
/// Advertisement flag: the sender is a router.
pub const FLAG_ROUTER: u8 = 0x80;
/// Advertisement flag: an answer to a solicitation.
pub const FLAG_SOLICITED: u8 = 0x40;
/// Advertisement flag: override an existing cache entry.
pub const FLAG_OVERRIDE: u8 = 0x20;
/// Length of an NS or NA with one link-layer address option (Ethernet).
pub const LEN_WITH_LL: usize = FIXED_LEN + 8;
/// Length of a whole Ethernet + IPv6 + NS/NA frame with the option.
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + LEN_WITH_LL;
/// All-nodes multicast address ff02::1 (unsolicited advertisements go there).
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

mod field {
    pub const FLAGS: usize = 4;
    pub const TARGET: core::ops::Range<usize> = 8..24;
}

/// The solicited-node multicast address of `addr` (RFC 4291 section
/// 2.7.1): `ff02::1:ff00:0/104` with the low 24 bits of `addr`.
#[inline]
pub fn solicited_node(addr: &[u8; 16]) -> [u8; 16] {
    let mut a = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    a[13..].copy_from_slice(&addr[13..]);
    a
}

/// The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464
/// section 7): `33:33` and its low 32 bits; for a solicited-node address,
/// `33:33:ff:XX:XX:XX`.
#[inline]
pub fn multicast_mac(addr: &[u8; 16]) -> Mac {
    [0x33, 0x33, addr[12], addr[13], addr[14], addr[15]]
}

/// True for a solicited-node multicast address (`ff02::1:ffXX:XXXX`).
#[inline]
pub fn is_solicited_node(addr: &[u8; 16]) -> bool {
    addr[..13] == [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// A view of a Neighbor Solicitation or Advertisement (the ICMPv6 message,
/// from its type byte to the packet's end). After [`Message::new_checked`]
/// the fixed part is present and every option has a non-zero length that
/// fits (RFC 4861 section 7.1.1).
#[derive(Debug)]
pub struct Message<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// # Errors
    /// `Truncated` below 24 bytes; `Malformed` when the type is not 135 or
    /// 136, the code is not 0, or an option has length 0 or runs past the end.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < FIXED_LEN {
            return Err(WireError::Truncated);
        }
        if !matches!(b[0], NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT) || b[1] != 0 {
            return Err(WireError::Malformed);
        }
        let mut at = FIXED_LEN;
        while at < b.len() {
            let len = match b.get(at + 1) {
                Some(&l) if l != 0 => usize::from(l) * 8,
                _ => return Err(WireError::Malformed),
            };
            if at + len > b.len() {
                return Err(WireError::Malformed);
            }
            at += len;
        }
        Ok(Message { buf })
    }
    #[inline]
    pub fn is_solicitation(&self) -> bool {
        self.buf.as_ref()[0] == NEIGHBOR_SOLICIT
    }
    #[inline]
    pub fn is_advertisement(&self) -> bool {
        self.buf.as_ref()[0] == NEIGHBOR_ADVERT
    }
    /// The target address: asked about (NS) or announced (NA).
    #[inline]
    pub fn target(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::TARGET]);
        a
    }
    /// An advertisement's R/S/O flags ([`FLAG_ROUTER`], [`FLAG_SOLICITED`],
    /// [`FLAG_OVERRIDE`]); 0 for a solicitation (reserved there).
    #[inline]
    pub fn flags(&self) -> u8 {
        if self.is_advertisement() {
            self.buf.as_ref()[field::FLAGS] & 0xe0
        } else {
            0
        }
    }
    #[inline]
    pub fn router(&self) -> bool {
        self.flags() & FLAG_ROUTER != 0
    }
    #[inline]
    pub fn solicited(&self) -> bool {
        self.flags() & FLAG_SOLICITED != 0
    }
    #[inline]
    pub fn override_flag(&self) -> bool {
        self.flags() & FLAG_OVERRIDE != 0
    }
    /// The first option of type `kind` holding an Ethernet address.
    #[inline]
    pub fn option_mac(&self, kind: u8) -> Option<Mac> {
        let b = self.buf.as_ref();
        let mut at = FIXED_LEN;
        // new_checked saw every option's length non-zero and in bounds.
        while at + 2 <= b.len() {
            let len = usize::from(b[at + 1]) * 8;
            if len == 0 || at + len > b.len() {
                return None;
            }
            if b[at] == kind && len >= 8 {
                let mut m = [0; 6];
                m.copy_from_slice(&b[at + 2..at + 8]);
                return Some(m);
            }
            at += len;
        }
        None
    }
    /// The link-layer address the sender gave: the source link-layer option
    /// of a solicitation (absent when its source is `::`, duplicate address
    /// detection), the target link-layer option of an advertisement.
    #[inline]
    pub fn link_layer(&self) -> Option<Mac> {
        self.option_mac(if self.is_solicitation() {
            OPT_SOURCE_LL
        } else {
            OPT_TARGET_LL
        })
    }
}

/// Write the fixed Ethernet + IPv6 headers of an ND frame carrying a
/// [`LEN_WITH_LL`]-byte message.
fn write_headers(out: &mut [u8], dst_mac: Mac, src_mac: Mac, src: &[u8; 16], dst: &[u8; 16]) {
    let mut eth = ethernet::Frame::new_unchecked(&mut out[..ethernet::HEADER_LEN]);
    eth.set_dst(dst_mac);
    eth.set_src(src_mac);
    eth.set_ethertype(EtherType::Ipv6);
    let mut ip = ipv6::Packet::new_unchecked(&mut out[ethernet::HEADER_LEN..]);
    ip.set_ver_tc_flow(0, 0);
    ip.set_payload_len(LEN_WITH_LL as u16);
    ip.set_next_header(next_header::ICMPV6);
    ip.set_hop_limit(HOP_LIMIT);
    ip.set_src(*src);
    ip.set_dst(*dst);
}

/// Write the ND message (type, flags, target, one link-layer option) and
/// its checksum.
#[allow(clippy::too_many_arguments)]
fn write_message(
    m: &mut [u8],
    kind: u8,
    flags: u8,
    target: &[u8; 16],
    opt: u8,
    mac: Mac,
    src: &[u8; 16],
    dst: &[u8; 16],
) {
    m[..8].copy_from_slice(&[kind, 0, 0, 0, flags, 0, 0, 0]);
    m[field::TARGET].copy_from_slice(target);
    m[FIXED_LEN..FIXED_LEN + 2].copy_from_slice(&[opt, 1]);
    m[FIXED_LEN + 2..LEN_WITH_LL].copy_from_slice(&mac);
    put16(m, icmpv6::CHECKSUM_OFFSET, 0);
    let c = icmpv6::compute_checksum(src, dst, &m[..LEN_WITH_LL]);
    put16(m, icmpv6::CHECKSUM_OFFSET, c);
}

/// Write a whole Neighbor Advertisement frame ([`FRAME_LEN`] bytes) into
/// `out`: `src_mac`/`src` answer for `target` with the target link-layer
/// option `src_mac`, to `dst_mac`/`dst` (the solicitor, or
/// [`ALL_NODES`] and its MAC for an unsolicited advertisement, with
/// [`FLAG_OVERRIDE`] and without [`FLAG_SOLICITED`]). Returns the length.
///
/// # Errors
/// `Truncated` when `out` is shorter than [`FRAME_LEN`].
pub fn write_advertisement(
    out: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: &[u8; 16],
    dst: &[u8; 16],
    target: &[u8; 16],
    flags: u8,
) -> Result<usize, WireError> {
    if out.len() < FRAME_LEN {
        return Err(WireError::Truncated);
    }
    write_headers(out, dst_mac, src_mac, src, dst);
    let at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    write_message(
        &mut out[at..FRAME_LEN],
        NEIGHBOR_ADVERT,
        flags & 0xe0,
        target,
        OPT_TARGET_LL,
        src_mac,
        src,
        dst,
    );
    Ok(FRAME_LEN)
}

/// Write a whole Neighbor Solicitation frame ([`FRAME_LEN`] bytes) asking
/// for `target`, from `src_mac`/`src` (the source link-layer option), to
/// the target's solicited-node address and MAC. Returns the length.
///
/// # Errors
/// `Truncated` when `out` is shorter than [`FRAME_LEN`].
pub fn write_solicitation(
    out: &mut [u8],
    src_mac: Mac,
    src: &[u8; 16],
    target: &[u8; 16],
) -> Result<usize, WireError> {
    if out.len() < FRAME_LEN {
        return Err(WireError::Truncated);
    }
    let dst = solicited_node(target);
    write_headers(out, multicast_mac(&dst), src_mac, src, &dst);
    let at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    write_message(
        &mut out[at..FRAME_LEN],
        NEIGHBOR_SOLICIT,
        0,
        target,
        OPT_SOURCE_LL,
        src_mac,
        src,
        &dst,
    );
    Ok(FRAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::icmpv6::Message as Icmp6;

    const VIP: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56,
    ];
    const ROUTER: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    const DIRECTOR_MAC: Mac = [2, 0, 0, 0, 0, 2];
    const ROUTER_MAC: Mac = [2, 0, 0, 0, 0, 1];

    #[test]
    fn solicited_node_address_and_mac() {
        let s = solicited_node(&VIP);
        assert_eq!(s, [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x12, 0x34, 0x56]);
        assert!(is_solicited_node(&s) && !is_solicited_node(&VIP));
        assert_eq!(multicast_mac(&s), [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(multicast_mac(&ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }

    #[test]
    fn solicitation_round_trip() {
        let mut f = [0xa5u8; FRAME_LEN + 3];
        assert_eq!(
            write_solicitation(&mut f, ROUTER_MAC, &ROUTER, &VIP),
            Ok(FRAME_LEN)
        );
        let eth = ethernet::Frame::new_checked(&f[..FRAME_LEN]).unwrap();
        assert_eq!(eth.dst(), [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(eth.ethertype(), EtherType::Ipv6);
        let ip = ipv6::Packet::new_checked(&f[14..FRAME_LEN]).unwrap();
        assert_eq!((ip.hop_limit(), ip.dst()), (HOP_LIMIT, solicited_node(&VIP)));
        let c = ip.walk().unwrap();
        assert_eq!(c.protocol, next_header::ICMPV6);
        let body = &f[14 + c.transport_offset..FRAME_LEN];
        assert!(Icmp6::new_checked(body)
            .unwrap()
            .verify_checksum(&ROUTER, &ip.dst()));
        let m = Message::new_checked(body).unwrap();
        assert!(m.is_solicitation() && !m.is_advertisement());
        assert_eq!((m.target(), m.flags()), (VIP, 0));
        assert_eq!(m.link_layer(), Some(ROUTER_MAC));
        assert_eq!(m.option_mac(OPT_TARGET_LL), None);
        assert_eq!(f[FRAME_LEN..], [0xa5; 3]);
    }

    #[test]
    fn advertisement_bytes() {
        let mut f = [0u8; FRAME_LEN];
        let flags = FLAG_SOLICITED | FLAG_OVERRIDE | 0x1f; // reserved bits dropped
        write_advertisement(&mut f, ROUTER_MAC, DIRECTOR_MAC, &VIP, &ROUTER, &VIP, flags).unwrap();
        let body = &f[54..];
        let m = Message::new_checked(body).unwrap();
        assert!(m.is_advertisement() && m.solicited() && m.override_flag() && !m.router());
        assert_eq!((m.target(), m.link_layer()), (VIP, Some(DIRECTOR_MAC)));
        #[rustfmt::skip]
        let want_head = [
            NEIGHBOR_ADVERT, 0, body[2], body[3], 0x60, 0, 0, 0,
        ];
        assert_eq!(body[..8], want_head);
        assert_eq!(body[24..32], [OPT_TARGET_LL, 1, 2, 0, 0, 0, 0, 2]);
        assert!(Icmp6::new_checked(body).unwrap().verify_checksum(&VIP, &ROUTER));
        assert_eq!(
            write_advertisement(
                &mut f[..FRAME_LEN - 1],
                ROUTER_MAC,
                DIRECTOR_MAC,
                &VIP,
                &ROUTER,
                &VIP,
                0
            ),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn refusals_and_options() {
        let mut f = [0u8; FRAME_LEN];
        write_solicitation(&mut f, ROUTER_MAC, &ROUTER, &VIP).unwrap();
        let body = f[54..].to_vec();
        assert_eq!(
            Message::new_checked(&body[..23]).unwrap_err(),
            WireError::Truncated
        );
        // Without options (duplicate address detection): no link layer.
        assert_eq!(Message::new_checked(&body[..24]).unwrap().link_layer(), None);
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = body.clone();
            edit(&mut b);
            Message::new_checked(&b[..]).unwrap_err()
        };
        assert_eq!(bad(&|b| b[1] = 1), WireError::Malformed);
        assert_eq!(bad(&|b| b[0] = 128), WireError::Malformed);
        assert_eq!(bad(&|b| b[25] = 0), WireError::Malformed);
        assert_eq!(bad(&|b| b[25] = 2), WireError::Malformed);
        assert_eq!(bad(&|b| b.push(1)), WireError::Malformed);
        // An unknown option first, then the link-layer one.
        let mut b = body[..24].to_vec();
        b.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&body[24..]);
        assert_eq!(
            Message::new_checked(&b[..]).unwrap().link_layer(),
            Some(ROUTER_MAC)
        );
    }
}
