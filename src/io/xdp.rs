//! The AF_XDP [`Device`] and the XDP program that feeds it. The program and
//! its maps are set up by the slow path ([`XdpRedirect`]); the device runs on
//! the fast path. The mechanics (bpf(2), UMEM, rings) are in
//! [`super::sys::xdp`]; this file holds the policy: the program's text, which
//! addresses it redirects, and what a frame from AF_XDP lacks compared with
//! one from the AF_PACKET ring.
//!
//! The program redirects IPv4 and IPv6 frames to a VIP (and, for NAT, from
//! a real server to anyone but the director) to the AF_XDP socket of the RX
//! queue they arrived on, through an XSKMAP; everything else, ARP and
//! IPv6 Neighbor Discovery included, goes on to the kernel and the slow
//! path as before. The two families have a map each (4- and 16-byte keys),
//! both filled by the slow path on every publish ([`XdpRedirect::set_addresses`],
//! [`XdpRedirect::set_addresses6`]).
//!
//! One flow, one worker: a frame goes to the socket of the queue it arrived
//! on and each queue has one worker, so a flow stays on one worker as long
//! as the NIC puts it on one queue. With one queue (veth, the test bed) that
//! is always so. With several, the NIC's RSS decides, and for IPv6 two
//! defaults matter: many NICs hash UDP over IPv6 on the addresses only
//! (`ethtool -n DEV rx-flow-hash udp6` says), which keeps a flow together;
//! with `sdfn` (addresses and ports), a fragmented datagram's later
//! fragments, which carry no ports, are hashed on the addresses alone and
//! may reach another queue than its first fragment, whose worker holds the
//! fragment table entry. For UDP services that see fragments, set
//! `ethtool -N DEV rx-flow-hash udp6 sd` (and `udp4 sd` for IPv4). TCP is
//! hashed on four fields and is not fragmented by well-behaved senders
//! (PMTU discovery); ICMPv6 errors quoting a flow are hashed on their own
//! addresses, not the flow's, so with several queues they can reach another
//! worker, as their IPv4 counterparts can.
//!
//! Frames from AF_XDP carry no vnet header. A sender on the same host (a
//! veth peer, as in the test bed) may use checksum offload: its TCP and UDP
//! segments hold only the pseudo-header sum, and the kernel does not finish
//! it before XDP sees the bytes. Forwarded as they are, the real server
//! would drop them. On such software links only ([`software_link`]: AF_XDP
//! gives no checksum status, so the link must tell),
//! [`complete_partial_checksum`] recognises such a frame and completes its
//! checksum in place before the worker sees it (see the functions for why
//! the test cannot misfire on a correct frame, and what a hardware link's
//! corrupt frame gets instead). GSO
//! super-frames cannot arrive: an XDP program without multi-buffer support
//! makes veth turn GSO off on its peer, and other drivers hand XDP single
//! MTU-sized frames.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::bpf::{self, Branch};
use super::sys::xdp::{self as sys, BpfMap, Insn, MapKind, XdpError, XdpMode, XskConfig, XskSocket};
use super::sys::Fd;
use super::{pkttype, Action, BatchStats, Device, FastFlow, Frame, RxMeta, TxArena};
use crate::fwd::table::MAX_BACKEND_IDS;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::ipv4::{self, Protocol};
use crate::wire::{checksum, ipv6, tcp, udp};

/// Map value bits: redirect frames whose destination / source is the key.
const TO_ADDR: u32 = 1;
const FROM_ADDR: u32 = 2;
/// IPv6 map only: an address of the director itself. A frame to it is
/// never taken as a NAT reply (the IPv4 program compares with the one
/// address it was built with; an IPv6 interface has several, and they can
/// change, so they live in the map).
const OWN_ADDR: u32 = 4;
/// Most addresses in the redirect map (VIPs plus NAT real servers).
pub const MAX_ADDRS: u32 = 65536;
/// XDP verdicts.
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;

// ---------------------------------------------------------------- the program

mod op {
    pub const MOV64_IMM: u8 = 0xb7;
    pub const MOV64_REG: u8 = 0xbf;
    pub const ADD64_IMM: u8 = 0x07;
    pub const AND64_IMM: u8 = 0x57;
    pub const LDXW: u8 = 0x61;
    pub const LDXH: u8 = 0x69;
    pub const STXW: u8 = 0x63;
    pub const STXH: u8 = 0x6b;
    pub const STH_IMM: u8 = 0x6a;
    pub const STDW_IMM: u8 = 0x7a;
    pub const STW_IMM: u8 = 0x62;
    pub const ADD64_REG: u8 = 0x0f;
    pub const LSH64_IMM: u8 = 0x67;
    pub const RSH64_IMM: u8 = 0x77;
    /// BPF_ALU | BPF_END | BPF_TO_BE: byte-swap on a little-endian host.
    pub const BE: u8 = 0xdc;
    pub const JEQ_REG: u8 = 0x1d;
    pub const JLT_IMM: u8 = 0xa5;
    pub const LD_IMM64: u8 = 0x18;
    pub const JGT_REG: u8 = 0x2d;
    pub const JEQ_IMM: u8 = 0x15;
    pub const JNE_IMM: u8 = 0x55;
    pub const JGT_IMM: u8 = 0x25;
    pub const JGE_IMM: u8 = 0x35;
    pub const JA: u8 = 0x05;
    pub const LDXB: u8 = 0x71;
    pub const LDXDW: u8 = 0x79;
    pub const STXDW: u8 = 0x7b;
    /// 32-bit compares (BPF_JMP32): the immediate is not sign-extended.
    pub const JEQ32_IMM: u8 = 0x16;
    pub const JNE32_IMM: u8 = 0x56;
    pub const CALL: u8 = 0x85;
    pub const EXIT: u8 = 0x95;
    /// `src_reg` of LD_IMM64 meaning "the immediate is a map fd".
    pub const PSEUDO_MAP_FD: u8 = 1;
    /// `src_reg` of CALL meaning "the immediate is a kernel function's BTF id".
    pub const PSEUDO_KFUNC_CALL: u8 = 2;
}

/// Helper function ids (`enum bpf_func_id`).
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;
const REDIRECT: i32 = 23;
const REDIRECT_MAP: i32 = 51;
const XDP_ADJUST_META: i32 = 54;
/// The kernel function that reports a VLAN tag the driver stripped.
const VLAN_KFUNC: &str = "bpf_xdp_metadata_rx_vlan_tag";
/// First 16 bits (host order) of the 4 bytes of XDP metadata in front of a
/// frame whose VLAN tag the driver stripped; the tag follows.
const META_VLAN: u16 = 0x564c;

/// Jump targets of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Ipv4,
    Ipv6,
    V6Dst,
    V6Source,
    V6SourceLookup,
    Fast4,
    Fast4Key,
    FastUdpSum,
    FastCmp,
    FastTx,
    FastMiss,
    Source,
    Redirect,
    Send,
    Pass,
}

/// The crate's labelled assembler with eBPF's operand order spelled out.
struct Asm(bpf::Asm<Insn, Label>);

impl Asm {
    fn i(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.0.push(Insn::new(code, dst, src, off, imm));
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.0
            .push_jump(Insn::new(code, dst, src, 0, imm), Branch::Always, to);
    }
    fn label(&mut self, l: Label) {
        self.0.label(l);
    }
    fn map_fd(&mut self, dst: u8, fd: RawFd) {
        self.i(op::LD_IMM64, dst, op::PSEUDO_MAP_FD, 0, fd);
        self.i(0, 0, 0, 0, 0);
    }
}

