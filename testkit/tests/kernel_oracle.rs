//! Issue 9, test 6 (one direction): what the kernel's ext4 encrypts decrypts
//! with the `fscrypt` crate. The kernel makes the files; the ciphertext is
//! then read back from the image bytes (debugfs only says where inodes and
//! blocks are) and decrypted here. Facts established here are written down in
//! docs/TESTING.md, "Kernel oracle".

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fscrypt::{nokey_name, KeyId, MasterKey, Nonce};
use testkit::kernel::{self, LoopMount};
use testkit::TestRng;

/// ext4 inode fields (Documentation/filesystems/ext4/inodes.rst).
const I_SIZE_LO: usize = 0x4;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
const I_SIZE_HIGH: usize = 0x6c;
const I_EXTRA_ISIZE: usize = 0x80;
/// EXT4_ENCRYPT_FL, EXT4_EXTENTS_FL, EXT4_INLINE_DATA_FL.
const ENCRYPT_FL: u32 = 0x800;
const EXTENTS_FL: u32 = 0x8_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// In-inode xattr header magic (attributes.rst: "h_magic 0xEA020000").
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// The encryption context xattr: name index 9, name "c" (fs/ext4/xattr.h
/// EXT4_XATTR_INDEX_ENCRYPTION, fs/ext4/crypto.c EXT4_XATTR_NAME_ENCRYPTION_CONTEXT).
const XATTR_INDEX_ENCRYPTION: u8 = 9;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn i_size(inode: &[u8]) -> u64 {
    u64::from(le32(inode, I_SIZE_LO)) | u64::from(le32(inode, I_SIZE_HIGH)) << 32
}

/// The value of the in-inode xattr (index 9, "c"): the 40-byte fscrypt context.
fn inode_context(inode: &[u8]) -> Vec<u8> {
    let start = 128 + usize::from(le16(inode, I_EXTRA_ISIZE));
    assert_eq!(le32(inode, start), XATTR_MAGIC, "no in-inode xattrs");
    let first = start + 4;
    let mut at = first;
    while le32(inode, at) != 0 {
        let (name_len, index) = (usize::from(inode[at]), inode[at + 1]);
        let (value_offs, value_size) = (usize::from(le16(inode, at + 2)), le32(inode, at + 8) as usize);
        let name = &inode[at + 16..at + 16 + name_len];
        if index == XATTR_INDEX_ENCRYPTION && name == b"c" {
            return inode[first + value_offs..first + value_offs + value_size].to_vec();
        }
        at += (16 + name_len).next_multiple_of(4);
    }
    panic!("no encryption context xattr in the inode");
}

/// The nonce of a context, after checking its policy bytes and key.
fn context_nonce(ctx: &[u8], id: &KeyId) -> Nonce {
    assert_eq!(ctx.len(), 40, "context length");
    assert_eq!(ctx[..8], [2, 1, 4, 3, 0, 0, 0, 0], "v2 context: XTS, CTS, PAD_32");
    assert_eq!(ctx[8..24], id.0, "context key identifier");
    Nonce(ctx[24..40].try_into().unwrap())
}

