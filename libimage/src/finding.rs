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
    pub code: &'static str,
    pub severity: Severity,
    #[serde(rename = "where")]
    pub at: Where,
    pub message: String,
    pub hint: &'static str,
}

impl Finding {
    pub fn new(code: &'static str, severity: Severity, message: impl Into<String>, hint: &'static str) -> Self {
        Finding {
            code,
            severity,
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
