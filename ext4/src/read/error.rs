//! Typed errors of the ext4 reader.
//!
//! Three kinds matter to callers: the image is damaged ([`ReadError::Corrupt`],
//! exit code 4 in the tools), the image is valid ext4 but uses something the
//! reader deliberately refuses ([`ReadError::Unsupported`] and
//! [`ReadError::NeedsRecovery`]), or the operating system failed
//! ([`ReadError::Io`]).

use std::fmt;
use std::io;

/// Result with [`ReadError`].
pub type ReadResult<T> = std::result::Result<T, ReadError>;

/// What the reader refuses, one variant per documented refusal (docs/EXT4.md
/// "Reader").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `s_log_block_size` other than 2.
    BlockSize,
    /// An incompat feature the reader does not implement (meta_bg, inline_data,
    /// casefold, ea_inode, ...).
    Feature,
    /// A filesystem without metadata_csum (the reader verifies every checksum;
    /// crc16 group descriptors are not implemented).
    NoMetadataCsum,
    /// A v1 fscrypt policy (context version 1).
    PolicyV1,
    /// A v2 policy with IV_INO_LBLK_64, IV_INO_LBLK_32 or DIRECT_KEY.
    PolicyFlags,
    /// A v2 policy with modes other than AES-256-XTS / AES-256-CTS, or a
    /// data unit size other than the block size.
    PolicyModes,
    /// inline_data on an encrypted inode.
    InlineData,
    /// A casefolded encrypted directory.
    Casefold,
    /// A regular file, directory or slow symlink mapped by indirect blocks
    /// rather than extents.
    BlockMap,
}

impl Refusal {
    /// A stable short name.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::BlockSize => "block-size",
            Refusal::Feature => "feature",
            Refusal::NoMetadataCsum => "no-metadata-csum",
            Refusal::PolicyV1 => "policy-v1",
            Refusal::PolicyFlags => "policy-flags",
            Refusal::PolicyModes => "policy-modes",
            Refusal::InlineData => "inline-data",
            Refusal::Casefold => "casefold",
            Refusal::BlockMap => "block-map",
        }
    }
}

/// Everything that can go wrong reading an ext4 image.
#[derive(Debug)]
pub enum ReadError {
    /// On-disk bytes are invalid: `what` names the structure, `at` where it
    /// is (inode, block, byte offset), `detail` what is wrong.
    Corrupt { what: &'static str, at: String, detail: String },
    /// Valid ext4 the reader refuses on purpose.
    Unsupported { refusal: Refusal, at: String, detail: String },
    /// The journal holds transactions not yet replayed (`INCOMPAT_RECOVER`).
    NeedsRecovery,
    /// The filesystem is marked as having errors (`s_state` lacks VALID or has ERROR).
    NotClean { state: u16 },
    /// An operating-system error.
    Io { context: String, source: io::Error },
}

impl ReadError {
    pub(crate) fn corrupt(what: &'static str, at: impl Into<String>, detail: impl Into<String>) -> ReadError {
        ReadError::Corrupt {
            what,
            at: at.into(),
            detail: detail.into(),
        }
    }
    pub(crate) fn unsupported(refusal: Refusal, at: impl Into<String>, detail: impl Into<String>) -> ReadError {
        ReadError::Unsupported {
            refusal,
            at: at.into(),
            detail: detail.into(),
        }
    }
    /// Whether the image bytes are at fault (exit code 4).
    pub fn is_corruption(&self) -> bool {
        matches!(self, ReadError::Corrupt { .. })
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Corrupt { what, at, detail } => write!(f, "corrupt ext4 {what} at {at}: {detail}"),
            ReadError::Unsupported { refusal, at, detail } => {
                write!(f, "unsupported ext4 image ({}) at {at}: {detail}", refusal.code())
            }
            ReadError::NeedsRecovery => write!(
                f,
                "the ext4 journal needs recovery (needs_recovery is set): run e2fsck first (or mount and unmount it)"
            ),
            ReadError::NotClean { state } => write!(
                f,
                "the ext4 filesystem was not cleanly unmounted or has errors (s_state {state:#x}): run e2fsck first"
            ),
            ReadError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<crate::Error> for ReadError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Corrupt { what, detail } => ReadError::Corrupt {
                what,
                at: String::new(),
                detail,
            },
            crate::Error::Io { context, source } => ReadError::Io { context, source },
            other => ReadError::Corrupt {
                what: "structure",
                at: String::new(),
                detail: other.to_string(),
            },
        }
    }
}

/// Adds a location to a structure module's error.
pub(crate) fn at(e: crate::Error, where_: impl Into<String>) -> ReadError {
    match ReadError::from(e) {
        ReadError::Corrupt { what, at, detail } if at.is_empty() => ReadError::Corrupt {
            what,
            at: where_.into(),
            detail,
        },
        other => other,
    }
}
