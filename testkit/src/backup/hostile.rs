//! The hostile backup corpus (testdata/backup/hostile/): one small archive
//! per attack, each otherwise valid (correct checksums, so exactly the
//! intended defect is met), with the error each must be refused with.
//! Written by `libimage/examples/mkhostile.rs`; a test checks the committed
//! files are exactly what this generates.

use super::{ArchiveMaker, Recs};
use libimage::format::inode::{S_IFDIR, S_IFLNK, S_IFREG};
use libimage::ops::backup::format::b64;
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

    let mut a = ArchiveMaker::new(7, 2);
    a.root();
    out.push(("version-2.tar", "backup format version 2", a.finish()));

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

    out
}
