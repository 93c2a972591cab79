//! `announce: route` (slow path): one host route (`VIP/32`, `VIP/128` for an
//! IPv6 VIP) per served VIP in kernel table `route_table`, for a routing
//! daemon (BIRD's kernel protocols with `learn`, one per family) to import
//! and announce. ulvs speaks no BGP.
//!
//! The routes sit on a TUN device that the director creates at start and
//! holds open ([`RouteDevice`]). It is not persistent, so the kernel deletes
//! it, and every route on it, when its last file descriptor closes: when the
//! process exits by any means, SIGKILL included. A dead director therefore
//! stops attracting traffic without anyone cleaning up after it (a route
//! left behind would black-hole that director's share of every flow). The
//! device carries no packets: no rule points at `route_table`, the routes
//! exist only to be exported.
//!
//! [`HostRoutes`] keeps the installed routes equal to the wanted set through a
//! [`RouteOps`]: [`Netlink`] is the kernel's (rtnetlink, one request and its
//! acknowledgement at a time), a test double records the calls.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::io::sys;

/// The TUN device of table `table`: one name per table, so two directors
/// announcing into the same table on one host clash at start instead of
/// withdrawing each other's routes. At most 14 characters (IFNAMSIZ is 16
/// with the NUL).
pub fn device_name(table: u32) -> String {
    format!("ulvs{table}")
}

/// Why route announcing could not start or a route could not change.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A device with the table's name exists already.
    #[error(
        "device {name} exists: another director announces into table {table} on this host, or it \
         is a leftover (`ulvs-director --cleanup` removes it)"
    )]
    DeviceExists { name: String, table: u32 },
    /// The table holds routes this director did not make.
    #[error(
        "kernel table {table} already holds {count} route(s) (first: {first}); route_table must \
         name a table that only this director writes"
    )]
    TableInUse { table: u32, count: usize, first: String },
    /// A system call or netlink request failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_step(what: impl Into<String>) -> impl FnOnce(io::Error) -> RouteError {
    let what = what.into();
    move |source| RouteError::Io { what, source }
}

/// The netlink message of host route `vip`/32 on device `oif` in `table`:
/// what `ip route add VIP/32 dev DEV table TABLE proto static scope link`
/// sends. `proto static`, because BIRD's `learn` ignores `proto kernel`
/// routes. An IPv6 VIP gets `VIP/128` as `ip -6 route add` sends it: scope
/// universe (the kernel keeps no other scope for IPv6 routes).
pub fn host_route(vip: IpAddr, table: u32, oif: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, len, scope, dst) = match vip {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteScope::Link, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (
            AddressFamily::Inet6,
            128,
            RouteScope::Universe,
            RouteAddress::Inet6(a),
        ),
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = len;
    // The header has 8 bits; RTA_TABLE carries the full id (and wins).
    m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = scope;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![
        RouteAttribute::Destination(dst),
        RouteAttribute::Oif(oif),
        RouteAttribute::Table(table),
    ];
    m
}

/// A host route as `ip route` names it: `VIP/32` or `VIP/128`.
pub fn route_name(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// A route's table: RTA_TABLE when present, else the header's 8 bits.
fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// A route as `ip route` would name it (for messages).
fn describe(m: &RouteMessage) -> String {
    let mut dst = "default".to_string();
    let mut dev = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                dst = format!("{ip}/{}", m.header.destination_prefix_length)
            }
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                dst = format!("{ip}/{}", m.header.destination_prefix_length)
            }
            RouteAttribute::Oif(i) => dev = Some(*i),
            _ => {}
        }
    }
    match dev {
        Some(i) => format!("{dst} dev index {i}"),
        None => dst,
    }
}

