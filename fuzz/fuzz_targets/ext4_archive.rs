//! Fuzz target `ext4_archive`: see `drivers::ext4_archive` for what it checks.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::ext4_archive(data);
});
