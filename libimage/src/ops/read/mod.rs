//! Reading a snapshot's tree: names (decrypted with a key, or as no-key names
//! without one), symlink targets, file data; one file to a stream ([`cat`]),
//! and extraction of the whole tree or chosen paths ([`select`]) to a
//! directory or a pax tar stream ([`tar_out`]).

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::engine::image::{Image, Keyring};
use crate::error::{Error, Location, Result};
use crate::format::inode::{Body, Inode};
use crate::format::snapshot::Snapshot;
use crate::progress::Progress;
use crate::tree::write::{TreeWriter, WriteStats};
use crate::BLOCK_SIZE;
use fscrypt::{nokey_name, KeyId};

pub mod cat;
pub mod select;
pub mod tar_out;

pub use cat::cat;

/// What `fsck-crypt extract` reports (both formats; `--json`): where the
/// tree went and what went in.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExtractReport {
    /// The destination directory, or `standard output (pax tar)`.
    pub destination: String,
    #[serde(flatten)]
    pub stats: WriteStats,
}

/// One entry of `fsck-crypt ls` (both formats). In JSON (`ls --json`) the
/// name is `name` when it is UTF-8, else `name_base64` (its exact bytes).
#[derive(Clone, Debug)]
pub struct LsEntry {
    /// The shown name: real with the key, no-key without, raw if unencrypted.
    pub name: Vec<u8>,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

impl serde::Serialize for LsEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine;
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(6))?;
        match std::str::from_utf8(&self.name) {
            Ok(n) => m.serialize_entry("name", n)?,
            Err(_) => m.serialize_entry("name_base64", &base64::engine::general_purpose::STANDARD.encode(&self.name))?,
        }
        m.serialize_entry("ino", &self.ino)?;
        m.serialize_entry("mode", &self.mode)?;
        m.serialize_entry("uid", &self.uid)?;
        m.serialize_entry("gid", &self.gid)?;
        m.serialize_entry("size", &self.size)?;
        m.end()
    }
}

/// Lists `path` of a snapshot (resolved as a shell would, [`select::resolve`]):
/// a directory's entries sorted by shown name, or the one entry a file path
/// names.
pub fn ls(r: &TreeReader<'_>, path: &[u8]) -> Result<Vec<LsEntry>> {
    let chain = select::resolve(r, path)?;
    let ino = chain.last().map_or(r.snap.root, |(_, i)| *i);
    let target = r.inode(ino)?;
    let entry = |name: Vec<u8>, ino: u64, i: &Inode| LsEntry {
        name,
        ino,
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
        size: i.size,
    };
    if !target.is_dir() {
        let name = chain.last().map(|(n, _)| n.clone()).unwrap_or_default();
        return Ok(vec![entry(name, ino, target)]);
    }
    Ok(r.list(ino)?.into_iter().map(|l| entry(l.name, l.ino, l.inode)).collect())
}

/// Read access to one snapshot with a set of keys (possibly none).
pub struct TreeReader<'a> {
    pub img: &'a Image,
    pub snap: &'a Snapshot,
    pub keys: &'a Keyring,
    /// Receives the bytes [`TreeReader::read_file`] hands over ([`TreeReader::reporting`]).
    progress: Option<&'a dyn Progress>,
}

/// One listed directory entry.
pub struct Listed<'a> {
    /// The real name when the directory's key was given, else the no-key name.
    pub name: Vec<u8>,
    /// True when `name` is the decrypted name.
    pub decrypted: bool,
    pub ino: u64,
    pub inode: &'a Inode,
}

impl<'a> TreeReader<'a> {
    pub fn new(img: &'a Image, snap: &'a Snapshot, keys: &'a Keyring) -> Self {
        TreeReader {
            img,
            snap,
            keys,
            progress: None,
        }
    }

    /// The same reader, reporting the bytes each [`TreeReader::read_file`]
    /// hands over to `progress` as they are read.
    pub fn reporting<'b>(&self, progress: &'b dyn Progress) -> TreeReader<'b>
    where
        'a: 'b,
    {
        TreeReader {
            progress: Some(progress),
            ..*self
        }
    }

    pub fn inode(&self, ino: u64) -> Result<&'a Inode> {
        self.snap.inodes.get(&ino).ok_or_else(|| {
            Error::corrupt(
                crate::error::CorruptKind::Dangling { what: "inode", id: ino },
                format!("snapshot {:?}", self.snap.name),
                None,
            )
        })
    }

    fn at(&self, ino: u64) -> Location {
        Location {
            what: format!("snapshot {:?} inode {ino}", self.snap.name),
            offset: None,
        }
    }

    /// Lists a directory, sorted by displayed name.
    pub fn list(&self, dir: u64) -> Result<Vec<Listed<'a>>> {
        let d = self.inode(dir)?;
        let Body::Dir { ctx, entries } = &d.body else {
            return Err(Error::Invalid(format!("inode {dir} is not a directory")));
        };
        let cipher = self.keys.get(&ctx.key).map(|k| k.names_key(&ctx.nonce));
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let (name, decrypted) = match &cipher {
                Some(c) => (c.decrypt_name(&e.name).map_err(|_| Error::AuthFailed { at: self.at(dir) })?, true),
                None => (nokey_name(&e.name).into_bytes(), false),
            };
            out.push(Listed {
                name,
                decrypted,
                ino: e.ino,
                inode: self.inode(e.ino)?,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Resolves a `/`-separated path of real names (with the key) or no-key
    /// names (without it).
    pub fn lookup(&self, path: &[u8]) -> Result<u64> {
        let mut cur = self.snap.root;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let found = self.list(cur)?.into_iter().find(|l| l.name == comp);
            cur = found
                .map(|l| l.inode.ino)
                .ok_or_else(|| Error::Invalid(format!("no such file: {}", String::from_utf8_lossy(path))))?;
        }
        Ok(cur)
    }

    /// Decrypts a symlink target.
    pub fn read_link(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        let Body::Symlink { ctx, blob } = &i.body else {
            return Err(Error::Invalid(format!("inode {ino} is not a symlink")));
        };
        let key = self.keys.get(&ctx.key).ok_or_else(|| Error::WrongKey {
            given: self.keys.ids(),
            needed: vec![ctx.key],
        })?;
        key.names_key(&ctx.nonce)
            .decrypt_symlink(blob)
            .map_err(|_| Error::AuthFailed { at: self.at(ino) })
    }

    /// Decrypts a regular file's data, calling `f(byte_offset, plaintext)` per
    /// mapped run (at most one extent, ≤ 32 MiB, at a time). Holes are skipped;
    /// the last run is cut to the file size.
    pub fn read_file(&self, ino: u64, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let i = self.inode(ino)?;
        let Body::File { map } = &i.body else {
            return Err(Error::Invalid(format!("inode {ino} is not a regular file")));
        };
        let mut buf = Vec::new();
        for m in map {
            self.img.read_mapped_plain(self.keys, m, &mut buf)?;
            let off = m.lblk * BLOCK_SIZE as u64;
            let len = (i.size.saturating_sub(off)).min(buf.len() as u64) as usize;
            f(off, &buf[..len])?;
            if let Some(p) = self.progress {
                p.advance(0, len as u64);
            }
        }
        Ok(())
    }

    /// Every key id this snapshot needs.
    pub fn needed(&self) -> Vec<KeyId> {
        self.img.keys_needed(self.snap)
    }
}

