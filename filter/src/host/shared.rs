//! Shared-data access with bounded CAS retries. Shared data is one map per
//! `vm_id` for the whole Envoy process, so every worker sees the same values.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};

use crate::inflight::InflightTable;

use super::log;

/// CAS attempts before giving up on an update (contention is a few workers).
const CAS_ATTEMPTS: usize = 32;

pub(crate) fn read(key: &str) -> Option<Vec<u8>> {
    hostcalls::get_shared_data(key)
        .ok()
        .and_then(|(bytes, _)| bytes)
}

pub(crate) fn read_with_cas(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Writes unconditionally; logs failures.
pub(crate) fn write(key: &str, value: &[u8]) -> bool {
    match hostcalls::set_shared_data(key, Some(value), None) {
        Ok(()) => true,
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("llmgw: writing shared data {key}: {status:?}"),
            );
            false
        }
    }
}

/// Read-modify-write under CAS. `update` returns the new value, or `None` to
/// leave the key alone. Returns whether a value was written.
pub(crate) fn update(key: &str, mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (current, cas) = read_with_cas(key);
        let Some(next) = update(current.as_deref()) else {
            return false;
        };
        // cas 0 / None: the key does not exist yet; the host then accepts any write.
        match hostcalls::set_shared_data(key, Some(&next), cas) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("llmgw: updating shared data {key}: {status:?}"),
                );
                return false;
            }
        }
    }
    log(
        LogLevel::Warn,
        &format!("llmgw: shared data {key}: too much contention"),
    );
    false
}

/// One more (`increment`) or one fewer request in flight to the endpoint
/// whose address hashes to `endpoint_hash`.
pub(crate) fn add_inflight(key: &str, endpoint_hash: u64, increment: bool) -> bool {
    update(key, |current| {
        let mut table = InflightTable::from_bytes(current.unwrap_or_default().to_vec());
        if increment {
            table.increment(endpoint_hash);
        } else {
            table.decrement(endpoint_hash);
        }
        Some(table.into_bytes())
    })
}

/// The in-flight table of a pool as read for a decision, with the CAS token
/// of that read, so the increment after the pick needs no second read.
pub(crate) struct InflightRead {
    pub key: String,
    pub table: InflightTable,
    cas: Option<u32>,
}

pub(crate) fn read_inflight(key: String) -> InflightRead {
    let (bytes, cas) = read_with_cas(&key);
    InflightRead {
        table: InflightTable::from_bytes(bytes.unwrap_or_default()),
        key,
        cas,
    }
}

/// Counts one more request to `endpoint_hash`: one write when no other
/// worker changed the table since `read`, the CAS loop otherwise.
pub(crate) fn increment_inflight(read: InflightRead, endpoint_hash: u64) -> bool {
    let InflightRead {
        key,
        mut table,
        cas,
    } = read;
    table.increment(endpoint_hash);
    match hostcalls::set_shared_data(&key, Some(&table.into_bytes()), cas) {
        Ok(()) => true,
        Err(Status::CasMismatch) => add_inflight(&key, endpoint_hash, true),
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("llmgw: updating shared data {key}: {status:?}"),
            );
            false
        }
    }
}
