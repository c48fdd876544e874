//! The ext4 side of backup-crypt (docs/BACKUP.md §11): the image is
//! detected by the ext4 magic, an archive by its manifest's format.
//! Output only; the work is in `libimage::ops::ext4`.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use cryptimg_cli::exit;
use libimage::engine::atomic::AtomicFile;
use libimage::ops::ext4::archive::{read_archive, sniff, Ext4Manifest, Ext4Sink, Kind, Member};
use libimage::ops::ext4::{backup, base, reader, restore};

pub fn is_ext4_image(p: &Path) -> bool {
    reader::is_ext4(p)
}

/// Reads the first bytes of `r`: whether it is an ext4 backup, and a reader
/// that still yields every byte.
pub fn peek(mut r: Box<dyn Read>) -> anyhow::Result<(bool, Box<dyn Read>)> {
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

pub fn create(image: &Path, output: &Path, since: Option<PathBuf>, quiet: bool) -> anyhow::Result<i32> {
    let mut prev = match &since {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| libimage::Error::io(format!("opening {}", p.display()), e))?),
        None => None,
    };
    let since_r: Option<&mut dyn Read> = prev.as_mut().map(|f| f as &mut dyn Read);
    let to_stdout = output.as_os_str() == "-";
    let rep = if to_stdout {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        backup::create(image, &mut out, since_r)?
    } else {
        let (tmp, f) = AtomicFile::new(output)?;
        let mut bw = std::io::BufWriter::with_capacity(1 << 20, f);
        let rep = backup::create(image, &mut bw, since_r)?;
        let f = bw
            .into_inner()
            .map_err(|e| libimage::Error::io("writing the archive", e.into_error()))?;
        f.sync_all().map_err(|e| libimage::Error::io("syncing the archive", e))?;
        tmp.persist(true)?;
        rep
    };
    if !quiet {
        let text = format!(
            "ext4 backup {}: {} members, {} encrypted files ({} unchanged since the base), {} bytes of ciphertext, {} bytes of plaintext, archive {} bytes",
            rep.backup_id, rep.members, rep.encrypted_files, rep.unchanged_files, rep.ciphertext_bytes, rep.plain_bytes, rep.archive_bytes
        );
        if to_stdout {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(exit::OK)
}

pub fn restore(mut input: Box<dyn Read>, image: &Path, size: Option<u64>, bases: Vec<PathBuf>, quiet: bool) -> anyhow::Result<i32> {
    let opts = restore::Ext4RestoreOptions { size, force: false, bases };
    let rep = restore::restore(&mut input, image, &opts)?;
    if !quiet {
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

struct Lister<'a> {
    out: &'a mut dyn Write,
}

impl Ext4Sink for Lister<'_> {
    fn manifest(&mut self, _m: &Ext4Manifest) -> libimage::Result<()> {
        Ok(())
    }
    fn member(&mut self, m: &Member, _d: &mut dyn FnMut(&mut [u8]) -> libimage::Result<usize>) -> libimage::Result<()> {
        let kind = match m.kind {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::HardLink => "hardlink",
            Kind::Special => "special",
        };
        let target = match m.kind {
            Kind::Symlink if m.context.is_none() => format!(" -> {}", String::from_utf8_lossy(&m.link)),
            Kind::HardLink => format!(" link to {}", String::from_utf8_lossy(&m.link)),
            _ => String::new(),
        };
        let io = |e| libimage::Error::io("writing the listing", e);
        writeln!(
            self.out,
            "{:<8} {:>7o} {:>5}/{:<5} {:>12} {}{}{}",
            kind,
            m.mode & 0o7777,
            m.uid,
            m.gid,
            m.size,
            String::from_utf8_lossy(&m.path),
            target,
            if m.context.is_some() { " [encrypted]" } else { "" }
        )
        .map_err(io)
    }
}

pub fn list(mut input: Box<dyn Read>) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    read_archive(&mut input, &mut Lister { out: &mut out })?;
    Ok(exit::OK)
}

pub fn verify(mut input: Box<dyn Read>, bases: &[PathBuf]) -> anyhow::Result<i32> {
    let rep = base::verify(&mut input, bases)?;
    let id = rep.manifest.as_ref().map(|m| m.backup_id.as_str()).unwrap_or_default();
    let keys = &rep.keys_needed;
    println!(
        "ok: ext4 backup {id}: {} members, {} bytes of ciphertext blocks, every member checksum and the archive crc32c verified; keys needed: {}",
        rep.members,
        rep.stored_bytes,
        if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
    );
    if let Some(b) = rep.manifest.as_ref().and_then(|m| m.base_backup_id.as_ref()) {
        if bases.is_empty() {
            println!(
                "note: incremental on {b}: the ciphertext of {} unchanged files lives in the base backups and was not checked (pass --base for the whole chain)",
                rep.unchanged
            );
        } else {
            println!(
                "incremental on {b}: the ciphertext of all {} unchanged files was found in the base backups given",
                rep.unchanged_found
            );
        }
    }
    Ok(exit::OK)
}
