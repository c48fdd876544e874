//! libimage: the cryptimg on-disk format and the image read/write API shared by
//! `mkfs-crypt`, `fsck-crypt` and `backup-crypt`. The crypto is the `fscrypt`
//! crate's.
//!
//! The format is specified in `docs/FORMAT.md`; each on-disk structure has one
//! module here with `read`/`write` (or `from_bytes`/`to_bytes`).

pub mod alloc;
pub mod atomic;
pub mod backup;
pub mod build;
pub mod bytes;
pub mod check;
pub mod create;
pub mod error;
pub mod extent;
pub mod finding;
pub mod fsout;
pub mod image;
pub mod inode;
pub mod keyfile;
pub mod lifecycle;
pub mod meta;
pub mod metablock;
pub mod metadecode;
pub mod parallel;
pub mod progress;
pub mod read;
pub mod snapshot;
pub mod source;
pub mod superblock;
#[doc(hidden)]
pub mod testkit;
pub mod validate;

pub use error::{Error, Result};

/// Block size and fscrypt data-unit size, in bytes.
pub const BLOCK_SIZE: usize = 4096;
/// Largest image, in blocks (2^36 blocks = 256 TiB).
pub const MAX_BLOCKS: u64 = 1 << 36;
