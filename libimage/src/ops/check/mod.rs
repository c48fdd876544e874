//! `fsck-crypt check`: keyless and keyed integrity checks of an image, and the
//! safe repairs behind `--repair`.
//!
//! The checker never stops at the first problem and never fails on bad bytes:
//! everything wrong with the image becomes a [`Finding`] in the [`Report`].
//! Only operational problems (the file cannot be opened or read, a key file is
//! unreadable, an unknown snapshot was asked for, the image uses a feature this
//! build does not know) are returned as `Err`.
//!
//! Phases, in order (a phase that cannot run because an earlier one failed is
//! skipped; what was found so far is reported):
//! 1. both superblock slots: magic, crc32c, generation, parity, uuid;
//! 2. the file's length against the superblock's `total_blocks`;
//! 3. the live metadata region: the crc32c of every block (each bad block is a
//!    finding), the stream crc32c, decoding;
//! 4. [`crate::format::validate::check_metadata`]: extents, allocation map, refcounts,
//!    contexts, name lengths, the directory graph, link counts;
//! 5. key coverage per snapshot; with keys: key match, names, symlinks
//!    (`keyed.rs`);
//! 6. with `--data`: the crc32c of every extent's ciphertext (`scrub.rs`);
//! 7. with `--repair`: the safe repairs in one commit, then a fresh check
//!    (`repair.rs`).

mod keyed;
mod repair;
mod scrub;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::engine::image::{load_metadata, newest, Keyring, MetaLoadError};
use crate::error::{Error, Result};
use crate::finding::{Code, Finding, Severity, Where};
use crate::format::inode::Body;
use crate::format::meta::Metadata;
use crate::format::metablock;
use crate::format::snapshot::Snapshot;
use crate::format::superblock::{Superblock, SLOTS};
use crate::format::validate::{check_metadata, Geometry, ParentMap};
use crate::progress::Progress;
use crate::BLOCK_SIZE;
use fscrypt::{nokey_name, NameCipher};

pub use repair::Repair;

/// Version of the JSON report document (`format_version`). Bumped on any
/// incompatible change to its shape.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// What the report says about data checked with a key, since AES-XTS has no
/// authentication tag.
pub const DATA_NOTE: &str = "AES-256-XTS carries no authentication tag: an extent counts as decrypting with a key when its \
context names that key's identifier and its ciphertext crc32c matches the extent record; a change that also rewrites \
the crc32c cannot be detected without a MAC";

/// Exit codes (fsck bitmask, util-linux `exitcodes.h`).
pub mod exit {
    pub const CLEAN: i32 = 0;
    pub const FIXED: i32 = 1;
    pub const UNCORRECTED: i32 = 4;
}

/// Options of a check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Restrict the per-snapshot keyed checks, key coverage and `--data`
    /// scrub to this snapshot. Image-wide checks (superblocks, metadata,
    /// extents, refcounts, every snapshot's tree) always run.
    pub snapshot: Option<String>,
    /// Recompute the crc32c of every extent's ciphertext.
    pub data: bool,
    /// Apply the safe repairs.
    pub repair: bool,
}

/// The result of a check: one versioned document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub format_version: u32,
    /// `fsck-crypt check` and the cryptimg version that wrote the report.
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub image: String,
    /// The generation checked (the newest valid superblock), if any.
    pub generation: Option<u64>,
    /// Every finding left (after `--repair`, the findings of the fresh check
    /// that follows the repair).
    pub findings: Vec<Finding>,
    /// What `--repair` did (empty without it).
    pub repairs: Vec<Repair>,
    /// Why findings `--repair` could in principle fix were left alone.
    pub not_repaired: Vec<String>,
    pub summary: Summary,
    /// 0 clean, 1 errors fixed, 4 errors left uncorrected, 5 both.
    pub exit_code: i32,
}

/// Counts and coverage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Per snapshot: the key identifiers it needs and what uses each.
    pub key_coverage: Vec<SnapshotKeys>,
    /// Per given key: how many contexts in the image name it.
    pub keys_given: Vec<KeyUse>,
    pub bytes_checked: BytesChecked,
    /// Present when `--data` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_note: Option<&'static str>,
}

/// The keys one snapshot needs.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotKeys {
    pub snapshot: String,
    /// The key new data is written under.
    pub policy: String,
    pub keys: Vec<KeyNeed>,
}

