//! Shared helpers of the image tests: build an encrypted ext4 image from a
//! tree through `libimage::ops::ext4`, and check it with e2fsck.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fscrypt::MasterKey;
use libimage::ops::ext4::{create_ext4, Ext4Options, Ext4Report, Ext4Source};
use libimage::progress::Quiet;

/// A fixed 64-byte test key (public; tests only).
pub fn raw_key(seed: u8) -> [u8; 64] {
    let mut k = [0u8; 64];
    for (i, b) in k.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add((i as u8).wrapping_mul(7).wrapping_add(1));
    }
    k
}

pub fn key(seed: u8) -> MasterKey {
    MasterKey::from_bytes(&raw_key(seed)).unwrap()
}

pub fn build(src: Ext4Source<'_>, img: &Path, key: &MasterKey, opts: &Ext4Options) -> Ext4Report {
    create_ext4(img, src, key, opts, &Quiet).unwrap_or_else(|e| panic!("building {}: {e}", img.display()))
}

pub fn build_dir(src: &Path, img: &Path, key: &MasterKey) -> Ext4Report {
    build(Ext4Source::Dir(src), img, key, &Ext4Options::default())
}

/// `e2fsck -fn` must exit 0 (skips, or fails under CI=true, without e2fsck).
pub fn e2fsck(img: &Path) {
    if !testkit::require_tool("e2fsck") {
        return;
    }
    if let Err(e) = testkit::kernel::e2fsck_fn(img) {
        panic!("{e}");
    }
}

pub fn tmp() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let img = t.path().join("img.ext4");
    (t, src, img)
}
