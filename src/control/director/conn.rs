//! The director's control socket and `metrics_listen` (slow path), served by
//! [`crate::control::serve`]'s non-blocking endpoints: no client, however
//! slow, idle or large, holds the loop that answers ARP for the VIPs.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::time::Instant;

use mio::{Registry, Token};

use super::listing::Parts;
use super::Director;
use crate::control::serve::{self, Endpoint, Kind, Limits, Reply, Respond};

/// The control socket's listener token; its connections take the tokens after it.
const CONTROL_BASE: usize = 16;
/// `metrics_listen`'s listener token; its connections take the tokens after it.
const HTTP_BASE: usize = CONTROL_BASE + 1 + Limits::CONTROL.max_connections;

/// Both listeners of the director and their connections.
pub(super) struct Listeners {
    control: Endpoint<mio::net::UnixListener, Parts>,
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
    /// what a socket holds now (and produces at most a part or two of each
    /// long reply), and returns. `true` when a reply has its next part to
    /// produce and room to send it: the loop's next poll must not wait.
    pub(super) fn serve(
        &mut self,
        d: &mut Director,
        registry: &Registry,
        tokens: &[Token],
        now: Instant,
    ) -> bool {
        d.listeners = (
            self.control.counters(),
            self.http.as_ref().map(Endpoint::counters),
        );
        let mut answer = Control(d);
        // `ready` ignores tokens that are not its endpoint's.
        for &t in tokens {
            self.control.ready(registry, t, now, &mut answer);
        }
        self.control.tick(registry, now, &mut answer);
        let d = answer.0;
        if let Some(h) = &mut self.http {
            let mut answer = |head: &[u8]| serve::http_reply(head, |page| d.http_body(page));
            for &t in tokens {
                h.ready(registry, t, now, &mut answer);
            }
            h.tick(registry, now, &mut answer);
        }
        self.control.busy()
    }
}

/// The control socket's answers: `list` and `flows` in parts.
struct Control<'a>(&'a mut Director);

impl Respond for Control<'_> {
    type Rest = Parts;
    fn reply(&mut self, line: &[u8]) -> Reply<Parts> {
        serve::control_reply_parts(line, |req| self.0.handle(req))
    }
    fn more(&mut self, rest: &mut Parts, out: &mut Vec<u8>) -> bool {
        self.0.more(rest, out)
    }
}
