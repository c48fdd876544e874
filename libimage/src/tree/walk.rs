//! The directory walker: a tree on the local filesystem turned into
//! [`SourceEntry`]s, streaming file contents and reading xattrs.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

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
        out: Out::Sink(sink),
        links: HashMap::new(),
        comps: Vec::new(),
    };
    walker.visit(&root, &st, None)
}

/// Regular files up to this size are read whole by the walker thread of
/// [`walk_dir_pipelined`]; larger ones are handed over open and streamed by
/// the sink as in [`walk_dir`].
pub const PREFETCH_MAX: u64 = 128 * 1024;
/// The walker thread of [`walk_dir_pipelined`] sends entries in batches of at
/// most this many entries or (past) this many bytes of prefetched contents:
/// one hand-over (and at most one wake-up) per batch, not per file.
const BATCH_ENTRIES: usize = 256;
const BATCH_BYTES: u64 = 1 << 20;
/// Batches queued between the walker thread and the sink. In flight at once:
/// these, one being filled and one being consumed, so at most
/// `(PIPELINE_DEPTH + 2) * (BATCH_BYTES + PREFETCH_MAX)` bytes of file
/// contents (6.75 MiB) and `(PIPELINE_DEPTH + 2) * BATCH_ENTRIES` open files.
const PIPELINE_DEPTH: usize = 4;

/// [`walk_dir`] on two threads: a scoped thread walks the tree (directory
/// reads, `statx`, xattrs) and reads each regular file of at most
/// [`PREFETCH_MAX`] bytes whole, while the calling thread hands the entries,
/// in the same order and with the same contents, to `sink` (for the builder:
/// encrypting, checksumming, writing). Memory stays bounded by
/// [`PIPELINE_DEPTH`] entries in flight. A file the walker cannot read whole
/// (an error, a short read, holes) is handed over open and read by the sink
/// exactly as [`walk_dir`] would, so errors name the same path with the same
/// message. The first error in entry order wins: the sink's, or else the
/// walker's. With one CPU this is [`walk_dir`].
pub fn walk_dir_pipelined(root: &Path, sink: &mut dyn EntrySink) -> Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return walk_dir(root, sink);
    }
    let (tx, rx) = sync_channel::<Vec<OwnedEntry>>(PIPELINE_DEPTH);
    std::thread::scope(|scope| {
        let walker = scope.spawn(move || {
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
                out: Out::Pipe(Batcher {
                    tx,
                    batch: Vec::new(),
                    bytes: 0,
                }),
                links: HashMap::new(),
                comps: Vec::new(),
            };
            walker.visit(&root, &st, None)?;
            match walker.out {
                Out::Pipe(mut b) => b.flush(),
                Out::Sink(_) => Ok(()),
            }
        });
        let mut sunk = Ok(());
        'batches: for mut e in rx.iter().flatten() {
            let kind = match &mut e.kind {
                OwnedKind::Dir => SourceKind::Dir,
                OwnedKind::File { size, content } => SourceKind::File {
                    size: *size,
                    content: content.as_mut(),
                },
                OwnedKind::Symlink { target } => SourceKind::Symlink {
                    target: std::mem::take(target),
                },
                OwnedKind::HardLink { target } => SourceKind::HardLink {
                    target: std::mem::take(target),
                },
                OwnedKind::Special => SourceKind::Special,
            };
            let entry = SourceEntry {
                path: std::mem::take(&mut e.path),
                meta: std::mem::take(&mut e.meta),
                kind,
            };
            if let Err(err) = sink.entry(entry) {
                sunk = Err(err);
                break 'batches;
            }
        }
        // The walker's next send fails and it stops.
        drop(rx);
        let walked = walker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        sunk.and(walked)
    })
}

/// A [`SourceEntry`] that owns its file contents, sent between threads.
struct OwnedEntry {
    path: Vec<Vec<u8>>,
    meta: Meta,
    kind: OwnedKind,
}

