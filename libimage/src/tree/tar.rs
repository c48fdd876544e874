//! The tar reader: a ustar, pax or GNU tar stream turned into
//! [`SourceEntry`]s (see the module docs of [`crate::tree`] for why it is not
//! `tar::Entries`).

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::*;
use crate::error::{CorruptKind, Error, Result};

const BLOCK: u64 = 512;
/// At most this much input is read (and discarded) after the end-of-archive
/// marker, so a writer piping a blocked archive into us does not get EPIPE.
const MAX_TRAILER: u64 = 1024 * 1024;

pub(super) fn round_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|n| n & !(BLOCK - 1))
}

/// Tracks the byte position in the archive and whether the input hit EOF.
struct TarStream<'r> {
    inner: &'r mut dyn Read,
    pos: u64,
    hit_eof: bool,
}

impl Read for TarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn truncated(needed: u64, available: u64, what: impl Into<String>, at: u64) -> Error {
    Error::corrupt(CorruptKind::Truncated { needed, available }, what, Some(at))
}

fn malformed(why: &'static str, what: impl Into<String>, at: u64) -> Error {
    Error::corrupt(CorruptKind::BadHeader(why), what, Some(at))
}

fn too_big(field: &'static str, value: u64, max: u64, at: u64) -> Error {
    Error::corrupt(CorruptKind::OutOfRange { field, value, max }, "tar header", Some(at))
}

impl TarStream<'_> {
    /// Reads until `buf` is full or EOF; returns the number of bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading tar stream", e)),
            }
        }
        Ok(got)
    }

    /// Reads exactly `n` bytes (the caller checked `n` against a cap).
    fn read_vec(&mut self, n: u64, what: &str, at: u64) -> Result<Vec<u8>> {
        let mut v = vec![0u8; usize::try_from(n).map_err(|_| too_big("size", n, 0, at))?];
        let got = self.fill(&mut v)?;
        if got < v.len() {
            return Err(truncated(n, got as u64, what, at));
        }
        Ok(v)
    }

    /// Reads and discards input up to archive position `end`.
    fn skip_to(&mut self, end: u64, what: &str, at: u64) -> Result<()> {
        let want = end.saturating_sub(self.pos);
        let got = io::copy(&mut self.take(want), &mut io::sink()).map_err(|e| Error::io("reading tar stream", e))?;
        if got < want {
            return Err(truncated(want, got, what, at));
        }
        Ok(())
    }
}

/// Parses a numeric header field: octal text, or GNU base-256 (first byte
/// 0x80 positive, 0xff negative two's complement).
pub(super) fn header_num(field: &[u8], name: &'static str, at: u64) -> Result<i64> {
    let bad = || malformed("malformed numeric field", format!("tar header field {name}"), at);
    match field.first() {
        Some(&b) if b & 0x80 != 0 => {
            let mut v: i128 = if b == 0xff { -1 } else { i128::from(b & 0x7f) };
            for &x in &field[1..] {
                v = v.checked_mul(256).ok_or_else(bad)? | i128::from(x);
            }
            i64::try_from(v).map_err(|_| bad())
        }
        _ => {
            let text = field.trim_ascii_start();
            let end = text.iter().position(|&c| c == 0 || c == b' ').unwrap_or(text.len());
            if text[end..].iter().any(|&c| c != 0 && c != b' ') {
                return Err(bad());
            }
            text[..end].iter().try_fold(0i64, |acc, &c| {
                if !(b'0'..=b'7').contains(&c) {
                    return Err(bad());
                }
                acc.checked_mul(8).and_then(|a| a.checked_add(i64::from(c - b'0'))).ok_or_else(bad)
            })
        }
    }
}

fn header_u64(field: &[u8], name: &'static str, at: u64) -> Result<u64> {
    let v = header_num(field, name, at)?;
    u64::try_from(v).map_err(|_| malformed("negative value", format!("tar header field {name}"), at))
}

fn to_u32(v: u64, field: &'static str, at: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| too_big(field, v, u32::MAX.into(), at))
}

/// Parses a pax decimal number.
fn pax_u64(v: &[u8], field: &'static str, at: u64) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("malformed pax number", format!("pax record {field}"), at))
}

