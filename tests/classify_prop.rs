//! Property tests: arbitrary bytes (random frames, and random mutations of
//! valid VIP frames) never panic `classify` or the worker; the worker's
//! verdict agrees with `classify_packet`; and after every frame
//! `frames_seen == forwarded + sum(drops)`, the invariant the end-to-end
//! random-bytes scenario relies on.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use ulvs::dataplane::classify::{classify, classify_packet, Reason};
use ulvs::dataplane::stats::WorkerStats;
use ulvs::fwd::table::FwdTable;
use ulvs::io::{RxMeta, VnetHdr};

fn table() -> &'static FwdTable {
    static T: OnceLock<FwdTable> = OnceLock::new();
    T.get_or_init(topology_table)
}

/// Valid frames to mutate: a TCP SYN and a UDP query to the VIP, a padded
/// SYN, a first fragment, and an ICMP echo.
fn bases() -> &'static [Vec<u8>] {
    static B: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    B.get_or_init(|| {
        let mut first_fragment = hex_fixture("tcp_syn_vip");
        first_fragment[20] = 0x20;
        vec![
            hex_fixture("tcp_syn_vip"),
            hex_fixture("udp_dns_vip"),
            hex_fixture("tcp_syn_padded"),
            first_fragment,
            hex_fixture("icmp_echo_vip"),
        ]
    })
}

fn meta() -> impl Strategy<Value = RxMeta> {
    (
        prop_oneof![8 => Just(0u8), 1 => 0u8..8],
        prop::option::weighted(0.05, any::<u16>()),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(pkttype, vlan_tci, truncated)| RxMeta {
            pkttype,
            vlan_tci,
            truncated,
        })
}

/// Random bytes, 0..200 long.
fn random_frame() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..200)
}

/// A valid frame with up to 8 bytes overwritten, then maybe cut short or
/// extended with random bytes.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0..bases().len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(b, edits, cut, tail)| {
            let mut f = bases()[b].clone();
            for (at, v) in edits {
                let at = at.index(f.len());
                f[at] = v;
            }
            if let Some(cut) = cut {
                f.truncate(cut.index(f.len() + 1));
            } else {
                f.extend_from_slice(&tail);
            }
            f
        })
}

fn any_frame() -> impl Strategy<Value = (Vec<u8>, RxMeta)> {
    (prop_oneof![random_frame(), mutated_frame()], meta())
}

/// frames_seen, forwarded and each drop counter.
fn totals(s: &WorkerStats) -> (u64, u64, [u64; Reason::COUNT]) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    (
        get(&s.frames_seen),
        get(&s.forwarded),
        s.drops.each_ref().map(get),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `classify` and `classify_packet` return on any input, and what
    /// `classify` accepts is a TCP/UDP packet to a configured service.
    #[test]
    fn classify_never_panics((frame, meta) in any_frame()) {
        let t = table();
        let _ = classify_packet(&frame, &meta, t);
        if let Ok(c) = classify(&frame, &meta, t) {
            let s = &t.services[c.service];
            let (dst, proto, dport) = (c.key.dst, c.key.proto, c.key.dport);
            prop_assert_eq!(dst, s.vip);
            prop_assert_eq!(proto, s.proto);
            prop_assert!(s.port == 0 || s.port == dport);
            prop_assert_eq!(c.l4_offset, 34);
            let l4_min = if proto == 6 { 20 } else { 8 };
            prop_assert!(frame.len() >= 34 + l4_min);
        }
    }

    /// A worker fed any frames: each one is either forwarded (a DR rewrite
    /// of it: only the MACs change) or counted under exactly one drop
    /// reason, the one `classify_packet` gives when it refuses the frame;
    /// and the counters always add up.
    #[test]
    fn worker_accounts_for_every_frame(frames in prop::collection::vec(any_frame(), 1..16)) {
        let mut rig = Rig::new(table().clone(), 1024);
        for (frame, meta) in &frames {
            let verdict = classify_packet(frame, meta, table());
            let (seen0, fwd0, drops0) = totals(rig.stats());
            let pushed = rig.worker.device().push_rx(frame, *meta, VnetHdr::default());
            prop_assert!(pushed);
            prop_assert_eq!(rig.worker.poll_once(rig.now).unwrap(), 1);
            rig.now += 10;
            let sent = rig.worker.device().sent.pop();
            let (seen, fwd, drops) = totals(rig.stats());
            prop_assert_eq!(seen, seen0 + 1);
            let moved: Vec<usize> = (0..Reason::COUNT).filter(|&i| drops[i] != drops0[i]).collect();
            match sent {
                Some(s) => {
                    prop_assert_eq!(fwd, fwd0 + 1);
                    prop_assert!(moved.is_empty(), "forwarded and dropped: {:?}", moved);
                    prop_assert_eq!(s.bytes.len(), frame.len());
                    prop_assert_eq!(&s.bytes[12..], &frame[12..]);
                    prop_assert_eq!(&s.bytes[6..12], &DIRECTOR_MAC[..]);
                    let server = server_of(&s.bytes[0..6]).to_string();
                    prop_assert!(SERVERS.contains(&server.as_str()), "sent to {}", server);
                    prop_assert!(verdict.is_ok());
                }
                None => {
                    prop_assert_eq!(fwd, fwd0);
                    prop_assert_eq!(moved.len(), 1, "drop counters moved: {:?}", moved);
                    let i = moved[0];
                    prop_assert_eq!(drops[i], drops0[i] + 1);
                    if let Err(r) = verdict {
                        prop_assert_eq!(Reason::ALL[i], r);
                    }
                }
            }
            prop_assert!(accounting_holds(rig.stats()));
            prop_assert!(rig.worker.flow_count() <= 1024);
        }
    }
}
