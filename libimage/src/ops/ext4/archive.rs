//! The ext4 backup archive, docs/BACKUP.md §11 ("ext4 extension, version
//! 1"): the pax framing of §1 (every member an `x` header with its
//! `CRYPTIMG.crc32c`, then a ustar header and data; a trailer with the
//! member count and the archive crc32c), a manifest whose `format` is
//! `cryptimg-ext4-backup`, and per member the fscrypt state Ts'o's design
//! keeps: the 40-byte context, the encrypted name, the original size and the
//! ciphertext blocks, holes absent.
//!
//! [`read_archive`] is the one strict reader; `list`, `verify` and `restore`
//! consume its [`Member`]s.

use std::io::Read;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::engine::crc;
use crate::error::{CorruptKind, Error, Result};
use crate::ops::backup::format::{parse_dec, parse_hex_exact, MANIFEST_NAME, TRAILER_NAME};
use crate::ops::backup::pax::{parse_records, PaxReader, CRC_KEY};

/// `format` of the manifest.
pub const FORMAT: &str = "cryptimg-ext4-backup";
/// The only version this build reads and writes.
pub const VERSION: u32 = 1;

pub const K_NAME: &str = "CRYPTIMG.name";
pub const K_CONTEXT: &str = "CRYPTIMG.context";
pub const K_SYMLINK: &str = "CRYPTIMG.symlink";
pub const K_SIZE: &str = "CRYPTIMG.size";
pub const K_BLOCKS: &str = "CRYPTIMG.blocks";
pub const K_DATACRC: &str = "CRYPTIMG.datacrc";
pub const K_UNCHANGED: &str = "CRYPTIMG.unchanged";
pub const K_MEMBERS: &str = "CRYPTIMG.members";
pub const K_ARCHIVE_CRC: &str = "CRYPTIMG.archive_crc32c";
/// Trailer record: the key ids (32 hex each, comma-separated, sorted) the
/// archived contexts name. In the trailer because they are known only after
/// the one pass over the image.
pub const K_KEYS: &str = "CRYPTIMG.keys_needed";

/// Input buffer of [`read_archive`].
const READ_BUFFER: usize = 1 << 20;

/// Largest member data this reader accepts in one piece of a run (and the
/// largest file size, as ext4 allows: 2^32 blocks).
pub const MAX_BLOCKS: u64 = 1 << 32;

/// The manifest (first member).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ext4Manifest {
    pub format: String,
    pub version: u32,
    pub backup_id: String,
    pub base_backup_id: Option<String>,
    pub created: i64,
    /// The source filesystem's uuid (32 hex).
    pub image_uuid: String,
    /// `s_hash_seed` (32 hex), `s_def_hash_version` and whether the
    /// unsigned-hash flag is set: restore reuses them so indexed
    /// directories hash (and no-key names read) as on the source.
    pub hash_seed: String,
    pub hash_version: u8,
    pub unsigned_hash: bool,
    /// Source size, a default for restore.
    pub blocks_count: u64,
    pub inodes_count: u64,
    pub block_size: u32,
}

fn corrupt(why: String, at: u64) -> Error {
    Error::corrupt(
        CorruptKind::BadMember("invalid ext4 backup member"),
        format!("ext4 backup archive: {why}"),
        Some(at),
    )
}

impl Ext4Manifest {
    pub fn parse(b: &[u8]) -> Result<Ext4Manifest> {
        let m: Ext4Manifest = serde_json::from_slice(b).map_err(|e| corrupt(format!("manifest is not valid JSON: {e}"), 0))?;
        if m.format != FORMAT {
            return Err(corrupt(format!("manifest format {:?}, expected {FORMAT:?}", m.format), 0));
        }
        if m.version != VERSION {
            return Err(Error::Unsupported(format!(
                "ext4 backup version {} (this build reads {VERSION})",
                m.version
            )));
        }
        if m.block_size != 4096 || parse_hex_exact(&m.hash_seed, 32).is_none() || parse_hex_exact(&m.image_uuid, 32).is_none() {
            return Err(corrupt("manifest block_size, hash_seed or image_uuid invalid".into(), 0));
        }
        Ok(m)
    }
}

/// Whether the first bytes of a stream look like an ext4 backup (the
/// manifest is the first member, its JSON within the first 2 KiB).
pub fn sniff(head: &[u8]) -> bool {
    head.windows(FORMAT.len() + 2)
        .any(|w| w[0] == b'"' && &w[1..=FORMAT.len()] == FORMAT.as_bytes())
}

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    HardLink,
    Special,
}

