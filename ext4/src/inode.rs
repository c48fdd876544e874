//! Inodes (Documentation/filesystems/ext4/inodes.rst, ext4.h `struct
//! ext4_inode`): 256 bytes, the first 128 the classic inode, then
//! `i_extra_isize` (32) bytes of extra fields, then in-inode xattrs.
//!
//! Timestamps: the 32-bit seconds field holds the low bits of a signed
//! 64-bit time; the `*_extra` field holds `nsec << 2 | epoch` where `epoch`
//! (2 bits) extends the seconds (inodes.rst "Inode Timestamps").
//!
//! Checksum (checksums.rst, fs/ext4/inode.c `ext4_inode_csum`): crc32c with
//! the inode's seed over the whole inode with `l_i_checksum_lo` and
//! `i_checksum_hi` taken as zero; low 16 bits at 0x7C, high 16 at 0x82.

use crate::csum::{crc32c_raw, inode_seed};
use crate::{le16, le32, put16, put32, Error, Result};

pub const I_MODE: usize = 0x00;
pub const I_UID: usize = 0x02;
pub const I_SIZE_LO: usize = 0x04;
pub const I_ATIME: usize = 0x08;
pub const I_CTIME: usize = 0x0C;
pub const I_MTIME: usize = 0x10;
pub const I_DTIME: usize = 0x14;
pub const I_GID: usize = 0x18;
pub const I_LINKS_COUNT: usize = 0x1A;
pub const I_BLOCKS_LO: usize = 0x1C;
pub const I_FLAGS: usize = 0x20;
pub const I_BLOCK: usize = 0x28;
pub const I_GENERATION: usize = 0x64;
pub const I_FILE_ACL_LO: usize = 0x68;
pub const I_SIZE_HIGH: usize = 0x6C;
pub const L_I_BLOCKS_HIGH: usize = 0x74;
pub const L_I_FILE_ACL_HIGH: usize = 0x76;
pub const L_I_UID_HIGH: usize = 0x78;
pub const L_I_GID_HIGH: usize = 0x7A;
pub const L_I_CHECKSUM_LO: usize = 0x7C;
pub const I_EXTRA_ISIZE: usize = 0x80;
pub const I_CHECKSUM_HI: usize = 0x82;
pub const I_CTIME_EXTRA: usize = 0x84;
pub const I_MTIME_EXTRA: usize = 0x88;
pub const I_ATIME_EXTRA: usize = 0x8C;
pub const I_CRTIME: usize = 0x90;
pub const I_CRTIME_EXTRA: usize = 0x94;

/// Size of the classic part (`EXT4_GOOD_OLD_INODE_SIZE`).
pub const GOOD_OLD_SIZE: usize = 128;
/// The `i_extra_isize` written: every extra field through `i_projid`.
pub const EXTRA_ISIZE: u16 = 32;
/// Size of `i_block` (`EXT4_N_BLOCKS * 4`): also the fast-symlink limit.
pub const I_BLOCK_SIZE: usize = 60;

/// `i_flags` bits (ext4.h `EXT4_*_FL`).
pub const ENCRYPT_FL: u32 = 0x800;
pub const INDEX_FL: u32 = 0x1000;
pub const HUGE_FILE_FL: u32 = 0x40000;
pub const EXTENTS_FL: u32 = 0x80000;
pub const INLINE_DATA_FL: u32 = 0x1000_0000;

/// File type bits of `i_mode`.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;

/// A timestamp: signed seconds and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    /// (`i_*time`, `i_*time_extra`): low 32 bits of seconds; `nsec << 2 | epoch`.
    pub fn encode(self) -> (u32, u32) {
        let lo = self.sec as i32;
        let epoch = ((self.sec - i64::from(lo)) >> 32) as u32 & 3;
        (lo as u32, (self.nsec.min(999_999_999) << 2) | epoch)
    }

    /// Inverse of [`Time::encode`].
    pub fn decode(lo: u32, extra: u32) -> Time {
        Time {
            sec: i64::from(lo as i32) + (i64::from(extra & 3) << 32),
            nsec: extra >> 2,
        }
    }
}

/// One inode as this crate models it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub ctime: Time,
    pub mtime: Time,
    pub crtime: Time,
    pub dtime: u32,
    pub links_count: u16,
    /// `i_blocks` in 512-byte sectors (HUGE_FILE_FL not used).
    pub blocks: u64,
    pub flags: u32,
    /// `i_block`: the extent tree root, a fast symlink's target, or a device number.
    pub block: [u8; I_BLOCK_SIZE],
    pub generation: u32,
    pub file_acl: u64,
    pub extra_isize: u16,
    /// The in-inode xattr area: bytes `128 + extra_isize .. inode_size`.
    pub xattr_area: Vec<u8>,
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime: Time::default(),
            ctime: Time::default(),
            mtime: Time::default(),
            crtime: Time::default(),
            dtime: 0,
            links_count: 0,
            blocks: 0,
            flags: 0,
            block: [0; I_BLOCK_SIZE],
            generation: 0,
            file_acl: 0,
            extra_isize: 0,
            xattr_area: Vec::new(),
        }
    }
}

