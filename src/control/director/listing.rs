//! `ulvsadm list` and `ulvsadm flows` answered in parts (slow path).
//!
//! At 10,000 services of 20 servers the listing is some 60 MB of JSON. It is
//! never built whole: the control endpoint ([`crate::control::serve`]) asks
//! for the next part only when the client took the last one, and a part is
//! about [`serve::PART`] bytes of services, each snapshotted from the
//! counters when its turn comes. The loop answers ARP, runs health checks
//! and serves other clients between parts.
//!
//! The bytes are those the director sent when it built the whole answer as
//! one `serde_json::Value` ([`ArrayAnswer`]): `--json` consumers see no
//! change. A listing lists the services of the config it started with: if a
//! reload lands between two parts, each remaining service is looked up by
//! name in the new config (shown as it is now), and one the reload removed
//! is left out — the line stays one valid answer.

use std::collections::HashMap;

use serde_json::json;

use super::{report, Director};
use crate::control::config::{Config, Service};
use crate::control::ctl::ArrayAnswer;
use crate::control::serve;
use crate::control::snapshot::{Flows, ServiceSnap};

/// A reply being produced in parts: the control endpoint's cursor.
#[derive(Debug)]
pub(super) enum Parts {
    List(ListParts),
    Flows(FlowParts),
}

/// Where a listing is.
#[derive(Debug)]
pub(super) struct ListParts {
    /// The services of the config the listing started from, in order.
    names: Vec<String>,
    /// The next of `names` to write.
    next: usize,
    /// The answer, once its head is written.
    answer: Option<ArrayAnswer>,
    /// After a reload: the new config's services by name, and the reload
    /// count it was made at.
    by_name: Option<(u64, HashMap<String, usize>)>,
}

impl ListParts {
    /// A listing of `cfg`'s services.
    fn new(cfg: &Config) -> Self {
        ListParts {
            names: cfg.services.iter().map(|s| s.name.clone()).collect(),
            next: 0,
            answer: None,
            by_name: None,
        }
    }

    /// Append about [`serve::PART`] bytes of the listing to `out`: the
    /// services `snap` makes of `cfg`'s (`reloads`: how many reloads the
    /// director has applied, to notice one between two parts), and after
    /// the last one the fields `tail` gives. `true` when the answer is
    /// complete.
    fn part(
        &mut self,
        cfg: &Config,
        reloads: u64,
        snap: impl Fn(&Service) -> ServiceSnap,
        tail: impl FnOnce() -> Vec<(&'static str, serde_json::Value)>,
        out: &mut Vec<u8>,
    ) -> bool {
        let end = out.len() + serve::PART;
        let answer = self
            .answer
            .get_or_insert_with(|| ArrayAnswer::start("services", out));
        while out.len() < end && self.next < self.names.len() {
            let (at, name) = (self.next, &self.names[self.next]);
            self.next += 1;
            // Unless a reload came between two parts, the service is at the
            // same place (names are unique in a config).
            let svc = match cfg.services.get(at).filter(|s| s.name == *name) {
                Some(s) => Some(s),
                None => {
                    if self.by_name.as_ref().is_none_or(|(r, _)| *r != reloads) {
                        let index = cfg.services.iter().enumerate();
                        let map = index.map(|(i, s)| (s.name.clone(), i)).collect();
                        self.by_name = Some((reloads, map));
                    }
                    let found = self.by_name.as_ref().and_then(|(_, m)| m.get(name));
                    found.map(|&i| &cfg.services[i])
                }
            };
            if let Some(s) = svc {
                answer.item(out, &snap(s));
            }
        }
        if self.next < self.names.len() {
            return false;
        }
        if let Some(answer) = self.answer.take() {
            answer.finish(out, &tail());
        }
        true
    }
}

/// Where a flow listing is: the rows are made whole (they are sorted, and
/// at most [`super::dump::MAX_FLOWS_LISTED`]); only their JSON is written
/// in parts.
#[derive(Debug)]
pub(super) struct FlowParts {
    flows: Flows,
    next: usize,
    answer: Option<ArrayAnswer>,
}

impl FlowParts {
    pub(super) fn new(flows: Flows) -> Self {
        FlowParts {
            flows,
            next: 0,
            answer: None,
        }
    }

    /// Append about [`serve::PART`] bytes of the answer to `out`; `true`
    /// when it is complete.
    fn part(&mut self, out: &mut Vec<u8>) -> bool {
        let end = out.len() + serve::PART;
        let answer = self
            .answer
            .get_or_insert_with(|| ArrayAnswer::start("flows", out));
        let rows = &self.flows.flows;
        while out.len() < end && self.next < rows.len() {
            answer.item(out, &rows[self.next]);
            self.next += 1;
        }
        if self.next < rows.len() {
            return false;
        }
        if let Some(answer) = self.answer.take() {
            let f = &self.flows;
            let tail = [
                ("truncated", json!(f.truncated)),
                ("workers", json!(f.workers)),
                ("workers_answered", json!(f.workers_answered)),
            ];
            answer.finish(out, &tail);
        }
        true
    }
}

impl Director {
    /// `ulvsadm list`, to be answered in parts ([`Director::more`]).
    pub(super) fn list_parts(&self) -> Parts {
        Parts::List(ListParts::new(&self.cfg))
    }

