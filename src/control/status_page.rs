//! The HTML status page served at `GET /` of `metrics_listen` (slow path), in
//! the spirit of HAProxy's stats page: the director's role and health at the
//! top (announce, flow sync, config), then one table per service with a row per real server (state, health
//! and its reason, weight, flows, smoothed rates), then drops by reason and
//! the listeners. It is made from the same `Stats` + `List` snapshot as
//! `/metrics`, so the two never disagree about what they saw.
//!
//! The page is one self-contained document: inline CSS, no script, no
//! external asset (the response's Content-Security-Policy forbids them), and
//! it reloads itself with `<meta http-equiv="refresh">`. Service names,
//! addresses and health reasons come from the config and the network, so
//! every string is HTML-escaped and cut to [`MAX_TEXT`] characters; the page
//! lists at most [`MAX_SERVER_ROWS`] servers, so its size is bounded whatever
//! the config holds.

use std::fmt::Write as _;

use super::metrics::Extra;
use super::rates::Rates;
use super::snapshot::{List, ServerSnap, ServiceSnap, Stats, SyncSnap};

/// Seconds between the page's own reloads.
pub const REFRESH_SECONDS: u32 = 5;
/// Most real-server rows on one page; the rest are counted in a note.
pub const MAX_SERVER_ROWS: usize = 1000;
/// Most characters of one piece of operator- or network-supplied text.
pub const MAX_TEXT: usize = 160;

const STYLE: &str = "\
body{font:13px/1.35 system-ui,sans-serif;margin:1em;color:#222;background:#fafafa}\
h1{font-size:20px;margin:0 0 .2em}h2{font-size:16px;margin:1.2em 0 .4em}\
p.meta{color:#555;margin:0 0 .8em}\
table{border-collapse:collapse;margin:0 0 1em;background:#fff}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}\
th{background:#e8e8f0}td.l,th.l{text-align:left}\
caption{text-align:left;font-weight:600;padding:4px 0}\
caption span{font-weight:400;color:#555}\
tr.up td.state{background:#b8f0b8}tr.down td.state{background:#f4a8a8}\
tr.draining td.state{background:#f8dc8c}tr.other td.state{background:#ddd}\
td.reason{text-align:left;white-space:normal;max-width:32em;color:#733}\
table.summary td{white-space:normal;max-width:60em}\
tfoot th{background:#f0f0f0}\
tr.zero td{color:#777}.on{color:#070;font-weight:600}.off{color:#a00;font-weight:600}";

/// `s` HTML-escaped (text and attribute values alike) and cut to
/// [`MAX_TEXT`] characters.
fn esc(out: &mut String, s: &str) {
    let mut chars = s.chars();
    for c in chars.by_ref().take(MAX_TEXT) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (a newline in a name, a NUL from a
            // health reason) would be invisible or break the layout.
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
}

/// A count or rate with an SI prefix: `950`, `12.5k`, `3.2M`.
fn si(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        return "?".into();
    }
    const PREFIX: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = v;
    let mut i = 0;
    while v >= 999.95 && i + 1 < PREFIX.len() {
        v /= 1000.0;
        i += 1;
    }
    // Below 1000 a whole number, or one of three digits, needs no decimal.
    if i == 0 && (v.fract() == 0.0 || v >= 100.0) {
        format!("{v:.0}")
    } else {
        format!("{v:.1}{}", PREFIX[i])
    }
}

/// A duration as its two largest units: `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The CSS class of a server state (the state itself when it is known).
fn state_class(state: &str) -> &'static str {
    match state {
        "up" => "up",
        "down" => "down",
        "draining" => "draining",
        _ => "other",
    }
}

/// The numeric cells both a server row and a service's total have.
fn traffic_cells(out: &mut String, active: u64, inactive: u64, conns: u64, r: &Rates) {
    for v in [active, inactive, conns] {
        let _ = write!(out, "<td>{v}</td>");
    }
    for v in [
        r.conns_per_s,
        r.in_packets_per_s,
        r.in_bytes_per_s * 8.0,
        r.out_packets_per_s,
        r.out_bytes_per_s * 8.0,
    ] {
        let _ = write!(out, "<td>{}</td>", si(v));
    }
}

