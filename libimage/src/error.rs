//! Typed errors for everything libimage does.
//!
//! Modelled on ext4-view's `Ext4Error` and age's `DecryptError`: the caller can
//! tell an I/O failure from a corrupt image, an unsupported feature, a wrong key
//! or an authentication failure without parsing strings.

use std::fmt;
use std::io;

use fscrypt::KeyId;

use crate::finding::Code;

/// What exactly is wrong with bytes read from an image or a backup.
///
/// Every variant names *what* was wrong; the [`Error::Corrupt`] wrapper adds
/// *where* (a block number or byte offset and the structure being read).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// A magic number did not match.
    BadMagic,
    /// A crc32c did not match the bytes it covers.
    BadChecksum { stored: u32, computed: u32 },
    /// A structure ended before its declared length.
    Truncated { needed: u64, available: u64 },
    /// A length, count or index is out of its allowed range.
    OutOfRange { field: &'static str, value: u64, max: u64 },
    /// A field holds a value the format does not allow.
    BadValue { field: &'static str, value: u64 },
    /// An encryption context is malformed (version, modes, flags, reserved bytes).
    BadContext(&'static str),
    /// Two things that must be distinct are not (names, inode numbers, paths).
    Duplicate(&'static str),
    /// A reference points at something that does not exist.
    Dangling { what: &'static str, id: u64 },
    /// The directory graph is not a tree.
    Cycle { ino: u64 },
    /// Neither superblock slot holds a valid superblock.
    NoValidSuperblock,
    /// Bytes the format requires to be zero (reserved fields, padding) are not.
    NotZero(&'static str),
    /// Bytes follow the end of a structure that must be last (the named end).
    TrailingData(&'static str),
    /// A name (snapshot name, path component) is not allowed; says why.
    BadName(&'static str),
    /// An encrypted symlink blob is malformed; says why.
    BadSymlink(&'static str),
    /// A tar or pax header (or one of its records) does not parse; says why.
    BadHeader(&'static str),
    /// A backup's JSON manifest is missing, malformed or inconsistent.
    BadManifest,
    /// A backup member is not valid (its records disagree, or it cannot be
    /// placed in the image); says what.
    BadMember(&'static str),
    /// The sequence of members or blocks in an archive is wrong (a stray end
    /// marker, no trailer); says what.
    BadArchive(&'static str),
    /// The decoded metadata fails a keyless structural check (the finding's
    /// code; its message is in the location).
    Finding(Code),
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::BadMagic => write!(f, "bad magic number"),
            CorruptKind::BadChecksum { stored, computed } => {
                write!(f, "crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            CorruptKind::Truncated { needed, available } => write!(f, "truncated: needed {needed} bytes, only {available} available"),
            CorruptKind::OutOfRange { field, value, max } => {
                write!(f, "{field} = {value} is out of range (max {max})")
            }
            CorruptKind::BadValue { field, value } => write!(f, "{field} has invalid value {value:#x}"),
            CorruptKind::BadContext(why) => write!(f, "malformed encryption context: {why}"),
            CorruptKind::Duplicate(what) => write!(f, "duplicate {what}"),
            CorruptKind::Dangling { what, id } => write!(f, "dangling reference to {what} {id}"),
            CorruptKind::Cycle { ino } => write!(f, "directory cycle through inode {ino}"),
            CorruptKind::NoValidSuperblock => write!(f, "no valid superblock in either slot"),
            CorruptKind::NotZero(what) => write!(f, "{what} are not zero"),
            CorruptKind::TrailingData(end) => write!(f, "data after {end}"),
            CorruptKind::BadName(why) => write!(f, "invalid name: {why}"),
            CorruptKind::BadSymlink(why) => write!(f, "malformed symlink blob: {why}"),
            CorruptKind::BadHeader(why) => write!(f, "malformed header: {why}"),
            CorruptKind::BadManifest => write!(f, "invalid manifest"),
            CorruptKind::BadMember(why) => write!(f, "invalid member: {why}"),
            CorruptKind::BadArchive(why) => write!(f, "invalid archive: {why}"),
            CorruptKind::Finding(code) => write!(f, "fails the structural check {code} ({})", code.meaning()),
        }
    }
}

impl CorruptKind {
    /// A one-line hint for a human on what to do about this kind of damage.
    pub fn hint(&self) -> &'static str {
        match self {
            CorruptKind::NoValidSuperblock => "this is not a cryptimg image, or both superblocks are destroyed; restore it from a backup",
            CorruptKind::Truncated { .. } => {
                "the file was cut short (interrupted copy, full disk); copy it again or restore it from a backup"
            }
            CorruptKind::BadChecksum { .. } | CorruptKind::BadMagic | CorruptKind::NotZero(_) => {
                "the bytes were damaged after they were written; check the whole image for a full report, or restore from a backup"
            }
            CorruptKind::Finding(_) => "check the image for a full report; a repair may fix it",
            CorruptKind::BadHeader(_)
            | CorruptKind::BadManifest
            | CorruptKind::BadMember(_)
            | CorruptKind::BadArchive(_)
            | CorruptKind::TrailingData(_) => "the archive is damaged or was not written by cryptimg; verify it, or use another copy",
            _ => "check the whole image for a full report, or restore from a backup",
        }
    }
}

/// Where in an image or archive a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The structure being read, e.g. "superblock slot 1" or "inode 12".
    pub what: String,
    /// Byte offset in the image/archive, when known.
    pub offset: Option<u64>,
}

impl Location {
    /// True for a place in a backup archive (the backup reader names them
    /// "backup member …", "backup tar header …", "backup manifest …").
    pub fn is_archive(&self) -> bool {
        self.what.starts_with("backup ")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(off) => write!(f, "{} (byte offset {off})", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// The libimage error type.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the path or object involved.
    Io { context: String, source: io::Error },
    /// Bytes from an image or a backup are not valid.
    Corrupt { kind: CorruptKind, at: Location },
    /// A valid image or input uses something this build does not support.
    Unsupported(String),
    /// The caller asked for something invalid (bad name, bad option, existing target).
    Invalid(String),
    /// None of the given keys matches what the image needs.
    WrongKey { given: Vec<KeyId>, needed: Vec<KeyId> },
    /// Decryption produced bytes that fail validation (wrong key or tampering).
    AuthFailed { at: Location },
    /// The image has no room left (fixed `--size`).
    NoSpace { needed_blocks: u64, free_blocks: u64 },
    /// Fault injection (`CRYPTIMG_FAIL_AFTER_WRITES`) stopped the operation.
    InjectedFault { writes: u64 },
    /// A broken internal invariant: a bug in cryptimg, not a problem with the
    /// input or the arguments.
    Internal(&'static str),
    /// Another process holds the image's lock (a writer, or readers when
    /// this process wants to write); `pid` when `/proc/locks` names it.
    InUse { image: String, pid: Option<u32> },
}

impl Error {
    /// Shorthand for a corruption error.
    pub fn corrupt(kind: CorruptKind, what: impl Into<String>, offset: Option<u64>) -> Self {
        Error::Corrupt {
            kind,
            at: Location { what: what.into(), offset },
        }
    }

    /// Wraps an `io::Error` with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A one-line hint for a human on what to do next. It names no command
    /// or flag: the binaries, which know their own, add those.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::Io { .. } => "check the path, permissions and free disk space",
            // Bytes of a backup archive: the archive is damaged, not an image.
            Error::Corrupt { at, .. } if at.is_archive() => {
                "the archive is damaged or was not written by cryptimg; verify it, or use another copy"
            }
            Error::Corrupt { kind, .. } => kind.hint(),
            Error::Unsupported(_) => "use a newer cryptimg, or rebuild the image",
            Error::Invalid(_) => "check the arguments and try again",
            Error::WrongKey { .. } => "supply the key files whose identifiers the image needs (the image's info lists them)",
            Error::AuthFailed { .. } => "the key may be wrong or the image tampered with; a data scrub shows which extents are damaged",
            Error::NoSpace { .. } => "allow a larger image, or let it grow as needed",
            Error::InjectedFault { .. } => "unset CRYPTIMG_FAIL_AFTER_WRITES",
            Error::Internal(_) => "this is a bug in cryptimg; please report it with the command that triggered it",
            Error::InUse { .. } => "wait for the other command to finish, or retry",
        }
    }

    /// True for errors caused by bad input bytes (exit code 4), as opposed to
    /// operational errors (exit code 8).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::AuthFailed { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Corrupt { kind, at } => write!(f, "corrupt {at}: {kind}"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::Invalid(s) => f.write_str(s),
            Error::WrongKey { given, needed } => {
                let g: Vec<String> = given.iter().map(|k| k.to_string()).collect();
                let missing: Vec<String> = needed.iter().filter(|k| !given.contains(k)).map(|k| k.to_string()).collect();
                if g.is_empty() {
                    write!(f, "no key given: the image needs key id(s) [{}]", missing.join(", "))
                } else {
                    // "missing", not "wrong": a given key may be right for
                    // other parts of the image (a snapshot under two keys).
                    write!(f, "missing key id(s) [{}] (given key id(s) [{}])", missing.join(", "), g.join(", "))
                }
            }
            Error::AuthFailed { at } => write!(f, "decryption failed to validate at {at}"),
            Error::NoSpace {
                needed_blocks,
                free_blocks,
            } => write!(f, "image is full: needed {needed_blocks} blocks, {free_blocks} free"),
            Error::InjectedFault { writes } => {
                write!(f, "injected fault after {writes} writes (CRYPTIMG_FAIL_AFTER_WRITES)")
            }
            Error::Internal(what) => write!(f, "internal error: {what}"),
            Error::InUse { image, pid: Some(pid) } => write!(f, "{image} is in use by another process (pid {pid})"),
            Error::InUse { image, pid: None } => write!(f, "{image} is in use by another process"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<fscrypt::Error> for Error {
    fn from(e: fscrypt::Error) -> Self {
        match e {
            fscrypt::Error::Invalid(s) => Error::Invalid(s),
            fscrypt::Error::Corrupt { what, kind } => {
                let kind = match kind {
                    fscrypt::CorruptKind::BadLength { field, value } => CorruptKind::BadValue { field, value },
                    fscrypt::CorruptKind::Truncated { needed, available } => CorruptKind::Truncated { needed, available },
                    fscrypt::CorruptKind::MissingNul => CorruptKind::BadSymlink("it does not end in a NUL byte"),
                };
                Error::corrupt(kind, what, None)
            }
            fscrypt::Error::AuthFailed(what) => Error::AuthFailed {
                at: Location { what, offset: None },
            },
            fscrypt::Error::Random(source) => Error::io("reading the operating system's random number generator", source),
            other => Error::Invalid(other.to_string()),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
