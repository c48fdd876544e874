//! POSIX pax (ustar headers and `x` extended-header records): the encoding
//! shared by every tar writer of libimage, the keyless backup archives
//! (`ops::backup::pax`, byte for byte what they always wrote) and the
//! plaintext tar stream of `fsck-crypt extract IMAGE -` (`ops::read`).
//!
//! Layouts: POSIX.1-2001 `pax` (IEEE Std 1003.1, "pax - portable archive
//! interchange", ustar Interchange Format and pax Header Block): a 512-byte
//! ustar header with octal fields; `x` extended-header data made of records
//! `"LEN KEYWORD=VALUE\n"`, where LEN counts the whole record in decimal.

/// The tar block size.
pub const TAR_BLOCK: usize = 512;

/// One block of zeros (padding; two end an archive).
pub(crate) const ZERO_BLOCK: [u8; TAR_BLOCK] = [0; TAR_BLOCK];

/// The ustar header fields libimage writes (uname, gname and prefix stay empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ustar {
    /// At most 100 bytes; the real path is in the pax `path` record.
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub typeflag: u8,
    /// At most 100 bytes; the real target is in the pax `linkpath` record.
    pub linkname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
}

/// Largest value of an octal field of `width` bytes (width - 1 digits).
pub fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width as u32 - 1))) - 1
}

/// Writes `v` (clamped) as `width - 1` zero-padded octal digits and a NUL.
pub(crate) fn put_octal(b: &mut [u8], v: u64) {
    let w = b.len();
    let mut v = v.min(octal_max(w));
    for d in b[..w - 1].iter_mut().rev() {
        *d = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    b[w - 1] = 0;
}

/// Copies `s` into a string field, cut to its width (NUL-padded).
fn put_str(b: &mut [u8], s: &[u8]) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s[..n]);
}

impl Ustar {
    /// Encodes the header, checksum included. Values too large for their
    /// field are clamped; the writer puts the true value in a pax record.
    pub fn encode(&self) -> [u8; TAR_BLOCK] {
        let mut h = [0u8; TAR_BLOCK];
        put_str(&mut h[0..100], &self.name);
        put_octal(&mut h[100..108], u64::from(self.mode));
        put_octal(&mut h[108..116], self.uid);
        put_octal(&mut h[116..124], self.gid);
        put_octal(&mut h[124..136], self.size);
        put_octal(&mut h[136..148], self.mtime.max(0) as u64);
        h[156] = self.typeflag;
        put_str(&mut h[157..257], &self.linkname);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        put_octal(&mut h[329..337], self.devmajor);
        put_octal(&mut h[337..345], self.devminor);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put_octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        h
    }
}

/// Appends one pax record `"LEN KEY=VALUE\n"`.
pub fn push_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let n = key.len() + value.len() + 3; // ' ', '=', '\n'
                                         // The length counts its own decimal digits: the smallest d with
                                         // digits(n + d) == d.
    let digits = |x: usize| x.checked_ilog10().map_or(1, |l| l as usize + 1);
    let mut d = 1;
    while digits(n + d) != d {
        d += 1;
    }
    let len = n + d;
    let mut dec = [0u8; 20];
    let mut v = len;
    for c in dec[..d].iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.reserve(len);
    buf.extend_from_slice(&dec[..d]);
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Zero bytes that pad `len` bytes of data to a whole tar block.
pub fn padding(len: u64) -> usize {
    ((TAR_BLOCK as u64 - len % TAR_BLOCK as u64) % TAR_BLOCK as u64) as usize
}
