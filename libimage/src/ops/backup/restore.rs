//! `backup-crypt restore`: rebuild a snapshot from a backup without keys.
//!
//! The archive is read once, as a stream. Ciphertext, contexts, encrypted
//! names, sizes and metadata are written exactly as archived; extents are
//! rebuilt from their items (equal context, crc32c and length ⇒ one extent,
//! refcounted), with each extent's crc32c recomputed from the data and
//! compared with the archived one when all its blocks are present.
//!
//! Into a new image: a temporary file renamed into place only after the
//! final commit. Into an existing image: a new snapshot and one commit. On
//! any failure nothing partial remains: the temporary file is removed, and an
//! existing image keeps its previous committed state (it is also truncated
//! back to its previous length).

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::base::BaseIndex;
use super::format::{ExtentKey, Manifest};
use super::scan::{scan, Kind, Member, ScanStats, Sink};
use super::segments::Segments;
use crate::engine::atomic::AtomicFile;
use crate::engine::image::{Access, Image};
use crate::error::{CorruptKind, Error, Result};
use crate::finding::Severity;
use crate::format::inode::{Body, DirEntry, Inode, MapEntry};
use crate::format::snapshot::Snapshot;
use crate::format::validate::{check_metadata, Geometry};
use crate::progress::Progress;
use crate::BLOCK_SIZE;
use fscrypt::context::EXTENT_CTX_LEN;

/// Options of `restore`.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Name of the restored snapshot (default: the archived one).
    pub snapshot: Option<String>,
    /// Base backups of an incremental backup (the whole chain).
    pub bases: Vec<PathBuf>,
    /// The archive's length when known (a regular file): the progress total.
    pub archive_bytes: Option<u64>,
}

/// What `restore` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub image: PathBuf,
    /// True when a new image was made, false when a snapshot was added.
    pub new_image: bool,
    pub snapshot: String,
    pub backup_id: String,
    #[serde(flatten)]
    pub stats: ScanStats,
    /// Extents written.
    pub extents_written: u64,
    /// Extents of the existing image reused (same context, crc32c and length).
    pub extents_reused: u64,
    /// Ciphertext bytes read from base backups.
    pub base_bytes: u64,
}

/// A rebuilt extent.
struct RExt {
    key: ExtentKey,
    id: u64,
    start: u64,
    /// Blocks written so far (unused for a reused extent).
    segs: Segments,
    reused: bool,
}

enum Target {
    /// Created when the manifest has been read.
    New {
        dest: PathBuf,
        tmp: Option<AtomicFile>,
    },
    Existing,
}

struct RestoreSink<'a> {
    img: Option<Image>,
    target: Target,
    opts: &'a RestoreOptions,
    bases: &'a BaseIndex,
    manifest: Option<Manifest>,
    snap: Option<Snapshot>,
    exts: HashMap<[u8; EXTENT_CTX_LEN], RExt>,
    existing: HashMap<ExtentKey, u64>,
    buf: Vec<u8>,
    report: RestoreReport,
    progress: &'a dyn Progress,
    time: i64,
}

fn member_err(m: &Member, why: String) -> Error {
    Error::corrupt(
        CorruptKind::BadMember("cannot be restored"),
        format!("backup member {:?}: {why}", m.path),
        Some(m.offset),
    )
}

