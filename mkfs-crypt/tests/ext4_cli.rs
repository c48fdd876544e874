//! `mkfs-crypt create --format ext4`: flags, refusals, exit codes, JSON,
//! SOURCE_DATE_EPOCH reproducibility; every image passes `e2fsck -fn`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn mkfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mkfs-crypt"))
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn e2fsck(img: &Path) {
    match Command::new("e2fsck").arg("-fn").arg(img).output() {
        Ok(o) => assert!(o.status.success(), "e2fsck -fn: {}", String::from_utf8_lossy(&o.stdout)),
        Err(_) if std::env::var("CI").as_deref() != Ok("true") => eprintln!("SKIP: e2fsck check: e2fsck not installed"),
        Err(e) => panic!("e2fsck missing under CI=true: {e}"),
    }
}

#[test]
fn create_ext4_from_a_tree() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/file"), b"contents").unwrap();
    let key = t.path().join("key");
    fs::write(&key, [9u8; 64]).unwrap();
    let img = t.path().join("x.img");
    let o = run(mkfs()
        .args(["create", "--format", "ext4", "--encrypted-dir", "secret", "--json", "--root"])
        .arg(&src)
        .arg("--key-file")
        .arg(&key)
        .arg(&img));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "ext4");
    assert_eq!(v["encrypted_dir"], "secret");
    assert_eq!(v["files"], 1);
    e2fsck(&img);

    // An existing image is refused without --force (exit 8) and left alone.
    let before = fs::read(&img).unwrap();
    let o = run(mkfs()
        .args(["create", "--format", "ext4", "--quiet", "--root"])
        .arg(&src)
        .arg("--key-file")
        .arg(&key)
        .arg(&img));
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert!(fs::read(&img).unwrap() == before);

    // SOURCE_DATE_EPOCH: byte-identical rebuilds.
    let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
    for out in [&a, &b] {
        let o = run(mkfs()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["create", "--format", "ext4", "--no-journal", "--quiet", "--root"])
            .arg(&src)
            .arg("--key-file")
            .arg(&key)
            .arg(out));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "SOURCE_DATE_EPOCH builds differ");
    e2fsck(&a);

    // A size too small is a clean error (exit 8), no image left.
    fs::write(src.join("big"), vec![1u8; 20 << 20]).unwrap();
    let small = t.path().join("small.img");
    let o = run(mkfs()
        .args(["create", "--format", "ext4", "--size", "16M", "--root"])
        .arg(&src)
        .arg("--key-file")
        .arg(&key)
        .arg(&small));
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no room") || String::from_utf8_lossy(&o.stderr).contains("full"));
    assert!(!small.exists());
}

#[test]
fn flag_combinations_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("key");
    fs::write(&key, [9u8; 64]).unwrap();
    let img = t.path().join("x.img");
    // --from-image only exists for ext4.
    let o = run(mkfs().args(["create", "--from-image", "y.img", "--key-file"]).arg(&key).arg(&img));
    assert!(!o.status.success());
    // cryptimg takes one key.
    let o = run(mkfs()
        .args(["create", "--root", "."])
        .arg("--key-file")
        .arg(&key)
        .arg("--key-file")
        .arg(&key)
        .arg(&img));
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!img.exists());
}
