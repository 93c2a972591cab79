//! The view's message handling and next-hop resolution, on messages built
//! as the kernel sends them (and, for the socket, one round trip through
//! the bytes).

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as M};

use super::*;

const IF: u32 = 3;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

/// A main-table IPv4 route: "dst/plen", gateway, metric, interface.
fn route(dst: &str, gw: Option<&str>, metric: u32, oif: u32) -> RouteMessage {
    let (d, p) = dst.split_once('/').unwrap();
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = p.parse().unwrap();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.kind = RouteType::Unicast;
    if p != "0" {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(
            d.parse().unwrap(),
        )));
    }
    if let Some(g) = gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(g.parse().unwrap())));
    }
    if metric != 0 {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

fn link(index: u32, mtu: u32, mac: [u8; 6]) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    m
}

fn addr(index: u32, a: &str, plen: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.index = index;
    m.header.prefix_len = plen;
    let v: Ipv4Addr = a.parse().unwrap();
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(v)));
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(v)));
    m
}

fn neigh(index: u32, a: &str, mac: [u8; 6], state: NeighbourState) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = state;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            a.parse().unwrap(),
        )));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// The test bed's director: 198.18.0.2/24 on interface 3, default via .1.
fn host() -> HostView {
    let mut v = HostView::new(IF);
    for m in [
        M::NewLink(link(IF, 1500, [2, 0, 0, 0, 0, 2])),
        M::NewAddress(addr(IF, "198.18.0.2", 24)),
        M::NewRoute(route("198.18.0.0/24", None, 0, IF)),
        M::NewRoute(route("0.0.0.0/0", Some("198.18.0.1"), 0, IF)),
    ] {
        assert!(v.apply(&m), "{m:?} changed nothing");
    }
    v
}

#[test]
fn prefix_masks() {
    assert_eq!(prefix_mask(0), 0);
    assert_eq!(prefix_mask(8), 0xff00_0000);
    assert_eq!(prefix_mask(24), 0xffff_ff00);
    assert_eq!(prefix_mask(32), u32::MAX);
    assert_eq!(prefix_mask(40), u32::MAX);
}

#[test]
fn link_address_and_default_route() {
    let v = host();
    assert_eq!(v.mtu, Some(1500));
    assert_eq!(v.mac, Some([2, 0, 0, 0, 0, 2]));
    assert_eq!(v.primary(), Some((ip("198.18.0.2"), 0xffff_ff00)));
    assert_eq!(v.default_gateway(), Some(ip("198.18.0.1")));
    // On-link: the address itself; elsewhere: the gateway.
    assert_eq!(v.next_hop(ip("198.18.0.11")), Some(ip("198.18.0.11")));
    assert_eq!(v.next_hop(ip("198.18.1.2")), Some(ip("198.18.0.1")));
}

#[test]
fn longest_prefix_wins_then_lowest_metric() {
    let mut v = host();
    v.apply(&M::NewRoute(route("198.18.64.0/18", Some("198.18.0.5"), 0, IF)));
    v.apply(&M::NewRoute(route("198.18.80.0/20", Some("198.18.0.6"), 50, IF)));
    v.apply(&M::NewRoute(route("198.18.80.0/20", Some("198.18.0.7"), 10, IF)));
    // /20 beats /18 and the default, and metric 10 beats 50.
    assert_eq!(v.next_hop(ip("198.18.81.9")), Some(ip("198.18.0.7")));
    // Inside the /18 but outside the /20.
    assert_eq!(v.next_hop(ip("198.18.65.1")), Some(ip("198.18.0.5")));
    // Outside both.
    assert_eq!(v.next_hop(ip("198.19.0.1")), Some(ip("198.18.0.1")));
    // The metric-10 route goes: the metric-50 one takes over.
    v.apply(&M::DelRoute(route("198.18.80.0/20", Some("198.18.0.7"), 10, IF)));
    assert_eq!(v.next_hop(ip("198.18.81.9")), Some(ip("198.18.0.6")));
}

