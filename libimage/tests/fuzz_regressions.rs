//! Replays every input the fuzz targets found (`testdata/fuzz/expected.tsv`)
//! through the targets' own drivers (`fuzz/drivers.rs`): each must give its
//! recorded outcome, without a panic.

#[path = "../../fuzz/drivers.rs"]
mod drivers;

use std::path::PathBuf;

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fuzz");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut n = 0;
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [target, file, outcome] = cols[..] else {
            panic!("bad line in expected.tsv: {line:?}");
        };
        let data = std::fs::read(dir.join(file)).unwrap();
        let accepted = match target {
            "superblock" => drivers::superblock(&data),
            "metadata" => drivers::metadata(&data),
            "image_open" => drivers::image_open(&data),
            "tar_import" => drivers::tar_import(&data),
            "backup_archive" => drivers::backup_archive(&data),
            other => panic!("unknown fuzz target {other:?}"),
        };
        let want = match outcome {
            "accepted" => true,
            "refused" => false,
            other => panic!("unknown outcome {other:?}"),
        };
        assert_eq!(accepted, want, "{target} {file}");
        n += 1;
    }
    assert!(n > 0, "expected.tsv lists no inputs");
}

/// The drivers accept real inputs (so a refusal above means something).
#[test]
fn drivers_accept_valid_inputs() {
    let clean = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fsck/clean.img")).unwrap();
    let mut with_flag = vec![0u8];
    with_flag.extend_from_slice(&clean);
    assert!(drivers::image_open(&with_flag));
    let mut slot0 = vec![0u8];
    slot0.extend_from_slice(&clean[..4096]);
    let mut slot1 = vec![1u8];
    slot1.extend_from_slice(&clean[4096..8192]);
    assert!(drivers::superblock(&slot0) || drivers::superblock(&slot1));
}
