//! The ext4 side of fsck-crypt (format detected by the ext4 magic): output
//! only; the work is in `libimage::ops::ext4`.

use std::io::Write;
use std::path::{Path, PathBuf};

use cryptimg_cli::{exit, load_keys};
use libimage::ops::ext4::{self, check::Ext4CheckOptions};

pub fn is_ext4(image: &Path) -> bool {
    ext4::reader::is_ext4(image)
}

pub fn info(image: &Path, json: bool) -> anyhow::Result<i32> {
    let r = ext4::check::check(
        image,
        &libimage::engine::image::Keyring::new(Vec::new()),
        Ext4CheckOptions::default(),
    )?;
    let sb = ext4::reader::open(image)?.superblock().clone();
    if json {
        let v = serde_json::json!({
            "format": "ext4",
            "blocks": sb.blocks_count,
            "inodes": sb.inodes_count,
            "encrypted_directories": r.policy_roots,
            "keys": r.keys,
        });
        cryptimg_cli::json::print("fsck-crypt", "info", &v)?;
        return Ok(exit::OK);
    }
    println!("image        {}", image.display());
    println!(
        "format       ext4, block size 4096, {} blocks, {} inodes",
        sb.blocks_count, sb.inodes_count
    );
    println!("encrypted directories (policy roots):");
    for p in &r.policy_roots {
        println!("  {}  (inode {}) key {}", p.path, p.inode, p.key_id);
    }
    for k in &r.keys {
        println!(
            "key {} protects {} directories, {} files, {} symlinks",
            k.key_id, k.directories, k.files, k.symlinks
        );
    }
    Ok(exit::OK)
}

pub fn ls(image: &Path, path: Option<String>, key_file: &[PathBuf], style: cryptimg_cli::quote::QuotingStyle) -> anyhow::Result<i32> {
    let keys = load_keys(key_file)?;
    let fs = ext4::reader::open(image)?;
    let mut out = std::io::stdout().lock();
    for e in ext4::list::ls(&fs, path.as_deref().unwrap_or(""), &keys)? {
        write!(out, "{:06o} {:>5} {:>5} {:>12} ", e.mode, e.uid, e.gid, e.size)?;
        out.write_all(&style.quote(&e.name))?;
        writeln!(out)?;
    }
    Ok(exit::OK)
}

pub fn check(image: &Path, key_file: &[PathBuf], data: bool, json: bool, repair: bool) -> anyhow::Result<i32> {
    if repair {
        eprintln!("fsck-crypt: --repair does not apply to ext4: structural repair is e2fsck's job (e2fsck -f)");
        return Ok(exit::USAGE);
    }
    let keys = load_keys(key_file)?;
    let r = ext4::check::check(image, &keys, Ext4CheckOptions { data })?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", cryptimg_cli::json::to_string("fsck-crypt", "check", &r)?)?;
        return Ok(r.exit_code);
    }
    for f in &r.findings {
        writeln!(out, "{f}")?;
    }
    for k in &r.keys {
        writeln!(
            out,
            "key {} {}: {} directories, {} files, {} symlinks",
            k.key_id,
            if k.given { "(given)" } else { "(not given)" },
            k.directories,
            k.files,
            k.symlinks
        )?;
    }
    writeln!(
        out,
        "checked {} inodes, read {} bytes ({} of data)",
        r.inodes, r.bytes_read, r.data_bytes
    )?;
    if r.errors + r.warnings == 0 {
        writeln!(
            out,
            "{}: clean (fscrypt invariants; run e2fsck -fn for the ext4 structure)",
            image.display()
        )?;
    } else {
        writeln!(
            out,
            "{}: {} errors, {} warnings, {} notes (exit {})",
            image.display(),
            r.errors,
            r.warnings,
            r.infos,
            r.exit_code
        )?;
    }
    Ok(r.exit_code)
}

pub fn extract(image: &Path, dest: &Path, key_file: &[PathBuf]) -> anyhow::Result<i32> {
    let keys = load_keys(key_file)?;
    let fs = ext4::reader::open(image)?;
    let as_root = libimage::tree::write::running_as_root();
    let st = ext4::extract::extract(&fs, &keys, dest, as_root)?;
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
