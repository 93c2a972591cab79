use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use super::*;
use crate::control::config::Config;
use crate::control::publish::{build, Built, Health, Iface, MaglevCache, Runtime};
use crate::fwd::table::{BackendState, Mode};

/// An IPv4 DR service (line 3), an IPv6 DR service with weights (line 9),
/// an IPv6 NAT service with a port change (line 17).
const DUAL: &str = "\
interface: eth0
maglev_table_size: 251
services:
  - name: web4
    vip: 198.18.100.1
    port: 80
    real_servers:
      - address: 198.18.0.11
  - name: web6
    vip: 2001:db8:100::1
    port: 80
    real_servers:
      - address: 2001:db8::11
      - address: 2001:db8::12
        weight: 3
      - address: 2001:db8::13
  - name: api6
    vip: 2001:db8:100::2
    port: 443
    protocol: udp
    mode: nat
    scheduler: maglev_client
    real_servers:
      - address: \"[2001:db8::22]:8443\"
      - address: 2001:db8::21
";

fn cfg(text: &str) -> Config {
    Config::from_str(text, "t.yaml").unwrap()
}

fn a6(s: &str) -> u128 {
    u128::from(s.parse::<Ipv6Addr>().unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// MAC 02:00:00:00:00:LL for an address ending in LL.
fn mac_of(a: u128) -> Mac {
    [2, 0, 0, 0, 0, a as u8]
}

struct Facts {
    /// Resolved IPv6 neighbours.
    macs: HashMap<u128, Mac>,
    seen: Vec<(u128, Mac)>,
    address: Option<(u128, u8)>,
    gateway: Option<u128>,
}

impl Facts {
    /// Every server resolved, the director at 2001:db8::2/64, router ::1.
    fn all(c: &Config) -> Facts {
        let macs = c
            .services
            .iter()
            .flat_map(|s| s.real_servers.iter().filter_map(|r| v6(r.address)))
            .map(|a| (a, mac_of(a)))
            .collect();
        Facts {
            macs,
            seen: vec![
                (a6("2001:db8::99"), [2, 0, 0, 0, 0, 0x99]),
                (a6("2001:db8::1"), [2, 0, 0, 0, 0, 1]),
            ],
            address: Some((a6("2001:db8::2"), 64)),
            gateway: Some(a6("2001:db8::1")),
        }
    }
}

fn built(c: &Config, rt: &Runtime, f: &Facts, cache: &mut MaglevCache) -> Built {
    let resolved = |a: u32| Some([2, 0, 0, 0, 4, a as u8]);
    let resolved6 = |a: u128| f.macs.get(&a).copied();
    let seen = HashMap::new();
    let inputs = Inputs {
        cfg: c,
        rt,
        resolved: &resolved,
        seen: &seen,
        gateway: None,
        iface: Iface::TEST,
        generation: 3,
        v6: Inputs6 {
            resolved: &resolved6,
            address: f.address,
            gateway: f.gateway,
            seen: &f.seen,
        },
    };
    build(&inputs, cache)
}

fn synced(c: &Config) -> Runtime {
    let mut rt = Runtime::default();
    rt.sync(c).unwrap();
    rt
}

fn id(rt: &Runtime, service: &str, addr: &str, port: Option<u16>) -> BackendId {
    rt.get(service, ip(addr), port).unwrap().id
}

/// How many slots of the service's table each member owns.
fn shares(s: &ServiceFwd6) -> HashMap<BackendId, usize> {
    let mut n = HashMap::new();
    for slot in s.maglev.slots().iter().flatten() {
        *n.entry(s.members[slot.index()]).or_default() += 1;
    }
    n
}

#[test]
fn ipv6_services_go_to_services6_with_their_servers() {
    let c = cfg(DUAL);
    let rt = synced(&c);
    let t = built(&c, &rt, &Facts::all(&c), &mut MaglevCache::default()).table;
    // IPv4 keeps to `services`, IPv6 to `services6` (sorted by VIP).
    assert_eq!(t.services.len(), 1);
    assert_eq!(t.services[0].vip, 0xc612_6401);
    assert_eq!(t.services6.len(), 2);
    let (web, api) = (&t.services6[0], &t.services6[1]);
    assert_eq!(
        (web.vip, web.port, web.proto, web.mode),
        (a6("2001:db8:100::1"), 80, 6, Mode::Dr)
    );
    assert!(!web.client_affinity);
    assert_eq!(
        (api.vip, api.port, api.proto, api.mode),
        (a6("2001:db8:100::2"), 443, 17, Mode::Nat)
    );
    assert!(api.client_affinity);
    assert_eq!(t.find_service6(a6("2001:db8:100::2"), 17, 443), Some(1));
    assert!(t.is_vip6(a6("2001:db8:100::1")) && !t.is_vip6(a6("2001:db8::11")));
    // Each server: its id's BackendFwd keeps port, MAC, state and mode; its
    // Backend6 the addresses.
    let i22 = id(&rt, "api6", "2001:db8::22", Some(8443));
    let b = t.backend(i22);
    assert_eq!((b.addr, b.port, b.svc_vip, b.svc_port), (0, 8443, 0, 443));
    assert_eq!(
        (b.mac, b.state, b.mode),
        (Some(mac_of(a6("2001:db8::22"))), BackendState::Up, Mode::Nat)
    );
    assert_eq!(
        t.backend6(i22),
        Backend6 {
            addr: a6("2001:db8::22"),
            svc_vip: a6("2001:db8:100::2")
        }
    );
    let i21 = id(&rt, "api6", "2001:db8::21", None);
    assert_eq!(t.backend(i21).port, 0, "no port: the client's is kept");
    // The IPv4 server has no IPv6 side, and keeps its own.
    let i4 = id(&rt, "web4", "198.18.0.11", None);
    assert_eq!(t.backend6(i4), Backend6::default());
    assert_eq!(
        (t.backend(i4).addr, t.backend(i4).svc_vip),
        (0xc612_000b, 0xc612_6401)
    );
    assert_eq!(t.backends6.len(), t.backends.len());
    // NAT servers' replies are ours, by address.
    assert_eq!(t.nat_backends6, vec![a6("2001:db8::21"), a6("2001:db8::22")]);
    assert!(t.is_nat_backend6(a6("2001:db8::21")) && !t.is_nat_backend6(a6("2001:db8::11")));
    assert!(t.nat_backends.is_empty());
    // Maglev from the same builder: every slot owned, by weight.
    let n = shares(web);
    assert_eq!(n.values().sum::<usize>(), 251);
    let (i11, i12) = (
        id(&rt, "web6", "2001:db8::11", None),
        id(&rt, "web6", "2001:db8::12", None),
    );
    assert!(n[&i12] > 2 * n[&i11], "weight 3 vs 1: {n:?}");
    let mut members = web.members.clone();
    members.sort_unstable();
    let mut want = vec![i11, i12, id(&rt, "web6", "2001:db8::13", None)];
    want.sort_unstable();
    assert_eq!(members, want);
}

#[test]
fn the_directors_ipv6_facts() {
    let c = cfg(DUAL);
    let rt = synced(&c);
    let f = Facts::all(&c);
    let t = built(&c, &rt, &f, &mut MaglevCache::default()).table;
    assert_eq!(t.director_ip6, a6("2001:db8::2"));
    assert_eq!(t.onlink6, (a6("2001:db8::"), a6("ffff:ffff:ffff:ffff::")));
    // The router is resolved from what was seen when NDP has no entry.
    assert_eq!(t.gateway6_mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(
        t.neighbours6,
        vec![
            (a6("2001:db8::1"), [2, 0, 0, 0, 0, 1]),
            (a6("2001:db8::99"), [2, 0, 0, 0, 0, 0x99])
        ]
    );
    assert_eq!(t.next_hop_mac6(a6("2001:db8::99")), Some([2, 0, 0, 0, 0, 0x99]));
    assert_eq!(
        t.next_hop_mac6(a6("2001:db8:5::7")),
        Some([2, 0, 0, 0, 0, 1]),
        "off-link: the router"
    );
    // None of it: the table says so.
    let none = Facts {
        macs: f.macs.clone(),
        seen: vec![],
        address: None,
        gateway: None,
    };
    let t = built(&c, &rt, &none, &mut MaglevCache::default()).table;
    assert_eq!((t.director_ip6, t.gateway6_mac), (0, None));
    assert!(t.neighbours6.is_empty());
    assert_eq!(super::prefix(a6("2001:db8::2"), 0), (0, 0));
    assert_eq!(
        super::prefix(a6("2001:db8::2"), 128),
        (a6("2001:db8::2"), u128::MAX)
    );
}

#[test]
fn an_ipv4_only_config_has_no_ipv6_side() {
    let c = cfg(&DUAL[..DUAL.find("  - name: web6").unwrap()]);
    let rt = synced(&c);
    let t = built(&c, &rt, &Facts::all(&c), &mut MaglevCache::default()).table;
    assert!(t.services6.is_empty() && t.backends6.is_empty() && t.nat_backends6.is_empty());
    assert_eq!(t.services.len(), 1);
    // The IPv4 half is the same with or without IPv6 services beside it.
    let full = cfg(DUAL);
    let rt_full = synced(&full);
    let mut cache = MaglevCache::default();
    let b = built(&full, &rt_full, &Facts::all(&full), &mut cache);
    assert_eq!(b.table.services[0].maglev.slots(), t.services[0].maglev.slots());
    assert_eq!(
        b.digests["web4"],
        built(&c, &rt, &Facts::all(&c), &mut MaglevCache::default()).digests["web4"]
    );
    assert_eq!(b.digests.len(), 3, "a digest per service, both families");
}

#[test]
fn unresolved_down_and_drained_servers_own_no_slots() {
    let c = cfg(DUAL);
    let mut rt = synced(&c);
    let mut f = Facts::all(&c);
    let (i11, i12, i13) = (
        id(&rt, "web6", "2001:db8::11", None),
        id(&rt, "web6", "2001:db8::12", None),
        id(&rt, "web6", "2001:db8::13", None),
    );
    f.macs.remove(&a6("2001:db8::11"));
    rt.servers.values_mut().find(|s| s.id == i12).unwrap().health = Health::Down;
    let t = built(&c, &rt, &f, &mut MaglevCache::default()).table;
    let web = &t.services6[0];
    assert_eq!(shares(web).keys().copied().collect::<Vec<_>>(), vec![i13]);
    assert_eq!(t.backend(i11).mac, None);
    assert_eq!(t.backend(i12).state, BackendState::Down);
    rt.servers.values_mut().find(|s| s.id == i13).unwrap().drained = true;
    let t = built(&c, &rt, &f, &mut MaglevCache::default()).table;
    assert!(shares(&t.services6[0]).is_empty(), "nothing eligible: no server");
    assert_eq!(t.services6[0].pick(12345), None);
}

#[test]
fn tables_are_cached_and_digests_agree_across_directors() {
    let c = cfg(DUAL);
    let rt = synced(&c);
    let f = Facts::all(&c);
    let mut cache = MaglevCache::default();
    let first = built(&c, &rt, &f, &mut cache);
    assert_eq!((cache.builds, cache.v6.builds), (1, 2));
    let again = built(&c, &rt, &f, &mut cache);
    assert_eq!(
        (cache.builds, cache.v6.builds),
        (1, 2),
        "nothing changed: nothing rebuilt"
    );
    assert_eq!(first.digests, again.digests);
    // One server's MAC changes its service's table only.
    let mut f2 = Facts::all(&c);
    f2.macs.remove(&a6("2001:db8::21"));
    let third = built(&c, &rt, &f2, &mut cache);
    assert_eq!(cache.v6.builds, 3);
    assert_ne!(third.digests["api6"], first.digests["api6"]);
    assert_eq!(third.digests["web6"], first.digests["web6"]);
    // Another director with the servers listed in another order (other ids)
    // sends every slot to the same server: the same digest.
    let swapped = DUAL.replace(
        "      - address: 2001:db8::11\n      - address: 2001:db8::12\n        weight: 3\n",
        "      - address: 2001:db8::12\n        weight: 3\n      - address: 2001:db8::11\n",
    );
    let c2 = cfg(&swapped);
    let other = built(&c2, &synced(&c2), &Facts::all(&c2), &mut MaglevCache::default());
    assert_eq!(other.digests["web6"], first.digests["web6"]);
    // A removed service's cache entry goes.
    let c3 = cfg(&DUAL[..DUAL.find("  - name: api6").unwrap()]);
    let mut rt3 = rt.clone();
    rt3.sync(&c3).unwrap();
    built(&c3, &rt3, &f, &mut cache);
    assert_eq!(cache.v6.entries.len(), 1);
}

#[test]
fn a_removed_ipv6_server_keeps_its_flows() {
    let c = cfg(DUAL);
    let mut rt = synced(&c);
    let f = Facts::all(&c);
    let mut cache = MaglevCache::default();
    let published = built(&c, &rt, &f, &mut cache).table;
    let i13 = id(&rt, "web6", "2001:db8::13", None);
    let c2 = cfg(&DUAL.replace("      - address: 2001:db8::13\n", ""));
    rt.sync_at(&c2, Some(&published), Instant::now()).unwrap();
    let carried = &rt.removed[&i13];
    assert_eq!(carried.key.addr, ip("2001:db8::13"));
    assert_eq!(carried.fwd6.addr, a6("2001:db8::13"));
    let t = built(&c2, &rt, &f, &mut cache).table;
    assert_eq!(t.backend(i13).state, BackendState::Removed);
    assert_eq!(t.backend(i13).mac, Some(mac_of(a6("2001:db8::13"))));
    assert_eq!(t.backend6(i13).svc_vip, a6("2001:db8:100::1"));
    assert!(!t.services6[0].members.contains(&i13));
    // Without a MAC it had no flows to keep: carried as a plain removal.
    let mut rt = synced(&c);
    let mut f = Facts::all(&c);
    f.macs.clear();
    let published = built(&c, &rt, &f, &mut cache).table;
    rt.sync_at(&c2, Some(&published), Instant::now()).unwrap();
    assert_eq!(rt.removed[&i13].fwd6, Backend6::default());
}

#[test]
fn operators_name_ipv6_servers_in_any_spelling() {
    let c = cfg(DUAL);
    let mut rt = synced(&c);
    let i22 = id(&rt, "api6", "2001:db8::22", Some(8443));
    for name in ["[2001:db8::22]:8443", "2001:db8::22", "[2001:DB8::22]"] {
        assert_eq!(rt.find_mut(&c, "api6", name).unwrap().id, i22, "{name}");
    }
    assert!(rt.find_mut(&c, "api6", "[2001:db8::22]:80").is_err());
    assert!(
        rt.find_mut(&c, "web6", "2001:db8::22").is_err(),
        "another service's server"
    );
    rt.find_mut(&c, "web6", "2001:db8::11").unwrap().drained = true;
    let t = built(&c, &rt, &Facts::all(&c), &mut MaglevCache::default()).table;
    assert_eq!(
        t.backend(id(&rt, "web6", "2001:db8::11", None)).state,
        BackendState::Draining
    );
}

#[test]
fn build_table_dual_resolves_both_families() {
    let c = cfg(DUAL);
    let rt = synced(&c);
    let mac = |a: IpAddr| match a {
        IpAddr::V4(v) => Some([2, 0, 0, 0, 4, v.octets()[3]]),
        IpAddr::V6(v) => Some(mac_of(u128::from(v))),
    };
    let t = build_table_dual(&c, &rt, mac, [2; 6], (0xc612_0002, a6("2001:db8::2")), 9);
    assert_eq!(
        (t.generation, t.director_ip, t.director_ip6),
        (9, 0xc612_0002, a6("2001:db8::2"))
    );
    assert_eq!(
        t.backend(id(&rt, "web4", "198.18.0.11", None)).mac,
        Some([2, 0, 0, 0, 4, 11])
    );
    assert_eq!(
        t.backend(id(&rt, "web6", "2001:db8::12", None)).mac,
        Some([2, 0, 0, 0, 0, 0x12])
    );
    assert_eq!(shares(&t.services6[0]).values().sum::<usize>(), 251);
}

#[test]
fn host6_is_what_the_director_builds_from() {
    let mut h = Host6::default();
    assert_eq!(h.mac(a6("2001:db8::11")), None);
    h.neighbours.insert(a6("2001:db8::11"), [2, 0, 0, 0, 0, 0x11]);
    h.address = Some((a6("2001:db8::2"), 64));
    let lookup = |a: u128| h.mac(a);
    let i = h.inputs(&lookup);
    assert_eq!((i.resolved)(a6("2001:db8::11")), Some([2, 0, 0, 0, 0, 0x11]));
    assert_eq!(i.address, h.address);
    assert_eq!((Inputs6::NONE.resolved)(a6("2001:db8::11")), None);
}

/// A patched build (a drain) takes the director's IPv6 facts anew like a
/// full one, and a config with IPv6 services is always built whole (an IPv6
/// server has no IPv4 position to patch): both equal the full build.
#[test]
fn patched_builds_keep_the_ipv6_half() {
    use crate::control::publish::build_changed;
    let v4_only = cfg(&DUAL[..DUAL.find("  - name: web6").unwrap()]);
    for (patchable, c) in [(true, v4_only), (false, cfg(DUAL))] {
        let mut rt = synced(&c);
        let mut f = Facts::all(&c);
        let mut cache = MaglevCache::default();
        let prev = built(&c, &rt, &f, &mut cache).table;
        let id4 = id(&rt, "web4", "198.18.0.11", None);
        rt.find_mut(&c, "web4", "198.18.0.11").unwrap().drained = true;
        f.address = Some((a6("2001:db8::3"), 64));
        f.seen.push((a6("2001:db8::77"), [2, 0, 0, 0, 0, 0x77]));
        let resolved = |a: u32| Some([2, 0, 0, 0, 4, a as u8]);
        let resolved6 = |a: u128| f.macs.get(&a).copied();
        let seen = HashMap::new();
        let inputs = Inputs {
            cfg: &c,
            rt: &rt,
            resolved: &resolved,
            seen: &seen,
            gateway: None,
            iface: Iface::TEST,
            generation: 4,
            v6: Inputs6 {
                resolved: &resolved6,
                address: f.address,
                gateway: f.gateway,
                seen: &f.seen,
            },
        };
        let patched = build_changed(&inputs, &mut cache, &prev, &[id4]);
        assert_eq!(cache.incremental, u64::from(patchable));
        let full = build(&inputs, &mut MaglevCache::default());
        assert!(patched.table == full.table, "{c:?}");
        assert_eq!(patched.digests, full.digests);
        assert_eq!(patched.table.director_ip6, a6("2001:db8::3"));
        assert_eq!(patched.table.neighbours6.len(), 3);
        assert_eq!(patched.table.backend(id4).state, BackendState::Draining);
    }
}