const SERVER_HEAD: &str = "<thead><tr><th class=\"l\">Server</th><th>State</th><th>Health</th>\
<th>Weight</th><th>Active flows</th><th>Inactive</th><th>Flows total</th><th>New flows/s</th>\
<th>In pps</th><th>In bps</th><th>Out pps</th><th>Out bps</th><th class=\"l\">Reason</th></tr></thead>";

fn server_row(out: &mut String, r: &ServerSnap) {
    let class = state_class(&r.state);
    out.push_str("<tr class=\"server ");
    out.push_str(class);
    out.push_str("\" data-server=\"");
    esc(out, &r.address);
    out.push_str("\" data-state=\"");
    esc(out, &r.state);
    out.push_str("\"><td class=\"l\">");
    esc(out, &r.address);
    out.push_str("</td><td class=\"state\">");
    esc(out, &r.state);
    out.push_str("</td><td>");
    esc(out, &r.health);
    let _ = write!(out, "</td><td>{}</td>", r.weight);
    traffic_cells(out, r.active_flows, r.inactive_flows, r.conns, &r.rates);
    out.push_str("<td class=\"reason\">");
    let reasons = [r.health_reason.as_deref(), r.note.as_deref()];
    for (i, why) in reasons.into_iter().flatten().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        esc(out, why);
    }
    out.push_str("</td></tr>\n");
}

/// One service's table with at most `budget` server rows; returns how many
/// rows it used.
fn service_table(out: &mut String, n: usize, s: &ServiceSnap, budget: usize) -> usize {
    let _ = write!(out, "<table class=\"service\" id=\"service-{n}\" data-service=\"");
    esc(out, &s.name);
    out.push_str("\"><caption>");
    esc(out, &s.name);
    out.push_str(" <span>");
    // An IPv6 VIP is bracketed before its port, as in a URL.
    if s.vip.contains(':') {
        out.push('[');
        esc(out, &s.vip);
        out.push(']');
    } else {
        esc(out, &s.vip);
    }
    let _ = write!(out, ":{}/", s.port);
    esc(out, &s.protocol);
    out.push_str(" · ");
    esc(out, &s.mode);
    out.push_str(" · ");
    esc(out, &s.scheduler);
    out.push_str("</span></caption>\n");
    out.push_str(SERVER_HEAD);
    out.push_str("\n<tbody>\n");
    let shown = s.real_servers.len().min(budget);
    for r in &s.real_servers[..shown] {
        server_row(out, r);
    }
    out.push_str("</tbody>\n<tfoot><tr class=\"total\"><th class=\"l\">Total</th>");
    let up = s.real_servers.iter().filter(|r| r.state == "up").count();
    let _ = write!(out, "<th colspan=\"3\">{up} of {} up</th>", s.real_servers.len());
    traffic_cells(out, s.active_flows, s.inactive_flows, s.conns, &s.rates);
    out.push_str("<td class=\"reason\">");
    if shown < s.real_servers.len() {
        let _ = write!(
            out,
            "{} more servers not shown (ulvsadm list)",
            s.real_servers.len() - shown
        );
    }
    out.push_str("</td></tr></tfoot>\n</table>\n");
    shown
}

/// The summary's flow-sync cell (markup, escaped).
fn sync_summary(sync: Option<&SyncSnap>) -> String {
    let Some(s) = sync else {
        return "<span id=\"sync\">off</span> (no <code>sync</code> section)".into();
    };
    let mut out = String::from("<span class=\"on\" id=\"sync\">on</span> ");
    esc(&mut out, &s.listen);
    let rejected: u64 = s.rejected.values().sum();
    let _ = write!(
        out,
        " ({}), refresh every {} ms; sent {} flows in {} datagrams ({} send errors), \
         received {} flows in {} datagrams, {rejected} rejected",
        if s.authenticated { "HMAC-SHA256" } else { "no key" },
        s.refresh_ms,
        s.flows_sent,
        s.datagrams_sent,
        s.send_errors,
        s.flows_received,
        s.datagrams_received,
    );
    let moved: Vec<_> = s.rejected.iter().filter(|(_, n)| **n > 0).collect();
    for (i, (reason, n)) in moved.iter().enumerate() {
        out.push_str(if i == 0 { " (" } else { ", " });
        esc(&mut out, reason);
        let _ = write!(out, " {n}");
    }
    if !moved.is_empty() {
        out.push(')');
    }
    out
}

