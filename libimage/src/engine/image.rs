//! An open image: superblock selection, metadata loading, block I/O,
//! extent encryption, and the copy-on-write commit.
//!
//! Commit protocol (FORMAT.md §8):
//! 1. data blocks are written only into blocks free in the committed state;
//! 2. fsync;
//! 3. the whole metadata stream is written into a fresh free region; fsync;
//! 4. the superblock with generation + 1 is written into the other slot; fsync.
//! 5. when the commit freed extents: the settling commit, the same metadata
//!    as generation + 2 into the first slot (steps 3 and 4 again), after
//!    which the freed blocks are punched at once (`engine::space`).
//!
//! A crash before step 4 completes leaves the previous superblock and
//! everything it references untouched; a crash during step 5 leaves the
//! commit of step 4 newest and intact.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::engine::alloc::FreeMap;
use crate::engine::lock::{self, LockGuard, LockMode};
use crate::engine::parallel::{combine_crcs, pieces, split_units};
use crate::error::{CorruptKind, Error, Result};
use crate::finding::{Finding, Severity};
use crate::format::bytes::crc32c;
use crate::format::extent::Extent;
use crate::format::inode::MapEntry;
use crate::format::meta::Metadata;
use crate::format::metablock;
use crate::format::metadecode::Stream;
use crate::format::superblock::{Superblock, SLOTS};
use crate::format::validate::{check_metadata, Geometry};
use crate::BLOCK_SIZE;
use fscrypt::context::ExtentContext;
use fscrypt::{KeyId, MasterKey, Nonce, XtsKey};

/// Environment variable for fault injection: the Nth block write (counting
/// from 1) fails, and so does every write after it, as if the machine had
/// stopped. Used by the crash-matrix tests.
pub const FAIL_ENV: &str = "CRYPTIMG_FAIL_AFTER_WRITES";

thread_local! {
    /// Per-thread override of [`FAIL_ENV`] (see [`set_thread_fail_after`]).
    static THREAD_FAIL_AFTER: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Fault-injection hook for in-process tests, which cannot set environment
/// variables safely while other test threads run: images opened or created on
/// the calling thread from now on fail at their `n`th block write, as
/// [`FAIL_ENV`] makes them do for a whole process. `None` goes back to the
/// environment variable.
pub fn set_thread_fail_after(n: Option<u64>) {
    THREAD_FAIL_AFTER.with(|c| c.set(n));
}

/// Writes larger than this are flushed immediately rather than combined.
const COMBINE_MAX: usize = 8 << 20;

/// Block writer with write combining and fault injection.
struct BlockIo {
    file: File,
    writes: u64,
    fail_at: Option<u64>,
    pend_start: u64,
    pend: Vec<u8>,
}

impl BlockIo {
    fn new(file: File) -> Self {
        let fail_at = THREAD_FAIL_AFTER
            .with(|c| c.get())
            .or_else(|| std::env::var(FAIL_ENV).ok().and_then(|v| v.parse().ok()));
        BlockIo {
            file,
            writes: 0,
            fail_at,
            pend_start: 0,
            pend: Vec::new(),
        }
    }

    fn write_now(&mut self, block: u64, data: &[u8]) -> Result<()> {
        self.writes += 1;
        if self.fail_at.is_some_and(|n| self.writes >= n) {
            return Err(Error::InjectedFault { writes: self.writes - 1 });
        }
        self.file
            .write_all_at(data, block * BLOCK_SIZE as u64)
            .map_err(|e| Error::io(format!("writing block {block} of the image"), e))
    }

    /// Queues a write, combining it with the previous one when contiguous.
    fn write(&mut self, block: u64, data: &[u8]) -> Result<()> {
        let pend_end = self.pend_start + (self.pend.len() / BLOCK_SIZE) as u64;
        if !self.pend.is_empty() && (block != pend_end || self.pend.len() + data.len() > COMBINE_MAX) {
            self.flush()?;
        }
        if self.pend.is_empty() {
            if data.len() >= COMBINE_MAX {
                return self.write_now(block, data);
            }
            self.pend_start = block;
        }
        self.pend.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pend.is_empty() {
            return Ok(());
        }
        let pend = std::mem::take(&mut self.pend);
        let r = self.write_now(self.pend_start, &pend);
        self.pend = pend;
        self.pend.clear();
        r
    }

    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file.sync_all().map_err(|e| Error::io("fsync of the image", e))
    }
}

/// Reads `count` blocks at `start`; a short read is a truncated image.
pub fn read_blocks_from(file: &File, start: u64, count: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_blocks_into(file, start, count, what, &mut buf)?;
    Ok(buf)
}

