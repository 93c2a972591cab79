//! The flow-sync thread (slow path): one UDP socket, the workers' links,
//! and the published table.
//!
//! [`Engine`] is the whole logic, driven by [`Engine::poll`] (receive what
//! the socket holds, up to one tick) and [`Engine::tick`] (drain the notes,
//! send, run the bulk and refresh timers); [`spawn`] runs it on a thread.
//! Tests and the benchmark drive two engines in one thread.
//!
//! Latency: notes wait at most one [`TICK`] (plus the time to send) before
//! they leave; the socket is read in between with a timeout of the time
//! left until the next tick, so received flows reach the workers at once.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};

use super::auth::{Key, ReplayWindow};
use super::wire::{self, Builder, Datagram, Header, MsgType, Record, WireError, MAX_DATAGRAM};
use crate::control::config::{SyncConfig, Timeouts};
use crate::control::snapshot::{SyncPeerSnap, SyncSnap};
use crate::dataplane::synclink::{Note, Placement, SyncKey, Synced, WorkerLink};
use crate::dataplane::worker::Shared;
use crate::fwd::flow::{FlowKey, FlowKey6};
use crate::fwd::table::{BackendId, BackendState, FwdTable};

/// How often the notes are drained and sent (the most a note waits).
pub const TICK: Duration = Duration::from_millis(5);
/// How often an unanswered bulk request is sent again, and how many times.
pub const BULK_RETRY: Duration = Duration::from_secs(1);
pub const BULK_TRIES: u32 = 30;
/// How long a bulk walk may take before "bulk done" is sent anyway (a
/// worker that does not walk — stopped, or stuck — must not leave a peer
/// waiting forever).
pub const BULK_WALK_LIMIT: Duration = Duration::from_secs(30);
/// Notes taken from one worker per tick at most (bounds a tick's length;
/// at one tick every 5 ms this is 13 million flows a second per worker).
const NOTES_PER_TICK: usize = 65_536;
/// Datagrams read per [`Engine::poll`] at most.
const RECV_PER_POLL: usize = 4096;
/// Socket buffers: a bulk transfer sends a burst of datagrams.
const SOCKET_BUFFER: usize = 4 << 20;

/// What the thread runs with, from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub key: Option<Key>,
    pub refresh: Duration,
}

impl Settings {
    pub fn from_config(c: &SyncConfig, t: &Timeouts) -> Self {
        Settings {
            listen: c.listen,
            peers: c.peers.clone(),
            key: c.key_file.as_ref().map(|k| Key::new(&k.bytes)),
            refresh: Duration::from_millis(u64::from(c.refresh_interval_ms(t))),
        }
    }
}

/// A director's sender id: its listen IPv4 address as a u32 (for IPv6, the
/// last four bytes).
pub fn sender_id(listen: SocketAddr) -> u32 {
    match listen.ip() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    }
}

/// Datagram-level rejection reasons (each a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    NotPeer,
    Malformed,
    Version,
    BadMac,
    Replay,
}

/// The counters, shared with the director for `stats` and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub datagrams_sent: AtomicU64,
    pub flows_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub flows_received: AtomicU64,
    pub not_peer: AtomicU64,
    pub malformed: AtomicU64,
    pub version: AtomicU64,
    pub bad_mac: AtomicU64,
    pub replay: AtomicU64,
    pub unknown_service: AtomicU64,
    pub unknown_server: AtomicU64,
    pub notes_unresolved: AtomicU64,
    pub bulk_served: AtomicU64,
    pub bulk_walk_timeouts: AtomicU64,
}

