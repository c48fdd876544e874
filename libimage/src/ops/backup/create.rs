//! `backup-crypt create`: stream one snapshot out of an image as a pax
//! archive, without a key. The image is only read.
//!
//! Memory stays bounded whatever the image size: one data chunk, the current
//! member's headers, the directory stack, the first path of each
//! hard-linked inode, which extent blocks were already stored, and (for an
//! incremental backup) at most one compact listing member being filled.
//!
//! A full backup is format version 1. An incremental one (`--since`) is
//! version 2: every run of consecutive members that store no data is
//! written as compact listing members (docs/BACKUP.md §4a) instead of one
//! pax member each; member order is the same as in version 1.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::base::BaseIndex;
use super::format::*;
use super::listing::{self, Entry, LISTING_NAME, MAX_LISTING};
use super::pax::{octal_max, push_record, PaxWriter, Ustar};
use super::scan::CHUNK;
use super::segments::Coverage;
use crate::engine::image::{Access, Image};
use crate::error::{CorruptKind, Error, Result};
use crate::format::inode::{Body, Inode, S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFSOCK};
use crate::progress::Progress;
use crate::BLOCK_SIZE;
use fscrypt::context::EXTENT_CTX_LEN;
use fscrypt::nokey_name;

/// Options of `create`.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Snapshot to back up (default: the only one, or `main`).
    pub snapshot: Option<String>,
    /// Make an incremental backup relative to this earlier backup.
    pub since: Option<PathBuf>,
}

/// What `create` wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackupReport {
    pub backup_id: String,
    pub base_backup_id: Option<String>,
    pub snapshot: String,
    /// Tree members (root included).
    pub members: u64,
    pub files: u64,
    pub hardlinks: u64,
    /// Extent items whose blocks were stored.
    pub stored_items: u64,
    /// Items referring to blocks stored earlier in this archive.
    pub shared_items: u64,
    /// Items referring to blocks in the base backup.
    pub base_items: u64,
    /// Ciphertext bytes stored.
    pub stored_bytes: u64,
    pub archive_bytes: u64,
}

struct Ctx<'a, W: Write> {
    img: &'a Image,
    w: PaxWriter<W>,
    base: Option<BaseIndex>,
    /// Blocks stored so far in this archive, per extent context.
    stored: HashMap<[u8; EXTENT_CTX_LEN], (ExtentKey, Coverage)>,
    first_path: HashMap<u64, String>,
    buf: Vec<u8>,
    report: BackupReport,
    progress: &'a dyn Progress,
    /// Version 2: the listing being filled (written before the next pax
    /// member, or when full). `None` for version 1.
    listing: Option<Vec<u8>>,
    /// The ordinal the next member that is not a hard link gets (root = 1).
    next_ord: u64,
    /// mtime of the archive's own members.
    created: i64,
}

