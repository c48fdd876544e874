//! `fsck-crypt extract` and `cat` on ext4: the plaintext tree (or chosen
//! paths, with their parents) to a directory or, as for cryptimg images, a
//! pax tar stream ([`PaxStream`]), offline, with keys.
//!
//! Names decrypt with the directory's `names_key(nonce)`, symlink blobs with
//! the symlink's, contents block by block with `file_contents_key(nonce)`
//! and XTS tweak = logical block (docs/TESTING.md "Kernel oracle"). Holes and
//! unwritten extents stay holes. Every key the selection needs must be given
//! (checked before anything is written).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ext4fs::inode::{Inode, ENCRYPT_FL, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use ext4fs::read::{walk, Entry, Fs, ReadError, Visit};
use ext4fs::xattr::{INDEX_SECURITY, INDEX_TRUSTED, INDEX_USER};
use fscrypt::context::PolicyContext;
use fscrypt::NameCipher;

use super::list::resolve;
use super::reader::{map_err, parse_context, Ctx};
use crate::engine::image::Keyring;
use crate::error::{Error, Result};
use crate::format::attrs::{Meta, Timespec};
use crate::ops::read::cat::write_ordered;
use crate::ops::read::tar_out::{Feed, PaxStream};
use crate::progress::{Progress, Quiet};
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

/// Where extracted entries go: a directory ([`TreeWriter`]) or a pax
/// stream ([`PaxStream`]).
trait Out {
    fn dir(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()>;
    fn file(&mut self, path: &[Vec<u8>], m: &Meta, size: u64, feed: &mut Feed<'_>) -> Result<()>;
    fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], m: &Meta) -> Result<()>;
    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], m: &Meta) -> Result<()>;
    fn special(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()>;
}

impl Out for TreeWriter {
    fn dir(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()> {
        TreeWriter::dir(self, path, m)
    }

    fn file(&mut self, path: &[Vec<u8>], m: &Meta, size: u64, feed: &mut Feed<'_>) -> Result<()> {
        let f = self.create_file(path)?;
        feed(&mut |off, data| {
            let n = (data.len() as u64).min(size.saturating_sub(off)) as usize;
            f.write_all_at(&data[..n], off)
                .map_err(|e| Error::io(format!("writing {}", crate::ops::build::display_path(path)), e))
        })?;
        self.finish_file(path, f, size, m)
    }

    fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], _m: &Meta) -> Result<()> {
        TreeWriter::hard_link(self, path, first)
    }

    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], m: &Meta) -> Result<()> {
        TreeWriter::symlink(self, path, target, m)
    }

    fn special(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()> {
        TreeWriter::special(self, path, m)
    }
}

impl<W: Write> Out for PaxStream<W> {
    fn dir(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()> {
        PaxStream::dir(self, path, m)
    }

    fn file(&mut self, path: &[Vec<u8>], m: &Meta, size: u64, feed: &mut Feed<'_>) -> Result<()> {
        PaxStream::file(self, path, m, size, feed)
    }

    fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], m: &Meta) -> Result<()> {
        PaxStream::hard_link(self, path, first, m)
    }

    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], m: &Meta) -> Result<()> {
        PaxStream::symlink(self, path, target, m)
    }

    fn special(&mut self, path: &[Vec<u8>], m: &Meta) -> Result<()> {
        PaxStream::special(self, path, m)
    }
}

/// The chosen paths, resolved: entries are matched by (parent inode, stored
/// name), so another name of a hard-linked file is not chosen with it.
struct Selection {
    /// Nothing chosen: the whole tree.
    all: bool,
    /// (parent directory inode, raw name) of each chosen entry.
    chosen: HashSet<(u32, Vec<u8>)>,
    /// Directories above a chosen entry (written, not their other entries).
    above: HashSet<u32>,
}

impl Selection {
    fn new(fs: &Fs, keys: &Keyring, paths: &[Vec<u8>]) -> Result<Selection> {
        let mut sel = Selection {
            all: paths.is_empty(),
            chosen: HashSet::new(),
            above: HashSet::new(),
        };
        for p in paths {
            let chain = resolve(fs, p, keys, true)?;
            let Some((last, parents)) = chain.split_last() else {
                // The root (`/`, `.`): everything.
                sel.all = true;
                continue;
            };
            sel.chosen.insert((last.parent, last.raw.clone()));
            sel.above.extend(parents.iter().map(|s| s.ino));
        }
        Ok(sel)
    }
}

