//! The AF_PACKET [`Device`]: a TPACKET_V2 (or, on request, V3) RX ring with
//! `PACKET_VNET_HDR`, transmitting batches with `sendmmsg` (fast path). The
//! mechanics are in [`super::sys::PacketRing`]; this file adapts it to the
//! trait and reads the ring layout from the environment.

use std::io;

use super::bpf::{Asm, Branch};
use super::sys::{PacketRing, RingConfig, RxLayout, V3_MIN_BLOCK};

/// Environment variables that choose the RX ring's layout (read once, at
/// start-up, by [`rx_layout_from_env`]).
pub const ENV_VERSION: &str = "ULVS_TPACKET_VERSION";
pub const ENV_BLOCK_KB: &str = "ULVS_TPACKET_BLOCK_KB";
pub const ENV_TIMEOUT_MS: &str = "ULVS_TPACKET_TIMEOUT_MS";
/// Environment variable that sets the `SCHED_FIFO` priority an AF_PACKET
/// worker thread takes while it has a backlog, 0 for never
/// ([`worker_fifo`]).
pub const ENV_WORKER_FIFO: &str = "ULVS_PACKET_WORKER_FIFO";
/// TPACKET_V3 block size and retire timeout when the environment does not
/// say. 128 KiB (the smallest that holds a super-frame) forwarded more at
/// 64 B than 256 KiB in the benchmark (see the README).
pub const V3_DEFAULT_BLOCK_KB: usize = 128;
pub const V3_DEFAULT_TIMEOUT_MS: u32 = 1;
/// The ring is 8 MiB ([`RingConfig::default`]): at most this block size, so
/// that it holds at least 2 blocks (one filling while the other is read).
const V3_MAX_BLOCK_KB: usize = 4096;

/// The RX ring layout `get` (an environment lookup) asks for:
/// `ULVS_TPACKET_VERSION` 2 (the default) or 3; with 3,
/// `ULVS_TPACKET_BLOCK_KB` (a power of two from 128 to 4096, default 128) and
/// `ULVS_TPACKET_TIMEOUT_MS` (1 to 1000, default 1: how long a block that is
/// not full waits before the kernel hands it over; what a frame waits at
/// most at low rates). The block knobs without version 3 are an error, not
/// silently ignored.
///
/// # Errors
/// A value out of range or not a number, named with its variable.
pub fn rx_layout(get: impl Fn(&str) -> Option<String>) -> Result<RxLayout, String> {
    let num = |name: &str, lo: usize, hi: usize| -> Result<Option<usize>, String> {
        let Some(v) = get(name) else { return Ok(None) };
        match v.trim().parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(format!("{name}={v:?}: expected a whole number from {lo} to {hi}")),
        }
    };
    let version = num(ENV_VERSION, 2, 3)?.unwrap_or(2);
    let block_kb = num(ENV_BLOCK_KB, V3_MIN_BLOCK >> 10, V3_MAX_BLOCK_KB)?;
    let timeout = num(ENV_TIMEOUT_MS, 1, 1000)?;
    if version == 2 {
        if let Some(name) = [(ENV_BLOCK_KB, block_kb), (ENV_TIMEOUT_MS, timeout)]
            .iter()
            .find_map(|(n, v)| v.map(|_| n))
        {
            return Err(format!(
                "{name} is set but {ENV_VERSION} is not 3 (only TPACKET_V3 has blocks)"
            ));
        }
        return Ok(RxLayout::V2);
    }
    let block_kb = block_kb.unwrap_or(V3_DEFAULT_BLOCK_KB);
    if !block_kb.is_power_of_two() {
        return Err(format!("{ENV_BLOCK_KB}={block_kb}: expected a power of two"));
    }
    Ok(RxLayout::V3 {
        block_size: block_kb << 10,
        timeout_ms: timeout.map_or(V3_DEFAULT_TIMEOUT_MS, |t| t as u32),
    })
}

