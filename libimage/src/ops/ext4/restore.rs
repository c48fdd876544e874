//! `backup-crypt restore` of an ext4 backup (docs/BACKUP.md §11) into a new
//! ext4 image, keyless: every encrypted file gets back its context, its
//! encrypted name, its size and its ciphertext blocks at the same logical
//! blocks, through [`ext4fs::writer::Writer::file_raw`]. The image is
//! written to a temporary file and renamed into place when complete.

use std::io::Read;
use std::path::{Path, PathBuf};

use ext4fs::inode::Time;
use ext4fs::writer::{Attrs, Options, Writer};
use ext4fs::xattr::Xattr;
use ext4fs::ROOT_INO;

use super::archive::{read_archive, Ext4Manifest, Ext4Sink, Kind, Member};
use super::base::Ext4Bases;
use crate::engine::atomic::AtomicFile;
use crate::error::{Error, Result};
use crate::ops::backup::format::parse_hex_exact;
use crate::progress::{syncing, Progress, ReadProgress};

/// Options of [`restore`].
#[derive(Clone, Debug, Default)]
pub struct Ext4RestoreOptions {
    /// Image size in bytes (multiple of 4096); default: the source's.
    pub size: Option<u64>,
    /// Replace an existing IMAGE.
    pub force: bool,
    /// Base backups of an incremental archive: the whole chain (§11.4).
    pub bases: Vec<PathBuf>,
    /// The archive's length when known (a file, not a pipe): the progress total.
    pub archive_bytes: Option<u64>,
}

/// What a restore wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Ext4RestoreReport {
    pub members: u64,
    pub files: u64,
    pub blocks: u64,
    /// Files whose ciphertext came from a base backup.
    pub base_files: u64,
}

fn werr(e: ext4fs::Error) -> Error {
    match e {
        ext4fs::Error::Io { context, source } => Error::Io { context, source },
        other => Error::Invalid(other.to_string()),
    }
}

struct Restorer<'a> {
    dest: &'a Path,
    opts: &'a Ext4RestoreOptions,
    bases: &'a Ext4Bases,
    tmp: Option<AtomicFile>,
    w: Option<Writer>,
    /// Inode of each tree member, by [`Member::index`].
    inos: Vec<u32>,
    rep: Ext4RestoreReport,
}

fn attrs(m: &Member) -> Result<Attrs> {
    let t = |(sec, nsec): (i64, u32)| Time { sec, nsec };
    let mut xattrs = Vec::new();
    for (k, v) in &m.xattrs {
        xattrs.push(Xattr::from_full_name(k, v).map_err(werr)?);
    }
    Ok(Attrs {
        mode: (m.mode & 0o177777) as u16,
        uid: m.uid,
        gid: m.gid,
        atime: t(m.atime),
        mtime: t(m.mtime),
        ctime: t(m.ctime),
        rdev: libc::makedev(m.devmajor, m.devminor),
        xattrs,
    })
}

