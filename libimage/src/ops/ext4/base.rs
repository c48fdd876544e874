//! Base backups of an incremental ext4 archive (docs/BACKUP.md §11.3,
//! §11.4): an index of the encrypted files each base *stores*, by
//! (context, datacrc, size), with the archive offset of their ciphertext,
//! so `restore --base` reads the data of `CRYPTIMG.unchanged` members back
//! by offset and `verify --base` checks that every such member is found.
//! Each base is read and verified in full by the strict reader when it is
//! indexed; a base may itself be incremental (a chain), and every base of
//! the chain must be given.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::archive::{read_archive, Ext4Manifest, Ext4Sink, Kind, Member};
use crate::error::{CorruptKind, Error, Result};
use crate::ops::backup::base::{given_twice, in_base, open_base};

/// Where one stored file's ciphertext is.
struct Stored {
    runs: Vec<(u64, u64)>,
    file: usize,
    at: u64,
}

/// (context, datacrc, size): the nonce in the context is unique per inode,
/// so the key names one version of one file.
type Key = ([u8; 40], u32, u64);

/// The base backups given to `restore` or `verify`.
#[derive(Default)]
pub struct Ext4Bases {
    files: Vec<(PathBuf, File)>,
    pub manifests: Vec<Ext4Manifest>,
    stored: HashMap<Key, Vec<Stored>>,
}

struct IndexSink<'a> {
    bases: &'a mut Ext4Bases,
    file: usize,
    manifest: Option<Ext4Manifest>,
}

impl Ext4Sink for IndexSink<'_> {
    fn manifest(&mut self, m: &Ext4Manifest) -> Result<()> {
        self.manifest = Some(m.clone());
        Ok(())
    }

    fn member(&mut self, m: &Member, _data: &mut dyn FnMut(&mut [u8]) -> Result<usize>) -> Result<()> {
        if let (Kind::File, Some(c), Some(d), false) = (m.kind, m.context, m.datacrc, m.unchanged) {
            let v = self.bases.stored.entry((c, d, m.size)).or_default();
            if !v.iter().any(|s| s.runs == m.runs) {
                v.push(Stored {
                    runs: m.runs.clone(),
                    file: self.file,
                    at: m.data_offset,
                });
            }
        }
        Ok(())
    }
}

/// The error for an unchanged member none of the bases stores.
fn not_stored(m: &Member, chain: &str) -> Error {
    Error::corrupt(
        CorruptKind::BadMember("unchanged member not stored in the base backups"),
        format!(
            "ext4 backup archive: {}: CRYPTIMG.unchanged, but none of the base backups ({chain}) stores a file with this context, size, block runs and CRYPTIMG.datacrc",
            String::from_utf8_lossy(&m.path)
        ),
        Some(m.offset),
    )
}

impl Ext4Bases {
    /// Reads and fully verifies each base archive (regular files only).
    pub fn load(paths: &[PathBuf]) -> Result<Ext4Bases> {
        let mut b = Ext4Bases::default();
        for p in paths {
            b.add(p)?;
        }
        Ok(b)
    }

    fn add(&mut self, path: &Path) -> Result<()> {
        let f = open_base(path)?;
        let reader = f.try_clone().map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let file = self.files.len();
        let mut sink = IndexSink {
            bases: self,
            file,
            manifest: None,
        };
        read_archive(&mut { reader }, &mut sink).map_err(|e| in_base(path, e))?;
        let Some(m) = sink.manifest else {
            return Err(Error::Internal("an ext4 archive read without a manifest"));
        };
        if self.manifests.iter().any(|x| x.backup_id == m.backup_id) {
            return Err(given_twice(path, &m.backup_id));
        }
        self.files.push((path.to_path_buf(), f));
        self.manifests.push(m);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn given(&self) -> String {
        let ids: Vec<&str> = self.manifests.iter().map(|m| m.backup_id.as_str()).collect();
        if ids.is_empty() {
            "none given".into()
        } else {
            ids.join(", ")
        }
    }

    /// Checks that the chain of bases of `archive` (an incremental backup)
    /// is complete: its base, that base's base, and so on, were all given.
    /// The error names the first missing backup id.
    pub fn check_chain(&self, archive: &Ext4Manifest) -> Result<()> {
        let mut what = "this archive".to_string();
        let mut next = archive.base_backup_id.clone();
        // Each step moves to another given base: at most one per base.
        for _ in 0..=self.manifests.len() {
            let Some(id) = next else { return Ok(()) };
            let Some(i) = self.manifests.iter().position(|m| m.backup_id == id) else {
                return Err(Error::Invalid(format!(
                    "{what} is an incremental ext4 backup of base backup {id}, which was not given: supply it with --base, and its own bases (given: {})",
                    self.given()
                )));
            };
            what = format!("base backup {} ({id})", self.files[i].0.display());
            next = self.manifests[i].base_backup_id.clone();
        }
        Err(Error::Invalid(format!(
            "the base backups name each other in a cycle ({})",
            self.given()
        )))
    }

    /// Where the ciphertext of the unchanged member `m` is stored: its base
    /// file and the offset of its data.
    fn find(&self, m: &Member) -> Option<(&Path, &File, u64)> {
        let key = (m.context?, m.datacrc?, m.size);
        let s = self.stored.get(&key)?.iter().find(|s| s.runs == m.runs)?;
        let (p, f) = &self.files[s.file];
        Some((p, f, s.at))
    }

    /// Checks that a base stores the data of the unchanged member `m`.
    pub fn check(&self, m: &Member) -> Result<()> {
        match self.find(m) {
            Some(_) => Ok(()),
            None => Err(not_stored(m, &self.given())),
        }
    }

    /// A reader of the stored ciphertext of the unchanged member `m`; its
    /// crc32c is checked against `CRYPTIMG.datacrc` by [`BaseData::finish`].
    pub fn data(&self, m: &Member) -> Result<BaseData<'_>> {
        let (path, file, at) = self.find(m).ok_or_else(|| not_stored(m, &self.given()))?;
        Ok(BaseData {
            path,
            file,
            at,
            left: m.runs.iter().map(|r| r.1).sum::<u64>() * 4096,
            crc: 0,
            want: m.datacrc.unwrap_or(0),
        })
    }
}

/// The ciphertext of one stored file, read from its base by offset.
pub struct BaseData<'a> {
    path: &'a Path,
    file: &'a File,
    at: u64,
    left: u64,
    crc: u32,
    want: u32,
}

impl Read for BaseData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.read_exact_at(&mut buf[..n], self.at)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

impl BaseData<'_> {
    /// All data read and its crc32c is the member's `CRYPTIMG.datacrc`
    /// (the base was verified when indexed; this catches a base file that
    /// changed since).
    pub fn finish(self, m: &Member) -> Result<()> {
        if self.left != 0 || self.crc != self.want {
            return Err(Error::corrupt(
                CorruptKind::BadMember("base backup data changed"),
                format!(
                    "base backup {}: the stored ciphertext of {} no longer matches CRYPTIMG.datacrc (the file changed after it was verified)",
                    self.path.display(),
                    String::from_utf8_lossy(&m.path)
                ),
                Some(self.at),
            ));
        }
        Ok(())
    }
}
