//! The input side: a directory tree or a tar stream, turned into a stream of
//! [`SourceEntry`]s handed to an [`EntrySink`].
//!
//! Both readers stream file contents (nothing reads a whole file into memory)
//! and keep names as raw bytes, so non-UTF-8 names survive unchanged.
//!
//! The tar reader is written on top of the block layout of [`tar::Header`]
//! rather than `tar::Entries`, because `Entries` reads GNU long names and pax
//! headers of any declared size into memory, cannot parse pax records whose
//! value contains a newline (binary `SCHILY.xattr.*` values), ignores global
//! pax headers and only understands the old GNU sparse format. Here every
//! variable-sized structure is capped (see the `MAX_*` constants) and every
//! error carries the byte offset of the header it belongs to.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{CorruptKind, Error, Result};

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

/// What an entry is, with the data each kind needs.
pub enum SourceKind<'a> {
    /// A directory.
    Dir,
    /// A regular file. `content` yields exactly `size` bytes: the full logical contents, holes read as zeros.
    File {
        /// Logical size in bytes.
        size: u64,
        /// The contents; reading past `size` yields EOF, a short source is an error.
        content: &'a mut dyn Read,
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
// Small shared helpers (also used by `fsout` and `testkit`).

/// Converts a path into a NUL-terminated C string for libc calls.
pub(crate) fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Invalid(format!("path {} contains a NUL byte", p.display())))
}

/// Turns a libc return value (negative = failure, errno set) into a `Result`.
pub(crate) fn check_ret<T>(ret: T) -> io::Result<usize>
where
    usize: TryFrom<T>,
{
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

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

fn llistxattr(p: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `p` is a valid NUL-terminated string; `buf` is valid for writes
    // of `buf.len()` bytes (for length 0 the kernel writes nothing).
    check_ret(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

fn lgetxattr(p: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `p` and `name` are valid NUL-terminated strings; `buf` is valid
    // for writes of `buf.len()` bytes (for length 0 the kernel writes nothing).
    check_ret(unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Runs a size-query-then-fetch syscall pair (`*listxattr`, `*getxattr`),
/// retrying when the value grows in between.
fn fetch_sized(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let mut buf = vec![0u8; f(&mut [])?];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

/// Reads all extended attributes of `p` (not following a final symlink) that
/// this process may read, sorted by name. A filesystem without xattr support
/// yields an empty list.
pub(crate) fn read_xattrs(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let cp = c_path(p)?;
    let ctx = || format!("reading extended attributes of {}", p.display());
    let names = match fetch_sized(|b| llistxattr(&cp, b)) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(ctx(), e)),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| Error::Invalid(ctx()))?;
        match fetch_sized(|b| lgetxattr(&cp, &cname, b)) {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed meanwhile, or a namespace we may list but not read.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENODATA | libc::EPERM | libc::EACCES | libc::EOPNOTSUPP)
                ) => {}
            Err(e) => return Err(Error::io(ctx(), e)),
        }
    }
    out.sort();
    Ok(out)
}

/// File contents as a reader: data `segments` (logical offset, length) read
/// in order from `inner`, zeros in between, exactly `size` bytes in total.
/// Running out of `inner` early is an `UnexpectedEof` error.
struct Content<R> {
    inner: R,
    segments: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    size: u64,
}

impl<R: Read> Content<R> {
    fn dense(inner: R, size: u64) -> Self {
        Content {
            inner,
            segments: vec![(0, size)],
            next: 0,
            pos: 0,
            size,
        }
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

// ---------------------------------------------------------------------------
// Directory walk.

/// Walk a directory tree: root first, then depth-first, children sorted by name
/// bytes (deterministic). Symlinks are not followed (except that a `root` which
/// is itself a symlink to a directory is walked). Hard links are detected by
/// (st_dev, st_ino): the first path seen is a File (or Symlink/Special), later
/// ones are HardLink. Reads every xattr the process can read. Names are raw
/// bytes. File content is streamed, never read whole into memory.
pub fn walk_dir(root: &Path, sink: &mut dyn EntrySink) -> Result<()> {
    let lst = lstat(root)?;
    let root = if lst.file_type().is_symlink() {
        root.join(".")
    } else {
        root.to_path_buf()
    };
    let st = lstat(&root)?;
    if !st.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", root.display())));
    }
    let mut walker = Walker {
        sink,
        links: HashMap::new(),
        comps: Vec::new(),
    };
    walker.visit(&root, &st)
}

fn lstat(p: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(p).map_err(|e| Error::io(format!("stat {}", p.display()), e))
}

fn timespec(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        sec,
        nsec: nsec.clamp(0, 999_999_999) as u32,
    }
}

/// The first path of a multiply-linked inode, and how many names remain.
struct PendingLinks {
    first: Vec<Vec<u8>>,
    remaining: u64,
}

struct Walker<'s> {
    sink: &'s mut dyn EntrySink,
    /// Inodes with more links still to be seen, by (st_dev, st_ino).
    links: HashMap<(u64, u64), PendingLinks>,
    comps: Vec<Vec<u8>>,
}

impl Walker<'_> {
    fn visit(&mut self, path: &Path, st: &fs::Metadata) -> Result<()> {
        let ft = st.file_type();
        let meta = Meta {
            mode: st.mode(),
            uid: st.uid(),
            gid: st.gid(),
            atime: timespec(st.atime(), st.atime_nsec()),
            mtime: timespec(st.mtime(), st.mtime_nsec()),
            ctime: timespec(st.ctime(), st.ctime_nsec()),
            rdev: if ft.is_dir() || ft.is_file() || ft.is_symlink() {
                0
            } else {
                st.rdev()
            },
            xattrs: read_xattrs(path)?,
        };
        let path_comps = self.comps.clone();
        if !ft.is_dir() && st.nlink() > 1 {
            match self.links.entry((st.dev(), st.ino())) {
                MapEntry::Occupied(mut o) => {
                    let target = o.get().first.clone();
                    o.get_mut().remaining -= 1;
                    if o.get().remaining == 0 {
                        o.remove();
                    }
                    let kind = SourceKind::HardLink { target };
                    return self.emit(path_comps, meta, kind);
                }
                MapEntry::Vacant(v) => {
                    v.insert(PendingLinks {
                        first: path_comps.clone(),
                        remaining: st.nlink() - 1,
                    });
                }
            }
        }
        if ft.is_dir() {
            self.emit(path_comps, meta, SourceKind::Dir)?;
            let ctx = || format!("reading directory {}", path.display());
            let mut names = Vec::new();
            for de in fs::read_dir(path).map_err(|e| Error::io(ctx(), e))? {
                names.push(de.map_err(|e| Error::io(ctx(), e))?.file_name().into_vec());
            }
            names.sort_unstable();
            for name in names {
                let child = path.join(OsStr::from_bytes(&name));
                let cst = lstat(&child)?;
                self.comps.push(name);
                let r = self.visit(&child, &cst);
                self.comps.pop();
                r?;
            }
            Ok(())
        } else if ft.is_file() {
            let ctx = || format!("reading {}", path.display());
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| Error::io(ctx(), e))?;
            let fst = file.metadata().map_err(|e| Error::io(ctx(), e))?;
            if (fst.dev(), fst.ino()) != (st.dev(), st.ino()) || !fst.is_file() {
                return Err(Error::io(ctx(), io::Error::other("file was replaced during the walk")));
            }
            let size = fst.len();
            let mut content = Content::dense(file, size);
            let kind = SourceKind::File {
                size,
                content: &mut content,
            };
            self.emit(path_comps, meta, kind)
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| Error::io(format!("reading symlink {}", path.display()), e))?;
            let target = target.into_os_string().into_vec();
            self.emit(path_comps, meta, SourceKind::Symlink { target })
        } else {
            self.emit(path_comps, meta, SourceKind::Special)
        }
    }

    fn emit(&mut self, path: Vec<Vec<u8>>, meta: Meta, kind: SourceKind<'_>) -> Result<()> {
        self.sink.entry(SourceEntry { path, meta, kind })
    }
}

