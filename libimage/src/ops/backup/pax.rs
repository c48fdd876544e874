//! POSIX pax (ustar + `x` extended headers) writing and strict reading.
//!
//! Only what the backup format needs: every member is an `x` extended header
//! followed by a ustar header and the member data padded to 512 bytes; the
//! archive ends with two zero blocks. The reader is written for hostile input:
//! it never seeks, checks every length against a limit before using it,
//! allocates only for bytes it has actually read, verifies every ustar header
//! checksum, requires zero padding, and keeps a running crc32c of every byte
//! of the stream (the trailer member records it).

use std::io::{Read, Write};

use crate::error::{CorruptKind, Error, Result};
#[cfg(test)]
use crate::tree::pax::put_octal;
pub use crate::tree::pax::{octal_max, push_record, Ustar, TAR_BLOCK};
use crate::tree::pax::{padding, ZERO_BLOCK};

/// Largest `x` extended header accepted or written.
pub const MAX_PAX_HEADER: u64 = 64 << 20;
/// The keyword of the per-member checksum record, always the last record.
pub const CRC_KEY: &str = "CRYPTIMG.crc32c";

impl Ustar {
    /// Decodes a header written by [`Ustar::encode`], strictly: magic,
    /// version, checksum and every numeric field's exact form.
    pub fn decode(h: &[u8; TAR_BLOCK], offset: u64) -> Result<Ustar> {
        let bad = |why: &'static str| Error::corrupt(CorruptKind::BadHeader(why), "backup tar header", Some(offset));
        if &h[257..263] != b"ustar\0" || &h[263..265] != b"00" {
            return Err(bad("not a POSIX ustar header (bad magic or version)"));
        }
        if h[155] != b' ' || h[154] != 0 {
            return Err(bad("malformed header checksum field"));
        }
        let stored = parse_octal(&h[148..155]).ok_or_else(|| bad("malformed header checksum field"))?;
        let mut sum: u32 = 0;
        for (i, &b) in h.iter().enumerate() {
            sum += if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(b) };
        }
        if stored != u64::from(sum) {
            return Err(Error::corrupt(
                CorruptKind::BadChecksum {
                    stored: stored as u32,
                    computed: sum,
                },
                "backup tar header",
                Some(offset),
            ));
        }
        let num = |r: std::ops::Range<usize>, field: &'static str| {
            parse_octal(&h[r]).ok_or_else(|| Error::corrupt(CorruptKind::BadValue { field, value: 0 }, "backup tar header", Some(offset)))
        };
        let mode = num(100..108, "ustar mode")?;
        Ok(Ustar {
            name: cstr(&h[0..100]).to_vec(),
            mode: u32::try_from(mode).map_err(|_| bad("mode out of range"))?,
            uid: num(108..116, "ustar uid")?,
            gid: num(116..124, "ustar gid")?,
            size: num(124..136, "ustar size")?,
            mtime: num(136..148, "ustar mtime")? as i64,
            typeflag: h[156],
            linkname: cstr(&h[157..257]).to_vec(),
            devmajor: num(329..337, "ustar devmajor")?,
            devminor: num(337..345, "ustar devminor")?,
        })
    }
}

/// The bytes of a NUL-terminated (or full-width) string field.
fn cstr(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

/// Parses a field of `width - 1` octal digits followed by one NUL, exactly as
/// written by [`Ustar::encode`].
fn parse_octal(b: &[u8]) -> Option<u64> {
    let (last, digits) = b.split_last()?;
    if *last != 0 || digits.is_empty() || !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |acc, &d| acc.checked_mul(8)?.checked_add(u64::from(d - b'0')))
}

/// One parsed record, borrowing the header bytes.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Offset of the record in the extended header data.
    pub at: usize,
}

