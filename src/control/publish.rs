//! Config + runtime state -> the forwarding table (slow path).
//!
//! The runtime state of each real server (its stable backend id, health,
//! operator drain and weight overrides) lives in [`Runtime`]; every change
//! builds a complete new [`FwdTable`] that the caller publishes with one
//! atomic swap.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::config::{Config, HealthKind, OnServerDown};
use crate::fwd::maglev::{self, MaglevInput};
use crate::fwd::table::{BackendFwd, BackendId, BackendState, FwdTable, Mode, ServiceFwd, MAX_BACKEND_IDS};

/// Identity of a real server across reloads: its service and endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub service: String,
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

/// Health as last decided by the damper.
pub use super::health::Health;

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
    #[error("more than {MAX_BACKEND_IDS} real servers were configured over this process's life; restart the director")]
    IdsExhausted,
}

/// All real servers' runtime state.
#[derive(Debug, Default)]
pub struct Runtime {
    pub servers: HashMap<ServerKey, ServerRt>,
    next_id: BackendId,
}

fn key(service: &str, addr: Ipv4Addr, port: Option<u16>) -> ServerKey {
    ServerKey {
        service: service.to_string(),
        addr,
        port,
    }
}

impl Runtime {
    /// Bring the runtime in line with `cfg`: new servers get fresh ids (up
    /// until a health check says otherwise), removed servers are forgotten,
    /// remaining ones keep their id, health and drain; a weight override is
    /// dropped when the file changes that server's weight.
    ///
    /// # Errors
    /// The id space is exhausted (nothing is changed then).
    pub fn sync(&mut self, cfg: &Config) -> Result<(), RuntimeError> {
        let mut next = HashMap::new();
        let mut next_id = self.next_id;
        for s in &cfg.services {
            for r in &s.real_servers {
                let k = key(&s.name, r.address, r.port);
                let rt = match self.servers.get(&k) {
                    Some(old) => ServerRt {
                        weight_override: if old.config_weight == r.weight {
                            old.weight_override
                        } else {
                            None
                        },
                        config_weight: r.weight,
                        ..old.clone()
                    },
                    None => {
                        if next_id as usize >= MAX_BACKEND_IDS - 1 {
                            return Err(RuntimeError::IdsExhausted);
                        }
                        next_id += 1;
                        ServerRt {
                            id: next_id - 1,
                            health: Health::Up,
                            drained: false,
                            weight_override: None,
                            config_weight: r.weight,
                        }
                    }
                };
                next.insert(k, rt);
            }
        }
        self.servers = next;
        self.next_id = next_id;
        Ok(())
    }

    /// The server of `service` at `addr` (`IP` or `IP:PORT`).
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
            .find(|r| r.endpoint() == addr || (r.address.to_string() == addr))
            .ok_or_else(unknown)?;
        self.servers
            .get_mut(&key(&svc.name, rs.address, rs.port))
            .ok_or_else(unknown)
    }

    /// Runtime state of one configured server.
    pub fn get(&self, service: &str, addr: Ipv4Addr, port: Option<u16>) -> Option<&ServerRt> {
        self.servers.get(&key(service, addr, port))
    }
}

/// What `ulvsadm list` shows as a server's state.
pub fn state_name(rt: &ServerRt) -> &'static str {
    match (rt.health, rt.drained) {
        (Health::Down, _) => "down",
        (Health::Up, true) => "draining",
        (Health::Up, false) => "up",
    }
}

/// Build the forwarding table from the config, the runtime state and the
/// neighbour cache.
pub fn build_table(
    cfg: &Config,
    rt: &Runtime,
    mac_of: impl Fn(Ipv4Addr) -> Option<[u8; 6]>,
    director_mac: [u8; 6],
    director_ip: u32,
    generation: u64,
) -> FwdTable {
    let mut t = FwdTable::empty(director_mac);
    t.generation = generation;
    t.director_ip = director_ip;
    t.reschedule_on_down = cfg.on_server_down == OnServerDown::Reschedule;
    t.answer_ping = cfg.answer_ping;
    t.timeouts = cfg.timeouts;
    let max_id = rt
        .servers
        .values()
        .map(|s| s.id)
        .max()
        .map_or(0, |m| m as usize + 1);
    t.backends = vec![BackendFwd::REMOVED; max_id];
    let m = cfg.maglev_table_size;
    for s in &cfg.services {
        let mut members = Vec::with_capacity(s.real_servers.len());
        let mut inputs = Vec::with_capacity(s.real_servers.len());
        for r in &s.real_servers {
            let Some(srt) = rt.get(&s.name, r.address, r.port) else {
                continue;
            };
            let mac = mac_of(r.address);
            let state = match (srt.health, srt.drained) {
                (Health::Down, _) => BackendState::Down,
                (Health::Up, true) => BackendState::Draining,
                (Health::Up, false) => BackendState::Up,
            };
            let eligible = state == BackendState::Up && mac.is_some();
            let mut hkey = [0u8; 6];
            hkey[..4].copy_from_slice(&r.address.octets());
            hkey[4..].copy_from_slice(&r.port.unwrap_or(0).to_be_bytes());
            let (offset, skip) = maglev::permutation(&hkey, m);
            inputs.push(MaglevInput {
                offset,
                skip,
                weight: if eligible { srt.weight() } else { 0 },
            });
            members.push(srt.id);
            t.backends[srt.id as usize] = BackendFwd {
                addr: u32::from(r.address),
                port: r.port.unwrap_or(0),
                mac,
                state,
                svc_vip: u32::from(s.vip),
                svc_port: s.port,
                mode: s.mode,
            };
        }
        t.services.push(ServiceFwd {
            vip: u32::from(s.vip),
            port: s.port,
            proto: s.protocol.ip_protocol(),
            mode: s.mode,
            maglev: maglev::build(m, &inputs),
            members,
        });
    }
    t.nat_backends = cfg
        .services
        .iter()
        .filter(|s| s.mode == Mode::Nat)
        .flat_map(|s| s.real_servers.iter().map(|r| u32::from(r.address)))
        .collect();
    t.nat_backends.sort_unstable();
    t.nat_backends.dedup();
    t.sort();
    t
}