impl Inode {
    /// File type bits.
    pub fn file_type(&self) -> u16 {
        self.mode & S_IFMT
    }

    /// Encodes an `inode_size`-byte inode with its checksum for inode `ino`.
    /// `xattr_area` is truncated or zero-padded to fit.
    pub fn to_bytes(&self, ino: u32, fs_seed: u32, inode_size: usize) -> Vec<u8> {
        let mut b = vec![0u8; inode_size];
        put16(&mut b, I_MODE, self.mode);
        put16(&mut b, I_UID, self.uid as u16);
        put32(&mut b, I_SIZE_LO, self.size as u32);
        let (a, ax) = self.atime.encode();
        let (c, cx) = self.ctime.encode();
        let (m, mx) = self.mtime.encode();
        let (cr, crx) = self.crtime.encode();
        put32(&mut b, I_ATIME, a);
        put32(&mut b, I_CTIME, c);
        put32(&mut b, I_MTIME, m);
        put32(&mut b, I_DTIME, self.dtime);
        put16(&mut b, I_GID, self.gid as u16);
        put16(&mut b, I_LINKS_COUNT, self.links_count);
        put32(&mut b, I_BLOCKS_LO, self.blocks as u32);
        put32(&mut b, I_FLAGS, self.flags);
        b[I_BLOCK..I_BLOCK + I_BLOCK_SIZE].copy_from_slice(&self.block);
        put32(&mut b, I_GENERATION, self.generation);
        put32(&mut b, I_FILE_ACL_LO, self.file_acl as u32);
        put32(&mut b, I_SIZE_HIGH, (self.size >> 32) as u32);
        put16(&mut b, L_I_BLOCKS_HIGH, (self.blocks >> 32) as u16);
        put16(&mut b, L_I_FILE_ACL_HIGH, (self.file_acl >> 32) as u16);
        put16(&mut b, L_I_UID_HIGH, (self.uid >> 16) as u16);
        put16(&mut b, L_I_GID_HIGH, (self.gid >> 16) as u16);
        if inode_size > GOOD_OLD_SIZE {
            put16(&mut b, I_EXTRA_ISIZE, self.extra_isize);
            if self.extra_isize >= 24 {
                put32(&mut b, I_CTIME_EXTRA, cx);
                put32(&mut b, I_MTIME_EXTRA, mx);
                put32(&mut b, I_ATIME_EXTRA, ax);
                put32(&mut b, I_CRTIME, cr);
                put32(&mut b, I_CRTIME_EXTRA, crx);
            }
            let start = (GOOD_OLD_SIZE + usize::from(self.extra_isize)).min(inode_size);
            let n = self.xattr_area.len().min(inode_size.saturating_sub(start));
            b[start..start + n].copy_from_slice(&self.xattr_area[..n]);
        }
        let csum = inode_csum(&b, ino, self.generation, fs_seed);
        put16(&mut b, L_I_CHECKSUM_LO, csum as u16);
        if inode_size > GOOD_OLD_SIZE && self.extra_isize >= 4 {
            put16(&mut b, I_CHECKSUM_HI, (csum >> 16) as u16);
        }
        b
    }

