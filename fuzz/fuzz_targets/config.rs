//! The config loader and validator (`Config::from_str`, what `--check`,
//! start-up and reload run) on arbitrary text. Beyond "never panics": a
//! refused file gives one single-line message per problem, each naming the
//! file (the CONTRACT's `--check` output), and an accepted file can be turned
//! into runtime state and a forwarding table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::control::config::Config;
use ulvs::control::publish::Runtime;
use ulvs::control::publish6::build_table_dual;

const FILE: &str = "fuzz.yaml";
/// Table builds cost O(services x slots); above this the input is only
/// validated, so a slow but correct build is not reported as a timeout.
const MAX_SLOTS: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // The loader reads the file as UTF-8 first; other bytes never reach it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_str(text, FILE) {
        Ok(cfg) => {
            let mut rt = Runtime::default();
            if rt.sync(&cfg).is_err() {
                return;
            }
            let slots = cfg.services.len() * cfg.maglev_table_size as usize;
            if slots <= MAX_SLOTS {
                // Both families: every accepted service lands in its table.
                let mac = |a: std::net::IpAddr| {
                    let last = match a {
                        std::net::IpAddr::V4(v) => v.octets()[3],
                        std::net::IpAddr::V6(v) => v.octets()[15],
                    };
                    Some([2, 0, 0, 0, 0, last])
                };
                let t = build_table_dual(&cfg, &rt, mac, [2; 6], (0, 0), 1);
                assert_eq!(t.services.len() + t.services6.len(), cfg.services.len());
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            for e in &errors.0 {
                let line = e.to_string();
                assert!(line.starts_with(FILE), "message does not name the file: {line:?}");
                assert!(!line.contains('\n'), "message spans lines: {line:?}");
            }
        }
    }
});
