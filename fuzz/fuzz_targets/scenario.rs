//! The scenario parser on arbitrary bytes: never a panic; whatever it accepts is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(s) = lobster_fleet::scenario::parse(text, "fuzz.yaml")
    {
        assert!(s.check().is_ok(), "accepted an invalid scenario");
    }
});
