//! Start-up and the director's loop (slow path): one mio `Poll` over the
//! control socket, the ARP socket and the metrics listener (and their
//! connections), plus timers for ARP, health transitions, rates, signals and
//! the systemd watchdog.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::conn::Listeners;
use super::nd::Nd;
use super::report::SlowCounters;
use super::workers::spawn_workers;
use super::{health_targets, nat_servers, vips, Director, DirectorError, Step};
use crate::control::arp::NeighbourCache;
use crate::control::config::{Announce, Config, FileDigest};
use crate::control::health::Checker;
use crate::control::hostroutes::{HostRoutes, RouteDevice};
use crate::control::netlink::{HostView, Watcher};
use crate::control::nft;
use crate::control::publish::{Health, MaglevCache, Runtime};
use crate::control::rates::RateMeter;
use crate::control::route;
use crate::control::watchdog::{self, Liveness, Watchdog};
use crate::dataplane::worker::Shared;
use crate::fwd::table::FwdTable;
use crate::io::sys::{self, RawSocket};
use crate::wire::ethernet::fmt_mac;

const ARP: Token = Token(1);
/// The rtnetlink socket (routes, addresses, links, neighbours).
const NETLINK: Token = Token(2);
/// The Neighbor Discovery socket.
const ND: Token = Token(3);

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