#[test]
fn default_route_by_metric_and_replace() {
    let mut v = host();
    // A second default with a worse metric does not take over...
    assert!(v.apply(&M::NewRoute(route("0.0.0.0/0", Some("198.18.0.9"), 100, IF))));
    assert_eq!(v.default_gateway(), Some(ip("198.18.0.1")));
    // ...until the better one is deleted.
    assert!(v.apply(&M::DelRoute(route("0.0.0.0/0", Some("198.18.0.1"), 0, IF))));
    assert_eq!(v.default_gateway(), Some(ip("198.18.0.9")));
    // `ip route replace default via .250` (metric 100): one NEWROUTE.
    assert!(v.apply(&M::NewRoute(route("0.0.0.0/0", Some("198.18.0.250"), 100, IF))));
    assert_eq!(v.default_gateway(), Some(ip("198.18.0.250")));
    assert_eq!(v.routes().filter(|r| r.plen == 0).count(), 1);
    // The same message again changes nothing.
    assert!(!v.apply(&M::NewRoute(route("0.0.0.0/0", Some("198.18.0.250"), 100, IF))));
}

#[test]
fn routes_through_other_interfaces_or_tables_give_no_next_hop() {
    let mut v = host();
    v.apply(&M::NewRoute(route(
        "198.18.200.0/24",
        Some("10.9.9.9"),
        0,
        IF + 1,
    )));
    assert_eq!(
        v.next_hop(ip("198.18.200.7")),
        None,
        "leaves by another interface"
    );
    // A default through another interface is not the director's gateway.
    let mut w = HostView::new(IF);
    w.apply(&M::NewRoute(route("0.0.0.0/0", Some("198.18.9.1"), 0, IF + 1)));
    assert_eq!(w.default_gateway(), None);
    // Another table (a routing daemon's, `announce: route`) is not followed.
    let mut m = route("198.18.100.0/24", Some("198.18.0.77"), 0, IF);
    m.header.table = 100;
    assert!(!v.apply(&M::NewRoute(m.clone())));
    m.header.table = 0;
    m.attributes.push(RouteAttribute::Table(4096));
    assert!(!v.apply(&M::NewRoute(m)));
    assert_eq!(v.next_hop(ip("198.18.100.1")), Some(ip("198.18.0.1")));
}

#[test]
fn blackhole_matches_without_next_hop() {
    let mut v = host();
    let mut m = route("198.18.50.0/24", None, 0, IF);
    m.header.kind = RouteType::BlackHole;
    m.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
    v.apply(&M::NewRoute(m));
    assert_eq!(v.next_hop(ip("198.18.50.1")), None);
    assert_eq!(v.next_hop(ip("198.18.51.1")), Some(ip("198.18.0.1")));
}

#[test]
fn mtu_and_address_changes() {
    let mut v = host();
    let topology = v.topology;
    assert!(v.apply(&M::NewLink(link(IF, 1400, [2, 0, 0, 0, 0, 2]))));
    assert_eq!(v.mtu, Some(1400));
    assert_eq!(v.topology, topology + 1);
    assert!(
        !v.apply(&M::NewLink(link(IF, 1400, [2, 0, 0, 0, 0, 2]))),
        "same again"
    );
    assert!(
        !v.apply(&M::NewLink(link(IF + 1, 9000, [2, 0, 0, 0, 0, 9]))),
        "another interface"
    );
    assert_eq!(v.mtu, Some(1400));
    // A secondary address, then the primary goes: the secondary is primary.
    assert!(v.apply(&M::NewAddress(addr(IF, "198.18.0.3", 24))));
    assert_eq!(v.primary().unwrap().0, ip("198.18.0.2"));
    assert!(v.apply(&M::DelAddress(addr(IF, "198.18.0.2", 24))));
    assert_eq!(v.primary(), Some((ip("198.18.0.3"), 0xffff_ff00)));
    assert!(!v.apply(&M::NewAddress(addr(IF + 1, "198.18.9.9", 16))));
    assert_eq!(v.addrs.len(), 1);
}

