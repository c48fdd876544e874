//! `mkfs-crypt rekey`: move a snapshot from its key(s) to a new key B.
//!
//! **Lazy** (the default): every directory's entry names and every symlink
//! target of the snapshot that is not yet under B is decrypted with its key and
//! re-encrypted under B with a fresh nonce (the contexts become B's), and the
//! snapshot's policy becomes B, so new data is written under B. Data extents
//! keep their contexts: the snapshot then needs its old key(s) and B. One
//! commit; O(metadata), independent of the data size.
//!
//! **`--reencrypt`**: additionally, every extent the snapshot references under
//! a key other than B is read, checked against its crc32c, decrypted, encrypted
//! under B with a fresh nonce into a new extent, and the snapshot's map entries
//! are switched to it (all of them: an extent the snapshot references several
//! times gets one copy). The old extent loses those references; it stays for
//! the other snapshots that share it and is freed at the commit otherwise.
//!
//! Work is committed in bounded batches ([`RekeyOptions::batch_bytes`]); the
//! names and policy change is part of the first commit. Since finished work is
//! recognisable (contexts and extents already under B), a re-run after a crash
//! — with or without `--resume` — skips it and continues: rekey is idempotent,
//! and a snapshot that is already fully under B is left untouched (no commit).

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::FileExt;

use serde::Serialize;

use crate::engine::image::{Image, Keyring};
use crate::engine::parallel::{combine_crcs, pieces, split_units};
use crate::error::{CorruptKind, Error, Location, Result};
use crate::format::inode::Body;
use crate::progress::Progress;
use crate::BLOCK_SIZE;
use fscrypt::context::{ExtentContext, PolicyContext};
use fscrypt::{KeyId, MasterKey, Nonce, XtsKey};

use super::snapshot_index;

/// Options of [`rekey`].
#[derive(Clone, Copy, Debug)]
pub struct RekeyOptions {
    /// Also re-encrypt the data extents (the snapshot then needs only B).
    pub reencrypt: bool,
    /// Commit after at least this many re-encrypted bytes.
    pub batch_bytes: u64,
    /// Commit after at most this many re-encrypted extents.
    pub batch_extents: u64,
    /// Commit time.
    pub time: i64,
}

/// Default batch size of `--reencrypt`: 256 MiB.
pub const DEFAULT_BATCH_BYTES: u64 = 256 << 20;
/// Default cap on extents per batch.
pub const DEFAULT_BATCH_EXTENTS: u64 = 65536;

impl Default for RekeyOptions {
    fn default() -> Self {
        RekeyOptions {
            reencrypt: false,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_extents: DEFAULT_BATCH_EXTENTS,
            time: 0,
        }
    }
}

/// What [`rekey`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RekeyReport {
    pub snapshot: String,
    /// The policy key id before and after.
    pub old_policy: String,
    pub new_policy: String,
    /// Directories whose names were re-encrypted under the new key.
    pub dirs: u64,
    /// Entry names re-encrypted.
    pub names: u64,
    /// Symlink targets re-encrypted.
    pub symlinks: u64,
    /// Extents copied and re-encrypted under the new key, and their size.
    pub extents_reencrypted: u64,
    pub bytes_reencrypted: u64,
    /// Extents of the snapshot that were already under the new key (skipped:
    /// written by `update` after a lazy rekey, or by an interrupted run).
    pub extents_already_new: u64,
    /// Extents left under other keys (lazy rekey).
    pub extents_other_keys: u64,
    /// Commits made (0: nothing to do, the image is unchanged).
    pub commits: u64,
    /// The key ids the snapshot needs afterwards.
    pub keys_needed: Vec<String>,
}

/// The key with identifier `id` among the old keys and the new one.
fn key_for<'k>(old: &'k Keyring, new: &'k MasterKey, id: &KeyId) -> Option<&'k MasterKey> {
    if new.matches(id) {
        Some(new)
    } else {
        old.get(id)
    }
}

