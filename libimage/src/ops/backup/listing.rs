//! The compact listing of format version 2 (docs/BACKUP.md §4a): tree
//! members without data, encoded in binary inside `cryptimg-backup.listing`
//! members instead of one pax + ustar member each.
//!
//! An [`Entry`] carries exactly what the §4 records of the member it replaces
//! carry; only the parent directory is named by its ordinal instead of by its
//! path. The scanner turns each decoded entry back into that member's
//! records ([`Entry::to_member`]) and validates it exactly like a pax member.

use super::format::{b64, dev_split, encode_items, encode_time, ExtentKey, Item};
use super::pax::{push_record, Ustar};
use crate::error::{CorruptKind, Error, Result};
use crate::format::inode::{S_IFMT, S_IFREG};
use crate::tree::Timespec;
use fscrypt::context::{EXTENT_CTX_LEN, POLICY_CTX_LEN};

/// The path of a listing member.
pub const LISTING_NAME: &str = "cryptimg-backup.listing";
/// Largest listing member data written or accepted.
pub const MAX_LISTING: u64 = 1 << 20;
/// The smallest encoded extent item: three one-byte numbers, the context,
/// a one-byte length and the crc.
const MIN_ITEM: usize = 3 + EXTENT_CTX_LEN + 1 + 4;

/// What follows the common fields of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// FIFO, socket, character or block device: nothing.
    Special,
    Dir {
        policy: [u8; POLICY_CTX_LEN],
    },
    Symlink {
        policy: [u8; POLICY_CTX_LEN],
        blob: Vec<u8>,
        size: u64,
    },
    /// A regular file whose every item is `r` (none is stored).
    File {
        size: u64,
        items: Vec<Item>,
    },
    /// Another name of an earlier member: that member's path.
    HardLink {
        target: Vec<u8>,
    },
}

/// One listing entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The ustar typeflag the member would have (`5 0 2 1 3 4 6`).
    pub typeflag: u8,
    /// Ordinal of the parent directory (its inode number in the restored
    /// snapshot; 0 for the root itself).
    pub parent: u64,
    /// Raw encrypted name (empty for the root).
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub mtime: Timespec,
    pub atime: Timespec,
    pub ctime: Timespec,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Body,
}

