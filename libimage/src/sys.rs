//! Every libc call of libimage, and so every `unsafe` block: extended
//! attributes, file times, FIFOs and device nodes, and the effective uid.
//! Each wrapper takes checked C strings and buffers and returns `io::Result`.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::attrs::Timespec;

/// Converts a path into a NUL-terminated C string for libc calls.
pub fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Invalid(format!("path {} contains a NUL byte", p.display())))
}

/// Turns a libc return value (negative = failure, errno set) into a `Result`.
fn check_ret<T>(ret: T) -> io::Result<usize>
where
    usize: TryFrom<T>,
{
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

pub fn llistxattr(p: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `p` is a valid NUL-terminated string; `buf` is valid for writes
    // of `buf.len()` bytes (for length 0 the kernel writes nothing).
    check_ret(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn lgetxattr(p: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `p` and `name` are valid NUL-terminated strings; `buf` is valid
    // for writes of `buf.len()` bytes (for length 0 the kernel writes nothing).
    check_ret(unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// True when the process runs with effective uid 0 (what `as_root` needs).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sets an extended attribute on `p` itself (not following a final symlink).
pub fn set_xattr(p: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `p` and `name` are valid NUL-terminated strings; `value` is
    // valid for reads of `value.len()` bytes.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check_ret(r).map(drop)
}

/// Sets access and modification times of `p` itself, to the nanosecond.
pub fn set_times(p: &CStr, atime: Timespec, mtime: Timespec) -> io::Result<()> {
    let ts = |t: Timespec| libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec as libc::c_long,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: `p` is a valid NUL-terminated string; `times` is an array of
    // exactly the two timespecs utimensat reads.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    check_ret(r).map(drop)
}

/// Creates a FIFO.
pub fn mkfifo(p: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `p` is a valid NUL-terminated string.
    let r = unsafe { libc::mkfifo(p.as_ptr(), mode) };
    check_ret(r).map(drop)
}

pub fn mknod(p: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: `p` is a valid NUL-terminated string.
    let r = unsafe { libc::mknod(p.as_ptr(), mode, dev) };
    check_ret(r).map(drop)
}

/// Where data or a hole begins at or after `off` in `file` (`lseek` with
/// `SEEK_DATA` when `data`, else `SEEK_HOLE`); `None` (ENXIO) when `off` is
/// at or past the end, or only a hole follows (`SEEK_DATA`). Filesystems
/// without hole reporting answer "data at `off`, hole at the end", which is
/// correct and merely slow for sparse files.
pub fn seek_data_or_hole(file: &std::fs::File, off: u64, data: bool) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    let off = libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let whence = if data { libc::SEEK_DATA } else { libc::SEEK_HOLE };
    // SAFETY: lseek on a descriptor the `File` keeps open; no memory is passed.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

/// Keeps this process out of core dumps and `ptrace` by unprivileged
/// processes (`prctl(PR_SET_DUMPABLE, 0)`): it holds master keys.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; no memory is passed.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check_ret(r).map(drop)
}

/// A set of signals, blocked in the calling thread (and so in every thread
/// it starts later) by [`block_signals`], to be received by [`wait_signal`].
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

/// Blocks `sigs` in the calling thread; threads started afterwards inherit
/// the mask, so the signals are only ever received by [`wait_signal`].
pub fn block_signals(sigs: &[libc::c_int]) -> io::Result<SignalSet> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given a valid pointer to.
    check_ret(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    // SAFETY: initialised by sigemptyset just above.
    let mut set = unsafe { set.assume_init() };
    for &s in sigs {
        // SAFETY: `set` is an initialised sigset_t.
        check_ret(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(SignalSet(set))
}

/// Waits for one of the (blocked) signals of `set` and returns its number.
pub fn wait_signal(set: &SignalSet) -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set.0` is an initialised sigset_t; `sig` is a valid out pointer.
    let r = unsafe { libc::sigwait(&set.0, &mut sig) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(sig)
}

/// Ends the process the way `sig` would have without a handler (so the
/// parent sees "killed by SIGINT", exit status 128 + n in a shell).
pub fn die_by_signal(sig: libc::c_int) -> ! {
    // SAFETY: plain libc calls with valid arguments; restoring the default
    // action, unblocking the signal in this thread and raising it there
    // terminates the process. `_exit` is the fallback should it not.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

/// Restores the default action of SIGPIPE (the Rust runtime ignores it), so
/// a write to a closed pipe ends the process quietly, as it does coreutils.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL passes no memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether the process may dump core (`prctl(PR_GET_DUMPABLE)`).
pub fn is_dumpable() -> io::Result<bool> {
    // SAFETY: PR_GET_DUMPABLE takes no argument and passes no memory.
    let r = unsafe {
        libc::prctl(
            libc::PR_GET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check_ret(r).map(|v| v != 0)
}
/// Deallocates `len` bytes at `offset` of `f` (`fallocate(2)` with
/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`): the range reads as zeros
/// afterwards and the file keeps its length. Fails with `EOPNOTSUPP` on file
/// systems without hole punching.
pub fn punch_hole(f: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: the descriptor is owned by `f`, which outlives the call;
    // fallocate takes no pointers.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len) };
    check_ret(r).map(drop)
}
