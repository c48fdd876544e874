//! Tree fixtures: a tree full of edge cases ([`make_tricky_tree`]), a tree
//! comparator ([`tree_diff`], [`tree_equal`]), and a deterministic PRNG.
//! Only std and small crates (`xattr`, `filetime`, `rustix`): no cryptimg
//! types, so libimage's own unit tests can use them too.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

/// Small deterministic PRNG (splitmix64) for test data.
pub struct TestRng(u64);

impl TestRng {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// 16 pseudo-random bytes (a key id or nonce).
    pub fn arr16(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        self.fill(&mut a);
        a
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// What [`make_tricky_tree`] could put into the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeFeatures {
    /// The filesystem accepted user xattrs (on `xattr_file` and `xattr_dir`).
    pub xattrs: bool,
}

/// The 3 names of the hard-linked file in [`make_tricky_tree`].
pub const HARD_LINK_NAMES: [&str; 3] = ["links/a/orig", "links/b/second", "third"];
/// The sparse file of [`make_tricky_tree`]: 1 MiB data, hole, 4 KiB at 20 MiB, size 32 MiB.
pub const SPARSE_NAME: &str = "sparse";

fn os_err_is(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

/// Build the tricky tree under `root` (which must exist and be empty): files
/// of 0, 1, 4095, 4096, 4097 bytes and 5 MiB (seeded pseudo-random); a sparse
/// file; a file with 3 names in different directories; absolute, relative
/// and long (> 1000 bytes) symlinks; an empty and a 20-deep directory; names
/// of 1 and 255 bytes and a non-UTF-8 name; user xattrs on a file and a
/// directory (if the filesystem takes them, see the return value); a setuid
/// file, a sticky directory, a FIFO; when run as root, a file owned by
/// 1234:5678. Every entry, the root included, gets a distinct mtime with
/// nanoseconds.
pub fn make_tricky_tree(root: &Path) -> io::Result<TreeFeatures> {
    let mut rng = TestRng::new(0x5eed_7ee5);
    let at = |rel: &str| root.join(rel);
    let random_file = |rel: &str, len: usize, rng: &mut TestRng| {
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf);
        fs::write(at(rel), buf)
    };

    fs::create_dir(at("sizes"))?;
    for (name, len) in [
        ("empty", 0),
        ("one", 1),
        ("f4095", 4095),
        ("f4096", 4096),
        ("f4097", 4097),
        ("big", 5 << 20),
    ] {
        random_file(&format!("sizes/{name}"), len, &mut rng)?;
    }

    let sparse = File::create(at(SPARSE_NAME))?;
    let mut buf = vec![0u8; 1 << 20];
    rng.fill(&mut buf);
    sparse.write_all_at(&buf, 0)?;
    rng.fill(&mut buf[..4096]);
    sparse.write_all_at(&buf[..4096], 20 << 20)?;
    sparse.set_len(32 << 20)?;
    drop(sparse);

    fs::create_dir_all(at("links/a"))?;
    fs::create_dir_all(at("links/b"))?;
    random_file(HARD_LINK_NAMES[0], 10_000, &mut rng)?;
    for name in &HARD_LINK_NAMES[1..] {
        fs::hard_link(at(HARD_LINK_NAMES[0]), at(name))?;
    }

    fs::create_dir(at("sym"))?;
    std::os::unix::fs::symlink("/nonexistent/absolute/target", at("sym/abs"))?;
    std::os::unix::fs::symlink("../sizes/one", at("sym/rel"))?;
    std::os::unix::fs::symlink("long-symlink-component/".repeat(50), at("sym/long"))?;

    fs::create_dir(at("emptydir"))?;
    let mut deep = at("deep");
    for i in 1..=20 {
        deep.push(format!("d{i:02}"));
    }
    fs::create_dir_all(&deep)?;
    fs::write(deep.join("bottom"), b"at the bottom")?;

    fs::create_dir(at("names"))?;
    fs::write(at("names/a"), b"1-byte name")?;
    fs::write(at(&format!("names/{}", "n".repeat(255))), b"255-byte name")?;
    fs::write(at("names").join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name")?;

    fs::write(at("setuid"), b"#!/bin/sh\n")?;
    fs::set_permissions(at("setuid"), fs::Permissions::from_mode(0o4755))?;
    fs::create_dir(at("sticky"))?;
    fs::set_permissions(at("sticky"), fs::Permissions::from_mode(0o1777))?;
    mkfifo(&at("fifo"), 0o640)?;
    if running_as_root() {
        std::os::unix::fs::lchown(at("sizes/one"), Some(1234), Some(5678))?;
    }

    fs::write(at("xattr_file"), b"has xattrs")?;
    fs::create_dir(at("xattr_dir"))?;
    let xattrs: [(&str, &str, &[u8]); 3] = [
        ("xattr_file", "user.test", b"value"),
        ("xattr_file", "user.binary", b"\0\nbin\xff\n"),
        ("xattr_dir", "user.dir", b"on a directory"),
    ];
    let mut features = TreeFeatures { xattrs: true };
    for (rel, name, value) in xattrs {
        match xattr::set(at(rel), name, value) {
            Ok(()) => {}
            Err(e) if os_err_is(&e, &[libc::EOPNOTSUPP, libc::EPERM]) => {
                features.xattrs = false;
                break;
            }
            Err(e) => return Err(e),
        }
    }

    stamp_times(root, true)?;
    Ok(features)
}

/// Gives every entry below `root` (the root included, symlinks themselves,
/// children before parents) a distinct mtime and atime, with nanoseconds
/// when `with_nanos`, else whole seconds.
pub fn stamp_times(root: &Path, with_nanos: bool) -> io::Result<()> {
    for (i, rel) in list_tree(root)?.keys().rev().enumerate() {
        let nsec = if with_nanos {
            ((i as u64 * 123_456_791 + 17) % 1_000_000_000) as u32
        } else {
            0
        };
        let sec = 1_600_000_000 + i as i64 * 3601;
        let mtime = FileTime::from_unix_time(sec, nsec);
        let atime = FileTime::from_unix_time(sec - 86_400, nsec / 2);
        filetime::set_symlink_file_times(root.join(rel), atime, mtime)?;
    }
    Ok(())
}

/// Every path below `root` (relative; the root itself is the empty path),
/// in pre-order with children sorted, with its lstat metadata.
fn list_tree(root: &Path) -> io::Result<BTreeMap<PathBuf, fs::Metadata>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let md = fs::symlink_metadata(root.join(&rel))?;
        if md.is_dir() {
            for de in fs::read_dir(root.join(&rel))? {
                todo.push(rel.join(de?.file_name()));
            }
        }
        out.insert(rel, md);
    }
    Ok(out)
}

