//! mkfs-crypt: build encrypted images; manage snapshots and keys.
//! Flags and output only; the work is done in libimage.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cryptimg_cli::{exit, main_with, parse_args, parse_size, Bar};
use libimage::build::Reproducible;
use libimage::create::{create_image, CreateOptions, Source};
use libimage::keyfile::{generate_key_file, load_key};

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
}

#[derive(Args)]
struct CreateArgs {
    /// The image file to create.
    image: PathBuf,
    /// Source directory tree.
    #[arg(long, conflicts_with = "tar", required_unless_present = "tar")]
    root: Option<PathBuf>,
    /// Source tar archive (ustar, pax, GNU), or `-` for standard input.
    #[arg(long)]
    tar: Option<PathBuf>,
    /// Raw master key file (32..64 bytes), or `-` for standard input.
    #[arg(long)]
    key_file: PathBuf,
    /// Name of the first snapshot.
    #[arg(long, default_value = "main")]
    snapshot: String,
    /// Byte-identical output for identical input and key (implied by SOURCE_DATE_EPOCH).
    #[arg(long)]
    deterministic: bool,
    /// Replace an existing image.
    #[arg(long)]
    force: bool,
    /// Fix the image size (e.g. 512M); by default it grows as needed.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// No progress and no summary.
    #[arg(long, short)]
    quiet: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn create(a: CreateArgs) -> anyhow::Result<i32> {
    let key = load_key(&a.key_file)?;
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not an integer"))?,
        ),
        Err(_) => None,
    };
    let opts = CreateOptions {
        snapshot: a.snapshot,
        repro: Reproducible {
            deterministic: a.deterministic || epoch.is_some(),
            clamp: epoch,
        },
        force: a.force,
        size: a.size,
    };
    let bar = Bar::new(a.quiet || a.no_progress);
    let report = match (&a.root, &a.tar) {
        (Some(d), _) => create_image(&a.image, Source::Dir(d), &key, &opts, &bar)?,
        (None, Some(t)) if t.as_os_str() == "-" => create_image(&a.image, Source::Tar(&mut std::io::stdin().lock()), &key, &opts, &bar)?,
        (None, Some(t)) => {
            let mut f = std::fs::File::open(t).map_err(|e| anyhow::anyhow!("opening tar {}: {e}", t.display()))?;
            create_image(&a.image, Source::Tar(&mut f), &key, &opts, &bar)?
        }
        (None, None) => unreachable!("clap requires --root or --tar"),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !a.quiet {
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

fn main() {
    let cli: Cli = parse_args();
    main_with("mkfs-crypt", || match cli.cmd {
        Cmd::Create(a) => create(a),
        Cmd::Keygen { file } => {
            let key = generate_key_file(&file)?;
            println!("{}", key.identifier());
            Ok(exit::OK)
        }
    })
}
