//! The superblock parser on arbitrary bytes: never panics; whatever it
//! accepts serialises back to a block it accepts again, unchanged.
//!
//! First input byte: bit 0 picks the slot; with bit 1 set the target
//! rewrites the slot's crc32c first, so the fuzzer reaches the field checks
//! behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libimage::format::superblock::{Superblock, OFF_CRC};
use libimage::BLOCK_SIZE;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, block)) = data.split_first() else { return };
    let slot = u64::from(sel & 1);
    let mut block = block.to_vec();
    if sel & 2 != 0 && block.len() >= BLOCK_SIZE {
        let crc = crc32c::crc32c(&block[..OFF_CRC]);
        block[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(sb) = Superblock::from_bytes(&block, slot) {
        let again = Superblock::from_bytes(&sb.to_bytes(), slot).expect("a parsed superblock re-parses");
        assert_eq!(again.to_bytes(), sb.to_bytes());
    }
});
