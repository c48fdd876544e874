//! The fscrypt crate's error type.
//!
//! Three kinds of failure are kept apart so that a caller can map them onto
//! its own taxonomy: the caller passed something fscrypt cannot encrypt
//! ([`Error::Invalid`]), stored ciphertext has a shape no encryption produces
//! ([`Error::Corrupt`]), or decryption produced bytes that fail fscrypt's own
//! rules, which means a wrong key or tampering ([`Error::AuthFailed`]).

use std::fmt;
use std::io;

/// What exactly is wrong with stored ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptKind {
    /// A length field or a ciphertext length that no plaintext pads to.
    BadLength { field: &'static str, value: u64 },
    /// The bytes end before the declared length.
    Truncated { needed: u64, available: u64 },
    /// An encrypted symlink blob does not end in exactly one NUL byte.
    MissingNul,
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::BadLength { field, value } => write!(f, "{field} has invalid value {value:#x}"),
            CorruptKind::Truncated { needed, available } => {
                write!(f, "truncated: needed {needed} bytes, only {available} available")
            }
            CorruptKind::MissingNul => f.write_str("symlink blob does not end in a NUL byte"),
        }
    }
}

/// The fscrypt error type.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The caller asked for something fscrypt does not allow (a key of the
    /// wrong length, an empty name, a name with `/` or NUL, ...).
    Invalid(String),
    /// Stored ciphertext is malformed; `what` names the structure.
    Corrupt { what: &'static str, kind: CorruptKind },
    /// Decryption produced bytes that break fscrypt's rules: a wrong key or
    /// tampering (fscrypt carries no MAC). `what` says which rule.
    AuthFailed(String),
    /// The operating system's random number generator failed.
    Random(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(s) => f.write_str(s),
            Error::Corrupt { what, kind } => write!(f, "corrupt {what}: {kind}"),
            Error::AuthFailed(why) => write!(f, "decryption failed to validate: {why}"),
            Error::Random(e) => write!(f, "reading the operating system's random number generator: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Random(e) => Some(e),
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
