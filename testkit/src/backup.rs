//! Backup test support (feature `backup`): images built directly from
//! ciphertext, without any key, covering every shape the backup format must
//! carry; a canonical form of a snapshot to compare an original with its
//! restored copy; hand-made archives and the hostile corpus ([`hostile`]).
//! Used by libimage's and backup-crypt's integration tests and by
//! `libimage/examples/mkhostile.rs`.

pub mod hostile;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::TestRng;
use fscrypt::context::{ExtentContext, PolicyContext};
use fscrypt::{KeyId, Nonce};
use libimage::engine::image::{Access, Image};
use libimage::format::inode::*;
use libimage::format::snapshot::Snapshot;
use libimage::ops::backup::{format, listing, pax};
use libimage::tree::Timespec;
use libimage::{Result, BLOCK_SIZE};

/// The key id used by [`synth_image`].
pub const KEY: KeyId = KeyId([0x4b; 16]);
/// A second key id (a rekeyed extent).
pub const KEY2: KeyId = KeyId([0x4c; 16]);

struct Tree<'a> {
    img: &'a mut Image,
    snap: Snapshot,
    rng: &'a mut TestRng,
}

fn ts(sec: i64, nsec: u32) -> Timespec {
    Timespec { sec, nsec }
}

impl Tree<'_> {
    fn inode(&mut self, mode: u32, size: u64, body: Body) -> u64 {
        let ino = self.snap.alloc_ino();
        let r = self.rng.next_u64();
        self.snap.inodes.insert(
            ino,
            Inode {
                ino,
                mode,
                uid: 1000 + (r % 7) as u32,
                gid: 100,
                nlink: 0,
                size,
                atime: ts(1_600_000_000 + (r % 1000) as i64, (r % 1_000_000_000) as u32),
                mtime: ts(1_500_000_000, 123_456_789),
                ctime: ts(1_700_000_000, 1),
                rdev: 0,
                xattrs: Vec::new(),
                body,
            },
        );
        ino
    }

    fn dir(&mut self) -> u64 {
        let ctx = PolicyContext::new(KEY, Nonce(self.rng.arr16()));
        self.inode(S_IFDIR | 0o755, 0, Body::Dir { ctx, entries: Vec::new() })
    }

    fn link(&mut self, dir: u64, name_len: usize, ino: u64) -> Vec<u8> {
        let name = self.rng.bytes(name_len);
        if let Some(i) = self.snap.inodes.get_mut(&ino) {
            i.nlink += 1;
        }
        if let Some(Inode {
            body: Body::Dir { entries, .. },
            ..
        }) = self.snap.inodes.get_mut(&dir)
        {
            entries.push(DirEntry { name: name.clone(), ino });
            entries.sort_unstable();
        }
        name
    }

    /// A new extent of `blocks` random ciphertext blocks; returns its id.
    fn extent(&mut self, key: KeyId, blocks: u32) -> Result<u64> {
        let data = self.rng.bytes(blocks as usize * BLOCK_SIZE);
        let ctx = ExtentContext::new(key, Nonce(self.rng.arr16()));
        self.img.write_raw_extent(ctx, &data)
    }

    fn file(&mut self, size: u64, map: Vec<MapEntry>) -> u64 {
        for m in &map {
            self.img.add_refs(m.extent, 1).expect("the extent was just written");
        }
        self.inode(S_IFREG | 0o644, size, Body::File { map })
    }
}

fn me(lblk: u64, blocks: u32, extent: u64, offset: u32) -> MapEntry {
    MapEntry {
        lblk,
        blocks,
        extent,
        offset,
    }
}

/// A new, empty, committed image at `path` (which must not exist), its uuid
/// from `rng`.
fn new_image(path: &Path, rng: &mut TestRng) -> Result<Image> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| libimage::Error::io("creating test image", e))?;
    let mut img = Image::create(f, path, rng.arr16(), 0)?;
    img.commit(1)?;
    Ok(img)
}

