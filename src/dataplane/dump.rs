//! `ulvsadm flows` without locking the fast path: the slow path asks each
//! worker for a copy of its flow table through a per-worker [`FlowDump`],
//! and the worker copies between batches.
//!
//! The protocol: the slow path fills the request ([`FlowDump::ask`]: a
//! filter and a buffer preallocated to the most entries it takes), then
//! bumps `asked`. After each batch a worker reads `asked` (one atomic load,
//! the only per-batch cost when nobody asks); when it differs from `done`
//! it takes the slot with `try_lock` (never waiting: the slow path holds it
//! only to fill or read it) and copies the live flows of
//! [`CHUNK_BUCKETS_BUSY`] buckets — the whole table after an idle poll —
//! into the buffer, within its capacity, so it never allocates. When the
//! table is done or the buffer full it sets `done`, and the slow path reads
//! the copy ([`FlowDump::take`]). A copy taken in pieces is not one instant
//! of the table: a flow may show its state from one piece and miss the
//! others, like `ipvsadm -Lnc` reading /proc while the kernel forwards.
//!
//! A worker has two flow tables, IPv4 and IPv6 (`FlowTable<FlowKey6>`): a
//! request copies from the families it asks for ([`FlowDump::ask_client`]:
//! IPv4, or both when it filters nothing; [`FlowDump::ask6`]: IPv6), the
//! IPv4 table first, into one buffer per family, under the same budget of
//! buckets per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::fwd::flow::{FlowKey, FlowKey6, FlowState, FlowTable, Key};
use crate::fwd::table::BackendId;

/// Buckets (8 flows each) a busy worker copies after one batch: about
/// 32,768 flows, 1 MiB read, well under a millisecond.
pub const CHUNK_BUCKETS_BUSY: usize = 4096;

/// A flow key's parts a filter looks at (both families).
pub trait DumpKey: Key {
    /// The address type: `u32` (host order) or `u128` (big-endian).
    type Addr: Copy + Eq + std::fmt::Debug;
    /// (client address, VIP, client port, VIP port, protocol).
    fn parts(&self) -> (Self::Addr, Self::Addr, u16, u16, u8);
}

impl DumpKey for FlowKey {
    type Addr = u32;
    #[inline]
    fn parts(&self) -> (u32, u32, u16, u16, u8) {
        (self.src, self.dst, self.sport, self.dport, self.proto)
    }
}

impl DumpKey for FlowKey6 {
    type Addr = u128;
    #[inline]
    fn parts(&self) -> (u128, u128, u16, u16, u8) {
        (self.src, self.dst, self.sport, self.dport, self.proto)
    }
}

/// Which flows a copy keeps: those to `vip` with protocol `proto` and, when
/// `port` is not 0, destination port `port` (a service). `A` is the
/// address type of the family (`u128` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpFilter<A = u32> {
    /// Host order (IPv6: big-endian `u128`).
    pub vip: A,
    pub port: u16,
    pub proto: u8,
}

impl<A: Copy + Eq> DumpFilter<A> {
    #[inline]
    fn keeps<K: DumpKey<Addr = A>>(&self, k: &K) -> bool {
        let (_, dst, _, dport, proto) = k.parts();
        dst == self.vip && proto == self.proto && (self.port == 0 || dport == self.port)
    }
}

/// Which flows a copy keeps by their client: those from `addr` and, when
/// `port` is set, from that source port (with a service filter on that
/// destination port: one 5-tuple, for `ulvsadm trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFilter<A = u32> {
    /// Host order (IPv6: big-endian `u128`).
    pub addr: A,
    pub port: Option<u16>,
}

impl<A: Copy + Eq> ClientFilter<A> {
    #[inline]
    fn keeps<K: DumpKey<Addr = A>>(&self, k: &K) -> bool {
        let (src, _, sport, _, _) = k.parts();
        src == self.addr && self.port.is_none_or(|p| p == sport)
    }
}

/// One flow as copied (`K`: [`FlowKey6`] for an IPv6 flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpedFlow<K = FlowKey> {
    /// Original direction: client → VIP.
    pub key: K,
    pub state: FlowState,
    pub backend: BackendId,
    /// Milliseconds until it expires if no packet comes.
    pub expires_in_ms: u32,
    /// Who created it: 0 = this director, else 1 + the index of the sync
    /// peer it came from ([`crate::fwd::flow::FlowEntry::origin`]).
    pub origin: u8,
}

/// An IPv6 flow as copied.
pub type DumpedFlow6 = DumpedFlow<FlowKey6>;

/// One family's part of a request and its copy.
#[derive(Debug)]
struct Part<K: DumpKey> {
    /// Whether this request copies this family at all.
    wanted: bool,
    filter: Option<DumpFilter<K::Addr>>,
    client: Option<ClientFilter<K::Addr>>,
    out: Vec<DumpedFlow<K>>,
    /// Next bucket to copy.
    cursor: usize,
    /// The buffer filled up before the table was done.
    truncated: bool,
}

