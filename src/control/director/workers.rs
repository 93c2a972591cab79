//! Opening the devices (AF_XDP or AF_PACKET) and starting one worker thread
//! per device. After this, the director reaches the workers only through the
//! published table and their counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{error, info, warn};

use super::{has_nat, nat_servers, vips, DirectorError, Step};
use crate::control::config::{Config, IoBackend};
use crate::dataplane::stats::WorkerStats;
use crate::dataplane::synclink::{Placement, WorkerLink};
use crate::dataplane::worker::{Shared, Worker};
use crate::fwd::flow::{FlowTable, WAYS};
use crate::io::packet_ring::{self, PacketDevice};
use crate::io::sys::{self, IfInfo, RingConfig};
use crate::io::xdp::{self as xdpio, XdpDevice, XdpRedirect};
use crate::io::Device;

/// Each worker's counters, thread and sync link (empty without `sync`).
type Threads = (Vec<Arc<WorkerStats>>, Vec<JoinHandle<()>>, Vec<Arc<WorkerLink>>);

/// The started workers.
pub(super) struct Workers {
    pub stats: Vec<Arc<WorkerStats>>,
    pub handles: Vec<JoinHandle<()>>,
    /// The XDP program when on AF_XDP.
    pub xdp: Option<Arc<XdpRedirect>>,
    /// Each worker's queues to the sync thread; allocated only with `sync`.
    pub links: Vec<Arc<WorkerLink>>,
    /// How frames are spread over the workers (where a synced flow goes).
    pub placement: Placement,
}