// ---------------------------------------------------------------------------
// Tar reader.

const BLOCK: u64 = 512;
/// At most this much input is read (and discarded) after the end-of-archive
/// marker, so a writer piping a blocked archive into us does not get EPIPE.
const MAX_TRAILER: u64 = 1024 * 1024;

fn round_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|n| n & !(BLOCK - 1))
}

/// Tracks the byte position in the archive and whether the input hit EOF.
struct TarStream<'r> {
    inner: &'r mut dyn Read,
    pos: u64,
    hit_eof: bool,
}

impl Read for TarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn truncated(needed: u64, available: u64, what: impl Into<String>, at: u64) -> Error {
    Error::corrupt(CorruptKind::Truncated { needed, available }, what, Some(at))
}

fn malformed(why: &'static str, what: impl Into<String>, at: u64) -> Error {
    Error::corrupt(CorruptKind::Other(why), what, Some(at))
}

fn too_big(field: &'static str, value: u64, max: u64, at: u64) -> Error {
    Error::corrupt(CorruptKind::OutOfRange { field, value, max }, "tar header", Some(at))
}

impl TarStream<'_> {
    /// Reads until `buf` is full or EOF; returns the number of bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading tar stream", e)),
            }
        }
        Ok(got)
    }

    /// Reads exactly `n` bytes (the caller checked `n` against a cap).
    fn read_vec(&mut self, n: u64, what: &str, at: u64) -> Result<Vec<u8>> {
        let mut v = vec![0u8; usize::try_from(n).map_err(|_| too_big("size", n, 0, at))?];
        let got = self.fill(&mut v)?;
        if got < v.len() {
            return Err(truncated(n, got as u64, what, at));
        }
        Ok(v)
    }

    /// Reads and discards input up to archive position `end`.
    fn skip_to(&mut self, end: u64, what: &str, at: u64) -> Result<()> {
        let want = end.saturating_sub(self.pos);
        let got = io::copy(&mut self.take(want), &mut io::sink()).map_err(|e| Error::io("reading tar stream", e))?;
        if got < want {
            return Err(truncated(want, got, what, at));
        }
        Ok(())
    }
}

/// Parses a numeric header field: octal text, or GNU base-256 (first byte
/// 0x80 positive, 0xff negative two's complement).
fn header_num(field: &[u8], name: &'static str, at: u64) -> Result<i64> {
    let bad = || malformed("malformed numeric field", format!("tar header field {name}"), at);
    match field.first() {
        Some(&b) if b & 0x80 != 0 => {
            let mut v: i128 = if b == 0xff { -1 } else { i128::from(b & 0x7f) };
            for &x in &field[1..] {
                v = v.checked_mul(256).ok_or_else(bad)? | i128::from(x);
            }
            i64::try_from(v).map_err(|_| bad())
        }
        _ => {
            let text = field.trim_ascii_start();
            let end = text.iter().position(|&c| c == 0 || c == b' ').unwrap_or(text.len());
            if text[end..].iter().any(|&c| c != 0 && c != b' ') {
                return Err(bad());
            }
            text[..end].iter().try_fold(0i64, |acc, &c| {
                if !(b'0'..=b'7').contains(&c) {
                    return Err(bad());
                }
                acc.checked_mul(8).and_then(|a| a.checked_add(i64::from(c - b'0'))).ok_or_else(bad)
            })
        }
    }
}

fn header_u64(field: &[u8], name: &'static str, at: u64) -> Result<u64> {
    let v = header_num(field, name, at)?;
    u64::try_from(v).map_err(|_| malformed("negative value", format!("tar header field {name}"), at))
}

fn to_u32(v: u64, field: &'static str, at: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| too_big(field, v, u32::MAX.into(), at))
}

/// Parses a pax decimal number.
fn pax_u64(v: &[u8], field: &'static str, at: u64) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("malformed pax number", format!("pax record {field}"), at))
}

/// Parses a pax time: `[-]seconds[.fraction]`.
fn pax_time(v: &[u8], field: &'static str, at: u64) -> Result<Timespec> {
    let bad = || malformed("malformed pax time", format!("pax record {field}"), at);
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = match v.iter().position(|&c| c == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let sec: i64 = std::str::from_utf8(int).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut nsec = 0u32;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |&d| u32::from(d - b'0'));
    }
    Ok(match (neg, nsec) {
        (false, _) => Timespec { sec, nsec },
        (true, 0) => Timespec { sec: -sec, nsec },
        (true, _) => Timespec {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        },
    })
}

/// Attributes collected from pax extended headers (global ones, then the
/// member's own on top).
#[derive(Clone, Default)]
struct PaxAttrs {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    atime: Option<Timespec>,
    mtime: Option<Timespec>,
    ctime: Option<Timespec>,
    devmajor: Option<u64>,
    devminor: Option<u64>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    xattr_bytes: usize,
    sparse_major: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_realsize: Option<u64>,
    /// Flat offset/length list of pax sparse formats 0.0 and 0.1.
    sparse_map: Vec<u64>,
}

impl PaxAttrs {
    /// Applies the records of one pax extended header.
    fn apply(&mut self, data: &[u8], at: u64) -> Result<()> {
        let bad = || malformed("malformed pax record", "tar pax extended header", at);
        let mut rest = data;
        while !rest.is_empty() && rest.iter().any(|&b| b != 0) {
            let sp = rest.iter().take(21).position(|&b| b == b' ').ok_or_else(bad)?;
            let len = pax_u64(&rest[..sp], "length", at)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l > sp + 1 && l <= rest.len())
                .ok_or_else(bad)?;
            let record = rest[sp + 1..len].strip_suffix(b"\n").ok_or_else(bad)?;
            rest = &rest[len..];
            let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
            self.set(&record[..eq], &record[eq + 1..], at)?;
        }
        Ok(())
    }

    fn set(&mut self, key: &[u8], v: &[u8], at: u64) -> Result<()> {
        // An empty value removes a setting (POSIX), except for xattrs where
        // an empty value is a legitimate attribute value.
        let bytes = || (!v.is_empty()).then(|| v.to_vec());
        let num = |f| -> Result<Option<u64>> {
            if v.is_empty() {
                Ok(None)
            } else {
                pax_u64(v, f, at).map(Some)
            }
        };
        let time = |f| -> Result<Option<Timespec>> {
            if v.is_empty() {
                Ok(None)
            } else {
                pax_time(v, f, at).map(Some)
            }
        };
        match key {
            b"path" => self.path = bytes(),
            b"linkpath" => self.linkpath = bytes(),
            b"size" => self.size = num("size")?,
            b"uid" => self.uid = num("uid")?,
            b"gid" => self.gid = num("gid")?,
            b"atime" => self.atime = time("atime")?,
            b"mtime" => self.mtime = time("mtime")?,
            b"ctime" => self.ctime = time("ctime")?,
            b"SCHILY.devmajor" => self.devmajor = num("SCHILY.devmajor")?,
            b"SCHILY.devminor" => self.devminor = num("SCHILY.devminor")?,
            b"GNU.sparse.major" => self.sparse_major = num("GNU.sparse.major")?,
            b"GNU.sparse.name" => self.sparse_name = bytes(),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.sparse_realsize = num("GNU.sparse.realsize")?,
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                self.sparse_map.push(pax_u64(v, "GNU.sparse.offset", at)?);
            }
            b"GNU.sparse.map" => {
                self.sparse_map.clear();
                if !v.is_empty() {
                    for n in v.split(|&b| b == b',') {
                        self.sparse_map.push(pax_u64(n, "GNU.sparse.map", at)?);
                    }
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.set_xattr(name, v, at)?;
                }
            }
        }
        Ok(())
    }

    /// Drops what only makes sense for one member (after a global header).
    fn forget_member_fields(&mut self) {
        self.path = None;
        self.linkpath = None;
        self.size = None;
        self.sparse_major = None;
        self.sparse_name = None;
        self.sparse_realsize = None;
        self.sparse_map.clear();
    }

    fn set_xattr(&mut self, name: &[u8], v: &[u8], at: u64) -> Result<()> {
        if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
            return Err(malformed("bad xattr name", "tar pax extended header", at));
        }
        if v.len() > MAX_XATTR_VALUE {
            return Err(too_big("xattr value length", v.len() as u64, MAX_XATTR_VALUE as u64, at));
        }
        self.xattr_bytes += name.len() + v.len();
        if let Some(old) = self.xattrs.insert(name.to_vec(), v.to_vec()) {
            self.xattr_bytes -= name.len() + old.len();
        }
        if self.xattr_bytes as u64 > MAX_PAX {
            return Err(too_big("total xattr bytes", self.xattr_bytes as u64, MAX_PAX, at));
        }
        Ok(())
    }
}