/// Like [`read_blocks_from`], into a reused buffer (resized to fit), which
/// spares large reads a fresh allocation and its page faults each time.
pub fn read_blocks_into(file: &File, start: u64, count: u64, what: &str, buf: &mut Vec<u8>) -> Result<()> {
    let len = count
        .checked_mul(BLOCK_SIZE as u64)
        .filter(|&l| l <= isize::MAX as u64)
        .ok_or_else(|| {
            Error::corrupt(
                CorruptKind::OutOfRange {
                    field: "block count",
                    value: count,
                    max: u32::MAX.into(),
                },
                what.to_string(),
                None,
            )
        })?;
    let off = start * BLOCK_SIZE as u64;
    let flen = file.metadata().map_err(|e| Error::io("stat of the image", e))?.len();
    if off.saturating_add(len) > flen {
        return Err(Error::corrupt(
            CorruptKind::Truncated {
                needed: off.saturating_add(len),
                available: flen,
            },
            what.to_string(),
            Some(off),
        ));
    }
    buf.resize(len as usize, 0);
    file.read_exact_at(buf, off).map_err(|e| Error::io(format!("reading {what}"), e))
}

/// Reads and validates both superblock slots.
pub fn read_slots(file: &File) -> [Result<Superblock>; 2] {
    SLOTS.map(|slot| read_blocks_from(file, slot, 1, "superblock slot").and_then(|b| Superblock::from_bytes(&b, slot)))
}

/// Picks the newest valid slot.
pub fn newest(slots: &[Result<Superblock>; 2]) -> Result<Superblock> {
    // An intact superblock this build does not support (a newer version or an
    // unknown incompatible feature) may be the newest commit: never fall back
    // to the other slot, which a later commit would then overwrite.
    for e in slots.iter().filter_map(|s| s.as_ref().err()) {
        if let Error::Unsupported(s) = e {
            return Err(Error::Unsupported(s.clone()));
        }
    }
    match (&slots[0], &slots[1]) {
        (Ok(a), Ok(b)) => Ok(if a.generation >= b.generation { a.clone() } else { b.clone() }),
        (Ok(a), Err(_)) => Ok(a.clone()),
        (Err(_), Ok(b)) => Ok(b.clone()),
        (Err(e0), Err(e1)) => Err(Error::corrupt(
            CorruptKind::NoValidSuperblock,
            format!("image (slot 0: {e0}; slot 1: {e1})"),
            Some(0),
        )),
    }
}

/// Why the metadata a superblock points at could not be loaded.
#[derive(Debug)]
pub enum MetaLoadError {
    /// Reading the region failed (I/O), or it lies past the end of the file.
    Read(Error),
    /// Blocks failed their checks; one error per bad block (each names it).
    Blocks(Vec<Error>),
    /// Every block is intact, but the stream's crc32c differs from the superblock's.
    StreamCrc(Error),
    /// The stream does not decode.
    Decode(Error),
}

impl MetaLoadError {
    /// The first error, for callers that stop at one.
    pub fn into_error(self) -> Error {
        match self {
            MetaLoadError::Blocks(mut v) if !v.is_empty() => v.swap_remove(0),
            MetaLoadError::Blocks(_) => Error::Internal("the metadata region was reported damaged without naming a block"),
            MetaLoadError::Read(e) | MetaLoadError::StreamCrc(e) | MetaLoadError::Decode(e) => e,
        }
    }
}

/// Blocks of the metadata region read per system call.
const META_READ_BLOCKS: u64 = 256;

