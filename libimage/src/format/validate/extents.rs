//! Extents: inside the image and outside the metadata region, not
//! overlapping; refcounts equal to the references; the allocation map equal
//! to the blocks the extents occupy.

use super::{Extents, Geometry};
use crate::finding::{Code, Finding};
use crate::format::extent::MAX_EXTENT_BLOCKS;
use crate::format::meta::Metadata;

/// The stored allocation map against the blocks the extents occupy.
pub(super) fn check_alloc(meta: &Metadata, geo: Geometry, out: &mut Vec<Finding>) {
    const HINT: &str = "a repair rebuilds the allocation map from the extent table";
    let meta_end = geo.meta_start.saturating_add(geo.meta_blocks);
    let mut prev_end: Option<u64> = None;
    for &(s, l) in &meta.alloc {
        let end = s.checked_add(l);
        let why = if l == 0 {
            Some("an empty range")
        } else if s < 2 || end.is_none_or(|e| e > geo.total_blocks) {
            Some("a range outside the image's data area")
        } else if prev_end.is_some_and(|p| s <= p) {
            Some("ranges out of order, overlapping or touching")
        } else if s < meta_end && geo.meta_start < end.unwrap_or(u64::MAX) {
            Some("a range overlapping the metadata region")
        } else {
            None
        };
        if let Some(why) = why {
            out.push(Finding::new(Code::AllocMap, format!("the allocation map is malformed: {why} ({s}, +{l})"), HINT).block(s));
            return;
        }
        prev_end = end;
    }
    let from_extents = meta.alloc_from_extents();
    if meta.alloc == from_extents {
        return;
    }
    let leaked = range_difference(&meta.alloc, &from_extents);
    let unallocated = range_difference(&from_extents, &meta.alloc);
    let describe = |v: &[(u64, u64)]| {
        let blocks: u64 = v.iter().map(|r| r.1).sum();
        let shown: Vec<String> = v.iter().take(4).map(|(s, l)| format!("{s}..{}", s + l)).collect();
        let more = if v.len() > 4 {
            format!(" and {} more", v.len() - 4)
        } else {
            String::new()
        };
        (blocks, format!("{}{more}", shown.join(", ")))
    };
    if !leaked.is_empty() {
        let (n, ranges) = describe(&leaked);
        out.push(
            Finding::new(
                Code::BlocksLeaked,
                format!("{n} blocks are allocated but no extent uses them (blocks {ranges})"),
                HINT,
            )
            .block(leaked[0].0),
        );
    }
    if !unallocated.is_empty() {
        let (n, ranges) = describe(&unallocated);
        out.push(
            Finding::new(Code::AllocMap,
                format!("free but referenced: {n} blocks used by extents are not in the allocation map (blocks {ranges}); a writer could overwrite them"),
                HINT,
            )
            .block(unallocated[0].0),
        );
    }
}

/// Blocks in `a` but not in `b`; both sorted, non-overlapping `(start, len)`.
pub fn range_difference(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, l) in a {
        let end = s.saturating_add(l);
        let mut cur = s;
        while j < b.len() && b[j].0.saturating_add(b[j].1) <= cur {
            j += 1;
        }
        let mut k = j;
        while cur < end {
            match b.get(k) {
                Some(&(bs, bl)) if bs < end => {
                    if bs > cur {
                        out.push((cur, bs - cur));
                    }
                    cur = cur.max(bs.saturating_add(bl));
                    k += 1;
                }
                _ => {
                    out.push((cur, end - cur));
                    cur = end;
                }
            }
        }
    }
    out
}

pub(super) fn check_extents(meta: &Metadata, geo: Geometry, out: &mut Vec<Finding>) {
    let meta_end = geo.meta_start.saturating_add(geo.meta_blocks);
    let mut by_start: Vec<(u64, u64, u64)> = Vec::with_capacity(meta.extents.len());
    for e in meta.extents.values() {
        if let Err(why) = e.ctx.validate() {
            out.push(
                Finding::new(
                    Code::Context,
                    format!("extent context: {why}"),
                    "the extent cannot be decrypted; restore the file from backup",
                )
                .extent(e.id),
            );
        }
        if e.blocks == 0 || e.blocks > MAX_EXTENT_BLOCKS {
            out.push(
                Finding::new(
                    Code::ExtentLen,
                    format!("extent length {} blocks is outside 1..={MAX_EXTENT_BLOCKS}", e.blocks),
                    "restore the file from backup",
                )
                .extent(e.id),
            );
            continue;
        }
        if e.start < 2 || e.end() > geo.total_blocks {
            out.push(
                Finding::new(
                    Code::ExtentBounds,
                    format!(
                        "extent blocks {}..{} lie outside the image's data area 2..{}",
                        e.start,
                        e.end(),
                        geo.total_blocks
                    ),
                    "the image may be truncated; restore from backup",
                )
                .extent(e.id),
            );
            continue;
        }
        if e.start < meta_end && geo.meta_start < e.end() {
            out.push(
                Finding::new(
                    Code::ExtentOverlap,
                    "extent overlaps the metadata region",
                    "restore the file from backup",
                )
                .extent(e.id),
            );
        }
        by_start.push((e.start, e.end(), e.id));
    }
    by_start.sort_unstable();
    // Compare each extent with the furthest-reaching one before it, so an
    // extent overlapping a long earlier one is found even when others lie
    // between them.
    let mut reach: Option<(u64, u64, u64)> = None;
    for &cur in &by_start {
        if let Some(r) = reach {
            if cur.0 < r.1 {
                out.push(
                    Finding::new(
                        Code::ExtentOverlap,
                        format!(
                            "extent {} (blocks {}..{}) overlaps extent {} (blocks {}..{})",
                            cur.2, cur.0, cur.1, r.2, r.0, r.1
                        ),
                        "one of the files sharing these blocks is damaged; restore it from backup",
                    )
                    .extent(cur.2)
                    .block(cur.0),
                );
            }
        }
        if reach.is_none_or(|r| cur.1 > r.1) {
            reach = Some(cur);
        }
    }
}

/// Each extent's stored refcount against `refs`, the file-map entries
/// counted over every snapshot.
pub(super) fn check_refcounts(exts: &Extents<'_>, refs: &[u64], out: &mut Vec<Finding>) {
    for (e, &n) in exts.recs.iter().zip(refs) {
        if n != u64::from(e.refcount) {
            let msg = if n == 0 {
                format!(
                    "extent refcount is {} but no file references it (its blocks are leaked)",
                    e.refcount
                )
            } else {
                format!("extent refcount is {} but {n} file-map entries reference it", e.refcount)
            };
            out.push(
                Finding::new(Code::Refcount, msg, "a repair recomputes refcounts")
                    .extent(e.id)
                    .block(e.start),
            );
        } else if n == 0 {
            out.push(
                Finding::new(
                    Code::ExtentUnreferenced,
                    format!("extent of {} blocks is referenced by no file (leaked blocks)", e.blocks),
                    "a repair frees it",
                )
                .extent(e.id)
                .block(e.start),
            );
        }
    }
}
