//! Phases 1 and 2 of a check: both superblock slots (magic, crc32c,
//! generation, parity, uuid; whether a damaged slot was a newer commit) and
//! the file's length against the superblock.

use std::os::unix::fs::FileExt;

use super::{io_or, Checker};
use crate::engine::image::newest;
use crate::error::{CorruptKind, Error, Result};
use crate::finding::{Code, Finding};
use crate::format::metablock;
use crate::format::superblock::{Superblock, SLOTS};
use crate::BLOCK_SIZE;

const SB_HINT: &str = "a repair rewrites this slot with a fresh commit";

impl Checker<'_> {
    /// Phase 1 and 2. Returns the superblock to check, if any is valid.
    pub(super) fn superblocks(&mut self) -> Result<Option<Superblock>> {
        let mut raw: [Option<Vec<u8>>; 2] = [None, None];
        let mut parsed: Vec<Result<Superblock>> = Vec::with_capacity(2);
        for slot in SLOTS {
            let off = slot * BLOCK_SIZE as u64;
            if self.flen < off + BLOCK_SIZE as u64 {
                parsed.push(Err(Error::corrupt(
                    CorruptKind::Truncated {
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
                let claim = raw[other as usize].as_deref().and_then(Superblock::claimed).map(|c| c.generation);
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
        let Some(claimed) = raw.and_then(Superblock::claimed) else {
            return Ok(None);
        };
        match claimed.generation {
            x if x == g.wrapping_add(1) => return Ok(Some(x)),
            // Intact and older: its old region may since hold anything.
            x if x.wrapping_add(1) == g => return Ok(None),
            _ => {}
        }
        let start = claimed.meta_start;
        if start < 2 || start >= self.flen / BLOCK_SIZE as u64 {
            return Ok(None);
        }
        let mut b = vec![0u8; BLOCK_SIZE];
        self.file
            .read_exact_at(&mut b, start * BLOCK_SIZE as u64)
            .map_err(|e| Error::io(format!("reading block {start}"), e))?;
        Ok(metablock::check_block_any_generation(&b, start).filter(|&bg| bg > g))
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
}
