//! Re-reading the config (SIGHUP, `ulvsadm reload`) as one transaction (slow
//! path): [`stage`] builds the whole new state aside (config, runtime with
//! ids, health targets, kernel address sets, forwarding table) without
//! touching the running one; [`apply`] changes the kernel's address sets and
//! only when that succeeded swaps the new state in. A reload that fails at
//! any step leaves the runtime exactly as it was: the same backend ids,
//! drains and weight overrides, the same health checker targets.
//!
//! A reload of the file in force ([`reload_file`]): when the file's bytes
//! are those of the config in force (the same [`FileDigest`]) and the other
//! files a load reads are unchanged too, nothing is parsed or built — the
//! same bytes give the same config, runtime, targets, address sets and
//! table, so the result would equal what runs. It still counts as a
//! successful reload. The digest in force changes only with a committed
//! reload, so after a rejected one the file is compared with what runs.

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use log::{error, info, warn};

use super::{build_with, has_nat, health_targets, nat_servers, unsupported, vips, Director};
use crate::control::config::{Config, FileDigest, Mode};
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

/// The config file in force: the digest of the bytes it was loaded from
/// and the settings it changes that wait for a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InForce {
    pub digest: FileDigest,
    /// The fields (`workers`, `sync`, ...) the file sets otherwise than the
    /// running director, which keeps them until it restarts.
    pub restart_pending: Vec<&'static str>,
}

