//! Bad argument values found after parsing exit with the usage code (16),
//! the same as values clap rejects.

use std::process::Command;

#[test]
fn out_of_range_size_and_bad_suffix_share_the_usage_code() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let (k, img, src) = (p("k"), p("i.img"), p("src"));
    let mkfs = env!("CARGO_BIN_EXE_mkfs-crypt");
    assert!(Command::new(mkfs).args(["keygen", &k]).output().unwrap().status.success());
    for size in ["5X", "1000", "4K", "99999999999T"] {
        let o = Command::new(mkfs)
            .args(["create", &img, "--root", &src, "--key-file", &k, "--size", size])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(16), "--size {size}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!Path::new(&img).exists(), "--size {size} left an image");
    }
}

use std::path::Path;
