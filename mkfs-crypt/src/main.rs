//! mkfs-crypt: build encrypted images; manage snapshots and keys.
//! Flags and output only; the work is done in libimage.

mod args;
use args::*;
use std::path::PathBuf;

mod ext4_cmd;
use cryptimg_cli::human::bytes as hb;
use cryptimg_cli::{commit_time, exit, load_key, load_keys, main_with, parse_args, source_date_epoch};
use libimage::engine::image::{Access, Image};
use libimage::engine::keyfile::generate_key_file;
use libimage::ops::build::Reproducible;
use libimage::ops::create::{create_image, CreateOptions};
use libimage::ops::lifecycle::{self, RekeyOptions, UpdateOptions};

/// The tools decode metadata into hundreds of thousands of small allocations
/// (one per name, per file map); with glibc's malloc that dominated
/// `fsck-crypt check` of a 100k-file image (BENCHMARKS.md), so each binary
/// (not the shared `cli` library) uses mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn compact(a: CompactArgs) -> anyhow::Result<i32> {
    let mut img = open_rw(&a.image)?;
    let opts = lifecycle::CompactOptions {
        batch_bytes: a.batch_size.max(1),
        time: commit_time()?,
    };
    let r = lifecycle::compact(&mut img, &opts, &a.out.bar())?;
    if let Some(e) = img.reclaim_error() {
        eprintln!("mkfs-crypt: warning: the image is consistent, but giving space back failed: {e}");
    }
    if a.out.json {
        print_json("compact", &r)?;
    } else if !a.out.quiet {
        println!("compacted {}", a.image.display());
        println!("  moved       {} extents, {}", r.extents_moved, hb(r.bytes_moved));
        println!("  size        {} -> {}", hb(r.file_bytes_before), hb(r.file_bytes_after));
        println!("  on disk     {} -> {}", hb(r.disk_bytes_before), hb(r.disk_bytes_after));
        println!("  commits     {}", r.commits);
    }
    Ok(exit::OK)
}

fn key_json(file: &std::path::Path, id: impl std::fmt::Display, command: &str) -> anyhow::Result<String> {
    let v = serde_json::json!({ "key_file": file.display().to_string(), "key_id": id.to_string() });
    cryptimg_cli::json::to_string("mkfs-crypt", command, &v)
}

fn keygen(file: PathBuf, json: bool) -> anyhow::Result<i32> {
    if file.as_os_str() != "-" {
        let key = generate_key_file(&file)?;
        if json {
            println!("{}", key_json(&file, key.identifier(), "keygen")?);
        } else {
            println!("{}", key.identifier());
        }
        return Ok(exit::OK);
    }
    cryptimg_cli::refuse_terminal_stdout("a raw key", "to a file or a pipe")?;
    let stdout = std::io::stdout();
    let key = libimage::engine::keyfile::generate_key_to(&mut stdout.lock(), "standard output")?;
    if json {
        eprintln!("{}", key_json(&file, key.identifier(), "keygen")?);
    } else {
        eprintln!("{}", key.identifier());
    }
    Ok(exit::OK)
}

