//! `fsck-crypt check --repair` rolls back to the previous generation when
//! the newest metadata is damaged and every block of the older one is intact
//! (issue 11 §2), and refuses when a later write reused those blocks.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fscrypt::MasterKey;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::check::{check, CheckOptions};
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::lifecycle::{update, UpdateOptions};
use libimage::ops::read::TreeReader;
use libimage::progress::Quiet;

fn key() -> MasterKey {
    let raw: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(11).wrapping_add(3)).collect();
    MasterKey::from_bytes(&raw).unwrap()
}

/// An image at generation 2 holding `old`, then updated (generation 3) with
/// `new`. Returns the image path and generation 3's metadata start block.
fn two_generations(d: &Path) -> (PathBuf, u64) {
    let t1 = d.join("t1");
    fs::create_dir_all(&t1).unwrap();
    fs::write(t1.join("old"), vec![1u8; 50_000]).unwrap();
    let p = d.join("img");
    let opts = CreateOptions {
        snapshot: "main".into(),
        repro: Default::default(),
        force: false,
        size: None,
    };
    create_image(&p, Source::Dir(&t1), &key(), &opts, &Quiet).unwrap();
    let t2 = d.join("t2");
    fs::create_dir_all(&t2).unwrap();
    fs::write(t2.join("new"), vec![2u8; 70_000]).unwrap();
    let mut img = Image::open(&p, Access::ReadWrite).unwrap();
    let keys = Keyring::new(vec![key()]);
    let uo = UpdateOptions {
        delete_missing: false,
        rewrite_all: false,
        time: 1_700_000_000,
    };
    update(&mut img, "main", Source::Dir(&t2), &keys, &uo, &Quiet).unwrap();
    assert_eq!(img.superblock().generation, 3);
    (p, img.superblock().meta_start)
}

fn damage(p: &Path, block: u64, at: u64) {
    let f = fs::OpenOptions::new().write(true).read(true).open(p).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, block * 4096 + at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], block * 4096 + at).unwrap();
}

fn names(p: &Path) -> Vec<String> {
    let img = Image::open(p, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![key()]);
    let tr = TreeReader::new(&img, img.snapshot(None).unwrap(), &keys);
    let root = tr.lookup(b"").unwrap();
    tr.list(root)
        .unwrap()
        .into_iter()
        .map(|l| String::from_utf8(l.name).unwrap())
        .collect()
}

fn repair_opts() -> CheckOptions {
    CheckOptions {
        repair: true,
        data: true,
        ..Default::default()
    }
}

#[test]
fn damaged_newest_metadata_rolls_back_to_the_previous_generation() {
    let d = tempfile::tempdir().unwrap();
    let (p, meta) = two_generations(d.path());
    damage(&p, meta, 100);
    // Read-only use refuses the image.
    let e = Image::open(&p, Access::ReadOnly).err().unwrap();
    assert!(e.is_corruption(), "{e}");
    let plain = check(&p, &Keyring::default(), &CheckOptions::default(), &Quiet).unwrap();
    assert_eq!(plain.exit_code, 4);
    let f = plain.findings.iter().find(|f| f.code == "E_META_BLOCK").unwrap();
    assert!(f.hint.contains("--repair` rolls back"), "{}", f.hint);
    // The repair rolls back, says what was lost, exits 1.
    let r = check(&p, &Keyring::new(vec![key()]), &repair_opts(), &Quiet).unwrap();
    assert_eq!(r.exit_code, 1, "{:#?}", r.findings);
    assert_eq!(r.repairs.len(), 1, "{:?}", r.not_repaired);
    let action = &r.repairs[0].action;
    assert!(action.contains("rolled back to generation 2"), "{action}");
    assert!(action.contains("the changes of generation 3 are lost"), "{action}");
    assert_eq!(names(&p), vec!["old".to_string()]);
    let img = Image::open(&p, Access::ReadOnly).unwrap();
    assert_eq!(img.superblock().generation, 3);
    drop(img);
    let again = check(&p, &Keyring::new(vec![key()]), &repair_opts(), &Quiet).unwrap();
    assert_eq!((again.exit_code, again.repairs.len()), (0, 0), "{:#?}", again.findings);
}

#[test]
fn no_rollback_when_the_older_generation_was_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let (p, meta) = two_generations(d.path());
    // The older generation's extent for `old`: its first block.
    let img = Image::open(&p, Access::ReadOnly).unwrap();
    let old_start = img.meta().extents.values().map(|e| e.start).min().unwrap();
    drop(img);
    damage(&p, meta, 100);
    damage(&p, old_start, 7);
    let before = fs::read(&p).unwrap();
    let r = check(&p, &Keyring::default(), &repair_opts(), &Quiet).unwrap();
    assert!(r.repairs.is_empty());
    assert_eq!(r.exit_code, 4);
    assert!(
        r.not_repaired.iter().any(|n| n.contains("no longer matches its crc32c")),
        "{:?}",
        r.not_repaired
    );
    assert_eq!(fs::read(&p).unwrap(), before, "a refused rollback wrote to the image");
}

/// After a delete, the settling commit (FORMAT.md §8) leaves the same tree in
/// both slots: a rollback over it keeps the delete and says nothing is lost.
#[test]
fn rollback_over_a_settling_commit_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (p, _) = two_generations(d.path());
    let mut img = Image::open(&p, Access::ReadWrite).unwrap();
    libimage::ops::lifecycle::snapshot(&mut img, "main", "user", 1_700_000_000).unwrap();
    drop(img);
    let t3 = d.path().join("t3");
    fs::create_dir_all(&t3).unwrap();
    fs::write(t3.join("third"), vec![3u8; 90_000]).unwrap();
    let uo = UpdateOptions {
        delete_missing: true,
        rewrite_all: false,
        time: 1_700_000_000,
    };
    let keys = Keyring::new(vec![key()]);
    let mut img = Image::open(&p, Access::ReadWrite).unwrap();
    update(&mut img, "user", Source::Dir(&t3), &keys, &uo, &Quiet).unwrap();
    let g = img.superblock().generation;
    let r = libimage::ops::lifecycle::delete(&mut img, "user", 1_700_000_000).unwrap();
    assert!(r.bytes_freed >= 90_000, "{r:?}");
    assert_eq!(img.superblock().generation, g + 2, "the delete settles");
    let meta = img.superblock().meta_start;
    drop(img);
    damage(&p, meta, 100);
    let r = check(&p, &keys, &repair_opts(), &Quiet).unwrap();
    assert_eq!(r.repairs.len(), 1, "{:?}", r.not_repaired);
    let action = &r.repairs[0].action;
    assert!(action.contains(&format!("rolled back to generation {}", g + 1)), "{action}");
    assert!(action.contains("settling commit of the same metadata: nothing"), "{action}");
    let img = Image::open(&p, Access::ReadOnly).unwrap();
    let snaps: Vec<_> = img.meta().snapshots.iter().map(|s| s.name.clone()).collect();
    assert_eq!(snaps, vec!["main".to_string()], "the delete is kept");
    drop(img);
    assert_eq!(names(&p), vec!["new".to_string(), "old".to_string()]);
}