    /// Append the next part of `parts` to `out`; `true` when the answer is
    /// complete.
    pub(super) fn more(&self, parts: &mut Parts, out: &mut Vec<u8>) -> bool {
        match parts {
            Parts::List(l) => {
                let fast = self.fast_per_server();
                let src = self.sources(&fast);
                // Beside the contract's `services`: the sync peers' bulk
                // state (`ulvsadm list` prints it as header lines).
                let tail = || match &self.sync {
                    Some(h) => vec![("sync", json!(h.snapshot()))],
                    None => Vec::new(),
                };
                l.part(
                    &self.cfg,
                    self.slow.reloads,
                    |s| report::service(&src, s),
                    tail,
                    out,
                )
            }
            Parts::Flows(f) => f.part(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ctl::Response;
    use crate::control::rates::Rates;
    use crate::control::snapshot::{FlowSnap, List, ServerSnap, SyncPeerSnap, SyncSnap};

    /// A config of `n` services named `s0`, `s1`, ... in that order (or
    /// reversed), one server each.
    fn config(names: &[String]) -> Config {
        let mut yaml = String::from("interface: eth0\nservices:\n");
        for (i, n) in names.iter().enumerate() {
            yaml.push_str(&format!(
                "  - name: {n}\n    vip: 198.18.{}.{}\n    port: 80\n    real_servers:\n      - address: 198.18.0.11\n",
                101 + i / 250,
                i % 250 + 1
            ));
        }
        Config::from_str(&yaml, "t.yaml").expect("valid")
    }

    /// What the listing shows of a service: 20 servers with every field
    /// set, optional ones on some (made up from its name, so that a test
    /// knows what to expect).
    fn snap(s: &Service) -> ServiceSnap {
        let n: u64 = s.name[1..].parse().unwrap();
        let servers = (0..20u64)
            .map(|j| ServerSnap {
                address: if j % 7 == 3 {
                    format!("[2001:db8:2::{j:x}]:8080")
                } else {
                    format!("198.18.0.{j}")
                },
                weight: j as u32,
                state: ["up", "down", "draining"][(j % 3) as usize].into(),
                health: "up".into(),
                health_reason: (j % 5 == 1).then(|| format!("connect: \"refused\" \u{e9}\n{n}")),
                active_flows: n * 100 + j,
                inactive_flows: j,
                conns: n ^ j,
                // Beyond 2^53: exact in JSON only as an integer.
                packets: u64::MAX / 64 - j,
                bytes: 1 << j,
                out_packets: 3,
                out_bytes: 4,
                rates: Rates {
                    conns_per_s: 0.1 * j as f64,
                    in_packets_per_s: 1.0 / 3.0,
                    in_bytes_per_s: 1e21,
                    out_packets_per_s: f64::NAN,
                    out_bytes_per_s: 2.5,
                },
                mac: (j % 4 != 0).then(|| "02:00:c6:12:00:0b".into()),
                note: (j % 4 == 0).then(|| "MAC unresolved".into()),
            })
            .collect();
        let mut snap = ServiceSnap {
            name: s.name.clone(),
            vip: s.vip.to_string(),
            port: s.port,
            protocol: "tcp".into(),
            mode: "dr".into(),
            scheduler: "maglev".into(),
            table_digest: format!("{n:016x}"),
            real_servers: servers,
            ..Default::default()
        };
        snap.total();
        snap
    }

    fn sync_tail() -> Vec<(&'static str, serde_json::Value)> {
        let sync = SyncSnap {
            listen: "198.18.0.2:8848".into(),
            id: "00ab".into(),
            refresh_ms: 1000,
            rejected: [("bad_mac".to_string(), 2)].into(),
            peers: vec![SyncPeerSnap {
                address: "198.18.0.3:8848".into(),
                bulk: "complete".into(),
                bulk_seconds: Some(0.25),
                ..Default::default()
            }],
            ..Default::default()
        };
        vec![("sync", json!(sync))]
    }

    /// What the director sent before it streamed: the whole `List` as one
    /// `Value`, with `sync` beside `services`.
    fn whole_answer(services: Vec<ServiceSnap>, sync: bool) -> Vec<u8> {
        let mut v = json!(List { services });
        if sync {
            v["sync"] = sync_tail().remove(0).1;
        }
        serve::control_line(&Response::ok(v))
    }

    /// Run a listing to its end; the parts' sizes.
    fn all_parts(l: &mut ListParts, cfg: &Config, sync: bool, out: &mut Vec<u8>) -> Vec<usize> {
        let mut sizes = Vec::new();
        loop {
            let mut part = Vec::new();
            let done = l.part(
                cfg,
                0,
                snap,
                || if sync { sync_tail() } else { Vec::new() },
                &mut part,
            );
            sizes.push(part.len());
            out.extend_from_slice(&part);
            if done {
                return sizes;
            }
            assert!(sizes.len() < 10_000, "the listing never ends");
        }
    }

    /// Written in parts, the listing is byte for byte the answer the
    /// director built whole (sorted keys, floats, escapes, NaN as null,
    /// absent optional fields, `sync` after `services`), each part about
    /// [`serve::PART`] bytes: never the whole answer at once.
    #[test]
    fn a_listing_in_parts_is_the_whole_answer_byte_for_byte() {
        let names: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
        let cfg = config(&names);
        for sync in [true, false] {
            let mut l = ListParts::new(&cfg);
            let mut streamed = Vec::new();
            let sizes = all_parts(&mut l, &cfg, sync, &mut streamed);
            let whole = whole_answer(cfg.services.iter().map(snap).collect(), sync);
            assert!(whole.len() > 10 * serve::PART, "{} bytes", whole.len());
            assert_eq!(
                String::from_utf8_lossy(&streamed),
                String::from_utf8_lossy(&whole)
            );
            assert!(sizes.len() > 10, "{sizes:?}");
            let one_service = serde_json::to_vec(&snap(&cfg.services[0])).unwrap().len();
            assert!(
                sizes.iter().all(|&n| n < serve::PART + 2 * one_service),
                "{sizes:?}"
            );
        }
        // No services at all: still one answer.
        let mut empty = cfg.clone();
        empty.services.clear();
        let mut out = Vec::new();
        all_parts(&mut ListParts::new(&empty), &empty, false, &mut out);
        assert_eq!(out, whole_answer(Vec::new(), false));
        assert_eq!(out, b"{\"ok\":true,\"data\":{\"services\":[]}}\n");
    }

    /// A reload between two parts: the listing goes on with the services it
    /// started with, each as the new config has it, leaving out those the
    /// reload removed; the answer is still one valid line.
    #[test]
    fn a_reload_between_parts_keeps_the_listing_whole() {
        let names: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        let before = config(&names);
        // The new config: reversed, without s150, with a new s999.
        let mut after_names: Vec<String> = names.iter().rev().filter(|n| *n != "s150").cloned().collect();
        after_names.push("s999".into());
        let after = config(&after_names);
        let mut l = ListParts::new(&before);
        let mut out = Vec::new();
        assert!(!l.part(&before, 0, snap, Vec::new, &mut out));
        let first = l.next;
        assert!(first > 0 && first < 150, "{first}");
        while !l.part(&after, 1, snap, Vec::new, &mut out) {}
        let line = std::str::from_utf8(&out).unwrap();
        assert!(line.ends_with("}}\n") && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let listed: Vec<&str> = v["data"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "s150")
            .collect();
        assert_eq!(listed, want);
        // Those after the reload carry the new config's VIPs.
        let s0 = &v["data"]["services"][0];
        let s199 = &v["data"]["services"][198];
        assert_eq!(s0["vip"], "198.18.101.1");
        assert_eq!(s199["vip"], "198.18.101.1", "s199 is first in the new config");
    }

    /// `ulvsadm flows --json` in parts is the whole answer, byte for byte.
    #[test]
    fn flows_in_parts_are_the_whole_answer_byte_for_byte() {
        let flows = Flows {
            flows: (0..5000)
                .map(|i| FlowSnap {
                    protocol: "tcp".into(),
                    client: format!("198.18.1.{}:{}", i % 200, 1024 + i),
                    vip: "[2001:db8:100::1]:80".into(),
                    service: "web \"6\"".into(),
                    server: "198.18.0.11 (removed)".into(),
                    state: "established".into(),
                    expires_in: i as u64,
                    worker: i % 3,
                    origin: "local".into(),
                })
                .collect(),
            truncated: true,
            workers: 3,
            workers_answered: 2,
        };
        let whole = serve::control_line(&Response::ok(json!(flows)));
        let mut f = FlowParts::new(flows);
        let (mut out, mut parts) = (Vec::new(), 0);
        loop {
            let mut part = Vec::new();
            let done = f.part(&mut part);
            assert!(part.len() < serve::PART + 512, "{}", part.len());
            out.extend_from_slice(&part);
            parts += 1;
            if done {
                break;
            }
        }
        assert!(parts > 5, "{parts}");
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole));
    }
}
