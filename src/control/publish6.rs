//! The IPv6 half of a forwarding table (slow path): IPv6 services into
//! [`FwdTable::services6`], their servers' addresses into
//! [`FwdTable::backends6`], NAT servers into [`FwdTable::nat_backends6`], and
//! the director's IPv6 facts (address, on-link prefix, router, neighbours).
//!
//! [`super::publish::build`] builds the IPv4 half and calls [`add`] once, so
//! both halves come from one pure build of the same [`Inputs`] and are
//! published together. An IPv6 server is an ordinary backend id of the shared
//! [`Runtime`](super::publish::Runtime): its [`BackendFwd`] holds port, MAC,
//! state and mode as for IPv4 (with IPv4 `addr` and `svc_vip` 0), and its
//! [`Backend6`] the addresses. Maglev tables come from the same
//! [`maglev::build`] as IPv4's, keyed on the 16-byte address and the port,
//! and are cached per service like IPv4's.

use std::collections::HashMap;
use std::net::IpAddr;

use super::config::{Mode, Scheduler, Service};
use super::publish::{maglev_of, members_of, Inputs, MemberKey};
use crate::fwd::maglev::MaglevTable;
use crate::fwd::table::{Backend6, BackendFwd, BackendId, FwdTable, ServiceFwd6};
use crate::wire::ethernet::Mac;

/// The IPv6 facts a table is built from, beside the IPv4 ones of [`Inputs`].
/// Neighbour discovery (`control::ndp`) resolves the MACs; the interface's
/// IPv6 address, prefix and router come from netlink.
#[derive(Clone, Copy)]
pub struct Inputs6<'a> {
    /// The MAC of an IPv6 neighbour (a real server, the router), if resolved.
    pub resolved: &'a dyn Fn(u128) -> Option<Mac>,
    /// The director's IPv6 address on the segment and its prefix length.
    pub address: Option<(u128, u8)>,
    /// The IPv6 default router, next hop toward IPv6 clients.
    pub gateway: Option<u128>,
    /// On-link IPv6 neighbours seen on the segment (next hops for NAT
    /// replies), in any order.
    pub seen: &'a [(u128, Mac)],
}

fn unresolved(_: u128) -> Option<Mac> {
    None
}

impl Inputs6<'static> {
    /// No IPv6 facts: IPv6 servers have no MAC (they take no flows) and the
    /// director has no IPv6 address.
    pub const NONE: Inputs6<'static> = Inputs6 {
        resolved: &unresolved,
        address: None,
        gateway: None,
        seen: &[],
    };
}

/// The director's IPv6 host facts, kept by neighbour discovery
/// (`control::ndp`: the MACs) and netlink (address, router): what the
/// director builds its [`Inputs6`] from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host6 {
    /// The director's IPv6 address on the segment and its prefix length.
    pub address: Option<(u128, u8)>,
    /// The IPv6 default router.
    pub gateway: Option<u128>,
    /// Resolved IPv6 neighbours (real servers, the router): address -> MAC.
    pub neighbours: HashMap<u128, Mac>,
    /// Every on-link neighbour seen on the segment, in any order (next hops
    /// for NAT replies).
    pub seen: Vec<(u128, Mac)>,
}

impl Host6 {
    /// The MAC of IPv6 neighbour `a`, if resolved: the one lookup the IPv6
    /// build and `ulvsadm list` use.
    pub fn mac(&self, a: u128) -> Option<Mac> {
        self.neighbours.get(&a).copied()
    }

    /// These facts as build inputs, with `resolved` the MAC lookup.
    pub fn inputs<'a>(&'a self, resolved: &'a dyn Fn(u128) -> Option<Mac>) -> Inputs6<'a> {
        Inputs6 {
            resolved,
            address: self.address,
            gateway: self.gateway,
            seen: &self.seen,
        }
    }
}

/// One member of an IPv6 service's Maglev table as the build sees it.
type MemberKey6 = MemberKey<u128>;

struct Entry {
    m: u32,
    members: Vec<MemberKey6>,
    slots: MaglevTable,
    digest: u64,
}

/// Each IPv6 service's last Maglev table with the inputs it was built from
/// (the IPv6 part of [`super::publish::MaglevCache`]).
#[derive(Default)]
pub struct Cache6 {
    entries: HashMap<String, Entry>,
    /// Tables built since creation (the others were reused).
    pub builds: u64,
}

impl Cache6 {
    fn get(&mut self, service: &str, m: u32, members: &[MemberKey6]) -> (MaglevTable, u64) {
        if let Some(e) = self.entries.get(service) {
            if e.m == m && e.members == members {
                return (e.slots.clone(), e.digest);
            }
        }
        let (slots, digest) = maglev_of(m, members);
        self.builds += 1;
        self.entries.insert(
            service.to_string(),
            Entry {
                m,
                members: members.to_vec(),
                slots: slots.clone(),
                digest,
            },
        );
        (slots, digest)
    }
}

/// The big-endian `u128` of an IPv6 address, `None` for IPv4.
pub fn v6(ip: IpAddr) -> Option<u128> {
    match ip {
        IpAddr::V6(a) => Some(u128::from(a)),
        IpAddr::V4(_) => None,
    }
}

/// Whether the service is an IPv6 one (its VIP, and so its servers).
pub fn is_v6(s: &Service) -> bool {
    s.vip.is_ipv6()
}

