//! Flow sync throughput: flows per second one director syncs to one peer
//! over loopback UDP without loss — the whole path: a worker's note taken
//! from its queue, translated with the published table, encoded, signed
//! (HMAC-SHA256) and sent; received, checked (peer, format, MAC, replay),
//! decoded, resolved to the peer's backend id and queued for the worker
//! that sees the flow. Both directors run in this one thread, alternately
//! (one sends a batch, the other takes all of it), so the figure is the
//! CPU cost of the path, sender and receiver added. A lost datagram
//! fails the run.

use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ulvs::dataplane::synclink::{Note, NoteKind, Placement, WorkerLink};
use ulvs::dataplane::worker::Shared;
use ulvs::fwd::flow::{FlowKey, FlowState};
use ulvs::fwd::maglev::MaglevTable;
use ulvs::fwd::table::{BackendFwd, BackendState, FwdTable, Mode, ServiceFwd};
use ulvs::sync::auth::Key;
use ulvs::sync::thread::{Engine, Settings};

const SERVICES: u32 = 100;
const SERVERS: u32 = 10;
/// Flows per round: 50 full datagrams, well inside a default socket
/// buffer (212 KiB), so loopback never drops one.
const BATCH: usize = 19 * 50;

/// 100 services on 198.18.100.x:80, 10 servers each; the peer numbers its
/// backends from `base` (ids differ between directors).
fn table(base: u32) -> FwdTable {
    let mut t = FwdTable::empty([2; 6]);
    t.backends = vec![BackendFwd::REMOVED; (base + SERVICES * SERVERS) as usize];
    for s in 0..SERVICES {
        let vip = 0xc612_6400 + s + 1;
        let mut members = Vec::new();
        for r in 0..SERVERS {
            let id = base + s * SERVERS + r;
            t.backends[id as usize] = BackendFwd {
                addr: 0xc613_0000 + s * SERVERS + r + 1,
                port: 0,
                mac: Some([4; 6]),
                state: BackendState::Up,
                svc_vip: vip,
                svc_port: 80,
                mode: Mode::Dr,
            };
            members.push(id);
        }
        t.services.push(ServiceFwd {
            vip,
            port: 80,
            proto: 6,
            mode: Mode::Dr,
            maglev: MaglevTable::default(),
            members,
        });
    }
    t.sort();
    t
}

struct Side {
    engine: Engine,
    links: Vec<Arc<WorkerLink>>,
}

fn pair(key: Option<&[u8]>, peer_workers: usize) -> (Side, Side) {
    let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a, b) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let mk = |sock, listen, peer, workers: usize, base| {
        let settings = Settings {
            listen,
            peers: vec![peer],
            key: key.map(Key::new),
            refresh: Duration::from_secs(3600),
        };
        let links: Vec<Arc<WorkerLink>> = (0..workers).map(|_| Arc::new(WorkerLink::new())).collect();
        let shared = Arc::new(Shared::new(table(base)));
        let engine = Engine::with_socket(sock, &settings, links.clone(), Placement::Fanout, shared);
        Side { engine, links }
    };
    (mk(sa, a, b, 1, 0), mk(sb, b, a, peer_workers, 7))
}

fn note(i: u64) -> Note {
    let s = (i % u64::from(SERVICES)) as u32;
    Note {
        kind: NoteKind::New,
        key: FlowKey {
            src: 0xc612_0000 | (i as u32 & 0xffff),
            dst: 0xc612_6400 + s + 1,
            sport: 1024 + (i as u16 % 60000),
            dport: 80,
            proto: 6,
        },
        backend: s * SERVERS + (i as u32 % SERVERS),
        state: FlowState::TcpEstablished,
        idle_ms: 0,
        origin: 0,
    }
}

/// One round: BATCH notes from A's worker to B's workers' queues.
fn round(a: &mut Side, b: &mut Side, next: &mut u64) {
    for _ in 0..BATCH {
        a.links[0].notes.push(note(*next)).unwrap();
        *next += 1;
    }
    let want = b.engine.status().counters.flows_received.load(Relaxed) + BATCH as u64;
    a.engine.tick(Instant::now());
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.engine.status().counters.flows_received.load(Relaxed) < want {
        b.engine.poll().unwrap();
        assert!(Instant::now() < deadline, "datagrams lost on loopback");
    }
    for l in &b.links {
        while l.synced.pop().is_some() {}
    }
}

fn sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, key) in [
        ("hmac_sha256", Some(&b"a 32-byte key for the sync bench"[..])),
        ("no_key", None),
    ] {
        let (mut a, mut b) = pair(key, 4);
        let mut next = 0;
        g.bench_function(format!("loopback_flows_{name}"), |bench| {
            bench.iter(|| round(&mut a, &mut b, &mut next));
        });
        let sa = a.engine.status().snapshot(&a.links);
        let sb = b.engine.status().snapshot(&b.links);
        assert_eq!(sb.flows_received, sa.flows_sent, "every flow sent arrived");
        assert_eq!(sb.rejected.values().sum::<u64>(), 0, "{:?}", sb.rejected);
        assert_eq!(sb.synced_full, 0);
        println!(
            "sync {name}: {} flows in {} datagrams sent, {} received, 0 lost, 0 rejected",
            sa.flows_sent, sa.datagrams_sent, sb.flows_received
        );
    }
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