/// Splits extended header data into records; duplicate keywords are refused.
pub fn parse_records(data: &[u8], offset: u64) -> Result<Vec<Record<'_>>> {
    let mut out: Vec<Record<'_>> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let bad = |why: &'static str| Error::corrupt(CorruptKind::BadHeader(why), "backup pax extended header", Some(offset + pos as u64));
        let rest = &data[pos..];
        let sp = rest
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("pax record has no length"))?;
        let digits = &rest[..sp];
        if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("pax record length is not a decimal number"));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("pax record length is not a decimal number"))?;
        if len > rest.len() || len < sp + 4 {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "pax record length",
                    value: len as u64,
                    max: rest.len() as u64,
                },
                "backup pax extended header",
                Some(offset + pos as u64),
            ));
        }
        let rec = &rest[..len];
        if rec[len - 1] != b'\n' {
            return Err(bad("pax record does not end in a newline"));
        }
        let body = &rec[sp + 1..len - 1];
        let eq = body.iter().position(|&b| b == b'=').ok_or_else(|| bad("pax record has no '='"))?;
        let key = &body[..eq];
        if key.is_empty() {
            return Err(bad("pax record has an empty keyword"));
        }
        if out.iter().any(|r| r.key == key) {
            return Err(Error::corrupt(
                CorruptKind::Duplicate("pax keyword in one extended header"),
                "backup pax extended header",
                Some(offset + pos as u64),
            ));
        }
        out.push(Record {
            key,
            value: &body[eq + 1..],
            at: pos,
        });
        pos += len;
    }
    Ok(out)
}

/// Size of the writer's combining buffer: many small members per `write`.
const WRITE_BUF: usize = 1 << 20;

/// A streaming pax writer that keeps the crc32c of everything written.
/// Output is combined in its own buffer, into which member data can also be
/// produced in place ([`PaxWriter::data_with`]), so it is copied only once.
pub struct PaxWriter<W: Write> {
    out: W,
    /// `buf[..used]` is written but not yet passed to `out`; `buf` is
    /// allocated (zeroed) once and never shrinks.
    buf: Vec<u8>,
    used: usize,
    /// crc32c of every byte written so far.
    pub crc: u32,
    /// Bytes written so far.
    pub pos: u64,
    data_left: u64,
    data_len: u64,
}

impl<W: Write> PaxWriter<W> {
    pub fn new(out: W) -> Self {
        PaxWriter {
            out,
            buf: Vec::new(),
            used: 0,
            crc: 0,
            pos: 0,
            data_left: 0,
            data_len: 0,
        }
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.used > 0 {
            self.out
                .write_all(&self.buf[..self.used])
                .map_err(|e| Error::io("writing the backup archive", e))?;
            self.used = 0;
        }
        Ok(())
    }

    /// Room for `n` more bytes at `buf[used..]`, flushing first if needed.
    fn room(&mut self, n: usize) -> Result<&mut [u8]> {
        if self.used + n > self.buf.len() {
            self.flush_buf()?;
            if n > self.buf.len() {
                self.buf.resize(n.max(WRITE_BUF), 0);
            }
        }
        Ok(&mut self.buf[self.used..self.used + n])
    }

