//! Point-in-time views of the director for `ulvsadm list`, `ulvsadm stats`
//! and the Prometheus exposition (slow path). The binary fills them from the
//! per-worker counters (summed on demand) and the runtime state; the JSON
//! shape is the contract's `ulvsadm list --json`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::rates::Rates;

/// Director-wide counters (`ulvsadm stats --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub frames_seen: u64,
    pub forwarded: u64,
    pub bytes_forwarded: u64,
    pub arp_replies: u64,
    pub arp_requests: u64,
    pub ring_drops: u64,
    pub flows: u64,
    pub flow_capacity: u64,
    /// Live flows evicted from full buckets (embryonic + established).
    pub flow_evictions: u64,
    pub flow_expirations: u64,
    /// Flows taken out of full buckets by kind: expired ones (also in
    /// `flow_expirations`), embryonic (a SYN only, never a handshake),
    /// established (every other live flow). A SYN flood should move only
    /// the first two.
    pub flow_evictions_expired: u64,
    pub flow_evictions_embryonic: u64,
    pub flow_evictions_established: u64,
    /// Flows moved off a server that went down or was removed.
    pub rescheduled: u64,
    /// SYN retransmits moved to the next server in Maglev order.
    pub syn_second_chance: u64,
    /// ICMP echo requests to VIPs answered.
    pub echo_replies: u64,
    /// ICMP errors to VIPs forwarded to the server owning the quoted flow.
    pub icmp_errors_forwarded: u64,
    /// Non-first fragments forwarded (following their first fragment).
    pub fragments_forwarded: u64,
    /// Frames produced by segmenting super-frames for IP-in-IP.
    pub tun_segments: u64,
    pub workers: u64,
    pub generation: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Frames not forwarded, by reason name.
    pub drops: BTreeMap<String, u64>,
}

/// One real server.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerSnap {
    /// `IP` or `IP:PORT` as in the config.
    pub address: String,
    pub weight: u32,
    /// `up`, `down` or `draining`.
    pub state: &'static str,
    /// Health-check result: `up` or `down` (independent of drain).
    pub health: &'static str,
    /// Last health-check failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    pub active_flows: u64,
    pub inactive_flows: u64,
    /// New flows given to it since start.
    pub conns: u64,
    /// Inbound (client -> server) frames and bytes.
    pub packets: u64,
    pub bytes: u64,
    /// Outbound (server -> client) frames and bytes; seen in NAT only.
    pub out_packets: u64,
    pub out_bytes: u64,
    pub rates: Rates,
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One virtual service with its servers and their sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceSnap {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: &'static str,
    pub mode: &'static str,
    pub scheduler: &'static str,
    pub active_flows: u64,
    pub inactive_flows: u64,
    pub conns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
    pub rates: Rates,
    pub real_servers: Vec<ServerSnap>,
}

/// `ulvsadm list --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct List {
    pub services: Vec<ServiceSnap>,
}

impl ServiceSnap {
    /// Fill the service's sums from its servers.
    pub fn total(&mut self) {
        let s = &self.real_servers;
        self.active_flows = s.iter().map(|r| r.active_flows).sum();
        self.inactive_flows = s.iter().map(|r| r.inactive_flows).sum();
        self.conns = s.iter().map(|r| r.conns).sum();
        self.packets = s.iter().map(|r| r.packets).sum();
        self.bytes = s.iter().map(|r| r.bytes).sum();
        self.out_packets = s.iter().map(|r| r.out_packets).sum();
        self.out_bytes = s.iter().map(|r| r.out_bytes).sum();
        self.rates = s.iter().fold(Rates::default(), |a, r| a.add(&r.rates));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_json_has_the_contract_fields() {
        let mut svc = ServiceSnap {
            name: "web".into(),
            vip: "198.18.100.1".into(),
            port: 80,
            protocol: "tcp",
            mode: "dr",
            scheduler: "maglev",
            real_servers: vec![
                ServerSnap {
                    address: "198.18.0.11".into(),
                    weight: 1,
                    state: "up",
                    health: "up",
                    active_flows: 3,
                    packets: 120,
                    bytes: 9000,
                    ..Default::default()
                },
                ServerSnap {
                    active_flows: 2,
                    packets: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        svc.total();
        assert_eq!(svc.active_flows, 5);
        assert_eq!(svc.packets, 121);
        let v = serde_json::to_value(List { services: vec![svc] }).unwrap();
        let s = &v["services"][0];
        for k in ["name", "vip", "port", "protocol", "mode", "real_servers"] {
            assert!(!s[k].is_null(), "{k}");
        }
        let r = &s["real_servers"][0];
        assert_eq!(r["address"], "198.18.0.11");
        assert_eq!(r["state"], "up");
        assert_eq!(r["active_flows"], 3);
        assert_eq!(r["packets"], 120);
        assert_eq!(r["bytes"], 9000);
        assert_eq!(r["weight"], 1);
    }
}
