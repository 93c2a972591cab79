//! Per-worker connection (flow) table: which backend each established flow
//! was sent to, so later packets of the flow follow it even when the Maglev
//! table changes.
//!
//! This runs on the **fast path**: every packet does one [`FlowTable::get`]
//! and new flows one [`FlowTable::insert`]. Each worker owns its own table, so
//! there is no locking, and all memory is allocated in [`FlowTable::new`]:
//! nothing allocates afterwards. The table is set-associative: a power-of-two
//! number of buckets of [`WAYS`] entries each; a key lives only in the bucket
//! its hash selects, so a lookup touches one bucket.
//!
//! The bucket is chosen by the flow's *client* (address, port, protocol)
//! only. A NAT flow's reply-direction key (server → client) names the same
//! client, so it lands in the same bucket as its flow and is stored there as
//! a link to it ([`FlowTable::set_reply`], [`FlowTable::get_reply`]): the two
//! directions share one entry, one state and one lifetime, and leave the
//! table together (opte's `LftEntry` pairs its two directions for the same
//! reason: a half-evicted NAT flow can be neither forwarded nor re-picked).
//!
//! When a bucket is full, room is made by taking, in order: an expired flow;
//! else the least recently used flow that never completed a handshake
//! (`TcpSyn`: what a spoofed SYN flood creates); else the least recently used
//! flow of any other state. Each is counted by kind ([`Evictions`]). Flows
//! synced from another director ([`FlowEntry::origin`] not 0) take no
//! separate rank: by state like any other, by the sender's last packet
//! (which the sync carries) in the LRU order. So a synced established flow
//! never leaves before a local embryonic one, and a synced flow nobody
//! refreshes ages out of the LRU order like a local one gone quiet. Every
//! flow that leaves the table (expired, evicted, removed) is reported to the
//! caller's `removed` callback so per-backend connection counters stay exact.
//!
//! Times are the caller's millisecond clock as a wrapping `u32` (wraps every
//! ~49.7 days). Ages are computed with `wrapping_sub`, which is correct as long
//! as `now` never goes backwards and every entry is looked at (by `get` or
//! `sweep`) within 2^31 ms of its last packet; a periodic [`FlowTable::sweep`]
//! of the whole table guarantees that.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use super::table::BackendId;

/// Entries per bucket. 8 × 32-byte entries = 256 bytes = 4 cache lines; the
/// per-bucket 16-bit tags (one cache line for 4 buckets) are checked first so
/// a lookup usually reads a single entry line.
pub const WAYS: usize = 8;

/// Identity of a flow. Addresses are host-order `u32`.
///
/// `repr(C, packed(2))` makes the key 14 bytes instead of 16 so that
/// [`FlowEntry`] fits in 32 bytes (two per cache line). The cost: a reference
/// to `src`/`dst` cannot be taken (e.g. `format!("{}", k.src)` does not
/// compile; write `{ k.src }` or copy to a local). Reading and writing fields
/// by value works as usual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C, packed(2))]
pub struct FlowKey {
    /// Source address (the client, for a flow's original direction).
    pub src: u32,
    /// Destination address (the virtual service; the client for a reply key).
    pub dst: u32,
    /// Source port (0 when the protocol has none).
    pub sport: u16,
    /// Destination port (0 when the protocol has none).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// A key the flow table can hold: the IPv4 [`FlowKey`] or the IPv6
/// [`FlowKey6`]. The table is generic over it so each family gets its own
/// monomorphised table: the IPv4 entry stays 32 bytes and its per-frame code
/// is what it was, while IPv6 flows live in a second table of larger
/// entries (only as large as the configured IPv6 capacity).
pub trait Key: Copy + Eq + std::fmt::Debug {
    /// The key of a free way.
    const ZERO: Self;
    /// (client part, other part) of the key as words, for hashing; `reply`
    /// reads it as a reply key (the client is the destination). The client
    /// word depends on the client's address, port and the protocol only, so
    /// a NAT flow and its reply key share a bucket. Equal keys give equal
    /// words (the table compares whole keys, so words may collide).
    fn words(&self, reply: bool) -> (u64, u64);
}

impl Key for FlowKey {
    const ZERO: Self = FlowKey {
        src: 0,
        dst: 0,
        sport: 0,
        dport: 0,
        proto: 0,
    };

    /// Lossless, so equal words ⇔ equal keys.
    #[inline(always)]
    fn words(&self, reply: bool) -> (u64, u64) {
        let (caddr, cport, oaddr, oport) = if reply {
            (self.dst, self.dport, self.src, self.sport)
        } else {
            (self.src, self.sport, self.dst, self.dport)
        };
        let client = (u64::from(caddr) << 24) | (u64::from(cport) << 8) | u64::from(self.proto);
        let other = (u64::from(oaddr) << 16) | u64::from(oport);
        (client, other)
    }
}

/// Identity of an IPv6 flow (addresses as big-endian `u128`); otherwise as
/// [`FlowKey`]. Packed to 4-byte alignment so an entry is 60 bytes, not 80.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C, packed(4))]
pub struct FlowKey6 {
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// 128 bits to 64 (a multiply, so every bit of both halves counts).
#[inline(always)]
fn fold128(a: u128) -> u64 {
    fold_mul(
        (a >> 64) as u64 ^ 0x243f_6a88_85a3_08d3,
        a as u64 ^ 0x1319_8a2e_0370_7344,
    )
}

impl Key for FlowKey6 {
    const ZERO: Self = FlowKey6 {
        src: 0,
        dst: 0,
        sport: 0,
        dport: 0,
        proto: 0,
    };

    #[inline(always)]
    fn words(&self, reply: bool) -> (u64, u64) {
        let (caddr, cport, oaddr, oport) = if reply {
            (self.dst, self.dport, self.src, self.sport)
        } else {
            (self.src, self.sport, self.dst, self.dport)
        };
        let client = fold128(caddr) ^ ((u64::from(cport) << 8) | u64::from(self.proto));
        let other = fold128(oaddr) ^ u64::from(oport);
        (client, other)
    }
}

/// Connection state of a flow; selects its idle timeout (see [`Timeouts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    /// Free way. Never the state of a live entry returned by the table; a live
    /// entry whose state the caller sets to `Empty` expires at the next look.
    Empty = 0,
    /// TCP handshake seen, not yet established.
    TcpSyn,
    /// TCP established.
    TcpEstablished,
    /// TCP FIN or RST seen.
    TcpClosing,
    /// UDP "connection".
    Udp,
    /// Any other protocol.
    Other,
}

/// One flow. The caller may change any field of an entry it holds `&mut`
/// to, except `key` (the entry would no longer be found under its new key).
#[derive(Clone, Copy, Debug)]
pub struct FlowEntry<K: Key = FlowKey> {
    /// Identity (original direction); do not modify through a `&mut FlowEntry`.
    pub key: K,
    /// Current state; selects the idle timeout and the eviction preference.
    pub state: FlowState,
    /// Two small numbers in one byte, so the entry stays 32 bytes: SYN
    /// second chances taken (low 3 bits, [`Self::second_chances`]) and who
    /// created the flow (high 5 bits, [`Self::origin`]). 0 on insert.
    chances_origin: u8,
    /// The backend chosen by the caller.
    pub backend: BackendId,
    /// Time of the last packet on the caller's millisecond clock. The table
    /// never updates it after insert: the caller sets it on each packet.
    pub last_ms: u32,
    /// Time the flow (or its current connection attempt) began.
    pub first_ms: u32,
    /// Initial sequence number of the current TCP connection attempt (that
    /// of its SYN): a SYN repeating it is a retransmission. 0 on insert.
    pub isn: u32,
}

// Two entries per 64-byte cache line, a bucket is exactly 4 lines.
const _: () = assert!(std::mem::size_of::<FlowEntry>() == 32);
const _: () = assert!(std::mem::size_of::<FlowEntry<FlowKey6>>() == 60);

/// Most SYN second chances [`FlowEntry`] can record (3 bits).
pub const MAX_SECOND_CHANCES: u8 = 7;
/// Largest origin [`FlowEntry`] can record (5 bits): flows from up to 31
/// sync peers are told apart.
pub const MAX_ORIGIN: u8 = 31;
const CHANCES_BITS: u32 = 3;
const CHANCES_MASK: u8 = (1 << CHANCES_BITS) - 1;

impl<K: Key> FlowEntry<K> {
    /// A free way.
    const EMPTY: Self = FlowEntry {
        key: K::ZERO,
        state: FlowState::Empty,
        chances_origin: 0,
        backend: 0,
        last_ms: 0,
        first_ms: 0,
        isn: 0,
    };

