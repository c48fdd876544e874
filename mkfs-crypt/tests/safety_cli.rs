//! Nothing lost under real operations (issue 11), through the binaries: two
//! writers at once, interrupts, a full disk, a closed pipe, hostile names.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    if name == "mkfs-crypt" {
        PathBuf::from(env!("CARGO_BIN_EXE_mkfs-crypt"))
    } else {
        testkit::workspace_bin(name)
    }
}

fn cmd(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin(name));
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(name: &str, args: &[&str]) -> Output {
    cmd(name, args).output().unwrap()
}

fn ok(name: &str, args: &[&str]) -> String {
    let o = run(name, args);
    assert!(o.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A key (mode 0600) and an image of a small tree, in `d`.
fn setup(d: &Path) -> (PathBuf, PathBuf) {
    let key = d.join("key");
    ok("mkfs-crypt", &["keygen", s(&key)]);
    let tree = d.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("base"), b"base file\n").unwrap();
    let img = d.join("img");
    ok("mkfs-crypt", &["create", s(&img), "--root", s(&tree), "--key-file", s(&key), "-q"]);
    (img, key)
}

/// The names in the root of snapshot `main`, read with `key`.
fn names(img: &Path, key: &Path) -> Vec<String> {
    let out = ok("fsck-crypt", &["ls", s(img), "--key-file", s(key), "--quoting-style", "literal"]);
    out.lines().map(|l| l.rsplit(' ').next().unwrap().to_string()).collect()
}

fn assert_clean(img: &Path, key: &Path) {
    let o = run("fsck-crypt", &["check", s(img), "--data", "--no-progress", "--key-file", s(key)]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
}

/// A second writer fails at once with exit 8 naming the holder; the first
/// one's work is never lost; the image always checks clean.
#[test]
fn concurrent_updates_never_lose_work() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = setup(d.path());
    let mut refused = 0;
    for i in 0..20 {
        let mut kids: Vec<(String, Child)> = Vec::new();
        for w in ["a", "b"] {
            let src = d.path().join(format!("src-{w}-{i}"));
            fs::create_dir_all(&src).unwrap();
            let name = format!("{w}{i}");
            fs::write(src.join(&name), vec![b'x'; 300_000]).unwrap();
            let c = cmd(
                "mkfs-crypt",
                &[
                    "update",
                    s(&img),
                    "--snapshot",
                    "main",
                    "--root",
                    s(&src),
                    "--key-file",
                    s(&key),
                    "-q",
                ],
            )
            .spawn()
            .unwrap();
            kids.push((name, c));
        }
        let results: Vec<(String, Output)> = kids.into_iter().map(|(n, c)| (n, c.wait_with_output().unwrap())).collect();
        let have = names(&img, &key);
        for (name, o) in &results {
            match o.status.code() {
                Some(0) => assert!(have.contains(name), "run {i}: {name} reported success but is missing: {have:?}"),
                Some(8) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    assert!(err.contains("is in use by another process (pid "), "run {i}: {err}");
                    assert!(!have.contains(name), "run {i}: refused update {name} changed the image");
                    refused += 1;
                }
                c => panic!("run {i}: {name} exit {c:?}: {}", String::from_utf8_lossy(&o.stderr)),
            }
        }
        assert_clean(&img, &key);
    }
    eprintln!("concurrent updates: {refused} of 40 refused as in use");
}

