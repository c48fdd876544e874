//! Inode records: one per file, directory, symlink or special file of a snapshot.
//!
//! FORMAT.md §6. Fixed part (84 bytes), little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | rec_len: length of the whole record |
//! | 4 | 8 | inode number (unique within the snapshot, ≥ 1) |
//! | 12 | 4 | mode: full `st_mode`, type bits included |
//! | 16 | 4 | uid |
//! | 20 | 4 | gid |
//! | 24 | 4 | nlink: number of directory entries naming it (1 for the root) |
//! | 28 | 8 | size in bytes (regular files: true size; symlinks: plaintext target length) |
//! | 36 | 12 | atime: i64 seconds ‖ u32 nanoseconds |
//! | 48 | 12 | mtime |
//! | 60 | 12 | ctime |
//! | 72 | 8 | rdev (char/block devices) |
//! | 80 | 2 | xattr count |
//! | 82 | 2 | reserved, zero |
//!
//! Then each xattr: `u8 name_len (1..=255) ‖ u32 value_len (≤ 65536) ‖ name ‖ value`,
//! **in plaintext**, as fscrypt leaves xattrs unencrypted.
//!
//! Then, by type:
//! - directory: 40-byte policy context ‖ `u32 count` ‖ count × (`u8 name_len ‖ u64 ino ‖ encrypted name`)
//! - symlink: 40-byte policy context ‖ `u16 blob_len` ‖ blob (`le16 ct_len ‖ ct ‖ 00`)
//! - regular file: `u32 count` ‖ count × (`u64 logical block ‖ u32 blocks ‖ u64 extent id ‖ u32 block offset in extent`)
//! - FIFO, socket, char/block device: nothing.

use crate::error::{CorruptKind, Result};
use crate::format::bytes::{Reader, Writer};
use crate::tree::{Meta, Timespec};
use fscrypt::context::{PolicyContext, POLICY_CTX_LEN};

/// Longest xattr value accepted.
pub const XATTR_VALUE_MAX: usize = 65536;
/// Fixed-part length.
pub const FIXED_LEN: usize = 84;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFSOCK: u32 = 0o140000;

/// A directory entry: an encrypted name and the inode it names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// The raw fscrypt ciphertext of the name.
    pub name: Vec<u8>,
    pub ino: u64,
}

/// One mapping of a file's logical blocks onto an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First logical block of the file covered.
    pub lblk: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// The extent id.
    pub extent: u64,
    /// First block within the extent.
    pub offset: u32,
}

/// Encoded size of a [`MapEntry`].
pub const MAP_ENTRY_LEN: usize = 24;

/// Type-specific inode contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Dir {
        ctx: PolicyContext,
        entries: Vec<DirEntry>,
    },
    Symlink {
        ctx: PolicyContext,
        blob: Vec<u8>,
    },
    File {
        map: Vec<MapEntry>,
    },
    /// FIFO, socket or device.
    Special,
}

/// An inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Body,
}

fn read_ts(r: &mut Reader<'_>) -> Result<Timespec> {
    let sec = r.i64()?;
    let nsec = r.u32()?;
    if nsec >= 1_000_000_000 {
        return Err(r.err(CorruptKind::OutOfRange {
            field: "nanoseconds",
            value: nsec.into(),
            max: 999_999_999,
        }));
    }
    Ok(Timespec { sec, nsec })
}

fn write_ts(w: &mut Writer, t: Timespec) {
    w.i64(t.sec);
    w.u32(t.nsec);
}

impl Inode {
    /// An inode with the metadata of `meta` (mode with type bits, owner,
    /// times, device number, xattrs).
    pub fn new(ino: u64, meta: &Meta, nlink: u32, size: u64, body: Body) -> Inode {
        Inode {
            ino,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            nlink,
            size,
            atime: meta.atime,
            mtime: meta.mtime,
            ctime: meta.ctime,
            rdev: meta.rdev,
            xattrs: meta.xattrs.clone(),
            body,
        }
    }

    /// The inode's metadata, as a tree source or writer sees it.
    pub fn meta(&self) -> Meta {
        Meta {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            rdev: self.rdev,
            xattrs: self.xattrs.clone(),
        }
    }

