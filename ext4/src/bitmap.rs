//! Block and inode bitmaps (Documentation/filesystems/ext4/bitmaps.rst) and
//! their checksums (checksums.rst; fs/ext4/bitmap.c).
//!
//! Bit `i` of byte `i / 8` (LSB first) is block/inode `i` of the group. The
//! block bitmap checksum covers `clusters_per_group / 8` bytes, the inode
//! bitmap checksum `inodes_per_group / 8` bytes; both are
//! `crc32c(fs_seed, bitmap)`, split lo/hi into the descriptor. Bits past the
//! end of the group (the last group's missing blocks; inodes past
//! inodes_per_group in the block) are set, as `ext4_mark_bitmap_end` does.

use crate::csum::crc32c_raw;

/// Tests bit `i`; out-of-range bits read as set (in use).
pub fn test(b: &[u8], i: usize) -> bool {
    b.get(i / 8).is_none_or(|x| x & (1 << (i % 8)) != 0)
}

/// Sets bit `i` (ignored when out of range).
pub fn set(b: &mut [u8], i: usize) {
    if let Some(x) = b.get_mut(i / 8) {
        *x |= 1 << (i % 8);
    }
}

/// Clears bit `i` (ignored when out of range).
pub fn clear(b: &mut [u8], i: usize) {
    if let Some(x) = b.get_mut(i / 8) {
        *x &= !(1 << (i % 8));
    }
}

/// Sets bits `from..` up to the end of `b` (`ext4_mark_bitmap_end`).
pub fn mark_end(b: &mut [u8], from: usize) {
    for i in from..b.len() * 8 {
        set(b, i);
    }
}

/// Counts clear bits among the first `n`.
pub fn count_free(b: &[u8], n: usize) -> usize {
    (0..n).filter(|&i| !test(b, i)).count()
}

/// The bitmap checksum over the first `bytes` bytes.
pub fn csum(fs_seed: u32, b: &[u8], bytes: usize) -> u32 {
    crc32c_raw(fs_seed, &b[..bytes.min(b.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let mut b = [0u8; 4];
        set(&mut b, 0);
        set(&mut b, 9);
        assert!(test(&b, 0) && test(&b, 9) && !test(&b, 1));
        assert!(test(&b, 99), "out of range reads as used");
        clear(&mut b, 9);
        assert!(!test(&b, 9));
        mark_end(&mut b, 30);
        assert_eq!(b[3], 0xC0);
        assert_eq!(count_free(&b, 32), 29);
    }
}
