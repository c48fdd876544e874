//! Fuzz target `tar_import`: see `drivers::tar_import` for what it checks.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::tar_import(data);
});
