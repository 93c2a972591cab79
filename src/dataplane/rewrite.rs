//! In-place frame rewrites (fast path).
//!
//! * DR: only the Ethernet header changes: destination = the server's MAC,
//!   source = the director's own. Keeping the router's source MAC would make
//!   the switch learn the router's MAC on the director's port, and every reply
//!   to the router would be lost.
//! * NAT: destination (inbound) or source (outbound) address and port are
//!   rewritten with RFC 1624 incremental checksum updates; TTL decremented.
//!   A partial checksum (vnet `NEEDS_CSUM`) holds only the pseudo-header sum,
//!   so addresses update it un-complemented and ports (covered by the sum the
//!   kernel completes later) do not touch it, as Linux's
//!   `inet_proto_csum_replace*` does.
//! * TUN: the IPv4 packet is wrapped in an outer IPv4 header (protocol 4).
//!   Super-frames are segmented here (a vnet header cannot describe IP-in-IP
//!   GSO) and partial checksums completed (the server decapsulates in software
//!   and needs final checksums).
//! * ICMP: echo replies and fragmentation-needed errors are built in place.

use crate::io::{Frame, TxArena, VnetHdr};
use crate::wire::checksum::{self, fold, update16, update32};
use crate::wire::ethernet::HEADER_LEN as ETH;
use crate::wire::{icmp, ipv4, tcp, udp};

/// Rewrite a frame for direct routing.
///
/// # Panics
/// If `frame` is shorter than an Ethernet header (classify guarantees it is not).
#[inline]
pub fn dr(frame: &mut [u8], server_mac: [u8; 6], director_mac: [u8; 6]) {
    frame[0..6].copy_from_slice(&server_mac);
    frame[6..12].copy_from_slice(&director_mac);
}

/// Update a transport checksum field for a change of a pseudo-header word
/// (addresses): full checksums per RFC 1624, partial ones un-complemented.
#[inline]
fn l4_addr_update(field: u16, old: u32, new: u32, partial: bool) -> u16 {
    if partial {
        !update32(!field, old, new)
    } else {
        update32(field, old, new)
    }
}

#[inline]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Which side of the packet NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatSide {
    /// Inbound: destination address/port (client -> VIP becomes client -> RIP).
    Dst,
    /// Outbound: source address/port (RIP -> client becomes VIP -> client).
    Src,
}

/// NAT rewrite of an IPv4 packet in `frame` (Ethernet at 0, IPv4 at 14 with
/// no options). `l4` is false for non-first fragments (no transport header).
/// Returns false when the TTL is exhausted (the packet must be dropped).
///
/// # Panics
/// If the frame is shorter than its headers (classify guarantees they are present).
#[allow(clippy::too_many_arguments)]
pub fn nat(
    frame: &mut [u8],
    side: NatSide,
    new_addr: u32,
    new_port: Option<u16>,
    l4: bool,
    partial: bool,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> bool {
    let ip = ETH;
    let ttl = frame[ip + 8];
    if ttl <= 1 {
        return false;
    }
    let (addr_at, port_off) = match side {
        NatSide::Dst => (ip + 16, 2),
        NatSide::Src => (ip + 12, 0),
    };
    let old_addr = rd32(frame, addr_at);
    let mut hc = rd16(frame, ip + 10);
    let old_w = rd16(frame, ip + 8);
    frame[ip + 8] = ttl - 1;
    hc = update16(hc, old_w, rd16(frame, ip + 8));
    hc = update32(hc, old_addr, new_addr);
    frame[addr_at..addr_at + 4].copy_from_slice(&new_addr.to_be_bytes());
    wr16(frame, ip + 10, hc);
    if l4 {
        let ihl = ((frame[ip] & 0xf) as usize) * 4;
        let l4o = ip + ihl;
        let proto = frame[ip + 9];
        let csum_at = match proto {
            6 => Some(l4o + tcp::CHECKSUM_OFFSET),
            17 if partial || rd16(frame, l4o + udp::CHECKSUM_OFFSET) != 0 => Some(l4o + udp::CHECKSUM_OFFSET),
            _ => None,
        };
        let old_port = rd16(frame, l4o + port_off);
        let port = new_port.unwrap_or(old_port);
        if let Some(at) = csum_at {
            let mut c = l4_addr_update(rd16(frame, at), old_addr, new_addr, partial);
            if !partial {
                c = update16(c, old_port, port);
            }
            if proto == 17 && !partial && c == 0 {
                c = 0xffff;
            }
            wr16(frame, at, c);
        }
        wr16(frame, l4o + port_off, port);
    }
    dr(frame, dst_mac, src_mac);
    true
}

/// Compute a partial (vnet `NEEDS_CSUM`) checksum in software and clear the
/// flag: the sum over `csum_start..` goes to `csum_start + csum_offset`.
/// Returns false when the offsets do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], vnet: &mut VnetHdr) -> bool {
    if !vnet.needs_csum() {
        return true;
    }
    let start = vnet.csum_start as usize;
    let at = start + vnet.csum_offset as usize;
    if at + 2 > frame.len() || start > frame.len() {
        return false;
    }
    // The field holds the pseudo-header sum; summing over it completes it.
    let c = !checksum::sum(&frame[start..], 0);
    wr16(frame, at, c);
    vnet.flags &= !VnetHdr::F_NEEDS_CSUM;
    true
}

