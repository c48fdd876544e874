//! Issue 10: incremental ext4 backups restored with their bases
//! (docs/BACKUP.md §11.3, §11.4), without the kernel. Deterministic
//! `create --format ext4` builds give every file the same nonce (context)
//! when only file contents change, so rebuilding after editing one file
//! gives an image in which exactly that file's ciphertext changed: full
//! backup → edit → `create --since` → `restore --base` equals the edited
//! image (ciphertext byte for byte, and the tree extracted with the key),
//! a chain of two incrementals restores with both bases, and a missing base
//! is an operational error naming the backup id needed.

use std::fs;
use std::path::{Path, PathBuf};

use ext4fs::inode::{S_IFMT, S_IFREG};
use ext4fs::read::{walk, Fs, ReadError, Visit};
use fscrypt::MasterKey;
use libimage::engine::image::Keyring;
use libimage::ops::build::Reproducible;
use libimage::ops::ext4::list::verify_archive as verify;
use libimage::ops::ext4::restore::{restore, Ext4RestoreOptions};
use libimage::ops::ext4::{backup, create_ext4, Ext4Options, Ext4Source};
use libimage::progress::Quiet;
use testkit::TestRng;

fn key() -> MasterKey {
    MasterKey::from_bytes(&[0x5a; 64]).unwrap()
}

fn build(src: &Path, img: &Path) {
    let opts = Ext4Options {
        encrypted_dir: "data".into(),
        repro: Reproducible {
            deterministic: true,
            clamp: None,
        },
        force: true,
        ..Default::default()
    };
    create_ext4(img, Ext4Source::Dir(src), &key(), &opts, &Quiet).unwrap();
}

/// Backs up `img` (incremental on `since`) into `out`; returns the report.
fn backup_to(img: &Path, out: &Path, since: Option<&Path>) -> backup::Ext4BackupReport {
    let mut buf = Vec::new();
    let rep = match since {
        Some(p) => {
            let mut f = fs::File::open(p).unwrap();
            backup::create(img, &mut buf, Some(&mut f), &Quiet).unwrap()
        }
        None => backup::create(img, &mut buf, None, &Quiet).unwrap(),
    };
    fs::write(out, buf).unwrap();
    rep
}

fn restore_from(archive: &Path, dest: &Path, bases: &[&Path]) -> libimage::Result<u64> {
    let opts = Ext4RestoreOptions {
        bases: bases.iter().map(|p| p.to_path_buf()).collect(),
        ..Default::default()
    };
    restore(&mut fs::File::open(archive).unwrap(), dest, &opts, &Quiet).map(|r| r.base_files)
}

type Cipher = Vec<(Vec<u8>, Vec<u8>, u64, Vec<(u64, Vec<u8>)>)>;

