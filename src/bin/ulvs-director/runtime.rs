//! The director's slow-path loop: it owns the config, the runtime state of
//! the real servers, ARP, the kernel drop rule and the control socket, and it
//! publishes a new forwarding table (one atomic swap) whenever any of them
//! changes. Workers run on their own threads and only read that table.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use log::{error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use ulvs::control::arp::{self, NeighbourCache};
use ulvs::control::config::{Config, ConfigError, HealthKind, IoBackend, Mode};
use ulvs::control::ctl::{Request, Response};
use ulvs::control::health::{self, Checker, ProbeKind, Target};
use ulvs::control::metrics;
use ulvs::control::nft;
use ulvs::control::publish::{self, Runtime};
use ulvs::control::rates::RateMeter;
use ulvs::control::serve::{self, Endpoint, Kind, Limits};
use ulvs::control::snapshot::{ConnCounters, Stats};
use ulvs::control::watchdog::{self, Liveness, Watchdog};
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::worker::{Shared, Worker};
use ulvs::io::packet_ring::PacketDevice;
use ulvs::io::sys::{self, IfInfo, RawSocket, RingConfig};
use ulvs::io::xdp::{self as xdpio, XdpDevice, XdpRedirect};
use ulvs::io::Device;
use ulvs::wire::ethernet::fmt_mac;

use crate::report::{self, SlowCounters};

const ARP: Token = Token(1);
/// The control socket's listener; its connections take the tokens after it.
const CONTROL_BASE: usize = 16;
/// `metrics_listen`'s listener; its connections take the tokens after it.
const HTTP_BASE: usize = CONTROL_BASE + 1 + Limits::CONTROL.max_connections;
/// Most on-link neighbours remembered from ARP (next hops for NAT replies).
const MAX_SEEN_NEIGHBOURS: usize = 4096;

/// Config that is valid per the contract but that this build cannot run yet
/// (nothing at the moment: `io: af_xdp` is checked when the director starts,
/// since only then is it known whether the program loads).
pub fn unsupported(_cfg: &Config, _file: &str) -> Vec<ConfigError> {
    Vec::new()
}

/// Removes the kernel drop rule when dropped (normal exit, error, panic unwind).
struct NftGuard {
    ifname: String,
}

impl Drop for NftGuard {
    fn drop(&mut self) {
        match nft::remove(&self.ifname) {
            Ok(()) => info!("removed the VIP drop rule on {}", self.ifname),
            Err(e) => error!("could not remove the VIP drop rule on {}: {e}", self.ifname),
        }
    }
}

/// Removes the control socket file when dropped.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Director {
    path: PathBuf,
    cfg: Config,
    ifinfo: IfInfo,
    shared: Arc<Shared>,
    stats: Vec<Arc<WorkerStats>>,
    rt: Runtime,
    neigh: NeighbourCache,
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
    /// The XDP program when the workers run on AF_XDP (its address map
    /// follows the VIPs on reload).
    xdp: Option<Arc<XdpRedirect>>,
    /// Connection counters of the control socket and of `metrics_listen`
    /// (copied from their endpoints each loop iteration).
    listeners: (ConnCounters, Option<ConnCounters>),
}

/// Does the config have any NAT service?
fn has_nat(cfg: &Config) -> bool {
    cfg.services.iter().any(|s| s.mode == Mode::Nat)
}

