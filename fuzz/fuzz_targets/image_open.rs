//! `Image::open` (and `open_unchecked`, which the checker uses) on an image
//! file holding arbitrary bytes: an error or an image, never a panic.
#![no_main]

use std::io::Write;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use libimage::engine::image::{Access, Image};

fuzz_target!(|data: &[u8]| {
    let path = temp_path();
    {
        let mut f = std::fs::File::create(&path).expect("create the temporary image");
        f.write_all(data).expect("write the temporary image");
    }
    let _ = Image::open(&path, Access::ReadOnly);
    if let Ok((img, _findings)) = Image::open_unchecked(&path, Access::ReadOnly) {
        let _ = img.free_blocks();
    }
    let _ = std::fs::remove_file(&path);
});

/// One file per fuzzing process, in memory when /dev/shm exists.
fn temp_path() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("cryptimg-fuzz-open-{}", std::process::id()))
}
