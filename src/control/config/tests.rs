use super::field::{next_prime, prev_prime};
use super::*;
use crate::fwd::maglev::is_prime;

/// The config section of CONTRACT.md, verbatim.
const CONTRACT_EXAMPLE: &str = "\
interface: eth0                 # the director's interface on the shared segment
control_socket: /run/ulvs/ulvs.sock   # optional, this is the default
metrics_listen: 127.0.0.1:9469  # optional; Prometheus text format at GET /metrics
services:
  - name: web                   # unique
    vip: 198.18.100.1
    port: 80                    # 0 means every port of the VIP
    protocol: tcp               # tcp | udp
    mode: dr                    # dr | nat | tun
    scheduler: maglev           # maglev is the default
    health:                     # optional; omitted means every server is up
      kind: tcp                 # tcp | http | none
      path: /                   # http only
      expect_status: 200        # http only
      interval_ms: 1000
      timeout_ms: 500
      rise: 2
      fall: 2
    real_servers:
      - address: 198.18.0.11    # dr and tun: an IP; nat: IP or IP:PORT
        weight: 1               # 0 takes no new flows
";

/// A small valid config; line numbers are in the comments.
const BASE: &str = "\
interface: eth0
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    real_servers:
      - address: 198.18.0.11
        weight: 1
";

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// What the strict reading notes as written agrees with the loose reading
/// (the rules ask the former for a valid file, the latter placed every
/// problem before): the check behind every `ok` and `errs` below.
fn written_agrees(text: &str) {
    let options = || place::options(MAX_YAML_NODES);
    let (parsed, _, written) =
        field::collecting(|| serde_saphyr::from_str_with_options::<Config>(text, options()));
    if let (Ok(_), Ok(places)) = (parsed, place::Places::of(text, options())) {
        assert_eq!(written, places.written(), "noted vs placed for:\n{text}");
    }
}

fn ok(text: &str) -> Config {
    written_agrees(text);
    match Config::from_str(text, "t.yaml") {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errs(text: &str) -> Vec<ConfigError> {
    written_agrees(text);
    match Config::from_str(text, "t.yaml") {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0,
    }
}

/// Exactly one error, with this line and field, whose message contains `needle`.
fn one(text: &str, line: Option<usize>, field: &str, needle: &str) -> ConfigError {
    let e = errs(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    let e = e.into_iter().next().unwrap();
    assert_eq!(e.line, line, "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(e.message.contains(needle), "{e} lacks {needle:?}");
    e
}

#[test]
fn contract_example_parses() {
    let c = ok(CONTRACT_EXAMPLE);
    let expected = Config {
        interface: "eth0".into(),
        control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        metrics_listen: Some("127.0.0.1:9469".parse().unwrap()),
        workers: cpus(),
        flow_capacity: 1_048_576,
        maglev_table_size: 65_537,
        timeouts: Timeouts {
            tcp_ms: 900_000,
            tcp_closing_ms: 120_000,
            udp_ms: 300_000,
            tcp_syn_ms: 120_000,
            other_ms: 300_000,
        },
        on_server_down: OnServerDown::Reschedule,
        answer_ping: true,
        io: IoBackend::Auto,
        xdp_fast_path: false,
        cpus: vec![],
        announce: Announce::Arp,
        route_table: None,
        sync: None,
        services: vec![Service {
            name: "web".into(),
            vip: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)),
            port: 80,
            protocol: Transport::Tcp,
            mode: Mode::Dr,
            scheduler: Scheduler::Maglev,
            health: HealthCheck {
                kind: HealthKind::Tcp,
                ..HealthCheck::default()
            },
            real_servers: vec![RealServer {
                address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)),
                port: None,
                weight: 1,
                line: Some(20),
            }],
            line: Some(5),
        }],
    };
    assert_eq!(c, expected);
}

#[test]
fn defaults() {
    let c = ok("interface: eth0\nservices:\n  - name: a\n    vip: 198.18.100.1\n    port: 0\n");
    let s = &c.services[0];
    assert_eq!(s.protocol, Transport::Tcp);
    assert_eq!(s.mode, Mode::Dr);
    assert_eq!(s.scheduler, Scheduler::Maglev);
    assert_eq!(s.health, HealthCheck::default());
    assert!(s.real_servers.is_empty(), "a service without servers is valid");
    assert_eq!(c.workers, cpus());
    assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!(c.metrics_listen, None);
    assert!(c.answer_ping);
    assert_eq!(c.announce, Announce::Arp);
    assert_eq!(c.route_table, None);
}

/// `announce`: arp, none and route are taken (any case); route needs
/// `route_table`, which is checked and means nothing without route.
/// `xdp_fast_path`: off by default, on with AF_XDP or auto, refused with
/// AF_PACKET (naming its line), a non-boolean refused.
#[test]
fn xdp_fast_path_flag() {
    let render = |text: &str| Config::from_str(text, "t.yaml").unwrap_err().to_string();
    assert!(!ok(BASE).xdp_fast_path);
    assert!(ok(&format!("xdp_fast_path: true\nio: af_xdp\n{BASE}")).xdp_fast_path);
    assert!(ok(&format!("xdp_fast_path: true\n{BASE}")).xdp_fast_path);
    assert!(!ok(&format!("xdp_fast_path: false\nio: af_packet\n{BASE}")).xdp_fast_path);
    assert_eq!(
        render(&format!("io: af_packet\nxdp_fast_path: true\n{BASE}")),
        "t.yaml:2: xdp_fast_path: only meaningful with io: af_xdp or auto (io is af_packet)"
    );
    assert_eq!(
        render(&format!("xdp_fast_path: yes please\n{BASE}")),
        "t.yaml:1: xdp_fast_path: expected true or false, got `yes please`"
    );
}

