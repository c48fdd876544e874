// TEMP STUB
#![allow(unused)]
use crate::error::Result;
use crate::source::Meta;
use std::path::Path;
pub struct TreeWriter;
pub struct WriteStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub skipped: u64,
}
impl TreeWriter {
    pub fn new(dest: &Path, as_root: bool) -> Result<TreeWriter> {
        panic!()
    }
    pub fn dir(&mut self, path: &[Vec<u8>], meta: &Meta) -> Result<()> {
        panic!()
    }
    pub fn create_file(&mut self, path: &[Vec<u8>]) -> Result<std::fs::File> {
        panic!()
    }
    pub fn finish_file(&mut self, path: &[Vec<u8>], f: std::fs::File, size: u64, meta: &Meta) -> Result<()> {
        panic!()
    }
    pub fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], meta: &Meta) -> Result<()> {
        panic!()
    }
    pub fn hard_link(&mut self, path: &[Vec<u8>], target: &[Vec<u8>]) -> Result<()> {
        panic!()
    }
    pub fn special(&mut self, path: &[Vec<u8>], meta: &Meta) -> Result<()> {
        panic!()
    }
    pub fn finish(self) -> Result<WriteStats> {
        panic!()
    }
}
pub fn running_as_root() -> bool {
    false
}
