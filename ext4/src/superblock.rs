//! The ext4 superblock (Documentation/filesystems/ext4/super.rst, ext4.h
//! `struct ext4_super_block`, e2fsprogs lib/ext2fs/ext2_fs.h).
//!
//! 1024 bytes at byte offset 1024 of the device; backups at the start of
//! groups 0, 1 and powers of 3, 5 and 7 (`sparse_super`). Only the fields
//! this crate reads or writes are modelled; [`Superblock::to_bytes`] writes
//! every other byte as zero.

use crate::csum::crc32c_raw;
use crate::{le16, le32, put16, put32, Error, Result};

/// Size of the superblock.
pub const SB_SIZE: usize = 1024;
/// Byte offset of the primary superblock on the device.
pub const SB_OFFSET: u64 = 1024;
/// `EXT4_SUPER_MAGIC`.
pub const MAGIC: u16 = 0xEF53;

pub const S_INODES_COUNT: usize = 0x00;
pub const S_BLOCKS_COUNT_LO: usize = 0x04;
pub const S_R_BLOCKS_COUNT_LO: usize = 0x08;
pub const S_FREE_BLOCKS_COUNT_LO: usize = 0x0C;
pub const S_FREE_INODES_COUNT: usize = 0x10;
pub const S_FIRST_DATA_BLOCK: usize = 0x14;
pub const S_LOG_BLOCK_SIZE: usize = 0x18;
pub const S_LOG_CLUSTER_SIZE: usize = 0x1C;
pub const S_BLOCKS_PER_GROUP: usize = 0x20;
pub const S_CLUSTERS_PER_GROUP: usize = 0x24;
pub const S_INODES_PER_GROUP: usize = 0x28;
pub const S_MTIME: usize = 0x2C;
pub const S_WTIME: usize = 0x30;
pub const S_MAX_MNT_COUNT: usize = 0x36;
pub const S_MAGIC: usize = 0x38;
pub const S_STATE: usize = 0x3A;
pub const S_ERRORS: usize = 0x3C;
pub const S_LASTCHECK: usize = 0x40;
pub const S_REV_LEVEL: usize = 0x4C;
pub const S_FIRST_INO: usize = 0x54;
pub const S_INODE_SIZE: usize = 0x58;
pub const S_BLOCK_GROUP_NR: usize = 0x5A;
pub const S_FEATURE_COMPAT: usize = 0x5C;
pub const S_FEATURE_INCOMPAT: usize = 0x60;
pub const S_FEATURE_RO_COMPAT: usize = 0x64;
pub const S_UUID: usize = 0x68;
pub const S_VOLUME_NAME: usize = 0x78;
pub const S_JOURNAL_INUM: usize = 0xE0;
pub const S_HASH_SEED: usize = 0xEC;
pub const S_DEF_HASH_VERSION: usize = 0xFC;
pub const S_JNL_BACKUP_TYPE: usize = 0xFD;
pub const S_DESC_SIZE: usize = 0xFE;
pub const S_DEFAULT_MOUNT_OPTS: usize = 0x100;
pub const S_MKFS_TIME: usize = 0x108;
pub const S_JNL_BLOCKS: usize = 0x10C;
pub const S_BLOCKS_COUNT_HI: usize = 0x150;
pub const S_R_BLOCKS_COUNT_HI: usize = 0x154;
pub const S_FREE_BLOCKS_COUNT_HI: usize = 0x158;
pub const S_MIN_EXTRA_ISIZE: usize = 0x15C;
pub const S_WANT_EXTRA_ISIZE: usize = 0x15E;
pub const S_FLAGS: usize = 0x160;
pub const S_LOG_GROUPS_PER_FLEX: usize = 0x174;
pub const S_CHECKSUM_TYPE: usize = 0x175;
pub const S_ENCRYPT_ALGOS: usize = 0x254;
pub const S_CHECKSUM: usize = 0x3FC;

/// `s_feature_compat` bits.
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_EXT_ATTR: u32 = 0x8;
pub const COMPAT_RESIZE_INODE: u32 = 0x10;
pub const COMPAT_DIR_INDEX: u32 = 0x20;
/// `s_feature_incompat` bits.
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_RECOVER: u32 = 0x4;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const INCOMPAT_ENCRYPT: u32 = 0x10000;
/// `s_feature_ro_compat` bits.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Incompat features this crate understands (a reader refuses others).
pub const INCOMPAT_KNOWN: u32 =
    INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_ENCRYPT;

