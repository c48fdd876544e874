//! Encryption contexts: the 40-byte fscrypt v2 policy context carried by
//! directories and symlinks, and the 34-byte per-extent context carried by
//! every data extent.
//!
//! Kernel `fscrypt_context_v2` (Documentation/filesystems/fscrypt.rst, "Encryption
//! context"): "u8 version; u8 contents_encryption_mode; u8 filenames_encryption_mode;
//! u8 flags; u8 log2_data_unit_size; u8 __reserved[3];
//! u8 master_key_identifier[FSCRYPT_KEY_IDENTIFIER_SIZE]; u8 nonce[FSCRYPT_FILE_NONCE_SIZE];"
//!
//! btrfs extent encryption series, `fscrypt_extent_context`: "u8 version;
//! u8 encryption_mode; u8 master_key_identifier[16]; u8 nonce[16];"
//!
//! Parsing a context never fails (it is fixed-size); [`PolicyContext::validate`]
//! and [`ExtentContext::validate`] check every field, so a checker can report a
//! bad context as a finding while a reader refuses it.

use crate::{KeyId, Nonce};

/// `FSCRYPT_CONTEXT_V2`
pub const POLICY_VERSION_V2: u8 = 2;
/// `FSCRYPT_MODE_AES_256_XTS`
pub const MODE_AES_256_XTS: u8 = 1;
/// `FSCRYPT_MODE_AES_256_CTS`
pub const MODE_AES_256_CTS: u8 = 4;
/// `FSCRYPT_POLICY_FLAGS_PAD_32`
pub const FLAGS_PAD_32: u8 = 3;
/// Extent context version.
pub const EXTENT_CTX_VERSION: u8 = 1;

/// Encoded size of a policy context.
pub const POLICY_CTX_LEN: usize = 40;
/// Encoded size of an extent context.
pub const EXTENT_CTX_LEN: usize = 34;

/// A v2 policy context as stored (possibly invalid until validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyContext {
    pub version: u8,
    pub contents_mode: u8,
    pub filenames_mode: u8,
    pub flags: u8,
    pub log2_data_unit_size: u8,
    pub reserved: [u8; 3],
    pub key: KeyId,
    pub nonce: Nonce,
}

impl PolicyContext {
    /// The only policy cryptimg writes: v2, AES-256-XTS/AES-256-CTS, PAD_32,
    /// data unit = block size.
    pub fn new(key: KeyId, nonce: Nonce) -> Self {
        PolicyContext {
            version: POLICY_VERSION_V2,
            contents_mode: MODE_AES_256_XTS,
            filenames_mode: MODE_AES_256_CTS,
            flags: FLAGS_PAD_32,
            log2_data_unit_size: 0,
            reserved: [0; 3],
            key,
            nonce,
        }
    }

    pub fn from_bytes(b: &[u8; POLICY_CTX_LEN]) -> Self {
        let mut key = [0u8; 16];
        let mut nonce = [0u8; 16];
        key.copy_from_slice(&b[8..24]);
        nonce.copy_from_slice(&b[24..40]);
        PolicyContext {
            version: b[0],
            contents_mode: b[1],
            filenames_mode: b[2],
            flags: b[3],
            log2_data_unit_size: b[4],
            reserved: [b[5], b[6], b[7]],
            key: KeyId(key),
            nonce: Nonce(nonce),
        }
    }

    pub fn to_bytes(&self) -> [u8; POLICY_CTX_LEN] {
        let mut b = [0u8; POLICY_CTX_LEN];
        b[0] = self.version;
        b[1] = self.contents_mode;
        b[2] = self.filenames_mode;
        b[3] = self.flags;
        b[4] = self.log2_data_unit_size;
        b[5..8].copy_from_slice(&self.reserved);
        b[8..24].copy_from_slice(&self.key.0);
        b[24..40].copy_from_slice(&self.nonce.0);
        b
    }

    /// Checks every fixed field; returns the first problem as a fixed phrase.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.version != POLICY_VERSION_V2 {
            return Err("policy context version is not 2");
        }
        if self.contents_mode != MODE_AES_256_XTS {
            return Err("contents mode is not AES-256-XTS (1)");
        }
        if self.filenames_mode != MODE_AES_256_CTS {
            return Err("filenames mode is not AES-256-CTS (4)");
        }
        if self.flags != FLAGS_PAD_32 {
            return Err("policy flags are not PAD_32 (3)");
        }
        if self.log2_data_unit_size != 0 {
            return Err("log2_data_unit_size is not 0");
        }
        if self.reserved != [0; 3] {
            return Err("reserved bytes are not zero");
        }
        Ok(())
    }
}

/// A per-extent context as stored (possibly invalid until validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentContext {
    pub version: u8,
    pub mode: u8,
    pub key: KeyId,
    pub nonce: Nonce,
}

impl ExtentContext {
    pub fn new(key: KeyId, nonce: Nonce) -> Self {
        ExtentContext {
            version: EXTENT_CTX_VERSION,
            mode: MODE_AES_256_XTS,
            key,
            nonce,
        }
    }

    pub fn from_bytes(b: &[u8; EXTENT_CTX_LEN]) -> Self {
        let mut key = [0u8; 16];
        let mut nonce = [0u8; 16];
        key.copy_from_slice(&b[2..18]);
        nonce.copy_from_slice(&b[18..34]);
        ExtentContext {
            version: b[0],
            mode: b[1],
            key: KeyId(key),
            nonce: Nonce(nonce),
        }
    }

    pub fn to_bytes(&self) -> [u8; EXTENT_CTX_LEN] {
        let mut b = [0u8; EXTENT_CTX_LEN];
        b[0] = self.version;
        b[1] = self.mode;
        b[2..18].copy_from_slice(&self.key.0);
        b[18..34].copy_from_slice(&self.nonce.0);
        b
    }

    pub fn validate(&self) -> Result<(), &'static str> {
        if self.version != EXTENT_CTX_VERSION {
            return Err("extent context version is not 1");
        }
        if self.mode != MODE_AES_256_XTS {
            return Err("extent encryption mode is not AES-256-XTS (1)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bytes_are_the_kernel_layout() {
        let c = PolicyContext::new(KeyId([0xaa; 16]), Nonce([0xbb; 16]));
        let b = c.to_bytes();
        assert_eq!(&b[..8], &[2, 1, 4, 3, 0, 0, 0, 0]);
        assert_eq!(PolicyContext::from_bytes(&b), c);
        assert!(c.validate().is_ok());
        let mut bad = b;
        bad[0] = 1;
        assert!(PolicyContext::from_bytes(&bad).validate().is_err());
        let mut bad = b;
        bad[6] = 1;
        assert!(PolicyContext::from_bytes(&bad).validate().is_err());
    }

    #[test]
    fn extent_bytes() {
        let c = ExtentContext::new(KeyId([1; 16]), Nonce([2; 16]));
        let b = c.to_bytes();
        assert_eq!(&b[..2], &[1, 1]);
        assert_eq!(ExtentContext::from_bytes(&b), c);
        let mut bad = b;
        bad[1] = 4;
        assert!(ExtentContext::from_bytes(&bad).validate().is_err());
    }
}
