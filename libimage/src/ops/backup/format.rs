//! The backup archive format, versions 1 and 2 (docs/BACKUP.md): names, the
//! manifest, and the encoding of the `CRYPTIMG.*` record values.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{CorruptKind, Error, Result};
use crate::format::extent::MAX_EXTENT_BLOCKS;
use crate::tree::Timespec;
use fscrypt::context::{ExtentContext, EXTENT_CTX_LEN};

/// `format` field of the manifest.
pub const FORMAT_NAME: &str = "cryptimg-backup";
/// The archive format version of full backups (no compact listing), which
/// every reader of this format reads.
pub const FORMAT_VERSION: u32 = 1;
/// The version of incremental backups: members without data are in compact
/// listings (docs/BACKUP.md §4a).
pub const FORMAT_VERSION_LISTING: u32 = 2;
/// The newest version this build reads (it reads every version from 1 on).
pub const MAX_FORMAT_VERSION: u32 = FORMAT_VERSION_LISTING;
/// The first member.
pub const MANIFEST_NAME: &str = "cryptimg-backup.json";
/// The last member.
pub const TRAILER_NAME: &str = "cryptimg-backup.end";
/// Largest manifest accepted.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// Longest member path accepted, in bytes.
pub const MAX_PATH: usize = 1 << 20;
/// Largest regular-file size accepted (the largest `off_t`).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

pub const K_PATH: &str = "path";
pub const K_LINKPATH: &str = "linkpath";
pub const K_SIZE_STD: &str = "size";
pub const K_UID: &str = "uid";
pub const K_GID: &str = "gid";
pub const K_MTIME: &str = "mtime";
pub const K_ATIME: &str = "atime";
pub const K_CTIME: &str = "ctime";
pub const K_DEVMAJOR: &str = "SCHILY.devmajor";
pub const K_DEVMINOR: &str = "SCHILY.devminor";
pub const K_XATTR: &str = "SCHILY.xattr.";
pub const K_NAME: &str = "CRYPTIMG.name";
pub const K_POLICY: &str = "CRYPTIMG.policy";
pub const K_SYMLINK: &str = "CRYPTIMG.symlink";
pub const K_SIZE: &str = "CRYPTIMG.size";
pub const K_EXTENTS: &str = "CRYPTIMG.extents";
pub const K_EXTINFO: &str = "CRYPTIMG.extinfo";
pub const K_MEMBERS: &str = "CRYPTIMG.members";
pub const K_ARCHIVE_CRC: &str = "CRYPTIMG.archive_crc32c";

/// The manifest, `cryptimg-backup.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `cryptimg-backup`.
    pub format: String,
    /// Archive format version (1, or 2 for an archive with compact listings).
    pub version: u32,
    /// 32 hex digits, random per backup.
    pub backup_id: String,
    /// The backup this one is incremental to, or null for a full backup.
    pub base_backup_id: Option<String>,
    /// Seconds since the epoch when the backup was made.
    pub created: i64,
    /// Source image uuid, 32 hex digits.
    pub image_uuid: String,
    /// Source snapshot name.
    pub snapshot: String,
    /// Creation time of the source snapshot.
    pub snapshot_created: i64,
    /// The snapshot policy: the key id new data is written under (32 hex digits).
    pub policy: String,
    /// Every key id needed to read the snapshot, sorted.
    pub keys_needed: Vec<String>,
    /// Always 4096.
    pub block_size: u32,
}

fn manifest_err(why: String) -> Error {
    Error::corrupt(CorruptKind::BadManifest, format!("backup manifest ({why})"), None)
}

