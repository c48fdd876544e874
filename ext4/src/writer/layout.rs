//! Where the writer puts things: group geometry, fixed metadata, and the
//! block allocator.
//!
//! Layout (flex_bg lets bitmaps and inode tables live anywhere,
//! Documentation/filesystems/ext4/blockgroup.rst "Flexible Block Groups"):
//! block 0 holds the superblock at byte 1024; the group descriptor table
//! follows from block 1; then every group's block bitmap, every inode
//! bitmap, every inode table, the journal, and then file data, directories
//! and extent/xattr blocks in allocation order. Backup superblocks and
//! descriptor tables sit at the start of groups 1, 3^n, 5^n, 7^n
//! (`sparse_super`); the allocator steps over them.

use crate::superblock::group_has_super;
use crate::{bitmap, journal, Error, Result, BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE, INODE_SIZE};

/// Smallest filesystem accepted, in blocks (16 MiB).
pub const MIN_BLOCKS: u64 = 4096;
/// Inodes per inode-table block.
pub const INODES_PER_BLOCK: u32 = (BLOCK_SIZE / INODE_SIZE) as u32;

/// Group geometry and the fixed metadata blocks.
pub struct Layout {
    pub blocks: u64,
    pub groups: u32,
    pub inodes_per_group: u32,
    pub gdt_blocks: u64,
    pub block_bitmap: Vec<u64>,
    pub inode_bitmap: Vec<u64>,
    pub inode_table: Vec<u64>,
    /// First block and length of the journal (length 0: none).
    pub journal: (u64, u32),
}

impl Layout {
    /// Inode-table blocks per group.
    pub fn itable_blocks(&self) -> u64 {
        u64::from(self.inodes_per_group / INODES_PER_BLOCK)
    }
    /// Total inodes.
    pub fn inodes(&self) -> u64 {
        u64::from(self.inodes_per_group) * u64::from(self.groups)
    }
}

/// The block allocator: a bitmap over the whole filesystem and a cursor
/// that only moves forward, so data lands in ascending block order.
pub struct Alloc {
    pub used: Vec<u8>,
    pub blocks: u64,
    next: u64,
}

impl Alloc {
    fn new(blocks: u64) -> Result<Alloc> {
        let bytes = usize::try_from(blocks.div_ceil(8)).map_err(|_| Error::Invalid(format!("{blocks} blocks is too large")))?;
        Ok(Alloc {
            used: vec![0u8; bytes],
            blocks,
            next: 0,
        })
    }

    pub fn is_used(&self, b: u64) -> bool {
        bitmap::test(&self.used, b as usize)
    }

    pub fn mark(&mut self, b: u64) {
        bitmap::set(&mut self.used, b as usize);
    }

    pub fn free(&mut self, b: u64) {
        bitmap::clear(&mut self.used, b as usize);
    }

    /// One block, for `what` (named in the out-of-space error).
    pub fn one(&mut self, what: &str) -> Result<u64> {
        while self.next < self.blocks {
            let b = self.next;
            self.next += 1;
            if !self.is_used(b) {
                self.mark(b);
                return Ok(b);
            }
        }
        Err(Error::NoSpace {
            what: what.to_string(),
            blocks: self.blocks,
        })
    }

    /// `n` contiguous blocks.
    pub fn contiguous(&mut self, n: u64, what: &str) -> Result<u64> {
        let mut start = self.next;
        let mut b = start;
        while b < self.blocks {
            if self.is_used(b) {
                b += 1;
                start = b;
                continue;
            }
            b += 1;
            if b - start == n {
                for x in start..b {
                    self.mark(x);
                }
                self.next = b;
                return Ok(start);
            }
        }
        Err(Error::NoSpace {
            what: what.to_string(),
            blocks: self.blocks,
        })
    }

    /// Blocks in use.
    pub fn used_count(&self) -> u64 {
        (0..self.blocks).filter(|&b| self.is_used(b)).count() as u64
    }
}

/// Plans the layout of a `blocks`-block filesystem with at least `inodes`
/// inodes, marking the fixed metadata in a new allocator.
pub fn plan(blocks: u64, inodes: u64, journal: bool) -> Result<(Layout, Alloc)> {
    if blocks < MIN_BLOCKS {
        return Err(Error::Invalid(format!(
            "an ext4 image needs at least {MIN_BLOCKS} blocks of 4096 bytes (16 MiB), {blocks} asked"
        )));
    }
    if blocks >= 1 << 40 {
        return Err(Error::Invalid(format!("{blocks} blocks is more than this writer handles")));
    }
    let bpg = u64::from(BLOCKS_PER_GROUP);
    let mut groups = blocks.div_ceil(bpg);
    let mut blocks = blocks;
    // A tiny last group would hold little but its backup metadata: drop it, as mke2fs does.
    if groups > 1 && !blocks.is_multiple_of(bpg) && blocks % bpg < 1024 {
        groups -= 1;
        blocks = groups * bpg;
    }
    let groups32 = u32::try_from(groups).map_err(|_| Error::Invalid("too many groups".into()))?;
    let per_group = inodes.div_ceil(groups).next_multiple_of(u64::from(INODES_PER_BLOCK));
    if per_group > u64::from(BLOCKS_PER_GROUP) {
        return Err(Error::NoInodes { inodes: groups * bpg });
    }
    let ipg = (per_group as u32).max(INODES_PER_BLOCK);
    let gdt_blocks = (groups * DESC_SIZE as u64).div_ceil(BLOCK_SIZE as u64);
    let mut alloc = Alloc::new(blocks)?;
    for g in 0..groups {
        if group_has_super(g) {
            for b in g * bpg..(g * bpg + 1 + gdt_blocks).min(blocks) {
                alloc.mark(b);
            }
        }
    }
    let mut layout = Layout {
        blocks,
        groups: groups32,
        inodes_per_group: ipg,
        gdt_blocks,
        block_bitmap: Vec::new(),
        inode_bitmap: Vec::new(),
        inode_table: Vec::new(),
        journal: (0, 0),
    };
    for _ in 0..groups {
        layout.block_bitmap.push(alloc.one("block bitmaps")?);
    }
    for _ in 0..groups {
        layout.inode_bitmap.push(alloc.one("inode bitmaps")?);
    }
    let itb = layout.itable_blocks();
    for _ in 0..groups {
        layout.inode_table.push(alloc.contiguous(itb, "inode tables")?);
    }
    if journal {
        let n = journal::default_blocks(blocks);
        layout.journal = (alloc.contiguous(u64::from(n), "the journal")?, n);
    }
    Ok((layout, alloc))
}
