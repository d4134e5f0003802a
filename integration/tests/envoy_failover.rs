//! A dead pod costs nothing: through the real Envoy (override_host pool
//! clusters, the retry policy) with the collector and simulated pods.
//!
//! - The crash drill: 16 concurrent clients, half streaming, 4 pods, one
//!   crashed midway. No request that had not started streaming fails, and the
//!   filter never picks the dead pod again after its first failure.
//! - The collector down and one of two FailOpen pods dead: >= 99% served.
//!
//! Both print their figures (BENCHMARKS.md, "Failover").

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use integration::e2e::envoy_config::{DataPath, Route};
use integration::e2e::scenarios::{self, GKE_POOL, LLAMA_SIM_ARGS};
use integration::e2e::stack::{Stack, StackSpec};
use integration::e2e::wait::wait_until;

/// Sum of the Envoy stats whose names contain every one of `parts`.
async fn stat_sum(stack: &Stack, parts: &[&str]) -> Result<u64> {
    let url = format!("http://{}/stats", stack.envoy.admin);
    let reply = stack.client.get(&url).await?;
    Ok(reply
        .text()
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(name, _)| parts.iter().all(|p| name.contains(p)))
        .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
        .sum())
}

/// The filter's stat label of an `ip:port`.
fn label(addr: std::net::SocketAddr) -> String {
    addr.to_string().replace(['.', ':'], "_")
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    /// Failed before any response byte (status or connection): must be 0.
    failed_before_streaming: usize,
    /// A stream cut after it started (the crashed pod was generating it).
    cut_mid_stream: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_drill_no_client_sees_a_dead_pod_before_its_stream_started() -> Result<()> {
    const CLIENTS: usize = 16;
    let stack = Arc::new(
        Stack::start(scenarios::gke_spec(
            4,
            &["--time-scale", "1", "--seed", "7"],
        )?)
        .await?,
    );
    let probe = r#"{"model":"food-review","prompt":"hi","max_tokens":1}"#;
    stack.wait_routable("/v1/completions", &[], probe).await?;

    let victim = stack.fleet.pods[0].clone();
    let started = Instant::now();
    let run_for = Duration::from_secs(5);
    let crash_at = Duration::from_millis(1500);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let stack = Arc::clone(&stack);
        clients.spawn(async move {
            let streaming = client % 2 == 0;
            let mut tally = Tally::default();
            let mut failures = Vec::new();
            let mut i = 0;
            while started.elapsed() < run_for {
                i += 1;
                let body = serde_json::json!({
                    "model": "food-review",
                    "prompt": format!("client {client} request {i}: tell me about ramen"),
                    "max_tokens": if streaming { 24 } else { 12 },
                    "stream": streaming,
                })
                .to_string();
                let url = stack.url("/v1/completions");
                if streaming {
                    match stack.client.post_timed(&url, &[], body).await {
                        Ok(r) if r.status == 200 => {
                            let text: String = r
                                .chunks
                                .iter()
                                .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
                                .collect();
                            if text.trim_end().ends_with("data: [DONE]") {
                                tally.ok += 1;
                            } else {
                                tally.cut_mid_stream += 1;
                            }
                        }
                        Ok(r) => {
                            tally.failed_before_streaming += 1;
                            let text: String = r
                                .chunks
                                .iter()
                                .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
                                .collect();
                            failures.push(format!("stream: status {}: {text}", r.status));
                        }
                        // The body broke off after the 200 headers: the pod
                        // died while generating it.
                        Err(_) => tally.cut_mid_stream += 1,
                    }
                } else {
                    match stack.client.post(&url, &[], body).await {
                        Ok(r) if r.status == 200 => tally.ok += 1,
                        Ok(r) => {
                            tally.failed_before_streaming += 1;
                            failures.push(format!("status {}: {}", r.status, r.text()));
                        }
                        Err(e) => {
                            tally.failed_before_streaming += 1;
                            failures.push(format!("{e:#}"));
                        }
                    }
                }
            }
            (tally, failures)
        });
    }

    tokio::time::sleep(crash_at).await;
    let victim_label = label(victim.addr());
    let picks_at_crash = stat_sum(&stack, &["llmgw_picks_total", &victim_label]).await?;
    stack
        .client
        .post(&format!("{}/admin/crash", victim.url()), &[], "")
        .await?;
    wait_until(
        "the filter to record the dead pod's first failure",
        Duration::from_secs(10),
        || async {
            Ok(stat_sum(&stack, &["llmgw_endpoint_failures_total", &victim_label]).await? > 0)
        },
    )
    .await?;
    let picks_after_first_failure = stat_sum(&stack, &["llmgw_picks_total", &victim_label]).await?;

    let mut total = Tally::default();
    let mut failures = Vec::new();
    while let Some(joined) = clients.join_next().await {
        let (tally, mut f) = joined?;
        total.ok += tally.ok;
        total.failed_before_streaming += tally.failed_before_streaming;
        total.cut_mid_stream += tally.cut_mid_stream;
        failures.append(&mut f);
    }
    let picks_at_end = stat_sum(&stack, &["llmgw_picks_total", &victim_label]).await?;
    let fallback_served = stat_sum(&stack, &["llmgw_fallback_served_total"]).await?;
    let retries = stat_sum(&stack, &[&format!("cluster.{GKE_POOL}.upstream_rq_retry")]).await?;
    let overflow = stat_sum(
        &stack,
        &[&format!("cluster.{GKE_POOL}.upstream_rq_retry_overflow")],
    )
    .await?;
    println!("crash drill: Envoy retry overflows (budget) {overflow}");
    println!(
        "crash drill: {} ok, {} failed before streaming, {} streams cut mid-way; \
         dead pod picked {} times before the crash, {} more before its first failure was recorded, \
         {} after; {} requests served by a fallback; Envoy retry stats sum {}",
        total.ok,
        total.failed_before_streaming,
        total.cut_mid_stream,
        picks_at_crash,
        picks_after_first_failure - picks_at_crash,
        picks_at_end - picks_after_first_failure,
        fallback_served,
        retries,
    );
    assert!(
        total.failed_before_streaming == 0,
        "{} client-visible errors before streaming: {:?}\n{}",
        total.failed_before_streaming,
        &failures[..failures.len().min(10)],
        stack.diagnostics()
    );
    assert_eq!(
        picks_at_end, picks_after_first_failure,
        "the dead pod was picked after its first failure"
    );
    assert!(
        total.ok > 100,
        "too little traffic to mean anything: {total:?}"
    );
    Ok(())
}