/// The `SCHED_FIFO` priority of the AF_PACKET worker threads under a
/// backlog, from `ULVS_PACKET_WORKER_FIFO` as `get` (an environment lookup)
/// finds it: 1 to 99, or 0 for the normal policy throughout. Unset, the
/// default is priority [`DEFAULT_WORKER_FIFO`], taken only where the
/// director may (`CAP_SYS_NICE`; without it a warning, and the normal
/// policy); a priority that is set and cannot be taken stops the worker.
///
/// Why: on the CPU a worker shares with the interface's receive work (the
/// NAPI thread or softirq that copies frames into the ring), the normal
/// scheduler gives both equal time, and under a flood the kernel then
/// spends most of it copying frames into a ring the worker cannot empty,
/// only to drop them there (receive livelock). A worker that has a backlog
/// (a batch came back full) becomes `SCHED_FIFO` and keeps the CPU until
/// the ring is empty, so the receive work only fills what the worker will
/// forward and further frames are dropped before they cost the box
/// anything; before it sleeps in `poll` it goes back to the normal policy,
/// so that at low rates a frame's wake-up does not preempt the receive
/// work at once, frame by frame (measured: a worker that stayed real-time
/// cost more CPU per frame at 50k frames/s; README, Benchmarks).
///
/// # Errors
/// Not a whole number from 1 to 99, named with the variable.
pub fn worker_fifo(get: impl Fn(&str) -> Option<String>) -> Result<WorkerFifo, String> {
    let Some(v) = get(ENV_WORKER_FIFO) else {
        return Ok(WorkerFifo::Default(DEFAULT_WORKER_FIFO));
    };
    match v.trim().parse::<i32>() {
        Ok(0) => Ok(WorkerFifo::Off),
        Ok(p) if (1..=99).contains(&p) => Ok(WorkerFifo::Set(p)),
        _ => Err(format!(
            "{ENV_WORKER_FIFO}={v:?}: expected a SCHED_FIFO priority, a whole number from 1 to 99, or 0 for none"
        )),
    }
}

/// The worker threads' `SCHED_FIFO` priority under a backlog.
pub const DEFAULT_WORKER_FIFO: i32 = 1;

/// What [`worker_fifo`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerFifo {
    /// `ULVS_PACKET_WORKER_FIFO=0`: the normal policy throughout.
    Off,
    /// Unset: this priority where the director may take it.
    Default(i32),
    /// Set: this priority, or the worker stops.
    Set(i32),
}

impl WorkerFifo {
    /// For the start-up log line.
    pub fn describe(self) -> String {
        match self {
            WorkerFifo::Off => "normal scheduling".to_string(),
            WorkerFifo::Default(p) | WorkerFifo::Set(p) => format!("SCHED_FIFO {p} under a backlog"),
        }
    }
}

/// [`worker_fifo`] from the process environment.
///
/// # Errors
/// See [`worker_fifo`].
pub fn worker_fifo_from_env() -> Result<WorkerFifo, String> {
    worker_fifo(|name| std::env::var(name).ok())
}

/// [`rx_layout`] from the process environment.
///
/// # Errors
/// See [`rx_layout`].
pub fn rx_layout_from_env() -> Result<RxLayout, String> {
    rx_layout(|name| std::env::var(name).ok())
}

/// The ring's layout for the start-up log line.
pub fn describe(rx: RxLayout) -> String {
    match rx {
        RxLayout::V2 => "TPACKET_V2 ring".to_string(),
        RxLayout::V3 {
            block_size,
            timeout_ms,
        } => {
            format!(
                "TPACKET_V3 ring of {} KiB blocks, {timeout_ms} ms retire timeout",
                block_size >> 10
            )
        }
    }
}
use super::{Action, BatchStats, Device, Frame, RxMeta, TxArena};

/// Where a classic BPF load is relative to: the network header (`SKF_NET_OFF`).
fn net(offset: i32) -> u32 {
    (libc::SKF_NET_OFF + offset) as u32
}