    /// Takes `meta` for an existing inode, keeping its file type.
    pub fn set_meta(&mut self, meta: Meta) {
        self.mode = (self.mode & S_IFMT) | (meta.mode & !S_IFMT);
        (self.uid, self.gid, self.rdev) = (meta.uid, meta.gid, meta.rdev);
        (self.atime, self.mtime, self.ctime) = (meta.atime, meta.mtime, meta.ctime);
        self.xattrs = meta.xattrs;
    }

    /// A new, empty directory owned by root, named by one entry (nlink 1),
    /// with all three timestamps `t`.
    pub fn empty_dir(ino: u64, perm: u32, ctx: PolicyContext, t: Timespec) -> Inode {
        Inode {
            ino,
            mode: S_IFDIR | (perm & 0o7777),
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            xattrs: Vec::new(),
            body: Body::Dir { ctx, entries: Vec::new() },
        }
    }

    /// The file type bits of the mode.
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir { .. })
    }

    /// Parses one record.
    pub fn read(r: &mut Reader<'_>) -> Result<Inode> {
        let rec_start = r.offset();
        let rec_len = r.u32()? as usize;
        if rec_len < FIXED_LEN || rec_len - 4 > r.remaining() {
            return Err(r.err(CorruptKind::OutOfRange {
                field: "inode rec_len",
                value: rec_len as u64,
                max: (r.remaining() + 4) as u64,
            }));
        }
        let body_bytes = r.take(rec_len - 4)?;
        let mut r = Reader::new(body_bytes, rec_start + 4, "inode record");
        let ino = r.u64()?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let nlink = r.u32()?;
        let size = r.u64()?;
        let atime = read_ts(&mut r)?;
        let mtime = read_ts(&mut r)?;
        let ctime = read_ts(&mut r)?;
        let rdev = r.u64()?;
        let nx = r.u16()? as usize;
        if r.u16()? != 0 {
            return Err(r.err(CorruptKind::NotZero("inode reserved bytes")));
        }
        let mut xattrs = Vec::with_capacity(nx.min(r.remaining() / 6));
        for _ in 0..nx {
            let nl = r.u8()? as usize;
            let vl = r.u32()? as usize;
            if nl == 0 || vl > XATTR_VALUE_MAX {
                return Err(r.err(CorruptKind::OutOfRange {
                    field: "xattr length",
                    value: vl as u64,
                    max: XATTR_VALUE_MAX as u64,
                }));
            }
            let name = r.take(nl)?.to_vec();
            let value = r.take(vl)?.to_vec();
            xattrs.push((name, value));
        }
        let body = match mode & S_IFMT {
            S_IFDIR => {
                let ctx = PolicyContext::from_bytes(&r.array::<POLICY_CTX_LEN>()?);
                let n = r.count("directory entry count", false, 10)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let nl = r.u8()? as usize;
                    let ino = r.u64()?;
                    if nl == 0 {
                        return Err(r.err(CorruptKind::BadValue {
                            field: "directory entry name length",
                            value: 0,
                        }));
                    }
                    entries.push(DirEntry {
                        name: r.take(nl)?.to_vec(),
                        ino,
                    });
                }
                Body::Dir { ctx, entries }
            }
            S_IFLNK => {
                let ctx = PolicyContext::from_bytes(&r.array::<POLICY_CTX_LEN>()?);
                let n = r.u16()? as usize;
                Body::Symlink {
                    ctx,
                    blob: r.take(n)?.to_vec(),
                }
            }
            S_IFREG => {
                let n = r.count("file map entry count", false, MAP_ENTRY_LEN)?;
                let mut map = Vec::with_capacity(n);
                for _ in 0..n {
                    map.push(MapEntry {
                        lblk: r.u64()?,
                        blocks: r.u32()?,
                        extent: r.u64()?,
                        offset: r.u32()?,
                    });
                }
                Body::File { map }
            }
            S_IFIFO | S_IFCHR | S_IFBLK | S_IFSOCK => Body::Special,
            t => {
                return Err(r.err(CorruptKind::BadValue {
                    field: "inode file type",
                    value: t.into(),
                }))
            }
        };
        r.finish()?;
        Ok(Inode {
            ino,
            mode,
            uid,
            gid,
            nlink,
            size,
            atime,
            mtime,
            ctime,
            rdev,
            xattrs,
            body,
        })
    }

    /// Encodes one record.
    pub fn write(&self, w: &mut Writer) {
        let start = w.buf.len();
        w.u32(0); // rec_len, patched below
        w.u64(self.ino);
        w.u32(self.mode);
        w.u32(self.uid);
        w.u32(self.gid);
        w.u32(self.nlink);
        w.u64(self.size);
        write_ts(w, self.atime);
        write_ts(w, self.mtime);
        write_ts(w, self.ctime);
        w.u64(self.rdev);
        w.u16(self.xattrs.len() as u16);
        w.u16(0);
        for (n, v) in &self.xattrs {
            w.u8(n.len() as u8);
            w.u32(v.len() as u32);
            w.bytes(n);
            w.bytes(v);
        }
        match &self.body {
            Body::Dir { ctx, entries } => {
                w.bytes(&ctx.to_bytes());
                w.u32(entries.len() as u32);
                for e in entries {
                    w.u8(e.name.len() as u8);
                    w.u64(e.ino);
                    w.bytes(&e.name);
                }
            }
            Body::Symlink { ctx, blob } => {
                w.bytes(&ctx.to_bytes());
                w.u16(blob.len() as u16);
                w.bytes(blob);
            }
            Body::File { map } => {
                w.u32(map.len() as u32);
                for m in map {
                    w.u64(m.lblk);
                    w.u32(m.blocks);
                    w.u64(m.extent);
                    w.u32(m.offset);
                }
            }
            Body::Special => {}
        }
        let len = (w.buf.len() - start) as u32;
        w.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// Checks the limits an inode must respect to be encodable (xattr counts and
/// lengths, name lengths). The builders call this before accepting input.
pub fn check_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> std::result::Result<(), String> {
    if xattrs.len() > u16::MAX as usize {
        return Err(format!("{} xattrs (max {})", xattrs.len(), u16::MAX));
    }
    for (n, v) in xattrs {
        if n.is_empty() || n.len() > 255 {
            return Err(format!("xattr name of {} bytes (1..=255)", n.len()));
        }
        if v.len() > XATTR_VALUE_MAX {
            return Err(format!("xattr value of {} bytes (max {XATTR_VALUE_MAX})", v.len()));
        }
    }
    Ok(())
}

/// The ciphertext inside an encrypted symlink blob `le16(ct_len) ‖ ct ‖ 0x00`,
/// or `None` if the framing is wrong or the length impossible (16..=4093).
pub fn symlink_ciphertext(blob: &[u8]) -> Option<&[u8]> {
    let (len, rest) = blob.split_first_chunk::<2>()?;
    let n = u16::from_le_bytes(*len) as usize;
    if !(16..=fscrypt::SYMLINK_MAX).contains(&n) || rest.len() != n + 1 || rest[n] != 0 {
        return None;
    }
    Some(&rest[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use fscrypt::{KeyId, Nonce};

    fn base(mode: u32, body: Body) -> Inode {
        Inode {
            ino: 5,
            mode,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 12345,
            atime: Timespec { sec: 1, nsec: 2 },
            mtime: Timespec {
                sec: -3,
                nsec: 999_999_999,
            },
            ctime: Timespec { sec: 5, nsec: 6 },
            rdev: 0,
            xattrs: vec![(b"user.a".to_vec(), b"v".to_vec())],
            body,
        }
    }

    #[test]
    fn round_trip_all_types() {
        let ctx = PolicyContext::new(KeyId([1; 16]), Nonce([2; 16]));
        let cases = vec![
            base(
                S_IFDIR | 0o755,
                Body::Dir {
                    ctx,
                    entries: vec![DirEntry { name: vec![7; 32], ino: 9 }],
                },
            ),
            base(S_IFLNK | 0o777, Body::Symlink { ctx, blob: vec![1, 2, 3] }),
            base(
                S_IFREG | 0o4755,
                Body::File {
                    map: vec![MapEntry {
                        lblk: 3,
                        blocks: 2,
                        extent: 11,
                        offset: 1,
                    }],
                },
            ),
            base(S_IFIFO | 0o644, Body::Special),
        ];
        for ino in cases {
            let mut w = Writer::default();
            ino.write(&mut w);
            let mut r = Reader::new(&w.buf, 0, "t");
            assert_eq!(Inode::read(&mut r).unwrap(), ino);
            assert_eq!(r.remaining(), 0);
            // every truncation fails cleanly
            for cut in 0..w.buf.len() {
                let mut r = Reader::new(&w.buf[..cut], 0, "t");
                assert!(Inode::read(&mut r).is_err());
            }
        }
    }
}
