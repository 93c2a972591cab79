//! Serving one connection of the control socket or of `metrics_listen`
//! (slow path). Each reads one request with a short timeout, then answers
//! through [`Director::handle`] or [`Director::http_response`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::Director;
use crate::control::ctl::{Request, Response};

impl Director {
    /// One `ulvsadm` request: a JSON line in, a JSON line out.
    pub(super) fn serve_client(&mut self, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        let resp = match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(req),
                Err(e) => Response::err(format!("bad request: {e}")),
            },
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        let _ = (&stream).write_all(out.as_bytes());
    }

    /// One HTTP request on `metrics_listen`.
    pub(super) fn serve_metrics(&mut self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(1000)));
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < 8192
            && !head.windows(4).any(|w| w == b"\r\n\r\n")
            && !head.windows(2).any(|w| w == b"\n\n")
        {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        let resp = self.http_response(&head);
        let _ = stream.write_all(&resp);
    }
}
