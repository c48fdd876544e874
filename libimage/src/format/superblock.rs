//! The superblock: two copies, in blocks 0 and 1 ("slots").
//!
//! FORMAT.md §2: "Each slot holds one superblock. A commit writes the new
//! superblock, with generation + 1, into the slot *not* holding the current one.
//! Open reads both, discards any whose crc32c or magic fails, and uses the one
//! with the highest generation."
//!
//! Layout of a slot (4096 bytes, little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CRYPTIMG` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | block size (4096) |
//! | 16 | 8 | generation |
//! | 24 | 16 | image uuid |
//! | 40 | 8 | feature_compat |
//! | 48 | 8 | feature_incompat |
//! | 56 | 8 | feature_ro_compat |
//! | 64 | 8 | total_blocks: the image's length in blocks |
//! | 72 | 8 | max_blocks: fixed size in blocks, 0 = grow as needed |
//! | 80 | 8 | meta_start: first block of the metadata region |
//! | 88 | 8 | meta_blocks: blocks in the metadata region |
//! | 96 | 8 | meta_bytes: length of the metadata stream |
//! | 104 | 4 | meta_crc: crc32c of the whole metadata stream |
//! | 108 | 4 | reserved, zero |
//! | 112 | 8 | commit_time: seconds since the epoch of this commit |
//! | 120 | 3972 | reserved, zero |
//! | 4092 | 4 | crc32c of bytes 0..4092 |

use crate::error::{CorruptKind, Error, Result};
use crate::format::bytes::{crc32c, le32_at, Reader, Writer};
use crate::BLOCK_SIZE;

/// `CRYPTIMG`
pub const MAGIC: [u8; 8] = *b"CRYPTIMG";
/// The only format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Offset of the block size field.
pub const OFF_BLOCK_SIZE: usize = 12;
/// Offset of the generation field.
pub const OFF_GENERATION: usize = 16;
/// Offset of the `meta_start` field.
pub const OFF_META_START: usize = 80;
/// Offset of the crc32c in a slot.
pub const OFF_CRC: usize = 4092;
/// Offset where the reserved tail starts (must be zero).
pub const OFF_RESERVED: usize = 120;
/// The two slot block numbers.
pub const SLOTS: [u64; 2] = [0, 1];

/// Incompatible features this build understands. None are defined in v1; any
/// set bit is refused.
pub const INCOMPAT_SUPPORTED: u64 = 0;
/// Read-only-compatible features understood. An unknown one allows reading but
/// refuses writing.
pub const RO_COMPAT_SUPPORTED: u64 = 0;

/// The decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub generation: u64,
    pub uuid: [u8; 16],
    pub feature_compat: u64,
    pub feature_incompat: u64,
    pub feature_ro_compat: u64,
    pub total_blocks: u64,
    pub max_blocks: u64,
    pub meta_start: u64,
    pub meta_blocks: u64,
    pub meta_bytes: u64,
    pub meta_crc: u32,
    pub commit_time: i64,
}

impl Superblock {
    /// Parses and validates one slot. `slot` is 0 or 1, for error locations.
    pub fn from_bytes(block: &[u8], slot: u64) -> Result<Superblock> {
        let what = if slot == 0 { "superblock slot 0" } else { "superblock slot 1" };
        let at = slot * BLOCK_SIZE as u64;
        if block.len() < BLOCK_SIZE {
            return Err(Error::corrupt(
                CorruptKind::Truncated {
                    needed: BLOCK_SIZE as u64,
                    available: block.len() as u64,
                },
                what,
                Some(at),
            ));
        }
        let block = &block[..BLOCK_SIZE];
        if block[..MAGIC.len()] != MAGIC {
            return Err(Error::corrupt(CorruptKind::BadMagic, what, Some(at)));
        }
        let stored = le32_at(block, OFF_CRC);
        let computed = crc32c(&block[..OFF_CRC]);
        if stored != computed {
            return Err(Error::corrupt(
                CorruptKind::BadChecksum { stored, computed },
                what,
                Some(at + OFF_CRC as u64),
            ));
        }
        let (version, bs, sb) = Superblock::decode(block, at, what)?;
        if version != VERSION {
            return Err(Error::Unsupported(format!(
                "{what}: format version {version} (this build reads version {VERSION})"
            )));
        }
        if bs as usize != BLOCK_SIZE {
            return Err(Error::corrupt(
                CorruptKind::BadValue {
                    field: "block_size",
                    value: bs.into(),
                },
                what,
                Some(at + OFF_BLOCK_SIZE as u64),
            ));
        }
        if sb.generation % 2 != slot {
            return Err(Error::corrupt(
                CorruptKind::BadValue {
                    field: "generation (wrong slot for its parity)",
                    value: sb.generation,
                },
                what,
                Some(at + OFF_GENERATION as u64),
            ));
        }
        let unknown = sb.feature_incompat & !INCOMPAT_SUPPORTED;
        if unknown != 0 {
            return Err(Error::Unsupported(format!(
                "{what}: unknown incompatible feature flags {unknown:#x}; this image needs a newer cryptimg"
            )));
        }
        sb.validate_geometry(what, at)?;
        Ok(sb)
    }

