//! Semantic checks of decoded metadata, without keys.
//!
//! [`check_metadata`] collects every structural problem as a [`Finding`]. The
//! image reader refuses metadata with any error-severity finding, so code that
//! walks an opened image can rely on: extents inside the image and not
//! overlapping each other or the metadata region; valid contexts; every
//! reference resolving; map entries inside their extents; the directory graph a
//! tree; refcounts and link counts exact.

use std::collections::{BTreeMap, HashMap};

use crate::crypto::valid_name_ct_len;
use crate::extent::MAX_EXTENT_BLOCKS;
use crate::finding::{Finding, Severity};
use crate::inode::{Body, Inode};
use crate::meta::Metadata;
use crate::snapshot::Snapshot;
use crate::BLOCK_SIZE;

/// The geometry the metadata must fit: blocks `[first_data, total)` minus the
/// metadata region `[meta_start, meta_start + meta_blocks)`.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub total_blocks: u64,
    pub meta_start: u64,
    pub meta_blocks: u64,
}

fn err(code: &'static str, msg: String, hint: &'static str) -> Finding {
    Finding::new(code, Severity::Error, msg, hint)
}

/// Runs every keyless metadata check and returns the findings.
pub fn check_metadata(meta: &Metadata, geo: Geometry) -> Vec<Finding> {
    let mut out = Vec::new();
    check_extents(meta, geo, &mut out);
    let mut refs: HashMap<u64, u64> = HashMap::new();
    for snap in &meta.snapshots {
        check_snapshot(meta, snap, &mut refs, &mut out);
    }
    for e in meta.extents.values() {
        let n = refs.get(&e.id).copied().unwrap_or(0);
        if n != u64::from(e.refcount) {
            out.push(
                err(
                    "E_REFCOUNT",
                    format!("extent refcount is {} but {n} file-map entries reference it", e.refcount),
                    "fsck-crypt check --repair recomputes refcounts",
                )
                .extent(e.id),
            );
        }
    }
    if meta.alloc != meta.alloc_from_extents() {
        out.push(err(
            "E_ALLOC_MAP",
            "the allocation map differs from the extents' blocks (leaked or free-but-referenced blocks)".into(),
            "fsck-crypt check --repair rebuilds the allocation map",
        ));
    }
    out
}