#[test]
fn announce_modes() {
    assert_eq!(ok(&format!("announce: arp\n{BASE}")).announce, Announce::Arp);
    assert_eq!(ok(&format!("announce: None\n{BASE}")).announce, Announce::None);
    let c = ok(&format!("announce: route\nroute_table: 4096\n{BASE}"));
    assert_eq!((c.announce, c.route_table), (Announce::Route, Some(4096)));
    let c = ok(&format!("{BASE}route_table: 4294967295\nannounce: ROUTE\n"));
    assert_eq!((c.announce, c.route_table), (Announce::Route, Some(u32::MAX)));
    let render = |text: &str| Config::from_str(text, "t.yaml").unwrap_err().to_string();
    assert_eq!(
        render(&format!("announce: route\n{BASE}")),
        "t.yaml:1: route_table: required with announce: route (the kernel table your routing \
         daemon imports, e.g. route_table: 4096)"
    );
    // A bad table is reported once, not again as missing.
    assert_eq!(
        render(&format!("announce: route\nroute_table: 255\n{BASE}")),
        "t.yaml:2: route_table: table 255 is one of the kernel's own (253 default, 254 main, \
         255 local); choose another"
    );
    assert_eq!(
        render(&format!("{BASE}announce: bgp\n")),
        "t.yaml:9: announce: unknown value \"bgp\"; allowed: arp, none, route"
    );
    assert_eq!(
        render(&format!("announce: none\nroute_table: 4096\n{BASE}")),
        "t.yaml:2: route_table: only meaningful with announce: route (announce is none)"
    );
    assert_eq!(
        render(&format!("route_table: 4096\n{BASE}")),
        "t.yaml:1: route_table: only meaningful with announce: route (announce is arp)"
    );
    assert_eq!(
        render(&format!("route_table: 254\n{BASE}")),
        "t.yaml:1: route_table: table 254 is one of the kernel's own (253 default, 254 main, \
         255 local); choose another"
    );
    assert_eq!(
        render(&format!("route_table: 0\n{BASE}")),
        "t.yaml:1: route_table: must be between 1 and 4294967295, got 0"
    );
    // A bad announce value is reported once, not again through route_table.
    let e = errs(&format!("announce: bgp\nroute_table: 7\n{BASE}"));
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn all_options() {
    let c = ok("\
interface: eth1
control_socket: /tmp/x.sock
workers: 3
flow_capacity: 2048
maglev_table_size: 251
timeouts: {tcp: 0.5, tcp_fin: 2, udp: 1.25, tcp_syn: 3}
on_server_down: keep
answer_ping: false
io: af_packet
cpus: [2, 3]
services:
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    mode: nat
    health: {kind: http, path: /healthz, expect_status: 204, interval_ms: 200, timeout_ms: 100, rise: 3, fall: 4, port: 8080}
    real_servers:
      - {address: \"198.18.0.11:5353\", weight: 0}
      - address: 198.18.0.12
");
    assert_eq!(c.interface, "eth1");
    assert_eq!(c.control_socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(c.workers, 3);
    assert_eq!(c.flow_capacity, 2048);
    assert_eq!(c.maglev_table_size, 251);
    assert_eq!(
        c.timeouts,
        Timeouts {
            tcp_ms: 500,
            tcp_closing_ms: 2000,
            udp_ms: 1250,
            tcp_syn_ms: 3000,
            other_ms: 1250,
        }
    );
    assert_eq!(c.on_server_down, OnServerDown::Keep);
    assert!(!c.answer_ping);
    assert_eq!(c.io, IoBackend::AfPacket);
    assert_eq!(c.cpus, vec![2, 3]);
    let s = &c.services[0];
    assert_eq!((s.protocol, s.mode), (Transport::Udp, Mode::Nat));
    assert_eq!(
        s.health,
        HealthCheck {
            kind: HealthKind::Http,
            path: "/healthz".into(),
            expect_status: 204,
            interval_ms: 200,
            timeout_ms: 100,
            rise: 3,
            fall: 4,
            port: Some(8080),
        }
    );
    assert_eq!(s.real_servers[0].port, Some(5353));
    assert_eq!(s.real_servers[0].weight, 0);
    assert_eq!(s.real_servers[0].endpoint(), "198.18.0.11:5353");
    assert_eq!(s.real_servers[1].port, None);
    assert_eq!(s.real_servers[1].line, Some(20));
    assert_eq!(c.service("dns").map(|s| s.port), Some(53));
}

#[test]
fn workers_follow_cpus() {
    let c = ok(&format!("cpus: [0, 1]\n{BASE}"));
    assert_eq!(c.workers, 2);
    let c = ok(&format!("workers: 0\n{BASE}"));
    assert_eq!(c.workers, cpus());
    one(
        &format!("workers: 65\n{BASE}"),
        Some(1),
        "workers",
        "between 0 and 64",
    );
    one(
        &format!("cpus: [0, 0]\n{BASE}"),
        Some(1),
        "cpus[1]",
        "listed twice",
    );
    one(
        &format!("cpus:\n  - 1\n  - 1024\n{BASE}"),
        Some(3),
        "cpus[1]",
        "between 0 and 1023",
    );
}

#[test]
fn unknown_field_names_field_and_line() {
    let text = BASE.replace("        weight: 1", "        wieght: 1");
    let e = one(
        &text,
        Some(8),
        "services[0].real_servers[0].wieght",
        "unknown field `wieght`",
    );
    assert!(e.message.contains("weight"), "lists allowed fields: {e}");
    let text = format!("{BASE}    colour: red\n");
    one(&text, Some(9), "services[0].colour", "unknown field `colour`");
    one(
        &format!("intrface: eth0\n{BASE}"),
        Some(1),
        "intrface",
        "unknown field",
    );
    let text = BASE.replace(
        "  - name: web\n",
        "  - name: web\n    health: {kind: tcp, rize: 2}\n",
    );
    one(&text, Some(4), "services[0].health.rize", "unknown field `rize`");
}

#[test]
fn type_and_syntax_errors_carry_line() {
    let text = BASE.replace("port: 80", "port: eighty");
    let e = errs(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(5));
    assert_eq!(e[0].field, "services[0].port");
    let e = errs("interface: [eth0\nservices: []\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].line.is_some());
    let e = errs("interface: eth0\ninterface: eth1\n");
    assert_eq!((e[0].line, e[0].field.as_str()), (Some(2), "interface"));
    assert!(e[0].message.contains("duplicate"), "{}", e[0]);
    let e = errs("");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("empty"));
    let e = errs("# nothing\n\n");
    assert!(e[0].message.contains("empty"));
}

#[test]
fn flow_style_and_syntax_errors() {
    one(
            "interface: eth0\nservices:\n  - {name: a, vip: 198.18.100.1, port: 80, real_servers: [{address: 198.18.0.11}, {address: 198.18.0.12, wieght: 1}]}\n",
            Some(3),
            "services[0].real_servers[1].wieght",
            "unknown field `wieght`",
        );
    one(
        "interface: eth0\nservices: [{name: a, vip: 198.18.100.1, port: x}]\n",
        Some(2),
        "services[0].port",
        "",
    );
    one(
        "interface: eth0\nservices:\n  - name: a\n    port: 80\n  weird\n",
        Some(5),
        "",
        "YAML syntax error",
    );
    one(
        &format!("{BASE}---\ninterface: eth1\n"),
        Some(9),
        "",
        "only one YAML document",
    );
    one(
        "interface: eth0\nservices:\n  - name: a\n    real_servers:\n      - 198.18.0.11\n",
        Some(5),
        "services[0].real_servers[0]",
        "expected a mapping",
    );
}

#[test]
fn interface_rules() {
    one(
        &BASE.replace("interface: eth0", "interface: \"\""),
        Some(1),
        "interface",
        "must not be empty",
    );
    one(
        &BASE.replace("interface: eth0\n", ""),
        None,
        "interface",
        "required",
    );
    one(
        &BASE.replace("eth0", "averyveryverylongname0"),
        Some(1),
        "interface",
        "longer than 15",
    );
}

#[test]
fn services_required() {
    one("interface: eth0\n", None, "services", "at least one service");
    one(
        "interface: eth0\n\nservices:  # none yet\n",
        Some(3),
        "services",
        "at least one service",
    );
    one(
        &BASE.replace("interface: eth0", "interface:"),
        Some(1),
        "interface",
        "required",
    );
    one(
        "interface: eth0\nservices: []\n",
        Some(2),
        "services",
        "at least one service",
    );
}

#[test]
fn duplicate_names_and_keys() {
    let text = format!("{BASE}  - name: web\n    vip: 198.18.100.2\n    port: 80\n");
    let e = one(
        &text,
        Some(9),
        "services[1].name",
        "duplicate service name \"web\"",
    );
    assert!(e.message.contains("line 3"), "{e}");
    let text = format!("{BASE}  - name: web2\n    vip: 198.18.100.1\n    port: 80\n");
    one(&text, Some(9), "services[1]", "overlaps service \"web\"");
    // Same VIP and port, other protocol: fine.
    ok(&format!(
        "{BASE}  - name: web2\n    vip: 198.18.100.1\n    port: 80\n    protocol: udp\n"
    ));
    // Port 0 takes every port of the VIP for its protocol.
    let text = format!("{BASE}  - name: all\n    vip: 198.18.100.1\n    port: 0\n");
    one(&text, Some(9), "services[1]", "port 0 takes every port");
    ok(&format!(
        "{BASE}  - name: all\n    vip: 198.18.100.1\n    port: 0\n    protocol: udp\n"
    ));
}

#[test]
fn addresses() {
    one(
        &BASE.replace("vip: 198.18.100.1", "vip: 2001:db8::1::2"),
        Some(4),
        "services[0].vip",
        "not a valid IPv6 address",
    );
    one(
        &BASE.replace("vip: 198.18.100.1", "vip: 198.18.100.300"),
        Some(4),
        "services[0].vip",
        "not a valid IPv4 address",
    );
    one(
        &BASE.replace("vip: 198.18.100.1", "vip: 198.18.100.1:80"),
        Some(4),
        "services[0].vip",
        "without a port",
    );
    one(
        &BASE.replace("address: 198.18.0.11", "address: \"[2001:db8::2]:80\""),
        Some(7),
        "services[0].real_servers[0].address",
        "is IPv6 but the service's vip 198.18.100.1 is IPv4",
    );
    one(
        &BASE.replace("address: 198.18.0.11", "address: 198.18.0"),
        Some(7),
        "services[0].real_servers[0].address",
        "not a valid IPv4 address",
    );
    one(
        &BASE.replace("vip: 198.18.100.1", "vip: 0.0.0.0"),
        Some(4),
        "services[0].vip",
        "not a usable address",
    );
}

#[test]
fn ip_port_only_in_nat() {
    let text = BASE.replace("address: 198.18.0.11", "address: 198.18.0.11:8080");
    one(
        &text,
        Some(7),
        "services[0].real_servers[0].address",
        "only allowed in nat mode",
    );
    let text = text.replace("    port: 80\n", "    port: 80\n    mode: tun\n");
    one(
        &text,
        Some(8),
        "services[0].real_servers[0].address",
        "only allowed in nat mode",
    );
    let c = ok(&text.replace("mode: tun", "mode: nat"));
    let rs = &c.services[0].real_servers[0];
    assert_eq!(
        (rs.address, rs.port),
        (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)), Some(8080))
    );
    let text = BASE
        .replace("    port: 80\n", "    port: 80\n    mode: nat\n")
        .replace("address: 198.18.0.11", "address: 198.18.0.11:0");
    one(
        &text,
        Some(8),
        "services[0].real_servers[0].address",
        "port 0 is not allowed",
    );
    let text = BASE
        .replace("    port: 80\n", "    port: 80\n    mode: nat\n")
        .replace("address: 198.18.0.11", "address: 198.18.0.11:70000");
    one(
        &text,
        Some(8),
        "services[0].real_servers[0].address",
        "not a port number",
    );
}

#[test]
fn real_server_rules() {
    let text = format!("{BASE}      - address: 198.18.0.11\n");
    let e = one(
        &text,
        Some(9),
        "services[0].real_servers[1].address",
        "duplicate real server 198.18.0.11",
    );
    assert!(e.message.contains("line 7"), "{e}");
    // nat port 0 (all ports): a server port is refused.
    one(
            "interface: eth0\nservices:\n  - name: a\n    vip: 198.18.100.1\n    port: 0\n    mode: nat\n    real_servers:\n      - address: 198.18.0.11:8080\n",
            Some(8),
            "services[0].real_servers[0].address",
            "a port-0 (all ports) nat service keeps each port",
        );
    // nat: IP and IP:PORT with the service's port are the same server.
    let text = format!("{BASE}      - address: 198.18.0.11:80\n")
        .replace("    port: 80\n", "    port: 80\n    mode: nat\n");
    one(
        &text,
        Some(10),
        "services[0].real_servers[1].address",
        "duplicate",
    );
    // nat: other ports on the same IP are other servers.
    ok(&format!("{BASE}      - address: 198.18.0.11:81\n")
        .replace("    port: 80\n", "    port: 80\n    mode: nat\n"));
    one(
        &BASE.replace("weight: 1", "weight: 65536"),
        Some(8),
        "services[0].real_servers[0].weight",
        "between 0 and 65535",
    );
    one(
        &BASE.replace("weight: 1", "weight: -1"),
        Some(8),
        "services[0].real_servers[0].weight",
        "between 0 and 65535",
    );
    one(
        &BASE
            .replace("      - address: 198.18.0.11\n", "      - weight: 3\n")
            .replace("        weight: 1\n", ""),
        Some(7),
        "services[0].real_servers[0].address",
        "required",
    );
}

#[test]
fn service_field_rules() {
    one(
        &BASE.replace("port: 80", "port: 65536"),
        Some(5),
        "services[0].port",
        "between 0 and 65535",
    );
    one(
        &BASE.replace("    port: 80\n", ""),
        Some(3),
        "services[0].port",
        "required",
    );
    one(
        &BASE.replace("name: web", "name: my web"),
        Some(3),
        "services[0].name",
        "whitespace",
    );
    one(
        &BASE.replace("name: web", "name: \"\""),
        Some(3),
        "services[0].name",
        "must not be empty",
    );
    one(
        &BASE.replace("    port: 80\n", "    port: 80\n    protocol: sctp\n"),
        Some(6),
        "services[0].protocol",
        "allowed: tcp, udp",
    );
    one(
        &BASE.replace("    port: 80\n", "    port: 80\n    mode: fullnat\n"),
        Some(6),
        "services[0].mode",
        "allowed: dr, nat, tun",
    );
    one(
        &BASE.replace("    port: 80\n", "    port: 80\n    scheduler: rr\n"),
        Some(6),
        "services[0].scheduler",
        "allowed: maglev",
    );
    one(
        &format!("io: dpdk\n{BASE}"),
        Some(1),
        "io",
        "allowed: auto, af_xdp, af_packet",
    );
    one(
        &format!("on_server_down: panic\n{BASE}"),
        Some(1),
        "on_server_down",
        "allowed: reschedule, keep",
    );
    // Spelling is forgiving about case and dashes.
    let c = ok(&format!(
        "io: AF-XDP\n{}",
        BASE.replace("port: 80\n", "port: 80\n    protocol: UDP\n")
    ));
    assert_eq!(c.io, IoBackend::AfXdp);
    assert_eq!(c.services[0].protocol, Transport::Udp);
}

fn with_health(health: &str) -> String {
    BASE.replace("    port: 80\n", &format!("    port: 80\n    health:\n{health}"))
}

#[test]
fn health_rules() {
    // Lines: health at 6, its first field at 7.
    one(
        &with_health("      kind: icmp\n"),
        Some(7),
        "services[0].health.kind",
        "allowed: tcp, http, none",
    );
    one(
        &with_health("      interval_ms: 1000\n"),
        Some(7),
        "services[0].health.kind",
        "required",
    );
    one(
        &with_health("      kind: tcp\n      path: /status\n"),
        Some(8),
        "services[0].health.path",
        "only used with kind http",
    );
    one(
        &with_health("      kind: tcp\n      expect_status: 204\n"),
        Some(8),
        "services[0].health.expect_status",
        "only used with kind http",
    );
    one(
        &with_health("      kind: http\n      path: status\n"),
        Some(8),
        "services[0].health.path",
        "must start with '/'",
    );
    one(
        &with_health("      kind: http\n      interval_ms: 100\n      timeout_ms: 200\n"),
        Some(9),
        "services[0].health.timeout_ms",
        "must not exceed interval_ms (100)",
    );
    one(
        &with_health("      kind: http\n      timeout_ms: 0\n"),
        Some(8),
        "services[0].health.timeout_ms",
        "between 1",
    );
    one(
        &with_health("      kind: tcp\n      interval_ms: 0\n"),
        Some(8),
        "services[0].health.interval_ms",
        "between 1",
    );
    one(
        &with_health("      kind: tcp\n      rise: 0\n"),
        Some(8),
        "services[0].health.rise",
        "between 1",
    );
    one(
        &with_health("      kind: tcp\n      fall: 0\n"),
        Some(8),
        "services[0].health.fall",
        "between 1",
    );
    one(
        &with_health("      kind: tcp\n      port: 0\n"),
        Some(8),
        "services[0].health.port",
        "between 1 and 65535",
    );
    one(
        &with_health("      kind: tcp\n").replace("port: 80", "port: 0"),
        Some(7),
        "services[0].health.port",
        "service port is 0",
    );
    // A short interval alone shortens the default timeout.
    let c = ok(&with_health("      kind: tcp\n      interval_ms: 200\n"));
    assert_eq!(c.services[0].health.timeout_ms, 200);
    let c = ok(&with_health("      kind: none\n"));
    assert_eq!(c.services[0].health.kind, HealthKind::None);
}

#[test]
fn global_ranges() {
    one(
        &format!("flow_capacity: 1000\n{BASE}"),
        Some(1),
        "flow_capacity",
        "between 1024 and 67108864",
    );
    one(
        &format!("maglev_table_size: 65536\n{BASE}"),
        Some(1),
        "maglev_table_size",
        "must be a prime",
    );
    one(
        &format!("maglev_table_size: 5\n{BASE}"),
        Some(1),
        "maglev_table_size",
        "between 7 and 4000037",
    );
    assert_eq!(
        ok(&format!("maglev_table_size: 4000037\n{BASE}")).maglev_table_size,
        4_000_037
    );
    one(
        &format!("metrics_listen: localhost\n{BASE}"),
        Some(1),
        "metrics_listen",
        "not IP:PORT",
    );
    one(
        &format!("control_socket: \"\"\n{BASE}"),
        Some(1),
        "control_socket",
        "must not be empty",
    );
}

#[test]
fn timeouts_accept_floats() {
    let c = ok(&format!("timeouts:\n  tcp: 0.5\n  udp: 10\n{BASE}"));
    assert_eq!(c.timeouts.tcp_ms, 500);
    assert_eq!(c.timeouts.udp_ms, 10_000);
    assert_eq!(c.timeouts.tcp_closing_ms, 120_000);
    one(
        &format!("timeouts:\n  tcp: 0\n{BASE}"),
        Some(2),
        "timeouts.tcp",
        "> 0",
    );
    one(
        &format!("timeouts:\n  tcp_syn: -3\n{BASE}"),
        Some(2),
        "timeouts.tcp_syn",
        "> 0",
    );
    one(
        &format!("timeouts:\n  udp: 1e10\n{BASE}"),
        Some(2),
        "timeouts.udp",
        "at most",
    );
}

#[test]
fn collects_all_errors_in_line_order() {
    let text = "\
interface: \"\"
services:
  - name: a b
    vip: 2001:db8::1::2
    port: 70000
    real_servers:
      - address: 198.18.0.11
        weight: 70000
      - address: 198.18.0.11
";
    let e = errs(text);
    let got: Vec<(Option<usize>, &str)> = e.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(1), "interface"),
            (Some(3), "services[0].name"),
            (Some(4), "services[0].vip"),
            (Some(5), "services[0].port"),
            (Some(8), "services[0].real_servers[0].weight"),
            (Some(9), "services[0].real_servers[1].address"),
        ]
    );
}

