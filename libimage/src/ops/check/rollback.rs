//! `--repair` when the newest generation's metadata is damaged: roll back to
//! the previous generation, in the spirit of ZFS's `zpool import -F`.
//!
//! The other superblock slot holds the previous commit. Its metadata and
//! every block it uses are still on disk unless a later write session reused
//! them (FORMAT.md §8, "Rolling back"), so the rollback first proves they are
//! intact:
//! - the older superblock is valid, of the same image, and older;
//! - its metadata region passes every block check, the stream crc32c, the
//!   decoder and the keyless structural checks;
//! - every extent it references matches its recorded crc32c.
//!
//! A previous generation without snapshots (generation 1, the empty image
//! `create` commits first) is not rolled back to: it would keep nothing.
//!
//! Only then is that state committed again as generation older + 1, into the
//! damaged newest slot (the older slot is never written, so an interrupted
//! rollback can be run again). The commits after the older generation are
//! lost, and the report says which.

use std::path::Path;

use crate::engine::image::{newest, read_slots, Access, Image};
use crate::error::Result;
use crate::finding::{Code, Severity, Where};
use crate::format::superblock::Superblock;

use super::repair::{Outcome, Repair};

/// Finding codes that mean the newest metadata cannot be loaded.
pub(super) const META_DAMAGE: &[Code] = &[Code::MetaCrc, Code::MetaBlock, Code::MetaDecode];

/// Rolls the image back to the newest intact older generation, or says why not.
pub(super) fn rollback(path: &Path, code: &'static str, o: &mut Outcome) -> Result<()> {
    let refuse = |o: &mut Outcome, why: String| {
        o.not_repaired.push(format!(
            "the newest metadata is damaged and no rollback is possible: {why}; restore from backup"
        ));
    };
    let (img, newer) = match open_previous(path)? {
        Ok(x) => x,
        Err(why) => {
            refuse(o, why);
            return Ok(());
        }
    };
    let older = img.superblock().clone();
    if img.meta().snapshots.is_empty() {
        // Generation 1 of every image: the empty state `create` commits
        // first. Rolling back to it would keep nothing, and would make the
        // damaged metadata unreachable for anyone trying to salvage it.
        refuse(
            o,
            format!(
                "the previous generation ({}) is the empty image written at creation, which would keep nothing",
                older.generation
            ),
        );
        return Ok(());
    }
    if let Err(why) = verify_extents(&img) {
        refuse(o, why);
        return Ok(());
    }
    let mut img = img;
    // Nothing in the rolled-back state changes: the commit writes its
    // metadata into blocks free in it and flips the superblock.
    img.commit(crate::ops::create::now(Default::default()))?;
    // A settling commit (FORMAT.md §8) stores the same stream again.
    let settled = newer.generation == older.generation + 1
        && (newer.meta_bytes, newer.meta_crc, newer.commit_time) == (older.meta_bytes, older.meta_crc, older.commit_time);
    let lost = if settled {
        format!("generation {} (a settling commit of the same metadata: nothing)", newer.generation)
    } else if newer.generation == older.generation + 1 {
        format!("generation {}", newer.generation)
    } else {
        format!("generations {} to {}", older.generation + 1, newer.generation)
    };
    o.repairs.push(Repair {
        code,
        at: Where::default(),
        action: format!(
            "rolled back to generation {} (committed at {}, every block verified) as generation {}: the newest metadata \
             (generation {}, committed at {}) is damaged, so the changes of {lost} are lost",
            older.generation,
            older.commit_time,
            img.superblock().generation,
            newer.generation,
            newer.commit_time,
        ),
    });
    Ok(())
}

/// Opens the image at the older superblock, with every keyless check
/// passing; `Ok(Err(why))` when there is no intact older generation.
fn open_previous(path: &Path) -> Result<std::result::Result<(Image, Superblock), String>> {
    let file = std::fs::File::open(path).map_err(|e| crate::Error::io(format!("opening image {}", path.display()), e))?;
    let slots = read_slots(&file);
    let newest_sb = match newest(&slots) {
        Ok(sb) => sb,
        Err(e) => return Ok(Err(format!("no valid superblock ({e})"))),
    };
    let older = slots
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .find(|s| s.generation < newest_sb.generation && s.uuid == newest_sb.uuid);
    let Some(older) = older.cloned() else {
        return Ok(Err("the other superblock slot holds no older generation of this image".into()));
    };
    drop(file);
    let (img, findings) = match Image::open_superblock(path, Access::ReadWrite, &older) {
        Ok(x) => x,
        Err(e) if e.is_corruption() => return Ok(Err(format!("generation {} is damaged too ({e})", older.generation))),
        Err(e) => return Err(e),
    };
    if let Some(f) = findings.iter().find(|f| f.severity == Severity::Error) {
        return Ok(Err(format!("generation {} fails its checks ({f})", older.generation)));
    }
    Ok(Ok((img, newest_sb)))
}

/// Checks that every extent of the opened (older) state still has the
/// ciphertext its crc32c records: a block a later session reused fails.
fn verify_extents(img: &Image) -> std::result::Result<(), String> {
    let mut buf = Vec::new();
    for e in img.meta().extents.values() {
        let mut crc = 0u32;
        let mut done = 0u64;
        let total = u64::from(e.blocks);
        while done < total {
            let n = (total - done).min(2048);
            img.read_blocks_into(e.start + done, n, &mut buf)
                .map_err(|err| format!("extent {} cannot be read ({err})", e.id))?;
            crc = crc32c::crc32c_append(crc, &buf);
            done += n;
        }
        if crc != e.crc {
            return Err(format!(
                "extent {} (blocks {}..{}) no longer matches its crc32c: a later write reused blocks the older generation \
                 needs",
                e.id,
                e.start,
                e.start + total
            ));
        }
    }
    Ok(())
}