/// What an IP-in-IP encapsulation needs.
#[derive(Debug, Clone, Copy)]
pub struct TunOuter {
    pub src: u32,
    pub dst: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ttl: u8,
}

fn write_outer(out: &mut [u8], o: &TunOuter, inner_len: usize, df: bool, id: u16) {
    out[0..6].copy_from_slice(&o.dst_mac);
    out[6..12].copy_from_slice(&o.src_mac);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut p = ipv4::Packet::new_unchecked(&mut out[ETH..ETH + 20]);
    p.set_ver_ihl(20);
    p.set_tos(0);
    p.set_total_len((inner_len + 20) as u16);
    p.set_ident(id);
    p.set_flags_frag(if df { ipv4::FLAG_DF } else { 0 });
    p.set_ttl(o.ttl);
    p.set_protocol(ipv4::Protocol::IpIp);
    p.set_src(o.src);
    p.set_dst(o.dst);
    p.fill_checksum();
}

/// Wrap the frame's IPv4 packet (no GSO; checksum already complete) in an
/// outer header, in place. Returns false when the headroom is too small.
pub fn tun_encap(f: &mut Frame<'_>, o: &TunOuter, id: u16) -> bool {
    let inner_len = f.len() - ETH;
    let df = rd16(f.data(), ETH + 6) & ipv4::FLAG_DF != 0;
    if !f.push_front(20) {
        return false;
    }
    write_outer(f.data_mut(), o, inner_len, df, id);
    true
}

/// IP-in-IP for a packet too big for the tunnel whose inner DF is clear:
/// fragment the *outer* packet (as IPVS lets the kernel do), each fragment
/// at most `mtu` bytes, into the arena. `frame` is the whole Ethernet frame
/// with complete checksums. Returns the number of fragments, or None when
/// the arena is full.
pub fn tun_fragment(frame: &[u8], o: &TunOuter, id: u16, mtu: usize, arena: &mut TxArena) -> Option<usize> {
    let inner = &frame[ETH..];
    let step = (mtu.saturating_sub(20) / 8) * 8;
    if step == 0 {
        return None;
    }
    let n = inner.len().div_ceil(step);
    for k in 0..n {
        let chunk = &inner[k * step..((k + 1) * step).min(inner.len())];
        let out = arena.push(ETH + 20 + chunk.len())?;
        write_outer(out, o, chunk.len(), false, id);
        let mf = if k + 1 < n { ipv4::FLAG_MF } else { 0 };
        let mut p = ipv4::Packet::new_unchecked(&mut out[ETH..ETH + 20]);
        p.set_flags_frag(mf | ((k * step / 8) as u16 & ipv4::OFFSET_MASK));
        p.fill_checksum();
        out[ETH + 20..].copy_from_slice(chunk);
    }
    Some(n)
}

