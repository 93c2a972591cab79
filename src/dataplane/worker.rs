//! The worker loop (fast path): one per ring/queue, each with its own flow
//! table and counters. It loads the published table once per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::classify::{classify, Classified, Reason};
use super::rewrite;
use super::stats::{bump, bump_i, WorkerStats};
use crate::fwd::flow::{FlowEntry, FlowKey, FlowState, FlowTable};
use crate::fwd::maglev::flow_hash;
use crate::fwd::table::{BackendState, FwdTable, Mode, ServiceFwd};
use crate::io::{Action, Device, Frame};
use crate::wire::tcp;

/// Frames per batch.
pub const BATCH: usize = 64;
/// Flow-table buckets expired per batch by the incremental sweep.
const SWEEP_BUCKETS: usize = 64;

/// State shared between the slow path and every worker.
pub struct Shared {
    /// The published forwarding table.
    pub table: ArcSwap<FwdTable>,
    /// Set by the slow path to stop the workers.
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new(table: FwdTable) -> Self {
        Shared {
            table: ArcSwap::from_pointee(table),
            stop: AtomicBool::new(false),
        }
    }
}

/// One worker: a device, a flow table and counters.
pub struct Worker<D: Device> {
    dev: D,
    flows: FlowTable,
    stats: Arc<WorkerStats>,
    shared: Arc<Shared>,
    epoch: Instant,
}

/// A coarse millisecond clock that wraps (flow entries use wrapping math).
#[inline]
fn now_ms(epoch: Instant) -> u32 {
    epoch.elapsed().as_millis() as u32
}

impl<D: Device> Worker<D> {
    /// A worker with a flow table of `flow_capacity` entries.
    pub fn new(dev: D, flow_capacity: usize, shared: Arc<Shared>, stats: Arc<WorkerStats>) -> Self {
        let timeouts = shared.table.load().timeouts;
        let flows = FlowTable::new(flow_capacity, timeouts);
        stats.flow_capacity.store(flows.capacity() as u64, Ordering::Relaxed);
        Worker {
            dev,
            flows,
            stats,
            shared,
            epoch: Instant::now(),
        }
    }

    /// The counters this worker writes.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The device (tests inspect what was sent).
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Run until the slow path sets `stop`.
    ///
    /// # Errors
    /// A device-level failure (the interface went away).
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut last_ring_check = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.dev.wait(100)?;
            self.poll_once(self.epoch.elapsed().as_millis() as u32)?;
            if last_ring_check.elapsed().as_millis() >= 500 {
                last_ring_check = Instant::now();
                let d = self.dev.ring_drops();
                bump(&self.stats.ring_drops, d);
            }
        }
        Ok(())
    }

    /// Process one batch at time `now` (milliseconds on the worker's clock).
    /// Returns the number of frames received.
    ///
    /// # Errors
    /// A device-level failure.
    pub fn poll_once(&mut self, now: u32) -> std::io::Result<usize> {
        let table = self.shared.table.load();
        if self.flows.timeouts() != table.timeouts {
            self.flows.set_timeouts(table.timeouts);
        }
        let stats = &*self.stats;
        if stats.generation.load(Ordering::Relaxed) != table.generation {
            stats.generation.store(table.generation, Ordering::Relaxed);
        }
        let flows = &mut self.flows;
        let st = self
            .dev
            .process_batch(BATCH, |f| handle(f, &table, flows, stats, now))?;
        if st.tx_failed > 0 {
            bump(&stats.drops[Reason::TxError as usize], st.tx_failed as u64);
            bump(&stats.forwarded, 0u64.wrapping_sub(st.tx_failed as u64));
        }
        flows.sweep(now, SWEEP_BUCKETS, &mut |e| on_removed(stats, e));
        stats.flows.store(flows.len() as u64, Ordering::Relaxed);
        stats.evictions.store(flows.evictions(), Ordering::Relaxed);
        stats.expirations.store(flows.expirations(), Ordering::Relaxed);
        Ok(st.received)
    }

    /// The worker's clock now.
    pub fn now(&self) -> u32 {
        now_ms(self.epoch)
    }

    /// Number of live flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }
}

/// A flow left the table: undo its share of its server's gauges.
fn on_removed(stats: &WorkerStats, e: &FlowEntry) {
    let b = stats.backend(e.backend);
    if is_active(e.state) {
        bump_i(&b.active, -1);
    } else {
        bump_i(&b.inactive, -1);
    }
}

#[inline]
fn is_active(s: FlowState) -> bool {
    !matches!(s, FlowState::TcpClosing)
}

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

