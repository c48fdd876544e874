//! The hostile backup corpus (testdata/backup/hostile/): one small archive
//! per attack, each otherwise valid (correct checksums, so exactly the
//! intended defect is met), with the error each must be refused with.
//! Written by `libimage/examples/mkhostile.rs`; a test checks the committed
//! files are exactly what this generates.

use super::{ArchiveMaker, Recs};
use fscrypt::context::ExtentContext;
use fscrypt::Nonce;
use libimage::format::inode::{S_IFDIR, S_IFLNK, S_IFREG};
use libimage::ops::backup::format::{b64, ExtentKey, Item};
use libimage::ops::backup::listing::{Body, Entry};
use libimage::ops::backup::pax::{push_record, Ustar};

fn name_rec(ct: &[u8]) -> (String, Vec<u8>) {
    ("CRYPTIMG.name".into(), b64(ct).into_bytes())
}

/// Replaces the value of `key` in `recs`.
fn set(recs: &mut Recs, key: &str, v: &[u8]) {
    for r in recs.iter_mut() {
        if r.0 == key {
            r.1 = v.to_vec();
            return;
        }
    }
    recs.push((key.to_string(), v.to_vec()));
}

fn base() -> ArchiveMaker {
    let mut a = ArchiveMaker::new(7, 1);
    a.root();
    a
}

