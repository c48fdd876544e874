//! Filename and symlink-target encryption (AES-256-CBC-CTS) and no-key names.
//!
//! From Documentation/filesystems/fscrypt.rst ("Filenames encryption"):
//!
//! > For filenames, each full filename is encrypted at once.  Because of
//! > the requirements to retain support for efficient directory lookups and
//! > filenames of up to 255 bytes, the same IV is used for every filename
//! > in a directory.
//!
//! > All supported filenames encryption modes accept any plaintext
//! > length >= 16 bytes; cipher block alignment is not required.  However,
//! > filenames shorter than 16 bytes are NUL-padded to 16 bytes before
//! > being encrypted.  In addition, to reduce leakage of filename lengths
//! > via their ciphertexts, all filenames are NUL-padded to the next 4, 8,
//! > 16, or 32-byte boundary (configurable).  32 is recommended since this
//! > provides the best confidentiality [...].  Note that since NUL (`\0`)
//! > is not otherwise a valid character in filenames, the padding will never
//! > produce duplicate plaintexts.
//!
//! > Symbolic link targets are considered a type of filename and are
//! > encrypted in the same way as filenames in directory entries, except
//! > that IV reuse is not a problem as each symlink has its own inode.
//!
//! The mode is Linux's `cts(cbc(aes))`: CBC with an all-zero IV, then the
//! last two ciphertext blocks swapped and the final one truncated, which is
//! NIST SP 800-38A-Addendum CBC-CS3 (the `cts` crate's [`cts::CbcCs3`]).
//! cryptimg always uses FSCRYPT_POLICY_FLAGS_PAD_32.

