//! Health checks of real servers: the slow path, on its own thread.
//!
//! Owns the [`Damper`] (a pure type: `fall` consecutive failures to go down,
//! `rise` consecutive successes to come up, as glb-director's
//! `HealthResultDampener`) and the [`Checker`], one thread with a mio `Poll`
//! driving non-blocking TCP and HTTP probes, at most one in flight per target.
//! The checker only reports: the caller polls [`Checker::poll_transitions`] or
//! [`Checker::states`] and publishes a new forwarding table. A state change is
//! logged once, when it happens, never once per probe.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

/// Whether a target passes its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    /// No result yet: a new target is neither trusted nor condemned until
    /// its first probe decides.
    Pending,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Pending => "pending",
        })
    }
}

/// Pure, table-tested damper: `fall` consecutive failures -> Down, `rise`
/// consecutive successes -> Up. A result that agrees with the current state
/// resets the count, so failures interrupted by a success start over. A
/// damper that starts `Pending` takes its first result as accurate (as
/// glb-director's dampener does): one success -> Up, one failure -> Down.
#[derive(Debug, Clone)]
pub struct Damper {
    rise: u32,
    fall: u32,
    state: Health,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl Damper {
    /// A damper whose first result decides its state.
    pub fn pending(rise: u32, fall: u32) -> Self {
        Self::new(rise, fall, Health::Pending)
    }

    /// A `rise` or `fall` of 0 is treated as 1: one result always suffices.
    pub fn new(rise: u32, fall: u32, initial: Health) -> Self {
        Damper {
            rise: rise.max(1),
            fall: fall.max(1),
            state: initial,
            streak: 0,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Record one probe result; returns Some(new state) only on a transition.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        let (agrees, needed, other) = match self.state {
            Health::Up => (ok, self.fall, Health::Down),
            Health::Down => (!ok, self.rise, Health::Up),
            Health::Pending => (false, 1, if ok { Health::Up } else { Health::Down }),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.state = other;
        Some(other)
    }
}

/// What a probe does once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Success is a completed TCP handshake.
    Tcp,
    /// Success is a status line carrying `expect_status` in answer to `GET path`.
    Http {
        path: String,
        host: String,
        expect_status: u16,
    },
}

/// Why a probe failed (Display gives the operator's wording: "connection
/// refused", "timeout after 500 ms", "status 503 (expected 200)", "connection
/// reset", "bad HTTP response", "unreachable: ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    Refused,
    /// Not complete within this many milliseconds.
    Timeout(u64),
    Status {
        got: u16,
        expected: u16,
    },
    Reset,
    BadResponse,
    /// Any other socket error, as the OS words it.
    Io(String),
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Refused => f.write_str("connection refused"),
            ProbeFailure::Timeout(ms) => write!(f, "timeout after {ms} ms"),
            ProbeFailure::Status { got, expected } => write!(f, "status {got} (expected {expected})"),
            ProbeFailure::Reset => f.write_str("connection reset"),
            ProbeFailure::BadResponse => f.write_str("bad HTTP response"),
            ProbeFailure::Io(msg) => write!(f, "unreachable: {msg}"),
        }
    }
}

impl From<&io::Error> for ProbeFailure {
    fn from(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                ProbeFailure::Reset
            }
            _ => ProbeFailure::Io(e.to_string()),
        }
    }
}

/// One server to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Opaque id chosen by the caller (a backend id).
    pub id: u32,
    /// The server's own address and port to probe (IPv4 or IPv6).
    pub addr: SocketAddr,
    pub kind: ProbeKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

impl Target {
    /// Whether `other` is the same check, so its damper state carries over a reload.
    fn same_check(&self, other: &Target) -> bool {
        self.id == other.id
            && self.addr == other.addr
            && self.kind == other.kind
            && self.rise == other.rise
            && self.fall == other.fall
    }

    /// Delay of the first probe: small, deterministic, different per id, so
    /// targets started together do not all fire at once.
    fn first_offset(&self) -> Duration {
        let spread = self.interval_ms.clamp(1, 100);
        let hash = u64::from(self.id).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        Duration::from_millis(hash % spread)
    }
}

/// A change of a target's health, with the reason, e.g. "2 consecutive
/// failures, last: connection refused" or "2 consecutive successes".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub id: u32,
    pub health: Health,
    pub reason: String,
}

