//! `--repair`: the safe fixes, all in one copy-on-write commit.
//!
//! Fixed:
//! - refcounts, recomputed from the file maps of every snapshot; an extent
//!   nothing references is dropped and its blocks freed (leaked blocks);
//! - the allocation map, rebuilt from the extent table (every commit does
//!   this), which frees leaked blocks and covers free-but-referenced ones;
//! - a damaged or stale superblock slot: the commit writes the next
//!   generation into the other slot;
//! - dangling directory entries (naming an inode that does not exist): the
//!   entry is removed — there is nothing to move, its inode is gone;
//! - orphaned inodes (that no entry names, the other half of a broken
//!   link): moved to `/lost+found/#INO`. Directory names are encrypted, so
//!   naming `lost+found` in the root and `#INO` inside it needs the key of the
//!   root directory (and of an existing `lost+found`). Without it the orphans
//!   are reported and left alone, and `not_repaired` says which key to pass;
//! - link counts, recomputed from the entries after the above.
//!
//! Damaged newest metadata (`E_META_CRC`, `E_META_BLOCK`, `E_META_DECODE`)
//! is repaired by rolling back to the previous generation when every block
//! of it is intact (`rollback.rs`).
//!
//! Anything else (overlaps, cycles, bad contexts, damaged names or data) is
//! reported and left alone. Nothing is written
//! when the metadata cannot be decoded or the image is truncated.
//!
//! The commit is `Image::commit`: new metadata in free blocks, then the
//! superblock flip, so an interrupted repair leaves the image as it was.
//! Blocks the old allocation map claims are kept out of the repair's own
//! allocations (`Image::reserve_stored_alloc`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::engine::image::{Access, Image, Keyring};
use crate::error::{Error, Result};
use crate::finding::Where;
use crate::format::inode::{Body, DirEntry, Inode};
use crate::format::meta::Metadata;
use crate::format::snapshot::Snapshot;
use crate::format::validate::{tree_shape, ParentMap};
use crate::tree::Timespec;
use fscrypt::context::PolicyContext;
use fscrypt::{nokey_name, Nonce};

use super::{at_inode, dir_cipher, render_path, show_name, Checked};

/// One change `--repair` made.
#[derive(Clone, Debug, Serialize)]
pub struct Repair {
    /// The finding code this fixes.
    pub code: &'static str,
    #[serde(rename = "where")]
    pub at: Where,
    /// What was done, in one line.
    pub action: String,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fixed {}: {}", self.code, self.action)?;
        let at = self.at.to_string();
        if !at.is_empty() {
            write!(f, " [{at}]")?;
        }
        Ok(())
    }
}

/// What the repair did and did not do.
#[derive(Default)]
pub(super) struct Outcome {
    pub repairs: Vec<Repair>,
    pub not_repaired: Vec<String>,
}

/// Finding codes `--repair` may fix.
pub const REPAIRABLE: &[&str] = &[
    "E_REFCOUNT",
    "W_EXTENT_UNREFERENCED",
    "W_BLOCKS_LEAKED",
    "E_ALLOC_MAP",
    "W_SUPERBLOCK_SLOT",
    "E_DANGLING_ENTRY",
    "E_ORPHAN",
    "E_NLINK",
];

pub(super) fn repair(path: &Path, keys: &Keyring, checked: &Checked) -> Result<Outcome> {
    let mut o = Outcome::default();
    let findings = &checked.report.findings;
    let has = |code: &str| findings.iter().any(|f| f.code == code);
    if checked.loaded.is_none() {
        if let Some(f) = findings.iter().find(|f| super::rollback::META_DAMAGE.contains(&f.code)) {
            super::rollback::rollback(path, f.code.as_str(), &mut o)?;
            return Ok(o);
        }
    }
    if !findings.iter().any(|f| REPAIRABLE.contains(&f.code.as_str())) {
        return Ok(o);
    }
    let Some(generation) = checked.loaded else {
        o.not_repaired
            .push("the metadata could not be read, so nothing can be repaired".into());
        return Ok(o);
    };
    if has("E_TRUNCATED") {
        o.not_repaired
            .push("the image is truncated; the repair does not write to it".into());
        return Ok(o);
    }
    if has("E_SUPERBLOCK_NEWER") {
        // A commit would overwrite the damaged newer superblock, the only
        // trace of the newer generation.
        o.not_repaired.push(
            "a damaged superblock belongs to a newer generation; --repair does not write over it (restore from backup, or \
             accept the older generation by writing to the image with another tool)"
                .into(),
        );
        return Ok(o);
    }
    let (mut img, _) = Image::open_unchecked(path, Access::ReadWrite)?;
    if img.superblock().generation != generation {
        return Err(Error::Invalid(
            "the image changed while it was being checked; run the check again".into(),
        ));
    }
    img.reserve_stored_alloc();
    let time = crate::ops::create::now(Default::default());
    for snap in img.snapshots_mut() {
        fix_tree(snap, keys, time, &mut o)?;
    }
    fix_refcounts(img.meta_for_repair(), &mut o);
    if img.meta().alloc != img.meta().alloc_from_extents() {
        for code in ["E_ALLOC_MAP", "W_BLOCKS_LEAKED"] {
            if has(code) {
                o.repairs.push(Repair {
                    code,
                    at: Where::default(),
                    action: "rebuilt the allocation map from the extent table".into(),
                });
            }
        }
    }
    if let Some(slot) = checked.stale_slot {
        o.repairs.push(Repair {
            code: "W_SUPERBLOCK_SLOT",
            at: Where {
                block: Some(slot),
                ..Where::default()
            },
            action: format!("wrote generation {} over the damaged or stale superblock slot", generation + 1),
        });
    }
    if o.repairs.is_empty() {
        return Ok(o);
    }
    img.commit(time)?;
    Ok(o)
}

