//! Files that appear atomically: written under a temporary name in the same
//! directory, then renamed into place.
//!
//! Litter: a temporary file is removed when its [`AtomicFile`] is dropped
//! (an error, a panic that unwinds) and, in the tools, on SIGINT, SIGTERM and
//! SIGHUP ([`crate::engine::process::remove_temp_files_on_signals`] removes
//! every temporary file still [registered](remove_all_temp_files) and then
//! ends the process by the signal). Nothing can run on SIGKILL or a power
//! cut: those leave `.NAME.tmp-PID` next to the destination (the destination
//! itself is untouched, as the rename never happened); it is safe to delete.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::engine::lock::{self, LockGuard, LockMode};
use crate::error::{Error, Result};

/// Temporary files of this process not yet renamed into place or removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes every temporary file of this process and returns with the
/// registry still locked, so no rename can start afterwards: for a signal
/// handler that ends the process next.
pub fn remove_all_temp_files() -> MutexGuard<'static, Vec<PathBuf>> {
    let mut l = live();
    for p in l.drain(..) {
        let _ = fs::remove_file(&p);
    }
    l
}

/// A temporary file next to its destination, renamed over it by
/// [`AtomicFile::persist`] and removed on drop otherwise: a new image or
/// archive appears whole or not at all, and a file it replaces stays intact
/// until the rename.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
    /// The exclusive lock on the file being replaced ([`AtomicFile::replacing`]).
    _held: Option<(File, LockGuard)>,
}

impl AtomicFile {
    /// Like [`AtomicFile::new`], for replacing an existing image: takes the
    /// existing file's exclusive lock (`engine::lock`) for the whole
    /// operation, so no writer is working on the image being replaced.
    pub fn replacing(dest: &Path) -> Result<(AtomicFile, File)> {
        let held = lock::lock_path(dest, LockMode::Exclusive)?;
        let (mut a, f) = AtomicFile::new(dest)?;
        a._held = held;
        Ok((a, f))
    }

    pub fn new(dest: &Path) -> Result<(AtomicFile, File)> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fname = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} is not a file path", dest.display())))?;
        let tmp = dir.join(format!(".{}.tmp-{}", fname.to_string_lossy(), std::process::id()));
        let mut l = live();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        l.push(tmp.clone());
        drop(l);
        Ok((
            AtomicFile {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
                _held: None,
            },
            f,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes the temporary file's data to disk (fsync through a fresh
    /// descriptor: the writer may have consumed its own), for callers that
    /// wrote it through another handle; call it before [`persist`](Self::persist)
    /// so a crash never leaves a renamed but unwritten file.
    pub fn sync(&self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", self.tmp.display()), e))
    }

    /// Renames the temporary file into place (unless `replace`, refusing to
    /// replace a file that appeared meanwhile) and syncs the directory.
    pub fn persist(mut self, replace: bool) -> Result<()> {
        if !replace && self.dest.exists() {
            return Err(Error::Invalid(format!(
                "{} appeared meanwhile; not replacing it",
                self.dest.display()
            )));
        }
        let mut l = live();
        fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::io(format!("renaming {} to {}", self.tmp.display(), self.dest.display()), e))?;
        self.done = true;
        l.retain(|p| p != &self.tmp);
        drop(l);
        if let Some(d) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(d) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let mut l = live();
            let _ = fs::remove_file(&self.tmp);
            l.retain(|p| p != &self.tmp);
        }
    }
}
