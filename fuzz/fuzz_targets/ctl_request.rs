//! The control-socket request parser on arbitrary bytes: a request line is
//! either refused or parsed into a `Request` that serializes back to a line
//! which parses to the same request (what `ulvsadm` sends is what the
//! director reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::control::ctl::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let line = serde_json::to_string(&req).expect("a request serializes");
    assert!(!line.contains('\n'), "a request line spans lines: {line:?}");
    let again: Request = serde_json::from_str(&line).expect("a serialized request parses");
    assert_eq!(again, req);
});
