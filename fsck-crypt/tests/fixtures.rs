//! `fsck-crypt check` on the committed fixtures in `testdata/fsck` (and on a
//! fresh regeneration of them): each must give exactly the finding codes and
//! exit code of `expected.json`, in-process and through the binary; the
//! repairable ones must be fixed by `--repair` without changing any file's
//! content, and an interrupted repair must lose nothing.

#[allow(dead_code)]
#[path = "../../libimage/examples/mkfixtures.rs"]
mod mkfixtures;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fscrypt::MasterKey;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::check::{check, CheckOptions, Report};
use libimage::progress::Quiet;
use mkfixtures::Case;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fsck")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fsck-crypt"))
}

fn manifest(dir: &Path) -> Vec<Case> {
    let text = fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("manifest parses")
}

/// The case's arguments with key files resolved against `dir`.
fn args(dir: &Path, args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a.ends_with(".key") {
                dir.join(a).display().to_string()
            } else {
                a.clone()
            }
        })
        .collect()
}

fn run_lib(image: &Path, args: &[String], repair: bool) -> Report {
    let mut keys = Vec::new();
    let mut opts = CheckOptions {
        repair,
        ..CheckOptions::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--key-file" => {
                let p = it.next().expect("key file");
                keys.push(libimage::engine::keyfile::load_key(Path::new(p)).expect("key"));
            }
            "--data" => opts.data = true,
            "--snapshot" => opts.snapshot = it.next().cloned(),
            other => panic!("unexpected argument {other}"),
        }
    }
    check(image, &Keyring::new(keys), &opts, &Quiet).expect("check runs")
}

fn run_bin(image: &Path, args: &[String], extra: &[&str]) -> (i32, String) {
    let out = bin()
        .arg("check")
        .arg(image)
        .args(args)
        .args(extra)
        .output()
        .expect("run fsck-crypt");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_codes(doc: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("bad JSON ({e}): {doc}"));
    assert_eq!(v["format_version"], 1);
    let mut c: Vec<String> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            for k in ["code", "severity", "where", "message", "hint"] {
                assert!(!f[k].is_null(), "finding without {k}: {f}");
            }
            f["code"].as_str().expect("code").to_string()
        })
        .collect();
    c.sort();
    c.dedup();
    c
}

fn assert_cases(dir: &Path) {
    let cases = manifest(dir);
    assert!(cases.len() >= 20, "manifest too short");
    for c in &cases {
        let image = dir.join(&c.image);
        let a = args(dir, &c.args);
        let r = run_lib(&image, &a, false);
        assert_eq!(r.codes(), c.codes, "{}: {} {:?}: {:#?}", c.class, c.image, c.args, r.findings);
        assert_eq!(r.exit_code, c.exit, "{}: exit code", c.class);
        let (code, out) = run_bin(&image, &a, &["--json"]);
        assert_eq!(code, c.exit, "{}: binary exit code; output {out}", c.class);
        assert_eq!(json_codes(&out), c.codes, "{}: binary JSON codes", c.class);
    }
}

#[test]
fn committed_fixtures_give_exactly_their_codes() {
    assert_cases(&testdata());
}

#[test]
fn regenerated_fixtures_give_the_same_codes() {
    let t = tempfile::tempdir().unwrap();
    let cases = mkfixtures::generate(t.path()).expect("generate");
    let committed = manifest(&testdata());
    assert_eq!(
        serde_json::to_string(&cases).unwrap(),
        serde_json::to_string(&committed).unwrap(),
        "testdata/fsck/expected.json is stale: cargo run -p libimage --example mkfixtures -- testdata/fsck"
    );
    assert_cases(t.path());
}

/// Every regular file's content and every symlink target, by path, read
/// with the key through the library.
fn contents(image: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let keys = Keyring::new(vec![MasterKey::from_bytes(&mkfixtures::test_key_bytes()).unwrap()]);
    let img = Image::open(image, Access::ReadOnly).expect("repaired image opens");
    let snap = img.snapshot(None).unwrap();
    let r = libimage::ops::read::TreeReader::new(&img, snap, &keys);
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![(String::new(), snap.root)];
    while let Some((p, dir)) = stack.pop() {
        for l in r.list(dir).unwrap() {
            let path = format!("{p}/{}", String::from_utf8_lossy(&l.name));
            match &l.inode.body {
                libimage::format::inode::Body::Dir { .. } => {
                    out.insert(path.clone() + "/", Vec::new());
                    stack.push((path, l.inode.ino));
                }
                libimage::format::inode::Body::File { .. } => {
                    let mut data = vec![0u8; l.inode.size as usize];
                    r.read_file(l.inode.ino, &mut |off, buf| {
                        data[off as usize..off as usize + buf.len()].copy_from_slice(buf);
                        Ok(())
                    })
                    .unwrap();
                    out.insert(path, data);
                }
                libimage::format::inode::Body::Symlink { .. } => {
                    out.insert(path, r.read_link(l.inode.ino).unwrap());
                }
                libimage::format::inode::Body::Special => {
                    out.insert(path, b"special".to_vec());
                }
            }
        }
    }
    out
}

