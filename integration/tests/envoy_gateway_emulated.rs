//! The Envoy Gateway recipe as EG would program Envoy (src/deploy/emulate.rs:
//! EG v1.9's xDS shapes for the rendered manifests, the EnvoyPatchPolicy
//! applied with EG's JSONPatch/JSONPath semantics), run in the real Envoy
//! with the collector and simulated pods: the worked case's pool split 90/10
//! routes on override_host clusters named as EG names them. Negative control:
//! without the listener patch (`allow_on_headers_stop_iteration`) a request
//! stalls.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use integration::deploy::emulate::{envoy_gateway_bootstrap, Environment};
use integration::deploy::{worked_case_files, Inputs, Options};
use integration::e2e::envoy_config::EnvoyConfig;
use integration::e2e::load::{run_concurrently, share};
use integration::e2e::scenarios::{self, ACK_POOL_V1, ACK_POOL_V2};
use integration::e2e::stack::{PoolPod, Stack, StackSpec};

fn render(config: &EnvoyConfig, pods: &[PoolPod], skip_listener_patches: bool) -> Result<String> {
    let inputs = Inputs::read(&worked_case_files())?;
    // `cluster_pools` names each pool `namespace/name`, as users get it.
    let options = Options::default();
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
    Ok(serde_yaml::to_string(&envoy_gateway_bootstrap(
        &inputs, &options, &env,
    )?)?)
}

fn patched(config: &EnvoyConfig, pods: &[PoolPod]) -> Result<String> {
    render(config, pods, false)
}

fn without_listener_patch(config: &EnvoyConfig, pods: &[PoolPod]) -> Result<String> {
    render(config, pods, true)
}

fn spec(custom: integration::e2e::stack::CustomEnvoy) -> Result<StackSpec> {
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

const PROBE: &str =
    r#"{"model":"mymodel","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eg_recipe_routes_the_pool_split_through_override_host_clusters() -> Result<()> {
    let stack = Stack::start(spec(patched)?).await?;
    stack
        .wait_routable("/v1/chat/completions", &[], PROBE)
        .await?;
    const REQUESTS: usize = 400;
    let replies = run_concurrently(REQUESTS, 8, |i| {
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
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().expect("x-sim-pod");
        *by_pool
            .entry(stack.pool_of(pod).unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    assert!(!by_pool.contains_key("unknown"), "{by_pool:?}");
    let v2 = share(by_pool.get(ACK_POOL_V2).copied().unwrap_or(0), REQUESTS);
    assert!(
        (v2 - 0.10).abs() <= 0.05,
        "pool v2 share {v2:.3}: {by_pool:?}"
    );
    // The pick went through override_host on EG-named clusters.
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
    let stack = Stack::start(spec(without_listener_patch)?).await?;
    // Give the filter time to receive pool state, so only the flag is missing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(4),
        stack.post("/v1/chat/completions", &[], PROBE),
    )
    .await;
    assert!(
        reply.is_err(),
        "expected a stall without allow_on_headers_stop_iteration, got {:?}",
        reply.map(|r| r.map(|r| r.status))
    );
    Ok(())
}
