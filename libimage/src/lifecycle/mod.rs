//! The per-extent key lifecycle: `snapshot`, `rekey` (lazy or `--reencrypt`),
//! `update` and `delete`.
//!
//! Every operation works on an open [`Image`], changes only its in-memory
//! working state, and ends in [`Image::commit`] (an atomic superblock flip).
//! Until then nothing the committed state references is touched: new data goes
//! into blocks that are free in the committed state, and blocks freed by the
//! operation are reusable only after its commit. A crash or an error at any
//! point therefore leaves the image exactly as it was before the operation (or
//! before the current batch, for the batched `rekey --reencrypt`).
//!
//! Every refusal (missing snapshot, duplicate name, wrong or missing key) is
//! decided before the first write, so a refused operation leaves the image
//! file byte-identical.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::inode::Body;
use crate::BLOCK_SIZE;

pub mod rekey;
pub mod update;

pub use rekey::{rekey, RekeyOptions, RekeyReport};
pub use update::{update, UpdateOptions, UpdateReport};

/// The index of snapshot `name`, or an error listing the snapshots there are.
pub fn snapshot_index(img: &Image, name: &str) -> Result<usize> {
    img.meta.snapshots.iter().position(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = img.meta.snapshots.iter().map(|s| s.name.as_str()).collect();
        Error::Invalid(format!("no snapshot named {name:?} (the image has: {})", names.join(", ")))
    })
}

/// Per extent id, how many file-map entries of snapshot `si` reference it.
fn extent_uses(img: &Image, si: usize) -> HashMap<u64, u64> {
    let mut uses: HashMap<u64, u64> = HashMap::new();
    if let Some(s) = img.meta.snapshots.get(si) {
        for ino in s.inodes.values() {
            if let Body::File { map } = &ino.body {
                for m in map {
                    *uses.entry(m.extent).or_default() += 1;
                }
            }
        }
    }
    uses
}

/// What `snapshot` made.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotReport {
    pub from: String,
    pub name: String,
    pub inodes: usize,
    /// Distinct extents now shared with the source snapshot.
    pub extents_shared: usize,
    /// Their size in bytes (no data was copied).
    pub bytes_shared: u64,
    /// Size of the metadata stream before and after.
    pub metadata_bytes_before: u64,
    pub metadata_bytes_after: u64,
}

/// `mkfs-crypt snapshot`: a new snapshot `name` that is a copy of `from`'s
/// inode table. Costs O(metadata): no data is copied; every extent `from`
/// references gains the references of the copy. Directory and symlink contexts
/// are copied as they are (same nonces: they encrypt the same names).
pub fn snapshot(img: &mut Image, from: &str, name: &str, time: i64) -> Result<SnapshotReport> {
    if let Err(why) = crate::snapshot::check_name(name) {
        return Err(Error::Invalid(format!("snapshot name {name:?}: {why}")));
    }
    if img.meta.snapshot(name).is_some() {
        return Err(Error::Invalid(format!(
            "a snapshot named {name:?} already exists; choose another --name or delete it first"
        )));
    }
    let si = snapshot_index(img, from)?;
    let uses = extent_uses(img, si);
    // Check every refcount first, so a refusal changes nothing.
    let mut bytes_shared = 0u64;
    for (&id, &n) in &uses {
        let e = img.extent(id)?;
        if u64::from(e.refcount) + n > u64::from(u32::MAX) {
            return Err(Error::Invalid(format!(
                "extent {id} would be referenced more than {} times; delete a snapshot first",
                u32::MAX
            )));
        }
        bytes_shared += u64::from(e.blocks) * BLOCK_SIZE as u64;
    }
    for (&id, &n) in &uses {
        if let Some(e) = img.meta.extents.get_mut(&id) {
            e.refcount += n as u32;
        }
    }
    let mut copy = img.meta.snapshots[si].clone();
    copy.name = name.to_string();
    copy.created = time;
    let inodes = copy.inodes.len();
    img.meta.snapshots.push(copy);
    let before = img.superblock().meta_bytes;
    img.commit(time)?;
    Ok(SnapshotReport {
        from: from.to_string(),
        name: name.to_string(),
        inodes,
        extents_shared: uses.len(),
        bytes_shared,
        metadata_bytes_before: before,
        metadata_bytes_after: img.superblock().meta_bytes,
    })
}

/// What `delete` freed.
#[derive(Clone, Debug, Serialize)]
pub struct DeleteReport {
    pub snapshot: String,
    pub inodes: usize,
    /// Extents only this snapshot referenced, now free.
    pub extents_freed: u64,
    pub bytes_freed: u64,
    /// Extents still referenced by other snapshots.
    pub extents_kept: u64,
}

/// `mkfs-crypt delete`: drops snapshot `name` and one reference per file-map
/// entry it had; extents no other snapshot references are freed at the commit.
/// Needs no key. The image's last snapshot cannot be deleted (an image always
/// has at least one snapshot): remove the image file instead.
pub fn delete(img: &mut Image, name: &str, time: i64) -> Result<DeleteReport> {
    let si = snapshot_index(img, name)?;
    if img.meta.snapshots.len() == 1 {
        return Err(Error::Invalid(format!(
            "snapshot {name:?} is the image's only snapshot; an image keeps at least one (remove the image file instead)"
        )));
    }
    let uses = extent_uses(img, si);
    let snap = img.meta.snapshots.remove(si);
    let (mut extents_freed, mut bytes_freed, mut extents_kept) = (0, 0, 0);
    for (id, n) in uses {
        let Some(e) = img.meta.extents.get(&id) else { continue };
        if u64::from(e.refcount) <= n {
            extents_freed += 1;
            bytes_freed += u64::from(e.blocks) * BLOCK_SIZE as u64;
        } else {
            extents_kept += 1;
        }
        for _ in 0..n {
            img.unref_extent(id);
        }
    }
    img.commit(time)?;
    Ok(DeleteReport {
        snapshot: snap.name,
        inodes: snap.inodes.len(),
        extents_freed,
        bytes_freed,
        extents_kept,
    })
}
