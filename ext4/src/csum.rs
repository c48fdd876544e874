//! crc32c as ext4 uses it.
//!
//! The kernel's `ext4_chksum(sbi, crc, address, length)` (fs/ext4/ext4.h) is
//! `crc32c(crc, address, length)`: the Castagnoli CRC with the given seed and
//! *no* final inversion (e2fsprogs `ext2fs_crc32c_le`). The standard CRC-32C
//! is `!raw(!0, data)`, so `raw(seed, d) = !crc32c_append(!seed, d)`.
//!
//! Seeds (Documentation/filesystems/ext4/checksums.rst): the filesystem seed is
//! `raw(!0, s_uuid)` (or `s_checksum_seed` with the metadata_csum_seed
//! feature); an inode's seed is `raw(raw(fs_seed, le32 ino), le32 generation)`.

/// `ext4_chksum`: crc32c of `data` continuing from `seed`, no final xor.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The filesystem checksum seed: `ext4_chksum(~0, s_uuid)` (fs/ext4/super.c,
/// `sbi->s_csum_seed`).
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c_raw(!0, uuid)
}

/// An inode's checksum seed (fs/ext4/inode.c `__ext4_iget`: `ei->i_csum_seed`).
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = crc32c_raw(fs_seed, &ino.to_le_bytes());
    crc32c_raw(s, &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_matches_standard_crc32c() {
        // Standard CRC-32C("123456789") = 0xE3069283.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
        // Continuing a raw crc equals one call over the concatenation.
        let a = crc32c_raw(0x1234_5678, b"hello ");
        assert_eq!(crc32c_raw(a, b"world"), crc32c_raw(0x1234_5678, b"hello world"));
    }
}
