//! Config + runtime state + neighbours + interface facts -> the forwarding
//! table (slow path).
//!
//! The runtime state of each real server (its backend id, health, operator
//! drain and weight overrides) lives in [`Runtime`], together with the servers
//! a reload removed whose flows may still exist. [`build`] is a pure function
//! of its [`Inputs`]: it builds a complete new [`FwdTable`] that the caller
//! publishes with one atomic swap. A [`MaglevCache`] keys Maglev tables by
//! what they are a function of (the members' endpoints and weights), so a
//! service whose inputs are unchanged reuses its table and services with the
//! same servers share one.
//!
//! [`build_changed`] is the same result for a runtime change of a few
//! servers (a drain, a weight, a health transition): it copies the table in
//! use and rebuilds only their services, so a drain at 10,000 services costs
//! one Maglev table and a copy, not 10,000 tables' worth of lookups. It
//! falls back to [`build`] whenever it cannot prove the table it is given is
//! the last one its cache built for the same servers and ids; a property
//! test checks it against a build from nothing, and debug builds compare
//! every incremental result with a full build.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use super::config::{Config, HealthKind, OnServerDown, RealServer, Scheduler, Service};
use super::publish6::{self, Cache6, Inputs6};
use crate::fwd::maglev::{self, MaglevInput, MaglevTable};
use crate::fwd::table::{
    Backend6, BackendFwd, BackendId, BackendState, FwdTable, Mode, ServiceFwd, MAX_BACKEND_IDS,
};
use crate::wire::ethernet::Mac;

/// Backend ids usable by servers (the last one is the counters' dummy sink).
pub const USABLE_BACKEND_IDS: usize = MAX_BACKEND_IDS - 1;

/// A removed server's id is reused only after this long, and only when no
/// flow refers to it: longer than the fragment table keeps a fragment's
/// server (30 s), and than any worker takes to load a newer table.
pub const RELEASE_AFTER: Duration = Duration::from_secs(60);

/// Identity of a real server across reloads: its service and endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerKey {
    pub service: String,
    pub addr: IpAddr,
    pub port: Option<u16>,
}

/// A server's key as borrowed parts, so that the runtime's maps are asked
/// without allocating the service name (a reload at 10,000 × 20 looks up
/// each of 200,000 servers several times). A [`ServerKey`] and its parts
/// hash and compare alike.
trait Keyed {
    fn parts(&self) -> (&str, IpAddr, Option<u16>);
}

impl Keyed for ServerKey {
    fn parts(&self) -> (&str, IpAddr, Option<u16>) {
        (&self.service, self.addr, self.port)
    }
}

impl Keyed for (&str, IpAddr, Option<u16>) {
    fn parts(&self) -> (&str, IpAddr, Option<u16>) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn Keyed + 'a> for ServerKey {
    fn borrow(&self) -> &(dyn Keyed + 'a) {
        self
    }
}

impl std::hash::Hash for dyn Keyed + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn Keyed + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Keyed + '_ {}

impl std::hash::Hash for ServerKey {
    /// As its parts (see [`Keyed`]): both must hash alike.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

/// The borrowed key of server `addr`/`port` of service `service`.
fn key_ref(service: &str, addr: IpAddr, port: Option<u16>) -> (&str, IpAddr, Option<u16>) {
    (service, addr, port)
}

/// Health as last decided by the damper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    /// Health-checked but no probe result yet: no new flows until the first
    /// result decides (a dead server added by a reload never gets traffic).
    Pending,
}

/// Runtime state of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRt {
    pub id: BackendId,
    pub health: Health,
    /// Set by `ulvsadm drain`, cleared by `enable`.
    pub drained: bool,
    /// Set by `ulvsadm weight`; kept across reloads unless the file changes
    /// that server's weight.
    pub weight_override: Option<u32>,
    /// The weight the file gave.
    pub config_weight: u32,
}

impl ServerRt {
    pub fn weight(&self) -> u32 {
        self.weight_override.unwrap_or(self.config_weight)
    }

    /// What the fast path may do with it. A server waiting for its first
    /// probe takes no new flows but keeps any it has (a server put back by a
    /// reload while its earlier flows still run gets its id, and them, back).
    pub fn state(&self) -> BackendState {
        match (self.health, self.drained) {
            (Health::Down, _) => BackendState::Down,
            (Health::Pending, _) | (Health::Up, true) => BackendState::Draining,
            (Health::Up, false) => BackendState::Up,
        }
    }
}

/// A server the config no longer has, kept while flows may still refer to
/// its id: they stay with it (as IPVS keeps connections to a deleted real
/// server) while Maglev never gives it new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub key: ServerKey,
    /// Its last entry in the published table, in state `Removed`; without a
    /// MAC when it had none (its flows then re-pick).
    pub fwd: BackendFwd,
    /// An IPv6 server's addresses (zero for IPv4).
    pub fwd6: Backend6,
    pub removed_at: Instant,
}

/// Errors of runtime operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("unknown service {0:?}")]
    UnknownService(String),
    #[error("service {service:?} has no real server {addr}")]
    UnknownServer { service: String, addr: String },
    #[error("weight {0} out of range 0..=65535")]
    BadWeight(u64),
    #[error(
        "the config has {configured} real servers and {carried} removed ones still have flows; \
         at most {USABLE_BACKEND_IDS} fit at once: retry once their flows have ended"
    )]
    IdsExhausted { configured: usize, carried: usize },
}

/// All real servers' runtime state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    pub servers: HashMap<ServerKey, ServerRt>,
    /// Removed servers whose ids are still taken, by id.
    pub removed: BTreeMap<BackendId, Carried>,
    /// The same, by key (a server put back gets its id again).
    removed_keys: HashMap<ServerKey, BackendId>,
    /// Ids free for reuse (lowest first).
    free: BTreeSet<BackendId>,
    next_id: BackendId,
    /// Names which ids the servers have: a fresh value (unique in the
    /// process) whenever [`Runtime::sync_at`] or [`Runtime::release`] may
    /// have changed an id, so [`build_changed`] can tell that the table it
    /// starts from has the same servers under the same ids.
    epoch: u64,
}

