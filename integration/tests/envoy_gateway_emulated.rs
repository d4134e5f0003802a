//! The Envoy Gateway recipe as EG would program Envoy (src/deploy/emulate.rs:
//! EG v1.9's xDS shapes for the rendered manifests, the EnvoyPatchPolicy
//! applied with EG's JSONPatch/JSONPath semantics), run in the real Envoy
//! with the collector and simulated pods: the worked case's pool split 90/10
//! routes on override_host clusters named as EG names them. Negative control:
//! without the listener patch (`allow_on_headers_stop_iteration`) a request
//! stalls.

use std::time::Duration;

use anyhow::Result;
use integration::deploy::emulate::envoy_gateway_bootstrap;
use integration::e2e::envoy_config::EnvoyConfig;
use integration::e2e::load::run_concurrently;
use integration::e2e::recipes;
use integration::e2e::scenarios::ACK_POOL_V1;
use integration::e2e::stack::{PoolPod, Stack};

fn patched(config: &EnvoyConfig, pods: &[PoolPod]) -> Result<String> {
    recipes::render(envoy_gateway_bootstrap, config, pods, false)
}

fn without_listener_patch(config: &EnvoyConfig, pods: &[PoolPod]) -> Result<String> {
    recipes::render(envoy_gateway_bootstrap, config, pods, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eg_recipe_routes_the_pool_split_through_override_host_clusters() -> Result<()> {
    let stack = Stack::start(recipes::ack_spec(patched)?).await?;
    recipes::assert_pool_split(&stack, 400).await?;
    let picked = stack
        .envoy
        .stat("cluster.httproute/default/inference-route/rule/0/backend/1.upstream_rq_completed")
        .await?;
    assert!(picked > 0, "no request on EG's backend/1 cluster");

    // override_host follows the filter's pick (not its least-request
    // fallback, which knows nothing of the pods' queues): with one pool-v1
    // pod's queue held high by direct requests, none of the gateway's
    // requests go there. A request sent there would hang: count a timeout.
    let busy = stack
        .fleet
        .pods
        .iter()
        .find(|p| stack.pool_of(&p.name) == Some(ACK_POOL_V1))
        .expect("a pool-v1 pod")
        .clone();
    let mut held = stack.hold_queue(&busy, 8, "mymodel").await?;
    let replies =
        run_concurrently(60, 4, |i| {
            let client = stack.client.clone();
            let url = stack.url("/v1/chat/completions");
            let body = serde_json::json!({
                "model": "mymodel", "max_tokens": 2,
                "messages": [{"role": "user", "content": format!("avoid the busy pod ({i})")}],
            })
            .to_string();
            async move {
                tokio::time::timeout(Duration::from_secs(3), client.post(&url, &[], body)).await
            }
        })
        .await;
    let mut to_busy = 0;
    for reply in replies {
        match reply {
            Err(_) => to_busy += 1,
            Ok(reply) => {
                let reply = reply?;
                assert_eq!(reply.status, 200, "{}", reply.text());
                if reply.served_by() == Some(busy.name.as_str()) {
                    to_busy += 1;
                }
            }
        }
    }
    assert_eq!(to_busy, 0, "requests sent to the held pod {}", busy.name);
    stack
        .fleet
        .set_faults(&busy.name, serde_json::json!({"pause_engine": false}))
        .await?;
    held.abort_all();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_envoy_patch_policy_listener_patch_requests_stall() -> Result<()> {
    let stack = Stack::start(recipes::ack_spec(without_listener_patch)?).await?;
    recipes::assert_request_stalls(&stack).await
}