/// The fanout program: a worker index from source ^ destination ^ sport ^
/// dport of the IPv4 header, folded to 16 bits, symmetric in both address
/// and port order. Every packet of a 4-tuple lands on the same worker
/// whatever `skb->hash` the sender set (a client's TCP stack re-draws it on
/// retransmission timeouts and per socket, which would split one flow, or a
/// reused tuple, across `PACKET_FANOUT_HASH` workers). Two kinds of packet
/// must meet the state their flow left in one worker's tables:
/// * fragments (MF set or an offset) hash on the addresses alone, so every
///   fragment of a datagram reaches the worker that saw the first one;
/// * ICMP errors hash on the packet they quote (VIP:vport -> client:cport),
///   which the symmetric hash maps to the flow's own worker.
///
/// IPv6 (version nibble 6) hashes the XOR of the eight address words,
/// symmetric too, so one client address and VIP meet one worker whatever
/// the ports, extension headers or fragmentation (no ports: a bounded
/// header walk in cBPF is not worth it, and addresses keep every fragment
/// of a datagram together); an ICMPv6 error hashes the addresses of the
/// packet it quotes (at 48), so it meets its flow's worker. The IPv4 part
/// is unchanged (the version test comes first, one load and a jump).
///
/// Frames too short to hash fail a load and go to worker 0.
pub fn fanout_program() -> Vec<libc::sock_filter> {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Label {
        NotIcmp,
        NotFragment,
        Fold,
        V6,
        V6Icmp,
        V6Fold,
    }
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MEM,
        BPF_MISC, BPF_RET, BPF_RSH, BPF_ST, BPF_TAX, BPF_W, BPF_X, BPF_XOR,
    };
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let ldb = |off| op(BPF_LD | BPF_B | BPF_ABS, net(off));
    let ldh = |off| op(BPF_LD | BPF_H | BPF_ABS, net(off));
    let ld = |off| op(BPF_LD | BPF_W | BPF_ABS, net(off));
    let tax = op(BPF_MISC | BPF_TAX, 0);
    let xor_x = op(BPF_ALU | BPF_XOR | BPF_X, 0);
    let st_m0 = op(BPF_ST, 0);
    let ld_m0 = op(BPF_LD | BPF_MEM, 0);
    let jeq = |k| op(BPF_JMP | BPF_JEQ | BPF_K, k);
    let ja = op(BPF_JMP | BPF_JA, 0);
    // A = (address ^ address) ^ (port ^ port) of the two addresses at
    // `addrs` and the two ports at `ports`: the same in both directions.
    let four_tuple = |a: &mut Asm<libc::sock_filter, Label>, addrs: i32, ports: i32| {
        for i in [ld(addrs), tax, ld(addrs + 4), xor_x, st_m0] {
            a.push(i);
        }
        for i in [ldh(ports), tax, ldh(ports + 2), xor_x, tax, ld_m0, xor_x] {
            a.push(i);
        }
    };
    let mut a = Asm::new();
    a.push(ldb(0)); // version and IHL / traffic class
    a.push(op(BPF_ALU | BPF_AND | BPF_K, 0xf0));
    a.push_branch(jeq(0x60), Some(Label::V6), None);
    a.push(ldb(9)); // protocol
    a.push_branch(jeq(1), None, Some(Label::NotIcmp));
    // ICMP: the quoted packet's addresses (20 + 8 + 12) and ports.
    four_tuple(&mut a, 40, 48);
    a.push_jump(ja, Branch::Always, Label::Fold);
    a.label(Label::NotIcmp);
    a.push(ldh(6)); // flags and fragment offset
    a.push(op(BPF_ALU | BPF_AND | BPF_K, 0x3fff)); // MF | offset
    a.push_branch(jeq(0), Some(Label::NotFragment), None);
    // A fragment: addresses only.
    for i in [ld(12), tax, ld(16), xor_x] {
        a.push(i);
    }
    a.push_jump(ja, Branch::Always, Label::Fold);
    a.label(Label::NotFragment);
    // Addresses and ports (no IP options on VIP traffic).
    four_tuple(&mut a, 12, 20);
    a.label(Label::Fold);
    for i in [
        tax,
        op(BPF_ALU | BPF_RSH | BPF_K, 16),
        xor_x,
        op(BPF_RET | BPF_A, 0),
    ] {
        a.push(i);
    }
    // A = the XOR of the eight words of the two addresses from `at`.
    let addrs6 = |a: &mut Asm<libc::sock_filter, Label>, at: i32| {
        a.push(ld(at));
        for w in 1..8 {
            a.push(tax);
            a.push(ld(at + 4 * w));
            a.push(xor_x);
        }
    };
    a.label(Label::V6);
    a.push(ldb(6)); // next header
    a.push_branch(jeq(58), Some(Label::V6Icmp), None);
    addrs6(&mut a, 8);
    a.push_jump(ja, Branch::Always, Label::V6Fold);
    a.label(Label::V6Icmp);
    // The quoted IPv6 header starts after the 8-byte ICMPv6 header.
    addrs6(&mut a, 40 + 8 + 8);
    a.label(Label::V6Fold);
    for i in [
        tax,
        op(BPF_ALU | BPF_RSH | BPF_K, 16),
        xor_x,
        op(BPF_RET | BPF_A, 0),
    ] {
        a.push(i);
    }
    a.finish()
}