/// Reads until `buf` is full or EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// For every non-directory path, the sorted paths sharing its inode.
fn link_groups(tree: &BTreeMap<PathBuf, fs::Metadata>) -> HashMap<&Path, Vec<&Path>> {
    let mut by_inode: HashMap<(u64, u64), Vec<&Path>> = HashMap::new();
    for (rel, md) in tree.iter().filter(|(_, md)| !md.is_dir()) {
        by_inode.entry((md.dev(), md.ino())).or_default().push(rel);
    }
    let mut out = HashMap::new();
    for group in by_inode.into_values() {
        for &p in &group {
            out.insert(p, group.clone());
        }
    }
    out
}

/// Compare two trees: type, full mode, uid, gid, mtime (sec and ns), size,
/// content, xattrs, symlink targets, device numbers, and hard-link structure
/// (the same groups of paths share an inode). Not atime/ctime, not sparseness
/// (see [`is_sparse`]). Returns human-readable differences (empty = equal).
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    let (ta, tb) = match (list_tree(a), list_tree(b)) {
        (Ok(ta), Ok(tb)) => (ta, tb),
        (Err(e), _) => return vec![format!("cannot list {}: {e}", a.display())],
        (_, Err(e)) => return vec![format!("cannot list {}: {e}", b.display())],
    };
    let mut out = Vec::new();
    for rel in ta.keys().filter(|k| !tb.contains_key(*k)) {
        out.push(format!("{}: only in {}", rel.display(), a.display()));
    }
    for rel in tb.keys().filter(|k| !ta.contains_key(*k)) {
        out.push(format!("{}: only in {}", rel.display(), b.display()));
    }
    let (ga, gb) = (link_groups(&ta), link_groups(&tb));
    for (rel, ma) in &ta {
        let Some(mb) = tb.get(rel) else { continue };
        let mut diff = |what: &str, va: String, vb: String| {
            if va != vb {
                out.push(format!("{}: {what} differs: {va} vs {vb}", rel.display()));
            }
        };
        diff("mode", format!("{:o}", ma.mode()), format!("{:o}", mb.mode()));
        if ma.mode() & libc::S_IFMT != mb.mode() & libc::S_IFMT {
            continue;
        }
        diff("owner", format!("{}:{}", ma.uid(), ma.gid()), format!("{}:{}", mb.uid(), mb.gid()));
        diff(
            "mtime",
            format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
            format!("{}.{:09}", mb.mtime(), mb.mtime_nsec()),
        );
        let (pa, pb) = (a.join(rel), b.join(rel));
        let xattrs = |p: &Path| format!("{:?}", read_xattrs(p).map_err(|e| e.to_string()));
        diff("xattrs", xattrs(&pa), xattrs(&pb));
        let ft = ma.file_type();
        if ft.is_file() {
            diff("size", ma.len().to_string(), mb.len().to_string());
            if ma.len() == mb.len() {
                let same = match same_content(&pa, &pb) {
                    Ok(true) => "equal".to_string(),
                    Ok(false) => "different".to_string(),
                    Err(e) => e.to_string(),
                };
                diff("content", "equal".into(), same);
            }
        } else if ft.is_symlink() {
            let target = |p: &Path| format!("{:?}", fs::read_link(p).map_err(|e| e.to_string()));
            diff("symlink target", target(&pa), target(&pb));
        } else if !ft.is_dir() {
            diff("rdev", ma.rdev().to_string(), mb.rdev().to_string());
        }
        if !ft.is_dir() {
            diff(
                "hard links",
                format!("{:?}", ga.get(rel.as_path())),
                format!("{:?}", gb.get(rel.as_path())),
            );
        }
    }
    out
}

