//! The director (slow path): it owns the config, the runtime state of the
//! real servers, ARP, the kernel drop rule and the control socket, and it
//! publishes a new forwarding table (one atomic swap) whenever any of them
//! changes. Workers run on their own threads and only read that table.
//!
//! This is the one place of `control` that starts the data plane
//! ([`workers`]): it hands each worker its device and reads back only the
//! published-table handle and the per-worker counters.
//!
//! - [`event_loop`]: start-up and the loop (signals, sockets, timers).
//! - [`announce`]: ARP (answers for VIPs, neighbour resolution, gratuitous ARP).
//! - [`routes`]: `announce: route` (host routes for the served VIPs).
//! - [`reload`]: re-reading the config as one transaction.
//! - [`conn`]: the control socket and `metrics_listen` (never waiting on a client).
//! - [`report`]: the `list`/`stats` snapshots.
//! - [`dump`]: `ulvsadm flows` (asks each worker for a copy of its flows).
//! - [`listing`]: `ulvsadm list` and `flows` answered in parts.
//! - [`workers`]: opening the devices and starting the worker threads.
//! - [`host`]: following the host's routes, addresses and MTU (netlink).
//! - [`nd`]: Neighbor Discovery (IPv6 VIPs answered and announced, IPv6
//!   neighbours resolved, the IPv6 drop rule).

mod announce;
mod conn;
mod dump;
mod event_loop;
mod fast_path;
mod host;
mod listing;
mod nd;
mod reload;
pub mod report;
mod routes;
mod trace;
mod workers;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use log::info;
use serde_json::json;

use super::arp::NeighbourCache;
use super::config::{Config, ConfigError, HealthKind, Mode};
use super::ctl::{Request, Response};
use super::health::{self, Checker, ProbeKind, Target};
use super::hostroutes::{HostRoutes, KernelRoutes, RouteDevice};
use super::metrics;
use super::process::ProcessStats;
use super::publish::{self, Built, Iface, Inputs, MaglevCache, Runtime};
use super::publish6::Host6;
use super::rates::{Counters, RateMeter};
use super::serve::Answered;
use super::snapshot::{ConnCounters, Stats};
use super::status_page;
use super::watchdog;
use crate::dataplane::stats::WorkerStats;
use crate::dataplane::worker::Shared;
use crate::fwd::table::{BackendId, BackendState};
use crate::io::sys::{IfInfo, RawSocket};
use crate::io::xdp::{FastCounters, XdpRedirect};
use report::SlowCounters;

pub use event_loop::run;

/// Why the director could not start or stopped with an error. Its
/// [`DirectorError::chain`] is a sentence for the operator: the step that
/// failed, then each cause, joined by ": ".
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// A step failed: `what` names the step, `source` says why.
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A condition that is not an OS or library error.
    #[error("{0}")]
    Refused(String),
    /// A library error that needs no more context.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl DirectorError {
    /// The error and its causes, joined by ": ".
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Attach the name of the step that failed (as anyhow's `with_context`).
pub(crate) trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, DirectorError>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, DirectorError> {
        self.map_err(|e| DirectorError::Step {
            what: what(),
            source: e.into(),
        })
    }
}

/// Config that is valid per the contract but that this director cannot run:
/// more real servers than backend ids. `--check`, start-up and reload all
/// ask. (`io: af_xdp` is checked when the director starts, since only then
/// is it known whether the program loads.)
pub fn unsupported(cfg: &Config, file: &str) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let servers: usize = cfg.services.iter().map(|s| s.real_servers.len()).sum();
    if servers > publish::USABLE_BACKEND_IDS {
        out.push(ConfigError {
            file: file.to_string(),
            line: None,
            field: "services".into(),
            message: format!(
                "{servers} real servers in all; one director runs at most {} (split the services over several directors)",
                publish::USABLE_BACKEND_IDS
            ),
        });
    }
    out
}

