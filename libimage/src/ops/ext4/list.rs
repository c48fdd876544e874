//! Listings of ext4: `fsck-crypt ls` of an image (the names a mount shows,
//! and [`resolve`] of a path for `ls`, `cat` and `extract`), and
//! `backup-crypt list`/`verify` of an ext4 archive ([`list_archive`],
//! [`verify_archive`]).
//!
//! Without the key, Linux ≥ 5.15 shows base64url (no padding) of `struct
//! fscrypt_nokey_name` (fs/crypto/fname.c `fscrypt_fname_disk_to_usr`):
//! `le32 hash ‖ le32 minor_hash ‖ ciphertext`, or, for ciphertext longer
//! than 149 bytes, its first 149 bytes ‖ SHA-256 of the rest. ext4 fills
//! the hash in when readdir goes through the htree code (the dir_index
//! feature and an indexed or one-block directory; see
//! [`ext4fs::read::DirListing::nokey_hash`]), otherwise it is zero.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ext4fs::inode::{Inode, S_IFDIR, S_IFMT};
use ext4fs::read::{Fs, HashInfo};
use fscrypt::NameCipher;
use serde::Serialize;

use std::io::Read;
use std::path::PathBuf;

use super::archive::{read_archive, Ext4Manifest, Ext4Sink, Kind, Member};
use super::base::Ext4Bases;
use super::reader::{map_err, parse_context, Ctx};
use crate::engine::image::Keyring;
use crate::error::{Error, Result};
use crate::ops::read::LsEntry;

/// The no-key name the kernel shows for ciphertext `ct` in a directory
/// with hash setup `hash` (None: linear readdir, hash zero).
pub fn nokey_name(ct: &[u8], hash: Option<HashInfo>) -> String {
    if ct == b"." || ct == b".." {
        return String::from_utf8_lossy(ct).into_owned();
    }
    fscrypt::nokey_name_hashed(ct, hash.and_then(|h| h.hash(ct)).unwrap_or((0, 0)))
}

/// How a directory's names are shown.
enum Names {
    Plain,
    NoKey(Option<HashInfo>),
    Key(Box<NameCipher>),
}

/// The names of directory `ino`. Without its key: no-key names, or (when
/// `need_key`) a missing-key error naming the key id.
fn names_for(fs: &Fs, ino: u32, inode: &Inode, keys: &Keyring, hash: Option<HashInfo>, need_key: bool) -> Result<Names> {
    if inode.flags & ext4fs::inode::ENCRYPT_FL == 0 {
        return Ok(Names::Plain);
    }
    let raw = fs.context(ino, inode).map_err(map_err)?.unwrap_or_default();
    match parse_context(&raw, ino)? {
        Ctx::V2(c) => match keys.get(&c.key) {
            Some(k) => Ok(Names::Key(Box::new(k.names_key(&c.nonce)))),
            None if need_key => Err(Error::WrongKey {
                given: keys.ids(),
                needed: vec![c.key],
            }),
            None => Ok(Names::NoKey(hash)),
        },
        Ctx::Malformed(why) => Err(Error::Invalid(format!("inode {ino}: malformed encryption context: {why}"))),
    }
}

fn shown(names: &Names, ct: &[u8]) -> Result<Vec<u8>> {
    Ok(match names {
        Names::Plain => ct.to_vec(),
        Names::NoKey(h) => nokey_name(ct, *h).into_bytes(),
        Names::Key(_) if ct == b"." || ct == b".." => ct.to_vec(),
        Names::Key(c) => c
            .decrypt_name(ct)
            .map_err(|e| Error::Invalid(format!("a name does not decrypt with the given key: {e}")))?,
    })
}

/// One component of a resolved path.
pub struct Step {
    /// The name as given (real, no-key, or plain).
    pub name: Vec<u8>,
    /// The name as stored in the directory (ciphertext in an encrypted one).
    pub raw: Vec<u8>,
    pub parent: u32,
    pub ino: u32,
    pub inode: Inode,
}

