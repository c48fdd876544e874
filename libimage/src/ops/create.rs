//! `mkfs-crypt create`: a new image from a directory tree or a tar stream,
//! written to a temporary file and renamed into place, so no partial image is
//! ever left behind and an existing image is untouched until the rename.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::engine::atomic::AtomicFile;
use crate::engine::image::{Image, Keyring};
use crate::error::{Error, Result};
use crate::ops::build::{BuildStats, Builder, Reproducible};
use crate::progress::Progress;
use crate::tree::{read_tar, walk_dir};
use crate::BLOCK_SIZE;
use fscrypt::{KeyId, MasterKey};

/// Where the tree comes from.
pub enum Source<'a> {
    Dir(&'a Path),
    Tar(&'a mut dyn Read),
}

/// Options of `create`.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub snapshot: String,
    pub repro: Reproducible,
    /// Replace an existing image.
    pub force: bool,
    /// Fixed size in bytes (a multiple of 4096), or None to grow as needed.
    pub size: Option<u64>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            snapshot: "main".into(),
            repro: Reproducible::default(),
            force: false,
            size: None,
        }
    }
}

/// What `create` made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CreateReport {
    pub image: PathBuf,
    pub key_id: String,
    pub snapshot: String,
    #[serde(flatten)]
    pub stats: BuildStats,
    /// Apparent image size in bytes.
    pub image_bytes: u64,
}

/// The current time, or the clamp for reproducible builds.
pub fn now(repro: Reproducible) -> i64 {
    if let Some(e) = repro.clamp {
        return e;
    }
    if repro.deterministic {
        return 0;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Builds a new image at `path`.
pub fn create_image(
    path: &Path,
    source: Source<'_>,
    key: &MasterKey,
    opts: &CreateOptions,
    progress: &dyn Progress,
) -> Result<CreateReport> {
    if path.exists() && !opts.force {
        return Err(Error::Invalid(format!(
            "{} already exists and replacing it was not requested",
            path.display()
        )));
    }
    if let Source::Dir(d) = &source {
        if !d.is_dir() {
            return Err(Error::Invalid(format!(
                "source directory {} does not exist or is not a directory",
                d.display()
            )));
        }
    }
    let max_blocks = match opts.size {
        None => 0,
        Some(s) if s % BLOCK_SIZE as u64 == 0 => s / BLOCK_SIZE as u64,
        Some(s) => {
            return Err(Error::Invalid(format!(
                "an image size of {s} bytes is not a multiple of {BLOCK_SIZE}"
            )))
        }
    };
    // Replacing an image: hold its writer lock until the new one is in place.
    let (tmp, file) = if opts.force {
        AtomicFile::replacing(path)?
    } else {
        AtomicFile::new(path)?
    };
    let mut report = build(file, tmp.path(), source, key, opts, max_blocks, progress)?;
    tmp.persist(opts.force)?;
    report.image = path.to_path_buf();
    Ok(report)
}

fn build(
    file: File,
    tmp: &Path,
    source: Source<'_>,
    key: &MasterKey,
    opts: &CreateOptions,
    max_blocks: u64,
    progress: &dyn Progress,
) -> Result<CreateReport> {
    let uuid = if opts.repro.deterministic {
        key.deterministic_nonces().nonce(&[b"uuid", opts.snapshot.as_bytes()]).0
    } else {
        fscrypt::Nonce::random()?.0
    };
    let time = now(opts.repro);
    let mut img = Image::create(file, tmp, uuid, max_blocks)?;
    // Generation 1: the empty image, so both superblock slots end up valid.
    img.commit(time)?;
    Builder::add_snapshot(&mut img, &opts.snapshot, key, opts.repro, time)?;
    let keys = Keyring::default();
    let mut b = Builder::new(&mut img, &opts.snapshot, key, &keys, opts.repro, progress)?;
    progress.start("create", None);
    match source {
        Source::Dir(d) => walk_dir(d, &mut b)?,
        Source::Tar(r) => read_tar(r, &mut b)?,
    }
    let stats = b.finish();
    progress.finish();
    crate::progress::syncing(progress, || img.commit(time))?;
    Ok(CreateReport {
        image: tmp.to_path_buf(),
        key_id: key.identifier().to_string(),
        snapshot: opts.snapshot.clone(),
        stats,
        image_bytes: img.superblock().total_blocks * BLOCK_SIZE as u64,
    })
}

/// `fsck-crypt info`: the superblock, the snapshots and the keys each needs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageInfo {
    /// The image format's version (superblock). In JSON
    /// `image_format_version`: `format_version` is the output envelope's.
    #[serde(rename = "image_format_version")]
    pub format_version: u32,
    pub uuid: String,
    pub generation: u64,
    pub block_size: usize,
    pub total_blocks: u64,
    pub max_blocks: u64,
    pub free_blocks: u64,
    pub commit_time: i64,
    pub extents: usize,
    /// Length of the image file in bytes.
    pub file_bytes: u64,
    /// Bytes the image file occupies on disk (allocated blocks: less than
    /// `file_bytes` when it has holes).
    pub disk_bytes: u64,
    pub snapshots: Vec<SnapshotInfo>,
}

/// One snapshot in [`ImageInfo`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// The key new data is written under.
    pub policy: String,
    /// Every key id needed to read the whole snapshot.
    pub keys_needed: Vec<String>,
    /// Extent count per key id.
    pub extents_by_key: std::collections::BTreeMap<String, u64>,
    pub inodes: usize,
    pub created: i64,
    /// Sum of the sizes of the snapshot's regular files (each inode once).
    pub file_bytes: u64,
    /// Bytes of the extents the snapshot references (each extent once;
    /// extents shared with other snapshots count here too).
    pub extent_bytes: u64,
}

/// Collects [`ImageInfo`] from an open image.
pub fn info(img: &Image) -> ImageInfo {
    let sb = img.superblock();
    let md = img.file().metadata().ok();
    let snapshots = img
        .meta()
        .snapshots
        .iter()
        .map(|s| {
            let mut by_key = std::collections::BTreeMap::new();
            let mut seen = std::collections::HashSet::new();
            let (mut file_bytes, mut extent_bytes) = (0u64, 0u64);
            for i in s.inodes.values() {
                if let crate::format::inode::Body::File { map } = &i.body {
                    file_bytes = file_bytes.saturating_add(i.size);
                    for m in map {
                        if let (true, Some(e)) = (seen.insert(m.extent), img.meta().extents.get(&m.extent)) {
                            *by_key.entry(e.ctx.key.to_string()).or_insert(0) += 1;
                            extent_bytes = extent_bytes.saturating_add(u64::from(e.blocks) * BLOCK_SIZE as u64);
                        }
                    }
                }
            }
            SnapshotInfo {
                name: s.name.clone(),
                policy: s.policy.to_string(),
                keys_needed: img.keys_needed(s).iter().map(KeyId::to_string).collect(),
                extents_by_key: by_key,
                inodes: s.inodes.len(),
                created: s.created,
                file_bytes,
                extent_bytes,
            }
        })
        .collect();
    ImageInfo {
        format_version: crate::format::superblock::VERSION,
        uuid: hex::encode(sb.uuid),
        generation: sb.generation,
        block_size: BLOCK_SIZE,
        total_blocks: sb.total_blocks,
        max_blocks: sb.max_blocks,
        free_blocks: img.free_blocks(),
        commit_time: sb.commit_time,
        extents: img.meta().extents.len(),
        file_bytes: md.as_ref().map_or(0, |m| m.len()),
        disk_bytes: md
            .as_ref()
            .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(m).saturating_mul(512)),
        snapshots,
    }
}
