//! In-place frame rewrites (fast path), written with the `wire` views.
//! Each returns what it did or the [`Reason`] it could not, so the worker
//! counts the drop under the counter the rewrite named, never a guess.
//!
//! * DR: only the Ethernet header changes: destination = the server's MAC,
//!   source = the director's own. Keeping the router's source MAC would make
//!   the switch learn the router's MAC on the director's port, and every reply
//!   to the router would be lost.
//! * NAT: destination (inbound) or source (outbound) address and port are
//!   rewritten with RFC 1624 incremental checksum updates; TTL decremented.
//!   A partial checksum (vnet `NEEDS_CSUM`) holds only the pseudo-header sum,
//!   so addresses update it un-complemented and ports (covered by the sum the
//!   kernel completes later) do not touch it, as Linux's
//!   `inet_proto_csum_replace*` does ([`checksum::State`]).
//! * TUN: the IPv4 packet is wrapped in an outer IPv4 header (protocol 4).
//!   Super-frames are segmented here (a vnet header cannot describe IP-in-IP
//!   GSO) and partial checksums completed (the server decapsulates in software
//!   and needs final checksums).
//! * ICMP: echo replies and fragmentation-needed errors are built in place;
//!   errors about NAT flows are translated, quote included ([`icmp::Quote`]).

use crate::fwd::table::{BackendFwd, FwdTable, Mode};
use crate::io::{Frame, TxArena, VnetHdr};
use crate::wire::checksum::{self, State};
use crate::wire::ethernet::{self, EtherType, Mac, HEADER_LEN as ETH};
use crate::wire::ipv4::{self, Protocol};
use crate::wire::{icmp, icmpv6, ipv6, tcp, udp};

use super::classify::Reason;

/// The Ethernet addresses of a frame the director sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Macs {
    pub dst: Mac,
    pub src: Mac,
}

/// How a packet reaches a real server: its service's mode with what that
/// mode needs, resolved once per packet from the published table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToServer {
    /// Direct routing: new MACs only.
    Dr(Macs),
    /// NAT: the destination becomes `rip` (and `rport`, unless the service
    /// keeps the client's port).
    Nat {
        rip: u32,
        rport: Option<u16>,
        macs: Macs,
    },
    /// IP-in-IP to the server, on a link of `mtu` bytes.
    Tun { outer: TunOuter, mtu: u32 },
}

impl ToServer {
    /// The way to backend `b` of `table`.
    ///
    /// # Errors
    /// [`Reason::ServerMacUnknown`] when the server's MAC is not resolved.
    // Always inlined, like `to_server` and `dr`: the enum then never
    // exists in memory (measured: +64 instructions per DR frame otherwise).
    #[inline(always)]
    pub fn new(table: &FwdTable, b: &BackendFwd) -> Result<Self, Reason> {
        let macs = Macs {
            dst: b.mac.ok_or(Reason::ServerMacUnknown)?,
            src: table.director_mac,
        };
        Ok(match b.mode {
            Mode::Dr => ToServer::Dr(macs),
            Mode::Nat => ToServer::Nat {
                rip: b.addr,
                rport: (b.port != 0).then_some(b.port),
                macs,
            },
            Mode::Tun => ToServer::Tun {
                outer: TunOuter {
                    src: table.director_ip,
                    dst: b.addr,
                    macs,
                    ttl: 64,
                },
                mtu: table.mtu,
            },
        })
    }
}

/// What is being sent to a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A TCP/UDP packet or a fragment of one.
    Packet,
    /// An ICMP error quoting a packet the VIP sent.
    IcmpError,
}

/// What a rewrite toward a server did with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Rewritten in place: send it.
    Frame,
    /// Fragmented into the TX arena (TUN, DF clear); the frame is not sent.
    Fragmented,
    /// Segmented into this many frames in the TX arena (TUN of a GSO
    /// super-frame); the frame is not sent.
    Segmented(usize),
    /// Not for the server: turned into an ICMP "fragmentation needed" back
    /// to the sender (the packet counts as dropped, the answer goes out).
    FragNeeded,
    /// TUN over IPv6: turned into an ICMPv6 Packet Too Big back to the
    /// sender (the packet counts as dropped, the answer goes out).
    PacketTooBig,
}

/// Rewrite the frame for a real server.
///
/// # Errors
/// The [`Reason`] the frame cannot be sent.
#[inline(always)]
pub fn to_server(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    how: &ToServer,
    what: Payload,
    ip_id: &mut u16,
) -> Result<Sent, Reason> {
    match (how, what) {
        (ToServer::Dr(macs), _) => dr(f.data_mut(), *macs).map(|()| Sent::Frame),
        (&ToServer::Nat { rip, rport, macs }, Payload::Packet) => {
            let csum = checksum_state(&f.vnet);
            let n = Nat {
                side: NatSide::Dst,
                addr: rip,
                port: rport,
                macs,
            };
            nat(f.data_mut(), csum, &n).map(|()| Sent::Frame)
        }
        (&ToServer::Nat { rip, rport, macs }, Payload::IcmpError) => {
            nat_icmp_error(f.data_mut(), rip, rport, macs).map(|()| Sent::Frame)
        }
        (ToServer::Tun { outer, mtu }, _) => tun(f, arena, outer, *mtu, ip_id),
    }
}

/// What the transport checksum field of a frame with this vnet header holds.
#[inline]
pub fn checksum_state(vnet: &VnetHdr) -> State {
    if vnet.needs_csum() {
        State::Partial
    } else {
        State::Full
    }
}

#[inline]
fn ipv4_of(frame: &[u8]) -> Result<ipv4::Packet<&[u8]>, Reason> {
    let eth = frame.get(ETH..).ok_or(Reason::Runt)?;
    Ok(ipv4::Packet::new_checked(eth)?)
}

/// Rewrite a frame for direct routing.
///
/// # Errors
/// [`Reason::Runt`] when shorter than an Ethernet header (classify
/// guarantees it is not).
#[inline(always)]
pub fn dr(frame: &mut [u8], macs: Macs) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    eth.set_dst(macs.dst);
    eth.set_src(macs.src);
    Ok(())
}

/// Which side of the packet NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatSide {
    /// Inbound: destination address/port (client -> VIP becomes client -> RIP).
    Dst,
    /// Outbound: source address/port (RIP -> client becomes VIP -> client).
    Src,
}

/// A NAT translation of one side of a packet: `A` is the address, `u32`
/// for IPv4 ([`Nat`]) or a big-endian `u128` for IPv6 ([`Nat6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTo<A> {
    pub side: NatSide,
    /// The new address of that side.
    pub addr: A,
    /// The new port of that side; `None` keeps it.
    pub port: Option<u16>,
    /// The frame's new Ethernet addresses.
    pub macs: Macs,
}

