//! Files that appear atomically: written under a temporary name in the same
//! directory, then renamed into place.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A temporary file next to its destination, renamed over it by
/// [`AtomicFile::persist`] and removed on drop otherwise: a new image or
/// archive appears whole or not at all, and a file it replaces stays intact
/// until the rename.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl AtomicFile {
    pub fn new(dest: &Path) -> Result<(AtomicFile, File)> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fname = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} is not a file path", dest.display())))?;
        let tmp = dir.join(format!(".{}.tmp-{}", fname.to_string_lossy(), std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok((
            AtomicFile {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            f,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.tmp
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
        fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::io(format!("renaming {} to {}", self.tmp.display(), self.dest.display()), e))?;
        self.done = true;
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
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