/// Runs probes on its own thread with a mio Poll and non-blocking sockets.
///
/// Every target starts Pending and is probed at once (within a few ms,
/// spread by id); its first result decides Up or Down, then `rise`/`fall`
/// apply. It is probed every `interval_ms`; a probe not complete within
/// `timeout_ms` fails.
pub struct Checker {
    shared: Arc<Mutex<State>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Start the thread. Initial state of every target is Pending.
    ///
    /// # Errors
    ///
    /// Creating the poll instance, its waker or the thread failed.
    pub fn spawn(targets: Vec<Target>) -> io::Result<Checker> {
        let mut poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let registry = poll.registry().try_clone()?;
        let now = Instant::now();
        let entries = targets.into_iter().map(|t| Entry::new(t, now)).collect();
        let shared = Arc::new(Mutex::new(State {
            entries,
            transitions: Vec::new(),
            stop: false,
            registry,
            next_token: FIRST_PROBE_TOKEN,
        }));
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ulvs-health".into())
            .spawn(move || run(&mut poll, &thread_shared))?;
        Ok(Checker {
            shared,
            waker,
            thread: Some(thread),
        })
    }

    /// Replace the target set (reload): targets whose (id, addr, kind, rise,
    /// fall) are unchanged keep their damper state and schedule (and take the
    /// new interval and timeout); new ones start Pending; missing ones stop, and so
    /// do their probes in flight. Takes effect before this returns, so
    /// [`Checker::states`] already reflects it; pending transitions of
    /// targets that stopped or restarted are dropped.
    pub fn update(&self, targets: Vec<Target>) {
        let now = Instant::now();
        {
            let mut state = lock(&self.shared);
            // By id (a check is the same only with the same id; ids are
            // backend ids, one target each): a reload
            // at 200,000 checked servers must not search the old entries
            // once per target.
            let mut old: HashMap<u32, Entry> = std::mem::take(&mut state.entries)
                .into_iter()
                .map(|e| (e.target.id, e))
                .collect();
            let mut entries = Vec::with_capacity(targets.len());
            let mut kept = HashSet::new();
            for target in targets {
                let same = old.get(&target.id).is_some_and(|e| e.target.same_check(&target));
                match same.then(|| old.remove(&target.id)).flatten() {
                    Some(mut entry) => {
                        kept.insert(target.id);
                        let interval = Duration::from_millis(target.interval_ms);
                        entry.next_due = entry.next_due.min(now + interval);
                        entry.target = target;
                        entries.push(entry);
                    }
                    None => entries.push(Entry::new(target, now)),
                }
            }
            for mut gone in old.into_values() {
                if let Some(mut probe) = gone.probe.take() {
                    let _ = state.registry.deregister(&mut probe.stream);
                }
            }
            // A queued transition is stale unless its target kept its damper.
            state.transitions.retain(|t| kept.contains(&t.id));
            state.entries = entries;
        }
        self.wake();
    }

    /// Transitions since the last call (non-blocking), oldest first. Bounded:
    /// if a target changed again before this was called, only its latest
    /// transition is kept.
    pub fn poll_transitions(&self) -> Vec<Transition> {
        std::mem::take(&mut lock(&self.shared).transitions)
    }

    /// Current state of every target (for `ulvsadm list`), in target order,
    /// with the last probe failure if the last probe failed or the target is
    /// Down.
    pub fn states(&self) -> Vec<(u32, Health, Option<String>)> {
        lock(&self.shared)
            .entries
            .iter()
            .map(|e| {
                (
                    e.target.id,
                    e.damper.state(),
                    e.last_failure.as_ref().map(|f| f.to_string()),
                )
            })
            .collect()
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("health: cannot wake the checker thread: {e}");
        }
    }
}

impl Drop for Checker {
    /// Stops and joins the thread; the waker makes this prompt.
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.wake();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("health: the checker thread panicked");
            }
        }
    }
}

const WAKER: Token = Token(0);
const FIRST_PROBE_TOKEN: usize = 1;
/// A status line longer than this is not HTTP.
const MAX_STATUS_LINE: usize = 1024;

