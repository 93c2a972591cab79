//! Neighbor Discovery on the director's loop (slow path), the IPv6 twin of
//! [`super::announce`]: answering solicitations for the IPv6 VIPs (only
//! while announcing, never with `announce: route`), unsolicited
//! advertisements when announcing starts, resolving the IPv6 real servers'
//! next hops and the IPv6 router by our own solicitations, and keeping
//! [`Host6`](crate::control::publish6::Host6) (what the IPv6 half of the
//! table is built from: the director's IPv6 address, router, the MACs of
//! the servers' next hops, on-link neighbours) and the IPv6 kernel drop
//! table current. The pure logic is [`crate::control::ndp`].

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::Ipv6Addr;
use std::time::Instant;

use log::{info, warn};

use super::Director;
use crate::control::config::{Announce, Config, Mode};
use crate::control::ndp::{self, NeighbourCache};
use crate::control::nft;
use crate::control::publish6::v6;
use crate::io::sys::{self, RawSocket};
use crate::wire::ethernet::{fmt_mac, Mac};

/// Most on-link IPv6 neighbours remembered from ND (next hops for NAT6
/// replies), as for IPv4.
const MAX_SEEN_NEIGHBOURS6: usize = 4096;

/// The director's ND state.
pub(super) struct Nd {
    sock: RawSocket,
    ifindex: i32,
    /// The solicited-node MAC groups joined (sorted).
    groups: Vec<Mac>,
    /// The IPv6 VIPs the last sync saw (sorted): new ones are announced.
    vips: Vec<u128>,
    /// MACs of the servers' next hops and of the router, by our solicitations.
    cache: NeighbourCache<u128>,
    /// IPv6 real servers reached through a router: server -> router.
    hops: HashMap<u128, u128>,
    /// On-link IPv6 neighbours seen in ND frames.
    seen: HashMap<u128, Mac>,
    /// What the IPv6 drop table holds: (VIPs, NAT servers, own addresses).
    nft: Option<(Vec<u128>, Vec<u128>, Vec<u128>)>,
    /// Rounds of unsolicited advertisements still due after `announce on`.
    left: u8,
}

impl Nd {
    /// Open the ND socket on `ifindex`.
    ///
    /// # Errors
    /// The socket could not be opened (not root).
    pub(super) fn open(ifindex: i32) -> std::io::Result<Nd> {
        let sock = RawSocket::filtered(ifindex, sys::ETH_P_IPV6, &ndp::socket_filter())?;
        Ok(Nd {
            sock,
            ifindex,
            groups: Vec::new(),
            vips: Vec::new(),
            cache: NeighbourCache::default(),
            hops: HashMap::new(),
            seen: HashMap::new(),
            nft: None,
            left: 0,
        })
    }

    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.sock)
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}

/// The IPv6 VIPs of the config, sorted.
pub(super) fn vips6(cfg: &Config) -> Vec<u128> {
    sorted(cfg.services.iter().filter_map(|s| v6(s.vip)).collect())
}

/// The IPv6 real servers' addresses, sorted (`nat`: of NAT services only).
fn servers6(cfg: &Config, nat: bool) -> Vec<u128> {
    sorted(
        cfg.services
            .iter()
            .filter(|s| !nat || s.mode == Mode::Nat)
            .flat_map(|s| s.real_servers.iter().filter_map(|r| v6(r.address)))
            .collect(),
    )
}

fn show(a: u128) -> Ipv6Addr {
    Ipv6Addr::from(a)
}

impl Director {
    fn nd_send(&mut self, frame: &[u8]) {
        if let Err(e) = self.nd.sock.send(frame) {
            warn!("ND send on {} failed: {e}", self.cfg.interface);
        }
    }

    /// Whether solicitations for the VIPs are answered now.
    fn nd_answering(&self) -> bool {
        self.announcing && self.cfg.announce != Announce::Route
    }

