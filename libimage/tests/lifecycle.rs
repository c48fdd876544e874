//! Lifecycle tests: the vendor/user story, sharing, refusals, idempotency and
//! the crash matrix, all through the library API.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fscrypt::{KeyId, MasterKey};
use libimage::engine::image::{set_thread_fail_after, Access, Image, Keyring};
use libimage::error::Error;
use libimage::format::inode::Body;
use libimage::ops::create::{create_image, info, CreateOptions, Source};
use libimage::ops::lifecycle::{self, RekeyOptions, RekeyReport, UpdateOptions};
use libimage::ops::read::TreeReader;
use libimage::progress::Quiet;
use sha2::{Digest, Sha256};

const T: i64 = 1_700_000_000;

fn key(seed: u8) -> MasterKey {
    let raw: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(31).wrapping_add(seed)).collect();
    MasterKey::from_bytes(&raw).unwrap()
}
const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

fn ring(seeds: &[u8]) -> Keyring {
    Keyring::new(seeds.iter().map(|&s| key(s)).collect())
}
fn id(seed: u8) -> KeyId {
    key(seed).identifier()
}

/// Deterministic pseudo-random bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small tree with every kind of entry; `variant` changes some contents.
fn make_tree(root: &Path, variant: u64) {
    let w = |p: &str, data: &[u8]| {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    w("etc/hostname", b"vendor\n");
    w("etc/conf.d/a.conf", format!("setting = {variant}\n").as_bytes());
    w("usr/bin/tool", &pattern(1, 3 * 4096 + 10));
    // Two data runs around a hole: two extents.
    let mut big = pattern(2, 40 * 4096);
    big[8 * 4096..16 * 4096].fill(0);
    w("usr/share/big.bin", &big);
    w("var/empty", b"");
    fs::create_dir_all(root.join("var/log")).unwrap();
    std::os::unix::fs::symlink("tool", root.join("usr/bin/link")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd name \xff");
    fs::write(root.join("etc").join(odd), b"x").unwrap();
    fs::write(root.join("etc").join("n".repeat(255)), pattern(3, 5000)).unwrap();
}

/// The tree an update brings: one file changed, one added, one dir added,
/// `usr/share/big.bin` and `etc/hostname` gone.
fn make_tree2(root: &Path) {
    make_tree(root, 2);
    fs::remove_file(root.join("usr/share/big.bin")).unwrap();
    fs::remove_file(root.join("etc/hostname")).unwrap();
    fs::write(root.join("usr/bin/tool"), pattern(9, 5 * 4096)).unwrap();
    fs::create_dir_all(root.join("opt/new")).unwrap();
    fs::write(root.join("opt/new/file"), pattern(10, 70_000)).unwrap();
}

/// Options of every create here: timestamps clamped, so equal runs give equal states.
fn create_opts() -> CreateOptions {
    CreateOptions {
        force: true,
        repro: libimage::ops::build::Reproducible {
            deterministic: false,
            clamp: Some(T),
        },
        ..Default::default()
    }
}

/// Creates an image keeping the tree's own timestamps.
fn create(img: &Path, tree: &Path, k: u8) {
    let opts = CreateOptions {
        force: true,
        ..Default::default()
    };
    create_image(img, Source::Dir(tree), &key(k), &opts, &Quiet).unwrap();
}

fn do_snapshot(p: &Path, from: &str, name: &str) -> libimage::Result<()> {
    lifecycle::snapshot(&mut Image::open(p, Access::ReadWrite)?, from, name, T).map(drop)
}
fn do_rekey(p: &Path, snap: &str, old: &[u8], new: u8, reencrypt: bool) -> libimage::Result<RekeyReport> {
    let opts = RekeyOptions {
        reencrypt,
        time: T,
        ..Default::default()
    };
    lifecycle::rekey(&mut Image::open(p, Access::ReadWrite)?, snap, &ring(old), &key(new), &opts, &Quiet)
}
fn do_update(p: &Path, snap: &str, tree: &Path, keys: &[u8], delete_missing: bool) -> libimage::Result<()> {
    let opts = UpdateOptions {
        delete_missing,
        time: T,
        ..Default::default()
    };
    update_with(p, snap, tree, keys, &opts).map(drop)
}
fn update_with(p: &Path, snap: &str, tree: &Path, keys: &[u8], opts: &UpdateOptions) -> libimage::Result<lifecycle::UpdateReport> {
    lifecycle::update(
        &mut Image::open(p, Access::ReadWrite)?,
        snap,
        Source::Dir(tree),
        &ring(keys),
        opts,
        &Quiet,
    )
}
fn do_delete(p: &Path, snap: &str) -> libimage::Result<()> {
    lifecycle::delete(&mut Image::open(p, Access::ReadWrite)?, snap, T).map(drop)
}

/// The structural check every image must pass (the keyless checker; swap in
/// the full `fsck-crypt check` library call once it exists).
/// `fsck-crypt check --data` (keyless) must exit 0.
fn check_clean(p: &Path) {
    let opts = libimage::ops::check::CheckOptions {
        data: true,
        ..Default::default()
    };
    let r = libimage::ops::check::check(p, &Keyring::default(), &opts, &libimage::progress::Quiet).unwrap();
    assert_eq!(r.exit_code, 0, "{}: {:#?}", p.display(), r.findings);
}

/// A canonical description of the image's logical state: per snapshot its
/// policy and every entry with decrypted name, metadata, content hash, and
/// (with `with_keys`) the key ids of its contexts and extents. Nonces, block
/// positions and extent ids are left out (they differ between equal runs).
fn digest(p: &Path, keys: &[u8], with_keys: bool) -> String {
    let img = Image::open(p, Access::ReadOnly).unwrap();
    let kr = ring(keys);
    let mut out = String::new();
    let mut snaps: Vec<_> = img.meta().snapshots.iter().collect();
    snaps.sort_by(|a, b| a.name.cmp(&b.name));
    for s in snaps {
        let r = TreeReader::new(&img, s, &kr);
        let kid = |k: KeyId| if with_keys { k.to_string() } else { String::new() };
        writeln!(out, "snapshot {} created {} policy {}", s.name, s.created, kid(s.policy)).unwrap();
        let mut stack = vec![(b"".to_vec(), s.root)];
        while let Some((path, dir)) = stack.pop() {
            for l in r.list(dir).unwrap() {
                assert!(l.decrypted);
                let mut cp = path.clone();
                cp.push(b'/');
                cp.extend_from_slice(&l.name);
                let i = l.inode;
                write!(
                    out,
                    "{} ino {} mode {:o} {}:{} n{} size {} mtime {:?} xattrs {:?}",
                    cp.escape_ascii(),
                    i.ino,
                    i.mode,
                    i.uid,
                    i.gid,
                    i.nlink,
                    i.size,
                    i.mtime,
                    i.xattrs
                )
                .unwrap();
                match &i.body {
                    Body::Dir { ctx, .. } => {
                        write!(out, " dir {}", kid(ctx.key)).unwrap();
                        stack.push((cp, i.ino));
                    }
                    Body::Symlink { ctx, .. } => {
                        write!(out, " -> {} {}", r.read_link(i.ino).unwrap().escape_ascii(), kid(ctx.key)).unwrap();
                    }
                    Body::File { map } => {
                        let mut data = vec![0u8; i.size as usize];
                        r.read_file(i.ino, &mut |off, d| {
                            data[off as usize..off as usize + d.len()].copy_from_slice(d);
                            Ok(())
                        })
                        .unwrap();
                        write!(out, " sha {}", hex::encode(Sha256::digest(&data))).unwrap();
                        for m in map {
                            write!(out, " [{}+{} {}]", m.lblk, m.blocks, kid(img.extent(m.extent).unwrap().ctx.key)).unwrap();
                        }
                    }
                    Body::Special => out.push_str(" special"),
                }
                out.push('\n');
            }
        }
    }
    out
}

/// The lines of one snapshot in a digest (without its header line).
fn section(d: &str, snap: &str) -> String {
    let head = format!("snapshot {snap} ");
    d.split_inclusive('\n')
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| !l.starts_with("snapshot "))
        .collect()
}

fn file_hash(p: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(p).unwrap()).to_vec()
}

