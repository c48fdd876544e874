//! `info` for people: sizes in binary units, the commit time as a date, the
//! image's size on disk and each snapshot's size; `--json` keeps the exact
//! numbers.

use std::process::Command;

#[test]
fn info_prints_human_sizes_dates_and_snapshot_sizes() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    std::fs::write(t.path().join("src/big"), vec![3u8; 3 << 19]).unwrap();
    let (k, img, src) = (p("k"), p("i.img"), p("src"));
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    for args in [
        vec!["keygen", &k],
        vec!["create", &img, "--root", &src, "--key-file", &k, "--quiet"],
    ] {
        let o = Command::new(&mkfs)
            .args(&args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let fsck = env!("CARGO_BIN_EXE_fsck-crypt");
    let o = Command::new(fsck).args(["info", &img]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("committed 2023-11-14 22:13:20 UTC"), "{out}");
    assert!(out.contains("on disk)"), "{out}");
    assert!(out.contains("1.50 MiB in files"), "{out}");
    let o = Command::new(fsck).args(["info", &img, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["commit_time"], 1_700_000_000, "{v}");
    // The image format's version is not hidden by the envelope's.
    assert_eq!(
        (v["format_version"].as_u64(), v["image_format_version"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["snapshots"][0]["file_bytes"], 3 << 19, "{v}");
    assert!(v["snapshots"][0]["extent_bytes"].as_u64().unwrap() >= 3 << 19, "{v}");
    let len = std::fs::metadata(&img).unwrap().len();
    assert_eq!(v["file_bytes"].as_u64(), Some(len), "{v}");
    assert!(v["disk_bytes"].as_u64().unwrap() > 0, "{v}");
}

/// `ls PATH` normalizes `.`, `..` and repeated `/` as a shell (and `cat`) do.
#[test]
fn ls_paths_normalize_like_a_shell() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src/docs/sub")).unwrap();
    std::fs::write(t.path().join("src/docs/readme"), b"hello").unwrap();
    std::fs::write(t.path().join("src/top"), b"t").unwrap();
    let (k, img, src) = (p("k"), p("i.img"), p("src"));
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    for args in [
        vec!["keygen", &k],
        vec!["create", &img, "--root", &src, "--key-file", &k, "--quiet"],
    ] {
        let o = Command::new(&mkfs).args(&args).output().unwrap();
        assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let ls = |path: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_fsck-crypt"))
            .args(["ls", &img, path, "--key-file", &k, "--quoting-style", "literal"])
            .output()
            .unwrap();
        assert!(o.status.success(), "ls {path}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let docs = ls("docs");
    assert!(docs.contains(" readme\n") && docs.contains(" sub\n"), "{docs}");
    assert_eq!(ls("./docs"), docs);
    assert_eq!(ls("docs/sub/.."), docs);
    assert_eq!(ls("docs//./"), docs);
    let root = ls("");
    assert_eq!(ls(".."), root);
    assert_eq!(ls("docs/.."), root);
    assert!(ls("./docs/../top").ends_with(" top\n"));
}
