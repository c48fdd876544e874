//! Getting space back: hole punching at commits and `compact`, through the
//! library API, with its crash matrix (every cut leaves a clean image with
//! the same content; a re-run finishes the job).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fscrypt::MasterKey;
use libimage::engine::image::{set_thread_fail_after, Access, Image, Keyring};
use libimage::error::Error;
use libimage::finding::Severity;
use libimage::format::inode::Body;
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::lifecycle::{self, CompactOptions, CompactReport, UpdateOptions};
use libimage::ops::read::TreeReader;
use libimage::progress::Quiet;
use sha2::{Digest, Sha256};
use testkit::TestRng;

const T: i64 = 1_700_000_000;

fn key() -> MasterKey {
    MasterKey::from_bytes(&(0..64u8).map(|i| i.wrapping_mul(7).wrapping_add(3)).collect::<Vec<_>>()).unwrap()
}

/// `files` files of 1..=`max_kib` KiB of pseudo-random data in a few directories.
fn make_tree(root: &Path, seed: u64, files: usize, max_kib: u64) {
    let mut rng = TestRng::new(seed);
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        let len = (rng.next_u64() % max_kib + 1) * 1024 + rng.next_u64() % 1000;
        fs::write(dir.join(format!("f{i}")), rng.bytes(len as usize)).unwrap();
    }
}

fn create(img: &Path, tree: &Path) {
    let opts = CreateOptions {
        force: true,
        ..Default::default()
    };
    create_image(img, Source::Dir(tree), &key(), &opts, &Quiet).unwrap();
}

fn open(p: &Path) -> Image {
    Image::open(p, Access::ReadWrite).unwrap()
}

fn update(p: &Path, snap: &str, tree: &Path, rewrite_all: bool) {
    let opts = UpdateOptions {
        delete_missing: true,
        rewrite_all,
        time: T,
    };
    let keys = Keyring::new(vec![key()]);
    lifecycle::update(&mut open(p), snap, Source::Dir(tree), &keys, &opts, &Quiet).unwrap();
}

fn compact(p: &Path, batch_bytes: u64) -> libimage::Result<CompactReport> {
    let opts = CompactOptions { batch_bytes, time: T };
    lifecycle::compact(&mut Image::open(p, Access::ReadWrite)?, &opts, &Quiet)
}

/// (apparent size, bytes on disk).
fn sizes(p: &Path) -> (u64, u64) {
    let m = fs::metadata(p).unwrap();
    (m.len(), m.blocks() * 512)
}

/// `fsck-crypt check --data` (keyless) must exit 0.
fn check_clean(p: &Path) {
    let opts = libimage::ops::check::CheckOptions {
        data: true,
        ..Default::default()
    };
    let r = libimage::ops::check::check(p, &Keyring::default(), &opts, &Quiet).unwrap();
    assert_eq!(r.exit_code, 0, "{}: {:#?}", p.display(), r.findings);
}

/// Every snapshot's entries: decrypted path, mode, size and content hash.
fn digest(p: &Path) -> String {
    let img = Image::open(p, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![key()]);
    let mut out = String::new();
    for s in &img.meta().snapshots {
        writeln!(out, "snapshot {}", s.name).unwrap();
        let r = TreeReader::new(&img, s, &keys);
        let mut stack = vec![(String::new(), s.root)];
        while let Some((path, dir)) = stack.pop() {
            for l in r.list(dir).unwrap() {
                let p = format!("{path}/{}", String::from_utf8_lossy(&l.name));
                let mut h = Sha256::new();
                if let Body::File { .. } = &l.inode.body {
                    let mut data = vec![0u8; l.inode.size as usize];
                    r.read_file(l.inode.ino, &mut |off, d| {
                        data[off as usize..off as usize + d.len()].copy_from_slice(d);
                        Ok(())
                    })
                    .unwrap();
                    h.update(&data);
                }
                writeln!(out, "{p} {:o} {} {}", l.inode.mode, l.inode.size, hex::encode(h.finalize())).unwrap();
                if l.inode.is_dir() {
                    stack.push((p, l.inode.ino));
                }
            }
        }
    }
    out
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    make_tree(&root.join("tree1"), 1, 120, 96);
    make_tree(&root.join("tree2"), 2, 120, 96);
    Setup { _dir: dir, root }
}

