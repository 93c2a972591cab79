//! Control-socket and HTTP connections of the slow path, served by
//! non-blocking state machines on the director's mio `Poll` (slow path).
//!
//! The loop that serves these connections also answers ARP for the VIPs,
//! applies health transitions, reloads and handles signals, so it must never
//! wait on a client. Every connection here is non-blocking and bounded:
//!
//! - a deadline to send the whole request ([`Limits::request_timeout`]) and
//!   another to take the whole reply ([`Limits::reply_timeout`]);
//! - a request size ([`Limits::max_request`]): a longer request is refused with
//!   a sentence saying so and closed; it is never buffered whole;
//! - a number of open connections per listener ([`Limits::max_connections`]):
//!   beyond it a new connection gets a one-line refusal and is closed at once.
//!
//! Each outcome is counted in [`ConnCounters`] (`ulvsadm stats`, `/metrics`).
//! One request per connection: the control protocol is one JSON line each way,
//! the HTTP endpoint answers with `Connection: close`.

use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use log::warn;
use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::ctl::{Request, Response};
use super::metrics;
use super::snapshot::ConnCounters;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more are refused and closed immediately.
    pub max_connections: usize,
    /// Most bytes of one request (control: the line with its newline; HTTP:
    /// the request head).
    pub max_request: usize,
    /// From accept to the end of the request.
    pub request_timeout: Duration,
    /// From the request to the last byte of the reply taken by the client.
    pub reply_timeout: Duration,
}

impl Limits {
    /// The control socket: requests are one short JSON line.
    pub const CONTROL: Limits = Limits {
        max_connections: 256,
        max_request: 64 * 1024,
        request_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(5),
    };
    /// `metrics_listen`: a request head of a scrape.
    pub const HTTP: Limits = Limits {
        max_connections: 256,
        max_request: 8 * 1024,
        request_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(5),
    };
}

/// Which protocol a listener speaks: it decides where a request ends and how
/// a refusal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ulvsadm`: one JSON object ending in a newline, one JSON line back.
    Control,
    /// HTTP/1.x: a request head ending in a blank line.
    Http,
}

/// Why a connection is refused or cut short (the reply it gets, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Busy,
    TooLarge,
    TimedOut,
}

impl Kind {
    /// One past the end of the request in `buf`, once it is complete.
    /// `from` is where new bytes start (the search re-reads only the last
    /// few old ones, which a delimiter may straddle).
    fn request_end(self, buf: &[u8], from: usize) -> Option<usize> {
        match self {
            Kind::Control => {
                let start = from;
                buf[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| start + i + 1)
            }
            Kind::Http => {
                let start = from.saturating_sub(3);
                let tail = &buf[start..];
                let crlf = tail.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
                let lf = tail.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
                match (crlf, lf) {
                    (Some(a), Some(b)) => Some(start + a.min(b)),
                    (a, b) => a.or(b).map(|i| start + i),
                }
            }
        }
    }

    /// The reply of a refused or cut-short connection; a sentence about what
    /// the client sent (or did not send), never an OS error.
    fn refusal(self, why: Refusal, limits: &Limits) -> Vec<u8> {
        match self {
            Kind::Control => {
                let msg = match why {
                    Refusal::Busy => format!(
                        "too many control connections open ({}); try again in a few seconds",
                        limits.max_connections
                    ),
                    Refusal::TooLarge => format!(
                        "request longer than {} bytes; a control request is one JSON object on one line",
                        limits.max_request
                    ),
                    Refusal::TimedOut => format!(
                        "no complete request within {} s; a control request is one JSON object ending in a newline",
                        limits.request_timeout.as_secs_f64()
                    ),
                };
                control_line(&Response::err(msg))
            }
            Kind::Http => match why {
                Refusal::Busy => metrics::http_error(
                    "503 Service Unavailable",
                    &format!(
                        "Too many connections open ({}); try again.\n",
                        limits.max_connections
                    ),
                ),
                Refusal::TooLarge => metrics::http_error(
                    "431 Request Header Fields Too Large",
                    &format!("Request head longer than {} bytes.\n", limits.max_request),
                ),
                Refusal::TimedOut => metrics::http_error(
                    "408 Request Timeout",
                    &format!(
                        "No complete request head within {} s.\n",
                        limits.request_timeout.as_secs_f64()
                    ),
                ),
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Control => "control socket",
            Kind::Http => "metrics_listen",
        }
    }
}

/// A response as one line on the control socket.
fn control_line(resp: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(resp).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
    out.push(b'\n');
    out
}

/// What the caller made of one complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The bytes to send back.
    pub bytes: Vec<u8>,
    /// The request could not be understood (counted as `bad_request`).
    pub bad_request: bool,
}

/// Answer one control request line: parse it, let `handle` act on it, and
/// encode the response as one line.
pub fn control_reply(line: &[u8], handle: impl FnOnce(Request) -> Response) -> Reply {
    match parse_request(line) {
        Ok(req) => Reply {
            bytes: control_line(&handle(req)),
            bad_request: false,
        },
        Err(e) => Reply {
            bytes: control_line(&Response::err(e)),
            bad_request: true,
        },
    }
}

