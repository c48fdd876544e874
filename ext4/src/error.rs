//! Typed errors of the ext4 crate.

use std::fmt;
use std::io;

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong reading or writing ext4 structures.
#[derive(Debug)]
pub enum Error {
    /// On-disk bytes are not a valid structure: `what` names it, `detail`
    /// says which field and where.
    Corrupt { what: &'static str, detail: String },
    /// An I/O error with what was being done.
    Io { context: String, source: io::Error },
    /// The image has no room left: `what` was being allocated.
    NoSpace { what: String, blocks: u64 },
    /// Every inode of the image is in use.
    NoInodes { inodes: u64 },
    /// A request the writer cannot honour (bad name, unsupported xattr, ...).
    Invalid(String),
    /// An fscrypt error (key derivation, name encryption).
    Crypto(fscrypt::Error),
}

impl Error {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Corrupt { what, detail } => write!(f, "corrupt ext4 {what}: {detail}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::NoSpace { what, blocks } => write!(
                f,
                "the ext4 image is full ({blocks} blocks of 4096 bytes) while allocating {what}; give a larger --size"
            ),
            Error::NoInodes { inodes } => {
                write!(
                    f,
                    "the ext4 image has no free inode left (all {inodes} in use); give a larger --size"
                )
            }
            Error::Invalid(m) => write!(f, "{m}"),
            Error::Crypto(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Crypto(e) => Some(e),
            _ => None,
        }
    }
}

impl From<fscrypt::Error> for Error {
    fn from(e: fscrypt::Error) -> Self {
        Error::Crypto(e)
    }
}
