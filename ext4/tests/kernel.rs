//! Issue 9, tests 2 and 3: the kernel mounts what the writer makes and, with
//! the key added by FS_IOC_ADD_ENCRYPTION_KEY, reads the source tree back
//! under /data; without it, only no-key names; read-write use keeps the image
//! e2fsck-clean; a cryptimg snapshot rekeyed A→B exports to an image that
//! mounts with B alone.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::build::Reproducible;
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::ext4::{Ext4Options, Ext4Source};
use libimage::ops::lifecycle::{rekey, RekeyOptions};
use libimage::progress::Quiet;
use testkit::kernel::LoopMount;

/// Every name below `root` (recursively), as bytes.
fn names(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        out.push(e.file_name().as_bytes().to_vec());
        if e.file_type().unwrap().is_dir() {
            out.extend(names(&e.path()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Adds device nodes (root only, which the kernel tests are) to `src`.
fn add_devices(src: &Path) {
    for (name, kind, major, minor) in [("null", "c", "1", "3"), ("bigdev", "b", "300", "70000")] {
        let st = std::process::Command::new("mknod")
            .arg(src.join(name))
            .args([kind, major, minor])
            .status()
            .unwrap();
        assert!(st.success(), "mknod {name}");
    }
}

#[test]
fn kernel_reads_the_tricky_tree() {
    testkit::require_kernel!();
    let (_t, src, img) = tmp();
    testkit::make_tricky_tree(&src).unwrap();
    add_devices(&src);
    build_dir(&src, &img, &key(1));
    e2fsck(&img);

    // Without the key: no-key names only, and no plaintext in the image.
    {
        let m = LoopMount::new(&img, true).unwrap();
        let top: Vec<Vec<u8>> = fs::read_dir(m.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        assert_eq!(top.len(), fs::read_dir(&src).unwrap().count());
        for n in &top {
            assert!(
                fs::symlink_metadata(src.join(std::ffi::OsStr::from_bytes(n))).is_err(),
                "plaintext name {n:?} visible without the key"
            );
        }
        m.unmount().unwrap();
    }
    let bytes = fs::read(&img).unwrap();
    for secret in [
        &b"long-symlink-component"[..],
        b"nonexistent/absolute",
        b"at the bottom",
        b"latin-1 name",
        b"255-byte name",
        b"xattr_file",
        b"emptydir",
        b"setuid",
    ] {
        assert!(
            !contains(&bytes, secret),
            "plaintext {:?} found in the image",
            String::from_utf8_lossy(secret)
        );
    }
    // A 1 MiB random chunk of sizes/big must not appear either.
    let big = fs::read(src.join("sizes/big")).unwrap();
    assert!(!contains(&bytes, &big[4096..4096 + 64]), "plaintext file contents in the image");

    // With the key: the tree reads back exactly.
    let mut m = LoopMount::new(&img, true).unwrap();
    m.add_key(&raw_key(1)).unwrap();
    if let Err(e) = testkit::tree_equal(&src, &m.join("data")) {
        panic!("{e}");
    }
    assert!(names(&m.join("data")).iter().any(|n| n == &vec![b'n'; 255]));
    m.unmount().unwrap();
}

#[test]
fn read_write_in_a_20k_entry_directory() {
    testkit::require_kernel!();
    let (_t, src, img) = tmp();
    let d = src.join("big");
    fs::create_dir(&d).unwrap();
    for i in 0..20_000 {
        fs::write(d.join(format!("file-{i:06}")), i.to_string()).unwrap();
    }
    build_dir(&src, &img, &key(2));
    e2fsck(&img);
    let mut m = LoopMount::new(&img, false).unwrap();
    m.add_key(&raw_key(2)).unwrap();
    let big = m.join("data/big");
    assert_eq!(fs::read_to_string(big.join("file-012345")).unwrap(), "12345");
    for i in 0..500 {
        fs::write(big.join(format!("new-{i}")), b"new").unwrap();
        fs::rename(big.join(format!("file-{i:06}")), big.join(format!("renamed-{i}"))).unwrap();
        fs::remove_file(big.join(format!("file-{:06}", 19_999 - i))).unwrap();
    }
    fs::create_dir(big.join("subdir")).unwrap();
    fs::write(big.join("subdir/inner"), vec![7u8; 100_000]).unwrap();
    assert_eq!(fs::read_dir(&big).unwrap().count(), 20_000 + 1);
    m.unmount().unwrap();
    e2fsck(&img);
    let mut m = LoopMount::new(&img, true).unwrap();
    m.add_key(&raw_key(2)).unwrap();
    assert_eq!(fs::read(m.join("data/big/renamed-7")).unwrap(), b"7");
    assert_eq!(fs::read(m.join("data/big/subdir/inner")).unwrap(), vec![7u8; 100_000]);
    m.unmount().unwrap();
}

#[test]
fn export_of_a_rekeyed_snapshot_mounts_with_the_new_key() {
    testkit::require_kernel!();
    let (t, src, img) = tmp();
    testkit::make_tricky_tree(&src).unwrap();
    let cimg = t.path().join("c.img");
    let (a, b) = (key(10), key(11));
    create_image(&cimg, Source::Dir(&src), &a, &CreateOptions::default(), &Quiet).unwrap();
    {
        let mut im = Image::open(&cimg, Access::ReadWrite).unwrap();
        let old = Keyring::new(vec![key(10)]);
        rekey(
            &mut im,
            "main",
            &old,
            &b,
            &RekeyOptions {
                batch_bytes: 1 << 20,
                batch_extents: 1000,
                ..Default::default()
            },
            &Quiet,
        )
        .unwrap();
    }
    let keys = Keyring::new(vec![key(10), key(11)]);
    // With only B the export is refused up front (data extents are still under A).
    let only_b = Keyring::new(vec![key(11)]);
    let e = libimage::ops::ext4::create_ext4(
        &img,
        Ext4Source::Image {
            path: &cimg,
            snapshot: None,
            keys: &only_b,
        },
        &b,
        &Ext4Options::default(),
        &Quiet,
    )
    .unwrap_err();
    assert!(matches!(e, libimage::Error::WrongKey { .. }), "{e}");
    assert!(!img.exists());
    build(
        Ext4Source::Image {
            path: &cimg,
            snapshot: Some("main"),
            keys: &keys,
        },
        &img,
        &b,
        &Ext4Options::default(),
    );
    e2fsck(&img);
    let mut m = LoopMount::new(&img, true).unwrap();
    m.add_key(&raw_key(11)).unwrap();
    if let Err(e) = testkit::tree_equal(&src, &m.join("data")) {
        panic!("{e}");
    }
    m.unmount().unwrap();
}

#[test]
fn deterministic_builds_are_byte_identical() {
    let (t, src, img) = tmp();
    testkit::make_tricky_tree(&src).unwrap();
    let opts = Ext4Options {
        repro: Reproducible {
            deterministic: true,
            clamp: Some(1_700_000_000),
        },
        ..Default::default()
    };
    build(Ext4Source::Dir(&src), &img, &key(3), &opts);
    let img2 = t.path().join("again.ext4");
    build(Ext4Source::Dir(&src), &img2, &key(3), &opts);
    assert!(
        fs::read(&img).unwrap() == fs::read(&img2).unwrap(),
        "two deterministic builds differ"
    );
    // And a non-deterministic build differs (fresh uuid and nonces).
    let img3 = t.path().join("random.ext4");
    build(Ext4Source::Dir(&src), &img3, &key(3), &Ext4Options::default());
    assert!(fs::read(&img).unwrap() != fs::read(&img3).unwrap());
    e2fsck(&img);
}

#[test]
fn kernel_reads_a_tar_build() {
    testkit::require_kernel!();
    if !testkit::require_tool("tar") {
        return;
    }
    let (t, src, img) = tmp();
    testkit::make_tricky_tree(&src).unwrap();
    add_devices(&src);
    let tar = t.path().join("t.tar");
    let st = std::process::Command::new("tar")
        .args(["--format=pax", "--xattrs", "--xattrs-include=user.*", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    build(Ext4Source::TarFile(&tar), &img, &key(4), &Ext4Options::default());
    e2fsck(&img);
    let mut m = LoopMount::new(&img, true).unwrap();
    m.add_key(&raw_key(4)).unwrap();
    if let Err(e) = testkit::tree_equal(&src, &m.join("data")) {
        panic!("{e}");
    }
    m.unmount().unwrap();
}