    /// Bring ND in line with the config and the host view: the multicast
    /// groups of the VIPs, the neighbours to resolve, the IPv6 drop table,
    /// [`Host6`](crate::control::publish6::Host6); announce VIPs new since
    /// the last call. True when the table's IPv6 inputs changed.
    pub(super) fn nd_sync(&mut self) -> bool {
        let vips = vips6(&self.cfg);
        let groups = ndp::listen_macs(&vips);
        if groups != self.nd.groups {
            for g in self.nd.groups.iter().filter(|g| !groups.contains(g)) {
                if let Err(e) = self.nd.sock.multicast(self.nd.ifindex, *g, false) {
                    warn!("leaving multicast group {}: {e}", fmt_mac(g));
                }
            }
            for g in groups.iter().filter(|g| !self.nd.groups.contains(g)) {
                if let Err(e) = self.nd.sock.multicast(self.nd.ifindex, *g, true) {
                    warn!("joining multicast group {}: {e}", fmt_mac(g));
                }
            }
            self.nd.groups = groups;
        }
        let new: Vec<u128> = vips
            .iter()
            .copied()
            .filter(|v| !self.nd.vips.contains(v))
            .collect();
        self.nd.vips = vips.clone();
        let own: Vec<u128> = sorted(self.view.addrs6.iter().map(|a| a.0).collect());
        let nat = servers6(&self.cfg, true);
        let rules = (vips, nat, own);
        if self.nd.nft.as_ref() != Some(&rules) {
            match nft::install6(&self.cfg.interface, &rules.0, &rules.1, &rules.2) {
                Ok(()) => {
                    if !rules.0.is_empty() || !rules.1.is_empty() {
                        info!(
                            "kernel IPv6 drop rule: table netdev {} ({} VIP(s), {} NAT server(s))",
                            nft::table_name6(&self.cfg.interface),
                            rules.0.len(),
                            rules.1.len()
                        );
                    }
                    self.nd.nft = Some(rules);
                }
                Err(e) => warn!("cannot install the IPv6 VIP drop rule: {e}"),
            }
        }
        let mut hops = HashMap::new();
        for a in servers6(&self.cfg, false) {
            if let Some(h) = self.view.next_hop6(a).filter(|h| *h != a) {
                hops.insert(a, h);
            }
        }
        let mut changed = hops != self.nd.hops;
        self.nd.hops = hops;
        let address = self.view.primary6();
        let gateway = self.view.default_gateway6();
        if (address, gateway) != (self.host6.address, self.host6.gateway) {
            info!(
                "{}: IPv6 address {:?}, IPv6 router {:?}",
                self.cfg.interface,
                address.map(|(a, p)| format!("{}/{p}", show(a))),
                gateway.map(show)
            );
            self.host6.address = address;
            self.host6.gateway = gateway;
            changed = true;
        }
        let wanted: Vec<u128> = servers6(&self.cfg, false)
            .into_iter()
            .map(|a| self.nd.hops.get(&a).copied().unwrap_or(a))
            .chain(gateway)
            .collect();
        self.nd.cache.set_wanted(sorted(wanted));
        changed |= self.nd_host6();
        if !new.is_empty() {
            self.nd_announce(&new);
        }
        changed
    }

    /// Derive `host6.neighbours` (each IPv6 server and the router -> the MAC
    /// of its next hop: ours, else the kernel's confirmed entry) and
    /// `host6.seen`; true when either changed.
    fn nd_host6(&mut self) -> bool {
        let kernel: HashMap<u128, Mac> = self.view.neighbours6().collect();
        let mac = |a: u128| self.nd.cache.mac(a).or_else(|| kernel.get(&a).copied());
        let mut neighbours = HashMap::new();
        for a in servers6(&self.cfg, false).into_iter().chain(self.host6.gateway) {
            let hop = self.nd.hops.get(&a).copied().unwrap_or(a);
            if let Some(m) = mac(hop) {
                neighbours.insert(a, m);
            }
        }
        let onlink = self.host6.address.map_or((0, 0), |(a, p)| {
            let m = crate::control::netlink::prefix_mask6(p);
            (a & m, m)
        });
        let mut seen: Vec<(u128, Mac)> = self
            .nd
            .seen
            .iter()
            .map(|(a, m)| (*a, *m))
            .chain(kernel.iter().map(|(a, m)| (*a, *m)))
            .filter(|(a, _)| ndp::onlink_neighbour(*a, onlink))
            .collect();
        seen.sort_unstable();
        seen.dedup_by_key(|e| e.0);
        let changed = neighbours != self.host6.neighbours || seen != self.host6.seen;
        self.host6.neighbours = neighbours;
        self.host6.seen = seen;
        changed
    }

