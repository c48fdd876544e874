//! Joining crc32c (Castagnoli) values of consecutive pieces without the
//! generic combine.
//!
//! For any CRC whose initial value equals its final xor (crc32c: both
//! `0xFFFF_FFFF`), the crc of a concatenation is
//!
//! ```text
//! crc(A ‖ B) = shift_{|B|}(crc(A)) ⊕ crc(B),    shift_n(c) = c · x^(8n) mod P
//! ```
//!
//! a product in GF(2)[x] modulo the Castagnoli polynomial P (RFC 3720
//! appendix B.4, reflected form `0x82F63B78`, bit 31 = coefficient of x^0).
//! `shift_n` is linear in `c`, so for a fixed `n` it is four table look-ups
//! ([`Crc32cShift`]); for a variable `n` it is one multiplication by
//! `x^(8n) mod P`, itself a product of precomputed `x^(2^k) mod P`, one per
//! set bit of `n` ([`combine`]). The `crc32c` crate's `crc32c_combine` squares
//! 32×32 bit matrices log2(n) times on every call instead (microseconds).
//!
//! Callers that hold contiguous bytes should extend the running crc with
//! `crc32c::crc32c_append` (one pass, hardware crc) and join only the crcs of
//! pieces computed apart (parallel workers, items known from metadata).

use crate::BLOCK_SIZE;

/// The Castagnoli polynomial, bit-reflected (bit 31 is x^0).
const POLY: u32 = 0x82F6_3B78;
/// x^0 in the reflected representation.
const ONE: u32 = 0x8000_0000;

/// `a · b mod P`, both reflected. Branch-free: 32 shift/xor steps.
pub const fn mul(a: u32, b: u32) -> u32 {
    let (mut a, mut b, mut p) = (a, b, 0u32);
    let mut i = 0;
    while i < 32 {
        // a's current top bit is the coefficient of x^i; b holds b · x^i.
        p ^= b & 0u32.wrapping_sub(a >> 31);
        a <<= 1;
        b = (b >> 1) ^ (POLY & 0u32.wrapping_sub(b & 1));
        i += 1;
    }
    p
}

