//! ARP on the slow path: answering requests for VIPs with the director's MAC,
//! announcing VIPs (gratuitous ARP), and resolving real servers' MACs with
//! our own requests (a neighbour cache kept fresh independently of the
//! kernel's). Pure logic here; the socket lives in the binary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wire::arp::{self, Op};
use crate::wire::ethernet::{self, EtherType, Mac, BROADCAST};

/// Re-ask a known neighbour this often.
pub const REFRESH: Duration = Duration::from_secs(15);
/// Forget a neighbour that has not answered for this long.
pub const EXPIRE: Duration = Duration::from_secs(60);
/// Ask an unresolved neighbour this often.
pub const RETRY: Duration = Duration::from_millis(500);

/// What the slow path should do about a received ARP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpOutcome {
    /// A reply to send (a whole Ethernet frame), when the request was for a VIP.
    pub reply: Option<[u8; 42]>,
    /// A sender (IPv4 host order, MAC) learned from the frame.
    pub learned: Option<(u32, Mac)>,
}

/// Handle one received ARP frame: answer requests for any of `vips`, learn
/// the sender's address mapping.
pub fn handle_frame(frame: &[u8], my_mac: Mac, vips: &[u32]) -> Option<ArpOutcome> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Arp {
        return None;
    }
    let a = arp::Packet::new_checked(eth.payload()).ok()?;
    let learned = (a.sender_ip() != 0).then_some((a.sender_ip(), a.sender_mac()));
    let mut reply = None;
    if a.op() == Op::Request && vips.contains(&a.target_ip()) && a.sender_ip() != a.target_ip() {
        let mut out = [0u8; 42];
        arp::emit_frame(
            &mut out,
            a.sender_mac(),
            my_mac,
            Op::Reply,
            my_mac,
            a.target_ip(),
            a.sender_mac(),
            a.sender_ip(),
        );
        reply = Some(out);
    }
    Some(ArpOutcome { reply, learned })
}

/// A broadcast request for `target` from (`my_mac`, `my_ip`); `my_ip` 0
/// makes it an ARP probe, which hosts still answer.
pub fn request(my_mac: Mac, my_ip: u32, target: u32) -> [u8; 42] {
    broadcast_request(my_mac, my_ip, [0; 6], target)
}

/// A gratuitous ARP announcing `vip` at `my_mac` (a request for itself, which
/// updates every neighbour cache that has an entry).
pub fn gratuitous(my_mac: Mac, vip: u32) -> [u8; 42] {
    broadcast_request(my_mac, vip, BROADCAST, vip)
}

/// A broadcast ARP request from `my_mac` claiming `sender_ip`, asking for
/// (`target_mac`, `target_ip`).
fn broadcast_request(my_mac: Mac, sender_ip: u32, target_mac: Mac, target_ip: u32) -> [u8; 42] {
    let mut out = [0u8; 42];
    arp::emit_frame(
        &mut out,
        BROADCAST,
        my_mac,
        Op::Request,
        my_mac,
        sender_ip,
        target_mac,
        target_ip,
    );
    out
}

#[derive(Debug, Clone, Copy)]
struct Neighbour {
    mac: Option<Mac>,
    last_answer: Option<Instant>,
    last_ask: Option<Instant>,
}

/// MACs of the real servers, resolved by our own ARP requests (`A` = u32)
/// or Neighbor Solicitations (`A` = u128, see `control::ndp`): the same
/// refresh, retry and expiry either way.
#[derive(Debug)]
pub struct NeighbourCache<A = u32> {
    entries: HashMap<A, Neighbour>,
}

impl<A> Default for NeighbourCache<A> {
    fn default() -> Self {
        NeighbourCache {
            entries: HashMap::new(),
        }
    }
}