/// Loads the metadata a superblock points at: reads the region in chunks,
/// checks every block (`metablock::check_block`), checks the stream's crc32c,
/// and decodes it (on all cores when large, `metadecode`). The one place
/// metadata is loaded, for every tool and the checker.
pub fn load_metadata(file: &File, sb: &Superblock) -> std::result::Result<Metadata, MetaLoadError> {
    let flen = file
        .metadata()
        .map_err(|e| MetaLoadError::Read(Error::io("stat of the image", e)))?
        .len();
    let end = sb.meta_start.saturating_add(sb.meta_blocks).saturating_mul(BLOCK_SIZE as u64);
    if end > flen {
        return Err(MetaLoadError::Read(Error::corrupt(
            CorruptKind::Truncated {
                needed: end,
                available: flen,
            },
            "metadata region",
            Some(sb.meta_start * BLOCK_SIZE as u64),
        )));
    }
    // Sizes are bounded by the file's length, checked above.
    let chunk = META_READ_BLOCKS.min(sb.meta_blocks);
    let mut buf = Vec::new();
    let mut stream = Stream::with_capacity(sb.meta_bytes as usize);
    let mut errs = Vec::new();
    let mut done = 0u64;
    while done < sb.meta_blocks {
        let n = chunk.min(sb.meta_blocks - done);
        read_blocks_into(file, sb.meta_start + done, n, "metadata region", &mut buf).map_err(MetaLoadError::Read)?;
        for (i, blk) in buf.chunks(BLOCK_SIZE).enumerate() {
            let want = (sb.meta_bytes - stream.len() as u64).min(metablock::PAYLOAD as u64) as usize;
            match metablock::check_block(blk, sb.meta_start + done + i as u64, sb.generation) {
                Ok(payload) => stream.push(Some(payload), want),
                Err(e) => {
                    errs.push(e);
                    stream.push(None, want);
                }
            }
        }
        done += n;
    }
    if !errs.is_empty() {
        return Err(MetaLoadError::Blocks(errs));
    }
    let crc = crc32c(stream.as_slice());
    if crc != sb.meta_crc {
        return Err(MetaLoadError::StreamCrc(Error::corrupt(
            CorruptKind::BadChecksum {
                stored: sb.meta_crc,
                computed: crc,
            },
            "metadata stream (every block is intact)",
            Some(sb.meta_start * BLOCK_SIZE as u64),
        )));
    }
    crate::format::metadecode::decode(stream).map_err(MetaLoadError::Decode)
}

/// The master keys given by the user.
#[derive(Default)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(keys: Vec<MasterKey>) -> Self {
        Keyring { keys }
    }
    pub fn get(&self, id: &KeyId) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.matches(id))
    }
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.identifier()).collect()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Fails with [`Error::WrongKey`] unless every id in `needed` is present.
    pub fn require(&self, needed: &[KeyId]) -> Result<()> {
        if needed.iter().all(|id| self.get(id).is_some()) {
            return Ok(());
        }
        Err(Error::WrongKey {
            given: self.ids(),
            needed: needed.to_vec(),
        })
    }
}

/// How to open an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// An open image.
pub struct Image {
    path: PathBuf,
    sb: Superblock,
    /// The metadata of the working state (committed + uncommitted changes).
    /// Private: extent refcounts and the allocation state change only through
    /// the methods below ([`Image::record_extent`], [`Image::add_refs`],
    /// [`Image::drop_ref`]), the one owner of those invariants.
    meta: Metadata,
    free: FreeMap,
    pending_free: Vec<(u64, u64)>,
    io: BlockIo,
    access: Access,
    /// Set once a write failed: the in-memory state may no longer match.
    poisoned: bool,
    /// [`BlockIo::writes`] at the last successful commit (or the opening):
    /// more means blocks were written that no commit references yet.
    committed_writes: u64,
    /// The file's length when it was opened: a failed session never cuts
    /// the file below it (a rollback that fails must not cut off the newer,
    /// damaged generation it was abandoning).
    opened_len: u64,
    /// The image's lock (`engine::lock`): exclusive for writers, shared for
    /// readers; `None` for a new image nobody else can see yet.
    _lock: Option<LockGuard>,
    /// Hole punching and truncation after each commit (`engine::space`).
    space: crate::engine::space::Reclaim,
}

/// Opens an image file and takes its lock (exclusive to write, shared to
/// read) before anything is read from it. If the path was renamed over
/// meanwhile (`create --force`, a restore), the lock is on a file that no
/// longer has the name: open the new file instead.
fn open_locked(path: &Path, access: Access) -> Result<(File, LockGuard)> {
    let mode = match access {
        Access::ReadOnly => LockMode::Shared,
        Access::ReadWrite => LockMode::Exclusive,
    };
    let mut tries = 0;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .open(path)
            .map_err(|e| Error::io(format!("opening image {}", path.display()), e))?;
        // A directory is a wrong argument (exit 8), not a damaged image (4).
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::Invalid(format!("{} is a directory, not an image file", path.display())));
        }
        let guard = lock::lock(&file, path, mode)?;
        let same = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        tries += 1;
        if same || tries >= 3 {
            return Ok((file, guard));
        }
    }
}

impl Drop for Image {
    /// A write session that ends without committing its last writes (an
    /// error such as a full disk, or the caller giving up) may have grown the
    /// file past the committed image: cut it back to the committed size (or
    /// the length it had when opened, if longer), so the file is the
    /// committed image again. Blocks inside the committed size that the
    /// session wrote are free in the committed state and harmless.
    fn drop(&mut self) {
        if self.access != Access::ReadWrite || self._lock.is_none() || self.io.writes == self.committed_writes {
            return;
        }
        let keep = self.sb.total_blocks.saturating_mul(BLOCK_SIZE as u64).max(self.opened_len);
        if keep > 0 && self.io.file.metadata().is_ok_and(|m| m.len() > keep) {
            let _ = self.io.file.set_len(keep);
            let _ = self.io.file.sync_all();
        }
    }
}

