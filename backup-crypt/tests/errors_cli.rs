//! Error text: an I/O cause is printed once, and a damaged archive gets an
//! archive hint (not one about checking an image).

use std::process::Command;

use testkit::backup::synth_image;

#[test]
fn an_io_error_prints_its_cause_once() {
    let o = Command::new(env!("CARGO_BIN_EXE_backup-crypt"))
        .args(["list", "/nonexistent/archive.tar"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_damaged_archive_is_not_told_to_check_an_image() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let (img, tar) = (p("src.img"), p("main.tar"));
    synth_image(t.path().join("src.img").as_path(), 11, false).unwrap();
    let bin = env!("CARGO_BIN_EXE_backup-crypt");
    let o = Command::new(bin).args(["create", &img, "-o", &tar, "--quiet"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let good = std::fs::read(&tar).unwrap();
    let mut damaged = 0;
    // Flip one byte at a time through the archive until ten restores fail as damage.
    for at in (0..good.len()).step_by(97) {
        let mut b = good.clone();
        b[at] ^= 0x10;
        let bad = p("bad.tar");
        std::fs::write(&bad, &b).unwrap();
        let dest = t.path().join("r.img");
        let _ = std::fs::remove_file(&dest);
        let o = Command::new(bin)
            .args(["restore", &bad, dest.to_str().unwrap(), "--quiet"])
            .output()
            .unwrap();
        if o.status.code() != Some(4) {
            continue;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("hint:") && err.contains("archive"), "byte {at}: {err}");
        assert!(
            !err.contains("image"),
            "byte {at}: a hint about an image for a damaged archive: {err}"
        );
        damaged += 1;
        if damaged == 10 {
            break;
        }
    }
    assert_eq!(damaged, 10, "too few flips were detected as damage");
}
