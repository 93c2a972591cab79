//! What makes a DR takeover without flow sync work: a standby director
//! that never saw a connection's SYN forwards its mid-connection packets to
//! the server the active director chose, because a packet of an unknown
//! flow is scheduled by Maglev like a new flow (no SYN required) and both
//! directors build identical tables from identical configs.

mod common;

use common::*;
use ulvs::dataplane::dump::DumpFilter;
use ulvs::fwd::flow::FlowState;
use ulvs::wire::tcp;

#[test]
fn a_standby_sends_mid_connection_packets_where_the_active_director_did() {
    let mut active = Rig::new(topology_table(), 4096);
    let mut standby = Rig::new(topology_table(), 4096);
    let mut servers = std::collections::BTreeSet::new();
    for sport in 20_000..20_200u16 {
        let chosen = active.forward(&tcp_to_vip(sport, 80, tcp::SYN));
        assert_eq!(active.forward(&tcp_to_vip(sport, 80, tcp::ACK)), chosen);
        // The active director dies; the standby sees the next segment first.
        let taken = standby.forward(&tcp_to_vip(sport, 80, tcp::ACK | tcp::PSH));
        assert_eq!(taken, chosen, "flow {sport} moved to another server on takeover");
        servers.insert(chosen);
    }
    assert_eq!(
        servers.len(),
        3,
        "the flows are spread, so the check means something"
    );
    // The standby keeps them as established flows from then on.
    let web = DumpFilter {
        vip: VIP,
        port: 80,
        proto: 6,
    };
    standby.worker.stats().dump.ask(Some(web), 1000);
    standby.worker.poll_once(standby.now).unwrap();
    let d = standby.worker.stats().dump.take().unwrap();
    assert_eq!(d.flows.len(), 200);
    assert!(d.flows.iter().all(|f| f.state == FlowState::TcpEstablished));
}

/// The same for an IPv6 VIP: the standby sends each mid-connection packet
/// to the server the active director chose, and keeps the flows it takes
/// over as established IPv6 flows.
#[test]
fn a_standby_sends_mid_connection_ipv6_packets_where_the_active_director_did() {
    use std::net::{IpAddr, Ipv6Addr};
    use ulvs::control::publish6::build_table_dual;
    use ulvs::wire::builder::{PacketBuilder6, DIRECTOR_MAC};
    let yaml = "interface: eth0\nservices:\n  - name: web6\n    vip: 2001:db8:100::1\n    port: 80\n    real_servers:\n      - address: 2001:db8::11\n      - address: 2001:db8::12\n      - address: 2001:db8::13\n";
    let table = || {
        let cfg = config(yaml);
        let rt = runtime(&cfg);
        let mac = |a: IpAddr| match a {
            IpAddr::V6(a) => Some([0x02, 0x66, 0, 0, 0, a.octets()[15]]),
            IpAddr::V4(a) => Some(mac_of(a)),
        };
        build_table_dual(&cfg, &rt, mac, DIRECTOR_MAC, (0xc612_0002, 0), 1)
    };
    let vip: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
    let client: Ipv6Addr = "2001:db8:200::7".parse().unwrap();
    let seg = |sport, flags| PacketBuilder6::new(client, vip).tcp(sport, 80, flags, &[]);
    let server = |rig: &mut Rig, f: &[u8]| rig.forward_any(f).bytes[0..6].to_vec();
    let mut active = Rig::new(table(), 4096);
    let mut standby = Rig::new(table(), 4096);
    let mut servers = std::collections::BTreeSet::new();
    for sport in 20_000..20_200u16 {
        let chosen = server(&mut active, &seg(sport, tcp::SYN));
        assert_eq!(server(&mut active, &seg(sport, tcp::ACK)), chosen);
        let taken = server(&mut standby, &seg(sport, tcp::ACK | tcp::PSH));
        assert_eq!(taken, chosen, "flow {sport} moved to another server on takeover");
        servers.insert(chosen);
    }
    assert_eq!(servers.len(), 3, "the flows are spread");
    let web = DumpFilter {
        vip: u128::from(vip),
        port: 80,
        proto: 6,
    };
    standby.worker.stats().dump.ask6(Some(web), None, 1000);
    standby.worker.poll_once(standby.now).unwrap();
    let d = standby.worker.stats().dump.take().unwrap();
    assert_eq!(d.flows6.len(), 200);
    assert!(d.flows6.iter().all(|f| f.state == FlowState::TcpEstablished));
}
