//! The control plane at scale (`cargo bench --bench scale`): a plain timed
//! program with bounded iterations rather than criterion, because one
//! 10,000-service start-up takes seconds and a gigabyte.
//!
//! For each size (services × servers each) it measures, on the publish
//! path the director runs (`Config::from_str` → `Runtime::sync_at` →
//! `publish::build` with the director's `MaglevCache`, and
//! `publish::build_changed` for a runtime change):
//!
//! * start-up: parse + sync + the first build (every Maglev table built);
//! * reload of an unchanged file as the director answers it: the file read
//!   and its digest compared with the one in force (`Config::read`, no
//!   parse or build: "unchanged");
//! * the same config through the whole reload path: parse + sync + build
//!   with the warm cache (and the parse alone) — what a file whose bytes
//!   changed but whose services did not costs;
//! * reload with one change: one server's weight changed in the file;
//! * a single drain: one server drained, then re-enabled (each a publish of
//!   the table patched by `build_changed`);
//! * a health flap: one server down, then up (the same);
//!
//! time (median and max over the iterations; for the reloads also this
//! thread's CPU time, which a loaded machine does not inflate) and memory (resident set
//! growth over the start-up, per service; distinct Maglev tables held).
//! Sizes are given as arguments, `SERVICESxSERVERS`, default `1000x20
//! 10000x20`; a size that does not fit the backend id space is reported as
//! refused, with the runtime's error. Also `--table-size M` (default the
//! config's 65,537), `--sets K` (the services use K distinct server sets,
//! so services share tables; default every service its own) and `--iters
//! N` (drain and flap iterations, default 10). Only that the cache reuses
//! what it should is asserted; the figures go to stdout (and as JSON lines
//! with `--json`).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ulvs::control::config::{Config, FileDigest};
use ulvs::control::publish::{build, build_changed, Built, Health, Iface, Inputs, MaglevCache, Runtime};

fn yaml(services: u32, servers: u32, table_size: Option<u32>, sets: Option<u32>) -> String {
    let mut y = String::from("interface: eth0\n");
    if let Some(m) = table_size {
        y.push_str(&format!("maglev_table_size: {m}\n"));
    }
    y.push_str("services:\n");
    for s in 0..services {
        // distinct VIPs; every service its own servers (the addresses wrap
        // after 64,000 servers, which DR allows across services; no two
        // services have the same server set, so none could share a table)
        y.push_str(&format!(
            "  - name: s{s}\n    vip: 198.18.{}.{}\n    port: 80\n    real_servers:\n",
            100 + s / 250,
            s % 250 + 1
        ));
        for r in 0..servers {
            let n = sets.map_or(s, |k| s % k) * servers + r;
            y.push_str(&format!(
                "      - address: 198.19.{}.{}\n",
                (n / 250) % 256,
                n % 250 + 1
            ));
        }
    }
    y
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time this thread has run (`/proc/thread-self/schedstat`): on a
/// machine shared with other work the wall time of a few milliseconds'
/// work depends on when the scheduler runs us; this does not. It advances
/// in scheduler ticks, so it is read around all the changes together.
fn cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Args {
    sizes: Vec<(u32, u32)>,
    table_size: Option<u32>,
    sets: Option<u32>,
    iters: usize,
    json: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: Vec::new(),
        table_size: None,
        sets: None,
        iters: 10,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            // cargo bench passes --bench to every bench target
            "--bench" => {}
            "--json" => a.json = true,
            "--table-size" => a.table_size = it.next().and_then(|v| v.parse().ok()),
            "--sets" => a.sets = it.next().and_then(|v| v.parse().ok()).filter(|&k| k > 0),
            "--iters" => {
                a.iters = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10)
                    .clamp(1, 1000)
            }
            s => match s.split_once('x').map(|(a, b)| (a.parse(), b.parse())) {
                Some((Ok(n), Ok(k))) if (1..=100_000).contains(&n) && (1..=1000).contains(&k) => {
                    a.sizes.push((n, k));
                }
                _ => {
                    eprintln!("scale: unknown argument '{s}' (SERVICESxSERVERS, --table-size M, --sets K, --iters N, --json)");
                    std::process::exit(2);
                }
            },
        }
    }
    if a.sizes.is_empty() {
        a.sizes = vec![(1000, 20), (10_000, 20)];
    }
    a
}