#[test]
fn error_display() {
    let e = ConfigError {
        file: "a.yaml".into(),
        line: Some(9),
        field: "services[0].real_servers[0].weight".into(),
        message: "must be between 0 and 65535, got 70000".into(),
    };
    assert_eq!(
        e.to_string(),
        "a.yaml:9: services[0].real_servers[0].weight: must be between 0 and 65535, got 70000"
    );
    let f = ConfigError {
        file: "a.yaml".into(),
        line: None,
        field: "services".into(),
        message: "at least one service is required".into(),
    };
    assert_eq!(
        f.to_string(),
        "a.yaml: services: at least one service is required"
    );
    let all = ConfigErrors(vec![e.clone(), f.clone()]);
    assert_eq!(all.to_string(), format!("{e}\n{f}"));
    assert_eq!(all.to_string().lines().count(), 2);
    // From the parser, through `from_str`.
    let errs = Config::from_str(&BASE.replace("weight:", "wieght:"), "demo.yaml").unwrap_err();
    assert!(
        errs.to_string()
            .starts_with("demo.yaml:8: services[0].real_servers[0].wieght: unknown field `wieght`"),
        "{errs}"
    );
}

#[test]
fn load_reports_read_errors() {
    let e = Config::load(Path::new("/nonexistent/ulvs.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].file, "/nonexistent/ulvs.yaml");
    assert_eq!(e.0[0].line, None);
    assert!(e.0[0].message.contains("cannot read"), "{e}");
}

#[test]
fn places_of_fields() {
    let text = "\
a: 1
services:
- name: x
  real_servers:
    -
      address: y
    - address: z
      weight: 2
  # comment
  note: |
    key: not a key
- {name: w, real_servers: [{address: v}]}
";
    let p = place::Places::of(text, place::options(MAX_YAML_NODES)).unwrap();
    assert_eq!(p.key_line("a"), Some(1));
    assert_eq!(p.key_line("services[0].name"), Some(3));
    assert_eq!(p.line("services[0].real_servers[0]"), Some(6));
    assert_eq!(p.key_line("services[0].real_servers[0].address"), Some(6));
    assert_eq!(p.key_line("services[0].real_servers[1].address"), Some(7));
    assert_eq!(p.key_line("services[0].real_servers[1].weight"), Some(8));
    assert_eq!(p.key_line("services[0].note"), Some(10));
    assert_eq!(p.key_line("services[1].name"), Some(12));
    assert_eq!(p.key_line("services[1].real_servers[0].address"), Some(12));
    assert!(p.given("services[1].real_servers[0].address"));
    assert!(!p.given("services[1].vip"));
}

#[test]
fn primes() {
    let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
    assert_eq!(small, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65_537));
    assert!(is_prime(4_000_037));
    assert!(!is_prime(65_535));
    assert_eq!((prev_prime(65_536), next_prime(65_536)), (65_521, 65_537));
}

#[test]
fn example_files_are_valid() {
    let demo = ok(include_str!("../../../director/examples/demo.yaml"));
    assert_eq!(demo.services.len(), 2);
    assert_eq!(demo.control_socket, PathBuf::from("/run/ulvs/demo.sock"));
    ok(include_str!("../../../director/examples/full.yaml"));
    ok(include_str!("../../../tests/config_files/good-minimal.yaml"));
    let nat = ok(include_str!("../../../tests/config_files/good-nat.yaml"));
    assert_eq!(nat.services[0].real_servers[0].port, Some(8080));
    assert_eq!(nat.timeouts.udp_ms, 500);
    let dual = ok(include_str!("../../../tests/config_files/good-dual-stack.yaml"));
    assert_eq!(dual.metrics_listen, Some("[::1]:9469".parse().unwrap()));
    assert_eq!(dual.services[3].vip, "2001:db8:100::1".parse::<IpAddr>().unwrap());
    assert_eq!(dual.services[3].mode, Mode::Tun);
}

/// Each `tests/config_files/bad-*.yaml` states on its first line how
/// `--check` reports it, after the file name: `# expect: LINE: FIELD: MESSAGE`
/// (`# expect: FIELD: MESSAGE` when the line is unknown), where MESSAGE may
/// be just the start of the message.
#[test]
fn bad_fixture_files() {
    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!("../../../tests/config_files/", $name)),
            )
        };
    }
    let files = [
        fixture!("bad-unknown-field.yaml"),
        fixture!("bad-mixed-family.yaml"),
        fixture!("bad-ipv6-port.yaml"),
        fixture!("bad-dr-ip-port.yaml"),
        fixture!("bad-duplicate-service.yaml"),
        fixture!("bad-port0-overlap.yaml"),
        fixture!("bad-weight.yaml"),
        fixture!("bad-health-timeout.yaml"),
        fixture!("bad-no-services.yaml"),
        fixture!("bad-protocol.yaml"),
    ];
    for (name, text) in files {
        let first = text.lines().next().unwrap_or_default();
        let Some(spec) = first.strip_prefix("# expect: ") else {
            panic!("{name}: the first line must be `# expect: ...`");
        };
        let want = if spec.starts_with(|c: char| c.is_ascii_digit()) {
            format!("{name}:{spec}")
        } else {
            format!("{name}: {spec}")
        };
        let rendered = Config::from_str(text, name).expect_err(name).to_string();
        assert!(
            rendered.lines().any(|l| l.starts_with(&want)),
            "{name}: want a line starting {want:?}, got:\n{rendered}"
        );
    }
}

