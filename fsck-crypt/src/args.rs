//! The command line of fsck-crypt: flags, arguments and their help, and nothing
//! else, so that `xtask` builds the same clap `Command` for man pages and
//! shell completions (it includes this file).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cryptimg_cli::quote::QuotingStyle;

pub const EXIT_CODES: &str =
    "Exit codes (fsck bitmask): 0 clean, 1 errors fixed, 4 errors left uncorrected / corrupt image (5 = some fixed, some left), \
8 operational error, 16 usage error, 64 key problem (a needed key not given; for `check`, a given key matching nothing). \
For `check`, warnings (a damaged spare superblock slot) count as errors left uncorrected; notes do not.\n\
Keys are read from files (or `-` for stdin), never from the command line.";

#[derive(Parser)]
#[command(name = "fsck-crypt", version = cryptimg_cli::VERSION, about = "Check, inspect and extract cryptimg and fscrypt-encrypted ext4 images", after_help = EXIT_CODES)]
pub struct Cli {
    /// When another process holds the image, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Superblock, snapshots, and the key ids each snapshot needs (no key required); for ext4, the
    /// encrypted directories and their key ids.
    Info {
        /// The image file (cryptimg, or ext4 image or block device).
        image: PathBuf,
        /// Print the information as JSON (exact byte counts, times as Unix seconds).
        #[arg(long)]
        json: bool,
    },
    /// List a directory: no-key names without a key, real names with one.
    Ls {
        /// The image file (cryptimg or ext4).
        image: PathBuf,
        /// Directory or file inside the snapshot (real names with a key, no-key names without).
        path: Option<String>,
        /// Snapshot to list (default: the only one, or `main`; not for ext4).
        #[arg(long)]
        snapshot: Option<String>,
        /// Key file(s) (repeatable; `-` = stdin once).
        #[arg(long)]
        key_file: Vec<PathBuf>,
        /// How to print names: `escape` (C escapes, the default in a pipe), `shell-escape` (the
        /// default on a terminal) or `literal` (raw bytes).
        #[arg(long, value_enum)]
        quoting_style: Option<QuotingStyle>,
        /// Print the entries as JSON (exact names: `name` when UTF-8, else `name_base64`).
        #[arg(long)]
        json: bool,
    },
    /// Check an image's integrity: keyless always, names and links with keys, data with --data.
    ///
    /// ext4 images (detected by magic) get the fscrypt invariants checked (contexts, flags, name and
    /// symlink ciphertext, decryption with keys); structural repair of ext4 is e2fsck's job, not this tool's.
    Check(CheckArgs),
    /// Write a snapshot's tree (or only PATHs) back to DEST with all metadata (ownership and devices
    /// only as root), or as a pax tar stream to standard output when DEST is `-`.
    Extract {
        /// The image file (cryptimg or ext4).
        image: PathBuf,
        /// Destination directory (absent or empty), or `-` for a pax tar stream on standard output
        /// (refused on a terminal).
        dest: PathBuf,
        /// Paths inside the snapshot to extract (a directory means its subtree), with their parent
        /// directories; all of it when none.
        paths: Vec<PathBuf>,
        /// Snapshot to extract (default: the only one, or `main`; not for ext4).
        #[arg(long)]
        snapshot: Option<String>,
        /// Key file(s) (repeatable; `-` = stdin once).
        #[arg(long, required = true)]
        key_file: Vec<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Print the summary as JSON (on standard error with DEST `-`).
        #[arg(long)]
        json: bool,
    },
    /// Print one regular file's contents to standard output.
    Cat {
        /// The image file (cryptimg or ext4).
        image: PathBuf,
        /// The file inside the snapshot (real names; `.` and `..` work as in a shell).
        path: PathBuf,
        /// Snapshot to read (default: the only one, or `main`; not for ext4).
        #[arg(long)]
        snapshot: Option<String>,
        /// Key file(s) (repeatable; `-` = stdin once).
        #[arg(long, required = true)]
        key_file: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub struct CheckArgs {
    /// The image file to check (cryptimg, or ext4 image or block device).
    pub image: PathBuf,
    /// Key file(s) to verify (repeatable; `-` = stdin once).
    #[arg(long)]
    pub key_file: Vec<PathBuf>,
    /// Restrict the keyed checks, key coverage and --data to one snapshot (not for ext4).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Also recompute the crc32c of every extent's ciphertext (a scrub).
    #[arg(long)]
    pub data: bool,
    /// Print one JSON document (findings with code, severity, where, message and hint; repairs; summary).
    #[arg(long)]
    pub json: bool,
    /// Fix refcounts, leaked blocks, a stale superblock slot, dangling entries, orphans and
    /// link counts, in one copy-on-write commit (cryptimg only: ext4 repair is e2fsck's job).
    #[arg(long)]
    pub repair: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}
