//! Every parser takes hostile bytes without panicking: random buffers, and
//! valid structures with random bytes flipped (so deeper code runs).

use ext4fs::dir::{self, DirEntry};
use ext4fs::extent::{self, Extent};
use ext4fs::group_desc::GroupDesc;
use ext4fs::inode::Inode;
use ext4fs::journal::JournalSuperblock;
use ext4fs::superblock::Superblock;
use ext4fs::{htree, xattr};
use testkit::TestRng;

fn parse_all(b: &[u8]) {
    let _ = Superblock::from_bytes(b);
    let _ = GroupDesc::from_bytes(b, 1, 0);
    let _ = Inode::from_bytes(b, 12, 1, 256);
    let _ = extent::parse_node(b);
    let _ = extent::parse_node(&b[..b.len().min(60)]);
    let _ = extent::verify_tail(b, 1);
    let _ = dir::parse_block(b, Some(1));
    let _ = dir::parse_block(b, None);
    let _ = htree::parse_index(b, true, Some(1));
    let _ = htree::parse_index(b, false, None);
    let _ = xattr::parse_ibody(&b[..b.len().min(96)]);
    let _ = xattr::parse_block(b, 5, 1);
    let _ = JournalSuperblock::from_bytes(b);
}

fn valid_blocks() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let entries: Vec<DirEntry> = (0..300u32)
        .map(|i| DirEntry {
            inode: i + 12,
            file_type: 1,
            name: format!("entry-{i}").into_bytes(),
        })
        .collect();
    v.extend(dir::build_blocks(&entries, 1));
    v.extend(htree::build(&entries, 12, 2, 1, &[3; 16], false, 1).unwrap().blocks);
    let ex: Vec<Extent> = (0..400u32)
        .map(|i| Extent {
            lblk: i * 2,
            len: 1,
            pblk: u64::from(i) + 9,
        })
        .collect();
    let mut n = 100u64;
    let t = extent::build_tree(&ex, 1, &mut || {
        n += 1;
        Ok(n)
    })
    .unwrap();
    v.extend(t.blocks.into_iter().map(|(_, b)| b));
    let x = vec![xattr::Xattr {
        index: 1,
        name: b"n".to_vec(),
        value: vec![1; 100],
    }];
    v.push(xattr::build_block(&x, 5, 1).unwrap());
    let mut jsb = JournalSuperblock::new_clean(1024, [1; 16]).to_bytes().to_vec();
    jsb.resize(4096, 0);
    v.push(jsb);
    v
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = TestRng::new(0xe474);
    for _ in 0..3000 {
        let len = (rng.next_u64() % 4200) as usize;
        let b = rng.bytes(len.max(1));
        parse_all(&b);
        let mut full = rng.bytes(4096);
        full[0x38] = 0x53;
        full[0x39] = 0xEF; // superblock magic
        parse_all(&full);
    }
    for base in valid_blocks() {
        parse_all(&base);
        for _ in 0..400 {
            let mut b = base.clone();
            for _ in 0..1 + rng.next_u64() % 8 {
                let i = (rng.next_u64() as usize) % b.len();
                b[i] = rng.next_u64() as u8;
            }
            parse_all(&b);
        }
    }
}
