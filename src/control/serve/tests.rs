//! Real sockets (a Unix socket in a temp dir, TCP on 127.0.0.1 port 0): every
//! misbehaving client is served beside a well-behaved one, and the loop is
//! never held longer than a few milliseconds by any of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use serde_json::json;

use super::*;

/// The longest the loop may spend handling one round of events: far below
/// the ARP retry interval, and far below what a blocking read would take.
const MAX_ROUND: Duration = Duration::from_millis(50);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ulvs-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn control_answer(line: &[u8]) -> Reply {
    control_reply(line, |req| Response::ok(json!({ "echo": format!("{req:?}") })))
}

/// Serve until `done` (or `max`), returning the longest round of handling.
/// As the director's loop: no wait in the poll while a reply has a part to
/// produce and room for it.
fn serve<L: Listen, A: Respond + ?Sized>(
    poll: &mut Poll,
    ep: &mut Endpoint<L, A::Rest>,
    done: &AtomicBool,
    max: Duration,
    answer: &mut A,
) -> Duration {
    let mut events = Events::with_capacity(64);
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    while !done.load(Ordering::SeqCst) && start.elapsed() < max {
        let wait = if ep.busy() {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        poll.poll(&mut events, Some(wait)).unwrap();
        let t = Instant::now();
        for e in events.iter() {
            assert!(ep.owns(e.token()));
            ep.ready(poll.registry(), e.token(), t, answer);
        }
        ep.tick(poll.registry(), Instant::now(), answer);
        longest = longest.max(t.elapsed());
    }
    longest
}

fn control_endpoint<R>(
    dir: &TempDir,
    limits: Limits,
) -> (Poll, Endpoint<mio::net::UnixListener, R>, PathBuf) {
    let path = dir.0.join("ctl.sock");
    let poll = Poll::new().unwrap();
    let l = mio::net::UnixListener::bind(&path).unwrap();
    let ep = Endpoint::new(l, Kind::Control, limits, 10, poll.registry()).unwrap();
    (poll, ep, path)
}

/// One well-behaved `list` request; the reply line and how long it took.
fn ask(path: &PathBuf) -> (String, Duration) {
    let t = Instant::now();
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"{\"cmd\":\"list\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    (line, t.elapsed())
}

/// Run `client` on a thread while the endpoint serves; returns its result and
/// the longest round.
fn with_client<L: Listen, A: Respond + ?Sized, T: Send + 'static>(
    poll: &mut Poll,
    ep: &mut Endpoint<L, A::Rest>,
    max: Duration,
    answer: &mut A,
    client: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let h = thread::spawn(move || {
        let r = client();
        d.store(true, Ordering::SeqCst);
        r
    });
    let longest = serve(poll, ep, &done, max, answer);
    (h.join().unwrap(), longest)
}

#[test]
fn request_end_finds_the_delimiter_across_reads() {
    assert_eq!(Kind::Control.request_end(b"{}\nxx", 0), Some(3));
    assert_eq!(Kind::Control.request_end(b"{}", 0), None);
    assert_eq!(Kind::Http.request_end(b"GET / HTTP/1.0\r\n\r\n", 0), Some(18));
    assert_eq!(Kind::Http.request_end(b"GET / HTTP/1.0\n\nrest", 0), Some(16));
    // The delimiter straddles what was scanned and what is new.
    assert_eq!(Kind::Http.request_end(b"GET / HTTP/1.0\r\n\r\n", 16), Some(18));
    assert_eq!(Kind::Http.request_end(b"GET / HTTP/1.0\r\nA: b\r\n", 0), None);
}

