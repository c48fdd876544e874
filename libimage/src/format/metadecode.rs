//! Decoding a large metadata stream on all cores, used by
//! `image::load_metadata` (so every tool and the checker get it).
//!
//! Decoding dominates the time of a metadata check of a big image (hundreds
//! of thousands of inode and extent records, each allocating). This splits
//! the records, which are framed by lengths, between two threads that parse
//! them with the very same record parsers as [`Metadata::from_bytes`]
//! ([`Inode::read`], [`Extent::read`]).
//!
//! It is a fast path only: it accepts exactly the streams whose records come
//! in strictly increasing id order, as every writer produces them, and
//! returns `None` on anything else; the caller then decodes with
//! [`Metadata::from_bytes`], which has the final word on every error. The
//! tests compare the two on valid and damaged streams.
use std::collections::BTreeMap;

use crate::format::bytes::Reader;
use crate::format::extent::{Extent, RECORD_LEN};
use crate::format::inode::{Inode, FIXED_LEN};
use crate::format::meta::{Metadata, MAGIC, VERSION};
use crate::format::snapshot::{check_name, Snapshot};
use fscrypt::KeyId;

/// Below this stream size the plain decoder is used.
pub const PARALLEL_MIN: usize = 1 << 20;

/// Decodes `stream`: in parallel when it is large and well formed, else with
/// [`Metadata::from_bytes`].
/// The stream is freed as soon as its records are parsed, before the maps
/// are built, to keep the peak memory down.
pub fn decode(stream: Stream) -> crate::Result<Metadata> {
    let bytes = stream.as_slice();
    if bytes.len() >= PARALLEL_MIN && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        if let Some(p) = fast(bytes) {
            drop(stream);
            return Ok(p.build());
        }
    }
    Metadata::from_bytes(bytes)
}

/// The buffer the metadata stream is assembled in: a `Vec` when small; for a
/// large stream an anonymous mapping populated in one system call, which
/// spares the kernel a page fault per 4 KiB (page faults are the largest
/// single cost of checking a big image). Filled front to back.
pub enum Stream {
    Small(Vec<u8>),
    Large { map: memmap2::MmapMut, len: usize },
}

impl Stream {
    /// A buffer for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Stream {
        if cap >= PARALLEL_MIN {
            if let Ok(map) = memmap2::MmapOptions::new().len(cap).populate().map_anon() {
                return Stream::Large { map, len: 0 };
            }
        }
        Stream::Small(Vec::with_capacity(cap))
    }

    /// Appends `b`, or `b.len()` zeros for `None`; bytes past the capacity
    /// of a large buffer are dropped (the caller never passes any).
    pub fn push(&mut self, b: Option<&[u8]>, n: usize) {
        match self {
            Stream::Small(v) => match b {
                Some(b) => v.extend_from_slice(&b[..n.min(b.len())]),
                None => v.resize(v.len() + n, 0),
            },
            Stream::Large { map, len } => {
                let end = (*len + n).min(map.len());
                if let Some(b) = b {
                    // A shorter `b` leaves the rest zero (the mapping starts zeroed).
                    let k = (end - *len).min(b.len());
                    map[*len..*len + k].copy_from_slice(&b[..k]);
                }
                *len = end;
            }
        }
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match self {
            Stream::Small(v) => v.len(),
            Stream::Large { len, .. } => *len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Stream::Small(v) => v,
            Stream::Large { map, len } => &map[..*len],
        }
    }
}

/// Parsed records, in id order, before the maps are built.
struct Parsed {
    next_extent_id: u64,
    alloc: Vec<(u64, u64)>,
    extents: BTreeMap<u64, Extent>,
    snapshots: Vec<(Header, BTreeMap<u64, Inode>)>,
}

impl Parsed {
    fn build(self) -> Metadata {
        // Sorted input: bulk builds with full nodes.
        let snapshots = self
            .snapshots
            .into_iter()
            .map(|(h, inodes)| Snapshot {
                name: h.name,
                policy: h.policy,
                root: h.root,
                next_ino: h.next_ino,
                created: h.created,
                inodes,
            })
            .collect();
        Metadata {
            next_extent_id: self.next_extent_id,
            alloc: self.alloc,
            extents: self.extents,
            snapshots,
        }
    }
}

/// A snapshot's header fields, before its inodes.
struct Header {
    name: String,
    policy: KeyId,
    root: u64,
    next_ino: u64,
    created: i64,
    /// Inode records: (absolute offset, bytes).
    records: Vec<(u64, usize, usize)>,
}

