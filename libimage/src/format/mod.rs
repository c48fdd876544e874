//! The cryptimg on-disk structures (docs/FORMAT.md), one module each. Parsing,
//! validation of fixed fields, and checksums live here and nowhere else.

pub mod attrs;
pub mod bytes;
pub mod extent;
pub mod inode;
pub mod meta;
pub mod metablock;
pub mod metadecode;
pub mod snapshot;
pub mod superblock;
pub mod validate;
