//! The check report: one versioned document with the findings, the repairs,
//! and a summary (counts, key coverage, bytes checked). Serialised as the
//! `fsck-crypt check --json` output.

use serde::Serialize;

use super::Repair;
use crate::finding::Finding;

/// Version of the JSON report document (`format_version`). Bumped on any
/// incompatible change to its shape.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// What the report says about data checked with a key, since AES-XTS has no
/// authentication tag.
pub const DATA_NOTE: &str = "AES-256-XTS carries no authentication tag: an extent counts as decrypting with a key when its \
context names that key's identifier and its ciphertext crc32c matches the extent record; a change that also rewrites \
the crc32c cannot be detected without a MAC";

/// The result of a check: one versioned document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub format_version: u32,
    /// `fsck-crypt check` and the cryptimg version that wrote the report.
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub image: String,
    /// The generation checked (the newest valid superblock), if any.
    pub generation: Option<u64>,
    /// Every finding left (after `--repair`, the findings of the fresh check
    /// that follows the repair).
    pub findings: Vec<Finding>,
    /// What `--repair` did (empty without it).
    pub repairs: Vec<Repair>,
    /// Why findings `--repair` could in principle fix were left alone.
    pub not_repaired: Vec<String>,
    pub summary: Summary,
    /// 0 clean, 1 errors fixed, 4 errors left uncorrected, 5 both.
    pub exit_code: i32,
}

/// Counts and coverage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Per snapshot: the key identifiers it needs and what uses each.
    pub key_coverage: Vec<SnapshotKeys>,
    /// Per given key: how many contexts in the image name it.
    pub keys_given: Vec<KeyUse>,
    pub bytes_checked: BytesChecked,
    /// Present when `--data` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_note: Option<&'static str>,
}

/// The keys one snapshot needs.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotKeys {
    pub snapshot: String,
    /// The key new data is written under.
    pub policy: String,
    pub keys: Vec<KeyNeed>,
}

/// One key a snapshot needs.
#[derive(Clone, Debug, Serialize)]
pub struct KeyNeed {
    pub key_id: String,
    /// Whether the key was given (so its contexts were verified).
    pub given: bool,
    /// Whether it is the snapshot's policy key.
    pub policy: bool,
    pub directories: u64,
    pub symlinks: u64,
    pub extents: u64,
}

/// One given key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyUse {
    pub key_id: String,
    /// Contexts (directories, symlinks, extents, snapshot policies) naming it.
    pub contexts: u64,
}

/// How much was read and verified.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BytesChecked {
    /// Superblock slots and metadata region.
    pub metadata: u64,
    /// Extent ciphertext whose crc32c was recomputed (`--data`).
    pub data: u64,
    pub extents_scrubbed: u64,
    /// Extents whose key was given and whose crc32c matched (`--data`).
    pub extents_verified_with_key: u64,
}

impl Report {
    /// Findings of at least warning severity.
    pub fn problems(&self) -> usize {
        self.summary.errors + self.summary.warnings
    }

    /// The sorted, de-duplicated finding codes.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut c: Vec<&'static str> = self.findings.iter().map(|f| f.code.as_str()).collect();
        c.sort_unstable();
        c.dedup();
        c
    }
}