/// Each problem an operator can meet reads as a sentence about the file,
/// never as the parser's internals (Rust types, option names, debug output).
#[test]
fn messages_speak_of_the_input() {
    let cases: &[(&str, Option<usize>, &str, &str)] = &[
        (
            &BASE.replace("port: 80", "port: eighty"),
            Some(5),
            "services[0].port",
            "expected a whole number, got `eighty`",
        ),
        (
            &BASE.replace("port: 80", "port: \"\""),
            Some(5),
            "services[0].port",
            "expected a whole number, got `\"\"`",
        ),
        (
            &BASE.replace("port: 80", "port: [80]"),
            Some(5),
            "services[0].port",
            "expected a single value (not a list or mapping) here",
        ),
        (
            &format!("timeouts:\n  tcp: soon\n{BASE}"),
            Some(2),
            "timeouts.tcp",
            "expected a number, got `soon`",
        ),
        (
            &format!("answer_ping: maybe\n{BASE}"),
            Some(1),
            "answer_ping",
            "expected true or false, got `maybe`",
        ),
        (
            "interface: eth0\nservices: web\n",
            Some(2),
            "services",
            "expected a list here, got `web`",
        ),
        (
            &BASE.replace("    port: 80\n", "    port: 80\n    health: tcp\n"),
            Some(6),
            "services[0].health",
            "expected a mapping",
        ),
        (
            &BASE.replace("    port: 80\n", "    port: 80\n    port: 81\n"),
            Some(6),
            "services[0].port",
            "duplicate key, first given at line 5",
        ),
        (
            &format!("{BASE}interface: eth1\n"),
            Some(9),
            "interface",
            "duplicate key, first given at line 1",
        ),
        (
            &BASE.replace("vip: 198.18.100.1", "vip: *addr"),
            Some(4),
            "services[0].vip",
            "alias references unknown anchor",
        ),
        (
            "interface: eth0\nservices:\n\t- name: web\n",
            Some(3),
            "",
            "YAML syntax error: ",
        ),
        (
            &BASE.replace("weight: 1", "weight: 99999999999999999999"),
            Some(8),
            "services[0].real_servers[0].weight",
            "expected a whole number, got `99999999999999999999`",
        ),
    ];
    for (text, line, field, message) in cases {
        let e = one(text, *line, field, message);
        let rendered = e.to_string();
        for internal in [
            "i64", "u16", "u32", "f64", "struct", "Options", "Policy", "{ ", "budget", "scalar",
        ] {
            assert!(!rendered.contains(internal), "{rendered} leaks {internal:?}");
        }
    }
}

