//! Neighbor Discovery on the slow path (RFC 4861), the IPv6 twin of
//! [`super::arp`]: answering Neighbor Solicitations for the IPv6 VIPs with
//! the director's MAC, announcing the VIPs (unsolicited Neighbor
//! Advertisements), and resolving real servers' MACs with our own
//! solicitations (the same [`NeighbourCache`] timing as ARP). Pure logic
//! here; the socket ([`socket_filter`] and the multicast groups of
//! [`listen_macs`]) is opened by the director.
//!
//! Which frames reach the socket. It is bound to EtherType IPv6 with the
//! classic BPF [`socket_filter`] (ICMPv6 NS or NA, hop limit 255, no
//! extension header), so it copies nothing else, VIP data traffic
//! included. A solicitation for a VIP goes to the VIP's solicited-node
//! multicast address (`ff02::1:ffXX:XXXX`, MAC `33:33:ff:XX:XX:XX`): the
//! director joins those MAC groups on its interface (a NIC with a
//! multicast filter would otherwise discard them). A neighbour confirming
//! reachability sends its solicitation to the VIP itself (unicast): the
//! kernel's netdev ingress drop rule for the VIPs lets NS/NA through
//! ([`super::nft`]), since a socket bound to one EtherType sees a frame only
//! after that hook (only `ETH_P_ALL` taps see it before). Under AF_XDP the
//! XDP program must pass ICMPv6 NS/NA to the kernel (it redirects only
//! TCP/UDP/ICMPv6-non-ND to a VIP), where this socket receives them.
//!
//! Flags of our advertisements. RFC 4861 §7.2.4 says an anycast address
//! SHOULD be advertised with Override clear, so that the first answer wins
//! and later ones do not move a neighbour's cache. A VIP looks anycast-like
//! (several directors may hold it), but only one director answers at a
//! time (`announce` on the active one, off on the standbys), and a
//! takeover relies on the new active director's unsolicited advertisement
//! replacing the router's cached MAC at once, exactly as gratuitous ARP
//! does for IPv4. With Override clear the router would keep the old
//! director's MAC (marking it STALE) until unicast probes to the silent
//! old director fail and it solicits again: seconds of black hole per
//! failover. So Override is set on every advertisement, solicited and
//! unsolicited; Solicited is set on answers to a unicast-sourced NS only
//! (§7.2.4: an answer to duplicate address detection goes to all-nodes
//! with Solicited clear); Router is never set (the director does not route
//! for the VIP's neighbours).

use crate::wire::ethernet::{self, EtherType, Mac};
use crate::wire::icmpv6;
use crate::wire::ipv6::{self, next_header};
use crate::wire::ndp::{self, FLAG_OVERRIDE, FLAG_SOLICITED, FRAME_LEN};

pub use super::arp::{NeighbourCache, EXPIRE, REFRESH, RETRY};

/// The MAC of `ff02::1` (all nodes): where unsolicited advertisements go.
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

/// What the slow path should do about a received ND frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdOutcome {
    /// An advertisement to send (a whole Ethernet frame), when the
    /// solicitation was for a VIP.
    pub reply: Option<[u8; FRAME_LEN]>,
    /// A neighbour (address, MAC) the frame told: the solicitor's source
    /// link-layer option, or an advertisement's target link-layer option.
    pub learned: Option<(u128, Mac)>,
}

fn is_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