/// Parses exactly `n` hex digits of lowercase hex.
pub fn parse_hex_exact(s: &str, n: usize) -> Option<Vec<u8>> {
    (s.len() == n && is_lower_hex(s.as_bytes())).then(|| hex::decode(s).ok()).flatten()
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| manifest_err(format!("not valid JSON: {e}")))?;
        if m.format != FORMAT_NAME {
            return Err(manifest_err(format!("format is {:?}, not {FORMAT_NAME:?}", m.format)));
        }
        if !(FORMAT_VERSION..=MAX_FORMAT_VERSION).contains(&m.version) {
            return Err(Error::Unsupported(format!(
                "backup format version {} (this build reads versions {FORMAT_VERSION} to {MAX_FORMAT_VERSION})",
                m.version
            )));
        }
        if m.block_size != crate::BLOCK_SIZE as u32 {
            return Err(manifest_err(format!("block size {}", m.block_size)));
        }
        for (what, v) in [("backup_id", Some(&m.backup_id)), ("base_backup_id", m.base_backup_id.as_ref())]
            .into_iter()
            .chain([("image_uuid", Some(&m.image_uuid)), ("policy", Some(&m.policy))])
        {
            if let Some(v) = v {
                if parse_hex_exact(v, 32).is_none() {
                    return Err(manifest_err(format!("{what} is not 32 lowercase hex digits")));
                }
            }
        }
        if m.keys_needed.len() > 1 << 16 || m.keys_needed.iter().any(|k| parse_hex_exact(k, 32).is_none()) {
            return Err(manifest_err("keys_needed holds something other than key ids".into()));
        }
        if let Err(why) = crate::format::snapshot::check_name(&m.snapshot) {
            return Err(manifest_err(format!("snapshot name: {why}")));
        }
        Ok(m)
    }

    /// The policy key id.
    pub fn policy_id(&self) -> fscrypt::KeyId {
        let mut k = [0u8; 16];
        if let Some(v) = parse_hex_exact(&self.policy, 32) {
            k.copy_from_slice(&v);
        }
        fscrypt::KeyId(k)
    }

    /// The source image uuid.
    pub fn uuid(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        if let Some(v) = parse_hex_exact(&self.image_uuid, 32) {
            k.copy_from_slice(&v);
        }
        k
    }
}

/// The identity of an image extent inside backups: its context and the
/// crc32c and length of its whole ciphertext. Equal keys are the same extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtentKey {
    pub ctx: [u8; EXTENT_CTX_LEN],
    pub crc: u32,
    pub blocks: u32,
}

impl ExtentKey {
    pub fn context(&self) -> ExtentContext {
        ExtentContext::from_bytes(&self.ctx)
    }
}

/// One item of `CRYPTIMG.extents` with its `CRYPTIMG.extinfo` companion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// First logical block of the file.
    pub lblk: u64,
    /// Number of blocks.
    pub count: u32,
    /// First block inside the extent.
    pub off: u32,
    pub ext: ExtentKey,
    /// True when this member's data holds the blocks; false when they are
    /// stored earlier in this archive or in a base backup.
    pub stored: bool,
}

/// Encodes `CRYPTIMG.extents` and `CRYPTIMG.extinfo`.
pub fn encode_items(items: &[Item]) -> (String, String) {
    let mut ext = String::with_capacity(items.len() * 96);
    let mut info = String::with_capacity(items.len() * 16);
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            ext.push(',');
            info.push(',');
        }
        // `{lblk}+{count}@{off}:{hex ctx}` and `{blocks}:{crc:08x}:{d|r}`,
        // written digit by digit (this runs once per member).
        push_dec(&mut ext, it.lblk, 1);
        ext.push('+');
        push_dec(&mut ext, u64::from(it.count), 1);
        ext.push('@');
        push_dec(&mut ext, u64::from(it.off), 1);
        ext.push(':');
        push_hex(&mut ext, &it.ext.ctx);
        push_dec(&mut info, u64::from(it.ext.blocks), 1);
        info.push(':');
        push_hex(&mut info, &it.ext.crc.to_be_bytes());
        info.push(':');
        info.push(if it.stored { 'd' } else { 'r' });
    }
    (ext, info)
}

/// Appends the decimal digits of `v`, zero-padded to at least `width`.
fn push_dec(s: &mut String, mut v: u64, width: usize) {
    let mut d = [b'0'; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let i = i.min(d.len().saturating_sub(width));
    s.extend(d[i..].iter().map(|&b| char::from(b)));
}

/// Appends lowercase hex of `b`.
fn push_hex(s: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &x in b {
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 15)]));
    }
}