/// A NAT translation of one side of an IPv4 packet.
pub type Nat = NatTo<u32>;
/// A NAT translation of one side of an IPv6 packet.
pub type Nat6 = NatTo<u128>;

/// The pseudo-header's share of a transport checksum, the one step of the
/// NAT transport rewrite that depends on the address family.
trait NatAddr: Copy {
    /// `addr` as the IP header holds it, to compare with the old one.
    type Wire: Copy;
    fn wire(self) -> Self::Wire;
    fn tcp(t: &mut tcp::Segment<&mut [u8]>, old: Self::Wire, new: Self::Wire, csum: State);
    fn udp(u: &mut udp::Datagram<&mut [u8]>, old: Self::Wire, new: Self::Wire, csum: State);
}

impl NatAddr for u32 {
    type Wire = u32;
    #[inline(always)]
    fn wire(self) -> u32 {
        self
    }
    #[inline(always)]
    fn tcp(t: &mut tcp::Segment<&mut [u8]>, old: u32, new: u32, csum: State) {
        t.pseudo_header_changed(old, new, csum);
    }
    #[inline(always)]
    fn udp(u: &mut udp::Datagram<&mut [u8]>, old: u32, new: u32, csum: State) {
        u.pseudo_header_changed(old, new, csum);
    }
}

impl NatAddr for u128 {
    type Wire = [u8; 16];
    #[inline(always)]
    fn wire(self) -> [u8; 16] {
        self.to_be_bytes()
    }
    #[inline(always)]
    fn tcp(t: &mut tcp::Segment<&mut [u8]>, old: [u8; 16], new: [u8; 16], csum: State) {
        t.pseudo_header_changed6(&old, &new, csum);
    }
    #[inline(always)]
    fn udp(u: &mut udp::Datagram<&mut [u8]>, old: [u8; 16], new: [u8; 16], csum: State) {
        u.pseudo_header_changed6(&old, &new, csum);
    }
}

/// A transport header NAT rewrites: TCP and UDP keep their checksums
/// differently (UDP's 0 means none), so each says how.
trait NatL4 {
    fn pseudo_changed<A: NatAddr>(&mut self, old: A::Wire, new: A::Wire, csum: State);
    fn rewrite_src_port(&mut self, p: u16, csum: State);
    fn rewrite_dst_port(&mut self, p: u16, csum: State);
}

impl NatL4 for tcp::Segment<&mut [u8]> {
    #[inline(always)]
    fn pseudo_changed<A: NatAddr>(&mut self, old: A::Wire, new: A::Wire, csum: State) {
        A::tcp(self, old, new, csum);
    }
    #[inline(always)]
    fn rewrite_src_port(&mut self, p: u16, csum: State) {
        tcp::Segment::rewrite_src_port(self, p, csum);
    }
    #[inline(always)]
    fn rewrite_dst_port(&mut self, p: u16, csum: State) {
        tcp::Segment::rewrite_dst_port(self, p, csum);
    }
}

impl NatL4 for udp::Datagram<&mut [u8]> {
    #[inline(always)]
    fn pseudo_changed<A: NatAddr>(&mut self, old: A::Wire, new: A::Wire, csum: State) {
        A::udp(self, old, new, csum);
    }
    #[inline(always)]
    fn rewrite_src_port(&mut self, p: u16, csum: State) {
        udp::Datagram::rewrite_src_port(self, p, csum);
    }
    #[inline(always)]
    fn rewrite_dst_port(&mut self, p: u16, csum: State) {
        udp::Datagram::rewrite_dst_port(self, p, csum);
    }
}

/// The transport half of [`nat`] and [`nat6`]: the checksum follows the
/// address change from `old` through the pseudo-header, then `n`'s side
/// gets `n`'s port.
#[inline(always)]
fn nat_l4<A: NatAddr>(mut h: impl NatL4, n: &NatTo<A>, old: A::Wire, csum: State) {
    h.pseudo_changed::<A>(old, n.addr.wire(), csum);
    match (n.side, n.port) {
        (NatSide::Dst, Some(p)) => h.rewrite_dst_port(p, csum),
        (NatSide::Src, Some(p)) => h.rewrite_src_port(p, csum),
        (_, None) => {}
    }
}

/// NAT rewrite of the IPv4 packet in `frame`, whose transport checksum is
/// in state `csum`. A later fragment (non-zero offset) has no transport
/// header: only its address changes.
///
/// # Errors
/// [`Reason::TtlExceeded`] when the TTL runs out (the frame is untouched);
/// a header reason when the packet is malformed (classify guarantees it is
/// not; the frame, dropped, may then be half rewritten).
#[inline]
pub fn nat(frame: &mut [u8], csum: State, n: &Nat) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    let mut ip = ipv4::Packet::new_checked(eth.payload_mut())?;
    if ip.ttl() <= 1 {
        return Err(Reason::TtlExceeded);
    }
    let has_l4 = ip.frag_offset() == 0;
    let proto = ip.protocol();
    ip.decrement_ttl();
    let old = match n.side {
        NatSide::Dst => ip.replace_dst(n.addr),
        NatSide::Src => ip.replace_src(n.addr),
    };
    if has_l4 {
        let short = |_| Reason::TruncatedL4;
        match proto {
            Protocol::Tcp => nat_l4(
                tcp::Segment::new_checked(ip.payload_mut()).map_err(short)?,
                n,
                old,
                csum,
            ),
            Protocol::Udp => nat_l4(
                udp::Datagram::new_checked(ip.payload_mut()).map_err(short)?,
                n,
                old,
                csum,
            ),
            _ => {}
        }
    }
    eth.set_dst(n.macs.dst);
    eth.set_src(n.macs.src);
    Ok(())
}

/// Compute a partial (vnet `NEEDS_CSUM`) checksum in software and clear the
/// flag: the sum over `csum_start` to the end of the IP packet (not of the
/// frame: Ethernet padding is not part of it) goes to
/// `csum_start + csum_offset`.
///
/// # Errors
/// [`Reason::TruncatedL4`] when the offsets do not fit the IP packet.
pub fn complete_checksum(frame: &mut [u8], vnet: &mut VnetHdr) -> Result<(), Reason> {
    if !vnet.needs_csum() {
        return Ok(());
    }
    let end = ETH + ipv4_of(frame)?.total_len();
    let (start, field) = (vnet.csum_start as usize, vnet.csum_offset as usize);
    checksum::complete_partial(&mut frame[..end], start, field).map_err(|_| Reason::TruncatedL4)?;
    vnet.flags &= !VnetHdr::F_NEEDS_CSUM;
    Ok(())
}

/// What an IP-in-IP encapsulation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOuter {
    /// The director's address.
    pub src: u32,
    /// The real server's address.
    pub dst: u32,
    pub macs: Macs,
    pub ttl: u8,
}

