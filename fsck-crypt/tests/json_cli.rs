//! Every fsck-crypt command but `cat` (which writes file bytes) prints one
//! JSON document in the shared envelope with `--json`, table-driven, on
//! cryptimg and on ext4 images.

use std::process::Command;

fn run(bin: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).env_remove("SOURCE_DATE_EPOCH").output().unwrap()
}

#[test]
fn every_command_prints_the_json_envelope() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src/d")).unwrap();
    std::fs::write(t.path().join("src/a"), b"hello").unwrap();
    std::fs::write(t.path().join("src/d/b"), b"world").unwrap();
    let (k, img, src) = (p("k"), p("i.img"), p("src"));
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    for args in [
        vec!["keygen", &k],
        vec!["create", &img, "--root", &src, "--key-file", &k, "--quiet"],
    ] {
        let o = run(&mkfs, &args);
        assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let (out, tar) = (p("out"), p("x.tar"));
    let table: Vec<(&str, Vec<&str>, bool)> = vec![
        ("info", vec!["info", &img, "--json"], false),
        ("ls", vec!["ls", &img, "--json"], false),
        ("ls", vec!["ls", &img, "d", "--key-file", &k, "--json"], false),
        ("check", vec!["check", &img, "--key-file", &k, "--data", "--json"], false),
        ("extract", vec!["extract", &img, &out, "--key-file", &k, "--json"], false),
        ("extract", vec!["extract", &img, "-", "--key-file", &k, "--json"], true),
    ];
    let fsck = env!("CARGO_BIN_EXE_fsck-crypt");
    for (command, args, on_stderr) in &table {
        let o = if *on_stderr {
            Command::new(fsck)
                .args(args)
                .stdout(std::fs::File::create(&tar).unwrap())
                .output()
                .unwrap()
        } else {
            run(fsck.as_ref(), args)
        };
        assert!(o.status.success(), "fsck-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        let text = if *on_stderr { &o.stderr } else { &o.stdout };
        let v: serde_json::Value = serde_json::from_slice(text)
            .unwrap_or_else(|e| panic!("fsck-crypt {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(text)));
        assert_eq!(v["format_version"], 1, "{command}: {v}");
        assert_eq!(v["tool"], "fsck-crypt", "{command}: {v}");
        assert_eq!(v["command"], *command, "{command}: {v}");
    }
    // ls with a key gives the real name and exact size.
    let o = run(fsck.as_ref(), &["ls", &img, "d", "--key-file", &k, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["entries"][0]["name"], "b", "{v}");
    assert_eq!(v["entries"][0]["size"], 5, "{v}");
}

/// The same table on an ext4 image (`mkfs-crypt create --format ext4`), plus
/// the fields scripts rely on: exact sizes, the summary counts, and findings
/// as data (code, severity, hint).
#[test]
fn every_command_prints_the_json_envelope_on_ext4() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src/d")).unwrap();
    std::fs::write(t.path().join("src/a"), b"hello").unwrap();
    std::fs::write(t.path().join("src/d/b"), b"world!").unwrap();
    let (k, w, img, src) = (p("k"), p("w"), p("e.img"), p("src"));
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    for args in [
        vec!["keygen", &k],
        vec!["keygen", &w],
        vec!["create", "--format", "ext4", "--root", &src, "--key-file", &k, "--quiet", &img],
    ] {
        let o = run(&mkfs, &args);
        assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let (out, tar) = (p("out"), p("x.tar"));
    let fsck = env!("CARGO_BIN_EXE_fsck-crypt");
    let json = |args: &[&str], on_stderr: bool, code: i32| -> serde_json::Value {
        let o = if on_stderr {
            Command::new(fsck)
                .args(args)
                .stdout(std::fs::File::create(&tar).unwrap())
                .output()
                .unwrap()
        } else {
            run(fsck.as_ref(), args)
        };
        assert_eq!(
            o.status.code(),
            Some(code),
            "fsck-crypt {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = if on_stderr { &o.stderr } else { &o.stdout };
        let v: serde_json::Value = serde_json::from_slice(text)
            .unwrap_or_else(|e| panic!("fsck-crypt {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(text)));
        assert_eq!(v["format_version"], 1, "{args:?}: {v}");
        assert_eq!(v["tool"], "fsck-crypt", "{args:?}: {v}");
        assert_eq!(v["command"], args[0], "{args:?}: {v}");
        v
    };
    let info = json(&["info", &img, "--json"], false, 0);
    assert_eq!(info["format"], "ext4");
    assert_eq!(info["block_size"], 4096);
    assert!(
        info["total_blocks"].as_u64().unwrap() > 0 && info["commit_time"].as_i64().unwrap() > 0,
        "{info}"
    );
    assert_eq!(info["encrypted_directories"][0]["path"], "/data", "{info}");
    assert_eq!(info["keys"][0]["files"], 2, "{info}");
    let ls = json(&["ls", &img, "--json"], false, 0);
    assert!(ls["entries"].as_array().unwrap().iter().any(|e| e["name"] == "data"), "{ls}");
    let ls = json(&["ls", &img, "data/d", "--key-file", &k, "--json"], false, 0);
    assert_eq!(ls["entries"][0]["name"], "b", "{ls}");
    assert_eq!(ls["entries"][0]["size"], 6, "{ls}");
    let check = json(&["check", &img, "--key-file", &k, "--data", "--json"], false, 0);
    assert_eq!(check["summary"]["errors"], 0, "{check}");
    assert!(check["summary"]["bytes_checked"]["data"].as_u64().unwrap() >= 8192, "{check}");
    assert_eq!(check["exit_code"], 0);
    // A wrong key is a finding, as data, and a key problem (exit 64), not damage.
    let bad = json(&["check", &img, "--key-file", &w, "--json"], false, 64);
    let f = &bad["findings"][0];
    assert_eq!(f["code"], "W_KEY_UNUSED", "{bad}");
    assert_eq!(f["severity"], "warning", "{bad}");
    assert!(
        !f["hint"].as_str().unwrap().is_empty() && !f["message"].as_str().unwrap().is_empty(),
        "{bad}"
    );
    assert_eq!(bad["summary"]["warnings"], 1, "{bad}");
    let x = json(&["extract", &img, &out, "--key-file", &k, "--json"], false, 0);
    assert_eq!((x["files"].as_u64(), x["dirs"].as_u64()), (Some(2), Some(4)), "{x}");
    let x = json(&["extract", &img, "-", "data/d", "--key-file", &k, "--json"], true, 0);
    assert_eq!((x["files"].as_u64(), x["dirs"].as_u64()), (Some(1), Some(3)), "{x}");
    assert_eq!(x["destination"], "standard output (pax tar)");
}
