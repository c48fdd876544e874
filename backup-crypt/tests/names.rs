//! `backup-crypt list --key-file` escapes control characters in real names
//! (issue 11 §6); `--json` keeps the exact bytes, base64 where not UTF-8.

use std::path::Path;
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(bin: &Path, args: &[&str]) -> std::process::Output {
    let o = Command::new(bin).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn list_escapes_real_names_and_json_keeps_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let me = env!("CARGO_BIN_EXE_backup-crypt");
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("key");
    run(&mkfs, &["keygen", s(&key)]);
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("evil\nfile        0 forged\x1b[2J"), b"x").unwrap();
    std::fs::write(tree.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9")), b"y").unwrap();
    let img = t.path().join("img");
    run(&mkfs, &["create", s(&img), "--root", s(&tree), "--key-file", s(&key), "-q"]);
    let tar = t.path().join("b.tar");
    run(Path::new(me), &["create", s(&img), "-o", s(&tar), "-q"]);
    let out = run(Path::new(me), &["list", s(&tar), "--key-file", s(&key)]).stdout;
    assert!(!out.contains(&0x1b), "{}", String::from_utf8_lossy(&out));
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("./evil\\nfile        0 forged\\033[2J\n"), "{text}");
    assert!(text.contains("./latin1-\\351\n"), "{text}");
    let j = run(Path::new(me), &["list", s(&tar), "--key-file", s(&key), "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    let m = v["members"].as_array().unwrap();
    assert!(m.iter().any(|e| e["real_path"] == "./evil\nfile        0 forged\x1b[2J"), "{v:#}");
    let b64 = m.iter().find_map(|e| e["real_path_base64"].as_str()).unwrap();
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), b"./latin1-\xe9");
}

/// `list` into a closed pipe ends quietly by SIGPIPE (no "Broken pipe" error, exit 8).
#[test]
fn list_into_a_closed_pipe_is_quiet() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let me = env!("CARGO_BIN_EXE_backup-crypt");
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("img");
    testkit::backup::synth_image(&img, 9, false).unwrap();
    let tar = t.path().join("b.tar");
    run(Path::new(me), &["create", s(&img), "-o", s(&tar), "-q"]);
    // The reader is gone before `list` starts: its first write meets a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = Command::new(me)
        .args(["list", s(&tar)])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let st = c.wait().unwrap();
    assert_eq!(st.signal(), Some(13), "{st:?}: {err}");
    assert_eq!(err, "");
}