/// One tree member, validated.
#[derive(Clone, Debug)]
pub struct Member {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub devmajor: u32,
    pub devminor: u32,
    pub mtime: (i64, u32),
    pub atime: (i64, u32),
    pub ctime: (i64, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The raw encrypted name (members inside encrypted directories).
    pub name_ct: Option<Vec<u8>>,
    pub context: Option<[u8; 40]>,
    /// Encrypted symlink blob, or the plain target of a plain symlink, or a
    /// hard link's target path.
    pub link: Vec<u8>,
    /// i_size of files and symlinks.
    pub size: u64,
    /// Ciphertext runs (lblk, count) of an encrypted file.
    pub runs: Vec<(u64, u64)>,
    pub datacrc: Option<u32>,
    /// Data not stored: identical to the base backup's member.
    pub unchanged: bool,
    /// Archive offset of the member (for messages).
    pub offset: u64,
    /// Archive offset of the member's data (where a base backup's stored
    /// ciphertext is read back from, docs/BACKUP.md §11.4).
    pub data_offset: u64,
    /// This member's number among the tree members (the root is 0).
    pub index: usize,
    /// [`Member::index`] of the parent directory (0 for the root itself).
    pub parent: usize,
    /// [`Member::index`] of a hard link's target.
    pub link_index: usize,
}

/// Receives members and their data while [`read_archive`] streams.
pub trait Ext4Sink {
    fn manifest(&mut self, m: &Ext4Manifest) -> Result<()>;
    /// Called once per member; `data` yields the member's data in pieces
    /// (the ciphertext blocks of `runs`, or a plain file's bytes).
    fn member(&mut self, m: &Member, data: &mut dyn FnMut(&mut [u8]) -> Result<usize>) -> Result<()>;
}

fn time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (sec, ns) = s.split_once('.')?;
    if ns.len() != 9 {
        return None;
    }
    let sec: i64 = parse_dec(sec.as_bytes())?.try_into().ok()?;
    let ns: u32 = ns.parse().ok()?;
    if !neg {
        return Some((sec, ns));
    }
    // -S.N means -(S + N/1e9) = (-S-1) + (1e9 - N)/1e9
    if ns == 0 {
        Some((-sec, 0))
    } else {
        Some((-sec - 1, 1_000_000_000 - ns))
    }
}

/// Formats a time as `[-]SECONDS.NNNNNNNNN` (the exact decimal value).
pub fn fmt_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// Parses `L+N,L+N` runs: increasing, non-overlapping, within `max_blocks`.
pub fn parse_runs(v: &[u8], max_blocks: u64) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    if v.is_empty() {
        return Some(out);
    }
    let mut next = 0u64;
    for item in v.split(|&b| b == b',') {
        let p = item.iter().position(|&b| b == b'+')?;
        let (l, n) = (parse_dec(&item[..p])?, parse_dec(&item[p + 1..])?);
        let end = l.checked_add(n)?;
        if n == 0 || l < next || end > max_blocks {
            return None;
        }
        next = end;
        out.push((l, n));
    }
    Some(out)
}

