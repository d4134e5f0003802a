//! The plugin configuration (JSON in the Envoy filter config), validated once
//! in `on_configure` so a typo fails loudly instead of routing oddly.

use std::collections::HashMap;

use serde::Deserialize;

use crate::prefix::PrefixConfig;
use crate::priority::SaturationThresholds;
use crate::scheduling::{SchedulerConfig, ScorerWeights};

/// See docs/ARCHITECTURE.md "Filter". Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Envoy cluster (HTTP/2) of the sidecar-collector's gRPC endpoint.
    pub collector_cluster: String,
    /// Prefix of every shared-data key (Istio shares one vm_id across plugins).
    pub key_prefix: String,
    /// Envoy cluster name → InferencePool name; unlisted clusters map to the
    /// pool of the same name.
    pub cluster_pools: HashMap<String, String>,
    /// Larger bodies get 413 before they are buffered whole.
    pub max_body_bytes: u64,
    /// State older than this follows the pool's failure mode.
    pub state_timeout_ms: u32,
    /// Endpoint metrics older than this are stale (GIE: 200 ms).
    pub metrics_stale_ms: u32,
    /// Put the public model name back into non-streaming JSON responses.
    pub restore_public_model_name: bool,
    /// Also tell the pod the pool and target model (`x-gateway-pool`,
    /// `x-gateway-target-model`). Off by default: each header Envoy's wasm
    /// host sets on a request costs ~10 µs of Envoy CPU (BENCHMARKS.md,
    /// overhead), and the pod already sees the target model in the body.
    pub upstream_info_headers: bool,
    /// Next-best distinct endpoints named after the pick in
    /// `x-gateway-destination-endpoint` (Envoy's retries go to them in order).
    pub fallbacks: usize,
    pub scorers: ScorerWeights,
    pub saturation: SaturationThresholds,
    pub prefix: PrefixConfig,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            collector_cluster: "llmgw_collector".into(),
            key_prefix: "llmgw".into(),
            cluster_pools: HashMap::new(),
            max_body_bytes: 20 * 1024 * 1024,
            state_timeout_ms: 3000,
            metrics_stale_ms: 200,
            restore_public_model_name: false,
            upstream_info_headers: false,
            fallbacks: DEFAULT_FALLBACKS,
            scorers: ScorerWeights::default(),
            saturation: SaturationThresholds::default(),
            prefix: PrefixConfig::default(),
        }
    }
}

/// Fallbacks named by default (the rendered routes retry twice).
pub const DEFAULT_FALLBACKS: usize = 2;
/// Most fallbacks accepted (each is a scheduler pass).
pub const MAX_FALLBACKS: usize = 8;

/// Largest accepted `max_body_bytes`: Envoy buffers the body in memory.
pub const MAX_BODY_LIMIT: u64 = 1 << 30;