impl RestoreSink<'_> {
    fn img(&mut self) -> Result<&mut Image> {
        self.img.as_mut().ok_or(Error::Internal("no image before the manifest"))
    }

    fn snap(&mut self) -> Result<&mut Snapshot> {
        self.snap.as_mut().ok_or(Error::Internal("no snapshot before the manifest"))
    }

    /// The rebuilt extent for `key`, allocated on first use.
    fn extent(&mut self, m: &Member, key: &ExtentKey) -> Result<u64> {
        if let Some(r) = self.exts.get(&key.ctx) {
            if r.key != *key {
                return Err(member_err(m, "two different extents share one extent context".into()));
            }
            return Ok(r.id);
        }
        if let Some(&id) = self.existing.get(key) {
            self.report.extents_reused += 1;
            self.exts.insert(
                key.ctx,
                RExt {
                    key: *key,
                    id,
                    start: 0,
                    segs: Segments::default(),
                    reused: true,
                },
            );
            return Ok(id);
        }
        let img = self.img()?;
        let start = img.alloc(u64::from(key.blocks))?;
        let id = img.record_extent(start, key.blocks, key.crc, key.context());
        self.report.extents_written += 1;
        self.exts.insert(
            key.ctx,
            RExt {
                key: *key,
                id,
                start,
                segs: Segments::default(),
                reused: false,
            },
        );
        Ok(id)
    }

    /// Writes the blocks of `data` (blocks `off..` of the extent) not yet written.
    fn put(&mut self, ctx: &[u8; EXTENT_CTX_LEN], off: u32, data: &[u8], crc: u32) -> Result<()> {
        let Some(r) = self.exts.get_mut(ctx) else {
            return Err(Error::Internal("data for an unknown extent"));
        };
        if r.reused {
            return Ok(());
        }
        let start = r.start;
        let runs = r.segs.add(off, data, crc);
        let img = self.img.as_mut().ok_or(Error::Internal("no image"))?;
        for (i, n) in runs {
            let s = i as usize * BLOCK_SIZE;
            img.write_blocks(start + u64::from(off + i), &data[s..s + n as usize * BLOCK_SIZE])?;
        }
        Ok(())
    }

    fn link(&mut self, m: &Member) -> Result<()> {
        let (parent, ino, name) = (m.parent, m.ino, m.name_ct.clone());
        let snap = self.snap()?;
        if let Some(i) = snap.inodes.get_mut(&ino) {
            i.nlink += 1;
        }
        match snap.inodes.get_mut(&parent) {
            Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) => {
                entries.push(DirEntry { name, ino });
                Ok(())
            }
            _ => Err(member_err(m, "parent is not a directory".into())),
        }
    }

    fn finish(&mut self) -> Result<()> {
        // Extents: zero the blocks no item brought, then the crc32c.
        let mut exts: Vec<&mut RExt> = self.exts.values_mut().filter(|r| !r.reused).collect();
        exts.sort_by_key(|r| r.id);
        let img = self.img.as_mut().ok_or(Error::Internal("no image"))?;
        for r in exts {
            let complete = r.segs.complete(r.key.blocks);
            for (s, n) in r.segs.gaps(r.key.blocks) {
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(256);
                    let zeros = vec![0u8; k as usize * BLOCK_SIZE];
                    img.write_blocks(r.start + u64::from(s + done), &zeros)?;
                    done += k;
                }
            }
            let crc = r.segs.crc(r.key.blocks);
            if complete && crc != r.key.crc {
                return Err(Error::corrupt(
                    CorruptKind::BadChecksum {
                        stored: r.key.crc,
                        computed: crc,
                    },
                    format!("restored extent {} (context {})", r.id, hex::encode(r.key.ctx)),
                    None,
                ));
            }
            img.set_extent_crc(r.id, crc);
        }
        let mut snap = self.snap.take().ok_or(Error::Internal("no snapshot"))?;
        for i in snap.inodes.values_mut() {
            if let Body::Dir { entries, .. } = &mut i.body {
                entries.sort_unstable();
            }
        }
        snap.next_ino = snap.inodes.keys().next_back().map_or(2, |k| k + 1);
        let name = snap.name.clone();
        img.snapshots_mut().push(snap);
        // Belt and braces: the keyless structural checks the image reader
        // will apply (the allocation map is rebuilt by the commit).
        let geo = Geometry {
            total_blocks: u64::MAX / 2,
            meta_start: 0,
            meta_blocks: 0,
        };
        if let Some(f) = check_metadata(img.meta(), geo)
            .into_iter()
            .find(|f| f.severity == Severity::Error && f.code != "E_ALLOC_MAP")
        {
            return Err(Error::corrupt(
                CorruptKind::Finding(f.code),
                format!("backup (the restored snapshot {name:?} would be inconsistent: {f})"),
                None,
            ));
        }
        Ok(())
    }
}