#[test]
fn kernel_neighbours() {
    let mut v = host();
    let mac = [2, 0, 0xc6, 0x12, 0, 1];
    assert!(v.apply(&M::NewNeighbour(neigh(
        IF,
        "198.18.0.1",
        mac,
        NeighbourState::Reachable
    ))));
    assert_eq!(v.neighbour_mac(ip("198.18.0.1")), Some(mac));
    // A failed entry is no MAC.
    assert!(v.apply(&M::NewNeighbour(neigh(
        IF,
        "198.18.0.1",
        mac,
        NeighbourState::Failed
    ))));
    assert_eq!(v.neighbour_mac(ip("198.18.0.1")), None);
    // Neither is a stale one (the MAC may have moved)...
    let n = |state| neigh(IF, "198.18.0.1", mac, state);
    v.apply(&M::NewNeighbour(n(NeighbourState::Reachable)));
    assert!(v.apply(&M::NewNeighbour(n(NeighbourState::Stale))));
    assert_eq!(v.neighbour_mac(ip("198.18.0.1")), None);
    // ...and a deleted one is gone; neither moves the topology.
    let topology = v.topology;
    v.apply(&M::NewNeighbour(n(NeighbourState::Permanent)));
    assert_eq!(v.neighbours().collect::<Vec<_>>(), vec![(ip("198.18.0.1"), mac)]);
    assert!(v.apply(&M::DelNeighbour(n(NeighbourState::Permanent))));
    assert_eq!(v.neighbour_mac(ip("198.18.0.1")), None);
    assert_eq!(v.topology, topology, "neighbours are not topology");
    assert!(!v.apply(&M::NewNeighbour(neigh(
        IF + 1,
        "198.18.0.1",
        mac,
        NeighbourState::Reachable
    ))));
}

/// An IPv6 default route is the IPv6 router's, never the IPv4 gateway.
#[test]
fn ipv6_routes_are_kept_apart() {
    let mut v = host();
    let mut m = route("0.0.0.0/0", None, 0, IF);
    m.header.address_family = AddressFamily::Inet6;
    m.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet6(
        "2001:db8::1".parse().unwrap(),
    ))];
    assert!(v.apply(&M::NewRoute(m)));
    assert_eq!(v.default_gateway(), Some(ip("198.18.0.1")));
    assert_eq!(v.default_gateway6(), Some(ip6("2001:db8::1")));
}

fn ip6(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
}