#[test]
fn bad_requests_read_as_sentences() {
    let e = parse_request(b"\n").unwrap_err();
    assert!(e.starts_with("empty request;"), "{e}");
    let e = parse_request(b"{\"cmd\":\"explode\"}\n").unwrap_err();
    assert!(e.starts_with("bad request: unknown variant `explode`"), "{e}");
    assert_eq!(parse_request(b"{\"cmd\":\"list\"}\r\n"), Ok(Request::List));
    // A quoted verb with an escaped line break stays one line (the
    // ctl_request fuzz target's first find).
    let e = parse_request(b"{\"cmd\":\"a\\nb\"}\n").unwrap_err();
    assert!(e.starts_with("bad request: unknown variant `a\\nb`"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let r = control_answer(b"not json\n");
    assert!(r.bad_request);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes).unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn trickling_and_idle_clients_do_not_hold_another() {
    let dir = TempDir::new("trickle");
    let (mut poll, mut ep, path) = control_endpoint(&dir, Limits::CONTROL);
    let p = path.clone();
    let ((line, took, trickled), longest) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut control_answer,
        move || {
            let _idle: Vec<UnixStream> = (0..20).map(|_| UnixStream::connect(&p).unwrap()).collect();
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let tp = p.clone();
            // One byte every 20 ms, never a newline: a blocking reader would
            // wait for it forever.
            let trickler = thread::spawn(move || {
                let mut s = UnixStream::connect(&tp).unwrap();
                let mut n = 0;
                while !st.load(Ordering::SeqCst) && s.write_all(b" ").is_ok() {
                    n += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                n
            });
            thread::sleep(Duration::from_millis(200));
            let (line, took) = ask(&p);
            stop.store(true, Ordering::SeqCst);
            (line, took, trickler.join().unwrap())
        },
    );
    assert!(line.contains("\"ok\":true") && line.contains("List"), "{line}");
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
    assert!(trickled >= 5, "the trickler sent {trickled} bytes");
    assert!(longest < MAX_ROUND, "a round took {longest:?}");
    let c = ep.counters();
    assert_eq!(c.accepted, 22);
    assert_eq!(c.served, 1);
    assert_eq!(c.timed_out + c.too_large + c.refused_limit, 0);
}

#[test]
fn idle_client_is_closed_at_the_deadline_with_a_reason() {
    let dir = TempDir::new("idle");
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::CONTROL
    };
    let (mut poll, mut ep, path) = control_endpoint(&dir, limits);
    let ((reply, waited), longest) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(5),
        &mut control_answer,
        move || {
            let t = Instant::now();
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(b"{\"cmd\":").unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            (reply, t.elapsed())
        },
    );
    assert!(reply.contains("no complete request within 0.3 s"), "{reply}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(longest < MAX_ROUND, "a round took {longest:?}");
    let c = ep.counters();
    assert_eq!((c.timed_out, c.open, c.served), (1, 0, 0));
}

#[test]
fn oversized_line_is_refused_and_never_buffered_whole() {
    let dir = TempDir::new("big");
    let (mut poll, mut ep, path) = control_endpoint(&dir, Limits::CONTROL);
    let ((reply, wrote, line), longest) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut control_answer,
        move || {
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let big = vec![b'x'; 10 << 20];
            // The director stops reading at 64 KiB and closes: the write fails
            // (EPIPE) long before 10 MB went in.
            let mut wrote = 0;
            while wrote < big.len() {
                match s.write(&big[wrote..]) {
                    Ok(n) => wrote += n,
                    Err(_) => break,
                }
            }
            let mut reply = String::new();
            let _ = BufReader::new(&s).read_line(&mut reply);
            // Meanwhile (and afterwards) a good client is served.
            let (line, _) = ask(&path);
            (reply, wrote, line)
        },
    );
    assert!(
        reply.contains("request longer than 65536 bytes; a control request is one JSON object on one line"),
        "{reply}"
    );
    assert!(wrote < 10 << 20, "all 10 MB went in");
    assert!(line.contains("\"ok\":true"), "{line}");
    assert!(longest < MAX_ROUND, "a round took {longest:?}");
    let c = ep.counters();
    assert_eq!((c.too_large, c.served), (1, 1));
}

#[test]
fn connections_over_the_limit_are_refused_and_counted() {
    let dir = TempDir::new("limit");
    let limits = Limits {
        max_connections: 4,
        ..Limits::CONTROL
    };
    let (mut poll, mut ep, path) = control_endpoint(&dir, limits);
    let ((refused, after), longest) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut control_answer,
        move || {
            let idle: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&path).unwrap()).collect();
            thread::sleep(Duration::from_millis(100));
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut refused = String::new();
            let _ = s.read_to_string(&mut refused);
            drop(idle);
            thread::sleep(Duration::from_millis(100));
            let (after, _) = ask(&path);
            (refused, after)
        },
    );
    assert!(
        refused.contains("too many control connections open (4)"),
        "{refused}"
    );
    assert!(after.contains("\"ok\":true"), "{after}");
    assert!(longest < MAX_ROUND, "a round took {longest:?}");
    let c = ep.counters();
    assert_eq!(
        (c.accepted, c.refused_limit, c.closed_early, c.served),
        (6, 1, 4, 1)
    );
}