/// Parse one control request line (with or without its newline).
///
/// # Errors
/// A sentence saying what is wrong with the line.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty request; a control request is one JSON object such as {\"cmd\":\"list\"}".into());
    }
    serde_json::from_slice(line).map_err(|e| {
        // serde quotes the request (an unknown verb, say) after unescaping
        // it: escape control characters so the reason stays one line (found
        // by the ctl_request fuzz target).
        let why: String = e
            .to_string()
            .chars()
            .flat_map(|c| {
                let escaped = c.is_control().then(|| c.escape_default());
                escaped
                    .into_iter()
                    .flatten()
                    .chain((!c.is_control()).then_some(c))
            })
            .collect();
        format!("bad request: {why}")
    })
}

/// Answer one HTTP request head with [`metrics::http_response`]; a head it
/// answers with 400 counts as a bad request.
pub fn http_reply(head: &[u8], body: impl FnOnce(metrics::Page) -> String) -> Reply {
    let bytes = metrics::http_response(head, body);
    let bad_request = bytes.starts_with(b"HTTP/1.1 400");
    Reply { bytes, bad_request }
}

/// A listening socket whose connections the endpoint serves.
pub trait Listen: Source {
    type Stream: Read + Write + Source;
    /// Accept one connection (non-blocking).
    ///
    /// # Errors
    /// `WouldBlock` when none is queued, else the OS error.
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listen for mio::net::UnixListener {
    type Stream = mio::net::UnixStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Listen for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
}

enum State {
    /// Collecting the request; `scanned` bytes of `buf` hold no end yet.
    Reading { buf: Vec<u8>, scanned: usize },
    /// Sending `out` from `pos`; `answered` when it answers a request (not
    /// a refusal).
    Writing {
        out: Vec<u8>,
        pos: usize,
        answered: bool,
    },
}

struct Conn<S> {
    stream: S,
    state: State,
    deadline: Instant,
}

/// How far a request got.
enum Progress {
    /// Not complete; the socket has nothing more now.
    Pending,
    /// The client closed or the socket failed before the request was complete.
    Closed,
    /// `max_request` bytes and no end: refused.
    TooLarge,
    /// The request is `buf[..end]`.
    Complete(usize),
}

/// Read what the socket holds, up to the request's end or its size limit
/// (never past it: the rest stays in the socket and is never buffered).
fn read_request(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    scanned: &mut usize,
    kind: Kind,
    limits: &Limits,
) -> Progress {
    loop {
        if let Some(end) = kind.request_end(buf, *scanned) {
            return Progress::Complete(end);
        }
        *scanned = buf.len();
        if buf.len() >= limits.max_request {
            return Progress::TooLarge;
        }
        let room = (limits.max_request - buf.len()).min(CHUNK);
        let old = buf.len();
        buf.resize(old + room, 0);
        let got = stream.read(&mut buf[old..]);
        buf.truncate(old + *got.as_ref().unwrap_or(&0));
        match got {
            Ok(0) => return Progress::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
}

/// Read and drop what a refused client already sent (bounded, never
/// waiting): closing a TCP socket with unread input sends a reset, which can
/// destroy the refusal before the client reads it.
fn discard_queued(stream: &mut impl Read) {
    let mut sink = [0u8; CHUNK];
    for _ in 0..4 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// What became of a connection after some I/O.
enum Step {
    /// Waiting for the client (more request bytes, or room to write).
    Pending,
    /// Done: deregister and close.
    Close,
}

/// Most connections accepted per call, so that a connect flood cannot hold
/// the loop; the rest are taken at the next [`Endpoint::tick`].
const ACCEPT_BATCH: usize = 64;
/// Bytes read per `read` call.
const CHUNK: usize = 4096;

/// One listener and its connections, registered on the caller's `Poll` with
/// tokens `base` (the listener) and `base + 1 ..= base + max_connections`.
pub struct Endpoint<L: Listen> {
    listener: L,
    kind: Kind,
    limits: Limits,
    base: usize,
    conns: Vec<Option<Conn<L::Stream>>>,
    free: Vec<usize>,
    counters: ConnCounters,
}

impl<L: Listen> Endpoint<L> {
    /// Register `listener` with token `base`; its connections take the next
    /// `limits.max_connections` tokens.
    ///
    /// # Errors
    /// Registering with the poll failed.
    pub fn new(
        mut listener: L,
        kind: Kind,
        limits: Limits,
        base: usize,
        registry: &Registry,
    ) -> io::Result<Self> {
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        let n = limits.max_connections;
        Ok(Endpoint {
            listener,
            kind,
            limits,
            base,
            conns: (0..n).map(|_| None).collect(),
            free: (0..n).rev().collect(),
            counters: ConnCounters::default(),
        })
    }

    /// Is `token` this endpoint's (its listener or one of its connections)?
    pub fn owns(&self, token: Token) -> bool {
        (self.base..=self.base + self.limits.max_connections).contains(&token.0)
    }

    /// The counters, with `open` filled in.
    pub fn counters(&self) -> ConnCounters {
        ConnCounters {
            open: (self.limits.max_connections - self.free.len()) as u64,
            ..self.counters
        }
    }

    /// Handle readiness of one of this endpoint's tokens (other tokens are
    /// ignored). `answer` turns a complete request into the reply; it is
    /// called at most once per connection and only with a complete request.
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
        answer: &mut dyn FnMut(&[u8]) -> Reply,
    ) {
        if token.0 == self.base {
            self.accept(registry, now, answer);
        } else if let Some(slot) = token.0.checked_sub(self.base + 1) {
            if slot < self.conns.len() {
                self.drive(registry, slot, answer);
            }
        }
    }

    /// Close connections past their deadline and accept what a previous
    /// batch left queued. Call it every loop iteration.
    pub fn tick(&mut self, registry: &Registry, now: Instant, answer: &mut dyn FnMut(&[u8]) -> Reply) {
        for slot in 0..self.conns.len() {
            let Some(c) = &mut self.conns[slot] else {
                continue;
            };
            if now < c.deadline {
                continue;
            }
            match c.state {
                State::Reading { .. } => {
                    self.counters.timed_out += 1;
                    let msg = self.kind.refusal(Refusal::TimedOut, &self.limits);
                    // Best effort: one non-blocking write, then close.
                    let _ = c.stream.write(&msg);
                }
                State::Writing { .. } => self.counters.reply_timed_out += 1,
            }
            self.close(registry, slot);
        }
        self.accept(registry, now, answer);
    }

    fn accept(&mut self, registry: &Registry, now: Instant, answer: &mut dyn FnMut(&[u8]) -> Reply) {
        for _ in 0..ACCEPT_BATCH {
            let mut stream = match self.listener.accept_one() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: leave the rest queued for the next tick.
                    warn!("{}: accept failed: {e}", self.kind.name());
                    return;
                }
            };
            self.counters.accepted += 1;
            let Some(slot) = self.free.pop() else {
                self.counters.refused_limit += 1;
                // A fresh socket's send buffer is empty: the one line fits.
                let _ = stream.write(&self.kind.refusal(Refusal::Busy, &self.limits));
                discard_queued(&mut stream);
                continue;
            };
            if let Err(e) = registry.register(&mut stream, Token(self.base + 1 + slot), Interest::READABLE) {
                warn!("{}: cannot register a connection: {e}", self.kind.name());
                self.free.push(slot);
                continue;
            }
            self.conns[slot] = Some(Conn {
                stream,
                state: State::Reading {
                    buf: Vec::new(),
                    scanned: 0,
                },
                deadline: now + self.limits.request_timeout,
            });
            // The request may be queued already.
            self.drive(registry, slot, answer);
        }
    }

    /// Read and write as far as the socket allows without waiting.
    fn drive(&mut self, registry: &Registry, slot: usize, answer: &mut dyn FnMut(&[u8]) -> Reply) {
        let step = match &mut self.conns[slot] {
            Some(c) => Self::step(
                c,
                self.kind,
                &self.limits,
                &mut self.counters,
                registry,
                Token(self.base + 1 + slot),
                answer,
            ),
            None => return,
        };
        if let Step::Close = step {
            self.close(registry, slot);
        }
    }

    fn step(
        c: &mut Conn<L::Stream>,
        kind: Kind,
        limits: &Limits,
        counters: &mut ConnCounters,
        registry: &Registry,
        token: Token,
        answer: &mut dyn FnMut(&[u8]) -> Reply,
    ) -> Step {
        if let State::Reading { buf, scanned } = &mut c.state {
            let (out, answered) = match read_request(&mut c.stream, buf, scanned, kind, limits) {
                Progress::Pending => return Step::Pending,
                Progress::Closed => {
                    counters.closed_early += 1;
                    return Step::Close;
                }
                Progress::TooLarge => {
                    counters.too_large += 1;
                    (kind.refusal(Refusal::TooLarge, limits), false)
                }
                Progress::Complete(end) => {
                    let reply = answer(&buf[..end]);
                    if reply.bad_request {
                        counters.bad_request += 1;
                    }
                    (reply.bytes, true)
                }
            };
            c.state = State::Writing {
                out,
                pos: 0,
                answered,
            };
            c.deadline = Instant::now() + limits.reply_timeout;
            if registry
                .reregister(&mut c.stream, token, Interest::WRITABLE)
                .is_err()
            {
                counters.closed_early += 1;
                return Step::Close;
            }
        }
        let State::Writing { out, pos, answered } = &mut c.state else {
            return Step::Pending;
        };
        while *pos < out.len() {
            match c.stream.write(&out[*pos..]) {
                Ok(0) => {
                    counters.closed_early += 1;
                    return Step::Close;
                }
                Ok(n) => *pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    counters.closed_early += 1;
                    return Step::Close;
                }
            }
        }
        if *answered {
            counters.served += 1;
        }
        Step::Close
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut c) = self.conns[slot].take() {
            let _ = registry.deregister(&mut c.stream);
            self.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests;