    /// Queues bytes whose crc32c the caller knows.
    fn raw(&mut self, b: &[u8], crc: u32) -> Result<()> {
        if b.len() >= WRITE_BUF {
            self.flush_buf()?;
            self.out.write_all(b).map_err(|e| Error::io("writing the backup archive", e))?;
        } else {
            self.room(b.len())?.copy_from_slice(b);
            self.used += b.len();
        }
        self.crc = crate::engine::crc::combine(self.crc, crc, b.len() as u64);
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Queues bytes whose crc32c is not known: the running crc is extended
    /// over them in one pass.
    fn raw_plain(&mut self, b: &[u8]) -> Result<()> {
        self.room(b.len())?.copy_from_slice(b);
        self.used += b.len();
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Writes a member's `x` header (the given records, then the checksum
    /// record covering them and the data whose crc32c is `data_crc`) and its
    /// ustar header. The caller then writes exactly `hdr.size` bytes of data
    /// with [`PaxWriter::data`] and calls [`PaxWriter::end_data`].
    pub fn begin(&mut self, hdr: &Ustar, mut records: Vec<u8>, data_crc: u32) -> Result<()> {
        if self.data_left != 0 {
            return Err(Error::Internal("previous member data not complete"));
        }
        let c = crate::engine::crc::combine(crc32c::crc32c(&records), data_crc, hdr.size);
        push_record(&mut records, CRC_KEY.as_bytes(), format!("{c:08x}").as_bytes());
        if records.len() as u64 > MAX_PAX_HEADER {
            return Err(Error::Invalid(format!(
                "the pax header of {} would be {} bytes, over the {MAX_PAX_HEADER}-byte limit (too many extents in one file)",
                String::from_utf8_lossy(&hdr.name),
                records.len()
            )));
        }
        let mut xname = b"./PaxHeaders/".to_vec();
        let base = hdr.name.rsplit(|&b| b == b'/').find(|c| !c.is_empty()).unwrap_or(b"root");
        xname.extend_from_slice(&base[..base.len().min(100 - xname.len())]);
        let x = Ustar {
            name: xname,
            mode: 0o644,
            size: records.len() as u64,
            mtime: hdr.mtime,
            typeflag: b'x',
            ..Default::default()
        };
        self.raw_plain(&x.encode())?;
        let pad = padding(records.len() as u64);
        records.resize(records.len() + pad, 0);
        self.raw_plain(&records)?;
        self.raw_plain(&hdr.encode())?;
        self.data_left = hdr.size;
        self.data_len = hdr.size;
        Ok(())
    }

    /// Writes member data whose crc32c the caller has computed.
    pub fn data(&mut self, b: &[u8], crc: u32) -> Result<()> {
        if b.len() as u64 > self.data_left {
            return Err(Error::Internal("more member data than declared"));
        }
        self.data_left -= b.len() as u64;
        self.raw(b, crc)
    }

    /// Writes `len` bytes of member data that `fill` produces in place in the
    /// output buffer and whose crc32c it returns; returns that crc. Nothing
    /// is written when `fill` fails.
    pub fn data_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> Result<u32>) -> Result<u32> {
        if len as u64 > self.data_left {
            return Err(Error::Invalid("internal: more member data than declared".into()));
        }
        let crc = fill(self.room(len)?)?;
        self.used += len;
        self.data_left -= len as u64;
        self.crc = crate::engine::crc::combine(self.crc, crc, len as u64);
        self.pos += len as u64;
        Ok(crc)
    }

    /// Writes one whole regular-file member of the archive's own (manifest,
    /// listing, trailer: mode 0644, owner 0): `records` (its `path` first),
    /// then `data`, padded.
    pub fn file_member(&mut self, name: &str, mtime: i64, records: Vec<u8>, data: &[u8]) -> Result<()> {
        let h = Ustar {
            name: name.as_bytes().to_vec(),
            mode: 0o100644,
            size: data.len() as u64,
            mtime,
            typeflag: b'0',
            ..Default::default()
        };
        let crc = crc32c::crc32c(data);
        self.begin(&h, records, crc)?;
        self.data(data, crc)?;
        self.end_data()
    }

    /// Pads the member data to a block.
    pub fn end_data(&mut self) -> Result<()> {
        if self.data_left != 0 {
            return Err(Error::Internal("member data shorter than declared"));
        }
        let pad = padding(self.data_len);
        self.raw_plain(&ZERO_BLOCK[..pad])
    }

    /// Writes the two zero blocks that end the archive and flushes.
    pub fn finish(mut self) -> Result<W> {
        self.raw_plain(&ZERO_BLOCK)?;
        self.raw_plain(&ZERO_BLOCK)?;
        self.flush_buf()?;
        self.out.flush().map_err(|e| Error::io("writing the backup archive", e))?;
        Ok(self.out)
    }
}

/// A member's headers as read.
#[derive(Debug)]
pub struct RawMember {
    /// Archive offset of the member's `x` header.
    pub offset: u64,
    /// crc32c of the archive bytes before `offset`.
    pub crc_before: u32,
    pub ustar: Ustar,
    /// The extended header data (records only, padding removed).
    pub pax: Vec<u8>,
    /// Archive offset of the member's data.
    pub data_offset: u64,
}

/// A strict streaming pax reader.
pub struct PaxReader<R: Read> {
    inner: R,
    pos: u64,
    crc: u32,
    data_left: u64,
    data_len: u64,
    ended: bool,
}

impl<R: Read> PaxReader<R> {
    pub fn new(inner: R) -> Self {
        PaxReader {
            inner,
            pos: 0,
            crc: 0,
            data_left: 0,
            data_len: 0,
            ended: false,
        }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// crc32c of every byte consumed so far.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Reads exactly `buf.len()` bytes; a short read is a truncated archive.
    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<u32> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(Error::corrupt(
                        CorruptKind::Truncated {
                            needed: buf.len() as u64,
                            available: got as u64,
                        },
                        format!("backup archive ended inside {what}"),
                        Some(self.pos + got as u64),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the backup archive", e)),
            }
        }
        let c = crc32c::crc32c(buf);
        self.crc = crate::engine::crc::combine(self.crc, c, buf.len() as u64);
        self.pos += buf.len() as u64;
        Ok(c)
    }