/// The XDP program: redirect to the XSKMAP slot of the frame's RX queue
/// when the IPv4 destination is in `addrs` with [`TO_ADDR`], or the source
/// is there with [`FROM_ADDR`] and the destination is not `own_ip`; else
/// pass. IPv6 frames are matched the same way in `addrs6` (see
/// [`ipv6_part`]). `fallback` is the verdict when the queue has no socket
/// (XDP_PASS in service: the kernel's drop rule then takes the frame).
///
/// Two kinds of frames go to the worker although the kernel would drop
/// them as well, so that the worker counts them under the same names as on
/// AF_PACKET: IPv4 frames too short for an IPv4 header (`runt`), and
/// 802.1Q-tagged frames to a VIP (`vlan`). A tag can come inside the frame,
/// or stripped by the driver (veth does, as AF_PACKET then reports): with
/// `vlan_kfunc` (the BTF id of [`VLAN_KFUNC`]; the program must then be
/// bound to the device) the program asks for a stripped tag and hands it to
/// the device in 4 bytes of XDP metadata ([`META_VLAN`], tag), or passes the
/// frame to the kernel when the driver keeps no metadata. Without the tag,
/// such a frame would be forwarded as if untagged.
fn program(
    addrs: RawFd,
    addrs6: RawFd,
    xsks: RawFd,
    own_ip: Option<u32>,
    fallback: i32,
    vlan_kfunc: Option<u32>,
    fast: Option<FastMaps>,
) -> Vec<Insn> {
    use Label::*;
    // Registers: r6 ctx, r7 data, r8 destination, r9 source (callee-saved).
    let mut a = Asm(bpf::Asm::new());
    a.i(op::MOV64_REG, 6, 1, 0, 0);
    a.i(op::LDXW, 7, 6, 0, 0); // data
    a.i(op::LDXW, 3, 6, 4, 0); // data_end
    let ipv4 = i32::from(u16::from_le_bytes([0x08, 0x00]));
    let ipv6 = i32::from(u16::from_le_bytes([0x86, 0xdd]));
    let vlan = i32::from(u16::from_le_bytes([0x81, 0x00]));
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 14);
    a.jump(op::JGT_REG, 4, 3, 0, Pass);
    a.i(op::LDXH, 5, 7, 12, 0);
    // Untagged IPv4 tries the fast path first (when there is one).
    a.jump(
        op::JEQ32_IMM,
        5,
        0,
        ipv4,
        if fast.is_some() { Fast4 } else { Ipv4 },
    );
    a.jump(op::JEQ32_IMM, 5, 0, ipv6, Ipv6);
    a.jump(op::JNE32_IMM, 5, 0, vlan, Pass);
    // 802.1Q: look past the tag.
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 18);
    a.jump(op::JGT_REG, 4, 3, 0, Pass);
    a.i(op::LDXH, 5, 7, 16, 0);
    a.i(op::ADD64_IMM, 7, 0, 0, 4); // the IP header starts 4 bytes later
    a.jump(op::JEQ32_IMM, 5, 0, ipv4, Ipv4);
    a.jump(op::JNE32_IMM, 5, 0, ipv6, Pass);
    ipv6_part(&mut a, addrs6);
    if let Some(maps) = fast {
        fast_part(&mut a, maps);
    }
    a.label(Ipv4);
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 34); // Ethernet + IPv4 up to the destination
    a.jump(op::JGT_REG, 4, 3, 0, Redirect); // an IPv4 runt
    a.i(op::LDXW, 8, 7, 30, 0);
    a.i(op::LDXW, 9, 7, 26, 0);
    // Destination lookup.
    a.i(op::STXW, 10, 8, -4, 0);
    a.i(op::MOV64_REG, 2, 10, 0, 0);
    a.i(op::ADD64_IMM, 2, 0, 0, -4);
    a.map_fd(1, addrs);
    a.i(op::CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    a.jump(op::JEQ_IMM, 0, 0, 0, Source);
    a.i(op::LDXW, 1, 0, 0, 0);
    a.i(op::AND64_IMM, 1, 0, 0, TO_ADDR as i32);
    a.jump(op::JNE_IMM, 1, 0, 0, Redirect);
    // Source lookup (NAT replies), unless addressed to the director itself.
    a.label(Source);
    if let Some(ip) = own_ip {
        a.jump(
            op::JEQ32_IMM,
            8,
            0,
            u32::from_le_bytes(ip.to_be_bytes()) as i32,
            Pass,
        );
    }
    a.i(op::STXW, 10, 9, -4, 0);
    a.i(op::MOV64_REG, 2, 10, 0, 0);
    a.i(op::ADD64_IMM, 2, 0, 0, -4);
    a.map_fd(1, addrs);
    a.i(op::CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    a.jump(op::JEQ_IMM, 0, 0, 0, Pass);
    a.i(op::LDXW, 1, 0, 0, 0);
    a.i(op::AND64_IMM, 1, 0, 0, FROM_ADDR as i32);
    a.jump(op::JEQ_IMM, 1, 0, 0, Pass);
    a.label(Redirect);
    if let Some(id) = vlan_kfunc {
        a.i(op::STDW_IMM, 10, 0, -8, 0);
        a.i(op::MOV64_REG, 1, 6, 0, 0);
        a.i(op::MOV64_REG, 2, 10, 0, 0);
        a.i(op::ADD64_IMM, 2, 0, 0, -8); // __be16 *vlan_proto
        a.i(op::MOV64_REG, 3, 10, 0, 0);
        a.i(op::ADD64_IMM, 3, 0, 0, -6); // u16 *vlan_tci
        a.i(op::CALL, 0, op::PSEUDO_KFUNC_CALL, 0, id as i32);
        a.jump(op::JNE_IMM, 0, 0, 0, Send); // no stripped tag
        a.i(op::MOV64_REG, 1, 6, 0, 0);
        a.i(op::MOV64_IMM, 2, 0, 0, -4);
        a.i(op::CALL, 0, 0, 0, XDP_ADJUST_META);
        a.jump(op::JNE_IMM, 0, 0, 0, Pass); // nowhere to say it: the kernel drops it
        a.i(op::LDXW, 2, 6, 8, 0); // data_meta
        a.i(op::LDXW, 3, 6, 0, 0); // data
        a.i(op::MOV64_REG, 4, 2, 0, 0);
        a.i(op::ADD64_IMM, 4, 0, 0, 4);
        a.jump(op::JGT_REG, 4, 3, 0, Pass);
        a.i(op::STH_IMM, 2, 0, 0, i32::from(META_VLAN));
        a.i(op::LDXH, 5, 10, -6, 0);
        a.i(op::STXH, 2, 5, 2, 0);
    }
    a.label(Send);
    a.i(op::LDXW, 2, 6, 16, 0); // rx_queue_index
    a.map_fd(1, xsks);
    a.i(op::MOV64_IMM, 3, 0, 0, fallback);
    a.i(op::CALL, 0, 0, 0, REDIRECT_MAP);
    a.i(op::EXIT, 0, 0, 0, 0);
    a.label(Pass);
    a.i(op::MOV64_IMM, 0, 0, 0, XDP_PASS);
    a.i(op::EXIT, 0, 0, 0, 0);
    a.0.finish()
}

/// The maps of the XDP fast path ([`fast_part`]).
#[derive(Debug, Clone, Copy)]
struct FastMaps {
    /// LRU hash: [`FAST_KEY_LEN`]-byte flow key -> [`FAST_VALUE_LEN`]-byte value.
    flows: RawFd,
    /// Per-CPU array of one [`FastCounters`] slot.
    counters: RawFd,
    /// Per-CPU array of one [`FastCounters`] slot per backend id (the
    /// per-server counters; see [`fast_server_slots`]).
    servers: RawFd,
    /// How a frame leaves: XDP_TX, or (`Some(ifindex)`) `bpf_redirect` to
    /// the interface itself. On veth XDP_TX reaches the peer only when the
    /// peer has an XDP program of its own (the kernel wakes the peer's NAPI
    /// for XDP_TX only then), while a redirect through `ndo_xdp_xmit` needs
    /// only NAPI there (GRO on); so software links redirect, hardware ones
    /// use XDP_TX, the cheaper verdict.
    redirect_to: Option<i32>,
}

/// The fast path's flow key: IPv4 source, destination, source port,
/// destination port (all as on the wire), protocol, three zero bytes.
pub const FAST_KEY_LEN: usize = 16;
/// Its value: destination MAC (the server's), source MAC (the director's),
/// backend id (native order), then the last time the program forwarded a
/// frame of the flow (`bpf_ktime_get_ns`, native order; 0 = never).
pub const FAST_VALUE_LEN: usize = 24;
/// Where the last-seen time sits in a value.
const FAST_SEEN_AT: usize = 16;
/// Most flows the fast path holds (the least recently used one goes when
/// it is full; its next frame goes to the worker, which installs it again).
pub const FAST_FLOWS: u32 = 1 << 18;

/// Emit: one frame more and its bytes (14 + IPv4 total length, in r9) on
/// the frames/bytes pair r0 points at (a per-CPU map value: plain adds).
fn count_frame(a: &mut Asm) {
    a.i(op::LDXDW, 1, 0, 0, 0);
    a.i(op::ADD64_IMM, 1, 0, 0, 1);
    a.i(op::STXDW, 0, 1, 0, 0);
    a.i(op::LDXDW, 1, 0, 8, 0);
    a.i(op::ADD64_REG, 1, 9, 0, 0);
    a.i(op::ADD64_IMM, 1, 0, 0, 14);
    a.i(op::STXDW, 0, 1, 8, 0);
}

/// The XDP fast path for established DR flows over IPv4, entered at
/// `Fast4` with r7 at an untagged IPv4 frame and r3 at its end; leaves by
/// XDP_TX or falls into `Ipv4` (with r3 reloaded). It sends a frame back
/// out of the interface it came in on, with the server's MAC as destination
/// and the director's as source, exactly what the worker does in DR, when:
/// * the frame holds Ethernet, a 20-byte IPv4 header (IHL 5) and 20 more
///   bytes, and is not a fragment;
/// * it is TCP without SYN, FIN or RST (those are the worker's: they start
///   or end connections), or UDP;
/// * its 5-tuple is in the flow map (installed by a worker for an
///   established DR flow);
/// * its IPv4 total length is at least 40 and within the frame;
/// * its TCP/UDP checksum field is not the bare pseudo-header sum: such a
///   frame comes from a veth peer's checksum offload and only the worker
///   completes it ([`complete_partial_checksum`]). A full checksum that
///   happens to equal that sum just takes the slow path once.
///
/// * the flow's backend id has a slot in the per-server counters (ids
///   beyond them stay with the worker, which counts them itself).
///
/// It then counts the frame and its bytes (Ethernet header plus IPv4 total
/// length) in its server's slot of the per-CPU per-server counters (the
/// director adds them to the server's packets and bytes), writes the time
/// into the entry's last-seen field (the worker's idle expiry and the
/// flow-sync refresh ask for it) and counts the frame again in the per-CPU
/// totals.
///
/// Stack: the key at fp-40..fp-24, the backend id at fp-8, the counter
/// index at fp-4.
fn fast_part(a: &mut Asm, maps: FastMaps) {
    use Label::*;
    a.label(Fast4);
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 54);
    a.jump(op::JGT_REG, 4, 3, 0, Ipv4);
    a.i(op::LDXB, 5, 7, 14, 0);
    a.jump(op::JNE_IMM, 5, 0, 0x45, Ipv4);
    // Flags and fragment offset: MF or an offset makes a fragment (DF is fine).
    a.i(op::LDXH, 5, 7, 20, 0);
    a.i(
        op::AND64_IMM,
        5,
        0,
        0,
        i32::from(u16::from_le_bytes([0x3f, 0xff])),
    );
    a.jump(op::JNE_IMM, 5, 0, 0, Ipv4);
    a.i(op::LDXB, 5, 7, 23, 0);
    a.jump(op::JEQ_IMM, 5, 0, 17, Fast4Key);
    a.jump(op::JNE_IMM, 5, 0, 6, Ipv4);
    a.i(op::LDXB, 5, 7, 47, 0); // TCP flags
    a.i(op::AND64_IMM, 5, 0, 0, i32::from(tcp::FIN | tcp::SYN | tcp::RST));
    a.jump(op::JNE_IMM, 5, 0, 0, Ipv4);
    a.label(Fast4Key);
    for (from, to) in [(26, -40), (30, -36), (34, -32)] {
        a.i(op::LDXW, 1, 7, from, 0);
        a.i(op::STXW, 10, 1, to, 0);
    }
    a.i(op::LDXB, 5, 7, 23, 0);
    a.i(op::STXW, 10, 5, -28, 0); // protocol, then three zero bytes
    a.i(op::MOV64_REG, 2, 10, 0, 0);
    a.i(op::ADD64_IMM, 2, 0, 0, -40);
    a.map_fd(1, maps.flows);
    a.i(op::CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    a.jump(op::JEQ_IMM, 0, 0, 0, FastMiss);
    a.i(op::MOV64_REG, 8, 0, 0, 0);
    // The pseudo-header sum, on 16-bit words as loaded (byte-swapped on a
    // little-endian host: a ones'-complement sum of swapped words is the
    // swapped sum, and the checksum field is loaded the same way).
    a.i(op::LDXH, 1, 7, 26, 0);
    for at in [28, 30, 32] {
        a.i(op::LDXH, 2, 7, at, 0);
        a.i(op::ADD64_REG, 1, 2, 0, 0);
    }
    a.i(op::LDXB, 2, 7, 23, 0);
    a.i(op::LSH64_IMM, 2, 0, 0, 8); // the word (0, protocol), loaded
    a.i(op::ADD64_REG, 1, 2, 0, 0);
    a.i(op::LDXH, 9, 7, 16, 0);
    a.i(op::BE, 9, 0, 0, 16); // total length, host order
    a.jump(op::JLT_IMM, 9, 0, 40, FastMiss);
    a.i(op::MOV64_REG, 2, 9, 0, 0);
    a.i(op::ADD64_IMM, 2, 0, 0, -20);
    a.i(op::BE, 2, 0, 0, 16); // the transport length, as loaded
    a.i(op::ADD64_REG, 1, 2, 0, 0);
    for _ in 0..2 {
        a.i(op::MOV64_REG, 2, 1, 0, 0);
        a.i(op::RSH64_IMM, 2, 0, 0, 16);
        a.i(op::AND64_IMM, 1, 0, 0, 0xffff);
        a.i(op::ADD64_REG, 1, 2, 0, 0);
    }
    a.i(op::LDXB, 5, 7, 23, 0);
    a.jump(op::JEQ_IMM, 5, 0, 17, FastUdpSum);
    a.i(op::LDXH, 2, 7, 14 + 20 + 16, 0);
    a.jump(op::JA, 0, 0, 0, FastCmp);
    a.label(FastUdpSum);
    a.i(op::LDXH, 2, 7, 14 + 20 + 6, 0);
    a.label(FastCmp);
    a.jump(op::JEQ_REG, 1, 2, 0, FastMiss);
    // The IPv4 packet ends within the frame.
    a.i(op::LDXW, 3, 6, 4, 0);
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_REG, 4, 9, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 14);
    a.jump(op::JGT_REG, 4, 3, 0, FastMiss);
    // The server's counters first: without a slot the frame is the
    // worker's, nothing changed yet. Per-CPU, so plain adds.
    a.i(op::LDXW, 1, 8, 12, 0);
    a.i(op::STXW, 10, 1, -8, 0);
    a.i(op::MOV64_REG, 2, 10, 0, 0);
    a.i(op::ADD64_IMM, 2, 0, 0, -8);
    a.map_fd(1, maps.servers);
    a.i(op::CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    a.jump(op::JEQ_IMM, 0, 0, 0, FastMiss);
    count_frame(a);
    // Forward: last seen, MACs, counters, back out.
    a.i(op::CALL, 0, 0, 0, KTIME_GET_NS);
    a.i(op::STXDW, 8, 0, FAST_SEEN_AT as i16, 0);
    a.i(op::LDXW, 1, 8, 0, 0);
    a.i(op::STXW, 7, 1, 0, 0);
    for at in [4, 6] {
        a.i(op::LDXH, 1, 8, at, 0);
        a.i(op::STXH, 7, 1, at, 0);
    }
    a.i(op::LDXW, 1, 8, 8, 0);
    a.i(op::STXW, 7, 1, 8, 0);
    a.i(op::STW_IMM, 10, 0, -4, 0);
    a.i(op::MOV64_REG, 2, 10, 0, 0);
    a.i(op::ADD64_IMM, 2, 0, 0, -4);
    a.map_fd(1, maps.counters);
    a.i(op::CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    a.jump(op::JEQ_IMM, 0, 0, 0, FastTx);
    count_frame(a);
    a.label(FastTx);
    match maps.redirect_to {
        Some(ifindex) => {
            a.i(op::MOV64_IMM, 1, 0, 0, ifindex);
            a.i(op::MOV64_IMM, 2, 0, 0, 0);
            a.i(op::CALL, 0, 0, 0, REDIRECT);
        }
        None => a.i(op::MOV64_IMM, 0, 0, 0, XDP_TX),
    }
    a.i(op::EXIT, 0, 0, 0, 0);
    // Not for the fast path after the lookup: the helper call took r3.
    a.label(FastMiss);
    a.i(op::LDXW, 3, 6, 4, 0);
}

/// The IPv6 part of [`program`], entered at `Ipv6` with r7 at the frame
/// (moved 4 bytes on when 802.1Q-tagged) and r3 at its end; leaves by
/// `Redirect` or `Pass`. The same policy as IPv4, on 16-byte keys in
/// `addrs6`:
/// * an IPv6 header too short to hold the destination goes to the worker,
///   which counts it, as an IPv4 runt does;
/// * Neighbor Discovery (ICMPv6 133-137 right after the IPv6 header) always
///   passes, also when addressed to a VIP (a unicast NS checking a VIP's
///   reachability): the slow path answers it from its own packet socket,
///   exactly as it does ARP, which never matches the redirect either;
/// * the destination is a VIP ([`TO_ADDR`]): redirect; the director's own
///   address ([`OWN_ADDR`]): pass;
/// * else a source that is a NAT real server ([`FROM_ADDR`]) is a NAT reply
///   and is redirected, unless the destination is multicast or link-local
///   (the server's MLD reports, router and neighbour traffic on the link).
///
/// Stack: the 16-byte key at fp-24..fp-8 (the VLAN code after `Redirect`
/// uses fp-8 on).
fn ipv6_part(a: &mut Asm, addrs6: RawFd) {
    use Label::*;
    // The key: 16 bytes of the frame from `at` (relative to r7) at fp-24.
    let key = |a: &mut Asm, at: i16| {
        a.i(op::LDXDW, 1, 7, at, 0);
        a.i(op::STXDW, 10, 1, -24, 0);
        a.i(op::LDXDW, 1, 7, at + 8, 0);
        a.i(op::STXDW, 10, 1, -16, 0);
        a.i(op::MOV64_REG, 2, 10, 0, 0);
        a.i(op::ADD64_IMM, 2, 0, 0, -24);
        a.map_fd(1, addrs6);
        a.i(op::CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    };
    a.label(Ipv6);
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 54); // Ethernet + the whole IPv6 header
    a.jump(op::JGT_REG, 4, 3, 0, Redirect); // an IPv6 runt
    a.i(op::LDXB, 5, 7, 20, 0); // next header
    a.jump(op::JNE_IMM, 5, 0, 58, V6Dst);
    a.i(op::MOV64_REG, 4, 7, 0, 0);
    a.i(op::ADD64_IMM, 4, 0, 0, 55);
    a.jump(op::JGT_REG, 4, 3, 0, V6Dst); // no ICMPv6 type: the worker's to judge
    a.i(op::LDXB, 5, 7, 54, 0);
    a.jump(op::JGT_IMM, 5, 0, 137, V6Dst);
    a.jump(op::JGE_IMM, 5, 0, 133, Pass);
    a.label(V6Dst);
    key(a, 38);
    a.jump(op::JEQ_IMM, 0, 0, 0, V6Source);
    a.i(op::LDXW, 1, 0, 0, 0);
    a.i(op::MOV64_REG, 2, 1, 0, 0);
    a.i(op::AND64_IMM, 2, 0, 0, TO_ADDR as i32);
    a.jump(op::JNE_IMM, 2, 0, 0, Redirect);
    a.i(op::AND64_IMM, 1, 0, 0, OWN_ADDR as i32);
    a.jump(op::JNE_IMM, 1, 0, 0, Pass);
    // Source lookup (NAT replies), not for multicast or link-local
    // destinations (ff00::/8, fe80::/10).
    a.label(V6Source);
    a.i(op::LDXB, 5, 7, 38, 0);
    a.jump(op::JEQ_IMM, 5, 0, 0xff, Pass);
    a.jump(op::JNE_IMM, 5, 0, 0xfe, V6SourceLookup);
    a.i(op::LDXB, 5, 7, 39, 0);
    a.i(op::AND64_IMM, 5, 0, 0, 0xc0);
    a.jump(op::JEQ_IMM, 5, 0, 0x80, Pass);
    a.label(V6SourceLookup);
    key(a, 22);
    a.jump(op::JEQ_IMM, 0, 0, 0, Pass);
    a.i(op::LDXW, 1, 0, 0, 0);
    a.i(op::AND64_IMM, 1, 0, 0, FROM_ADDR as i32);
    a.jump(op::JEQ_IMM, 1, 0, 0, Pass);
    a.jump(op::JA, 0, 0, 0, Redirect);
}

/// The XDP program attached to an interface, with its two maps. The program
/// stays attached while this value (shared by the devices and the slow
/// path) lives, and not a moment longer, even on SIGKILL.
pub struct XdpRedirect {
    addrs: BpfMap,
    addrs6: BpfMap,
    xsks: BpfMap,
    prog: Fd,
    link: Option<Fd>,
    mode: XdpMode,
    queues: u32,
    /// Why driver-stripped VLAN tags are not visible, if they are not.
    vlan_blind: Option<String>,
    current: Mutex<HashMap<u32, u32>>,
    current6: Mutex<HashMap<[u8; 16], u32>>,
    ifindex: i32,
    /// The fast path's maps, when it is on.
    fast: Option<FastPath>,
}

/// The XDP fast path's maps ([`fast_part`]): the flows workers install and
/// the program's counters.
struct FastPath {
    flows: BpfMap,
    counters: BpfMap,
    /// Per server (index: backend id), [`FastPath::server_slots`] of them.
    servers: BpfMap,
    server_slots: u32,
    /// Bumped by every flush: the devices' memory of recent installs
    /// ([`XdpDevice`]) is void after one.
    flushes: AtomicU64,
}

impl XdpRedirect {
    /// Create the maps (an XSKMAP of `queues` slots), load the program and
    /// attach it to `ifindex` (driver mode, else generic).
    ///
    /// # Errors
    /// Not permitted, the verifier refused the program (the error holds its
    /// log), or the interface already has an XDP program.
    ///
    /// `fast`: with the fast path for established DR flows ([`fast_part`]),
    /// its per-server counters having this many slots (backend ids `0..n`;
    /// see [`fast_server_slots`]).
    pub fn load(ifindex: i32, queues: u32, own_ip: Option<u32>, fast: Option<u32>) -> Result<Self, XdpError> {
        // The fast path's way out (see `FastMaps::redirect_to`).
        let redirect = software_link(ifindex).then_some(ifindex);
        // First choice: the program that sees stripped VLAN tags (bound to
        // the device, driver mode only); else the plain one, anywhere.
        let why = match btf_func_id(VLAN_KFUNC) {
            Ok(Some(id)) => {
                match Self::load_detached(queues, own_ip, XDP_PASS, Some((ifindex, id)), fast, redirect)
                    .and_then(|x| Ok((sys::attach_xdp(&x.prog, ifindex, false)?, x)))
                {
                    Ok(((link, mode), mut x)) => {
                        x.ifindex = ifindex;
                        x.link = Some(link);
                        x.mode = mode;
                        return Ok(x);
                    }
                    Err(e) => format!("the program with {VLAN_KFUNC} did not load or attach: {e}"),
                }
            }
            Ok(None) => format!("the kernel has no {VLAN_KFUNC}"),
            Err(e) => format!("cannot read the kernel's BTF: {e}"),
        };
        let mut x = Self::load_detached(queues, own_ip, XDP_PASS, None, fast, redirect)?;
        let (link, mode) = sys::attach_xdp(&x.prog, ifindex, true)?;
        x.ifindex = ifindex;
        x.link = Some(link);
        x.mode = mode;
        x.vlan_blind = Some(why);
        Ok(x)
    }

    /// `vlan`: (interface, BTF id of [`VLAN_KFUNC`]) for the device-bound
    /// program that reads stripped VLAN tags.
    fn load_detached(
        queues: u32,
        own_ip: Option<u32>,
        fallback: i32,
        vlan: Option<(i32, u32)>,
        fast: Option<u32>,
        fast_redirect: Option<i32>,
    ) -> Result<Self, XdpError> {
        let addrs =
            BpfMap::create(MapKind::Hash, 4, 4, MAX_ADDRS, "ulvs_addrs").map_err(|err| XdpError::Sys {
                what: "creating the address map (needs CAP_BPF)",
                err,
            })?;
        let addrs6 =
            BpfMap::create(MapKind::Hash, 16, 4, MAX_ADDRS, "ulvs_addrs6").map_err(|err| XdpError::Sys {
                what: "creating the IPv6 address map",
                err,
            })?;
        let xsks = BpfMap::create(MapKind::XskMap, 4, 4, queues.max(1), "ulvs_xsks").map_err(|err| {
            XdpError::Sys {
                what: "creating the XSKMAP",
                err,
            }
        })?;
        let fast = if let Some(server_slots) = fast {
            let flows = BpfMap::create(
                MapKind::LruHash,
                FAST_KEY_LEN as u32,
                FAST_VALUE_LEN as u32,
                FAST_FLOWS,
                "ulvs_fast",
            )
            .map_err(|err| XdpError::Sys {
                what: "creating the fast path's flow map",
                err,
            })?;
            let counters =
                BpfMap::create(MapKind::PerCpuArray, 4, 16, 1, "ulvs_fast_cnt").map_err(|err| {
                    XdpError::Sys {
                        what: "creating the fast path's counters",
                        err,
                    }
                })?;
            let servers = BpfMap::create(
                MapKind::PerCpuArray,
                4,
                16,
                server_slots.clamp(1, MAX_BACKEND_IDS as u32),
                "ulvs_fast_srv",
            )
            .map_err(|err| XdpError::Sys {
                what: "creating the fast path's per-server counters",
                err,
            })?;
            Some(FastPath {
                flows,
                counters,
                servers,
                server_slots: server_slots.clamp(1, MAX_BACKEND_IDS as u32),
                flushes: AtomicU64::new(0),
            })
        } else {
            None
        };
        let insns = program(
            addrs.as_raw_fd(),
            addrs6.as_raw_fd(),
            xsks.as_raw_fd(),
            own_ip,
            fallback,
            vlan.map(|v| v.1),
            fast.as_ref().map(|f| FastMaps {
                flows: f.flows.as_raw_fd(),
                counters: f.counters.as_raw_fd(),
                servers: f.servers.as_raw_fd(),
                redirect_to: fast_redirect,
            }),
        );
        let prog = sys::load_xdp_program(&insns, "ulvs_redirect", c"GPL", vlan.map(|v| v.0))?;
        Ok(XdpRedirect {
            addrs,
            addrs6,
            xsks,
            prog,
            link: None,
            mode: XdpMode::Native,
            queues,
            vlan_blind: None,
            current: Mutex::new(HashMap::new()),
            current6: Mutex::new(HashMap::new()),
            ifindex: 0,
            fast,
        })
    }

    /// Where the program runs.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// `None` when VLAN tags stripped by the driver reach the workers (as
    /// with AF_PACKET); else why not. Without them a tagged frame to a VIP
    /// is forwarded as if it were untagged.
    pub fn vlan_blind(&self) -> Option<&str> {
        self.vlan_blind.as_deref()
    }

    /// Number of RX queues (XSKMAP slots).
    pub fn queues(&self) -> u32 {
        self.queues
    }

    /// Make the program redirect exactly these: frames to `vips`, and frames
    /// from `nat_sources` (NAT real servers) not addressed to the director.
    /// New entries go in before old ones leave, so a VIP that stays is never
    /// missing.
    ///
    /// # Errors
    /// A map update failed (map full); the map then holds a mix, and the
    /// call can be repeated.
    pub fn set_addresses(&self, vips: &[u32], nat_sources: &[u32]) -> io::Result<()> {
        let mut want: HashMap<u32, u32> = HashMap::new();
        for &v in vips {
            *want.entry(v).or_default() |= TO_ADDR;
        }
        for &s in nat_sources {
            *want.entry(s).or_default() |= FROM_ADDR;
        }
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        sync_map(&self.addrs, &mut cur, &want, |a| a.to_be_bytes())
    }

    /// The IPv6 twin of [`Self::set_addresses`]: frames to `vips`, and from
    /// `nat_sources` not addressed to the director. The director's own
    /// addresses on the interface (read again at every call, so an address
    /// added since start counts) are marked [`OWN_ADDR`]: a NAT server's
    /// frame to them (a health check's reply) stays with the kernel.
    ///
    /// # Errors
    /// As [`Self::set_addresses`].
    ///
    /// Addresses are 128-bit host-order numbers (`u128::from(Ipv6Addr)`), as
    /// the forwarding table and the IPv6 drop rule take them.
    pub fn set_addresses6(&self, vips: &[u128], nat_sources: &[u128]) -> io::Result<()> {
        let own = if self.ifindex > 0 {
            // thread-self: the calling thread's network namespace (plain
            // /proc/net is the main thread's).
            std::fs::read_to_string("/proc/thread-self/net/if_inet6")
                .map(|t| own_ipv6(&t, self.ifindex))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let want = want6(vips, nat_sources, &own);
        let mut cur = self.current6.lock().unwrap_or_else(|e| e.into_inner());
        sync_map(&self.addrs6, &mut cur, &want, |a| *a)
    }

    /// True when the program has the fast path.
    pub fn fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Make the program forward `key`'s frames itself with `value`'s MACs
    /// (see [`FAST_KEY_LEN`], [`FAST_VALUE_LEN`]). Without the fast path,
    /// nothing.
    ///
    /// # Errors
    /// The update failed (an LRU map is never full).
    pub fn fast_install(&self, key: &[u8; FAST_KEY_LEN], value: &[u8; FAST_VALUE_LEN]) -> io::Result<()> {
        match &self.fast {
            Some(f) => f.flows.update(key, value),
            None => Ok(()),
        }
    }

    /// Give `key`'s frames back to the worker; false when it was not there.
    ///
    /// # Errors
    /// The delete failed for another reason.
    pub fn fast_remove(&self, key: &[u8; FAST_KEY_LEN]) -> io::Result<bool> {
        match &self.fast {
            Some(f) => f.flows.delete(key),
            None => Ok(false),
        }
    }

    /// When the program last forwarded a frame of `key` (`CLOCK_MONOTONIC`
    /// nanoseconds, [`sys::monotonic_ns`]); `Some(0)`: installed, not used
    /// yet; `None`: not installed.
    ///
    /// # Errors
    /// The lookup failed.
    pub fn fast_last_seen(&self, key: &[u8; FAST_KEY_LEN]) -> io::Result<Option<u64>> {
        let Some(f) = &self.fast else {
            return Ok(None);
        };
        let mut v = [0u8; FAST_VALUE_LEN];
        if !f.flows.lookup(key, &mut v)? {
            return Ok(None);
        }
        let mut seen = [0u8; 8];
        seen.copy_from_slice(&v[FAST_SEEN_AT..FAST_SEEN_AT + 8]);
        Ok(Some(u64::from_ne_bytes(seen)))
    }

    /// Remove every fast-path flow (the slow path, when the servers
    /// changed): the next frame of each goes to its worker, which decides
    /// afresh and installs it again. Returns how many were removed.
    ///
    /// # Errors
    /// A map operation failed.
    pub fn fast_flush(&self) -> io::Result<usize> {
        match &self.fast {
            Some(f) => {
                f.flushes.fetch_add(1, Ordering::AcqRel);
                f.flows.clear()
            }
            None => Ok(0),
        }
    }

    fn fast_flushes(&self) -> u64 {
        self.fast
            .as_ref()
            .map_or(0, |f| f.flushes.load(Ordering::Acquire))
    }

    /// Frames and bytes the program forwarded itself, summed over CPUs.
    ///
    /// # Errors
    /// The lookup failed.
    pub fn fast_counters(&self) -> io::Result<FastCounters> {
        let Some(f) = &self.fast else {
            return Ok(FastCounters::default());
        };
        let cpus = sys::possible_cpus()?;
        let mut v = vec![0u8; 16 * cpus];
        f.counters.lookup(&0u32.to_ne_bytes(), &mut v)?;
        Ok(sum_per_cpu(&v))
    }

    /// Backend ids with a slot in the per-server counters (`0..n`; 0
    /// without the fast path). A flow to a server beyond them stays with
    /// its worker.
    pub fn fast_server_slots(&self) -> u32 {
        self.fast.as_ref().map_or(0, |f| f.server_slots)
    }

    /// What the program forwarded itself per server, for backend ids
    /// `0..n` (at most [`Self::fast_server_slots`]; index = id), summed
    /// over CPUs. Totals since the program was loaded: a reused id's count
    /// goes on from its previous server's, as the workers' counters do.
    ///
    /// # Errors
    /// A lookup failed.
    pub fn fast_server_counters(&self, n: u32) -> io::Result<Vec<FastCounters>> {
        let Some(f) = &self.fast else {
            return Ok(Vec::new());
        };
        let n = n.min(f.server_slots) as usize;
        let cpus = sys::possible_cpus()?;
        let mut out = vec![FastCounters::default(); n];
        // A bounded batch per call: the values of a per-CPU map are one
        // per possible CPU.
        const CHUNK: usize = 4096;
        let mut keys = vec![0u8; 4 * CHUNK];
        let mut values = vec![0u8; 16 * cpus * CHUNK];
        let mut from = 0usize;
        while from < n {
            let want = (n - from).min(CHUNK);
            let got = f
                .servers
                .lookup_batch_array(from as u32, want, &mut keys, &mut values)?;
            if got == 0 {
                break;
            }
            for i in 0..got {
                let mut k = [0u8; 4];
                k.copy_from_slice(&keys[4 * i..4 * i + 4]);
                let id = u32::from_ne_bytes(k) as usize;
                let Some(slot) = out.get_mut(id) else {
                    continue;
                };
                *slot = sum_per_cpu(&values[16 * cpus * i..16 * cpus * (i + 1)]);
            }
            from += got;
        }
        Ok(out)
    }

    fn add_socket(&self, queue: u32, fd: RawFd) -> io::Result<()> {
        self.xsks.update(&queue.to_ne_bytes(), &(fd as u32).to_ne_bytes())
    }
}

/// The sum over CPUs of a per-CPU [`FastCounters`] value (16 bytes per CPU:
/// frames, bytes).
fn sum_per_cpu(v: &[u8]) -> FastCounters {
    let mut c = FastCounters::default();
    for cpu in v.chunks_exact(16) {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&cpu[i..i + 8]);
            u64::from_ne_bytes(w)
        };
        c.frames = c.frames.wrapping_add(word(0));
        c.bytes = c.bytes.wrapping_add(word(8));
    }
    c
}

/// How many backend ids the fast path's per-server counters cover when the
/// config has `servers` real servers: twice as many rounded up to a power
/// of two, at least 1024, at most every id. Ids are handed out lowest
/// first and a removed server's id is carried only until its flows end, so
/// this leaves room for reloads that add servers; a server whose id is
/// beyond (after reloads that more than doubled the config) keeps its
/// flows in its worker, which counts them, until the next start. The map
/// costs 16 bytes per slot per possible CPU (1024 slots: 16 KiB per CPU;
/// 262,144 slots: 4 MiB per CPU).
pub fn fast_server_slots(servers: usize) -> u32 {
    servers
        .saturating_mul(2)
        .max(1024)
        .checked_next_power_of_two()
        .unwrap_or(MAX_BACKEND_IDS)
        .min(MAX_BACKEND_IDS) as u32
}

/// What the XDP fast path forwarded (totals since the program was loaded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastCounters {
    pub frames: u64,
    /// Ethernet header plus IPv4 total length (padding not counted).
    pub bytes: u64,
}