/// Builds a committed image at `path` with snapshot `main` holding every
/// inode shape (shared and partly referenced extents, holes, hard links,
/// symlinks, devices, a socket, xattrs, long names, negative and
/// nanosecond times, a big uid) and, when `second` is set, a snapshot `s2`
/// that shares most extents with `main` and changes a few files.
pub fn synth_image(path: &Path, seed: u64, second: bool) -> Result<()> {
    let mut rng = TestRng::new(seed);
    let mut img = new_image(path, &mut rng)?;
    let main = build_tree(&mut img, &mut rng, "main", None)?;
    img.snapshots_mut().push(main);
    img.commit(2)?;
    if second {
        let base = img.meta().snapshots[0].clone();
        let s2 = build_tree(&mut img, &mut rng, "s2", Some(&base))?;
        img.snapshots_mut().push(s2);
        img.commit(3)?;
    }
    drop(img);
    // It must open with every structural check passing.
    Image::open(path, Access::ReadOnly).map(drop)
}

fn build_tree(img: &mut Image, rng: &mut TestRng, name: &str, base: Option<&Snapshot>) -> Result<Snapshot> {
    let snap = match base {
        // The second snapshot starts as a copy of the first (sharing every
        // extent), then changes some files.
        Some(b) => {
            let mut s = b.clone();
            s.name = name.into();
            for i in s.inodes.values() {
                if let Body::File { map } = &i.body {
                    for m in map {
                        img.add_refs(m.extent, 1)?;
                    }
                }
            }
            s
        }
        None => Snapshot {
            name: name.into(),
            policy: KEY,
            root: 1,
            next_ino: 1,
            created: 1_650_000_000,
            inodes: BTreeMap::new(),
        },
    };
    let mut t = Tree { img, snap, rng };
    if let Some(_b) = base {
        // Change: replace the first regular file found in the root.
        let root = t.snap.root;
        let victim = match &t.snap.inodes[&root].body {
            Body::Dir { entries, .. } => entries
                .iter()
                .find(|en| matches!(t.snap.inodes[&en.ino].body, Body::File { .. }) && t.snap.inodes[&en.ino].nlink == 1)
                .map(|en| (en.name.clone(), en.ino)),
            _ => None,
        };
        if let Some((vname, vino)) = victim {
            if let Some(Inode {
                body: Body::File { map }, ..
            }) = t.snap.inodes.remove(&vino)
            {
                for m in map {
                    t.img.drop_ref(m.extent);
                }
            }
            if let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = t.snap.inodes.get_mut(&root)
            {
                entries.retain(|en| en.name != vname);
            }
            let e = t.extent(KEY, 2)?;
            let nf = t.file(8192, vec![me(0, 2, e, 0)]);
            if let Some(i) = t.snap.inodes.get_mut(&nf) {
                i.nlink = 1;
            }
            if let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = t.snap.inodes.get_mut(&root)
            {
                entries.push(DirEntry { name: vname, ino: nf });
                entries.sort_unstable();
            }
        }
        // And a new file in the root.
        let e = t.extent(KEY, 5)?;
        let f = t.file(5 * 4096 - 7, vec![me(0, 5, e, 0)]);
        t.link(root, 32, f);
        return Ok(t.snap);
    }
    let root = t.dir();
    if let Some(r) = t.snap.inodes.get_mut(&root) {
        r.nlink = 1;
        r.xattrs = vec![(b"user.root".to_vec(), b"top".to_vec())];
    }
    t.snap.root = root;
    // Plain files: one whole extent; unaligned size.
    let e1 = t.extent(KEY, 3)?;
    let f1 = t.file(3 * 4096 - 100, vec![me(0, 3, e1, 0)]);
    t.link(root, 32, f1);
    // A file referencing part of f1's extent (offset 1), and a hole.
    let e2 = t.extent(KEY2, 4)?;
    let f2 = t.file(10 * 4096, vec![me(0, 2, e1, 1), me(5, 4, e2, 0)]);
    t.link(root, 64, f2);
    // Only the tail of an extent (its first blocks are referenced by nobody).
    let e3 = t.extent(KEY, 6)?;
    let f3 = t.file(2 * 4096, vec![me(0, 2, e3, 4)]);
    t.link(root, 32, f3);
    // Empty and all-hole files.
    let f4 = t.file(0, vec![]);
    t.link(root, 32, f4);
    let f5 = t.file(1 << 40, vec![]);
    t.link(root, 32, f5);
    // Subdirectory with a hard link to f1, a long name, specials, symlink.
    let d = t.dir();
    t.link(root, 32, d);
    t.link(d, 32, f1);
    let e6 = t.extent(KEY, 1)?;
    let long = t.file(4096, vec![me(0, 1, e6, 0)]);
    // A second inode sharing all of f1's extent (a reflink).
    let g = t.file(3 * 4096, vec![me(0, 3, e1, 0)]);
    t.link(d, 32, g);
    t.link(d, 255, long);
    let fifo = t.inode(S_IFIFO | 0o600, 0, Body::Special);
    t.link(d, 32, fifo);
    let chr = t.inode(S_IFCHR | 0o660, 0, Body::Special);
    if let Some(i) = t.snap.inodes.get_mut(&chr) {
        i.rdev = 0x1234_5678_9abc_def0;
    }
    t.link(d, 32, chr);
    let blk = t.inode(S_IFBLK | 0o660, 0, Body::Special);
    if let Some(i) = t.snap.inodes.get_mut(&blk) {
        i.rdev = 0x0803;
    }
    t.link(d, 32, blk);
    let sock = t.inode(S_IFSOCK | 0o755, 0, Body::Special);
    t.link(d, 32, sock);
    let mut blob = 48u16.to_le_bytes().to_vec();
    blob.extend(t.rng.bytes(48));
    blob.push(0);
    let sctx = PolicyContext::new(KEY, Nonce(t.rng.arr16()));
    let sl = t.inode(S_IFLNK | 0o777, 37, Body::Symlink { ctx: sctx, blob });
    t.link(d, 32, sl);
    // Metadata edge cases on a deeper file.
    let dd = t.dir();
    t.link(d, 96, dd);
    let e7 = t.extent(KEY, 2)?;
    let odd = t.file(5000, vec![me(0, 2, e7, 0)]);
    if let Some(i) = t.snap.inodes.get_mut(&odd) {
        i.uid = 4_000_000_000;
        i.gid = 3_000_000_000;
        i.mode = S_IFREG | 0o4751;
        i.mtime = ts(-3, 250_000_000);
        i.atime = ts(-1, 0);
        i.xattrs = vec![
            (b"user.bin".to_vec(), vec![0, 1, 2, 255, b'\n', b'=']),
            (b"security.selinux".to_vec(), b"system_u:object_r:etc_t:s0\0".to_vec()),
            (b"user.empty".to_vec(), Vec::new()),
        ];
    }
    t.link(dd, 32, odd);
    // A second hard link group inside the deep dir.
    t.link(dd, 64, f2);
    Ok(t.snap)
}

