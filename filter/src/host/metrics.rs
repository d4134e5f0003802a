//! Envoy stats through `define_metric`: each distinct stat is defined once
//! per worker and its id cached by `Stat::key`, so the name is built only
//! the first time.

use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::stats::Stat;

/// Bound on distinct stat names one worker defines (a guard on top of the
/// label rules in `stats`).
const MAX_METRICS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Metrics {
    ids: HashMap<u64, u32>,
}

impl Metrics {
    fn id(&mut self, kind: MetricType, stat: Stat<'_>) -> Option<u32> {
        let key = stat.key();
        if let Some(&id) = self.ids.get(&key) {
            return Some(id);
        }
        if self.ids.len() >= MAX_METRICS {
            return None;
        }
        let id = hostcalls::define_metric(kind, &stat.name()).ok()?;
        self.ids.insert(key, id);
        Some(id)
    }

    pub fn increment(&mut self, stat: Stat<'_>) {
        self.add(stat, 1);
    }

    pub fn add(&mut self, stat: Stat<'_>, value: i64) {
        if let Some(id) = self.id(MetricType::Counter, stat) {
            let _ = hostcalls::increment_metric(id, value);
        }
    }

    pub fn record(&mut self, stat: Stat<'_>, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, stat) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
