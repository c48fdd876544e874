//! `cargo run -p xtask -- dist OUTDIR`: man pages (`man1/*.1`, one per tool
//! and per subcommand, with `clap_mangen`) and bash, zsh and fish completions
//! (`completions/`, with `clap_complete`) for the three tools, generated from
//! the very clap definitions the binaries use (their `src/args.rs`).

use std::path::Path;

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;

#[allow(dead_code)]
#[path = "../../mkfs-crypt/src/args.rs"]
mod mkfs_args;

#[allow(dead_code)]
#[path = "../../fsck-crypt/src/args.rs"]
mod fsck_args;

#[allow(dead_code)]
#[path = "../../backup-crypt/src/args.rs"]
mod backup_args;

/// The three tools' clap commands.
fn commands() -> Vec<Command> {
    vec![mkfs_args::Cli::command(), fsck_args::Cli::command(), backup_args::Cli::command()]
}

/// Writes a man page for `cmd` and, recursively, one per subcommand
/// (`mkfs-crypt-create.1`, as git does).
fn man_pages(cmd: &Command, name: &str, dir: &Path, written: &mut Vec<String>) -> anyhow::Result<()> {
    // clap names are `&'static str` (no `string` feature); this short-lived
    // generator leaks the few page names.
    let cmd = cmd.clone().name(&*Box::leak(name.to_string().into_boxed_str()));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, buf).with_context(|| format!("writing {}", file.display()))?;
    written.push(file.display().to_string());
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            man_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
        }
    }
    Ok(())
}

/// Generates everything under `out`; returns the files written.
fn dist(out: &Path) -> anyhow::Result<Vec<String>> {
    let man = out.join("man1");
    let comp = out.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut written = Vec::new();
    for mut cmd in commands() {
        cmd.build();
        let name = cmd.get_name().to_string();
        man_pages(&cmd, &name, &man, &mut written)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let path = clap_complete::generate_to(shell, &mut cmd, &name, &comp)
                .with_context(|| format!("writing {shell} completions of {name}"))?;
            written.push(path.display().to_string());
        }
    }
    Ok(written)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, out] if cmd == "dist" => {
            for f in dist(Path::new(out))? {
                println!("{f}");
            }
            Ok(())
        }
        _ => anyhow::bail!("usage: cargo run -p xtask -- dist OUTDIR"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generation works: a man page per tool and subcommand that documents
    /// the flags, and the three shells' completion scripts per tool.
    #[test]
    fn dist_writes_man_pages_and_completions() {
        let t = tempfile::tempdir().unwrap();
        let files = dist(t.path()).unwrap();
        for tool in ["mkfs-crypt", "fsck-crypt", "backup-crypt"] {
            let page = std::fs::read_to_string(t.path().join(format!("man1/{tool}.1"))).unwrap();
            assert!(page.contains(".TH"), "{tool}.1 is not a man page");
            for f in [format!("{tool}.bash"), format!("_{tool}"), format!("{tool}.fish")] {
                let text = std::fs::read_to_string(t.path().join("completions").join(&f)).unwrap();
                assert!(text.contains(tool), "{f}");
            }
        }
        let create = std::fs::read_to_string(t.path().join("man1/mkfs-crypt-create.1")).unwrap();
        assert!(create.contains("key\\-file") && create.contains("deterministic"), "{create}");
        let verify = std::fs::read_to_string(t.path().join("man1/backup-crypt-verify.1")).unwrap();
        assert!(verify.contains("base"), "{verify}");
        assert!(files.len() >= 3 * 3 + 3 + 8 + 5 + 4, "{files:#?}");
    }
}
