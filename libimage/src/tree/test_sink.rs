//! Test-only: an [`EntrySink`] that copies any source through a
//! [`TreeWriter`] (compiled only for libimage's unit tests).

use std::collections::HashSet;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::tree::write::{TreeWriter, WriteStats};
use crate::tree::{EntrySink, Meta, SourceEntry, SourceKind};

/// An [`EntrySink`] that writes every entry through a [`TreeWriter`]:
/// creates missing parent directories (mode 0755), and skips all-zero 4 KiB
/// blocks of file data so holes stay holes.
pub struct CopySink {
    writer: TreeWriter,
    made: HashSet<Vec<Vec<u8>>>,
}

impl CopySink {
    /// Wraps `writer`.
    pub fn new(writer: TreeWriter) -> Self {
        CopySink {
            writer,
            made: HashSet::new(),
        }
    }

    /// Finishes the writer (directory metadata) and returns its statistics.
    pub fn finish(self) -> Result<WriteStats> {
        self.writer.finish()
    }
}

impl EntrySink for CopySink {
    fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
        let implicit = Meta {
            mode: libc::S_IFDIR | 0o755,
            ..Meta::default()
        };
        for i in 1..e.path.len() {
            if self.made.insert(e.path[..i].to_vec()) {
                self.writer.dir(&e.path[..i], &implicit)?;
            }
        }
        match e.kind {
            SourceKind::Dir => {
                self.writer.dir(&e.path, &e.meta)?;
                self.made.insert(e.path);
                Ok(())
            }
            SourceKind::File { size, content } => {
                let f = self.writer.create_file(&e.path)?;
                let mut block = [0u8; 4096];
                let mut off = 0u64;
                while off < size {
                    let n = (size - off).min(block.len() as u64) as usize;
                    content
                        .read_exact(&mut block[..n])
                        .map_err(|err| Error::io("reading source file", err))?;
                    if block[..n].iter().any(|&b| b != 0) {
                        f.write_all_at(&block[..n], off)
                            .map_err(|err| Error::io("writing output file", err))?;
                    }
                    off += n as u64;
                }
                self.writer.finish_file(&e.path, f, size, &e.meta)
            }
            SourceKind::Symlink { target } => self.writer.symlink(&e.path, &target, &e.meta),
            SourceKind::HardLink { target } => self.writer.hard_link(&e.path, &target),
            SourceKind::Special => self.writer.special(&e.path, &e.meta),
        }
    }
}