/// Handle one received frame: answer a valid solicitation for any of
/// `vips` (sorted), learn what the frame says about its sender. `None` for
/// anything that is not a valid NS or NA (RFC 4861 §7.1: hop limit 255,
/// code 0, checksum, option lengths, target not multicast, duplicate
/// address detection only to a solicited-node address and without a
/// source link-layer option; §7.1.2: a multicast advertisement is not
/// solicited).
pub fn handle_frame(frame: &[u8], my_mac: Mac, vips: &[u128]) -> Option<NdOutcome> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Ipv6 {
        return None;
    }
    let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
    if ip.hop_limit() != ndp::HOP_LIMIT {
        return None;
    }
    let chain = ip.walk().ok()?;
    if chain.protocol != next_header::ICMPV6 || chain.fragment.is_some() {
        return None;
    }
    let body = ip.bytes().get(chain.transport_offset..)?;
    let (src, dst) = (ip.src(), ip.dst());
    if !icmpv6::Message::new_checked(body)
        .ok()?
        .verify_checksum(&src, &dst)
    {
        return None;
    }
    let m = ndp::Message::new_checked(body).ok()?;
    let target = m.target();
    if is_multicast(&target) {
        return None;
    }
    let unspecified = src == [0; 16];
    if m.is_advertisement() {
        if m.solicited() && is_multicast(&dst) {
            return None;
        }
        let learned = m.link_layer().map(|mac| (u128::from_be_bytes(target), mac));
        return Some(NdOutcome { reply: None, learned });
    }
    let sll = m.link_layer();
    if unspecified && (!ndp::is_solicited_node(&dst) || sll.is_some()) {
        return None;
    }
    let learned = match (unspecified, sll) {
        (false, Some(mac)) => Some((u128::from_be_bytes(src), mac)),
        _ => None,
    };
    let t = u128::from_be_bytes(target);
    // Only a solicitation meant for the VIP (to it, or to its
    // solicited-node group), and never one claiming to come from it.
    let for_vip = vips.binary_search(&t).is_ok()
        && (dst == target || dst == ndp::solicited_node(&target))
        && src != target;
    let reply = for_vip.then(|| {
        let mut out = [0u8; FRAME_LEN];
        let (dst_mac, dst_ip, flags) = if unspecified {
            // Someone runs duplicate address detection for our VIP: defend
            // it to all nodes (§7.2.4).
            (ALL_NODES_MAC, ndp::ALL_NODES, FLAG_OVERRIDE)
        } else {
            (sll.unwrap_or(eth.src()), src, FLAG_SOLICITED | FLAG_OVERRIDE)
        };
        // The buffer is FRAME_LEN long: the writer cannot refuse it.
        let _ = ndp::write_advertisement(&mut out, dst_mac, my_mac, &target, &dst_ip, &target, flags);
        out
    });
    Some(NdOutcome { reply, learned })
}

/// An unsolicited advertisement of `vip` at `my_mac` to all nodes
/// (Override set, Solicited clear: every neighbour that has an entry for
/// the VIP takes the new MAC at once, RFC 4861 §7.2.6), from the VIP.
pub fn unsolicited(my_mac: Mac, vip: u128) -> [u8; FRAME_LEN] {
    let mut out = [0u8; FRAME_LEN];
    let v = vip.to_be_bytes();
    let _ = ndp::write_advertisement(
        &mut out,
        ALL_NODES_MAC,
        my_mac,
        &v,
        &ndp::ALL_NODES,
        &v,
        FLAG_OVERRIDE,
    );
    out
}

/// A solicitation for `target` from (`my_mac`, `my_ip`) to the target's
/// solicited-node group. `my_ip` must be one of the interface's addresses
/// (the answer comes back to it); the link-local one always exists.
pub fn solicit(my_mac: Mac, my_ip: u128, target: u128) -> [u8; FRAME_LEN] {
    let mut out = [0u8; FRAME_LEN];
    let _ = ndp::write_solicitation(&mut out, my_mac, &my_ip.to_be_bytes(), &target.to_be_bytes());
    out
}

