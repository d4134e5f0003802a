//! `gateway-filter`: a proxy-wasm HTTP filter that picks the best model-server
//! endpoint of an InferencePool for every request, from pool state the
//! sidecar-collector streams in.
//!
//! Only [`host`] (feature `envoy`, on by default) talks to proxy-wasm. Every
//! other module is plain Rust that builds natively and for wasm32 without host
//! imports, so the routing benchmark links the very same picking code and the
//! logic tests also run under node.

pub mod prefix;
pub mod priority;
pub mod random;
pub mod scheduling;
pub mod state;