fn check_extents(meta: &Metadata, geo: Geometry, out: &mut Vec<Finding>) {
    let meta_end = geo.meta_start.saturating_add(geo.meta_blocks);
    let mut by_start: Vec<(u64, u64, u64)> = Vec::with_capacity(meta.extents.len());
    for e in meta.extents.values() {
        if let Err(why) = e.ctx.validate() {
            out.push(
                err(
                    "E_CONTEXT",
                    format!("extent context: {why}"),
                    "the extent cannot be decrypted; restore the file from backup",
                )
                .extent(e.id),
            );
        }
        if e.blocks == 0 || e.blocks > MAX_EXTENT_BLOCKS {
            out.push(
                err(
                    "E_EXTENT_LEN",
                    format!("extent length {} blocks is outside 1..={MAX_EXTENT_BLOCKS}", e.blocks),
                    "restore the file from backup",
                )
                .extent(e.id),
            );
            continue;
        }
        if e.start < 2 || e.end() > geo.total_blocks {
            out.push(
                err(
                    "E_EXTENT_BOUNDS",
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
                err(
                    "E_EXTENT_OVERLAP",
                    "extent overlaps the metadata region".into(),
                    "restore the file from backup",
                )
                .extent(e.id),
            );
        }
        by_start.push((e.start, e.end(), e.id));
    }
    by_start.sort_unstable();
    for w in by_start.windows(2) {
        if w[1].0 < w[0].1 {
            out.push(
                err(
                    "E_EXTENT_OVERLAP",
                    format!(
                        "extent {} (blocks {}..{}) overlaps extent {} (blocks {}..{})",
                        w[1].2, w[1].0, w[1].1, w[0].2, w[0].0, w[0].1
                    ),
                    "one of the files sharing these blocks is damaged; restore it from backup",
                )
                .extent(w[1].2)
                .block(w[1].0),
            );
        }
    }
}

fn check_snapshot(meta: &Metadata, snap: &Snapshot, refs: &mut HashMap<u64, u64>, out: &mut Vec<Finding>) {
    let s = snap.name.as_str();
    let mut links: BTreeMap<u64, u64> = BTreeMap::new();
    for ino in snap.inodes.values() {
        check_inode(meta, snap, ino, refs, &mut links, out);
    }
    match snap.inodes.get(&snap.root) {
        Some(r) if r.is_dir() => {}
        _ => {
            out.push(
                err(
                    "E_ROOT",
                    format!("root inode {} is missing or not a directory", snap.root),
                    "restore the snapshot from backup",
                )
                .snapshot(s),
            );
            return;
        }
    }
    // The directory graph must be a tree rooted at `root`: every directory
    // reached exactly once. Iterative walk; a directory seen twice is a cycle
    // (or a hard-linked directory, which the format forbids).
    let mut seen_dir: HashMap<u64, ()> = HashMap::new();
    let mut stack = vec![snap.root];
    seen_dir.insert(snap.root, ());
    let mut reached: HashMap<u64, ()> = HashMap::new();
    reached.insert(snap.root, ());
    while let Some(d) = stack.pop() {
        let Some(Inode {
            body: Body::Dir { entries, .. },
            ..
        }) = snap.inodes.get(&d)
        else {
            continue;
        };
        for e in entries {
            reached.insert(e.ino, ());
            if let Some(child) = snap.inodes.get(&e.ino) {
                if child.is_dir() {
                    if seen_dir.insert(e.ino, ()).is_some() {
                        out.push(
                            err(
                                "E_DIR_CYCLE",
                                format!("directory {} is reached twice (cycle or hard-linked directory)", e.ino),
                                "fsck-crypt cannot repair this; restore from backup",
                            )
                            .snapshot(s)
                            .inode(d),
                        );
                    } else {
                        stack.push(e.ino);
                    }
                }
            }
        }
    }
    for ino in snap.inodes.values() {
        let expected = if ino.ino == snap.root {
            1
        } else {
            links.get(&ino.ino).copied().unwrap_or(0)
        };
        if !reached.contains_key(&ino.ino) {
            out.push(
                err(
                    "E_ORPHAN",
                    "inode is not reachable from the root".into(),
                    "fsck-crypt check --repair moves it to lost+found",
                )
                .snapshot(s)
                .inode(ino.ino),
            );
        } else if u64::from(ino.nlink) != expected {
            out.push(
                err(
                    "E_NLINK",
                    format!("link count is {} but {expected} entries name it", ino.nlink),
                    "fsck-crypt check --repair fixes link counts",
                )
                .snapshot(s)
                .inode(ino.ino),
            );
        }
    }
}

fn check_inode(
    meta: &Metadata,
    snap: &Snapshot,
    ino: &Inode,
    refs: &mut HashMap<u64, u64>,
    links: &mut BTreeMap<u64, u64>,
    out: &mut Vec<Finding>,
) {
    let s = snap.name.as_str();
    let f = |code, msg: String, hint| err(code, msg, hint).snapshot(s).inode(ino.ino);
    match &ino.body {
        Body::Dir { ctx, entries } => {
            if let Err(why) = ctx.validate() {
                out.push(f(
                    "E_CONTEXT",
                    format!("directory context: {why}"),
                    "names in this directory cannot be decrypted; restore from backup",
                ));
            }
            let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len());
            for e in entries {
                if !valid_name_ct_len(e.name.len()) {
                    out.push(f(
                        "E_NAME_LEN",
                        format!(
                            "entry for inode {} has an encrypted name of {} bytes, not a valid padded length",
                            e.ino,
                            e.name.len()
                        ),
                        "the entry cannot be decrypted; remove it",
                    ));
                }
                if e.ino == snap.root {
                    out.push(f(
                        "E_DIR_CYCLE",
                        "an entry names the root directory".into(),
                        "fsck-crypt cannot repair this; restore from backup",
                    ));
                } else if snap.inodes.contains_key(&e.ino) {
                    *links.entry(e.ino).or_default() += 1;
                } else {
                    out.push(f(
                        "E_DANGLING_ENTRY",
                        format!("entry names inode {}, which does not exist", e.ino),
                        "fsck-crypt check --repair removes the entry",
                    ));
                }
                names.push(&e.name);
            }
            names.sort_unstable();
            if names.windows(2).any(|w| w[0] == w[1]) {
                out.push(f(
                    "E_DUP_NAME",
                    "two entries have the same encrypted name".into(),
                    "rename one of the files after extracting",
                ));
            }
        }
        Body::Symlink { ctx, blob } => {
            if let Err(why) = ctx.validate() {
                out.push(f(
                    "E_CONTEXT",
                    format!("symlink context: {why}"),
                    "the link target cannot be decrypted; recreate the link",
                ));
            }
            if crate::inode::symlink_ciphertext(blob).is_none() {
                out.push(f(
                    "E_SYMLINK_BLOB",
                    format!("encrypted symlink blob of {} bytes is malformed", blob.len()),
                    "recreate the link",
                ));
            }
        }
        Body::File { map } => {
            let max_lblk = ino.size.div_ceil(BLOCK_SIZE as u64);
            let mut next = 0u64;
            for m in map {
                *refs.entry(m.extent).or_default() += 1;
                let end = m.lblk.checked_add(u64::from(m.blocks));
                if m.blocks == 0 || m.lblk < next || end.is_none_or(|e| e > max_lblk) {
                    out.push(f(
                        "E_FILE_MAP",
                        format!(
                            "map entry at logical block {} (+{}) is out of order or beyond the file size {}",
                            m.lblk, m.blocks, ino.size
                        ),
                        "restore the file from backup",
                    ));
                }
                next = end.unwrap_or(u64::MAX);
                match meta.extents.get(&m.extent) {
                    None => out.push(f(
                        "E_DANGLING_EXTENT",
                        format!("map references extent {}, which does not exist", m.extent),
                        "restore the file from backup",
                    )),
                    Some(e) if u64::from(m.offset) + u64::from(m.blocks) > u64::from(e.blocks) => {
                        out.push(f(
                            "E_FILE_MAP",
                            format!("map entry reaches past the end of extent {}", m.extent),
                            "restore the file from backup",
                        ));
                    }
                    _ => {}
                }
            }
        }
        Body::Special => {}
    }
}
