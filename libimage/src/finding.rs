//! Findings: problems found in an image, as data.
//!
//! Every check collects findings rather than stopping at the first one, in the
//! way rustic_core's `check` does. Each finding has a stable code, a severity, a
//! location and a one-line repair hint.

use serde::Serialize;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is wrong.
    Info,
    /// Not damage, but not as it should be (e.g. an unused key, a stale slot).
    Warning,
    /// Damage: the image is not intact.
    Error,
}

/// Declares [`Code`]: each finding code with its severity and a one-line
/// meaning (the README's table lists the same codes; a test keeps them equal).
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $s:literal, $sev:ident, $meaning:literal;)*) => {
        /// A finding's stable code. The first letter of its text form is its
        /// severity: `E_` error, `W_` warning, `I_` info.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[$doc])* #[doc = $meaning] $name,)*
        }

        impl Code {
            /// Every code, in the order the checker's phases find them.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The stable text form, e.g. `E_EXTENT_OVERLAP`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $s,)*
                }
            }

            /// How bad a finding with this code is.
            pub fn severity(self) -> Severity {
                match self {
                    $(Code::$name => Severity::$sev,)*
                }
            }

            /// What the code means, in one line.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Code::$name => $meaning,)*
                }
            }
        }
    };
}

codes! {
    NoSuperblock = "E_NO_SUPERBLOCK", Error, "neither superblock slot holds a valid superblock";
    SuperblockSlot = "W_SUPERBLOCK_SLOT", Warning, "one superblock slot is damaged, stale, from another image or in the wrong slot";
    SuperblockNewer = "E_SUPERBLOCK_NEWER", Error, "a damaged superblock slot belonged to a newer generation than the one in use";
    Truncated = "E_TRUNCATED", Error, "the image file is shorter than the superblock says";
    TrailingBytes = "I_TRAILING_BYTES", Info, "the file has bytes past the image's last block (harmless)";
    MetaBlock = "E_META_BLOCK", Error, "a metadata block fails its magic, crc32c, block number or generation check";
    MetaCrc = "E_META_CRC", Error, "every metadata block is intact but the stream's crc32c differs";
    MetaDecode = "E_META_DECODE", Error, "the metadata stream does not decode";
    Context = "E_CONTEXT", Error, "an encryption context is malformed";
    ExtentLen = "E_EXTENT_LEN", Error, "an extent has zero or too many blocks";
    ExtentBounds = "E_EXTENT_BOUNDS", Error, "an extent lies outside the image's data area";
    ExtentOverlap = "E_EXTENT_OVERLAP", Error, "an extent shares blocks with another extent or the metadata region";
    Refcount = "E_REFCOUNT", Error, "an extent's refcount differs from the references to it";
    ExtentUnreferenced = "W_EXTENT_UNREFERENCED", Warning, "an extent no file uses";
    AllocMap = "E_ALLOC_MAP", Error, "the allocation map is malformed, or marks blocks an extent uses as free";
    BlocksLeaked = "W_BLOCKS_LEAKED", Warning, "the allocation map marks blocks as used that nothing uses";
    Root = "E_ROOT", Error, "a snapshot's root is missing or not a directory";
    DanglingEntry = "E_DANGLING_ENTRY", Error, "a directory entry names a missing inode";
    DirCycle = "E_DIR_CYCLE", Error, "the directory graph has a cycle or a hard-linked directory";
    Orphan = "E_ORPHAN", Error, "an inode no directory reaches";
    Nlink = "E_NLINK", Error, "an inode's link count differs from the entries naming it";
    NameLen = "E_NAME_LEN", Error, "an encrypted name has an impossible length";
    DupName = "E_DUP_NAME", Error, "two entries of a directory have the same encrypted name";
    SymlinkBlob = "E_SYMLINK_BLOB", Error, "a symlink's encrypted target is malformed";
    FileMap = "E_FILE_MAP", Error, "a file's extent map overlaps, runs past its size or past an extent";
    DanglingExtent = "E_DANGLING_EXTENT", Error, "a file names an extent that does not exist";
    KeyUnused = "W_KEY_UNUSED", Warning, "a given key matches no context in the image";
    KeyMissing = "I_KEY_MISSING", Info, "contexts whose key was not given could not be verified";
    NameDecrypt = "E_NAME_DECRYPT", Error, "a name does not decrypt to a valid name with its key";
    NameInvalid = "E_NAME_INVALID", Error, "a name decrypts to a reserved name (`.`, `..`, or one with `/` or NUL)";
    DupNameDecrypted = "E_DUP_NAME_DECRYPTED", Error, "two entries of a directory decrypt to the same name";
    SymlinkDecrypt = "E_SYMLINK_DECRYPT", Error, "a symlink target does not decrypt to a valid target";
    DataCrc = "E_DATA_CRC", Error, "an extent's ciphertext fails its crc32c (data scrub)";
    DataRead = "E_DATA_READ", Error, "an extent's ciphertext could not be read (data scrub)";
    Ext4Structure = "E_EXT4_STRUCTURE", Error, "ext4: the walk stopped on corrupt metadata (run e2fsck)";
    Ext4FlagWithoutContext = "E_EXT4_FLAG_WITHOUT_CONTEXT", Error, "ext4: ENCRYPT_FL is set but the inode has no fscrypt context";
    Ext4ContextWithoutFlag = "E_EXT4_CONTEXT_WITHOUT_FLAG", Error, "ext4: the inode has an fscrypt context but ENCRYPT_FL is clear";
    Ext4Unencrypted = "E_EXT4_UNENCRYPTED_IN_ENCRYPTED", Error, "ext4: a file, directory or symlink without a context inside an encrypted directory";
    Ext4PolicyMismatch = "E_EXT4_POLICY_MISMATCH", Error, "ext4: a context whose key, modes or flags differ from its directory's";
    Ext4NonceReused = "W_EXT4_NONCE_REUSED", Warning, "ext4: two inodes carry the same fscrypt nonce";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where a finding is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Where {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Path from the snapshot root: no-key names, or real names with a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable machine-readable code, e.g. `E_EXTENT_OVERLAP`.
    pub code: Code,
    /// The code's severity (repeated so the JSON report carries it).
    pub severity: Severity,
    #[serde(rename = "where")]
    pub at: Where,
    pub message: String,
    pub hint: &'static str,
}

impl Finding {
    /// A finding with `code` (which fixes its severity).
    pub fn new(code: Code, message: impl Into<String>, hint: &'static str) -> Self {
        Finding {
            code,
            severity: code.severity(),
            at: Where::default(),
            message: message.into(),
            hint,
        }
    }
    pub fn snapshot(mut self, s: &str) -> Self {
        self.at.snapshot = Some(s.to_string());
        self
    }
    pub fn inode(mut self, ino: u64) -> Self {
        self.at.inode = Some(ino);
        self
    }
    pub fn extent(mut self, id: u64) -> Self {
        self.at.extent = Some(id);
        self
    }
    pub fn block(mut self, b: u64) -> Self {
        self.at.block = Some(b);
        self
    }
    pub fn path(mut self, p: String) -> Self {
        self.at.path = Some(p);
        self
    }
}

impl Severity {
    /// `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::fmt::Display for Where {
    /// `snapshot "main", inode 5, path /a/b, extent 3, block 17`; empty when nothing is known.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = &self.snapshot {
            parts.push(format!("snapshot {s:?}"));
        }
        if let Some(i) = self.inode {
            parts.push(format!("inode {i}"));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path {p}"));
        }
        if let Some(e) = self.extent {
            parts.push(format!("extent {e}"));
        }
        if let Some(b) = self.block {
            parts.push(format!("block {b}"));
        }
        f.write_str(&parts.join(", "))
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity.as_str(), self.code, self.message)?;
        let at = self.at.to_string();
        if !at.is_empty() {
            write!(f, " [{at}]")?;
        }
        write!(f, " (hint: {})", self.hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_matches_the_code_prefix() {
        for c in Code::ALL {
            let want = match &c.as_str()[..2] {
                "E_" => Severity::Error,
                "W_" => Severity::Warning,
                "I_" => Severity::Info,
                p => panic!("{c}: unknown prefix {p}"),
            };
            assert_eq!(c.severity(), want, "{c}");
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut v: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        v.sort_unstable();
        let n = v.len();
        v.dedup();
        assert_eq!(v.len(), n);
    }

    /// The README's findings table lists exactly the codes of [`Code`], each
    /// with its severity.
    #[test]
    fn readme_table_lists_every_code() {
        let readme = include_str!("../../README.md");
        let mut rows = Vec::new();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() >= 4 && cells[1].starts_with('`') && cells[1].ends_with('`') {
                let code = cells[1].trim_matches('`');
                if code.len() > 2 && matches!(&code[..2], "E_" | "W_" | "I_") {
                    rows.push((code.to_string(), cells[2].to_string()));
                }
            }
        }
        for c in Code::ALL {
            let row = rows.iter().find(|(code, _)| code == c.as_str());
            let Some((_, sev)) = row else {
                panic!("README.md's findings table has no row for {c}");
            };
            assert_eq!(sev, c.severity().as_str(), "README.md severity of {c}");
        }
        for (code, _) in &rows {
            assert!(Code::ALL.iter().any(|c| c.as_str() == code), "README.md lists unknown code {code}");
        }
    }
}