    /// SYN second chances taken: the flow's backend is this many steps
    /// along its Maglev preference order. 0 on insert.
    #[inline(always)]
    pub fn second_chances(&self) -> u8 {
        self.chances_origin & CHANCES_MASK
    }

    /// Record `n` second chances (at most [`MAX_SECOND_CHANCES`]; more is
    /// recorded as that many).
    #[inline(always)]
    pub fn set_second_chances(&mut self, n: u8) {
        self.chances_origin = (self.chances_origin & !CHANCES_MASK) | n.min(MAX_SECOND_CHANCES);
    }

    /// Who created the flow: 0 = this director (a frame of it arrived
    /// here first), else 1 + the index of the flow-sync peer it was synced
    /// from (see `dataplane::synclink`). 0 on insert.
    #[inline(always)]
    pub fn origin(&self) -> u8 {
        self.chances_origin >> CHANCES_BITS
    }

    /// Record the flow's origin (at most [`MAX_ORIGIN`]; more is recorded
    /// as that).
    #[inline(always)]
    pub fn set_origin(&mut self, origin: u8) {
        self.chances_origin = (origin.min(MAX_ORIGIN) << CHANCES_BITS) | (self.chances_origin & CHANCES_MASK);
    }
}

/// Why a live or expired flow was taken out of a full bucket to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionKind {
    /// Idle past its timeout (not yet swept).
    Expired,
    /// A TCP flow that never completed its handshake (`TcpSyn`).
    Embryonic,
    /// Any other live flow (established, closing, UDP, other).
    Established,
}

/// Flows taken out of full buckets, by [`EvictionKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    pub expired: u64,
    pub embryonic: u64,
    pub established: u64,
}

impl Evictions {
    fn count(&mut self, kind: EvictionKind) {
        match kind {
            EvictionKind::Expired => self.expired += 1,
            EvictionKind::Embryonic => self.embryonic += 1,
            EvictionKind::Established => self.established += 1,
        }
    }
}

/// Idle timeouts per state, in milliseconds. An entry expires when
/// `now - last_ms > timeout` (so it is still live at exactly `timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// [`FlowState::TcpSyn`].
    pub tcp_syn_ms: u32,
    /// [`FlowState::TcpEstablished`].
    pub tcp_ms: u32,
    /// [`FlowState::TcpClosing`].
    pub tcp_closing_ms: u32,
    /// [`FlowState::Udp`].
    pub udp_ms: u32,
    /// [`FlowState::Other`].
    pub other_ms: u32,
}

impl Default for Timeouts {
    /// LVS-like defaults: SYN 120 s, established 900 s, closing 120 s, UDP 300 s,
    /// other 60 s.
    fn default() -> Self {
        Timeouts {
            tcp_syn_ms: 120_000,
            tcp_ms: 900_000,
            tcp_closing_ms: 120_000,
            udp_ms: 300_000,
            other_ms: 60_000,
        }
    }
}

impl Timeouts {
    /// The idle timeout of `state` (0 for `Empty`).
    #[inline(always)]
    pub fn of(&self, state: FlowState) -> u32 {
        match state {
            FlowState::Empty => 0,
            FlowState::TcpSyn => self.tcp_syn_ms,
            FlowState::TcpEstablished => self.tcp_ms,
            FlowState::TcpClosing => self.tcp_closing_ms,
            FlowState::Udp => self.udp_ms,
            FlowState::Other => self.other_ms,
        }
    }

    #[inline(always)]
    fn expired<K: Key>(&self, e: &FlowEntry<K>, now: u32) -> bool {
        now.wrapping_sub(e.last_ms) > self.of(e.state)
    }
}

/// What a used way holds: a flow (its original direction), or the reply key
/// of the flow in another way of the same bucket. One byte per way, kept
/// beside the tags so [`FlowEntry`] stays 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Link(u8);

impl Link {
    const FLOW: Link = Link(0);

    fn reply_of(w: usize) -> Link {
        Link(w as u8 + 1)
    }

    /// The way of the flow this reply key belongs to; `None` for a flow.
    #[inline(always)]
    fn partner(self) -> Option<usize> {
        self.0.checked_sub(1).map(usize::from)
    }

    #[inline(always)]
    fn is_reply(self) -> bool {
        self.0 != 0
    }
}

/// A bucket's entries, cache-line aligned so no entry straddles two lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket<K: Key>([FlowEntry<K>; WAYS]);

/// Fixed-capacity, set-associative flow table owned by one worker.
pub struct FlowTable<K: Key = FlowKey> {
    /// Per way: 0 = free, else 16 bits of the key's hash (never 0). Kept apart
    /// from the entries so the scan of a bucket reads 16 bytes, not 256.
    tags: Box<[[u16; WAYS]]>,
    /// Per way: flow or reply key (meaningful where the tag is not 0).
    links: Box<[[Link; WAYS]]>,
    buckets: Box<[Bucket<K>]>,
    /// `buckets.len() - 1` (power of two).
    mask: usize,
    /// Per-table random hash seeds: flow keys are chosen by the remote side, and
    /// a fixed hash would let it aim all its flows at one bucket and evict
    /// legitimate flows.
    seed: [u64; 2],
    len: usize,
    /// Next bucket [`FlowTable::sweep`] looks at.
    cursor: usize,
    timeouts: Timeouts,
    evictions: Evictions,
    expirations: u64,
}

impl<K: Key> std::fmt::Debug for FlowTable<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("timeouts", &self.timeouts)
            .field("evictions", &self.evictions)
            .field("expirations", &self.expirations)
            .finish_non_exhaustive()
    }
}

/// 64×64→128-bit multiply folded to 64 bits (as in wyhash/xxh3): every input
/// bit reaches the high bits of the result.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl FlowTable {
    /// The capacity a table asked for `capacity` gets: [`WAYS`] × a
    /// power-of-two number of buckets (the director logs it).
    ///
    /// # Panics
    ///
    /// Panics if the rounded capacity overflows `usize`.
    pub fn rounded_capacity(capacity: usize) -> usize {
        capacity
            .div_ceil(WAYS)
            .checked_next_power_of_two()
            .and_then(|nb| nb.checked_mul(WAYS))
            .expect("flow table capacity too large")
    }
}