fn snapshot_keys(p: &Path, snap: &str) -> Vec<KeyId> {
    let img = Image::open(p, Access::ReadOnly).unwrap();
    img.keys_needed(img.snapshot(Some(snap)).unwrap())
}

fn sorted(mut v: Vec<KeyId>) -> Vec<KeyId> {
    v.sort();
    v
}

/// Extracts a snapshot with the given keys ("opens" it).
fn extract(p: &Path, snap: &str, keys: &[u8], dest: &Path) -> libimage::Result<()> {
    let img = Image::open(p, Access::ReadOnly)?;
    libimage::ops::read::extract(&img, Some(snap), &ring(keys), dest, false, &Quiet).map(drop)
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    tree: PathBuf,
    tree2: PathBuf,
    img: PathBuf,
}

/// An image with `main` under A and `user` a snapshot of it.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let tree = root.join("tree");
    let tree2 = root.join("tree2");
    make_tree(&tree, 1);
    make_tree2(&tree2);
    let img = root.join("img");
    create(&img, &tree, A);
    do_snapshot(&img, "main", "user").unwrap();
    Fixture {
        _dir: dir,
        root,
        tree,
        tree2,
        img,
    }
}

#[test]
fn vendor_user_story() {
    let f = fixture();
    let img = &f.img;
    let main_before = digest(img, &[A], true).split("snapshot user").next().unwrap().to_string();
    let user_content = section(&digest(img, &[A], false), "user");

    // Lazy rekey: main opens with A alone; user needs A and B.
    let r = do_rekey(img, "user", &[A], B, false).unwrap();
    assert_eq!(r.commits, 1);
    assert!(r.dirs >= 6 && r.symlinks == 1 && r.extents_other_keys > 0, "{r:?}");
    check_clean(img);
    extract(img, "main", &[A], &f.root.join("x-main")).unwrap();
    extract(img, "user", &[A, B], &f.root.join("x-user")).unwrap();
    let e = extract(img, "user", &[B], &f.root.join("x-user-b")).unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains(&id(A).to_string()), "{e}");
    assert_eq!(snapshot_keys(img, "user"), sorted(vec![id(A), id(B)]));
    assert_eq!(snapshot_keys(img, "main"), vec![id(A)]);
    {
        let i = info(&Image::open(img, Access::ReadOnly).unwrap());
        let user = i.snapshots.iter().find(|s| s.name == "user").unwrap();
        assert_eq!(user.policy, id(B).to_string());
        assert_eq!(user.keys_needed.len(), 2);
    }
    // A second lazy rekey has nothing to do and writes nothing.
    let h = file_hash(img);
    let again = do_rekey(img, "user", &[A], B, false).unwrap();
    assert_eq!((again.commits, again.dirs, again.symlinks), (0, 0, 0), "{again:?}");
    assert_eq!(file_hash(img), h);
    // Same content, names now under B.
    assert_eq!(section(&digest(img, &[A, B], false), "user"), user_content);
    assert!(!section(&digest(img, &[A, B], true), "user").contains(&format!("dir {}", id(A))));

    // --reencrypt: user opens with B alone, no A extents left in it; main is untouched.
    let r = do_rekey(img, "user", &[A], B, true).unwrap();
    assert!(r.extents_reencrypted > 0 && r.names == 0, "{r:?}");
    check_clean(img);
    extract(img, "user", &[B], &f.root.join("x-user-b2")).unwrap();
    let j = serde_json::to_value(info(&Image::open(img, Access::ReadOnly).unwrap())).unwrap();
    let snaps = j["snapshots"].as_array().unwrap();
    let user = snaps.iter().find(|s| s["name"] == "user").unwrap();
    let by_key = user["extents_by_key"].as_object().unwrap();
    assert!(!by_key.contains_key(&id(A).to_string()), "{user}");
    assert!(by_key[&id(B).to_string()].as_u64().unwrap() > 0);
    assert_eq!(user["keys_needed"], serde_json::json!([id(B).to_string()]));
    let main = snaps.iter().find(|s| s["name"] == "main").unwrap();
    assert_eq!(main["keys_needed"], serde_json::json!([id(A).to_string()]));
    extract(img, "main", &[A], &f.root.join("x-main2")).unwrap();
    assert_eq!(
        digest(img, &[A, B], true).split("snapshot user").next().unwrap(),
        main_before,
        "main must be unchanged"
    );

    // Idempotent: a second run with the same key files changes nothing.
    let h = file_hash(img);
    let r = do_rekey(img, "user", &[A], B, true).unwrap();
    assert_eq!((r.commits, r.extents_reencrypted), (0, 0), "{r:?}");
    assert_eq!(file_hash(img), h);

    // update: new files' extents carry B's key id.
    do_update(img, "user", &f.tree2, &[B], false).unwrap();
    check_clean(img);
    let i = Image::open(img, Access::ReadOnly).unwrap();
    let kr = ring(&[B]);
    let r = TreeReader::new(&i, i.snapshot(Some("user")).unwrap(), &kr);
    for path in ["opt/new/file", "usr/bin/tool"] {
        let ino = r.inode(r.lookup(path.as_bytes()).unwrap()).unwrap();
        let Body::File { map } = &ino.body else { panic!() };
        assert!(!map.is_empty());
        for m in map {
            assert_eq!(i.extent(m.extent).unwrap().ctx.key, id(B), "{path}");
        }
    }
    assert_eq!(i.keys_needed(i.snapshot(Some("user")).unwrap()), vec![id(B)]);
}

