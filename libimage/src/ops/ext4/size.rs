//! Sizing an ext4 image from its source, as mkfs.erofs does: one cheap pass
//! over the source (no file contents read), then room for every block the
//! writer will allocate, plus headroom so the mounted filesystem can grow.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ext4fs::dir::rec_len;
use fscrypt::padded_len;

use super::Ext4Source;
use crate::error::{Error, Result};
use crate::tree::{join_components, read_tar, walk_dir, EntrySink, SourceEntry, SourceKind};

/// What the writer will need, counted from the source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub inodes: u64,
    pub dirs: u64,
    pub data_blocks: u64,
    pub dirent_bytes: u64,
    pub xattr_blocks: u64,
    pub symlink_blocks: u64,
    pub files: u64,
    /// Bytes of the regular files (each once): the progress total of `create`.
    pub file_bytes: u64,
}

impl Estimate {
    /// Counts one entry; `blocks` = data blocks of a regular file.
    pub fn add(&mut self, name_len: usize, kind: Kind, blocks: u64, xattr_bytes: usize) {
        self.add_sized(name_len, kind, blocks, 0, xattr_bytes);
    }

    /// [`add`](Self::add), with a regular file's byte size.
    pub fn add_sized(&mut self, name_len: usize, kind: Kind, blocks: u64, size: u64, xattr_bytes: usize) {
        self.dirent_bytes += rec_len(padded_len(name_len.max(1), 255)) as u64;
        match kind {
            Kind::HardLink => return,
            Kind::Dir => self.dirs += 1,
            Kind::File => {
                self.files += 1;
                self.data_blocks += blocks;
                self.file_bytes += size;
            }
            Kind::Symlink(len) => {
                // le16 ‖ ciphertext ‖ NUL beyond 60 bytes needs a block.
                if 2 + padded_len(len.max(1), fscrypt::SYMLINK_MAX) + 1 > 60 {
                    self.symlink_blocks += 1;
                }
            }
            Kind::Special => {}
        }
        self.inodes += 1;
        // 40-byte context entry (64 bytes with header) leaves ~28 bytes in the inode.
        if xattr_bytes > 28 {
            self.xattr_blocks += 1;
        }
    }
}

/// Entry kinds for [`Estimate::add`].
#[derive(Clone, Copy)]
pub enum Kind {
    Dir,
    File,
    Symlink(usize),
    HardLink,
    Special,
}

fn xattr_bytes(x: &[(Vec<u8>, Vec<u8>)]) -> usize {
    x.iter()
        .map(|(n, v)| 16 + n.len().next_multiple_of(4) + v.len().next_multiple_of(4))
        .sum()
}

struct Counter<'a> {
    est: Estimate,
    /// For a directory walk: the root, to ask for allocated blocks (holes).
    root: Option<&'a Path>,
}

impl EntrySink for Counter<'_> {
    fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
        let name_len = e.path.last().map_or(1, Vec::len);
        let xb = xattr_bytes(&e.meta.xattrs);
        let (kind, blocks, bytes) = match &e.kind {
            SourceKind::Dir => (Kind::Dir, 0, 0),
            SourceKind::File { size, .. } => {
                let mut blocks = size.div_ceil(4096);
                if let Some(root) = self.root {
                    // Allocated blocks (st_blocks is in 512-byte units): holes need none.
                    if let Ok(m) = std::fs::symlink_metadata(join_components(root, &e.path)) {
                        blocks = blocks.min(m.blocks().div_ceil(8));
                    }
                }
                (Kind::File, blocks, *size)
            }
            SourceKind::Symlink { target } => (Kind::Symlink(target.len()), 0, 0),
            SourceKind::HardLink { .. } => (Kind::HardLink, 0, 0),
            SourceKind::Special => (Kind::Special, 0, 0),
        };
        self.est.add_sized(name_len, kind, blocks, bytes, xb);
        Ok(())
    }
}

/// Measures the source. A tar stream is first copied into an unlinked
/// temporary file next to the image (returned, rewound) so it can be read twice.
pub fn measure(source: &mut Ext4Source<'_>, image: &Path) -> Result<(Estimate, Option<File>)> {
    match source {
        Ext4Source::Dir(d) => {
            let mut c = Counter {
                est: Estimate::default(),
                root: Some(d),
            };
            walk_dir(d, &mut c)?;
            Ok((c.est, None))
        }
        Ext4Source::TarFile(p) => {
            let p: &Path = p;
            let mut f = File::open(p).map_err(|e| Error::io(format!("opening tar {}", p.display()), e))?;
            let mut c = Counter {
                est: Estimate::default(),
                root: None,
            };
            read_tar(&mut f, &mut c)?;
            Ok((c.est, None))
        }
        Ext4Source::TarStream(r) => {
            let mut spool = spool_file(image)?;
            io::copy(r, &mut spool).map_err(|e| Error::io("spooling the tar stream to a temporary file", e))?;
            spool.rewind().map_err(|e| Error::io("rewinding the spooled tar stream", e))?;
            let mut c = Counter {
                est: Estimate::default(),
                root: None,
            };
            read_tar(&mut (&spool as &File) as &mut dyn Read, &mut c)?;
            spool.rewind().map_err(|e| Error::io("rewinding the spooled tar stream", e))?;
            Ok((c.est, Some(spool)))
        }
        Ext4Source::Image { path, snapshot, keys } => Ok((super::export::estimate(path, *snapshot, keys)?, None)),
    }
}

/// An anonymous temporary file in the image's directory (created, then
/// unlinked at once: nothing is left behind, whatever happens).
fn spool_file(image: &Path) -> Result<File> {
    let dir = image.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for i in 0..100u32 {
        let p: PathBuf = dir.join(format!(".mkfs-crypt-spool.{}.{i}", std::process::id()));
        match File::options().read(true).write(true).create_new(true).open(&p) {
            Ok(f) => {
                std::fs::remove_file(&p).map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", p.display()), e)),
        }
    }
    Err(Error::Invalid("could not create a temporary spool file".into()))
}

/// (blocks, inodes) for an estimate: every block the writer allocates,
/// the fixed metadata and the journal, plus 10% and 8 MiB of headroom.
pub fn geometry(est: &Estimate, journal: bool) -> (u64, u64) {
    let inodes = est.inodes + est.inodes / 4 + 1024;
    let dir_blocks = est.dirent_bytes.div_ceil(4000) + est.dirs + 1 + 4;
    let extent_blocks = est.files / 64 + 1;
    let need = est.data_blocks + dir_blocks + est.xattr_blocks + est.symlink_blocks + extent_blocks;
    let itable = (inodes + 11).div_ceil(16) + 16;
    let mut blocks = need + itable;
    blocks += blocks / 10 + 2048;
    let groups = blocks.div_ceil(32768);
    blocks += groups * 2 + 64 * (1 + groups.div_ceil(64)) + 16;
    if journal {
        blocks += u64::from(ext4fs::journal::default_blocks(blocks));
    }
    (blocks.max(ext4fs::writer::layout::MIN_BLOCKS), inodes)
}
