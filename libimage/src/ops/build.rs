//! Importing a tree (directory walk or tar stream) into a snapshot.
//!
//! [`Builder`] is the [`EntrySink`] that encrypts names, symlink targets and
//! file data and records inodes. It works on any snapshot, new or existing: a
//! name is found by encrypting it under its directory's key and comparing
//! ciphertext, exactly as fscrypt looks names up, so no plaintext index is kept.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::engine::image::{Image, Keyring};
use crate::error::{Error, Result};
use crate::format::extent::MAX_EXTENT_BLOCKS;
use crate::format::inode::{Body, DirEntry, Inode, MapEntry, S_IFDIR};
use crate::format::snapshot::Snapshot;
use crate::progress::Progress;
use crate::tree::{EntrySink, FileData, Meta, Run, SourceEntry, SourceKind, Timespec};
use crate::BLOCK_SIZE;
use fscrypt::context::PolicyContext;
use fscrypt::{MasterKey, NameCipher, Nonce, NonceDeriver, NAME_MAX};

/// How nonces and timestamps are chosen.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reproducible {
    /// Derive nonces and the uuid from the master key (HMAC), and set
    /// atime = ctime = mtime.
    pub deterministic: bool,
    /// Clamp every timestamp to this (SOURCE_DATE_EPOCH).
    pub clamp: Option<i64>,
}

/// Counts of what an import wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BuildStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    /// Plaintext bytes of regular files.
    pub bytes: u64,
    pub extents: u64,
}

/// Imports entries into one snapshot of an open image.
pub struct Builder<'a> {
    img: &'a mut Image,
    snap: usize,
    /// The key new data, names and links are written under (the snapshot policy).
    key: &'a MasterKey,
    /// Keys for reading existing directories' names (update after a rekey).
    keys: &'a Keyring,
    det: Option<NonceDeriver>,
    repro: Reproducible,
    progress: &'a dyn Progress,
    /// Name ciphers of directories touched so far.
    ciphers: HashMap<u64, NameCipher>,
    /// Per touched directory: encrypted name → inode.
    index: HashMap<u64, HashMap<Vec<u8>, u64>>,
    /// The directories [`Builder::ensure_dir`] resolved last, as (name,
    /// inode) from the root: an entry shares most of its parent path with the
    /// one before it, so only the new tail is looked up (name encryption per
    /// component would make a deep tree cost the square of its depth).
    /// Cleared whenever an entry is removed.
    dir_cache: Vec<(Vec<u8>, u64)>,
    buf: Vec<u8>,
    pub stats: BuildStats,
}

fn invalid_path(path: &[Vec<u8>], why: &str) -> Error {
    Error::Invalid(format!("{why}: {}", display_path(path)))
}

/// A path for messages: components joined by `/`, non-UTF-8 bytes escaped.
pub fn display_path(path: &[Vec<u8>]) -> String {
    let s: Vec<String> = path.iter().map(|c| c.escape_ascii().to_string()).collect();
    format!("/{}", s.join("/"))
}

impl<'a> Builder<'a> {
    /// A builder for snapshot `name`, writing under `key`, which must be the
    /// snapshot's policy key.
    pub fn new(
        img: &'a mut Image,
        name: &str,
        key: &'a MasterKey,
        keys: &'a Keyring,
        repro: Reproducible,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        let snap = img.meta().snapshot_index(name)?;
        let policy = img.meta().snapshots[snap].policy;
        if !key.matches(&policy) {
            return Err(Error::WrongKey {
                given: vec![key.identifier()],
                needed: vec![policy],
            });
        }
        let det = repro.deterministic.then(|| key.deterministic_nonces());
        Ok(Builder {
            img,
            snap,
            key,
            keys,
            det,
            repro,
            progress,
            ciphers: HashMap::new(),
            index: HashMap::new(),
            dir_cache: Vec::new(),
            buf: Vec::new(),
            stats: BuildStats::default(),
        })
    }