/// The running director: everything the slow-path loop works on.
pub struct Director {
    path: PathBuf,
    cfg: Config,
    ifinfo: IfInfo,
    shared: Arc<Shared>,
    stats: Vec<Arc<WorkerStats>>,
    rt: Runtime,
    neigh: NeighbourCache,
    /// The IPv6 address, router and neighbours (NDP resolves the servers).
    host6: Host6,
    arp: RawSocket,
    slow: SlowCounters,
    rates: RateMeter<u32>,
    health_reasons: HashMap<u32, String>,
    checker: Checker,
    gateway: Option<u32>,
    /// ARP senders seen on the segment (next hops for NAT replies).
    seen: HashMap<u32, [u8; 6]>,
    dirty: bool,
    started_unix: f64,
    /// How the last load of the config went (`ulvs_config_last_reload_*`).
    last_reload: LastReload,
    /// The file `cfg` was loaded from (its digest): a reload of the same
    /// bytes changes nothing and is answered without a parse.
    in_force: reload::InForce,
    /// The XDP program when the workers run on AF_XDP (its address map
    /// follows the VIPs on reload).
    xdp: Option<Arc<XdpRedirect>>,
    /// The table generation after which the XDP fast path is flushed once
    /// more ([`fast_path`]).
    fast_flush_pending: Option<u64>,
    /// Each service's Maglev table while its inputs are unchanged.
    cache: MaglevCache,
    /// Per service, the digest of its published Maglev table.
    digests: HashMap<String, u64>,
    /// Counters an id had when a new server took it over (reported from there).
    baseline: HashMap<BackendId, Counters>,
    /// Connection counters of the control socket and of `metrics_listen`
    /// (copied from their endpoints each loop iteration).
    listeners: (ConnCounters, Option<ConnCounters>),
    /// Whether the director answers ARP for its VIPs and announces them.
    /// Starts from the config (`announce: arp` on, `none` off); then only
    /// `ulvsadm announce` changes it (a reload keeps it).
    announcing: bool,
    /// Rounds of gratuitous ARP still due after `announce on`.
    garp_left: u8,
    /// Whether every worker made progress recently (the loop's watchdog
    /// view, for `ulvsadm check`).
    workers_live: bool,
    /// `announce: route`: the TUN device and the host routes on it (None in
    /// the other modes). The device goes when the process does.
    routes: Option<(RouteDevice, HostRoutes<KernelRoutes>)>,
    /// The flow-sync thread (with `sync`), its workers' links and how
    /// frames are spread over the workers.
    sync: Option<crate::sync::thread::Handle>,
    sync_links: Vec<Arc<crate::dataplane::synclink::WorkerLink>>,
    sync_placement: crate::dataplane::synclink::Placement,
    /// The host's routes, addresses, link and neighbours, kept current by
    /// `netlink` (none when netlink could not be opened: then the gateway
    /// and the interface's facts stay as read at start).
    netlink: Option<super::netlink::Watcher>,
    view: super::netlink::HostView,
    /// The view's `topology` when next hops were last derived from it.
    view_topology: u64,
    /// A new default gateway not yet resolved: until its MAC is known the
    /// table keeps the old one (which usually still forwards), so a change
    /// of gateway drops nothing.
    gateway_next: Option<Option<u32>>,
    /// Real servers whose next hop is not themselves (off-link, through a
    /// gateway): server address -> next-hop address.
    hops: HashMap<u32, u32>,
    /// Neighbor Discovery: the IPv6 side of `arp`, `neigh`, `seen`, `hops`.
    nd: nd::Nd,
}

/// How the last attempt to load the config went: at start (which succeeded,
/// or the director would not run), then at each reload.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LastReload {
    ok: bool,
    /// When the config in use was loaded, in seconds since the Unix epoch.
    success_unix: f64,
}

/// Now, in seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Does the config have any NAT service?
fn has_nat(cfg: &Config) -> bool {
    cfg.services.iter().any(|s| s.mode == Mode::Nat)
}

/// The IPv4 NAT servers' addresses, sorted.
fn nat_servers(cfg: &Config) -> Vec<u32> {
    sorted(nat_addrs(cfg).filter_map(publish::ipv4))
}

fn nat_addrs(cfg: &Config) -> impl Iterator<Item = IpAddr> + '_ {
    cfg.services
        .iter()
        .filter(|s| s.mode == Mode::Nat)
        .flat_map(|s| s.real_servers.iter().map(|r| r.address))
}

