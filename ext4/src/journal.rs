//! The JBD2 superblock of a clean internal journal
//! (Documentation/filesystems/ext4/journal.rst, include/linux/jbd2.h
//! `journal_superblock_t`; e2fsprogs lib/ext2fs/mkjournal.c
//! `ext2fs_create_journal_superblock2`). All fields are big-endian.
//!
//! Journal block 0 holds it; `s_start` = 0 means the journal is empty, so
//! nothing is replayed and the other journal blocks are never read before
//! the kernel writes them. Like mke2fs 1.47, no journal feature is set (the
//! kernel turns on checksums itself when it mounts a metadata_csum fs).

use crate::{Error, Result};

/// `JBD2_MAGIC_NUMBER`.
pub const MAGIC: u32 = 0xC03B_3998;
/// `JBD2_SUPERBLOCK_V2`.
pub const BLOCKTYPE_SB_V2: u32 = 4;
pub const H_MAGIC: usize = 0x0;
pub const H_BLOCKTYPE: usize = 0x4;
pub const H_SEQUENCE: usize = 0x8;
pub const S_BLOCKSIZE: usize = 0xC;
pub const S_MAXLEN: usize = 0x10;
pub const S_FIRST: usize = 0x14;
pub const S_SEQUENCE: usize = 0x18;
pub const S_START: usize = 0x1C;
pub const S_ERRNO: usize = 0x20;
pub const S_FEATURE_COMPAT: usize = 0x24;
pub const S_FEATURE_INCOMPAT: usize = 0x28;
pub const S_FEATURE_RO_COMPAT: usize = 0x2C;
pub const S_UUID: usize = 0x30;
pub const S_NR_USERS: usize = 0x40;
/// Size of `journal_superblock_t`.
pub const SB_SIZE: usize = 1024;
/// `JBD2_MIN_JOURNAL_BLOCKS`.
pub const MIN_BLOCKS: u32 = 1024;

/// A journal superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalSuperblock {
    pub blocksize: u32,
    pub maxlen: u32,
    pub first: u32,
    pub sequence: u32,
    pub start: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    pub nr_users: u32,
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn put(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

impl JournalSuperblock {
    /// A clean, empty journal of `maxlen` blocks for the fs `uuid`, as mke2fs makes it.
    pub fn new_clean(maxlen: u32, uuid: [u8; 16]) -> Self {
        JournalSuperblock {
            blocksize: crate::BLOCK_SIZE as u32,
            maxlen,
            first: 1,
            sequence: 1,
            start: 0,
            feature_compat: 0,
            feature_incompat: 0,
            feature_ro_compat: 0,
            uuid,
            nr_users: 1,
        }
    }

    /// Encodes the 1024 bytes.
    pub fn to_bytes(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        put(&mut b, H_MAGIC, MAGIC);
        put(&mut b, H_BLOCKTYPE, BLOCKTYPE_SB_V2);
        put(&mut b, S_BLOCKSIZE, self.blocksize);
        put(&mut b, S_MAXLEN, self.maxlen);
        put(&mut b, S_FIRST, self.first);
        put(&mut b, S_SEQUENCE, self.sequence);
        put(&mut b, S_START, self.start);
        put(&mut b, S_FEATURE_COMPAT, self.feature_compat);
        put(&mut b, S_FEATURE_INCOMPAT, self.feature_incompat);
        put(&mut b, S_FEATURE_RO_COMPAT, self.feature_ro_compat);
        b[S_UUID..S_UUID + 16].copy_from_slice(&self.uuid);
        put(&mut b, S_NR_USERS, self.nr_users);
        b
    }

    /// Decodes and checks magic, block type (v1 or v2) and geometry.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |d: String| Error::corrupt("journal superblock", d);
        if b.len() < SB_SIZE {
            return Err(bad(format!("{} bytes", b.len())));
        }
        if be32(b, H_MAGIC) != MAGIC {
            return Err(bad(format!("magic {:#010x}", be32(b, H_MAGIC))));
        }
        let bt = be32(b, H_BLOCKTYPE);
        if bt != 3 && bt != BLOCKTYPE_SB_V2 {
            return Err(bad(format!("block type {bt}")));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[S_UUID..S_UUID + 16]);
        let s = JournalSuperblock {
            blocksize: be32(b, S_BLOCKSIZE),
            maxlen: be32(b, S_MAXLEN),
            first: be32(b, S_FIRST),
            sequence: be32(b, S_SEQUENCE),
            start: be32(b, S_START),
            feature_compat: be32(b, S_FEATURE_COMPAT),
            feature_incompat: be32(b, S_FEATURE_INCOMPAT),
            feature_ro_compat: be32(b, S_FEATURE_RO_COMPAT),
            uuid,
            nr_users: be32(b, S_NR_USERS),
        };
        if s.first == 0 || s.first >= s.maxlen || s.start >= s.maxlen.max(1) {
            return Err(bad(format!("s_first {}, s_start {}, s_maxlen {}", s.first, s.start, s.maxlen)));
        }
        Ok(s)
    }
}

/// mke2fs's default journal size in blocks for a filesystem of `blocks`
/// blocks (e2fsprogs lib/ext2fs/mkjournal.c `ext2fs_default_journal_size`),
/// capped here at 32768 blocks (128 MiB) so the journal is one extent.
pub fn default_blocks(blocks: u64) -> u32 {
    match blocks {
        0..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        _ => 32768,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let j = JournalSuperblock::new_clean(4096, [0x11; 16]);
        let b = j.to_bytes();
        assert_eq!(&b[..8], &[0xc0, 0x3b, 0x39, 0x98, 0, 0, 0, 4]);
        assert_eq!(JournalSuperblock::from_bytes(&b).unwrap(), j);
        assert!(JournalSuperblock::from_bytes(&b[..100]).is_err());
        assert!(JournalSuperblock::from_bytes(&[0u8; 1024]).is_err());
    }
}