    /// Solicit the neighbours that are due; republish when one was lost.
    pub(super) fn nd_tick(&mut self) {
        let (ask, lost) = self.nd.cache.due(Instant::now());
        // The source of a solicitation is one of our addresses (the answer
        // comes back to it): the segment address, else link-local.
        let src = self.view.primary6().map(|a| a.0).or(self.view.link_local6());
        if let Some(src) = src {
            for a in ask {
                let f = ndp::solicit(self.ifinfo.mac, src, a);
                self.nd_send(&f);
            }
        }
        if lost {
            warn!("an IPv6 real server stopped answering ND; it gets no new flows until it answers");
            if self.nd_host6() {
                self.publish();
            }
        }
    }

    /// Read every queued ND frame: answer solicitations for the VIPs (only
    /// while announcing), learn neighbours.
    pub(super) fn nd_read(&mut self) {
        let mut buf = [0u8; 2048];
        let vips = if self.nd_answering() {
            self.nd.vips.clone()
        } else {
            Vec::new()
        };
        let mut changed = false;
        loop {
            let n = match self.nd.sock.recv(&mut buf) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("ND receive failed: {e}");
                    break;
                }
            };
            let Some(out) = ndp::handle_frame(&buf[..n], self.ifinfo.mac, &vips) else {
                continue;
            };
            if let Some(reply) = out.reply {
                self.nd_send(&reply);
            }
            if let Some((ip, mac)) = out.learned {
                if self.nd.cache.learn(ip, mac, Instant::now()) {
                    info!("IPv6 neighbour {} is at {}", show(ip), fmt_mac(&mac));
                    changed = true;
                }
                if self.nd.seen.get(&ip) != Some(&mac) && self.nd.seen.len() < MAX_SEEN_NEIGHBOURS6 {
                    self.nd.seen.insert(ip, mac);
                    changed = true;
                }
            }
        }
        if changed && self.nd_host6() {
            self.publish();
        }
    }

    /// Send an unsolicited advertisement for each of `vips` (nothing when
    /// not announcing).
    pub(super) fn nd_announce(&mut self, vips: &[u128]) {
        if !self.nd_answering() {
            return;
        }
        for &v in vips {
            let f = ndp::unsolicited(self.ifinfo.mac, v);
            self.nd_send(&f);
        }
    }

    /// `announce on`: advertise every IPv6 VIP now and `rounds` more times
    /// on the next ticks (as the gratuitous ARP burst).
    pub(super) fn nd_announce_all(&mut self, rounds: u8) {
        let all = self.nd.vips.clone();
        self.nd_announce(&all);
        self.nd.left = rounds;
        if !all.is_empty() && self.nd_answering() {
            info!(
                "unsolicited Neighbor Advertisements sent for {} IPv6 VIP(s)",
                all.len()
            );
        }
    }

    /// The rest of the burst (one round per call, every 200 ms).
    pub(super) fn nd_burst(&mut self) {
        if self.nd.left > 0 {
            self.nd.left -= 1;
            let all = self.nd.vips.clone();
            self.nd_announce(&all);
        }
    }

    /// `announce off`: stop the burst (answers stop with `announcing`).
    pub(super) fn nd_silence(&mut self) {
        self.nd.left = 0;
    }

    /// Whether every IPv6 neighbour we want is resolved (start-up waits).
    pub(super) fn nd_resolved(&self) -> bool {
        self.nd.cache.wanted().all(|a| self.nd.cache.mac(a).is_some())
    }
}