/// Splits a tar path into components: empty and "." components are dropped
/// (so leading "/" and "./" disappear), ".." is rejected.
fn normalize(raw: &[u8], at: u64) -> Result<Vec<Vec<u8>>> {
    if raw.len() > MAX_PATH {
        return Err(too_big("path length", raw.len() as u64, MAX_PATH as u64, at));
    }
    if raw.contains(&0) {
        return Err(malformed("NUL byte in path", "tar header", at));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                let what = format!("tar entry {}", String::from_utf8_lossy(raw));
                return Err(malformed("path contains a '..' component", what, at));
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Start of the next header after `len` bytes of data starting at `start`.
fn block_end(start: u64, len: u64, at: u64) -> Result<u64> {
    start
        .checked_add(len)
        .and_then(round_up)
        .ok_or_else(|| too_big("size", len, u64::MAX - start, at))
}

/// Extension headers seen since the last member header.
#[derive(Default)]
struct Pending {
    pax: Option<PaxAttrs>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Read a tar stream (ustar, pax, GNU: long names/links, hard links, symlinks,
/// pax `SCHILY.xattr.*`, pax times with fractional nanoseconds, global pax
/// headers, old GNU sparse and pax sparse 0.0/0.1/1.0). Entries are passed in
/// archive order; paths are normalised (empty and "." components, hence a
/// leading "/" or "./", are dropped; ".." is rejected). Missing parent
/// directories are not synthesised. Numeric owners only (uname/gname are
/// ignored).
///
/// The archive must end with an end-of-archive (all-zero) block: a stream
/// that stops before it, inside a header or inside file data, or that has a
/// bad header checksum, is `Error::Corrupt` with the byte offset of the
/// header concerned. Up to 1 MiB after the end marker is read and ignored.
pub fn read_tar(input: &mut dyn Read, sink: &mut dyn EntrySink) -> Result<()> {
    let mut s = TarStream {
        inner: input,
        pos: 0,
        hit_eof: false,
    };
    let mut global = PaxAttrs::default();
    let mut pending = Pending::default();
    loop {
        let at = s.pos;
        let mut hdr = tar::Header::new_old();
        match s.fill(hdr.as_mut_bytes())? {
            0 => return Err(truncated(BLOCK, 0, "tar end-of-archive marker", at)),
            n if n < BLOCK as usize => return Err(truncated(BLOCK, n as u64, "tar header", at)),
            _ => {}
        }
        if hdr.as_bytes().iter().all(|&b| b == 0) {
            if pending.pax.is_some() || pending.long_name.is_some() || pending.long_link.is_some() {
                let why = "extension header not followed by a member";
                return Err(malformed(why, "tar header", at));
            }
            // The archive is complete; record padding after it is ignored.
            let _ = s.skip_to(s.pos + MAX_TRAILER, "", at);
            return Ok(());
        }
        check_checksum(&hdr, at)?;
        let size = header_u64(&hdr.as_old().size, "size", at)?;
        let flag = hdr.as_old().linkflag[0];
        if let b'L' | b'K' | b'x' | b'g' = flag {
            let max = if flag == b'x' || flag == b'g' { MAX_PAX } else { MAX_PATH as u64 };
            if size > max {
                return Err(too_big("extension header size", size, max, at));
            }
            let mut data = s.read_vec(size, "tar extension header", at)?;
            s.skip_to(block_end(s.pos, 0, at)?, "tar extension header", at)?;
            let duplicate = match flag {
                b'x' => {
                    let mut pax = global.clone();
                    pax.apply(&data, at)?;
                    pending.pax.replace(pax).is_some()
                }
                b'g' => {
                    global.apply(&data, at)?;
                    global.forget_member_fields();
                    false
                }
                _ => {
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    let slot = match flag {
                        b'L' => &mut pending.long_name,
                        _ => &mut pending.long_link,
                    };
                    slot.replace(data).is_some()
                }
            };
            if duplicate {
                let kind = CorruptKind::Duplicate("extension header for one member");
                return Err(Error::corrupt(kind, "tar header", Some(at)));
            }
            continue;
        }
        let member = Member {
            hdr: &hdr,
            flag,
            at,
            pax: pending.pax.take().unwrap_or_else(|| global.clone()),
            long_name: pending.long_name.take(),
            long_link: pending.long_link.take(),
        };
        let data_end = member.emit(&mut s, size, sink)?;
        s.skip_to(data_end, "tar member data", at)?;
    }
}

fn check_checksum(hdr: &tar::Header, at: u64) -> Result<()> {
    let stored = header_num(&hdr.as_old().cksum, "checksum", at)?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in hdr.as_bytes().iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        let what = format!("tar header (stored checksum {stored:o}, computed {unsigned:o})");
        return Err(malformed("header checksum mismatch", what, at));
    }
    Ok(())
}

/// One archive member with its extension headers.
struct Member<'h> {
    hdr: &'h tar::Header,
    flag: u8,
    at: u64,
    pax: PaxAttrs,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Member<'_> {
    fn is_pax_sparse(&self) -> bool {
        let p = &self.pax;
        p.sparse_major.is_some() || p.sparse_realsize.is_some() || !p.sparse_map.is_empty()
    }

    fn raw_path(&self) -> Vec<u8> {
        match (&self.pax.sparse_name, &self.pax.path, &self.long_name) {
            (Some(n), _, _) if self.is_pax_sparse() => n.clone(),
            (_, Some(p), _) | (_, None, Some(p)) => p.clone(),
            _ => self.hdr.path_bytes().into_owned(),
        }
    }

    fn raw_link(&self) -> Vec<u8> {
        match (&self.pax.linkpath, &self.long_link) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            _ => (self.hdr.link_name_bytes()).map_or_else(Vec::new, |c| c.into_owned()),
        }
    }

    fn meta(&self, ifmt: u32) -> Result<Meta> {
        let (old, pax, at) = (self.hdr.as_old(), &self.pax, self.at);
        let id = |pax_v: Option<u64>, field: &[u8], name| match pax_v {
            Some(v) => to_u32(v, name, at),
            None => to_u32(header_u64(field, name, at)?, name, at),
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timespec {
                sec: header_num(&old.mtime, "mtime", at)?,
                nsec: 0,
            },
        };
        let rdev = if ifmt == libc::S_IFCHR || ifmt == libc::S_IFBLK {
            let (major, minor) = match (self.hdr.as_ustar(), self.hdr.as_gnu()) {
                (Some(u), _) => (&u.dev_major, &u.dev_minor),
                (None, Some(g)) => (&g.dev_major, &g.dev_minor),
                (None, None) => (&[b'0'; 8], &[b'0'; 8]),
            };
            libc::makedev(id(pax.devmajor, major, "device major")?, id(pax.devminor, minor, "device minor")?)
        } else {
            0
        };
        Ok(Meta {
            mode: ifmt | (header_u64(&old.mode, "mode", at)? & 0o7777) as u32,
            uid: id(pax.uid, &old.uid, "uid")?,
            gid: id(pax.gid, &old.gid, "gid")?,
            atime: pax.atime.unwrap_or(mtime),
            mtime,
            ctime: pax.ctime.unwrap_or(mtime),
            rdev,
            xattrs: pax.xattrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }

    /// Builds the entry, passes it to `sink`, and returns where the member's
    /// data ends in the archive.
    fn emit(self, s: &mut TarStream<'_>, header_size: u64, sink: &mut dyn EntrySink) -> Result<u64> {
        let at = self.at;
        let size = self.pax.size.unwrap_or(header_size);
        let data_end = block_end(s.pos, size, at)?;
        if self.flag == b'V' {
            // A GNU volume label: not a file.
            return Ok(data_end);
        }
        let raw_path = self.raw_path();
        let ifmt = match self.flag {
            b'0' | 0 | b'7' if raw_path.ends_with(b"/") => libc::S_IFDIR,
            b'0' | 0 | b'7' | b'S' | b'1' => libc::S_IFREG,
            b'2' => libc::S_IFLNK,
            b'3' => libc::S_IFCHR,
            b'4' => libc::S_IFBLK,
            b'5' | b'D' => libc::S_IFDIR,
            b'6' => libc::S_IFIFO,
            other => {
                return Err(Error::Unsupported(format!(
                    "tar entry type {:?} at byte offset {at}",
                    char::from(other)
                )))
            }
        };
        let path = normalize(&raw_path, at)?;
        if path.is_empty() && ifmt != libc::S_IFDIR {
            return Err(malformed("empty path", "tar header", at));
        }
        let meta = self.meta(ifmt)?;
        let kind = match (ifmt, self.flag) {
            (libc::S_IFDIR, _) => SourceKind::Dir,
            (libc::S_IFLNK, _) => {
                let target = self.raw_link();
                if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                    return Err(malformed("bad symlink target", "tar header", at));
                }
                SourceKind::Symlink { target }
            }
            (_, b'1') => {
                let target = normalize(&self.raw_link(), at)?;
                if target.is_empty() {
                    return Err(malformed("hard link without a target", "tar header", at));
                }
                SourceKind::HardLink { target }
            }
            (libc::S_IFREG, _) => {
                return self.emit_file(s, size, data_end, sink, path, meta);
            }
            _ => SourceKind::Special,
        };
        sink.entry(SourceEntry { path, meta, kind })?;
        Ok(data_end)
    }

    /// Streams a regular (possibly sparse) file to `sink`; `size` bytes of
    /// member data end at `data_end`.
    fn emit_file(
        &self,
        s: &mut TarStream<'_>,
        size: u64,
        mut data_end: u64,
        sink: &mut dyn EntrySink,
        path: Vec<Vec<u8>>,
        meta: Meta,
    ) -> Result<u64> {
        let at = self.at;
        let (segments, logical) = if self.flag == b'S' {
            let map = gnu_sparse_map(s, self.hdr, at)?;
            data_end = block_end(s.pos, size, at)?;
            map
        } else if self.is_pax_sparse() {
            pax_sparse_map(s, &self.pax, data_end, at)?
        } else {
            (vec![(0, size)], size)
        };
        let stored: u64 = segments.iter().map(|&(_, len)| len).sum();
        if s.pos.checked_add(stored).is_none_or(|e| e > data_end) {
            let why = "sparse map lists more data than the member holds";
            return Err(malformed(why, "tar header", at));
        }
        let mut content = Content {
            inner: &mut *s,
            segments,
            next: 0,
            pos: 0,
            size: logical,
        };
        let kind = SourceKind::File {
            size: logical,
            content: &mut content,
        };
        let r = sink.entry(SourceEntry { path, meta, kind });
        if s.hit_eof {
            let what = format!("tar data of member at byte offset {at}");
            return Err(truncated(data_end - at, s.pos - at, what, at));
        }
        r.map(|()| data_end)
    }
}

/// Checks a sparse map: segments in order, not overlapping, within the size.
fn check_segments(segs: &[(u64, u64)], size: u64, at: u64) -> Result<()> {
    let mut end = 0u64;
    for &(off, len) in segs {
        match off.checked_add(len) {
            Some(e) if off >= end && e <= size => end = e,
            _ => return Err(malformed("bad sparse map", "tar header", at)),
        }
    }
    Ok(())
}

fn sparse_count_check(n: u64, at: u64) -> Result<()> {
    let max = MAX_SPARSE_SEGMENTS as u64;
    if n > max {
        return Err(too_big("sparse segments", n, max, at));
    }
    Ok(())
}

/// Reads the old GNU sparse map: 4 slots in the header plus extension blocks.
fn gnu_sparse_map(s: &mut TarStream<'_>, hdr: &tar::Header, at: u64) -> Result<(Vec<(u64, u64)>, u64)> {
    let gnu = hdr
        .as_gnu()
        .ok_or_else(|| malformed("sparse member without GNU header", "tar header", at))?;
    let real = header_u64(&gnu.realsize, "realsize", at)?;
    let mut segs = Vec::new();
    let mut push = |slots: &[tar::GnuSparseHeader]| -> Result<()> {
        for slot in slots.iter().take_while(|sl| sl.offset[0] != 0) {
            sparse_count_check(segs.len() as u64 + 1, at)?;
            segs.push((
                header_u64(&slot.offset, "sparse offset", at)?,
                header_u64(&slot.numbytes, "sparse length", at)?,
            ));
        }
        Ok(())
    };
    push(&gnu.sparse)?;
    let mut extended = gnu.is_extended();
    while extended {
        let mut ext = tar::GnuExtSparseHeader::new();
        let got = s.fill(ext.as_mut_bytes())?;
        if got < BLOCK as usize {
            return Err(truncated(BLOCK, got as u64, "GNU sparse extension", at));
        }
        push(&ext.sparse)?;
        extended = ext.is_extended();
    }
    check_segments(&segs, real, at)?;
    Ok((segs, real))
}

/// Reads the pax sparse map: from the records (0.0, 0.1) or from the blocks
/// at the start of the member data (1.0), which end before `data_end`.
fn pax_sparse_map(s: &mut TarStream<'_>, pax: &PaxAttrs, data_end: u64, at: u64) -> Result<(Vec<(u64, u64)>, u64)> {
    let real = pax
        .sparse_realsize
        .ok_or_else(|| malformed("pax sparse member without real size", "tar header", at))?;
    let segs: Vec<(u64, u64)> = match pax.sparse_major {
        Some(1) => {
            let mut map = MapReader {
                s,
                data_end,
                at,
                block: [0; BLOCK as usize],
                next: BLOCK as usize,
            };
            let n = map.number()?;
            sparse_count_check(n, at)?;
            let mut segs = Vec::new();
            for _ in 0..n {
                segs.push((map.number()?, map.number()?));
            }
            segs
        }
        Some(0) | None => {
            let pairs = pax.sparse_map.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return Err(malformed("odd pax sparse map", "tar header", at));
            }
            pairs.map(|c| (c[0], c[1])).collect()
        }
        Some(v) => return Err(Error::Unsupported(format!("pax sparse format version {v} at byte offset {at}"))),
    };
    check_segments(&segs, real, at)?;
    Ok((segs, real))
}

/// Reads the newline-terminated decimal numbers of a pax 1.0 sparse map,
/// block by block (the map is padded to a block boundary).
struct MapReader<'a, 'r> {
    s: &'a mut TarStream<'r>,
    data_end: u64,
    at: u64,
    block: [u8; BLOCK as usize],
    next: usize,
}

impl MapReader<'_, '_> {
    fn number(&mut self) -> Result<u64> {
        let mut text = Vec::with_capacity(20);
        loop {
            if self.next == self.block.len() {
                if self.s.pos + BLOCK > self.data_end {
                    let why = "sparse map larger than the member";
                    return Err(malformed(why, "tar header", self.at));
                }
                let got = self.s.fill(&mut self.block)?;
                if got < self.block.len() {
                    return Err(truncated(BLOCK, got as u64, "pax sparse map", self.at));
                }
                self.next = 0;
            }
            let b = self.block[self.next];
            self.next += 1;
            match b {
                b'\n' => return pax_u64(&text, "sparse map", self.at),
                d if text.len() < 20 => text.push(d),
                _ => return Err(malformed("bad sparse map", "tar header", self.at)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsout::TreeWriter;
    use crate::testkit::{is_sparse, make_tricky_tree, stamp_times, tree_diff, CopySink, TestRng, HARD_LINK_NAMES, SPARSE_NAME};
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn comps(p: &str) -> Vec<Vec<u8>> {
        p.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    fn fnv(h: &mut u64, data: &[u8]) {
        for &b in data {
            *h = (*h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn hash_of(data: &[u8]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325;
        fnv(&mut h, data);
        h
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Kind {
        Dir,
        File { size: u64, hash: u64 },
        Symlink(Vec<u8>),
        HardLink(Vec<Vec<u8>>),
        Special,
    }

    /// Collects entries, reading (and hashing) file contents; content that is
    /// not exactly `size` bytes long is an error.
    #[derive(Default)]
    struct Collect(Vec<(Vec<Vec<u8>>, Meta, Kind)>);

    impl EntrySink for Collect {
        fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
            let kind = match e.kind {
                SourceKind::Dir => Kind::Dir,
                SourceKind::File { size, content } => {
                    let mut hash = 0xcbf2_9ce4_8422_2325;
                    let mut buf = vec![0u8; 65536];
                    let mut total = 0u64;
                    loop {
                        let n = content.read(&mut buf).map_err(|e| Error::io("content", e))?;
                        if n == 0 {
                            break;
                        }
                        fnv(&mut hash, &buf[..n]);
                        total += n as u64;
                    }
                    if total != size {
                        return Err(Error::Invalid(format!("got {total} of {size} bytes")));
                    }
                    Kind::File { size, hash }
                }
                SourceKind::Symlink { target } => Kind::Symlink(target),
                SourceKind::HardLink { target } => Kind::HardLink(target),
                SourceKind::Special => Kind::Special,
            };
            self.0.push((e.path, e.meta, kind));
            Ok(())
        }
    }

    impl Collect {
        fn get(&self, path: &str) -> &(Vec<Vec<u8>>, Meta, Kind) {
            let want = comps(path);
            self.0.iter().find(|e| e.0 == want).unwrap()
        }
    }

    fn walk(root: &Path) -> Collect {
        let mut c = Collect::default();
        walk_dir(root, &mut c).unwrap();
        c
    }

    fn tar_collect(data: &[u8]) -> Result<Collect> {
        let mut c = Collect::default();
        read_tar(&mut &data[..], &mut c).map(|()| c)
    }

    fn count_entries(p: &Path) -> usize {
        let md = fs::symlink_metadata(p).unwrap();
        1 + if md.is_dir() {
            fs::read_dir(p).unwrap().map(|d| count_entries(&d.unwrap().path())).sum()
        } else {
            0
        }
    }

    #[test]
    fn walk_tricky_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let features = make_tricky_tree(root).unwrap();
        let c = walk(root);

        assert_eq!(c.0.len(), count_entries(root));
        assert_eq!(c.0[0].0, Vec::<Vec<u8>>::new());
        assert_eq!(c.0[0].2, Kind::Dir);
        // Pre-order with sorted children is exactly lexicographic order.
        assert!(c.0.windows(2).all(|w| w[0].0 < w[1].0));
        // Reading files may update atimes; everything else must repeat exactly.
        let no_atime = |c: Collect| -> Vec<_> {
            let zero = Timespec::default();
            c.0.into_iter().map(|(p, m, k)| (p, Meta { atime: zero, ..m }, k)).collect()
        };
        let (first, again) = (no_atime(walk(root)), no_atime(walk(root)));
        assert!(first == again, "walk is not deterministic");

        // Every entry's metadata matches lstat, mtimes to the nanosecond.
        for (path, meta, _) in &c.0 {
            let md = fs::symlink_metadata(join_components(root, path)).unwrap();
            assert_eq!(meta.mode, md.mode());
            assert_eq!((meta.uid, meta.gid), (md.uid(), md.gid()));
            assert_eq!(meta.mtime, timespec(md.mtime(), md.mtime_nsec()));
        }
        let with_ns = c.0.iter().filter(|e| e.1.mtime.nsec != 0).count();
        assert!(with_ns + 1 >= c.0.len(), "mtimes lack nanoseconds");

        let links: Vec<_> = c.0.iter().filter(|e| matches!(e.2, Kind::HardLink(_))).collect();
        assert_eq!(links.len(), 2);
        for (i, l) in links.iter().enumerate() {
            assert_eq!(l.0, comps(HARD_LINK_NAMES[i + 1]));
            assert_eq!(l.2, Kind::HardLink(comps(HARD_LINK_NAMES[0])));
        }
        assert!(matches!(c.get(HARD_LINK_NAMES[0]).2, Kind::File { size: 10_000, .. }));

        for (name, len) in [("empty", 0), ("one", 1), ("f4095", 4095), ("f4096", 4096)] {
            let data = fs::read(root.join("sizes").join(name)).unwrap();
            assert_eq!(data.len(), len);
            let want = Kind::File {
                size: len as u64,
                hash: hash_of(&data),
            };
            assert_eq!(c.get(&format!("sizes/{name}")).2, want);
        }
        let big = fs::read(root.join("sizes/big")).unwrap();
        let want = Kind::File {
            size: 5 << 20,
            hash: hash_of(&big),
        };
        assert_eq!(c.get("sizes/big").2, want);
        let sparse = fs::read(root.join(SPARSE_NAME)).unwrap();
        let want = Kind::File {
            size: 32 << 20,
            hash: hash_of(&sparse),
        };
        assert_eq!(c.get(SPARSE_NAME).2, want);

        assert_eq!(c.get("sym/rel").2, Kind::Symlink(b"../sizes/one".to_vec()));
        assert!(matches!(&c.get("sym/abs").2, Kind::Symlink(t) if t.starts_with(b"/")));
        assert!(matches!(&c.get("sym/long").2, Kind::Symlink(t) if t.len() >= 1000));
        let fifo = c.get("fifo");
        assert_eq!((fifo.1.mode & libc::S_IFMT, &fifo.2), (libc::S_IFIFO, &Kind::Special));
        assert_eq!(c.get("setuid").1.mode, libc::S_IFREG | 0o4755);
        assert_eq!(c.get("sticky").1.mode, libc::S_IFDIR | 0o1777);
        assert_eq!(
            c.get("deep/d01/d02/d03/d04/d05/d06/d07/d08/d09/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/d20")
                .2,
            Kind::Dir
        );
        assert!(c.0.iter().any(|e| e.0 == vec![b"names".to_vec(), b"caf\xe9".to_vec()]));
        assert!(c.0.iter().any(|e| e.0.last().is_some_and(|n| n.len() == 255)));

        assert!(features.xattrs, "tests expect a filesystem with user xattrs");
        let x: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"user.binary".to_vec(), b"\0\nbin\xff\n".to_vec()),
            (b"user.test".to_vec(), b"value".to_vec()),
        ];
        assert_eq!(c.get("xattr_file").1.xattrs, x);
        let d = &c.get("xattr_dir").1.xattrs;
        assert_eq!(d, &vec![(b"user.dir".to_vec(), b"on a directory".to_vec())]);
    }

    #[test]
    fn walk_refuses_a_file_as_root() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"x").unwrap();
        let err = walk_dir(&f, &mut Collect::default()).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }

    /// Runs the system GNU tar.
    fn gnu_tar(args: &[&str], dir: &Path) {
        let st = Command::new("tar").args(args).current_dir(dir).status().unwrap();
        assert!(st.success(), "tar {args:?} failed");
    }

    /// Extracts `archive` with read_tar through a TreeWriter into `dest`.
    fn extract(archive: &Path, dest: &Path) {
        let mut sink = CopySink::new(TreeWriter::new(dest, true).unwrap());
        let mut f = fs::File::open(archive).unwrap();
        read_tar(&mut f, &mut sink).unwrap();
        sink.finish().unwrap();
    }

    #[test]
    fn tar_pax_from_gnu_tar_roundtrips() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        make_tricky_tree(&src).unwrap();
        let sparse_opts: [&[&str]; 4] = [
            &[],
            &["--sparse", "--sparse-version=0.0"],
            &["--sparse", "--sparse-version=0.1"],
            &["--sparse", "--sparse-version=1.0"],
        ];
        for (i, opts) in sparse_opts.iter().enumerate() {
            let archive = tmp.path().join(format!("pax{i}.tar"));
            let mut args = vec!["--format=pax", "--xattrs", "--xattrs-include=*", "--sort=name"];
            args.extend_from_slice(opts);
            args.extend_from_slice(&["-cf", archive.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
            gnu_tar(&args, tmp.path());
            let out = tmp.path().join(format!("out{i}"));
            extract(&archive, &out);
            assert_eq!(tree_diff(&src, &out), Vec::<String>::new(), "options {opts:?}");
            assert!(is_sparse(&out.join(SPARSE_NAME)));
        }
    }

    #[test]
    fn tar_gnu_format_matches_gnu_tar_extraction() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        make_tricky_tree(&src).unwrap();
        for (i, sparse) in [false, true].into_iter().enumerate() {
            let archive = tmp.path().join(format!("gnu{i}.tar"));
            let mut args = vec!["--format=gnu", "--sort=name", "-cf", archive.to_str().unwrap()];
            if sparse {
                args.push("--sparse");
            }
            args.extend_from_slice(&["-C", src.to_str().unwrap(), "."]);
            gnu_tar(&args, tmp.path());
            let ours = tmp.path().join(format!("ours{i}"));
            extract(&archive, &ours);
            let theirs = tmp.path().join(format!("theirs{i}"));
            fs::create_dir(&theirs).unwrap();
            gnu_tar(
                &["-xpf", archive.to_str().unwrap(), "--numeric-owner", "-C", theirs.to_str().unwrap()],
                tmp.path(),
            );
            assert_eq!(tree_diff(&theirs, &ours), Vec::<String>::new());
            assert!(is_sparse(&ours.join(SPARSE_NAME)));
            // What the format carries matches the source too.
            let long = "sym/long";
            assert_eq!(fs::read_link(src.join(long)).unwrap(), fs::read_link(ours.join(long)).unwrap());
        }
    }

    #[test]
    fn tar_ustar_small_tree_roundtrips() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        let mut rng = TestRng::new(7);
        let mut data = vec![0u8; 9000];
        rng.fill(&mut data);
        fs::write(src.join("d/e/f"), &data).unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        fs::hard_link(src.join("d/e/f"), src.join("g")).unwrap();
        std::os::unix::fs::symlink("d/e/f", src.join("s")).unwrap();
        fs::write(src.join("suid"), b"x").unwrap();
        fs::set_permissions(src.join("suid"), fs::Permissions::from_mode(0o4711)).unwrap();
        crate::fsout::mkfifo(&c_path(&src.join("p")).unwrap(), 0o600).unwrap();
        stamp_times(&src, false).unwrap();
        let archive = tmp.path().join("u.tar");
        let a = archive.to_str().unwrap();
        gnu_tar(
            &["--format=ustar", "--sort=name", "-cf", a, "-C", src.to_str().unwrap(), "."],
            tmp.path(),
        );
        let out = tmp.path().join("out");
        extract(&archive, &out);
        assert_eq!(tree_diff(&src, &out), Vec::<String>::new());
    }

    /// An archive built with the tar crate: directory, GNU long name,
    /// pax path/mtime/xattrs, long symlink target, hard link, device, fifo.
    fn crate_archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let header = |ty: tar::EntryType, size: u64, mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(ty);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(1000);
            h.set_gid(100);
            h.set_mtime(1_700_000_000);
            h
        };
        let long = format!("top/{}", "x".repeat(150));
        b.append_data(&mut header(tar::EntryType::Directory, 0, 0o755), "top/", &[][..])
            .unwrap();
        let data = b"long name data\n".repeat(100);
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o640);
        b.append_data(&mut h, &long, &data[..]).unwrap();
        b.append_pax_extensions([
            ("path", &b"top/pax-\xe9-file"[..]),
            ("mtime", b"1700000001.123456789"),
            ("atime", b"-1.25"),
            ("SCHILY.xattr.user.k", b"v\nwith newline"),
            ("SCHILY.xattr.user.empty", b""),
        ])
        .unwrap();
        let mut h = header(tar::EntryType::Regular, 5, 0o600);
        b.append_data(&mut h, "placeholder", &b"hello"[..]).unwrap();
        let target = "t/".repeat(600);
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        b.append_link(&mut h, "./top/sym", &target).unwrap();
        let mut h = header(tar::EntryType::Link, 0, 0o640);
        b.append_link(&mut h, "top/hard", &long).unwrap();
        let mut h = header(tar::EntryType::Char, 0, 0o620);
        h.set_device_major(4).unwrap();
        h.set_device_minor(64).unwrap();
        b.append_data(&mut h, "top/tty", &[][..]).unwrap();
        let mut h = header(tar::EntryType::Fifo, 0, 0o644);
        b.append_data(&mut h, "top/fifo", &[][..]).unwrap();
        let mut h = header(tar::EntryType::Regular, 3, 0o644);
        b.append_data(&mut h, "top/zzz", &b"end"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_crate_archive_is_read_exactly() {
        let archive = crate_archive();
        let c = tar_collect(&archive).unwrap();
        let long = format!("top/{}", "x".repeat(150));
        let paths: Vec<Vec<Vec<u8>>> = c.0.iter().map(|e| e.0.clone()).collect();
        let mut want: Vec<Vec<Vec<u8>>> = ["top", long.as_str(), "top/sym", "top/hard", "top/tty", "top/fifo", "top/zzz"]
            .iter()
            .map(|p| comps(p))
            .collect();
        want.insert(2, vec![b"top".to_vec(), b"pax-\xe9-file".to_vec()]);
        assert_eq!(paths, want);
        assert_eq!(c.0[0].1.mode, libc::S_IFDIR | 0o755);
        let data = b"long name data\n".repeat(100);
        assert_eq!(
            c.0[1].2,
            Kind::File {
                size: data.len() as u64,
                hash: hash_of(&data)
            }
        );
        assert_eq!((c.0[1].1.uid, c.0[1].1.gid), (1000, 100));
        let pax = &c.0[2].1;
        assert_eq!(
            pax.mtime,
            Timespec {
                sec: 1_700_000_001,
                nsec: 123_456_789
            }
        );
        assert_eq!(
            pax.atime,
            Timespec {
                sec: -2,
                nsec: 750_000_000
            }
        );
        assert_eq!(pax.ctime, pax.mtime);
        let x = vec![
            (b"user.empty".to_vec(), Vec::new()),
            (b"user.k".to_vec(), b"v\nwith newline".to_vec()),
        ];
        assert_eq!(pax.xattrs, x);
        assert_eq!(
            c.0[2].2,
            Kind::File {
                size: 5,
                hash: hash_of(b"hello")
            }
        );
        assert_eq!(c.0[3].2, Kind::Symlink("t/".repeat(600).into_bytes()));
        assert_eq!(c.0[3].1.mode, libc::S_IFLNK | 0o777);
        assert_eq!(c.0[4].2, Kind::HardLink(comps(&long)));
        assert_eq!(c.0[5].1.mode, libc::S_IFCHR | 0o620);
        assert_eq!(c.0[5].1.rdev, libc::makedev(4, 64));
        assert_eq!(c.0[6].1.mode, libc::S_IFIFO | 0o644);
        assert!(c.0[0].1.xattrs.is_empty() && c.0[1].1.mtime.nsec == 0);
    }

    #[test]
    fn tar_crate_gnu_sparse_file() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        make_tricky_tree(&src).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.sparse(true);
        b.append_path_with_name(src.join(SPARSE_NAME), "s").unwrap();
        let archive = b.into_inner().unwrap();
        let hdr = tar::Header::from_byte_slice(&archive[..512]);
        assert_eq!(hdr.entry_type(), tar::EntryType::GNUSparse);
        let c = tar_collect(&archive).unwrap();
        let sparse = fs::read(src.join(SPARSE_NAME)).unwrap();
        assert_eq!(
            c.0[0].2,
            Kind::File {
                size: 32 << 20,
                hash: hash_of(&sparse)
            }
        );
    }

    fn assert_corrupt_at(r: Result<Collect>, offset: u64) {
        match r {
            Err(Error::Corrupt { at, .. }) => assert_eq!(at.offset, Some(offset), "{at}"),
            Err(e) => panic!("expected Corrupt at {offset}, got {e}"),
            Ok(_) => panic!("expected Corrupt at {offset}, got Ok"),
        }
    }

    /// Header offsets of an archive, from the tar crate's raw iterator.
    fn header_offsets(archive: &[u8]) -> Vec<u64> {
        let mut a = tar::Archive::new(archive);
        let entries = a.entries().unwrap().raw(true);
        entries.map(|e| e.unwrap().raw_header_position()).collect()
    }

    #[test]
    fn tar_truncated_anywhere_is_corrupt() {
        let archive = crate_archive();
        let end_marker = archive.len() - 1024;
        let headers = header_offsets(&archive);
        assert_eq!(headers.len(), 12);
        for cut in 0..archive.len() {
            let r = tar_collect(&archive[..cut]);
            if cut >= end_marker + 512 {
                assert!(r.is_ok(), "cut at {cut}");
                continue;
            }
            // The error names the header whose block or data was cut.
            let at = headers
                .iter()
                .chain(&[end_marker as u64])
                .filter(|&&h| h <= cut as u64)
                .max()
                .copied()
                .unwrap_or(0);
            assert_corrupt_at(r, at);
        }
    }

    #[test]
    fn tar_truncated_gnu_sparse_and_pax_sparse() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let f = fs::File::create(src.join("s")).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 8192], 0).unwrap();
        f.write_all_at(&[2u8; 4096], 1 << 20).unwrap();
        f.set_len(2 << 20).unwrap();
        fs::write(src.join("zzz"), b"end").unwrap();
        for fmt in ["--format=gnu", "--format=pax"] {
            let archive = tmp.path().join("a.tar");
            let a = archive.to_str().unwrap();
            gnu_tar(
                &[fmt, "--sparse", "--sort=name", "-cf", a, "-C", src.to_str().unwrap(), "."],
                tmp.path(),
            );
            let bytes = fs::read(&archive).unwrap();
            let last = bytes.iter().rposition(|&b| b != 0).unwrap() as u64;
            let end_marker = round_up(last + 1).unwrap() as usize;
            let full = tar_collect(&bytes).unwrap();
            assert_eq!(full.0.len(), 3);
            let mut sparse = vec![0u8; 2 << 20];
            sparse[..8192].fill(1);
            sparse[1 << 20..(1 << 20) + 4096].fill(2);
            assert_eq!(
                full.0[1].2,
                Kind::File {
                    size: 2 << 20,
                    hash: hash_of(&sparse)
                }
            );
            for cut in (0..end_marker + 512).step_by(7) {
                let r = tar_collect(&bytes[..cut]);
                assert!(matches!(&r, Err(e) if e.is_corruption()), "{fmt} cut at {cut}");
            }
        }
    }

    fn raw_header(name: &[u8], ty: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkflag = [ty];
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_cksum();
        h
    }

    fn archive_of(parts: &[(&tar::Header, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (h, data) in parts {
            b.append(h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_bad_checksum_is_corrupt_with_offset() {
        let archive = crate_archive();
        let headers = header_offsets(&archive);
        for &h in &[headers[0], headers[3], headers[11]] {
            for field in [5usize, 150, 300] {
                let mut bad = archive.clone();
                bad[h as usize + field] ^= 0x01;
                assert_corrupt_at(tar_collect(&bad), h);
            }
        }
    }

    #[test]
    fn tar_dotdot_is_rejected() {
        for name in [&b"../x"[..], b"a/../../x", b"a/.."] {
            let h = raw_header(name, b'0', 0);
            assert_corrupt_at(tar_collect(&archive_of(&[(&h, &[])])), 0);
        }
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", &b"ok/../../x"[..])]).unwrap();
        b.append(&raw_header(b"ok", b'0', 0), &[][..]).unwrap();
        assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 1024);
        let mut h = raw_header(b"hard", b'1', 0);
        h.as_old_mut().linkname[..5].copy_from_slice(b"../x\0");
        h.set_cksum();
        assert_corrupt_at(tar_collect(&archive_of(&[(&h, &[])])), 0);
        // Leading "/" and "./" and inner "." are just dropped.
        let h = raw_header(b"/./a/./b//c", b'0', 0);
        let c = tar_collect(&archive_of(&[(&h, &[])])).unwrap();
        assert_eq!(c.0[0].0, comps("a/b/c"));
    }

    #[test]
    fn tar_hostile_sizes_are_refused() {
        // Extension headers beyond the caps: refused before reading them.
        for (ty, size) in [(b'x', MAX_PAX + 1), (b'g', u64::MAX >> 2), (b'L', 10 << 20), (b'K', 65537)] {
            let h = raw_header(b"ext", ty, size);
            let r = tar_collect(h.as_bytes());
            assert!(
                matches!(
                    &r,
                    Err(Error::Corrupt {
                        kind: CorruptKind::OutOfRange { .. },
                        ..
                    })
                ),
                "{}",
                char::from(ty)
            );
        }
        // A member claiming 1 TiB of data that is not there.
        let h = raw_header(b"huge", b'0', 1 << 40);
        assert_corrupt_at(tar_collect(h.as_bytes()), 0);
        let mut block = h.as_bytes().to_vec();
        block.extend_from_slice(&[7u8; 4096]);
        assert_corrupt_at(tar_collect(&block), 0);
        // Base-256 sizes that overflow.
        let mut h = raw_header(b"b256", b'0', 0);
        h.as_old_mut().size = [0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        h.set_cksum();
        assert_corrupt_at(tar_collect(h.as_bytes()), 0);
        // Bad pax records.
        let records: [&[u8]; 6] = [
            b"99999999999999999999999 size=1\n",
            b"30 size=99999999999999999999999\n",
            b"12 mtime=x.5\n",
            b"5 a=b\n",
            b"9 noequal\n",
            b"10 path=x",
        ];
        for rec in records {
            let pax = raw_header(b"pax", b'x', rec.len() as u64);
            let r = tar_collect(&archive_of(&[(&pax, rec), (&raw_header(b"f", b'0', 0), &[])]));
            assert_corrupt_at(r, 0);
        }
        // An xattr value over the limit.
        let mut b = tar::Builder::new(Vec::new());
        let big = vec![b'v'; MAX_XATTR_VALUE + 1];
        b.append_pax_extensions([("SCHILY.xattr.user.big", &big[..])]).unwrap();
        b.append(&raw_header(b"f", b'0', 0), &[][..]).unwrap();
        assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 0);
        // Two pax headers for one member.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("mtime", &b"1"[..])]).unwrap();
        b.append_pax_extensions([("mtime", &b"2"[..])]).unwrap();
        b.append(&raw_header(b"f", b'0', 0), &[][..]).unwrap();
        assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 1024);
        // A pax 1.0 sparse map claiming 10^12 segments.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("GNU.sparse.major", &b"1"[..]),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"s"),
            ("GNU.sparse.realsize", b"100"),
        ])
        .unwrap();
        let mut map = b"1000000000000\n".to_vec();
        map.resize(512, 0);
        b.append(&raw_header(b"GNUSparseFile/s", b'0', 512), &map[..]).unwrap();
        assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 1024);
        // A sparse map reaching beyond the real size.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("GNU.sparse.size", &b"10"[..]), ("GNU.sparse.map", b"5,10")])
            .unwrap();
        b.append(&raw_header(b"s", b'0', 10), &[1u8; 10][..]).unwrap();
        assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 1024);
    }

    #[test]
    fn tar_random_damage_never_panics_or_lies() {
        let archive = crate_archive();
        let mut rng = TestRng::new(42);
        let mut oks = 0;
        for _ in 0..3000 {
            let mut bad = archive.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let i = (rng.next_u64() % (archive.len() as u64 - 1024)) as usize;
                bad[i] = rng.next_u64() as u8;
            }
            let cut = if rng.next_u64() < u64::MAX / 4 {
                (rng.next_u64() % bad.len() as u64) as usize
            } else {
                bad.len()
            };
            // Collect fails if any file yields other than exactly its size.
            if tar_collect(&bad[..cut]).is_ok() {
                oks += 1;
            }
        }
        assert!(oks < 3000);
    }

    #[test]
    fn tar_global_pax_header_applies_to_later_members() {
        let mut b = tar::Builder::new(Vec::new());
        let g = b"30 mtime=1600000000.000000005\n20 SCHILY.xattr.a=g\n";
        b.append(&raw_header(b"global", b'g', g.len() as u64), &g[..]).unwrap();
        b.append(&raw_header(b"one", b'0', 0), &[][..]).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.a", &b"local"[..]), ("mtime", b"")])
            .unwrap();
        b.append(&raw_header(b"two", b'0', 0), &[][..]).unwrap();
        let c = tar_collect(&b.into_inner().unwrap()).unwrap();
        assert_eq!(c.0.len(), 2);
        let ts = Timespec {
            sec: 1_600_000_000,
            nsec: 5,
        };
        assert_eq!(
            (c.0[0].1.mtime, c.0[0].1.xattrs.clone()),
            (ts, vec![(b"a".to_vec(), b"g".to_vec())])
        );
        let ts = Timespec { sec: 1, nsec: 0 };
        assert_eq!(
            (c.0[1].1.mtime, c.0[1].1.xattrs.clone()),
            (ts, vec![(b"a".to_vec(), b"local".to_vec())])
        );
    }

    #[test]
    fn tar_missing_end_marker_or_dangling_extension_is_corrupt() {
        let h = raw_header(b"f", b'0', 0);
        assert_corrupt_at(tar_collect(h.as_bytes()), 512);
        assert_corrupt_at(tar_collect(&[]), 0);
        let pax = raw_header(b"pax", b'x', 0);
        assert_corrupt_at(tar_collect(&archive_of(&[(&pax, &[])])), 512);
    }

    #[test]
    fn numeric_fields_and_times_parse() {
        assert_eq!(header_num(b"0000644 \0", "m", 0).unwrap(), 0o644);
        assert_eq!(header_num(b"  17\0\0", "m", 0).unwrap(), 0o17);
        assert_eq!(header_num(b"\0\0\0", "m", 0).unwrap(), 0);
        assert!(header_num(b"0009", "m", 0).is_err());
        assert!(header_num(b"12 x", "m", 0).is_err());
        assert_eq!(header_num(&[0x80, 0, 0, 1, 0], "m", 0).unwrap(), 256);
        assert_eq!(header_num(&[0xff; 12], "m", 0).unwrap(), -1);
        assert_eq!(header_num(&[0xff, 0xff, 0xff, 0xfe, 0], "m", 0).unwrap(), -512);
        assert!(header_num(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "m", 0).is_err());
        let t = |s: &[u8]| pax_time(s, "t", 0).map(|t| (t.sec, t.nsec)).ok();
        assert_eq!(t(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(t(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t(b"-3"), Some((-3, 0)));
        assert_eq!(t(b"7.1234567891"), Some((7, 123_456_789)));
        assert_eq!(t(b"7."), Some((7, 0)));
        for bad in [&b""[..], b".5", b"1.x", b"--1", b"99999999999999999999"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
