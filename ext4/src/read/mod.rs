//! A read-only ext4 reader for fscrypt-encrypted images the kernel wrote
//! (docs/EXT4.md "Reader").
//!
//! [`Fs::open`] validates the superblock (Documentation/filesystems/ext4/
//! super.rst) and every group descriptor (group_descr.rst); [`Fs::inode`]
//! reads and checksums an inode; [`Fs::extents`] walks an extent tree of any
//! depth (ifork.rst); [`Fs::dir`] reads a linear or htree directory
//! (directory.rst), validating the dx blocks; [`walk`] visits the whole tree.
//!
//! Hostile bytes: every count is capped by what the image size allows, every
//! block a file or directory maps is claimed in a bitmap (a block claimed
//! twice is a cross-link and an error), directories are visited once, so the
//! work is linear in the image size and nothing loops.

mod dir;
mod error;
mod tree;
mod walk;

use std::cell::RefCell;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub use dir::{DirListing, HashInfo};
pub use error::{ReadError, ReadResult, Refusal};
pub use tree::{FileMap, MappedExtent};
pub use walk::{walk, Entry, Listed, Visit};

use crate::csum::{fs_seed, inode_seed};
use crate::group_desc::GroupDesc;
use crate::inode::Inode;
use crate::superblock::{self as sbm, Superblock, SB_OFFSET, SB_SIZE};
use crate::xattr::{self, Xattr, INDEX_ENCRYPTION};
use crate::{le16, le32, BLOCK_SIZE, BLOCK_SIZE_U64};
use error::at;

/// Incompat bits named in refusals (ext4.h `EXT4_FEATURE_INCOMPAT_*`).
const INCOMPAT_NAMES: [(u32, &str); 10] = [
    (0x1, "compression"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x100, "mmp"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x20000, "casefold"),
];
/// `EXT4_FEATURE_INCOMPAT_INLINE_DATA`.
pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
/// `EXT4_FEATURE_INCOMPAT_CASEFOLD`.
pub const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// `s_state` bit `EXT4_ERROR_FS`.
const STATE_ERROR: u16 = 2;
/// `EXT4_CASEFOLD_FL`.
pub const CASEFOLD_FL: u32 = 0x4000_0000;

/// An open ext4 image (file or block device), read-only.
pub struct Fs {
    file: File,
    sb: Superblock,
    seed: u32,
    groups: Vec<Group>,
    /// Bytes of the image (file length or device size).
    len: u64,
    /// Blocks already mapped by some inode or extent-tree node (a second
    /// claim is a cross-link).
    claimed: RefCell<Vec<u8>>,
    /// Bytes read so far (metadata and data), for reporting.
    bytes_read: std::cell::Cell<u64>,
}

/// The descriptor fields the reader uses.
#[derive(Clone, Copy, Debug)]
struct Group {
    inode_table: u64,
}

impl Fs {
    /// Opens `path` read-only and validates the superblock and descriptors.
    pub fn open(path: &Path) -> ReadResult<Fs> {
        let mut file = File::open(path).map_err(|e| ReadError::Io {
            context: format!("opening {}", path.display()),
            source: e,
        })?;
        let len = file.seek(SeekFrom::End(0)).map_err(|e| ReadError::Io {
            context: format!("sizing {}", path.display()),
            source: e,
        })?;
        Fs::from_file(file, len)
    }

