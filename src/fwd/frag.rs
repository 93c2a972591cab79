//! Fragment table (fast path, one per worker): later fragments of a datagram
//! carry no ports, so the first fragment records the server it was sent to,
//! keyed by (source, destination, IP ID, protocol), and later fragments follow
//! it (as Maglev does). One design for both families: [`FragKey`] (IPv4,
//! 16-bit identification) and [`FragKey6`] (IPv6, 32-bit identification of
//! the fragment header). Direct-mapped and fixed-size: no allocation after
//! construction; a colliding newer datagram simply replaces an older one.
//!
//! Nothing sweeps it, so its times are on a clock that does not wrap in the
//! lifetime of a process (milliseconds as `u64`): an old entry must never look
//! fresh again (a 32-bit millisecond clock wraps after 49.7 days).

/// Identity of a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragKey {
    pub src: u32,
    pub dst: u32,
    pub id: u16,
    pub proto: u8,
}

/// Identity of a fragmented IPv6 datagram (RFC 8200 section 4.5: source,
/// destination and the fragment header's identification; the upper-layer
/// protocol is added as for IPv4, so two protocols never share an entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragKey6 {
    pub src: u128,
    pub dst: u128,
    pub id: u32,
    pub proto: u8,
}

/// A key the fragment table can place: a well-mixed 64-bit hash.
pub trait FragHash: Copy + Eq + Default {
    fn frag_hash(&self) -> u64;
}

impl FragHash for FragKey {
    #[inline]
    fn frag_hash(&self) -> u64 {
        let x = (self.src as u64) << 32 | self.dst as u64;
        let y = (self.id as u64) << 8 | self.proto as u64;
        (x ^ y.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl FragHash for FragKey6 {
    #[inline]
    fn frag_hash(&self) -> u64 {
        // Fold each address to 64 bits, then mix as the IPv4 key does.
        let s = (self.src as u64) ^ ((self.src >> 64) as u64).rotate_left(17);
        let d = (self.dst as u64) ^ ((self.dst >> 64) as u64).rotate_left(41);
        let y = u64::from(self.id) << 8 | u64::from(self.proto);
        let h = (s.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ d).rotate_left(23) ^ y;
        h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry<K> {
    key: K,
    backend: u32,
    at_ms: u64,
    used: bool,
}

/// The table (IPv4 keys unless told otherwise).
#[derive(Debug)]
pub struct FragTable<K = FragKey> {
    entries: Box<[Entry<K>]>,
    timeout_ms: u64,
}

impl<K: FragHash> FragTable<K> {
    /// `slots` is rounded up to a power of two.
    ///
    /// # Panics
    /// If `slots` is 0.
    pub fn new(slots: usize, timeout_ms: u64) -> Self {
        assert!(slots > 0);
        FragTable {
            entries: vec![Entry::default(); slots.next_power_of_two()].into_boxed_slice(),
            timeout_ms,
        }
    }

    #[inline]
    fn slot(&self, k: &K) -> usize {
        (k.frag_hash() >> 40) as usize & (self.entries.len() - 1)
    }

    /// Remember that the datagram `k` goes to `backend`.
    #[inline]
    pub fn insert(&mut self, k: K, backend: u32, now: u64) {
        let i = self.slot(&k);
        self.entries[i] = Entry {
            key: k,
            backend,
            at_ms: now,
            used: true,
        };
    }

    /// The backend of datagram `k`, if its first fragment was seen recently.
    #[inline]
    pub fn get(&self, k: &K, now: u64) -> Option<u32> {
        let e = &self.entries[self.slot(k)];
        (e.used && e.key == *k && now.saturating_sub(e.at_ms) <= self.timeout_ms).then_some(e.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_later() {
        let mut t = FragTable::new(100, 1000);
        let k = FragKey {
            src: 1,
            dst: 2,
            id: 77,
            proto: 17,
        };
        assert_eq!(t.get(&k, 0), None);
        t.insert(k, 5, 10);
        assert_eq!(t.get(&k, 500), Some(5));
        assert_eq!(t.get(&FragKey { id: 78, ..k }, 500), None);
        assert_eq!(t.get(&k, 1011), None, "expired");
    }

    #[test]
    fn v6_first_then_later_and_bounded() {
        let mut t: FragTable<FragKey6> = FragTable::new(64, 1000);
        let k = FragKey6 {
            src: 0x2001_0db8_0200_0000_0000_0000_0000_0007,
            dst: 0x2001_0db8_0100_0000_0000_0000_0000_0001,
            id: 0xdead_beef,
            proto: 17,
        };
        assert_eq!(t.get(&k, 0), None);
        t.insert(k, 5, 10);
        assert_eq!(t.get(&k, 500), Some(5));
        assert_eq!(t.get(&FragKey6 { id: 0xdead_beee, ..k }, 500), None);
        assert_eq!(t.get(&FragKey6 { src: k.src + 1, ..k }, 500), None);
        assert_eq!(t.get(&k, 1011), None, "expired");
        // Many datagrams: the table never grows, a newer one replaces an
        // older one in its slot, and the newest is always found.
        for i in 0..10_000u32 {
            let k = FragKey6 { id: i, ..k };
            t.insert(k, i, 2000);
            assert_eq!(t.get(&k, 2000), Some(i));
        }
        assert_eq!(t.entries.len(), 64);
        // The hash spreads identifications over the slots.
        let used: std::collections::BTreeSet<usize> =
            (0..256u32).map(|i| t.slot(&FragKey6 { id: i, ..k })).collect();
        assert!(used.len() > 48, "{}", used.len());
    }

    #[test]
    fn old_entry_stays_old_past_a_32_bit_wrap() {
        // A 32-bit millisecond clock wraps after 49.7 days; an entry never
        // looked at again must not look fresh when it does.
        let mut t = FragTable::new(16, 30_000);
        let k = FragKey {
            src: 1,
            dst: 2,
            id: 9,
            proto: 17,
        };
        let start = u64::from(u32::MAX) - 1000;
        t.insert(k, 3, start);
        assert_eq!(t.get(&k, start + 30_000), Some(3));
        assert_eq!(t.get(&k, start + (1 << 32)), None);
        assert_eq!(t.get(&k, start + (1 << 32) + 10), None);
    }
}