/// What [`fanout_program`] returns for an unfragmented TCP or UDP packet of
/// the 4-tuple (`src`, `dst`, `sport`, `dport`; host order, either
/// direction): the kernel sends the packet to fanout member `hash % members`
/// (`fanout_demux_bpf`), and member `i` is the `i`-th ring opened. The flow
/// sync uses it to hand a peer's flow to the worker that will see its frames
/// ([`crate::dataplane::synclink::worker_for`]); a test runs both on the
/// same frames.
#[inline]
pub fn fanout_hash(src: u32, dst: u32, sport: u16, dport: u16) -> u32 {
    let a = (src ^ dst) ^ u32::from(sport ^ dport);
    a ^ (a >> 16)
}

/// What [`fanout_program`] returns for an IPv6 packet between `src` and
/// `dst` (big-endian `u128`s, either direction): the XOR of the addresses'
/// eight 32-bit words, folded like [`fanout_hash`]; ports take no part.
/// The flow sync places an IPv6 flow with it
/// ([`crate::dataplane::synclink::worker_for6`]).
#[inline]
pub fn fanout_hash6(src: u128, dst: u128) -> u32 {
    let x = src ^ dst;
    let a = (x >> 96) as u32 ^ (x >> 64) as u32 ^ (x >> 32) as u32 ^ x as u32;
    a ^ (a >> 16)
}

/// A worker's AF_PACKET device.
pub struct PacketDevice {
    ring: PacketRing,
    /// The `SCHED_FIFO` priority its worker thread takes while it has a
    /// backlog, and whether one that cannot be taken is an error (see
    /// [`PacketDevice::with_fifo`]).
    fifo: Option<i32>,
    fifo_required: bool,
    /// The policy the worker thread is under: `Some(true)` real-time,
    /// `Some(false)` normal, `None` not checked yet (first `wait`).
    realtime: Option<bool>,
}

impl PacketDevice {
    /// Open a ring on interface `ifindex`.
    ///
    /// # Errors
    /// Socket setup failed (see [`PacketRing::new`]).
    pub fn open(ifindex: i32, cfg: RingConfig) -> io::Result<Self> {
        Ok(PacketDevice {
            ring: PacketRing::new(ifindex, cfg, &fanout_program())?,
            fifo: None,
            fifo_required: false,
            realtime: None,
        })
    }

    /// Let the thread that runs this device be `SCHED_FIFO` at `priority`
    /// while it has a backlog ([`worker_fifo`]). The device is opened on
    /// the director's main thread and then moved to its worker's, so the
    /// worker thread's first [`Device::wait`] checks that it may (sets and
    /// resets the policy once: a missing `CAP_SYS_NICE` stops the worker
    /// at start, not at the first flood; the default priority that may
    /// not be taken is given up with a warning instead).
    #[must_use]
    pub fn with_fifo(mut self, fifo: WorkerFifo) -> Self {
        (self.fifo, self.fifo_required) = match fifo {
            WorkerFifo::Off => (None, false),
            WorkerFifo::Default(p) => (Some(p), false),
            WorkerFifo::Set(p) => (Some(p), true),
        };
        self
    }
}

