//! Tests of the keyless metadata checks.
use super::*;
use crate::format::inode::{Body, Inode};
use crate::format::inode::{DirEntry, S_IFDIR, S_IFREG};
use crate::format::snapshot::Snapshot;
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
        .map(|f| f.code.as_str())
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
