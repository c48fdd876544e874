//! Backup and restore without keys: round trips, incrementals, restore into
//! existing images, integrity, and the hostile corpus.

use std::path::{Path, PathBuf};

use libimage::engine::image::{Access, Image};
use libimage::ops::backup::scan::{scan, Sink};
use libimage::ops::backup::{create_backup, restore_backup, verify_backup, BackupOptions, RestoreOptions};
use libimage::progress::Quiet;
use testkit::backup::{canon_snapshot, synth_image};

fn backup(img: &Path, snapshot: Option<&str>, since: Option<&Path>) -> (Vec<u8>, libimage::ops::backup::BackupReport) {
    let mut out = Vec::new();
    let opts = BackupOptions {
        snapshot: snapshot.map(str::to_string),
        since: since.map(Path::to_path_buf),
    };
    let r = create_backup(img, &mut out, &opts, &Quiet).expect("backup");
    assert_eq!(r.archive_bytes, out.len() as u64);
    (out, r)
}

fn restore(
    archive: &[u8],
    img: &Path,
    snapshot: Option<&str>,
    bases: &[PathBuf],
) -> libimage::Result<libimage::ops::backup::RestoreReport> {
    let opts = RestoreOptions {
        snapshot: snapshot.map(str::to_string),
        bases: bases.to_vec(),
        ..Default::default()
    };
    restore_backup(&mut &archive[..], img, &opts, &Quiet)
}

fn canon(img: &Path, snap: &str) -> Vec<String> {
    let i = Image::open(img, Access::ReadOnly).expect("open");
    canon_snapshot(&i, snap).expect("canon")
}

fn dir_entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The logical state of an image: superblock and metadata, plus the bytes of
/// every allocated extent.
fn image_state(p: &Path) -> (u64, Vec<String>, Vec<u8>) {
    let i = Image::open(p, Access::ReadOnly).unwrap();
    let mut canon = Vec::new();
    for s in &i.meta().snapshots {
        canon.extend(canon_snapshot(&i, &s.name).unwrap());
    }
    let mut data = Vec::new();
    for e in i.meta().extents.values() {
        data.extend(i.read_blocks(e.start, u64::from(e.blocks)).unwrap());
    }
    (i.superblock().generation, canon, data)
}

#[test]
fn keyless_round_trip_is_exact() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 11, false).unwrap();
    let (arch, rep) = backup(&src, None, None);
    assert!(rep.shared_items >= 1, "the partly shared extent is stored once: {rep:?}");
    let dst = t.path().join("dst.img");
    let r = restore(&arch, &dst, None, &[]).unwrap();
    assert!(r.new_image);
    assert_eq!(r.snapshot, "main");
    let a = canon(&src, "main");
    let b = canon(&dst, "main");
    assert!(a.len() > 15);
    assert_eq!(a, b, "restored snapshot differs (metadata, names, contexts or ciphertext)");
    // Same uuid, same policy, same snapshot creation time.
    let (si, di) = (
        Image::open(&src, Access::ReadOnly).unwrap(),
        Image::open(&dst, Access::ReadOnly).unwrap(),
    );
    assert_eq!(si.superblock().uuid, di.superblock().uuid);
    assert_eq!(si.meta().snapshots[0].policy, di.meta().snapshots[0].policy);
    assert_eq!(si.meta().snapshots[0].created, di.meta().snapshots[0].created);
    // Shared extents stay shared: as many extents as the original holds (the
    // partly referenced one included).
    assert_eq!(si.meta().extents.len(), di.meta().extents.len());
    // Nothing else left behind.
    assert_eq!(dir_entries(t.path()), vec!["dst.img", "src.img"]);
    // A second backup of the restored image restores to the same again.
    let (arch2, _) = backup(&dst, None, None);
    let dst2 = t.path().join("dst2.img");
    restore(&arch2, &dst2, None, &[]).unwrap();
    assert_eq!(canon(&dst2, "main"), a);
}

#[test]
fn verify_accepts_and_counts() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 12, false).unwrap();
    let (arch, rep) = backup(&src, None, None);
    let v = verify_backup(&mut &arch[..], &[]).unwrap();
    assert_eq!(v.stats.members, rep.members);
    assert_eq!(v.stats.stored_bytes, rep.stored_bytes);
    assert!(v.stats.extents_checked >= 4, "{:?}", v.stats);
}

