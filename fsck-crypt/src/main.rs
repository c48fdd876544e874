//! fsck-crypt: inspect, list, extract and check cryptimg images.
//! Flags and output only; the work is done in libimage.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cryptimg_cli::{exit, load_keys, main_with, parse_args, Bar};
use libimage::image::{Access, Image};
use libimage::read::TreeReader;

const EXIT_CODES: &str =
    "Exit codes (fsck bitmask): 0 clean, 1 errors fixed, 4 errors left uncorrected / corrupt image, 8 operational error, 16 usage error.\n\
Keys are read from files (or `-` for stdin), never from the command line.";

#[derive(Parser)]
#[command(name = "fsck-crypt", version, about = "Check, inspect and extract cryptimg images", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Superblock, snapshots, and the key ids each snapshot needs (no key required).
    Info {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List a directory: no-key names without a key, real names with one.
    Ls {
        image: PathBuf,
        /// Directory or file inside the snapshot (real names with a key, no-key names without).
        path: Option<String>,
        #[arg(long)]
        snapshot: Option<String>,
        /// Key file(s) (repeatable; `-` = stdin once).
        #[arg(long)]
        key_file: Vec<PathBuf>,
    },
    /// Write a snapshot's tree back to DEST with all metadata (ownership and devices only as root).
    Extract {
        image: PathBuf,
        dest: PathBuf,
        #[arg(long)]
        snapshot: Option<String>,
        #[arg(long, required = true)]
        key_file: Vec<PathBuf>,
        #[arg(long)]
        no_progress: bool,
    },
}

fn info(image: PathBuf, json: bool) -> anyhow::Result<i32> {
    let img = Image::open(&image, Access::ReadOnly)?;
    let i = libimage::create::info(&img);
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(exit::OK);
    }
    println!("image        {}", image.display());
    println!("format       v{}, block size {}", i.format_version, i.block_size);
    println!("uuid         {}", i.uuid);
    println!("generation   {}", i.generation);
    println!(
        "blocks       {} total, {} free{}",
        i.total_blocks,
        i.free_blocks,
        if i.max_blocks == 0 {
            " (grows as needed)".to_string()
        } else {
            format!(" (fixed at {})", i.max_blocks)
        }
    );
    println!("extents      {}", i.extents);
    for s in &i.snapshots {
        println!("snapshot {:?}: {} inodes, policy key {}", s.name, s.inodes, s.policy);
        println!("  needs keys {}", s.keys_needed.join(", "));
        for (k, n) in &s.extents_by_key {
            println!("  {n} extents under {k}");
        }
    }
    Ok(exit::OK)
}

fn ls(image: PathBuf, path: Option<String>, snapshot: Option<String>, key_file: Vec<PathBuf>) -> anyhow::Result<i32> {
    let keys = load_keys(&key_file)?;
    let img = Image::open(&image, Access::ReadOnly)?;
    let snap = img.snapshot(snapshot.as_deref())?;
    let r = TreeReader::new(&img, snap, &keys);
    let ino = r.lookup(path.as_deref().unwrap_or("").as_bytes())?;
    let mut out = std::io::stdout().lock();
    let target = r.inode(ino)?;
    let entries: Vec<(Vec<u8>, &libimage::inode::Inode)> = if target.is_dir() {
        r.list(ino)?.into_iter().map(|l| (l.name, l.inode)).collect()
    } else {
        let name = path.as_deref().unwrap_or("").rsplit('/').find(|c| !c.is_empty()).unwrap_or("");
        vec![(name.as_bytes().to_vec(), target)]
    };
    for (name, i) in entries {
        write!(out, "{:06o} {:>5} {:>5} {:>12} ", i.mode, i.uid, i.gid, i.size)?;
        out.write_all(&name)?;
        writeln!(out)?;
    }
    Ok(exit::OK)
}

fn main() {
    let cli: Cli = parse_args();
    main_with("fsck-crypt", || match cli.cmd {
        Cmd::Info { image, json } => info(image, json),
        Cmd::Ls {
            image,
            path,
            snapshot,
            key_file,
        } => ls(image, path, snapshot, key_file),
        Cmd::Extract {
            image,
            dest,
            snapshot,
            key_file,
            no_progress,
        } => {
            let keys = load_keys(&key_file)?;
            let img = Image::open(&image, Access::ReadOnly)?;
            let as_root = libimage::fsout::running_as_root();
            let st = libimage::read::extract(&img, snapshot.as_deref(), &keys, &dest, as_root, &Bar::new(no_progress))?;
            eprintln!(
                "extracted {} files, {} dirs, {} symlinks, {} special ({} skipped) to {}",
                st.files,
                st.dirs,
                st.symlinks,
                st.specials,
                st.skipped,
                dest.display()
            );
            Ok(exit::OK)
        }
    })
}