/// Services in a row on one VIP, each with a full health section and
/// `servers` real servers.
fn many_services(services: usize, servers: usize) -> String {
    let mut text = String::from("interface: eth0\nmaglev_table_size: 251\nservices:\n");
    for i in 0..services {
        text.push_str(&format!(
            "  - name: s{i}\n    vip: 198.18.100.1\n    port: {}\n    protocol: tcp\n    mode: dr\n    scheduler: maglev\n    health:\n      kind: http\n      path: /\n      expect_status: 200\n      interval_ms: 1000\n      timeout_ms: 500\n      rise: 2\n      fall: 2\n    real_servers:\n",
            i + 1
        ));
        for j in 0..servers {
            text.push_str(&format!(
                "      - address: 198.18.{}.{}\n        weight: 1\n",
                j / 250,
                j % 250 + 1
            ));
        }
    }
    text
}

/// 5,000 fully written services (about 265,000 YAML nodes) load; the parser's
/// default budget (250,000 nodes) refused them.
#[test]
fn large_configs_load() {
    let c = ok(&many_services(5000, 4));
    assert_eq!(c.services.len(), 5000);
    assert_eq!(c.services[4999].real_servers.len(), 4);
    let c = ok(&many_services(1000, 20));
    assert_eq!(
        c.services.iter().map(|s| s.real_servers.len()).sum::<usize>(),
        20_000
    );
}

/// A file past the size limit is refused with a sentence, not the parser's
/// "budget breached: Nodes { nodes: 250001 }" (a smaller limit keeps the
/// test quick; the limit in force is [`MAX_YAML_NODES`]).
#[test]
fn too_large_a_config_is_refused_with_a_sentence() {
    let text = format!("{BASE}cpus: [{}0]\n", "0, ".repeat(1000));
    let e = Config::parse(&text, "t.yaml", 1000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml: the config is too large: more than 1000 YAML nodes (values, lists and mappings)"
    );
    assert!(Config::parse(BASE, "t.yaml", 1000).is_ok());
}

