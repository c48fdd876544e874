//! Giving space back to the host file system after a commit: blocks that are
//! free in both the new and the previous committed generation are punched out
//! of the image file (`fallocate(FALLOC_FL_PUNCH_HOLE)`), and free space at the
//! end of a growable image is cut off the file, so `du` drops at once.
//!
//! FORMAT.md §8: blocks freed by a commit (the old metadata region, extents
//! whose refcount reached zero) still belong to the previous generation, which
//! a crash or a damaged newest slot may fall back to. A commit that freed
//! extents is therefore followed by a settling commit (the same metadata as
//! the next generation, into the other slot); once it is durable, neither
//! committed generation uses the freed blocks and they are punched at once
//! ([`Reclaim::punch_now`]). What is left (the first commit's metadata region,
//! or everything when there was no room to settle) is punched at the *next*
//! commit, and only the parts still free then (never a block allocated
//! meanwhile). Punched blocks read as zeros; nothing the format references is
//! ever punched.
//!
//! Reclaiming is best effort: the commit is already durable when it runs, so a
//! file system without hole punching (`EOPNOTSUPP`) or a failed truncation
//! leaves a valid image that is just larger than it could be. The last such
//! error is kept for callers that care ([`Reclaim::last_error`]).

use std::fs::File;

use crate::engine::alloc::FreeMap;
use crate::BLOCK_SIZE;

/// What the next commit may punch.
#[derive(Debug)]
pub struct Reclaim {
    /// Punch every free range at the next commit (set when an image is
    /// opened: earlier sessions' last releases were never punched).
    punch_all: bool,
    /// Ranges the last commit released (used by the generation before it).
    released: Vec<(u64, u64)>,
    /// Hole punching is unsupported here; stop trying.
    unsupported: bool,
    /// Give nothing back at the next commit ([`Reclaim::at_older_generation`]).
    skip_next: bool,
    /// Punch nothing for now; the next commit after this is cleared punches
    /// every free range (see [`Reclaim::set_deferred`]).
    deferred: bool,
    /// The last reclaim error, described.
    last_error: Option<String>,
}

impl Default for Reclaim {
    fn default() -> Self {
        Reclaim {
            punch_all: true,
            released: Vec::new(),
            unsupported: false,
            skip_next: false,
            deferred: false,
            last_error: None,
        }
    }
}

impl Reclaim {
    /// For an image opened at an older generation (a rollback): the newer
    /// one, whose blocks are free in the opened state, is the previous
    /// generation of the first commit, so that commit neither punches nor
    /// truncates anything (the damaged generation stays on disk for salvage
    /// until its blocks are reused).
    pub fn at_older_generation() -> Self {
        Reclaim {
            punch_all: false,
            skip_next: true,
            ..Reclaim::default()
        }
    }

    /// Called by the commit for each range it releases (after the flip).
    pub fn note_released(&mut self, start: u64, len: u64) {
        self.released.push((start, len));
    }

    /// Defers punching while `on`: for `compact`, whose moves refill most
    /// free ranges and whose final truncation drops the rest, punching each
    /// one first (a journaled `fallocate` per range) would only cost time.
    /// The first commit after deferring ends punches every free range.
    pub fn set_deferred(&mut self, on: bool) {
        self.deferred = on;
    }

    /// Whether a commit that freed extents should settle (FORMAT.md §8):
    /// not while punching is deferred or unsupported (it would give nothing
    /// back), nor for the first commit of a rollback, whose previous
    /// generation is the damaged one kept for salvage.
    pub fn may_settle(&self) -> bool {
        !self.deferred && !self.unsupported && !self.skip_next
    }

    /// Punches `ranges` now: the caller guarantees that neither committed
    /// generation references them and that nothing was allocated in them.
    pub fn punch_now(&mut self, file: &File, ranges: &[(u64, u64)]) {
        self.punch(file, coalesce(ranges.to_vec()));
    }

    /// The last error hole punching or truncation met, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Runs right after a superblock flip, before the commit's own releases
    /// enter `free`: every block in `free` is then free in both the new
    /// generation and the one before it. Cuts the file to `total` blocks when
    /// it is longer and punches what became safe since the last commit.
    pub fn after_commit(&mut self, file: &File, free: &FreeMap) {
        if std::mem::take(&mut self.skip_next) {
            self.released.clear();
            return;
        }
        let total_bytes = free.total.saturating_mul(BLOCK_SIZE as u64);
        match file.metadata() {
            Ok(m) if m.len() > total_bytes => {
                if let Err(e) = file.set_len(total_bytes) {
                    self.last_error = Some(format!("cutting the image file to {total_bytes} bytes: {e}"));
                }
            }
            Ok(_) => {}
            Err(e) => self.last_error = Some(format!("stat of the image: {e}")),
        }
        if self.deferred {
            self.punch_all = true;
            self.released.clear();
            return;
        }
        let ranges: Vec<(u64, u64)> = if std::mem::take(&mut self.punch_all) {
            free.ranges().collect()
        } else {
            coalesce(self.released.iter().flat_map(|&(s, l)| free.free_parts(s, l)).collect())
        };
        self.released.clear();
        self.punch(file, ranges);
    }

    fn punch(&mut self, file: &File, ranges: impl IntoIterator<Item = (u64, u64)>) {
        if self.unsupported {
            return;
        }
        for (s, l) in ranges {
            let (off, len) = (s * BLOCK_SIZE as u64, l * BLOCK_SIZE as u64);
            if let Err(e) = crate::sys::punch_hole(file, off, len) {
                if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
                    self.unsupported = true;
                }
                self.last_error = Some(format!("punching blocks {s}..{} out of the image file: {e}", s + l));
                return;
            }
        }
    }
}

/// Sorts ranges and merges those that touch or overlap: one `fallocate` per
/// run instead of one per extent (a deleted snapshot of 78,000 files freed
/// that many adjacent extents; punched one by one they took 10 s on ext4).
fn coalesce(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, l) in ranges {
        match out.last_mut() {
            Some((ps, pl)) if s <= *ps + *pl => *pl = (*pl).max(s + l - *ps),
            _ => out.push((s, l)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_merges_touching_and_overlapping_ranges() {
        assert_eq!(
            coalesce(vec![(10, 2), (2, 3), (5, 5), (20, 1), (12, 1), (3, 1)]),
            vec![(2, 11), (20, 1)]
        );
        assert_eq!(coalesce(vec![]), vec![]);
        assert_eq!(coalesce(vec![(4, 10), (5, 2)]), vec![(4, 10)]);
    }
}
