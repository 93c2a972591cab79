//! ARP on the director's loop (slow path): answering requests for the VIPs,
//! resolving the real servers' MACs, learning on-link neighbours, and
//! gratuitous announcements. IPv6 VIPs get the same from Neighbor
//! Discovery (`nd.rs`), switched on and off together with ARP here.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::time::Instant;

use log::{info, warn};

use super::{vips, Director};
use crate::control::arp;
use crate::control::config::Announce;
use crate::wire::ethernet::fmt_mac;

/// Rounds of gratuitous ARP after the first when announcing is switched on.
const GARP_REPEATS: u8 = 2;

/// Most on-link neighbours remembered from ARP (next hops for NAT replies).
const MAX_SEEN_NEIGHBOURS: usize = 4096;

impl Director {
    fn send_frame(&mut self, frame: &[u8]) {
        if let Err(e) = self.arp.send(frame) {
            warn!("ARP send on {} failed: {e}", self.cfg.interface);
        }
    }

    /// Ask for the MACs that are due; republish when one was lost.
    pub(super) fn arp_tick(&mut self) {
        let (ask, lost) = self.neigh.due(Instant::now());
        let my_ip = self.ifinfo.ipv4.unwrap_or(0);
        for ip in ask {
            let f = arp::request(self.ifinfo.mac, my_ip, ip);
            self.send_frame(&f);
            self.slow.arp_requests += 1;
        }
        if lost {
            warn!("a real server stopped answering ARP; it gets no new flows until it answers");
            self.publish();
        }
    }

    /// Read every queued ARP frame: answer VIP requests (only while
    /// announcing), learn server MACs.
    pub(super) fn arp_read(&mut self) {
        let mut buf = [0u8; 2048];
        // A standby answers for no VIP but still learns its neighbours, so
        // it forwards at once when frames arrive or it is switched on.
        // `announce: route` never answers for a VIP: the router routes it
        // to the directors' own addresses.
        let vips = if self.announcing && self.cfg.announce != Announce::Route {
            vips(&self.cfg)
        } else {
            Vec::new()
        };
        let mut changed = false;
        loop {
            let (n, _pkttype) = match self.arp.recv(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("ARP receive failed: {e}");
                    break;
                }
            };
            let Some(out) = arp::handle_frame(&buf[..n], self.ifinfo.mac, &vips) else {
                continue;
            };
            if let Some(reply) = out.reply {
                self.send_frame(&reply);
                self.slow.arp_replies += 1;
            }
            if let Some((ip, mac)) = out.learned {
                if self.neigh.learn(ip, mac, Instant::now()) {
                    info!("neighbour {} is at {}", Ipv4Addr::from(ip), fmt_mac(&mac));
                    changed = true;
                }
                let onlink = self
                    .ifinfo
                    .ipv4
                    .is_some_and(|a| (a ^ ip) & self.ifinfo.netmask == 0);
                if onlink && self.seen.get(&ip) != Some(&mac) && self.seen.len() < MAX_SEEN_NEIGHBOURS {
                    self.seen.insert(ip, mac);
                    self.dirty = true;
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// `ulvsadm announce on|off`. Switching on announces every VIP at once
    /// and [`GARP_REPEATS`] times more on the next ticks (a short burst, so
    /// a switch or router that missed one frame still learns the new owner
    /// within a second); switching off only stops the answers (the
    /// neighbours' caches age out or the new owner's ARP overrides them).
    pub(super) fn set_announcing(&mut self, on: bool) -> String {
        if self.cfg.announce == Announce::Route {
            return self.set_route_announcing(on);
        }
        let was = std::mem::replace(&mut self.announcing, on);
        if !on {
            self.garp_left = 0;
            self.nd_silence();
            info!("announcing off: no ARP answers for the VIPs");
            return if was {
                "announcing off".into()
            } else {
                "announcing off (it was off)".into()
            };
        }
        let all = vips(&self.cfg);
        self.announce(&all);
        self.garp_left = GARP_REPEATS;
        self.nd_announce_all(GARP_REPEATS);
        info!("announcing on: gratuitous ARP sent for {} VIP(s)", all.len());
        format!(
            "announcing on{}: gratuitous ARP sent for {} VIP(s)",
            if was { " (it was on)" } else { "" },
            all.len()
        )
    }

    /// The rest of the burst [`Director::set_announcing`] began (one round
    /// per call; the loop calls it every 200 ms).
    pub(super) fn announce_burst(&mut self) {
        self.nd_burst();
        if self.garp_left > 0 {
            self.garp_left -= 1;
            let all = vips(&self.cfg);
            self.announce(&all);
        }
    }

    /// Send a gratuitous ARP for each of `vips` (nothing when not announcing).
    pub(super) fn announce(&mut self, vips: &[u32]) {
        if !self.announcing || self.cfg.announce == Announce::Route {
            return;
        }
        for &v in vips {
            let g = arp::gratuitous(self.ifinfo.mac, v);
            self.send_frame(&g);
            self.slow.gratuitous_arps += 1;
        }
    }
}
