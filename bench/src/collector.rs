//! The modelled sidecar-collector: every scrape interval it reads every pod's
//! metrics (as `/metrics` would expose them) and publishes one `pool_state::Pool`
//! that gateways receive a little later. Between two scrapes the gateways route
//! on metrics that are up to one interval (plus delivery) old — the staleness a
//! real deployment has.

use std::collections::HashMap;

use pool_state::{Endpoint, FailureMode, Pool};
use sidecar_collector::placement::PrefixPlacements;
use vllm_sim::engine::EngineStats;

/// Timing of the collector and of snapshot delivery, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectorTiming {
    /// Time between two scrapes of a pod (the collector's `--scrape-interval`).
    pub scrape_interval_s: f64,
    /// From reading the pods to the snapshot being published (scrape round trip).
    pub publish_delay_s: f64,
    /// From publication to a gateway replica using it (gRPC push + shared data).
    pub delivery_delay_s: f64,
    /// A replica's root context sends the affinity keys its workers queued
    /// once per tick (`ReportPrefixes`), arriving this much later.
    pub report_tick_s: f64,
    pub report_delay_s: f64,
}

impl Default for CollectorTiming {
    fn default() -> Self {
        CollectorTiming {
            scrape_interval_s: 0.050,
            publish_delay_s: 0.002,
            delivery_delay_s: 0.001,
            report_tick_s: 0.100,
            report_delay_s: 0.001,
        }
    }
}

pub const POOL_NAME: &str = "bench-pool";

/// Endpoint address of pod `i`, as the collector would report it.
pub fn pod_address(i: usize) -> String {
    format!(
        "10.{}.{}.{}:8000",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// The endpoint addresses of a pool of `pods` pods, in endpoint order.
pub fn pod_addresses(pods: usize) -> Vec<String> {
    (0..pods).map(pod_address).collect()
}

/// Builds the pool message from one scrape of every pod (`stats[i]` is the
/// pod at `addresses[i]`) and the collector's prefix placements.
/// `metrics_age_ms` is the age of the scraped values when the snapshot is
/// published.
pub fn pool_from_scrape(
    stats: &[EngineStats],
    addresses: &[&str],
    metrics_age_ms: u32,
    placements: &PrefixPlacements,
) -> Pool {
    let mut adapter_names: Vec<String> = Vec::new();
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut intern = |name: &str| -> u32 {
        if let Some(&i) = interned.get(name) {
            return i;
        }
        let i = adapter_names.len() as u32;
        adapter_names.push(name.to_string());
        interned.insert(name.to_string(), i);
        i
    };
    let endpoints = stats
        .iter()
        .zip(addresses)
        .enumerate()
        .map(|(i, (s, address))| Endpoint {
            address: address.to_string(),
            pod: format!("pod-{i}"),
            ready: true,
            metrics_age_ms,
            consecutive_scrape_failures: 0,
            waiting: s.waiting,
            running: s.running,
            kv_cache_usage: s.kv_cache_usage as f32,
            running_adapters: s.running_adapters.iter().map(|a| intern(a)).collect(),
            waiting_adapters: s.waiting_adapters.iter().map(|a| intern(a)).collect(),
            max_loras: s.max_loras,
            block_size: s.block_size,
            num_gpu_blocks: s.num_gpu_blocks,
        })
        .collect();
    Pool {
        name: POOL_NAME.to_string(),
        namespace: "default".to_string(),
        failure_mode: FailureMode::FailClose as i32,
        adapter_names,
        endpoints,
        model_rules: Vec::new(),
        objectives: Vec::new(),
        prefix_placements: placements.table(addresses),
        learns_prefix_placements: true,
    }
}
