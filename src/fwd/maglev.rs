//! Maglev consistent hashing (Eisenbud et al., NSDI'16): per-backend
//! permutations and the lookup table that maps a flow hash to a backend.
//!
//! This module owns only the pure computation. The table is built on the
//! **slow path** (configuration change, health flip) and then published to the
//! workers, which only index into it with [`flow_hash`]` % m`. Nothing here is
//! called per packet except [`flow_hash`].
//!
//! Every hash uses xxh3 with fixed seeds, never std's `DefaultHasher` (whose
//! output may change between Rust releases): two directors, or one director
//! before and after a restart, must build bit-identical tables from the same
//! configuration, otherwise established flows would move on failover.

use std::num::NonZeroU16;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Default lookup table size: the prime the paper uses for small deployments.
/// `m` should be well above 100 × the number of backends to keep the per-backend
/// imbalance under ~1 %.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Largest number of backends [`build`] accepts: every index must fit a
/// [`Member`].
pub const MAX_BACKENDS: usize = 65535 - 1;

/// Index of a backend in the input of [`build`] (a service's member index).
/// Stored as `index + 1` in a `NonZeroU16`, so an `Option<Member>` ([`Slot`])
/// is still two bytes: "no server" is `None`, never a reserved index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member(NonZeroU16);

impl Member {
    /// The member with index `index`, if `index < MAX_BACKENDS`.
    #[inline]
    pub const fn new(index: usize) -> Option<Member> {
        if index >= MAX_BACKENDS {
            return None;
        }
        match NonZeroU16::new(index as u16 + 1) {
            Some(n) => Some(Member(n)),
            None => None,
        }
    }

    /// Its index into the input of [`build`].
    #[inline]
    pub const fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// One lookup-table entry: the member owning the slot, or `None` (no server).
pub type Slot = Option<Member>;

const _: () = assert!(std::mem::size_of::<Slot>() == 2);

/// A Maglev lookup table and the number of distinct members that own slots
/// in it (so a walk looking for "the next different server" knows when it has
/// seen them all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Box<[Slot]>,
    servers: usize,
}

impl MaglevTable {
    /// A table from its slots; counts the distinct members (slow path).
    pub fn from_slots(slots: Vec<Slot>) -> Self {
        let mut seen = std::collections::HashSet::new();
        for m in slots.iter().flatten() {
            seen.insert(*m);
        }
        MaglevTable {
            slots: slots.into_boxed_slice(),
            servers: seen.len(),
        }
    }

    /// Number of slots (the table size `m`, or 0).
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slot at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The member owning slot `i` (`None`: no server, or `i` out of range).
    #[inline]
    pub fn get(&self, i: usize) -> Slot {
        self.slots.get(i).copied().flatten()
    }

    /// All slots.
    #[inline]
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Distinct members owning at least one slot.
    #[inline]
    pub fn servers(&self) -> usize {
        self.servers
    }
}

/// Seed of the hash that picks a backend's `offset`. Part of the on-the-wire
/// contract between directors: changing it moves every flow.
const SEED_OFFSET: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
/// Seed of the hash that picks a backend's `skip`; must differ from
/// [`SEED_OFFSET`] so the two values are independent.
const SEED_SKIP: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
/// Seed of [`flow_hash`]; independent of the permutation seeds so a backend
/// key and a flow key with the same bytes are not correlated.
const SEED_FLOW: u64 = 0x756c_7673_666c_6f77; // "ulvsflow"

/// One backend as seen by [`build`]: its permutation and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevInput {
    /// First preferred slot, in `0..m`.
    pub offset: u32,
    /// Distance between successive preferred slots, in `1..m`.
    pub skip: u32,
    /// Relative share of the table; 0 means the backend gets no slot.
    pub weight: u32,
}

/// Permutation parameters `(offset, skip)` of a backend identified by `key`
/// (typically its address and port) for a table of size `m`.
///
/// `offset = h1(key) % m`, `skip = h2(key) % (m - 1) + 1`, with
/// `xxh3_64_with_seed` and two fixed seeds, so every director and every restart
/// computes the same values. With `m` prime, any `skip` in `1..m` is coprime
/// with `m`, so the permutation visits every slot.
///
/// # Panics
///
/// Panics if `m < 2` (there is no valid `skip`).
pub fn permutation(key: &[u8], m: u32) -> (u32, u32) {
    assert!(m >= 2, "maglev table size must be at least 2, got {m}");
    let m64 = u64::from(m);
    // Both results are < m, so the narrowing casts are lossless.
    let offset = (xxh3_64_with_seed(key, SEED_OFFSET) % m64) as u32;
    let skip = (xxh3_64_with_seed(key, SEED_SKIP) % (m64 - 1)) as u32 + 1;
    (offset, skip)
}