/// `update` racing `rekey`: a rekey that says it succeeded really moved the
/// snapshot to the new key; an update that says so really added its file.
#[test]
fn update_racing_rekey_never_loses_the_rotation() {
    let d = tempfile::tempdir().unwrap();
    let (img, key0) = setup(d.path());
    let mut cur = key0;
    for i in 0..20 {
        let next = d.path().join(format!("key{i}"));
        ok("mkfs-crypt", &["keygen", s(&next)]);
        let src = d.path().join(format!("src{i}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join(format!("u{i}")), vec![b'y'; 300_000]).unwrap();
        let up = cmd(
            "mkfs-crypt",
            &[
                "update",
                s(&img),
                "--snapshot",
                "main",
                "--root",
                s(&src),
                "--key-file",
                s(&cur),
                "-q",
            ],
        )
        .spawn()
        .unwrap();
        let rk = cmd(
            "mkfs-crypt",
            &[
                "rekey",
                s(&img),
                "--snapshot",
                "main",
                "--old-key-file",
                s(&cur),
                "--new-key-file",
                s(&next),
                "--reencrypt",
                "-q",
            ],
        )
        .spawn()
        .unwrap();
        let (up, rk) = (up.wait_with_output().unwrap(), rk.wait_with_output().unwrap());
        for (what, o) in [("update", &up), ("rekey", &rk)] {
            if o.status.code() != Some(0) {
                let err = String::from_utf8_lossy(&o.stderr);
                // Refused as in use (8), or (an update that started after the
                // rekey finished) refused because its key is no longer the
                // snapshot's (64): never a silent loss.
                let wrong_key = what == "update" && rk.status.success() && err.contains("missing key");
                let code = if wrong_key { 64 } else { 8 };
                assert_eq!(o.status.code(), Some(code), "run {i}: {what}: {err}");
                assert!(err.contains("is in use by another process") || wrong_key, "run {i}: {what}: {err}");
            }
        }
        if rk.status.success() {
            cur = next;
        }
        // The snapshot is under `cur` (the rotation happened iff rekey said so).
        let info = ok("fsck-crypt", &["info", s(&img), "--json"]);
        let id = ok("fsck-crypt", &["check", s(&img), "--key-file", s(&cur), "--no-progress"]);
        assert!(id.contains("(given, verified) (policy)"), "run {i}: {id}\n{info}");
        if up.status.success() {
            assert!(names(&img, &cur).contains(&format!("u{i}")), "run {i}: update lost");
        }
        assert_clean(&img, &cur);
    }
}

/// Waits until a `.NAME.tmp-PID` file appears in `dir` (the command is mid-way).
fn wait_for_temp(dir: &Path) -> PathBuf {
    let t0 = Instant::now();
    loop {
        if let Some(e) = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        {
            return e.path();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// SIGINT and SIGTERM during `create --tar -` (stalled mid-stream) remove
/// the temporary image; the process dies by the signal.
#[test]
fn interrupted_create_leaves_no_temporary_file() {
    for sig in ["INT", "TERM"] {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key");
        ok("mkfs-crypt", &["keygen", s(&key)]);
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        let img = out.join("new.img");
        let mut c = cmd("mkfs-crypt", &["create", s(&img), "--tar", "-", "--key-file", s(&key), "-q"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        // Half a tar stream: one header, part of its data; then stall.
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_size(1 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        let mut stdin = c.stdin.take().unwrap();
        stdin.write_all(h.as_bytes()).unwrap();
        stdin.write_all(&[1u8; 8192]).unwrap();
        stdin.flush().unwrap();
        let tmp = wait_for_temp(&out);
        let k = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()
            .unwrap();
        assert!(k.success());
        let st = c.wait().unwrap();
        drop(stdin);
        let want = if sig == "INT" { 2 } else { 15 };
        assert_eq!(st.signal(), Some(want), "{st:?}");
        assert!(!tmp.exists(), "{} left behind", tmp.display());
        assert_eq!(temps(&out), Vec::<String>::new());
        assert!(!img.exists());
    }
}

/// A closed standard output ends the command quietly (no panic, no error
/// message): it dies by SIGPIPE like coreutils.
#[test]
fn closed_stdout_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = setup(d.path());
    let runs: [(&str, Vec<&str>); 4] = [
        ("fsck-crypt", vec!["info", s(&img)]),
        ("fsck-crypt", vec!["check", s(&img), "--no-progress"]),
        ("fsck-crypt", vec!["ls", s(&img), "--key-file", s(&key)]),
        ("mkfs-crypt", vec!["--help"]),
    ];
    for (tool, args) in runs {
        // A pipe whose reader is gone before the command starts: its first
        // write to standard output meets a closed pipe, whatever the timing.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = cmd(tool, &args).stdout(writer).spawn().unwrap();
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let st = c.wait().unwrap();
        assert!(st.signal() == Some(13) || st.code() == Some(141), "{tool} {args:?}: {st:?} {err}");
        assert!(!err.contains("panicked") && !err.contains("error"), "{tool} {args:?}: {err}");
    }
}

/// Names with control characters never reach the output raw.
#[test]
fn ls_escapes_control_characters() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("key");
    ok("mkfs-crypt", &["keygen", s(&key)]);
    let tree = d.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("evil\n100644     0     0            1 forged\x1b[2J"), b"x").unwrap();
    let img = d.path().join("img");
    ok("mkfs-crypt", &["create", s(&img), "--root", s(&tree), "--key-file", s(&key), "-q"]);
    let out = run("fsck-crypt", &["ls", s(&img), "--key-file", s(&key)]);
    assert!(out.status.success());
    assert_eq!(
        out.stdout.iter().filter(|&&b| b == b'\n').count(),
        1,
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!out.stdout.contains(&0x1b));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.ends_with("evil\\n100644     0     0            1 forged\\033[2J\n"),
        "{line:?}"
    );
    let sh = ok(
        "fsck-crypt",
        &["ls", s(&img), "--key-file", s(&key), "--quoting-style", "shell-escape"],
    );
    assert!(
        sh.contains("'evil'$'\\n''100644     0     0            1 forged'$'\\033''[2J'"),
        "{sh:?}"
    );
    let raw = run("fsck-crypt", &["ls", s(&img), "--key-file", s(&key), "--quoting-style", "literal"]);
    assert!(raw.stdout.contains(&0x1b));
}

/// `--tar -` with `--key-file -`: the conflict is named.
#[test]
fn stdin_cannot_be_both_tar_and_key() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    let o = run("mkfs-crypt", &["create", s(&img), "--tar", "-", "--key-file", "-"]);
    assert_eq!(o.status.code(), Some(8));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--tar - and --key-file - both want standard input"), "{err}");
}

/// A key file others can read gets a warning, like ssh's.
#[test]
fn readable_key_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let (img, key) = setup(d.path());
    let o = run("fsck-crypt", &["ls", s(&img), "--key-file", s(&key)]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let o = run("fsck-crypt", &["ls", s(&img), "--key-file", s(&key)]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is accessible by others (mode 0644)"), "{err}");
}

/// Runs `f` with a small ext4 filesystem mounted from a loop device at a
/// fresh directory; `None` (with a SKIP line) without root or loop devices.
fn with_small_fs(test: &str, f: impl FnOnce(&Path)) {
    let root = testkit::running_as_root();
    let d = tempfile::tempdir().unwrap();
    let backing = d.path().join("fs.img");
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let ready = root
        && Command::new("truncate")
            .args(["-s", "24M", s(&backing)])
            .status()
            .is_ok_and(|s| s.success())
        && Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", s(&backing)])
            .status()
            .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "loop", s(&backing), s(&mnt)])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        testkit::skip_or_fail(test, "needs root, mkfs.ext4 and a loop-mounted filesystem");
        return;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mnt)));
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

