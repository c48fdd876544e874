//! `fsck-crypt ls` on ext4: the names a mount shows.
//!
//! Without the key, Linux ≥ 5.15 shows base64url (no padding) of `struct
//! fscrypt_nokey_name` (fs/crypto/fname.c `fscrypt_fname_disk_to_usr`):
//! `le32 hash ‖ le32 minor_hash ‖ ciphertext`, or, for ciphertext longer
//! than 149 bytes, its first 149 bytes ‖ SHA-256 of the rest. ext4 fills
//! the hash in when readdir goes through the htree code (the dir_index
//! feature and an indexed or one-block directory; see
//! [`ext4fs::read::DirListing::nokey_hash`]), otherwise it is zero.

use ext4fs::read::{Fs, HashInfo};
use fscrypt::NameCipher;

use super::reader::{map_err, parse_context, Ctx};
use crate::engine::image::Keyring;
use crate::error::{Error, Result};

/// The no-key name the kernel shows for ciphertext `ct` in a directory
/// with hash setup `hash` (None: linear readdir, hash zero).
pub fn nokey_name(ct: &[u8], hash: Option<HashInfo>) -> String {
    if ct == b"." || ct == b".." {
        return String::from_utf8_lossy(ct).into_owned();
    }
    fscrypt::nokey_name_hashed(ct, hash.and_then(|h| h.hash(ct)).unwrap_or((0, 0)))
}

/// One listed entry.
pub struct LsEntry {
    /// The shown name: real with the key, no-key without, raw if unencrypted.
    pub name: Vec<u8>,
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// How a directory's names are shown.
enum Names {
    Plain,
    NoKey(Option<HashInfo>),
    Key(Box<NameCipher>),
}

fn names_for(fs: &Fs, ino: u32, inode: &ext4fs::inode::Inode, keys: &Keyring, hash: Option<HashInfo>) -> Result<Names> {
    if inode.flags & ext4fs::inode::ENCRYPT_FL == 0 {
        return Ok(Names::Plain);
    }
    let raw = fs.context(ino, inode).map_err(map_err)?.unwrap_or_default();
    match parse_context(&raw, ino)? {
        Ctx::V2(c) => Ok(match keys.get(&c.key) {
            Some(k) => Names::Key(Box::new(k.names_key(&c.nonce))),
            None => Names::NoKey(hash),
        }),
        Ctx::Malformed(why) => Err(Error::Invalid(format!("inode {ino}: malformed encryption context: {why}"))),
    }
}

fn shown(names: &Names, ct: &[u8]) -> Result<Vec<u8>> {
    Ok(match names {
        Names::Plain => ct.to_vec(),
        Names::NoKey(h) => nokey_name(ct, *h).into_bytes(),
        Names::Key(c) if ct == b"." || ct == b".." => ct.to_vec(),
        Names::Key(c) => c
            .decrypt_name(ct)
            .map_err(|e| Error::Invalid(format!("a name does not decrypt with the given key: {e}")))?,
    })
}

/// Lists `path` (components as the mount shows them: real names with a
/// key, no-key names without) in an ext4 image: a directory's entries, or
/// the one entry a file path names.
pub fn ls(fs: &Fs, path: &str, keys: &Keyring) -> Result<Vec<LsEntry>> {
    let mut ino = ext4fs::ROOT_INO;
    let mut inode = fs.inode(ino).map_err(map_err)?;
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, comp) in comps.iter().enumerate() {
        let listing = fs.dir(ino, &inode).map_err(map_err)?;
        let names = names_for(fs, ino, &inode, keys, listing.nokey_hash)?;
        let mut found = None;
        for e in &listing.entries {
            if shown(&names, &e.name)? == comp.as_bytes() {
                found = Some(e.inode);
                break;
            }
        }
        let Some(child) = found else {
            return Err(Error::Invalid(format!("{path}: no entry {comp:?}")));
        };
        let ci = fs.inode(child).map_err(map_err)?;
        if ci.mode & ext4fs::inode::S_IFMT != ext4fs::inode::S_IFDIR {
            if i + 1 != comps.len() {
                return Err(Error::Invalid(format!("{path}: {comp:?} is not a directory")));
            }
            return Ok(vec![entry(comp.as_bytes().to_vec(), child, &ci)]);
        }
        ino = child;
        inode = ci;
    }
    let listing = fs.dir(ino, &inode).map_err(map_err)?;
    let names = names_for(fs, ino, &inode, keys, listing.nokey_hash)?;
    let mut out = Vec::new();
    for e in &listing.entries {
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let ci = fs.inode(e.inode).map_err(map_err)?;
        out.push(entry(shown(&names, &e.name)?, e.inode, &ci));
    }
    Ok(out)
}

fn entry(name: Vec<u8>, ino: u32, i: &ext4fs::inode::Inode) -> LsEntry {
    LsEntry {
        name,
        ino,
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
        size: i.size,
    }
}
