//! Key coverage (always) and the checks that need keys: key match, names,
//! symlink targets.
//!
//! A key verifies an image only through its identifier: fscrypt derives the
//! identifier from the key (HKDF), so a key whose identifier matches a context
//! is the key that context was written with. fscrypt names and symlink targets
//! carry no MAC either; what "decrypts" means here is that the plaintext obeys
//! fscrypt's rules (no NUL inside, exact padding, no `/`), which a wrong nonce
//! or damaged ciphertext breaks with overwhelming probability for names longer
//! than a few bytes of padding.

use std::collections::BTreeMap;

use crate::engine::image::Keyring;
use crate::finding::{Code, Finding};
use crate::format::extent::Extent;
use crate::format::inode::{symlink_ciphertext, Body};
use crate::format::meta::Metadata;
use crate::format::snapshot::Snapshot;
use crate::format::validate::PosIndex;
use fscrypt::{valid_name_ct_len, KeyId};

use super::{KeyNeed, KeyUse, SnapshotKeys};

#[derive(Default, Clone, Copy)]
struct Counts {
    dirs: u64,
    symlinks: u64,
    extents: u64,
    policy: bool,
}

/// Every key a snapshot needs, with what uses it.
fn coverage(exts: &(PosIndex, Vec<&Extent>), snap: &Snapshot) -> BTreeMap<KeyId, Counts> {
    let mut m: BTreeMap<KeyId, Counts> = BTreeMap::new();
    m.entry(snap.policy).or_default().policy = true;
    // Distinct extents, by position, without hashing.
    let mut seen = vec![false; exts.1.len()];
    for ino in snap.inodes.values() {
        match &ino.body {
            Body::Dir { ctx, .. } => m.entry(ctx.key).or_default().dirs += 1,
            Body::Symlink { ctx, .. } => m.entry(ctx.key).or_default().symlinks += 1,
            Body::File { map } => {
                for me in map {
                    if let Some(p) = exts.0.pos(me.extent) {
                        if !seen[p] {
                            seen[p] = true;
                            m.entry(exts.1[p].ctx.key).or_default().extents += 1;
                        }
                    }
                }
            }
            Body::Special => {}
        }
    }
    m
}

