//! `fsck-crypt extract` on ext4: the plaintext tree, offline, with keys.
//!
//! Names decrypt with the directory's `names_key(nonce)`, symlink blobs with
//! the symlink's, contents block by block with `file_contents_key(nonce)`
//! and XTS tweak = logical block (docs/TESTING.md "Kernel oracle"). Holes and
//! unwritten extents stay holes. Every key the tree needs must be given.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ext4fs::inode::{Inode, ENCRYPT_FL, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use ext4fs::read::{walk, Fs, ReadError, Visit};
use ext4fs::xattr::{INDEX_SECURITY, INDEX_TRUSTED, INDEX_USER};
use fscrypt::NameCipher;

use super::reader::{map_err, parse_context, Ctx};
use crate::engine::image::Keyring;
use crate::error::{Error, Result};
use crate::format::attrs::{Meta, Timespec};
use crate::tree::write::{TreeWriter, WriteStats};

fn meta(fs: &Fs, ino: u32, i: &Inode) -> std::result::Result<Meta, ReadError> {
    let ts = |t: ext4fs::inode::Time| Timespec {
        sec: t.sec,
        nsec: t.nsec.min(999_999_999),
    };
    let mut xattrs = Vec::new();
    for x in fs.xattrs(ino, i)? {
        let prefix: &[u8] = match x.index {
            INDEX_USER => b"user.",
            INDEX_TRUSTED => b"trusted.",
            INDEX_SECURITY => b"security.",
            _ => continue,
        };
        xattrs.push(([prefix, &x.name].concat(), x.value));
    }
    xattrs.sort();
    let rdev = match i.mode & S_IFMT {
        S_IFCHR | S_IFBLK => {
            let (ma, mi) = Fs::device(i);
            libc::makedev(ma, mi)
        }
        _ => 0,
    };
    Ok(Meta {
        mode: u32::from(i.mode),
        uid: i.uid,
        gid: i.gid,
        atime: ts(i.atime),
        mtime: ts(i.mtime),
        ctime: ts(i.ctime),
        rdev,
        xattrs,
    })
}

/// Extracts the whole tree of the ext4 image `fs` into `dest`.
pub fn extract(fs: &Fs, keys: &Keyring, dest: &Path, as_root: bool) -> Result<WriteStats> {
    let mut tw = TreeWriter::new(dest, as_root)?;
    // Per directory: its plaintext path and its names cipher (encrypted dirs).
    let mut dirs: HashMap<u32, (Vec<Vec<u8>>, Option<NameCipher>)> = HashMap::new();
    let mut first_path: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    walk::<Error>(
        fs,
        &mut |e| {
            (|| -> Result<Visit> {
                let i = e.inode;
                let kind = i.mode & S_IFMT;
                let path = match (dirs.get(&e.parent), e.path.last()) {
                    (Some((pp, names)), Some(ct)) if e.ino != ext4fs::ROOT_INO => {
                        let name = match names {
                            Some(c) => c
                                .decrypt_name(ct)
                                .map_err(|err| Error::Invalid(format!("inode {}: name does not decrypt: {err}", e.ino)))?,
                            None => ct.clone(),
                        };
                        let mut p = pp.clone();
                        p.push(name);
                        p
                    }
                    _ => Vec::new(),
                };
                let ctx = if i.flags & ENCRYPT_FL != 0 {
                    let raw = fs.context(e.ino, i).map_err(map_err)?.unwrap_or_default();
                    match parse_context(&raw, e.ino)? {
                        Ctx::V2(c) => Some(c),
                        Ctx::Malformed(why) => return Err(Error::Invalid(format!("inode {}: malformed encryption context: {why}", e.ino))),
                    }
                } else {
                    None
                };
                let key = match &ctx {
                    Some(c) => Some(keys.get(&c.key).ok_or_else(|| Error::WrongKey {
                        given: keys.ids(),
                        needed: vec![c.key],
                    })?),
                    None => None,
                };
                if !e.first_link {
                    let target = first_path.get(&e.ino).cloned().unwrap_or_default();
                    tw.hard_link(&path, &target)?;
                    return Ok(Visit::Skip);
                }
                let m = meta(fs, e.ino, i).map_err(map_err)?;
                match kind {
                    S_IFDIR => {
                        tw.dir(&path, &m)?;
                        let names = match (&ctx, key) {
                            (Some(c), Some(k)) => Some(k.names_key(&c.nonce)),
                            _ => None,
                        };
                        dirs.insert(e.ino, (path, names));
                    }
                    S_IFREG => {
                        let f = tw.create_file(&path)?;
                        let map = fs.extents(e.ino, i).map_err(map_err)?;
                        let xts = match (&ctx, key) {
                            (Some(c), Some(k)) => Some(k.file_contents_key(&c.nonce)),
                            _ => None,
                        };
                        let size = i.size;
                        let mut buf = Vec::new();
                        fs.read_mapped(&map, 256, &mut |lblk, b| {
                            let off = lblk * 4096;
                            if off >= size {
                                return Ok(());
                            }
                            buf.clear();
                            buf.extend_from_slice(b);
                            if let Some(x) = &xts {
                                x.decrypt_units(lblk, 4096, &mut buf);
                            }
                            let n = (buf.len() as u64).min(size - off) as usize;
                            f.write_all_at(&buf[..n], off).map_err(|err| ReadError::Io {
                                context: format!("writing inode {} data", e.ino),
                                source: err,
                            })
                        })
                        .map_err(map_err)?;
                        tw.finish_file(&path, f, size, &m)?;
                        first_path.insert(e.ino, path);
                    }
                    S_IFLNK => {
                        let raw = fs.symlink_raw(e.ino, i).map_err(map_err)?;
                        let target = match (&ctx, key) {
                            (Some(c), Some(k)) => k
                                .names_key(&c.nonce)
                                .decrypt_symlink(&raw)
                                .map_err(|err| Error::Invalid(format!("inode {}: symlink does not decrypt: {err}", e.ino)))?,
                            _ => raw[..raw.len().saturating_sub(1)].to_vec(),
                        };
                        tw.symlink(&path, &target, &m)?;
                        first_path.insert(e.ino, path);
                    }
                    _ => {
                        tw.special(&path, &m)?;
                        first_path.insert(e.ino, path);
                    }
                }
                Ok(Visit::Descend)
            })()
        },
        &mut |_, _, _| Ok(()),
    )?;
    tw.finish()
}
