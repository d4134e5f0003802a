//! Today's API groups through the real Envoy: examples/llm-d/ (the GKE
//! guide's pool as GIE v1.6 writes it, without endpointPickerRef, in
//! namespace `llm-d`, with its InferenceObjectives and LoRA rollout as
//! `llm-d.ai/v1alpha2`). The llm-d.ai InferenceModelRewrite drives the 90/10
//! adapter split, and llm-d.ai InferenceObjectives drive shedding, including
//! over an older-group copy of the same objective.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration::e2e::envoy_config::Route;
use integration::e2e::load::{ensure_openai_error, run_concurrently, share};
use integration::e2e::scenarios::{self, GKE_POOL, LLM_D_NAMESPACE};
use integration::e2e::stack::{Stack, StackSpec};

const REQUESTS: usize = 1000;
const CONCURRENCY: usize = 16;
const CANARY_SHARE: f64 = 0.10;
const TOLERANCE: f64 = 0.03;
const BASE_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
/// Waiting requests held on every pod: above the default queue threshold (5),
/// so the pool is saturated.
const HELD: usize = 6;

/// Beside the example: a sheddable llm-d.ai objective, and an old-group copy
/// of the example's `food-review` objective that would make it sheddable if
/// it won (the llm-d.ai copy, priority 10, must).
const EXTRA_OBJECTIVES: &str = r#"apiVersion: llm-d.ai/v1alpha2
kind: InferenceObjective
metadata:
  name: batch
  namespace: llm-d
spec:
  priority: -1
  poolRef:
    name: vllm-llama3.1-8b-instruct
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata:
  name: food-review
  namespace: llm-d
spec:
  priority: -5
  poolRef:
    name: vllm-llama3.1-8b-instruct
"#;

fn completion(model: &str, i: usize) -> String {
    serde_json::json!({"model": model, "prompt": format!("Review this dish ({i})"), "max_tokens": 2})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_d_rewrite_splits_and_llm_d_objectives_shed() -> Result<()> {
    let mut manifests = scenarios::llm_d_manifests();
    manifests.push(("extra-objectives.yaml".into(), EXTRA_OBJECTIVES.into()));
    let stack = Stack::start(StackSpec {
        pods: scenarios::llm_d_pods(2)?,
        sim_args: ["--time-scale", "0.01", "--seed", "11"]
            .map(String::from)
            .to_vec(),
        manifests,
        routes: vec![Route::to_pool("llm-d guide", None, GKE_POOL)],
        plugin_config: serde_json::json!({
            "collector_cluster": "llmgw_collector",
            "cluster_pools": {GKE_POOL: format!("{LLM_D_NAMESPACE}/{GKE_POOL}")},
        }),
        ..Default::default()
    })
    .await?;
    stack
        .wait_routable("/v1/completions", &[], &completion("llm", 0))
        .await?;

    // 1. The llm-d.ai InferenceModelRewrite: `llm` → llm-v1 90 / llm-v2 10.
    let replies = run_concurrently(REQUESTS, CONCURRENCY, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/completions");
        let body = completion("llm", i);
        async move { client.post(&url, &[], body).await }
    })
    .await;
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    for reply in replies {
        let reply = reply?;
        ensure!(
            reply.status == 200,
            "{} {}\n{}",
            reply.status,
            reply.text(),
            stack.diagnostics()
        );
        let model = reply.json()?["model"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *by_model.entry(model).or_default() += 1;
    }
    let v1 = by_model.get("llm-v1").copied().unwrap_or(0);
    let v2 = by_model.get("llm-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, REQUESTS, "{by_model:?}");
    let v2_share = share(v2, REQUESTS);
    assert!(
        (v2_share - CANARY_SHARE).abs() <= TOLERANCE,
        "llm-v2 share {v2_share:.3} outside 0.10 ± 0.03: {by_model:?}"
    );

    // 2. Saturate the pool: every pod holds HELD waiting requests.
    let pods: Vec<_> = stack.fleet.pods.clone();
    let mut held = Vec::new();
    for pod in &pods {
        held.push(stack.hold_queue(pod, HELD, BASE_MODEL).await?);
    }

    // The llm-d.ai objective `batch` (priority -1) is shed with 429.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let shed = loop {
        let attempt = stack.post(
            "/v1/completions",
            &[("x-gateway-inference-objective", "batch")],
            completion(BASE_MODEL, 0),
        );
        // A timeout: sent to a paused pod, not shed (the state may lag).
        if let Ok(reply) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            let reply = reply?;
            if reply.status == 429 {
                break Some(reply);
            }
        }
        if tokio::time::Instant::now() > deadline {
            break None;
        }
    };
    let shed =
        shed.with_context(|| format!("no batch request was shed\n{}", stack.diagnostics()))?;
    ensure_openai_error(&shed, 429)?;
    assert_eq!(
        shed.headers
            .get("x-gateway-error")
            .and_then(|v| v.to_str().ok()),
        Some("shed")
    );

    // `food-review` exists as llm-d.ai (priority 10) and x-k8s.io (-5): the
    // llm-d.ai copy wins, so it is forwarded although the pool is saturated.
    let forwarded = {
        let client = stack.client.clone();
        let url = stack.url("/v1/completions");
        tokio::spawn(async move {
            client
                .post(
                    &url,
                    &[("x-gateway-inference-objective", "food-review")],
                    completion(BASE_MODEL, 1),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !forwarded.is_finished(),
        "food-review answered at once (shed?) while every pod is paused"
    );
    for pod in &pods {
        stack
            .fleet
            .set_faults(&pod.name, serde_json::json!({"pause_engine": false}))
            .await?;
    }
    let reply = tokio::time::timeout(Duration::from_secs(20), forwarded)
        .await
        .context("food-review request after resuming")???;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for set in &mut held {
        while let Some(done) = set.join_next().await {
            done??;
        }
    }
    Ok(())
}