/// Source of [`Runtime`] epochs: unique across clones, so two runtimes
/// cloned from one and synced apart never share one.
static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_epoch() -> u64 {
    EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn key(service: &str, addr: IpAddr, port: Option<u16>) -> ServerKey {
    ServerKey {
        service: service.to_string(),
        addr,
        port,
    }
}

/// The port a service's health check probes on server `r`, or `None` when
/// the server is not checked (kind `none`, or no port to probe).
pub fn probe_port(s: &Service, r: &RealServer) -> Option<u16> {
    if s.health.kind == HealthKind::None {
        return None;
    }
    let port = s.health.port.or(r.port).unwrap_or(s.port);
    (port != 0).then_some(port)
}

impl Runtime {
    /// Bring the runtime in line with `cfg` (see [`Runtime::sync_at`]) with
    /// no previous table to carry removed servers from.
    ///
    /// # Errors
    /// The id space is exhausted (nothing is changed then).
    pub fn sync(&mut self, cfg: &Config) -> Result<(), RuntimeError> {
        self.sync_at(cfg, None, Instant::now())
    }

    /// Bring the runtime in line with `cfg`: new servers get an id (the id
    /// they had if they were removed and still carried, else the lowest free
    /// one) and start `Pending` when health-checked, else `Up`; remaining
    /// ones keep their id, health and drain (a weight override is dropped
    /// when the file changes that server's weight); removed ones are carried
    /// with their entry of `published` until [`Runtime::release`] frees them.
    /// `cfg` is a valid config: no service names a server twice.
    ///
    /// # Errors
    /// The id space is exhausted (nothing is changed then).
    pub fn sync_at(
        &mut self,
        cfg: &Config,
        published: Option<&FwdTable>,
        now: Instant,
    ) -> Result<(), RuntimeError> {
        let wanted = || {
            cfg.services
                .iter()
                .flat_map(|s| s.real_servers.iter().map(move |r| (s, r)))
        };
        // Check the id space first, so an error changes nothing. Servers
        // that stay are counted: when all of the runtime's stay (a valid
        // config names no server twice), none was removed.
        let (mut staying, mut needed, mut configured) = (0usize, 0usize, 0usize);
        for (s, r) in wanted() {
            let k = key_ref(&s.name, r.address, r.port);
            configured += 1;
            if self.servers.contains_key(&k as &dyn Keyed) {
                staying += 1;
            } else if !self.removed_keys.contains_key(&k as &dyn Keyed) {
                needed += 1;
            }
        }
        let available = self.free.len() + USABLE_BACKEND_IDS.saturating_sub(self.next_id as usize);
        if needed > available {
            return Err(RuntimeError::IdsExhausted {
                configured,
                carried: self.removed.len(),
            });
        }
        // The servers are updated in place (a reload that changes a few
        // servers of 200,000 neither rebuilds nor drops the map).
        if staying < self.servers.len() {
            let keep: std::collections::HashSet<(&str, IpAddr, Option<u16>)> = wanted()
                .map(|(s, r)| key_ref(&s.name, r.address, r.port))
                .collect();
            let gone: Vec<ServerKey> = self
                .servers
                .keys()
                .filter(|k| !keep.contains(&k.parts()))
                .cloned()
                .collect();
            for k in gone {
                let Some(gone) = self.servers.remove(&k) else {
                    continue;
                };
                self.carry(k, gone.id, published, now);
            }
        }
        for (s, r) in wanted() {
            let k = key_ref(&s.name, r.address, r.port);
            if let Some(old) = self.servers.get_mut(&k as &dyn Keyed) {
                if old.config_weight != r.weight {
                    old.weight_override = None;
                    old.config_weight = r.weight;
                }
                continue;
            }
            let id = match self.removed_keys.remove(&k as &dyn Keyed) {
                Some(id) => {
                    self.removed.remove(&id);
                    id
                }
                None => match self.free.pop_first() {
                    Some(id) => id,
                    None => {
                        self.next_id += 1;
                        self.next_id - 1
                    }
                },
            };
            let rt = ServerRt {
                id,
                health: if probe_port(s, r).is_some() {
                    Health::Pending
                } else {
                    Health::Up
                },
                drained: false,
                weight_override: None,
                config_weight: r.weight,
            };
            self.servers.insert(key(&s.name, r.address, r.port), rt);
        }
        self.epoch = next_epoch();
        Ok(())
    }

    /// Keep removed server `k` (id `id`) with its entry of `published`.
    fn carry(&mut self, k: ServerKey, id: BackendId, published: Option<&FwdTable>, now: Instant) {
        let last = published.map_or(BackendFwd::REMOVED, |t| *t.backend(id));
        let fwd6 = published.map_or_else(Backend6::default, |t| t.backend6(id));
        let fwd = if last.mac.is_some() && (last.addr != 0 || fwd6.addr != 0) {
            BackendFwd {
                state: BackendState::Removed,
                ..last
            }
        } else {
            BackendFwd::REMOVED
        };
        self.removed_keys.insert(k.clone(), id);
        self.removed.insert(
            id,
            Carried {
                key: k,
                fwd,
                fwd6: if fwd.mac.is_some() {
                    fwd6
                } else {
                    Backend6::default()
                },
                removed_at: now,
            },
        );
    }

    /// Free the ids of removed servers that were removed at least
    /// [`RELEASE_AFTER`] before `now` and that no flow refers to
    /// (`flows(id) == 0`); returns them.
    pub fn release(&mut self, now: Instant, flows: impl Fn(BackendId) -> u64) -> Vec<BackendId> {
        let done: Vec<BackendId> = self
            .removed
            .iter()
            .filter(|(id, c)| {
                now.saturating_duration_since(c.removed_at) >= RELEASE_AFTER && flows(**id) == 0
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &done {
            if let Some(c) = self.removed.remove(id) {
                self.removed_keys.remove(&c.key);
            }
            self.free.insert(*id);
        }
        if !done.is_empty() {
            self.epoch = next_epoch();
        }
        done
    }

    /// Ids in use: configured servers plus carried removed ones.
    pub fn ids_in_use(&self) -> usize {
        self.servers.len() + self.removed.len()
    }

    /// The server of `service` at `addr` (`IP`, `IP:PORT`, `[IPv6]:PORT`).
    ///
    /// # Errors
    /// Unknown service or server.
    pub fn find_mut(
        &mut self,
        cfg: &Config,
        service: &str,
        addr: &str,
    ) -> Result<&mut ServerRt, RuntimeError> {
        let svc = cfg
            .service(service)
            .ok_or_else(|| RuntimeError::UnknownService(service.to_string()))?;
        let unknown = || RuntimeError::UnknownServer {
            service: service.to_string(),
            addr: addr.to_string(),
        };
        let rs = svc
            .real_servers
            .iter()
            .find(|r| r.endpoint() == addr || r.is_named(addr))
            .ok_or_else(unknown)?;
        self.servers
            .get_mut(&key_ref(&svc.name, rs.address, rs.port) as &dyn Keyed)
            .ok_or_else(unknown)
    }

    /// Runtime state of one configured server.
    pub fn get(&self, service: &str, addr: IpAddr, port: Option<u16>) -> Option<&ServerRt> {
        self.servers.get(&key_ref(service, addr, port) as &dyn Keyed)
    }

    /// The same, to change: by key, where [`Runtime::find_mut`] searches
    /// the config by name (a reload touches every server of 10,000
    /// services, and that search is linear in the services).
    pub fn get_mut(&mut self, service: &str, addr: IpAddr, port: Option<u16>) -> Option<&mut ServerRt> {
        self.servers.get_mut(&key_ref(service, addr, port) as &dyn Keyed)
    }
}

/// What `ulvsadm list` shows as a server's state (a server waiting for its
/// first health check result takes no new flows: "down").
pub fn state_name(rt: &ServerRt) -> &'static str {
    match (rt.health, rt.drained) {
        (Health::Down | Health::Pending, _) => "down",
        (Health::Up, true) => "draining",
        (Health::Up, false) => "up",
    }
}

/// The director's interface as the table needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iface {
    pub mac: Mac,
    /// Its IPv4 address, host order.
    pub ipv4: Option<u32>,
    pub netmask: u32,
    pub mtu: u32,
}

impl Iface {
    /// The interface the build tests use: 198.18.0.2/24, MAC 02:02:02:02:02:02,
    /// MTU 1500.
    #[cfg(test)]
    pub(crate) const TEST: Iface = Iface {
        mac: [2; 6],
        ipv4: Some(0xc612_0002),
        netmask: 0xffff_ff00,
        mtu: 1500,
    };
}

/// Everything a forwarding table is built from.
pub struct Inputs<'a> {
    pub cfg: &'a Config,
    pub rt: &'a Runtime,
    /// MACs resolved by the director's own ARP requests (real servers, the
    /// gateway).
    pub resolved: &'a dyn Fn(u32) -> Option<Mac>,
    /// On-link neighbours seen on the segment (next hops for NAT replies).
    pub seen: &'a HashMap<u32, Mac>,
    /// The default gateway of the interface.
    pub gateway: Option<u32>,
    pub iface: Iface,
    pub generation: u64,
    /// The IPv6 facts ([`Inputs6::NONE`] without IPv6).
    pub v6: Inputs6<'a>,
}

