//! `create -o EXISTING` refuses without `--force` (like `mkfs-crypt create`),
//! and an archive is never written to a terminal.

use std::process::{Command, Stdio};

use testkit::backup::synth_image;

#[test]
fn create_refuses_an_existing_output_without_force() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let (img, tar) = (p("src.img"), p("out.tar"));
    synth_image(t.path().join("src.img").as_path(), 7, false).unwrap();
    std::fs::write(&tar, b"precious").unwrap();
    let bin = env!("CARGO_BIN_EXE_backup-crypt");
    let o = Command::new(bin).args(["create", &img, "-o", &tar, "--quiet"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&tar).unwrap(), b"precious");
    let o = Command::new(bin)
        .args(["create", &img, "-o", &tar, "--quiet", "--force"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(std::fs::read(&tar).unwrap(), b"precious");
}

#[test]
fn create_refuses_to_write_an_archive_to_a_terminal() {
    if !testkit::require_tool("script") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("src.img");
    synth_image(&img, 8, false).unwrap();
    let cmd = format!("{} create {} -o -; echo EXIT=$?", env!("CARGO_BIN_EXE_backup-crypt"), img.display());
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("refusing to write an archive to a terminal") && text.contains("EXIT=8"),
        "{text}"
    );
}
