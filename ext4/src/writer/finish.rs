//! [`Writer::finish`]: directories, extent trees, xattr blocks, inode
//! tables, bitmaps, group descriptors, superblocks and the journal.

use super::*;
use crate::csum::inode_seed;
use crate::extent::build_tree;
use crate::group_desc::{GroupDesc, BG_INODE_ZEROED};
use crate::inode::{Inode, ENCRYPT_FL, EXTENTS_FL, EXTRA_ISIZE, GOOD_OLD_SIZE, INDEX_FL};
use crate::journal::JournalSuperblock;
use crate::superblock::{self as sbm, group_has_super, Superblock};
use crate::xattr::{self, INDEX_ENCRYPTION};
use crate::{bitmap, dir, htree, DESC_SIZE, INODE_SIZE, JOURNAL_INO};

/// lost+found gets 4 blocks (16 KiB), as mke2fs makes it (misc/mke2fs.c
/// `create_lost_and_found` grows it to 16 KiB).
const LPF_BLOCKS: usize = 4;
/// `EXT4_LINK_MAX`: above it a directory's link count is 1 (dir_nlink).
const LINK_MAX: u32 = 65000;

impl Writer {
    /// Writes everything still in memory and returns the counts. The image
    /// file is then exactly `blocks * 4096` bytes.
    pub fn finish(mut self) -> Result<Stats> {
        let fs_seed = self.fs_seed;
        let n = self.nodes.len();
        // Per inode: (data blocks incl. tree/xattr blocks, i_block, file_acl, flags).
        let mut extra: Vec<(u64, [u8; 60], u64, u32)> = vec![(0, [0; 60], 0, 0); n];
        for (i, ex) in extra.iter_mut().enumerate() {
            let ino = i as u32 + 1;
            let seed = inode_seed(fs_seed, ino, 0);
            let extents_and_count = match &self.nodes[i].body {
                Body::Dir { parent, entries } => {
                    let mut all = Vec::with_capacity(entries.len() + 2);
                    all.push(DirEntry {
                        inode: ino,
                        file_type: dir::FT_DIR,
                        name: b".".to_vec(),
                    });
                    all.push(DirEntry {
                        inode: *parent,
                        file_type: dir::FT_DIR,
                        name: b"..".to_vec(),
                    });
                    all.extend(entries.iter().cloned());
                    let mut blocks = dir::build_blocks(&all, seed);
                    if blocks.len() > 1 && ino != FIRST_INO {
                        // More than one block: hash-indexed, as the kernel
                        // makes it (the superblock's hash, default unsigned
                        // half_md4; Writer::set_dir_hash).
                        let seed16 = self.opts.hash_seed;
                        let (version, signed) = self.dir_hash;
                        blocks = htree::build(entries, ino, *parent, version, &seed16, signed, seed)?.blocks;
                        ex.3 |= INDEX_FL;
                    }
                    if ino == FIRST_INO {
                        while blocks.len() < LPF_BLOCKS {
                            blocks.extend(dir::build_blocks(&[], seed));
                        }
                    }
                    let mut extents: Vec<Extent> = Vec::new();
                    for (l, b) in blocks.iter().enumerate() {
                        let pblk = self.alloc.one("directory blocks")?;
                        self.put_block(pblk, b)?;
                        let l = l as u32;
                        match extents.last_mut() {
                            Some(e) if e.pblk + u64::from(e.len) == pblk && e.len < MAX_LEN => e.len += 1,
                            _ => extents.push(Extent { lblk: l, len: 1, pblk }),
                        }
                    }
                    self.nodes[i].size = (blocks.len() * BLOCK_SIZE) as u64;
                    Some((extents, blocks.len() as u64))
                }
                Body::File { extents, data_blocks } => Some((extents.clone(), *data_blocks)),
                Body::SlowSymlink { block } => Some((
                    vec![Extent {
                        lblk: 0,
                        len: 1,
                        pblk: *block,
                    }],
                    1,
                )),
                _ => None,
            };
            if let Some((extents, count)) = extents_and_count {
                let alloc = &mut self.alloc;
                let tree = build_tree(&extents, seed, &mut || alloc.one("extent tree blocks"))?;
                for (b, data) in &tree.blocks {
                    self.put_block(*b, data)?;
                }
                *ex = (count + tree.blocks.len() as u64, tree.root, 0, ex.3 | EXTENTS_FL);
            } else {
                ex.1 = self.nodes[i].iblock;
            }
            // Extended attributes: the fscrypt context first, in the inode.
            let node = &self.nodes[i];
            let mut attrs: Vec<Xattr> = Vec::new();
            if let Some(c) = node.ctx {
                attrs.push(Xattr {
                    index: INDEX_ENCRYPTION,
                    name: xattr::ENCRYPTION_CONTEXT_NAME.to_vec(),
                    value: c.to_vec(),
                });
                ex.3 |= ENCRYPT_FL;
            }
            attrs.extend(node.attrs.xattrs.iter().cloned());
            let area = INODE_SIZE - GOOD_OLD_SIZE - usize::from(EXTRA_ISIZE);
            if !attrs.is_empty() && xattr::build_ibody(&attrs, area).is_none() {
                // The context stays in the inode ([`Writer::inode_of`]); the rest goes to a block.
                let blk: Vec<Xattr> = attrs.into_iter().filter(|a| a.index != INDEX_ENCRYPTION).collect();
                let b = self.alloc.one("an xattr block")?;
                let data = xattr::build_block(&blk, b, fs_seed)?;
                self.put_block(b, &data)?;
                ex.0 += 1;
                ex.2 = b;
            }
        }
        self.flush()?;

        // Inode tables, group by group.
        let layout = &self.layout;
        let ipg = layout.inodes_per_group as usize;
        let mut gds = Vec::with_capacity(layout.groups as usize);
        let mut ibm = vec![0u8; BLOCK_SIZE];
        let mut inodes_used = 0u64;
        for g in 0..layout.groups as usize {
            let first = g * ipg; // index into nodes
            let mut table = Vec::new();
            ibm.fill(0);
            let mut dirs = 0u32;
            let mut last_used = 0usize;
            for k in 0..ipg {
                let i = first + k;
                let Some(node) = self.nodes.get(i) else { break };
                let ino = i as u32 + 1;
                let inode = match (&node.body, ino) {
                    (Body::Free, _) => None,
                    (Body::Reserved, JOURNAL_INO) if self.layout.journal.1 > 0 => Some(self.journal_inode()?),
                    (Body::Reserved, _) => None,
                    _ => Some(self.inode_of(node, &extra[i], ino)?),
                };
                if ino < FIRST_INO || inode.is_some() {
                    bitmap::set(&mut ibm, k);
                    last_used = k + 1;
                    inodes_used += 1;
                }
                if matches!(node.body, Body::Dir { .. }) {
                    dirs += 1;
                }
                if let Some(inode) = inode {
                    table.resize(k * INODE_SIZE, 0);
                    table.extend(inode.to_bytes(ino, fs_seed, INODE_SIZE));
                }
            }
            if !table.is_empty() {
                self.write_at(self.layout.inode_table[g] * BLOCK_SIZE_U64, &table)?;
            }
            bitmap::mark_end(&mut ibm, ipg);
            let free_inodes = bitmap::count_free(&ibm, ipg) as u32;
            self.write_at(self.layout.inode_bitmap[g] * BLOCK_SIZE_U64, &ibm)?;
            gds.push(GroupDesc {
                inode_bitmap: self.layout.inode_bitmap[g],
                inode_table: self.layout.inode_table[g],
                block_bitmap: self.layout.block_bitmap[g],
                free_inodes_count: free_inodes,
                used_dirs_count: dirs,
                flags: BG_INODE_ZEROED,
                inode_bitmap_csum: bitmap::csum(fs_seed, &ibm, ipg / 8),
                itable_unused: (ipg - last_used) as u32,
                ..Default::default()
            });
        }

        // Block bitmaps.
        let bpg = crate::BLOCKS_PER_GROUP as u64;
        let total = self.layout.blocks;
        let mut free_blocks = 0u64;
        let mut bbm = vec![0u8; BLOCK_SIZE];
        for (g, gd) in gds.iter_mut().enumerate() {
            let start = g as u64 * bpg;
            let end = (start + bpg).min(total);
            bbm.fill(0);
            for b in start..end {
                if self.alloc.is_used(b) {
                    bitmap::set(&mut bbm, (b - start) as usize);
                }
            }
            bitmap::mark_end(&mut bbm, (end - start) as usize);
            let free = bitmap::count_free(&bbm, bpg as usize) as u32;
            free_blocks += u64::from(free);
            gd.free_blocks_count = free;
            gd.block_bitmap_csum = bitmap::csum(fs_seed, &bbm, BLOCK_SIZE);
            self.write_at(self.layout.block_bitmap[g] * BLOCK_SIZE_U64, &bbm)?;
        }

        // Descriptor table and superblocks (primary and backups).
        let mut gdt = vec![0u8; self.layout.gdt_blocks as usize * BLOCK_SIZE];
        for (g, gd) in gds.iter().enumerate() {
            gdt[g * DESC_SIZE..(g + 1) * DESC_SIZE].copy_from_slice(&gd.to_bytes(fs_seed, g as u32));
        }
        let free_inodes = self.layout.inodes() - inodes_used;
        let mut sb = self.superblock(free_blocks, free_inodes as u32);
        for g in 0..u64::from(self.layout.groups) {
            if !group_has_super(g) {
                continue;
            }
            sb.block_group_nr = g as u16;
            let base = g * bpg * BLOCK_SIZE_U64;
            let sb_off = if g == 0 { sbm::SB_OFFSET } else { base };
            self.write_at(sb_off, &sb.to_bytes())?;
            self.write_at(base + BLOCK_SIZE_U64, &gdt)?;
        }
        if self.layout.journal.1 > 0 {
            let j = JournalSuperblock::new_clean(self.layout.journal.1, self.opts.uuid);
            self.write_at(self.layout.journal.0 * BLOCK_SIZE_U64, &j.to_bytes())?;
        }
        self.file
            .set_len(total * BLOCK_SIZE_U64)
            .map_err(|e| Error::io("setting the ext4 image size", e))?;
        let mut stats = self.stats;
        stats.blocks = total;
        stats.blocks_used = total - free_blocks;
        stats.inodes = self.layout.inodes();
        stats.inodes_used = inodes_used;
        Ok(stats)
    }