/// Extracts a snapshot into `dest` (absent or empty). Requires every key the
/// snapshot needs; refuses up front, naming the given and the needed key ids.
pub fn extract(
    img: &Image,
    snapshot: Option<&str>,
    keys: &Keyring,
    dest: &Path,
    as_root: bool,
    progress: &dyn Progress,
) -> Result<WriteStats> {
    extract_paths(img, snapshot, keys, &[], dest, as_root, progress)
}

/// Resolves `paths` (all of the snapshot when empty) and refuses, before any
/// output, unless every key the selection needs was given.
fn prepare(r: &TreeReader<'_>, paths: &[Vec<u8>]) -> Result<Vec<select::Chain>> {
    let sel = select::select(r, paths)?;
    let needed = if paths.is_empty() {
        r.needed()
    } else {
        select::keys_needed(r, &sel)?
    };
    r.keys.require(&needed)?;
    Ok(sel)
}

/// Extracts the given paths of a snapshot (a directory means its subtree;
/// all of it when `paths` is empty) into `dest` (absent or empty), with the
/// directories above each path. Hard links within the selection stay links.
/// Requires the keys the selection needs; refuses up front, naming them.
pub fn extract_paths(
    img: &Image,
    snapshot: Option<&str>,
    keys: &Keyring,
    paths: &[Vec<u8>],
    dest: &Path,
    as_root: bool,
    progress: &dyn Progress,
) -> Result<WriteStats> {
    let snap = img.snapshot(snapshot)?;
    let r = TreeReader::new(img, snap, keys);
    let sel = prepare(&r, paths)?;
    let mut w = DirSink(TreeWriter::new(dest, as_root)?);
    progress.start("extract", Some(select::total_bytes(&r, &sel)?));
    select::walk(&r, &sel, &mut w, progress)?;
    progress.finish();
    w.0.finish()
}

/// `fsck-crypt extract IMAGE -`: writes the selection (as
/// [`extract_paths`] chooses it) to `out` as a pax tar stream
/// ([`tar_out`]). Returns the writer and what went in.
pub fn extract_tar<W: std::io::Write>(
    img: &Image,
    snapshot: Option<&str>,
    keys: &Keyring,
    paths: &[Vec<u8>],
    out: W,
    progress: &dyn Progress,
) -> Result<(W, WriteStats)> {
    let snap = img.snapshot(snapshot)?;
    let r = TreeReader::new(img, snap, keys);
    let sel = prepare(&r, paths)?;
    let mut sink = tar_out::TarSink::new(out);
    progress.start("extract", Some(select::total_bytes(&r, &sel)?));
    select::walk(&r, &sel, &mut sink, progress)?;
    progress.finish();
    sink.finish()
}

/// Puts the walk onto the local file system through a [`TreeWriter`].
struct DirSink(TreeWriter);

impl select::Sink for DirSink {
    fn dir(&mut self, path: &[Vec<u8>], inode: &Inode) -> Result<()> {
        self.0.dir(path, &inode.meta())
    }

    fn file(&mut self, r: &TreeReader<'_>, path: &[Vec<u8>], i: &Inode) -> Result<()> {
        let f = self.0.create_file(path)?;
        r.read_file(i.ino, &mut |off, data| {
            f.write_all_at(data, off)
                .map_err(|e| Error::io(format!("writing {}", crate::ops::build::display_path(path)), e))
        })?;
        self.0.finish_file(path, f, i.size, &i.meta())
    }

    fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], _inode: &Inode) -> Result<()> {
        self.0.hard_link(path, first)
    }

    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], inode: &Inode) -> Result<()> {
        self.0.symlink(path, target, &inode.meta())
    }

    fn special(&mut self, path: &[Vec<u8>], inode: &Inode) -> Result<()> {
        self.0.special(path, &inode.meta())
    }
}
