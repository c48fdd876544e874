//! `--from-image`: one snapshot of a cryptimg image as a stream of
//! [`SourceEntry`]s. Names, symlink targets and contents are decrypted with
//! the cryptimg keys (every extent's key is needed) and handed to the ext4
//! sink, which re-encrypts them under per-file ext4 keys. Contents stream one
//! cryptimg extent at a time.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use super::size::{Estimate, Kind};
use crate::engine::image::{Access, Image, Keyring};
use crate::error::{Error, Result};
use crate::format::inode::{Body, MapEntry};
use crate::ops::read::TreeReader;
use crate::tree::{EntrySink, FileData, Run, SourceEntry, SourceKind};
use crate::BLOCK_SIZE;

fn open(path: &Path, snapshot: Option<&str>, keys: &Keyring) -> Result<(Image, String)> {
    let img = Image::open(path, Access::ReadOnly)?;
    let snap = img.snapshot(snapshot)?;
    keys.require(&img.keys_needed(snap))?;
    let name = snap.name.clone();
    Ok((img, name))
}

/// Called per entry: (path, inode number, first path of an inode already seen).
type Visit<'f> = dyn FnMut(&[Vec<u8>], u64, Option<&[Vec<u8>]>) -> Result<()> + 'f;

/// Walks the snapshot depth-first (children sorted by real name), calling
/// `f(path, inode number, first path of an inode already seen)`.
fn walk(r: &TreeReader<'_>, f: &mut Visit<'_>) -> Result<()> {
    let mut seen: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut path = Vec::new();
    f(&path, r.snap.root, None)?;
    walk_dir(r, r.snap.root, &mut path, &mut seen, f)
}

fn walk_dir(r: &TreeReader<'_>, dir: u64, path: &mut Vec<Vec<u8>>, seen: &mut HashMap<u64, Vec<Vec<u8>>>, f: &mut Visit<'_>) -> Result<()> {
    for l in r.list(dir)? {
        path.push(l.name);
        let ino = l.inode.ino;
        let res = if l.inode.is_dir() {
            f(path, ino, None).and_then(|()| walk_dir(r, ino, path, seen, f))
        } else if let Some(first) = seen.get(&ino) {
            f(path, ino, Some(first))
        } else {
            if l.inode.nlink > 1 {
                seen.insert(ino, path.clone());
            }
            f(path, ino, None)
        };
        path.pop();
        res?;
    }
    Ok(())
}

/// Counts what the export will write (for the image size).
pub(super) fn estimate(path: &Path, snapshot: Option<&str>, keys: &Keyring) -> Result<Estimate> {
    let (img, name) = open(path, snapshot, keys)?;
    let snap = img.snapshot(Some(&name))?;
    let r = TreeReader::new(&img, snap, keys);
    let mut est = Estimate::default();
    walk(&r, &mut |p, ino, first| {
        let i = r.inode(ino)?;
        let xb: usize = i
            .xattrs
            .iter()
            .map(|(n, v)| 16 + n.len().next_multiple_of(4) + v.len().next_multiple_of(4))
            .sum();
        let (kind, blocks) = match (&i.body, first) {
            (_, Some(_)) => (Kind::HardLink, 0),
            (Body::Dir { .. }, _) => (Kind::Dir, 0),
            (Body::File { map }, _) => (Kind::File, map.iter().map(|m| u64::from(m.blocks)).sum()),
            (Body::Symlink { .. }, _) => (Kind::Symlink(i.size as usize), 0),
            (Body::Special, _) => (Kind::Special, 0),
        };
        est.add(p.last().map_or(1, Vec::len), kind, blocks, xb);
        Ok(())
    })?;
    Ok(est)
}

