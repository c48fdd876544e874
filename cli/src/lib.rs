//! Plumbing shared by the cryptimg binaries: exit codes, error printing,
//! key loading and progress bars. The binaries stay thin: flags and output.

use std::io::IsTerminal;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

/// The tools decode metadata into hundreds of thousands of small allocations
/// (one per name, per file map); with glibc's malloc that dominated
/// `fsck-crypt check` of a 100k-file image (min 73 ms, median 80 ms), with
/// mimalloc it takes min 44 ms, median 51 ms (`e2fsck -fn`: 60 ms; BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use libimage::engine::image::Keyring;
use libimage::progress::Progress;

/// Exit codes shared by all tools (fsck's bitmask, util-linux `exitcodes.h`).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// fsck: errors were found and fixed.
    pub const FIXED: i32 = 1;
    /// Corrupt input (image, tar or backup bytes); fsck: errors left uncorrected.
    pub const CORRUPT: i32 = 4;
    /// Operational error: I/O, wrong key, refused request, no space.
    pub const OPERATIONAL: i32 = 8;
    /// Usage error: bad flags or arguments.
    pub const USAGE: i32 = 16;
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<libimage::Error>() {
        Some(le) if le.is_corruption() => exit::CORRUPT,
        _ => exit::OPERATIONAL,
    }
}

/// Prints an error with its hint on stderr.
pub fn report_error(tool: &str, e: &anyhow::Error) {
    eprintln!("{tool}: error: {e:#}");
    if let Some(le) = e.downcast_ref::<libimage::Error>() {
        eprintln!("{tool}: hint: {}", le.hint());
    }
}

/// Parses arguments, mapping clap's usage errors to exit code 16 (help and
/// version still exit 0).
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(t) => t,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Runs a tool's body and exits with its code, printing any error.
pub fn main_with(tool: &str, body: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    let code = match body() {
        Ok(c) => c,
        Err(e) => {
            report_error(tool, &e);
            exit_code(&e)
        }
    };
    std::process::exit(code)
}

/// Loads every `--key-file` (`-` = stdin, at most once).
pub fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Keyring> {
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        anyhow::bail!("standard input (-) can supply only one key file");
    }
    let keys = paths
        .iter()
        .map(|p| libimage::engine::keyfile::load_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Keyring::new(keys))
}

/// Output flags shared by the commands that do long work.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// No progress and no summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl OutputArgs {
    /// The progress bar these flags ask for.
    pub fn bar(&self) -> Bar {
        Bar::new(self.quiet || self.no_progress)
    }
}

/// A progress bar on stderr when it is a terminal and not silenced.
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(quiet: bool) -> Self {
        let show = !quiet && std::io::stderr().is_terminal();
        Bar {
            bar: show.then(ProgressBar::new_spinner),
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total_bytes: Option<u64>) {
        if let Some(b) = &self.bar {
            b.set_position(0);
            b.set_prefix("0");
            b.set_message(phase.to_string());
            if let Some(t) = total_bytes {
                b.set_length(t);
                b.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            } else {
                b.set_style(
                    ProgressStyle::with_template("{spinner} {msg}: {bytes} {bytes_per_sec} {prefix} files")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
    }
    fn advance(&self, files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
            if files > 0 {
                let n: u64 = b.prefix().parse().unwrap_or(0) + files;
                b.set_prefix(n.to_string());
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Parses a size like `64M`, `2G`, `4096` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("invalid size {s:?}"))
}
