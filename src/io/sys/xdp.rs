//! AF_XDP on `libc`: BPF maps, program loading and BPF-link attachment with
//! raw `bpf(2)` calls, and an XDP socket (UMEM plus its fill, completion, RX
//! and TX rings). Every block says why it holds.
//!
//! Why these choices: the program is attached through a BPF link
//! (`BPF_LINK_CREATE`, `BPF_XDP`), not the netlink `IFLA_XDP` way, so the
//! kernel detaches it when the last descriptor of the link closes, which
//! includes the process being killed with SIGKILL: no stale program is left
//! on the interface. The UMEM is one anonymous mapping cut into aligned
//! 4 KiB chunks; a chunk is always owned by exactly one party (our free list,
//! the fill ring, the kernel between fill and RX, the RX ring, the TX ring
//! until its completion comes back). Frames are transmitted from the very
//! chunk they arrived in, so forwarding copies nothing in userspace.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{cvt, getsockopt_pod, map_ring, poll_one, setsockopt, setsockopt_int, Fd};
use crate::io::{Action, BatchStats, Frame, RxMeta, TxArena, VnetHdr};

// ---------------------------------------------------------------- bpf(2)

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// `BPF_F_XDP_DEV_BOUND_ONLY` (prog_flags).
const BPF_F_XDP_DEV_BOUND_ONLY: u32 = 1 << 6;
/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Size of the verifier log buffer used when a load fails.
const LOG_BYTES: usize = 1 << 20;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// Destination register in the low nibble, source in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (dst & 0xf) | (src << 4),
            off,
            imm,
        }
    }
}

/// Kinds of BPF maps used here (`enum bpf_map_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    /// One value per possible CPU per key (the XDP fast path's counters).
    PerCpuArray = 6,
    /// A hash that evicts its least recently used entry when full (the XDP
    /// fast path's flows: a full map never refuses an install).
    LruHash = 9,
    XskMap = 17,
}

/// How the program was attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// On the generic skb path (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// Errors from setting up XDP.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A system call failed; `err` says why (in the message, not as a
    /// separate cause, so that it is printed once).
    #[error("{what}: {err}")]
    Sys { what: &'static str, err: io::Error },
    #[error("the kernel refused the XDP program ({err}); verifier log:\n{log}")]
    Verifier { err: io::Error, log: String },
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct MapBatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; returns the (non-negative) result.
///
/// # Safety
/// `attr` must be the attribute struct of `cmd`, and every pointer inside
/// it must be valid for what the kernel does with it during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees the attribute's contents; its size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as libc::c_int)
    }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (d, s) in out.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    out
}

/// A BPF map with fixed key and value sizes.
#[derive(Debug)]
pub struct BpfMap {
    fd: Fd,
    key_size: usize,
    value_size: usize,
    /// One value per possible CPU ([`MapKind::PerCpuArray`]).
    per_cpu: bool,
}