fn within(what: &str, got: u64, fresh: u64) {
    let ratio = got as f64 / fresh as f64;
    eprintln!("{what}: {got} vs fresh {fresh} (ratio {ratio:.3})");
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{what}: {got} is not within 15% of a fresh build's {fresh}"
    );
}

/// The scenario: a snapshot with new data is deleted; compact brings
/// the apparent size and the blocks on disk within 15% of a fresh build.
#[test]
fn compact_after_deleting_a_snapshot_matches_a_fresh_build() {
    let s = setup();
    let (img, fresh) = (s.root.join("img"), s.root.join("fresh"));
    create(&img, &s.root.join("tree1"));
    create(&fresh, &s.root.join("tree1"));
    lifecycle::snapshot(&mut open(&img), "main", "user", T).unwrap();
    update(&img, "user", &s.root.join("tree2"), false);
    lifecycle::delete(&mut open(&img), "user", T).unwrap();
    let main = digest(&img);
    let (len0, _) = sizes(&img);
    let (flen, fdisk) = sizes(&fresh);
    assert!(
        len0 as f64 > 1.5 * flen as f64,
        "the deleted snapshot's data should still take room: {len0} vs {flen}"
    );
    let r = compact(&img, 1 << 20).unwrap();
    eprintln!("{r:?}");
    let (len, disk) = sizes(&img);
    within("apparent size", len, flen);
    within("bytes on disk", disk, fdisk);
    assert_eq!(len, r.file_bytes_after);
    assert_eq!(len, Image::open(&img, Access::ReadOnly).unwrap().superblock().total_blocks * 4096);
    assert_eq!(digest(&img), main);
    check_clean(&img);
    // A second run finds nothing to move and keeps the size.
    let r2 = compact(&img, 1 << 20).unwrap();
    assert_eq!(r2.extents_moved, 0, "{r2:?}");
    assert_eq!(sizes(&img).0, len);
    check_clean(&img);
}

/// Deleting the *older* snapshot leaves the live data at the end of the
/// file: compact must move it down, not just cut a free tail.
#[test]
fn compact_moves_live_extents_down() {
    let s = setup();
    let (img, fresh) = (s.root.join("img"), s.root.join("fresh"));
    create(&img, &s.root.join("tree1"));
    create(&fresh, &s.root.join("tree2"));
    lifecycle::snapshot(&mut open(&img), "main", "user", T).unwrap();
    update(&img, "user", &s.root.join("tree2"), true);
    lifecycle::delete(&mut open(&img), "main", T).unwrap();
    let user = digest(&img);
    let r = compact(&img, 1 << 20).unwrap();
    eprintln!("{r:?}");
    assert!(r.extents_moved > 50 && r.commits > 2, "{r:?}");
    let ((len, disk), (flen, fdisk)) = (sizes(&img), sizes(&fresh));
    within("apparent size", len, flen);
    within("bytes on disk", disk, fdisk);
    assert_eq!(digest(&img), user);
    check_clean(&img);
}

/// Blocks a commit frees are punched at once: the settling commit (FORMAT.md
/// §8) retires the generation before the delete, which still used them, so
/// `du` drops without another command and without `compact`.
#[test]
fn freed_blocks_are_punched_at_once() {
    let s = setup();
    let img = s.root.join("img");
    create(&img, &s.root.join("tree1"));
    lifecycle::snapshot(&mut open(&img), "main", "user", T).unwrap();
    update(&img, "user", &s.root.join("tree2"), false);
    let (len0, disk_full) = sizes(&img);
    let gen0 = Image::open(&img, Access::ReadOnly).unwrap().superblock().generation;
    let freed = lifecycle::delete(&mut open(&img), "user", T).unwrap().bytes_freed;
    assert!(freed > 4 << 20, "{freed}");
    let (len1, disk1) = sizes(&img);
    eprintln!("on disk: {disk_full} before the delete, {disk1} right after it; freed {freed}");
    assert!(
        disk1 + freed * 9 / 10 <= disk_full,
        "not punched at once: {disk1} vs {disk_full} (freed {freed})"
    );
    assert!(len1 >= len0, "punching keeps the apparent size");
    // The delete and its settling commit: both slots hold the new tree.
    let opened = Image::open(&img, Access::ReadOnly).unwrap();
    assert_eq!(opened.superblock().generation, gen0 + 2);
    assert!(opened.reclaim_error().is_none());
    drop(opened);
    check_clean(&img);
    // The next commit punches nothing of what the image still uses.
    let before = digest(&img);
    lifecycle::snapshot(&mut open(&img), "main", "again", T).unwrap();
    check_clean(&img);
    assert!(digest(&img).starts_with(&before));
}

