//! Reading fscrypt-encrypted ext4 images for `info`, `ls`, `check`,
//! `extract` and backup, on top of [`ext4fs::read`] (docs/EXT4.md
//! "Reader"): opening, error mapping and policy classification.
//!
//! The tools detect the format by the ext4 magic at byte 1080. Structural
//! repair of ext4 is e2fsck's job; these operations only read.

use std::path::Path;

use ext4fs::read::{Fs, ReadError};
use fscrypt::context::{PolicyContext, MODE_AES_256_CTS, MODE_AES_256_XTS, POLICY_CTX_LEN};

use crate::error::{CorruptKind, Error, Location, Result};

/// Whether `path` holds an ext4 filesystem (magic 0xEF53 at byte 1080).
pub fn is_ext4(path: &Path) -> bool {
    Fs::detect(path)
}

/// Opens an ext4 image or block device read-only.
pub fn open(path: &Path) -> Result<Fs> {
    Fs::open(path).map_err(map_err)
}

/// Maps a reader error to the library error (corruption → exit code 4).
impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        map_err(e)
    }
}

pub fn map_err(e: ReadError) -> Error {
    match e {
        ReadError::Corrupt { what, at, detail } => Error::Corrupt {
            kind: CorruptKind::BadValue {
                field: "ext4 metadata",
                value: 0,
            },
            at: Location {
                what: format!("ext4 {what} at {at}: {detail}"),
                offset: None,
            },
        },
        ReadError::Io { context, source } => Error::Io { context, source },
        other => Error::Unsupported(other.to_string()),
    }
}

/// `FSCRYPT_POLICY_FLAGS_PAD_MASK` and the flags the reader refuses
/// (include/uapi/linux/fscrypt.h).
const FLAGS_PAD_MASK: u8 = 0x03;
const FLAG_DIRECT_KEY: u8 = 0x04;
const FLAG_IV_INO_LBLK_64: u8 = 0x08;
const FLAG_IV_INO_LBLK_32: u8 = 0x10;

/// What an inode's context xattr holds.
pub enum Ctx {
    /// A v2 context this code handles (AES-256-XTS/CTS, PAD_32, no IV flags).
    V2(PolicyContext),
    /// Not a well-formed context: the reason.
    Malformed(&'static str),
}

/// Classifies a raw context value: refusals (v1, DIRECT_KEY, IV_INO_LBLK_*,
/// other modes or paddings) are errors, damage is [`Ctx::Malformed`].
pub fn parse_context(raw: &[u8], ino: u32) -> Result<Ctx> {
    let refuse = |what: &str| Error::Unsupported(format!("inode {ino}: {what}"));
    match raw.first() {
        Some(1) => return Err(refuse("a v1 fscrypt policy (only v2 policies are supported)")),
        Some(2) => {}
        _ => return Ok(Ctx::Malformed("context version is neither 1 nor 2")),
    }
    let Ok(arr) = <&[u8; POLICY_CTX_LEN]>::try_from(raw) else {
        return Ok(Ctx::Malformed("a v2 context is not 40 bytes"));
    };
    let c = PolicyContext::from_bytes(arr);
    if c.flags & (FLAG_DIRECT_KEY | FLAG_IV_INO_LBLK_64 | FLAG_IV_INO_LBLK_32) != 0 {
        return Err(refuse(&format!(
            "policy flags {:#x} (DIRECT_KEY and IV_INO_LBLK_* are not supported)",
            c.flags
        )));
    }
    if c.flags & !(FLAGS_PAD_MASK | FLAG_DIRECT_KEY | FLAG_IV_INO_LBLK_64 | FLAG_IV_INO_LBLK_32) != 0 {
        return Ok(Ctx::Malformed("unknown policy flags"));
    }
    if c.contents_mode != MODE_AES_256_XTS || c.filenames_mode != MODE_AES_256_CTS {
        return Err(refuse(&format!(
            "encryption modes {}/{} (only AES-256-XTS/AES-256-CTS are supported)",
            c.contents_mode, c.filenames_mode
        )));
    }
    if c.flags & FLAGS_PAD_MASK != 3 {
        return Err(refuse("filename padding other than 32 bytes"));
    }
    if c.log2_data_unit_size != 0 && c.log2_data_unit_size != 12 {
        return Err(refuse("a data unit size other than the 4096-byte block"));
    }
    if c.reserved != [0; 3] {
        return Ok(Ctx::Malformed("reserved bytes are not zero"));
    }
    Ok(Ctx::V2(c))
}

/// Whether two contexts carry the same policy (key, modes, flags; the
/// nonce is per inode).
pub fn same_policy(a: &PolicyContext, b: &PolicyContext) -> bool {
    a.key == b.key
        && a.contents_mode == b.contents_mode
        && a.filenames_mode == b.filenames_mode
        && a.flags == b.flags
        && a.log2_data_unit_size == b.log2_data_unit_size
}

/// `FSCRYPT_MAX_SYMLINK`-style bound for ext4 (block size − 2 − 1).
const SYMLINK_CT_MAX: usize = fscrypt::SYMLINK_MAX;

/// Whether `len` is a symlink ciphertext length PAD_32 produces.
pub fn valid_symlink_ct_len(len: usize) -> bool {
    len == SYMLINK_CT_MAX || ((32..SYMLINK_CT_MAX).contains(&len) && len.is_multiple_of(32))
}
