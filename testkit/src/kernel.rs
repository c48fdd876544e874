//! The kernel harness: tests that let Linux itself judge an ext4 image
//! (docs/TESTING.md, "Kernel oracle").
//!
//! - [`available`]/[`require`] (and [`require_kernel!`](crate::require_kernel)):
//!   root, a working `mount -o loop` of an `mkfs.ext4 -O encrypt` image, and
//!   FS_IOC_ADD_ENCRYPTION_KEY accepted on it; else one `SKIP:` line, or a
//!   failure under `CI=true`;
//! - [`LoopMount`]: a loop mount on a fresh directory, undone on drop (also
//!   while a test panics); [`KeyGuard`]: a key removed on drop;
//! - the fscrypt ioctls on paths: [`add_key`], [`remove_key`],
//!   [`set_policy`], [`get_policy`], [`get_nonce`];
//! - e2fsprogs: [`mkfs_ext4_encrypt`], [`e2fsck_fn`], [`debugfs`],
//!   [`inode_location`], [`inode_blocks`], [`read_block`];
//! - [`tree_equal`]: two trees compared in every detail the kernel keeps.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub use crate::tree::tree_equal;
use crate::{sys, tools};

/// ext4 block size used by these helpers (and by the ext4 writer).
pub const BLOCK: u64 = 4096;

/// FSCRYPT_POLICY_V2.
pub const POLICY_V2: u8 = 2;
/// FSCRYPT_MODE_AES_256_XTS (contents).
pub const MODE_AES_256_XTS: u8 = 1;
/// FSCRYPT_MODE_AES_256_CTS (filenames).
pub const MODE_AES_256_CTS: u8 = 4;
/// FSCRYPT_POLICY_FLAGS_PAD_32.
pub const FLAGS_PAD_32: u8 = 0x03;
/// FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY.
pub const REMOVAL_FILES_BUSY: u32 = 0x1;

/// A 16-byte fscrypt v2 master key identifier.
pub type KeyIdentifier = [u8; 16];

/// The tools the harness runs.
const TOOLS: [&str; 5] = ["mkfs.ext4", "mount", "umount", "e2fsck", "debugfs"];

/// Whether this machine can run kernel tests: `Ok`, or the reason it cannot.
/// Probed once per process (a throwaway 8 MiB image is formatted, loop-mounted,
/// given a key, and unmounted).
pub fn available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    if !crate::tree::running_as_root() {
        return Err("not root (loop mounts and fscrypt keys need root)".into());
    }
    for tool in TOOLS {
        if tools::find_tool(tool).is_none() {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let img = tmp.path().join("probe.img");
    mkfs_ext4_encrypt(&img, 8 << 20)?;
    let mut mount = LoopMount::new(&img, false).map_err(|e| format!("loop mount of an ext4 image failed: {e}"))?;
    // A throwaway key for a throwaway filesystem.
    mount
        .add_key(&[0x5a; 64])
        .map_err(|e| format!("the kernel refused FS_IOC_ADD_ENCRYPTION_KEY on ext4: {e}"))?;
    mount.unmount().map_err(|e| format!("unmounting the probe image: {e}"))
}

/// Whether the kernel tests can run; if not, [`tools::skip_or_fail`] for
/// `test` (one `SKIP:` line, or a panic under `CI=true`) and false.
///
/// # Panics
/// Under `CI=true` when the kernel facilities are missing.
pub fn require(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(reason) => {
            tools::skip_or_fail(test, &reason);
            false
        }
    }
}

/// `testkit::require_kernel!();` at the top of a test: returns from the test
/// (after one `SKIP:` line) when the kernel harness is unavailable, and
/// fails it under `CI=true`. Also reachable as `testkit::kernel::require!`.
#[macro_export]
macro_rules! require_kernel {
    () => {
        if !$crate::kernel::require(&$crate::current_test()) {
            return;
        }
    };
}
pub use crate::require_kernel as require;

/// Runs a command, returning its stdout, or an error with its stderr and
/// stdout when it cannot start or exits non-zero.
fn run(cmd: &mut Command) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{what}: {}\n{}{stdout}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// Creates (or truncates) `image` as a `size`-byte file and formats it with
/// `mkfs.ext4 -O encrypt`, 4096-byte blocks and 256-byte inodes (room for the
/// in-inode encryption context and nanosecond times, as the writer makes).
pub fn mkfs_ext4_encrypt(image: &Path, size: u64) -> Result<(), String> {
    let f = File::create(image).map_err(|e| format!("creating {}: {e}", image.display()))?;
    f.set_len(size).map_err(|e| format!("sizing {}: {e}", image.display()))?;
    drop(f);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-I", "256", "-O", "encrypt"])
        .arg(image))
    .map(drop)
}