/// The outer total length for an inner packet of `inner_len` bytes.
#[inline]
fn outer_len(inner_len: usize) -> Result<u16, Reason> {
    u16::try_from(inner_len + ipv4::MIN_HEADER_LEN).map_err(|_| Reason::LengthOverflow)
}

/// Write the Ethernet and outer IPv4 headers at the start of `out`.
fn write_outer(out: &mut [u8], o: &TunOuter, total_len: u16, flags_frag: u16, id: u16) {
    let mut eth = ethernet::Frame::new_unchecked(out);
    eth.set_dst(o.macs.dst);
    eth.set_src(o.macs.src);
    eth.set_ethertype(EtherType::Ipv4);
    let mut p = ipv4::Packet::new_unchecked(&mut eth.payload_mut()[..ipv4::MIN_HEADER_LEN]);
    p.set_ver_ihl(ipv4::MIN_HEADER_LEN);
    p.set_tos(0);
    p.set_total_len(total_len);
    p.set_ident(id);
    p.set_flags_frag(flags_frag);
    p.set_ttl(o.ttl);
    p.set_protocol(Protocol::IpIp);
    p.set_src(o.src);
    p.set_dst(o.dst);
    p.fill_checksum();
}

/// TUN: send the frame to the server in IP-in-IP, segmenting, fragmenting
/// or answering "fragmentation needed" when it does not fit the MTU.
fn tun(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    o: &TunOuter,
    mtu: u32,
    ip_id: &mut u16,
) -> Result<Sent, Reason> {
    let (df, total, inner) = {
        let ip = ipv4_of(f.data())?;
        let total = ip.total_len();
        // The largest inner packet that will go on the wire.
        let inner = if f.vnet.is_gso() {
            let thl = tcp::Segment::new_checked(ip.payload()).map_or(tcp::MIN_HEADER_LEN, |t| t.header_len());
            (ip.header_len() + thl + f.vnet.gso_size as usize).min(total)
        } else {
            total
        };
        (ip.dont_fragment(), total, inner)
    };
    // Bytes after the IP packet are link padding, not for the tunnel.
    f.set_len(ETH + total);
    let mtu = mtu as usize;
    let fits = inner + ipv4::MIN_HEADER_LEN <= mtu;
    if !fits && !df && !f.vnet.is_gso() {
        // DF clear: fragment the outer packet, as IPVS does.
        let mut vnet = f.vnet;
        complete_checksum(f.data_mut(), &mut vnet)?;
        let id = next_id(ip_id);
        tun_fragment(f.data(), o, id, mtu, arena)?;
        return Ok(Sent::Fragmented);
    }
    if !fits {
        if !df {
            return Err(Reason::TunTooBig);
        }
        let room = mtu.saturating_sub(ipv4::MIN_HEADER_LEN).min(u16::MAX as usize) as u16;
        icmp_frag_needed(f, o.macs.src, room)?;
        return Ok(Sent::FragNeeded);
    }
    if f.vnet.is_gso() {
        let vnet = f.vnet;
        let n = segment_tcp4(f.data(), &vnet, Some((o, ip_id)), arena)?;
        return Ok(Sent::Segmented(n));
    }
    let mut vnet = f.vnet;
    complete_checksum(f.data_mut(), &mut vnet)?;
    f.vnet = vnet;
    let id = next_id(ip_id);
    encap(f, o, total, df, id)?;
    Ok(Sent::Frame)
}

#[inline]
fn next_id(ip_id: &mut u16) -> u16 {
    let id = *ip_id;
    *ip_id = id.wrapping_add(1);
    id
}

/// Wrap the frame's IPv4 packet (no GSO; checksum already complete) in an
/// outer header, in place; link padding after the packet is left out.
///
/// # Errors
/// [`Reason::LengthOverflow`] when the outer length exceeds 65,535,
/// [`Reason::NoBuffer`] when the headroom is too small.
pub fn tun_encap(f: &mut Frame<'_>, o: &TunOuter, id: u16) -> Result<(), Reason> {
    let (inner_len, df) = {
        let ip = ipv4_of(f.data())?;
        (ip.total_len(), ip.dont_fragment())
    };
    encap(f, o, inner_len, df, id)
}

/// [`tun_encap`] of a packet already parsed: `inner_len` bytes, DF as given.
#[inline]
fn encap(f: &mut Frame<'_>, o: &TunOuter, inner_len: usize, df: bool, id: u16) -> Result<(), Reason> {
    let total = outer_len(inner_len)?;
    f.set_len(ETH + inner_len);
    if !f.push_front(ipv4::MIN_HEADER_LEN) {
        return Err(Reason::NoBuffer);
    }
    let flags = if df { ipv4::FLAG_DF } else { 0 };
    write_outer(f.data_mut(), o, total, flags, id);
    Ok(())
}

/// IP-in-IP for a packet too big for the tunnel whose inner DF is clear:
/// fragment the *outer* packet (as IPVS lets the kernel do), each fragment
/// at most `mtu` bytes, into the arena. `frame` is an Ethernet frame with
/// complete checksums. Returns the number of fragments; on failure nothing
/// is left in the arena.
///
/// # Errors
/// [`Reason::NoBuffer`] when the arena is full, [`Reason::LengthOverflow`]
/// when a length or offset does not fit its field, [`Reason::TunTooBig`]
/// when the MTU leaves no room for 8 bytes of payload.
pub fn tun_fragment(
    frame: &[u8],
    o: &TunOuter,
    id: u16,
    mtu: usize,
    arena: &mut TxArena,
) -> Result<usize, Reason> {
    let ip = ipv4_of(frame)?;
    let inner = ip.bytes();
    let step = (mtu.saturating_sub(ipv4::MIN_HEADER_LEN) / 8) * 8;
    if step == 0 {
        return Err(Reason::TunTooBig);
    }
    let n = inner.len().div_ceil(step);
    // The last fragment starts furthest and the first is longest.
    let last_offset = u16::try_from((n - 1) * step / 8).map_err(|_| Reason::LengthOverflow)?;
    if last_offset > ipv4::OFFSET_MASK {
        return Err(Reason::LengthOverflow);
    }
    outer_len(step.min(inner.len()))?;
    let mark = arena.len();
    for (k, chunk) in inner.chunks(step).enumerate() {
        let Some(out) = arena.push(ETH + ipv4::MIN_HEADER_LEN + chunk.len()) else {
            arena.truncate(mark);
            return Err(Reason::NoBuffer);
        };
        let mf = if k + 1 < n { ipv4::FLAG_MF } else { 0 };
        // Both fit: checked above.
        let total = (chunk.len() + ipv4::MIN_HEADER_LEN) as u16;
        let offset = (k * step / 8) as u16;
        write_outer(out, o, total, mf | offset, id);
        ipv4::Packet::new_unchecked(&mut out[ETH..])
            .payload_mut()
            .copy_from_slice(chunk);
    }
    Ok(n)
}

