//! Fuzz target `image_open`: see `drivers::image_open` for what it checks.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::image_open(data);
});
