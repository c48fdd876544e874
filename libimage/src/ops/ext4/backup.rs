//! `backup-crypt create` of an ext4 image or block device, keyless
//! (docs/BACKUP.md §11): each encrypted file goes out with its 40-byte
//! context, encrypted name, original size and ciphertext blocks (holes
//! absent); everything unencrypted as plain tar members.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ext4fs::inode::{Inode, ENCRYPT_FL, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
use ext4fs::read::{walk, FileMap, Fs, Visit};
use ext4fs::xattr::{INDEX_SECURITY, INDEX_TRUSTED, INDEX_USER};
use ext4fs::BLOCK_SIZE_U64;

use super::archive::{
    fmt_time, read_archive, Ext4Manifest, Ext4Sink, Kind, Member, FORMAT, K_ARCHIVE_CRC, K_BLOCKS, K_CONTEXT, K_DATACRC, K_KEYS, K_MEMBERS,
    K_NAME, K_SIZE, K_SYMLINK, K_UNCHANGED, VERSION,
};
use super::list::nokey_name;
use super::reader::{map_err, parse_context, Ctx};
use crate::error::{Error, Result};
use crate::ops::backup::format::{new_backup_id, MANIFEST_NAME, TRAILER_NAME};
use crate::ops::backup::pax::{octal_max, push_record, PaxWriter, Ustar};
use crate::progress::Progress;

/// Files up to this size are read once (buffered); larger ones twice
/// (once for the checksum that precedes the data, once to write it).
const BUFFER_LIMIT: u64 = 16 << 20;

/// What a backup wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Ext4BackupReport {
    pub backup_id: String,
    pub members: u64,
    pub encrypted_files: u64,
    pub unchanged_files: u64,
    pub ciphertext_bytes: u64,
    pub plain_bytes: u64,
    pub archive_bytes: u64,
}

/// The encrypted files of a previous backup: (context, datacrc, size) →
/// block runs. The nonce in the context is unique per inode, so the key
/// names one file's one version wherever it lives in the tree.
struct Prev {
    id: String,
    files: HashMap<PrevKey, Vec<(u64, u64)>>,
}

/// (context, datacrc, size).
type PrevKey = ([u8; 40], u32, u64);

impl Ext4Sink for Prev {
    fn manifest(&mut self, m: &Ext4Manifest) -> Result<()> {
        self.id = m.backup_id.clone();
        Ok(())
    }
    fn member(&mut self, m: &Member, _data: &mut dyn FnMut(&mut [u8]) -> Result<usize>) -> Result<()> {
        if let (Kind::File, Some(c), Some(d)) = (m.kind, m.context, m.datacrc) {
            self.files.entry((c, d, m.size)).or_insert_with(|| m.runs.clone());
        }
        Ok(())
    }
}

