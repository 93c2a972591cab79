//! Inputs the fuzz targets (`fuzz/`, run by `scripts/fuzz`) found to break
//! an invariant, kept as fixtures so the fix stays fixed. Each case names
//! the target, the input and what must hold; the raw crash files are in
//! `tests/fuzz-regressions/`.

use ulvs::control::config::Config;

fn regression(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fuzz-regressions/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `config`: every refused file gives one single-line message per problem,
/// naming the file (the `--check` contract).
fn assert_one_line_each(text: &str) -> Vec<String> {
    let errors = Config::from_str(text, "fuzz.yaml").expect_err("refused");
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    for l in &lines {
        assert!(l.starts_with("fuzz.yaml"), "{l:?}");
        assert!(!l.contains('\n'), "a problem spans lines: {l:?}");
    }
    lines
}

/// An interface name with a newline in it was quoted raw, so one problem
/// printed as two lines (config target, first minutes of fuzzing).
#[test]
fn config_quoted_newline_stays_on_one_line() {
    let text = String::from_utf8(regression("config-interface-newline.yaml")).unwrap();
    let lines = assert_one_line_each(&text);
    assert_eq!(
        lines,
        [
            "fuzz.yaml: services: at least one service is required",
            "fuzz.yaml:1: interface: \":`80\\n-config dire8.\" is longer than 15 characters",
        ]
    );
}

/// `ctl_request`: an unknown verb holding an escaped line break was quoted
/// unescaped in the refusal, so `ulvsadm` printed a two-line reason (found
/// as soon as the target ran on `serve::parse_request`).
#[test]
fn ctl_request_unknown_verb_reason_stays_on_one_line() {
    let input = regression("ctl-request-unknown-verb-newline.bin");
    let why = ulvs::control::serve::parse_request(&input).expect_err("refused");
    assert!(why.starts_with("bad request: unknown variant"), "{why}");
    assert!(!why.contains('\n'), "a refusal spans lines: {why:?}");
}

/// `keepalived`: `virtual_server 2001:db8:: 810` was imported as
/// `vip: 2001:db8::`, a plain YAML scalar ending in `:` that reads as a
/// mapping key, so the printed config did not pass `--check` (found by the
/// target in CI). IPv6 addresses are quoted now.
#[test]
fn keepalived_ipv6_vip_ending_in_colons_imports_to_a_valid_config() {
    use ulvs::control::config::Config;
    use ulvs::control::import::keepalived::{import_text, Options};
    let input = regression("keepalived-ipv6-vip-ending-in-colons.conf");
    let text = String::from_utf8_lossy(&input);
    let i = import_text(&text, "fuzz.conf", &Options::default());
    assert!(i.services > 0);
    assert!(i.yaml.contains("vip: \"2001:db8::\""), "{}", i.yaml);
    let c = Config::from_str(&i.yaml, "imported.yaml").unwrap_or_else(|e| panic!("{e}\n---\n{}", i.yaml));
    assert_eq!(c.services.len(), i.services);
}
