//! 64-byte group descriptors (Documentation/filesystems/ext4/group_descr.rst,
//! ext4.h `struct ext4_group_desc`).
//!
//! The table starts in the block after the superblock's block (block 1 with
//! 4 KiB blocks) and is copied after every backup superblock.

use crate::csum::crc32c_raw;
use crate::{le16, le32, put16, put32, Error, Result, DESC_SIZE};

pub const BG_BLOCK_BITMAP_LO: usize = 0x00;
pub const BG_INODE_BITMAP_LO: usize = 0x04;
pub const BG_INODE_TABLE_LO: usize = 0x08;
pub const BG_FREE_BLOCKS_COUNT_LO: usize = 0x0C;
pub const BG_FREE_INODES_COUNT_LO: usize = 0x0E;
pub const BG_USED_DIRS_COUNT_LO: usize = 0x10;
pub const BG_FLAGS: usize = 0x12;
pub const BG_BLOCK_BITMAP_CSUM_LO: usize = 0x18;
pub const BG_INODE_BITMAP_CSUM_LO: usize = 0x1A;
pub const BG_ITABLE_UNUSED_LO: usize = 0x1C;
pub const BG_CHECKSUM: usize = 0x1E;
pub const BG_BLOCK_BITMAP_HI: usize = 0x20;
pub const BG_INODE_BITMAP_HI: usize = 0x24;
pub const BG_INODE_TABLE_HI: usize = 0x28;
pub const BG_FREE_BLOCKS_COUNT_HI: usize = 0x2C;
pub const BG_FREE_INODES_COUNT_HI: usize = 0x2E;
pub const BG_USED_DIRS_COUNT_HI: usize = 0x30;
pub const BG_ITABLE_UNUSED_HI: usize = 0x32;
pub const BG_BLOCK_BITMAP_CSUM_HI: usize = 0x38;
pub const BG_INODE_BITMAP_CSUM_HI: usize = 0x3A;

/// `bg_flags`: `EXT4_BG_INODE_UNINIT`, `EXT4_BG_BLOCK_UNINIT`, `EXT4_BG_INODE_ZEROED`.
pub const BG_INODE_UNINIT: u16 = 0x1;
pub const BG_BLOCK_UNINIT: u16 = 0x2;
pub const BG_INODE_ZEROED: u16 = 0x4;

/// One group descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub used_dirs_count: u32,
    pub flags: u16,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    pub itable_unused: u32,
    pub checksum: u16,
}

impl GroupDesc {
    /// Encodes the 64 bytes with `bg_checksum` computed for group `group`
    /// (fs/ext4/super.c `ext4_group_desc_csum`: the low 16 bits of
    /// crc32c(fs_seed, le32 group ‖ desc with bg_checksum zeroed)).
    pub fn to_bytes(&self, fs_seed: u32, group: u32) -> [u8; DESC_SIZE] {
        let mut b = [0u8; DESC_SIZE];
        put32(&mut b, BG_BLOCK_BITMAP_LO, self.block_bitmap as u32);
        put32(&mut b, BG_INODE_BITMAP_LO, self.inode_bitmap as u32);
        put32(&mut b, BG_INODE_TABLE_LO, self.inode_table as u32);
        put16(&mut b, BG_FREE_BLOCKS_COUNT_LO, self.free_blocks_count as u16);
        put16(&mut b, BG_FREE_INODES_COUNT_LO, self.free_inodes_count as u16);
        put16(&mut b, BG_USED_DIRS_COUNT_LO, self.used_dirs_count as u16);
        put16(&mut b, BG_FLAGS, self.flags);
        put16(&mut b, BG_BLOCK_BITMAP_CSUM_LO, self.block_bitmap_csum as u16);
        put16(&mut b, BG_INODE_BITMAP_CSUM_LO, self.inode_bitmap_csum as u16);
        put16(&mut b, BG_ITABLE_UNUSED_LO, self.itable_unused as u16);
        put32(&mut b, BG_BLOCK_BITMAP_HI, (self.block_bitmap >> 32) as u32);
        put32(&mut b, BG_INODE_BITMAP_HI, (self.inode_bitmap >> 32) as u32);
        put32(&mut b, BG_INODE_TABLE_HI, (self.inode_table >> 32) as u32);
        put16(&mut b, BG_FREE_BLOCKS_COUNT_HI, (self.free_blocks_count >> 16) as u16);
        put16(&mut b, BG_FREE_INODES_COUNT_HI, (self.free_inodes_count >> 16) as u16);
        put16(&mut b, BG_USED_DIRS_COUNT_HI, (self.used_dirs_count >> 16) as u16);
        put16(&mut b, BG_ITABLE_UNUSED_HI, (self.itable_unused >> 16) as u16);
        put16(&mut b, BG_BLOCK_BITMAP_CSUM_HI, (self.block_bitmap_csum >> 16) as u16);
        put16(&mut b, BG_INODE_BITMAP_CSUM_HI, (self.inode_bitmap_csum >> 16) as u16);
        let c = desc_csum(fs_seed, group, &b);
        put16(&mut b, BG_CHECKSUM, c);
        b
    }

