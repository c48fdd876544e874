//! The fscrypt ioctls, the only `unsafe` code in testkit.
//!
//! Struct layouts and request numbers are those of the Linux UAPI header
//! `include/uapi/linux/fscrypt.h` (as installed in /usr/include/linux/fscrypt.h
//! by linux-libc-dev for 6.x kernels); the sizes and offsets below were checked
//! against that header with a C `sizeof`/`offsetof` program, and the tests in
//! this module check the Rust side (docs/TESTING.md, "Kernel oracle").
//!
//! Request numbers follow `_IOC(dir, 'f', nr, size)` =
//! `dir << 30 | size << 16 | 'f' << 8 | nr` with `_IOR` = 2, `_IOW` = 1,
//! `_IOWR` = 3 in the direction bits.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use zeroize::Zeroize;

/// FSCRYPT_KEY_IDENTIFIER_SIZE.
pub const KEY_IDENTIFIER_SIZE: usize = 16;
/// FSCRYPT_MAX_KEY_SIZE: the longest raw key FS_IOC_ADD_ENCRYPTION_KEY takes.
pub const MAX_KEY_SIZE: usize = 64;
/// FSCRYPT_FILE_NONCE_SIZE (the `__u8[16]` of FS_IOC_GET_ENCRYPTION_NONCE).
pub const NONCE_SIZE: usize = 16;
/// sizeof(struct fscrypt_policy_v2).
pub const POLICY_V2_SIZE: usize = 24;
/// FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER: a v2 key, named by its identifier.
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;

/// `_IOR('f', 19, struct fscrypt_policy_v1)`; sizeof(fscrypt_policy_v1) = 12.
/// The kernel reads the version byte first, then the whole v2 policy.
pub const FS_IOC_SET_ENCRYPTION_POLICY: u32 = 0x800c_6613;
/// `_IOWR('f', 22, __u8[9])` ("size + version").
pub const FS_IOC_GET_ENCRYPTION_POLICY_EX: u32 = 0xc009_6616;
/// `_IOWR('f', 23, struct fscrypt_add_key_arg)`; sizeof = 80 (without `raw[]`).
pub const FS_IOC_ADD_ENCRYPTION_KEY: u32 = 0xc050_6617;
/// `_IOWR('f', 24, struct fscrypt_remove_key_arg)`; sizeof = 64.
pub const FS_IOC_REMOVE_ENCRYPTION_KEY: u32 = 0xc040_6618;
/// `_IOR('f', 27, __u8[16])`.
pub const FS_IOC_GET_ENCRYPTION_NONCE: u32 = 0x8010_661b;

/// `struct fscrypt_key_specifier`: 40 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct KeySpecifier {
    /// FSCRYPT_KEY_SPEC_TYPE_*.
    kind: u32,
    reserved: u32,
    /// The union `u`: the identifier in its first 16 bytes for v2 keys.
    u: [u8; 32],
}

impl KeySpecifier {
    fn identifier(id: [u8; KEY_IDENTIFIER_SIZE]) -> Self {
        let mut u = [0u8; 32];
        u[..KEY_IDENTIFIER_SIZE].copy_from_slice(&id);
        KeySpecifier {
            kind: KEY_SPEC_TYPE_IDENTIFIER,
            reserved: 0,
            u,
        }
    }
}

/// `struct fscrypt_add_key_arg` (80 bytes) followed by its flexible `raw[]`
/// member, given the maximum size here; the kernel reads `raw_size` bytes of it.
#[repr(C)]
struct AddKeyArg {
    key_spec: KeySpecifier,
    raw_size: u32,
    /// A keyring key holding the raw key instead (0: use `raw`).
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; MAX_KEY_SIZE],
}

impl Drop for AddKeyArg {
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

/// `struct fscrypt_remove_key_arg`: 64 bytes.
#[repr(C)]
struct RemoveKeyArg {
    key_spec: KeySpecifier,
    /// Output: FSCRYPT_KEY_REMOVAL_STATUS_FLAG_*.
    removal_status_flags: u32,
    reserved: [u32; 5],
}

/// `struct fscrypt_get_policy_ex_arg`: `__u64 policy_size` then the policy
/// union (the largest member, v2, is 24 bytes): 32 bytes.
#[repr(C)]
struct GetPolicyExArg {
    policy_size: u64,
    policy: [u8; POLICY_V2_SIZE],
}

// Layout checks against the header's sizes (see the module comment).
const _: () = assert!(std::mem::size_of::<KeySpecifier>() == 40);
const _: () = assert!(std::mem::size_of::<AddKeyArg>() == 80 + MAX_KEY_SIZE);
const _: () = assert!(std::mem::offset_of!(AddKeyArg, raw_size) == 40);
const _: () = assert!(std::mem::offset_of!(AddKeyArg, raw) == 80);
const _: () = assert!(std::mem::size_of::<RemoveKeyArg>() == 64);
const _: () = assert!(std::mem::offset_of!(RemoveKeyArg, removal_status_flags) == 40);
const _: () = assert!(std::mem::size_of::<GetPolicyExArg>() == 32);

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// FS_IOC_ADD_ENCRYPTION_KEY with a raw v2 key (`raw` is 1..=64 bytes; the
/// kernel wants 16..=64 for v2) on any file or directory of the filesystem.
/// Returns the identifier the kernel computed. The copy of the key made here
/// is wiped before returning.
pub fn add_key(f: &File, raw: &[u8]) -> io::Result<[u8; KEY_IDENTIFIER_SIZE]> {
    if raw.is_empty() || raw.len() > MAX_KEY_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raw key of {} bytes: must be 1 to {MAX_KEY_SIZE}", raw.len()),
        ));
    }
    let mut arg = AddKeyArg {
        key_spec: KeySpecifier::identifier([0; KEY_IDENTIFIER_SIZE]),
        raw_size: raw.len() as u32,
        key_id: 0,
        reserved: [0; 8],
        raw: [0; MAX_KEY_SIZE],
    };
    arg.raw[..raw.len()].copy_from_slice(raw);
    // SAFETY: `f` is an open descriptor; `arg` is a live, properly aligned
    // `struct fscrypt_add_key_arg` whose `raw` array holds `raw_size` (<= 64)
    // bytes, all of which the kernel may read; it writes only the 40-byte
    // `key_spec` (the identifier). The request number encodes the 80-byte
    // header size, matching the struct.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_ADD_ENCRYPTION_KEY as _, &mut arg as *mut AddKeyArg) };
    check(ret)?;
    let mut id = [0u8; KEY_IDENTIFIER_SIZE];
    id.copy_from_slice(&arg.key_spec.u[..KEY_IDENTIFIER_SIZE]);
    Ok(id)
}

