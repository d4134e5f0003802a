//! An in-process proxy-wasm host (ABI 0.2.1) on wasmtime that runs the exact
//! `.wasm` Envoy loads, with stateful fakes instead of scripted expectations:
//! shared data with real CAS shared between worker VMs, a controllable clock
//! driving ticks, a fake collector behind gRPC streams, stats, logs, and HTTP
//! streams whose local replies and upstream headers/bodies are captured.
//!
//! A test reads like a story:
//! ```no_run
//! # use integration::wasm_host::*; use std::time::Duration;
//! # fn main() -> anyhow::Result<()> {
//! let host = Host::new();
//! let filter = FilterModule::gateway_filter()?;
//! let worker = host.start_worker(&filter, r#"{"cluster_pools":{"pool-a":"pool-a"}}"#)?;
//! # let snapshot = pool_state::Snapshot::default();
//! host.advance(Duration::from_millis(100))?; // ticks: the worker takes the lease, opens Watch
//! host.collector().push(&snapshot)?;
//! let exchange = worker
//!     .request()
//!     .cluster("pool-a")
//!     .json_body(&serde_json::json!({"model": "m", "prompt": "hi"}))
//!     .send()?;
//! assert!(exchange.upstream_header("x-gateway-destination-endpoint").is_some());
//! # Ok(()) }
//! ```
//! What this host does not model (network filters, foreign functions) traps
//! with a message, so a filter that starts relying on it fails loudly.

pub mod abi;
mod collector;
mod context;
pub mod fixtures;
pub mod headers;
mod http;
mod imports;
mod module;
mod state;
mod worker;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

pub use abi::{Action, LogLevel, MetricType};
pub use collector::{Collector, GrpcStream, StreamState, UnaryCall, DEFAULT_COLLECTOR_CLUSTER};
pub use context::LocalReply;
pub use headers::HeaderMap;
pub use http::{DownstreamResponse, Exchange, HttpStream, Request, UpstreamRequest};
pub use module::{gateway_filter_path, FilterModule, FUEL_PER_CALLBACK};
pub use state::{HttpCallResponse, LogRecord, Metric, EPOCH_START_NS};
pub use worker::Worker;

use state::HostState;
use worker::WorkerCore;

/// Upper bound on event-delivery rounds in one pump: callbacks that keep
/// causing new events forever are a filter bug, not something to wait out.
const MAX_PUMP_ROUNDS: usize = 10_000;
/// Upper bound on ticks one `advance` may run.
const MAX_TICKS_PER_ADVANCE: usize = 1_000_000;

