//! Paths for findings: the path of an inode from its snapshot's root, with
//! real names where the key was given and no-key names elsewhere.

use std::collections::HashMap;

use crate::engine::image::Keyring;
use crate::finding::{Finding, Where};
use crate::format::inode::Body;
use crate::format::meta::Metadata;
use crate::format::snapshot::Snapshot;
use crate::format::validate::ParentMap;
use fscrypt::{nokey_name, NameCipher};

/// A displayable name: the decrypted name when possible, else the no-key name.
pub(crate) fn show_name(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// Resolves a directory's name cipher with the given keys (cached).
pub(crate) fn dir_cipher<'c>(
    snap: &Snapshot,
    dir: u64,
    keys: &Keyring,
    cache: &'c mut HashMap<u64, Option<NameCipher>>,
) -> Option<&'c NameCipher> {
    cache
        .entry(dir)
        .or_insert_with(|| match snap.inodes.get(&dir).map(|i| &i.body) {
            Some(Body::Dir { ctx, .. }) if ctx.validate().is_ok() => keys.get(&ctx.key).map(|k| k.names_key(&ctx.nonce)),
            _ => None,
        })
        .as_ref()
}

/// The path of `ino` from the snapshot root: real names where the key was
/// given, no-key names elsewhere.
pub(crate) fn render_path(
    snap: &Snapshot,
    parents: &ParentMap<'_>,
    ino: u64,
    keys: &Keyring,
    cache: &mut HashMap<u64, Option<NameCipher>>,
) -> Option<String> {
    let chain = parents.chain(ino)?;
    let mut out = String::new();
    for (dir, ct) in chain {
        out.push('/');
        let name = dir_cipher(snap, dir, keys, cache).and_then(|c| c.decrypt_name(ct).ok());
        match name {
            Some(n) => out.push_str(&show_name(&n)),
            None => out.push_str(&nokey_name(ct)),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Adds a path to every finding that names a snapshot and an inode.
pub(super) fn fill_paths(meta: &Metadata, keys: &Keyring, findings: &mut [Finding]) {
    let mut maps: HashMap<&str, (ParentMap<'_>, HashMap<u64, Option<NameCipher>>)> = HashMap::new();
    for f in findings.iter_mut() {
        let (Some(s), Some(ino), None) = (f.at.snapshot.as_deref(), f.at.inode, &f.at.path) else {
            continue;
        };
        let Some(snap) = meta.snapshot(s) else { continue };
        let (parents, cache) = maps.entry(&snap.name).or_insert_with(|| (ParentMap::new(snap), HashMap::new()));
        f.at.path = render_path(snap, parents, ino, keys, cache);
    }
}

/// Builds a `Where` for an inode of a snapshot.
pub(crate) fn at_inode(snap: &Snapshot, ino: u64) -> Where {
    Where {
        snapshot: Some(snap.name.clone()),
        inode: Some(ino),
        ..Where::default()
    }
}