/// The fast-path key of an IPv4 flow (addresses and ports host order).
pub fn fast_key(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> [u8; FAST_KEY_LEN] {
    let mut k = [0u8; FAST_KEY_LEN];
    k[0..4].copy_from_slice(&src.to_be_bytes());
    k[4..8].copy_from_slice(&dst.to_be_bytes());
    k[8..10].copy_from_slice(&sport.to_be_bytes());
    k[10..12].copy_from_slice(&dport.to_be_bytes());
    k[12] = proto;
    k
}

/// A fast-path value: frames go to `dst_mac` from `src_mac`; not seen yet.
pub fn fast_value(dst_mac: [u8; 6], src_mac: [u8; 6], backend: u32) -> [u8; FAST_VALUE_LEN] {
    let mut v = [0u8; FAST_VALUE_LEN];
    v[0..6].copy_from_slice(&dst_mac);
    v[6..12].copy_from_slice(&src_mac);
    v[12..16].copy_from_slice(&backend.to_ne_bytes());
    v
}

/// Bring `map` (whose contents `cur` mirrors) to `want`: changed entries
/// first, then the ones that go, so an address that stays is never missing.
fn sync_map<A: Copy + Eq + std::hash::Hash, const N: usize>(
    map: &BpfMap,
    cur: &mut HashMap<A, u32>,
    want: &HashMap<A, u32>,
    key: impl Fn(&A) -> [u8; N],
) -> io::Result<()> {
    for (a, &bits) in want {
        if cur.get(a) != Some(&bits) {
            map.update(&key(a), &bits.to_ne_bytes())?;
            cur.insert(*a, bits);
        }
    }
    let gone: Vec<A> = cur.keys().filter(|a| !want.contains_key(*a)).copied().collect();
    for a in gone {
        map.delete(&key(&a))?;
        cur.remove(&a);
    }
    Ok(())
}

/// The IPv6 map's contents: VIPs, NAT servers, and the director's own
/// addresses (an address both a VIP and the director's is a VIP).
fn want6(vips: &[u128], nat_sources: &[u128], own: &[u128]) -> HashMap<[u8; 16], u32> {
    let mut want: HashMap<[u8; 16], u32> = HashMap::new();
    for v in vips {
        *want.entry(v.to_be_bytes()).or_default() |= TO_ADDR;
    }
    for s in nat_sources {
        *want.entry(s.to_be_bytes()).or_default() |= FROM_ADDR;
    }
    for o in own {
        let bits = want.entry(o.to_be_bytes()).or_default();
        if *bits & TO_ADDR == 0 {
            *bits |= OWN_ADDR;
        }
    }
    want
}

/// The IPv6 addresses of interface `ifindex` in `/proc/net/if_inet6`
/// (`text`): one per line, 32 hex digits, then the index in hex.
fn own_ipv6(text: &str, ifindex: i32) -> Vec<u128> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let hex = f.next()?;
            let idx = i32::from_str_radix(f.next()?, 16).ok()?;
            if idx != ifindex || hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16).ok()
        })
        .collect()
}