    /// Adds an empty snapshot whose root directory is written under `key`.
    pub fn add_snapshot(img: &mut Image, name: &str, key: &MasterKey, repro: Reproducible, created: i64) -> Result<()> {
        if let Err(why) = crate::format::snapshot::check_name(name) {
            return Err(Error::Invalid(format!("snapshot name {name:?}: {why}")));
        }
        if img.meta().snapshot(name).is_some() {
            return Err(Error::Invalid(format!("a snapshot named {name:?} already exists")));
        }
        let nonce = if repro.deterministic {
            key.deterministic_nonces().nonce(&[b"dir", name.as_bytes(), b"/"])
        } else {
            Nonce::random()?
        };
        let t = clamp_time(repro, Timespec { sec: created, nsec: 0 });
        let root = Inode::empty_dir(1, 0o755, PolicyContext::new(key.identifier(), nonce), t);
        let mut inodes = std::collections::BTreeMap::new();
        inodes.insert(1, root);
        img.snapshots_mut().push(Snapshot {
            name: name.to_string(),
            policy: key.identifier(),
            root: 1,
            next_ino: 2,
            created: t.sec,
            inodes,
        });
        Ok(())
    }

    /// The snapshot being imported into, as it stands.
    pub fn current(&self) -> &Snapshot {
        &self.img.meta().snapshots[self.snap]
    }

    fn snapshot(&mut self) -> &mut Snapshot {
        &mut self.img.snapshots_mut()[self.snap]
    }

    fn nonce(&self, parts: &[&[u8]]) -> Result<Nonce> {
        match &self.det {
            Some(d) => Ok(d.nonce(parts)),
            None => Ok(Nonce::random()?),
        }
    }

    fn path_bytes(&self, path: &[Vec<u8>]) -> Vec<u8> {
        let mut v = self.img.meta().snapshots[self.snap].name.as_bytes().to_vec();
        for c in path {
            v.push(b'/');
            v.extend_from_slice(c);
        }
        v
    }

    /// The name cipher of directory `dir`, derived once.
    fn cipher(&mut self, dir: u64) -> Result<&NameCipher> {
        if !self.ciphers.contains_key(&dir) {
            let ctx = match self.img.meta().snapshots[self.snap].inodes.get(&dir).map(|i| &i.body) {
                Some(Body::Dir { ctx, .. }) => *ctx,
                _ => return Err(Error::Invalid(format!("inode {dir} is not a directory"))),
            };
            let key = if self.key.matches(&ctx.key) {
                self.key
            } else {
                self.keys.get(&ctx.key).ok_or_else(|| Error::WrongKey {
                    given: self.keys.ids(),
                    needed: vec![ctx.key],
                })?
            };
            self.ciphers.insert(dir, key.names_key(&ctx.nonce));
        }
        Ok(&self.ciphers[&dir])
    }

    fn dir_index(&mut self, dir: u64) -> &mut HashMap<Vec<u8>, u64> {
        let snap = self.snap;
        let img = &self.img;
        self.index
            .entry(dir)
            .or_insert_with(|| match img.meta().snapshots[snap].inodes.get(&dir).map(|i| &i.body) {
                Some(Body::Dir { entries, .. }) => entries.iter().map(|e| (e.name.clone(), e.ino)).collect(),
                _ => HashMap::new(),
            })
    }

    /// Looks up `name` in directory `dir`: (encrypted name, inode if present).
    fn lookup(&mut self, dir: u64, name: &[u8]) -> Result<(Vec<u8>, Option<u64>)> {
        let ct = self.cipher(dir)?.encrypt_name(name)?;
        let ino = self.dir_index(dir).get(&ct).copied();
        Ok((ct, ino))
    }

