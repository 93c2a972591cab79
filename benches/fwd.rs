//! Forwarding data structures: Maglev table build (slow path) and flow table
//! insert/lookup (fast path).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ulvs::fwd::flow::{FlowEntry, FlowKey, FlowState, FlowTable, Timeouts};
use ulvs::fwd::maglev::{self, MaglevInput, DEFAULT_TABLE_SIZE};

/// splitmix64, so the bench needs no rand dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: u64) -> FlowKey {
    let h = mix(i);
    FlowKey {
        src: h as u32,
        dst: 0xc000_0201,
        sport: (h >> 32) as u16,
        dport: 443,
        proto: 6,
    }
}

fn maglev_build(c: &mut Criterion) {
    let m = DEFAULT_TABLE_SIZE;
    let mut g = c.benchmark_group("maglev_build_m65537");
    for n in [10u32, 100, 1000] {
        let backends: Vec<MaglevInput> = (0..n)
            .map(|i| {
                let (offset, skip) = maglev::permutation(&(0x0a00_0000 + i).to_be_bytes(), m);
                MaglevInput {
                    offset,
                    skip,
                    weight: 1,
                }
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &backends, |b, be| {
            b.iter(|| maglev::build(m, black_box(be)))
        });
    }
    g.finish();
}

fn flow_table(c: &mut Criterion) {
    const CAP: usize = 1 << 20;
    const NOW: u32 = 1000;
    let mut t = FlowTable::new(CAP, Timeouts::default());
    let resident = CAP / 2;
    let mut none = |_: &FlowEntry| {};
    for i in 0..resident as u64 {
        t.insert(key(i), FlowState::TcpEstablished, i as u32, NOW, &mut none);
    }
    // Keys that overflowed their bucket were evicted: look up only survivors,
    // in a shuffled order so consecutive lookups hit unrelated cache lines.
    let mut hits: Vec<FlowKey> = (0..resident as u64)
        .map(key)
        .filter(|k| t.get(k, NOW, &mut none).is_some())
        .collect();
    for i in (1..hits.len()).rev() {
        hits.swap(i, (mix(i as u64 ^ 0x5eed) % (i as u64 + 1)) as usize);
    }
    let mut g = c.benchmark_group("flow_table_1m_half_full");
    let mut i = 0usize;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = if i + 1 == hits.len() { 0 } else { i + 1 };
            t.get(black_box(&hits[i]), NOW, &mut none).map(|e| e.backend)
        })
    });
    let mut j = 0u64;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            j += 1;
            t.get(black_box(&key(u64::MAX - j)), NOW, &mut none).is_some()
        })
    });
    // Insert of a fresh key, then its removal (on the now cached bucket) so the
    // load stays at 50 % however many iterations criterion runs.
    let mut n = resident as u64;
    g.bench_function("insert_new_then_remove", |b| {
        b.iter(|| {
            n += 1;
            let k = key(n);
            t.insert(k, FlowState::TcpSyn, 1, NOW, &mut none);
            t.remove(black_box(&k), &mut none)
        })
    });
    g.finish();
}

criterion_group!(benches, maglev_build, flow_table);
criterion_main!(benches);