#[test]
fn repair_then_check_and_no_content_changes() {
    let dir = testdata();
    let t = tempfile::tempdir().unwrap();
    let clean = contents(&dir.join("clean.img"));
    assert!(clean.contains_key("/d1/d2/c.txt") && clean["/a.txt"] == b"hello, fsck\n");
    for c in manifest(&dir) {
        let Some([repair_exit, after_exit]) = c.repair else { continue };
        let image = t.path().join(&c.image);
        fs::copy(dir.join(&c.image), &image).unwrap();
        let a = args(&dir, &c.args);
        let before = fs::read(&image).unwrap();
        let (code, out) = run_bin(&image, &a, &["--repair"]);
        assert_eq!(code, repair_exit, "{}: --repair exit; output:\n{out}", c.class);
        let (code, out) = run_bin(&image, &a, &[]);
        assert_eq!(code, after_exit, "{}: check after --repair; output:\n{out}", c.class);
        if repair_exit & 1 == 0 {
            assert_eq!(
                fs::read(&image).unwrap(),
                before,
                "{}: nothing repaired, yet the image changed",
                c.class
            );
            continue;
        }
        // Fixed: every file reads back as in the clean image; orphans under
        // /lost+found/#INO keep their content and their subtree.
        let got = contents(&image);
        match c.image.as_str() {
            "orphan.img" => {
                let mut expect = clean.clone();
                let data = expect.remove("/d1/d2/c.txt").unwrap();
                expect.insert("/lost+found/".into(), Vec::new());
                expect.insert("/lost+found/#6".into(), data);
                assert_eq!(got, expect);
            }
            "orphan_dir.img" => {
                let mut expect: std::collections::BTreeMap<String, Vec<u8>> = clean
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.strip_prefix("/d1").map_or(k.clone(), |rest| format!("/lost+found/#3{rest}")),
                            v.clone(),
                        )
                    })
                    .collect();
                expect.insert("/lost+found/".into(), Vec::new());
                assert_eq!(got, expect);
            }
            _ => assert_eq!(got, clean, "{}: content changed by --repair", c.class),
        }
    }
}

