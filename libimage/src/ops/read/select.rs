//! Choosing what to read: resolving user paths inside a snapshot, and the
//! walk that hands every selected entry, parents first, to a [`Sink`] (a
//! directory writer or a tar stream).
//!
//! A selected directory means its whole subtree; the directories above a
//! selected path are handed over too (with their own metadata), once each.
//! Hard links are kept within the selection: the first selected name of an
//! inode is its full entry, every later one a link to that name.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::inode::{Body, Inode};
use crate::progress::Progress;

use super::TreeReader;

/// A path inside the snapshot: one name per component (the root is empty).
pub type TreePath = Vec<Vec<u8>>;

/// A resolved path: one `(name, inode number)` per component, the target last.
pub type Chain = Vec<(Vec<u8>, u64)>;

/// Receives the selected entries, every directory before what it holds.
pub trait Sink {
    /// A directory (the root is the empty path).
    fn dir(&mut self, path: &[Vec<u8>], inode: &Inode) -> Result<()>;
    /// A regular file; read its data with [`TreeReader::read_file`].
    fn file(&mut self, r: &TreeReader<'_>, path: &[Vec<u8>], inode: &Inode) -> Result<()>;
    /// Another name of the inode already handed over as `first`.
    fn hard_link(&mut self, path: &[Vec<u8>], first: &[Vec<u8>], inode: &Inode) -> Result<()>;
    /// A symbolic link with its decrypted target.
    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8], inode: &Inode) -> Result<()>;
    /// A FIFO, socket or device node.
    fn special(&mut self, path: &[Vec<u8>], inode: &Inode) -> Result<()>;
}

/// The components of a user path, normalized as a shell would: empty and
/// `.` components are dropped, `..` goes up one level (never above the root).
pub fn normalize(path: &[u8]) -> TreePath {
    let mut out: TreePath = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

/// Resolves `path` (real names with the key, no-key names without it) to the
/// inodes along it: one `(name, ino)` per component, the target last. A
/// directory whose names cannot be decrypted for want of its key is reported
/// as a missing key, not as a missing file.
pub fn resolve(r: &TreeReader<'_>, path: &[u8]) -> Result<Chain> {
    let mut cur = r.snap.root;
    let mut chain = Vec::new();
    for comp in normalize(path) {
        let dir = r.inode(cur)?;
        let Body::Dir { ctx, .. } = &dir.body else {
            return Err(Error::Invalid(format!(
                "{}: {} is not a directory",
                String::from_utf8_lossy(path),
                show(&chain.iter().map(|(n, _): &(Vec<u8>, u64)| n.clone()).collect::<Vec<_>>())
            )));
        };
        let listed = r.list(cur)?;
        let decrypted = listed.first().is_none_or(|l| l.decrypted);
        let Some(found) = listed.into_iter().find(|l| l.name == comp) else {
            if !decrypted {
                return Err(Error::WrongKey {
                    given: r.keys.ids(),
                    needed: vec![ctx.key],
                });
            }
            return Err(Error::Invalid(format!(
                "no such file or directory in snapshot {:?}: {}",
                r.snap.name,
                String::from_utf8_lossy(path)
            )));
        };
        cur = found.inode.ino;
        chain.push((comp, cur));
    }
    Ok(chain)
}

/// A tree path for messages: `/`-joined, lossy UTF-8, `/` for the root.
pub fn show(path: &[Vec<u8>]) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join("/")
}

/// Every key id the inodes below `ino` (itself included) need: directory and
/// symlink contexts and the extents of files. Walks inode numbers only, so no
/// key is needed to compute it.
pub fn keys_needed_below(r: &TreeReader<'_>, ino: u64, ids: &mut std::collections::BTreeSet<fscrypt::KeyId>) -> Result<()> {
    let mut stack = vec![ino];
    while let Some(ino) = stack.pop() {
        match &r.inode(ino)?.body {
            Body::Dir { ctx, entries } => {
                ids.insert(ctx.key);
                stack.extend(entries.iter().map(|e| e.ino));
            }
            Body::Symlink { ctx, .. } => {
                ids.insert(ctx.key);
            }
            Body::File { map } => {
                for m in map {
                    ids.insert(r.img.extent(m.extent)?.ctx.key);
                }
            }
            Body::Special => {}
        }
    }
    Ok(())
}

/// The selection of `paths` (the whole snapshot when empty): each as its
/// chain of `(name, ino)`, sorted, without paths inside another selected one.
pub fn select(r: &TreeReader<'_>, paths: &[Vec<u8>]) -> Result<Vec<Chain>> {
    let mut chains = if paths.is_empty() {
        vec![Vec::new()]
    } else {
        paths.iter().map(|p| resolve(r, p)).collect::<Result<Vec<_>>>()?
    };
    chains.sort();
    chains.dedup();
    let mut out: Vec<Chain> = Vec::new();
    for c in chains {
        // Sorted, so an enclosing path comes right before its descendants.
        if out.last().is_some_and(|p| c.starts_with(p)) {
            continue;
        }
        out.push(c);
    }
    Ok(out)
}

/// The key ids a selection needs: the directories along each path (to find
/// it) and everything below it. Sorted, unique.
pub fn keys_needed(r: &TreeReader<'_>, sel: &[Chain]) -> Result<Vec<fscrypt::KeyId>> {
    let mut ids = std::collections::BTreeSet::new();
    for chain in sel {
        let mut dir = r.snap.root;
        for (_, ino) in chain {
            if let Body::Dir { ctx, .. } = &r.inode(dir)?.body {
                ids.insert(ctx.key);
            }
            dir = *ino;
        }
        keys_needed_below(r, dir, &mut ids)?;
    }
    Ok(ids.into_iter().collect())
}