impl Ext4Sink for Restorer<'_> {
    fn manifest(&mut self, m: &Ext4Manifest) -> Result<()> {
        // Before anything is written: every base of the chain was given.
        self.bases.check_chain(m)?;
        let size = self.opts.size.unwrap_or(m.blocks_count.saturating_mul(4096));
        if !size.is_multiple_of(4096) || size == 0 {
            return Err(Error::Invalid(format!("--size {size} is not a positive multiple of 4096")));
        }
        let mut uuid = [0u8; 16];
        let mut seed = [0u8; 16];
        uuid.copy_from_slice(&parse_hex_exact(&m.image_uuid, 32).unwrap_or_default());
        seed.copy_from_slice(&parse_hex_exact(&m.hash_seed, 32).unwrap_or_default());
        let (tmp, file) = AtomicFile::new(self.dest)?;
        let opts = Options {
            blocks: size / 4096,
            inodes: m.inodes_count.min(u64::from(u32::MAX)),
            journal: true,
            encrypt: true,
            uuid,
            hash_seed: seed,
            now: m.created,
        };
        let mut w = Writer::new(file, opts).map_err(werr)?;
        // Indexed directories hash as on the source, so the no-key names
        // Linux derives from the hashes are the source's (§11.4).
        w.set_dir_hash(m.hash_version, !m.unsigned_hash).map_err(werr)?;
        self.w = Some(w);
        self.tmp = Some(tmp);
        Ok(())
    }

    fn member(&mut self, m: &Member, data: &mut dyn FnMut(&mut [u8]) -> Result<usize>) -> Result<()> {
        let Some(w) = self.w.as_mut() else {
            return Err(Error::Invalid("members before the manifest".into()));
        };
        let bad = |why: &str| Error::Invalid(format!("{}: {why}", String::from_utf8_lossy(&m.path)));
        self.rep.members += 1;
        if self.inos.len() != m.index {
            return Err(Error::Internal("ext4 restore: members out of order"));
        }
        if m.path == b"./" {
            if m.context.is_some() {
                return Err(bad("an encrypted root directory cannot be restored"));
            }
            w.set_attrs(ROOT_INO, attrs(m)?).map_err(werr)?;
            self.inos.push(ROOT_INO);
            return Ok(());
        }
        let trimmed = m.path.strip_suffix(b"/").unwrap_or(&m.path);
        let cut = trimmed.iter().rposition(|&b| b == b'/').ok_or_else(|| bad("no parent"))?;
        let last = &trimmed[cut + 1..];
        let parent = *self
            .inos
            .get(m.parent)
            .ok_or_else(|| bad("its parent directory is not an earlier member"))?;
        let name: Vec<u8> = m.name_ct.clone().unwrap_or_else(|| last.to_vec());
        if name.is_empty() || name.len() > 255 {
            return Err(bad("invalid name"));
        }
        let a = attrs(m)?;
        let ino = match m.kind {
            Kind::Dir => {
                if parent == ROOT_INO && name == b"lost+found" {
                    if let Some(i) = w.lookup(ROOT_INO, &name).map_err(werr)? {
                        w.set_attrs(i, a).map_err(werr)?;
                        self.inos.push(i);
                        return Ok(());
                    }
                }
                w.mkdir(parent, &name, a, m.context).map_err(werr)?
            }
            Kind::File => {
                self.rep.files += 1;
                let mut rd = FnReader(data);
                match m.context {
                    Some(c) if m.unchanged => {
                        self.rep.blocks += m.runs.iter().map(|r| r.1).sum::<u64>();
                        self.rep.base_files += 1;
                        let mut rd = self.bases.data(m)?;
                        let ino = w.file_raw(parent, &name, a, Some(c), m.size, &m.runs, &mut rd).map_err(werr)?;
                        rd.finish(m)?;
                        ino
                    }
                    Some(c) => {
                        self.rep.blocks += m.runs.iter().map(|r| r.1).sum::<u64>();
                        w.file_raw(parent, &name, a, Some(c), m.size, &m.runs, &mut rd).map_err(werr)?
                    }
                    None => w
                        .file(parent, &name, a, None, m.size, &mut ext4fs::writer::Dense(&mut rd))
                        .map_err(werr)?,
                }
            }
            Kind::Symlink => {
                let mut blob = m.link.clone();
                if m.context.is_none() {
                    blob.push(0);
                }
                w.symlink(parent, &name, a, m.context, &blob).map_err(werr)?
            }
            Kind::HardLink => {
                let target = *self.inos.get(m.link_index).ok_or_else(|| bad("hard link to an unknown member"))?;
                w.link(parent, &name, target).map_err(werr)?;
                target
            }
            Kind::Special => w.special(parent, &name, a).map_err(werr)?,
        };
        self.inos.push(ino);
        Ok(())
    }
}

/// A `Read` over the archive's member data callback.
struct FnReader<'a>(&'a mut dyn FnMut(&mut [u8]) -> Result<usize>);

impl Read for FnReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (self.0)(buf).map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Restores the ext4 backup read from `input` as a new ext4 image `dest`;
/// the data of `CRYPTIMG.unchanged` members comes from `opts.bases`.
pub fn restore(input: &mut dyn Read, dest: &Path, opts: &Ext4RestoreOptions, progress: &dyn Progress) -> Result<Ext4RestoreReport> {
    if dest.exists() && !opts.force {
        return Err(Error::Invalid(format!("{} exists (give --force to replace it)", dest.display())));
    }
    let bases = Ext4Bases::load(&opts.bases)?;
    let mut r = Restorer {
        dest,
        opts,
        bases: &bases,
        tmp: None,
        w: None,
        inos: Vec::new(),
        rep: Ext4RestoreReport::default(),
    };
    progress.start("restore", opts.archive_bytes);
    read_archive(&mut ReadProgress::new(input, progress), &mut r)?;
    let (Some(w), Some(tmp)) = (r.w.take(), r.tmp.take()) else {
        return Err(Error::Invalid("the archive has no manifest".into()));
    };
    w.finish().map_err(werr)?;
    progress.finish();
    syncing(progress, || tmp.sync())?;
    tmp.persist(opts.force)?;
    Ok(r.rep)
}