impl BpfMap {
    /// Create a map.
    ///
    /// # Errors
    /// Not permitted (no CAP_BPF), unknown map type, out of memory.
    pub fn create(
        kind: MapKind,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> io::Result<Self> {
        let mut attr = MapCreateAttr {
            map_type: kind as u32,
            key_size,
            value_size,
            max_entries,
            map_name: name16(name),
            ..Default::default()
        };
        // SAFETY: a MAP_CREATE attribute with no pointers in it.
        let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr)? };
        Ok(BpfMap {
            fd: Fd(fd),
            key_size: key_size as usize,
            value_size: value_size as usize,
            per_cpu: kind == MapKind::PerCpuArray,
        })
    }

    /// Insert or replace `key` → `value`.
    ///
    /// # Errors
    /// The map is full, or the value is refused (an XSKMAP takes only AF_XDP
    /// sockets).
    ///
    /// # Panics
    /// If `key` or `value` is not of the map's sizes.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert!(key.len() == self.key_size && value.len() == self.value_size);
        let mut attr = MapElemAttr {
            map_fd: self.fd.0 as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key and value point at buffers of exactly the map's key and
        // value sizes (asserted above), alive for the call; the kernel reads them.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
    }

    /// Remove `key`; `Ok(false)` when it was not there.
    ///
    /// # Errors
    /// Anything but "no such key".
    ///
    /// # Panics
    /// If `key` is not of the map's key size.
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        assert!(key.len() == self.key_size);
        let mut attr = MapElemAttr {
            map_fd: self.fd.0 as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key points at key_size bytes alive for the call.
        match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl BpfMap {
    /// Copy the value of `key` into `value` (for a per-CPU map: one value
    /// per possible CPU, each rounded up to 8 bytes); `Ok(false)` when the
    /// key is not there.
    ///
    /// # Errors
    /// Anything but "no such key".
    ///
    /// # Panics
    /// If `key` is not of the map's key size or `value` is shorter than one
    /// value.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        assert!(key.len() == self.key_size && value.len() >= self.value_size);
        let mut attr = MapElemAttr {
            map_fd: self.fd.0 as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key points at key_size bytes; value at a writable buffer
        // the caller sized for the map (a per-CPU map writes one value per
        // possible CPU: see [`possible_cpus`]); both alive for the call.
        match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The key after `key` in the map's own order (the first one when `key`
    /// is `None`) into `next`; `Ok(false)` at the end.
    ///
    /// # Errors
    /// Anything but "no more keys".
    ///
    /// # Panics
    /// If `key` or `next` is not of the map's key size.
    pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
        assert!(next.len() == self.key_size && key.is_none_or(|k| k.len() == self.key_size));
        let mut attr = MapElemAttr {
            map_fd: self.fd.0 as u32,
            key: key.map_or(0, |k| k.as_ptr() as u64),
            // `next_key` shares the field of `value` in the kernel's union.
            value: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key is null or points at key_size bytes; next at key_size
        // writable bytes; both alive for the call.
        match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// An array map's entries from index `from` on, up to `count` of them,
    /// in one system call (`BPF_MAP_LOOKUP_BATCH`): their 4-byte keys into
    /// `keys` and their values (per-CPU maps: one per possible CPU, each
    /// rounded up to 8 bytes) into `values`, in key order. Returns how many
    /// were copied; fewer than `count` at the end of the map.
    ///
    /// # Errors
    /// The lookup failed (a kernel without batch lookups says `EINVAL`),
    /// or the number of CPUs could not be read.
    ///
    /// # Panics
    /// If the map's keys are not 4 bytes, or `keys`/`values` cannot hold
    /// `count` entries (`values`: `count` times the value size, for a
    /// per-CPU map times [`possible_cpus`]).
    pub fn lookup_batch_array(
        &self,
        from: u32,
        count: usize,
        keys: &mut [u8],
        values: &mut [u8],
    ) -> io::Result<usize> {
        let stride = if self.per_cpu {
            self.value_size.next_multiple_of(8) * possible_cpus()?
        } else {
            self.value_size
        };
        assert_eq!(self.key_size, 4, "an array map's keys");
        assert!(keys.len() >= 4 * count && values.len() >= count * stride);
        let in_batch = from.wrapping_sub(1).to_ne_bytes();
        let mut out_batch = [0u8; 4];
        let mut attr = MapBatchAttr {
            // The batch starts after `in_batch`; none: at the first entry.
            in_batch: if from == 0 { 0 } else { in_batch.as_ptr() as u64 },
            out_batch: out_batch.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(count).unwrap_or(u32::MAX),
            map_fd: self.fd.0 as u32,
            ..Default::default()
        };
        // SAFETY: in_batch is null or 4 readable bytes, out_batch 4 writable
        // bytes; keys and values hold `count` entries each, a per-CPU
        // map's values one per possible CPU (asserted above); all alive for
        // the call. The kernel writes the number copied into `count`.
        match unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
            Ok(_) => Ok(attr.count as usize),
            // The end of the map: `count` says how many came before it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(attr.count as usize),
            Err(e) => Err(e),
        }
    }

    /// Remove every entry. Not atomic: entries the program adds meanwhile
    /// may stay (here only user space adds entries).
    ///
    /// # Errors
    /// A delete failed for another reason than "already gone".
    pub fn clear(&self) -> io::Result<usize> {
        let mut key = vec![0u8; self.key_size];
        let mut n = 0;
        // Always ask for the first key: the one just deleted cannot be the
        // cursor (the kernel would restart from the first anyway).
        while self.next_key(None, &mut key)? {
            if self.delete(&key)? {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Number of possible CPUs: a per-CPU map's lookup writes one value for
/// each (`/sys/devices/system/cpu/possible`, e.g. "0-63").
///
/// # Errors
/// The file is unreadable or not a list of ranges.
pub fn possible_cpus() -> io::Result<usize> {
    let t = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(t.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cpu list {t:?}")))
}

/// The highest CPU of a list like "0-3,8,10-11", plus one.
fn parse_cpu_list(t: &str) -> Option<usize> {
    let mut top = 0usize;
    for part in t.split(',') {
        let last = part.rsplit('-').next()?;
        top = top.max(last.parse::<usize>().ok()? + 1);
    }
    Some(top)
}

impl AsRawFd for BpfMap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.0
    }
}

/// Load an XDP program; `dev_bound`: bound to that interface, which the
/// XDP metadata kfuncs require (the program then attaches only there and
/// cannot be test-run). On refusal the load is repeated with the verifier
/// log on, and the log is returned in the error.
///
/// # Errors
/// [`XdpError::Verifier`] when the kernel refuses the program.
pub fn load_xdp_program(
    insns: &[Insn],
    name: &str,
    license: &std::ffi::CStr,
    dev_bound: Option<i32>,
) -> Result<Fd, XdpError> {
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type: BPF_XDP,
        prog_flags: if dev_bound.is_some() {
            BPF_F_XDP_DEV_BOUND_ONLY
        } else {
            0
        },
        prog_ifindex: dev_bound.unwrap_or(0) as u32,
        ..Default::default()
    };
    // SAFETY: insns and license are alive for the call; the kernel copies
    // `insn_cnt` instructions and reads the NUL-terminated license.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => return Ok(Fd(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Err(XdpError::Sys {
                what: "loading the XDP program (needs CAP_BPF and CAP_NET_ADMIN)",
                err: e,
            })
        }
        Err(_) => {}
    }
    let mut log = vec![0u8; LOG_BYTES];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, plus a writable log buffer of log_size bytes that
    // outlives the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(Fd(fd)),
        Err(err) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(XdpError::Verifier {
                err,
                log: String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
            })
        }
    }
}