/// Number of contexts in the whole image naming each key.
fn uses(meta: &Metadata) -> BTreeMap<KeyId, u64> {
    let mut m: BTreeMap<KeyId, u64> = BTreeMap::new();
    for e in meta.extents.values() {
        *m.entry(e.ctx.key).or_default() += 1;
    }
    for s in &meta.snapshots {
        *m.entry(s.policy).or_default() += 1;
        for ino in s.inodes.values() {
            if let Body::Dir { ctx, .. } | Body::Symlink { ctx, .. } = &ino.body {
                *m.entry(ctx.key).or_default() += 1;
            }
        }
    }
    m
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Key coverage of the selected snapshots, key match, and with keys the name
/// and symlink checks.
pub(super) fn check(meta: &Metadata, selected: &[&Snapshot], keys: &Keyring, out: &mut Vec<Finding>) -> (Vec<SnapshotKeys>, Vec<KeyUse>) {
    let used = uses(meta);
    let mut given = Vec::new();
    for id in keys.ids() {
        let n = used.get(&id).copied().unwrap_or(0);
        if n == 0 {
            out.push(Finding::new(
                Code::KeyUnused,
                format!("key {id} matches no context in the image: it is not a key of this image (wrong key file?)"),
                "compare with the key ids the image needs (the image's info lists them)",
            ));
        }
        given.push(KeyUse {
            key_id: id.to_string(),
            contexts: n,
        });
    }
    let mut report = Vec::new();
    let exts = (
        PosIndex::new(meta.extents.keys().copied().collect()),
        meta.extents.values().collect(),
    );
    for snap in selected {
        let cov = coverage(&exts, snap);
        let mut needs = Vec::new();
        for (id, c) in &cov {
            let have = keys.get(id).is_some();
            if !have && !keys.is_empty() {
                let mut what = Vec::new();
                if c.dirs > 0 {
                    what.push(plural(c.dirs, "directory", "directories"));
                }
                if c.symlinks > 0 {
                    what.push(plural(c.symlinks, "symlink", "symlinks"));
                }
                if c.extents > 0 {
                    what.push(plural(c.extents, "extent", "extents"));
                }
                if c.policy {
                    what.push("the snapshot policy".into());
                }
                out.push(
                    Finding::new(
                        Code::KeyMissing,
                        format!("not verifiable without key {id}: {}", what.join(", ")),
                        "give that key too to verify these",
                    )
                    .snapshot(&snap.name),
                );
            }
            needs.push(KeyNeed {
                key_id: id.to_string(),
                given: have,
                policy: c.policy,
                directories: c.dirs,
                symlinks: c.symlinks,
                extents: c.extents,
            });
        }
        report.push(SnapshotKeys {
            snapshot: snap.name.clone(),
            policy: snap.policy.to_string(),
            keys: needs,
        });
        if !keys.is_empty() {
            names_and_links(snap, keys, out);
        }
    }
    (report, given)
}

/// Names decrypt to valid, unique names; symlink targets decrypt.
fn names_and_links(snap: &Snapshot, keys: &Keyring, out: &mut Vec<Finding>) {
    let s = snap.name.as_str();
    for ino in snap.inodes.values() {
        match &ino.body {
            Body::Dir { ctx, entries } => {
                if ctx.validate().is_err() {
                    continue; // reported as E_CONTEXT
                }
                let Some(key) = keys.get(&ctx.key) else { continue };
                let cipher = key.names_key(&ctx.nonce);
                let mut plain: Vec<(Vec<u8>, u64)> = Vec::with_capacity(entries.len());
                for e in entries {
                    if !valid_name_ct_len(e.name.len()) {
                        continue; // reported as E_NAME_LEN
                    }
                    let target = if snap.inodes.contains_key(&e.ino) { e.ino } else { ino.ino };
                    match cipher.decrypt_name(&e.name) {
                        Err(err) => out.push(
                            Finding::new(
                                Code::NameDecrypt,
                                format!(
                                    "the name of the entry for inode {} in directory {} does not decrypt to a valid name ({err}): \
                                     its ciphertext or the directory's nonce is damaged",
                                    e.ino, ino.ino
                                ),
                                "extract the other files and restore this one from backup",
                            )
                            .snapshot(s)
                            .inode(target),
                        ),
                        Ok(name) => {
                            if name == b"." || name == b".." {
                                out.push(
                                    Finding::new(
                                        Code::NameInvalid,
                                        format!(
                                            "the entry for inode {} decrypts to the reserved name {:?}",
                                            e.ino,
                                            String::from_utf8_lossy(&name)
                                        ),
                                        "the entry was not written by cryptimg; restore from backup",
                                    )
                                    .snapshot(s)
                                    .inode(ino.ino),
                                );
                            } else {
                                plain.push((name, target));
                            }
                        }
                    }
                }
                plain.sort_unstable();
                for w in plain.windows(2).filter(|w| w[0].0 == w[1].0) {
                    out.push(
                        Finding::new(
                            Code::DupNameDecrypted,
                            format!("two entries of directory {} decrypt to the same name", ino.ino),
                            "rename one of the files after extracting",
                        )
                        .snapshot(s)
                        .inode(w[1].1),
                    );
                }
            }
            Body::Symlink { ctx, blob } => {
                if ctx.validate().is_err() || symlink_ciphertext(blob).is_none() {
                    continue; // reported keyless
                }
                let Some(key) = keys.get(&ctx.key) else { continue };
                let problem = match key.names_key(&ctx.nonce).decrypt_symlink(blob) {
                    Err(err) => Some(format!("the symlink target does not decrypt ({err})")),
                    Ok(t) if t.len() as u64 != ino.size => Some(format!(
                        "the symlink target decrypts to {} bytes but the inode records {}",
                        t.len(),
                        ino.size
                    )),
                    Ok(_) => None,
                };
                if let Some(msg) = problem {
                    out.push(
                        Finding::new(Code::SymlinkDecrypt, msg, "recreate the link")
                            .snapshot(s)
                            .inode(ino.ino),
                    );
                }
            }
            _ => {}
        }
    }
}
