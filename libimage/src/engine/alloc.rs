//! In-memory free-space map of an open image.
//!
//! Free space is not stored on disk: it is everything in `[2, total_blocks)`
//! that is neither in the allocation map nor in the current metadata region.
//! Blocks freed by an operation only become reusable after its commit, so the
//! previous committed state is never overwritten (copy-on-write).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Free ranges plus the growth policy.
#[derive(Debug, Clone)]
pub struct FreeMap {
    /// start → length of each free range; ranges never touch.
    free: BTreeMap<u64, u64>,
    /// Current image length in blocks.
    pub total: u64,
    /// Fixed size in blocks, or 0 to grow as needed.
    pub max: u64,
}

impl FreeMap {
    /// Builds the free map of an image from its used ranges (any order, may
    /// touch; must not overlap — validated metadata guarantees that).
    pub fn from_used(total: u64, max: u64, mut used: Vec<(u64, u64)>) -> FreeMap {
        used.sort_unstable();
        let mut free = BTreeMap::new();
        let mut cur = 2u64;
        for (s, l) in used {
            // Damaged metadata (opened unchecked) may list ranges past the end.
            let s = s.min(total);
            if s > cur {
                free.insert(cur, s - cur);
            }
            cur = cur.max(s.saturating_add(l));
        }
        if cur < total {
            free.insert(cur, total - cur);
        }
        FreeMap { free, total, max }
    }

    /// Number of free blocks, counting room to grow up to `max` when fixed.
    pub fn free_blocks(&self) -> u64 {
        let inside: u64 = self.free.values().sum();
        inside + self.max.saturating_sub(self.total)
    }

    /// Allocates `n` contiguous blocks: first fit, else at the end of the
    /// image (growing it). Deterministic for a given history.
    pub fn alloc(&mut self, n: u64) -> Result<u64> {
        let fit = self.free.iter().find(|(_, &l)| l >= n).map(|(&s, &l)| (s, l));
        if let Some((s, l)) = fit {
            self.free.remove(&s);
            if l > n {
                self.free.insert(s + n, l - n);
            }
            return Ok(s);
        }
        // Grow: reuse a trailing free range if there is one.
        let start = match self.free.last_key_value() {
            Some((&s, &l)) if s + l == self.total => s,
            _ => self.total,
        };
        let new_total = start.saturating_add(n);
        if new_total > crate::MAX_BLOCKS || (self.max != 0 && new_total > self.max) {
            return Err(Error::NoSpace {
                needed_blocks: n,
                free_blocks: self.free_blocks(),
            });
        }
        self.free.remove(&start);
        self.total = new_total;
        Ok(start)
    }

    /// The free ranges inside the image, as `(start, length)`, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free.iter().map(|(&s, &l)| (s, l))
    }

    /// The parts of `[start, start + len)` that are free, ascending.
    pub fn free_parts(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let end = start.saturating_add(len);
        let first = self.free.range(..=start).next_back().map_or(start, |(&s, _)| s);
        self.free
            .range(first..end)
            .filter_map(|(&s, &l)| {
                let (a, b) = (s.max(start), s.saturating_add(l).min(end));
                (a < b).then(|| (a, b - a))
            })
            .collect()
    }

    /// Allocates `n` contiguous blocks that lie entirely below `limit`
    /// (first fit), never growing the image; `None` when no free range fits.
    /// For compaction, which moves data only downwards.
    pub fn alloc_below(&mut self, n: u64, limit: u64) -> Option<u64> {
        let (s, l) = self
            .free
            .range(..limit)
            .find(|(&s, &l)| l >= n && s.saturating_add(n) <= limit)
            .map(|(&s, &l)| (s, l))?;
        self.free.remove(&s);
        if l > n {
            self.free.insert(s + n, l - n);
        }
        Some(s)
    }

    /// Drops the trailing free range (the free space at the end of a
    /// growable image), so the next commit records a shorter image. Never
    /// cuts a used block, and does nothing when the size is fixed. Returns the
    /// length in blocks now.
    pub fn trim_tail(&mut self) -> u64 {
        if self.max != 0 {
            return self.total;
        }
        if let Some((&s, &l)) = self.free.last_key_value() {
            if s + l == self.total {
                self.free.remove(&s);
                self.total = s.max(2);
            }
        }
        self.total
    }

    /// Returns a range to the free map, merging neighbours.
    pub fn release(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let (mut s, mut l) = (start, len);
        if let Some((&ps, &pl)) = self.free.range(..s).next_back() {
            if ps + pl == s {
                self.free.remove(&ps);
                s = ps;
                l += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(s + l)) {
            self.free.remove(&(s + l));
            l += nl;
        }
        self.free.insert(s, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_grow_release() {
        let mut f = FreeMap::from_used(20, 0, vec![(2, 3), (8, 2)]);
        assert_eq!(f.free_blocks(), 3 + 10);
        assert_eq!(f.alloc(3).unwrap(), 5);
        assert_eq!(f.alloc(10).unwrap(), 10);
        assert_eq!(f.alloc(4).unwrap(), 20); // grows
        assert_eq!(f.total, 24);
        f.release(5, 3);
        f.release(2, 3);
        assert_eq!(f.alloc(6).unwrap(), 2);
    }

    #[test]
    fn below_parts_and_tail() {
        let mut f = FreeMap::from_used(30, 0, vec![(2, 3), (8, 2), (20, 4)]);
        assert_eq!(f.free_parts(0, 40), vec![(5, 3), (10, 10), (24, 6)]);
        assert_eq!(f.free_parts(6, 6), vec![(6, 2), (10, 2)]);
        assert_eq!(f.alloc_below(4, 20), Some(10));
        assert_eq!(f.alloc_below(3, 8), Some(5));
        assert_eq!(f.alloc_below(7, 20), None);
        assert_eq!(f.trim_tail(), 24);
        assert_eq!(f.alloc_below(1, 100), Some(14));
        assert_eq!(f.total, 24);
        let mut fixed = FreeMap::from_used(10, 10, vec![]);
        assert_eq!(fixed.trim_tail(), 10);
    }

    #[test]
    fn fixed_size_runs_out_cleanly() {
        let mut f = FreeMap::from_used(10, 10, vec![]);
        assert_eq!(f.alloc(8).unwrap(), 2);
        assert!(matches!(f.alloc(1), Err(Error::NoSpace { .. })));
    }
}