/// Segment a TCPv4 super-frame (vnet GSO) into frames of at most `gso_size`
/// payload bytes, each with complete checksums, optionally wrapped in an
/// IP-in-IP header, into the arena. Returns the number of frames written, or
/// None when the frame is not a segmentable TCPv4 frame or the arena is full.
pub fn segment_tcp4(
    frame: &[u8],
    vnet: &VnetHdr,
    outer: Option<(&TunOuter, &mut u16)>,
    arena: &mut TxArena,
) -> Option<usize> {
    let ip = ETH;
    if frame.len() < ip + 20 || frame[ip + 9] != 6 {
        return None;
    }
    let ihl = ((frame[ip] & 0xf) as usize) * 4;
    let l4 = ip + ihl;
    if frame.len() < l4 + 20 {
        return None;
    }
    let thl = ((frame[l4 + 12] >> 4) as usize) * 4;
    let hdrs = l4 + thl;
    let mss = vnet.gso_size as usize;
    if thl < 20 || frame.len() < hdrs || mss == 0 {
        return None;
    }
    let payload = &frame[hdrs..];
    let n = payload.len().div_ceil(mss).max(1);
    let seq0 = rd32(frame, l4 + 4);
    let id0 = rd16(frame, ip + 4);
    let flags = frame[l4 + 13];
    let (src, dst) = (rd32(frame, ip + 12), rd32(frame, ip + 16));
    let mut outer = outer;
    let extra = if outer.is_some() { 20 } else { 0 };
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = hdrs + extra + chunk.len();
        let out = arena.push(len)?;
        let body = &mut out[extra..];
        body[..hdrs].copy_from_slice(&frame[..hdrs]);
        body[hdrs..].copy_from_slice(chunk);
        let ip_len = (ihl + thl + chunk.len()) as u16;
        wr16(body, ip + 2, ip_len);
        wr16(body, ip + 4, id0.wrapping_add(i as u16));
        wr16(body, ip + 10, 0);
        let c = checksum::checksum(&body[ip..ip + ihl]);
        wr16(body, ip + 10, c);
        body[l4 + 4..l4 + 8].copy_from_slice(&seq0.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut fl = flags;
        if i + 1 < n {
            fl &= !(tcp::FIN | tcp::PSH);
        }
        if i > 0 {
            fl &= !0x80; // CWR only on the first segment
        }
        body[l4 + 13] = fl;
        wr16(body, l4 + 16, 0);
        let seg_len = (thl + chunk.len()) as u32;
        let pseudo = fold(
            (src >> 16) as u64
                + (src & 0xffff) as u64
                + (dst >> 16) as u64
                + (dst & 0xffff) as u64
                + 6
                + seg_len as u64,
        );
        let c = !checksum::sum(&body[l4..], pseudo as u32);
        wr16(body, l4 + 16, c);
        if let Some((o, id)) = outer.as_mut() {
            let df = rd16(frame, ip + 6) & ipv4::FLAG_DF != 0;
            let inner_len = ip_len as usize;
            // write_outer writes the Ethernet header too, over the copy's.
            write_outer(out, o, inner_len, df, **id);
            **id = id.wrapping_add(1);
        } else {
            let _ = body;
        }
    }
    Some(n)
}

