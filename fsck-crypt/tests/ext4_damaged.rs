//! Issue 10, test 5: 2,000 damaged copies (seeded byte flips and
//! truncations) of a small kernel-made fscrypt ext4 image go through
//! `check` (keyless and keyed, with --data), `ls` (root and the encrypted
//! directory) and `backup create` (into memory), in-process.
//!
//! Asserted for every run: no panic (each run is on its own thread; a
//! panic is a dropped channel), no hang (each run finishes within
//! [`RUN_LIMIT`]), bounded memory (the global allocator is `cap::Cap`; each
//! run may grow the heap by at most [`MEM_LIMIT`], past which allocation
//! fails and the test binary aborts). Outcomes may be a report or a typed
//! error; which one is counted and printed.

use std::alloc::System;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cap::Cap;
use libimage::engine::image::Keyring;
use libimage::ops::ext4::{self, check::Ext4CheckOptions};
use testkit::kernel::{self, LoopMount};
use testkit::TestRng;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const RUNS: usize = 2000;
const RUN_LIMIT: Duration = Duration::from_secs(10);
/// Largest heap growth allowed in one run on the 2 MiB image.
const MEM_LIMIT: usize = 8 << 20;
const IMAGE_SIZE: u64 = 2 << 20;

/// A 2 MiB image the kernel filled: an encrypted dir with small files, a
/// fragmented file, fast and slow symlinks, a FIFO, a subdir, and a
/// 300-entry (htree) directory.
fn kernel_image(dir: &Path, key: &[u8; 64]) -> PathBuf {
    let img = dir.join("small.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(IMAGE_SIZE).unwrap();
    drop(f);
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-I", "256", "-N", "512", "-O", "encrypt,^has_journal"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let mut m = LoopMount::new(&img, false).unwrap();
    let id = m.add_key(key).unwrap();
    let enc = m.join("enc");
    fs::create_dir(&enc).unwrap();
    kernel::set_policy(&enc, &id).unwrap();
    fs::write(enc.join("hello"), b"hello world").unwrap();
    fs::write(enc.join("four-k"), vec![7u8; 4096]).unwrap();
    let frag = fs::File::create(enc.join("fragmented")).unwrap();
    for i in 0..12u64 {
        std::os::unix::fs::FileExt::write_all_at(&frag, &[i as u8; 100], i * 8192).unwrap();
    }
    drop(frag);
    std::os::unix::fs::symlink("hello", enc.join("fast")).unwrap();
    std::os::unix::fs::symlink("t".repeat(300), enc.join("slow")).unwrap();
    fs::create_dir(enc.join("sub")).unwrap();
    fs::write(enc.join("sub/inner"), b"inner").unwrap();
    fs::hard_link(enc.join("hello"), enc.join("sub/hello-link")).unwrap();
    let st = Command::new("mkfifo").arg(enc.join("fifo")).status().unwrap();
    assert!(st.success());
    fs::create_dir(enc.join("many")).unwrap();
    for i in 0..300 {
        fs::write(enc.join(format!("many/n{i:03}")), b"").unwrap();
    }
    fs::write(m.join("plain"), b"unencrypted").unwrap();
    m.unmount().unwrap();
    kernel::e2fsck_fn(&img).unwrap();
    img
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One run (check keyless or keyed, ls twice, backup) under the caps;
/// returns a short outcome label.
fn run(path: &Path, key: Option<&Path>) -> String {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let k = key.map(Path::to_path_buf);
    let base = ALLOC.allocated();
    let _ = ALLOC.set_limit(base.saturating_add(MEM_LIMIT));
    let h = std::thread::spawn(move || {
        let keys = match k {
            Some(k) => Keyring::new(vec![libimage::engine::keyfile::load_key(&k).unwrap()]),
            None => Keyring::default(),
        };
        let outcome = match ext4::check::check(&p, &keys, Ext4CheckOptions { data: true }) {
            Ok(r) if r.exit_code == 0 => "clean".to_string(),
            Ok(r) => format!("findings:{}", r.findings.first().map(|f| f.code.as_str()).unwrap_or("?")),
            Err(e) => format!("error:{}", if e.is_corruption() { "corrupt" } else { "refused/io" }),
        };
        for dir in ["", "enc"] {
            if let Ok(fs_) = ext4::reader::open(&p) {
                let _ = ext4::list::ls(&fs_, dir, &keys);
            }
        }
        extra_run(&p);
        let _ = tx.send(outcome);
    });
    let got = rx.recv_timeout(RUN_LIMIT);
    let _ = ALLOC.set_limit(usize::MAX);
    match got {
        Ok(o) => {
            let _ = h.join();
            o
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("a run did not finish within {RUN_LIMIT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a run panicked"),
    }
}

/// `backup-crypt create` of the damaged image into memory (its archive, if
/// any, is dropped).
fn extra_run(p: &Path) {
    let mut out = Vec::new();
    let _ = ext4::backup::create(p, &mut out, None, &libimage::progress::Quiet);
}

#[test]
fn two_thousand_damaged_ext4_images() {
    testkit::require_kernel!();
    let t = tempfile::tempdir().unwrap();
    let mut raw = [0u8; 64];
    TestRng::new(0xe4).fill(&mut raw);
    let keyf = t.path().join("key");
    fs::write(&keyf, raw).unwrap();
    let img = kernel_image(t.path(), &raw);
    let base = fs::read(&img).unwrap();
    assert_eq!(run(&img, None), "clean");
    assert_eq!(run(&img, Some(&keyf)), "clean");
    let victim = t.path().join("victim.img");
    let mut rng = TestRng::new(0x0da_4a9e);
    let started = Instant::now();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..RUNS {
        let mut bytes = base.clone();
        let what = if rng.next_u64().is_multiple_of(8) {
            let len = rng.next_u64() % base.len() as u64;
            bytes.truncate(len as usize);
            format!("truncate to {len}")
        } else {
            // Most flips land in the first 512 KiB, where the metadata is.
            let span = if rng.next_u64().is_multiple_of(4) {
                base.len() as u64
            } else {
                512 << 10
            };
            let off = (rng.next_u64() % span) as usize;
            let mask = (rng.next_u64() % 255) as u8 + 1;
            bytes[off] ^= mask;
            format!("flip {mask:#04x} at {off}")
        };
        fs::write(&victim, &bytes).unwrap();
        let o = run(&victim, (i % 2 == 1).then_some(keyf.as_path()));
        let _ = what;
        *outcomes.entry(o).or_default() += 1;
    }
    eprintln!("{RUNS} damaged ext4 images in {:?}: {outcomes:?}", started.elapsed());
    assert!(
        outcomes.keys().any(|k| k.starts_with("error:corrupt")),
        "no damage was ever reported"
    );
}
