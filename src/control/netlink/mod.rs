//! The director's live view of its host (slow path): the routes of the main
//! table, the addresses, MTU and MAC of its interface and the kernel's
//! neighbours on it, kept current through rtnetlink. IPv4 and IPv6 are kept
//! apart (`routes`/`routes6`, `addrs`/`addrs6`, `neighbours`/`neighbours6`)
//! and resolved alike; IPv6 routes have no TOS in their key.
//!
//! [`HostView`] is the state and its pure message handling (unit-tested with
//! built messages); [`Watcher`] is the socket: it subscribes to the link,
//! IPv4 and IPv6 address, IPv4 and IPv6 route and neighbour groups first, then dumps each table
//! on a second socket, so no change between the dump and the subscription is
//! lost (a change seen twice is applied twice, to the same result). The
//! slow-path loop polls the watcher's descriptor with mio and, when the view
//! changed, re-resolves next hops and publishes a new table.
//!
//! Next hops follow the kernel's choice: the longest matching prefix of the
//! main table (table 254), and among equal prefixes the lowest metric
//! (`priority`). A route whose type is not unicast (blackhole, unreachable,
//! prohibit) matches but gives no next hop, as in the kernel. Multipath
//! routes use their first hop. Policy routing (`ip rule`) is not followed.
//! A lookup walks every route (the slow path resolves a few addresses per
//! change; a host with a full Internet table would want a trie here).

mod watcher;

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

pub use watcher::Watcher;

/// A MAC address.
pub type Mac = [u8; 6];

/// One IPv4 route of the main table (addresses host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: u32,
    pub plen: u8,
    pub tos: u8,
    /// `priority` (the metric): lower wins among equal prefixes.
    pub metric: u32,
    pub gateway: Option<u32>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Unicast: forwards. Anything else (blackhole, unreachable, ...) matches
    /// but has no next hop.
    pub unicast: bool,
}

impl Route {
    fn mask(&self) -> u32 {
        prefix_mask(self.plen)
    }

    fn matches(&self, addr: u32) -> bool {
        addr & self.mask() == self.dst & self.mask()
    }
}

type RouteKey = (u32, u8, u8, u32);

impl Route {
    fn key(&self) -> RouteKey {
        (self.dst & self.mask(), self.plen, self.tos, self.metric)
    }
}

/// One IPv6 route of the main table (addresses big-endian `u128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route6 {
    pub dst: u128,
    pub plen: u8,
    pub metric: u32,
    /// Often the router's link-local address (learned from its
    /// advertisements), which is fine: it is resolved on the interface.
    pub gateway: Option<u128>,
    pub oif: Option<u32>,
    pub unicast: bool,
}

type RouteKey6 = (u128, u8, u32);

impl Route6 {
    fn mask(&self) -> u128 {
        prefix_mask6(self.plen)
    }

    fn matches(&self, addr: u128) -> bool {
        addr & self.mask() == self.dst & self.mask()
    }

    fn key(&self) -> RouteKey6 {
        (self.dst & self.mask(), self.plen, self.metric)
    }
}

/// The IPv6 netmask of a prefix length (0..=128; more is taken as 128).
pub fn prefix_mask6(plen: u8) -> u128 {
    match plen {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - p),
    }
}

/// True for a link-local unicast address (`fe80::/10`).
pub fn is_link_local6(a: u128) -> bool {
    a >> 118 == 0x3fa
}

/// The netmask of a prefix length (0..=32; more is taken as 32).
pub fn prefix_mask(plen: u8) -> u32 {
    match plen {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - p),
    }
}

/// What the director knows of its host: routes, its interface's addresses,
/// MTU and MAC, and the kernel's neighbours on that interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    ifindex: u32,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    /// IPv4 addresses of the interface with their prefix lengths, in the
    /// order the kernel reported them (the first is the primary).
    pub addrs: Vec<(u32, u8)>,
    /// Bumped by every change of the link, addresses or routes (not of
    /// neighbours): what next hops depend on.
    pub topology: u64,
    /// Keyed as IPv4 keys them: (prefix, length, tos, metric).
    routes: HashMap<RouteKey, Route>,
    neighbours: HashMap<u32, Mac>,
    /// IPv6 addresses of the interface with their prefix lengths, link-local
    /// ones included, in the order the kernel reported them.
    pub addrs6: Vec<(u128, u8)>,
    /// Keyed as IPv6 keys them: (prefix, length, metric).
    routes6: HashMap<RouteKey6, Route6>,
    neighbours6: HashMap<u128, Mac>,
}

