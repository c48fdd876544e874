//! Hash-indexed directories (Documentation/filesystems/ext4/directory.rst
//! "Hash Tree Directories"; fs/ext4/namei.c, fs/ext4/hash.c; e2fsprogs
//! lib/ext2fs/dirhash.c).
//!
//! Block 0 is the `dx_root`: a fake "." entry (rec_len 12) and a fake ".."
//! entry whose rec_len covers the rest of the block, then `dx_root_info`
//! {reserved u32, hash_version u8, info_length u8 = 8, indirect_levels u8,
//! unused_flags u8} at 0x18, then `dx_countlimit` {limit u16, count u16} at
//! 0x20 sharing its 8 bytes with the first `dx_entry`'s hash (entry 0 has no
//! hash), then `dx_entry` {hash u32, block u32}. Interior `dx_node` blocks
//! start with a fake empty entry (inode 0, rec_len 4096) and the countlimit
//! at 8. With metadata_csum each index block reserves 8 bytes for
//! `dx_tail` {reserved u32, checksum u32} after `limit` entries; checksum =
//! crc32c(inode seed, block[..count_offset + count*8] ‖ dt_reserved ‖ 0u32)
//! (`ext4_dx_csum`). Leaves are ordinary directory blocks holding the names
//! whose hash is in [entry hash, next entry hash); bit 0 of an entry hash set
//! means the first hash of that leaf continues the previous leaf's last hash.
//!
//! In an encrypted directory the hash is over the ciphertext name
//! (`fname_name()` is the disk name).

use crate::csum::crc32c_raw;
use crate::dir::{self, DirEntry};
use crate::{le16, le32, put16, put32, Error, Result, BLOCK_SIZE};

/// `s_def_hash_version` / `dx_root_info.hash_version` values.
pub const DX_HASH_LEGACY: u8 = 0;
pub const DX_HASH_HALF_MD4: u8 = 1;
pub const DX_HASH_TEA: u8 = 2;
/// `EXT4_HTREE_EOF_32BIT`.
const HTREE_EOF_32: u32 = 0x7fff_ffff;

/// Offsets in the dx_root block.
pub const ROOT_INFO: usize = 0x18;
pub const ROOT_INFO_HASH_VERSION: usize = 0x1C;
pub const ROOT_INFO_LENGTH: usize = 0x1D;
pub const ROOT_INFO_LEVELS: usize = 0x1E;
pub const ROOT_COUNTLIMIT: usize = 0x20;
pub const NODE_COUNTLIMIT: usize = 0x08;
/// Size of `struct dx_tail`.
pub const DX_TAIL_SIZE: usize = 8;
/// Entries in the root and in a node with metadata_csum.
pub const ROOT_LIMIT: usize = (BLOCK_SIZE - ROOT_COUNTLIMIT - DX_TAIL_SIZE) / 8;
pub const NODE_LIMIT: usize = (BLOCK_SIZE - NODE_COUNTLIMIT - DX_TAIL_SIZE) / 8;

fn str2hashbuf(msg: &[u8], num: usize, signed: bool) -> Vec<u32> {
    let len = msg.len();
    let mut pad = (len as u32) | ((len as u32) << 8);
    pad |= pad << 16;
    let mut out = Vec::with_capacity(num);
    let mut val = pad;
    for (i, &c) in msg.iter().take(num * 4).enumerate() {
        let ch = if signed { c as i8 as i32 as u32 } else { u32::from(c) };
        val = ch.wrapping_add(val << 8);
        if i % 4 == 3 {
            out.push(val);
            val = pad;
        }
    }
    if out.len() < num {
        out.push(val);
    }
    while out.len() < num {
        out.push(pad);
    }
    out
}

