//! Requests this Envoy has sent to each endpoint and not yet finished.
//!
//! Scrapes arrive every ~50 ms; a burst in between would all see the same
//! "best" pod. The host keeps these counts in shared data
//! (`<prefix>.inflight.<namespace>/<pool>`, CAS-updated, shared by all workers) keyed by
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

type Record = [u8; RECORD];

fn hash_of(record: &Record) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *record;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

fn count_of(record: &Record) -> u32 {
    let [.., a, b, c, d] = *record;
    u32::from_le_bytes([a, b, c, d])
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

    fn records(&self) -> &[Record] {
        self.bytes.as_chunks::<RECORD>().0
    }

    fn is_well_formed(&self) -> bool {
        let records = self.records();
        self.bytes.len() == records.len() * RECORD
            && records.iter().all(|r| count_of(r) > 0)
            && records.windows(2).all(|w| match w {
                [a, b] => hash_of(a) < hash_of(b),
                _ => true,
            })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records().len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `Ok(index)` of the record for `hash`, or `Err(index)` where it would go.
    fn search(&self, hash: u64) -> Result<usize, usize> {
        self.records().binary_search_by_key(&hash, hash_of)
    }

    /// The count of the endpoint whose address hashes to `hash`.
    pub fn get(&self, hash: u64) -> u32 {
        self.search(hash).map_or(0, |i| self.count_at(i))
    }

    fn count_at(&self, index: usize) -> u32 {
        self.records().get(index).map_or(0, count_of)
    }

    /// One more request sent to the endpoint whose address hashes to `hash`.
    pub fn increment(&mut self, hash: u64) {
        match self.search(hash) {
            Ok(i) => self.set_count(i, self.count_at(i).saturating_add(1)),
            Err(i) => {
                let at = i * RECORD;
                let record = hash.to_le_bytes().into_iter().chain(1u32.to_le_bytes());
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

/// Shared-data key of a pool's table; `pool_id` is `namespace/name`
/// ([`crate::pool_id::pool_id`], `PoolView::id`).
pub fn shared_key(key_prefix: &str, pool_id: &str) -> String {
    crate::pool_id::shared_key(key_prefix, "inflight", pool_id, None)
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
        assert_eq!(shared_key("llmgw", "ns/pool"), "llmgw.inflight.ns/pool");
    }
}