    /// Whether the bytes at offset 1024 carry the ext4 magic (format detection).
    pub fn detect(path: &Path) -> bool {
        let Ok(f) = File::open(path) else { return false };
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, SB_OFFSET + sbm::S_MAGIC as u64).is_ok() && u16::from_le_bytes(b) == sbm::MAGIC
    }

    /// Validates an already-open image of `len` bytes.
    pub fn from_file(file: File, len: u64) -> ReadResult<Fs> {
        let mut raw = [0u8; SB_SIZE];
        if len < SB_OFFSET + SB_SIZE as u64 {
            return Err(ReadError::corrupt(
                "superblock",
                "byte offset 1024",
                format!("the image is only {len} bytes"),
            ));
        }
        file.read_exact_at(&mut raw, SB_OFFSET).map_err(|e| ReadError::Io {
            context: "reading the superblock".into(),
            source: e,
        })?;
        if le16(&raw, sbm::S_MAGIC) != sbm::MAGIC {
            return Err(ReadError::corrupt(
                "superblock",
                "byte offset 1024",
                "no ext4 magic 0xef53 at offset 0x38",
            ));
        }
        refuse_features(&raw)?;
        let sb = Superblock::from_bytes(&raw).map_err(|e| at(e, "superblock (byte offset 1024)"))?;
        if sb.feature_incompat & sbm::INCOMPAT_RECOVER != 0 {
            return Err(ReadError::NeedsRecovery);
        }
        if sb.state & sbm::STATE_VALID == 0 || sb.state & STATE_ERROR != 0 {
            return Err(ReadError::NotClean { state: sb.state });
        }
        if !sb.has_metadata_csum() {
            return Err(ReadError::unsupported(
                Refusal::NoMetadataCsum,
                "superblock",
                "the filesystem has no metadata_csum feature (only metadata_csum ext4 is read)",
            ));
        }
        if sb.feature_incompat & sbm::INCOMPAT_EXTENTS == 0 {
            return Err(ReadError::unsupported(Refusal::Feature, "superblock", "the extent feature is off"));
        }
        let blocks = sb.blocks_count;
        let need = blocks.saturating_mul(BLOCK_SIZE_U64);
        if need > len {
            return Err(ReadError::corrupt(
                "superblock",
                "s_blocks_count",
                format!("{blocks} blocks of 4096 bytes need {need} bytes, the image has {len} (truncated?)"),
            ));
        }
        if sb.first_data_block != 0 {
            return Err(ReadError::corrupt(
                "superblock",
                "s_first_data_block",
                format!("{} with 4096-byte blocks (must be 0)", sb.first_data_block),
            ));
        }
        let seed = fs_seed(&sb.uuid);
        let ngroups = sb.group_count();
        let dsize = sb.desc_size();
        let table_bytes = ngroups.saturating_mul(dsize as u64);
        // The table starts at block 1; it must lie inside the image.
        if BLOCK_SIZE_U64.saturating_add(table_bytes) > need {
            return Err(ReadError::corrupt(
                "group descriptor table",
                "block 1",
                "runs past the end of the image",
            ));
        }
        let mut table = vec![0u8; table_bytes as usize];
        file.read_exact_at(&mut table, BLOCK_SIZE_U64).map_err(|e| ReadError::Io {
            context: "reading the group descriptors".into(),
            source: e,
        })?;
        let mut groups = Vec::with_capacity(ngroups as usize);
        let itable_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(BLOCK_SIZE_U64);
        for g in 0..ngroups {
            let d = &table[g as usize * dsize..(g as usize + 1) * dsize];
            let gd = if dsize >= crate::DESC_SIZE {
                GroupDesc::from_bytes(d, seed, g as u32).map_err(|e| at(e, format!("group {g}")))?
            } else {
                return Err(ReadError::corrupt(
                    "group descriptor",
                    format!("group {g}"),
                    format!("descriptor size {dsize}"),
                ));
            };
            if gd.inode_table == 0 || gd.inode_table.saturating_add(itable_blocks) > blocks {
                return Err(ReadError::corrupt(
                    "group descriptor",
                    format!("group {g}"),
                    format!(
                        "inode table at block {} ({itable_blocks} blocks) outside the {blocks}-block filesystem",
                        gd.inode_table
                    ),
                ));
            }
            groups.push(Group {
                inode_table: gd.inode_table,
            });
        }
        let claimed = RefCell::new(vec![0u8; (blocks as usize).div_ceil(8)]);
        Ok(Fs {
            file,
            sb,
            seed,
            groups,
            len,
            claimed,
            bytes_read: std::cell::Cell::new(SB_SIZE as u64 + table_bytes),
        })
    }

    /// The validated superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The metadata_csum seed (crc32c of the uuid).
    pub fn fs_seed(&self) -> u32 {
        self.seed
    }

    /// Image size in bytes.
    pub fn image_len(&self) -> u64 {
        self.len
    }

    /// Bytes read from the image so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.get()
    }

    /// Reads `buf.len()` bytes (a multiple of the block size) starting at
    /// block `blk`, which must lie inside the filesystem.
    pub fn read_blocks(&self, blk: u64, buf: &mut [u8]) -> ReadResult<()> {
        let n = (buf.len() / BLOCK_SIZE) as u64;
        if blk.checked_add(n).is_none_or(|end| end > self.sb.blocks_count) {
            return Err(ReadError::corrupt(
                "block reference",
                format!("block {blk}"),
                format!("{n} blocks from {blk} run past the {}-block filesystem", self.sb.blocks_count),
            ));
        }
        self.file.read_exact_at(buf, blk * BLOCK_SIZE_U64).map_err(|e| ReadError::Io {
            context: format!("reading block {blk}"),
            source: e,
        })?;
        self.bytes_read.set(self.bytes_read.get() + buf.len() as u64);
        Ok(())
    }

    /// Reads one block.
    pub fn block(&self, blk: u64) -> ReadResult<Vec<u8>> {
        let mut b = vec![0u8; BLOCK_SIZE];
        self.read_blocks(blk, &mut b)?;
        Ok(b)
    }

    /// Forgets every claim, so the same structures can be read again (a
    /// second pass, or a lookup after a walk).
    pub fn reset_claims(&self) {
        self.claimed.borrow_mut().fill(0);
    }

    /// Claims `n` blocks from `start` for `owner`: an error if any of them is
    /// outside the filesystem or already claimed (a cross-link).
    pub(crate) fn claim(&self, start: u64, n: u64, owner: &str) -> ReadResult<()> {
        let end = start.checked_add(n).filter(|&e| e <= self.sb.blocks_count).ok_or_else(|| {
            ReadError::corrupt(
                "block reference",
                owner.to_string(),
                format!("blocks {start}+{n} outside the {}-block filesystem", self.sb.blocks_count),
            )
        })?;
        if start == 0 {
            return Err(ReadError::corrupt(
                "block reference",
                owner.to_string(),
                "refers to block 0 (the superblock)",
            ));
        }
        let mut c = self.claimed.borrow_mut();
        for b in start..end {
            let (i, bit) = ((b / 8) as usize, 1u8 << (b % 8));
            let Some(x) = c.get_mut(i) else { break };
            if *x & bit != 0 {
                return Err(ReadError::corrupt(
                    "block reference",
                    owner.to_string(),
                    format!("block {b} is already used by another inode or tree node (cross-linked)"),
                ));
            }
            *x |= bit;
        }
        Ok(())
    }

    /// Reads and checksums inode `ino`.
    pub fn inode(&self, ino: u32) -> ReadResult<Inode> {
        let ipg = self.sb.inodes_per_group;
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(ReadError::corrupt(
                "inode reference",
                format!("inode {ino}"),
                format!("outside 1..={}", self.sb.inodes_count),
            ));
        }
        let idx = ino - 1;
        let g = (idx / ipg) as usize;
        let Some(group) = self.groups.get(g) else {
            return Err(ReadError::corrupt("inode reference", format!("inode {ino}"), "no such group"));
        };
        let isz = usize::from(self.sb.inode_size);
        let off = group.inode_table * BLOCK_SIZE_U64 + u64::from(idx % ipg) * isz as u64;
        let mut b = vec![0u8; isz];
        self.file.read_exact_at(&mut b, off).map_err(|e| ReadError::Io {
            context: format!("reading inode {ino}"),
            source: e,
        })?;
        self.bytes_read.set(self.bytes_read.get() + isz as u64);
        Inode::from_bytes(&b, ino, self.seed, isz).map_err(|e| at(e, format!("inode {ino} (byte offset {off})")))
    }

    /// The inode's checksum seed (directory and extent block checksums).
    pub fn inode_seed(&self, ino: u32, inode: &Inode) -> u32 {
        inode_seed(self.seed, ino, inode.generation)
    }

    /// All extended attributes of an inode: in-inode, then the xattr block.
    pub fn xattrs(&self, ino: u32, inode: &Inode) -> ReadResult<Vec<Xattr>> {
        let mut v = xattr::parse_ibody(&inode.xattr_area).map_err(|e| at(e, format!("inode {ino} in-inode xattrs")))?;
        if inode.file_acl != 0 {
            let b = self.block(inode.file_acl).map_err(|e| match e {
                ReadError::Corrupt { what, detail, .. } => ReadError::Corrupt {
                    what,
                    at: format!("inode {ino} xattr block"),
                    detail,
                },
                o => o,
            })?;
            v.extend(
                xattr::parse_block(&b, inode.file_acl, self.seed)
                    .map_err(|e| at(e, format!("inode {ino} xattr block {}", inode.file_acl)))?,
            );
        }
        Ok(v)
    }

    /// The raw fscrypt context xattr (index 9, name "c") when present.
    pub fn context(&self, ino: u32, inode: &Inode) -> ReadResult<Option<Vec<u8>>> {
        Ok(self
            .xattrs(ino, inode)?
            .into_iter()
            .find(|x| x.index == INDEX_ENCRYPTION && x.name == xattr::ENCRYPTION_CONTEXT_NAME)
            .map(|x| x.value))
    }

    /// The device number of a character or block special inode as
    /// (major, minor): the old 16-bit encoding in `i_block[0]` or the new
    /// one in `i_block[1]` (fs/ext4/inode.c `ext4_do_update_inode`).
    pub fn device(inode: &Inode) -> (u32, u32) {
        let old = le32(&inode.block, 0);
        if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let d = le32(&inode.block, 4);
            ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00))
        }
    }
}