#[test]
fn lazy_rekey_then_reencrypt_of_shared_and_twice_referenced_extents() {
    let f = fixture();
    let img = &f.img;
    // A third snapshot shares everything too; after user's re-encryption the
    // shared extents keep two references (main, other) and user has its own.
    do_snapshot(img, "main", "other").unwrap();
    let before = section(&digest(img, &[A, B], false), "user");
    do_rekey(img, "user", &[A], B, true).unwrap();
    check_clean(img);
    assert_eq!(section(&digest(img, &[A, B], false), "user"), before);
    let i = Image::open(img, Access::ReadOnly).unwrap();
    let user = i.snapshot(Some("user")).unwrap();
    let mut ids = BTreeSet::new();
    for ino in user.inodes.values() {
        if let Body::File { map } = &ino.body {
            for m in map {
                ids.insert(m.extent);
                let e = i.extent(m.extent).unwrap();
                assert_eq!(e.ctx.key, id(B));
            }
        }
    }
    // The hard-linked file is one inode: one copy per extent.
    for e in i.meta().extents.values() {
        if ids.contains(&e.id) {
            assert_eq!(e.refcount, 1);
        } else {
            assert_eq!(e.ctx.key, id(A));
            assert_eq!(e.refcount, 2);
        }
    }
}