/// Backs up the ext4 image at `image` to `out`; with `since`, files whose
/// context, size, block runs and ciphertext crc32c equal a file of the
/// previous backup are not stored (docs/BACKUP.md §11.3).
pub fn create(image: &Path, out: &mut dyn Write, since: Option<&mut dyn Read>, progress: &dyn Progress) -> Result<Ext4BackupReport> {
    let fs = super::reader::open(image)?;
    let prev = match since {
        Some(r) => {
            let mut p = Prev {
                id: String::new(),
                files: HashMap::new(),
            };
            read_archive(r, &mut p)?;
            Some(p)
        }
        None => None,
    };
    let sb = fs.superblock().clone();
    let mut keys_needed: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut rep = Ext4BackupReport {
        backup_id: new_backup_id()?,
        ..Default::default()
    };
    let manifest = Ext4Manifest {
        format: FORMAT.into(),
        version: VERSION,
        backup_id: rep.backup_id.clone(),
        base_backup_id: prev.as_ref().map(|p| p.id.clone()),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        image_uuid: hex::encode(sb.uuid),
        hash_seed: hex::encode(sb.hash_seed),
        hash_version: sb.def_hash_version,
        unsigned_hash: sb.flags & ext4fs::superblock::FLAGS_UNSIGNED_HASH != 0,
        blocks_count: sb.blocks_count,
        inodes_count: u64::from(sb.inodes_count),
        block_size: 4096,
    };
    let mut w = PaxWriter::new(out);
    let mjson = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
    let mut recs = Vec::new();
    push_record(&mut recs, b"path", MANIFEST_NAME.as_bytes());
    push_record(&mut recs, b"mtime", fmt_time(manifest.created, 0).as_bytes());
    w.file_member(MANIFEST_NAME, manifest.created, recs, &mjson)?;

    // Per directory: its archive path (ending in '/'), whether encrypted.
    let mut dirs: HashMap<u32, (Vec<u8>, bool)> = HashMap::new();
    let mut first_path: HashMap<u32, Vec<u8>> = HashMap::new();
    // One buffer for the data of every file up to BUFFER_LIMIT.
    let mut kept: Vec<u8> = Vec::new();
    // Encrypted files' blocks up to BUFFER_LIMIT: grown, never shrunk nor zeroed again.
    let mut spare: Vec<u8> = Vec::new();
    let prev_files = prev.map(|p| p.files);
    // No total: the bytes to store are known only once the tree is walked.
    progress.start("backup", None);
    walk::<Error>(
        &fs,
        &mut |e| {
            (|| -> Result<Visit> {
                let i = e.inode;
                let kind = i.mode & S_IFMT;
                let (parent_path, parent_enc) = dirs.get(&e.parent).cloned().unwrap_or((b"./".to_vec(), false));
                let (path, name_ct) = match e.path.last() {
                    None => (b"./".to_vec(), None),
                    Some(ct) => {
                        let mut p = parent_path.clone();
                        if parent_enc {
                            p.extend_from_slice(nokey_name(ct, e.parent_hash).as_bytes());
                        } else {
                            p.extend_from_slice(ct);
                        }
                        if kind == S_IFDIR {
                            p.push(b'/');
                        }
                        (p, parent_enc.then(|| ct.clone()))
                    }
                };
                let ctx = context_of(&fs, e.ino, i)?;
                let mut recs = Vec::new();
                push_record(&mut recs, b"path", &path);
                let mut hdr = Ustar {
                    name: path[..path.len().min(100)].to_vec(),
                    mode: u32::from(i.mode),
                    uid: u64::from(i.uid),
                    gid: u64::from(i.gid),
                    mtime: i.mtime.sec.max(0),
                    ..Default::default()
                };
                if let Some(ct) = &name_ct {
                    push_record(&mut recs, K_NAME.as_bytes(), URL_SAFE_NO_PAD.encode(ct).as_bytes());
                }
                if !e.first_link {
                    let target = first_path.get(&e.ino).cloned().unwrap_or_default();
                    hdr.typeflag = b'1';
                    hdr.linkname = target[..target.len().min(100)].to_vec();
                    push_record(&mut recs, b"linkpath", &target);
                    times(&mut recs, i);
                    w.begin(&hdr, recs, 0)?;
                    w.end_data()?;
                    rep.members += 1;
                    progress.advance(1, 0);
                    return Ok(Visit::Skip);
                }
                if i.uid as u64 > octal_max(8) {
                    push_record(&mut recs, b"uid", i.uid.to_string().as_bytes());
                }
                if i.gid as u64 > octal_max(8) {
                    push_record(&mut recs, b"gid", i.gid.to_string().as_bytes());
                }
                times(&mut recs, i);
                for x in fs.xattrs(e.ino, i).map_err(map_err)? {
                    let prefix: &[u8] = match x.index {
                        INDEX_USER => b"user.",
                        INDEX_TRUSTED => b"trusted.",
                        INDEX_SECURITY => b"security.",
                        _ => continue,
                    };
                    let mut k = b"SCHILY.xattr.".to_vec();
                    k.extend_from_slice(prefix);
                    k.extend_from_slice(&x.name);
                    push_record(&mut recs, &k, &x.value);
                }
                if let Some(c) = &ctx {
                    push_record(&mut recs, K_CONTEXT.as_bytes(), hex::encode(c).as_bytes());
                    keys_needed.insert(hex::encode(&c[8..24]));
                }
                match kind {
                    S_IFDIR => {
                        hdr.typeflag = b'5';
                        w.begin(&hdr, recs, 0)?;
                        w.end_data()?;
                        dirs.insert(e.ino, (path.clone(), ctx.is_some()));
                    }
                    S_IFLNK => {
                        let raw = fs.symlink_raw(e.ino, i).map_err(map_err)?;
                        hdr.typeflag = b'2';
                        let target = if ctx.is_some() {
                            push_record(&mut recs, K_SYMLINK.as_bytes(), hex::encode(&raw).as_bytes());
                            push_record(&mut recs, K_SIZE.as_bytes(), i.size.to_string().as_bytes());
                            fscrypt::nokey_name(raw.get(2..raw.len().saturating_sub(1)).unwrap_or(&[])).into_bytes()
                        } else {
                            raw[..raw.len().saturating_sub(1)].to_vec()
                        };
                        hdr.linkname = target[..target.len().min(100)].to_vec();
                        push_record(&mut recs, b"linkpath", &target);
                        w.begin(&hdr, recs, 0)?;
                        w.end_data()?;
                    }
                    S_IFREG => {
                        let map = fs.extents(e.ino, i).map_err(map_err)?;
                        let plain = ctx.is_none().then_some(i.size);
                        let data_len = match plain {
                            Some(s) => s,
                            None => map.written_blocks() * BLOCK_SIZE_U64,
                        };
                        hdr.typeflag = b'0';
                        // First pass: the crc32c (kept in memory when small).
                        let keep = data_len <= BUFFER_LIMIT;
                        let mut crc = 0u32;
                        kept.clear();
                        // The kept data is `spare[..n]` when this is `Some(n)`, else `kept`.
                        let mut in_spare = None;
                        if keep && plain.is_none() {
                            // Ciphertext blocks read straight into place, one read per
                            // extent, into `spare` (grown, never zeroed again per file).
                            let n = data_len as usize;
                            if spare.len() < n {
                                spare.resize(n, 0);
                            }
                            let mut at = 0usize;
                            for x in map.extents.iter().filter(|x| !x.unwritten) {
                                let n = x.len as usize * 4096;
                                let dst = spare
                                    .get_mut(at..at + n)
                                    .ok_or_else(|| Error::Invalid("internal: extent sizes".into()))?;
                                fs.read_blocks(x.pblk, dst).map_err(map_err)?;
                                at += n;
                            }
                            in_spare = Some(n);
                            crc = crc32c::crc32c(&spare[..n]);
                        } else {
                            pieces(&fs, &map, plain, &mut |b| {
                                crc = crc32c::crc32c_append(crc, b);
                                if keep {
                                    kept.extend_from_slice(b);
                                }
                                Ok(())
                            })?;
                        }
                        let file_runs = runs(&map);
                        let unchanged = match (&ctx, &prev_files) {
                            (Some(c), Some(pf)) => pf.get(&(*c, crc, i.size)).is_some_and(|r| *r == file_runs),
                            _ => false,
                        };
                        if ctx.is_some() {
                            push_record(&mut recs, K_SIZE.as_bytes(), i.size.to_string().as_bytes());
                            push_record(&mut recs, K_BLOCKS.as_bytes(), fmt_runs(&file_runs).as_bytes());
                            push_record(&mut recs, K_DATACRC.as_bytes(), format!("{crc:08x}").as_bytes());
                            rep.encrypted_files += 1;
                        }
                        if unchanged {
                            push_record(&mut recs, K_UNCHANGED.as_bytes(), b"1");
                            rep.unchanged_files += 1;
                            w.begin(&hdr, recs, 0)?;
                            w.end_data()?;
                        } else {
                            hdr.size = data_len;
                            if data_len > octal_max(12) {
                                push_record(&mut recs, b"size", data_len.to_string().as_bytes());
                            }
                            w.begin(&hdr, recs, crc)?;
                            if keep {
                                w.data(in_spare.map_or(&kept[..], |n| &spare[..n]), crc)?;
                            } else {
                                pieces(&fs, &map, plain, &mut |b| w.data(b, crc32c::crc32c(b)))?;
                            }
                            w.end_data()?;
                            if plain.is_some() {
                                rep.plain_bytes += data_len;
                            } else {
                                rep.ciphertext_bytes += data_len;
                            }
                            progress.advance(0, data_len);
                        }
                        first_path.insert(e.ino, path);
                    }
                    _ => {
                        hdr.typeflag = match kind {
                            S_IFCHR => b'3',
                            S_IFBLK => b'4',
                            S_IFIFO => b'6',
                            S_IFSOCK => b'0',
                            _ => return Err(Error::Invalid(format!("inode {}: unknown file type {:#o}", e.ino, i.mode))),
                        };
                        if matches!(kind, S_IFCHR | S_IFBLK) {
                            let (ma, mi) = Fs::device(i);
                            hdr.devmajor = u64::from(ma);
                            hdr.devminor = u64::from(mi);
                        }
                        w.begin(&hdr, recs, 0)?;
                        w.end_data()?;
                        first_path.insert(e.ino, path);
                    }
                }
                rep.members += 1;
                progress.advance(1, 0);
                Ok(Visit::Descend)
            })()
        },
        &mut |_, _, _| Ok(()),
    )?;
    progress.finish();
    let crc_before = w.crc;
    let mut recs = Vec::new();
    push_record(&mut recs, b"path", TRAILER_NAME.as_bytes());
    push_record(&mut recs, K_MEMBERS.as_bytes(), rep.members.to_string().as_bytes());
    push_record(&mut recs, K_ARCHIVE_CRC.as_bytes(), format!("{crc_before:08x}").as_bytes());
    push_record(
        &mut recs,
        K_KEYS.as_bytes(),
        keys_needed.into_iter().collect::<Vec<_>>().join(",").as_bytes(),
    );
    w.file_member(TRAILER_NAME, 0, recs, &[])?;
    rep.archive_bytes = w.pos + 1024;
    w.finish()?;
    Ok(rep)
}

