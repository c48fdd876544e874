//! Linux fscrypt v2 cryptography, byte for byte, with no I/O.
//!
//! Everything here follows Documentation/filesystems/fscrypt.rst for v2
//! encryption policies with the default modes (AES-256-XTS for contents,
//! AES-256-CBC-CTS for filenames) and FSCRYPT_POLICY_FLAGS_PAD_32:
//!
//! - `keys`: the master key, HKDF-SHA512 key derivation, key identifiers,
//!   and cryptimg's deterministic nonces;
//! - `context`: the 40-byte v2 policy context and the 34-byte extent context;
//! - `xts`: contents encryption (AES-256-XTS over data units);
//! - `names`: filename and symlink-target encryption (AES-256-CBC-CS3) and
//!   the Linux >= 5.15 no-key name encoding.
//!
//! Only RustCrypto primitives are used; this crate only composes them. Both
//! on-disk formats (cryptimg and ext4) use it; it knows neither.

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::str::FromStr;

use zeroize::Zeroizing;

pub mod context;
pub mod error;
mod keys;
mod names;
mod xts;

pub use error::{CorruptKind, Error, Result};

pub use keys::{MasterKey, NonceDeriver};
pub use names::{nokey_name, nokey_name_hashed, padded_len, valid_name_ct_len, NameCipher, NAME_MAX, SYMLINK_MAX};
pub use xts::XtsKey;

/// The fscrypt data unit size used here (the filesystem block size).
pub const DATA_UNIT: usize = 4096;

/// A 16-byte fscrypt master key identifier (FSCRYPT_KEY_IDENTIFIER_SIZE).
///
/// Not secret: fscrypt.rst says "This value is stored in the clear, since it
/// is needed to reliably identify the key itself."
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    /// 32 lowercase hex digits, as `fscrypt` and `fscryptctl` print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for KeyId {
    type Err = Error;

    /// Parses exactly 32 hex digits (the [`Display`](fmt::Display) form).
    fn from_str(s: &str) -> Result<KeyId> {
        let mut id = [0u8; 16];
        if s.len() != 32 || hex::decode_to_slice(s, &mut id).is_err() {
            // The input is not echoed: it might be a key pasted by mistake.
            return Err(Error::Invalid(format!(
                "invalid key identifier: expected 32 hex digits, got {} characters",
                s.chars().count()
            )));
        }
        Ok(KeyId(id))
    }
}

/// A 16-byte fscrypt nonce (FSCRYPT_FILE_NONCE_SIZE), one per inode/extent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    /// A fresh nonce from the OS CSPRNG. fscrypt.rst: "When a new encrypted
    /// inode (regular file, directory, or symlink) is created, fscrypt
    /// randomly generates a 16-byte nonce".
    pub fn random() -> Result<Nonce> {
        let mut n = [0u8; 16];
        os_random(&mut n)?;
        Ok(Nonce(n))
    }
}

/// 64 random bytes from the OS CSPRNG, for `keygen`. fscrypt.rst: "users
/// should generate master keys either using a cryptographically secure random
/// number generator, or by using a KDF".
pub fn generate_key() -> Result<Zeroizing<[u8; 64]>> {
    let mut key = Zeroizing::new([0u8; 64]);
    os_random(key.as_mut_slice())?;
    Ok(key)
}

fn os_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| {
        let source = match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(e.to_string()),
        };
        Error::Random(source)
    })
}

/// Deterministic test bytes (SHA-256 in counter mode) so failures reproduce.
#[cfg(test)]
pub(crate) fn test_bytes(seed: &str, n: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(n + 32);
    let mut counter = 0u64;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_display_and_parse() {
        let id = KeyId([
            0x69, 0xb2, 0xf6, 0xed, 0xee, 0xe7, 0x20, 0xcc, 0xe0, 0x57, 0x79, 0x37, 0xeb, 0x8a, 0x67, 0x51,
        ]);
        assert_eq!(id.to_string(), "69b2f6edeee720cce0577937eb8a6751");
        assert_eq!("69b2f6edeee720cce0577937eb8a6751".parse::<KeyId>().unwrap(), id);
        for bad in ["", "69b2", "69b2f6edeee720cce0577937eb8a67511", "zz".repeat(16).as_str()] {
            assert!(matches!(bad.parse::<KeyId>(), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn randomness_differs() {
        assert_ne!(Nonce::random().unwrap(), Nonce::random().unwrap());
        assert_ne!(*generate_key().unwrap(), *generate_key().unwrap());
        assert_ne!(*generate_key().unwrap(), [0u8; 64]);
    }
}
