//! The validating archive walker shared by `verify`, `list`, `restore` and
//! the base-backup index.
//!
//! [`scan`] reads an archive front to back and checks everything that can be
//! checked without a key and without an image: tar framing and header
//! checksums, the manifest, every path (no `..`, not absolute, parents before
//! children, no path through a non-directory, no duplicate, each component the
//! no-key name of its `CRYPTIMG.name`), every record's syntax and range, sizes
//! against extents, hard-link targets, each member's crc32c, each extent's
//! crc32c when all its blocks are in the archive, and the trailer (member
//! count and crc32c of the whole stream). It hands each member and each chunk
//! of stored data to a [`Sink`].

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use super::format::*;
use super::listing::{Decoder, LISTING_NAME, MAX_LISTING};
use super::pax::{parse_records, PaxReader, RawMember, Record, Ustar, CRC_KEY};
use super::segments::Segments;
use crate::error::{CorruptKind, Error, Result};
use crate::format::inode::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
use crate::tree::{Meta, Timespec};
use crate::BLOCK_SIZE;
use fscrypt::context::{PolicyContext, POLICY_CTX_LEN};
use fscrypt::{nokey_name, valid_name_ct_len, SYMLINK_MAX};

/// Data is handed to the sink in chunks of at most this many bytes.
pub const CHUNK: usize = 4 << 20;

/// What a member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir {
        ctx: PolicyContext,
    },
    File {
        items: Vec<Item>,
    },
    Symlink {
        ctx: PolicyContext,
        blob: Vec<u8>,
    },
    /// FIFO, socket, character or block device.
    Special,
    /// Another name for the inode of an earlier member.
    HardLink {
        target: u64,
        target_path: String,
    },
}

/// One tree member, validated.
#[derive(Clone, Debug)]
pub struct Member {
    /// Inode number in the restored snapshot (the root is 1; a hard link has
    /// its target's).
    pub ino: u64,
    /// The parent directory's inode number (0 for the root).
    pub parent: u64,
    /// The path as archived (`./`, `./NAME`, `./NAME/NAME/`...).
    pub path: String,
    /// The raw encrypted name (empty for the root).
    pub name_ct: Vec<u8>,
    /// Mode (with type bits), owner, times, device number and xattrs.
    pub meta: Meta,
    /// Inode size: bytes of a regular file, plaintext length of a symlink target.
    pub size: u64,
    pub kind: Kind,
    /// Archive offset of the member's `x` header (of its entry, for a
    /// member in a compact listing).
    pub offset: u64,
    /// Archive offset of the member's data (of its entry, for a member in a
    /// compact listing, which has no data).
    pub data_offset: u64,
}

/// Receives what [`scan`] reads. Every method defaults to doing nothing.
pub trait Sink {
    fn manifest(&mut self, _m: &Manifest) -> Result<()> {
        Ok(())
    }
    /// A member's headers, before its data.
    fn member(&mut self, _m: &Member) -> Result<()> {
        Ok(())
    }
    /// A chunk of stored item `item`, starting `blk` blocks into the item,
    /// at archive offset `at`; `crc` is its crc32c.
    fn stored(&mut self, _m: &Member, _item: usize, _blk: u32, _data: &[u8], _crc: u32, _at: u64) -> Result<()> {
        Ok(())
    }
    /// An item whose blocks this member does not hold: `earlier` when an
    /// earlier member of this archive stored them, else they are in a base.
    fn referenced(&mut self, _m: &Member, _item: usize, _earlier: bool) -> Result<()> {
        Ok(())
    }
    /// The member's data was read and its crc32c matched.
    fn member_done(&mut self, _m: &Member) -> Result<()> {
        Ok(())
    }
}

/// Counts from a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    /// Tree members (root included).
    pub members: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    /// Bytes of ciphertext stored in this archive.
    pub stored_bytes: u64,
    /// Extent items whose blocks this archive stores.
    pub stored_items: u64,
    /// Items referring to blocks stored earlier in this archive.
    pub shared_items: u64,
    /// Items referring to blocks in a base backup.
    pub base_items: u64,
    /// Distinct extents referenced.
    pub extents: u64,
    /// Extents whose every block is in this archive, and whose crc32c was checked.
    pub extents_checked: u64,
    /// Total archive length.
    pub archive_bytes: u64,
}

/// Outcome of a scan.
#[derive(Clone, Debug)]
pub struct ScanReport {
    pub manifest: Manifest,
    pub stats: ScanStats,
}