/// Builds a committed image at `path` whose snapshot `main` holds `files`
/// one-block files spread over directories of 100, each in its own extent
/// (one with an xattr, a symlink and a hard link per directory), and whose
/// snapshot `s2` is `main` plus one new file of `change_blocks` blocks in the
/// root: the "small change to a big tree" of an incremental backup.
pub fn synth_wide_image(path: &Path, seed: u64, files: usize, change_blocks: u32) -> Result<()> {
    let mut rng = TestRng::new(seed);
    let mut img = new_image(path, &mut rng)?;
    let snap = Snapshot {
        name: "main".into(),
        policy: KEY,
        root: 1,
        next_ino: 1,
        created: 1_650_000_000,
        inodes: BTreeMap::new(),
    };
    let mut t = Tree {
        img: &mut img,
        snap,
        rng: &mut rng,
    };
    let root = t.dir();
    if let Some(r) = t.snap.inodes.get_mut(&root) {
        r.nlink = 1;
    }
    t.snap.root = root;
    let mut d = root;
    for i in 0..files {
        if i % 100 == 0 {
            d = t.dir();
            t.link(root, 32, d);
            let mut blob = 32u16.to_le_bytes().to_vec();
            blob.extend(t.rng.bytes(32));
            blob.push(0);
            let ctx = PolicyContext::new(KEY, Nonce(t.rng.arr16()));
            let sl = t.inode(S_IFLNK | 0o777, 20, Body::Symlink { ctx, blob });
            t.link(d, 32, sl);
        }
        let e = t.extent(KEY, 1)?;
        let f = t.file(4096 - (i as u64 % 4000), vec![me(0, 1, e, 0)]);
        t.link(d, 32, f);
        if i % 100 == 1 {
            if let Some(x) = t.snap.inodes.get_mut(&f) {
                x.xattrs = vec![(b"user.tag".to_vec(), b"wide".to_vec())];
            }
            t.link(d, 64, f);
        }
    }
    let main = t.snap.clone();
    let mut s2 = t.snap;
    s2.name = "s2".into();
    for i in s2.inodes.values() {
        if let Body::File { map } = &i.body {
            for m in map {
                img.add_refs(m.extent, 1)?;
            }
        }
    }
    img.snapshots_mut().push(main);
    let mut t = Tree {
        img: &mut img,
        snap: s2,
        rng: &mut rng,
    };
    if change_blocks > 0 {
        let e = t.extent(KEY, change_blocks)?;
        let f = t.file(u64::from(change_blocks) * 4096, vec![me(0, change_blocks, e, 0)]);
        t.link(root, 32, f);
    }
    let s2 = t.snap;
    img.snapshots_mut().push(s2);
    img.commit(2)?;
    drop(img);
    Image::open(path, Access::ReadOnly).map(drop)
}