fn put_uv(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uv(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_time(out: &mut Vec<u8>, t: Timespec) {
    // zigzag
    put_uv(out, ((t.sec << 1) ^ (t.sec >> 63)) as u64);
    put_uv(out, u64::from(t.nsec));
}

impl Entry {
    /// Appends the entry's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.typeflag);
        put_uv(out, self.parent);
        put_bytes(out, &self.name);
        put_uv(out, u64::from(self.mode));
        put_uv(out, u64::from(self.uid));
        put_uv(out, u64::from(self.gid));
        put_uv(out, self.rdev);
        for t in [self.mtime, self.atime, self.ctime] {
            put_time(out, t);
        }
        put_uv(out, self.xattrs.len() as u64);
        for (n, v) in &self.xattrs {
            put_bytes(out, n);
            put_bytes(out, v);
        }
        match &self.body {
            Body::Special => {}
            Body::Dir { policy } => out.extend_from_slice(policy),
            Body::Symlink { policy, blob, size } => {
                out.extend_from_slice(policy);
                put_bytes(out, blob);
                put_uv(out, *size);
            }
            Body::File { size, items } => {
                put_uv(out, *size);
                put_uv(out, items.len() as u64);
                for it in items {
                    put_uv(out, it.lblk);
                    put_uv(out, u64::from(it.count));
                    put_uv(out, u64::from(it.off));
                    out.extend_from_slice(&it.ext.ctx);
                    put_uv(out, u64::from(it.ext.blocks));
                    out.extend_from_slice(&it.ext.crc.to_le_bytes());
                }
            }
            Body::HardLink { target } => put_bytes(out, target),
        }
    }

    /// The member this entry stands for, as a pax member: its ustar header
    /// and its records (without `CRYPTIMG.crc32c`), at `path`.
    pub fn to_member(&self, path: &str) -> (Ustar, Vec<u8>) {
        let (devmajor, devminor) = dev_split(self.rdev);
        let mut u = Ustar {
            name: path.as_bytes()[..path.len().min(100)].to_vec(),
            mode: self.mode,
            uid: u64::from(self.uid),
            gid: u64::from(self.gid),
            typeflag: self.typeflag,
            devmajor,
            devminor,
            ..Default::default()
        };
        let mut r = Vec::new();
        push_record(&mut r, b"path", path.as_bytes());
        match &self.body {
            Body::HardLink { target } => push_record(&mut r, b"linkpath", target),
            Body::Symlink { blob, .. } => {
                if let Some(ct) = crate::format::inode::symlink_ciphertext(blob) {
                    let t = b64(ct);
                    u.linkname = t.as_bytes()[..t.len().min(100)].to_vec();
                    push_record(&mut r, b"linkpath", t.as_bytes());
                }
            }
            _ => {}
        }
        push_record(&mut r, b"mtime", encode_time(self.mtime).as_bytes());
        push_record(&mut r, b"atime", encode_time(self.atime).as_bytes());
        push_record(&mut r, b"ctime", encode_time(self.ctime).as_bytes());
        for (n, v) in &self.xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(n);
            push_record(&mut r, &k, v);
        }
        if !self.name.is_empty() {
            push_record(&mut r, b"CRYPTIMG.name", b64(&self.name).as_bytes());
        }
        match &self.body {
            Body::Special | Body::HardLink { .. } => {}
            Body::Dir { policy } => push_record(&mut r, b"CRYPTIMG.policy", hex::encode(policy).as_bytes()),
            Body::Symlink { policy, blob, size } => {
                push_record(&mut r, b"CRYPTIMG.policy", hex::encode(policy).as_bytes());
                push_record(&mut r, b"CRYPTIMG.symlink", hex::encode(blob).as_bytes());
                push_record(&mut r, b"CRYPTIMG.size", size.to_string().as_bytes());
            }
            Body::File { size, items } => {
                push_record(&mut r, b"CRYPTIMG.size", size.to_string().as_bytes());
                if !items.is_empty() {
                    let (e, i) = encode_items(items);
                    push_record(&mut r, b"CRYPTIMG.extents", e.as_bytes());
                    push_record(&mut r, b"CRYPTIMG.extinfo", i.as_bytes());
                }
            }
        }
        (u, r)
    }
}

/// Reads entries out of a listing member's data. Every length and count is
/// checked against the bytes that remain before anything is allocated.
pub struct Decoder<'a> {
    b: &'a [u8],
    pos: usize,
    /// Archive offset of `b[0]`.
    base: u64,
}

impl<'a> Decoder<'a> {
    pub fn new(b: &'a [u8], base: u64) -> Self {
        Decoder { b, pos: 0, base }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// Archive offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn bad(&self, why: &'static str, start: u64) -> Error {
        Error::corrupt(
            CorruptKind::BadMember(why),
            format!("backup listing entry at archive offset {start}"),
            Some(self.offset()),
        )
    }