    /// Resolves a directory path, creating missing directories (tar archives
    /// may omit them) with mode 0755.
    fn ensure_dir(&mut self, path: &[Vec<u8>]) -> Result<u64> {
        let same = self.dir_cache.iter().zip(path).take_while(|((n, _), c)| n == *c).count();
        self.dir_cache.truncate(same);
        let mut cur = match self.dir_cache.last() {
            Some(&(_, ino)) => ino,
            None => self.img.meta().snapshots[self.snap].root,
        };
        for (i, c) in path.iter().enumerate().skip(same) {
            let (ct, found) = self.lookup(cur, c)?;
            cur = match found {
                Some(ino) if self.img.meta().snapshots[self.snap].inodes.get(&ino).is_some_and(|i| i.is_dir()) => ino,
                Some(_) => return Err(invalid_path(&path[..=i], "a path component is not a directory")),
                None => {
                    let meta = Meta {
                        mode: S_IFDIR | 0o755,
                        ..Default::default()
                    };
                    let ino = self.new_dir(&path[..=i], &meta)?;
                    self.link(cur, ct, ino);
                    ino
                }
            };
            self.dir_cache.push((c.clone(), cur));
        }
        Ok(cur)
    }

    /// `m` with the reproducible-build rules applied to its times (atime =
    /// ctime = mtime when deterministic; clamped to SOURCE_DATE_EPOCH), after
    /// checking its xattrs fit the format.
    fn stamped(&self, m: &Meta) -> Result<Meta> {
        crate::format::inode::check_xattrs(&m.xattrs).map_err(Error::Invalid)?;
        let (a, c) = if self.repro.deterministic {
            (m.mtime, m.mtime)
        } else {
            (m.atime, m.ctime)
        };
        Ok(Meta {
            atime: clamp_time(self.repro, a),
            mtime: clamp_time(self.repro, m.mtime),
            ctime: clamp_time(self.repro, c),
            ..m.clone()
        })
    }

    fn new_inode(&mut self, meta: &Meta, size: u64, body: Body) -> Result<u64> {
        let meta = self.stamped(meta)?;
        let snap = self.snapshot();
        let ino = snap.alloc_ino();
        snap.inodes.insert(ino, Inode::new(ino, &meta, 0, size, body));
        Ok(ino)
    }

    /// Gives an existing directory new metadata (a repeated or root entry).
    fn set_dir_meta(&mut self, dir: u64, meta: &Meta) -> Result<()> {
        let meta = self.stamped(meta)?;
        if let Some(d) = self.snapshot().inodes.get_mut(&dir) {
            d.set_meta(meta);
        }
        Ok(())
    }

    fn new_dir(&mut self, path: &[Vec<u8>], meta: &Meta) -> Result<u64> {
        // The path is only hashed for deterministic nonces: joining it for
        // every directory would cost the square of a deep tree's depth.
        let nonce = match &self.det {
            Some(d) => d.nonce(&[b"dir", &self.path_bytes(path)]),
            None => Nonce::random()?,
        };
        self.stats.dirs += 1;
        self.new_inode(
            meta,
            0,
            Body::Dir {
                ctx: PolicyContext::new(self.key.identifier(), nonce),
                entries: Vec::new(),
            },
        )
    }

    /// Adds entry `ct → ino` to `dir` and counts the link.
    fn link(&mut self, dir: u64, ct: Vec<u8>, ino: u64) {
        self.dir_index(dir).insert(ct.clone(), ino);
        let inodes = &mut self.snapshot().inodes;
        if let Some(i) = inodes.get_mut(&ino) {
            i.nlink += 1;
        }
        if let Some(Inode {
            body: Body::Dir { entries, .. },
            ..
        }) = inodes.get_mut(&dir)
        {
            entries.push(DirEntry { name: ct, ino });
        }
    }

