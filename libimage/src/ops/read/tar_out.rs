//! `fsck-crypt extract IMAGE -`: the selection as a POSIX pax tar stream
//! that GNU tar, bsdtar and Python's `tarfile` extract with every attribute
//! the image keeps.
//!
//! Each member is an `x` extended header and a ustar header (encoding shared
//! with the backup archives, [`crate::tree::pax`]), then the data padded to
//! 512 bytes; two zero blocks end the stream. The `x` header carries:
//! - `mtime` and `atime` with nanoseconds (`SEC.NNNNNNNNN`, negative times as
//!   POSIX writes them, e.g. `-1.5`);
//! - `path` and `linkpath` when longer than the 100-byte ustar fields, and
//!   `hdrcharset=BINARY` when either is not UTF-8 (names are raw bytes);
//! - `uid`, `gid` and `size` when too large for the octal fields;
//! - every extended attribute as `SCHILY.xattr.NAME=VALUE` (GNU tar and
//!   bsdtar both read these; values are raw bytes).
//!
//! Owners are numeric: `uname` and `gname` stay empty, so extraction as root
//! (`tar -xpf - --numeric-owner` or not) keeps the image's uid and gid.
//! Hard links are typeflag `1` members naming the first name of the inode in
//! the stream; sockets have no tar form and are skipped (counted).
//!
//! The writer, [`PaxStream`], takes neutral entries (a path, a [`Meta`],
//! file data as ordered runs), so the ext4 reader's `extract -` uses it too;
//! [`TarSink`] adapts it to the cryptimg snapshot walk.

use std::io::Write;

use crate::error::{Error, Result};
use crate::format::attrs::Meta;
use crate::format::inode::Inode;
use crate::tree::pax::{octal_max, padding, push_record, Ustar, ZERO_BLOCK};
use crate::tree::write::WriteStats;

use super::cat::write_ordered;
use super::select::Sink;
use super::TreeReader;

const S_IFMT: u32 = 0o170_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFIFO: u32 = 0o010_000;

/// Linux `major()` of a `dev_t` (glibc's `gnu_dev_major` encoding).
fn dev_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000)
}

/// Linux `minor()` of a `dev_t`.
fn dev_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & 0xffff_ff00)
}