/// Every live entry of a linear (not htree) directory: (inode, name bytes),
/// "." and ".." left out (Documentation/filesystems/ext4/directory.rst:
/// `ext4_dir_entry_2` = inode le32, rec_len le16, name_len u8, file_type u8,
/// name; the metadata_csum tail is an entry with inode 0).
fn dir_entries(image: &Path, ino: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for pblk in kernel::inode_blocks(image, ino).unwrap() {
        let b = kernel::read_block(image, pblk).unwrap();
        let mut at = 0;
        while at + 8 <= b.len() {
            let (d_ino, rec_len, name_len) = (le32(&b, at), usize::from(le16(&b, at + 4)), usize::from(b[at + 6]));
            assert!(rec_len >= 8, "bad rec_len at {at}");
            let name = &b[at + 8..at + 8 + name_len];
            if d_ino != 0 && name != b"." && name != b".." {
                out.push((u64::from(d_ino), name.to_vec()));
            }
            at += rec_len;
        }
    }
    out
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn kernel_ciphertext_decrypts_with_the_fscrypt_crate() {
    testkit::require_kernel!();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 64 << 20).unwrap();
    let mut rng = TestRng::new(0x0c1e);
    let raw_key = zeroize::Zeroizing::new(rng.bytes(64));
    let master = MasterKey::from_bytes(&raw_key).unwrap();

    // The kernel writes an encrypted tree.
    let mut m = LoopMount::new(&img, false).unwrap();
    let id = m.add_key(&raw_key).unwrap();
    assert_eq!(KeyId(id), master.identifier(), "kernel key identifier vs MasterKey::identifier");
    let enc = m.join("enc");
    fs::create_dir(&enc).unwrap();
    kernel::set_policy(&enc, &id).unwrap();
    assert_eq!(kernel::get_policy(&enc).unwrap(), kernel::policy_v2(&id));
    let content = rng.bytes(5 * 4096 + 1234);
    fs::write(enc.join("file"), &content).unwrap();
    fs::create_dir(enc.join("sub")).unwrap();
    let names: Vec<Vec<u8>> = [
        b"a".to_vec(),
        vec![b'x'; 15],
        vec![b'y'; 16],
        vec![b'z'; 31],
        vec![b'w'; 32],
        vec![b'v'; 33],
        vec![b'u'; 100],
        vec![b't'; 255],
        "caf\u{e9} \u{1f600}".as_bytes().to_vec(),
    ]
    .to_vec();
    for n in &names {
        let p = enc.join("sub").join(std::ffi::OsStr::from_bytes(n));
        fs::write(p, n).unwrap();
    }
    let fast_target = "t/short";
    let slow_target = "long/".repeat(40);
    std::os::unix::fs::symlink(fast_target, enc.join("fast")).unwrap();
    std::os::unix::fs::symlink(&slow_target, enc.join("slow")).unwrap();
    let nonce_of = |rel: &str| Nonce(kernel::get_nonce(&enc.join(rel)).unwrap());
    let (enc_nonce, file_nonce, sub_nonce) = (Nonce(kernel::get_nonce(&enc).unwrap()), nonce_of("file"), nonce_of("sub"));
    let (enc_ino, file_ino, sub_ino) = (ino(&enc), ino(&enc.join("file")), ino(&enc.join("sub")));
    let (fast_ino, slow_ino) = (ino(&enc.join("fast")), ino(&enc.join("slow")));
    m.unmount().unwrap();
    kernel::e2fsck_fn(&img).unwrap();

    // Contents: per-file key, XTS over 4096-byte data units, tweak = block.
    let inode = kernel::read_inode(&img, file_ino).unwrap();
    assert_ne!(le32(&inode, I_FLAGS) & ENCRYPT_FL, 0, "EXT4_ENCRYPT_FL on the file");
    assert_eq!(context_nonce(&inode_context(&inode), &KeyId(id)), file_nonce);
    assert_eq!(i_size(&inode), content.len() as u64);
    let blocks = kernel::inode_blocks(&img, file_ino).unwrap();
    assert_eq!(blocks.len(), content.len().div_ceil(4096));
    let key = master.file_contents_key(&file_nonce);
    for (lblk, &pblk) in blocks.iter().enumerate() {
        let mut data = kernel::read_block(&img, pblk).unwrap();
        let mut want = content[lblk * 4096..content.len().min((lblk + 1) * 4096)].to_vec();
        want.resize(4096, 0); // the page past EOF is zeros
        assert_ne!(data, want, "block {lblk} is stored in plaintext");
        key.decrypt_units(lblk as u64, 4096, &mut data);
        assert!(data == want, "block {lblk} does not decrypt to what was written");
    }

    // Names: per-directory key, AES-256-CTS, PAD_32.
    let dec_names = |dir_ino: u64, nonce: &Nonce| -> BTreeSet<Vec<u8>> {
        let cipher = master.names_key(nonce);
        dir_entries(&img, dir_ino)
            .iter()
            .map(|(_, ct)| cipher.decrypt_name(ct).unwrap())
            .collect()
    };
    let top: BTreeSet<Vec<u8>> = ["fast", "file", "slow", "sub"].iter().map(|n| n.as_bytes().to_vec()).collect();
    assert_eq!(dec_names(enc_ino, &enc_nonce), top);
    assert_eq!(dec_names(sub_ino, &sub_nonce), names.iter().cloned().collect());
    let enc_ct: Vec<Vec<u8>> = dir_entries(&img, enc_ino).into_iter().map(|(_, ct)| ct).collect();
    for ct in &enc_ct {
        assert_eq!(ct.len(), 32, "a short name pads to 32 bytes");
    }

    // Symlinks: `le16 ct_len ‖ ct ‖ NUL`, i_size = 2 + ct_len; in i_block
    // (no EXTENTS_FL) when the blob fits its 60 bytes, else in one block.
    for (ino, target, fast) in [(fast_ino, fast_target, true), (slow_ino, slow_target.as_str(), false)] {
        let inode = kernel::read_inode(&img, ino).unwrap();
        let flags = le32(&inode, I_FLAGS);
        assert_ne!(flags & ENCRYPT_FL, 0, "EXT4_ENCRYPT_FL on the symlink");
        assert_eq!(flags & INLINE_DATA_FL, 0);
        let nonce = context_nonce(&inode_context(&inode), &KeyId(id));
        let size = i_size(&inode) as usize;
        let ct_len = fscrypt::padded_len(target.len(), fscrypt::SYMLINK_MAX);
        assert_eq!(size, 2 + ct_len, "symlink i_size");
        let stored = if fast {
            assert_eq!(flags, ENCRYPT_FL, "a fast symlink has no extent tree, only the encrypt flag");
            assert_eq!(flags & EXTENTS_FL, 0);
            inode[I_BLOCK..I_BLOCK + I_BLOCK_LEN].to_vec()
        } else {
            assert_ne!(flags & EXTENTS_FL, 0, "a slow symlink is extent-mapped");
            let blocks = kernel::inode_blocks(&img, ino).unwrap();
            assert_eq!(blocks.len(), 1);
            kernel::read_block(&img, blocks[0]).unwrap()
        };
        assert_eq!(usize::from(le16(&stored, 0)), ct_len, "symlink ciphertext length field");
        assert_eq!(stored[size], 0, "NUL after the ciphertext");
        assert!(stored[size + 1..].iter().all(|&b| b == 0), "zeros after the blob");
        let got = master.names_key(&nonce).decrypt_symlink(&stored[..size + 1]).unwrap();
        assert_eq!(got, target.as_bytes());
    }

    // No-key names: without the key the kernel lists base64url (no padding)
    // of `le32 hash ‖ le32 minor_hash ‖ ciphertext`, the ciphertext cut to 149
    // bytes plus SHA-256 of the rest when longer (`fscrypt::nokey_name` with
    // the dirhash). ext4 reads a directory of one block, or an indexed one,
    // through its htree code, which fills in the ext4 dirhash of the
    // ciphertext name (hash with its low bit clear); `fscrypt::nokey_name`
    // leaves those 8 bytes zero, so only the rest is compared. The 255-byte
    // name in `sub` (ciphertext > 149 bytes) takes the abbreviated form.
    let m = LoopMount::new(&img, true).unwrap();
    let list = |dir: &Path| -> Vec<(Vec<u8>, String)> {
        let mut out: Vec<(Vec<u8>, String)> = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let raw = URL_SAFE_NO_PAD
                .decode(&name)
                .unwrap_or_else(|_| panic!("{name:?} is not base64url"));
            let hash = le32(&raw, 0);
            assert!(hash != 0 && hash & 1 == 0, "{name}: dirhash {hash:#x}");
            out.push((raw[8..].to_vec(), name));
        }
        out.sort();
        out
    };
    let predicted = |dir_ino: u64| -> Vec<Vec<u8>> {
        let mut p: Vec<Vec<u8>> = dir_entries(&img, dir_ino)
            .iter()
            .map(|(_, ct)| URL_SAFE_NO_PAD.decode(nokey_name(ct)).unwrap()[8..].to_vec())
            .collect();
        p.sort();
        p
    };
    let top = list(&m.join("enc"));
    assert_eq!(
        top.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
        predicted(enc_ino),
        "no-key names of enc"
    );
    let sub_ct = dir_entries(&img, enc_ino).into_iter().find(|(i, _)| *i == sub_ino).unwrap().1;
    let sub_key = URL_SAFE_NO_PAD.decode(nokey_name(&sub_ct)).unwrap()[8..].to_vec();
    let sub_name = &top.iter().find(|(r, _)| *r == sub_key).unwrap().1;
    let in_sub = list(&m.join("enc").join(sub_name));
    assert_eq!(
        in_sub.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
        predicted(sub_ino),
        "no-key names of enc/sub"
    );
    assert!(in_sub.iter().any(|(r, _)| r.len() == 149 + 32), "the 255-byte name is abbreviated");
    m.unmount().unwrap();
}

