//! Issue 10, test 1: round trip through the kernel. The kernel makes an
//! fscrypt-encrypted ext4 (mkfs.ext4 -O encrypt, loop mount, v2 policy on a
//! directory) and copies in the tricky tree and a 20,000-entry directory;
//! keyless `backup-crypt create`, `verify`, `list` (and `tar -tf`), keyless
//! `restore` into a new image; `e2fsck -fn` is clean; the kernel mounts the
//! restored image and with the key the tree equals the source; every
//! encrypted file's context, encrypted name, size and ciphertext blocks are
//! byte-identical (read from both images with ext4fs::read).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use ext4fs::inode::{S_IFMT, S_IFREG};
use ext4fs::read::{walk, Fs, Visit};
use testkit::kernel::{self, LoopMount};
use testkit::TestRng;

fn bc(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backup-crypt")).args(args).output().unwrap()
}

/// Raw (ciphertext) path → (context, size, [(lblk, block bytes)]) of every
/// encrypted regular file.
type Cipher = BTreeMap<Vec<u8>, (Vec<u8>, u64, Vec<(u64, Vec<u8>)>)>;

fn ciphertexts(img: &Path) -> Cipher {
    let f = Fs::open(img).unwrap();
    let mut out = Cipher::new();
    walk::<ext4fs::read::ReadError>(
        &f,
        &mut |e| {
            if e.inode.mode & S_IFMT == S_IFREG && e.first_link {
                if let Some(ctx) = f.context(e.ino, e.inode)? {
                    let map = f.extents(e.ino, e.inode)?;
                    let mut blocks = Vec::new();
                    f.read_mapped::<ext4fs::read::ReadError>(&map, 1, &mut |l, b| {
                        blocks.push((l, b.to_vec()));
                        Ok(())
                    })?;
                    out.insert(e.path.join(&b'/'), (ctx, e.inode.size, blocks));
                }
            }
            Ok(Visit::Descend)
        },
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    out
}

#[test]
fn kernel_ext4_backup_restore_round_trip() {
    testkit::require_kernel!();
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("src.img");
    kernel::mkfs_ext4_encrypt(&img, 512 << 20).unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    testkit::make_tricky_tree(&src).unwrap();
    let mut raw = [0u8; 64];
    TestRng::new(0x10).fill(&mut raw);

    let mut m = LoopMount::new(&img, false).unwrap();
    let id = m.add_key(&raw).unwrap();
    let enc = m.join("enc");
    fs::create_dir(&enc).unwrap();
    kernel::set_policy(&enc, &id).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(enc.join("tree"))
        .status()
        .unwrap()
        .success());
    fs::create_dir(enc.join("big")).unwrap();
    for i in 0..20_000 {
        fs::write(enc.join("big").join(format!("entry-{i:05}")), format!("{i}")).unwrap();
    }
    fs::write(m.join("plain.txt"), b"not encrypted").unwrap();
    m.unmount().unwrap();

    let archive = t.path().join("backup.tar");
    let out = bc(&["create".as_ref(), img.as_os_str(), "-o".as_ref(), archive.as_os_str()]);
    assert!(out.status.success(), "create: {}", String::from_utf8_lossy(&out.stderr));
    let out = bc(&["verify".as_ref(), archive.as_os_str()]);
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stderr));
    let out = bc(&["list".as_ref(), archive.as_os_str()]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("./plain.txt") && listing.lines().count() > 20_000, "list");
    // An ordinary tar reader lists it too.
    let tar = Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
    assert!(tar.status.success(), "{}", String::from_utf8_lossy(&tar.stderr));
    assert!(String::from_utf8_lossy(&tar.stdout).lines().count() > 20_000);

    let restored = t.path().join("restored.img");
    let out = bc(&["restore".as_ref(), archive.as_os_str(), restored.as_os_str()]);
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    kernel::e2fsck_fn(&restored).unwrap();

    // Ciphertext, contexts, encrypted names and sizes identical.
    let a = ciphertexts(&img);
    let b = ciphertexts(&restored);
    assert!(a.len() > 20_000, "{}", a.len());
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert!(b.get(k) == Some(v), "ciphertext of {} differs", String::from_utf8_lossy(k));
    }

    // The kernel mounts the restored image; with the key the tree equals the source.
    let mut m = LoopMount::new(&restored, false).unwrap();
    m.add_key(&raw).unwrap();
    testkit::tree_equal(&src, &m.join("enc/tree")).unwrap();
    assert_eq!(fs::read_dir(m.join("enc/big")).unwrap().count(), 20_000);
    assert_eq!(fs::read_to_string(m.join("enc/big/entry-12345")).unwrap(), "12345");
    assert_eq!(fs::read(m.join("plain.txt")).unwrap(), b"not encrypted");
    m.unmount().unwrap();

    // Without the key, the restored image shows the source's no-key names,
    // also in the indexed 20,000-entry directory (whose names carry the
    // dirhash: same seed, same hash version and signedness).
    // (Directory sizes differ: the kernel and the writer pack blocks differently.)
    let names = |v: Vec<(String, u64)>| v.into_iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(names(nokey_ls(&img, "enc")), names(nokey_ls(&restored, "enc")));
    let big = nokey_ls(&img, "enc")
        .into_iter()
        .find(|(_, size)| *size > 100_000)
        .expect("the big directory");
    let src_names = nokey_ls(&img, &format!("enc/{}", big.0));
    assert_eq!(src_names.len(), 20_000);
    assert_eq!(
        src_names,
        nokey_ls(&restored, &format!("enc/{}", big.0)),
        "no-key names in the indexed directory differ"
    );

    // Incremental: the kernel changes one encrypted file in place, adds one
    // and deletes one; a backup --since the first stores only the changed
    // and the new file's ciphertext.
    let mut m = LoopMount::new(&img, false).unwrap();
    m.add_key(&raw).unwrap();
    fs::write(m.join("enc/big/entry-00007"), b"changed").unwrap();
    fs::write(m.join("enc/tree/added-file"), vec![7u8; 50_000]).unwrap();
    fs::remove_file(m.join("enc/big/entry-00009")).unwrap();
    m.unmount().unwrap();
    let inc = t.path().join("inc.tar");
    let text = create_since(&img, &inc, &archive);
    let enc_files = a.len();
    assert!(
        text.contains(&format!("{enc_files} encrypted files ({} unchanged since the base)", enc_files - 2)),
        "{text}"
    );
    assert!(fs::metadata(&inc).unwrap().len() < fs::metadata(&archive).unwrap().len() / 2);
    let full_id = backup_id(&bc(&["verify".as_ref(), archive.as_os_str()]));

    // verify alone checks the archive and says what lives in the base;
    // with --base it also finds every unchanged file's ciphertext there.
    let out = bc(&["verify".as_ref(), inc.as_os_str()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not checked (pass --base"), "{out:?}");
    let out = bc(&["verify".as_ref(), inc.as_os_str(), "--base".as_ref(), archive.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("all {} unchanged files", enc_files - 2)));

    // restore without its base: exit 8 naming the base backup id; nothing left.
    let r2 = t.path().join("restored2.img");
    let out = bc(&["restore".as_ref(), inc.as_os_str(), r2.as_os_str()]);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("base backup {full_id}, which was not given")),
        "{out:?}"
    );
    assert!(!r2.exists());
    let out = bc(&[
        "restore".as_ref(),
        inc.as_os_str(),
        r2.as_os_str(),
        "--base".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "restore --base: {out:?}");
    assert_restored(&img, &r2, &raw);

    // A chain: a second incremental on the first, restored with both bases.
    let mut m = LoopMount::new(&img, false).unwrap();
    m.add_key(&raw).unwrap();
    fs::write(m.join("enc/big/entry-00100"), b"changed again").unwrap();
    m.unmount().unwrap();
    let inc2 = t.path().join("inc2.tar");
    let text = create_since(&img, &inc2, &inc);
    assert!(text.contains(&format!("({} unchanged since the base)", enc_files - 1)), "{text}");
    let inc_id = backup_id(&bc(&["verify".as_ref(), inc.as_os_str()]));
    let r3 = t.path().join("restored3.img");
    let out = bc(&[
        "restore".as_ref(),
        inc2.as_os_str(),
        r3.as_os_str(),
        "--base".as_ref(),
        archive.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("base backup {inc_id}, which was not given")),
        "{out:?}"
    );
    let out = bc(&[
        "restore".as_ref(),
        inc2.as_os_str(),
        r3.as_os_str(),
        "--base".as_ref(),
        inc.as_os_str(),
        "--base".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "restore of a chain: {out:?}");
    assert_restored(&img, &r3, &raw);
    let _ = fs::Permissions::from_mode(0o600);
}

/// (name, size) of the entries of `dir` as `fsck-crypt ls IMAGE DIR` prints
/// them without a key (no-key names inside encrypted directories), sorted.
fn nokey_ls(img: &Path, dir: &str) -> Vec<(String, u64)> {
    let fsys = libimage::ops::ext4::reader::open(img).unwrap();
    let keys = libimage::engine::image::Keyring::new(Vec::new());
    let mut v: Vec<(String, u64)> = libimage::ops::ext4::list::ls(&fsys, dir, &keys)
        .unwrap()
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.size))
        .collect();
    v.sort();
    v
}

