//! Progress reporting. Library code reports through this trait; only the
//! binaries draw bars (indicatif), so tests and pipelines stay quiet.

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
