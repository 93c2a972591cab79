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
fn serve<L: Listen>(
    poll: &mut Poll,
    ep: &mut Endpoint<L>,
    done: &AtomicBool,
    max: Duration,
    answer: &mut dyn FnMut(&[u8]) -> Reply,
) -> Duration {
    let mut events = Events::with_capacity(64);
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    while !done.load(Ordering::SeqCst) && start.elapsed() < max {
        poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
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

fn control_endpoint(dir: &TempDir, limits: Limits) -> (Poll, Endpoint<mio::net::UnixListener>, PathBuf) {
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
fn with_client<L: Listen, T: Send + 'static>(
    poll: &mut Poll,
    ep: &mut Endpoint<L>,
    max: Duration,
    answer: &mut dyn FnMut(&[u8]) -> Reply,
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
            Reply {
                bytes: vec![b'y'; 8 << 20],
                bad_request: false,
            }
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