/// One Envoy process: what its workers share. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    state: Arc<Mutex<HostState>>,
    workers: Mutex<Vec<(u32, Weak<Mutex<WorkerCore>>)>>,
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    pub fn new() -> Host {
        Host {
            inner: Arc::new(HostInner {
                state: Arc::new(Mutex::new(HostState::new())),
                workers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts a worker VM the way Envoy does: create the root context,
    /// `proxy_on_vm_start`, `proxy_on_configure` with `plugin_configuration`.
    /// A rejected configuration is an error carrying the filter's error logs.
    pub fn start_worker(
        &self,
        module: &FilterModule,
        plugin_configuration: &str,
    ) -> anyhow::Result<Worker> {
        Worker::start(self, module, b"", plugin_configuration.as_bytes())
    }

    /// Like [`Host::start_worker`] with a VM configuration and raw bytes.
    pub fn start_worker_with(
        &self,
        module: &FilterModule,
        vm_configuration: &[u8],
        plugin_configuration: &[u8],
    ) -> anyhow::Result<Worker> {
        Worker::start(self, module, vm_configuration, plugin_configuration)
    }

    pub fn collector(&self) -> Collector<'_> {
        Collector { host: self }
    }

    /// Host time, nanoseconds since the unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.lock_state().now_ns
    }

    pub fn now_unix_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }

    /// Moves the clock forward by `by`, running every worker's ticks in time
    /// order as they fall due, and delivering callouts in between.
    pub fn advance(&self, by: Duration) -> anyhow::Result<()> {
        let target = self.now_ns() + by.as_nanos() as u64;
        self.pump()?;
        for _ in 0..MAX_TICKS_PER_ADVANCE {
            let workers = self.live_workers();
            let due = workers
                .iter()
                .filter_map(|(_, core)| worker::next_tick_of(core))
                .min();
            let Some(due) = due.filter(|t| *t <= target) else {
                self.lock_state().now_ns = target;
                return self.pump();
            };
            {
                let mut state = self.lock_state();
                state.now_ns = state.now_ns.max(due);
            }
            for (_, core) in &workers {
                worker::tick_if_due(core, due)?;
            }
            self.pump()?;
        }
        anyhow::bail!("advance({by:?}) ran more than {MAX_TICKS_PER_ADVANCE} ticks")
    }

    /// Delivers every pending gRPC message/close, HTTP callout response and
    /// queue notification to the workers, until none is left.
    pub fn pump(&self) -> anyhow::Result<()> {
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut delivered = 0;
            for (id, core) in self.live_workers() {
                delivered += worker::deliver_pending(self, id, &core)?;
            }
            if delivered == 0 {
                return Ok(());
            }
        }
        anyhow::bail!("events still pending after {MAX_PUMP_ROUNDS} delivery rounds")
    }

    /// A shared-data value and its CAS, as the VMs see it.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock_state()
            .shared_get(key)
            .map(|(value, cas)| (value.to_vec(), cas))
    }

    /// Every shared-data key, sorted.
    pub fn shared_data_keys(&self) -> Vec<String> {
        self.lock_state().shared_keys()
    }

    /// Writes shared data as another plugin or a stale VM might.
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        // cas 0 never mismatches
        let _ = self.lock_state().shared_set(key, value.to_vec(), 0);
    }

    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.lock_state()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .cloned()
    }

    pub fn metrics(&self) -> Vec<Metric> {
        self.lock_state().metrics.clone()
    }

    pub fn logs(&self) -> Vec<LogRecord> {
        self.lock_state().logs.clone()
    }

    /// Log lines at `level` or above.
    pub fn logs_at_least(&self, level: LogLevel) -> Vec<LogRecord> {
        self.lock_state()
            .logs
            .iter()
            .filter(|l| l.level >= level)
            .cloned()
            .collect()
    }

    /// Sets a property every context sees (e.g. `["node", "id"]`).
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let path = path.iter().map(|p| p.to_string()).collect();
        self.lock_state().properties.insert(path, value.to_vec());
    }

    /// Makes `proxy_http_call` to `cluster` answer `response` (`None`: the
    /// call fails, as on a timeout). Calls to other clusters are refused.
    pub fn set_http_upstream(&self, cluster: &str, response: Option<HttpCallResponse>) {
        self.lock_state()
            .http_upstreams
            .insert(cluster.to_string(), response);
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, HostState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn shared_state(&self) -> Arc<Mutex<HostState>> {
        self.inner.state.clone()
    }

    fn workers_list(&self) -> MutexGuard<'_, Vec<(u32, Weak<Mutex<WorkerCore>>)>> {
        self.inner.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register_worker(&self, id: u32, core: &Arc<Mutex<WorkerCore>>) {
        self.workers_list().push((id, Arc::downgrade(core)));
    }

    pub(crate) fn forget_worker(&self, id: u32) {
        self.workers_list().retain(|(w, _)| *w != id);
        self.lock_state().forget_worker(id);
    }

    fn live_workers(&self) -> Vec<(u32, Arc<Mutex<WorkerCore>>)> {
        self.workers_list()
            .iter()
            .filter_map(|(id, weak)| weak.upgrade().map(|core| (*id, core)))
            .collect()
    }

    /// The worker's warning-or-worse log lines, for error messages.
    pub(crate) fn error_logs_of(&self, worker: u32) -> String {
        let lines: Vec<String> = self
            .lock_state()
            .logs
            .iter()
            .filter(|l| l.worker == worker && l.level >= LogLevel::Warn)
            .map(|l| format!("\n  [{:?}] {}", l.level, l.message))
            .collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its logs:{}", lines.concat())
        }
    }
}
