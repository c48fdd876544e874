//! Every backup-crypt command prints one JSON document in the shared
//! envelope with `--json`, table-driven, for cryptimg and ext4 images.

use std::process::Command;

use testkit::backup::synth_image;

/// Runs `backup-crypt ARGS` (which must succeed) and returns its JSON
/// document, checked to be in the shared envelope for `command`.
fn run_json(command: &str, args: &[&str]) -> serde_json::Value {
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
    assert_eq!(v["command"], command, "{command}: {v}");
    v
}

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
        let v = run_json(command, args);
        if *command == "list" {
            // Times are numbers, as in the ext4 listing.
            let e = v["members"].as_array().and_then(|a| a.first()).cloned().unwrap_or_default();
            assert!(e["mtime"].is_i64() && e["mtime_nsec"].is_u64(), "list: times are numbers: {e}");
        }
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

/// The same table for an ext4 image (`mkfs-crypt create --format ext4`) and
/// its archive, with exact counts.
#[test]
fn every_command_prints_the_json_envelope_for_ext4() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let (k, src, img, tar, restored) = (p("k"), p("src"), p("e.img"), p("e.tar"), p("restored.img"));
    std::fs::create_dir_all(t.path().join("src/d")).unwrap();
    std::fs::write(t.path().join("src/a"), b"hello").unwrap();
    std::fs::write(t.path().join("src/d/b"), vec![7u8; 5000]).unwrap();
    let mkfs = testkit::workspace_bin("mkfs-crypt");
    for args in [
        vec!["keygen", &k],
        vec!["create", "--format", "ext4", "--root", &src, "--key-file", &k, "--quiet", &img],
    ] {
        let o = Command::new(&mkfs).args(&args).env_remove("SOURCE_DATE_EPOCH").output().unwrap();
        assert!(o.status.success(), "mkfs-crypt {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let table: Vec<(&str, Vec<&str>)> = vec![
        ("create", vec!["create", &img, "-o", &tar, "--json"]),
        ("list", vec!["list", &tar, "--json"]),
        ("verify", vec!["verify", &tar, "--json"]),
        ("restore", vec!["restore", &tar, &restored, "--json"]),
    ];
    let mut docs = std::collections::HashMap::new();
    for (command, args) in &table {
        let v = run_json(command, args);
        docs.insert(*command, v);
    }
    let (c, l, v, r) = (&docs["create"], &docs["list"], &docs["verify"], &docs["restore"]);
    // 2 encrypted files: 1 + 2 blocks of ciphertext.
    assert_eq!(c["encrypted_files"], 2, "{c}");
    assert_eq!(c["ciphertext_bytes"], 3 * 4096, "{c}");
    assert_eq!(c["archive_bytes"].as_u64(), Some(std::fs::metadata(&tar).unwrap().len()), "{c}");
    assert_eq!(v["archive_bytes"], c["archive_bytes"], "{v}");
    assert_eq!(v["ciphertext_bytes"], c["ciphertext_bytes"], "{v}");
    assert_eq!(v["members"], c["members"], "{v}");
    assert_eq!(v["manifest"]["backup_id"], c["backup_id"], "{v}");
    assert_eq!(l["members"].as_array().unwrap().len() as u64, c["members"].as_u64().unwrap(), "{l}");
    let b = l["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "file" && m["size"] == 5000)
        .unwrap_or_else(|| panic!("{l}"));
    assert_eq!(b["encrypted"], true);
    assert_eq!(b["stored_bytes"], 2 * 4096);
    assert!(b["mtime"].is_i64() && b["mtime_nsec"].is_u64(), "times are numbers: {b}");
    assert_eq!(r["files"], 2, "{r}");
    assert_eq!(r["members"], c["members"], "{r}");
}