/// The first 8 bytes of a no-key name are the entry's htree hash: in an
/// indexed encrypted directory (300 names: several leaf blocks), every
/// entry's no-key hash lies in the hash range its dx_root entry gives the
/// leaf block holding it (Documentation/filesystems/ext4/directory.rst,
/// "Hash Tree Directories": `dx_root` = fake "." and ".." entries, then
/// `dx_root_info` at 0x18, `limit`/`count`/block at 0x20, then `{hash, block}`
/// pairs; leaf `i` holds hashes from `hash_i` up to `hash_{i+1}`).
#[test]
fn nokey_name_hash_is_the_htree_hash_of_the_ciphertext() {
    testkit::require_kernel!();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    kernel::mkfs_ext4_encrypt(&img, 32 << 20).unwrap();
    let raw_key = [0x3cu8; 64];
    let mut m = LoopMount::new(&img, false).unwrap();
    let id = m.add_key(&raw_key).unwrap();
    let dir = m.join("big");
    fs::create_dir(&dir).unwrap();
    kernel::set_policy(&dir, &id).unwrap();
    for i in 0..300 {
        fs::write(dir.join(format!("entry-{i:04}")), b"").unwrap();
    }
    let dir_ino = ino(&dir);
    m.unmount().unwrap();

    // The index, read from the image.
    let blocks = kernel::inode_blocks(&img, dir_ino).unwrap();
    let root = kernel::read_block(&img, blocks[0]).unwrap();
    // dx_root_info: hash_version @0x1c (1 = half_md4), info_length @0x1d,
    // indirect_levels @0x1e.
    assert_eq!((root[0x1c], root[0x1d], root[0x1e]), (1, 8, 0), "half_md4, one index level");
    let count = usize::from(le16(&root, 0x22));
    assert!(count >= 2, "the directory is indexed over several leaves");
    // (lower hash bound, logical block) per leaf, in hash order.
    let mut leaves = vec![(0u32, le32(&root, 0x24))];
    for i in 1..count {
        leaves.push((le32(&root, 0x20 + 8 * i), le32(&root, 0x24 + 8 * i)));
    }
    // Each leaf's ciphertext names, with the hash range they must fall in.
    let mut expect: Vec<(Vec<u8>, u32, u32)> = Vec::new();
    for (i, &(low, lblk)) in leaves.iter().enumerate() {
        let high = leaves.get(i + 1).map_or(u32::MAX, |l| l.0);
        let b = kernel::read_block(&img, blocks[lblk as usize]).unwrap();
        let mut at = 0;
        while at + 8 <= b.len() {
            let (d_ino, rec_len, name_len) = (le32(&b, at), usize::from(le16(&b, at + 4)), usize::from(b[at + 6]));
            if d_ino != 0 {
                let ct = &b[at + 8..at + 8 + name_len];
                expect.push((URL_SAFE_NO_PAD.decode(nokey_name(ct)).unwrap()[8..].to_vec(), low, high));
            }
            at += rec_len;
        }
    }
    assert_eq!(expect.len(), 300);

    let m = LoopMount::new(&img, true).unwrap();
    let mut checked = 0;
    for e in fs::read_dir(m.join("big")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&name).unwrap();
        let hash = le32(&raw, 0);
        let (_, low, high) = expect
            .iter()
            .find(|(rest, _, _)| *rest == raw[8..])
            .expect("listed name is in a leaf");
        assert!(
            (hash & !1) >= (*low & !1) && hash <= *high,
            "{name}: hash {hash:#x} outside its leaf [{low:#x}, {high:#x}]"
        );
        checked += 1;
    }
    assert_eq!(checked, 300);
    m.unmount().unwrap();
}
