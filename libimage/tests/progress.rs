//! Progress events of the long commands, through a recording `Progress`:
//! totals where they are known (extract, backup, restore from a file), the
//! advances of such a phase adding up to its total, and the named sync phase
//! around every final commit or fsync.

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use fscrypt::MasterKey;
use libimage::engine::image::{Access, Image, Keyring};
use libimage::ops::backup::{create_backup, restore_backup, BackupOptions, RestoreOptions};
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::lifecycle::{self, UpdateOptions};
use libimage::ops::read::extract_paths;
use libimage::progress::{Progress, SYNC};
use testkit::TestRng;

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Start(String, Option<u64>),
    Advance(u64, u64),
    Finish,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Ev>>);

impl Progress for Recorder {
    fn start(&self, phase: &str, total: Option<u64>) {
        self.0.lock().unwrap().push(Ev::Start(phase.to_string(), total));
    }
    fn advance(&self, files: u64, bytes: u64) {
        self.0.lock().unwrap().push(Ev::Advance(files, bytes));
    }
    fn finish(&self) {
        self.0.lock().unwrap().push(Ev::Finish);
    }
}

/// One phase: its name, its total, and the bytes and files advanced in it.
#[derive(Debug)]
struct Phase {
    name: String,
    total: Option<u64>,
    bytes: u64,
    files: u64,
    /// Advances of bytes alone (data reported while a file is read).
    reads: u64,
}

impl Recorder {
    fn phases(&self) -> Vec<Phase> {
        let mut out: Vec<Phase> = Vec::new();
        let mut open = false;
        for e in self.0.lock().unwrap().iter() {
            match e {
                Ev::Start(name, total) => {
                    out.push(Phase {
                        name: name.clone(),
                        total: *total,
                        bytes: 0,
                        files: 0,
                        reads: 0,
                    });
                    open = true;
                }
                Ev::Advance(f, b) => {
                    assert!(open, "an advance outside a phase: {:?}", self.0.lock());
                    let p = out.last_mut().unwrap();
                    p.bytes += b;
                    p.files += f;
                    p.reads += u64::from(*f == 0 && *b > 0);
                }
                Ev::Finish => open = false,
            }
        }
        out
    }

    /// The phase named `name`, which must have a total its advances reach.
    fn totalled(&self, name: &str) -> Phase {
        let phases = self.phases();
        let p = phases
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} phase: {:?}", self.phases()));
        let total = p.total.unwrap_or_else(|| panic!("{name} has no total: {p:?}"));
        assert!(total > 0, "{p:?}");
        assert_eq!(p.bytes, total, "{name}: the advances do not add up to the total");
        p
    }

    fn has_sync(&self) -> bool {
        self.phases().iter().any(|p| p.name == SYNC)
    }
}

fn key() -> MasterKey {
    MasterKey::from_bytes(&(1..=64u8).collect::<Vec<_>>()).unwrap()
}