/// Whether `n` is prime. Trial division: only used to validate a table size
/// on the slow path (at most ~32k divisions for a `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    // Candidates 6k ± 1; u64 so `i * i` cannot overflow near u32::MAX.
    let n = u64::from(n);
    let mut i = 5u64;
    while i * i <= n {
        if n % i == 0 || n % (i + 2) == 0 {
            return false;
        }
        i += 6;
    }
    true
}

/// Build the lookup table of size `m`. Entry = index into `backends` (a
/// [`Member`]), or `None` everywhere when no backend has weight > 0. Backends with
/// weight 0 get no slots; when at least one has weight > 0, every slot is
/// filled.
///
/// Weighted Maglev: in each round, every backend (in input order) adds its
/// weight to a credit; while credit >= max_weight it claims its next preferred
/// free slot and credit -= max_weight. With equal weights this is exactly the
/// paper's algorithm (one claim per backend per round, in order), so the
/// paper's Table 1 holds. The heaviest backend claims a slot every round, so
/// the build takes at most `m` rounds; in practice the cost is dominated by
/// the ~`m ln m` probes of the last free slots.
///
/// # Panics
///
/// Panics if `m` is not prime, if `backends.len() > MAX_BACKENDS`, or if a
/// backend with weight > 0 has `offset >= m` or `skip` outside `1..m` (use
/// [`permutation`] to get valid values).
pub fn build(m: u32, backends: &[MaglevInput]) -> MaglevTable {
    assert!(is_prime(m), "maglev table size {m} is not prime");
    assert!(
        backends.len() <= MAX_BACKENDS,
        "{} maglev backends, at most {MAX_BACKENDS} supported",
        backends.len()
    );
    let size = m as usize;
    let mut table: Vec<Slot> = vec![None; size];

    struct Active {
        member: Member,
        /// Next slot of this backend's permutation to try.
        next: u32,
        skip: u32,
        weight: u64,
        credit: u64,
        /// Owns at least one slot.
        claimed: bool,
    }
    // Zero-weight backends are dropped up front so the round loop does not
    // iterate over them up to `m` times.
    let mut active: Vec<Active> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight > 0)
        .map(|(i, b)| {
            assert!(
                b.offset < m && b.skip >= 1 && b.skip < m,
                "maglev backend {i}: offset {} / skip {} invalid for m = {m}",
                b.offset,
                b.skip
            );
            Active {
                member: Member::new(i).expect("< MAX_BACKENDS, checked above"),
                next: b.offset,
                skip: b.skip,
                weight: u64::from(b.weight),
                credit: 0,
                claimed: false,
            }
        })
        .collect();
    let Some(max_weight) = active.iter().map(|a| a.weight).max() else {
        return MaglevTable {
            slots: table.into_boxed_slice(),
            servers: 0,
        };
    };

    // Occupancy bitmap probed instead of the table: 8 KiB for m = 65537 stays
    // in L1 while the 128 KiB table does not, and the ~m ln m probes of a
    // build are almost all misses on taken slots.
    let mut taken = vec![0u64; size.div_ceil(64)];
    let mut filled = 0usize;
    // Terminates: the heaviest backend reaches max_weight credit every round
    // and so claims >= 1 slot per round, and a claim always succeeds while a
    // slot is free because each skip is coprime with the prime m (the
    // permutation visits all slots).
    'rounds: loop {
        for a in &mut active {
            // credit < max_weight before the add, weight <= max_weight: no overflow in u64.
            a.credit += a.weight;
            while a.credit >= max_weight {
                a.credit -= max_weight;
                // Probe with add-and-wrap rather than `% m`: a division per probe
                // would dominate the ~m ln m probes of the build.
                let mut next = a.next;
                while taken[next as usize / 64] & (1 << (next % 64)) != 0 {
                    next = wrap_add(next, a.skip, m);
                }
                taken[next as usize / 64] |= 1 << (next % 64);
                table[next as usize] = Some(a.member);
                a.claimed = true;
                a.next = wrap_add(next, a.skip, m);
                filled += 1;
                if filled == size {
                    break 'rounds;
                }
            }
        }
    }
    // Light backends may get no slot when m is small next to their number.
    let servers = active.iter().filter(|a| a.claimed).count();
    MaglevTable {
        slots: table.into_boxed_slice(),
        servers,
    }
}

/// `(x + y) % m` for `x, y < m` without a division.
#[inline(always)]
fn wrap_add(x: u32, y: u32, m: u32) -> u32 {
    // u64 because x + y may exceed u32::MAX when m is close to it.
    let s = u64::from(x) + u64::from(y);
    let m = u64::from(m);
    (if s >= m { s - m } else { s }) as u32
}

