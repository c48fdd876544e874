//! Missing tools and facilities: skip with one line, or fail under CI; and
//! the workspace binaries, found next to the running test.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether this is a CI run (`CI=true` or `CI=1`): there, every tool and
/// facility a test needs must exist, and a missing one fails the test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The running test's name: libtest names each test's thread after it.
/// Outside a named thread (e.g. `--test-threads=1` runs tests on `main`),
/// "unnamed test".
pub fn current_test() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => "unnamed test".to_string(),
    }
}

/// Reports that `test` cannot run because of `reason`: prints one
/// `SKIP: <test>: <reason>` line to the process's stderr (not captured by
/// libtest, so it shows in every run), or, under [`in_ci`], panics.
///
/// # Panics
/// Under `CI=true`, always.
pub fn skip_or_fail(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: {reason}; CI=true, so this test must run here: install what it needs (see .ci/run)");
    }
    // Written to the stderr handle directly: libtest captures only the
    // print!/eprint! macros, and a skip must be visible.
    let _ = writeln!(std::io::stderr().lock(), "SKIP: {test}: {reason}");
}

/// The full path of the executable `name` on `PATH`, also looking in
/// /usr/sbin and /sbin (e2fsprogs lives there, often off a user's `PATH`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the tool `name` exists; if not, [`skip_or_fail`] for the
/// current test and return false. Use as
/// `if !testkit::require_tool("bsdtar") { return; }`.
///
/// # Panics
/// Under `CI=true` when the tool is missing.
pub fn require_tool(name: &str) -> bool {
    if find_tool(name).is_some() {
        return true;
    }
    skip_or_fail(&current_test(), &format!("`{name}` is not installed"));
    false
}

/// The workspace binary `name` (e.g. `fsck-crypt`), in the target directory
/// of the running test executable (`target/<profile>/deps/<test>` →
/// `target/<profile>/<name>`), without invoking cargo. For the binary of the
/// test's own package, prefer `env!("CARGO_BIN_EXE_<name>")`.
///
/// `cargo test --workspace` builds every binary of every package with
/// integration tests before it runs any test; after `cargo test -p X`, build
/// the other binaries first (`cargo build --workspace --bins`).
///
/// # Panics
/// If the binary is not there, with the command that builds it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test executable");
    // deps/ -> <profile>/
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        is_executable(&bin),
        "workspace binary {} is not built: run `cargo build -p {name}` (or `cargo test --workspace`, which builds it) first",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_that_exists_and_not_one_that_does_not() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("no-such-tool-cryptimg-x").is_none());
    }

    #[test]
    fn current_test_is_the_test_name() {
        let name = current_test();
        assert!(name == "unnamed test" || name.ends_with("current_test_is_the_test_name"), "{name}");
    }
}
