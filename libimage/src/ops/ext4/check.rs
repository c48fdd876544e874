//! `fsck-crypt check` on ext4: the fscrypt invariants, keyless, plus names,
//! symlinks and (with `--data`) contents with keys. Structure (bitmaps,
//! counts, orphan lists) is e2fsck's; the reader still refuses what it
//! cannot walk safely, and that becomes one `E_EXT4_STRUCTURE` finding.
//!
//! Finding codes (README's findings table):
//! - `E_EXT4_STRUCTURE` (error): the walk stopped on corrupt metadata (where and why in the message);
//! - `E_EXT4_FLAG_WITHOUT_CONTEXT` / `E_EXT4_CONTEXT_WITHOUT_FLAG` (error): ENCRYPT_FL and the context xattr disagree;
//! - `E_CONTEXT` (error): the context is not a well-formed v2 context;
//! - `E_EXT4_UNENCRYPTED_IN_ENCRYPTED` (error): a file, dir or symlink without a context in an encrypted dir;
//! - `E_EXT4_POLICY_MISMATCH` (error): a context whose key, modes or flags differ from its directory's;
//! - `E_NAME_LEN` (error): a ciphertext name length no name pads to;
//! - `E_SYMLINK_BLOB` (error): an encrypted symlink blob badly framed or sized;
//! - `W_EXT4_NONCE_REUSED` (warning): two inodes with the same nonce;
//! - `E_NAME_DECRYPT`, `E_SYMLINK_DECRYPT` (error, with a key): ciphertext that does not decrypt;
//! - `W_KEY_UNUSED` (warning): a given key that no context names (a wrong key);
//! - `I_KEY_MISSING` (info): keys the image needs that were not given (only with some keys given).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ext4fs::inode::{ENCRYPT_FL, INLINE_DATA_FL, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use ext4fs::read::{walk, ReadError, Visit, CASEFOLD_FL};
use fscrypt::context::PolicyContext;
use fscrypt::NameCipher;
use serde::Serialize;

use super::list::nokey_name;
use super::reader::{map_err, parse_context, same_policy, valid_symlink_ct_len, Ctx};
use crate::engine::image::Keyring;
use crate::error::{Error, Result};
use crate::finding::{Code, Finding, Severity};

/// Hint for structural damage.
const HINT_E2FSCK: &str = "structural damage: run e2fsck -f on the image (fsck-crypt does not repair ext4)";
const HINT_CRYPT: &str = "encryption metadata is inconsistent: restore the file from a backup (e2fsck does not check fscrypt invariants)";

/// An encrypted directory whose parent is not encrypted (a policy root).
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRoot {
    pub path: String,
    pub inode: u32,
    pub key_id: String,
}

/// Per key id: what it protects and whether it was given.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyUse {
    pub key_id: String,
    pub given: bool,
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
}

/// The result of an ext4 check (`fsck-crypt check --json`): the findings
/// (code, severity, where, message, hint) and the counts in `summary`, named
/// as in the cryptimg report.
#[derive(Debug, Default, Serialize)]
pub struct Ext4Report {
    pub image: String,
    /// Always `ext4`.
    pub format: &'static str,
    pub findings: Vec<Finding>,
    pub policy_roots: Vec<PolicyRoot>,
    pub keys: Vec<KeyUse>,
    pub summary: Ext4Summary,
    /// 0 clean, 4 errors or warnings left (fsck's bitmask).
    pub exit_code: i32,
}

/// Counts of an ext4 check.
#[derive(Debug, Default, Serialize)]
pub struct Ext4Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Inodes visited (every name of a hard-linked file counts).
    pub inodes: u64,
    pub bytes_checked: Ext4BytesChecked,
}

/// Bytes the check read.
#[derive(Debug, Default, Serialize)]
pub struct Ext4BytesChecked {
    /// Superblock, group descriptors, inode tables, directories, extent trees, xattr blocks.
    pub metadata: u64,
    /// File data blocks (`--data`).
    pub data: u64,
}

