//! backup-crypt: ciphertext-only backup and restore of cryptimg and ext4 images.
//! Flags and output only; the work is done in `libimage::ops::backup`.

mod ext4;

mod args;
use args::*;
use std::io::{Read, Write};
use std::path::PathBuf;

use cryptimg_cli::human::bytes as hb;
use cryptimg_cli::quote::QuotingStyle;
use cryptimg_cli::{exit, load_keys, main_with, parse_args, Bar, OutputArgs};
use libimage::engine::atomic::AtomicFile;
use libimage::engine::bgio::{BgReader, BgWriter};
use libimage::ops::backup::{self, BackupOptions, RestoreOptions};

/// Each binary (not the shared `cli` library) picks the allocator: mimalloc,
/// for the many small allocations of decoded metadata (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOOL: &str = "backup-crypt";

fn open_input(p: &PathBuf) -> anyhow::Result<Box<dyn Read + Send>> {
    if p.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let f = std::fs::File::open(p).map_err(|e| libimage::Error::io(format!("opening {}", p.display()), e))?;
    Ok(Box::new(f))
}

/// Writes an archive made by `make` to standard output (`-`) or to
/// `output`, under a temporary name renamed into place once it is synced (a
/// failed backup leaves no file; the sync is a named progress phase). The
/// bytes go out on a writer thread ([`BgWriter`]), so reading the image and
/// writing the archive overlap.
pub(crate) fn write_archive<T>(
    output: &std::path::Path,
    bar: &Bar,
    make: impl FnOnce(&mut dyn Write) -> libimage::Result<T>,
) -> anyhow::Result<T> {
    use std::os::fd::AsFd;
    let io = |what: &'static str| move |e| libimage::Error::io(what, e);
    if output.as_os_str() == "-" {
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io("opening standard output"))?;
        let mut w = BgWriter::new(std::fs::File::from(fd)).map_err(io("starting the archive writer"))?;
        let r = make(&mut w)?;
        w.finish().map_err(io("writing the archive"))?;
        return Ok(r);
    }
    let (tmp, f) = AtomicFile::new(output)?;
    let mut w = BgWriter::new(f).map_err(io("starting the archive writer"))?;
    let r = make(&mut w)?;
    let f = w.finish().map_err(io("writing the archive"))?;
    libimage::progress::syncing(bar, || f.sync_all()).map_err(io("syncing the archive"))?;
    tmp.persist(true)?;
    Ok(r)
}

/// What `create` was asked to do.
struct CreateCmd {
    image: PathBuf,
    output: PathBuf,
    snapshot: Option<String>,
    since: Option<PathBuf>,
    force: bool,
    out: OutputArgs,
}

