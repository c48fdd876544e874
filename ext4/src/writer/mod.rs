//! The offline writer: builds a complete ext4 image from a stream of
//! directories, files, symlinks, special files and hard links.
//!
//! File contents are streamed: each block is read, checked for zeros (an
//! all-zero block stays a hole, as `mke2fs -d` does), encrypted with the
//! file's XTS key when it has one, and written at once; only the extent list
//! is kept. Large encrypted files go through a two-thread pipeline with a
//! few bounded buffers (`pipe`), with the same result byte for byte. Directories, inodes, bitmaps and descriptors are kept in memory
//! (a few hundred bytes per inode) and written by [`Writer::finish`].
//!
//! The writer deals in on-disk bytes: names are already ciphertext in an
//! encrypted directory, a symlink's `disk_link` is already
//! `le16 len ‖ ciphertext ‖ NUL`, and the caller supplies the 40-byte fscrypt
//! context and the contents key. `ops::ext4` in libimage does the fscrypt
//! side.

mod finish;
pub mod layout;
mod pipe;
mod raw;

use std::fs::File;
use std::os::unix::fs::FileExt;

use fscrypt::XtsKey;

use crate::dir::{file_type_of, DirEntry};
use crate::extent::{Extent, MAX_LEN};
use crate::inode::{Time, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::xattr::Xattr;
use crate::{Error, Result, BLOCK_SIZE, BLOCK_SIZE_U64, FIRST_INO, ROOT_INO};
use layout::{Alloc, Layout};

/// Bytes of file data gathered before one write.
const WRITE_BATCH: usize = 8 << 20;
/// Bytes of file contents read per call.
const READ_CHUNK: usize = 1 << 20;

/// What the caller chooses about the whole filesystem.
#[derive(Clone, Debug)]
pub struct Options {
    /// Filesystem size in 4096-byte blocks.
    pub blocks: u64,
    /// At least this many inodes.
    pub inodes: u64,
    /// Write a journal (mke2fs's default) or not.
    pub journal: bool,
    /// Set the `encrypt` feature.
    pub encrypt: bool,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    /// Time for what the tool creates (root, lost+found, superblock).
    pub now: i64,
}

/// Inode metadata from the source.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    /// Full mode, file type bits included.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// Device number (Linux `dev_t` encoding) of a device node.
    pub rdev: u64,
    pub xattrs: Vec<Xattr>,
}

pub use filedata::{Dense, FileData, Run};

/// Counts of what was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub hardlinks: u64,
    /// Logical bytes of regular files.
    pub bytes: u64,
    /// Blocks and inodes of the finished filesystem, and how many are used.
    pub blocks: u64,
    pub blocks_used: u64,
    pub inodes: u64,
    pub inodes_used: u64,
}

enum Body {
    Dir { parent: u32, entries: Vec<DirEntry> },
    File { extents: Vec<Extent>, data_blocks: u64 },
    FastSymlink,
    SlowSymlink { block: u64 },
    Special,
    Reserved,
    Free,
}

struct Node {
    attrs: Attrs,
    /// fscrypt v2 context (then ENCRYPT_FL is set).
    ctx: Option<[u8; 40]>,
    size: u64,
    links: u32,
    /// i_block for fast symlinks and devices.
    iblock: [u8; 60],
    body: Body,
}

/// Builds one ext4 image; see the module documentation.
pub struct Writer {
    file: File,
    opts: Options,
    layout: Layout,
    alloc: Alloc,
    fs_seed: u32,
    nodes: Vec<Node>,
    pending: Vec<u8>,
    pending_start: u64,
    buf: Vec<u8>,
    /// The pipeline's buffers, kept from one large file to the next.
    chunks: Vec<pipe::Chunk>,
    /// Every file the one-thread way (tests compare the two ways).
    serial: bool,
    stats: Stats,
    /// Directory hash of indexed directories: (`s_def_hash_version`,
    /// signed); [`Writer::set_dir_hash`].
    dir_hash: (u8, bool),
}

fn dir_attrs(mode: u16, now: i64) -> Attrs {
    let t = Time { sec: now, nsec: 0 };
    Attrs {
        mode: S_IFDIR | mode,
        atime: t,
        mtime: t,
        ctime: t,
        ..Default::default()
    }
}

