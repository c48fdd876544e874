//! The writer alone (no fscrypt glue): images must pass `e2fsck -fn`.

use std::fs::File;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use ext4fs::inode::{Time, S_IFCHR, S_IFIFO};
use ext4fs::writer::{Attrs, Dense, Options, Writer};
use ext4fs::xattr::Xattr;
use ext4fs::ROOT_INO;

fn have_e2fsck() -> bool {
    let ok = Command::new("e2fsck").arg("-V").output().is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("e2fsck is missing under CI=true");
        }
        eprintln!("SKIP: writer_e2fsck: e2fsck not installed");
    }
    ok
}

pub fn e2fsck(img: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {} failed ({}):\n{}\n{}",
        img.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn opts(blocks: u64, journal: bool) -> Options {
    Options {
        blocks,
        inodes: 4000,
        journal,
        encrypt: true,
        uuid: [0x42; 16],
        hash_seed: [7; 16],
        now: 1_700_000_000,
    }
}

fn attrs(mode: u16) -> Attrs {
    let t = Time {
        sec: 1_600_000_000,
        nsec: 123_456_789,
    };
    Attrs {
        mode,
        uid: 1000,
        gid: 100,
        atime: t,
        mtime: t,
        ctime: t,
        ..Default::default()
    }
}

#[test]
fn plaintext_tree_passes_e2fsck() {
    if !have_e2fsck() {
        return;
    }
    for journal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        let mut w = Writer::new(File::create(&img).unwrap(), opts(40_000, journal)).unwrap();
        let d = w.mkdir(ROOT_INO, b"dir", attrs(0o1777), None).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let f = w
            .file(d, b"file", attrs(0o4755), None, data.len() as u64, &mut Dense(Cursor::new(&data)))
            .unwrap();
        w.link(ROOT_INO, b"hardlink", f).unwrap();
        let mut sparse = vec![0u8; 5 << 20];
        sparse[3 << 20] = 1;
        w.file(
            d,
            b"sparse",
            attrs(0o644),
            None,
            sparse.len() as u64,
            &mut Dense(Cursor::new(&sparse)),
        )
        .unwrap();
        w.symlink(d, b"fast", attrs(0o777), None, b"target\0").unwrap();
        let mut long = vec![b'x'; 300];
        long.push(0);
        w.symlink(d, b"slow", attrs(0o777), None, &long).unwrap();
        w.special(d, b"fifo", attrs(S_IFIFO | 0o644)).unwrap();
        let mut dev = attrs(S_IFCHR | 0o600);
        dev.rdev = (1 << 8) | 3;
        w.special(d, b"null", dev).unwrap();
        let mut xa = attrs(0o644);
        xa.xattrs = vec![Xattr {
            index: 1,
            name: b"small".to_vec(),
            value: b"v".to_vec(),
        }];
        w.file(d, b"xsmall", xa, None, 0, &mut Dense(std::io::empty())).unwrap();
        let mut xb = attrs(0o644);
        xb.xattrs = vec![Xattr {
            index: 1,
            name: b"big".to_vec(),
            value: vec![9; 2000],
        }];
        w.file(d, b"xbig", xb, None, 0, &mut Dense(std::io::empty())).unwrap();
        let many = w.mkdir(d, b"many", attrs(0o755), None).unwrap();
        for i in 0..3000 {
            w.file(
                many,
                format!("entry-{i:05}-{}", "n".repeat(i % 200)).as_bytes(),
                attrs(0o644),
                None,
                0,
                &mut Dense(std::io::empty()),
            )
            .unwrap();
        }
        let st = w.finish().unwrap();
        assert_eq!(st.files, 3004);
        e2fsck(&img);
        // The 3000-entry directory is hash-indexed and e2fsprogs reads the index.
        let dump = Command::new("debugfs")
            .args(["-R", "htree_dump /dir/many"])
            .arg(&img)
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(
            dump.contains("Root node dump") && dump.contains("Number of entries (count):"),
            "{dump}"
        );
        let ls = Command::new("debugfs").args(["-R", "ls -l /dir/many"]).arg(&img).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&ls.stdout).matches("entry-").count(), 3000);
    }
}

#[test]
fn e2fsck_catches_a_broken_image() {
    // The check above must be able to fail: flip a byte of an inode table.
    if !have_e2fsck() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t.img");
    let mut w = Writer::new(File::create(&img).unwrap(), opts(8192, false)).unwrap();
    w.mkdir(ROOT_INO, b"d", attrs(0o755), None).unwrap();
    w.finish().unwrap();
    e2fsck(&img);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let sb = {
        let mut b = vec![0u8; 1024];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 1024).unwrap();
        ext4fs::superblock::Superblock::from_bytes(&b).unwrap()
    };
    let mut gd = vec![0u8; 64];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut gd, 4096).unwrap();
    let gd = ext4fs::group_desc::GroupDesc::from_bytes(&gd, ext4fs::csum::fs_seed(&sb.uuid), 0).unwrap();
    // Inode 12 ("d"): change its mode byte.
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x55], gd.inode_table * 4096 + 11 * 256 + 1).unwrap();
    drop(f);
    let out = Command::new("e2fsck").arg("-fn").arg(&img).output().unwrap();
    assert!(!out.status.success(), "e2fsck accepted a corrupted inode");
}