/// The sync peers: the bulk transfer asked of each and when it was last heard.
fn sync_peers(o: &mut String, s: &SyncSnap) {
    o.push_str(
        "<h2>Flow-sync peers</h2>\n<table class=\"peers\" id=\"sync-peers\"><thead><tr>\
         <th class=\"l\">Peer</th><th>Bulk transfer</th><th>Bulk flows</th><th>Bulk took</th>\
         <th>Bulk requests</th><th>Datagrams in</th><th>Last heard</th></tr></thead><tbody>\n",
    );
    for p in &s.peers {
        o.push_str("<tr data-peer=\"");
        esc(o, &p.address);
        o.push_str("\"><td class=\"l\">");
        esc(o, &p.address);
        o.push_str("</td><td>");
        esc(o, &p.bulk);
        let _ = write!(o, "</td><td>{}</td><td>", p.bulk_flows);
        match p.bulk_seconds {
            Some(secs) => {
                let _ = write!(o, "{secs:.1} s");
            }
            None => o.push('–'),
        }
        let _ = write!(
            o,
            "</td><td>{}</td><td>{}</td><td>",
            p.bulk_requests, p.datagrams_received
        );
        match p.last_heard_seconds {
            Some(secs) => {
                let _ = write!(o, "{} ago", duration(secs));
            }
            None => o.push_str("never"),
        }
        o.push_str("</td></tr>\n");
    }
    o.push_str("</tbody></table>\n");
}

/// One `<tr><th>name</th><td>value</td></tr>` of the summary; `value` is
/// markup the caller made safe.
fn summary_row(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(
        out,
        "<tr><th class=\"l\">{name}</th><td class=\"l\">{value}</td></tr>"
    );
}