impl PluginConfig {
    /// Parses and validates; an empty configuration means all defaults.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let config: PluginConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            PluginConfig::default()
        } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("invalid plugin configuration: expected a JSON object".into());
        } else {
            serde_json::from_slice(bytes)
                .map_err(|e| format!("invalid plugin configuration: {e}"))?
        };
        config
            .validate()
            .map_err(|e| format!("invalid plugin configuration: {e}"))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.collector_cluster.trim().is_empty() {
            return Err("collector_cluster must not be empty".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.chars().any(|c| c.is_whitespace()) {
            return Err("key_prefix must be non-empty without whitespace".into());
        }
        if let Some((cluster, _)) = self.cluster_pools.iter().find(|(_, p)| p.is_empty()) {
            return Err(format!("cluster_pools.{cluster} must name a pool"));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(format!("max_body_bytes must be in 1..={MAX_BODY_LIMIT}"));
        }
        if self.state_timeout_ms == 0 {
            return Err("state_timeout_ms must be > 0".into());
        }
        if self.fallbacks > MAX_FALLBACKS {
            return Err(format!("fallbacks must be in 0..={MAX_FALLBACKS}"));
        }
        if self.metrics_stale_ms == 0 {
            return Err("metrics_stale_ms must be > 0".into());
        }
        self.scorers.validate()?;
        self.saturation.validate()?;
        self.prefix.validate()
    }

    /// The InferencePool an Envoy cluster routes to.
    pub fn pool_for_cluster<'a>(&'a self, cluster: &'a str) -> &'a str {
        self.cluster_pools
            .get(cluster)
            .map_or(cluster, String::as_str)
    }

    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            weights: self.scorers.clone(),
            metrics_stale_ms: self.metrics_stale_ms,
            saturation: self.saturation.clone(),
            prefix: self.prefix.clone(),
        }
    }

    pub fn lease_key(&self) -> String {
        format!("{}.lease", self.key_prefix)
    }

    pub fn snapshot_key(&self) -> String {
        format!("{}.snapshot", self.key_prefix)
    }

    pub fn snapshot_meta_key(&self) -> String {
        format!("{}.snapshot.meta", self.key_prefix)
    }

    /// The shared queue carrying prefix reports to the lease holder.
    pub fn prefix_reports_queue(&self) -> String {
        format!("{}.prefix_reports", self.key_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn empty_means_defaults() {
        assert_eq!(PluginConfig::parse(b"").unwrap(), PluginConfig::default());
        assert_eq!(
            PluginConfig::parse(b" \n").unwrap(),
            PluginConfig::default()
        );
        assert_eq!(PluginConfig::parse(b"{}").unwrap(), PluginConfig::default());
        let scheduler = crate::scheduling::SchedulerConfig::default();
        assert_eq!(scheduler.metrics_stale_ms, 200);
        assert_eq!(scheduler, PluginConfig::default().scheduler_config());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn the_documented_example_parses() {
        let c = PluginConfig::parse(
            br#"{
  "collector_cluster": "llmgw_collector",
  "key_prefix": "llmgw",
  "cluster_pools": {"envoy_cluster_name": "pool_name"},
  "max_body_bytes": 20971520,
  "state_timeout_ms": 3000,
  "metrics_stale_ms": 200,
  "restore_public_model_name": false,
  "upstream_info_headers": false,
  "scorers": {"queue": 2.0, "kv_cache": 2.0, "lora": 1.0, "prefix": 6.0, "inflight": 1.0},
  "saturation": {"queue_threshold": 5, "kv_threshold": 0.8},
  "prefix": {"max_blocks": 128, "affinity_depth_blocks": 8, "load_factor": 1.25, "load_slack": 1}
}"#,
        )
        .unwrap();
        assert_eq!(c.pool_for_cluster("envoy_cluster_name"), "pool_name");
        assert_eq!(c.pool_for_cluster("llm"), "llm");
        assert_eq!(c.prefix.affinity_depth_blocks, 8);
        assert_eq!(c.scheduler_config().metrics_stale_ms, 200);
        assert_eq!(c.snapshot_meta_key(), "llmgw.snapshot.meta");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn bad_configs_say_what_is_wrong() {
        for (json, needle) in [
            (r#"{"colector_cluster":"x"}"#, "unknown field"),
            (r#"{"scorers":{"qeue":1}}"#, "unknown field"),
            (r#"{"max_body_bytes":-1}"#, "invalid value"),
            (r#"{"max_body_bytes":0}"#, "max_body_bytes"),
            (r#"{"state_timeout_ms":0}"#, "state_timeout_ms"),
            (r#"{"metrics_stale_ms":0}"#, "metrics_stale_ms"),
            (r#"{"collector_cluster":" "}"#, "collector_cluster"),
            (r#"{"key_prefix":"a b"}"#, "key_prefix"),
            (r#"{"cluster_pools":{"c":""}}"#, "cluster_pools.c"),
            (r#"{"scorers":{"queue":-2}}"#, "scorers.queue"),
            (r#"{"saturation":{"kv_threshold":2}}"#, "kv_threshold"),
            (r#"{"prefix":{"max_blocks":0}}"#, "max_blocks"),
            ("not json", "invalid plugin configuration"),
            ("[]", "invalid plugin configuration"),
        ] {
            let err = PluginConfig::parse(json.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
