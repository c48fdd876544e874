//! Builds the `fsck-crypt check` fixtures: one small real image of a tiny
//! tree, and one damaged copy per finding class, plus `expected.json`, the
//! manifest of the finding codes and exit code each must give.
//!
//! ```text
//! cargo run -p libimage --example mkfixtures -- testdata/fsck
//! ```
//!
//! Everything is deterministic (fixed key, deterministic nonces, fixed
//! times), so running it again reproduces the same files as long as the
//! writer does not change. Damage that must keep every checksum valid
//! (overlap, refcount, dangling entry, cycle, bad context, ...) is made by
//! editing the decoded metadata and committing it through the normal writer;
//! byte flips, truncation, zeros and random bytes are applied to the file.
//!
//! The fsck-crypt tests include this file (`#[path]`) to regenerate the
//! fixtures into a temporary directory and check them too.

use std::error::Error as StdError;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use fscrypt::{MasterKey, Nonce};
use libimage::engine::image::{load_metadata, newest, read_slots, Access, Image, Keyring};
use libimage::format::inode::{Body, DirEntry, S_IFDIR, S_IFIFO, S_IFREG};
use libimage::format::meta::merge_ranges;
use libimage::format::metablock;
use libimage::format::superblock::Superblock;
use libimage::ops::build::{Builder, Reproducible};
use libimage::ops::read::TreeReader;
use libimage::progress::Quiet;
use libimage::tree::{EntrySink, Meta, SourceEntry, SourceKind, Timespec};
use libimage::BLOCK_SIZE;

type Res<T> = std::result::Result<T, Box<dyn StdError>>;

/// The committed test key (`test.key`). Not secret: test data only.
pub fn test_key_bytes() -> [u8; 64] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3))
}

/// A key the images do not use (`other.key`).
pub fn other_key_bytes() -> [u8; 64] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(13).wrapping_add(101))
}

const TIME: i64 = 1_700_000_000;

/// One manifest entry: run `fsck-crypt check IMAGE ARGS...`, expect exactly
/// `codes` (sorted, unique) and `exit`; `repair` is the expected exit of
/// `--repair` with the same args and of the check after it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Case {
    pub class: String,
    pub image: String,
    pub args: Vec<String>,
    pub codes: Vec<String>,
    pub exit: i32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub repair: Option<[i32; 2]>,
}

fn case(class: &str, image: &str, args: &[&str], codes: &[&str], exit: i32, repair: Option<[i32; 2]>) -> Case {
    let mut codes: Vec<String> = codes.iter().map(|s| s.to_string()).collect();
    codes.sort();
    Case {
        class: class.into(),
        image: image.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        codes,
        exit,
        repair,
    }
}

fn meta(mode: u32) -> Meta {
    let t = Timespec { sec: TIME, nsec: 0 };
    Meta {
        mode,
        uid: 1000,
        gid: 1000,
        atime: t,
        mtime: t,
        ctime: t,
        ..Meta::default()
    }
}

fn path(p: &str) -> Vec<Vec<u8>> {
    p.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect()
}

fn file(sink: &mut dyn EntrySink, p: &str, content: &[u8]) -> Res<()> {
    let mut r = content;
    sink.entry(SourceEntry {
        path: path(p),
        meta: meta(S_IFREG | 0o644),
        kind: SourceKind::File {
            size: content.len() as u64,
            content: &mut r,
        },
    })?;
    Ok(())
}

fn entry(sink: &mut dyn EntrySink, p: &str, mode: u32, kind: SourceKind<'_>) -> Res<()> {
    sink.entry(SourceEntry {
        path: path(p),
        meta: meta(mode),
        kind,
    })?;
    Ok(())
}

