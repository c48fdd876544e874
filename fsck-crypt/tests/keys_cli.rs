//! Key problems are said, and have their own exit code (64, `exit::KEY`):
//! `ls` with a wrong key warns naming the given and needed ids, `extract`
//! missing one of two keys says "missing key", `check` with a wrong key is
//! not damage (not 4); `info` on a directory is operational (8).

use std::path::Path;
use std::process::{Command, Output};

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).env_remove("SOURCE_DATE_EPOCH").output().unwrap()
}

fn fsck(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_fsck-crypt").as_ref(), args)
}

/// An image whose snapshot needs two keys (names under k2 after a rekey,
/// data still under k), plus an unrelated key w. Returns (dir, img, k, k2, w).
fn two_key_image() -> (tempfile::TempDir, String, String, String, String) {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src/d")).unwrap();
    std::fs::write(t.path().join("src/d/b"), b"world").unwrap();
    let (img, k, k2, w, src) = (p("i.img"), p("k"), p("k2"), p("w"), p("src"));
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    for args in [
        vec!["keygen", &k],
        vec!["keygen", &k2],
        vec!["keygen", &w],
        vec!["create", &img, "--root", &src, "--key-file", &k, "--quiet"],
        vec![
            "rekey",
            &img,
            "--snapshot",
            "main",
            "--old-key-file",
            &k,
            "--new-key-file",
            &k2,
            "--quiet",
        ],
    ] {
        let o = run(&mkfs, &args);
        assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    (t, img, k, k2, w)
}

fn key_id(k: &str) -> String {
    let o = run(&testkit::workspace_bin("mkfs-crypt"), &["keyid", k]);
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn ls_with_a_wrong_key_warns_naming_the_ids() {
    let (_t, img, k, k2, w) = two_key_image();
    let o = fsck(&["ls", &img, "--key-file", &w]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains(&key_id(&w)), "{err}");
    assert!(err.contains(&key_id(&k)) && err.contains(&key_id(&k2)), "{err}");
    // The right key: no warning.
    let o = fsck(&["ls", &img, "--key-file", &k2]);
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn extract_missing_one_of_two_keys_says_missing_key() {
    let (t, img, k, k2, _w) = two_key_image();
    let out = t.path().join("out");
    let o = fsck(&["extract", &img, out.to_str().unwrap(), "--key-file", &k2]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("missing key") && err.contains(&key_id(&k)), "{err}");
    assert!(!err.contains("wrong key"), "{err}");
}

#[test]
fn check_with_a_wrong_key_is_a_key_problem_not_damage() {
    let (_t, img, k, k2, w) = two_key_image();
    let o = fsck(&["check", &img, "--key-file", &w, "--no-progress"]);
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stdout));
    let o = fsck(&["check", &img, "--key-file", &k, "--key-file", &k2, "--no-progress"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn info_on_a_directory_is_operational() {
    let t = tempfile::tempdir().unwrap();
    let o = fsck(&["info", t.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(err.contains("is a directory"), "{err}");
}