    fn inode_of(&self, node: &Node, extra: &(u64, [u8; 60], u64, u32), ino: u32) -> Result<Inode> {
        let a = &node.attrs;
        let mut attrs: Vec<Xattr> = Vec::new();
        if let Some(c) = node.ctx {
            attrs.push(Xattr {
                index: INDEX_ENCRYPTION,
                name: xattr::ENCRYPTION_CONTEXT_NAME.to_vec(),
                value: c.to_vec(),
            });
        }
        if extra.2 == 0 {
            attrs.extend(a.xattrs.iter().cloned());
        }
        let area_len = INODE_SIZE - GOOD_OLD_SIZE - usize::from(EXTRA_ISIZE);
        let area =
            xattr::build_ibody(&attrs, area_len).ok_or_else(|| Error::Invalid(format!("inode {ino}: in-inode xattrs do not fit")))?;
        let links = if matches!(node.body, Body::Dir { .. }) && node.links > LINK_MAX {
            1
        } else {
            node.links.min(u32::from(u16::MAX))
        };
        Ok(Inode {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: node.size,
            atime: a.atime,
            ctime: a.ctime,
            mtime: a.mtime,
            crtime: a.mtime,
            dtime: 0,
            links_count: links as u16,
            blocks: extra.0 * (BLOCK_SIZE_U64 / 512),
            flags: extra.3,
            block: extra.1,
            generation: 0,
            file_acl: extra.2,
            extra_isize: EXTRA_ISIZE,
            xattr_area: area,
        })
    }