/// Run an XDP program once on `frame` in the kernel (`BPF_PROG_TEST_RUN`,
/// RX queue 0, no interface involved) and return its verdict.
///
/// # Errors
/// Not permitted, or the frame is shorter than an Ethernet header.
pub fn test_run_xdp(prog: &Fd, frame: &[u8]) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.0 as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: data_in points at data_size_in readable bytes alive for the
    // call; no output buffer is given (data_out null, size 0).
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr)? };
    Ok(attr.retval)
}

/// [`test_run_xdp`] that also returns the frame as the program left it.
///
/// # Errors
/// As [`test_run_xdp`].
pub fn test_run_xdp_out(prog: &Fd, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 512];
    let mut attr = TestRunAttr {
        prog_fd: prog.0 as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: data_in points at data_size_in readable bytes and data_out at
    // data_size_out writable ones, both alive for the call.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr)? };
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out))
}

/// Attach `prog` to interface `ifindex` through a BPF link: the driver's
/// hook first, the generic one when the driver has none (and `allow_generic`;
/// device-bound programs cannot run there). The program stays attached
/// exactly as long as the returned descriptor is open.
///
/// # Errors
/// Both modes refused (another program is attached, not permitted); the
/// error says why for each.
pub fn attach_xdp(prog: &Fd, ifindex: i32, allow_generic: bool) -> Result<(Fd, XdpMode), XdpError> {
    let try_mode = |flags: u32| {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.0 as u32,
            target_ifindex: ifindex as u32,
            attach_type: BPF_XDP,
            flags,
        };
        // SAFETY: a LINK_CREATE attribute with no pointers in it.
        unsafe { bpf(BPF_LINK_CREATE, &mut attr) }.map(Fd)
    };
    match try_mode(XDP_FLAGS_DRV_MODE) {
        Ok(fd) => Ok((fd, XdpMode::Native)),
        Err(native) if !allow_generic => Err(XdpError::Sys {
            what: "attaching the XDP program with a BPF link in native mode",
            err: native,
        }),
        Err(native) => match try_mode(XDP_FLAGS_SKB_MODE) {
            Ok(fd) => Ok((fd, XdpMode::Generic)),
            Err(generic) => {
                let busy = [native.raw_os_error(), generic.raw_os_error()]
                    .iter()
                    .any(|e| matches!(e, Some(libc::EBUSY) | Some(libc::EEXIST)));
                Err(XdpError::Sys {
                    what: if busy {
                        "attaching the XDP program with a BPF link: the interface already has an XDP program"
                    } else {
                        "attaching the XDP program with a BPF link"
                    },
                    err: io::Error::new(
                        generic.kind(),
                        format!("native mode: {native}; generic mode: {generic}"),
                    ),
                })
            }
        },
    }
}