/// The BTF id of kernel function `name` in the running kernel's BTF
/// (`/sys/kernel/btf/vmlinux`), if it has one.
///
/// # Errors
/// The kernel exposes no BTF.
pub fn btf_func_id(name: &str) -> io::Result<Option<u32>> {
    Ok(find_btf_func(&std::fs::read("/sys/kernel/btf/vmlinux")?, name))
}

/// Walk the BTF type section for a FUNC named `name` (ids count from 1).
/// `None` also when the data is not BTF or holds a kind this walk does not
/// know (it cannot step over it).
fn find_btf_func(b: &[u8], name: &str) -> Option<u32> {
    let u32_at = |d: &[u8], i: usize| {
        d.get(i..i + 4)
            .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
    };
    if b.get(0..2)? != 0xeb9fu16.to_ne_bytes() {
        return None;
    }
    let hdr = u32_at(b, 4)? as usize;
    let (toff, tlen) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
    let (soff, slen) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
    let types = b.get(hdr + toff..hdr + toff + tlen)?;
    let strs = b.get(hdr + soff..hdr + soff + slen)?;
    let (mut at, mut id) = (0usize, 1u32);
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)? as usize;
        let info = u32_at(types, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = match kind {
            2 | 7..=12 | 16 | 18 => 0,
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => 12 * vlen,
            6 | 13 => 8 * vlen,
            _ => return None,
        };
        if kind == 12 {
            let s = strs.get(name_off..)?;
            let end = s.iter().position(|&c| c == 0)?;
            if &s[..end] == name.as_bytes() {
                return Some(id);
            }
        }
        at += 12 + extra;
        id += 1;
    }
    None
}

