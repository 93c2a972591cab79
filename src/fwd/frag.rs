//! Fragment table (fast path, one per worker): later fragments of a datagram
//! carry no ports, so the first fragment records the server it was sent to,
//! keyed by (source, destination, IP ID, protocol), and later fragments follow
//! it (as Maglev does). Direct-mapped and fixed-size: no allocation after
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

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: FragKey,
    backend: u32,
    at_ms: u64,
    used: bool,
}

/// The table.
#[derive(Debug)]
pub struct FragTable {
    entries: Box<[Entry]>,
    timeout_ms: u64,
}

impl FragTable {
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
    fn slot(&self, k: &FragKey) -> usize {
        let x = (k.src as u64) << 32 | k.dst as u64;
        let y = (k.id as u64) << 8 | k.proto as u64;
        let h = (x ^ y.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 40) as usize & (self.entries.len() - 1)
    }

    /// Remember that the datagram `k` goes to `backend`.
    #[inline]
    pub fn insert(&mut self, k: FragKey, backend: u32, now: u64) {
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
    pub fn get(&self, k: &FragKey, now: u64) -> Option<u32> {
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
