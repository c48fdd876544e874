//! fsck-crypt: inspect, list, extract and check cryptimg and ext4 images.
//! Flags and output only; the work is done in libimage.

mod ext4;

mod args;
use args::*;
use std::io::Write;
use std::path::PathBuf;

use cryptimg_cli::human::{bytes as hb, utc_date};
use cryptimg_cli::quote::QuotingStyle;
use cryptimg_cli::{exit, load_keys, main_with, parse_args, Bar};
use libimage::engine::image::{Access, Image};
use libimage::ops::check::CheckOptions;
use libimage::ops::read::TreeReader;

/// Each binary (not the shared `cli` library) picks the allocator: mimalloc,
/// for the many small allocations of decoded metadata (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOOL: &str = "fsck-crypt";

fn info(image: PathBuf, json: bool) -> anyhow::Result<i32> {
    if ext4::is_ext4(&image) {
        return ext4::info(&image, json);
    }
    let img = Image::open(&image, Access::ReadOnly)?;
    let i = libimage::ops::create::info(&img);
    if json {
        cryptimg_cli::json::print(TOOL, "info", &i)?;
        return Ok(exit::OK);
    }
    println!("image        {}", image.display());
    println!("format       v{}, block size {}", i.format_version, i.block_size);
    println!("uuid         {}", i.uuid);
    println!("generation   {}, committed {}", i.generation, utc_date(i.commit_time));
    println!("file size    {} ({} on disk)", hb(i.file_bytes), hb(i.disk_bytes));
    println!(
        "blocks       {} total, {} free{}",
        i.total_blocks,
        i.free_blocks,
        if i.max_blocks == 0 {
            " (grows as needed)".to_string()
        } else {
            format!(" (fixed at {}, {})", i.max_blocks, hb(i.max_blocks * i.block_size as u64))
        }
    );
    println!("extents      {}", i.extents);
    for s in &i.snapshots {
        println!(
            "snapshot {:?}: {} inodes, {} in files, {} of extents, created {}, policy key {}",
            s.name,
            s.inodes,
            hb(s.file_bytes),
            hb(s.extent_bytes),
            utc_date(s.created),
            s.policy
        );
        println!("  needs keys {}", s.keys_needed.join(", "));
        for (k, n) in &s.extents_by_key {
            println!("  {n} extents under {k}");
        }
    }
    Ok(exit::OK)
}

fn ls(
    image: PathBuf,
    path: Option<String>,
    snapshot: Option<String>,
    key_file: Vec<PathBuf>,
    style: Option<QuotingStyle>,
    json: bool,
) -> anyhow::Result<i32> {
    let style = QuotingStyle::or_default(style);
    if ext4::is_ext4(&image) {
        if let Some(code) = ext4::refuse_snapshot(&snapshot) {
            return Ok(code);
        }
        let entries = ext4::ls(&image, path, &key_file)?;
        return print_ls(&entries, style, json);
    }
    let keys = load_keys(&key_file)?;
    let img = Image::open(&image, Access::ReadOnly)?;
    let snap = img
        .snapshot(snapshot.as_deref())
        .map_err(|e| cryptimg_cli::flag_hint(e, "choose the snapshot with --snapshot"))?;
    if !keys.is_empty() {
        let info = libimage::ops::create::info(&img);
        let needed = info
            .snapshots
            .iter()
            .find(|s| s.name == snap.name)
            .map(|s| s.keys_needed.clone())
            .unwrap_or_default();
        cryptimg_cli::warn_unneeded_keys(TOOL, &format!("snapshot {:?}", snap.name), &keys, &needed);
    }
    let entries = libimage::ops::read::ls(&TreeReader::new(&img, snap, &keys), path.as_deref().unwrap_or("").as_bytes())?;
    print_ls(&entries, style, json)
}

/// Prints `ls` entries (both formats): one line each, or `--json`.
fn print_ls(entries: &[libimage::ops::read::LsEntry], style: QuotingStyle, json: bool) -> anyhow::Result<i32> {
    if json {
        cryptimg_cli::json::print(TOOL, "ls", &serde_json::json!({ "entries": entries }))?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for e in entries {
        write!(out, "{:06o} {:>5} {:>5} {:>12} ", e.mode, e.uid, e.gid, e.size)?;
        out.write_all(&style.quote(&e.name))?;
        writeln!(out)?;
    }
    Ok(exit::OK)
}

fn check(a: CheckArgs) -> anyhow::Result<i32> {
    if ext4::is_ext4(&a.image) {
        if let Some(code) = ext4::refuse_snapshot(&a.snapshot) {
            return Ok(code);
        }
        return ext4::check(&a.image, &a.key_file, a.data, a.json, a.repair);
    }
    let keys = load_keys(&a.key_file)?;
    let opts = CheckOptions {
        snapshot: a.snapshot,
        data: a.data,
        repair: a.repair,
    };
    let r = libimage::ops::check::check(&a.image, &keys, &opts, &Bar::new(a.no_progress || a.json))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", cryptimg_cli::json::to_string(TOOL, "check", &r)?)?;
        return Ok(r.exit_code);
    }
    for f in &r.findings {
        writeln!(out, "{f}")?;
    }
    for x in &r.repairs {
        writeln!(out, "{x}")?;
    }
    for n in &r.not_repaired {
        writeln!(out, "not repaired: {n}")?;
    }
    for s in &r.summary.key_coverage {
        writeln!(out, "snapshot {:?} needs keys:", s.snapshot)?;
        for k in &s.keys {
            let n = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            writeln!(
                out,
                "  {} {}{}: {}, {}, {}",
                k.key_id,
                if k.given { "(given, verified)" } else { "(not given)" },
                if k.policy { " (policy)" } else { "" },
                n(k.directories, "directory", "directories"),
                n(k.symlinks, "symlink", "symlinks"),
                n(k.extents, "extent", "extents")
            )?;
        }
    }
    let b = &r.summary.bytes_checked;
    write!(out, "checked {} of metadata", hb(b.metadata))?;
    if a.data {
        write!(
            out,
            ", {} of data in {} extents ({} with a given key)",
            hb(b.data),
            b.extents_scrubbed,
            b.extents_verified_with_key
        )?;
    }
    writeln!(out)?;
    if let Some(note) = r.summary.data_note {
        writeln!(out, "note: {note}")?;
    }
    let s = &r.summary;
    if s.errors + s.warnings == 0 {
        writeln!(
            out,
            "{}: clean{}",
            a.image.display(),
            if r.repairs.is_empty() { "" } else { " after repair" }
        )?;
    } else {
        writeln!(
            out,
            "{}: {} errors, {} warnings, {} notes left (exit {})",
            a.image.display(),
            s.errors,
            s.warnings,
            s.infos,
            r.exit_code
        )?;
    }
    Ok(r.exit_code)
}

