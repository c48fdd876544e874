//! The directory walker: a tree on the local filesystem turned into
//! [`SourceEntry`]s, streaming file contents and reading xattrs.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::*;
use crate::error::{Error, Result};
use crate::sys::{c_path, lgetxattr, llistxattr, seek_data_or_hole};

/// Runs a size-query-then-fetch syscall pair (`*listxattr`, `*getxattr`),
/// retrying when the value grows in between.
fn fetch_sized(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let n = f(&mut [])?;
        if n == 0 {
            // Nothing to fetch (most files have no xattrs): spare the second call.
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
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
pub fn read_xattrs(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
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
    walker.visit(&root, &st, None)
}

fn lstat(p: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(p).map_err(|e| Error::io(format!("stat {}", p.display()), e))
}

/// Opens `p` (not following a symlink, not blocking on a FIFO) when it is a
/// regular file, with the metadata of the open file: one `statx` on the
/// descriptor instead of a path `lstat` plus an `fstat`. `None` (any error,
/// or not a regular file any more) leaves the caller to `lstat` it.
fn open_regular(p: &Path) -> Option<(fs::File, fs::Metadata)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .ok()?;
    let st = file.metadata().ok()?;
    st.is_file().then_some((file, st))
}

pub(super) fn timespec(sec: i64, nsec: i64) -> Timespec {
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
    /// Visits `path`, whose `lstat` is `st`; `opened` is the file already
    /// open when `st` came from its descriptor ([`open_regular`]).
    fn visit(&mut self, path: &Path, st: &fs::Metadata, opened: Option<fs::File>) -> Result<()> {
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
                let de = de.map_err(|e| Error::io(ctx(), e))?;
                // The entry's type (d_type, no syscall) says which to open at once.
                let regular = de.file_type().is_ok_and(|t| t.is_file());
                names.push((de.file_name().into_vec(), regular));
            }
            names.sort_unstable();
            for (name, regular) in names {
                let child = path.join(OsStr::from_bytes(&name));
                let (cst, opened) = match regular.then(|| open_regular(&child)).flatten() {
                    Some((f, st)) => (st, Some(f)),
                    None => (lstat(&child)?, None),
                };
                self.comps.push(name);
                let r = self.visit(&child, &cst, opened);
                self.comps.pop();
                r?;
            }
            Ok(())
        } else if ft.is_file() {
            let ctx = || format!("reading {}", path.display());
            let (file, size, blocks) = match opened {
                // `st` is this open file's own metadata.
                Some(file) => (file, st.len(), st.blocks()),
                None => {
                    let file = fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                        .open(path)
                        .map_err(|e| Error::io(ctx(), e))?;
                    let fst = file.metadata().map_err(|e| Error::io(ctx(), e))?;
                    if (fst.dev(), fst.ino()) != (st.dev(), st.ino()) || !fst.is_file() {
                        return Err(Error::io(ctx(), io::Error::other("file was replaced during the walk")));
                    }
                    (file, fst.len(), fst.blocks())
                }
            };
            let mut content = SparseFile {
                file,
                pos: 0,
                size,
                // Space allocated for the whole size: no hole worth asking for.
                dense: blocks.saturating_mul(512) >= size,
            };
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

/// A regular file of the source tree, read up to the size it had when the
/// walk reached it. Its holes are found with `SEEK_DATA`/`SEEK_HOLE`, so a
/// sparse file costs only its data: a 64 GiB file with one written block is
/// one block to read. A file with as many bytes allocated as its size
/// (`st_blocks`, as GNU tar's sparse test) is read without asking: a hole it
/// might still have (space preallocated past its end) reads as zeros, which
/// the builder turns into holes all the same, at the cost of reading
/// allocated space only.
struct SparseFile {
    file: fs::File,
    pos: u64,
    size: u64,
    dense: bool,
}

impl io::Read for SparseFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.size.saturating_sub(self.pos)).map_or(buf.len(), |n| n.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was read"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl FileData for SparseFile {
    fn run(&mut self) -> io::Result<Run> {
        if self.pos >= self.size {
            return Ok(Run::Hole { end: self.size });
        }
        if self.dense {
            return Ok(Run::Data { end: self.size });
        }
        match seek_data_or_hole(&self.file, self.pos, true)? {
            None => Ok(Run::Hole { end: self.size }),
            Some(d) if d > self.pos => Ok(Run::Hole { end: d.min(self.size) }),
            Some(_) => {
                let h = seek_data_or_hole(&self.file, self.pos, false)?.unwrap_or(self.size);
                Ok(Run::Data {
                    end: h.clamp(self.pos + 1, self.size),
                })
            }
        }
    }

    fn skip_hole(&mut self, to: u64) -> io::Result<()> {
        let run = self.run()?;
        filedata::skip_in_hole(run, &mut self.pos, to)
    }
}
