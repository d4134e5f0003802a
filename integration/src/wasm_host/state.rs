//! Process-wide state that Envoy shares between its worker VMs: shared data
//! with CAS, shared queues, stats, the clock, logs and the fake upstreams.
//! Host functions lock it briefly; the host never holds the lock while it
//! calls into a VM.

use std::collections::{HashMap, VecDeque};

use super::abi::{LogLevel, MetricType};
use super::collector::CollectorState;
use super::headers::HeaderMap;

/// Host time starts at a realistic wall-clock value (2026-01-01T00:00:00Z) so
/// a filter that stores unix milliseconds sees plausible numbers.
pub const EPOCH_START_NS: u64 = 1_767_225_600_000_000_000;

/// One line a VM logged through `proxy_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub worker: u32,
    pub level: LogLevel,
    pub message: String,
}

/// One stat, shared by every worker like Envoy's stats store.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricType,
    /// Counter or gauge value (gauges may go negative through increments).
    pub value: i64,
    /// Every value recorded into a histogram.
    pub samples: Vec<u64>,
}

/// A response a test configures for `proxy_http_call` to one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Something the host must deliver to a worker's VM outside any request.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    GrpcMessage {
        token: u32,
        message: Vec<u8>,
    },
    GrpcClose {
        token: u32,
        status: u32,
        message: String,
    },
    HttpCallResponse {
        token: u32,
        response: Option<HttpCallResponse>,
    },
    QueueReady {
        queue_id: u32,
    },
}

#[derive(Debug, Default)]
pub(crate) struct SharedQueue {
    pub owner_worker: u32,
    pub items: VecDeque<Vec<u8>>,
}

/// Everything shared across workers of one [`super::Host`].
#[derive(Debug)]
pub(crate) struct HostState {
    pub now_ns: u64,
    shared_data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    pub queues: Vec<SharedQueue>,
    pub queue_ids: HashMap<String, u32>,
    pub metrics: Vec<Metric>,
    pub logs: Vec<LogRecord>,
    pub collector: CollectorState,
    pub http_upstreams: HashMap<String, Option<HttpCallResponse>>,
    /// Properties every context sees (an HTTP context's own ones win).
    pub properties: HashMap<Vec<String>, Vec<u8>>,
    pub pending: HashMap<u32, VecDeque<Event>>,
    pub next_worker_id: u32,
}

impl HostState {
    pub fn new() -> Self {
        Self {
            now_ns: EPOCH_START_NS,
            shared_data: HashMap::new(),
            next_cas: 1,
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            metrics: Vec::new(),
            logs: Vec::new(),
            collector: CollectorState::default(),
            http_upstreams: HashMap::new(),
            properties: default_properties(),
            pending: HashMap::new(),
            next_worker_id: 1,
        }
    }

    /// Value and CAS token of a shared-data key (Envoy's `SharedData::get`).
    pub fn shared_get(&self, key: &str) -> Option<(&[u8], u32)> {
        self.shared_data
            .get(key)
            .map(|(value, cas)| (value.as_slice(), *cas))
    }

    /// Envoy's `SharedData::set`: a non-zero `cas` must match the stored one
    /// (when the key exists); every successful write gets a fresh CAS.
    pub fn shared_set(&mut self, key: &str, value: Vec<u8>, cas: u32) -> Result<(), CasMismatch> {
        if let Some((_, current)) = self.shared_data.get(key) {
            if cas != 0 && cas != *current {
                return Err(CasMismatch);
            }
        }
        let new_cas = self.next_cas;
        self.next_cas = self.next_cas.checked_add(1).unwrap_or(1);
        self.shared_data.insert(key.to_string(), (value, new_cas));
        Ok(())
    }

    pub fn shared_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.shared_data.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Id of a stat, defining it on first use (ids start at 1).
    pub fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32, String> {
        if let Some(index) = self.metrics.iter().position(|m| m.name == name) {
            if self.metrics[index].kind != kind {
                return Err(format!(
                    "metric {name:?} defined as {:?} and again as {kind:?}",
                    self.metrics[index].kind
                ));
            }
            return Ok(index as u32 + 1);
        }
        self.metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        Ok(self.metrics.len() as u32)
    }

    pub fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        (id as usize)
            .checked_sub(1)
            .and_then(|index| self.metrics.get_mut(index))
    }

    pub fn push_event(&mut self, worker: u32, event: Event) {
        self.pending.entry(worker).or_default().push_back(event);
    }

    pub fn log(&mut self, worker: u32, level: LogLevel, message: String) {
        self.logs.push(LogRecord {
            worker,
            level,
            message,
        });
    }
}

/// What Envoy reports for a plugin named `gateway-filter` in an unnamed VM.
fn default_properties() -> HashMap<Vec<String>, Vec<u8>> {
    let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
    HashMap::from([
        (path("plugin_name"), b"gateway-filter".to_vec()),
        (path("plugin_root_id"), Vec::new()),
        (path("plugin_vm_id"), Vec::new()),
        (path("node.id"), b"wasm-host".to_vec()),
    ])
}

/// A CAS write lost against a concurrent writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_write_fails_against_a_newer_value() {
        let mut state = HostState::new();
        assert!(state.shared_get("k").is_none());
        state.shared_set("k", b"a".to_vec(), 0).unwrap();
        let (_, cas) = state.shared_get("k").unwrap();
        state.shared_set("k", b"b".to_vec(), cas).unwrap();
        assert_eq!(state.shared_set("k", b"c".to_vec(), cas), Err(CasMismatch));
        let (value, new_cas) = state.shared_get("k").unwrap();
        assert_eq!(value, b"b");
        assert_ne!(new_cas, cas);
        state.shared_set("k", b"d".to_vec(), 0).unwrap();
        assert_eq!(state.shared_get("k").unwrap().0, b"d");
    }

    #[test]
    fn metric_ids_are_stable_and_kinds_must_agree() {
        let mut state = HostState::new();
        let a = state.define_metric(MetricType::Counter, "a").unwrap();
        assert_eq!(state.define_metric(MetricType::Counter, "a").unwrap(), a);
        assert!(state.define_metric(MetricType::Gauge, "a").is_err());
        assert!(state.metric_mut(0).is_none());
        assert!(state.metric_mut(a).is_some());
    }
}