/// A strict unsigned decimal: digits only, no leading zero unless "0".
pub fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses and checks `CRYPTIMG.extents` + `CRYPTIMG.extinfo` of a file of
/// `size` bytes. `bad(why)` builds the error for this member.
pub fn parse_items(ext: &[u8], info: &[u8], size: u64, bad: &dyn Fn(String) -> Error) -> Result<Vec<Item>> {
    if ext.is_empty() != info.is_empty() {
        return Err(bad("CRYPTIMG.extents and CRYPTIMG.extinfo disagree".into()));
    }
    if ext.is_empty() {
        return Ok(Vec::new());
    }
    let max_lblk = size.div_ceil(crate::BLOCK_SIZE as u64);
    let mut out = Vec::new();
    let mut infos = info.split(|&b| b == b',');
    let mut next_lblk = 0u64;
    for (i, e) in ext.split(|&b| b == b',').enumerate() {
        let item_bad = |why: &str| bad(format!("extent item {i}: {why}"));
        let inf = infos
            .next()
            .ok_or_else(|| bad("CRYPTIMG.extinfo has fewer items than CRYPTIMG.extents".into()))?;
        let (pos, ctxhex) = split_once(e, b':').ok_or_else(|| item_bad("expected LBLK+COUNT@OFF:CTXHEX"))?;
        let (lblk, rest) = split_once(pos, b'+').ok_or_else(|| item_bad("expected LBLK+COUNT@OFF:CTXHEX"))?;
        let (count, off) = split_once(rest, b'@').ok_or_else(|| item_bad("expected LBLK+COUNT@OFF:CTXHEX"))?;
        let (lblk, count, off) = match (parse_dec(lblk), parse_dec(count), parse_dec(off)) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(item_bad("LBLK, COUNT and OFF must be decimal numbers")),
        };
        let ctx = std::str::from_utf8(ctxhex)
            .ok()
            .and_then(|s| parse_hex_exact(s, 2 * EXTENT_CTX_LEN))
            .ok_or_else(|| item_bad("the extent context is not 68 lowercase hex digits"))?;
        let mut f = inf.split(|&b| b == b':');
        let (blocks, crc, flag) = match (f.next(), f.next(), f.next(), f.next()) {
            (Some(b), Some(c), Some(fl), None) => (b, c, fl),
            _ => return Err(item_bad("CRYPTIMG.extinfo item is not BLOCKS:CRC:FLAG")),
        };
        let blocks = parse_dec(blocks).ok_or_else(|| item_bad("extent length is not a decimal number"))?;
        let crc = std::str::from_utf8(crc)
            .ok()
            .and_then(|s| parse_hex_exact(s, 8))
            .ok_or_else(|| item_bad("extent crc is not 8 lowercase hex digits"))?;
        let stored = match flag {
            b"d" => true,
            b"r" => false,
            _ => return Err(item_bad("extinfo flag is neither 'd' nor 'r'")),
        };
        if blocks == 0 || blocks > u64::from(MAX_EXTENT_BLOCKS) {
            return Err(item_bad(&format!("extent length {blocks} outside 1..={MAX_EXTENT_BLOCKS}")));
        }
        if count == 0 || off.checked_add(count).is_none_or(|end| end > blocks) {
            return Err(item_bad(&format!(
                "blocks {off}..{} lie outside the {blocks}-block extent",
                off.saturating_add(count)
            )));
        }
        let end = lblk.checked_add(count).ok_or_else(|| item_bad("logical block out of range"))?;
        if lblk < next_lblk {
            return Err(item_bad("items overlap or are out of order"));
        }
        if end > max_lblk {
            return Err(bad(format!(
                "size {size} disagrees with the extents: item {i} covers logical blocks {lblk}..{end}, beyond the file's {max_lblk} blocks"
            )));
        }
        next_lblk = end;
        let mut c = [0u8; EXTENT_CTX_LEN];
        c.copy_from_slice(&ctx);
        if let Err(why) = ExtentContext::from_bytes(&c).validate() {
            return Err(item_bad(why));
        }
        let mut crcb = [0u8; 4];
        crcb.copy_from_slice(&crc);
        out.push(Item {
            lblk,
            count: count as u32,
            off: off as u32,
            ext: ExtentKey {
                ctx: c,
                crc: u32::from_be_bytes(crcb),
                blocks: blocks as u32,
            },
            stored,
        });
    }
    if infos.next().is_some() {
        return Err(bad("CRYPTIMG.extinfo has more items than CRYPTIMG.extents".into()));
    }
    Ok(out)
}