/// Resolves `path` (normalized as a shell would: `.`, `..`, repeated `/`)
/// from the root, matching each component against the names as shown (real
/// names with the key, no-key names without). With `need_keys`, a directory
/// whose key was not given is a missing-key error (extract and cat need the
/// plaintext anyway); otherwise its no-key names match.
pub fn resolve(fs: &Fs, path: &[u8], keys: &Keyring, need_keys: bool) -> Result<Vec<Step>> {
    let shown_path = String::from_utf8_lossy(path);
    // A lookup reads directories an earlier lookup or walk may have read.
    fs.reset_claims();
    let mut ino = ext4fs::ROOT_INO;
    let mut inode = fs.inode(ino).map_err(map_err)?;
    let mut out: Vec<Step> = Vec::new();
    for comp in crate::ops::read::select::normalize(path) {
        if inode.mode & S_IFMT != S_IFDIR {
            return Err(Error::Invalid(format!(
                "{shown_path}: {:?} is not a directory",
                String::from_utf8_lossy(out.last().map_or(&b"/"[..], |s| &s.name))
            )));
        }
        let listing = fs.dir(ino, &inode).map_err(map_err)?;
        let names = names_for(fs, ino, &inode, keys, listing.nokey_hash, need_keys)?;
        let mut found = None;
        for e in &listing.entries {
            if e.name != b"." && e.name != b".." && shown(&names, &e.name)? == comp {
                found = Some((e.inode, e.name.clone()));
                break;
            }
        }
        let Some((child, raw)) = found else {
            return Err(Error::Invalid(format!(
                "no such file or directory in the ext4 image: {shown_path} (no entry {:?})",
                String::from_utf8_lossy(&comp)
            )));
        };
        let ci = fs.inode(child).map_err(map_err)?;
        out.push(Step {
            name: comp,
            raw,
            parent: ino,
            ino: child,
            inode: ci.clone(),
        });
        ino = child;
        inode = ci;
    }
    Ok(out)
}

/// Lists `path` (components as the mount shows them: real names with a
/// key, no-key names without) in an ext4 image: a directory's entries, or
/// the one entry a file path names.
pub fn ls(fs: &Fs, path: &str, keys: &Keyring) -> Result<Vec<LsEntry>> {
    let chain = resolve(fs, path.as_bytes(), keys, false)?;
    let (ino, inode) = match chain.last() {
        Some(s) => (s.ino, s.inode.clone()),
        None => (ext4fs::ROOT_INO, fs.inode(ext4fs::ROOT_INO).map_err(map_err)?),
    };
    if let Some(s) = chain.last().filter(|s| s.inode.mode & S_IFMT != S_IFDIR) {
        return Ok(vec![entry(s.name.clone(), s.ino, &s.inode)]);
    }
    let listing = fs.dir(ino, &inode).map_err(map_err)?;
    let names = names_for(fs, ino, &inode, keys, listing.nokey_hash, false)?;
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

fn entry(name: Vec<u8>, ino: u32, i: &Inode) -> LsEntry {
    LsEntry {
        name,
        ino: u64::from(ino),
        mode: u32::from(i.mode),
        uid: i.uid,
        gid: i.gid,
        size: i.size,
    }
}

/// Splits raw bytes into (UTF-8 text, base64) for JSON: exactly one is set.
fn text_or_b64(raw: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(raw) {
        Ok(t) => (Some(t.to_string()), None),
        Err(_) => (None, Some(STANDARD.encode(raw))),
    }
}

/// One member of an ext4 backup archive, as `backup-crypt list` shows it
/// (the field names of the cryptimg listing where the meaning is the same;
/// times are numbers: seconds and nanoseconds).
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveEntry {
    /// The archived path (no-key names inside encrypted directories), when UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path's exact bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// dir, file, symlink, hardlink, fifo, socket, chardev, blockdev.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File size, or symlink target length.
    pub size: u64,
    /// Modification time: seconds since the epoch, and nanoseconds.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Hard links: the first path; plain symlinks: the target (when UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The target's exact bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_base64: Option<String>,
    /// The member carries an fscrypt context (its data, name or target is ciphertext).
    pub encrypted: bool,
    /// Data identical to the base backup's member, not stored here.
    pub unchanged: bool,
    /// Bytes stored in this archive for the member (ciphertext blocks, or a plain file's data).
    pub stored_bytes: u64,
    #[serde(skip)]
    pub raw_path: Vec<u8>,
    #[serde(skip)]
    pub raw_target: Option<Vec<u8>>,
}

/// `backup-crypt list` of an ext4 archive.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveListing {
    pub manifest: Option<Ext4Manifest>,
    pub members: Vec<ArchiveEntry>,
    /// Key ids the trailer lists.
    pub keys_needed: Vec<String>,
}

/// `backup-crypt verify` of an ext4 archive: every member checksum, the
/// ciphertext crc32cs and the archive crc32c were checked (it fails on the
/// first problem). Counts with the cryptimg report's names where the
/// meaning is the same.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveVerifyReport {
    pub manifest: Option<Ext4Manifest>,
    /// Tree members (root included).
    pub members: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    /// Files with an fscrypt context.
    pub encrypted_files: u64,
    /// Encrypted files whose data lives in a base backup (`CRYPTIMG.unchanged`).
    pub unchanged_files: u64,
    /// How many of them were found stored in the given bases (all of them
    /// when bases were given; 0 without `--base`).
    pub unchanged_found: u64,
    /// Ciphertext bytes stored (blocks of encrypted files).
    pub ciphertext_bytes: u64,
    /// Plaintext bytes stored (files outside encrypted directories).
    pub plain_bytes: u64,
    /// Total archive length.
    pub archive_bytes: u64,
    /// Key ids the trailer lists.
    pub keys_needed: Vec<String>,
}

