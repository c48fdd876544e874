//! `--data`: recompute the crc32c of every extent's ciphertext, like
//! `zpool scrub`, without keys.
//!
//! Extents are sorted by start block and grouped into batches of nearby
//! extents (at most [`CHUNK`] bytes, gaps of at most [`GAP`] bytes read
//! through), so the image is read in large sequential `pread`s. Batches are
//! spread over a few threads, each with one reusable buffer, so memory is
//! bounded by `threads × CHUNK` whatever the image holds. An extent larger
//! than a chunk is read in pieces with a running crc32c.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::engine::image::Keyring;
use crate::error::Result;
use crate::finding::{Code, Finding};
use crate::format::extent::MAX_EXTENT_BLOCKS;
use crate::format::inode::Body;
use crate::format::meta::Metadata;
use crate::format::snapshot::Snapshot;
use crate::format::superblock::Superblock;
use crate::progress::Progress;
use crate::BLOCK_SIZE;

use super::BytesChecked;

/// Largest single read.
const CHUNK: u64 = 16 << 20;
/// Largest hole between two extents read through rather than skipped.
const GAP: u64 = 1 << 20;
/// Below this many bytes in total, scrub on the calling thread.
const PARALLEL_MIN: u64 = 8 << 20;
const MAX_THREADS: usize = 4;

/// One extent to verify.
#[derive(Clone, Copy)]
struct Item {
    off: u64,
    len: u64,
    id: u64,
    crc: u32,
}

/// Consecutive items `[first, last)` read as one span.
struct Batch {
    off: u64,
    len: u64,
    first: usize,
    last: usize,
}

fn batches(items: &[Item]) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let end = it.off + it.len;
        if let Some(b) = out.last_mut() {
            let b_end = b.off + b.len;
            let joins = b.len <= CHUNK && it.off <= b_end.saturating_add(GAP) && end.max(b_end) - b.off <= CHUNK;
            if joins {
                b.len = end.max(b_end) - b.off;
                b.last = i + 1;
                continue;
            }
        }
        out.push(Batch {
            off: it.off,
            len: it.len,
            first: i,
            last: i + 1,
        });
    }
    out
}

/// The outcome for one item: its computed crc, or the read error.
type Outcome = (usize, std::result::Result<u32, String>);

fn run_batch(file: &File, items: &[Item], b: &Batch, buf: &mut Vec<u8>, out: &mut Vec<Outcome>) {
    if b.len <= CHUNK {
        buf.resize(b.len as usize, 0);
        match file.read_exact_at(buf, b.off) {
            Ok(()) => {
                for (i, it) in items.iter().enumerate().take(b.last).skip(b.first) {
                    let lo = (it.off - b.off) as usize;
                    let hi = lo + it.len as usize;
                    out.push((i, Ok(crc32c::crc32c(&buf[lo..hi]))));
                }
            }
            Err(e) => {
                for i in b.first..b.last {
                    out.push((i, Err(e.to_string())));
                }
            }
        }
        return;
    }
    // One extent larger than a chunk: running crc over pieces.
    let it = items[b.first];
    let mut crc = 0u32;
    let mut done = 0u64;
    while done < it.len {
        let n = (it.len - done).min(CHUNK);
        buf.resize(n as usize, 0);
        if let Err(e) = file.read_exact_at(buf, it.off + done) {
            out.push((b.first, Err(e.to_string())));
            return;
        }
        crc = crc32c::crc32c_append(crc, buf);
        done += n;
    }
    out.push((b.first, Ok(crc)));
}