/// The tiny tree: files (one with a hole), nested directories, a symlink, a
/// hard link and a FIFO.
pub fn build_clean(dest: &Path, key: &MasterKey) -> Res<()> {
    let _ = fs::remove_file(dest);
    let f = fs::OpenOptions::new().read(true).write(true).create_new(true).open(dest)?;
    let repro = Reproducible {
        deterministic: true,
        clamp: Some(TIME),
    };
    let uuid = key.deterministic_nonces().nonce(&[b"uuid", b"main"]).0;
    let mut img = Image::create(f, dest, uuid, 0)?;
    img.commit(TIME)?;
    Builder::add_snapshot(&mut img, "main", key, repro, TIME)?;
    let keys = Keyring::default();
    let mut b = Builder::new(&mut img, "main", key, &keys, repro, &Quiet)?;
    entry(&mut b, "", S_IFDIR | 0o755, SourceKind::Dir)?;
    file(&mut b, "a.txt", b"hello, fsck\n")?;
    entry(&mut b, "d1", S_IFDIR | 0o755, SourceKind::Dir)?;
    let mut big = vec![0u8; 10_000];
    for (i, x) in big.iter_mut().enumerate().take(BLOCK_SIZE) {
        *x = (i % 251) as u8 + 1;
    }
    for x in big.iter_mut().skip(2 * BLOCK_SIZE) {
        *x = 0x5a;
    }
    file(&mut b, "d1/b.bin", &big)?;
    entry(&mut b, "d1/d2", S_IFDIR | 0o700, SourceKind::Dir)?;
    file(&mut b, "d1/d2/c.txt", b"c")?;
    entry(
        &mut b,
        "link",
        libimage::format::inode::S_IFLNK | 0o777,
        SourceKind::Symlink { target: b"a.txt".to_vec() },
    )?;
    entry(&mut b, "d1/hard", S_IFREG | 0o644, SourceKind::HardLink { target: path("a.txt") })?;
    entry(&mut b, "fifo", S_IFIFO | 0o600, SourceKind::Special)?;
    b.finish();
    img.commit(TIME)?;
    Ok(())
}

fn flip(p: &Path, off: u64, mask: u8) -> Res<()> {
    let f = fs::OpenOptions::new().read(true).write(true).open(p)?;
    let mut b = [0u8];
    f.read_exact_at(&mut b, off)?;
    b[0] ^= mask;
    f.write_all_at(&b, off)?;
    Ok(())
}

/// Opens `p`, lets `edit` change the metadata (with the image's tree
/// readable through the key), and commits it through the normal writer.
fn edit(p: &Path, f: impl FnOnce(&mut Image, &Lookup) -> Res<()>) -> Res<()> {
    let (mut img, _) = Image::open_unchecked(p, Access::ReadWrite)?;
    let lk = Lookup::new(&img)?;
    f(&mut img, &lk)?;
    img.commit(TIME)?;
    Ok(())
}

/// Inode numbers and extents of the tiny tree, looked up with the key.
pub struct Lookup {
    pub ino: std::collections::HashMap<&'static str, u64>,
}

impl Lookup {
    fn new(img: &Image) -> Res<Lookup> {
        let keys = Keyring::new(vec![MasterKey::from_bytes(&test_key_bytes())?]);
        let snap = img.snapshot(Some("main"))?;
        let r = TreeReader::new(img, snap, &keys);
        let mut ino = std::collections::HashMap::new();
        for p in ["", "a.txt", "d1", "d1/b.bin", "d1/d2", "d1/d2/c.txt", "link", "fifo"] {
            ino.insert(p, r.lookup(p.as_bytes())?);
        }
        Ok(Lookup { ino })
    }
}

fn dir_ctx(img: &Image, ino: u64) -> Res<fscrypt::context::PolicyContext> {
    match img.meta().snapshots[0].inodes.get(&ino).map(|i| &i.body) {
        Some(Body::Dir { ctx, .. }) => Ok(*ctx),
        _ => Err("not a directory".into()),
    }
}

fn entries_mut(img: &mut Image, ino: u64) -> Res<&mut Vec<DirEntry>> {
    match img.meta_mut_unchecked().snapshots[0].inodes.get_mut(&ino).map(|i| &mut i.body) {
        Some(Body::Dir { entries, .. }) => Ok(entries),
        _ => Err("not a directory".into()),
    }
}

fn first_extent(img: &Image, ino: u64) -> Res<u64> {
    match img.meta().snapshots[0].inodes.get(&ino).map(|i| &i.body) {
        Some(Body::File { map }) if !map.is_empty() => Ok(map[0].extent),
        _ => Err("not a file with data".into()),
    }
}

