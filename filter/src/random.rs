//! Deterministic randomness. wasm32-unknown-unknown has no OS entropy, and a
//! decision that depends only on its inputs is one a test can reproduce: each
//! request seeds a stream from its id and the host clock.

use crate::prefix::{hash_bytes, mix64};

/// splitmix64: tiny, fast, and good enough for weighted choices and tie-breaks.
#[derive(Debug, Clone)]
pub struct Draws {
    state: u64,
}

impl Draws {
    pub fn new(seed: u64) -> Self {
        Draws { state: seed }
    }

    /// Seeds from request identity (e.g. `x-request-id`) and the host time, so
    /// two requests with equal ids still differ.
    pub fn for_request(request_id: &[u8], now_nanos: u64, context_id: u32) -> Self {
        Draws::new(
            hash_bytes(request_id) ^ mix64(now_nanos) ^ u64::from(context_id).rotate_left(32),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = Draws::new(7);
        let mut b = Draws::new(7);
        let mut c = Draws::new(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_ne!(xs[0], xs[1]);
        let r1 = Draws::for_request(b"id", 1, 2).next_u64();
        let r2 = Draws::for_request(b"id", 2, 2).next_u64();
        assert_ne!(r1, r2);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn draws_are_roughly_uniform() {
        let mut d = Draws::new(1);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            buckets[(d.next_u64() % 10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (900..1100).contains(&n)),
            "{buckets:?}"
        );
    }
}