fn create(a: CreateArgs) -> anyhow::Result<i32> {
    a.source.check_stdin(a.key_file.iter().map(PathBuf::as_path))?;
    if a.format == "ext4" {
        return ext4_cmd::create_ext4(a);
    }
    if a.from_image.is_some() {
        anyhow::bail!("--from-image needs --format ext4");
    }
    let [key_file] = a.key_file.as_slice() else {
        anyhow::bail!("--format cryptimg takes exactly one --key-file");
    };
    if !a.force && a.image.exists() {
        anyhow::bail!("{} already exists; pass --force to replace it", a.image.display());
    }
    if let Some(size) = a.size {
        if size % 4096 != 0 || size < 4 * 4096 {
            return Err(cryptimg_cli::usage(format!(
                "--size {size}: must be a multiple of 4096 bytes and at least 16K (4 blocks)"
            )));
        }
    }
    let key = load_key(key_file)?;
    let epoch = source_date_epoch()?;
    let opts = CreateOptions {
        snapshot: a.snapshot.unwrap_or_else(|| "main".into()),
        repro: Reproducible {
            deterministic: a.deterministic || epoch.is_some(),
            clamp: epoch,
        },
        force: a.force,
        size: a.size,
    };
    let bar = a.out.bar();
    let report = a.source.with(|src| create_image(&a.image, src, &key, &opts, &bar))?;
    if a.out.json {
        print_json("create", &report)?;
    } else if !a.out.quiet {
        let s = &report.stats;
        println!("created {} (snapshot {:?})", report.image.display(), report.snapshot);
        println!("  key id      {}", report.key_id);
        println!(
            "  files       {} regular, {} dirs, {} symlinks, {} hard links, {} special",
            s.files, s.dirs, s.symlinks, s.hardlinks, s.specials
        );
        println!("  bytes       {} in {} extents", hb(s.bytes), s.extents);
        println!("  image size  {}", hb(report.image_bytes));
    }
    Ok(exit::OK)
}

fn open_rw(image: &std::path::Path) -> anyhow::Result<Image> {
    Ok(Image::open(image, Access::ReadWrite)?)
}

/// Prints `v` in the shared `--json` envelope of command `command`.
fn print_json(command: &str, v: &impl serde::Serialize) -> anyhow::Result<()> {
    cryptimg_cli::json::print("mkfs-crypt", command, v)
}

fn snapshot(a: SnapshotArgs) -> anyhow::Result<i32> {
    let mut img = open_rw(&a.image)?;
    let r = lifecycle::snapshot(&mut img, &a.from, &a.name, commit_time()?)
        .map_err(|e| cryptimg_cli::flag_hint(e, "choose another --name, or delete the existing snapshot first"))?;
    if a.out.json {
        print_json("snapshot", &r)?;
    } else if !a.out.quiet {
        println!("snapshot {:?} created from {:?}", r.name, r.from);
        println!("  inodes      {}", r.inodes);
        println!(
            "  shared      {} extents, {} (no data copied)",
            r.extents_shared,
            hb(r.bytes_shared)
        );
        println!("  metadata    {} -> {}", hb(r.metadata_bytes_before), hb(r.metadata_bytes_after));
    }
    Ok(exit::OK)
}

fn rekey(a: RekeyArgs) -> anyhow::Result<i32> {
    if a.new_key_file.as_os_str() == "-" && a.old_key_file.iter().any(|p| p.as_os_str() == "-") {
        anyhow::bail!("standard input (-) can supply only one key file");
    }
    let old = load_keys(&a.old_key_file)?;
    let new = load_key(&a.new_key_file)?;
    let mut img = open_rw(&a.image)?;
    let opts = RekeyOptions {
        reencrypt: a.reencrypt,
        batch_bytes: a.batch_size.max(1),
        time: commit_time()?,
        ..Default::default()
    };
    let bar = a.out.bar();
    let r = lifecycle::rekey(&mut img, &a.snapshot, &old, &new, &opts, &bar).map_err(|e| {
        let wrong_key = matches!(e, libimage::Error::WrongKey { .. });
        let e = anyhow::Error::new(e);
        if !wrong_key {
            return e;
        }
        e.context(format!(
            "cannot rekey snapshot {:?} without the key(s) it is under now: its names{} must be decrypted \
             to be re-encrypted under the new key; pass them with --old-key-file",
            a.snapshot,
            if a.reencrypt { " and data" } else { "" }
        ))
    })?;
    if a.out.json {
        print_json("rekey", &r)?;
    } else if !a.out.quiet {
        if r.commits == 0 {
            println!("snapshot {:?} is already under key {}: nothing to do", r.snapshot, r.new_policy);
        } else {
            let verb = if a.resume { "resumed rekey of" } else { "rekeyed" };
            if r.old_policy == r.new_policy {
                println!("{verb} snapshot {:?}: policy already {}", r.snapshot, r.new_policy);
            } else {
                println!("{verb} snapshot {:?}: policy {} -> {}", r.snapshot, r.old_policy, r.new_policy);
            }
            println!(
                "  names       {} in {} directories, {} symlink targets",
                r.names, r.dirs, r.symlinks
            );
            println!(
                "  extents     {} re-encrypted ({}), {} already under the new key, {} left under other keys",
                r.extents_reencrypted,
                hb(r.bytes_reencrypted),
                r.extents_already_new,
                r.extents_other_keys
            );
            println!("  commits     {}", r.commits);
        }
        println!("  needs keys  {}", r.keys_needed.join(", "));
    }
    Ok(exit::OK)
}

