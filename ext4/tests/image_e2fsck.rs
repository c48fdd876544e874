//! Issue 9, test 1: `e2fsck -fn` exits 0 on every image built through
//! `mkfs-crypt create --format ext4`'s library path.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::process::Command;

use common::*;
use libimage::ops::ext4::{Ext4Options, Ext4Source};

#[test]
fn tricky_tree() {
    let (_t, src, img) = tmp();
    testkit::make_tricky_tree(&src).unwrap();
    let r = build_dir(&src, &img, &key(1));
    assert!(r.files >= 10 && r.symlinks == 3 && r.hardlinks == 2, "{r:?}");
    e2fsck(&img);
    let nj = img.with_extension("nj");
    let opts = Ext4Options {
        journal: false,
        ..Default::default()
    };
    build(Ext4Source::Dir(&src), &nj, &key(1), &opts);
    e2fsck(&nj);
}

#[test]
fn from_tar() {
    if !testkit::require_tool("tar") {
        return;
    }
    let (t, src, img) = tmp();
    testkit::make_tricky_tree(&src).unwrap();
    let tar = t.path().join("t.tar");
    let st = Command::new("tar")
        .args(["--format=pax", "--xattrs", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let r = build(Ext4Source::TarFile(&tar), &img, &key(2), &Ext4Options::default());
    assert!(r.files >= 10, "{r:?}");
    e2fsck(&img);
    // The same archive as a stream (spooled to size the image).
    let img2 = t.path().join("stream.ext4");
    let mut f = fs::File::open(&tar).unwrap();
    build(Ext4Source::TarStream(&mut f), &img2, &key(2), &Ext4Options::default());
    e2fsck(&img2);
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 4, "spool or temp files left behind");
}

#[test]
fn empty_tree() {
    let (_t, src, img) = tmp();
    let r = build_dir(&src, &img, &key(3));
    assert_eq!((r.files, r.dirs), (0, 1), "only /data");
    e2fsck(&img);
}

#[test]
fn directory_of_20k_entries() {
    let (_t, src, img) = tmp();
    let d = src.join("big");
    fs::create_dir(&d).unwrap();
    for i in 0..20_000 {
        fs::File::create(d.join(format!("file-{i:06}"))).unwrap();
    }
    let r = build_dir(&src, &img, &key(4));
    assert_eq!(r.files, 20_000);
    e2fsck(&img);
}

#[test]
fn sparse_4gib_file() {
    let (_t, src, img) = tmp();
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(4 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"middle", 2 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (4 << 30) - 3).unwrap();
    drop(f);
    let r = build_dir(&src, &img, &key(5));
    assert_eq!(r.bytes, 4 << 30);
    // Holes stay holes: two data blocks, not a million.
    assert!(r.blocks < 100_000, "image of {} blocks for a sparse file", r.blocks);
    e2fsck(&img);
}

#[test]
fn long_symlinks_and_255_byte_names() {
    let (_t, src, img) = tmp();
    for (name, len) in [("s1", 1), ("s31", 31), ("s32", 32), ("s33", 33), ("s500", 500), ("s4093", 4093)] {
        symlink("t".repeat(len), src.join(name)).unwrap();
    }
    for c in [b'a', b'b', 0xff] {
        let name = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(vec![c; 255]);
        fs::File::create(src.join(name)).unwrap().write_all(b"x").unwrap();
    }
    fs::create_dir(src.join("d".repeat(255))).unwrap();
    let r = build_dir(&src, &img, &key(6));
    assert_eq!(r.symlinks, 6);
    e2fsck(&img);
}

trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(v: Vec<u8>) -> std::ffi::OsString;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(v: Vec<u8>) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec(v)
    }
}

#[test]
fn fixed_size_too_small_is_a_clean_error() {
    let (_t, src, img) = tmp();
    fs::write(src.join("f"), vec![1u8; 20 << 20]).unwrap();
    let opts = Ext4Options {
        size: Some(16 << 20),
        ..Default::default()
    };
    let e = libimage::ops::ext4::create_ext4(&img, Ext4Source::Dir(&src), &key(7), &opts, &libimage::progress::Quiet).unwrap_err();
    assert!(matches!(e, libimage::Error::NoSpace { .. }), "{e}");
    assert!(!img.exists(), "a partial image was left behind");
}