/// Segment a TCPv4 super-frame (vnet GSO) into frames of at most `gso_size`
/// payload bytes, each with complete checksums, optionally wrapped in an
/// IP-in-IP header, into the arena. Returns the number of frames written; on
/// failure nothing is left in the arena.
///
/// # Errors
/// [`Reason::TruncatedL4`] when the frame is not a segmentable TCPv4 frame,
/// [`Reason::LengthOverflow`] when a segment's length does not fit,
/// [`Reason::NoBuffer`] when the arena is full.
pub fn segment_tcp4(
    frame: &[u8],
    vnet: &VnetHdr,
    outer: Option<(&TunOuter, &mut u16)>,
    arena: &mut TxArena,
) -> Result<usize, Reason> {
    let ip = ipv4_of(frame)?;
    if ip.protocol() != Protocol::Tcp {
        return Err(Reason::TruncatedL4);
    }
    let seg = tcp::Segment::new_checked(ip.payload()).map_err(|_| Reason::TruncatedL4)?;
    let (ihl, thl) = (ip.header_len(), seg.header_len());
    let hdrs = ETH + ihl + thl;
    let mss = vnet.gso_size as usize;
    if mss == 0 {
        return Err(Reason::TruncatedL4);
    }
    // The payload ends with the IP packet, not with the frame.
    let payload = seg.payload();
    let n = payload.len().div_ceil(mss).max(1);
    u16::try_from(ihl + thl + mss.min(payload.len())).map_err(|_| Reason::LengthOverflow)?;
    let extra = if outer.is_some() {
        outer_len(ihl + thl + mss.min(payload.len()))?;
        ipv4::MIN_HEADER_LEN
    } else {
        0
    };
    let (seq0, id0, flags, df) = (seg.seq(), ip.ident(), seg.flags(), ip.dont_fragment());
    let mut outer = outer;
    let mark = arena.len();
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let Some(out) = arena.push(hdrs + extra + chunk.len()) else {
            arena.truncate(mark);
            return Err(Reason::NoBuffer);
        };
        let body = &mut out[extra..];
        body[..hdrs].copy_from_slice(&frame[..hdrs]);
        body[hdrs..].copy_from_slice(chunk);
        // Fits: checked above for the longest segment.
        let ip_len = (ihl + thl + chunk.len()) as u16;
        let mut p = ipv4::Packet::new_unchecked(&mut body[ETH..]);
        p.set_total_len(ip_len);
        p.set_ident(id0.wrapping_add(i as u16));
        p.fill_checksum();
        let (src, dst) = (p.src(), p.dst());
        let mut t = tcp::Segment::new_unchecked(p.payload_mut());
        t.set_seq(seq0.wrapping_add((i * mss) as u32));
        let mut fl = flags;
        if i + 1 < n {
            fl &= !(tcp::FIN | tcp::PSH);
        }
        if i > 0 {
            fl &= !tcp::CWR;
        }
        t.set_flags(fl);
        t.fill_checksum(src, dst);
        if let Some((o, id)) = outer.as_mut() {
            // write_outer writes the Ethernet header too, over the copy's.
            let flags = if df { ipv4::FLAG_DF } else { 0 };
            write_outer(out, o, ip_len + ipv4::MIN_HEADER_LEN as u16, flags, **id);
            **id = id.wrapping_add(1);
        }
    }
    Ok(n)
}

/// Turn the frame (a VIP packet that cannot be sent) into an ICMP
/// "fragmentation needed" error to its sender, in place: it quotes the IP
/// header and 8 bytes, as RFC 792 asks.
///
/// # Errors
/// [`Reason::TruncatedL4`] when the packet is shorter than what is quoted,
/// [`Reason::NoBuffer`] without headroom.
pub fn icmp_frag_needed(f: &mut Frame<'_>, my_mac: Mac, mtu: u16) -> Result<(), Reason> {
    const PUSHED: usize = ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN;
    let (router_mac, client, vip, quote_len) = {
        let eth = ethernet::Frame::new_checked(f.data()).map_err(|_| Reason::Runt)?;
        let ip = ipv4::Packet::new_checked(eth.payload())?;
        let quote_len = ip.header_len() + icmp::QUOTED_PAYLOAD_LEN;
        if ip.total_len() < quote_len {
            return Err(Reason::TruncatedL4);
        }
        (eth.src(), ip.src(), ip.dst(), quote_len)
    };
    if !f.push_front(PUSHED) {
        return Err(Reason::NoBuffer);
    }
    // The quote (the packet's first bytes) is already in place after the
    // room just made for the new IP and ICMP headers.
    f.set_len(ETH + PUSHED + quote_len);
    let mut eth = ethernet::Frame::new_unchecked(f.data_mut());
    eth.set_dst(router_mac);
    eth.set_src(my_mac);
    eth.set_ethertype(EtherType::Ipv4);
    let mut p = ipv4::Packet::new_unchecked(eth.payload_mut());
    p.set_ver_ihl(ipv4::MIN_HEADER_LEN);
    p.set_tos(0);
    p.set_total_len((PUSHED + quote_len) as u16);
    p.set_ident(0);
    p.set_flags_frag(ipv4::FLAG_DF);
    p.set_ttl(64);
    p.set_protocol(Protocol::Icmp);
    p.set_src(vip);
    p.set_dst(client);
    p.fill_checksum();
    let mut m = icmp::Message::new_unchecked(p.payload_mut());
    m.set_type(icmp::DEST_UNREACHABLE);
    m.set_code(icmp::CODE_FRAG_NEEDED);
    let mtu = mtu.to_be_bytes();
    m.set_rest([0, 0, mtu[0], mtu[1]]);
    m.fill_checksum();
    f.vnet = VnetHdr::default();
    Ok(())
}

/// Turn an ICMP echo request to a VIP into the reply, in place.
///
/// # Errors
/// [`Reason::TruncatedL4`] when the message is shorter than its header.
pub fn icmp_echo_reply(frame: &mut [u8], my_mac: Mac) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    let mut ip = ipv4::Packet::new_checked(eth.payload_mut())?;
    icmp::Message::new_checked(ip.payload_mut())
        .map_err(|_| Reason::TruncatedL4)?
        .rewrite_type(icmp::ECHO_REPLY);
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(64);
    ip.fill_checksum();
    let sender = eth.src();
    eth.set_dst(sender);
    eth.set_src(my_mac);
    Ok(())
}

/// NAT rewrite of an ICMP error addressed to the VIP whose quoted packet is
/// a reply the VIP sent (VIP:vport -> client): routed on to the real server
/// (TTL - 1), the outer destination and the quoted source become the
/// server's, and the checksums are redone.
///
/// # Errors
/// [`Reason::TtlExceeded`] when the TTL runs out, [`Reason::TruncatedL4`]
/// when the quote is malformed (classify guarantees it is not), another
/// header reason when the packet is.
pub fn nat_icmp_error(frame: &mut [u8], rip: u32, rport: Option<u16>, macs: Macs) -> Result<(), Reason> {
    nat_icmp(
        frame,
        macs,
        |q| {
            q.set_src(rip);
            if let Some(p) = rport {
                q.set_src_port(p);
            }
        },
        |ip| {
            ip.replace_dst(rip);
        },
    )
}