/// One member of a service's Maglev table as the build sees it: the table
/// depends on exactly these, in this (sorted) order. `A` is the address:
/// `u32` for IPv4, a big-endian `u128` for IPv6 (`publish6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct MemberKey<A = u32> {
    pub(super) addr: A,
    pub(super) port: u16,
    /// Weight when eligible (up with a MAC), else 0.
    pub(super) weight: u32,
}

/// An address family as the Maglev build sees it: what a member's
/// permutation key is.
pub(super) trait MemberAddr: Copy + Ord {
    /// A member's key: its address, then its port, network order.
    type Key: AsRef<[u8]>;
    fn hash_key(self, port: u16) -> Self::Key;
}

impl MemberAddr for u32 {
    type Key = [u8; 6];
    fn hash_key(self, port: u16) -> [u8; 6] {
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&self.to_be_bytes());
        b[4..].copy_from_slice(&port.to_be_bytes());
        b
    }
}

impl MemberAddr for u128 {
    type Key = [u8; 18];
    fn hash_key(self, port: u16) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[..16].copy_from_slice(&self.to_be_bytes());
        b[16..].copy_from_slice(&port.to_be_bytes());
        b
    }
}

impl<A: MemberAddr> MemberKey<A> {
    fn hash_key(&self) -> A::Key {
        self.addr.hash_key(self.port)
    }
}

/// The Maglev table of size `m` for `members` (sorted) and its digest: the
/// build both families' caches call when they hold no table for them.
pub(super) fn maglev_of<A: MemberAddr>(m: u32, members: &[MemberKey<A>]) -> (MaglevTable, u64) {
    let inputs: Vec<MaglevInput> = members
        .iter()
        .map(|k| {
            let (offset, skip) = maglev::permutation(k.hash_key().as_ref(), m);
            MaglevInput {
                offset,
                skip,
                weight: k.weight,
            }
        })
        .collect();
    let slots = maglev::build(m, &inputs);
    let digest = digest(&slots, members);
    (slots, digest)
}

/// The members of service `s` in one family (`addr_of` picks its servers'
/// addresses, `resolved` their MACs), sorted, with their backend ids in
/// `servers` (scratch space); `row` is told each member's id, MAC and
/// state to fill its rows of the table. Returns the member keys, sorted.
pub(super) fn members_of<A: MemberAddr>(
    rt: &Runtime,
    s: &Service,
    addr_of: fn(IpAddr) -> Option<A>,
    resolved: &dyn Fn(A) -> Option<Mac>,
    servers: &mut Vec<(MemberKey<A>, BackendId)>,
    mut row: impl FnMut(&MemberKey<A>, BackendId, Option<Mac>, BackendState),
) -> Vec<MemberKey<A>> {
    servers.clear();
    for r in &s.real_servers {
        let Some(srt) = rt.get(&s.name, r.address, r.port) else {
            continue;
        };
        let Some(addr) = addr_of(r.address) else { continue };
        let mac = resolved(addr);
        let state = srt.state();
        let eligible = state == BackendState::Up && mac.is_some();
        let k = MemberKey {
            addr,
            port: r.port.unwrap_or(0),
            weight: if eligible { srt.weight() } else { 0 },
        };
        servers.push((k, srt.id));
        row(&k, srt.id, mac, state);
    }
    // The table depends on the servers, never on their order in the file.
    servers.sort_unstable();
    servers.iter().map(|(k, _)| *k).collect()
}

/// A built Maglev table and its digest, shared by every service whose
/// members are the same.
struct SharedTable {
    slots: MaglevTable,
    digest: u64,
    /// The last build (`MaglevCache::round`) that used it.
    used: u64,
}

/// Where the last build put each service and server, so that
/// [`build_changed`] can rebuild one service inside the table it made.
struct Last {
    /// The generation of that table.
    generation: u64,
    /// The runtime's epoch then: the same servers under the same ids.
    epoch: u64,
    /// `cfg.services` then (address, length): a guard against a build with
    /// another config and the same runtime.
    cfg: (usize, usize),
    /// Per backend id: the position in `FwdTable::services` of its service
    /// (`u32::MAX`: none, e.g. a removed server or an IPv6 one).
    position: Vec<u32>,
    /// Per position in `FwdTable::services`: its index in `cfg.services`.
    cfg_index: Vec<u32>,
    /// Per position: its Maglev table (so a table that is not the one this
    /// cache made is recognised).
    tables: Vec<MaglevTable>,
    digests: HashMap<String, u64>,
}

/// The Maglev tables of the last builds, keyed by what a table is a function
/// of (the members' endpoints and weights, for one table size): a service
/// whose inputs did not change reuses its table, and services with the same
/// servers and weights share one table in memory. Also where the last build
/// put every service, for [`build_changed`].
#[derive(Default)]
pub struct MaglevCache {
    /// The table size every entry was built for.
    m: u32,
    tables: HashMap<Vec<MemberKey>, SharedTable>,
    /// Tables built since creation (the others were reused).
    pub builds: u64,
    /// Builds done (a full build forgets tables it did not use).
    round: u64,
    /// Builds [`build_changed`] did incrementally (the others were full).
    pub incremental: u64,
    last: Option<Last>,
    /// The IPv6 services' tables.
    pub v6: Cache6,
}

impl MaglevCache {
    /// The slots and digest for `members` (sorted), built only when no
    /// service had these members before.
    fn get(&mut self, members: &[MemberKey]) -> (MaglevTable, u64) {
        let round = self.round;
        if let Some(e) = self.tables.get_mut(members) {
            e.used = round;
            return (e.slots.clone(), e.digest);
        }
        let (slots, digest) = maglev_of(self.m, members);
        self.builds += 1;
        self.tables.insert(
            members.to_vec(),
            SharedTable {
                slots: slots.clone(),
                digest,
                used: round,
            },
        );
        (slots, digest)
    }

    /// Distinct Maglev tables held (services with equal members share one).
    pub fn tables(&self) -> usize {
        self.tables.len()
    }

    /// Start a build for table size `m` (a new size invalidates every table).
    fn start(&mut self, m: u32) {
        if self.m != m {
            self.tables.clear();
            self.m = m;
        }
        self.round += 1;
    }
}

/// A stable hash of what a Maglev table maps each slot to: the table size,
/// then for every slot the (address, port) of its server, or nothing. Equal
/// exactly when two tables send every slot to the same server, whatever
/// ineligible members either side lists.
fn digest<A: MemberAddr>(table: &MaglevTable, members: &[MemberKey<A>]) -> u64 {
    /// Marks "no server" in the digest input (ranks are below 65535).
    const NONE: u16 = u16::MAX;
    let mut h = Xxh3::new();
    h.update(&(table.len() as u64).to_le_bytes());
    // Rank of each member among those that own slots (member order is sorted
    // by endpoint, so ranks are the same on every director).
    let mut rank = vec![NONE; members.len()];
    let mut owners = 0u16;
    for (i, k) in members.iter().enumerate() {
        if k.weight > 0 {
            rank[i] = owners;
            owners += 1;
            h.update(k.hash_key().as_ref());
        }
    }
    let mut buf = Vec::with_capacity(table.len() * 2);
    for s in table.slots() {
        let r = s.map_or(NONE, |m| rank[m.index()]);
        buf.extend_from_slice(&r.to_le_bytes());
    }
    h.update(&buf);
    h.digest()
}

/// The published table and, per service name, its Maglev table's digest.
pub struct Built {
    pub table: FwdTable,
    pub digests: HashMap<String, u64>,
}

