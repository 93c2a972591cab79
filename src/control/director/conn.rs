//! The director's control socket and `metrics_listen` (slow path), served by
//! [`crate::control::serve`]'s non-blocking endpoints: no client, however
//! slow, idle or large, holds the loop that answers ARP for the VIPs.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::time::Instant;

use mio::{Registry, Token};

use super::Director;
use crate::control::serve::{self, Endpoint, Kind, Limits};

/// The control socket's listener token; its connections take the tokens after it.
const CONTROL_BASE: usize = 16;
/// `metrics_listen`'s listener token; its connections take the tokens after it.
const HTTP_BASE: usize = CONTROL_BASE + 1 + Limits::CONTROL.max_connections;

/// Both listeners of the director and their connections.
pub(super) struct Listeners {
    control: Endpoint<mio::net::UnixListener>,
    http: Option<Endpoint<mio::net::TcpListener>>,
}

impl Listeners {
    /// Register the (non-blocking) listeners on the loop's poll.
    pub(super) fn new(
        control: UnixListener,
        http: Option<TcpListener>,
        registry: &Registry,
    ) -> io::Result<Self> {
        let control = Endpoint::new(
            mio::net::UnixListener::from_std(control),
            Kind::Control,
            Limits::CONTROL,
            CONTROL_BASE,
            registry,
        )?;
        let http = match http {
            Some(l) => Some(Endpoint::new(
                mio::net::TcpListener::from_std(l),
                Kind::Http,
                Limits::HTTP,
                HTTP_BASE,
                registry,
            )?),
            None => None,
        };
        Ok(Listeners { control, http })
    }

    /// Serve the connections `tokens` made ready, close those past their
    /// deadline and accept what is queued. Every call reads or writes only
    /// what a socket holds now, and returns.
    pub(super) fn serve(&mut self, d: &mut Director, registry: &Registry, tokens: &[Token], now: Instant) {
        d.listeners = (
            self.control.counters(),
            self.http.as_ref().map(Endpoint::counters),
        );
        let mut answer = |line: &[u8]| serve::control_reply(line, |req| d.handle(req));
        // `ready` ignores tokens that are not its endpoint's.
        for &t in tokens {
            self.control.ready(registry, t, now, &mut answer);
        }
        self.control.tick(registry, now, &mut answer);
        if let Some(h) = &mut self.http {
            let mut answer = |head: &[u8]| serve::http_reply(head, |page| d.http_body(page));
            for &t in tokens {
                h.ready(registry, t, now, &mut answer);
            }
            h.tick(registry, now, &mut answer);
        }
    }
}