    /// Inode 8: a regular file, mode 0600, one extent over the journal.
    fn journal_inode(&self) -> Result<Inode> {
        let (start, n) = self.layout.journal;
        let ex = [Extent {
            lblk: 0,
            len: n as u16,
            pblk: start,
        }];
        let tree = build_tree(&ex, 0, &mut || Err(Error::Invalid("journal needs one extent".into())))?;
        let t = Time {
            sec: self.opts.now,
            nsec: 0,
        };
        Ok(Inode {
            mode: S_IFREG | 0o600,
            size: u64::from(n) * BLOCK_SIZE_U64,
            atime: t,
            ctime: t,
            mtime: t,
            crtime: t,
            links_count: 1,
            blocks: u64::from(n) * 8,
            flags: EXTENTS_FL,
            block: tree.root,
            extra_isize: EXTRA_ISIZE,
            ..Default::default()
        })
    }

    fn superblock(&self, free_blocks: u64, free_inodes: u32) -> Superblock {
        use sbm::*;
        let now = self.opts.now as u32;
        let journal = self.layout.journal.1 > 0;
        let mut jnl_blocks = [0u32; 17];
        if journal {
            if let Ok(ji) = self.journal_inode() {
                for (k, w) in jnl_blocks.iter_mut().take(15).enumerate() {
                    *w = crate::le32(&ji.block, 4 * k);
                }
                jnl_blocks[15] = (ji.size >> 32) as u32;
                jnl_blocks[16] = ji.size as u32;
            }
        }
        Superblock {
            inodes_count: self.layout.inodes() as u32,
            blocks_count: self.layout.blocks,
            r_blocks_count: 0,
            free_blocks_count: free_blocks,
            free_inodes_count: free_inodes,
            first_data_block: 0,
            log_block_size: 2,
            blocks_per_group: crate::BLOCKS_PER_GROUP,
            inodes_per_group: self.layout.inodes_per_group,
            mtime: 0,
            wtime: now,
            state: STATE_VALID,
            errors: ERRORS_CONTINUE,
            lastcheck: now,
            rev_level: REV_DYNAMIC,
            first_ino: FIRST_INO,
            inode_size: INODE_SIZE as u16,
            block_group_nr: 0,
            feature_compat: COMPAT_EXT_ATTR | COMPAT_DIR_INDEX | if journal { COMPAT_HAS_JOURNAL } else { 0 },
            feature_incompat: INCOMPAT_FILETYPE
                | INCOMPAT_EXTENTS
                | INCOMPAT_64BIT
                | INCOMPAT_FLEX_BG
                | if self.opts.encrypt { INCOMPAT_ENCRYPT } else { 0 },
            feature_ro_compat: RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE
                | RO_COMPAT_METADATA_CSUM,
            uuid: self.opts.uuid,
            volume_name: [0; 16],
            journal_inum: if journal { JOURNAL_INO } else { 0 },
            hash_seed: self.opts.hash_seed,
            def_hash_version: self.dir_hash.0,
            jnl_backup_type: if journal { JNL_BACKUP_BLOCKS } else { 0 },
            desc_size: DESC_SIZE as u16,
            mkfs_time: now,
            jnl_blocks,
            min_extra_isize: EXTRA_ISIZE,
            want_extra_isize: EXTRA_ISIZE,
            flags: if self.dir_hash.1 { FLAGS_SIGNED_HASH } else { FLAGS_UNSIGNED_HASH },
            log_groups_per_flex: 4,
            checksum_type: CHECKSUM_CRC32C,
            encrypt_algos: [0; 4],
        }
    }
}