fn path_hash(p: &str) -> [u8; 16] {
    let d = Sha256::digest(p.as_bytes());
    let mut h = [0u8; 16];
    h.copy_from_slice(&d[..16]);
    h
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeType {
    Dir,
    Other,
}

struct Walker<'s, R: Read> {
    r: PaxReader<R>,
    sink: &'s mut dyn Sink,
    /// Directory path (without `./` and trailing `/`) hash → inode.
    dirs: HashMap<[u8; 16], u64>,
    /// (parent inode, component) → (inode, type).
    children: HashMap<(u64, String), (u64, NodeType)>,
    /// Per extent context: its identity and which blocks this archive holds.
    extents: HashMap<[u8; fscrypt::context::EXTENT_CTX_LEN], (ExtentKey, Segments)>,
    next_ino: u64,
    stats: ScanStats,
    buf: Vec<u8>,
    /// The manifest's format version.
    version: u32,
    /// Version 2: directory inode (its ordinal) → (parent inode, last path
    /// component), to rebuild the paths of listing entries.
    dir_names: HashMap<u64, (u64, String)>,
}

fn corrupt_at(why: &'static str, what: String, at: u64) -> Error {
    Error::corrupt(CorruptKind::BadMember(why), what, Some(at))
}

/// Scans a whole archive, calling `sink` for each part. Any error stops it.
pub fn scan<R: Read>(input: R, sink: &mut dyn Sink) -> Result<ScanReport> {
    let mut w = Walker {
        r: PaxReader::new(input),
        sink,
        dirs: HashMap::new(),
        children: HashMap::new(),
        extents: HashMap::new(),
        next_ino: 1,
        stats: ScanStats::default(),
        buf: Vec::new(),
        version: FORMAT_VERSION,
        dir_names: HashMap::new(),
    };
    w.run()
}

/// Known keywords (besides `SCHILY.xattr.*`).
const KNOWN: &[&str] = &[
    K_PATH,
    K_LINKPATH,
    K_SIZE_STD,
    K_UID,
    K_GID,
    K_MTIME,
    K_ATIME,
    K_CTIME,
    K_DEVMAJOR,
    K_DEVMINOR,
    K_NAME,
    K_POLICY,
    K_SYMLINK,
    K_SIZE,
    K_EXTENTS,
    K_EXTINFO,
    K_MEMBERS,
    K_ARCHIVE_CRC,
];

/// A member's records, checked for known keywords and the trailing crc.
struct Records<'a> {
    recs: Vec<Record<'a>>,
    /// crc32c of the records before the checksum record.
    prefix_crc: u32,
    stored_crc: u32,
}