/// `X2N[k] = x^(2^k) mod P`, enough entries for any 64-bit byte count
/// (byte count n is x^(8n) = x^(2^3 · n)).
const X2N: [u32; 67] = {
    let mut t = [0u32; 67];
    t[0] = ONE >> 1; // x^1
    let mut k = 1;
    while k < t.len() {
        t[k] = mul(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// `x^(8n) mod P`: the operator that moves a crc past `n` bytes.
pub const fn x8n(n: u64) -> u32 {
    let (mut n, mut p, mut k) = (n, ONE, 3);
    while n != 0 {
        if n & 1 != 0 {
            p = mul(X2N[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The crc32c of `A ‖ B` from `crc1 = crc32c(A)`, `crc2 = crc32c(B)` and
/// `len2 = |B|`. Equal to `crc32c::crc32c_combine(crc1, crc2, len2)`,
/// including its convention that an empty `B` returns `crc1` unchanged.
pub fn combine(crc1: u32, crc2: u32, len2: u64) -> u32 {
    if len2 == 0 {
        return crc1;
    }
    if crc1 == 0 {
        // The empty prefix (and any prefix with crc 0) shifts to 0.
        return crc2;
    }
    mul(x8n(len2), crc1) ^ crc2
}

/// The crc32c of `len` zero bytes.
pub fn zeros(len: u64) -> u32 {
    // The register starts at !0 and is shifted past the zeros; then inverted.
    !mul(x8n(len), !0)
}

/// Moving a crc past a fixed number of bytes with four table look-ups: the
/// operator `x^(8·len) mod P` applied to each byte of the crc, precomputed.
pub struct Crc32cShift {
    len: u64,
    tables: [[u32; 256]; 4],
}

impl Crc32cShift {
    /// The shift past `len` bytes (usable in a `static`).
    pub const fn new(len: u64) -> Self {
        let op = x8n(len);
        // Column i: the image of the single bit 1 << i (linearity builds the rest).
        let mut col = [0u32; 32];
        let mut i = 0;
        while i < 32 {
            col[i] = mul(op, 1 << i);
            i += 1;
        }
        let mut tables = [[0u32; 256]; 4];
        let mut j = 0;
        while j < 4 {
            let mut b: usize = 1;
            while b < 256 {
                // Built from b with its lowest set bit cleared, plus that bit's column.
                let low = b.trailing_zeros() as usize;
                tables[j][b] = tables[j][b & (b - 1)] ^ col[8 * j + low];
                b += 1;
            }
            j += 1;
        }
        Crc32cShift { len, tables }
    }

    /// The number of bytes this operator shifts past.
    pub const fn bytes(&self) -> u64 {
        self.len
    }

    /// `crc · x^(8·len) mod P`.
    #[inline]
    pub fn apply(&self, crc: u32) -> u32 {
        let t = &self.tables;
        t[0][(crc & 0xff) as usize] ^ t[1][((crc >> 8) & 0xff) as usize] ^ t[2][((crc >> 16) & 0xff) as usize] ^ t[3][(crc >> 24) as usize]
    }

    /// The crc32c of `A ‖ B` where `|B|` is this operator's length.
    #[inline]
    pub fn combine(&self, crc1: u32, crc2: u32) -> u32 {
        self.apply(crc1) ^ crc2
    }
}

/// The shift past one 4096-byte block.
pub static SHIFT_BLOCK: Crc32cShift = Crc32cShift::new(BLOCK_SIZE as u64);

/// `combine` for a block-multiple length: `blocks` shifts of one block when
/// that is cheaper than the general product (a few blocks), else [`combine`].
pub fn combine_blocks(crc1: u32, crc2: u32, blocks: u64) -> u32 {
    if blocks == 0 {
        return crc1;
    }
    if blocks <= 4 {
        let mut c = crc1;
        for _ in 0..blocks {
            c = SHIFT_BLOCK.apply(c);
        }
        c ^ crc2
    } else {
        combine(crc1, crc2, blocks * BLOCK_SIZE as u64)
    }
}

#[cfg(test)]
// The generic combine is the reference these tests compare against.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    const LENGTHS: [u64; 14] = [0, 1, 2, 3, 7, 8, 511, 512, 4095, 4096, 4097, 65536, 3 << 20, (32 << 20) + 4096];

    #[test]
    fn combine_equals_the_generic_combine_for_random_crcs_and_lengths() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let mut lens: Vec<u64> = LENGTHS.to_vec();
        lens.extend((0..200).map(|_| r.next() % (64 << 20)));
        lens.extend((0..50).map(|_| r.next() % 5000));
        lens.push(u32::MAX as u64 + 12345);
        for &len in &lens {
            for _ in 0..4 {
                let (a, b) = (r.next() as u32, r.next() as u32);
                let want = crc32c::crc32c_combine(a, b, len as usize);
                assert_eq!(combine(a, b, len), want, "len {len} crcs {a:08x} {b:08x}");
                if len > 0 {
                    assert_eq!(Crc32cShift::new(len).combine(a, b), want, "table shift, len {len}");
                } else {
                    // An empty B has crc 0; the shift by 0 bytes is the identity.
                    assert_eq!(Crc32cShift::new(0).combine(a, 0), a);
                }
            }
            if len > 0 {
                assert_eq!(combine(0, 0x1234_5678, len), 0x1234_5678);
            }
        }
    }

    #[test]
    fn combine_of_real_pieces_is_the_crc_of_the_whole() {
        let mut r = Rng(42);
        let data = r.bytes((5 << 20) + 333);
        for cut in [0usize, 1, 4096, 4097, 1 << 20, data.len() - 1, data.len()] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
                crc32c::crc32c(&data),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn block_shift_and_block_combine_match() {
        let mut r = Rng(7);
        let data = r.bytes(12 * BLOCK_SIZE);
        assert_eq!(SHIFT_BLOCK.bytes(), BLOCK_SIZE as u64);
        for blocks in 0..=12u64 {
            let cut = data.len() - blocks as usize * BLOCK_SIZE;
            let (a, b) = data.split_at(cut);
            assert_eq!(
                combine_blocks(crc32c::crc32c(a), crc32c::crc32c(b), blocks),
                crc32c::crc32c(&data),
                "{blocks} blocks"
            );
        }
        for _ in 0..1000 {
            let (a, b) = (r.next() as u32, r.next() as u32);
            assert_eq!(SHIFT_BLOCK.combine(a, b), crc32c::crc32c_combine(a, b, BLOCK_SIZE));
        }
    }

    #[test]
    fn zeros_is_the_crc_of_zero_bytes() {
        for len in [0u64, 1, 5, 512, 4096, 3 * 4096 + 1, 1 << 20] {
            assert_eq!(zeros(len), crc32c::crc32c(&vec![0u8; len as usize]), "len {len}");
        }
    }

    #[test]
    fn mul_is_the_field_product() {
        let mut r = Rng(3);
        for _ in 0..1000 {
            let (a, b, c) = (r.next() as u32, r.next() as u32, r.next() as u32);
            assert_eq!(mul(a, ONE), a);
            assert_eq!(mul(a, b), mul(b, a));
            assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
            assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)));
        }
        // x^(8(m+n)) = x^(8m) · x^(8n)
        assert_eq!(x8n(4096 + 512), mul(x8n(4096), x8n(512)));
    }
}