#[test]
fn snapshot_shares_and_delete_frees() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree, 1);
    fs::write(tree.join("usr/share/more.bin"), pattern(7, 3 << 20)).unwrap();
    let img = dir.path().join("img");
    create(&img, &tree, A);
    let (alloc0, ext0, len0) = {
        let i = Image::open(&img, Access::ReadOnly).unwrap();
        (i.meta().alloc.clone(), i.meta().extents.clone(), fs::metadata(&img).unwrap().len())
    };
    do_snapshot(&img, "main", "user").unwrap();
    check_clean(&img);
    {
        let i = Image::open(&img, Access::ReadOnly).unwrap();
        assert_eq!(i.meta().alloc, alloc0, "no data blocks allocated");
        assert_eq!(i.meta().extents.keys().collect::<Vec<_>>(), ext0.keys().collect::<Vec<_>>());
        for (id, e) in &i.meta().extents {
            assert_eq!(e.refcount, 2 * ext0[id].refcount);
            assert_eq!((e.start, e.crc), (ext0[id].start, ext0[id].crc));
        }
        let grown = fs::metadata(&img).unwrap().len().saturating_sub(len0);
        assert!(grown <= i.superblock().meta_blocks * 4096, "grew by {grown} bytes");
        assert!(grown < 3 << 20);
    }
    let main_state = digest(&img, &[A], true).split("snapshot user").next().unwrap().to_string();

    // user gets unique data, then is deleted: its unique blocks are free.
    do_rekey(&img, "user", &[A], B, false).unwrap();
    let all = UpdateOptions {
        rewrite_all: true,
        time: T,
        ..Default::default()
    };
    let r = update_with(&img, "user", &tree, &[B], &all).unwrap();
    assert_eq!(r.unchanged, 0);
    let unique: Vec<(u64, u64)> = {
        let i = Image::open(&img, Access::ReadOnly).unwrap();
        i.meta()
            .extents
            .values()
            .filter(|e| e.ctx.key == id(B))
            .map(|e| (e.start, u64::from(e.blocks)))
            .collect()
    };
    assert!(unique.iter().map(|u| u.1).sum::<u64>() > 700, "{unique:?}");
    do_delete(&img, "user").unwrap();
    check_clean(&img);
    let i = Image::open(&img, Access::ReadOnly).unwrap();
    assert_eq!(i.meta().snapshots.len(), 1);
    assert_eq!(i.meta().alloc, alloc0, "only main's blocks stay allocated");
    let sb = i.superblock();
    for (s, l) in unique {
        assert!(s + l <= sb.meta_start || s >= sb.meta_start + sb.meta_blocks, "{s}+{l} is metadata");
    }
    for (id, e) in &i.meta().extents {
        assert_eq!(e.refcount, ext0[id].refcount);
    }
    drop(i);
    assert_eq!(digest(&img, &[A], true), main_state);
    // The freed space is reused: a new snapshot's update does not grow the image.
    do_snapshot(&img, "main", "again").unwrap();
    let len = fs::metadata(&img).unwrap().len();
    do_update(&img, "again", &tree, &[A], false).unwrap();
    check_clean(&img);
    assert!(fs::metadata(&img).unwrap().len() <= len + (1 << 20));
}