/// Parses records `[lo, hi)` of `recs` (slices of `stream`) into inodes,
/// checking each number is in range and strictly increasing.
fn parse_inodes(stream: &[u8], recs: &[(u64, usize, usize)], next_ino: u64, out: &mut Vec<(u64, Inode)>) -> Option<()> {
    let mut prev = 0u64;
    for &(off, lo, hi) in recs {
        let mut r = Reader::new(stream.get(lo..hi)?, off, "inode record");
        let ino = Inode::read(&mut r).ok()?;
        if r.remaining() != 0 || ino.ino <= prev || ino.ino >= next_ino {
            return None;
        }
        prev = ino.ino;
        out.push((ino.ino, ino));
    }
    Some(())
}

fn parse_extents(bytes: &[u8], base: u64, n: usize, next_extent_id: u64) -> Option<BTreeMap<u64, Extent>> {
    let mut r = Reader::new(bytes, base, "extent table");
    let mut out = Vec::with_capacity(n);
    let mut prev = 0u64;
    for _ in 0..n {
        let e = Extent::read(&mut r).ok()?;
        if e.id <= prev || e.id >= next_extent_id {
            return None;
        }
        prev = e.id;
        out.push((e.id, e));
    }
    // Sorted input: a bulk build with full nodes.
    Some(out.into_iter().collect())
}

