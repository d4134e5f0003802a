//! The collector goes away: FailOpen pools keep serving from the last known
//! endpoints, FailClose pools answer 503; both recover when it returns.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use integration::e2e::envoy_config::Route;
use integration::e2e::http::Reply;
use integration::e2e::load::ensure_openai_error;
use integration::e2e::scenarios::{self, GKE_POOL, LLAMA_SIM_ARGS};
use integration::e2e::stack::{Stack, StackSpec};
use integration::e2e::wait::wait_until;

const OPEN_POOL: &str = "fail-open-pool";
const STATE_TIMEOUT_MS: u64 = 1000;

const OPEN_POOL_MANIFEST: &str = r#"apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: fail-open-pool
  namespace: default
spec:
  selector:
    matchLabels:
      app: fail-open-pool
  targetPorts:
  - number: 8000
  endpointPickerRef:
    name: fail-open-pool-epp
    port:
      number: 9002
    failureMode: FailOpen
"#;

async fn request(stack: &Stack, route: &str) -> Result<Reply> {
    let body = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hello","max_tokens":1}"#;
    stack
        .post("/v1/completions", &[("x-route", route)], body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_fail_open_serves_fail_close_refuses_and_both_recover() -> Result<()> {
    let mut pods = scenarios::gke_pods(2)?;
    pods.extend(scenarios::local_pods(
        OPEN_POOL,
        "open",
        2,
        &[("app", OPEN_POOL)],
        LLAMA_SIM_ARGS,
    )?);
    let mut manifests = scenarios::gke_manifests();
    manifests.push(("fail-open-pool.yaml".into(), OPEN_POOL_MANIFEST.into()));
    let mut stack = Stack::start(StackSpec {
        pods,
        sim_args: ["--time-scale", "0.01"].map(String::from).to_vec(),
        manifests,
        routes: vec![
            Route::to_pool("FailOpen", Some(("x-route", "open")), OPEN_POOL),
            Route::to_pool("FailClose", Some(("x-route", "close")), GKE_POOL),
        ],
        plugin_config: serde_json::json!({
            "collector_cluster": "llmgw_collector",
            "state_timeout_ms": STATE_TIMEOUT_MS,
        }),
        ..Default::default()
    })
    .await?;
    let probe = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hello","max_tokens":1}"#;
    stack
        .wait_routable("/v1/completions", &[("x-route", "open")], probe)
        .await?;
    stack
        .wait_routable("/v1/completions", &[("x-route", "close")], probe)
        .await?;

    stack.stop_collector();
    // Well past the state timeout, FailClose must refuse; FailOpen must serve
    // every request the whole time, from its own pool.
    let down_since = Instant::now();
    let mut fail_close_refused = false;
    while down_since.elapsed() < Duration::from_millis(STATE_TIMEOUT_MS * 4) {
        let open = request(&stack, "open").await?;
        assert_eq!(
            open.status,
            200,
            "FailOpen pool with the collector down: {}\n{}",
            open.text(),
            stack.diagnostics()
        );
        let pod = open.served_by().unwrap_or("?");
        assert_eq!(stack.pool_of(pod), Some(OPEN_POOL), "served by {pod}");
        let close = request(&stack, "close").await?;
        if close.status == 503 {
            ensure_openai_error(&close, 503)?;
            fail_close_refused = true;
        } else if fail_close_refused {
            bail!(
                "FailClose pool served again ({}) while the collector is still down",
                close.status
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fail_close_refused,
        "FailClose pool still served {}ms after the collector went down\n{}",
        STATE_TIMEOUT_MS * 4,
        stack.diagnostics()
    );
    let close = request(&stack, "close").await?;
    ensure_openai_error(&close, 503)?;

    stack.restart_collector().await?;
    for route in ["close", "open"] {
        wait_until(
            &format!("route {route} to serve again"),
            Duration::from_secs(15),
            || async { Ok(request(&stack, route).await?.status == 200) },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", stack.diagnostics()))?;
    }
    Ok(())
}
