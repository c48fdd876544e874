//! Tiny inputs that used to cost hours (issue 11 §4): the cost of `create`
//! must be linear in the bytes actually present and the members listed.

use std::fs;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use fscrypt::MasterKey;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::read::TreeReader;
use libimage::progress::Quiet;

fn key() -> MasterKey {
    let raw: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(13).wrapping_add(5)).collect();
    MasterKey::from_bytes(&raw).unwrap()
}

fn opts() -> CreateOptions {
    CreateOptions {
        snapshot: "main".into(),
        repro: Default::default(),
        force: false,
        size: None,
    }
}

/// The allocator the tools use (each binary sets it): a deep tar's cost is
/// one small allocation per path component per member, linear in the bytes
/// of the stream (about 2 × depth² for nested directories), and the timing
/// should be of what `mkfs-crypt` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIMIT: Duration = Duration::from_secs(5);

/// CPU time of the calling thread (user + system, from
/// `/proc/thread-self/stat`, in USER_HZ = 100 ticks per second). The limits
/// are on CPU time, which other builds sharing the machine do not inflate;
/// wall time is printed, and must stay within a generous bound too.
fn thread_cpu() -> Duration {
    let stat = fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|x| x.parse().unwrap()).collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// Runs `f`, checks its CPU time against [`LIMIT`] and its wall time against
/// six times that, and returns its result.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (c0, t0) = (thread_cpu(), Instant::now());
    let r = f();
    let (cpu, wall) = (thread_cpu() - c0, t0.elapsed());
    eprintln!("{what}: {cpu:?} CPU, {wall:?} wall");
    assert!(cpu < LIMIT, "{what} took {cpu:?} of CPU");
    assert!(wall < LIMIT * 6, "{what} took {wall:?}");
    r
}

/// GNU base-256 encoding of `v` in a numeric header field.
fn base256(field: &mut [u8], v: u64) {
    field.fill(0);
    field[0] = 0x80;
    let n = field.len();
    field[n - 8..].copy_from_slice(&v.to_be_bytes());
}

/// An old-GNU sparse member (typeflag 'S') of 512 stored bytes claiming a
/// logical size of 4 PiB, the data at its very end: 1.5 KB of tar.
fn sparse_bomb() -> Vec<u8> {
    let real: u64 = 4 << 50;
    let mut h = tar::Header::new_gnu();
    h.set_path("bomb").unwrap();
    h.set_mode(0o644);
    h.set_size(512);
    h.set_entry_type(tar::EntryType::GNUSparse);
    {
        let g = h.as_gnu_mut().unwrap();
        base256(&mut g.realsize, real);
        base256(&mut g.sparse[0].offset, real - 512);
        base256(&mut g.sparse[0].numbytes, 512);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0x5a; 512]);
    out.extend_from_slice(&[0; 1024]);
    out
}

#[test]
fn sparse_bomb_costs_nothing() {
    let tar = sparse_bomb();
    assert_eq!(tar.len(), 2048);
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("img");
    let r = timed("sparse bomb", || {
        create_image(&p, Source::Tar(&mut &tar[..]), &key(), &opts(), &Quiet).unwrap()
    });
    assert_eq!(r.stats.files, 1);
    // The file reads back with its size and its one block of data at the end.
    let img = Image::open(&p, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![key()]);
    let snap = img.snapshot(None).unwrap();
    let tr = TreeReader::new(&img, snap, &keys);
    let ino = tr.lookup(b"bomb").unwrap();
    assert_eq!(tr.inode(ino).unwrap().size, 4 << 50);
    let mut runs = Vec::new();
    tr.read_file(ino, &mut |off, data| {
        runs.push((off, data.iter().filter(|&&b| b == 0x5a).count()));
        Ok(())
    })
    .unwrap();
    assert_eq!(runs, vec![((4 << 50) - 4096, 512)]);
    assert!(fs::metadata(&p).unwrap().len() < 1 << 20);
}

/// A tar stream of `depth` nested directories `d/d/…/d/`, generated on the
/// fly (GNU long names: the stream is about 2 × depth² bytes).
struct DeepTar {
    depth: usize,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl DeepTar {
    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.next == self.depth {
            self.buf.resize(1024, 0);
            self.next += 1;
            return;
        }
        if self.next > self.depth {
            return;
        }
        self.next += 1;
        let mut name = "d/".repeat(self.next).into_bytes();
        name.push(0);
        let mut l = tar::Header::new_gnu();
        l.set_path("././@LongLink").unwrap();
        l.set_entry_type(tar::EntryType::GNULongName);
        l.set_size(name.len() as u64);
        l.set_cksum();
        self.buf.extend_from_slice(l.as_bytes());
        let pad = name.len().div_ceil(512) * 512;
        name.resize(pad, 0);
        self.buf.extend_from_slice(&name);
        let mut h = tar::Header::new_gnu();
        h.set_path("placeholder/").unwrap();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
    }
}

impl Read for DeepTar {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.refill();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn twenty_thousand_nested_directories_are_linear() {
    let depth = 20_000;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("img");
    let mut tar = DeepTar {
        depth,
        next: 0,
        buf: Vec::new(),
        pos: 0,
    };
    let r = timed("20,000 nested directories", || {
        create_image(&p, Source::Tar(&mut tar), &key(), &opts(), &Quiet).unwrap()
    });
    assert_eq!(r.stats.dirs, depth as u64);
    // The deepest directory is there.
    let img = Image::open(&p, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![key()]);
    let tr = TreeReader::new(&img, img.snapshot(None).unwrap(), &keys);
    let deepest = "d/".repeat(depth);
    tr.lookup(deepest.trim_end_matches('/').as_bytes()).unwrap();
}

/// A 64 GiB sparse file in `--root` with two written blocks costs two blocks.
#[test]
fn sparse_source_file_costs_its_data() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let f = fs::File::create(tree.join("sparse")).unwrap();
    f.set_len(64 << 30).unwrap();
    f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
    f.write_all_at(&[2u8; 100], (64 << 30) - 100).unwrap();
    drop(f);
    if !testkit::is_sparse(&tree.join("sparse")) {
        testkit::skip_or_fail(
            "sparse_source_file_costs_its_data",
            &format!("{} has no sparse files", d.path().display()),
        );
        return;
    }
    let p = d.path().join("img");
    timed("64 GiB sparse source file", || {
        create_image(&p, Source::Dir(&tree), &key(), &opts(), &Quiet).unwrap()
    });
    let img = Image::open(&p, Access::ReadOnly).unwrap();
    let keys = Keyring::new(vec![key()]);
    let tr = TreeReader::new(&img, img.snapshot(None).unwrap(), &keys);
    let ino = tr.lookup(b"sparse").unwrap();
    assert_eq!(tr.inode(ino).unwrap().size, 64 << 30);
    let mut runs = Vec::new();
    tr.read_file(ino, &mut |off, data| {
        runs.push((off, data.len(), data.iter().map(|&b| u64::from(b)).sum::<u64>()));
        Ok(())
    })
    .unwrap();
    assert_eq!(runs, vec![(1 << 20, 4096, 4096), ((64 << 30) - 4096, 4096, 200)]);
}
