//! Extended attributes (Documentation/filesystems/ext4/attributes.rst,
//! fs/ext4/xattr.h), in the inode after the extra fields or in one block.
//!
//! Both places hold a 4-byte magic (the block a 32-byte header) then
//! entries `struct ext4_xattr_entry` {e_name_len u8, e_name_index u8,
//! e_value_offs u16, e_value_inum u32, e_value_size u32, e_hash u32, name}
//! padded to 4 bytes and ended by 4 zero bytes; values sit at the end, each
//! padded to 4 bytes. In the inode, `e_value_offs` counts from the first
//! entry and `e_hash` may be 0; in a block it counts from the block start,
//! entries are sorted by (index, name length, name), each carries
//! `ext4_xattr_hash_entry` and the header `h_hash` combines them
//! (`ext4_xattr_rehash`). Block checksum: crc32c(fs_seed, le64 block number
//! ‖ block with h_checksum zeroed) (fs/ext4/xattr.c `ext4_xattr_block_csum`).
//!
//! fscrypt keeps its context as index 9 (`EXT4_XATTR_INDEX_ENCRYPTION`),
//! name "c" (`EXT4_XATTR_NAME_ENCRYPTION_CONTEXT`), fs/ext4/crypto.c.

use crate::csum::crc32c_raw;
use crate::{le16, le32, put16, put32, Error, Result, BLOCK_SIZE};

/// `EXT4_XATTR_MAGIC`.
pub const MAGIC: u32 = 0xEA02_0000;
pub const E_NAME_LEN: usize = 0;
pub const E_NAME_INDEX: usize = 1;
pub const E_VALUE_OFFS: usize = 2;
pub const E_VALUE_INUM: usize = 4;
pub const E_VALUE_SIZE: usize = 8;
pub const E_HASH: usize = 12;
pub const E_NAME: usize = 16;
/// Block header fields.
pub const H_MAGIC: usize = 0;
pub const H_REFCOUNT: usize = 4;
pub const H_BLOCKS: usize = 8;
pub const H_HASH: usize = 12;
pub const H_CHECKSUM: usize = 16;
pub const BLOCK_HEADER_SIZE: usize = 32;

/// Name indexes (fs/ext4/xattr.h `EXT4_XATTR_INDEX_*`).
pub const INDEX_USER: u8 = 1;
pub const INDEX_TRUSTED: u8 = 4;
pub const INDEX_SECURITY: u8 = 6;
pub const INDEX_ENCRYPTION: u8 = 9;
/// The fscrypt context's name under [`INDEX_ENCRYPTION`].
pub const ENCRYPTION_CONTEXT_NAME: &[u8] = b"c";

