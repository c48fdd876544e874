//! `backup-crypt verify` and `list`: check or list an archive with no image.

use std::collections::HashMap;

use base64::Engine as _;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use super::base::BaseIndex;
use super::format::{b64, Manifest};
use super::scan::{scan, Kind, Member, ScanStats, Sink};
use crate::engine::image::Keyring;
use crate::error::{CorruptKind, Error, Result};
use crate::format::inode::{S_IFMT, S_IFSOCK};
use fscrypt::context::PolicyContext;

/// What `verify` found (it fails on the first problem).
#[derive(Clone, Debug, serde::Serialize)]
pub struct VerifyReport {
    pub manifest: Manifest,
    #[serde(flatten)]
    pub stats: ScanStats,
    /// Items in base backups that were found in the given bases.
    pub base_items_checked: u64,
    /// Items in base backups not checked because no base was given.
    pub base_items_unchecked: u64,
}

struct VerifySink<'a> {
    bases: &'a BaseIndex,
    /// The manifest names a base backup (an incremental archive).
    incremental: bool,
    checked: u64,
    unchecked: u64,
}

impl Sink for VerifySink<'_> {
    fn manifest(&mut self, m: &Manifest) -> Result<()> {
        self.incremental = m.base_backup_id.is_some();
        if let Some(b) = &m.base_backup_id {
            if !self.bases.is_empty() && !self.bases.has_backup(b) {
                return Err(Error::Invalid(format!(
                    "this is an incremental backup of base backup {b}, which is not among the base backups given"
                )));
            }
        }
        Ok(())
    }

    fn referenced(&mut self, m: &Member, item: usize, earlier: bool) -> Result<()> {
        if earlier {
            return Ok(());
        }
        let Kind::File { items } = &m.kind else { return Ok(()) };
        let Some(it) = items.get(item) else { return Ok(()) };
        if !self.incremental {
            // A full backup has no base to hold this data: restore would fail.
            return Err(Error::corrupt(
                CorruptKind::BadMember("a full backup (no base backup) refers to extent data in a base backup"),
                format!(
                    "member {:?}, extent blocks {}..{} of context {}",
                    m.path,
                    it.off,
                    u64::from(it.off) + u64::from(it.count),
                    hex::encode(it.ext.ctx)
                ),
                Some(m.offset),
            ));
        }
        if self.bases.is_empty() {
            self.unchecked += 1;
            return Ok(());
        }
        if !self.bases.holds(&it.ext, it.off, it.count) {
            return Err(Error::Invalid(format!(
                "member {:?}: extent blocks {}..{} of context {} are in none of the base backups given",
                m.path,
                it.off,
                it.off + it.count,
                hex::encode(it.ext.ctx)
            )));
        }
        self.checked += 1;
        Ok(())
    }
}

/// Verifies a whole archive: structure, paths, names, records, every
/// member's and (where complete) every extent's crc32c, the trailer; with
/// bases, that every referenced block is in them.
pub fn verify_backup(input: &mut dyn Read, bases: &[PathBuf]) -> Result<VerifyReport> {
    let bases = BaseIndex::load(bases)?;
    let mut sink = VerifySink {
        bases: &bases,
        incremental: false,
        checked: 0,
        unchecked: 0,
    };
    let rep = scan(BufReader::with_capacity(1 << 20, input), &mut sink)?;
    Ok(VerifyReport {
        manifest: rep.manifest,
        stats: rep.stats,
        base_items_checked: sink.checked,
        base_items_unchecked: sink.unchecked,
    })
}

/// One listed member.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ListEntry {
    /// The archived path (no-key names).
    pub path: String,
    /// The path with real names, when the keys were given and it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_path: Option<String>,
    /// The real path's exact bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_path_base64: Option<String>,
    #[serde(skip)]
    real_raw: Option<Vec<u8>>,
    /// dir, file, symlink, hardlink, fifo, socket, chardev, blockdev.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File size, or symlink target length.
    pub size: u64,
    /// Modification time: seconds since the epoch, and nanoseconds (the
    /// fields of the ext4 listing).
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Hard links: the first path; symlinks: the no-key target, or the real
    /// target with a key (when UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The target's exact bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_base64: Option<String>,
    #[serde(skip)]
    target_raw: Option<Vec<u8>>,
    /// Ciphertext bytes stored in this archive for the member.
    pub stored_bytes: u64,
}

impl ListEntry {
    /// The real path's exact bytes, when the keys were given.
    pub fn real_path_bytes(&self) -> Option<&[u8]> {
        self.real_raw.as_deref()
    }
    /// The target's exact bytes (hard links, symlinks).
    pub fn target_bytes(&self) -> Option<&[u8]> {
        self.target_raw.as_deref()
    }
}

/// Splits raw bytes into (UTF-8 text, base64) for JSON: exactly one is set.
fn text_or_b64(raw: Option<&[u8]>) -> (Option<String>, Option<String>) {
    match raw.map(std::str::from_utf8) {
        None => (None, None),
        Some(Ok(t)) => (Some(t.to_string()), None),
        Some(Err(_)) => (None, raw.map(|r| base64::engine::general_purpose::STANDARD.encode(r))),
    }
}

