//! The hostile ext4 backup corpus (testdata/backup/hostile-ext4/): one small
//! archive per attack on the §11 records, each otherwise valid (checksums
//! correct, so exactly the intended defect is met), with the outcome
//! `verify` and `restore` must give. Written by
//! `libimage/examples/mkhostile_ext4.rs`; a test checks the committed files
//! are exactly what this generates.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::archive::{
    Ext4Manifest, FORMAT, K_ARCHIVE_CRC, K_BLOCKS, K_CONTEXT, K_DATACRC, K_KEYS, K_MEMBERS, K_NAME, K_SIZE, K_SYMLINK, K_UNCHANGED,
};
use crate::ops::backup::format::{MANIFEST_NAME, TRAILER_NAME};
use crate::ops::backup::pax::{push_record, PaxWriter, Ustar};

type Recs = Vec<(String, Vec<u8>)>;

const KEY: [u8; 16] = [0x11; 16];

fn ctx(n: u8) -> [u8; 40] {
    let mut c = [0u8; 40];
    c[..8].copy_from_slice(&[2, 1, 4, 3, 0, 0, 0, 0]);
    c[8..24].copy_from_slice(&KEY);
    c[24..].copy_from_slice(&[n; 16]);
    c
}

fn ct(n: u8) -> Vec<u8> {
    (0..32u8).map(|i| i.wrapping_mul(7) ^ n).collect()
}

/// Builds an archive member by member with correct checksums.
struct Maker {
    w: PaxWriter<Vec<u8>>,
    members: u64,
}

const FULL_ID: &str = "00112233445566778899aabbccddeeff";
const BASE_ID: &str = "ba5eba5eba5eba5eba5eba5eba5eba5e";
const MID_ID: &str = "1dc0ffee1dc0ffee1dc0ffee1dc0ffee";
const TOP_ID: &str = "70b070b070b070b070b070b070b070b0";

impl Maker {
    fn new(version: u32) -> Maker {
        Maker::with_ids(version, FULL_ID, None)
    }

    fn with_ids(version: u32, id: &str, base: Option<&str>) -> Maker {
        let m = Ext4Manifest {
            format: FORMAT.into(),
            version,
            backup_id: id.into(),
            base_backup_id: base.map(String::from),
            created: 1_700_000_000,
            image_uuid: "0123456789abcdef0123456789abcdef".into(),
            hash_seed: "fedcba9876543210fedcba9876543210".into(),
            hash_version: 1,
            unsigned_hash: false,
            blocks_count: 4096,
            inodes_count: 1024,
            block_size: 4096,
        };
        let json = serde_json::to_vec_pretty(&m).unwrap_or_default();
        let mut mk = Maker {
            w: PaxWriter::new(Vec::new()),
            members: 0,
        };
        mk.raw(MANIFEST_NAME.as_bytes(), b'0', 0o100644, vec![], &json);
        mk
    }

    fn raw(&mut self, path: &[u8], typeflag: u8, mode: u32, recs: Recs, data: &[u8]) {
        let mut r = Vec::new();
        push_record(&mut r, b"path", path);
        for (k, v) in &recs {
            push_record(&mut r, k.as_bytes(), v);
        }
        let linkname = recs
            .iter()
            .find(|(k, _)| k == "linkpath")
            .map(|(_, v)| v[..v.len().min(100)].to_vec())
            .unwrap_or_default();
        let hdr = Ustar {
            name: path[..path.len().min(100)].to_vec(),
            mode,
            size: data.len() as u64,
            typeflag,
            linkname,
            ..Default::default()
        };
        let c = crc32c::crc32c(data);
        // Writing to a Vec cannot fail.
        let _ = self.w.begin(&hdr, r, c);
        let _ = self.w.data(data, c);
        let _ = self.w.end_data();
    }

    fn member(&mut self, path: &str, typeflag: u8, mode: u32, recs: Recs, data: &[u8]) {
        let mut all: Recs = vec![
            ("mtime".into(), b"1700000000.000000001".to_vec()),
            ("atime".into(), b"1700000000.000000002".to_vec()),
            ("ctime".into(), b"-2.750000000".to_vec()),
        ];
        all.extend(recs);
        self.raw(path.as_bytes(), typeflag, mode, all, data);
        self.members += 1;
    }