fn split_once(b: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == sep)?;
    Some((&b[..i], &b[i + 1..]))
}

/// pax time: `SEC.NNNNNNNNN` (a negative time is written as the exact
/// decimal, e.g. sec -3 nsec 250000000 is `-2.750000000`).
pub fn encode_time(t: Timespec) -> String {
    let mut s = String::with_capacity(32);
    if t.sec < 0 && t.nsec > 0 {
        // -(sec + 1) = |sec| - 1, which fits in u64 for every i64.
        s.push('-');
        push_dec(&mut s, t.sec.unsigned_abs() - 1, 1);
        s.push('.');
        push_dec(&mut s, u64::from(1_000_000_000 - t.nsec), 9);
    } else {
        if t.sec < 0 {
            s.push('-');
        }
        push_dec(&mut s, t.sec.unsigned_abs(), 1);
        s.push('.');
        push_dec(&mut s, u64::from(t.nsec), 9);
    }
    s
}

/// Parses a pax time: `[-]SEC[.FRACTION]` with at most 9 fraction digits.
pub fn parse_time(v: &[u8]) -> Option<Timespec> {
    let (neg, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let (int, frac) = match split_once(v, b'.') {
        Some((i, f)) => (i, f),
        None => (v, &b""[..]),
    };
    if int.is_empty() || int.len() > 19 || !int.iter().all(u8::is_ascii_digit) || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sec: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !neg {
        return Some(Timespec { sec, nsec });
    }
    if nsec == 0 {
        return Some(Timespec { sec: -sec, nsec: 0 });
    }
    Some(Timespec {
        sec: -sec.checked_add(1)?,
        nsec: 1_000_000_000 - nsec,
    })
}

/// base64url without padding (RFC 4648 §5).
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Strict base64url-without-padding decoding.
pub fn unb64(s: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// Lowercase hex of exactly the given byte length.
pub fn unhex(s: &[u8], len: usize) -> Option<Vec<u8>> {
    std::str::from_utf8(s).ok().and_then(|s| parse_hex_exact(s, 2 * len))
}

/// Lowercase hex of any even length (at most `max` bytes).
pub fn unhex_var(s: &[u8], max: usize) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * max || !is_lower_hex(s) {
        return None;
    }
    hex::decode(s).ok()
}

/// glibc `major()` / `minor()` of a 64-bit `dev_t`.
pub fn dev_split(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

/// glibc `makedev()`; the inverse of [`dev_split`] for 32-bit major/minor.
pub fn dev_join(major: u64, minor: u64) -> Option<u64> {
    if major > u64::from(u32::MAX) || minor > u64::from(u32::MAX) {
        return None;
    }
    Some((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | ((major & 0xffff_f000) << 32))
}

/// A new random backup id.
pub fn new_backup_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::io("getting random bytes for the backup id", std::io::Error::other(e.to_string())))?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_written_encodings_match_format() {
        use super::*;
        let old_time = |t: Timespec| {
            if t.sec < 0 && t.nsec > 0 {
                let whole = -(t.sec as i128 + 1);
                format!("-{whole}.{:09}", 1_000_000_000 - t.nsec)
            } else {
                format!("{}.{:09}", t.sec, t.nsec)
            }
        };
        for sec in [0i64, 1, -1, -3, 9, 10, 1_700_000_000, i64::MAX, i64::MIN, i64::MIN + 1] {
            for nsec in [0u32, 1, 250_000_000, 999_999_999] {
                let t = Timespec { sec, nsec };
                assert_eq!(encode_time(t), old_time(t), "{sec} {nsec}");
            }
        }
        let t = Timespec { sec: 5, nsec: u32::MAX };
        assert_eq!(encode_time(t), old_time(t));
        let mut ctx = [0u8; EXTENT_CTX_LEN];
        for (i, b) in ctx.iter_mut().enumerate() {
            *b = (i * 37 + 5) as u8;
        }
        let item = |lblk, count, off, blocks, crc, stored| Item {
            lblk,
            count,
            off,
            ext: ExtentKey { ctx, crc, blocks },
            stored,
        };
        let items = [
            item(0, 1, 0, 1, 0, true),
            item(u64::MAX, u32::MAX, 7, u32::MAX, 0xdead_beef, false),
            item(10, 2, 3, 9, 0x0000_00a1, true),
        ];
        let mut ext = Vec::new();
        let mut info = Vec::new();
        for it in &items {
            ext.push(format!("{}+{}@{}:{}", it.lblk, it.count, it.off, hex::encode(it.ext.ctx)));
            info.push(format!(
                "{}:{:08x}:{}",
                it.ext.blocks,
                it.ext.crc,
                if it.stored { 'd' } else { 'r' }
            ));
        }
        assert_eq!(encode_items(&items), (ext.join(","), info.join(",")));
    }
    use super::*;

    #[test]
    fn times_round_trip() {
        for (sec, nsec) in [
            (0, 0),
            (1, 5),
            (-1, 0),
            (-3, 250_000_000),
            (-1, 999_999_999),
            (1_700_000_000, 123_456_789),
        ] {
            let t = Timespec { sec, nsec };
            assert_eq!(parse_time(encode_time(t).as_bytes()), Some(t), "{t:?} {}", encode_time(t));
        }
        assert_eq!(parse_time(b"1.5"), Some(Timespec { sec: 1, nsec: 500_000_000 }));
        for bad in [&b""[..], b"-", b"x", b"1.1234567890", b"1e5", b"99999999999999999999"] {
            assert_eq!(parse_time(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn dev_round_trip() {
        for d in [0u64, 0x0103, 0x1234_5678_9abc_def0, u64::MAX] {
            let (ma, mi) = dev_split(d);
            assert_eq!(dev_join(ma, mi), Some(d));
        }
    }

    #[test]
    fn items_round_trip_and_limits() {
        let k = ExtentKey {
            ctx: {
                let mut c = [7u8; EXTENT_CTX_LEN];
                c[0] = 1;
                c[1] = 1;
                c
            },
            crc: 0xdead_beef,
            blocks: 10,
        };
        let items = vec![
            Item {
                lblk: 0,
                count: 3,
                off: 2,
                ext: k,
                stored: true,
            },
            Item {
                lblk: 5,
                count: 1,
                off: 9,
                ext: k,
                stored: false,
            },
        ];
        let (e, i) = encode_items(&items);
        let bad = |s: String| Error::Invalid(s);
        assert_eq!(parse_items(e.as_bytes(), i.as_bytes(), 6 * 4096, &bad).unwrap(), items);
        // size disagrees
        let err = parse_items(e.as_bytes(), i.as_bytes(), 5 * 4096, &bad).unwrap_err();
        assert!(err.to_string().contains("disagrees"), "{err}");
        // huge count
        let huge = e.replacen("0+3@2", "0+18446744073709551615@2", 1);
        assert!(parse_items(huge.as_bytes(), i.as_bytes(), u64::MAX, &bad).is_err());
        let huge = e.replacen("0+3@2", "0+99999999999999999999999@2", 1);
        assert!(parse_items(huge.as_bytes(), i.as_bytes(), u64::MAX, &bad).is_err());
    }
}
