//! Extent trees (Documentation/filesystems/ext4/ifork.rst "Extent Tree",
//! ext4_extents.h).
//!
//! A node is a 12-byte header then 12-byte entries: leaves (depth 0) hold
//! `struct ext4_extent` {ee_block, ee_len, ee_start_hi, ee_start_lo}, index
//! nodes `struct ext4_extent_idx` {ei_block, ei_leaf_lo, ei_leaf_hi}. The
//! root lives in `i_block` (60 bytes: 4 entries); other nodes fill a block
//! (340 entries) and end with `struct ext4_extent_tail` {et_checksum} right
//! after `eh_max` entries: crc32c(inode seed, node bytes before the tail).

use crate::csum::crc32c_raw;
use crate::{le16, le32, put16, put32, Error, Result, BLOCK_SIZE};

/// `EXT4_EXT_MAGIC`.
pub const MAGIC: u16 = 0xF30A;
pub const EH_MAGIC: usize = 0;
pub const EH_ENTRIES: usize = 2;
pub const EH_MAX: usize = 4;
pub const EH_DEPTH: usize = 6;
pub const EH_GENERATION: usize = 8;
/// Header and entry size.
pub const HEADER_SIZE: usize = 12;
pub const ENTRY_SIZE: usize = 12;
/// Entries in the root (i_block).
pub const ROOT_MAX: u16 = 4;
/// Entries in a block node: (4096 - 12) / 12.
pub const BLOCK_MAX: u16 = ((BLOCK_SIZE - HEADER_SIZE) / ENTRY_SIZE) as u16;
/// `EXT_INIT_MAX_LEN`: longest initialized extent.
pub const MAX_LEN: u16 = 32768;
/// `EXT4_MAX_EXTENT_DEPTH`.
pub const MAX_DEPTH: u16 = 5;

/// A leaf extent: `len` blocks from logical `lblk` at physical `pblk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u32,
    pub len: u16,
    pub pblk: u64,
}

/// An index entry: the subtree for logical blocks from `lblk` is at `leaf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Index {
    pub lblk: u32,
    pub leaf: u64,
}

/// A decoded node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Leaf(Vec<Extent>),
    Index { depth: u16, entries: Vec<Index> },
}

/// Decodes a node (`b` = the 60-byte root or a whole block), validating the
/// header: magic, `eh_max` within what `b` holds, `eh_entries <= eh_max`,
/// depth at most 5, extent lengths 1..=32768 (or uninitialized up to 32767).
pub fn parse_node(b: &[u8]) -> Result<Node> {
    let bad = |d: String| Error::corrupt("extent node", d);
    if b.len() < HEADER_SIZE {
        return Err(bad(format!("{} bytes", b.len())));
    }
    if le16(b, EH_MAGIC) != MAGIC {
        return Err(bad(format!("magic {:#06x}, expected 0xf30a", le16(b, EH_MAGIC))));
    }
    let entries = usize::from(le16(b, EH_ENTRIES));
    let max = usize::from(le16(b, EH_MAX));
    let depth = le16(b, EH_DEPTH);
    if max > (b.len() - HEADER_SIZE) / ENTRY_SIZE || entries > max {
        return Err(bad(format!("eh_entries {entries}, eh_max {max} in {} bytes", b.len())));
    }
    if depth > MAX_DEPTH {
        return Err(bad(format!("depth {depth}")));
    }
    let ent = |i: usize| &b[HEADER_SIZE + i * ENTRY_SIZE..HEADER_SIZE + (i + 1) * ENTRY_SIZE];
    if depth == 0 {
        let mut v = Vec::with_capacity(entries);
        for i in 0..entries {
            let e = ent(i);
            let len = le16(e, 4);
            if len == 0 {
                return Err(bad(format!("extent {i} has length 0")));
            }
            v.push(Extent {
                lblk: le32(e, 0),
                len,
                pblk: u64::from(le16(e, 6)) << 32 | u64::from(le32(e, 8)),
            });
        }
        Ok(Node::Leaf(v))
    } else {
        let v = (0..entries)
            .map(|i| {
                let e = ent(i);
                Index {
                    lblk: le32(e, 0),
                    leaf: u64::from(le16(e, 8)) << 32 | u64::from(le32(e, 4)),
                }
            })
            .collect();
        Ok(Node::Index { depth, entries: v })
    }
}

/// Verifies the tail checksum of a block node (`b` = one 4096-byte block).
pub fn verify_tail(b: &[u8], inode_seed: u32) -> Result<()> {
    if b.len() != BLOCK_SIZE || le16(b, EH_MAGIC) != MAGIC {
        return Err(Error::corrupt("extent block", "not a 4096-byte extent node"));
    }
    let off = HEADER_SIZE + usize::from(le16(b, EH_MAX)).min(usize::from(BLOCK_MAX)) * ENTRY_SIZE;
    let want = crc32c_raw(inode_seed, &b[..off]);
    let have = le32(b, off);
    if want != have {
        return Err(Error::corrupt(
            "extent block",
            format!("tail checksum {have:#010x}, computed {want:#010x}"),
        ));
    }
    Ok(())
}

