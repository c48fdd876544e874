//! The ext4 side of backup-crypt (docs/BACKUP.md §11): the image is
//! detected by the ext4 magic, an archive by its manifest's format.
//! Output only; the work is in `libimage::ops::ext4`.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use cryptimg_cli::{exit, Bar};
use libimage::engine::image::Keyring;
use libimage::ops::ext4::archive::sniff;
use libimage::ops::ext4::{backup, list, reader, restore};

const TOOL: &str = "backup-crypt";

pub fn is_ext4_image(p: &Path) -> bool {
    reader::is_ext4(p)
}

/// Reads the first bytes of `r`: whether it is an ext4 backup, and a reader
/// that still yields every byte.
pub fn peek(mut r: Box<dyn Read + Send>) -> anyhow::Result<(bool, Box<dyn Read + Send>)> {
    let mut head = vec![0u8; 4096];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(libimage::Error::io("reading the backup archive", e).into()),
        }
    }
    head.truncate(n);
    let is = sniff(&head);
    Ok((is, Box::new(Cursor::new(head).chain(r))))
}

pub fn create(image: &Path, output: &Path, since: Option<PathBuf>, quiet: bool, json: bool, bar: &Bar) -> anyhow::Result<i32> {
    let mut prev = match &since {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| libimage::Error::io(format!("opening {}", p.display()), e))?),
        None => None,
    };
    let since_r: Option<&mut dyn Read> = prev.as_mut().map(|f| f as &mut dyn Read);
    let to_stdout = output.as_os_str() == "-";
    let rep = crate::write_archive(output, bar, |w| backup::create(image, w, since_r, bar))?;
    if !quiet || json {
        let text = if json {
            cryptimg_cli::json::to_string(TOOL, "create", &rep)?
        } else {
            format!(
                "ext4 backup {}: {} members, {} encrypted files ({} unchanged since the base), {} bytes of ciphertext, {} bytes of plaintext, archive {} bytes",
                rep.backup_id, rep.members, rep.encrypted_files, rep.unchanged_files, rep.ciphertext_bytes, rep.plain_bytes, rep.archive_bytes
            )
        };
        if to_stdout {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(exit::OK)
}

pub fn restore(
    mut input: Box<dyn Read>,
    image: &Path,
    opts: &restore::Ext4RestoreOptions,
    quiet: bool,
    json: bool,
    bar: &Bar,
) -> anyhow::Result<i32> {
    let rep = restore::restore(&mut input, image, opts, bar)?;
    if json {
        cryptimg_cli::json::print(TOOL, "restore", &rep)?;
    } else if !quiet {
        println!(
            "restored an ext4 backup into new image {}: {} members, {} files ({} with their ciphertext from the base backups), {} ciphertext blocks",
            image.display(),
            rep.members,
            rep.files,
            rep.base_files,
            rep.blocks
        );
    }
    Ok(exit::OK)
}

/// `list`: the members (validated as `verify` validates them).
pub fn list(mut input: Box<dyn Read>, keys: &Keyring, json: bool) -> anyhow::Result<i32> {
    let l = list::list_archive(&mut input)?;
    if !keys.is_empty() {
        let what = l
            .manifest
            .as_ref()
            .map_or("this ext4 backup".to_string(), |m| format!("ext4 backup {}", m.backup_id));
        let unneeded = cryptimg_cli::warn_unneeded_keys(TOOL, &what, keys, &l.keys_needed);
        if unneeded < keys.ids().len() {
            eprintln!("{TOOL}: note: list shows the paths of an ext4 backup as stored, in no-key form; to see real names, restore it and run fsck-crypt ls IMAGE --key-file KEY");
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", cryptimg_cli::json::to_string(TOOL, "list", &l)?)?;
        return Ok(exit::OK);
    }
    for m in &l.members {
        let target = match (m.kind, &m.raw_target) {
            ("hardlink", Some(t)) => format!(" link to {}", String::from_utf8_lossy(t)),
            (_, Some(t)) => format!(" -> {}", String::from_utf8_lossy(t)),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<8} {:>7o} {:>5}/{:<5} {:>12} {}{}{}",
            m.kind,
            m.mode & 0o7777,
            m.uid,
            m.gid,
            m.size,
            String::from_utf8_lossy(&m.raw_path),
            target,
            if m.encrypted { " [encrypted]" } else { "" }
        )?;
    }
    Ok(exit::OK)
}

/// `verify`: every checksum, without any image; with `bases`, that the
/// chain holds every unchanged file's ciphertext.
pub fn verify(mut input: Box<dyn Read>, bases: &[PathBuf], json: bool) -> anyhow::Result<i32> {
    let r = list::verify_archive(&mut input, bases)?;
    if json {
        cryptimg_cli::json::print(TOOL, "verify", &r)?;
        return Ok(exit::OK);
    }
    let id = r.manifest.as_ref().map(|m| m.backup_id.clone()).unwrap_or_default();
    println!(
        "ok: ext4 backup {id}: {} members, {} bytes of ciphertext blocks, every member checksum and the archive crc32c verified; keys needed: {}",
        r.members,
        r.ciphertext_bytes,
        if r.keys_needed.is_empty() { "none".to_string() } else { r.keys_needed.join(", ") }
    );
    if let Some(b) = r.manifest.as_ref().and_then(|m| m.base_backup_id.as_ref()) {
        if bases.is_empty() {
            println!(
                "note: incremental on {b}: the ciphertext of {} unchanged files lives in the base backups and was not checked (pass --base for the whole chain)",
                r.unchanged_files
            );
        } else {
            println!(
                "incremental on {b}: the ciphertext of all {} unchanged files was found in the base backups given",
                r.unchanged_found
            );
        }
    }
    Ok(exit::OK)
}
