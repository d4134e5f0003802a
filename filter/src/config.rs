//! The plugin configuration (JSON in the Envoy filter config), validated once
//! in `on_configure` so a typo fails loudly instead of routing oddly.

use std::collections::HashMap;

use serde::Deserialize;

use crate::paths::ApiPaths;
use crate::pool_id::PoolRef;
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
    /// Envoy cluster name → InferencePool, as `namespace/name` or a bare
    /// name (valid while only one namespace has a pool of that name);
    /// unlisted clusters map to the pool of the same (bare) name.
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
    /// How the filter holds the request while it reads the body (see
    /// docs/ARCHITECTURE.md "Body routing modes").
    pub body_routing: BodyRouting,
    /// Next-best distinct endpoints named after the pick in
    /// `x-gateway-destination-endpoint` (Envoy's retries go to them in order).
    pub fallbacks: usize,
    pub scorers: ScorerWeights,
    pub saturation: SaturationThresholds,
    pub prefix: PrefixConfig,
    /// While this Envoy has never received pool state, hold requests up to
    /// this long after the filter was configured (0: answer at once).
    pub initial_state_wait_ms: u32,
    /// `retry-after` / `retry-after-ms` on 429 and 503 answers (0: none).
    pub retry_after_ms: u32,
    /// Which paths are forwarded (the inference API by default).
    pub api_paths: ApiPaths,
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
            body_routing: BodyRouting::default(),
            fallbacks: DEFAULT_FALLBACKS,
            scorers: ScorerWeights::default(),
            saturation: SaturationThresholds::default(),
            prefix: PrefixConfig::default(),
            initial_state_wait_ms: 3000,
            retry_after_ms: 1000,
            api_paths: ApiPaths::default(),
        }
    }
}

/// How the request waits for the body that decides its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyRouting {
    /// The headers callback pauses; needs `allow_on_headers_stop_iteration:
    /// true` in the Wasm filter config. The filter writes the destination
    /// (and the optional upstream info headers) as request headers.
    #[default]
    StopIteration,
    /// The headers callback drops `content-length` and continues; a stock
    /// `envoy.filters.http.buffer` after the filter holds the headers until
    /// the body is complete, the body callback names the pod in the filter
    /// state `wasm.<key_prefix>.destination`, and a `header_mutation` filter
    /// after the buffer copies it into `x-gateway-destination-endpoint`.
    /// No request header is written after the headers phase (Envoy refuses
    /// it), so `upstream_info_headers` only applies to bodyless requests.
    BufferFilter,
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
        let mut clusters: Vec<(&String, &String)> = self.cluster_pools.iter().collect();
        clusters.sort();
        for (cluster, pool) in clusters {
            PoolRef::parse(pool).map_err(|e| format!("cluster_pools.{cluster}: {e}"))?;
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
        if self.initial_state_wait_ms > 60_000 {
            return Err("initial_state_wait_ms must be at most 60000".into());
        }
        if self.retry_after_ms > 3_600_000 {
            return Err("retry_after_ms must be at most 3600000".into());
        }
        self.api_paths.validate()?;
        self.scorers.validate()?;
        self.saturation.validate()?;
        self.prefix.validate()
    }

    /// The InferencePool an Envoy cluster routes to, as configured
    /// (`namespace/name` or a bare name).
    pub fn pool_for_cluster<'a>(&'a self, cluster: &'a str) -> &'a str {
        self.cluster_pools
            .get(cluster)
            .map_or(cluster, String::as_str)
    }

    /// [`Self::pool_for_cluster`] as a reference to resolve against the pool
    /// state: a listed value is `namespace/name` or a bare name; an unlisted
    /// cluster is the bare name of the pool.
    pub fn pool_ref_for_cluster<'a>(&'a self, cluster: &'a str) -> PoolRef<'a> {
        match self.cluster_pools.get(cluster) {
            Some(pool) => PoolRef::parse(pool).unwrap_or(PoolRef::Bare(pool)),
            None => PoolRef::Bare(cluster),
        }
    }

    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            weights: self.scorers.clone(),
            metrics_stale_ms: self.metrics_stale_ms,
            saturation: self.saturation.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// The property path the filter writes the destination to in
    /// [`BodyRouting::BufferFilter`] mode; Envoy keeps it as filter state
    /// `wasm.<this>` (read with `%FILTER_STATE(wasm.<this>:PLAIN)%`).
    pub fn destination_property(&self) -> String {
        format!("{}.destination", self.key_prefix)
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
  "body_routing": "stop_iteration",
  "scorers": {"queue": 2.0, "kv_cache": 2.0, "lora": 1.0, "prefix": 6.0, "inflight": 1.0},
  "saturation": {"queue_threshold": 5, "kv_threshold": 0.8},
  "prefix": {"max_blocks": 128, "affinity_depth_blocks": 8, "load_factor": 1.25, "load_slack": 1},
  "initial_state_wait_ms": 3000,
  "retry_after_ms": 1000,
  "api_paths": {"inference_only": true, "open": [{"path": "/v1/load_lora_adapter",
    "methods": ["POST"], "caller_header": {"name": "x-llmgw-admin-key", "value": "change-me"}}]}
}"#,
        )
        .unwrap();
        assert_eq!(c.pool_for_cluster("envoy_cluster_name"), "pool_name");
        assert_eq!(c.pool_for_cluster("llm"), "llm");
        assert_eq!(c.pool_ref_for_cluster("llm"), PoolRef::Bare("llm"));
        assert_eq!(c.prefix.affinity_depth_blocks, 8);
        assert_eq!(c.scheduler_config().metrics_stale_ms, 200);
        assert_eq!(c.snapshot_meta_key(), "llmgw.snapshot.meta");
        assert_eq!(c.body_routing, BodyRouting::StopIteration);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn buffer_filter_mode_parses_and_names_its_filter_state() {
        let c =
            PluginConfig::parse(br#"{"body_routing":"buffer_filter","key_prefix":"eg1"}"#).unwrap();
        assert_eq!(c.body_routing, BodyRouting::BufferFilter);
        assert_eq!(c.destination_property(), "eg1.destination");
        let err = PluginConfig::parse(br#"{"body_routing":"buffer"}"#).unwrap_err();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn cluster_pools_take_namespace_slash_name_or_a_bare_name() {
        let c = PluginConfig::parse(
            br#"{"cluster_pools":{"team-a-llm":"team-a/llm","team-b-llm":"team-b/llm","old":"llm"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.pool_ref_for_cluster("team-a-llm"),
            PoolRef::Qualified {
                namespace: "team-a",
                name: "llm"
            }
        );
        assert_eq!(c.pool_ref_for_cluster("old"), PoolRef::Bare("llm"));
        assert_eq!(c.pool_ref_for_cluster("other"), PoolRef::Bare("other"));
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
            (r#"{"cluster_pools":{"c":"a/b/c"}}"#, "cluster_pools.c"),
            (r#"{"cluster_pools":{"c":"/b"}}"#, "namespace/name"),
            (r#"{"scorers":{"queue":-2}}"#, "scorers.queue"),
            (r#"{"saturation":{"kv_threshold":2}}"#, "kv_threshold"),
            (r#"{"prefix":{"max_blocks":0}}"#, "max_blocks"),
            (
                r#"{"initial_state_wait_ms":600000}"#,
                "initial_state_wait_ms",
            ),
            (
                r#"{"api_paths":{"open":[{"path":"v1"}]}}"#,
                "api_paths.open[0]",
            ),
            ("not json", "invalid plugin configuration"),
            ("[]", "invalid plugin configuration"),
        ] {
            let err = PluginConfig::parse(json.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