/// One attribute: name index, name without its prefix, value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xattr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Xattr {
    /// Splits a full name ("user.foo") into index and suffix. Only user.,
    /// trusted. and security. are accepted: system.* (ACLs) would need
    /// conversion to ext4's own ACL format.
    pub fn from_full_name(full: &[u8], value: &[u8]) -> Result<Xattr> {
        for (prefix, index) in [
            (&b"user."[..], INDEX_USER),
            (b"trusted.", INDEX_TRUSTED),
            (b"security.", INDEX_SECURITY),
        ] {
            if let Some(rest) = full.strip_prefix(prefix) {
                if rest.is_empty() || rest.len() > 255 {
                    break;
                }
                return Ok(Xattr {
                    index,
                    name: rest.to_vec(),
                    value: value.to_vec(),
                });
            }
        }
        Err(Error::Invalid(format!(
            "extended attribute {:?} is not supported in ext4 images (only user.*, trusted.* and security.*)",
            String::from_utf8_lossy(full)
        )))
    }

    fn entry_size(&self) -> usize {
        (E_NAME + self.name.len() + 3) & !3
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// `ext4_xattr_hash_entry`: name bytes (unsigned) shifted in by 5, then the
/// value as le32 words shifted in by 16.
pub fn hash_entry(name: &[u8], value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    let mut padded = value.to_vec();
    padded.resize(pad4(value.len()), 0);
    for w in padded.chunks_exact(4) {
        h = (h << 16) ^ (h >> 16) ^ le32(w, 0);
    }
    h
}

/// Bytes the attributes need in an area: entries + terminator + values.
fn needed(attrs: &[Xattr]) -> usize {
    attrs.iter().map(|a| a.entry_size() + pad4(a.value.len())).sum::<usize>() + 4
}

/// Lays out entries at `first` and values down from `end` in `b`; value
/// offsets are relative to `base`. Returns the entry hashes.
fn lay_out(b: &mut [u8], first: usize, end: usize, base: usize, attrs: &[Xattr], hashes: bool) -> Vec<u32> {
    let mut pos = first;
    let mut vend = end;
    let mut out = Vec::new();
    for a in attrs {
        let vsize = pad4(a.value.len());
        vend -= vsize;
        b[vend..vend + a.value.len()].copy_from_slice(&a.value);
        b[pos + E_NAME_LEN] = a.name.len() as u8;
        b[pos + E_NAME_INDEX] = a.index;
        put16(b, pos + E_VALUE_OFFS, (vend - base) as u16);
        put32(b, pos + E_VALUE_INUM, 0);
        put32(b, pos + E_VALUE_SIZE, a.value.len() as u32);
        let h = if hashes { hash_entry(&a.name, &a.value) } else { 0 };
        put32(b, pos + E_HASH, h);
        b[pos + E_NAME..pos + E_NAME + a.name.len()].copy_from_slice(&a.name);
        out.push(h);
        pos += a.entry_size();
    }
    out
}

/// Encodes in-inode attributes into an area of `area_len` bytes (the inode
/// bytes after the extra fields); `None` if they do not fit. No attributes
/// gives an all-zero area.
pub fn build_ibody(attrs: &[Xattr], area_len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; area_len];
    if attrs.is_empty() {
        return Some(b);
    }
    if area_len < 4 || needed(attrs) > area_len - 4 {
        return None;
    }
    put32(&mut b, 0, MAGIC);
    lay_out(&mut b, 4, area_len, 4, attrs, false);
    Some(b)
}

/// Whether `attrs` fit in one xattr block.
pub fn fits_block(attrs: &[Xattr]) -> bool {
    needed(attrs) <= BLOCK_SIZE - BLOCK_HEADER_SIZE
}

/// Encodes an xattr block at block number `blocknr` (attrs get sorted).
pub fn build_block(attrs: &[Xattr], blocknr: u64, fs_seed: u32) -> Result<Vec<u8>> {
    if !fits_block(attrs) {
        return Err(Error::Invalid(format!(
            "extended attributes need {} bytes, more than one {BLOCK_SIZE}-byte block",
            needed(attrs)
        )));
    }
    let mut sorted = attrs.to_vec();
    sorted.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    let mut b = vec![0u8; BLOCK_SIZE];
    put32(&mut b, H_MAGIC, MAGIC);
    put32(&mut b, H_REFCOUNT, 1);
    put32(&mut b, H_BLOCKS, 1);
    let hashes = lay_out(&mut b, BLOCK_HEADER_SIZE, BLOCK_SIZE, 0, &sorted, true);
    let mut h: u32 = 0;
    for eh in hashes {
        if eh == 0 {
            h = 0;
            break;
        }
        h = (h << 16) ^ (h >> 16) ^ eh;
    }
    put32(&mut b, H_HASH, h);
    let c = block_csum(&b, blocknr, fs_seed);
    put32(&mut b, H_CHECKSUM, c);
    Ok(b)
}

fn block_csum(b: &[u8], blocknr: u64, fs_seed: u32) -> u32 {
    let mut c = crc32c_raw(fs_seed, &blocknr.to_le_bytes());
    c = crc32c_raw(c, &b[..H_CHECKSUM]);
    c = crc32c_raw(c, &[0; 4]);
    crc32c_raw(c, &b[H_CHECKSUM + 4..])
}