/// A pax time value: seconds, a dot and nine digits of nanoseconds. POSIX
/// reads `-1.5` as 1.5 s before the epoch, so negative times count the
/// fraction away from zero.
pub fn pax_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        let whole = (sec + 1).unsigned_abs();
        format!("-{whole}.{:09}", 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// A pax tar stream over neutral entries: a path (one name per component,
/// the root empty), its [`Meta`], and for a regular file its data as ordered
/// `(offset, bytes)` runs. Both formats' `extract -` write through it: the
/// cryptimg snapshot walk ([`TarSink`]) and the ext4 reader
/// (`ops::ext4::extract`).
pub struct PaxStream<W: Write> {
    out: W,
    /// What went in: files, dirs, symlinks, specials, hard links, skipped.
    pub stats: WriteStats,
}

/// Feeds a file's data: calls its argument with `(byte offset, bytes)` runs
/// in increasing offset order (holes are the gaps between runs).
pub type Feed<'a> = dyn FnMut(&mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> + 'a;

impl<W: Write> PaxStream<W> {
    pub fn new(out: W) -> Self {
        PaxStream {
            out,
            stats: WriteStats::default(),
        }
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::io("writing the tar stream", e))
    }

    /// The member name of `path`: `/`-joined; directories end in `/`, and the
    /// root is `./`.
    fn name(path: &[Vec<u8>], dir: bool) -> Vec<u8> {
        if path.is_empty() {
            return b"./".to_vec();
        }
        let mut n = path.join(&b'/');
        if dir {
            n.push(b'/');
        }
        n
    }

    /// Writes one member's `x` header and ustar header.
    fn header(&mut self, path: &[u8], typeflag: u8, m: &Meta, size: u64, link: &[u8]) -> Result<()> {
        let mut rec = Vec::new();
        let binary = std::str::from_utf8(path).is_err() || std::str::from_utf8(link).is_err();
        if binary {
            push_record(&mut rec, b"hdrcharset", b"BINARY");
        }
        if path.len() > 100 {
            push_record(&mut rec, b"path", path);
        }
        if link.len() > 100 {
            push_record(&mut rec, b"linkpath", link);
        }
        push_record(&mut rec, b"mtime", pax_time(m.mtime.sec, m.mtime.nsec).as_bytes());
        push_record(&mut rec, b"atime", pax_time(m.atime.sec, m.atime.nsec).as_bytes());
        for (key, v, width) in [
            (&b"uid"[..], u64::from(m.uid), 8),
            (b"gid", u64::from(m.gid), 8),
            (b"size", size, 12),
        ] {
            if v > octal_max(width) {
                push_record(&mut rec, key, v.to_string().as_bytes());
            }
        }
        // Hard links carry no xattrs of their own: tar applies the first name's.
        if typeflag != b'1' {
            for (k, v) in &m.xattrs {
                if k.contains(&b'=') || k.contains(&0) {
                    return Err(Error::Invalid(format!(
                        "extended attribute {:?} of {} has a name a pax record cannot hold ('=' or NUL)",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(path)
                    )));
                }
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(k);
                push_record(&mut rec, &key, v);
            }
        }
        let base = path.rsplit(|&b| b == b'/').find(|c| !c.is_empty()).unwrap_or(b".");
        let mut xname = b"PaxHeaders/".to_vec();
        xname.extend_from_slice(&base[..base.len().min(100 - xname.len())]);
        let x = Ustar {
            name: xname,
            mode: 0o644,
            size: rec.len() as u64,
            mtime: m.mtime.sec,
            typeflag: b'x',
            ..Default::default()
        };
        self.raw(&x.encode())?;
        rec.resize(rec.len() + padding(rec.len() as u64), 0);
        self.raw(&rec)?;
        let h = Ustar {
            name: if path.len() > 100 { path[..100].to_vec() } else { path.to_vec() },
            mode: m.mode & 0o7777,
            uid: u64::from(m.uid),
            gid: u64::from(m.gid),
            size,
            mtime: m.mtime.sec,
            typeflag,
            linkname: link[..link.len().min(100)].to_vec(),
            devmajor: dev_major(m.rdev),
            devminor: dev_minor(m.rdev),
        };
        self.raw(&h.encode())
    }

    /// A directory (the root is the empty path).
    pub fn dir(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()> {
        self.header(&Self::name(path, true), b'5', m, 0, b"")?;
        self.stats.dirs += 1;
        Ok(())
    }

    /// A regular file of `size` bytes whose data `feed` hands over (holes as
    /// zeros; bytes past `size` are dropped, so the member always holds
    /// exactly `size` bytes).
    pub fn file(&mut self, path: &[Vec<u8>], m: &Meta, size: u64, feed: &mut Feed<'_>) -> Result<()> {
        let name = Self::name(path, false);
        self.header(&name, b'0', m, size, b"")?;
        let what = format!("{} into the tar stream", String::from_utf8_lossy(&name));
        write_ordered(&mut self.out, size, feed, &what)?;
        self.raw(&ZERO_BLOCK[..padding(size)])?;
        self.stats.files += 1;
        Ok(())
    }

    /// Another name of the entry already written as `first`.
    pub fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], m: &Meta) -> Result<()> {
        self.header(&Self::name(path, false), b'1', m, 0, &Self::name(first, false))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// A symbolic link with its (plaintext) target.
    pub fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], m: &Meta) -> Result<()> {
        self.header(&Self::name(path, false), b'2', m, 0, target)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A FIFO or device node; a socket has no tar form and is counted as skipped.
    pub fn special(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()> {
        let typeflag = match m.mode & S_IFMT {
            S_IFCHR => b'3',
            S_IFBLK => b'4',
            S_IFIFO => b'6',
            _ => {
                self.stats.skipped += 1;
                return Ok(());
            }
        };
        self.header(&Self::name(path, false), typeflag, m, 0, b"")?;
        self.stats.specials += 1;
        Ok(())
    }

    /// Ends the archive (two zero blocks), flushes, and returns the writer.
    pub fn finish(mut self) -> Result<(W, WriteStats)> {
        self.raw(&ZERO_BLOCK)?;
        self.raw(&ZERO_BLOCK)?;
        self.out.flush().map_err(|e| Error::io("writing the tar stream", e))?;
        Ok((self.out, self.stats))
    }
}

/// Writes the cryptimg selection walk ([`super::select::walk`]) as a pax stream.
pub struct TarSink<W: Write>(PaxStream<W>);

impl<W: Write> TarSink<W> {
    pub fn new(out: W) -> Self {
        TarSink(PaxStream::new(out))
    }

    /// Ends the archive (two zero blocks), flushes, and returns the writer.
    pub fn finish(self) -> Result<(W, WriteStats)> {
        self.0.finish()
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, path: &[Vec<u8>], inode: &Inode) -> Result<()> {
        self.0.dir(path, &inode.meta())
    }

    fn file(&mut self, r: &TreeReader<'_>, path: &[Vec<u8>], inode: &Inode) -> Result<()> {
        self.0.file(path, &inode.meta(), inode.size, &mut |put| r.read_file(inode.ino, put))
    }

    fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], inode: &Inode) -> Result<()> {
        self.0.hard_link(path, first, &inode.meta())
    }

    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], inode: &Inode) -> Result<()> {
        self.0.symlink(path, target, &inode.meta())
    }

    fn special(&mut self, path: &[Vec<u8>], inode: &Inode) -> Result<()> {
        self.0.special(path, &inode.meta())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(1_700_000_000, 5), "1700000000.000000005");
        assert_eq!(pax_time(0, 0), "0.000000000");
        assert_eq!(pax_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(pax_time(-1, 999_999_999), "-0.000000001");
        assert_eq!(pax_time(-3, 0), "-3.000000000");
    }

    #[test]
    fn device_numbers() {
        // makedev(8, 1) and makedev(259, 70000) in glibc's encoding.
        let mk = |ma: u64, mi: u64| ((ma & 0xfff) << 8) | ((ma & 0xffff_f000) << 32) | (mi & 0xff) | ((mi & 0xffff_ff00) << 12);
        for (ma, mi) in [(8, 1), (259, 70_000), (4095, 255), (5000, 1 << 20)] {
            assert_eq!((dev_major(mk(ma, mi)), dev_minor(mk(ma, mi))), (ma, mi));
        }
    }
}