fn times(recs: &mut Vec<u8>, i: &Inode) {
    push_record(recs, b"mtime", fmt_time(i.mtime.sec, i.mtime.nsec).as_bytes());
    push_record(recs, b"atime", fmt_time(i.atime.sec, i.atime.nsec).as_bytes());
    push_record(recs, b"ctime", fmt_time(i.ctime.sec, i.ctime.nsec).as_bytes());
}

/// The context of an encrypted inode (refusals and malformed contexts are errors).
fn context_of(fs: &Fs, ino: u32, i: &Inode) -> Result<Option<[u8; 40]>> {
    let Some(raw) = fs.context(ino, i).map_err(map_err)? else {
        if i.flags & ENCRYPT_FL != 0 {
            return Err(Error::Invalid(format!(
                "inode {ino}: ENCRYPT_FL without a context (run fsck-crypt check)"
            )));
        }
        return Ok(None);
    };
    match parse_context(&raw, ino)? {
        Ctx::V2(c) => Ok(Some(c.to_bytes())),
        Ctx::Malformed(why) => Err(Error::Invalid(format!("inode {ino}: malformed encryption context: {why}"))),
    }
}

/// (first, count) runs of the written extents, adjacent ones merged.
fn runs(map: &FileMap) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    for e in map.extents.iter().filter(|e| !e.unwritten) {
        match v.last_mut() {
            Some((l, n)) if *l + *n == u64::from(e.lblk) => *n += u64::from(e.len),
            _ => v.push((u64::from(e.lblk), u64::from(e.len))),
        }
    }
    v
}