use aes::cipher::{InnerIvInit, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cts::{Decrypt, Encrypt};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{CorruptKind, Error, Result};

/// Longest filename (NAME_MAX), and the padding limit for filenames.
pub const NAME_MAX: usize = 255;

/// Longest symlink target and the padding limit for its ciphertext. From
/// fscrypt.rst: "on an EXT4 filesystem with a 4K block size, unencrypted
/// symlinks can be up to 4095 bytes long, while encrypted symlinks can only be
/// up to 4093 bytes long (both lengths excluding the terminating null)."
pub const SYMLINK_MAX: usize = 4093;

/// FSCRYPT_FNAME_MIN_MSG_LEN: the cipher needs at least one whole block.
const MIN_MSG_LEN: usize = 16;

/// FSCRYPT_POLICY_FLAGS_PAD_32.
const PAD: usize = 32;

/// `struct fscrypt_nokey_name`: bytes of ciphertext kept verbatim.
const NOKEY_BYTES: usize = 149;

/// The padded (= ciphertext) length of a `len`-byte name:
/// `min(roundup(max(len, 16), 32), max_len)`, as Linux's
/// `fscrypt_fname_encrypted_size()` with FSCRYPT_POLICY_FLAGS_PAD_32.
pub fn padded_len(len: usize, max_len: usize) -> usize {
    len.max(MIN_MSG_LEN).next_multiple_of(PAD).min(max_len)
}

/// Whether `len` is a ciphertext length some name of 1..=255 bytes pads to:
/// 32, 64, ..., 224 or 255.
pub fn valid_name_ct_len(len: usize) -> bool {
    valid_ct_len(len, NAME_MAX)
}

/// The lengths `padded_len(1..=max_len, max_len)` produces (for `max_len >= 32`):
/// multiples of 32 below `max_len`, and `max_len` itself.
fn valid_ct_len(len: usize, max_len: usize) -> bool {
    len == max_len || (len >= PAD && len < max_len && len.is_multiple_of(PAD))
}

/// The no-key name Linux >= 5.15 shows for a ciphertext name when the key is
/// absent, with a zero dirhash (a filesystem without hashed directories, as
/// cryptimg): [`nokey_name_hashed`] with `(0, 0)`.
///
/// fscrypt.rst ("Filename hashing and encoding"): "readdir() must
/// base64url-encode the ciphertext for presentation. [...] for very long
/// filenames, base64url encoding would cause the filename length to exceed
/// NAME_MAX.  To prevent this, readdir() actually presents long filenames in
/// an abbreviated form which encodes a strong "hash" of the ciphertext
/// filename".
pub fn nokey_name(ct: &[u8]) -> String {
    nokey_name_hashed(ct, (0, 0))
}

/// The no-key name for ciphertext `ct` whose directory hash is
/// `(hash, minor_hash)`: base64url without padding of
/// `struct fscrypt_nokey_name` = `le32 dirhash[2]` ‖ up to 149 bytes of
/// ciphertext ‖, only when the ciphertext is longer than 149 bytes, SHA-256
/// of the remaining bytes (fs/crypto/fname.c `fscrypt_fname_disk_to_usr`;
/// ext4 passes the htree hash of the ciphertext whenever readdir goes
/// through its htree code).
pub fn nokey_name_hashed(ct: &[u8], (hash, minor_hash): (u32, u32)) -> String {
    let mut raw = Vec::with_capacity(8 + NOKEY_BYTES + 32);
    raw.extend_from_slice(&hash.to_le_bytes());
    raw.extend_from_slice(&minor_hash.to_le_bytes());
    if ct.len() <= NOKEY_BYTES {
        raw.extend_from_slice(ct);
    } else {
        raw.extend_from_slice(&ct[..NOKEY_BYTES]);
        raw.extend_from_slice(&Sha256::digest(&ct[NOKEY_BYTES..]));
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// An AES-256-CBC-CTS filenames key (a directory's or a symlink's).
///
/// Not `Debug` or `Clone`; the AES key schedule is wiped on drop (the `aes`
/// crate's `zeroize` feature).
pub struct NameCipher {
    aes: Aes256,
}

impl NameCipher {
    /// Builds the cipher from a 32-byte derived key.
    pub fn from_bytes(key: &[u8; 32]) -> NameCipher {
        NameCipher {
            aes: Aes256::new(key.into()),
        }
    }

    /// fscrypt filename encryption: NUL-pad `plain` to
    /// [`padded_len`]`(plain.len(), max_len)` bytes, then AES-256-CBC-CS3 with
    /// an all-zero IV.
    ///
    /// `plain` must be 1..=`max_len` bytes with no NUL (a NUL would be
    /// indistinguishable from padding), and `max_len` at least 32; otherwise
    /// [`Error::Invalid`].
    pub fn encrypt(&self, plain: &[u8], max_len: usize) -> Result<Vec<u8>> {
        check_max_len(max_len)?;
        if plain.is_empty() || plain.len() > max_len {
            return Err(Error::Invalid(format!(
                "cannot encrypt a {}-byte name: must be 1 to {max_len} bytes",
                plain.len()
            )));
        }
        if plain.contains(&0) {
            return Err(Error::Invalid("cannot encrypt a name containing a NUL byte".into()));
        }
        let mut buf = vec![0u8; padded_len(plain.len(), max_len)];
        buf[..plain.len()].copy_from_slice(plain);
        cts::CbcCs3::inner_iv_init(&self.aes, &Default::default())
            .encrypt(&mut buf)
            .map_err(|_| Error::Invalid("name ciphertext shorter than one AES block".into()))?;
        Ok(buf)
    }

    /// Reverses [`NameCipher::encrypt`] and strips the NUL padding.
    ///
    /// A ciphertext length that no name pads to is
    /// [`Error::Corrupt`]; a plaintext that is empty, has a NUL followed by a
    /// non-NUL byte, or is padded to more than [`padded_len`] of its length is
    /// [`Error::AuthFailed`] (a wrong key or tampering; fscrypt names carry no
    /// MAC, so a wrong key is caught only when the garbage breaks these rules).
    pub fn decrypt(&self, ct: &[u8], max_len: usize) -> Result<Vec<u8>> {
        check_max_len(max_len)?;
        if !valid_ct_len(ct.len(), max_len) {
            return Err(Error::Corrupt {
                what: "encrypted name",
                kind: CorruptKind::BadLength {
                    field: "encrypted name length",
                    value: ct.len() as u64,
                },
            });
        }
        let mut buf = Zeroizing::new(ct.to_vec());
        cts::CbcCs3::inner_iv_init(&self.aes, &Default::default())
            .decrypt(&mut buf)
            .map_err(|_| auth_failed("name ciphertext shorter than one AES block"))?;
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if len == 0 {
            return Err(auth_failed("decrypted name is empty"));
        }
        if buf[len..].iter().any(|&b| b != 0) {
            return Err(auth_failed("decrypted name has a NUL byte inside it"));
        }
        if padded_len(len, max_len) != ct.len() {
            return Err(auth_failed("decrypted name has too much padding"));
        }
        Ok(buf[..len].to_vec())
    }

    /// Encrypts a directory entry name: 1..=255 bytes, any byte but `/` and
    /// NUL (else [`Error::Invalid`]).
    pub fn encrypt_name(&self, name: &[u8]) -> Result<Vec<u8>> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(Error::Invalid(format!(
                "file name of {} bytes: names must be 1 to {NAME_MAX} bytes",
                name.len()
            )));
        }
        if name.contains(&b'/') || name.contains(&0) {
            return Err(Error::Invalid(format!(
                "file name {:?} contains '/' or a NUL byte",
                String::from_utf8_lossy(name)
            )));
        }
        self.encrypt(name, NAME_MAX)
    }

    /// Decrypts a directory entry name, also rejecting a `/` in the result.
    pub fn decrypt_name(&self, ct: &[u8]) -> Result<Vec<u8>> {
        let name = self.decrypt(ct, NAME_MAX)?;
        if name.contains(&b'/') {
            return Err(auth_failed("decrypted name contains '/'"));
        }
        Ok(name)
    }

    /// Encrypts a symlink target (1..=4093 bytes, no NUL) into the on-disk
    /// blob `le16(ct_len) ‖ ct ‖ 0x00` (`struct fscrypt_symlink_data` plus
    /// the terminating NUL Linux counts in the symlink size).
    pub fn encrypt_symlink(&self, target: &[u8]) -> Result<Vec<u8>> {
        if target.is_empty() || target.len() > SYMLINK_MAX {
            return Err(Error::Invalid(format!(
                "symlink target of {} bytes: targets must be 1 to {SYMLINK_MAX} bytes",
                target.len()
            )));
        }
        if target.contains(&0) {
            return Err(Error::Invalid("symlink target contains a NUL byte".into()));
        }
        let ct = self.encrypt(target, SYMLINK_MAX)?;
        // ct.len() <= SYMLINK_MAX < 65536.
        let ct_len = u16::try_from(ct.len()).expect("symlink ciphertext fits in u16");
        let mut blob = Vec::with_capacity(2 + ct.len() + 1);
        blob.extend_from_slice(&ct_len.to_le_bytes());
        blob.extend_from_slice(&ct);
        blob.push(0);
        Ok(blob)
    }

    /// Decrypts a symlink blob, checking its framing strictly: the length
    /// field must be a possible ciphertext length and account for every byte,
    /// and the blob must end in exactly one NUL.
    pub fn decrypt_symlink(&self, blob: &[u8]) -> Result<Vec<u8>> {
        let corrupt = |kind| Error::Corrupt {
            what: "encrypted symlink target",
            kind,
        };
        let Some((len_bytes, rest)) = blob.split_first_chunk::<2>() else {
            return Err(corrupt(CorruptKind::Truncated {
                needed: 3,
                available: blob.len() as u64,
            }));
        };
        let ct_len = usize::from(u16::from_le_bytes(*len_bytes));
        if !valid_ct_len(ct_len, SYMLINK_MAX) {
            return Err(corrupt(CorruptKind::BadLength {
                field: "symlink ciphertext length",
                value: ct_len as u64,
            }));
        }
        if rest.len() < ct_len + 1 {
            return Err(corrupt(CorruptKind::Truncated {
                needed: (2 + ct_len + 1) as u64,
                available: blob.len() as u64,
            }));
        }
        if rest.len() > ct_len + 1 {
            return Err(corrupt(CorruptKind::BadLength {
                field: "symlink blob length",
                value: blob.len() as u64,
            }));
        }
        let (ct, terminator) = rest.split_at(ct_len);
        if terminator != [0] {
            return Err(corrupt(CorruptKind::MissingNul));
        }
        self.decrypt(ct, SYMLINK_MAX)
    }
}

fn check_max_len(max_len: usize) -> Result<()> {
    if max_len < PAD {
        return Err(Error::Invalid(format!("name padding limit {max_len} is below the 32-byte minimum")));
    }
    Ok(())
}

fn auth_failed(why: &str) -> Error {
    Error::AuthFailed(format!("encrypted name ({why})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_bytes;
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    use aes::{Aes128, Block};

    /// RFC 3962 Appendix B: AES-128 CTS test vectors, key "chicken teriyaki",
    /// IV 0 (copied from the RFC; also in the `cts` crate's tests). Shows the
    /// `cts` crate's CbcCs3 is the Kerberos/Linux `cts(cbc(aes))` variant.
    /// (plaintext, ciphertext)
    const RFC3962_KEY: &str = "636869636b656e207465726979616b69";
    const RFC3962_VECTORS: [(&str, &str); 6] = [
        (
            "4920776f756c64206c696b652074686520",
            "c6353568f2bf8cb4d8a580362da7ff7f97",
        ),
        (
            "4920776f756c64206c696b65207468652047656e6572616c20476175277320",
            "fc00783e0efdb2c1d445d4c8eff7ed2297687268d6ecccc0c07b25e25ecfe5",
        ),
        (
            "4920776f756c64206c696b65207468652047656e6572616c2047617527732043",
            "39312523a78662d5be7fcbcc98ebf5a897687268d6ecccc0c07b25e25ecfe584",
        ),
        (
            "4920776f756c64206c696b65207468652047656e6572616c20476175277320436869636b656e2c20706c656173652c",
            "97687268d6ecccc0c07b25e25ecfe584b3fffd940c16a18c1b5549d2f838029e39312523a78662d5be7fcbcc98ebf5",
        ),
        (
            "4920776f756c64206c696b65207468652047656e6572616c20476175277320436869636b656e2c20706c656173652c20",
            "97687268d6ecccc0c07b25e25ecfe5849dad8bbb96c4cdc03bc103e1a194bbd839312523a78662d5be7fcbcc98ebf5a8",
        ),
        (
            "4920776f756c64206c696b65207468652047656e6572616c20476175277320436869636b656e2c20706c656173652c20616e6420776f6e746f6e20736f75702e",
            "97687268d6ecccc0c07b25e25ecfe58439312523a78662d5be7fcbcc98ebf5a84807efe836ee89a526730dbc2f7bc8409dad8bbb96c4cdc03bc103e1a194bbd8",
        ),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn cts_crate_matches_rfc3962() {
        let aes = Aes128::new_from_slice(&unhex(RFC3962_KEY)).unwrap();
        for (pt, ct) in RFC3962_VECTORS {
            let mut buf = unhex(pt);
            cts::CbcCs3::inner_iv_init(&aes, &Default::default()).encrypt(&mut buf).unwrap();
            assert_eq!(hex::encode(&buf), ct);
            cts::CbcCs3::inner_iv_init(&aes, &Default::default()).decrypt(&mut buf).unwrap();
            assert_eq!(hex::encode(&buf), pt);
        }
    }

    /// An independent CBC-CS3 encryption from raw AES block operations:
    /// zero-pad to whole blocks, CBC-encrypt with IV 0, swap the last two
    /// ciphertext blocks, truncate to the input length. (Zero-padding the
    /// final partial block before CBC is what makes "swap and truncate"
    /// equal ciphertext stealing.)
    fn reference_cs3(key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
        assert!(plain.len() >= 16);
        let aes = Aes256::new(key.into());
        let nblocks = plain.len().div_ceil(16);
        let mut padded = plain.to_vec();
        padded.resize(nblocks * 16, 0);
        let mut out = Vec::with_capacity(padded.len());
        let mut prev = [0u8; 16];
        for chunk in padded.chunks(16) {
            let mut block = Block::default();
            for i in 0..16 {
                block[i] = chunk[i] ^ prev[i];
            }
            aes.encrypt_block(&mut block);
            prev.copy_from_slice(&block);
            out.extend_from_slice(&block);
        }
        if nblocks >= 2 {
            let n = out.len();
            let (head, last) = out.split_at_mut(n - 16);
            head[n - 32..].swap_with_slice(last);
        }
        out.truncate(plain.len());
        out
    }

    /// A test name of `len` bytes with no '/' or NUL.
    fn test_name(seed: &str, len: usize) -> Vec<u8> {
        test_bytes(seed, len)
            .into_iter()
            .map(|b| if b == 0 || b == b'/' { b'x' } else { b })
            .collect()
    }

    #[test]
    fn name_encryption_matches_reference_cs3_for_all_lengths() {
        let key: [u8; 32] = test_bytes("names key", 32).try_into().unwrap();
        let cipher = NameCipher::from_bytes(&key);
        for len in 1..=NAME_MAX {
            let name = test_name(&format!("name{len}"), len);
            let ct = cipher.encrypt_name(&name).unwrap();
            let mut padded = name.clone();
            padded.resize(padded_len(len, NAME_MAX), 0);
            assert_eq!(ct, reference_cs3(&key, &padded), "length {len}");
            assert_eq!(cipher.decrypt_name(&ct).unwrap(), name, "length {len}");
        }
    }

    #[test]
    fn padding_rules() {
        for (len, padded) in [
            (1, 32),
            (15, 32),
            (16, 32),
            (31, 32),
            (32, 32),
            (33, 64),
            (224, 224),
            (225, 255),
            (255, 255),
        ] {
            assert_eq!(padded_len(len, NAME_MAX), padded, "len {len}");
        }
        assert_eq!(padded_len(4093, SYMLINK_MAX), 4093);
        assert_eq!(padded_len(4065, SYMLINK_MAX), 4093);
        assert_eq!(padded_len(4064, SYMLINK_MAX), 4064);
        let valid: Vec<usize> = (0..=300).filter(|&l| valid_name_ct_len(l)).collect();
        let produced: std::collections::BTreeSet<usize> = (1..=NAME_MAX).map(|l| padded_len(l, NAME_MAX)).collect();
        assert_eq!(valid, produced.into_iter().collect::<Vec<_>>());
        assert_eq!(valid, vec![32, 64, 96, 128, 160, 192, 224, 255]);
    }

    #[test]
    fn name_rejections() {
        let c = NameCipher::from_bytes(&[1; 32]);
        for bad in [&b""[..], &[b'a'; 256], b"a/b", b"/", b"a\0b", b"\0"] {
            assert!(matches!(c.encrypt_name(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        assert!(c.encrypt_name(&[b'a'; 255]).is_ok());
        assert!(c.encrypt_name(&[0xff]).is_ok());
        // Generic entry points.
        assert!(matches!(c.encrypt(b"abc", 16), Err(Error::Invalid(_))));
        assert!(matches!(c.encrypt(&[b'a'; 40], 39), Err(Error::Invalid(_))));
        assert!(matches!(c.decrypt(&[0; 32], 16), Err(Error::Invalid(_))));
    }

    #[test]
    fn decrypt_rejects_impossible_lengths() {
        let c = NameCipher::from_bytes(&[1; 32]);
        for len in [0, 1, 15, 16, 31, 33, 63, 65, 254, 256, 300] {
            assert!(
                matches!(c.decrypt_name(&vec![0x55; len]), Err(Error::Corrupt { .. })),
                "length {len}"
            );
        }
    }

    /// Encrypts a crafted plaintext (bypassing the encrypt-side checks) and
    /// checks that decrypt rejects it.
    #[test]
    fn decrypt_rejects_bad_plaintexts() {
        let key = [3u8; 32];
        let c = NameCipher::from_bytes(&key);
        let mut slash = b"a/b".to_vec();
        slash.resize(32, 0);
        let mut nul_inside = b"ab\0cd".to_vec();
        nul_inside.resize(32, 0);
        let mut over_padded = b"short".to_vec();
        over_padded.resize(64, 0);
        for (pt, what) in [
            (vec![0u8; 32], "empty"),
            (nul_inside, "NUL inside"),
            (over_padded, "too much padding"),
        ] {
            let ct = reference_cs3(&key, &pt);
            assert!(matches!(c.decrypt(&ct, NAME_MAX), Err(Error::AuthFailed { .. })), "{what}");
        }
        let ct = reference_cs3(&key, &slash);
        assert_eq!(c.decrypt(&ct, NAME_MAX).unwrap(), b"a/b");
        assert!(matches!(c.decrypt_name(&ct), Err(Error::AuthFailed { .. })));
        // A full-length name without padding is fine.
        let full = test_name("full", 64);
        assert_eq!(c.decrypt(&reference_cs3(&key, &full), NAME_MAX).unwrap(), full);
    }

    /// fscrypt names have no MAC: a wrong key is detected only when the
    /// random-looking plaintext breaks the padding/NUL/'/' rules. A random
    /// n-byte plaintext passes with probability about (254/256)^n, i.e. ~78%
    /// for a 32-byte ciphertext and ~14% for 255 bytes; over lengths 1..=255
    /// about 70% are rejected. So this asserts what does hold: the wrong key
    /// never yields the original name, and well over half of the decryptions
    /// fail validation (deterministic inputs, so the count is fixed).
    #[test]
    fn wrong_key_decryption() {
        let right = NameCipher::from_bytes(&[0x11; 32]);
        let wrong = NameCipher::from_bytes(&[0x22; 32]);
        let mut rejected = 0;
        for i in 0..200 {
            let name = test_name(&format!("wrong{i}"), 1 + i * 254 / 199);
            let ct = right.encrypt_name(&name).unwrap();
            match wrong.decrypt_name(&ct) {
                Err(Error::AuthFailed { .. }) => rejected += 1,
                Err(e) => panic!("unexpected error {e}"),
                Ok(garbage) => assert_ne!(garbage, name),
            }
        }
        assert!(rejected >= 100, "only {rejected} of 200 rejected");
    }

    #[test]
    fn symlink_round_trip_and_framing() {
        let c = NameCipher::from_bytes(&[5; 32]);
        for len in [1, 16, 31, 32, 33, 255, 256, 4064, 4065, 4093] {
            let target = test_name(&format!("link{len}"), len);
            let blob = c.encrypt_symlink(&target).unwrap();
            let ct_len = padded_len(len, SYMLINK_MAX);
            assert_eq!(blob.len(), 2 + ct_len + 1);
            assert_eq!(&blob[..2], &(ct_len as u16).to_le_bytes());
            assert_eq!(blob[blob.len() - 1], 0);
            assert_eq!(c.decrypt_symlink(&blob).unwrap(), target, "length {len}");
        }
        // Targets may contain '/'.
        let blob = c.encrypt_symlink(b"../a/b").unwrap();
        assert_eq!(c.decrypt_symlink(&blob).unwrap(), b"../a/b");
        for bad in [&b""[..], b"a\0b", &[b'a'; 4094]] {
            assert!(matches!(c.encrypt_symlink(bad), Err(Error::Invalid(_))));
        }
        // Framing damage.
        let corrupt = |b: &[u8]| matches!(c.decrypt_symlink(b), Err(Error::Corrupt { .. }));
        assert!(corrupt(&[]));
        assert!(corrupt(&[32]));
        assert!(corrupt(&blob[..blob.len() - 1])); // no terminator
        let mut extra = blob.clone();
        extra.push(0);
        assert!(corrupt(&extra));
        let mut bad_nul = blob.clone();
        *bad_nul.last_mut().unwrap() = 1;
        assert!(corrupt(&bad_nul));
        let mut bad_len = blob.clone();
        bad_len[0] = 33; // not a possible ciphertext length
        assert!(corrupt(&bad_len));
        let mut zero_len = blob;
        zero_len[0] = 0;
        assert!(corrupt(&zero_len));
    }

    #[test]
    fn nokey_names() {
        let short = test_bytes("short ct", 32);
        let mut expected = vec![0u8; 8];
        expected.extend_from_slice(&short);
        assert_eq!(nokey_name(&short), URL_SAFE_NO_PAD.encode(&expected));
        assert!(!nokey_name(&short).contains('='));

        let exactly = test_bytes("149", 149);
        assert_eq!(URL_SAFE_NO_PAD.decode(nokey_name(&exactly)).unwrap().len(), 8 + 149);

        let long = test_bytes("long ct", 255);
        let encoded = nokey_name(&long);
        assert_eq!(encoded.len(), 252); // 189 bytes; fits NAME_MAX
        let raw = URL_SAFE_NO_PAD.decode(&encoded).unwrap();
        assert_eq!(raw.len(), 8 + 149 + 32);
        assert_eq!(&raw[..8], &[0u8; 8]);
        assert_eq!(&raw[8..157], &long[..149]);
        assert_eq!(&raw[157..], &Sha256::digest(&long[149..])[..]);
        let mut other_tail = long.clone();
        other_tail[254] ^= 1;
        assert_ne!(nokey_name(&other_tail), encoded);
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
