//! The command line of mkfs-crypt: flags, arguments and their help, and nothing
//! else, so that `xtask` builds the same clap `Command` for man pages and
//! shell completions (it includes this file).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cryptimg_cli::source::SourceArgs;
use cryptimg_cli::{parse_size, OutputArgs};

#[derive(Parser)]
#[command(name = "mkfs-crypt", version = cryptimg_cli::VERSION, about = "Build fscrypt-encrypted filesystem images offline", after_help = EXIT_CODES)]
pub struct Cli {
    /// When another process holds the image, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

pub const EXIT_CODES: &str = "Exit codes: 0 success, 4 corrupt input (tar, image), 8 operational error (I/O, refused), 16 usage error, 64 key problem (a needed key not given).\n\
Keys are read from files (or `-` for stdin), never from the command line.";

#[derive(Subcommand)]
pub enum Cmd {
    /// Build a new image from a directory tree or a tar stream.
    Create(CreateArgs),
    /// Write a new random 64-byte master key (mode 0600) and print its identifier.
    Keygen {
        /// Where to write the key; must not exist. `-` writes the raw key to standard output
        /// (refused on a terminal) and the identifier to standard error.
        file: PathBuf,
        /// Print the identifier as JSON (on standard error with `-`).
        #[arg(long)]
        json: bool,
    },
    /// Print a key file's identifier (the one `fscryptctl add_key` prints).
    Keyid {
        /// The raw key file (32..64 bytes), or `-` for standard input.
        key_file: PathBuf,
        /// Print the identifier as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move data down into free space and cut the image file to what is in use (no key needed).
    Compact(CompactArgs),
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
pub struct SnapshotArgs {
    /// The image to change.
    pub image: PathBuf,
    /// The snapshot to copy.
    #[arg(long)]
    pub from: String,
    /// Name of the new snapshot.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args)]
pub struct RekeyArgs {
    /// The image to change.
    pub image: PathBuf,
    /// The snapshot to move to the new key.
    #[arg(long)]
    pub snapshot: String,
    /// Key file(s) the snapshot is under now (repeatable; `-` = stdin once).
    #[arg(long, required = true)]
    pub old_key_file: Vec<PathBuf>,
    /// Key file of the new key (`-` = stdin).
    #[arg(long)]
    pub new_key_file: PathBuf,
    /// Also re-encrypt every data extent under the new key, so the snapshot needs only it.
    #[arg(long)]
    pub reencrypt: bool,
    /// Continue an interrupted rekey (a plain re-run does the same: finished work is skipped).
    #[arg(long)]
    pub resume: bool,
    /// Commit --reencrypt work in batches of this size (e.g. 256M).
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    pub batch_size: u64,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The image to change.
    pub image: PathBuf,
    /// The snapshot to update.
    #[arg(long)]
    pub snapshot: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Key file(s): the snapshot's policy key, plus any key its directories are under (repeatable; `-` = stdin once).
    #[arg(long, required = true)]
    pub key_file: Vec<PathBuf>,
    /// Also delete every file and directory the source directory no longer has (not with --tar).
    #[arg(long, conflicts_with = "tar")]
    pub delete_missing: bool,
    /// Rewrite every file; by default a file whose size, mtime, mode, owner and xattrs are unchanged is kept
    /// (its data stays shared with other snapshots, under the key it has).
    #[arg(long)]
    pub rewrite_all: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args)]
pub struct CompactArgs {
    /// The image to compact.
    pub image: PathBuf,
    /// Commit moved data in batches of this size (e.g. 256M); an interrupted run keeps finished batches.
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    pub batch_size: u64,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The image to change.
    pub image: PathBuf,
    /// The snapshot to delete (not the image's last one).
    #[arg(long)]
    pub snapshot: String,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args)]
pub struct CreateArgs {
    /// The image file to create.
    pub image: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Source cryptimg image whose snapshot (--snapshot, else its only one) is exported (--format ext4).
    #[arg(long, group = "source")]
    pub from_image: Option<PathBuf>,
    /// Raw master key file (32..64 bytes), or `-` for standard input. With --from-image, repeat it
    /// for every key the snapshot uses; the snapshot's policy key encrypts the ext4 image.
    #[arg(long, required = true)]
    pub key_file: Vec<PathBuf>,
    /// Image format: `cryptimg` (default) or `ext4` (a kernel-mountable ext4 filesystem with fscrypt v2).
    #[arg(long, value_parser = ["cryptimg", "ext4"], default_value = "cryptimg")]
    pub format: String,
    /// ext4: name of the encrypted top-level directory holding the tree.
    #[arg(long, default_value = "data")]
    pub encrypted_dir: String,
    /// ext4: leave out the journal.
    #[arg(long)]
    pub no_journal: bool,
    /// Name of the first snapshot (cryptimg; default main), or the snapshot to export (--from-image).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Byte-identical output for identical input and key (implied by SOURCE_DATE_EPOCH).
    #[arg(long)]
    pub deterministic: bool,
    /// Replace an existing image.
    #[arg(long)]
    pub force: bool,
    /// Fix the image size (e.g. 512M); by default it grows as needed (ext4: computed from the source).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    #[command(flatten)]
    pub out: OutputArgs,
}