/// Turn the frame (a VIP packet that cannot be sent) into an ICMP
/// "fragmentation needed" error to its sender, in place: it quotes the IP
/// header and 8 bytes, as RFC 792 asks. Returns false without headroom.
pub fn icmp_frag_needed(f: &mut Frame<'_>, my_mac: [u8; 6], mtu: u16) -> bool {
    let d = f.data();
    if d.len() < ETH + 28 {
        return false;
    }
    let mut router_mac = [0u8; 6];
    router_mac.copy_from_slice(&d[6..12]);
    let (client, vip) = (rd32(d, ETH + 12), rd32(d, ETH + 16));
    if !f.push_front(28) {
        return false;
    }
    // Quote: IP header (20) + 8 bytes, now at offset 28 + 14 = 42.
    let total = ETH + 20 + 8 + 28;
    f.set_len(total);
    let b = f.data_mut();
    // The quoted header keeps its content, but clear a GSO total length of 0.
    b[0..6].copy_from_slice(&router_mac);
    b[6..12].copy_from_slice(&my_mac);
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    {
        let mut p = ipv4::Packet::new_unchecked(&mut b[ETH..ETH + 20]);
        p.set_ver_ihl(20);
        p.set_tos(0);
        p.set_total_len(56);
        p.set_ident(0);
        p.set_flags_frag(ipv4::FLAG_DF);
        p.set_ttl(64);
        p.set_protocol(ipv4::Protocol::Icmp);
        p.set_src(vip);
        p.set_dst(client);
        p.fill_checksum();
    }
    let mut m = icmp::Message::new_checked(&mut b[ETH + 20..total]).expect("36 bytes");
    m.set_type(icmp::DEST_UNREACHABLE);
    m.set_code(icmp::CODE_FRAG_NEEDED);
    let mtu = mtu.to_be_bytes();
    m.set_rest([0, 0, mtu[0], mtu[1]]);
    m.fill_checksum();
    f.vnet = VnetHdr::default();
    true
}

/// Turn an ICMP echo request to a VIP into the reply, in place.
/// Returns false when the message is malformed.
pub fn icmp_echo_reply(frame: &mut [u8], my_mac: [u8; 6]) -> bool {
    if frame.len() < ETH + 20 + 8 {
        return false;
    }
    let ihl = ((frame[ETH] & 0xf) as usize) * 4;
    let total = rd16(frame, ETH + 2) as usize;
    if ETH + total > frame.len() || total < ihl + 8 {
        return false;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[6..12]);
    frame[0..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&my_mac);
    let (src, dst) = (rd32(frame, ETH + 12), rd32(frame, ETH + 16));
    {
        let mut p = ipv4::Packet::new_unchecked(&mut frame[ETH..ETH + total]);
        p.set_src(dst);
        p.set_dst(src);
        p.set_ttl(64);
        p.fill_checksum();
    }
    let at = ETH + ihl;
    let old = rd16(frame, at);
    frame[at] = icmp::ECHO_REPLY;
    let c = update16(rd16(frame, at + 2), old, rd16(frame, at));
    wr16(frame, at + 2, c);
    true
}