/// "Untouched shared extents keep their own contexts": an update leaves files
/// that pass the quick check as they are; only changed files get new data,
/// under the snapshot's (new) policy key.
#[test]
fn update_keeps_unchanged_files_shared() {
    let f = fixture();
    let img = &f.img;
    do_rekey(img, "user", &[A], B, false).unwrap();
    let before = Image::open(img, Access::ReadOnly).unwrap().meta().clone();
    let opts = UpdateOptions {
        time: T,
        ..Default::default()
    };
    let r = update_with(img, "user", &f.tree, &[B], &opts).unwrap();
    assert_eq!((r.stats.files, r.stats.extents, r.extents_freed), (0, 0, 0), "{r:?}");
    assert_eq!(r.unchanged, 7, "{r:?}");
    let after = Image::open(img, Access::ReadOnly).unwrap().meta().clone();
    assert_eq!(after.extents, before.extents, "every extent still shared");
    // One file changes: only it is rewritten, under B.
    fs::write(f.tree.join("usr/share/big.bin"), pattern(5, 9000)).unwrap();
    let r = update_with(img, "user", &f.tree, &[B], &opts).unwrap();
    assert_eq!((r.stats.files, r.unchanged, r.extents_freed), (1, 6, 0), "{r:?}");
    check_clean(img);
    assert_eq!(snapshot_keys(img, "user"), sorted(vec![id(A), id(B)]));
    let i = Image::open(img, Access::ReadOnly).unwrap();
    let b_extents: Vec<_> = i.meta().extents.values().filter(|e| e.ctx.key == id(B)).collect();
    assert_eq!(b_extents.len(), 1);
    assert_eq!(b_extents[0].refcount, 1);
    assert_eq!(
        i.meta().extents.values().filter(|e| e.refcount == 2).count(),
        before.extents.len() - 2
    );
    drop(i);
    // The snapshot holds the tree as it is now.
    let kr = ring(&[A, B]);
    let i = Image::open(img, Access::ReadOnly).unwrap();
    let r = TreeReader::new(&i, i.snapshot(Some("user")).unwrap(), &kr);
    let ino = r.lookup(b"usr/share/big.bin").unwrap();
    let mut data = Vec::new();
    r.read_file(ino, &mut |_, d| {
        data.extend_from_slice(d);
        Ok(())
    })
    .unwrap();
    assert_eq!(data, pattern(5, 9000));
}

#[test]
fn update_delete_missing() {
    let f = fixture();
    let img = &f.img;
    do_update(img, "user", &f.tree2, &[A], true).unwrap();
    check_clean(img);
    // user now holds exactly tree2: build a reference image from it.
    let reference = f.root.join("ref");
    create(&reference, &f.tree2, A);
    let kr = ring(&[A]);
    let i = Image::open(img, Access::ReadOnly).unwrap();
    let r = TreeReader::new(&i, i.snapshot(Some("user")).unwrap(), &kr);
    assert!(r.lookup(b"usr/share/big.bin").is_err());
    assert!(r.lookup(b"etc/hostname").is_err());
    assert!(r.lookup(b"opt/new/file").is_ok());
    let names = |p: &Path, s: &str| {
        let i = Image::open(p, Access::ReadOnly).unwrap();
        let kr = ring(&[A]);
        let r = TreeReader::new(&i, i.snapshot(Some(s)).unwrap(), &kr);
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), i.snapshot(Some(s)).unwrap().root)];
        while let Some((p, d)) = stack.pop() {
            for l in r.list(d).unwrap() {
                let mut q: Vec<u8> = p.clone();
                q.push(b'/');
                q.extend_from_slice(&l.name);
                if l.inode.is_dir() {
                    stack.push((q.clone(), l.inode.ino));
                }
                out.push((q, l.inode.size, l.inode.nlink));
            }
        }
        out.sort();
        out
    };
    assert_eq!(names(img, "user"), names(&reference, "main"));
    // main is untouched and still has the old files.
    let r = TreeReader::new(&i, i.snapshot(Some("main")).unwrap(), &kr);
    assert!(r.lookup(b"usr/share/big.bin").is_ok());
}

