//! `ulvsadm import-keepalived` on arbitrary text (`import_text`: includes
//! are not followed). Beyond "never panics": every note is one line naming
//! the file, and whenever a service was translated the printed config passes
//! the director's validator with exactly those services — the promise that
//! what the import prints is a config `--check` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::control::config::Config;
use ulvs::control::import::keepalived::{import_text, Options};

const FILE: &str = "fuzz.conf";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let i = import_text(&text, FILE, &Options::default());
    for n in &i.notes {
        let line = n.to_string();
        assert!(line.starts_with(FILE), "note does not name the file: {line:?}");
        assert!(!line.contains('\n'), "note spans lines: {line:?}");
    }
    if i.services > 0 {
        match Config::from_str(&i.yaml, "imported.yaml") {
            Ok(c) => assert_eq!(c.services.len(), i.services),
            Err(e) => panic!("the import does not pass --check:\n{e}\n---\n{}", i.yaml),
        }
    }
});