/// NAT rewrite of an ICMP error addressed to the VIP whose quoted packet is a
/// reply the VIP sent (VIP:vport -> client): the outer destination and the
/// quoted source become the real server's, and both checksums are redone.
pub fn nat_icmp_error(
    frame: &mut [u8],
    rip: u32,
    rport: Option<u16>,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> bool {
    let ihl = ((frame[ETH] & 0xf) as usize) * 4;
    let total = rd16(frame, ETH + 2) as usize;
    let ic = ETH + ihl;
    let q = ic + 8;
    if ETH + total > frame.len() || frame.len() < q + 28 || ihl != 20 {
        return false;
    }
    let qihl = ((frame[q] & 0xf) as usize) * 4;
    if frame.len() < q + qihl + 4 {
        return false;
    }
    frame[q + 12..q + 16].copy_from_slice(&rip.to_be_bytes());
    wr16(frame, q + 10, 0);
    let c = checksum::checksum(&frame[q..q + qihl]);
    wr16(frame, q + 10, c);
    if let Some(p) = rport {
        wr16(frame, q + qihl, p);
    }
    {
        let mut p = ipv4::Packet::new_unchecked(&mut frame[ETH..ETH + total]);
        p.set_dst(rip);
        p.fill_checksum();
    }
    let mut m = icmp::Message::new_checked(&mut frame[ic..ETH + total]).expect("checked length");
    m.fill_checksum();
    dr(frame, dst_mac, src_mac);
    true
}

/// NAT rewrite of an ICMP error a real server sent to a client about a
/// packet it received (client -> RIP:rport): the outer source and the quoted
/// destination become the VIP and its port, TTL is decremented, and the
/// quoted IP header and ICMP checksums are redone (the quoted transport
/// checksum is left as IPVS leaves it). Returns false when malformed or the
/// TTL ran out.
pub fn nat_icmp_from_server(
    frame: &mut [u8],
    vip: u32,
    vport: u16,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> bool {
    let ihl = ((frame[ETH] & 0xf) as usize) * 4;
    let total = rd16(frame, ETH + 2) as usize;
    let ic = ETH + ihl;
    let q = ic + 8;
    if ihl != 20 || ETH + total > frame.len() || ETH + total < q + 24 || frame[ETH + 8] <= 1 {
        return false;
    }
    let qihl = ((frame[q] & 0xf) as usize) * 4;
    if qihl < 20 || ETH + total < q + qihl + 4 {
        return false;
    }
    frame[q + 16..q + 20].copy_from_slice(&vip.to_be_bytes());
    wr16(frame, q + 10, 0);
    let c = checksum::checksum(&frame[q..q + qihl]);
    wr16(frame, q + 10, c);
    wr16(frame, q + qihl + 2, vport);
    {
        let mut p = ipv4::Packet::new_unchecked(&mut frame[ETH..ETH + total]);
        let ttl = p.ttl();
        p.set_ttl(ttl - 1);
        p.set_src(vip);
        p.fill_checksum();
    }
    let mut m = icmp::Message::new_checked(&mut frame[ic..ETH + total]).expect("checked length");
    m.fill_checksum();
    dr(frame, dst_mac, src_mac);
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::builder::PacketBuilder;
    use crate::wire::checksum;

    /// An Ethernet + IPv4 + TCP frame with valid checksums (sequence 0,
    /// window 0xffff).
    pub(crate) fn tcp_frame(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        PacketBuilder::new(src, dst)
            .seq(0)
            .window(0xffff)
            .tcp(sport, dport, flags, &[])
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

    fn l4_ok(f: &[u8]) -> bool {
        let ihl = ((f[14] & 0xf) as usize) * 4;
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        let l4 = &f[14 + ihl..14 + total];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, f[23]]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        let s = checksum::sum(&pseudo, 0);
        checksum::sum(l4, s as u32) == 0xffff
    }

    fn ip_ok(f: &[u8]) -> bool {
        let ihl = ((f[14] & 0xf) as usize) * 4;
        checksum::sum(&f[14..14 + ihl], 0) == 0xffff
    }

    const RS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
    const DIR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    /// Director 198.18.0.2 -> server 198.18.0.11.
    const OUTER: TunOuter = TunOuter {
        src: 0xc612_0002,
        dst: 0xc612_000b,
        dst_mac: RS_MAC,
        src_mac: DIR_MAC,
        ttl: 64,
    };

    #[test]
    fn nat_inbound_full_checksums() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        assert!(l4_ok(&f) && ip_ok(&f));
        assert!(nat(
            &mut f,
            NatSide::Dst,
            0xc612_000b,
            Some(8080),
            true,
            false,
            RS_MAC,
            DIR_MAC
        ));
        assert_eq!(&f[30..34], &[198, 18, 0, 11]);
        assert_eq!(&f[36..38], &8080u16.to_be_bytes());
        assert_eq!(f[22], 63, "TTL decremented");
        assert!(ip_ok(&f), "IP checksum updated");
        assert!(l4_ok(&f), "TCP checksum updated");
        assert_eq!(&f[0..12], &[RS_MAC, DIR_MAC].concat()[..]);
    }

    #[test]
    fn nat_outbound_full_checksums() {
        let mut f = tcp_frame(0xc612_000b, 0xc612_0102, 8080, 40000, 0x12);
        assert!(nat(
            &mut f,
            NatSide::Src,
            0xc612_6401,
            Some(80),
            true,
            false,
            RS_MAC,
            DIR_MAC
        ));
        assert_eq!(&f[26..30], &[198, 18, 100, 1]);
        assert_eq!(&f[34..36], &80u16.to_be_bytes());
        assert!(ip_ok(&f) && l4_ok(&f));
    }

    #[test]
    fn nat_partial_checksum_updates_pseudo_header_only() {
        // A partial checksum holds the folded pseudo-header sum (not inverted).
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        let pseudo = |f: &[u8]| {
            let mut p = Vec::new();
            p.extend_from_slice(&f[26..34]);
            p.extend_from_slice(&[0, 6, 0, 20]);
            checksum::sum(&p, 0)
        };
        let ps = pseudo(&f);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        assert!(nat(
            &mut f,
            NatSide::Dst,
            0xc612_000b,
            Some(8080),
            true,
            true,
            RS_MAC,
            DIR_MAC
        ));
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), pseudo(&f));
        // Completing it as the kernel would gives a valid checksum.
        let mut vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        assert!(complete_checksum(&mut f, &mut vnet));
        assert!(!vnet.needs_csum());
        assert!(l4_ok(&f));
    }

    #[test]
    fn nat_refuses_expiring_ttl() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        f[22] = 1;
        assert!(!nat(&mut f, NatSide::Dst, 1, None, true, false, RS_MAC, DIR_MAC));
    }

    fn frame_in(buf: &mut [u8], bytes: &[u8], vnet: VnetHdr) -> usize {
        let head = 64;
        buf[head..head + bytes.len()].copy_from_slice(bytes);
        let _ = vnet;
        head
    }

    #[test]
    fn tun_wraps_the_packet() {
        let inner = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x02);
        let mut buf = vec![0u8; 256];
        let head = frame_in(&mut buf, &inner, VnetHdr::default());
        let mut fr = Frame::new(
            &mut buf,
            head,
            inner.len(),
            Default::default(),
            VnetHdr::default(),
        );
        let o = OUTER;
        assert!(tun_encap(&mut fr, &o, 7));
        let d = fr.data().to_vec();
        assert_eq!(d.len(), inner.len() + 20);
        assert_eq!(&d[0..12], &[RS_MAC, DIR_MAC].concat()[..]);
        assert_eq!(d[14], 0x45);
        assert_eq!(d[23], 4, "protocol IP-in-IP");
        assert_eq!(u16::from_be_bytes([d[16], d[17]]) as usize, inner.len() - 14 + 20);
        assert_eq!(
            u16::from_be_bytes([d[20], d[21]]) & ipv4::FLAG_DF,
            ipv4::FLAG_DF,
            "DF copied"
        );
        assert!(ip_ok(&d));
        assert_eq!(&d[34..], &inner[14..], "inner packet untouched");
    }

    #[test]
    fn segmentation_makes_valid_segments() {
        // A 3000-byte TCP payload super-frame with gso_size 1000.
        let mut f = tcp_frame(
            0xc612_0102,
            0xc612_6401,
            40000,
            80,
            tcp::ACK | tcp::PSH | tcp::FIN,
        );
        f.extend((0..3000).map(|i| (i % 251) as u8));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut arena = TxArena::new(1 << 16, 16);
        let o = OUTER;
        let mut id = 100u16;
        assert_eq!(segment_tcp4(&f, &vnet, Some((&o, &mut id)), &mut arena), Some(3));
        assert_eq!(id, 103);
        let mut payload = Vec::new();
        for i in 0..3 {
            let seg = arena.frame_with_vnet(i)[VnetHdr::LEN..].to_vec();
            assert_eq!(seg[23], 4);
            assert!(ip_ok(&seg), "outer header");
            let inner = seg[20..].to_vec();
            assert!(ip_ok(&inner) && l4_ok(&inner), "segment {i} checksums");
            let seq = u32::from_be_bytes([inner[38], inner[39], inner[40], inner[41]]);
            assert_eq!(seq, 1000 * i as u32, "the fixture starts at sequence 0");
            let flags = inner[47];
            assert_eq!(flags & tcp::FIN != 0, i == 2, "FIN only on the last");
            payload.extend_from_slice(&inner[54..]);
        }
        assert_eq!(payload, f[54..].to_vec());
        // Without an outer header the segments are plain TCP/IP frames.
        let mut arena = TxArena::new(1 << 16, 16);
        assert_eq!(segment_tcp4(&f, &vnet, None, &mut arena), Some(3));
        assert!(l4_ok(&arena.frame_with_vnet(0)[VnetHdr::LEN..]));
        // A full arena reports failure rather than sending a partial set.
        let mut small = TxArena::new(2000, 16);
        assert_eq!(segment_tcp4(&f, &vnet, None, &mut small), None);
    }

    #[test]
    fn frag_needed_quotes_the_packet() {
        let inner = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        let mut buf = vec![0u8; 256];
        let head = frame_in(&mut buf, &inner, VnetHdr::default());
        let mut fr = Frame::new(
            &mut buf,
            head,
            inner.len(),
            Default::default(),
            VnetHdr::default(),
        );
        assert!(icmp_frag_needed(&mut fr, DIR_MAC, 1480));
        let d = fr.data().to_vec();
        assert_eq!(d.len(), 14 + 20 + 8 + 28);
        assert_eq!(&d[0..6], &inner[6..12], "back to the router");
        assert_eq!(&d[26..30], &[198, 18, 100, 1], "from the VIP");
        assert_eq!(&d[30..34], &[198, 18, 1, 2], "to the client");
        assert_eq!((d[34], d[35]), (icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED));
        assert_eq!(u16::from_be_bytes([d[40], d[41]]), 1480);
        assert_eq!(checksum::sum(&d[34..], 0), 0xffff);
        assert_eq!(&d[42..70], &inner[14..42], "quotes the IP header and 8 bytes");
        assert!(ip_ok(&d));
    }

    #[test]
    fn echo_reply_in_place() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 0, 0, 0);
        f[23] = 1; // ICMP
        f.truncate(14 + 20 + 12);
        f[16..18].copy_from_slice(&32u16.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..46].copy_from_slice(&[8, 0, 0, 0, 0, 1, 0, 2, b'p', b'i', b'n', b'g']);
        let c = checksum::checksum(&f[34..46]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        assert!(icmp_echo_reply(&mut f, DIR_MAC));
        assert_eq!(f[34], icmp::ECHO_REPLY);
        assert_eq!(&f[26..30], &[198, 18, 100, 1]);
        assert_eq!(&f[30..34], &[198, 18, 1, 2]);
        assert_eq!(checksum::sum(&f[34..46], 0), 0xffff);
        assert!(ip_ok(&f));
        assert_eq!(&f[6..12], &DIR_MAC);
    }

    #[test]
    fn tun_fragments_the_outer_packet_without_df() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        f.extend((0..1500).map(|i| i as u8));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[20] = 0; // DF clear
        let o = OUTER;
        let mut arena = TxArena::new(1 << 16, 16);
        assert_eq!(tun_fragment(&f, &o, 9, 1500, &mut arena), Some(2));
        let a = arena.frame_with_vnet(0)[VnetHdr::LEN..].to_vec();
        let b = arena.frame_with_vnet(1)[VnetHdr::LEN..].to_vec();
        assert!(a.len() - 14 <= 1500 && ip_ok(&a) && ip_ok(&b));
        assert_eq!(u16::from_be_bytes([a[20], a[21]]), ipv4::FLAG_MF);
        assert_eq!(u16::from_be_bytes([b[20], b[21]]) as usize, (a.len() - 34) / 8);
        assert_eq!((a[23], b[23]), (4, 4));
        let mut inner = a[34..].to_vec();
        inner.extend_from_slice(&b[34..]);
        assert_eq!(
            inner,
            f[14..].to_vec(),
            "the fragments carry the whole inner packet"
        );
    }
}