/// One key a snapshot needs.
#[derive(Clone, Debug, Serialize)]
pub struct KeyNeed {
    pub key_id: String,
    /// Whether the key was given (so its contexts were verified).
    pub given: bool,
    /// Whether it is the snapshot's policy key.
    pub policy: bool,
    pub directories: u64,
    pub symlinks: u64,
    pub extents: u64,
}

/// One given key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyUse {
    pub key_id: String,
    /// Contexts (directories, symlinks, extents, snapshot policies) naming it.
    pub contexts: u64,
}

/// How much was read and verified.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BytesChecked {
    /// Superblock slots and metadata region.
    pub metadata: u64,
    /// Extent ciphertext whose crc32c was recomputed (`--data`).
    pub data: u64,
    pub extents_scrubbed: u64,
    /// Extents whose key was given and whose crc32c matched (`--data`).
    pub extents_verified_with_key: u64,
}

impl Report {
    /// Findings of at least warning severity.
    pub fn problems(&self) -> usize {
        self.summary.errors + self.summary.warnings
    }

    /// The sorted, de-duplicated finding codes.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut c: Vec<&'static str> = self.findings.iter().map(|f| f.code.as_str()).collect();
        c.sort_unstable();
        c.dedup();
        c
    }
}

/// Checks the image at `path` with `keys` (possibly none).
///
/// Exit code policy: any finding of warning or error severity left makes
/// [`exit::UNCORRECTED`] (a damaged redundant superblock slot or a key that
/// matches nothing is not "clean"); info findings never do. A successful
/// `--repair` adds [`exit::FIXED`].
pub fn check(path: &Path, keys: &Keyring, opts: &CheckOptions, progress: &dyn Progress) -> Result<Report> {
    let first = run(path, keys, opts, progress)?;
    if !opts.repair {
        return Ok(first.report);
    }
    let outcome = repair::repair(path, keys, &first)?;
    if outcome.repairs.is_empty() {
        let mut r = first.report;
        r.not_repaired = outcome.not_repaired;
        return Ok(r);
    }
    let mut second = run(path, keys, opts, progress)?.report;
    second.repairs = outcome.repairs;
    second.not_repaired = outcome.not_repaired;
    second.exit_code |= exit::FIXED;
    Ok(second)
}

/// A finished check with what the repair step needs.
pub(crate) struct Checked {
    pub report: Report,
    /// The generation of the metadata checked, when it decoded.
    pub loaded: Option<u64>,
    /// The slot that should be rewritten (damaged or stale).
    pub stale_slot: Option<u64>,
}

/// The little-endian u64 at `off` of `b`, if it is long enough.
fn raw_u64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .and_then(|x| <[u8; 8]>::try_from(x).ok())
        .map(u64::from_le_bytes)
}

fn io_or(e: Error) -> std::result::Result<Error, Error> {
    match e {
        Error::Io { .. } | Error::Unsupported(_) => Err(e),
        other => Ok(other),
    }
}

fn run(path: &Path, keys: &Keyring, opts: &CheckOptions, progress: &dyn Progress) -> Result<Checked> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening image {}", path.display()), e))?;
    let md = file.metadata().map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
    if md.is_dir() {
        return Err(Error::Invalid(format!("{} is a directory, not an image", path.display())));
    }
    let flen = md.len();
    let mut c = Checker {
        file: &file,
        flen,
        keys,
        opts,
        findings: Vec::new(),
        bytes: BytesChecked::default(),
        stale_slot: None,
    };
    let mut report = Report {
        format_version: REPORT_FORMAT_VERSION,
        tool: "fsck-crypt check",
        tool_version: env!("CARGO_PKG_VERSION"),
        image: path.display().to_string(),
        generation: None,
        findings: Vec::new(),
        repairs: Vec::new(),
        not_repaired: Vec::new(),
        summary: Summary::default(),
        exit_code: 0,
    };
    let mut loaded = None;
    progress.start("check metadata", None);
    if let Some(sb) = c.superblocks()? {
        report.generation = Some(sb.generation);
        if let Some(meta) = c.metadata(&sb)? {
            loaded = Some(sb.generation);
            let r = c.structure(&meta, &sb, &mut report.summary, progress);
            // Freeing a large decoded metadata takes a while (hundreds of
            // thousands of allocations); do it off the caller's path.
            if meta.extents.len() + meta.snapshots.iter().map(|s| s.inodes.len()).sum::<usize>() > 50_000 {
                std::thread::spawn(move || drop(meta));
            }
            r?;
        }
    }
    progress.finish();
    let Checker {
        findings,
        bytes,
        stale_slot,
        ..
    } = c;
    report.findings = findings;
    report.summary.bytes_checked = bytes;
    for f in &report.findings {
        match f.severity {
            Severity::Error => report.summary.errors += 1,
            Severity::Warning => report.summary.warnings += 1,
            Severity::Info => report.summary.infos += 1,
        }
    }
    if opts.data && loaded.is_some() {
        report.summary.data_note = Some(DATA_NOTE);
    }
    report.exit_code = if report.problems() > 0 { exit::UNCORRECTED } else { exit::CLEAN };
    Ok(Checked {
        report,
        loaded,
        stale_slot,
    })
}

