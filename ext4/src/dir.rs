//! Linear directory blocks (Documentation/filesystems/ext4/directory.rst,
//! ext4.h `struct ext4_dir_entry_2`, `struct ext4_dir_entry_tail`).
//!
//! An entry is {inode u32, rec_len u16, name_len u8, file_type u8, name};
//! `rec_len` is a multiple of 4 and the last entry of a block stretches to
//! the tail. With metadata_csum every leaf block ends with a 12-byte fake
//! entry {0, 12, 0, 0xDE, checksum}, checksum = crc32c(inode seed, block
//! bytes before the tail) (fs/ext4/namei.c `ext4_dirblock_csum`).
//!
//! In an encrypted directory `name` is the fscrypt ciphertext (any bytes,
//! `name_len` = ciphertext length); "." and ".." stay plaintext.

use crate::csum::crc32c_raw;
use crate::{le16, le32, put16, put32, Error, Result, BLOCK_SIZE};

pub const DE_INODE: usize = 0;
pub const DE_REC_LEN: usize = 4;
pub const DE_NAME_LEN: usize = 6;
pub const DE_FILE_TYPE: usize = 7;
pub const DE_NAME: usize = 8;
/// Size of `struct ext4_dir_entry_tail`.
pub const TAIL_SIZE: usize = 12;
/// `EXT4_DIR_ENTRY_TAIL_FT` (reserved file type of the tail).
pub const TAIL_FT: u8 = 0xDE;
/// Usable bytes of a leaf block with a tail.
pub const USABLE: usize = BLOCK_SIZE - TAIL_SIZE;

/// `file_type` values (`EXT4_FT_*`).
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub inode: u32,
    pub file_type: u8,
    pub name: Vec<u8>,
}

/// `EXT4_DIR_REC_LEN(name_len)`: 8 + name, rounded up to 4.
pub fn rec_len(name_len: usize) -> usize {
    (DE_NAME + name_len + 3) & !3
}

/// The file type byte for an `i_mode`.
pub fn file_type_of(mode: u16) -> u8 {
    use crate::inode::*;
    match mode & S_IFMT {
        S_IFREG => FT_REG,
        S_IFDIR => FT_DIR,
        S_IFCHR => FT_CHRDEV,
        S_IFBLK => FT_BLKDEV,
        S_IFIFO => FT_FIFO,
        S_IFSOCK => FT_SOCK,
        S_IFLNK => FT_SYMLINK,
        _ => 0,
    }
}

/// Packs entries (the caller puts "." and ".." first) into leaf blocks,
/// each with a checksum tail for `inode_seed`. Always at least one block.
pub fn build_blocks(entries: &[DirEntry], inode_seed: u32) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut b = vec![0u8; BLOCK_SIZE];
    let mut pos = 0usize;
    let mut last: Option<usize> = None;
    for e in entries {
        let need = rec_len(e.name.len());
        if pos + need > USABLE {
            finish_block(&mut b, last, pos, inode_seed);
            blocks.push(std::mem::replace(&mut b, vec![0u8; BLOCK_SIZE]));
            pos = 0;
        }
        put32(&mut b, pos + DE_INODE, e.inode);
        put16(&mut b, pos + DE_REC_LEN, need as u16);
        b[pos + DE_NAME_LEN] = e.name.len() as u8;
        b[pos + DE_FILE_TYPE] = e.file_type;
        b[pos + DE_NAME..pos + DE_NAME + e.name.len()].copy_from_slice(&e.name);
        last = Some(pos);
        pos += need;
    }
    finish_block(&mut b, last.filter(|_| pos > 0), pos, inode_seed);
    blocks.push(b);
    blocks
}

/// Stretches the last entry (or an empty entry) to the tail, writes the tail.
fn finish_block(b: &mut [u8], last: Option<usize>, pos: usize, inode_seed: u32) {
    match last {
        Some(l) if pos > 0 => put16(b, l + DE_REC_LEN, (USABLE - l) as u16),
        _ => {
            put32(b, DE_INODE, 0);
            put16(b, DE_REC_LEN, USABLE as u16);
        }
    }
    set_tail(b, inode_seed);
}

/// Writes the checksum tail of a leaf block.
pub fn set_tail(b: &mut [u8], inode_seed: u32) {
    put32(b, USABLE + DE_INODE, 0);
    put16(b, USABLE + DE_REC_LEN, TAIL_SIZE as u16);
    b[USABLE + DE_NAME_LEN] = 0;
    b[USABLE + DE_FILE_TYPE] = TAIL_FT;
    let c = crc32c_raw(inode_seed, &b[..USABLE]);
    put32(b, USABLE + 8, c);
}

/// Parses one leaf block: every live entry, after checking the tail
/// checksum (when `inode_seed` is given) and that each `rec_len` is a
/// multiple of 4, at least `rec_len(name_len)` and inside the block.
pub fn parse_block(b: &[u8], inode_seed: Option<u32>) -> Result<Vec<DirEntry>> {
    let bad = |d: String| Error::corrupt("directory block", d);
    if b.len() != BLOCK_SIZE {
        return Err(bad(format!("{} bytes", b.len())));
    }
    let end = if let Some(seed) = inode_seed {
        if le16(b, USABLE + DE_REC_LEN) as usize != TAIL_SIZE || b[USABLE + DE_FILE_TYPE] != TAIL_FT {
            return Err(bad("no checksum tail".into()));
        }
        let want = crc32c_raw(seed, &b[..USABLE]);
        let have = le32(b, USABLE + 8);
        if want != have {
            return Err(bad(format!("tail checksum {have:#010x}, computed {want:#010x}")));
        }
        USABLE
    } else {
        BLOCK_SIZE
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < end {
        if pos + DE_NAME > end {
            return Err(bad(format!("entry at offset {pos} runs past the end")));
        }
        let rl = usize::from(le16(b, pos + DE_REC_LEN));
        let nl = usize::from(b[pos + DE_NAME_LEN]);
        if rl % 4 != 0 || rl < rec_len(nl) || pos + rl > end {
            return Err(bad(format!("entry at offset {pos}: rec_len {rl}, name_len {nl}")));
        }
        let ino = le32(b, pos + DE_INODE);
        if ino != 0 {
            out.push(DirEntry {
                inode: ino,
                file_type: b[pos + DE_FILE_TYPE],
                name: b[pos + DE_NAME..pos + DE_NAME + nl].to_vec(),
            });
        }
        pos += rl;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_parse() {
        let mut v = vec![
            DirEntry {
                inode: 2,
                file_type: FT_DIR,
                name: b".".to_vec(),
            },
            DirEntry {
                inode: 2,
                file_type: FT_DIR,
                name: b"..".to_vec(),
            },
        ];
        for i in 0..100u32 {
            v.push(DirEntry {
                inode: 100 + i,
                file_type: FT_REG,
                name: vec![b'x' ^ (i as u8); 255],
            });
        }
        let blocks = build_blocks(&v, 5);
        assert!(blocks.len() > 1);
        let mut back = Vec::new();
        for b in &blocks {
            back.extend(parse_block(b, Some(5)).unwrap());
        }
        assert_eq!(back, v);
        let mut bad = blocks[0].clone();
        bad[9] ^= 1;
        assert!(parse_block(&bad, Some(5)).is_err());
        let empty = build_blocks(&[], 5);
        assert_eq!(parse_block(&empty[0], Some(5)).unwrap(), vec![]);
        let mut hostile = vec![0u8; BLOCK_SIZE];
        put16(&mut hostile, 4, 2);
        assert!(parse_block(&hostile, None).is_err());
    }
}