impl Counters {
    fn reject(&self, r: Reject) {
        let c = match r {
            Reject::NotPeer => &self.not_peer,
            Reject::Malformed => &self.malformed,
            Reject::Version => &self.version,
            Reject::BadMac => &self.bad_mac,
            Reject::Replay => &self.replay,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// Where the bulk transfer this director asked a peer for stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkState {
    /// No request due (never in practice: every peer is asked at start).
    Idle,
    /// Asked, nothing heard yet.
    Requested,
    /// Flows arriving, "bulk done" not yet.
    Receiving,
    Complete,
    /// No answer after [`BULK_TRIES`] requests.
    Unanswered,
}

impl BulkState {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkState::Idle => "idle",
            BulkState::Requested => "requested",
            BulkState::Receiving => "receiving",
            BulkState::Complete => "complete",
            BulkState::Unanswered => "unanswered",
        }
    }
}

/// One peer as the engine tracks it.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    window: ReplayWindow,
    /// Its sender id, once heard.
    id: Option<u32>,
    bulk: BulkState,
    bulk_requests: u32,
    bulk_flows: u64,
    asked_at: Option<Instant>,
    last_request: Option<Instant>,
    done_after: Option<Duration>,
    datagrams: u64,
    last_heard: Option<Instant>,
    /// A bulk walk this director runs for the peer: each worker's walk
    /// number that answers it, and when it began.
    serving: Option<(Vec<u64>, Instant)>,
}

/// Everything `stats` shows, behind one lock taken a few times a second.
#[derive(Debug)]
pub struct Status {
    pub counters: Counters,
    peers: Mutex<Vec<SyncPeerSnap>>,
    listen: SocketAddr,
    id: u32,
    authenticated: bool,
    refresh: Duration,
}

impl Status {
    /// The snapshot for `ulvsadm stats`/`list` and the metrics; `links`
    /// gives the workers' queue-full counters.
    pub fn snapshot(&self, links: &[Arc<WorkerLink>]) -> SyncSnap {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Relaxed);
        let rejected: BTreeMap<String, u64> = [
            ("not_peer", &c.not_peer),
            ("malformed", &c.malformed),
            ("version", &c.version),
            ("bad_mac", &c.bad_mac),
            ("replay", &c.replay),
            ("unknown_service", &c.unknown_service),
            ("unknown_server", &c.unknown_server),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), r(v)))
        .collect();
        SyncSnap {
            listen: self.listen.to_string(),
            id: format!("{:08x}", self.id),
            authenticated: self.authenticated,
            refresh_ms: self.refresh.as_millis() as u64,
            datagrams_sent: r(&c.datagrams_sent),
            flows_sent: r(&c.flows_sent),
            send_errors: r(&c.send_errors),
            datagrams_received: r(&c.datagrams_received),
            flows_received: r(&c.flows_received),
            rejected,
            notes_full: links.iter().map(|l| l.notes_full.load(Relaxed)).sum(),
            synced_full: links.iter().map(|l| l.synced_full.load(Relaxed)).sum(),
            notes_unresolved: r(&c.notes_unresolved),
            bulk_served: r(&c.bulk_served),
            bulk_walk_timeouts: r(&c.bulk_walk_timeouts),
            peers: self.peers.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }
}

/// The sync logic over one bound socket.
pub struct Engine {
    sock: UdpSocket,
    key: Option<Key>,
    id: u32,
    boot: u64,
    seq: u64,
    peers: Vec<Peer>,
    links: Vec<Arc<WorkerLink>>,
    placement: Placement,
    shared: Arc<Shared>,
    status: Arc<Status>,
    builder: Builder,
    refresh: Duration,
    next_refresh: Instant,
    next_tick: Instant,
    buf: Vec<u8>,
}

/// Open the socket: bound to `listen`, large buffers.
fn open_socket(listen: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps them at net.core.[rw]mem_max.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&listen.into())?;
    Ok(s.into())
}

impl Engine {
    /// Bind the socket and set up; sends nothing yet (the first
    /// [`Engine::tick`] sends the bulk requests).
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn new(
        settings: &Settings,
        links: Vec<Arc<WorkerLink>>,
        placement: Placement,
        shared: Arc<Shared>,
    ) -> io::Result<Engine> {
        let sock = open_socket(settings.listen)?;
        Ok(Engine::with_socket(sock, settings, links, placement, shared))
    }

