//! A full walk of the directory tree from the root (inode 2).
//!
//! Each directory is read once (a second reference to a directory is a
//! corruption: ext4 has no directory hard links); a non-directory inode
//! reached again is a hard link and is reported with `first_link = false`.
//! The walk uses an explicit stack, so a deep tree cannot overflow it, and
//! the work is bounded by the directory blocks, each read once.

use std::collections::{HashMap, HashSet};

use super::{DirListing, Fs, HashInfo, ReadError};
use crate::dir::{file_type_of, DirEntry};
use crate::inode::{Inode, S_IFDIR, S_IFMT};
use crate::ROOT_INO;

/// One inode met during the walk.
pub struct Entry<'a> {
    /// Raw names from the root (ciphertext inside encrypted directories).
    pub path: &'a [Vec<u8>],
    /// The directory holding this entry (the root's parent is itself).
    pub parent: u32,
    pub ino: u32,
    pub inode: &'a Inode,
    /// The file type byte of the directory entry.
    pub file_type: u8,
    /// False when this inode was already met under another name.
    pub first_link: bool,
    /// The parent directory's no-key hash setup (see [`DirListing`]).
    pub parent_hash: Option<HashInfo>,
}

/// What the visitor wants after seeing an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Descend into this directory.
    Descend,
    /// Do not read this directory.
    Skip,
}

/// The callback that sees each directory's listing: (inode, path, listing).
pub type Listed<'a, E = ReadError> = dyn FnMut(u32, &[Vec<u8>], &DirListing) -> Result<(), E> + 'a;

/// Walks the tree; `visit` sees every entry, `listed` every directory's
/// listing after it is read. Stops at the first error: the walk's own
/// ([`ReadError`], converted) or a callback's, which comes back unchanged.
pub fn walk<E: From<ReadError>>(fs: &Fs, visit: &mut dyn FnMut(&Entry) -> Result<Visit, E>, listed: &mut Listed<'_, E>) -> Result<(), E> {
    let root = fs.inode(ROOT_INO)?;
    if root.mode & S_IFMT != S_IFDIR {
        return Err(ReadError::corrupt("root directory", "inode 2", format!("mode {:#o}", root.mode)).into());
    }
    let mut dirs_seen: HashSet<u32> = HashSet::from([ROOT_INO]);
    let mut links: HashMap<u32, u16> = HashMap::new();
    let first = Entry {
        path: &[],
        parent: ROOT_INO,
        ino: ROOT_INO,
        inode: &root,
        file_type: crate::dir::FT_DIR,
        first_link: true,
        parent_hash: None,
    };
    if visit(&first)? == Visit::Skip {
        return Ok(());
    }
    let mut stack: Vec<(u32, u32, Inode, Vec<Vec<u8>>)> = vec![(ROOT_INO, ROOT_INO, root, Vec::new())];
    while let Some((ino, parent, inode, path)) = stack.pop() {
        let listing = fs.dir(ino, &inode)?;
        listed(ino, &path, &listing)?;
        let where_ = || format!("directory inode {ino}");
        let mut dots = (false, false);
        for DirEntry {
            inode: child,
            file_type,
            name,
        } in &listing.entries
        {
            match name.as_slice() {
                b"." => {
                    if *child != ino || dots.0 {
                        return Err(ReadError::corrupt("directory", where_(), format!("\".\" points to inode {child}")).into());
                    }
                    dots.0 = true;
                    continue;
                }
                b".." => {
                    if *child != parent || dots.1 {
                        return Err(ReadError::corrupt(
                            "directory",
                            where_(),
                            format!("\"..\" points to inode {child}, the parent is {parent}"),
                        )
                        .into());
                    }
                    dots.1 = true;
                    continue;
                }
                [] => return Err(ReadError::corrupt("directory", where_(), "an entry with an empty name").into()),
                _ => {}
            }
            let ci = fs.inode(*child)?;
            let mut cpath = path.clone();
            cpath.push(name.clone());
            let here = || format!("inode {child} (entry in directory inode {ino})");
            if ci.links_count == 0 || (ci.dtime != 0 && ci.mode == 0) {
                return Err(ReadError::corrupt("directory entry", here(), "points to a deleted inode").into());
            }
            if file_type_of(ci.mode) != *file_type || *file_type == 0 {
                return Err(ReadError::corrupt(
                    "directory entry",
                    here(),
                    format!("file type {file_type} does not match mode {:#o}", ci.mode),
                )
                .into());
            }
            let is_dir = ci.mode & S_IFMT == S_IFDIR;
            let first_link = if is_dir {
                if !dirs_seen.insert(*child) {
                    return Err(ReadError::corrupt("directory entry", here(), "a directory linked twice (or a cycle)").into());
                }
                true
            } else {
                let n = links.entry(*child).or_insert(0);
                *n = n.saturating_add(1);
                *n == 1
            };
            let e = Entry {
                path: &cpath,
                parent: ino,
                ino: *child,
                inode: &ci,
                file_type: *file_type,
                first_link,
                parent_hash: listing.nokey_hash,
            };
            if visit(&e)? == Visit::Descend && is_dir {
                stack.push((*child, ino, ci, cpath));
            }
        }
        if !dots.0 || !dots.1 {
            return Err(ReadError::corrupt("directory", where_(), "lacks \".\" or \"..\"").into());
        }
    }
    Ok(())
}
