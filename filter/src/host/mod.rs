//! The proxy-wasm glue: the only code that talks to the host. Everything it
//! decides comes from the plain-Rust modules; this layer moves bytes between
//! Envoy (headers, bodies, shared data, gRPC, stats) and them, and turns every
//! host error into a log line or a local reply, never a panic.

mod http;
mod metrics;
mod root;
mod shared;
mod worker;

use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::GatewayRoot::new(context_id)));
}}

/// Host wall-clock time in nanoseconds since the epoch (0 if unavailable:
/// `SystemTime::now()` panics on wasm32-unknown-unknown).
pub(crate) fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

pub(crate) fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// The request headers as the host serialises them (`headers::parse_header_map`
/// reads them), empty when the host has none. The SDK's `get_map_bytes` would
/// decode every name as UTF-8 and trap the VM on one that is not; this reads
/// the same host call's bytes and leaves the checking to plain, tested Rust.
pub(crate) fn request_header_map() -> Vec<u8> {
    const HTTP_REQUEST_HEADERS: u32 = 0;
    const STATUS_OK: u32 = 0;
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length into the two locals. On
    // success it allocated `size` bytes at `data` through the SDK's
    // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes from
    // the global allocator), so a Vec of that length and capacity owns them.
    unsafe {
        let status = proxy_get_header_map_pairs(HTTP_REQUEST_HEADERS, &mut data, &mut size);
        if status != STATUS_OK || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// Sets the one-element property `path` (Envoy keeps it as filter state
/// `wasm.<path>`), returning the host's status code on failure. The SDK's
/// `set_property` panics (traps the VM) on any status other than Ok.
pub(crate) fn set_property(path: &str, value: &[u8]) -> Result<(), u32> {
    const STATUS_OK: u32 = 0;
    // SAFETY: both pointers point at live byte slices of the given lengths,
    // which the host only reads during the call.
    let status =
        unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(status)
    }
}