/// A snapshot in a form independent of inode numbers and extent ids: each
/// path of encrypted names with its inode's metadata, its body (contexts,
/// blobs, and for files the ciphertext of every mapped block and the extent
/// context), and for hard links the first path naming the same inode.
pub fn canon_snapshot(img: &Image, name: &str) -> Result<Vec<String>> {
    let snap = img.snapshot(Some(name))?;
    let mut out = Vec::new();
    let mut first: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![(String::from("/"), snap.root)];
    while let Some((path, ino)) = stack.pop() {
        let i = &snap.inodes[&ino];
        let mut line = format!(
            "{path} mode={:o} uid={} gid={} nlink={} size={} a={:?} m={:?} c={:?} rdev={:x} x={:?}",
            i.mode, i.uid, i.gid, i.nlink, i.size, i.atime, i.mtime, i.ctime, i.rdev, i.xattrs
        );
        if let Some(f) = first.get(&ino) {
            out.push(format!("{path} = hard link to {f}"));
            continue;
        }
        if i.nlink > 1 && !i.is_dir() {
            first.insert(ino, path.clone());
        }
        match &i.body {
            Body::Dir { ctx, entries } => {
                line.push_str(&format!(" dir {}", hex::encode(ctx.to_bytes())));
                for e in entries.iter().rev() {
                    stack.push((format!("{path}{}/", hex::encode(&e.name)), e.ino));
                }
            }
            Body::Symlink { ctx, blob } => line.push_str(&format!(" symlink {} {}", hex::encode(ctx.to_bytes()), hex::encode(blob))),
            Body::Special => line.push_str(" special"),
            Body::File { map } => {
                for m in map {
                    let e = img.extent(m.extent)?;
                    let data = img.read_blocks(e.start + u64::from(m.offset), u64::from(m.blocks))?;
                    line.push_str(&format!(
                        " [{}+{}@{} {} crc {:08x}]",
                        m.lblk,
                        m.blocks,
                        m.offset,
                        hex::encode(e.ctx.to_bytes()),
                        crc32c::crc32c(&data)
                    ));
                }
            }
        }
        out.push(line);
    }
    Ok(out)
}