#[test]
fn verify_detects_a_flipped_byte_in_any_member() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 13, false).unwrap();
    let (arch, _) = backup(&src, None, None);
    // Member boundaries, from a scan.
    struct Offs(Vec<(u64, u64)>);
    impl Sink for Offs {
        fn member(&mut self, m: &libimage::ops::backup::scan::Member) -> libimage::Result<()> {
            self.0.push((m.offset, m.data_offset));
            Ok(())
        }
    }
    let mut offs = Offs(Vec::new());
    scan(&arch[..], &mut offs).unwrap();
    assert!(offs.0.len() > 15);
    // Every byte of every member's headers, and a spread of data bytes; plus
    // the manifest, the trailer and the end-of-archive marker.
    let mut positions: Vec<usize> = Vec::new();
    for &(off, data) in &offs.0 {
        positions.extend((off as usize..data as usize).step_by(3));
    }
    let first_member = offs.0[0].0 as usize;
    positions.extend((0..first_member).step_by(7));
    let mut data_pos = Vec::new();
    for w in offs.0.windows(2) {
        let (d0, next) = (w[0].1 as usize, w[1].0 as usize);
        if next > d0 {
            data_pos.extend([d0, d0 + 1, (d0 + next) / 2, next - 1]);
        }
    }
    positions.extend(data_pos);
    let last = offs.0.last().unwrap().1 as usize;
    positions.extend((last..arch.len()).step_by(5));
    let mut checked = 0;
    for p in positions {
        let mut bad = arch.clone();
        bad[p] ^= 0x04;
        assert!(
            verify_backup(&mut &bad[..], &[]).is_err(),
            "flip at byte {p} of {} not detected",
            arch.len()
        );
        checked += 1;
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn every_truncation_is_refused_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 14, false).unwrap();
    let (arch, _) = backup(&src, None, None);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for cut in (0..arch.len() - 1024).step_by(512).chain([arch.len() - 1024 + 100, 17, 600]) {
        let dst = out.join("x.img");
        let e = restore(&arch[..cut], &dst, None, &[]).unwrap_err();
        assert!(e.is_corruption(), "cut {cut}: {e}");
        assert!(dir_entries(&out).is_empty(), "cut {cut} left {:?}", dir_entries(&out));
    }
}

#[test]
fn incremental_stores_only_changed_extents() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 15, true).unwrap();
    let (full, _) = backup(&src, Some("main"), None);
    let base = t.path().join("main.tar");
    std::fs::write(&base, &full).unwrap();
    let (inc, rep) = backup(&src, Some("s2"), Some(&base));
    // synth_image's s2 adds one 5-block file and replaces a file with a 2-block one.
    assert_eq!(rep.stored_bytes, 7 * 4096, "{rep:?}");
    assert_eq!(rep.stored_items, 2);
    assert!(rep.base_items >= 5);
    let v = verify_backup(&mut &inc[..], &[]).unwrap();
    assert_eq!(
        v.manifest.base_backup_id.as_deref(),
        Some(verify_backup(&mut &full[..], &[]).unwrap().manifest.backup_id.as_str())
    );
    assert!(v.base_items_unchecked >= 5);
    let v = verify_backup(&mut &inc[..], std::slice::from_ref(&base)).unwrap();
    assert_eq!(v.base_items_unchecked, 0);
    assert!(v.base_items_checked >= 5);

    // Base + incremental restores the second snapshot.
    let dst = t.path().join("s2.img");
    let r = restore(&inc, &dst, None, std::slice::from_ref(&base)).unwrap();
    assert!(r.base_bytes > 0);
    assert_eq!(canon(&dst, "s2"), canon(&src, "s2"));

    // Without the base: a clear error, and no image.
    let dst2 = t.path().join("nobase.img");
    let e = restore(&inc, &dst2, None, &[]).unwrap_err().to_string();
    assert!(
        e.contains("incremental backup of base backup") && e.contains("supply it and its own bases"),
        "{e}"
    );
    assert!(!dst2.exists());
    // With a wrong base: also clear.
    let other = t.path().join("other.img");
    synth_image(&other, 99, false).unwrap();
    let (ofull, _) = backup(&other, None, None);
    let obase = t.path().join("other.tar");
    std::fs::write(&obase, &ofull).unwrap();
    let e = restore(&inc, &dst2, None, std::slice::from_ref(&obase)).unwrap_err().to_string();
    assert!(e.contains("was not given") && e.contains("given:"), "{e}");
    assert!(verify_backup(&mut &inc[..], std::slice::from_ref(&obase)).is_err());
    assert!(!dst2.exists());

    // A chain: a third backup since the incremental needs both bases.
    let incp = t.path().join("s2.tar");
    std::fs::write(&incp, &inc).unwrap();
    let (inc2, rep2) = backup(&src, Some("s2"), Some(&incp));
    assert_eq!(rep2.stored_bytes, 0);
    let dst3 = t.path().join("chain.img");
    let e = restore(&inc2, &dst3, None, std::slice::from_ref(&incp)).unwrap_err().to_string();
    assert!(e.contains("base backup that was not given"), "{e}");
    assert!(!dst3.exists());
    restore(&inc2, &dst3, None, &[incp.clone(), base.clone()]).unwrap();
    assert_eq!(canon(&dst3, "s2"), canon(&src, "s2"));
}