fn sorted<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Health-check targets of the config (servers with a probe port in
/// services whose kind is not `none`).
fn health_targets(cfg: &Config, rt: &Runtime) -> Vec<Target> {
    let mut out = Vec::new();
    for s in &cfg.services {
        let h = &s.health;
        for r in &s.real_servers {
            let Some(port) = publish::probe_port(s, r) else {
                continue;
            };
            let Some(srt) = rt.get(&s.name, r.address, r.port) else {
                continue;
            };
            let kind = match h.kind {
                HealthKind::Http => ProbeKind::Http {
                    path: h.path.clone(),
                    // RFC 9110: an IPv6 literal host is bracketed.
                    host: match r.address {
                        IpAddr::V4(a) => a.to_string(),
                        IpAddr::V6(a) => format!("[{a}]"),
                    },
                    expect_status: h.expect_status,
                },
                _ => ProbeKind::Tcp,
            };
            out.push(Target {
                id: srt.id,
                addr: SocketAddr::new(r.address, port),
                kind,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                rise: h.rise,
                fall: h.fall,
            });
        }
    }
    out
}

/// The IPv4 VIPs, sorted.
fn vips(cfg: &Config) -> Vec<u32> {
    sorted(cfg.services.iter().filter_map(|s| publish::ipv4(s.vip)))
}

/// The VIPs (both families) with at least one real server up (healthy and
/// not drained) in some service: those `announce: route` installs a host
/// route for.
fn served_vips(cfg: &Config, rt: &Runtime) -> BTreeSet<IpAddr> {
    cfg.services
        .iter()
        .filter(|s| {
            s.real_servers.iter().any(|r| {
                rt.get(&s.name, r.address, r.port)
                    .is_some_and(|srt| srt.state() == BackendState::Up)
            })
        })
        .map(|s| s.vip)
        .collect()
}

/// The IPv4 real servers' addresses, sorted.
fn server_addrs(cfg: &Config) -> Vec<u32> {
    sorted(server_ips(cfg).filter_map(publish::ipv4))
}

fn server_ips(cfg: &Config) -> impl Iterator<Item = IpAddr> + '_ {
    cfg.services
        .iter()
        .flat_map(|s| s.real_servers.iter().map(|r| r.address))
}

/// Build the table of (`cfg`, `rt`) with the director's neighbours and
/// interface facts (a free function so a reload can build aside).
#[allow(clippy::too_many_arguments)]
fn build_with(
    cfg: &Config,
    rt: &Runtime,
    (neigh, host6): (&NeighbourCache, &Host6),
    seen: &HashMap<u32, [u8; 6]>,
    (gateway, hops): (Option<u32>, &HashMap<u32, u32>),
    ifinfo: &IfInfo,
    generation: u64,
    cache: &mut MaglevCache,
) -> Built {
    // A server behind a gateway is reached at that gateway's MAC.
    let resolved = |a: u32| neigh.mac(hops.get(&a).copied().unwrap_or(a));
    let resolved6 = |a: u128| host6.mac(a);
    let inputs = Inputs {
        cfg,
        rt,
        resolved: &resolved,
        seen,
        gateway,
        iface: Iface {
            mac: ifinfo.mac,
            ipv4: ifinfo.ipv4,
            netmask: ifinfo.netmask,
            mtu: ifinfo.mtu,
        },
        generation,
        v6: host6.inputs(&resolved6),
    };
    publish::build(&inputs, cache)
}

impl Director {
    /// Build and publish a new table of the current state.
    fn publish(&mut self) {
        self.settle_gateway();
        self.slow.generation += 1;
        let built = build_with(
            &self.cfg,
            &self.rt,
            (&self.neigh, &self.host6),
            &self.seen,
            (self.gateway, &self.hops),
            &self.ifinfo,
            self.slow.generation,
            &mut self.cache,
        );
        self.install(built);
    }

