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