#[test]
fn restore_into_existing_image_adds_one_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 16, true).unwrap();
    let (full, _) = backup(&src, Some("main"), None);
    let (inc_base, _) = (t.path().join("main.tar"), ());
    std::fs::write(&inc_base, &full).unwrap();
    let (inc, _) = backup(&src, Some("s2"), Some(&inc_base));

    // Existing snapshot name: refused, image untouched.
    let before = image_state(&src);
    let e = restore(&full, &src, None, &[]).unwrap_err().to_string();
    assert!(e.contains("already has a snapshot named \"main\""), "{e}");
    let e = restore(&full, &src, Some("s2"), &[]).unwrap_err().to_string();
    assert!(e.contains("already has a snapshot named \"s2\""), "{e}");
    assert_eq!(image_state(&src), before);

    // A new name: one commit; identical extents are reused, not copied.
    let blocks_before = Image::open(&src, Access::ReadOnly).unwrap().superblock().total_blocks;
    let r = restore(&full, &src, Some("main-restored"), &[]).unwrap();
    assert!(!r.new_image);
    assert!(r.extents_reused > 0 && r.extents_written == 0, "{r:?}");
    let img = Image::open(&src, Access::ReadOnly).unwrap();
    assert_eq!(img.superblock().generation, before.0 + 1);
    assert!(
        img.superblock().total_blocks < blocks_before + 10,
        "data was copied: {} -> {}",
        blocks_before,
        img.superblock().total_blocks
    );
    drop(img);
    assert_eq!(canon(&src, "main-restored"), canon(&src, "main"));
    // An incremental restores into the image holding its base without --base.
    restore(&inc, &src, Some("s2-restored"), &[]).unwrap();
    assert_eq!(canon(&src, "s2-restored"), canon(&src, "s2"));

    // Into an image that lacks the data: extents are written.
    let other = t.path().join("other.img");
    synth_image(&other, 77, false).unwrap();
    let r = restore(&full, &other, Some("foreign"), &[]).unwrap();
    assert!(r.extents_written > 0);
    assert_eq!(canon(&other, "foreign"), canon(&src, "main"));
    assert_eq!(canon(&other, "main"), {
        let fresh = t.path().join("fresh.img");
        synth_image(&fresh, 77, false).unwrap();
        canon(&fresh, "main")
    });
}

#[test]
fn failed_restore_into_existing_image_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 17, false).unwrap();
    let target = t.path().join("target.img");
    synth_image(&target, 18, false).unwrap();
    let (arch, _) = backup(&src, None, None);
    let len = std::fs::metadata(&target).unwrap().len();
    let before = image_state(&target);
    for cut in [arch.len() / 3, arch.len() / 2, arch.len() - 2000, arch.len() - 1] {
        assert!(restore(&arch[..cut], &target, Some("x"), &[]).is_err());
        assert_eq!(image_state(&target), before);
        assert_eq!(std::fs::metadata(&target).unwrap().len(), len);
    }
    let mut bad = arch.clone();
    let n = bad.len();
    bad[n - 3000] ^= 1;
    assert!(restore(&bad, &target, Some("x"), &[]).is_err());
    assert_eq!(image_state(&target), before);
    // And then it works.
    restore(&arch, &target, Some("x"), &[]).unwrap();
    assert_eq!(canon(&target, "x"), canon(&src, "main"));
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/backup/hostile")
}

