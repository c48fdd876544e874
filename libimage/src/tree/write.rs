//! The output side: writes a tree of files onto the local filesystem
//! (`fsck-crypt extract`).
//!
//! Every name handed to [`TreeWriter`] ultimately comes from decrypted image
//! bytes, so each component is validated, a parent must be a directory this
//! writer created itself (so no path ever resolves through a symlink from the
//! image), and files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use crate::sys::running_as_root;
use crate::sys::{c_path, mkfifo, mknod, set_times, set_xattr};
use crate::tree::{display_components, join_components, Meta};

/// What a [`TreeWriter`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Regular files created (not counting extra hard links).
    pub files: u64,
    /// Directories (including the root, when given metadata via `dir(&[])`).
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// FIFOs and device nodes created.
    pub specials: u64,
    /// Extra names created by `hard_link`.
    pub hardlinks: u64,
    /// Entries not created: sockets, and device nodes when not running as
    /// root (or when root may not create them).
    pub skipped: u64,
    /// Extended attributes the destination refused (unsupported filesystem, a
    /// namespace this process may not write, or user xattrs on a symlink).
    pub xattrs_skipped: u64,
    /// Extra names (hard links) of skipped entries, not created either.
    pub links_skipped: u64,
}

/// Writes a tree below a destination directory.
#[derive(Debug)]
pub struct TreeWriter {
    root: PathBuf,
    as_root: bool,
    /// Directories created so far (the root is implicit), with the metadata
    /// to apply in [`TreeWriter::finish`].
    dirs: HashMap<Vec<Vec<u8>>, Meta>,
    /// Entries [`TreeWriter::special`] skipped: a hard link to one is skipped too.
    skipped: HashSet<Vec<Vec<u8>>>,
    stats: WriteStats,
}

/// Kinds of inode [`TreeWriter::apply_meta`] handles differently.
#[derive(PartialEq, Eq)]
enum Node {
    Symlink,
    Other,
}