fn fix_refcounts(meta: &mut Metadata, o: &mut Outcome) {
    let mut refs: HashMap<u64, u64> = HashMap::new();
    for s in &meta.snapshots {
        for ino in s.inodes.values() {
            if let Body::File { map } = &ino.body {
                for m in map {
                    *refs.entry(m.extent).or_default() += 1;
                }
            }
        }
    }
    let ids: Vec<u64> = meta.extents.keys().copied().collect();
    for id in ids {
        let n = refs.get(&id).copied().unwrap_or(0);
        let Some(e) = meta.extents.get_mut(&id) else { continue };
        let at = Where {
            extent: Some(id),
            block: Some(e.start),
            ..Where::default()
        };
        if n == 0 {
            let code = if e.refcount == 0 { "W_EXTENT_UNREFERENCED" } else { "E_REFCOUNT" };
            let action = format!("freed the unreferenced extent ({} blocks at block {})", e.blocks, e.start);
            meta.extents.remove(&id);
            o.repairs.push(Repair { code, at, action });
        } else if n != u64::from(e.refcount) {
            match u32::try_from(n) {
                Ok(n32) => {
                    o.repairs.push(Repair {
                        code: "E_REFCOUNT",
                        at,
                        action: format!("set the refcount from {} to {n}", e.refcount),
                    });
                    e.refcount = n32;
                }
                Err(_) => o.not_repaired.push(format!("extent {id}: {n} references do not fit a refcount")),
            }
        }
    }
}

/// Dangling entries, orphans and link counts of one snapshot.
fn fix_tree(snap: &mut Snapshot, keys: &Keyring, time: i64, o: &mut Outcome) -> Result<()> {
    if !snap.inodes.get(&snap.root).is_some_and(Inode::is_dir) {
        return Ok(());
    }
    let shape = tree_shape(snap);
    // Describe the dangling entries before changing anything.
    {
        let parents = ParentMap::new(snap);
        let mut cache = HashMap::new();
        for &(dir, i) in &shape.dangling {
            let Some(Body::Dir { entries, .. }) = snap.inodes.get(&dir).map(|d| &d.body) else {
                continue;
            };
            let Some(e) = entries.get(i) else { continue };
            let name = dir_cipher(snap, dir, keys, &mut cache)
                .and_then(|c| c.decrypt_name(&e.name).ok())
                .map_or_else(|| nokey_name(&e.name), |n| show_name(&n));
            let mut at = at_inode(snap, dir);
            at.path = render_path(snap, &parents, dir, keys, &mut cache);
            o.repairs.push(Repair {
                code: "E_DANGLING_ENTRY",
                at,
                action: format!("removed the entry {name:?}, which named the missing inode {}", e.ino),
            });
        }
    }
    if !shape.dangling.is_empty() {
        let existing: HashSet<u64> = snap.inodes.keys().copied().collect();
        let dirs: HashSet<u64> = shape.dangling.iter().map(|d| d.0).collect();
        for d in dirs {
            if let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = snap.inodes.get_mut(&d)
            {
                entries.retain(|e| existing.contains(&e.ino));
            }
        }
    }
    let mut moved: HashSet<u64> = HashSet::new();
    if !shape.orphans.is_empty() {
        if shape.cycles.is_empty() {
            moved = lost_and_found(snap, keys, &shape.orphans, time, o)?;
        } else {
            o.not_repaired.push(format!(
                "snapshot {:?}: {} orphaned inodes left in place because its directory graph has a cycle",
                snap.name,
                shape.orphans.len()
            ));
        }
    }
    // Link counts from the entries as they now are.
    let mut links: HashMap<u64, u32> = HashMap::new();
    for ino in snap.inodes.values() {
        if let Body::Dir { entries, .. } = &ino.body {
            for e in entries {
                let n = links.entry(e.ino).or_default();
                *n = n.saturating_add(1);
            }
        }
    }
    let root = snap.root;
    let name = snap.name.clone();
    for ino in snap.inodes.values_mut() {
        let expected = if ino.ino == root {
            1
        } else {
            links.get(&ino.ino).copied().unwrap_or(0)
        };
        if expected == 0 || ino.nlink == expected {
            continue;
        }
        if !moved.contains(&ino.ino) {
            o.repairs.push(Repair {
                code: "E_NLINK",
                at: Where {
                    snapshot: Some(name.clone()),
                    inode: Some(ino.ino),
                    ..Where::default()
                },
                action: format!("set the link count from {} to {expected}", ino.nlink),
            });
        }
        ino.nlink = expected;
    }
    Ok(())
}