fn kind_name(m: &Member) -> &'static str {
    match m.kind {
        Kind::Dir => "dir",
        Kind::File => "file",
        Kind::Symlink => "symlink",
        Kind::HardLink => "hardlink",
        Kind::Special => match m.mode & 0o170000 {
            0o010000 => "fifo",
            0o140000 => "socket",
            0o020000 => "chardev",
            _ => "blockdev",
        },
    }
}

/// Bytes of the member's data stored in the archive.
fn stored(m: &Member) -> u64 {
    match m.kind {
        Kind::File if m.context.is_some() && !m.unchanged => m.runs.iter().map(|r| r.1 * ext4fs::BLOCK_SIZE_U64).sum(),
        Kind::File if m.context.is_none() => m.size,
        _ => 0,
    }
}

/// Collects the manifest, and per member its entry (list) and counts
/// (verify); with bases, checks that they hold every unchanged file.
struct Collect<'a> {
    list: bool,
    bases: Option<&'a Ext4Bases>,
    entries: Vec<ArchiveEntry>,
    rep: ArchiveVerifyReport,
}

impl Ext4Sink for Collect<'_> {
    fn manifest(&mut self, m: &Ext4Manifest) -> Result<()> {
        if let Some(b) = self.bases.filter(|_| m.base_backup_id.is_some()) {
            b.check_chain(m)?;
        }
        self.rep.manifest = Some(m.clone());
        Ok(())
    }

    fn member(&mut self, m: &Member, _data: &mut dyn FnMut(&mut [u8]) -> Result<usize>) -> Result<()> {
        let r = &mut self.rep;
        match m.kind {
            Kind::Dir => r.dirs += 1,
            Kind::File => r.files += 1,
            Kind::Symlink => r.symlinks += 1,
            Kind::HardLink => r.hardlinks += 1,
            Kind::Special => r.specials += 1,
        }
        let enc_file = m.kind == Kind::File && m.context.is_some();
        r.encrypted_files += u64::from(enc_file);
        r.unchanged_files += u64::from(enc_file && m.unchanged);
        if let Some(b) = self.bases.filter(|_| enc_file && m.unchanged) {
            b.check(m)?;
            r.unchanged_found += 1;
        }
        if enc_file {
            r.ciphertext_bytes += stored(m);
        } else {
            r.plain_bytes += stored(m);
        }
        if !self.list {
            return Ok(());
        }
        let target = match m.kind {
            Kind::Symlink if m.context.is_none() => Some(m.link.clone()),
            Kind::HardLink => Some(m.link.clone()),
            _ => None,
        };
        let (path, path_base64) = text_or_b64(&m.path);
        let (t, tb) = target.as_deref().map_or((None, None), text_or_b64);
        self.entries.push(ArchiveEntry {
            path,
            path_base64,
            kind: kind_name(m),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            mtime: m.mtime.0,
            mtime_nsec: m.mtime.1,
            target: t,
            target_base64: tb,
            encrypted: m.context.is_some(),
            unchanged: m.unchanged,
            stored_bytes: stored(m),
            raw_path: m.path.clone(),
            raw_target: target,
        });
        Ok(())
    }
}

/// Counts the bytes read through it.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

fn scan<'a>(input: &mut dyn Read, list: bool, bases: Option<&'a Ext4Bases>) -> Result<Collect<'a>> {
    let mut c = Collect {
        list,
        bases,
        entries: Vec::new(),
        rep: ArchiveVerifyReport::default(),
    };
    let mut counting = Counting { inner: input, n: 0 };
    let (members, keys) = read_archive(&mut counting, &mut c)?;
    c.rep.members = members;
    c.rep.keys_needed = keys;
    c.rep.archive_bytes = counting.n;
    Ok(c)
}

/// `backup-crypt list` of an ext4 archive (validated as `verify` does).
pub fn list_archive(input: &mut dyn Read) -> Result<ArchiveListing> {
    let c = scan(input, true, None)?;
    Ok(ArchiveListing {
        manifest: c.rep.manifest,
        members: c.entries,
        keys_needed: c.rep.keys_needed,
    })
}

/// `backup-crypt verify` of an ext4 archive: the strict reader over the
/// whole archive; with `bases` (an incremental archive), also that the
/// chain of bases is complete and stores the data of every unchanged file
/// (docs/BACKUP.md §11.3).
pub fn verify_archive(input: &mut dyn Read, bases: &[PathBuf]) -> Result<ArchiveVerifyReport> {
    let bases = Ext4Bases::load(bases)?;
    let given = (!bases.is_empty()).then_some(&bases);
    Ok(scan(input, false, given)?.rep)
}