#[test]
fn refusals_leave_the_image_byte_identical() {
    let f = fixture();
    let img = &f.img;
    do_rekey(img, "user", &[A], B, false).unwrap();
    let h = file_hash(img);
    let same = |what: &str| assert_eq!(file_hash(img), h, "{what} changed the image");

    // Wrong old key: names of main are under A.
    let e = do_rekey(img, "main", &[C], B, false).unwrap_err();
    assert!(matches!(&e, Error::WrongKey { needed, .. } if needed == &vec![id(A)]), "{e}");
    assert!(e.to_string().contains(&id(A).to_string()));
    same("rekey with a wrong old key");
    // Wrong old key for the data of a lazily rekeyed snapshot.
    let e = do_rekey(img, "user", &[C], B, true).unwrap_err();
    assert!(matches!(&e, Error::WrongKey { needed, .. } if needed == &vec![id(A)]), "{e}");
    same("rekey --reencrypt with a wrong old key");
    // Missing snapshots.
    for e in [
        do_rekey(img, "nope", &[A], B, false).unwrap_err(),
        do_snapshot(img, "nope", "x").unwrap_err(),
        do_update(img, "nope", &f.tree2, &[A], false).unwrap_err(),
        do_delete(img, "nope").unwrap_err(),
    ] {
        assert!(e.to_string().contains("no snapshot named \"nope\""), "{e}");
    }
    same("a missing snapshot");
    // Duplicate and invalid names.
    let e = do_snapshot(img, "main", "user").unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(do_snapshot(img, "main", "a/b").is_err());
    same("a duplicate snapshot name");
    // update with a key that is not the policy key.
    let e = do_update(img, "user", &f.tree2, &[A], false).unwrap_err();
    assert!(matches!(&e, Error::WrongKey { needed, .. } if needed == &vec![id(B)]), "{e}");
    assert!(do_update(img, "user", &f.root.join("missing-dir"), &[B], false).is_err());
    same("update refusals");
    // The last snapshot cannot be deleted.
    do_delete(img, "user").unwrap();
    let h = file_hash(img);
    let e = do_delete(img, "main").unwrap_err();
    assert!(e.to_string().contains("only snapshot"), "{e}");
    assert_eq!(file_hash(img), h);
}

#[test]
fn rekey_to_a_third_key_keeps_all_data_readable() {
    let f = fixture();
    let img = &f.img;
    do_rekey(img, "user", &[A], B, false).unwrap();
    do_update(img, "user", &f.tree2, &[B], false).unwrap();
    let content = digest(img, &[A, B, C], false);
    // Lazy again, B → C: needs B for the names; data under A and B stays.
    let e = do_rekey(img, "user", &[A], C, false).unwrap_err();
    assert!(matches!(&e, Error::WrongKey { needed, .. } if needed == &vec![id(B)]), "{e}");
    do_rekey(img, "user", &[B], C, false).unwrap();
    assert_eq!(snapshot_keys(img, "user"), sorted(vec![id(A), id(B), id(C)]));
    // Re-encrypting needs both old data keys.
    let e = do_rekey(img, "user", &[B], C, true).unwrap_err();
    assert!(matches!(&e, Error::WrongKey { needed, .. } if needed == &vec![id(A)]), "{e}");
    do_rekey(img, "user", &[A, B], C, true).unwrap();
    assert_eq!(snapshot_keys(img, "user"), vec![id(C)]);
    assert_eq!(digest(img, &[A, B, C], false), content);
    check_clean(img);
}

// ---------------------------------------------------------------- crash matrix

/// Runs `op` on a copy of `base` with the `k`th write failing.
fn run_cut(base: &Path, work: &Path, k: Option<u64>, op: &dyn Fn(&Path) -> libimage::Result<()>) -> libimage::Result<()> {
    fs::copy(base, work).unwrap();
    set_thread_fail_after(k);
    let r = op(work);
    set_thread_fail_after(None);
    r
}

/// Writes of an uninterrupted run: the smallest cut that does not fail, minus one.
fn count_writes(base: &Path, work: &Path, op: &dyn Fn(&Path) -> libimage::Result<()>) -> u64 {
    let (mut lo, mut hi) = (1u64, 1u64 << 16);
    assert!(run_cut(base, work, Some(hi), op).is_ok());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if run_cut(base, work, Some(mid), op).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo - 1
}

/// A spread of cut points over `1..=n`: all of them when few.
fn spread(n: u64) -> Vec<u64> {
    if n <= 24 {
        return (1..=n).collect();
    }
    let mut v: BTreeSet<u64> = [1, 2, 3, n / 4, n / 3, n / 2, 2 * n / 3, 3 * n / 4, n - 2, n - 1, n].into();
    v.retain(|&k| k >= 1);
    v.into_iter().collect()
}

