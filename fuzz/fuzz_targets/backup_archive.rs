//! The backup archive reader on arbitrary bytes: `verify_backup` (which runs
//! the strict `scan` reader over every member) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libimage::ops::backup::verify_backup;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let _ = verify_backup(&mut input, &[]);
});
