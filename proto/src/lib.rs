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