/// `fsck-crypt info` of an ext4 image: the superblock's counts, the
/// encrypted directories and the keys they need (field names as in the
/// cryptimg `info` where the meaning is the same; times are Unix seconds).
#[derive(Debug, Serialize)]
pub struct Ext4Info {
    pub image: String,
    /// Always `ext4`.
    pub format: &'static str,
    /// Filesystem uuid, 32 hex digits.
    pub uuid: String,
    pub block_size: u64,
    pub total_blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    /// When the superblock was last written (`s_wtime`).
    pub commit_time: i64,
    /// When the filesystem was made (`s_mkfs_time`; 0 when unset).
    pub created: i64,
    /// Length of the image (or device) in bytes.
    pub file_bytes: u64,
    /// Bytes the image file occupies on disk (allocated blocks; 0 for a device).
    pub disk_bytes: u64,
    /// Encrypted directories whose parent is not encrypted, and their key.
    pub encrypted_directories: Vec<PolicyRoot>,
    /// Per key id: what it protects.
    pub keys: Vec<KeyUse>,
}

/// Collects [`Ext4Info`] (a keyless [`check`] supplies the directories and keys).
pub fn info(path: &Path) -> Result<Ext4Info> {
    use std::os::unix::fs::MetadataExt;
    let r = check(path, &Keyring::new(Vec::new()), Ext4CheckOptions::default())?;
    let fs = super::reader::open(path)?;
    let sb = fs.superblock();
    let disk_bytes = std::fs::metadata(path).ok().filter(|m| m.is_file()).map_or(0, |m| m.blocks() * 512);
    Ok(Ext4Info {
        image: path.display().to_string(),
        format: "ext4",
        uuid: hex::encode(sb.uuid),
        block_size: ext4fs::BLOCK_SIZE_U64,
        total_blocks: sb.blocks_count,
        free_blocks: sb.free_blocks_count,
        inodes: u64::from(sb.inodes_count),
        free_inodes: u64::from(sb.free_inodes_count),
        commit_time: i64::from(sb.wtime),
        created: i64::from(sb.mkfs_time),
        file_bytes: fs.image_len(),
        disk_bytes,
        encrypted_directories: r.policy_roots,
        keys: r.keys,
    })
}

/// Options of [`check`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Ext4CheckOptions {
    /// Read every data block (decrypting those whose key is given).
    pub data: bool,
}

struct DirState {
    display: String,
    policy: Option<PolicyContext>,
    names: Option<NameCipher>,
}

