//! Corruption campaign: 2,000 seeded single-byte flips and truncations of a
//! real image (the committed `clean.img` fixture), checked in-process, plus a
//! few hundred through the real binary.
//!
//! Asserted for every run:
//! - no panic (in-process: the check runs on its own thread, whose panic is
//!   seen as a dropped channel; binary: exit code never 101);
//! - no hang (each run must finish within [`RUN_LIMIT`]);
//! - bounded memory: this test binary's global allocator is `cap::Cap`, and
//!   every in-process check runs with a limit of [`MEM_LIMIT`] bytes above
//!   what was allocated before it; an allocation past that fails, which
//!   aborts the test binary (so an unbounded allocation cannot pass);
//! - detection: every flip inside a superblock slot or the live metadata
//!   region, every flip inside an extent (the runs use `--data`), and every
//!   truncation gives at least one finding of warning or error severity;
//! - no operational error (exit 8) for damaged bytes: corruption is exit 4.

use std::alloc::System;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cap::Cap;
use libimage::engine::image::{load_metadata, newest, read_slots, Keyring};
use libimage::ops::check::{check, CheckOptions, Report};
use libimage::progress::Quiet;
use libimage::BLOCK_SIZE;
use testkit::TestRng;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const RUNS: usize = 2000;

/// `CRYPTIMG_CAMPAIGN_RUNS` / `CRYPTIMG_CAMPAIGN_SEED` scale the campaign up
/// for soak runs (`tools/soak.sh`); `cargo test` uses 2,000 runs, seed 0x5eedf5c4.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
const BINARY_RUNS: usize = 300;
const RUN_LIMIT: Duration = Duration::from_secs(10);
/// Largest allocation growth allowed during one check of the ~40 KiB image.
const MEM_LIMIT: usize = 4 << 20;

fn testdata() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fsck")
}

/// Byte ranges of the clean image where any change must be detected (with
/// `--data`): both superblock slots, the live metadata region, every extent.
fn sensitive(image: &Path) -> Vec<(u64, u64)> {
    let f = fs::File::open(image).unwrap();
    let sb = newest(&read_slots(&f)).unwrap();
    let meta = load_metadata(&f, &sb).unwrap();
    let bs = BLOCK_SIZE as u64;
    let mut r = vec![(0, 2 * bs), (sb.meta_start * bs, (sb.meta_start + sb.meta_blocks) * bs)];
    for e in meta.extents.values() {
        r.push((e.start * bs, e.end() * bs));
    }
    r
}

enum Mutation {
    Flip { off: u64, mask: u8 },
    Truncate { len: u64 },
}

fn mutate(rng: &mut TestRng, base: &[u8]) -> (Vec<u8>, Mutation) {
    let mut img = base.to_vec();
    if rng.next_u64().is_multiple_of(8) {
        let len = rng.next_u64() % base.len() as u64;
        img.truncate(len as usize);
        (img, Mutation::Truncate { len })
    } else {
        let off = rng.next_u64() % base.len() as u64;
        let mask = (rng.next_u64() % 255) as u8 + 1;
        img[off as usize] ^= mask;
        (img, Mutation::Flip { off, mask })
    }
}

fn must_detect(m: &Mutation, sensitive: &[(u64, u64)], full: u64) -> bool {
    match m {
        Mutation::Flip { off, .. } => sensitive.iter().any(|&(a, b)| (a..b).contains(off)),
        Mutation::Truncate { len } => *len < full,
    }
}

fn describe(m: &Mutation) -> String {
    match m {
        Mutation::Flip { off, mask } => format!("flip {mask:#04x} at byte {off}"),
        Mutation::Truncate { len } => format!("truncate to {len} bytes"),
    }
}

