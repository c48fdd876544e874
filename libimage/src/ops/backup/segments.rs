//! Which blocks of an extent are present, with the crc32c of each run, so the
//! crc32c of the whole extent is known without reading it back.

use std::collections::BTreeMap;

use crate::engine::crc::{combine_blocks, zeros};
use crate::BLOCK_SIZE;

/// Disjoint, non-touching runs of present blocks: start → (count, crc32c).
#[derive(Clone, Debug, Default)]
pub struct Segments {
    runs: BTreeMap<u32, (u32, u32)>,
}

/// crc32c of `n` zero blocks.
pub fn zero_crc(n: u32) -> u32 {
    zeros(u64::from(n) * BLOCK_SIZE as u64)
}

impl Segments {
    /// True when blocks `off..off + count` are all present.
    pub fn covers(&self, off: u32, count: u32) -> bool {
        match self.runs.range(..=off).next_back() {
            Some((&s, &(n, _))) => u64::from(s) + u64::from(n) >= u64::from(off) + u64::from(count),
            None => false,
        }
    }

    /// Records blocks `off..` holding `data` (whose crc32c is `crc`). Returns
    /// the sub-runs `(index of the first block in data, count)` that were not
    /// present before; blocks already present keep their first content.
    pub fn add(&mut self, off: u32, data: &[u8], crc: u32) -> Vec<(u32, u32)> {
        let count = (data.len() / BLOCK_SIZE) as u32;
        let end = off + count;
        let mut new = Vec::new();
        let mut cur = off;
        let overlapping: Vec<(u32, u32)> = self
            .runs
            .range(..end)
            .filter(|(&s, &(n, _))| s + n > off)
            .map(|(&s, &(n, _))| (s, s + n))
            .collect();
        for (s, e) in overlapping {
            if s > cur {
                new.push((cur, s));
            }
            cur = cur.max(e);
        }
        if cur < end {
            new.push((cur, end));
        }
        for &(s, e) in &new {
            let c = if (s, e) == (off, end) {
                crc
            } else {
                crc32c::crc32c(&data[(s - off) as usize * BLOCK_SIZE..(e - off) as usize * BLOCK_SIZE])
            };
            self.insert(s, e - s, c);
        }
        new.into_iter().map(|(s, e)| (s - off, e - s)).collect()
    }

    fn insert(&mut self, mut s: u32, mut n: u32, mut c: u32) {
        if let Some((&ps, &(pn, pc))) = self.runs.range(..s).next_back() {
            if ps + pn == s {
                self.runs.remove(&ps);
                c = combine_blocks(pc, c, u64::from(n));
                s = ps;
                n += pn;
            }
        }
        if let Some(&(nn, nc)) = self.runs.get(&(s + n)) {
            self.runs.remove(&(s + n));
            c = combine_blocks(c, nc, u64::from(nn));
            n += nn;
        }
        self.runs.insert(s, (n, c));
    }

    /// True when every block of a `blocks`-block extent is present.
    pub fn complete(&self, blocks: u32) -> bool {
        self.covers(0, blocks)
    }

    /// The missing runs `(start, count)` of a `blocks`-block extent.
    pub fn gaps(&self, blocks: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut cur = 0;
        for (&s, &(n, _)) in &self.runs {
            if s > cur {
                out.push((cur, s - cur));
            }
            cur = s + n;
        }
        if cur < blocks {
            out.push((cur, blocks - cur));
        }
        out
    }

    /// crc32c of the whole extent with missing blocks read as zeros.
    pub fn crc(&self, blocks: u32) -> u32 {
        let mut crc = 0u32;
        let mut cur = 0;
        for (&s, &(n, c)) in &self.runs {
            if s > cur {
                crc = combine_blocks(crc, zero_crc(s - cur), u64::from(s - cur));
            }
            crc = combine_blocks(crc, c, u64::from(n));
            cur = s + n;
        }
        if cur < blocks {
            crc = combine_blocks(crc, zero_crc(blocks - cur), u64::from(blocks - cur));
        }
        crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(seed: u8, n: usize) -> Vec<u8> {
        (0..n * BLOCK_SIZE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn assembles_out_of_order_with_overlap() {
        let whole = blocks(3, 10);
        let mut s = Segments::default();
        let part = |a: usize, b: usize| &whole[a * BLOCK_SIZE..b * BLOCK_SIZE];
        assert_eq!(s.add(4, part(4, 7), crc32c::crc32c(part(4, 7))), vec![(0, 3)]);
        assert!(s.covers(5, 2) && !s.covers(3, 2));
        assert_eq!(s.add(0, part(0, 2), crc32c::crc32c(part(0, 2))), vec![(0, 2)]);
        assert_eq!(s.gaps(10), vec![(2, 2), (7, 3)]);
        // with zeros in the gaps
        let mut z = whole.clone();
        z[2 * BLOCK_SIZE..4 * BLOCK_SIZE].fill(0);
        z[7 * BLOCK_SIZE..].fill(0);
        assert_eq!(s.crc(10), crc32c::crc32c(&z));
        // overlapping add: only the missing parts are new
        assert_eq!(s.add(1, part(1, 9), crc32c::crc32c(part(1, 9))), vec![(1, 2), (6, 2)]);
        assert_eq!(s.add(9, part(9, 10), crc32c::crc32c(part(9, 10))), vec![(0, 1)]);
        assert!(s.complete(10));
        assert_eq!(s.crc(10), crc32c::crc32c(&whole));
        assert_eq!(zero_crc(0), 0);
        assert_eq!(zero_crc(5), crc32c::crc32c(&vec![0u8; 5 * BLOCK_SIZE]));
    }
}

/// Which blocks of an extent are present (no checksums): merged runs.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    runs: BTreeMap<u32, u32>,
}

impl Coverage {
    pub fn covers(&self, off: u32, count: u32) -> bool {
        match self.runs.range(..=off).next_back() {
            Some((&s, &n)) => u64::from(s) + u64::from(n) >= u64::from(off) + u64::from(count),
            None => false,
        }
    }

    pub fn add(&mut self, off: u32, count: u32) {
        let (mut s, mut e) = (off, off.saturating_add(count));
        let touching: Vec<(u32, u32)> = self
            .runs
            .range(..=e)
            .filter(|(&rs, &rn)| rs.saturating_add(rn) >= s)
            .map(|(&rs, &rn)| (rs, rn))
            .collect();
        for (rs, rn) in touching {
            self.runs.remove(&rs);
            s = s.min(rs);
            e = e.max(rs.saturating_add(rn));
        }
        self.runs.insert(s, e - s);
    }
}

#[cfg(test)]
mod coverage_tests {
    use super::Coverage;

    #[test]
    fn merges() {
        let mut c = Coverage::default();
        c.add(4, 2);
        c.add(0, 2);
        assert!(!c.covers(1, 4));
        c.add(2, 2);
        assert!(c.covers(0, 6) && !c.covers(0, 7));
        c.add(10, 1);
        assert!(c.covers(10, 1) && !c.covers(6, 1));
    }
}