/// Whether a pinned flow may stay with its backend.
#[inline]
fn keeps_backend(state: BackendState, reschedule_on_down: bool) -> bool {
    match state {
        BackendState::Up | BackendState::Draining => true,
        BackendState::Down => !reschedule_on_down,
        BackendState::Removed => false,
    }
}

/// State of a new flow from its first packet.
#[inline]
fn initial_state(c: &Classified) -> FlowState {
    if c.key.proto == 17 {
        FlowState::Udp
    } else if c.tcp_flags & (tcp::FIN | tcp::RST) != 0 {
        FlowState::TcpClosing
    } else if c.tcp_flags & tcp::SYN != 0 && c.tcp_flags & tcp::ACK == 0 {
        FlowState::TcpSyn
    } else {
        FlowState::TcpEstablished
    }
}

/// Find the flow's backend, creating or re-pinning the flow as needed.
/// Returns the backend id, or the reason there is none.
#[inline]
fn backend_for(
    c: &Classified,
    svc: &ServiceFwd,
    table: &FwdTable,
    flows: &mut FlowTable,
    stats: &WorkerStats,
    now: u32,
) -> Result<u32, Reason> {
    if let Some(e) = flows.get(&c.key, now, &mut |e| on_removed(stats, e)) {
        let was_active = is_active(e.state);
        // TCP state from this packet's flags.
        if c.key.proto == 6 {
            if c.tcp_flags & (tcp::FIN | tcp::RST) != 0 {
                e.state = FlowState::TcpClosing;
            } else if e.state == FlowState::TcpSyn && c.tcp_flags & tcp::SYN == 0 {
                e.state = FlowState::TcpEstablished;
            } else if e.state == FlowState::TcpClosing && c.tcp_flags & tcp::SYN != 0 {
                // Port reuse: a new connection on a remembered tuple.
                e.state = FlowState::TcpSyn;
            }
        }
        e.last_ms = now;
        let now_active = is_active(e.state);
        let old = e.backend;
        let id = if keeps_backend(table.backend(old).state, table.reschedule_on_down) {
            old
        } else {
            // Its server is gone or down: pick a live one (IPVS expire_nodest_conn).
            let Some((id, slot)) = svc.pick(flow_hash(&key_bytes(&c.key))) else {
                return Err(Reason::NoServer);
            };
            e.backend = id;
            e.aux = slot;
            bump(&stats.rescheduled, 1);
            id
        };
        if id != old || was_active != now_active {
            let (o, n) = (stats.backend(old), stats.backend(id));
            if was_active {
                bump_i(&o.active, -1);
            } else {
                bump_i(&o.inactive, -1);
            }
            if now_active {
                bump_i(&n.active, 1);
            } else {
                bump_i(&n.inactive, 1);
            }
        }
        return Ok(id);
    }
    let Some((id, slot)) = svc.pick(flow_hash(&key_bytes(&c.key))) else {
        return Err(Reason::NoServer);
    };
    let state = initial_state(c);
    let e = flows.insert(c.key, state, id, now, &mut |e| on_removed(stats, e));
    e.aux = slot;
    let b = stats.backend(id);
    bump(&b.conns, 1);
    if is_active(state) {
        bump_i(&b.active, 1);
    } else {
        bump_i(&b.inactive, 1);
    }
    Ok(id)
}

/// Decide and rewrite one frame.
#[inline]
fn handle(f: &mut Frame<'_>, table: &FwdTable, flows: &mut FlowTable, stats: &WorkerStats, now: u32) -> Action {
    bump(&stats.frames_seen, 1);
    let c = match classify(f.data(), &f.meta, table) {
        Ok(c) => c,
        Err(r) => {
            stats.drop(r);
            return Action::Drop;
        }
    };
    let svc = &table.services[c.service];
    let id = match backend_for(&c, svc, table, flows, stats, now) {
        Ok(id) => id,
        Err(r) => {
            stats.drop(r);
            return Action::Drop;
        }
    };
    let Some(mac) = table.backend(id).mac else {
        stats.drop(Reason::ServerMacUnknown);
        return Action::Drop;
    };
    match svc.mode {
        Mode::Dr => rewrite::dr(f.data_mut(), mac, table.director_mac),
        // NAT and TUN are not built yet; the config validator refuses them.
        Mode::Nat | Mode::Tun => {
            stats.drop(Reason::NoService);
            return Action::Drop;
        }
    }
    let b = stats.backend(id);
    bump(&b.packets, 1);
    bump(&b.bytes, f.len() as u64);
    bump(&stats.forwarded, 1);
    bump(&stats.bytes_forwarded, f.len() as u64);
    Action::Transmit
}
