//! Messages (and, with the `grpc` feature, the tonic service) of
//! `pool_state.proto`. See that file for the meaning of every field.
#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/llmgw.poolstate.v1.rs"));
}
pub use generated::*;

/// Fully-qualified gRPC method path of `PoolState.Watch`, as the filter's
/// `open_grpc_stream` host call needs it split into service and method.
pub const SERVICE_NAME: &str = "llmgw.poolstate.v1.PoolState";
pub const WATCH_METHOD: &str = "Watch";
pub const GET_METHOD: &str = "Get";
pub const REPORT_PREFIXES_METHOD: &str = "ReportPrefixes";

/// The packed `Pool.prefix_placements` table: 12-byte records (u64 LE
/// affinity key, u32 LE endpoint index), sorted by key, one per key.
pub mod placements {
    pub const RECORD: usize = 12;

    /// Encodes `(key, endpoint index)` pairs; sorts them and keeps the first
    /// of equal keys.
    pub fn encode(pairs: &[(u64, u32)]) -> Vec<u8> {
        let mut sorted = pairs.to_vec();
        sorted.sort_by_key(|p| p.0);
        sorted.dedup_by_key(|p| p.0);
        let mut out = Vec::with_capacity(sorted.len() * RECORD);
        for (key, endpoint) in sorted {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&endpoint.to_le_bytes());
        }
        out
    }

    fn decode(record: &[u8; RECORD]) -> (u64, u32) {
        let [k0, k1, k2, k3, k4, k5, k6, k7, e0, e1, e2, e3] = *record;
        (
            u64::from_le_bytes([k0, k1, k2, k3, k4, k5, k6, k7]),
            u32::from_le_bytes([e0, e1, e2, e3]),
        )
    }

    /// The records of a table; a trailing partial record is ignored.
    pub fn records(table: &[u8]) -> impl Iterator<Item = (u64, u32)> + '_ {
        table.as_chunks::<RECORD>().0.iter().map(decode)
    }

    /// Whether `table` is whole records sorted by strictly increasing key (a
    /// table a reader may binary-search).
    pub fn well_formed(table: &[u8]) -> bool {
        let (records, rest) = table.as_chunks::<RECORD>();
        rest.is_empty()
            && records
                .windows(2)
                .all(|w| matches!(w, [a, b] if decode(a).0 < decode(b).0))
    }

    /// The endpoint index of `key` in a well-formed table.
    pub fn lookup(table: &[u8], key: u64) -> Option<u32> {
        let records = table.as_chunks::<RECORD>().0;
        let i = records.binary_search_by_key(&key, |r| decode(r).0).ok()?;
        records.get(i).map(|r| decode(r).1)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encodes_sorted_unique_records_and_finds_them() {
            let table = encode(&[(9, 1), (3, 0), (9, 7), (u64::MAX, 2)]);
            assert_eq!(table.len(), 3 * RECORD);
            assert!(well_formed(&table));
            assert_eq!(
                records(&table).collect::<Vec<_>>(),
                vec![(3, 0), (9, 1), (u64::MAX, 2)]
            );
            assert_eq!(lookup(&table, 9), Some(1));
            assert_eq!(lookup(&table, u64::MAX), Some(2));
            assert_eq!(lookup(&table, 4), None);
            assert_eq!(lookup(&[], 4), None);
        }

        #[test]
        fn unsorted_or_torn_tables_are_not_well_formed() {
            let mut torn = encode(&[(1, 0)]);
            torn.push(0);
            assert!(!well_formed(&torn));
            let mut unsorted = encode(&[(2, 0)]);
            unsorted.extend_from_slice(&encode(&[(1, 0)]));
            assert!(!well_formed(&unsorted));
            assert!(well_formed(&[]));
        }
    }
}
