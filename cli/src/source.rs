//! The source of a tree for `create` and `update`: a directory or a tar
//! stream (a file, or standard input), chosen in one place.

use std::path::{Path, PathBuf};

use libimage::ops::create::Source;

/// `--root DIR` or `--tar FILE` (`-` = standard input): exactly one. A
/// command may add another source to the group `source` (create's
/// `--from-image`).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "source", required = true, multiple = false)]
pub struct SourceArgs {
    /// Source directory tree.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Source tar archive (ustar, pax, GNU), or `-` for standard input.
    #[arg(long)]
    pub tar: Option<PathBuf>,
}

impl SourceArgs {
    /// True when the tar stream comes from standard input.
    pub fn tar_from_stdin(&self) -> bool {
        self.root.is_none() && self.tar.as_ref().is_some_and(|t| t.as_os_str() == "-")
    }

    /// Refuses `--tar -` together with a key file read from standard input
    /// (`-`): one stream cannot be both.
    pub fn check_stdin<'a>(&self, key_files: impl IntoIterator<Item = &'a Path>) -> anyhow::Result<()> {
        if self.tar_from_stdin() && key_files.into_iter().any(|p| p.as_os_str() == "-") {
            anyhow::bail!("--tar - and --key-file - both want standard input; give the key (or the tar stream) as a file");
        }
        Ok(())
    }

    /// Opens the source and hands it to `f`.
    pub fn with<T>(&self, f: impl FnOnce(Source<'_>) -> libimage::Result<T>) -> anyhow::Result<T> {
        Ok(match (&self.root, &self.tar) {
            (Some(d), _) => f(Source::Dir(d))?,
            (None, Some(t)) if t.as_os_str() == "-" => f(Source::Tar(&mut std::io::stdin().lock()))?,
            (None, Some(t)) => {
                let mut file = std::fs::File::open(t).map_err(|e| libimage::Error::io(format!("opening tar {}", t.display()), e))?;
                f(Source::Tar(&mut file))?
            }
            (None, None) => anyhow::bail!("give a source: --root DIR or --tar FILE"),
        })
    }
}
