//! The Istio recipe as istiod would program the gateway (src/deploy/emulate.rs:
//! Istio's outbound clusters and listener for the rendered manifests, the
//! EnvoyFilter applied with Istio's semantics), run in the real Envoy
//! with the collector and simulated pods: the worked case's pool split 90/10
//! routes on the outbound clusters the EnvoyFilter gave override_host. Negative control:
//! without `allow_on_headers_stop_iteration` (what istiod < 1.28 delivers) a request
//! stalls.

use anyhow::Result;
use integration::deploy::emulate::istio_bootstrap;
use integration::e2e::envoy_config::EnvoyConfig;
use integration::e2e::recipes;
use integration::e2e::stack::{PoolPod, Stack};

fn patched(config: &EnvoyConfig, pods: &[PoolPod]) -> Result<String> {
    recipes::render(istio_bootstrap, config, pods, false)
}

fn without_listener_patch(config: &EnvoyConfig, pods: &[PoolPod]) -> Result<String> {
    recipes::render(istio_bootstrap, config, pods, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_istio_recipe_routes_the_pool_split_through_override_host_clusters() -> Result<()> {
    let stack = Stack::start(recipes::ack_spec(patched)?).await?;
    recipes::assert_pool_split(&stack, 400).await?;
    let picked = stack
        .envoy
        .stat("cluster.outbound|8000||mymodel-pool-v2-llmgw.default.svc.cluster.local.upstream_rq_completed")
        .await?;
    assert!(
        picked > 0,
        "no request on the pool v2 Service's outbound cluster"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_on_headers_stop_iteration_istio_requests_stall() -> Result<()> {
    let stack = Stack::start(recipes::ack_spec(without_listener_patch)?).await?;
    recipes::assert_request_stalls(&stack).await
}
