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
