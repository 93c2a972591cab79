//! The control plane at scale (`cargo bench --bench scale`): a plain timed
//! program with bounded iterations rather than criterion, because one
//! 10,000-service start-up takes seconds and a gigabyte.
//!
//! For each size (services × servers each) it measures, on the publish
//! path the director runs (`Config::from_str` → `Runtime::sync_at` →
//! `publish::build` with the director's `MaglevCache`):
//!
//! * start-up: parse + sync + the first build (every Maglev table built);
//! * reload of an unchanged file: parse + sync + build with the warm cache;
//! * a single drain: one server drained, then re-enabled (each a publish);
//! * a health flap: one server down, then up (each a publish);
//!
//! time (median and max over the iterations) and memory (resident set
//! growth over the start-up, per service). Sizes are given as arguments,
//! `SERVICESxSERVERS`, default `1000x20 3000x20 10000x6 10000x20`; a size
//! that does not fit the backend id space (65,536 ids, one per server of
//! each service) is reported as refused, with the runtime's error. Also
//! `--table-size M` (default the config's 65,537) and `--iters N` (drain
//! and flap iterations, default 10). Nothing is asserted: the figures go to
//! stdout (and as JSON lines when `--json` is given).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ulvs::control::config::Config;
use ulvs::control::publish::{build, Health, Iface, Inputs, MaglevCache, Runtime};

fn yaml(services: u32, servers: u32, table_size: Option<u32>) -> String {
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
            let n = s * servers + r;
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
    iters: usize,
    json: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: Vec::new(),
        table_size: None,
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
            "--iters" => {
                a.iters = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10)
                    .clamp(1, 1000)
            }
            s => {
                match s.split_once('x').map(|(a, b)| (a.parse(), b.parse())) {
                    Some((Ok(n), Ok(k))) if (1..=100_000).contains(&n) && (1..=1000).contains(&k) => {
                        a.sizes.push((n, k));
                    }
                    _ => {
                        eprintln!("scale: unknown argument '{s}' (SERVICESxSERVERS, --table-size M, --iters N, --json)");
                        std::process::exit(2);
                    }
                }
            }
        }
    }
    if a.sizes.is_empty() {
        a.sizes = vec![(1000, 20), (3000, 20), (10_000, 6), (10_000, 20)];
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
        "{:>8} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "services",
        "servers",
        "table",
        "startup ms",
        "reload ms",
        "drain ms",
        "drain max",
        "flap ms",
        "RSS MiB",
        "KiB/svc"
    );
    for &(services, servers) in &a.sizes {
        let text = yaml(services, servers, a.table_size);
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
        let mut publish = |cfg: &Config, rt: &Runtime, cache: &mut MaglevCache| {
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
            build(&inp, cache)
        };
        // Start-up: the director holds the published table and the cache.
        let mut published = publish(&cfg, &rt, &mut cache);
        let startup = t0.elapsed();
        let rss = rss_kib().saturating_sub(base);
        let builds_after_start = cache.builds;

        // Reload of the unchanged file (bounded: 3 times).
        let mut reload = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let c2 = Config::from_str(&text, "scale.yaml").expect("same text parses");
            rt.sync(&c2).expect("same ids");
            published = publish(&c2, &rt, &mut cache);
            reload.push(t.elapsed());
        }
        assert_eq!(
            cache.builds, builds_after_start,
            "an unchanged reload rebuilt a table"
        );

        // A single drain / enable of one server in the middle service.
        let svc = format!("s{}", services / 2);
        let addr = cfg.service(&svc).expect("service").real_servers[0].endpoint();
        let mut drain = Vec::new();
        let mut flap = Vec::new();
        for _ in 0..a.iters {
            for _ in 0..2 {
                let t = Instant::now();
                let s = rt.find_mut(&cfg, &svc, &addr).expect("server");
                s.drained = !s.drained;
                published = publish(&cfg, &rt, &mut cache);
                drain.push(t.elapsed());
            }
            for h in [Health::Down, Health::Up] {
                let t = Instant::now();
                rt.find_mut(&cfg, &svc, &addr).expect("server").health = h;
                published = publish(&cfg, &rt, &mut cache);
                flap.push(t.elapsed());
            }
        }
        // one table rebuilt per change, the others reused
        assert_eq!(cache.builds, builds_after_start + 4 * a.iters as u64);
        black_box(&published);
        let table = cfg.maglev_table_size;
        let (rm, dm, dx, fm) = (
            ms(median(&mut reload)),
            ms(median(&mut drain)),
            ms(*drain.iter().max().expect("iters >= 1")),
            ms(median(&mut flap)),
        );
        println!(
            "{services:>8} {servers:>7} {table:>7} {:>10.1} {rm:>10.1} {dm:>10.2} {dx:>10.2} {fm:>10.2} {:>12.1} {:>10.1}",
            ms(startup),
            rss as f64 / 1024.0,
            rss as f64 / f64::from(services)
        );
        if a.json {
            println!(
                "{{\"services\":{services},\"servers\":{servers},\"table_size\":{table},\"parse_ms\":{:.3},\
                 \"startup_ms\":{:.3},\"reload_ms\":{rm:.3},\"drain_ms\":{dm:.3},\"drain_max_ms\":{dx:.3},\
                 \"flap_ms\":{fm:.3},\"rss_kib\":{rss},\"kib_per_service\":{:.1}}}",
                ms(parse),
                ms(startup),
                rss as f64 / f64::from(services)
            );
        }
        drop(published);
        drop(cache);
    }
}
