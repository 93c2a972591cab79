//! The forwarding table: an immutable snapshot of services, Maglev tables and
//! real servers, built on the slow path and published with one atomic pointer
//! swap. Workers load it once per batch and only read it.

use super::flow::{FlowKey, FlowKey6, Timeouts};
use super::maglev::{flow_hash, MaglevTable};

/// Stable identity of a real server within one director process. The slow
/// path reuses an id only once no flow refers to it any more, so a flow
/// pinned to an id can never silently follow a different server.
pub type BackendId = u32;

/// Size of the backend id space (counters are sized for it). Ids are reused
/// once no flow refers to them, so this bounds the servers configured at
/// once (plus removed ones whose flows linger), not over the process's life.
///
/// 2^18: 10,000 services of 20 servers (200,000 ids) with room for 62,000
/// removed servers whose flows linger. Each worker holds one
/// `BackendCounters` (56 bytes) and one last-established stamp (8 bytes) per
/// id: 16 MiB per worker (was 4 MiB at 65,536 ids).
pub const MAX_BACKEND_IDS: usize = 262_144;

/// Forwarding method of a service, as in LVS (the config's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Direct routing: rewrite the MACs only.
    Dr,
    /// Address/port translation; replies come back through the director.
    Nat,
    /// IP-in-IP to the server.
    Tun,
}

impl Mode {
    /// The spelling in the config, `ulvsadm list` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dr => "dr",
            Mode::Nat => "nat",
            Mode::Tun => "tun",
        }
    }
}

/// What the fast path may do with a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Takes new and existing flows.
    Up,
    /// Failed its health check: no new flows; existing ones follow the
    /// `on_server_down` policy.
    Down,
    /// Drained by the operator, or waiting for its first health check: no
    /// new flows, existing ones stay.
    Draining,
    /// Not in the configuration (any more): no new flows; flows pinned to it
    /// stay while the table still carries its MAC (the slow path keeps removed
    /// servers' last address and MAC), else they re-pick.
    Removed,
}

impl BackendState {
    /// Whether a flow pinned to a server in this state stays with it
    /// (`reschedule_on_down`: `on_server_down: reschedule`). A removed
    /// server keeps its flows while the table still knows its MAC (the
    /// caller checks). The worker and `ulvsadm trace` decide by this.
    #[inline]
    pub fn keeps_flows(self, reschedule_on_down: bool) -> bool {
        match self {
            BackendState::Up | BackendState::Draining | BackendState::Removed => true,
            BackendState::Down => !reschedule_on_down,
        }
    }

    /// The name `ulvsadm trace` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "draining",
            BackendState::Removed => "removed",
        }
    }
}

/// One real server as the fast path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendFwd {
    /// IPv4 address, host order.
    pub addr: u32,
    /// Destination port for NAT (0 = keep the client's destination port).
    pub port: u16,
    /// Resolved MAC; `None` means no flows can be sent to it.
    pub mac: Option<[u8; 6]>,
    pub state: BackendState,
    /// Its service's VIP and port (NAT replies are rewritten back to them).
    pub svc_vip: u32,
    pub svc_port: u16,
    /// Its service's forwarding method.
    pub mode: Mode,
}

impl BackendFwd {
    /// An unused id.
    pub const REMOVED: BackendFwd = BackendFwd {
        addr: 0,
        port: 0,
        mac: None,
        state: BackendState::Removed,
        svc_vip: 0,
        svc_port: 0,
        mode: Mode::Dr,
    };
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFwd {
    pub vip: u32,
    /// 0 = every port of the VIP.
    pub port: u16,
    /// IP protocol number (6 or 17).
    pub proto: u8,
    pub mode: Mode,
    /// Maglev lookup table: indices into `members`, or no server.
    pub maglev: MaglevTable,
    /// Backend ids of this service's real servers, sorted by (address, port).
    pub members: Vec<BackendId>,
    /// `scheduler: maglev-client`: the slot comes from the client address
    /// alone, so every connection of one client meets one server while the
    /// set is stable (IPVS persistence, without its per-client table).
    pub client_affinity: bool,
}

impl ServiceFwd {
    /// The hash that picks the Maglev slot of a new flow with key `k`
    /// (original direction): of the whole 5-tuple, or of the client address
    /// alone under client affinity. A pure function of the key, so every
    /// director (and `ulvsadm trace`) computes the same slot.
    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        if self.client_affinity {
            // A 4-byte input never collides in meaning with the 13-byte one.
            flow_hash(&k.src.to_be_bytes())
        } else {
            flow_hash(&key_bytes(k))
        }
    }