struct Checker<'a> {
    file: &'a File,
    flen: u64,
    keys: &'a Keyring,
    opts: &'a CheckOptions,
    findings: Vec<Finding>,
    bytes: BytesChecked,
    stale_slot: Option<u64>,
}

const SB_HINT: &str = "a repair rewrites this slot with a fresh commit";

impl Checker<'_> {
    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// Phase 1 and 2. Returns the superblock to check, if any is valid.
    fn superblocks(&mut self) -> Result<Option<Superblock>> {
        let mut raw: [Option<Vec<u8>>; 2] = [None, None];
        let mut parsed: Vec<Result<Superblock>> = Vec::with_capacity(2);
        for slot in SLOTS {
            let off = slot * BLOCK_SIZE as u64;
            if self.flen < off + BLOCK_SIZE as u64 {
                parsed.push(Err(Error::corrupt(
                    crate::error::CorruptKind::Truncated {
                        needed: off + BLOCK_SIZE as u64,
                        available: self.flen,
                    },
                    format!("superblock slot {slot}"),
                    Some(off),
                )));
                continue;
            }
            let mut b = vec![0u8; BLOCK_SIZE];
            self.file
                .read_exact_at(&mut b, off)
                .map_err(|e| Error::io(format!("reading superblock slot {slot}"), e))?;
            self.bytes.metadata += BLOCK_SIZE as u64;
            let r = Superblock::from_bytes(&b, slot);
            if let Err(Error::Unsupported(_)) = &r {
                return r.map(Some);
            }
            parsed.push(r);
            raw[slot as usize] = Some(b);
        }
        let slots: [Result<Superblock>; 2] = match <[Result<Superblock>; 2]>::try_from(parsed) {
            Ok(s) => s,
            Err(_) => return Err(Error::Internal("two superblock slots expected")),
        };
        let sb = match newest(&slots) {
            Ok(sb) => sb,
            Err(e) => {
                let e = io_or(e)?;
                self.push(
                    Finding::new(
                        Code::NoSuperblock,
                        format!("no valid superblock: {e}"),
                        "this is not a cryptimg image, or both superblocks are destroyed; restore from backup",
                    )
                    .block(0),
                );
                return Ok(None);
            }
        };
        // The slot `newest` picked (it prefers slot 0 on a tie).
        let live: u64 = match (&slots[0], &slots[1]) {
            (Ok(a), Ok(b)) if a.generation < b.generation => 1,
            (Ok(_), _) => 0,
            _ => 1,
        };
        let other = 1 - live;
        match &slots[other as usize] {
            Err(e) => {
                // The raw generation field, when the magic survives, tells
                // whether the damaged slot claimed to be older or newer.
                let claim = raw[other as usize].as_deref().and_then(|b| raw_u64(b, 16));
                let newer = self.newer_evidence(raw[other as usize].as_deref(), sb.generation)?;
                if let Some(g) = newer {
                    // Rewriting it would destroy the only way to the newer
                    // commit, so this is left to a person.
                    self.push(
                        Finding::new(
                            Code::SuperblockNewer,
                            format!(
                                "superblock slot {other} is invalid ({e}) but belongs to generation {g}, newer than generation {} \
                                 in use from slot {live}: a commit was interrupted while writing it, or it was damaged \
                                 later and that commit's changes are not visible",
                                sb.generation
                            ),
                            "if the last write to the image reported success, restore from backup; otherwise the image \
                             is consistent at the older generation and the next write replaces this slot",
                        )
                        .block(other),
                    );
                    return self.geometry(sb).map(Some);
                }
                let what = match claim {
                    Some(g) if g.wrapping_add(1) == sb.generation => format!("; it held the previous generation {g}"),
                    _ => String::new(),
                };
                if self.flen >= (other + 1) * BLOCK_SIZE as u64 {
                    self.stale_slot = Some(other);
                }
                self.push(
                    Finding::new(
                        Code::SuperblockSlot,
                        format!(
                            "superblock slot {other} is invalid ({e}); the image is read from slot {live} (generation {}){what}",
                            sb.generation
                        ),
                        SB_HINT,
                    )
                    .block(other),
                );
            }
            Ok(o) => {
                let why = if o.uuid != sb.uuid {
                    Some("belongs to a different image (uuid differs)".to_string())
                } else if o.generation == sb.generation {
                    Some(format!("holds the same generation {} as slot {live}", o.generation))
                } else {
                    None
                };
                if let Some(why) = why {
                    self.stale_slot = Some(other);
                    self.push(Finding::new(Code::SuperblockSlot, format!("superblock slot {other} {why}"), SB_HINT).block(other));
                }
            }
        }
        for slot in SLOTS {
            if let Ok(s) = &slots[slot as usize] {
                if s.generation % 2 != slot {
                    self.stale_slot = self.stale_slot.or(Some(1 - live));
                    self.push(
                        Finding::new(
                            Code::SuperblockSlot,
                            format!(
                                "superblock slot {slot} holds generation {}, which belongs in slot {}",
                                s.generation,
                                s.generation % 2
                            ),
                            SB_HINT,
                        )
                        .block(slot),
                    );
                }
            }
        }
        self.geometry(sb).map(Some)
    }

    /// Whether a damaged slot was newer than generation `g`: its generation
    /// field says `g + 1`, or (when that field is itself damaged) the metadata
    /// block its `meta_start` field names is intact and carries a generation
    /// above `g`. A single damaged byte cannot hide both. Returns that
    /// generation.
    fn newer_evidence(&mut self, raw: Option<&[u8]>, g: u64) -> Result<Option<u64>> {
        let Some(raw) = raw.filter(|b| b.starts_with(&crate::format::superblock::MAGIC)) else {
            return Ok(None);
        };
        match raw_u64(raw, 16) {
            Some(x) if x == g.wrapping_add(1) => return Ok(Some(x)),
            // Intact and older: its old region may since hold anything.
            Some(x) if x.wrapping_add(1) == g => return Ok(None),
            _ => {}
        }
        let Some(start) = raw_u64(raw, 80) else { return Ok(None) };
        if start < 2 || start >= self.flen / BLOCK_SIZE as u64 {
            return Ok(None);
        }
        let mut b = vec![0u8; BLOCK_SIZE];
        self.file
            .read_exact_at(&mut b, start * BLOCK_SIZE as u64)
            .map_err(|e| Error::io(format!("reading block {start}"), e))?;
        let Some(bg) = raw_u64(&b, 8) else { return Ok(None) };
        Ok((bg > g && metablock::check_block(&b, start, bg).is_ok()).then_some(bg))
    }

    /// Phase 2: the file's length against the superblock.
    fn geometry(&mut self, sb: Superblock) -> Result<Superblock> {
        let need = sb.total_blocks.saturating_mul(BLOCK_SIZE as u64);
        if self.flen < need {
            self.push(Finding::new(
                Code::Truncated,
                format!(
                    "the image file is {} bytes but the superblock records {} blocks ({need} bytes): {} bytes are missing",
                    self.flen,
                    sb.total_blocks,
                    need - self.flen
                ),
                "the image was truncated (interrupted copy, full disk); copy it again or restore from backup",
            ));
        } else if self.flen > need {
            self.push(Finding::new(
                Code::TrailingBytes,
                format!(
                    "the file has {} bytes past the image's last block {} (left by an interrupted write; harmless)",
                    self.flen - need,
                    sb.total_blocks
                ),
                "nothing to do; the next write reuses them",
            ));
        }
        Ok(sb)
    }

    /// Phase 3: the live metadata region.
    fn metadata(&mut self, sb: &Superblock) -> Result<Option<Metadata>> {
        let end = sb.meta_start.saturating_add(sb.meta_blocks).saturating_mul(BLOCK_SIZE as u64);
        if end > self.flen {
            self.push(
                Finding::new(
                    Code::Truncated,
                    format!(
                        "the metadata region (blocks {}..{}) lies past the end of the {}-byte file",
                        sb.meta_start,
                        sb.meta_start.saturating_add(sb.meta_blocks),
                        self.flen
                    ),
                    "the image was truncated; restore from backup",
                )
                .block(sb.meta_start),
            );
            return Ok(None);
        }
        self.bytes.metadata += sb.meta_blocks * BLOCK_SIZE as u64;
        let (code, e, hint) = match load_metadata(self.file, sb) {
            Ok(m) => return Ok(Some(m)),
            Err(MetaLoadError::Read(e)) => return Err(e),
            Err(MetaLoadError::Blocks(errs)) => {
                for e in errs {
                    let block = match &e {
                        Error::Corrupt { at, .. } => at.offset.map(|o| o / BLOCK_SIZE as u64),
                        _ => None,
                    };
                    let mut f = Finding::new(
                        Code::MetaBlock,
                        format!("{e}"),
                        "the metadata is damaged; restore from backup (the previous generation may still be readable)",
                    );
                    if let Some(b) = block {
                        f = f.block(b);
                    }
                    self.push(f);
                }
                return Ok(None);
            }
            Err(MetaLoadError::StreamCrc(e)) => (Code::MetaCrc, e, "the metadata is damaged; restore from backup"),
            Err(MetaLoadError::Decode(e)) => (
                Code::MetaDecode,
                io_or(e)?,
                "the metadata was written by a faulty program; restore from backup",
            ),
        };
        self.push(Finding::new(code, format!("{e}"), hint).block(sb.meta_start));
        Ok(None)
    }

    /// Phases 4 to 6 on decoded metadata.
    fn structure(&mut self, meta: &Metadata, sb: &Superblock, summary: &mut Summary, progress: &dyn Progress) -> Result<()> {
        let geo = Geometry {
            total_blocks: sb.total_blocks,
            meta_start: sb.meta_start,
            meta_blocks: sb.meta_blocks,
        };
        let selected: Vec<&Snapshot> = match &self.opts.snapshot {
            Some(n) => vec![&meta.snapshots[meta.snapshot_index(n)?]],
            None => meta.snapshots.iter().collect(),
        };
        // The structural checks and the key checks only read the metadata:
        // run them side by side.
        let keys = self.keys;
        let mut keyed_findings = Vec::new();
        let (structural, keyed) = std::thread::scope(|s| {
            let h = s.spawn(|| keyed::check(meta, &selected, keys, &mut keyed_findings));
            let structural = check_metadata(meta, geo);
            (structural, h.join())
        });
        let (coverage, uses) = keyed.map_err(|_| Error::Internal("the key check panicked"))?;
        self.findings.extend(structural);
        let data_end_block = self.flen / BLOCK_SIZE as u64;
        if self.flen < sb.total_blocks.saturating_mul(BLOCK_SIZE as u64) {
            for e in meta.extents.values() {
                if e.end() > data_end_block && e.end() <= sb.total_blocks {
                    self.push(
                        Finding::new(
                            Code::Truncated,
                            format!("extent blocks {}..{} lie past the end of the truncated file", e.start, e.end()),
                            "the image was truncated; restore the file from backup",
                        )
                        .extent(e.id)
                        .block(e.start),
                    );
                }
            }
        }
        self.findings.extend(keyed_findings);
        summary.key_coverage = coverage;
        summary.keys_given = uses;
        if self.opts.data {
            scrub::scrub(
                self.file,
                self.flen,
                meta,
                &selected,
                sb,
                self.keys,
                &mut self.findings,
                &mut self.bytes,
                progress,
            )?;
        }
        fill_paths(meta, self.keys, &mut self.findings);
        Ok(())
    }
}

/// A displayable name: the decrypted name when possible, else the no-key name.
fn show_name(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// Resolves a directory's name cipher with the given keys (cached).
fn dir_cipher<'c>(snap: &Snapshot, dir: u64, keys: &Keyring, cache: &'c mut HashMap<u64, Option<NameCipher>>) -> Option<&'c NameCipher> {
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
fn fill_paths(meta: &Metadata, keys: &Keyring, findings: &mut [Finding]) {
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
