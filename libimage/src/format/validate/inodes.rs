//! Per-inode checks: encryption contexts, encrypted name lengths and
//! duplicates, symlink blobs, and file maps against their extents and size.

use super::Extents;
use crate::finding::{Code, Finding};
use crate::format::inode::{Body, Inode};
use crate::format::snapshot::Snapshot;
use crate::BLOCK_SIZE;
use fscrypt::valid_name_ct_len;

pub(super) fn check_inode(exts: &Extents<'_>, snap: &Snapshot, ino: &Inode, refs: &mut [u64], out: &mut Vec<Finding>) {
    let s = snap.name.as_str();
    let f = |code, msg: String, hint| Finding::new(code, msg, hint).snapshot(s).inode(ino.ino);
    match &ino.body {
        Body::Dir { ctx, entries } => {
            if let Err(why) = ctx.validate() {
                out.push(f(
                    Code::Context,
                    format!("directory context: {why}"),
                    "names in this directory cannot be decrypted; restore from backup",
                ));
            }
            let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len());
            for e in entries {
                if !valid_name_ct_len(e.name.len()) {
                    out.push(f(
                        Code::NameLen,
                        format!(
                            "entry for inode {} has an encrypted name of {} bytes, not a valid padded length",
                            e.ino,
                            e.name.len()
                        ),
                        "the entry cannot be decrypted; remove it",
                    ));
                }
                names.push(&e.name);
            }
            // Writers keep entries sorted by ciphertext: then one pass
            // suffices; otherwise sort.
            if !names.windows(2).all(|w| w[0] < w[1]) {
                names.sort_unstable();
            }
            if names.windows(2).any(|w| w[0] == w[1]) {
                out.push(f(
                    Code::DupName,
                    "two entries have the same encrypted name".into(),
                    "rename one of the files after extracting",
                ));
            }
        }
        Body::Symlink { ctx, blob } => {
            if let Err(why) = ctx.validate() {
                out.push(f(
                    Code::Context,
                    format!("symlink context: {why}"),
                    "the link target cannot be decrypted; recreate the link",
                ));
            }
            if crate::format::inode::symlink_ciphertext(blob).is_none() {
                out.push(f(
                    Code::SymlinkBlob,
                    format!("encrypted symlink blob of {} bytes is malformed", blob.len()),
                    "recreate the link",
                ));
            }
        }
        Body::File { map } => {
            let max_lblk = ino.size.div_ceil(BLOCK_SIZE as u64);
            let mut next = 0u64;
            for m in map {
                let e = exts.pos(m.extent).map(|p| {
                    refs[p] += 1;
                    exts.recs[p]
                });
                let end = m.lblk.checked_add(u64::from(m.blocks));
                if m.blocks == 0 || m.lblk < next || end.is_none_or(|e| e > max_lblk) {
                    out.push(f(
                        Code::FileMap,
                        format!(
                            "map entry at logical block {} (+{}) is out of order or beyond the file size {}",
                            m.lblk, m.blocks, ino.size
                        ),
                        "restore the file from backup",
                    ));
                }
                next = end.unwrap_or(u64::MAX);
                match e {
                    None => out.push(f(
                        Code::DanglingExtent,
                        format!("map references extent {}, which does not exist", m.extent),
                        "restore the file from backup",
                    )),
                    Some(e) if u64::from(m.offset) + u64::from(m.blocks) > u64::from(e.blocks) => {
                        out.push(f(
                            Code::FileMap,
                            format!("map entry reaches past the end of extent {}", m.extent),
                            "restore the file from backup",
                        ));
                    }
                    _ => {}
                }
            }
        }
        Body::Special => {}
    }
}