/// NAT rewrite of an ICMP error a real server sent to a client about a
/// packet it received (client -> RIP:rport): the outer source and the quoted
/// destination become the VIP and its port, TTL is decremented, and the
/// quoted IP header and ICMP checksums are redone (the quoted transport
/// checksum is left as IPVS leaves it).
///
/// # Errors
/// As [`nat_icmp_error`].
pub fn nat_icmp_from_server(frame: &mut [u8], vip: u32, vport: u16, macs: Macs) -> Result<(), Reason> {
    nat_icmp(
        frame,
        macs,
        |q| {
            q.set_dst(vip);
            q.set_dst_port(vport);
        },
        |ip| {
            ip.replace_src(vip);
        },
    )
}

/// What both NAT rewrites of an ICMP error share: check the outer header and
/// the TTL, let `quote` rewrite the quoted packet (the ICMP checksum is redone
/// after it), decrement the TTL, let `outer` rewrite the outer addresses and
/// set the MACs.
fn nat_icmp(
    frame: &mut [u8],
    macs: Macs,
    quote: impl FnOnce(&mut icmp::Quote<&mut [u8]>),
    outer: impl FnOnce(&mut ipv4::Packet<&mut [u8]>),
) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    let mut ip = ipv4::Packet::new_checked(eth.payload_mut())?;
    if ip.header_len() != ipv4::MIN_HEADER_LEN {
        return Err(Reason::IpOptions);
    }
    if ip.ttl() <= 1 {
        return Err(Reason::TtlExceeded);
    }
    {
        let mut m = icmp::Message::new_checked(ip.payload_mut()).map_err(|_| Reason::TruncatedL4)?;
        quote(&mut m.quote_mut().map_err(|_| Reason::TruncatedL4)?);
        m.fill_checksum();
    }
    ip.decrement_ttl();
    outer(&mut ip);
    eth.set_dst(macs.dst);
    eth.set_src(macs.src);
    Ok(())
}

// ---- IPv6 ----------------------------------------------------------------
//
// NAT over IPv6 has no IP header checksum: the transport checksum alone
// follows the 128-bit address through the pseudo-header (RFC 1624 over
// eight words). TUN is IPv6-in-IPv6 (next header 41, RFC 2473); IPv6
// routers never fragment, so a packet that does not fit the tunnel gets an
// ICMPv6 Packet Too Big back to its sender (RFC 4443 section 3.2), which
// is what keeps a large transfer alive.

/// NAT rewrite of the IPv6 packet in `frame` whose transport header (TCP
/// or UDP, `proto`) is at frame offset `l4_offset` (after any extension
/// headers) and whose checksum is in state `csum`: `side`'s address becomes
/// `addr` and its port `port` (`None` keeps it), hop limit - 1, new MACs.
///
/// # Errors
/// [`Reason::HopLimitExceeded`] when the hop limit runs out (the frame is
/// untouched); a header reason when the packet is malformed (classify
/// guarantees it is not; the frame, dropped, may then be half rewritten).
#[inline]
pub fn nat6(frame: &mut [u8], l4_offset: usize, proto: u8, csum: State, n: &Nat6) -> Result<(), Reason> {
    let mut eth = ethernet::Frame::new_checked(&mut *frame).map_err(|_| Reason::Runt)?;
    let mut ip = ipv6::Packet::new_checked(eth.payload_mut())?;
    if ip.hop_limit() <= 1 {
        return Err(Reason::HopLimitExceeded);
    }
    ip.decrement_hop_limit();
    let new = n.addr.to_be_bytes();
    let old = match n.side {
        NatSide::Dst => ip.replace_dst(new),
        NatSide::Src => ip.replace_src(new),
    };
    let end = ETH + ip.total_len();
    eth.set_dst(n.macs.dst);
    eth.set_src(n.macs.src);
    let l4 = frame.get_mut(l4_offset..end).ok_or(Reason::V6TruncatedL4)?;
    let short = |_| Reason::V6TruncatedL4;
    match proto {
        ipv6::next_header::TCP => nat_l4(tcp::Segment::new_checked(l4).map_err(short)?, n, old, csum),
        ipv6::next_header::UDP => nat_l4(udp::Datagram::new_checked(l4).map_err(short)?, n, old, csum),
        _ => return Err(Reason::NoService),
    }
    Ok(())
}

/// What an IPv6-in-IPv6 encapsulation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOuter6 {
    /// The director's IPv6 address.
    pub src: u128,
    /// The real server's IPv6 address.
    pub dst: u128,
    pub macs: Macs,
    pub hop_limit: u8,
}

#[inline]
fn ipv6_of(frame: &[u8]) -> Result<ipv6::Packet<&[u8]>, Reason> {
    let eth = frame.get(ETH..).ok_or(Reason::Runt)?;
    Ok(ipv6::Packet::new_checked(eth)?)
}

/// [`complete_checksum`] for an IPv6 frame.
///
/// # Errors
/// [`Reason::V6TruncatedL4`] when the offsets do not fit the IPv6 packet.
pub fn complete_checksum6(frame: &mut [u8], vnet: &mut VnetHdr) -> Result<(), Reason> {
    if !vnet.needs_csum() {
        return Ok(());
    }
    let end = ETH + ipv6_of(frame)?.total_len();
    let (start, field) = (vnet.csum_start as usize, vnet.csum_offset as usize);
    checksum::complete_partial(&mut frame[..end], start, field).map_err(|_| Reason::V6TruncatedL4)?;
    vnet.flags &= !VnetHdr::F_NEEDS_CSUM;
    Ok(())
}

/// Write the Ethernet and outer IPv6 headers at the start of `out` for an
/// inner packet of `inner_len` bytes whose first word (version, traffic
/// class, flow label) is `inner_word0`: the outer header copies the traffic
/// class and flow label, so ECMP and QoS see the flow as before.
fn write_outer6(out: &mut [u8], o: &TunOuter6, inner_len: u16, inner_word0: [u8; 4]) {
    let mut eth = ethernet::Frame::new_unchecked(out);
    eth.set_dst(o.macs.dst);
    eth.set_src(o.macs.src);
    eth.set_ethertype(EtherType::Ipv6);
    let mut p = ipv6::Packet::new_unchecked(&mut eth.payload_mut()[..ipv6::HEADER_LEN]);
    let w = u32::from_be_bytes(inner_word0);
    p.set_ver_tc_flow((w >> 20) as u8, w);
    p.set_payload_len(inner_len);
    p.set_next_header(ipv6::next_header::IPV6);
    p.set_hop_limit(o.hop_limit);
    p.set_src(o.src.to_be_bytes());
    p.set_dst(o.dst.to_be_bytes());
}

