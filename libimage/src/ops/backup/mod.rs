//! `backup-crypt`: ciphertext-only backup and restore that never needs a key.
//!
//! A backup is a POSIX pax archive (docs/BACKUP.md): a JSON manifest, then
//! one member per inode path — paths are no-key names — carrying the
//! encrypted name, the encryption contexts, the symlink blob, the original
//! size and the extent map as `CRYPTIMG.*` pax records, and the file
//! ciphertext as member data; a trailer member closes it with the member
//! count and the crc32c of the whole stream. Incremental backups (format
//! version 2) carry the members that have no data in compact binary
//! listings ([`listing`]) instead: an unchanged file costs about a hundred
//! bytes instead of about two kilobytes.
//!
//! - [`create::create_backup`] streams a snapshot out of an image (read-only);
//! - [`restore::restore_backup`] rebuilds it, without keys, as a new image or
//!   as a new snapshot of an existing one (one commit; nothing partial on failure);
//! - [`verify::verify_backup`] checks an archive with no image, and
//!   [`verify::list_backup`] lists it (real names with a key);
//! - [`scan::scan`] is the strict, validating reader they all share.

pub mod base;
pub mod create;
pub mod format;
pub mod listing;
pub mod pax;
pub mod restore;
pub mod scan;
pub mod segments;
pub mod verify;

pub use create::{create_backup, BackupOptions, BackupReport};
pub use restore::{restore_backup, RestoreOptions, RestoreReport};
pub use verify::{list_backup, verify_backup, ListEntry, VerifyReport};