#[test]
fn repair_reports_what_it_did_in_json() {
    let dir = testdata();
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("dangling.img");
    fs::copy(dir.join("dangling.img"), &image).unwrap();
    let (code, out) = run_bin(&image, &[], &["--repair", "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let repairs = v["repairs"].as_array().unwrap();
    assert!(repairs.iter().any(|r| r["code"] == "E_DANGLING_ENTRY"), "{out}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(v["exit_code"], 1);
}

#[test]
fn interrupted_repair_loses_nothing() {
    let dir = testdata();
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("refcount.img");
    fs::copy(dir.join("refcount.img"), &image).unwrap();
    let original = fs::read(&image).unwrap();
    // Write 1 is the new metadata region, write 2 the superblock.
    for n in 1..=2 {
        let out = bin()
            .arg("check")
            .arg(&image)
            .arg("--repair")
            .env(libimage::engine::image::FAIL_ENV, n.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(8),
            "fault after {n} writes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = run_lib(&image, &[], false);
        assert_eq!(r.codes(), vec!["E_REFCOUNT"], "after a fault at write {n}");
        if n == 2 {
            // The metadata went to free blocks only; the live state is untouched.
            let now = fs::read(&image).unwrap();
            assert_eq!(&now[..8192], &original[..8192], "superblocks changed");
        }
    }
    assert_eq!(run_bin(&image, &[], &["--repair"]).0, 1);
    assert_eq!(run_bin(&image, &[], &[]).0, 0);
}

#[test]
fn operational_errors_exit_8_and_usage_16() {
    let t = tempfile::tempdir().unwrap();
    let clean = testdata().join("clean.img");
    let missing = t.path().join("missing.img");
    assert_eq!(run_bin(&missing, &[], &[]).0, 8, "missing file");
    assert_eq!(run_bin(t.path(), &[], &[]).0, 8, "a directory");
    let badkey = t.path().join("short.key");
    fs::write(&badkey, [1u8; 5]).unwrap();
    assert_eq!(
        run_bin(&clean, &["--key-file".into(), badkey.display().to_string()], &[]).0,
        8,
        "bad key file"
    );
    assert_eq!(run_bin(&clean, &["--snapshot".into(), "nope".into()], &[]).0, 8, "unknown snapshot");
    let out = bin().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(16), "no image argument");
    let out = bin().args(["check", "x.img", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(16), "unknown flag");
    // An empty file is a corrupt image, not an operational error.
    let empty = t.path().join("empty.img");
    fs::write(&empty, b"").unwrap();
    let (code, out) = run_bin(&empty, &[], &["--json"]);
    assert_eq!((code, json_codes(&out)), (4, vec!["E_NO_SUPERBLOCK".to_string()]));
}

#[test]
fn keys_right_wrong_and_extra() {
    let dir = testdata();
    let image = dir.join("clean.img");
    let key = dir.join("test.key").display().to_string();
    let other = dir.join("other.key").display().to_string();
    let id = MasterKey::from_bytes(&mkfixtures::test_key_bytes())
        .unwrap()
        .identifier()
        .to_string();
    let other_id = MasterKey::from_bytes(&mkfixtures::other_key_bytes())
        .unwrap()
        .identifier()
        .to_string();

    let right = run_lib(&image, &["--key-file".into(), key.clone(), "--data".into()], false);
    assert_eq!(right.exit_code, 0);
    let cov = &right.summary.key_coverage[0];
    assert_eq!(cov.snapshot, "main");
    assert_eq!(cov.keys.len(), 1);
    assert!(cov.keys[0].given && cov.keys[0].policy && cov.keys[0].key_id == id);
    assert_eq!((cov.keys[0].directories, cov.keys[0].symlinks), (3, 1));
    assert!(right.summary.bytes_checked.extents_verified_with_key >= 4);
    assert_eq!(
        right.summary.bytes_checked.extents_verified_with_key,
        right.summary.bytes_checked.extents_scrubbed
    );

    let wrong = run_lib(&image, &["--key-file".into(), other.clone()], false);
    // A wrong key is a key problem (exit 64), not damage (4).
    assert_eq!(wrong.exit_code, 64);
    let unused = wrong.findings.iter().find(|f| f.code == "W_KEY_UNUSED").unwrap();
    assert!(unused.message.contains(&other_id), "{}", unused.message);
    let missing = wrong.findings.iter().find(|f| f.code == "I_KEY_MISSING").unwrap();
    assert!(
        missing.message.contains(&format!("not verifiable without key {id}")),
        "{}",
        missing.message
    );
    assert!(!wrong.summary.key_coverage[0].keys[0].given);

    let both = run_lib(&image, &["--key-file".into(), key, "--key-file".into(), other], false);
    assert_eq!(both.codes(), vec!["W_KEY_UNUSED"]);
    assert_eq!(both.summary.keys_given.len(), 2);
    assert!(both.summary.keys_given.iter().any(|k| k.key_id == id && k.contexts > 0));
    assert!(both.summary.keys_given.iter().any(|k| k.key_id == other_id && k.contexts == 0));

    // Without keys: coverage still lists the key, nothing is "missing".
    let none = run_lib(&image, &[], false);
    assert_eq!(none.exit_code, 0);
    assert_eq!(none.summary.key_coverage[0].keys[0].key_id, id);
    assert!(none.findings.is_empty());
}

#[test]
fn paths_use_nokey_names_without_key_and_real_names_with_it() {
    let dir = testdata();
    let image = dir.join("dangling.img");
    let r = run_lib(&image, &[], false);
    let f = &r.findings[0];
    let p = f.at.path.clone().unwrap();
    assert!(p.starts_with('/') && !p.contains("d1"), "{p}");
    let r = run_lib(&image, &["--key-file".into(), dir.join("test.key").display().to_string()], false);
    assert_eq!(r.findings[0].at.path.as_deref(), Some("/d1"));
    let r = run_lib(
        &dir.join("data_flip.img"),
        &["--key-file".into(), dir.join("test.key").display().to_string(), "--data".into()],
        false,
    );
    assert_eq!(r.findings[0].at.path.as_deref(), Some("/a.txt"), "{:?}", r.findings);
    assert!(r.findings[0].at.extent.is_some());
}

#[test]
fn human_output_names_codes_and_summary() {
    let dir = testdata();
    let (code, out) = run_bin(&dir.join("overlap.img"), &[], &[]);
    assert_eq!(code, 4);
    assert!(out.contains("error E_EXTENT_OVERLAP"), "{out}");
    assert!(out.contains("hint:"), "{out}");
    assert!(out.contains("snapshot \"main\" needs keys"), "{out}");
    let (code, out) = run_bin(&dir.join("clean.img"), &[], &["--data"]);
    assert_eq!(code, 0);
    assert!(out.contains("clean"), "{out}");
    assert!(out.contains("no authentication tag"), "{out}");
}
