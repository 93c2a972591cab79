//! Per-frame cost of the fast path on the in-memory device: classify + flow
//! lookup (or Maglev pick and insert) + DR rewrite + counters, for frames of
//! established flows (the common case), for new flows, and for SYNs: fresh
//! ones against the same SYNs replayed long after the first (each replay is
//! a SYN retransmission as far as the director can tell; once every server
//! was tried it must cost no more than a fresh SYN). The `_sync` rows run
//! the same frames with a flow-sync link attached (each new flow pushes a
//! note, which the sync thread, here the bench between iterations and
//! untimed, takes). The `_dr6` rows are the IPv6 counterparts of the first
//! two. The `_1m` row runs established flows over a flow table holding a
//! million, so each frame's flow bucket is a cache miss.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ulvs::control::config::Config;
use ulvs::control::publish::{build_table, Runtime};
use ulvs::dataplane::stats::WorkerStats;
use ulvs::dataplane::synclink::WorkerLink;
use ulvs::dataplane::worker::{Shared, Worker};
use ulvs::io::mem::MemDevice;
use ulvs::io::{Action, BatchStats, Device, Frame, RxMeta, TxArena, VnetHdr};
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

/// The in-memory device, with its look-ahead ([`Device::peek_batch`], which
/// the worker uses to prefetch the flow buckets of a batch) turned off when
/// `ULVS_BENCH_NO_PREFETCH` is set: the same rows then measure the worker
/// as it was before the prefetch, in the same binary, for A/B runs.
struct BenchDev {
    mem: MemDevice,
    peek: bool,
}

impl BenchDev {
    fn new() -> Self {
        let mut mem = MemDevice::new(64, 128);
        mem.capture = false;
        BenchDev {
            mem,
            peek: std::env::var_os("ULVS_BENCH_NO_PREFETCH").is_none(),
        }
    }
}

impl std::ops::Deref for BenchDev {
    type Target = MemDevice;
    fn deref(&self) -> &MemDevice {
        &self.mem
    }
}

impl std::ops::DerefMut for BenchDev {
    fn deref_mut(&mut self) -> &mut MemDevice {
        &mut self.mem
    }
}

impl Device for BenchDev {
    fn wait(&mut self, t: i32) -> std::io::Result<()> {
        self.mem.wait(t)
    }

    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        f: F,
    ) -> std::io::Result<BatchStats> {
        self.mem.process_batch(max, f)
    }

    fn peek_batch<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, f: F) {
        if self.peek {
            self.mem.peek_batch(max, f);
        }
    }
}

fn worker() -> Worker<BenchDev> {
    worker_with(|_| {})
}

/// [`worker`] with a flow table of `flows` slots.
fn worker_cap(flows: usize) -> Worker<BenchDev> {
    worker_tabled(flows, |_| {})
}

/// [`worker`] on the bench table changed by `edit`.
fn worker_with(edit: impl FnOnce(&mut ulvs::fwd::table::FwdTable)) -> Worker<BenchDev> {
    worker_tabled(1 << 20, edit)
}

