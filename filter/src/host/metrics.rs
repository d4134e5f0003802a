//! Envoy stats through `define_metric`: each distinct name is defined once per
//! worker and its id cached.

use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Bound on distinct stat names one worker defines (a guard on top of the
/// label rules in `stats`).
const MAX_METRICS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Metrics {
    ids: HashMap<String, u32>,
}

impl Metrics {
    fn id(&mut self, kind: MetricType, name: String) -> Option<u32> {
        if let Some(&id) = self.ids.get(&name) {
            return Some(id);
        }
        if self.ids.len() >= MAX_METRICS {
            return None;
        }
        let id = hostcalls::define_metric(kind, &name).ok()?;
        self.ids.insert(name, id);
        Some(id)
    }

    pub fn increment(&mut self, name: String) {
        if let Some(id) = self.id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub fn record(&mut self, name: String, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