/// Parses entries from `first` in `b`, values relative to `base`, bounded by
/// `b.len()`. Rejects entries or values outside the area and EA inodes.
fn parse_entries(b: &[u8], first: usize, base: usize) -> Result<Vec<Xattr>> {
    let bad = |d: String| Error::corrupt("xattr", d);
    let mut out = Vec::new();
    let mut pos = first;
    loop {
        if pos + 4 > b.len() {
            return Err(bad(format!("entries run past the end at offset {pos}")));
        }
        if le32(b, pos) == 0 {
            return Ok(out);
        }
        if pos + E_NAME > b.len() {
            return Err(bad(format!("entry at offset {pos} truncated")));
        }
        let nl = usize::from(b[pos + E_NAME_LEN]);
        let size = (E_NAME + nl + 3) & !3;
        if pos + size > b.len() {
            return Err(bad(format!("entry name at offset {pos} runs past the end")));
        }
        if le32(b, pos + E_VALUE_INUM) != 0 {
            return Err(bad(format!("entry at offset {pos}: values in EA inodes are not supported")));
        }
        let voff = base + usize::from(le16(b, pos + E_VALUE_OFFS));
        let vlen = le32(b, pos + E_VALUE_SIZE) as usize;
        let Some(value) = voff.checked_add(vlen).and_then(|e| b.get(voff..e)) else {
            return Err(bad(format!("entry at offset {pos}: value {voff}+{vlen} outside the area")));
        };
        out.push(Xattr {
            index: b[pos + E_NAME_INDEX],
            name: b[pos + E_NAME..pos + E_NAME + nl].to_vec(),
            value: value.to_vec(),
        });
        pos += size;
    }
}

/// Parses an in-inode area (all zero or no magic = no attributes).
pub fn parse_ibody(area: &[u8]) -> Result<Vec<Xattr>> {
    if area.len() < 4 || le32(area, 0) != MAGIC {
        return Ok(Vec::new());
    }
    parse_entries(area, 4, 4)
}

/// Parses and verifies an xattr block (magic, h_blocks = 1, checksum).
pub fn parse_block(b: &[u8], blocknr: u64, fs_seed: u32) -> Result<Vec<Xattr>> {
    let bad = |d: String| Error::corrupt("xattr block", format!("block {blocknr}: {d}"));
    if b.len() != BLOCK_SIZE {
        return Err(bad(format!("{} bytes", b.len())));
    }
    if le32(b, H_MAGIC) != MAGIC || le32(b, H_BLOCKS) != 1 {
        return Err(bad("bad magic or h_blocks".into()));
    }
    let want = block_csum(b, blocknr, fs_seed);
    if want != le32(b, H_CHECKSUM) {
        return Err(bad(format!("checksum {:#010x}, computed {want:#010x}", le32(b, H_CHECKSUM))));
    }
    parse_entries(b, BLOCK_HEADER_SIZE, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Xattr {
        Xattr {
            index: INDEX_ENCRYPTION,
            name: b"c".to_vec(),
            value: vec![7; 40],
        }
    }

    #[test]
    fn ibody_round_trip() {
        let v = vec![
            ctx(),
            Xattr {
                index: INDEX_USER,
                name: b"k".to_vec(),
                value: b"v1".to_vec(),
            },
        ];
        let area = build_ibody(&v, 96).unwrap();
        assert_eq!(parse_ibody(&area).unwrap(), v);
        let big = vec![
            ctx(),
            Xattr {
                index: INDEX_USER,
                name: b"k".to_vec(),
                value: vec![1; 40],
            },
        ];
        assert!(build_ibody(&big, 96).is_none());
        assert_eq!(parse_ibody(&[0u8; 96]).unwrap(), vec![]);
    }

    #[test]
    fn block_round_trip() {
        let v = vec![
            Xattr {
                index: INDEX_USER,
                name: b"zz".to_vec(),
                value: vec![3; 1000],
            },
            Xattr {
                index: INDEX_SECURITY,
                name: b"selinux".to_vec(),
                value: b"x".to_vec(),
            },
            Xattr {
                index: INDEX_USER,
                name: b"a".to_vec(),
                value: vec![],
            },
        ];
        let b = build_block(&v, 99, 5).unwrap();
        let mut got = parse_block(&b, 99, 5).unwrap();
        got.sort();
        let mut want = v.clone();
        want.sort();
        assert_eq!(got, want);
        assert!(parse_block(&b, 98, 5).is_err());
        let mut hostile = b.clone();
        put16(&mut hostile, BLOCK_HEADER_SIZE + E_VALUE_OFFS, 0xFFFF);
        assert!(parse_entries(&hostile, BLOCK_HEADER_SIZE, 0).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Xattr::from_full_name(b"user.x", b"1").unwrap().index, INDEX_USER);
        assert!(Xattr::from_full_name(b"system.posix_acl_access", b"").is_err());
        assert!(Xattr::from_full_name(b"user.", b"").is_err());
    }
}