#[test]
fn hostile_corpus_is_refused_with_the_expected_error() {
    let dir = corpus_dir();
    let tsv = std::fs::read_to_string(dir.join("expected.tsv")).expect("testdata/backup/hostile/expected.tsv");
    let t = tempfile::tempdir().unwrap();
    let existing = t.path().join("existing.img");
    synth_image(&existing, 19, false).unwrap();
    let before = image_state(&existing);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut n = 0;
    for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (file, expect) = line.split_once('\t').expect("file<TAB>error");
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let dst = out.join("new.img");
        let r = restore(&bytes, &dst, None, &[]);
        let v = verify_backup(&mut &bytes[..], &[]);
        if expect == "OK" {
            r.unwrap_or_else(|e| panic!("{file}: {e}"));
            v.unwrap_or_else(|e| panic!("{file}: {e}"));
            std::fs::remove_file(&dst).unwrap();
            continue;
        }
        let e = r.err().unwrap_or_else(|| panic!("{file} was accepted by restore"));
        assert!(e.to_string().contains(expect), "{file}: expected {expect:?}, got: {e}");
        assert!(e.is_corruption() || matches!(e, libimage::Error::Unsupported(_)), "{file}: {e}");
        let ve = v.err().unwrap_or_else(|| panic!("{file} was accepted by verify"));
        assert!(ve.to_string().contains(expect), "{file}: verify said {ve}");
        assert!(dir_entries(&out).is_empty(), "{file} left {:?}", dir_entries(&out));
        // Into an existing image: refused, image unchanged.
        assert!(restore(&bytes, &existing, Some("h"), &[]).is_err(), "{file}");
        n += 1;
    }
    assert!(n >= 20, "only {n} hostile cases");
    assert_eq!(image_state(&existing), before);
    assert_eq!(dir_entries(t.path()), vec!["existing.img", "out"]);
}

#[test]
fn hostile_corpus_matches_its_generator() {
    let dir = corpus_dir();
    let mut tsv = String::new();
    for (name, expect, bytes) in testkit::backup::hostile::cases() {
        let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{name} differs from the generator: run `cargo run -p libimage --example mkhostile`"
        );
        tsv.push_str(&format!("{name}\t{expect}\n"));
    }
    let committed = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    assert!(committed.ends_with(&tsv), "expected.tsv is stale");
}

fn key(seed: u8) -> fscrypt::MasterKey {
    let raw: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(13).wrapping_add(seed)).collect();
    fscrypt::MasterKey::from_bytes(&raw).unwrap()
}

/// Issue items 1 and 2: an image made with key K is backed up and restored
/// with no key at all; extracting the restored image with K gives the
/// original tree (metadata included), and every file's ciphertext is the
/// original's byte for byte.
#[test]
fn keyless_round_trip_of_a_real_image_extracts_with_the_key() {
    use libimage::engine::image::Keyring;
    use libimage::ops::create::{create_image, CreateOptions, Source};
    use testkit::{make_tricky_tree, tree_diff};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tricky_tree(&src).unwrap();
    let img = t.path().join("a.img");
    create_image(&img, Source::Dir(&src), &key(1), &CreateOptions::default(), &Quiet).unwrap();

    // No key anywhere from here to the restore.
    let (arch, rep) = backup(&img, None, None);
    assert!(rep.files >= 8 && rep.hardlinks >= 2, "{rep:?}");
    let restored = t.path().join("b.img");
    restore(&arch, &restored, None, &[]).unwrap();
    verify_backup(&mut &arch[..], &[]).unwrap();

    // Byte equality of every file's ciphertext, contexts, names, metadata.
    assert_eq!(canon(&restored, "main"), canon(&img, "main"));

    // Extract with the key: the original tree.
    let out = t.path().join("out");
    let i = Image::open(&restored, Access::ReadOnly).unwrap();
    libimage::ops::read::extract(&i, None, &Keyring::new(vec![key(1)]), &out, true, &Quiet).unwrap();
    let diff = tree_diff(&src, &out);
    assert!(diff.is_empty(), "differences: {diff:#?}");
}