/// For every cut: the image is clean, holds exactly the old or the new state,
/// and from the old state a re-run completes to the new state.
fn crash_matrix(name: &str, base: &Path, keys: &[u8], op: &dyn Fn(&Path) -> libimage::Result<()>) {
    let dir = base.parent().unwrap();
    let work = dir.join(format!("{name}.work"));
    let old = digest(base, keys, true);
    run_cut(base, &work, None, op).unwrap();
    check_clean(&work);
    let new = digest(&work, keys, true);
    assert_ne!(old, new, "{name}: the operation changes nothing");
    let n = count_writes(base, &work, op);
    assert!(n >= 2, "{name}: only {n} writes");
    eprintln!("{name}: {n} writes, cuts at {:?}", spread(n));
    for k in spread(n) {
        let e = run_cut(base, &work, Some(k), op).unwrap_err();
        assert!(matches!(e, Error::InjectedFault { .. }), "{name} cut at {k}: {e}");
        check_clean(&work);
        let got = digest(&work, keys, true);
        assert!(
            got == old || got == new,
            "{name} cut at write {k} of {n}: neither the old nor the new state"
        );
        if got == new {
            // A cut in a settling commit (FORMAT.md §8): the operation is
            // durable already; a re-run of a delete would find nothing to do.
            continue;
        }
        op(&work).unwrap_or_else(|e| panic!("{name}: re-run after a cut at {k}: {e}"));
        check_clean(&work);
        assert!(
            digest(&work, keys, true) == new,
            "{name}: re-run after a cut at {k} did not reach the new state"
        );
    }
}