/// Backs up a snapshot of `image` to `out`.
pub fn create_backup(image: &Path, out: &mut dyn Write, opts: &BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    let img = Image::open(image, Access::ReadOnly)?;
    let snap = img.snapshot(opts.snapshot.as_deref())?;
    let base = match &opts.since {
        Some(p) => Some(BaseIndex::load(std::slice::from_ref(p))?),
        None => None,
    };
    let base_id = base.as_ref().and_then(|b| b.manifests.first()).map(|m| m.backup_id.clone());
    let version = if base.is_some() { FORMAT_VERSION_LISTING } else { FORMAT_VERSION };
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version,
        backup_id: new_backup_id()?,
        base_backup_id: base_id.clone(),
        created: crate::ops::create::now(Default::default()),
        image_uuid: hex::encode(img.superblock().uuid),
        snapshot: snap.name.clone(),
        snapshot_created: snap.created,
        policy: snap.policy.to_string(),
        keys_needed: img.keys_needed(snap).iter().map(|k| k.to_string()).collect(),
        block_size: BLOCK_SIZE as u32,
    };
    let mut c = Ctx {
        img: &img,
        w: PaxWriter::new(out),
        base,
        stored: HashMap::new(),
        first_path: HashMap::new(),
        buf: Vec::new(),
        report: BackupReport {
            backup_id: manifest.backup_id.clone(),
            base_backup_id: base_id,
            snapshot: snap.name.clone(),
            ..Default::default()
        },
        progress,
        listing: (version >= FORMAT_VERSION_LISTING).then(Vec::new),
        next_ord: 1,
        created: manifest.created,
    };
    progress.start("backup", opts.since.is_none().then(|| img.mapped_bytes(snap)));
    // The manifest.
    let json = manifest.to_json();
    let mut recs = Vec::new();
    push_record(&mut recs, K_PATH.as_bytes(), MANIFEST_NAME.as_bytes());
    push_record(&mut recs, K_MTIME.as_bytes(), format!("{}", manifest.created).as_bytes());
    c.w.file_member(MANIFEST_NAME, manifest.created, recs, &json)?;

    // The tree: each directory's entries are written when it is reached, so
    // parents always come before children.
    let root = snap.inodes.get(&snap.root).ok_or_else(|| {
        Error::corrupt(
            CorruptKind::Dangling {
                what: "inode",
                id: snap.root,
            },
            "snapshot root",
            None,
        )
    })?;
    let root_ord = c.member("./".to_string(), root, &[], 0)?;
    let mut stack: Vec<(String, u64, u64)> = vec![("./".to_string(), snap.root, root_ord)];
    while let Some((dpath, dino, dord)) = stack.pop() {
        let Some(Inode {
            body: Body::Dir { entries, .. },
            ..
        }) = snap.inodes.get(&dino)
        else {
            continue;
        };
        for e in entries {
            let child = snap
                .inodes
                .get(&e.ino)
                .ok_or_else(|| Error::corrupt(CorruptKind::Dangling { what: "inode", id: e.ino }, "directory entry", None))?;
            let comp = nokey_name(&e.name);
            if comp.is_empty() || comp == "." || comp == ".." || comp.contains('/') || comp.contains('\0') {
                return Err(Error::Invalid(format!("no-key name {comp:?} cannot be an archive path component")));
            }
            let mut path = String::with_capacity(dpath.len() + comp.len() + 1);
            path.push_str(&dpath);
            path.push_str(&comp);
            if child.is_dir() {
                path.push('/');
                let ord = c.member(path.clone(), child, &e.name, dord)?;
                stack.push((path, e.ino, ord));
            } else {
                c.member(path, child, &e.name, dord)?;
            }
        }
    }

    // The trailer.
    c.flush_listing()?;
    let mut recs = Vec::new();
    push_record(&mut recs, K_PATH.as_bytes(), TRAILER_NAME.as_bytes());
    push_record(&mut recs, K_MEMBERS.as_bytes(), c.report.members.to_string().as_bytes());
    push_record(&mut recs, K_ARCHIVE_CRC.as_bytes(), format!("{:08x}", c.w.crc).as_bytes());
    c.w.file_member(TRAILER_NAME, manifest.created, recs, &[])?;
    let archive_bytes = c.w.pos + 2 * 512;
    c.w.finish()?;
    progress.finish();
    c.report.archive_bytes = archive_bytes;
    Ok(c.report)
}

/// Reads image blocks from `block` on into `buf` (a whole number of blocks).
fn read_at(img: &Image, block: u64, buf: &mut [u8]) -> Result<()> {
    let count = (buf.len() / BLOCK_SIZE) as u64;
    img.file()
        .read_exact_at(buf, block * BLOCK_SIZE as u64)
        .map_err(|e| Error::io(format!("reading image blocks {block}..{}", block + count), e))
}

fn truncated(s: &[u8]) -> Vec<u8> {
    s[..s.len().min(100)].to_vec()
}