fn extract(
    image: PathBuf,
    dest: PathBuf,
    paths: Vec<PathBuf>,
    snapshot: Option<String>,
    key_file: Vec<PathBuf>,
    no_progress: bool,
    json: bool,
) -> anyhow::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let paths: Vec<Vec<u8>> = paths.iter().map(|p| p.as_os_str().as_bytes().to_vec()).collect();
    let to_tar = dest.as_os_str() == "-";
    if to_tar {
        cryptimg_cli::refuse_terminal_stdout("a tar stream", "e.g. `| tar -xpf -`")?;
    }
    // The bar draws on standard error, so it does not disturb a tar stream.
    let bar = Bar::new(no_progress);
    let r = if ext4::is_ext4(&image) {
        if let Some(code) = ext4::refuse_snapshot(&snapshot) {
            return Ok(code);
        }
        ext4::extract(&image, &dest, &paths, &key_file, &bar)?
    } else {
        let keys = load_keys(&key_file)?;
        let img = Image::open(&image, Access::ReadOnly)?;
        let (stats, destination) = if to_tar {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let (_, st) = libimage::ops::read::extract_tar(&img, snapshot.as_deref(), &keys, &paths, out, &bar)
                .map_err(|e| cryptimg_cli::flag_hint(e, "choose the snapshot with --snapshot"))?;
            (st, "standard output (pax tar)".to_string())
        } else {
            let as_root = libimage::tree::write::running_as_root();
            let st = libimage::ops::read::extract_paths(&img, snapshot.as_deref(), &keys, &paths, &dest, as_root, &bar)
                .map_err(|e| cryptimg_cli::flag_hint(e, "choose the snapshot with --snapshot; DEST must be new or an empty directory"))?;
            (st, dest.display().to_string())
        };
        libimage::ops::read::ExtractReport { destination, stats }
    };
    let st = &r.stats;
    if st.skipped > 0 && !to_tar {
        eprintln!(
            "warning: {} device node(s) not created (creating them needs root){}",
            st.skipped,
            if st.links_skipped > 0 {
                format!(", nor {} more name(s) hard-linked to them", st.links_skipped)
            } else {
                String::new()
            }
        );
    }
    if json {
        // With a tar stream on standard output, the document goes to standard error.
        let text = cryptimg_cli::json::to_string(TOOL, "extract", &r)?;
        if to_tar {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
        return Ok(exit::OK);
    }
    eprintln!(
        "extracted {} files, {} dirs, {} symlinks, {} special, {} hard links ({} skipped) to {}",
        st.files, st.dirs, st.symlinks, st.specials, st.hardlinks, st.skipped, r.destination
    );
    Ok(exit::OK)
}

fn cat(image: PathBuf, path: PathBuf, snapshot: Option<String>, key_file: Vec<PathBuf>) -> anyhow::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    if ext4::is_ext4(&image) {
        if let Some(code) = ext4::refuse_snapshot(&snapshot) {
            return Ok(code);
        }
        return ext4::cat(&image, path.as_os_str().as_bytes(), &key_file);
    }
    let keys = load_keys(&key_file)?;
    let img = Image::open(&image, Access::ReadOnly)?;
    let snap = img.snapshot(snapshot.as_deref())?;
    let r = TreeReader::new(&img, snap, &keys);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    libimage::ops::read::cat(&r, path.as_os_str().as_bytes(), &mut out)?;
    out.flush()?;
    Ok(exit::OK)
}

fn main() {
    cryptimg_cli::init_process();
    let cli: Cli = parse_args();
    libimage::engine::lock::set_wait(cli.wait);
    main_with("fsck-crypt", || match cli.cmd {
        Cmd::Info { image, json } => info(image, json),
        Cmd::Check(a) => check(a),
        Cmd::Ls {
            image,
            path,
            snapshot,
            key_file,
            quoting_style,
            json,
        } => ls(image, path, snapshot, key_file, quoting_style, json),
        Cmd::Extract {
            image,
            dest,
            paths,
            snapshot,
            key_file,
            no_progress,
            json,
        } => extract(image, dest, paths, snapshot, key_file, no_progress, json),
        Cmd::Cat {
            image,
            path,
            snapshot,
            key_file,
        } => cat(image, path, snapshot, key_file),
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