#[test]
fn oversized_xattrs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::new(File::create(dir.path().join("x.img")).unwrap(), opts(8192, false)).unwrap();
    let mut a = attrs(0o644);
    a.xattrs = vec![Xattr {
        index: 1,
        name: b"big".to_vec(),
        value: vec![1; 5000],
    }];
    assert!(matches!(
        w.file(ROOT_INO, b"f", a, None, 0, &mut Dense(std::io::empty())),
        Err(ext4fs::Error::Invalid(_))
    ));
    let mut a = attrs(0o644);
    a.xattrs = vec![Xattr {
        index: 1,
        name: vec![b'n'; 300],
        value: vec![],
    }];
    assert!(matches!(w.mkdir(ROOT_INO, b"d", a, None), Err(ext4fs::Error::Invalid(_))));
}

/// A 1 TiB file that is one hole and one block of data at 512 GiB; reading
/// inside the hole is an error, so the writer must skip it.
struct HugeSparse {
    pos: u64,
}

const HUGE: u64 = 1 << 40;
const DATA_AT: u64 = 1 << 39;

impl std::io::Read for HugeSparse {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < DATA_AT {
            return Err(std::io::Error::other("read inside the hole"));
        }
        let n = buf.len().min((HUGE - self.pos) as usize);
        buf[..n].fill(0xAB);
        self.pos += n as u64;
        Ok(n)
    }
}

impl ext4fs::writer::FileData for HugeSparse {
    fn run(&mut self) -> std::io::Result<ext4fs::writer::Run> {
        Ok(if self.pos < DATA_AT {
            ext4fs::writer::Run::Hole { end: DATA_AT }
        } else {
            ext4fs::writer::Run::Data { end: DATA_AT + 4096 }
        })
    }
    fn skip_hole(&mut self, to: u64) -> std::io::Result<()> {
        self.pos = to;
        Ok(())
    }
}

#[test]
fn holes_the_source_knows_are_skipped_not_read() {
    if !have_e2fsck() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("h.img");
    let mut w = Writer::new(File::create(&img).unwrap(), opts(8192, false)).unwrap();
    // Data past the first block of the run is 0xAB up to the end: 512 GiB of
    // it would not fit, so stop the file right after the data block.
    let mut src = HugeSparse { pos: 0 };
    let size = DATA_AT + 4096;
    w.file(ROOT_INO, b"huge", attrs(0o644), None, size, &mut src).unwrap();
    let st = w.finish().unwrap();
    assert_eq!(st.bytes, size);
    e2fsck(&img);
}

/// `Writer::set_dir_hash`: indexed directories hashed with each hash
/// version and signedness (names with high-bit bytes, where signed and
/// unsigned differ) pass e2fsck, which rehashes every entry with the
/// superblock's version and flags; an unknown version is refused.
#[test]
fn every_dir_hash_flavour_passes_e2fsck() {
    if !have_e2fsck() {
        return;
    }
    for (version, signed) in [(0u8, true), (0, false), (1, true), (1, false), (2, true), (2, false)] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        let mut w = Writer::new(File::create(&img).unwrap(), opts(20_000, false)).unwrap();
        w.set_dir_hash(version, signed).unwrap();
        let d = w.mkdir(ROOT_INO, b"big", attrs(0o755), None).unwrap();
        for i in 0..1500u32 {
            let name = format!("entry-\u{e9}\u{fc}-{i:05}");
            w.special(d, name.as_bytes(), attrs(S_IFIFO | 0o644)).unwrap();
        }
        w.finish().unwrap();
        e2fsck(&img);
        let raw = std::fs::read(&img).unwrap();
        let sb = ext4fs::superblock::Superblock::from_bytes(&raw[1024..2048]).unwrap();
        assert_eq!(sb.def_hash_version, version);
        let want = if signed {
            ext4fs::superblock::FLAGS_SIGNED_HASH
        } else {
            ext4fs::superblock::FLAGS_UNSIGNED_HASH
        };
        assert_eq!(sb.flags & 3, want);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::new(File::create(dir.path().join("t.img")).unwrap(), opts(20_000, false)).unwrap();
    assert!(w.set_dir_hash(3, false).is_err());
}