/// Scrubs the extents of the selected snapshots (all extents when every
/// snapshot is selected).
#[allow(clippy::too_many_arguments)]
pub(super) fn scrub(
    file: &File,
    flen: u64,
    meta: &Metadata,
    selected: &[&Snapshot],
    sb: &Superblock,
    keys: &Keyring,
    out: &mut Vec<Finding>,
    bytes: &mut BytesChecked,
    progress: &dyn Progress,
) -> Result<()> {
    let restrict: Option<HashSet<u64>> = (selected.len() < meta.snapshots.len()).then(|| {
        let mut ids = HashSet::new();
        for s in selected {
            for ino in s.inodes.values() {
                if let Body::File { map } = &ino.body {
                    ids.extend(map.iter().map(|m| m.extent));
                }
            }
        }
        ids
    });
    let bs = BLOCK_SIZE as u64;
    let mut items: Vec<Item> = meta
        .extents
        .values()
        .filter(|e| restrict.as_ref().is_none_or(|r| r.contains(&e.id)))
        // Extents failing the structural checks are already reported.
        .filter(|e| e.blocks >= 1 && e.blocks <= MAX_EXTENT_BLOCKS && e.start >= 2 && e.end() <= sb.total_blocks)
        .filter(|e| e.end().saturating_mul(bs) <= flen)
        .map(|e| Item {
            off: e.start * bs,
            len: u64::from(e.blocks) * bs,
            id: e.id,
            crc: e.crc,
        })
        .collect();
    items.sort_unstable_by_key(|it| (it.off, it.id));
    let total: u64 = items.iter().map(|it| it.len).sum();
    let batches = batches(&items);
    progress.start("scrub data", Some(total));
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::with_capacity(items.len()));
    let next = AtomicUsize::new(0);
    let max_batch = batches.iter().map(|b| b.len.min(CHUNK)).max().unwrap_or(0) as usize;
    let worker = || {
        let mut buf: Vec<u8> = Vec::with_capacity(max_batch);
        let mut local: Vec<Outcome> = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(b) = batches.get(i) else { break };
            run_batch(file, &items, b, &mut buf, &mut local);
            progress.advance((b.last - b.first) as u64, b.len);
        }
        if let Ok(mut r) = results.lock() {
            r.extend(local);
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(batches.len());
    if total < PARALLEL_MIN || threads < 2 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
    progress.finish();
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_unstable_by_key(|r| r.0);
    let mut bad: Vec<(u64, Finding)> = Vec::new();
    for (i, r) in results {
        let it = items[i];
        let e = meta.extents.get(&it.id);
        match r {
            Ok(crc) if crc == it.crc => {
                bytes.data += it.len;
                bytes.extents_scrubbed += 1;
                if e.is_some_and(|e| keys.get(&e.ctx.key).is_some()) {
                    bytes.extents_verified_with_key += 1;
                }
            }
            Ok(crc) => {
                bytes.data += it.len;
                bytes.extents_scrubbed += 1;
                bad.push((
                    it.id,
                    Finding::new(
                        Code::DataCrc,
                        format!(
                            "the extent's ciphertext has crc32c {crc:#010x} but its record says {:#010x}: the data is damaged",
                            it.crc
                        ),
                        "restore the files using this extent from backup",
                    )
                    .extent(it.id)
                    .block(it.off / bs),
                ));
            }
            Err(msg) => bad.push((
                it.id,
                Finding::new(
                    Code::DataRead,
                    format!("reading the extent's {} bytes failed: {msg}", it.len),
                    "check the storage the image is on; restore the files using this extent from backup",
                )
                .extent(it.id)
                .block(it.off / bs),
            )),
        }
    }
    if !bad.is_empty() {
        locate(meta, &mut bad);
        out.extend(bad.into_iter().map(|(_, f)| f));
    }
    Ok(())
}

/// Names a file using each damaged extent (the first found), and how many
/// references there are.
fn locate(meta: &Metadata, bad: &mut [(u64, Finding)]) {
    let wanted: HashSet<u64> = bad.iter().map(|b| b.0).collect();
    let mut owner: std::collections::HashMap<u64, (String, u64, u64)> = std::collections::HashMap::new();
    for s in &meta.snapshots {
        for ino in s.inodes.values() {
            if let Body::File { map } = &ino.body {
                for m in map.iter().filter(|m| wanted.contains(&m.extent)) {
                    owner.entry(m.extent).or_insert_with(|| (s.name.clone(), ino.ino, 0)).2 += 1;
                }
            }
        }
    }
    for (id, f) in bad.iter_mut() {
        if let Some((s, ino, n)) = owner.get(id) {
            f.at.snapshot = Some(s.clone());
            f.at.inode = Some(*ino);
            f.message.push_str(&format!(" ({n} file-map references)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(off_blocks: u64, blocks: u64) -> Item {
        Item {
            off: off_blocks * 4096,
            len: blocks * 4096,
            id: off_blocks,
            crc: 0,
        }
    }

    #[test]
    fn batching_joins_near_extents_and_splits_far_ones() {
        let items = vec![it(2, 1), it(3, 2), it(10, 1), it(10_000, 1), it(20_000, 8192), it(28_192, 1)];
        let b = batches(&items);
        let spans: Vec<(usize, usize)> = b.iter().map(|b| (b.first, b.last)).collect();
        // 2..3 and 3..5 touch, 10 is within GAP; 10_000 is 40 MB further; the
        // 32 MiB extent exceeds a chunk and stands alone.
        assert_eq!(spans, vec![(0, 3), (3, 4), (4, 5), (5, 6)]);
        assert_eq!(b[0].len, 9 * 4096);
    }
}
