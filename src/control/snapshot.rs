//! Point-in-time views of the director for `ulvsadm list`, `ulvsadm stats`
//! and the Prometheus exposition (slow path). The binary fills them from the
//! per-worker counters (summed on demand) and the runtime state; the JSON
//! shape is the contract's `ulvsadm list --json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rates::Rates;

/// Frames and bytes (Ethernet header plus IPv4 length) the XDP fast path
/// forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathCounters {
    pub frames: u64,
    pub bytes: u64,
}

/// Director-wide counters (`ulvsadm stats --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Gratuitous ARPs sent for the VIPs (at start, on `announce on`, for
    /// VIPs a reload adds).
    #[serde(default)]
    pub gratuitous_arps: u64,
    /// Whether the director answers ARP for its VIPs (`ulvsadm announce`).
    #[serde(default)]
    pub announcing: bool,
    /// `announce: route` only: the host routes installed in `route_table`
    /// (`VIP/32`), absent in the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_routes: Option<Vec<String>>,
    /// `xdp_fast_path` on AF_XDP only: what the XDP program forwarded by
    /// itself (not in `forwarded` / `bytes_forwarded`, which count the
    /// workers' frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_fast_path: Option<FastPathCounters>,
    /// Frames not forwarded, by reason name.
    pub drops: BTreeMap<String, u64>,
    /// The control socket's connections (absent from a director that does
    /// not count them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_connections: Option<ConnCounters>,
    /// `metrics_listen`'s connections (absent without `metrics_listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_connections: Option<ConnCounters>,
    /// Flow sync (absent without a `sync` section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSnap>,
}

/// The flow-sync thread's counters and its peers (`crate::sync`; the
/// names are those of `docs/sync-protocol.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSnap {
    /// This director's `sync.listen`.
    pub listen: String,
    /// Its sender id (hex), as peers see it in `creator`.
    pub id: String,
    /// Whether datagrams carry and need a MAC (`key_file`).
    pub authenticated: bool,
    /// The refresh interval in use.
    pub refresh_ms: u64,
    pub datagrams_sent: u64,
    pub flows_sent: u64,
    pub send_errors: u64,
    pub datagrams_received: u64,
    pub flows_received: u64,
    /// Datagrams (`not_peer`, `malformed`, `version`, `bad_mac`, `replay`)
    /// and records (`unknown_service`, `unknown_server`) dropped, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Sum of the workers' notes dropped on a full queue.
    pub notes_full: u64,
    /// Received flows dropped on a worker's full queue.
    pub synced_full: u64,
    /// Notes whose server id named no server any more.
    pub notes_unresolved: u64,
    /// Bulk transfers this director answered, and those whose walk did not
    /// finish in time (answered "done" anyway).
    pub bulk_served: u64,
    pub bulk_walk_timeouts: u64,
    pub peers: Vec<SyncPeerSnap>,
}

/// One peer: the bulk transfer this director asked it for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncPeerSnap {
    /// `IP:PORT` as in `sync.peers`.
    pub address: String,
    /// `requested`, `receiving`, `complete`, `unanswered` or `idle`.
    pub bulk: String,
    /// Bulk requests sent.
    pub bulk_requests: u64,
    /// Flows received from it between the first answer to the bulk
    /// request and its "bulk done" (the copies, and any new flows it sent
    /// meanwhile).
    pub bulk_flows: u64,
    /// Seconds from the first request to "bulk done" (when complete).
    pub bulk_seconds: Option<f64>,
    /// Datagrams accepted from it.
    pub datagrams_received: u64,
    /// Seconds since its last accepted datagram (none yet: absent).
    pub last_heard_seconds: Option<f64>,
}

impl SyncSnap {
    /// One line per peer for `ulvsadm list` and `ulvsadm stats`, like
    /// `sync peer 198.18.0.3:8848: bulk complete (120 flows in 0.2 s)`.
    pub fn peer_lines(&self) -> Vec<String> {
        self.peers
            .iter()
            .map(|p| {
                let detail = match (p.bulk.as_str(), p.bulk_seconds) {
                    ("complete", Some(s)) => format!(" ({} flows in {s:.1} s)", p.bulk_flows),
                    ("receiving", _) => format!(" ({} flows so far)", p.bulk_flows),
                    ("requested" | "unanswered", _) => format!(" ({} requests sent)", p.bulk_requests),
                    _ => String::new(),
                };
                format!("sync peer {}: bulk {}{detail}", p.address, p.bulk)
            })
            .collect()
    }
}