    /// Publish after a change of the runtime state (health, drain, weight)
    /// of the servers `ids` alone: only their services' Maglev tables are
    /// rebuilt. When anything else is pending (`dirty`) it is a full publish.
    fn publish_changed(&mut self, ids: &[BackendId]) {
        self.settle_gateway();
        if self.dirty {
            return self.publish();
        }
        self.slow.generation += 1;
        let prev = self.shared.table.load_full();
        let resolved = |a: u32| self.neigh.mac(self.hops.get(&a).copied().unwrap_or(a));
        let resolved6 = |a: u128| self.host6.mac(a);
        let inputs = Inputs {
            cfg: &self.cfg,
            rt: &self.rt,
            resolved: &resolved,
            seen: &self.seen,
            gateway: self.gateway,
            iface: Iface {
                mac: self.ifinfo.mac,
                ipv4: self.ifinfo.ipv4,
                netmask: self.ifinfo.netmask,
                mtu: self.ifinfo.mtu,
            },
            generation: self.slow.generation,
            v6: self.host6.inputs(&resolved6),
        };
        let built = publish::build_changed(&inputs, &mut self.cache, &prev, ids);
        self.install(built);
    }

    /// Publish a built table (one atomic swap).
    fn install(&mut self, built: Built) {
        let servers_changed = self.servers_changed(&built.table);
        self.shared.table.store(Arc::new(built.table));
        if servers_changed {
            self.fast_path_flush();
        }
        self.digests = built.digests;
        self.dirty = false;
        // Server states only change through a publish: the served VIPs too.
        self.sync_routes();
    }

    /// Addresses whose MACs the director resolves: real servers' next hops
    /// (the server itself on-link, else the gateway its route names) and
    /// the default gateway.
    fn wanted(&self) -> Vec<u32> {
        let mut w: Vec<u32> = server_addrs(&self.cfg)
            .into_iter()
            .map(|a| self.hops.get(&a).copied().unwrap_or(a))
            .collect();
        w.extend(self.gateway);
        w.extend(self.gateway_next.flatten());
        w.sort_unstable();
        w.dedup();
        w
    }

    /// Apply health transitions from the checker.
    fn health_tick(&mut self) {
        let ts = self.checker.poll_transitions();
        if ts.is_empty() {
            return;
        }
        // One pass over the servers, however many transitions (at start
        // every checked server reports its first result at once).
        let latest: HashMap<BackendId, health::Health> = ts.into_iter().map(|t| (t.id, t.health)).collect();
        let mut changed = Vec::with_capacity(latest.len());
        for s in self.rt.servers.values_mut() {
            if let Some(h) = latest.get(&s.id) {
                s.health = match h {
                    health::Health::Up => publish::Health::Up,
                    health::Health::Down => publish::Health::Down,
                    health::Health::Pending => publish::Health::Pending,
                };
                changed.push(s.id);
            }
        }
        self.health_reasons = self
            .checker
            .states()
            .into_iter()
            .filter_map(|(id, _, reason)| reason.map(|r| (id, r)))
            .collect();
        self.publish_changed(&changed);
    }

    /// Feed the rate estimator with every backend's counters.
    fn sample_rates(&mut self, now: Instant) {
        // A set: 5,000 services of 3 servers made a Vec's `contains` cost
        // 225 million comparisons a second.
        let ids: std::collections::HashSet<u32> = self.rt.servers.values().map(|s| s.id).collect();
        let fast = self.fast_per_server();
        for &id in &ids {
            self.rates
                .sample(id, now, report::backend_counters(&self.stats, &fast, id));
        }
        self.rates.retain(|id| ids.contains(id));
        let stats = &self.stats;
        let released = self.rt.release(now, |id| report::flows_of(stats, id));
        if !released.is_empty() {
            info!(
                "{} backend id(s) of removed servers free for reuse (their flows have ended)",
                released.len()
            );
            self.dirty = true;
        }
    }

    /// Remember the counters of ids that were not in use (`before`) and
    /// that a server now has (taken over from a removed server).
    fn take_baselines(&mut self, before: &std::collections::HashSet<BackendId>) {
        let mut fresh = Vec::new();
        for s in self.rt.servers.values() {
            if !before.contains(&s.id) {
                fresh.push(s.id);
            }
        }
        let fast = self.fast_per_server();
        for id in fresh {
            let c = report::backend_counters(&self.stats, &fast, id);
            if c == Counters::default() {
                self.baseline.remove(&id);
            } else {
                self.baseline.insert(id, c);
            }
        }
    }