impl InForce {
    /// The file loaded at start (nothing waits for a restart).
    pub fn new(digest: FileDigest) -> Self {
        InForce {
            digest,
            restart_pending: Vec::new(),
        }
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
    restart_pending: Vec<&'static str>,
}

/// What a committed reload leaves for the director to do: give the checker
/// its targets, publish the table, announce the new VIPs.
pub(super) struct Applied {
    pub targets: Vec<Target>,
    pub built: Built,
    pub added_vips: Vec<u32>,
    /// The fields that wait for a restart (see [`InForce`]).
    pub restart_pending: Vec<&'static str>,
}

/// How a reload of the file ended.
pub(super) enum Outcome {
    /// The file and its side files hold what is in force: nothing was
    /// parsed or built, nothing changed.
    Unchanged,
    /// A new config was committed (and `InForce` now names its file).
    Applied(Box<Applied>),
}

/// Reload `path` against the state in force (`cfg`, `rt`, `in_force`, the
/// `published` table): [`Outcome::Unchanged`] when its bytes are those in
/// force, else [`stage`] (`build` makes the table) and [`apply`] (`sets`
/// takes the kernel's address sets). `cfg`, `rt` and `in_force` change
/// together, and only when the reload is committed.
///
/// # Errors
/// The file cannot be read, is invalid (one line per problem, as `--check`
/// words them) or a kernel step failed; nothing changed.
#[allow(clippy::too_many_arguments)]
pub(super) fn reload_file(
    path: &Path,
    cfg: &mut Config,
    rt: &mut Runtime,
    in_force: &mut InForce,
    published: &FwdTable,
    now: Instant,
    build: impl FnOnce(&Config, &Runtime) -> Built,
    sets: &mut dyn AddressSets,
) -> Result<Outcome, String> {
    let file = path.display().to_string();
    let (text, digest) = Config::read(path).map_err(|e| e.to_string())?;
    if digest == in_force.digest && cfg.side_files_unchanged() {
        return Ok(Outcome::Unchanged);
    }
    let new = Config::from_str(&text, &file).map_err(|e| e.to_string())?;
    drop(text);
    let staged = stage(cfg, rt, published, new, &file, now, build)?;
    let applied = apply(cfg, rt, staged, sets)?;
    *in_force = InForce {
        digest,
        restart_pending: applied.restart_pending.clone(),
    };
    Ok(Outcome::Applied(Box::new(applied)))
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
    let mut restart_pending = Vec::new();
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
            restart_pending.push(what);
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
        restart_pending,
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
        restart_pending: staged.restart_pending,
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
        let generation = self.slow.generation + 1;
        let published = self.shared.table.load_full();
        let had_nat = has_nat(&self.cfg);
        // The ids in use before, for the counters of ids that change hands
        // (a set, not a copy of the whole runtime).
        let before: std::collections::HashSet<_> = self.rt.servers.values().map(|s| s.id).collect();
        let outcome = {
            let (neigh, seen, gateway, ifinfo, cache) = (
                (&self.neigh, &self.host6),
                &self.seen,
                (self.gateway, &self.hops),
                &self.ifinfo,
                &mut self.cache,
            );
            let mut kernel = Kernel {
                ifname: &self.cfg.interface.clone(),
                own_ip: self.ifinfo.ipv4,
                xdp: self.xdp.as_deref(),
            };
            reload_file(
                &self.path,
                &mut self.cfg,
                &mut self.rt,
                &mut self.in_force,
                &published,
                Instant::now(),
                |c, r| build_with(c, r, neigh, seen, gateway, ifinfo, generation, cache),
                &mut kernel,
            )?
        };
        let applied = match outcome {
            Outcome::Applied(a) => *a,
            Outcome::Unchanged => {
                // What a reload does besides the file: follow the host
                // (next hops, the IPv6 drop rule), ask for missing MACs.
                if self.host_apply() {
                    self.dirty = true;
                }
                let wanted = self.wanted();
                self.neigh.set_wanted(wanted);
                self.arp_tick();
                for what in &self.in_force.restart_pending {
                    warn!("reload: {what} changed; it takes effect at the next restart");
                }
                return Ok(format!(
                    "reloaded {}: unchanged ({} services, generation {})",
                    file,
                    self.cfg.services.len(),
                    self.slow.generation
                ));
            }
        };
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

    /// A director's state in force, reloaded from a file as the director
    /// does it (`builds` counts the tables built).
    struct Held {
        cfg: Config,
        rt: Runtime,
        in_force: InForce,
        published: FwdTable,
        builds: usize,
    }

    impl Held {
        fn start(path: &Path) -> Held {
            let (cfg, digest) = Config::load_digested(path).unwrap();
            let mut rt = Runtime::default();
            rt.sync(&cfg).unwrap();
            let published = table(&cfg, &rt).table;
            Held {
                cfg,
                rt,
                in_force: InForce::new(digest),
                published,
                builds: 0,
            }
        }

        /// "unchanged" or "applied"; `fail`: the kernel step fails.
        fn reload(&mut self, path: &Path, fail: bool) -> Result<&'static str, String> {
            let builds = &mut self.builds;
            let mut sets = Sets {
                fail,
                calls: Vec::new(),
            };
            let out = reload_file(
                path,
                &mut self.cfg,
                &mut self.rt,
                &mut self.in_force,
                &self.published,
                Instant::now(),
                |c, r| {
                    *builds += 1;
                    table(c, r)
                },
                &mut sets,
            )?;
            Ok(match out {
                Outcome::Unchanged => "unchanged",
                Outcome::Applied(a) => {
                    self.published = a.built.table;
                    "applied"
                }
            })
        }
    }

