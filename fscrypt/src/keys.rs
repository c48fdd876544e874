//! Master keys and key derivation (fscrypt v2: HKDF-SHA512).
//!
//! From Documentation/filesystems/fscrypt.rst ("Key derivation function"):
//!
//! > For v2 encryption policies, the KDF is HKDF-SHA512.  The master key is
//! > passed as the "input keying material", no salt is used, and a distinct
//! > "application-specific information string" is used for each distinct
//! > key to be derived.  For example, when a per-file encryption key is
//! > derived, the application-specific information string is the file's
//! > nonce prefixed with "fscrypt\0" and a context byte.  Different
//! > context bytes are used for other types of derived keys.
//!
//! "No salt" is HKDF's default salt of HashLen zero bytes; Linux's
//! `fscrypt_init_hkdf()` passes exactly that (64 zero bytes) to HKDF-Extract.
//! The pseudorandom key (PRK) is keyed into HMAC-SHA512 once (as the kernel
//! keeps its `hmac(sha512)` tfm keyed with the PRK), that keyed state is kept
//! (the SHA-512 states are wiped on drop: `sha2`'s `zeroize` feature), and
//! every derivation is one HKDF-Expand from a copy of it.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::names::NameCipher;
use super::xts::XtsKey;
use super::{KeyId, Nonce};
use crate::{Error, Result};

/// SHA-512 output length (HKDF HashLen, and the PRK size).
const HASH_LEN: usize = 64;

/// fscrypt's HKDF info prefix: "fscrypt" and a NUL.
const FSCRYPT_INFO_PREFIX: &[u8; 8] = b"fscrypt\0";

/// HKDF_CONTEXT_KEY_IDENTIFIER (fs/crypto/fscrypt_private.h), info = empty.
const HKDF_CONTEXT_KEY_IDENTIFIER: u8 = 1;
/// HKDF_CONTEXT_PER_FILE_ENC_KEY, info = the 16-byte file nonce.
const HKDF_CONTEXT_PER_FILE_ENC_KEY: u8 = 2;
/// HKDF_CONTEXT_PER_EXTENT_ENC_KEY, info = the 16-byte extent nonce (the
/// fscrypt extent-encryption series for btrfs; the next free context after
/// 8, HKDF_CONTEXT_KEY_IDENTIFIER_FOR_HW_WRAPPED_KEY).
const HKDF_CONTEXT_PER_EXTENT_ENC_KEY: u8 = 9;

/// cryptimg's own HKDF info for the deterministic-nonce key. It does not
/// start with "fscrypt\0", so it can never collide with an fscrypt key.
const DETERMINISTIC_NONCE_INFO: &[u8] = b"cryptimg\0deterministic-nonce-v1";

/// Accepted raw master key sizes. fscrypt.rst: "Master keys can be up to 64
/// bytes long, and must be at least as long as the greater of the security
/// strength of the contents and filenames encryption modes being used. For
/// example, if any AES-256 mode is used, the master key must be at least 256
/// bits, i.e. 32 bytes."
const MIN_KEY_LEN: usize = 32;
const MAX_KEY_LEN: usize = 64;

/// HKDF-SHA512-Extract(salt, ikm), returning the PRK in a wiped buffer.
fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; HASH_LEN]> {
    let (mut prk_out, _hkdf) = Hkdf::<Sha512>::extract(Some(salt), ikm);
    let mut prk = Zeroizing::new([0u8; HASH_LEN]);
    prk.copy_from_slice(&prk_out);
    prk_out.as_mut_slice().zeroize();
    prk
}

/// HMAC-SHA512 keyed with the PRK, ready for HKDF-Expand. Keying costs two
/// SHA-512 compressions (the ipad and opad blocks); doing it once per master
/// key instead of once per derivation halves the cost of a 64-byte derivation.
fn hkdf_from_prk(prk: &[u8; HASH_LEN]) -> Hkdf<Sha512> {
    // A 64-byte PRK is exactly HashLen, so `from_prk` cannot fail.
    Hkdf::<Sha512>::from_prk(prk).expect("PRK is HashLen bytes")
}

/// HKDF-SHA512-Expand(prk, info = concatenation of `info`, L = out.len()),
/// with the PRK already keyed into `hkdf` (each call starts from a copy of
/// that keyed state).
///
/// # Panics
/// If `out` is longer than 255 * 64 bytes (the HKDF limit); callers only ask
/// for fixed small sizes.
fn hkdf_expand(hkdf: &Hkdf<Sha512>, info: &[&[u8]], out: &mut [u8]) {
    hkdf.expand_multi_info(info, out)
        .expect("HKDF-SHA512 output of at most 255 * 64 bytes");
}

