//! `ulvsadm import-keepalived`: the config it prints passes the director's
//! validator, says what it was given, and every thing it could not translate
//! is a `FILE:LINE: what` line on stderr (exit 0 / 3 / 1).
//!
//! Besides our own fixtures (tests/fixtures/keepalived/), it reads the
//! samples the Debian keepalived package ships in
//! /usr/share/doc/keepalived/samples (GPL-2.0+, so read where they are
//! installed rather than copied here; `.ci/run` installs keepalived;
//! `KEEPALIVED_SAMPLES` names another directory).

use std::path::{Path, PathBuf};
use std::process::Command;

use ulvs::control::config::{Config, HealthKind, Mode, OnServerDown, Scheduler, Transport};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn import(file: &Path, extra: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_ulvsadm"))
        .arg("import-keepalived")
        .arg(file)
        .args(extra)
        .output()
        .expect("ulvsadm runs");
    Run {
        code: o.status.code().expect("exit code"),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keepalived")
        .join(name)
}

fn valid(yaml: &str) -> Config {
    Config::from_str(yaml, "imported.yaml")
        .unwrap_or_else(|e| panic!("the import does not pass --check:\n{e}\n{yaml}"))
}

#[test]
fn a_translatable_file_is_translated_whole() {
    let r = import(&fixture("full.conf"), &[]);
    assert_eq!(r.stderr, "", "no notes expected");
    assert_eq!(r.code, 0);
    let c = valid(&r.stdout);
    assert_eq!(c.interface, "ens3", "from the vrrp_instance holding the VIPs");
    assert_eq!(
        c.on_server_down,
        OnServerDown::Keep,
        "inhibit_on_failure everywhere"
    );
    assert_eq!(c.services.len(), 3, "the included file's service too");

    let web = &c.services[0];
    assert_eq!((web.vip.to_string(), web.port), ("198.18.100.1".into(), 80));
    assert_eq!(
        (web.mode, web.protocol, web.scheduler),
        (Mode::Dr, Transport::Tcp, Scheduler::Maglev)
    );
    let h = &web.health;
    assert_eq!(
        (h.kind, h.path.as_str(), h.expect_status),
        (HealthKind::Http, "/healthz", 204)
    );
    // delay_loop 2, connect_timeout 1 and retry 2 on the virtual server.
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.rise, h.fall, h.port),
        (2000, 1000, 1, 3, None)
    );
    let servers: Vec<(String, u32)> = web
        .real_servers
        .iter()
        .map(|r| (r.endpoint(), r.weight))
        .collect();
    assert_eq!(servers, [("198.18.0.11".into(), 3), ("198.18.0.12".into(), 0)]);

    let dns = &c.services[1];
    assert_eq!(
        (dns.mode, dns.protocol, dns.scheduler),
        (Mode::Tun, Transport::Udp, Scheduler::MaglevClient)
    );
    let h = &dns.health;
    // connect_timeout 10 > delay_loop 5: capped; nb_get_retry 0: one failure.
    assert_eq!(
        (h.kind, h.interval_ms, h.timeout_ms, h.fall, h.port),
        (HealthKind::Tcp, 5000, 5000, 1, Some(5353))
    );

    let nat = &c.services[2];
    assert_eq!(
        (nat.mode, nat.scheduler),
        (Mode::Nat, Scheduler::MaglevClient),
        "persistence_timeout"
    );
    let servers: Vec<String> = nat.real_servers.iter().map(|r| r.endpoint()).collect();
    assert_eq!(servers, ["198.18.0.31:8443", "198.18.0.32"]);
    assert_eq!(
        (nat.health.interval_ms, nat.health.port),
        (60_000, None),
        "keepalived's default delay_loop"
    );
}

/// `want` with each `*` standing for any text (what depends on the machine).
fn glob_match(want: &str, got: &str) -> bool {
    let parts: Vec<&str> = want.split('*').collect();
    let Some(rest) = got.strip_prefix(parts[0]) else {
        return false;
    };
    let mut rest = rest;
    for part in &parts[1..] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.is_empty() || want.ends_with('*')
}