    /// Answer one control request (`ulvsadm`); changes take effect (a new
    /// table is published) before this returns. `list` and `flows` are
    /// answered in parts ([`listing`]): tens of megabytes at scale.
    fn handle(&mut self, req: Request) -> Answered<listing::Parts> {
        let resp = match req {
            Request::List => return Answered::Parts(self.list_parts()),
            Request::Stats => Response::ok(json!(self.stats())),
            Request::Reload => match self.reload_notified() {
                Ok(m) => Response::ok(json!({ "message": m })),
                // The first line is the one-line reason; any further
                // problems follow, one per line, as `--check` prints them.
                Err(e) => Response::err(format!("reload rejected, running config kept: {e}")),
            },
            Request::Announce { on: None } => Response::ok(json!({ "announcing": self.announcing })),
            Request::Announce { on: Some(on) } => {
                let m = self.set_announcing(on);
                Response::ok(json!({ "announcing": self.announcing, "message": m }))
            }
            Request::Flows {
                service,
                server,
                client,
            } => match self.flows(service.as_deref(), server.as_deref(), client.as_deref()) {
                Ok(f) => return Answered::Parts(listing::Parts::Flows(listing::FlowParts::new(f))),
                Err(e) => Response::err(e),
            },
            Request::Trace {
                protocol,
                client,
                vip,
            } => match self.trace(&protocol, &client, &vip) {
                Ok(t) => Response::ok(json!(t)),
                Err(e) => Response::err(e),
            },
            Request::Check => {
                let reason = report::not_forwarding(&self.list(), self.workers_live);
                Response::ok(json!({ "forwarding": reason.is_none(), "reason": reason }))
            }
            Request::Drain { service, address } => {
                self.set_server(&service, &address, |s| s.drained = true, "draining")
            }
            Request::Enable { service, address } => {
                self.set_server(&service, &address, |s| s.drained = false, "enabled")
            }
            Request::Weight {
                service,
                address,
                weight,
            } => {
                if weight > 65535 {
                    return Answered::Whole(Response::err(format!("weight {weight} out of range 0..=65535")));
                }
                self.set_server(
                    &service,
                    &address,
                    |s| s.weight_override = Some(weight as u32),
                    "weight set",
                )
            }
        };
        Answered::Whole(resp)
    }

    /// The `ulvsadm list` snapshot.
    pub fn list(&self) -> super::snapshot::List {
        report::list(&self.sources(&self.fast_per_server()))
    }

    /// What `list` and its streamed form snapshot.
    fn sources<'a>(&'a self, fast: &'a [FastCounters]) -> report::Sources<'a> {
        report::Sources {
            cfg: &self.cfg,
            rt: &self.rt,
            neigh: &self.neigh,
            host6: &self.host6,
            stats: &self.stats,
            rates: &self.rates,
            health_reasons: &self.health_reasons,
            digests: &self.digests,
            baseline: &self.baseline,
            fast,
        }
    }

    /// The `ulvsadm stats` snapshot, with the listeners' connection counters.
    pub fn stats(&self) -> Stats {
        Stats {
            announcing: self.announcing,
            announced_routes: self
                .routes
                .as_ref()
                .map(|(_, h)| h.installed().map(super::hostroutes::route_name).collect()),
            xdp_fast_path: self.fast_path_counters(),
            control_connections: Some(self.listeners.0),
            http_connections: self.listeners.1,
            sync: self.sync.as_ref().map(|h| h.snapshot()),
            ..report::stats(&self.stats, &self.slow)
        }
    }

    /// Start the flow-sync thread when the config has `sync` (once, at
    /// start; a reload does not change it).
    ///
    /// # Errors
    /// `sync.listen` cannot be bound.
    fn start_sync(&mut self) -> Result<(), DirectorError> {
        let Some(sc) = &self.cfg.sync else {
            return Ok(());
        };
        let settings = crate::sync::thread::Settings::from_config(sc, &self.cfg.timeouts);
        let h = crate::sync::thread::spawn(
            &settings,
            self.sync_links.clone(),
            self.sync_placement,
            self.shared.clone(),
        )
        .step(|| format!("binding sync.listen {}", sc.listen))?;
        info!(
            "flow sync on {} with {} peer(s) ({}), refresh every {} ms; asking the peers for their flows",
            sc.listen,
            sc.peers.len(),
            if settings.key.is_some() {
                "HMAC-SHA256"
            } else {
                "no key: peers' source addresses only"
            },
            settings.refresh.as_millis()
        );
        self.sync = Some(h);
        Ok(())
    }

