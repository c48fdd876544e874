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
