
/// Processes, configuration and clients for the end-to-end layer (tests through Envoy, demo, overhead benchmark).
pub mod e2e;