impl<'a> Records<'a> {
    fn parse(raw: &'a RawMember) -> Result<Records<'a>> {
        Self::parse_inner(raw, true)
    }

    /// The records of a listing entry: like a member's, without the checksum
    /// record (the listing member's covers it).
    fn listed(raw: &'a RawMember) -> Result<Records<'a>> {
        Self::parse_inner(raw, false)
    }

    fn parse_inner(raw: &'a RawMember, with_crc: bool) -> Result<Records<'a>> {
        let at = raw.offset;
        let mut recs = parse_records(&raw.pax, at)?;
        if !with_crc {
            Self::check_known(&recs, at)?;
            return Ok(Records {
                recs,
                prefix_crc: 0,
                stored_crc: 0,
            });
        }
        let last = recs
            .last()
            .filter(|r| r.key == CRC_KEY.as_bytes())
            .ok_or_else(|| corrupt_at("the last pax record is not CRYPTIMG.crc32c", "backup member".into(), at))?;
        let stored = unhex(last.value, 4).ok_or_else(|| corrupt_at("CRYPTIMG.crc32c is not 8 hex digits", "backup member".into(), at))?;
        let prefix_crc = crc32c::crc32c(&raw.pax[..last.at]);
        let stored_crc = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
        recs.pop();
        Self::check_known(&recs, at)?;
        Ok(Records {
            recs,
            prefix_crc,
            stored_crc,
        })
    }

    fn check_known(recs: &[Record<'_>], at: u64) -> Result<()> {
        for r in recs {
            let ok = KNOWN.iter().any(|k| k.as_bytes() == r.key) || (r.key.starts_with(K_XATTR.as_bytes()) && r.key.len() > K_XATTR.len());
            if !ok {
                return Err(Error::corrupt(
                    CorruptKind::BadHeader("unknown pax keyword"),
                    format!("backup member (keyword {:?})", String::from_utf8_lossy(r.key)),
                    Some(at),
                ));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.recs.iter().find(|r| r.key == key.as_bytes()).map(|r| r.value)
    }

    fn xattrs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.recs
            .iter()
            .filter(|r| r.key.starts_with(K_XATTR.as_bytes()))
            .map(|r| (r.key[K_XATTR.len()..].to_vec(), r.value.to_vec()))
            .collect()
    }
}

/// One member being validated: its records, and how errors name it.
struct MemberCtx<'r, 'a> {
    recs: &'r Records<'a>,
    /// The path as shown in errors (lossy, at most 300 bytes).
    shown: String,
    /// Archive offset of the member's header.
    at: u64,
}

impl MemberCtx<'_, '_> {
    fn bad(&self, why: &'static str) -> Error {
        corrupt_at(why, format!("backup member {:?}", self.shown), self.at)
    }

    fn badf(&self, why: String) -> Error {
        Error::corrupt(
            CorruptKind::BadMember("its records are inconsistent"),
            format!("backup member {:?}: {why}", self.shown),
            Some(self.at),
        )
    }

    /// The mode's file type, checked against the member type (and the root
    /// against being a directory).
    fn file_type(&self, u: &Ustar, is_root: bool) -> Result<u32> {
        let ftype = u.mode & S_IFMT;
        if u.mode & !(S_IFMT | 0o7777) != 0 {
            return Err(self.bad("mode has bits outside the type and permission bits"));
        }
        let type_ok = match u.typeflag {
            b'5' => ftype == S_IFDIR,
            b'0' => ftype == S_IFREG || ftype == S_IFSOCK,
            b'2' => ftype == S_IFLNK,
            b'1' => ftype != S_IFDIR,
            b'3' => ftype == S_IFCHR,
            b'4' => ftype == S_IFBLK,
            b'6' => ftype == S_IFIFO,
            _ => return Err(self.badf(format!("unsupported member type {:?}", u.typeflag as char))),
        };
        if !type_ok {
            return Err(self.bad("the mode's file type disagrees with the member type"));
        }
        if is_root && u.typeflag != b'5' {
            return Err(self.bad("the root ./ is not a directory"));
        }
        Ok(ftype)
    }

    /// A decimal pax record, or `fallback` from the ustar header, at most `max`.
    fn num(&self, key: &str, fallback: u64, max: u64) -> Result<u64> {
        let v = match self.recs.get(key) {
            Some(v) => parse_dec(v).ok_or_else(|| self.badf(format!("pax {key} is not a decimal number")))?,
            None => fallback,
        };
        if v > max {
            return Err(self.badf(format!("{key} {v} is out of range (max {max})")));
        }
        Ok(v)
    }

    fn time(&self, key: &str) -> Result<Timespec> {
        let v = self.recs.get(key).ok_or_else(|| self.badf(format!("missing pax {key}")))?;
        parse_time(v).ok_or_else(|| self.badf(format!("pax {key} is not a valid time")))
    }

    /// Mode, owner, device number, times and xattrs.
    fn standard_meta(&self, u: &Ustar) -> Result<Meta> {
        let uid = self.num(K_UID, u.uid, u32::MAX.into())? as u32;
        let gid = self.num(K_GID, u.gid, u32::MAX.into())? as u32;
        let major = self.num(K_DEVMAJOR, u.devmajor, u32::MAX.into())?;
        let minor = self.num(K_DEVMINOR, u.devminor, u32::MAX.into())?;
        let rdev = dev_join(major, minor).ok_or_else(|| self.bad("device number out of range"))?;
        let (atime, mtime, ctime) = (self.time(K_ATIME)?, self.time(K_MTIME)?, self.time(K_CTIME)?);
        let xattrs = self.recs.xattrs();
        crate::format::inode::check_xattrs(&xattrs).map_err(|e| self.badf(format!("xattrs: {e}")))?;
        Ok(Meta {
            mode: u.mode,
            uid,
            gid,
            atime,
            mtime,
            ctime,
            rdev,
            xattrs,
        })
    }

    /// Fails if any of `keys` is present.
    fn forbid(&self, keys: &[&str]) -> Result<()> {
        for k in keys {
            if self.recs.get(k).is_some() {
                return Err(self.badf(format!("{k} is not allowed on this member type")));
            }
        }
        Ok(())
    }

    fn policy(&self) -> Result<PolicyContext> {
        let v = self.recs.get(K_POLICY).ok_or_else(|| self.bad("missing CRYPTIMG.policy"))?;
        let b = unhex(v, POLICY_CTX_LEN).ok_or_else(|| self.bad("CRYPTIMG.policy is not 80 lowercase hex digits"))?;
        let mut a = [0u8; POLICY_CTX_LEN];
        a.copy_from_slice(&b);
        let ctx = PolicyContext::from_bytes(&a);
        ctx.validate().map_err(|why| self.badf(format!("CRYPTIMG.policy: {why}")))?;
        Ok(ctx)
    }

    fn inode_size(&self, max: u64) -> Result<u64> {
        let v = self.recs.get(K_SIZE).ok_or_else(|| self.bad("missing CRYPTIMG.size"))?;
        let s = parse_dec(v).ok_or_else(|| self.bad("CRYPTIMG.size is not a decimal number"))?;
        if s > max {
            return Err(self.badf(format!("CRYPTIMG.size {s} is out of range (max {max})")));
        }
        Ok(s)
    }

    fn no_data(&self, len: u64) -> Result<()> {
        if len != 0 {
            return Err(self.badf(format!(
                "sizes disagree: a member of this type has no data, but {len} bytes are declared"
            )));
        }
        Ok(())
    }

    /// A symlink: its policy, blob, size and linkpath, which must agree.
    fn symlink(&self) -> Result<(Kind, u64)> {
        let ctx = self.policy()?;
        let v = self.recs.get(K_SYMLINK).ok_or_else(|| self.bad("missing CRYPTIMG.symlink"))?;
        let blob = unhex_var(v, SYMLINK_MAX + 3).ok_or_else(|| self.bad("CRYPTIMG.symlink is not lowercase hex of at most 4096 bytes"))?;
        let ct = crate::format::inode::symlink_ciphertext(&blob)
            .ok_or_else(|| self.bad("CRYPTIMG.symlink is not a valid encrypted symlink blob"))?;
        let size = self.inode_size(SYMLINK_MAX as u64)?;
        if size == 0 || size > ct.len() as u64 {
            return Err(self.bad("sizes disagree: the symlink target length does not fit its ciphertext"));
        }
        if self.recs.get(K_LINKPATH) != Some(b64(ct).as_bytes()) {
            return Err(self.bad("linkpath is not the no-key form of CRYPTIMG.symlink"));
        }
        Ok((Kind::Symlink { ctx, blob }, size))
    }
}

impl<R: Read> Walker<'_, R> {
    fn run(&mut self) -> Result<ScanReport> {
        let manifest = self.read_manifest()?;
        self.sink.manifest(&manifest)?;
        loop {
            let Some(raw) = self.r.next_member()? else {
                return Err(Error::corrupt(
                    CorruptKind::BadArchive("the archive ends without its trailer member (truncated or cut at a member boundary)"),
                    "backup archive",
                    Some(self.r.pos()),
                ));
            };
            let recs = Records::parse(&raw)?;
            let path = recs.get(K_PATH).unwrap_or(&raw.ustar.name);
            if path == TRAILER_NAME.as_bytes() {
                self.trailer(&raw, &recs)?;
                break;
            }
            if path == LISTING_NAME.as_bytes() {
                self.listing(&raw, &recs)?;
                continue;
            }
            self.member(&raw, &recs, false)?;
        }
        if let Some(raw) = self.r.next_member()? {
            return Err(corrupt_at("a member after the trailer", "backup archive".into(), raw.offset));
        }
        for (key, segs) in self.extents.values() {
            if segs.complete(key.blocks) {
                let c = segs.crc(key.blocks);
                if c != key.crc {
                    return Err(Error::corrupt(
                        CorruptKind::BadChecksum {
                            stored: key.crc,
                            computed: c,
                        },
                        format!("backup extent {} (all {} blocks in the archive)", hex::encode(key.ctx), key.blocks),
                        None,
                    ));
                }
                self.stats.extents_checked += 1;
            }
        }
        self.stats.extents = self.extents.len() as u64;
        self.stats.archive_bytes = self.r.pos();
        Ok(ScanReport {
            manifest,
            stats: self.stats.clone(),
        })
    }

    fn read_manifest(&mut self) -> Result<Manifest> {
        let raw = self
            .r
            .next_member()?
            .ok_or_else(|| corrupt_at("the archive is empty", "backup archive".into(), 0))?;
        let recs = Records::parse(&raw)?;
        let path = recs.get(K_PATH).unwrap_or(&raw.ustar.name);
        if path != MANIFEST_NAME.as_bytes() || raw.ustar.typeflag != b'0' {
            return Err(corrupt_at(
                "the first member is not the manifest cryptimg-backup.json (not a cryptimg backup?)",
                "backup archive".into(),
                raw.offset,
            ));
        }
        let len = self.data_len(&raw, &recs)?;
        if len > MAX_MANIFEST {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "manifest size",
                    value: len,
                    max: MAX_MANIFEST,
                },
                "backup manifest",
                Some(raw.offset),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.r.start_data(len);
        let c = self.r.data(&mut buf)?;
        self.r.end_data()?;
        self.check_crc(&raw, &recs, c, len, "manifest")?;
        let m = Manifest::parse(&buf)?;
        self.version = m.version;
        Ok(m)
    }

    /// A compact listing member (version 2): its data is read whole (at most
    /// [`MAX_LISTING`] bytes), its checksum checked, then each entry is
    /// turned back into the member it stands for and validated as one.
    fn listing(&mut self, raw: &RawMember, recs: &Records<'_>) -> Result<()> {
        let bad = |why: &'static str| corrupt_at(why, format!("backup member {LISTING_NAME}"), raw.offset);
        if self.version < 2 {
            return Err(bad("a compact listing in a version 1 archive"));
        }
        if raw.ustar.typeflag != b'0' {
            return Err(bad("the listing is not a regular member"));
        }
        let len = self.data_len(raw, recs)?;
        if len == 0 || len > MAX_LISTING {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "listing size (1 byte at least)",
                    value: len,
                    max: MAX_LISTING,
                },
                format!("backup member {LISTING_NAME}"),
                Some(raw.offset),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.r.start_data(len);
        let c = self.r.data(&mut buf)?;
        self.r.end_data()?;
        self.check_crc(raw, recs, c, len, LISTING_NAME)?;
        let mut d = Decoder::new(&buf, raw.data_offset);
        while !d.at_end() {
            let at = d.offset();
            let e = d.entry()?;
            let path = self.entry_path(e.parent, &e.name, e.typeflag == b'5', at)?;
            let (ustar, pax) = e.to_member(&path);
            let m = RawMember {
                offset: at,
                crc_before: 0,
                ustar,
                pax,
                data_offset: at,
            };
            let recs = Records::listed(&m)?;
            self.member(&m, &recs, true)?;
        }
        Ok(())
    }

    /// The path of a listing entry named `name` in the directory whose
    /// ordinal is `parent` (0: the root itself).
    fn entry_path(&self, parent: u64, name: &[u8], is_dir: bool, at: u64) -> Result<String> {
        if parent == 0 {
            return Ok("./".into());
        }
        let mut comps = vec![nokey_name(name)];
        let mut cur = parent;
        loop {
            // Each directory's parent was registered before it, so its
            // ordinal is smaller: this walk ends.
            let Some((p, comp)) = self.dir_names.get(&cur) else {
                return Err(Error::corrupt(
                    CorruptKind::BadMember("the parent ordinal is not an earlier directory member"),
                    format!("backup listing entry (parent ordinal {parent})"),
                    Some(at),
                ));
            };
            if *p == 0 {
                break;
            }
            comps.push(comp.clone());
            cur = *p;
        }
        let mut path = String::from("./");
        for c in comps.iter().rev() {
            path.push_str(c);
            path.push('/');
        }
        if !is_dir {
            path.pop();
        }
        Ok(path)
    }

    fn check_crc(&self, raw: &RawMember, recs: &Records<'_>, data_crc: u32, len: u64, path: &str) -> Result<()> {
        let c = crate::engine::crc::combine(recs.prefix_crc, data_crc, len);
        if c != recs.stored_crc {
            return Err(Error::corrupt(
                CorruptKind::BadChecksum {
                    stored: recs.stored_crc,
                    computed: c,
                },
                format!("backup member {path}"),
                Some(raw.offset),
            ));
        }
        Ok(())
    }

    fn data_len(&self, raw: &RawMember, recs: &Records<'_>) -> Result<u64> {
        match recs.get(K_SIZE_STD) {
            Some(v) => parse_dec(v).ok_or_else(|| corrupt_at("pax size is not a decimal number", "backup member".into(), raw.offset)),
            None => Ok(raw.ustar.size),
        }
    }

    fn trailer(&mut self, raw: &RawMember, recs: &Records<'_>) -> Result<()> {
        let bad = |why: &'static str| corrupt_at(why, "backup trailer".into(), raw.offset);
        if raw.ustar.typeflag != b'0' || self.data_len(raw, recs)? != 0 {
            return Err(bad("the trailer is not an empty regular member"));
        }
        self.r.start_data(0);
        self.r.end_data()?;
        self.check_crc(raw, recs, 0, 0, TRAILER_NAME)?;
        let members = recs
            .get(K_MEMBERS)
            .and_then(parse_dec)
            .ok_or_else(|| bad("CRYPTIMG.members is missing or not a number"))?;
        if members != self.stats.members {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "member count (members are missing or added)",
                    value: self.stats.members,
                    max: members,
                },
                "backup trailer",
                Some(raw.offset),
            ));
        }
        let stored = recs
            .get(K_ARCHIVE_CRC)
            .and_then(|v| unhex(v, 4))
            .ok_or_else(|| bad("CRYPTIMG.archive_crc32c is missing or not 8 hex digits"))?;
        let stored = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
        if stored != raw.crc_before {
            return Err(Error::corrupt(
                CorruptKind::BadChecksum {
                    stored,
                    computed: raw.crc_before,
                },
                "backup archive (crc32c of everything before the trailer)",
                Some(raw.offset),
            ));
        }
        Ok(())
    }

    /// Splits and checks an archived path: `Ok(None)` for the root `./`.
    fn split_path(path: &[u8], is_dir: bool, at: u64) -> Result<Option<Vec<String>>> {
        let shown = || String::from_utf8_lossy(&path[..path.len().min(300)]).into_owned();
        let bad = |why: &'static str| corrupt_at(why, format!("backup member {:?}", shown()), at);
        if path.len() > MAX_PATH {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "path length",
                    value: path.len() as u64,
                    max: MAX_PATH as u64,
                },
                format!("backup member {:?}", shown()),
                Some(at),
            ));
        }
        let s = std::str::from_utf8(path).map_err(|_| bad("path is not UTF-8"))?;
        if s.starts_with('/') {
            return Err(bad("absolute path"));
        }
        if s.contains('\0') {
            return Err(bad("path contains a NUL byte"));
        }
        if s == "./" {
            return Ok(None);
        }
        let Some(rest) = s.strip_prefix("./") else {
            return Err(bad("path does not start with ./"));
        };
        let rest = match (rest.strip_suffix('/'), is_dir) {
            (Some(r), true) => r,
            (None, false) => rest,
            (Some(_), false) => return Err(bad("a non-directory path ends in /")),
            (None, true) => return Err(bad("a directory path does not end in /")),
        };
        let comps: Vec<String> = rest.split('/').map(str::to_string).collect();
        for c in &comps {
            if c == ".." {
                return Err(bad("path has a '..' component"));
            }
            if c.is_empty() || c == "." {
                return Err(bad("path has an empty or '.' component"));
            }
        }
        Ok(Some(comps))
    }

    /// Resolves the parent directory of `comps`.
    fn parent_of(&self, comps: &[String], shown: &str, at: u64) -> Result<u64> {
        let parent = &comps[..comps.len() - 1];
        if let Some(&ino) = self.dirs.get(&path_hash(&parent.join("/"))) {
            return Ok(ino);
        }
        // Say why: a non-directory in the way (a symlink, say), or an absent parent.
        if let Some((last, grand)) = parent.split_last() {
            if let Some(&g) = self.dirs.get(&path_hash(&grand.join("/"))) {
                if self.children.get(&(g, last.clone())).is_some_and(|&(_, t)| t != NodeType::Dir) {
                    return Err(corrupt_at(
                        "path goes through a symlink or other non-directory",
                        format!("backup member {shown:?}"),
                        at,
                    ));
                }
            }
        }
        Err(corrupt_at(
            "parent directory is not an earlier member (parents must come before children)",
            format!("backup member {shown:?}"),
            at,
        ))
    }

    /// Validates one tree member, hands it and its data to the sink, and
    /// registers it in the tree. The steps run in a fixed order, so the first
    /// problem an archive has is always the one reported.
    /// `listed`: the member is a listing entry (no data, no checksum of its own).
    fn member(&mut self, raw: &RawMember, recs: &Records<'_>, listed: bool) -> Result<()> {
        let at = raw.offset;
        let path_b = recs
            .get(K_PATH)
            .ok_or_else(|| corrupt_at("member has no pax path record", "backup member".into(), at))?;
        let mc = MemberCtx {
            recs,
            shown: String::from_utf8_lossy(&path_b[..path_b.len().min(300)]).into_owned(),
            at,
        };
        let u = &raw.ustar;
        let is_dir = u.typeflag == b'5';
        let comps = Self::split_path(path_b, is_dir, at)?;
        self.check_root_first(&mc, comps.is_none())?;
        let ftype = mc.file_type(u, comps.is_none())?;
        let meta = mc.standard_meta(u)?;
        let data_len = self.data_len(raw, recs)?;
        let (parent, name_ct, comp) = self.place(&mc, comps.as_deref())?;
        let (kind, size, ino) = self.type_records(&mc, u.typeflag, ftype, data_len)?;
        let m = Member {
            ino,
            parent,
            path: String::from_utf8_lossy(path_b).into_owned(),
            name_ct,
            meta,
            size,
            kind,
            offset: at,
            data_offset: raw.data_offset,
        };
        self.sink.member(&m)?;
        let data_crc = self.member_data(&m, data_len, listed)?;
        if !listed {
            self.check_crc(raw, recs, data_crc, data_len, &mc.shown)?;
        }
        self.sink.member_done(&m)?;
        self.register(&m, comps.as_deref(), comp, is_dir);
        Ok(())
    }

    /// The root `./` comes first, and only once.
    fn check_root_first(&self, mc: &MemberCtx<'_, '_>, is_root: bool) -> Result<()> {
        if is_root != (self.stats.members == 0) {
            return Err(mc.bad(if is_root {
                "duplicate path (the root ./ appears twice)"
            } else {
                "the first member after the manifest is not the root directory ./"
            }));
        }
        Ok(())
    }

    /// The member's parent, encrypted name and last path component: checks
    /// that the component is the no-key name of `CRYPTIMG.name` and is new.
    fn place(&self, mc: &MemberCtx<'_, '_>, comps: Option<&[String]>) -> Result<(u64, Vec<u8>, String)> {
        let Some(comps) = comps else {
            if mc.recs.get(K_NAME).is_some() {
                return Err(mc.bad("the root has a CRYPTIMG.name"));
            }
            return Ok((0, Vec::new(), String::new()));
        };
        let parent = self.parent_of(comps, &mc.shown, mc.at)?;
        let v = mc.recs.get(K_NAME).ok_or_else(|| mc.bad("missing CRYPTIMG.name"))?;
        let ct = unb64(v).ok_or_else(|| mc.bad("CRYPTIMG.name is not valid base64url without padding"))?;
        if !valid_name_ct_len(ct.len()) {
            return Err(mc.badf(format!(
                "CRYPTIMG.name decodes to {} bytes, not a valid encrypted name length",
                ct.len()
            )));
        }
        let comp = comps[comps.len() - 1].clone();
        if nokey_name(&ct) != comp {
            return Err(mc.bad("the name does not match its CRYPTIMG.name (the path component must be its no-key name)"));
        }
        if self.children.contains_key(&(parent, comp.clone())) {
            return Err(mc.bad("duplicate path"));
        }
        Ok((parent, ct, comp))
    }

    /// The records of each member type: (kind, inode size, inode number).
    fn type_records(&self, mc: &MemberCtx<'_, '_>, typeflag: u8, ftype: u32, data_len: u64) -> Result<(Kind, u64, u64)> {
        let ino = self.next_ino;
        match typeflag {
            b'5' => {
                mc.forbid(&[K_SYMLINK, K_SIZE, K_EXTENTS, K_EXTINFO, K_LINKPATH, K_MEMBERS, K_ARCHIVE_CRC])?;
                mc.no_data(data_len)?;
                Ok((Kind::Dir { ctx: mc.policy()? }, 0, ino))
            }
            b'2' => {
                mc.forbid(&[K_EXTENTS, K_EXTINFO, K_MEMBERS, K_ARCHIVE_CRC])?;
                mc.no_data(data_len)?;
                let (kind, size) = mc.symlink()?;
                Ok((kind, size, ino))
            }
            b'0' if ftype == S_IFREG => {
                mc.forbid(&[K_POLICY, K_SYMLINK, K_LINKPATH, K_MEMBERS, K_ARCHIVE_CRC])?;
                let (kind, size) = self.file(mc, data_len)?;
                Ok((kind, size, ino))
            }
            b'0' | b'3' | b'4' | b'6' => {
                mc.forbid(&[
                    K_POLICY,
                    K_SYMLINK,
                    K_SIZE,
                    K_EXTENTS,
                    K_EXTINFO,
                    K_LINKPATH,
                    K_MEMBERS,
                    K_ARCHIVE_CRC,
                ])?;
                mc.no_data(data_len)?;
                Ok((Kind::Special, 0, ino))
            }
            b'1' => {
                mc.forbid(&[K_POLICY, K_SYMLINK, K_SIZE, K_EXTENTS, K_EXTINFO, K_MEMBERS, K_ARCHIVE_CRC])?;
                mc.no_data(data_len)?;
                let (kind, target) = self.hard_link(mc)?;
                Ok((kind, 0, target))
            }
            _ => Err(mc.bad("unsupported member type")),
        }
    }

    /// A regular file: its extent items, their stored size against the
    /// member's data, and one extent per extent context.
    fn file(&self, mc: &MemberCtx<'_, '_>, data_len: u64) -> Result<(Kind, u64)> {
        let size = mc.inode_size(MAX_FILE_SIZE)?;
        let items = parse_items(
            mc.recs.get(K_EXTENTS).unwrap_or(b""),
            mc.recs.get(K_EXTINFO).unwrap_or(b""),
            size,
            &|why| {
                Error::corrupt(
                    CorruptKind::BadMember("invalid extents"),
                    format!("backup member {:?}: {why}", mc.shown),
                    Some(mc.at),
                )
            },
        )?;
        let stored: u64 = items
            .iter()
            .filter(|i| i.stored)
            .map(|i| u64::from(i.count) * BLOCK_SIZE as u64)
            .sum();
        if stored != data_len {
            return Err(mc.badf(format!(
                "sizes disagree: the member holds {data_len} bytes but its stored extents are {stored} bytes"
            )));
        }
        let mut seen: HashMap<[u8; fscrypt::context::EXTENT_CTX_LEN], ExtentKey> = HashMap::new();
        for it in &items {
            let known = self
                .extents
                .get(&it.ext.ctx)
                .map(|(k, _)| *k)
                .or_else(|| seen.get(&it.ext.ctx).copied());
            if known.is_some_and(|k| k != it.ext) {
                return Err(mc.bad("two different extents (length or crc32c) share one extent context"));
            }
            seen.insert(it.ext.ctx, it.ext);
        }
        Ok((Kind::File { items }, size))
    }

    /// A hard link: its target must be an earlier non-directory member.
    /// Returns the kind and the target's inode number.
    fn hard_link(&self, mc: &MemberCtx<'_, '_>) -> Result<(Kind, u64)> {
        let lp = mc.recs.get(K_LINKPATH).ok_or_else(|| mc.bad("hard link without linkpath"))?;
        let tcomps = Self::split_path(lp, false, mc.at)?.ok_or_else(|| mc.bad("hard link to the root"))?;
        let tparent = self.parent_of(&tcomps, &mc.shown, mc.at)?;
        let target = match self.children.get(&(tparent, tcomps[tcomps.len() - 1].clone())) {
            Some(&(t, NodeType::Other)) => t,
            Some(_) => return Err(mc.bad("hard link to a directory")),
            None => return Err(mc.bad("hard link target is not an earlier member")),
        };
        let kind = Kind::HardLink {
            target,
            target_path: String::from_utf8_lossy(lp).into_owned(),
        };
        Ok((kind, target))
    }

    /// Enters a finished member into the tree and the statistics.
    fn register(&mut self, m: &Member, comps: Option<&[String]>, comp: String, is_dir: bool) {
        let ntype = if is_dir { NodeType::Dir } else { NodeType::Other };
        if self.version >= 2 && is_dir {
            self.dir_names.insert(m.ino, (m.parent, comp.clone()));
        }
        if let Some(comps) = comps {
            self.children.insert((m.parent, comp), (m.ino, ntype));
            if is_dir {
                self.dirs.insert(path_hash(&comps.join("/")), m.ino);
            }
        } else {
            self.dirs.insert(path_hash(""), m.ino);
        }
        if !matches!(m.kind, Kind::HardLink { .. }) {
            self.next_ino += 1;
        }
        self.stats.members += 1;
        match m.kind {
            Kind::Dir { .. } => self.stats.dirs += 1,
            Kind::File { .. } => self.stats.files += 1,
            Kind::Symlink { .. } => self.stats.symlinks += 1,
            Kind::Special => self.stats.specials += 1,
            Kind::HardLink { .. } => self.stats.hardlinks += 1,
        }
    }

    /// Reads a member's data, hands it to the sink and returns its crc32c.
    /// A listed member has no data and is not in the reader's stream.
    fn member_data(&mut self, m: &Member, len: u64, listed: bool) -> Result<u32> {
        if !listed {
            self.r.start_data(len);
        }
        let mut crc = 0u32;
        let Kind::File { items } = &m.kind else {
            if !listed {
                self.r.end_data()?;
            }
            return Ok(0);
        };
        let mut buf = std::mem::take(&mut self.buf);
        for (i, it) in items.iter().enumerate() {
            let entry = self.extents.entry(it.ext.ctx).or_insert_with(|| (it.ext, Segments::default()));
            if !it.stored {
                let earlier = entry.1.covers(it.off, it.count);
                if earlier {
                    self.stats.shared_items += 1;
                } else {
                    self.stats.base_items += 1;
                }
                self.sink.referenced(m, i, earlier)?;
                continue;
            }
            self.stats.stored_items += 1;
            let total = it.count as usize * BLOCK_SIZE;
            let mut done = 0usize;
            while done < total {
                let n = (total - done).min(CHUNK);
                buf.resize(n, 0);
                let at = self.r.pos();
                let c = self.r.data(&mut buf[..n])?;
                crc = crate::engine::crc::combine(crc, c, n as u64);
                let blk = (done / BLOCK_SIZE) as u32;
                if let Some((_, segs)) = self.extents.get_mut(&it.ext.ctx) {
                    segs.add(it.off + blk, &buf[..n], c);
                }
                self.sink.stored(m, i, blk, &buf[..n], c, at)?;
                done += n;
            }
            self.stats.stored_bytes += total as u64;
        }
        buf.clear();
        self.buf = buf;
        if !listed {
            self.r.end_data()?;
        }
        Ok(crc)
    }
}