impl TreeWriter {
    /// `dest` must not exist (its parent must) or be an empty directory.
    /// `as_root`: set ownership and create device nodes; it only takes effect
    /// when the process really runs as root (euid 0), otherwise devices are
    /// skipped (counted in `skipped`) and ownership is left alone.
    pub fn new(dest: &Path, as_root: bool) -> Result<TreeWriter> {
        let ctx = || format!("preparing destination {}", dest.display());
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {
                let mut it = fs::read_dir(dest).map_err(|e| Error::io(ctx(), e))?;
                if it.next().is_some() {
                    return Err(Error::Invalid(format!("destination {} is not empty", dest.display())));
                }
            }
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "destination {} exists and is not a directory",
                    dest.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().mode(0o700).create(dest).map_err(|e| Error::io(ctx(), e))?;
            }
            Err(e) => return Err(Error::io(ctx(), e)),
        }
        Ok(TreeWriter {
            root: dest.to_path_buf(),
            as_root: as_root && running_as_root(),
            dirs: HashMap::new(),
            skipped: HashSet::new(),
            stats: WriteStats::default(),
        })
    }

    /// Validates `path` and returns where it lives below the destination.
    /// Every component must be a plain name, and the parent must be the root
    /// or a directory created by [`TreeWriter::dir`].
    fn resolve(&self, path: &[Vec<u8>]) -> Result<PathBuf> {
        let bad = |why: &str| Error::Invalid(format!("refusing to write {:?}: {why}", display_components(path)));
        for c in path {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
                return Err(bad("invalid name component"));
            }
        }
        if let Some((_, parent)) = path.split_last() {
            if !parent.is_empty() && !self.dirs.contains_key(parent) {
                return Err(bad("parent directory was not created first"));
            }
        }
        Ok(join_components(&self.root, path))
    }

    /// Creates directory `path` (the root is the empty path and already
    /// exists). Its metadata is applied in [`TreeWriter::finish`], deepest
    /// first, so later writes inside do not disturb it. Calling this again for
    /// a directory already created just replaces the pending metadata.
    pub fn dir(&mut self, path: &[Vec<u8>], meta: &Meta) -> Result<()> {
        let p = self.resolve(path)?;
        if !path.is_empty() && !self.dirs.contains_key(path) {
            DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .map_err(|e| Error::io(format!("creating directory {}", p.display()), e))?;
        }
        if self.dirs.insert(path.to_vec(), meta.clone()).is_none() {
            self.stats.dirs += 1;
        }
        Ok(())
    }

    /// Creates a regular file (mode 0600 for now) and returns a handle; the
    /// caller writes data at offsets (`FileExt::write_at`, holes simply not
    /// written), then calls [`TreeWriter::finish_file`].
    pub fn create_file(&mut self, path: &[Vec<u8>]) -> Result<File> {
        let p = self.resolve(path)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| Error::io(format!("creating {}", p.display()), e))
    }

    /// Sets the final size (extending with a hole if needed), then ownership,
    /// xattrs, mode (after chown, so setuid survives) and times.
    pub fn finish_file(&mut self, path: &[Vec<u8>], f: File, size: u64, meta: &Meta) -> Result<()> {
        let p = self.resolve(path)?;
        f.set_len(size)
            .map_err(|e| Error::io(format!("setting size of {}", p.display()), e))?;
        drop(f);
        self.apply_meta(&p, meta, Node::Other)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Creates a symlink; sets ownership, xattrs (where the filesystem allows
    /// them on symlinks) and times without following it.
    pub fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], meta: &Meta) -> Result<()> {
        let p = self.resolve(path)?;
        if target.is_empty() || target.contains(&0) {
            return Err(Error::Invalid(format!(
                "refusing to write {:?}: invalid symlink target",
                display_components(path)
            )));
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p).map_err(|e| Error::io(format!("creating symlink {}", p.display()), e))?;
        self.apply_meta(&p, meta, Node::Symlink)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// Creates `path` as another name of the earlier entry `target`. When
    /// `target` was skipped (a device node when not root), `path` is skipped
    /// too and counted in `links_skipped`, and the rest of the tree goes on.
    pub fn hard_link(&mut self, path: &[Vec<u8>], target: &[Vec<u8>]) -> Result<()> {
        let p = self.resolve(path)?;
        let t = self.resolve(target)?;
        if target.is_empty() {
            return Err(Error::Invalid("refusing to hard-link the root".into()));
        }
        if self.skipped.contains(target) {
            self.stats.links_skipped += 1;
            return Ok(());
        }
        fs::hard_link(&t, &p).map_err(|e| Error::io(format!("linking {} to {}", p.display(), t.display()), e))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Creates a FIFO or a socket inode (`mknod(S_IFSOCK)`, which needs no
    /// privilege; nothing listens on it, as after `tar -x`), or a device node
    /// when running as root; a device when not root is only counted in
    /// `skipped` (and so are its hard links, see [`TreeWriter::hard_link`]).
    pub fn special(&mut self, path: &[Vec<u8>], meta: &Meta) -> Result<()> {
        let p = self.resolve(path)?;
        let cp = c_path(&p)?;
        let fmt = meta.mode & libc::S_IFMT;
        let made = match fmt {
            libc::S_IFIFO => mkfifo(&cp, 0o600),
            libc::S_IFSOCK => mknod(&cp, fmt | 0o600, 0),
            libc::S_IFCHR | libc::S_IFBLK if self.as_root => mknod(&cp, fmt | 0o600, meta.rdev),
            libc::S_IFCHR | libc::S_IFBLK => {
                self.stats.skipped += 1;
                self.skipped.insert(path.to_vec());
                return Ok(());
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "refusing to write {:?}: mode {:o} is not a special file",
                    display_components(path),
                    meta.mode
                )))
            }
        };
        match made {
            Ok(()) => {}
            // Root without CAP_MKNOD (e.g. in a user namespace): as if not root.
            Err(e) if matches!(fmt, libc::S_IFCHR | libc::S_IFBLK) && e.raw_os_error() == Some(libc::EPERM) => {
                self.stats.skipped += 1;
                self.skipped.insert(path.to_vec());
                return Ok(());
            }
            Err(e) => return Err(Error::io(format!("creating {}", p.display()), e)),
        }
        self.apply_meta(&p, meta, Node::Other)?;
        self.stats.specials += 1;
        Ok(())
    }

    /// Applies directory metadata deepest-first and returns the statistics.
    pub fn finish(mut self) -> Result<WriteStats> {
        let mut dirs: Vec<(Vec<Vec<u8>>, Meta)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for (path, meta) in dirs {
            self.apply_meta(&join_components(&self.root, &path), &meta, Node::Other)?;
        }
        Ok(self.stats)
    }

    /// Ownership (as root), then xattrs (chown clears security.capability),
    /// then mode (chown clears setuid), then times; never follows a symlink.
    fn apply_meta(&mut self, p: &Path, meta: &Meta, node: Node) -> Result<()> {
        let ctx = |what: &str| format!("setting {what} of {}", p.display());
        if self.as_root {
            std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid)).map_err(|e| Error::io(ctx("owner"), e))?;
        }
        let cp = c_path(p)?;
        for (name, value) in &meta.xattrs {
            let cname = CString::new(name.as_slice()).map_err(|_| Error::Invalid(ctx("an xattr with a NUL in its name")))?;
            match set_xattr(&cp, &cname, value) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EPERM | libc::EACCES)) => self.stats.xattrs_skipped += 1,
                Err(e) => return Err(Error::io(ctx("extended attributes"), e)),
            }
        }
        if node != Node::Symlink {
            fs::set_permissions(p, fs::Permissions::from_mode(meta.mode & 0o7777)).map_err(|e| Error::io(ctx("mode"), e))?;
        }
        set_times(&cp, meta.atime, meta.mtime).map_err(|e| Error::io(ctx("times"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::test_sink::CopySink;
    use crate::tree::walk_dir;
    use crate::tree::Timespec;
    use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
    use testkit::{is_sparse, make_tricky_tree, tree_diff, SPARSE_NAME};

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            atime: Timespec {
                sec: 1_000_000_000,
                nsec: 1,
            },
            mtime: Timespec {
                sec: 1_234_567_890,
                nsec: 987_654_321,
            },
            ..Meta::default()
        }
    }

    fn names(p: &str) -> Vec<Vec<u8>> {
        p.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    fn assert_invalid<T: std::fmt::Debug>(r: Result<T>) {
        assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
    }

    fn is_empty_dir(p: &Path) -> bool {
        fs::read_dir(p).unwrap().next().is_none()
    }

    #[test]
    fn walk_dir_copy_is_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
        fs::create_dir(&src).unwrap();
        make_tricky_tree(&src).unwrap();
        let mut sink = CopySink::new(TreeWriter::new(&out, true).unwrap());
        walk_dir(&src, &mut sink).unwrap();
        let stats = sink.finish().unwrap();
        assert_eq!(tree_diff(&src, &out), Vec::<String>::new());
        assert!(is_sparse(&out.join(SPARSE_NAME)));
        let want = WriteStats {
            files: 14,
            dirs: 31,
            symlinks: 3,
            specials: 1,
            hardlinks: 2,
            skipped: 0,
            xattrs_skipped: 0,
            links_skipped: 0,
        };
        assert_eq!(stats, want);
        if running_as_root() {
            let md = fs::metadata(out.join("sizes/one")).unwrap();
            assert_eq!((md.uid(), md.gid()), (1234, 5678));
        }
    }

    #[test]
    fn bad_components_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let mut w = TreeWriter::new(&dest, true).unwrap();
        w.dir(&names("ok"), &meta(libc::S_IFDIR | 0o755)).unwrap();
        for bad in [&b""[..], b".", b"..", b"/", b"a/b", b"../../etc", b"a\0b"] {
            for p in [vec![bad.to_vec()], vec![b"ok".to_vec(), bad.to_vec()]] {
                assert_invalid(w.create_file(&p));
                assert_invalid(w.dir(&p, &meta(libc::S_IFDIR | 0o755)));
                assert_invalid(w.symlink(&p, b"target", &meta(libc::S_IFLNK | 0o777)));
                assert_invalid(w.special(&p, &meta(libc::S_IFIFO | 0o644)));
                assert_invalid(w.hard_link(&p, &names("ok")));
                assert_invalid(w.hard_link(&names("ok/h"), &p));
            }
        }
        assert_invalid(w.symlink(&names("s"), b"", &meta(libc::S_IFLNK)));
        assert_invalid(w.symlink(&names("s"), b"a\0b", &meta(libc::S_IFLNK)));
        assert_invalid(w.hard_link(&names("h"), &[]));
        assert_invalid(w.create_file(&names("missing/parent")));
        assert!(is_empty_dir(&dest.join("ok")));
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (outside, dest) = (tmp.path().join("outside"), tmp.path().join("out"));
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"keep").unwrap();
        let mut w = TreeWriter::new(&dest, true).unwrap();
        let link = meta(libc::S_IFLNK | 0o777);
        w.symlink(&names("evil"), outside.as_os_str().as_bytes(), &link).unwrap();
        let victim = outside.join("victim");
        w.symlink(&names("file"), victim.as_os_str().as_bytes(), &link).unwrap();
        assert_invalid(w.create_file(&names("evil/x")));
        assert_invalid(w.dir(&names("evil/x"), &meta(libc::S_IFDIR | 0o755)));
        assert_invalid(w.symlink(&names("evil/x"), b"t", &link));
        assert_invalid(w.special(&names("evil/x"), &meta(libc::S_IFIFO | 0o644)));
        assert_invalid(w.hard_link(&names("h"), &names("evil/victim")));
        // Re-creating the symlinked names fails instead of following them.
        assert!(w.create_file(&names("file")).is_err());
        assert!(w.create_file(&names("evil")).is_err());
        assert!(w.dir(&names("evil"), &meta(libc::S_IFDIR | 0o755)).is_err());
        assert!(w.special(&names("file"), &meta(libc::S_IFIFO | 0o644)).is_err());
        w.finish().unwrap();
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        let md = fs::metadata(&outside).unwrap();
        assert_ne!(md.mtime(), 1_234_567_890);
    }

    #[test]
    fn destination_must_be_new_or_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let full = tmp.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("x"), b"").unwrap();
        assert_invalid(TreeWriter::new(&full, false));
        assert_invalid(TreeWriter::new(&full.join("x"), false));
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        std::os::unix::fs::symlink(&empty, tmp.path().join("link")).unwrap();
        assert_invalid(TreeWriter::new(&tmp.path().join("link"), false));
        TreeWriter::new(&empty, false).unwrap();
        TreeWriter::new(&tmp.path().join("new"), false).unwrap();
        assert!(tmp.path().join("new").is_dir());
        assert!(TreeWriter::new(&tmp.path().join("no/such/parent"), false).is_err());
    }

    #[test]
    fn specials_devices_and_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let mut w = TreeWriter::new(&dest, true).unwrap();
        w.special(&names("fifo"), &meta(libc::S_IFIFO | 0o640)).unwrap();
        w.special(&names("sock"), &meta(libc::S_IFSOCK | 0o755)).unwrap();
        let null = Meta {
            rdev: libc::makedev(1, 3),
            ..meta(libc::S_IFCHR | 0o666)
        };
        w.special(&names("null"), &null).unwrap();
        assert_invalid(w.special(&names("reg"), &meta(libc::S_IFREG | 0o644)));
        let stats = w.finish().unwrap();
        let md = fs::symlink_metadata(dest.join("fifo")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!((md.mode() & 0o7777, md.mtime_nsec()), (0o640, 987_654_321));
        let md = fs::symlink_metadata(dest.join("sock")).unwrap();
        assert!(md.file_type().is_socket());
        assert_eq!(md.mode() & 0o7777, 0o755);
        if running_as_root() {
            let md = fs::symlink_metadata(dest.join("null")).unwrap();
            assert!(md.file_type().is_char_device());
            assert_eq!(md.rdev(), libc::makedev(1, 3));
            assert_eq!((stats.specials, stats.skipped), (3, 0));
        } else {
            assert!(fs::symlink_metadata(dest.join("null")).is_err());
            assert_eq!((stats.specials, stats.skipped), (2, 1));
        }
    }

    /// Hard-linked FIFOs, sockets and devices extract like any other file;
    /// a skipped device (not root) takes its other names with it, and the
    /// rest of the tree is still written.
    #[test]
    fn hard_linked_specials() {
        for as_root in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("out");
            let mut w = TreeWriter::new(&dest, as_root).unwrap();
            let root = w.as_root;
            let null = Meta {
                rdev: libc::makedev(1, 3),
                ..meta(libc::S_IFCHR | 0o666)
            };
            w.special(&names("a-fifo"), &meta(libc::S_IFIFO | 0o640)).unwrap();
            w.hard_link(&names("b-fifo"), &names("a-fifo")).unwrap();
            w.special(&names("a-sock"), &meta(libc::S_IFSOCK | 0o755)).unwrap();
            w.hard_link(&names("b-sock"), &names("a-sock")).unwrap();
            w.special(&names("a-null"), &null).unwrap();
            w.hard_link(&names("b-null"), &names("a-null")).unwrap();
            w.hard_link(&names("c-null"), &names("a-null")).unwrap();
            let f = w.create_file(&names("z-after")).unwrap();
            w.finish_file(&names("z-after"), f, 3, &meta(libc::S_IFREG | 0o644)).unwrap();
            let st = w.finish().unwrap();
            for n in ["fifo", "sock"] {
                let a = fs::symlink_metadata(dest.join(format!("a-{n}"))).unwrap();
                let b = fs::symlink_metadata(dest.join(format!("b-{n}"))).unwrap();
                assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "{n}");
            }
            assert!(dest.join("z-after").exists());
            assert_eq!(st.hardlinks, if root { 4 } else { 2 });
            if root {
                assert_eq!(fs::symlink_metadata(dest.join("c-null")).unwrap().nlink(), 3);
                assert_eq!((st.skipped, st.links_skipped), (0, 0));
            } else {
                for n in ["a-null", "b-null", "c-null"] {
                    assert!(fs::symlink_metadata(dest.join(n)).is_err(), "{n}");
                }
                assert_eq!((st.skipped, st.links_skipped), (1, 2));
            }
            if as_root && !root {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true runs as root");
                println!("SKIP: hard_linked_specials (as root): not running as root");
            }
        }
    }

    #[test]
    fn metadata_is_applied_after_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let mut w = TreeWriter::new(&dest, true).unwrap();
        w.dir(&[], &meta(libc::S_IFDIR | 0o751)).unwrap();
        w.dir(&names("ro"), &meta(libc::S_IFDIR | 0o500)).unwrap();
        let f = w.create_file(&names("ro/f")).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        let fmeta = Meta {
            xattrs: vec![(b"user.a".to_vec(), b"1".to_vec())],
            ..meta(libc::S_IFREG | 0o4755)
        };
        w.finish_file(&names("ro/f"), f, 1 << 20, &fmeta).unwrap();
        w.hard_link(&names("ro/g"), &names("ro/f")).unwrap();
        w.symlink(&names("ro/s"), b"f", &meta(libc::S_IFLNK | 0o777)).unwrap();
        w.finish().unwrap();
        for (p, mode) in [("", 0o751), ("ro", 0o500), ("ro/f", 0o4755)] {
            let md = fs::symlink_metadata(dest.join(p)).unwrap();
            assert_eq!(md.mode() & 0o7777, mode, "{p}");
            assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 987_654_321), "{p}");
            assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 1), "{p}");
        }
        let md = fs::symlink_metadata(dest.join("ro/s")).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 987_654_321));
        let f = dest.join("ro/f");
        assert_eq!(fs::metadata(&f).unwrap().len(), 1 << 20);
        assert_eq!(fs::metadata(&f).unwrap().nlink(), 2);
        assert!(is_sparse(&f));
        let x = crate::tree::read_xattrs(&f).unwrap();
        assert_eq!(x, vec![(b"user.a".to_vec(), b"1".to_vec())]);
    }
}
