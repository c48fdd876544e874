//! The kernel harness itself: guards undo what they did, also when a test
//! panics; keys are removed; errors are reported.

use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use testkit::kernel::{self, KeyGuard, LoopMount};

/// Whether `dir` is a mount point now (from /proc/self/mountinfo).
fn is_mounted(dir: &std::path::Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(d))
}

#[test]
fn loop_mount_is_undone_on_panic() {
    testkit::require_kernel!();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 16 << 20).unwrap();
    let mut seen: Option<PathBuf> = None;
    let mut busy: Option<fs::File> = None;
    let res = catch_unwind(AssertUnwindSafe(|| {
        let mut m = LoopMount::new(&img, false).unwrap();
        seen = Some(m.path().to_path_buf());
        assert!(is_mounted(m.path()));
        m.add_key(&[0x11; 64]).unwrap();
        // A file still open when the guard drops: every umount attempt
        // fails with EBUSY, so the guard must fall back to umount -l.
        busy = Some(fs::File::open(m.join("lost+found")).unwrap());
        panic!("deliberate");
    }));
    assert!(res.is_err());
    let dir = seen.unwrap();
    assert!(!is_mounted(&dir), "{} still mounted", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
    // Closing the last file lets the detached filesystem go.
    drop(busy);
}

#[test]
fn read_only_mount_refuses_writes_and_unmount_reports_ok() {
    // The same macro, by its module path.
    testkit::kernel::require!();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 16 << 20).unwrap();
    let m = LoopMount::new(&img, true).unwrap();
    let e = fs::write(m.join("x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    m.unmount().unwrap();
    let err = LoopMount::new(&tmp.path().join("missing.img"), true)
        .err()
        .expect("mounting a missing image fails");
    assert!(err.to_string().contains("mount"), "{err}");
}

#[test]
fn key_guard_removes_its_key() {
    testkit::require_kernel!();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 16 << 20).unwrap();
    let m = LoopMount::new(&img, false).unwrap();
    let dir = m.join("enc");
    fs::create_dir(&dir).unwrap();
    {
        let guard = KeyGuard::add(m.path(), &[0x22; 32]).unwrap();
        kernel::set_policy(&dir, &guard.id()).unwrap();
        fs::write(dir.join("f"), b"with the key").unwrap();
        assert_eq!(kernel::get_policy(&dir.join("f")).unwrap(), kernel::policy_v2(&guard.id()));
    }
    // The key is gone (and the kernel evicted the unused inodes): no new
    // names can be made, and the old one is shown in no-key form.
    let e = fs::write(dir.join("g"), b"no key").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOKEY), "{e}");
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1);
    assert_ne!(names[0], "f");
    // Removing a key that is not there is an error the caller sees.
    let e = kernel::remove_key(m.path(), &[0x33; 16]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOKEY), "{e}");
    m.unmount().unwrap();
    kernel::e2fsck_fn(&img).unwrap();
}

#[test]
fn e2fsck_reports_a_damaged_image() {
    testkit::require_kernel!();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 16 << 20).unwrap();
    kernel::e2fsck_fn(&img).unwrap();
    // Zero the root inode's mode: e2fsck -n must complain and exit non-zero.
    let (at, _) = kernel::inode_location(&img, 2).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0, 0], at).unwrap();
    drop(f);
    let out = kernel::e2fsck_fn(&img).unwrap_err();
    assert!(out.contains("e2fsck"), "{out}");
}

#[test]
fn availability_is_reported() {
    // Runs everywhere: either the harness works, or it says why not.
    match kernel::available() {
        Ok(()) => {}
        Err(reason) => {
            assert!(!reason.is_empty());
            let _ = io::Write::write_all(&mut io::stderr(), format!("kernel harness unavailable: {reason}\n").as_bytes());
        }
    }
}

/// What issue 9's "the kernel reads the tree" test does, with the kernel as
/// the writer too: the tricky tree plus a device, copied by `cp -a` into an
/// encrypted directory, then read back on a fresh read-only mount with the
/// key: `tree_equal` finds them equal (and, as a control, finds a difference
/// after one byte changes).
#[test]
fn tree_copied_in_through_the_kernel_reads_back_equal() {
    testkit::require_kernel!();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    testkit::make_tricky_tree(&src).unwrap();
    let dev = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("chardev"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_bits_truncate(0o640),
        dev,
    )
    .unwrap();
    testkit::stamp_times(&src, true).unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 96 << 20).unwrap();
    let key = [0x44u8; 64];

    let mut m = LoopMount::new(&img, false).unwrap();
    let id = m.add_key(&key).unwrap();
    let enc = m.join("data");
    fs::create_dir(&enc).unwrap();
    kernel::set_policy(&enc, &id).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(src.join("."))
        .arg(&enc)
        .status()
        .unwrap();
    assert!(st.success());
    m.unmount().unwrap();
    kernel::e2fsck_fn(&img).unwrap();

    let mut m = LoopMount::new(&img, true).unwrap();
    m.add_key(&key).unwrap();
    kernel::tree_equal(&src, &m.join("data")).unwrap();
    fs::write(src.join("sizes/one"), b"X").unwrap();
    let err = kernel::tree_equal(&src, &m.join("data")).unwrap_err();
    assert!(err.contains("sizes/one: content differs"), "{err}");
    m.unmount().unwrap();
}