/// Number of RX queues of interface `name` (from sysfs).
///
/// # Errors
/// The interface is unknown in this network namespace.
pub fn rx_queues(name: &str) -> io::Result<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))?;
    let n = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n.max(1) as u32)
}

// ---------------------------------------------------------------- frames

/// `pkttype` of a frame from its destination MAC (AF_XDP does not say).
#[inline]
fn pkttype_of(frame: &[u8], own: &[u8; 6]) -> u8 {
    // Shorter than a header: classify drops it as a runt whatever this says.
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return pkttype::HOST;
    };
    match eth.dst() {
        d if d == *own => pkttype::HOST,
        ethernet::BROADCAST => pkttype::BROADCAST,
        d if d[0] & 1 != 0 => pkttype::MULTICAST,
        _ => pkttype::OTHERHOST,
    }
}

/// The VLAN tag the program found stripped by the driver, from the XDP
/// metadata in front of the frame (zeroed by the socket before the chunk
/// went to the kernel, so it is never a leftover).
#[inline]
fn stripped_vlan(frame: &mut Frame<'_>) -> Option<u16> {
    let (buf, head, _) = frame.parts();
    vlan_in_meta(buf, head)
}

/// [`stripped_vlan`] of the frame at `head` in `chunk` (what a peek sees).
#[inline]
fn vlan_in_meta(chunk: &[u8], head: usize) -> Option<u16> {
    let m = chunk.get(head.checked_sub(4)?..head)?;
    (u16::from_ne_bytes([m[0], m[1]]) == META_VLAN).then(|| u16::from_ne_bytes([m[2], m[3]]))
}

/// Whether frames from interface `ifindex` can hold partial checksums.
///
/// AF_XDP gives no checksum status with a frame: XDP sees bytes before any
/// `sk_buff` exists, and the XDP RX metadata kfuncs (timestamp, hash, VLAN
/// tag as of Linux 6.18) have none for it. So the bytes alone must tell,
/// and they cannot always: a partial field (the pseudo-header sum) and a
/// corrupt frame whose field happens to equal that sum look the same. What
/// can tell is the link. A frame from a wire carries the checksum the
/// sender's NIC completed, and virtio-net turns its guest checksum offload
/// off while an XDP program is attached; only a software link (veth, tap:
/// no `device` in sysfs) hands over a sender's partial frame from this host.
/// So only there is a frame completed ([`complete_partial_checksum`]); on a
/// hardware link a bad checksum is a corrupt frame, left as it is for the
/// real server to drop, as the director does in every mode.
///
/// Unknown (sysfs unreadable) counts as software: without completion, a
/// partial frame is lost for sure; with it, only a frame already corrupt
/// whose field equals the pseudo-header sum (about 1 in 65,536 of those)
/// would go on with a checksum that verifies.
pub fn software_link(ifindex: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return true;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let p = e.path();
        let idx = std::fs::read_to_string(p.join("ifindex")).ok();
        if idx.and_then(|s| s.trim().parse::<i32>().ok()) == Some(ifindex) {
            return !p.join("device").exists();
        }
    }
    true
}

/// Complete the TCP or UDP checksum of an unfragmented IPv4 or IPv6 frame from a
/// software link ([`software_link`]) whose sender left it to checksum
/// offload (`CHECKSUM_PARTIAL`: the field holds the folded pseudo-header
/// sum, not inverted). Returns true when it did.
///
/// A frame counts as partial only when the field equals that pseudo-header
/// sum **and** the checksum does not verify, so a frame with a correct full
/// checksum is never touched. (A partial frame whose bytes happen to verify
/// as well, about 1 in 65,535, is left as it is and dropped by the receiver;
/// TCP retransmits it with a new timestamp.)
pub fn complete_partial_checksum(d: &mut [u8]) -> bool {
    let Ok(mut eth) = ethernet::Frame::new_checked(d) else {
        return false;
    };
    match eth.ethertype() {
        EtherType::Ipv4 => {}
        EtherType::Ipv6 => return complete_partial_checksum6(eth.payload_mut()),
        _ => return false,
    }
    let Ok(mut ip) = ipv4::Packet::new_checked(eth.payload_mut()) else {
        return false;
    };
    if ip.is_fragment() {
        return false; // offload never leaves those partial
    }
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let l4 = ip.payload_mut();
    let Ok(l4_len) = u16::try_from(l4.len()) else {
        return false;
    };
    let pseudo = checksum::pseudo_header(src, dst, proto, l4_len);
    complete_if_partial(l4, proto == Protocol::Tcp, proto == Protocol::Udp, pseudo)
}

/// [`complete_partial_checksum`] for the IPv6 packet `p` (from its fixed
/// header to the end of the frame): the transport header after the
/// extension headers, the IPv6 pseudo-header. Fragments are left alone, as
/// for IPv4.
fn complete_partial_checksum6(p: &mut [u8]) -> bool {
    let Ok(ip) = ipv6::Packet::new_checked(&p[..]) else {
        return false;
    };
    let Ok(chain) = ip.walk() else {
        return false;
    };
    if chain.fragment.is_some() {
        return false;
    }
    let (src, dst, end) = (ip.src(), ip.dst(), ip.total_len().min(p.len()));
    let Some(l4) = p.get_mut(chain.transport_offset..end) else {
        return false;
    };
    let Ok(l4_len) = u32::try_from(l4.len()) else {
        return false;
    };
    let proto = chain.protocol;
    let pseudo = checksum::pseudo_header6(&src, &dst, proto, l4_len);
    complete_if_partial(
        l4,
        proto == ipv6::next_header::TCP,
        proto == ipv6::next_header::UDP,
        pseudo,
    )
}

/// Complete the checksum of TCP or UDP segment `l4` when its field holds
/// `pseudo` (the pseudo-header sum) and does not verify; see
/// [`complete_partial_checksum`] for why that test is safe.
fn complete_if_partial(l4: &mut [u8], is_tcp: bool, is_udp: bool, pseudo: u16) -> bool {
    let (field, at) = if is_tcp {
        match tcp::Segment::new_checked(&l4[..]) {
            Ok(t) => (t.checksum(), tcp::CHECKSUM_OFFSET),
            Err(_) => return false,
        }
    } else if is_udp {
        match udp::Datagram::new_checked(&l4[..]) {
            Ok(u) if u.checksum() != 0 => (u.checksum(), udp::CHECKSUM_OFFSET),
            _ => return false, // UDP without a checksum, or truncated
        }
    } else {
        return false;
    };
    if field != pseudo {
        return false;
    }
    if checksum::sum(l4, u32::from(pseudo)) == 0xffff {
        return false; // a correct full checksum
    }
    checksum::complete_partial(l4, 0, at).is_ok()
}

/// What the device does to a frame's checksum before the worker sees it:
/// complete a partial one on a software link, touch nothing on a hardware
/// link. True when it completed one.
#[inline]
fn repair_checksum(d: &mut [u8], software_link: bool) -> bool {
    software_link && complete_partial_checksum(d)
}

/// A worker's AF_XDP device: one socket on one RX queue.
pub struct XdpDevice {
    sock: XskSocket,
    mac: [u8; 6],
    /// The link can carry partial checksums ([`software_link`]).
    complete_partial: bool,
    repaired: u64,
    /// Installs made lately, one slot per key hash ([`RECENT_SLOTS`]):
    /// empty without the fast path.
    recent: Box<[Recent]>,
    /// Fast-path map operations that failed.
    fast_errors: u64,
    /// Backend ids the program counts per server (`0..n`): a flow to a
    /// server beyond is never installed, so every frame the program
    /// forwards is in its server's counters.
    server_slots: u32,
    prog: Arc<XdpRedirect>,
}

/// Slots of the device's memory of recent installs.
const RECENT_SLOTS: usize = 4096;
/// An install repeated within this time is skipped: a flow whose frames
/// keep coming to the worker (partial checksums, which the program leaves
/// to it) costs one system call per second, not one per frame.
const RECENT_MS: u64 = 1000;

/// One remembered install.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    key: [u8; FAST_KEY_LEN],
    /// The value's MACs and backend id (not its last-seen time).
    value: [u8; 16],
    at_ms: u64,
    /// The program's flush count then.
    flushes: u64,
}

/// The slot of `key` in the memory of recent installs.
#[inline]
fn recent_slot(key: &[u8; FAST_KEY_LEN]) -> usize {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&key[..8]);
    b.copy_from_slice(&key[8..]);
    let h =
        (u64::from_ne_bytes(a) ^ u64::from_ne_bytes(b).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 40) as usize % RECENT_SLOTS
}

fn fast_key_of(f: &FastFlow) -> [u8; FAST_KEY_LEN] {
    fast_key(f.src, f.dst, f.sport, f.dport, f.proto)
}

impl XdpDevice {
    /// Open a socket on RX queue `queue` of `ifindex` (zero-copy when the
    /// driver can, else copy mode) and put it in the program's XSKMAP.
    /// `mac` is the interface's address (AF_XDP does not tell frames to the
    /// host from others).
    ///
    /// # Errors
    /// Socket setup failed, or the queue is beyond the program's XSKMAP.
    pub fn open(prog: &Arc<XdpRedirect>, ifindex: i32, queue: u32, mac: [u8; 6]) -> io::Result<Self> {
        if queue >= prog.queues() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue {queue} beyond the {} RX queue(s)", prog.queues()),
            ));
        }
        let sock = XskSocket::open(ifindex, queue, XskConfig::default(), true)?;
        prog.add_socket(queue, sock.as_raw_fd())?;
        let recent = if prog.fast_path() { RECENT_SLOTS } else { 0 };
        Ok(XdpDevice {
            sock,
            mac,
            complete_partial: software_link(ifindex),
            repaired: 0,
            recent: vec![Recent::default(); recent].into_boxed_slice(),
            fast_errors: 0,
            server_slots: prog.fast_server_slots(),
            prog: prog.clone(),
        })
    }

    /// Fast-path map operations that failed.
    pub fn fast_errors(&self) -> u64 {
        self.fast_errors
    }

    /// True when the socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.sock.zero_copy()
    }

    /// Frames whose partial checksum this device completed.
    pub fn repaired(&self) -> u64 {
        self.repaired
    }
}

