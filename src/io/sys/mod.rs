//! The only `unsafe` code of the crate: AF_PACKET sockets, the mmap'ed
//! TPACKET_V2 receive ring, batched `sendmmsg`, interface ioctls and CPU
//! pinning, all on `libc` and its definitions (tpacket, `PACKET_*`), and
//! the sockets of the benchmark's load generator. Every block says why it
//! holds.
//!
//! Why these choices (measured on the project's 2-vCPU test machine, see the
//! README): per-frame `recvfrom`/`sendto` ran at 0.16x the kernel's rate; a
//! mapped RX ring plus `sendmmsg` avoids a syscall per frame on both sides.
//! TPACKET_V2 by default; TPACKET_V3 ([`RxLayout::V3`]) on request: it
//! wakes the reader once per block instead of once per frame, but a block
//! that does not fill waits for its retire timeout, and in the benchmark it
//! was not better on every row (README, AF_PACKET). V2 slots are sized for
//! 64 KiB GSO/GRO super-frames. `PACKET_VNET_HDR` is on for receive and send so partial
//! checksums and super-frames are completed or segmented by the kernel on the
//! way out instead of leaving the director broken.

pub mod hint;
pub mod xdp;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Action, BatchStats, Frame, RxMeta, TxArena, VnetHdr};

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;
/// EtherType of ARP, for the slow path's socket.
pub const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
/// EtherType IPv6 (the Neighbor Discovery socket's binding).
pub const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;

/// Buffers for frames larger than a ring slot (GSO/GRO super-frames), which
/// the kernel queues whole on the socket (`PACKET_COPY_THRESH`).
const BIG_FRAMES: usize = 8;
const BIG_HEAD: usize = 128;
const BIG_SIZE: usize = BIG_HEAD + 65536 + 1024;
/// Ring block size (the kernel wants whole pages per block).
const BLOCK_SIZE: usize = 1 << 16;

/// Size of the per-ring arena for software-segmented frames.
const ARENA_BYTES: usize = 4 << 20;
const ARENA_FRAMES: usize = 2048;

