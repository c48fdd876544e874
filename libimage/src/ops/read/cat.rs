//! `fsck-crypt cat`: one regular file's plaintext, streamed in order (holes
//! as zeros), holding at most one extent (≤ 32 MiB) in memory.

use std::io::Write;

use crate::error::{Error, Result};
use crate::format::inode::Body;

use super::select::{keys_needed_below, resolve, show};
use super::TreeReader;

/// Zeros written for holes, a chunk at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes `len` zero bytes.
pub(crate) fn write_zeros(out: &mut dyn Write, mut len: u64, what: &str) -> Result<()> {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..n]).map_err(|e| Error::io(format!("writing {what}"), e))?;
        len -= n as u64;
    }
    Ok(())
}

/// Writes a file of `size` bytes to `out` in order from the `(offset, bytes)`
/// runs `feed` hands over in increasing order: gaps (holes) and the tail up
/// to `size` become zeros, bytes at or past `size` are dropped, so exactly
/// `size` bytes are written. Format-neutral: cryptimg and ext4 files both
/// stream through it. Returns `size`.
pub fn write_ordered(out: &mut dyn Write, size: u64, feed: &mut super::tar_out::Feed<'_>, what: &str) -> Result<u64> {
    let mut pos = 0u64;
    feed(&mut |off, data| {
        if off < pos {
            return Err(Error::Invalid(format!(
                "{what}: file data goes backwards (offset {off} after {pos})"
            )));
        }
        if off >= size {
            return Ok(());
        }
        let n = (data.len() as u64).min(size - off) as usize;
        write_zeros(out, off - pos, what)?;
        out.write_all(&data[..n]).map_err(|e| Error::io(format!("writing {what}"), e))?;
        pos = off + n as u64;
        Ok(())
    })?;
    write_zeros(out, size - pos, what)?;
    Ok(size)
}

/// Writes the whole plaintext of regular file `ino` (`i.size` bytes) to `out`
/// in order. Returns the bytes written.
pub fn write_file(r: &TreeReader<'_>, ino: u64, out: &mut dyn Write, what: &str) -> Result<u64> {
    let size = r.inode(ino)?.size;
    write_ordered(out, size, &mut |put| r.read_file(ino, put), what)
}

/// `fsck-crypt cat`: resolves `path` in the reader's snapshot and writes the
/// regular file it names to `out`. Returns the bytes written.
pub fn cat(r: &TreeReader<'_>, path: &[u8], out: &mut dyn Write) -> Result<u64> {
    let chain = resolve(r, path)?;
    let ino = chain.last().map_or(r.snap.root, |(_, i)| *i);
    let i = r.inode(ino)?;
    let Body::File { .. } = &i.body else {
        let names: Vec<Vec<u8>> = chain.into_iter().map(|(n, _)| n).collect();
        let kind = match &i.body {
            Body::Dir { .. } => "a directory",
            Body::Symlink { .. } => "a symbolic link",
            _ => "a special file",
        };
        return Err(Error::Invalid(format!(
            "{} in snapshot {:?} is {kind}, not a regular file",
            show(&names),
            r.snap.name
        )));
    };
    let mut ids = std::collections::BTreeSet::new();
    keys_needed_below(r, ino, &mut ids)?;
    r.keys.require(&ids.into_iter().collect::<Vec<_>>())?;
    write_file(r, ino, out, "the file to standard output")
}
