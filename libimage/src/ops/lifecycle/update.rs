//! `mkfs-crypt update`: add or replace files of an existing snapshot from a
//! directory tree or a tar stream, optionally deleting what the source no
//! longer has.
//!
//! The import is [`Builder`] on the existing snapshot: names are looked up by
//! encrypting them under their directory's key, an existing entry is replaced
//! (its extents unreferenced, and freed at the commit when no snapshot uses
//! them any more), and new names, links and data are written under the
//! snapshot's policy key. One commit at the end.
//!
//! A regular file whose type, size, mtime, mode, owner and xattrs equal those
//! of the file already at its path is left as it is (the quick check rsync
//! makes): its extents stay shared with the other snapshots, under the keys
//! they have. [`UpdateOptions::rewrite_all`] rewrites every file instead.

use std::collections::{BTreeSet, HashSet};

use serde::Serialize;

use crate::engine::image::{Image, Keyring};
use crate::error::{Error, Location, Result};
use crate::format::inode::Body;
use crate::format::snapshot::Snapshot;
use crate::ops::build::{BuildStats, Builder, Reproducible};
use crate::ops::create::Source;
use crate::progress::Progress;
use crate::tree::{read_tar, walk_dir, EntrySink, SourceEntry, SourceKind};
use crate::BLOCK_SIZE;
use fscrypt::KeyId;

use super::snapshot_index;

/// Options of [`update`].
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateOptions {
    /// Remove every entry of the snapshot the source does not have.
    pub delete_missing: bool,
    /// Rewrite every regular file, even those that pass the quick check.
    pub rewrite_all: bool,
    /// Commit time.
    pub time: i64,
}

/// What [`update`] did.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    pub snapshot: String,
    /// The key new data was written under (the snapshot's policy).
    pub key_id: String,
    #[serde(flatten)]
    pub stats: BuildStats,
    /// Regular files left as they were (quick check: same size, mtime, mode,
    /// owner and xattrs); their extents stay shared.
    pub unchanged: u64,
    /// Entries removed by `delete_missing` (a removed directory counts once).
    pub deleted: u64,
    /// Without `delete_missing`, from a directory source: entries of the
    /// snapshot the source no longer has, left in place (a directory counts
    /// once). Always 0 for a tar source, which may be partial.
    pub missing: u64,
    /// False when nothing changed: no commit was made, the image file is
    /// untouched.
    pub committed: bool,
    /// Extents no snapshot references any more, freed at the commit.
    pub extents_freed: u64,
    pub bytes_freed: u64,
}

/// Forwards entries to the builder, recording every path the source has and
/// passing over unchanged regular files.
struct Recorder<'b, 'a> {
    inner: &'b mut Builder<'a>,
    seen: Option<&'b mut HashSet<Vec<Vec<u8>>>>,
    skip_unchanged: bool,
    unchanged: u64,
}

impl Recorder<'_, '_> {
    /// True if `e` is a regular file equal, by the quick check, to the
    /// regular file already at its path.
    fn is_unchanged(&mut self, e: &SourceEntry<'_>) -> bool {
        let SourceKind::File { size, .. } = &e.kind else { return false };
        // A lookup error (e.g. an over-long name) is reported by the import.
        let Ok(Some(ino)) = self.inner.resolve(&e.path) else { return false };
        let Some(old) = self.inner.current().inodes.get(&ino) else {
            return false;
        };
        let m = &e.meta;
        matches!(old.body, Body::File { .. })
            && old.size == *size
            && (old.mode, old.uid, old.gid) == (m.mode, m.uid, m.gid)
            && old.mtime == m.mtime
            && old.xattrs == m.xattrs
    }
}

impl EntrySink for Recorder<'_, '_> {
    fn entry(&mut self, e: SourceEntry<'_>) -> Result<()> {
        if let Some(seen) = self.seen.as_deref_mut() {
            // Tar archives may leave parent directories implicit.
            let mut p = e.path.clone();
            while seen.insert(p.clone()) && p.pop().is_some() {}
        }
        if self.skip_unchanged && self.is_unchanged(&e) {
            self.unchanged += 1;
            return Ok(());
        }
        self.inner.entry(e)
    }
}