#[test]
fn each_untranslated_thing_is_a_file_line_note() {
    let f = fixture("partial.conf");
    let r = import(&f, &[]);
    assert_eq!(r.code, 3);
    let p = f.display().to_string();
    let got: Vec<&str> = r.stderr.lines().collect();
    let want: Vec<String> = [
        "7: persistence_granularity 255.255.255.0: not translated (ulvs client affinity is per client address (/32))",
        "9: sorry_server 198.18.0.99 80: not translated (ulvs has no sorry server; a service with no server up drops and counts)",
        "11: inhibit_on_failure: not translated (on_server_down is director-wide, and not every real server has it)",
        "17: digest 640205b7b0fc66c1ea91c463fac6334d: not translated (ulvs checks the status, not the body)",
        "19: url {...}: not translated (ulvs checks one path; the first url is used)",
        "27: TCP_CHECK of real_server 198.18.0.12: not translated (differs from the service's first check; ulvs checks all servers of a service alike)",
        "30: MISC_CHECK {...}: not translated (ulvs checks by TCP connect or HTTP GET only)",
        "36: virtual_server fwmark 7 {...}: not translated (fwmark services: ulvs matches VIP, protocol and port)",
        "48: virtual_server 198.18.100.9 80: not translated (protocol SCTP: ulvs balances TCP and UDP)",
        "51: virtual_server 198.18.100.1 80: not translated (overlaps the one at line 2)",
        // The missing include names the file it looked for (the path as joined).
        "55: include *missing.conf: cannot read: *",
        "57: virtual_server 127.0.0.1 80: not translated (not a usable address (unspecified, broadcast, multicast or loopback))",
        "63: real_server 198.18.0.41 8080: port 8080 not translated (a port-0 NAT service keeps each port)",
    ]
    .iter()
    .map(|l| format!("{p}:{l}"))
    .collect();
    assert_eq!(got.len(), want.len(), "{}", r.stderr);
    for (g, w) in got.iter().zip(&want) {
        assert!(glob_match(w, g), "got {g:?}, want {w:?}");
    }
    let c = valid(&r.stdout);
    assert_eq!(c.services.len(), 3, "the IPv6 one at line 41 too");
    assert_eq!(c.services[1].vip.to_string(), "2001:db8::1");
    let s = &c.services[0];
    assert_eq!(
        (s.scheduler, s.health.kind, s.health.path.as_str()),
        (Scheduler::MaglevClient, HealthKind::Http, "/a")
    );
    // A port-0 NAT service checks the servers on the port keepalived did.
    let all = &c.services[2];
    assert_eq!((all.port, all.health.port), (0, Some(8080)));
    assert_eq!(all.real_servers[0].endpoint(), "198.18.0.41");
    assert_eq!(c.interface, "eth0", "the documented default");
}

/// IPv6 virtual servers are translated like IPv4 ones (the interface from
/// the vrrp_instance holding the IPv6 VIP, `[IPv6]:PORT` for a NAT port);
/// a server of the other family than its VIP is a note.
#[test]
fn ipv6_virtual_servers_are_translated() {
    let f = fixture("ipv6.conf");
    let r = import(&f, &[]);
    let p = f.display().to_string();
    assert_eq!(
        r.stderr,
        format!("{p}:34: real_server 198.18.0.21 5353: not translated (an IPv4 server behind an IPv6 VIP: a ulvs service is one family)\n")
    );
    assert_eq!(r.code, 3);
    let c = valid(&r.stdout);
    assert_eq!(c.interface, "ens4", "from the vrrp_instance holding the IPv6 VIP");
    assert_eq!(c.services.len(), 2);
    let web = &c.services[0];
    assert_eq!((web.vip.to_string(), web.port), ("2001:db8:100::1".into(), 80));
    assert_eq!(
        (web.mode, web.protocol, web.scheduler),
        (Mode::Dr, Transport::Tcp, Scheduler::Maglev)
    );
    assert_eq!(
        (web.health.kind, web.health.interval_ms, web.health.timeout_ms),
        (HealthKind::Tcp, 3000, 1000)
    );
    let servers: Vec<(String, u32)> = web
        .real_servers
        .iter()
        .map(|r| (r.endpoint(), r.weight))
        .collect();
    assert_eq!(
        servers,
        [
            ("2001:db8:2::11".to_string(), 2),
            ("2001:db8:2::12".to_string(), 1)
        ]
    );
    let dns = &c.services[1];
    assert_eq!((dns.vip.to_string(), dns.port), ("2001:db8:100::2".into(), 53));
    assert_eq!(
        (dns.mode, dns.protocol, dns.scheduler),
        (Mode::Nat, Transport::Udp, Scheduler::MaglevClient)
    );
    assert_eq!(dns.real_servers.len(), 1);
    assert_eq!(dns.real_servers[0].endpoint(), "[2001:db8:2::21]:5353");
    assert!(r.stdout.contains("\"[2001:db8:2::21]:5353\""), "{}", r.stdout);
}