/// Runs `e2fsck -fn` on `image`: `Ok` when it exits 0, else its exit status
/// and output.
pub fn e2fsck_fn(image: &Path) -> Result<(), String> {
    run(Command::new("e2fsck").arg("-fn").arg(image)).map(drop)
}

/// Runs `debugfs -R <request> image` (read-only) and returns its stdout.
/// debugfs reports many errors on stderr with exit status 0, so an output
/// with nothing on stdout and something on stderr is an error too.
pub fn debugfs(image: &Path, request: &str) -> Result<String, String> {
    let what = format!("debugfs -R {request:?} {}", image.display());
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // debugfs always prints its version banner on stderr; drop that line.
    let stderr: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || (stdout.trim().is_empty() && !stderr.is_empty()) {
        return Err(format!("{what}: {}: {}", out.status, stderr.join("\n")));
    }
    Ok(stdout)
}

/// Where inode `ino`'s raw bytes are in the image: (byte offset, inode size),
/// from `debugfs -R 'imap <ino>'` ("located at block B, offset 0xO") and the
/// superblock's inode size (`stats -h`).
pub fn inode_location(image: &Path, ino: u64) -> Result<(u64, usize), String> {
    let out = debugfs(image, &format!("imap <{ino}>"))?;
    let bad = || format!("unexpected `imap <{ino}>` output: {out:?}");
    let rest = out.split("located at block ").nth(1).ok_or_else(bad)?;
    let (block, rest) = rest.split_once(',').ok_or_else(bad)?;
    let block: u64 = block.trim().parse().map_err(|_| bad())?;
    let off = rest.split("offset 0x").nth(1).ok_or_else(bad)?;
    let off = off.split_whitespace().next().ok_or_else(bad)?;
    let off = u64::from_str_radix(off, 16).map_err(|_| bad())?;
    let stats = debugfs(image, "stats -h")?;
    let size = stats
        .lines()
        .find_map(|l| l.strip_prefix("Inode size:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no `Inode size:` in `stats -h` output: {stats:?}"))?;
    Ok((block * BLOCK + off, size))
}

/// The raw on-disk inode `ino` (its full inode-table slot), read from the image.
pub fn read_inode(image: &Path, ino: u64) -> Result<Vec<u8>, String> {
    let (at, size) = inode_location(image, ino)?;
    read_at(image, at, size)
}

/// The physical data blocks of inode `ino` in logical order, from
/// `debugfs -R 'blocks <ino>'` (holes are not listed).
pub fn inode_blocks(image: &Path, ino: u64) -> Result<Vec<u64>, String> {
    let out = debugfs(image, &format!("blocks <{ino}>"))?;
    out.split_whitespace()
        .map(|b| b.parse().map_err(|_| format!("unexpected `blocks <{ino}>` output: {out:?}")))
        .collect()
}

/// Physical block `block` of the image.
pub fn read_block(image: &Path, block: u64) -> Result<Vec<u8>, String> {
    read_at(image, block * BLOCK, BLOCK as usize)
}

fn read_at(image: &Path, at: u64, len: usize) -> Result<Vec<u8>, String> {
    let f = File::open(image).map_err(|e| format!("opening {}: {e}", image.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at)
        .map_err(|e| format!("reading {len} bytes at {at} of {}: {e}", image.display()))?;
    Ok(buf)
}

fn open(p: &Path) -> io::Result<File> {
    File::open(p).map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", p.display())))
}

// The ioctl wrappers return the kernel's error unchanged, so that callers
// can match its errno (ENOKEY, ENOTEMPTY, EEXIST, ...).

/// FS_IOC_ADD_ENCRYPTION_KEY: adds the raw v2 master key `raw` (16 to 64
/// bytes) to the filesystem holding `path`; returns the identifier the kernel
/// computed. The key is never logged; the ioctl buffer is wiped.
pub fn add_key(path: &Path, raw: &[u8]) -> io::Result<KeyIdentifier> {
    sys::add_key(&open(path)?, raw)
}

/// FS_IOC_REMOVE_ENCRYPTION_KEY for key `id` on the filesystem holding
/// `path`; returns the removal status flags ([`REMOVAL_FILES_BUSY`], ...).
pub fn remove_key(path: &Path, id: &KeyIdentifier) -> io::Result<u32> {
    sys::remove_key(&open(path)?, *id)
}

/// The 24-byte `struct fscrypt_policy_v2` cryptimg uses: AES-256-XTS
/// contents, AES-256-CTS filenames, PAD_32, key `id`.
pub fn policy_v2(id: &KeyIdentifier) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[..4].copy_from_slice(&[POLICY_V2, MODE_AES_256_XTS, MODE_AES_256_CTS, FLAGS_PAD_32]);
    p[8..].copy_from_slice(id);
    p
}

