//! `Image::open` (and `open_unchecked`, which the checker uses) on an image
//! file holding arbitrary bytes: an error or an image, never a panic.
//!
//! The first input byte is a flag, the rest the image. With bit 0 set, the
//! target first makes the checksums consistent the way a writer would
//! (each valid-looking superblock's metadata block crc32cs and generations,
//! its stream crc32c, its own crc32c), so the fuzzer reaches the metadata
//! decoder and the structural checks behind them.
#![no_main]

use std::io::Write;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use libimage::engine::image::{Access, Image};
use libimage::format::{metablock, superblock};
use libimage::BLOCK_SIZE;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, image)) = data.split_first() else { return };
    let mut image = image.to_vec();
    if flags & 1 != 0 {
        fix_checksums(&mut image);
    }
    let path = temp_path();
    {
        let mut f = std::fs::File::create(&path).expect("create the temporary image");
        f.write_all(&image).expect("write the temporary image");
    }
    let _ = Image::open(&path, Access::ReadOnly);
    if let Ok((img, _findings)) = Image::open_unchecked(&path, Access::ReadOnly) {
        let _ = img.free_blocks();
    }
    let _ = std::fs::remove_file(&path);
});

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn fix_checksums(image: &mut [u8]) {
    let nblocks = (image.len() / BLOCK_SIZE) as u64;
    for slot in 0..2usize {
        if (slot as u64) >= nblocks {
            break;
        }
        let sb_at = slot * BLOCK_SIZE;
        if image[sb_at..sb_at + 8] != superblock::MAGIC {
            continue;
        }
        let sb = image[sb_at..sb_at + BLOCK_SIZE].to_vec();
        let (generation, start, blocks, bytes) = (le64(&sb, 16), le64(&sb, 80), le64(&sb, 88), le64(&sb, 96));
        if start >= 2 && blocks <= 64 && start.saturating_add(blocks) <= nblocks {
            let mut stream = Vec::new();
            for b in start..start + blocks {
                let at = b as usize * BLOCK_SIZE;
                let blk = &mut image[at..at + BLOCK_SIZE];
                blk[..4].copy_from_slice(&metablock::MAGIC);
                blk[metablock::OFF_GENERATION..metablock::HEADER].copy_from_slice(&generation.to_le_bytes());
                let crc = crc32c::crc32c_append(crc32c::crc32c(&b.to_le_bytes()), &blk[metablock::OFF_GENERATION..]);
                blk[metablock::OFF_CRC..metablock::OFF_GENERATION].copy_from_slice(&crc.to_le_bytes());
                stream.extend_from_slice(&blk[metablock::HEADER..]);
            }
            stream.truncate(usize::try_from(bytes).unwrap_or(usize::MAX).min(stream.len()));
            let crc = crc32c::crc32c(&stream);
            image[sb_at + 104..sb_at + 108].copy_from_slice(&crc.to_le_bytes());
        }
        let crc = crc32c::crc32c(&image[sb_at..sb_at + superblock::OFF_CRC]);
        image[sb_at + superblock::OFF_CRC..sb_at + BLOCK_SIZE].copy_from_slice(&crc.to_le_bytes());
    }
}

/// One file per fuzzing process, in memory when /dev/shm exists.
fn temp_path() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("cryptimg-fuzz-open-{}", std::process::id()))
}