/// [`worker_with`] with a flow table of `flows` slots.
fn worker_tabled(flows: usize, edit: impl FnOnce(&mut ulvs::fwd::table::FwdTable)) -> Worker<BenchDev> {
    let cfg = Config::from_str(YAML, "bench.yaml").expect("valid");
    let mut rt = Runtime::default();
    rt.sync(&cfg).expect("ids");
    let mut table = build_table(
        &cfg,
        &rt,
        |a| Some([2, 0, 0xc6, 0x12, 0, a.octets()[3]]),
        [2, 0, 0xc6, 0x12, 0, 2],
        0,
        1,
    );
    edit(&mut table);
    let shared = Arc::new(Shared::new(table));
    let dev = BenchDev::new();
    Worker::new(dev, flows, shared, Arc::new(WorkerStats::default()))
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
    // Fresh SYNs: a new flow per frame.
    let mut w = worker();
    let mut n = 0u32;
    let mut f = frame(1, 0);
    f[47] = 0x02;
    g.bench_function("syn_fresh_dr", |b| {
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
    // The same 64 SYNs (same tuples, same ISN) replayed every 600 ms of the
    // worker's clock: past the second-chance delay every time, with no
    // handshake ever completing (a replay attack on an idle director).
    let mut w = worker();
    let syns: Vec<Vec<u8>> = (0..BATCH as u32)
        .map(|i| {
            let mut f = frame(20_000 + i as u16, 0xc612_0200 + i);
            f[47] = 0x02;
            f
        })
        .collect();
    let mut now = 1000u64;
    g.bench_function("syn_replayed_dr", |b| {
        b.iter(|| {
            for f in &syns {
                w.device().push_rx(f, RxMeta::default(), VnetHdr::default());
            }
            now += 600;
            w.poll_once(now).expect("mem device")
        })
    });
    g.finish();
}

/// The established and new-flow rows with and without a sync link, timed
/// alike (the frames' push and the poll; the sync thread's work of taking
/// the notes is left out, it runs on another thread).
fn per_frame_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("worker_per_frame");
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    let frames: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| frame(10_000 + (i % 50_000) as u16, 0xc612_0100 + i))
        .collect();
    for sync in [false, true] {
        let suffix = if sync { "_sync" } else { "_nosync" };
        let link = Arc::new(WorkerLink::new());
        let mut w = worker();
        if sync {
            w.attach_sync(link.clone());
        }
        let mut i = 0usize;
        g.bench_function(format!("established_dr{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    while link.notes.pop().is_some() {}
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        w.device()
                            .push_rx(&frames[i % frames.len()], RxMeta::default(), VnetHdr::default());
                        i += 1;
                    }
                    w.poll_once(1000).expect("mem device");
                    t += start.elapsed();
                }
                t
            })
        });
        let mut w = worker();
        if sync {
            w.attach_sync(link.clone());
        }
        let mut n = 0u32;
        let mut f = frame(1, 0);
        g.bench_function(format!("new_flow_dr{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    while link.notes.pop().is_some() {}
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        n = n.wrapping_add(1);
                        f[26..30].copy_from_slice(&(0x0a00_0000 | (n >> 16)).to_be_bytes());
                        f[34..36].copy_from_slice(&(n as u16).to_be_bytes());
                        w.device().push_rx(&f, RxMeta::default(), VnetHdr::default());
                    }
                    w.poll_once(1000).expect("mem device");
                    t += start.elapsed();
                }
                t
            })
        });
        // Every note reached the queue (none was dropped as full).
        assert_eq!(link.notes_full.load(Relaxed), 0);
    }
    g.finish();
}

/// The IPv6 rows: a 74-byte TCP ACK to an IPv6 VIP (DR) over 4096
/// established flows, and a new flow every frame; the table is the IPv4
/// one plus an IPv6 service on the same servers.
fn per_frame_v6(c: &mut Criterion) {
    use ulvs::fwd::table::ServiceFwd6;
    use ulvs::wire::builder::PacketBuilder6;
    const VIP6: u128 = 0x2001_0db8_0100_0000_0000_0000_0000_0001;
    let mut g = c.benchmark_group("worker_per_frame");
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    let worker6 = || {
        worker_with(|t| {
            let s = t.services[0].clone();
            t.services6.push(ServiceFwd6 {
                vip: VIP6,
                port: 80,
                proto: 6,
                mode: ulvs::fwd::table::Mode::Dr,
                maglev: s.maglev,
                members: s.members,
                client_affinity: false,
            });
            t.sort();
        })
    };
    let frame6 = |sport: u16, src: u128| {
        PacketBuilder6::new(0x2001_0db8_0200_0000_0000_0000_0000_0000 | src, VIP6).tcp(
            sport,
            80,
            tcp::ACK,
            &[0; 10],
        )
    };
    let frames: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| frame6(10_000 + i as u16, u128::from(i)))
        .collect();
    let mut w = worker6();
    let mut i = 0usize;
    g.bench_function("established_dr6", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                w.device()
                    .push_rx(&frames[i % frames.len()], RxMeta::default(), VnetHdr::default());
                i += 1;
            }
            w.poll_once(1000).expect("mem device")
        })
    });
    let mut w = worker6();
    let mut n = 0u32;
    let mut f = frame6(1, 0);
    g.bench_function("new_flow_dr6", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                n = n.wrapping_add(1);
                // Client address bytes 12..16 and source port.
                f[34..38].copy_from_slice(&n.to_be_bytes());
                f[54..56].copy_from_slice(&(n as u16).to_be_bytes());
                w.device().push_rx(&f, RxMeta::default(), VnetHdr::default());
            }
            w.poll_once(1000).expect("mem device")
        })
    });
    g.finish();
}

/// NAT and TUN services on their own VIPs (the rewrite-heavy modes).
const MODES_YAML: &str = "interface: eth0\nservices:\n  - name: nat\n    vip: 198.18.100.2\n    port: 80\n    mode: nat\n    real_servers:\n      - address: 198.18.0.21:8080\n      - address: 198.18.0.22:8080\n  - name: tun\n    vip: 198.18.100.3\n    port: 80\n    mode: tun\n    real_servers:\n      - address: 198.18.0.31\n      - address: 198.18.0.32\n";

