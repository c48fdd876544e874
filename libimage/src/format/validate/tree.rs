//! One snapshot's directory graph: the root, dangling entries, cycles,
//! orphans and link counts; and the parent links that give findings a path.

use std::collections::{HashMap, HashSet};

use super::inodes::check_inode;
use super::{Extents, PosIndex};
use crate::finding::{Code, Finding};
use crate::format::inode::{Body, Inode};
use crate::format::snapshot::Snapshot;

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

pub(super) fn check_snapshot(exts: &Extents<'_>, snap: &Snapshot, refs: &mut [u64], out: &mut Vec<Finding>) {
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
