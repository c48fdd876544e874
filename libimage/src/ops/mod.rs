//! What the tools do, built on the [`crate::engine`]: create an image from a
//! tree, read and extract it, check and repair it, snapshot/rekey/update/delete,
//! and keyless backup and restore.

pub mod backup;
pub mod build;
pub mod check;
pub mod create;
pub mod ext4;
pub mod lifecycle;
pub mod read;
