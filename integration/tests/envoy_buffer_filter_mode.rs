//! The flag-free body-routing mode through the real Envoy: the filter in
//! `"body_routing": "buffer_filter"` continues from its headers callback, a
//! stock buffer filter after it holds the request until the body is complete
//! and a header_mutation copies the pick (filter state) into the destination
//! header. The Envoy config has no `allow_on_headers_stop_iteration`. Negative
//! control: without the buffer and header_mutation filters the request is
//! answered 503 at once instead of hanging.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use integration::e2e::envoy_config::{BodyRouting, DataPath, Route};
use integration::e2e::load::{run_concurrently, share};
use integration::e2e::scenarios::{self, ACK_POOL_V1, ACK_POOL_V2};
use integration::e2e::stack::{Stack, StackSpec};

const REQUESTS: usize = 400;
const CONCURRENCY: usize = 8;

fn sim_args() -> Vec<String> {
    ["--time-scale", "0.01", "--seed", "7"]
        .map(String::from)
        .to_vec()
}

fn chat(model: &str, i: usize) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": format!("recommend a place to visit ({i})")}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_filter_mode_routes_the_pool_split_and_the_lora_canary() -> Result<()> {
    let mut pods = scenarios::ack_qwen_pods(2)?;
    pods.extend(scenarios::ack_deepseek_pods(2)?);
    let stack = Stack::start(StackSpec {
        pods,
        sim_args: sim_args(),
        manifests: scenarios::ack_manifests(),
        routes: vec![
            Route::to_pool("LoRA canary", Some(("x-route", "ack-lora")), ACK_POOL_V1),
            Route::split(
                "base-model canary",
                None,
                &[(ACK_POOL_V1, 90), (ACK_POOL_V2, 10)],
            ),
        ],
        body_routing: BodyRouting::BufferFilter,
        ..Default::default()
    })
    .await?;
    stack
        .wait_routable("/v1/chat/completions", &[], &chat("mymodel", 0))
        .await?;

    // Pool split: every request lands on a pod of the pool Envoy's weighted
    // cluster chose, about 10 % on pool v2.
    let replies = run_concurrently(REQUESTS, CONCURRENCY, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/chat/completions");
        let body = chat("mymodel", i);
        async move { client.post(&url, &[], body).await }
    })
    .await;
    let mut by_pool: BTreeMap<String, usize> = BTreeMap::new();
    for reply in replies {
        let reply = reply?;
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().expect("x-sim-pod on every reply");
        *by_pool
            .entry(stack.pool_of(pod).unwrap_or("unknown pod").to_string())
            .or_default() += 1;
    }
    let v2 = by_pool.get(ACK_POOL_V2).copied().unwrap_or(0);
    assert_eq!(by_pool.values().sum::<usize>(), REQUESTS, "{by_pool:?}");
    assert!(
        !by_pool.contains_key("unknown pod"),
        "served outside the pools: {by_pool:?}"
    );
    let v2_share = share(v2, REQUESTS);
    assert!(
        (v2_share - 0.10).abs() <= 0.05,
        "pool v2 share {v2_share:.3} outside 0.10 ± 0.05: {by_pool:?}"
    );

    // LoRA canary: the body is rewritten in the body callback (no
    // content-length left to fix) and the adapters split about 90/10.
    let replies = run_concurrently(REQUESTS, CONCURRENCY, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/chat/completions");
        let body = chat("travelhelper", i);
        async move { client.post(&url, &[("x-route", "ack-lora")], body).await }
    })
    .await;
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    for reply in replies {
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
    let v2 = by_model.get("travel-helper-v2").copied().unwrap_or(0);
    let v1 = by_model.get("travel-helper-v1").copied().unwrap_or(0);
    assert_eq!(v1 + v2, REQUESTS, "{by_model:?}");
    let v2_share = share(v2, REQUESTS);
    assert!(
        (v2_share - 0.10).abs() <= 0.05,
        "travel-helper-v2 share {v2_share:.3} outside 0.10 ± 0.05: {by_model:?}"
    );

    // A 200 KB body arrives in many chunks; the buffer filter still holds the
    // headers until the filter has decided.
    let big = serde_json::json!({
        "model": "mymodel",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x".repeat(200 * 1024)}],
    })
    .to_string();
    let reply = stack.post("/v1/chat/completions", &[], big).await?;
    assert_eq!(
        reply.status,
        200,
        "{}\n{}",
        reply.text(),
        stack.diagnostics()
    );
    Ok(())
}

/// The negative control runs on ORIGINAL_DST clusters, where a request that
/// names no destination is a 503. Under override_host the same request goes to
/// the cluster's fallback balancer instead (served, but without the filter's
/// pick): docs/ARCHITECTURE.md, "Body routing modes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_buffer_filter_the_request_fails_fast_instead_of_hanging() -> Result<()> {
    let stack = Stack::start(StackSpec {
        data_path: DataPath::OriginalDst,
        pods: scenarios::ack_qwen_pods(1)?,
        sim_args: sim_args(),
        manifests: scenarios::ack_manifests(),
        routes: vec![Route::to_pool("LoRA canary", None, ACK_POOL_V1)],
        body_routing: BodyRouting::BufferFilterMissing,
        plugin_config: serde_json::json!({"collector_cluster": "llmgw_collector", "fallbacks": 0}),
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let reply = stack
        .post("/v1/chat/completions", &[], chat("mymodel", 1))
        .await?;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        503,
        "{}\n{}",
        reply.text(),
        stack.diagnostics()
    );
    assert!(
        took < Duration::from_secs(5),
        "the 503 took {took:?}: the request stalled"
    );
    Ok(())
}