/// (raw path, context, size, ciphertext blocks) of every encrypted file.
fn ciphertexts(img: &Path) -> Cipher {
    let f = Fs::open(img).unwrap();
    let mut out = Cipher::new();
    walk::<ReadError>(
        &f,
        &mut |e| {
            if e.inode.mode & S_IFMT == S_IFREG && e.first_link {
                if let Some(ctx) = f.context(e.ino, e.inode)? {
                    let map = f.extents(e.ino, e.inode)?;
                    let mut blocks = Vec::new();
                    f.read_mapped::<ReadError>(&map, 1, &mut |l, b| {
                        blocks.push((l, b.to_vec()));
                        Ok(())
                    })?;
                    out.push((e.path.join(&b'/'), ctx, e.inode.size, blocks));
                }
            }
            Ok(Visit::Descend)
        },
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    out.sort();
    out
}

/// The restored image: e2fsck-clean, its ciphertext identical to `want`'s,
/// and with the key its tree is `src`.
fn check_restored(restored: &Path, want: &Path, src: &Path, scratch: &Path) {
    if testkit::require_tool("e2fsck") {
        testkit::kernel::e2fsck_fn(restored).unwrap();
    }
    let (a, b) = (ciphertexts(want), ciphertexts(restored));
    assert!(a.len() > 5, "{}", a.len());
    assert!(a == b, "ciphertext of the restored image differs from the source image");
    let out = scratch.join(format!("x-{}", restored.file_name().unwrap().to_string_lossy()));
    let fsys = libimage::ops::ext4::reader::open(restored).unwrap();
    libimage::ops::ext4::extract::extract(&fsys, &Keyring::new(vec![key()]), &out, true).unwrap();
    testkit::tree_equal(src, &out.join("data")).unwrap();
}

fn edit(path: &Path, seed: u64) {
    let mut b = fs::read(path).unwrap();
    TestRng::new(seed).fill(&mut b);
    fs::write(path, b).unwrap();
}

#[test]
fn incremental_chain_restores_with_its_bases() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { t.path().join(n) };
    let src = p("src");
    fs::create_dir(&src).unwrap();
    testkit::make_tricky_tree(&src).unwrap();
    fs::create_dir(src.join("big")).unwrap();
    for i in 0..6u64 {
        let mut b = vec![0u8; 20_000 + 4096 * i as usize];
        TestRng::new(i).fill(&mut b);
        fs::write(src.join(format!("big/f{i}")), b).unwrap();
    }

    // Runs longer than the writer's read chunk, and holes between runs.
    let mut b = vec![0u8; 300_000];
    TestRng::new(77).fill(&mut b);
    b[100_000..180_000].fill(0);
    fs::write(src.join("big/runs"), b).unwrap();

    build(&src, &p("v1.img"));
    let full = backup_to(&p("v1.img"), &p("full.tar"), None);
    assert_eq!(full.unchanged_files, 0);

    // One file's contents change: the rebuilt image keeps every context.
    edit(&src.join("big/f2"), 100);
    build(&src, &p("v2.img"));
    let inc1 = backup_to(&p("v2.img"), &p("inc1.tar"), Some(&p("full.tar")));
    assert_eq!(inc1.encrypted_files, full.encrypted_files);
    assert_eq!(
        inc1.unchanged_files,
        inc1.encrypted_files - 1,
        "deterministic rebuilds keep the contexts"
    );

    assert_eq!(
        restore_from(&p("inc1.tar"), &p("r2.img"), &[&p("full.tar")]).unwrap(),
        inc1.unchanged_files
    );
    check_restored(&p("r2.img"), &p("v2.img"), &src, t.path());

    // A second incremental on the first: unchanged data lives two archives back.
    edit(&src.join("big/f4"), 200);
    build(&src, &p("v3.img"));
    let inc2 = backup_to(&p("v3.img"), &p("inc2.tar"), Some(&p("inc1.tar")));
    assert_eq!(inc2.unchanged_files, inc2.encrypted_files - 1);
    assert!(fs::metadata(p("inc2.tar")).unwrap().len() < fs::metadata(p("full.tar")).unwrap().len() / 2);

    // Missing bases: an operational error naming the id needed; no image left.
    let e = restore_from(&p("inc2.tar"), &p("r3.img"), &[]).unwrap_err();
    assert!(matches!(e, libimage::Error::Invalid(_)), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("base backup {}, which was not given", inc1.backup_id)),
        "{e}"
    );
    let e = restore_from(&p("inc2.tar"), &p("r3.img"), &[&p("inc1.tar")]).unwrap_err();
    assert_eq!(libimage::exit::for_error(&e), libimage::exit::OPERATIONAL);
    assert!(
        e.to_string()
            .contains(&format!("base backup {}, which was not given", full.backup_id)),
        "{e}"
    );
    assert!(!p("r3.img").exists());

    // verify: alone it checks the archive and counts what lives in the bases;
    // with the chain it finds every unchanged file's data there.
    let v = verify(&mut fs::File::open(p("inc2.tar")).unwrap(), &[]).unwrap();
    assert_eq!((v.unchanged_files, v.unchanged_found), (inc2.unchanged_files, 0));
    let v = verify(&mut fs::File::open(p("inc2.tar")).unwrap(), &[p("inc1.tar"), p("full.tar")]).unwrap();
    assert_eq!((v.unchanged_files, v.unchanged_found), (inc2.unchanged_files, inc2.unchanged_files));
    assert!(verify(&mut fs::File::open(p("inc2.tar")).unwrap(), &[p("inc1.tar")]).is_err());

    // The whole chain, in either order.
    restore_from(&p("inc2.tar"), &p("r3.img"), &[&p("full.tar"), &p("inc1.tar")]).unwrap();
    check_restored(&p("r3.img"), &p("v3.img"), &src, t.path());

    // A base given twice is refused.
    let e = restore_from(&p("inc1.tar"), &p("r4.img"), &[&p("full.tar"), &p("full.tar")]).unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
}