    /// Decodes and verifies one 64-byte descriptor of group `group`.
    pub fn from_bytes(b: &[u8], fs_seed: u32, group: u32) -> Result<GroupDesc> {
        if b.len() < DESC_SIZE {
            return Err(Error::corrupt("group descriptor", format!("group {group}: {} bytes", b.len())));
        }
        let lohi32 = |lo: usize, hi: usize| u64::from(le32(b, lo)) | u64::from(le32(b, hi)) << 32;
        let lohi16 = |lo: usize, hi: usize| u32::from(le16(b, lo)) | u32::from(le16(b, hi)) << 16;
        let d = GroupDesc {
            block_bitmap: lohi32(BG_BLOCK_BITMAP_LO, BG_BLOCK_BITMAP_HI),
            inode_bitmap: lohi32(BG_INODE_BITMAP_LO, BG_INODE_BITMAP_HI),
            inode_table: lohi32(BG_INODE_TABLE_LO, BG_INODE_TABLE_HI),
            free_blocks_count: lohi16(BG_FREE_BLOCKS_COUNT_LO, BG_FREE_BLOCKS_COUNT_HI),
            free_inodes_count: lohi16(BG_FREE_INODES_COUNT_LO, BG_FREE_INODES_COUNT_HI),
            used_dirs_count: lohi16(BG_USED_DIRS_COUNT_LO, BG_USED_DIRS_COUNT_HI),
            flags: le16(b, BG_FLAGS),
            block_bitmap_csum: lohi16(BG_BLOCK_BITMAP_CSUM_LO, BG_BLOCK_BITMAP_CSUM_HI),
            inode_bitmap_csum: lohi16(BG_INODE_BITMAP_CSUM_LO, BG_INODE_BITMAP_CSUM_HI),
            itable_unused: lohi16(BG_ITABLE_UNUSED_LO, BG_ITABLE_UNUSED_HI),
            checksum: le16(b, BG_CHECKSUM),
        };
        let want = desc_csum(fs_seed, group, &b[..DESC_SIZE]);
        if want != d.checksum {
            return Err(Error::corrupt(
                "group descriptor",
                format!("group {group}: bg_checksum {:#06x}, computed {want:#06x}", d.checksum),
            ));
        }
        Ok(d)
    }
}

/// crc32c(fs_seed, le32 group ‖ desc[..0x1E] ‖ 0u16 ‖ desc[0x20..]) & 0xFFFF.
fn desc_csum(fs_seed: u32, group: u32, d: &[u8]) -> u16 {
    let mut c = crc32c_raw(fs_seed, &group.to_le_bytes());
    c = crc32c_raw(c, &d[..BG_CHECKSUM]);
    c = crc32c_raw(c, &[0, 0]);
    c = crc32c_raw(c, &d[BG_CHECKSUM + 2..DESC_SIZE]);
    c as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let d = GroupDesc {
            block_bitmap: 0x1_0000_0010,
            inode_bitmap: 17,
            inode_table: 18,
            free_blocks_count: 70000,
            free_inodes_count: 5,
            used_dirs_count: 3,
            flags: BG_INODE_ZEROED,
            block_bitmap_csum: 0xdead_beef,
            inode_bitmap_csum: 0x1234_5678,
            itable_unused: 9,
            checksum: 0,
        };
        let b = d.to_bytes(42, 7);
        let back = GroupDesc::from_bytes(&b, 42, 7).unwrap();
        assert_eq!(
            GroupDesc {
                checksum: 0,
                ..back.clone()
            },
            d
        );
        assert!(GroupDesc::from_bytes(&b, 42, 8).is_err());
        let mut bad = b;
        bad[3] ^= 1;
        assert!(GroupDesc::from_bytes(&bad, 42, 7).is_err());
        assert!(GroupDesc::from_bytes(&b[..10], 42, 7).is_err());
    }
}
