//! Getting at the data: `cat` of one file, extraction of chosen paths, and the
//! pax tar stream of `extract -`, which GNU tar must turn back into the tree.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fscrypt::MasterKey;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::read::{self, TreeReader};
use libimage::progress::Quiet;
use libimage::Error;
use testkit::{make_tricky_tree, require_tool, running_as_root, skip_or_fail, tree_diff, HARD_LINK_NAMES};

fn key(seed: u8) -> MasterKey {
    let raw: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(7).wrapping_add(seed)).collect();
    MasterKey::from_bytes(&raw).unwrap()
}

fn ring() -> Keyring {
    Keyring::new(vec![key(1)])
}

/// Builds the tricky tree (plus, as root, a character device) and its image.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    make_tricky_tree(&src).unwrap();
    if running_as_root() {
        let ok = Command::new("mknod")
            .arg(src.join("null"))
            .args(["c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mknod as root failed");
        // Restore the root's time, which the new entry changed.
        testkit::stamp_times(&src, true).unwrap();
    }
    let img = dir.join("img");
    create_image(&img, Source::Dir(&src), &key(1), &CreateOptions::default(), &Quiet).unwrap();
    (src, img)
}

fn cat_bytes(img: &Image, path: &str) -> libimage::Result<Vec<u8>> {
    let keys = ring();
    let r = TreeReader::new(img, img.snapshot(None)?, &keys);
    let mut out = Vec::new();
    let n = read::cat(&r, path.as_bytes(), &mut out)?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

#[test]
fn cat_returns_exactly_the_file() {
    let t = tempfile::tempdir().unwrap();
    let (src, img) = setup(t.path());
    let img = Image::open(&img, Access::ReadOnly).unwrap();
    for rel in [
        "sizes/empty",
        "sizes/one",
        "sizes/f4095",
        "sizes/f4096",
        "sizes/f4097",
        "sizes/big",
        "sparse",
        "third",
    ] {
        assert!(cat_bytes(&img, rel).unwrap() == fs::read(src.join(rel)).unwrap(), "{rel}");
    }
    let long = format!("names/{}", "n".repeat(255));
    assert_eq!(cat_bytes(&img, &long).unwrap(), b"255-byte name");
    // Paths normalize as a shell's would.
    assert_eq!(
        cat_bytes(&img, "/./links/a/../b//second").unwrap(),
        fs::read(src.join("third")).unwrap()
    );
    // Refusals name what is wrong.
    let e = cat_bytes(&img, "sizes").unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    let e = cat_bytes(&img, "sym/rel").unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = cat_bytes(&img, "sizes/nope").unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    let e = cat_bytes(&img, "sizes/one/x").unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    // Without the key: a missing key, not a missing file.
    let none = Keyring::default();
    let r = TreeReader::new(&img, img.snapshot(None).unwrap(), &none);
    let e = read::cat(&r, b"sizes/one", &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
}

/// Every path below `root` (relative, `/`-joined), directories included.
fn listing(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn partial_extract_returns_exactly_what_was_asked() {
    let t = tempfile::tempdir().unwrap();
    let (src, img) = setup(t.path());
    let img = Image::open(&img, Access::ReadOnly).unwrap();
    let out = t.path().join("out");
    let paths: Vec<Vec<u8>> = ["links", "sizes/f4097", "deep/d01/d02", "links/a/orig", "sym/long"]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let st = read::extract_paths(&img, None, &ring(), &paths, &out, false, &Quiet).unwrap();
    assert_eq!((st.files, st.hardlinks, st.symlinks), (3, 1, 1), "{st:?}");
    let mut want: BTreeSet<String> = [
        "links",
        "links/a",
        "links/a/orig",
        "links/b",
        "links/b/second",
        "sizes",
        "sizes/f4097",
        "sym",
        "sym/long",
        "deep",
        "deep/d01",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = "deep/d01".to_string();
    for i in 2..=20 {
        p = format!("{p}/d{i:02}");
        want.insert(p.clone());
    }
    want.insert(format!("{p}/bottom"));
    assert_eq!(listing(&out), want);
    // The hard link stays a link, with the first name's content.
    let (a, b) = (out.join(HARD_LINK_NAMES[0]), out.join(HARD_LINK_NAMES[1]));
    assert_eq!(fs::metadata(&a).unwrap().ino(), fs::metadata(&b).unwrap().ino());
    assert_eq!(fs::read(&a).unwrap(), fs::read(src.join(HARD_LINK_NAMES[0])).unwrap());
    assert_eq!(
        fs::read(out.join("sizes/f4097")).unwrap(),
        fs::read(src.join("sizes/f4097")).unwrap()
    );
    assert_eq!(
        fs::read_link(out.join("sym/long")).unwrap(),
        fs::read_link(src.join("sym/long")).unwrap()
    );
    // Parents keep their own metadata.
    let mt = |p: &Path| fs::metadata(p).unwrap().mtime_nsec();
    assert_eq!(mt(&out.join("deep/d01")), mt(&src.join("deep/d01")));
    // A missing path is refused before anything is written.
    let out2 = t.path().join("out2");
    let e = read::extract_paths(&img, None, &ring(), &[b"nope".to_vec()], &out2, false, &Quiet).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    assert!(!out2.exists());
}

/// `extract -` piped into GNU tar (as root, with xattrs) gives the tree back.
#[test]
fn tar_stream_round_trips_through_gnu_tar() {
    if !running_as_root() {
        skip_or_fail("tar_stream_round_trips_through_gnu_tar", "needs root (owners, devices)");
        return;
    }
    if !require_tool("tar") {
        return;
    }
    let version = Command::new("tar").arg("--version").output().unwrap();
    if !String::from_utf8_lossy(&version.stdout).contains("GNU tar") {
        skip_or_fail("tar_stream_round_trips_through_gnu_tar", "`tar` is not GNU tar");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, img) = setup(t.path());
    let img = Image::open(&img, Access::ReadOnly).unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut child = Command::new("tar")
        .args(["-xpf", "-", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
    let (mut w, st) = read::extract_tar(&img, None, &ring(), &[], stdin, &Quiet).unwrap();
    w.flush().unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "tar: {}", String::from_utf8_lossy(&o.stderr));
    assert!(st.hardlinks == 2 && st.specials == 2, "{st:?}");
    let diff = tree_diff(&src, &out);
    assert!(diff.is_empty(), "differences: {diff:#?}");
    // Nanosecond times came through (tree_diff compares them; check one).
    let m = fs::symlink_metadata(out.join("sizes/f4097")).unwrap();
    assert_eq!(m.mtime_nsec(), fs::symlink_metadata(src.join("sizes/f4097")).unwrap().mtime_nsec());
}

/// A selection as a tar stream: only the asked members (and their parents),
/// hard links pointing inside the stream.
#[test]
fn tar_stream_of_a_selection() {
    let t = tempfile::tempdir().unwrap();
    let (src, img) = setup(t.path());
    let img = Image::open(&img, Access::ReadOnly).unwrap();
    let (bytes, st) = read::extract_tar(&img, None, &ring(), &[b"links/b".to_vec(), b"third".to_vec()], Vec::new(), &Quiet).unwrap();
    assert_eq!((st.files, st.hardlinks, st.dirs), (1, 1, 3), "{st:?}");
    assert_eq!(bytes.len() % 512, 0);
    // Binary xattr values and nanosecond times go into pax records as they are.
    let (x, _) = read::extract_tar(&img, None, &ring(), &[b"xattr_file".to_vec()], Vec::new(), &Quiet).unwrap();
    let has = |needle: &[u8]| x.windows(needle.len()).any(|w| w == needle);
    let src_xattrs = testkit::tree::read_xattrs(&src.join("xattr_file")).unwrap();
    if !src_xattrs.is_empty() {
        assert!(has(b" SCHILY.xattr.user.binary=\0\nbin\xff\n\n"), "binary xattr record missing");
    }
    let ns = fs::symlink_metadata(src.join("xattr_file")).unwrap().mtime_nsec();
    assert!(has(format!(".{ns:09}\n").as_bytes()), "mtime with nanoseconds missing");
    if !require_tool("tar") {
        return;
    }
    let mut child = Command::new("tar")
        .args(["-tvf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let list = String::from_utf8_lossy(&o.stdout);
    let names: Vec<&str> = list.lines().map(|l| l.split_whitespace().nth(5).unwrap_or("")).collect();
    assert_eq!(names, ["./", "links/", "links/b/", "links/b/second", "third"], "{list}");
    assert!(list.contains("third link to links/b/second"), "{list}");
}