/// Reads and validates a whole ext4 backup archive, streaming members to `sink`.
/// Returns the number of tree members and the key ids the trailer lists.
pub fn read_archive(input: &mut dyn Read, sink: &mut dyn Ext4Sink) -> Result<(u64, Vec<String>)> {
    // Headers are read 512 bytes at a time and ciphertext a block at a time:
    // one large buffer instead of a read(2) each.
    let mut r = PaxReader::new(std::io::BufReader::with_capacity(READ_BUFFER, input));
    let mut members = 0u64;
    let mut first = true;
    // The manifest names a base backup: CRYPTIMG.unchanged is allowed.
    let mut incremental = false;
    // Path → (kind, index) of every tree member so far. Paths come from the
    // archive, so the map keeps std's keyed hasher.
    let mut seen: std::collections::HashMap<Vec<u8>, (Kind, usize)> = std::collections::HashMap::new();
    // The directory members of the last parent lookup (their path and
    // index): consecutive members of one directory skip the map.
    let mut last_parent: (Vec<u8>, usize) = (Vec::new(), usize::MAX);
    // Drains what a sink did not read (allocated the first time it is needed).
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let Some(raw) = r.next_member()? else {
            return Err(corrupt("no trailer member (truncated archive)".into(), r.pos()));
        };
        let off = raw.offset;
        let recs = parse_records(&raw.pax, off)?;
        let Some((crc_rec, rest)) = recs.split_last() else {
            return Err(corrupt("a member without records".into(), off));
        };
        if crc_rec.key != CRC_KEY.as_bytes() {
            return Err(corrupt("the last record is not CRYPTIMG.crc32c".into(), off));
        }
        let want_crc = std::str::from_utf8(crc_rec.value)
            .ok()
            .and_then(|s| parse_hex_exact(s, 8))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| corrupt("CRYPTIMG.crc32c is not 8 hex digits".into(), off))?;
        let rec_crc = crc32c::crc32c(&raw.pax[..crc_rec.at]);
        let get = |k: &str| rest.iter().find(|x| x.key == k.as_bytes()).map(|x| x.value);
        let path = get("path")
            .ok_or_else(|| corrupt("a member without a path record".into(), off))?
            .to_vec();
        let size = match get("size") {
            Some(v) => parse_dec(v).ok_or_else(|| corrupt("pax size record is not a decimal number".into(), off))?,
            None => raw.ustar.size,
        };
        if first {
            if path != MANIFEST_NAME.as_bytes() || size > 1 << 20 {
                return Err(corrupt("the first member is not the manifest".into(), off));
            }
            let mut buf = vec![0u8; size as usize];
            r.start_data(size);
            let c = r.data(&mut buf)?;
            r.end_data()?;
            if crc::combine(rec_crc, c, buf.len() as u64) != want_crc {
                return Err(corrupt("manifest checksum mismatch".into(), off));
            }
            let manifest = Ext4Manifest::parse(&buf)?;
            incremental = manifest.base_backup_id.is_some();
            sink.manifest(&manifest)?;
            first = false;
            continue;
        }
        if path == TRAILER_NAME.as_bytes() {
            let crc_before = raw.crc_before;
            let n = get(K_MEMBERS)
                .and_then(parse_dec)
                .ok_or_else(|| corrupt("trailer without CRYPTIMG.members".into(), off))?;
            let ac = get(K_ARCHIVE_CRC)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| parse_hex_exact(s, 8))
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| corrupt("trailer without CRYPTIMG.archive_crc32c".into(), off))?;
            if rec_crc != want_crc || size != 0 {
                return Err(corrupt("trailer checksum mismatch".into(), off));
            }
            r.start_data(0);
            r.end_data()?;
            if n != members {
                return Err(corrupt(format!("trailer counts {n} members, the archive has {members}"), off));
            }
            if ac != crc_before {
                return Err(corrupt(format!("archive crc32c {ac:08x}, computed {crc_before:08x}"), off));
            }
            if r.next_member()?.is_some() {
                return Err(corrupt("members after the trailer".into(), r.pos()));
            }
            let keys: Vec<String> = match get(K_KEYS) {
                None | Some(b"") => Vec::new(),
                Some(v) => v.split(|&b| b == b',').map(|k| String::from_utf8_lossy(k).into_owned()).collect(),
            };
            if keys.iter().any(|k| parse_hex_exact(k, 32).is_none()) {
                return Err(corrupt("CRYPTIMG.keys_needed holds something other than key ids".into(), off));
            }
            return Ok((members, keys));
        }
        let mut m = member(&raw.ustar, size, rest, path, off)?;
        m.data_offset = raw.data_offset;
        let shown = || String::from_utf8_lossy(&m.path).into_owned();
        m.index = members as usize;
        if m.path == b"./" {
            if m.kind != Kind::Dir {
                return Err(corrupt("the root member is not a directory".into(), off));
            }
        } else {
            let trimmed = m.path.strip_suffix(b"/").unwrap_or(&m.path);
            let cut = trimmed.iter().rposition(|&b| b == b'/').unwrap_or(0);
            let parent_path = &trimmed[..=cut];
            m.parent = if last_parent.0 == parent_path {
                last_parent.1
            } else {
                match seen.get(parent_path) {
                    Some(&(Kind::Dir, i)) => {
                        last_parent = (parent_path.to_vec(), i);
                        i
                    }
                    _ => return Err(corrupt(format!("{}: the parent is not an earlier directory member", shown()), off)),
                }
            };
            if (m.kind == Kind::Dir) != m.path.ends_with(b"/") {
                return Err(corrupt(format!("{}: only directory paths end in '/'", shown()), off));
            }
        }
        if m.kind == Kind::HardLink {
            m.link_index = match seen.get(&m.link) {
                Some(&(Kind::File | Kind::Symlink | Kind::Special, i)) => i,
                _ => {
                    return Err(corrupt(
                        format!("{}: hard link target is not an earlier non-directory member", shown()),
                        off,
                    ))
                }
            };
        }
        if seen.insert(m.path.clone(), (m.kind, m.index)).is_some() {
            return Err(corrupt(format!("path {:?} appears twice", shown()), off));
        }
        let expect = match m.kind {
            Kind::File if m.context.is_some() && !m.unchanged => m.runs.iter().map(|r| r.1).sum::<u64>() * 4096,
            Kind::File if m.context.is_none() => m.size,
            _ => 0,
        };
        if size != expect {
            return Err(corrupt(format!("data of {size} bytes, the records imply {expect}"), off));
        }
        if m.unchanged && !incremental {
            return Err(corrupt(
                format!(
                    "{}: CRYPTIMG.unchanged in a full backup (the manifest names no base backup)",
                    shown()
                ),
                off,
            ));
        }
        r.start_data(size);
        let left = std::cell::Cell::new(size);
        let mut data_crc = 0u32;
        let mut feed = |buf: &mut [u8]| -> Result<usize> {
            let n = (buf.len() as u64).min(left.get()) as usize;
            if n == 0 {
                return Ok(0);
            }
            let c = r.data(&mut buf[..n])?;
            data_crc = crc::combine(data_crc, c, n as u64);
            left.set(left.get() - n as u64);
            Ok(n)
        };
        sink.member(&m, &mut feed)?;
        // Drain what the sink did not read.
        if left.get() > 0 && scratch.is_empty() {
            scratch = vec![0u8; 64 << 10];
        }
        while feed(&mut scratch)? > 0 {}
        r.end_data()?;
        if crc::combine(rec_crc, data_crc, size) != want_crc {
            return Err(corrupt("member checksum mismatch (CRYPTIMG.crc32c)".into(), off));
        }
        if let (Some(dc), false, Some(_)) = (m.datacrc, m.unchanged, m.context) {
            if dc != data_crc {
                return Err(corrupt("ciphertext does not match CRYPTIMG.datacrc".into(), off));
            }
        }
        members += 1;
    }
}

