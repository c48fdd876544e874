//! `mkfs-crypt create --format ext4`: an ext4 image the kernel mounts, with
//! the source tree encrypted by fscrypt v2 under `/NAME` (docs/EXT4.md).
//!
//! This is the fscrypt side of the [`ext4fs`] writer: it turns
//! [`SourceEntry`]s (a directory walk, a tar stream, or a cryptimg snapshot
//! export) into ext4 inodes, choosing a nonce per inode, encrypting names
//! with the directory's key, symlink targets with the link's key and
//! contents with the file's key (fs/crypto/keysetup.c: per-file keys are
//! HKDF(master, context 2, nonce)). The root directory and lost+found stay
//! plaintext.

mod export;
mod size;

pub mod archive;
pub mod backup;
pub mod base;
pub mod check;
pub mod extract;
#[doc(hidden)]
pub mod hostile;
pub mod list;
pub mod reader;
pub mod restore;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ext4fs::inode::Time;
use ext4fs::writer::{Attrs, Options, Stats, Writer};
use ext4fs::xattr::Xattr;
use fscrypt::context::PolicyContext;
use fscrypt::{MasterKey, NameCipher, Nonce, NonceDeriver};

use crate::engine::atomic::AtomicFile;
use crate::engine::image::Keyring;
use crate::error::{Error, Result};
use crate::ops::build::{clamp_time, display_path, Reproducible};
use crate::ops::create::now;
use crate::progress::{syncing, Progress};
use crate::tree::{read_tar, walk_dir, EntrySink, Meta, SourceEntry, SourceKind, Timespec};

pub use export::{export_snapshot, snapshot_policy};

/// Where the tree comes from.
pub enum Ext4Source<'a> {
    /// A directory tree.
    Dir(&'a Path),
    /// A tar archive in a file (read twice when the size is computed).
    TarFile(&'a Path),
    /// A tar stream (spooled to an unlinked temporary file when the size
    /// must be computed).
    TarStream(&'a mut dyn Read),
    /// One snapshot of a cryptimg image, decrypted with `keys`.
    Image {
        path: &'a Path,
        snapshot: Option<&'a str>,
        keys: &'a Keyring,
    },
}

/// Options of `create --format ext4`.
#[derive(Clone, Debug)]
pub struct Ext4Options {
    /// Name of the encrypted top directory (`--encrypted-dir`).
    pub encrypted_dir: String,
    /// Fixed size in bytes (multiple of 4096), or None to compute it.
    pub size: Option<u64>,
    /// Write a journal (default) or not (`--no-journal`).
    pub journal: bool,
    pub repro: Reproducible,
    pub force: bool,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Ext4Options {
            encrypted_dir: "data".into(),
            size: None,
            journal: true,
            repro: Reproducible::default(),
            force: false,
        }
    }
}

/// What was built.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ext4Report {
    pub image: PathBuf,
    pub format: &'static str,
    pub key_id: String,
    pub encrypted_dir: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    pub bytes: u64,
    pub blocks: u64,
    pub blocks_used: u64,
    pub inodes: u64,
    pub inodes_used: u64,
    pub image_bytes: u64,
}

