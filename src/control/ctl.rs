//! The control socket protocol (slow path): one JSON object per line over a
//! Unix socket. A request names a `cmd`; the answer is
//! `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.

use std::io::{BufRead, BufReader, Write};
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

/// Client-side failures, each with a one-line reason for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon listening on {0}")]
    NotRunning(String),
    #[error("permission denied on {0} (run as root)")]
    Permission(String),
    #[error("control socket {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("bad answer from the daemon: {0}")]
    BadAnswer(String),
}

/// Send one request and wait for the answer.
///
/// # Errors
/// See [`ClientError`].
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let p = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(p.clone())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Permission(p.clone()),
        _ => ClientError::Io {
            path: p.clone(),
            err: e,
        },
    })?;
    let io = |err| ClientError::Io { path: p.clone(), err };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
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
        let e = serde_json::to_string(&Response::err("nope")).unwrap();
        assert_eq!(e, r#"{"ok":false,"error":"nope"}"#);
    }
}