/// True if `p` occupies fewer bytes on disk than its size (has holes).
pub fn is_sparse(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.blocks() * 512 < m.len())
}

/// True when the process runs with effective uid 0.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Creates a FIFO at `p` with permission bits `mode` (less the umask).
fn mkfifo(p: &Path, mode: u32) -> io::Result<()> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, p, FileType::Fifo, Mode::from_bits_truncate(mode), 0).map_err(io::Error::from)
}

/// The extended attributes of `p` itself (a symlink's own), sorted by name;
/// none where the filesystem has no xattr support.
pub fn read_xattrs(p: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(e) if os_err_is(&e, &[libc::EOPNOTSUPP]) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(p, &name) {
            Ok(Some(v)) => out.push((name, v)),
            Ok(None) => {}
            Err(e) if os_err_is(&e, &[libc::ENODATA, libc::EPERM, libc::EACCES, libc::EOPNOTSUPP]) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// [`tree_diff`] as a result: `Err` lists every difference, one per line.
pub fn tree_equal(a: &Path, b: &Path) -> Result<(), String> {
    let diff = tree_diff(a, b);
    if diff.is_empty() {
        Ok(())
    } else {
        Err(format!("{} and {} differ:\n  {}", a.display(), b.display(), diff.join("\n  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b, mut c) = (TestRng::new(1), TestRng::new(1), TestRng::new(2));
        let (mut x, mut y, mut z) = ([0u8; 37], [0u8; 37], [0u8; 37]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.next_u64(), a.next_u64());
    }

    #[test]
    fn is_sparse_tells_holes() {
        let tmp = tempfile::tempdir().unwrap();
        make_tricky_tree(tmp.path()).unwrap();
        assert!(is_sparse(&tmp.path().join(SPARSE_NAME)));
        assert!(!is_sparse(&tmp.path().join("sizes/big")));
        assert!(!is_sparse(&tmp.path().join("missing")));
    }

    #[test]
    fn tree_diff_sees_every_kind_of_difference() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        make_tricky_tree(&a).unwrap();
        make_tricky_tree(&b).unwrap();
        assert_eq!(tree_diff(&a, &b), Vec::<String>::new());

        let at = |rel: &str| b.join(rel);
        let keep_times = |rel: &str, f: &dyn Fn()| {
            let md = fs::symlink_metadata(at(rel)).unwrap();
            f();
            let t = FileTime::from_unix_time(md.mtime(), md.mtime_nsec() as u32);
            filetime::set_symlink_file_times(at(rel), t, t).unwrap();
        };
        keep_times("sizes/f4097", &|| {
            let f = fs::OpenOptions::new().write(true).open(at("sizes/f4097")).unwrap();
            f.write_all_at(b"!", 4096).unwrap();
        });
        fs::set_permissions(at("setuid"), fs::Permissions::from_mode(0o755)).unwrap();
        let t = FileTime::from_unix_time(1, 2);
        filetime::set_symlink_file_times(at("names/a"), t, t).unwrap();
        keep_times("third", &|| {
            fs::remove_file(at("third")).unwrap();
            fs::copy(at(HARD_LINK_NAMES[0]), at("third")).unwrap();
        });
        keep_times("sym/rel", &|| {
            fs::remove_file(at("sym/rel")).unwrap();
            std::os::unix::fs::symlink("../sizes/onE", at("sym/rel")).unwrap();
        });
        fs::remove_dir(at("emptydir")).unwrap();
        xattr::set(at("xattr_file"), "user.test", b"other").unwrap();
        keep_times("sizes/one", &|| fs::write(at("sizes/one"), b"ab").unwrap());
        fs::remove_file(at("fifo")).unwrap();
        fs::write(at("fifo"), b"").unwrap();
        let root = running_as_root();
        if root {
            std::os::unix::fs::lchown(at("sizes/empty"), Some(1), Some(1)).unwrap();
        }

        let diff = tree_diff(&a, &b);
        let mut expect = vec![
            "sizes/f4097: content differs",
            "setuid: mode differs",
            "names/a: mtime differs",
            "third: hard links differs",
            "links/a/orig: hard links differs",
            "sym/rel: symlink target differs",
            "emptydir: only in",
            "xattr_file: xattrs differs",
            "sizes/one: size differs",
            "fifo: mode differs",
        ];
        if root {
            expect.push("sizes/empty: owner differs");
        }
        for e in expect {
            assert!(diff.iter().any(|d| d.starts_with(e)), "missing {e:?} in {diff:#?}");
        }
        assert!(!diff.iter().any(|d| d.starts_with("sizes/big")), "{diff:#?}");
        assert!(tree_equal(&a, &b).unwrap_err().contains("setuid: mode differs"));
    }
}
