//! Issue 10, test 6: the hostile ext4 backup corpus
//! (testdata/backup/hostile-ext4/): the committed files are exactly what
//! `ops::ext4::hostile::cases()` generates, and every case gives its
//! expected outcome in `verify` (the strict reader) and in `restore` (which
//! must also leave no file behind on failure).

use std::fs;
use std::path::Path;

use libimage::ops::ext4::list::verify_archive as verify;
use libimage::ops::ext4::restore::{restore, Ext4RestoreOptions};
use libimage::progress::Quiet;

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/backup/hostile-ext4")
}

fn outcome(r: Result<(), libimage::Error>) -> String {
    match r {
        Ok(()) => "OK".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn committed_corpus_is_generated() {
    let cases = libimage::ops::ext4::hostile::cases();
    assert!(cases.len() >= 35);
    let mut tsv = String::new();
    for c in &cases {
        let name = c.file;
        let committed = fs::read(corpus().join(name)).unwrap_or_else(|e| panic!("{name}: {e} (run the mkhostile_ext4 example)"));
        assert!(committed == c.bytes, "{name} differs from what the generator makes");
        let bases = if c.bases.is_empty() { "-".to_string() } else { c.bases.join(",") };
        tsv.push_str(&format!("{name}\t{}\t{}\t{bases}\n", c.verify, c.restore));
    }
    let committed = fs::read_to_string(corpus().join("expected.tsv")).unwrap();
    let lines: String = committed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(lines, tsv, "expected.tsv differs from what the generator makes");
}

#[test]
fn every_case_gives_its_outcome() {
    let tsv = fs::read_to_string(corpus().join("expected.tsv")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut failing = 0;
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.split('\t');
        let (name, want_verify, want_restore) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let bases: Vec<_> = match f.next().unwrap() {
            "-" => Vec::new(),
            b => b.split(',').map(|b| corpus().join(b)).collect(),
        };
        let bytes = fs::read(corpus().join(name)).unwrap();
        let v = outcome(verify(&mut bytes.as_slice(), &bases).map(drop));
        if want_verify == "OK" {
            assert_eq!(v, "OK", "{name}: verify");
        } else {
            assert!(v.contains(want_verify), "{name}: verify said {v:?}, expected {want_verify:?}");
        }
        let dest = t.path().join(format!("{n}-{name}.img"));
        let opts = Ext4RestoreOptions {
            bases,
            ..Default::default()
        };
        let r = outcome(restore(&mut bytes.as_slice(), &dest, &opts, &Quiet).map(drop));
        if want_restore == "OK" {
            assert_eq!(r, "OK", "{name}: restore");
            assert!(dest.exists());
        } else {
            assert!(r.contains(want_restore), "{name}: restore said {r:?}, expected {want_restore:?}");
            assert!(!dest.exists(), "{name}: a failed restore left the image");
            failing += 1;
        }
        n += 1;
    }
    // Nothing else (no temp files) is left in the directory.
    let left: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), n - failing, "{left:?}");
    assert!(n >= 35);
}

/// (context, size, [(lblk, ciphertext block)]) of an encrypted regular file.
type Cipher = (Vec<u8>, u64, Vec<(u64, Vec<u8>)>);

