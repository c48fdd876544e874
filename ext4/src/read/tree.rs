//! Extent trees of any depth (Documentation/filesystems/ext4/ifork.rst
//! "Extent Tree", fs/ext4/ext4_extents.h).
//!
//! The root is in `i_block` (eh_max 4); index nodes point one level down
//! (`eh_depth` decreasing by exactly one); leaves hold extents whose length
//! above 32768 marks an unwritten (preallocated) extent of `len - 32768`
//! blocks, which reads as zeros. Every node and every data block is claimed
//! once (see [`Fs::claim`]); logical ranges must increase strictly.

use super::{at, Fs, ReadError, ReadResult};
use crate::extent::{parse_node, verify_tail, Node, BLOCK_MAX, MAX_DEPTH, MAX_LEN, ROOT_MAX};
use crate::inode::{Inode, EXTENTS_FL};
use crate::{le16, BLOCK_SIZE_U64};

/// One mapped range of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedExtent {
    /// First logical block.
    pub lblk: u32,
    /// Number of blocks.
    pub len: u32,
    /// First physical block.
    pub pblk: u64,
    /// Preallocated, never written: reads as zeros (and has no ciphertext).
    pub unwritten: bool,
}

/// A file's block map: extents in logical order, non-overlapping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileMap {
    pub extents: Vec<MappedExtent>,
}

impl FileMap {
    /// Written blocks (what holds data or ciphertext).
    pub fn written_blocks(&self) -> u64 {
        self.extents.iter().filter(|e| !e.unwritten).map(|e| u64::from(e.len)).sum()
    }
}

/// The callback of [`Fs::read_mapped`]: (first logical block, bytes).
pub type BlockSink<'a, E = ReadError> = dyn FnMut(u64, &[u8]) -> Result<(), E> + 'a;

impl Fs {
    /// Walks the extent tree of `inode` (number `ino`), verifying node
    /// checksums, depths, ordering and bounds, and claiming every node and
    /// data block. Call at most once per inode (hard links share one map).
    pub fn extents(&self, ino: u32, inode: &Inode) -> ReadResult<FileMap> {
        if inode.flags & EXTENTS_FL == 0 {
            return Err(ReadError::unsupported(
                super::Refusal::BlockMap,
                format!("inode {ino}"),
                "mapped by indirect blocks, not extents",
            ));
        }
        let owner = format!("inode {ino} extent tree");
        let root = parse_node(&inode.block).map_err(|e| at(e, owner.clone()))?;
        let max = le16(&inode.block, crate::extent::EH_MAX);
        if max != ROOT_MAX {
            return Err(ReadError::corrupt(
                "extent root",
                owner,
                format!("eh_max {max}, expected {ROOT_MAX}"),
            ));
        }
        let seed = self.inode_seed(ino, inode);
        let mut out = FileMap::default();
        let mut next_lblk: u64 = 0;
        // Depth-first with an explicit stack; depth bounds it at MAX_DEPTH levels.
        let mut stack: Vec<(Node, usize)> = vec![(root, 0)];
        while let Some((node, i)) = stack.pop() {
            match node {
                Node::Leaf(v) => {
                    for e in v {
                        let (len, unwritten) = if e.len > MAX_LEN { (e.len - MAX_LEN, true) } else { (e.len, false) };
                        let lblk = u64::from(e.lblk);
                        if lblk < next_lblk {
                            return Err(ReadError::corrupt(
                                "extent",
                                owner,
                                format!("logical block {lblk} overlaps or precedes the previous extent (next free {next_lblk})"),
                            ));
                        }
                        next_lblk = lblk + u64::from(len);
                        if next_lblk > 1 << 32 {
                            return Err(ReadError::corrupt("extent", owner, format!("logical block {lblk}+{len} past 2^32")));
                        }
                        self.claim(e.pblk, u64::from(len), &owner)?;
                        out.extents.push(MappedExtent {
                            lblk: e.lblk,
                            len: u32::from(len),
                            pblk: e.pblk,
                            unwritten,
                        });
                    }
                }
                Node::Index { depth, entries } => {
                    if i >= entries.len() {
                        continue;
                    }
                    let idx = entries[i];
                    if let Some(next) = entries.get(i + 1) {
                        if next.lblk <= idx.lblk {
                            return Err(ReadError::corrupt(
                                "extent index",
                                owner,
                                "index entries are not in increasing order",
                            ));
                        }
                    }
                    if u64::from(idx.lblk) < next_lblk {
                        return Err(ReadError::corrupt(
                            "extent index",
                            owner,
                            format!("index entry for logical block {} precedes mapped blocks", idx.lblk),
                        ));
                    }
                    self.claim(idx.leaf, 1, &owner)?;
                    let b = self.block(idx.leaf)?;
                    verify_tail(&b, seed).map_err(|e| at(e, format!("{owner} block {}", idx.leaf)))?;
                    let child = parse_node(&b).map_err(|e| at(e, format!("{owner} block {}", idx.leaf)))?;
                    let cdepth = match &child {
                        Node::Leaf(_) => 0,
                        Node::Index { depth, .. } => *depth,
                    };
                    let cmax = le16(&b, crate::extent::EH_MAX);
                    if cdepth + 1 != depth || depth > MAX_DEPTH || cmax > BLOCK_MAX {
                        return Err(ReadError::corrupt(
                            "extent node",
                            format!("{owner} block {}", idx.leaf),
                            format!("depth {cdepth} under a depth-{depth} index, eh_max {cmax}"),
                        ));
                    }
                    stack.push((Node::Index { depth, entries }, i + 1));
                    stack.push((child, 0));
                }
            }
        }
        Ok(out)
    }

