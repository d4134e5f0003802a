//! Requests this Envoy has sent to each endpoint and not yet finished.
//!
//! Scrapes arrive every ~50 ms; a burst in between would all see the same
//! "best" pod. The host keeps these counts in shared data
//! (`<prefix>.inflight.<pool>`, CAS-updated, shared by all workers) keyed by
//! the hash of the endpoint's address ([`EndpointView::address_hash`]), so
//! they survive endpoints being added or reordered between snapshots. This
//! module is the value's encoding and arithmetic.
//!
//! Every request reads the value once and updates it twice, so the encoding
//! is made for that: 12-byte records (u64 LE address hash, u32 LE count),
//! sorted by hash, counts > 0. Reading is a binary search per endpoint,
//! updating edits the bytes in place, and neither allocates per endpoint.
//!
//! [`EndpointView::address_hash`]: crate::state::EndpointView::address_hash

use crate::state::PoolView;

const RECORD: usize = 12;

/// Per-endpoint counts, as stored in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InflightTable {
    /// Well-formed records only (see the module doc).
    bytes: Vec<u8>,
}

fn record_at(bytes: &[u8], index: usize) -> Option<(u64, u32)> {
    let record = bytes.get(index * RECORD..(index + 1) * RECORD)?;
    let (hash, count) = record.split_first_chunk::<8>()?;
    let count = count.first_chunk::<4>()?;
    Some((u64::from_le_bytes(*hash), u32::from_le_bytes(*count)))
}

impl InflightTable {
    /// Takes the shared-data value. A malformed value (torn, an older
    /// encoding, a bug) reads as empty rather than stop routing: counts are
    /// only a hint, the next update replaces it, and decrements of requests it
    /// counted find nothing and do nothing.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let table = InflightTable { bytes };
        if table.is_well_formed() {
            table
        } else {
            InflightTable::default()
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn is_well_formed(&self) -> bool {
        if !self.bytes.len().is_multiple_of(RECORD) {
            return false;
        }
        let mut previous: Option<u64> = None;
        for i in 0..self.len() {
            match record_at(&self.bytes, i) {
                Some((hash, count)) if count > 0 && previous.is_none_or(|p| p < hash) => {
                    previous = Some(hash);
                }
                _ => return false,
            }
        }
        true
    }

    fn len(&self) -> usize {
        self.bytes.len() / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `Ok(index)` of the record for `hash`, or `Err(index)` where it would go.
    fn search(&self, hash: u64) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match record_at(&self.bytes, mid) {
                Some((h, _)) if h < hash => low = mid + 1,
                Some((h, _)) if h > hash => high = mid,
                Some(_) => return Ok(mid),
                None => return Err(low),
            }
        }
        Err(low)
    }

    /// The count of the endpoint whose address hashes to `hash`.
    pub fn get(&self, hash: u64) -> u32 {
        self.search(hash)
            .ok()
            .and_then(|i| record_at(&self.bytes, i))
            .map_or(0, |(_, count)| count)
    }

    /// One more request sent to the endpoint whose address hashes to `hash`.
    pub fn increment(&mut self, hash: u64) {
        match self.search(hash) {
            Ok(i) => self.set_count(i, self.count_at(i).saturating_add(1)),
            Err(i) => {
                let at = i * RECORD;
                let mut record = [0u8; RECORD];
                let (h, c) = record.split_at_mut(8);
                h.copy_from_slice(&hash.to_le_bytes());
                c.copy_from_slice(&1u32.to_le_bytes());
                self.bytes.splice(at..at, record);
            }
        }
    }

    /// One request to that endpoint finished; a count never goes below zero,
    /// and a zero count is removed.
    pub fn decrement(&mut self, hash: u64) {
        if let Ok(i) = self.search(hash) {
            match self.count_at(i) {
                0 | 1 => {
                    self.bytes.drain(i * RECORD..(i + 1) * RECORD);
                }
                n => self.set_count(i, n - 1),
            }
        }
    }

    fn count_at(&self, index: usize) -> u32 {
        record_at(&self.bytes, index).map_or(0, |(_, count)| count)
    }