/// Feeds snapshot `snapshot` (the only one when None) of the cryptimg image
/// at `path` into `sink`. Refuses up front unless `keys` holds every key the
/// snapshot needs.
pub fn export_snapshot(path: &Path, snapshot: Option<&str>, keys: &Keyring, sink: &mut dyn EntrySink) -> Result<()> {
    let (img, name) = open(path, snapshot, keys)?;
    let snap = img.snapshot(Some(&name))?;
    let r = TreeReader::new(&img, snap, keys);
    walk(&r, &mut |p, ino, first| {
        let i = r.inode(ino)?;
        let meta = i.meta();
        if let Some(target) = first {
            let kind = SourceKind::HardLink { target: target.to_vec() };
            return sink.entry(SourceEntry {
                path: p.to_vec(),
                meta,
                kind,
            });
        }
        match &i.body {
            Body::Dir { .. } => sink.entry(SourceEntry {
                path: p.to_vec(),
                meta,
                kind: SourceKind::Dir,
            }),
            Body::Symlink { .. } => {
                let target = r.read_link(ino)?;
                sink.entry(SourceEntry {
                    path: p.to_vec(),
                    meta,
                    kind: SourceKind::Symlink { target },
                })
            }
            Body::Special => sink.entry(SourceEntry {
                path: p.to_vec(),
                meta,
                kind: SourceKind::Special,
            }),
            Body::File { map } => {
                let mut content = ExtentReader {
                    img: &img,
                    keys,
                    map,
                    size: i.size,
                    pos: 0,
                    buf: Vec::new(),
                    buf_start: 0,
                    err: None,
                };
                let res = sink.entry(SourceEntry {
                    path: p.to_vec(),
                    meta,
                    kind: SourceKind::File {
                        size: i.size,
                        content: &mut content,
                    },
                });
                match content.err.take() {
                    Some(e) => Err(e),
                    None => res,
                }
            }
        }
    })
}

/// A file's plaintext as a reader: one decrypted cryptimg extent in memory
/// at a time, zeros for holes.
struct ExtentReader<'a> {
    img: &'a Image,
    keys: &'a Keyring,
    map: &'a [MapEntry],
    size: u64,
    pos: u64,
    /// Decrypted bytes of the map entry covering `buf_start..`.
    buf: Vec<u8>,
    buf_start: u64,
    /// The library error behind an io::Error handed to the sink.
    err: Option<Error>,
}

impl ExtentReader<'_> {
    /// The map entry covering byte `pos`, or where the hole at `pos` ends.
    fn at(&self, pos: u64) -> std::result::Result<&MapEntry, u64> {
        let bs = BLOCK_SIZE as u64;
        let blk = pos / bs;
        match self.map.iter().find(|m| blk >= m.lblk && blk < m.lblk + u64::from(m.blocks)) {
            Some(m) => Ok(m),
            None => Err(self
                .map
                .iter()
                .map(|m| m.lblk.saturating_mul(bs))
                .filter(|&s| s > pos)
                .min()
                .unwrap_or(self.size)
                .min(self.size)),
        }
    }

    fn load(&mut self, m: &MapEntry) -> Result<()> {
        self.img.read_mapped_plain(self.keys, m, &mut self.buf)?;
        self.buf_start = m.lblk * BLOCK_SIZE as u64;
        Ok(())
    }
}

impl FileData for ExtentReader<'_> {
    fn run(&mut self) -> io::Result<Run> {
        let bs = BLOCK_SIZE as u64;
        Ok(match self.at(self.pos) {
            Ok(m) => Run::Data {
                end: (m.lblk + u64::from(m.blocks)).saturating_mul(bs).min(self.size),
            },
            Err(end) => Run::Hole { end },
        })
    }

    fn skip_hole(&mut self, to: u64) -> io::Result<()> {
        match self.at(self.pos) {
            Err(end) if to >= self.pos && to <= end => {
                self.pos = to;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no hole to skip to offset {to}"),
            )),
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let in_buf = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            let blk = self.pos / BLOCK_SIZE as u64;
            let map = self.map;
            match map.iter().find(|m| blk >= m.lblk && blk < m.lblk + u64::from(m.blocks)) {
                Some(m) => {
                    if let Err(e) = self.load(m) {
                        let msg = e.to_string();
                        self.err = Some(e);
                        return Err(io::Error::other(msg));
                    }
                }
                None => {
                    // A hole: zeros up to the next mapped block or the end.
                    let next = map
                        .iter()
                        .map(|m| m.lblk * BLOCK_SIZE as u64)
                        .filter(|&s| s > self.pos)
                        .min()
                        .unwrap_or(self.size)
                        .min(self.size);
                    let n = ((next - self.pos) as usize).min(out.len());
                    out[..n].fill(0);
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
        }
        let off = (self.pos - self.buf_start) as usize;
        let avail = (self.buf.len() - off).min((self.size - self.pos) as usize);
        let n = avail.min(out.len());
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// The policy key id of a snapshot (the key the ext4 export is written under).
pub fn snapshot_policy(path: &Path, snapshot: Option<&str>) -> Result<fscrypt::KeyId> {
    let img = Image::open(path, Access::ReadOnly)?;
    Ok(img.snapshot(snapshot)?.policy)
}