fn header(b: &mut [u8], entries: usize, max: u16, depth: u16) {
    put16(b, EH_MAGIC, MAGIC);
    put16(b, EH_ENTRIES, entries as u16);
    put16(b, EH_MAX, max);
    put16(b, EH_DEPTH, depth);
    put32(b, EH_GENERATION, 0);
}

fn put_entry(b: &mut [u8], i: usize, e: &Entry) {
    let o = HEADER_SIZE + i * ENTRY_SIZE;
    match e {
        Entry::Leaf(x) => {
            put32(b, o, x.lblk);
            put16(b, o + 4, x.len);
            put16(b, o + 6, (x.pblk >> 32) as u16);
            put32(b, o + 8, x.pblk as u32);
        }
        Entry::Index(x) => {
            put32(b, o, x.lblk);
            put32(b, o + 4, x.leaf as u32);
            put16(b, o + 8, (x.leaf >> 32) as u16);
            put16(b, o + 10, 0);
        }
    }
}

enum Entry {
    Leaf(Extent),
    Index(Index),
}

impl Entry {
    fn lblk(&self) -> u32 {
        match self {
            Entry::Leaf(e) => e.lblk,
            Entry::Index(i) => i.lblk,
        }
    }
}

/// A built tree: the 60-byte root for `i_block` and the block nodes to write.
pub struct Tree {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Builds an extent tree over `extents` (sorted, non-overlapping), taking
/// node blocks from `alloc`; block nodes carry tails made with `inode_seed`.
/// Depth grows as needed (4 entries in the root, 340 per block).
pub fn build_tree(extents: &[Extent], inode_seed: u32, alloc: &mut dyn FnMut() -> Result<u64>) -> Result<Tree> {
    let mut level: Vec<Entry> = extents.iter().map(|&e| Entry::Leaf(e)).collect();
    let mut depth = 0u16;
    let mut blocks = Vec::new();
    while level.len() > usize::from(ROOT_MAX) {
        if depth >= MAX_DEPTH {
            return Err(Error::Invalid(format!("{} extents need a tree deeper than 5", extents.len())));
        }
        let mut up = Vec::new();
        for chunk in level.chunks(usize::from(BLOCK_MAX)) {
            let pblk = alloc()?;
            let mut b = vec![0u8; BLOCK_SIZE];
            header(&mut b, chunk.len(), BLOCK_MAX, depth);
            for (i, e) in chunk.iter().enumerate() {
                put_entry(&mut b, i, e);
            }
            let off = HEADER_SIZE + usize::from(BLOCK_MAX) * ENTRY_SIZE;
            let c = crc32c_raw(inode_seed, &b[..off]);
            put32(&mut b, off, c);
            up.push(Entry::Index(Index {
                lblk: chunk.first().map_or(0, Entry::lblk),
                leaf: pblk,
            }));
            blocks.push((pblk, b));
        }
        level = up;
        depth += 1;
    }
    let mut root = [0u8; 60];
    header(&mut root, level.len(), ROOT_MAX, depth);
    for (i, e) in level.iter().enumerate() {
        put_entry(&mut root, i, e);
    }
    Ok(Tree { root, blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tree_in_root() {
        let ex = [Extent {
            lblk: 0,
            len: 3,
            pblk: 0x1_0000_0005,
        }];
        let t = build_tree(&ex, 1, &mut || panic!("no block needed")).unwrap();
        assert!(t.blocks.is_empty());
        assert_eq!(parse_node(&t.root).unwrap(), Node::Leaf(ex.to_vec()));
    }

    #[test]
    fn deep_tree() {
        let ex: Vec<Extent> = (0..2000u32)
            .map(|i| Extent {
                lblk: i * 2,
                len: 1,
                pblk: u64::from(i) + 100,
            })
            .collect();
        let mut next = 10_000u64;
        let t = build_tree(&ex, 7, &mut || {
            next += 1;
            Ok(next)
        })
        .unwrap();
        // 2000 extents: 6 leaves, then 2 index blocks... no: 6 index entries > 4, so one more level.
        let Node::Index { depth, entries } = parse_node(&t.root).unwrap() else {
            panic!()
        };
        assert_eq!(depth, 2);
        assert_eq!(entries.len(), 1);
        let mut leaves = Vec::new();
        for (_, b) in &t.blocks {
            verify_tail(b, 7).unwrap();
            if let Node::Leaf(v) = parse_node(b).unwrap() {
                leaves.extend(v);
            }
        }
        assert_eq!(leaves, ex);
        let mut bad = t.blocks[0].1.clone();
        bad[20] ^= 1;
        assert!(verify_tail(&bad, 7).is_err());
    }

    #[test]
    fn hostile_nodes() {
        let mut b = [0u8; 60];
        assert!(parse_node(&b).is_err());
        header(&mut b, 9, 9, 0);
        assert!(parse_node(&b).is_err());
        header(&mut b, 1, 4, 9);
        assert!(parse_node(&b).is_err());
        assert!(parse_node(&b[..5]).is_err());
    }
}