    /// [`Engine::new`] on a socket already bound to `settings.listen`.
    pub fn with_socket(
        sock: UdpSocket,
        settings: &Settings,
        links: Vec<Arc<WorkerLink>>,
        placement: Placement,
        shared: Arc<Shared>,
    ) -> Engine {
        let id = sender_id(settings.listen);
        // Unix nanoseconds: a restarted director's stamp is larger, so its
        // peers open a fresh replay window for it (see the protocol doc).
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let now = Instant::now();
        let peers = settings
            .peers
            .iter()
            .map(|&addr| Peer {
                addr,
                window: ReplayWindow::default(),
                id: None,
                bulk: BulkState::Requested,
                bulk_requests: 0,
                bulk_flows: 0,
                asked_at: None,
                last_request: None,
                done_after: None,
                datagrams: 0,
                last_heard: None,
                serving: None,
            })
            .collect();
        let status = Arc::new(Status {
            counters: Counters::default(),
            peers: Mutex::new(Vec::new()),
            listen: settings.listen,
            id,
            authenticated: settings.key.is_some(),
            refresh: settings.refresh,
        });
        let e = Engine {
            sock,
            key: settings.key.clone(),
            id,
            boot,
            seq: 0,
            peers,
            links,
            placement,
            shared,
            status,
            builder: Builder::new(),
            refresh: settings.refresh,
            next_refresh: now + settings.refresh,
            next_tick: now,
            buf: vec![0; MAX_DATAGRAM + 1],
        };
        e.publish_status(now);
        e
    }

