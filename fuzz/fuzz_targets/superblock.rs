//! The superblock parser on arbitrary bytes: never panics; whatever it
//! accepts serialises back to a block it accepts again, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libimage::format::superblock::Superblock;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, block)) = data.split_first() else { return };
    let slot = u64::from(sel & 1);
    if let Ok(sb) = Superblock::from_bytes(block, slot) {
        let again = Superblock::from_bytes(&sb.to_bytes(), slot).expect("a parsed superblock re-parses");
        assert_eq!(again.to_bytes(), sb.to_bytes());
    }
});
