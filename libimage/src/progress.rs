//! Progress reporting. Library code reports through this trait; only the
//! binaries draw bars (indicatif), so tests and pipelines stay quiet.
//!
//! A phase is `start`, any number of `advance`s, `finish`. When `start`
//! names a total, the phase's `advance`d bytes add up to it when the phase
//! completes. The final fsync of a command that writes (the commit of an
//! image, the sync of an archive) is its own phase, [`SYNC`] ([`syncing`]):
//! it may take seconds with nothing else to show.

use std::io::Read;

/// Receives progress from long operations. All methods default to no-ops.
pub trait Progress: Sync {
    /// A phase starts; `total_bytes` when known.
    fn start(&self, _phase: &str, _total_bytes: Option<u64>) {}
    /// `files` more items and `bytes` more bytes are done.
    fn advance(&self, _files: u64, _bytes: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// The name of the phase that waits for data to reach the disk.
pub const SYNC: &str = "syncing to disk";

/// Runs `f` (a commit, an fsync) as the phase [`SYNC`].
pub fn syncing<T>(progress: &dyn Progress, f: impl FnOnce() -> T) -> T {
    progress.start(SYNC, None);
    let r = f();
    progress.finish();
    r
}

/// A reader that reports the bytes read through it as progress (the bytes
/// of an archive being restored, whose length is the phase's total).
pub struct ReadProgress<'a, R: ?Sized> {
    inner: &'a mut R,
    progress: &'a dyn Progress,
}

impl<'a, R: Read + ?Sized> ReadProgress<'a, R> {
    pub fn new(inner: &'a mut R, progress: &'a dyn Progress) -> Self {
        ReadProgress { inner, progress }
    }
}

impl<R: Read + ?Sized> Read for ReadProgress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(0, n as u64);
        Ok(n)
    }
}
