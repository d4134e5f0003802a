//! Where this Envoy sent prefix groups the collector has not placed yet.
//!
//! Between a group's first request and the snapshot that carries its
//! placement (one report tick plus one publish, ~50-250 ms), the group's next
//! requests may reach another worker. Each worker remembers its own picks
//! ([`crate::placement::PlacementMemory`]); this table makes them Envoy-wide:
//! the host keeps it in shared data, split into [`BUCKETS`] values by key
//! (`<prefix>.pending.<namespace>/<pool>.<key % BUCKETS>`) so each read and CAS update
//! touches a few hundred bytes. Entries live [`PENDING_TTL_MS`]: by then the
//! placement has arrived, or the worker reports the key again.
//!
//! Encoding: 24-byte records (u64 LE key, u64 LE endpoint address hash,
//! u64 LE host ms), newest last, at most [`MAX_PER_BUCKET`].

pub const BUCKETS: u64 = 64;
pub const PENDING_TTL_MS: u64 = 2_000;
pub const MAX_PER_BUCKET: usize = 32;
const RECORD: usize = 24;

/// The shared-data key of the bucket holding `key`; `pool_id` is
/// `namespace/name` ([`crate::pool_id::pool_id`]).
pub fn shared_key(key_prefix: &str, pool_id: &str, key: u64) -> String {
    let bucket = (key % BUCKETS).to_string();
    crate::pool_id::shared_key(key_prefix, "pending", pool_id, Some(&bucket))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: u64,
    endpoint_hash: u64,
    at_ms: u64,
}

fn word(bytes: &[u8; RECORD], i: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(src) = bytes.get(i * 8..i * 8 + 8) {
        w.copy_from_slice(src);
    }
    u64::from_le_bytes(w)
}

/// The bucket's entries; a trailing partial record (a torn or foreign value)
/// is ignored.
fn entries(bytes: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    bytes.as_chunks::<RECORD>().0.iter().map(|r| Entry {
        key: word(r, 0),
        endpoint_hash: word(r, 1),
        at_ms: word(r, 2),
    })
}

fn live(e: &Entry, now_ms: u64) -> bool {
    now_ms.saturating_sub(e.at_ms) < PENDING_TTL_MS
}

/// The endpoint (address hash) `key` was sent to, if recorded recently.
pub fn lookup(bucket: &[u8], key: u64, now_ms: u64) -> Option<u64> {
    entries(bucket)
        .filter(|e| e.key == key && live(e, now_ms))
        .last()
        .map(|e| e.endpoint_hash)
}

/// The bucket with `key → endpoint_hash` recorded at `now_ms`: expired
/// entries and the key's older entry dropped, the oldest dropped when full.
pub fn insert(bucket: Option<&[u8]>, key: u64, endpoint_hash: u64, now_ms: u64) -> Vec<u8> {
    let mut kept: Vec<Entry> = entries(bucket.unwrap_or_default())
        .filter(|e| e.key != key && live(e, now_ms))
        .collect();
    kept.push(Entry {
        key,
        endpoint_hash,
        at_ms: now_ms,
    });
    let skip = kept.len().saturating_sub(MAX_PER_BUCKET);
    let mut out = Vec::with_capacity((kept.len() - skip) * RECORD);
    for e in kept.iter().skip(skip) {
        out.extend_from_slice(&e.key.to_le_bytes());
        out.extend_from_slice(&e.endpoint_hash.to_le_bytes());
        out.extend_from_slice(&e.at_ms.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn records_are_found_until_they_expire() {
        let b = insert(None, 7, 70, 1_000);
        let b = insert(Some(&b), 8, 80, 1_500);
        assert_eq!(lookup(&b, 7, 1_000), Some(70));
        assert_eq!(lookup(&b, 8, 1_600), Some(80));
        assert_eq!(lookup(&b, 9, 1_600), None);
        assert_eq!(lookup(&b, 7, 1_000 + PENDING_TTL_MS), None, "expired");
        // re-recording replaces, and expired entries go on the next insert
        let b = insert(Some(&b), 8, 81, 3_100);
        assert_eq!(b.len(), RECORD, "7 expired, 8 replaced");
        assert_eq!(lookup(&b, 8, 3_100), Some(81));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_full_bucket_drops_its_oldest_and_bad_bytes_read_as_empty() {
        let mut b = Vec::new();
        for key in 0..(MAX_PER_BUCKET as u64 + 5) {
            b = insert(Some(&b), key, key, 10);
        }
        assert_eq!(b.len(), MAX_PER_BUCKET * RECORD);
        assert_eq!(lookup(&b, 0, 10), None);
        assert_eq!(
            lookup(&b, MAX_PER_BUCKET as u64 + 4, 10),
            Some(MAX_PER_BUCKET as u64 + 4)
        );
        assert_eq!(lookup(b"short", 0, 0), None);
        let mut torn = insert(None, 1, 2, 3);
        torn.extend_from_slice(b"xx");
        assert_eq!(lookup(&torn, 1, 3), Some(2));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn buckets_split_keys_per_pool() {
        assert_eq!(shared_key("llmgw", "ns/p", 65), "llmgw.pending.ns/p.1");
        assert_ne!(shared_key("llmgw", "p", 1), shared_key("llmgw", "q", 1));
    }
}