impl<K: Key> FlowTable<K> {
    /// An empty table holding at least `capacity` flows: the capacity is
    /// rounded up to [`WAYS`] × a power-of-two number of buckets. This is the
    /// only allocation the table ever makes.
    ///
    /// # Panics
    ///
    /// Panics if `capacity == 0` or if the rounded capacity overflows `usize`.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        assert!(capacity > 0, "flow table capacity must be > 0");
        let nb = FlowTable::rounded_capacity(capacity) / WAYS;
        // Random per process and per table (RandomState is keyed from the OS
        // once, then incremented for each new state).
        let rs = RandomState::new();
        let seed = [0u64, 1].map(|i| {
            let mut h = rs.build_hasher();
            h.write_u64(i);
            h.finish()
        });
        FlowTable {
            tags: vec![[0u16; WAYS]; nb].into_boxed_slice(),
            links: vec![[Link::FLOW; WAYS]; nb].into_boxed_slice(),
            buckets: vec![Bucket([FlowEntry::EMPTY; WAYS]); nb].into_boxed_slice(),
            mask: nb - 1,
            seed,
            len: 0,
            cursor: 0,
            timeouts,
            evictions: Evictions::default(),
            expirations: 0,
        }
    }

    /// Maximum number of live entries (requested capacity rounded up). A NAT
    /// flow with its reply key takes two.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Number of ways in use (including expired flows not yet looked at; a
    /// NAT flow with its reply key counts two).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replace the idle timeouts; applies to existing entries at their next look.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// Current idle timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Live (unexpired) flows evicted to make room for a new one: embryonic
    /// plus established in [`Self::evictions_by_kind`].
    pub fn evictions(&self) -> u64 {
        self.evictions.embryonic + self.evictions.established
    }

    /// Flows taken out of full buckets, by kind. Expired ones are also
    /// counted in [`Self::expirations`].
    pub fn evictions_by_kind(&self) -> Evictions {
        self.evictions
    }

    /// Flows removed because they were idle past their timeout (by `get`,
    /// `insert` or `sweep`).
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    /// Bytes of memory held by the table (for the "1M flows in ≤ 128 MB"
    /// target): ~35 bytes per slot of capacity.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val::<[Bucket<K>]>(&self.buckets)
            + std::mem::size_of_val::<[[u16; WAYS]]>(&self.tags)
            + std::mem::size_of_val::<[[Link; WAYS]]>(&self.links)
    }

    /// Bucket index and tag of `key` read as a flow (`reply` false) or as a
    /// reply key.
    #[inline(always)]
    fn locate(&self, key: &K, reply: bool) -> (usize, u16) {
        let (client, other) = key.words(reply);
        // The bucket depends on the client only (so a NAT flow and its reply
        // key share it): two rounds, the first mixes in the secret seeds, the
        // second spreads the result over all 64 bits.
        let h = fold_mul(client ^ self.seed[0], self.seed[1] | 1);
        let h = fold_mul(h ^ 0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db);
        // The tag tells keys of one bucket apart, so it covers the rest.
        let t = fold_mul(h ^ other, 0x8ebc_6af0_9c88_c6e3);
        // Tag 0 marks a free way; folding 0 into 1 costs nothing measurable.
        ((h as usize) & self.mask, ((t >> 48) as u16).max(1))
    }

    /// Hand `hint` the address of every cache line a lookup of `key` (read
    /// as a flow, or as a reply key when `reply`) reads: the bucket's tags
    /// and links and its entries. The worker passes a prefetch, for every
    /// frame of a batch before it handles the first, so the misses of a
    /// table far larger than the cache overlap. Reads and changes nothing.
    #[inline(always)]
    pub fn prefetch(&self, key: &K, reply: bool, mut hint: impl FnMut(*const u8)) {
        let (b, _) = self.locate(key, reply);
        hint(self.tags[b].as_ptr().cast());
        hint(self.links[b].as_ptr().cast());
        let entries: *const u8 = self.buckets[b].0.as_ptr().cast();
        for line in 0..std::mem::size_of::<Bucket<K>>().div_ceil(64) {
            hint(entries.wrapping_add(line * 64));
        }
    }

    /// Way of `key` (as a flow, or as a reply key) in bucket `b`, if present.
    #[inline(always)]
    fn find(&self, b: usize, tag: u16, key: &K, reply: bool) -> Option<usize> {
        let tags = &self.tags[b];
        (0..WAYS).find(|&w| {
            tags[w] == tag && self.links[b][w].is_reply() == reply && self.buckets[b].0[w].key == *key
        })
    }

    /// Free way `w` of bucket `b`; what it held.
    #[inline]
    fn clear_way(&mut self, b: usize, w: usize) -> FlowEntry<K> {
        self.tags[b][w] = 0;
        self.links[b][w] = Link::FLOW;
        self.len -= 1;
        std::mem::replace(&mut self.buckets[b].0[w], FlowEntry::EMPTY)
    }

    /// Free the flow in way `w` of bucket `b` with its reply key, and report
    /// the flow. The table is updated before the callback runs so it stays
    /// consistent if the callback panics.
    #[inline]
    fn clear_flow(&mut self, b: usize, w: usize, removed: &mut impl FnMut(&FlowEntry<K>)) {
        for r in 0..WAYS {
            if self.tags[b][r] != 0 && self.links[b][r].partner() == Some(w) {
                self.clear_way(b, r);
            }
        }
        let old = self.clear_way(b, w);
        removed(&old);
    }

    /// The live flow in way `w` of bucket `b`, or `None` after removing it
    /// (with its reply key) if it expired at `now`.
    #[inline]
    fn live(
        &mut self,
        b: usize,
        w: usize,
        now: u32,
        removed: &mut impl FnMut(&FlowEntry<K>),
    ) -> Option<&mut FlowEntry<K>> {
        if self.timeouts.expired(&self.buckets[b].0[w], now) {
            self.expirations += 1;
            self.clear_flow(b, w, removed);
            return None;
        }
        Some(&mut self.buckets[b].0[w])
    }

    /// Find a live flow by its original-direction key. A flow found but
    /// expired at `now` (`now.wrapping_sub(last_ms) >` the timeout of its
    /// state) is removed with its reply key, reported through `removed` (and
    /// counted in [`Self::expirations`]), and `None` is returned. The caller
    /// updates `last_ms` (and `state`) itself.
    #[inline]
    pub fn get(
        &mut self,
        key: &K,
        now: u32,
        removed: &mut impl FnMut(&FlowEntry<K>),
    ) -> Option<&mut FlowEntry<K>> {
        let (b, tag) = self.locate(key, false);
        let w = self.find(b, tag, key, false)?;
        self.live(b, w, now, removed)
    }

    /// Find the live flow whose reply key (see [`Self::set_reply`]) is
    /// `rkey`: the returned entry is the flow itself (its key is the original
    /// direction), so both directions update one state and one lifetime.
    /// Expiry as in [`Self::get`].
    #[inline]
    pub fn get_reply(
        &mut self,
        rkey: &K,
        now: u32,
        removed: &mut impl FnMut(&FlowEntry<K>),
    ) -> Option<&mut FlowEntry<K>> {
        let (b, tag) = self.locate(rkey, true);
        let r = self.find(b, tag, rkey, true)?;
        let w = self.links[b][r].partner()?;
        self.live(b, w, now, removed)
    }

    /// Insert a new flow (the caller has just checked that `get` returned
    /// `None`). Uses a free way of the key's bucket; else takes a flow out of
    /// the bucket (with its reply key): an expired one (counted in
    /// [`Self::expirations`]), else the least recently used embryonic one
    /// (`TcpSyn`), else the least recently used one, each counted by kind in
    /// [`Self::evictions_by_kind`]. Every flow taken out is reported through
    /// `removed`. Should the key be present after all, its flow is replaced
    /// (and reported as removed, counted in neither), so a key is never in
    /// the table twice.
    ///
    /// Returns the new entry with `state`/`backend` set, `last_ms` =
    /// `first_ms` = `now`, no second chances, origin 0 (local) and `isn` = 0.
    ///
    /// # Panics
    ///
    /// Panics if `state` is [`FlowState::Empty`].
    #[inline]
    pub fn insert(
        &mut self,
        key: K,
        state: FlowState,
        backend: BackendId,
        now: u32,
        removed: &mut impl FnMut(&FlowEntry<K>),
    ) -> &mut FlowEntry<K> {
        assert!(state != FlowState::Empty, "cannot insert a flow in state Empty");
        let (b, tag) = self.locate(&key, false);
        let w = self.make_room(b, tag, &key, false, None, now, removed);
        self.tags[b][w] = tag;
        self.links[b][w] = Link::FLOW;
        self.len += 1;
        let e = &mut self.buckets[b].0[w];
        *e = FlowEntry {
            key,
            state,
            chances_origin: 0,
            backend,
            last_ms: now,
            first_ms: now,
            isn: 0,
        };
        e
    }

    /// Give the flow `key` the reply key `rkey` (a NAT flow's server → client
    /// direction), replacing a different reply key it had (its server
    /// changed). Room is made as in [`Self::insert`], never by taking `key`'s
    /// own flow; a reply key another flow had moves to this one.
    ///
    /// Returns false (and changes nothing) when `key` is not in the table or
    /// `rkey` does not name the same client (`rkey.dst`/`dport` must be
    /// `key.src`/`sport`, same protocol).
    pub fn set_reply(&mut self, key: &K, rkey: K, now: u32, removed: &mut impl FnMut(&FlowEntry<K>)) -> bool {
        let (b, tag) = self.locate(key, false);
        let (rb, rtag) = self.locate(&rkey, true);
        let Some(w) = self.find(b, tag, key, false) else {
            return false;
        };
        if rb != b || key.words(false).0 != rkey.words(true).0 {
            return false;
        }
        let old = (0..WAYS).find(|&r| self.tags[b][r] != 0 && self.links[b][r].partner() == Some(w));
        if let Some(r) = old {
            if self.buckets[b].0[r].key == rkey {
                return true;
            }
            self.clear_way(b, r);
        }
        let r = self.make_room(b, rtag, &rkey, true, Some(w), now, removed);
        self.tags[b][r] = rtag;
        self.links[b][r] = Link::reply_of(w);
        self.len += 1;
        self.buckets[b].0[r] = FlowEntry {
            key: rkey,
            backend: self.buckets[b].0[w].backend,
            ..FlowEntry::EMPTY
        };
        true
    }

    /// A free way of bucket `b` for `key` (a flow, or a reply key), emptying
    /// one if needed; never the way `pinned`.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn make_room(
        &mut self,
        b: usize,
        tag: u16,
        key: &K,
        reply: bool,
        pinned: Option<usize>,
        now: u32,
        removed: &mut impl FnMut(&FlowEntry<K>),
    ) -> usize {
        // Common case first, from the tags alone: a duplicate or a free way.
        if let Some(w) = self.find(b, tag, key, reply) {
            if reply {
                self.clear_way(b, w);
            } else {
                self.clear_flow(b, w, removed);
            }
            return w;
        }
        if let Some(w) = self.tags[b].iter().position(|&t| t == 0) {
            return w;
        }
        // Full bucket: only now read the entries. Reply keys leave with their
        // flow, so only flows are candidates; a bucket holds at most one reply
        // key per flow, so besides `pinned` there always is one.
        let mut victim = None;
        let mut worst = (false, 0u32);
        for w in 0..WAYS {
            if Some(w) == pinned || self.links[b][w].is_reply() {
                continue;
            }
            let e = &self.buckets[b].0[w];
            if self.timeouts.expired(e, now) {
                self.expirations += 1;
                self.evictions.count(EvictionKind::Expired);
                self.clear_flow(b, w, removed);
                return w;
            }
            // Embryonic before anything else, the least recently used first.
            let rank = (e.state == FlowState::TcpSyn, now.wrapping_sub(e.last_ms));
            if victim.is_none() || rank >= worst {
                victim = Some(w);
                worst = rank;
            }
        }
        let w = victim.expect("a full bucket holds a flow besides the pinned one");
        self.evictions.count(if worst.0 {
            EvictionKind::Embryonic
        } else {
            EvictionKind::Established
        });
        self.clear_flow(b, w, removed);
        w
    }

    /// Remove the flow of `key` (and its reply key) if present (reported
    /// through `removed`, not counted as eviction or expiration). Returns
    /// whether it was present.
    pub fn remove(&mut self, key: &K, removed: &mut impl FnMut(&FlowEntry<K>)) -> bool {
        let (b, tag) = self.locate(key, false);
        match self.find(b, tag, key, false) {
            Some(w) => {
                self.clear_flow(b, w, removed);
                true
            }
            None => false,
        }
    }

    /// Incremental expiry: scan the next `buckets` buckets (a cursor wraps
    /// around the table; at most the whole table per call), removing expired
    /// flows with their reply keys, reported through `removed` and counted in
    /// [`Self::expirations`]. Calling it regularly bounds both the memory held
    /// by dead flows and the age of any entry (see the module doc on clock wrap).
    pub fn sweep(&mut self, now: u32, buckets: usize, removed: &mut impl FnMut(&FlowEntry<K>)) {
        for _ in 0..buckets.min(self.buckets.len()) {
            let b = self.cursor;
            self.cursor = (b + 1) & self.mask;
            if self.tags[b] == [0; WAYS] {
                continue;
            }
            for w in 0..WAYS {
                if self.tags[b][w] != 0
                    && !self.links[b][w].is_reply()
                    && self.timeouts.expired(&self.buckets[b].0[w], now)
                {
                    self.expirations += 1;
                    self.clear_flow(b, w, removed);
                }
            }
        }
    }

    /// Number of buckets (the range of [`FlowTable::copy_out`]'s cursor).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Show the live flows of buckets `from..from + buckets` (cut at the end
    /// of the table) to `f` with their milliseconds to expiry at `now`,
    /// until `f` returns false; returns the bucket to go on from
    /// ([`FlowTable::bucket_count`] once the table is done). Reply keys are
    /// skipped (each flow is shown once), and so are flows that have expired
    /// but are not swept yet. Read only, no allocation: a worker
    /// copies its table for `ulvsadm flows` in pieces between batches.
    pub fn copy_out(
        &self,
        from: usize,
        buckets: usize,
        now: u32,
        f: &mut impl FnMut(&FlowEntry<K>, u32) -> bool,
    ) -> usize {
        let end = from.saturating_add(buckets).min(self.buckets.len());
        for b in from..end {
            for w in 0..WAYS {
                if self.tags[b][w] == 0 || self.links[b][w].is_reply() {
                    continue;
                }
                let e = &self.buckets[b].0[w];
                // Expired but not yet swept: already gone for the fast path.
                if self.timeouts.expired(e, now) {
                    continue;
                }
                let left = self.timeouts.of(e.state) - now.wrapping_sub(e.last_ms);
                if !f(e, left) {
                    return b;
                }
            }
        }
        end
    }

    /// Visit every live flow mutably, removing (with its reply key) those
    /// for which `f` returns false (reported through `removed`, counted in
    /// neither counter). Slow path: it walks the whole table (e.g. when a
    /// server is removed). `f` must not change `key`.
    pub fn retain(
        &mut self,
        mut f: impl FnMut(&mut FlowEntry<K>) -> bool,
        removed: &mut impl FnMut(&FlowEntry<K>),
    ) {
        for b in 0..self.buckets.len() {
            for w in 0..WAYS {
                if self.tags[b][w] != 0 && !self.links[b][w].is_reply() && !f(&mut self.buckets[b].0[w]) {
                    self.clear_flow(b, w, removed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    /// splitmix64: deterministic test keys without a rand dependency.
    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn rkey(i: u64) -> FlowKey {
        let h = mix(i);
        FlowKey {
            src: h as u32,
            dst: 0x0a00_0001,
            sport: (h >> 32) as u16,
            dport: 443,
            proto: 6,
        }
    }

    fn none(_: &FlowEntry) {}

    fn collect(v: &mut Vec<FlowEntry>) -> impl FnMut(&FlowEntry) + '_ {
        |e: &FlowEntry| v.push(*e)
    }

    fn all_states() -> [FlowState; 5] {
        [
            FlowState::TcpSyn,
            FlowState::TcpEstablished,
            FlowState::TcpClosing,
            FlowState::Udp,
            FlowState::Other,
        ]
    }

    #[test]
    fn capacity_rounding() {
        let t = Timeouts::default();
        assert_eq!(FlowTable::<FlowKey>::new(1, t).capacity(), 8);
        assert_eq!(FlowTable::<FlowKey>::new(8, t).capacity(), 8);
        assert_eq!(FlowTable::<FlowKey>::new(9, t).capacity(), 16);
        assert_eq!(FlowTable::<FlowKey>::new(100, t).capacity(), 128);
        assert_eq!(FlowTable::<FlowKey>::new(1_000_000, t).capacity(), 1 << 20);
    }

    #[test]
    fn second_chances_and_origin_share_a_byte() {
        let mut t = FlowTable::new(64, Timeouts::default());
        let e = t.insert(rkey(1), FlowState::TcpSyn, 2, 10, &mut none);
        for (n, o) in [(0, 31), (7, 0), (3, 17), (7, 31), (1, 1)] {
            e.set_second_chances(n);
            e.set_origin(o);
            assert_eq!((e.second_chances(), e.origin()), (n, o));
            e.set_second_chances(n ^ 5);
            assert_eq!(
                (e.second_chances(), e.origin()),
                (n ^ 5, o),
                "chances leave the origin alone"
            );
            e.set_origin(o ^ 9);
            assert_eq!(
                (e.second_chances(), e.origin()),
                (n ^ 5, o ^ 9),
                "and the other way round"
            );
        }
        e.set_second_chances(200);
        e.set_origin(200);
        assert_eq!((e.second_chances(), e.origin()), (MAX_SECOND_CHANCES, MAX_ORIGIN));
    }

    #[test]
    #[should_panic(expected = "capacity must be > 0")]
    fn zero_capacity_panics() {
        FlowTable::<FlowKey>::new(0, Timeouts::default());
    }

    #[test]
    fn memory_for_1m() {
        let t = FlowTable::<FlowKey>::new(1_000_000, Timeouts::default());
        let mb = t.memory_bytes() as f64 / (1 << 20) as f64;
        eprintln!("MEASURE flow table for 1M flows: {mb:.2} MiB");
        // 2^17 buckets × (256 entries + 16 tags + 8 links) bytes = 35 MiB.
        assert!(t.memory_bytes() <= 36 << 20, "{mb} MiB");
        assert!(t.memory_bytes() >= t.capacity() * 35, "{mb} MiB");
    }

    #[test]
    fn memory_for_1m_with_v6_share() {
        // The worker's IPv6 table is 1/8 of the IPv4 capacity: 60-byte
        // entries in 512-byte buckets.
        let t6 = FlowTable::<FlowKey6>::new(1_000_000 / 8, Timeouts::default());
        let t = FlowTable::<FlowKey>::new(1_000_000, Timeouts::default());
        let mb = (t.memory_bytes() + t6.memory_bytes()) as f64 / (1 << 20) as f64;
        eprintln!("MEASURE flow tables for 1M IPv4 + 131072 IPv6 flows: {mb:.2} MiB");
        assert!(t6.capacity() == 131_072 && mb <= 128.0, "{mb} MiB");
    }

    fn key6(i: u128) -> FlowKey6 {
        FlowKey6 {
            src: 0x2001_0db8_0200_0000_0000_0000_0000_0000 | i,
            dst: 0x2001_0db8_0100_0000_0000_0000_0000_0001,
            sport: 40000 + (i % 1000) as u16,
            dport: 80,
            proto: 6,
        }
    }

    /// The IPv6 table: insert/get/reply/remove, keys differing only in the
    /// high address bits told apart, and a full table still finds its keys.
    #[test]
    fn v6_table_round_trip() {
        let mut t = FlowTable::<FlowKey6>::new(16384, Timeouts::default());
        let mut gone = Vec::new();
        let mut removed = |e: &FlowEntry<FlowKey6>| gone.push(e.key);
        for i in 0..1000u128 {
            t.insert(key6(i), FlowState::TcpSyn, i as u32, 1, &mut removed)
                .isn = 7;
        }
        // Same low bits, different /32: a different flow.
        let mut far = key6(5);
        far.src ^= 1 << 100;
        assert!(t.get(&far, 2, &mut removed).is_none());
        for i in 0..1000u128 {
            let e = t.get(&key6(i), 2, &mut removed).expect("present");
            assert_eq!((e.backend, e.isn), (i as u32, 7));
        }
        let k = key6(3);
        let rk = FlowKey6 {
            src: 0x2001_0db8_0300_0000_0000_0000_0000_0021,
            dst: k.src,
            sport: 8080,
            dport: k.sport,
            proto: 6,
        };
        assert!(t.set_reply(&k, rk, 2, &mut removed));
        assert_eq!(t.get_reply(&rk, 2, &mut removed).map(|e| e.key), Some(k));
        assert!(t.remove(&k, &mut removed));
        assert!(t.get_reply(&rk, 2, &mut removed).is_none());
        assert_eq!(gone, vec![k]);
        assert_eq!(t.len(), 999);
    }

    #[test]
    fn round_trip() {
        let mut t = FlowTable::new(64, Timeouts::default());
        let k = rkey(1);
        assert!(t.is_empty());
        assert!(t.get(&k, 10, &mut none).is_none());
        let e = t.insert(k, FlowState::TcpSyn, 7, 10, &mut none);
        assert_eq!((e.key, e.state, e.backend), (k, FlowState::TcpSyn, 7));
        assert_eq!(
            (e.second_chances(), e.origin(), e.isn, e.last_ms, e.first_ms),
            (0, 0, 0, 10, 10)
        );
        e.isn = 42;
        assert_eq!(t.len(), 1);
        let e = t.get(&k, 20, &mut none).unwrap();
        assert_eq!((e.backend, e.isn), (7, 42));
        e.state = FlowState::TcpEstablished;
        e.last_ms = 20;
        assert_eq!(t.get(&k, 21, &mut none).unwrap().state, FlowState::TcpEstablished);
        assert!(t.get(&rkey(2), 21, &mut none).is_none());
        assert!(!t.remove(&rkey(2), &mut none));
        let mut gone = vec![];
        assert!(t.remove(&k, &mut collect(&mut gone)));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].key, gone[0].backend), (k, 7));
        assert!(t.get(&k, 22, &mut none).is_none());
        assert!(t.is_empty());
        assert_eq!((t.evictions(), t.expirations()), (0, 0));
    }

    #[test]
    fn duplicate_insert_replaces() {
        let mut t = FlowTable::new(64, Timeouts::default());
        let k = rkey(5);
        t.insert(k, FlowState::Udp, 1, 0, &mut none);
        let mut gone = vec![];
        t.insert(k, FlowState::Udp, 2, 5, &mut collect(&mut gone));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].backend, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&k, 6, &mut none).unwrap().backend, 2);
    }

    #[test]
    fn expiry_per_state_and_clock_wrap() {
        let to = Timeouts {
            tcp_syn_ms: 100,
            tcp_ms: 1000,
            tcp_closing_ms: 50,
            udp_ms: 300,
            other_ms: 10,
        };
        // Starts far from and right before the u32 wrap of the ms clock.
        for start in [0u32, 123_456, u32::MAX - 5, u32::MAX] {
            for (i, st) in all_states().into_iter().enumerate() {
                let mut t = FlowTable::new(16, to);
                let k = rkey(i as u64);
                t.insert(k, st, 3, start, &mut none);
                let limit = start.wrapping_add(to.of(st));
                // Still live at exactly the timeout.
                assert!(t.get(&k, limit, &mut none).is_some(), "{st:?} @{start}");
                let mut gone = vec![];
                assert!(t
                    .get(&k, limit.wrapping_add(1), &mut collect(&mut gone))
                    .is_none());
                assert_eq!(gone.len(), 1, "{st:?} @{start}");
                assert_eq!(gone[0].key, k);
                assert_eq!((t.len(), t.expirations(), t.evictions()), (0, 1, 0));
            }
        }
        // Refreshing last_ms across the wrap keeps the flow alive.
        let mut t = FlowTable::new(16, to);
        let k = rkey(9);
        t.insert(k, FlowState::TcpEstablished, 1, u32::MAX - 500, &mut none);
        t.get(&k, u32::MAX - 10, &mut none).unwrap().last_ms = u32::MAX - 10;
        assert!(t.get(&k, 900, &mut none).is_some());
        assert!(t.get(&k, 990, &mut none).is_none());
    }

    /// `n` distinct keys that all land in bucket `b` of `t`.
    fn same_bucket(t: &FlowTable, n: usize) -> (usize, Vec<FlowKey>) {
        let b = t.locate(&rkey(0), false).0;
        let keys: Vec<_> = (0..)
            .map(rkey)
            .filter(|k| t.locate(k, false).0 == b)
            .take(n)
            .collect();
        (b, keys)
    }

    #[test]
    fn full_bucket_evicts_least_recently_used() {
        let mut t = FlowTable::new(64, Timeouts::default());
        let (_, keys) = same_bucket(&t, WAYS + 2);
        for (i, k) in keys[..WAYS].iter().enumerate() {
            t.insert(
                *k,
                FlowState::TcpEstablished,
                i as u32,
                1000 + i as u32,
                &mut none,
            );
        }
        // keys[0] is the oldest by creation but has just seen a packet, so
        // keys[1] is the least recently used.
        t.get(&keys[0], 2000, &mut none).unwrap().last_ms = 2000;
        let mut gone = vec![];
        t.insert(keys[WAYS], FlowState::TcpSyn, 99, 2001, &mut collect(&mut gone));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, keys[1]);
        assert_eq!((t.len(), t.evictions(), t.expirations()), (WAYS, 1, 0));
        assert!(t.get(&keys[0], 2002, &mut none).is_some());
        assert!(t.get(&keys[1], 2002, &mut none).is_none());

        // An expired way is preferred over evicting the LRU one, even if it is
        // not the oldest: keys[WAYS] (SYN, 120 s) expires before keys[2]
        // (established, 900 s) although keys[2] is older.
        gone.clear();
        let now = 2001 + 120_001;
        t.insert(keys[WAYS + 1], FlowState::Udp, 5, now, &mut collect(&mut gone));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, keys[WAYS]);
        assert_eq!((t.len(), t.evictions(), t.expirations()), (WAYS, 1, 1));
    }

    #[test]
    fn sweep_removes_exactly_the_expired() {
        let to = Timeouts::default();
        // Sparse (λ ≈ 1 per bucket) so bucket overflow is very unlikely, but
        // the accounting below stays exact even if it happens.
        let mut t = FlowTable::new(16_384, to);
        let now = 1_000_000u32;
        let mut live = HashMap::new();
        let mut gone = vec![];
        for i in 0..2000u64 {
            let st = all_states()[(i % 5) as usize];
            // Ages spread over 0..=2×timeout: about half are expired at `now`.
            let age = (mix(i ^ 0xabc) % (2 * u64::from(to.of(st)) + 1)) as u32;
            let k = rkey(i);
            t.insert(k, st, 0, now, &mut collect(&mut gone)).last_ms = now.wrapping_sub(age);
            live.insert(k, age > to.of(st));
        }
        for e in gone.drain(..) {
            live.remove(&e.key);
        }
        let expect: HashSet<_> = live.iter().filter(|(_, &x)| x).map(|(k, _)| *k).collect();
        assert!(expect.len() > 500);
        assert_eq!(t.len(), live.len());
        let before = t.expirations();
        let nb = t.capacity() / WAYS;
        // Two partial sweeps that together cover every bucket once.
        t.sweep(now, nb / 2, &mut collect(&mut gone));
        t.sweep(now, nb - nb / 2, &mut collect(&mut gone));
        let got: HashSet<_> = gone.iter().map(|e| e.key).collect();
        assert_eq!(got.len(), gone.len(), "reported twice");
        assert_eq!(got, expect);
        assert_eq!(t.len(), live.len() - expect.len());
        assert_eq!(t.expirations() - before, expect.len() as u64);
        // Nothing else is expired: a further full sweep removes nothing.
        t.sweep(now, usize::MAX, &mut |_: &FlowEntry| panic!("removed twice"));
    }

    #[test]
    fn retain_removes_and_updates() {
        let mut t = FlowTable::new(8192, Timeouts::default());
        let mut gone = vec![];
        for i in 0..500u64 {
            t.insert(
                rkey(i),
                FlowState::Udp,
                (i % 4) as u32,
                0,
                &mut collect(&mut gone),
            );
        }
        let lost: HashSet<_> = gone.drain(..).map(|e| e.key).collect();
        let live: Vec<_> = (0..500u64).filter(|&i| !lost.contains(&rkey(i))).collect();
        t.retain(
            |e| {
                e.isn = 1;
                e.backend != 2
            },
            &mut collect(&mut gone),
        );
        assert_eq!(gone.len(), live.iter().filter(|&&i| i % 4 == 2).count());
        assert!(gone.iter().all(|e| e.backend == 2));
        for &i in &live {
            let hit = t.get(&rkey(i), 1, &mut none).map(|e| e.isn);
            assert_eq!(hit, if i % 4 == 2 { None } else { Some(1) }, "{i}");
        }
        assert_eq!(t.len(), live.len() - gone.len());
    }

    #[test]
    fn hash_spreads_structured_keys() {
        // Realistic worst case for a weak hash: one VIP:port, clients from one
        // /16 with sequential ports. At 50 % load an ideal hash overflows
        // ~0.8 % of keys out of 8-way buckets (Poisson(4) tail).
        let mut t = FlowTable::new(1 << 16, Timeouts::default());
        let n = t.capacity() / 2;
        for i in 0..n as u32 {
            let k = FlowKey {
                src: 0xac10_0000 | (i >> 4),
                dst: 0xc000_0201,
                sport: 32768 + (i & 15) as u16,
                dport: 80,
                proto: 6,
            };
            t.insert(k, FlowState::TcpEstablished, 0, 0, &mut none);
        }
        let share = t.evictions() as f64 / n as f64;
        assert!(share < 0.015, "evicted {share}");
    }

    /// Fill bucket `b`'s ways with flows of `keys` in the given states,
    /// created (and last seen) at 1000 + i.
    fn fill(t: &mut FlowTable, keys: &[FlowKey], states: &[FlowState]) {
        for (i, (k, st)) in keys.iter().zip(states).enumerate() {
            t.insert(*k, *st, i as u32, 1000 + i as u32, &mut none);
        }
    }

    #[test]
    fn eviction_prefers_expired_then_embryonic_then_oldest() {
        use FlowState::{TcpEstablished as Est, TcpSyn as Syn};
        let mut t = FlowTable::new(64, Timeouts::default());
        let (_, keys) = same_bucket(&t, WAYS + 4);
        // Established flows are the oldest: LRU alone would take them first.
        let states = [Est, Est, Est, Syn, Est, Syn, Est, Est];
        fill(&mut t, &keys[..WAYS], &states);
        let mut gone = vec![];
        // 1. Two embryonic flows go first, the least recently used of them first.
        for (n, want) in [(WAYS, 3), (WAYS + 1, 5)] {
            gone.clear();
            t.insert(keys[n], Est, 0, 2000, &mut collect(&mut gone));
            assert_eq!(gone.len(), 1);
            assert_eq!(gone[0].key, keys[want], "took {:?}", gone[0].state);
        }
        // 2. No embryonic flow left: the least recently used one (keys[1],
        //    keys[0] just saw a packet).
        t.get(&keys[0], 2001, &mut none).unwrap().last_ms = 2001;
        gone.clear();
        t.insert(keys[WAYS + 2], Syn, 0, 2002, &mut collect(&mut gone));
        assert_eq!(gone[0].key, keys[1]);
        let ev = t.evictions_by_kind();
        assert_eq!((ev.expired, ev.embryonic, ev.established), (0, 2, 1));
        // 3. An expired flow beats a live embryonic one: keys[2] closes
        //    (120 s timeout) and idles past it while keys[WAYS+2] (SYN,
        //    120 s) is younger.
        t.get(&keys[2], 2003, &mut none).unwrap().state = FlowState::TcpClosing;
        let now = 1002 + 120_001 + 1;
        gone.clear();
        t.insert(keys[WAYS + 3], Est, 0, now, &mut collect(&mut gone));
        assert_eq!(gone[0].key, keys[2]);
        assert!(t.get(&keys[WAYS + 2], now, &mut none).is_some());
        let ev = t.evictions_by_kind();
        assert_eq!((ev.expired, ev.embryonic, ev.established), (1, 2, 1));
        assert_eq!((t.evictions(), t.expirations()), (3, 1));
        assert_eq!(t.len(), WAYS);
    }

    /// The reply key (server → client) of flow `k` for server `server`.
    fn reply_of(k: &FlowKey, server: u32) -> FlowKey {
        FlowKey {
            src: server,
            dst: k.src,
            sport: 8080,
            dport: k.sport,
            proto: k.proto,
        }
    }

    #[test]
    fn nat_pair_shares_a_bucket_and_a_lifetime() {
        let to = Timeouts::default();
        let mut t = FlowTable::new(1 << 12, to);
        let k = rkey(7);
        let r = reply_of(&k, 0x0a00_000b);
        assert_eq!(t.locate(&k, false).0, t.locate(&r, true).0);
        assert!(!t.set_reply(&k, r, 0, &mut none), "no flow yet");
        t.insert(k, FlowState::TcpSyn, 3, 0, &mut none);
        // A reply key naming another client is refused.
        assert!(!t.set_reply(&k, reply_of(&rkey(8), 1), 0, &mut none));
        assert!(t.set_reply(&k, r, 0, &mut none));
        assert!(t.set_reply(&k, r, 0, &mut none), "idempotent");
        assert_eq!(t.len(), 2);
        // The reply lookup yields the flow itself: one state, one clock.
        let e = t.get_reply(&r, 10, &mut none).unwrap();
        assert_eq!((e.key, e.backend), (k, 3));
        e.last_ms = 100_000;
        assert_eq!(t.get(&k, 100_001, &mut none).unwrap().last_ms, 100_000);
        // The reply key is not a flow, and the flow's key is not a reply key.
        assert!(t.get(&r, 10, &mut none).is_none());
        assert!(t.get_reply(&k, 10, &mut none).is_none());
        // A new server: the old reply key goes, the new one comes.
        let r2 = reply_of(&k, 0x0a00_000c);
        assert!(t.set_reply(&k, r2, 100_001, &mut none));
        assert_eq!(t.len(), 2);
        assert!(t.get_reply(&r, 100_001, &mut none).is_none());
        assert!(t.get_reply(&r2, 100_001, &mut none).is_some());
        // Expiry through either key removes both, reported once.
        let mut gone = vec![];
        let late = 100_000 + to.tcp_syn_ms + 1;
        assert!(t.get_reply(&r2, late, &mut collect(&mut gone)).is_none());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, k);
        assert!(t.is_empty());
        // Removal of the flow takes its reply key along.
        t.insert(k, FlowState::Udp, 3, 0, &mut none);
        t.set_reply(&k, r, 0, &mut none);
        assert!(t.remove(&k, &mut none));
        assert!(t.is_empty());
        assert!(t.get_reply(&r, 1, &mut none).is_none());
    }

    /// The lines `prefetch` names are those a lookup reads: the entry
    /// `get` returns lies in one of them, for flows in every way of a
    /// bucket, and for a reply key (read as one) too.
    #[test]
    fn prefetch_names_the_lines_a_lookup_reads() {
        let mut t = FlowTable::new(1 << 12, Timeouts::default());
        let line = |p: *const u8| p as usize & !63;
        let lines = |t: &FlowTable, k: &FlowKey, reply: bool| {
            let mut v = vec![];
            t.prefetch(k, reply, |p| v.push(line(p)));
            v
        };
        let (b, keys) = same_bucket(&t, WAYS);
        for (i, k) in keys.iter().enumerate() {
            t.insert(*k, FlowState::Udp, i as u32, 0, &mut none);
        }
        let tags = line(t.tags[b].as_ptr().cast());
        let links = line(t.links[b].as_ptr().cast());
        for k in &keys {
            let seen = lines(&t, k, false);
            assert_eq!(seen.len(), 2 + 4, "tags, links and the bucket's 4 lines");
            assert!(seen.contains(&tags) && seen.contains(&links));
            let e = line((t.get(k, 0, &mut none).unwrap() as *const FlowEntry).cast());
            assert!(seen.contains(&e), "the entry's line");
        }
        // A NAT reply key is looked up in its flow's bucket, not the one its
        // source (the server) would hash to.
        let mut t = FlowTable::new(1 << 12, Timeouts::default());
        let k = rkey(7);
        let r = reply_of(&k, 0x0a00_000b);
        t.insert(k, FlowState::TcpEstablished, 3, 0, &mut none);
        assert!(t.set_reply(&k, r, 0, &mut none));
        let e = line((t.get_reply(&r, 0, &mut none).unwrap() as *const FlowEntry).cast());
        assert!(lines(&t, &r, true).contains(&e));
        assert_eq!(lines(&t, &r, true), lines(&t, &k, false));
    }

    #[test]
    fn nat_pair_evicted_together() {
        use FlowState::{TcpEstablished as Est, TcpSyn as Syn};
        let mut t = FlowTable::new(64, Timeouts::default());
        let (_, keys) = same_bucket(&t, 2 * WAYS);
        // Three NAT flows (6 ways), then two more flows: full.
        for (i, k) in keys[..3].iter().enumerate() {
            t.insert(*k, Est, i as u32, 1000 + i as u32, &mut none);
            assert!(t.set_reply(k, reply_of(k, 1), 1000 + i as u32, &mut none));
        }
        t.insert(keys[3], Est, 3, 1500, &mut none);
        t.insert(keys[4], Est, 4, 1501, &mut none);
        assert_eq!(t.len(), WAYS);
        // The oldest is NAT flow keys[0]: evicted with its reply key, which
        // leaves a free way for the next insert without another eviction.
        let mut gone = vec![];
        t.insert(keys[5], Syn, 5, 2000, &mut collect(&mut gone));
        assert_eq!(gone.iter().map(|e| e.key).collect::<Vec<_>>(), vec![keys[0]]);
        assert!(t.get_reply(&reply_of(&keys[0], 1), 2000, &mut none).is_none());
        assert_eq!(t.len(), WAYS - 1);
        t.insert(keys[6], Syn, 6, 2001, &mut collect(&mut gone));
        assert_eq!(gone.len(), 1);
        assert_eq!(t.len(), WAYS);
        // Giving a flow a reply key in a full bucket evicts another flow
        // (embryonic first), never the flow itself.
        gone.clear();
        assert!(t.set_reply(&keys[3], reply_of(&keys[3], 1), 2002, &mut collect(&mut gone)));
        assert_eq!(gone.iter().map(|e| e.key).collect::<Vec<_>>(), vec![keys[5]]);
        assert!(t.get_reply(&reply_of(&keys[3], 1), 2003, &mut none).is_some());
        assert_eq!(t.len(), WAYS);
        assert_eq!(t.evictions(), 2);
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Insert(u8, u8),
        Get(u8),
        SetReply(u8),
        GetReply(u8),
        Remove(u8),
        Sweep(u8),
        Tick(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), 1u8..6).prop_map(|(k, s)| Op::Insert(k, s)),
            3 => any::<u8>().prop_map(Op::Get),
            2 => any::<u8>().prop_map(Op::SetReply),
            2 => any::<u8>().prop_map(Op::GetReply),
            1 => any::<u8>().prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::Sweep),
            2 => (0u32..400).prop_map(Op::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The table against a model that applies every reported removal:
        /// the two must hold exactly the same flows and reply keys,
        /// len <= capacity, and a live established flow is only ever
        /// evicted from a bucket holding no embryonic flow (but the one the
        /// operation serves).
        #[test]
        fn matches_model(cap in 1usize..40, start in any::<u32>(), ops in prop::collection::vec(op(), 1..300)) {
            let to = Timeouts { tcp_syn_ms: 100, tcp_ms: 1000, tcp_closing_ms: 50, udp_ms: 300, other_ms: 10 };
            let mut t = FlowTable::new(cap, to);
            // Flow -> (backend, has a reply key).
            let mut model: HashMap<FlowKey, (u32, bool)> = HashMap::new();
            let mut now = start;
            let key = |k: u8| rkey(u64::from(k) % 64);
            for (n, op) in ops.into_iter().enumerate() {
                let mut gone = vec![];
                let established_before = t.evictions_by_kind().established;
                let mut served = None;
                match op {
                    Op::Insert(k, s) => {
                        let k = key(k);
                        served = Some(k);
                        if t.get(&k, now, &mut collect(&mut gone)).is_none() {
                            let st = all_states()[usize::from(s) - 1];
                            t.insert(k, st, n as u32, now, &mut collect(&mut gone));
                        }
                    }
                    Op::Get(k) | Op::GetReply(k) => {
                        let k = key(k);
                        let found = if let Op::Get(_) = op {
                            t.get(&k, now, &mut collect(&mut gone))
                        } else {
                            t.get_reply(&reply_of(&k, 1), now, &mut collect(&mut gone))
                        };
                        let found = found.map(|e| {
                            e.last_ms = now;
                            (e.key, e.backend)
                        });
                        // Apply removals before comparing: an expired entry
                        // reported here must be the one asked for.
                        for e in &gone {
                            prop_assert_eq!(e.key, k);
                            model.remove(&e.key);
                        }
                        gone.clear();
                        let want = match (op, model.get(&k)) {
                            (Op::Get(_), Some(&(b, _))) | (Op::GetReply(_), Some(&(b, true))) => Some((k, b)),
                            _ => None,
                        };
                        prop_assert_eq!(found, want);
                    }
                    Op::SetReply(k) => {
                        let k = key(k);
                        served = Some(k);
                        let present = model.contains_key(&k);
                        prop_assert_eq!(t.set_reply(&k, reply_of(&k, 1), now, &mut collect(&mut gone)), present);
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        let present = model.contains_key(&k);
                        prop_assert_eq!(t.remove(&k, &mut collect(&mut gone)), present);
                    }
                    Op::Sweep(b) => t.sweep(now, usize::from(b), &mut collect(&mut gone)),
                    Op::Tick(d) => now = now.wrapping_add(d),
                }
                for e in &gone {
                    prop_assert!(model.remove(&e.key).is_some(), "unknown removal {:?}", e.key);
                }
                if t.evictions_by_kind().established > established_before {
                    // Only insert and set_reply evict; the bucket they used
                    // holds no embryonic flow besides the one served.
                    let served = served.expect("evicted by insert or set_reply");
                    let b = t.locate(&served, false).0;
                    for w in 0..WAYS {
                        let e = &t.buckets[b].0[w];
                        let flow = t.tags[b][w] != 0 && !t.links[b][w].is_reply();
                        prop_assert!(
                            !flow || e.state != FlowState::TcpSyn || e.key == served,
                            "established evicted beside embryonic {:?}", e.key
                        );
                    }
                }
                match op {
                    Op::Insert(k, _) => {
                        let k = key(k);
                        if let Some(e) = t.get(&k, now, &mut none) {
                            let had = model.get(&k).is_some_and(|m| m.1);
                            model.insert(k, (e.backend, had));
                        }
                    }
                    Op::SetReply(k) => {
                        if let Some(m) = model.get_mut(&key(k)) {
                            m.1 = true;
                        }
                    }
                    _ => {}
                }
                let replies = model.values().filter(|m| m.1).count();
                prop_assert!(t.len() <= t.capacity());
                prop_assert_eq!(t.len(), model.len() + replies);
            }
            prop_assert!(t.evictions() + t.expirations() <= 300);
        }
    }
}
