//! Plumbing shared by the cryptimg binaries: exit codes, error printing,
//! key loading and progress bars. The binaries stay thin: flags and output.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use libimage::engine::image::Keyring;
use libimage::progress::Progress;

pub mod human;
pub mod json;
pub mod quote;
pub mod source;

/// The exit-code table every tool uses (`libimage::exit`, README "Exit codes").
pub use libimage::exit;

/// Exit status when standard output was closed under us (a reader such as
/// `head` finished): 128 + SIGPIPE, what a shell reports for coreutils there.
pub const EXIT_BROKEN_PIPE: i32 = 128 + 13;

/// True when `e` is a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A bad argument value found after parsing (e.g. an out-of-range
/// `--size`): exit [`exit::USAGE`], like the values clap itself rejects.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error as an `anyhow::Error`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// Warns on stderr, naming the ids `what` needs, about every given key that
/// `what` (a snapshot, an archive) does not use: a wrong `--key-file`
/// otherwise just shows no-key names. Returns the number of such keys.
pub fn warn_unneeded_keys(tool: &str, what: &str, keys: &Keyring, needed: &[String]) -> usize {
    let mut n = 0;
    for id in keys.ids() {
        let id = id.to_string();
        if !needed.contains(&id) {
            eprintln!(
                "{tool}: warning: key {id} is not a key of {what}, which needs key id(s) [{}]; names it cannot decrypt are shown in no-key form",
                needed.join(", ")
            );
            n += 1;
        }
    }
    n
}

/// Refuses to write binary `what` (an archive, a raw key) to standard
/// output when it is a terminal: the bytes would garble it and be lost.
/// `redirect` says how to redirect instead.
pub fn refuse_terminal_stdout(what: &str, redirect: &str) -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        anyhow::bail!("refusing to write {what} to a terminal; redirect standard output ({redirect})");
    }
    Ok(())
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Usage>().is_some() {
        return exit::USAGE;
    }
    match (e.downcast_ref::<libimage::Error>(), e.downcast_ref::<FlagHint>()) {
        (Some(le), _) | (None, Some(FlagHint { error: le, .. })) => exit::for_error(le),
        _ => exit::OPERATIONAL,
    }
}

/// A library error with a hint naming the command-line flag that addresses
/// it: libimage's messages name no flags, the binaries add them.
#[derive(Debug)]
pub struct FlagHint {
    pub error: libimage::Error,
    pub hint: &'static str,
}

