//! `create --format ext4`: flags to [`libimage::ops::ext4::create_ext4`].

use cryptimg_cli::{exit, load_keys, source_date_epoch};
use libimage::ops::build::Reproducible;
use libimage::ops::ext4::{create_ext4 as build, snapshot_policy, Ext4Options, Ext4Source};

use super::CreateArgs;

pub fn create_ext4(a: CreateArgs) -> anyhow::Result<i32> {
    let keys = load_keys(&a.key_file)?;
    let epoch = source_date_epoch()?;
    let opts = Ext4Options {
        encrypted_dir: a.encrypted_dir.clone(),
        size: a.size,
        journal: !a.no_journal,
        repro: Reproducible {
            deterministic: a.deterministic || epoch.is_some(),
            clamp: epoch,
        },
        force: a.force,
    };
    let bar = a.out.bar();
    let ids = keys.ids();
    let report = if let Some(img) = &a.from_image {
        let policy = snapshot_policy(img, a.snapshot.as_deref())?;
        let key = keys.get(&policy).ok_or_else(|| libimage::Error::WrongKey {
            given: ids.clone(),
            needed: vec![policy],
        })?;
        let src = Ext4Source::Image {
            path: img,
            snapshot: a.snapshot.as_deref(),
            keys: &keys,
        };
        build(&a.image, src, key, &opts, &bar)?
    } else {
        if ids.len() != 1 {
            anyhow::bail!("--format ext4 from --root or --tar takes exactly one --key-file");
        }
        let key = keys.get(&ids[0]).ok_or_else(|| anyhow::anyhow!("key missing"))?;
        match (&a.source.root, &a.source.tar) {
            (Some(d), _) => build(&a.image, Ext4Source::Dir(d), key, &opts, &bar)?,
            (None, Some(t)) if t.as_os_str() == "-" => {
                build(&a.image, Ext4Source::TarStream(&mut std::io::stdin().lock()), key, &opts, &bar)?
            }
            (None, Some(t)) => build(&a.image, Ext4Source::TarFile(t), key, &opts, &bar)?,
            (None, None) => anyhow::bail!("one of --root, --tar or --from-image is required"),
        }
    };
    if a.out.json {
        cryptimg_cli::json::print("mkfs-crypt", "create", &report)?;
    } else if !a.out.quiet {
        println!(
            "created {} (ext4, encrypted directory /{})",
            report.image.display(),
            report.encrypted_dir
        );
        println!("  key id      {}", report.key_id);
        println!(
            "  files       {} regular, {} dirs, {} symlinks, {} hard links, {} special",
            report.files, report.dirs, report.symlinks, report.hardlinks, report.specials
        );
        println!("  bytes       {}", report.bytes);
        println!(
            "  image size  {} bytes ({} of {} blocks, {} of {} inodes used)",
            report.image_bytes, report.blocks_used, report.blocks, report.inodes_used, report.inodes
        );
    }
    Ok(exit::OK)
}
