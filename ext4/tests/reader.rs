//! The reader against images mke2fs made from a directory (`mkfs.ext4 -d`):
//! deep extent trees (a file with 2,000 data islands), an htree directory,
//! hard links across directories, fast and slow symlinks, sparse files.
//! Needs mkfs.ext4; prints SKIP without it (fails under CI=true).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use ext4fs::inode::{S_IFLNK, S_IFMT, S_IFREG};
use ext4fs::read::{walk, Fs, ReadError, Refusal, Visit};

fn have_mkfs() -> bool {
    let ok = Command::new("mkfs.ext4").arg("-V").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "mkfs.ext4 missing under CI=true");
        eprintln!("SKIP: reader: mkfs.ext4 not found");
    }
    ok
}

fn mkfs(img: &Path, src: &Path, extra: &[&str]) {
    let f = fs::File::create(img).unwrap();
    f.set_len(64 << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-I", "256", "-O", "encrypt"])
        .args(extra)
        .arg("-d")
        .arg(src)
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn source(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("small"), b"hello").unwrap();
    let islands = fs::File::create(root.join("islands")).unwrap();
    for i in 0..2000u64 {
        islands.write_all_at(&[i as u8 | 1; 100], i * 8192).unwrap();
    }
    let sparse = fs::File::create(root.join("a/sparse")).unwrap();
    sparse.write_all_at(b"end", 50 << 20).unwrap();
    fs::hard_link(root.join("small"), root.join("a/b/c/link-to-small")).unwrap();
    std::os::unix::fs::symlink("small", root.join("fast")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), root.join("a/slow")).unwrap();
    fs::create_dir(root.join("big")).unwrap();
    for i in 0..3000 {
        fs::write(root.join(format!("big/entry-with-a-long-name-{i:05}")), i.to_string()).unwrap();
    }
}

type Seen = BTreeMap<Vec<u8>, (u16, u64, Vec<u8>)>;

fn read_all(fs_: &Fs) -> Seen {
    let mut seen = Seen::new();
    let mut links = BTreeMap::new();
    walk::<ReadError>(
        fs_,
        &mut |e| {
            let p = e.path.join(&b'/');
            let content = match e.inode.mode & S_IFMT {
                S_IFREG if e.first_link => {
                    let map = fs_.extents(e.ino, e.inode)?;
                    let mut v = vec![0u8; e.inode.size as usize];
                    fs_.read_mapped::<ReadError>(&map, 64, &mut |l, b| {
                        let off = l as usize * 4096;
                        let n = b.len().min(v.len().saturating_sub(off));
                        v[off..off + n].copy_from_slice(&b[..n]);
                        Ok(())
                    })?;
                    links.insert(e.ino, v.clone());
                    v
                }
                S_IFREG => links[&e.ino].clone(),
                S_IFLNK => {
                    let mut t = fs_.symlink_raw(e.ino, e.inode)?;
                    t.truncate(e.inode.size as usize);
                    t
                }
                _ => Vec::new(),
            };
            seen.insert(p, (e.inode.mode & S_IFMT, e.inode.size, content));
            Ok(Visit::Descend)
        },
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    seen
}

#[test]
fn reads_a_mke2fs_tree() {
    if !have_mkfs() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source(&src);
    let img = t.path().join("img");
    mkfs(&img, &src, &[]);
    // mke2fs -d writes linear directories; e2fsck -D indexes them.
    let st = Command::new("e2fsck")
        .args(["-fyD"])
        .stdout(std::process::Stdio::null())
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.code().is_some_and(|c| c <= 1), "e2fsck -fyD: {st}");
    let f = Fs::open(&img).unwrap();
    let seen = read_all(&f);
    // Everything in the source is there with its bytes.
    let mut n = 0;
    for e in walkdir(&src) {
        let rel = e.strip_prefix(&src).unwrap().as_os_str().as_encoded_bytes().to_vec();
        let md = fs::symlink_metadata(&e).unwrap();
        let (_, size, content) = seen.get(&rel).unwrap_or_else(|| panic!("{} missing", e.display()));
        if md.is_file() {
            assert_eq!(*size, md.size());
            assert!(content == &fs::read(&e).unwrap(), "{} differs", e.display());
        } else if md.is_symlink() {
            assert_eq!(content, fs::read_link(&e).unwrap().as_os_str().as_encoded_bytes());
        }
        n += 1;
    }
    assert!(n > 3000);
    // The big directory is indexed and the islands file has a deep tree.
    let big = f.inode(2).and_then(|_| f.dir(2, &f.inode(2).unwrap()));
    assert!(big.is_err(), "a second claim of the same blocks is a cross-link");
    let f2 = f;
    let big_ino = ino_of(&f2, b"big");
    let big = f2.inode(big_ino).unwrap();
    let l = f2.dir(big_ino, &big).unwrap();
    assert!(l.indexed && l.nokey_hash.is_some());
    let isl = ino_of(&f2, b"islands");
    let ii = f2.inode(isl).unwrap();
    let root_is_index = matches!(ext4fs::extent::parse_node(&ii.block), Ok(ext4fs::extent::Node::Index { .. }));
    assert!(root_is_index, "2,000 extents need an index in i_block");
    assert_eq!(f2.extents(isl, &ii).unwrap().extents.len(), 2000);
}

