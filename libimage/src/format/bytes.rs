//! Bounds-checked little-endian encoding helpers shared by every on-disk module.
//!
//! All parsing of image and backup bytes goes through [`Reader`], which never
//! panics and never allocates more than the bytes it has actually been given.

use crate::error::{CorruptKind, Error, Result};

/// A cursor over untrusted bytes. Every read is bounds-checked and a short read
/// reports *what* was being read and the absolute offset.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the containing stream, for error messages.
    base: u64,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, which starts at absolute offset `base` of the structure `what`.
    pub fn new(buf: &'a [u8], base: u64, what: &'static str) -> Self {
        Reader { buf, pos: 0, base, what }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads a count of records each at least `min_size` bytes long, refusing a
    /// count that could not possibly fit in the remaining bytes. This is what
    /// keeps hostile counts from causing huge allocations.
    pub fn count(&mut self, field: &'static str, wide: bool, min_size: usize) -> Result<usize> {
        let at = self.offset();
        let n = if wide { self.u64()? } else { u64::from(self.u32()?) };
        let max = (self.remaining() / min_size.max(1)) as u64;
        if n > max {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange { field, value: n, max },
                self.what,
                Some(at),
            ));
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::corrupt(
                CorruptKind::TrailingData("the last record"),
                self.what,
                Some(self.offset()),
            ));
        }
        Ok(())
    }

    /// A corruption error at the current position.
    pub fn err(&self, kind: CorruptKind) -> Error {
        Error::corrupt(kind, self.what, Some(self.offset()))
    }

    fn truncated(&self, n: usize) -> Error {
        self.err(CorruptKind::Truncated {
            needed: n as u64,
            available: self.remaining() as u64,
        })
    }
}

/// Little-endian writer into a growable buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

/// crc32c (Castagnoli), as used for every checksum in the format.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Reads a little-endian u32 at a fixed offset of a buffer known to be long enough.
pub(crate) fn le32_at(buf: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian u64 at a fixed offset of a buffer known to be long enough.
pub(crate) fn le64_at(buf: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(a)
}
