//! The `mkfs-crypt create` / `keygen` command line and the read-side commands
//! of `fsck-crypt` on the image it makes: output, exit codes, refusals.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin(name: &str) -> PathBuf {
    match name {
        "mkfs-crypt" => PathBuf::from(env!("CARGO_BIN_EXE_mkfs-crypt")),
        _ => testkit::workspace_bin(name),
    }
}

fn run(name: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(bin(name));
    c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e} (build the workspace first)"));
    if let Some(d) = stdin {
        child.stdin.take().unwrap().write_all(d).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_writes_a_private_key_and_prints_its_id() {
    let t = tempfile::tempdir().unwrap();
    let k = t.path().join("k");
    let o = run("mkfs-crypt", &["keygen", s(&k)], None);
    assert!(o.status.success(), "{o:?}");
    let id = String::from_utf8(o.stdout).unwrap();
    assert_eq!(id.trim().len(), 32);
    assert_eq!(std::fs::read(&k).unwrap().len(), 64);
    assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
    let raw = std::fs::read(&k).unwrap();
    assert_eq!(fscrypt::MasterKey::from_bytes(&raw).unwrap().identifier().to_string(), id.trim());
    // Never overwrites.
    let o = run("mkfs-crypt", &["keygen", s(&k)], None);
    assert_eq!(o.status.code(), Some(8));
}

#[test]
fn create_info_ls_extract() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("demo.img");
    let key = demo().join("key");
    let tree = demo().join("tree");
    let o = run("mkfs-crypt", &["create", s(&img), "--root", s(&tree), "--key-file", s(&key)], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("69b2f6edeee720cce0577937eb8a6751") && out.contains("4 regular"),
        "{out}"
    );

    // Refused without --force, image untouched.
    let before = std::fs::read(&img).unwrap();
    let o = run("mkfs-crypt", &["create", s(&img), "--root", s(&tree), "--key-file", s(&key)], None);
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&img).unwrap(), before);

    // info --json names the key the snapshot needs.
    let o = run("fsck-crypt", &["info", s(&img), "--json"], None);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["snapshots"][0]["name"], "main");
    assert_eq!(v["snapshots"][0]["keys_needed"][0], "69b2f6edeee720cce0577937eb8a6751");

    // ls without a key shows no-key names only; with the key, real names.
    let o = run("fsck-crypt", &["ls", s(&img)], None);
    let listing = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success() && !listing.contains("README") && listing.lines().count() == 3,
        "{listing}"
    );
    let o = run(
        "fsck-crypt",
        &["ls", s(&img), "docs", "--key-file", "-"],
        Some(&std::fs::read(&key).unwrap()),
    );
    let listing = String::from_utf8(o.stdout).unwrap();
    assert!(listing.contains("notes.md") && listing.contains("readme-link"), "{listing}");
    let o = run("fsck-crypt", &["ls", s(&img), "docs/notes.md", "--key-file", s(&key)], None);
    let listing = String::from_utf8(o.stdout).unwrap();
    assert!(
        listing.trim_end().ends_with(" 47 notes.md") && listing.lines().count() == 1,
        "{listing}"
    );

    // Extract with the key, from stdin.
    let dest = t.path().join("out");
    let o = run(
        "fsck-crypt",
        &["extract", s(&img), s(&dest), "--key-file", "-"],
        Some(&std::fs::read(&key).unwrap()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(dest.join("docs/guides/data.bin")).unwrap(),
        std::fs::read(tree.join("docs/guides/data.bin")).unwrap()
    );

    // Extract with a wrong key: exit 64 (key problem), both key ids named.
    let wrong = t.path().join("wrong");
    std::fs::write(&wrong, [9u8; 64]).unwrap();
    let o = run(
        "fsck-crypt",
        &["extract", s(&img), s(&t.path().join("o2")), "--key-file", s(&wrong)],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("69b2f6edeee720cce0577937eb8a6751") && err.contains("hint:"), "{err}");
}

#[test]
fn refusals_and_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("x.img");
    let tree = demo().join("tree");
    // Wrong key length.
    let short = t.path().join("short");
    std::fs::write(&short, [1u8; 31]).unwrap();
    let o = run(
        "mkfs-crypt",
        &["create", s(&img), "--root", s(&tree), "--key-file", s(&short)],
        None,
    );
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("31 bytes"));
    // Missing key file.
    let o = run(
        "mkfs-crypt",
        &["create", s(&img), "--root", s(&tree), "--key-file", "/nonexistent/key"],
        None,
    );
    assert_eq!(o.status.code(), Some(8));
    // Usage error: no --key-file.
    let o = run("mkfs-crypt", &["create", s(&img), "--root", s(&tree)], None);
    assert_eq!(o.status.code(), Some(16));
    // Corrupt tar on stdin: exit 4, no image.
    let key = demo().join("key");
    let o = run(
        "mkfs-crypt",
        &["create", s(&img), "--tar", "-", "--key-file", s(&key)],
        Some(&[0x41u8; 700]),
    );
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!img.exists());
    // A corrupt image: exit 4.
    std::fs::write(&img, vec![0u8; 65536]).unwrap();
    let o = run("fsck-crypt", &["info", s(&img)], None);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
}
