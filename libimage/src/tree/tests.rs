use super::tar::*;
use super::walk::*;
use super::*;
use crate::error::{CorruptKind, Error, Result};
use crate::tree::test_sink::CopySink;
use crate::tree::write::TreeWriter;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use testkit::{is_sparse, make_tricky_tree, stamp_times, tree_diff, TestRng, HARD_LINK_NAMES, SPARSE_NAME};

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
    crate::sys::mkfifo(&crate::sys::c_path(&src.join("p")).unwrap(), 0o600).unwrap();
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
    let mut b = ::tar::Builder::new(Vec::new());
    let header = |ty: ::tar::EntryType, size: u64, mode: u32| {
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_700_000_000);
        h
    };
    let long = format!("top/{}", "x".repeat(150));
    b.append_data(&mut header(::tar::EntryType::Directory, 0, 0o755), "top/", &[][..])
        .unwrap();
    let data = b"long name data\n".repeat(100);
    let mut h = header(::tar::EntryType::Regular, data.len() as u64, 0o640);
    b.append_data(&mut h, &long, &data[..]).unwrap();
    b.append_pax_extensions([
        ("path", &b"top/pax-\xe9-file"[..]),
        ("mtime", b"1700000001.123456789"),
        ("atime", b"-1.25"),
        ("SCHILY.xattr.user.k", b"v\nwith newline"),
        ("SCHILY.xattr.user.empty", b""),
    ])
    .unwrap();
    let mut h = header(::tar::EntryType::Regular, 5, 0o600);
    b.append_data(&mut h, "placeholder", &b"hello"[..]).unwrap();
    let target = "t/".repeat(600);
    let mut h = header(::tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "./top/sym", &target).unwrap();
    let mut h = header(::tar::EntryType::Link, 0, 0o640);
    b.append_link(&mut h, "top/hard", &long).unwrap();
    let mut h = header(::tar::EntryType::Char, 0, 0o620);
    h.set_device_major(4).unwrap();
    h.set_device_minor(64).unwrap();
    b.append_data(&mut h, "top/tty", &[][..]).unwrap();
    let mut h = header(::tar::EntryType::Fifo, 0, 0o644);
    b.append_data(&mut h, "top/fifo", &[][..]).unwrap();
    let mut h = header(::tar::EntryType::Regular, 3, 0o644);
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
    let mut b = ::tar::Builder::new(Vec::new());
    b.sparse(true);
    b.append_path_with_name(src.join(SPARSE_NAME), "s").unwrap();
    let archive = b.into_inner().unwrap();
    let hdr = ::tar::Header::from_byte_slice(&archive[..512]);
    assert_eq!(hdr.entry_type(), ::tar::EntryType::GNUSparse);
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
    let mut a = ::tar::Archive::new(archive);
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

fn raw_header(name: &[u8], ty: u8, size: u64) -> ::tar::Header {
    let mut h = ::tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkflag = [ty];
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_cksum();
    h
}

fn archive_of(parts: &[(&::tar::Header, &[u8])]) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
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
    let mut b = ::tar::Builder::new(Vec::new());
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
    let mut b = ::tar::Builder::new(Vec::new());
    let big = vec![b'v'; MAX_XATTR_VALUE + 1];
    b.append_pax_extensions([("SCHILY.xattr.user.big", &big[..])]).unwrap();
    b.append(&raw_header(b"f", b'0', 0), &[][..]).unwrap();
    assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 0);
    // Two pax headers for one member.
    let mut b = ::tar::Builder::new(Vec::new());
    b.append_pax_extensions([("mtime", &b"1"[..])]).unwrap();
    b.append_pax_extensions([("mtime", &b"2"[..])]).unwrap();
    b.append(&raw_header(b"f", b'0', 0), &[][..]).unwrap();
    assert_corrupt_at(tar_collect(&b.into_inner().unwrap()), 1024);
    // A pax 1.0 sparse map claiming 10^12 segments.
    let mut b = ::tar::Builder::new(Vec::new());
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
    let mut b = ::tar::Builder::new(Vec::new());
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
    let mut b = ::tar::Builder::new(Vec::new());
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