/// Move the calling thread (only) into a new, empty network namespace,
/// which goes away with the thread and the processes it starts: a test can
/// then create interfaces without touching any other namespace.
///
/// # Errors
/// Not permitted (needs CAP_SYS_ADMIN).
#[cfg(test)]
pub fn unshare_net_for_test() -> io::Result<()> {
    // SAFETY: unshare(2) with a constant flag and no pointers.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(|_| ())
}

#[cfg(test)]
mod map_tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::parse_cpu_list("0-1"), Some(2));
        assert_eq!(super::parse_cpu_list("0"), Some(1));
        assert_eq!(super::parse_cpu_list("0-3,8,10-11"), Some(12));
        assert_eq!(super::parse_cpu_list("x"), None);
    }
}

// ---------------------------------------------------------------- AF_XDP socket

/// Shape of an XDP socket.
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    /// UMEM chunks (power of two).
    pub chunks: u32,
    /// Bytes per chunk (power of two, 2048 or 4096).
    pub chunk_size: u32,
    /// Entries of each of the four rings (power of two).
    pub ring: u32,
    /// Most frames handled per batch.
    pub batch: usize,
    /// Chunks kept out of the fill ring for frames built in userspace.
    pub tx_reserve: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            chunks: 4096,
            chunk_size: 4096,
            ring: 2048,
            batch: 64,
            tx_reserve: 256,
        }
    }
}

/// Where a frame starts in a chunk we fill ourselves (the kernel's own
/// `XDP_PACKET_HEADROOM`, which it also leaves in front of received frames).
const TX_HEADROOM: usize = 256;
/// Bytes in front of a received frame that are zeroed before its chunk goes
/// to the fill ring: XDP metadata the program did not write then reads as
/// zeros rather than as leftovers of an earlier frame.
pub const META_CLEARED: usize = 8;
/// Size of the per-socket arena for frames built during a batch.
const ARENA_BYTES: usize = 1 << 20;
const ARENA_FRAMES: usize = 256;
/// Bounded retries of the TX kick when the kernel stops after its own batch.
const KICK_TRIES: usize = 16;

/// One mapped ring: producer and consumer indexes, flags, descriptors.
struct Ring {
    map: *mut u8,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
    size: u32,
    /// Our copy of the index we move (producer for fill/TX, consumer for
    /// RX/completion).
    local: u32,
}

