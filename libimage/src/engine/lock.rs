//! One writer per image: an advisory `flock(2)` lock on the image file,
//! exclusive for every command that writes it, shared for readers.
//!
//! - Writers (`Image::open` with [`Access::ReadWrite`](super::image::Access),
//!   `check --repair`, `create --force` over an existing image, restore into
//!   an existing image) hold an exclusive lock from before they read the
//!   superblock until the image is dropped, so a second writer can never work
//!   from a generation that is about to be superseded.
//! - Readers hold a shared lock: a writer cannot start while a reader decrypts
//!   blocks that a commit would free, and a reader cannot start mid-write.
//! - A conflicting request fails at once with [`Error::InUse`], naming the
//!   holder's pid when `/proc/locks` shows it (see [`holder_pid`]), unless
//!   [`set_wait`] asked to block until the lock is free.
//!
//! `flock` locks belong to an open file description, so two opens of one
//! image inside one process would lock each other out. The lock is therefore
//! kept per process in a small registry keyed by (device, inode): a nested
//! open in the same process (the checker's repair step, a test holding an
//! image open) shares the lock already held. Two threads of one process are
//! not serialised by this lock; the tools are single-writer processes.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

/// Which lock a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Readers: many at once, no writer.
    Shared,
    /// Writers: nobody else.
    Exclusive,
}

static WAIT: AtomicBool = AtomicBool::new(false);

/// Makes later lock requests of this process block until the lock is free
/// instead of failing with [`Error::InUse`].
pub fn set_wait(wait: bool) {
    WAIT.store(wait, Ordering::Relaxed);
}

struct Held {
    /// A duplicate of the descriptor that holds the `flock` lock.
    file: File,
    exclusive: bool,
    users: usize,
}

type Key = (u64, u64);

static HELD: Mutex<Option<HashMap<Key, Held>>> = Mutex::new(None);

/// A held lock; released when the last guard of this process for the image drops.
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    key: Key,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockGuard(dev {}, ino {})", self.key.0, self.key.1)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = held.as_mut() {
            if let Some(h) = map.get_mut(&self.key) {
                h.users -= 1;
                if h.users == 0 {
                    // Unlock explicitly: the caller's descriptor shares the
                    // lock and may outlive the guard.
                    let _ = h.file.unlock();
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// Locks the image open as `file` (at `path`, for messages) in `mode`.
pub fn lock(file: &File, path: &Path, mode: LockMode) -> Result<LockGuard> {
    let md = file.metadata().map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
    let key = (md.dev(), md.ino());
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let map = held.get_or_insert_with(HashMap::new);
    if let Some(h) = map.get_mut(&key) {
        if mode == LockMode::Exclusive && !h.exclusive {
            if let Err(e) = acquire(&h.file, path, key, LockMode::Exclusive) {
                // flock(2) may drop the shared lock while converting it:
                // take it back for the guards still holding it.
                let _ = h.file.try_lock_shared();
                return Err(e);
            }
            h.exclusive = true;
        }
        h.users += 1;
        return Ok(LockGuard { key });
    }
    let dup = file
        .try_clone()
        .map_err(|e| Error::io(format!("duplicating the descriptor of {}", path.display()), e))?;
    acquire(&dup, path, key, mode)?;
    map.insert(
        key,
        Held {
            file: dup,
            exclusive: mode == LockMode::Exclusive,
            users: 1,
        },
    );
    Ok(LockGuard { key })
}

/// Opens `path` read-only and locks it, when it exists: for commands that
/// replace an image by renaming a new file over it (`create --force`).
/// `Ok(None)` when there is nothing at `path` to lock.
pub fn lock_path(path: &Path, mode: LockMode) -> Result<Option<(File, LockGuard)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let g = lock(&file, path, mode)?;
    Ok(Some((file, g)))
}

fn acquire(file: &File, path: &Path, key: Key, mode: LockMode) -> Result<()> {
    let ctx = || format!("locking {}", path.display());
    if WAIT.load(Ordering::Relaxed) {
        return match mode {
            LockMode::Shared => file.lock_shared(),
            LockMode::Exclusive => file.lock(),
        }
        .map_err(|e| Error::io(ctx(), e));
    }
    // The holder may finish between our attempt and the look-up of its pid:
    // then the lock is free, so try again rather than name nobody.
    for attempt in 0..3 {
        let r = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = holder_pid(key);
                if pid.is_some() || attempt == 2 {
                    return Err(Error::InUse {
                        image: path.display().to_string(),
                        pid,
                    });
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(ctx(), e)),
        }
    }
    Err(Error::InUse {
        image: path.display().to_string(),
        pid: None,
    })
}

/// The pid of a process holding a `flock` lock on the file `(dev, ino)`, from
/// `/proc/locks` (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INO START END`, device
/// numbers in hex). The kernel records the pid of the process that took the
/// lock; the tools never fork while holding one, so it names the holder.
/// `None` when `/proc` is not mounted, the holder lives in another pid
/// namespace (shown as pid 0 or not at all), or the line is gone already.
pub fn holder_pid(key: Key) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let (dev, ino) = key;
    // Linux's new_encode_dev layout: 12 bits of major, 20 of minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Waiters are listed as "N: -> FLOCK ..."; skip them.
        if f.get(1) != Some(&"FLOCK") || f.get(5) != Some(&want.as_str()) {
            return None;
        }
        f.get(4).and_then(|p| p.parse::<u32>().ok()).filter(|&p| p != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_locks_in_one_process_share_and_a_second_description_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        std::fs::write(&p, b"x").unwrap();
        let f1 = File::open(&p).unwrap();
        let g1 = lock(&f1, &p, LockMode::Shared).unwrap();
        let f2 = File::open(&p).unwrap();
        // Same process: shared, then upgraded to exclusive on the held descriptor.
        let g2 = lock(&f2, &p, LockMode::Exclusive).unwrap();
        // Another open file description (as another process would have) is locked out.
        let other = File::open(&p).unwrap();
        assert!(matches!(other.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
        let md = f1.metadata().unwrap();
        assert_eq!(holder_pid((md.dev(), md.ino())), Some(std::process::id()));
        drop(g1);
        assert!(other.try_lock_shared().is_err(), "still held by g2");
        drop(g2);
        other.try_lock().unwrap();
        let e = lock(&f1, &p, LockMode::Shared).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("is in use by another process (pid {})", std::process::id())),
            "{e}"
        );
    }
}