fn nat_servers(cfg: &Config) -> Vec<u32> {
    let mut v: Vec<u32> = cfg
        .services
        .iter()
        .filter(|s| s.mode == Mode::Nat)
        .flat_map(|s| s.real_servers.iter().map(|r| u32::from(r.address)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Health-check targets of the config (services whose kind is not `none`).
fn health_targets(cfg: &Config, rt: &Runtime) -> Vec<Target> {
    let mut out = Vec::new();
    for s in &cfg.services {
        let h = &s.health;
        if h.kind == HealthKind::None {
            continue;
        }
        for r in &s.real_servers {
            let Some(srt) = rt.get(&s.name, r.address, r.port) else {
                continue;
            };
            let port = h.port.or(r.port).unwrap_or(s.port);
            if port == 0 {
                continue;
            }
            let kind = match h.kind {
                HealthKind::Http => ProbeKind::Http {
                    path: h.path.clone(),
                    host: r.address.to_string(),
                    expect_status: h.expect_status,
                },
                _ => ProbeKind::Tcp,
            };
            out.push(Target {
                id: srt.id,
                addr: SocketAddrV4::new(r.address, port),
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

fn vips(cfg: &Config) -> Vec<u32> {
    let mut v: Vec<u32> = cfg.services.iter().map(|s| u32::from(s.vip)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn server_addrs(cfg: &Config) -> Vec<u32> {
    let mut v: Vec<u32> = cfg
        .services
        .iter()
        .flat_map(|s| s.real_servers.iter().map(|r| u32::from(r.address)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Director {
    fn publish(&mut self) {
        self.slow.generation += 1;
        let neigh = &self.neigh;
        let table = publish::build_table(
            &self.cfg,
            &self.rt,
            |a| neigh.mac(u32::from(a)),
            self.ifinfo.mac,
            self.ifinfo.ipv4.unwrap_or(0),
            self.slow.generation,
        );
        let mut table = table;
        publish::carry_removed(&mut table, &self.shared.table.load());
        table.mtu = self.ifinfo.mtu;
        table.gateway_mac = self
            .gateway
            .and_then(|g| self.neigh.mac(g).or_else(|| self.seen.get(&g).copied()));
        if let Some(ip) = self.ifinfo.ipv4 {
            table.onlink = (ip & self.ifinfo.netmask, self.ifinfo.netmask);
        }
        let mut n: Vec<(u32, [u8; 6])> = self.seen.iter().map(|(a, m)| (*a, *m)).collect();
        n.sort_unstable();
        table.neighbours = n;
        self.shared.table.store(Arc::new(table));
        self.dirty = false;
    }

    /// Addresses whose MACs the director resolves: real servers (on-link;
    /// off-link ones are reached through the gateway) and the gateway.
    fn wanted(&self) -> Vec<u32> {
        let mut w = server_addrs(&self.cfg);
        w.extend(self.gateway);
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
        for t in ts {
            if let Some(s) = self.rt.servers.values_mut().find(|s| s.id == t.id) {
                s.health = match t.health {
                    health::Health::Up => publish::Health::Up,
                    health::Health::Down => publish::Health::Down,
                };
            }
        }
        self.health_reasons = self
            .checker
            .states()
            .into_iter()
            .filter_map(|(id, _, reason)| reason.map(|r| (id, r)))
            .collect();
        self.publish();
    }

    /// The Prometheus page of a scrape.
    fn metrics_body(&self) -> String {
        let stats = self.stats_snapshot();
        let list = report::list(
            &self.cfg,
            &self.rt,
            &self.neigh,
            &self.stats,
            &self.rates,
            &self.health_reasons,
        );
        metrics::render(
            &stats,
            &list,
            &metrics::Extra {
                start_time_seconds: self.started_unix,
                version: env!("CARGO_PKG_VERSION"),
            },
        )
    }

    /// `ulvsadm stats`, with the listeners' connection counters.
    fn stats_snapshot(&self) -> Stats {
        Stats {
            control_connections: Some(self.listeners.0),
            http_connections: self.listeners.1,
            ..report::stats(&self.stats, &self.slow)
        }
    }

    /// Feed the rate estimator with every backend's counters.
    fn sample_rates(&mut self, now: Instant) {
        let ids: Vec<u32> = self.rt.servers.values().map(|s| s.id).collect();
        for &id in &ids {
            self.rates
                .sample(id, now, report::backend_counters(&self.stats, id));
        }
        self.rates.retain(|id| ids.contains(id));
    }

    fn send_frame(&mut self, frame: &[u8]) {
        if let Err(e) = self.arp.send(frame) {
            warn!("ARP send on {} failed: {e}", self.cfg.interface);
        }
    }

    /// Ask for the MACs that are due; republish when one was lost.
    fn arp_tick(&mut self) {
        let (ask, lost) = self.neigh.due(Instant::now());
        let my_ip = self.ifinfo.ipv4.unwrap_or(0);
        for ip in ask {
            let f = arp::request(self.ifinfo.mac, my_ip, ip);
            self.send_frame(&f);
            self.slow.arp_requests += 1;
        }
        if lost {
            warn!("a real server stopped answering ARP; it gets no new flows until it answers");
            self.publish();
        }
    }

    /// Read every queued ARP frame: answer VIP requests, learn server MACs.
    fn arp_read(&mut self) {
        let mut buf = [0u8; 2048];
        let vips = vips(&self.cfg);
        let mut changed = false;
        loop {
            let (n, _pkttype) = match self.arp.recv(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("ARP receive failed: {e}");
                    break;
                }
            };
            let Some(out) = arp::handle_frame(&buf[..n], self.ifinfo.mac, &vips) else {
                continue;
            };
            if let Some(reply) = out.reply {
                self.send_frame(&reply);
                self.slow.arp_replies += 1;
            }
            if let Some((ip, mac)) = out.learned {
                if self.neigh.learn(ip, mac, Instant::now()) {
                    info!("neighbour {} is at {}", Ipv4Addr::from(ip), fmt_mac(&mac));
                    changed = true;
                }
                let onlink = self
                    .ifinfo
                    .ipv4
                    .is_some_and(|a| (a ^ ip) & self.ifinfo.netmask == 0);
                if onlink && self.seen.get(&ip) != Some(&mac) && self.seen.len() < MAX_SEEN_NEIGHBOURS {
                    self.seen.insert(ip, mac);
                    self.dirty = true;
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    fn announce(&mut self, vips: &[u32]) {
        for &v in vips {
            let g = arp::gratuitous(self.ifinfo.mac, v);
            self.send_frame(&g);
        }
    }

    /// [`Director::reload`] between systemd's `RELOADING=1` and `READY=1`.
    fn reload_notified(&mut self) -> std::result::Result<String, String> {
        watchdog::reloading();
        let r = self.reload();
        watchdog::ready(match &r {
            Ok(_) => "running; config reloaded",
            Err(_) => "running; reload rejected, the previous config stays",
        });
        r
    }

    /// Re-read the config; on any problem keep the running one.
    fn reload(&mut self) -> std::result::Result<String, String> {
        let file = self.path.display().to_string();
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(errs) => {
                self.slow.reload_failures += 1;
                for e in &errs.0 {
                    error!("reload rejected: {e}");
                }
                return Err(errs.to_string());
            }
        };
        let mut problems: Vec<String> = unsupported(&new, &file).iter().map(|e| e.to_string()).collect();
        if new.interface != self.cfg.interface {
            problems.push(format!(
                "{file}: interface: cannot change from {} to {} on reload; restart the director",
                self.cfg.interface, new.interface
            ));
        }
        if !problems.is_empty() {
            self.slow.reload_failures += 1;
            for p in &problems {
                error!("reload rejected: {p}");
            }
            return Err(problems.join("\n"));
        }
        for (what, changed) in [
            ("control_socket", new.control_socket != self.cfg.control_socket),
            ("workers", new.workers != self.cfg.workers),
            ("flow_capacity", new.flow_capacity != self.cfg.flow_capacity),
            ("cpus", new.cpus != self.cfg.cpus),
            ("io", new.io != self.cfg.io),
            ("metrics_listen", new.metrics_listen != self.cfg.metrics_listen),
        ] {
            if changed {
                warn!("reload: {what} changed; it takes effect at the next restart");
            }
        }
        let mut rt_probe = Runtime::default();
        std::mem::swap(&mut rt_probe, &mut self.rt);
        let mut rt = rt_probe;
        if let Err(e) = rt.sync(&new) {
            // sync changes nothing on error
            self.rt = rt;
            self.slow.reload_failures += 1;
            return Err(e.to_string());
        }
        let old_vips = vips(&self.cfg);
        let new_vips = vips(&new);
        if old_vips != new_vips || nat_servers(&self.cfg) != nat_servers(&new) {
            if let Err(e) = nft::install(&new.interface, &new_vips, &nat_servers(&new), self.ifinfo.ipv4) {
                // Roll back the runtime to the running config.
                let _ = rt.sync(&self.cfg);
                self.rt = rt;
                self.slow.reload_failures += 1;
                return Err(format!("cannot update the VIP drop rule: {e}"));
            }
            if let Some(Err(e)) = self
                .xdp
                .as_ref()
                .map(|x| x.set_addresses(&new_vips, &nat_servers(&new)))
            {
                if let Some(x) = &self.xdp {
                    let _ = x.set_addresses(&old_vips, &nat_servers(&self.cfg));
                }
                let _ = rt.sync(&self.cfg);
                self.rt = rt;
                self.slow.reload_failures += 1;
                return Err(format!("cannot update the XDP redirect map: {e}"));
            }
        }
        // Keep the running values of what needs a restart.
        let mut new = new;
        new.control_socket = self.cfg.control_socket.clone();
        new.workers = self.cfg.workers;
        new.flow_capacity = self.cfg.flow_capacity;
        new.cpus = self.cfg.cpus.clone();
        new.io = self.cfg.io;
        new.metrics_listen = self.cfg.metrics_listen;
        if has_nat(&new) && !has_nat(&self.cfg) && self.stats.len() > 1 {
            warn!(
                "reload: NAT services with {} workers: reply state is per worker; restart to run 1 worker",
                self.stats.len()
            );
        }
        // Servers of services that are no longer checked are up.
        for s in &new.services {
            if s.health.kind == HealthKind::None {
                for r in &s.real_servers {
                    if let Ok(srt) = rt.find_mut(&new, &s.name, &r.endpoint()) {
                        srt.health = publish::Health::Up;
                    }
                }
            }
        }
        self.rt = rt;
        self.cfg = new;
        self.checker.update(health_targets(&self.cfg, &self.rt));
        let wanted = self.wanted();
        self.neigh.set_wanted(wanted);
        self.arp_tick();
        self.publish();
        let added: Vec<u32> = new_vips
            .iter()
            .filter(|v| !old_vips.contains(v))
            .copied()
            .collect();
        self.announce(&added);
        self.slow.reloads += 1;
        let msg = format!(
            "reloaded {}: {} services, generation {}",
            file,
            self.cfg.services.len(),
            self.slow.generation
        );
        info!("{msg}");
        Ok(msg)
    }

    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::List => Response::ok(json!(report::list(
                &self.cfg,
                &self.rt,
                &self.neigh,
                &self.stats,
                &self.rates,
                &self.health_reasons
            ))),
            Request::Stats => Response::ok(json!(self.stats_snapshot())),
            Request::Reload => match self.reload_notified() {
                Ok(m) => Response::ok(json!({ "message": m })),
                // The first line is the one-line reason; any further
                // problems follow, one per line, as `--check` prints them.
                Err(e) => Response::err(format!("reload rejected, running config kept: {e}")),
            },
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
                    return Response::err(format!("weight {weight} out of range 0..=65535"));
                }
                self.set_server(
                    &service,
                    &address,
                    |s| s.weight_override = Some(weight as u32),
                    "weight set",
                )
            }
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
                info!("{service} {address}: {what}");
                self.publish();
                Response::ok(json!({ "message": format!("{service} {address}: {what}") }))
            }
            Err(e) => Response::err(e.to_string()),
        }
    }
}

fn bind_control(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another director is listening on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Each worker's counters and thread.
type Threads = (Vec<Arc<WorkerStats>>, Vec<JoinHandle<()>>);
/// Each worker's counters and thread, and the XDP program when on AF_XDP.
type Workers = (
    Vec<Arc<WorkerStats>>,
    Vec<JoinHandle<()>>,
    Option<Arc<XdpRedirect>>,
);

/// AF_XDP for up to `n` workers: the program attached, one socket per RX
/// queue (queue i -> worker i). Returns the program, the devices and how
/// they run.
fn open_xdp(cfg: &Config, ifinfo: &IfInfo, n: usize) -> Result<(Arc<XdpRedirect>, Vec<XdpDevice>, String)> {
    let ifname = &cfg.interface;
    let queues = xdpio::rx_queues(ifname).with_context(|| format!("counting the RX queues of {ifname}"))?;
    let q = queues as usize;
    if n > q {
        warn!(
            "{n} workers configured but {ifname} has {q} RX queue(s); AF_XDP runs one worker per RX queue, \
             so {q} will run (add queues with `ethtool -L {ifname}` to use more)"
        );
    } else if n < q {
        bail!(
            "{ifname} has {q} RX queues but {n} worker(s) can run; AF_XDP needs a worker on every queue \
             (set workers: {q}, or lower the queues with `ethtool -L {ifname}`)"
        );
    }
    let prog = Arc::new(XdpRedirect::load(ifinfo.index, queues, ifinfo.ipv4)?);
    let mut devs = Vec::with_capacity(q);
    for queue in 0..queues {
        let dev = XdpDevice::open(&prog, ifinfo.index, queue, ifinfo.mac)
            .with_context(|| format!("opening the AF_XDP socket on {ifname} queue {queue}"))?;
        devs.push(dev);
    }
    prog.set_addresses(&vips(cfg), &nat_servers(cfg))
        .context("filling the XDP redirect map")?;
    let copy = if devs.iter().all(|d| d.zero_copy()) {
        "zero-copy"
    } else {
        "copy mode"
    };
    let vlan = match prog.vlan_blind() {
        None => "stripped VLAN tags via XDP metadata",
        Some(why) => {
            warn!(
                "AF_XDP cannot see VLAN tags the driver strips ({why}): a tagged frame to a VIP would be \
                 forwarded as untagged"
            );
            "blind to stripped VLAN tags"
        }
    };
    let how = format!("{} XDP, {copy}, {vlan}", prog.mode().as_str());
    Ok((prog, devs, how))
}

fn spawn_workers(
    cfg: &Config,
    ifinfo: &IfInfo,
    shared: &Arc<Shared>,
    dead: &Arc<AtomicBool>,
) -> Result<Workers> {
    let mut n = cfg.workers.max(1);
    if has_nat(cfg) && n > 1 {
        warn!("NAT services keep their reply state per worker: running 1 worker instead of {n}");
        n = 1;
    }
    let xdp = match cfg.io {
        IoBackend::AfPacket => Err("it is configured".to_string()),
        IoBackend::AfXdp => {
            Ok(open_xdp(cfg, ifinfo, n).with_context(|| format!("io: af_xdp on {}", cfg.interface))?)
        }
        IoBackend::Auto => open_xdp(cfg, ifinfo, n).map_err(|e| {
            let why = format!("{e:#}");
            let mut lines = why.lines();
            let first = lines.next().unwrap_or("").to_string();
            if lines.next().is_some() {
                warn!("AF_XDP could not start: {why}");
            }
            format!("AF_XDP could not start: {first}")
        }),
    };
    match xdp {
        Ok((prog, devs, how)) => {
            let why = match cfg.io {
                IoBackend::Auto => "the XDP program loaded and attached",
                _ => "it is configured",
            };
            info!(
                "io: af_xdp ({how}, partial checksums completed in userspace) with {} worker(s), one per RX queue; io {} chose it because {why}",
                devs.len(),
                cfg.io.as_str()
            );
            let (stats, handles) = start_workers(cfg, devs, shared, dead)?;
            Ok((stats, handles, Some(prog)))
        }
        Err(why) => {
            let group = (std::process::id() & 0xffff) as u16;
            let mut devs = Vec::with_capacity(n);
            for _ in 0..n {
                let rc = RingConfig {
                    fanout_group: (n > 1).then_some(group),
                    ..RingConfig::default()
                };
                let dev = PacketDevice::open(ifinfo.index, rc)
                    .with_context(|| format!("opening the AF_PACKET ring on {}", cfg.interface))?;
                devs.push(dev);
            }
            info!(
                "io: af_packet (TPACKET_V2 ring + sendmmsg, vnet headers) with {n} worker(s); io {} chose it because {why}",
                cfg.io.as_str()
            );
            let (stats, handles) = start_workers(cfg, devs, shared, dead)?;
            Ok((stats, handles, None))
        }
    }
}

/// One thread per device, worker `i` pinned to `cpus[i % len]`.
fn start_workers<D: Device + Send + 'static>(
    cfg: &Config,
    devs: Vec<D>,
    shared: &Arc<Shared>,
    dead: &Arc<AtomicBool>,
) -> Result<Threads> {
    let n = devs.len().max(1);
    let per_worker = (cfg.flow_capacity / n).max(1024);
    let mut stats = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for (i, dev) in devs.into_iter().enumerate() {
        let st = Arc::new(WorkerStats::default());
        stats.push(st.clone());
        let shared = shared.clone();
        let dead = dead.clone();
        let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[i % cfg.cpus.len()]);
        let h = std::thread::Builder::new()
            .name(format!("ulvs-worker-{i}"))
            .spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = sys::pin_to_cpu(c) {
                        warn!("worker {i}: cannot pin to CPU {c}: {e}");
                    }
                }
                let mut w = Worker::new(dev, per_worker, shared, st);
                if let Err(e) = w.run() {
                    error!("worker {i} stopped: {e}");
                    dead.store(true, Ordering::Relaxed);
                }
            })?;
        handles.push(h);
    }
    Ok((stats, handles))
}

/// Run the director until SIGTERM/SIGINT.
///
/// # Errors
/// Startup failed (interface, permissions, nft) or a worker died.
pub fn run(path: PathBuf, cfg: Config) -> Result<()> {
    let ifinfo = sys::if_info(&cfg.interface).with_context(|| format!("interface {}", cfg.interface))?;
    info!(
        "interface {} (index {}, MAC {}, IPv4 {}, MTU {})",
        cfg.interface,
        ifinfo.index,
        fmt_mac(&ifinfo.mac),
        ifinfo
            .ipv4
            .map(|a| Ipv4Addr::from(a).to_string())
            .unwrap_or_else(|| "none".into()),
        ifinfo.mtu
    );
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, term.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;

    let mut rt = Runtime::default();
    rt.sync(&cfg)?;
    let listener = bind_control(&cfg.control_socket)?;
    let _sock_guard = SocketGuard(cfg.control_socket.clone());

    nft::install(&cfg.interface, &vips(&cfg), &nat_servers(&cfg), ifinfo.ipv4)
        .context("installing the VIP drop rule")?;
    let _nft_guard = NftGuard {
        ifname: cfg.interface.clone(),
    };
    info!(
        "kernel drop rule installed: table netdev {}",
        nft::table_name(&cfg.interface)
    );

    let arp_sock = RawSocket::new(ifinfo.index, sys::ETH_P_ARP).context("opening the ARP socket")?;
    let gateway = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| ulvs::control::route::default_gateway(&t, &cfg.interface));
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => {
            let l = TcpListener::bind(a).with_context(|| format!("binding metrics_listen {a}"))?;
            l.set_nonblocking(true)?;
            info!("metrics on http://{a}/metrics");
            Some(l)
        }
        None => None,
    };
    let checker = Checker::spawn(health_targets(&cfg, &rt)).context("starting the health checker")?;
    let shared = Arc::new(Shared::new(ulvs::fwd::table::FwdTable::empty(ifinfo.mac)));
    let dead = Arc::new(AtomicBool::new(false));
    let (stats, handles, xdp) = spawn_workers(&cfg, &ifinfo, &shared, &dead)?;
    let mut d = Director {
        path,
        cfg,
        ifinfo,
        shared: shared.clone(),
        stats,
        rt,
        neigh: NeighbourCache::default(),
        arp: arp_sock,
        slow: SlowCounters::default(),
        rates: RateMeter::default(),
        health_reasons: HashMap::new(),
        checker,
        gateway,
        seen: HashMap::new(),
        dirty: false,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        xdp,
        listeners: (ConnCounters::default(), None),
    };
    let wanted = d.wanted();
    d.neigh.set_wanted(wanted);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&d.arp.as_raw_fd()), ARP, Interest::READABLE)?;
    let mut control = Endpoint::new(
        mio::net::UnixListener::from_std(listener),
        Kind::Control,
        Limits::CONTROL,
        CONTROL_BASE,
        poll.registry(),
    )?;
    let mut http = match metrics_listener {
        Some(l) => Some(Endpoint::new(
            mio::net::TcpListener::from_std(l),
            Kind::Http,
            Limits::HTTP,
            HTTP_BASE,
            poll.registry(),
        )?),
        None => None,
    };
    let mut events = Events::with_capacity(256);

    // Resolve the real servers before announcing the VIPs (up to 1 s), so the
    // first flows find their MACs.
    d.arp_tick();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let wanted = d.wanted();
        if wanted.iter().all(|a| d.neigh.mac(*a).is_some()) {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        d.arp_read();
        d.arp_tick();
    }
    d.publish();
    let all_vips = vips(&d.cfg);
    d.announce(&all_vips);
    info!(
        "director up: {} service(s), {} VIP(s); control socket {}",
        d.cfg.services.len(),
        all_vips.len(),
        d.cfg.control_socket.display()
    );

    watchdog::ready("running");
    let mut wd = Watchdog::from_env();
    let mut liveness = Liveness::new(d.stats.len(), Instant::now(), wd.max_stall());
    let mut last_tick = Instant::now();
    let mut last_rates = Instant::now();
    // Readiness is edge-triggered: serve whatever arrived while starting up.
    let mut first = true;
    while !term.load(Ordering::Relaxed) {
        if dead.load(Ordering::Relaxed) {
            break;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        let mut tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
        if first {
            first = false;
            tokens.push(ARP);
        }
        // ARP first: a VIP's answer never waits behind control requests.
        if tokens.contains(&ARP) {
            d.arp_read();
        }
        let now = Instant::now();
        d.listeners = (control.counters(), http.as_ref().map(Endpoint::counters));
        // Neither endpoint waits on a client: each call reads or writes what
        // the socket holds now and returns.
        let mut answer_control = |line: &[u8]| serve::control_reply(line, |req| d.handle(req));
        for &tok in &tokens {
            if control.owns(tok) {
                control.ready(poll.registry(), tok, now, &mut answer_control);
            }
        }
        control.tick(poll.registry(), now, &mut answer_control);
        if let Some(h) = &mut http {
            let mut answer_http = |head: &[u8]| serve::http_reply(head, || d.metrics_body());
            for &tok in &tokens {
                if h.owns(tok) {
                    h.ready(poll.registry(), tok, now, &mut answer_http);
                }
            }
            h.tick(poll.registry(), now, &mut answer_http);
        }
        if hup.swap(false, Ordering::Relaxed) {
            info!("SIGHUP: reloading {}", d.path.display());
            let _ = d.reload_notified();
        }
        d.health_tick();
        if last_tick.elapsed() >= Duration::from_millis(200) {
            last_tick = Instant::now();
            d.arp_tick();
            if d.dirty {
                d.publish();
            }
        }
        if last_rates.elapsed() >= Duration::from_secs(1) {
            last_rates = Instant::now();
            d.sample_rates(last_rates);
        }
        // Ping systemd only while this loop runs and every worker moves.
        let beats: Vec<u64> = d
            .stats
            .iter()
            .map(|s| s.heartbeat.load(Ordering::Relaxed))
            .collect();
        let live = liveness.check(&beats, Instant::now());
        wd.tick(Instant::now(), live);
    }
    info!("stopping");
    watchdog::stopping();
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    if dead.load(Ordering::Relaxed) {
        bail!("a worker stopped unexpectedly (see the log above)");
    }
    info!("clean stop");
    Ok(())
}