impl Ring {
    /// Map ring `pgoff` of `fd` laid out as `off` says, `size` entries of
    /// `entry` bytes.
    /// `we_consume`: we consume from it (RX, completion) rather than produce.
    fn map(
        fd: RawFd,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        we_consume: bool,
    ) -> io::Result<Ring> {
        let map_len = off.desc as usize + size as usize * entry;
        // The ring the kernel allocated for this socket, at its documented
        // page offset.
        let map = map_ring(fd, map_len, pgoff as libc::off_t)?;
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this mapping and
        // lie inside it; the kernel aligns the u32 indexes.
        let (producer, consumer, flags, desc) = unsafe {
            (
                map.add(off.producer as usize) as *const AtomicU32,
                map.add(off.consumer as usize) as *const AtomicU32,
                map.add(off.flags as usize) as *const AtomicU32,
                map.add(off.desc as usize),
            )
        };
        let mut r = Ring {
            map,
            map_len,
            producer,
            consumer,
            flags,
            desc,
            mask: size - 1,
            size,
            local: 0,
        };
        r.local = if we_consume {
            r.cons().load(Ordering::Relaxed)
        } else {
            r.prod().load(Ordering::Relaxed)
        };
        Ok(r)
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping, aligned (see `map`); the
        // index is shared with the kernel, hence atomic access.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`.
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as for `prod`.
        unsafe { &*self.flags }.load(Ordering::Relaxed)
    }

    /// Free entries of a ring we produce into.
    fn free(&self) -> u32 {
        self.size - self.local.wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    /// Entries ready in a ring we consume from.
    fn ready(&self) -> u32 {
        self.prod().load(Ordering::Acquire).wrapping_sub(self.local)
    }

    fn addr_at(&self, i: u32) -> *mut u64 {
        // SAFETY: (i & mask) < size, so the entry is inside the mapping.
        unsafe { (self.desc as *mut u64).add((i & self.mask) as usize) }
    }

    fn desc_at(&self, i: u32) -> *mut libc::xdp_desc {
        // SAFETY: as for `addr_at`, with 16-byte entries.
        unsafe { (self.desc as *mut libc::xdp_desc).add((i & self.mask) as usize) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `Ring::map`, once.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.map_len);
        }
    }
}

/// The UMEM: one anonymous mapping.
struct Umem {
    base: *mut u8,
    len: usize,
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmapping our own anonymous mapping, once, after the socket
        // (declared before it in `XskSocket`) has been closed.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

/// An AF_XDP socket bound to one RX queue, with its own UMEM.
pub struct XskSocket {
    // Field order is drop order: rings, then the socket, then the UMEM.
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    fd: Fd,
    umem: Umem,
    cfg: XskConfig,
    zero_copy: bool,
    /// Chunk offsets that are ours and unused.
    free: Vec<u64>,
    arena: TxArena,
    /// Last totals read from XDP_STATISTICS.
    drops_seen: u64,
}

// SAFETY: the mappings are owned by this value alone and only touched
// through `&mut self`; moving it to another thread is fine.
unsafe impl Send for XskSocket {}

impl XskSocket {
    /// Open a socket on queue `queue` of `ifindex`: zero-copy when the driver
    /// supports it (and `allow_zero_copy`), else copy mode.
    ///
    /// # Errors
    /// Socket setup or bind failed in both modes.
    pub fn open(ifindex: i32, queue: u32, cfg: XskConfig, allow_zero_copy: bool) -> io::Result<Self> {
        if allow_zero_copy {
            if let Ok(s) = Self::open_mode(ifindex, queue, cfg, true) {
                return Ok(s);
            }
        }
        Self::open_mode(ifindex, queue, cfg, false)
    }