fn v4(a: &RouteAddress) -> Option<u32> {
    match a {
        RouteAddress::Inet(v) => Some(u32::from(*v)),
        _ => None,
    }
}

fn v6(a: &RouteAddress) -> Option<u128> {
    match a {
        RouteAddress::Inet6(v) => Some(u128::from(*v)),
        _ => None,
    }
}

/// The fields both families read from a main-table route, with addresses
/// converted by `addr` (which refuses the other family).
struct Parsed<A> {
    dst: A,
    metric: u32,
    gateway: Option<A>,
    oif: Option<u32>,
}

/// One walk over a route's attributes for either family: `None` for another
/// family, another table, or a destination of the wrong family.
fn parse_route<A: Default>(
    m: &RouteMessage,
    family: AddressFamily,
    addr: fn(&RouteAddress) -> Option<A>,
) -> Option<Parsed<A>> {
    if m.header.address_family != family {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut r = Parsed {
        dst: A::default(),
        metric: 0,
        gateway: None,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => r.dst = addr(d)?,
            RouteAttribute::Gateway(g) => r.gateway = addr(g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.metric = *p,
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::MultiPath(hops) => {
                if let Some(h) = hops.first() {
                    r.oif = r.oif.or(Some(h.interface_index));
                    for ha in &h.attributes {
                        if let RouteAttribute::Gateway(g) = ha {
                            r.gateway = r.gateway.or_else(|| addr(g));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(r)
}

fn route6_of(m: &RouteMessage) -> Option<Route6> {
    let p = parse_route(m, AddressFamily::Inet6, v6)?;
    Some(Route6 {
        dst: p.dst,
        plen: m.header.destination_prefix_length,
        metric: p.metric,
        gateway: p.gateway,
        oif: p.oif,
        unicast: m.header.kind == RouteType::Unicast,
    })
}

fn route_of(m: &RouteMessage) -> Option<Route> {
    let p = parse_route(m, AddressFamily::Inet, v4)?;
    Some(Route {
        dst: p.dst,
        plen: m.header.destination_prefix_length,
        tos: m.header.tos,
        metric: p.metric,
        gateway: p.gateway,
        oif: p.oif,
        unicast: m.header.kind == RouteType::Unicast,
    })
}

impl HostView {
    /// An empty view of the interface with index `ifindex`.
    pub fn new(ifindex: u32) -> Self {
        HostView {
            ifindex,
            ..Default::default()
        }
    }

    /// The interface this view follows.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The routes of the main table, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Apply one rtnetlink message (a dump entry or a notification);
    /// true when the view changed.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> bool {
        let changed = self.apply_inner(msg);
        if changed
            && !matches!(
                msg,
                RouteNetlinkMessage::NewNeighbour(_) | RouteNetlinkMessage::DelNeighbour(_)
            )
        {
            self.topology += 1;
        }
        changed
    }

    fn apply_inner(&mut self, msg: &RouteNetlinkMessage) -> bool {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.link(m),
            RouteNetlinkMessage::NewAddress(m) => self.address(m, true),
            RouteNetlinkMessage::DelAddress(m) => self.address(m, false),
            // A new route with the key of an old one replaces it (`ip route
            // replace` sends no deletion).
            RouteNetlinkMessage::NewRoute(m) => {
                route_of(m).is_some_and(|r| self.routes.insert(r.key(), r) != Some(r))
                    || route6_of(m).is_some_and(|r| self.routes6.insert(r.key(), r) != Some(r))
            }
            RouteNetlinkMessage::DelRoute(m) => {
                route_of(m).is_some_and(|r| self.routes.remove(&r.key()).is_some())
                    || route6_of(m).is_some_and(|r| self.routes6.remove(&r.key()).is_some())
            }
            RouteNetlinkMessage::NewNeighbour(m) => self.neighbour(m, true),
            RouteNetlinkMessage::DelNeighbour(m) => self.neighbour(m, false),
            _ => false,
        }
    }

    fn link(&mut self, m: &LinkMessage) -> bool {
        if m.header.index != self.ifindex {
            return false;
        }
        let before = (self.mtu, self.mac);
        for a in &m.attributes {
            match a {
                LinkAttribute::Mtu(v) => self.mtu = Some(*v),
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(b);
                    self.mac = Some(mac);
                }
                _ => {}
            }
        }
        (self.mtu, self.mac) != before
    }

    fn address(&mut self, m: &AddressMessage, add: bool) -> bool {
        if m.header.index != self.ifindex {
            return false;
        }
        if m.header.family == AddressFamily::Inet6 {
            return self.address6(m, add);
        }
        if m.header.family != AddressFamily::Inet {
            return false;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
        // on point-to-point links and equal to it elsewhere.
        let mut local = None;
        let mut address = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(v)) => local = Some(u32::from(*v)),
                AddressAttribute::Address(IpAddr::V4(v)) => address = Some(u32::from(*v)),
                _ => {}
            }
        }
        let Some(ip) = local.or(address) else {
            return false;
        };
        let entry = (ip, m.header.prefix_len);
        let i = self.addrs.iter().position(|a| a.0 == ip);
        match (add, i) {
            (true, Some(i)) if self.addrs[i] == entry => false,
            (true, Some(i)) => {
                self.addrs[i] = entry;
                true
            }
            (true, None) => {
                self.addrs.push(entry);
                true
            }
            (false, Some(i)) => {
                self.addrs.remove(i);
                true
            }
            (false, None) => false,
        }
    }

    fn address6(&mut self, m: &AddressMessage, add: bool) -> bool {
        let mut ip = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Address(IpAddr::V6(v)) => ip = Some(u128::from(*v)),
                AddressAttribute::Local(IpAddr::V6(v)) => ip = ip.or(Some(u128::from(*v))),
                _ => {}
            }
        }
        let Some(ip) = ip else {
            return false;
        };
        let entry = (ip, m.header.prefix_len);
        let i = self.addrs6.iter().position(|a| a.0 == ip);
        match (add, i) {
            (true, Some(i)) if self.addrs6[i] == entry => false,
            (true, Some(i)) => {
                self.addrs6[i] = entry;
                true
            }
            (true, None) => {
                self.addrs6.push(entry);
                true
            }
            (false, Some(i)) => {
                self.addrs6.remove(i);
                true
            }
            (false, None) => false,
        }
    }

    fn neighbour6(&mut self, m: &NeighbourMessage, add: bool) -> bool {
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => ip = Some(u128::from(*v)),
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    let mut x = [0u8; 6];
                    x.copy_from_slice(b);
                    mac = Some(x);
                }
                _ => {}
            }
        }
        let Some(ip) = ip else {
            return false;
        };
        // As for IPv4: only entries the kernel confirmed recently.
        let usable = matches!(
            m.header.state,
            NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp
        );
        match (add && usable, mac) {
            (true, Some(mac)) => self.neighbours6.insert(ip, mac) != Some(mac),
            _ => self.neighbours6.remove(&ip).is_some(),
        }
    }

    fn neighbour(&mut self, m: &NeighbourMessage, add: bool) -> bool {
        if m.header.ifindex == self.ifindex && m.header.family == AddressFamily::Inet6 {
            return self.neighbour6(m, add);
        }
        if m.header.ifindex != self.ifindex || m.header.family != AddressFamily::Inet {
            return false;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(u32::from(*v)),
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    let mut x = [0u8; 6];
                    x.copy_from_slice(b);
                    mac = Some(x);
                }
                _ => {}
            }
        }
        let Some(ip) = ip else {
            return false;
        };
        // Only entries the kernel confirmed recently (or that an operator
        // set): a stale one may name a MAC that has moved.
        let usable = matches!(
            m.header.state,
            NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp
        );
        match (add && usable, mac) {
            (true, Some(mac)) => self.neighbours.insert(ip, mac) != Some(mac),
            _ => self.neighbours.remove(&ip).is_some(),
        }
    }

    /// The route the kernel would take to `addr`: the longest matching
    /// prefix, then the lowest metric.
    pub fn lookup(&self, addr: u32) -> Option<&Route> {
        self.routes
            .values()
            .filter(|r| r.matches(addr))
            .min_by_key(|r| (std::cmp::Reverse(r.plen), r.metric, r.tos, r.gateway))
    }

    /// The address to send a frame for `addr` to on the director's
    /// interface: `addr` itself when its route is on-link there, the route's
    /// gateway otherwise; none when the route leaves by another interface,
    /// is not unicast, or there is none.
    pub fn next_hop(&self, addr: u32) -> Option<u32> {
        let r = self.lookup(addr)?;
        if !r.unicast || r.oif.is_some_and(|o| o != self.ifindex) {
            return None;
        }
        Some(r.gateway.unwrap_or(addr))
    }

    /// The gateway of the default route through the interface (the next
    /// hop toward clients): the lowest-metric 0.0.0.0/0 of the main table.
    pub fn default_gateway(&self) -> Option<u32> {
        self.routes
            .values()
            .filter(|r| r.plen == 0 && r.unicast && r.oif.is_none_or(|o| o == self.ifindex))
            .min_by_key(|r| (r.metric, r.gateway))
            .and_then(|r| r.gateway)
    }

    /// The interface's primary IPv4 address and its netmask.
    pub fn primary(&self) -> Option<(u32, u32)> {
        self.addrs.first().map(|&(a, p)| (a, prefix_mask(p)))
    }

    /// The kernel's confirmed neighbours on the interface (address, MAC).
    pub fn neighbours(&self) -> impl Iterator<Item = (u32, Mac)> + '_ {
        self.neighbours.iter().map(|(a, m)| (*a, *m))
    }

    /// The kernel's entry for `ip` on the interface, if usable.
    pub fn neighbour_mac(&self, ip: u32) -> Option<Mac> {
        self.neighbours.get(&ip).copied()
    }

    /// The IPv6 routes of the main table, in no particular order.
    pub fn routes6(&self) -> impl Iterator<Item = &Route6> {
        self.routes6.values()
    }

    /// As [`HostView::lookup`] for an IPv6 address.
    pub fn lookup6(&self, addr: u128) -> Option<&Route6> {
        self.routes6
            .values()
            .filter(|r| r.matches(addr))
            .min_by_key(|r| (std::cmp::Reverse(r.plen), r.metric, r.gateway))
    }

    /// As [`HostView::next_hop`] for an IPv6 address.
    pub fn next_hop6(&self, addr: u128) -> Option<u128> {
        let r = self.lookup6(addr)?;
        if !r.unicast || r.oif.is_some_and(|o| o != self.ifindex) {
            return None;
        }
        Some(r.gateway.unwrap_or(addr))
    }

    /// The gateway of the lowest-metric IPv6 default route (`::/0`) through
    /// the interface: the IPv6 router toward clients.
    pub fn default_gateway6(&self) -> Option<u128> {
        self.routes6
            .values()
            .filter(|r| r.plen == 0 && r.unicast && r.oif.is_none_or(|o| o == self.ifindex))
            .min_by_key(|r| (r.metric, r.gateway))
            .and_then(|r| r.gateway)
    }

    /// The interface's first global IPv6 address (not link-local) with its
    /// prefix length: the director's address on the segment.
    pub fn primary6(&self) -> Option<(u128, u8)> {
        self.addrs6.iter().copied().find(|&(a, _)| !is_link_local6(a))
    }

    /// The interface's link-local IPv6 address (the source of our own
    /// solicitations when there is no global one).
    pub fn link_local6(&self) -> Option<u128> {
        self.addrs6.iter().map(|a| a.0).find(|&a| is_link_local6(a))
    }

    /// The kernel's confirmed IPv6 neighbours on the interface.
    pub fn neighbours6(&self) -> impl Iterator<Item = (u128, Mac)> + '_ {
        self.neighbours6.iter().map(|(a, m)| (*a, *m))
    }
}

#[cfg(test)]
mod tests;