/// `backup-crypt create IMG -o OUT --since PREV`; its stdout.
fn create_since(img: &Path, out: &Path, prev: &Path) -> String {
    let o = bc(&[
        "create".as_ref(),
        img.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--since".as_ref(),
        prev.as_os_str(),
    ]);
    assert!(o.status.success(), "create --since: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The backup id in `verify`'s "ok: ext4 backup ID: ..." line.
fn backup_id(o: &Output) -> String {
    let s = String::from_utf8_lossy(&o.stdout);
    s.split("ext4 backup ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_string()
}

/// The restored image is e2fsck-clean, its encrypted files (ciphertext,
/// contexts, names, sizes) are byte-identical to the source's, and mounted
/// with the key its tree equals the source's.
fn assert_restored(src_img: &Path, restored: &Path, raw: &[u8]) {
    kernel::e2fsck_fn(restored).unwrap();
    let (a, b) = (ciphertexts(src_img), ciphertexts(restored));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert!(b.get(k) == Some(v), "ciphertext of {} differs", String::from_utf8_lossy(k));
    }
    let mut ms = LoopMount::new(src_img, true).unwrap();
    ms.add_key(raw).unwrap();
    let mut mr = LoopMount::new(restored, true).unwrap();
    mr.add_key(raw).unwrap();
    testkit::tree_equal(&ms.join("enc"), &mr.join("enc")).unwrap();
    assert_eq!(fs::read(mr.join("plain.txt")).unwrap(), b"not encrypted");
    mr.unmount().unwrap();
    ms.unmount().unwrap();
}
