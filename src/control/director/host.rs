//! The director's use of the live host view (slow path): when netlink
//! reports a change of the routes, of the interface's addresses or MTU, or
//! of a kernel neighbour, the default gateway, the interface facts of the
//! table and each real server's next hop are derived again, the new next
//! hops are resolved (ARP at once) and a new table is published. The IPv6
//! side of the same view is applied by [`Director::nd_sync`] (`nd.rs`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use log::{info, warn};

use super::{server_addrs, Director};

fn show(a: Option<u32>) -> String {
    a.map_or_else(|| "none".into(), |a| Ipv4Addr::from(a).to_string())
}

impl Director {
    /// Derive the gateway, the interface's address, netmask and MTU and the
    /// servers' next hops from the view; true when any of them changed.
    /// Without netlink nothing changes.
    pub(super) fn host_apply(&mut self) -> bool {
        // IPv6 (ND groups, drop table, router, next hops) also without
        // netlink: the config alone decides the groups and the drop rule.
        let mut changed = self.nd_sync();
        if self.netlink.is_none() {
            return changed;
        }
        // Neighbour events are frequent (every entry ages REACHABLE ->
        // STALE): next hops are derived again only when the link, the
        // addresses or the routes changed.
        if self.view.topology != self.view_topology {
            self.view_topology = self.view.topology;
            changed |= self.host_derive();
        }
        // The kernel confirmed a neighbour we resolve (it talked to it):
        // take its MAC now rather than at our next ARP answer.
        let now = Instant::now();
        let confirmed: Vec<(u32, [u8; 6])> = self.view.neighbours().collect();
        for (a, mac) in confirmed {
            changed |= self.neigh.learn(a, mac, now);
        }
        changed
    }

    /// Gateway, interface facts and next hops from the view's routes,
    /// addresses and link; true when any changed.
    fn host_derive(&mut self) -> bool {
        let v = &self.view;
        let mut changed = false;
        let gateway = v.default_gateway();
        let target = self.gateway_next.unwrap_or(self.gateway);
        if gateway != target {
            info!("default gateway {} -> {}", show(target), show(gateway));
            // Published by settle_gateway once resolved.
            self.gateway_next = (gateway != self.gateway).then_some(gateway);
            changed = true;
        }
        if let Some(mtu) = v.mtu {
            if mtu != self.ifinfo.mtu {
                info!("{}: MTU {} -> {}", self.cfg.interface, self.ifinfo.mtu, mtu);
                self.ifinfo.mtu = mtu;
                changed = true;
            }
        }
        let (ip, mask) = v.primary().map_or((None, 0), |(a, m)| (Some(a), m));
        if (ip, mask) != (self.ifinfo.ipv4, self.ifinfo.netmask) {
            info!(
                "{}: IPv4 address {}/{} -> {}/{}",
                self.cfg.interface,
                show(self.ifinfo.ipv4),
                self.ifinfo.netmask.count_ones(),
                show(ip),
                mask.count_ones()
            );
            self.ifinfo.ipv4 = ip;
            self.ifinfo.netmask = mask;
            changed = true;
        }
        let mut hops = HashMap::new();
        for a in server_addrs(&self.cfg) {
            match v.next_hop(a) {
                Some(h) if h != a => {
                    hops.insert(a, h);
                }
                Some(_) => {}
                // No route through the interface: ARP for the server itself,
                // as before netlink (it may still answer).
                None => {}
            }
        }
        if hops != self.hops {
            for (a, h) in &hops {
                if self.hops.get(a) != Some(h) {
                    info!(
                        "real server {} is reached via {}",
                        Ipv4Addr::from(*a),
                        Ipv4Addr::from(*h)
                    );
                }
            }
            self.hops = hops;
            changed = true;
        }
        if changed {
            let wanted = self.wanted();
            self.neigh.set_wanted(wanted);
        }
        changed
    }

    /// Take the new gateway once it can be used: its MAC is known (or it is
    /// no gateway at all, or there was none before).
    pub(super) fn settle_gateway(&mut self) {
        let Some(next) = self.gateway_next else {
            return;
        };
        let ready = match next {
            None => true,
            Some(g) => self.gateway.is_none() || self.neigh.mac(g).is_some() || self.seen.contains_key(&g),
        };
        if ready {
            self.gateway = next;
            self.gateway_next = None;
        }
    }

    /// Read what netlink reported; when it changed what the table depends
    /// on, resolve the new next hops at once and publish.
    pub(super) fn host_read(&mut self) {
        let Some(w) = self.netlink.as_mut() else {
            return;
        };
        match w.read(&mut self.view) {
            Ok(false) => {}
            Ok(true) => {
                if self.host_apply() {
                    // Ask for new next hops now, not at the next tick.
                    self.arp_tick();
                    self.nd_tick();
                    self.publish();
                }
            }
            Err(e) => {
                warn!("netlink: {e}; routes, addresses and MTU are no longer followed");
                self.netlink = None;
            }
        }
    }
}
