//! backup-crypt end to end: ordinary tar readers, pipes, exit codes, and the
//! crash matrix of restore.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use libimage::engine::image::{Access, Image};
use testkit::backup::{canon_snapshot, synth_image};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_backup-crypt"))
}

fn run(args: &[&str]) -> Output {
    let o = bin().args(args).env_remove("CRYPTIMG_FAIL_AFTER_WRITES").output().unwrap();
    o
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(
        o.status.success(),
        "backup-crypt {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn setup(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("src.img");
    synth_image(&img, seed, true).unwrap();
    let tar = t.path().join("main.tar");
    ok(&["create", s(&img), "-o", s(&tar), "--snapshot", "main", "--quiet"]);
    (t, img, tar)
}

fn canon(img: &Path, snap: &str) -> Vec<String> {
    canon_snapshot(&Image::open(img, Access::ReadOnly).unwrap(), snap).unwrap()
}

/// bsdtar (libarchive) lists the archive too; `.ci/run` installs it.
#[test]
fn bsdtar_lists_the_archive() {
    if !testkit::require_tool("bsdtar") {
        return;
    }
    let (_t, _img, tar) = setup(1);
    let o = Command::new("bsdtar").args(["-tvf", s(&tar)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8_lossy(&o.stdout);
    let v = ok(&["verify", s(&tar), "--json"]);
    let rep: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(listing.lines().count() as u64, rep["members"].as_u64().unwrap() + 2, "{listing}");
    assert!(
        listing.lines().next().is_some_and(|l| l.ends_with("cryptimg-backup.json")),
        "{listing}"
    );
}

#[test]
fn gnu_tar_lists_the_archive() {
    let (_t, _img, tar) = setup(1);
    let o = Command::new("tar")
        .args(["--warning=no-unknown-keyword", "-tvf", s(&tar)])
        .output()
        .expect("GNU tar is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    let v = ok(&["verify", s(&tar), "--json"]);
    let rep: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    // manifest + tree members + trailer
    assert_eq!(lines.len() as u64, rep["members"].as_u64().unwrap() + 2, "{listing}");
    assert!(lines[0].ends_with("cryptimg-backup.json"), "{}", lines[0]);
    assert!(lines[1].starts_with('d') && lines[1].ends_with(" ./"), "{}", lines[1]);
    assert!(lines.iter().any(|l| l.starts_with('h') && l.contains(" link to ./")), "{listing}");
    assert!(lines.iter().any(|l| l.starts_with('l') && l.contains(" -> ")), "{listing}");
    assert!(lines.iter().any(|l| l.starts_with('c')), "{listing}");
    assert!(lines.iter().any(|l| l.starts_with('p')), "{listing}");
    // GNU tar also extracts it (as ciphertext) without complaint.
    let x = tar.parent().unwrap().join("x");
    std::fs::create_dir(&x).unwrap();
    let o = Command::new("tar")
        .args(["--warning=no-unknown-keyword", "-xf", s(&tar), "-C", s(&x), "--no-same-owner"])
        .output()
        .unwrap();
    assert!(
        o.status.success() || String::from_utf8_lossy(&o.stderr).contains("mknod"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

const PY: &str = r#"
import json, sys, tarfile
out = []
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        data = b""
        if m.isfile():
            data = t.extractfile(m).read()
        out.append({"name": m.name, "type": m.type.decode(), "size": m.size, "read": len(data),
                    "linkname": m.linkname, "pax": {k: len(v) for k, v in m.pax_headers.items()}})
print(json.dumps(out))
"#;

#[test]
fn python_tarfile_reads_every_member_and_record() {
    if !testkit::require_tool("python3") {
        return;
    }
    let (t, _img, tar) = setup(2);
    let script = t.path().join("read.py");
    std::fs::write(&script, PY).unwrap();
    let o = Command::new("python3").arg(&script).arg(&tar).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let members: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let listed = ok(&["list", s(&tar), "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let tree = listed["members"].as_array().unwrap();
    assert_eq!(members.len(), tree.len() + 2);
    assert_eq!(members[0]["name"], "cryptimg-backup.json");
    assert_eq!(members[members.len() - 1]["name"], "cryptimg-backup.end");
    let tail = &members[members.len() - 1]["pax"];
    assert!(tail["CRYPTIMG.members"].as_u64().is_some() && tail["CRYPTIMG.archive_crc32c"].as_u64() == Some(8));
    for (py, ours) in members[1..members.len() - 1].iter().zip(tree) {
        let name = py["name"].as_str().unwrap();
        assert_eq!(name.trim_end_matches('/'), ours["path"].as_str().unwrap().trim_end_matches('/'));
        let pax = &py["pax"];
        assert_eq!(pax["CRYPTIMG.crc32c"], 8, "{py}");
        assert!(
            pax["mtime"].is_number() && pax["atime"].is_number() && pax["ctime"].is_number(),
            "{py}"
        );
        match ours["type"].as_str().unwrap() {
            "dir" => assert_eq!(pax["CRYPTIMG.policy"], 80, "{py}"),
            "symlink" => assert!(pax["CRYPTIMG.symlink"].is_number() && pax["CRYPTIMG.size"].is_number(), "{py}"),
            "file" => {
                assert!(pax["CRYPTIMG.size"].is_number(), "{py}");
                assert_eq!(py["read"], py["size"], "{py}");
                assert_eq!(py["size"], ours["stored_bytes"], "{py}");
            }
            "hardlink" => assert_eq!(py["type"], "1"),
            _ => {}
        }
        if name != "./" && name != "." {
            assert!(pax["CRYPTIMG.name"].as_u64().unwrap() >= 43, "{py}");
        }
    }
    assert!(members.iter().any(|m| m["pax"].get("SCHILY.xattr.user.bin").is_some()));
}

#[test]
fn pipes_and_exit_codes() {
    let (t, img, tar) = setup(3);
    // create -o - | restore -
    let mut c = bin()
        .args(["create", s(&img), "-o", "-", "--snapshot", "s2", "--quiet"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dst = t.path().join("piped.img");
    let r = bin()
        .args(["restore", "-", s(&dst), "--quiet"])
        .stdin(c.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(c.wait().unwrap().success());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(canon(&dst, "s2"), canon(&img, "s2"));
    // restore from stdin given as a file
    let dst2 = t.path().join("stdin.img");
    let mut child = bin()
        .args(["restore", "-", s(&dst2), "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(&tar).unwrap()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["snapshot"], "main");
    assert_eq!(j["new_image"], true);

    // Existing snapshot name: refused (8).
    let o = run(&["restore", s(&tar), s(&img)]);
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already has a snapshot named"));
    // Hostile input: 4, nothing written.
    let mut bad = std::fs::read(&tar).unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0x20;
    let badp = t.path().join("bad.tar");
    std::fs::write(&badp, &bad).unwrap();
    let o = run(&["verify", s(&badp)]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["restore", s(&badp), s(&t.path().join("bad.img"))]);
    assert_eq!(o.status.code(), Some(4));
    assert!(!t.path().join("bad.img").exists());
    // Incremental without its base: 8, clear message.
    let inc = t.path().join("inc.tar");
    ok(&["create", s(&img), "-o", s(&inc), "--snapshot", "s2", "--since", s(&tar), "--quiet"]);
    let o = run(&["restore", s(&inc), s(&t.path().join("nobase.img"))]);
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--base"));
    ok(&["restore", s(&inc), s(&t.path().join("based.img")), "--base", s(&tar), "--quiet"]);
    assert_eq!(canon(&t.path().join("based.img"), "s2"), canon(&img, "s2"));
    let v = ok(&["verify", s(&inc), "--base", s(&tar)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains("referenced items found in the bases"));
    // Usage: 16. create never leaves a partial archive.
    assert_eq!(run(&["restore"]).status.code(), Some(16));
    let o = run(&["create", s(&t.path().join("missing.img")), "-o", s(&t.path().join("never.tar"))]);
    assert_eq!(o.status.code(), Some(8));
    assert!(!t.path().join("never.tar").exists());
    let names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}

/// A version 2 incremental (compact listings): GNU tar still lists it, but
/// only its pax members (manifest, listings, members with data, trailer);
/// `list` shows every member and `verify` checks it; a hostile version 2
/// archive exits 4.
#[test]
fn gnu_tar_list_and_verify_read_a_v2_incremental() {
    let (t, img, tar) = setup(4);
    let inc = t.path().join("inc.tar");
    ok(&["create", s(&img), "-o", s(&inc), "--snapshot", "s2", "--since", s(&tar), "--quiet"]);
    let o = Command::new("tar")
        .args(["--warning=no-unknown-keyword", "-tvf", s(&inc)])
        .output()
        .expect("GNU tar is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    let v = ok(&["verify", s(&inc), "--base", s(&tar), "--json"]);
    let rep: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(rep["manifest"]["version"], 2, "{rep}");
    let members = rep["members"].as_u64().unwrap();
    // s2 stores two files; everything else is in listings.
    let stored = lines.iter().filter(|l| l.contains("./") && !l.contains("cryptimg-backup")).count();
    assert_eq!(stored, 2, "{listing}");
    assert!(lines.iter().any(|l| l.ends_with("cryptimg-backup.listing")), "{listing}");
    assert!(
        (lines.len() as u64) < members,
        "{} tar members for {members} tree members",
        lines.len()
    );
    assert!(lines[0].ends_with("cryptimg-backup.json") && lines[lines.len() - 1].ends_with("cryptimg-backup.end"));
    if testkit::require_tool("bsdtar") {
        let o = Command::new("bsdtar").args(["-tvf", s(&inc)]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), lines.len());
    }
    let l = ok(&["list", s(&inc), "--json"]);
    let l: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    assert_eq!(l["members"].as_array().unwrap().len() as u64, members);
    // The full backup lists the same paths, less the one new file.
    let lf = ok(&["list", s(&tar), "--json"]);
    let lf: serde_json::Value = serde_json::from_slice(&lf.stdout).unwrap();
    assert_eq!(lf["members"].as_array().unwrap().len() as u64 + 1, members);
    assert_eq!(lf["manifest"]["version"], 1);
    // Hostile version 2 input: exit 4.
    let hostile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/backup/hostile/v2-bad-parent.tar");
    let o = run(&["verify", s(&hostile)]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("parent ordinal"));
    let o = run(&["restore", s(&hostile), s(&t.path().join("h.img"))]);
    assert_eq!(o.status.code(), Some(4));
    assert!(!t.path().join("h.img").exists());
}

fn state(p: &Path) -> (u64, Vec<String>) {
    let i = Image::open(p, Access::ReadOnly).unwrap();
    let mut v = Vec::new();
    for s in &i.meta().snapshots {
        v.extend(canon_snapshot(&i, &s.name).unwrap());
    }
    (i.superblock().generation, v)
}

/// Restore under injected faults at every block write: a new image never
/// appears half-made, an existing one keeps its committed state, and a
/// re-run completes.
#[test]
fn crash_matrix_restore() {
    let (t, img, tar) = setup(4);
    let dir = t.path().join("crash");
    std::fs::create_dir(&dir).unwrap();
    let dst = dir.join("new.img");
    let existing = t.path().join("existing.img");
    synth_image(&existing, 44, false).unwrap();
    let before = state(&existing);
    let mut k = 1u32;
    let (mut new_done, mut existing_done) = (false, false);
    while !(new_done && existing_done) {
        assert!(k < 500, "restore never completed");
        if !new_done {
            let o = bin()
                .args(["restore", s(&tar), s(&dst), "--quiet"])
                .env("CRYPTIMG_FAIL_AFTER_WRITES", k.to_string())
                .output()
                .unwrap();
            if o.status.success() {
                new_done = true;
                assert_eq!(canon(&dst, "main"), canon(&img, "main"));
            } else {
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("injected fault"),
                    "{}",
                    String::from_utf8_lossy(&o.stderr)
                );
                let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
                assert!(left.is_empty(), "fault at write {k} left files behind");
            }
        }
        if !existing_done {
            let o = bin()
                .args(["restore", s(&tar), s(&existing), "--snapshot", "r", "--quiet"])
                .env("CRYPTIMG_FAIL_AFTER_WRITES", k.to_string())
                .output()
                .unwrap();
            if o.status.success() {
                existing_done = true;
            } else {
                assert!(String::from_utf8_lossy(&o.stderr).contains("injected fault"));
                assert_eq!(state(&existing), before, "fault at write {k} changed the image");
                let opts = libimage::ops::check::CheckOptions {
                    data: true,
                    ..Default::default()
                };
                let r = libimage::ops::check::check(&existing, &Default::default(), &opts, &libimage::progress::Quiet).unwrap();
                assert_eq!(r.exit_code, 0, "fsck after a fault at write {k}: {:#?}", r.findings);
            }
        }
        k += 1;
    }
    assert!(k > 3, "faults were not injected");
    let after = state(&existing);
    assert_eq!(after.0, before.0 + 1);
    assert_eq!(canon(&existing, "r"), canon(&img, "main"));
    // A re-run of the failed-then-fixed restore is refused cleanly (name taken).
    let o = run(&["restore", s(&tar), s(&existing), "--snapshot", "r"]);
    assert_eq!(o.status.code(), Some(8));
}
