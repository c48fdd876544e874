//! mkfs-crypt: build encrypted images; manage snapshots and keys.
//! Flags and output only; the work is done in libimage.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod ext4_cmd;
use cryptimg_cli::{exit, load_keys, main_with, parse_args, parse_size, OutputArgs};
use libimage::engine::image::{Access, Image};
use libimage::engine::keyfile::{generate_key_file, load_key};
use libimage::ops::build::Reproducible;
use libimage::ops::create::{create_image, CreateOptions, Source};
use libimage::ops::lifecycle::{self, RekeyOptions, UpdateOptions};

#[derive(Parser)]
#[command(name = "mkfs-crypt", version, about = "Build fscrypt-encrypted filesystem images offline", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 4 corrupt input (tar, image), 8 operational error (I/O, key, refused), 16 usage error.\n\
Keys are read from files (or `-` for stdin), never from the command line.";

#[derive(Subcommand)]
enum Cmd {
    /// Build a new image from a directory tree or a tar stream.
    Create(CreateArgs),
    /// Write a new random 64-byte master key (mode 0600) and print its identifier.
    Keygen {
        /// Where to write the key; must not exist.
        file: PathBuf,
    },
    /// Add a snapshot sharing every extent of an existing one (copies metadata only; no key needed).
    Snapshot(SnapshotArgs),
    /// Move a snapshot to a new key: names and symlink targets now, data with --reencrypt.
    Rekey(RekeyArgs),
    /// Add or replace files of a snapshot from a directory tree or a tar stream.
    Update(UpdateArgs),
    /// Delete a snapshot, freeing the extents no other snapshot shares (no key needed).
    Delete(DeleteArgs),
}

