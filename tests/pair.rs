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
