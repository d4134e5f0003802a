//! Shared by the gateway-recipe tests (`envoy_gateway_emulated`,
//! `envoy_istio_emulated`): the worked case (examples/ack-canary/) rendered
//! into what a gateway would program, run as a [`Stack`] with the collector and
//! simulated pods, and the pool split measured through it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;

use super::envoy_config::EnvoyConfig;
use super::load::{run_concurrently, share};
use super::scenarios::{self, ACK_POOL_V2};
use super::stack::{CustomEnvoy, PoolPod, Stack, StackSpec};
use crate::deploy::emulate::Environment;
use crate::deploy::{worked_case_files, Inputs, Options};

/// A gateway emulation: the xDS a gateway builds for the rendered recipe.
pub type Emulation = fn(&Inputs, &Options, &Environment) -> Result<serde_json::Value>;

/// A chat request that routes once the filter has pool state.
pub const PROBE: &str =
    r#"{"model":"mymodel","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;

/// The worked case rendered through `emulation` for this stack's ports and
/// pods, with `cluster_pools` as users get it (`namespace/name`).
/// `skip_listener_patches` leaves out the listener patch that sets
/// `allow_on_headers_stop_iteration` (the negative control).
pub fn render(
    emulation: Emulation,
    config: &EnvoyConfig,
    pods: &[PoolPod],
    skip_listener_patches: bool,
) -> Result<String> {
    let inputs = Inputs::read(&worked_case_files())?;
    let mut by_pool: HashMap<String, Vec<_>> = HashMap::new();
    for p in pods {
        by_pool
            .entry(p.pool.clone())
            .or_default()
            .push(p.pod.addr());
    }
    let env = Environment {
        listen: config.listen,
        admin: config.admin,
        collector: config.collector_grpc,
        wasm_path: config.wasm_path.clone(),
        pods: by_pool,
        skip_listener_patches,
    };
    Ok(serde_yaml::to_string(&emulation(
        &inputs,
        &Options::default(),
        &env,
    )?)?)
}

/// The ACK canary's two pools (2 pods each) behind `custom`'s Envoy.
pub fn ack_spec(custom: CustomEnvoy) -> Result<StackSpec> {
    let mut pods = scenarios::ack_qwen_pods(2)?;
    pods.extend(scenarios::ack_deepseek_pods(2)?);
    Ok(StackSpec {
        pods,
        sim_args: ["--time-scale", "0.01", "--seed", "7"]
            .map(String::from)
            .to_vec(),
        manifests: scenarios::ack_manifests(),
        custom_envoy: Some(custom),
        ..Default::default()
    })
}

/// Sends `requests` chats through the gateway, asserts each is a 200 served
/// by a known pool, asserts pool v2's share is 0.10 ± 0.05, and returns the
/// count per pool.
pub async fn assert_pool_split(stack: &Stack, requests: usize) -> Result<BTreeMap<String, usize>> {
    stack
        .wait_routable("/v1/chat/completions", &[], PROBE)
        .await?;
    let replies = run_concurrently(requests, 8, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/chat/completions");
        let body = serde_json::json!({
            "model": "mymodel", "max_tokens": 2,
            "messages": [{"role": "user", "content": format!("where to go ({i})")}],
        })
        .to_string();
        async move { client.post(&url, &[], body).await }
    })
    .await;
    let mut by_pool: BTreeMap<String, usize> = BTreeMap::new();
    for reply in replies {
        let reply = reply?;
        anyhow::ensure!(
            reply.status == 200,
            "{} {}\n{}",
            reply.status,
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().unwrap_or("unknown");
        *by_pool
            .entry(stack.pool_of(pod).unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    anyhow::ensure!(!by_pool.contains_key("unknown"), "{by_pool:?}");
    let v2 = share(by_pool.get(ACK_POOL_V2).copied().unwrap_or(0), requests);
    anyhow::ensure!(
        (v2 - 0.10).abs() <= 0.05,
        "pool v2 share {v2:.3}: {by_pool:?}"
    );
    Ok(by_pool)
}

/// Asserts that a request through the stack stalls (no answer within 4 s
/// once the filter has had time to receive pool state).
pub async fn assert_request_stalls(stack: &Stack) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(4),
        stack.post("/v1/chat/completions", &[], PROBE),
    )
    .await;
    anyhow::ensure!(
        reply.is_err(),
        "expected a stall without allow_on_headers_stop_iteration, got {:?}",
        reply.map(|r| r.map(|r| r.status))
    );
    Ok(())
}