/// Offset of `sockaddr_ll` in a slot: TPACKET_ALIGN(sizeof(tpacket2_hdr)).
const SLL_OFFSET: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
/// Start of the area a [`Frame`] may use: after the header and `sockaddr_ll`.
const DATA_OFFSET: usize = libc::TPACKET2_HDRLEN;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An owned file descriptor.
#[derive(Debug)]
pub struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it exactly once.
        unsafe {
            libc::close(self.0);
        }
    }
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Block up to `timeout_ms` until `fd` has one of `events`; a timeout or a
/// signal is not an error.
fn poll_one(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Set a socket option whose value is the plain C value `v`.
/// Map `len` bytes of the ring a socket's kernel side allocated at `offset`
/// (shared, read-write, populated): the AF_PACKET RX ring and the AF_XDP
/// rings. The caller unmaps it.
fn map_ring(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a socket's ring; the kernel checks
    // that `offset` and `len` lie within what it allocated for `fd`, and
    // nothing else aliases the new address range.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(map as *mut u8)
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` lives for the call and its exact size is passed; the
    // kernel only reads it (and copies what it keeps).
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, opt, &v)
}

/// Read a socket option that is a plain C struct; also returns the length
/// the kernel wrote (older kernels may write less).
///
/// # Safety
/// `T` must be plain old data for which all-zero bytes are a valid value.
unsafe fn getsockopt_pod<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<(T, usize)> {
    // SAFETY: the caller promises zeroed bytes are a valid T.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for the kernel to write, `len` bytes at most.
    cvt(unsafe { libc::getsockopt(fd, level, opt, &mut v as *mut T as *mut libc::c_void, &mut len) })?;
    Ok((v, len as usize))
}

/// Hand a classic BPF program to the socket option `level`/`opt`
/// (`SO_ATTACH_FILTER`, `PACKET_FANOUT_DATA`); the kernel copies it.
fn set_cbpf(fd: RawFd, level: libc::c_int, opt: libc::c_int, prog: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cBPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads through this pointer, while `prog` lives.
        filter: prog.as_ptr().cast_mut(),
    };
    setsockopt(fd, level, opt, &fprog)
}

fn packet_socket(proto: u16, nonblock: bool) -> io::Result<Fd> {
    let flags = libc::SOCK_RAW | libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscall with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, flags, proto.to_be() as libc::c_int) })?;
    Ok(Fd(fd))
}

fn bind_packet(fd: RawFd, ifindex: i32, proto: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is valid for the call and its size is passed.
    cvt(unsafe {
        libc::bind(
            fd,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Addresses of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfInfo {
    pub index: i32,
    pub mac: [u8; 6],
    /// First IPv4 address (host order), if any.
    pub ipv4: Option<u32>,
    /// Its netmask (host order; 0 when there is no address).
    pub netmask: u32,
    pub mtu: u32,
}

/// Look up an interface's index, MAC, IPv4 address and MTU.
///
/// # Errors
/// The interface does not exist, or the name is too long.
pub fn if_info(name: &str) -> io::Result<IfInfo> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    // SAFETY: plain syscall.
    let fd = Fd(cvt(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?);
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let ioctl = |req: &mut libc::ifreq, op: libc::Ioctl| -> io::Result<()> {
        // SAFETY: `req` is a valid ifreq with a NUL-terminated name; these
        // ioctls only write inside it.
        cvt(unsafe { libc::ioctl(fd.0, op, req as *mut libc::ifreq) }).map(|_| ())
    };
    ioctl(&mut req, libc::SIOCGIFINDEX)?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    ioctl(&mut req, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *d = *s as u8;
    }
    ioctl(&mut req, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;
    let ipv4 = match ioctl(&mut req, libc::SIOCGIFADDR) {
        Ok(()) => {
            // SAFETY: SIOCGIFADDR filled addr with a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe {
                std::ptr::read_unaligned(
                    &req.ifr_ifru.ifru_addr as *const libc::sockaddr as *const libc::sockaddr_in,
                )
            };
            Some(u32::from_be(sin.sin_addr.s_addr))
        }
        Err(_) => None,
    };
    let netmask = match ioctl(&mut req, libc::SIOCGIFNETMASK) {
        Ok(()) => {
            // SAFETY: SIOCGIFNETMASK filled the netmask member with a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe {
                std::ptr::read_unaligned(
                    &req.ifr_ifru.ifru_netmask as *const libc::sockaddr as *const libc::sockaddr_in,
                )
            };
            u32::from_be(sin.sin_addr.s_addr)
        }
        Err(_) => 0,
    };
    Ok(IfInfo {
        index,
        mac,
        ipv4,
        netmask,
        mtu,
    })
}

/// Pin the calling thread to one CPU.
///
/// # Errors
/// The CPU does not exist or is not allowed.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// Make the calling thread `SCHED_FIFO` at `priority` (1 to 99).
///
/// # Errors
/// Not permitted (no `CAP_SYS_NICE` or real-time budget) or a bad priority.
pub fn set_fifo(priority: i32) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `p` lives for the call and is
    // only read.
    cvt(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) }).map(|_| ())
}

/// Whether the calling thread runs under `SCHED_FIFO`.
pub fn is_fifo() -> bool {
    // SAFETY: no arguments but the calling thread's id; reads only.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_FIFO }
}

/// Put the calling thread back under the normal policy (`SCHED_OTHER`; its
/// nice value is kept).
///
/// # Errors
/// Not permitted.
pub fn set_normal() -> io::Result<()> {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `set_fifo`.
    cvt(unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &p) }).map(|_| ())
}

/// A plain (unmapped) AF_PACKET socket for the slow path: ARP, Neighbor
/// Discovery.
#[derive(Debug)]
pub struct RawSocket {
    fd: Fd,
}

impl RawSocket {
    /// Non-blocking socket bound to `ifindex` receiving EtherType `proto`.
    ///
    /// # Errors
    /// Socket creation or bind failed (not root, no such interface).
    pub fn new(ifindex: i32, proto: u16) -> io::Result<Self> {
        let fd = packet_socket(proto, true)?;
        bind_packet(fd.0, ifindex, proto)?;
        setsockopt_int(fd.0, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        Ok(RawSocket { fd })
    }

    /// [`RawSocket::new`] receiving only the frames `filter` (classic BPF)
    /// accepts. The filter is attached before the bind, so no frame it
    /// would refuse is ever queued (a socket bound first receives from the
    /// bind until the filter is in place).
    ///
    /// # Errors
    /// Socket creation, the filter or the bind failed.
    pub fn filtered(ifindex: i32, proto: u16, filter: &[libc::sock_filter]) -> io::Result<Self> {
        let fd = packet_socket(0, true)?;
        set_cbpf(fd.0, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, filter)?;
        bind_packet(fd.0, ifindex, proto)?;
        setsockopt_int(fd.0, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        Ok(RawSocket { fd })
    }

    /// Join (`join` true) or leave the Ethernet multicast group `mac` on
    /// `ifindex` (`PACKET_ADD_MEMBERSHIP` / `PACKET_DROP_MEMBERSHIP`): the
    /// interface then accepts frames to it even where its hardware filters
    /// multicast. Memberships go with the socket.
    ///
    /// # Errors
    /// The kernel refused (leaving a group never joined: `EADDRNOTAVAIL`).
    pub fn multicast(&self, ifindex: i32, mac: [u8; 6], join: bool) -> io::Result<()> {
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&mac);
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_MULTICAST as u16,
            mr_alen: 6,
            mr_address: address,
        };
        let opt = if join {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        setsockopt(self.fd.0, libc::SOL_PACKET, opt, &mreq)
    }

    /// Receive one frame; returns its length and `sll_pkttype`.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u8)> {
        // SAFETY: zeroed sockaddr_ll is valid; recvfrom writes at most `len` bytes.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut alen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and sll are valid writable memory of the given sizes.
        let n = unsafe {
            libc::recvfrom(
                self.fd.0,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut alen,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, sll.sll_pkttype))
    }

    /// Send one whole Ethernet frame.
    ///
    /// # Errors
    /// The kernel refused the frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid readable memory of its length.
        let n = unsafe { libc::send(self.fd.0, frame.as_ptr() as *const libc::c_void, frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.0
    }
}

/// An AF_PACKET socket that only sends, for a load generator
/// (`ulvs-bench-gen send`): bound with protocol 0 so it receives nothing,
/// past the qdisc, sending prebuilt frames with `sendmmsg`.
pub struct PacketSender {
    fd: Fd,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the iovec/mmsghdr buffers hold pointers only during `send_cycle`
// (they are rewritten before each call); nothing is shared between threads.
unsafe impl Send for PacketSender {}

impl PacketSender {
    /// A blocking sender on `ifindex` for batches of up to `batch` frames,
    /// with a send buffer of `sndbuf` bytes (forced past `wmem_max` when
    /// allowed).
    ///
    /// # Errors
    /// Socket creation, an option or bind failed (not root, no interface).
    pub fn new(ifindex: i32, batch: usize, sndbuf: i32) -> io::Result<Self> {
        let fd = packet_socket(0, false)?;
        // Straight to the driver: no qdisc in the way of the measurement.
        setsockopt_int(fd.0, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        setsockopt_int(fd.0, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf)
            .or_else(|_| setsockopt_int(fd.0, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf))?;
        // Protocol 0: bound to the interface for sending, receives nothing.
        bind_packet(fd.0, ifindex, 0)?;
        Ok(PacketSender {
            fd,
            iov: Vec::with_capacity(batch),
            msgs: Vec::with_capacity(batch),
        })
    }

    /// One `sendmmsg` of `n` frames of `frames`, starting at `first` and
    /// wrapping around; the number the kernel took.
    ///
    /// # Errors
    /// The call failed (`EAGAIN`/`ENOBUFS` when the device queue is full).
    pub fn send_cycle(&mut self, frames: &[Vec<u8>], first: usize, n: usize) -> io::Result<usize> {
        self.iov.clear();
        self.msgs.clear();
        for k in 0..n {
            let fr = &frames[(first + k) % frames.len()];
            self.iov.push(libc::iovec {
                // The kernel only reads through this pointer.
                iov_base: fr.as_ptr().cast_mut() as *mut libc::c_void,
                iov_len: fr.len(),
            });
        }
        for iov in self.iov.iter_mut() {
            // SAFETY: mmsghdr is plain old data; zeroed then filled.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        // SAFETY: msgs[..n] point at iov[..n], which point into `frames`; all
        // stay alive and unmoved for the call; the kernel only reads them
        // (and writes msg_len).
        let r = unsafe { libc::sendmmsg(self.fd.0, self.msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        cvt(r).map(|r| r as usize)
    }
}

/// An AF_PACKET socket that only counts, for a load generator
/// (`ulvs-bench-gen count`): the kernel runs `filter` on every frame of the
/// interface and counts those that pass; none is copied to userspace, as
/// the receive buffer is tiny and never read.
pub struct FilterCounter {
    fd: Fd,
}

impl FilterCounter {
    /// # Errors
    /// Socket creation, an option or bind failed (not root, no interface).
    pub fn new(ifindex: i32, filter: &[libc::sock_filter]) -> io::Result<Self> {
        let fd = packet_socket(0, false)?;
        // The filter and a tiny buffer go on before bind, so no frame is ever
        // copied to userspace: past the first few, matching frames are dropped
        // (and counted) right after the filter.
        set_cbpf(fd.0, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, filter)?;
        setsockopt_int(fd.0, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096)?;
        setsockopt_int(fd.0, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        bind_packet(fd.0, ifindex, ETH_P_ALL)?;
        Ok(FilterCounter { fd })
    }

    /// Every frame that passed the filter since the last call (queued +
    /// dropped); reading resets the kernel's counters.
    ///
    /// # Errors
    /// `PACKET_STATISTICS` failed.
    pub fn take(&self) -> io::Result<u64> {
        // SAFETY: tpacket_stats is two u32 counters; zero is valid.
        let (st, _) = unsafe {
            getsockopt_pod::<libc::tpacket_stats>(self.fd.0, libc::SOL_PACKET, libc::PACKET_STATISTICS)?
        };
        // The kernel already adds the drops into tp_packets for TPACKET_V1/V2 sockets.
        Ok(u64::from(st.tp_packets))
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of `/proc/PID/stat`
/// CPU times; `None` when the system does not say.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0)
}

/// Shape of a receive ring.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Bytes per slot (a power of two up to 64 KiB). Frames that do not fit
    /// (GSO/GRO super-frames up to 64 KiB) are queued whole on the socket by
    /// the kernel and read from there.
    pub frame_size: usize,
    pub frame_nr: usize,
    /// Join this `PACKET_FANOUT_HASH` group (several workers on one interface).
    pub fanout_group: Option<u16>,
    /// Headroom reserved in front of each frame (`PACKET_RESERVE`).
    pub reserve: u32,
    /// Most frames handled per batch.
    pub batch: usize,
    /// The RX ring's layout. The ring's memory is `frame_size * frame_nr`
    /// bytes either way.
    pub rx: RxLayout,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            frame_size: 2048,
            frame_nr: 4096,
            fanout_group: None,
            reserve: 64,
            batch: 64,
            rx: RxLayout::V2,
        }
    }
}

/// How the kernel lays frames out in the RX ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxLayout {
    /// TPACKET_V2: one frame per `frame_size` slot, each handed over and back
    /// on its own; the kernel wakes the reader for every frame.
    V2,
    /// TPACKET_V3: frames packed back to back in blocks of `block_size`
    /// bytes; a block is handed over when full or `timeout_ms` after its
    /// first frame, and the reader is woken once per block. A block holds a
    /// 64 KiB super-frame whole when it is at least [`V3_MIN_BLOCK`] bytes,
    /// so nothing goes the `PACKET_COPY_THRESH` way (V3 has none).
    V3 { block_size: usize, timeout_ms: u32 },
}

/// The smallest TPACKET_V3 block: a 64 KiB GSO/GRO super-frame plus its
/// headers must fit one (the kernel truncates a frame longer than a block).
pub const V3_MIN_BLOCK: usize = 128 << 10;

/// Where the reader is in a TPACKET_V3 ring.
#[derive(Debug, Clone, Copy, Default)]
struct BlockCursor {
    /// The block being read, or the next one to wait for.
    block: usize,
    /// Frames of `block` not read yet (0: the block is not open).
    left: u32,
    /// Offset in `block` of the next frame.
    next: usize,
}

/// One TPACKET_V3 frame as [`PacketRing::v3_frame`] reads it.
struct V3Frame {
    base: *mut u8,
    /// Offset of the next frame's header in the block.
    next: usize,
    /// Data offset from `base`, data length, metadata; `None` for a frame
    /// whose data does not lie whole in the block (skipped).
    body: Option<(usize, usize, RxMeta)>,
}

/// An AF_PACKET socket with a TPACKET_V2 or V3 RX ring, sending with
/// `sendmmsg`.
pub struct PacketRing {
    fd: Fd,
    map: *mut u8,
    map_len: usize,
    cfg: RingConfig,
    /// V2: the next slot.
    cursor: usize,
    /// V3: block size and count, the read position, and the blocks read to
    /// their end in this batch (handed back once the batch is sent, since
    /// its frames are sent from the ring in place).
    block_size: usize,
    block_nr: usize,
    blocks: BlockCursor,
    blocks_done: Vec<usize>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    arena: TxArena,
    big: Vec<Box<[u8]>>,
}

// SAFETY: the mapping is owned by this value alone and only touched through
// `&mut self`; moving it to another thread is fine.
unsafe impl Send for PacketRing {}

impl PacketRing {
    /// Open the socket on `ifindex` (all EtherTypes), set it up and map the
    /// ring; with `cfg.fanout_group`, join it with `fanout_program` choosing
    /// each frame's socket.
    ///
    /// # Errors
    /// Any setup syscall failed (not root, interface gone, out of memory).
    pub fn new(ifindex: i32, cfg: RingConfig, fanout_program: &[libc::sock_filter]) -> io::Result<Self> {
        let fd = packet_socket(ETH_P_ALL, true)?;
        let raw = fd.0;
        let version = match cfg.rx {
            RxLayout::V2 => libc::tpacket_versions::TPACKET_V2,
            RxLayout::V3 { .. } => libc::tpacket_versions::TPACKET_V3,
        };
        setsockopt_int(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            version as libc::c_int,
        )?;
        setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        setsockopt_int(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_RESERVE,
            cfg.reserve as libc::c_int,
        )?;
        setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        if std::env::var_os("ULVS_NO_QDISC_BYPASS").is_none() {
            setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        }
        // Big send buffer: GSO frames are charged whole against it.
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20)
            .or_else(|_| setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20))?;
        // Frames that do not fit a slot are queued whole on the socket and
        // read with recv (`TP_STATUS_COPY`): slots stay small and many.
        setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20)
            .or_else(|_| setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 20))?;
        let map_len = cfg.frame_size * cfg.frame_nr;
        let (block, timeout_ms) = match cfg.rx {
            RxLayout::V2 => (BLOCK_SIZE.max(cfg.frame_size), 0),
            RxLayout::V3 {
                block_size,
                timeout_ms,
            } => (block_size, timeout_ms),
        };
        let page = 4096;
        if block % cfg.frame_size != 0 || map_len % block != 0 || block % page != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring geometry: frames must tile blocks and blocks the ring",
            ));
        }
        let block_nr = map_len / block;
        let req = libc::tpacket_req3 {
            tp_block_size: block as u32,
            tp_block_nr: block_nr as u32,
            tp_frame_size: cfg.frame_size as u32,
            tp_frame_nr: cfg.frame_nr as u32,
            tp_retire_blk_tov: timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        match cfg.rx {
            // V2 reads only the first four fields (a `tpacket_req`).
            RxLayout::V2 => setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                &libc::tpacket_req {
                    tp_block_size: req.tp_block_size,
                    tp_block_nr: req.tp_block_nr,
                    tp_frame_size: req.tp_frame_size,
                    tp_frame_nr: req.tp_frame_nr,
                },
            )?,
            RxLayout::V3 { .. } => setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?,
        }
        let map = map_ring(raw, map_len, 0)?;
        let ring = PacketRing {
            fd,
            map,
            map_len,
            cfg,
            cursor: 0,
            block_size: block,
            block_nr,
            blocks: BlockCursor::default(),
            blocks_done: Vec::with_capacity(block_nr),
            iov: Vec::with_capacity(cfg.batch + ARENA_FRAMES),
            msgs: Vec::with_capacity(cfg.batch + ARENA_FRAMES),
            arena: TxArena::new(ARENA_BYTES, ARENA_FRAMES),
            big: (0..BIG_FRAMES)
                .map(|_| vec![0u8; BIG_SIZE].into_boxed_slice())
                .collect(),
        };
        bind_packet(raw, ifindex, ETH_P_ALL)?;
        if let Some(group) = cfg.fanout_group {
            let v = (group as u32 | (libc::PACKET_FANOUT_CBPF << 16)) as libc::c_int;
            setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, v)?;
            set_cbpf(raw, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, fanout_program)?;
        }
        Ok(ring)
    }

    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frame_nr, so the offset stays inside the mapping.
        unsafe { self.map.add(i * self.cfg.frame_size) }
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the first, 4-byte aligned u32 of a slot header
        // shared with the kernel; accessing it atomically is how the ring
        // protocol hands slots back and forth.
        unsafe { &*(self.slot(i) as *const AtomicU32) }
    }

    /// The TPACKET_V3 frame whose header is at `off` of block `block`
    /// (the caller checked that the header fits the block): where it
    /// starts, where the next frame's header is, and — when its data lies
    /// whole in the block after room for the vnet header — the data's
    /// offset from `base`, its length and its metadata. Taking a batch and
    /// peeking at one read frames alike through it.
    fn v3_frame(&self, block: usize, off: usize) -> V3Frame {
        // sockaddr_ll starts at TPACKET_ALIGN(sizeof(tpacket3_hdr)).
        const SLL3: usize = libc::TPACKET3_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
        // SAFETY: off..off + TPACKET3_HDRLEN lies in a block we own (the
        // caller checked), and the kernel aligns every frame header to
        // TPACKET_ALIGNMENT.
        let base = unsafe { self.block(block).add(off) };
        // SAFETY: as above; the header is at the frame's start.
        let hdr = unsafe { &*(base as *const libc::tpacket3_hdr) };
        // SAFETY: sockaddr_ll follows the header inside the block.
        let pkttype = unsafe { *base.add(SLL3 + 10) };
        let (mac, snap) = (hdr.tp_mac as usize, hdr.tp_snaplen as usize);
        let body =
            (mac >= libc::TPACKET3_HDRLEN + VnetHdr::LEN && off + mac + snap <= self.block_size).then(|| {
                let meta = RxMeta {
                    pkttype,
                    vlan_tci: (hdr.tp_status & libc::TP_STATUS_VLAN_VALID != 0)
                        .then_some(hdr.hv1.tp_vlan_tci as u16),
                    truncated: snap < hdr.tp_len as usize,
                };
                (mac, snap, meta)
            });
        V3Frame {
            base,
            next: off + hdr.tp_next_offset as usize,
            body,
        }
    }

    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: i < block_nr, so the offset stays inside the mapping.
        unsafe { self.map.add(i * self.block_size) }
    }

    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: block_status is the u32 at offset 8 of a block's
        // descriptor (`tpacket_block_desc.hdr.bh1`), 8-byte aligned in a
        // page-aligned block; it hands blocks back and forth as tp_status
        // does slots.
        unsafe { &*(self.block(i).add(8) as *const AtomicU32) }
    }

    /// Block up to `timeout_ms` until the next slot (V3: frame or block) is
    /// ours.
    ///
    /// # Errors
    /// poll(2) failed for a reason other than EINTR.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        if self.ready() {
            return Ok(());
        }
        poll_one(self.fd.0, libc::POLLIN | libc::POLLERR, timeout_ms)
    }

    /// Whether the next slot (V3: frame or block) is ours already.
    pub fn ready(&self) -> bool {
        match self.cfg.rx {
            RxLayout::V2 => self.status(self.cursor).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0,
            RxLayout::V3 { .. } => {
                self.blocks.left > 0
                    || self.block_status(self.blocks.block).load(Ordering::Acquire) & libc::TP_STATUS_USER
                        != 0
            }
        }
    }

    /// Most frames one [`PacketRing::process_batch`] hands over.
    pub fn batch(&self) -> usize {
        self.cfg.batch
    }

    /// See [`super::Device::process_batch`].
    ///
    /// # Errors
    /// Never for per-frame problems; those are counted.
    pub fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> io::Result<BatchStats> {
        let max = max.min(self.cfg.batch);
        self.iov.clear();
        self.arena.clear();
        let mut st = match self.cfg.rx {
            RxLayout::V2 => self.receive_slots(max, &mut f),
            RxLayout::V3 { .. } => self.receive_blocks(max, &mut f),
        };
        for k in 0..self.arena.len() {
            let fr = self.arena.frame_with_vnet(k);
            self.iov.push(libc::iovec {
                iov_base: fr.as_mut_ptr() as *mut libc::c_void,
                iov_len: fr.len(),
            });
        }
        if !self.iov.is_empty() {
            let (sent, failed) = self.send_all();
            st.sent = sent;
            st.tx_failed = failed;
        }
        // Only now, with everything sent from them, do the slots or blocks
        // go back to the kernel.
        match self.cfg.rx {
            RxLayout::V2 => {
                let n_slots = self.cfg.frame_nr;
                for k in 0..st.received {
                    let i = (self.cursor + k) % n_slots;
                    self.status(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
                }
                self.cursor = (self.cursor + st.received) % n_slots;
            }
            RxLayout::V3 { .. } => {
                for k in 0..self.blocks_done.len() {
                    let b = self.blocks_done[k];
                    self.block_status(b)
                        .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                }
                self.blocks_done.clear();
            }
        }
        Ok(st)
    }

    /// Show `f` the bytes and metadata of up to `max` frames (at most a
    /// batch) that the next [`PacketRing::process_batch`] will take, in
    /// order, without taking any: the cursor, the slots' and blocks'
    /// status words and the socket are left as they are. It stops early at a
    /// frame that is not in the ring (V2's `TP_STATUS_COPY`: queued whole on
    /// the socket, readable only by taking it), so what it shows is always a
    /// prefix of the next batch. Reads only; nothing is allocated.
    pub fn peek<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, mut f: F) {
        let max = max.min(self.cfg.batch);
        match self.cfg.rx {
            RxLayout::V2 => {
                let n_slots = self.cfg.frame_nr;
                for k in 0..max {
                    let i = (self.cursor + k) % n_slots;
                    let status = self.status(i).load(Ordering::Acquire);
                    if status & libc::TP_STATUS_USER == 0 || status & libc::TP_STATUS_COPY != 0 {
                        return;
                    }
                    let base = self.slot(i);
                    // SAFETY: the slot is ours (TP_STATUS_USER) until
                    // process_batch hands it back; the header is at its start.
                    let hdr = unsafe { &*(base as *const libc::tpacket2_hdr) };
                    // SAFETY: sockaddr_ll follows the header inside the slot.
                    let pkttype = unsafe { *base.add(SLL_OFFSET + 10) };
                    let (mac, snap) = (hdr.tp_mac as usize, hdr.tp_snaplen as usize);
                    if mac < DATA_OFFSET + VnetHdr::LEN || mac + snap > self.cfg.frame_size {
                        continue; // receive_slots hands this one to no one either
                    }
                    let meta = RxMeta {
                        pkttype,
                        vlan_tci: (status & libc::TP_STATUS_VLAN_VALID != 0).then_some(hdr.tp_vlan_tci),
                        truncated: snap < hdr.tp_len as usize,
                    };
                    // SAFETY: mac..mac + snap lies in the owned slot (checked);
                    // only shared references to it exist while we hold `&self`.
                    let d = unsafe { std::slice::from_raw_parts(base.add(mac), snap) };
                    f(d, &meta);
                }
            }
            RxLayout::V3 { .. } => self.peek_blocks(max, &mut f),
        }
    }

    /// [`PacketRing::peek`] for TPACKET_V3: the walk of
    /// [`PacketRing::receive_blocks`] on a copy of the cursor.
    fn peek_blocks<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, f: &mut F) {
        let mut cur = self.blocks;
        let mut seen = 0;
        // Bounded by the ring: a block of no frames moves on without
        // counting, so count the blocks opened too.
        let mut opened = 0;
        while seen < max {
            if cur.left == 0 {
                if opened == self.block_nr
                    || self.block_status(cur.block).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0
                {
                    return;
                }
                opened += 1;
                // SAFETY: the block is ours (TP_STATUS_USER) until handed
                // back; its descriptor is at its start.
                let desc = unsafe { &*(self.block(cur.block) as *const libc::tpacket_block_desc) };
                // SAFETY: bh1 is the union's only member, what V3 writes.
                let bh = unsafe { desc.hdr.bh1 };
                cur.left = bh.num_pkts;
                cur.next = bh.offset_to_first_pkt as usize;
                if cur.left == 0 {
                    cur.block = (cur.block + 1) % self.block_nr;
                }
                continue;
            }
            let off = cur.next;
            if off < std::mem::size_of::<libc::tpacket_block_desc>()
                || off + libc::TPACKET3_HDRLEN > self.block_size
            {
                cur.left = 1; // as receive_blocks: the rest of the block is lost
            } else {
                seen += 1;
                let fr = self.v3_frame(cur.block, off);
                cur.next = fr.next;
                if let Some((mac, snap, meta)) = fr.body {
                    // SAFETY: the frame's bytes lie in the block we own
                    // (checked); only shared references exist under `&self`.
                    let d = unsafe { std::slice::from_raw_parts(fr.base.add(mac), snap) };
                    f(d, &meta);
                }
            }
            cur.left -= 1;
            if cur.left == 0 {
                cur.block = (cur.block + 1) % self.block_nr;
            }
        }
    }

    /// TPACKET_V2: hand up to `max` slots from the cursor on to `f`.
    fn receive_slots<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        f: &mut F,
    ) -> BatchStats {
        let mut st = BatchStats::default();
        let n_slots = self.cfg.frame_nr;
        let mut big_used = 0;
        while st.received < max {
            let i = (self.cursor + st.received) % n_slots;
            let status = self.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            if status & libc::TP_STATUS_COPY != 0 && big_used == self.big.len() {
                break; // no buffer for another super-frame in this batch
            }
            st.received += 1;
            let base = self.slot(i);
            // SAFETY: the slot is ours (TP_STATUS_USER) until we hand it back
            // below; the header is at its start.
            let hdr = unsafe { &*(base as *const libc::tpacket2_hdr) };
            // SAFETY: sockaddr_ll follows the header inside the slot.
            let pkttype = unsafe { *base.add(SLL_OFFSET + 10) };
            let mac = hdr.tp_mac as usize;
            let snap = hdr.tp_snaplen as usize;
            if mac < DATA_OFFSET + VnetHdr::LEN || mac + snap > self.cfg.frame_size {
                continue; // cannot happen with a sane kernel; never trust it blindly
            }
            let meta = RxMeta {
                pkttype,
                vlan_tci: (status & libc::TP_STATUS_VLAN_VALID != 0).then_some(hdr.tp_vlan_tci),
                truncated: snap < hdr.tp_len as usize,
            };
            // SAFETY: bytes DATA_OFFSET..frame_size of an owned slot belong to
            // the frame area; no other reference to them exists.
            let area = unsafe {
                std::slice::from_raw_parts_mut(base.add(DATA_OFFSET), self.cfg.frame_size - DATA_OFFSET)
            };
            let mut head = mac - DATA_OFFSET;
            let mut len = snap;
            let mut meta = meta;
            let mut area = area;
            if status & libc::TP_STATUS_COPY != 0 {
                // The whole frame (vnet header first) waits on the socket.
                let b = &mut self.big[big_used];
                // SAFETY: `b` is writable for its length minus BIG_HEAD - LEN.
                let n = unsafe {
                    libc::recv(
                        self.fd.0,
                        b[BIG_HEAD - VnetHdr::LEN..].as_mut_ptr() as *mut libc::c_void,
                        BIG_SIZE - BIG_HEAD + VnetHdr::LEN,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= VnetHdr::LEN as isize {
                    big_used += 1;
                    len = n as usize - VnetHdr::LEN;
                    meta.truncated = len < hdr.tp_len as usize;
                    head = BIG_HEAD;
                    area = &mut b[..];
                }
            }
            hand_over(area, head, len, meta, f, &mut self.arena, &mut self.iov);
        }
        st
    }

    /// TPACKET_V3: hand up to `max` frames to `f`, from the open block on
    /// and then from each following block the kernel has retired to us.
    /// Blocks read to their end are queued in `blocks_done`.
    fn receive_blocks<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        f: &mut F,
    ) -> BatchStats {
        let mut st = BatchStats::default();
        let mut cur = self.blocks;
        while st.received < max {
            if cur.left == 0 {
                if self.block_status(cur.block).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: the block is ours (TP_STATUS_USER) until handed
                // back; its descriptor is at its start.
                let desc = unsafe { &*(self.block(cur.block) as *const libc::tpacket_block_desc) };
                // SAFETY: bh1 is the union's only member, what V3 writes.
                let bh = unsafe { desc.hdr.bh1 };
                cur.left = bh.num_pkts;
                cur.next = bh.offset_to_first_pkt as usize;
                if cur.left == 0 {
                    self.blocks_done.push(cur.block);
                    cur.block = (cur.block + 1) % self.block_nr;
                }
                continue;
            }
            let off = cur.next;
            if off < std::mem::size_of::<libc::tpacket_block_desc>()
                || off + libc::TPACKET3_HDRLEN > self.block_size
            {
                // A frame offset off the block: never trust the kernel blindly;
                // give up on the rest of the block.
                cur.left = 1;
            } else {
                st.received += 1;
                let fr = self.v3_frame(cur.block, off);
                cur.next = fr.next;
                if let Some((mac, snap, meta)) = fr.body {
                    // SAFETY: the frame's bytes from after its sockaddr_ll to
                    // its end lie in the block we own, apart from every other
                    // frame's; no other reference to them exists.
                    let area = unsafe {
                        std::slice::from_raw_parts_mut(
                            fr.base.add(libc::TPACKET3_HDRLEN),
                            mac + snap - libc::TPACKET3_HDRLEN,
                        )
                    };
                    hand_over(
                        area,
                        mac - libc::TPACKET3_HDRLEN,
                        snap,
                        meta,
                        f,
                        &mut self.arena,
                        &mut self.iov,
                    );
                }
            }
            cur.left -= 1;
            if cur.left == 0 {
                self.blocks_done.push(cur.block);
                cur.block = (cur.block + 1) % self.block_nr;
            }
        }
        self.blocks = cur;
        st
    }

    fn send_all(&mut self) -> (usize, usize) {
        self.msgs.clear();
        for iov in self.iov.iter_mut() {
            // SAFETY: mmsghdr is plain old data; zeroed then filled.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        let total = self.msgs.len();
        let (mut done, mut failed, mut retries) = (0usize, 0usize, 0);
        while done < total {
            // SAFETY: msgs[done..] are valid mmsghdrs pointing at iovecs into
            // ring slots we still own.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.0,
                    self.msgs.as_mut_ptr().add(done),
                    (total - done) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                done += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) if retries < 8 => {
                    retries += 1;
                    let mut pfd = libc::pollfd {
                        fd: self.fd.0,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1) };
                }
                _ => {
                    // This frame cannot be sent: count it and go on.
                    failed += 1;
                    done += 1;
                }
            }
        }
        (total - failed, failed)
    }

    /// Frames dropped by the kernel for lack of ring space since the last call.
    pub fn ring_drops(&mut self) -> u64 {
        // SAFETY: tpacket_stats is two u32 counters; zero is valid.
        match unsafe {
            getsockopt_pod::<libc::tpacket_stats>(self.fd.0, libc::SOL_PACKET, libc::PACKET_STATISTICS)
        } {
            Ok((st, _)) => st.tp_drops as u64,
            Err(_) => 0,
        }
    }
}

/// Hand one received frame, `area[head..head + len]` with its virtio-net
/// header just before `head`, to `f`; when it is to go out, write its
/// (possibly changed) vnet header back in front of it and queue it in `iov`,
/// sent from where it lies.
fn hand_over<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
    area: &mut [u8],
    head: usize,
    len: usize,
    meta: RxMeta,
    f: &mut F,
    arena: &mut TxArena,
    iov: &mut Vec<libc::iovec>,
) {
    let mut vb = [0u8; VnetHdr::LEN];
    vb.copy_from_slice(&area[head - VnetHdr::LEN..head]);
    let vnet = VnetHdr::parse(&vb);
    let mut frame = Frame::new(area, head, len, meta, vnet);
    if f(&mut frame, arena) == Action::Transmit {
        let vnet = frame.vnet;
        let (buf, head, len) = frame.parts();
        let vh: &mut [u8; VnetHdr::LEN] = (&mut buf[head - VnetHdr::LEN..head])
            .try_into()
            .expect("10 bytes");
        vnet.write(vh);
        iov.push(libc::iovec {
            iov_base: buf[head - VnetHdr::LEN..].as_mut_ptr() as *mut libc::c_void,
            iov_len: len + VnetHdr::LEN,
        });
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping we created, once.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.map_len);
        }
    }
}

impl AsRawFd for PacketRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.0
    }
}

/// Open (create) a TUN device `name` (IFF_TUN | IFF_NO_PI: each read/write is
/// one bare IP packet) and bring it up. Used by `ulvs-decap` on real servers.
///
/// # Errors
/// /dev/net/tun is missing, the name is bad, or not root.
pub fn open_tun(name: &str) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    let path = c"/dev/net/tun";
    // SAFETY: a constant NUL-terminated path.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: we own `fd` from here on; the File closes it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes inside `req`.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut libc::ifreq) })?;
    // Bring it up through an AF_INET control socket.
    // SAFETY: plain syscall.
    let ctl = Fd(cvt(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write inside `req`, whose name is set.
    unsafe {
        cvt(libc::ioctl(
            ctl.0,
            libc::SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq,
        ))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        cvt(libc::ioctl(
            ctl.0,
            libc::SIOCSIFFLAGS,
            &mut req as *mut libc::ifreq,
        ))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pkttype;

    /// IEEE 802 local experimental EtherType: nothing else on `lo` sends it.
    const ETHERTYPE: u16 = 0x88b5;

    /// Send frames of several sizes on `lo` through a plain socket; the ring
    /// must hand each over once, whole, with its metadata; frames it sends
    /// back (from the ring in place, changed) must come round again. Needs
    /// root (skipped, saying so, without it).
    fn ring_round_trip(rx: RxLayout) {
        let lo = if_info("lo").expect("lo");
        let cfg = RingConfig {
            rx,
            ..RingConfig::default()
        };
        let mut ring = match PacketRing::new(lo.index, cfg, &[]) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: an AF_PACKET ring needs root");
                return;
            }
            r => r.expect("ring on lo"),
        };
        let tx = RawSocket::new(lo.index, ETHERTYPE).expect("socket on lo");
        // A marker per run, so that frames of another test run are not ours.
        let marker = (std::process::id() as u16).to_be_bytes();
        let sizes = [60usize, 61, 200, 1514, 64, 999, 60, 1400];
        let frame = |seq: u8, size: usize| {
            let mut f = vec![0u8; size];
            f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
            f[14..16].copy_from_slice(&marker);
            f[16] = seq;
            for (i, b) in f.iter_mut().enumerate().skip(17) {
                *b = (i as u8) ^ seq;
            }
            f
        };
        for (seq, &size) in sizes.iter().enumerate() {
            tx.send(&frame(seq as u8, size)).expect("send on lo");
        }
        // (seq, len, pkttype, content as sent) of every frame of ours.
        let mut seen: Vec<(u8, usize, u8, bool)> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 2 * sizes.len() && std::time::Instant::now() < deadline {
            ring.wait(50).expect("wait");
            ring.process_batch(64, |f, _| {
                let d = f.data();
                if d.len() < 17 || d[12..14] != ETHERTYPE.to_be_bytes() || d[14..16] != marker {
                    return Action::Drop;
                }
                let seq = d[16];
                let size = sizes[usize::from(seq % 100)];
                let same = d == &frame(seq, size)[..];
                seen.push((seq, d.len(), f.meta.pkttype, same));
                if seq >= 100 {
                    return Action::Drop;
                }
                // Back out, changed: seq + 100 and the payload to match.
                f.data_mut().copy_from_slice(&frame(seq + 100, size));
                Action::Transmit
            })
            .expect("batch");
        }
        seen.sort_unstable();
        let want: Vec<_> = (0..sizes.len())
            .map(|s| (s as u8, sizes[s], pkttype::HOST, true))
            .chain((0..sizes.len()).map(|s| (s as u8 + 100, sizes[s], pkttype::HOST, true)))
            .collect();
        assert_eq!(seen, want, "{rx:?}");
    }

    /// `peek` shows the frames the next batch takes, in order, with the
    /// same bytes and metadata, and takes none: a second peek sees them
    /// again, the batch then delivers exactly them, and after it nothing is
    /// left to peek. Runs on `lo` of a network namespace of its own (so no
    /// other traffic interleaves); needs root (skipped, saying so,
    /// without it).
    fn ring_peek(rx: RxLayout) {
        let t = std::thread::spawn(move || {
            if let Err(e) = xdp::unshare_net_for_test() {
                eprintln!("skipped: unshare(CLONE_NEWNET): {e}");
                return;
            }
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
            if !up {
                eprintln!("skipped: cannot bring lo up with ip(8)");
                return;
            }
            let lo = if_info("lo").expect("lo");
            let cfg = RingConfig {
                rx,
                ..RingConfig::default()
            };
            let mut ring = PacketRing::new(lo.index, cfg, &[]).expect("ring on lo");
            let tx = RawSocket::new(lo.index, ETHERTYPE).expect("socket on lo");
            let sizes = [60usize, 1400, 61, 200, 64, 999];
            let frame = |seq: u8, size: usize| {
                let mut f = vec![0u8; size];
                f[..6].copy_from_slice(&[2, 0, 0, 0, 0, seq]);
                f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
                f[14] = seq;
                for (i, b) in f.iter_mut().enumerate().skip(15) {
                    *b = (i as u8) ^ seq;
                }
                f
            };
            for (seq, &size) in sizes.iter().enumerate() {
                tx.send(&frame(seq as u8, size)).expect("send on lo");
            }
            let peek = |ring: &PacketRing, max: usize| {
                let mut v: Vec<(Vec<u8>, RxMeta)> = Vec::new();
                ring.peek(max, |d, m| v.push((d.to_vec(), *m)));
                v
            };
            // Peeking takes nothing, so it can wait for all of them.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut seen = peek(&ring, 64);
            while seen.len() < sizes.len() && std::time::Instant::now() < deadline {
                ring.wait(20).expect("wait");
                seen = peek(&ring, 64);
            }
            let want: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(s, &size)| frame(s as u8, size))
                .collect();
            let bytes: Vec<Vec<u8>> = seen.iter().map(|(d, _)| d.clone()).collect();
            assert_eq!(bytes, want, "{rx:?}: the frames sent, in order");
            assert_eq!(peek(&ring, 64), seen, "{rx:?}: a second peek sees the same");
            assert_eq!(peek(&ring, 2)[..], seen[..2], "{rx:?}: at most max");
            let mut taken: Vec<(Vec<u8>, RxMeta)> = Vec::new();
            let st = ring
                .process_batch(64, |f, _| {
                    taken.push((f.data().to_vec(), f.meta));
                    Action::Drop
                })
                .expect("batch");
            assert_eq!(st.received, sizes.len(), "{rx:?}");
            assert_eq!(taken, seen, "{rx:?}: the batch delivers what the peek showed");
            assert!(peek(&ring, 64).is_empty(), "{rx:?}: nothing left");
        });
        t.join().unwrap();
    }

    #[test]
    fn v2_ring_peek_shows_the_next_batch_and_takes_nothing() {
        ring_peek(RxLayout::V2);
    }

    #[test]
    fn v3_ring_peek_shows_the_next_batch_and_takes_nothing() {
        ring_peek(RxLayout::V3 {
            block_size: V3_MIN_BLOCK,
            timeout_ms: 1,
        });
    }

    #[test]
    fn v2_ring_receives_and_sends_in_place() {
        ring_round_trip(RxLayout::V2);
    }

    #[test]
    fn v3_ring_receives_and_sends_in_place() {
        ring_round_trip(RxLayout::V3 {
            block_size: V3_MIN_BLOCK,
            timeout_ms: 1,
        });
    }
}
