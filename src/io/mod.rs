//! Frame I/O behind the [`Device`] trait (fast path).
//!
//! The same worker runs on an AF_PACKET ring ([`packet_ring`]) in production
//! and on an in-memory device ([`mem`]) in tests, so the fast path is testable
//! without root; [`xdp`] is the AF_XDP device. All `unsafe` code of the crate
//! is in [`sys`].

pub mod bpf;
pub mod mem;
pub mod packet_ring;
#[allow(unsafe_code)]
pub mod sys;
pub mod xdp;

/// `sll_pkttype` values (linux/if_packet.h).
pub mod pkttype {
    /// Addressed to this host's MAC.
    pub const HOST: u8 = 0;
    pub const BROADCAST: u8 = 1;
    pub const MULTICAST: u8 = 2;
    /// Addressed to another host (seen because of promiscuous mode or flooding).
    pub const OTHERHOST: u8 = 3;
    pub const OUTGOING: u8 = 4;
}

/// The `virtio_net_hdr` that travels with each frame when `PACKET_VNET_HDR`
/// is on: it says whether the checksum still has to be completed
/// (`NEEDS_CSUM`) and whether the frame is a GSO super-frame that the kernel
/// must segment on the way out. Passing it through unchanged is what makes
/// partial checksums and super-frames leave the director correct.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    pub const GSO_ECN: u8 = 0x80;

    /// Parse from the 10 bytes the kernel wrote (host byte order: the kernel
    /// uses little-endian "legacy" virtio headers on little-endian hosts).
    pub fn parse(b: &[u8; Self::LEN]) -> Self {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }

    pub fn write(&self, out: &mut [u8; Self::LEN]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// True when the checksum is partial (only the pseudo-header sum is in
    /// the transport checksum field).
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// True for a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }
}

/// What the device said about a received frame besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// One of [`pkttype`].
    pub pkttype: u8,
    /// A VLAN tag the kernel stripped into metadata, if any.
    pub vlan_tci: Option<u16>,
    /// The frame was cut short by the ring's slot size.
    pub truncated: bool,
}

/// One frame in a device buffer, with headroom in front so that rewrites can
/// prepend headers (IP-in-IP) without copying.
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
    pub meta: RxMeta,
    pub vnet: VnetHdr,
}

impl<'a> Frame<'a> {
    /// `buf[head..head + len]` is the frame; the bytes before `head` are
    /// headroom, of which the last [`VnetHdr::LEN`] stay reserved for the
    /// device.
    ///
    /// # Panics
    /// If `head + len > buf.len()` or `head < VnetHdr::LEN`.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize, meta: RxMeta, vnet: VnetHdr) -> Self {
        assert!(head >= VnetHdr::LEN && head + len <= buf.len());
        Frame {
            buf,
            head,
            len,
            meta,
            vnet,
        }
    }
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn head(&self) -> usize {
        self.head
    }
    /// Bytes that can be prepended.
    pub fn headroom(&self) -> usize {
        self.head - VnetHdr::LEN
    }
    /// Grow the frame by `n` bytes at the front (uninitialised content).
    /// Returns false, changing nothing, when the headroom is too small.
    pub fn push_front(&mut self, n: usize) -> bool {
        if self.headroom() < n {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }
    /// Set the frame length; returns false when it would not fit the buffer.
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.head + len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }
    /// The raw buffer and the frame's start, for devices.
    pub fn parts(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.head, self.len)
    }
}

/// What the worker decided for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave it (the kernel's own copy continues up its stack, if any).
    Drop,
    /// Send the (rewritten) frame out of the same interface.
    Transmit,
}

/// Extra frames built during a batch (software segmentation of super-frames
/// for IP-in-IP, which the kernel cannot segment from a vnet header). The
/// memory is allocated once; frames pushed here are sent with the batch.
pub struct TxArena {
    buf: Box<[u8]>,
    used: usize,
    frames: Vec<(usize, usize)>,
}

impl TxArena {
    /// An arena of `bytes` bytes for at most `max_frames` frames.
    pub fn new(bytes: usize, max_frames: usize) -> Self {
        TxArena {
            buf: vec![0u8; bytes].into_boxed_slice(),
            used: 0,
            frames: Vec::with_capacity(max_frames),
        }
    }

    /// Forget every frame (after they were sent).
    pub fn clear(&mut self) {
        self.used = 0;
        self.frames.clear();
    }