/// Hash of a 5-tuple-ish byte key used to pick a slot for a new flow
/// (`table[flow_hash(key) % m]`): xxh3 with a fixed seed, so every director
/// maps the same flow to the same slot.
#[inline]
pub fn flow_hash(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, SEED_FLOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eq(offset: u32, skip: u32) -> MaglevInput {
        MaglevInput {
            offset,
            skip,
            weight: 1,
        }
    }

    /// Member indices of a full table (panics on a slot with no server).
    fn ix(t: &MaglevTable) -> Vec<usize> {
        t.slots()
            .iter()
            .map(|s| s.expect("slot filled").index())
            .collect()
    }

    fn no_server(t: &MaglevTable) -> bool {
        t.slots().iter().all(Option::is_none)
    }

    fn counts(table: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for e in ix(table) {
            c[e] += 1;
        }
        c
    }

    /// Backend `i` of a synthetic pool: distinct address/port bytes.
    fn key_of(addr: u32, port: u16) -> [u8; 6] {
        let mut k = [0u8; 6];
        k[..4].copy_from_slice(&addr.to_be_bytes());
        k[4..].copy_from_slice(&port.to_be_bytes());
        k
    }

    fn inputs(keys: &[[u8; 6]], m: u32) -> Vec<MaglevInput> {
        keys.iter()
            .map(|k| {
                let (offset, skip) = permutation(k, m);
                MaglevInput {
                    offset,
                    skip,
                    weight: 1,
                }
            })
            .collect()
    }

    #[test]
    fn paper_table_1() {
        let b1 = eq(3, 4);
        let b2 = eq(0, 2);
        let b3 = eq(3, 1);
        assert_eq!(ix(&build(7, &[b1, b2, b3])), vec![1, 0, 1, 0, 2, 2, 0]);
        // B2 removed: B1 and B3 keep all their old slots.
        assert_eq!(ix(&build(7, &[b1, b3])), vec![0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(build(7, &[b1, b3]).servers(), 2);
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(655_373));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(65_535));
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65_537 * 3));
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn non_prime_size_panics() {
        build(65_536, &[eq(0, 1)]);
    }

    #[test]
    #[should_panic(expected = "invalid")]
    fn bad_skip_panics() {
        build(7, &[eq(0, 7)]);
    }

    #[test]
    fn empty_or_all_zero_weight_is_no_server() {
        assert!(no_server(&build(7, &[])));
        assert_eq!(build(7, &[]).servers(), 0);
        let zero = MaglevInput {
            offset: 1,
            skip: 2,
            weight: 0,
        };
        let t = build(DEFAULT_TABLE_SIZE, &[zero, zero]);
        assert_eq!(t.len(), DEFAULT_TABLE_SIZE as usize);
        assert!(no_server(&t));
        assert_eq!(t.servers(), 0);
    }

    #[test]
    fn zero_weight_gets_no_slot_and_all_filled() {
        let m = DEFAULT_TABLE_SIZE;
        let keys: Vec<_> = (0..10).map(|i| key_of(0x0a00_0001 + i, 80)).collect();
        let mut ins = inputs(&keys, m);
        ins[3].weight = 0;
        ins[7].weight = 0;
        let t = build(m, &ins);
        assert_eq!(t.servers(), 8);
        let c = counts(&t, ins.len());
        assert_eq!((c[3], c[7]), (0, 0));
        assert!(c.iter().enumerate().all(|(i, &n)| n > 0 || i == 3 || i == 7));
    }

    #[test]
    fn equal_weights_balanced() {
        let m = DEFAULT_TABLE_SIZE;
        for n in [1u32, 2, 7, 100, 1000] {
            let keys: Vec<_> = (0..n).map(|i| key_of(0xc0a8_0000 + i, 443)).collect();
            let t = build(m, &inputs(&keys, m));
            let c = counts(&t, n as usize);
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "n={n}: counts {lo}..={hi}");
            assert_eq!(c.iter().sum::<usize>(), m as usize);
        }
    }

    #[test]
    fn weighted_3_1_1() {
        let m = DEFAULT_TABLE_SIZE;
        let mut x = 1u64;
        let mut worst = (0.0, 0);
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = 5 + (x >> 33) as usize % 96;
            let mut set = std::collections::HashSet::new();
            while set.len() < n {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                set.insert((x >> 32) as u32);
            }
            let keys: Vec<_> = set.iter().map(|&a| key_of(a, 80)).collect();
            let r = (x >> 40) as usize % n;
            let sh = other_moved_share(&keys, r, m);
            if sh > worst.0 {
                worst = (sh, n);
            }
        }
        eprintln!("MEASURE random worst {worst:?}");
        let keys: Vec<_> = (0..3).map(|i| key_of(0x0a01_0000 + i, 80)).collect();
        let mut ins = inputs(&keys, m);
        ins[0].weight = 3;
        let c = counts(&build(m, &ins), 3);
        let expect = [0.6, 0.2, 0.2];
        for (i, &n) in c.iter().enumerate() {
            let share = n as f64 / f64::from(m);
            // Claims follow the credit schedule exactly, so the only error is
            // the last, partial round: measured 1.2e-5 (39323/13107/13107).
            assert!((share - expect[i]).abs() < 1e-4, "{i}: {share}");
        }
        // Large, uneven weights (e.g. capacities) still fill the table.
        ins[0].weight = 1_000_000;
        ins[1].weight = 1;
        ins[2].weight = u32::MAX;
        let t = build(m, &ins);
        assert!(t.slots().iter().all(Option::is_some));
    }

    #[test]
    fn deterministic() {
        let m = DEFAULT_TABLE_SIZE;
        // Hard-coded: a change of hash function or seed must fail here, since it
        // would silently remap every flow between directors of different versions.
        assert_eq!(permutation(b"10.0.0.1:80", m), (36_055, 57_703));
        assert_eq!(permutation(b"10.0.0.1:80", 7), (0, 1));
        assert_eq!(flow_hash(b"flow"), 0xed75_d7de_2639_def2);
        let keys: Vec<_> = (0..50).map(|i| key_of(0x0a00_0000 + i, 80)).collect();
        let ins = inputs(&keys, m);
        assert_eq!(build(m, &ins), build(m, &ins));
    }

    /// Share of slots not owned by the removed backend that changed owner.
    fn other_moved_share(keys: &[[u8; 6]], removed: usize, m: u32) -> f64 {
        let before = build(m, &inputs(keys, m));
        let mut rest = keys.to_vec();
        rest.remove(removed);
        let after = build(m, &inputs(&rest, m));
        let (mut others, mut moved) = (0usize, 0usize);
        for (&b, &a) in before.slots().iter().zip(after.slots()) {
            let b = b.expect("full").index();
            // The removed server's own slots must all go somewhere.
            let a = a.expect("full").index();
            if b == removed {
                continue;
            }
            others += 1;
            // Indices after `removed` shift down by one in the new input.
            let a = if a >= removed { a + 1 } else { a };
            if a != b {
                moved += 1;
            }
        }
        moved as f64 / others as f64
    }

    #[test]
    fn removal_n100_fixed() {
        let keys: Vec<_> = (0..100).map(|i| key_of(0x0a00_0100 + i, 8080)).collect();
        let worst = (0..100)
            .map(|r| other_moved_share(&keys, r, DEFAULT_TABLE_SIZE))
            .fold(0.0, f64::max);
        assert!(worst < REMOVAL_BOUND, "worst other-slot movement {worst}");
    }

    /// Worst share of the other backends' slots that moved when one of N was
    /// removed at m = 65537, measured over all 100 removals of a fixed N = 100
    /// pool: 0.63 % (mean 0.55 %). The 3 % would hide a 4× regression
    /// at N = 100, so assert 1.5 % there.
    const REMOVAL_BOUND: f64 = 0.015;
    /// Small pools move more: proptest found 1.66 % at N = 6 (a saved
    /// regression case). For random pools with N in 5..=100, assert the
    /// issue's 3 %.
    const REMOVAL_BOUND_ANY_N: f64 = 0.03;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn removal_moves_few_other_slots(
            addrs in prop::collection::hash_set(any::<u32>(), 5..=100),
            pick in any::<prop::sample::Index>(),
        ) {
            let keys: Vec<_> = addrs.iter().map(|&a| key_of(a, 80)).collect();
            let removed = pick.index(keys.len());
            let share = other_moved_share(&keys, removed, DEFAULT_TABLE_SIZE);
            prop_assert!(share < REMOVAL_BOUND_ANY_N, "n={} share={share}", keys.len());
        }

        #[test]
        fn always_full_with_positive_weight(
            ws in prop::collection::vec(0u32..5, 1..40),
            m in prop::sample::select(vec![7u32, 251, 4099, 65537]),
        ) {
            let ins: Vec<_> = ws
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let (offset, skip) = permutation(&(i as u32).to_le_bytes(), m);
                    MaglevInput { offset, skip, weight: w }
                })
                .collect();
            let t = build(m, &ins);
            prop_assert_eq!(t.len(), m as usize);
            if ws.iter().any(|&w| w > 0) {
                prop_assert!(t.slots().iter().all(|e| e.is_some_and(|e| e.index() < ins.len() && ins[e.index()].weight > 0)));
                prop_assert_eq!(t.servers(), MaglevTable::from_slots(t.slots().to_vec()).servers());
            } else {
                prop_assert!(no_server(&t));
            }
        }
    }
}