    /// The backend Maglev assigns to a flow hash, if any.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<(BackendId, u32)> {
        if self.maglev.is_empty() {
            return None;
        }
        let slot = (hash % self.maglev.len() as u64) as u32;
        self.pick_slot(slot).map(|id| (id, slot))
    }

    /// The backend in one Maglev slot.
    #[inline]
    pub fn pick_slot(&self, slot: u32) -> Option<BackendId> {
        let m = self.maglev.get(slot as usize)?;
        self.members.get(m.index()).copied()
    }
}

/// One IPv6 virtual service. Kept apart from [`ServiceFwd`] so the IPv4
/// lookups stay on 4-byte keys; its servers are ordinary [`BackendId`]s in
/// [`FwdTable::backends`] (state, MAC, counters shared with IPv4). Direct
/// routing only for now: the frame keeps its addresses and only the MACs
/// change, so a server's IPv6 address is not needed on the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFwd6 {
    /// The VIP, big-endian `u128`.
    pub vip: u128,
    /// 0 = every port of the VIP.
    pub port: u16,
    /// IP protocol number (6 or 17).
    pub proto: u8,
    /// Forwarding method (DR, NAT or TUN, as for IPv4).
    pub mode: Mode,
    /// Maglev lookup table: indices into `members`, or no server.
    pub maglev: MaglevTable,
    /// Backend ids of this service's real servers.
    pub members: Vec<BackendId>,
    /// As [`ServiceFwd::client_affinity`].
    pub client_affinity: bool,
}

/// The IPv6 side of one real server, indexed by [`BackendId`] like
/// [`FwdTable::backends`] (whose entry still holds its port, MAC, state and
/// mode; its IPv4 `addr`/`svc_vip` are 0). Kept apart so the IPv4
/// [`BackendFwd`] stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backend6 {
    /// The server's IPv6 address (big-endian `u128`; NAT destination, TUN
    /// outer destination).
    pub addr: u128,
    /// Its service's VIP (NAT replies are rewritten back to it).
    pub svc_vip: u128,
}

impl ServiceFwd6 {
    /// As [`ServiceFwd::hash`], over the IPv6 key (37 bytes, or the 16-byte
    /// client address under client affinity).
    #[inline]
    pub fn hash(&self, k: &FlowKey6) -> u64 {
        if self.client_affinity {
            flow_hash(&{ k.src }.to_be_bytes())
        } else {
            let mut b = [0u8; 37];
            b[0..16].copy_from_slice(&{ k.src }.to_be_bytes());
            b[16..32].copy_from_slice(&{ k.dst }.to_be_bytes());
            b[32..34].copy_from_slice(&{ k.sport }.to_be_bytes());
            b[34..36].copy_from_slice(&{ k.dport }.to_be_bytes());
            b[36] = k.proto;
            flow_hash(&b)
        }
    }

    /// The backend Maglev assigns to a flow hash, if any.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<BackendId> {
        if self.maglev.is_empty() {
            return None;
        }
        let m = self.maglev.get((hash % self.maglev.len() as u64) as usize)?;
        self.members.get(m.index()).copied()
    }
}

/// A flow key as the bytes [`ServiceFwd::hash`] hashes (network order).
#[inline]
fn key_bytes(k: &FlowKey) -> [u8; 13] {
    let mut b = [0u8; 13];
    b[0..4].copy_from_slice(&k.src.to_be_bytes());
    b[4..8].copy_from_slice(&k.dst.to_be_bytes());
    b[8..10].copy_from_slice(&k.sport.to_be_bytes());
    b[10..12].copy_from_slice(&k.dport.to_be_bytes());
    b[12] = k.proto;
    b
}