/// A commit that frees nothing (a snapshot only adds references) does not
/// settle: one generation per command, as before.
#[test]
fn commits_that_free_no_extent_do_not_settle() {
    let s = setup();
    let img = s.root.join("img");
    create(&img, &s.root.join("tree1"));
    let gen0 = Image::open(&img, Access::ReadOnly).unwrap().superblock().generation;
    lifecycle::snapshot(&mut open(&img), "main", "user", T).unwrap();
    assert_eq!(Image::open(&img, Access::ReadOnly).unwrap().superblock().generation, gen0 + 1);
}

/// Crashes around the settling commit: every cut of a delete leaves a clean
/// image holding exactly the state before or after the delete; the cuts in
/// the settling commit (after the delete's own flip) leave the state after
/// it, with the freed blocks punched by the next commit instead.
#[test]
fn crash_during_the_settling_commit() {
    let s = setup();
    let base = s.root.join("img");
    let work = s.root.join("work");
    create(&base, &s.root.join("tree1"));
    lifecycle::snapshot(&mut open(&base), "main", "user", T).unwrap();
    update(&base, "user", &s.root.join("tree2"), false);
    let old = digest(&base);
    let del = |p: &Path| lifecycle::delete(&mut Image::open(p, Access::ReadWrite)?, "user", T).map(drop);
    let cut = |k: Option<u64>| {
        fs::copy(&base, &work).unwrap();
        set_thread_fail_after(k);
        let r = del(&work);
        set_thread_fail_after(None);
        r
    };
    cut(None).unwrap();
    let new = digest(&work);
    assert_ne!(old, new);
    let mut n = 1;
    while cut(Some(n)).is_err() {
        n += 1;
        assert!(n < 1000, "the delete never completes");
    }
    let n = n - 1;
    eprintln!("delete: {n} writes");
    let mut after_flip = 0;
    for k in 1..=n {
        let e = cut(Some(k)).unwrap_err();
        assert!(matches!(e, Error::InjectedFault { .. }), "cut at {k}: {e}");
        check_clean(&work);
        let got = digest(&work);
        assert!(
            got == old || got == new,
            "cut at write {k} of {n}: neither the old nor the new state"
        );
        if got == new {
            after_flip += 1;
            // The freed blocks are given back by the next commit.
            let (_, disk) = sizes(&work);
            lifecycle::snapshot(&mut open(&work), "main", "again", T).unwrap();
            check_clean(&work);
            assert!(sizes(&work).1 < disk, "cut at {k}: nothing punched by the next commit");
        }
    }
    // The settling commit's two writes (its metadata region, its superblock).
    assert_eq!(after_flip, 2, "cuts after the delete's flip: {after_flip} of {n}");
}

/// A torn settling superblock (the crash matrix cannot tear a write): the
/// other slot, the delete's own commit, is used, so the tree is the one after
/// the delete; `check` reports the slot as it reports any interrupted
/// superblock write, and the next write replaces it.
#[test]
fn a_torn_settling_superblock_falls_back_to_the_delete() {
    let s = setup();
    let img = s.root.join("img");
    create(&img, &s.root.join("tree1"));
    lifecycle::snapshot(&mut open(&img), "main", "user", T).unwrap();
    update(&img, "user", &s.root.join("tree2"), false);
    lifecycle::delete(&mut open(&img), "user", T).unwrap();
    let after = digest(&img);
    let (slot, g) = {
        let i = Image::open(&img, Access::ReadOnly).unwrap();
        (i.superblock().slot(), i.superblock().generation)
    };
    let f = fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0x5a; 512], slot * 4096 + 1024).unwrap();
    drop(f);
    assert_eq!(Image::open(&img, Access::ReadOnly).unwrap().superblock().generation, g - 1);
    assert_eq!(digest(&img), after);
    let opts = libimage::ops::check::CheckOptions::default();
    let r = libimage::ops::check::check(&img, &Keyring::default(), &opts, &Quiet).unwrap();
    let errors: Vec<_> = r.findings.iter().filter(|f| f.severity == Severity::Error).collect();
    assert!(errors.len() == 1 && errors[0].code == "E_SUPERBLOCK_NEWER", "{:#?}", r.findings);
    lifecycle::snapshot(&mut open(&img), "main", "again", T).unwrap();
    check_clean(&img);
    assert!(digest(&img).starts_with(&after));
}