/// Refuses incompat features before the structure parser sees them, so the
/// error names the feature instead of calling the image corrupt.
fn refuse_features(raw: &[u8]) -> ReadResult<()> {
    let log = le32(raw, sbm::S_LOG_BLOCK_SIZE);
    if log != 2 {
        return Err(ReadError::unsupported(
            Refusal::BlockSize,
            "superblock",
            format!(
                "block size {} (s_log_block_size {log}); only 4096-byte blocks are read",
                1024u64.checked_shl(log).unwrap_or(0)
            ),
        ));
    }
    let inc = le32(raw, sbm::S_FEATURE_INCOMPAT);
    if inc & INCOMPAT_CASEFOLD != 0 {
        return Err(ReadError::unsupported(
            Refusal::Casefold,
            "superblock",
            "the casefold feature is on; casefolded encrypted directories are not supported",
        ));
    }
    for (bit, name) in INCOMPAT_NAMES {
        if inc & bit != 0 {
            let r = if bit == INCOMPAT_INLINE_DATA {
                Refusal::InlineData
            } else {
                Refusal::Feature
            };
            return Err(ReadError::unsupported(
                r,
                "superblock",
                format!("incompat feature {name} is not supported"),
            ));
        }
    }
    let unknown = inc & !sbm::INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(ReadError::unsupported(
            Refusal::Feature,
            "superblock",
            format!("unknown incompat features {unknown:#x}"),
        ));
    }
    Ok(())
}
