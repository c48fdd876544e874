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
//! 1. both superblock slots: magic, crc32c, generation, parity, uuid (`slots.rs`);
//! 2. the file's length against the superblock's `total_blocks` (`slots.rs`);
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
mod paths;
mod repair;
mod report;
mod rollback;
mod scrub;
mod slots;

use crate::engine::lock::LockMode;
use std::fs::File;
use std::path::Path;

use crate::engine::image::{load_metadata, Keyring, MetaLoadError};
use crate::error::{Error, Result};
use crate::finding::{Code, Finding, Severity};
use crate::format::meta::Metadata;
use crate::format::snapshot::Snapshot;
use crate::format::superblock::Superblock;
use crate::format::validate::{check_metadata, Geometry};
use crate::progress::Progress;
use crate::BLOCK_SIZE;

pub(crate) use paths::{at_inode, dir_cipher, render_path, show_name};
pub use repair::Repair;
pub use report::{BytesChecked, KeyNeed, KeyUse, Report, SnapshotKeys, Summary, DATA_NOTE, REPORT_FORMAT_VERSION};

/// The exit codes (one table for every tool: `crate::exit`).
pub use crate::exit;

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

/// Checks the image at `path` with `keys` (possibly none).
///
/// Exit code policy: any finding of warning or error severity left makes
/// [`exit::UNCORRECTED`] (a damaged redundant superblock slot or a key that
/// matches nothing is not "clean"); info findings never do. A successful
/// `--repair` adds [`exit::FIXED`].
pub fn check(path: &Path, keys: &Keyring, opts: &CheckOptions, progress: &dyn Progress) -> Result<Report> {
    // The whole check, and a repair with it, under one lock (engine::lock).
    let mode = if opts.repair { LockMode::Exclusive } else { LockMode::Shared };
    let _lock = crate::engine::lock::lock_path(path, mode)?;
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

pub(super) fn io_or(e: Error) -> std::result::Result<Error, Error> {
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
    report.exit_code = exit::for_findings(&report.findings);
    Ok(Checked {
        report,
        loaded,
        stale_slot,
    })
}

/// The state of one check run, shared by the phases (`slots.rs` holds 1-2).
struct Checker<'a> {
    file: &'a File,
    flen: u64,
    keys: &'a Keyring,
    opts: &'a CheckOptions,
    findings: Vec<Finding>,
    bytes: BytesChecked,
    stale_slot: Option<u64>,
}

const ROLLBACK_HINT: &str = "the newest metadata is damaged; `fsck-crypt check --repair` rolls back to the previous \
generation if every block of it is intact (losing the last commit), otherwise restore from backup";

impl Checker<'_> {
    fn push(&mut self, f: Finding) {
        self.findings.push(f);
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
                    let mut f = Finding::new(Code::MetaBlock, format!("{e}"), ROLLBACK_HINT);
                    if let Some(b) = block {
                        f = f.block(b);
                    }
                    self.push(f);
                }
                return Ok(None);
            }
            Err(MetaLoadError::StreamCrc(e)) => (Code::MetaCrc, e, ROLLBACK_HINT),
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
        paths::fill_paths(meta, self.keys, &mut self.findings);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::engine::image::{Access, Image};
    use crate::error::{CorruptKind, Error};
    use crate::finding::Code;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fsck").join(name)
    }

    /// `Image::open` refuses metadata with an error finding as a typed
    /// corruption carrying the finding's code, the same code the checker
    /// reports first.
    #[test]
    fn open_refuses_with_the_finding_code() {
        for (img, code) in [
            ("overlap.img", Code::ExtentOverlap),
            ("cycle.img", Code::DirCycle),
            ("refcount.img", Code::Refcount),
        ] {
            let e = Image::open(&fixture(img), Access::ReadOnly)
                .err()
                .unwrap_or_else(|| panic!("{img} opened"));
            match &e {
                Error::Corrupt {
                    kind: CorruptKind::Finding(c),
                    ..
                } => assert_eq!(*c, code, "{img}: {e}"),
                other => panic!("{img}: not a finding error: {other}"),
            }
            assert!(e.is_corruption());
            assert!(!e.to_string().contains("fsck-crypt"), "{e}");
        }
        assert!(Image::open(&fixture("clean.img"), Access::ReadOnly).is_ok());
    }
}
