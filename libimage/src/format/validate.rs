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
//! next commit, or `fsck-crypt check --repair`, reclaims the space.
//!
//! Everything here is linear (or n log n) in the size of the metadata, with
//! no recursion, so it is safe on hostile input.

use std::collections::{HashMap, HashSet};

use crate::finding::{Code, Finding};
use crate::format::extent::MAX_EXTENT_BLOCKS;
use crate::format::inode::{Body, Inode};
use crate::format::meta::Metadata;
use crate::format::snapshot::Snapshot;
use crate::BLOCK_SIZE;
use fscrypt::valid_name_ct_len;

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
    for (e, &n) in exts.recs.iter().zip(&refs) {
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
    check_alloc(meta, geo, &mut out);
    out
}

/// The stored allocation map against the blocks the extents occupy.
fn check_alloc(meta: &Metadata, geo: Geometry, out: &mut Vec<Finding>) {
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

fn check_extents(meta: &Metadata, geo: Geometry, out: &mut Vec<Finding>) {
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

/// The shape of one snapshot's directory graph, shared with the checker's
/// repair (which moves orphans) and path reporting. Per-inode values are kept
/// by position in the snapshot's sorted inode numbers.
pub struct TreeShape {
    inos: PosIndex,
    links: Vec<u64>,
    reached: Vec<bool>,
    /// Unreachable inodes that no entry names at all: the roots of orphaned
    /// subtrees (what `lost+found` receives), sorted.
    pub orphans: Vec<u64>,
    /// `(parent, directory)`: directories reached a second time, or
    /// unreachable directories in a cycle (`parent == directory`).
    pub cycles: Vec<(u64, u64)>,
    /// Entries naming inodes that do not exist: (directory, index in entries).
    pub dangling: Vec<(u64, usize)>,
}

impl TreeShape {
    /// Number of entries naming `ino`.
    pub fn links(&self, ino: u64) -> u64 {
        self.inos.pos(ino).map_or(0, |p| self.links[p])
    }
    /// Whether `ino` is reachable from the root.
    pub fn is_reached(&self, ino: u64) -> bool {
        self.inos.pos(ino).is_some_and(|p| self.reached.get(p).copied().unwrap_or(false))
    }
}

/// Walks a snapshot's directory graph from the root (iteratively).
pub fn tree_shape(snap: &Snapshot) -> TreeShape {
    let nodes: Vec<&Inode> = snap.inodes.values().collect();
    let inos = PosIndex::new(snap.inodes.keys().copied().collect());
    let n = nodes.len();
    let pos = |ino: u64| inos.pos(ino);
    let mut links = vec![0u64; n];
    let mut dangling = Vec::new();
    for node in &nodes {
        if let Body::Dir { entries, .. } = &node.body {
            for (i, e) in entries.iter().enumerate() {
                match pos(e.ino) {
                    Some(p) => links[p] += 1,
                    None => dangling.push((node.ino, i)),
                }
            }
        }
    }
    let mut orphans = Vec::new();
    let mut cycles = Vec::new();
    let Some(root) = pos(snap.root).filter(|&p| nodes[p].is_dir()) else {
        return TreeShape {
            inos,
            links,
            reached: vec![false; n],
            orphans,
            cycles,
            dangling,
        };
    };
    // `visit` marks every directory reached from `start`; a directory reached
    // a second time is reported as a cycle (or a hard-linked directory).
    let mut seen_dir = vec![false; n];
    let mut visit = |start: usize, reached: &mut Vec<bool>, cycles: &mut Vec<(u64, u64)>| {
        seen_dir[start] = true;
        reached[start] = true;
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            let Body::Dir { entries, .. } = &nodes[d].body else { continue };
            for e in entries {
                let Some(c) = pos(e.ino) else { continue };
                reached[c] = true;
                if nodes[c].is_dir() {
                    if seen_dir[c] {
                        cycles.push((nodes[d].ino, e.ino));
                    } else {
                        seen_dir[c] = true;
                        stack.push(c);
                    }
                }
            }
        }
    };
    let mut reached = vec![false; n];
    visit(root, &mut reached, &mut cycles);
    // Orphans: unreachable inodes nothing names. Their subtrees are walked so
    // that cycles among unreachable directories are found too.
    let mut orphan_reached = vec![false; n];
    for p in 0..n {
        if !reached[p] && links[p] == 0 {
            orphans.push(nodes[p].ino);
            visit(p, &mut orphan_reached, &mut cycles);
        }
    }
    // Unreachable directories not below any orphan are in a pure cycle.
    for p in 0..n {
        if nodes[p].is_dir() && !reached[p] && !orphan_reached[p] {
            cycles.push((nodes[p].ino, nodes[p].ino));
            visit(p, &mut orphan_reached, &mut Vec::new());
        }
    }
    TreeShape {
        inos,
        links,
        reached,
        orphans,
        cycles,
        dangling,
    }
}

fn check_snapshot(exts: &Extents<'_>, snap: &Snapshot, refs: &mut [u64], out: &mut Vec<Finding>) {
    let s = snap.name.as_str();
    for ino in snap.inodes.values() {
        check_inode(exts, snap, ino, refs, out);
    }
    match snap.inodes.get(&snap.root) {
        Some(r) if r.is_dir() => {}
        _ => {
            out.push(
                Finding::new(
                    Code::Root,
                    format!("root inode {} is missing or not a directory", snap.root),
                    "restore the snapshot from backup",
                )
                .snapshot(s),
            );
            return;
        }
    }
    let t = tree_shape(snap);
    for &(dir, i) in &t.dangling {
        let target = match snap.inodes.get(&dir).map(|d| &d.body) {
            Some(Body::Dir { entries, .. }) => entries.get(i).map_or(0, |e| e.ino),
            _ => 0,
        };
        out.push(
            Finding::new(
                Code::DanglingEntry,
                format!("entry names inode {target}, which does not exist"),
                "a repair removes the entry",
            )
            .snapshot(s)
            .inode(dir),
        );
    }
    for &(parent, dir) in &t.cycles {
        let msg = if parent == dir {
            format!("directory {dir} is unreachable and part of a directory cycle")
        } else {
            format!("directory {dir} is reached a second time from directory {parent} (cycle or hard-linked directory)")
        };
        out.push(
            Finding::new(Code::DirCycle, msg, "a repair cannot fix this; restore from backup")
                .snapshot(s)
                .inode(dir),
        );
    }
    for (ino, &links) in snap.inodes.values().zip(&t.links) {
        if t.orphans.binary_search(&ino.ino).is_ok() {
            out.push(
                Finding::new(
                    Code::Orphan,
                    "inode is not reachable from the root: no directory entry names it",
                    "a repair with the root directory's key moves it to /lost+found",
                )
                .snapshot(s)
                .inode(ino.ino),
            );
            continue;
        }
        let expected = if ino.ino == snap.root { 1 } else { links };
        if u64::from(ino.nlink) != expected {
            out.push(
                Finding::new(
                    Code::Nlink,
                    format!("link count is {} but {expected} entries name it", ino.nlink),
                    "a repair fixes link counts",
                )
                .snapshot(s)
                .inode(ino.ino),
            );
        }
    }
}

fn check_inode(exts: &Extents<'_>, snap: &Snapshot, ino: &Inode, refs: &mut [u64], out: &mut Vec<Finding>) {
    let s = snap.name.as_str();
    let f = |code, msg: String, hint| Finding::new(code, msg, hint).snapshot(s).inode(ino.ino);
    match &ino.body {
        Body::Dir { ctx, entries } => {
            if let Err(why) = ctx.validate() {
                out.push(f(
                    Code::Context,
                    format!("directory context: {why}"),
                    "names in this directory cannot be decrypted; restore from backup",
                ));
            }
            let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len());
            for e in entries {
                if !valid_name_ct_len(e.name.len()) {
                    out.push(f(
                        Code::NameLen,
                        format!(
                            "entry for inode {} has an encrypted name of {} bytes, not a valid padded length",
                            e.ino,
                            e.name.len()
                        ),
                        "the entry cannot be decrypted; remove it",
                    ));
                }
                names.push(&e.name);
            }
            // Writers keep entries sorted by ciphertext: then one pass
            // suffices; otherwise sort.
            if !names.windows(2).all(|w| w[0] < w[1]) {
                names.sort_unstable();
            }
            if names.windows(2).any(|w| w[0] == w[1]) {
                out.push(f(
                    Code::DupName,
                    "two entries have the same encrypted name".into(),
                    "rename one of the files after extracting",
                ));
            }
        }
        Body::Symlink { ctx, blob } => {
            if let Err(why) = ctx.validate() {
                out.push(f(
                    Code::Context,
                    format!("symlink context: {why}"),
                    "the link target cannot be decrypted; recreate the link",
                ));
            }
            if crate::format::inode::symlink_ciphertext(blob).is_none() {
                out.push(f(
                    Code::SymlinkBlob,
                    format!("encrypted symlink blob of {} bytes is malformed", blob.len()),
                    "recreate the link",
                ));
            }
        }
        Body::File { map } => {
            let max_lblk = ino.size.div_ceil(BLOCK_SIZE as u64);
            let mut next = 0u64;
            for m in map {
                let e = exts.pos(m.extent).map(|p| {
                    refs[p] += 1;
                    exts.recs[p]
                });
                let end = m.lblk.checked_add(u64::from(m.blocks));
                if m.blocks == 0 || m.lblk < next || end.is_none_or(|e| e > max_lblk) {
                    out.push(f(
                        Code::FileMap,
                        format!(
                            "map entry at logical block {} (+{}) is out of order or beyond the file size {}",
                            m.lblk, m.blocks, ino.size
                        ),
                        "restore the file from backup",
                    ));
                }
                next = end.unwrap_or(u64::MAX);
                match e {
                    None => out.push(f(
                        Code::DanglingExtent,
                        format!("map references extent {}, which does not exist", m.extent),
                        "restore the file from backup",
                    )),
                    Some(e) if u64::from(m.offset) + u64::from(m.blocks) > u64::from(e.blocks) => {
                        out.push(f(
                            Code::FileMap,
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

/// Per-snapshot parent links, for paths in findings: each inode's first
/// parent on a breadth-first walk from the root, with the entry's encrypted
/// name. Computed once per snapshot.
pub struct ParentMap<'a> {
    parent: HashMap<u64, (u64, &'a [u8])>,
    root: u64,
}

impl<'a> ParentMap<'a> {
    pub fn new(snap: &'a Snapshot) -> Self {
        let mut parent: HashMap<u64, (u64, &'a [u8])> = HashMap::with_capacity(snap.inodes.len());
        let mut queue = std::collections::VecDeque::from([snap.root]);
        let mut seen: HashSet<u64> = HashSet::from([snap.root]);
        while let Some(d) = queue.pop_front() {
            let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = snap.inodes.get(&d)
            else {
                continue;
            };
            for e in entries {
                if e.ino != snap.root && !parent.contains_key(&e.ino) {
                    parent.insert(e.ino, (d, &e.name));
                }
                if seen.insert(e.ino) {
                    queue.push_back(e.ino);
                }
            }
        }
        ParentMap { parent, root: snap.root }
    }

    /// The chain of `(directory, encrypted name)` from the root down to `ino`,
    /// or `None` when `ino` is not reachable.
    pub fn chain(&self, ino: u64) -> Option<Vec<(u64, &'a [u8])>> {
        let mut out = Vec::new();
        let mut cur = ino;
        while cur != self.root {
            let &(p, name) = self.parent.get(&cur)?;
            out.push((p, name));
            cur = p;
            if out.len() > self.parent.len() {
                return None;
            }
        }
        out.reverse();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::inode::{DirEntry, S_IFDIR, S_IFREG};
    use fscrypt::context::PolicyContext;
    use fscrypt::{KeyId, Nonce};
    use std::collections::BTreeMap;

    fn node(ino: u64, children: &[u64]) -> Inode {
        let body = if ino >= 5 {
            Body::File { map: Vec::new() }
        } else {
            Body::Dir {
                ctx: PolicyContext::new(KeyId([1; 16]), Nonce([ino as u8; 16])),
                entries: children
                    .iter()
                    .map(|&c| DirEntry {
                        name: vec![c as u8; 32],
                        ino: c,
                    })
                    .collect(),
            }
        };
        Inode {
            ino,
            mode: if ino >= 5 { S_IFREG | 0o644 } else { S_IFDIR | 0o755 },
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: Default::default(),
            mtime: Default::default(),
            ctime: Default::default(),
            rdev: 0,
            xattrs: Vec::new(),
            body,
        }
    }

    fn snap(nodes: Vec<Inode>) -> Snapshot {
        Snapshot {
            name: "s".into(),
            policy: KeyId([1; 16]),
            root: 1,
            next_ino: 100,
            created: 0,
            inodes: nodes.into_iter().map(|i| (i.ino, i)).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn tree_shape_finds_orphans_cycles_and_dangling_entries() {
        // 1 -> 2, 99 (missing); 3 <-> 4 unreachable cycle; 5 unreferenced file;
        // 6 is named by 4, inside the cycle.
        let s = snap(vec![
            node(1, &[2, 99]),
            node(2, &[]),
            node(3, &[4]),
            node(4, &[3, 6]),
            node(5, &[]),
            node(6, &[]),
        ]);
        let t = tree_shape(&s);
        assert_eq!(t.orphans, vec![5]);
        assert_eq!(t.dangling, vec![(1, 1)]);
        let mut cyc: Vec<u64> = t.cycles.iter().map(|c| c.1).collect();
        cyc.sort_unstable();
        assert_eq!(cyc, vec![3], "one finding per unreachable cycle: {:?}", t.cycles);
        assert!(t.is_reached(2) && !t.is_reached(3) && !t.is_reached(6));
        assert_eq!((t.links(3), t.links(4), t.links(6), t.links(5)), (1, 1, 1, 0));
        let codes: Vec<&str> = {
            let m = Metadata {
                next_extent_id: 1,
                snapshots: vec![s],
                ..Metadata::default()
            };
            let mut c: Vec<&str> = check_metadata(
                &m,
                Geometry {
                    total_blocks: 10,
                    meta_start: 2,
                    meta_blocks: 1,
                },
            )
            .iter()
            .map(|f| f.code)
            .collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        assert_eq!(codes, vec!["E_DANGLING_ENTRY", "E_DIR_CYCLE", "E_ORPHAN"]);
    }

    #[test]
    fn reachable_cycle_and_hard_linked_directory() {
        // 2 is named by the root and by 3 (below 2): a cycle.
        let s = snap(vec![node(1, &[2]), node(2, &[3]), node(3, &[2])]);
        let t = tree_shape(&s);
        assert_eq!(t.cycles, vec![(3, 2)]);
        assert!(t.orphans.is_empty());
    }

    #[test]
    fn pos_index_dense_and_sparse() {
        let dense = PosIndex::new(vec![1, 2, 5, 9]);
        assert_eq!((dense.pos(5), dense.pos(3), dense.pos(u64::MAX)), (Some(2), None, None));
        let sparse = PosIndex::new(vec![1, 1 << 40, u64::MAX]);
        assert_eq!((sparse.pos(1 << 40), sparse.pos(u64::MAX), sparse.pos(7)), (Some(1), Some(2), None));
        assert_eq!(sparse.id(2), u64::MAX);
    }

    #[test]
    fn extent_overlap_found_past_a_short_neighbour() {
        use crate::format::extent::Extent;
        use fscrypt::context::ExtentContext;
        let ext = |id, start, blocks| Extent {
            id,
            start,
            blocks,
            refcount: 0,
            crc: 0,
            ctx: ExtentContext::new(KeyId([1; 16]), Nonce([0; 16])),
        };
        // 1 covers 10..30; 2 (12..13) and 3 (20..21) both lie inside it.
        let m = Metadata {
            next_extent_id: 4,
            extents: [ext(1, 10, 20), ext(2, 12, 1), ext(3, 20, 1)]
                .into_iter()
                .map(|e| (e.id, e))
                .collect(),
            ..Metadata::default()
        };
        let f = check_metadata(
            &m,
            Geometry {
                total_blocks: 100,
                meta_start: 2,
                meta_blocks: 1,
            },
        );
        let overlaps: Vec<u64> = f
            .iter()
            .filter(|f| f.code == "E_EXTENT_OVERLAP")
            .filter_map(|f| f.at.extent)
            .collect();
        assert_eq!(overlaps, vec![2, 3]);
    }

    #[test]
    fn range_difference_cases() {
        assert_eq!(range_difference(&[(10, 10)], &[]), vec![(10, 10)]);
        assert_eq!(range_difference(&[(10, 10)], &[(10, 10)]), vec![]);
        assert_eq!(range_difference(&[(10, 10)], &[(12, 2), (15, 1)]), vec![(10, 2), (14, 1), (16, 4)]);
        assert_eq!(range_difference(&[(10, 5), (20, 5)], &[(5, 7), (14, 8)]), vec![(12, 2), (22, 3)]);
        assert_eq!(range_difference(&[], &[(1, 3)]), vec![]);
    }
}