    /// Reads the written blocks of a mapped file in order, calling `f` with
    /// (first logical block, bytes) for runs of at most `chunk_blocks`
    /// blocks. Unwritten extents and holes are skipped. Stops at the first
    /// error: a read's ([`ReadError`], converted) or `f`'s, returned unchanged.
    pub fn read_mapped<E: From<ReadError>>(&self, map: &FileMap, chunk_blocks: usize, f: &mut BlockSink<'_, E>) -> Result<(), E> {
        let chunk_blocks = chunk_blocks.max(1);
        let mut buf = Vec::new();
        for e in map.extents.iter().filter(|e| !e.unwritten) {
            let mut done = 0u64;
            while done < u64::from(e.len) {
                let n = (u64::from(e.len) - done).min(chunk_blocks as u64);
                buf.resize((n * BLOCK_SIZE_U64) as usize, 0);
                self.read_blocks(e.pblk + done, &mut buf)?;
                f(u64::from(e.lblk) + done, &buf)?;
                done += n;
            }
        }
        Ok(())
    }

    /// The bytes of a symlink as stored, `i_size + 1` of them (the target and
    /// the byte after it): from `i_block` for a fast symlink (no EXTENTS_FL,
    /// `i_size` < 60), else from its one data block.
    /// For an encrypted symlink that is the blob `le16 len ‖ ct ‖ 0` with
    /// `i_size` = 2 + len (docs/TESTING.md "Kernel oracle").
    pub fn symlink_raw(&self, ino: u32, inode: &Inode) -> ReadResult<Vec<u8>> {
        let size = inode.size;
        if size == 0 || size >= BLOCK_SIZE_U64 {
            return Err(ReadError::corrupt("symlink", format!("inode {ino}"), format!("i_size {size}")));
        }
        if inode.flags & EXTENTS_FL == 0 {
            if size as usize >= inode.block.len() {
                return Err(ReadError::unsupported(
                    super::Refusal::BlockMap,
                    format!("inode {ino}"),
                    "slow symlink mapped by indirect blocks",
                ));
            }
            return Ok(inode.block[..size as usize + 1].to_vec());
        }
        let map = self.extents(ino, inode)?;
        let Some(first) = map.extents.first().filter(|e| e.lblk == 0 && !e.unwritten) else {
            return Err(ReadError::corrupt(
                "symlink",
                format!("inode {ino}"),
                "no data block for a slow symlink",
            ));
        };
        let mut b = self.block(first.pblk)?;
        // An encrypted blob carries its terminating NUL past i_size.
        b.truncate(size as usize + 1);
        Ok(b)
    }
}
