//! Semantic checks of decoded metadata, without keys.
//!
//! [`check_metadata`] collects every structural problem as a [`Finding`]. The
//! image reader refuses metadata with any error-severity finding, so code that
//! walks an opened image can rely on: extents inside the image and not
//! overlapping each other or the metadata region; valid contexts; every
//! reference resolving; map entries inside their extents; the directory graph a
//! tree; refcounts and link counts exact; every referenced block allocated.
//!
//! Warning-severity findings (blocks allocated but referenced by nothing, an
//! extent no file references) do not stop an image from being opened: the
//! next commit, or a repair, reclaims the space.
//!
//! Everything here is linear (or n log n) in the size of the metadata, with
//! no recursion, so it is safe on hostile input.
//!
//! By concern: [`extents`] (extent bounds and overlap, refcounts, the
//! allocation map), [`tree`] (each snapshot's directory graph: root,
//! dangling entries, cycles, orphans, link counts; parent links for paths),
//! [`inodes`] (per inode: contexts, name lengths and duplicates, symlink
//! blobs, file maps).

use crate::finding::Finding;
use crate::format::meta::Metadata;

pub mod extents;
pub mod inodes;
#[cfg(test)]
mod tests;
pub mod tree;

pub use extents::range_difference;
pub use tree::{tree_shape, ParentMap, TreeShape};

use extents::{check_alloc, check_extents, check_refcounts};
use tree::check_snapshot;

/// The geometry the metadata must fit: blocks `[first_data, total)` minus the
/// metadata region `[meta_start, meta_start + meta_blocks)`.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub total_blocks: u64,
    pub meta_start: u64,
    pub meta_blocks: u64,
}

/// The position of each id in a sorted list of unique ids. Inode numbers and
/// extent ids are allocated sequentially, so the usual case is a direct table
/// (at most 16 bytes per id); ids too sparse for that fall back to binary
/// search. No hashing, so hostile ids cannot cause collisions, and memory is
/// bounded by the number of ids.
pub struct PosIndex {
    ids: Vec<u64>,
    table: Vec<u32>,
}

impl PosIndex {
    /// `ids` must be sorted and unique (the keys of a `BTreeMap`).
    pub fn new(ids: Vec<u64>) -> Self {
        let n = ids.len() as u64;
        let table = match ids.last() {
            Some(&max) if n < u64::from(u32::MAX) && max <= (4 * n).max(4096) => {
                let mut t = vec![u32::MAX; max as usize + 1];
                for (p, &id) in ids.iter().enumerate() {
                    t[id as usize] = p as u32;
                }
                t
            }
            _ => Vec::new(),
        };
        PosIndex { ids, table }
    }

    /// The position of `id`, if present.
    pub fn pos(&self, id: u64) -> Option<usize> {
        if self.table.is_empty() {
            return self.ids.binary_search(&id).ok();
        }
        let p = *self.table.get(usize::try_from(id).ok()?)?;
        (p != u32::MAX).then_some(p as usize)
    }

    /// The id at position `p`.
    pub fn id(&self, p: usize) -> u64 {
        self.ids[p]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Extent records by position.
struct Extents<'a> {
    index: PosIndex,
    recs: Vec<&'a crate::format::extent::Extent>,
}

impl Extents<'_> {
    fn pos(&self, id: u64) -> Option<usize> {
        self.index.pos(id)
    }
}

/// Runs every keyless metadata check and returns the findings.
pub fn check_metadata(meta: &Metadata, geo: Geometry) -> Vec<Finding> {
    let mut out = Vec::new();
    check_extents(meta, geo, &mut out);
    let exts = Extents {
        index: PosIndex::new(meta.extents.keys().copied().collect()),
        recs: meta.extents.values().collect(),
    };
    let mut refs: Vec<u64> = vec![0; exts.recs.len()];
    for snap in &meta.snapshots {
        check_snapshot(&exts, snap, &mut refs, &mut out);
    }
    check_refcounts(&exts, &refs, &mut out);
    check_alloc(meta, geo, &mut out);
    out
}