    fn take(&mut self, n: usize, start: u64) -> Result<&'a [u8]> {
        if n > self.b.len() - self.pos {
            return Err(Error::corrupt(
                CorruptKind::Truncated {
                    needed: n as u64,
                    available: (self.b.len() - self.pos) as u64,
                },
                format!("backup listing entry at archive offset {start} (the listing ends inside it)"),
                Some(self.offset()),
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// An unsigned LEB128 number in its shortest form, at most `max`.
    fn uv(&mut self, max: u64, field: &'static str, start: u64) -> Result<u64> {
        let at = self.offset();
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.take(1, start)?[0];
            let part = u64::from(byte & 0x7f);
            if i == 9 && part > 1 {
                return Err(self.bad("a number does not fit in 64 bits", start));
            }
            v |= part << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(self.bad("a number is not in its shortest form", start));
                }
                if v > max {
                    return Err(Error::corrupt(
                        CorruptKind::OutOfRange { field, value: v, max },
                        format!("backup listing entry at archive offset {start}"),
                        Some(at),
                    ));
                }
                return Ok(v);
            }
        }
        Err(self.bad("a number does not fit in 64 bits", start))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    fn bytes(&mut self, max: u64, field: &'static str, start: u64) -> Result<&'a [u8]> {
        let n = self.uv(max, field, start)?;
        self.take(n as usize, start)
    }

    fn time(&mut self, start: u64) -> Result<Timespec> {
        let z = self.uv(u64::MAX, "time", start)?;
        let sec = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let nsec = self.uv(999_999_999, "nanoseconds", start)? as u32;
        Ok(Timespec { sec, nsec })
    }

    fn array<const N: usize>(&mut self, start: u64) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, start)?);
        Ok(a)
    }

    /// Decodes the next entry. Only the encoding is checked here; what the
    /// values mean is checked by the scanner, as for a pax member.
    pub fn entry(&mut self) -> Result<Entry> {
        let start = self.offset();
        let u32max = u64::from(u32::MAX);
        let typeflag = self.take(1, start)?[0];
        if !matches!(typeflag, b'5' | b'0' | b'2' | b'1' | b'3' | b'4' | b'6') {
            return Err(Error::corrupt(
                CorruptKind::BadValue {
                    field: "listing entry type",
                    value: typeflag.into(),
                },
                format!("backup listing entry at archive offset {start}"),
                Some(start),
            ));
        }
        let parent = self.uv(u64::MAX, "parent ordinal", start)?;
        let name = self.bytes(255, "encrypted name length", start)?.to_vec();
        if (parent == 0) != name.is_empty() {
            return Err(self.bad("only the root has no name, and only the root has parent ordinal 0", start));
        }
        let mode = self.uv(u32max, "mode", start)? as u32;
        let uid = self.uv(u32max, "uid", start)? as u32;
        let gid = self.uv(u32max, "gid", start)? as u32;
        let rdev = self.uv(u64::MAX, "rdev", start)?;
        let mtime = self.time(start)?;
        let atime = self.time(start)?;
        let ctime = self.time(start)?;
        let left = (self.b.len() - self.pos) as u64;
        let nx = self.uv(left / 2, "xattr count", start)?;
        let mut xattrs = Vec::with_capacity(nx as usize);
        for _ in 0..nx {
            let n = self.bytes(255, "xattr name length", start)?;
            if n.is_empty() || n.contains(&b'=') || n.contains(&0) {
                return Err(self.bad("an xattr name is empty or holds '=' or NUL", start));
            }
            let v = self.bytes(MAX_LISTING, "xattr value length", start)?;
            xattrs.push((n.to_vec(), v.to_vec()));
        }
        let body = match typeflag {
            b'5' => Body::Dir {
                policy: self.array(start)?,
            },
            b'2' => Body::Symlink {
                policy: self.array(start)?,
                blob: self.bytes(fscrypt::SYMLINK_MAX as u64 + 3, "symlink blob length", start)?.to_vec(),
                size: self.uv(u64::MAX, "symlink size", start)?,
            },
            b'1' => Body::HardLink {
                target: self
                    .bytes(super::format::MAX_PATH as u64, "hard link target length", start)?
                    .to_vec(),
            },
            b'0' if mode & S_IFMT == S_IFREG => {
                let size = self.uv(u64::MAX, "file size", start)?;
                let left = (self.b.len() - self.pos) as u64;
                let n = self.uv(left / MIN_ITEM as u64, "extent item count", start)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let lblk = self.uv(u64::MAX, "logical block", start)?;
                    let count = self.uv(u32max, "block count", start)? as u32;
                    let off = self.uv(u32max, "offset in the extent", start)? as u32;
                    let ctx: [u8; EXTENT_CTX_LEN] = self.array(start)?;
                    let blocks = self.uv(u32max, "extent length", start)? as u32;
                    let crc = u32::from_le_bytes(self.array(start)?);
                    items.push(Item {
                        lblk,
                        count,
                        off,
                        ext: ExtentKey { ctx, crc, blocks },
                        stored: false,
                    });
                }
                Body::File { size, items }
            }
            _ => Body::Special,
        };
        Ok(Entry {
            typeflag,
            parent,
            name,
            mode,
            uid,
            gid,
            rdev,
            mtime,
            atime,
            ctime,
            xattrs,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        let t = |sec, nsec| Timespec { sec, nsec };
        let common = Entry {
            typeflag: b'5',
            parent: 0,
            name: Vec::new(),
            mode: 0o40755,
            uid: u32::MAX,
            gid: 0,
            rdev: u64::MAX,
            mtime: t(i64::MIN, 999_999_999),
            atime: t(i64::MAX, 0),
            ctime: t(-3, 250_000_000),
            xattrs: vec![(b"user.a".to_vec(), vec![0, b'=', b'\n']), (b"user.e".to_vec(), vec![])],
            body: Body::Dir {
                policy: [7; POLICY_CTX_LEN],
            },
        };
        let mut v = vec![common.clone()];
        let mut f = common.clone();
        f.typeflag = b'0';
        f.parent = 1;
        f.name = vec![9; 32];
        f.mode = 0o100644;
        f.body = Body::File {
            size: u64::MAX,
            items: vec![Item {
                lblk: u64::MAX,
                count: u32::MAX,
                off: 5,
                ext: ExtentKey {
                    ctx: [3; EXTENT_CTX_LEN],
                    crc: 0xdead_beef,
                    blocks: 77,
                },
                stored: false,
            }],
        };
        v.push(f.clone());
        f.typeflag = b'1';
        f.body = Body::HardLink { target: b"./abc".to_vec() };
        v.push(f.clone());
        f.typeflag = b'2';
        f.body = Body::Symlink {
            policy: [1; POLICY_CTX_LEN],
            blob: vec![1, 2, 3],
            size: 3,
        };
        v.push(f.clone());
        f.typeflag = b'0';
        f.mode = 0o140755;
        f.body = Body::Special;
        v.push(f);
        v
    }

    #[test]
    fn entries_round_trip_and_every_cut_is_an_error() {
        let entries = sample();
        let mut b = Vec::new();
        for e in &entries {
            e.encode(&mut b);
        }
        let mut d = Decoder::new(&b, 1000);
        for e in &entries {
            assert_eq!(&d.entry().unwrap(), e);
        }
        assert!(d.at_end());
        for cut in 0..b.len() {
            let mut d = Decoder::new(&b[..cut], 0);
            let r = (|| -> Result<()> {
                while !d.at_end() {
                    d.entry()?;
                }
                Ok(())
            })();
            // A cut exactly at an entry boundary is a shorter, valid listing.
            if r.is_ok() {
                continue;
            }
            assert!(r.unwrap_err().is_corruption(), "cut {cut}");
        }
    }

    #[test]
    fn hostile_numbers_are_refused() {
        let mut d = Decoder::new(&[b'5', 0x80, 0x00], 0);
        assert!(d.entry().unwrap_err().to_string().contains("shortest form"));
        let mut over = vec![b'5'];
        over.extend([0xff; 9]);
        over.push(0x02);
        assert!(Decoder::new(&over, 0).entry().unwrap_err().to_string().contains("64 bits"));
        let mut long = vec![b'5'];
        long.extend([0xff; 11]);
        assert!(Decoder::new(&long, 0).entry().is_err());
        // A name longer than 255 bytes.
        let mut b = vec![b'0', 1];
        put_uv(&mut b, 256);
        assert!(Decoder::new(&b, 0)
            .entry()
            .unwrap_err()
            .to_string()
            .contains("encrypted name length"));
        // An item count larger than the bytes left could hold.
        let mut e = sample()[1].clone();
        e.body = Body::File { size: 0, items: vec![] };
        let mut b = Vec::new();
        e.encode(&mut b);
        *b.last_mut().unwrap() = 100;
        assert!(Decoder::new(&b, 0).entry().unwrap_err().to_string().contains("extent item count"));
        assert!(Decoder::new(b"x", 0)
            .entry()
            .unwrap_err()
            .to_string()
            .contains("listing entry type"));
    }
}
