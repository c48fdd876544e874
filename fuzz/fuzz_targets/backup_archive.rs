//! Fuzz target `backup_archive`: see `drivers::backup_archive` for what it checks.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::backup_archive(data);
});