impl Sink for RestoreSink<'_> {
    fn manifest(&mut self, m: &Manifest) -> Result<()> {
        let name = self.opts.snapshot.clone().unwrap_or_else(|| m.snapshot.clone());
        if let Err(why) = crate::format::snapshot::check_name(&name) {
            return Err(Error::Invalid(format!("snapshot name {name:?}: {why}")));
        }
        if let Some(base) = &m.base_backup_id {
            if !self.bases.has_backup(base) && (!self.bases.is_empty() || matches!(self.target, Target::New { .. })) {
                let given: Vec<&str> = self.bases.manifests.iter().map(|b| b.backup_id.as_str()).collect();
                return Err(Error::Invalid(format!(
                    "this is an incremental backup of base backup {base}, which was not given: supply it and its own bases{}",
                    if given.is_empty() {
                        String::new()
                    } else {
                        format!(" (given: {})", given.join(", "))
                    }
                )));
            }
        }
        if let Target::New { dest, tmp } = &mut self.target {
            let (t, file) = AtomicFile::new(dest)?;
            let mut img = Image::create(file, t.path(), m.uuid(), 0)?;
            *tmp = Some(t);
            img.commit(self.time)?;
            self.img = Some(img);
        }
        let img = self.img()?;
        if img.meta().snapshot(&name).is_some() {
            return Err(Error::Invalid(format!(
                "the image already has a snapshot named {name:?}; choose another snapshot name"
            )));
        }
        self.snap = Some(Snapshot {
            name: name.clone(),
            policy: m.policy_id(),
            root: 1,
            next_ino: 2,
            created: m.snapshot_created,
            inodes: BTreeMap::new(),
        });
        self.report.snapshot = name;
        self.report.backup_id = m.backup_id.clone();
        self.manifest = Some(m.clone());
        Ok(())
    }

    fn member(&mut self, m: &Member) -> Result<()> {
        if let Kind::HardLink { .. } = m.kind {
            return self.link(m);
        }
        let body = match &m.kind {
            Kind::Dir { ctx } => Body::Dir {
                ctx: *ctx,
                entries: Vec::new(),
            },
            Kind::Symlink { ctx, blob } => Body::Symlink {
                ctx: *ctx,
                blob: blob.clone(),
            },
            Kind::Special => Body::Special,
            Kind::File { items } => {
                let mut map = Vec::with_capacity(items.len());
                for it in items {
                    let id = self.extent(m, &it.ext)?;
                    self.img()?.add_refs(id, 1)?;
                    map.push(MapEntry {
                        lblk: it.lblk,
                        blocks: it.count,
                        extent: id,
                        offset: it.off,
                    });
                }
                Body::File { map }
            }
            Kind::HardLink { .. } => return Ok(()),
        };
        let inode = Inode::new(m.ino, &m.meta, u32::from(m.ino == 1), m.size, body);
        self.snap()?.inodes.insert(m.ino, inode);
        if m.ino != 1 {
            self.link(m)?;
        }
        Ok(())
    }

    fn stored(&mut self, m: &Member, item: usize, blk: u32, data: &[u8], crc: u32, _at: u64) -> Result<()> {
        let Kind::File { items } = &m.kind else { return Ok(()) };
        let Some(it) = items.get(item) else { return Ok(()) };
        self.put(&it.ext.ctx, it.off + blk, data, crc)?;
        Ok(())
    }

    fn referenced(&mut self, m: &Member, item: usize, _earlier: bool) -> Result<()> {
        let Kind::File { items } = &m.kind else { return Ok(()) };
        let Some(it) = items.get(item).copied() else { return Ok(()) };
        let covered = self
            .exts
            .get(&it.ext.ctx)
            .is_some_and(|r| r.reused || r.segs.covers(it.off, it.count));
        if covered {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        let found = self.bases.read(&it.ext, it.off, it.count, &mut buf)?;
        if !found {
            let base = self.manifest.as_ref().and_then(|m| m.base_backup_id.clone()).unwrap_or_default();
            return Err(member_err(
                m,
                format!(
                    "extent blocks {}..{} of context {} are in a base backup that was not given (this backup's base is {}); supply the whole chain of bases",
                    it.off,
                    it.off + it.count,
                    hex::encode(it.ext.ctx),
                    if base.is_empty() { "none" } else { &base }
                ),
            ));
        }
        self.report.base_bytes += buf.len() as u64;
        let crc = crc32c::crc32c(&buf);
        let r = self.put(&it.ext.ctx, it.off, &buf, crc);
        self.buf = buf;
        r
    }

    fn member_done(&mut self, _m: &Member) -> Result<()> {
        self.progress.advance(1, 0);
        Ok(())
    }
}

