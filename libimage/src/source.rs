//! PLACEHOLDER until the tree I/O module lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}
pub enum SourceKind<'a> {
    Dir,
    File { size: u64, content: &'a mut dyn std::io::Read },
    Symlink { target: Vec<u8> },
    HardLink { target: Vec<Vec<u8>> },
    Special,
}
pub struct SourceEntry<'a> {
    pub path: Vec<Vec<u8>>,
    pub meta: Meta,
    pub kind: SourceKind<'a>,
}
pub trait EntrySink {
    fn entry(&mut self, e: SourceEntry<'_>) -> crate::error::Result<()>;
}
pub fn walk_dir(root: &std::path::Path, sink: &mut dyn EntrySink) -> crate::error::Result<()> {
    panic!()
}
pub fn read_tar(input: &mut dyn std::io::Read, sink: &mut dyn EntrySink) -> crate::error::Result<()> {
    panic!()
}