/// (file name, expected error substring or `OK`, bytes) of every case.
pub fn cases() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();

    // 0: a valid archive, as a control (must be accepted).
    let mut a = base();
    let d = a.dir("./");
    a.file(&d);
    out.push(("valid.tar", "OK", a.finish()));

    // Paths.
    let mut a = base();
    let (ct, _) = a.name();
    let (recs, data) = a.file_recs(&ct, 4096, 1);
    a.member("./../escape", b'0', S_IFREG | 0o644, recs, &data);
    out.push(("dotdot.tar", "path has a '..' component", a.finish()));

    let mut a = base();
    let d = a.dir("./");
    let (ct, nk) = a.name();
    let (recs, data) = a.file_recs(&ct, 4096, 1);
    a.member(&format!("{d}../../{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("dotdot-inner.tar", "path has a '..' component", a.finish()));

    let mut a = base();
    let (ct, _) = a.name();
    let (recs, data) = a.file_recs(&ct, 4096, 1);
    a.member("/etc/passwd", b'0', S_IFREG | 0o644, recs, &data);
    out.push(("absolute.tar", "absolute path", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let p = a.policy();
    let mut blob = 32u16.to_le_bytes().to_vec();
    blob.extend(a.rng.bytes(32));
    blob.push(0);
    let target = b64(&blob[2..34]);
    a.member(
        &format!("./{nk}"),
        b'2',
        S_IFLNK | 0o777,
        vec![
            ("linkpath".into(), target.into_bytes()),
            name_rec(&ct),
            p,
            ("CRYPTIMG.symlink".into(), hex::encode(&blob).into_bytes()),
            ("CRYPTIMG.size".into(), b"5".to_vec()),
        ],
        &[],
    );
    let (ct2, nk2) = a.name();
    let (recs, data) = a.file_recs(&ct2, 4096, 1);
    a.member(&format!("./{nk}/{nk2}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("through-symlink.tar", "path goes through a symlink", a.finish()));

    let mut a = base();
    let (ct, _) = a.name();
    let (_, other) = a.name();
    let (recs, data) = a.file_recs(&ct, 4096, 1);
    a.member(&format!("./{other}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("name-mismatch.tar", "does not match its CRYPTIMG.name", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    set(&mut recs, "CRYPTIMG.name", b"not*base64!");
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("bad-base64.tar", "not valid base64url", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    a.member(
        &format!("./{nk}/"),
        b'5',
        S_IFDIR | 0o755,
        vec![name_rec(&ct), ("CRYPTIMG.policy".into(), vec![b'z'; 80])],
        &[],
    );
    out.push(("bad-hex-policy.tar", "CRYPTIMG.policy is not 80 lowercase hex digits", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    let ext = String::from_utf8_lossy(&recs[2].1).replace(":0101", ":01G1");
    set(&mut recs, "CRYPTIMG.extents", ext.as_bytes());
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("bad-hex-extent.tar", "not 68 lowercase hex digits", a.finish()));

    // Sizes.
    let mut a = base();
    let (ct, nk) = a.name();
    let (recs, data) = a.file_recs(&ct, 4096, 2);
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("size-vs-extents.tar", "disagrees with the extents", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (recs, mut data) = a.file_recs(&ct, 4096, 1);
    data.extend_from_slice(&[0u8; 4096]);
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("data-vs-extents.tar", "sizes disagree", a.finish()));

    // Truncation.
    let mut a = base();
    a.file("./");
    let full = a.finish();
    out.push(("truncated-data.tar", "ended inside member data", full[..full.len() - 4096].to_vec()));
    let mut a = base();
    a.file("./");
    out.push(("truncated-boundary.tar", "ended inside a member header", a.cut()));
    out.push(("truncated-header.tar", "ended inside", full[..1024 + 700].to_vec()));

    // Duplicates.
    let mut a = base();
    let (ct, nk) = a.name();
    let (recs, data) = a.file_recs(&ct, 4096, 1);
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs.clone(), &data);
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("duplicate-path.tar", "duplicate path", a.finish()));

    let mut a = base();
    a.root();
    out.push(("duplicate-root.tar", "duplicate path", a.finish()));

    // Huge counts and sizes.
    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    let ext = String::from_utf8_lossy(&recs[2].1).replacen("0+1@0", "0+4294967297@0", 1);
    set(&mut recs, "CRYPTIMG.extents", ext.as_bytes());
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("huge-block-count.tar", "outside the", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    let info = String::from_utf8_lossy(&recs[3].1).replacen("1:", "18446744073709551615:", 1);
    set(&mut recs, "CRYPTIMG.extinfo", info.as_bytes());
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("huge-extent-length.tar", "extent length", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    set(&mut recs, "CRYPTIMG.size", b"18446744073709551615");
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push((
        "huge-file-size.tar",
        "CRYPTIMG.size 18446744073709551615 is out of range",
        a.finish(),
    ));

    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    let one = String::from_utf8_lossy(&recs[2].1).to_string();
    let info1 = String::from_utf8_lossy(&recs[3].1).to_string();
    let many: Vec<String> = (0..300).map(|i| one.replacen("0+1@0", &format!("{i}+1@0"), 1)).collect();
    let infos = vec![info1; 300];
    set(&mut recs, "CRYPTIMG.extents", many.join(",").as_bytes());
    set(&mut recs, "CRYPTIMG.extinfo", infos.join(",").as_bytes());
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("huge-item-count.tar", "disagrees with the extents", a.finish()));

    // A pax header claiming 1 TiB, and a record claiming a huge length.
    let mut v = base().cut();
    let x = Ustar {
        name: b"./PaxHeaders/x".to_vec(),
        mode: 0o644,
        size: 1 << 40,
        typeflag: b'x',
        ..Default::default()
    };
    v.extend_from_slice(&x.encode());
    v.extend_from_slice(&[b'9'; 512]);
    out.push(("huge-pax-header.tar", "pax extended header size", v));

    let mut v = base().cut();
    let mut rec = b"999999999 path=./x\n".to_vec();
    rec.resize(512, 0);
    let x = Ustar {
        name: b"./PaxHeaders/x".to_vec(),
        mode: 0o644,
        size: 19,
        typeflag: b'x',
        ..Default::default()
    };
    v.extend_from_slice(&x.encode());
    v.extend_from_slice(&rec);
    let f = Ustar {
        name: b"./x".to_vec(),
        mode: S_IFREG | 0o644,
        typeflag: b'0',
        ..Default::default()
    };
    v.extend_from_slice(&f.encode());
    v.extend_from_slice(&[0u8; 1024]);
    out.push(("huge-record-length.tar", "pax record length", v));

    // Tree structure.
    let mut a = base();
    let (ct, nk) = a.name();
    let (ct2, nk2) = a.name();
    let (recs, data) = a.file_recs(&ct2, 4096, 1);
    a.member(&format!("./{nk}/{nk2}"), b'0', S_IFREG | 0o644, recs, &data);
    let p = a.policy();
    a.member(&format!("./{nk}/"), b'5', S_IFDIR | 0o755, vec![name_rec(&ct), p], &[]);
    out.push(("child-before-parent.tar", "parent directory is not an earlier member", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (_, ghost) = a.name();
    a.member(
        &format!("./{nk}"),
        b'1',
        S_IFREG | 0o644,
        vec![("linkpath".into(), format!("./{ghost}").into_bytes()), name_rec(&ct)],
        &[],
    );
    out.push(("hardlink-missing.tar", "hard link target is not an earlier member", a.finish()));

    let mut a = base();
    let d = a.dir("./");
    let (ct, nk) = a.name();
    a.member(
        &format!("./{nk}"),
        b'1',
        S_IFREG | 0o644,
        vec![("linkpath".into(), d.trim_end_matches('/').as_bytes().to_vec()), name_rec(&ct)],
        &[],
    );
    out.push(("hardlink-to-dir.tar", "hard link to a directory", a.finish()));

    // One extent context claimed by two different extents.
    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, mut data) = a.file_recs(&ct, 8192, 1);
    let ext = String::from_utf8_lossy(&recs[2].1).to_string();
    let info = String::from_utf8_lossy(&recs[3].1).to_string();
    let ext2 = format!("{ext},{}", ext.replacen("0+1@0", "1+1@0", 1));
    let info2 = format!("{info},1:00000000:d");
    set(&mut recs, "CRYPTIMG.extents", ext2.as_bytes());
    set(&mut recs, "CRYPTIMG.extinfo", info2.as_bytes());
    data.extend(a.rng.bytes(4096));
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("extent-conflict.tar", "share one extent context", a.finish()));

    // Integrity.
    let mut a = base();
    a.file("./");
    let mut v = a.finish();
    let n = v.len();
    v[n - 1024 - 1536 - 4096 + 100] ^= 1; // a byte of the file's data
    out.push(("flipped-data.tar", "crc32c mismatch", v));

    let mut a = base();
    a.file("./");
    a.members += 1; // the trailer claims one member too many
    out.push(("member-missing.tar", "member count", a.finish()));

    let mut a = ArchiveMaker::new(7, 3);
    a.root();
    out.push(("version-3.tar", "backup format version 3", a.finish()));

    let mut a = base();
    let (ct, nk) = a.name();
    let (mut recs, data) = a.file_recs(&ct, 4096, 1);
    recs.push(("CRYPTIMG.future".into(), b"1".to_vec()));
    a.member(&format!("./{nk}"), b'0', S_IFREG | 0o644, recs, &data);
    out.push(("unknown-keyword.tar", "unknown pax keyword", a.finish()));

    let mut v = Vec::new();
    let mut recs = Vec::new();
    push_record(&mut recs, b"path", b"./x");
    let x = Ustar {
        name: b"././@LongLink".to_vec(),
        mode: 0o644,
        size: 4,
        typeflag: b'L',
        ..Default::default()
    };
    v.extend_from_slice(&x.encode());
    v.extend_from_slice(&[b'x'; 512]);
    v.extend_from_slice(&[0u8; 1024]);
    out.push(("not-a-backup.tar", "every member must start with a pax 'x' header", v));

    out.extend(listing_cases());
    out
}

/// A version 2 archive: the root in a listing.
fn base2() -> ArchiveMaker {
    let mut a = ArchiveMaker::new(7, 2);
    let p = a.policy_bytes();
    a.listing(&[ArchiveMaker::entry(b'5', 0, &[], S_IFDIR | 0o755, Body::Dir { policy: p })]);
    a
}

fn dir_entry(a: &mut ArchiveMaker, parent: u64) -> (Entry, String) {
    let (ct, nk) = a.name();
    let p = a.policy_bytes();
    (ArchiveMaker::entry(b'5', parent, &ct, S_IFDIR | 0o755, Body::Dir { policy: p }), nk)
}

fn empty_file_entry(a: &mut ArchiveMaker, parent: u64) -> Entry {
    let (ct, _) = a.name();
    ArchiveMaker::entry(b'0', parent, &ct, S_IFREG | 0o644, Body::File { size: 0, items: vec![] })
}

/// Bytes of a listing with these entries.
fn encoded(entries: &[Entry]) -> Vec<u8> {
    let mut b = Vec::new();
    for e in entries {
        e.encode(&mut b);
    }
    b
}

/// The compact listings of format version 2 (docs/BACKUP.md §4a).
fn listing_cases() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();

    // A valid version 2 archive: root and a directory listed; a file with
    // data as a pax member inside the listed directory; then listed: a file
    // whose item refers to that stored extent, a symlink, a hard link to the
    // stored file, an empty file (must be accepted, by verify and restore).
    let mut a = base2();
    let (d, dnk) = dir_entry(&mut a, 1);
    a.listing(&[d]);
    let (ct, nk) = a.name();
    let (recs, data) = a.file_recs(&ct, 3 * 4096, 3);
    let stored_path = format!("./{dnk}/{nk}");
    let ext = String::from_utf8_lossy(&recs[2].1).to_string();
    let info = String::from_utf8_lossy(&recs[3].1).to_string();
    a.member(&stored_path, b'0', S_IFREG | 0o644, recs, &data);
    let ctx = hex::decode(&ext[ext.find(':').map_or(0, |i| i + 1)..]).unwrap_or_default();
    let mut c = [0u8; 34];
    c.copy_from_slice(&ctx[..34]);
    let crc = u32::from_str_radix(&info[2..10], 16).unwrap_or(0);
    let item = Item {
        lblk: 1,
        count: 2,
        off: 1,
        ext: ExtentKey { ctx: c, crc, blocks: 3 },
        stored: false,
    };
    let (rct, _) = a.name();
    let refd = ArchiveMaker::entry(
        b'0',
        2,
        &rct,
        S_IFREG | 0o600,
        Body::File {
            size: 3 * 4096,
            items: vec![item],
        },
    );
    let (sct, _) = a.name();
    let mut blob = 32u16.to_le_bytes().to_vec();
    blob.extend(a.rng.bytes(32));
    blob.push(0);
    let sp = a.policy_bytes();
    let sym = ArchiveMaker::entry(b'2', 2, &sct, S_IFLNK | 0o777, Body::Symlink { policy: sp, blob, size: 9 });
    let (hct, _) = a.name();
    let hl = ArchiveMaker::entry(
        b'1',
        1,
        &hct,
        S_IFREG | 0o644,
        Body::HardLink {
            target: stored_path.into_bytes(),
        },
    );
    let empty = empty_file_entry(&mut a, 1);
    a.listing(&[refd, sym, hl, empty]);
    out.push(("v2-valid.tar", "OK", a.finish()));

    // A listing in a version 1 archive.
    let mut a = ArchiveMaker::new(7, 1);
    let p = a.policy_bytes();
    a.listing(&[ArchiveMaker::entry(b'5', 0, &[], S_IFDIR | 0o755, Body::Dir { policy: p })]);
    out.push(("v2-listing-in-v1.tar", "a compact listing in a version 1 archive", a.finish()));

    // The listing ends inside an entry.
    let mut a = ArchiveMaker::new(7, 2);
    let p = a.policy_bytes();
    let b = encoded(&[ArchiveMaker::entry(b'5', 0, &[], S_IFDIR | 0o755, Body::Dir { policy: p })]);
    a.listing_raw(&b[..b.len() - 5]);
    a.members += 1;
    out.push(("v2-truncated-entry.tar", "the listing ends inside it", a.finish()));

    // A parent ordinal nobody has, and one naming a file.
    let mut a = base2();
    let e = empty_file_entry(&mut a, 99);
    a.listing(&[e]);
    out.push(("v2-bad-parent.tar", "parent ordinal is not an earlier directory member", a.finish()));

    let mut a = base2();
    let f = empty_file_entry(&mut a, 1);
    let g = empty_file_entry(&mut a, 2);
    a.listing(&[f, g]);
    out.push((
        "v2-parent-is-file.tar",
        "parent ordinal is not an earlier directory member",
        a.finish(),
    ));

    // A child listed before its parent directory (ordinal 3 is not yet assigned).
    let mut a = base2();
    let f = empty_file_entry(&mut a, 3);
    let (d, _) = dir_entry(&mut a, 1);
    a.listing(&[f, d]);
    out.push((
        "v2-child-before-parent.tar",
        "parent ordinal is not an earlier directory member",
        a.finish(),
    ));

    // Parent ordinal 0 with a name (a second root).
    let mut a = base2();
    let mut e = empty_file_entry(&mut a, 1);
    e.parent = 0;
    a.listing(&[e]);
    out.push(("v2-second-root.tar", "only the root has parent ordinal 0", a.finish()));

    // Two entries with the same name in one directory.
    let mut a = base2();
    let e = empty_file_entry(&mut a, 1);
    a.listing(&[e.clone(), e]);
    out.push(("v2-duplicate.tar", "duplicate path", a.finish()));

    // Huge counts and lengths, each far beyond what the listing holds.
    let mut a = base2();
    let mut b = encoded(&[empty_file_entry(&mut a, 1)]);
    b.pop();
    b.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    a.listing_raw(&b);
    a.members += 1;
    out.push(("v2-huge-item-count.tar", "extent item count", a.finish()));

    let mut a = base2();
    let mut b = vec![b'0', 1];
    b.extend([0x80, 0x80, 0x80, 0x80, 0x10]);
    b.extend([0u8; 40]);
    a.listing_raw(&b);
    a.members += 1;
    out.push(("v2-huge-name.tar", "encrypted name length", a.finish()));

    let mut a = base2();
    let mut e = empty_file_entry(&mut a, 1);
    e.xattrs = vec![(b"user.x".to_vec(), vec![1])];
    let mut b = encoded(&[e]);
    // The xattr count byte follows the three times; make it claim 2^28.
    let at = b.len() - 2 - 1 - 7 - 1 - 1;
    assert_eq!(b[at], 1);
    b.splice(at..at + 1, [0x80, 0x80, 0x80, 0x80, 0x80]);
    b[at + 4] = 0x01;
    a.listing_raw(&b);
    a.members += 1;
    out.push(("v2-huge-xattr-count.tar", "xattr count", a.finish()));

    let mut a = base2();
    let mut b = encoded(&[empty_file_entry(&mut a, 1)]);
    b.splice(1..2, [0x81, 0x00]);
    a.listing_raw(&b);
    a.members += 1;
    out.push(("v2-long-number.tar", "not in its shortest form", a.finish()));

    let mut a = base2();
    a.listing_raw(b"X");
    a.members += 1;
    out.push(("v2-bad-entry-type.tar", "listing entry type", a.finish()));

    let a = base2();
    out.push(("v2-huge-listing.tar", "listing size", a.listing_claiming(1 << 40)));

    // The same value checks as pax members: a file whose item lies beyond its size.
    let mut a = base2();
    let mut e = empty_file_entry(&mut a, 1);
    let ctx = ExtentContext::new(super::KEY, Nonce(a.rng.arr16())).to_bytes();
    e.body = Body::File {
        size: 4096,
        items: vec![Item {
            lblk: 1,
            count: 1,
            off: 0,
            ext: ExtentKey { ctx, crc: 0, blocks: 1 },
            stored: false,
        }],
    };
    a.listing(&[e]);
    out.push(("v2-size-vs-extents.tar", "disagrees with the extents", a.finish()));

    // An invalid policy context.
    let mut a = base2();
    let (mut d, _) = dir_entry(&mut a, 1);
    d.body = Body::Dir { policy: [0; 40] };
    a.listing(&[d]);
    out.push(("v2-bad-policy.tar", "CRYPTIMG.policy", a.finish()));

    // Integrity: a flipped byte inside the listing; a listed member missing.
    let mut a = base2();
    let (d, _) = dir_entry(&mut a, 1);
    a.listing(&[d]);
    let mut v = a.finish();
    // The second listing's data starts after manifest, first listing and its headers.
    let n = v.len();
    v[n - 1024 - 1536 - 512 + 3] ^= 1;
    out.push(("v2-flipped-listing.tar", "crc32c mismatch", v));

    let mut a = base2();
    let (d, _) = dir_entry(&mut a, 1);
    a.listing(&[d]);
    a.members += 1;
    out.push(("v2-member-missing.tar", "member count", a.finish()));

    out
}
