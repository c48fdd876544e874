//! Bad argument values found after parsing exit with the usage code (16),
//! the same as values clap rejects.

use std::process::Command;

#[test]
fn out_of_range_size_and_bad_suffix_share_the_usage_code() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let (k, img, src) = (p("k"), p("i.img"), p("src"));
    let mkfs = env!("CARGO_BIN_EXE_mkfs-crypt");
    assert!(Command::new(mkfs).args(["keygen", &k]).output().unwrap().status.success());
    for size in ["5X", "1000", "4K", "99999999999T"] {
        let o = Command::new(mkfs)
            .args(["create", &img, "--root", &src, "--key-file", &k, "--size", size])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(16), "--size {size}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!Path::new(&img).exists(), "--size {size} left an image");
    }
}

use std::path::Path;

/// `--size` takes fractions and IEC suffixes (one parser, in cli/).
#[test]
fn size_accepts_fractions_and_iec_units() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let (k, src) = (p("k"), p("src"));
    let mkfs = env!("CARGO_BIN_EXE_mkfs-crypt");
    assert!(Command::new(mkfs).args(["keygen", &k]).output().unwrap().status.success());
    for (size, bytes) in [("1.5M", 3u64 << 19), ("1MiB", 1 << 20), ("512k", 512 << 10)] {
        let img = p(&format!("{size}.img"));
        let o = Command::new(mkfs)
            .args(["create", &img, "--root", &src, "--key-file", &k, "--size", size, "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "--size {size}: {}", String::from_utf8_lossy(&o.stderr));
        let fsck = testkit::workspace_bin("fsck-crypt");
        let o = Command::new(fsck).args(["info", &img, "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["max_blocks"].as_u64(), Some(bytes / 4096), "--size {size}: {v}");
    }
}

/// `--version` names the git revision the binary was built from.
#[test]
fn version_shows_the_git_revision() {
    let o = Command::new(env!("CARGO_BIN_EXE_mkfs-crypt")).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let rev = head.unwrap_or_else(|| "unknown".into());
    assert!(v.contains(&format!("(git {rev})")), "{v} (HEAD {rev})");
}