/// [`Cipher`] of every encrypted regular file of an image, sorted.
fn encrypted_files(img: &Path) -> Vec<Cipher> {
    use ext4fs::inode::{S_IFMT, S_IFREG};
    use ext4fs::read::{walk, Fs, ReadError, Visit};
    let f = Fs::open(img).unwrap();
    let mut out = Vec::new();
    walk::<ReadError>(
        &f,
        &mut |e| {
            if e.inode.mode & S_IFMT == S_IFREG {
                if let Some(ctx) = f.context(e.ino, e.inode)? {
                    let map = f.extents(e.ino, e.inode)?;
                    let mut blocks = Vec::new();
                    f.read_mapped::<ReadError>(&map, 1, &mut |l, b| {
                        blocks.push((l, b.to_vec()));
                        Ok(())
                    })?;
                    out.push((ctx, e.inode.size, blocks));
                }
            }
            Ok(Visit::Descend)
        },
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    out.sort();
    out
}

/// The chain full → mid → top restores, from the top, the data each file
/// has in its latest version: file 2 from the full base (unchanged twice),
/// file 6 from mid (rewritten there, unchanged in top). The images restored
/// from mid (with its base) and from top (with the chain) are identical.
#[test]
fn incremental_chain_restores_each_files_latest_data() {
    let t = tempfile::tempdir().unwrap();
    let c = corpus();
    let run = |name: &str, bases: &[&str]| {
        let dest = t.path().join(format!("{name}.img"));
        let opts = Ext4RestoreOptions {
            bases: bases.iter().map(|b| c.join(b)).collect(),
            ..Default::default()
        };
        let bytes = fs::read(c.join(name)).unwrap();
        let rep = restore(&mut bytes.as_slice(), &dest, &opts, &Quiet).unwrap();
        (encrypted_files(&dest), rep)
    };
    let (base, rb) = run("incr-base.tar", &[]);
    let (mid, rm) = run("incr-mid.tar", &["incr-base.tar"]);
    let (top, rt) = run("incr-top.tar", &["incr-mid.tar", "incr-base.tar"]);
    assert_eq!((rb.base_files, rm.base_files, rt.base_files), (0, 1, 2));
    assert_eq!(base.len(), 2);
    assert_eq!(mid, top);
    // File 2 (nonce 02…) is the same in all three; file 6 changed in mid.
    assert_eq!(base[0], mid[0]);
    assert_ne!(base[1], mid[1]);
    assert_eq!(base[1].0, mid[1].0, "same context");
    assert_eq!(mid[1].2[0].1, vec![0x66u8; 4096]);
    assert_eq!(mid[1].2[1], (2, vec![0x99u8; 4096]));
}

/// A base backup whose stored ciphertext changes after it was indexed (and
/// verified) is caught while its data is copied: corrupt input, exit 4.
#[test]
fn a_base_that_changes_after_indexing_is_caught() {
    use libimage::ops::ext4::archive::{read_archive, Ext4Manifest, Ext4Sink, Member};
    use libimage::ops::ext4::base::Ext4Bases;
    use std::io::Read;

    struct Collect(Vec<Member>);
    impl Ext4Sink for Collect {
        fn manifest(&mut self, _m: &Ext4Manifest) -> libimage::Result<()> {
            Ok(())
        }
        fn member(&mut self, m: &Member, _d: &mut dyn FnMut(&mut [u8]) -> libimage::Result<usize>) -> libimage::Result<()> {
            self.0.push(m.clone());
            Ok(())
        }
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base.tar");
    fs::copy(corpus().join("incr-base.tar"), &base).unwrap();
    let bases = Ext4Bases::load(std::slice::from_ref(&base)).unwrap();
    let mut c = Collect(Vec::new());
    read_archive(&mut fs::read(corpus().join("incr-mid.tar")).unwrap().as_slice(), &mut c).unwrap();
    let m = c.0.iter().find(|m| m.unchanged).expect("mid has an unchanged file");

    let mut d = bases.data(m).unwrap();
    let mut v = Vec::new();
    d.read_to_end(&mut v).unwrap();
    d.finish(m).unwrap();
    assert_eq!(v.len(), 8192);

    // File 2's first stored block is all 0x02: flip one bit of it in place.
    let mut raw = fs::read(&base).unwrap();
    let pos = raw.windows(4096).position(|w| w.iter().all(|&b| b == 2)).unwrap();
    raw[pos + 5] ^= 1;
    fs::write(&base, raw).unwrap();
    let mut d = bases.data(m).unwrap();
    v.clear();
    d.read_to_end(&mut v).unwrap();
    let e = d.finish(m).unwrap_err();
    assert!(e.to_string().contains("no longer matches CRYPTIMG.datacrc"), "{e}");
    assert_eq!(libimage::exit::for_error(&e), libimage::exit::CORRUPT);
}
