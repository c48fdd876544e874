//! `fsck-crypt cat` and `fsck-crypt extract IMAGE DEST [PATH]...` (DEST `-`: a
//! pax tar stream) through the binary.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::progress::Quiet;

fn fsck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-crypt"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn setup(dir: &Path) -> (String, String) {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("etc/conf.d")).unwrap();
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(tree.join("etc/hostname"), b"box\n").unwrap();
    fs::write(tree.join("etc/conf.d/a.conf"), b"a = 1\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(tree.join("usr/bin/tool"), &big).unwrap();
    let raw: Vec<u8> = (1..=64u8).collect();
    let k = dir.join("key");
    fs::write(&k, &raw).unwrap();
    let img = dir.join("img");
    let key = fscrypt::MasterKey::from_bytes(&raw).unwrap();
    create_image(&img, Source::Dir(&tree), &key, &CreateOptions::default(), &Quiet).unwrap();
    (img.to_str().unwrap().into(), k.to_str().unwrap().into())
}

#[test]
fn cat_prints_one_file() {
    let t = tempfile::tempdir().unwrap();
    let (img, k) = setup(t.path());
    let o = fsck(&["cat", &img, "usr/bin/tool", "--key-file", &k]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == fs::read(t.path().join("tree/usr/bin/tool")).unwrap());
    let o = fsck(&["cat", &img, "/etc/./conf.d/../hostname", "--key-file", &k]);
    assert_eq!(o.stdout, b"box\n");
    let o = fsck(&["cat", &img, "etc", "--key-file", &k]);
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}

#[test]
fn extract_chosen_paths() {
    let t = tempfile::tempdir().unwrap();
    let (img, k) = setup(t.path());
    let out = t.path().join("out");
    let o = fsck(&[
        "extract",
        &img,
        out.to_str().unwrap(),
        "etc/conf.d",
        "--key-file",
        &k,
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(out.join("etc/conf.d/a.conf")).unwrap(), b"a = 1\n");
    assert!(!out.join("etc/hostname").exists() && !out.join("usr").exists());
}

#[test]
fn extract_to_a_tar_stream() {
    if !testkit::require_tool("tar") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (img, k) = setup(t.path());
    let o = fsck(&["extract", &img, "-", "usr", "etc/hostname", "--key-file", &k, "--no-progress"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut tar = Command::new("tar")
        .args(["-xf", "-", "-C"])
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tar.stdin.take().unwrap(), &o.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(fs::read(out.join("usr/bin/tool")).unwrap() == fs::read(t.path().join("tree/usr/bin/tool")).unwrap());
    assert_eq!(fs::read(out.join("etc/hostname")).unwrap(), b"box\n");
    assert!(!out.join("etc/conf.d").exists());

    // Never to a terminal.
    if !testkit::require_tool("script") {
        return;
    }
    let cmd = format!("{} extract {img} - --key-file {k}; echo EXIT=$?", env!("CARGO_BIN_EXE_fsck-crypt"));
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("refusing to write a tar stream to a terminal") && text.contains("EXIT=8"),
        "{text}"
    );
}