impl Device for XdpDevice {
    fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.sock.wait(timeout_ms)
    }

    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> io::Result<BatchStats> {
        let XdpDevice {
            sock,
            mac,
            complete_partial,
            repaired,
            ..
        } = self;
        sock.process_batch(max, |frame, arena| {
            frame.meta.pkttype = pkttype_of(frame.data(), mac);
            frame.meta.vlan_tci = stripped_vlan(frame);
            if repair_checksum(frame.data_mut(), *complete_partial) {
                *repaired += 1;
            }
            f(frame, arena)
        })
    }

    /// The frames as `process_batch` will hand them over, with the same
    /// metadata (pkttype from the destination MAC, the stripped VLAN tag
    /// from the XDP metadata); a partial checksum is not completed yet,
    /// which changes no header a look-ahead reads.
    fn peek_batch<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, mut f: F) {
        let mac = &self.mac;
        self.sock.peek(max, |chunk, head, len| {
            let d = &chunk[head..head + len];
            let meta = RxMeta {
                pkttype: pkttype_of(d, mac),
                vlan_tci: vlan_in_meta(chunk, head),
                truncated: false,
            };
            f(d, &meta);
        });
    }

    fn ring_drops(&mut self) -> u64 {
        self.sock.ring_drops()
    }

    fn fast_path(&self) -> bool {
        self.prog.fast_path()
    }

    fn fast_install(&mut self, flows: &[FastFlow]) {
        if self.recent.is_empty() {
            return;
        }
        let now_ms = sys::monotonic_ns() / 1_000_000;
        let flushes = self.prog.fast_flushes();
        for f in flows {
            if f.backend >= self.server_slots {
                continue;
            }
            let key = fast_key_of(f);
            let value = fast_value(f.dst_mac, f.src_mac, f.backend);
            let r = &mut self.recent[recent_slot(&key)];
            if r.key == key
                && r.value[..] == value[..16]
                && r.flushes == flushes
                && now_ms.saturating_sub(r.at_ms) < RECENT_MS
            {
                continue;
            }
            match self.prog.fast_install(&key, &value) {
                Ok(()) => {
                    r.key = key;
                    r.value.copy_from_slice(&value[..16]);
                    r.at_ms = now_ms;
                    r.flushes = flushes;
                }
                Err(_) => self.fast_errors += 1,
            }
        }
    }

    fn fast_remove(&mut self, flows: &[FastFlow]) {
        if self.recent.is_empty() {
            return;
        }
        for f in flows {
            let key = fast_key_of(f);
            let r = &mut self.recent[recent_slot(&key)];
            if r.key == key {
                *r = Recent::default();
            }
            if self.prog.fast_remove(&key).is_err() {
                self.fast_errors += 1;
            }
        }
    }

    fn fast_keep(&mut self, flow: &FastFlow, timeout_ms: u32) -> Option<u32> {
        if self.recent.is_empty() {
            return None;
        }
        let key = fast_key_of(flow);
        let seen = match self.prog.fast_last_seen(&key) {
            Ok(Some(seen)) => seen,
            Ok(None) => return None,
            Err(_) => {
                self.fast_errors += 1;
                return None;
            }
        };
        let idle_ms = sys::monotonic_ns().saturating_sub(seen) / 1_000_000;
        if seen != 0 && idle_ms < u64::from(timeout_ms) {
            return Some(idle_ms as u32);
        }
        self.fast_remove(&[*flow]);
        None
    }

    fn fast_idle(&mut self, flow: &FastFlow) -> Option<u32> {
        if self.recent.is_empty() {
            return None;
        }
        match self.prog.fast_last_seen(&fast_key_of(flow)) {
            Ok(Some(seen)) if seen != 0 => {
                let idle_ms = sys::monotonic_ns().saturating_sub(seen) / 1_000_000;
                Some(idle_ms.min(u64::from(u32::MAX)) as u32)
            }
            Ok(_) => None,
            Err(_) => {
                self.fast_errors += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::{self, Ext6, PacketBuilder, PacketBuilder6};
    use crate::wire::tcp;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A TCP/IPv4 frame 198.18.1.2:40000 -> `dst`:80 (PSH|ACK, sequence 7,
    /// window 512, identification 0) with `payload`, its checksum complete.
    fn tcp_frame(dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        PacketBuilder::new([198, 18, 1, 2], dst)
            .macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 1, 1])
            .ident(0)
            .seq(7)
            .window(512)
            .tcp(40000, 80, tcp::PSH | tcp::ACK, payload)
    }

    /// The same frame as its sender's offload leaves it: the field holds
    /// the pseudo-header sum.
    fn partial(full: &[u8]) -> Vec<u8> {
        let mut f = full.to_vec();
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let ps = builder::pseudo_sum(src, dst, builder::proto::TCP, f.len() - 34);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        f
    }

    #[test]
    fn partial_checksums_are_completed_full_ones_kept() {
        for len in [0usize, 1, 2, 3, 100, 1447, 1448] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let full = tcp_frame([198, 18, 100, 1], &payload);
            let mut same = full.clone();
            assert!(!complete_partial_checksum(&mut same), "len {len}");
            assert_eq!(same, full);
            let mut p = partial(&full);
            assert_ne!(p, full);
            assert!(complete_partial_checksum(&mut p), "len {len}");
            assert_eq!(p, full, "len {len}");
            // A corrupted field that is not the pseudo-header sum stays bad.
            let mut bad = full.clone();
            bad[51] ^= 0x40;
            assert!(!complete_partial_checksum(&mut bad));
        }
        // Fragments, non-IP and truncated frames are left alone.
        let mut frag = partial(&tcp_frame([198, 18, 100, 1], b"xyz"));
        frag[20] = 0x20;
        assert!(!complete_partial_checksum(&mut frag));
        let mut short = partial(&tcp_frame([198, 18, 100, 1], b"xyz"));
        short.truncate(40);
        assert!(!complete_partial_checksum(&mut short));
    }

    /// A frame corrupted on the way whose checksum field happens to equal
    /// the pseudo-header sum: on a hardware link nothing can hand over a
    /// partial frame, so it is left as it is (the old code "repaired" it on
    /// every link); on a software link it cannot be told from a partial one.
    #[test]
    fn corrupt_frames_are_repaired_only_where_partial_ones_can_arrive() {
        let full = tcp_frame([198, 18, 100, 1], b"some payload");
        let mut corrupt = partial(&full);
        corrupt[60] ^= 0x10; // a payload bit flipped after the checksum
        let before = corrupt.clone();
        assert!(!repair_checksum(&mut corrupt, false));
        assert_eq!(corrupt, before, "hardware link: untouched");
        let mut p = partial(&full);
        assert!(!repair_checksum(&mut p, false), "hardware link: never partial");
        let mut p = partial(&full);
        assert!(repair_checksum(&mut p, true));
        assert_eq!(p, full, "software link: completed");
    }

    #[test]
    fn loopback_is_a_software_link() {
        // `lo` has no device behind it in sysfs; an unknown index counts
        // as software too (see `software_link`).
        assert!(software_link(1));
        assert!(software_link(i32::MAX));
    }

    #[test]
    fn pkttype_from_mac() {
        let me = [2, 0, 0xc6, 0x12, 0, 2];
        let f = tcp_frame([198, 18, 100, 1], b"");
        assert_eq!(pkttype_of(&f, &me), pkttype::HOST);
        assert_eq!(pkttype_of(&f, &[2, 0, 0, 0, 0, 9]), pkttype::OTHERHOST);
        assert_eq!(pkttype_of(&[0xff; 14], &me), pkttype::BROADCAST);
        assert_eq!(
            pkttype_of(&[0x01, 0, 0x5e, 0, 0, 1, 0, 0, 0, 0, 0, 0, 8, 0], &me),
            pkttype::MULTICAST
        );
        assert_eq!(
            pkttype_of(&[0xff; 13], &me),
            pkttype::HOST,
            "a runt, for classify"
        );
    }

    #[test]
    fn program_shape() {
        let p = program(7, 6, 8, Some(0xc612_0002), XDP_PASS, None, None);
        // Both map loads carry the map fds as pseudo map-fd immediates.
        let maps: Vec<i32> = p
            .iter()
            .filter(|i| i.code == op::LD_IMM64)
            .map(|i| {
                assert_eq!(i.regs >> 4, op::PSEUDO_MAP_FD);
                i.imm
            })
            .collect();
        assert_eq!(
            maps,
            vec![6, 6, 7, 7, 8],
            "IPv6 dst and src, IPv4 dst and src, XSKMAP"
        );
        // Every jump lands inside the program.
        for (pc, i) in p.iter().enumerate() {
            if matches!(i.code & 0x07, 0x05 | 0x06) && !matches!(i.code, op::CALL | op::EXIT) {
                let t = pc as isize + 1 + i.off as isize;
                assert!(t > pc as isize && (t as usize) < p.len(), "jump at {pc}");
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(op::EXIT));
        assert_eq!(program(7, 6, 8, None, XDP_PASS, None, None).len(), p.len() - 1);
        let k = program(7, 6, 8, None, XDP_PASS, Some(4242), None);
        assert!(k
            .iter()
            .any(|i| i.code == op::CALL && i.regs >> 4 == op::PSEUDO_KFUNC_CALL && i.imm == 4242));
    }

    /// A refused program comes back with the verifier's log (needs root).
    #[test]
    fn verifier_log_comes_back() {
        let bad = [Insn::new(op::EXIT, 0, 0, 0, 0)]; // exits with r0 unset
        match sys::load_xdp_program(&bad, "ulvs_bad", c"GPL", None) {
            Err(XdpError::Verifier { log, .. }) => assert!(log.contains("R0 !read_ok"), "{log}"),
            Err(XdpError::Sys { err, .. }) if err.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: loading BPF programs needs root");
            }
            other => panic!("expected a verifier refusal, got {other:?}"),
        }
    }

    #[test]
    fn btf_walk() {
        // A hand-made BTF blob: INT "int", FUNC_PROTO with one parameter,
        // FUNC "f" (id 3).
        let strs = b"\0int\0f\0";
        let mut types = Vec::new();
        let ty = |v: &mut Vec<u8>, name: u32, kind: u32, vlen: u32, size: u32| {
            v.extend_from_slice(&name.to_ne_bytes());
            v.extend_from_slice(&((kind << 24) | vlen).to_ne_bytes());
            v.extend_from_slice(&size.to_ne_bytes());
        };
        ty(&mut types, 1, 1, 0, 4);
        types.extend_from_slice(&32u32.to_ne_bytes());
        ty(&mut types, 0, 13, 1, 1);
        types.extend_from_slice(&[0u8; 8]);
        ty(&mut types, 5, 12, 0, 2);
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strs.len() as u32,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(strs);
        assert_eq!(find_btf_func(&b, "f"), Some(3));
        assert_eq!(find_btf_func(&b, "int"), None);
        assert_eq!(find_btf_func(&b[..30], "f"), None);
        assert_eq!(find_btf_func(b"junk", "f"), None);
    }

    /// Load the program for real and run it on frames (needs root; skipped
    /// otherwise): VIP frames and NAT replies are redirected, the rest passes.
    #[test]
    fn program_verdicts_in_the_kernel() {
        const XDP_TX: i32 = 3;
        let x = match XdpRedirect::load_detached(1, Some(0xc612_0002), XDP_TX, None, None, None) {
            Ok(x) => x,
            Err(XdpError::Sys { err, .. }) if err.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: loading BPF programs needs root");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let vip = 0xc612_6401u32;
        let nat_rs = 0xc612_000bu32;
        x.set_addresses(&[vip], &[nat_rs]).unwrap();
        let run = |f: &[u8]| sys::test_run_xdp(&x.prog, f).unwrap() as i32;
        // Redirect with no socket in the slot yields the fallback (XDP_TX here).
        assert_eq!(run(&tcp_frame([198, 18, 100, 1], b"hi")), XDP_TX);
        assert_eq!(run(&tcp_frame([198, 18, 100, 9], b"hi")), XDP_PASS);
        let mut arp = tcp_frame([198, 18, 100, 1], b"");
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&arp), XDP_PASS);
        assert_eq!(run(&arp[..20]), XDP_PASS);
        // IPv4 runts and tagged frames to a VIP go to the worker, which
        // counts them; other tagged frames stay with the kernel.
        assert_eq!(run(&tcp_frame([198, 18, 100, 9], b"")[..24]), XDP_TX);
        let tagged = |dst: [u8; 4]| {
            let f = tcp_frame(dst, b"hi");
            let mut t = f[..12].to_vec();
            t.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
            t.extend_from_slice(&f[12..]);
            t
        };
        assert_eq!(run(&tagged([198, 18, 100, 1])), XDP_TX);
        assert_eq!(run(&tagged([198, 18, 100, 9])), XDP_PASS);
        let mut tagged_arp = tagged([198, 18, 100, 1]);
        tagged_arp[16..18].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&tagged_arp), XDP_PASS);
        // From a NAT real server to a client: redirected; to the director: not.
        let mut reply = tcp_frame([198, 18, 1, 2], b"");
        reply[26..30].copy_from_slice(&[198, 18, 0, 11]);
        assert_eq!(run(&reply), XDP_TX);
        reply[30..34].copy_from_slice(&[198, 18, 0, 2]);
        assert_eq!(run(&reply), XDP_PASS);
        // Reload semantics: the VIP goes away, another comes.
        x.set_addresses(&[0xc612_6409], &[]).unwrap();
        assert_eq!(run(&tcp_frame([198, 18, 100, 1], b"hi")), XDP_PASS);
        assert_eq!(run(&tcp_frame([198, 18, 100, 9], b"hi")), XDP_TX);
        reply[30..34].copy_from_slice(&[198, 18, 1, 2]);
        assert_eq!(run(&reply), XDP_PASS);
    }

    /// The fast path in the kernel (needs root): an installed TCP or UDP
    /// flow's frames are sent back out (XDP_TX) with the server's and the
    /// director's MACs and counted; the frames that start or end a
    /// connection, fragments, options, partial checksums, truncated frames
    /// and flows not installed take the old way (redirect to the worker, or
    /// pass); a flush gives every flow back.
    #[test]
    fn fast_path_verdicts_in_the_kernel() {
        const XDP_REDIRECT_FALLBACK: i32 = XDP_PASS;
        let x = match XdpRedirect::load_detached(
            1,
            Some(0xc612_0002),
            XDP_REDIRECT_FALLBACK,
            None,
            Some(16),
            None,
        ) {
            Ok(x) => x,
            Err(XdpError::Sys { err, .. }) if err.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: loading BPF programs needs root");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(x.fast_path());
        // Redirects to the (empty) XSKMAP fall back to XDP_PASS here; the
        // fast path's verdict is XDP_TX.
        let vip = 0xc612_6401u32;
        x.set_addresses(&[vip], &[]).unwrap();
        let (rs_mac, dir_mac) = ([2, 0, 0xc6, 0x12, 0, 11], [2, 0, 0xc6, 0x12, 0, 2]);
        let b = PacketBuilder::new([198, 18, 1, 2], [198, 18, 100, 1])
            .macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 1, 1]);
        let ack = b.tcp(40000, 80, tcp::ACK, b"some payload");
        let run = |f: &[u8]| sys::test_run_xdp_out(&x.prog, f).unwrap();
        assert_eq!(run(&ack).0 as i32, XDP_PASS, "not installed yet");
        let key = fast_key(0xc612_0102, vip, 40000, 80, 6);
        x.fast_install(&key, &fast_value(rs_mac, dir_mac, 7)).unwrap();
        assert_eq!(x.fast_last_seen(&key).unwrap(), Some(0));
        let before = sys::monotonic_ns();
        let (verdict, out) = run(&ack);
        assert_eq!(verdict as i32, XDP_TX);
        let mut want = ack.clone();
        want[0..6].copy_from_slice(&rs_mac);
        want[6..12].copy_from_slice(&dir_mac);
        assert_eq!(out, want, "only the MACs change");
        let seen = x.fast_last_seen(&key).unwrap().unwrap();
        assert!(seen >= before && seen <= sys::monotonic_ns(), "{before} {seen}");
        let one = FastCounters {
            frames: 1,
            bytes: ack.len() as u64,
        };
        assert_eq!(x.fast_counters().unwrap(), one);
        // The same frame in its server's slot (backend id 7), nowhere else.
        assert_eq!(x.fast_server_slots(), 16);
        let per = x.fast_server_counters(16).unwrap();
        assert_eq!(per.len(), 16);
        assert_eq!(per[7], one);
        assert!(per
            .iter()
            .enumerate()
            .all(|(i, c)| i == 7 || *c == FastCounters::default()));
        assert_eq!(x.fast_server_counters(7).unwrap().len(), 7, "ids below 7 only");
        assert_eq!(
            x.fast_server_counters(99).unwrap().len(),
            16,
            "no more than the slots"
        );
        // Padding after the IPv4 packet is not counted, and does not matter.
        let mut padded = ack.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(run(&padded).0 as i32, XDP_TX);
        assert_eq!(x.fast_counters().unwrap().bytes, 2 * ack.len() as u64);
        assert_eq!(x.fast_server_counters(16).unwrap()[7].bytes, 2 * ack.len() as u64);
        // Starting or ending a connection: the worker's.
        for flags in [
            tcp::SYN,
            tcp::SYN | tcp::ACK,
            tcp::FIN | tcp::ACK,
            tcp::RST,
            tcp::RST | tcp::ACK,
        ] {
            assert_eq!(
                run(&b.tcp(40000, 80, flags, b"")).0 as i32,
                XDP_PASS,
                "flags {flags:#x}"
            );
        }
        assert_eq!(run(&b.tcp(40000, 80, tcp::PSH | tcp::ACK, b"")).0 as i32, XDP_TX);
        // Another port, another protocol: not installed.
        assert_eq!(run(&b.tcp(40001, 80, tcp::ACK, b"x")).0 as i32, XDP_PASS);
        assert_eq!(run(&b.udp(40000, 80, b"x")).0 as i32, XDP_PASS);
        // A fragment (MF set, or an offset), IP options: the worker's.
        let mut mf = ack.clone();
        mf[20] |= 0x20;
        assert_eq!(run(&mf).0 as i32, XDP_PASS);
        let mut off = ack.clone();
        off[21] = 1;
        assert_eq!(run(&off).0 as i32, XDP_PASS);
        let mut df = ack.clone();
        df[20] |= 0x40; // DF alone is fine (the checksum is not checked here)
        assert_eq!(run(&df).0 as i32, XDP_TX);
        let mut ihl6 = ack.clone();
        ihl6[14] = 0x46;
        assert_eq!(run(&ihl6).0 as i32, XDP_PASS);
        // Truncated: the IPv4 length says more than the frame holds.
        assert_eq!(run(&ack[..ack.len() - 1]).0 as i32, XDP_PASS);
        // A partial checksum (a veth peer's offload): the worker completes it.
        let l4_len = (ack.len() - 34) as u16;
        let pseudo = checksum::pseudo_header(0xc612_0102, vip, Protocol::Tcp, l4_len);
        let mut partial = ack.clone();
        partial[50..52].copy_from_slice(&pseudo.to_be_bytes());
        assert_eq!(run(&partial).0 as i32, XDP_PASS);
        assert!(complete_partial_checksum(&mut partial), "it is partial");
        assert_eq!(run(&partial).0 as i32, XDP_TX);
        // UDP, the same way, with a 64-byte frame (as the benchmark sends).
        let ukey = fast_key(0xc612_0102, vip, 5000, 53, 17);
        x.fast_install(&ukey, &fast_value(rs_mac, dir_mac, 8)).unwrap();
        let dgram = b.udp(5000, 53, &[0x55; 18]);
        assert_eq!(dgram.len(), 60);
        assert_eq!(run(&dgram).0 as i32, XDP_TX);
        let mut upartial = dgram.clone();
        let upseudo = checksum::pseudo_header(0xc612_0102, vip, Protocol::Udp, 26);
        upartial[40..42].copy_from_slice(&upseudo.to_be_bytes());
        assert_eq!(run(&upartial).0 as i32, XDP_PASS);
        // Too short for the fast path: the old way.
        assert_eq!(run(&b.udp(5000, 53, b"x")).0 as i32, XDP_PASS);
        // A server beyond the per-server slots: the worker's, uncounted
        // here (it counts it itself).
        let before = x.fast_counters().unwrap();
        let wide = fast_key(0xc612_0102, vip, 5001, 53, 17);
        x.fast_install(&wide, &fast_value(rs_mac, dir_mac, 16)).unwrap();
        assert_eq!(run(&b.udp(5001, 53, &[0x55; 18])).0 as i32, XDP_PASS);
        assert_eq!(x.fast_counters().unwrap(), before);
        assert_eq!(x.fast_last_seen(&wide).unwrap(), Some(0), "not forwarded");
        assert!(x.fast_remove(&wide).unwrap());
        // Every frame forwarded so far is in a server's counters: 3 TCP
        // frames to id 7 (ack, padded, PSH) plus DF and the completed
        // partial one, 1 UDP datagram to id 8.
        let per = x.fast_server_counters(16).unwrap();
        let total = x.fast_counters().unwrap();
        assert_eq!(per[8].frames, 1);
        assert_eq!(per[8].bytes, dgram.len() as u64);
        assert_eq!(per[7].frames + per[8].frames, total.frames);
        assert_eq!(per[7].bytes + per[8].bytes, total.bytes);
        assert_eq!(per.iter().map(|c| c.frames).sum::<u64>(), total.frames);
        // Tagged frames never take it.
        let mut tagged = ack[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&ack[12..]);
        assert_eq!(run(&tagged).0 as i32, XDP_PASS);
        // Removal and flush.
        assert!(x.fast_remove(&ukey).unwrap());
        assert!(!x.fast_remove(&ukey).unwrap());
        assert_eq!(run(&dgram).0 as i32, XDP_PASS);
        x.fast_install(&ukey, &fast_value(rs_mac, dir_mac, 8)).unwrap();
        assert_eq!(x.fast_flush().unwrap(), 2);
        assert_eq!(run(&ack).0 as i32, XDP_PASS);
        assert_eq!(x.fast_last_seen(&key).unwrap(), None);
        // On a software link the frame leaves by a redirect to the
        // interface itself (XDP_REDIRECT), rewritten the same way.
        const XDP_REDIRECT: u32 = 4;
        let r = XdpRedirect::load_detached(1, Some(0xc612_0002), XDP_PASS, None, Some(8), Some(1)).unwrap();
        r.fast_install(&key, &fast_value(rs_mac, dir_mac, 7)).unwrap();
        let (verdict, out) = sys::test_run_xdp_out(&r.prog, &ack).unwrap();
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(out, want);
        assert_eq!(r.fast_counters().unwrap().frames, 1);
        assert_eq!(r.fast_server_counters(8).unwrap()[7].frames, 1);
    }

    /// Without the fast path the program is exactly what it was: the fast
    /// part is only ever added.
    #[test]
    fn fast_path_off_leaves_the_program_alone() {
        let off = program(7, 6, 8, Some(0xc612_0002), XDP_PASS, None, None);
        let on = program(
            7,
            6,
            8,
            Some(0xc612_0002),
            XDP_PASS,
            None,
            Some(FastMaps {
                flows: 9,
                counters: 10,
                servers: 11,
                redirect_to: None,
            }),
        );
        assert!(on.len() > off.len());
        assert!(!off
            .iter()
            .any(|i| i.code == op::LD_IMM64 && (9..=11).contains(&i.imm)));
        for fd in 9..=11 {
            assert!(
                on.iter().any(|i| i.code == op::LD_IMM64 && i.imm == fd),
                "map {fd} used"
            );
        }
        assert_eq!(off.iter().filter(|i| i.code == op::JEQ_REG).count(), 0);
    }

    /// A UDP/IPv6 frame `src` -> `dst`:53.
    fn udp6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        PacketBuilder6::new(src, dst)
            .macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 1, 1])
            .udp(40000, 53, b"hi")
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    /// The IPv6 half of the program in the kernel (needs root): frames to
    /// an IPv6 VIP are redirected whatever their transport (echo and errors
    /// are the worker's), Neighbor Discovery passes even to a VIP, NAT
    /// replies are redirected unless addressed to the director, a multicast
    /// or a link-local address, and IPv4 entries do not leak into IPv6.
    #[test]
    fn program_verdicts_in_the_kernel_ipv6() {
        const XDP_TX: i32 = 3;
        let x = match XdpRedirect::load_detached(1, Some(0xc612_0002), XDP_TX, None, None, None) {
            Ok(x) => x,
            Err(XdpError::Sys { err, .. }) if err.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: loading BPF programs needs root");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let vip: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let nat_rs: Ipv6Addr = "2001:db8::11".parse().unwrap();
        let (vip_n, nat_n) = (u128::from(vip), u128::from(nat_rs));
        let (client, director) = (v6("2001:db8:1::2"), v6("2001:db8::2"));
        x.set_addresses(&[0xc612_6401], &[]).unwrap();
        x.set_addresses6(&[vip_n], &[nat_n]).unwrap();
        // Detached (no interface): mark the director's address by hand, as
        // set_addresses6 does from /proc/net/if_inet6.
        let want = want6(&[vip_n], &[nat_n], &[u128::from_be_bytes(director)]);
        sync_map(&x.addrs6, &mut x.current6.lock().unwrap(), &want, |a| *a).unwrap();
        let run = |f: &[u8]| sys::test_run_xdp(&x.prog, f).unwrap() as i32;
        let to_vip = udp6(client, vip.octets());
        assert_eq!(run(&to_vip), XDP_TX);
        assert_eq!(run(&udp6(client, v6("2001:db8:100::9"))), XDP_PASS);
        // The IPv4 VIP's bytes as the start of an IPv6 address: no match.
        let mut lookalike = [0u8; 16];
        lookalike[..4].copy_from_slice(&[198, 18, 100, 1]);
        assert_eq!(run(&udp6(client, lookalike)), XDP_PASS);
        // Echo request and a Packet Too Big to the VIP: the worker's.
        let icmp = |t: u8, dst: [u8; 16]| {
            PacketBuilder6::new(client, dst)
                .macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 1, 1])
                .icmpv6(t, 0, [0; 4], &[0u8; 24])
        };
        assert_eq!(run(&icmp(128, vip.octets())), XDP_TX);
        assert_eq!(run(&icmp(2, vip.octets())), XDP_TX);
        // Neighbor Discovery passes, to the VIP itself (unicast NS) or to its
        // solicited-node group; 132 (MLD done) and 138 are not ND.
        for t in 133..=137 {
            assert_eq!(run(&icmp(t, vip.octets())), XDP_PASS, "ND type {t}");
            assert_eq!(run(&icmp(t, v6("ff02::1:ff00:1"))), XDP_PASS, "ND type {t}");
        }
        assert_eq!(run(&icmp(132, vip.octets())), XDP_TX);
        assert_eq!(run(&icmp(138, vip.octets())), XDP_TX);
        // An ICMPv6 frame cut right after the IPv6 header: the worker judges.
        let cut = icmp(135, vip.octets());
        assert_eq!(run(&cut[..54]), XDP_TX);
        // Behind an 802.1Q tag.
        let mut tagged = to_vip[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&to_vip[12..]);
        assert_eq!(run(&tagged), XDP_TX);
        tagged[20 + 24 - 1] ^= 1; // destination's last byte: no longer the VIP
        assert_eq!(run(&tagged), XDP_PASS);
        // An IPv6 runt goes to the worker (counted there), as an IPv4 one.
        assert_eq!(run(&to_vip[..40]), XDP_TX);
        // NAT replies: to a client, yes; to the director, a multicast group
        // or a link-local address, no.
        let nat = nat_rs.octets();
        assert_eq!(run(&udp6(nat, client)), XDP_TX);
        assert_eq!(run(&udp6(nat, director)), XDP_PASS);
        assert_eq!(run(&udp6(nat, v6("ff02::16"))), XDP_PASS);
        assert_eq!(run(&udp6(nat, v6("fe80::1"))), XDP_PASS);
        assert_eq!(run(&udp6(nat, v6("febf::1"))), XDP_PASS);
        assert_eq!(
            run(&udp6(nat, v6("fec0::1"))),
            XDP_TX,
            "fec0::/10 is not link-local"
        );
        assert_eq!(run(&udp6(v6("2001:db8::12"), client)), XDP_PASS);
        // A VIP that is also the director's address stays a VIP.
        assert_eq!(want6(&[vip_n], &[], &[vip_n])[&vip.octets()], TO_ADDR);
        // Reload: the VIP goes, another comes; IPv4 keeps its own.
        x.set_addresses6(&[u128::from_be_bytes(v6("2001:db8:100::9"))], &[])
            .unwrap();
        assert_eq!(run(&to_vip), XDP_PASS);
        assert_eq!(run(&udp6(client, v6("2001:db8:100::9"))), XDP_TX);
        assert_eq!(run(&udp6(nat, client)), XDP_PASS);
        assert_eq!(run(&tcp_frame([198, 18, 100, 1], b"hi")), XDP_TX);
    }

    #[test]
    fn own_ipv6_from_proc() {
        let t = "20010db8000000000000000000000002 03 40 00 80     eth0\n\
                 fe800000000000000000000000000001 03 40 20 80     eth0\n\
                 00000000000000000000000000000001 01 80 10 80       lo\n\
                 20010db8000000000000000000000009 0c 40 00 80    eth11\n";
        let a = |s: &str| u128::from_be_bytes(v6(s));
        assert_eq!(own_ipv6(t, 3), vec![a("2001:db8::2"), a("fe80::1")]);
        assert_eq!(own_ipv6(t, 12), vec![a("2001:db8::9")]);
        assert!(own_ipv6("junk\n", 3).is_empty());
    }

    /// A TCP/IPv6 frame as a veth peer's checksum offload leaves it gets
    /// its checksum completed; a full one, a fragment, and UDP with a bad
    /// field that is not the pseudo-header sum are left alone.
    #[test]
    fn partial_checksums_are_completed_ipv6() {
        let (src, dst) = (v6("2001:db8:1::2"), v6("2001:db8:100::1"));
        let b = PacketBuilder6::new(src, dst).macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 1, 1]);
        for (full, at) in [
            (b.tcp(40000, 80, tcp::ACK, b"some payload"), 54 + 16),
            (b.udp(40000, 53, b"odd"), 54 + 6),
        ] {
            let mut same = full.clone();
            assert!(!complete_partial_checksum(&mut same));
            assert_eq!(same, full);
            let mut p = full.clone();
            let ps = checksum::pseudo_header6(&src, &dst, full[20], (full.len() - 54) as u32);
            p[at..at + 2].copy_from_slice(&ps.to_be_bytes());
            assert_ne!(p, full);
            assert!(complete_partial_checksum(&mut p));
            assert_eq!(p, full);
            let mut bad = full.clone();
            bad[at + 1] ^= 0x40;
            assert!(!complete_partial_checksum(&mut bad));
        }
        // Behind a destination-options header: the transport is found.
        let with_ext = b
            .clone()
            .ext(Ext6::DestOpts(vec![1, 4, 0, 0, 0, 0]))
            .tcp(40000, 80, tcp::ACK, b"x");
        let at = 54 + 8 + 16;
        let mut p = with_ext.clone();
        let ps = checksum::pseudo_header6(&src, &dst, 6, (with_ext.len() - 62) as u32);
        p[at..at + 2].copy_from_slice(&ps.to_be_bytes());
        assert!(complete_partial_checksum(&mut p));
        assert_eq!(p, with_ext);
        // A fragment is never partial.
        let frags = b.fragments(17, &b.udp_datagram(40000, 53, &[7u8; 64]), &[32], 9);
        let mut f0 = frags[0].clone();
        let before = f0.clone();
        assert!(!complete_partial_checksum(&mut f0));
        assert_eq!(f0, before);
    }

    /// Run ip(8) with `args`; whether it succeeded.
    fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Move the calling thread into a network namespace of its own and
    /// make the veth pair `a`–`b` there, both up; `false` (said on stderr:
    /// the test is skipped) without root or `ip`.
    fn veth_in_own_netns(a: &str, b: &str) -> bool {
        if let Err(e) = sys::unshare_net_for_test() {
            eprintln!("skipped: unshare(CLONE_NEWNET): {e}");
            return false;
        }
        if !ip(&["link", "add", a, "type", "veth", "peer", "name", b]) {
            eprintln!("skipped: cannot create a veth with ip(8)");
            return false;
        }
        assert!(ip(&["link", "set", a, "up"]) && ip(&["link", "set", b, "up"]));
        true
    }

    /// The AF_XDP device's `peek_batch` shows the frames its next batch
    /// takes, in order, with the same bytes and metadata, and takes none: a
    /// second peek sees them again, the batch then delivers exactly them,
    /// and nothing is left after it. Frames to the VIP sent into a veth of
    /// a network namespace of the test's own reach the socket through the
    /// program (needs root and `ip`; skipped otherwise).
    #[test]
    fn peek_batch_shows_the_next_batch_and_takes_nothing() {
        let t = std::thread::spawn(|| {
            if !veth_in_own_netns("xp0", "xp1") {
                return;
            }
            let rx = crate::io::sys::if_info("xp0").unwrap();
            let txi = crate::io::sys::if_info("xp1").unwrap();
            let vip = [198, 18, 100, 1];
            let prog = Arc::new(
                XdpRedirect::load(rx.index, 1, Some(0xc612_0002), None).unwrap_or_else(|e| panic!("{e}")),
            );
            prog.set_addresses(&[u32::from_be_bytes(vip)], &[]).unwrap();
            let mut dev = XdpDevice::open(&prog, rx.index, 0, rx.mac).expect("AF_XDP socket on xp0");
            let tx = crate::io::sys::RawSocket::new(txi.index, 0x0800).expect("packet socket on xp1");
            // Mostly to the device's MAC, one to another host's (pkttype
            // OTHERHOST); sizes and ports differ so order shows.
            let frames: Vec<Vec<u8>> = (0..6u8)
                .map(|i| {
                    let dst = if i == 3 { [2, 0, 0xc6, 0x12, 9, 9] } else { rx.mac };
                    PacketBuilder::new([198, 18, 1, 2 + i], vip)
                        .macs(dst, txi.mac)
                        .udp(40000 + u16::from(i), 53, &vec![i; 18 + 100 * usize::from(i)])
                })
                .collect();
            for f in &frames {
                tx.send(f).expect("send on xp1");
            }
            let peek = |dev: &XdpDevice, max: usize| {
                let mut v: Vec<(Vec<u8>, RxMeta)> = Vec::new();
                dev.peek_batch(max, |d, m| v.push((d.to_vec(), *m)));
                v
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut seen = peek(&dev, 64);
            while seen.len() < frames.len() && std::time::Instant::now() < deadline {
                dev.wait(20).expect("wait");
                seen = peek(&dev, 64);
            }
            let bytes: Vec<Vec<u8>> = seen.iter().map(|(d, _)| d.clone()).collect();
            assert_eq!(bytes, frames, "the frames sent, in order");
            let kinds: Vec<u8> = seen.iter().map(|(_, m)| m.pkttype).collect();
            assert_eq!(kinds, [0, 0, 0, pkttype::OTHERHOST, 0, 0]);
            assert_eq!(peek(&dev, 64), seen, "a second peek sees the same");
            assert_eq!(peek(&dev, 2)[..], seen[..2], "at most max");
            let mut taken: Vec<(Vec<u8>, RxMeta)> = Vec::new();
            let st = dev
                .process_batch(64, |f, _| {
                    taken.push((f.data().to_vec(), f.meta));
                    Action::Drop
                })
                .expect("batch");
            assert_eq!(st.received, frames.len());
            assert_eq!(taken, seen, "the batch delivers what the peek showed");
            assert!(peek(&dev, 64).is_empty(), "nothing left");
        });
        t.join().unwrap();
    }

    /// The program as the director loads it, on a veth in a network
    /// namespace of this test's own (needs root and `ip`; skipped
    /// otherwise): the verifier of the running kernel accepts it, with the
    /// VLAN kfunc where the kernel has one, and it attaches in driver mode
    /// (veth has native XDP); both address maps take entries.
    #[test]
    fn loads_and_attaches_on_a_veth() {
        let t = std::thread::spawn(|| {
            if !veth_in_own_netns("xt0", "xt1") {
                return;
            }
            let info = crate::io::sys::if_info("xt0").unwrap();
            let x =
                XdpRedirect::load(info.index, 1, Some(0xc612_0002), None).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(x.mode(), XdpMode::Native);
            match btf_func_id(VLAN_KFUNC) {
                Ok(Some(_)) => assert_eq!(x.vlan_blind(), None, "the kfunc program was refused"),
                _ => assert!(x.vlan_blind().is_some()),
            }
            x.set_addresses(&[0xc612_6401], &[0xc612_000b]).unwrap();
            let a = |s: &str| u128::from(s.parse::<Ipv6Addr>().unwrap());
            x.set_addresses6(&[a("2001:db8:100::1")], &[a("2001:db8::11")])
                .unwrap();
            assert!(ip(&["addr", "add", "2001:db8::2/64", "dev", "xt0", "nodad"]));
            x.set_addresses6(&[a("2001:db8:100::1")], &[]).unwrap();
            {
                let cur = x.current6.lock().unwrap();
                let own: Ipv6Addr = "2001:db8::2".parse().unwrap();
                assert_eq!(cur.get(&own.octets()), Some(&OWN_ADDR), "{cur:?}");
            }
            // With the fast path, as the director loads it with
            // `xdp_fast_path: true` (the first program detaches with its
            // link when dropped).
            drop(x);
            let f = XdpRedirect::load(info.index, 1, Some(0xc612_0002), Some(fast_server_slots(3)))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(f.mode(), XdpMode::Native);
            assert!(f.fast_path());
            match btf_func_id(VLAN_KFUNC) {
                Ok(Some(_)) => assert_eq!(f.vlan_blind(), None, "the kfunc program was refused"),
                _ => assert!(f.vlan_blind().is_some()),
            }
            let key = fast_key(0xc612_0102, 0xc612_6401, 40000, 80, 6);
            f.fast_install(&key, &fast_value([2, 0, 0, 0, 0, 11], [2, 0, 0, 0, 0, 2], 1))
                .unwrap();
            assert_eq!(f.fast_last_seen(&key).unwrap(), Some(0));
            assert_eq!(f.fast_counters().unwrap(), FastCounters::default());
        });
        t.join().unwrap();
    }
}