/// Checks the ext4 image at `path`. Refusals (v1 policies, IV flags, ...)
/// and an unopenable image are errors; everything else is a finding.
pub fn check(path: &Path, keys: &Keyring, opts: Ext4CheckOptions) -> Result<Ext4Report> {
    let fs = super::reader::open(path)?;
    let mut r = Ext4Report {
        image: path.display().to_string(),
        format: "ext4",
        ..Default::default()
    };
    let mut dirs: HashMap<u32, DirState> = HashMap::new();
    let mut keyuse: BTreeMap<[u8; 16], KeyUse> = BTreeMap::new();
    let mut nonces: HashSet<[u8; 16]> = HashSet::new();
    let mut data_bytes = 0u64;
    let res = walk::<Stop>(
        &fs,
        &mut |e| {
            r.summary.inodes += 1;
            let inode = e.inode;
            let kind = inode.mode & S_IFMT;
            let parent = dirs.get(&e.parent);
            let display = match (parent, e.path.last()) {
                (None, _) | (_, None) => "/".to_string(),
                (Some(p), Some(ct)) => {
                    let name = match (&p.policy, &p.names) {
                        (None, _) => String::from_utf8_lossy(ct).into_owned(),
                        (Some(_), Some(c)) => match c.decrypt_name(ct) {
                            Ok(n) => String::from_utf8_lossy(&n).into_owned(),
                            Err(err) => {
                                r.findings.push(
                                    Finding::new(Code::NameDecrypt, format!("name does not decrypt: {err}"), HINT_CRYPT)
                                        .inode(u64::from(e.ino))
                                        .path(format!("{}/{}", p.display.trim_end_matches('/'), nokey_name(ct, e.parent_hash))),
                                );
                                nokey_name(ct, e.parent_hash)
                            }
                        },
                        (Some(_), None) => nokey_name(ct, e.parent_hash),
                    };
                    format!("{}/{name}", p.display.trim_end_matches('/'))
                }
            };
            let parent_policy = if e.ino == ext4fs::ROOT_INO {
                None
            } else {
                parent.and_then(|p| p.policy)
            };
            let mut find = |code: Code, msg: String, hint: &'static str| {
                r.findings
                    .push(Finding::new(code, msg, hint).inode(u64::from(e.ino)).path(display.clone()));
            };
            if let (Some(_), Some(ct)) = (parent_policy, e.path.last()) {
                if !fscrypt::valid_name_ct_len(ct.len()) {
                    find(Code::NameLen, format!("ciphertext name of {} bytes", ct.len()), HINT_CRYPT);
                }
            }
            let raw = fs.context(e.ino, inode)?;
            let flag = inode.flags & ENCRYPT_FL != 0;
            let ctx = match &raw {
                None => None,
                Some(raw) => match parse_context(raw, e.ino) {
                    Ok(Ctx::V2(c)) => Some(c),
                    Ok(Ctx::Malformed(why)) => {
                        find(Code::Context, why.to_string(), HINT_CRYPT);
                        None
                    }
                    Err(err) => return Err(Stop::Refused(err)),
                },
            };
            match (flag, raw.is_some()) {
                (true, false) => find(
                    Code::Ext4FlagWithoutContext,
                    "ENCRYPT_FL set but no context xattr".into(),
                    HINT_CRYPT,
                ),
                (false, true) => find(
                    Code::Ext4ContextWithoutFlag,
                    "context xattr present but ENCRYPT_FL clear".into(),
                    HINT_CRYPT,
                ),
                _ => {}
            }
            if ctx.is_some() && inode.flags & INLINE_DATA_FL != 0 {
                return Err(Stop::Refused(Error::Unsupported(format!(
                    "inode {}: inline_data in an encrypted file",
                    e.ino
                ))));
            }
            if ctx.is_some() && kind == S_IFDIR && inode.flags & CASEFOLD_FL != 0 {
                return Err(Stop::Refused(Error::Unsupported(format!(
                    "inode {}: a casefolded encrypted directory",
                    e.ino
                ))));
            }
            let encryptable = matches!(kind, S_IFREG | S_IFDIR | S_IFLNK);
            if let Some(pp) = parent_policy {
                match (&ctx, encryptable) {
                    (None, true) if raw.is_none() => find(
                        Code::Ext4Unencrypted,
                        "no encryption context inside an encrypted directory".into(),
                        HINT_CRYPT,
                    ),
                    (Some(c), _) if !same_policy(c, &pp) => find(
                        Code::Ext4PolicyMismatch,
                        format!("policy key {} differs from the directory's {}", c.key, pp.key),
                        HINT_CRYPT,
                    ),
                    _ => {}
                }
            }
            if let Some(c) = &ctx {
                if e.first_link && !nonces.insert(c.nonce.0) {
                    find(Code::Ext4NonceReused, "another inode has the same nonce".into(), HINT_CRYPT);
                }
                let k = keyuse.entry(c.key.0).or_insert_with(|| KeyUse {
                    key_id: c.key.to_string(),
                    given: keys.get(&c.key).is_some(),
                    ..Default::default()
                });
                match kind {
                    S_IFDIR => k.directories += 1,
                    S_IFLNK => k.symlinks += 1,
                    _ => k.files += u64::from(e.first_link),
                }
                if kind == S_IFDIR && parent_policy.is_none() {
                    r.policy_roots.push(PolicyRoot {
                        path: display.clone(),
                        inode: e.ino,
                        key_id: c.key.to_string(),
                    });
                }
            }
            let key = ctx.as_ref().and_then(|c| keys.get(&c.key));
            if kind == S_IFLNK && e.first_link {
                let blob = fs.symlink_raw(e.ino, inode)?;
                if let Some(c) = &ctx {
                    let ct_len = blob.get(..2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))).unwrap_or(0);
                    if !valid_symlink_ct_len(ct_len) || inode.size != 2 + ct_len as u64 || blob.last() != Some(&0) {
                        find(
                            Code::SymlinkBlob,
                            format!("blob length field {ct_len}, i_size {}", inode.size),
                            HINT_CRYPT,
                        );
                    } else if let Some(k) = key {
                        if let Err(err) = k.names_key(&c.nonce).decrypt_symlink(&blob) {
                            find(Code::SymlinkDecrypt, format!("target does not decrypt: {err}"), HINT_CRYPT);
                        }
                    }
                }
            }
            if kind == S_IFREG && e.first_link && opts.data {
                let map = fs.extents(e.ino, inode)?;
                // XTS carries no MAC: decrypting proves nothing more than
                // reading does, so `--data` reads every written block.
                fs.read_mapped::<ReadError>(&map, 256, &mut |_, b| {
                    data_bytes += b.len() as u64;
                    Ok(())
                })?;
            }
            if kind == S_IFDIR {
                let names = match (&ctx, key) {
                    (Some(c), Some(k)) => Some(k.names_key(&c.nonce)),
                    _ => None,
                };
                dirs.insert(
                    e.ino,
                    DirState {
                        display,
                        policy: ctx,
                        names,
                    },
                );
            }
            Ok(Visit::Descend)
        },
        &mut |_, _, _| Ok(()),
    );
    match res {
        Ok(()) => {}
        Err(Stop::Refused(err)) => return Err(err),
        Err(Stop::Walk(err)) => match err {
            ReadError::Io { .. } | ReadError::Unsupported { .. } => return Err(map_err(err)),
            other => r
                .findings
                .push(Finding::new(Code::Ext4Structure, format!("the walk stopped: {other}"), HINT_E2FSCK)),
        },
    }
    let used: HashSet<[u8; 16]> = keyuse.keys().copied().collect();
    for id in keys.ids() {
        if !used.contains(&id.0) {
            r.findings.push(Finding::new(
                Code::KeyUnused,
                format!("key {id} was given but no encrypted inode uses it (a wrong key?)"),
                "give the key whose identifier `fsck-crypt info` lists",
            ));
        }
    }
    if !keys.is_empty() {
        for k in keyuse.values().filter(|k| !k.given) {
            r.findings.push(Finding::new(
                Code::KeyMissing,
                format!("key {} was not given: its names, symlinks and data were not decrypted", k.key_id),
                "add --key-file for it to check decryption too",
            ));
        }
    }
    r.keys = keyuse.into_values().collect();
    let s = &mut r.summary;
    s.bytes_checked.data = data_bytes;
    s.bytes_checked.metadata = fs.bytes_read().saturating_sub(data_bytes);
    s.errors = r.findings.iter().filter(|f| f.severity == Severity::Error).count();
    s.warnings = r.findings.iter().filter(|f| f.severity == Severity::Warning).count();
    s.infos = r.findings.iter().filter(|f| f.severity == Severity::Info).count();
    r.exit_code = crate::exit::for_findings(&r.findings);
    Ok(r)
}

/// Why the check's walk stopped: the image's structure (a finding), or a
/// refusal of something this checker does not support (an error).
enum Stop {
    Walk(ReadError),
    Refused(Error),
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        Stop::Walk(e)
    }
}