/// A tree with a hard link, a sparse-ish file, empty files and a symlink.
fn make_tree(root: &Path, seed: u64) -> u64 {
    let mut rng = TestRng::new(seed);
    let mut bytes = 0;
    for i in 0..40usize {
        let dir = root.join(format!("d{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        let len = (rng.next_u64() % 60_000) as usize * (i % 5).min(1);
        fs::write(dir.join(format!("f{i}")), rng.bytes(len)).unwrap();
        bytes += len as u64;
    }
    fs::hard_link(root.join("d0/f4"), root.join("d1/link")).unwrap();
    std::os::unix::fs::symlink("d0/f4", root.join("sym")).unwrap();
    bytes
}

fn dir_bytes(d: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for e in walk(d) {
        let m = fs::symlink_metadata(&e).unwrap();
        use std::os::unix::fs::MetadataExt;
        if m.is_file() && seen.insert(m.ino()) {
            n += m.len();
        }
    }
    n
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn create_extract_backup_restore_report_totals_and_a_sync_phase() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    let bytes = make_tree(&tree, 5);
    assert_eq!(dir_bytes(&tree), bytes);
    let img = t.path().join("img");

    // create: a spinner (no cheap total for a tree), then the sync.
    let rec = Recorder::default();
    create_image(&img, Source::Dir(&tree), &key(), &CreateOptions::default(), &rec).unwrap();
    assert!(rec.has_sync(), "create: no {SYNC:?} phase: {:?}", rec.phases());
    let p = rec.phases().into_iter().find(|p| p.name == "create").unwrap();
    assert_eq!(p.bytes, bytes, "create: {p:?}");

    // extract: the snapshot's file bytes, known from the metadata.
    let keys = Keyring::new(vec![key()]);
    let image = Image::open(&img, Access::ReadOnly).unwrap();
    let rec = Recorder::default();
    extract_paths(&image, None, &keys, &[], &t.path().join("x"), false, &rec).unwrap();
    let p = rec.totalled("extract");
    assert_eq!(p.total, Some(bytes));
    // Bytes arrive as they are read, not only when a file is done.
    assert!(p.reads >= p.files / 2, "{p:?}");
    // Of a part: that part's bytes.
    let rec = Recorder::default();
    extract_paths(
        &image,
        None,
        &keys,
        &[b"d1".to_vec(), b"d0/f4".to_vec()],
        &t.path().join("y"),
        false,
        &rec,
    )
    .unwrap();
    let want = dir_bytes(&t.path().join("y"));
    assert!(want > 0);
    assert_eq!(rec.totalled("extract").total, Some(want));
    drop(image);

    // backup: the ciphertext bytes to store.
    let rec = Recorder::default();
    let mut archive = Vec::new();
    let r = create_backup(&img, &mut archive, &BackupOptions::default(), &rec).unwrap();
    assert_eq!(rec.totalled("backup").total, Some(r.stored_bytes));

    // restore from a file of known length: the archive's bytes, then the sync.
    let rec = Recorder::default();
    let opts = RestoreOptions {
        archive_bytes: Some(archive.len() as u64),
        ..Default::default()
    };
    restore_backup(&mut &archive[..], &t.path().join("restored"), &opts, &rec).unwrap();
    assert_eq!(rec.totalled("restore").total, Some(archive.len() as u64));
    assert!(rec.has_sync(), "restore: no {SYNC:?} phase: {:?}", rec.phases());
    // From a pipe (length unknown): a spinner.
    let rec = Recorder::default();
    restore_backup(&mut &archive[..], &t.path().join("restored2"), &RestoreOptions::default(), &rec).unwrap();
    let p = rec.phases().into_iter().find(|p| p.name == "restore").unwrap();
    assert_eq!((p.total, p.bytes), (None, archive.len() as u64));
}

#[test]
fn lifecycle_commits_are_a_sync_phase() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    make_tree(&tree, 6);
    let img = t.path().join("img");
    create_image(
        &img,
        Source::Dir(&tree),
        &key(),
        &CreateOptions::default(),
        &libimage::progress::Quiet,
    )
    .unwrap();
    fs::write(tree.join("d2/new"), vec![7u8; 30_000]).unwrap();
    let keys = Keyring::new(vec![key()]);
    let rec = Recorder::default();
    let opts = UpdateOptions {
        delete_missing: true,
        rewrite_all: false,
        time: 1,
    };
    lifecycle::update(
        &mut Image::open(&img, Access::ReadWrite).unwrap(),
        "main",
        Source::Dir(&tree),
        &keys,
        &opts,
        &rec,
    )
    .unwrap();
    assert!(rec.has_sync(), "update: {:?}", rec.phases());
    let rec = Recorder::default();
    let copts = lifecycle::CompactOptions {
        batch_bytes: 1 << 20,
        time: 1,
    };
    lifecycle::compact(&mut Image::open(&img, Access::ReadWrite).unwrap(), &copts, &rec).unwrap();
    assert!(rec.has_sync(), "compact: {:?}", rec.phases());
}

/// ext4 `create` (the measured source's file bytes, then the sync) and
/// `extract` (to a directory and as a tar stream): a total of the
/// selection's file bytes, reached by the advances.
#[test]
fn ext4_create_extract_backup_restore_report_progress() {
    use libimage::ops::ext4::{self, create_ext4, Ext4Options, Ext4Source};
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let bytes = make_tree(&tree, 9);
    let img = t.path().join("e.img");
    create_ext4(
        &img,
        Ext4Source::Dir(&tree),
        &key(),
        &Ext4Options::default(),
        &libimage::progress::Quiet,
    )
    .unwrap();
    let fs4 = ext4::reader::open(&img).unwrap();
    let keys = Keyring::new(vec![key()]);
    let rec = Recorder::default();
    ext4::extract::extract_paths(&fs4, &keys, &[], &t.path().join("x"), false, &rec).unwrap();
    let p = rec.totalled("extract");
    assert_eq!(p.total, Some(bytes), "{p:?}");
    let rec = Recorder::default();
    ext4::extract::extract_tar(&fs4, &keys, &[b"data/d0".to_vec()], Vec::new(), &rec).unwrap();
    let p = rec.totalled("extract");
    assert_eq!(p.total, Some(dir_bytes(&tree.join("d0"))), "{p:?}");

    // backup: no total (known only after the walk), but the bytes stored;
    // restore from a file: the archive's length, then the sync.
    let rec = Recorder::default();
    let mut archive = Vec::new();
    let rep = ext4::backup::create(&img, &mut archive, None, &rec).unwrap();
    let p = rec.phases().into_iter().find(|p| p.name == "backup").unwrap();
    assert_eq!(p.bytes, rep.ciphertext_bytes + rep.plain_bytes, "{p:?}");
    assert_eq!(p.files, rep.members, "{p:?}");
    let rec = Recorder::default();
    let opts = ext4::restore::Ext4RestoreOptions {
        archive_bytes: Some(archive.len() as u64),
        ..Default::default()
    };
    ext4::restore::restore(&mut archive.as_slice(), &t.path().join("r.img"), &opts, &rec).unwrap();
    assert_eq!(rec.totalled("restore").total, Some(archive.len() as u64));
    assert!(rec.has_sync(), "ext4 restore: no {SYNC:?} phase: {:?}", rec.phases());
}
