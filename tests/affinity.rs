//! `scheduler: maglev-client` at the worker: every new flow of one client
//! address gets one server whatever its ports, different clients spread;
//! with `maglev` one client's flows spread. Also the dump's client filter
//! (`ulvsadm flows --client`, `ulvsadm trace`).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use common::*;
use ulvs::control::publish::build_table;
use ulvs::dataplane::dump::{ClientFilter, DumpFilter};
use ulvs::wire::tcp;

fn rig(scheduler: &str) -> Rig {
    let yaml = TOPOLOGY.replacen(
        "    mode: dr\n",
        &format!("    mode: dr\n    scheduler: {scheduler}\n"),
        1,
    );
    let cfg = config(&yaml);
    assert_eq!(cfg.services[0].scheduler.as_str().replace('_', "-"), scheduler);
    let rt = runtime(&cfg);
    Rig::new(
        build_table(&cfg, &rt, |a| Some(mac_of(a)), DIRECTOR_MAC, 0, 1),
        4096,
    )
}

fn syn_from(client: u32, sport: u16) -> Vec<u8> {
    tcp_frame(client, sport, VIP, 80, tcp::SYN, &[])
}

#[test]
fn one_client_keeps_one_server_and_clients_spread() {
    let mut r = rig("maglev-client");
    let one: BTreeSet<Ipv4Addr> = (40_000..40_100u16)
        .map(|p| r.forward(&syn_from(CLIENT, p)))
        .collect();
    assert_eq!(one.len(), 1, "100 ports of one client: {one:?}");
    let mut per_client: HashMap<u32, BTreeSet<Ipv4Addr>> = HashMap::new();
    for c in 0..60u32 {
        let client = u32::from(Ipv4Addr::new(198, 18, 2, 10)) + c;
        for p in [1000, 2000, 3000] {
            per_client
                .entry(client)
                .or_default()
                .insert(r.forward(&syn_from(client, p)));
        }
    }
    assert!(per_client.values().all(|s| s.len() == 1), "{per_client:?}");
    let servers: BTreeSet<Ipv4Addr> = per_client.values().flatten().copied().collect();
    assert_eq!(servers.len(), 3, "60 clients over 3 servers: {servers:?}");
}

#[test]
fn the_five_tuple_hash_spreads_one_client() {
    let mut r = rig("maglev");
    let one: BTreeSet<Ipv4Addr> = (40_000..40_100u16)
        .map(|p| r.forward(&syn_from(CLIENT, p)))
        .collect();
    assert_eq!(one.len(), 3, "100 ports of one client: {one:?}");
}

#[test]
fn the_dump_keeps_one_client_or_one_tuple() {
    let mut r = rig("maglev");
    let other = u32::from(Ipv4Addr::new(198, 18, 2, 10));
    for p in 40_000..40_010u16 {
        r.forward(&syn_from(CLIENT, p));
        r.forward(&syn_from(other, p));
    }
    let mut dump = |client: ClientFilter| {
        let d = &r.worker.stats().dump;
        d.ask_client(
            Some(DumpFilter {
                vip: VIP,
                port: 80,
                proto: 6,
            }),
            Some(client),
            100,
        );
        r.worker.poll_once(r.now).unwrap();
        r.worker
            .stats()
            .dump
            .take()
            .expect("an idle worker answers")
            .flows
    };
    let all = dump(ClientFilter {
        addr: other,
        port: None,
    });
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|f| { f.key.src } == other));
    let exact = dump(ClientFilter {
        addr: CLIENT,
        port: Some(40_003),
    });
    assert_eq!(exact.len(), 1);
    assert_eq!(({ exact[0].key.src }, { exact[0].key.sport }), (CLIENT, 40_003));
}