    fn open_mode(ifindex: i32, queue: u32, cfg: XskConfig, zero_copy: bool) -> io::Result<Self> {
        assert!(
            cfg.chunks.is_power_of_two() && cfg.chunk_size.is_power_of_two() && cfg.ring.is_power_of_two()
        );
        // SAFETY: plain syscall with constant arguments.
        let fd = Fd(cvt(unsafe {
            libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
        })?);
        let len = cfg.chunks as usize * cfg.chunk_size as usize;
        // SAFETY: a fresh private anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let umem = Umem {
            base: base as *mut u8,
            len,
        };
        let reg = libc::xdp_umem_reg {
            addr: base as u64,
            len: len as u64,
            chunk_size: cfg.chunk_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // The area `reg` names is our mapping, which outlives the socket.
        setsockopt(fd.0, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt_int(fd.0, libc::SOL_XDP, opt, cfg.ring as libc::c_int)?;
        }
        // SAFETY: xdp_mmap_offsets is plain offsets; zero is valid.
        let (off, olen) =
            unsafe { getsockopt_pod::<libc::xdp_mmap_offsets>(fd.0, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS) }?;
        if olen != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel too old: no ring flags in XDP_MMAP_OFFSETS",
            ));
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let rx = Ring::map(
            fd.0,
            libc::XDP_PGOFF_RX_RING as u64,
            &off.rx,
            cfg.ring,
            desc,
            true,
        )?;
        let tx = Ring::map(
            fd.0,
            libc::XDP_PGOFF_TX_RING as u64,
            &off.tx,
            cfg.ring,
            desc,
            false,
        )?;
        let fill = Ring::map(fd.0, libc::XDP_UMEM_PGOFF_FILL_RING, &off.fr, cfg.ring, 8, false)?;
        let comp = Ring::map(
            fd.0,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            &off.cr,
            cfg.ring,
            8,
            true,
        )?;
        let mut s = XskSocket {
            rx,
            tx,
            fill,
            comp,
            fd,
            umem,
            cfg,
            zero_copy,
            free: (0..cfg.chunks as u64)
                .rev()
                .map(|i| i * cfg.chunk_size as u64)
                .collect(),
            arena: TxArena::new(ARENA_BYTES, ARENA_FRAMES),
            drops_seen: 0,
        };
        s.refill();
        // SAFETY: sockaddr_xdp is plain old data; zeroed is valid.
        let mut sxdp: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sxdp.sxdp_family = libc::AF_XDP as u16;
        sxdp.sxdp_flags = libc::XDP_USE_NEED_WAKEUP
            | if zero_copy {
                libc::XDP_ZEROCOPY
            } else {
                libc::XDP_COPY
            };
        sxdp.sxdp_ifindex = ifindex as u32;
        sxdp.sxdp_queue_id = queue;
        // SAFETY: `sxdp` is valid for the call and its size is passed.
        cvt(unsafe {
            libc::bind(
                s.fd.0,
                &sxdp as *const libc::sockaddr_xdp as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })?;
        Ok(s)
    }

    /// True when bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Hand free chunks to the kernel, keeping `tx_reserve` for built frames.
    fn refill(&mut self) {
        let spare = self.free.len().saturating_sub(self.cfg.tx_reserve as usize);
        let n = (self.fill.free() as usize).min(spare) as u32;
        if n == 0 {
            return;
        }
        for k in 0..n {
            let addr = self.free.pop().expect("counted above");
            // SAFETY: the chunk is ours (it came off the free list) and
            // TX_HEADROOM - META_CLEARED.. TX_HEADROOM lies inside it.
            unsafe {
                self.umem
                    .base
                    .add(addr as usize + TX_HEADROOM - META_CLEARED)
                    .write_bytes(0, META_CLEARED)
            };
            // SAFETY: entry (local + k) is free for us to write: fewer than
            // `free()` entries are written before the producer moves.
            unsafe { self.fill.addr_at(self.fill.local.wrapping_add(k)).write(addr) };
        }
        self.fill.local = self.fill.local.wrapping_add(n);
        self.fill.prod().store(self.fill.local, Ordering::Release);
    }

    /// Take back the chunks of frames the kernel finished sending.
    fn reclaim(&mut self) {
        let n = self.comp.ready();
        if n == 0 {
            return;
        }
        let mask = !(self.cfg.chunk_size as u64 - 1);
        for k in 0..n {
            // SAFETY: entries local..local+n were published by the kernel
            // (producer loaded with Acquire in `ready`).
            let addr = unsafe { self.comp.addr_at(self.comp.local.wrapping_add(k)).read() };
            self.free.push(addr & mask);
        }
        self.comp.local = self.comp.local.wrapping_add(n);
        self.comp.cons().store(self.comp.local, Ordering::Release);
    }