    fn finish(self, members: Option<u64>, keys: &[u8]) -> Vec<u8> {
        let mut w = self.w;
        let crc = w.crc;
        let mut r = Vec::new();
        push_record(&mut r, b"path", TRAILER_NAME.as_bytes());
        push_record(&mut r, K_MEMBERS.as_bytes(), members.unwrap_or(self.members).to_string().as_bytes());
        push_record(&mut r, K_ARCHIVE_CRC.as_bytes(), format!("{crc:08x}").as_bytes());
        push_record(&mut r, K_KEYS.as_bytes(), keys);
        let hdr = Ustar {
            name: TRAILER_NAME.as_bytes().to_vec(),
            mode: 0o100644,
            typeflag: b'0',
            ..Default::default()
        };
        let _ = w.begin(&hdr, r, 0);
        let _ = w.end_data();
        w.finish().unwrap_or_default()
    }
}

fn kv(k: &str, v: &[u8]) -> (String, Vec<u8>) {
    (k.to_string(), v.to_vec())
}

/// The encrypted directory's path and its records.
fn enc_dir(m: &mut Maker) -> String {
    m.member("./", b'5', 0o40755, vec![], &[]);
    m.member("./enc/", b'5', 0o40700, vec![kv(K_CONTEXT, hex::encode(ctx(1)).as_bytes())], &[]);
    "./enc/".into()
}

/// Records and data of an encrypted file with blocks 0 and 2 (size 3 blocks).
fn enc_file(n: u8) -> (String, Recs, Vec<u8>) {
    let name = ct(n);
    let mut data = vec![n; 4096];
    data.extend(vec![n ^ 0xff; 4096]);
    let recs = vec![
        kv(K_NAME, URL_SAFE_NO_PAD.encode(&name).as_bytes()),
        kv(K_CONTEXT, hex::encode(ctx(n)).as_bytes()),
        kv(K_SIZE, b"12000"),
        kv(K_BLOCKS, b"0+1,2+1"),
        kv(K_DATACRC, format!("{:08x}", crc32c::crc32c(&data)).as_bytes()),
    ];
    (super::list::nokey_name(&name, None), recs, data)
}

fn set(recs: &mut Recs, key: &str, v: &[u8]) {
    match recs.iter_mut().find(|r| r.0 == key) {
        Some(r) => r.1 = v.to_vec(),
        None => recs.push((key.to_string(), v.to_vec())),
    }
}

/// A valid archive with one of everything, `f` editing the encrypted file.
fn with_file(f: impl FnOnce(&mut Recs, &mut Vec<u8>)) -> Vec<u8> {
    let mut m = Maker::new(1);
    let d = enc_dir(&mut m);
    let (nk, mut recs, mut data) = enc_file(2);
    f(&mut recs, &mut data);
    m.member(&format!("{d}{nk}"), b'0', 0o100600, recs, &data);
    m.finish(None, &hex::encode(KEY).into_bytes())
}

/// One case of the corpus: a line of `expected.tsv`.
pub struct Case {
    /// The archive's file name (several cases may share one file).
    pub file: &'static str,
    /// Expected `verify` error substring, or `OK`.
    pub verify: &'static str,
    /// Expected `restore` error substring, or `OK`.
    pub restore: &'static str,
    /// Files of this corpus given as `--base`, in order.
    pub bases: &'static [&'static str],
    pub bytes: Vec<u8>,
}

/// Every case; see [`Case`].
pub fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = plain_cases()
        .into_iter()
        .map(|(file, verify, restore, bytes)| Case {
            file,
            verify,
            restore,
            bases: &[],
            bytes,
        })
        .collect();
    out.extend(incremental_cases());
    out
}

/// Records of the encrypted file `n` (as [`enc_file`]) with other data, or
/// unchanged (no data).
fn file_member(m: &mut Maker, n: u8, data: Option<&[u8]>, edit: impl FnOnce(&mut Recs)) {
    let (nk, mut recs, _) = enc_file(n);
    let data = match data {
        Some(d) => {
            set(&mut recs, K_DATACRC, format!("{:08x}", crc32c::crc32c(d)).as_bytes());
            d.to_vec()
        }
        None => {
            recs.push(kv(K_UNCHANGED, b"1"));
            Vec::new()
        }
    };
    edit(&mut recs);
    m.member(&format!("./enc/{nk}"), b'0', 0o100600, recs, &data);
}

