//! A file's contents as a reader that also knows where its holes are.
//!
//! Tree readers (the directory walker with `SEEK_DATA`/`SEEK_HOLE`, the tar
//! reader with sparse maps, an image's file map) produce it; image writers
//! (cryptimg's builder, the ext4 writer) consume it, so a claimed size costs
//! nothing: holes are skipped, never read as zeros. One trait for both sides,
//! in its own crate so that neither on-disk format depends on the other.

#![forbid(unsafe_code)]

use std::io::{self, Read};

/// The run of a file's contents at the current read position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Zeros the source knows of without reading them (a tar sparse map's
    /// gap, a filesystem hole), up to logical offset `end`.
    Hole { end: u64 },
    /// Bytes to read, up to logical offset `end` (`u64::MAX`: unknown).
    Data { end: u64 },
}

/// File contents as a reader that also knows its holes.
pub trait FileData: Read {
    /// The run at the current position. The default: all data.
    fn run(&mut self) -> io::Result<Run> {
        Ok(Run::Data { end: u64::MAX })
    }
    /// Moves the position forward to `to`, which must lie within the hole
    /// [`FileData::run`] reported at the current position.
    fn skip_hole(&mut self, to: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no hole to skip to offset {to}"),
        ))
    }
}

/// [`FileData::skip_hole`] for a reader at `*pos` whose current run is
/// `run`: moves `*pos` to `to` when `to` lies within that hole, else an
/// `InvalidInput` error.
pub fn skip_in_hole(run: Run, pos: &mut u64, to: u64) -> io::Result<()> {
    match run {
        Run::Hole { end } if to >= *pos && to <= end => {
            *pos = to;
            Ok(())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("offset {to} is not within a hole at {pos}"),
        )),
    }
}

/// In-memory contents (tests, fixtures): all data.
impl FileData for &[u8] {}

/// Any reader as [`FileData`] without hole information.
pub struct Dense<R>(pub R);

impl<R: Read> Read for Dense<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> FileData for Dense<R> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_all_data_and_refuse_skips() {
        let mut d = Dense(&b"abc"[..]);
        assert_eq!(d.run().unwrap(), Run::Data { end: u64::MAX });
        assert_eq!(d.skip_hole(1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let mut s = String::new();
        d.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }

    #[test]
    fn skips_only_within_the_hole() {
        let mut pos = 10;
        assert!(skip_in_hole(Run::Data { end: 20 }, &mut pos, 15).is_err());
        assert!(skip_in_hole(Run::Hole { end: 20 }, &mut pos, 21).is_err());
        assert!(skip_in_hole(Run::Hole { end: 20 }, &mut pos, 9).is_err());
        assert_eq!(pos, 10);
        skip_in_hole(Run::Hole { end: 20 }, &mut pos, 20).unwrap();
        assert_eq!(pos, 20);
    }
}
