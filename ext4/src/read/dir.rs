//! Directories, linear and hashed (Documentation/filesystems/ext4/
//! directory.rst "Linear (Classic) Directories" and "Hash Tree
//! Directories", fs/ext4/namei.c).
//!
//! A full listing reads every leaf block; the dx blocks (the root at logical
//! block 0 of an `INDEX_FL` directory and the interior nodes it points to)
//! are validated instead: `struct dx_root_info` (reserved 0, info_length 8,
//! indirect_levels ≤ 1 without large_dir), `struct dx_countlimit` (limit as
//! the block allows, 1 ≤ count ≤ limit), hashes increasing, child blocks
//! inside the directory, and the `struct dx_tail` checksum
//! (fs/ext4/namei.c `ext4_dx_csum`: crc32c(inode seed, block up to the last
//! entry) then over `dt_reserved` and a zero checksum).

use std::collections::HashSet;

use super::{at, Fs, ReadError, ReadResult};
use crate::csum::crc32c_raw;
use crate::dir::{parse_block, DirEntry};
use crate::inode::{Inode, INDEX_FL, S_IFDIR, S_IFMT};
use crate::superblock::{COMPAT_DIR_INDEX, FLAGS_UNSIGNED_HASH};
use crate::{le16, le32, BLOCK_SIZE, BLOCK_SIZE_U64};

/// `dx_root_info` offset in the root block (after the fake "." and "..").
const ROOT_INFO: usize = 0x18;
/// `dx_countlimit` offset in the root block (`ROOT_INFO` + info_length 8).
const ROOT_COUNT: usize = 0x20;
/// `dx_countlimit` offset in an interior node (after the fake empty dirent).
const NODE_COUNT: usize = 0x8;
/// `struct dx_tail` size (dt_reserved, dt_checksum).
const DX_TAIL: usize = 8;
/// `struct dx_entry` size (hash, block).
const DX_ENTRY: usize = 8;
/// Highest `dx_root_info.hash_version` (DX_HASH_SIPHASH = 6 needs casefold).
const HASH_MAX: u8 = 2;

/// The dirhash setup readdir uses for no-key names (fs/ext4/namei.c
/// `ext4_htree_fill_tree`): a version (`DX_HASH_*`), the signedness the
/// superblock's flags say, and the superblock's `s_hash_seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashInfo {
    pub version: u8,
    pub signed: bool,
    pub seed: [u8; 16],
}

impl HashInfo {
    /// (hash, minor_hash) of `name` ([`crate::htree::dirhash`]); `None` for a
    /// hash version this crate does not know.
    pub fn hash(&self, name: &[u8]) -> Option<(u32, u32)> {
        crate::htree::dirhash(name, self.version, &self.seed, self.signed).ok()
    }
}

/// A directory's entries in on-disk order ("." and ".." included).
#[derive(Clone, Debug, Default)]
pub struct DirListing {
    pub entries: Vec<DirEntry>,
    /// Whether the directory has an htree index.
    pub indexed: bool,
    /// Some when the kernel's readdir goes through the htree code and so
    /// puts the dirhash into no-key names (fs/ext4/dir.c `is_dx_dir`: the
    /// dir_index feature and an indexed or one-block directory); None when
    /// it reads linearly and the hash is zero.
    pub nokey_hash: Option<HashInfo>,
}

impl Fs {
    /// Reads directory `ino`: all entries from its leaf blocks, after
    /// validating any htree blocks. Claims its blocks (call once per dir).
    pub fn dir(&self, ino: u32, inode: &Inode) -> ReadResult<DirListing> {
        let here = || format!("directory inode {ino}");
        if inode.mode & S_IFMT != S_IFDIR {
            return Err(ReadError::corrupt(
                "directory",
                here(),
                format!("mode {:#o} is not a directory", inode.mode),
            ));
        }
        if !inode.size.is_multiple_of(BLOCK_SIZE_U64) || inode.size == 0 {
            return Err(ReadError::corrupt(
                "directory",
                here(),
                format!("i_size {} is not a whole number of blocks", inode.size),
            ));
        }
        let nblocks = inode.size / BLOCK_SIZE_U64;
        let map = self.extents(ino, inode)?;
        let mut lblocks: Vec<(u64, u64)> = Vec::new();
        for e in &map.extents {
            if e.unwritten {
                return Err(ReadError::corrupt(
                    "directory",
                    here(),
                    format!("unwritten extent at block {}", e.lblk),
                ));
            }
            for k in 0..u64::from(e.len) {
                let l = u64::from(e.lblk) + k;
                if l >= nblocks {
                    return Err(ReadError::corrupt(
                        "directory",
                        here(),
                        format!("block {l} past i_size {}", inode.size),
                    ));
                }
                lblocks.push((l, e.pblk + k));
            }
        }
        if lblocks.len() as u64 != nblocks {
            return Err(ReadError::corrupt(
                "directory",
                here(),
                format!("{} of {nblocks} blocks mapped (directories have no holes)", lblocks.len()),
            ));
        }
        let seed = self.inode_seed(ino, inode);
        let sb = self.superblock();
        let signed = sb.flags & FLAGS_UNSIGNED_HASH == 0;
        let dir_index = sb.feature_compat & COMPAT_DIR_INDEX != 0;
        let indexed = inode.flags & INDEX_FL != 0;
        let mut out = DirListing {
            indexed,
            ..Default::default()
        };
        let mut dx_blocks: HashSet<u64> = HashSet::new();
        let mut version = sb.def_hash_version;
        if indexed && dir_index {
            let root = self.block(lblocks[0].1)?;
            let (v, dots) = self.dx_tree(ino, seed, &root, &lblocks, &mut dx_blocks)?;
            version = v;
            out.entries.extend(dots);
        }
        if dir_index && (indexed || nblocks == 1) {
            out.nokey_hash = Some(HashInfo {
                version,
                signed,
                seed: sb.hash_seed,
            });
        }
        for &(l, p) in &lblocks {
            if dx_blocks.contains(&l) {
                continue;
            }
            let b = self.block(p)?;
            let v = parse_block(&b, Some(seed)).map_err(|e| at(e, format!("{} block {l} (physical {p})", here())))?;
            out.entries.extend(v);
        }
        Ok(out)
    }

