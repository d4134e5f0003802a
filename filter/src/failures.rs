//! Endpoints that just refused or reset a connection, shared by every worker
//! of this Envoy (`<prefix>.failed.<pool>` in shared data, CAS-updated, keyed
//! like the in-flight table).
//!
//! A record is 16 bytes: u64 LE address hash, u64 LE host milliseconds of the
//! failure; records sorted by hash. An endpoint is avoided while its record
//! stands, until a request it served succeeds (the record is removed) or the
//! collector reports it healthy: ready, with a scrape newer than the failure.
//!
//! [`feedback`] works out from what Envoy says about a finished request
//! (`upstream.address`, response flags) which of the listed endpoints failed
//! and which one served.

use crate::state::PoolView;

const RECORD: usize = 16;
type Record = [u8; RECORD];

fn hash_of(record: &Record) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *record;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

fn time_of(record: &Record) -> u64 {
    let [.., a, b, c, d, e, f, g, h] = *record;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// The failure records of one pool, as stored in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailureTable {
    bytes: Vec<u8>,
}

impl FailureTable {
    /// A malformed value reads as empty: failures are only a hint.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let table = FailureTable { bytes };
        let records = table.records();
        let sorted = records.windows(2).all(|w| match w {
            [a, b] => hash_of(a) < hash_of(b),
            _ => true,
        });
        if table.bytes.len() == records.len() * RECORD && sorted {
            table
        } else {
            FailureTable::default()
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn records(&self) -> &[Record] {
        self.bytes.as_chunks::<RECORD>().0
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// When the endpoint with `hash` last failed, if it has not recovered since.
    pub fn failed_at(&self, hash: u64) -> Option<u64> {
        let records = self.records();
        records
            .binary_search_by_key(&hash, hash_of)
            .ok()
            .and_then(|i| records.get(i))
            .map(time_of)
    }

    /// Records a failure of `hash` at `now_ms`.
    pub fn mark(&mut self, hash: u64, now_ms: u64) {
        let record = hash.to_le_bytes().into_iter().chain(now_ms.to_le_bytes());
        match self.records().binary_search_by_key(&hash, hash_of) {
            Ok(i) => {
                self.bytes.splice(i * RECORD..(i + 1) * RECORD, record);
            }
            Err(i) => {
                self.bytes.splice(i * RECORD..i * RECORD, record);
            }
        }
    }

    /// Forgets a failure of `hash`; whether there was one.
    pub fn clear(&mut self, hash: u64) -> bool {
        match self.records().binary_search_by_key(&hash, hash_of) {
            Ok(i) => {
                self.bytes.drain(i * RECORD..(i + 1) * RECORD);
                true
            }
            Err(_) => false,
        }
    }

    /// Address hashes of the pool's endpoints to avoid now: failed and not
    /// since reported healthy (ready, scraped after the failure).
    /// `snapshot_age_ms` is how old the pool state is at `now_ms`.
    pub fn avoided(&self, pool: &PoolView, now_ms: u64, snapshot_age_ms: u32) -> Vec<u64> {
        if self.is_empty() {
            return Vec::new();
        }
        pool.endpoints
            .iter()
            .filter(|e| {
                self.failed_at(e.address_hash).is_some_and(|failed| {
                    let scraped_at =
                        now_ms.saturating_sub(u64::from(e.metrics_age_now_ms(snapshot_age_ms)));
                    !(e.ready && e.metrics_age_ms != u32::MAX && scraped_at > failed)
                })
            })
            .map(|e| e.address_hash)
            .collect()
    }
}

/// Shared-data key of a pool's table: `<key_prefix>.failed.<namespace>/<name>`
/// (the pool's id, as every per-pool table is keyed).
pub fn shared_key(key_prefix: &str, pool_id: &str) -> String {
    crate::pool_id::shared_key(key_prefix, "failed", pool_id, None)
}

/// Envoy response flags (`response.flags`) that mean the upstream connection
/// failed or was reset: UR (remote reset), UF (connection failure), UC
/// (connection termination), URX (retry limit exceeded).
pub const UPSTREAM_FAILURE_FLAGS: u64 = 0x10 | 0x20 | 0x40 | 0x8000;

/// What a finished request says about the endpoints it was offered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Feedback {
    /// Indices into the listed endpoints that failed.
    pub failed: Vec<usize>,
    /// Index of the endpoint that served the request without a connection
    /// failure.
    pub served: Option<usize>,
    /// The endpoint that served is not the first listed.
    pub retried: bool,
}

/// Infers [`Feedback`] from the endpoints the request listed (primary first),
/// the host Envoy last used (`upstream.address`) and whether the last
/// attempt's connection failed or was reset (`response.flags`). Entries
/// before the one that served were tried first and failed (override_host uses
/// the list in order on retries); a host outside the list (the fallback policy
/// chose it) means every listed entry failed.
pub fn feedback(listed: &[&str], last_host: Option<&str>, connection_failed: bool) -> Feedback {
    let Some(host) = last_host.filter(|h| !h.is_empty()) else {
        // No host was ever chosen: nothing to blame unless Envoy says the
        // connection failed, which then was the primary's.
        return Feedback {
            failed: if connection_failed && !listed.is_empty() {
                vec![0]
            } else {
                Vec::new()
            },
            served: None,
            retried: false,
        };
    };
    let position = listed.iter().position(|l| *l == host);
    let tried_before = position.unwrap_or(listed.len());
    let mut failed: Vec<usize> = (0..tried_before).collect();
    let served = match position {
        Some(i) if connection_failed => {
            failed.push(i);
            None
        }
        Some(i) => Some(i),
        None => None,
    };
    Feedback {
        failed,
        served,
        retried: position.is_some_and(|i| i > 0) || (position.is_none() && !listed.is_empty()),
    }
}

/// `x-gateway-destination-endpoint`'s value: the entries, comma-separated.
pub fn join_endpoints<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> String {
    endpoints.into_iter().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{endpoint, pool};

    fn view() -> PoolView {
        PoolView::from_pool(&pool(
            "p",
            vec![
                endpoint("10.0.0.1:8000", 0, 0.1),
                endpoint("10.0.0.2:8000", 0, 0.1),
            ],
        ))
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn marks_clear_and_round_trip() {
        let mut t = FailureTable::default();
        t.mark(9, 100);
        t.mark(3, 200);
        t.mark(9, 300);
        assert_eq!(t.failed_at(9), Some(300));
        assert_eq!(t.failed_at(3), Some(200));
        let t2 = FailureTable::from_bytes(t.clone().into_bytes());
        assert_eq!(t2, t);
        assert!(t.clear(3));
        assert!(!t.clear(3));
        assert_eq!(t.failed_at(3), None);
        assert!(FailureTable::from_bytes(vec![1, 2, 3]).is_empty());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_failed_endpoint_is_avoided_until_scraped_after_the_failure() {
        let p = view();
        let hash = p.endpoints[0].address_hash;
        let mut t = FailureTable::default();
        // Failed at 10_000; the endpoint's metrics are fresh relative to the snapshot.
        t.mark(hash, 10_000);
        let age = p.endpoints[0].metrics_age_now_ms(0);
        // A snapshot whose scrape predates the failure: avoided.
        assert_eq!(t.avoided(&p, 10_000 + u64::from(age), 0), vec![hash]);
        // Much later, the same (fresh) scrape age means a scrape after the failure.
        assert!(t.avoided(&p, 20_000 + u64::from(age), 0).is_empty());
        // Not ready: avoided whatever the scrape says.
        let mut down = pool("p", vec![endpoint("10.0.0.1:8000", 0, 0.1)]);
        down.endpoints[0].ready = false;
        let down = PoolView::from_pool(&down);
        assert_eq!(t.avoided(&down, 20_000, 0), vec![hash]);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn feedback_blames_the_entries_tried_before_the_one_that_served() {
        let listed = ["a", "b", "c"];
        assert_eq!(
            feedback(&listed, Some("a"), false),
            Feedback {
                failed: vec![],
                served: Some(0),
                retried: false
            }
        );
        assert_eq!(
            feedback(&listed, Some("b"), false),
            Feedback {
                failed: vec![0],
                served: Some(1),
                retried: true
            }
        );
        assert_eq!(
            feedback(&listed, Some("c"), true),
            Feedback {
                failed: vec![0, 1, 2],
                served: None,
                retried: true
            }
        );
        assert_eq!(
            feedback(&listed, Some("z"), false),
            Feedback {
                failed: vec![0, 1, 2],
                served: None,
                retried: true
            }
        );
        assert_eq!(feedback(&listed, None, true).failed, vec![0]);
        assert_eq!(feedback(&listed, None, false), Feedback::default());
        assert_eq!(join_endpoints(["a", "b"]), "a,b");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn keys_follow_the_inflight_tables() {
        assert_eq!(
            shared_key("llmgw", "ns/pool"),
            crate::inflight::shared_key("llmgw", "ns/pool").replace(".inflight.", ".failed.")
        );
    }
}
