//! The sidecar collector: discovers inference pools and their model-server
//! pods (from a manifest directory or the Kubernetes API), scrapes every
//! endpoint's `/metrics`, and serves the pool state to gateway filters over
//! gRPC (`pool_state.proto`). See docs/COLLECTOR.md.

pub mod app;
pub mod cli;
pub mod discovery;
pub mod grpc;
pub mod http;
pub mod last_valid;
pub mod metrics_parse;
pub mod model;
pub mod observations;
pub mod pace;
pub mod placement;
pub mod resources;
pub mod scrape;
pub mod snapshot;
pub mod telemetry;