/// Whether a number only rises (Prometheus `counter`) or goes both ways (`gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One director-wide number of [`Stats`]: its `ulvsadm stats` name, its
/// Prometheus family and how to read it. [`STAT_FIELDS`] is the one list of
/// them that `ulvsadm stats` and `/metrics` both print.
#[derive(Debug, Clone, Copy)]
pub struct StatField {
    /// The key in `ulvsadm stats` (and in its `--json`).
    pub key: &'static str,
    pub metric: &'static str,
    /// `(label, value)` when the number is one sample of a labelled family
    /// (consecutive fields share the family), else `None`.
    pub label: Option<(&'static str, &'static str)>,
    pub kind: MetricKind,
    pub help: &'static str,
    pub get: fn(&Stats) -> u64,
}

macro_rules! stat_fields {
    ($($key:ident: $metric:literal $({$lk:literal = $lv:literal})?, $kind:ident, $help:literal;)*) => {
        /// Every plain number of [`Stats`] (all but `drops` and the connection
        /// counters), in `ulvsadm stats` order.
        pub const STAT_FIELDS: &[StatField] = &[$(StatField {
            key: stringify!($key),
            metric: $metric,
            label: stat_fields!(@label $($lk, $lv)?),
            kind: MetricKind::$kind,
            help: $help,
            get: |s| s.$key,
        }),*];
    };
    (@label) => { None };
    (@label $k:literal, $v:literal) => { Some(($k, $v)) };
}

stat_fields! {
    frames_seen: "ulvs_frames_seen_total", Counter, "Frames taken from the rings.";
    forwarded: "ulvs_frames_forwarded_total", Counter, "Frames rewritten and sent.";
    bytes_forwarded: "ulvs_bytes_forwarded_total", Counter, "Bytes of frames rewritten and sent.";
    flows: "ulvs_flows", Gauge, "Flows in the flow tables of all workers.";
    flow_capacity: "ulvs_flow_capacity", Gauge, "Capacity of the flow tables of all workers.";
    flow_evictions: "ulvs_flow_evictions_total", Counter, "Flows evicted from a full flow table.";
    flow_expirations: "ulvs_flow_expirations_total", Counter, "Flows removed after their idle timeout.";
    flow_evictions_expired: "ulvs_flow_evictions_by_kind_total" {"kind" = "expired"}, Counter,
        "Flows taken out of a full flow-table bucket, by kind: expired, embryonic (SYN only) or established.";
    flow_evictions_embryonic: "ulvs_flow_evictions_by_kind_total" {"kind" = "embryonic"}, Counter,
        "Flows taken out of a full flow-table bucket, by kind: expired, embryonic (SYN only) or established.";
    flow_evictions_established: "ulvs_flow_evictions_by_kind_total" {"kind" = "established"}, Counter,
        "Flows taken out of a full flow-table bucket, by kind: expired, embryonic (SYN only) or established.";
    rescheduled: "ulvs_flows_rescheduled_total", Counter,
        "Flows moved off a real server that went down or was removed.";
    syn_second_chance: "ulvs_syn_second_chance_total", Counter,
        "SYN retransmits moved to the next real server in Maglev order.";
    echo_replies: "ulvs_icmp_echo_replies_total", Counter,
        "ICMP echo requests to VIPs answered by the director.";
    icmp_errors_forwarded: "ulvs_icmp_errors_forwarded_total", Counter,
        "ICMP errors to VIPs forwarded to the real server of the quoted flow.";
    fragments_forwarded: "ulvs_fragments_forwarded_total", Counter,
        "Non-first fragments forwarded to the server of their first fragment.";
    tun_segments: "ulvs_tun_segments_total", Counter, "Frames made by segmenting super-frames for IP-in-IP.";
    arp_replies: "ulvs_arp_replies_total", Counter, "ARP replies sent for the VIPs.";
    arp_requests: "ulvs_arp_requests_total", Counter, "ARP requests sent to resolve real servers.";
    gratuitous_arps: "ulvs_gratuitous_arps_total", Counter, "Gratuitous ARPs sent to announce the VIPs.";
    ring_drops: "ulvs_ring_drops_total", Counter, "Frames the kernel dropped because a receive ring was full.";
    workers: "ulvs_workers", Gauge, "Forwarding worker threads.";
    generation: "ulvs_config_generation", Gauge, "Generation of the forwarding table in use.";
    reloads: "ulvs_reloads_total", Counter, "Configuration reloads that took effect.";
    reload_failures: "ulvs_reload_failures_total", Counter,
        "Configuration reloads rejected; the previous configuration stays.";
}

