//! Issue 2 acceptance tests: round trips from a tree and from tar,
//! reproducible builds, no plaintext in the image, refusals, the golden image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fscrypt::MasterKey;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::build::Reproducible;
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::progress::Quiet;
use libimage::Error;
use testkit::{is_sparse, make_tricky_tree, tree_diff};

fn key(seed: u8) -> MasterKey {
    let raw: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(7).wrapping_add(seed)).collect();
    MasterKey::from_bytes(&raw).unwrap()
}

fn extract_to(img_path: &Path, k: MasterKey, dest: &Path) {
    let img = Image::open(img_path, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![k]);
    libimage::ops::read::extract(&img, None, &keys, dest, true, &Quiet).unwrap();
}

fn tricky(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    make_tricky_tree(&src).unwrap();
    src
}

#[test]
fn round_trip_from_tree() {
    let t = tempfile::tempdir().unwrap();
    let src = tricky(t.path());
    let img = t.path().join("a.img");
    let rep = create_image(&img, Source::Dir(&src), &key(1), &CreateOptions::default(), &Quiet).unwrap();
    assert!(
        rep.stats.files >= 8 && rep.stats.hardlinks >= 2 && rep.stats.specials >= 1,
        "{rep:?}"
    );
    let out = t.path().join("out");
    extract_to(&img, key(1), &out);
    let diff = tree_diff(&src, &out);
    assert!(diff.is_empty(), "differences: {diff:#?}");
    let sparse: Vec<_> = walk_files(&out)
        .into_iter()
        .filter(|p| p.file_name().unwrap() == "sparse")
        .collect();
    assert_eq!(sparse.len(), 1);
    assert!(is_sparse(&sparse[0]), "sparse file lost its holes");
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn round_trip_through_tar() {
    let t = tempfile::tempdir().unwrap();
    let src = tricky(t.path());
    let tar = t.path().join("t.tar");
    let st = Command::new("tar")
        .args(["--format=pax", "--xattrs", "--xattrs-include=*", "--sparse", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let img = t.path().join("t.img");
    let mut f = fs::File::open(&tar).unwrap();
    create_image(&img, Source::Tar(&mut f), &key(2), &CreateOptions::default(), &Quiet).unwrap();
    let out = t.path().join("out");
    extract_to(&img, key(2), &out);
    let diff = tree_diff(&src, &out);
    assert!(diff.is_empty(), "differences: {diff:#?}");
}

#[test]
fn deterministic_builds_are_identical_and_default_builds_differ() {
    let t = tempfile::tempdir().unwrap();
    let src = tricky(t.path());
    let det = CreateOptions {
        repro: Reproducible {
            deterministic: true,
            clamp: Some(1_700_000_000),
        },
        ..Default::default()
    };
    let build = |name: &str, o: &CreateOptions| {
        let p = t.path().join(name);
        create_image(&p, Source::Dir(&src), &key(3), o, &Quiet).unwrap();
        fs::read(&p).unwrap()
    };
    let (a, b) = (build("d1.img", &det), build("d2.img", &det));
    assert!(a == b, "deterministic builds differ");
    let (c, d) = (
        build("r1.img", &CreateOptions::default()),
        build("r2.img", &CreateOptions::default()),
    );
    assert!(c != d, "default builds are identical");
    // Timestamps were clamped.
    let img = Image::open(&t.path().join("d1.img"), Access::ReadOnly).unwrap();
    let snap = img.snapshot(None).unwrap();
    assert!(snap
        .inodes
        .values()
        .all(|i| i.mtime.sec <= 1_700_000_000 && i.atime == i.mtime && i.ctime == i.mtime));
}

#[test]
fn deterministic_nonces_differ_for_different_content() {
    let t = tempfile::tempdir().unwrap();
    let det = CreateOptions {
        repro: Reproducible {
            deterministic: true,
            clamp: None,
        },
        ..Default::default()
    };
    let mut nonces = Vec::new();
    for (i, content) in [b"first content".as_slice(), b"other content"].iter().enumerate() {
        let src = t.path().join(format!("s{i}"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), content).unwrap();
        let p = t.path().join(format!("{i}.img"));
        create_image(&p, Source::Dir(&src), &key(4), &det, &Quiet).unwrap();
        let img = Image::open(&p, Access::ReadOnly).unwrap();
        nonces.extend(img.meta().extents.values().map(|e| e.ctx.nonce));
    }
    assert_eq!(nonces.len(), 2);
    assert_ne!(nonces[0], nonces[1], "same path, different content reused a nonce");
}

#[test]
fn no_plaintext_in_image() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("secret-directory-name")).unwrap();
    let marker = b"PLAINTEXT-MARKER-0123456789";
    let mut content = Vec::new();
    for _ in 0..500 {
        content.extend_from_slice(marker);
    }
    fs::write(src.join("secret-directory-name/secret-file-name.txt"), &content).unwrap();
    fs::write(src.join("small"), marker).unwrap();
    std::os::unix::fs::symlink("secret-link-target-path", src.join("lnk")).unwrap();
    let img = t.path().join("p.img");
    create_image(&img, Source::Dir(&src), &key(5), &CreateOptions::default(), &Quiet).unwrap();
    let bytes = fs::read(&img).unwrap();
    for needle in [&marker[..12], b"secret-directory", b"secret-file", b"secret-link", b"small"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext {:?} found in image",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn refusals_leave_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let dir_entries = || {
        let mut v: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let before = dir_entries();

    // Missing source.
    let img = t.path().join("x.img");
    let e = create_image(
        &img,
        Source::Dir(&t.path().join("nope")),
        &key(6),
        &CreateOptions::default(),
        &Quiet,
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");

    // Name over 255 bytes (via a pax tar).
    let long = "n".repeat(300);
    let tar = pax_tar(&[(format!("ok/{long}"), b"data".as_slice())]);
    let e = create_image(&img, Source::Tar(&mut tar.as_slice()), &key(6), &CreateOptions::default(), &Quiet).unwrap_err();
    assert!(e.to_string().contains("255"), "{e}");

    // Truncated and corrupt tar.
    let good = pax_tar(&[("a".into(), [7u8; 3000].as_slice()), ("b".into(), b"bbb".as_slice())]);
    for cut in [100, 511, 512, 1500, 2560] {
        let e = create_image(&img, Source::Tar(&mut &good[..cut]), &key(6), &CreateOptions::default(), &Quiet);
        assert!(e.is_err(), "truncated tar at {cut} accepted");
    }
    let mut bad = good.clone();
    bad[148] ^= 0x55; // header checksum field
    assert!(create_image(&img, Source::Tar(&mut bad.as_slice()), &key(6), &CreateOptions::default(), &Quiet).is_err());
    assert_eq!(dir_entries(), before, "a failed create left files behind");

    // Existing image without --force is untouched.
    fs::write(&img, b"precious").unwrap();
    let e = create_image(&img, Source::Dir(&src), &key(6), &CreateOptions::default(), &Quiet).unwrap_err();
    assert!(e.to_string().contains("replacing it was not requested"), "{e}");
    assert_eq!(fs::read(&img).unwrap(), b"precious");
    // With --force it is replaced.
    create_image(
        &img,
        Source::Dir(&src),
        &key(6),
        &CreateOptions {
            force: true,
            ..Default::default()
        },
        &Quiet,
    )
    .unwrap();
    assert!(Image::open(&img, Access::ReadOnly).is_ok());
}

fn pax_tar(files: &[(String, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_pax_extensions([("path", name.as_bytes())]).unwrap();
        h.set_path("placeholder").unwrap();
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn fixed_size_runs_out_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("big"), vec![1u8; 1 << 20]).unwrap();
    let img = t.path().join("s.img");
    let o = CreateOptions {
        size: Some(64 * 4096),
        ..Default::default()
    };
    let e = create_image(&img, Source::Dir(&src), &key(7), &o, &Quiet).unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    assert!(!img.exists());
    let o = CreateOptions {
        size: Some(1024 * 4096),
        ..Default::default()
    };
    create_image(&img, Source::Dir(&src), &key(7), &o, &Quiet).unwrap();
    assert_eq!(fs::metadata(&img).unwrap().len(), 1024 * 4096);
}

#[test]
fn wrong_key_names_given_and_needed_ids() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let img = t.path().join("w.img");
    create_image(&img, Source::Dir(&src), &key(8), &CreateOptions::default(), &Quiet).unwrap();
    let im = Image::open(&img, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![key(9)]);
    let e = libimage::ops::read::extract(&im, None, &keys, &t.path().join("o"), false, &Quiet).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::WrongKey { .. }));
    assert!(
        msg.contains(&key(9).identifier().to_string()) && msg.contains(&key(8).identifier().to_string()),
        "{msg}"
    );
}

#[test]
fn golden_image_still_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = root.join("testdata/golden/demo.img");
    let raw = fs::read(root.join("testdata/demo/key")).unwrap();
    let k = MasterKey::from_bytes(&raw).unwrap();
    assert_eq!(k.identifier().to_string(), "69b2f6edeee720cce0577937eb8a6751");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    extract_to(&golden, k, &out);
    let tree = root.join("testdata/demo/tree");
    for rel in ["README.txt", "bin/hello.sh", "docs/notes.md", "docs/guides/data.bin"] {
        assert_eq!(fs::read(out.join(rel)).unwrap(), fs::read(tree.join(rel)).unwrap(), "{rel}");
    }
    assert_eq!(fs::read_link(out.join("docs/readme-link")).unwrap(), Path::new("../README.txt"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(out.join("bin/hello.sh")).unwrap().permissions().mode() & 0o777, 0o755);
}
