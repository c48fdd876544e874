//! ext4 on-disk structures and an offline writer for fscrypt-encrypted ext4.
//!
//! Every structure has one module with `from_bytes` (validating; never panics
//! on hostile bytes) and `to_bytes`, named offset constants and doc comments
//! citing the kernel's Documentation/filesystems/ext4/*.rst, fs/ext4/ext4.h
//! and e2fsprogs lib/ext2fs. docs/EXT4.md explains how they fit together.
//!
//! - [`csum`]: crc32c as ext4 uses it (raw, no final inversion) and the seeds;
//! - [`superblock`], [`group_desc`], [`bitmap`]: the block-group machinery;
//! - [`inode`], [`extent`]: inodes (256 bytes, extra_isize 32) and extent trees;
//! - [`dir`]: linear directory blocks with the checksum tail;
//! - [`xattr`]: in-inode and block extended attributes (fscrypt context at
//!   name index 9, name "c");
//! - [`journal`]: the JBD2 superblock of a clean internal journal;
//! - [`writer`]: builds a whole image from a stream of entries.

#![forbid(unsafe_code)]

pub mod bitmap;
pub mod csum;
pub mod dir;
pub mod error;
pub mod extent;
pub mod group_desc;
pub mod htree;
pub mod inode;
pub mod journal;
pub mod read;
pub mod superblock;
pub mod writer;
pub mod xattr;

pub use error::{Error, Result};

/// The only block size this crate writes (4 KiB, `s_log_block_size` = 2).
pub const BLOCK_SIZE: usize = 4096;
/// [`BLOCK_SIZE`] as u64.
pub const BLOCK_SIZE_U64: u64 = BLOCK_SIZE as u64;
/// Blocks per group with 4 KiB blocks (one bitmap block = 8 × 4096 bits).
pub const BLOCKS_PER_GROUP: u32 = 32768;
/// Inode size written (`s_inode_size`).
pub const INODE_SIZE: usize = 256;
/// Descriptor size with the 64bit feature (`s_desc_size`).
pub const DESC_SIZE: usize = 64;

/// Reserved inode numbers (ext4.h `EXT4_*_INO`).
pub const BAD_INO: u32 = 1;
/// The root directory.
pub const ROOT_INO: u32 = 2;
/// The journal inode (`s_journal_inum`).
pub const JOURNAL_INO: u32 = 8;
/// The first non-reserved inode (`s_first_ino`), used by lost+found.
pub const FIRST_INO: u32 = 11;

/// Reads a little-endian u16 at `off` (caller guarantees bounds).
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
/// Reads a little-endian u32 at `off` (caller guarantees bounds).
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
