//! Reading raw master key files. Keys are only ever passed by path (`-` for
//! standard input), never on the command line, and never logged.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use fscrypt::MasterKey;

/// Largest key file read: one byte more than the longest valid key, so an
/// over-long file is detected without reading it all.
const READ_MAX: u64 = 65;

/// Reads a raw 32..=64-byte key from `path`, or from standard input for `-`.
pub fn load_key(path: &Path) -> Result<MasterKey> {
    let mut buf = Zeroizing::new(Vec::with_capacity(READ_MAX as usize));
    let shown = if path == Path::new("-") {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let r = if path == Path::new("-") {
        std::io::stdin().lock().take(READ_MAX).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(READ_MAX).read_to_end(&mut buf))
    };
    r.map_err(|e| Error::io(format!("reading key file {shown}"), e))?;
    if !(32..=64).contains(&buf.len()) {
        let got = if buf.len() as u64 == READ_MAX {
            "more than 64".to_string()
        } else {
            buf.len().to_string()
        };
        return Err(Error::Invalid(format!(
            "key file {shown} holds {got} bytes; a raw master key is 32 to 64 bytes (use `mkfs-crypt keygen FILE`)"
        )));
    }
    Ok(MasterKey::from_bytes(&buf)?)
}

/// Writes a new random 64-byte key to `path` with mode 0600, refusing to
/// overwrite. Returns the key.
pub fn generate_key_file(path: &Path) -> Result<MasterKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let raw = fscrypt::generate_key()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating key file {}", path.display()), e))?;
    f.write_all(&raw[..])
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("writing key file {}", path.display()), e))?;
    Ok(MasterKey::from_bytes(&raw[..])?)
}

/// Writes a new random 64-byte key to `out` (e.g. standard output, which the
/// caller has checked is not a terminal). Returns the key.
pub fn generate_key_to(out: &mut dyn std::io::Write, what: &str) -> Result<MasterKey> {
    let raw = fscrypt::generate_key()?;
    out.write_all(&raw[..])
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(format!("writing the key to {what}"), e))?;
    Ok(MasterKey::from_bytes(&raw[..])?)
}