/// FS_IOC_REMOVE_ENCRYPTION_KEY for the v2 key `id` (this user's claim to
/// it). Returns `removal_status_flags` (1 = FILES_BUSY, 2 = OTHER_USERS).
pub fn remove_key(f: &File, id: [u8; KEY_IDENTIFIER_SIZE]) -> io::Result<u32> {
    let mut arg = RemoveKeyArg {
        key_spec: KeySpecifier::identifier(id),
        removal_status_flags: 0,
        reserved: [0; 5],
    };
    // SAFETY: `f` is open; `arg` is a live 64-byte `struct
    // fscrypt_remove_key_arg`, which the request number's size matches; the
    // kernel reads it and writes `removal_status_flags`.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_REMOVE_ENCRYPTION_KEY as _, &mut arg as *mut RemoveKeyArg) };
    check(ret)?;
    Ok(arg.removal_status_flags)
}

/// FS_IOC_SET_ENCRYPTION_POLICY with a 24-byte `struct fscrypt_policy_v2` on
/// an open (empty) directory.
pub fn set_policy_v2(dir: &File, policy: &[u8; POLICY_V2_SIZE]) -> io::Result<()> {
    let mut buf = *policy;
    // SAFETY: `dir` is open; `buf` is 24 readable bytes, a whole `struct
    // fscrypt_policy_v2` (version byte 2), which is what the kernel reads for
    // a version-2 policy; it writes nothing.
    let ret = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SET_ENCRYPTION_POLICY as _, buf.as_mut_ptr()) };
    check(ret)
}

/// FS_IOC_GET_ENCRYPTION_POLICY_EX: the raw policy (12 bytes for v1, 24 for v2).
pub fn get_policy_ex(f: &File) -> io::Result<Vec<u8>> {
    let mut arg = GetPolicyExArg {
        policy_size: POLICY_V2_SIZE as u64,
        policy: [0; POLICY_V2_SIZE],
    };
    // SAFETY: `f` is open; `arg` is a live `struct fscrypt_get_policy_ex_arg`
    // whose `policy_size` (24) is the room in `policy`; the kernel writes at
    // most that many policy bytes and updates `policy_size`.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GET_ENCRYPTION_POLICY_EX as _, &mut arg as *mut GetPolicyExArg) };
    check(ret)?;
    let n = usize::try_from(arg.policy_size).unwrap_or(usize::MAX).min(POLICY_V2_SIZE);
    Ok(arg.policy[..n].to_vec())
}

/// FS_IOC_GET_ENCRYPTION_NONCE: the 16-byte nonce of an encrypted inode.
pub fn get_nonce(f: &File) -> io::Result<[u8; NONCE_SIZE]> {
    let mut nonce = [0u8; NONCE_SIZE];
    // SAFETY: `f` is open; `nonce` is 16 writable bytes, the `__u8[16]` the
    // request number describes.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GET_ENCRYPTION_NONCE as _, nonce.as_mut_ptr()) };
    check(ret)?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(dir, 'f', nr, size)` from asm-generic/ioctl.h.
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        (dir << 30) | ((size as u32) << 16) | ((b'f' as u32) << 8) | nr
    }

    #[test]
    fn request_numbers_match_the_header_macros() {
        const R: u32 = 2;
        const RW: u32 = 3;
        assert_eq!(FS_IOC_SET_ENCRYPTION_POLICY, ioc(R, 19, 12));
        assert_eq!(FS_IOC_GET_ENCRYPTION_POLICY_EX, ioc(RW, 22, 9));
        assert_eq!(FS_IOC_ADD_ENCRYPTION_KEY, ioc(RW, 23, 80));
        assert_eq!(FS_IOC_REMOVE_ENCRYPTION_KEY, ioc(RW, 24, std::mem::size_of::<RemoveKeyArg>()));
        assert_eq!(FS_IOC_GET_ENCRYPTION_NONCE, ioc(R, 27, NONCE_SIZE));
    }

    #[test]
    fn bad_key_sizes_are_refused_before_the_kernel() {
        let f = File::open("/").unwrap();
        for n in [0, 65] {
            let e = add_key(&f, &vec![1u8; n]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