/// Everything the thread and the handle share; the lock is held only for
/// non-blocking work.
struct State {
    entries: Vec<Entry>,
    transitions: Vec<Transition>,
    stop: bool,
    registry: Registry,
    /// Tokens are never reused, so an event for a stopped probe matches nothing.
    next_token: usize,
}

struct Entry {
    target: Target,
    damper: Damper,
    next_due: Instant,
    probe: Option<Probe>,
    last_failure: Option<ProbeFailure>,
}

impl Entry {
    fn new(target: Target, now: Instant) -> Self {
        Entry {
            damper: Damper::pending(target.rise, target.fall),
            next_due: now + target.first_offset(),
            probe: None,
            last_failure: None,
            target,
        }
    }

    /// Feed one probe result to the damper; log and queue a transition.
    fn record(&mut self, result: Result<(), ProbeFailure>, transitions: &mut Vec<Transition>) {
        let ok = result.is_ok();
        match result {
            Ok(()) => {}
            Err(failure) => self.last_failure = Some(failure),
        }
        let first = self.damper.state() == Health::Pending;
        let changed = self.damper.record(ok);
        if ok && self.damper.state() == Health::Up {
            self.last_failure = None;
        }
        let Some(health) = changed else { return };
        let (id, addr) = (self.target.id, self.target.addr);
        let reason = match (health, &self.last_failure) {
            (Health::Down, Some(last)) if first => format!("first check failed: {last}"),
            (Health::Up, _) if first => "first check passed".to_string(),
            (Health::Down, Some(last)) => format!("{}, last: {last}", count(self.damper.fall, "failure")),
            (Health::Down, None) => count(self.damper.fall, "failure"),
            (Health::Up | Health::Pending, _) => count(self.damper.rise, "success"),
        };
        match health {
            Health::Down => log::warn!("health: server {id} ({addr}) is down: {reason}"),
            // Every checked server passes its first check at start: not news.
            Health::Up if first => log::debug!("health: server {id} ({addr}) is up: {reason}"),
            Health::Up | Health::Pending => log::info!("health: server {id} ({addr}) is up: {reason}"),
        }
        transitions.retain(|t| t.id != id);
        transitions.push(Transition { id, health, reason });
    }
}

fn count(n: u32, what: &str) -> String {
    match (n, what) {
        (1, _) => format!("1 consecutive {what}"),
        (_, "success") => format!("{n} consecutive successes"),
        _ => format!("{n} consecutive {what}s"),
    }
}

struct Probe {
    token: Token,
    stream: TcpStream,
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    Connecting,
    Sending { request: Vec<u8>, sent: usize },
    Receiving { buf: Vec<u8> },
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere leaves the state consistent enough to keep probing.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The checker thread: wait for socket events, a deadline or the waker, then
/// advance probes, expire them and start the ones due.
fn run(poll: &mut Poll, shared: &Mutex<State>) {
    let mut events = Events::with_capacity(256);
    // The first pass starts nothing early: it only computes the first deadline.
    let mut timeout = Some(Duration::ZERO);
    loop {
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("health: poll failed, checks stopped: {e}");
                return;
            }
        }
        let mut guard = lock(shared);
        let state = &mut *guard;
        if state.stop {
            return;
        }
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            let Some(entry) = state
                .entries
                .iter_mut()
                .find(|e| e.probe.as_ref().is_some_and(|p| p.token == event.token()))
            else {
                continue;
            };
            let Some(probe) = entry.probe.as_mut() else {
                continue;
            };
            if let Some(result) = advance(probe, &entry.target.kind) {
                finish(entry, result, &state.registry, &mut state.transitions);
            }
        }
        let now = Instant::now();
        for entry in &mut state.entries {
            if entry.probe.as_ref().is_some_and(|p| p.deadline <= now) {
                let failure = ProbeFailure::Timeout(entry.target.timeout_ms);
                finish(entry, Err(failure), &state.registry, &mut state.transitions);
            }
        }
        for entry in &mut state.entries {
            if entry.probe.is_none() && entry.next_due <= now {
                let interval = Duration::from_millis(entry.target.interval_ms.max(1));
                entry.next_due += interval;
                if entry.next_due <= now {
                    // Fell behind (a slow probe or a stall): skip, don't burst.
                    entry.next_due = now + interval;
                }
                let token = Token(state.next_token);
                state.next_token = state.next_token.wrapping_add(1).max(FIRST_PROBE_TOKEN);
                start(entry, token, now, &state.registry, &mut state.transitions);
            }
        }
        timeout = state
            .entries
            .iter()
            .map(|e| e.probe.as_ref().map_or(e.next_due, |p| p.deadline))
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
    }
}