impl Image {
    /// Opens an image and refuses it unless its metadata passes every keyless
    /// structural check.
    pub fn open(path: &Path, access: Access) -> Result<Image> {
        let (img, findings) = Image::open_unchecked(path, access)?;
        if let Some(f) = findings.into_iter().find(|f| f.severity == Severity::Error) {
            let at = f.at.to_string();
            let what = if at.is_empty() { f.message } else { format!("{at}: {}", f.message) };
            return Err(Error::corrupt(
                CorruptKind::Finding(f.code),
                format!("image metadata ({what})"),
                None,
            ));
        }
        Ok(img)
    }

    /// Opens an image whose superblock and metadata decode, returning the
    /// structural findings instead of refusing it. For the checker and repair.
    pub fn open_unchecked(path: &Path, access: Access) -> Result<(Image, Vec<Finding>)> {
        Image::open_at(path, access, None)
    }

    /// Like [`Image::open_unchecked`], at the state `sb` (a superblock read
    /// from the image) rather than the newest: for rolling back to the
    /// previous generation. The first commit writes generation `sb + 1`.
    pub fn open_superblock(path: &Path, access: Access, sb: &Superblock) -> Result<(Image, Vec<Finding>)> {
        Image::open_at(path, access, Some(sb))
    }

    fn open_at(path: &Path, access: Access, at: Option<&Superblock>) -> Result<(Image, Vec<Finding>)> {
        let (file, lock) = open_locked(path, access)?;
        let sb = match at {
            None => newest(&read_slots(&file))?,
            Some(want) => {
                let slots = read_slots(&file);
                match slots.iter().filter_map(|s| s.as_ref().ok()).find(|s| *s == want) {
                    Some(s) => s.clone(),
                    None => return Err(Error::Invalid("the image changed while it was being opened; try again".into())),
                }
            }
        };
        let flen = file.metadata().map_err(|e| Error::io("stat of the image", e))?.len();
        let need = sb.total_blocks.saturating_mul(BLOCK_SIZE as u64);
        if flen < need {
            return Err(Error::corrupt(
                CorruptKind::Truncated {
                    needed: need,
                    available: flen,
                },
                format!("image file {}", path.display()),
                Some(flen),
            ));
        }
        if access == Access::ReadWrite && sb.feature_ro_compat & !crate::format::superblock::RO_COMPAT_SUPPORTED != 0 {
            return Err(Error::Unsupported(format!(
                "read-only-compatible features {:#x}: this build may only read the image",
                sb.feature_ro_compat
            )));
        }
        let meta = load_metadata(&file, &sb).map_err(MetaLoadError::into_error)?;
        let geo = Geometry {
            total_blocks: sb.total_blocks,
            meta_start: sb.meta_start,
            meta_blocks: sb.meta_blocks,
        };
        let findings = check_metadata(&meta, geo);
        let mut used = meta.alloc_from_extents();
        used.push((sb.meta_start, sb.meta_blocks));
        let free = FreeMap::from_used(sb.total_blocks, sb.max_blocks, used);
        let img = Image {
            path: path.to_path_buf(),
            sb,
            meta,
            free,
            pending_free: Vec::new(),
            io: BlockIo::new(file),
            access,
            poisoned: false,
            committed_writes: 0,
            opened_len: flen,
            _lock: Some(lock),
            space: match at {
                None => Default::default(),
                Some(_) => crate::engine::space::Reclaim::at_older_generation(),
            },
        };
        Ok((img, findings))
    }