/// The whole snapshot. Comparable, so a table built incrementally can be
/// checked against a full build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwdTable {
    /// Increases with every publish.
    pub generation: u64,
    /// The director's own MAC: the source of every frame it sends.
    pub director_mac: [u8; 6],
    /// The director's IPv4 address on the segment (host order; 0 = none).
    pub director_ip: u32,
    /// Sorted by (vip, proto, port).
    pub services: Vec<ServiceFwd>,
    /// IPv6 services, sorted by (vip, proto, port). Empty: IPv6 frames are
    /// left to the kernel as before (`not_ipv4`).
    pub services6: Vec<ServiceFwd6>,
    /// Indexed by [`BackendId`].
    pub backends: Vec<BackendFwd>,
    /// `on_server_down: reschedule` (true) or `keep`.
    pub reschedule_on_down: bool,
    pub answer_ping: bool,
    pub timeouts: Timeouts,
    /// Interface MTU (TUN encapsulation must fit it).
    pub mtu: u32,
    /// Addresses of NAT real servers, sorted (their replies are ours).
    pub nat_backends: Vec<u32>,
    /// MAC of the default gateway (next hop toward clients), if resolved.
    pub gateway_mac: Option<[u8; 6]>,
    /// The interface's on-link prefix (network, mask), host order.
    pub onlink: (u32, u32),
    /// Known on-link neighbours (address, MAC), sorted by address.
    pub neighbours: Vec<(u32, [u8; 6])>,
    /// The director's IPv6 address on the segment (big-endian; 0 = none):
    /// source of TUN 6in6 outer headers and of ICMPv6 it originates.
    pub director_ip6: u128,
    /// Per [`BackendId`]: the IPv6 addresses of the server and its service.
    /// Empty when no IPv6 service is configured; else as long as `backends`.
    pub backends6: Vec<Backend6>,
    /// Addresses of IPv6 NAT real servers, sorted (their replies are ours).
    pub nat_backends6: Vec<u128>,
    /// MAC of the IPv6 default router (next hop toward IPv6 clients).
    pub gateway6_mac: Option<[u8; 6]>,
    /// The interface's on-link IPv6 prefix (network, mask), big-endian.
    pub onlink6: (u128, u128),
    /// Known on-link IPv6 neighbours (address, MAC), sorted by address.
    pub neighbours6: Vec<(u128, [u8; 6])>,
}

impl FwdTable {
    /// A table with no services.
    pub fn empty(director_mac: [u8; 6]) -> Self {
        FwdTable {
            generation: 0,
            director_mac,
            director_ip: 0,
            services: Vec::new(),
            services6: Vec::new(),
            backends: Vec::new(),
            reschedule_on_down: true,
            answer_ping: true,
            timeouts: Timeouts::default(),
            mtu: 1500,
            nat_backends: Vec::new(),
            gateway_mac: None,
            onlink: (0, u32::MAX),
            neighbours: Vec::new(),
            director_ip6: 0,
            backends6: Vec::new(),
            nat_backends6: Vec::new(),
            gateway6_mac: None,
            onlink6: (0, u128::MAX),
            neighbours6: Vec::new(),
        }
    }

    /// The IPv6 side of backend `id` (all zero when it has none).
    #[inline]
    pub fn backend6(&self, id: BackendId) -> Backend6 {
        self.backends6.get(id as usize).copied().unwrap_or_default()
    }

    /// True when `addr` is an IPv6 NAT real server's address.
    #[inline]
    pub fn is_nat_backend6(&self, addr: u128) -> bool {
        !self.nat_backends6.is_empty() && self.nat_backends6.binary_search(&addr).is_ok()
    }

    /// As [`FwdTable::next_hop_mac`] for an IPv6 destination.
    #[inline]
    pub fn next_hop_mac6(&self, dst: u128) -> Option<[u8; 6]> {
        let (net, mask) = self.onlink6;
        if mask != 0 && dst & mask == net {
            self.neighbours6
                .binary_search_by_key(&dst, |n| n.0)
                .ok()
                .map(|i| self.neighbours6[i].1)
        } else {
            self.gateway6_mac
        }
    }

    /// True when `addr` is a NAT real server's address.
    #[inline]
    pub fn is_nat_backend(&self, addr: u32) -> bool {
        !self.nat_backends.is_empty() && self.nat_backends.binary_search(&addr).is_ok()
    }

    /// The MAC to send a routed packet for `dst` to: the host itself when
    /// on-link, else the gateway.
    #[inline]
    pub fn next_hop_mac(&self, dst: u32) -> Option<[u8; 6]> {
        let (net, mask) = self.onlink;
        if mask != 0 && dst & mask == net {
            self.neighbours
                .binary_search_by_key(&dst, |n| n.0)
                .ok()
                .map(|i| self.neighbours[i].1)
        } else {
            self.gateway_mac
        }
    }