impl<A: Copy + Eq + Ord + std::hash::Hash> NeighbourCache<A> {
    /// Keep exactly these addresses (others are forgotten).
    pub fn set_wanted(&mut self, addrs: impl IntoIterator<Item = A>) {
        let wanted: HashMap<A, Neighbour> = addrs
            .into_iter()
            .map(|a| {
                let n = self.entries.get(&a).copied().unwrap_or(Neighbour {
                    mac: None,
                    last_answer: None,
                    last_ask: None,
                });
                (a, n)
            })
            .collect();
        self.entries = wanted;
    }

    /// Record an answer; returns true when the MAC of a wanted address changed.
    pub fn learn(&mut self, ip: A, mac: Mac, now: Instant) -> bool {
        match self.entries.get_mut(&ip) {
            Some(n) => {
                let changed = n.mac != Some(mac);
                n.mac = Some(mac);
                n.last_answer = Some(now);
                changed
            }
            None => false,
        }
    }

    pub fn mac(&self, ip: A) -> Option<Mac> {
        self.entries.get(&ip).and_then(|n| n.mac)
    }

    /// The wanted addresses, in no particular order.
    pub fn wanted(&self) -> impl Iterator<Item = A> + '_ {
        self.entries.keys().copied()
    }

    /// Addresses to ask about now; marks them asked. Also expires silent
    /// entries, returning true in the second value when one was lost.
    pub fn due(&mut self, now: Instant) -> (Vec<A>, bool) {
        let mut ask = Vec::new();
        let mut lost = false;
        for (ip, n) in self.entries.iter_mut() {
            if let (Some(_), Some(t)) = (n.mac, n.last_answer) {
                if now.duration_since(t) > EXPIRE {
                    n.mac = None;
                    lost = true;
                }
            }
            let interval = if n.mac.is_some() { REFRESH } else { RETRY };
            if n.last_ask.is_none_or(|t| now.duration_since(t) >= interval) {
                n.last_ask = Some(now);
                ask.push(*ip);
            }
        }
        ask.sort_unstable();
        (ask, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = [2, 0, 0, 0, 0, 2];
    const ROUTER: Mac = [2, 0, 0, 0, 0, 1];
    const VIP: u32 = 0xc612_6401;

    #[test]
    fn answers_requests_for_vips_only() {
        let req = request(ROUTER, 0xc612_0001, VIP);
        let out = handle_frame(&req, ME, &[VIP]).unwrap();
        assert_eq!(out.learned, Some((0xc612_0001, ROUTER)));
        let r = out.reply.unwrap();
        assert_eq!(&r[0..6], &ROUTER);
        assert_eq!(&r[6..12], &ME);
        let a = arp::Packet::new_checked(&r[14..]).unwrap();
        assert_eq!(a.op(), Op::Reply);
        assert_eq!(a.sender_mac(), ME);
        assert_eq!(a.sender_ip(), VIP);
        assert_eq!(a.target_ip(), 0xc612_0001);

        let other = request(ROUTER, 0xc612_0001, 0xc612_000b);
        assert_eq!(handle_frame(&other, ME, &[VIP]).unwrap().reply, None);
        // A gratuitous ARP from someone else claiming the VIP is not answered.
        let g = gratuitous(ROUTER, VIP);
        assert_eq!(handle_frame(&g, ME, &[VIP]).unwrap().reply, None);
        assert_eq!(handle_frame(&g[..30], ME, &[VIP]), None);
    }

    #[test]
    fn cache_resolves_and_expires() {
        let mut c = NeighbourCache::default();
        c.set_wanted([1, 2]);
        let t0 = Instant::now();
        assert_eq!(c.due(t0).0, vec![1, 2]);
        assert!(c.due(t0).0.is_empty());
        assert!(c.learn(1, ROUTER, t0));
        assert!(!c.learn(1, ROUTER, t0));
        assert!(!c.learn(9, ROUTER, t0));
        assert_eq!(c.mac(1), Some(ROUTER));
        let (ask, lost) = c.due(t0 + RETRY);
        assert_eq!((ask, lost), (vec![2], false));
        let (_, lost) = c.due(t0 + EXPIRE + Duration::from_secs(1));
        assert!(lost);
        assert_eq!(c.mac(1), None);
    }
}