impl ConnCounters {
    /// Every counter by name (`open` first, a gauge; the rest only rise).
    pub fn fields(&self) -> [(&'static str, u64); 9] {
        [
            ("open", self.open),
            ("accepted", self.accepted),
            ("refused_limit", self.refused_limit),
            ("served", self.served),
            ("timed_out", self.timed_out),
            ("too_large", self.too_large),
            ("bad_request", self.bad_request),
            ("reply_timed_out", self.reply_timed_out),
            ("closed_early", self.closed_early),
        ]
    }
}

/// What became of the connections of one slow-path listener (the control
/// socket or `metrics_listen`); see `control::serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnCounters {
    /// Connections open now (a gauge).
    pub open: u64,
    /// Connections accepted, including those then refused.
    pub accepted: u64,
    /// Refused at once: the listener had its most connections open.
    pub refused_limit: u64,
    /// Requests answered (the whole reply taken by the client).
    pub served: u64,
    /// Closed with no complete request within the deadline.
    pub timed_out: u64,
    /// Refused: the request was longer than the listener accepts.
    pub too_large: u64,
    /// Requests that could not be understood (answered with an error).
    pub bad_request: u64,
    /// Closed because the client did not take the reply within the deadline.
    pub reply_timed_out: u64,
    /// The client closed (or the socket failed) before the exchange was over.
    pub closed_early: u64,
}

/// One real server.
///
/// The fields are declared in the byte order of their names, the order the
/// director has always sent them in (it once built the answer as a
/// [`serde_json::Value`], whose objects sort their keys): the streamed
/// answer serializes this type directly and stays byte for byte the same
/// (`director::listing`'s tests compare the two).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSnap {
    pub active_flows: u64,
    /// `IP` or `IP:PORT` as in the config.
    pub address: String,
    pub bytes: u64,
    /// New flows given to it since start.
    pub conns: u64,
    /// Health-check result: `up` or `down` (independent of drain).
    pub health: String,
    /// Last health-check failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    pub inactive_flows: u64,
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Outbound (server -> client) frames and bytes; seen in NAT only.
    pub out_bytes: u64,
    pub out_packets: u64,
    /// Inbound (client -> server) frames (and `bytes` above).
    pub packets: u64,
    #[serde(serialize_with = "rates_in_key_order")]
    pub rates: Rates,
    /// `up`, `down` or `draining`.
    pub state: String,
    pub weight: u32,
}

/// [`Rates`] with its fields in the byte order of their names (see
/// [`ServerSnap`]).
fn rates_in_key_order<S: serde::Serializer>(r: &Rates, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct InKeyOrder {
        conns_per_s: f64,
        in_bytes_per_s: f64,
        in_packets_per_s: f64,
        out_bytes_per_s: f64,
        out_packets_per_s: f64,
    }
    InKeyOrder {
        conns_per_s: r.conns_per_s,
        in_bytes_per_s: r.in_bytes_per_s,
        in_packets_per_s: r.in_packets_per_s,
        out_bytes_per_s: r.out_bytes_per_s,
        out_packets_per_s: r.out_packets_per_s,
    }
    .serialize(s)
}

/// One virtual service with its servers and their sums (fields in the byte
/// order of their names, as [`ServerSnap`]'s).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnap {
    pub active_flows: u64,
    pub bytes: u64,
    pub conns: u64,
    pub inactive_flows: u64,
    pub mode: String,
    pub name: String,
    pub out_bytes: u64,
    pub out_packets: u64,
    pub packets: u64,
    pub port: u16,
    pub protocol: String,
    #[serde(serialize_with = "rates_in_key_order")]
    pub rates: Rates,
    pub real_servers: Vec<ServerSnap>,
    pub scheduler: String,
    /// Hex digest of its Maglev table: equal exactly when two directors'
    /// tables send every slot to the same server (empty from a director
    /// that predates it).
    #[serde(default)]
    pub table_digest: String,
    pub vip: String,
}

/// One connection of `ulvsadm flows` (as a line of `ipvsadm -Lnc`; fields
/// in the byte order of their names, as [`ServerSnap`]'s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSnap {
    /// `IP:PORT` of the client.
    pub client: String,
    /// Seconds until it expires if no packet comes (rounded up).
    pub expires_in: u64,
    /// Who created it: `local` (a frame of it reached this director
    /// first), else the sync peer it came from, `IP:PORT` as in
    /// `sync.peers`.
    #[serde(default)]
    pub origin: String,
    /// `tcp`, `udp`, `icmp`, else the IP protocol number.
    pub protocol: String,
    /// The real server as in the config (`IP` or `IP:PORT`); a server that
    /// a reload removed shows as `IP (removed)`.
    pub server: String,
    /// The service of that VIP and port (empty if the config no longer has it).
    pub service: String,
    /// `syn`, `established`, `closing`, `udp` or `other`.
    pub state: String,
    /// `VIP:PORT` the client reached.
    pub vip: String,
    /// The worker whose table holds it.
    pub worker: usize,
}

