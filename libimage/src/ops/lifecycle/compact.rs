//! `mkfs-crypt compact`: moves live extents down into free space and cuts the
//! image file to the blocks still in use, so an image gives space back after
//! snapshots are deleted.
//!
//! Crash safety is the commit protocol's (FORMAT.md §8), as for every other
//! operation: an extent is copied (ciphertext as it is, no key needed: XTS
//! tweaks count blocks within the extent, §9.6) into blocks that are free in
//! the committed state and lie entirely below it; the extent record then
//! points at the copy, and the old blocks are freed only once that commit is
//! durable. Work is committed in batches of `batch_bytes`, so an interrupted
//! run keeps what its finished batches moved, and a re-run continues.
//!
//! When nothing more can move, the free space at the end of the image is
//! dropped and committed (the superblock records the shorter length); the
//! file is cut after the flip (`engine::space`). The metadata region may
//! itself sit at the end, so this repeats while the image keeps shrinking.
//!
//! Hole punching is deferred while extents move (the moves refill most free
//! ranges, and the truncation drops the rest); the first shrinking commit
//! punches what is left. Measured on a 30,000-extent image after deleting the
//! older of two snapshots (`strace -c`): 29,247 `fallocate` calls taking
//! 13.1 s without deferral, 1 call and 2.2 s in all with it.

use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use crate::engine::image::Image;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::BLOCK_SIZE;

/// How `compact` works.
#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Commit after moving about this many bytes (at least one extent).
    pub batch_bytes: u64,
    /// Commit time of each batch.
    pub time: i64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            batch_bytes: 256 << 20,
            time: 0,
        }
    }
}

/// What `compact` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompactReport {
    /// Image length in blocks before and after.
    pub blocks_before: u64,
    pub blocks_after: u64,
    /// Apparent size of the image file in bytes before and after.
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    /// Bytes the file occupies on disk (`st_blocks × 512`) before and after.
    pub disk_bytes_before: u64,
    pub disk_bytes_after: u64,
    /// Extents moved down, and their size in bytes.
    pub extents_moved: u64,
    pub bytes_moved: u64,
    /// Commits made (batches plus the final shrinking ones).
    pub commits: u64,
}

/// At most this many shrinking commits (each may move only the metadata
/// region; two or three suffice in practice).
const MAX_SHRINK_COMMITS: u64 = 8;

fn file_sizes(img: &Image) -> Result<(u64, u64)> {
    let m = img
        .file()
        .metadata()
        .map_err(|e| Error::io(format!("stat of image {}", img.path().display()), e))?;
    Ok((m.len(), m.blocks().saturating_mul(512)))
}

/// Compacts an open (read-write) image. Needs no key.
pub fn compact(img: &mut Image, opts: &CompactOptions, progress: &dyn Progress) -> Result<CompactReport> {
    let mut r = CompactReport {
        blocks_before: img.superblock().total_blocks,
        ..Default::default()
    };
    (r.file_bytes_before, r.disk_bytes_before) = file_sizes(img)?;
    progress.start("compact", None);
    // Moves refill most free ranges and the truncation drops the rest, so
    // holes are punched only by the shrinking commits, for what is left.
    img.defer_punching(true);
    let moved = move_down(img, opts, progress, &mut r);
    img.defer_punching(false);
    moved?;
    progress.finish();
    progress.start(crate::progress::SYNC, None);
    // Cut the free tail; the new metadata region may land at the end, and the
    // old one is freed only after the flip, so repeat while it shrinks. The
    // first of these commits always runs: it punches the free ranges left.
    for i in 0..MAX_SHRINK_COMMITS {
        let before = img.superblock().total_blocks;
        let tail = img.trim_tail()?;
        if i > 0 && tail >= before {
            break;
        }
        img.commit(opts.time)?;
        r.commits += 1;
        if img.superblock().total_blocks >= before {
            break;
        }
    }
    progress.finish();
    r.blocks_after = img.superblock().total_blocks;
    (r.file_bytes_after, r.disk_bytes_after) = file_sizes(img)?;
    Ok(r)
}

/// Moves extents, highest first, into the lowest free range below them that
/// fits, committing every `batch_bytes`. Every move lowers an extent's start,
/// so this ends; a pass that moves nothing ends it.
fn move_down(img: &mut Image, opts: &CompactOptions, progress: &dyn Progress, r: &mut CompactReport) -> Result<()> {
    let mut buf = Vec::new();
    let mut batch = 0u64;
    loop {
        let mut cands: Vec<(u64, u32, u64)> = img.meta().extents.values().map(|e| (e.start, e.blocks, e.id)).collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let mut moved = 0u64;
        for (start, blocks, id) in cands {
            let Some(dst) = img.alloc_below(u64::from(blocks), start)? else {
                continue;
            };
            img.read_blocks_into(start, u64::from(blocks), &mut buf)?;
            img.write_blocks(dst, &buf)?;
            img.move_extent(id, dst)?;
            let bytes = u64::from(blocks) * BLOCK_SIZE as u64;
            moved += 1;
            r.extents_moved += 1;
            r.bytes_moved += bytes;
            batch += bytes;
            progress.advance(1, bytes);
            if batch >= opts.batch_bytes {
                img.commit(opts.time)?;
                r.commits += 1;
                batch = 0;
            }
        }
        if batch > 0 {
            img.commit(opts.time)?;
            r.commits += 1;
            batch = 0;
        }
        if moved == 0 {
            return Ok(());
        }
    }
}