/// Incremental archives (§11.3) and their bases: a chain full → mid → top,
/// and unchanged members the bases do not hold.
fn incremental_cases() -> Vec<Case> {
    let key = hex::encode(KEY).into_bytes();
    let (_, _, data2) = enc_file(2);
    let (_, _, data6) = enc_file(6);
    let mut changed6 = vec![0x66u8; 4096];
    changed6.extend(vec![0x99u8; 4096]);
    let mut out = Vec::new();
    let mut case = |file, verify, restore, bases, bytes| {
        out.push(Case {
            file,
            verify,
            restore,
            bases,
            bytes,
        })
    };

    // The full base stores files 2 and 6.
    let mut m = Maker::with_ids(1, BASE_ID, None);
    enc_dir(&mut m);
    file_member(&mut m, 2, Some(&data2), |_| {});
    file_member(&mut m, 6, Some(&data6), |_| {});
    case("incr-base.tar", "OK", "OK", &[], m.finish(None, &key));

    // mid: file 2 unchanged, file 6 rewritten in place (same context).
    let mut m = Maker::with_ids(1, MID_ID, Some(BASE_ID));
    enc_dir(&mut m);
    file_member(&mut m, 2, None, |_| {});
    file_member(&mut m, 6, Some(&changed6), |_| {});
    let mid = m.finish(None, &key);
    case("incr-mid.tar", "OK", "OK", &["incr-base.tar"], mid.clone());
    case(
        "incr-mid.tar",
        "OK",
        "base backup ba5eba5eba5eba5eba5eba5eba5eba5e, which was not given",
        &[],
        mid,
    );

    // top: both unchanged; file 2's data is two bases back.
    let mut m = Maker::with_ids(1, TOP_ID, Some(MID_ID));
    enc_dir(&mut m);
    file_member(&mut m, 2, None, |_| {});
    file_member(&mut m, 6, None, |r| {
        set(r, K_DATACRC, format!("{:08x}", crc32c::crc32c(&changed6)).as_bytes())
    });
    let top = m.finish(None, &key);
    case("incr-top.tar", "OK", "OK", &["incr-mid.tar", "incr-base.tar"], top.clone());
    case(
        "incr-top.tar",
        "base backup ba5eba5eba5eba5eba5eba5eba5eba5e, which was not given",
        "base backup ba5eba5eba5eba5eba5eba5eba5eba5e, which was not given",
        &["incr-mid.tar"],
        top.clone(),
    );
    case(
        "incr-top.tar",
        "base backup 1dc0ffee1dc0ffee1dc0ffee1dc0ffee, which was not given",
        "base backup 1dc0ffee1dc0ffee1dc0ffee1dc0ffee, which was not given",
        &["incr-base.tar"],
        top,
    );

    // Unchanged members no base stores.
    let mut unstored = |file, edit: &dyn Fn(&mut Recs)| {
        let mut m = Maker::with_ids(1, MID_ID, Some(BASE_ID));
        enc_dir(&mut m);
        file_member(&mut m, 2, None, edit);
        let b = m.finish(None, &key);
        case(file, "none of the base backups", "none of the base backups", &["incr-base.tar"], b);
    };
    unstored("incr-unstored-context.tar", &|r| set(r, K_CONTEXT, hex::encode(ctx(9)).as_bytes()));
    unstored("incr-wrong-datacrc.tar", &|r| set(r, K_DATACRC, b"deadbeef"));
    unstored("incr-wrong-runs.tar", &|r| set(r, K_BLOCKS, b"0+2"));
    unstored("incr-wrong-size.tar", &|r| set(r, K_SIZE, b"12001"));

    // A full backup cannot have unchanged members.
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    file_member(&mut m, 2, None, |_| {});
    case(
        "unchanged-in-full.tar",
        "CRYPTIMG.unchanged in a full backup",
        "CRYPTIMG.unchanged in a full backup",
        &[],
        m.finish(None, &key),
    );
    out
}