/// The spellings `ulvsadm list` and the messages print are the ones the
/// config accepts, in the same order.
#[test]
fn enum_spellings_agree() {
    use super::field::allowed;
    assert_eq!(
        allowed::<Transport>(),
        [Transport::Tcp, Transport::Udp].map(Transport::as_str)
    );
    assert_eq!(
        allowed::<Mode>(),
        [Mode::Dr, Mode::Nat, Mode::Tun].map(Mode::as_str)
    );
    assert_eq!(
        allowed::<HealthKind>(),
        [HealthKind::Tcp, HealthKind::Http, HealthKind::None].map(HealthKind::as_str)
    );
    assert_eq!(
        allowed::<Scheduler>(),
        [Scheduler::Maglev, Scheduler::MaglevClient].map(Scheduler::as_str)
    );
    assert_eq!(allowed::<OnServerDown>(), ["reschedule", "keep"]);
    assert_eq!(
        allowed::<Announce>(),
        [Announce::Arp, Announce::None, Announce::Route].map(Announce::as_str)
    );
    assert_eq!(
        allowed::<IoBackend>(),
        [IoBackend::Auto, IoBackend::AfXdp, IoBackend::AfPacket].map(IoBackend::as_str)
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Characters that matter to YAML and to the config's values.
    const ALPHABET: &[char] = &[
        ' ', '\n', '\t', ':', '-', '[', ']', '{', '}', ',', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
        '@', '`', '?', '.', '0', '1', '9', 'a', 'z', '~', '\\', '\r', '\u{0}', 'é', '\u{feff}',
    ];

    fn edit(text: &str, edits: &[(usize, u8, usize)]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for &(pos, op, c) in edits {
            let pos = pos % (chars.len() + 1);
            let c = ALPHABET[c % ALPHABET.len()];
            match op % 4 {
                0 => chars.insert(pos, c),
                1 if pos < chars.len() => {
                    chars.remove(pos);
                }
                2 if pos < chars.len() => chars[pos] = c,
                // Cut a whole line: the structure shifts.
                _ => {
                    let start = chars[..pos].iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1);
                    let end = chars[pos..]
                        .iter()
                        .position(|&c| c == '\n')
                        .map_or(chars.len(), |i| pos + i);
                    chars.drain(start..end);
                }
            }
        }
        chars.into_iter().collect()
    }

    // 256 cases each; PROPTEST_CASES=N runs more.
    proptest! {
        #[test]
        fn on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = Config::from_str(&text, "f.yaml");
        }

        #[test]
        fn on_mutated_configs(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<usize>()), 1..8),
        ) {
            let seed = [CONTRACT_EXAMPLE, BASE, include_str!("../../../director/examples/full.yaml")][which];
            let text = edit(seed, &edits);
            if let Err(e) = Config::from_str(&text, "f.yaml") {
                // Every problem is one line.
                for p in &e.0 {
                    prop_assert!(!p.to_string().contains('\n'), "{p}");
                }
            }
        }
    }
}

/// Text quoted from the file keeps each problem on one line (found by the
/// property test below: a quoted interface name spanning two lines).
#[test]
fn quoted_line_breaks_stay_escaped() {
    let text = BASE.replace("interface: eth0", "interface: \"eth0\n\n  more text here\"");
    let e = one(&text, Some(1), "interface", "is longer than 15 characters");
    assert!(e.message.contains("\\n"), "{e}");
    let text = BASE.replace("vip: 198.18.100.1", "vip: \"2001:db8::1\n\n      x\"");
    let e = one(&text, Some(4), "services[0].vip", "is not a valid IPv6 address");
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    // A key with a control character (`\a` in a double-quoted key).
    let text = BASE.replace("weight: 1", "\"wei\\aght\": 1");
    let e = one(
        &text,
        Some(8),
        "services[0].real_servers[0].wei\\u{7}ght",
        "unknown field",
    );
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
}

/// A key file of `n` bytes in a fresh directory (the path is returned).
fn key_file(name: &str, n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ulvs-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, vec![0x5a; n]).unwrap();
    p
}

#[test]
fn sync_section_parses() {
    let key = key_file("good.key", 32);
    let c = ok(&format!(
        "{BASE}sync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848, \"[2001:db8::3]:8848\"]\n  key_file: {}\n  refresh_ms: 2000\n",
        key.display()
    ));
    let s = c.sync.unwrap();
    assert_eq!(s.listen, "198.18.0.2:8848".parse().unwrap());
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.key_file.as_ref().unwrap().bytes, vec![0x5a; 32]);
    assert!(!format!("{s:?}").contains("5a"), "Debug must not show the key");
    assert_eq!(s.refresh_ms, Some(2000));
    assert_eq!(s.refresh_interval_ms(&c.timeouts), 2000);
    // The contract's example, without the key file.
    let c = ok(&format!(
        "{BASE}sync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n"
    ));
    let s = c.sync.unwrap();
    assert_eq!(s.key_file, None);
    assert_eq!(s.refresh_interval_ms(&c.timeouts), DEFAULT_SYNC_REFRESH_MS);
    assert_eq!(ok(BASE).sync, None);
}

#[test]
fn sync_refresh_follows_short_timeouts() {
    let c = ok(&format!(
        "{BASE}timeouts:\n  tcp_fin: 3\nsync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n"
    ));
    assert_eq!(c.sync.unwrap().refresh_interval_ms(&c.timeouts), 1000);
    one(
        &format!("{BASE}timeouts:\n  tcp_fin: 3\nsync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n  refresh_ms: 2000\n"),
        Some(14),
        "sync.refresh_ms",
        "more than half the shortest idle timeout (3000 ms)",
    );
    one(
        &format!("{BASE}sync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n  refresh_ms: 5\n"),
        Some(12),
        "sync.refresh_ms",
        "between 100 and 3600000",
    );
}

#[test]
fn sync_errors_name_line_and_field() {
    let s = |body: &str| format!("{BASE}sync:\n{body}");
    // BASE has 8 lines: `sync:` is line 9.
    one(
        &s("  peers: [198.18.0.3:8848]\n"),
        Some(9),
        "sync.listen",
        "required",
    );
    one(
        &s("  listen: 198.18.0.2:8848\n"),
        Some(9),
        "sync.peers",
        "at least one peer",
    );
    one(
        &s("  listen: 198.18.0.2:8848\n  peers: []\n"),
        Some(11),
        "sync.peers",
        "at least one peer",
    );
    one(
        &s("  listen: 198.18.0.2\n  peers: [198.18.0.3:8848]\n"),
        Some(10),
        "sync.listen",
        "is not IP:PORT",
    );
    one(
        &s("  listen: 0.0.0.0:8848\n  peers: [198.18.0.3:8848]\n"),
        Some(10),
        "sync.listen",
        "not the address of one director",
    );
    one(
        &s("  listen: 198.18.0.2:0\n  peers: [198.18.0.3:8848]\n"),
        Some(10),
        "sync.listen",
        "port 0",
    );
    one(
        &s("  listen: 198.18.0.2:8848\n  peers:\n    - 198.18.0.3:8848\n    - nonsense\n"),
        Some(13),
        "sync.peers[1]",
        "\"nonsense\" is not IP:PORT",
    );
    one(
        &s("  listen: 198.18.0.2:8848\n  peers:\n    - 198.18.0.3:8848\n    - 198.18.0.3:8848\n"),
        Some(13),
        "sync.peers[1]",
        "listed twice (first at line 12)",
    );
    one(
        &s("  listen: 198.18.0.2:8848\n  peers:\n    - 198.18.0.3:8848\n    - 198.18.0.2:8848\n"),
        Some(13),
        "sync.peers[1]",
        "this director's own sync.listen",
    );
    // Every item wrong: said once per item, not again as "no peers".
    one(
        &s("  listen: 198.18.0.2:8848\n  peers: [x]\n"),
        Some(11),
        "sync.peers[0]",
        "is not IP:PORT",
    );
    one(
        &s("  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n  bogus: 1\n"),
        Some(12),
        "sync.bogus",
        "unknown field",
    );
}