#[test]
fn a_client_that_does_not_read_cannot_stall_the_loop() {
    let dir = TempDir::new("slowreader");
    let limits = Limits {
        reply_timeout: Duration::from_millis(300),
        ..Limits::CONTROL
    };
    let (mut poll, mut ep, path) = control_endpoint(&dir, limits);
    // A reply far larger than the socket buffer.
    let mut answer = |line: &[u8]| {
        if line.starts_with(b"{\"cmd\":\"stats\"}") {
            Reply::whole(vec![b'y'; 8 << 20], false)
        } else {
            control_answer(line)
        }
    };
    let ((line, took), longest) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut answer,
        move || {
            let mut slow = UnixStream::connect(&path).unwrap();
            slow.write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
            thread::sleep(Duration::from_millis(100));
            let r = ask(&path);
            // Keep the slow reader unread until its deadline passed.
            thread::sleep(Duration::from_millis(500));
            drop(slow);
            r
        },
    );
    assert!(line.contains("\"ok\":true"), "{line}");
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
    assert!(longest < MAX_ROUND, "a round took {longest:?}");
    let c = ep.counters();
    assert_eq!((c.reply_timed_out, c.served, c.open), (1, 1, 0));
}

/// The byte at `i` of a streamed reply of `total` bytes: letters, then the
/// line's newline.
fn streamed_byte(i: usize, total: usize) -> u8 {
    if i + 1 == total {
        b'\n'
    } else {
        b'a' + (i % 26) as u8
    }
}

/// Answers `{"cmd":"stats"}` with `total` bytes made in parts of at most
/// `part` bytes ([`PART`] unless set), everything else as
/// [`control_answer`]; counts the parts it made and the largest.
struct Streaming {
    total: usize,
    part: usize,
    parts: usize,
    made: usize,
    largest: usize,
}

impl Streaming {
    fn new(total: usize) -> Self {
        Streaming {
            total,
            part: PART,
            parts: 0,
            made: 0,
            largest: 0,
        }
    }
}

impl Respond for Streaming {
    /// Bytes made so far.
    type Rest = usize;
    fn reply(&mut self, line: &[u8]) -> Reply<usize> {
        if line.starts_with(b"{\"cmd\":\"stats\"}") {
            return Reply {
                bytes: Vec::new(),
                bad_request: false,
                rest: Some(0),
            };
        }
        let r = control_answer(line);
        Reply::whole(r.bytes, r.bad_request)
    }
    fn more(&mut self, made: &mut usize, out: &mut Vec<u8>) -> bool {
        assert!(out.is_empty(), "asked for a part before the last one was sent");
        let end = (*made + self.part).min(self.total);
        out.extend((*made..end).map(|i| streamed_byte(i, self.total)));
        self.parts += 1;
        self.made += end - *made;
        self.largest = self.largest.max(out.len());
        *made = end;
        end == self.total
    }
}

/// Ask for the streamed reply and read it `chunk` bytes at a time with
/// `pause` between reads, up to `stop_after` bytes (then stop reading for
/// `stopped`, then read what is left); the bytes and whether each was the
/// expected one.
fn read_streamed(
    path: &PathBuf,
    total: usize,
    chunk: usize,
    pause: Duration,
    stop_after: usize,
    stopped: Duration,
) -> (usize, bool) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
    let mut buf = vec![0u8; chunk];
    let (mut got, mut right, mut paused) = (0, true, false);
    loop {
        if got >= stop_after && !paused {
            paused = true;
            thread::sleep(stopped);
        }
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return (got, right),
            Ok(n) => n,
        };
        right &= buf[..n]
            .iter()
            .enumerate()
            .all(|(k, &b)| b == streamed_byte(got + k, total));
        got += n;
        if got < stop_after {
            thread::sleep(pause);
        }
    }
}

/// A client that reads a long reply slowly gets it whole, although it takes
/// many times the reply deadline: the deadline follows progress. The reply
/// is made a part at a time as the client takes it, never ahead.
#[test]
fn a_slow_reader_gets_a_long_streamed_reply_whole() {
    let dir = TempDir::new("slowstream");
    let limits = Limits {
        reply_timeout: Duration::from_millis(300),
        ..Limits::CONTROL
    };
    let (mut poll, mut ep, path) = control_endpoint(&dir, limits);
    let total = 4 << 20;
    let mut answer = Streaming::new(total);
    let ((got, right, took), _) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(60),
        &mut answer,
        move || {
            let t = Instant::now();
            let (got, right) = read_streamed(
                &path,
                total,
                32 << 10,
                Duration::from_millis(10),
                usize::MAX,
                Duration::ZERO,
            );
            (got, right, t.elapsed())
        },
    );
    assert_eq!(got, total, "the reply was cut after {took:?}");
    assert!(right, "bytes out of place");
    assert!(
        took > 3 * limits.reply_timeout,
        "read in {took:?}: not slow enough to tell"
    );
    assert_eq!(answer.parts, total.div_ceil(PART));
    assert!(answer.largest <= PART, "{}", answer.largest);
    let c = ep.counters();
    assert_eq!(
        (c.served, c.reply_timed_out, c.closed_early, c.open),
        (1, 0, 0, 0)
    );
}

