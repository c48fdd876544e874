//! Every mkfs-crypt command's `--json` output is one document in the shared
//! envelope (`format_version`, `tool`, `command`), table-driven.

use std::process::Command;

fn run_json(args: &[&str], from_stderr: bool) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_mkfs-crypt"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("CRYPTIMG_FAIL_AFTER_WRITES")
        .output()
        .unwrap();
    assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let text = if from_stderr { &o.stderr } else { &o.stdout };
    serde_json::from_slice(text).unwrap_or_else(|e| panic!("mkfs-crypt {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(text)))
}

#[test]
fn every_command_prints_the_json_envelope() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src/d")).unwrap();
    std::fs::write(t.path().join("src/a"), b"hello").unwrap();
    std::fs::write(t.path().join("src/d/b"), vec![7u8; 10000]).unwrap();
    let (k, k2, img, src) = (p("k"), p("k2"), p("i.img"), p("src"));
    let table: Vec<(&str, Vec<&str>)> = vec![
        ("keygen", vec!["keygen", &k, "--json"]),
        ("keygen", vec!["keygen", &k2, "--json"]),
        ("keyid", vec!["keyid", &k, "--json"]),
        ("create", vec!["create", &img, "--root", &src, "--key-file", &k, "--json"]),
        ("snapshot", vec!["snapshot", &img, "--from", "main", "--name", "s2", "--json"]),
        (
            "update",
            vec![
                "update",
                &img,
                "--snapshot",
                "s2",
                "--root",
                &src,
                "--key-file",
                &k,
                "--rewrite-all",
                "--json",
            ],
        ),
        (
            "rekey",
            vec![
                "rekey",
                &img,
                "--snapshot",
                "s2",
                "--old-key-file",
                &k,
                "--new-key-file",
                &k2,
                "--json",
            ],
        ),
        ("delete", vec!["delete", &img, "--snapshot", "s2", "--json"]),
        ("compact", vec!["compact", &img, "--json"]),
    ];
    for (command, args) in &table {
        let v = run_json(args, false);
        assert_eq!(v["format_version"], 1, "{command}: {v}");
        assert_eq!(v["tool"], "mkfs-crypt", "{command}: {v}");
        assert_eq!(v["command"], *command, "{command}: {v}");
        assert!(v.as_object().unwrap().len() > 3, "{command}: no result in {v}");
    }
    // `keygen -` writes the key to stdout, so its JSON goes to stderr.
    let o = Command::new(env!("CARGO_BIN_EXE_mkfs-crypt"))
        .args(["keygen", "-", "--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!((v["format_version"].as_u64(), v["command"].as_str()), (Some(1), Some("keygen")));
    assert_eq!(v["key_id"].as_str().map(str::len), Some(32), "{v}");
}