#[test]
fn sync_key_file_must_be_readable_and_long_enough() {
    let s = |path: &str| {
        format!("{BASE}sync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\n  key_file: {path}\n")
    };
    one(
        &s("/nonexistent/ulvs/sync.key"),
        Some(12),
        "sync.key_file",
        "cannot read /nonexistent/ulvs/sync.key",
    );
    let short = key_file("short.key", 15);
    let e = one(
        &s(&short.display().to_string()),
        Some(12),
        "sync.key_file",
        "holds 15 bytes",
    );
    assert!(
        e.message.contains("at least 16") && e.message.contains("head -c 32 /dev/urandom"),
        "{e}"
    );
    let exact = key_file("exact.key", 16);
    assert_eq!(
        ok(&s(&exact.display().to_string()))
            .sync
            .unwrap()
            .key_file
            .unwrap()
            .bytes
            .len(),
        16
    );
}

fn v6(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An IPv6 service: VIP on line 4, servers ::11, ::12, ::13 on lines 7-9.
fn base6() -> String {
    "interface: eth0\nservices:\n  - name: web\n    vip: 2001:db8:100::1\n    port: 80\n    real_servers:\n      \
     - address: 2001:db8::11\n      - address: 2001:db8::12\n      - address: 2001:db8::13\n"
        .to_string()
}

/// [`base6`] in IPv4: VIP 198.18.100.1, servers 198.18.0.11-13.
fn base4() -> String {
    base6()
        .replace("vip: 2001:db8:100::1", "vip: 198.18.100.1")
        .replace("address: 2001:db8::1", "address: 198.18.0.1")
}

#[test]
fn ipv6_services_in_every_form() {
    let c = ok(&base6());
    let s = &c.services[0];
    assert_eq!(s.vip, v6("2001:db8:100::1"));
    assert_eq!(s.vip_port(), "[2001:db8:100::1]:80");
    let addrs: Vec<IpAddr> = s.real_servers.iter().map(|r| r.address).collect();
    assert_eq!(
        addrs,
        [v6("2001:db8::11"), v6("2001:db8::12"), v6("2001:db8::13")]
    );
    assert_eq!(s.real_servers[0].port, None);
    // Brackets without a port; upper case and a zero run written out.
    let c = ok(&base6()
        .replace("address: 2001:db8::11", "address: \"[2001:db8::11]\"")
        .replace("address: 2001:db8::12", "address: 2001:DB8:0:0::12"));
    assert_eq!(c.services[0].real_servers[0].address, v6("2001:db8::11"));
    assert_eq!(c.services[0].real_servers[1].address, v6("2001:db8::12"));
    // NAT with a port: [IPv6]:PORT.
    let nat = base6()
        .replace("    port: 80\n", "    port: 80\n    mode: nat\n")
        .replace("address: 2001:db8::11", "address: \"[2001:db8::11]:8080\"");
    let c = ok(&nat);
    let r = &c.services[0].real_servers[0];
    assert_eq!((r.address, r.port), (v6("2001:db8::11"), Some(8080)));
    assert_eq!(r.endpoint(), "[2001:db8::11]:8080");
    assert_eq!(c.services[0].real_servers[1].endpoint(), "2001:db8::12");
    // DR and TUN take no port, whatever the family.
    one(
        &base6().replace("address: 2001:db8::11", "address: \"[2001:db8::11]:8080\""),
        Some(7),
        "services[0].real_servers[0].address",
        "only allowed in nat mode; dr forwards to the service's port, write just 2001:db8::11",
    );
    one(
        &nat.replace("[2001:db8::11]:8080", "[2001:db8::11]:0"),
        Some(8),
        "services[0].real_servers[0].address",
        "port 0 is not allowed",
    );
    one(
        &nat.replace("[2001:db8::11]:8080", "[2001:db8::11]:99999"),
        Some(8),
        "services[0].real_servers[0].address",
        "\"99999\" is not a port number",
    );
}

#[test]
fn bad_ipv6_addresses_name_the_field() {
    let vip = |v: &str, needle: &str| {
        one(
            &base6().replace("vip: 2001:db8:100::1", &format!("vip: \"{v}\"")),
            Some(4),
            "services[0].vip",
            needle,
        );
    };
    vip("2001:db8:100::1::2", "is not a valid IPv6 address");
    vip("[2001:db8:100::1]", "without brackets");
    vip("[2001:db8:100::1]:80", "without a port (the port goes in `port`)");
    vip("::", "not a usable address");
    vip("::1", "not a usable address");
    vip("ff02::1", "not a usable address");
    vip("fe80::1", "link-local");
    vip(
        "::ffff:198.18.100.1",
        "IPv4-mapped IPv6 address: write the IPv4 address 198.18.100.1",
    );
    let server = |a: &str, needle: &str| {
        one(
            &base6().replace("address: 2001:db8::11", &format!("address: \"{a}\"")),
            Some(7),
            "services[0].real_servers[0].address",
            needle,
        );
    };
    server(
        "2001:db8::11::1",
        "is not a valid IPv6 address (with a port, write [IPv6]:PORT)",
    );
    server("[2001:db8::11", "has no closing ']'");
    server("[2001:db8::11]x", "is not [IPv6]:PORT");
    server("[198.18.0.11]:80", "\"198.18.0.11\" is not a valid IPv6 address");
    server("[zz::1]:80", "\"zz::1\" is not a valid IPv6 address");
    server("fe80::11", "link-local");
    server("ff05::2", "not a usable address");
    server("::ffff:198.18.0.11", "IPv4-mapped");
}

#[test]
fn a_service_keeps_to_its_vips_family() {
    // An IPv4 server in an IPv6 service.
    let e = one(
        &base6().replace("address: 2001:db8::12", "address: 198.18.0.12"),
        Some(8),
        "services[0].real_servers[1].address",
        "198.18.0.12 is IPv4 but the service's vip 2001:db8:100::1 is IPv6",
    );
    assert_eq!(
        e.to_string(),
        "t.yaml:8: services[0].real_servers[1].address: 198.18.0.12 is IPv4 but the service's vip \
         2001:db8:100::1 is IPv6: a service's real servers are of its VIP's family (make a separate IPv4 service)"
    );
    // An IPv6 server in an IPv4 service, with and without a port.
    one(
        &base4().replace("address: 198.18.0.13", "address: 2001:db8::13"),
        Some(9),
        "services[0].real_servers[2].address",
        "2001:db8::13 is IPv6 but the service's vip 198.18.100.1 is IPv4",
    );
    let nat = base4().replace("    port: 80\n", "    port: 80\n    mode: nat\n");
    one(
        &nat.replace("address: 198.18.0.11", "address: \"[2001:db8::11]:8080\""),
        Some(8),
        "services[0].real_servers[0].address",
        "is IPv6 but the service's vip 198.18.100.1 is IPv4",
    );
    // Each wrong server is reported; a bad VIP is reported once, not as a
    // family mismatch of every server.
    let e = errs(
        &base6()
            .replace("address: 2001:db8::11", "address: 198.18.0.11")
            .replace("address: 2001:db8::13", "address: 198.18.0.13"),
    );
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "services[0].real_servers[0].address",
            "services[0].real_servers[2].address"
        ]
    );
    one(
        &base6().replace("vip: 2001:db8:100::1", "vip: 2001:db8:100::1::5"),
        Some(4),
        "services[0].vip",
        "not a valid IPv6 address",
    );
    // `--check` runs the same validator: the file form says the same.
    let e = Config::from_str(
        &base6().replace("address: 2001:db8::12", "address: 198.18.0.12"),
        "director.yaml",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("director.yaml:8: services[0].real_servers[1].address: "),
        "{e}"
    );
}