/// The cases that need no base: (file, verify, restore, bytes).
fn plain_cases() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let key = hex::encode(KEY).into_bytes();

    // Control: one of everything.
    let mut m = Maker::new(1);
    let d = enc_dir(&mut m);
    let (nk, recs, data) = enc_file(2);
    let file = format!("{d}{nk}");
    m.member(&file, b'0', 0o100600, recs, &data);
    let sct = ct(3);
    let mut blob = 32u16.to_le_bytes().to_vec();
    blob.extend(&sct);
    blob.push(0);
    let lp = fscrypt::nokey_name(&sct);
    m.member(
        &format!("{d}{}", super::list::nokey_name(&ct(4), None)),
        b'2',
        0o120777,
        vec![
            kv(K_NAME, URL_SAFE_NO_PAD.encode(ct(4)).as_bytes()),
            kv(K_CONTEXT, hex::encode(ctx(4)).as_bytes()),
            kv(K_SYMLINK, hex::encode(&blob).as_bytes()),
            kv(K_SIZE, b"34"),
            kv("linkpath", lp.as_bytes()),
        ],
        &[],
    );
    m.member(
        &format!("{d}{}", super::list::nokey_name(&ct(5), None)),
        b'1',
        0o100600,
        vec![
            kv(K_NAME, URL_SAFE_NO_PAD.encode(ct(5)).as_bytes()),
            kv("linkpath", file.as_bytes()),
        ],
        &[],
    );
    m.member("./plain.txt", b'0', 0o100644, vec![], b"plain text");
    out.push(("valid.tar", "OK", "OK", m.finish(None, &key)));

    out.push((
        "context-short.tar",
        "CRYPTIMG.context is not 80 hex digits",
        "CRYPTIMG.context",
        with_file(|r, _| set(r, K_CONTEXT, &hex::encode(ctx(2)).as_bytes()[..78])),
    ));
    out.push((
        "context-v1.tar",
        "not a supported v2 context",
        "not a supported v2 context",
        with_file(|r, _| {
            let mut c = ctx(2);
            c[0] = 1;
            set(r, K_CONTEXT, hex::encode(c).as_bytes());
        }),
    ));
    out.push((
        "context-iv-flags.tar",
        "not a supported v2 context",
        "not a supported v2 context",
        with_file(|r, _| {
            let mut c = ctx(2);
            c[3] = 0x0b;
            set(r, K_CONTEXT, hex::encode(c).as_bytes());
        }),
    ));
    out.push((
        "name-length.tar",
        "impossible ciphertext length",
        "impossible ciphertext length",
        with_file(|r, _| set(r, K_NAME, URL_SAFE_NO_PAD.encode([1u8; 17]).as_bytes())),
    ));
    out.push((
        "name-not-base64.tar",
        "not base64url",
        "not base64url",
        with_file(|r, _| set(r, K_NAME, b"!!!")),
    ));
    out.push((
        "runs-past-size.tar",
        "runs invalid or beyond the size",
        "runs invalid",
        with_file(|r, _| set(r, K_SIZE, b"4096")),
    ));
    out.push((
        "runs-overlap.tar",
        "runs invalid or beyond the size",
        "runs invalid",
        with_file(|r, _| set(r, K_BLOCKS, b"0+2,1+1")),
    ));
    out.push((
        "runs-zero.tar",
        "runs invalid or beyond the size",
        "runs invalid",
        with_file(|r, _| set(r, K_BLOCKS, b"0+0")),
    ));
    out.push((
        "size-huge.tar",
        "size beyond what ext4 allows",
        "size beyond",
        with_file(|r, _| set(r, K_SIZE, b"18446744073709551615")),
    ));
    out.push((
        "data-vs-runs.tar",
        "the records imply",
        "the records imply",
        with_file(|r, d| {
            d.truncate(4096);
            set(r, K_DATACRC, format!("{:08x}", crc32c::crc32c(d)).as_bytes());
        }),
    ));
    out.push((
        "datacrc-mismatch.tar",
        "does not match CRYPTIMG.datacrc",
        "CRYPTIMG.datacrc",
        with_file(|r, _| set(r, K_DATACRC, b"00000000")),
    ));
    out.push((
        "no-datacrc.tar",
        "without CRYPTIMG.datacrc",
        "CRYPTIMG.datacrc",
        with_file(|r, _| r.retain(|x| x.0 != K_DATACRC)),
    ));
    out.push((
        "unknown-record.tar",
        "unknown record",
        "unknown record",
        with_file(|r, _| r.push(kv("CRYPTIMG.future", b"1"))),
    ));
    out.push((
        "unchanged-no-base.tar",
        "the records imply",
        "the records imply",
        with_file(|r, _| r.push(kv(K_UNCHANGED, b"1"))),
    ));

    let sym = |f: &dyn Fn(&mut Vec<u8>, &mut Recs)| {
        let mut m = Maker::new(1);
        let d = enc_dir(&mut m);
        let sct = ct(3);
        let mut blob = 32u16.to_le_bytes().to_vec();
        blob.extend(&sct);
        blob.push(0);
        let mut recs = vec![
            kv(K_NAME, URL_SAFE_NO_PAD.encode(ct(4)).as_bytes()),
            kv(K_CONTEXT, hex::encode(ctx(4)).as_bytes()),
            kv(K_SIZE, b"34"),
            kv("linkpath", fscrypt::nokey_name(&sct).as_bytes()),
        ];
        f(&mut blob, &mut recs);
        recs.push(kv(K_SYMLINK, hex::encode(&blob).as_bytes()));
        m.member(&format!("{d}{}", super::list::nokey_name(&ct(4), None)), b'2', 0o120777, recs, &[]);
        m.finish(None, &key)
    };
    out.push(("symlink-length.tar", "badly framed", "badly framed", sym(&|b, _| b[0] = 33)));
    out.push((
        "symlink-no-nul.tar",
        "badly framed",
        "badly framed",
        sym(&|b, _| *b.last_mut().unwrap_or(&mut 0) = 1),
    ));
    out.push((
        "symlink-size.tar",
        "badly framed",
        "badly framed",
        sym(&|_, r| set(r, K_SIZE, b"35")),
    ));
    out.push((
        "symlink-linkpath.tar",
        "linkpath is not the no-key form",
        "linkpath is not",
        sym(&|_, r| set(r, "linkpath", b"elsewhere")),
    ));

    // Tree shape.
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    m.member("./enc/../../etc/passwd", b'0', 0o100644, vec![], b"x");
    out.push(("dotdot.tar", "no . or .. components", "no . or ..", m.finish(None, &key)));
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    m.member("./missing/file", b'0', 0o100644, vec![], b"x");
    out.push((
        "parent-missing.tar",
        "parent is not an earlier directory",
        "parent is not",
        m.finish(None, &key),
    ));
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    m.member("./enc/", b'5', 0o40700, vec![], &[]);
    out.push(("duplicate-path.tar", "appears twice", "appears twice", m.finish(None, &key)));
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    m.member("./link", b'1', 0o100644, vec![kv("linkpath", b"./nothing")], &[]);
    out.push((
        "hardlink-missing.tar",
        "hard link target is not an earlier",
        "hard link target",
        m.finish(None, &key),
    ));
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    m.member("./link", b'1', 0o100644, vec![kv("linkpath", b"./enc/")], &[]);
    out.push((
        "hardlink-to-dir.tar",
        "hard link target is not an earlier",
        "hard link target",
        m.finish(None, &key),
    ));
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    m.member("./dev", b'3', 0o100644, vec![], &[]);
    out.push((
        "type-mismatch.tar",
        "typeflag and mode disagree",
        "typeflag and mode",
        m.finish(None, &key),
    ));

    // Archive level.
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    out.push((
        "trailer-count.tar",
        "trailer counts 5 members",
        "trailer counts",
        m.finish(Some(5), &key),
    ));
    let mut m = Maker::new(1);
    enc_dir(&mut m);
    out.push((
        "trailer-keys.tar",
        "keys_needed holds something other",
        "keys_needed",
        m.finish(None, b"zz"),
    ));
    let mut m = Maker::new(2);
    enc_dir(&mut m);
    out.push((
        "version-2.tar",
        "ext4 backup version 2",
        "ext4 backup version 2",
        m.finish(None, &key),
    ));
    let mut flipped = with_file(|_, _| {});
    if let Some(pos) = flipped.windows(4096).position(|w| w.iter().all(|&b| b == 2)) {
        flipped[pos + 100] ^= 1;
    }
    out.push(("flipped-data.tar", "member checksum mismatch", "member checksum mismatch", flipped));
    let full = with_file(|_, _| {});
    out.push(("truncated.tar", "ended inside", "ended inside", full[..full.len() / 2].to_vec()));
    let mut no_trailer = full.clone();
    if let Some(pos) = no_trailer.windows(TRAILER_NAME.len()).position(|w| w == TRAILER_NAME.as_bytes()) {
        // Cut at the trailer's x header (the block holding its name) and end the archive.
        let at = pos / 512 * 512;
        no_trailer.truncate(at);
        no_trailer.extend([0u8; 1024]);
    }
    out.push(("no-trailer.tar", "no trailer member", "no trailer member", no_trailer));
    out
}
