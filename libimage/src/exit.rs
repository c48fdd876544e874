//! The exit codes of every cryptimg tool: one table, the fsck bitmask of
//! util-linux `exitcodes.h` (README "Exit codes" lists it for users).
//! `fsck-crypt check` combines [`FIXED`] and [`UNCORRECTED`] (5).

use crate::error::Error;

/// Success; for `check`: clean.
pub const OK: i32 = 0;
/// `check`: clean (the same as [`OK`]).
pub const CLEAN: i32 = OK;
/// `check --repair`: errors were found and fixed.
pub const FIXED: i32 = 1;
/// Corrupt input (image, tar or backup bytes).
pub const CORRUPT: i32 = 4;
/// `check`: errors or warnings left uncorrected (the same bit as [`CORRUPT`]).
pub const UNCORRECTED: i32 = CORRUPT;
/// Operational error: I/O, refused request, no space, image in use.
pub const OPERATIONAL: i32 = 8;
/// A key problem, not damage: a needed key was not given, or (for `check`)
/// a given key matches nothing in the image. A bit of its own beside the
/// fsck bits (util-linux uses 1, 2, 4, 8, 16, 32 and 128).
pub const KEY: i32 = 64;
/// Usage error: bad flags or arguments.
pub const USAGE: i32 = 16;

/// The exit code for a libimage error.
pub fn for_error(e: &Error) -> i32 {
    if e.is_corruption() {
        CORRUPT
    } else if matches!(e, Error::WrongKey { .. }) {
        KEY
    } else {
        OPERATIONAL
    }
}

/// The exit code of `fsck-crypt check` (both formats) from its findings:
/// errors or warnings left are [`UNCORRECTED`]; a given key that matches
/// nothing is a key problem ([`KEY`]), not damage; with damage too it may be
/// the damage's doing (a context's key id flipped), and damage wins.
pub fn for_findings(findings: &[crate::finding::Finding]) -> i32 {
    use crate::finding::{Code, Severity};
    let problems = findings.iter().filter(|f| f.severity != Severity::Info);
    let (key, other) = problems.fold((0, 0), |(k, o), f| if f.code == Code::KeyUnused { (k + 1, o) } else { (k, o + 1) });
    if other > 0 {
        UNCORRECTED
    } else if key > 0 {
        KEY
    } else {
        CLEAN
    }
}
