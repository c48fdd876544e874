//! Already-encrypted regular files, for a keyless restore (Ts'o's design:
//! the ciphertext, context, encrypted name and size are kept exactly).
//!
//! [`Writer::file_raw`] takes the file's ciphertext blocks as they were on
//! the source (data unit = block, XTS tweak = logical block number, so they
//! stay valid at any physical location), places them at the same logical
//! blocks, leaves the rest as holes, and stores the context as given. Names
//! are passed as on-disk (ciphertext) bytes to the existing entry points.

use std::io::Read;

use super::{Attrs, Body, Node, Writer, READ_CHUNK, WRITE_BATCH};
use crate::extent::{Extent, MAX_LEN};
use crate::inode::{S_IFMT, S_IFREG};
use crate::{Error, Result, BLOCK_SIZE, BLOCK_SIZE_U64};

/// Bytes of ciphertext read at a time.
const RAW_CHUNK: usize = 64 << 10;

impl Writer {
    /// Creates a regular file of `size` bytes whose blocks `runs` (logical
    /// (first, count), increasing, non-overlapping, inside `size`) are read,
    /// in order, from `data` and written as they are; `ctx` is stored as the
    /// fscrypt context when given.
    #[allow(clippy::too_many_arguments)]
    pub fn file_raw(
        &mut self,
        parent: u32,
        name: &[u8],
        mut attrs: Attrs,
        ctx: Option<[u8; 40]>,
        size: u64,
        runs: &[(u64, u64)],
        data: &mut dyn Read,
    ) -> Result<u32> {
        attrs.mode = S_IFREG | (attrs.mode & !S_IFMT);
        let max = size.div_ceil(BLOCK_SIZE_U64);
        if max > u64::from(u32::MAX) {
            return Err(Error::Invalid(format!(
                "a file of {size} bytes is larger than ext4 allows (16 TiB)"
            )));
        }
        let mut extents: Vec<Extent> = Vec::new();
        let mut nblocks = 0u64;
        let mut next = 0u64;
        // Up to RAW_CHUNK bytes of a run per read: straight into the write
        // batch when the chunk's blocks are allocated contiguously after it
        // (the usual case), else into the writer's reused buffer first.
        let mut b = std::mem::take(&mut self.buf);
        if b.len() < READ_CHUNK {
            b.resize(READ_CHUNK, 0);
        }
        let mut pblks: Vec<u64> = Vec::with_capacity(RAW_CHUNK / BLOCK_SIZE);
        let r = (|| {
            for &(first, count) in runs {
                let end = first.checked_add(count).filter(|&e| first >= next && e <= max && count > 0);
                let Some(end) = end else {
                    return Err(Error::Invalid(format!(
                        "block run {first}+{count} overlaps or lies outside a {size}-byte file"
                    )));
                };
                next = end;
                let mut at = first;
                while at < end {
                    let n = (end - at).min((RAW_CHUNK / BLOCK_SIZE) as u64) as usize;
                    let what = || format!("reading ciphertext blocks {at}..{}", at + n as u64);
                    pblks.clear();
                    for _ in 0..n {
                        pblks.push(self.alloc.one("file data")?);
                    }
                    if pblks.windows(2).all(|w| w[1] == w[0] + 1) {
                        self.read_into_batch(pblks[0], n * BLOCK_SIZE, data, what)?;
                    } else {
                        data.read_exact(&mut b[..n * BLOCK_SIZE]).map_err(|e| Error::io(what(), e))?;
                        for (blk, &pblk) in b[..n * BLOCK_SIZE].chunks_exact(BLOCK_SIZE).zip(&pblks) {
                            self.put_block(pblk, blk)?;
                        }
                    }
                    for (i, &pblk) in pblks.iter().enumerate() {
                        nblocks += 1;
                        let lblk = (at + i as u64) as u32;
                        match extents.last_mut() {
                            Some(e) if e.lblk + u32::from(e.len) == lblk && e.pblk + u64::from(e.len) == pblk && e.len < MAX_LEN => {
                                e.len += 1
                            }
                            _ => extents.push(Extent { lblk, len: 1, pblk }),
                        }
                    }
                    at += n as u64;
                }
            }
            Ok(())
        })();
        self.buf = b;
        r?;
        let ino = self.new_ino(Node {
            attrs,
            ctx,
            size,
            links: 0,
            iblock: [0; 60],
            body: Body::File {
                extents,
                data_blocks: nblocks,
            },
        })?;
        self.add_entry(parent, name, ino)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(ino)
    }

    /// Reads `len` bytes (whole blocks) for blocks `pblk..` straight into the
    /// write batch (as `put_block` would copy them there).
    fn read_into_batch(&mut self, pblk: u64, len: usize, data: &mut dyn Read, what: impl FnOnce() -> String) -> Result<()> {
        let next = self.pending_start + (self.pending.len() / BLOCK_SIZE) as u64;
        if !self.pending.is_empty() && (pblk != next || self.pending.len() + len > WRITE_BATCH) {
            self.flush()?;
        }
        if self.pending.is_empty() {
            self.pending_start = pblk;
        }
        let at = self.pending.len();
        self.pending.resize(at + len, 0);
        if let Err(e) = data.read_exact(&mut self.pending[at..]) {
            self.pending.truncate(at);
            return Err(Error::io(what(), e));
        }
        Ok(())
    }
}
