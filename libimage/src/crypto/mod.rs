// TEMP STUB for type-checking; replaced by the real module.
#![allow(unused)]
use crate::error::Result;
pub const DATA_UNIT: usize = 4096;
pub const NAME_MAX: usize = 255;
pub const SYMLINK_MAX: usize = 4093;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);
impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce(pub [u8; 16]);
impl Nonce {
    pub fn random() -> Result<Nonce> {
        panic!()
    }
}
pub struct MasterKey;
impl MasterKey {
    pub fn from_bytes(raw: &[u8]) -> Result<MasterKey> {
        panic!()
    }
    pub fn identifier(&self) -> KeyId {
        panic!()
    }
    pub fn names_key(&self, nonce: &Nonce) -> NameCipher {
        panic!()
    }
    pub fn extent_key(&self, nonce: &Nonce) -> XtsKey {
        panic!()
    }
    pub fn deterministic_nonces(&self) -> NonceDeriver {
        panic!()
    }
    pub fn matches(&self, id: &KeyId) -> bool {
        panic!()
    }
}
pub struct XtsKey;
impl XtsKey {
    pub fn encrypt_units(&self, first_unit: u64, unit: usize, data: &mut [u8]) {}
    pub fn decrypt_units(&self, first_unit: u64, unit: usize, data: &mut [u8]) {}
}
pub struct NameCipher;
impl NameCipher {
    pub fn encrypt_name(&self, name: &[u8]) -> Result<Vec<u8>> {
        panic!()
    }
    pub fn decrypt_name(&self, ct: &[u8]) -> Result<Vec<u8>> {
        panic!()
    }
    pub fn encrypt_symlink(&self, target: &[u8]) -> Result<Vec<u8>> {
        panic!()
    }
    pub fn decrypt_symlink(&self, blob: &[u8]) -> Result<Vec<u8>> {
        panic!()
    }
}
pub fn valid_name_ct_len(len: usize) -> bool {
    panic!()
}
pub fn nokey_name(ct: &[u8]) -> String {
    panic!()
}
pub struct NonceDeriver;
impl NonceDeriver {
    pub fn nonce(&self, parts: &[&[u8]]) -> Nonce {
        panic!()
    }
}
pub fn generate_key() -> Result<zeroize::Zeroizing<[u8; 64]>> {
    panic!()
}