/// A client that stops reading in the middle of a long reply is dropped
/// once it has taken nothing for the reply deadline, not before (it read
/// for four times that first); the reply was never made far ahead of it.
#[test]
fn a_reader_that_stops_is_dropped_after_the_no_progress_deadline() {
    let dir = TempDir::new("stopreader");
    let limits = Limits {
        reply_timeout: Duration::from_millis(300),
        ..Limits::CONTROL
    };
    let (mut poll, mut ep, path) = control_endpoint(&dir, limits);
    let total = 256 << 20;
    let mut answer = Streaming::new(total);
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let client = thread::spawn(move || {
        // 32 KiB every 20 ms: 2 MiB take some 1.3 s, over four deadlines.
        let r = read_streamed(
            &path,
            total,
            32 << 10,
            Duration::from_millis(20),
            2 << 20,
            Duration::from_secs(2),
        );
        d.store(true, Ordering::SeqCst);
        r
    });
    // As `serve`, noting when the endpoint dropped the client.
    let mut events = Events::with_capacity(64);
    let start = Instant::now();
    let mut dropped = None;
    while !done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(20) {
        let wait = if ep.busy() {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        poll.poll(&mut events, Some(wait)).unwrap();
        let t = Instant::now();
        for e in events.iter() {
            ep.ready(poll.registry(), e.token(), t, &mut answer);
        }
        ep.tick(poll.registry(), Instant::now(), &mut answer);
        if dropped.is_none() && ep.counters().reply_timed_out == 1 {
            dropped = Some(start.elapsed());
        }
    }
    let (got, right) = client.join().unwrap();
    assert!(right, "bytes out of place");
    assert!(got >= 2 << 20 && got < total, "read {got} of {total}");
    let dropped = dropped.expect("the stopped reader was never dropped");
    assert!(
        dropped > 4 * limits.reply_timeout,
        "dropped after {dropped:?}, while it still read"
    );
    // Made: what it read, what the socket buffers held, a part in hand.
    assert!(
        answer.made < got + (8 << 20),
        "made {} for a client that read {got}",
        answer.made
    );
    let c = ep.counters();
    assert_eq!((c.reply_timed_out, c.served, c.open), (1, 0, 0));
}

/// While one client reads a long reply as fast as it comes and another
/// reads one slowly, requests of other clients are answered at once, and no
/// round of the loop makes more than one part per reply in `ready` and one
/// in `tick`: a reply never holds the loop until the socket is full (with
/// 4 KiB parts, a socket buffer holds dozens of them).
#[test]
fn other_connections_are_served_while_replies_stream() {
    let dir = TempDir::new("streamothers");
    let (mut poll, mut ep, path) = control_endpoint(&dir, Limits::CONTROL);
    let total = 8 << 20;
    let mut answer = Streaming::new(total);
    answer.part = 4096;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let client = thread::spawn(move || {
        let (pf, ps) = (path.clone(), path.clone());
        let fast = thread::spawn(move || {
            read_streamed(&pf, total, 1 << 20, Duration::ZERO, usize::MAX, Duration::ZERO)
        });
        let slow = thread::spawn(move || {
            read_streamed(
                &ps,
                total,
                64 << 10,
                Duration::from_millis(5),
                usize::MAX,
                Duration::ZERO,
            )
        });
        thread::sleep(Duration::from_millis(100));
        let asks: Vec<(String, Duration)> = (0..20)
            .map(|_| {
                let a = ask(&path);
                thread::sleep(Duration::from_millis(10));
                a
            })
            .collect();
        let r = (fast.join().unwrap(), slow.join().unwrap(), asks);
        d.store(true, Ordering::SeqCst);
        r
    });
    // As `serve`, counting the parts each round makes.
    let mut events = Events::with_capacity(64);
    let start = Instant::now();
    let mut most = 0;
    while !done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(120) {
        let wait = if ep.busy() {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        poll.poll(&mut events, Some(wait)).unwrap();
        let before = answer.parts;
        let t = Instant::now();
        for e in events.iter() {
            ep.ready(poll.registry(), e.token(), t, &mut answer);
        }
        ep.tick(poll.registry(), Instant::now(), &mut answer);
        most = most.max(answer.parts - before);
    }
    let (fast, slow, asks) = client.join().unwrap();
    assert_eq!(fast, (total, true));
    assert_eq!(slow, (total, true));
    for (line, took) in &asks {
        assert!(line.contains("\"ok\":true"), "{line}");
        assert!(*took < Duration::from_millis(500), "answered after {took:?}");
    }
    assert_eq!(answer.parts, 2 * total.div_ceil(4096));
    assert!(most <= 4, "a round made {most} parts");
    let c = ep.counters();
    assert_eq!((c.served, c.reply_timed_out, c.open), (22, 0, 0));
}

fn http_endpoint(limits: Limits) -> (Poll, Endpoint<mio::net::TcpListener>, std::net::SocketAddr) {
    let poll = Poll::new().unwrap();
    let l = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let ep = Endpoint::new(l, Kind::Http, limits, 1000, poll.registry()).unwrap();
    (poll, ep, addr)
}

fn http_answer(head: &[u8]) -> Reply {
    http_reply(head, |_| "ulvs_up 1\n".to_string())
}

fn scrape(addr: std::net::SocketAddr, head: &[u8]) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head).unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    (r, t.elapsed())
}

