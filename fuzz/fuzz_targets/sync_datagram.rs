//! The flow-sync datagram decoder (`sync::wire`) and the receive path of
//! the sync thread (`sync::thread::Engine::receive`: peer, format, MAC,
//! replay, resolution, queueing) on arbitrary bytes from a peer:
//! * nothing panics;
//! * a datagram the decoder accepts re-encodes, record by record, to the
//!   very bytes it came from (one encoding per datagram: nothing a forger
//!   could vary unseen under the MAC);
//! * every datagram is either accepted or counted under one reason.
#![no_main]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ulvs::dataplane::synclink::{Placement, WorkerLink};
use ulvs::dataplane::worker::Shared;
use ulvs::fwd::maglev::MaglevTable;
use ulvs::fwd::table::{BackendFwd, BackendState, FwdTable, Mode, ServiceFwd};
use ulvs::sync::thread::{Engine, Settings};
use ulvs::sync::wire::{Builder, Datagram, HEADER_LEN, MAC_LEN};

const PEER: &str = "127.0.0.1:9";

/// A table with one service (198.18.100.1:80/tcp -> 198.18.0.11) so that
/// some records resolve.
fn table() -> FwdTable {
    let mut t = FwdTable::empty([2; 6]);
    t.backends = vec![BackendFwd {
        addr: 0xc612_000b,
        port: 0,
        mac: Some([4; 6]),
        state: BackendState::Up,
        svc_vip: 0xc612_6401,
        svc_port: 80,
        mode: Mode::Dr,
    }];
    t.services = vec![ServiceFwd {
        vip: 0xc612_6401,
        port: 80,
        proto: 6,
        mode: Mode::Dr,
        maglev: MaglevTable::default(),
        members: vec![0],
        client_affinity: false,
    }];
    t
}

fn engine() -> &'static Mutex<(Engine, Vec<Arc<WorkerLink>>)> {
    static E: OnceLock<Mutex<(Engine, Vec<Arc<WorkerLink>>)>> = OnceLock::new();
    E.get_or_init(|| {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
        let settings = Settings {
            listen: sock.local_addr().unwrap(),
            peers: vec![PEER.parse().unwrap()],
            key: None,
            refresh: Duration::from_secs(3600),
        };
        let links: Vec<Arc<WorkerLink>> = (0..2).map(|_| Arc::new(WorkerLink::new())).collect();
        let shared = Arc::new(Shared::new(table()));
        let e = Engine::with_socket(sock, &settings, links.clone(), Placement::Fanout, shared);
        Mutex::new((e, links))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Datagram::new_checked(data) {
        let mut b = Builder::new();
        b.start(&d.header(), d.mac().is_some());
        for r in d.records() {
            b.push(&r).expect("a decoded record encodes");
        }
        let mac = d.mac().map(|m| <[u8; MAC_LEN]>::try_from(m).unwrap());
        let again = b.finish(|_| mac.unwrap()).to_vec();
        assert_eq!(again, data, "decode then encode changed the datagram");
        assert!(d.signed().len() >= HEADER_LEN);
    }
    let mut g = engine().lock().unwrap();
    let (e, links) = &mut *g;
    let before = e.status().snapshot(links);
    let from: SocketAddr = PEER.parse().unwrap();
    e.receive(data, from, Instant::now());
    let after = e.status().snapshot(links);
    let rejected = |s: &ulvs::control::snapshot::SyncSnap| {
        ["not_peer", "malformed", "version", "bad_mac", "replay"]
            .iter()
            .map(|k| s.rejected[*k])
            .sum::<u64>()
    };
    let moved = (after.datagrams_received - before.datagrams_received) + (rejected(&after) - rejected(&before));
    assert_eq!(moved, 1, "a datagram is accepted or rejected exactly once");
    // Keep the queues from filling up over a long run.
    for l in links.iter() {
        while l.synced.pop().is_some() {}
        let _ = l.synced_full.load(Relaxed);
    }
});