/// Restores a backup read from `input` into `image`: a new image when it does
/// not exist, else a new snapshot of it.
pub fn restore_backup(input: &mut dyn Read, image: &Path, opts: &RestoreOptions, progress: &dyn Progress) -> Result<RestoreReport> {
    let bases = BaseIndex::load(&opts.bases)?;
    let time = crate::ops::create::now(Default::default());
    let exists = image.exists();
    let (img, target, orig_len) = if exists {
        let img = Image::open(image, Access::ReadWrite)?;
        let len = img.file().metadata().map_err(|e| Error::io("stat of the image", e))?.len();
        if let Some(n) = &opts.snapshot {
            if img.meta().snapshot(n).is_some() {
                return Err(Error::Invalid(format!(
                    "the image already has a snapshot named {n:?}; choose another snapshot name"
                )));
            }
        }
        (Some(img), Target::Existing, len)
    } else {
        (
            None,
            Target::New {
                dest: image.to_path_buf(),
                tmp: None,
            },
            0,
        )
    };
    let existing = img
        .as_ref()
        .map(|i| {
            i.meta()
                .extents
                .values()
                .map(|e| {
                    (
                        ExtentKey {
                            ctx: e.ctx.to_bytes(),
                            crc: e.crc,
                            blocks: e.blocks,
                        },
                        e.id,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sink = RestoreSink {
        img,
        target,
        opts,
        bases: &bases,
        manifest: None,
        snap: None,
        exts: HashMap::new(),
        existing,
        buf: Vec::new(),
        report: RestoreReport {
            image: image.to_path_buf(),
            new_image: !exists,
            ..Default::default()
        },
        progress,
        time,
    };
    let mut committing = false;
    let r = (|| -> Result<ScanStats> {
        progress.start("restore", opts.archive_bytes);
        let rep = scan(
            BufReader::with_capacity(1 << 20, crate::progress::ReadProgress::new(input, progress)),
            &mut sink,
        )?;
        sink.finish()?;
        committing = true;
        crate::progress::syncing(progress, || sink.img()?.commit(time))?;
        Ok(rep.stats)
    })();
    progress.finish();
    match r {
        Ok(stats) => {
            drop(sink.img.take());
            if let Target::New { tmp: Some(t), .. } = std::mem::replace(&mut sink.target, Target::Existing) {
                t.persist(false)?;
            }
            let mut report = sink.report;
            report.stats = stats;
            Ok(report)
        }
        Err(e) => {
            drop(sink.img.take());
            // A new image's temporary file is removed by AtomicFile's drop.
            if exists && !committing {
                if let Ok(f) = OpenOptions::new().write(true).open(image) {
                    if f.metadata().is_ok_and(|m| m.len() > orig_len) {
                        let _ = f.set_len(orig_len);
                    }
                }
            }
            Err(e)
        }
    }
}