    fn block(&mut self, what: &'static str) -> Result<[u8; TAR_BLOCK]> {
        let mut b = [0u8; TAR_BLOCK];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    /// The next member's headers, or `None` at the end of the archive (two
    /// zero blocks, then only zero bytes up to the end of the stream).
    pub fn next_member(&mut self) -> Result<Option<RawMember>> {
        if self.data_left != 0 {
            return Err(Error::Internal("previous member data not consumed"));
        }
        if self.ended {
            return Ok(None);
        }
        let offset = self.pos;
        let crc_before = self.crc;
        let h = self.block("a member header")?;
        if h == ZERO_BLOCK {
            let h2 = self.block("the end-of-archive marker")?;
            if h2 != ZERO_BLOCK {
                return Err(Error::corrupt(
                    CorruptKind::BadArchive("a lone zero block inside the archive"),
                    "backup archive",
                    Some(offset),
                ));
            }
            self.ended = true;
            self.drain_zeros()?;
            return Ok(None);
        }
        let x = Ustar::decode(&h, offset)?;
        if x.typeflag != b'x' {
            return Err(Error::corrupt(
                CorruptKind::BadValue {
                    field: "member typeflag (every member must start with a pax 'x' header)",
                    value: x.typeflag.into(),
                },
                "backup archive",
                Some(offset),
            ));
        }
        if x.size > MAX_PAX_HEADER {
            return Err(Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "pax extended header size",
                    value: x.size,
                    max: MAX_PAX_HEADER,
                },
                "backup archive",
                Some(offset),
            ));
        }
        // Read in bounded steps so a lying size cannot force a big allocation
        // (and only the bytes about to be read are zeroed first).
        let mut pax = Vec::new();
        let size = x.size as usize;
        while pax.len() < size {
            let at = pax.len();
            pax.resize(size.min(at + 64 * 1024), 0);
            self.fill(&mut pax[at..], "a pax extended header")?;
        }
        self.skip_padding(x.size, "pax extended header padding")?;
        let hoff = self.pos;
        let h = self.block("a member header")?;
        let ustar = Ustar::decode(&h, hoff)?;
        if matches!(ustar.typeflag, b'x' | b'g' | b'L' | b'K') {
            return Err(Error::corrupt(
                CorruptKind::BadValue {
                    field: "member typeflag after a pax header",
                    value: ustar.typeflag.into(),
                },
                "backup archive",
                Some(hoff),
            ));
        }
        Ok(Some(RawMember {
            offset,
            crc_before,
            ustar,
            pax,
            data_offset: self.pos,
        }))
    }

    /// Declares the current member's data length (after pax overrides) and
    /// checks it against `max`.
    pub fn start_data(&mut self, len: u64) {
        self.data_left = len;
        self.data_len = len;
    }

    /// Reads member data; returns the crc32c of `buf`.
    pub fn data(&mut self, buf: &mut [u8]) -> Result<u32> {
        if buf.len() as u64 > self.data_left {
            return Err(Error::Internal("reading past the member data"));
        }
        let c = self.fill(buf, "member data")?;
        self.data_left -= buf.len() as u64;
        Ok(c)
    }

    /// Ends the current member's data: all of it must have been read; the
    /// padding must be zero.
    pub fn end_data(&mut self) -> Result<()> {
        if self.data_left != 0 {
            return Err(Error::Internal("member data not fully read"));
        }
        self.skip_padding(self.data_len, "member data padding")
    }

    fn skip_padding(&mut self, len: u64, what: &'static str) -> Result<()> {
        let pad = padding(len);
        let at = self.pos;
        let mut b = [0u8; TAR_BLOCK];
        self.fill(&mut b[..pad], what)?;
        if b[..pad].iter().any(|&x| x != 0) {
            return Err(Error::corrupt(CorruptKind::NotZero("padding bytes"), what, Some(at)));
        }
        Ok(())
    }