fn create(c: CreateCmd) -> anyhow::Result<i32> {
    let CreateCmd {
        image,
        output,
        snapshot,
        since,
        force,
        out,
    } = c;
    let OutputArgs { quiet, json, .. } = out;
    let to_stdout = output.as_os_str() == "-";
    if to_stdout {
        cryptimg_cli::refuse_terminal_stdout("an archive", "e.g. `-o FILE` or `| ssh host 'cat > backup.tar'`")?;
    } else if !force && output.symlink_metadata().is_ok() {
        anyhow::bail!("{} already exists; pass --force to replace it", output.display());
    }
    if ext4::is_ext4_image(&image) {
        return ext4::create(&image, &output, since, quiet, json, &out.bar());
    }
    let bar = out.bar();
    let opts = BackupOptions { snapshot, since };
    let report = write_archive(&output, &bar, |w| backup::create_backup(&image, w, &opts, &bar))?;
    let text = if json {
        cryptimg_cli::json::to_string(TOOL, "create", &report)?
    } else {
        format!(
            "backup {} of snapshot {:?}{}: {} members, {} of ciphertext stored, {} extents referenced from the base, archive {}",
            report.backup_id,
            report.snapshot,
            report
                .base_backup_id
                .as_ref()
                .map(|b| format!(" (incremental on {b})"))
                .unwrap_or_default(),
            report.members,
            hb(report.stored_bytes),
            report.base_items,
            hb(report.archive_bytes)
        )
    };
    if !quiet || json {
        if to_stdout {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(exit::OK)
}

fn restore(
    input: PathBuf,
    image: PathBuf,
    snapshot: Option<String>,
    bases: Vec<PathBuf>,
    size: Option<u64>,
    out: OutputArgs,
) -> anyhow::Result<i32> {
    let (is_ext4, r) = ext4::peek(open_input(&input)?)?;
    // Read ahead on a second thread: reading the archive overlaps parsing
    // it and writing the image.
    let mut r: Box<dyn Read> = Box::new(BgReader::new(r).map_err(|e| libimage::Error::io("starting the archive reader", e))?);
    let OutputArgs { quiet, json, .. } = out;
    let bar = out.bar();
    // The progress total: the length of an archive file (not of a pipe).
    let archive_bytes = (input.as_os_str() != "-")
        .then(|| std::fs::metadata(&input).ok())
        .flatten()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    if is_ext4 {
        let opts = libimage::ops::ext4::restore::Ext4RestoreOptions {
            size,
            force: false,
            bases,
            archive_bytes,
        };
        return ext4::restore(r, &image, &opts, quiet, json, &bar);
    }
    let opts = RestoreOptions {
        snapshot,
        bases,
        archive_bytes,
    };
    let report = backup::restore_backup(&mut r, &image, &opts, &bar).map_err(|e| {
        cryptimg_cli::archive_error(
            e,
            "name every base backup of the chain with --base, and a new snapshot name with --snapshot",
        )
    })?;
    if json {
        cryptimg_cli::json::print(TOOL, "restore", &report)?;
    } else if !quiet {
        println!(
            "restored snapshot {:?} into {} {}: {} members, {} extents written, {} reused",
            report.snapshot,
            if report.new_image { "new image" } else { "existing image" },
            report.image.display(),
            report.stats.members,
            report.extents_written,
            report.extents_reused
        );
    }
    Ok(exit::OK)
}

fn list(input: PathBuf, json: bool, key_file: Vec<PathBuf>, style: Option<QuotingStyle>) -> anyhow::Result<i32> {
    let keys = load_keys(&key_file)?;
    let (is_ext4, mut r) = ext4::peek(open_input(&input)?)?;
    if is_ext4 {
        return ext4::list(r, &keys, json);
    }
    let (manifest, entries) =
        backup::list_backup(&mut r, &keys).map_err(|e| cryptimg_cli::archive_error(e, "check the arguments and try again"))?;
    let what = format!("backup {} (snapshot {:?})", manifest.backup_id, manifest.snapshot);
    cryptimg_cli::warn_unneeded_keys(TOOL, &what, &keys, &manifest.keys_needed);
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({ "manifest": manifest, "members": entries });
        writeln!(out, "{}", cryptimg_cli::json::to_string(TOOL, "list", &v)?)?;
        return Ok(exit::OK);
    }
    let style = QuotingStyle::or_default(style);
    for e in entries {
        write!(
            out,
            "{:<8} {:>7o} {:>5}/{:<5} {:>12} ",
            e.kind,
            e.mode & 0o7777,
            e.uid,
            e.gid,
            e.size
        )?;
        out.write_all(&style.quote(e.real_path_bytes().unwrap_or(e.path.as_bytes())))?;
        if let Some(t) = e.target_bytes() {
            out.write_all(b" -> ")?;
            out.write_all(&style.quote(t))?;
        }
        writeln!(out)?;
    }
    Ok(exit::OK)
}

fn verify(input: PathBuf, bases: Vec<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let (is_ext4, mut r) = ext4::peek(open_input(&input)?)?;
    if is_ext4 {
        return ext4::verify(r, &bases, json);
    }
    let rep = backup::verify_backup(&mut r, &bases)
        .map_err(|e| cryptimg_cli::archive_error(e, "name every base backup of the chain with --base"))?;
    if json {
        cryptimg_cli::json::print(TOOL, "verify", &rep)?;
        return Ok(exit::OK);
    }
    println!(
        "ok: backup {} of snapshot {:?}: {} members, {} stored, {} extents ({} with every block checked against their crc32c)",
        rep.manifest.backup_id,
        rep.manifest.snapshot,
        rep.stats.members,
        hb(rep.stats.stored_bytes),
        rep.stats.extents,
        rep.stats.extents_checked
    );
    if let Some(b) = &rep.manifest.base_backup_id {
        if rep.base_items_unchecked > 0 {
            println!(
                "note: {} extent items live in base backup {b} and were not checked (pass --base)",
                rep.base_items_unchecked
            );
        } else {
            println!("incremental on {b}: {} referenced items found in the bases", rep.base_items_checked);
        }
    }
    Ok(exit::OK)
}

fn main() {
    cryptimg_cli::init_process();
    let cli: Cli = parse_args();
    libimage::engine::lock::set_wait(cli.wait);
    main_with("backup-crypt", || match cli.cmd {
        Cmd::Create {
            image,
            output,
            snapshot,
            since,
            force,
            out,
        } => create(CreateCmd {
            image,
            output,
            snapshot,
            since,
            force,
            out,
        }),
        Cmd::Restore {
            input,
            image,
            snapshot,
            bases,
            size,
            out,
        } => restore(input, image, snapshot, bases, size, out),
        Cmd::List {
            input,
            json,
            key_file,
            quoting_style,
        } => list(input, json, key_file, quoting_style),
        Cmd::Verify { input, bases, json } => verify(input, bases, json),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument and flag has a help line (`--help`, man pages).
    #[test]
    fn every_argument_has_help() {
        cryptimg_cli::assert_help_complete(super::Cli::command());
    }
}
