//! Index of base backups: which extent blocks each one holds and where, for
//! `create --since` (what need not be stored again) and `restore --base` /
//! `verify --base` (where referenced blocks are).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{ExtentKey, Manifest};
use super::scan::{scan, Kind, Member, Sink};
use super::segments::Coverage;
use crate::error::{Error, Result};
use crate::BLOCK_SIZE;
use fscrypt::context::EXTENT_CTX_LEN;

/// Opens a base backup, which must be a regular file: its stored data is
/// read back by offset. Shared with the ext4 bases (`ops::ext4::base`).
pub(crate) fn open_base(path: &Path) -> Result<File> {
    let f = File::open(path).map_err(|e| Error::io(format!("opening base backup {}", path.display()), e))?;
    let md = f.metadata().map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
    if !md.is_file() {
        return Err(Error::Invalid(format!(
            "base backup {} is not a regular file (bases are read back by offset)",
            path.display()
        )));
    }
    Ok(f)
}

/// Names the base backup in an error found while reading it.
pub(crate) fn in_base(path: &Path, e: Error) -> Error {
    match e {
        Error::Corrupt { kind, mut at } => {
            at.what = format!("base backup {}: {}", path.display(), at.what);
            Error::Corrupt { kind, at }
        }
        e => e,
    }
}

pub(crate) fn given_twice(path: &Path, id: &str) -> Error {
    Error::Invalid(format!("base backup {} was given twice (backup id {id})", path.display()))
}

/// Where some blocks of an extent are stored in a base archive.
#[derive(Clone, Copy, Debug)]
struct Piece {
    off: u32,
    count: u32,
    file: usize,
    at: u64,
}

/// The blocks of base backups.
#[derive(Default)]
pub struct BaseIndex {
    files: Vec<(PathBuf, File)>,
    pub manifests: Vec<Manifest>,
    pieces: HashMap<[u8; EXTENT_CTX_LEN], (ExtentKey, Vec<Piece>)>,
    /// Every block any base refers to, stored or referenced in turn.
    known: HashMap<[u8; EXTENT_CTX_LEN], (ExtentKey, Coverage)>,
}

struct IndexSink<'a> {
    idx: &'a mut BaseIndex,
    file: usize,
}

impl Sink for IndexSink<'_> {
    fn member(&mut self, m: &Member) -> Result<()> {
        if let Kind::File { items } = &m.kind {
            for it in items {
                let e = self.idx.known.entry(it.ext.ctx).or_insert_with(|| (it.ext, Coverage::default()));
                if e.0 == it.ext {
                    e.1.add(it.off, it.count);
                }
            }
        }
        Ok(())
    }

    fn stored(&mut self, m: &Member, item: usize, blk: u32, data: &[u8], _crc: u32, at: u64) -> Result<()> {
        let Kind::File { items } = &m.kind else { return Ok(()) };
        let Some(it) = items.get(item) else { return Ok(()) };
        let e = self.idx.pieces.entry(it.ext.ctx).or_insert_with(|| (it.ext, Vec::new()));
        if e.0 != it.ext {
            return Ok(());
        }
        let p = Piece {
            off: it.off + blk,
            count: (data.len() / BLOCK_SIZE) as u32,
            file: self.file,
            at,
        };
        // Merge with the previous chunk of the same item.
        if let Some(last) = e.1.last_mut() {
            if last.file == p.file && last.off + last.count == p.off && last.at + u64::from(last.count) * BLOCK_SIZE as u64 == p.at {
                last.count += p.count;
                return Ok(());
            }
        }
        e.1.push(p);
        Ok(())
    }
}

impl BaseIndex {
    /// Reads and fully verifies each base archive (regular files only: their
    /// blocks are read back by offset).
    pub fn load(paths: &[PathBuf]) -> Result<BaseIndex> {
        let mut idx = BaseIndex::default();
        for p in paths {
            idx.add(p)?;
        }
        Ok(idx)
    }

    fn add(&mut self, path: &Path) -> Result<()> {
        let f = open_base(path)?;
        let reader = f.try_clone().map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let file = self.files.len();
        let report = scan(BufReader::with_capacity(1 << 20, reader), &mut IndexSink { idx: self, file }).map_err(|e| in_base(path, e))?;
        if self.manifests.iter().any(|m| m.backup_id == report.manifest.backup_id) {
            return Err(given_twice(path, &report.manifest.backup_id));
        }
        self.files.push((path.to_path_buf(), f));
        self.manifests.push(report.manifest);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// True when a base with this backup id was given.
    pub fn has_backup(&self, id: &str) -> bool {
        self.manifests.iter().any(|m| m.backup_id == id)
    }

    /// True when some base refers to blocks `off..off+count` of `key`
    /// (stored there or in its own base).
    pub fn knows(&self, key: &ExtentKey, off: u32, count: u32) -> bool {
        self.known.get(&key.ctx).is_some_and(|(k, c)| k == key && c.covers(off, count))
    }

    /// True when the bases store blocks `off..off+count` of `key`.
    pub fn holds(&self, key: &ExtentKey, off: u32, count: u32) -> bool {
        self.runs(key, off, count).is_some()
    }

    fn runs(&self, key: &ExtentKey, off: u32, count: u32) -> Option<Vec<(Piece, u32, u32)>> {
        let (k, pieces) = self.pieces.get(&key.ctx)?;
        if k != key {
            return None;
        }
        let end = off + count;
        let mut cur = off;
        let mut out = Vec::new();
        while cur < end {
            let p = pieces.iter().find(|p| p.off <= cur && cur < p.off + p.count)?;
            let n = (p.off + p.count).min(end) - cur;
            out.push((*p, cur, n));
            cur += n;
        }
        Some(out)
    }

    /// Reads blocks `off..off+count` of `key` from the bases into `buf`;
    /// `Ok(false)` when they are not all there.
    pub fn read(&self, key: &ExtentKey, off: u32, count: u32, buf: &mut Vec<u8>) -> Result<bool> {
        let Some(runs) = self.runs(key, off, count) else { return Ok(false) };
        buf.clear();
        buf.resize(count as usize * BLOCK_SIZE, 0);
        for (p, cur, n) in runs {
            let (path, f) = &self.files[p.file];
            let dst = &mut buf[(cur - off) as usize * BLOCK_SIZE..(cur - off + n) as usize * BLOCK_SIZE];
            f.read_exact_at(dst, p.at + u64::from(cur - p.off) * BLOCK_SIZE as u64)
                .map_err(|e| Error::io(format!("reading base backup {}", path.display()), e))?;
        }
        Ok(true)
    }
}
