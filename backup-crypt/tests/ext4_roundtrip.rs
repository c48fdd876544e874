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

    // Incremental: change one encrypted file on the source; a backup --since
    // the first stores only that file's ciphertext.
    let mut m = LoopMount::new(&img, false).unwrap();
    m.add_key(&raw).unwrap();
    fs::write(m.join("enc/big/entry-00007"), b"changed").unwrap();
    m.unmount().unwrap();
    let inc = t.path().join("inc.tar");
    let out = bc(&[
        "create".as_ref(),
        img.as_os_str(),
        "-o".as_ref(),
        inc.as_os_str(),
        "--since".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "create --since: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let enc_files = a.len();
    assert!(
        text.contains(&format!("{enc_files} encrypted files ({} unchanged since the base)", enc_files - 1)),
        "{text}"
    );
    assert!(bc(&["verify".as_ref(), inc.as_os_str()]).status.success());
    assert!(fs::metadata(&inc).unwrap().len() < fs::metadata(&archive).unwrap().len() / 2);
    let _ = fs::Permissions::from_mode(0o600);
}