impl Writer {
    /// Hashes indexed directories with `version` (0 legacy, 1 half_md4,
    /// 2 tea: the superblock's `s_def_hash_version`) and signed or unsigned
    /// characters (`s_flags`) instead of the default unsigned half_md4, so a
    /// restored filesystem's directory hashes (and the no-key names Linux
    /// derives from them) are the source's.
    pub fn set_dir_hash(&mut self, version: u8, signed: bool) -> Result<()> {
        if version > crate::htree::DX_HASH_TEA {
            return Err(Error::Invalid(format!(
                "directory hash version {version} is not supported (0 legacy, 1 half_md4, 2 tea)"
            )));
        }
        self.dir_hash = (version, signed);
        Ok(())
    }

    /// Plans the filesystem on `file` (which should be empty; it is extended
    /// to the filesystem size by [`Writer::finish`]) and creates the root
    /// directory, lost+found and the reserved inodes.
    pub fn new(file: File, opts: Options) -> Result<Writer> {
        let (layout, alloc) = layout::plan(opts.blocks, opts.inodes.saturating_add(u64::from(FIRST_INO)), opts.journal)?;
        let fs_seed = crate::csum::fs_seed(&opts.uuid);
        let mut w = Writer {
            file,
            layout,
            alloc,
            fs_seed,
            nodes: Vec::new(),
            pending: Vec::new(),
            pending_start: 0,
            buf: Vec::new(),
            chunks: Vec::new(),
            serial: false,
            stats: Stats::default(),
            dir_hash: (crate::htree::DX_HASH_HALF_MD4, false),
            opts,
        };
        for _ in 1..FIRST_INO {
            w.nodes.push(Node {
                attrs: Attrs::default(),
                ctx: None,
                size: 0,
                links: 0,
                iblock: [0; 60],
                body: Body::Reserved,
            });
        }
        let now = w.opts.now;
        w.nodes[(ROOT_INO - 1) as usize] = Node {
            attrs: dir_attrs(0o755, now),
            ctx: None,
            size: 0,
            links: 2,
            iblock: [0; 60],
            body: Body::Dir {
                parent: ROOT_INO,
                entries: Vec::new(),
            },
        };
        let lpf = w.mkdir(ROOT_INO, b"lost+found", dir_attrs(0o700, now), None)?;
        debug_assert_eq!(lpf, FIRST_INO);
        w.stats.dirs = 0;
        Ok(w)
    }

    /// The number the next new inode gets.
    fn new_ino(&mut self, node: Node) -> Result<u32> {
        check_xattrs(&node.attrs.xattrs)?;
        let n = self.nodes.len() as u64 + 1;
        if n > self.layout.inodes() {
            return Err(Error::NoInodes {
                inodes: self.layout.inodes(),
            });
        }
        self.nodes.push(node);
        Ok(n as u32)
    }