    /// Starts a new, empty image in `file` (which must be empty). Nothing is
    /// durable until [`Image::commit`]. `max_blocks` 0 = grow as needed.
    pub fn create(file: File, path: &Path, uuid: [u8; 16], max_blocks: u64) -> Result<Image> {
        let total = if max_blocks == 0 { 2 } else { max_blocks };
        if max_blocks != 0 && max_blocks < 4 {
            return Err(Error::Invalid(format!(
                "a fixed size of {max_blocks} blocks is too small (at least 4 blocks)"
            )));
        }
        let sb = Superblock {
            generation: 0,
            uuid,
            feature_compat: 0,
            feature_incompat: 0,
            feature_ro_compat: 0,
            total_blocks: total,
            max_blocks,
            meta_start: 0,
            meta_blocks: 0,
            meta_bytes: 0,
            meta_crc: 0,
            commit_time: 0,
        };
        Ok(Image {
            path: path.to_path_buf(),
            sb,
            meta: Metadata::empty(),
            free: FreeMap::from_used(total, max_blocks, Vec::new()),
            pending_free: Vec::new(),
            io: BlockIo::new(file),
            access: Access::ReadWrite,
            poisoned: false,
            committed_writes: 0,
            opened_len: 0,
            _lock: None,
            space: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the blocks the stored allocation map claims out of this
    /// session's allocations even when no extent uses them. For
    /// `fsck-crypt check --repair`: such blocks may hold the data of a damaged
    /// extent record, so the repair's own metadata must not land on them; its
    /// commit then drops them from the map, freeing them for later writes.
    /// Call right after opening, before changing `meta`.
    pub fn reserve_stored_alloc(&mut self) {
        let total = self.free.total;
        let mut used = self.meta.alloc_from_extents();
        used.extend_from_slice(&self.meta.alloc);
        used.push((self.sb.meta_start, self.sb.meta_blocks));
        // Clipped to the image: damaged records may name blocks past its end.
        let used = used
            .into_iter()
            .filter(|r| r.0 < total)
            .map(|(s, l)| (s, l.min(total - s)))
            .collect();
        self.free = FreeMap::from_used(total, self.free.max, used);
    }
    /// The last committed superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }
    pub fn file(&self) -> &File {
        &self.io.file
    }
    /// Free blocks, including room to grow when the size is fixed.
    pub fn free_blocks(&self) -> u64 {
        self.free.free_blocks()
    }
    /// Block writes issued so far (for fault-injection tests).
    pub fn writes(&self) -> u64 {
        self.io.writes
    }
    /// Makes the `n`th block write of this image (counting from its opening,
    /// as [`Image::writes`] does) and every later one fail with
    /// [`Error::InjectedFault`]; `None` disables fault injection.
    pub fn set_fail_after(&mut self, n: Option<u64>) {
        self.io.fail_at = n;
    }

    fn check_writable(&self) -> Result<()> {
        if self.access != Access::ReadWrite {
            return Err(Error::Invalid("image was opened read-only".into()));
        }
        if self.poisoned {
            return Err(Error::Invalid("an earlier write failed; reopen the image".into()));
        }
        Ok(())
    }

    fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Reads `count` blocks at `start`.
    pub fn read_blocks(&self, start: u64, count: u64) -> Result<Vec<u8>> {
        read_blocks_from(&self.io.file, start, count, "data blocks")
    }

    /// Reads `count` blocks at `start` into `buf` (resized to fit).
    pub fn read_blocks_into(&self, start: u64, count: u64, buf: &mut Vec<u8>) -> Result<()> {
        read_blocks_into(&self.io.file, start, count, "data blocks", buf)
    }

    /// Allocates blocks that are free in the committed state.
    pub fn alloc(&mut self, blocks: u64) -> Result<u64> {
        self.check_writable()?;
        self.free.alloc(blocks)
    }

    /// Writes whole blocks (combined with neighbouring writes).
    pub fn write_blocks(&mut self, start: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        let r = self.io.write(start, data);
        self.guard(r)
    }

    /// Encrypts `plain` (a multiple of the block size, zero-padded by the
    /// caller) as a new extent under `key` with `nonce`, writes it and records
    /// it with refcount 0 (the caller adds references). Returns the extent id.
    pub fn write_extent(&mut self, key: &MasterKey, nonce: Nonce, plain: &mut [u8]) -> Result<u64> {
        self.check_writable()?;
        let crc = encrypt_with_crc(&key.extent_key(&nonce), 0, plain);
        self.write_raw_extent_crc(ExtentContext::new(key.identifier(), nonce), plain, crc)
    }

    /// Adds an already-encrypted extent (backup restore, re-encryption copies).
    pub fn write_raw_extent(&mut self, ctx: ExtentContext, ciphertext: &[u8]) -> Result<u64> {
        self.write_raw_extent_crc(ctx, ciphertext, crc32c(ciphertext))
    }

    /// [`Image::write_raw_extent`] with the ciphertext's crc32c computed by the
    /// caller (while encrypting, on all cores).
    pub(crate) fn write_raw_extent_crc(&mut self, ctx: ExtentContext, ciphertext: &[u8], crc: u32) -> Result<u64> {
        self.check_writable()?;
        debug_assert!(!ciphertext.is_empty() && ciphertext.len().is_multiple_of(BLOCK_SIZE));
        let blocks = (ciphertext.len() / BLOCK_SIZE) as u32;
        let start = self.alloc(u64::from(blocks))?;
        self.write_blocks(start, ciphertext)?;
        Ok(self.record_extent(start, blocks, crc, ctx))
    }

    /// Records an extent whose blocks (allocated with [`Image::alloc`]) the
    /// caller writes itself, with refcount 0. Returns its new id.
    pub fn record_extent(&mut self, start: u64, blocks: u32, crc: u32, ctx: ExtentContext) -> u64 {
        let id = self.meta.next_extent_id;
        self.meta.next_extent_id += 1;
        self.meta.extents.insert(
            id,
            Extent {
                id,
                start,
                blocks,
                refcount: 0,
                crc,
                ctx,
            },
        );
        id
    }

    /// Reads and decrypts `count` blocks of extent `id` starting at block
    /// `offset` within it.
    pub fn read_extent_plain(&self, key: &MasterKey, id: u64, offset: u32, count: u32) -> Result<Vec<u8>> {
        let e = self.extent(id)?;
        let mut buf = self.read_blocks(e.start + u64::from(offset), u64::from(count))?;
        key.extent_key(&e.ctx.nonce).decrypt_units(u64::from(offset), BLOCK_SIZE, &mut buf);
        Ok(buf)
    }

    /// Reads and decrypts the blocks one file-map entry covers into `buf`
    /// (reused across calls), on all cores, with the key its extent names;
    /// [`Error::WrongKey`] when `keys` lacks it.
    pub fn read_mapped_plain(&self, keys: &Keyring, m: &MapEntry, buf: &mut Vec<u8>) -> Result<()> {
        let e = self.extent(m.extent)?;
        let key = keys.get(&e.ctx.key).ok_or_else(|| Error::WrongKey {
            given: keys.ids(),
            needed: vec![e.ctx.key],
        })?;
        self.read_blocks_into(e.start + u64::from(m.offset), u64::from(m.blocks), buf)?;
        decrypt_parallel(&key.extent_key(&e.ctx.nonce), u64::from(m.offset), buf);
        Ok(())
    }

    /// Allocates `n` blocks free in the committed state and lying entirely
    /// below block `limit`, never growing the image (for compaction).
    pub fn alloc_below(&mut self, n: u64, limit: u64) -> Result<Option<u64>> {
        self.check_writable()?;
        Ok(self.free.alloc_below(n, limit))
    }

    /// Points extent `id` at `new_start`, where the caller (compaction) has
    /// written a copy of its ciphertext into blocks from
    /// [`Image::alloc_below`]; its old blocks are freed when the operation
    /// commits. The ciphertext is unchanged: XTS tweaks count blocks within
    /// the extent (FORMAT.md §9.6).
    pub fn move_extent(&mut self, id: u64, new_start: u64) -> Result<()> {
        self.check_writable()?;
        let e = self
            .meta
            .extents
            .get_mut(&id)
            .ok_or(Error::corrupt(CorruptKind::Dangling { what: "extent", id }, "extent table", None))?;
        let old = (e.start, u64::from(e.blocks));
        e.start = new_start;
        self.pending_free.push(old);
        Ok(())
    }

    /// Drops the free space at the end of a growable image, so the next
    /// commit records (and cuts the file to) a shorter image. Returns the
    /// length in blocks now.
    pub fn trim_tail(&mut self) -> Result<u64> {
        self.check_writable()?;
        Ok(self.free.trim_tail())
    }

    /// Defers hole punching at commits while `on` (for `compact`); the first
    /// commit after it is turned off punches every free range.
    pub fn defer_punching(&mut self, on: bool) {
        self.space.set_deferred(on);
    }

    /// The last error met while giving space back after a commit (hole
    /// punching, truncation); such errors do not fail the commit.
    pub fn reclaim_error(&self) -> Option<&str> {
        self.space.last_error()
    }

    /// Looks up an extent.
    pub fn extent(&self, id: u64) -> Result<&Extent> {
        self.meta
            .extents
            .get(&id)
            .ok_or(Error::corrupt(CorruptKind::Dangling { what: "extent", id }, "extent table", None))
    }

    /// Drops one reference to an extent; at zero its blocks are freed when the
    /// operation commits.
    pub fn drop_ref(&mut self, id: u64) {
        if let Some(e) = self.meta.extents.get_mut(&id) {
            e.refcount = e.refcount.saturating_sub(1);
            if e.refcount == 0 {
                let (s, l) = (e.start, u64::from(e.blocks));
                self.meta.extents.remove(&id);
                self.pending_free.push((s, l));
            }
        }
    }

    /// Adds `n` references to extent `id` (file-map entries that now name
    /// it). Fails, changing nothing, if the extent does not exist or its
    /// refcount would overflow.
    pub fn add_refs(&mut self, id: u64, n: u32) -> Result<()> {
        let e = self
            .meta
            .extents
            .get_mut(&id)
            .ok_or(Error::corrupt(CorruptKind::Dangling { what: "extent", id }, "extent table", None))?;
        e.refcount = e.refcount.checked_add(n).ok_or_else(|| {
            Error::Invalid(format!(
                "extent {id} would be referenced more than {} times; delete a snapshot first",
                u32::MAX
            ))
        })?;
        Ok(())
    }

    /// Sets the crc32c recorded for extent `id` (a restore learns it only
    /// after writing the extent's last block).
    pub fn set_extent_crc(&mut self, id: u64, crc: u32) {
        if let Some(e) = self.meta.extents.get_mut(&id) {
            e.crc = crc;
        }
    }

    /// The working metadata.
    pub fn meta(&self) -> &Metadata {
        &self.meta
    }

    /// The snapshots, to add, remove or edit trees. Extent references made
    /// or dropped by an edit go through [`Image::add_refs`] and
    /// [`Image::drop_ref`]; the next open (and `check`) refuses a refcount
    /// that disagrees with the file maps.
    pub fn snapshots_mut(&mut self) -> &mut Vec<crate::format::snapshot::Snapshot> {
        &mut self.meta.snapshots
    }

    /// The whole metadata, mutable, for the checker's repair: it recomputes
    /// refcounts and the allocation map from the file maps wholesale.
    pub(crate) fn meta_for_repair(&mut self) -> &mut Metadata {
        &mut self.meta
    }

    /// The whole metadata, mutable, bypassing every invariant. Only for tests
    /// and fixture generators that damage images on purpose.
    #[doc(hidden)]
    pub fn meta_mut_unchecked(&mut self) -> &mut Metadata {
        &mut self.meta
    }

    /// Makes the working state durable with an atomic superblock flip.
    /// `time` is recorded as the commit time.
    pub fn commit(&mut self, time: i64) -> Result<()> {
        self.check_writable()?;
        let r = self.commit_inner(time);
        self.guard(r)
    }

    fn commit_inner(&mut self, time: i64) -> Result<()> {
        self.io.sync()?;
        self.meta.alloc = self.meta.alloc_from_extents();
        let stream = self.meta.to_bytes();
        let nblocks = metablock::blocks_for(stream.len());
        let start = self.free.alloc(nblocks)?;
        // Decided before `after_commit`, which consumes a rollback's skip.
        let settle = !self.pending_free.is_empty() && self.space.may_settle();
        let sb = self.flip(&stream, start, time)?;
        let prev = std::mem::replace(&mut self.sb, sb);
        self.committed_writes = self.io.writes;
        self.space.after_commit(&self.io.file, &self.free);
        // What this commit freed: the old metadata region and the blocks of
        // extents the operation released. The previous generation (the other
        // slot) still uses them.
        let mut freed = std::mem::take(&mut self.pending_free);
        if prev.meta_blocks != 0 {
            freed.push((prev.meta_start, prev.meta_blocks));
        }
        if settle {
            if let Some(first) = self.settle(&stream, time)? {
                // Neither committed generation uses `freed` any more: give it
                // back now. The first commit's region is the older slot's.
                for &(s, l) in &freed {
                    self.free.release(s, l);
                }
                self.space.punch_now(&self.io.file, &freed);
                self.free.release(first.meta_start, first.meta_blocks);
                self.space.note_released(first.meta_start, first.meta_blocks);
                return Ok(());
            }
        }
        // Reusable from now on, punched at the next commit.
        for (s, l) in freed {
            self.free.release(s, l);
            self.space.note_released(s, l);
        }
        Ok(())
    }

    /// Writes `stream` as generation `sb + 1` into the metadata region at
    /// `start` (allocated by the caller) and flips the superblock into the
    /// other slot, with an fsync after each step. Returns the new superblock;
    /// the caller makes it current.
    fn flip(&mut self, stream: &[u8], start: u64, time: i64) -> Result<Superblock> {
        let generation = self.sb.generation + 1;
        let nblocks = metablock::blocks_for(stream.len());
        let region = metablock::encode(stream, start, generation);
        self.io.write_now(start, &region)?;
        let flen = self.free.total * BLOCK_SIZE as u64;
        if self.io.file.metadata().map_err(|e| Error::io("stat of the image", e))?.len() < flen {
            self.io.file.set_len(flen).map_err(|e| Error::io("extending the image", e))?;
        }
        self.io.sync()?;
        let sb = Superblock {
            generation,
            total_blocks: self.free.total,
            meta_start: start,
            meta_blocks: nblocks,
            meta_bytes: stream.len() as u64,
            meta_crc: crc32c(stream),
            commit_time: time,
            ..self.sb.clone()
        };
        self.io.write_now(sb.slot(), &sb.to_bytes())?;
        self.io.sync()?;
        Ok(sb)
    }

    /// The settling commit (FORMAT.md §8): right after a commit that freed
    /// extents, commits the same metadata again as the next generation into
    /// the other slot, so the generation before the change, which still used
    /// the freed blocks, is no longer a committed state and they can be
    /// punched at once. Its region comes from blocks free in both slots'
    /// generations (nothing freed by the first commit is released yet), so a
    /// crash at any point leaves the first commit intact and newest.
    /// Returns the first commit's superblock, or `None` (nothing written)
    /// when there is no room for a second region.
    fn settle(&mut self, stream: &[u8], time: i64) -> Result<Option<Superblock>> {
        let start = match self.free.alloc(metablock::blocks_for(stream.len())) {
            Ok(s) => s,
            Err(Error::NoSpace { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let sb = self.flip(stream, start, time)?;
        self.committed_writes = self.io.writes;
        Ok(Some(std::mem::replace(&mut self.sb, sb)))
    }

    /// The key ids a snapshot needs: its policy, its directory and symlink
    /// contexts, and every extent its files reference. Sorted, unique.
    pub fn keys_needed(&self, snap: &crate::format::snapshot::Snapshot) -> Vec<KeyId> {
        use crate::format::inode::Body;
        let mut ids = std::collections::BTreeSet::new();
        ids.insert(snap.policy);
        for ino in snap.inodes.values() {
            match &ino.body {
                Body::Dir { ctx, .. } | Body::Symlink { ctx, .. } => {
                    ids.insert(ctx.key);
                }
                Body::File { map } => {
                    for m in map {
                        if let Some(e) = self.meta.extents.get(&m.extent) {
                            ids.insert(e.ctx.key);
                        }
                    }
                }
                Body::Special => {}
            }
        }
        ids.into_iter().collect()
    }

    /// Bytes of the extent blocks a snapshot's files map, each distinct
    /// (extent, offset, length) once: what a full backup of it stores
    /// (docs/BACKUP.md), the total of that backup's progress.
    pub fn mapped_bytes(&self, snap: &crate::format::snapshot::Snapshot) -> u64 {
        use crate::format::inode::Body;
        let mut seen = std::collections::HashSet::new();
        let mut total = 0u64;
        for ino in snap.inodes.values() {
            if let Body::File { map } = &ino.body {
                for m in map.iter().filter(|m| seen.insert((m.extent, m.offset, m.blocks))) {
                    total = total.saturating_add(u64::from(m.blocks) * BLOCK_SIZE as u64);
                }
            }
        }
        total
    }

    /// Finds a snapshot by name; `None` picks the only one or `main`.
    pub fn snapshot(&self, name: Option<&str>) -> Result<&crate::format::snapshot::Snapshot> {
        let names = || self.meta.snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        match name {
            Some(n) => Ok(&self.meta.snapshots[self.meta.snapshot_index(n)?]),
            None if self.meta.snapshots.len() == 1 => Ok(&self.meta.snapshots[0]),
            None => self.meta.snapshot("main").ok_or_else(|| {
                Error::Invalid(format!(
                    "the image has several snapshots and none is named main; name one ({})",
                    names()
                ))
            }),
        }
    }
}

/// Encrypts whole data units in place on all cores (unit k of `buf` is data
/// unit `first_unit + k`) and returns the crc32c of the ciphertext, computed
/// piece by piece while it is in cache.
pub fn encrypt_with_crc(key: &XtsKey, first_unit: u64, buf: &mut [u8]) -> u32 {
    combine_crcs(split_units(buf, first_unit, |first, part| {
        let mut crc = 0;
        pieces(first, part, |unit, piece| {
            key.encrypt_units(unit, BLOCK_SIZE, piece);
            crc = crc32c::crc32c_append(crc, piece);
        });
        crc
    }))
}

/// Decrypts whole data units in place on all cores.
pub fn decrypt_parallel(key: &XtsKey, first_unit: u64, buf: &mut [u8]) {
    split_units(buf, first_unit, |first, part| key.decrypt_units(first, BLOCK_SIZE, part));
}