/// Open the connection of a new probe; a failure to even start counts as a
/// failed probe.
fn start(
    entry: &mut Entry,
    token: Token,
    now: Instant,
    registry: &Registry,
    transitions: &mut Vec<Transition>,
) {
    let opened = TcpStream::connect(entry.target.addr).and_then(|mut stream| {
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    });
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => return entry.record(Err(ProbeFailure::from(&e)), transitions),
    };
    let deadline = now + Duration::from_millis(entry.target.timeout_ms);
    let mut probe = Probe {
        token,
        stream,
        deadline,
        phase: Phase::Connecting,
    };
    // A loopback connect may already be complete; events are edge-triggered.
    match advance(&mut probe, &entry.target.kind) {
        None => entry.probe = Some(probe),
        Some(result) => {
            let _ = registry.deregister(&mut probe.stream);
            entry.record(result, transitions);
        }
    }
}

/// Close the probe in flight and record its result.
fn finish(
    entry: &mut Entry,
    result: Result<(), ProbeFailure>,
    registry: &Registry,
    transitions: &mut Vec<Transition>,
) {
    if let Some(mut probe) = entry.probe.take() {
        let _ = registry.deregister(&mut probe.stream);
    }
    entry.record(result, transitions);
}

/// Drive a probe as far as the socket allows without blocking; `None` while
/// it still waits for the network.
fn advance(probe: &mut Probe, kind: &ProbeKind) -> Option<Result<(), ProbeFailure>> {
    loop {
        match &mut probe.phase {
            Phase::Connecting => {
                match probe.stream.take_error() {
                    Ok(Some(e)) | Err(e) => return Some(Err(ProbeFailure::from(&e))),
                    Ok(None) => {}
                }
                match probe.stream.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                    Err(e) => return Some(Err(ProbeFailure::from(&e))),
                }
                let ProbeKind::Http { path, host, .. } = kind else {
                    return Some(Ok(()));
                };
                let request = format!(
                    "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ulvs-health\r\nConnection: close\r\n\r\n"
                );
                probe.phase = Phase::Sending {
                    request: request.into_bytes(),
                    sent: 0,
                };
            }
            Phase::Sending { request, sent } => {
                while *sent < request.len() {
                    match probe.stream.write(&request[*sent..]) {
                        Ok(0) => return Some(Err(ProbeFailure::Reset)),
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Some(Err(ProbeFailure::from(&e))),
                    }
                }
                probe.phase = Phase::Receiving { buf: Vec::new() };
            }
            Phase::Receiving { buf } => {
                let ProbeKind::Http { expect_status, .. } = kind else {
                    return Some(Ok(()));
                };
                let mut chunk = [0u8; 512];
                loop {
                    match probe.stream.read(&mut chunk) {
                        Ok(0) => return Some(Err(ProbeFailure::BadResponse)),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some(Err(ProbeFailure::from(&e))),
                    }
                    if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                        return Some(match parse_status_line(&buf[..end]) {
                            Some(got) if got == *expect_status => Ok(()),
                            Some(got) => Err(ProbeFailure::Status {
                                got,
                                expected: *expect_status,
                            }),
                            None => Err(ProbeFailure::BadResponse),
                        });
                    }
                    if buf.len() > MAX_STATUS_LINE {
                        return Some(Err(ProbeFailure::BadResponse));
                    }
                }
            }
        }
    }
}

