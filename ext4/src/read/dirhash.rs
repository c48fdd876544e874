//! The ext4 directory hash (fs/ext4/hash.c `__ext4fs_dirhash`,
//! Documentation/filesystems/ext4/directory.rst "Hash Tree Directories"),
//! needed for the kernel's no-key names: readdir through the htree code puts
//! `hash` and `minor_hash` of the ciphertext name in front of it
//! (fs/crypto/fname.c `fscrypt_fname_disk_to_usr`).
//!
//! Versions: 0 legacy, 1 half-MD4, 2 TEA; +3 for the unsigned-char
//! variants. The name is turned into 32-bit words by `str2hashbuf` (bytes
//! as signed or unsigned chars, padded with a length pattern), the buffer
//! starts at the MD4 constants or at `s_hash_seed` when that is not all
//! zero, and the final hash has its low bit cleared.

/// `DX_HASH_LEGACY` … `DX_HASH_TEA_UNSIGNED`.
pub const LEGACY: u8 = 0;
pub const HALF_MD4: u8 = 1;
pub const TEA: u8 = 2;
pub const LEGACY_UNSIGNED: u8 = 3;
pub const HALF_MD4_UNSIGNED: u8 = 4;
pub const TEA_UNSIGNED: u8 = 5;

/// `EXT4_HTREE_EOF_32BIT`.
const EOF_32: u32 = 0x7fff_ffff;

fn char_val(c: u8, signed: bool) -> u32 {
    if signed {
        i32::from(c as i8) as u32
    } else {
        u32::from(c)
    }
}

/// `str2hashbuf_{signed,unsigned}`: packs up to `4 * num` bytes of `msg`
/// into `num` words, big-endian within a word, padding with the length.
fn str2hashbuf(msg: &[u8], num: usize, signed: bool) -> [u32; 8] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let take = msg.len().min(num * 4);
    let mut w = 0;
    for (i, &c) in msg[..take].iter().enumerate() {
        val = char_val(c, signed).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < num {
        out[w] = val;
    }
    out
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let [mut a, mut b, mut c, mut d] = *buf;
    let r = |fun: &dyn Fn(u32, u32, u32) -> u32, a: u32, b: u32, c: u32, d: u32, k: u32, s: u32| {
        a.wrapping_add(fun(b, c, d)).wrapping_add(k).rotate_left(s)
    };
    // Round 1
    a = r(&f, a, b, c, d, x[0], 3);
    d = r(&f, d, a, b, c, x[1], 7);
    c = r(&f, c, d, a, b, x[2], 11);
    b = r(&f, b, c, d, a, x[3], 19);
    a = r(&f, a, b, c, d, x[4], 3);
    d = r(&f, d, a, b, c, x[5], 7);
    c = r(&f, c, d, a, b, x[6], 11);
    b = r(&f, b, c, d, a, x[7], 19);
    // Round 2
    a = r(&g, a, b, c, d, x[1].wrapping_add(K2), 3);
    d = r(&g, d, a, b, c, x[3].wrapping_add(K2), 5);
    c = r(&g, c, d, a, b, x[5].wrapping_add(K2), 9);
    b = r(&g, b, c, d, a, x[7].wrapping_add(K2), 13);
    a = r(&g, a, b, c, d, x[0].wrapping_add(K2), 3);
    d = r(&g, d, a, b, c, x[2].wrapping_add(K2), 5);
    c = r(&g, c, d, a, b, x[4].wrapping_add(K2), 9);
    b = r(&g, b, c, d, a, x[6].wrapping_add(K2), 13);
    // Round 3
    a = r(&h, a, b, c, d, x[3].wrapping_add(K3), 3);
    d = r(&h, d, a, b, c, x[7].wrapping_add(K3), 9);
    c = r(&h, c, d, a, b, x[2].wrapping_add(K3), 11);
    b = r(&h, b, c, d, a, x[6].wrapping_add(K3), 15);
    a = r(&h, a, b, c, d, x[1].wrapping_add(K3), 3);
    d = r(&h, d, a, b, c, x[5].wrapping_add(K3), 9);
    c = r(&h, c, d, a, b, x[0].wrapping_add(K3), 11);
    b = r(&h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea(buf: &mut [u32; 4], x: &[u32; 8]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let (a, b, c, d) = (x[0], x[1], x[2], x[3]);
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add((b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b));
        b1 = b1.wrapping_add((b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d));
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn legacy(name: &[u8], signed: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2du32, 0x37ab_e8f9u32);
    for &c in name {
        let mut h = h1.wrapping_add(h0 ^ char_val(c, signed).wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// (hash, minor_hash) of `name` for hash `version` with `seed`, or None
/// for an unknown version.
pub fn dirhash(name: &[u8], version: u8, seed: &[u32; 4]) -> Option<(u32, u32)> {
    let mut buf = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&w| w != 0) {
        buf = *seed;
    }
    let (hash, minor) = match version {
        LEGACY | LEGACY_UNSIGNED => (legacy(name, version == LEGACY), 0),
        HALF_MD4 | HALF_MD4_UNSIGNED => {
            let signed = version == HALF_MD4;
            let mut p = name;
            while !p.is_empty() {
                half_md4(&mut buf, &str2hashbuf(p, 8, signed));
                p = &p[p.len().min(32)..];
            }
            (buf[1], buf[2])
        }
        TEA | TEA_UNSIGNED => {
            let signed = version == TEA;
            let mut p = name;
            while !p.is_empty() {
                tea(&mut buf, &str2hashbuf(p, 4, signed));
                p = &p[p.len().min(16)..];
            }
            (buf[0], buf[1])
        }
        _ => return None,
    };
    let mut hash = hash & !1;
    if hash == EOF_32 << 1 {
        hash = (EOF_32 - 1) << 1;
    }
    Some((hash, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str2hashbuf_pads_with_length() {
        let w = str2hashbuf(b"ab", 8, true);
        assert_eq!(w[0], 0x0202_0202u32.wrapping_shl(16) | 0x6162);
        assert_eq!(w[1], 0x0202_0202);
        let s = str2hashbuf(&[0x80], 4, true);
        let u = str2hashbuf(&[0x80], 4, false);
        assert_ne!(s[0], u[0], "signedness matters for high bytes");
    }

    #[test]
    fn hash_is_even_and_versions_differ() {
        let seed = [1, 2, 3, 4];
        for v in 0..6 {
            let (h, _) = dirhash(b"some-name", v, &seed).unwrap();
            assert_eq!(h & 1, 0);
        }
        assert_ne!(dirhash(b"x", 1, &seed), dirhash(b"x", 2, &seed));
        assert!(dirhash(b"x", 9, &seed).is_none());
        // An empty name runs no round: the hash is the initial buffer's.
        assert_eq!(dirhash(b"", 1, &[0; 4]), Some((0xefcd_ab88, 0x98ba_dcfe)));
    }
}
