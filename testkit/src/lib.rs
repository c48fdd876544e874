//! Test support for the cryptimg workspace. A dev-dependency only
//! (`publish = false`); nothing here is compiled into a shipped crate.
//!
//! - [`tree`]: a tree full of edge cases, a tree comparator, a
//!   deterministic PRNG;
//! - [`tools`]: skipping (or, under `CI=true`, failing) when a tool or
//!   facility is missing, and finding the workspace binaries;
//! - `backup` (feature `backup`): backup images and archives built from
//!   ciphertext, and the hostile-archive corpus;
//! - [`kernel`]: the kernel harness: capability detection, loop mounts,
//!   the fscrypt ioctls, e2fsck/mkfs/debugfs helpers (docs/TESTING.md,
//!   "Kernel oracle").
//!
//! The one `unsafe` module is the private `sys` (the fscrypt ioctls).

#![deny(unsafe_code)]

#[cfg(feature = "backup")]
pub mod backup;
pub mod kernel;
mod sys;
pub mod tools;
pub mod tree;

pub use tools::{current_test, in_ci, require_tool, skip_or_fail, workspace_bin};
pub use tree::{
    is_sparse, make_tricky_tree, running_as_root, stamp_times, tree_diff, tree_equal, TestRng, TreeFeatures, HARD_LINK_NAMES, SPARSE_NAME,
};