/// The parts of the table that are not per service or per server: cheap,
/// so every build takes them anew.
fn globals(t: &mut FwdTable, inp: &Inputs<'_>) {
    let cfg = inp.cfg;
    t.director_mac = inp.iface.mac;
    t.generation = inp.generation;
    t.director_ip = inp.iface.ipv4.unwrap_or(0);
    t.reschedule_on_down = cfg.on_server_down == OnServerDown::Reschedule;
    t.answer_ping = cfg.answer_ping;
    t.timeouts = cfg.timeouts;
    t.mtu = inp.iface.mtu;
    t.gateway_mac = inp
        .gateway
        .and_then(|g| (inp.resolved)(g).or_else(|| inp.seen.get(&g).copied()));
    t.onlink = match inp.iface.ipv4 {
        Some(ip) => (ip & inp.iface.netmask, inp.iface.netmask),
        None => (0, u32::MAX),
    };
    let mut n: Vec<(u32, Mac)> = inp.seen.iter().map(|(a, m)| (*a, *m)).collect();
    n.sort_unstable();
    t.neighbours = n;
    publish6::globals(t, inp);
}

/// One service's entry and its servers' rows of `backends` (`servers` is
/// scratch space), with its Maglev table's digest.
fn service_fwd(
    inp: &Inputs<'_>,
    s: &Service,
    cache: &mut MaglevCache,
    backends: &mut [BackendFwd],
    servers: &mut Vec<(MemberKey, BackendId)>,
) -> (ServiceFwd, u64) {
    let keys = members_of(inp.rt, s, ipv4, inp.resolved, servers, |k, id, mac, state| {
        backends[id as usize] = BackendFwd {
            addr: k.addr,
            port: k.port,
            mac,
            state,
            svc_vip: v4(s.vip),
            svc_port: s.port,
            mode: s.mode,
        };
    });
    let (slots, digest) = cache.get(&keys);
    let fwd = ServiceFwd {
        vip: v4(s.vip),
        port: s.port,
        proto: s.protocol.ip_protocol(),
        mode: s.mode,
        maglev: slots,
        members: servers.iter().map(|(_, id)| *id).collect(),
        client_affinity: s.scheduler == Scheduler::MaglevClient,
    };
    (fwd, digest)
}

/// Build the forwarding table: a pure function of `inp` (the cache only
/// saves work: the result is the same with an empty one). Services whose
/// servers, weights and states are unchanged reuse their Maglev tables.
pub fn build(inp: &Inputs<'_>, cache: &mut MaglevCache) -> Built {
    let (cfg, rt) = (inp.cfg, inp.rt);
    cache.start(cfg.maglev_table_size);
    let mut t = FwdTable::empty(inp.iface.mac);
    globals(&mut t, inp);
    let max_id = rt
        .servers
        .values()
        .map(|s| s.id)
        .chain(rt.removed.keys().copied())
        .max()
        .map_or(0, |m| m as usize + 1);
    t.backends = vec![BackendFwd::REMOVED; max_id];
    for (id, c) in &rt.removed {
        t.backends[*id as usize] = c.fwd;
    }
    let mut digests = HashMap::with_capacity(cfg.services.len());
    let mut servers: Vec<(MemberKey, BackendId)> = Vec::new();
    // IPv4 services here, IPv6 ones in `services6` (publish6).
    let mut built: Vec<(u32, ServiceFwd)> = Vec::with_capacity(cfg.services.len());
    for (i, s) in cfg
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| !publish6::is_v6(s))
    {
        let (fwd, digest) = service_fwd(inp, s, cache, &mut t.backends, &mut servers);
        digests.insert(s.name.clone(), digest);
        built.push((i as u32, fwd));
    }
    // Lookups want the services sorted; remember where each one went.
    let mut order: Vec<usize> = (0..built.len()).collect();
    order.sort_by_key(|&k| {
        let s = &built[k].1;
        (s.vip, s.proto, s.port)
    });
    let cfg_index: Vec<u32> = order.iter().map(|&k| built[k].0).collect();
    let mut slots: Vec<Option<ServiceFwd>> = built.into_iter().map(|(_, f)| Some(f)).collect();
    t.services = order.iter().filter_map(|&k| slots[k].take()).collect();
    let mut position = vec![u32::MAX; max_id];
    for (p, s) in t.services.iter().enumerate() {
        for &id in &s.members {
            position[id as usize] = p as u32;
        }
    }
    // Tables no service uses any more go.
    let round = cache.round;
    cache.tables.retain(|_, e| e.used == round);
    publish6::add(inp, &mut cache.v6, &mut t, &mut digests);
    t.nat_backends = cfg
        .services
        .iter()
        .filter(|s| s.mode == Mode::Nat)
        .flat_map(|s| s.real_servers.iter().filter_map(|r| ipv4(r.address)))
        .collect();
    t.nat_backends.sort_unstable();
    t.nat_backends.dedup();
    t.sort();
    cache.last = Some(Last {
        generation: t.generation,
        epoch: rt.epoch,
        cfg: (cfg.services.as_ptr() as usize, cfg.services.len()),
        position,
        cfg_index,
        tables: t.services.iter().map(|s| s.maglev.clone()).collect(),
        digests: digests.clone(),
    });
    Built { table: t, digests }
}

/// The table [`build`] would give, made from `prev` by rebuilding only the
/// services of the servers in `changed`: what a drain, an enable, a weight
/// or a health change needs (one Maglev table, not 10,000).
///
/// `prev` must be the table the last build with `cache` made, and since
/// then only the runtime state (health, drain, weight) of the servers in
/// `changed` may have changed; the interface facts, the gateway and the
/// seen neighbours are taken anew. A changed config, id or server MAC needs
/// [`build`]. When it cannot tell that `prev` is that table (another
/// generation or runtime epoch, another config, a server of no IPv4
/// service, or most services changed) it does the full build, so the
/// result is the same either way.
pub fn build_changed(
    inp: &Inputs<'_>,
    cache: &mut MaglevCache,
    prev: &FwdTable,
    changed: &[BackendId],
) -> Built {
    let n = inp.cfg.services.len();
    let positions: Option<Vec<u32>> = cache.last.as_ref().and_then(|last| {
        let fits = last.generation == prev.generation
            && last.epoch == inp.rt.epoch
            && last.cfg == (inp.cfg.services.as_ptr() as usize, n)
            && cache.m == inp.cfg.maglev_table_size
            && prev.services.len() == n
            && last.tables.len() == n
            && prev.backends.len() == last.position.len()
            // Tables left by earlier drains are only forgotten by a full build.
            && cache.tables.len() <= 2 * n + 1024
            && prev
                .services
                .iter()
                .zip(&last.tables)
                .all(|(s, t)| s.maglev.same(t));
        if !fits {
            return None;
        }
        let mut p: Vec<u32> = changed
            .iter()
            .map(|&id| last.position.get(id as usize).copied().unwrap_or(u32::MAX))
            .collect();
        p.sort_unstable();
        p.dedup();
        (p.last() != Some(&u32::MAX) && p.len() <= n / 4 + 1).then_some(p)
    });
    let Some(positions) = positions else {
        return build(inp, cache);
    };
    let Some(mut last) = cache.last.take() else {
        return build(inp, cache);
    };
    cache.start(inp.cfg.maglev_table_size);
    let mut t = prev.clone();
    globals(&mut t, inp);
    let mut servers = Vec::new();
    for p in positions {
        let p = p as usize;
        let s = &inp.cfg.services[last.cfg_index[p] as usize];
        let (fwd, digest) = service_fwd(inp, s, cache, &mut t.backends, &mut servers);
        last.tables[p] = fwd.maglev.clone();
        t.services[p] = fwd;
        last.digests.insert(s.name.clone(), digest);
    }
    last.generation = t.generation;
    cache.incremental += 1;
    let digests = last.digests.clone();
    cache.last = Some(last);
    let built = Built { table: t, digests };
    #[cfg(debug_assertions)]
    {
        let full = build(inp, &mut MaglevCache::default());
        debug_assert!(
            full.table == built.table && full.digests == built.digests,
            "build_changed differs from a full build"
        );
    }
    built
}

