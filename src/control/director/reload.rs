//! Re-reading the config (SIGHUP, `ulvsadm reload`) as one transaction (slow
//! path): [`stage`] builds the whole new state aside (config, runtime with
//! ids, health targets, kernel address sets, forwarding table) without
//! touching the running one; [`apply`] changes the kernel's address sets and
//! only when that succeeded swaps the new state in. A reload that fails at
//! any step leaves the runtime exactly as it was: the same backend ids,
//! drains and weight overrides, the same health checker targets.

use std::net::IpAddr;
use std::time::Instant;

use log::{error, info, warn};

use super::{build_with, has_nat, health_targets, nat_servers, unsupported, vips, Director};
use crate::control::config::{Config, Mode};
use crate::control::health::Target;
use crate::control::nft;
use crate::control::publish::{self, Built, Runtime};
use crate::fwd::table::FwdTable;
use crate::io::xdp::XdpRedirect;

/// The VIPs and NAT server addresses the kernel must know (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AddressSet {
    pub vips: Vec<u32>,
    pub nat_servers: Vec<u32>,
    /// The IPv6 ones (128-bit numbers), for the XDP program's IPv6 map.
    pub vips6: Vec<u128>,
    pub nat_servers6: Vec<u128>,
}

impl AddressSet {
    pub fn of(cfg: &Config) -> Self {
        AddressSet {
            vips: vips(cfg),
            nat_servers: nat_servers(cfg),
            vips6: ipv6s(cfg.services.iter().map(|s| s.vip)),
            nat_servers6: ipv6s(
                cfg.services
                    .iter()
                    .filter(|s| s.mode == Mode::Nat)
                    .flat_map(|s| s.real_servers.iter().map(|r| r.address)),
            ),
        }
    }
}

/// The IPv6 addresses among `it`, as 128-bit numbers, sorted, once each.
fn ipv6s(it: impl Iterator<Item = IpAddr>) -> Vec<u128> {
    let mut v: Vec<u128> = it
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(u128::from(a)),
            IpAddr::V4(_) => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Where the address sets live outside the process: the nft drop rule and,
/// on AF_XDP, the redirect map. Injectable so a test can make a step fail.
pub(super) trait AddressSets {
    /// Replace `old` by `new`; on failure put back `old` as far as possible
    /// and say what failed.
    fn replace(&mut self, old: &AddressSet, new: &AddressSet) -> Result<(), String>;
}

/// The kernel's address sets of a running director.
pub(super) struct Kernel<'a> {
    pub ifname: &'a str,
    pub own_ip: Option<u32>,
    pub xdp: Option<&'a XdpRedirect>,
}

impl AddressSets for Kernel<'_> {
    fn replace(&mut self, old: &AddressSet, new: &AddressSet) -> Result<(), String> {
        nft::install(self.ifname, &new.vips, &new.nat_servers, self.own_ip)
            .map_err(|e| format!("cannot update the VIP drop rule: {e}"))?;
        if let Some(x) = self.xdp {
            if let Err(e) = x
                .set_addresses(&new.vips, &new.nat_servers)
                .and_then(|()| x.set_addresses6(&new.vips6, &new.nat_servers6))
            {
                let _ = x.set_addresses(&old.vips, &old.nat_servers);
                let _ = x.set_addresses6(&old.vips6, &old.nat_servers6);
                if let Err(e) = nft::install(self.ifname, &old.vips, &old.nat_servers, self.own_ip) {
                    error!("reload: could not restore the VIP drop rule: {e}");
                }
                return Err(format!("cannot update the XDP redirect map: {e}"));
            }
        }
        Ok(())
    }
}

/// A reload built aside; [`apply`] commits it.
pub(super) struct Staged {
    cfg: Config,
    rt: Runtime,
    targets: Vec<Target>,
    built: Built,
    old_set: AddressSet,
    new_set: AddressSet,
}

/// What a committed reload leaves for the director to do: give the checker
/// its targets, publish the table, announce the new VIPs.
pub(super) struct Applied {
    pub targets: Vec<Target>,
    pub built: Built,
    pub added_vips: Vec<u32>,
}