/// TUN over IPv6: send the frame's IPv6 packet (transport header at frame
/// offset `l4_offset`) to the server inside an outer IPv6 header,
/// segmenting a GSO super-frame, or turn it into an ICMPv6 Packet Too Big
/// to its sender when a packet (or a segment) plus the 40-byte outer header
/// exceeds `mtu`.
///
/// # Errors
/// The [`Reason`] the frame cannot be sent.
pub fn tun6(
    f: &mut Frame<'_>,
    arena: &mut TxArena,
    o: &TunOuter6,
    mtu: u32,
    l4_offset: usize,
) -> Result<Sent, Reason> {
    let (total, inner, word0) = {
        let ip = ipv6_of(f.data())?;
        let total = ip.total_len();
        // The largest inner packet that will go on the wire.
        let inner = if f.vnet.is_gso() {
            let thl = f
                .data()
                .get(l4_offset..)
                .and_then(|b| tcp::Segment::new_checked(b).ok())
                .map_or(tcp::MIN_HEADER_LEN, |t| t.header_len());
            (l4_offset.saturating_sub(ETH) + thl + f.vnet.gso_size as usize).min(total)
        } else {
            total
        };
        let b = ip.bytes();
        (total, inner, [b[0], b[1], b[2], b[3]])
    };
    // Bytes after the IP packet are link padding, not for the tunnel.
    f.set_len(ETH + total);
    let mtu = mtu as usize;
    if inner + ipv6::HEADER_LEN > mtu {
        // No fragmentation on the way in IPv6: tell the sender the room
        // there is (a host told less than 1280 uses 1280, RFC 8201).
        let room = mtu.saturating_sub(ipv6::HEADER_LEN) as u32;
        icmp6_packet_too_big(f, o.macs.src, room)?;
        return Ok(Sent::PacketTooBig);
    }
    if f.vnet.is_gso() {
        let vnet = f.vnet;
        let n = segment_tcp6(f.data(), &vnet, l4_offset, o, arena)?;
        return Ok(Sent::Segmented(n));
    }
    // The server decapsulates in software: it needs final checksums.
    let mut vnet = f.vnet;
    complete_checksum6(f.data_mut(), &mut vnet)?;
    f.vnet = vnet;
    let inner_len = u16::try_from(total).map_err(|_| Reason::LengthOverflow)?;
    if !f.push_front(ipv6::HEADER_LEN) {
        return Err(Reason::NoBuffer);
    }
    write_outer6(f.data_mut(), o, inner_len, word0);
    Ok(Sent::Frame)
}

/// Cut a TCP-over-IPv6 GSO super-frame (TCP header at frame offset `l4`;
/// the extension headers before it are copied into every segment) into
/// `vnet.gso_size`-byte segments with complete checksums, each wrapped in
/// the outer header of `o`, into the arena. Returns the number of
/// segments; on failure nothing is left in the arena.
///
/// # Errors
/// [`Reason::V6TruncatedL4`] when the frame is not TCP at `l4`, [`Reason::NoBuffer`] when the arena is full,
/// [`Reason::LengthOverflow`] when a length does not fit its field.
pub fn segment_tcp6(
    frame: &[u8],
    vnet: &VnetHdr,
    l4: usize,
    o: &TunOuter6,
    arena: &mut TxArena,
) -> Result<usize, Reason> {
    let ip = ipv6_of(frame)?;
    let end = ETH + ip.total_len();
    if l4 < ETH + ipv6::HEADER_LEN || l4 >= end {
        return Err(Reason::V6TruncatedL4);
    }
    let seg = tcp::Segment::new_checked(&frame[l4..end]).map_err(|_| Reason::V6TruncatedL4)?;
    let thl = seg.header_len();
    let hdrs = l4 + thl;
    let mss = vnet.gso_size as usize;
    if mss == 0 {
        return Err(Reason::V6TruncatedL4);
    }
    let payload = seg.payload();
    let n = payload.len().div_ceil(mss).max(1);
    let ext = l4 - ETH - ipv6::HEADER_LEN;
    u16::try_from(ipv6::HEADER_LEN + ext + thl + mss.min(payload.len()))
        .map_err(|_| Reason::LengthOverflow)?;
    let word0 = [frame[ETH], frame[ETH + 1], frame[ETH + 2], frame[ETH + 3]];
    let (seq0, flags) = (seg.seq(), seg.flags());
    let (src, dst) = (ip.src(), ip.dst());
    const OUT: usize = ipv6::HEADER_LEN;
    let mark = arena.len();
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let Some(out) = arena.push(OUT + hdrs + chunk.len()) else {
            arena.truncate(mark);
            return Err(Reason::NoBuffer);
        };
        let body = &mut out[OUT..];
        body[..hdrs].copy_from_slice(&frame[..hdrs]);
        body[hdrs..].copy_from_slice(chunk);
        // Fits: checked above for the longest segment.
        let inner_len = (ipv6::HEADER_LEN + ext + thl + chunk.len()) as u16;
        ipv6::Packet::new_unchecked(&mut body[ETH..]).set_payload_len(inner_len - ipv6::HEADER_LEN as u16);
        let mut t = tcp::Segment::new_unchecked(&mut body[l4..]);
        t.set_seq(seq0.wrapping_add((i * mss) as u32));
        let mut fl = flags;
        if i + 1 < n {
            fl &= !(tcp::FIN | tcp::PSH);
        }
        if i > 0 {
            fl &= !tcp::CWR;
        }
        t.set_flags(fl);
        t.fill_checksum6(&src, &dst);
        // write_outer6 writes the Ethernet header too, over the copy's.
        write_outer6(out, o, inner_len, word0);
    }
    Ok(n)
}