/// Keep, in a new table, the servers that the previous table had and the new
/// config no longer has, in state `Removed` with their last address and MAC:
/// their established flows stay with them until they end or time out (as
/// IPVS keeps connections to a deleted real server), while Maglev never gives
/// them new flows. Backend ids are never reused, so this cannot misdirect.
pub fn carry_removed(new: &mut FwdTable, previous: &FwdTable) {
    for (id, old) in previous.backends.iter().enumerate() {
        if old.mac.is_none() || old.addr == 0 {
            continue;
        }
        if id >= new.backends.len() {
            new.backends.resize(id + 1, BackendFwd::REMOVED);
        }
        if new.backends[id].state == BackendState::Removed && new.backends[id].addr == 0 {
            new.backends[id] = BackendFwd {
                state: BackendState::Removed,
                ..*old
            };
        }
    }
}

/// Whether a service's servers are health-checked at all.
pub fn is_checked(kind: HealthKind) -> bool {
    kind != HealthKind::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::maglev::NO_SERVER;

    fn cfg(text: &str) -> Config {
        Config::from_str(text, "t.yaml").unwrap()
    }

    const BASE: &str = "interface: eth0\nmaglev_table_size: 251\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n      - address: 198.18.0.13\n";

    fn mac(a: Ipv4Addr) -> Option<[u8; 6]> {
        let o = a.octets();
        Some([2, 0, 0, 0, 0, o[3]])
    }

    #[test]
    fn ids_are_stable_across_reloads_and_never_reused() {
        let mut rt = Runtime::default();
        let c1 = cfg(BASE);
        rt.sync(&c1).unwrap();
        let id12 = rt.get("web", "198.18.0.12".parse().unwrap(), None).unwrap().id;
        let id13 = rt.get("web", "198.18.0.13".parse().unwrap(), None).unwrap().id;
        let c2 = cfg(&BASE.replace("      - address: 198.18.0.13\n", "      - address: 198.18.0.14\n"));
        rt.sync(&c2).unwrap();
        assert_eq!(
            rt.get("web", "198.18.0.12".parse().unwrap(), None).unwrap().id,
            id12
        );
        let id14 = rt.get("web", "198.18.0.14".parse().unwrap(), None).unwrap().id;
        assert!(id14 > id13, "ids are never reused");
        assert!(rt.get("web", "198.18.0.13".parse().unwrap(), None).is_none());
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
        assert!(s.maglev.iter().all(|&e| e == NO_SERVER));
        let t = build_table(&c, &rt, mac, [2; 6], 0, 4);
        let s = &t.services[0];
        // only .13 is eligible now
        let id13 = rt.get("web", "198.18.0.13".parse().unwrap(), None).unwrap().id;
        assert!(s.maglev.iter().all(|&e| s.members[e as usize] == id13));
        let id11 = rt.get("web", "198.18.0.11".parse().unwrap(), None).unwrap().id;
        assert_eq!(t.backend(id11).state, BackendState::Draining);
    }

    #[test]
    fn removed_servers_are_carried_for_their_flows() {
        let mut rt = Runtime::default();
        let c1 = cfg(BASE);
        rt.sync(&c1).unwrap();
        let old = build_table(&c1, &rt, mac, [2; 6], 0, 1);
        let id13 = rt.get("web", "198.18.0.13".parse().unwrap(), None).unwrap().id;
        let c2 = cfg(&BASE.replace("      - address: 198.18.0.13\n", ""));
        rt.sync(&c2).unwrap();
        let mut new = build_table(&c2, &rt, mac, [2; 6], 0, 2);
        assert_eq!(new.backend(id13).state, BackendState::Removed);
        assert_eq!(new.backend(id13).mac, None);
        carry_removed(&mut new, &old);
        let b = new.backend(id13);
        assert_eq!(
            (b.state, b.addr, b.mac),
            (BackendState::Removed, 0xc612_000d, Some([2, 0, 0, 0, 0, 13]))
        );
        // Maglev never picks it.
        let s = &new.services[0];
        assert!(s.maglev.iter().all(|&e| s.members[e as usize] != id13));
    }

    #[test]
    fn equal_servers_share_the_table() {
        let mut rt = Runtime::default();
        let c = cfg(BASE);
        rt.sync(&c).unwrap();
        let t = build_table(&c, &rt, mac, [2; 6], 0, 1);
        let mut counts = [0usize; 3];
        for &e in &t.services[0].maglev {
            counts[e as usize] += 1;
        }
        assert!(counts.iter().all(|&n| (83..=84).contains(&n)), "{counts:?}");
    }
}