/// The status page for one snapshot; `now_unix` (seconds since the epoch)
/// gives the uptime and the age of the config.
pub fn render(stats: &Stats, list: &List, extra: &Extra, now_unix: f64) -> String {
    let servers: usize = list.services.iter().map(|s| s.real_servers.len()).sum();
    let up: usize = list
        .services
        .iter()
        .flat_map(|s| &s.real_servers)
        .filter(|r| r.state == "up")
        .count();
    let mut out = String::with_capacity(4096 + 400 * servers.min(MAX_SERVER_ROWS));
    let o = &mut out;
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width\">\n\
         <title>ulvs status: {} services, {up} of {servers} servers up</title>\n\
         <style>{STYLE}</style></head><body>\n<h1>ulvs director</h1>\n",
        list.services.len()
    );
    let started = extra
        .process
        .start_time_seconds
        .unwrap_or(extra.start_time_seconds);
    let _ = writeln!(
        o,
        "<p class=\"meta\">version {} · up {} · this page reloads every {REFRESH_SECONDS} s · \
         <a href=\"/metrics\">/metrics</a></p>",
        extra.version,
        duration(now_unix - started)
    );

    o.push_str("<table class=\"summary\" id=\"summary\">\n");
    let role = if stats.announcing {
        "<span class=\"on\" id=\"announce\">announce on</span> (the director announces its VIPs: ARP, or routes with <code>announce: route</code>)"
    } else {
        "<span class=\"off\" id=\"announce\">announce off</span> (the VIPs are not announced: a standby)"
    };
    summary_row(o, "Role", role);
    summary_row(o, "Flow sync", &sync_summary(stats.sync.as_ref()));
    let reload = if extra.last_reload_successful {
        format!(
            "<span class=\"on\" id=\"reload\">ok</span>, config loaded {} ago, generation {}",
            duration(now_unix - extra.last_reload_success_time_seconds),
            stats.generation
        )
    } else {
        format!(
            "<span class=\"off\" id=\"reload\">last reload rejected</span> (the config loaded {} ago \
             stays, generation {})",
            duration(now_unix - extra.last_reload_success_time_seconds),
            stats.generation
        )
    };
    summary_row(o, "Config", &reload);
    summary_row(
        o,
        "Reloads",
        &format!("{} taken, {} rejected", stats.reloads, stats.reload_failures),
    );
    summary_row(o, "Workers", &stats.workers.to_string());
    summary_row(
        o,
        "Flows",
        &format!(
            "{} of {} ({} evicted, {} expired)",
            stats.flows, stats.flow_capacity, stats.flow_evictions, stats.flow_expirations
        ),
    );
    summary_row(
        o,
        "Frames",
        &format!(
            "{} seen, {} forwarded ({} bytes), {} lost on full rings",
            stats.frames_seen, stats.forwarded, stats.bytes_forwarded, stats.ring_drops
        ),
    );
    let dropped: u64 = stats.drops.values().sum();
    summary_row(o, "Dropped", &format!("{dropped} frames (by reason below)"));
    o.push_str("</table>\n");

    let _ = writeln!(o, "<h2>Services ({})</h2>", list.services.len());
    let mut budget = MAX_SERVER_ROWS;
    let mut hidden_services = 0usize;
    for (n, s) in list.services.iter().enumerate() {
        if budget == 0 {
            hidden_services += 1;
            continue;
        }
        budget -= service_table(o, n, s, budget);
    }
    if hidden_services > 0 {
        let _ = writeln!(
            o,
            "<p class=\"meta\" id=\"truncated\">{hidden_services} more services not shown: \
             this page lists at most {MAX_SERVER_ROWS} servers (ulvsadm list has them all).</p>"
        );
    }

    if let Some(sync) = &stats.sync {
        sync_peers(o, sync);
    }

    o.push_str(
        "<h2>Drops by reason</h2>\n<table class=\"drops\" id=\"drops\">\
                <thead><tr><th class=\"l\">Reason</th><th>Frames</th></tr></thead><tbody>\n",
    );
    // The reasons that moved, most first; the ones still at zero (most of
    // them, most of the time) folded into one row so the table stays short.
    let mut moved: Vec<(&String, &u64)> = stats.drops.iter().filter(|(_, n)| **n > 0).collect();
    moved.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in moved {
        o.push_str("<tr><td class=\"l\">");
        esc(o, reason);
        let _ = writeln!(o, "</td><td>{n}</td></tr>");
    }
    let zero = stats.drops.values().filter(|n| **n == 0).count();
    if zero > 0 {
        let _ = writeln!(
            o,
            "<tr class=\"zero\"><td class=\"l\">{zero} other reasons</td><td>0</td></tr>"
        );
    }
    o.push_str("</tbody></table>\n");

    let listeners = [
        ("control socket", stats.control_connections),
        ("metrics_listen", stats.http_connections),
    ];
    o.push_str("<h2>Listeners</h2>\n<table class=\"listeners\"><thead><tr><th class=\"l\">Listener</th>");
    let fields = super::snapshot::ConnCounters::default().fields();
    for (name, _) in fields {
        let _ = write!(o, "<th>{}</th>", name.replace('_', " "));
    }
    o.push_str("</tr></thead><tbody>\n");
    for (name, c) in listeners {
        let Some(c) = c else { continue };
        let _ = write!(o, "<tr><td class=\"l\">{name}</td>");
        for (_, v) in c.fields() {
            let _ = write!(o, "<td>{v}</td>");
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::process::ProcessStats;
    use super::super::snapshot::service_fixture;
    use super::*;

    fn extra() -> Extra {
        Extra {
            start_time_seconds: 1_700_000_000.0,
            version: "0.1.0",
            last_reload_successful: true,
            last_reload_success_time_seconds: 1_700_000_100.0,
            process: ProcessStats::default(),
        }
    }

    fn server(address: &str, state: &str) -> ServerSnap {
        ServerSnap {
            address: address.into(),
            weight: 1,
            state: state.into(),
            health: if state == "down" { "down" } else { "up" }.into(),
            ..ServerSnap::default()
        }
    }

    fn fixture() -> (Stats, List) {
        let stats = Stats {
            announcing: true,
            generation: 4,
            workers: 2,
            flows: 7,
            flow_capacity: 1024,
            drops: BTreeMap::from([
                ("no_server".to_string(), 3),
                ("not_vip".to_string(), 11),
                ("runt".to_string(), 0),
                ("bad_ihl".to_string(), 0),
            ]),
            ..Stats::default()
        };
        let web = service_fixture(
            "web",
            ("198.18.100.1", 80, "tcp"),
            "dr",
            vec![
                ServerSnap {
                    active_flows: 5,
                    conns: 42,
                    rates: Rates {
                        conns_per_s: 2.5,
                        in_packets_per_s: 1500.0,
                        in_bytes_per_s: 125_000.0,
                        ..Rates::default()
                    },
                    ..server("198.18.0.11", "up")
                },
                ServerSnap {
                    health_reason: Some("connect: connection refused".into()),
                    ..server("198.18.0.12:8080", "down")
                },
                server("198.18.0.13", "draining"),
            ],
        );
        let evil = service_fixture(
            "<script>alert('x')</script>&\"q\"",
            ("2001:db8::1", 53, "udp"),
            "nat",
            vec![ServerSnap {
                health_reason: Some("http: status 500 <b>boom</b>\n".into()),
                ..server("[2001:db8::11]:53", "up")
            }],
        );
        (
            stats,
            List {
                services: vec![web, evil],
            },
        )
    }

    fn page() -> String {
        let (s, l) = fixture();
        render(&s, &l, &extra(), 1_700_003_700.0)
    }

    #[test]
    fn services_servers_states_and_rates() {
        let p = page();
        for want in [
            "<title>ulvs status: 2 services, 2 of 4 servers up</title>",
            &format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"),
            "<table class=\"service\" id=\"service-0\" data-service=\"web\">",
            "<caption>web <span>198.18.100.1:80/tcp · dr · maglev</span></caption>",
            "<tr class=\"server up\" data-server=\"198.18.0.11\" data-state=\"up\"><td class=\"l\">198.18.0.11</td>\
             <td class=\"state\">up</td><td>up</td><td>1</td><td>5</td><td>0</td><td>42</td><td>2.5</td>\
             <td>1.5k</td><td>1.0M</td><td>0</td><td>0</td><td class=\"reason\"></td></tr>",
            "data-server=\"198.18.0.12:8080\" data-state=\"down\"",
            "<td class=\"reason\">connect: connection refused</td>",
            "<tr class=\"server draining\" data-server=\"198.18.0.13\" data-state=\"draining\">",
            "<th colspan=\"3\">1 of 3 up</th><td>5</td><td>0</td><td>42</td>",
            "<span>[2001:db8::1]:53/udp · nat · maglev</span>",
            "<tr><td class=\"l\">not_vip</td><td>11</td></tr>\n<tr><td class=\"l\">no_server</td><td>3</td></tr>\n\
             <tr class=\"zero\"><td class=\"l\">2 other reasons</td><td>0</td></tr>\n</tbody>",
            "<span class=\"on\" id=\"announce\">announce on</span>",
            "<span class=\"on\" id=\"reload\">ok</span>, config loaded 1h 0m ago, generation 4",
            "version 0.1.0 · up 1h 1m ·",
            "<a href=\"/metrics\">/metrics</a>",
            "7 of 1024",
        ] {
            assert!(p.contains(want), "missing {want}\nin:\n{p}");
        }
        assert!(p.starts_with("<!DOCTYPE html>\n") && p.ends_with("</html>\n"));
    }

    #[test]
    fn user_data_is_escaped() {
        let p = page();
        assert!(!p.contains("<script"), "{p}");
        assert!(!p.contains("<b>boom"), "{p}");
        assert!(
            p.contains("data-service=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;\"")
        );
        assert!(p.contains("<td class=\"reason\">http: status 500 &lt;b&gt;boom&lt;/b&gt;\u{fffd}</td>"));
        // No markup but ours: every `<` opens one of the page's own tags.
        let tags: std::collections::BTreeSet<&str> = p
            .split('<')
            .skip(1)
            .map(|t| t.split([' ', '>', '\n']).next().unwrap())
            .collect();
        let ours = [
            "!DOCTYPE", "html", "head", "meta", "title", "/title", "style", "/style", "/head", "body", "h1",
            "/h1", "p", "/p", "a", "/a", "table", "/table", "tr", "/tr", "th", "/th", "td", "/td", "span",
            "/span", "h2", "/h2", "caption", "/caption", "thead", "/thead", "tbody", "/tbody", "tfoot",
            "/tfoot", "code", "/code", "/body", "/html",
        ];
        for t in &tags {
            assert!(ours.contains(t), "unexpected tag <{t}");
        }
    }

    #[test]
    fn long_text_is_cut_and_standby_and_rejected_reload_show() {
        let (mut s, mut l) = fixture();
        s.announcing = false;
        l.services[0].name = "n".repeat(10 * MAX_TEXT);
        let e = Extra {
            last_reload_successful: false,
            ..extra()
        };
        let p = render(&s, &l, &e, 1_700_000_110.0);
        assert!(p.contains(&format!("data-service=\"{}…\"", "n".repeat(MAX_TEXT))));
        assert!(!p.contains(&"n".repeat(MAX_TEXT + 1)));
        assert!(p.contains("<span class=\"off\" id=\"announce\">announce off</span>"));
        assert!(p.contains(
            "<span class=\"off\" id=\"reload\">last reload rejected</span> (the config loaded 10s ago"
        ));
    }

    #[test]
    fn size_is_bounded() {
        let (s, _) = fixture();
        let svc = |i: usize| {
            let mut v = ServiceSnap {
                name: format!("svc{i}-{}", "x".repeat(500)),
                real_servers: (0..300)
                    .map(|k| ServerSnap {
                        health_reason: Some("r".repeat(5000)),
                        ..server(&format!("198.18.{}.{}", i % 250, k % 250), "up")
                    })
                    .collect(),
                ..ServiceSnap::default()
            };
            v.total();
            v
        };
        let big = List {
            services: (0..50).map(svc).collect(),
        };
        let p = render(&s, &big, &extra(), 1_700_000_000.0);
        let rows = p.matches("<tr class=\"server ").count();
        assert_eq!(rows, MAX_SERVER_ROWS);
        assert!(
            p.contains("200 more servers not shown (ulvsadm list)"),
            "the 4th service is cut"
        );
        assert!(p.contains("46 more services not shown"));
        assert!(p.len() < 1200 * MAX_SERVER_ROWS, "{} bytes", p.len());
    }

    #[test]
    fn flow_sync_state_and_peers() {
        use super::super::snapshot::SyncPeerSnap;
        let (mut s, l) = fixture();
        let off = render(&s, &l, &extra(), 1_700_000_000.0);
        assert!(off.contains("<span id=\"sync\">off</span>"), "{off}");
        assert!(!off.contains("sync-peers"));
        s.sync = Some(SyncSnap {
            listen: "198.18.0.2:8848".into(),
            authenticated: true,
            refresh_ms: 1000,
            datagrams_sent: 4,
            flows_sent: 50,
            datagrams_received: 9,
            flows_received: 120,
            rejected: BTreeMap::from([("bad_mac".to_string(), 2), ("replay".to_string(), 0)]),
            peers: vec![
                SyncPeerSnap {
                    address: "198.18.0.3:8848".into(),
                    bulk: "complete".into(),
                    bulk_requests: 1,
                    bulk_flows: 120,
                    bulk_seconds: Some(0.25),
                    datagrams_received: 9,
                    last_heard_seconds: Some(2.0),
                },
                SyncPeerSnap {
                    address: "<198.18.0.4>:8848".into(),
                    bulk: "unanswered".into(),
                    bulk_requests: 5,
                    ..SyncPeerSnap::default()
                },
            ],
            ..SyncSnap::default()
        });
        let p = render(&s, &l, &extra(), 1_700_000_000.0);
        for want in [
            "<span class=\"on\" id=\"sync\">on</span> 198.18.0.2:8848 (HMAC-SHA256), refresh every 1000 ms; \
             sent 50 flows in 4 datagrams (0 send errors), received 120 flows in 9 datagrams, 2 rejected (bad_mac 2)",
            "<tr data-peer=\"198.18.0.3:8848\"><td class=\"l\">198.18.0.3:8848</td><td>complete</td><td>120</td>\
             <td>0.2 s</td><td>1</td><td>9</td><td>2s ago</td></tr>",
            "<tr data-peer=\"&lt;198.18.0.4&gt;:8848\"><td class=\"l\">&lt;198.18.0.4&gt;:8848</td><td>unanswered</td>\
             <td>0</td><td>–</td><td>5</td><td>0</td><td>never</td></tr>",
        ] {
            assert!(p.contains(want), "missing {want}\nin:\n{p}");
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(7.0), "7");
        assert_eq!(si(2.26), "2.3");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(999.96), "1.0k");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(3.2e9), "3.2G");
        assert_eq!(si(f64::NAN), "?");
        assert_eq!(duration(12.7), "12s");
        assert_eq!(duration(250.0), "4m 10s");
        assert_eq!(duration(7500.0), "2h 5m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
        assert_eq!(duration(-5.0), "0s");
    }
}