/// Moves `orphans` into `/lost+found` (created if needed). Returns the inodes
/// moved; explains in `not_repaired` when a key is missing.
fn lost_and_found(snap: &mut Snapshot, keys: &Keyring, orphans: &[u64], time: i64, o: &mut Outcome) -> Result<HashSet<u64>> {
    let mut moved = HashSet::new();
    let root = snap.root;
    let Some(Body::Dir {
        ctx: rctx,
        entries: rentries,
    }) = snap.inodes.get(&root).map(|i| &i.body)
    else {
        return Ok(moved);
    };
    let rctx = *rctx;
    let (sname, n) = (snap.name.clone(), orphans.len());
    let left = |why: String| format!("snapshot {sname:?}: {n} orphaned inodes not moved to /lost+found: {why}");
    if rctx.validate().is_err() {
        o.not_repaired.push(left("the root directory's context is invalid".into()));
        return Ok(moved);
    }
    let Some(rkey) = keys.get(&rctx.key) else {
        o.not_repaired.push(left(format!(
            "naming /lost+found needs the root directory's key {}; give that key to the repair",
            rctx.key
        )));
        return Ok(moved);
    };
    let lf_ct = rkey.names_key(&rctx.nonce).encrypt_name(b"lost+found")?;
    let existing = rentries.iter().find(|e| e.name == lf_ct).map(|e| e.ino);
    let t = Timespec { sec: time, nsec: 0 };
    let (lf, lf_ctx) = match existing {
        Some(ino) => match snap.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::Dir { ctx, .. }) if ctx.validate().is_ok() => (ino, *ctx),
            _ => {
                o.not_repaired.push(left("/lost+found exists but is not a usable directory".into()));
                return Ok(moved);
            }
        },
        None => {
            let ctx = PolicyContext::new(rctx.key, Nonce::random()?);
            let ino = snap.alloc_ino();
            snap.inodes.insert(ino, Inode::empty_dir(ino, 0o700, ctx, t));
            if let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = snap.inodes.get_mut(&root)
            {
                entries.push(DirEntry { name: lf_ct, ino });
                entries.sort_unstable();
            }
            o.repairs.push(Repair {
                code: "E_ORPHAN",
                at: Where {
                    snapshot: Some(snap.name.clone()),
                    inode: Some(ino),
                    path: Some("/lost+found".into()),
                    ..Where::default()
                },
                action: "created /lost+found for orphaned inodes".into(),
            });
            (ino, ctx)
        }
    };
    let Some(lkey) = keys.get(&lf_ctx.key) else {
        o.not_repaired.push(left(format!(
            "/lost+found is encrypted under key {}; give that key to the repair",
            lf_ctx.key
        )));
        return Ok(moved);
    };
    let cipher = lkey.names_key(&lf_ctx.nonce);
    let mut taken: HashSet<Vec<u8>> = match snap.inodes.get(&lf).map(|i| &i.body) {
        Some(Body::Dir { entries, .. }) => entries.iter().map(|e| e.name.clone()).collect(),
        _ => HashSet::new(),
    };
    let mut new_entries = Vec::new();
    for &orphan in orphans {
        let mut chosen = None;
        for k in 0..1000u32 {
            let name = if k == 0 { format!("#{orphan}") } else { format!("#{orphan}.{k}") };
            let ct = cipher.encrypt_name(name.as_bytes())?;
            if taken.insert(ct.clone()) {
                chosen = Some((name, ct));
                break;
            }
        }
        let Some((name, ct)) = chosen else {
            o.not_repaired
                .push(format!("snapshot {:?}: no free name in /lost+found for inode {orphan}", snap.name));
            continue;
        };
        new_entries.push(DirEntry { name: ct, ino: orphan });
        moved.insert(orphan);
        o.repairs.push(Repair {
            code: "E_ORPHAN",
            at: Where {
                snapshot: Some(snap.name.clone()),
                inode: Some(orphan),
                path: Some(format!("/lost+found/{name}")),
                ..Where::default()
            },
            action: format!("moved the orphaned inode {orphan} to /lost+found/{name}"),
        });
    }
    if let Some(Inode {
        body: Body::Dir { entries, .. },
        ..
    }) = snap.inodes.get_mut(&lf)
    {
        entries.extend(new_entries);
        entries.sort_unstable();
    }
    Ok(moved)
}