const OPEN_POOL: &str = "fail-open-pool";
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_and_a_dead_fail_open_pod_still_serves_99_percent() -> Result<()> {
    const REQUESTS: usize = 400;
    const STATE_TIMEOUT_MS: u64 = 1000;
    let pods = scenarios::local_pods(OPEN_POOL, "open", 2, &[("app", OPEN_POOL)], LLAMA_SIM_ARGS)?;
    let mut stack = Stack::start(StackSpec {
        pods,
        sim_args: ["--time-scale", "0.01"].map(String::from).to_vec(),
        manifests: vec![("fail-open-pool.yaml".into(), OPEN_POOL_MANIFEST.into())],
        routes: vec![Route::to_pool("FailOpen", None, OPEN_POOL)],
        plugin_config: serde_json::json!({
            "collector_cluster": "llmgw_collector",
            "state_timeout_ms": STATE_TIMEOUT_MS,
        }),
        ..Default::default()
    })
    .await?;
    let body = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hello","max_tokens":1}"#;
    stack.wait_routable("/v1/completions", &[], body).await?;

    stack.stop_collector();
    tokio::time::sleep(Duration::from_millis(STATE_TIMEOUT_MS * 3 / 2)).await;
    let victim = stack.fleet.pods[0].clone();
    stack
        .client
        .post(&format!("{}/admin/crash", victim.url()), &[], "")
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stack = Arc::new(stack);
    let replies = integration::e2e::load::run_concurrently(REQUESTS, 8, |_| {
        let stack = Arc::clone(&stack);
        async move { stack.post("/v1/completions", &[], body).await }
    })
    .await;
    let served = replies
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    let fail_open = stat_sum(&stack, &["llmgw_fail_open_total"]).await?;
    println!(
        "collector down, 1 of 2 FailOpen pods dead: {served}/{REQUESTS} served ({:.1}%), \
         {fail_open} fail-open picks",
        100.0 * served as f64 / REQUESTS as f64
    );
    assert!(fail_open > 0, "the requests were not fail-open picks");
    assert!(
        served * 100 >= REQUESTS * 99,
        "only {served}/{REQUESTS} served\n{}",
        stack.diagnostics()
    );
    Ok(())
}

/// The documented alternative: ORIGINAL_DST pool clusters with the filter
/// naming one address (`fallbacks: 0`) still route every request to the pick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_dst_alternative_routes_to_the_pick() -> Result<()> {
    let mut spec = scenarios::gke_spec(2, &["--time-scale", "0.01"])?;
    spec.data_path = DataPath::OriginalDst;
    spec.plugin_config = serde_json::json!({
        "collector_cluster": "llmgw_collector",
        "fallbacks": 0,
    });
    let stack = Stack::start(spec).await?;
    let body = r#"{"model":"food-review","prompt":"hi","max_tokens":1}"#;
    stack.wait_routable("/v1/completions", &[], body).await?;
    for _ in 0..20 {
        let reply = stack.post("/v1/completions", &[], body).await?;
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().unwrap_or("?");
        assert_eq!(stack.pool_of(pod), Some(GKE_POOL), "served by {pod}");
    }
    Ok(())
}