/// `L+N,...` (the `CRYPTIMG.blocks` value).
fn fmt_runs(runs: &[(u64, u64)]) -> String {
    runs.iter().map(|(l, n)| format!("{l}+{n}")).collect::<Vec<_>>().join(",")
}

/// Streams a file's member data: ciphertext blocks (`plain` None), or the
/// plaintext of `plain` bytes with holes as zeros.
fn pieces(fs: &Fs, map: &FileMap, plain: Option<u64>, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let zeros = if plain.is_some() { vec![0u8; 64 << 10] } else { Vec::new() };
    let mut pos = 0u64;
    fs.read_mapped::<Error>(map, 256, &mut |lblk, b| match plain {
        None => f(b),
        Some(size) => {
            let off = lblk * BLOCK_SIZE_U64;
            if off >= size {
                return Ok(());
            }
            while pos < off {
                let n = (off - pos).min(zeros.len() as u64) as usize;
                f(&zeros[..n])?;
                pos += n as u64;
            }
            let n = (b.len() as u64).min(size - off) as usize;
            f(&b[..n])?;
            pos += n as u64;
            Ok(())
        }
    })?;
    if let Some(size) = plain {
        while pos < size {
            let n = (size - pos).min(zeros.len() as u64) as usize;
            f(&zeros[..n])?;
            pos += n as u64;
        }
    }
    Ok(())
}
