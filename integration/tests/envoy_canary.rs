//! Canary splits through the real Envoy: the ACK guide's LoRA canary (an
//! InferenceModel's targetModels weights) and its base-model canary (HTTPRoute
//! weights across two InferencePools = Envoy weighted_clusters).

use std::collections::BTreeMap;

use anyhow::Result;
use integration::e2e::envoy_config::Route;
use integration::e2e::http::Reply;
use integration::e2e::load::{run_concurrently, share};
use integration::e2e::scenarios::{self, ACK_POOL_V1, ACK_POOL_V2};
use integration::e2e::stack::{Stack, StackSpec};

const REQUESTS: usize = 1000;
const CONCURRENCY: usize = 16;
/// The guides' 90/10 split, within ±3 points.
const CANARY_SHARE: f64 = 0.10;
const TOLERANCE: f64 = 0.03;

fn sim_args() -> Vec<String> {
    ["--time-scale", "0.01", "--seed", "7"]
        .map(String::from)
        .to_vec()
}

async fn send_all(
    stack: &Stack,
    model: &str,
    headers: &'static [(&'static str, &'static str)],
) -> Vec<Result<Reply>> {
    run_concurrently(REQUESTS, CONCURRENCY, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/chat/completions");
        let body = serde_json::json!({
            "model": model,
            "temperature": 0,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": format!("I just arrived in Beijing ({i}), please recommend a tourist attraction")}],
        })
        .to_string();
        async move { client.post(&url, headers, body).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_canary_sends_about_10_percent_to_travel_helper_v2() -> Result<()> {
    let stack = Stack::start(StackSpec {
        pods: scenarios::ack_qwen_pods(3)?,
        sim_args: sim_args(),
        manifests: scenarios::ack_manifests(),
        routes: vec![Route::to_pool("LoRA canary", None, ACK_POOL_V1)],
        ..Default::default()
    })
    .await?;
    let probe =
        r#"{"model":"travelhelper","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    stack
        .wait_routable("/v1/chat/completions", &[], probe)
        .await?;

    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    for reply in send_all(&stack, "travelhelper", &[]).await {
        let reply = reply?;
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().expect("x-sim-pod on every reply");
        assert_eq!(stack.pool_of(pod), Some(ACK_POOL_V1), "served by {pod}");
        let model = reply.json()?["model"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *by_model.entry(model).or_default() += 1;
    }
    let v1 = by_model.get("travel-helper-v1").copied().unwrap_or(0);
    let v2 = by_model.get("travel-helper-v2").copied().unwrap_or(0);
    assert_eq!(
        v1 + v2,
        REQUESTS,
        "every response names the adapter that served it: {by_model:?}"
    );
    let v2_share = share(v2, REQUESTS);
    assert!(
        (v2_share - CANARY_SHARE).abs() <= TOLERANCE,
        "travel-helper-v2 share {v2_share:.3} outside 0.10 ± 0.03: {by_model:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_split_sends_about_10_percent_to_pool_v2_and_each_pool_serves_its_own() -> Result<()> {
    let mut pods = scenarios::ack_qwen_pods(2)?;
    pods.extend(scenarios::ack_deepseek_pods(2)?);
    let stack = Stack::start(StackSpec {
        pods,
        sim_args: sim_args(),
        manifests: scenarios::ack_manifests(),
        routes: vec![Route::split(
            "base-model canary",
            None,
            &[(ACK_POOL_V1, 90), (ACK_POOL_V2, 10)],
        )],
        ..Default::default()
    })
    .await?;
    let probe = r#"{"model":"mymodel","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    stack
        .wait_routable("/v1/chat/completions", &[], probe)
        .await?;
    // Envoy counts per cluster what its weighted_clusters chose; the pods say
    // which pool actually served. Both must agree request for request.
    let cluster_count = |pool: &str| format!("cluster.{pool}.upstream_rq_completed");
    let before_v1 = stack.envoy.stat(&cluster_count(ACK_POOL_V1)).await?;
    let before_v2 = stack.envoy.stat(&cluster_count(ACK_POOL_V2)).await?;

    let mut by_pool: BTreeMap<String, usize> = BTreeMap::new();
    for reply in send_all(&stack, "mymodel", &[]).await {
        let reply = reply?;
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().expect("x-sim-pod on every reply");
        let pool = stack.pool_of(pod).unwrap_or("unknown pod");
        *by_pool.entry(pool.to_string()).or_default() += 1;
    }
    let v1 = by_pool.get(ACK_POOL_V1).copied().unwrap_or(0);
    let v2 = by_pool.get(ACK_POOL_V2).copied().unwrap_or(0);
    assert_eq!(v1 + v2, REQUESTS, "{by_pool:?}");
    let v2_share = share(v2, REQUESTS);
    assert!(
        (v2_share - CANARY_SHARE).abs() <= TOLERANCE,
        "pool v2 share {v2_share:.3} outside 0.10 ± 0.03: {by_pool:?}"
    );
    let routed_v1 = stack.envoy.stat(&cluster_count(ACK_POOL_V1)).await? - before_v1;
    let routed_v2 = stack.envoy.stat(&cluster_count(ACK_POOL_V2)).await? - before_v2;
    assert_eq!(
        (routed_v1, routed_v2),
        (v1 as u64, v2 as u64),
        "requests Envoy routed to each pool cluster vs requests served by that pool's pods"
    );
    Ok(())
}