/// A main-table IPv6 route: "dst/plen", gateway, metric, interface.
fn route6(dst: &str, gw: Option<&str>, metric: u32, oif: u32) -> RouteMessage {
    let (d, p) = dst.split_once('/').unwrap();
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.destination_prefix_length = p.parse().unwrap();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.kind = RouteType::Unicast;
    if p != "0" {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet6(
            d.parse().unwrap(),
        )));
    }
    if let Some(g) = gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet6(g.parse().unwrap())));
    }
    if metric != 0 {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

fn addr6(index: u32, a: &str, plen: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    m.header.index = index;
    m.header.prefix_len = plen;
    m.attributes
        .push(AddressAttribute::Address(IpAddr::V6(a.parse().unwrap())));
    m
}

fn neigh6(index: u32, a: &str, mac: [u8; 6], state: NeighbourState) -> NeighbourMessage {
    let mut m = neigh(index, "198.18.0.99", mac, state);
    m.header.family = AddressFamily::Inet6;
    m.attributes[0] = NeighbourAttribute::Destination(NeighbourAddress::Inet6(a.parse().unwrap()));
    m
}

/// The IPv6 side of the view: the director's global and link-local
/// addresses, the router, next hops by longest prefix and the kernel's
/// confirmed IPv6 neighbours, none of which touch the IPv4 side.
#[test]
fn ipv6_addresses_routes_and_neighbours() {
    let mut v = host();
    let before = (v.primary(), v.default_gateway(), v.neighbours().count());
    assert!(v.apply(&M::NewAddress(addr6(IF, "fe80::2", 64))));
    assert_eq!(v.primary6(), None, "link-local is not the segment address");
    assert!(v.apply(&M::NewAddress(addr6(IF, "2001:db8::2", 64))));
    assert!(!v.apply(&M::NewAddress(addr6(IF, "2001:db8::2", 64))));
    assert!(!v.apply(&M::NewAddress(addr6(IF + 1, "2001:db8:9::2", 64))));
    assert_eq!(v.primary6(), Some((ip6("2001:db8::2"), 64)));
    assert_eq!(v.link_local6(), Some(ip6("fe80::2")));
    for m in [
        route6("2001:db8::/64", None, 256, IF),
        route6("::/0", Some("fe80::1"), 1024, IF),
        route6("2001:db8:5::/48", Some("2001:db8::7"), 1024, IF),
        route6("2001:db8:6::/48", Some("2001:db8:9::1"), 1024, IF + 1),
    ] {
        assert!(v.apply(&M::NewRoute(m)));
    }
    assert_eq!(v.default_gateway6(), Some(ip6("fe80::1")));
    assert_eq!(v.next_hop6(ip6("2001:db8::11")), Some(ip6("2001:db8::11")));
    assert_eq!(v.next_hop6(ip6("2001:db8:5::11")), Some(ip6("2001:db8::7")));
    assert_eq!(v.next_hop6(ip6("2001:db8:6::11")), None, "another interface");
    assert_eq!(v.next_hop6(ip6("2001:db9::1")), Some(ip6("fe80::1")));
    assert!(v.apply(&M::DelRoute(route6(
        "2001:db8:5::/48",
        Some("2001:db8::7"),
        1024,
        IF
    ))));
    assert_eq!(v.next_hop6(ip6("2001:db8:5::11")), Some(ip6("fe80::1")));
    let mac = [2, 0, 0, 0, 0, 0x11];
    assert!(v.apply(&M::NewNeighbour(neigh6(
        IF,
        "2001:db8::11",
        mac,
        NeighbourState::Reachable
    ))));
    assert!(!v.apply(&M::NewNeighbour(neigh6(
        IF,
        "2001:db8::12",
        mac,
        NeighbourState::Stale
    ))));
    assert_eq!(
        v.neighbours6().collect::<Vec<_>>(),
        vec![(ip6("2001:db8::11"), mac)]
    );
    assert!(v.apply(&M::NewNeighbour(neigh6(
        IF,
        "2001:db8::11",
        mac,
        NeighbourState::Stale
    ))));
    assert_eq!(v.neighbours6().count(), 0);
    assert!(v.apply(&M::DelAddress(addr6(IF, "2001:db8::2", 64))));
    assert_eq!(v.primary6(), None);
    assert_eq!((v.primary(), v.default_gateway(), v.neighbours().count()), before);
    assert!(is_link_local6(ip6("febf::1")) && !is_link_local6(ip6("fec0::1")));
    assert_eq!(prefix_mask6(64), ip6("ffff:ffff:ffff:ffff::"));
    assert_eq!((prefix_mask6(0), prefix_mask6(200)), (0, u128::MAX));
}

/// Messages as bytes, several in one datagram as the kernel sends them,
/// through the same decoder the socket uses.
#[test]
fn datagram_decoding() {
    let mut data = Vec::new();
    for (i, m) in [
        M::NewLink(link(IF, 1300, [2, 0, 0, 0, 0, 2])),
        M::NewRoute(route("0.0.0.0/0", Some("198.18.0.254"), 0, IF)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = NetlinkHeader::default();
        h.sequence_number = i as u32;
        let mut nl = NetlinkMessage::new(h, NetlinkPayload::from(m));
        nl.finalize();
        let mut b = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut b);
        data.extend_from_slice(&b);
        while data.len() % 4 != 0 {
            data.push(0);
        }
    }
    // A truncated tail (a length past the end) is ignored, not a panic.
    data.extend_from_slice(&[200, 0, 0, 0, 16, 0, 0, 0]);
    let mut v = host();
    let more = watcher::each_message(&data, |m| {
        v.apply(m);
    })
    .unwrap();
    assert!(more, "no NLMSG_DONE in these");
    assert_eq!(v.mtu, Some(1300));
    assert_eq!(v.default_gateway(), Some(ip("198.18.0.254")));
}

/// The real kernel, read-only: a dump of this namespace agrees with the
/// loopback interface's facts.
#[test]
fn dump_of_loopback() {
    let v = watcher::dump(1).expect("rtnetlink dump");
    assert!(v.mtu.is_some_and(|m| m >= 1280), "lo MTU {:?}", v.mtu);
    assert!(
        v.addrs.iter().any(|a| *a == (ip("127.0.0.1"), 8)),
        "{:?}",
        v.addrs
    );
}
