/// Processes, configuration and clients for the end-to-end layer (tests through Envoy, demo, overhead benchmark).
pub mod deploy;
pub mod e2e;

/// The real filter `.wasm` hosted in-process on wasmtime (proxy-wasm ABI 0.2.1) with stateful fakes.
pub mod wasm_host;