#[test]
fn crash_matrix_create() {
    let f = fixture();
    // --force over an existing image: the old image stays until the rename.
    let tree2 = f.tree2.clone();
    crash_matrix("create", &f.img, &[A], &|p| {
        create_image(p, Source::Dir(&tree2), &key(A), &create_opts(), &Quiet).map(drop)
    });
    let stray: Vec<_> = fs::read_dir(&f.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn crash_matrix_snapshot_and_delete() {
    let f = fixture();
    crash_matrix("snapshot", &f.img, &[A], &|p| do_snapshot(p, "user", "third"));
    do_rekey(&f.img, "user", &[A], B, false).unwrap();
    do_update(&f.img, "user", &f.tree2, &[B], false).unwrap();
    crash_matrix("delete", &f.img, &[A, B], &|p| do_delete(p, "user"));
}

#[test]
fn crash_matrix_rekey() {
    let f = fixture();
    crash_matrix("rekey", &f.img, &[A, B], &|p| do_rekey(p, "user", &[A], B, false).map(drop));
    // --reencrypt from scratch (names and data in one batch) and after a lazy rekey.
    crash_matrix("rekey --reencrypt", &f.img, &[A, B], &|p| {
        do_rekey(p, "user", &[A], B, true).map(drop)
    });
    do_rekey(&f.img, "user", &[A], B, false).unwrap();
    crash_matrix("rekey --reencrypt after lazy", &f.img, &[A, B], &|p| {
        do_rekey(p, "user", &[A], B, true).map(drop)
    });
}

#[test]
fn crash_matrix_update() {
    let f = fixture();
    do_rekey(&f.img, "user", &[A], B, false).unwrap();
    let tree2 = f.tree2.clone();
    crash_matrix("update --delete-missing", &f.img, &[A, B], &|p| {
        do_update(p, "user", &tree2, &[B], true)
    });
}

/// `--reencrypt` in batches of one extent: every cut leaves a clean image with
/// the same content, each extent under A or B; the re-run (`--resume`) does
/// only what is left.
#[test]
fn reencrypt_batches_resume_without_redoing_work() {
    let f = fixture();
    let base = &f.img;
    let work = f.root.join("batch.work");
    let opts = RekeyOptions {
        reencrypt: true,
        batch_extents: 1,
        time: T,
        ..Default::default()
    };
    let op = |p: &Path| -> libimage::Result<RekeyReport> {
        lifecycle::rekey(&mut Image::open(p, Access::ReadWrite)?, "user", &ring(&[A]), &key(B), &opts, &Quiet)
    };
    let content = digest(base, &[A, B], false);
    fs::copy(base, &work).unwrap();
    let full = op(&work).unwrap();
    let total = full.extents_reencrypted;
    assert!(total >= 4 && full.commits == total, "{full:?}");
    let new = digest(&work, &[A, B], true);
    let n = count_writes(base, &work, &|p| op(p).map(drop));
    let user_b = |p: &Path| {
        let i = Image::open(p, Access::ReadOnly).unwrap();
        let s = i.snapshot(Some("user")).unwrap();
        let mut ids = BTreeSet::new();
        for ino in s.inodes.values() {
            if let Body::File { map } = &ino.body {
                ids.extend(
                    map.iter()
                        .filter(|m| i.extent(m.extent).unwrap().ctx.key == id(B))
                        .map(|m| m.extent),
                );
            }
        }
        ids.len() as u64
    };
    let mut partial_seen = false;
    for k in spread(n) {
        let e = run_cut(base, &work, Some(k), &|p| op(p).map(drop)).unwrap_err();
        assert!(matches!(e, Error::InjectedFault { .. }));
        check_clean(&work);
        assert_eq!(digest(&work, &[A, B], false), content, "cut at {k}");
        let done = user_b(&work);
        partial_seen |= done > 0 && done < total;
        let r = op(&work).unwrap();
        assert_eq!(r.extents_reencrypted, total - done, "cut at {k}: work redone");
        assert_eq!(r.extents_already_new, done);
        check_clean(&work);
        assert_eq!(digest(&work, &[A, B], true), new, "cut at {k}");
    }
    assert!(partial_seen, "no cut fell between batches");
}

// ---------------------------------------------------------- exact extraction

fn extract_exact(img: &Path, snap: &str, keys: &[u8], dest: &Path, want: &Path) {
    let i = Image::open(img, Access::ReadOnly).unwrap();
    let as_root = libimage::tree::write::running_as_root();
    libimage::ops::read::extract(&i, Some(snap), &ring(keys), dest, as_root, &Quiet).unwrap();
    let diff = testkit::tree_diff(want, dest);
    assert!(diff.is_empty(), "{snap} with keys {keys:?}: {diff:#?}");
}

/// The tricky tree through the whole lifecycle: every extraction equals its
/// source exactly (metadata, hard links, holes, xattrs), and `update
/// --delete-missing` makes the snapshot equal to the new tree.
#[test]
fn tricky_tree_through_the_lifecycle() {
    use testkit::{make_tricky_tree, stamp_times};
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s);
    fs::create_dir(p("src")).unwrap();
    make_tricky_tree(&p("src")).unwrap();
    let img = p("img");
    create_image(&img, Source::Dir(&p("src")), &key(A), &CreateOptions::default(), &Quiet).unwrap();
    do_snapshot(&img, "main", "user").unwrap();
    do_rekey(&img, "user", &[A], B, false).unwrap();
    extract_exact(&img, "user", &[A, B], &p("x1"), &p("src"));
    do_rekey(&img, "user", &[A], B, true).unwrap();
    extract_exact(&img, "user", &[B], &p("x2"), &p("src"));
    extract_exact(&img, "main", &[A], &p("x3"), &p("src"));

    // The new tree: one hard-link name, a directory and a file gone, a file
    // changed, a file and a directory added.
    fs::create_dir(p("src2")).unwrap();
    make_tricky_tree(&p("src2")).unwrap();
    let s2 = p("src2");
    fs::remove_file(s2.join(testkit::HARD_LINK_NAMES[1])).unwrap();
    fs::remove_dir_all(s2.join("deep")).unwrap();
    fs::remove_file(s2.join("sizes/f4097")).unwrap();
    fs::write(s2.join("sizes/one"), b"changed").unwrap();
    fs::create_dir(s2.join("added")).unwrap();
    fs::write(s2.join("added/file"), pattern(11, 10_000)).unwrap();
    stamp_times(&s2, true).unwrap();
    do_update(&img, "user", &s2, &[B], true).unwrap();
    check_clean(&img);
    extract_exact(&img, "user", &[B], &p("x4"), &s2);
    extract_exact(&img, "main", &[A], &p("x5"), &p("src"));
    assert_eq!(snapshot_keys(&img, "user"), vec![id(B)]);
    // Deleting main frees what only it had; user is intact.
    do_delete(&img, "main").unwrap();
    check_clean(&img);
    extract_exact(&img, "user", &[B], &p("x6"), &s2);
}

/// `--reencrypt` of a snapshot in a fixed-size image too small to hold a
/// second copy of its data: each time it runs out of room it commits, which
/// frees the replaced extents, and continues.
#[test]
fn reencrypt_in_a_full_fixed_size_image() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for i in 0..6 {
        fs::write(tree.join(format!("f{i}")), pattern(20 + i, 16 * 4096)).unwrap();
    }
    let img = d.path().join("img");
    create(&img, &tree, A);
    let (total, meta) = {
        let i = Image::open(&img, Access::ReadOnly).unwrap();
        (i.superblock().total_blocks, i.superblock().meta_blocks)
    };
    // Room for the data, two metadata regions and two more extents.
    let mut opts = create_opts();
    opts.size = Some((total + meta + 2 * 16) * 4096);
    create_image(&img, Source::Dir(&tree), &key(A), &opts, &Quiet).unwrap();
    let content = digest(&img, &[A, B], false);
    let r = do_rekey(&img, "main", &[A], B, true).unwrap();
    assert_eq!(r.extents_reencrypted, 6);
    assert!(r.commits >= 3, "{r:?}");
    check_clean(&img);
    assert_eq!(snapshot_keys(&img, "main"), vec![id(B)]);
    assert_eq!(digest(&img, &[A, B], false), content);
    assert_eq!(
        Image::open(&img, Access::ReadOnly).unwrap().superblock().total_blocks,
        total + meta + 32
    );
}