#[derive(Args)]
struct SnapshotArgs {
    /// The image to change.
    image: PathBuf,
    /// The snapshot to copy.
    #[arg(long)]
    from: String,
    /// Name of the new snapshot.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct RekeyArgs {
    /// The image to change.
    image: PathBuf,
    /// The snapshot to move to the new key.
    #[arg(long)]
    snapshot: String,
    /// Key file(s) the snapshot is under now (repeatable; `-` = stdin once).
    #[arg(long, required = true)]
    old_key_file: Vec<PathBuf>,
    /// Key file of the new key (`-` = stdin).
    #[arg(long)]
    new_key_file: PathBuf,
    /// Also re-encrypt every data extent under the new key, so the snapshot needs only it.
    #[arg(long)]
    reencrypt: bool,
    /// Continue an interrupted rekey (a plain re-run does the same: finished work is skipped).
    #[arg(long)]
    resume: bool,
    /// Commit --reencrypt work in batches of this size (e.g. 256M).
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    batch_size: u64,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct UpdateArgs {
    /// The image to change.
    image: PathBuf,
    /// The snapshot to update.
    #[arg(long)]
    snapshot: String,
    /// Source directory tree.
    #[arg(long, conflicts_with = "tar", required_unless_present = "tar")]
    root: Option<PathBuf>,
    /// Source tar archive (ustar, pax, GNU), or `-` for standard input.
    #[arg(long)]
    tar: Option<PathBuf>,
    /// Key file(s): the snapshot's policy key, plus any key its directories are under (repeatable; `-` = stdin once).
    #[arg(long, required = true)]
    key_file: Vec<PathBuf>,
    /// Also delete every file and directory the source directory no longer has (not with --tar).
    #[arg(long, conflicts_with = "tar")]
    delete_missing: bool,
    /// Rewrite every file; by default a file whose size, mtime, mode, owner and xattrs are unchanged is kept
    /// (its data stays shared with other snapshots, under the key it has).
    #[arg(long)]
    rewrite_all: bool,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct DeleteArgs {
    /// The image to change.
    image: PathBuf,
    /// The snapshot to delete (not the image's last one).
    #[arg(long)]
    snapshot: String,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct CreateArgs {
    /// The image file to create.
    image: PathBuf,
    /// Source directory tree.
    #[arg(long, conflicts_with_all = ["tar", "from_image"], required_unless_present_any = ["tar", "from_image"])]
    root: Option<PathBuf>,
    /// Source tar archive (ustar, pax, GNU), or `-` for standard input.
    #[arg(long, conflicts_with = "from_image")]
    tar: Option<PathBuf>,
    /// Source cryptimg image whose snapshot (--snapshot, else its only one) is exported (--format ext4).
    #[arg(long, requires = "format")]
    from_image: Option<PathBuf>,
    /// Raw master key file (32..64 bytes), or `-` for standard input. With --from-image, repeat it
    /// for every key the snapshot uses; the snapshot's policy key encrypts the ext4 image.
    #[arg(long, required = true)]
    key_file: Vec<PathBuf>,
    /// Image format: `cryptimg` (default) or `ext4` (a kernel-mountable ext4 filesystem with fscrypt v2).
    #[arg(long, value_parser = ["cryptimg", "ext4"], default_value = "cryptimg")]
    format: String,
    /// ext4: name of the encrypted top-level directory holding the tree.
    #[arg(long, default_value = "data")]
    encrypted_dir: String,
    /// ext4: leave out the journal.
    #[arg(long)]
    no_journal: bool,
    /// Name of the first snapshot (cryptimg; default main), or the snapshot to export (--from-image).
    #[arg(long)]
    snapshot: Option<String>,
    /// Byte-identical output for identical input and key (implied by SOURCE_DATE_EPOCH).
    #[arg(long)]
    deterministic: bool,
    /// Replace an existing image.
    #[arg(long)]
    force: bool,
    /// Fix the image size (e.g. 512M); by default it grows as needed (ext4: computed from the source).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    #[command(flatten)]
    out: OutputArgs,
}

fn create(a: CreateArgs) -> anyhow::Result<i32> {
    if a.format == "ext4" {
        return ext4_cmd::create_ext4(a);
    }
    if a.from_image.is_some() {
        anyhow::bail!("--from-image needs --format ext4");
    }
    let [key_file] = a.key_file.as_slice() else {
        anyhow::bail!("--format cryptimg takes exactly one --key-file");
    };
    let key = load_key(key_file)?;
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not an integer"))?,
        ),
        Err(_) => None,
    };
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
    let report = match (&a.root, &a.tar) {
        (Some(d), _) => create_image(&a.image, Source::Dir(d), &key, &opts, &bar)?,
        (None, Some(t)) if t.as_os_str() == "-" => create_image(&a.image, Source::Tar(&mut std::io::stdin().lock()), &key, &opts, &bar)?,
        (None, Some(t)) => {
            let mut f = std::fs::File::open(t).map_err(|e| anyhow::anyhow!("opening tar {}: {e}", t.display()))?;
            create_image(&a.image, Source::Tar(&mut f), &key, &opts, &bar)?
        }
        (None, None) => unreachable!("clap requires --root or --tar"),
    };
    if a.out.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !a.out.quiet {
        let s = &report.stats;
        println!("created {} (snapshot {:?})", report.image.display(), report.snapshot);
        println!("  key id      {}", report.key_id);
        println!(
            "  files       {} regular, {} dirs, {} symlinks, {} hard links, {} special",
            s.files, s.dirs, s.symlinks, s.hardlinks, s.specials
        );
        println!("  bytes       {} in {} extents", s.bytes, s.extents);
        println!("  image size  {} bytes", report.image_bytes);
    }
    Ok(exit::OK)
}

/// Commit and creation time: SOURCE_DATE_EPOCH when set, else now.
fn commit_time() -> anyhow::Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not an integer")),
        Err(_) => Ok(libimage::ops::create::now(Reproducible::default())),
    }
}

