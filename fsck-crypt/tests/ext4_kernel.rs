//! Issue 10 on a kernel-made image (tests 2, 3, 4): the kernel makes an
//! fscrypt-encrypted ext4 (mkfs.ext4 -O encrypt, loop mount, v2 policy),
//! copies in the tricky tree and a 20,000-entry directory, then
//! - `fsck-crypt ls` without the key matches the kernel's no-key listing,
//!   directory by directory (dirhash included);
//! - `fsck-crypt extract` with the key equals the source tree;
//! - `fsck-crypt check` exits 0 keyless, keyed and with --data; a wrong key
//!   is a finding (exit 4), not a crash;
//! - (issue 13) `extract -` piped to `tar -xpf -` equals the source tree, a
//!   partial extract gives exactly the asked path, `info --json` parses.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::kernel::{self, LoopMount};
use testkit::TestRng;

fn fsck(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-crypt")).args(args).output().unwrap()
}

fn key_file(dir: &Path, name: &str, raw: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, raw).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Every directory under `root` (relative path as shown) → its entry names.
fn listing(root: &Path) -> BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        let mut names = BTreeSet::new();
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().as_bytes().to_vec();
            if e.file_type().unwrap().is_dir() {
                let mut sub = rel.clone();
                if !sub.is_empty() {
                    sub.push(b'/');
                }
                sub.extend_from_slice(&name);
                stack.push(sub);
            }
            names.insert(name);
        }
        out.insert(rel, names);
    }
    out
}

#[test]
fn kernel_made_ext4_ls_check_extract() {
    testkit::require_kernel!();
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("k.img");
    kernel::mkfs_ext4_encrypt(&img, 512 << 20).unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    testkit::make_tricky_tree(&src).unwrap();
    let mut raw = [0u8; 64];
    TestRng::new(10).fill(&mut raw);
    let kf = key_file(t.path(), "key", &raw);
    let mut wrong = [0u8; 64];
    TestRng::new(11).fill(&mut wrong);
    let wrong_kf = key_file(t.path(), "wrong", &wrong);

    let mut m = LoopMount::new(&img, false).unwrap();
    let id = m.add_key(&raw).unwrap();
    let enc = m.join("enc");
    fs::create_dir(&enc).unwrap();
    kernel::set_policy(&enc, &id).unwrap();
    let st = Command::new("cp").arg("-a").arg(&src).arg(enc.join("tree")).status().unwrap();
    assert!(st.success());
    fs::create_dir(enc.join("big")).unwrap();
    for i in 0..20_000 {
        fs::write(enc.join("big").join(format!("file-{i:05}")), b"x").unwrap();
    }
    // The kernel's no-key view: remove the key (nothing is open), then list.
    Command::new("sync").status().unwrap();
    let status = m.remove_key(&id).unwrap();
    assert_eq!(status, 0, "key removal left busy files");
    let kernel_view = listing(m.path());
    m.unmount().unwrap();
    kernel::e2fsck_fn(&img).unwrap();

    // Test 2: ls without the key, directory by directory.
    let mut dirs_compared = 0;
    for (rel, names) in &kernel_view {
        if rel.starts_with(b"lost+found") {
            continue;
        }
        let out = fsck(&["ls".as_ref(), img.as_os_str(), std::ffi::OsStr::from_bytes(rel)]);
        assert!(
            out.status.success(),
            "ls {:?}: {}",
            String::from_utf8_lossy(rel),
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: BTreeSet<Vec<u8>> = out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l[32..].to_vec())
            .collect();
        assert_eq!(&ours, names, "directory {:?}", String::from_utf8_lossy(rel));
        dirs_compared += 1;
    }
    assert!(dirs_compared > 20, "{dirs_compared}");
    assert_eq!(kernel_view.values().map(|s| s.len()).max(), Some(20_000));

    // Test 4: check keyless, keyed, keyed with --data; a wrong key is a finding.
    for args in [
        vec![],
        vec!["--key-file".as_ref(), kf.as_os_str()],
        vec!["--data".as_ref(), "--key-file".as_ref(), kf.as_os_str()],
    ] {
        let mut a: Vec<&std::ffi::OsStr> = vec!["check".as_ref(), img.as_os_str()];
        a.extend(args);
        let out = fsck(&a);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{a:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = fsck(&["check".as_ref(), img.as_os_str(), "--key-file".as_ref(), wrong_kf.as_os_str()]);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("W_KEY_UNUSED"));
    let info = fsck(&["info".as_ref(), img.as_os_str()]);
    assert!(info.status.success());
    assert!(
        String::from_utf8_lossy(&info.stdout).contains(&fscrypt::KeyId(id).to_string()),
        "info lists the key id"
    );

    // Test 3: offline extract equals the source tree.
    let dest = t.path().join("out");
    let out = fsck(&[
        "extract".as_ref(),
        img.as_os_str(),
        dest.as_os_str(),
        "--key-file".as_ref(),
        kf.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    testkit::tree_equal(&src, &dest.join("enc/tree")).unwrap();
    assert_eq!(fs::read_dir(dest.join("enc/big")).unwrap().count(), 20_000);
    // Issue 13 on the kernel's image: `extract -` through GNU tar gives the
    // tree back; a partial extract gives exactly the asked path and parents;
    // `info --json` carries the envelope and the key id.
    if testkit::require_tool("tar") {
        let tar_out = t.path().join("tar-out");
        fs::create_dir(&tar_out).unwrap();
        let mut producer = Command::new(env!("CARGO_BIN_EXE_fsck-crypt"))
            .arg("extract")
            .arg(&img)
            .arg("-")
            .arg("enc/tree")
            .arg("--key-file")
            .arg(&kf)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let o = Command::new("tar")
            .args(["-xpf", "-", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
            .arg(&tar_out)
            .stdin(producer.stdout.take().unwrap())
            .output()
            .unwrap();
        let p = producer.wait_with_output().unwrap();
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
        assert!(o.status.success(), "tar: {}", String::from_utf8_lossy(&o.stderr));
        testkit::tree_equal(&src, &tar_out.join("enc/tree")).unwrap();
        let top: Vec<_> = fs::read_dir(tar_out.join("enc")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(top, ["tree"], "only the asked path");
    }
    let part = t.path().join("part");
    let out = fsck(&[
        "extract".as_ref(),
        img.as_os_str(),
        part.as_os_str(),
        "enc/tree/links/b".as_ref(),
        "--key-file".as_ref(),
        kf.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut got = Vec::new();
    let mut stack = vec![part.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            got.push(p.strip_prefix(&part).unwrap().to_path_buf());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    got.sort();
    let want: Vec<PathBuf> = ["enc", "enc/tree", "enc/tree/links", "enc/tree/links/b", "enc/tree/links/b/second"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want);
    let out = fsck(&["info".as_ref(), img.as_os_str(), "--json".as_ref()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["format_version"].as_u64(), v["tool"].as_str()),
        (Some(1), Some("fsck-crypt")),
        "{v}"
    );
    assert_eq!(v["encrypted_directories"][0]["key_id"], fscrypt::KeyId(id).to_string(), "{v}");
    // ls with the key shows real names.
    let out = fsck(&[
        "ls".as_ref(),
        img.as_os_str(),
        "enc".as_ref(),
        "--key-file".as_ref(),
        kf.as_os_str(),
    ]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(" tree\n") && s.contains(" big\n"), "{s}");
}