/// Rekeys snapshot `name` to `new`; `old` holds the key(s) its names (and,
/// with `reencrypt`, its data) are under now. Refuses before writing anything
/// when a needed key is missing ([`Error::WrongKey`] naming it).
pub fn rekey(
    img: &mut Image,
    name: &str,
    old: &Keyring,
    new: &MasterKey,
    opts: &RekeyOptions,
    progress: &dyn Progress,
) -> Result<RekeyReport> {
    let si = snapshot_index(img, name)?;
    let new_id = new.identifier();
    let snap = &img.meta().snapshots[si];
    let mut report = RekeyReport {
        snapshot: name.to_string(),
        old_policy: snap.policy.to_string(),
        new_policy: new_id.to_string(),
        ..Default::default()
    };

    // Plan: which keys are needed for what is left to do.
    let mut needed: BTreeSet<KeyId> = BTreeSet::new();
    let mut names_work = snap.policy != new_id;
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(u64, u64)> = Vec::new(); // (start block, extent id)
    for ino in snap.inodes.values() {
        match &ino.body {
            Body::Dir { ctx, .. } | Body::Symlink { ctx, .. } if ctx.key != new_id => {
                needed.insert(ctx.key);
                names_work = true;
            }
            Body::File { map } => {
                for m in map {
                    if !seen.insert(m.extent) {
                        continue;
                    }
                    let e = img.extent(m.extent)?;
                    if e.ctx.key == new_id {
                        report.extents_already_new += 1;
                    } else if opts.reencrypt {
                        needed.insert(e.ctx.key);
                        todo.push((e.start, e.id));
                    } else {
                        report.extents_other_keys += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let missing: Vec<KeyId> = needed.iter().filter(|id| key_for(old, new, id).is_none()).copied().collect();
    if !missing.is_empty() {
        let mut given = old.ids();
        given.push(new_id);
        return Err(Error::WrongKey { given, needed: missing });
    }

    let mut pending = false;
    if names_work {
        rekey_names(img, si, old, new, &mut report)?;
        pending = true;
    }

    if !todo.is_empty() {
        todo.sort_unstable();
        reencrypt_extents(img, si, old, new, &todo, opts, progress, &mut pending, &mut report)?;
    }
    if pending {
        crate::progress::syncing(progress, || img.commit(opts.time))?;
        report.commits += 1;
    }
    report.keys_needed = img.keys_needed(&img.meta().snapshots[si]).iter().map(KeyId::to_string).collect();
    Ok(report)
}

/// Re-encrypts names and symlink targets not yet under `new`, and sets the
/// policy. Works on a copy of the snapshot, swapped in only on success.
fn rekey_names(img: &mut Image, si: usize, old: &Keyring, new: &MasterKey, report: &mut RekeyReport) -> Result<()> {
    let new_id = new.identifier();
    let mut snap = img.meta().snapshots[si].clone();
    let sname = snap.name.clone();
    let at = |ino: u64| Location {
        what: format!("snapshot {sname:?} inode {ino}"),
        offset: None,
    };
    let missing = |id: KeyId| Error::WrongKey {
        given: old.ids(),
        needed: vec![id],
    };
    for (&no, ino) in snap.inodes.iter_mut() {
        match &mut ino.body {
            Body::Dir { ctx, entries } if ctx.key != new_id => {
                let oc = key_for(old, new, &ctx.key).ok_or_else(|| missing(ctx.key))?.names_key(&ctx.nonce);
                let nonce = Nonce::random()?;
                let nc = new.names_key(&nonce);
                for e in entries.iter_mut() {
                    let plain = oc.decrypt_name(&e.name).map_err(|_| Error::AuthFailed { at: at(no) })?;
                    e.name = nc.encrypt_name(&plain)?;
                }
                entries.sort_unstable();
                report.names += entries.len() as u64;
                report.dirs += 1;
                *ctx = PolicyContext::new(new_id, nonce);
            }
            Body::Symlink { ctx, blob } if ctx.key != new_id => {
                let oc = key_for(old, new, &ctx.key).ok_or_else(|| missing(ctx.key))?.names_key(&ctx.nonce);
                let target = oc.decrypt_symlink(blob).map_err(|_| Error::AuthFailed { at: at(no) })?;
                let nonce = Nonce::random()?;
                *blob = new.names_key(&nonce).encrypt_symlink(&target)?;
                *ctx = PolicyContext::new(new_id, nonce);
                report.symlinks += 1;
            }
            _ => {}
        }
    }
    snap.policy = new_id;
    img.snapshots_mut()[si] = snap;
    Ok(())
}

/// Copies every extent in `todo` under `new`, switching snapshot `si`'s map
/// entries, committing in batches. `pending` says whether the working state has
/// uncommitted changes.
#[allow(clippy::too_many_arguments)]
fn reencrypt_extents(
    img: &mut Image,
    si: usize,
    old: &Keyring,
    new: &MasterKey,
    todo: &[(u64, u64)],
    opts: &RekeyOptions,
    progress: &dyn Progress,
    pending: &mut bool,
    report: &mut RekeyReport,
) -> Result<()> {
    let new_id = new.identifier();
    // extent id → (inode, map index) of every use in this snapshot.
    let wanted: BTreeSet<u64> = todo.iter().map(|&(_, id)| id).collect();
    let mut users: HashMap<u64, Vec<(u64, usize)>> = HashMap::new();
    for (&no, ino) in &img.meta().snapshots[si].inodes {
        if let Body::File { map } = &ino.body {
            for (i, m) in map.iter().enumerate() {
                if wanted.contains(&m.extent) {
                    users.entry(m.extent).or_default().push((no, i));
                }
            }
        }
    }
    let mut total = 0u64;
    for &(_, id) in todo {
        total += u64::from(img.extent(id)?.blocks) * BLOCK_SIZE as u64;
    }
    progress.start("re-encrypt", Some(total));
    let (mut batch_bytes, mut batch_n) = (0u64, 0u64);
    // One buffer for all extents: no fresh pages to fault in per extent.
    let mut buf: Vec<u8> = Vec::new();
    for &(_, id) in todo {
        let e = img.extent(id)?.clone();
        let key = key_for(old, new, &e.ctx.key).ok_or_else(|| Error::WrongKey {
            given: old.ids(),
            needed: vec![e.ctx.key],
        })?;
        // Validated metadata keeps the extent inside the image file.
        buf.resize(e.blocks as usize * BLOCK_SIZE, 0);
        img.file()
            .read_exact_at(&mut buf, e.start * BLOCK_SIZE as u64)
            .map_err(|err| Error::io(format!("reading extent {id} (blocks {}..{})", e.start, e.end()), err))?;
        let nonce = Nonce::random()?;
        let (old_crc, new_crc) = transcrypt(&key.extent_key(&e.ctx.nonce), &new.extent_key(&nonce), &mut buf);
        if old_crc != e.crc {
            return Err(Error::corrupt(
                CorruptKind::BadChecksum {
                    stored: e.crc,
                    computed: old_crc,
                },
                format!("extent {id} (blocks {}..{})", e.start, e.end()),
                Some(e.start * BLOCK_SIZE as u64),
            ));
        }
        let ctx = ExtentContext::new(new_id, nonce);
        let nid = match img.write_raw_extent_crc(ctx, &buf, new_crc) {
            // A full fixed-size image: commit the batch so far, which makes the
            // blocks of the extents it replaced reusable, and try again.
            Err(Error::NoSpace { .. }) if *pending => {
                img.commit(opts.time)?;
                report.commits += 1;
                (batch_bytes, batch_n) = (0, 0);
                img.write_raw_extent_crc(ctx, &buf, new_crc)?
            }
            r => r?,
        };
        let uses = users.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        // The old extent's users; an opened image's refcounts match them, so
        // they fit a refcount.
        let n = u32::try_from(uses.len()).map_err(|_| Error::Internal("more users than a refcount holds"))?;
        img.add_refs(nid, n)?;
        for &(no, i) in uses {
            if let Some(Body::File { map }) = img.snapshots_mut()[si].inodes.get_mut(&no).map(|n| &mut n.body) {
                if let Some(m) = map.get_mut(i) {
                    m.extent = nid;
                }
            }
            img.drop_ref(id);
        }
        *pending = true;
        let len = buf.len() as u64;
        report.extents_reencrypted += 1;
        report.bytes_reencrypted += len;
        progress.advance(1, len);
        batch_bytes += len;
        batch_n += 1;
        if batch_bytes >= opts.batch_bytes || batch_n >= opts.batch_extents {
            img.commit(opts.time)?;
            report.commits += 1;
            *pending = false;
            (batch_bytes, batch_n) = (0, 0);
        }
    }
    progress.finish();
    Ok(())
}

/// Decrypts `buf` (whole data units, unit k of the extent at offset k) under
/// `old` and encrypts it under `new`, in cache-sized pieces, on all cores.
/// Returns the crc32c of the old and of the new ciphertext.
fn transcrypt(old: &XtsKey, new: &XtsKey, buf: &mut [u8]) -> (u32, u32) {
    let parts = split_units(buf, 0, |first, part| {
        let (mut old_crc, mut new_crc) = (0u32, 0u32);
        pieces(first, part, |unit, piece| {
            old_crc = crc32c::crc32c_append(old_crc, piece);
            old.decrypt_units(unit, BLOCK_SIZE, piece);
            new.encrypt_units(unit, BLOCK_SIZE, piece);
            new_crc = crc32c::crc32c_append(new_crc, piece);
        });
        (old_crc, new_crc)
    });
    let old_crc = combine_crcs(parts.iter().map(|&((o, _), len)| (o, len)));
    let new_crc = combine_crcs(parts.iter().map(|&((_, n), len)| (n, len)));
    (old_crc, new_crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcrypt_equals_decrypt_then_encrypt_with_both_crcs() {
        let (a, b) = (XtsKey::from_bytes(&[1; 64]), XtsKey::from_bytes(&[2; 64]));
        for blocks in [1usize, 63, 64, 65, 300] {
            let plain: Vec<u8> = (0..blocks * BLOCK_SIZE).map(|i| (i * 7 % 251) as u8).collect();
            let mut ct_a = plain.clone();
            a.encrypt_units(0, BLOCK_SIZE, &mut ct_a);
            let mut want = plain.clone();
            b.encrypt_units(0, BLOCK_SIZE, &mut want);
            let mut buf = ct_a.clone();
            let (oc, nc) = transcrypt(&a, &b, &mut buf);
            assert!(buf == want, "{blocks} blocks");
            assert_eq!(oc, crate::format::bytes::crc32c(&ct_a));
            assert_eq!(nc, crate::format::bytes::crc32c(&want));
        }
    }
}