/// The memory cap is process-wide: one capped check at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one check on its own thread under the memory cap and the time limit.
fn checked_run(path: &Path, with_key: bool) -> Report {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let base = ALLOC.allocated();
    let _ = ALLOC.set_limit(base.saturating_add(MEM_LIMIT));
    let h = std::thread::spawn(move || {
        let keys = if with_key {
            Keyring::new(vec![libimage::engine::keyfile::load_key(&testdata().join("test.key")).unwrap()])
        } else {
            Keyring::default()
        };
        let opts = CheckOptions {
            data: true,
            ..CheckOptions::default()
        };
        let r = check(&p, &keys, &opts, &Quiet);
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let got = rx.recv_timeout(RUN_LIMIT);
    let _ = ALLOC.set_limit(usize::MAX);
    match got {
        Ok(Ok(r)) => {
            let _ = h.join();
            r
        }
        Ok(Err(e)) => panic!("operational error on damaged bytes: {e}"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("check did not finish within {RUN_LIMIT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("check panicked"),
    }
}

#[test]
fn two_thousand_flips_and_truncations() {
    let clean = testdata().join("clean.img");
    let base = fs::read(&clean).unwrap();
    let sens = sensitive(&clean);
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("victim.img");
    let runs = env_or("CRYPTIMG_CAMPAIGN_RUNS", RUNS as u64) as usize;
    let mut rng = TestRng::new(env_or("CRYPTIMG_CAMPAIGN_SEED", 0x5eed_f5c4));
    let started = Instant::now();
    let (mut detected, mut required) = (0, 0);
    for i in 0..runs {
        let (img, m) = mutate(&mut rng, &base);
        fs::write(&path, &img).unwrap();
        let r = checked_run(&path, i % 2 == 1);
        assert!(
            r.exit_code == 0 || r.exit_code == 4,
            "run {i} ({}): exit {}",
            describe(&m),
            r.exit_code
        );
        if r.problems() > 0 {
            detected += 1;
        }
        if must_detect(&m, &sens, base.len() as u64) {
            required += 1;
            assert!(r.problems() > 0, "run {i}: {} was not detected: {:#?}", describe(&m), r.findings);
        }
    }
    eprintln!("{runs} runs in {:?}: {detected} detected, {required} had to be", started.elapsed());
    assert!(
        required > runs / 4,
        "too few runs hit sensitive bytes ({required}); the campaign is not testing much"
    );
}

#[test]
fn binary_never_panics_on_damaged_images() {
    let clean = testdata().join("clean.img");
    let base = fs::read(&clean).unwrap();
    let key = testdata().join("test.key");
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("victim.img");
    let mut rng = TestRng::new(0xb1_7a5e);
    for i in 0..BINARY_RUNS {
        let (img, m) = mutate(&mut rng, &base);
        fs::write(&path, &img).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fsck-crypt"));
        cmd.arg("check").arg(&path).arg("--data").arg("--json");
        if i % 2 == 0 {
            cmd.arg("--key-file").arg(&key);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("run {i} ({}): fsck-crypt hung", describe(&m));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let code = status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 4,
            "run {i} ({}): exit {code} (101 = panic, 8 = operational)",
            describe(&m)
        );
    }
}

#[test]
fn hostile_counts_do_not_allocate() {
    // A metadata stream claiming 2^40 extents must be refused by size, not
    // by trying to allocate: the check runs under the memory cap.
    let t = tempfile::tempdir().unwrap();
    let clean = testdata().join("clean.img");
    let path = t.path().join("hostile.img");
    let f = fs::File::open(&clean).unwrap();
    let sb = newest(&read_slots(&f)).unwrap();
    let meta = load_metadata(&f, &sb).unwrap();
    let mut stream = meta.to_bytes();
    // Allocation range count at offset 16 of the stream.
    stream[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let mut img = fs::read(&clean).unwrap();
    let region = libimage::format::metablock::encode(&stream, sb.meta_start, sb.generation);
    let off = (sb.meta_start as usize) * BLOCK_SIZE;
    img[off..off + region.len()].copy_from_slice(&region);
    let nsb = libimage::format::superblock::Superblock {
        meta_crc: libimage::format::bytes::crc32c(&stream),
        ..sb.clone()
    };
    let slot = nsb.slot() as usize * BLOCK_SIZE;
    img[slot..slot + BLOCK_SIZE].copy_from_slice(&nsb.to_bytes());
    fs::write(&path, &img).unwrap();
    let r = checked_run(&path, false);
    assert_eq!(r.codes(), vec!["E_META_DECODE"], "{:#?}", r.findings);
}
