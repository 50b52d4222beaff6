//! The scenario parser on arbitrary bytes: never a panic; whatever it accepts reaches the
//! slaves unchanged (the master-to-slave JSON round-trips).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lobster_fleet::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(s) = lobster_fleet::scenario::parse(text, "fuzz.yaml")
    {
        let back = Scenario::from_json(&s.to_json()).ok();
        assert!(back.as_ref() == Some(&s), "changed on the wire");
    }
});
