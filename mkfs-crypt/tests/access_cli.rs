//! `mkfs-crypt keyid`, `keygen -` and `compact` through the binary.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn mkfs(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mkfs-crypt"));
    c.args(args)
        .env_remove("CRYPTIMG_FAIL_AFTER_WRITES")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let o = mkfs(args, stdin);
    assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// The kernel's known answer (FORMAT.md §9.1): bytes 1..=64 give 69b2f6ed….
#[test]
fn keyid_prints_the_kernel_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k");
    let raw: Vec<u8> = (1..=64u8).collect();
    fs::write(&k, &raw).unwrap();
    let want = "69b2f6edeee720cce0577937eb8a6751\n";
    assert_eq!(text(&ok(&["keyid", k.to_str().unwrap()], None).stdout), want);
    assert_eq!(text(&ok(&["keyid", "-"], Some(&raw)).stdout), want);
    // A short key file is refused, naming it.
    fs::write(&k, [1u8; 20]).unwrap();
    let o = mkfs(&["keyid", k.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(8));
    assert!(text(&o.stderr).contains("20 bytes"), "{}", text(&o.stderr));
}

/// `keygen -` writes 64 raw bytes to a pipe and their identifier to stderr;
/// it refuses a terminal.
#[test]
fn keygen_to_stdout() {
    let o = ok(&["keygen", "-"], None);
    assert_eq!(o.stdout.len(), 64);
    let id = text(&o.stderr);
    let again = ok(&["keyid", "-"], Some(&o.stdout));
    assert_eq!(text(&again.stdout), id);
    assert_ne!(ok(&["keygen", "-"], None).stdout, o.stdout);

    // A pseudo-terminal as standard output, through util-linux `script`.
    if !testkit::require_tool("script") {
        return;
    }
    let cmd = format!("{} keygen -; echo EXIT=$?", env!("CARGO_BIN_EXE_mkfs-crypt"));
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(out.contains("refusing to write a raw key to a terminal"), "{out}");
    assert!(out.contains("EXIT=8"), "{out}");
}

fn write_tree(root: &Path, seed: u8, files: usize) {
    fs::create_dir_all(root).unwrap();
    for i in 0..files {
        let data: Vec<u8> = (0..40_000 + i * 997)
            .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8) ^ (j >> 8) as u8)
            .collect();
        fs::write(root.join(format!("f{i}")), data).unwrap();
    }
}

#[test]
fn compact_gives_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    fs::write(p("k"), (1..=64u8).collect::<Vec<_>>()).unwrap();
    write_tree(Path::new(&p("t1")), 3, 40);
    write_tree(Path::new(&p("t2")), 5, 40);
    ok(&["create", &p("img"), "--root", &p("t1"), "--key-file", &p("k"), "-q"], None);
    ok(&["snapshot", &p("img"), "--from", "main", "--name", "user", "-q"], None);
    ok(
        &[
            "update",
            &p("img"),
            "--snapshot",
            "user",
            "--root",
            &p("t2"),
            "--key-file",
            &p("k"),
            // t2's files have t1's sizes: those written in the same clock
            // tick would look unchanged and stay shared, a size that varied
            // from run to run (and failed the check below when many did).
            "--rewrite-all",
            "-q",
        ],
        None,
    );
    let disk = || {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p("img")).unwrap().blocks() * 512
    };
    let disk_before = disk();
    ok(&["delete", &p("img"), "--snapshot", "user", "-q"], None);
    // `du` drops as the delete ends (the settling commit, FORMAT.md §8):
    // half of the data was the deleted snapshot's.
    let disk_after = disk();
    assert!(
        disk_after * 10 < disk_before * 7,
        "on disk: {disk_before} -> {disk_after} after delete"
    );
    let before = fs::metadata(p("img")).unwrap().len();
    let o = ok(&["compact", &p("img"), "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let after = fs::metadata(p("img")).unwrap().len();
    assert_eq!(v["file_bytes_before"].as_u64(), Some(before));
    assert_eq!(v["file_bytes_after"].as_u64(), Some(after));
    assert!(after * 3 < before * 2, "{before} -> {after}");
    let opts = libimage::ops::check::CheckOptions {
        data: true,
        ..Default::default()
    };
    let keys = libimage::engine::image::Keyring::default();
    let r = libimage::ops::check::check(Path::new(&p("img")), &keys, &opts, &libimage::progress::Quiet).unwrap();
    assert_eq!(r.exit_code, 0, "{:#?}", r.findings);
    // Human output names the sizes.
    let o = ok(&["compact", &p("img")], None);
    assert!(text(&o.stdout).contains("compacted"), "{}", text(&o.stdout));
}