    /// Removes entry `ct` (naming `ino`) from `dir`; frees the inode, and for a
    /// directory its whole subtree, when no name is left.
    pub fn unlink(&mut self, dir: u64, ct: &[u8], ino: u64) {
        self.dir_cache.clear();
        self.dir_index(dir).remove(ct);
        let snap = self.snap;
        if let Some(Inode {
            body: Body::Dir { entries, .. },
            ..
        }) = self.img.snapshots_mut()[snap].inodes.get_mut(&dir)
        {
            entries.retain(|e| e.name != ct);
        }
        let mut doomed = vec![ino];
        while let Some(i) = doomed.pop() {
            let inodes = &mut self.img.snapshots_mut()[snap].inodes;
            let Some(node) = inodes.get_mut(&i) else { continue };
            node.nlink = node.nlink.saturating_sub(1);
            if node.nlink > 0 {
                continue;
            }
            let Some(node) = inodes.remove(&i) else { continue };
            self.index.remove(&i);
            self.ciphers.remove(&i);
            match node.body {
                Body::Dir { entries, .. } => doomed.extend(entries.iter().map(|e| e.ino)),
                Body::File { map } => map.iter().for_each(|m| self.img.drop_ref(m.extent)),
                _ => {}
            }
        }
    }

    /// Reads a file's content into extents. All-zero blocks become holes.
    /// Holes the source knows of (`FileData::run`: a tar sparse map, a
    /// filesystem hole) are skipped without reading, so the cost is the data
    /// present, not the size claimed.
    fn write_file(&mut self, path: &[Vec<u8>], size: u64, content: &mut dyn FileData) -> Result<Vec<MapEntry>> {
        let mut map = Vec::new();
        let chunk_max = MAX_EXTENT_BLOCKS as usize * BLOCK_SIZE;
        let pathb = if self.det.is_some() { self.path_bytes(path) } else { Vec::new() };
        let mut buf = std::mem::take(&mut self.buf);
        let mut done = 0u64;
        let bs = BLOCK_SIZE as u64;
        let read_err = |e| Error::io(format!("reading {} ({size} bytes expected)", display_path(path)), e);
        let r = (|| {
            while done < size {
                // `done` is a multiple of the block size here.
                let run_end = match content.run().map_err(read_err)? {
                    Run::Hole { end } => {
                        let to = (end.min(size) / bs * bs).max(done);
                        if to > done {
                            content.skip_hole(to).map_err(read_err)?;
                            self.progress.advance(0, to - done);
                            done = to;
                            continue;
                        }
                        // A hole shorter than the rest of this block: read it.
                        (done + bs).min(size)
                    }
                    Run::Data { end } => end.min(size).max(done + 1),
                };
                let upto = run_end.div_ceil(bs).saturating_mul(bs).min(size);
                let n = (upto - done).min(chunk_max as u64) as usize;
                let padded = n.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
                buf.clear();
                buf.resize(padded, 0);
                content.read_exact(&mut buf[..n]).map_err(read_err)?;
                let lblk0 = done / BLOCK_SIZE as u64;
                let nblk = padded / BLOCK_SIZE;
                let mut b = 0;
                while b < nblk {
                    if is_zero(&buf[b * BLOCK_SIZE..(b + 1) * BLOCK_SIZE]) {
                        b += 1;
                        continue;
                    }
                    let start = b;
                    while b < nblk && !is_zero(&buf[b * BLOCK_SIZE..(b + 1) * BLOCK_SIZE]) {
                        b += 1;
                    }
                    let run = &mut buf[start * BLOCK_SIZE..b * BLOCK_SIZE];
                    let lblk = lblk0 + start as u64;
                    let nonce = match &self.det {
                        Some(d) => d.nonce(&[b"extent", &pathb, &lblk.to_le_bytes(), &Sha256::digest(&*run)]),
                        None => Nonce::random()?,
                    };
                    let id = self.img.write_extent(self.key, nonce, run)?;
                    self.img.add_refs(id, 1)?;
                    self.stats.extents += 1;
                    map.push(MapEntry {
                        lblk,
                        blocks: (b - start) as u32,
                        extent: id,
                        offset: 0,
                    });
                }
                done += n as u64;
                self.progress.advance(0, n as u64);
            }
            Ok(())
        })();
        self.buf = buf;
        r.map(|()| map)
    }

