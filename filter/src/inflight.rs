//! Requests this Envoy has sent to each endpoint and not yet finished.
//!
//! Scrapes arrive every ~50 ms; a burst in between would all see the same
//! "best" pod. The host keeps these counts in shared data
//! (`<prefix>.inflight.<pool>`, CAS-updated, shared by all workers) keyed by
//! endpoint address, so they survive endpoints being added or reordered
//! between snapshots. This module is the value's encoding and arithmetic.

use crate::state::PoolView;

/// Per-address counts; zero counts are not stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InflightTable {
    entries: Vec<(String, u32)>,
}

impl InflightTable {
    /// Decodes `addr=count` lines; malformed lines are skipped (a corrupt value
    /// must never stop routing).
    pub fn decode(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let mut table = InflightTable::default();
        for line in text.lines() {
            if let Some((addr, count)) = line.rsplit_once('=') {
                if let Ok(count) = count.parse::<u32>() {
                    if !addr.is_empty() && count > 0 {
                        table.set(addr, count);
                    }
                }
            }
        }
        table
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (addr, count) in &self.entries {
            out.push_str(addr);
            out.push('=');
            out.push_str(&count.to_string());
            out.push('\n');
        }
        out.into_bytes()
    }

    pub fn get(&self, address: &str) -> u32 {
        self.entries
            .iter()
            .find(|(a, _)| a == address)
            .map_or(0, |(_, c)| *c)
    }

    fn set(&mut self, address: &str, count: u32) {
        match self.entries.iter().position(|(a, _)| a == address) {
            Some(i) if count == 0 => {
                self.entries.swap_remove(i);
            }
            Some(i) => {
                if let Some(entry) = self.entries.get_mut(i) {
                    entry.1 = count;
                }
            }
            None if count > 0 => self.entries.push((address.to_owned(), count)),
            None => {}
        }
    }

    /// One more request sent to `address`.
    pub fn increment(&mut self, address: &str) {
        let count = self.get(address).saturating_add(1);
        self.set(address, count);
    }

    /// One request to `address` finished; never goes below zero.
    pub fn decrement(&mut self, address: &str) {
        let count = self.get(address).saturating_sub(1);
        self.set(address, count);
    }

    /// Counts aligned with `pool.endpoints`, as the scheduler takes them.
    pub fn counts_for(&self, pool: &PoolView) -> Vec<u32> {
        pool.endpoints
            .iter()
            .map(|e| self.get(&e.address))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Shared-data key of a pool's table.
pub fn shared_key(key_prefix: &str, pool: &str) -> String {
    format!("{key_prefix}.inflight.{pool}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{endpoint, pool};

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn counts_round_trip_and_align_with_the_pool() {
        let mut t = InflightTable::default();
        t.increment("10.0.0.2:8000");
        t.increment("10.0.0.2:8000");
        t.increment("[::1]:8000");
        t.decrement("10.0.0.9:1");
        let t = InflightTable::decode(&t.encode());
        assert_eq!(t.get("10.0.0.2:8000"), 2);
        assert_eq!(t.get("[::1]:8000"), 1);
        let p = PoolView::from_pool(&pool(
            "p",
            vec![
                endpoint("10.0.0.1:8000", 0, 0.0),
                endpoint("10.0.0.2:8000", 0, 0.0),
            ],
        ));
        assert_eq!(t.counts_for(&p), vec![0, 2]);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn decrement_to_zero_removes_and_never_underflows() {
        let mut t = InflightTable::default();
        t.increment("a:1");
        t.decrement("a:1");
        t.decrement("a:1");
        assert!(t.is_empty());
        assert!(t.encode().is_empty());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn junk_is_skipped() {
        let t = InflightTable::decode(b"a:1=3\nbad\n=4\nb:1=x\nc:1=-1\n\xff\xfe=2\nd:1=0\n");
        assert_eq!(t.get("a:1"), 3);
        assert_eq!(t.encode(), b"a:1=3\n\xef\xbf\xbd\xef\xbf\xbd=2\n".to_vec());
        assert_eq!(shared_key("llmgw", "pool"), "llmgw.inflight.pool");
    }
}