fn member(
    u: &crate::ops::backup::pax::Ustar,
    data_size: u64,
    recs: &[crate::ops::backup::pax::Record],
    path: Vec<u8>,
    off: u64,
) -> Result<Member> {
    let bad = |why: &str| corrupt(format!("{}: {why}", String::from_utf8_lossy(&path)), off);
    if !path.starts_with(b"./") || path.len() > 1 << 20 || path.split(|&b| b == b'/').skip(1).any(|c| c == b"." || c == b"..") {
        return Err(bad("path must start with ./ and have no . or .. components"));
    }
    let mut m = Member {
        path: path.clone(),
        kind: Kind::Special,
        mode: u.mode,
        uid: 0,
        gid: 0,
        devmajor: u32::try_from(u.devmajor).map_err(|_| bad("devmajor"))?,
        devminor: u32::try_from(u.devminor).map_err(|_| bad("devminor"))?,
        mtime: (0, 0),
        atime: (0, 0),
        ctime: (0, 0),
        xattrs: Vec::new(),
        name_ct: None,
        context: None,
        link: Vec::new(),
        size: 0,
        runs: Vec::new(),
        datacrc: None,
        unchanged: false,
        offset: off,
        data_offset: 0,
        index: 0,
        parent: 0,
        link_index: 0,
    };
    m.uid = u32::try_from(u.uid).map_err(|_| bad("uid"))?;
    m.gid = u32::try_from(u.gid).map_err(|_| bad("gid"))?;
    let mut runs_raw: Option<&[u8]> = None;
    let mut linkpath: Option<Vec<u8>> = None;
    let mut blob: Option<Vec<u8>> = None;
    for r in recs {
        let v = r.value;
        match r.key {
            b"path" => {}
            b"linkpath" => linkpath = Some(v.to_vec()),
            b"mtime" => m.mtime = time(v).ok_or_else(|| bad("mtime"))?,
            b"atime" => m.atime = time(v).ok_or_else(|| bad("atime"))?,
            b"ctime" => m.ctime = time(v).ok_or_else(|| bad("ctime"))?,
            b"uid" => m.uid = parse_dec(v).and_then(|x| u32::try_from(x).ok()).ok_or_else(|| bad("uid"))?,
            b"gid" => m.gid = parse_dec(v).and_then(|x| u32::try_from(x).ok()).ok_or_else(|| bad("gid"))?,
            b"size" => {}
            k if k.starts_with(b"SCHILY.xattr.") => {
                let name = &k[b"SCHILY.xattr.".len()..];
                if name.is_empty() || name.contains(&0) || m.xattrs.len() >= 4096 {
                    return Err(bad("bad xattr record"));
                }
                m.xattrs.push((name.to_vec(), v.to_vec()));
            }
            k if k == K_NAME.as_bytes() => {
                let ct = URL_SAFE_NO_PAD.decode(v).map_err(|_| bad("CRYPTIMG.name is not base64url"))?;
                if !fscrypt::valid_name_ct_len(ct.len()) {
                    return Err(bad("CRYPTIMG.name has an impossible ciphertext length"));
                }
                m.name_ct = Some(ct);
            }
            k if k == K_CONTEXT.as_bytes() => {
                let b = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| parse_hex_exact(s, 80))
                    .ok_or_else(|| bad("CRYPTIMG.context is not 80 hex digits"))?;
                let mut c = [0u8; 40];
                c.copy_from_slice(&b);
                if !matches!(super::reader::parse_context(&c, 0), Ok(super::reader::Ctx::V2(_))) {
                    return Err(bad("CRYPTIMG.context is not a supported v2 context"));
                }
                m.context = Some(c);
            }
            k if k == K_SYMLINK.as_bytes() => {
                blob = Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| hex::decode(s).ok())
                        .ok_or_else(|| bad("CRYPTIMG.symlink is not hex"))?,
                );
            }
            k if k == K_SIZE.as_bytes() => m.size = parse_dec(v).ok_or_else(|| bad("CRYPTIMG.size"))?,
            k if k == K_BLOCKS.as_bytes() => runs_raw = Some(v),
            k if k == K_DATACRC.as_bytes() => {
                let b = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| parse_hex_exact(s, 8))
                    .ok_or_else(|| bad("CRYPTIMG.datacrc"))?;
                m.datacrc = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            k if k == K_UNCHANGED.as_bytes() => {
                if v != b"1" {
                    return Err(bad("CRYPTIMG.unchanged must be 1"));
                }
                m.unchanged = true;
            }
            _ => return Err(bad(&format!("unknown record {:?}", String::from_utf8_lossy(r.key)))),
        }
    }
    let ft = m.mode & 0o170000;
    m.kind = match (u.typeflag, ft) {
        (b'5', 0o040000) => Kind::Dir,
        (b'0', 0o100000) => Kind::File,
        (b'2', 0o120000) => Kind::Symlink,
        (b'1', _) => Kind::HardLink,
        (b'3', 0o020000) | (b'4', 0o060000) | (b'6', 0o010000) | (b'0', 0o140000) => Kind::Special,
        _ => return Err(bad("typeflag and mode disagree")),
    };
    if m.mode & !0o177777 != 0 {
        return Err(bad("mode has bits outside S_IFMT|07777"));
    }
    if m.kind == Kind::File && m.context.is_none() {
        m.size = data_size;
    }
    if m.kind == Kind::File && m.context.is_some() {
        let max = m.size.div_ceil(4096);
        if max > MAX_BLOCKS {
            return Err(bad("size beyond what ext4 allows"));
        }
        m.runs = parse_runs(runs_raw.unwrap_or(b""), max).ok_or_else(|| bad("CRYPTIMG.blocks runs invalid or beyond the size"))?;
        if m.datacrc.is_none() {
            return Err(bad("an encrypted file without CRYPTIMG.datacrc"));
        }
    } else if runs_raw.is_some() || m.unchanged {
        return Err(bad(
            "CRYPTIMG.blocks or CRYPTIMG.unchanged on a member that is not an encrypted file",
        ));
    }
    match (m.kind, m.context.is_some(), blob) {
        (Kind::Symlink, true, Some(b)) => {
            let shown = fscrypt::nokey_name(b.get(2..b.len().saturating_sub(1)).unwrap_or(&[]));
            if linkpath.as_deref() != Some(shown.as_bytes()) {
                return Err(bad("an encrypted symlink's linkpath is not the no-key form of its blob"));
            }
            m.link = b;
        }
        (Kind::Symlink, true, None) => return Err(bad("an encrypted symlink without CRYPTIMG.symlink")),
        (_, _, Some(_)) => return Err(bad("CRYPTIMG.symlink on a member that is not an encrypted symlink")),
        _ => m.link = linkpath.unwrap_or_default(),
    }
    if m.kind == Kind::Symlink && m.context.is_some() {
        let ct_len = m.link.get(..2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))).unwrap_or(0);
        if !super::reader::valid_symlink_ct_len(ct_len)
            || m.link.len() != ct_len + 3
            || m.link.last() != Some(&0)
            || m.size != ct_len as u64 + 2
        {
            return Err(bad(
                "encrypted symlink blob badly framed, or CRYPTIMG.size is not 2 + its ciphertext length",
            ));
        }
    }
    if matches!(m.kind, Kind::Symlink | Kind::HardLink) && m.link.is_empty() {
        return Err(bad("a link without a target"));
    }
    Ok(m)
}