/// `s_flags`: `EXT2_FLAGS_SIGNED_HASH` / `EXT2_FLAGS_UNSIGNED_HASH`.
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
pub const FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// `s_def_hash_version`: `DX_HASH_HALF_MD4`.
pub const HASH_HALF_MD4: u8 = 1;
/// `s_checksum_type`: `EXT4_CRC32C_CHKSUM`.
pub const CHECKSUM_CRC32C: u8 = 1;
/// `s_state`: `EXT4_VALID_FS` (cleanly unmounted).
pub const STATE_VALID: u16 = 1;
/// `s_errors`: `EXT4_ERRORS_CONTINUE`.
pub const ERRORS_CONTINUE: u16 = 1;
/// `s_rev_level`: `EXT4_DYNAMIC_REV`.
pub const REV_DYNAMIC: u32 = 1;
/// `s_jnl_backup_type`: `EXT3_JNL_BACKUP_BLOCKS` (s_jnl_blocks holds a copy
/// of the journal inode's i_block, i_size_high and i_size).
pub const JNL_BACKUP_BLOCKS: u8 = 1;
/// `s_encrypt_algos[0]`: `EXT4_ENCRYPTION_MODE_AES_256_XTS` (informational).
pub const ENCRYPTION_MODE_AES_256_XTS: u8 = 1;
/// `s_encrypt_algos[1]`: `EXT4_ENCRYPTION_MODE_AES_256_CTS`.
pub const ENCRYPTION_MODE_AES_256_CTS: u8 = 4;

/// The superblock fields this crate uses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub log_block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub mtime: u32,
    pub wtime: u32,
    pub state: u16,
    pub errors: u16,
    pub lastcheck: u32,
    pub rev_level: u32,
    pub first_ino: u32,
    pub inode_size: u16,
    pub block_group_nr: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub journal_inum: u32,
    pub hash_seed: [u8; 16],
    pub def_hash_version: u8,
    pub jnl_backup_type: u8,
    pub desc_size: u16,
    pub mkfs_time: u32,
    pub jnl_blocks: [u32; 17],
    pub min_extra_isize: u16,
    pub want_extra_isize: u16,
    pub flags: u32,
    pub log_groups_per_flex: u8,
    pub checksum_type: u8,
    pub encrypt_algos: [u8; 4],
}

impl Superblock {
    /// Group count: `ceil((blocks_count - first_data_block) / blocks_per_group)`.
    pub fn group_count(&self) -> u64 {
        let bpg = u64::from(self.blocks_per_group.max(1));
        (self.blocks_count.saturating_sub(u64::from(self.first_data_block))).div_ceil(bpg)
    }

    /// Whether metadata_csum is on.
    pub fn has_metadata_csum(&self) -> bool {
        self.feature_ro_compat & RO_COMPAT_METADATA_CSUM != 0
    }

    /// Encodes the 1024 bytes, with `s_checksum` = `ext4_chksum(~0, sb[..0x3FC])`
    /// (fs/ext4/super.c `ext4_superblock_csum`) when metadata_csum is set.
    pub fn to_bytes(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        put32(&mut b, S_INODES_COUNT, self.inodes_count);
        put32(&mut b, S_BLOCKS_COUNT_LO, self.blocks_count as u32);
        put32(&mut b, S_R_BLOCKS_COUNT_LO, self.r_blocks_count as u32);
        put32(&mut b, S_FREE_BLOCKS_COUNT_LO, self.free_blocks_count as u32);
        put32(&mut b, S_FREE_INODES_COUNT, self.free_inodes_count);
        put32(&mut b, S_FIRST_DATA_BLOCK, self.first_data_block);
        put32(&mut b, S_LOG_BLOCK_SIZE, self.log_block_size);
        put32(&mut b, S_LOG_CLUSTER_SIZE, self.log_block_size);
        put32(&mut b, S_BLOCKS_PER_GROUP, self.blocks_per_group);
        put32(&mut b, S_CLUSTERS_PER_GROUP, self.blocks_per_group);
        put32(&mut b, S_INODES_PER_GROUP, self.inodes_per_group);
        put32(&mut b, S_MTIME, self.mtime);
        put32(&mut b, S_WTIME, self.wtime);
        put16(&mut b, S_MAX_MNT_COUNT, 0xFFFF); // -1: no mount-count check
        put16(&mut b, S_MAGIC, MAGIC);
        put16(&mut b, S_STATE, self.state);
        put16(&mut b, S_ERRORS, self.errors);
        put32(&mut b, S_LASTCHECK, self.lastcheck);
        put32(&mut b, S_REV_LEVEL, self.rev_level);
        put32(&mut b, S_FIRST_INO, self.first_ino);
        put16(&mut b, S_INODE_SIZE, self.inode_size);
        put16(&mut b, S_BLOCK_GROUP_NR, self.block_group_nr);
        put32(&mut b, S_FEATURE_COMPAT, self.feature_compat);
        put32(&mut b, S_FEATURE_INCOMPAT, self.feature_incompat);
        put32(&mut b, S_FEATURE_RO_COMPAT, self.feature_ro_compat);
        b[S_UUID..S_UUID + 16].copy_from_slice(&self.uuid);
        b[S_VOLUME_NAME..S_VOLUME_NAME + 16].copy_from_slice(&self.volume_name);
        put32(&mut b, S_JOURNAL_INUM, self.journal_inum);
        b[S_HASH_SEED..S_HASH_SEED + 16].copy_from_slice(&self.hash_seed);
        b[S_DEF_HASH_VERSION] = self.def_hash_version;
        b[S_JNL_BACKUP_TYPE] = self.jnl_backup_type;
        put16(&mut b, S_DESC_SIZE, self.desc_size);
        put32(&mut b, S_MKFS_TIME, self.mkfs_time);
        for (i, w) in self.jnl_blocks.iter().enumerate() {
            put32(&mut b, S_JNL_BLOCKS + 4 * i, *w);
        }
        put32(&mut b, S_BLOCKS_COUNT_HI, (self.blocks_count >> 32) as u32);
        put32(&mut b, S_R_BLOCKS_COUNT_HI, (self.r_blocks_count >> 32) as u32);
        put32(&mut b, S_FREE_BLOCKS_COUNT_HI, (self.free_blocks_count >> 32) as u32);
        put16(&mut b, S_MIN_EXTRA_ISIZE, self.min_extra_isize);
        put16(&mut b, S_WANT_EXTRA_ISIZE, self.want_extra_isize);
        put32(&mut b, S_FLAGS, self.flags);
        b[S_LOG_GROUPS_PER_FLEX] = self.log_groups_per_flex;
        b[S_CHECKSUM_TYPE] = self.checksum_type;
        b[S_ENCRYPT_ALGOS..S_ENCRYPT_ALGOS + 4].copy_from_slice(&self.encrypt_algos);
        if self.has_metadata_csum() {
            let c = crc32c_raw(!0, &b[..S_CHECKSUM]);
            put32(&mut b, S_CHECKSUM, c);
        }
        b
    }

