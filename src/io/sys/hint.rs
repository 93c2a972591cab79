//! A cache prefetch hint for the fast path (the worker prefetches the flow
//! buckets of a whole batch before it looks any of them up, so their cache
//! misses overlap instead of coming one after another).

/// Ask the CPU to bring the cache line holding `p` into the cache, without
/// waiting for it. Any address is allowed: a prefetch never faults and
/// reads nothing the program sees. A no-op where no prefetch instruction is
/// wired up.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not fault on any address (an
    // unmapped or dangling one is ignored) and has no visible effect on
    // memory, so no pointer can make it unsound. SSE is part of the
    // x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