    fn set_count(&mut self, index: usize, count: u32) {
        let at = index * RECORD + 8;
        if let Some(slot) = self.bytes.get_mut(at..at + 4) {
            slot.copy_from_slice(&count.to_le_bytes());
        }
    }

    /// Counts aligned with `pool.endpoints`, as the scheduler takes them.
    pub fn counts_for(&self, pool: &PoolView) -> Vec<u32> {
        if self.is_empty() {
            return vec![0; pool.endpoints.len()];
        }
        pool.endpoints
            .iter()
            .map(|e| self.get(e.address_hash))
            .collect()
    }
}

/// Shared-data key of a pool's table.
pub fn shared_key(key_prefix: &str, pool: &str) -> String {
    format!("{key_prefix}.inflight.{pool}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::hash_bytes;
    use crate::state::tests::{endpoint, pool};

    fn h(address: &str) -> u64 {
        hash_bytes(address.as_bytes())
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn counts_round_trip_and_align_with_the_pool() {
        let mut t = InflightTable::default();
        t.increment(h("10.0.0.2:8000"));
        t.increment(h("10.0.0.2:8000"));
        t.increment(h("[::1]:8000"));
        t.decrement(h("10.0.0.9:1"));
        let t = InflightTable::from_bytes(t.into_bytes());
        assert_eq!(t.get(h("10.0.0.2:8000")), 2);
        assert_eq!(t.get(h("[::1]:8000")), 1);
        assert_eq!(t.get(h("10.0.0.9:1")), 0);
        let p = PoolView::from_pool(&pool(
            "p",
            vec![
                endpoint("10.0.0.1:8000", 0, 0.0),
                endpoint("10.0.0.2:8000", 0, 0.0),
            ],
        ));
        assert_eq!(t.counts_for(&p), vec![0, 2]);
        assert_eq!(InflightTable::default().counts_for(&p), vec![0, 0]);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn decrement_to_zero_removes_and_never_underflows() {
        let mut t = InflightTable::default();
        t.increment(h("a:1"));
        t.decrement(h("a:1"));
        t.decrement(h("a:1"));
        assert!(t.is_empty());
        assert!(t.into_bytes().is_empty());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn many_endpoints_keep_sorted_records_and_exact_counts() {
        let mut t = InflightTable::default();
        let mut expected = vec![0u32; 300];
        let mut state = 7u64;
        for _ in 0..5_000 {
            state = crate::prefix::mix64(state);
            let i = (state % 300) as usize;
            if state & (1 << 40) == 0 || expected[i] == 0 {
                t.increment(h(&format!("10.0.{i}.1:8000")));
                expected[i] += 1;
            } else {
                t.decrement(h(&format!("10.0.{i}.1:8000")));
                expected[i] -= 1;
            }
        }
        let t = InflightTable::from_bytes(t.into_bytes());
        assert!(t.is_well_formed());
        for (i, &n) in expected.iter().enumerate() {
            assert_eq!(t.get(h(&format!("10.0.{i}.1:8000"))), n, "endpoint {i}");
        }
        assert_eq!(t.len(), expected.iter().filter(|&&n| n > 0).count());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn malformed_values_read_as_empty() {
        let mut good = InflightTable::default();
        good.increment(1);
        good.increment(2);
        let good = good.into_bytes();
        let mut unsorted = good.get(RECORD..).unwrap().to_vec();
        unsorted.extend_from_slice(good.get(..RECORD).unwrap());
        let mut zero = good.clone();
        zero[8..12].fill(0);
        for bad in [
            b"10.0.0.1:8000=3\n".to_vec(),
            good[..RECORD + 1].to_vec(),
            unsorted,
            zero,
            [good.get(..RECORD).unwrap(), good.get(..RECORD).unwrap()].concat(),
        ] {
            let t = InflightTable::from_bytes(bad.clone());
            assert!(t.is_empty(), "{bad:?}");
        }
        assert_eq!(InflightTable::from_bytes(good.clone()).get(2), 1);
        assert_eq!(shared_key("llmgw", "pool"), "llmgw.inflight.pool");
    }
}