#[test]
fn http_tricklers_idle_and_oversized_heads_beside_a_scrape() {
    let (mut poll, mut ep, addr) = http_endpoint(Limits::HTTP);
    let ((page, took, big, bad), longest) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut http_answer,
        move || {
            let _idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let stop = Arc::new(AtomicBool::new(false));
            let tricklers: Vec<_> = (0..6)
                .map(|_| {
                    let st = stop.clone();
                    thread::spawn(move || {
                        let mut s = TcpStream::connect(addr).unwrap();
                        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                            if st.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
                                break;
                            }
                            thread::sleep(Duration::from_millis(20));
                        }
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(200));
            let (page, took) = scrape(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            // A head of 8 KiB with no end: refused, the rest never read.
            let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
            head.extend(std::iter::repeat_n(b'a', 8 * 1024));
            let (big, _) = scrape(addr, &head);
            let (bad, _) = scrape(addr, b"BLAH\r\n\r\n");
            stop.store(true, Ordering::SeqCst);
            for t in tricklers {
                t.join().unwrap();
            }
            (page, took, big, bad)
        },
    );
    assert!(
        page.starts_with("HTTP/1.1 200 OK\r\n") && page.ends_with("ulvs_up 1\n"),
        "{page}"
    );
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    assert!(longest < MAX_ROUND, "a round took {longest:?}");
    let c = ep.counters();
    assert_eq!((c.accepted, c.served, c.too_large, c.bad_request), (29, 2, 1, 1));
}

#[test]
fn http_connections_over_the_limit_get_503() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::HTTP
    };
    let (mut poll, mut ep, addr) = http_endpoint(limits);
    let ((busy, page), _) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut http_answer,
        move || {
            let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
            thread::sleep(Duration::from_millis(100));
            let (busy, _) = scrape(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
            drop(idle);
            thread::sleep(Duration::from_millis(100));
            (busy, scrape(addr, b"GET /metrics HTTP/1.0\r\n\r\n").0)
        },
    );
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
    assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
    assert_eq!(ep.counters().refused_limit, 1);
}

/// `metrics_listen: "[::1]:PORT"` from a config binds as the director binds
/// it (a std listener on the parsed address) and serves scrapes over IPv6.
#[test]
fn metrics_listen_on_ipv6_binds_and_serves() {
    let free = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "interface: eth0\nmetrics_listen: \"[::1]:{free}\"\nservices:\n  - name: w\n    vip: 2001:db8:100::1\n    port: 80\n"
    );
    let cfg = crate::control::config::Config::from_str(&text, "t.yaml").unwrap();
    let a = cfg.metrics_listen.unwrap();
    assert_eq!(
        a,
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, free))
    );
    let std_listener = std::net::TcpListener::bind(a).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    assert!(addr.is_ipv6(), "{addr}");
    let poll = Poll::new().unwrap();
    let l = mio::net::TcpListener::from_std(std_listener);
    let mut ep = Endpoint::new(l, Kind::Http, Limits::HTTP, 1000, poll.registry()).unwrap();
    let mut poll = poll;
    let (page, _) = with_client(
        &mut poll,
        &mut ep,
        Duration::from_secs(10),
        &mut http_answer,
        move || scrape(addr, b"GET /metrics HTTP/1.1\r\nHost: [::1]\r\n\r\n").0,
    );
    assert!(
        page.starts_with("HTTP/1.1 200 OK\r\n") && page.ends_with("ulvs_up 1\n"),
        "{page}"
    );
    assert_eq!(ep.counters().served, 1);
}