fn update(a: UpdateArgs) -> anyhow::Result<i32> {
    a.source.check_stdin(a.key_file.iter().map(PathBuf::as_path))?;
    let keys = load_keys(&a.key_file)?;
    let mut img = open_rw(&a.image)?;
    let opts = UpdateOptions {
        delete_missing: a.delete_missing,
        rewrite_all: a.rewrite_all,
        time: commit_time()?,
    };
    let bar = a.out.bar();
    let r = a
        .source
        .with(|src| lifecycle::update(&mut img, &a.snapshot, src, &keys, &opts, &bar))?;
    if a.out.json {
        print_json("update", &r)?;
    } else if !a.out.quiet && !r.committed {
        println!("snapshot {:?} is up to date: no changes (nothing written)", r.snapshot);
    } else if !a.out.quiet {
        let s = &r.stats;
        println!("updated snapshot {:?} (new data under key {})", r.snapshot, r.key_id);
        println!(
            "  written     {} regular, {} dirs, {} symlinks, {} hard links, {} special",
            s.files, s.dirs, s.symlinks, s.hardlinks, s.specials
        );
        println!("  bytes       {} in {} extents", hb(s.bytes), s.extents);
        println!("  unchanged   {} regular files kept (data still shared)", r.unchanged);
        println!("  deleted     {} entries", r.deleted);
        println!("  freed       {} extents, {}", r.extents_freed, hb(r.bytes_freed));
    }
    if r.missing > 0 && !a.out.quiet {
        eprintln!(
            "mkfs-crypt: note: {} entr{} of snapshot {:?} no longer in the source kept; pass --delete-missing to remove them",
            r.missing,
            if r.missing == 1 { "y" } else { "ies" },
            r.snapshot
        );
    }
    Ok(exit::OK)
}

fn delete(a: DeleteArgs) -> anyhow::Result<i32> {
    let mut img = open_rw(&a.image)?;
    let r = lifecycle::delete(&mut img, &a.snapshot, commit_time()?)?;
    if a.out.json {
        print_json("delete", &r)?;
    } else if !a.out.quiet {
        println!("deleted snapshot {:?} ({} inodes)", r.snapshot, r.inodes);
        println!(
            "  freed       {} extents, {} ({} extents still shared)",
            r.extents_freed,
            hb(r.bytes_freed),
            r.extents_kept
        );
    }
    Ok(exit::OK)
}

fn main() {
    cryptimg_cli::init_process();
    let cli: Cli = parse_args();
    libimage::engine::lock::set_wait(cli.wait);
    main_with("mkfs-crypt", || match cli.cmd {
        Cmd::Create(a) => create(a),
        Cmd::Keygen { file, json } => keygen(file, json),
        Cmd::Keyid { key_file, json } => {
            let id = load_key(&key_file)?.identifier();
            if json {
                println!("{}", key_json(&key_file, id, "keyid")?);
            } else {
                println!("{id}");
            }
            Ok(exit::OK)
        }
        Cmd::Compact(a) => compact(a),
        Cmd::Snapshot(a) => snapshot(a),
        Cmd::Rekey(a) => rekey(a),
        Cmd::Update(a) => update(a),
        Cmd::Delete(a) => delete(a),
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
