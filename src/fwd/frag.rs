//! Fragment table (fast path, one per worker): later fragments of a datagram
//! carry no ports, so the first fragment records the server it was sent to,
//! keyed by (source, destination, IP ID, protocol), and later fragments follow
//! it (as Maglev does). Direct-mapped and fixed-size: no allocation after
//! construction; a colliding newer datagram simply replaces an older one.

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
    at_ms: u32,
    used: bool,
}

/// The table.
#[derive(Debug)]
pub struct FragTable {
    entries: Box<[Entry]>,
    timeout_ms: u32,
}

impl FragTable {
    /// `slots` is rounded up to a power of two.
    ///
    /// # Panics
    /// If `slots` is 0.
    pub fn new(slots: usize, timeout_ms: u32) -> Self {
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
    pub fn insert(&mut self, k: FragKey, backend: u32, now: u32) {
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
    pub fn get(&self, k: &FragKey, now: u32) -> Option<u32> {
        let e = &self.entries[self.slot(k)];
        (e.used && e.key == *k && now.wrapping_sub(e.at_ms) <= self.timeout_ms).then_some(e.backend)
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
}
