//! A worker's side of learned prefix placement.
//!
//! The collector places every affinity key gateways report on one endpoint
//! and publishes the table in the pool snapshot (`PoolView::placed_endpoint`),
//! so every worker of every replica sends a prefix group to the same pod.
//! A key the snapshot does not place yet goes where the load scorers send it
//! (as GIE places a group it has not seen), and this worker remembers that
//! endpoint so the group's next requests follow it until the placement
//! arrives (one collector round trip, ~100-200 ms).
//!
//! Reports: an unplaced key at most once per `UNPLACED_EVERY_MS` per worker,
//! a placed one at most once per `PLACED_EVERY_MS` (which keeps it from
//! expiring in the collector while requests still use it). So report traffic
//! grows with the number of groups, not with the request rate.

use std::collections::HashMap;

pub const UNPLACED_EVERY_MS: u64 = 1_000;
pub const PLACED_EVERY_MS: u64 = 10_000;
/// Keys remembered per worker; past this the memory starts over (a few
/// duplicate reports and re-placements, never a wrong route).
const MAX_KEYS: usize = 8_192;

/// What the decision needs to remember about unplaced groups: this worker's
/// [`PlacementMemory`] alone, or in Envoy also the Envoy-wide table of
/// [`crate::pending`], so a group's next request follows its first one on
/// whichever worker it lands.
pub trait PlacementState {
    /// Where an unplaced `key` of `pool` (its id, `namespace/name`) was sent
    /// (an endpoint address hash).
    fn sent_to(&mut self, pool: &str, key: u64, now_ms: u64) -> Option<u64>;
    /// Records where a request with affinity `key` went; true when the
    /// collector should hear of it now (see [`PlacementMemory::record`]).
    fn record(
        &mut self,
        pool: &str,
        key: u64,
        endpoint_hash: u64,
        placed: bool,
        now_ms: u64,
    ) -> bool;
}

impl PlacementState for PlacementMemory {
    fn sent_to(&mut self, _pool: &str, key: u64, _now_ms: u64) -> Option<u64> {
        self.unplaced_endpoint(key)
    }

    fn record(
        &mut self,
        _pool: &str,
        key: u64,
        endpoint_hash: u64,
        placed: bool,
        now_ms: u64,
    ) -> bool {
        PlacementMemory::record(self, key, endpoint_hash, placed, now_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    endpoint_hash: u64,
    reported_ms: u64,
}

#[derive(Debug, Default)]
pub struct PlacementMemory {
    sent: HashMap<u64, Sent>,
}

impl PlacementMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoint (address hash) this worker last sent `key` to, for a key
    /// the snapshot has not placed.
    pub fn unplaced_endpoint(&self, key: u64) -> Option<u64> {
        self.sent.get(&key).map(|s| s.endpoint_hash)
    }

    /// Records that a request with affinity `key` went to the endpoint with
    /// `endpoint_hash` (`placed`: the snapshot places the key) and says
    /// whether to report it to the collector now.
    pub fn record(&mut self, key: u64, endpoint_hash: u64, placed: bool, now_ms: u64) -> bool {
        let every = if placed {
            PLACED_EVERY_MS
        } else {
            UNPLACED_EVERY_MS
        };
        let due = match self.sent.get(&key) {
            Some(s) => {
                s.endpoint_hash != endpoint_hash || now_ms.saturating_sub(s.reported_ms) >= every
            }
            None => true,
        };
        if !due {
            return false;
        }
        if self.sent.len() >= MAX_KEYS && !self.sent.contains_key(&key) {
            self.sent.clear();
        }
        self.sent.insert(
            key,
            Sent {
                endpoint_hash,
                reported_ms: now_ms,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn unplaced_keys_are_reported_once_a_second_placed_ones_every_ten() {
        let mut m = PlacementMemory::new();
        assert!(m.record(7, 1, false, 0));
        assert!(!m.record(7, 1, false, 999));
        assert!(m.record(7, 1, false, 1_000));
        assert!(!m.record(7, 1, true, 5_000));
        assert!(m.record(7, 1, true, 11_000));
        assert!(m.record(8, 1, true, 11_000), "keys are independent");
        assert!(m.record(8, 2, true, 11_001), "a new endpoint is news");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn an_unplaced_key_follows_where_this_worker_sent_it() {
        let mut m = PlacementMemory::new();
        assert_eq!(m.unplaced_endpoint(7), None);
        m.record(7, 42, false, 0);
        assert_eq!(m.unplaced_endpoint(7), Some(42));
        m.record(7, 43, false, 10);
        assert_eq!(m.unplaced_endpoint(7), Some(43));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_full_memory_starts_over_instead_of_growing() {
        let mut m = PlacementMemory::new();
        for key in 0..MAX_KEYS as u64 {
            assert!(m.record(key, 1, false, 0));
        }
        assert!(m.record(u64::MAX, 1, false, 0));
        assert_eq!(m.sent.len(), 1);
        assert!(m.record(0, 1, false, 1), "forgotten, so reported again");
    }
}