/// One rtnetlink socket, used synchronously: each request waits for its
/// acknowledgement (or the end of its dump). The kernel answers at once, so
/// the slow path never waits long.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    /// # Errors
    /// The socket cannot be opened or bound.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Send one request; return the messages of its answer (a dump's
    /// entries; nothing for an acknowledged change).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message of length 0",
                    ));
                }
                off += len.next_multiple_of(4);
                if m.header.sequence_number != seq {
                    // An answer to an earlier request that gave up waiting.
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(out),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The routes of `table` (every IPv4, then IPv6, route the kernel
    /// lists for it).
    ///
    /// # Errors
    /// A dump failed.
    pub fn routes_in(&mut self, table: u32) -> io::Result<Vec<RouteMessage>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            let all = self.request(RouteNetlinkMessage::GetRoute(q), NLM_F_REQUEST | NLM_F_DUMP)?;
            out.extend(all.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if table_of(&r) == table => Some(r),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Delete the link called `name`; `Ok(false)` when there is none.
    ///
    /// # Errors
    /// The kernel refused.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Adding and deleting one host route (the kernel, or a test double).
pub trait RouteOps {
    /// Install `vip`/32 or /128 (replacing the same route if present).
    fn add(&mut self, vip: IpAddr) -> io::Result<()>;
    /// Remove `vip`/32 or /128; a route that is not there is not an error.
    fn del(&mut self, vip: IpAddr) -> io::Result<()>;
}

/// The kernel's routes of one director: table and device fixed at start.
pub struct KernelRoutes {
    nl: Netlink,
    table: u32,
    oif: u32,
}

impl RouteOps for KernelRoutes {
    fn add(&mut self, vip: IpAddr) -> io::Result<()> {
        let m = host_route(vip, self.table, self.oif);
        self.nl
            .request(
                RouteNetlinkMessage::NewRoute(m),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map(drop)
    }

    fn del(&mut self, vip: IpAddr) -> io::Result<()> {
        let m = host_route(vip, self.table, self.oif);
        match self
            .nl
            .request(RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST | NLM_F_ACK)
        {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.raw_os_error() == Some(libc::ENODEV) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The director's TUN device for `route_table`. Dropping it closes the
/// device, and the kernel deletes the device and its routes.
pub struct RouteDevice {
    /// Held only to keep the device alive.
    _tun: File,
    pub name: String,
    pub index: u32,
    pub table: u32,
}

impl RouteDevice {
    /// Check that neither the device name nor the table is in use, then
    /// create the device (up) and return it with the kernel's route
    /// operations on it.
    ///
    /// # Errors
    /// [`RouteError::DeviceExists`], [`RouteError::TableInUse`], or a
    /// failed system call (not root, no /dev/net/tun).
    pub fn open(table: u32) -> Result<(RouteDevice, KernelRoutes), RouteError> {
        let name = device_name(table);
        // TUNSETIFF would attach to an existing persistent TUN device of
        // this name instead of creating one, and that device would outlive
        // the process: refuse any existing device.
        if sys::if_info(&name).is_ok() {
            return Err(RouteError::DeviceExists { name, table });
        }
        let mut nl = Netlink::open().map_err(io_step("opening a netlink socket"))?;
        let present = nl
            .routes_in(table)
            .map_err(io_step(format!("listing the routes of table {table}")))?;
        if let Some(first) = present.first() {
            return Err(RouteError::TableInUse {
                table,
                count: present.len(),
                first: describe(first),
            });
        }
        let tun = sys::open_tun(&name).map_err(io_step(format!("creating TUN device {name}")))?;
        let info = sys::if_info(&name).map_err(io_step(format!("reading the index of {name}")))?;
        let index = u32::try_from(info.index).unwrap_or(0);
        Ok((
            RouteDevice {
                _tun: tun,
                name,
                index,
                table,
            },
            KernelRoutes {
                nl,
                table,
                oif: index,
            },
        ))
    }
}

/// `--cleanup`: remove a device left with the table's name (only possible
/// when someone made it persistent; the director's own vanishes with it).
/// Returns whether there was one.
///
/// # Errors
/// The netlink request failed.
pub fn cleanup(table: u32) -> io::Result<bool> {
    Netlink::open()?.delete_link(&device_name(table))
}

/// The installed host routes, kept equal to the wanted set.
pub struct HostRoutes<O: RouteOps> {
    ops: O,
    installed: BTreeSet<IpAddr>,
    /// Whether the last [`HostRoutes::sync`] left a difference (a failed
    /// call), so the loop tries again.
    pending: bool,
    /// Route changes that failed since start.
    pub failures: u64,
}

/// What one [`HostRoutes::sync`] changed, and what failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// (VIP, "add"/"remove", error) of each failed change.
    pub errors: Vec<(IpAddr, &'static str, String)>,
}

impl<O: RouteOps> HostRoutes<O> {
    pub fn new(ops: O) -> Self {
        HostRoutes {
            ops,
            installed: BTreeSet::new(),
            pending: false,
            failures: 0,
        }
    }

    /// The VIPs whose route is installed, in order (IPv4 first).
    pub fn installed(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.installed.iter().copied()
    }

    /// Whether a change failed and [`HostRoutes::sync`] should run again.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// Withdraw what is no longer wanted first (a VIP without servers must
    /// stop attracting traffic even if an add fails), then install the rest.
    /// A failed change stays a difference for the next call.
    pub fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> SyncReport {
        let mut r = SyncReport::default();
        let gone: Vec<IpAddr> = self.installed.difference(wanted).copied().collect();
        for v in gone {
            match self.ops.del(v) {
                Ok(()) => {
                    self.installed.remove(&v);
                    r.removed.push(v);
                }
                Err(e) => r.errors.push((v, "remove", e.to_string())),
            }
        }
        let new: Vec<IpAddr> = wanted.difference(&self.installed).copied().collect();
        for v in new {
            match self.ops.add(v) {
                Ok(()) => {
                    self.installed.insert(v);
                    r.added.push(v);
                }
                Err(e) => r.errors.push((v, "add", e.to_string())),
            }
        }
        self.failures += r.errors.len() as u64;
        self.pending = !r.errors.is_empty();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn the_route_message_is_what_ip_route_sends() {
        let m = host_route(v4(0xc612_6401), 4096, 7);
        let mut b = vec![0xaau8; m.buffer_len()];
        m.emit(&mut b);
        #[rustfmt::skip]
        let want: &[u8] = &[
            // rtmsg: AF_INET, dst_len 32, src_len 0, tos 0, table 0 (> 255:
            // in RTA_TABLE), proto static (4), scope link (253), unicast (1),
            // flags 0
            2, 32, 0, 0, 0, 4, 253, 1, 0, 0, 0, 0,
            // RTA_DST 198.18.100.1
            8, 0, 1, 0, 198, 18, 100, 1,
            // RTA_OIF 7
            8, 0, 4, 0, 7, 0, 0, 0,
            // RTA_TABLE 4096
            8, 0, 15, 0, 0, 16, 0, 0,
        ];
        assert_eq!(b, want);
        // A table that fits 8 bits is in the header too.
        let small = host_route(v4(0xc612_6401), 100, 7);
        assert_eq!(small.header.table, 100);
        assert_eq!(table_of(&small), 100);
        assert_eq!(table_of(&m), 4096);
        assert_eq!(describe(&m), "198.18.100.1/32 dev index 7");
        assert_eq!(route_name(v4(0xc612_6401)), "198.18.100.1/32");
    }

    /// An IPv6 VIP: what `ip -6 route add VIP/128 dev DEV table TABLE proto
    /// static` sends.
    #[test]
    fn the_ipv6_route_message_is_what_ip_route_sends() {
        let vip: IpAddr = "2001:db8:100::1".parse().unwrap();
        let m = host_route(vip, 4096, 7);
        let mut b = vec![0xaau8; m.buffer_len()];
        m.emit(&mut b);
        #[rustfmt::skip]
        let want: &[u8] = &[
            // rtmsg: AF_INET6 (10), dst_len 128, src_len 0, tos 0, table 0,
            // proto static (4), scope universe (0), unicast (1), flags 0
            10, 128, 0, 0, 0, 4, 0, 1, 0, 0, 0, 0,
            // RTA_DST 2001:db8:100::1
            20, 0, 1, 0, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            // RTA_OIF 7
            8, 0, 4, 0, 7, 0, 0, 0,
            // RTA_TABLE 4096
            8, 0, 15, 0, 0, 16, 0, 0,
        ];
        assert_eq!(b, want);
        assert_eq!(describe(&m), "2001:db8:100::1/128 dev index 7");
        assert_eq!(route_name(vip), "2001:db8:100::1/128");
    }

    #[test]
    fn device_names_fit_ifnamsiz() {
        assert_eq!(device_name(4096), "ulvs4096");
        assert!(device_name(u32::MAX).len() < 16);
    }

    /// Records calls; fails the VIPs it is told to.
    #[derive(Default)]
    struct Fake {
        calls: Vec<(&'static str, IpAddr)>,
        fail: BTreeSet<IpAddr>,
    }

    fn v4(a: u32) -> IpAddr {
        IpAddr::V4(a.into())
    }

    /// Small numbers as addresses: below 100 IPv4, from 100 IPv6
    /// (2001:db8:100::N).
    fn ip(n: u32) -> IpAddr {
        if n < 100 {
            v4(n)
        } else {
            IpAddr::V6((0x2001_0db8_0100_u128 << 80 | u128::from(n)).into())
        }
    }

    impl RouteOps for Fake {
        fn add(&mut self, vip: IpAddr) -> io::Result<()> {
            self.calls.push(("add", vip));
            if self.fail.contains(&vip) {
                return Err(io::Error::from_raw_os_error(libc::ENETDOWN));
            }
            Ok(())
        }
        fn del(&mut self, vip: IpAddr) -> io::Result<()> {
            self.calls.push(("del", vip));
            if self.fail.contains(&vip) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
    }

    fn set(v: &[u32]) -> BTreeSet<IpAddr> {
        v.iter().map(|&n| ip(n)).collect()
    }

    fn ips(v: &[u32]) -> Vec<IpAddr> {
        v.iter().map(|&n| ip(n)).collect()
    }

    #[test]
    fn sync_changes_only_the_difference_withdrawals_first() {
        let mut h = HostRoutes::new(Fake::default());
        let r = h.sync(&set(&[1, 2]));
        assert_eq!((r.added, r.removed), (ips(&[1, 2]), vec![]));
        h.ops.calls.clear();
        let r = h.sync(&set(&[1, 2]));
        assert_eq!(r, SyncReport::default());
        assert!(h.ops.calls.is_empty(), "nothing to do, nothing sent");
        let r = h.sync(&set(&[2, 3]));
        assert_eq!((r.added, r.removed), (ips(&[3]), ips(&[1])));
        assert_eq!(h.ops.calls, vec![("del", ip(1)), ("add", ip(3))]);
        assert_eq!(h.installed().collect::<Vec<_>>(), ips(&[2, 3]));
        h.sync(&BTreeSet::new());
        assert_eq!(h.installed().count(), 0);
        assert!(!h.pending());
    }

    #[test]
    fn a_failed_change_is_retried_on_the_next_sync() {
        let mut h = HostRoutes::new(Fake::default());
        h.ops.fail = set(&[2]);
        let r = h.sync(&set(&[1, 2]));
        assert_eq!(r.added, ips(&[1]));
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].0, ip(2));
        assert_eq!(r.errors[0].1, "add");
        assert!(h.pending());
        assert_eq!(h.failures, 1);
        h.ops.fail.clear();
        let r = h.sync(&set(&[1, 2]));
        assert_eq!(r.added, ips(&[2]));
        assert!(!h.pending());
        // A failed withdrawal keeps the route listed as installed.
        h.ops.fail = set(&[1]);
        let r = h.sync(&set(&[2]));
        assert_eq!(r.errors[0].1, "remove");
        assert_eq!(h.installed().collect::<Vec<_>>(), ips(&[1, 2]));
        h.ops.fail.clear();
        assert_eq!(h.sync(&set(&[2])).removed, ips(&[1]));
    }

    /// IPv6 VIPs take /128 routes beside the IPv4 /32s, by the same rules:
    /// withdrawals first, only the difference, failures retried.
    #[test]
    fn ipv6_vips_are_installed_and_withdrawn_like_ipv4_ones() {
        let mut h = HostRoutes::new(Fake::default());
        let r = h.sync(&set(&[1, 101, 102]));
        assert_eq!(r.added, ips(&[1, 101, 102]));
        h.ops.calls.clear();
        h.ops.fail = set(&[103]);
        let r = h.sync(&set(&[1, 102, 103]));
        assert_eq!(
            h.ops.calls,
            vec![("del", ip(101)), ("add", ip(103))],
            "the withdrawal goes first"
        );
        assert_eq!((r.removed, r.errors.len()), (ips(&[101]), 1));
        assert!(h.pending());
        h.ops.fail.clear();
        assert_eq!(h.sync(&set(&[1, 102, 103])).added, ips(&[103]));
        let names: Vec<String> = h.installed().map(route_name).collect();
        assert_eq!(
            names,
            ["0.0.0.1/32", "2001:db8:100::66/128", "2001:db8:100::67/128"]
        );
        assert_eq!(h.sync(&BTreeSet::new()).removed, ips(&[1, 102, 103]));
    }
}