impl<W: Write> Ctx<'_, W> {
    /// The listing entry of a member without data (its common fields).
    fn entry(&self, typeflag: u8, ino: &Inode, name_ct: &[u8], parent_ord: u64, body: listing::Body) -> Entry {
        Entry {
            typeflag,
            parent: parent_ord,
            name: name_ct.to_vec(),
            mode: ino.mode,
            uid: ino.uid,
            gid: ino.gid,
            rdev: ino.rdev,
            mtime: ino.mtime,
            atime: ino.atime,
            ctime: ino.ctime,
            xattrs: ino.xattrs.clone(),
            body,
        }
    }

    /// Adds `e` to the listing; false when it is too big for one (it is then
    /// written as a pax member).
    fn list(&mut self, e: &Entry) -> Result<bool> {
        let mut b = Vec::new();
        e.encode(&mut b);
        if b.len() as u64 > MAX_LISTING {
            return Ok(false);
        }
        if self.listing.as_ref().is_some_and(|l| (l.len() + b.len()) as u64 > MAX_LISTING) {
            self.flush_listing()?;
        }
        if let Some(l) = self.listing.as_mut() {
            l.extend_from_slice(&b);
        }
        Ok(true)
    }

    /// Writes the listing filled so far, if any, as a member.
    fn flush_listing(&mut self) -> Result<()> {
        let Some(l) = self.listing.as_mut().filter(|l| !l.is_empty()) else {
            return Ok(());
        };
        let data = std::mem::take(l);
        let mut recs = Vec::new();
        push_record(&mut recs, K_PATH.as_bytes(), LISTING_NAME.as_bytes());
        self.w.file_member(LISTING_NAME, self.created, recs, &data)?;
        // Keep the buffer's allocation.
        if let Some(l) = self.listing.as_mut() {
            *l = data;
            l.clear();
        }
        Ok(())
    }

    /// Writes one tree member (into the listing when it can go there);
    /// returns its ordinal (a hard link's is 0: it has none of its own).
    fn member(&mut self, path: String, ino: &Inode, name_ct: &[u8], parent_ord: u64) -> Result<u64> {
        let mut recs = Vec::new();
        let mut h = Ustar {
            name: truncated(path.as_bytes()),
            mode: ino.mode,
            uid: u64::from(ino.uid),
            gid: u64::from(ino.gid),
            mtime: ino.mtime.sec.clamp(0, octal_max(12) as i64),
            ..Default::default()
        };
        let (major, minor) = dev_split(ino.rdev);
        h.devmajor = major;
        h.devminor = minor;
        push_record(&mut recs, K_PATH.as_bytes(), path.as_bytes());

        // Hard links: the second and later names of a non-directory.
        if ino.nlink > 1 && !ino.is_dir() {
            if let Some(first) = self.first_path.get(&ino.ino) {
                h.typeflag = b'1';
                h.linkname = truncated(first.as_bytes());
                push_record(&mut recs, K_LINKPATH.as_bytes(), first.as_bytes());
                self.common(&mut recs, &h, ino, name_ct)?;
                let target = first.as_bytes().to_vec();
                let listed = self.listing.is_some() && {
                    let e = self.entry(b'1', ino, name_ct, parent_ord, listing::Body::HardLink { target });
                    self.list(&e)?
                };
                if !listed {
                    self.flush_listing()?;
                    self.w.begin(&h, recs, 0)?;
                    self.w.end_data()?;
                }
                self.report.members += 1;
                self.report.hardlinks += 1;
                return Ok(0);
            }
            self.first_path.insert(ino.ino, path.clone());
        }
        let ord = self.next_ord;
        self.next_ord += 1;

        let mut items = Vec::new();
        match &ino.body {
            Body::Dir { ctx, .. } => {
                h.typeflag = b'5';
                self.common(&mut recs, &h, ino, name_ct)?;
                push_record(&mut recs, K_POLICY.as_bytes(), hex::encode(ctx.to_bytes()).as_bytes());
            }
            Body::Symlink { ctx, blob } => {
                h.typeflag = b'2';
                let ct = crate::format::inode::symlink_ciphertext(blob)
                    .ok_or_else(|| Error::corrupt(CorruptKind::BadSymlink("no ciphertext in it"), format!("inode {}", ino.ino), None))?;
                let target = b64(ct);
                h.linkname = truncated(target.as_bytes());
                push_record(&mut recs, K_LINKPATH.as_bytes(), target.as_bytes());
                self.common(&mut recs, &h, ino, name_ct)?;
                push_record(&mut recs, K_POLICY.as_bytes(), hex::encode(ctx.to_bytes()).as_bytes());
                push_record(&mut recs, K_SYMLINK.as_bytes(), hex::encode(blob).as_bytes());
                push_record(&mut recs, K_SIZE.as_bytes(), ino.size.to_string().as_bytes());
            }
            Body::File { map } => {
                h.typeflag = b'0';
                for m in map {
                    let e = self.img.extent(m.extent)?;
                    let key = ExtentKey {
                        ctx: e.ctx.to_bytes(),
                        crc: e.crc,
                        blocks: e.blocks,
                    };
                    let in_base = self.base.as_ref().is_some_and(|b| b.knows(&key, m.offset, m.blocks));
                    let entry = self.stored.entry(key.ctx).or_insert_with(|| (key, Coverage::default()));
                    let here = entry.0 == key && entry.1.covers(m.offset, m.blocks);
                    let stored = !in_base && !here;
                    if stored && entry.0 == key {
                        entry.1.add(m.offset, m.blocks);
                    }
                    if in_base {
                        self.report.base_items += 1;
                    } else if here {
                        self.report.shared_items += 1;
                    } else {
                        self.report.stored_items += 1;
                    }
                    items.push((
                        Item {
                            lblk: m.lblk,
                            count: m.blocks,
                            off: m.offset,
                            ext: key,
                            stored,
                        },
                        e.start,
                    ));
                }
                h.size = items
                    .iter()
                    .filter(|(i, _)| i.stored)
                    .map(|(i, _)| u64::from(i.count) * BLOCK_SIZE as u64)
                    .sum();
                if h.size > octal_max(12) {
                    push_record(&mut recs, K_SIZE_STD.as_bytes(), h.size.to_string().as_bytes());
                }
                self.common(&mut recs, &h, ino, name_ct)?;
                push_record(&mut recs, K_SIZE.as_bytes(), ino.size.to_string().as_bytes());
                if !items.is_empty() {
                    let list: Vec<Item> = items.iter().map(|(i, _)| *i).collect();
                    let (ext, info) = encode_items(&list);
                    push_record(&mut recs, K_EXTENTS.as_bytes(), ext.as_bytes());
                    push_record(&mut recs, K_EXTINFO.as_bytes(), info.as_bytes());
                }
                self.report.files += 1;
            }
            Body::Special => {
                h.typeflag = match ino.mode & S_IFMT {
                    S_IFCHR => b'3',
                    S_IFBLK => b'4',
                    S_IFIFO => b'6',
                    S_IFSOCK => b'0',
                    _ => {
                        return Err(Error::corrupt(
                            CorruptKind::BadValue {
                                field: "special inode file type",
                                value: u64::from(ino.mode & S_IFMT),
                            },
                            format!("inode {}", ino.ino),
                            None,
                        ))
                    }
                };
                self.common(&mut recs, &h, ino, name_ct)?;
            }
        }

        // Version 2: a member that stores no data goes into the listing.
        if self.listing.is_some() && items.iter().all(|(i, _)| !i.stored) {
            let body = match &ino.body {
                Body::Dir { ctx, .. } => listing::Body::Dir { policy: ctx.to_bytes() },
                Body::Symlink { ctx, blob } => listing::Body::Symlink {
                    policy: ctx.to_bytes(),
                    blob: blob.clone(),
                    size: ino.size,
                },
                Body::File { .. } => listing::Body::File {
                    size: ino.size,
                    items: items.iter().map(|(i, _)| *i).collect(),
                },
                Body::Special => listing::Body::Special,
            };
            let e = self.entry(h.typeflag, ino, name_ct, parent_ord, body);
            if self.list(&e)? {
                self.report.members += 1;
                self.progress.advance(1, 0);
                return Ok(ord);
            }
        }
        self.flush_listing()?;

        // crc32c of the data: whole extents' crcs are known; partial ones are read.
        let mut crc = 0u32;
        let mut expect = Vec::with_capacity(items.len());
        for (it, start) in items.iter().filter(|(i, _)| i.stored) {
            let len = it.count as usize * BLOCK_SIZE;
            let c = if it.off == 0 && it.count == it.ext.blocks {
                it.ext.crc
            } else {
                self.crc_of(*start + u64::from(it.off), it.count)?
            };
            expect.push(c);
            crc = crate::engine::crc::combine(crc, c, len as u64);
        }
        self.w.begin(&h, recs, crc)?;
        for ((it, start), want) in items.iter().filter(|(i, _)| i.stored).zip(expect) {
            let mut got = 0u32;
            let mut done = 0u32;
            while done < it.count {
                let n = (it.count - done).min((CHUNK / BLOCK_SIZE) as u32);
                let block = *start + u64::from(it.off + done);
                let len = n as usize * BLOCK_SIZE;
                // Read straight into the archive's output buffer; crc it there.
                let img = self.img;
                let c = self.w.data_with(len, |dst| {
                    read_at(img, block, dst)?;
                    Ok(crc32c::crc32c(dst))
                })?;
                got = crate::engine::crc::combine(got, c, len as u64);
                self.progress.advance(0, len as u64);
                done += n;
            }
            if got != want {
                return Err(Error::corrupt(
                    CorruptKind::BadChecksum {
                        stored: want,
                        computed: got,
                    },
                    format!("image extent data at block {start} (backing up {path})"),
                    Some(start * BLOCK_SIZE as u64),
                ));
            }
            self.report.stored_bytes += u64::from(it.count) * BLOCK_SIZE as u64;
        }
        self.w.end_data()?;
        self.report.members += 1;
        self.progress.advance(1, 0);
        Ok(ord)
    }

    /// Records shared by every member type, in their fixed order.
    fn common(&self, recs: &mut Vec<u8>, h: &Ustar, ino: &Inode, name_ct: &[u8]) -> Result<()> {
        if h.uid > octal_max(8) {
            push_record(recs, K_UID.as_bytes(), h.uid.to_string().as_bytes());
        }
        if h.gid > octal_max(8) {
            push_record(recs, K_GID.as_bytes(), h.gid.to_string().as_bytes());
        }
        push_record(recs, K_MTIME.as_bytes(), encode_time(ino.mtime).as_bytes());
        push_record(recs, K_ATIME.as_bytes(), encode_time(ino.atime).as_bytes());
        push_record(recs, K_CTIME.as_bytes(), encode_time(ino.ctime).as_bytes());
        if h.devmajor > octal_max(8) || h.devminor > octal_max(8) {
            push_record(recs, K_DEVMAJOR.as_bytes(), h.devmajor.to_string().as_bytes());
            push_record(recs, K_DEVMINOR.as_bytes(), h.devminor.to_string().as_bytes());
        }
        for (n, v) in &ino.xattrs {
            if n.is_empty() || n.contains(&b'=') || n.contains(&0) {
                return Err(Error::Invalid(format!(
                    "inode {}: xattr name {:?} cannot be stored as a pax keyword (contains '=' or NUL)",
                    ino.ino,
                    n.escape_ascii().to_string()
                )));
            }
            let mut k = K_XATTR.as_bytes().to_vec();
            k.extend_from_slice(n);
            push_record(recs, &k, v);
        }
        if !name_ct.is_empty() {
            push_record(recs, K_NAME.as_bytes(), b64(name_ct).as_bytes());
        }
        Ok(())
    }

    fn read(&mut self, block: u64, count: u32) -> Result<()> {
        self.buf.resize(count as usize * BLOCK_SIZE, 0);
        read_at(self.img, block, &mut self.buf)
    }

    fn crc_of(&mut self, start: u64, count: u32) -> Result<u32> {
        let mut crc = 0u32;
        let mut done = 0u32;
        while done < count {
            let n = (count - done).min((CHUNK / BLOCK_SIZE) as u32);
            self.read(start + u64::from(done), n)?;
            crc = crc32c::crc32c_append(crc, &self.buf);
            done += n;
        }
        Ok(crc)
    }
}