/// Turn the frame (an IPv6 packet to a VIP that cannot be sent) into an
/// ICMPv6 Packet Too Big to its sender, in place: source the VIP it was
/// sent to, the next-hop MTU `mtu`, and as much of the packet as keeps the
/// error within the IPv6 minimum MTU (1280 bytes). Sent back to the MAC it
/// came from (the client's router), as [`icmp_frag_needed`] does.
///
/// # Errors
/// [`Reason::NoBuffer`] without headroom.
pub fn icmp6_packet_too_big(f: &mut Frame<'_>, my_mac: Mac, mtu: u32) -> Result<(), Reason> {
    const PUSHED: usize = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
    let (router_mac, client, vip, quote_len) = {
        let eth = ethernet::Frame::new_checked(f.data()).map_err(|_| Reason::Runt)?;
        let ip = ipv6::Packet::new_checked(eth.payload())?;
        let quote_len = ip.total_len().min(icmpv6::MAX_QUOTE_LEN);
        (eth.src(), ip.src(), ip.dst(), quote_len)
    };
    if !f.push_front(PUSHED) {
        return Err(Reason::NoBuffer);
    }
    // The quote (the packet's first bytes) is already in place after the
    // room just made for the new IPv6 and ICMPv6 headers.
    f.set_len(ETH + PUSHED + quote_len);
    let mut eth = ethernet::Frame::new_unchecked(f.data_mut());
    eth.set_dst(router_mac);
    eth.set_src(my_mac);
    eth.set_ethertype(EtherType::Ipv6);
    icmpv6::write_error(
        eth.payload_mut(),
        &vip,
        &client,
        64,
        icmpv6::PACKET_TOO_BIG,
        0,
        mtu.to_be_bytes(),
        quote_len,
    )
    .map_err(|_| Reason::V6Truncated)?;
    f.vnet = VnetHdr::default();
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::builder::PacketBuilder;
    use crate::wire::checksum;

    /// An Ethernet + IPv4 + TCP frame with valid checksums (sequence 0,
    /// window 0xffff).
    pub(crate) fn tcp_frame(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        PacketBuilder::new(src, dst)
            .seq(0)
            .window(0xffff)
            .tcp(sport, dport, flags, &[])
    }

    #[test]
    fn dr_changes_only_macs() {
        let orig = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x02);
        let mut f = orig.clone();
        dr(&mut f, MACS).unwrap();
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[12..], &orig[12..]);
    }

    fn l4_ok(f: &[u8]) -> bool {
        let ihl = ((f[14] & 0xf) as usize) * 4;
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        let l4 = &f[14 + ihl..14 + total];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, f[23]]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        let s = checksum::sum(&pseudo, 0);
        checksum::sum(l4, s as u32) == 0xffff
    }

    fn ip_ok(f: &[u8]) -> bool {
        let ihl = ((f[14] & 0xf) as usize) * 4;
        checksum::sum(&f[14..14 + ihl], 0) == 0xffff
    }

    const RS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
    const DIR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const MACS: Macs = Macs {
        dst: RS_MAC,
        src: DIR_MAC,
    };
    /// Director 198.18.0.2 -> server 198.18.0.11.
    const OUTER: TunOuter = TunOuter {
        src: 0xc612_0002,
        dst: 0xc612_000b,
        macs: MACS,
        ttl: 64,
    };

    fn to(side: NatSide, addr: u32, port: Option<u16>) -> Nat {
        Nat {
            side,
            addr,
            port,
            macs: MACS,
        }
    }

    #[test]
    fn nat_inbound_full_checksums() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        assert!(l4_ok(&f) && ip_ok(&f));
        nat(&mut f, State::Full, &to(NatSide::Dst, 0xc612_000b, Some(8080))).unwrap();
        assert_eq!(&f[30..34], &[198, 18, 0, 11]);
        assert_eq!(&f[36..38], &8080u16.to_be_bytes());
        assert_eq!(f[22], 63, "TTL decremented");
        assert!(ip_ok(&f), "IP checksum updated");
        assert!(l4_ok(&f), "TCP checksum updated");
        assert_eq!(&f[0..12], &[RS_MAC, DIR_MAC].concat()[..]);
    }

    #[test]
    fn nat_outbound_full_checksums() {
        let mut f = tcp_frame(0xc612_000b, 0xc612_0102, 8080, 40000, 0x12);
        nat(&mut f, State::Full, &to(NatSide::Src, 0xc612_6401, Some(80))).unwrap();
        assert_eq!(&f[26..30], &[198, 18, 100, 1]);
        assert_eq!(&f[34..36], &80u16.to_be_bytes());
        assert!(ip_ok(&f) && l4_ok(&f));
    }

    #[test]
    fn nat_partial_checksum_updates_pseudo_header_only() {
        // A partial checksum holds the folded pseudo-header sum (not inverted).
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        let pseudo = |f: &[u8]| {
            let mut p = Vec::new();
            p.extend_from_slice(&f[26..34]);
            p.extend_from_slice(&[0, 6, 0, 20]);
            checksum::sum(&p, 0)
        };
        let ps = pseudo(&f);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        nat(&mut f, State::Partial, &to(NatSide::Dst, 0xc612_000b, Some(8080))).unwrap();
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), pseudo(&f));
        // Completing it as the kernel would gives a valid checksum.
        let mut vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        complete_checksum(&mut f, &mut vnet).unwrap();
        assert!(!vnet.needs_csum());
        assert!(l4_ok(&f));
    }

    #[test]
    fn nat_refuses_expiring_ttl() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        f[22] = 1;
        let before = f.clone();
        assert_eq!(
            nat(&mut f, State::Full, &to(NatSide::Dst, 1, None)),
            Err(Reason::TtlExceeded)
        );
        assert_eq!(f, before, "left untouched");
    }

    fn frame_in(buf: &mut [u8], bytes: &[u8], vnet: VnetHdr) -> usize {
        let head = 64;
        buf[head..head + bytes.len()].copy_from_slice(bytes);
        let _ = vnet;
        head
    }

    #[test]
    fn tun_wraps_the_packet() {
        let inner = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x02);
        let mut buf = vec![0u8; 256];
        let head = frame_in(&mut buf, &inner, VnetHdr::default());
        let mut fr = Frame::new(
            &mut buf,
            head,
            inner.len(),
            Default::default(),
            VnetHdr::default(),
        );
        let o = OUTER;
        tun_encap(&mut fr, &o, 7).unwrap();
        let d = fr.data().to_vec();
        assert_eq!(d.len(), inner.len() + 20);
        assert_eq!(&d[0..12], &[RS_MAC, DIR_MAC].concat()[..]);
        assert_eq!(d[14], 0x45);
        assert_eq!(d[23], 4, "protocol IP-in-IP");
        assert_eq!(u16::from_be_bytes([d[16], d[17]]) as usize, inner.len() - 14 + 20);
        assert_eq!(
            u16::from_be_bytes([d[20], d[21]]) & ipv4::FLAG_DF,
            ipv4::FLAG_DF,
            "DF copied"
        );
        assert!(ip_ok(&d));
        assert_eq!(&d[34..], &inner[14..], "inner packet untouched");
    }

    #[test]
    fn segmentation_makes_valid_segments() {
        // A 3000-byte TCP payload super-frame with gso_size 1000.
        let mut f = tcp_frame(
            0xc612_0102,
            0xc612_6401,
            40000,
            80,
            tcp::ACK | tcp::PSH | tcp::FIN,
        );
        f.extend((0..3000).map(|i| (i % 251) as u8));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut arena = TxArena::new(1 << 16, 16);
        let o = OUTER;
        let mut id = 100u16;
        assert_eq!(segment_tcp4(&f, &vnet, Some((&o, &mut id)), &mut arena), Ok(3));
        assert_eq!(id, 103);
        let mut payload = Vec::new();
        for i in 0..3 {
            let seg = arena.frame_with_vnet(i)[VnetHdr::LEN..].to_vec();
            assert_eq!(seg[23], 4);
            assert!(ip_ok(&seg), "outer header");
            let inner = seg[20..].to_vec();
            assert!(ip_ok(&inner) && l4_ok(&inner), "segment {i} checksums");
            let seq = u32::from_be_bytes([inner[38], inner[39], inner[40], inner[41]]);
            assert_eq!(seq, 1000 * i as u32, "the fixture starts at sequence 0");
            let flags = inner[47];
            assert_eq!(flags & tcp::FIN != 0, i == 2, "FIN only on the last");
            payload.extend_from_slice(&inner[54..]);
        }
        assert_eq!(payload, f[54..].to_vec());
        // Without an outer header the segments are plain TCP/IP frames.
        let mut arena = TxArena::new(1 << 16, 16);
        assert_eq!(segment_tcp4(&f, &vnet, None, &mut arena), Ok(3));
        assert!(l4_ok(&arena.frame_with_vnet(0)[VnetHdr::LEN..]));
        // A full arena reports failure rather than sending a partial set.
        let mut small = TxArena::new(2000, 16);
        assert_eq!(segment_tcp4(&f, &vnet, None, &mut small), Err(Reason::NoBuffer));
        assert!(small.is_empty(), "nothing half-sent");
    }

    #[test]
    fn frag_needed_quotes_the_packet() {
        let inner = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        let mut buf = vec![0u8; 256];
        let head = frame_in(&mut buf, &inner, VnetHdr::default());
        let mut fr = Frame::new(
            &mut buf,
            head,
            inner.len(),
            Default::default(),
            VnetHdr::default(),
        );
        icmp_frag_needed(&mut fr, DIR_MAC, 1480).unwrap();
        let d = fr.data().to_vec();
        assert_eq!(d.len(), 14 + 20 + 8 + 28);
        assert_eq!(&d[0..6], &inner[6..12], "back to the router");
        assert_eq!(&d[26..30], &[198, 18, 100, 1], "from the VIP");
        assert_eq!(&d[30..34], &[198, 18, 1, 2], "to the client");
        assert_eq!((d[34], d[35]), (icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED));
        assert_eq!(u16::from_be_bytes([d[40], d[41]]), 1480);
        assert_eq!(checksum::sum(&d[34..], 0), 0xffff);
        assert_eq!(&d[42..70], &inner[14..42], "quotes the IP header and 8 bytes");
        assert!(ip_ok(&d));
    }

    #[test]
    fn echo_reply_in_place() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 0, 0, 0);
        f[23] = 1; // ICMP
        f.truncate(14 + 20 + 12);
        f[16..18].copy_from_slice(&32u16.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..46].copy_from_slice(&[8, 0, 0, 0, 0, 1, 0, 2, b'p', b'i', b'n', b'g']);
        let c = checksum::checksum(&f[34..46]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        icmp_echo_reply(&mut f, DIR_MAC).unwrap();
        assert_eq!(f[34], icmp::ECHO_REPLY);
        assert_eq!(&f[26..30], &[198, 18, 100, 1]);
        assert_eq!(&f[30..34], &[198, 18, 1, 2]);
        assert_eq!(checksum::sum(&f[34..46], 0), 0xffff);
        assert!(ip_ok(&f));
        assert_eq!(&f[6..12], &DIR_MAC);
    }

    #[test]
    fn tun_fragments_the_outer_packet_without_df() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        f.extend((0..1500).map(|i| i as u8));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[20] = 0; // DF clear
        let o = OUTER;
        let mut arena = TxArena::new(1 << 16, 16);
        assert_eq!(tun_fragment(&f, &o, 9, 1500, &mut arena), Ok(2));
        let a = arena.frame_with_vnet(0)[VnetHdr::LEN..].to_vec();
        let b = arena.frame_with_vnet(1)[VnetHdr::LEN..].to_vec();
        assert!(a.len() - 14 <= 1500 && ip_ok(&a) && ip_ok(&b));
        assert_eq!(u16::from_be_bytes([a[20], a[21]]), ipv4::FLAG_MF);
        assert_eq!(u16::from_be_bytes([b[20], b[21]]) as usize, (a.len() - 34) / 8);
        assert_eq!((a[23], b[23]), (4, 4));
        let mut inner = a[34..].to_vec();
        inner.extend_from_slice(&b[34..]);
        assert_eq!(
            inner,
            f[14..].to_vec(),
            "the fragments carry the whole inner packet"
        );
    }

    /// An ICMP error quoting `quoted` (an IP header and 8 bytes), to the VIP.
    fn icmp_error_frame(quoted: &[u8]) -> Vec<u8> {
        let mut f = tcp_frame(0xc000_0201, 0xc612_6401, 0, 0, 0);
        f.truncate(34);
        f[23] = 1;
        let total = (20 + 8 + quoted.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&[3, 4, 0, 0, 0, 0, 5, 0x78]);
        f.extend_from_slice(quoted);
        let c = checksum::checksum(&f[34..]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn nat_icmp_error_refuses_a_quote_with_ihl_below_5() {
        let sent = tcp_frame(0xc612_6401, 0xc612_0102, 80, 40000, 0x10);
        let mut quoted = sent[14..42].to_vec();
        quoted[0] = 0x44; // IHL 4: 16 bytes, shorter than any IPv4 header
        let mut f = icmp_error_frame(&quoted);
        let before = f.clone();
        assert_eq!(
            nat_icmp_error(&mut f, 0xc612_000b, Some(8080), MACS),
            Err(Reason::TruncatedL4)
        );
        assert_eq!(f, before, "left untouched");
    }

    #[test]
    fn segmentation_stops_at_the_ip_total_length() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, tcp::ACK);
        f.extend((0..100).map(|i| i as u8));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0xee; 60]); // bytes beyond the IP packet
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut arena = TxArena::new(1 << 16, 16);
        assert_eq!(segment_tcp4(&f, &vnet, None, &mut arena), Ok(1));
        let seg = arena.frame_with_vnet(0)[VnetHdr::LEN..].to_vec();
        assert_eq!(seg.len(), 14 + 40 + 100);
        assert!(ip_ok(&seg) && l4_ok(&seg));
    }

    #[test]
    fn complete_checksum_stops_at_the_ip_total_length() {
        let mut f = tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, 0x10);
        f.extend_from_slice(b"ab");
        f[16..18].copy_from_slice(&42u16.to_be_bytes());
        let mut p = Vec::new();
        p.extend_from_slice(&f[26..34]);
        p.extend_from_slice(&[0, 6, 0, 22]);
        let ps = checksum::sum(&p, 0);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        f.resize(64, 0xee); // Ethernet padding
        let mut vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        complete_checksum(&mut f, &mut vnet).unwrap();
        assert!(l4_ok(&f));
    }
}