/// `ulvsadm flows --json` (fields in the byte order of their names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flows {
    pub flows: Vec<FlowSnap>,
    /// More flows matched than one listing holds ([`Flows::flows`] is a part).
    pub truncated: bool,
    /// Workers asked, and those that answered in time (a worker that did not
    /// has none of its flows listed).
    pub workers: usize,
    pub workers_answered: usize,
}

/// `ulvsadm list --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub services: Vec<ServiceSnap>,
}

impl ServiceSnap {
    /// `VIP:PORT` as `ulvsadm list` shows it, an IPv6 VIP in brackets
    /// (`[2001:db8::1]:80`, as ipvsadm writes it).
    pub fn vip_port(&self) -> String {
        if self.vip.contains(':') {
            format!("[{}]:{}", self.vip, self.port)
        } else {
            format!("{}:{}", self.vip, self.port)
        }
    }

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

/// The service the tests of the modules that show a [`List`] start from
/// (`snapshot`, `metrics`, `status_page`): Maglev, with its sums filled
/// from `real_servers`.
#[cfg(test)]
pub(crate) fn service_fixture(
    name: &str,
    (vip, port, protocol): (&str, u16, &str),
    mode: &str,
    real_servers: Vec<ServerSnap>,
) -> ServiceSnap {
    let mut s = ServiceSnap {
        name: name.into(),
        vip: vip.into(),
        port,
        protocol: protocol.into(),
        mode: mode.into(),
        scheduler: "maglev".into(),
        real_servers,
        ..ServiceSnap::default()
    };
    s.total();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_json_has_the_contract_fields() {
        let svc = service_fixture(
            "web",
            ("198.18.100.1", 80, "tcp"),
            "dr",
            vec![
                ServerSnap {
                    address: "198.18.0.11".into(),
                    weight: 1,
                    state: "up".into(),
                    health: "up".into(),
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
        );
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

    #[test]
    fn ulvsadm_reads_back_what_the_director_writes() {
        let list = List {
            services: vec![ServiceSnap {
                name: "web".into(),
                protocol: "tcp".into(),
                table_digest: "00ff".into(),
                real_servers: vec![ServerSnap {
                    address: "198.18.0.11".into(),
                    state: "draining".into(),
                    health_reason: Some("connect: refused".into()),
                    mac: Some("02:00:c6:12:00:0b".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let back: List = serde_json::from_str(&serde_json::to_string(&list).unwrap()).unwrap();
        assert_eq!(back, list);
        let stats = Stats {
            frames_seen: 7,
            drops: BTreeMap::from([("runt".to_string(), 2)]),
            control_connections: Some(ConnCounters {
                timed_out: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let back: Stats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
    }

    #[test]
    fn a_missing_counter_is_an_error_not_a_zero() {
        let mut v = serde_json::to_value(Stats::default()).unwrap();
        v.as_object_mut().unwrap().remove("forwarded");
        let e = serde_json::from_value::<Stats>(v).unwrap_err();
        assert!(e.to_string().contains("missing field `forwarded`"), "{e}");
        // What later versions added may be absent (an older director).
        let mut v = serde_json::to_value(Stats::default()).unwrap();
        v.as_object_mut().unwrap().remove("control_connections");
        assert!(serde_json::from_value::<Stats>(v).is_ok());
        let mut v = serde_json::to_value(ServiceSnap::default()).unwrap();
        v.as_object_mut().unwrap().remove("table_digest");
        assert!(serde_json::from_value::<ServiceSnap>(v).is_ok());
    }

    #[test]
    fn every_plain_stats_field_is_listed_once() {
        let v = serde_json::to_value(Stats::default()).unwrap();
        let plain: Vec<&String> = v
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, x)| x.is_u64())
            .map(|(k, _)| k)
            .collect();
        let mut keys: Vec<&str> = STAT_FIELDS.iter().map(|f| f.key).collect();
        keys.sort_unstable();
        let mut want: Vec<&str> = plain.iter().map(|k| k.as_str()).collect();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
}