struct ListSink<'a> {
    keys: &'a Keyring,
    /// Directory inode → (context, real path).
    dirs: HashMap<u64, (PolicyContext, Option<Vec<u8>>)>,
    /// Non-directory inode → real path of its first name.
    real: HashMap<u64, Vec<u8>>,
    out: Vec<ListEntry>,
}

impl ListSink<'_> {
    fn real_path(&self, m: &Member) -> Result<Option<Vec<u8>>> {
        if m.ino == 1 && m.parent == 0 {
            return Ok(Some(b"./".to_vec()));
        }
        let Some((ctx, Some(ppath))) = self.dirs.get(&m.parent) else {
            return Ok(None);
        };
        let Some(key) = self.keys.get(&ctx.key) else { return Ok(None) };
        let name = key.names_key(&ctx.nonce).decrypt_name(&m.name_ct).map_err(|_| Error::AuthFailed {
            at: crate::error::Location {
                what: format!("backup member {:?} (name)", m.path),
                offset: Some(m.offset),
            },
        })?;
        let mut p = ppath.clone();
        p.extend_from_slice(&name);
        if matches!(m.kind, Kind::Dir { .. }) {
            p.push(b'/');
        }
        Ok(Some(p))
    }
}

impl Sink for ListSink<'_> {
    fn member(&mut self, m: &Member) -> Result<()> {
        let real_path = if self.keys.is_empty() { None } else { self.real_path(m)? };
        let (kind, target) = match &m.kind {
            Kind::Dir { ctx } => {
                self.dirs.insert(m.ino, (*ctx, real_path.clone()));
                ("dir", None)
            }
            Kind::File { .. } => ("file", None),
            Kind::Symlink { ctx, blob } => {
                let t = match self.keys.get(&ctx.key) {
                    Some(k) => k.names_key(&ctx.nonce).decrypt_symlink(blob).map_err(|_| Error::AuthFailed {
                        at: crate::error::Location {
                            what: format!("backup member {:?} (symlink target)", m.path),
                            offset: Some(m.offset),
                        },
                    })?,
                    None => crate::format::inode::symlink_ciphertext(blob)
                        .map(b64)
                        .unwrap_or_default()
                        .into_bytes(),
                };
                ("symlink", Some(t))
            }
            Kind::HardLink { target, target_path } => (
                "hardlink",
                Some(self.real.get(target).cloned().unwrap_or_else(|| target_path.clone().into_bytes())),
            ),
            Kind::Special => (
                match m.meta.mode & S_IFMT {
                    crate::format::inode::S_IFCHR => "chardev",
                    crate::format::inode::S_IFBLK => "blockdev",
                    S_IFSOCK => "socket",
                    _ => "fifo",
                },
                None,
            ),
        };
        if let (Some(p), false) = (&real_path, matches!(m.kind, Kind::Dir { .. } | Kind::HardLink { .. })) {
            self.real.insert(m.ino, p.clone());
        }
        let stored_bytes = match &m.kind {
            Kind::File { items } => items
                .iter()
                .filter(|i| i.stored)
                .map(|i| u64::from(i.count) * crate::BLOCK_SIZE as u64)
                .sum(),
            _ => 0,
        };
        let (real_text, real_b64) = text_or_b64(real_path.as_deref());
        let (target_text, target_b64) = text_or_b64(target.as_deref());
        self.out.push(ListEntry {
            path: m.path.clone(),
            real_path: real_text,
            real_path_base64: real_b64,
            real_raw: real_path,
            kind,
            mode: m.meta.mode,
            uid: m.meta.uid,
            gid: m.meta.gid,
            size: m.size,
            mtime: m.meta.mtime.sec,
            mtime_nsec: m.meta.mtime.nsec,
            target: target_text,
            target_base64: target_b64,
            target_raw: target,
            stored_bytes,
        });
        Ok(())
    }
}

/// Lists (and, as it reads, verifies) an archive; with keys, real names.
pub fn list_backup(input: &mut dyn Read, keys: &Keyring) -> Result<(Manifest, Vec<ListEntry>)> {
    let mut sink = ListSink {
        keys,
        dirs: HashMap::new(),
        real: HashMap::new(),
        out: Vec::new(),
    };
    let rep = scan(BufReader::with_capacity(1 << 20, input), &mut sink)?;
    Ok((rep.manifest, sink.out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::inode::S_IFREG;
    use testkit::backup::ArchiveMaker;

    /// A full backup (no base) whose file says its data is in a base backup:
    /// `restore` could never find it, so `verify` must fail, not say "ok".
    #[test]
    fn full_backup_referring_to_base_data_fails() {
        let mut a = ArchiveMaker::new(3, 1);
        a.root();
        let (ct, nk) = a.name();
        let (mut recs, _data) = a.file_recs(&ct, 4096, 1);
        let info = recs.iter_mut().find(|r| r.0 == "CRYPTIMG.extinfo").unwrap();
        assert_eq!(info.1.last(), Some(&b'd'));
        *info.1.last_mut().unwrap() = b'r';
        a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &[]);
        let bytes = a.finish();
        let e = verify_backup(&mut &bytes[..], &[]).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(
            e.to_string()
                .contains("a full backup (no base backup) refers to extent data in a base backup"),
            "{e}"
        );
        // The same member with its data stored verifies.
        let mut a = ArchiveMaker::new(3, 1);
        a.root();
        a.file("./");
        let ok = a.finish();
        verify_backup(&mut &ok[..], &[]).unwrap();
    }
}