impl<K: DumpKey> Default for Part<K> {
    fn default() -> Self {
        Part {
            wanted: false,
            filter: None,
            client: None,
            out: Vec::new(),
            cursor: 0,
            truncated: false,
        }
    }
}

impl<K: DumpKey> Part<K> {
    fn ask(
        &mut self,
        wanted: bool,
        filter: Option<DumpFilter<K::Addr>>,
        client: Option<ClientFilter<K::Addr>>,
        limit: usize,
    ) {
        *self = Part {
            wanted,
            filter,
            client,
            out: if wanted {
                Vec::with_capacity(limit)
            } else {
                Vec::new()
            },
            cursor: 0,
            truncated: false,
        };
    }

    /// Copy up to `buckets` buckets of `flows`; returns the buckets used and
    /// whether this family is done.
    fn copy(&mut self, flows: &FlowTable<K>, now: u32, buckets: usize) -> (usize, bool) {
        // An empty table is done at once: an IPv4-only director copies in
        // as many pieces as before the IPv6 table existed.
        if !self.wanted || flows.is_empty() || self.cursor >= flows.bucket_count() {
            return (0, true);
        }
        let (filter, client, out) = (self.filter, self.client, &mut self.out);
        let mut full = false;
        let from = self.cursor;
        self.cursor = flows.copy_out(from, buckets, now, &mut |e, left| {
            if filter.is_some_and(|f| !f.keeps(&e.key)) || client.is_some_and(|c| !c.keeps(&e.key)) {
                return true;
            }
            if out.len() == out.capacity() {
                full = true;
                return false;
            }
            out.push(DumpedFlow {
                key: e.key,
                state: e.state,
                backend: e.backend,
                expires_in_ms: left,
                origin: e.origin(),
            });
            true
        });
        self.truncated |= full;
        (self.cursor - from, full || self.cursor >= flows.bucket_count())
    }
}

/// The request and the copy (behind the slot's mutex).
#[derive(Debug, Default)]
struct Slot {
    v4: Part<FlowKey>,
    v6: Part<FlowKey6>,
}

/// One worker's side of `ulvsadm flows`.
#[derive(Debug, Default)]
pub struct FlowDump {
    asked: AtomicU64,
    done: AtomicU64,
    slot: Mutex<Slot>,
}

/// What a worker copied.
#[derive(Debug, Default)]
pub struct Dumped {
    pub flows: Vec<DumpedFlow>,
    /// The IPv6 flows.
    pub flows6: Vec<DumpedFlow6>,
    /// More flows matched than a buffer held.
    pub truncated: bool,
}

impl FlowDump {
    /// Slow path: ask for a copy of at most `limit` flows (`filter`: only
    /// those). A request still running is replaced.
    pub fn ask(&self, filter: Option<DumpFilter>, limit: usize) {
        self.ask_client(filter, None, limit);
    }

    /// [`FlowDump::ask`], keeping only the flows `client` keeps too. With
    /// neither filter, the IPv6 flows are copied too (at most `limit` more).
    pub fn ask_client(&self, filter: Option<DumpFilter>, client: Option<ClientFilter>, limit: usize) {
        let all = filter.is_none() && client.is_none();
        self.request(|s| {
            s.v4.ask(true, filter, client, limit);
            s.v6.ask(all, None, None, limit);
        });
    }

    /// Slow path: ask for a copy of at most `limit` IPv6 flows that `filter`
    /// and `client` keep (no IPv4 flow).
    pub fn ask6(&self, filter: Option<DumpFilter<u128>>, client: Option<ClientFilter<u128>>, limit: usize) {
        self.request(|s| {
            s.v4.ask(false, None, None, limit);
            s.v6.ask(true, filter, client, limit);
        });
    }

    fn request(&self, fill: impl FnOnce(&mut Slot)) {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        fill(&mut s);
        self.asked.fetch_add(1, Ordering::Release);
    }

    /// Slow path: has the worker answered the last request?
    pub fn answered(&self) -> bool {
        self.done.load(Ordering::Acquire) == self.asked.load(Ordering::Acquire)
    }

    /// Slow path: the copy, once [`FlowDump::answered`] (else `None`).
    pub fn take(&self) -> Option<Dumped> {
        if !self.answered() {
            return None;
        }
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        Some(Dumped {
            flows: std::mem::take(&mut s.v4.out),
            flows6: std::mem::take(&mut s.v6.out),
            truncated: s.v4.truncated || s.v6.truncated,
        })
    }

    /// Worker, between batches: go on with a pending request (`idle`: the
    /// last poll had no frames, so copy the whole rest at once).
    #[inline]
    pub fn serve(&self, flows: &FlowTable, flows6: &FlowTable<FlowKey6>, now: u32, idle: bool) {
        let asked = self.asked.load(Ordering::Acquire);
        if asked == self.done.load(Ordering::Relaxed) {
            return;
        }
        self.copy(flows, flows6, now, idle, asked);
    }

