//! Snapshot records: named, independent trees that share extents.
//!
//! FORMAT.md §7. Each record:
//!
//! | size | field |
//! |---|---|
//! | 1 | name length (1..=255) |
//! | n | name (UTF-8, no `/`, no NUL, no control characters) |
//! | 16 | policy: the master key identifier new data is written under |
//! | 8 | root inode number |
//! | 8 | next inode number to allocate |
//! | 8 | created: seconds since the epoch (i64) |
//! | 4 | flags (none defined; must be zero) |
//! | 8 | inode count |
//! | … | inode records (see `inode.rs`), sorted by inode number |

use std::collections::BTreeMap;

use crate::error::{CorruptKind, Error, Result};
use crate::format::bytes::{Reader, Writer};
use crate::format::inode::{Inode, FIXED_LEN};
use fscrypt::KeyId;

/// Longest snapshot name.
pub const NAME_MAX: usize = 255;

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub policy: KeyId,
    pub root: u64,
    pub next_ino: u64,
    pub created: i64,
    pub inodes: BTreeMap<u64, Inode>,
}

/// Checks a snapshot name given by a user or read from an image.
pub fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err("snapshot names are 1..=255 bytes");
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err("snapshot names may not contain '/' or control characters");
    }
    Ok(())
}

impl Snapshot {
    pub fn read(r: &mut Reader<'_>) -> Result<Snapshot> {
        let at = r.offset();
        let nl = r.u8()? as usize;
        let name = String::from_utf8(r.take(nl)?.to_vec())
            .map_err(|_| Error::corrupt(CorruptKind::BadName("snapshot name is not UTF-8"), "snapshot record", Some(at)))?;
        if let Err(why) = check_name(&name) {
            return Err(Error::corrupt(CorruptKind::BadName(why), "snapshot record", Some(at)));
        }
        let policy = KeyId(r.array()?);
        let root = r.u64()?;
        let next_ino = r.u64()?;
        let created = r.i64()?;
        let flags = r.u32()?;
        if flags != 0 {
            return Err(r.err(CorruptKind::BadValue {
                field: "snapshot flags",
                value: flags.into(),
            }));
        }
        let n = r.count("inode count", true, FIXED_LEN)?;
        let mut inodes = BTreeMap::new();
        for _ in 0..n {
            let at = r.offset();
            let ino = Inode::read(r)?;
            if ino.ino == 0 || ino.ino >= next_ino {
                return Err(Error::corrupt(
                    CorruptKind::OutOfRange {
                        field: "inode number",
                        value: ino.ino,
                        max: next_ino.saturating_sub(1),
                    },
                    format!("snapshot {name:?}"),
                    Some(at),
                ));
            }
            if inodes.insert(ino.ino, ino).is_some() {
                return Err(Error::corrupt(
                    CorruptKind::Duplicate("inode number"),
                    format!("snapshot {name:?}"),
                    Some(at),
                ));
            }
        }
        Ok(Snapshot {
            name,
            policy,
            root,
            next_ino,
            created,
            inodes,
        })
    }

    pub fn write(&self, w: &mut Writer) {
        w.u8(self.name.len() as u8);
        w.bytes(self.name.as_bytes());
        w.bytes(&self.policy.0);
        w.u64(self.root);
        w.u64(self.next_ino);
        w.i64(self.created);
        w.u32(0);
        w.u64(self.inodes.len() as u64);
        for ino in self.inodes.values() {
            ino.write(w);
        }
    }

    /// Allocates a fresh inode number.
    pub fn alloc_ino(&mut self) -> u64 {
        let n = self.next_ino;
        self.next_ino += 1;
        n
    }
}