/// Hands every entry of the selection to `sink`: the root, the directories
/// along each selected path, then each selected entry and (for a directory)
/// its subtree, depth first. Reports one progress item per file.
pub fn walk(r: &TreeReader<'_>, sel: &[Chain], sink: &mut dyn Sink, progress: &dyn Progress) -> Result<()> {
    let mut done_dirs: HashSet<TreePath> = HashSet::new();
    let mut first_path: HashMap<u64, TreePath> = HashMap::new();
    sink.dir(&[], r.inode(r.snap.root)?)?;
    done_dirs.insert(Vec::new());
    for chain in sel {
        let Some(((_, target), parents)) = chain.split_last() else {
            walk_dir(r, Vec::new(), r.snap.root, sink, &mut first_path, progress)?;
            continue;
        };
        let mut path: TreePath = Vec::new();
        for (name, ino) in parents {
            path.push(name.clone());
            if done_dirs.insert(path.clone()) {
                sink.dir(&path, r.inode(*ino)?)?;
            }
        }
        path.extend(chain.last().map(|(n, _)| n.clone()));
        let inode = r.inode(*target)?;
        if inode.is_dir() {
            walk_dir(r, path, *target, sink, &mut first_path, progress)?;
        } else {
            entry(r, path, inode, sink, &mut first_path, progress)?;
        }
    }
    Ok(())
}

/// The file bytes [`walk`] reports for `sel` (each file once, hard links
/// once): the total of an extract's progress. From the inode table when the
/// whole snapshot is selected; otherwise by a walk that reads no data.
pub fn total_bytes(r: &TreeReader<'_>, sel: &[Chain]) -> Result<u64> {
    if sel.iter().any(|c| c.is_empty()) && sel.len() == 1 {
        return Ok(r
            .snap
            .inodes
            .values()
            .filter(|i| matches!(i.body, Body::File { .. }))
            .map(|i| i.size)
            .fold(0u64, u64::saturating_add));
    }
    struct Count(std::sync::atomic::AtomicU64);
    impl Progress for Count {
        fn advance(&self, _files: u64, bytes: u64) {
            self.0.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
    struct NoData;
    impl Sink for NoData {
        fn dir(&mut self, _: &[Vec<u8>], _: &Inode) -> Result<()> {
            Ok(())
        }
        fn file(&mut self, _: &TreeReader<'_>, _: &[Vec<u8>], _: &Inode) -> Result<()> {
            Ok(())
        }
        fn hard_link(&mut self, _: &[Vec<u8>], _: &[Vec<u8>], _: &Inode) -> Result<()> {
            Ok(())
        }
        fn symlink(&mut self, _: &[Vec<u8>], _: &[u8], _: &Inode) -> Result<()> {
            Ok(())
        }
        fn special(&mut self, _: &[Vec<u8>], _: &Inode) -> Result<()> {
            Ok(())
        }
    }
    let count = Count(Default::default());
    walk(r, sel, &mut NoData, &count)?;
    Ok(count.0.into_inner())
}

/// Forwards progress and sums the bytes.
struct Counted<'a>(&'a dyn Progress, std::sync::atomic::AtomicU64);

impl Progress for Counted<'_> {
    fn advance(&self, files: u64, bytes: u64) {
        self.1.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.0.advance(files, bytes);
    }
}

/// A directory and everything below it (the directory itself first, unless
/// it is the root, which [`walk`] already handed over).
fn walk_dir(
    r: &TreeReader<'_>,
    path: TreePath,
    ino: u64,
    sink: &mut dyn Sink,
    first_path: &mut HashMap<u64, TreePath>,
    progress: &dyn Progress,
) -> Result<()> {
    // Iterative depth-first walk; validated metadata guarantees a tree.
    let mut stack: Vec<(TreePath, u64)> = vec![(path, ino)];
    while let Some((path, dir)) = stack.pop() {
        if !path.is_empty() {
            sink.dir(&path, r.inode(dir)?)?;
        }
        for l in r.list(dir)? {
            let mut p = path.clone();
            p.push(l.name);
            if l.inode.is_dir() {
                stack.push((p, l.inode.ino));
            } else {
                entry(r, p, l.inode, sink, first_path, progress)?;
            }
        }
    }
    Ok(())
}

/// One non-directory entry.
fn entry(
    r: &TreeReader<'_>,
    path: TreePath,
    i: &Inode,
    sink: &mut dyn Sink,
    first_path: &mut HashMap<u64, TreePath>,
    progress: &dyn Progress,
) -> Result<()> {
    if i.nlink > 1 {
        if let Some(first) = first_path.get(&i.ino) {
            return sink.hard_link(&path, first, i);
        }
        first_path.insert(i.ino, path.clone());
    }
    match &i.body {
        Body::Dir { .. } => Err(Error::Invalid(format!(
            "internal: directory {} handed over as an entry",
            show(&path)
        ))),
        Body::File { .. } => {
            // Bytes as they are read; the holes (and any part the sink did
            // not read) when the file is done, so each file adds its size.
            let counted = Counted(progress, Default::default());
            sink.file(&r.reporting(&counted), &path, i)?;
            progress.advance(1, i.size.saturating_sub(counted.1.into_inner()));
            Ok(())
        }
        Body::Symlink { .. } => sink.symlink(&path, &r.read_link(i.ino)?, i),
        Body::Special => sink.special(&path, i),
    }
}
