//! File attributes shared by every format and every tree reader and writer:
//! [`Timespec`] and [`Meta`] (mode, owner, times, device number, xattrs).
//! The inode record ([`super::inode`]) stores exactly these fields.

/// A point in time: seconds since the Unix epoch plus nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Whole seconds since 1970-01-01 00:00:00 UTC (negative before it).
    pub sec: i64,
    /// Nanoseconds, always below 1 000 000 000.
    pub nsec: u32,
}

/// Inode metadata carried with every entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Full `st_mode`: file type bits (`S_IFREG` etc.) and the 12 permission bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last access time.
    pub atime: Timespec,
    /// Last modification time.
    pub mtime: Timespec,
    /// Last status change time.
    pub ctime: Timespec,
    /// Device number of a char/block device (Linux `dev_t`, see `libc::makedev`); 0 otherwise.
    pub rdev: u64,
    /// Extended attributes as (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}
