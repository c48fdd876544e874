//! Every backup-crypt command prints one JSON document in the shared
//! envelope with `--json`, table-driven.

use std::process::Command;

use testkit::backup::synth_image;

#[test]
fn every_command_prints_the_json_envelope() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let (img, tar, restored) = (p("src.img"), p("main.tar"), p("restored.img"));
    synth_image(t.path().join("src.img").as_path(), 3, true).unwrap();
    let table: Vec<(&str, Vec<&str>)> = vec![
        ("create", vec!["create", &img, "-o", &tar, "--snapshot", "main", "--json"]),
        ("list", vec!["list", &tar, "--json"]),
        ("verify", vec!["verify", &tar, "--json"]),
        ("restore", vec!["restore", &tar, &restored, "--json"]),
    ];
    for (command, args) in &table {
        let o = Command::new(env!("CARGO_BIN_EXE_backup-crypt"))
            .args(args)
            .env_remove("CRYPTIMG_FAIL_AFTER_WRITES")
            .output()
            .unwrap();
        assert!(o.status.success(), "backup-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("backup-crypt {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
        assert_eq!(v["format_version"], 1, "{command}: {v}");
        assert_eq!(v["tool"], "backup-crypt", "{command}: {v}");
        assert_eq!(v["command"], *command, "{command}: {v}");
    }
}

/// `list --key-file WRONG` warns naming the given key id and the ids the
/// archive needs (it used to print no-key names silently).
#[test]
fn list_with_a_wrong_key_warns() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let (img, tar, w) = (p("src.img"), p("main.tar"), p("w"));
    synth_image(t.path().join("src.img").as_path(), 5, false).unwrap();
    std::fs::write(&w, [0x5au8; 64]).unwrap();
    let bin = env!("CARGO_BIN_EXE_backup-crypt");
    let o = Command::new(bin).args(["create", &img, "-o", &tar, "--quiet"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin).args(["list", &tar, "--key-file", &w]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&Command::new(bin).args(["list", &tar, "--json"]).output().unwrap().stdout).unwrap();
    let needed = v["manifest"]["keys_needed"].as_array().unwrap();
    assert!(!needed.is_empty());
    assert!(err.contains("warning: key ") && err.contains("is not a key of"), "{err}");
    for id in needed {
        assert!(err.contains(id.as_str().unwrap()), "{err}");
    }
}