/// Writes the metadata `meta` as generation + 1 without the writer's
/// rebuild of the allocation map (for a damaged allocation map).
fn raw_commit(p: &Path, change: impl FnOnce(&mut libimage::format::meta::Metadata)) -> Res<()> {
    let f = fs::OpenOptions::new().read(true).write(true).open(p)?;
    let sb = newest(&read_slots(&f))?;
    let mut m = load_metadata(&f, &sb).map_err(|e| e.into_error().to_string())?;
    change(&mut m);
    let stream = m.to_bytes();
    let start = sb.total_blocks;
    let generation = sb.generation + 1;
    let region = metablock::encode(&stream, start, generation);
    f.write_all_at(&region, start * BLOCK_SIZE as u64)?;
    let n = metablock::blocks_for(stream.len());
    let nsb = Superblock {
        generation,
        total_blocks: start + n,
        meta_start: start,
        meta_blocks: n,
        meta_bytes: stream.len() as u64,
        meta_crc: libimage::format::bytes::crc32c(&stream),
        commit_time: TIME,
        ..sb
    };
    f.write_all_at(&nsb.to_bytes(), nsb.slot() * BLOCK_SIZE as u64)?;
    Ok(())
}

/// Writes every fixture and `expected.json` into `dir`. Returns the cases.
pub fn generate(dir: &Path) -> Res<Vec<Case>> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("test.key"), test_key_bytes())?;
    fs::write(dir.join("other.key"), other_key_bytes())?;
    let key = MasterKey::from_bytes(&test_key_bytes())?;
    let clean = dir.join("clean.img");
    build_clean(&clean, &key)?;
    let copy = |name: &str| -> Res<std::path::PathBuf> {
        let p = dir.join(name);
        fs::copy(&clean, &p)?;
        Ok(p)
    };
    let sb = {
        let f = fs::File::open(&clean)?;
        newest(&read_slots(&f))?
    };
    let bs = BLOCK_SIZE as u64;
    let k = "test.key";
    let o = "other.key";
    let mut cases = vec![
        case("clean image", "clean.img", &[], &[], 0, Some([0, 0])),
        case("clean image, data scrub", "clean.img", &["--data"], &[], 0, None),
        case("right key", "clean.img", &["--key-file", k, "--data"], &[], 0, None),
        case(
            "wrong key",
            "clean.img",
            &["--key-file", o],
            &["I_KEY_MISSING", "W_KEY_UNUSED"],
            64,
            None,
        ),
        case(
            "two keys, one needed",
            "clean.img",
            &["--key-file", k, "--key-file", o],
            &["W_KEY_UNUSED"],
            64,
            None,
        ),
    ];

    // A bit flip in the older (spare) superblock slot.
    let p = copy("sb_flip.img")?;
    flip(&p, (1 - sb.slot()) * bs + 40, 0x04)?;
    cases.push(case(
        "bit flip in the spare superblock",
        "sb_flip.img",
        &[],
        &["W_SUPERBLOCK_SLOT"],
        4,
        Some([1, 0]),
    ));

    // A bit flip in the live superblock: the image falls back to the first,
    // empty generation, which the checker must not call clean.
    let p = copy("sb_live_flip.img")?;
    flip(&p, sb.slot() * bs + 40, 0x04)?;
    cases.push(case(
        "bit flip in the live superblock",
        "sb_live_flip.img",
        &[],
        &["E_SUPERBLOCK_NEWER", "I_TRAILING_BYTES"],
        4,
        Some([4, 4]),
    ));

    // A flip in a metadata block.
    let p = copy("meta_flip.img")?;
    flip(&p, sb.meta_start * bs + 100, 0x01)?;
    cases.push(case(
        "flip in a metadata block",
        "meta_flip.img",
        &[],
        &["E_META_BLOCK"],
        4,
        Some([4, 4]),
    ));

    // A flip in file data: found only by the scrub.
    let p = copy("data_flip.img")?;
    {
        let (img, _) = Image::open_unchecked(&p, Access::ReadOnly)?;
        let lk = Lookup::new(&img)?;
        let e = img.meta().extents[&first_extent(&img, lk.ino["a.txt"])?].start;
        drop(img);
        flip(&p, e * bs + 5, 0x80)?;
    }
    cases.push(case("flip in data, without --data", "data_flip.img", &[], &[], 0, None));
    cases.push(case("flip in data", "data_flip.img", &["--data"], &["E_DATA_CRC"], 4, Some([4, 4])));

    // Overlapping extents: c.txt's extent moved onto b.bin's first block.
    let p = copy("overlap.img")?;
    edit(&p, |img, lk| {
        let target = img.meta().extents[&first_extent(img, lk.ino["d1/b.bin"])?].start;
        let id = first_extent(img, lk.ino["d1/d2/c.txt"])?;
        if let Some(e) = img.meta_mut_unchecked().extents.get_mut(&id) {
            e.start = target;
        }
        Ok(())
    })?;
    cases.push(case(
        "overlapping extents",
        "overlap.img",
        &[],
        &["E_EXTENT_OVERLAP"],
        4,
        Some([4, 4]),
    ));

    // A wrong refcount.
    let p = copy("refcount.img")?;
    edit(&p, |img, lk| {
        let id = first_extent(img, lk.ino["a.txt"])?;
        if let Some(e) = img.meta_mut_unchecked().extents.get_mut(&id) {
            e.refcount += 2;
        }
        Ok(())
    })?;
    cases.push(case("wrong refcount", "refcount.img", &[], &["E_REFCOUNT"], 4, Some([1, 0])));

    // A dangling entry: d1 gets "ghost", naming an inode that does not exist.
    let p = copy("dangling.img")?;
    edit(&p, |img, lk| {
        let d1 = lk.ino["d1"];
        let ctx = dir_ctx(img, d1)?;
        let ct = key.names_key(&ctx.nonce).encrypt_name(b"ghost")?;
        let missing = img.meta_mut_unchecked().snapshots[0].alloc_ino();
        let es = entries_mut(img, d1)?;
        es.push(DirEntry { name: ct, ino: missing });
        es.sort_unstable();
        Ok(())
    })?;
    cases.push(case("dangling entry", "dangling.img", &[], &["E_DANGLING_ENTRY"], 4, Some([1, 0])));

    // An orphan: the entry of d1/d2/c.txt removed, the inode kept.
    let p = copy("orphan.img")?;
    edit(&p, |img, lk| {
        let c = lk.ino["d1/d2/c.txt"];
        entries_mut(img, lk.ino["d1/d2"])?.retain(|e| e.ino != c);
        Ok(())
    })?;
    cases.push(case("orphaned inode, no key", "orphan.img", &[], &["E_ORPHAN"], 4, Some([4, 4])));
    cases.push(case(
        "orphaned inode, with key",
        "orphan.img",
        &["--key-file", k],
        &["E_ORPHAN"],
        4,
        Some([1, 0]),
    ));

    // An orphaned directory with its subtree: the root's entry for d1 removed.
    let p = copy("orphan_dir.img")?;
    edit(&p, |img, lk| {
        let d1 = lk.ino["d1"];
        entries_mut(img, lk.ino[""])?.retain(|e| e.ino != d1);
        Ok(())
    })?;
    cases.push(case(
        "orphaned directory, with key",
        "orphan_dir.img",
        &["--key-file", k],
        &["E_ORPHAN"],
        4,
        Some([1, 0]),
    ));

    // A directory cycle: d1/d2/loop names d1 (link count adjusted so the
    // cycle is the only finding).
    let p = copy("cycle.img")?;
    edit(&p, |img, lk| {
        let (d1, d2) = (lk.ino["d1"], lk.ino["d1/d2"]);
        let ctx = dir_ctx(img, d2)?;
        let ct = key.names_key(&ctx.nonce).encrypt_name(b"loop")?;
        entries_mut(img, d2)?.push(DirEntry { name: ct, ino: d1 });
        if let Some(i) = img.meta_mut_unchecked().snapshots[0].inodes.get_mut(&d1) {
            i.nlink = 2;
        }
        Ok(())
    })?;
    cases.push(case("directory cycle", "cycle.img", &[], &["E_DIR_CYCLE"], 4, Some([4, 4])));

    // A bad context version: d2's policy context says version 1.
    let p = copy("bad_context.img")?;
    edit(&p, |img, lk| {
        if let Some(Body::Dir { ctx, .. }) = img.meta_mut_unchecked().snapshots[0]
            .inodes
            .get_mut(&lk.ino["d1/d2"])
            .map(|i| &mut i.body)
        {
            ctx.version = 1;
        }
        Ok(())
    })?;
    cases.push(case("bad context version", "bad_context.img", &[], &["E_CONTEXT"], 4, Some([4, 4])));

    // A truncated image.
    let p = copy("truncated.img")?;
    let len = fs::metadata(&p)?.len();
    fs::OpenOptions::new().write(true).open(&p)?.set_len((len / 2) & !(bs - 1))?;
    cases.push(case("truncated image", "truncated.img", &[], &["E_TRUNCATED"], 4, Some([4, 4])));

    // An image of zeros, and one of random bytes.
    fs::write(dir.join("zeros.img"), vec![0u8; 40 * 1024])?;
    cases.push(case("image of zeros", "zeros.img", &[], &["E_NO_SUPERBLOCK"], 4, Some([4, 4])));
    let mut rnd = vec![0u8; 40 * 1024];
    let mut s = 0x1234_5678_9abc_def0u64;
    for b in rnd.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *b = s as u8;
    }
    fs::write(dir.join("random.img"), rnd)?;
    cases.push(case("random bytes", "random.img", &[], &["E_NO_SUPERBLOCK"], 4, Some([4, 4])));

    // Leaked blocks: an extent nothing references.
    let p = copy("leaked.img")?;
    edit(&p, |img, _| {
        let ctx = fscrypt::context::ExtentContext::new(key.identifier(), Nonce([7; 16]));
        img.write_raw_extent(ctx, &[0x33; BLOCK_SIZE])?;
        Ok(())
    })?;
    cases.push(case(
        "leaked extent",
        "leaked.img",
        &[],
        &["W_EXTENT_UNREFERENCED"],
        4,
        Some([1, 0]),
    ));

    // A damaged allocation map: one extent's blocks missing from it (free but
    // referenced) and a free block in it (leaked).
    let p = copy("alloc_map.img")?;
    let c_ext = {
        let (img, _) = Image::open_unchecked(&p, Access::ReadOnly)?;
        let lk = Lookup::new(&img)?;
        img.meta().extents[&first_extent(&img, lk.ino["d1/d2/c.txt"])?].clone()
    };
    raw_commit(&p, |m| {
        let mut r: Vec<(u64, u64)> = m
            .extents
            .values()
            .filter(|e| e.id != c_ext.id)
            .map(|e| (e.start, u64::from(e.blocks)))
            .collect();
        r.push((sb.meta_start, sb.meta_blocks));
        r.sort_unstable();
        m.alloc = merge_ranges(r);
    })?;
    cases.push(case(
        "leaked and free-but-referenced blocks",
        "alloc_map.img",
        &[],
        &["E_ALLOC_MAP", "W_BLOCKS_LEAKED"],
        4,
        Some([1, 0]),
    ));

    // A wrong link count.
    let p = copy("nlink.img")?;
    edit(&p, |img, lk| {
        if let Some(i) = img.meta_mut_unchecked().snapshots[0].inodes.get_mut(&lk.ino["fifo"]) {
            i.nlink = 3;
        }
        Ok(())
    })?;
    cases.push(case("wrong link count", "nlink.img", &[], &["E_NLINK"], 4, Some([1, 0])));

    // A damaged name ciphertext (length kept): only a key can tell.
    let p = copy("bad_name.img")?;
    edit(&p, |img, lk| {
        let a = lk.ino["a.txt"];
        for e in entries_mut(img, lk.ino[""])?.iter_mut().filter(|e| e.ino == a) {
            e.name[3] ^= 0x20;
        }
        Ok(())
    })?;
    cases.push(case("damaged name, no key", "bad_name.img", &[], &[], 0, None));
    cases.push(case(
        "damaged name",
        "bad_name.img",
        &["--key-file", k],
        &["E_NAME_DECRYPT"],
        4,
        Some([4, 4]),
    ));

    // A damaged symlink target ciphertext.
    let p = copy("bad_symlink.img")?;
    edit(&p, |img, lk| {
        if let Some(Body::Symlink { blob, .. }) = img.meta_mut_unchecked().snapshots[0]
            .inodes
            .get_mut(&lk.ino["link"])
            .map(|i| &mut i.body)
        {
            blob[5] ^= 0x01;
        }
        Ok(())
    })?;
    cases.push(case(
        "damaged symlink target",
        "bad_symlink.img",
        &["--key-file", k],
        &["E_SYMLINK_DECRYPT"],
        4,
        Some([4, 4]),
    ));

    let mut f = fs::File::create(dir.join("expected.json"))?;
    writeln!(f, "{}", serde_json::to_string_pretty(&cases)?)?;
    Ok(cases)
}

#[allow(dead_code)]
fn main() -> Res<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "testdata/fsck".into());
    let cases = generate(Path::new(&dir))?;
    println!("wrote {} fixture cases to {dir}", cases.len());
    Ok(())
}
