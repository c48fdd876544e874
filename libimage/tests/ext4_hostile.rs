//! Issue 10, test 6: the hostile ext4 backup corpus
//! (testdata/backup/hostile-ext4/): the committed files are exactly what
//! `ops::ext4::hostile::cases()` generates, and every case gives its
//! expected outcome in `verify` (the strict reader) and in `restore` (which
//! must also leave no file behind on failure).

use std::fs;
use std::path::Path;

use libimage::ops::ext4::archive::{read_archive, Ext4Manifest, Ext4Sink, Member};
use libimage::ops::ext4::restore::{restore, Ext4RestoreOptions};

struct Null;
impl Ext4Sink for Null {
    fn manifest(&mut self, _m: &Ext4Manifest) -> libimage::Result<()> {
        Ok(())
    }
    fn member(&mut self, _m: &Member, _d: &mut dyn FnMut(&mut [u8]) -> libimage::Result<usize>) -> libimage::Result<()> {
        Ok(())
    }
}

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
    assert!(cases.len() >= 25);
    for (name, _, _, bytes) in &cases {
        let committed = fs::read(corpus().join(name)).unwrap_or_else(|e| panic!("{name}: {e} (run the mkhostile_ext4 example)"));
        assert!(committed == *bytes, "{name} differs from what the generator makes");
    }
}

#[test]
fn every_case_gives_its_outcome() {
    let tsv = fs::read_to_string(corpus().join("expected.tsv")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let mut n = 0;
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.split('\t');
        let (name, want_verify, want_restore) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let bytes = fs::read(corpus().join(name)).unwrap();
        let v = outcome(read_archive(&mut bytes.as_slice(), &mut Null).map(drop));
        if want_verify == "OK" {
            assert_eq!(v, "OK", "{name}: verify");
        } else {
            assert!(v.contains(want_verify), "{name}: verify said {v:?}, expected {want_verify:?}");
        }
        let dest = t.path().join(format!("{name}.img"));
        let r = outcome(restore(&mut bytes.as_slice(), &dest, &Ext4RestoreOptions::default()).map(drop));
        if want_restore == "OK" {
            assert_eq!(r, "OK", "{name}: restore");
            assert!(dest.exists());
        } else {
            assert!(r.contains(want_restore), "{name}: restore said {r:?}, expected {want_restore:?}");
            assert!(!dest.exists(), "{name}: a failed restore left the image");
        }
        n += 1;
    }
    // Nothing else (no temp files) is left in the directory.
    let left: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(n >= 25);
}
