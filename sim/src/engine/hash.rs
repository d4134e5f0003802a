//! Small, fast, seed-stable hashing used for prefix-cache block keys and for the
//! deterministic "sampling" of generated tokens. Std's `DefaultHasher` is not
//! guaranteed stable across Rust releases, and traces must be reproducible.

use std::hash::{BuildHasherDefault, Hasher};

/// SplitMix64 finaliser: a bijective mix with good avalanche, so chained block
/// hashes and per-token draws behave like independent random values.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combines a running hash with one more value.
pub fn combine(h: u64, v: u64) -> u64 {
    mix64(h ^ mix64(v))
}

/// A deterministic generator for values that must not depend on call order
/// (e.g. which token request 7 samples at position 12): every draw is a pure
/// function of its inputs.
pub fn draw(seed: u64, a: u64, b: u64) -> u64 {
    combine(combine(mix64(seed), a), b)
}

/// Maps keys that are already well-mixed hashes (or small ids) to buckets
/// without re-hashing them through SipHash on the engine's hot path.
#[derive(Default, Clone, Copy)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = combine(self.0, u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix64(self.0 ^ v);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

/// `HashMap` builder for pre-hashed keys.
pub type BuildPrehashed = BuildHasherDefault<PrehashedHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_pure_functions_of_their_inputs() {
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 2));
    }
}