    /// Reserve a frame of `len` bytes, preceded by a zeroed vnet header (a
    /// complete frame needing no offload). `None` when full.
    pub fn push(&mut self, len: usize) -> Option<&mut [u8]> {
        let need = VnetHdr::LEN + len;
        if self.frames.len() == self.frames.capacity() || self.used + need > self.buf.len() {
            return None;
        }
        let start = self.used;
        self.buf[start..start + VnetHdr::LEN].fill(0);
        self.frames.push((start, need));
        self.used += need;
        Some(&mut self.buf[start + VnetHdr::LEN..start + need])
    }

    /// Forget the frames pushed after the first `frames` (a rewrite that
    /// fails half way must not send a partial set).
    pub fn truncate(&mut self, frames: usize) {
        if let Some(&(start, _)) = self.frames.get(frames) {
            self.used = start;
            self.frames.truncate(frames);
        }
    }

    /// Number of frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frame `i` with its vnet header in front.
    pub fn frame_with_vnet(&mut self, i: usize) -> &mut [u8] {
        let (s, l) = self.frames[i];
        &mut self.buf[s..s + l]
    }
}

/// Totals of one [`Device::process_batch`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub received: usize,
    pub sent: usize,
    pub tx_failed: usize,
}

/// An IPv4 flow a device may forward by itself, without the worker (the
/// XDP fast path for established DR flows): its 5-tuple (host order) and
/// the MACs its frames get. Removal and expiry look at the 5-tuple only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastFlow {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// The server's MAC.
    pub dst_mac: [u8; 6],
    /// The director's MAC.
    pub src_mac: [u8; 6],
    /// The backend id (for the record; the device does not use it).
    pub backend: u32,
}

/// A source and sink of frames for one worker.
pub trait Device {
    /// Block up to `timeout_ms` until frames may be ready.
    ///
    /// # Errors
    /// The underlying poll failed (not a timeout).
    fn wait(&mut self, timeout_ms: i32) -> std::io::Result<()>;

    /// Take up to `max` received frames, call `f` on each (it may rewrite the
    /// frame in place, or add frames to the arena), transmit those for which
    /// it returns [`Action::Transmit`] and the arena's frames in one batch,
    /// then give the buffers back.
    ///
    /// # Errors
    /// Only for device-level failures; per-frame send failures are counted in
    /// [`BatchStats::tx_failed`].
    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        f: F,
    ) -> std::io::Result<BatchStats>;

    /// Call `f` on the bytes and metadata of each of (up to `max` of) the
    /// frames the next [`Device::process_batch`] will take, in order, without
    /// taking them: the worker reads their headers to prefetch the flow
    /// table lines handling them will read. A device that cannot look
    /// ahead calls nothing (the default); the frames are handled alike
    /// either way.
    fn peek_batch<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, f: F) {
        let _ = (max, f);
    }

    /// Frames the kernel dropped because the ring was full, since the last call.
    fn ring_drops(&mut self) -> u64 {
        0
    }

    /// True when the device can forward established DR flows by itself
    /// ([`FastFlow`]); the worker then hands it flows after each batch.
    fn fast_path(&self) -> bool {
        false
    }

    /// Forward these flows' frames without the worker from now on (frames
    /// that start or end a connection still come to the worker). Called
    /// after a batch's frames were sent; failures are the device's to count.
    fn fast_install(&mut self, _flows: &[FastFlow]) {}

    /// Give these flows' frames back to the worker.
    fn fast_remove(&mut self, _flows: &[FastFlow]) {}

    /// The worker is about to expire `flow` after `timeout_ms` idle: if the
    /// device forwarded a frame of it within that time, return how long ago
    /// (ms) and keep it; else forget it (if it had it) and return `None`.
    fn fast_keep(&mut self, _flow: &FastFlow, _timeout_ms: u32) -> Option<u32> {
        None
    }

    /// How long ago (ms) the device last forwarded a frame of `flow` by
    /// itself; `None` when it does not hold the flow or never forwarded a
    /// frame of it. Unlike [`Device::fast_keep`] it changes nothing: the
    /// flow-sync refresh walk asks it, so that a flow alive only in the
    /// fast path refreshes the peers' copies with its true idle time.
    fn fast_idle(&mut self, _flow: &FastFlow) -> Option<u32> {
        None
    }
}