/// Check `new` against the running `cfg` and build the state it leads to;
/// `build` makes the table of a (config, runtime). Nothing running changes.
///
/// # Errors
/// The problems, one per line, as `--check` words them.
pub(super) fn stage(
    cfg: &Config,
    rt: &Runtime,
    published: &FwdTable,
    mut new: Config,
    file: &str,
    now: Instant,
    build: impl FnOnce(&Config, &Runtime) -> Built,
) -> Result<Staged, String> {
    let mut problems: Vec<String> = unsupported(&new, file).iter().map(|e| e.to_string()).collect();
    if new.interface != cfg.interface {
        problems.push(format!(
            "{file}: interface: cannot change from {} to {} on reload; restart the director",
            cfg.interface, new.interface
        ));
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    for (what, changed) in [
        ("control_socket", new.control_socket != cfg.control_socket),
        ("workers", new.workers != cfg.workers),
        ("flow_capacity", new.flow_capacity != cfg.flow_capacity),
        ("cpus", new.cpus != cfg.cpus),
        ("io", new.io != cfg.io),
        ("metrics_listen", new.metrics_listen != cfg.metrics_listen),
        ("announce", new.announce != cfg.announce),
        ("route_table", new.route_table != cfg.route_table),
        // The sync thread keeps its socket, peers, key and refresh interval
        // (and the workers their queues) until the next start.
        ("sync", new.sync != cfg.sync),
    ] {
        if changed {
            warn!("reload: {what} changed; it takes effect at the next restart");
        }
    }
    // Keep the running values of what needs a restart.
    new.control_socket = cfg.control_socket.clone();
    new.workers = cfg.workers;
    new.flow_capacity = cfg.flow_capacity;
    new.cpus = cfg.cpus.clone();
    new.io = cfg.io;
    new.metrics_listen = cfg.metrics_listen;
    // The announce mode (and route mode's TUN device) is set up at start.
    new.announce = cfg.announce;
    new.route_table = cfg.route_table;
    let mut staged_rt = rt.clone();
    staged_rt
        .sync_at(&new, Some(published), now)
        .map_err(|e| e.to_string())?;
    // Servers that are not checked (any more) are up.
    for s in &new.services {
        for r in &s.real_servers {
            if publish::probe_port(s, r).is_none() {
                if let Some(srt) = staged_rt.get_mut(&s.name, r.address, r.port) {
                    srt.health = publish::Health::Up;
                }
            }
        }
    }
    let targets = health_targets(&new, &staged_rt);
    let built = build(&new, &staged_rt);
    Ok(Staged {
        old_set: AddressSet::of(cfg),
        new_set: AddressSet::of(&new),
        cfg: new,
        rt: staged_rt,
        targets,
        built,
    })
}

/// Change the kernel's address sets when they differ, then swap the staged
/// config and runtime in. On error `cfg` and `rt` are untouched.
///
/// # Errors
/// A step outside the process failed (its sentence).
pub(super) fn apply(
    cfg: &mut Config,
    rt: &mut Runtime,
    staged: Staged,
    sets: &mut dyn AddressSets,
) -> Result<Applied, String> {
    if staged.old_set != staged.new_set {
        sets.replace(&staged.old_set, &staged.new_set)?;
    }
    *cfg = staged.cfg;
    *rt = staged.rt;
    let added_vips = staged
        .new_set
        .vips
        .iter()
        .filter(|v| !staged.old_set.vips.contains(v))
        .copied()
        .collect();
    Ok(Applied {
        targets: staged.targets,
        built: staged.built,
        added_vips,
    })
}

impl Director {
    /// Re-read the config; on any problem keep the running one.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let file = self.path.display().to_string();
        let result = self.try_reload(&file);
        match &result {
            Ok(msg) => {
                self.slow.reloads += 1;
                self.last_reload = super::LastReload {
                    ok: true,
                    success_unix: super::unix_now(),
                };
                info!("{msg}");
            }
            Err(e) => {
                self.slow.reload_failures += 1;
                self.last_reload.ok = false;
                for line in e.lines() {
                    error!("reload rejected: {line}");
                }
            }
        }
        result
    }

    fn try_reload(&mut self, file: &str) -> Result<String, String> {
        let new = Config::load(&self.path).map_err(|errs| errs.to_string())?;
        let generation = self.slow.generation + 1;
        let published = self.shared.table.load_full();
        let staged = {
            let (neigh, seen, gateway, ifinfo, cache) = (
                (&self.neigh, &self.host6),
                &self.seen,
                (self.gateway, &self.hops),
                &self.ifinfo,
                &mut self.cache,
            );
            stage(
                &self.cfg,
                &self.rt,
                &published,
                new,
                file,
                Instant::now(),
                |c, r| build_with(c, r, neigh, seen, gateway, ifinfo, generation, cache),
            )?
        };
        let had_nat = has_nat(&self.cfg);
        let before = self.rt.clone();
        let mut kernel = Kernel {
            ifname: &self.cfg.interface.clone(),
            own_ip: self.ifinfo.ipv4,
            xdp: self.xdp.as_deref(),
        };
        let applied = apply(&mut self.cfg, &mut self.rt, staged, &mut kernel)?;
        // Committed: from here on nothing can fail.
        self.slow.generation = generation;
        if has_nat(&self.cfg) && !had_nat && self.stats.len() > 1 {
            warn!(
                "reload: NAT services with {} workers: reply state is per worker; restart to run 1 worker",
                self.stats.len()
            );
        }
        self.take_baselines(&before);
        self.checker.update(applied.targets);
        // New servers may be off-link: their next hops, then a table that
        // uses them (at the next tick).
        if self.host_apply() {
            self.dirty = true;
        }
        let wanted = self.wanted();
        self.neigh.set_wanted(wanted);
        self.install(applied.built);
        self.arp_tick();
        self.announce(&applied.added_vips);
        Ok(format!(
            "reloaded {}: {} services, generation {}",
            file,
            self.cfg.services.len(),
            self.slow.generation
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::control::publish::{build, Iface, Inputs, MaglevCache};

    const BASE: &str = "interface: eth0\nmaglev_table_size: 251\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    health:\n      kind: tcp\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n      - address: 198.18.0.13\n";

    fn cfg(text: &str) -> Config {
        Config::from_str(text, "t.yaml").unwrap()
    }

    fn table(c: &Config, rt: &Runtime) -> Built {
        let resolved = |a: u32| Some([2, 0, 0, 0, 0, a as u8]);
        let seen = HashMap::new();
        let inputs = Inputs {
            cfg: c,
            rt,
            resolved: &resolved,
            seen: &seen,
            gateway: None,
            iface: Iface::TEST,
            generation: 1,
            v6: crate::control::publish6::Inputs6::NONE,
        };
        build(&inputs, &mut MaglevCache::default())
    }

    /// Records what it was asked and fails as told.
    struct Sets {
        fail: bool,
        calls: Vec<AddressSet>,
    }

    impl AddressSets for Sets {
        fn replace(&mut self, _old: &AddressSet, new: &AddressSet) -> Result<(), String> {
            self.calls.push(new.clone());
            if self.fail {
                Err("cannot update the VIP drop rule: injected".into())
            } else {
                Ok(())
            }
        }
    }

    /// A running director's state: web's servers with a drain and a weight
    /// override, and the new config that removes .13, adds .14 and moves the
    /// VIP (so the kernel's sets must change).
    fn running() -> (Config, Runtime, FwdTable, Config) {
        let c1 = cfg(BASE);
        let mut rt = Runtime::default();
        rt.sync(&c1).unwrap();
        for s in rt.servers.values_mut() {
            s.health = publish::Health::Up;
        }
        rt.find_mut(&c1, "web", "198.18.0.13").unwrap().drained = true;
        rt.find_mut(&c1, "web", "198.18.0.12").unwrap().weight_override = Some(7);
        let published = table(&c1, &rt).table;
        let c2 = cfg(&BASE
            .replace("198.18.0.13", "198.18.0.14")
            .replace("198.18.100.1", "198.18.100.2"));
        (c1, rt, published, c2)
    }

    #[test]
    fn a_failed_kernel_step_leaves_the_runtime_as_it_was() {
        let (c1, rt0, published, c2) = running();
        let (mut c, mut rt) = (c1.clone(), rt0.clone());
        let targets0 = health_targets(&c, &rt);
        let staged = stage(&c, &rt, &published, c2, "t.yaml", Instant::now(), table).unwrap();
        let mut sets = Sets {
            fail: true,
            calls: Vec::new(),
        };
        let err = apply(&mut c, &mut rt, staged, &mut sets).err().unwrap();
        assert_eq!(err, "cannot update the VIP drop rule: injected");
        assert_eq!(sets.calls.len(), 1, "the step ran after the new state was built");
        assert_eq!(c, c1);
        assert_eq!(rt, rt0, "same ids, drains and overrides; nothing carried");
        assert_eq!(health_targets(&c, &rt), targets0);

        // What the old rollback did (sync the new file, then the old one
        // again) breaks exactly this: .13 comes back without its drain.
        let mut old_way = rt0.clone();
        old_way
            .sync(&cfg(&BASE.replace("198.18.0.13", "198.18.0.14")))
            .unwrap();
        old_way.sync(&c1).unwrap();
        assert!(
            !old_way
                .get("web", "198.18.0.13".parse().unwrap(), None)
                .unwrap()
                .drained
        );
        assert_ne!(old_way, rt0);
    }

    #[test]
    fn a_successful_reload_commits_everything_at_once() {
        let (c1, rt0, published, c2) = running();
        let (mut c, mut rt) = (c1.clone(), rt0.clone());
        let staged = stage(&c, &rt, &published, c2.clone(), "t.yaml", Instant::now(), table).unwrap();
        let mut sets = Sets {
            fail: false,
            calls: Vec::new(),
        };
        let applied = apply(&mut c, &mut rt, staged, &mut sets).unwrap();
        assert_eq!(c, c2);
        assert_eq!(sets.calls[0].vips, vec![0xc612_6402]);
        assert_eq!(applied.added_vips, vec![0xc612_6402]);
        let id12 = rt0.get("web", "198.18.0.12".parse().unwrap(), None).unwrap().id;
        let s12 = rt.get("web", "198.18.0.12".parse().unwrap(), None).unwrap();
        assert_eq!((s12.id, s12.weight()), (id12, 7));
        // The new server waits for its first probe; the removed one is carried.
        let s14 = rt.get("web", "198.18.0.14".parse().unwrap(), None).unwrap();
        assert_eq!(s14.health, publish::Health::Pending);
        let id13 = rt0.get("web", "198.18.0.13".parse().unwrap(), None).unwrap().id;
        assert_eq!(rt.removed[&id13].fwd.addr, 0xc612_000d);
        assert_eq!(applied.targets, health_targets(&c, &rt));
        assert_eq!(applied.built.table.backend(id13).addr, 0xc612_000d);
    }

    #[test]
    fn an_unchanged_address_set_is_not_touched_and_a_rejected_file_changes_nothing() {
        let (c1, rt0, published, _) = running();
        let (mut c, mut rt) = (c1.clone(), rt0.clone());
        let same = cfg(&BASE.replace("198.18.0.13", "198.18.0.14"));
        let staged = stage(&c, &rt, &published, same, "t.yaml", Instant::now(), table).unwrap();
        let mut sets = Sets {
            fail: true,
            calls: Vec::new(),
        };
        apply(&mut c, &mut rt, staged, &mut sets).unwrap();
        assert!(sets.calls.is_empty());

        let other_if = cfg(&BASE.replace("interface: eth0", "interface: eth1"));
        let err = stage(&c1, &rt0, &published, other_if, "t.yaml", Instant::now(), table)
            .err()
            .unwrap();
        assert!(
            err.contains("interface: cannot change from eth0 to eth1"),
            "{err}"
        );
    }

    /// The IPv6 VIPs and NAT servers reach the address sets (the XDP
    /// program's IPv6 map), apart from the IPv4 ones; an IPv6-only change
    /// is a change of the sets.
    #[test]
    fn ipv6_addresses_are_in_the_address_set() {
        let text = std::fs::read_to_string("tests/config_files/good-dual-stack.yaml").unwrap();
        let c = cfg(&text);
        let set = AddressSet::of(&c);
        let n = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(set.vips, vec![0xc612_6401]);
        assert_eq!(set.nat_servers, Vec::<u32>::new());
        assert_eq!(set.vips6, vec![n("2001:db8:100::1"), n("2001:db8:100::2")]);
        assert_eq!(set.nat_servers6, vec![n("2001:db8::21"), n("2001:db8::22")]);
        let moved = cfg(&text.replace("2001:db8:100::2", "2001:db8:100::3"));
        assert_ne!(AddressSet::of(&moved), set);
        assert_eq!(AddressSet::of(&moved).vips, set.vips);
    }
}
