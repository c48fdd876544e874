//! What each fuzz target does with its input, shared by the cargo-fuzz
//! targets (`fuzz_targets/*.rs`) and the regression test that replays the
//! inputs committed under `testdata/fuzz/` (`libimage/tests/fuzz_regressions.rs`).
//!
//! Each driver returns whether the input was accepted. None may panic, on any
//! input; their own assertions check properties of accepted input.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

use libimage::engine::image::{Access, Image};
use libimage::format::metadecode::{decode, Stream};
use libimage::format::superblock::{Superblock, OFF_CRC};
use libimage::format::validate::{check_metadata, Geometry};
use libimage::format::{metablock, superblock};
use libimage::tree::{read_tar, EntrySink, SourceEntry, SourceKind};
use libimage::BLOCK_SIZE;

/// The superblock parser. First byte: bit 0 picks the slot; bit 1 rewrites
/// the slot's crc32c first, so the fuzzer reaches the field checks behind
/// it. Whatever parses serialises back to a block that parses, unchanged.
pub fn superblock(data: &[u8]) -> bool {
    let Some((&sel, block)) = data.split_first() else { return false };
    let slot = u64::from(sel & 1);
    let mut block = block.to_vec();
    if sel & 2 != 0 && block.len() >= BLOCK_SIZE {
        let crc = crc32c::crc32c(&block[..OFF_CRC]);
        block[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(sb) = Superblock::from_bytes(&block, slot) else {
        return false;
    };
    let again = Superblock::from_bytes(&sb.to_bytes(), slot).expect("a parsed superblock re-parses");
    assert_eq!(again.to_bytes(), sb.to_bytes());
    true
}

/// The metadata parsers. First byte bit 0 clear: the rest is a metadata
/// stream, decoded (`metadecode`) and checked (`validate`). Bit 0 set: le64
/// first block number, le64 generation, then framed blocks, each checked
/// (`metablock::check_block`; with bit 1 set their crc32cs are fixed up
/// first), the good payloads decoded.
pub fn metadata(data: &[u8]) -> bool {
    let Some((&sel, rest)) = data.split_first() else { return false };
    if sel & 1 == 0 {
        let mut stream = Stream::with_capacity(rest.len());
        stream.push(Some(rest), rest.len());
        let Ok(meta) = decode(stream) else { return false };
        let geo = Geometry {
            total_blocks: 1 << 20,
            meta_start: 2,
            meta_blocks: 4,
        };
        let _ = check_metadata(&meta, geo);
        return true;
    }
    let Some((start, rest)) = rest.split_first_chunk::<8>() else {
        return false;
    };
    let Some((generation, region)) = rest.split_first_chunk::<8>() else {
        return false;
    };
    let (start, generation) = (u64::from_le_bytes(*start), u64::from_le_bytes(*generation));
    let mut region = region.to_vec();
    if sel & 2 != 0 {
        for (i, blk) in region.chunks_mut(BLOCK_SIZE).enumerate() {
            if blk.len() == BLOCK_SIZE {
                fix_block_crc(blk, start.wrapping_add(i as u64));
            }
        }
    }
    let mut stream = Stream::with_capacity(region.len());
    for (i, blk) in region.chunks(BLOCK_SIZE).enumerate() {
        if let Ok(p) = metablock::check_block(blk, start.wrapping_add(i as u64), generation) {
            stream.push(Some(p), p.len());
        }
    }
    decode(stream).is_ok()
}

fn fix_block_crc(blk: &mut [u8], blockno: u64) {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&blockno.to_le_bytes()), &blk[metablock::OFF_GENERATION..]);
    blk[metablock::OFF_CRC..metablock::OFF_GENERATION].copy_from_slice(&crc.to_le_bytes());
}

/// `Image::open` and `Image::open_unchecked` on an image file. First byte
/// bit 0: make the checksums consistent the way a writer would (each
/// valid-looking superblock's metadata blocks, stream crc32c and own crc32c),
/// so the fuzzer reaches the decoder and the structural checks.
pub fn image_open(data: &[u8]) -> bool {
    let Some((&flags, image)) = data.split_first() else { return false };
    let mut image = image.to_vec();
    if flags & 1 != 0 {
        fix_checksums(&mut image);
    }
    let path = temp_path("open");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&image))
        .expect("write the temporary image");
    let opened = Image::open(&path, Access::ReadOnly).is_ok();
    if let Ok((img, _findings)) = Image::open_unchecked(&path, Access::ReadOnly) {
        let _ = img.free_blocks();
    }
    let _ = std::fs::remove_file(&path);
    opened
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn fix_checksums(image: &mut [u8]) {
    let nblocks = (image.len() / BLOCK_SIZE) as u64;
    for slot in 0..2usize.min(nblocks as usize) {
        let at = slot * BLOCK_SIZE;
        if image[at..at + 8] != superblock::MAGIC {
            continue;
        }
        let (generation, start, blocks, bytes) = (
            le64(image, at + 16),
            le64(image, at + 80),
            le64(image, at + 88),
            le64(image, at + 96),
        );
        if start >= 2 && blocks <= 64 && start.saturating_add(blocks) <= nblocks {
            let mut stream = Vec::new();
            for b in start..start + blocks {
                let blk = &mut image[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE];
                blk[..4].copy_from_slice(&metablock::MAGIC);
                blk[metablock::OFF_GENERATION..metablock::HEADER].copy_from_slice(&generation.to_le_bytes());
                fix_block_crc(blk, b);
                stream.extend_from_slice(&blk[metablock::HEADER..]);
            }
            stream.truncate(usize::try_from(bytes).unwrap_or(usize::MAX).min(stream.len()));
            image[at + 104..at + 108].copy_from_slice(&crc32c::crc32c(&stream).to_le_bytes());
        }
        let crc = crc32c::crc32c(&image[at..at + OFF_CRC]);
        image[at + OFF_CRC..at + BLOCK_SIZE].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A file per process (and per driver), in memory when /dev/shm exists.
fn temp_path(what: &str) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let n = std::thread::current().id();
    dir.join(format!("cryptimg-fuzz-{what}-{}-{n:?}", std::process::id()).replace(['(', ')'], ""))
}

/// Reads every entry's content to its end, checking it is never longer than declared.
struct Drain;

impl EntrySink for Drain {
    fn entry(&mut self, e: SourceEntry<'_>) -> libimage::Result<()> {
        if let SourceKind::File { size, content } = e.kind {
            let mut buf = [0u8; 8192];
            let mut got = 0u64;
            loop {
                let n = content
                    .read(&mut buf)
                    .map_err(|err| libimage::Error::io("reading tar content", err))?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                assert!(got <= size, "content longer than its declared size");
            }
        }
        Ok(())
    }
}

/// The tar import reader (`libimage::tree::read_tar`).
pub fn tar_import(data: &[u8]) -> bool {
    let mut input = data;
    read_tar(&mut input, &mut Drain).is_ok()
}

/// The backup archive reader: `verify_backup`, which runs the strict `scan`
/// reader over every member.
pub fn backup_archive(data: &[u8]) -> bool {
    let mut input = data;
    libimage::ops::backup::verify_backup(&mut input, &[]).is_ok()
}

/// The ext4 backup archive reader (docs/BACKUP.md §11): `verify_archive`
/// with no bases, the strict reader over every member.
pub fn ext4_archive(data: &[u8]) -> bool {
    let mut input = data;
    libimage::ops::ext4::list::verify_archive(&mut input, &[]).is_ok()
}