/// A raw fscrypt master key, held only as HMAC-SHA512 keyed with its HKDF
/// pseudorandom key.
///
/// Not `Debug`, `Clone` or `Copy`; the PRK is wiped as soon as it is keyed,
/// and the keyed SHA-512 states are wiped on drop.
pub struct MasterKey {
    hkdf: Hkdf<Sha512>,
    id: KeyId,
}

impl MasterKey {
    /// Takes a raw master key of 32 to 64 bytes and runs HKDF-Extract over it
    /// with the all-zero salt, as Linux's `fscrypt_init_hkdf()`.
    pub fn from_bytes(raw: &[u8]) -> Result<MasterKey> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&raw.len()) {
            return Err(Error::Invalid(format!(
                "master key is {} bytes long; fscrypt v2 with AES-256 needs {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes",
                raw.len()
            )));
        }
        let prk = hkdf_extract(&[0u8; HASH_LEN], raw);
        let mut key = MasterKey {
            hkdf: hkdf_from_prk(&prk),
            id: KeyId([0; 16]),
        };
        // fscrypt.rst ("Key identifiers"): "For master keys used for v2
        // encryption policies, a unique 16-byte "key identifier" is also
        // derived using the KDF.  This value is stored in the clear, since it
        // is needed to reliably identify the key itself."
        let mut id = [0u8; 16];
        key.derive(HKDF_CONTEXT_KEY_IDENTIFIER, &[], &mut id);
        key.id = KeyId(id);
        Ok(key)
    }

    /// The key identifier (computed once, at construction).
    pub fn identifier(&self) -> KeyId {
        self.id
    }

    /// fscrypt's HKDF-Expand: info = `"fscrypt\0" ‖ context ‖ extra`,
    /// filling all of `out`.
    ///
    /// # Panics
    /// If `out.len() > 16320` (255 * 64, the HKDF-SHA512 limit).
    pub fn derive(&self, context: u8, extra: &[u8], out: &mut [u8]) {
        hkdf_expand(&self.hkdf, &[FSCRYPT_INFO_PREFIX, &[context], extra], out);
    }

    /// The filenames key of a directory (or symlink) with this nonce.
    ///
    /// fscrypt.rst ("Per-file encryption keys"): "When a new encrypted inode
    /// (regular file, directory, or symlink) is created, fscrypt randomly
    /// generates a 16-byte nonce and stores it in the inode's encryption
    /// xattr.  Then, it uses a KDF (as described in `Key derivation
    /// function`_) to derive the file's key from the master key and nonce."
    /// Context HKDF_CONTEXT_PER_FILE_ENC_KEY (2); 32 bytes for AES-256-CTS.
    pub fn names_key(&self, nonce: &Nonce) -> NameCipher {
        let mut key = Zeroizing::new([0u8; 32]);
        self.derive(HKDF_CONTEXT_PER_FILE_ENC_KEY, &nonce.0, key.as_mut_slice());
        NameCipher::from_bytes(&key)
    }

    /// The contents key of a regular file with this nonce (ext4, f2fs, and
    /// every filesystem with per-file keys): context
    /// HKDF_CONTEXT_PER_FILE_ENC_KEY (2), info = the file's nonce, 64 bytes
    /// for AES-256-XTS. The kernel derives a file's key with the size of the
    /// mode it uses (`fscrypt_set_per_file_enc_key()` with
    /// `ci_mode->keysize`): a regular file uses the contents mode, a directory
    /// or symlink the filenames mode, so [`MasterKey::names_key`] is the first
    /// 32 bytes of the same expansion.
    pub fn file_contents_key(&self, nonce: &Nonce) -> XtsKey {
        let mut key = Zeroizing::new([0u8; 64]);
        self.derive(HKDF_CONTEXT_PER_FILE_ENC_KEY, &nonce.0, key.as_mut_slice());
        XtsKey::from_bytes(&key)
    }

    /// The contents key of an extent with this nonce: context
    /// HKDF_CONTEXT_PER_EXTENT_ENC_KEY (9), info = the extent nonce, 64 bytes
    /// for AES-256-XTS. This is derived exactly like a per-file key
    /// ("the application-specific information string is the file's nonce
    /// prefixed with "fscrypt\0" and a context byte"), with the extent context.
    pub fn extent_key(&self, nonce: &Nonce) -> XtsKey {
        let mut key = Zeroizing::new([0u8; 64]);
        self.derive(HKDF_CONTEXT_PER_EXTENT_ENC_KEY, &nonce.0, key.as_mut_slice());
        XtsKey::from_bytes(&key)
    }

    /// The deriver of deterministic nonces for reproducible builds. Its key
    /// is HKDF-SHA512-Expand(same PRK, info =
    /// "cryptimg\0deterministic-nonce-v1", 32 bytes), a cryptimg-specific
    /// info string disjoint from every fscrypt info string (those all start
    /// with "fscrypt\0").
    pub fn deterministic_nonces(&self) -> NonceDeriver {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf_expand(&self.hkdf, &[DETERMINISTIC_NONCE_INFO], key.as_mut_slice());
        NonceDeriver { key }
    }

    /// Whether `id` is this key's identifier (constant-time comparison).
    pub fn matches(&self, id: &KeyId) -> bool {
        self.id.0.ct_eq(&id.0).into()
    }
}

