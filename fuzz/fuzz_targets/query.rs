//! The local cloud's request side on arbitrary bytes: parse, then run the action against a
//! state holding an image and instances; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lobster_provision::local::api::{Ctx, handle};
use lobster_provision::local::faults::Faults;
use lobster_provision::local::query::Query;
use lobster_provision::local::state::State;

fuzz_target!(|data: &[u8]| {
    let (url, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let Ok(q) = Query::parse(url, body) else { return };
    let mut s = State::default();
    let faults = Faults::default();
    let ok = |_: &str| Ok(());
    let ctx = Ctx { region: "local", now_ms: 0, request_id: "r", faults: &faults, check_location: &ok };
    let seed = Query::parse(None, b"Action=RegisterImage&Version=1&Name=seed&ImageLocation=/x").expect("seed");
    let _ = handle(&seed, &mut s, &ctx);
    let _ = handle(&q, &mut s, &ctx);
    let _ = handle(&q, &mut s, &ctx);
});
