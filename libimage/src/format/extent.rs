//! Extent records: the shared, refcounted units of encrypted file data.
//!
//! FORMAT.md §5: "An extent is a run of consecutive blocks holding AES-256-XTS
//! ciphertext under its own context. Data unit k of the extent (k = 0 for its
//! first block) is encrypted with tweak le64(k) ‖ 8 zero bytes and key
//! HKDF(master, context 9, nonce). Files reference extents by id; the refcount
//! is the number of file-map entries, over all snapshots, that reference it."
//!
//! Record layout (64 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | id (unique in the image, never 0) |
//! | 8 | 8 | start block |
//! | 16 | 4 | length in blocks (1..=MAX_EXTENT_BLOCKS) |
//! | 20 | 4 | refcount |
//! | 24 | 4 | crc32c of the extent's ciphertext |
//! | 28 | 34 | extent context (`01 01` ‖ key id ‖ nonce) |
//! | 62 | 2 | reserved, zero |

use crate::error::{CorruptKind, Result};
use crate::format::bytes::{Reader, Writer};
use fscrypt::context::{ExtentContext, EXTENT_CTX_LEN};

/// Encoded size of one record.
pub const RECORD_LEN: usize = 64;
/// The longest extent the writer makes: 32 MiB.
pub const MAX_EXTENT_BLOCKS: u32 = 8192;

/// One extent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    pub id: u64,
    pub start: u64,
    pub blocks: u32,
    pub refcount: u32,
    pub crc: u32,
    pub ctx: ExtentContext,
}

impl Extent {
    /// Parses one record. Only framing is checked here; semantic checks
    /// (bounds, overlap, refcounts, context fields) belong to validation.
    pub fn read(r: &mut Reader<'_>) -> Result<Extent> {
        let id = r.u64()?;
        let start = r.u64()?;
        let blocks = r.u32()?;
        let refcount = r.u32()?;
        let crc = r.u32()?;
        let ctx = ExtentContext::from_bytes(&r.array::<EXTENT_CTX_LEN>()?);
        if r.u16()? != 0 {
            return Err(r.err(CorruptKind::NotZero("extent record reserved bytes")));
        }
        Ok(Extent {
            id,
            start,
            blocks,
            refcount,
            crc,
            ctx,
        })
    }

    pub fn write(&self, w: &mut Writer) {
        w.u64(self.id);
        w.u64(self.start);
        w.u32(self.blocks);
        w.u32(self.refcount);
        w.u32(self.crc);
        w.bytes(&self.ctx.to_bytes());
        w.u16(0);
    }

    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(u64::from(self.blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fscrypt::{KeyId, Nonce};

    #[test]
    fn round_trip_len() {
        let e = Extent {
            id: 3,
            start: 10,
            blocks: 4,
            refcount: 2,
            crc: 0xdead_beef,
            ctx: ExtentContext::new(KeyId([1; 16]), Nonce([2; 16])),
        };
        let mut w = Writer::default();
        e.write(&mut w);
        assert_eq!(w.buf.len(), RECORD_LEN);
        let mut r = Reader::new(&w.buf, 0, "t");
        assert_eq!(Extent::read(&mut r).unwrap(), e);
    }
}