/// Updates snapshot `name` from `source`. `keys` must hold the snapshot's
/// policy key (new data is written under it) and the key of every directory
/// of the snapshot (to look names up); otherwise nothing is written and the
/// error names the missing key ids.
pub fn update(
    img: &mut Image,
    name: &str,
    source: Source<'_>,
    keys: &Keyring,
    opts: &UpdateOptions,
    progress: &dyn Progress,
) -> Result<UpdateReport> {
    let si = snapshot_index(img, name)?;
    let snap = &img.meta().snapshots[si];
    let mut needed: BTreeSet<KeyId> = BTreeSet::new();
    needed.insert(snap.policy);
    for ino in snap.inodes.values() {
        if let Body::Dir { ctx, .. } = &ino.body {
            needed.insert(ctx.key);
        }
    }
    let missing: Vec<KeyId> = needed.into_iter().filter(|id| keys.get(id).is_none()).collect();
    if !missing.is_empty() {
        return Err(Error::WrongKey {
            given: keys.ids(),
            needed: missing,
        });
    }
    let policy = snap.policy;
    let key = keys.get(&policy).ok_or_else(|| Error::WrongKey {
        given: keys.ids(),
        needed: vec![policy],
    })?;
    if let Source::Dir(d) = &source {
        if !d.is_dir() {
            return Err(Error::Invalid(format!(
                "source directory {} does not exist or is not a directory",
                d.display()
            )));
        }
    }
    let before: Vec<(u64, u32)> = img.meta().extents.values().map(|e| (e.id, e.blocks)).collect();
    let snapshot_before = img.meta().snapshots[si].clone();
    let from_dir = matches!(source, Source::Dir(_));

    let mut seen = HashSet::new();
    let (stats, unchanged) = {
        let mut b = Builder::new(img, name, key, keys, Reproducible::default(), progress)?;
        progress.start("update", None);
        let mut sink = Recorder {
            inner: &mut b,
            seen: from_dir.then_some(&mut seen),
            skip_unchanged: !opts.rewrite_all,
            unchanged: 0,
        };
        match source {
            Source::Dir(d) => walk_dir(d, &mut sink)?,
            Source::Tar(r) => read_tar(r, &mut sink)?,
        }
        let unchanged = sink.unchanged;
        progress.finish();
        (b.finish(), unchanged)
    };

    let (mut deleted, mut missing) = (0, 0);
    if from_dir && !opts.delete_missing {
        missing = absent_entries(img, si, keys, &seen)?.len() as u64;
    }
    if opts.delete_missing {
        let doomed = absent_entries(img, si, keys, &seen)?;
        if !doomed.is_empty() {
            let mut b = Builder::new(img, name, key, keys, Reproducible::default(), progress)?;
            for (dir, ct, ino) in &doomed {
                b.unlink(*dir, ct, *ino);
            }
            b.finish();
        }
        deleted = doomed.len() as u64;
    }
    // Nothing changed: write nothing (no new generation, no new commit time).
    let committed = !same_but_atimes(&img.meta().snapshots[si], &snapshot_before);
    if committed {
        crate::progress::syncing(progress, || img.commit(opts.time))?;
    }

    let (mut extents_freed, mut bytes_freed) = (0, 0);
    for (id, blocks) in before {
        if !img.meta().extents.contains_key(&id) {
            extents_freed += 1;
            bytes_freed += u64::from(blocks) * BLOCK_SIZE as u64;
        }
    }
    Ok(UpdateReport {
        snapshot: name.to_string(),
        key_id: policy.to_string(),
        stats,
        unchanged,
        deleted,
        missing,
        committed,
        extents_freed,
        bytes_freed,
    })
}

/// True when `a` and `b` differ at most in access times: reading the source
/// tree moves its directories' atimes, which is no reason for a commit.
fn same_but_atimes(a: &Snapshot, b: &Snapshot) -> bool {
    (a.policy, a.root, a.next_ino, a.created, a.inodes.len()) == (b.policy, b.root, b.next_ino, b.created, b.inodes.len())
        && a.inodes.iter().zip(&b.inodes).all(|((ka, ia), (kb, ib))| {
            ka == kb
                && (ia == ib || {
                    let mut c = ia.clone();
                    c.atime = ib.atime;
                    c == *ib
                })
        })
}

/// Every entry `(directory, encrypted name, inode)` of snapshot `si` whose
/// path is not in `seen`, top-down; the subtree of an absent directory is not
/// listed (unlinking the directory removes it).
fn absent_entries(img: &Image, si: usize, keys: &Keyring, seen: &HashSet<Vec<Vec<u8>>>) -> Result<Vec<(u64, Vec<u8>, u64)>> {
    let snap = &img.meta().snapshots[si];
    let mut out = Vec::new();
    let mut stack: Vec<(u64, Vec<Vec<u8>>)> = vec![(snap.root, Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        let Some(Body::Dir { ctx, entries }) = snap.inodes.get(&dir).map(|i| &i.body) else {
            continue;
        };
        let key = keys.get(&ctx.key).ok_or_else(|| Error::WrongKey {
            given: keys.ids(),
            needed: vec![ctx.key],
        })?;
        let cipher = key.names_key(&ctx.nonce);
        for e in entries {
            let plain = cipher.decrypt_name(&e.name).map_err(|_| Error::AuthFailed {
                at: Location {
                    what: format!("snapshot {:?} directory inode {dir}", snap.name),
                    offset: None,
                },
            })?;
            let mut p = path.clone();
            p.push(plain);
            if !seen.contains(&p) {
                out.push((dir, e.name.clone(), e.ino));
            } else if snap.inodes.get(&e.ino).is_some_and(|i| i.is_dir()) {
                stack.push((e.ino, p));
            }
        }
    }
    Ok(out)
}