/// The host-order `u32` of an IPv4 address, `None` for IPv6.
pub fn ipv4(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => Some(u32::from(a)),
        IpAddr::V6(_) => None,
    }
}

/// An IPv4 service's VIP as the table holds it (0 for IPv6, whose VIP lives
/// in `services6`).
fn v4(ip: IpAddr) -> u32 {
    ipv4(ip).unwrap_or(0)
}

/// Build a table from the config, the runtime state and resolved MACs alone
/// (no gateway, no seen neighbours, MTU 1500), without a cache: for tests
/// and benchmarks.
pub fn build_table(
    cfg: &Config,
    rt: &Runtime,
    mac_of: impl Fn(Ipv4Addr) -> Option<[u8; 6]>,
    director_mac: [u8; 6],
    director_ip: u32,
    generation: u64,
) -> FwdTable {
    let resolved = |a: u32| mac_of(Ipv4Addr::from(a));
    let seen = HashMap::new();
    let inp = Inputs {
        cfg,
        rt,
        resolved: &resolved,
        seen: &seen,
        gateway: None,
        iface: Iface {
            mac: director_mac,
            ipv4: (director_ip != 0).then_some(director_ip),
            netmask: 0,
            mtu: 1500,
        },
        generation,
        v6: Inputs6::NONE,
    };
    let mut t = build(&inp, &mut MaglevCache::default()).table;
    // As before interface facts were part of the build: no on-link prefix.
    t.onlink = (0, u32::MAX);
    t
}