    fn add(&mut self, e: SourceEntry<'_>) -> Result<()> {
        let path = e.path;
        // Components shared with the directories resolved last were checked
        // then; checking them again would cost the square of the depth.
        let known = self.dir_cache.iter().zip(&path).take_while(|((n, _), c)| n == *c).count();
        for c in &path[known..] {
            if c.len() > NAME_MAX {
                return Err(invalid_path(
                    &path,
                    &format!("a name of {} bytes exceeds the 255-byte limit", c.len()),
                ));
            }
            if c.is_empty() || c.contains(&b'/') || c.contains(&0) || c == b"." || c == b".." {
                return Err(invalid_path(&path, "invalid name component"));
            }
        }
        let Some((name, parent_path)) = path.split_last() else {
            // The root directory: take its metadata.
            let root = self.img.meta().snapshots[self.snap].root;
            self.set_dir_meta(root, &e.meta)?;
            return Ok(());
        };
        let parent = self.ensure_dir(parent_path)?;
        let (ct, existing) = self.lookup(parent, name)?;
        if let Some(old) = existing {
            let old_is_dir = self.img.meta().snapshots[self.snap].inodes.get(&old).is_some_and(|i| i.is_dir());
            if old_is_dir && matches!(e.kind, SourceKind::Dir) {
                self.set_dir_meta(old, &e.meta)?;
                return Ok(());
            }
            self.unlink(parent, &ct, old);
        }
        let ino = match e.kind {
            SourceKind::Dir => self.new_dir(&path, &e.meta)?,
            SourceKind::File { size, content } => {
                let map = self.write_file(&path, size, content)?;
                self.stats.files += 1;
                self.stats.bytes += size;
                self.progress.advance(1, 0);
                self.new_inode(&e.meta, size, Body::File { map })?
            }
            SourceKind::Symlink { target } => {
                let nonce = self.nonce(&[b"symlink", &self.path_bytes(&path), &target])?;
                let blob = self
                    .key
                    .names_key(&nonce)
                    .encrypt_symlink(&target)
                    .map_err(|err| invalid_path(&path, &format!("symlink target: {err}")))?;
                self.stats.symlinks += 1;
                self.new_inode(
                    &e.meta,
                    target.len() as u64,
                    Body::Symlink {
                        ctx: PolicyContext::new(self.key.identifier(), nonce),
                        blob,
                    },
                )?
            }
            SourceKind::HardLink { target } => {
                let ino = self
                    .resolve(&target)?
                    .ok_or_else(|| invalid_path(&path, &format!("hard link target {} does not exist", display_path(&target))))?;
                if self.img.meta().snapshots[self.snap].inodes.get(&ino).is_some_and(|i| i.is_dir()) {
                    return Err(invalid_path(&path, "hard link to a directory"));
                }
                self.stats.hardlinks += 1;
                ino
            }
            SourceKind::Special => {
                self.stats.specials += 1;
                self.new_inode(&e.meta, 0, Body::Special)?
            }
        };
        self.link(parent, ct, ino);
        Ok(())
    }

    /// Resolves a path to an inode without creating anything.
    pub fn resolve(&mut self, path: &[Vec<u8>]) -> Result<Option<u64>> {
        let mut cur = self.img.meta().snapshots[self.snap].root;
        for c in path {
            if !self.img.meta().snapshots[self.snap].inodes.get(&cur).is_some_and(|i| i.is_dir()) {
                return Ok(None);
            }
            match self.lookup(cur, c)?.1 {
                Some(i) => cur = i,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Puts every directory's entries in canonical (ciphertext) order.
    pub fn finish(self) -> BuildStats {
        let snap = &mut self.img.snapshots_mut()[self.snap];
        for dir in self.index.keys() {
            if let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = snap.inodes.get_mut(dir)
            {
                entries.sort_unstable();
            }
        }
        self.stats
    }
}

impl EntrySink for Builder<'_> {
    fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
        self.add(e)
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Applies `--deterministic`/SOURCE_DATE_EPOCH clamping to a timestamp.
pub fn clamp_time(r: Reproducible, t: Timespec) -> Timespec {
    match r.clamp {
        Some(e) if t.sec >= e => Timespec { sec: e, nsec: 0 },
        _ => t,
    }
}