fn ino_of(f: &Fs, name: &[u8]) -> u32 {
    f.reset_claims();
    let l = f.dir(2, &f.inode(2).unwrap()).unwrap();
    f.reset_claims();
    l.entries.iter().find(|e| e.name == name).map(|e| e.inode).unwrap()
}

fn walkdir(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn refusals_are_typed() {
    if !have_mkfs() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let img = t.path().join("img");
    // needs_recovery set by hand (the superblock checksum is recomputed).
    mkfs(&img, &src, &[]);
    patch_sb(&img, |sb| sb.feature_incompat |= ext4fs::superblock::INCOMPAT_RECOVER);
    assert!(matches!(Fs::open(&img), Err(ReadError::NeedsRecovery)));
    mkfs(&img, &src, &["-b", "1024"]);
    assert!(matches!(
        Fs::open(&img),
        Err(ReadError::Unsupported {
            refusal: Refusal::BlockSize,
            ..
        })
    ));
    mkfs(&img, &src, &["-O", "inline_data"]);
    assert!(matches!(
        Fs::open(&img),
        Err(ReadError::Unsupported {
            refusal: Refusal::InlineData,
            ..
        })
    ));
    mkfs(&img, &src, &["-O", "casefold"]);
    assert!(matches!(
        Fs::open(&img),
        Err(ReadError::Unsupported {
            refusal: Refusal::Casefold,
            ..
        })
    ));
    mkfs(&img, &src, &["-O", "^metadata_csum"]);
    assert!(matches!(
        Fs::open(&img),
        Err(ReadError::Unsupported {
            refusal: Refusal::NoMetadataCsum,
            ..
        })
    ));
    // Truncated image.
    mkfs(&img, &src, &[]);
    fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(32 << 20).unwrap();
    let e = Fs::open(&img).err().unwrap();
    assert!(e.is_corruption(), "{e}");
}

fn patch_sb(img: &Path, f: impl FnOnce(&mut ext4fs::superblock::Superblock)) {
    let file = fs::OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut b = [0u8; 1024];
    file.read_exact_at(&mut b, 1024).unwrap();
    let mut sb = ext4fs::superblock::Superblock::from_bytes(&b).unwrap();
    f(&mut sb);
    // to_bytes writes only the modelled fields; keep the others from disk.
    let new = sb.to_bytes();
    for (i, (o, n)) in b.iter_mut().zip(new.iter()).enumerate() {
        if (0x60..0x64).contains(&i) || i >= 0x3FC {
            *o = *n;
        }
    }
    let c = ext4fs::csum::crc32c_raw(!0, &b[..0x3FC]);
    b[0x3FC..].copy_from_slice(&c.to_le_bytes());
    file.write_all_at(&b, 1024).unwrap();
}