/// Whether a service's servers are health-checked at all.
pub fn is_checked(kind: HealthKind) -> bool {
    kind != HealthKind::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_str(text, "t.yaml").unwrap()
    }

    const BASE: &str = "interface: eth0\nmaglev_table_size: 251\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n      - address: 198.18.0.13\n";

    fn mac(a: Ipv4Addr) -> Option<[u8; 6]> {
        let o = a.octets();
        Some([2, 0, 0, 0, 0, o[3]])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn built(c: &Config, rt: &Runtime, cache: &mut MaglevCache) -> Built {
        let resolved = |a: u32| mac(Ipv4Addr::from(a));
        let seen = HashMap::from([
            (0xc612_0001, [2, 0, 0, 0, 0, 1]),
            (0xc612_0063, [2, 0, 0, 0, 0, 99]),
        ]);
        let inputs = Inputs {
            cfg: c,
            rt,
            resolved: &resolved,
            seen: &seen,
            gateway: Some(0xc612_0001),
            iface: Iface {
                mac: [2; 6],
                ipv4: Some(0xc612_0002),
                netmask: 0xffff_ff00,
                mtu: 9000,
            },
            generation: 5,
            v6: Inputs6::NONE,
        };
        build(&inputs, cache)
    }

    #[test]
    fn ids_are_stable_across_reloads() {
        let mut rt = Runtime::default();
        let c1 = cfg(BASE);
        rt.sync(&c1).unwrap();
        let id12 = rt.get("web", ip("198.18.0.12"), None).unwrap().id;
        let id13 = rt.get("web", ip("198.18.0.13"), None).unwrap().id;
        let c2 = cfg(&BASE.replace("      - address: 198.18.0.13\n", "      - address: 198.18.0.14\n"));
        rt.sync(&c2).unwrap();
        assert_eq!(rt.get("web", ip("198.18.0.12"), None).unwrap().id, id12);
        let id14 = rt.get("web", ip("198.18.0.14"), None).unwrap().id;
        assert_ne!(id14, id13, "the removed server's id is still carried");
        assert!(rt.get("web", ip("198.18.0.13"), None).is_none());
        assert_eq!(rt.removed[&id13].key.addr, ip("198.18.0.13"));
        // Put back before its flows ended: it gets its id (and flows) back.
        rt.sync(&c1).unwrap();
        assert_eq!(rt.get("web", ip("198.18.0.13"), None).unwrap().id, id13);
        assert!(rt.removed.contains_key(&id14) && !rt.removed.contains_key(&id13));
    }

    #[test]
    fn removed_ids_are_reused_only_once_their_flows_are_gone() {
        let mut rt = Runtime::default();
        let t0 = Instant::now();
        rt.sync_at(&cfg(BASE), None, t0).unwrap();
        let id13 = rt.get("web", ip("198.18.0.13"), None).unwrap().id;
        let c2 = cfg(&BASE.replace("      - address: 198.18.0.13\n", ""));
        rt.sync_at(&c2, None, t0).unwrap();
        let flows = |id: BackendId| u64::from(id == id13);
        assert!(
            rt.release(t0 + RELEASE_AFTER * 2, flows).is_empty(),
            "it still has a flow"
        );
        assert!(rt.release(t0 + RELEASE_AFTER / 2, |_| 0).is_empty(), "too soon");
        assert_eq!(rt.release(t0 + RELEASE_AFTER, |_| 0), vec![id13]);
        assert!(rt.removed.is_empty());
        let c3 = cfg(&BASE.replace("198.18.0.13", "198.18.0.15"));
        rt.sync_at(&c3, None, t0 + RELEASE_AFTER).unwrap();
        assert_eq!(rt.get("web", ip("198.18.0.15"), None).unwrap().id, id13, "reused");
    }

    /// 1,000 services of 20 servers each, then 100 reloads that each change
    /// every address: with ids released once flows are gone, the id space
    /// never runs out and ids stay below two configs' worth.
    #[test]
    fn thousand_services_of_twenty_and_a_hundred_address_changes() {
        // Address set k (0..4) of 20,000 servers; sets are disjoint. Built
        // from one parsed service (parsing 20,000 servers is slow in debug).
        let one = cfg(BASE);
        let big = |k: u32| {
            let mut c = one.clone();
            let (svc, rs) = (one.services[0].clone(), one.services[0].real_servers[0].clone());
            c.services = (0..1000u32)
                .map(|s| Service {
                    name: format!("s{s}"),
                    vip: IpAddr::V4(Ipv4Addr::new(198, 18, (250 + s / 250) as u8, (s % 250 + 1) as u8)),
                    real_servers: (0..20u32)
                        .map(|r| {
                            let n = k * 20_000 + s * 20 + r;
                            let a = n / 250;
                            RealServer {
                                address: IpAddr::V4(Ipv4Addr::new(
                                    198,
                                    if a < 256 { 19 } else { 18 },
                                    a as u8,
                                    (n % 250 + 1) as u8,
                                )),
                                ..rs.clone()
                            }
                        })
                        .collect(),
                    ..svc.clone()
                })
                .collect();
            c
        };
        let configs: Vec<Config> = (0..4).map(big).collect();
        let mut rt = Runtime::default();
        let mut now = Instant::now();
        rt.sync_at(&configs[0], None, now).unwrap();
        assert_eq!(rt.servers.len(), 20_000);
        for round in 1..=100 {
            let before: std::collections::HashSet<BackendId> = rt.servers.values().map(|s| s.id).collect();
            // Round r uses set r % 3: every address differs from the round before.
            rt.sync_at(&configs[round % 3], None, now)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(rt.servers.len(), 20_000);
            assert_eq!(
                rt.removed.len(),
                20_000,
                "round {round}: every old server carried"
            );
            assert!(rt.removed.keys().all(|id| before.contains(id)));
            // No live server shares an id with a carried one.
            assert!(rt.servers.values().all(|s| !rt.removed.contains_key(&s.id)));
            now += RELEASE_AFTER;
            assert_eq!(rt.release(now, |_| 0).len(), 20_000);
        }
        let max = rt.servers.values().map(|s| s.id).max().unwrap();
        assert!((max as usize) < 40_000, "{max}");
        // While flows pin the old servers (40,000 ids), a config whose new
        // servers need more than the ids left is refused with a reason and
        // changes nothing: the fourth set under as many service names as
        // it takes to exceed the id space.
        let mut stuck = rt.clone();
        stuck.sync_at(&configs[2], None, now).unwrap();
        stuck.sync_at(&configs[0], None, now).unwrap();
        let held = stuck.clone();
        let copies = (USABLE_BACKEND_IDS - 60_000) / 20_000 + 1;
        let mut too_many = configs[3].clone();
        too_many.services = (0..copies)
            .flat_map(|k| {
                configs[3].services.iter().map(move |s| Service {
                    name: format!("{}_{k}", s.name),
                    ..s.clone()
                })
            })
            .collect();
        let e = stuck.sync_at(&too_many, None, now).unwrap_err();
        assert!(e.to_string().contains("removed ones still have flows"), "{e}");
        assert_eq!(stuck, held);
    }

    #[test]
    fn drain_and_weight_survive_reload_unless_file_changes_them() {
        let mut rt = Runtime::default();
        let c1 = cfg(BASE);
        rt.sync(&c1).unwrap();
        rt.find_mut(&c1, "web", "198.18.0.11").unwrap().drained = true;
        rt.find_mut(&c1, "web", "198.18.0.12").unwrap().weight_override = Some(5);
        rt.find_mut(&c1, "web", "198.18.0.13").unwrap().weight_override = Some(7);
        let c2 = cfg(&BASE.replace(
            "      - address: 198.18.0.13\n",
            "      - address: 198.18.0.13\n        weight: 2\n",
        ));
        rt.sync(&c2).unwrap();
        assert!(rt.find_mut(&c2, "web", "198.18.0.11").unwrap().drained);
        assert_eq!(rt.find_mut(&c2, "web", "198.18.0.12").unwrap().weight(), 5);
        assert_eq!(rt.find_mut(&c2, "web", "198.18.0.13").unwrap().weight(), 2);
        assert_eq!(
            rt.find_mut(&c2, "nope", "1.2.3.4").unwrap_err(),
            RuntimeError::UnknownService("nope".into())
        );
        assert!(matches!(
            rt.find_mut(&c2, "web", "198.18.0.99"),
            Err(RuntimeError::UnknownServer { .. })
        ));
    }

    #[test]
    fn table_excludes_ineligible_servers() {
        let mut rt = Runtime::default();
        let c = cfg(BASE);
        rt.sync(&c).unwrap();
        rt.find_mut(&c, "web", "198.18.0.11").unwrap().drained = true;
        rt.find_mut(&c, "web", "198.18.0.12").unwrap().health = Health::Down;
        let no13 = |a: Ipv4Addr| if a.octets()[3] == 13 { None } else { mac(a) };
        let t = build_table(&c, &rt, no13, [2; 6], 0, 3);
        assert_eq!(t.generation, 3);
        let s = &t.services[0];
        assert_eq!(s.maglev.len(), 251);
        assert!(s.maglev.slots().iter().all(Option::is_none));
        let t = build_table(&c, &rt, mac, [2; 6], 0, 4);
        let s = &t.services[0];
        // only .13 is eligible now
        let id13 = rt.get("web", ip("198.18.0.13"), None).unwrap().id;
        assert!(s
            .maglev
            .slots()
            .iter()
            .all(|e| s.members[e.unwrap().index()] == id13));
        let id11 = rt.get("web", ip("198.18.0.11"), None).unwrap().id;
        assert_eq!(t.backend(id11).state, BackendState::Draining);
    }

    #[test]
    fn a_checked_server_waits_for_its_first_result() {
        let c = cfg(&BASE.replace(
            "    real_servers:",
            "    health:\n      kind: tcp\n    real_servers:",
        ));
        let mut rt = Runtime::default();
        rt.sync(&c).unwrap();
        assert!(rt.servers.values().all(|s| s.health == Health::Pending));
        let t = build_table(&c, &rt, mac, [2; 6], 0, 1);
        assert!(
            t.services[0].maglev.slots().iter().all(Option::is_none),
            "no new flows while pending"
        );
        let s11 = rt.find_mut(&c, "web", "198.18.0.11").unwrap();
        assert_eq!(state_name(s11), "down");
        // Flows it may have (a server put back while its old flows run) stay.
        assert_eq!(t.backend(s11.id).state, BackendState::Draining);
        s11.health = Health::Up;
        let id11 = s11.id;
        let t = build_table(&c, &rt, mac, [2; 6], 0, 2);
        assert!(t.services[0]
            .maglev
            .slots()
            .iter()
            .all(|e| t.services[0].members[e.unwrap().index()] == id11));
        // Unchecked services' servers start up.
        let mut rt = Runtime::default();
        rt.sync(&cfg(BASE)).unwrap();
        assert!(rt.servers.values().all(|s| s.health == Health::Up));
    }

    #[test]
    fn removed_servers_are_carried_for_their_flows() {
        let mut rt = Runtime::default();
        let c1 = cfg(BASE);
        rt.sync(&c1).unwrap();
        let old = build_table(&c1, &rt, mac, [2; 6], 0, 1);
        let id13 = rt.get("web", ip("198.18.0.13"), None).unwrap().id;
        let c2 = cfg(&BASE.replace("      - address: 198.18.0.13\n", ""));
        rt.sync_at(&c2, Some(&old), Instant::now()).unwrap();
        let new = build_table(&c2, &rt, mac, [2; 6], 0, 2);
        let b = new.backend(id13);
        assert_eq!(
            (b.state, b.addr, b.mac),
            (BackendState::Removed, 0xc612_000d, Some([2, 0, 0, 0, 0, 13]))
        );
        // Maglev never picks it.
        let s = &new.services[0];
        assert!(s
            .maglev
            .slots()
            .iter()
            .all(|e| e.is_none_or(|m| s.members[m.index()] != id13)));
    }

    #[test]
    fn equal_servers_share_the_table() {
        let mut rt = Runtime::default();
        let c = cfg(BASE);
        rt.sync(&c).unwrap();
        let t = build_table(&c, &rt, mac, [2; 6], 0, 1);
        let mut counts = [0usize; 3];
        for e in t.services[0].maglev.slots() {
            counts[e.unwrap().index()] += 1;
        }
        assert!(counts.iter().all(|&n| (83..=84).contains(&n)), "{counts:?}");
    }

    #[test]
    fn the_interface_facts_are_part_of_the_build() {
        let mut rt = Runtime::default();
        let c = cfg(BASE);
        rt.sync(&c).unwrap();
        let t = built(&c, &rt, &mut MaglevCache::default()).table;
        assert_eq!((t.mtu, t.generation, t.director_ip), (9000, 5, 0xc612_0002));
        assert_eq!(t.onlink, (0xc612_0000, 0xffff_ff00));
        assert_eq!(t.gateway_mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            t.neighbours,
            vec![
                (0xc612_0001, [2, 0, 0, 0, 0, 1]),
                (0xc612_0063, [2, 0, 0, 0, 0, 99])
            ]
        );
        assert_eq!(t.next_hop_mac(0xc612_0063), Some([2, 0, 0, 0, 0, 99]));
    }

    /// The same servers listed in another order build byte-identical tables
    /// (and equal digests); a different weight does not.
    #[test]
    fn file_order_does_not_matter() {
        let text = |order: [&str; 3], w: u32| {
            let mut y = String::from("interface: eth0\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    mode: nat\n    real_servers:\n");
            for a in order {
                y.push_str(&format!(
                    "      - address: {a}\n        weight: {}\n",
                    if a.ends_with(":81") { w } else { 1 }
                ));
            }
            cfg(&y)
        };
        let servers = ["198.18.0.11:80", "198.18.0.12:8080", "198.18.0.11:81"];
        let reversed = [servers[2], servers[1], servers[0]];
        let one = |c: &Config| {
            let mut rt = Runtime::default();
            rt.sync(c).unwrap();
            let b = built(c, &rt, &mut MaglevCache::default());
            let s = &b.table.services[0];
            let endpoints: Vec<(u32, u16)> = s
                .members
                .iter()
                .map(|&id| (b.table.backend(id).addr, b.table.backend(id).port))
                .collect();
            (s.maglev.slots().to_vec(), endpoints, b.digests["web"])
        };
        let (a, ea, da) = one(&text(servers, 2));
        let (b, eb, db) = one(&text(reversed, 2));
        assert_eq!(a.len(), 65537);
        assert!(a == b, "byte-identical slots");
        assert_eq!(ea, eb);
        assert_eq!(da, db);
        let (c, _, dc) = one(&text(servers, 3));
        assert!(a != c);
        assert_ne!(da, dc);
    }

    /// A drain rebuilds its service's table only; an ARP answer or a
    /// generation bump rebuilds none.
    #[test]
    fn publishing_rebuilds_only_what_changed() {
        let mut y = String::from("interface: eth0\nmaglev_table_size: 251\nservices:\n");
        for s in 0..50 {
            y.push_str(&format!(
                "  - name: s{s}\n    vip: 198.18.100.{}\n    port: 80\n    real_servers:\n      - address: 198.18.1.{}\n      - address: 198.18.2.{}\n",
                s + 1,
                s + 1,
                s + 1
            ));
        }
        let c = cfg(&y);
        let mut rt = Runtime::default();
        rt.sync(&c).unwrap();
        let mut cache = MaglevCache::default();
        let first = built(&c, &rt, &mut cache);
        assert_eq!(cache.builds, 50);
        let again = built(&c, &rt, &mut cache);
        assert_eq!(cache.builds, 50, "nothing changed");
        assert!(first
            .table
            .services
            .iter()
            .zip(&again.table.services)
            .all(|(a, b)| a.maglev.same(&b.maglev)));
        rt.find_mut(&c, "s7", "198.18.1.8").unwrap().drained = true;
        let drained = built(&c, &rt, &mut cache);
        assert_eq!(cache.builds, 51, "one service rebuilt");
        let fresh = built(&c, &rt, &mut MaglevCache::default());
        for (a, b) in drained.table.services.iter().zip(&fresh.table.services) {
            assert!(a.maglev == b.maglev, "the cache changes no result");
        }
        assert_eq!(drained.digests, fresh.digests);
        assert_ne!(drained.digests["s7"], first.digests["s7"]);
        assert_eq!(drained.digests["s8"], first.digests["s8"]);
    }

    /// Services with the same servers and weights share one table in
    /// memory; a drain in one of them gives it its own and leaves the
    /// others sharing.
    #[test]
    fn identical_server_sets_share_one_table() {
        let mut y = String::from("interface: eth0\nmaglev_table_size: 251\nservices:\n");
        for s in 0..10 {
            y.push_str(&format!(
                "  - name: s{s}\n    vip: 198.18.100.{}\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n",
                s + 1
            ));
        }
        let c = cfg(&y);
        let mut rt = Runtime::default();
        rt.sync(&c).unwrap();
        let mut cache = MaglevCache::default();
        let b = built(&c, &rt, &mut cache);
        assert_eq!((cache.builds, cache.tables()), (1, 1));
        let s = &b.table.services;
        assert!(s.iter().all(|x| x.maglev.same(&s[0].maglev)));
        // Members differ per service (own ids), the slots do not.
        assert_ne!(s[0].members, s[1].members);
        let id = rt.find_mut(&c, "s3", "198.18.0.11").unwrap().id;
        rt.find_mut(&c, "s3", "198.18.0.11").unwrap().drained = true;
        let b2 = changed(&c, &rt, &mut cache, &b.table, &[id]);
        assert_eq!((cache.builds, cache.tables(), cache.incremental), (2, 2, 1));
        let s2 = &b2.table.services;
        let p3 = s2.iter().position(|x| x.members.contains(&id)).unwrap();
        assert!(!s2[p3].maglev.same(&s[0].maglev));
        assert_eq!(
            s2.iter().filter(|x| x.maglev.same(&s[0].maglev)).count(),
            9,
            "the others still share"
        );
        // Enabling it again finds the shared table: nothing is built.
        rt.find_mut(&c, "s3", "198.18.0.11").unwrap().drained = false;
        let b3 = changed(&c, &rt, &mut cache, &b2.table, &[id]);
        assert_eq!(cache.builds, 2);
        assert!(b3.table.services.iter().all(|x| x.maglev.same(&s[0].maglev)));
        let full = with_inputs(&c, &rt, &|a| mac(Ipv4Addr::from(a)), b3.table.generation, |inp| {
            build(inp, &mut MaglevCache::default())
        });
        assert!(b3.table == full.table);
        // A full build forgets the table no service uses any more.
        built(&c, &rt, &mut cache);
        assert_eq!(cache.tables(), 1);
    }

    fn changed(
        c: &Config,
        rt: &Runtime,
        cache: &mut MaglevCache,
        prev: &FwdTable,
        ids: &[BackendId],
    ) -> Built {
        with_inputs(c, rt, &|a| mac(Ipv4Addr::from(a)), prev.generation + 1, |inp| {
            build_changed(inp, cache, prev, ids)
        })
    }

    fn with_inputs<R>(
        c: &Config,
        rt: &Runtime,
        resolved: &dyn Fn(u32) -> Option<Mac>,
        generation: u64,
        f: impl FnOnce(&Inputs<'_>) -> R,
    ) -> R {
        let seen = HashMap::from([(0xc612_0001, [2, 0, 0, 0, 0, 1])]);
        with_seen(c, rt, resolved, &seen, generation, f)
    }

    fn with_seen<R>(
        c: &Config,
        rt: &Runtime,
        resolved: &dyn Fn(u32) -> Option<Mac>,
        seen: &HashMap<u32, Mac>,
        generation: u64,
        f: impl FnOnce(&Inputs<'_>) -> R,
    ) -> R {
        let inputs = Inputs {
            cfg: c,
            rt,
            resolved,
            seen,
            gateway: Some(0xc612_0001),
            iface: Iface::TEST,
            generation,
            v6: Inputs6::NONE,
        };
        f(&inputs)
    }

    /// A table that is not the last one the cache built (a reload staged
    /// and then refused) is never patched: the full build runs instead.
    #[test]
    fn a_table_the_cache_did_not_build_last_is_rebuilt_whole() {
        let c = cfg(BASE);
        let mut rt = Runtime::default();
        rt.sync(&c).unwrap();
        let mut cache = MaglevCache::default();
        let published = built(&c, &rt, &mut cache).table;
        // Staged, never published: another config and runtime.
        let c2 = cfg(&BASE.replace("198.18.0.13", "198.18.0.14"));
        let mut rt2 = rt.clone();
        rt2.sync(&c2).unwrap();
        let _ = built(&c2, &rt2, &mut cache);
        let id = rt.find_mut(&c, "web", "198.18.0.12").unwrap().id;
        rt.find_mut(&c, "web", "198.18.0.12").unwrap().health = Health::Down;
        let b = changed(&c, &rt, &mut cache, &published, &[id]);
        assert_eq!(cache.incremental, 0, "full build");
        let full = with_inputs(
            &c,
            &rt,
            &|a| mac(Ipv4Addr::from(a)),
            published.generation + 1,
            |inp| build(inp, &mut MaglevCache::default()),
        );
        assert!(b.table == full.table && b.digests == full.digests);
        // Now that the cache built the table in use, the next change patches it.
        rt.find_mut(&c, "web", "198.18.0.12").unwrap().health = Health::Up;
        let b2 = changed(&c, &rt, &mut cache, &b.table, &[id]);
        assert_eq!(cache.incremental, 1);
        assert!(b2.table.services[0].maglev == published.services[0].maglev);
    }

    mod incremental {
        use super::*;
        use proptest::prelude::*;

        /// Six services over eight addresses: s0 and s1 have the same
        /// servers (they share a table), s4 is NAT, s5 has ports.
        fn text(variant: u8) -> String {
            let mut y = String::from("interface: eth0\nmaglev_table_size: 251\nservices:\n");
            let sets: [&[&str]; 6] = [
                &["198.18.0.11", "198.18.0.12", "198.18.0.13"],
                &["198.18.0.11", "198.18.0.12", "198.18.0.13"],
                &["198.18.0.12", "198.18.0.14", "198.18.0.15", "198.18.0.16"],
                &["198.18.0.17"],
                &["198.18.0.15", "198.18.0.18"],
                &["198.18.0.11:8080", "198.18.0.11:8081", "198.18.0.16:8080"],
            ];
            for (i, set) in sets.iter().enumerate() {
                let mode = if i >= 4 { "nat" } else { "dr" };
                y.push_str(&format!(
                    "  - name: s{i}\n    vip: 198.18.100.{}\n    port: 80\n    mode: {mode}\n    real_servers:\n",
                    10 - i
                ));
                for (j, a) in set.iter().enumerate() {
                    // Variants: 1 drops a server, 2 changes a weight, 3 adds one.
                    if variant == 1 && i == 2 && j == 1 {
                        continue;
                    }
                    let w = if variant == 2 && i == 0 && j == 0 { 3 } else { 1 };
                    y.push_str(&format!("      - address: {a}\n        weight: {w}\n"));
                }
                if variant == 3 && i == 3 {
                    y.push_str("      - address: 198.18.0.19\n");
                }
            }
            y
        }

        #[derive(Debug, Clone)]
        enum Op {
            Drain(usize, usize, bool),
            Weight(usize, usize, Option<u32>),
            Health(Vec<(usize, usize, u8)>),
            /// An ARP answer: the MAC of an address appears, changes or goes.
            Mac(u8, u8),
            Reload(u8),
            /// A reload built but refused: the cache built a table that is
            /// never published.
            Staged(u8),
            /// Removed servers' flows have ended.
            Release,
            /// An ARP sender seen on the segment appears or changes (the
            /// gateway, .1, among them): the next publish takes it.
            Seen(u8, u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0..6usize, 0..4usize, any::<bool>()).prop_map(|(s, r, d)| Op::Drain(s, r, d)),
                2 => (0..6usize, 0..4usize, prop::option::of(0..4u32)).prop_map(|(s, r, w)| Op::Weight(s, r, w)),
                3 => prop::collection::vec((0..6usize, 0..4usize, 0..3u8), 1..4).prop_map(Op::Health),
                1 => (11..20u8, 0..3u8).prop_map(|(a, m)| Op::Mac(a, m)),
                1 => (0..4u8).prop_map(Op::Reload),
                1 => (0..4u8).prop_map(Op::Staged),
                1 => Just(Op::Release),
                1 => (1..3u8, 0..3u8).prop_map(|(a, m)| Op::Seen(a, m)),
            ]
        }

        /// The server `r` (modulo its count) of service `s`: (name, address).
        fn pick(c: &Config, s: usize, r: usize) -> (String, String) {
            let svc = &c.services[s];
            let rs = &svc.real_servers[r % svc.real_servers.len()];
            (svc.name.clone(), rs.endpoint())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// After any sequence of drains, enables, weight and health
            /// changes, ARP answers, reloads (published or refused) and
            /// releases, publishing as the director does (a runtime change
            /// patches the table in use, anything else builds it whole)
            /// gives exactly the table and digests a build from nothing
            /// gives.
            #[test]
            fn incremental_publish_equals_a_full_build(ops in prop::collection::vec(op(), 1..30)) {
                let cfgs: Vec<Config> = (0..4).map(|v| cfg(&text(v))).collect();
                let mut cur = 0usize;
                let mut rt = Runtime::default();
                let t0 = Instant::now();
                rt.sync_at(&cfgs[0], None, t0).unwrap();
                let mut macs: HashMap<u32, Option<Mac>> = (11..20u8)
                    .map(|a| (u32::from(Ipv4Addr::new(198, 18, 0, a)), Some([2, 0, 0, 0, 0, a])))
                    .collect();
                let mut seen: HashMap<u32, Mac> = HashMap::new();
                let mut cache = MaglevCache::default();
                let mut generation = 1;
                let mut published = {
                    let r = |a: u32| macs.get(&a).copied().flatten();
                    with_seen(&cfgs[0], &rt, &r, &seen, generation, |inp| build(inp, &mut cache)).table
                };
                let mut later = t0;
                for op in ops {
                    generation += 1;
                    let c = &cfgs[cur];
                    let mut ids = Vec::new();
                    let mut full = false;
                    match op {
                        Op::Drain(s, r, d) => {
                            let (n, a) = pick(c, s, r);
                            let srt = rt.find_mut(c, &n, &a).unwrap();
                            srt.drained = d;
                            ids.push(srt.id);
                        }
                        Op::Weight(s, r, w) => {
                            let (n, a) = pick(c, s, r);
                            let srt = rt.find_mut(c, &n, &a).unwrap();
                            srt.weight_override = w;
                            ids.push(srt.id);
                        }
                        Op::Health(hs) => {
                            for (s, r, h) in hs {
                                let (n, a) = pick(c, s, r);
                                let srt = rt.find_mut(c, &n, &a).unwrap();
                                srt.health = [Health::Up, Health::Down, Health::Pending][h as usize];
                                ids.push(srt.id);
                            }
                        }
                        Op::Mac(a, m) => {
                            let mac = [None, Some([2, 0, 0, 0, 0, a]), Some([2, 0, 0, 0, 1, a])][m as usize];
                            macs.insert(u32::from(Ipv4Addr::new(198, 18, 0, a)), mac);
                            full = true;
                        }
                        Op::Reload(v) => {
                            cur = v as usize;
                            rt.sync_at(&cfgs[cur], Some(&published), later).unwrap();
                            full = true;
                        }
                        Op::Staged(v) => {
                            let mut staged = rt.clone();
                            staged.sync_at(&cfgs[v as usize], Some(&published), later).unwrap();
                            let r = |a: u32| macs.get(&a).copied().flatten();
                            let _ = with_seen(&cfgs[v as usize], &staged, &r, &seen, generation, |inp| build(inp, &mut cache));
                            // The refused reload changed nothing: publish the same state.
                            ids.clear();
                        }
                        Op::Release => {
                            later += RELEASE_AFTER;
                            full = !rt.release(later, |_| 0).is_empty();
                        }
                        Op::Seen(a, m) => {
                            let ip = u32::from(Ipv4Addr::new(198, 18, 0, a));
                            match m {
                                0 => seen.remove(&ip),
                                _ => seen.insert(ip, [2, 0, 0, 0, m, a]),
                            };
                        }
                    }
                    let c = &cfgs[cur];
                    let r = |a: u32| macs.get(&a).copied().flatten();
                    let before = cache.incremental;
                    let got = with_seen(c, &rt, &r, &seen, generation, |inp| {
                        if full {
                            build(inp, &mut cache)
                        } else {
                            build_changed(inp, &mut cache, &published, &ids)
                        }
                    });
                    let want = with_seen(c, &rt, &r, &seen, generation, |inp| build(inp, &mut MaglevCache::default()));
                    prop_assert!(got.table == want.table, "table differs after {:?}", ids);
                    prop_assert_eq!(&got.digests, &want.digests);
                    // A lone runtime change on the table just published is patched, not rebuilt.
                    if !full && published.generation + 1 == generation && ids.len() == 1 {
                        prop_assert_eq!(cache.incremental, before + 1);
                    }
                    published = got.table;
                }
            }
        }
    }
}