    /// A fresh directory for one test's files.
    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ulvs-reload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_byte_identical_file_is_not_parsed_or_built_and_a_changed_byte_is() {
        let dir = scratch("same");
        let path = dir.join("ulvs.yaml");
        std::fs::write(&path, BASE).unwrap();
        let mut h = Held::start(&path);
        h.rt.find_mut(&h.cfg, "web", "198.18.0.13").unwrap().drained = true;
        h.rt.find_mut(&h.cfg, "web", "198.18.0.12")
            .unwrap()
            .weight_override = Some(7);
        let (cfg0, rt0) = (h.cfg.clone(), h.rt.clone());
        assert_eq!(h.reload(&path, false), Ok("unchanged"));
        assert_eq!(h.builds, 0, "the same bytes are not built again");
        assert_eq!((&h.cfg, &h.rt), (&cfg0, &rt0), "drain and weight override kept");
        // One byte: port 80 -> 81.
        std::fs::write(&path, BASE.replace("port: 80", "port: 81")).unwrap();
        assert_eq!(h.reload(&path, false), Ok("applied"));
        assert_eq!(h.builds, 1);
        assert_eq!(h.cfg.services[0].port, 81);
        let s13 = h.rt.get("web", "198.18.0.13".parse().unwrap(), None).unwrap();
        assert!(s13.drained, "a real reload keeps the drain too");
        assert_eq!(h.reload(&path, false), Ok("unchanged"));
        assert_eq!(h.builds, 1);
        // Bytes decide, not meaning: a comment added is a reload like any.
        std::fs::write(&path, format!("{}# note\n", BASE.replace("port: 80", "port: 81"))).unwrap();
        assert_eq!(h.reload(&path, false), Ok("applied"));
        assert_eq!(h.builds, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn after_a_rejected_reload_the_file_is_compared_with_the_config_in_force() {
        let dir = scratch("rejected");
        let path = dir.join("ulvs.yaml");
        std::fs::write(&path, BASE).unwrap();
        let mut h = Held::start(&path);
        let cfg0 = h.cfg.clone();
        // A changed, invalid file: rejected before any build.
        std::fs::write(&path, BASE.replace("port: 80", "port: 80\n    wieght: 3")).unwrap();
        let e = h.reload(&path, false).unwrap_err();
        assert!(e.contains("wieght"), "{e}");
        assert_eq!(h.reload(&path, false).unwrap_err(), e, "still rejected");
        std::fs::write(&path, BASE).unwrap();
        assert_eq!(h.reload(&path, false), Ok("unchanged"));
        assert_eq!(h.builds, 0);
        // A changed, valid file whose kernel step fails: built, not committed.
        let moved = BASE.replace("198.18.100.1", "198.18.100.2");
        std::fs::write(&path, &moved).unwrap();
        assert!(h.reload(&path, true).unwrap_err().contains("injected"));
        assert_eq!((h.builds, &h.cfg), (1, &cfg0));
        assert_eq!(h.reload(&path, true).map_err(|_| h.builds), Err(2), "tried again");
        std::fs::write(&path, BASE).unwrap();
        assert_eq!(
            h.reload(&path, false),
            Ok("unchanged"),
            "the file in force is BASE"
        );
        assert_eq!(h.builds, 2);
        // Committed, the moved file is in force and BASE is a change.
        std::fs::write(&path, &moved).unwrap();
        assert_eq!(h.reload(&path, false), Ok("applied"));
        assert_eq!(h.reload(&path, false), Ok("unchanged"));
        std::fs::write(&path, BASE).unwrap();
        assert_eq!(h.reload(&path, false), Ok("applied"));
        assert_eq!((h.builds, &h.cfg), (4, &cfg0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_or_missing_key_file_is_a_change_though_the_config_file_is_not() {
        let dir = scratch("key");
        let (path, key) = (dir.join("ulvs.yaml"), dir.join("sync.key"));
        std::fs::write(&key, [0x5a; 32]).unwrap();
        let text = format!(
            "{BASE}sync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n  key_file: {}\n",
            key.display()
        );
        std::fs::write(&path, text).unwrap();
        let mut h = Held::start(&path);
        assert_eq!(h.reload(&path, false), Ok("unchanged"));
        std::fs::write(&key, [0x6b; 32]).unwrap();
        assert_eq!(h.reload(&path, false), Ok("applied"));
        let k = h.cfg.sync.as_ref().and_then(|s| s.key_file.as_ref()).unwrap();
        assert_eq!(k.bytes, vec![0x6b; 32], "the config in force read the new key");
        assert_eq!(h.reload(&path, false), Ok("unchanged"));
        std::fs::remove_file(&key).unwrap();
        let e = h.reload(&path, false).unwrap_err();
        assert!(e.contains("sync.key_file") && e.contains("cannot read"), "{e}");
        assert_eq!(h.builds, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
