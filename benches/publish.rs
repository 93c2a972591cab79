//! Publishing a forwarding table with 1,000 services (slow path): a full
//! build (every Maglev table built, which is what every publish cost before
//! the per-service cache) against a publish after one server's drain (one
//! service's table rebuilt, the others reused).

use std::collections::HashMap;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ulvs::control::config::Config;
use ulvs::control::publish::{build, Iface, Inputs, MaglevCache, Runtime};

const SERVICES: u32 = 1000;
const SERVERS: u32 = 10;

fn config() -> Config {
    let mut y = String::from("interface: eth0\nservices:\n");
    for s in 0..SERVICES {
        y.push_str(&format!(
            "  - name: s{s}\n    vip: 198.18.{}.{}\n    port: 80\n    real_servers:\n",
            100 + s / 250,
            s % 250 + 1
        ));
        for r in 0..SERVERS {
            let n = s * SERVERS + r;
            y.push_str(&format!("      - address: 198.19.{}.{}\n", n / 250, n % 250 + 1));
        }
    }
    Config::from_str(&y, "bench.yaml").expect("valid bench config")
}

fn publish(c: &mut Criterion) {
    let cfg = config();
    let mut rt = Runtime::default();
    rt.sync(&cfg).expect("ids");
    let resolved = |a: u32| Some([2, 0, (a >> 24) as u8, (a >> 16) as u8, (a >> 8) as u8, a as u8]);
    let seen = HashMap::new();
    let iface = Iface {
        mac: [2, 0, 0, 0, 0, 2],
        ipv4: Some(0xc612_0002),
        netmask: 0xffff_0000,
        mtu: 1500,
    };
    // One publish of the current runtime state.
    let publish_once = |rt: &Runtime, generation: u64, cache: &mut MaglevCache| {
        let inputs = Inputs {
            cfg: &cfg,
            rt,
            resolved: &resolved,
            seen: &seen,
            gateway: None,
            iface,
            generation,
            v6: ulvs::control::publish6::Inputs6::NONE,
        };
        build(&inputs, cache)
    };
    let mut g = c.benchmark_group("publish_1000_services");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("full_build", |b| {
        b.iter(|| black_box(publish_once(&rt, 1, &mut MaglevCache::default())))
    });
    let mut cache = MaglevCache::default();
    let mut generation = 1;
    g.bench_function("one_drain", |b| {
        b.iter(|| {
            // Drain, then enable, the same server: each publish changes one
            // service's inputs.
            let s = rt.find_mut(&cfg, "s500", "198.19.20.1").expect("server");
            s.drained = !s.drained;
            generation += 1;
            black_box(publish_once(&rt, generation, &mut cache))
        })
    });
    g.finish();
    assert!(
        cache.builds <= u64::from(SERVICES) + generation,
        "one rebuild per drain"
    );
}

criterion_group!(benches, publish);
criterion_main!(benches);
