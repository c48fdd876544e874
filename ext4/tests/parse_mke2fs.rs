//! The structures read what mke2fs writes: an image made by `mkfs.ext4 -O
//! encrypt` parses, with every checksum verified.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use ext4fs::csum::{fs_seed, inode_seed};
use ext4fs::extent::{parse_node, Node};
use ext4fs::group_desc::GroupDesc;
use ext4fs::inode::{Inode, S_IFDIR};
use ext4fs::superblock::*;
use ext4fs::{dir, journal};

fn read(f: &File, off: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

#[test]
fn parses_a_mke2fs_image() {
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "mkfs.ext4 missing under CI=true");
        eprintln!("SKIP: parses_a_mke2fs_image: mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.img");
    File::create(&img).unwrap().set_len(256 << 20).unwrap();
    let st = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-O",
            "encrypt",
            "-U",
            "11111111-2222-3333-4444-555555555555",
        ])
        .arg(&img)
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf")
        .status()
        .unwrap();
    assert!(st.success());
    let f = File::open(&img).unwrap();
    let sb = Superblock::from_bytes(&read(&f, 1024, 1024)).unwrap();
    assert_eq!(sb.blocks_count, 65536);
    assert_eq!(sb.uuid[0], 0x11);
    assert_ne!(sb.feature_incompat & INCOMPAT_ENCRYPT, 0);
    assert_ne!(sb.feature_incompat & INCOMPAT_64BIT, 0);
    assert!(sb.has_metadata_csum());
    assert_eq!(sb.inode_size, 256);
    assert_eq!(sb.desc_size, 64);
    assert_eq!(sb.journal_inum, 8);
    let seed = fs_seed(&sb.uuid);
    let groups = sb.group_count();
    let gdt = read(&f, 4096, groups as usize * 64);
    let gds: Vec<GroupDesc> = (0..groups as usize)
        .map(|g| GroupDesc::from_bytes(&gdt[g * 64..], seed, g as u32).unwrap())
        .collect();
    // Group 0's inode bitmap checksum matches.
    let ibm = read(&f, gds[0].inode_bitmap * 4096, 4096);
    assert_eq!(
        ext4fs::bitmap::csum(seed, &ibm, sb.inodes_per_group as usize / 8),
        gds[0].inode_bitmap_csum
    );
    let inode = |ino: u32| {
        let g = (ino - 1) / sb.inodes_per_group;
        let i = (ino - 1) % sb.inodes_per_group;
        let raw = read(&f, gds[g as usize].inode_table * 4096 + u64::from(i) * 256, 256);
        Inode::from_bytes(&raw, ino, seed, 256).unwrap()
    };
    let root = inode(2);
    assert_eq!(root.mode & 0o170000, S_IFDIR);
    let Node::Leaf(ex) = parse_node(&root.block).unwrap() else {
        panic!("root not a leaf")
    };
    let blk = read(&f, ex[0].pblk * 4096, 4096);
    let names: Vec<Vec<u8>> = dir::parse_block(&blk, Some(inode_seed(seed, 2, root.generation)))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b".".to_vec(), b"..".to_vec(), b"lost+found".to_vec()]);
    let j = inode(8);
    let Node::Leaf(jex) = parse_node(&j.block).unwrap() else {
        panic!("journal not a leaf")
    };
    let jsb = journal::JournalSuperblock::from_bytes(&read(&f, jex[0].pblk * 4096, 1024)).unwrap();
    assert_eq!(jsb.maxlen as u64 * 4096, j.size);
    assert_eq!(jsb, journal::JournalSuperblock::new_clean(jsb.maxlen, sb.uuid));
    assert_eq!(journal::default_blocks(sb.blocks_count), jsb.maxlen);
}