/// AF_XDP for up to `n` workers: the program attached, one socket per RX
/// queue (queue i -> worker i). Returns the program, the devices and how
/// they run.
fn open_xdp(
    cfg: &Config,
    ifinfo: &IfInfo,
    n: usize,
    fast: Option<u32>,
) -> Result<(Arc<XdpRedirect>, Vec<XdpDevice>, String), DirectorError> {
    let ifname = &cfg.interface;
    let queues = xdpio::rx_queues(ifname).step(|| format!("counting the RX queues of {ifname}"))?;
    let q = queues as usize;
    if n > q {
        warn!(
            "{n} workers configured but {ifname} has {q} RX queue(s); AF_XDP runs one worker per RX queue, \
             so {q} will run (add queues with `ethtool -L {ifname}` to use more)"
        );
    } else if n < q {
        return Err(DirectorError::Refused(format!(
            "{ifname} has {q} RX queues but {n} worker(s) can run; AF_XDP needs a worker on every queue \
             (set workers: {q}, or lower the queues with `ethtool -L {ifname}`)"
        )));
    }
    let prog = Arc::new(
        XdpRedirect::load(ifinfo.index, queues, ifinfo.ipv4, fast)
            .map_err(|e| DirectorError::Other(e.into()))?,
    );
    let mut devs = Vec::with_capacity(q);
    for queue in 0..queues {
        let dev = XdpDevice::open(&prog, ifinfo.index, queue, ifinfo.mac)
            .step(|| format!("opening the AF_XDP socket on {ifname} queue {queue}"))?;
        devs.push(dev);
    }
    prog.set_addresses(&vips(cfg), &nat_servers(cfg))
        .step(|| "filling the XDP redirect map".to_string())?;
    let set = super::reload::AddressSet::of(cfg);
    prog.set_addresses6(&set.vips6, &set.nat_servers6)
        .step(|| "filling the XDP program's IPv6 map".to_string())?;
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

/// Open the devices the config asks for and start a worker on each.
pub(super) fn spawn_workers(
    cfg: &Config,
    ifinfo: &IfInfo,
    shared: &Arc<Shared>,
    dead: &Arc<AtomicBool>,
) -> Result<Workers, DirectorError> {
    let mut n = cfg.workers.max(1);
    if has_nat(cfg) && n > 1 {
        warn!("NAT services keep their reply state per worker: running 1 worker instead of {n}");
        n = 1;
    }
    // The XDP fast path (config, or the test knob): checked before any
    // fallback, so a bad knob stops the director whatever io says.
    let fast = super::fast_path::fast_path_slots(cfg)?;
    let xdp = match cfg.io {
        IoBackend::AfPacket => Err("it is configured".to_string()),
        IoBackend::AfXdp => {
            Ok(open_xdp(cfg, ifinfo, n, fast).step(|| format!("io: af_xdp on {}", cfg.interface))?)
        }
        IoBackend::Auto => open_xdp(cfg, ifinfo, n, fast).map_err(|e| {
            let why = e.chain();
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
                "io: af_xdp ({how}, partial checksums completed in userspace{}) with {} worker(s), one per RX queue; io {} chose it because {why}",
                if prog.fast_path() {
                    ", XDP fast path for established DR flows"
                } else {
                    ""
                },
                devs.len(),
                cfg.io.as_str()
            );
            let (stats, handles, links) = start_workers(cfg, devs, shared, dead)?;
            Ok(Workers {
                stats,
                handles,
                xdp: Some(prog),
                links,
                placement: Placement::RxQueue,
            })
        }
        Err(why) => {
            let group = (std::process::id() & 0xffff) as u16;
            let rx = packet_ring::rx_layout_from_env().map_err(DirectorError::Refused)?;
            let fifo = packet_ring::worker_fifo_from_env().map_err(DirectorError::Refused)?;
            let mut devs = Vec::with_capacity(n);
            for _ in 0..n {
                let rc = RingConfig {
                    fanout_group: (n > 1).then_some(group),
                    rx,
                    ..RingConfig::default()
                };
                let dev = PacketDevice::open(ifinfo.index, rc)
                    .step(|| format!("opening the AF_PACKET ring on {}", cfg.interface))?
                    .with_fifo(fifo);
                devs.push(dev);
            }
            info!(
                "io: af_packet ({} + sendmmsg, vnet headers) with {n} worker(s), {}; io {} chose it because {why}",
                packet_ring::describe(rx),
                fifo.describe(),
                cfg.io.as_str()
            );
            if cfg.xdp_fast_path {
                warn!("xdp_fast_path: true has no effect on AF_PACKET: every frame goes through the workers");
            }
            let (stats, handles, links) = start_workers(cfg, devs, shared, dead)?;
            Ok(Workers {
                stats,
                handles,
                xdp: None,
                links,
                placement: Placement::Fanout,
            })
        }
    }
}

/// One thread per device, worker `i` pinned to `cpus[i % len]`.
fn start_workers<D: Device + Send + 'static>(
    cfg: &Config,
    devs: Vec<D>,
    shared: &Arc<Shared>,
    dead: &Arc<AtomicBool>,
) -> Result<Threads, DirectorError> {
    let n = devs.len().max(1);
    let per_worker = (cfg.flow_capacity / n).max(1024);
    let real = FlowTable::rounded_capacity(per_worker);
    if real * n != cfg.flow_capacity {
        info!(
            "flow_capacity {} rounded up to {} ({n} worker(s) × {real}: each worker's flow table has a \
             power-of-two number of {WAYS}-way buckets, at least 1024 flows)",
            cfg.flow_capacity,
            real * n
        );
    } else {
        info!("flow_capacity {} ({n} worker(s) × {real})", cfg.flow_capacity);
    }
    let mut stats = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    // The queues cost about 10 MB per worker: only when sync is configured.
    let links: Vec<Arc<WorkerLink>> = match cfg.sync {
        Some(_) => (0..n).map(|_| Arc::new(WorkerLink::new())).collect(),
        None => Vec::new(),
    };
    for (i, dev) in devs.into_iter().enumerate() {
        let st = Arc::new(WorkerStats::default());
        stats.push(st.clone());
        let link = links.get(i).cloned();
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
                if let Some(link) = link {
                    w.attach_sync(link);
                }
                if let Err(e) = w.run() {
                    error!("worker {i} stopped: {e}");
                    dead.store(true, Ordering::Relaxed);
                }
            })
            .step(|| format!("starting worker {i}"))?;
        handles.push(h);
    }
    Ok((stats, handles, links))
}
