//! The engine under every operation: an open image with its block I/O,
//! metadata load and copy-on-write commit, allocation map and crypto
//! fan-out over cores; key files; files that appear atomically.

pub mod alloc;
pub mod atomic;
pub mod bgio;
pub mod crc;
pub mod image;
pub mod keyfile;
pub mod lock;
pub mod parallel;
pub mod process;
pub mod space;