/// Writes hand-made archives (for the hostile corpus): every member gets a
/// correct checksum record and the trailer correct counts, so that exactly
/// the intended defect is what a reader meets.
pub struct ArchiveMaker {
    w: pax::PaxWriter<Vec<u8>>,
    /// Tree members written so far.
    pub members: u64,
    pub rng: TestRng,
}

/// A pax record list.
pub type Recs = Vec<(String, Vec<u8>)>;

impl ArchiveMaker {
    /// Starts an archive with a manifest (`version` normally 1).
    pub fn new(seed: u64, version: u32) -> ArchiveMaker {
        Self::with_base(seed, version, None)
    }

    /// Starts an archive whose manifest names `base_backup_id` as its base.
    pub fn with_base(seed: u64, version: u32, base_backup_id: Option<&str>) -> ArchiveMaker {
        let mut m = ArchiveMaker {
            w: pax::PaxWriter::new(Vec::new()),
            members: 0,
            rng: TestRng::new(seed),
        };
        let man = format::Manifest {
            format: format::FORMAT_NAME.into(),
            version,
            backup_id: hex::encode(m.rng.arr16()),
            base_backup_id: base_backup_id.map(str::to_string),
            created: 1_700_000_000,
            image_uuid: hex::encode(m.rng.arr16()),
            snapshot: "main".into(),
            snapshot_created: 1_700_000_000,
            policy: KEY.to_string(),
            keys_needed: vec![KEY.to_string()],
            block_size: 4096,
        };
        m.raw(format::MANIFEST_NAME, b'0', 0o100644, vec![], &man.to_json());
        m
    }

    /// Writes one member with the given records (a `path` record first) and data.
    pub fn raw(&mut self, path: &str, typeflag: u8, mode: u32, recs: Recs, data: &[u8]) {
        let mut b = Vec::new();
        pax::push_record(&mut b, b"path", path.as_bytes());
        for (k, v) in &recs {
            pax::push_record(&mut b, k.as_bytes(), v);
        }
        let h = pax::Ustar {
            name: path.as_bytes()[..path.len().min(100)].to_vec(),
            mode,
            size: data.len() as u64,
            mtime: 1_700_000_000,
            typeflag,
            ..Default::default()
        };
        let c = crc32c::crc32c(data);
        // Only test inputs reach here; errors would be a bug in the test.
        let _ = self.w.begin(&h, b, c);
        let _ = self.w.data(data, c);
        let _ = self.w.end_data();
    }

    /// Standard time records.
    pub fn times() -> Recs {
        ["mtime", "atime", "ctime"]
            .iter()
            .map(|k| (k.to_string(), b"1700000000.000000000".to_vec()))
            .collect()
    }

    /// A tree member with time records plus `extra`.
    pub fn member(&mut self, path: &str, typeflag: u8, mode: u32, extra: Recs, data: &[u8]) {
        let mut r = Self::times();
        r.extend(extra);
        self.raw(path, typeflag, mode, r, data);
        self.members += 1;
    }

    /// A fresh encrypted name (32 random bytes) and its no-key name.
    pub fn name(&mut self) -> (Vec<u8>, String) {
        let ct = self.rng.bytes(32);
        let nk = fscrypt::nokey_name(&ct);
        (ct, nk)
    }

    pub fn policy(&mut self) -> (String, Vec<u8>) {
        let p = PolicyContext::new(KEY, Nonce(self.rng.arr16()));
        ("CRYPTIMG.policy".into(), hex::encode(p.to_bytes()).into_bytes())
    }

    /// The root directory member.
    pub fn root(&mut self) {
        let p = self.policy();
        self.member("./", b'5', S_IFDIR | 0o755, vec![p], &[]);
    }

    /// A directory named by `ct` under `parent` (`./` or `./X/`); returns its path.
    pub fn dir(&mut self, parent: &str) -> String {
        let (ct, nk) = self.name();
        let p = self.policy();
        let path = format!("{parent}{nk}/");
        self.member(
            &path,
            b'5',
            S_IFDIR | 0o755,
            vec![("CRYPTIMG.name".into(), format::b64(&ct).into_bytes()), p],
            &[],
        );
        path
    }

