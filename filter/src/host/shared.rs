//! Shared-data access with bounded CAS retries. Shared data is one map per
//! `vm_id` for the whole Envoy process, so every worker sees the same values.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};

use crate::inflight::InflightTable;
use crate::pending;
use crate::placement::{PlacementMemory, PlacementState};

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
pub(crate) fn update(key: &str, update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>) -> bool {
    update_from(key, read_with_cas(key), update)
}

/// [`update`] starting from a read the caller already made (value and CAS
/// token); later attempts read again.
fn update_from(
    key: &str,
    first_read: (Option<Vec<u8>>, Option<u32>),
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> bool {
    let mut read = first_read;
    for _ in 0..CAS_ATTEMPTS {
        let (current, cas) = read;
        let Some(next) = update(current.as_deref()) else {
            return false;
        };
        // cas 0 / None: the key does not exist yet; the host then accepts any write.
        match hostcalls::set_shared_data(key, Some(&next), cas) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => read = read_with_cas(key),
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

/// Adds one request in flight to the endpoint whose address hashes to
/// `endpoint_hash` (`increment`), or takes one away.
fn inflight_step(
    endpoint_hash: u64,
    increment: bool,
) -> impl FnMut(Option<&[u8]>) -> Option<Vec<u8>> {
    move |current| {
        let mut table = InflightTable::from_bytes(current.unwrap_or_default().to_vec());
        if increment {
            table.increment(endpoint_hash);
        } else {
            table.decrement(endpoint_hash);
        }
        Some(table.into_bytes())
    }
}

/// One request to that endpoint finished.
pub(crate) fn release_inflight(key: &str, endpoint_hash: u64) -> bool {
    update(key, inflight_step(endpoint_hash, false))
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

/// Counts one more request to `endpoint_hash`, starting from `read`: one
/// write when no other worker changed the table since.
pub(crate) fn increment_inflight(read: &mut InflightRead, endpoint_hash: u64) -> bool {
    let first_read = (Some(std::mem::take(&mut read.table).into_bytes()), read.cas);
    update_from(&read.key, first_read, inflight_step(endpoint_hash, true))
}

/// A worker's placement state in Envoy: its own memory first, then the
/// Envoy-wide pending table in shared data (see `crate::pending`), which every
/// worker's record of an unplaced group updates.
pub(crate) struct EnvoyPlacement<'a> {
    pub memory: &'a mut PlacementMemory,
    pub key_prefix: &'a str,
}

impl PlacementState for EnvoyPlacement<'_> {
    fn sent_to(&mut self, pool: &str, key: u64, now_ms: u64) -> Option<u64> {
        self.memory.unplaced_endpoint(key).or_else(|| {
            read(&pending::shared_key(self.key_prefix, pool, key))
                .and_then(|bucket| pending::lookup(&bucket, key, now_ms))
        })
    }

    fn record(
        &mut self,
        pool: &str,
        key: u64,
        endpoint_hash: u64,
        placed: bool,
        now_ms: u64,
    ) -> bool {
        let due = self.memory.record(key, endpoint_hash, placed, now_ms);
        if due && !placed {
            update(&pending::shared_key(self.key_prefix, pool, key), |bucket| {
                Some(pending::insert(bucket, key, endpoint_hash, now_ms))
            });
        }
        due
    }
}