fn open_rw(image: &std::path::Path) -> anyhow::Result<Image> {
    Ok(Image::open(image, Access::ReadWrite)?)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn snapshot(a: SnapshotArgs) -> anyhow::Result<i32> {
    let mut img = open_rw(&a.image)?;
    let r = lifecycle::snapshot(&mut img, &a.from, &a.name, commit_time()?)?;
    if a.out.json {
        print_json(&r)?;
    } else if !a.out.quiet {
        println!("snapshot {:?} created from {:?}", r.name, r.from);
        println!("  inodes      {}", r.inodes);
        println!(
            "  shared      {} extents, {} bytes (no data copied)",
            r.extents_shared, r.bytes_shared
        );
        println!("  metadata    {} -> {} bytes", r.metadata_bytes_before, r.metadata_bytes_after);
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
        print_json(&r)?;
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
                "  extents     {} re-encrypted ({} bytes), {} already under the new key, {} left under other keys",
                r.extents_reencrypted, r.bytes_reencrypted, r.extents_already_new, r.extents_other_keys
            );
            println!("  commits     {}", r.commits);
        }
        println!("  needs keys  {}", r.keys_needed.join(", "));
    }
    Ok(exit::OK)
}

fn update(a: UpdateArgs) -> anyhow::Result<i32> {
    if a.tar.as_ref().is_some_and(|t| t.as_os_str() == "-") && a.key_file.iter().any(|p| p.as_os_str() == "-") {
        anyhow::bail!("standard input (-) cannot supply both the tar stream and a key file");
    }
    let keys = load_keys(&a.key_file)?;
    let mut img = open_rw(&a.image)?;
    let opts = UpdateOptions {
        delete_missing: a.delete_missing,
        rewrite_all: a.rewrite_all,
        time: commit_time()?,
    };
    let bar = a.out.bar();
    let r = match (&a.root, &a.tar) {
        (Some(d), _) => lifecycle::update(&mut img, &a.snapshot, Source::Dir(d), &keys, &opts, &bar)?,
        (None, Some(t)) if t.as_os_str() == "-" => {
            lifecycle::update(&mut img, &a.snapshot, Source::Tar(&mut std::io::stdin().lock()), &keys, &opts, &bar)?
        }
        (None, Some(t)) => {
            let mut f = std::fs::File::open(t).map_err(|e| anyhow::anyhow!("opening tar {}: {e}", t.display()))?;
            lifecycle::update(&mut img, &a.snapshot, Source::Tar(&mut f), &keys, &opts, &bar)?
        }
        (None, None) => unreachable!("clap requires --root or --tar"),
    };
    if a.out.json {
        print_json(&r)?;
    } else if !a.out.quiet {
        let s = &r.stats;
        println!("updated snapshot {:?} (new data under key {})", r.snapshot, r.key_id);
        println!(
            "  written     {} regular, {} dirs, {} symlinks, {} hard links, {} special",
            s.files, s.dirs, s.symlinks, s.hardlinks, s.specials
        );
        println!("  bytes       {} in {} extents", s.bytes, s.extents);
        println!("  unchanged   {} regular files kept (data still shared)", r.unchanged);
        println!("  deleted     {} entries", r.deleted);
        println!("  freed       {} extents, {} bytes", r.extents_freed, r.bytes_freed);
    }
    Ok(exit::OK)
}

fn delete(a: DeleteArgs) -> anyhow::Result<i32> {
    let mut img = open_rw(&a.image)?;
    let r = lifecycle::delete(&mut img, &a.snapshot, commit_time()?)?;
    if a.out.json {
        print_json(&r)?;
    } else if !a.out.quiet {
        println!("deleted snapshot {:?} ({} inodes)", r.snapshot, r.inodes);
        println!(
            "  freed       {} extents, {} bytes ({} extents still shared)",
            r.extents_freed, r.bytes_freed, r.extents_kept
        );
    }
    Ok(exit::OK)
}

fn main() {
    let cli: Cli = parse_args();
    main_with("mkfs-crypt", || match cli.cmd {
        Cmd::Create(a) => create(a),
        Cmd::Keygen { file } => {
            let key = generate_key_file(&file)?;
            println!("{}", key.identifier());
            Ok(exit::OK)
        }
        Cmd::Snapshot(a) => snapshot(a),
        Cmd::Rekey(a) => rekey(a),
        Cmd::Update(a) => update(a),
        Cmd::Delete(a) => delete(a),
    })
}