    /// A one-block file under `parent`; returns its path.
    pub fn file(&mut self, parent: &str) -> String {
        let (ct, nk) = self.name();
        let path = format!("{parent}{nk}");
        let (recs, data) = self.file_recs(&ct, 4096, 1);
        self.member(&path, b'0', S_IFREG | 0o644, recs, &data);
        path
    }

    /// Records and data of a file of `size` bytes stored in one `blocks`-block extent.
    pub fn file_recs(&mut self, ct: &[u8], size: u64, blocks: u32) -> (Recs, Vec<u8>) {
        let data = self.rng.bytes(blocks as usize * BLOCK_SIZE);
        let ctx = ExtentContext::new(KEY, Nonce(self.rng.arr16()));
        let item = format::Item {
            lblk: 0,
            count: blocks,
            off: 0,
            ext: format::ExtentKey {
                ctx: ctx.to_bytes(),
                crc: crc32c::crc32c(&data),
                blocks,
            },
            stored: true,
        };
        let (e, i) = format::encode_items(&[item]);
        (
            vec![
                ("CRYPTIMG.name".into(), format::b64(ct).into_bytes()),
                ("CRYPTIMG.size".into(), size.to_string().into_bytes()),
                ("CRYPTIMG.extents".into(), e.into_bytes()),
                ("CRYPTIMG.extinfo".into(), i.into_bytes()),
            ],
            data,
        )
    }

    /// A compact listing member (format version 2) holding `entries`.
    pub fn listing(&mut self, entries: &[listing::Entry]) {
        let mut b = Vec::new();
        for e in entries {
            e.encode(&mut b);
        }
        self.members += entries.len() as u64;
        self.listing_raw(&b);
    }

    /// A listing member with the given data (a correct checksum; the member
    /// count is not changed).
    pub fn listing_raw(&mut self, data: &[u8]) {
        self.raw(listing::LISTING_NAME, b'0', 0o100644, vec![], data);
    }

    /// A listing member whose header claims `size` bytes, followed by nothing.
    pub fn listing_claiming(mut self, size: u64) -> Vec<u8> {
        let mut b = Vec::new();
        pax::push_record(&mut b, b"path", listing::LISTING_NAME.as_bytes());
        let h = pax::Ustar {
            name: listing::LISTING_NAME.as_bytes().to_vec(),
            mode: 0o100644,
            size,
            mtime: 1_700_000_000,
            typeflag: b'0',
            ..Default::default()
        };
        let _ = self.w.begin(&h, b, 0);
        let mut v = self.cut();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    /// A listing entry with this maker's standard times and owner.
    pub fn entry(typeflag: u8, parent: u64, name: &[u8], mode: u32, body: listing::Body) -> listing::Entry {
        let t = Timespec {
            sec: 1_700_000_000,
            nsec: 0,
        };
        listing::Entry {
            typeflag,
            parent,
            name: name.to_vec(),
            mode,
            uid: 0,
            gid: 0,
            rdev: 0,
            mtime: t,
            atime: t,
            ctime: t,
            xattrs: Vec::new(),
            body,
        }
    }

    /// A fresh directory policy context.
    pub fn policy_bytes(&mut self) -> [u8; 40] {
        PolicyContext::new(KEY, Nonce(self.rng.arr16())).to_bytes()
    }

    /// Ends the archive with a correct trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let crc = self.w.crc;
        let recs = vec![
            ("CRYPTIMG.members".to_string(), self.members.to_string().into_bytes()),
            ("CRYPTIMG.archive_crc32c".to_string(), format!("{crc:08x}").into_bytes()),
        ];
        self.raw(format::TRAILER_NAME, b'0', 0o100644, recs, &[]);
        self.w.finish().unwrap_or_default()
    }

    /// The bytes so far, without trailer or end marker (a cut stream).
    pub fn cut(self) -> Vec<u8> {
        self.w
            .finish()
            .map(|mut v| {
                v.truncate(v.len() - 1024);
                v
            })
            .unwrap_or_default()
    }
}