    /// Sort services for lookups; call after filling `services`.
    pub fn sort(&mut self) {
        self.services.sort_by_key(|s| (s.vip, s.proto, s.port));
        self.services6.sort_by_key(|s| (s.vip, s.proto, s.port));
    }

    /// True when `addr` is the VIP of some IPv6 service.
    #[inline]
    pub fn is_vip6(&self, addr: u128) -> bool {
        let i = self.services6.partition_point(|s| s.vip < addr);
        self.services6.get(i).is_some_and(|s| s.vip == addr)
    }

    /// Index into `services6` for (vip, proto, port): an exact port first,
    /// then an all-ports service.
    #[inline]
    pub fn find_service6(&self, vip: u128, proto: u8, port: u16) -> Option<usize> {
        let by = |s: &ServiceFwd6| (s.vip, s.proto, s.port);
        match self.services6.binary_search_by_key(&(vip, proto, port), by) {
            Ok(i) => Some(i),
            Err(_) => self.services6.binary_search_by_key(&(vip, proto, 0), by).ok(),
        }
    }

    /// True when `addr` is the VIP of some service.
    #[inline]
    pub fn is_vip(&self, addr: u32) -> bool {
        let i = self.services.partition_point(|s| s.vip < addr);
        self.services.get(i).is_some_and(|s| s.vip == addr)
    }

    /// Index of the service for (vip, proto, port): an exact port first, then
    /// an all-ports (port 0) service.
    #[inline]
    pub fn find_service(&self, vip: u32, proto: u8, port: u16) -> Option<usize> {
        let exact = self
            .services
            .binary_search_by_key(&(vip, proto, port), |s| (s.vip, s.proto, s.port));
        match exact {
            Ok(i) => Some(i),
            Err(_) => self
                .services
                .binary_search_by_key(&(vip, proto, 0), |s| (s.vip, s.proto, s.port))
                .ok(),
        }
    }

    /// The backend with id `id`.
    #[inline]
    pub fn backend(&self, id: BackendId) -> &BackendFwd {
        self.backends.get(id as usize).unwrap_or(&BackendFwd::REMOVED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::maglev::Member;

    fn svc(vip: u32, proto: u8, port: u16) -> ServiceFwd {
        ServiceFwd {
            vip,
            port,
            proto,
            mode: Mode::Dr,
            maglev: MaglevTable::from_slots(vec![Member::new(0), Member::new(1), Member::new(0)]),
            members: vec![7, 9],
            client_affinity: false,
        }
    }

    #[test]
    fn lookups() {
        let mut t = FwdTable::empty([2; 6]);
        t.services = vec![svc(10, 6, 80), svc(5, 17, 53), svc(10, 6, 0), svc(10, 17, 53)];
        t.sort();
        assert!(t.is_vip(10) && t.is_vip(5) && !t.is_vip(7) && !t.is_vip(11));
        let i = t.find_service(10, 6, 80).unwrap();
        assert_eq!(t.services[i].port, 80);
        let j = t.find_service(10, 6, 443).unwrap();
        assert_eq!(t.services[j].port, 0);
        assert!(t.find_service(5, 6, 53).is_none());
        assert_eq!(t.services[i].pick(4), Some((9, 1)));
        assert_eq!(t.backend(3).state, BackendState::Removed);
    }

    #[test]
    fn client_affinity_hashes_the_client_only() {
        let mut s = svc(1, 6, 80);
        let k = |src: u32, sport: u16| FlowKey {
            src,
            dst: 1,
            sport,
            dport: 80,
            proto: 6,
        };
        // Without affinity the source port moves the hash ...
        assert_ne!(s.hash(&k(7, 1000)), s.hash(&k(7, 1001)));
        s.client_affinity = true;
        // ... with it, only the client address does.
        assert_eq!(s.hash(&k(7, 1000)), s.hash(&k(7, 1001)));
        assert_eq!(
            s.hash(&k(7, 1000)),
            s.hash(&FlowKey {
                dport: 443,
                ..k(7, 5)
            })
        );
        assert_ne!(s.hash(&k(7, 1000)), s.hash(&k(8, 1000)));
    }

    #[test]
    fn no_server_is_none() {
        let mut s = svc(1, 6, 80);
        s.maglev = MaglevTable::from_slots(vec![None; 3]);
        assert_eq!(s.pick(0), None);
        s.maglev = MaglevTable::from_slots(vec![]);
        assert_eq!(s.pick(0), None);
    }
}
