//! The rtnetlink sockets behind [`super::HostView`]: one subscribed to the
//! change groups (non-blocking, polled by the slow-path loop), and a
//! short-lived one per dump.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr};

use super::HostView;

/// Link, IPv4 and IPv6 address and route, and neighbour notifications.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV6_ROUTE
    | libc::RTMGRP_NEIGH) as u32;

/// Large enough for any datagram the kernel sends on a route socket (dumps
/// come in pages of at most 32 KiB).
const BUF: usize = 1 << 16;

/// The subscribed socket.
pub struct Watcher {
    sock: Socket,
    buf: Vec<u8>,
    ifindex: u32,
    /// Times the kernel dropped notifications (ENOBUFS) and the view was
    /// dumped again.
    pub overruns: u64,
}

/// Feed every rtnetlink message of one datagram to `f`; false once the
/// datagram holds the end of a dump (NLMSG_DONE).
///
/// # Errors
/// The kernel answered a request with an error.
pub(super) fn each_message(data: &[u8], mut f: impl FnMut(&RouteNetlinkMessage)) -> io::Result<bool> {
    let mut off = 0;
    while data.len() - off >= 16 {
        let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len < 16 || off + len > data.len() {
            break;
        }
        // A message this crate cannot decode (a newer kernel's attribute
        // layout) is skipped; the others still count.
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len]) {
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => f(&inner),
                NetlinkPayload::Done(_) => return Ok(false),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                _ => {}
            }
        }
        off += (len + 3) & !3;
    }
    Ok(true)
}

/// Dump links, then IPv4 and IPv6 addresses, routes and neighbours into a new
/// view of `ifindex`.
///
/// # Errors
/// The socket could not be opened, or the kernel refused a dump.
pub fn dump(ifindex: u32) -> io::Result<HostView> {
    let mut sock = Socket::new(libc::NETLINK_ROUTE as isize)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut view = HostView::new(ifindex);
    let mut addr = AddressMessage::default();
    addr.header.family = AddressFamily::Inet;
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = AddressFamily::Inet;
    let (mut addr6, mut route6, mut neigh6) = (addr.clone(), route.clone(), neigh.clone());
    addr6.header.family = AddressFamily::Inet6;
    route6.header.address_family = AddressFamily::Inet6;
    neigh6.header.family = AddressFamily::Inet6;
    let requests = [
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        RouteNetlinkMessage::GetAddress(addr),
        RouteNetlinkMessage::GetRoute(route),
        RouteNetlinkMessage::GetNeighbour(neigh),
        RouteNetlinkMessage::GetAddress(addr6),
        RouteNetlinkMessage::GetRoute(route6),
        RouteNetlinkMessage::GetNeighbour(neigh6),
    ];
    let mut buf = vec![0u8; BUF];
    for (seq, req) in requests.into_iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq as u32 + 1;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(req));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        sock.send(&out, 0)?;
        loop {
            let n = sock.recv(&mut &mut buf[..], 0)?;
            if !each_message(&buf[..n.min(BUF)], |m| {
                view.apply(m);
            })? {
                break;
            }
        }
    }
    Ok(view)
}

impl Watcher {
    /// Subscribe to changes, then dump the current state.
    ///
    /// # Errors
    /// A netlink socket could not be opened or bound, or a dump failed.
    pub fn open(ifindex: u32) -> io::Result<(Watcher, HostView)> {
        let mut sock = Socket::new(libc::NETLINK_ROUTE as isize)?;
        sock.bind(&SocketAddr::new(0, GROUPS))?;
        sock.set_non_blocking(true)?;
        // Room for bursts (a routing daemon replacing many routes at once);
        // past it the kernel reports ENOBUFS and the view is dumped again.
        let _ = sock.set_rx_buf_sz(1usize << 20);
        let view = dump(ifindex)?;
        Ok((
            Watcher {
                sock,
                buf: vec![0u8; BUF],
                ifindex,
                overruns: 0,
            },
            view,
        ))
    }

    /// Apply every queued notification to `view`; true when it changed.
    ///
    /// # Errors
    /// Reading the socket failed for another reason than "nothing queued",
    /// or the dump after an overrun failed.
    pub fn read(&mut self, view: &mut HostView) -> io::Result<bool> {
        let mut changed = false;
        loop {
            match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => {
                    each_message(&self.buf[..n.min(BUF)], |m| changed |= view.apply(m))?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(changed),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Notifications were lost: only a new dump is exact.
                    self.overruns += 1;
                    let fresh = dump(self.ifindex)?;
                    changed |= fresh != *view;
                    *view = fresh;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