/// Walks the entries the selection covers (the chosen ones with everything
/// below them, and the directories on the way to them), parents first,
/// calling `f` with each, and `opened` with each directory's inode when its
/// entries are about to be visited (the walk is depth first: everything
/// `f` sees until the next `opened` lies in that directory); the rest of the
/// tree (beyond the directories on the way to a chosen path) is not read.
fn walk_selected(
    fs: &Fs,
    sel: &Selection,
    f: &mut dyn FnMut(&Entry) -> Result<()>,
    opened: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<()> {
    let mut inside: HashSet<u32> = HashSet::new();
    // Each pass (key check, extract) reads the tree afresh: the reader's
    // cross-link detection must not see the previous pass's claims.
    fs.reset_claims();
    walk::<Error>(
        fs,
        &mut |e| {
            let is_dir = e.inode.mode & S_IFMT == S_IFDIR;
            let root = e.ino == ext4fs::ROOT_INO && e.path.is_empty();
            let chosen = sel.all
                || inside.contains(&e.parent) && !root
                || e.path.last().is_some_and(|n| sel.chosen.contains(&(e.parent, n.clone())));
            let on_the_way = root || is_dir && sel.above.contains(&e.ino);
            if !chosen && !on_the_way {
                return Ok(Visit::Skip);
            }
            if is_dir && chosen {
                inside.insert(e.ino);
            }
            f(e)?;
            Ok(Visit::Descend)
        },
        &mut |ino, _, _| opened(ino),
    )
}

/// The encryption context of an inode, parsed (None: not encrypted).
fn context(fs: &Fs, ino: u32, i: &Inode) -> Result<Option<PolicyContext>> {
    if i.flags & ENCRYPT_FL == 0 {
        return Ok(None);
    }
    let raw = fs.context(ino, i).map_err(map_err)?.unwrap_or_default();
    match parse_context(&raw, ino)? {
        Ctx::V2(c) => Ok(Some(c)),
        Ctx::Malformed(why) => Err(Error::Invalid(format!("inode {ino}: malformed encryption context: {why}"))),
    }
}

/// Refuses, before any output, unless every key the selection needs is
/// given (a walk of the selection's inodes; no data is read). Returns the
/// selection's file bytes (each regular file once), the progress total.
fn require_keys(fs: &Fs, keys: &Keyring, sel: &Selection) -> Result<u64> {
    let mut needed = BTreeSet::new();
    let mut files = HashSet::new();
    let mut total = 0u64;
    walk_selected(
        fs,
        sel,
        &mut |e| {
            if let Some(c) = context(fs, e.ino, e.inode)? {
                needed.insert(c.key);
            }
            if e.inode.mode & S_IFMT == S_IFREG && files.insert(e.ino) {
                total = total.saturating_add(e.inode.size);
            }
            Ok(())
        },
        &mut |_| Ok(()),
    )?;
    keys.require(&needed.into_iter().collect::<Vec<_>>())?;
    Ok(total)
}

/// Feeds the plaintext of regular file `ino` as ordered `(offset, bytes)`
/// runs: blocks decrypted with `xts` (None: not encrypted); holes and
/// unwritten extents skipped; whole blocks (the consumer cuts to the size).
fn feed_file(fs: &Fs, ino: u32, i: &Inode, xts: Option<&fscrypt::XtsKey>, put: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    let map = fs.extents(ino, i).map_err(map_err)?;
    let size = i.size;
    let mut buf = Vec::new();
    fs.read_mapped::<Error>(&map, 256, &mut |lblk, b| {
        let off = lblk * ext4fs::BLOCK_SIZE_U64;
        if off >= size {
            return Ok(());
        }
        let data = match xts {
            Some(x) => {
                buf.clear();
                buf.extend_from_slice(b);
                x.decrypt_units(lblk, 4096, &mut buf);
                &buf[..]
            }
            None => b,
        };
        put(off, data)
    })
}

/// A directory met by the walk, written when the walk opens it: its path and metadata.
type PendingDir = (Vec<Vec<u8>>, Meta);

/// Writes the selection to `out`.
fn extract_to(fs: &Fs, keys: &Keyring, sel: &Selection, out: &mut dyn Out, progress: &dyn Progress) -> Result<()> {
    // Per directory: its plaintext path and its names cipher (encrypted dirs).
    let mut dirs: HashMap<u32, (Vec<Vec<u8>>, Option<NameCipher>)> = HashMap::new();
    // Per non-directory inode written: its path (later names are hard links).
    let mut first_path: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    // Directories met but not yet written: each is written when the walk
    // opens it, so its subtree follows it directly. A tar reader sets a
    // directory's times once it meets a member outside it; siblings'
    // headers in between would leave the times of the extraction.
    let pending: std::cell::RefCell<HashMap<u32, PendingDir>> = Default::default();
    let out = std::cell::RefCell::new(out);
    walk_selected(
        fs,
        sel,
        &mut |e| {
            let mut out = out.borrow_mut();
            let i = e.inode;
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
            let ctx = context(fs, e.ino, i)?;
            let key = match &ctx {
                Some(c) => Some(keys.get(&c.key).ok_or_else(|| Error::WrongKey {
                    given: keys.ids(),
                    needed: vec![c.key],
                })?),
                None => None,
            };
            let kind = i.mode & S_IFMT;
            if kind != S_IFDIR {
                if let Some(first) = first_path.get(&e.ino) {
                    let m = meta(fs, e.ino, i).map_err(map_err)?;
                    return out.hard_link(&path, first, &m);
                }
            }
            let m = meta(fs, e.ino, i).map_err(map_err)?;
            match kind {
                S_IFDIR => {
                    let names = match (&ctx, key) {
                        (Some(c), Some(k)) => Some(k.names_key(&c.nonce)),
                        _ => None,
                    };
                    pending.borrow_mut().insert(e.ino, (path.clone(), m));
                    dirs.insert(e.ino, (path, names));
                    return Ok(());
                }
                S_IFREG => {
                    let xts = match (&ctx, key) {
                        (Some(c), Some(k)) => Some(k.file_contents_key(&c.nonce)),
                        _ => None,
                    };
                    let mut fed = 0u64;
                    out.file(&path, &m, i.size, &mut |put| {
                        feed_file(fs, e.ino, i, xts.as_ref(), &mut |off, data| {
                            let n = (data.len() as u64).min(i.size.saturating_sub(off));
                            fed += n;
                            progress.advance(0, n);
                            put(off, data)
                        })
                    })?;
                    // Holes count as done when the file is.
                    progress.advance(1, i.size.saturating_sub(fed));
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
                    out.symlink(&path, &target, &m)?;
                }
                _ => out.special(&path, &m)?,
            }
            first_path.insert(e.ino, path);
            Ok(())
        },
        &mut |ino| match pending.borrow_mut().remove(&ino) {
            Some((path, m)) => out.borrow_mut().dir(&path, &m),
            None => Ok(()),
        },
    )
}

/// Extracts the whole tree of the ext4 image `fs` into `dest`.
pub fn extract(fs: &Fs, keys: &Keyring, dest: &Path, as_root: bool) -> Result<WriteStats> {
    extract_paths(fs, keys, &[], dest, as_root, &Quiet)
}

/// Extracts the given paths of the ext4 image `fs` (real names; a directory
/// means its subtree; all of it when `paths` is empty) into `dest` (absent
/// or empty), with the directories above each path. Hard links within the
/// selection stay links. Refuses up front, naming the key ids, unless every
/// key the selection needs was given. Progress: phase `extract`, totalled
/// in file bytes.
pub fn extract_paths(
    fs: &Fs,
    keys: &Keyring,
    paths: &[Vec<u8>],
    dest: &Path,
    as_root: bool,
    progress: &dyn Progress,
) -> Result<WriteStats> {
    let sel = Selection::new(fs, keys, paths)?;
    progress.start("extract", Some(require_keys(fs, keys, &sel)?));
    let mut tw = TreeWriter::new(dest, as_root)?;
    extract_to(fs, keys, &sel, &mut tw, progress)?;
    let st = tw.finish()?;
    progress.finish();
    Ok(st)
}

/// `fsck-crypt extract IMAGE -` on ext4: the selection (as [`extract_paths`]
/// chooses it) as a pax tar stream on `out` (the cryptimg writer,
/// [`PaxStream`]). Returns the writer and what went in.
pub fn extract_tar<W: Write>(fs: &Fs, keys: &Keyring, paths: &[Vec<u8>], out: W, progress: &dyn Progress) -> Result<(W, WriteStats)> {
    let sel = Selection::new(fs, keys, paths)?;
    progress.start("extract", Some(require_keys(fs, keys, &sel)?));
    let mut pax = PaxStream::new(out);
    extract_to(fs, keys, &sel, &mut pax, progress)?;
    let r = pax.finish()?;
    progress.finish();
    Ok(r)
}

/// `fsck-crypt cat` on ext4: writes the regular file `path` names (real
/// names) to `out`, holes as zeros. Returns the bytes written.
pub fn cat(fs: &Fs, keys: &Keyring, path: &[u8], out: &mut dyn Write) -> Result<u64> {
    let chain = resolve(fs, path, keys, true)?;
    let Some(last) = chain.last() else {
        return Err(Error::Invalid("/ is a directory, not a regular file".into()));
    };
    let i = &last.inode;
    if i.mode & S_IFMT != S_IFREG {
        let kind = match i.mode & S_IFMT {
            S_IFDIR => "a directory",
            S_IFLNK => "a symbolic link",
            _ => "a special file",
        };
        return Err(Error::Invalid(format!(
            "{} is {kind}, not a regular file",
            String::from_utf8_lossy(path)
        )));
    }
    let ctx = context(fs, last.ino, i)?;
    let xts = match &ctx {
        Some(c) => {
            keys.require(&[c.key])?;
            keys.get(&c.key).map(|k| k.file_contents_key(&c.nonce))
        }
        None => None,
    };
    write_ordered(
        out,
        i.size,
        &mut |put| feed_file(fs, last.ino, i, xts.as_ref(), put),
        "the file to standard output",
    )
}