    fn node(&self, ino: u32) -> Result<&Node> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(i as usize))
            .ok_or_else(|| Error::Invalid(format!("inode {ino} does not exist")))
    }

    fn node_mut(&mut self, ino: u32) -> Result<&mut Node> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get_mut(i as usize))
            .ok_or_else(|| Error::Invalid(format!("inode {ino} does not exist")))
    }

    /// Looks `name` (on-disk bytes) up in directory `dir`.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        match &self.node(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries.iter().find(|e| e.name == name).map(|e| e.inode)),
            _ => Err(Error::Invalid(format!("inode {dir} is not a directory"))),
        }
    }

    /// Whether `ino` is a directory.
    pub fn is_dir(&self, ino: u32) -> bool {
        matches!(self.node(ino).map(|n| &n.body), Ok(Body::Dir { .. }))
    }

    fn add_entry(&mut self, dir: u32, name: &[u8], ino: u32) -> Result<()> {
        if name.is_empty() || name.len() > 255 || name == b"." || name == b".." {
            return Err(Error::Invalid(format!("invalid directory entry name of {} bytes", name.len())));
        }
        let ft = file_type_of(self.node(ino)?.attrs.mode);
        let is_dir = ft == crate::dir::FT_DIR;
        let parent = self.node_mut(dir)?;
        let Body::Dir { entries, .. } = &mut parent.body else {
            return Err(Error::Invalid(format!("inode {dir} is not a directory")));
        };
        entries.push(DirEntry {
            inode: ino,
            file_type: ft,
            name: name.to_vec(),
        });
        if is_dir {
            parent.links += 1;
        }
        self.node_mut(ino)?.links += 1;
        Ok(())
    }

    /// Creates a directory `name` in `parent`.
    pub fn mkdir(&mut self, parent: u32, name: &[u8], mut attrs: Attrs, ctx: Option<[u8; 40]>) -> Result<u32> {
        attrs.mode = S_IFDIR | (attrs.mode & !S_IFMT);
        let ino = self.new_ino(Node {
            attrs,
            ctx,
            size: 0,
            links: 1,
            iblock: [0; 60],
            body: Body::Dir {
                parent,
                entries: Vec::new(),
            },
        })?;
        self.add_entry(parent, name, ino)?;
        self.stats.dirs += 1;
        Ok(ino)
    }

    /// Replaces the metadata of an existing inode (a directory seen again).
    pub fn set_attrs(&mut self, ino: u32, mut attrs: Attrs) -> Result<()> {
        check_xattrs(&attrs.xattrs)?;
        let n = self.node_mut(ino)?;
        attrs.mode = (n.attrs.mode & S_IFMT) | (attrs.mode & !S_IFMT);
        n.attrs = attrs;
        Ok(())
    }

    /// Adds a hard link `name` in `parent` to the existing non-directory `ino`.
    pub fn link(&mut self, parent: u32, name: &[u8], ino: u32) -> Result<()> {
        if self.is_dir(ino) || matches!(self.node(ino)?.body, Body::Free | Body::Reserved) {
            return Err(Error::Invalid(format!("cannot hard-link inode {ino}")));
        }
        self.add_entry(parent, name, ino)?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Removes entry `name` from `parent`; frees the inode and its blocks
    /// when no link is left. Directories cannot be removed.
    pub fn unlink(&mut self, parent: u32, name: &[u8]) -> Result<()> {
        let Some(ino) = self.lookup(parent, name)? else {
            return Ok(());
        };
        if self.is_dir(ino) {
            return Err(Error::Invalid("replacing a directory is not supported".into()));
        }
        if let Body::Dir { entries, .. } = &mut self.node_mut(parent)?.body {
            entries.retain(|e| e.name != name);
        }
        let n = self.node_mut(ino)?;
        n.links = n.links.saturating_sub(1);
        if n.links == 0 {
            let body = std::mem::replace(&mut n.body, Body::Free);
            match body {
                Body::File { extents, .. } => {
                    for e in extents {
                        for b in e.pblk..e.pblk + u64::from(e.len) {
                            self.alloc.free(b);
                        }
                    }
                }
                Body::SlowSymlink { block } => self.alloc.free(block),
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates a regular file from `size` bytes of `content`. With `enc`
    /// = (fscrypt context, contents key), each block is encrypted (tweak =
    /// logical block number) and the context stored.
    pub fn file(
        &mut self,
        parent: u32,
        name: &[u8],
        mut attrs: Attrs,
        enc: Option<([u8; 40], &XtsKey)>,
        size: u64,
        content: &mut dyn FileData,
    ) -> Result<u32> {
        let (ctx, key) = match enc {
            Some((c, k)) => (Some(c), Some(k)),
            None => (None, None),
        };
        attrs.mode = S_IFREG | (attrs.mode & !S_IFMT);
        if size.div_ceil(BLOCK_SIZE_U64) > u64::from(u32::MAX) {
            return Err(Error::Invalid(format!(
                "a file of {size} bytes is larger than ext4 allows (16 TiB)"
            )));
        }
        check_xattrs(&attrs.xattrs)?;
        let (extents, data_blocks) = self.write_contents(key, size, content)?;
        let ino = self.new_ino(Node {
            attrs,
            ctx,
            size,
            links: 0,
            iblock: [0; 60],
            body: Body::File { extents, data_blocks },
        })?;
        self.add_entry(parent, name, ino)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(ino)
    }

    fn write_contents(&mut self, key: Option<&XtsKey>, size: u64, content: &mut dyn FileData) -> Result<(Vec<Extent>, u64)> {
        if let Some(k) = key {
            if size >= pipe::MIN_SIZE && !self.serial {
                return self.write_pipelined(k, size, content);
            }
        }
        let mut placed = Placed::default();
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(READ_CHUNK, 0);
        let mut done = 0u64;
        let mut zero: Vec<bool> = Vec::with_capacity(READ_CHUNK / BLOCK_SIZE);
        let mut runs = Vec::new();
        let r = (|| {
            while let Some((lblk0, padded)) = next_piece(content, size, &mut done, &mut buf)? {
                let data = &mut buf[..padded];
                // Holes are decided on the plaintext, before encryption.
                zero_flags(data, &mut zero);
                if let Some(k) = key {
                    encrypt_chunk(k, lblk0, data);
                }
                allocate(&mut self.alloc, &mut placed, lblk0, &zero, &mut runs)?;
                for &(i, pblk, n) in &runs {
                    self.put_block(pblk, &data[i * BLOCK_SIZE..(i + n) * BLOCK_SIZE])?;
                }
            }
            Ok(())
        })();
        self.buf = buf;
        r.map(|()| (placed.extents, placed.blocks))
    }

    /// Queues whole blocks `data` for blocks `pblk..` (consecutive blocks
    /// become one write of up to about [`WRITE_BATCH`] bytes).
    fn put_block(&mut self, pblk: u64, data: &[u8]) -> Result<()> {
        let next = self.pending_start + (self.pending.len() / BLOCK_SIZE) as u64;
        if !self.pending.is_empty() && (pblk != next || self.pending.len() >= WRITE_BATCH) {
            self.flush()?;
        }
        if self.pending.is_empty() {
            self.pending_start = pblk;
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.write_at(self.pending_start * BLOCK_SIZE_U64, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        write_image_at(&self.file, off, data)
    }

    /// Creates a symlink whose on-disk target is `disk_link`, terminating
    /// NUL included (`i_size` = its length - 1): in `i_block` when it fits in
    /// 60 bytes, else in one block (fs/ext4/namei.c `ext4_symlink`).
    pub fn symlink(&mut self, parent: u32, name: &[u8], mut attrs: Attrs, ctx: Option<[u8; 40]>, disk_link: &[u8]) -> Result<u32> {
        attrs.mode = S_IFLNK | (attrs.mode & !S_IFMT);
        if disk_link.len() < 2 || disk_link.len() > BLOCK_SIZE || disk_link.last() != Some(&0) {
            return Err(Error::Invalid(format!("symlink data of {} bytes", disk_link.len())));
        }
        let mut iblock = [0u8; 60];
        let body = if disk_link.len() <= iblock.len() {
            iblock[..disk_link.len()].copy_from_slice(disk_link);
            Body::FastSymlink
        } else {
            let block = self.alloc.one("a symlink target")?;
            let mut b = vec![0u8; BLOCK_SIZE];
            b[..disk_link.len()].copy_from_slice(disk_link);
            self.put_block(block, &b)?;
            Body::SlowSymlink { block }
        };
        let ino = self.new_ino(Node {
            attrs,
            ctx,
            size: disk_link.len() as u64 - 1,
            links: 0,
            iblock,
            body,
        })?;
        self.add_entry(parent, name, ino)?;
        self.stats.symlinks += 1;
        Ok(ino)
    }

    /// Creates a device node, FIFO or socket (type from `attrs.mode`).
    pub fn special(&mut self, parent: u32, name: &[u8], attrs: Attrs) -> Result<u32> {
        use crate::inode::*;
        let t = attrs.mode & S_IFMT;
        if ![S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].contains(&t) {
            return Err(Error::Invalid(format!("mode {:o} is not a special file", attrs.mode)));
        }
        let mut iblock = [0u8; 60];
        if t == S_IFCHR || t == S_IFBLK {
            // fs/ext4/inode.c ext4_do_update_inode: old encoding in i_block[0]
            // when major and minor fit in 8 bits, else new encoding in i_block[1].
            let dev = attrs.rdev;
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
            let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
            if major < 256 && minor < 256 {
                iblock[..4].copy_from_slice(&((major << 8 | minor) as u32).to_le_bytes());
            } else {
                let enc = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                iblock[4..8].copy_from_slice(&(enc as u32).to_le_bytes());
            }
        }
        let ino = self.new_ino(Node {
            attrs,
            ctx: None,
            size: 0,
            links: 0,
            iblock,
            body: Body::Special,
        })?;
        self.add_entry(parent, name, ino)?;
        self.stats.specials += 1;
        Ok(ino)
    }
}

/// Encrypts a chunk of whole blocks starting at logical block `lblk0` (block
/// `i` with tweak `lblk0 + i`), on two threads when the chunk is large. All-zero
/// blocks are encrypted too but then skipped by the caller (they stay holes).
fn encrypt_chunk(key: &XtsKey, lblk0: u64, data: &mut [u8]) {
    const PARALLEL_MIN: usize = 256 * 1024;
    if data.len() < PARALLEL_MIN {
        key.encrypt_units(lblk0, BLOCK_SIZE, data);
        return;
    }
    let half = (data.len() / BLOCK_SIZE / 2) * BLOCK_SIZE;
    let (a, b) = data.split_at_mut(half);
    let second = lblk0 + (half / BLOCK_SIZE) as u64;
    std::thread::scope(|s| {
        s.spawn(|| key.encrypt_units(second, BLOCK_SIZE, b));
        key.encrypt_units(lblk0, BLOCK_SIZE, a);
    });
}

/// The extents and the count of the blocks of one file placed so far.
#[derive(Default)]
struct Placed {
    extents: Vec<Extent>,
    blocks: u64,
}

/// Writes `data` at byte `off` of the image.
fn write_image_at(file: &File, off: u64, data: &[u8]) -> Result<()> {
    file.write_all_at(data, off)
        .map_err(|e| Error::io(format!("writing the ext4 image at byte {off}"), e))
}

/// Allocates a block for each block of a file's piece that is not all zeros
/// (logical blocks from `lblk0`; `zero[i]`: block `i` is all zeros and stays
/// a hole), records the extents in `placed`, and sets `runs` to the
/// physically contiguous runs to write: (index of the run's first block in
/// the piece, its first physical block, blocks).
fn allocate(alloc: &mut Alloc, placed: &mut Placed, lblk0: u64, zero: &[bool], runs: &mut Vec<(usize, u64, usize)>) -> Result<()> {
    runs.clear();
    for (i, _) in zero.iter().enumerate().filter(|(_, &z)| !z) {
        let pblk = alloc.one("file data")?;
        match runs.last_mut() {
            Some((i0, p0, n)) if *i0 + *n == i && *p0 + *n as u64 == pblk => *n += 1,
            _ => runs.push((i, pblk, 1)),
        }
        placed.blocks += 1;
        let lblk = (lblk0 + i as u64) as u32;
        match placed.extents.last_mut() {
            Some(e) if e.lblk + u32::from(e.len) == lblk && e.pblk + u64::from(e.len) == pblk && e.len < MAX_LEN => e.len += 1,
            _ => placed.extents.push(Extent { lblk, len: 1, pblk }),
        }
    }
    Ok(())
}

/// `zero[i]`: block `i` of `data` (whole blocks) is all zeros.
fn zero_flags(data: &[u8], zero: &mut Vec<bool>) {
    zero.clear();
    zero.extend(data.chunks_exact(BLOCK_SIZE).map(|b| b.iter().all(|&x| x == 0)));
}

/// Reads the next piece of a file's data into `buf` (at most its length, a
/// multiple of the block size): skips the holes `content` knows of, reads
/// up to the end of the current data run, pads the last partial block with
/// zeros. Returns the piece's first logical block and padded length, or
/// None when all `size` bytes are done. `done` (a multiple of the block
/// size, or `size`) is where the file stands; it moves past the piece.
fn next_piece(content: &mut dyn FileData, size: u64, done: &mut u64, buf: &mut [u8]) -> Result<Option<(u64, usize)>> {
    let read_err = |e| Error::io(format!("reading file contents ({size} bytes expected)"), e);
    while *done < size {
        let run_end = match content.run().map_err(read_err)? {
            Run::Hole { end } => {
                let to = (end.min(size) / BLOCK_SIZE_U64 * BLOCK_SIZE_U64).max(*done);
                if to > *done {
                    content.skip_hole(to).map_err(read_err)?;
                    *done = to;
                    continue;
                }
                // A hole shorter than the rest of this block: read it.
                (*done + BLOCK_SIZE_U64).min(size)
            }
            Run::Data { end } => end.min(size).max(*done + 1),
        };
        let upto = run_end.next_multiple_of(BLOCK_SIZE_U64).min(size);
        let n = (upto - *done).min(buf.len() as u64) as usize;
        let padded = n.next_multiple_of(BLOCK_SIZE);
        content.read_exact(&mut buf[..n]).map_err(read_err)?;
        buf[n..padded].fill(0);
        let lblk0 = *done / BLOCK_SIZE_U64;
        *done += n as u64;
        return Ok(Some((lblk0, padded)));
    }
    Ok(None)
}

/// Names of 1..=255 bytes, index 1..=9, and all attributes of an inode in
/// one block (the context stays in the inode).
fn check_xattrs(x: &[Xattr]) -> Result<()> {
    for a in x {
        if a.name.is_empty() || a.name.len() > 255 || a.index == 0 || a.index > 9 {
            return Err(Error::Invalid(format!(
                "extended attribute (index {}, name of {} bytes) is not valid",
                a.index,
                a.name.len()
            )));
        }
    }
    if !crate::xattr::fits_block(x) {
        return Err(Error::Invalid(
            "extended attributes of one file need more than one 4096-byte block".into(),
        ));
    }
    Ok(())
}
