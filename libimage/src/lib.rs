//! libimage: the cryptimg on-disk format and the image read/write API shared by
//! `mkfs-crypt`, `fsck-crypt` and `backup-crypt`. The crypto is the `fscrypt`
//! crate's.
//!
//! Layers, bottom up (docs/ARCHITECTURE.md):
//! - [`format`]: the on-disk structures, one module each, specified in
//!   `docs/FORMAT.md`, with `from_bytes`/`to_bytes` (or `read`/`write`);
//! - [`engine`]: an open image (block I/O with fault injection, metadata
//!   load and commit, allocation), key files, atomic output files;
//! - [`ops`]: what the tools do (create, read/extract, check, lifecycle, backup);
//! - [`tree`]: plaintext trees in and out (directory walk, tar reader, tree writer).
//!
//! All `unsafe` code (the libc calls) is in the private `sys` module.

#![deny(unsafe_code)]

pub mod engine;
pub mod error;
pub mod exit;
pub mod finding;
pub mod format;
pub mod ops;
pub mod progress;
mod sys;
pub mod tree;

pub use error::{Error, Result};

/// Block size and fscrypt data-unit size, in bytes.
pub const BLOCK_SIZE: usize = 4096;
/// Largest image, in blocks (2^36 blocks = 256 TiB).
pub const MAX_BLOCKS: u64 = 1 << 36;