/// FS_IOC_SET_ENCRYPTION_POLICY: gives the empty directory `dir` the
/// [`policy_v2`] of key `id` (the key must have been added).
pub fn set_policy(dir: &Path, id: &KeyIdentifier) -> io::Result<()> {
    sys::set_policy_v2(&open(dir)?, &policy_v2(id))
}

/// FS_IOC_GET_ENCRYPTION_POLICY_EX: the raw policy of `path` (24 bytes for v2).
pub fn get_policy(path: &Path) -> io::Result<Vec<u8>> {
    sys::get_policy_ex(&open(path)?)
}

/// FS_IOC_GET_ENCRYPTION_NONCE: the nonce of the encrypted file or directory
/// `path` (a symlink cannot be opened for an ioctl: read its context from the
/// image instead).
pub fn get_nonce(path: &Path) -> io::Result<[u8; 16]> {
    sys::get_nonce(&open(path)?)
}

/// A key added to a mounted filesystem, removed again on drop.
pub struct KeyGuard {
    path: PathBuf,
    id: KeyIdentifier,
    armed: bool,
}

impl KeyGuard {
    /// Adds the raw key `raw` to the filesystem holding `path`.
    pub fn add(path: &Path, raw: &[u8]) -> io::Result<KeyGuard> {
        let id = add_key(path, raw)?;
        Ok(KeyGuard {
            path: path.to_path_buf(),
            id,
            armed: true,
        })
    }

    /// The identifier the kernel computed for the key.
    pub fn id(&self) -> KeyIdentifier {
        self.id
    }

    /// Removes the key now; returns the removal status flags.
    pub fn remove(mut self) -> io::Result<u32> {
        self.armed = false;
        remove_key(&self.path, &self.id)
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the filesystem may already be unmounted, which
            // removes every key with it.
            let _ = remove_key(&self.path, &self.id);
        }
    }
}

/// An ext4 image loop-mounted (`mount -o loop[,ro]`) on a fresh temporary
/// directory. Dropping it (also during a panic) removes the keys added
/// through it, unmounts (retrying, then `umount -l`) and removes the
/// directory. Use [`LoopMount::unmount`] to see unmount errors.
pub struct LoopMount {
    dir: PathBuf,
    keys: Vec<KeyIdentifier>,
    mounted: bool,
}

impl LoopMount {
    /// Mounts `image` (read-only when `read_only`).
    pub fn new(image: &Path, read_only: bool) -> io::Result<LoopMount> {
        let dir = tempfile::Builder::new().prefix("testkit-mnt-").tempdir()?.keep();
        let opts = if read_only { "loop,ro" } else { "loop" };
        let res = run(Command::new("mount").args(["-t", "ext4", "-o", opts]).arg(image).arg(&dir));
        if let Err(e) = res {
            let _ = fs::remove_dir(&dir);
            return Err(io::Error::other(e));
        }
        Ok(LoopMount {
            dir,
            keys: Vec::new(),
            mounted: true,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `path()` joined with `rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// Adds a raw v2 key to this filesystem (removed again on drop) and
    /// returns the kernel's identifier for it.
    pub fn add_key(&mut self, raw: &[u8]) -> io::Result<KeyIdentifier> {
        let id = add_key(&self.dir, raw)?;
        if !self.keys.contains(&id) {
            self.keys.push(id);
        }
        Ok(id)
    }

    /// Removes a key added with [`LoopMount::add_key`]; returns the removal
    /// status flags.
    pub fn remove_key(&mut self, id: &KeyIdentifier) -> io::Result<u32> {
        self.keys.retain(|k| k != id);
        remove_key(&self.dir, id)
    }

    /// Removes the keys and unmounts, reporting a failure (after which the
    /// mount was detached with `umount -l`).
    pub fn unmount(mut self) -> io::Result<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> io::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        for id in std::mem::take(&mut self.keys) {
            let _ = remove_key(&self.dir, &id);
        }
        let mut last = String::new();
        for attempt in 0..5u64 {
            match run(Command::new("umount").arg(&self.dir)) {
                Ok(_) => {
                    self.mounted = false;
                    break;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
        }
        let result = if self.mounted {
            let lazy = run(Command::new("umount").arg("-l").arg(&self.dir));
            self.mounted = false;
            Err(io::Error::other(match lazy {
                Ok(_) => format!("unmount failed, detached with umount -l: {last}"),
                Err(e) => format!("unmount failed: {last}; umount -l failed too: {e}"),
            }))
        } else {
            Ok(())
        };
        let _ = fs::remove_dir(&self.dir);
        result
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("testkit: {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bytes() {
        let p = policy_v2(&[7; 16]);
        assert_eq!(p[..8], [2, 1, 4, 3, 0, 0, 0, 0]);
        assert_eq!(p[8..], [7; 16]);
    }
}