/// `list` shows no-key names without a key and the real names with it.
#[test]
fn list_shows_real_names_only_with_the_key() {
    use libimage::engine::image::Keyring;
    use libimage::ops::create::{create_image, CreateOptions, Source};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/hello.txt"), b"hi").unwrap();
    std::os::unix::fs::symlink("sub/hello.txt", src.join("link")).unwrap();
    let img = t.path().join("a.img");
    create_image(&img, Source::Dir(&src), &key(2), &CreateOptions::default(), &Quiet).unwrap();
    let (arch, _) = backup(&img, None, None);
    let (_, plain) = libimage::ops::backup::list_backup(&mut &arch[..], &Keyring::default()).unwrap();
    assert!(plain.iter().all(|e| e.real_path.is_none() && !e.path.contains("hello")));
    let (m, named) = libimage::ops::backup::list_backup(&mut &arch[..], &Keyring::new(vec![key(2)])).unwrap();
    assert_eq!(m.keys_needed, vec![key(2).identifier().to_string()]);
    let mut paths: Vec<&str> = named.iter().filter_map(|e| e.real_path.as_deref()).collect();
    paths.sort_unstable();
    assert_eq!(paths, vec!["./", "./link", "./sub/", "./sub/hello.txt"]);
    let link = named.iter().find(|e| e.real_path.as_deref() == Some("./link")).unwrap();
    assert_eq!(link.target.as_deref(), Some("sub/hello.txt"));
}

/// Issue 13, incremental backups: unchanged members of an incremental cost
/// far less than a pax member each (format version 2, compact listings).
/// Version 1 wrote about 2 KB per unchanged member.
#[test]
fn incremental_of_a_small_change_costs_little_per_unchanged_member() {
    use libimage::engine::image::Keyring;
    use libimage::ops::backup::format::{FORMAT_VERSION, FORMAT_VERSION_LISTING};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("wide.img");
    // 3000 one-block files in 30 directories (+ symlinks, hard links); s2 adds a 1 MiB file.
    testkit::backup::synth_wide_image(&src, 31, 3000, 256).unwrap();
    let (full, frep) = backup(&src, Some("main"), None);
    let base = t.path().join("main.tar");
    std::fs::write(&base, &full).unwrap();
    let (inc, rep) = backup(&src, Some("s2"), Some(&base));
    assert_eq!(rep.stored_bytes, 256 * 4096, "{rep:?}");
    assert_eq!(rep.members, frep.members + 1);
    let overhead = inc.len() as u64 - rep.stored_bytes;
    let per_member = overhead as f64 / (rep.members - 1) as f64;
    eprintln!(
        "full {} bytes, {} members; incremental {} bytes ({} stored, {overhead} of headers): {per_member:.1} bytes per unchanged member",
        full.len(),
        frep.members,
        inc.len(),
        rep.stored_bytes
    );
    assert!(per_member < 200.0, "{per_member:.1} bytes per unchanged member");

    // Full backups stay version 1; the incremental is version 2.
    let vf = verify_backup(&mut &full[..], &[]).unwrap();
    assert_eq!(vf.manifest.version, FORMAT_VERSION);
    let v = verify_backup(&mut &inc[..], std::slice::from_ref(&base)).unwrap();
    assert_eq!(v.manifest.version, FORMAT_VERSION_LISTING);
    assert_eq!(v.stats.members, rep.members);
    assert_eq!(v.stats.stored_bytes, rep.stored_bytes);
    assert_eq!(v.base_items_unchecked, 0);
    assert!(v.base_items_checked >= 3000, "{v:?}");
    assert_eq!(v.stats.hardlinks, 30);
    assert_eq!(v.stats.symlinks, 30);

    // list: every member, as from the full backup (plus the new file).
    let (_, lf) = libimage::ops::backup::list_backup(&mut &full[..], &Keyring::default()).unwrap();
    let (_, li) = libimage::ops::backup::list_backup(&mut &inc[..], &Keyring::default()).unwrap();
    assert_eq!(li.len() as u64, rep.members);
    let pf: std::collections::BTreeSet<&str> = lf.iter().map(|e| e.path.as_str()).collect();
    let pi: std::collections::BTreeSet<&str> = li.iter().map(|e| e.path.as_str()).collect();
    assert!(pf.is_subset(&pi) && pi.len() == pf.len() + 1);

    // Restoring the incremental with its base gives the tree a full backup gives.
    let dst = t.path().join("inc.img");
    restore(&inc, &dst, None, std::slice::from_ref(&base)).unwrap();
    let (full2, _) = backup(&src, Some("s2"), None);
    let dst2 = t.path().join("full.img");
    restore(&full2, &dst2, None, &[]).unwrap();
    let want = canon(&src, "s2");
    assert_eq!(canon(&dst, "s2"), want);
    assert_eq!(canon(&dst2, "s2"), want);
    // And a v2 incremental of an incremental (a chain) as well.
    let incp = t.path().join("s2.tar");
    std::fs::write(&incp, &inc).unwrap();
    let (inc2, rep2) = backup(&src, Some("s2"), Some(&incp));
    assert_eq!(rep2.stored_bytes, 0);
    assert!(inc2.len() < inc.len() - rep.stored_bytes as usize + 4096);
    let dst3 = t.path().join("chain.img");
    restore(&inc2, &dst3, None, &[incp, base]).unwrap();
    assert_eq!(canon(&dst3, "s2"), want);
}