/// The (network, mask) of an address and prefix length.
fn prefix(addr: u128, len: u8) -> (u128, u128) {
    let mask = match len {
        0 => 0,
        l if l >= 128 => u128::MAX,
        l => u128::MAX << (128 - u32::from(l)),
    };
    (addr & mask, mask)
}

/// The director's IPv6 facts into `t` (address, on-link prefix, router,
/// neighbours): cheap, so every build, full or patched, takes them anew.
pub fn globals(t: &mut FwdTable, inp: &Inputs<'_>) {
    let i6 = &inp.v6;
    (t.director_ip6, t.onlink6) = match i6.address {
        Some((addr, len)) => (addr, prefix(addr, len)),
        None => (0, (0, u128::MAX)),
    };
    let mut n: Vec<(u128, Mac)> = i6.seen.to_vec();
    n.sort_unstable();
    n.dedup_by_key(|e| e.0);
    t.gateway6_mac = i6
        .gateway
        .and_then(|g| (i6.resolved)(g).or_else(|| n.binary_search_by_key(&g, |e| e.0).ok().map(|i| n[i].1)));
    t.neighbours6 = n;
}

/// Add the IPv6 services of `inp.cfg` to `t`, whose `backends` the IPv4
/// build already sized for every id; the services' Maglev digests go into
/// `digests` by name, as IPv4's do.
pub fn add(inp: &Inputs<'_>, cache: &mut Cache6, t: &mut FwdTable, digests: &mut HashMap<String, u64>) {
    let (cfg, rt) = (inp.cfg, inp.rt);
    let i6 = &inp.v6;
    let carried6 = rt.removed.values().any(|c| c.fwd6.addr != 0);
    if !cfg.services.iter().any(is_v6) && !carried6 {
        cache.entries.clear();
        return;
    }
    t.backends6 = vec![Backend6::default(); t.backends.len()];
    for (id, c) in &rt.removed {
        if let Some(b) = t.backends6.get_mut(*id as usize) {
            *b = c.fwd6;
        }
    }
    let m = cfg.maglev_table_size;
    let mut servers: Vec<(MemberKey6, BackendId)> = Vec::new();
    for s in cfg.services.iter().filter(|s| is_v6(s)) {
        let Some(vip) = v6(s.vip) else { continue };
        let keys = members_of(rt, s, v6, i6.resolved, &mut servers, |k, id, mac, state| {
            let i = id as usize;
            t.backends[i] = BackendFwd {
                addr: 0,
                port: k.port,
                mac,
                state,
                svc_vip: 0,
                svc_port: s.port,
                mode: s.mode,
            };
            t.backends6[i] = Backend6 {
                addr: k.addr,
                svc_vip: vip,
            };
        });
        let (slots, digest) = cache.get(&s.name, m, &keys);
        digests.insert(s.name.clone(), digest);
        t.services6.push(ServiceFwd6 {
            vip,
            port: s.port,
            proto: s.protocol.ip_protocol(),
            mode: s.mode,
            maglev: slots,
            members: servers.iter().map(|(_, id)| *id).collect(),
            client_affinity: s.scheduler == Scheduler::MaglevClient,
        });
    }
    if cache.entries.len() > t.services6.len() {
        let names: std::collections::HashSet<&str> = cfg
            .services
            .iter()
            .filter(|s| is_v6(s))
            .map(|s| s.name.as_str())
            .collect();
        cache.entries.retain(|k, _| names.contains(k.as_str()));
    }
    t.nat_backends6 = cfg
        .services
        .iter()
        .filter(|s| s.mode == Mode::Nat)
        .flat_map(|s| s.real_servers.iter().filter_map(|r| v6(r.address)))
        .collect();
    t.nat_backends6.sort_unstable();
    t.nat_backends6.dedup();
}

/// Build a dual-stack table from the config, the runtime state and resolved
/// MACs alone (as [`super::publish::build_table`], with IPv6): for tests and
/// benchmarks. `director_ip6` 0 means none; its prefix is a /64.
pub fn build_table_dual(
    cfg: &super::config::Config,
    rt: &super::publish::Runtime,
    mac_of: impl Fn(IpAddr) -> Option<Mac>,
    director_mac: Mac,
    (director_ip, director_ip6): (u32, u128),
    generation: u64,
) -> FwdTable {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let resolved = |a: u32| mac_of(IpAddr::V4(Ipv4Addr::from(a)));
    let resolved6 = |a: u128| mac_of(IpAddr::V6(Ipv6Addr::from(a)));
    let seen = HashMap::new();
    let inp = Inputs {
        cfg,
        rt,
        resolved: &resolved,
        seen: &seen,
        gateway: None,
        iface: super::publish::Iface {
            mac: director_mac,
            ipv4: (director_ip != 0).then_some(director_ip),
            netmask: 0,
            mtu: 1500,
        },
        generation,
        v6: Inputs6 {
            resolved: &resolved6,
            address: (director_ip6 != 0).then_some((director_ip6, 64)),
            gateway: None,
            seen: &[],
        },
    };
    let mut t = super::publish::build(&inp, &mut super::publish::MaglevCache::default()).table;
    t.onlink = (0, u32::MAX);
    t
}

#[cfg(test)]
mod tests;