    /// [`Director::reload`] between systemd's `RELOADING=1` and `READY=1`.
    fn reload_notified(&mut self) -> Result<String, String> {
        watchdog::reloading();
        let r = self.reload();
        watchdog::ready(match &r {
            Ok(_) => "running; config reloaded",
            Err(_) => "running; reload rejected, the previous config stays",
        });
        r
    }

    /// The body of `GET /metrics` (Prometheus text) or `GET /` (the status
    /// page), both from one snapshot.
    pub fn http_body(&self, page: metrics::Page) -> String {
        let (stats, list) = (self.stats(), self.list());
        let extra = metrics::Extra {
            start_time_seconds: self.started_unix,
            version: env!("CARGO_PKG_VERSION"),
            last_reload_successful: self.last_reload.ok,
            last_reload_success_time_seconds: self.last_reload.success_unix,
            process: ProcessStats::read(crate::io::sys::clock_ticks_per_second()),
        };
        match page {
            metrics::Page::Metrics => metrics::render(&stats, &list, &extra),
            metrics::Page::Status => status_page::render(&stats, &list, &extra, unix_now()),
        }
    }

    fn set_server(
        &mut self,
        service: &str,
        address: &str,
        f: impl FnOnce(&mut publish::ServerRt),
        what: &str,
    ) -> Response {
        match self.rt.find_mut(&self.cfg, service, address) {
            Ok(s) => {
                f(s);
                let id = s.id;
                info!("{service} {address}: {what}");
                self.publish_changed(&[id]);
                Response::ok(json!({ "message": format!("{service} {address}: {what}") }))
            }
            Err(e) => Response::err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Service;

    #[test]
    fn served_vips_are_those_with_a_server_up() {
        let text = "interface: eth0\nservices:\n  - name: a\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n  - name: b\n    vip: 198.18.100.1\n    port: 443\n    real_servers:\n      - address: 198.18.0.13\n  - name: c\n    vip: 198.18.100.2\n    port: 80\n    real_servers: []\n";
        let cfg = Config::from_str(text, "t.yaml").unwrap();
        let mut rt = Runtime::default();
        rt.sync(&cfg).unwrap();
        let set = |h: &[(&str, &str, publish::Health, bool)], rt: &mut Runtime| {
            for (svc, addr, health, drained) in h {
                let s = rt.find_mut(&cfg, svc, addr).unwrap();
                s.health = *health;
                s.drained = *drained;
            }
        };
        use publish::Health::{Down, Pending, Up};
        set(
            &[
                ("a", "198.18.0.11", Pending, false),
                ("a", "198.18.0.12", Down, false),
                ("b", "198.18.0.13", Down, false),
            ],
            &mut rt,
        );
        assert!(served_vips(&cfg, &rt).is_empty(), "nothing up yet");
        set(&[("b", "198.18.0.13", Up, true)], &mut rt);
        assert!(
            served_vips(&cfg, &rt).is_empty(),
            "a drained server takes no new flows"
        );
        set(&[("a", "198.18.0.12", Up, false)], &mut rt);
        let vip = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 100, 1));
        assert_eq!(served_vips(&cfg, &rt), BTreeSet::from([vip]));
        set(
            &[("a", "198.18.0.12", Down, false), ("b", "198.18.0.13", Up, false)],
            &mut rt,
        );
        assert_eq!(
            served_vips(&cfg, &rt),
            BTreeSet::from([vip]),
            "any service of the VIP keeps it; the VIP without servers never"
        );
    }

