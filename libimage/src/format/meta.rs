//! The metadata stream: everything but file data, rewritten copy-on-write on
//! every commit.
//!
//! FORMAT.md §4. Layout:
//!
//! | size | field |
//! |---|---|
//! | 4 | magic `CIMS` |
//! | 4 | stream version (1) |
//! | 8 | next extent id |
//! | 8 | allocation range count |
//! | 16 each | `u64 start ‖ u64 length` of each allocated data range, sorted, non-overlapping, non-adjacent |
//! | 8 | extent count |
//! | 64 each | extent records (`extent.rs`), sorted by id |
//! | 4 | snapshot count |
//! | … | snapshot records (`snapshot.rs`) |
//!
//! The allocation map covers data extents only; blocks 0–1 (superblock slots)
//! and the current metadata region are allocated implicitly.

use std::collections::BTreeMap;

use crate::error::{CorruptKind, Error, Result};
use crate::format::bytes::{Reader, Writer};
use crate::format::extent::{Extent, RECORD_LEN};
use crate::format::snapshot::Snapshot;

/// `CIMS`
pub const MAGIC: [u8; 4] = *b"CIMS";
/// Stream version.
pub const VERSION: u32 = 1;

/// The decoded metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub next_extent_id: u64,
    /// Allocated data ranges `(start, len)` as stored. Rebuilt from the extent
    /// table on every commit; a checker compares the two.
    pub alloc: Vec<(u64, u64)>,
    pub extents: BTreeMap<u64, Extent>,
    pub snapshots: Vec<Snapshot>,
}

impl Metadata {
    /// An empty image's metadata.
    pub fn empty() -> Self {
        Metadata {
            next_extent_id: 1,
            ..Default::default()
        }
    }

    /// Parses the stream. Checks framing and uniqueness only; see `validate.rs`
    /// for the semantic checks.
    pub fn from_bytes(stream: &[u8]) -> Result<Metadata> {
        let mut r = Reader::new(stream, 0, "metadata stream");
        if r.array::<4>()? != MAGIC {
            return Err(r.err(CorruptKind::BadMagic));
        }
        let v = r.u32()?;
        if v != VERSION {
            return Err(Error::Unsupported(format!("metadata stream version {v}")));
        }
        let next_extent_id = r.u64()?;
        let n = r.count("allocation range count", true, 16)?;
        let mut alloc = Vec::with_capacity(n);
        for _ in 0..n {
            alloc.push((r.u64()?, r.u64()?));
        }
        let n = r.count("extent count", true, RECORD_LEN)?;
        let mut extents = BTreeMap::new();
        for _ in 0..n {
            let at = r.offset();
            let e = Extent::read(&mut r)?;
            if e.id == 0 || e.id >= next_extent_id {
                return Err(Error::corrupt(
                    CorruptKind::OutOfRange {
                        field: "extent id",
                        value: e.id,
                        max: next_extent_id.saturating_sub(1),
                    },
                    "extent table",
                    Some(at),
                ));
            }
            if extents.insert(e.id, e).is_some() {
                return Err(Error::corrupt(CorruptKind::Duplicate("extent id"), "extent table", Some(at)));
            }
        }
        let n = r.count("snapshot count", false, 50)?;
        let mut snapshots: Vec<Snapshot> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let s = Snapshot::read(&mut r)?;
            if snapshots.iter().any(|o| o.name == s.name) {
                return Err(Error::corrupt(CorruptKind::Duplicate("snapshot name"), "snapshot table", Some(at)));
            }
            snapshots.push(s);
        }
        r.finish()?;
        Ok(Metadata {
            next_extent_id,
            alloc,
            extents,
            snapshots,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&MAGIC);
        w.u32(VERSION);
        w.u64(self.next_extent_id);
        w.u64(self.alloc.len() as u64);
        for &(s, l) in &self.alloc {
            w.u64(s);
            w.u64(l);
        }
        w.u64(self.extents.len() as u64);
        for e in self.extents.values() {
            e.write(&mut w);
        }
        w.u32(self.snapshots.len() as u32);
        for s in &self.snapshots {
            s.write(&mut w);
        }
        w.buf
    }

    /// The allocation map implied by the extent table: merged extent ranges.
    pub fn alloc_from_extents(&self) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = self.extents.values().map(|e| (e.start, u64::from(e.blocks))).collect();
        ranges.sort_unstable();
        merge_ranges(ranges)
    }

    /// The index of snapshot `name`, or an error listing the snapshots there are.
    pub fn snapshot_index(&self, name: &str) -> Result<usize> {
        self.snapshots.iter().position(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.snapshots.iter().map(|s| s.name.as_str()).collect();
            Error::Invalid(format!("no snapshot named {name:?} (the image has: {})", names.join(", ")))
        })
    }

    pub fn snapshot(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    pub fn snapshot_mut(&mut self, name: &str) -> Option<&mut Snapshot> {
        self.snapshots.iter_mut().find(|s| s.name == name)
    }
}

/// Merges sorted `(start, len)` ranges that touch or overlap.
pub fn merge_ranges(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (s, l) in sorted {
        if let Some(last) = out.last_mut() {
            if s <= last.0.saturating_add(last.1) {
                last.1 = last.1.max(s.saturating_add(l) - last.0);
                continue;
            }
        }
        out.push((s, l));
    }
    out
}