    /// Decodes inode `ino` from `b` (`inode_size` bytes) and verifies its
    /// checksum (an all-zero inode, never used, is accepted as e2fsprogs does).
    pub fn from_bytes(b: &[u8], ino: u32, fs_seed: u32, inode_size: usize) -> Result<Inode> {
        let bad = |d: String| Error::corrupt("inode", format!("inode {ino}: {d}"));
        if inode_size < GOOD_OLD_SIZE || b.len() < inode_size {
            return Err(bad(format!("{} bytes, inode size {inode_size}", b.len())));
        }
        let b = &b[..inode_size];
        let extra_isize = if inode_size > GOOD_OLD_SIZE { le16(b, I_EXTRA_ISIZE) } else { 0 };
        if GOOD_OLD_SIZE + usize::from(extra_isize) > inode_size || extra_isize % 4 != 0 {
            return Err(bad(format!("i_extra_isize {extra_isize}")));
        }
        let has_extra = extra_isize >= 24;
        let ex = |off| if has_extra { le32(b, off) } else { 0 };
        let generation = le32(b, I_GENERATION);
        if b.iter().any(|&x| x != 0) {
            let have = u32::from(le16(b, L_I_CHECKSUM_LO))
                | if extra_isize >= 4 {
                    u32::from(le16(b, I_CHECKSUM_HI)) << 16
                } else {
                    0
                };
            let mut want = inode_csum(b, ino, generation, fs_seed);
            if extra_isize < 4 {
                want &= 0xFFFF;
            }
            if have != want {
                return Err(bad(format!("checksum {have:#010x}, computed {want:#010x}")));
            }
        }
        let mut block = [0u8; I_BLOCK_SIZE];
        block.copy_from_slice(&b[I_BLOCK..I_BLOCK + I_BLOCK_SIZE]);
        Ok(Inode {
            mode: le16(b, I_MODE),
            uid: u32::from(le16(b, I_UID)) | u32::from(le16(b, L_I_UID_HIGH)) << 16,
            gid: u32::from(le16(b, I_GID)) | u32::from(le16(b, L_I_GID_HIGH)) << 16,
            size: u64::from(le32(b, I_SIZE_LO)) | u64::from(le32(b, I_SIZE_HIGH)) << 32,
            atime: Time::decode(le32(b, I_ATIME), ex(I_ATIME_EXTRA)),
            ctime: Time::decode(le32(b, I_CTIME), ex(I_CTIME_EXTRA)),
            mtime: Time::decode(le32(b, I_MTIME), ex(I_MTIME_EXTRA)),
            crtime: Time::decode(ex(I_CRTIME), ex(I_CRTIME_EXTRA)),
            dtime: le32(b, I_DTIME),
            links_count: le16(b, I_LINKS_COUNT),
            blocks: u64::from(le32(b, I_BLOCKS_LO)) | u64::from(le16(b, L_I_BLOCKS_HIGH)) << 32,
            flags: le32(b, I_FLAGS),
            block,
            generation,
            file_acl: u64::from(le32(b, I_FILE_ACL_LO)) | u64::from(le16(b, L_I_FILE_ACL_HIGH)) << 32,
            extra_isize,
            xattr_area: b[GOOD_OLD_SIZE + usize::from(extra_isize)..].to_vec(),
        })
    }
}

/// crc32c(inode seed, inode with both checksum fields zeroed).
fn inode_csum(b: &[u8], ino: u32, generation: u32, fs_seed: u32) -> u32 {
    let seed = inode_seed(fs_seed, ino, generation);
    let mut c = crc32c_raw(seed, &b[..L_I_CHECKSUM_LO]);
    c = crc32c_raw(c, &[0, 0]);
    if b.len() > GOOD_OLD_SIZE {
        c = crc32c_raw(c, &b[L_I_CHECKSUM_LO + 2..I_CHECKSUM_HI]);
        let extra = usize::from(le16(b, I_EXTRA_ISIZE));
        if extra >= 4 {
            c = crc32c_raw(c, &[0, 0]);
            c = crc32c_raw(c, &b[I_CHECKSUM_HI + 2..]);
        } else {
            c = crc32c_raw(c, &b[I_CHECKSUM_HI..]);
        }
    } else {
        c = crc32c_raw(c, &b[L_I_CHECKSUM_LO + 2..]);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for (sec, nsec) in [(0i64, 0u32), (-1, 5), (1_700_000_000, 999_999_999), (-(1 << 31), 1), (1 << 33, 7)] {
            let t = Time { sec, nsec };
            let (lo, ex) = t.encode();
            assert_eq!(Time::decode(lo, ex), t, "{sec}");
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let i = Inode {
            mode: S_IFREG | 0o4755,
            uid: 70000,
            gid: 5,
            size: 5 << 32,
            mtime: Time {
                sec: 1_700_000_000,
                nsec: 123,
            },
            links_count: 2,
            blocks: 80,
            flags: EXTENTS_FL | ENCRYPT_FL,
            generation: 9,
            extra_isize: EXTRA_ISIZE,
            xattr_area: vec![0; 256 - 160],
            ..Default::default()
        };
        let b = i.to_bytes(12, 0xabc, 256);
        assert_eq!(Inode::from_bytes(&b, 12, 0xabc, 256).unwrap(), i);
        assert!(Inode::from_bytes(&b, 13, 0xabc, 256).is_err());
        let mut bad = b.clone();
        bad[0x90] ^= 1;
        assert!(Inode::from_bytes(&bad, 12, 0xabc, 256).is_err());
        assert!(Inode::from_bytes(&b[..100], 12, 0xabc, 256).is_err());
        let mut huge = b.clone();
        put16(&mut huge, I_EXTRA_ISIZE, 0xFFFF);
        assert!(Inode::from_bytes(&huge, 12, 0xabc, 256).is_err());
        assert!(Inode::from_bytes(&[0u8; 256], 12, 0xabc, 256).is_ok());
    }
}