    /// Decodes and validates a superblock: magic, revision, 4 KiB blocks (the
    /// only size this crate handles), sane group geometry, known incompat
    /// features, and the checksum when metadata_csum is set.
    pub fn from_bytes(b: &[u8]) -> Result<Superblock> {
        let bad = |d: String| Error::corrupt("superblock", d);
        if b.len() < SB_SIZE {
            return Err(bad(format!("{} bytes, need {SB_SIZE}", b.len())));
        }
        if le16(b, S_MAGIC) != MAGIC {
            return Err(bad(format!("magic {:#06x} at offset 0x38, expected 0xef53", le16(b, S_MAGIC))));
        }
        let mut jnl_blocks = [0u32; 17];
        for (i, w) in jnl_blocks.iter_mut().enumerate() {
            *w = le32(b, S_JNL_BLOCKS + 4 * i);
        }
        let arr16 = |off: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[off..off + 16]);
            a
        };
        let (uuid, volume_name, hash_seed) = (arr16(S_UUID), arr16(S_VOLUME_NAME), arr16(S_HASH_SEED));
        let sb = Superblock {
            inodes_count: le32(b, S_INODES_COUNT),
            blocks_count: u64::from(le32(b, S_BLOCKS_COUNT_LO)) | u64::from(le32(b, S_BLOCKS_COUNT_HI)) << 32,
            r_blocks_count: u64::from(le32(b, S_R_BLOCKS_COUNT_LO)) | u64::from(le32(b, S_R_BLOCKS_COUNT_HI)) << 32,
            free_blocks_count: u64::from(le32(b, S_FREE_BLOCKS_COUNT_LO)) | u64::from(le32(b, S_FREE_BLOCKS_COUNT_HI)) << 32,
            free_inodes_count: le32(b, S_FREE_INODES_COUNT),
            first_data_block: le32(b, S_FIRST_DATA_BLOCK),
            log_block_size: le32(b, S_LOG_BLOCK_SIZE),
            blocks_per_group: le32(b, S_BLOCKS_PER_GROUP),
            inodes_per_group: le32(b, S_INODES_PER_GROUP),
            mtime: le32(b, S_MTIME),
            wtime: le32(b, S_WTIME),
            state: le16(b, S_STATE),
            errors: le16(b, S_ERRORS),
            lastcheck: le32(b, S_LASTCHECK),
            rev_level: le32(b, S_REV_LEVEL),
            first_ino: le32(b, S_FIRST_INO),
            inode_size: le16(b, S_INODE_SIZE),
            block_group_nr: le16(b, S_BLOCK_GROUP_NR),
            feature_compat: le32(b, S_FEATURE_COMPAT),
            feature_incompat: le32(b, S_FEATURE_INCOMPAT),
            feature_ro_compat: le32(b, S_FEATURE_RO_COMPAT),
            uuid,
            volume_name,
            journal_inum: le32(b, S_JOURNAL_INUM),
            hash_seed,
            def_hash_version: b[S_DEF_HASH_VERSION],
            jnl_backup_type: b[S_JNL_BACKUP_TYPE],
            desc_size: le16(b, S_DESC_SIZE),
            mkfs_time: le32(b, S_MKFS_TIME),
            jnl_blocks,
            min_extra_isize: le16(b, S_MIN_EXTRA_ISIZE),
            want_extra_isize: le16(b, S_WANT_EXTRA_ISIZE),
            flags: le32(b, S_FLAGS),
            log_groups_per_flex: b[S_LOG_GROUPS_PER_FLEX],
            checksum_type: b[S_CHECKSUM_TYPE],
            encrypt_algos: [
                b[S_ENCRYPT_ALGOS],
                b[S_ENCRYPT_ALGOS + 1],
                b[S_ENCRYPT_ALGOS + 2],
                b[S_ENCRYPT_ALGOS + 3],
            ],
        };
        if sb.rev_level != REV_DYNAMIC {
            return Err(bad(format!("revision {} (only dynamic revision 1 is handled)", sb.rev_level)));
        }
        if sb.log_block_size != 2 {
            return Err(bad(format!(
                "s_log_block_size {} (block size {}); only 4096-byte blocks are handled",
                sb.log_block_size,
                1024u64.checked_shl(sb.log_block_size).unwrap_or(0)
            )));
        }
        if sb.blocks_per_group == 0 || sb.blocks_per_group > 32768 || !sb.blocks_per_group.is_multiple_of(8) {
            return Err(bad(format!("s_blocks_per_group {}", sb.blocks_per_group)));
        }
        if sb.inodes_per_group == 0 || sb.inodes_per_group > 32768 || !sb.inodes_per_group.is_multiple_of(8) {
            return Err(bad(format!("s_inodes_per_group {}", sb.inodes_per_group)));
        }
        if u64::from(sb.inodes_count) != u64::from(sb.inodes_per_group) * sb.group_count() {
            return Err(bad(format!(
                "s_inodes_count {} is not {} groups x {} inodes",
                sb.inodes_count,
                sb.group_count(),
                sb.inodes_per_group
            )));
        }
        if sb.inode_size < 128 || !sb.inode_size.is_power_of_two() || usize::from(sb.inode_size) > crate::BLOCK_SIZE {
            return Err(bad(format!("s_inode_size {}", sb.inode_size)));
        }
        let unknown = sb.feature_incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(bad(format!("unsupported incompat features {unknown:#x}")));
        }
        if sb.feature_incompat & INCOMPAT_64BIT != 0 && (sb.desc_size < 64 || !sb.desc_size.is_power_of_two()) {
            return Err(bad(format!("s_desc_size {} with the 64bit feature", sb.desc_size)));
        }
        if sb.has_metadata_csum() {
            let want = crc32c_raw(!0, &b[..S_CHECKSUM]);
            let have = le32(b, S_CHECKSUM);
            if want != have {
                return Err(bad(format!("checksum {have:#010x} at offset 0x3fc, computed {want:#010x}")));
            }
        }
        Ok(sb)
    }

    /// The descriptor size in use (32 without the 64bit feature).
    pub fn desc_size(&self) -> usize {
        if self.feature_incompat & INCOMPAT_64BIT != 0 {
            usize::from(self.desc_size)
        } else {
            32
        }
    }
}

/// Whether group `g` holds a superblock backup under `sparse_super`: groups 0,
/// 1 and powers of 3, 5 and 7 (e2fsprogs lib/ext2fs/closefs.c
/// `ext2fs_bg_has_super`).
pub fn group_has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    if g.is_multiple_of(2) {
        return false;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut p = base;
        while p < g {
            p *= base;
        }
        p == g
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let got: Vec<u64> = (0..100).filter(|&g| group_has_super(g)).collect();
        assert_eq!(got, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut b = [0u8; SB_SIZE];
        assert!(Superblock::from_bytes(&b[..10]).is_err());
        assert!(Superblock::from_bytes(&b).is_err());
        put16(&mut b, S_MAGIC, MAGIC);
        for v in [0u32, 1, 2, 31, 0xFFFF_FFFF] {
            put32(&mut b, S_LOG_BLOCK_SIZE, v);
            put32(&mut b, S_REV_LEVEL, 1);
            assert!(Superblock::from_bytes(&b).is_err());
        }
    }
}
