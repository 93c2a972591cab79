//! Control-socket and HTTP connections of the slow path, served by
//! non-blocking state machines on the director's mio `Poll` (slow path).
//!
//! The loop that serves these connections also answers ARP for the VIPs,
//! applies health transitions, reloads and handles signals, so it must never
//! wait on a client. Every connection here is non-blocking and bounded:
//!
//! - a deadline to send the whole request ([`Limits::request_timeout`]) and
//!   another that follows the reply: a client that takes no byte of it for
//!   [`Limits::reply_timeout`] is dropped, one that keeps reading is served
//!   however long the reply (`ulvsadm list` of 200,000 servers is tens of
//!   megabytes);
//! - a request size ([`Limits::max_request`]): a longer request is refused with
//!   a sentence saying so and closed; it is never buffered whole;
//! - a number of open connections per listener ([`Limits::max_connections`]):
//!   beyond it a new connection gets a one-line refusal and is closed at once.
//!
//! - a reply is held in memory a part at a time: a [`Respond`]er may answer
//!   with a first part and a cursor ([`Reply::rest`]); the endpoint asks it
//!   for the next part ([`Respond::more`]) only when the socket took the
//!   last one, and for at most one part per connection per call, so a long
//!   reply is produced between the loop's other work (health checks, ARP,
//!   other clients), never in one go. A connection with a part to produce
//!   and room to write it keeps [`Endpoint::busy`] true: the loop polls
//!   without waiting then (readiness is edge-triggered, so no event would
//!   come for room that is already there).
//!
//! Each outcome is counted in [`ConnCounters`] (`ulvsadm stats`, `/metrics`).
//! One request per connection: the control protocol is one JSON line each way,
//! the HTTP endpoint answers with `Connection: close`.

use std::convert::Infallible;
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
    /// The longest a client may take no byte of the reply (from the request
    /// to the first byte taken, then between any two writes that made
    /// progress); the whole reply may take longer.
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
pub fn control_line(resp: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(resp).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
    out.push(b'\n');
    out
}

/// What the caller made of one complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<R = Infallible> {
    /// The bytes to send back (the first part, when `rest` follows).
    pub bytes: Vec<u8>,
    /// The request could not be understood (counted as `bad_request`).
    pub bad_request: bool,
    /// Where the rest of the reply is to be produced from, part by part
    /// ([`Respond::more`]); `None` when `bytes` is all of it.
    pub rest: Option<R>,
}

impl<R> Reply<R> {
    /// A reply that is `bytes` and nothing more.
    pub fn whole(bytes: Vec<u8>, bad_request: bool) -> Self {
        Reply {
            bytes,
            bad_request,
            rest: None,
        }
    }
}

/// Turns a complete request into a [`Reply`], and a reply's rest into its
/// next parts. Any `FnMut(&[u8]) -> Reply` is one whose replies are whole.
pub trait Respond {
    /// The cursor of a reply produced in parts (the responder's own type).
    type Rest;
    /// The reply to one complete request.
    fn reply(&mut self, request: &[u8]) -> Reply<Self::Rest>;
    /// Append the next part of the reply `rest` stands for to `out` (which
    /// the endpoint has sent and emptied): about [`PART`] bytes, at least
    /// one byte unless the reply is over. `true` when this was the last part.
    fn more(&mut self, rest: &mut Self::Rest, out: &mut Vec<u8>) -> bool;
}

impl<F: FnMut(&[u8]) -> Reply + ?Sized> Respond for F {
    type Rest = Infallible;
    fn reply(&mut self, request: &[u8]) -> Reply {
        self(request)
    }
    fn more(&mut self, rest: &mut Infallible, _: &mut Vec<u8>) -> bool {
        match *rest {}
    }
}

/// How many bytes a [`Respond::more`] call aims to produce: large enough
/// that a 60 MB reply takes some thousand loop rounds, small enough that
/// one round stays well under a millisecond or two of work.
pub const PART: usize = 64 * 1024;

/// How a control request is answered: with one [`Response`], or in parts
/// from a cursor (`ulvsadm list`, `flows`: tens of megabytes at scale).
#[derive(Debug)]
pub enum Answered<R> {
    Whole(Response),
    Parts(R),
}

/// Answer one control request line: parse it, let `handle` act on it, and
/// encode the response as one line.
pub fn control_reply(line: &[u8], handle: impl FnOnce(Request) -> Response) -> Reply {
    control_reply_parts(line, |req| Answered::Whole(handle(req)))
}