/// Runs compact on a copy of `base` with the `k`th write failing.
fn run_cut(base: &Path, work: &Path, k: Option<u64>, batch: u64) -> libimage::Result<CompactReport> {
    fs::copy(base, work).unwrap();
    set_thread_fail_after(k);
    let r = compact(work, batch);
    set_thread_fail_after(None);
    r
}

#[test]
fn crash_matrix_compact() {
    let s = setup();
    let base = s.root.join("img");
    let work = s.root.join("work");
    create(&base, &s.root.join("tree1"));
    lifecycle::snapshot(&mut open(&base), "main", "user", T).unwrap();
    update(&base, "user", &s.root.join("tree2"), true);
    lifecycle::delete(&mut open(&base), "main", T).unwrap();
    let content = digest(&base);
    // Batches of 512 KiB: many commits, each a possible cut.
    let batch = 512 << 10;
    let full = run_cut(&base, &work, None, batch).unwrap();
    let final_len = sizes(&work).0;
    // Count the writes of an uninterrupted run.
    let (mut lo, mut hi) = (1u64, 1u64 << 20);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if run_cut(&base, &work, Some(mid), batch).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let n = lo - 1;
    assert!(n > 10, "only {n} writes");
    let mut cuts: Vec<u64> = (1..=12).chain((1..=24).map(|i| n * i / 25)).chain(n - 3..=n).collect();
    cuts.sort_unstable();
    cuts.dedup();
    eprintln!("compact: {n} writes, {} commits; cuts at {cuts:?}", full.commits);
    for k in cuts {
        let e = run_cut(&base, &work, Some(k), batch).unwrap_err();
        assert!(matches!(e, Error::InjectedFault { .. }), "cut at {k}: {e}");
        check_clean(&work);
        assert_eq!(digest(&work), content, "cut at write {k} of {n} changed the content");
        let r = compact(&work, batch).unwrap_or_else(|e| panic!("re-run after a cut at {k}: {e}"));
        check_clean(&work);
        assert_eq!(digest(&work), content);
        let len = sizes(&work).0;
        assert!(
            len as f64 <= final_len as f64 * 1.02,
            "re-run after a cut at {k}: {len} bytes, an uninterrupted run gives {final_len} ({r:?})"
        );
    }
}

/// A rollback (`check --repair` after the newest metadata is damaged) commits
/// the older generation again; the newer one is the previous generation of
/// that commit, so its blocks are not punched (they stay for salvage).
#[test]
fn rollback_punches_nothing_of_the_damaged_generation() {
    let s = setup();
    let img = s.root.join("img");
    create(&img, &s.root.join("tree1"));
    update(&img, "main", &s.root.join("tree2"), false);
    let meta_start = Image::open(&img, Access::ReadOnly).unwrap().superblock().meta_start;
    // Flip one byte of the newest metadata region's payload.
    let f = fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let mut b = [0u8; 1];
    use std::os::unix::fs::FileExt;
    f.read_exact_at(&mut b, meta_start * 4096 + 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], meta_start * 4096 + 100).unwrap();
    drop(f);
    let (_, before) = sizes(&img);
    let opts = libimage::ops::check::CheckOptions {
        repair: true,
        ..Default::default()
    };
    let r = libimage::ops::check::check(&img, &Keyring::default(), &opts, &Quiet).unwrap();
    assert!(r.repairs.iter().any(|x| x.to_string().contains("rolled back")), "{:#?}", r.repairs);
    let (_, after) = sizes(&img);
    eprintln!("on disk: {before} before the rollback, {after} after");
    assert!(
        after + (1 << 20) > before,
        "the rollback punched the newer generation's blocks: {before} -> {after}"
    );
}
