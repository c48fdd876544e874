//! The vendor/user story through the binaries: `mkfs-crypt` keygen, create,
//! snapshot, rekey, rekey --reencrypt, update, delete, checked with
//! `fsck-crypt info --json` and `fsck-crypt extract`; refusals with exit codes
//! and unchanged bytes; fault injection through CRYPTIMG_FAIL_AFTER_WRITES.
//! (The fsck-crypt binary is found next to this test by
//! `testkit::workspace_bin`: `cargo test --workspace` builds it.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libimage::engine::image::{Access, Image};
use libimage::engine::keyfile::load_key;

fn mkfs(args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mkfs-crypt"));
    c.args(args)
        .env_remove("CRYPTIMG_FAIL_AFTER_WRITES")
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = mkfs(args, None);
    assert!(
        o.status.success(),
        "mkfs-crypt {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str], code: i32) -> String {
    let o = mkfs(args, None);
    assert_eq!(
        o.status.code(),
        Some(code),
        "mkfs-crypt {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stderr).unwrap()
}

fn fsck_bin() -> PathBuf {
    testkit::workspace_bin("fsck-crypt")
}

fn fsck(args: &[&str]) -> Output {
    let bin = fsck_bin();
    Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (build the workspace first)", bin.display()))
}

/// `fsck-crypt info IMAGE --json`.
fn info_json(img: &Path) -> serde_json::Value {
    let o = fsck(&["info", img.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn snap<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["snapshots"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

/// `fsck-crypt check --data IMAGE` exits 0.
fn clean(img: &Path) {
    let o = fsck(&["check", img.to_str().unwrap(), "--data", "--no-progress"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
}

/// `fsck-crypt extract IMAGE DEST --snapshot NAME --key-file …`: Ok, or the error output.
fn extract(img: &Path, name: &str, keys: &[&Path], dest: &Path) -> Result<(), String> {
    let mut args = vec![
        "extract",
        img.to_str().unwrap(),
        dest.to_str().unwrap(),
        "--snapshot",
        name,
        "--no-progress",
    ];
    for k in keys {
        args.push("--key-file");
        args.push(k.to_str().unwrap());
    }
    let o = fsck(&args);
    match o.status.code() {
        Some(0) => Ok(()),
        c => Err(format!("exit {c:?}: {}", String::from_utf8_lossy(&o.stderr))),
    }
}

/// The tree extracted to `dest` equals `want` in names, types and contents.
fn same_tree(want: &Path, dest: &Path) {
    let diff: Vec<String> = testkit::tree_diff(want, dest)
        .into_iter()
        .filter(|d| !d.contains("owner differs") && !d.contains("mtime differs"))
        .collect();
    assert!(diff.is_empty(), "{diff:#?}");
}

#[test]
fn vendor_user_story_through_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s);
    let s = |s: &str| p(s).to_str().unwrap().to_string();
    let tree = p("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/os-release"), "NAME=vendor\n").unwrap();
    fs::write(tree.join("blob"), vec![7u8; 200_000]).unwrap();
    std::os::unix::fs::symlink("etc/os-release", tree.join("link")).unwrap();
    let a = ok(&["keygen", &s("A")]).trim().to_string();
    let b = ok(&["keygen", &s("B")]).trim().to_string();
    ok(&["create", &s("img"), "--root", &s("tree"), "--key-file", &s("A"), "-q"]);
    let img = p("img");

    // snapshot: metadata only.
    let alloc0 = Image::open(&img, Access::ReadOnly).unwrap().meta().alloc.clone();
    let out = ok(&["snapshot", &s("img"), "--from", "main", "--name", "user"]);
    assert!(out.contains("no data copied"), "{out}");
    assert_eq!(Image::open(&img, Access::ReadOnly).unwrap().meta().alloc, alloc0);

    // Lazy rekey.
    let out = ok(&[
        "rekey",
        &s("img"),
        "--snapshot",
        "user",
        "--old-key-file",
        &s("A"),
        "--new-key-file",
        &s("B"),
    ]);
    assert!(out.contains(&b), "{out}");
    clean(&img);
    let j = info_json(&img);
    assert_eq!(snap(&j, "main")["keys_needed"], serde_json::json!([a]));
    let mut ab = vec![a.clone(), b.clone()];
    ab.sort();
    assert_eq!(snap(&j, "user")["keys_needed"], serde_json::json!(ab));
    extract(&img, "main", &[&p("A")], &p("x1")).unwrap();
    same_tree(&tree, &p("x1"));
    extract(&img, "user", &[&p("A"), &p("B")], &p("x2")).unwrap();
    same_tree(&tree, &p("x2"));
    let e = extract(&img, "user", &[&p("B")], &p("x3")).unwrap_err();
    // One of two keys missing: a key problem (exit 64) naming the missing id.
    assert!(e.contains("exit Some(64)") && e.contains(&a), "{e}");

    // Refusals: exit 8 (64 for a missing key), image bytes unchanged.
    let before = fs::read(&img).unwrap();
    let err = fails(
        &[
            "rekey",
            &s("img"),
            "--snapshot",
            "main",
            "--old-key-file",
            &s("B"),
            "--new-key-file",
            &s("B"),
        ],
        64,
    );
    assert!(err.contains(&a) && err.contains("names"), "{err}");
    let err = fails(&["snapshot", &s("img"), "--from", "main", "--name", "user"], 8);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&["delete", &s("img"), "--snapshot", "nope"], 8);
    assert!(err.contains("no snapshot named"), "{err}");
    fails(
        &[
            "update",
            &s("img"),
            "--snapshot",
            "user",
            "--root",
            &s("tree"),
            "--key-file",
            &s("A"),
        ],
        64,
    );
    fails(&["rekey", &s("img"), "--snapshot", "user", "--new-key-file", &s("B")], 16);
    fails(
        &[
            "update",
            &s("img"),
            "--snapshot",
            "user",
            "--tar",
            "-",
            "--key-file",
            &s("B"),
            "--delete-missing",
        ],
        16,
    );
    assert!(fs::read(&img).unwrap() == before, "a refusal changed the image");

    // Fault injection: a cut rekey --reencrypt leaves the old state; a re-run with --resume completes.
    let args = [
        "rekey",
        &s("img"),
        "--snapshot",
        "user",
        "--old-key-file",
        &s("A"),
        "--new-key-file",
        &s("B"),
        "--reencrypt",
    ];
    let o = mkfs(&args, Some(("CRYPTIMG_FAIL_AFTER_WRITES", "2")));
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("injected fault"));
    clean(&img);
    assert_eq!(info_json(&img)["generation"], j["generation"]);
    let mut resume = args.to_vec();
    resume.push("--resume");
    ok(&resume);
    clean(&img);
    let j = info_json(&img);
    let user = snap(&j, "user");
    assert_eq!(user["keys_needed"], serde_json::json!([b]));
    assert!(user["extents_by_key"].get(&a).is_none(), "{user}");
    assert_eq!(snap(&j, "main")["keys_needed"], serde_json::json!([a]));
    extract(&img, "user", &[&p("B")], &p("x4")).unwrap();
    same_tree(&tree, &p("x4"));
    extract(&img, "main", &[&p("A")], &p("x5")).unwrap();
    // Idempotent.
    let gen = j["generation"].clone();
    let out = ok(&args);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(info_json(&img)["generation"], gen);

    // update: new files under B; --delete-missing drops what the tree lost.
    fs::write(tree.join("etc/new.conf"), vec![1u8; 9000]).unwrap();
    fs::remove_file(tree.join("blob")).unwrap();
    let out = ok(&[
        "update",
        &s("img"),
        "--snapshot",
        "user",
        "--root",
        &s("tree"),
        "--key-file",
        &s("B"),
        "--delete-missing",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["deleted"], 1);
    assert_eq!(r["key_id"], b);
    clean(&img);
    let j = info_json(&img);
    assert_eq!(snap(&j, "user")["keys_needed"], serde_json::json!([b]));
    let i = Image::open(&img, Access::ReadOnly).unwrap();
    let kb = libimage::engine::image::Keyring::new(vec![load_key(&p("B")).unwrap()]);
    let r = libimage::ops::read::TreeReader::new(&i, i.snapshot(Some("user")).unwrap(), &kb);
    assert!(r.lookup(b"blob").is_err());
    let ino = r.inode(r.lookup(b"etc/new.conf").unwrap()).unwrap();
    let libimage::format::inode::Body::File { map } = &ino.body else {
        panic!()
    };
    assert!(map.iter().all(|m| i.extent(m.extent).unwrap().ctx.key.to_string() == b));
    drop(i);
    extract(&img, "user", &[&p("B")], &p("x7")).unwrap();
    same_tree(&tree, &p("x7"));

    // delete: user's unique blocks are freed; main stays intact.
    let out = ok(&["delete", &s("img"), "--snapshot", "user", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["extents_freed"].as_u64().unwrap() >= 1, "{r}");
    clean(&img);
    assert_eq!(Image::open(&img, Access::ReadOnly).unwrap().meta().alloc, alloc0);
    extract(&img, "main", &[&p("A")], &p("x6")).unwrap();
    let err = fails(&["delete", &s("img"), "--snapshot", "main"], 8);
    assert!(err.contains("only snapshot"), "{err}");
}