    /// Validates the htree of a directory; returns the root's hash version
    /// and its "." and ".." entries, and fills `dx` with the logical numbers
    /// of the dx blocks.
    fn dx_tree(&self, ino: u32, seed: u32, root: &[u8], lblocks: &[(u64, u64)], dx: &mut HashSet<u64>) -> ReadResult<(u8, Vec<DirEntry>)> {
        let here = |l: u64| format!("directory inode {ino} htree block {l}");
        let bad = |l: u64, d: String| ReadError::corrupt("htree", here(l), d);
        // Fake "." (rec_len 12) and ".." (rec_len = rest of the block).
        let dot_ino = le32(root, 0);
        let dotdot_ino = le32(root, 12);
        if le16(root, 4) != 12 || root[6] != 1 || root[8] != b'.' || root[12 + 6] != 2 || &root[20..22] != b".." {
            return Err(bad(0, "the dx root does not start with \".\" and \"..\"".into()));
        }
        if usize::from(le16(root, 16)) != BLOCK_SIZE - 12 {
            return Err(bad(0, format!("\"..\" rec_len {} in the dx root", le16(root, 16))));
        }
        let reserved = le32(root, ROOT_INFO);
        let version = root[ROOT_INFO + 4];
        let info_len = root[ROOT_INFO + 5];
        let levels = root[ROOT_INFO + 6];
        if reserved != 0 || info_len != 8 || version > HASH_MAX || levels > 1 {
            return Err(bad(
                0,
                format!("dx_root_info reserved {reserved}, hash_version {version}, info_length {info_len}, indirect_levels {levels}"),
            ));
        }
        dx.insert(0);
        let dots = vec![
            DirEntry {
                inode: dot_ino,
                file_type: root[7],
                name: b".".to_vec(),
            },
            DirEntry {
                inode: dotdot_ino,
                file_type: root[12 + 7],
                name: b"..".to_vec(),
            },
        ];
        // (block bytes, count offset, logical number, level)
        let mut todo: Vec<(Vec<u8>, usize, u64, u8)> = vec![(root.to_vec(), ROOT_COUNT, 0, levels)];
        while let Some((b, coff, l, level)) = todo.pop() {
            let limit = usize::from(le16(&b, coff));
            let count = usize::from(le16(&b, coff + 2));
            let want_limit = (BLOCK_SIZE - coff - DX_TAIL) / DX_ENTRY;
            if limit != want_limit || count == 0 || count > limit {
                return Err(bad(l, format!("dx count {count}, limit {limit} (expected limit {want_limit})")));
            }
            let tail = coff + limit * DX_ENTRY;
            let mut c = crc32c_raw(seed, &b[..coff + count * DX_ENTRY]);
            c = crc32c_raw(c, &b[tail..tail + 4]);
            c = crc32c_raw(c, &[0; 4]);
            let have = le32(&b, tail + 4);
            if c != have {
                return Err(bad(l, format!("dx tail checksum {have:#010x}, computed {c:#010x}")));
            }
            let mut prev_hash = 0u32;
            for i in 0..count {
                let e = coff + i * DX_ENTRY;
                let hash = if i == 0 { 0 } else { le32(&b, e) };
                if i > 0 && hash < prev_hash {
                    return Err(bad(l, format!("dx entry {i}: hash {hash:#x} below the previous {prev_hash:#x}")));
                }
                prev_hash = hash;
                let child = u64::from(le32(&b, e + 4));
                let Some(&(_, p)) = lblocks.get(child as usize) else {
                    return Err(bad(l, format!("dx entry {i} points to block {child}, past the directory")));
                };
                if child == 0 {
                    return Err(bad(l, format!("dx entry {i} points back to the root")));
                }
                if level > 0 {
                    if !dx.insert(child) {
                        return Err(bad(l, format!("dx node {child} referenced twice")));
                    }
                    let nb = self.block(p)?;
                    if le32(&nb, 0) != 0 || usize::from(le16(&nb, 4)) != BLOCK_SIZE || nb[6] != 0 {
                        return Err(bad(child, "interior dx node lacks its empty fake entry".into()));
                    }
                    todo.push((nb, NODE_COUNT, child, level - 1));
                }
            }
        }
        Ok((version, dots))
    }
}
