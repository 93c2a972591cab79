//! Per-frame cost of the fast path on the in-memory device: classify + flow
//! lookup (or Maglev pick and insert) + DR rewrite + counters, for frames of
//! established flows (the common case) and for new flows.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ulvs::control::config::Config;
use ulvs::control::publish::{build_table, Runtime};
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::worker::{Shared, Worker};
use ulvs::io::mem::MemDevice;
use ulvs::io::{RxMeta, VnetHdr};
use ulvs::wire::builder::PacketBuilder;
use ulvs::wire::tcp;

/// 198.18.100.1
const VIP: u32 = 0xc612_6401;
const YAML: &str = "interface: eth0\nservices:\n  - name: web\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n      - address: 198.18.0.13\n";

/// A 64-byte TCP ACK from `src:sport` to the VIP's port 80.
fn frame(sport: u16, src: u32) -> Vec<u8> {
    PacketBuilder::new(src, VIP)
        .macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 0, 1])
        .tcp(sport, 80, tcp::ACK, &[0; 10])
}

fn worker() -> Worker<MemDevice> {
    let cfg = Config::from_str(YAML, "bench.yaml").expect("valid");
    let mut rt = Runtime::default();
    rt.sync(&cfg).expect("ids");
    let table = build_table(
        &cfg,
        &rt,
        |a| Some([2, 0, 0xc6, 0x12, 0, a.octets()[3]]),
        [2, 0, 0xc6, 0x12, 0, 2],
        0,
        1,
    );
    let shared = Arc::new(Shared::new(table));
    let mut dev = MemDevice::new(64, 128);
    dev.capture = false;
    Worker::new(dev, 1 << 20, shared, Arc::new(WorkerStats::default()))
}

fn per_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("worker_per_frame");
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    // Established flows: 4096 flows, frames cycle over them.
    let frames: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| frame(10_000 + (i % 50_000) as u16, 0xc612_0100 + i))
        .collect();
    let mut w = worker();
    let mut i = 0usize;
    g.bench_function("established_dr", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                w.device()
                    .push_rx(&frames[i % frames.len()], RxMeta::default(), VnetHdr::default());
                i += 1;
            }
            w.poll_once(1000).expect("mem device")
        })
    });
    // New flows every frame (flow table insert + Maglev pick).
    let mut w = worker();
    let mut n = 0u32;
    let mut f = frame(1, 0);
    g.bench_function("new_flow_dr", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                n = n.wrapping_add(1);
                f[26..30].copy_from_slice(&(0x0a00_0000 | (n >> 16)).to_be_bytes());
                f[34..36].copy_from_slice(&(n as u16).to_be_bytes());
                w.device().push_rx(&f, RxMeta::default(), VnetHdr::default());
            }
            w.poll_once(1000).expect("mem device")
        })
    });
    g.finish();
}

criterion_group!(benches, per_frame);
criterion_main!(benches);