fn fast(stream: &[u8]) -> Option<Parsed> {
    let mut r = Reader::new(stream, 0, "metadata stream");
    if r.array::<4>().ok()? != MAGIC || r.u32().ok()? != VERSION {
        return None;
    }
    let next_extent_id = r.u64().ok()?;
    let n = r.count("allocation range count", true, 16).ok()?;
    let mut alloc = Vec::with_capacity(n);
    for _ in 0..n {
        alloc.push((r.u64().ok()?, r.u64().ok()?));
    }
    let n_ext = r.count("extent count", true, RECORD_LEN).ok()?;
    let ext_base = r.offset();
    let ext_bytes = r.take(n_ext.checked_mul(RECORD_LEN)?).ok()?;
    let n_snap = r.count("snapshot count", false, 50).ok()?;
    let mut headers: Vec<Header> = Vec::with_capacity(n_snap);
    for _ in 0..n_snap {
        let nl = r.u8().ok()? as usize;
        let name = String::from_utf8(r.take(nl).ok()?.to_vec()).ok()?;
        check_name(&name).ok()?;
        if headers.iter().any(|h| h.name == name) {
            return None;
        }
        let policy = KeyId(r.array().ok()?);
        let root = r.u64().ok()?;
        let next_ino = r.u64().ok()?;
        let created = r.i64().ok()?;
        if r.u32().ok()? != 0 {
            return None;
        }
        let count = r.count("inode count", true, FIXED_LEN).ok()?;
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let off = r.offset();
            let lo = usize::try_from(off).ok()?;
            let len = u32::from_le_bytes(stream.get(lo..lo + 4)?.try_into().ok()?) as usize;
            r.take(len).ok()?;
            records.push((off, lo, lo + len));
        }
        headers.push(Header {
            name,
            policy,
            root,
            next_ino,
            created,
            records,
        });
    }
    r.finish().ok()?;
    // Thread 1: the extents and the first half of the inode records (in
    // stream order); thread 2: the second half.
    let all: Vec<(usize, (u64, usize, usize))> = headers
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.records.iter().map(move |&rec| (i, rec)))
        .collect();
    let ext_share = n_ext / 3;
    let split = ((all.len() + ext_share) / 2).saturating_sub(ext_share).min(all.len());
    let (first, second) = all.split_at(split);
    // Each thread bulk-builds (sorted input: full nodes) the maps of its
    // records; the halves of a snapshot are then appended.
    let parse_run = |run: &[(usize, (u64, usize, usize))]| -> Option<Vec<BTreeMap<u64, Inode>>> {
        let mut maps: Vec<BTreeMap<u64, Inode>> = headers.iter().map(|_| BTreeMap::new()).collect();
        let mut i = 0;
        while i < run.len() {
            let snap = run[i].0;
            let j = run[i..].iter().position(|x| x.0 != snap).map_or(run.len(), |k| i + k);
            let recs: Vec<(u64, usize, usize)> = run[i..j].iter().map(|x| x.1).collect();
            let mut v = Vec::with_capacity(recs.len());
            parse_inodes(stream, &recs, headers[snap].next_ino, &mut v)?;
            maps[snap] = v.into_iter().collect();
            i = j;
        }
        Some(maps)
    };
    let (a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| parse_run(second));
        let ext = parse_extents(ext_bytes, ext_base, n_ext, next_extent_id);
        let a = parse_run(first).zip(ext);
        (a, h.join().ok().flatten())
    });
    let ((firsts, extents), seconds) = (a?, b?);
    let mut snapshots = Vec::with_capacity(headers.len());
    for ((mut h, mut m), mut rest) in headers.into_iter().zip(firsts).zip(seconds) {
        // The halves of one snapshot meet in order: keys of `rest` follow.
        if let (Some((&last, _)), Some((&first, _))) = (m.last_key_value(), rest.first_key_value()) {
            if first <= last {
                return None;
            }
        }
        m.append(&mut rest);
        h.records = Vec::new();
        snapshots.push((h, m));
    }
    Some(Parsed {
        next_extent_id,
        alloc,
        extents,
        snapshots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::inode::{Body, DirEntry, MapEntry, S_IFDIR, S_IFREG};
    use crate::tree::Timespec;
    use fscrypt::context::{ExtentContext, PolicyContext};
    use fscrypt::Nonce;
    use std::collections::BTreeMap;

    fn inode(ino: u64, body: Body) -> Inode {
        Inode {
            ino,
            mode: if matches!(body, Body::Dir { .. }) {
                S_IFDIR | 0o755
            } else {
                S_IFREG | 0o644
            },
            uid: 1,
            gid: 2,
            nlink: 1,
            size: 4096,
            atime: Timespec { sec: 1, nsec: 2 },
            mtime: Timespec { sec: 3, nsec: 4 },
            ctime: Timespec { sec: 5, nsec: 6 },
            rdev: 0,
            xattrs: if ino.is_multiple_of(7) {
                vec![(b"user.x".to_vec(), vec![ino as u8; 3])]
            } else {
                Vec::new()
            },
            body,
        }
    }

    /// Two snapshots of `n` files each, sharing extents.
    fn sample(n: u64) -> Metadata {
        let ctx = PolicyContext::new(KeyId([1; 16]), Nonce([2; 16]));
        let mut extents = BTreeMap::new();
        for id in 1..=n {
            extents.insert(
                id,
                Extent {
                    id,
                    start: 10 + id,
                    blocks: 1,
                    refcount: 2,
                    crc: id as u32,
                    ctx: ExtentContext::new(KeyId([1; 16]), Nonce([id as u8; 16])),
                },
            );
        }
        let snaps = ["main", "old"]
            .iter()
            .map(|name| {
                let mut inodes = BTreeMap::new();
                let entries = (2..n + 2)
                    .map(|i| DirEntry {
                        name: vec![i as u8; 32],
                        ino: i,
                    })
                    .collect();
                inodes.insert(1, inode(1, Body::Dir { ctx, entries }));
                for i in 2..n + 2 {
                    let map = vec![MapEntry {
                        lblk: 0,
                        blocks: 1,
                        extent: i - 1,
                        offset: 0,
                    }];
                    inodes.insert(i, inode(i, Body::File { map }));
                }
                Snapshot {
                    name: name.to_string(),
                    policy: KeyId([1; 16]),
                    root: 1,
                    next_ino: n + 2,
                    created: 9,
                    inodes,
                }
            })
            .collect();
        Metadata {
            next_extent_id: n + 1,
            alloc: vec![(11, n)],
            extents,
            snapshots: snaps,
        }
    }

    #[test]
    fn fast_path_equals_from_bytes() {
        let m = sample(20_000);
        let stream = m.to_bytes();
        assert!(stream.len() >= PARALLEL_MIN);
        assert_eq!(fast(&stream).map(Parsed::build).as_ref(), Some(&m));
        let mut buf = Stream::with_capacity(stream.len());
        assert!(matches!(buf, Stream::Large { .. }));
        for part in stream.chunks(4080) {
            buf.push(Some(part), part.len());
        }
        assert_eq!(buf.as_slice(), &stream[..]);
        assert_eq!(decode(buf).unwrap(), m);
    }

    #[test]
    fn fast_path_never_accepts_what_from_bytes_refuses() {
        let stream = sample(300).to_bytes();
        let mut rng = testkit::TestRng::new(77);
        for _ in 0..3000 {
            let mut s = stream.clone();
            let k = 1 + rng.next_u64() % 3;
            for _ in 0..k {
                let off = (rng.next_u64() % s.len() as u64) as usize;
                s[off] ^= (rng.next_u64() % 255) as u8 + 1;
            }
            if rng.next_u64().is_multiple_of(5) {
                let cut = (rng.next_u64() % s.len() as u64) as usize;
                s.truncate(cut);
            }
            let slow = Metadata::from_bytes(&s).ok();
            if let Some(f) = fast(&s).map(Parsed::build) {
                assert_eq!(
                    Some(f),
                    slow,
                    "fast path accepted a stream the decoder refuses or reads differently"
                );
            }
        }
    }
}