    /// Make the kernel send what is in the TX ring (copy mode sends from
    /// `sendto`, a bounded batch at a time).
    fn kick(&mut self) {
        for _ in 0..KICK_TRIES {
            if self.tx.local == self.tx.cons().load(Ordering::Acquire) {
                return;
            }
            // Copy mode sends only from sendto; a zero-copy driver says
            // whether it needs the call.
            if self.zero_copy && self.tx.flags() & libc::XDP_RING_NEED_WAKEUP == 0 {
                return;
            }
            // SAFETY: a zero-length sendto with no buffers; it only wakes the
            // kernel's transmit path.
            let r = unsafe {
                libc::sendto(
                    self.fd.0,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) | Some(libc::ENOBUFS) => {}
                    _ => return,
                }
            }
        }
    }

    /// Block up to `timeout_ms` until frames may be ready.
    ///
    /// # Errors
    /// poll(2) failed for a reason other than EINTR.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.kick();
        self.reclaim();
        self.refill();
        if self.rx.ready() > 0 {
            return Ok(());
        }
        poll_one(self.fd.0, libc::POLLIN, timeout_ms)
    }

    /// Queue a frame for transmission from chunk offset `addr`; false when
    /// the TX ring is full.
    fn push_tx(&mut self, addr: u64, len: usize) -> bool {
        if self.tx.free() == 0 {
            return false;
        }
        // SAFETY: the entry at `local` is free (checked above) and written
        // before the producer index publishes it.
        unsafe {
            self.tx.desc_at(self.tx.local).write(libc::xdp_desc {
                addr,
                len: len as u32,
                options: 0,
            })
        };
        self.tx.local = self.tx.local.wrapping_add(1);
        true
    }

    /// Show `f` each of (up to `max` of) the frames the next
    /// [`XskSocket::process_batch`] will take, in order, as its chunk and
    /// the frame's place in it (`chunk[head..head + len]`; the bytes before
    /// `head` hold the XDP metadata), without taking any: the RX ring's
    /// consumer index is not moved. Descriptors `process_batch` would skip
    /// as insane are skipped here too. Reads only; nothing is allocated.
    pub fn peek<F: FnMut(&[u8], usize, usize)>(&self, max: usize, mut f: F) {
        let n = self.rx.ready().min(max.min(self.cfg.batch) as u32);
        let cs = self.cfg.chunk_size as u64;
        for k in 0..n {
            // SAFETY: entries local..local+n were published by the kernel
            // (producer loaded with Acquire in `ready`).
            let d = unsafe { self.rx.desc_at(self.rx.local.wrapping_add(k)).read() };
            let chunk = d.addr & !(cs - 1);
            let head = (d.addr - chunk) as usize;
            let len = d.len as usize;
            if chunk >= self.umem.len as u64 || head < VnetHdr::LEN || head + len > cs as usize {
                continue;
            }
            // SAFETY: the chunk came back on the RX ring and stays ours
            // until process_batch puts it on the fill or TX ring; it lies
            // inside the UMEM (checked). Only shared references to it exist
            // while we hold `&self`.
            let buf = unsafe { std::slice::from_raw_parts(self.umem.base.add(chunk as usize), cs as usize) };
            f(buf, head, len);
        }
    }

    /// See [`crate::io::Device::process_batch`]. Frames come with a default
    /// (empty) vnet header and `pkttype` HOST; the caller knows better.
    /// Frames to transmit must carry complete checksums: AF_XDP has no
    /// offload request here, so a frame whose vnet header asks for one is
    /// not sent (counted as a TX failure).
    ///
    /// # Errors
    /// Never for per-frame problems; those are counted.
    pub fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> io::Result<BatchStats> {
        let mut st = BatchStats::default();
        self.arena.clear();
        self.reclaim();
        let n = self.rx.ready().min(max.min(self.cfg.batch) as u32);
        let cs = self.cfg.chunk_size as u64;
        let tx_before = self.tx.local;
        for k in 0..n {
            // SAFETY: entries local..local+n were published by the kernel.
            let d = unsafe { self.rx.desc_at(self.rx.local.wrapping_add(k)).read() };
            let chunk = d.addr & !(cs - 1);
            let head = (d.addr - chunk) as usize;
            let len = d.len as usize;
            st.received += 1;
            if chunk >= self.umem.len as u64 || head < VnetHdr::LEN || head + len > cs as usize {
                // Cannot happen with a sane kernel; never trust it blindly.
                // The chunk is lost to us rather than reused while in doubt.
                continue;
            }
            // SAFETY: the chunk came back on the RX ring, so it is ours
            // until we put it on the fill or TX ring; it lies inside the
            // UMEM (checked) and no other reference to it exists.
            let buf =
                unsafe { std::slice::from_raw_parts_mut(self.umem.base.add(chunk as usize), cs as usize) };
            let mut frame = Frame::new(
                buf,
                head,
                len,
                RxMeta {
                    pkttype: crate::io::pkttype::HOST,
                    vlan_tci: None,
                    truncated: false,
                },
                VnetHdr::default(),
            );
            let act = f(&mut frame, &mut self.arena);
            let offload = frame.vnet.needs_csum() || frame.vnet.is_gso();
            let (_, head, len) = frame.parts();
            if act == Action::Transmit {
                if !offload && self.push_tx(chunk + head as u64, len) {
                    continue;
                }
                st.tx_failed += 1;
            }
            self.free.push(chunk);
        }
        self.rx.local = self.rx.local.wrapping_add(n);
        self.rx.cons().store(self.rx.local, Ordering::Release);
        for k in 0..self.arena.len() {
            let fr = self.arena.frame_with_vnet(k);
            let data_len = fr.len() - VnetHdr::LEN;
            let complete = fr[..VnetHdr::LEN].iter().all(|&b| b == 0);
            let fits = TX_HEADROOM + data_len <= cs as usize;
            let chunk = match self.free.pop() {
                Some(c) if complete && fits && self.tx.free() > 0 => c,
                Some(c) => {
                    self.free.push(c);
                    st.tx_failed += 1;
                    continue;
                }
                None => {
                    st.tx_failed += 1;
                    continue;
                }
            };
            let fr = &self.arena.frame_with_vnet(k)[VnetHdr::LEN..];
            // SAFETY: `chunk` came off our free list, so no one else uses
            // it; TX_HEADROOM + len fits in the chunk (checked above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    fr.as_ptr(),
                    self.umem.base.add(chunk as usize + TX_HEADROOM),
                    fr.len(),
                )
            };
            let pushed = self.push_tx(chunk + TX_HEADROOM as u64, data_len);
            debug_assert!(pushed, "TX space checked above");
        }
        let queued = self.tx.local.wrapping_sub(tx_before) as usize;
        if queued > 0 {
            self.tx.prod().store(self.tx.local, Ordering::Release);
            self.kick();
        }
        st.sent = queued;
        self.reclaim();
        self.refill();
        if self.zero_copy && self.fill.flags() & libc::XDP_RING_NEED_WAKEUP != 0 {
            // SAFETY: a zero-length, non-blocking recvfrom with no buffers; it
            // only wakes the driver to take chunks from the fill ring.
            unsafe {
                libc::recvfrom(
                    self.fd.0,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        Ok(st)
    }

    /// Frames the kernel dropped since the last call: no room in the RX ring
    /// or no chunk in the fill ring.
    pub fn ring_drops(&mut self) -> u64 {
        // SAFETY: xdp_statistics is plain u64 counters; zero is valid.
        let Ok((st, _)) = (unsafe {
            getsockopt_pod::<libc::xdp_statistics>(self.fd.0, libc::SOL_XDP, libc::XDP_STATISTICS)
        }) else {
            return 0;
        };
        // rx_dropped already counts fill-ring shortages; rx_ring_full is separate.
        let total = st.rx_dropped + st.rx_ring_full;
        let d = total.saturating_sub(self.drops_seen);
        self.drops_seen = total;
        d
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.0
    }
}
