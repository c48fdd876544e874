//! `update` with nothing changed writes nothing and says so; entries gone
//! from the source are counted and `--delete-missing` suggested.

use std::process::{Command, Output};

fn mkfs(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_mkfs-crypt"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("CRYPTIMG_FAIL_AFTER_WRITES")
        .output()
        .unwrap();
    assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn update_without_changes_writes_nothing_and_counts_missing_entries() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src/d")).unwrap();
    std::fs::write(t.path().join("src/a"), b"a").unwrap();
    std::fs::write(t.path().join("src/d/b"), b"b").unwrap();
    std::fs::write(t.path().join("src/c"), b"c").unwrap();
    let (k, img, src) = (p("k"), p("i.img"), p("src"));
    mkfs(&["keygen", &k]);
    mkfs(&["create", &img, "--root", &src, "--key-file", &k, "--quiet"]);
    let before = std::fs::read(&img).unwrap();
    let update = ["update", &img, "--snapshot", "main", "--root", &src, "--key-file", &k];
    let o = mkfs(&update);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no changes"), "{out}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "an update with no changes rewrote the image"
    );

    // Two entries gone (a file, and a directory with its file: counted once).
    std::fs::remove_file(t.path().join("src/c")).unwrap();
    std::fs::remove_dir_all(t.path().join("src/d")).unwrap();
    let o = mkfs(&update);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 entries") && err.contains("--delete-missing"), "{err}");
    let mut json = update.to_vec();
    json.push("--json");
    let v: serde_json::Value = serde_json::from_slice(&mkfs(&json).stdout).unwrap();
    assert_eq!((v["missing"].as_u64(), v["committed"].as_bool()), (Some(2), Some(false)), "{v}");
    let mut del = update.to_vec();
    del.extend(["--delete-missing", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&mkfs(&del).stdout).unwrap();
    assert_eq!((v["deleted"].as_u64(), v["missing"].as_u64()), (Some(2), Some(0)), "{v}");
    assert_eq!(v["committed"].as_bool(), Some(true), "{v}");
}