enum OwnedKind {
    Dir,
    File { size: u64, content: Box<dyn FileData + Send> },
    Symlink { target: Vec<u8> },
    HardLink { target: Vec<Vec<u8>> },
    Special,
}

/// Where the walker's entries go: a sink on this thread, or the pipeline.
enum Out<'s> {
    Sink(&'s mut dyn EntrySink),
    Pipe(Batcher),
}

/// The walker thread's end of the pipeline: entries gathered into batches.
struct Batcher {
    tx: SyncSender<Vec<OwnedEntry>>,
    batch: Vec<OwnedEntry>,
    /// Prefetched content bytes in `batch`.
    bytes: u64,
}

impl Batcher {
    /// Adds one entry (`bytes` of prefetched contents), sending the batch
    /// when it is full.
    fn send(&mut self, path: Vec<Vec<u8>>, meta: Meta, kind: OwnedKind, bytes: u64) -> Result<()> {
        self.batch.push(OwnedEntry { path, meta, kind });
        self.bytes += bytes;
        if self.batch.len() >= BATCH_ENTRIES || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is gathered; fails when the sink has stopped (its own error
    /// is the one reported).
    fn flush(&mut self) -> Result<()> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ENTRIES));
        self.tx.send(batch).map_err(|_| Error::Internal("the walk pipeline's sink stopped"))
    }
}

/// A small file's whole contents, read by the walker thread.
struct Prefetched {
    data: Vec<u8>,
    pos: usize,
}

impl io::Read for Prefetched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl FileData for Prefetched {
    fn take_all(&mut self) -> Option<Vec<u8>> {
        (self.pos == 0).then(|| {
            self.pos = self.data.len();
            std::mem::take(&mut self.data)
        })
    }
}

/// Reads a dense file of at most [`PREFETCH_MAX`] bytes whole (into a buffer
/// with room to pad it to whole blocks, not zeroed first); `None` on any
/// error or short read, so that the sink reads `f` itself and reports what
/// goes wrong. `f` reads with positioned reads from its own offset, so
/// moving the descriptor's offset here does not disturb it.
fn prefetch(f: &SparseFile) -> Option<Prefetched> {
    if !f.dense || f.size > PREFETCH_MAX || f.pos != 0 {
        return None;
    }
    let size = usize::try_from(f.size).ok()?;
    let mut data = Vec::with_capacity(size.div_ceil(crate::BLOCK_SIZE) * crate::BLOCK_SIZE);
    let n = io::Read::read_to_end(&mut io::Read::take(&f.file, f.size), &mut data).ok()?;
    (n == size).then_some(Prefetched { data, pos: 0 })
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
    out: Out<'s>,
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
            if let Out::Pipe(b) = &mut self.out {
                let (content, bytes): (Box<dyn FileData + Send>, u64) = match prefetch(&content) {
                    Some(p) => (Box::new(p), size),
                    None => (Box::new(content), 0),
                };
                return b.send(path_comps, meta, OwnedKind::File { size, content }, bytes);
            }
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
        match &mut self.out {
            Out::Sink(sink) => sink.entry(SourceEntry { path, meta, kind }),
            Out::Pipe(b) => {
                let kind = match kind {
                    SourceKind::Dir => OwnedKind::Dir,
                    SourceKind::Symlink { target } => OwnedKind::Symlink { target },
                    SourceKind::HardLink { target } => OwnedKind::HardLink { target },
                    SourceKind::Special => OwnedKind::Special,
                    // Regular files are sent by `visit` itself, with owned contents.
                    SourceKind::File { .. } => return Err(Error::Internal("a borrowed file sent down the walk pipeline")),
                };
                b.send(path, meta, kind, 0)
            }
        }
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
        match self.run()? {
            Run::Hole { end } if to >= self.pos && to <= end => {
                self.pos = to;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {to} is not within a hole at {}", self.pos),
            )),
        }
    }
}

#[cfg(test)]
mod pipeline_tests {
    use super::*;
    use testkit::{make_tricky_tree, TestRng};