fn half_md4_transform(buf: &mut [u32; 4], inp: &[u32]) {
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a.wrapping_add($f($b, $c, $d)).wrapping_add($x).rotate_left($s);
        };
    }
    round!(f, a, b, c, d, inp[0], 3);
    round!(f, d, a, b, c, inp[1], 7);
    round!(f, c, d, a, b, inp[2], 11);
    round!(f, b, c, d, a, inp[3], 19);
    round!(f, a, b, c, d, inp[4], 3);
    round!(f, d, a, b, c, inp[5], 7);
    round!(f, c, d, a, b, inp[6], 11);
    round!(f, b, c, d, a, inp[7], 19);
    round!(g, a, b, c, d, inp[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, inp[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, inp[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, inp[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea_transform(buf: &mut [u32; 4], inp: &[u32]) {
    let mut sum: u32 = 0;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (inp[0], inp[1], inp[2], inp[3]);
    for _ in 0..16 {
        sum = sum.wrapping_add(0x9E37_79B9);
        b0 = b0.wrapping_add(((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)));
        b1 = b1.wrapping_add(((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)));
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn legacy(name: &[u8], signed: bool) -> u32 {
    let (mut h0, mut h1): (u32, u32) = (0x12a3_fe2d, 0x37ab_e8f9);
    for &c in name {
        let ch = if signed { c as i8 as i32 } else { i32::from(c) };
        let mut h = h1.wrapping_add(h0 ^ (ch.wrapping_mul(7_152_373) as u32));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// `ext4fs_dirhash`: (major hash with bit 0 clear, minor hash) of `name`
/// for `version` (0 legacy, 1 half_md4, 2 tea), the superblock's hash
/// `seed` (all-zero = default) and the signedness from `s_flags`.
pub fn dirhash(name: &[u8], version: u8, seed: &[u8; 16], signed: bool) -> Result<(u32, u32)> {
    let mut buf = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&b| b != 0) {
        for (i, w) in buf.iter_mut().enumerate() {
            *w = le32(seed, 4 * i);
        }
    }
    let (hash, minor) = match version {
        DX_HASH_LEGACY => (legacy(name, signed), 0),
        DX_HASH_HALF_MD4 => {
            // fs/ext4/hash.c: `while (len > 0)`, 32 bytes a round.
            let mut p = name;
            while !p.is_empty() {
                half_md4_transform(&mut buf, &str2hashbuf(p, 8, signed));
                p = &p[p.len().min(32)..];
            }
            (buf[1], buf[2])
        }
        DX_HASH_TEA => {
            // fs/ext4/hash.c: `while (len > 0)`, 16 bytes a round.
            let mut p = name;
            while !p.is_empty() {
                tea_transform(&mut buf, &str2hashbuf(p, 4, signed));
                p = &p[p.len().min(16)..];
            }
            (buf[0], buf[1])
        }
        v => return Err(Error::corrupt("htree", format!("unknown hash version {v}"))),
    };
    let mut hash = hash & !1;
    if hash == HTREE_EOF_32 << 1 {
        hash = (HTREE_EOF_32 - 1) << 1;
    }
    Ok((hash, minor))
}

fn dx_csum(b: &[u8], count_offset: usize, count: usize, limit: usize, seed: u32) -> u32 {
    let tail = count_offset + limit * 8;
    let c = crc32c_raw(seed, &b[..count_offset + count * 8]);
    let c = crc32c_raw(c, &b[tail..tail + 4]);
    crc32c_raw(c, &[0; 4])
}

fn put_entries(b: &mut [u8], at: usize, limit: usize, entries: &[(u32, u32)], seed: u32) {
    put16(b, at, limit as u16);
    put16(b, at + 2, entries.len() as u16);
    for (i, &(hash, block)) in entries.iter().enumerate() {
        if i > 0 {
            put32(b, at + 8 * i, hash);
        }
        put32(b, at + 8 * i + 4, block);
    }
    let c = dx_csum(b, at, entries.len(), limit, seed);
    put32(b, at + limit * 8 + 4, c);
}

/// A built indexed directory: blocks in logical order (root first).
pub struct Built {
    pub blocks: Vec<Vec<u8>>,
}

/// Builds an htree directory of `entries` (no "." / ".."), hashed with
/// (`version`, `hash_seed`, `signed`); `ino`/`parent` fill the dx_root's
/// fake entries; blocks get checksums with `inode_seed`. Leaves are packed
/// in hash order. One or two index levels (up to 507 × 510 leaves).
pub fn build(
    entries: &[DirEntry],
    ino: u32,
    parent: u32,
    version: u8,
    hash_seed: &[u8; 16],
    signed: bool,
    inode_seed: u32,
) -> Result<Built> {
    let mut hashed: Vec<(u32, u32, &DirEntry)> = Vec::with_capacity(entries.len());
    for e in entries {
        let (h, m) = dirhash(&e.name, version, hash_seed, signed)?;
        hashed.push((h, m, e));
    }
    hashed.sort_by(|a, b| (a.0, a.1, &a.2.name).cmp(&(b.0, b.1, &b.2.name)));
    // Leaves: (first hash with continuation bit, block bytes).
    let mut leaves: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut cur: Vec<DirEntry> = Vec::new();
    let mut used = 0usize;
    let mut first_hash = 0u32;
    let mut prev_hash: Option<u32> = None;
    for (h, _, e) in &hashed {
        let need = dir::rec_len(e.name.len());
        if used + need > dir::USABLE && !cur.is_empty() {
            let blk = dir::build_blocks(&cur, inode_seed).swap_remove(0);
            leaves.push((first_hash, blk));
            cur.clear();
            used = 0;
        }
        if cur.is_empty() {
            // Bit 0: this leaf starts in the middle of a run of equal hashes.
            first_hash = if prev_hash == Some(*h) { h | 1 } else { *h };
        }
        cur.push((*e).clone());
        used += need;
        prev_hash = Some(*h);
    }
    let blk = dir::build_blocks(&cur, inode_seed).swap_remove(0);
    leaves.push((first_hash, blk));

    let nleaves = leaves.len();
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(nleaves + 2);
    let mut root = vec![0u8; BLOCK_SIZE];
    put32(&mut root, 0, ino);
    put16(&mut root, 4, 12);
    root[6] = 1;
    root[7] = dir::FT_DIR;
    root[8] = b'.';
    put32(&mut root, 12, parent);
    put16(&mut root, 16, (BLOCK_SIZE - 12) as u16);
    root[18] = 2;
    root[19] = dir::FT_DIR;
    root[20] = b'.';
    root[21] = b'.';
    root[ROOT_INFO_HASH_VERSION] = version;
    root[ROOT_INFO_LENGTH] = 8;
    blocks.push(root);
    // Leaves are logical blocks 1..=nleaves.
    let leaf_index: Vec<(u32, u32)> = leaves.iter().enumerate().map(|(i, (h, _))| (*h, i as u32 + 1)).collect();
    blocks.extend(leaves.into_iter().map(|(_, b)| b));
    if nleaves <= ROOT_LIMIT {
        put_entries(&mut blocks[0], ROOT_COUNTLIMIT, ROOT_LIMIT, &leaf_index, inode_seed);
    } else {
        let chunks: Vec<&[(u32, u32)]> = leaf_index.chunks(NODE_LIMIT).collect();
        if chunks.len() > ROOT_LIMIT {
            return Err(Error::Invalid(format!(
                "a directory of {} entries needs a 3-level htree",
                entries.len()
            )));
        }
        let mut root_entries = Vec::new();
        for chunk in chunks {
            let mut node = vec![0u8; BLOCK_SIZE];
            put16(&mut node, 4, BLOCK_SIZE as u16);
            put_entries(&mut node, NODE_COUNTLIMIT, NODE_LIMIT, chunk, inode_seed);
            root_entries.push((chunk[0].0, blocks.len() as u32));
            blocks.push(node);
        }
        blocks[0][ROOT_INFO_LEVELS] = 1;
        put_entries(&mut blocks[0], ROOT_COUNTLIMIT, ROOT_LIMIT, &root_entries, inode_seed);
    }
    Ok(Built { blocks })
}

/// A parsed index block: levels below (root only), and (hash, block) entries.
#[derive(Debug, PartialEq, Eq)]
pub struct DxBlock {
    pub hash_version: u8,
    pub indirect_levels: u8,
    pub entries: Vec<(u32, u32)>,
}

/// Parses a dx_root (`root` = true) or dx_node block, checking the
/// countlimit against the block (and the dx_tail checksum when `inode_seed`
/// is given).
pub fn parse_index(b: &[u8], root: bool, inode_seed: Option<u32>) -> Result<DxBlock> {
    let bad = |d: String| Error::corrupt("htree index block", d);
    if b.len() != BLOCK_SIZE {
        return Err(bad(format!("{} bytes", b.len())));
    }
    let (at, hash_version, levels) = if root {
        if b[ROOT_INFO_LENGTH] != 8 {
            return Err(bad(format!("dx_root_info length {}", b[ROOT_INFO_LENGTH])));
        }
        (ROOT_COUNTLIMIT, b[ROOT_INFO_HASH_VERSION], b[ROOT_INFO_LEVELS])
    } else {
        (NODE_COUNTLIMIT, 0, 0)
    };
    let limit = usize::from(le16(b, at));
    let count = usize::from(le16(b, at + 2));
    let room = (BLOCK_SIZE - at) / 8;
    let tail = if inode_seed.is_some() { 1 } else { 0 };
    if limit + tail > room || count > limit || count == 0 {
        return Err(bad(format!("count {count}, limit {limit}")));
    }
    if let Some(seed) = inode_seed {
        let want = dx_csum(b, at, count, limit, seed);
        let have = le32(b, at + limit * 8 + 4);
        if want != have {
            return Err(bad(format!("dx_tail checksum {have:#010x}, computed {want:#010x}")));
        }
    }
    let entries = (0..count)
        .map(|i| (if i == 0 { 0 } else { le32(b, at + 8 * i) }, le32(b, at + 8 * i + 4)))
        .collect();
    Ok(DxBlock {
        hash_version,
        indirect_levels: levels,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    /// Known answers from e2fsprogs 1.47.0: `debugfs -R "dx_hash -h N -s
    /// 01020304-0506-0708-090a-0b0c0d0e0f10 NAME"` (N: 0-2 signed, 3-5 unsigned).
    #[test]
    fn dirhash_matches_e2fsprogs() {
        let odd = b"h\xe9llo\xff-world";
        let cases: [(&[u8], u8, bool, u32, u32); 9] = [
            (b"hello-world", DX_HASH_LEGACY, true, 0xd42c991a, 0),
            (b"hello-world", DX_HASH_HALF_MD4, true, 0xcc7bd0ae, 0x36954661),
            (b"hello-world", DX_HASH_TEA, true, 0x7b975c5e, 0xa602621d),
            (odd, DX_HASH_LEGACY, true, 0xf4c67744, 0),
            (odd, DX_HASH_HALF_MD4, true, 0x736d7860, 0xdc114941),
            (odd, DX_HASH_TEA, true, 0x3181ccbc, 0x8c4077d8),
            (odd, DX_HASH_LEGACY, false, 0x339e574e, 0),
            (odd, DX_HASH_HALF_MD4, false, 0x9afadad8, 0x167ac77c),
            (odd, DX_HASH_TEA, false, 0x9b09bf54, 0x7d7c79c1),
        ];
        for (name, v, signed, h, m) in cases {
            assert_eq!(dirhash(name, v, &SEED, signed).unwrap(), (h, m), "{name:?} v{v} signed={signed}");
        }
        let x40 = [b'x'; 40];
        assert_eq!(dirhash(&x40, DX_HASH_HALF_MD4, &SEED, false).unwrap(), (0x216199f4, 0xb249bb8b));
        assert_eq!(dirhash(&[b'y'; 40], DX_HASH_TEA, &SEED, false).unwrap(), (0x4cb37ed4, 0x0dced552));
        assert_eq!(dirhash(&x40, DX_HASH_HALF_MD4, &[0; 16], true).unwrap(), (0xa58368b6, 0x7a9f8ab7));
        assert!(dirhash(b"a", 9, &SEED, true).is_err());
    }

    #[test]
    fn build_and_parse() {
        let entries: Vec<DirEntry> = (0..5000u32)
            .map(|i| DirEntry {
                inode: 100 + i,
                file_type: dir::FT_REG,
                name: format!("name-{i}-{}", "p".repeat(40)).into_bytes(),
            })
            .collect();
        let t = build(&entries, 12, 2, DX_HASH_HALF_MD4, &SEED, false, 77).unwrap();
        let root = parse_index(&t.blocks[0], true, Some(77)).unwrap();
        assert_eq!(root.indirect_levels, 0);
        let mut seen = 0;
        for (i, &(h, blk)) in root.entries.iter().enumerate() {
            let next = root.entries.get(i + 1).map_or(u32::MAX, |e| e.0 & !1);
            for e in dir::parse_block(&t.blocks[blk as usize], Some(77)).unwrap() {
                let (eh, _) = dirhash(&e.name, DX_HASH_HALF_MD4, &SEED, false).unwrap();
                assert!(eh >= (h & !1) && eh <= next, "hash {eh:#x} outside [{h:#x}, {next:#x}]");
                seen += 1;
            }
        }
        assert_eq!(seen, 5000);
        let mut bad = t.blocks[0].clone();
        bad[0x30] ^= 1;
        assert!(parse_index(&bad, true, Some(77)).is_err());
        assert!(parse_index(&[0u8; 10], true, None).is_err());
    }
}