impl std::fmt::Display for FlagHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for FlagHint {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Adds `hint` (naming this command's flags) to a refused request
/// ([`libimage::Error::Invalid`]); other errors pass unchanged.
pub fn flag_hint(e: libimage::Error, hint: &'static str) -> anyhow::Error {
    match e {
        libimage::Error::Invalid(_) => anyhow::Error::new(FlagHint { error: e, hint }),
        other => anyhow::Error::new(other),
    }
}

/// The error and its causes on one line, `: `-separated, each cause once:
/// an error whose text already ends with its source's text (libimage's
/// `Io` prints "context: source") does not repeat it.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The hint for damage found while reading a backup archive.
pub const ARCHIVE_DAMAGED: &str =
    "the archive is damaged or was not written by cryptimg: `backup-crypt verify ARCHIVE` reports where; use another copy";

/// For a command that reads an archive (`list`, `verify`, `restore`):
/// corruption found outside an image (the tar and pax layer, the members) is
/// the archive's, and gets [`ARCHIVE_DAMAGED`] instead of an image hint;
/// `Invalid` gets `flag` (as [`flag_hint`]); other errors pass unchanged.
pub fn archive_error(e: libimage::Error, flag: &'static str) -> anyhow::Error {
    match &e {
        libimage::Error::Corrupt { at, .. } if !(at.what.starts_with("image") || at.what.starts_with("superblock")) => {
            anyhow::Error::new(FlagHint {
                error: e,
                hint: ARCHIVE_DAMAGED,
            })
        }
        _ => flag_hint(e, flag),
    }
}

/// Prints an error with its hint on stderr.
pub fn report_error(tool: &str, e: &anyhow::Error) {
    eprintln!("{tool}: error: {}", message(e));
    if let Some(h) = e.downcast_ref::<FlagHint>() {
        eprintln!("{tool}: hint: {}", h.hint);
    }
    if let Some(le) = e.downcast_ref::<libimage::Error>() {
        eprintln!("{tool}: hint: {}", le.hint());
        if matches!(le, libimage::Error::Corrupt { at, .. } if at.what.contains("metadata") && !at.is_archive()) {
            eprintln!(
                "{tool}: hint: if only the newest commit is damaged, `fsck-crypt check --repair IMAGE` rolls back to the \
                 previous generation (losing that commit)"
            );
        }
    }
}

/// The version line of every tool: the package version and the git
/// revision it was built from (`unknown` outside git), set by this crate's
/// build.rs.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("CRYPTIMG_GIT_REV"), ")");

/// For each binary's test: clap's own consistency checks pass, and every
/// argument and flag of every subcommand has a help line (`--help`, man pages).
///
/// # Panics
/// Naming the arguments without help.
pub fn assert_help_complete(cmd: clap::Command) {
    cmd.clone().debug_assert();
    let missing = args_without_help(&cmd);
    assert!(missing.is_empty(), "arguments without help: {missing:#?}");
}

/// Every argument and flag of `cmd` and its subcommands that has no help
/// line, as `command path: --flag`.
pub fn args_without_help(cmd: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    walk_help(cmd, cmd.get_name().to_string(), &mut out);
    out
}

fn walk_help(cmd: &clap::Command, path: String, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let builtin = matches!(a.get_id().as_str(), "help" | "version");
        if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
            out.push(format!("{path}: {}", a.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            walk_help(sub, format!("{path} {}", sub.get_name()), out);
        }
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

/// Process set-up every tool does first, before any other thread starts:
/// no core dumps (the process may hold keys), temporary files removed on
/// SIGINT/SIGTERM/SIGHUP, and a closed standard output ends the process
/// quietly by SIGPIPE, as it does coreutils.
pub fn init_process() {
    if let Err(e) = libimage::engine::process::set_not_dumpable() {
        eprintln!("warning: could not disable core dumps: {e}");
    }
    if let Err(e) = libimage::engine::process::remove_temp_files_on_signals() {
        eprintln!("warning: could not watch for interrupts: {e}");
    }
    libimage::engine::process::default_sigpipe();
}

/// Runs a tool's body and exits with its code, printing any error. A write
/// to a closed standard output is not an error worth a message: it exits
/// with [`EXIT_BROKEN_PIPE`] silently.
pub fn main_with(tool: &str, body: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    let code = match body() {
        Ok(c) => c,
        Err(e) if is_broken_pipe(&e) => EXIT_BROKEN_PIPE,
        Err(e) => {
            report_error(tool, &e);
            exit_code(&e)
        }
    };
    std::process::exit(code)
}

/// Parses `SOURCE_DATE_EPOCH` (reproducible builds), `None` when unset.
pub fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not an integer")),
        Err(_) => Ok(None),
    }
}

/// Commit and creation time: `SOURCE_DATE_EPOCH` when set, else now.
pub fn commit_time() -> anyhow::Result<i64> {
    Ok(match source_date_epoch()? {
        Some(t) => t,
        None => libimage::ops::create::now(libimage::ops::build::Reproducible::default()),
    })
}

/// Loads every `--key-file` (`-` = stdin, at most once).
pub fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Keyring> {
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        anyhow::bail!("standard input (-) can supply only one key file");
    }
    let keys = paths.iter().map(|p| load_key(p)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Keyring::new(keys))
}

/// Loads one key file (`-` = stdin), warning on stderr when the file is
/// readable or writable by group or others, as ssh does for a private key.
pub fn load_key(path: &Path) -> anyhow::Result<fscrypt::MasterKey> {
    if path.as_os_str() != "-" {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            let mode = md.permissions().mode();
            if md.is_file() && mode & 0o077 != 0 {
                eprintln!(
                    "warning: key file {} is accessible by others (mode {:04o}); it should be readable by its owner only (chmod 600)",
                    path.display(),
                    mode & 0o7777
                );
            }
        }
    }
    Ok(libimage::engine::keyfile::load_key(path)?)
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

/// A progress display on stderr when it is a terminal and not silenced: a
/// bar with bytes, percent, rate and ETA when the phase's total is known, a
/// spinner with bytes, rate and files otherwise, and a spinner with the time
/// waited for [`libimage::progress::SYNC`]. Each phase gets a fresh bar.
pub struct Bar {
    show: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
    files: std::sync::atomic::AtomicU64,
}

impl Bar {
    pub fn new(quiet: bool) -> Self {
        Bar {
            show: !quiet && std::io::stderr().is_terminal(),
            bar: std::sync::Mutex::new(None),
            files: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The indicatif template for a phase: a bar when `total` is known.
pub fn bar_template(phase: &str, total: Option<u64>) -> &'static str {
    match total {
        _ if phase == libimage::progress::SYNC => "{spinner} {msg}… {elapsed}",
        Some(_) => "{msg} [{bar:30}] {bytes}/{total_bytes} {percent}% {bytes_per_sec} eta {eta}",
        None => "{spinner} {msg}: {bytes} {bytes_per_sec} {prefix} files",
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total_bytes: Option<u64>) {
        if !self.show {
            return;
        }
        let b = match total_bytes {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let style = ProgressStyle::with_template(bar_template(phase, total_bytes)).unwrap_or_else(|_| {
            if total_bytes.is_some() {
                ProgressStyle::default_bar()
            } else {
                ProgressStyle::default_spinner()
            }
        });
        let b = b
            .with_prefix("0")
            .with_message(phase.to_string())
            .with_style(style.progress_chars("=> "));
        // A spinner moves while nothing advances (a long fsync).
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        self.files.store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(old) = self.current().replace(b) {
            old.finish_and_clear();
        }
    }
    fn advance(&self, files: u64, bytes: u64) {
        if !self.show {
            // Called per file and per data piece: not even the lock.
            return;
        }
        if let Some(b) = &*self.current() {
            b.inc(bytes);
            if files > 0 {
                let n = self.files.fetch_add(files, std::sync::atomic::Ordering::Relaxed) + files;
                b.set_prefix(n.to_string());
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = self.current().take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Parses a size: `4096`, `64M`, `512MiB`, `1.5G`, `1GiB` (units are binary:
/// K = KiB = 1024; case-insensitive; the `B` is optional), with the
/// maintained `parse-size` crate. The one size parser of every tool.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("invalid size {s:?}: {e} (e.g. 4096, 512M, 1.5G, 1GiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_hints_keep_the_exit_code_and_pipes_are_quiet() {
        let e = flag_hint(libimage::Error::Invalid("refused".into()), "use --flag");
        assert_eq!(exit_code(&e), exit::OPERATIONAL);
        assert_eq!(e.downcast_ref::<FlagHint>().map(|h| h.hint), Some("use --flag"));
        let c = flag_hint(
            libimage::Error::corrupt(libimage::error::CorruptKind::BadMagic, "superblock", Some(0)),
            "unused",
        );
        assert_eq!(exit_code(&c), exit::CORRUPT);
        assert!(c.downcast_ref::<FlagHint>().is_none());
        let p = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&p));
        assert!(!is_broken_pipe(&e));
    }

    #[test]
    fn an_io_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(libimage::Error::io("opening /x", io));
        let m = message(&e);
        assert_eq!(m.matches("not found").count(), 1, "{m}");
        assert!(m.starts_with("opening /x: "), "{m}");
        let c = anyhow::anyhow!("inner").context("outer");
        assert_eq!(message(&c), "outer: inner");
    }

    #[test]
    fn bar_templates_show_totals_and_name_the_sync() {
        let t = bar_template("extract", Some(10));
        for part in ["{bar", "{bytes}/{total_bytes}", "{percent}%", "{bytes_per_sec}", "{eta}"] {
            assert!(t.contains(part), "{t}");
        }
        assert!(!bar_template("extract", None).contains("{bar"));
        assert!(bar_template(libimage::progress::SYNC, None).contains("{elapsed}"));
        for (phase, total) in [("extract", Some(10)), ("extract", None), (libimage::progress::SYNC, None)] {
            assert!(ProgressStyle::with_template(bar_template(phase, total)).is_ok());
        }
        // Hidden (stderr is no terminal in tests), but the calls work.
        let b = Bar::new(false);
        b.start("x", Some(3));
        b.advance(1, 3);
        b.finish();
    }

    #[test]
    fn sizes_take_binary_units_fractions_and_iec_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }
}