impl Device for PacketDevice {
    fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        if let Some(p) = self.fifo {
            let named = |e: io::Error| {
                io::Error::new(
                    e.kind(),
                    format!("{ENV_WORKER_FIFO}={p}: cannot switch the worker thread's scheduling policy: {e} (SCHED_FIFO needs CAP_SYS_NICE)"),
                )
            };
            if self.realtime.is_none() {
                match super::sys::set_fifo(p) {
                    Ok(()) => self.realtime = Some(true),
                    Err(e) if !self.fifo_required => {
                        log::warn!(
                            "AF_PACKET worker: cannot take SCHED_FIFO {p} under a backlog ({e}; needs CAP_SYS_NICE): \
                             normal scheduling, which forwards less under a flood ({ENV_WORKER_FIFO}=0 says so quietly)"
                        );
                        self.fifo = None;
                        return self.ring.wait(timeout_ms);
                    }
                    Err(e) => return Err(named(e)),
                }
            }
            // About to sleep: back to the normal policy first.
            if self.realtime == Some(true) && !self.ring.ready() {
                super::sys::set_normal().map_err(named)?;
                self.realtime = Some(false);
            }
        }
        self.ring.wait(timeout_ms)
    }

    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        f: F,
    ) -> io::Result<BatchStats> {
        let st = self.ring.process_batch(max, f)?;
        if let Some(p) = self.fifo {
            // A full batch: frames are waiting beyond it, a backlog.
            if self.realtime == Some(false) && st.received >= max.min(self.ring.batch()) {
                super::sys::set_fifo(p).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{ENV_WORKER_FIFO}={p}: cannot make the worker thread SCHED_FIFO: {e}"),
                    )
                })?;
                self.realtime = Some(true);
            }
        }
        Ok(st)
    }

    fn peek_batch<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, f: F) {
        self.ring.peek(max, f);
    }

    fn ring_drops(&mut self) -> u64 {
        self.ring.ring_drops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(vars: &[(&str, &str)]) -> Result<RxLayout, String> {
        rx_layout(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    /// V2 unless asked; V3 with its defaults or the given block and
    /// timeout; every bad value is refused naming its variable.
    #[test]
    fn rx_layout_reads_the_knobs() {
        assert_eq!(layout(&[]), Ok(RxLayout::V2));
        assert_eq!(layout(&[(ENV_VERSION, "2")]), Ok(RxLayout::V2));
        assert_eq!(
            layout(&[(ENV_VERSION, "3")]),
            Ok(RxLayout::V3 {
                block_size: 128 << 10,
                timeout_ms: 1
            })
        );
        assert_eq!(
            layout(&[(ENV_VERSION, "3"), (ENV_BLOCK_KB, "1024"), (ENV_TIMEOUT_MS, "4")]),
            Ok(RxLayout::V3 {
                block_size: 1 << 20,
                timeout_ms: 4
            })
        );
        for (vars, names) in [
            (&[(ENV_VERSION, "1")][..], ENV_VERSION),
            (&[(ENV_VERSION, "4")][..], ENV_VERSION),
            (&[(ENV_VERSION, "three")][..], ENV_VERSION),
            (&[(ENV_VERSION, "3"), (ENV_BLOCK_KB, "64")][..], ENV_BLOCK_KB),
            (&[(ENV_VERSION, "3"), (ENV_BLOCK_KB, "8192")][..], ENV_BLOCK_KB),
            (&[(ENV_VERSION, "3"), (ENV_BLOCK_KB, "384")][..], ENV_BLOCK_KB),
            (&[(ENV_VERSION, "3"), (ENV_TIMEOUT_MS, "0")][..], ENV_TIMEOUT_MS),
            (
                &[(ENV_VERSION, "3"), (ENV_TIMEOUT_MS, "1001")][..],
                ENV_TIMEOUT_MS,
            ),
            (&[(ENV_BLOCK_KB, "256")][..], ENV_BLOCK_KB),
            (&[(ENV_TIMEOUT_MS, "2")][..], ENV_TIMEOUT_MS),
        ] {
            let e = layout(vars).unwrap_err();
            assert!(e.starts_with(names), "{vars:?}: {e}");
        }
    }

    fn fifo(v: Option<&str>) -> Result<WorkerFifo, String> {
        worker_fifo(|name| (name == ENV_WORKER_FIFO).then(|| v.map(str::to_string)).flatten())
    }

    /// Unset: the default priority (given up where not permitted); 0: the
    /// normal policy; 1 to 99: that priority, required; anything else is
    /// refused naming the variable.
    #[test]
    fn worker_fifo_reads_the_knob() {
        assert_eq!(fifo(None), Ok(WorkerFifo::Default(DEFAULT_WORKER_FIFO)));
        assert_eq!(fifo(Some("0")), Ok(WorkerFifo::Off));
        assert_eq!(fifo(Some("1")), Ok(WorkerFifo::Set(1)));
        assert_eq!(fifo(Some(" 99 ")), Ok(WorkerFifo::Set(99)));
        for bad in ["100", "-1", "high", ""] {
            let e = fifo(Some(bad)).unwrap_err();
            assert!(e.starts_with(ENV_WORKER_FIFO), "{bad:?}: {e}");
        }
    }

    /// With the knob, the worker thread is real-time exactly while a batch
    /// came back full and the ring still holds frames, and back under the
    /// normal policy before it would sleep. A real ring on `lo` (root).
    #[test]
    fn worker_fifo_follows_the_backlog() {
        use crate::io::sys::{self, if_info, RawSocket};
        const ETHERTYPE: u16 = 0x88b6;
        std::thread::spawn(|| {
            let lo = if_info("lo").expect("lo");
            let dev = match PacketDevice::open(lo.index, RingConfig::default()) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    eprintln!("skipped: an AF_PACKET ring needs root");
                    return;
                }
                r => r.expect("ring on lo"),
            };
            let mut dev = dev.with_fifo(WorkerFifo::Set(1));
            let tx = RawSocket::new(lo.index, ETHERTYPE).expect("socket on lo");
            // Empty the ring and wait on it: back to the normal policy
            // (tried a few times: another test's frame on lo may land
            // between the two).
            let idle = |dev: &mut PacketDevice| {
                for _ in 0..20 {
                    while dev.ring.ready() {
                        dev.process_batch(64, |_, _| Action::Drop).expect("drain");
                    }
                    dev.wait(0).expect("wait");
                    if !sys::is_fifo() {
                        return true;
                    }
                }
                false
            };
            // The first wait checks the policy can be set, then leaves it.
            assert!(idle(&mut dev), "normal policy while idle");
            let mut frame = vec![0u8; 60];
            frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
            for _ in 0..100 {
                tx.send(&frame).expect("send on lo");
            }
            dev.wait(50).expect("wait");
            let st = dev.process_batch(64, |_, _| Action::Drop).expect("batch");
            assert_eq!(st.received, 64);
            assert!(sys::is_fifo(), "real-time with a backlog");
            // The rest of the backlog: still real-time until the ring is empty.
            dev.wait(0).expect("wait");
            assert!(sys::is_fifo());
            assert!(idle(&mut dev), "normal policy before sleeping");
        })
        .join()
        .expect("test thread");
    }

    /// The assembled program is, instruction for instruction, the
    /// hand-numbered listing it replaced (code, jt, jf, k).
    #[test]
    fn fanout_program_is_the_listing() {
        #[rustfmt::skip]
        let listing: [(u16, u8, u8, u32); 42] = [
            (0x30, 0, 0, net(0)), (0x54, 0, 0, 0xf0), (0x15, 39, 0, 0x60),
            (0x30, 0, 0, net(9)), (0x15, 0, 13, 1),
            (0x20, 0, 0, net(40)), (0x07, 0, 0, 0), (0x20, 0, 0, net(44)), (0xac, 0, 0, 0),
            (0x02, 0, 0, 0), (0x28, 0, 0, net(48)), (0x07, 0, 0, 0), (0x28, 0, 0, net(50)),
            (0xac, 0, 0, 0), (0x07, 0, 0, 0), (0x60, 0, 0, 0), (0xac, 0, 0, 0), (0x05, 0, 0, 20),
            (0x28, 0, 0, net(6)), (0x54, 0, 0, 0x3fff), (0x15, 5, 0, 0),
            (0x20, 0, 0, net(12)), (0x07, 0, 0, 0), (0x20, 0, 0, net(16)), (0xac, 0, 0, 0),
            (0x05, 0, 0, 12),
            (0x20, 0, 0, net(12)), (0x07, 0, 0, 0), (0x20, 0, 0, net(16)), (0xac, 0, 0, 0),
            (0x02, 0, 0, 0), (0x28, 0, 0, net(20)), (0x07, 0, 0, 0), (0x28, 0, 0, net(22)),
            (0xac, 0, 0, 0), (0x07, 0, 0, 0), (0x60, 0, 0, 0), (0xac, 0, 0, 0),
            (0x07, 0, 0, 0), (0x74, 0, 0, 16), (0xac, 0, 0, 0), (0x16, 0, 0, 0),
        ];
        let got: Vec<_> = fanout_program()
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect();
        assert_eq!(got[..42], listing);
        // The IPv6 part: next header 58 or not, 8 address words from 8 or
        // from the quote at 56, the fold.
        let words = |at: i32| {
            let mut v = vec![(0x20, 0, 0, net(at))];
            for w in 1..8 {
                v.extend([(0x07, 0, 0, 0), (0x20, 0, 0, net(at + 4 * w)), (0xac, 0, 0, 0)]);
            }
            v
        };
        let mut v6: Vec<(u16, u8, u8, u32)> = vec![(0x30, 0, 0, net(6)), (0x15, 23, 0, 58)];
        v6.extend(words(8));
        v6.push((0x05, 0, 0, 22));
        v6.extend(words(56));
        v6.extend([
            (0x07, 0, 0, 0),
            (0x74, 0, 0, 16),
            (0xac, 0, 0, 0),
            (0x16, 0, 0, 0),
        ]);
        assert_eq!(got[42..], v6[..]);
    }

    /// Run a classic BPF program over an Ethernet frame the way the kernel
    /// does for the opcodes the fanout uses (`SKF_NET_OFF` loads are relative
    /// to the IPv4 header at 14); a load past the end returns 0.
    fn run(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        let (mut a, mut x, mut m0, mut pc) = (0u32, 0u32, 0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            let at = |k: u32| (k as i32 - libc::SKF_NET_OFF) as usize + 14;
            let load = |k: u32, n: usize| frame.get(at(k)..at(k) + n);
            match i.code {
                0x30 | 0x28 | 0x20 => {
                    let n = match i.code {
                        0x30 => 1,
                        0x28 => 2,
                        _ => 4,
                    };
                    let Some(b) = load(i.k, n) else { return 0 };
                    a = b.iter().fold(0, |v, &b| v << 8 | u32::from(b));
                }
                0x07 => x = a,
                0xac => a ^= x,
                0x02 => m0 = a,
                0x60 => a = m0,
                0x54 => a &= i.k,
                0x74 => a >>= i.k,
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x05 => pc += i.k as usize,
                0x16 => return a,
                c => panic!("opcode {c:#x} not interpreted"),
            }
        }
    }

    /// Both directions of a flow, every fragment of a datagram, and an ICMP
    /// error quoting a flow reach the same worker.
    #[test]
    fn fanout_keeps_flows_fragments_and_errors_together() {
        use crate::wire::builder::{proto, PacketBuilder};
        use crate::wire::{icmp, tcp};
        let p = fanout_program();
        let (client, vip, router) = ([203, 0, 113, 7], [198, 18, 100, 1], [192, 0, 2, 1]);
        let to_vip = PacketBuilder::new(client, vip).tcp(40000, 80, tcp::SYN, &[]);
        let back = PacketBuilder::new(vip, client).tcp(80, 40000, tcp::SYN | tcp::ACK, &[]);
        let other = PacketBuilder::new(client, vip).tcp(40001, 80, tcp::SYN, &[]);
        let h = run(&p, &to_vip);
        assert_eq!(run(&p, &back), h);
        assert_ne!(run(&p, &other), h, "the port takes part");
        // The error quotes the packet VIP:80 -> client:40000 (header + 8 bytes).
        let err = PacketBuilder::new(router, vip).icmp(icmp::DEST_UNREACHABLE, 4, [0; 4], &back[14..42]);
        assert_eq!(run(&p, &err), h);
        // Fragments: the first one carries the ports, later ones do not.
        let b = PacketBuilder::new(client, vip).ident(9).df(false);
        let udp = b.udp_datagram(5000, 53, &[7; 40]);
        let frags = b.fragments(proto::UDP, &udp, &[24]);
        assert_eq!(run(&p, &frags[0]), run(&p, &frags[1]));
        // Not IPv4 enough to hash: worker 0.
        assert_eq!(run(&p, &to_vip[..20]), 0);
    }

    /// IPv6: both directions, every port of one client-VIP pair, every
    /// fragment, and an ICMPv6 error quoting the flow meet one worker;
    /// another client address goes elsewhere.
    #[test]
    fn fanout_keeps_v6_flows_fragments_and_errors_together() {
        use crate::wire::builder::{Ext6, PacketBuilder6};
        use crate::wire::ipv6::next_header;
        use crate::wire::tcp;
        use std::net::Ipv6Addr;
        let p = fanout_program();
        let client: Ipv6Addr = "2001:db8:200::7".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let router: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let to_vip = PacketBuilder6::new(client, vip).tcp(40000, 80, tcp::SYN, &[]);
        let back = PacketBuilder6::new(vip, client).tcp(80, 40000, tcp::SYN | tcp::ACK, &[]);
        let h = run(&p, &to_vip);
        assert_ne!(h, 0);
        assert_eq!(run(&p, &back), h);
        let other: Ipv6Addr = "2001:db8:200::8".parse().unwrap();
        assert_ne!(
            run(&p, &PacketBuilder6::new(other, vip).tcp(40000, 80, tcp::SYN, &[])),
            h
        );
        let frag = PacketBuilder6::new(client, vip)
            .ext(Ext6::Fragment {
                offset: 64,
                more: false,
                ident: 9,
            })
            .ip(next_header::UDP, &[0; 16]);
        assert_eq!(run(&p, &frag), h);
        // Packet Too Big from a router, quoting VIP -> client.
        let ptb = PacketBuilder6::new(router, vip).icmpv6(2, 0, 1280u32.to_be_bytes(), &back[14..]);
        assert_eq!(run(&p, &ptb), h);
        // An IPv6 header cut short: a load fails, worker 0.
        assert_eq!(run(&p, &to_vip[..14 + 20]), 0);
    }
    /// [`fanout_hash`] is what the program returns, on many tuples of both
    /// protocols and directions.
    #[test]
    fn fanout_hash_matches_the_program() {
        use crate::wire::builder::PacketBuilder;
        use crate::wire::tcp;
        let p = fanout_program();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..5000u32 {
            // xorshift64: spread tuples without a rand dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (src, dst) = ((x >> 32) as u32, x as u32 ^ i);
            let (sport, dport) = ((x >> 16) as u16, (x >> 5) as u16);
            let b = PacketBuilder::new(src.to_be_bytes(), dst.to_be_bytes());
            let frame = if i % 2 == 0 {
                b.tcp(sport, dport, tcp::SYN, &[])
            } else {
                b.udp(sport, dport, &[1, 2, 3])
            };
            let h = fanout_hash(src, dst, sport, dport);
            assert_eq!(run(&p, &frame), h, "{src:#x} {dst:#x} {sport} {dport}");
            assert_eq!(fanout_hash(dst, src, dport, sport), h, "symmetric");
        }
    }

    /// [`fanout_hash6`] is what the program returns for IPv6 TCP and UDP
    /// packets, whatever their ports.
    #[test]
    fn fanout_hash6_matches_the_program() {
        use crate::wire::builder::PacketBuilder6;
        use crate::wire::tcp;
        use std::net::Ipv6Addr;
        let p = fanout_program();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..2000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = 0x2001_0db8_0200_u128 << 80 | u128::from(x) << 8 | u128::from(i);
            let dst = 0x2001_0db8_0100_u128 << 80 | u128::from(x.rotate_left(29));
            let b = PacketBuilder6::new(Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let (sport, dport) = ((x >> 16) as u16, (x >> 5) as u16);
            let frame = if i % 2 == 0 {
                b.tcp(sport, dport, tcp::SYN, &[])
            } else {
                b.udp(sport, dport, &[1, 2, 3])
            };
            let h = fanout_hash6(src, dst);
            assert_eq!(run(&p, &frame), h, "{src:#x} {dst:#x}");
            assert_eq!(fanout_hash6(dst, src), h, "symmetric");
        }
    }
}
