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

use crate::engine::image::Image;
use crate::error::{Error, Result};
use crate::format::inode::Body;
use crate::BLOCK_SIZE;

pub mod compact;
pub mod rekey;
pub mod update;

pub use compact::{compact, CompactOptions, CompactReport};
pub use rekey::{rekey, RekeyOptions, RekeyReport};
pub use update::{update, UpdateOptions, UpdateReport};

/// The index of snapshot `name`, or an error listing the snapshots there are.
pub fn snapshot_index(img: &Image, name: &str) -> Result<usize> {
    img.meta().snapshot_index(name)
}

/// Per extent id, how many file-map entries of snapshot `si` reference it.
fn extent_uses(img: &Image, si: usize) -> HashMap<u64, u64> {
    let mut uses: HashMap<u64, u64> = HashMap::new();
    if let Some(s) = img.meta().snapshots.get(si) {
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
    if let Err(why) = crate::format::snapshot::check_name(name) {
        return Err(Error::Invalid(format!("snapshot name {name:?}: {why}")));
    }
    if img.meta().snapshot(name).is_some() {
        return Err(Error::Invalid(format!(
            "a snapshot named {name:?} already exists; choose another name or delete it first"
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
        // Within u32: checked against the refcount above.
        img.add_refs(id, n as u32)?;
    }
    let mut copy = img.meta().snapshots[si].clone();
    copy.name = name.to_string();
    copy.created = time;
    let inodes = copy.inodes.len();
    img.snapshots_mut().push(copy);
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
    if img.meta().snapshots.len() == 1 {
        return Err(Error::Invalid(format!(
            "snapshot {name:?} is the image's only snapshot; an image keeps at least one (remove the image file instead)"
        )));
    }
    let uses = extent_uses(img, si);
    let snap = img.snapshots_mut().remove(si);
    let (mut extents_freed, mut bytes_freed, mut extents_kept) = (0, 0, 0);
    for (id, n) in uses {
        let Some(e) = img.meta().extents.get(&id) else { continue };
        if u64::from(e.refcount) <= n {
            extents_freed += 1;
            bytes_freed += u64::from(e.blocks) * BLOCK_SIZE as u64;
        } else {
            extents_kept += 1;
        }
        for _ in 0..n {
            img.drop_ref(id);
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

#[cfg(test)]
mod tests {
    //! Keyless operations on a hand-built image (no crypto involved).
    use super::*;
    use crate::engine::image::Access;
    use crate::format::inode::{DirEntry, Inode, MapEntry, S_IFDIR, S_IFREG};
    use crate::format::snapshot::Snapshot;
    use crate::tree::Timespec;
    use fscrypt::context::{ExtentContext, PolicyContext};
    use fscrypt::{KeyId, Nonce};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn inode(ino: u64, mode: u32, size: u64, body: Body) -> Inode {
        Inode {
            ino,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            size,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            rdev: 0,
            xattrs: Vec::new(),
            body,
        }
    }

    /// An image with snapshot `main`: `/f1` (extents 1 and 2) and `/f2` (extent 2 again).
    fn raw_image(dir: &Path) -> PathBuf {
        let path = dir.join("img");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut img = Image::create(file, &path, [7; 16], 0).unwrap();
        img.commit(1).unwrap();
        let ctx = ExtentContext::new(KeyId([1; 16]), Nonce([2; 16]));
        let e1 = img.write_raw_extent(ctx, &[5u8; 3 * BLOCK_SIZE]).unwrap();
        let e2 = img.write_raw_extent(ctx, &[6u8; BLOCK_SIZE]).unwrap();
        img.add_refs(e1, 1).unwrap();
        img.add_refs(e2, 2).unwrap();
        let pol = PolicyContext::new(KeyId([1; 16]), Nonce([3; 16]));
        let map = |v: Vec<(u64, u32, u64)>| Body::File {
            map: v
                .into_iter()
                .map(|(lblk, blocks, extent)| MapEntry {
                    lblk,
                    blocks,
                    extent,
                    offset: 0,
                })
                .collect(),
        };
        let mut inodes = BTreeMap::new();
        let entries = vec![DirEntry { name: vec![1; 32], ino: 2 }, DirEntry { name: vec![2; 32], ino: 3 }];
        inodes.insert(1, inode(1, S_IFDIR | 0o755, 0, Body::Dir { ctx: pol, entries }));
        inodes.insert(2, inode(2, S_IFREG | 0o644, 4 * 4096, map(vec![(0, 3, e1), (3, 1, e2)])));
        inodes.insert(3, inode(3, S_IFREG | 0o644, 4096, map(vec![(0, 1, e2)])));
        img.snapshots_mut().push(Snapshot {
            name: "main".into(),
            policy: KeyId([1; 16]),
            root: 1,
            next_ino: 4,
            created: 1,
            inodes,
        });
        img.commit(1).unwrap();
        path
    }

    fn hash(p: &Path) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
    }

    #[test]
    fn snapshot_shares_then_delete_restores() {
        let d = tempfile::tempdir().unwrap();
        let p = raw_image(d.path());
        let mut img = Image::open(&p, Access::ReadWrite).unwrap();
        let alloc = img.meta().alloc.clone();
        let r = snapshot(&mut img, "main", "copy", 5).unwrap();
        assert_eq!((r.inodes, r.extents_shared, r.bytes_shared), (3, 2, 4 * 4096));
        drop(img);
        let mut img = Image::open(&p, Access::ReadWrite).unwrap(); // validated: refcounts exact
        assert_eq!(img.meta().alloc, alloc);
        let rc: Vec<u32> = img.meta().extents.values().map(|e| e.refcount).collect();
        assert_eq!(rc, vec![2, 4]);
        assert_eq!(img.meta().snapshot("copy").unwrap().created, 5);
        let r = delete(&mut img, "main", 6).unwrap();
        assert_eq!((r.extents_freed, r.extents_kept), (0, 2));
        drop(img);
        let mut img = Image::open(&p, Access::ReadWrite).unwrap();
        let rc: Vec<u32> = img.meta().extents.values().map(|e| e.refcount).collect();
        assert_eq!(rc, vec![1, 2]);
        // The last snapshot stays; refusals change no byte.
        let h = hash(&p);
        assert!(delete(&mut img, "copy", 7).unwrap_err().to_string().contains("only snapshot"));
        assert!(delete(&mut img, "main", 7).unwrap_err().to_string().contains("no snapshot named"));
        assert!(snapshot(&mut img, "copy", "copy", 7)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(snapshot(&mut img, "main", "x", 7).is_err());
        assert!(snapshot(&mut img, "copy", "a/b", 7).is_err());
        drop(img);
        assert_eq!(hash(&p), h);
    }

    #[test]
    fn delete_frees_unique_extents() {
        let d = tempfile::tempdir().unwrap();
        let p = raw_image(d.path());
        let mut img = Image::open(&p, Access::ReadWrite).unwrap();
        snapshot(&mut img, "main", "copy", 5).unwrap();
        // Give `copy` a unique extent instead of extent 1.
        let ctx = ExtentContext::new(KeyId([9; 16]), Nonce([9; 16]));
        let e3 = img.write_raw_extent(ctx, &[8u8; 3 * BLOCK_SIZE]).unwrap();
        img.add_refs(e3, 1).unwrap();
        let s = img.snapshots_mut().iter_mut().find(|s| s.name == "copy").unwrap();
        if let Body::File { map } = &mut s.inodes.get_mut(&2).unwrap().body {
            map[0].extent = e3;
        }
        img.drop_ref(1);
        img.commit(6).unwrap();
        drop(img);
        let mut img = Image::open(&p, Access::ReadWrite).unwrap();
        let free0 = img.free_blocks();
        let r = delete(&mut img, "copy", 7).unwrap();
        assert_eq!((r.extents_freed, r.bytes_freed, r.extents_kept), (1, 3 * 4096, 1));
        drop(img);
        let img = Image::open(&p, Access::ReadOnly).unwrap();
        assert!(!img.meta().extents.contains_key(&e3));
        assert!(img.free_blocks() >= free0 + 3 - img.superblock().meta_blocks);
        assert_eq!(img.meta().extents.values().map(|e| e.refcount).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn snapshot_refuses_refcount_overflow_without_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = raw_image(d.path());
        let mut img = Image::open(&p, Access::ReadWrite).unwrap();
        img.meta_mut_unchecked().extents.get_mut(&2).unwrap().refcount = u32::MAX - 1;
        let before = img.meta().clone();
        let e = snapshot(&mut img, "main", "copy", 5).unwrap_err();
        assert!(e.to_string().contains("referenced more than"), "{e}");
        assert_eq!(img.meta(), &before);
    }

    #[test]
    fn fault_injection_per_image_keeps_the_committed_state() {
        let d = tempfile::tempdir().unwrap();
        let p = raw_image(d.path());
        let h = hash(&p);
        for k in 1..=2 {
            let mut img = Image::open(&p, Access::ReadWrite).unwrap();
            img.set_fail_after(Some(k));
            let e = snapshot(&mut img, "main", "copy", 5).unwrap_err();
            assert!(matches!(e, Error::InjectedFault { .. }), "{e}");
            drop(img);
            let img = Image::open(&p, Access::ReadOnly).unwrap();
            assert_eq!(img.meta().snapshots.len(), 1);
        }
        assert_ne!(hash(&p), h, "the cut runs wrote blocks");
        // Writes of a whole run: metadata region, superblock (no data).
        let mut img = Image::open(&p, Access::ReadWrite).unwrap();
        snapshot(&mut img, "main", "copy", 5).unwrap();
        assert_eq!(img.writes(), 2);
        drop(img);
        // The per-thread hook applies to images opened later on this thread only.
        crate::engine::image::set_thread_fail_after(Some(1));
        let other = std::thread::spawn({
            let p = p.clone();
            move || {
                let mut img = Image::open(&p, Access::ReadWrite).unwrap();
                delete(&mut img, "copy", 6).map(drop)
            }
        })
        .join()
        .unwrap();
        let mine = Image::open(&p, Access::ReadWrite).and_then(|mut img| snapshot(&mut img, "main", "third", 7).map(drop));
        crate::engine::image::set_thread_fail_after(None);
        assert!(other.is_ok());
        assert!(matches!(mine, Err(Error::InjectedFault { .. })));
    }
}
