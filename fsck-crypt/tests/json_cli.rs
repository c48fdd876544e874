//! Every fsck-crypt command but `cat` (which writes file bytes) prints one
//! JSON document in the shared envelope with `--json`, table-driven.

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