    /// An IPv6 service beside an IPv4 one: its servers are probed at
    /// [address]:port, and the IPv4-only kernel lists (nft, XDP, ARP) keep
    /// to IPv4 addresses instead of failing on it; host routes take both.
    #[test]
    fn ipv6_services_beside_ipv4_ones() {
        let text = "interface: eth0\nservices:\n  - name: web6\n    vip: 2001:db8:100::1\n    port: 80\n    mode: nat\n    health: {kind: http}\n    real_servers:\n      - address: \"[2001:db8::11]:8080\"\n      - address: 2001:db8::12\n  - name: web4\n    vip: 198.18.100.1\n    port: 80\n    mode: nat\n    health: {kind: tcp}\n    real_servers:\n      - address: 198.18.0.11\n";
        let cfg = Config::from_str(text, "t.yaml").unwrap();
        let mut rt = Runtime::default();
        rt.sync(&cfg).unwrap();
        let targets = health_targets(&cfg, &rt);
        let shown: Vec<(String, String)> = targets
            .iter()
            .map(|t| {
                let host = match &t.kind {
                    ProbeKind::Http { host, .. } => host.clone(),
                    ProbeKind::Tcp => "-".into(),
                };
                (t.addr.to_string(), host)
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("[2001:db8::11]:8080".to_string(), "[2001:db8::11]".to_string()),
                ("[2001:db8::12]:80".to_string(), "[2001:db8::12]".to_string()),
                ("198.18.0.11:80".to_string(), "-".to_string()),
            ]
        );
        assert_eq!(vips(&cfg), [0xc612_6401]);
        assert_eq!(nat_servers(&cfg), [0xc612_000b]);
        assert_eq!(server_addrs(&cfg), [0xc612_000b]);
        for s in rt.servers.values_mut() {
            s.health = publish::Health::Up;
        }
        // Host routes are for both families: a /128 for the IPv6 VIP.
        assert_eq!(
            served_vips(&cfg, &rt),
            BTreeSet::from([
                "198.18.100.1".parse::<IpAddr>().unwrap(),
                "2001:db8:100::1".parse().unwrap()
            ])
        );
        // A table builds with both families and the director's IPv6 facts.
        let mut host6 = Host6 {
            address: Some((
                u128::from("2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap()),
                64,
            )),
            ..Host6::default()
        };
        let a11 = u128::from("2001:db8::11".parse::<std::net::Ipv6Addr>().unwrap());
        host6.neighbours.insert(a11, [2, 0, 0, 0, 0, 0x11]);
        let ifinfo = IfInfo {
            index: 1,
            mac: [2; 6],
            ipv4: Some(0xc612_0002),
            netmask: 0xffff_ff00,
            mtu: 1500,
        };
        let built = build_with(
            &cfg,
            &rt,
            (&NeighbourCache::default(), &host6),
            &HashMap::new(),
            (None, &HashMap::new()),
            &ifinfo,
            1,
            &mut MaglevCache::default(),
        );
        let t = built.table;
        assert_eq!((t.services.len(), t.services6.len()), (1, 1));
        assert_eq!(t.director_ip6, host6.address.unwrap().0);
        let id11 = rt
            .get("web6", "2001:db8::11".parse().unwrap(), Some(8080))
            .unwrap()
            .id;
        assert_eq!(t.backend(id11).mac, Some([2, 0, 0, 0, 0, 0x11]));
        assert_eq!(t.backend6(id11).addr, a11);
    }

    #[test]
    fn more_servers_than_ids_is_refused_with_a_sentence() {
        let text = "interface: eth0\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n";
        let mut cfg = Config::from_str(text, "big.yaml").unwrap();
        assert!(unsupported(&cfg, "big.yaml").is_empty());
        let one = cfg.services[0].real_servers[0].clone();
        cfg.services[0].real_servers = vec![one; publish::USABLE_BACKEND_IDS];
        assert!(unsupported(&cfg, "big.yaml").is_empty(), "exactly the limit fits");
        let extra = cfg.services[0].clone();
        cfg.services.push(Service {
            real_servers: extra.real_servers[..1].to_vec(),
            ..extra
        });
        let e = unsupported(&cfg, "big.yaml");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            format!(
                "big.yaml: services: {} real servers in all; one director runs at most {} \
                 (split the services over several directors)",
                publish::USABLE_BACKEND_IDS + 1,
                publish::USABLE_BACKEND_IDS
            )
        );
    }
}