    fn drain_zeros(&mut self) -> Result<()> {
        let mut b = [0u8; 8192];
        loop {
            let at = self.pos;
            let n = match self.inner.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading the backup archive", e)),
            };
            self.pos += n as u64;
            if let Some(i) = b[..n].iter().position(|&x| x != 0) {
                return Err(Error::corrupt(
                    CorruptKind::TrailingData("the end-of-archive marker"),
                    "backup archive",
                    Some(at + i as u64),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_octal_encodings_match_their_formatted_forms() {
        for n in (0..2000).chain([9_990, 9_995, 99_990, 99_994, 999_989, 999_995]) {
            let (k, v) = (b"key", vec![b'v'; n]);
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            let mut want = format!("{len} key=").into_bytes();
            want.extend_from_slice(&v);
            want.push(b'\n');
            let mut got = Vec::new();
            push_record(&mut got, k, &v);
            assert_eq!(got, want, "value of {n} bytes");
        }
        for w in [8usize, 12] {
            for v in [0u64, 1, 7, 8, 0o644, 0o100644, 1 << 20, octal_max(w), octal_max(w) + 1, u64::MAX] {
                let mut b = vec![0xffu8; w];
                put_octal(&mut b, v);
                let s = format!("{:0width$o}", v.min(octal_max(w)), width = w - 1);
                assert_eq!(&b[..w - 1], s.as_bytes());
                assert_eq!(b[w - 1], 0);
            }
        }
    }

    #[test]
    fn record_lengths_are_self_consistent() {
        for n in 0..2000 {
            let mut b = Vec::new();
            let v = vec![b'a'; n];
            push_record(&mut b, b"k", &v);
            let r = parse_records(&b, 0).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].value, &v[..]);
        }
    }

    #[test]
    fn header_round_trip_and_checksum() {
        let h = Ustar {
            name: b"./abc".to_vec(),
            mode: 0o100644,
            uid: 1000,
            gid: 100,
            size: 12345,
            mtime: 1_700_000_000,
            typeflag: b'0',
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
        };
        let b = h.encode();
        assert_eq!(Ustar::decode(&b, 0).unwrap(), h);
        for i in 0..TAR_BLOCK {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Ustar::decode(&c, 0).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn writer_reader_round_trip() {
        let mut w = PaxWriter::new(Vec::new());
        let data = b"hello world".to_vec();
        let mut recs = Vec::new();
        push_record(&mut recs, b"path", b"./x");
        let h = Ustar {
            name: b"./x".to_vec(),
            mode: 0o100644,
            size: data.len() as u64,
            typeflag: b'0',
            ..Default::default()
        };
        w.begin(&h, recs, crc32c::crc32c(&data)).unwrap();
        w.data(&data, crc32c::crc32c(&data)).unwrap();
        w.end_data().unwrap();
        let total_crc = w.crc;
        let out = w.finish().unwrap();
        assert_eq!(out.len() % TAR_BLOCK, 0);
        let mut r = PaxReader::new(&out[..]);
        let m = r.next_member().unwrap().unwrap();
        assert_eq!(m.ustar, h);
        let recs = parse_records(&m.pax, 0).unwrap();
        assert_eq!(recs.last().unwrap().key, CRC_KEY.as_bytes());
        r.start_data(m.ustar.size);
        let mut buf = vec![0; data.len()];
        r.data(&mut buf).unwrap();
        r.end_data().unwrap();
        assert_eq!(buf, data);
        assert_eq!(r.crc, total_crc);
        assert!(r.next_member().unwrap().is_none());
        // truncation anywhere is an error, never a panic
        for cut in 0..out.len() - 1024 {
            let mut r = PaxReader::new(&out[..cut]);
            let res = (|| -> Result<()> {
                while let Some(m) = r.next_member()? {
                    r.start_data(m.ustar.size);
                    let mut b = vec![0; m.ustar.size as usize];
                    r.data(&mut b)?;
                    r.end_data()?;
                }
                Ok(())
            })();
            assert!(res.is_err(), "cut {cut}");
        }
    }

    #[test]
    fn hostile_records() {
        for bad in [
            &b"99999999999999999999 path=x\n"[..],
            b"0 a=b\n",
            b"7 a=bc\n7 a=bc\n",
            b"6 =bc\n",
            b"6 abc\n",
            b"x",
        ] {
            assert!(parse_records(bad, 0).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