    /// The shared status (counters and peers).
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// The socket's bound address (tests bind port 0).
    ///
    /// # Errors
    /// As `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Receive datagrams until the next tick is due (or `RECV_PER_POLL`
    /// were read); returns how many were read.
    ///
    /// # Errors
    /// A socket error other than a timeout.
    pub fn poll(&mut self) -> io::Result<usize> {
        let mut n = 0;
        while n < RECV_PER_POLL {
            let now = Instant::now();
            let wait = if n == 0 {
                self.next_tick.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if wait.is_zero() {
                self.sock.set_nonblocking(true)?;
            } else {
                self.sock.set_nonblocking(false)?;
                self.sock.set_read_timeout(Some(wait))?;
            }
            match self.sock.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    let mut buf = std::mem::take(&mut self.buf);
                    self.receive(&buf[..len], from, Instant::now());
                    std::mem::swap(&mut self.buf, &mut buf);
                    n += 1;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An ICMP port unreachable from a peer that is down shows up
                // as an error on the next receive; it says nothing here.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Handle one datagram from `from`.
    pub fn receive(&mut self, buf: &[u8], from: SocketAddr, now: Instant) {
        let c = &self.status.counters;
        let Some(pi) = self.peers.iter().position(|p| p.addr == from) else {
            c.reject(Reject::NotPeer);
            return;
        };
        let d = match Datagram::new_checked(buf) {
            Ok(d) => d,
            Err(WireError::Version(_)) => return c.reject(Reject::Version),
            Err(WireError::Malformed(_)) => return c.reject(Reject::Malformed),
        };
        let authentic = match (&self.key, d.mac()) {
            (Some(k), Some(m)) => k.verify(d.signed(), m),
            (None, None) => true,
            _ => false,
        };
        if !authentic {
            return c.reject(Reject::BadMac);
        }
        let h = d.header();
        let peer = &mut self.peers[pi];
        if peer.window.accept(h.boot, h.seq).is_err() {
            return c.reject(Reject::Replay);
        }
        c.datagrams_received.fetch_add(1, Relaxed);
        peer.id = Some(h.sender);
        if peer.bulk == BulkState::Unanswered {
            // It came up after this director gave up asking: ask again.
            peer.bulk = BulkState::Requested;
            peer.bulk_requests = 0;
            peer.last_request = None;
            peer.asked_at = None;
        }
        peer.datagrams += 1;
        peer.last_heard = Some(now);
        match h.msg {
            MsgType::Flows => {
                // Flows after the request answer it (before it, they are
                // live flows and say nothing about the request).
                if peer.bulk == BulkState::Requested && peer.last_request.is_some() {
                    peer.bulk = BulkState::Receiving;
                }
                let counting = peer.bulk == BulkState::Receiving;
                let table = self.shared.table.load();
                let mut delivered = 0;
                for r in d.records() {
                    if self.deliver(&table, &r, pi) {
                        delivered += 1;
                    }
                }
                if counting {
                    self.peers[pi].bulk_flows += delivered;
                }
            }
            MsgType::BulkRequest => self.start_bulk_walk(pi, now),
            MsgType::BulkDone => {
                if matches!(peer.bulk, BulkState::Requested | BulkState::Receiving) {
                    peer.bulk = BulkState::Complete;
                    peer.done_after = peer.asked_at.map(|t| now.saturating_duration_since(t));
                    info!(
                        "sync: bulk transfer from {} complete: {} flows",
                        peer.addr, peer.bulk_flows
                    );
                }
            }
            MsgType::Unknown(_) => {}
        }
        self.publish_status(now);
    }

    /// Resolve one record to a local backend and queue it for the worker
    /// that sees its frames; false when it was rejected.
    fn deliver(&self, table: &FwdTable, r: &Record, from: usize) -> bool {
        if r.vip.is_ipv6() {
            self.deliver_key(resolve6(table, r), r, from)
        } else {
            self.deliver_key(resolve(table, r), r, from)
        }
    }

    /// [`Engine::deliver`] once the record is resolved (`resolve`'s
    /// answer) in its family.
    fn deliver_key<K: SyncKey>(
        &self,
        resolved: Option<(K, Option<BackendId>)>,
        r: &Record,
        from: usize,
    ) -> bool {
        let c = &self.status.counters;
        let Some(key) = resolved else {
            c.unknown_service.fetch_add(1, Relaxed);
            return false;
        };
        let Some(backend) = key.1 else {
            c.unknown_server.fetch_add(1, Relaxed);
            return false;
        };
        let key = key.0;
        // Who created it: a peer whose id we know, else the sender.
        let origin = self
            .peers
            .iter()
            .position(|p| p.id == Some(r.creator) && r.creator != self.id)
            .unwrap_or(from);
        let s = Synced {
            key,
            backend,
            state: r.state,
            idle_ms: r.idle_ms,
            origin: u8::try_from(origin + 1).unwrap_or(u8::MAX),
        };
        let push = |l: &WorkerLink| {
            if K::synced(l).push(s).is_err() {
                l.synced_full.fetch_add(1, Relaxed);
            }
        };
        match key.worker(self.links.len(), self.placement) {
            Some(w) => push(&self.links[w.min(self.links.len().saturating_sub(1))]),
            None => self.links.iter().for_each(|l| push(l)),
        }
        c.flows_received.fetch_add(1, Relaxed);
        true
    }

    /// A peer asked for all flows: every worker walks its whole table.
    fn start_bulk_walk(&mut self, pi: usize, now: Instant) {
        if self.peers[pi].serving.is_some() {
            return; // the running walk answers this request too
        }
        let targets = self
            .links
            .iter()
            .map(|l| {
                l.walk_all.store(true, SeqCst);
                l.walk_asked.fetch_add(1, SeqCst) + 1
            })
            .collect();
        info!("sync: {} asked for a bulk transfer", self.peers[pi].addr);
        self.peers[pi].serving = Some((targets, now));
    }

    /// The periodic work: bulk requests, finished bulk walks, refresh,
    /// notes. Call at least every [`TICK`].
    pub fn tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        // Walks complete before their notes are drained, so that "bulk
        // done" follows every copy the walk made.
        let finished: Vec<usize> = (0..self.peers.len())
            .filter(|&i| match &self.peers[i].serving {
                Some((targets, since)) => {
                    let done = targets
                        .iter()
                        .zip(&self.links)
                        .all(|(t, l)| l.walk_done.load(SeqCst) >= *t);
                    if !done && now.saturating_duration_since(*since) >= BULK_WALK_LIMIT {
                        self.status.counters.bulk_walk_timeouts.fetch_add(1, Relaxed);
                        warn!(
                            "sync: bulk walk for {} not finished in time; sending done",
                            self.peers[i].addr
                        );
                        return true;
                    }
                    done
                }
                None => false,
            })
            .collect();
        let drained = self.drain_notes();
        if drained {
            for i in finished {
                self.peers[i].serving = None;
                self.send_control(MsgType::BulkDone, Some(i));
                self.status.counters.bulk_served.fetch_add(1, Relaxed);
            }
        }
        if !self.peers.iter().any(|p| p.serving.is_some()) {
            for l in &self.links {
                l.walk_all.store(false, SeqCst);
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.refresh;
            // A bulk walk copies everything anyway; a worker still walking
            // finishes that walk first.
            if !self.peers.iter().any(|p| p.serving.is_some()) {
                for l in &self.links {
                    if l.walk_done.load(SeqCst) >= l.walk_asked.load(SeqCst) {
                        l.walk_asked.fetch_add(1, SeqCst);
                    }
                }
            }
        }
        self.bulk_requests(now);
        self.publish_status(now);
    }

    /// Send (again) the bulk requests that are due.
    fn bulk_requests(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.bulk != BulkState::Requested {
                continue;
            }
            if p.last_request
                .is_some_and(|t| now.saturating_duration_since(t) < BULK_RETRY)
            {
                continue;
            }
            if p.bulk_requests >= BULK_TRIES {
                p.bulk = BulkState::Unanswered;
                warn!("sync: {} did not answer {BULK_TRIES} bulk requests", p.addr);
                continue;
            }
            p.bulk_requests += 1;
            p.last_request = Some(now);
            p.asked_at.get_or_insert(now);
            self.send_control(MsgType::BulkRequest, Some(i));
        }
    }

    /// Take the workers' notes (IPv4, then IPv6) and send them to every
    /// peer; true when every queue was emptied.
    fn drain_notes(&mut self) -> bool {
        let table = self.shared.table.load();
        let mut emptied = true;
        let mut started = false;
        for w in 0..self.links.len() {
            emptied &= self.drain_queue::<FlowKey>(&table, w, &mut started);
            emptied &= self.drain_queue::<FlowKey6>(&table, w, &mut started);
        }
        if started && self.builder.count() > 0 {
            self.send_built(None);
        }
        emptied
    }

    /// One worker's notes of one family into datagrams (`started`: one is
    /// being built); false when [`NOTES_PER_TICK`] left some behind.
    fn drain_queue<K: WireKey>(&mut self, table: &FwdTable, w: usize, started: &mut bool) -> bool {
        let mut taken = 0;
        loop {
            if taken == NOTES_PER_TICK {
                return K::notes(&self.links[w]).is_empty();
            }
            let Some(n) = K::notes(&self.links[w]).pop() else {
                return true;
            };
            taken += 1;
            let Some(r) = self.record_of(table, &n) else {
                self.status.counters.notes_unresolved.fetch_add(1, Relaxed);
                continue;
            };
            if !*started {
                self.start_datagram(MsgType::Flows);
                *started = true;
            }
            if self.builder.push(&r).is_err() {
                self.status.counters.notes_unresolved.fetch_add(1, Relaxed);
                continue;
            }
            if self.builder.is_full() {
                self.send_built(None);
                *started = false;
            }
        }
    }

    /// A worker's note in addresses (None: its server id names no server).
    fn record_of<K: WireKey>(&self, table: &FwdTable, n: &Note<K>) -> Option<Record> {
        let b = table.backend(n.backend);
        let server = K::server(table, n.backend);
        if b.state == BackendState::Removed && server.is_unspecified() {
            return None;
        }
        let creator = match n.origin {
            0 => self.id,
            o => self.peers.get(usize::from(o) - 1).and_then(|p| p.id).unwrap_or(0),
        };
        let ((client, client_port), (vip, vip_port), proto) = n.key.ends();
        Some(Record {
            proto,
            state: n.state,
            kind: n.kind,
            client,
            client_port,
            vip,
            vip_port,
            server,
            server_port: b.port,
            idle_ms: n.idle_ms,
            creator,
        })
    }

    fn start_datagram(&mut self, msg: MsgType) {
        self.seq += 1;
        let h = Header {
            msg,
            sender: self.id,
            boot: self.boot,
            seq: self.seq,
        };
        self.builder.start(&h, self.key.is_some());
    }

    fn send_control(&mut self, msg: MsgType, to: Option<usize>) {
        self.start_datagram(msg);
        self.send_built(to);
    }

    /// Finish the datagram being built and send it to one peer or all.
    fn send_built(&mut self, to: Option<usize>) {
        let flows = self.builder.count() as u64;
        let key = &self.key;
        let bytes = self.builder.finish(|b| match key {
            Some(k) => k.sign(b),
            None => [0; wire::MAC_LEN],
        });
        let c = &self.status.counters;
        for (i, p) in self.peers.iter().enumerate() {
            if to.is_some_and(|t| t != i) {
                continue;
            }
            match self.sock.send_to(bytes, p.addr) {
                Ok(_) => {
                    c.datagrams_sent.fetch_add(1, Relaxed);
                    c.flows_sent.fetch_add(flows, Relaxed);
                }
                Err(_) => {
                    c.send_errors.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Copy the peers' state where `stats` reads it: in place, allocating
    /// only when a bulk state changes (this runs for every datagram).
    fn publish_status(&self, now: Instant) {
        let Ok(mut g) = self.status.peers.lock() else {
            return;
        };
        if g.len() != self.peers.len() {
            *g = self
                .peers
                .iter()
                .map(|p| SyncPeerSnap {
                    address: p.addr.to_string(),
                    ..SyncPeerSnap::default()
                })
                .collect();
        }
        for (snap, p) in g.iter_mut().zip(&self.peers) {
            if snap.bulk != p.bulk.as_str() {
                snap.bulk = p.bulk.as_str().to_string();
            }
            snap.bulk_requests = u64::from(p.bulk_requests);
            snap.bulk_flows = p.bulk_flows;
            snap.bulk_seconds = p.done_after.map(|d| d.as_secs_f64());
            snap.datagrams_received = p.datagrams;
            snap.last_heard_seconds = p
                .last_heard
                .map(|t| now.saturating_duration_since(t).as_secs_f64());
        }
    }

    /// Run until `stop` is set.
    ///
    /// # Errors
    /// A socket error.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Relaxed) {
            self.poll()?;
            let now = Instant::now();
            if now >= self.next_tick {
                self.tick(now);
            }
        }
        Ok(())
    }
}

/// A flow key as a record names it, and its server's address.
trait WireKey: SyncKey {
    /// ((client, port), (VIP, port), protocol).
    fn ends(&self) -> ((IpAddr, u16), (IpAddr, u16), u8);
    /// Server `id`'s address in this family (unspecified when it has none).
    fn server(table: &FwdTable, id: BackendId) -> IpAddr;
}

impl WireKey for FlowKey {
    fn ends(&self) -> ((IpAddr, u16), (IpAddr, u16), u8) {
        let k = *self;
        (
            (IpAddr::V4(k.src.into()), k.sport),
            (IpAddr::V4(k.dst.into()), k.dport),
            k.proto,
        )
    }
    fn server(table: &FwdTable, id: BackendId) -> IpAddr {
        IpAddr::V4(table.backend(id).addr.into())
    }
}

impl WireKey for FlowKey6 {
    fn ends(&self) -> ((IpAddr, u16), (IpAddr, u16), u8) {
        let k = *self;
        (
            (IpAddr::V6(k.src.into()), k.sport),
            (IpAddr::V6(k.dst.into()), k.dport),
            k.proto,
        )
    }
    fn server(table: &FwdTable, id: BackendId) -> IpAddr {
        IpAddr::V6(table.backend6(id).addr.into())
    }
}

/// A record's flow key and local backend: `None` when no service matches,
/// `Some((key, None))` when the service has no such server.
pub fn resolve(table: &FwdTable, r: &Record) -> Option<(FlowKey, Option<u32>)> {
    let (IpAddr::V4(client), IpAddr::V4(vip), IpAddr::V4(server)) = (r.client, r.vip, r.server) else {
        return None; // mixed families name no service
    };
    let i = table.find_service(u32::from(vip), r.proto, r.vip_port)?;
    let svc = &table.services[i];
    let server = u32::from(server);
    let id = svc.members.iter().copied().find(|&id| {
        let b = table.backend(id);
        b.addr == server && b.port == r.server_port && b.state != BackendState::Removed
    });
    let key = FlowKey {
        src: u32::from(client),
        dst: u32::from(vip),
        sport: r.client_port,
        dport: r.vip_port,
        proto: r.proto,
    };
    Some((key, id))
}

/// [`resolve`] for an IPv6 record (an IPv6 service's servers are IPv6).
pub fn resolve6(table: &FwdTable, r: &Record) -> Option<(FlowKey6, Option<u32>)> {
    let (IpAddr::V6(client), IpAddr::V6(vip), IpAddr::V6(server)) = (r.client, r.vip, r.server) else {
        return None;
    };
    let i = table.find_service6(u128::from(vip), r.proto, r.vip_port)?;
    let svc = &table.services6[i];
    let server = u128::from(server);
    let id = svc.members.iter().copied().find(|&id| {
        let b = table.backend(id);
        table.backend6(id).addr == server && b.port == r.server_port && b.state != BackendState::Removed
    });
    let key = FlowKey6 {
        src: u128::from(client),
        dst: u128::from(vip),
        sport: r.client_port,
        dport: r.vip_port,
        proto: r.proto,
    };
    Some((key, id))
}

/// The running thread.
pub struct Handle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Status>,
    links: Vec<Arc<WorkerLink>>,
}

impl Handle {
    /// The counters and peers, for `stats`, `list` and the metrics.
    pub fn snapshot(&self) -> SyncSnap {
        self.status.snapshot(&self.links)
    }

    /// Stop the thread and wait for it (at most one tick).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Bind the socket and start the thread.
///
/// # Errors
/// The socket cannot be bound or the thread not started.
pub fn spawn(
    settings: &Settings,
    links: Vec<Arc<WorkerLink>>,
    placement: Placement,
    shared: Arc<Shared>,
) -> io::Result<Handle> {
    let sock = open_socket(settings.listen)?;
    spawn_on(sock, settings, links, placement, shared)
}

/// [`spawn`] on a socket already bound to `settings.listen`.
///
/// # Errors
/// The thread cannot be started.
pub fn spawn_on(
    sock: UdpSocket,
    settings: &Settings,
    links: Vec<Arc<WorkerLink>>,
    placement: Placement,
    shared: Arc<Shared>,
) -> io::Result<Handle> {
    let mut engine = Engine::with_socket(sock, settings, links.clone(), placement, shared);
    let status = engine.status();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ulvs-sync".into())
        .spawn(move || {
            if let Err(e) = engine.run(&flag) {
                log::error!("sync thread stopped: {e}");
            }
        })?;
    Ok(Handle {
        stop,
        thread: Some(thread),
        status,
        links,
    })
}