/// The Ethernet multicast groups the director joins to hear solicitations
/// for `vips`: one `33:33:ff:XX:XX:XX` per distinct low 24 bits (sorted,
/// deduplicated).
pub fn listen_macs(vips: &[u128]) -> Vec<Mac> {
    let mut v: Vec<Mac> = vips
        .iter()
        .map(|a| ndp::multicast_mac(&ndp::solicited_node(&a.to_be_bytes())))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The classic BPF program of the ND socket: accept an Ethernet frame that
/// is IPv6 with next header ICMPv6 (58, no extension header: ND messages
/// carry none in practice), hop limit 255 and ICMPv6 type 135 or 136;
/// refuse everything else before it is copied. Offsets are from the
/// Ethernet header (a `SOCK_RAW` packet socket's filter sees it).
pub fn socket_filter() -> Vec<libc::sock_filter> {
    use crate::io::bpf::Asm;
    use libc::{BPF_ABS, BPF_B, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET};
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Label {
        Accept,
        Drop,
    }
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let ldb = |off| op(BPF_LD | BPF_B | BPF_ABS, off);
    let ldh = |off| op(BPF_LD | BPF_H | BPF_ABS, off);
    let jeq = |k| op(BPF_JMP | BPF_JEQ | BPF_K, k);
    let mut a = Asm::new();
    a.push(ldh(12));
    a.push_branch(jeq(0x86dd), None, Some(Label::Drop));
    a.push(ldb(14 + 6));
    a.push_branch(jeq(u32::from(next_header::ICMPV6)), None, Some(Label::Drop));
    a.push(ldb(14 + 7));
    a.push_branch(jeq(u32::from(ndp::HOP_LIMIT)), None, Some(Label::Drop));
    a.push(ldb(14 + 40));
    a.push_branch(
        jeq(u32::from(icmpv6::NEIGHBOR_SOLICIT)),
        Some(Label::Accept),
        None,
    );
    a.push_branch(jeq(u32::from(icmpv6::NEIGHBOR_ADVERT)), None, Some(Label::Drop));
    a.label(Label::Accept);
    a.push(op(BPF_RET | BPF_K, 0xffff));
    a.label(Label::Drop);
    a.push(op(BPF_RET | BPF_K, 0));
    a.finish()
}

/// Of `learned` neighbours, those worth keeping as next hops for NAT6
/// replies: on the on-link prefix (`net`, `mask`), not multicast, not
/// link-local (a reply is routed to a client's global address).
pub fn onlink_neighbour(addr: u128, (net, mask): (u128, u128)) -> bool {
    let b = addr.to_be_bytes();
    mask != 0 && addr & mask == net && !is_multicast(&b) && !(b[0] == 0xfe && b[1] & 0xc0 == 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use std::time::{Duration, Instant};

    const ME: Mac = [2, 0, 0, 0, 0, 2];
    const ROUTER_MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn a(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    fn vip() -> u128 {
        a("2001:db8:100::1")
    }

    fn router() -> u128 {
        a("2001:db8::1")
    }

    /// A solicitation from `src` for `target`, to `dst` (None: the target's
    /// solicited-node group), built by etherparse (an independent writer).
    fn ns_frame(src: u128, dst: Option<u128>, target: u128, sll: Option<Mac>, hop: u8) -> Vec<u8> {
        let t = target.to_be_bytes();
        let dst = dst.map_or(ndp::solicited_node(&t), |d| d.to_be_bytes());
        // After the 4 reserved bytes (etherparse's bytes5to8): the target.
        let mut payload = t.to_vec();
        if let Some(m) = sll {
            payload.extend_from_slice(&[1, 1]);
            payload.extend_from_slice(&m);
        }
        let eth_dst = if dst[0] == 0xff {
            ndp::multicast_mac(&dst)
        } else {
            ME
        };
        let b = etherparse::PacketBuilder::ethernet2(ROUTER_MAC, eth_dst)
            .ipv6(src.to_be_bytes(), dst, hop)
            .icmpv6(etherparse::Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: 0,
                bytes5to8: [0; 4],
            });
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    /// The advertisement as etherparse reads it: (eth dst, ip src, ip dst,
    /// hop limit, flags byte, target, target link-layer option).
    fn parse_na(f: &[u8]) -> (Mac, [u8; 16], [u8; 16], u8, u8, [u8; 16], Mac) {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let p = SlicedPacket::from_ethernet(f).expect("etherparse reads our NA");
        let eth = p.link.unwrap();
        let etherparse::LinkSlice::Ethernet2(eth) = eth else {
            panic!("not Ethernet II")
        };
        let Some(NetSlice::Ipv6(ip)) = p.net else {
            panic!("not IPv6")
        };
        let h = ip.header();
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6")
        };
        // etherparse checks the checksum it computes against ours.
        let sum = icmp
            .icmp_type()
            .calc_checksum(h.source(), h.destination(), icmp.payload())
            .unwrap();
        assert_eq!(sum, icmp.checksum(), "checksum");
        assert_eq!(icmp.type_u8(), 136);
        let bytes = icmp.slice();
        let mut target = [0; 16];
        target.copy_from_slice(&bytes[8..24]);
        assert_eq!(bytes[24..26], [2, 1], "target link-layer option");
        let mut tll = [0; 6];
        tll.copy_from_slice(&bytes[26..32]);
        (
            eth.destination(),
            h.source(),
            h.destination(),
            h.hop_limit(),
            bytes[4],
            target,
            tll,
        )
    }

    #[test]
    fn answers_solicited_node_and_unicast_solicitations_for_vips() {
        let vips = [vip()];
        for dst in [None, Some(vip())] {
            let ns = ns_frame(router(), dst, vip(), Some(ROUTER_MAC), 255);
            let out = handle_frame(&ns, ME, &vips).expect("a valid NS");
            assert_eq!(out.learned, Some((router(), ROUTER_MAC)));
            let na = out.reply.expect("answered");
            let (eth_dst, src, dst, hop, flags, target, tll) = parse_na(&na);
            assert_eq!(eth_dst, ROUTER_MAC);
            assert_eq!(&na[6..12], &ME);
            assert_eq!(src, vip().to_be_bytes());
            assert_eq!(dst, router().to_be_bytes());
            assert_eq!(hop, 255);
            assert_eq!(flags, FLAG_SOLICITED | FLAG_OVERRIDE, "S and O, not R");
            assert_eq!((target, tll), (vip().to_be_bytes(), ME));
        }
        // Without a source link-layer option the answer goes to the frame's
        // Ethernet source.
        let ns = ns_frame(router(), None, vip(), None, 255);
        let na = handle_frame(&ns, ME, &vips).unwrap().reply.unwrap();
        assert_eq!(parse_na(&na).0, ROUTER_MAC);
    }

    #[test]
    fn refuses_what_rfc_4861_refuses() {
        let vips = [vip()];
        // Another address: no answer, but the solicitor is still learned.
        let other = handle_frame(
            &ns_frame(router(), None, a("2001:db8:100::2"), Some(ROUTER_MAC), 255),
            ME,
            &vips,
        )
        .unwrap();
        assert_eq!(other.reply, None);
        assert_eq!(other.learned, Some((router(), ROUTER_MAC)));
        // Hop limit below 255: from off-link, ignored.
        assert_eq!(
            handle_frame(&ns_frame(router(), None, vip(), Some(ROUTER_MAC), 64), ME, &vips),
            None
        );
        // Bad checksum.
        let mut bad = ns_frame(router(), None, vip(), Some(ROUTER_MAC), 255);
        bad[56] ^= 1;
        assert_eq!(handle_frame(&bad, ME, &vips), None);
        // Truncated.
        let ns = ns_frame(router(), None, vip(), Some(ROUTER_MAC), 255);
        assert_eq!(handle_frame(&ns[..70], ME, &vips), None);
        // A solicitation claiming to come from the VIP itself.
        assert_eq!(
            handle_frame(&ns_frame(vip(), None, vip(), Some(ROUTER_MAC), 255), ME, &vips)
                .unwrap()
                .reply,
            None
        );
        // To an unrelated unicast address.
        assert_eq!(
            handle_frame(
                &ns_frame(router(), Some(a("2001:db8::9")), vip(), Some(ROUTER_MAC), 255),
                ME,
                &vips
            )
            .unwrap()
            .reply,
            None
        );
        // Duplicate address detection with a link-layer option is invalid.
        assert_eq!(
            handle_frame(&ns_frame(0, None, vip(), Some(ROUTER_MAC), 255), ME, &vips),
            None
        );
        // Not announcing (no VIPs): valid, unanswered.
        assert_eq!(handle_frame(&ns, ME, &[]).unwrap().reply, None);
    }

    #[test]
    fn defends_a_vip_against_duplicate_address_detection() {
        let ns = ns_frame(0, None, vip(), None, 255);
        let out = handle_frame(&ns, ME, &[vip()]).unwrap();
        assert_eq!(out.learned, None);
        let (eth_dst, src, dst, _, flags, target, tll) = parse_na(&out.reply.unwrap());
        assert_eq!(eth_dst, ALL_NODES_MAC);
        assert_eq!((src, dst), (vip().to_be_bytes(), ndp::ALL_NODES));
        assert_eq!(flags, FLAG_OVERRIDE, "not solicited");
        assert_eq!((target, tll), (vip().to_be_bytes(), ME));
    }

    #[test]
    fn unsolicited_advertisement_and_solicitation() {
        let na = unsolicited(ME, vip());
        let (eth_dst, src, dst, hop, flags, target, tll) = parse_na(&na);
        assert_eq!(
            (eth_dst, dst, hop, flags),
            (ALL_NODES_MAC, ndp::ALL_NODES, 255, FLAG_OVERRIDE)
        );
        assert_eq!((src, target, tll), (vip().to_be_bytes(), vip().to_be_bytes(), ME));
        // Someone else's advertisement teaches us its MAC...
        let server = a("2001:db8::11");
        let theirs = unsolicited(ROUTER_MAC, server);
        let out = handle_frame(&theirs, ME, &[vip()]).unwrap();
        assert_eq!(
            out,
            NdOutcome {
                reply: None,
                learned: Some((server, ROUTER_MAC))
            }
        );
        // ...and our solicitation is one the router would answer.
        let ns = solicit(ME, a("fe80::2"), server);
        assert_eq!(&ns[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x11]);
        let out = handle_frame(&ns, ROUTER_MAC, &[server]).unwrap();
        assert_eq!(out.learned, Some((a("fe80::2"), ME)));
        assert!(out.reply.is_some());
        // A solicited advertisement sent to a multicast address is invalid.
        let mut na = [0u8; FRAME_LEN];
        ndp::write_advertisement(
            &mut na,
            ALL_NODES_MAC,
            ROUTER_MAC,
            &server.to_be_bytes(),
            &ndp::ALL_NODES,
            &server.to_be_bytes(),
            FLAG_SOLICITED,
        )
        .unwrap();
        assert_eq!(handle_frame(&na, ME, &[]), None);
    }

    #[test]
    fn listen_groups_are_solicited_node_macs() {
        let v = [a("2001:db8:100::1"), a("2001:db8:200::1"), a("2001:db8:100::1:2")];
        assert_eq!(
            listen_macs(&v),
            vec![[0x33, 0x33, 0xff, 0, 0, 1], [0x33, 0x33, 0xff, 1, 0, 2]]
        );
    }

    /// The kernel's view of the filter: run it over frames as the kernel
    /// does for these opcodes (a load past the end refuses the frame).
    fn run(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0x30 | 0x28 => {
                    let n = if i.code == 0x30 { 1 } else { 2 };
                    let Some(b) = frame.get(i.k as usize..i.k as usize + n) else {
                        return 0;
                    };
                    acc = b.iter().fold(0, |v, &b| v << 8 | u32::from(b));
                }
                0x15 => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                0x06 => return i.k,
                c => panic!("opcode {c:#x} not interpreted"),
            }
        }
    }

    #[test]
    fn socket_filter_takes_nd_only() {
        let p = socket_filter();
        let ns = ns_frame(router(), None, vip(), Some(ROUTER_MAC), 255);
        assert_ne!(run(&p, &ns), 0);
        assert_ne!(run(&p, &unsolicited(ME, vip())), 0);
        assert_eq!(run(&p, &ns_frame(router(), None, vip(), Some(ROUTER_MAC), 64)), 0);
        let tcp = crate::wire::builder::PacketBuilder6::new(router().to_be_bytes(), vip().to_be_bytes()).tcp(
            40000,
            80,
            crate::wire::tcp::SYN,
            &[],
        );
        assert_eq!(run(&p, &tcp), 0);
        let mut echo = ns.clone();
        echo[54] = icmpv6::ECHO_REQUEST;
        assert_eq!(run(&p, &echo), 0);
        let arp = crate::control::arp::request(ME, 1, 2);
        assert_eq!(run(&p, &arp), 0);
        assert_eq!(run(&p, &ns[..40]), 0);
    }

    #[test]
    fn neighbour_cache_over_ipv6() {
        let mut c = NeighbourCache::<u128>::default();
        let s = a("2001:db8::11");
        c.set_wanted([s]);
        let t0 = Instant::now();
        assert_eq!(c.due(t0).0, vec![s]);
        assert!(c.learn(s, ROUTER_MAC, t0));
        assert!(!c.learn(router(), ROUTER_MAC, t0), "not wanted");
        assert_eq!(c.mac(s), Some(ROUTER_MAC));
        assert!(c.due(t0 + EXPIRE + Duration::from_secs(1)).1);
        assert_eq!(c.mac(s), None);
        let onlink = (a("2001:db8::"), a("ffff:ffff:ffff:ffff::"));
        assert!(onlink_neighbour(s, onlink));
        assert!(!onlink_neighbour(a("2001:db9::1"), onlink));
        assert!(!onlink_neighbour(a("fe80::1"), (0, 0)));
    }
}
