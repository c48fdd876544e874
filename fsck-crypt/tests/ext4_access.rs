//! `fsck-crypt extract IMAGE DEST [PATH]...` (DEST `-`: a pax tar stream)
//! and `cat` on ext4 images made by `mkfs-crypt create --format ext4` from
//! the tricky tree (no kernel needed): partial extraction gives exactly the
//! asked paths and their parents, the tar stream through GNU tar (as root)
//! gives the tree back, `cat` gives one file.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::{make_tricky_tree, require_tool, running_as_root, skip_or_fail, tree_diff};

fn fsck(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-crypt"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The tricky tree, its ext4 image (the tree under `data/`) and the key file.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    make_tricky_tree(&src).unwrap();
    let key = dir.join("key");
    fs::write(&key, (1..=64u8).collect::<Vec<u8>>()).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let img = dir.join("e.img");
    let o = Command::new(testkit::workspace_bin("mkfs-crypt"))
        .args(["create", "--format", "ext4", "--quiet", "--root"])
        .arg(&src)
        .arg("--key-file")
        .arg(&key)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (src, img, key)
}

/// Every path below `root`, relative, directories included.
fn paths(root: &Path) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn ext4_extract_gives_exactly_the_asked_paths() {
    let t = tempfile::tempdir().unwrap();
    let (src, img, key) = setup(t.path());
    let out = t.path().join("out");
    // A directory (its subtree), one name of a hard-linked file, a file in a
    // non-UTF-8-free deep path, `.`/`..` normalized as in a shell.
    let o = fsck(&[
        "extract".as_ref(),
        img.as_os_str(),
        out.as_os_str(),
        "data/sym".as_ref(),
        "data/links/b/second".as_ref(),
        "/data/./names/../sizes/f4097".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        paths(&out),
        set(&[
            "data",
            "data/sym",
            "data/sym/abs",
            "data/sym/rel",
            "data/sym/long",
            "data/links",
            "data/links/b",
            "data/links/b/second",
            "data/sizes",
            "data/sizes/f4097",
        ])
    );
    assert_eq!(
        fs::read(out.join("data/links/b/second")).unwrap(),
        fs::read(src.join("links/a/orig")).unwrap()
    );
    assert_eq!(
        fs::read(out.join("data/sizes/f4097")).unwrap(),
        fs::read(src.join("sizes/f4097")).unwrap()
    );
    assert_eq!(
        fs::read_link(out.join("data/sym/long")).unwrap(),
        fs::read_link(src.join("sym/long")).unwrap()
    );
    // Parents carry their own metadata.
    use std::os::unix::fs::MetadataExt;
    let mt = |p: &Path| fs::metadata(p).unwrap().mtime_nsec();
    assert_eq!(mt(&out.join("data/links")), mt(&src.join("links")));

    // The same selection as a tar stream lists exactly those members.
    let o = fsck(&[
        "extract".as_ref(),
        img.as_os_str(),
        "-".as_ref(),
        "data/sym".as_ref(),
        "data/links/b/second".as_ref(),
        "data/sizes/f4097".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if require_tool("tar") {
        let mut tar = Command::new("tar")
            .args(["-tf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = tar.stdin.take().unwrap();
        let data = o.stdout.clone();
        let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data).unwrap());
        let listed = tar.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(listed.status.success());
        let names: BTreeSet<Vec<u8>> = listed
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(b"/").unwrap_or(l).to_vec())
            .collect();
        let mut want = set(&[
            ".",
            "data",
            "data/sym",
            "data/sym/abs",
            "data/sym/rel",
            "data/sym/long",
            "data/links",
            "data/links/b",
            "data/links/b/second",
            "data/sizes",
            "data/sizes/f4097",
        ]);
        want.insert(b"./".strip_suffix(b"/").unwrap().to_vec());
        assert_eq!(names, want);
    }

    // A missing path is refused before anything is written; so is a missing key.
    let out2 = t.path().join("out2");
    let o = fsck(&[
        "extract".as_ref(),
        img.as_os_str(),
        out2.as_os_str(),
        "data/nope".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file"));
    assert!(!out2.exists());
    let other = t.path().join("other");
    fs::write(&other, [0x5au8; 64]).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let o = fsck(&[
        "extract".as_ref(),
        img.as_os_str(),
        out2.as_os_str(),
        "--key-file".as_ref(),
        other.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out2.exists());
}

#[test]
fn ext4_cat_prints_one_file() {
    let t = tempfile::tempdir().unwrap();
    let (src, img, key) = setup(t.path());
    let cat = |p: &str| fsck(&["cat".as_ref(), img.as_os_str(), p.as_ref(), "--key-file".as_ref(), key.as_os_str()]);
    let o = cat("data/sizes/big");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == fs::read(src.join("sizes/big")).unwrap());
    // A sparse file: holes come out as zeros, the size exact.
    let o = cat("/data/deep/../sparse");
    assert!(o.stdout == fs::read(src.join(testkit::SPARSE_NAME)).unwrap());
    let o = cat("data/links");
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}

/// `extract IMAGE -` piped into GNU tar as root (owners, devices, xattrs)
/// gives the tricky tree back, compared by `testkit::tree_diff`.
#[test]
fn ext4_tar_stream_round_trips_through_gnu_tar() {
    if !running_as_root() {
        skip_or_fail("ext4_tar_stream_round_trips_through_gnu_tar", "needs root (owners, devices)");
        return;
    }
    if !require_tool("tar") {
        return;
    }
    let version = Command::new("tar").arg("--version").output().unwrap();
    if !String::from_utf8_lossy(&version.stdout).contains("GNU tar") {
        skip_or_fail("ext4_tar_stream_round_trips_through_gnu_tar", "`tar` is not GNU tar");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, img, key) = setup(t.path());
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut producer = Command::new(env!("CARGO_BIN_EXE_fsck-crypt"))
        .arg("extract")
        .arg(&img)
        .arg("-")
        .arg("--key-file")
        .arg(&key)
        .arg("--no-progress")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = Command::new("tar")
        .args(["-xpf", "-", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(&out)
        .stdin(producer.stdout.take().unwrap())
        .output()
        .unwrap();
    let p = producer.wait_with_output().unwrap();
    assert!(p.status.success(), "fsck-crypt: {}", String::from_utf8_lossy(&p.stderr));
    assert!(o.status.success(), "tar: {}", String::from_utf8_lossy(&o.stderr));
    let diff = tree_diff(&src, &out.join("data"));
    assert!(diff.is_empty(), "differences: {diff:#?}");
}

/// `ls --key-file WRONG` on an ext4 image, and `backup-crypt list --key-file
/// WRONG` of its archive, warn naming the given key id and the id needed
/// (issue 13: a key that opens nothing).
#[test]
fn ext4_wrong_key_warns_by_id() {
    let t = tempfile::tempdir().unwrap();
    let (_src, img, key) = setup(t.path());
    let wrong = t.path().join("wrong");
    fs::write(&wrong, [0x5au8; 64]).unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    let id = |k: &Path| {
        let o = Command::new(testkit::workspace_bin("mkfs-crypt"))
            .arg("keyid")
            .arg(k)
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let (good_id, wrong_id) = (id(&key), id(&wrong));
    assert_eq!(good_id.len(), 32, "{good_id}");
    let o = fsck(&[
        "ls".as_ref(),
        img.as_os_str(),
        "data".as_ref(),
        "--key-file".as_ref(),
        wrong.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning: key") && err.contains(&wrong_id) && err.contains(&good_id),
        "{err}"
    );
    let o = fsck(&[
        "ls".as_ref(),
        img.as_os_str(),
        "data".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
    ]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));

    let tar = t.path().join("a.tar");
    let bk = testkit::workspace_bin("backup-crypt");
    let o = Command::new(&bk)
        .arg("create")
        .arg(&img)
        .arg("-o")
        .arg(&tar)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(&bk)
        .arg("list")
        .arg(&tar)
        .arg("--key-file")
        .arg(&wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning: key") && err.contains(&wrong_id) && err.contains(&good_id),
        "{err}"
    );
}