fn sha(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

/// A full disk during `update` and `rekey --reencrypt`: exit 8, and the image
/// file is byte for byte what it was (not grown to fill the disk).
#[test]
fn full_disk_leaves_the_image_unchanged() {
    with_small_fs("full_disk_leaves_the_image_unchanged", |mnt| {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key");
        ok("mkfs-crypt", &["keygen", s(&key)]);
        let key2 = d.path().join("key2");
        ok("mkfs-crypt", &["keygen", s(&key2)]);
        let tree = d.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        let mut rng = testkit::TestRng::new(7);
        fs::write(tree.join("data"), rng.bytes(6 << 20)).unwrap();
        let img = mnt.join("img");
        ok("mkfs-crypt", &["create", s(&img), "--root", s(&tree), "--key-file", s(&key), "-q"]);
        // Fill the filesystem but for about 1 MiB.
        let avail = || {
            let o = Command::new("df").args(["--output=avail", "-B1", s(mnt)]).output().unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let fill = avail().saturating_sub(1 << 20);
        fs::write(mnt.join("filler"), vec![0xa5u8; fill as usize]).unwrap();
        let big = d.path().join("big");
        fs::create_dir_all(&big).unwrap();
        fs::write(big.join("more"), rng.bytes(8 << 20)).unwrap();
        let (len, hash) = (fs::metadata(&img).unwrap().len(), sha(&img));
        let o = run(
            "mkfs-crypt",
            &[
                "update",
                s(&img),
                "--snapshot",
                "main",
                "--root",
                s(&big),
                "--key-file",
                s(&key),
                "-q",
            ],
        );
        assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("No space left"), "{o:?}");
        assert_eq!(fs::metadata(&img).unwrap().len(), len, "update grew the image");
        assert_eq!(sha(&img), hash);
        let o = run(
            "mkfs-crypt",
            &[
                "rekey",
                s(&img),
                "--snapshot",
                "main",
                "--old-key-file",
                s(&key),
                "--new-key-file",
                s(&key2),
                "--reencrypt",
                "-q",
            ],
        );
        assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(fs::metadata(&img).unwrap().len(), len, "rekey grew the image");
        assert_eq!(sha(&img), hash);
        assert_clean(&img, &key);
    });
}

/// A writer finds the image locked by this test process: it fails at once
/// with exit 8 naming this pid; with `--wait` it waits, then succeeds.
#[test]
fn locked_image_names_the_holder_and_wait_waits() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = setup(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("late"), b"late\n").unwrap();
    let holder = fs::File::open(&img).unwrap();
    holder.lock().unwrap();
    let args = [
        "update",
        s(&img),
        "--snapshot",
        "main",
        "--root",
        s(&src),
        "--key-file",
        s(&key),
        "-q",
    ];
    let t0 = Instant::now();
    let o = run("mkfs-crypt", &args);
    assert_eq!(o.status.code(), Some(8));
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!("{} is in use by another process (pid {})", img.display(), std::process::id());
    assert!(err.contains(&want), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    // Readers wait for a writer too: `info` is refused while it is held.
    assert_eq!(run("fsck-crypt", &["info", s(&img)]).status.code(), Some(8));
    let mut args_wait = vec!["--wait"];
    args_wait.extend_from_slice(&args);
    let mut c = cmd("mkfs-crypt", &args_wait).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(c.try_wait().unwrap().is_none(), "--wait did not wait");
    holder.unlock().unwrap();
    let st = c.wait().unwrap();
    assert!(st.success(), "{st:?}");
    assert!(names(&img, &key).contains(&"late".to_string()));
}
