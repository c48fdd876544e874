//! Spreading data-unit crypto over all cores.
//!
//! Large buffers of whole 4096-byte data units are split into one contiguous
//! part per core; each part is processed in cache-sized pieces so that the
//! cipher and the crc32c of a piece run while it is still in cache.

use crate::BLOCK_SIZE;

/// Below this size work stays on the calling thread (spawning costs more).
const PARALLEL_MIN: usize = 1 << 20;
/// Piece size for cipher + checksum passes: 256 KiB.
pub const PIECE: usize = 64 * BLOCK_SIZE;

/// Number of worker threads: asked once, because `available_parallelism()`
/// reads cgroup files on Linux.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `f(first unit of the part, part)` over `buf` split into per-core parts
/// of whole data units (`buf` starts at data unit `first_unit`). Returns each
/// part's result with its length, in order.
pub fn split_units<T: Send>(buf: &mut [u8], first_unit: u64, f: impl Fn(u64, &mut [u8]) -> T + Sync) -> Vec<(T, usize)> {
    let n = threads();
    if buf.len() < PARALLEL_MIN || n < 2 {
        let len = buf.len();
        return vec![(f(first_unit, buf), len)];
    }
    let per = (buf.len() / BLOCK_SIZE).div_ceil(n) * BLOCK_SIZE;
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks_mut(per)
            .enumerate()
            .map(|(i, part)| {
                let first = first_unit + (i * per / BLOCK_SIZE) as u64;
                s.spawn(move || {
                    let len = part.len();
                    (f(first, part), len)
                })
            })
            .collect();
        // A panicking worker would be a bug in the cipher; re-raise it.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Calls `f(first unit of the piece, piece)` for each cache-sized piece of a part.
pub fn pieces(first_unit: u64, part: &mut [u8], mut f: impl FnMut(u64, &mut [u8])) {
    for (i, piece) in part.chunks_mut(PIECE).enumerate() {
        f(first_unit + (i * PIECE / BLOCK_SIZE) as u64, piece);
    }
}

/// The crc32c of a whole buffer from the crc32c of its consecutive parts
/// (one multiplication per part after the first: `engine::crc`).
pub fn combine_crcs(parts: impl IntoIterator<Item = (u32, usize)>) -> u32 {
    parts
        .into_iter()
        .fold(0, |crc, (c, len)| crate::engine::crc::combine(crc, c, len as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_buffer_in_order_with_the_right_units() {
        let mut buf = vec![0u8; 3 * PARALLEL_MIN + 5 * BLOCK_SIZE];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i / BLOCK_SIZE) as u8;
        }
        let whole = crc32c::crc32c(&buf);
        let parts = split_units(&mut buf, 7, |first, part| {
            // every unit of the part is the unit it claims to be
            for (k, unit) in part.chunks(BLOCK_SIZE).enumerate() {
                assert_eq!(u64::from(unit[0]), (first - 7 + k as u64) % 256);
            }
            crc32c::crc32c(part)
        });
        assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), buf.len());
        assert_eq!(combine_crcs(parts), whole);
    }
}
