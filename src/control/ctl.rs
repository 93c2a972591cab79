//! The control socket protocol (slow path): one JSON object per line over a
//! Unix socket. A request names a `cmd`; the answer is
//! `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A request from `ulvsadm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    List,
    Stats,
    Drain {
        service: String,
        address: String,
    },
    Enable {
        service: String,
        address: String,
    },
    Weight {
        service: String,
        address: String,
        weight: u64,
    },
    Reload,
    /// `ulvsadm announce [on|off]`: switch announcing the VIPs (ARP) on or
    /// off, or (without `on`) ask whether it is on.
    Announce {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on: Option<bool>,
    },
    /// `ulvsadm check`: does the director forward?
    Check,
    /// `ulvsadm flows`: the connections (of one service, to one real
    /// server, from one client, when named).
    Flows {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// `IP` (any port) or `IP:PORT`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        /// `IP` (any port) or `IP:PORT`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// `ulvsadm trace`: how the director treats the frames of one 5-tuple.
    Trace {
        /// `tcp` or `udp`.
        protocol: String,
        /// `IP:PORT` of the client.
        client: String,
        /// `VIP:PORT`.
        vip: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Self {
        Response {
            ok: true,
            error: None,
            data,
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(msg.into()),
            data: serde_json::Value::Null,
        }
    }
}

/// `{"ok":true,"data":{KEY:[ITEM,ITEM,...],REST...}}` and a newline, written
/// an item at a time (`ulvsadm list` and `flows` answer so: the whole answer
/// is tens of megabytes at 200,000 servers). The bytes are those
/// [`Response::ok`] of the whole object serializes to — a
/// [`serde_json::Value`] object writes its keys in byte order — provided
/// that KEY sorts before the keys of REST and each item writes its own keys
/// in byte order (the snapshot types declare their fields so).
#[derive(Debug, Default)]
pub struct ArrayAnswer {
    items: usize,
}

impl ArrayAnswer {
    /// Write the head, up to the array's `[`.
    pub fn start(key: &str, out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(br#"{"ok":true,"data":{"#);
        write_key(out, key);
        out.push(b'[');
        ArrayAnswer::default()
    }

    /// Write one item of the array.
    pub fn item(&mut self, out: &mut Vec<u8>, item: &impl Serialize) {
        if self.items > 0 {
            out.push(b',');
        }
        self.items += 1;
        if serde_json::to_writer(&mut *out, item).is_err() {
            // Only a map with non-string keys fails, which no snapshot has;
            // `null` keeps the line valid JSON should one ever appear.
            out.extend_from_slice(b"null");
        }
    }

    /// Items written so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Close the array, write the other fields of `data` (their keys in
    /// byte order, each after KEY), close the answer and end the line.
    pub fn finish(self, out: &mut Vec<u8>, rest: &[(&str, serde_json::Value)]) {
        out.push(b']');
        for (k, v) in rest {
            out.push(b',');
            write_key(out, k);
            if serde_json::to_writer(&mut *out, v).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        out.extend_from_slice(b"}}\n");
    }
}

/// `"key":`.
fn write_key(out: &mut Vec<u8>, key: &str) {
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// Client-side failures, each with a one-line reason for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon listening on {0}")]
    NotRunning(String),
    #[error("permission denied on {0} (run as root)")]
    Permission(String),
    #[error("no answer from the director on {path} within {secs} s; it may be busy or stuck")]
    Timeout { path: String, secs: f64 },
    #[error("the director on {0} closed the connection without answering")]
    Closed(String),
    #[error(
        "the director on {path} closed the connection in the middle of its answer (after {bytes} bytes)"
    )]
    Cut { path: String, bytes: usize },
    #[error("control socket {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("bad answer from the daemon: {0}")]
    BadAnswer(String),
}

/// How long `ulvsadm` waits for most answers.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long `ulvsadm reload` waits: the director answers when the new
/// config is parsed, checked and built (or refused), which at 10,000
/// services takes seconds, more on a loaded machine.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Send one request and wait for the answer.
///
/// # Errors
/// See [`ClientError`].
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    call_waiting(socket, req, timeout, timeout, |_| {})
}

/// Send one request and return the answer's line as it came (with its
/// newline): for answers read without a [`serde_json::Value`] tree, such as
/// `ulvsadm list --json` printing the director's bytes. `timeout` is how
/// long the director may send nothing: a long answer that keeps coming is
/// read to its end.
///
/// # Errors
/// See [`ClientError`].
pub fn call_line(socket: &Path, req: &Request, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    exchange(socket, req, timeout, timeout, |_| {})
}