/// Derives nonces deterministically from a key bound to the master key:
/// `nonce = HMAC-SHA256(key, message)[..16]` with
/// `message = ‖ over parts of (le64(part.len()) ‖ part)`; the length prefixes
/// make the encoding of the parts injective.
///
/// Not `Debug` or `Clone`; the key is wiped on drop.
pub struct NonceDeriver {
    key: Zeroizing<[u8; 32]>,
}

impl NonceDeriver {
    /// The nonce for these parts (e.g. a path and a purpose tag).
    pub fn nonce(&self, parts: &[&[u8]]) -> Nonce {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.as_slice()).expect("HMAC takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        let tag = mac.finalize().into_bytes();
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&tag[..16]);
        Nonce(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn kernel_key_identifier_known_answer() {
        // Master key 0x01, 0x02, ..., 0x40 (64 bytes).
        let raw: Vec<u8> = (1..=64).collect();
        let key = MasterKey::from_bytes(&raw).unwrap();
        assert_eq!(key.identifier().to_string(), "69b2f6edeee720cce0577937eb8a6751");
        assert!(key.matches(&"69b2f6edeee720cce0577937eb8a6751".parse().unwrap()));
        assert!(!key.matches(&"69b2f6edeee720cce0577937eb8a6750".parse().unwrap()));
    }

    /// HKDF-SHA512 test vectors A, B and C from
    /// <https://www.kullo.net/blog/hkdf-sha-512-test-vectors/> (RFC 5869
    /// Appendix A cases 1-3 recomputed with SHA-512; also used by mbed TLS and
    /// the nRF5 SDK test suites). Run through the same extract/expand helpers
    /// that `MasterKey` uses. (ikm, salt, info, prk, okm)
    const HKDF_SHA512_VECTORS: [(&str, &str, &str, &str, &str); 3] = [
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            "665799823737ded04a88e47e54a5890bb2c3d247c7a4254a8e61350723590a26c36238127d8661b88cf80ef802d57e2f7cebcf1e00e083848be19929c61b4237",
            "832390086cda71fb47625bb5ceb168e4c8e26a1a16ed34d9fc7fe92c1481579338da362cb8d9f925d7cb",
        ),
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
            "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            "35672542907d4e142c00e84499e74e1de08be86535f924e022804ad775dde27ec86cd1e5b7d178c74489bdbeb30712beb82d4f97416c5a94ea81ebdf3e629e4a",
            "ce6c97192805b346e6161e821ed165673b84f400a2b514b2fe23d84cd189ddf1b695b48cbd1c8388441137b3ce28f16aa64ba33ba466b24df6cfcb021ecff235f6a2056ce3af1de44d572097a8505d9e7a93",
        ),
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "",
            "",
            "fd200c4987ac491313bd4a2a13287121247239e11c9ef82802044b66ef357e5b194498d0682611382348572a7b1611de54764094286320578a863f36562b0df6",
            "f5fa02b18298a72a8c23898a8703472c6eb179dc204c03425c970e3b164bf90fff22d04836d0e2343bac",
        ),
    ];

    #[test]
    fn hkdf_sha512_vectors() {
        for (ikm, salt, info, prk, okm) in HKDF_SHA512_VECTORS {
            let got_prk = hkdf_extract(&unhex(salt), &unhex(ikm));
            assert_eq!(hex::encode(*got_prk), prk);
            let mut out = vec![0u8; okm.len() / 2];
            // Info split in two parts, as `derive` does, must equal one part.
            let info = unhex(info);
            let (a, b) = info.split_at(info.len() / 2);
            hkdf_expand(&hkdf_from_prk(&got_prk), &[a, b], &mut out);
            assert_eq!(hex::encode(&out), okm);
        }
    }

    #[test]
    fn empty_salt_is_the_kernel_zero_salt() {
        // Vector C has no salt; Linux passes 64 zero bytes. Same PRK.
        let (ikm, _, _, prk, _) = HKDF_SHA512_VECTORS[2];
        assert_eq!(hex::encode(*hkdf_extract(&[0u8; 64], &unhex(ikm))), prk);
    }

    #[test]
    fn derive_is_expand_with_fscrypt_info() {
        let raw = [0x42u8; 32];
        let key = MasterKey::from_bytes(&raw).unwrap();
        let nonce = [9u8; 16];
        let mut ours = [0u8; 64];
        key.derive(9, &nonce, &mut ours);
        // Independent computation straight through the hkdf crate.
        let hk = Hkdf::<Sha512>::new(Some(&[0u8; 64]), &raw);
        let mut info = b"fscrypt\0".to_vec();
        info.push(9);
        info.extend_from_slice(&nonce);
        let mut expected = [0u8; 64];
        hk.expand(&info, &mut expected).unwrap();
        assert_eq!(ours, expected);
        let mut id = [0u8; 16];
        hk.expand(b"fscrypt\0\x01", &mut id).unwrap();
        assert_eq!(key.identifier(), KeyId(id));
    }

    #[test]
    fn derived_keys_differ_by_context_and_nonce() {
        let key = MasterKey::from_bytes(&[0x42u8; 64]).unwrap();
        let n1 = Nonce([1; 16]);
        let n2 = Nonce([2; 16]);
        let block = |x: XtsKey| {
            let mut b = [0u8; 4096];
            x.encrypt_units(0, 4096, &mut b);
            b
        };
        assert_ne!(block(key.extent_key(&n1)), block(key.extent_key(&n2)));
        let name = |c: NameCipher| c.encrypt_name(b"file").unwrap();
        assert_ne!(name(key.names_key(&n1)), name(key.names_key(&n2)));
        // The names key is the first 32 bytes of context 2, not context 9.
        let mut ctx2 = [0u8; 32];
        key.derive(2, &n1.0, &mut ctx2);
        assert_eq!(name(key.names_key(&n1)), name(NameCipher::from_bytes(&ctx2)));
        let mut ctx9 = [0u8; 32];
        key.derive(9, &n1.0, &mut ctx9);
        assert_ne!(ctx2, ctx9);
        // A file's contents key is the 64-byte expansion of context 2, and
        // differs from the extent key of the same nonce.
        let mut ctx2_64 = [0u8; 64];
        key.derive(2, &n1.0, &mut ctx2_64);
        assert_eq!(ctx2_64[..32], ctx2);
        assert_eq!(block(key.file_contents_key(&n1)), block(XtsKey::from_bytes(&ctx2_64)));
        assert_ne!(block(key.file_contents_key(&n1)), block(key.extent_key(&n1)));
    }

    #[test]
    fn master_key_length_limits() {
        for (len, ok) in [(0, false), (31, false), (32, true), (48, true), (64, true), (65, false)] {
            match MasterKey::from_bytes(&vec![7u8; len]) {
                Ok(_) => assert!(ok, "{len} bytes accepted"),
                Err(Error::Invalid(msg)) => {
                    assert!(!ok, "{len} bytes rejected");
                    assert!(msg.contains(&format!("{len} bytes")), "{msg}");
                }
                Err(e) => panic!("{len} bytes: unexpected error {e}"),
            }
        }
    }

    #[test]
    fn deterministic_nonces() {
        let key = MasterKey::from_bytes(&[0x42u8; 64]).unwrap();
        let d = key.deterministic_nonces();
        let a = d.nonce(&[b"dir", b"name"]);
        assert_eq!(a, key.deterministic_nonces().nonce(&[b"dir", b"name"]));
        // Length prefixes keep part boundaries: ("dirn","ame") != ("dir","name").
        assert_ne!(a, d.nonce(&[b"dirn", b"ame"]));
        assert_ne!(a, d.nonce(&[b"dirname"]));
        assert_ne!(d.nonce(&[]), d.nonce(&[b""]));
        // Bound to the master key.
        let other = MasterKey::from_bytes(&[0x43u8; 64]).unwrap();
        assert_ne!(a, other.deterministic_nonces().nonce(&[b"dir", b"name"]));
        // Independent recomputation of the documented construction.
        let hk = Hkdf::<Sha512>::new(Some(&[0u8; 64]), &[0x42u8; 64]);
        let mut k = [0u8; 32];
        hk.expand(b"cryptimg\0deterministic-nonce-v1", &mut k).unwrap();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&k).unwrap();
        mac.update(&3u64.to_le_bytes());
        mac.update(b"dir");
        mac.update(&4u64.to_le_bytes());
        mac.update(b"name");
        assert_eq!(a.0[..], mac.finalize().into_bytes()[..16]);
    }
}