fn modes_worker() -> Worker<BenchDev> {
    let cfg = Config::from_str(MODES_YAML, "bench.yaml").expect("valid");
    let mut rt = Runtime::default();
    rt.sync(&cfg).expect("ids");
    let table = build_table(
        &cfg,
        &rt,
        |a| Some([2, 0, 0xc6, 0x12, 0, a.octets()[3]]),
        [2, 0, 0xc6, 0x12, 0, 2],
        0xc612_0002,
        1,
    );
    let shared = Arc::new(Shared::new(table));
    let dev = BenchDev::new();
    Worker::new(dev, 1 << 20, shared, Arc::new(WorkerStats::default()))
}

/// A 64-byte TCP ACK from `src:sport` to `vip`:80 with valid checksums
/// (NAT updates them).
fn frame_to(sport: u16, src: u32, vip: u32) -> Vec<u8> {
    PacketBuilder::new(src, vip)
        .macs([2, 0, 0xc6, 0x12, 0, 2], [2, 0, 0xc6, 0x12, 0, 1])
        .tcp(sport, 80, tcp::ACK, &[0; 10])
}

fn per_frame_modes(c: &mut Criterion) {
    let mut g = c.benchmark_group("worker_per_frame");
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, vip) in [
        ("established_nat", 0xc612_6402u32),
        ("established_tun", 0xc612_6403),
    ] {
        let frames: Vec<Vec<u8>> = (0..4096u32)
            .map(|i| frame_to(10_000 + (i % 50_000) as u16, 0xc612_0100 + i, vip))
            .collect();
        let mut w = modes_worker();
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    w.device()
                        .push_rx(&frames[i % frames.len()], RxMeta::default(), VnetHdr::default());
                    i += 1;
                }
                w.poll_once(1000).expect("mem device")
            })
        });
        // The row measures forwarding, not a drop path.
        let s = w.stats();
        let dropped: u64 = s.drops.iter().map(|d| d.load(Relaxed)).sum();
        // (A row a filter left out ran no frame at all.)
        assert_eq!(dropped, 0, "{name}: frames dropped");
    }
    g.finish();
}

/// Flows the `_1m` rows keep established: 2^20 in a table of 2^21 slots
/// (half full, as the `flow_table_1m_half_full` rows of `benches/fwd.rs`,
/// so few keys overflow their bucket).
const FLOWS_1M: u32 = 1 << 20;

/// Established DR flows spread over a flow table holding 1M of them: the
/// frames of a batch go to unrelated flows all over the table (key `j` of
/// the run is flow `j × an odd constant mod 2^20`), so their buckets are
/// not in the cache, as on a director with a million clients. Each frame is
/// written into one template (client address and port) rather than read
/// from a million stored frames, so the frames themselves stay cached.
fn per_frame_1m(c: &mut Criterion) {
    let mut g = c.benchmark_group("worker_per_frame");
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    // Flow `k`: client 198.18.(k >> 4) as a /16 offset, port 10000 + k % 16.
    let set = |f: &mut [u8], k: u32| {
        f[26..30].copy_from_slice(&(0xc612_0000 + (k >> 4)).to_be_bytes());
        f[34..36].copy_from_slice(&(10_000 + (k & 15) as u16).to_be_bytes());
    };
    let mut w = worker_cap(2 * FLOWS_1M as usize);
    let mut f = frame(0, 0);
    for k in 0..FLOWS_1M {
        set(&mut f, k);
        w.device().push_rx(&f, RxMeta::default(), VnetHdr::default());
        if w.device().pending() == BATCH {
            w.poll_once(1000).expect("mem device");
        }
    }
    w.poll_once(1000).expect("mem device");
    let conns =
        |w: &Worker<BenchDev>| -> u64 { w.stats().backends.iter().map(|b| b.conns.load(Relaxed)).sum() };
    let (resident, before) = (w.flow_count(), conns(&w));
    let mut j = 0u32;
    let mut frames = 0u64;
    g.bench_function("established_dr_1m", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                set(&mut f, j.wrapping_mul(0x9e37_79b1) & (FLOWS_1M - 1));
                w.device().push_rx(&f, RxMeta::default(), VnetHdr::default());
                j = j.wrapping_add(1);
            }
            frames += BATCH as u64;
            w.poll_once(1000).expect("mem device")
        })
    });
    // The row measures established flows: a key that overflowed its bucket
    // comes back as a new flow (and evicts another), which must stay rare.
    let new = conns(&w) - before;
    assert!(
        new * 100 <= frames.max(1),
        "established_dr_1m: {new} of {frames} frames were new flows ({resident} resident)"
    );
    g.finish();
}

criterion_group!(
    benches,
    per_frame,
    per_frame_sync,
    per_frame_modes,
    per_frame_v6,
    per_frame_1m
);
criterion_main!(benches);