    /// Decodes the fields after the magic number, checking nothing but
    /// their presence: (format version, block size, fields).
    fn decode(block: &[u8], at: u64, what: &'static str) -> Result<(u32, u32, Superblock)> {
        let mut r = Reader::new(block, at, what);
        r.array::<8>()?;
        let version = r.u32()?;
        let bs = r.u32()?;
        let sb = Superblock {
            generation: r.u64()?,
            uuid: r.array()?,
            feature_compat: r.u64()?,
            feature_incompat: r.u64()?,
            feature_ro_compat: r.u64()?,
            total_blocks: r.u64()?,
            max_blocks: r.u64()?,
            meta_start: r.u64()?,
            meta_blocks: r.u64()?,
            meta_bytes: r.u64()?,
            meta_crc: r.u32()?,
            commit_time: {
                let _reserved = r.u32()?;
                r.i64()?
            },
        };
        debug_assert_eq!(r.offset() - at, OFF_RESERVED as u64);
        Ok((version, bs, sb))
    }

    /// What a slot that fails validation still claims: its fields, read
    /// without checking the crc32c, version or geometry, when at least the
    /// magic number survives (`None` otherwise). For the checker, which must
    /// tell a damaged newer commit from a damaged older one; never use these
    /// values to read the image.
    pub fn claimed(block: &[u8]) -> Option<Superblock> {
        let block = block.get(..BLOCK_SIZE)?;
        if block[..MAGIC.len()] != MAGIC {
            return None;
        }
        Superblock::decode(block, 0, "superblock").ok().map(|(_, _, sb)| sb)
    }

    fn validate_geometry(&self, what: &'static str, at: u64) -> Result<()> {
        let bad = |field, value| Error::corrupt(CorruptKind::BadValue { field, value }, what, Some(at));
        if self.total_blocks < 2 || self.total_blocks > crate::MAX_BLOCKS {
            return Err(bad("total_blocks", self.total_blocks));
        }
        if self.max_blocks != 0 && self.max_blocks < self.total_blocks {
            return Err(bad("max_blocks", self.max_blocks));
        }
        let end = self.meta_start.checked_add(self.meta_blocks);
        if self.meta_start < 2 || self.meta_blocks == 0 || end.is_none_or(|e| e > self.total_blocks) {
            return Err(bad("meta_start/meta_blocks", self.meta_start));
        }
        let cap = self.meta_blocks.saturating_mul(crate::format::metablock::PAYLOAD as u64);
        if self.meta_bytes > cap || self.meta_bytes == 0 {
            return Err(bad("meta_bytes", self.meta_bytes));
        }
        Ok(())
    }

    /// Encodes into a full 4096-byte slot with its checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&MAGIC);
        w.u32(VERSION);
        w.u32(BLOCK_SIZE as u32);
        w.u64(self.generation);
        w.bytes(&self.uuid);
        w.u64(self.feature_compat);
        w.u64(self.feature_incompat);
        w.u64(self.feature_ro_compat);
        w.u64(self.total_blocks);
        w.u64(self.max_blocks);
        w.u64(self.meta_start);
        w.u64(self.meta_blocks);
        w.u64(self.meta_bytes);
        w.u32(self.meta_crc);
        w.u32(0);
        w.i64(self.commit_time);
        debug_assert_eq!(w.buf.len(), OFF_RESERVED);
        let mut b = w.buf;
        b.resize(BLOCK_SIZE, 0);
        let crc = crc32c(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The slot this superblock is written to: generation parity.
    pub fn slot(&self) -> u64 {
        self.generation % 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            generation: 7,
            uuid: [9; 16],
            feature_compat: 0,
            feature_incompat: 0,
            feature_ro_compat: 0,
            total_blocks: 100,
            max_blocks: 0,
            meta_start: 10,
            meta_blocks: 2,
            meta_bytes: 5000,
            meta_crc: 1,
            commit_time: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let sb = sample();
        assert_eq!(Superblock::from_bytes(&sb.to_bytes(), 1).unwrap(), sb);
        // A superblock found in the slot of the other parity is refused.
        assert!(Superblock::from_bytes(&sb.to_bytes(), 0).is_err());
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let b = sample().to_bytes();
        for byte in (0..BLOCK_SIZE).step_by(7) {
            let mut c = b.clone();
            c[byte] ^= 0x10;
            assert!(Superblock::from_bytes(&c, 1).is_err(), "flip at {byte} accepted");
        }
    }

    #[test]
    fn claimed_reads_a_damaged_slot_while_its_magic_survives() {
        let mut b = sample().to_bytes();
        b[200] ^= 1; // reserved byte: crc32c fails
        assert!(Superblock::from_bytes(&b, 1).is_err());
        let c = Superblock::claimed(&b).unwrap();
        assert_eq!((c.generation, c.meta_start), (7, 10));
        assert_eq!(b[OFF_GENERATION], 7);
        assert_eq!(b[OFF_META_START], 10);
        b[0] ^= 1;
        assert!(Superblock::claimed(&b).is_none());
        assert!(Superblock::claimed(&b[..100]).is_none());
    }

    #[test]
    fn unknown_incompat_refused() {
        let mut sb = sample();
        sb.feature_incompat = 1 << 5;
        let e = Superblock::from_bytes(&sb.to_bytes(), 1).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("0x20"));
    }
}
