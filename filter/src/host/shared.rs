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

/// Adds `delta` (+1 or -1) to an endpoint's in-flight count.
pub(crate) fn add_inflight(key: &str, address: &str, increment: bool) -> bool {
    update(key, |current| {
        let mut table = InflightTable::decode(current.unwrap_or_default());
        if increment {
            table.increment(address);
        } else {
            table.decrement(address);
        }
        Some(table.encode())
    })
}