/// Parses a pax time: `[-]seconds[.fraction]`.
pub(super) fn pax_time(v: &[u8], field: &'static str, at: u64) -> Result<Timespec> {
    let bad = || malformed("malformed pax time", format!("pax record {field}"), at);
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = match v.iter().position(|&c| c == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let sec: i64 = std::str::from_utf8(int).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut nsec = 0u32;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |&d| u32::from(d - b'0'));
    }
    Ok(match (neg, nsec) {
        (false, _) => Timespec { sec, nsec },
        (true, 0) => Timespec { sec: -sec, nsec },
        (true, _) => Timespec {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        },
    })
}

/// Attributes collected from pax extended headers (global ones, then the
/// member's own on top).
#[derive(Clone, Default)]
struct PaxAttrs {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    atime: Option<Timespec>,
    mtime: Option<Timespec>,
    ctime: Option<Timespec>,
    devmajor: Option<u64>,
    devminor: Option<u64>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    xattr_bytes: usize,
    sparse_major: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_realsize: Option<u64>,
    /// Flat offset/length list of pax sparse formats 0.0 and 0.1.
    sparse_map: Vec<u64>,
}

impl PaxAttrs {
    /// Applies the records of one pax extended header.
    fn apply(&mut self, data: &[u8], at: u64) -> Result<()> {
        let bad = || malformed("malformed pax record", "tar pax extended header", at);
        let mut rest = data;
        while !rest.is_empty() && rest.iter().any(|&b| b != 0) {
            let sp = rest.iter().take(21).position(|&b| b == b' ').ok_or_else(bad)?;
            let len = pax_u64(&rest[..sp], "length", at)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l > sp + 1 && l <= rest.len())
                .ok_or_else(bad)?;
            let record = rest[sp + 1..len].strip_suffix(b"\n").ok_or_else(bad)?;
            rest = &rest[len..];
            let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
            self.set(&record[..eq], &record[eq + 1..], at)?;
        }
        Ok(())
    }

    fn set(&mut self, key: &[u8], v: &[u8], at: u64) -> Result<()> {
        // An empty value removes a setting (POSIX), except for xattrs where
        // an empty value is a legitimate attribute value.
        let bytes = || (!v.is_empty()).then(|| v.to_vec());
        let num = |f| -> Result<Option<u64>> {
            if v.is_empty() {
                Ok(None)
            } else {
                pax_u64(v, f, at).map(Some)
            }
        };
        let time = |f| -> Result<Option<Timespec>> {
            if v.is_empty() {
                Ok(None)
            } else {
                pax_time(v, f, at).map(Some)
            }
        };
        match key {
            b"path" => self.path = bytes(),
            b"linkpath" => self.linkpath = bytes(),
            b"size" => self.size = num("size")?,
            b"uid" => self.uid = num("uid")?,
            b"gid" => self.gid = num("gid")?,
            b"atime" => self.atime = time("atime")?,
            b"mtime" => self.mtime = time("mtime")?,
            b"ctime" => self.ctime = time("ctime")?,
            b"SCHILY.devmajor" => self.devmajor = num("SCHILY.devmajor")?,
            b"SCHILY.devminor" => self.devminor = num("SCHILY.devminor")?,
            b"GNU.sparse.major" => self.sparse_major = num("GNU.sparse.major")?,
            b"GNU.sparse.name" => self.sparse_name = bytes(),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.sparse_realsize = num("GNU.sparse.realsize")?,
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                self.sparse_map.push(pax_u64(v, "GNU.sparse.offset", at)?);
            }
            b"GNU.sparse.map" => {
                self.sparse_map.clear();
                if !v.is_empty() {
                    for n in v.split(|&b| b == b',') {
                        self.sparse_map.push(pax_u64(n, "GNU.sparse.map", at)?);
                    }
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.set_xattr(name, v, at)?;
                }
            }
        }
        Ok(())
    }

    /// Drops what only makes sense for one member (after a global header).
    fn forget_member_fields(&mut self) {
        self.path = None;
        self.linkpath = None;
        self.size = None;
        self.sparse_major = None;
        self.sparse_name = None;
        self.sparse_realsize = None;
        self.sparse_map.clear();
    }

    fn set_xattr(&mut self, name: &[u8], v: &[u8], at: u64) -> Result<()> {
        if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
            return Err(malformed("bad xattr name", "tar pax extended header", at));
        }
        if v.len() > MAX_XATTR_VALUE {
            return Err(too_big("xattr value length", v.len() as u64, MAX_XATTR_VALUE as u64, at));
        }
        self.xattr_bytes += name.len() + v.len();
        if let Some(old) = self.xattrs.insert(name.to_vec(), v.to_vec()) {
            self.xattr_bytes -= name.len() + old.len();
        }
        if self.xattr_bytes as u64 > MAX_PAX {
            return Err(too_big("total xattr bytes", self.xattr_bytes as u64, MAX_PAX, at));
        }
        Ok(())
    }
}