#[test]
fn ipv6_duplicates_and_overlaps() {
    // The same server in another spelling.
    one(
        &base6().replace("address: 2001:db8::12", "address: \"[2001:0db8::11]\""),
        Some(8),
        "services[0].real_servers[1].address",
        "duplicate real server 2001:db8::11",
    );
    // NAT: [IP]:PORT with the service's port is IP.
    let nat = base6().replace("    port: 80\n", "    port: 80\n    mode: nat\n");
    one(
        &nat.replace("address: 2001:db8::12", "address: \"[2001:db8::11]:80\""),
        Some(9),
        "services[0].real_servers[1].address",
        "duplicate real server [2001:db8::11]:80",
    );
    ok(&nat.replace("address: 2001:db8::12", "address: \"[2001:db8::11]:8080\""));
    // One VIP and port in both families are two services.
    let dual = format!(
        "{BASE}  - name: web6\n    vip: 2001:db8:100::1\n    port: 80\n    real_servers:\n      - address: 2001:db8::11\n"
    );
    let c = ok(&dual);
    assert_eq!(c.services.len(), 2);
    // The same IPv6 VIP and port twice overlap, named in the [IPv6]:PORT form.
    let twice = format!(
        "{}  - name: web2\n    vip: 2001:db8:100::1\n    port: 80\n",
        base6()
    );
    one(
        &twice,
        Some(10),
        "services[1]",
        "[2001:db8:100::1]:80/tcp overlaps service \"web\" ([2001:db8:100::1]:80/tcp, line 3)",
    );
    let all = format!(
        "{}  - name: all\n    vip: 2001:db8:100::1\n    port: 0\n",
        base6()
    );
    one(&all, Some(10), "services[1]", "port 0 takes every port");
    // Equal addresses across families are different servers.
    let mapped = dual.replace("address: 2001:db8::11\n", "address: 2001:db8::c612:b\n");
    ok(&mapped);
}

#[test]
fn metrics_listen_takes_ipv6() {
    let c = ok(&format!("metrics_listen: \"[::1]:9100\"\n{BASE}"));
    assert_eq!(c.metrics_listen, Some("[::1]:9100".parse().unwrap()));
    let c = ok(&format!("metrics_listen: \"[2001:db8::2]:9469\"\n{BASE}"));
    assert_eq!(c.metrics_listen.map(|a| a.is_ipv6()), Some(true));
    one(
        &format!("metrics_listen: \"::1:9100\"\n{BASE}"),
        Some(1),
        "metrics_listen",
        "is not IP:PORT or [IPv6]:PORT",
    );
    one(
        &format!("metrics_listen: \"[::1]:0\"\n{BASE}"),
        Some(1),
        "metrics_listen",
        "port 0 is not allowed",
    );
}

#[test]
fn servers_are_named_in_any_spelling() {
    let nat = base6()
        .replace("    port: 80\n", "    port: 80\n    mode: nat\n")
        .replace("address: 2001:db8::11", "address: \"[2001:db8::11]:8080\"");
    let c = ok(&nat);
    let (r0, r1) = (&c.services[0].real_servers[0], &c.services[0].real_servers[1]);
    for name in [
        "[2001:db8::11]:8080",
        "2001:db8::11",
        "[2001:db8::11]",
        "2001:DB8:0::11",
        " [2001:db8::11]:8080 ",
    ] {
        assert!(r0.is_named(name), "{name}");
    }
    for name in [
        "[2001:db8::11]:8081",
        "2001:db8::12",
        "2001:db8::11:8080",
        "[2001:db8::11",
        "web",
    ] {
        assert!(!r0.is_named(name), "{name}");
    }
    assert!(r1.is_named("2001:db8::12") && r1.is_named("[2001:db8::12]"));
    assert!(
        !r1.is_named("[2001:db8::12]:80"),
        "a server without a port is named without one"
    );
    let c = ok(BASE);
    let r = &c.services[0].real_servers[0];
    assert!(r.is_named("198.18.0.11") && !r.is_named("198.18.0.11:80") && !r.is_named("198.18.0.1"));
}

/// The fields noted while deserializing are those the loose reading finds,
/// at the same lines, in the shapes YAML allows: null values, flow style,
/// aliases, an empty `health`, an explicit `kind: none`.
#[test]
fn written_fields_match_places() {
    let texts = [
        BASE,
        CONTRACT_EXAMPLE,
        "interface:\nroute_table: 7\nsync:\n  listen: 198.18.0.2:8848\n  peers: [198.18.0.3:8848]\nservices:\n  - name: a\n    vip: ~\n    port:\n    health: {}\n    real_servers:\n      - address:\n      - weight: 2\n      - address: 198.18.0.11\n",
        "interface: eth0\nservices: [{name: a, vip: 198.18.100.1, port: 80, health: {kind: none, timeout_ms: 5}, real_servers: [{address: 198.18.0.11}, {address: 198.18.0.12}]}, {name: b}]\n",
        "interface: eth0\nservices:\n  - &s\n    name: a\n    vip: 198.18.100.1\n    port: 80\n    real_servers:\n      - &r {address: 198.18.0.11}\n      - *r\n  - *s\n",
        "interface: eth0\nservices:\n  - name: a\n    vip: 198.18.100.1\n    port: 80\n    health:\n      kind: http\n      timeout_ms: 100\n    real_servers: []\n  - name: b\n    vip: 198.18.100.2\n    port: 0\n",
    ];
    for text in texts {
        written_agrees(text);
    }
    // and the comparison can tell: a line that differs is seen
    let options = || place::options(MAX_YAML_NODES);
    let (_, _, mut written) =
        field::collecting(|| serde_saphyr::from_str_with_options::<Config>(BASE, options()));
    let places = place::Places::of(BASE, options()).unwrap().written();
    assert_eq!(written.services[0].addresses, vec![Some(Some(7))]);
    written.services[0].name = Some(Some(4));
    assert_ne!(written, places);
}
