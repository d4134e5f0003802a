//! `gateway-filter`: a proxy-wasm HTTP filter that picks the best model-server
//! endpoint of an InferencePool for every request, from pool state the
//! sidecar-collector streams in.
//!
//! Only `host` (feature `envoy`, on by default) talks to proxy-wasm. Every
//! other module is plain Rust that builds natively and for wasm32 without host
//! imports, so the routing benchmark links the very same picking code and the
//! logic tests also run under node.

pub mod config;
pub mod decision;
pub mod errors;
pub mod failures;
pub mod headers;
pub mod inflight;
pub mod lease;
pub mod paths;
pub mod pending;
pub mod placement;
pub mod pool_id;
pub mod prefix;
pub mod priority;
pub mod random;
pub mod request;
pub mod rewrite;
pub mod scheduling;
pub mod sse;
pub mod state;
pub mod stats;

#[cfg(feature = "envoy")]
mod host;
