//! The control-socket request parser (`serve::parse_request`, what the
//! director runs on every request line) on arbitrary bytes: a request line is
//! either refused with a one-line reason or parsed into a `Request` that
//! serializes back to a line which parses to the same request (what `ulvsadm`
//! sends is what the director reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::control::ctl::Request;
use ulvs::control::serve::parse_request;

fuzz_target!(|data: &[u8]| {
    let req = match parse_request(data) {
        Ok(req) => req,
        Err(why) => {
            assert!(!why.contains('\n'), "a refusal spans lines: {why:?}");
            return;
        }
    };
    let line = serde_json::to_string(&req).expect("a request serializes");
    assert!(!line.contains('\n'), "a request line spans lines: {line:?}");
    let again: Request = parse_request(line.as_bytes()).expect("a serialized request parses");
    assert_eq!(again, req);
});