    /// Everything a sink can observe of an entry, file contents included.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Dir,
        File(Vec<u8>),
        Symlink(Vec<u8>),
        HardLink(Vec<Vec<u8>>),
        Special,
    }

    /// Records entries; fails with `Invalid("stop")` at entry `stop_at`.
    #[derive(Default)]
    struct Record {
        seen: Vec<(Vec<Vec<u8>>, Meta, Seen)>,
        stop_at: Option<usize>,
        took_all: usize,
    }

    impl EntrySink for Record {
        fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
            if self.stop_at == Some(self.seen.len()) {
                return Err(Error::Invalid("stop".into()));
            }
            let seen = match e.kind {
                SourceKind::Dir => Seen::Dir,
                SourceKind::File { size, content } => {
                    let data = match content.take_all() {
                        Some(d) => {
                            self.took_all += 1;
                            d
                        }
                        None => {
                            let mut d = Vec::new();
                            content.read_to_end(&mut d).map_err(|e| Error::io("content", e))?;
                            d
                        }
                    };
                    assert_eq!(data.len() as u64, size);
                    Seen::File(data)
                }
                SourceKind::Symlink { target } => Seen::Symlink(target),
                SourceKind::HardLink { target } => Seen::HardLink(target),
                SourceKind::Special => Seen::Special,
            };
            self.seen.push((e.path, e.meta, seen));
            Ok(())
        }
    }

    /// The tricky tree, plus enough small files to fill several batches and
    /// files around [`PREFETCH_MAX`].
    fn tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        make_tricky_tree(tmp.path()).unwrap();
        let many = tmp.path().join("many");
        fs::create_dir(&many).unwrap();
        let mut rng = TestRng::new(12);
        for i in 0..(3 * BATCH_ENTRIES + 7) {
            fs::write(many.join(format!("f{i:04}")), rng.bytes(i % 5000)).unwrap();
        }
        for (name, len) in [("at_max", PREFETCH_MAX), ("past_max", PREFETCH_MAX + 1), ("big", 3 << 20)] {
            fs::write(tmp.path().join(name), rng.bytes(len as usize)).unwrap();
        }
        tmp
    }

    #[test]
    fn pipelined_walk_yields_the_same_entries() {
        let tmp = tree();
        let mut plain = Record::default();
        walk_dir(tmp.path(), &mut plain).unwrap();
        let mut piped = Record::default();
        walk_dir_pipelined(tmp.path(), &mut piped).unwrap();
        assert!(plain.seen.len() > 3 * BATCH_ENTRIES, "{}", plain.seen.len());
        // The first walk's reads may move access times; nothing else differs.
        for e in plain.seen.iter_mut().chain(piped.seen.iter_mut()) {
            e.1.atime = Timespec::default();
        }
        assert_eq!(plain.seen, piped.seen);
        assert_eq!(plain.took_all, 0);
        // Small files arrive read ahead (when the machine has two cores).
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            assert!(piped.took_all > 3 * BATCH_ENTRIES, "{}", piped.took_all);
        }
    }

    #[test]
    fn pipelined_walk_reports_the_sinks_error() {
        let tmp = tree();
        for stop in [0, 1, BATCH_ENTRIES, 2 * BATCH_ENTRIES + 3] {
            let mut r = Record {
                stop_at: Some(stop),
                ..Record::default()
            };
            let err = walk_dir_pipelined(tmp.path(), &mut r).unwrap_err();
            assert!(matches!(&err, Error::Invalid(m) if m == "stop"), "{err}");
            assert_eq!(r.seen.len(), stop);
        }
    }

    #[test]
    fn pipelined_walk_reports_the_walkers_error() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"x").unwrap();
        let err = walk_dir_pipelined(&f, &mut Record::default()).unwrap_err();
        assert!(matches!(&err, Error::Invalid(m) if m.contains("is not a directory")), "{err}");
        let err = walk_dir_pipelined(&tmp.path().join("missing"), &mut Record::default()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
