//! Renders the Envoy Gateway and Istio recipes (`deploy/envoy-gateway/`,
//! `deploy/istio/`) from a user's own Gateway / HTTPRoute / InferencePool
//! manifests: pool Services, the HTTPRoute rewritten to them, and the
//! gateway-specific policies with `cluster_pools` filled with the cluster
//! names each gateway generates. `render-deploy` writes them; a test keeps
//! the checked-in files equal to this output.

pub mod emulate;
pub mod envoy_gateway;
pub mod input;
pub mod istio;
pub mod yaml;

pub use input::{Inputs, Pool};

/// Header the filter names the pod in (override_host reads it).
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// `(Envoy cluster name, pool reference)` pairs: the filter's `cluster_pools`.
pub type ClusterPools = Vec<(String, String)>;

/// What the user chooses beyond their manifests.
#[derive(Debug, Clone)]
pub struct Options {
    /// The filter's OCI image (`make image`), e.g. `ghcr.io/org/llmgw-filter:0.1.0`.
    pub image: String,
    /// The collector's Service (deploy/collector.yaml) as `host:port`.
    pub collector: (String, u16),
    /// The filter's `max_body_bytes`; buffers are sized above it.
    pub max_body_bytes: u64,
    /// `cluster_pools` values as `namespace/name` (the default) or bare
    /// names (which the filter accepts while they are unique).
    pub namespaced_pools: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            image: "registry.example/llm-gateway/gateway-filter:0.1.0".into(),
            collector: ("llmgw-collector.llm-gateway.svc.cluster.local".into(), 9002),
            max_body_bytes: 20 * 1024 * 1024,
            namespaced_pools: true,
        }
    }
}

/// One rendered file: path relative to `deploy/` and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub path: String,
    pub text: String,
}

/// Every file of both recipes, for `inputs`.
pub fn render_all(inputs: &Inputs, options: &Options) -> anyhow::Result<Vec<File>> {
    let mut files = envoy_gateway::render(inputs, options)?;
    files.extend(istio::render(inputs, options)?);
    Ok(files)
}

/// The pool Services both recipes route to: the pool's selector and target
/// port, named `<pool>-llmgw` (a Service of the pool's own name may exist).
pub fn pool_service(pool: &Pool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": pool.service_name(),
            "namespace": pool.namespace,
            "labels": {"llm-gateway.io/inference-pool": pool.name},
        },
        "spec": {
            "selector": pool.selector,
            "ports": [{
                "name": "http",
                "port": pool.target_port,
                "targetPort": pool.target_port,
                "appProtocol": "http",
            }],
        },
    })
}

/// The filter's plugin configuration with `cluster_pools`.
pub fn plugin_config(
    cluster_pools: &[(String, String)],
    options: &Options,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut config = serde_json::json!({
        "collector_cluster": "llmgw_collector",
        "max_body_bytes": options.max_body_bytes,
        "cluster_pools": cluster_pools
            .iter()
            .map(|(c, p)| (c.clone(), serde_json::Value::String(p.clone())))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(map), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    config
}

/// The buffer limit for a listener / cluster: above the filter's body limit so
/// that the filter, not Envoy, answers oversized bodies.
pub fn buffer_limit(options: &Options) -> u64 {
    options.max_body_bytes + 4 * 1024 * 1024
}

/// The worked case the checked-in deploy/ files are rendered from: the ACK
/// guide's Gateway, its two pools and the 90/10 HTTPRoute across them (the
/// LoRA canary is an InferenceModel, which the collector reads as is).
pub fn worked_case_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["gateway.yaml", "pool-v1.yaml", "scenario1-pool-v2.yaml"]
        .iter()
        .map(|f| root.join("examples/ack-canary").join(f))
        .collect()
}