/// [`control_reply`] for a `handle` that may answer in parts: then the
/// reply starts empty and its `rest` is `handle`'s cursor.
pub fn control_reply_parts<R>(line: &[u8], handle: impl FnOnce(Request) -> Answered<R>) -> Reply<R> {
    match parse_request(line) {
        Ok(req) => match handle(req) {
            Answered::Whole(resp) => Reply::whole(control_line(&resp), false),
            Answered::Parts(rest) => Reply {
                bytes: Vec::new(),
                bad_request: false,
                rest: Some(rest),
            },
        },
        Err(e) => Reply::whole(control_line(&Response::err(e)), true),
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
    Reply::whole(bytes, bad_request)
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

enum State<R> {
    /// Collecting the request; `scanned` bytes of `buf` hold no end yet.
    Reading { buf: Vec<u8>, scanned: usize },
    /// Sending `out` from `pos`, then what `rest` produces; `answered` when
    /// it answers a request (not a refusal).
    Writing {
        out: Vec<u8>,
        pos: usize,
        rest: Option<R>,
        answered: bool,
    },
}

struct Conn<S, R> {
    stream: S,
    state: State<R>,
    deadline: Instant,
    /// It stopped with a part to produce while the socket may still have
    /// room: no readiness event will come, [`Endpoint::tick`] drives it.
    again: bool,
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
    /// A part was produced and sent and the socket may take more: call
    /// again without waiting for an event.
    Again,
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
/// `R` is the cursor of the replies its [`Respond`]er produces in parts.
pub struct Endpoint<L: Listen, R = Infallible> {
    listener: L,
    kind: Kind,
    limits: Limits,
    base: usize,
    conns: Vec<Option<Conn<L::Stream, R>>>,
    free: Vec<usize>,
    counters: ConnCounters,
}

impl<L: Listen, R> Endpoint<L, R> {
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

    /// Does a connection have a part of its reply to produce and (perhaps)
    /// room to send it? Then the caller's next poll must not wait: the next
    /// [`Endpoint::tick`] goes on with it.
    pub fn busy(&self) -> bool {
        self.conns.iter().flatten().any(|c| c.again)
    }

    /// Handle readiness of one of this endpoint's tokens (other tokens are
    /// ignored). `answer` turns a complete request into the reply (called at
    /// most once per connection and only with a complete request) and
    /// produces the parts of a reply that has a rest.
    pub fn ready<A: Respond<Rest = R> + ?Sized>(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
        answer: &mut A,
    ) {
        if token.0 == self.base {
            self.accept(registry, now, answer);
        } else if let Some(slot) = token.0.checked_sub(self.base + 1) {
            if slot < self.conns.len() {
                self.drive(registry, slot, answer);
            }
        }
    }

    /// Close connections past their deadline, go on with replies that have
    /// room for their next part ([`Endpoint::busy`]) and accept what a
    /// previous batch left queued. Call it every loop iteration.
    pub fn tick<A: Respond<Rest = R> + ?Sized>(&mut self, registry: &Registry, now: Instant, answer: &mut A) {
        for slot in 0..self.conns.len() {
            let Some(c) = &mut self.conns[slot] else {
                continue;
            };
            if c.again {
                self.drive(registry, slot, answer);
                continue;
            }
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

    fn accept<A: Respond<Rest = R> + ?Sized>(&mut self, registry: &Registry, now: Instant, answer: &mut A) {
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
                again: false,
            });
            // The request may be queued already.
            self.drive(registry, slot, answer);
        }
    }

    /// Read and write as far as the socket allows without waiting, producing
    /// at most one part of a reply.
    fn drive<A: Respond<Rest = R> + ?Sized>(&mut self, registry: &Registry, slot: usize, answer: &mut A) {
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
        match step {
            Step::Close => self.close(registry, slot),
            Step::Again | Step::Pending => {
                if let Some(c) = &mut self.conns[slot] {
                    c.again = matches!(step, Step::Again);
                }
            }
        }
    }

    fn step<A: Respond<Rest = R> + ?Sized>(
        c: &mut Conn<L::Stream, R>,
        kind: Kind,
        limits: &Limits,
        counters: &mut ConnCounters,
        registry: &Registry,
        token: Token,
        answer: &mut A,
    ) -> Step {
        if let State::Reading { buf, scanned } = &mut c.state {
            let (out, rest, answered) = match read_request(&mut c.stream, buf, scanned, kind, limits) {
                Progress::Pending => return Step::Pending,
                Progress::Closed => {
                    counters.closed_early += 1;
                    return Step::Close;
                }
                Progress::TooLarge => {
                    counters.too_large += 1;
                    (kind.refusal(Refusal::TooLarge, limits), None, false)
                }
                Progress::Complete(end) => {
                    let reply = answer.reply(&buf[..end]);
                    if reply.bad_request {
                        counters.bad_request += 1;
                    }
                    (reply.bytes, reply.rest, true)
                }
            };
            c.state = State::Writing {
                out,
                pos: 0,
                rest,
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
        let State::Writing {
            out,
            pos,
            rest,
            answered,
        } = &mut c.state
        else {
            return Step::Pending;
        };
        let mut produced = false;
        loop {
            let before = *pos;
            while *pos < out.len() {
                match c.stream.write(&out[*pos..]) {
                    Ok(0) => {
                        counters.closed_early += 1;
                        return Step::Close;
                    }
                    Ok(n) => *pos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        counters.closed_early += 1;
                        return Step::Close;
                    }
                }
            }
            // The deadline follows progress: only a client that takes
            // nothing for `reply_timeout` is dropped.
            if *pos > before {
                c.deadline = Instant::now() + limits.reply_timeout;
            }
            if *pos < out.len() {
                return Step::Pending;
            }
            let Some(r) = rest else {
                if *answered {
                    counters.served += 1;
                }
                return Step::Close;
            };
            if produced {
                // One part per call: the loop's other work comes first.
                return Step::Again;
            }
            out.clear();
            *pos = 0;
            if answer.more(r, out) {
                *rest = None;
            }
            produced = true;
        }
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
