//! SIGINT and SIGTERM during `backup-crypt restore` and `create -o` remove
//! the temporary file (issue 11 §5); the process dies by the signal.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::backup::synth_image;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temps(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-"))
        .collect()
}

fn wait_for_temp(dir: &Path) -> PathBuf {
    let t0 = Instant::now();
    loop {
        if let Some(p) = temps(dir).pop() {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no temporary file appeared in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn signo(sig: &str) -> i32 {
    if sig == "INT" {
        2
    } else {
        15
    }
}

/// `restore - NEW.img` with the archive stalled half-way on stdin.
#[test]
fn interrupted_restore_leaves_no_temporary_image() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("src.img");
    synth_image(&img, 5, false).unwrap();
    let tar = std::fs::read({
        let p = t.path().join("a.tar");
        let o = Command::new(env!("CARGO_BIN_EXE_backup-crypt"))
            .args(["create", s(&img), "-o", s(&p), "-q"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        p
    })
    .unwrap();
    for sig in ["INT", "TERM"] {
        let out = t.path().join(format!("out-{sig}"));
        std::fs::create_dir(&out).unwrap();
        let dest = out.join("restored.img");
        let mut c = Command::new(env!("CARGO_BIN_EXE_backup-crypt"))
            .args(["restore", "-", s(&dest), "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        stdin.write_all(&tar[..tar.len() / 2]).unwrap();
        stdin.flush().unwrap();
        let tmp = wait_for_temp(&out);
        kill(c.id(), sig);
        let st = c.wait().unwrap();
        drop(stdin);
        assert_eq!(st.signal(), Some(signo(sig)), "{st:?}");
        assert!(!tmp.exists(), "{} left behind", tmp.display());
        assert_eq!(temps(&out), Vec::<PathBuf>::new());
        assert!(!dest.exists());
    }
}

/// `create IMG -o OUT --since FIFO`: stalled opening the base (a FIFO with no
/// writer) after the output's temporary file exists.
#[test]
fn interrupted_create_leaves_no_temporary_archive() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("src.img");
    synth_image(&img, 6, false).unwrap();
    let fifo = t.path().join("base.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for sig in ["INT", "TERM"] {
        let out = t.path().join(format!("out-{sig}"));
        std::fs::create_dir(&out).unwrap();
        let dest = out.join("backup.tar");
        let mut c = Command::new(env!("CARGO_BIN_EXE_backup-crypt"))
            .args(["create", s(&img), "-o", s(&dest), "--since", s(&fifo), "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tmp = wait_for_temp(&out);
        kill(c.id(), sig);
        let st = c.wait().unwrap();
        assert_eq!(st.signal(), Some(signo(sig)), "{st:?}");
        assert!(!tmp.exists(), "{} left behind", tmp.display());
        assert_eq!(temps(&out), Vec::<PathBuf>::new());
        assert!(!dest.exists());
    }
}