/// Version 2 archives: a flipped byte anywhere in an incremental (listings
/// included) is detected, and every truncation is refused.
#[test]
fn incremental_damage_is_detected() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 32, true).unwrap();
    let (full, _) = backup(&src, Some("main"), None);
    let base = t.path().join("main.tar");
    std::fs::write(&base, &full).unwrap();
    let (inc, _) = backup(&src, Some("s2"), Some(&base));
    assert!(inc.windows(23).any(|w| w == b"cryptimg-backup.listing"));
    verify_backup(&mut &inc[..], std::slice::from_ref(&base)).unwrap();
    let mut checked = 0;
    for p in (0..inc.len() - 1024).step_by(7).chain(inc.len() - 1024..inc.len()) {
        let mut bad = inc.clone();
        bad[p] ^= 0x10;
        assert!(verify_backup(&mut &bad[..], &[]).is_err(), "flip at {p} not detected");
        checked += 1;
    }
    assert!(checked > 1000);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for cut in (0..inc.len() - 1024).step_by(512).chain([inc.len() - 1024 + 100, 17, 600]) {
        let dst = out.join("x.img");
        let e = restore(&inc[..cut], &dst, None, std::slice::from_ref(&base)).unwrap_err();
        assert!(e.is_corruption(), "cut {cut}: {e}");
        assert!(dir_entries(&out).is_empty());
    }
}

fn v1_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/backup/v1")
}

/// Archives written by the version 1 writer (before compact listings; see
/// testdata/backup/v1/README) still verify and restore, the incremental
/// with its base, to the trees they were made from.
#[test]
fn version_1_archives_still_restore_and_verify() {
    let dir = v1_dir();
    let full = std::fs::read(dir.join("full.tar")).expect("testdata/backup/v1/full.tar");
    let inc = std::fs::read(dir.join("incremental.tar")).expect("testdata/backup/v1/incremental.tar");
    let base = dir.join("full.tar");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 41, true).unwrap();
    let vf = verify_backup(&mut &full[..], &[]).unwrap();
    let vi = verify_backup(&mut &inc[..], std::slice::from_ref(&base)).unwrap();
    assert_eq!((vf.manifest.version, vi.manifest.version), (1, 1));
    assert_eq!(vi.manifest.base_backup_id.as_deref(), Some(vf.manifest.backup_id.as_str()));
    assert!(!full.windows(23).any(|w| w == b"cryptimg-backup.listing"));
    let a = t.path().join("full.img");
    restore(&full, &a, None, &[]).unwrap();
    assert_eq!(canon(&a, "main"), canon(&src, "main"));
    let b = t.path().join("inc.img");
    restore(&inc, &b, None, std::slice::from_ref(&base)).unwrap();
    assert_eq!(canon(&b, "s2"), canon(&src, "s2"));
    // A new incremental since the old full backup is version 2 and restores the same.
    let (inc2, _) = backup(&src, Some("s2"), Some(&base));
    assert!(inc2.len() < inc.len());
    let c = t.path().join("inc2.img");
    restore(&inc2, &c, None, std::slice::from_ref(&base)).unwrap();
    assert_eq!(canon(&c, "s2"), canon(&src, "s2"));
}