    #[cold]
    fn copy(&self, flows: &FlowTable, flows6: &FlowTable<FlowKey6>, now: u32, idle: bool, asked: u64) {
        let Ok(mut guard) = self.slot.try_lock() else {
            return;
        };
        let s = &mut *guard;
        let budget = if idle {
            flows.bucket_count() + flows6.bucket_count()
        } else {
            CHUNK_BUCKETS_BUSY
        };
        let (used, done4) = s.v4.copy(flows, now, budget);
        if !done4 {
            return;
        }
        let (_, done6) = s.v6.copy(flows6, now, budget.saturating_sub(used));
        if done6 {
            self.done.store(asked, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::flow::Timeouts;

    fn key6(src: u128, sport: u16) -> FlowKey6 {
        FlowKey6 {
            src,
            dst: 0x2001_0db8_0100_0000_0000_0000_0000_0001,
            sport,
            dport: 80,
            proto: 6,
        }
    }

    /// Both families come back from one unfiltered request; an IPv6 request
    /// filters by VIP, port and client; an IPv4-filtered one copies no IPv6
    /// flow; a full buffer says so.
    #[test]
    fn copies_ipv6_flows_too() {
        let mut t4: FlowTable = FlowTable::new(64, Timeouts::default());
        let mut t6: FlowTable<FlowKey6> = FlowTable::new(64, Timeouts::default());
        let k4 = FlowKey {
            src: 0xcb00_7107,
            dst: 0xc612_6401,
            sport: 1,
            dport: 80,
            proto: 6,
        };
        t4.insert(k4, FlowState::TcpSyn, 1, 0, &mut |_| {});
        let client = 0x2001_0db8_0000_0000_0000_0000_0000_0c01;
        for p in 1..=3 {
            t6.insert(key6(client, p), FlowState::TcpEstablished, 2, 0, &mut |_| {});
        }
        t6.insert(key6(client + 1, 9), FlowState::TcpEstablished, 3, 0, &mut |_| {});
        let d = FlowDump::default();
        let take = |d: &FlowDump| {
            d.serve(&t4, &t6, 1, true);
            d.take().expect("answered")
        };
        d.ask(None, 10);
        let got = take(&d);
        assert_eq!(got.flows.len(), 1);
        assert_eq!(got.flows6.len(), 4);
        assert!(got.flows6.iter().all(|f| f.key.dst == key6(0, 0).dst));
        d.ask6(
            Some(DumpFilter {
                vip: key6(0, 0).dst,
                port: 80,
                proto: 6,
            }),
            Some(ClientFilter {
                addr: client,
                port: Some(2),
            }),
            10,
        );
        let got = take(&d);
        assert!(got.flows.is_empty());
        assert_eq!(
            got.flows6
                .iter()
                .map(|f| (f.key.sport, f.backend))
                .collect::<Vec<_>>(),
            [(2, 2)]
        );
        d.ask6(
            Some(DumpFilter {
                vip: key6(0, 0).dst,
                port: 443,
                proto: 6,
            }),
            None,
            10,
        );
        assert!(take(&d).flows6.is_empty());
        d.ask(
            Some(DumpFilter {
                vip: 0xc612_6401,
                port: 0,
                proto: 6,
            }),
            1,
        );
        let got = take(&d);
        assert_eq!((got.flows.len(), got.flows6.len(), got.truncated), (1, 0, false));
        d.ask6(None, None, 2);
        let got = take(&d);
        assert_eq!((got.flows6.len(), got.truncated), (2, true));
    }

    /// A busy worker whose IPv4 table takes the whole piece goes on with
    /// the IPv6 table at the next batch; an empty IPv6 table costs nothing.
    #[test]
    fn busy_copy_goes_on_with_ipv6_in_the_next_piece() {
        let mut t4: FlowTable =
            FlowTable::new(CHUNK_BUCKETS_BUSY * crate::fwd::flow::WAYS, Timeouts::default());
        let k4 = FlowKey {
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
            proto: 17,
        };
        t4.insert(k4, FlowState::Udp, 1, 0, &mut |_| {});
        let mut t6: FlowTable<FlowKey6> = FlowTable::new(64, Timeouts::default());
        assert_eq!(t4.bucket_count(), CHUNK_BUCKETS_BUSY);
        let d = FlowDump::default();
        d.ask(None, 10);
        d.serve(&t4, &t6, 1, false);
        assert!(d.answered(), "IPv4 in one piece, no IPv6 flow to copy");
        t6.insert(key6(7, 7), FlowState::Udp, 1, 0, &mut |_| {});
        d.ask(None, 10);
        d.serve(&t4, &t6, 1, false);
        assert!(!d.answered(), "the piece went to the IPv4 table");
        d.serve(&t4, &t6, 1, false);
        assert_eq!(d.take().expect("answered").flows6.len(), 1);
    }
}
