//! The GKE and ACK guide scenarios as test gateways: the project's copies of
//! the guides' manifests (examples/) plus simulated pods on free ports.

use anyhow::Result;

use super::envoy_config::Route;
use super::pods::SimPod;
use super::ports::free_port;
use super::stack::{PoolPod, StackSpec};

/// GKE guide pool (InferencePool v1, FailClose).
pub const GKE_POOL: &str = "vllm-llama3.1-8b-instruct";
/// Namespace of examples/llm-d/ (the GKE pool with llm-d.ai objects).
pub const LLM_D_NAMESPACE: &str = "llm-d";
/// ACK guide pools (v1alpha2; no failureMode = FailClose).
pub const ACK_POOL_V1: &str = "mymodel-pool-v1";
pub const ACK_POOL_V2: &str = "mymodel-pool-v2";

/// `vllm-sim` arguments of the GKE guide's pods.
pub const LLAMA_SIM_ARGS: &[&str] = &[
    "--model",
    "meta-llama/Llama-3.1-8B-Instruct",
    "--lora-modules",
    "food-review",
    "cad-fabricator",
    "--max-loras",
    "2",
];
/// `vllm-sim` arguments of the ACK guide's Qwen pods (pool v1, LoRA canary).
pub const QWEN_SIM_ARGS: &[&str] = &[
    "--model",
    "Qwen/Qwen2.5-7B-Instruct",
    "--served-model-name",
    "mymodel",
    "--lora-modules",
    "travel-helper-v1",
    "travel-helper-v2",
    "--max-loras",
    "2",
];
/// `vllm-sim` arguments of the ACK guide's DeepSeek pods (pool v2).
pub const DEEPSEEK_SIM_ARGS: &[&str] = &[
    "--model",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "--served-model-name",
    "mymodel",
];

/// `count` pods named `<prefix>-<i>` in `pool`, on free 127.0.0.1 ports.
pub fn local_pods(
    pool: &str,
    prefix: &str,
    count: usize,
    labels: &[(&str, &str)],
    sim_args: &[&str],
) -> Result<Vec<PoolPod>> {
    (0..count)
        .map(|i| {
            let port = free_port(std::net::Ipv4Addr::LOCALHOST)?;
            Ok(PoolPod {
                pool: pool.to_string(),
                pod: SimPod::local(&format!("{prefix}-{i}"), labels, port, sim_args),
            })
        })
        .collect()
}

/// Pods of the GKE pool.
pub fn gke_pods(count: usize) -> Result<Vec<PoolPod>> {
    local_pods(
        GKE_POOL,
        "llama",
        count,
        &[("app", GKE_POOL)],
        LLAMA_SIM_ARGS,
    )
}

/// A gateway in front of `count` GKE pods: the guide's manifests, one route
/// to the pool, the demo's plugin configuration; `sim_args` go to every pod.
pub fn gke_spec(count: usize, sim_args: &[&str]) -> Result<StackSpec> {
    Ok(StackSpec {
        pods: gke_pods(count)?,
        sim_args: sim_args.iter().map(|a| a.to_string()).collect(),
        manifests: gke_manifests(),
        routes: vec![Route::to_pool("GKE pool", None, GKE_POOL)],
        ..Default::default()
    })
}

/// Qwen pods of `mymodel-pool-v1`.
pub fn ack_qwen_pods(count: usize) -> Result<Vec<PoolPod>> {
    local_pods(
        ACK_POOL_V1,
        "qwen",
        count,
        &[("app", "custom-serving"), ("release", "qwen")],
        QWEN_SIM_ARGS,
    )
}

/// DeepSeek pods of `mymodel-pool-v2`.
pub fn ack_deepseek_pods(count: usize) -> Result<Vec<PoolPod>> {
    local_pods(
        ACK_POOL_V2,
        "deepseek",
        count,
        &[("app", "custom-serving"), ("release", "deepseek-r1")],
        DEEPSEEK_SIM_ARGS,
    )
}

/// The GKE guide's InferencePool and InferenceObjectives, as copied into examples/.
pub fn gke_manifests() -> Vec<(String, String)> {
    vec![
        (
            "inferencepool.yaml".into(),
            include_str!("../../../examples/gke-deploy/inferencepool.yaml").into(),
        ),
        (
            "inferenceobjectives.yaml".into(),
            include_str!("../../../examples/gke-deploy/inferenceobjectives.yaml").into(),
        ),
    ]
}

/// The ACK guide's pools and InferenceModels (both scenarios), as copied into examples/.
pub fn ack_manifests() -> Vec<(String, String)> {
    vec![
        (
            "pool-v1.yaml".into(),
            include_str!("../../../examples/ack-canary/pool-v1.yaml").into(),
        ),
        (
            "scenario1-pool-v2.yaml".into(),
            include_str!("../../../examples/ack-canary/scenario1-pool-v2.yaml").into(),
        ),
        (
            "scenario2-lora-canary.yaml".into(),
            include_str!("../../../examples/ack-canary/scenario2-lora-canary.yaml").into(),
        ),
    ]
}

/// examples/llm-d/: the GKE guide's pool (no endpointPickerRef) in namespace
/// `llm-d`, its InferenceObjectives and LoRA rollout as `llm-d.ai/v1alpha2`.
pub fn llm_d_manifests() -> Vec<(String, String)> {
    vec![
        (
            "llm-d-inferencepool.yaml".into(),
            include_str!("../../../examples/llm-d/inferencepool.yaml").into(),
        ),
        (
            "llm-d-inferenceobjectives.yaml".into(),
            include_str!("../../../examples/llm-d/inferenceobjectives.yaml").into(),
        ),
        (
            "llm-d-inferencemodelrewrite.yaml".into(),
            include_str!("../../../examples/llm-d/inferencemodelrewrite.yaml").into(),
        ),
    ]
}

/// Pods of examples/llm-d/'s pool (namespace `llm-d`), serving the guide's
/// adapters and the rollout's `llm-v1` / `llm-v2`.
pub fn llm_d_pods(count: usize) -> Result<Vec<PoolPod>> {
    let mut args = LLAMA_SIM_ARGS.to_vec();
    // --lora-modules food-review cad-fabricator llm-v1 llm-v2, four slots.
    let modules = args
        .iter()
        .position(|a| *a == "--max-loras")
        .unwrap_or(args.len());
    args.splice(modules..modules, ["llm-v1", "llm-v2"]);
    if let Some(slots) = args.iter().position(|a| *a == "--max-loras") {
        args[slots + 1] = "4";
    }
    let pods = local_pods(
        &format!("{LLM_D_NAMESPACE}/{GKE_POOL}"),
        "llm-d-llama",
        count,
        &[("app", GKE_POOL)],
        &args,
    )?;
    Ok(pods
        .into_iter()
        .map(|p| PoolPod {
            pod: p.pod.in_namespace(LLM_D_NAMESPACE),
            ..p
        })
        .collect())
}