/// Splits a tar path into components: empty and "." components are dropped
/// (so leading "/" and "./" disappear), ".." is rejected.
fn normalize(raw: &[u8], at: u64) -> Result<Vec<Vec<u8>>> {
    if raw.len() > MAX_PATH {
        return Err(too_big("path length", raw.len() as u64, MAX_PATH as u64, at));
    }
    if raw.contains(&0) {
        return Err(malformed("NUL byte in path", "tar header", at));
    }
    let mut out = Vec::with_capacity(raw.iter().filter(|&&b| b == b'/').count() + 1);
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                let what = format!("tar entry {}", String::from_utf8_lossy(raw));
                return Err(malformed("path contains a '..' component", what, at));
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Start of the next header after `len` bytes of data starting at `start`.
fn block_end(start: u64, len: u64, at: u64) -> Result<u64> {
    start
        .checked_add(len)
        .and_then(round_up)
        .ok_or_else(|| too_big("size", len, u64::MAX - start, at))
}

/// Extension headers seen since the last member header.
#[derive(Default)]
struct Pending {
    pax: Option<PaxAttrs>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Read a tar stream (ustar, pax, GNU: long names/links, hard links, symlinks,
/// pax `SCHILY.xattr.*`, pax times with fractional nanoseconds, global pax
/// headers, old GNU sparse and pax sparse 0.0/0.1/1.0). Entries are passed in
/// archive order; paths are normalised (empty and "." components, hence a
/// leading "/" or "./", are dropped; ".." is rejected). Missing parent
/// directories are not synthesised. Numeric owners only (uname/gname are
/// ignored).
///
/// The archive must end with an end-of-archive (all-zero) block: a stream
/// that stops before it, inside a header or inside file data, or that has a
/// bad header checksum, is `Error::Corrupt` with the byte offset of the
/// header concerned. Up to 1 MiB after the end marker is read and ignored.
pub fn read_tar(input: &mut dyn Read, sink: &mut dyn EntrySink) -> Result<()> {
    let mut s = TarStream {
        inner: input,
        pos: 0,
        hit_eof: false,
    };
    let mut global = PaxAttrs::default();
    let mut pending = Pending::default();
    loop {
        let at = s.pos;
        let mut hdr = ::tar::Header::new_old();
        match s.fill(hdr.as_mut_bytes())? {
            0 => return Err(truncated(BLOCK, 0, "tar end-of-archive marker", at)),
            n if n < BLOCK as usize => return Err(truncated(BLOCK, n as u64, "tar header", at)),
            _ => {}
        }
        if hdr.as_bytes().iter().all(|&b| b == 0) {
            if pending.pax.is_some() || pending.long_name.is_some() || pending.long_link.is_some() {
                let why = "extension header not followed by a member";
                return Err(malformed(why, "tar header", at));
            }
            // The archive is complete; record padding after it is ignored.
            let _ = s.skip_to(s.pos + MAX_TRAILER, "", at);
            return Ok(());
        }
        check_checksum(&hdr, at)?;
        let size = header_u64(&hdr.as_old().size, "size", at)?;
        let flag = hdr.as_old().linkflag[0];
        if let b'L' | b'K' | b'x' | b'g' = flag {
            let max = if flag == b'x' || flag == b'g' { MAX_PAX } else { MAX_PATH as u64 };
            if size > max {
                return Err(too_big("extension header size", size, max, at));
            }
            let mut data = s.read_vec(size, "tar extension header", at)?;
            s.skip_to(block_end(s.pos, 0, at)?, "tar extension header", at)?;
            let duplicate = match flag {
                b'x' => {
                    let mut pax = global.clone();
                    pax.apply(&data, at)?;
                    pending.pax.replace(pax).is_some()
                }
                b'g' => {
                    global.apply(&data, at)?;
                    global.forget_member_fields();
                    false
                }
                _ => {
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    let slot = match flag {
                        b'L' => &mut pending.long_name,
                        _ => &mut pending.long_link,
                    };
                    slot.replace(data).is_some()
                }
            };
            if duplicate {
                let kind = CorruptKind::Duplicate("extension header for one member");
                return Err(Error::corrupt(kind, "tar header", Some(at)));
            }
            continue;
        }
        let member = Member {
            hdr: &hdr,
            flag,
            at,
            pax: pending.pax.take().unwrap_or_else(|| global.clone()),
            long_name: pending.long_name.take(),
            long_link: pending.long_link.take(),
        };
        let data_end = member.emit(&mut s, size, sink)?;
        s.skip_to(data_end, "tar member data", at)?;
    }
}

fn check_checksum(hdr: &::tar::Header, at: u64) -> Result<()> {
    let stored = header_num(&hdr.as_old().cksum, "checksum", at)?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in hdr.as_bytes().iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        let what = format!("tar header (stored checksum {stored:o}, computed {unsigned:o})");
        return Err(malformed("header checksum mismatch", what, at));
    }
    Ok(())
}

/// One archive member with its extension headers.
struct Member<'h> {
    hdr: &'h ::tar::Header,
    flag: u8,
    at: u64,
    pax: PaxAttrs,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Member<'_> {
    fn is_pax_sparse(&self) -> bool {
        let p = &self.pax;
        p.sparse_major.is_some() || p.sparse_realsize.is_some() || !p.sparse_map.is_empty()
    }

    fn raw_path(&self) -> Vec<u8> {
        match (&self.pax.sparse_name, &self.pax.path, &self.long_name) {
            (Some(n), _, _) if self.is_pax_sparse() => n.clone(),
            (_, Some(p), _) | (_, None, Some(p)) => p.clone(),
            _ => self.hdr.path_bytes().into_owned(),
        }
    }

    fn raw_link(&self) -> Vec<u8> {
        match (&self.pax.linkpath, &self.long_link) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            _ => (self.hdr.link_name_bytes()).map_or_else(Vec::new, |c| c.into_owned()),
        }
    }

    fn meta(&self, ifmt: u32) -> Result<Meta> {
        let (old, pax, at) = (self.hdr.as_old(), &self.pax, self.at);
        let id = |pax_v: Option<u64>, field: &[u8], name| match pax_v {
            Some(v) => to_u32(v, name, at),
            None => to_u32(header_u64(field, name, at)?, name, at),
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Timespec {
                sec: header_num(&old.mtime, "mtime", at)?,
                nsec: 0,
            },
        };
        let rdev = if ifmt == libc::S_IFCHR || ifmt == libc::S_IFBLK {
            let (major, minor) = match (self.hdr.as_ustar(), self.hdr.as_gnu()) {
                (Some(u), _) => (&u.dev_major, &u.dev_minor),
                (None, Some(g)) => (&g.dev_major, &g.dev_minor),
                (None, None) => (&[b'0'; 8], &[b'0'; 8]),
            };
            libc::makedev(id(pax.devmajor, major, "device major")?, id(pax.devminor, minor, "device minor")?)
        } else {
            0
        };
        Ok(Meta {
            mode: ifmt | (header_u64(&old.mode, "mode", at)? & 0o7777) as u32,
            uid: id(pax.uid, &old.uid, "uid")?,
            gid: id(pax.gid, &old.gid, "gid")?,
            atime: pax.atime.unwrap_or(mtime),
            mtime,
            ctime: pax.ctime.unwrap_or(mtime),
            rdev,
            xattrs: pax.xattrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }

    /// Builds the entry, passes it to `sink`, and returns where the member's
    /// data ends in the archive.
    fn emit(self, s: &mut TarStream<'_>, header_size: u64, sink: &mut dyn EntrySink) -> Result<u64> {
        let at = self.at;
        let size = self.pax.size.unwrap_or(header_size);
        let data_end = block_end(s.pos, size, at)?;
        if self.flag == b'V' {
            // A GNU volume label: not a file.
            return Ok(data_end);
        }
        let raw_path = self.raw_path();
        let ifmt = match self.flag {
            b'0' | 0 | b'7' if raw_path.ends_with(b"/") => libc::S_IFDIR,
            b'0' | 0 | b'7' | b'S' | b'1' => libc::S_IFREG,
            b'2' => libc::S_IFLNK,
            b'3' => libc::S_IFCHR,
            b'4' => libc::S_IFBLK,
            b'5' | b'D' => libc::S_IFDIR,
            b'6' => libc::S_IFIFO,
            other => {
                return Err(Error::Unsupported(format!(
                    "tar entry type {:?} at byte offset {at}",
                    char::from(other)
                )))
            }
        };
        let path = normalize(&raw_path, at)?;
        if path.is_empty() && ifmt != libc::S_IFDIR {
            return Err(malformed("empty path", "tar header", at));
        }
        let meta = self.meta(ifmt)?;
        let kind = match (ifmt, self.flag) {
            (libc::S_IFDIR, _) => SourceKind::Dir,
            (libc::S_IFLNK, _) => {
                let target = self.raw_link();
                if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                    return Err(malformed("bad symlink target", "tar header", at));
                }
                SourceKind::Symlink { target }
            }
            (_, b'1') => {
                let target = normalize(&self.raw_link(), at)?;
                if target.is_empty() {
                    return Err(malformed("hard link without a target", "tar header", at));
                }
                SourceKind::HardLink { target }
            }
            (libc::S_IFREG, _) => {
                return self.emit_file(s, size, data_end, sink, path, meta);
            }
            _ => SourceKind::Special,
        };
        sink.entry(SourceEntry { path, meta, kind })?;
        Ok(data_end)
    }

    /// Streams a regular (possibly sparse) file to `sink`; `size` bytes of
    /// member data end at `data_end`.
    fn emit_file(
        &self,
        s: &mut TarStream<'_>,
        size: u64,
        mut data_end: u64,
        sink: &mut dyn EntrySink,
        path: Vec<Vec<u8>>,
        meta: Meta,
    ) -> Result<u64> {
        let at = self.at;
        let (segments, logical) = if self.flag == b'S' {
            let map = gnu_sparse_map(s, self.hdr, at)?;
            data_end = block_end(s.pos, size, at)?;
            map
        } else if self.is_pax_sparse() {
            pax_sparse_map(s, &self.pax, data_end, at)?
        } else {
            (vec![(0, size)], size)
        };
        let stored: u64 = segments.iter().map(|&(_, len)| len).sum();
        if s.pos.checked_add(stored).is_none_or(|e| e > data_end) {
            let why = "sparse map lists more data than the member holds";
            return Err(malformed(why, "tar header", at));
        }
        let mut content = Content {
            inner: &mut *s,
            segments,
            next: 0,
            pos: 0,
            size: logical,
        };
        let kind = SourceKind::File {
            size: logical,
            content: &mut content,
        };
        let r = sink.entry(SourceEntry { path, meta, kind });
        if s.hit_eof {
            let what = format!("tar data of member at byte offset {at}");
            return Err(truncated(data_end - at, s.pos - at, what, at));
        }
        r.map(|()| data_end)
    }
}

/// Checks a sparse map: segments in order, not overlapping, within the size.
fn check_segments(segs: &[(u64, u64)], size: u64, at: u64) -> Result<()> {
    let mut end = 0u64;
    for &(off, len) in segs {
        match off.checked_add(len) {
            Some(e) if off >= end && e <= size => end = e,
            _ => return Err(malformed("bad sparse map", "tar header", at)),
        }
    }
    Ok(())
}

fn sparse_count_check(n: u64, at: u64) -> Result<()> {
    let max = MAX_SPARSE_SEGMENTS as u64;
    if n > max {
        return Err(too_big("sparse segments", n, max, at));
    }
    Ok(())
}

/// Reads the old GNU sparse map: 4 slots in the header plus extension blocks.
fn gnu_sparse_map(s: &mut TarStream<'_>, hdr: &::tar::Header, at: u64) -> Result<(Vec<(u64, u64)>, u64)> {
    let gnu = hdr
        .as_gnu()
        .ok_or_else(|| malformed("sparse member without GNU header", "tar header", at))?;
    let real = header_u64(&gnu.realsize, "realsize", at)?;
    let mut segs = Vec::new();
    let mut push = |slots: &[::tar::GnuSparseHeader]| -> Result<()> {
        for slot in slots.iter().take_while(|sl| sl.offset[0] != 0) {
            sparse_count_check(segs.len() as u64 + 1, at)?;
            segs.push((
                header_u64(&slot.offset, "sparse offset", at)?,
                header_u64(&slot.numbytes, "sparse length", at)?,
            ));
        }
        Ok(())
    };
    push(&gnu.sparse)?;
    let mut extended = gnu.is_extended();
    while extended {
        let mut ext = ::tar::GnuExtSparseHeader::new();
        let got = s.fill(ext.as_mut_bytes())?;
        if got < BLOCK as usize {
            return Err(truncated(BLOCK, got as u64, "GNU sparse extension", at));
        }
        push(&ext.sparse)?;
        extended = ext.is_extended();
    }
    check_segments(&segs, real, at)?;
    Ok((segs, real))
}

/// Reads the pax sparse map: from the records (0.0, 0.1) or from the blocks
/// at the start of the member data (1.0), which end before `data_end`.
fn pax_sparse_map(s: &mut TarStream<'_>, pax: &PaxAttrs, data_end: u64, at: u64) -> Result<(Vec<(u64, u64)>, u64)> {
    let real = pax
        .sparse_realsize
        .ok_or_else(|| malformed("pax sparse member without real size", "tar header", at))?;
    let segs: Vec<(u64, u64)> = match pax.sparse_major {
        Some(1) => {
            let mut map = MapReader {
                s,
                data_end,
                at,
                block: [0; BLOCK as usize],
                next: BLOCK as usize,
            };
            let n = map.number()?;
            sparse_count_check(n, at)?;
            let mut segs = Vec::new();
            for _ in 0..n {
                segs.push((map.number()?, map.number()?));
            }
            segs
        }
        Some(0) | None => {
            let pairs = pax.sparse_map.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return Err(malformed("odd pax sparse map", "tar header", at));
            }
            pairs.map(|c| (c[0], c[1])).collect()
        }
        Some(v) => return Err(Error::Unsupported(format!("pax sparse format version {v} at byte offset {at}"))),
    };
    check_segments(&segs, real, at)?;
    Ok((segs, real))
}

/// Reads the newline-terminated decimal numbers of a pax 1.0 sparse map,
/// block by block (the map is padded to a block boundary).
struct MapReader<'a, 'r> {
    s: &'a mut TarStream<'r>,
    data_end: u64,
    at: u64,
    block: [u8; BLOCK as usize],
    next: usize,
}

impl MapReader<'_, '_> {
    fn number(&mut self) -> Result<u64> {
        let mut text = Vec::with_capacity(20);
        loop {
            if self.next == self.block.len() {
                if self.s.pos + BLOCK > self.data_end {
                    let why = "sparse map larger than the member";
                    return Err(malformed(why, "tar header", self.at));
                }
                let got = self.s.fill(&mut self.block)?;
                if got < self.block.len() {
                    return Err(truncated(BLOCK, got as u64, "pax sparse map", self.at));
                }
                self.next = 0;
            }
            let b = self.block[self.next];
            self.next += 1;
            match b {
                b'\n' => return pax_u64(&text, "sparse map", self.at),
                d if text.len() < 20 => text.push(d),
                _ => return Err(malformed("bad sparse map", "tar header", self.at)),
            }
        }
    }
}
