//! The command line of backup-crypt: flags, arguments and their help, and nothing
//! else, so that `xtask` builds the same clap `Command` for man pages and
//! shell completions (it includes this file).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cryptimg_cli::quote::QuotingStyle;
use cryptimg_cli::OutputArgs;

pub const EXIT_CODES: &str = "Exit codes: 0 success, 4 corrupt or hostile input (archive or image), 8 operational error (I/O, missing base, refused), 16 usage error, 64 key problem.\n\
No command needs a key; `list --key-file` only shows real names.";

#[derive(Parser)]
#[command(
    name = "backup-crypt",
    version = cryptimg_cli::VERSION,
    about = "Back up and restore encrypted images as ciphertext, without keys",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// When another process holds the image, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Stream a snapshot out of IMAGE as a pax archive (the image is only read).
    Create {
        /// The image to back up (only read).
        image: PathBuf,
        /// Output archive, or `-` for standard output.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Snapshot to back up (default: the only one, or `main`).
        #[arg(long)]
        snapshot: Option<String>,
        /// Incremental: do not store extents already in this earlier backup.
        #[arg(long)]
        since: Option<PathBuf>,
        /// Replace an existing output archive.
        #[arg(long)]
        force: bool,
        /// (With `-o -` the summary goes to stderr.)
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Restore an archive into a new IMAGE, or as a new snapshot of an existing one.
    Restore {
        /// Input archive, or `-` for standard input.
        input: PathBuf,
        /// The image to restore into: a new file, or an existing image that gets a new snapshot.
        image: PathBuf,
        /// Name of the restored snapshot (default: the archived name).
        #[arg(long)]
        snapshot: Option<String>,
        /// Base backup of an incremental archive (repeat for the whole chain).
        #[arg(long = "base")]
        bases: Vec<PathBuf>,
        /// ext4 archives: size of the new image in bytes (default: the source's).
        #[arg(long)]
        size: Option<u64>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List an archive's members (no-key names; real names with --key-file).
    List {
        /// Input archive, or `-` for standard input.
        input: PathBuf,
        /// Print the manifest and members as JSON.
        #[arg(long)]
        json: bool,
        /// Key file(s) to show real names (repeatable; `-` = stdin once).
        #[arg(long)]
        key_file: Vec<PathBuf>,
        /// How to print names: `escape` (C escapes, the default in a pipe), `shell-escape` (the
        /// default on a terminal) or `literal` (raw bytes). `--json` keeps exact names.
        #[arg(long, value_enum)]
        quoting_style: Option<QuotingStyle>,
    },
    /// Check an archive without any image: structure, paths, names, checksums.
    Verify {
        /// Input archive, or `-` for standard input.
        input: PathBuf,
        /// Base backup(s) of an incremental archive, to check references too.
        #[arg(long = "base")]
        bases: Vec<PathBuf>,
        /// Print the verification report as JSON.
        #[arg(long)]
        json: bool,
    },
}
