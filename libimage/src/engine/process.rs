//! Process-wide settings the tools make first thing in `main`.

use std::io;

use crate::engine::atomic::remove_all_temp_files;
use crate::sys;

/// Keeps the process out of core dumps (`prctl(PR_SET_DUMPABLE, 0)`): it
/// may hold master keys in memory.
pub fn set_not_dumpable() -> io::Result<()> {
    sys::set_not_dumpable()
}

/// On SIGINT, SIGTERM or SIGHUP: removes every temporary file not yet
/// renamed into place (`engine::atomic`), then dies by that signal. Call
/// before any other thread starts: the signals are blocked in the calling
/// thread and its later children, and received by one waiting thread, so the
/// clean-up runs in ordinary code rather than in a signal handler.
pub fn remove_temp_files_on_signals() -> io::Result<()> {
    let set = sys::block_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = sys::wait_signal(&set) {
                let _held = remove_all_temp_files();
                sys::die_by_signal(sig);
            }
        })
        .map(drop)
}

/// A write to a closed pipe ends the process by SIGPIPE, quietly, as it does
/// coreutils (shell status 141), instead of failing with `EPIPE`.
pub fn default_sigpipe() {
    sys::default_sigpipe()
}

/// Whether the process may dump core (false after [`set_not_dumpable`]).
pub fn is_dumpable() -> io::Result<bool> {
    sys::is_dumpable()
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_dumpable_after_set() {
        super::set_not_dumpable().unwrap();
        assert!(!super::is_dumpable().unwrap());
    }
}