/// Writes the source image of testdata/backup/v1 (seed 41) to
/// `$CRYPTIMG_V1_IMAGE`; the archives were made from it with the version 1
/// `backup-crypt` (see testdata/backup/v1/README).
#[test]
#[ignore]
fn write_v1_fixture_source_image() {
    let p = PathBuf::from(std::env::var("CRYPTIMG_V1_IMAGE").expect("CRYPTIMG_V1_IMAGE"));
    synth_image(&p, 41, true).unwrap();
}

/// The listings of a real incremental (every member type), mutated at
/// random and wrapped with correct checksums so the decoder and the member
/// checks see them: never a panic; every refusal is a corruption error.
#[test]
fn mutated_listings_are_refused_cleanly() {
    use libimage::ops::backup::listing::LISTING_NAME;
    use libimage::ops::backup::pax::{parse_records, PaxReader};
    use testkit::backup::ArchiveMaker;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    synth_image(&src, 33, true).unwrap();
    let (full, _) = backup(&src, Some("s2"), None);
    let base = t.path().join("s2.tar");
    std::fs::write(&base, &full).unwrap();
    // Nothing changed since the base: every member is in a listing.
    let (inc, rep) = backup(&src, Some("s2"), Some(&base));
    assert_eq!(rep.stored_bytes, 0);
    // The listing members' data, concatenated (entries are self-delimiting).
    let mut listing = Vec::new();
    let mut r = PaxReader::new(&inc[..]);
    while let Some(m) = r.next_member().unwrap() {
        let recs = parse_records(&m.pax, 0).unwrap();
        let is_listing = recs.iter().any(|x| x.key == b"path" && x.value == LISTING_NAME.as_bytes());
        r.start_data(m.ustar.size);
        let mut d = vec![0u8; m.ustar.size as usize];
        r.data(&mut d).unwrap();
        r.end_data().unwrap();
        if is_listing {
            listing.extend(d);
        }
    }
    assert!(listing.len() > 500, "{}", listing.len());
    let base_id = verify_backup(&mut &full[..], &[]).unwrap().manifest.backup_id;
    let wrap = |d: &[u8], members: u64| {
        let mut a = ArchiveMaker::with_base(5, 2, Some(&base_id));
        a.listing_raw(d);
        a.members = members;
        a.finish()
    };
    // Unmutated: valid, and it restores the snapshot.
    let ok = wrap(&listing, rep.members);
    assert_eq!(verify_backup(&mut &ok[..], &[]).unwrap().stats.members, rep.members);
    let dst = t.path().join("ok.img");
    restore(&ok, &dst, None, std::slice::from_ref(&base)).unwrap();
    assert_eq!(canon(&dst, "main"), canon(&src, "s2"));
    let mut rng = testkit::TestRng::new(34);
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..3000 {
        let mut d = listing.clone();
        for _ in 0..1 + rng.next_u64() % 3 {
            let p = (rng.next_u64() % d.len() as u64) as usize;
            d[p] = rng.next_u64() as u8;
        }
        if i % 5 == 0 {
            d.truncate((rng.next_u64() % d.len() as u64) as usize + 1);
        }
        let arch = wrap(&d, rep.members);
        match verify_backup(&mut &arch[..], &[]) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(e.is_corruption(), "mutation {i}: {e}");
                refused += 1;
            }
        }
        if i % 50 == 0 {
            let dst = t.path().join("m.img");
            let _ = restore(&arch, &dst, None, std::slice::from_ref(&base));
            let _ = std::fs::remove_file(&dst);
        }
    }
    // Most bytes matter (names, contexts, crcs are checked); some (times,
    // modes, owners) take any value.
    eprintln!("{refused} mutations refused, {accepted} accepted");
    assert!(refused > 1500 && accepted > 0, "{refused} refused, {accepted} accepted");
}