/// The status code of `HTTP/1.x NNN[ reason]`, without the line ending.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    if !minor.is_ascii_digit() || rest.len() < 3 || !(rest.len() == 3 || rest[3] == b' ') {
        return None;
    }
    rest[..3].iter().try_fold(0u16, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u16::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

    use Health::{Down, Pending, Up};

    // --- Damper ---

    /// (rise, fall, initial, results as 's'/'f', expected transitions as (index, new state))
    type DamperCase = (u32, u32, Health, &'static str, &'static [(usize, Health)]);

    const DAMPER_CASES: &[DamperCase] = &[
        (2, 2, Up, "", &[]),
        (2, 2, Up, "ssss", &[]),
        (2, 2, Up, "f", &[]),
        (2, 2, Up, "ff", &[(1, Down)]),
        (2, 3, Up, "ff", &[]),
        (2, 3, Up, "fff", &[(2, Down)]),
        // Failures interrupted by a success start over.
        (2, 3, Up, "ffsffsff", &[]),
        (2, 3, Up, "ffsfff", &[(5, Down)]),
        // Further failures while down change nothing.
        (2, 2, Up, "ffffff", &[(1, Down)]),
        // Initial Down needs `rise` successes.
        (2, 2, Down, "s", &[]),
        (2, 2, Down, "ss", &[(1, Up)]),
        (3, 1, Down, "ssfsss", &[(5, Up)]),
        (3, 1, Down, "sssf", &[(2, Up), (3, Down)]),
        // Flapping round trips.
        (2, 2, Up, "ffssff", &[(1, Down), (3, Up), (5, Down)]),
        (1, 1, Up, "fsfs", &[(0, Down), (1, Up), (2, Down), (3, Up)]),
        // Successes interrupted by a failure start over too.
        (3, 2, Up, "ffssfsss", &[(1, Down), (7, Up)]),
        // 0 is treated as 1.
        (0, 0, Up, "fs", &[(0, Down), (1, Up)]),
        // A new target's first result is taken as accurate, whatever rise
        // and fall; then they apply.
        (2, 3, Pending, "", &[]),
        (2, 3, Pending, "f", &[(0, Down)]),
        (3, 2, Pending, "s", &[(0, Up)]),
        (2, 3, Pending, "sfff", &[(0, Up), (3, Down)]),
        (3, 2, Pending, "fsss", &[(0, Down), (3, Up)]),
        (3, 2, Pending, "fssfsss", &[(0, Down), (6, Up)]),
    ];

    #[test]
    fn damper_table() {
        for &(rise, fall, initial, seq, expected) in DAMPER_CASES {
            let mut d = Damper::new(rise, fall, initial);
            assert_eq!(d.state(), initial);
            let mut got = Vec::new();
            let mut state = initial;
            for (i, c) in seq.chars().enumerate() {
                if let Some(h) = d.record(c == 's') {
                    assert_ne!(h, state, "a transition changes the state");
                    state = h;
                    got.push((i, h));
                }
                assert_eq!(d.state(), state);
            }
            assert_eq!(
                got, expected,
                "rise {rise} fall {fall} initial {initial:?} seq {seq:?}"
            );
        }
    }

    // --- Wording and parsing ---

    #[test]
    fn failure_wording() {
        let cases = [
            (ProbeFailure::Refused, "connection refused"),
            (ProbeFailure::Timeout(500), "timeout after 500 ms"),
            (
                ProbeFailure::Status {
                    got: 503,
                    expected: 200,
                },
                "status 503 (expected 200)",
            ),
            (ProbeFailure::Reset, "connection reset"),
            (ProbeFailure::BadResponse, "bad HTTP response"),
            (
                ProbeFailure::Io("No route to host".into()),
                "unreachable: No route to host",
            ),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text);
        }
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ProbeFailure::from(&refused), ProbeFailure::Refused);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(ProbeFailure::from(&reset), ProbeFailure::Reset);
        assert_eq!(count(1, "failure"), "1 consecutive failure");
        assert_eq!(count(3, "failure"), "3 consecutive failures");
        assert_eq!(count(2, "success"), "2 consecutive successes");
    }

    #[test]
    fn status_lines() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"HTTP/1.1 200 OK\r", Some(200)),
            (b"HTTP/1.0 503 Service Unavailable", Some(503)),
            (b"HTTP/1.1 204", Some(204)),
            (b"HTTP/1.1 404 \r", Some(404)),
            (b"HTTP/1.1 20 OK", None),
            (b"HTTP/1.1 2000 OK", None),
            (b"HTTP/1.1 2x0 OK", None),
            (b"HTTP/2 200 OK", None),
            (b"HTTP/1.x 200 OK", None),
            (b"SSH-2.0-OpenSSH_9.6", None),
            (b"", None),
        ];
        for &(line, expected) in cases {
            assert_eq!(
                parse_status_line(line),
                expected,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    // --- On loopback ---

    const LIMIT: Duration = Duration::from_secs(5);

    fn tcp(id: u32, port: u16) -> Target {
        Target {
            id,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            kind: ProbeKind::Tcp,
            interval_ms: 50,
            timeout_ms: 200,
            rise: 2,
            fall: 2,
        }
    }

    fn http(id: u32, port: u16, expect_status: u16) -> Target {
        let kind = ProbeKind::Http {
            path: "/healthz".into(),
            host: "web.example".into(),
            expect_status,
        };
        Target {
            kind,
            ..tcp(id, port)
        }
    }

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Wait (bounded) for the next transition.
    fn next_transition(checker: &Checker) -> Transition {
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(t) = checker.poll_transitions().into_iter().next() {
                return t;
            }
            assert!(Instant::now() < end, "no transition within {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn state_of(checker: &Checker, id: u32) -> Option<(Health, Option<String>)> {
        checker
            .states()
            .into_iter()
            .find(|s| s.0 == id)
            .map(|(_, h, r)| (h, r))
    }

    /// A tiny HTTP server: answers every request with `status`, or holds the
    /// connection without answering when `status` is 0.
    struct Responder {
        port: u16,
        status: Arc<AtomicU16>,
        stop: Arc<AtomicBool>,
        requests: Arc<Mutex<Vec<String>>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Responder {
        fn start(status: u16) -> Responder {
            Responder::start_on("127.0.0.1:0", status)
        }

        fn start_on(bind: &str, status: u16) -> Responder {
            let listener = TcpListener::bind(bind).unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let status = Arc::new(AtomicU16::new(status));
            let stop = Arc::new(AtomicBool::new(false));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (st, sp, rq) = (Arc::clone(&status), Arc::clone(&stop), Arc::clone(&requests));
            let thread = std::thread::spawn(move || {
                let mut held = Vec::new();
                while !sp.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 256];
                    while !request.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    rq.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request).into_owned());
                    match st.load(Ordering::Relaxed) {
                        0 => held.push(conn),
                        code => {
                            let _ = write!(conn, "HTTP/1.0 {code} Whatever\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                }
            });
            Responder {
                port,
                status,
                stop,
                requests,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    #[test]
    fn tcp_up_then_refused_down_then_up_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let checker = Checker::spawn(vec![tcp(7, port)]).unwrap();
        assert_eq!(checker.states(), vec![(7, Pending, None)]);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health, t.reason.as_str()), (7, Up, "first check passed"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(checker.poll_transitions(), vec![]);
        assert_eq!(checker.states(), vec![(7, Up, None)]);

        drop(listener);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (7, Down));
        assert_eq!(t.reason, "2 consecutive failures, last: connection refused");
        assert_eq!(
            state_of(&checker, 7),
            Some((Down, Some("connection refused".into())))
        );

        // The same port listening again: up after `rise` successes.
        let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let t = next_transition(&checker);
        assert_eq!(
            (t.id, t.health, t.reason.as_str()),
            (7, Up, "2 consecutive successes")
        );
        assert_eq!(state_of(&checker, 7), Some((Up, None)));
    }

    /// IPv6 servers are probed at [address]:port, TCP and HTTP alike (the
    /// HTTP Host header brackets the literal).
    #[test]
    fn ipv6_servers_are_probed() {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv6());
        let v6 = |id: u32, addr: SocketAddr| Target { addr, ..tcp(id, 0) };
        let closed = {
            let l = TcpListener::bind("[::1]:0").unwrap();
            l.local_addr().unwrap()
        };
        let responder = Responder::start_on("[::1]:0", 204);
        let web = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, responder.port));
        let kind = ProbeKind::Http {
            path: "/healthz".into(),
            host: "[::1]".into(),
            expect_status: 204,
        };
        let checker =
            Checker::spawn(vec![v6(1, addr), v6(2, closed), Target { kind, ..v6(3, web) }]).unwrap();
        let end = Instant::now() + LIMIT;
        while checker.states().iter().any(|s| s.1 == Pending) {
            assert!(
                Instant::now() < end,
                "no decision within 5s: {:?}",
                checker.states()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            checker.states(),
            vec![
                (1, Up, None),
                (2, Down, Some("connection refused".into())),
                (3, Up, None)
            ]
        );
        let _ = checker.poll_transitions();
        let seen = responder.requests.lock().unwrap()[0].clone();
        assert!(seen.contains("Host: [::1]\r\n"), "{seen:?}");
        // The IPv6 server going away is noticed as for IPv4.
        drop(listener);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (1, Down));
    }

    #[test]
    fn http_status_decides() {
        let responder = Responder::start(200);
        let checker = Checker::spawn(vec![http(1, responder.port, 200)]).unwrap();
        assert_eq!(next_transition(&checker).health, Up);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(checker.poll_transitions(), vec![]);
        assert_eq!(state_of(&checker, 1), Some((Up, None)));
        let first = responder.requests.lock().unwrap().first().cloned();
        assert_eq!(
            first.as_deref(),
            Some("GET /healthz HTTP/1.0\r\nHost: web.example\r\nUser-Agent: ulvs-health\r\nConnection: close\r\n\r\n")
        );

        responder.status.store(503, Ordering::Relaxed);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (1, Down));
        assert_eq!(
            t.reason,
            "2 consecutive failures, last: status 503 (expected 200)"
        );
        assert_eq!(
            state_of(&checker, 1),
            Some((Down, Some("status 503 (expected 200)".into())))
        );

        responder.status.store(200, Ordering::Relaxed);
        let t = next_transition(&checker);
        assert_eq!(
            (t.id, t.health, t.reason.as_str()),
            (1, Up, "2 consecutive successes")
        );
    }

    #[test]
    fn http_without_answer_times_out() {
        let responder = Responder::start(0);
        let target = Target {
            timeout_ms: 100,
            ..http(3, responder.port, 200)
        };
        let checker = Checker::spawn(vec![target]).unwrap();
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (3, Down));
        assert_eq!(t.reason, "first check failed: timeout after 100 ms");
    }

    #[test]
    fn http_to_a_closed_port_is_refused() {
        let checker = Checker::spawn(vec![http(4, closed_port(), 200)]).unwrap();
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (4, Down));
        assert!(t.reason.contains("refused"), "{}", t.reason);
    }

    #[test]
    fn update_keeps_unchanged_targets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_port = listener.local_addr().unwrap().port();
        let down_port = closed_port();
        let checker = Checker::spawn(vec![tcp(1, down_port), tcp(2, up_port)]).unwrap();
        let mut first: Vec<_> = [next_transition(&checker), next_transition(&checker)]
            .into_iter()
            .map(|t| (t.id, t.health))
            .collect();
        first.sort_by_key(|t| t.0);
        assert_eq!(first, vec![(1, Down), (2, Up)]);

        // Same checks (a new interval does not count), plus a new one: kept as they were.
        let slower = Target {
            interval_ms: 60,
            ..tcp(1, down_port)
        };
        checker.update(vec![tcp(3, up_port), slower.clone(), tcp(2, up_port)]);
        let states: Vec<_> = checker.states().into_iter().map(|(id, h, _)| (id, h)).collect();
        assert_eq!(states, vec![(3, Pending), (1, Down), (2, Up)]);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (3, Up), "only the new target reports");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(checker.poll_transitions(), vec![], "no transition is repeated");
        assert_eq!(
            state_of(&checker, 1),
            Some((Down, Some("connection refused".into())))
        );

        // A changed check starts over, Pending: its first result decides at
        // once (not after `fall` failures); a missing target stops.
        checker.update(vec![Target { fall: 3, ..slower }]);
        assert_eq!(checker.states(), vec![(1, Pending, None)]);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (1, Down));
        assert_eq!(t.reason, "first check failed: connection refused");
    }

    #[test]
    fn drop_is_prompt() {
        let slow = Target {
            interval_ms: 60_000,
            ..tcp(1, closed_port())
        };
        let checker = Checker::spawn(vec![slow]).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let begun = Instant::now();
        drop(checker);
        assert!(
            begun.elapsed() < Duration::from_millis(200),
            "{:?}",
            begun.elapsed()
        );
    }

    #[test]
    fn empty_set_idles_until_updated() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Checker>();
        let checker = Checker::spawn(Vec::new()).unwrap();
        assert_eq!(checker.states(), vec![]);
        checker.update(vec![tcp(9, closed_port())]);
        let t = next_transition(&checker);
        assert_eq!((t.id, t.health), (9, Down));
    }
}
