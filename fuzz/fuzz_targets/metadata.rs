//! Fuzz target `metadata`: see `drivers::metadata` for what it checks.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::metadata(data);
});