/// [`call`] that, while no answer has come, calls `waiting` with the time
/// waited every `tick` (so a client can say that it still waits), up to
/// `timeout` in all.
///
/// # Errors
/// See [`ClientError`].
pub fn call_waiting(
    socket: &Path,
    req: &Request,
    timeout: Duration,
    tick: Duration,
    waiting: impl FnMut(Duration),
) -> Result<Response, ClientError> {
    let line = exchange(socket, req, timeout, tick, waiting)?;
    serde_json::from_slice(&line).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

/// Send the request, return the answer's line.
fn exchange(
    socket: &Path,
    req: &Request,
    timeout: Duration,
    tick: Duration,
    mut waiting: impl FnMut(Duration),
) -> Result<Vec<u8>, ClientError> {
    let started = std::time::Instant::now();
    let p = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::NotRunning(p.clone()),
        ErrorKind::PermissionDenied => ClientError::Permission(p.clone()),
        _ => ClientError::Io {
            path: p.clone(),
            err: e,
        },
    })?;
    // A socket timeout surfaces as EAGAIN ("Resource temporarily
    // unavailable"); a reset or a broken pipe as the director hanging up.
    let io = |err: std::io::Error| match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout {
            path: p.clone(),
            secs: timeout.as_secs_f64(),
        },
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof => {
            ClientError::Closed(p.clone())
        }
        _ => ClientError::Io { path: p.clone(), err },
    };
    let tick = tick.clamp(Duration::from_millis(1), timeout.max(Duration::from_millis(1)));
    s.set_read_timeout(Some(tick)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    // The answer is one line; a read that times out keeps what it read, so
    // reading on after a tick continues the same line.
    let mut answer = Vec::new();
    let mut r = BufReader::with_capacity(1 << 16, s);
    loop {
        match r.read_until(b'\n', &mut answer) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(io(e));
                }
                waiting(waited);
                let left = timeout.saturating_sub(waited).max(Duration::from_millis(1));
                r.get_ref().set_read_timeout(Some(tick.min(left))).map_err(io)?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if answer.is_empty() {
        return Err(ClientError::Closed(p));
    }
    // Every answer ends its line: without the newline the director (or
    // its end of the socket) went away while sending.
    if !answer.ends_with(b"\n") {
        return Err(ClientError::Cut {
            path: p,
            bytes: answer.len(),
        });
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Request::Weight {
            service: "web".into(),
            address: "198.18.0.11".into(),
            weight: 3,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"cmd":"weight","service":"web","address":"198.18.0.11","weight":3}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"list"}"#).unwrap(),
            Request::List
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        let on = Request::Announce { on: Some(true) };
        assert_eq!(
            serde_json::to_string(&on).unwrap(),
            r#"{"cmd":"announce","on":true}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"announce"}"#).unwrap(),
            Request::Announce { on: None }
        );
        // An older client's flows request still reads.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"flows","service":"web"}"#).unwrap(),
            Request::Flows {
                service: Some("web".into()),
                server: None,
                client: None
            }
        );
        let t = Request::Trace {
            protocol: "tcp".into(),
            client: "198.18.1.10:40000".into(),
            vip: "198.18.100.1:80".into(),
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"cmd":"trace","protocol":"tcp","client":"198.18.1.10:40000","vip":"198.18.100.1:80"}"#
        );
        let e = serde_json::to_string(&Response::err("nope")).unwrap();
        assert_eq!(e, r#"{"ok":false,"error":"nope"}"#);
    }

    /// A listener that accepts and then does `then` with each connection.
    fn fake(tag: &str, then: fn(UnixStream)) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ulvs-ctl-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                then(s);
            }
        });
        p
    }

    #[test]
    fn client_errors_read_as_sentences() {
        let silent = fake("silent", |s| {
            std::thread::sleep(Duration::from_secs(2));
            drop(s);
        });
        let e = call(&silent, &Request::List, Duration::from_millis(200)).unwrap_err();
        let m = e.to_string();
        assert_eq!(
            m,
            format!(
                "no answer from the director on {} within 0.2 s; it may be busy or stuck",
                silent.display()
            )
        );
        let hangup = fake("hangup", drop);
        let e = call(&hangup, &Request::List, Duration::from_secs(2)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the director on {} closed the connection without answering",
                hangup.display()
            )
        );
        let gone = std::env::temp_dir().join("ulvs-ctl-no-such.sock");
        let e = call(&gone, &Request::List, Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no daemon listening on {}", gone.display())
        );
        for p in [silent, hangup] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// An answer that stops before its newline (the director dropped a
    /// client that read nothing for its reply deadline, or went away) is
    /// an error that says so, not a JSON parse error.
    #[test]
    fn an_answer_cut_short_is_an_error() {
        let cut = fake("cut", |mut s| {
            let mut req = String::new();
            BufReader::new(&s).read_line(&mut req).unwrap();
            s.write_all(br#"{"ok":true,"data":{"services":[{"na"#).unwrap();
        });
        let e = call_line(&cut, &Request::List, Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the director on {} closed the connection in the middle of its answer (after 35 bytes)",
                cut.display()
            )
        );
        let _ = std::fs::remove_file(cut);
    }

    /// A slow answer (a reload of a large config) is waited for past the
    /// tick, with a call of `waiting` per tick; the answer arrives in two
    /// parts with a tick between them, and reads as one line.
    #[test]
    fn a_slow_answer_is_waited_for() {
        let slow = fake("slow", |mut s| {
            let mut req = String::new();
            BufReader::new(&s).read_line(&mut req).unwrap();
            std::thread::sleep(Duration::from_millis(450));
            s.write_all(br#"{"ok":true,"data":{"mess"#).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(250));
            s.write_all(b"age\":\"reloaded\"}}\n").unwrap();
        });
        let mut ticks = Vec::new();
        let r = call_waiting(
            &slow,
            &Request::Reload,
            Duration::from_secs(20),
            Duration::from_millis(100),
            |w| ticks.push(w),
        )
        .unwrap();
        assert_eq!(r.data["message"], "reloaded");
        assert!(ticks.len() >= 4, "{ticks:?}");
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
        // and the whole wait is bounded by the timeout, not by the tick
        let e = call_waiting(
            &slow,
            &Request::Reload,
            Duration::from_millis(300),
            Duration::from_millis(100),
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        let _ = std::fs::remove_file(slow);
    }
}