#[test]
fn interface_option_and_unreadable_file() {
    let r = import(&fixture("full.conf"), &["--interface", "bond0"]);
    assert_eq!(r.code, 0);
    assert_eq!(valid(&r.stdout).interface, "bond0");
    let r = import(&fixture("no-such.conf"), &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("no-such.conf: cannot read"), "{}", r.stderr);
}

/// The Debian samples with virtual servers: exit code, services written,
/// and the lines of the notes.
const SAMPLES: &[(&str, i32, usize, &[usize])] = &[
    ("keepalived.conf.HTTP_GET.port", 3, 1, &[22]),
    ("keepalived.conf.IPv6", 3, 1, &[24]),
    ("keepalived.conf.PING_CHECK", 3, 1, &[23]),
    ("keepalived.conf.SMTP_CHECK", 3, 1, &[39, 58, 89]),
    ("keepalived.conf.SSL_GET", 3, 2, &[39, 67, 69]),
    ("keepalived.conf.UDP_CHECK", 3, 1, &[23]),
    ("keepalived.conf.fwmark", 3, 0, &[1, 7]),
    ("keepalived.conf.inhibit", 3, 1, &[26]),
    ("keepalived.conf.misc_check", 3, 1, &[23]),
    ("keepalived.conf.misc_check_arg", 3, 1, &[22]),
    ("keepalived.conf.quorum", 3, 1, &[30, 31, 32, 33, 34]),
    ("keepalived.conf.sample", 3, 1, &[33, 40]),
    ("keepalived.conf.status_code", 3, 1, &[23]),
    ("keepalived.conf.virtual_server_group", 3, 0, &[1, 22]),
    ("keepalived.conf.virtualhost", 3, 1, &[19, 24]),
    ("keepalived.conf.vrrp.lvs_syncd", 0, 1, &[]),
];

#[test]
fn debian_samples() {
    let dir = std::env::var_os("KEEPALIVED_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/doc/keepalived/samples"));
    assert!(
        dir.join("keepalived.conf.sample").exists(),
        "{}: no keepalived samples; install the Debian package keepalived (.ci/run does) or set KEEPALIVED_SAMPLES",
        dir.display()
    );
    for &(name, code, services, lines) in SAMPLES {
        let f = dir.join(name);
        let r = import(&f, &[]);
        let p = f.display().to_string();
        assert_eq!(r.code, code, "{name}: {}", r.stderr);
        let got: Vec<usize> = r
            .stderr
            .lines()
            .map(|l| {
                let rest = l
                    .strip_prefix(&format!("{p}:"))
                    .unwrap_or_else(|| panic!("{name}: {l}"));
                rest.split(':').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(got, lines, "{name}:\n{}", r.stderr);
        if services > 0 {
            assert_eq!(valid(&r.stdout).services.len(), services, "{name}");
        }
        // Every virtual_server statement is a service (its comment names
        // the line) or a note.
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("virtual_server ") {
                let at = format!("{p}:{}", i + 1);
                assert!(
                    r.stdout.contains(&format!("({at})")) || r.stderr.contains(&format!("{at}:")),
                    "{at}: neither translated nor noted"
                );
            }
        }
    }
}
