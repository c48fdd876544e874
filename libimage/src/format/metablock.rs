//! Metadata block framing.
//!
//! FORMAT.md §3: "The metadata stream is stored in `meta_blocks` consecutive
//! blocks starting at `meta_start`. Each block is a 16-byte header followed by
//! 4080 payload bytes; the stream is the concatenation of the payloads,
//! truncated to `meta_bytes`."
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `CIMD` |
//! | 4 | 4 | crc32c of (le64(block number) ‖ bytes 8..4096) |
//! | 8 | 8 | generation of the commit that wrote the block |
//! | 16 | 4080 | payload (zero-filled past the end of the stream) |
//!
//! Including the block number in the checksum catches misdirected writes;
//! including the generation catches stale blocks left by an older commit.

use crate::error::{CorruptKind, Error, Result};
use crate::format::bytes::{le32_at, le64_at};
use crate::BLOCK_SIZE;

/// `CIMD`
pub const MAGIC: [u8; 4] = *b"CIMD";
/// Offset of the crc32c.
pub const OFF_CRC: usize = 4;
/// Offset of the generation.
pub const OFF_GENERATION: usize = 8;
/// Header length.
pub const HEADER: usize = 16;
/// Payload bytes per block.
pub const PAYLOAD: usize = BLOCK_SIZE - HEADER;

/// Number of blocks needed for a stream of `len` bytes.
pub fn blocks_for(len: usize) -> u64 {
    len.div_ceil(PAYLOAD).max(1) as u64
}

fn block_crc(blockno: u64, block: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&blockno.to_le_bytes());
    c = crc32c::crc32c_append(c, &block[OFF_GENERATION..BLOCK_SIZE]);
    c
}

/// Frames `stream` into blocks for the region starting at `start`.
pub fn encode(stream: &[u8], start: u64, generation: u64) -> Vec<u8> {
    let n = blocks_for(stream.len()) as usize;
    let mut out = vec![0u8; n * BLOCK_SIZE];
    for (i, blk) in out.chunks_mut(BLOCK_SIZE).enumerate() {
        blk[0..4].copy_from_slice(&MAGIC);
        blk[OFF_GENERATION..HEADER].copy_from_slice(&generation.to_le_bytes());
        let lo = (i * PAYLOAD).min(stream.len());
        let hi = ((i + 1) * PAYLOAD).min(stream.len());
        blk[HEADER..HEADER + (hi - lo)].copy_from_slice(&stream[lo..hi]);
        let crc = block_crc(start + i as u64, blk);
        blk[OFF_CRC..OFF_GENERATION].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Checks one block and returns its payload.
pub fn check_block(block: &[u8], blockno: u64, generation: u64) -> Result<&[u8]> {
    // Saturating: `blockno` may come from a damaged superblock (found by
    // fuzzing, testdata/fuzz/metadata/); the offset only labels errors.
    let at = blockno.saturating_mul(BLOCK_SIZE as u64);
    let what = "metadata block";
    if block.len() != BLOCK_SIZE {
        return Err(Error::corrupt(
            CorruptKind::Truncated {
                needed: BLOCK_SIZE as u64,
                available: block.len() as u64,
            },
            what,
            Some(at),
        ));
    }
    if block[0..4] != MAGIC {
        return Err(Error::corrupt(CorruptKind::BadMagic, format!("metadata block {blockno}"), Some(at)));
    }
    let stored = le32_at(block, OFF_CRC);
    let computed = block_crc(blockno, block);
    if stored != computed {
        return Err(Error::corrupt(
            CorruptKind::BadChecksum { stored, computed },
            format!("metadata block {blockno}"),
            Some(at),
        ));
    }
    let g = le64_at(block, OFF_GENERATION);
    if g != generation {
        return Err(Error::corrupt(
            CorruptKind::BadValue {
                field: "metadata block generation",
                value: g,
            },
            format!("metadata block {blockno} (expected generation {generation})"),
            Some(at.saturating_add(OFF_GENERATION as u64)),
        ));
    }
    Ok(&block[HEADER..])
}

/// Checks one block whose generation is not known in advance: the
/// generation it claims, when it is intact under that claim. For the checker,
/// which looks for evidence of a newer commit behind a damaged superblock.
pub fn check_block_any_generation(block: &[u8], blockno: u64) -> Option<u64> {
    if block.len() != BLOCK_SIZE {
        return None;
    }
    let g = le64_at(block, OFF_GENERATION);
    check_block(block, blockno, g).is_ok().then_some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every block of a region and reassembles `len` bytes of stream.
    fn decode(region: &[u8], start: u64, generation: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (i, blk) in region.chunks(BLOCK_SIZE).enumerate() {
            out.extend_from_slice(check_block(blk, start + i as u64, generation)?);
        }
        out.truncate(len);
        Ok(out)
    }

    #[test]
    fn round_trip_and_flips() {
        let stream: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let enc = encode(&stream, 5, 3);
        assert_eq!(enc.len(), 3 * BLOCK_SIZE);
        assert_eq!(decode(&enc, 5, 3, stream.len()).unwrap(), stream);
        // wrong start block or generation is detected
        assert!(decode(&enc, 6, 3, stream.len()).is_err());
        assert!(decode(&enc, 5, 4, stream.len()).is_err());
        assert_eq!(check_block_any_generation(&enc[..BLOCK_SIZE], 5), Some(3));
        assert_eq!(check_block_any_generation(&enc[..BLOCK_SIZE], 6), None);
        // A block number near u64::MAX is an error, not an overflow.
        assert!(check_block(&enc[..BLOCK_SIZE], u64::MAX, 3).is_err());
        assert!(check_block(&enc[..100], u64::MAX / 2, 3).is_err());
        for off in (0..enc.len()).step_by(97) {
            let mut c = enc.clone();
            c[off] ^= 1;
            assert!(decode(&c, 5, 3, stream.len()).is_err(), "flip at {off}");
        }
    }
}
