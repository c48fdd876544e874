//! Plaintext file trees, in and out: a directory tree ([`walk`]) or a tar
//! stream ([`tar`]) turned into a stream of [`SourceEntry`]s handed to an
//! [`EntrySink`], and the [`write`] side that puts a tree onto the local
//! filesystem. Format-independent: the cryptimg builder and extractor use it,
//! and so can any other format.
//!
//! Both readers stream file contents (nothing reads a whole file into memory)
//! and keep names as raw bytes, so non-UTF-8 names survive unchanged.
//!
//! The tar reader is written on top of the block layout of [`::tar::Header`]
//! rather than `tar::Entries`, because `Entries` reads GNU long names and pax
//! headers of any declared size into memory, cannot parse pax records whose
//! value contains a newline (binary `SCHILY.xattr.*` values), ignores global
//! pax headers and only understands the old GNU sparse format. Here every
//! variable-sized structure is capped (see the `MAX_*` constants) and every
//! error carries the byte offset of the header it belongs to.

use std::collections::hash_map::Entry as MapEntry;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::Result;

pub mod pax;
pub mod tar;
#[cfg(test)]
mod test_sink;
#[cfg(test)]
mod tests;
pub mod walk;
pub mod write;

pub use crate::format::attrs::{Meta, Timespec};
pub use tar::read_tar;
pub use walk::{read_xattrs, walk_dir};

/// Longest path (or link target) accepted from a tar stream, in bytes.
pub const MAX_PATH: usize = 64 * 1024;
/// Largest pax extended header (one record set) accepted from a tar stream.
pub const MAX_PAX: u64 = 1024 * 1024;
/// Largest extended-attribute value accepted (the Linux limit).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Longest extended-attribute name accepted (the Linux limit).
pub const MAX_XATTR_NAME: usize = 255;
/// Most sparse-map segments accepted for one tar member.
pub const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// What an entry is, with the data each kind needs.
pub enum SourceKind<'a> {
    /// A directory.
    Dir,
    /// A regular file. `content` yields exactly `size` bytes: the full logical contents, holes read as zeros.
    File {
        /// Logical size in bytes.
        size: u64,
        /// The contents; reading past `size` yields EOF, a short source is an
        /// error. [`FileData::run`] tells where holes are, so a consumer can
        /// skip them instead of reading zeros.
        content: &'a mut dyn FileData,
    },
    /// A symbolic link.
    Symlink {
        /// The raw target bytes, exactly as stored.
        target: Vec<u8>,
    },
    /// A hard link to an earlier entry's path (components).
    HardLink {
        /// Name components of the earlier entry, from the root.
        target: Vec<Vec<u8>>,
    },
    /// FIFO, char/block device, or socket: the type is in meta.mode, the device number in meta.rdev.
    Special,
}

pub use filedata::{FileData, Run};

/// One entry of a source tree.
pub struct SourceEntry<'a> {
    /// Name components from the root; the root directory itself has an empty path.
    pub path: Vec<Vec<u8>>,
    /// Inode metadata.
    pub meta: Meta,
    /// Type and type-specific data.
    pub kind: SourceKind<'a>,
}

/// Receives the entries of a source, one at a time, in source order.
pub trait EntrySink {
    /// Handles one entry. For files, `content` is only valid during this call.
    fn entry(&mut self, e: SourceEntry<'_>) -> Result<()>;
}

// ---------------------------------------------------------------------------
// Small shared helpers (also used by `write`).

/// Joins name components below `root`.
pub(crate) fn join_components(root: &Path, path: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(path.iter().map(|c| OsStr::from_bytes(c)));
    p
}

/// Lossy, human-readable form of a component path.
pub(crate) fn display_components(path: &[Vec<u8>]) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let joined: Vec<u8> = path.join(&b'/');
    String::from_utf8_lossy(&joined).into_owned()
}

/// File contents as a reader: data `segments` (logical offset, length) read
/// in order from `inner`, zeros in between, exactly `size` bytes in total.
/// Running out of `inner` early is an `UnexpectedEof` error.
pub(crate) struct Content<R> {
    pub(crate) inner: R,
    pub(crate) segments: Vec<(u64, u64)>,
    pub(crate) next: usize,
    pub(crate) pos: u64,
    pub(crate) size: u64,
}

impl<R: Read> Content<R> {
    /// Steps `next` past the segments that end at or before the position.
    fn settle(&mut self) {
        while let Some(&(off, len)) = self.segments.get(self.next) {
            if self.pos < off + len {
                break;
            }
            self.next += 1;
        }
    }
}

impl<R: Read> FileData for Content<R> {
    fn run(&mut self) -> io::Result<Run> {
        self.settle();
        Ok(match self.segments.get(self.next) {
            Some(&(off, len)) if self.pos >= off => Run::Data { end: off + len },
            Some(&(off, _)) => Run::Hole { end: off },
            None => Run::Hole { end: self.size },
        })
    }

    fn skip_hole(&mut self, to: u64) -> io::Result<()> {
        let run = self.run()?;
        filedata::skip_in_hole(run, &mut self.pos, to)
    }
}

impl<R: Read> Read for Content<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.segments.get(self.next) {
            if self.pos < off + len {
                break;
            }
            self.next += 1;
        }
        let (data, until) = match self.segments.get(self.next) {
            Some(&(off, len)) if self.pos >= off => (true, off + len),
            Some(&(off, _)) => (false, off),
            None => (false, self.size),
        };
        let want = usize::try_from(until - self.pos).map_or(buf.len(), |n| n.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = if data {
            match self.inner.read(&mut buf[..want])? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "data ended before the recorded file size",
                    ))
                }
                n => n,
            }
        } else {
            buf[..want].fill(0);
            want
        };
        self.pos += n as u64;
        Ok(n)
    }
}