/// Maps a writer error to the library error.
pub(crate) fn ext4_err(e: ext4fs::Error) -> Error {
    match e {
        ext4fs::Error::Io { context, source } => Error::Io { context, source },
        ext4fs::Error::Crypto(c) => c.into(),
        ext4fs::Error::NoSpace { blocks, .. } => Error::NoSpace {
            needed_blocks: blocks + 1,
            free_blocks: 0,
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// Builds an ext4 image at `path` (through a temporary file renamed into
/// place: no partial image is ever left).
pub fn create_ext4(
    path: &Path,
    mut source: Ext4Source<'_>,
    key: &MasterKey,
    opts: &Ext4Options,
    progress: &dyn Progress,
) -> Result<Ext4Report> {
    if path.exists() && !opts.force {
        return Err(Error::Invalid(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        )));
    }
    let name = opts.encrypted_dir.as_bytes();
    if name.is_empty()
        || name.len() > 255
        || name.contains(&b'/')
        || name.contains(&0)
        || name == b"."
        || name == b".."
        || name == b"lost+found"
    {
        return Err(Error::Invalid(format!(
            "--encrypted-dir {:?} is not a valid top-level name",
            opts.encrypted_dir
        )));
    }
    if let Ext4Source::Dir(d) = &source {
        if !d.is_dir() {
            return Err(Error::Invalid(format!(
                "source directory {} does not exist or is not a directory",
                d.display()
            )));
        }
    }
    // Geometry: fixed by --size, else measured from the source.
    let mut spool = None;
    // The bytes to write, known when the source was measured.
    let mut total = None;
    let (blocks, inodes) = match opts.size {
        Some(s) if s % 4096 != 0 => return Err(Error::Invalid(format!("--size {s} is not a multiple of 4096"))),
        Some(s) => (s / 4096, s / 16384),
        None => {
            let (est, sp) = size::measure(&mut source, path)?;
            spool = sp;
            total = Some(est.file_bytes);
            size::geometry(&est, opts.journal)
        }
    };
    let det = opts.repro.deterministic.then(|| key.deterministic_nonces());
    let rand16 = |tag: &[u8]| -> Result<[u8; 16]> {
        Ok(match &det {
            Some(d) => d.nonce(&[b"ext4", tag]).0,
            None => Nonce::random()?.0,
        })
    };
    let t = now(opts.repro);
    let wopts = Options {
        blocks,
        inodes,
        journal: opts.journal,
        encrypt: true,
        uuid: rand16(b"uuid")?,
        hash_seed: rand16(b"hash-seed")?,
        now: t,
    };
    let (tmp, file) = AtomicFile::new(path)?;
    let w = Writer::new(file, wopts).map_err(ext4_err)?;
    let mut sink = Ext4Sink::new(w, key, det, opts.repro, name, t, progress)?;
    progress.start("create", total);
    match source {
        Ext4Source::Dir(d) => walk_dir(d, &mut sink)?,
        Ext4Source::TarFile(p) => {
            let mut f = File::open(p).map_err(|e| Error::io(format!("opening tar {}", p.display()), e))?;
            read_tar(&mut f, &mut sink)?
        }
        Ext4Source::TarStream(r) => match spool.as_mut() {
            Some(f) => read_tar(f, &mut sink)?,
            None => read_tar(r, &mut sink)?,
        },
        Ext4Source::Image { path, snapshot, keys } => export_snapshot(path, snapshot, keys, &mut sink)?,
    }
    let stats = sink.w.finish().map_err(ext4_err)?;
    progress.finish();
    syncing(progress, || tmp.sync())?;
    tmp.persist(opts.force)?;
    Ok(report(path, key, opts, stats))
}

fn report(path: &Path, key: &MasterKey, opts: &Ext4Options, s: Stats) -> Ext4Report {
    Ext4Report {
        image: path.to_path_buf(),
        format: "ext4",
        key_id: key.identifier().to_string(),
        encrypted_dir: opts.encrypted_dir.clone(),
        files: s.files,
        dirs: s.dirs,
        symlinks: s.symlinks,
        hardlinks: s.hardlinks,
        specials: s.specials,
        bytes: s.bytes,
        blocks: s.blocks,
        blocks_used: s.blocks_used,
        inodes: s.inodes,
        inodes_used: s.inodes_used,
        image_bytes: s.blocks * 4096,
    }
}

/// Per encrypted directory: its nonce and plaintext name → inode.
struct DirState {
    nonce: Nonce,
    children: HashMap<Vec<u8>, u32>,
}

/// The [`EntrySink`] feeding the writer.
pub struct Ext4Sink<'a> {
    w: Writer,
    key: &'a MasterKey,
    det: Option<NonceDeriver>,
    repro: Reproducible,
    progress: &'a dyn Progress,
    /// Inode of `/NAME`.
    top: u32,
    dirs: HashMap<u32, DirState>,
    /// The names key of the directory used last.
    cipher: Option<(u32, NameCipher)>,
    /// Entries seen (part of deterministic nonces, so a replaced path gets a new nonce).
    seq: u64,
    now: i64,
}

fn ts(t: Timespec) -> Time {
    Time { sec: t.sec, nsec: t.nsec }
}

impl<'a> Ext4Sink<'a> {
    fn new(
        mut w: Writer,
        key: &'a MasterKey,
        det: Option<NonceDeriver>,
        repro: Reproducible,
        name: &[u8],
        now: i64,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        let nonce = match &det {
            Some(d) => d.nonce(&[b"ext4-dir", b""]),
            None => Nonce::random()?,
        };
        let t = Time { sec: now, nsec: 0 };
        let attrs = Attrs {
            mode: 0o40755,
            atime: t,
            mtime: t,
            ctime: t,
            ..Default::default()
        };
        let ctx = PolicyContext::new(key.identifier(), nonce).to_bytes();
        let top = w.mkdir(ext4fs::ROOT_INO, name, attrs, Some(ctx)).map_err(ext4_err)?;
        let mut dirs = HashMap::new();
        dirs.insert(
            top,
            DirState {
                nonce,
                children: HashMap::new(),
            },
        );
        Ok(Ext4Sink {
            w,
            key,
            det,
            repro,
            progress,
            top,
            dirs,
            cipher: None,
            seq: 0,
            now,
        })
    }

    fn nonce(&self, kind: &[u8], path: &[Vec<u8>]) -> Result<Nonce> {
        match &self.det {
            Some(d) => {
                let joined = path.join(&b'/');
                Ok(d.nonce(&[kind, &joined, &self.seq.to_le_bytes()]))
            }
            None => Ok(Nonce::random()?),
        }
    }

    fn attrs(&self, m: &Meta) -> Result<Attrs> {
        let (a, c) = if self.repro.deterministic {
            (m.mtime, m.mtime)
        } else {
            (m.atime, m.ctime)
        };
        let xattrs = m
            .xattrs
            .iter()
            .map(|(n, v)| Xattr::from_full_name(n, v))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(ext4_err)?;
        Ok(Attrs {
            mode: m.mode as u16,
            uid: m.uid,
            gid: m.gid,
            atime: ts(clamp_time(self.repro, a)),
            mtime: ts(clamp_time(self.repro, m.mtime)),
            ctime: ts(clamp_time(self.repro, c)),
            rdev: m.rdev,
            xattrs,
        })
    }

    /// The ciphertext of `name` in directory `dir`.
    fn encrypt_name(&mut self, dir: u32, name: &[u8]) -> Result<Vec<u8>> {
        if self.cipher.as_ref().is_none_or(|(d, _)| *d != dir) {
            let nonce = self
                .dirs
                .get(&dir)
                .map(|s| s.nonce)
                .ok_or_else(|| Error::Invalid(format!("inode {dir} is not a directory")))?;
            self.cipher = Some((dir, self.key.names_key(&nonce)));
        }
        match &self.cipher {
            Some((_, c)) => Ok(c.encrypt_name(name)?),
            None => Err(Error::Invalid("no names key".into())),
        }
    }

    fn child(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.dirs.get(&dir).and_then(|s| s.children.get(name).copied())
    }

    /// Resolves a directory path, creating missing directories (tar
    /// archives may omit them) with mode 0755.
    fn ensure_dir(&mut self, path: &[Vec<u8>]) -> Result<u32> {
        let mut cur = self.top;
        for (i, c) in path.iter().enumerate() {
            cur = match self.child(cur, c) {
                Some(ino) if self.dirs.contains_key(&ino) => ino,
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "a path component is not a directory: {}",
                        display_path(&path[..=i])
                    )))
                }
                None => {
                    let t = Timespec { sec: self.now, nsec: 0 };
                    let meta = Meta {
                        mode: 0o40755,
                        atime: t,
                        mtime: t,
                        ctime: t,
                        ..Default::default()
                    };
                    self.mkdir(cur, &path[..=i], &meta)?
                }
            };
        }
        Ok(cur)
    }

    fn mkdir(&mut self, parent: u32, path: &[Vec<u8>], meta: &Meta) -> Result<u32> {
        let name = path.last().map(Vec::as_slice).unwrap_or_default();
        let ct = self.encrypt_name(parent, name)?;
        let nonce = self.nonce(b"ext4-dir", path)?;
        let ctx = PolicyContext::new(self.key.identifier(), nonce).to_bytes();
        let attrs = self.attrs(meta)?;
        let ino = self.w.mkdir(parent, &ct, attrs, Some(ctx)).map_err(ext4_err)?;
        self.dirs.insert(
            ino,
            DirState {
                nonce,
                children: HashMap::new(),
            },
        );
        if let Some(s) = self.dirs.get_mut(&parent) {
            s.children.insert(name.to_vec(), ino);
        }
        Ok(ino)
    }

    fn add(&mut self, e: SourceEntry<'_>) -> Result<()> {
        self.seq += 1;
        let path = e.path;
        for c in &path {
            if c.is_empty() || c.len() > 255 || c.contains(&b'/') || c.contains(&0) || c == b"." || c == b".." {
                return Err(Error::Invalid(format!("invalid name component in {}", display_path(&path))));
            }
        }
        let Some((name, parent_path)) = path.split_last() else {
            let attrs = self.attrs(&e.meta)?;
            return self.w.set_attrs(self.top, attrs).map_err(ext4_err);
        };
        let parent = self.ensure_dir(parent_path)?;
        if let Some(old) = self.child(parent, name) {
            if self.dirs.contains_key(&old) && matches!(e.kind, SourceKind::Dir) {
                let attrs = self.attrs(&e.meta)?;
                return self.w.set_attrs(old, attrs).map_err(ext4_err);
            }
            let ct = self.encrypt_name(parent, name)?;
            self.w.unlink(parent, &ct).map_err(ext4_err)?;
            if let Some(s) = self.dirs.get_mut(&parent) {
                s.children.remove(name.as_slice());
            }
        }
        let ino = match e.kind {
            SourceKind::Dir => return self.mkdir(parent, &path, &e.meta).map(|_| ()),
            SourceKind::File { size, content } => {
                let ct = self.encrypt_name(parent, name)?;
                let nonce = self.nonce(b"ext4-file", &path)?;
                let ctx = PolicyContext::new(self.key.identifier(), nonce).to_bytes();
                let xts = self.key.file_contents_key(&nonce);
                let attrs = self.attrs(&e.meta)?;
                let ino = self
                    .w
                    .file(parent, &ct, attrs, Some((ctx, &xts)), size, content)
                    .map_err(|err| match err {
                        ext4fs::Error::Io { context, source } => Error::io(format!("{context} of {}", display_path(&path)), source),
                        other => ext4_err(other),
                    })?;
                self.progress.advance(1, size);
                ino
            }
            SourceKind::Symlink { target } => {
                let ct = self.encrypt_name(parent, name)?;
                let nonce = self.nonce(b"ext4-symlink", &path)?;
                let blob = self
                    .key
                    .names_key(&nonce)
                    .encrypt_symlink(&target)
                    .map_err(|err| Error::Invalid(format!("symlink {}: {err}", display_path(&path))))?;
                let ctx = PolicyContext::new(self.key.identifier(), nonce).to_bytes();
                let attrs = self.attrs(&e.meta)?;
                self.w.symlink(parent, &ct, attrs, Some(ctx), &blob).map_err(ext4_err)?
            }
            SourceKind::HardLink { target } => {
                let ino = self.resolve(&target).ok_or_else(|| {
                    Error::Invalid(format!(
                        "hard link {} to {}, which does not exist",
                        display_path(&path),
                        display_path(&target)
                    ))
                })?;
                if self.dirs.contains_key(&ino) {
                    return Err(Error::Invalid(format!("hard link {} to a directory", display_path(&path))));
                }
                let ct = self.encrypt_name(parent, name)?;
                self.w.link(parent, &ct, ino).map_err(ext4_err)?;
                ino
            }
            SourceKind::Special => {
                // The kernel gives special files in an encrypted directory no
                // context (fs/crypto/policy.c: only regular files,
                // directories and symlinks are encrypted); only the name is.
                let ct = self.encrypt_name(parent, name)?;
                let attrs = self.attrs(&e.meta)?;
                self.w.special(parent, &ct, attrs).map_err(ext4_err)?
            }
        };
        if let Some(s) = self.dirs.get_mut(&parent) {
            s.children.insert(name.clone(), ino);
        }
        Ok(())
    }

    fn resolve(&self, path: &[Vec<u8>]) -> Option<u32> {
        let mut cur = self.top;
        for c in path {
            cur = self.child(cur, c)?;
        }
        Some(cur)
    }
}

impl EntrySink for Ext4Sink<'_> {
    fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
        self.add(e)
    }
}
