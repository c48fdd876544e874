//! The tar import reader (`libimage::tree::read_tar`) on arbitrary bytes:
//! every entry's content is read to the end; never a panic, never more
//! content than declared.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use libimage::tree::{read_tar, EntrySink, SourceEntry, SourceKind};

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

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let _ = read_tar(&mut input, &mut Drain);
});