fn main() {
    let a = args();
    let iface = Iface {
        mac: [2, 0, 0, 0, 0, 2],
        ipv4: Some(0xc612_0002),
        netmask: 0xffff_0000,
        mtu: 1500,
    };
    let resolved = |x: u32| Some([2, 0, (x >> 24) as u8, (x >> 16) as u8, (x >> 8) as u8, x as u8]);
    let seen = HashMap::new();
    println!(
        "{:>8} {:>7} {:>6} {:>6} {:>10} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "services",
        "servers",
        "table",
        "sets",
        "startup ms",
        "same ms",
        "parse ms",
        "reload ms",
        "reload1ms",
        "drain ms",
        "drainmax",
        "flap ms",
        "CPU ms",
        "RSS MiB",
        "KiB/svc",
        "tables"
    );
    for &(services, servers) in &a.sizes {
        let text = yaml(services, servers, a.table_size, a.sets);
        let base = rss_kib();
        let t0 = Instant::now();
        let cfg = match Config::from_str(&text, "scale.yaml") {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                println!(
                    "{services:>8} {servers:>7} refused by the config: {}",
                    e.lines().next().unwrap_or("")
                );
                continue;
            }
        };
        let parse = t0.elapsed();
        let mut rt = Runtime::default();
        if let Err(e) = rt.sync(&cfg) {
            println!("{services:>8} {servers:>7} refused: {e}");
            continue;
        }
        // as if every health check had answered: servers start Pending when checked
        for s in rt.servers.values_mut() {
            s.health = Health::Up;
        }
        let mut cache = MaglevCache::default();
        let mut generation = 1u64;
        // prev: None = a full build (start-up, reload), else the table to patch
        let mut publish =
            |cfg: &Config, rt: &Runtime, cache: &mut MaglevCache, prev: Option<(&Built, u32)>| {
                generation += 1;
                let inp = Inputs {
                    cfg,
                    rt,
                    resolved: &resolved,
                    seen: &seen,
                    gateway: None,
                    iface,
                    generation,
                    v6: ulvs::control::publish6::Inputs6::NONE,
                };
                match prev {
                    None => build(&inp, cache),
                    Some((p, id)) => build_changed(&inp, cache, &p.table, &[id]),
                }
            };
        // Start-up: the director holds the published table and the cache.
        let mut published = publish(&cfg, &rt, &mut cache, None);
        let startup = t0.elapsed();
        let rss = rss_kib().saturating_sub(base);
        let tables = cache.tables();
        let builds_after_start = cache.builds;

        // Reload of the unchanged file as the director answers it: read,
        // digest, compare (bounded: 3 times).
        let file = std::env::temp_dir().join(format!("ulvs-scale-{}.yaml", std::process::id()));
        std::fs::write(&file, &text).expect("temporary config file");
        let in_force = FileDigest::of(text.as_bytes());
        let mut same = Vec::new();
        let mut same_cpu = Vec::new();
        for _ in 0..3 {
            let (t, c) = (Instant::now(), cpu());
            let (read, digest) = Config::read(&file).expect("file reads");
            assert!(digest == in_force && cfg.side_files_unchanged(), "file unchanged");
            black_box(read);
            same.push(t.elapsed());
            same_cpu.push(cpu().saturating_sub(c));
        }
        let _ = std::fs::remove_file(&file);
        // The same config through the whole path (bounded: 3 times): what
        // the director did before it compared digests; the new config is
        // synced and built whole.
        let mut reload = Vec::new();
        let mut parses = Vec::new();
        let mut reload_cpu = Vec::new();
        let mut cfg = cfg;
        for _ in 0..3 {
            let (t, c) = (Instant::now(), cpu());
            let c2 = Config::from_str(&text, "scale.yaml").expect("same text parses");
            parses.push(t.elapsed());
            rt.sync(&c2).expect("same ids");
            published = publish(&c2, &rt, &mut cache, None);
            reload.push(t.elapsed());
            reload_cpu.push(cpu().saturating_sub(c));
            // the old config is dropped as the director drops it
            cfg = c2;
        }
        assert_eq!(
            cache.builds, builds_after_start,
            "an unchanged reload rebuilt a table"
        );
        // Reload with one change: the first server of one service gets
        // weight 2, then 1 again (each a reload; one table rebuilt each).
        let svc = format!("s{}", services / 2);
        let addr = cfg.service(&svc).expect("service").real_servers[0].endpoint();
        let needle = format!("  - name: {svc}\n");
        let at = text.find(&needle).expect("service in the text");
        let line = format!("      - address: {addr}\n");
        let at = at + text[at..].find(&line).expect("server in the text") + line.len();
        let changed = format!("{}        weight: 2\n{}", &text[..at], &text[at..]);
        let mut reload1 = Vec::new();
        let mut reload1_cpu = Vec::new();
        for t in [&changed, &text] {
            let (t0, c) = (Instant::now(), cpu());
            let c2 = Config::from_str(t, "scale.yaml").expect("changed text parses");
            rt.sync(&c2).expect("same ids");
            published = publish(&c2, &rt, &mut cache, None);
            reload1.push(t0.elapsed());
            reload1_cpu.push(cpu().saturating_sub(c));
            cfg = c2;
        }
        let builds_before_drain = cache.builds;
        let incremental_before = cache.incremental;

        // A single drain / enable of one server in the middle service.
        let mut drain = Vec::new();
        let mut flap = Vec::new();
        let changes_cpu = cpu();
        for _ in 0..a.iters {
            for _ in 0..2 {
                let t = Instant::now();
                let s = rt.find_mut(&cfg, &svc, &addr).expect("server");
                s.drained = !s.drained;
                let id = s.id;
                published = publish(&cfg, &rt, &mut cache, Some((&published, id)));
                drain.push(t.elapsed());
            }
            for h in [Health::Down, Health::Up] {
                let t = Instant::now();
                let s = rt.find_mut(&cfg, &svc, &addr).expect("server");
                s.health = h;
                let id = s.id;
                published = publish(&cfg, &rt, &mut cache, Some((&published, id)));
                flap.push(t.elapsed());
            }
        }
        // every change patched the table; at most the drained table was
        // built once (later flips find it in the cache)
        assert_eq!(cache.incremental, incremental_before + 4 * a.iters as u64);
        assert!(
            cache.builds <= builds_before_drain + 1,
            "a drain rebuilt more than one table"
        );
        black_box(&published);
        let table = cfg.maglev_table_size;
        // CPU per change, mean over every drain, enable and flap
        let cc = ms(cpu().saturating_sub(changes_cpu)) / (4 * a.iters) as f64;
        let (rc, r1c) = (
            ms(median(&mut reload_cpu)),
            ms(*reload1_cpu.iter().max().expect("two")),
        );
        let (sm, smc) = (ms(median(&mut same)), ms(median(&mut same_cpu)));
        let (pm, rm, r1, dm, dx, fm) = (
            ms(median(&mut parses)),
            ms(median(&mut reload)),
            ms(*reload1.iter().max().expect("two")),
            ms(median(&mut drain)),
            ms(*drain.iter().max().expect("iters >= 1")),
            ms(median(&mut flap)),
        );
        let sets = a.sets.map_or(services, |k| k.min(services));
        println!(
            "{services:>8} {servers:>7} {table:>6} {sets:>6} {:>10.0} {sm:>7.1} {pm:>9.0} {rm:>9.0} {r1:>9.0} {dm:>8.2} {dx:>8.2} {fm:>8.2} {cc:>8.2} {:>8.1} {:>7.1} {tables:>8}",
            ms(startup),
            rss as f64 / 1024.0,
            rss as f64 / f64::from(services)
        );
        if a.json {
            println!(
                "{{\"services\":{services},\"servers\":{servers},\"table_size\":{table},\"sets\":{sets},\"parse_ms\":{:.3},\
                 \"startup_ms\":{:.3},\"reload_unchanged_ms\":{sm:.3},\"reload_unchanged_cpu_ms\":{smc:.3},\"reload_parse_ms\":{pm:.3},\"reload_ms\":{rm:.3},\"reload_one_change_ms\":{r1:.3},\
                 \"reload_cpu_ms\":{rc:.3},\"reload_one_change_cpu_ms\":{r1c:.3},\"drain_ms\":{dm:.3},\"drain_max_ms\":{dx:.3},\"flap_ms\":{fm:.3},\"change_cpu_ms\":{cc:.3},\"rss_kib\":{rss},\"kib_per_service\":{:.1},\"tables\":{tables}}}",
                ms(parse),
                ms(startup),
                rss as f64 / f64::from(services)
            );
        }
        drop(published);
        drop(cache);
    }
}
