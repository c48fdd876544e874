//! The metadata parsers on arbitrary bytes: the block framing
//! (`metablock::check_block`), the stream decoder (`metadecode::decode`) and
//! the keyless structural checks (`validate::check_metadata`) on whatever
//! decodes. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libimage::format::metablock;
use libimage::format::metadecode::{decode, Stream};
use libimage::format::validate::{check_metadata, Geometry};
use libimage::BLOCK_SIZE;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    if sel & 1 == 1 {
        // Framed blocks: le64 first block number, le64 generation, then the
        // region; every block is checked, the good payloads form the stream.
        // With bit 1 of the first byte set, the block crc32cs are fixed up first.
        let Some((start, rest)) = rest.split_first_chunk::<8>() else {
            return;
        };
        let Some((generation, region)) = rest.split_first_chunk::<8>() else {
            return;
        };
        let (start, generation) = (u64::from_le_bytes(*start), u64::from_le_bytes(*generation));
        let mut region = region.to_vec();
        if sel & 2 != 0 {
            // Rewrite every block's crc32c so the fuzzer gets past it.
            for (i, blk) in region.chunks_mut(BLOCK_SIZE).enumerate() {
                if blk.len() == BLOCK_SIZE {
                    let no = start.wrapping_add(i as u64);
                    let crc = crc32c::crc32c_append(crc32c::crc32c(&no.to_le_bytes()), &blk[metablock::OFF_GENERATION..]);
                    blk[metablock::OFF_CRC..metablock::OFF_GENERATION].copy_from_slice(&crc.to_le_bytes());
                }
            }
        }
        let mut stream = Stream::with_capacity(region.len());
        for (i, blk) in region.chunks(BLOCK_SIZE).enumerate() {
            if let Ok(p) = metablock::check_block(blk, start.wrapping_add(i as u64), generation) {
                stream.push(Some(p), p.len());
            }
        }
        let _ = decode(stream);
        return;
    }
    let mut stream = Stream::with_capacity(rest.len());
    stream.push(Some(rest), rest.len());
    if let Ok(meta) = decode(stream) {
        let geo = Geometry {
            total_blocks: 1 << 20,
            meta_start: 2,
            meta_blocks: 4,
        };
        let _ = check_metadata(&meta, geo);
    }
});
