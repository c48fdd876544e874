//! The ext4 side of fsck-crypt (format detected by the ext4 magic): output
//! only; the work is in `libimage::ops::ext4`, and every `--json` document is
//! one of its report types in the shared envelope.

use std::io::Write;
use std::path::{Path, PathBuf};

use cryptimg_cli::human::{bytes as hb, utc_date};
use cryptimg_cli::{exit, load_keys};
use libimage::ops::ext4::{self, check::Ext4CheckOptions};
use libimage::ops::read::ExtractReport;

const TOOL: &str = "fsck-crypt";

pub fn is_ext4(image: &Path) -> bool {
    ext4::reader::is_ext4(image)
}

/// ext4 images have no snapshots: `--snapshot` is a usage error.
pub fn refuse_snapshot(snapshot: &Option<String>) -> Option<i32> {
    snapshot.as_ref().map(|_| {
        eprintln!("fsck-crypt: --snapshot does not apply to ext4 images (they have no snapshots)");
        exit::USAGE
    })
}

pub fn info(image: &Path, json: bool) -> anyhow::Result<i32> {
    let i = ext4::check::info(image)?;
    if json {
        cryptimg_cli::json::print(TOOL, "info", &i)?;
        return Ok(exit::OK);
    }
    println!("image        {}", image.display());
    println!(
        "format       ext4, block size {}, {} blocks ({} free), {} inodes ({} free)",
        i.block_size, i.total_blocks, i.free_blocks, i.inodes, i.free_inodes
    );
    println!("uuid         {}", i.uuid);
    println!("written      {}", utc_date(i.commit_time));
    println!("file size    {} ({} on disk)", hb(i.file_bytes), hb(i.disk_bytes));
    println!("encrypted directories (policy roots):");
    for p in &i.encrypted_directories {
        println!("  {}  (inode {}) key {}", p.path, p.inode, p.key_id);
    }
    for k in &i.keys {
        println!(
            "key {} protects {} directories, {} files, {} symlinks",
            k.key_id, k.directories, k.files, k.symlinks
        );
    }
    Ok(exit::OK)
}

/// The entries `ls` shows (printed by the caller, as for cryptimg).
pub fn ls(image: &Path, path: Option<String>, key_file: &[PathBuf]) -> anyhow::Result<Vec<libimage::ops::read::LsEntry>> {
    let keys = load_keys(key_file)?;
    if !keys.is_empty() {
        let needed: Vec<String> = ext4::check::info(image)?.keys.into_iter().map(|k| k.key_id).collect();
        cryptimg_cli::warn_unneeded_keys(TOOL, &format!("ext4 image {}", image.display()), &keys, &needed);
    }
    let fs = ext4::reader::open(image)?;
    Ok(ext4::list::ls(&fs, path.as_deref().unwrap_or(""), &keys)?)
}

pub fn check(image: &Path, key_file: &[PathBuf], data: bool, json: bool, repair: bool) -> anyhow::Result<i32> {
    if repair {
        eprintln!("fsck-crypt: --repair does not apply to ext4: structural repair is e2fsck's job (e2fsck -f)");
        return Ok(exit::USAGE);
    }
    let keys = load_keys(key_file)?;
    let r = ext4::check::check(image, &keys, Ext4CheckOptions { data })?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", cryptimg_cli::json::to_string(TOOL, "check", &r)?)?;
        return Ok(r.exit_code);
    }
    for f in &r.findings {
        writeln!(out, "{f}")?;
    }
    for k in &r.keys {
        writeln!(
            out,
            "key {} {}: {} directories, {} files, {} symlinks",
            k.key_id,
            if k.given { "(given)" } else { "(not given)" },
            k.directories,
            k.files,
            k.symlinks
        )?;
    }
    let s = &r.summary;
    writeln!(
        out,
        "checked {} inodes, read {} of metadata and {} of data",
        s.inodes,
        hb(s.bytes_checked.metadata),
        hb(s.bytes_checked.data)
    )?;
    if s.errors + s.warnings == 0 {
        writeln!(
            out,
            "{}: clean (fscrypt invariants; run e2fsck -fn for the ext4 structure)",
            image.display()
        )?;
    } else {
        writeln!(
            out,
            "{}: {} errors, {} warnings, {} notes (exit {})",
            image.display(),
            s.errors,
            s.warnings,
            s.infos,
            r.exit_code
        )?;
    }
    Ok(r.exit_code)
}

const PATH_HINT: &str = "PATHs are real names as `fsck-crypt ls IMAGE DIR --key-file K` shows them";
const PATH_DEST_HINT: &str =
    "PATHs are real names as `fsck-crypt ls IMAGE DIR --key-file K` shows them; DEST must be new or an empty directory";

/// `extract IMAGE DEST [PATH]...`: to a directory, or a pax stream when DEST
/// is `-` (refused on a terminal by the caller); printed by the caller.
pub fn extract(
    image: &Path,
    dest: &Path,
    paths: &[Vec<u8>],
    key_file: &[PathBuf],
    bar: &cryptimg_cli::Bar,
) -> anyhow::Result<ExtractReport> {
    let keys = load_keys(key_file)?;
    let fs = ext4::reader::open(image)?;
    let (stats, destination) = if dest.as_os_str() == "-" {
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let (_, st) = ext4::extract::extract_tar(&fs, &keys, paths, out, bar).map_err(|e| cryptimg_cli::flag_hint(e, PATH_HINT))?;
        (st, "standard output (pax tar)".to_string())
    } else {
        let as_root = libimage::tree::write::running_as_root();
        let st =
            ext4::extract::extract_paths(&fs, &keys, paths, dest, as_root, bar).map_err(|e| cryptimg_cli::flag_hint(e, PATH_DEST_HINT))?;
        (st, dest.display().to_string())
    };
    Ok(ExtractReport { destination, stats })
}

/// `cat IMAGE PATH`: one regular file to standard output.
pub fn cat(image: &Path, path: &[u8], key_file: &[PathBuf]) -> anyhow::Result<i32> {
    let keys = load_keys(key_file)?;
    let fs = ext4::reader::open(image)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    ext4::extract::cat(&fs, &keys, path, &mut out)?;
    out.flush()?;
    Ok(exit::OK)
}