fn bind_control(path: &Path) -> Result<UnixListener, DirectorError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).step(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(DirectorError::Refused(format!(
                "another director is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).step(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).step(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DirectorError::Other(e.into()))?;
    l.set_nonblocking(true)
        .map_err(|e| DirectorError::Other(e.into()))?;
    Ok(l)
}

fn io_err(e: std::io::Error) -> DirectorError {
    DirectorError::Other(e.into())
}

/// Run the director until SIGTERM/SIGINT.
///
/// # Errors
/// Startup failed (interface, permissions, nft) or a worker died.
pub fn run(path: PathBuf, cfg: Config, digest: FileDigest) -> Result<(), DirectorError> {
    let ifinfo = sys::if_info(&cfg.interface).step(|| format!("interface {}", cfg.interface))?;
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
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone()).map_err(io_err)?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, term.clone()).map_err(io_err)?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()).map_err(io_err)?;

    let mut rt = Runtime::default();
    rt.sync(&cfg).map_err(|e| DirectorError::Other(e.into()))?;
    let listener = bind_control(&cfg.control_socket)?;
    let _sock_guard = SocketGuard(cfg.control_socket.clone());

    // Before the drop rule and the workers: a table or device in use (a
    // second director on this host) stops the start before it touches
    // anything the first one owns.
    let routes = match (cfg.announce, cfg.route_table) {
        (Announce::Route, Some(table)) => {
            let (dev, ops) = RouteDevice::open(table).step(|| "announce: route".to_string())?;
            info!(
                "announce: route: host routes go to table {table} on TUN device {} (index {}); it vanishes with this process",
                dev.name, dev.index
            );
            Some((dev, HostRoutes::new(ops)))
        }
        _ => None,
    };
    nft::install(&cfg.interface, &vips(&cfg), &nat_servers(&cfg), ifinfo.ipv4)
        .step(|| "installing the VIP drop rule".to_string())?;
    let _nft_guard = NftGuard {
        ifname: cfg.interface.clone(),
    };
    info!(
        "kernel drop rule installed: table netdev {}",
        nft::table_name(&cfg.interface)
    );

    let arp_sock =
        RawSocket::new(ifinfo.index, sys::ETH_P_ARP).step(|| "opening the ARP socket".to_string())?;
    let nd = Nd::open(ifinfo.index).step(|| "opening the Neighbor Discovery socket".to_string())?;
    // The live view of the host; without netlink (a kernel or sandbox that
    // refuses it) the gateway is read once from /proc/net/route as before.
    let (netlink, view) = match Watcher::open(ifinfo.index as u32) {
        Ok((w, v)) => (Some(w), v),
        Err(e) => {
            warn!("netlink unavailable ({e}): routes, addresses and MTU are read once, not followed");
            (None, HostView::new(ifinfo.index as u32))
        }
    };
    let gateway = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| route::default_gateway(&t, &cfg.interface));
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => {
            let l = TcpListener::bind(a).step(|| format!("binding metrics_listen {a}"))?;
            l.set_nonblocking(true).map_err(io_err)?;
            info!("metrics on http://{a}/metrics");
            Some(l)
        }
        None => None,
    };
    let checker =
        Checker::spawn(health_targets(&cfg, &rt)).step(|| "starting the health checker".to_string())?;
    let shared = Arc::new(Shared::new(FwdTable::empty(ifinfo.mac)));
    let dead = Arc::new(AtomicBool::new(false));
    let workers = spawn_workers(&cfg, &ifinfo, &shared, &dead)?;
    let (stats, handles, xdp) = (workers.stats, workers.handles, workers.xdp);
    let mut d = Director {
        path,
        cfg,
        ifinfo,
        shared: shared.clone(),
        stats,
        rt,
        neigh: NeighbourCache::default(),
        host6: Default::default(),
        arp: arp_sock,
        slow: SlowCounters::default(),
        rates: RateMeter::default(),
        health_reasons: HashMap::new(),
        checker,
        gateway,
        seen: HashMap::new(),
        dirty: false,
        started_unix: super::unix_now(),
        last_reload: super::LastReload {
            ok: true,
            success_unix: super::unix_now(),
        },
        in_force: super::reload::InForce::new(digest),
        xdp,
        fast_flush_pending: None,
        cache: MaglevCache::default(),
        digests: HashMap::new(),
        baseline: HashMap::new(),
        listeners: Default::default(),
        announcing: false,
        garp_left: 0,
        workers_live: true,
        routes,
        sync: None,
        sync_links: workers.links,
        sync_placement: workers.placement,
        netlink,
        view,
        // Not the view's: the first host_apply derives everything.
        view_topology: u64::MAX,
        hops: HashMap::new(),
        gateway_next: None,
        nd,
    };
    d.host_apply();
    d.announcing = d.cfg.announce == Announce::Arp;
    let wanted = d.wanted();
    d.neigh.set_wanted(wanted);

    let mut poll = Poll::new().map_err(io_err)?;
    poll.registry()
        .register(&mut SourceFd(&d.arp.as_raw_fd()), ARP, Interest::READABLE)
        .map_err(io_err)?;
    poll.registry()
        .register(&mut SourceFd(&d.nd.fd()), ND, Interest::READABLE)
        .map_err(io_err)?;
    if let Some(w) = &d.netlink {
        poll.registry()
            .register(&mut SourceFd(&w.as_raw_fd()), NETLINK, Interest::READABLE)
            .map_err(io_err)?;
    }
    let mut listeners = Listeners::new(listener, metrics_listener, poll.registry()).map_err(io_err)?;
    let mut events = Events::with_capacity(256);

    // Resolve the real servers before announcing the VIPs (up to 1 s), so the
    // first flows find their MACs, and let the first probe of each checked
    // server decide its state (it gets no new flows before): the checker
    // probes new targets at once, so this takes about one probe timeout.
    d.arp_tick();
    d.nd_tick();
    let start = Instant::now();
    let health_wait = Duration::from_millis(
        d.cfg
            .services
            .iter()
            .map(|s| s.health.timeout_ms + 200)
            .max()
            .unwrap_or(0)
            .clamp(1000, 3000),
    );
    loop {
        d.health_tick();
        let resolved = d.wanted().iter().all(|a| d.neigh.mac(*a).is_some()) && d.nd_resolved();
        let decided = d.rt.servers.values().all(|s| s.health != Health::Pending);
        let waited = start.elapsed();
        if (resolved || waited >= Duration::from_secs(1)) && (decided || waited >= health_wait) {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(io_err)?;
        d.arp_read();
        d.arp_tick();
        d.nd_read();
        d.nd_tick();
    }
    // Routes only now that the servers are resolved and probed (the
    // publish below installs them).
    if d.cfg.announce == Announce::Route {
        d.announcing = true;
    }
    d.publish();
    // After the first publish: flows a peer sends are resolved against the
    // services, which the empty start-up table does not have.
    d.start_sync()?;
    let all_vips = vips(&d.cfg);
    d.announce(&all_vips);
    d.nd_announce_all(0);
    info!(
        "director up: {} service(s), {} VIP(s); control socket {}; {}",
        d.cfg.services.len(),
        all_vips.len(),
        d.cfg.control_socket.display(),
        match (d.cfg.announce, d.announcing) {
            (Announce::Route, _) => "announcing the VIPs with a server up as host routes",
            (_, true) => "announcing the VIPs (ARP)",
            (_, false) => "not announcing the VIPs (announce: none; `ulvsadm announce on` starts)",
        }
    );

    watchdog::ready("running");
    let mut wd = Watchdog::from_env();
    let mut liveness = Liveness::new(d.stats.len(), Instant::now(), wd.max_stall());
    let mut last_tick = Instant::now();
    let mut last_rates = Instant::now();
    // Readiness is edge-triggered: read whatever ARP arrived while starting
    // up (the listeners accept what is queued at every iteration).
    let mut first = true;
    // A control reply has its next part to send and room for it: poll
    // without waiting (no event comes for room that is already there).
    let mut busy = false;
    while !term.load(Ordering::Relaxed) {
        if dead.load(Ordering::Relaxed) {
            break;
        }
        let wait = if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
        let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
        // ARP first: a VIP's answer never waits behind control requests.
        let first_round = std::mem::take(&mut first);
        if first_round || tokens.contains(&ARP) {
            d.arp_read();
        }
        if first_round || tokens.contains(&ND) {
            d.nd_read();
        }
        if tokens.contains(&NETLINK) {
            d.host_read();
        }
        busy = listeners.serve(&mut d, poll.registry(), &tokens, Instant::now());
        if hup.swap(false, Ordering::Relaxed) {
            info!("SIGHUP: reloading {}", d.path.display());
            let _ = d.reload_notified();
        }
        d.health_tick();
        if last_tick.elapsed() >= Duration::from_millis(200) {
            last_tick = Instant::now();
            d.arp_tick();
            d.nd_tick();
            d.announce_burst();
            d.retry_routes();
            if d.dirty {
                d.publish();
            }
            d.fast_path_settle();
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
        d.workers_live = live;
        wd.tick(Instant::now(), live);
    }
    info!("stopping");
    watchdog::stopping();
    d.withdraw_routes();
    if let Some(h) = d.sync.take() {
        h.stop();
    }
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    if dead.load(Ordering::Relaxed) {
        return Err(DirectorError::Refused(
            "a worker stopped unexpectedly (see the log above)".into(),
        ));
    }
    info!("clean stop");
    Ok(())
}
