//! Two teams install the GIE chart in two namespaces and get the same pool
//! name: through the real Envoy both pools are reachable (`cluster_pools`
//! values `namespace/name`), each keeps its own pods, stats and learned
//! prefix placements, and a bare name that both namespaces have is a clear
//! OpenAI-shaped 503 (`x-gateway-error: ambiguous_pool`) with a log line.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration::e2e::envoy_config::Route;
use integration::e2e::http::HttpClient;
use integration::e2e::load::{ensure_openai_error, run_concurrently};
use integration::e2e::scenarios::{self, LLAMA_SIM_ARGS};
use integration::e2e::stack::{PoolPod, Stack, StackSpec};
use integration::e2e::wait::wait_until;

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const TEAMS: [&str; 2] = ["team-a", "team-b"];
/// Conversations per team (each one prefix group, so one learned placement).
const CONVERSATIONS: usize = 6;
const REQUESTS_PER_TEAM: usize = 60;

/// The same InferencePool (name, selector, port) in `namespace`.
fn pool_manifest(namespace: &str) -> String {
    format!(
        r#"apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: llm
  namespace: {namespace}
spec:
  selector:
    matchLabels:
      app: vllm
  targetPorts:
  - number: 8000
"#
    )
}

/// Two pods per team, labelled alike: only the namespace tells them apart.
fn team_pods() -> Result<Vec<PoolPod>> {
    let mut pods = Vec::new();
    for team in TEAMS {
        for pod in scenarios::local_pods(
            &format!("{team}/llm"),
            &format!("{team}-vllm"),
            2,
            &[("app", "vllm")],
            LLAMA_SIM_ARGS,
        )? {
            pods.push(PoolPod {
                pod: pod.pod.in_namespace(team),
                ..pod
            });
        }
    }
    Ok(pods)
}

fn body(conversation: usize) -> String {
    // Long enough (> 4 blocks of 64 bytes) to carry a prefix-affinity key.
    let system = format!(
        "You are assistant number {conversation}. Answer briefly and politely, and never repeat the question back. "
    )
    .repeat(4);
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 2,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "hello"}
        ],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_pools_in_two_namespaces_are_both_reachable() -> Result<()> {
    let stack = Stack::start(StackSpec {
        pods: team_pods()?,
        sim_args: ["--time-scale", "0.01", "--seed", "3"]
            .map(String::from)
            .to_vec(),
        manifests: TEAMS
            .iter()
            .map(|team| (format!("{team}-pool.yaml"), pool_manifest(team)))
            .collect(),
        routes: vec![
            Route::to_pool("team a", Some(("x-team", "a")), "team-a-llm"),
            Route::to_pool("team b", Some(("x-team", "b")), "team-b-llm"),
            // Not in cluster_pools: the bare name `llm`, which both have.
            Route::to_pool("bare name", None, "llm"),
        ],
        plugin_config: serde_json::json!({
            "collector_cluster": "llmgw_collector",
            "cluster_pools": {"team-a-llm": "team-a/llm", "team-b-llm": "team-b/llm"},
        }),
        ..Default::default()
    })
    .await?;
    for header in ["a", "b"] {
        stack
            .wait_routable("/v1/chat/completions", &[("x-team", header)], &body(0))
            .await?;
    }

    // Every request is served by a pod of its own team's pool.
    let replies = run_concurrently(2 * REQUESTS_PER_TEAM, 8, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/chat/completions");
        let header = if i % 2 == 0 { "a" } else { "b" };
        let body = body(i / 2 % CONVERSATIONS);
        async move {
            let reply = client.post(&url, &[("x-team", header)], body).await;
            (header, reply)
        }
    })
    .await;
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for (header, reply) in replies {
        let reply = reply?;
        ensure!(
            reply.status == 200,
            "{} {}\n{}",
            reply.status,
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().context("x-sim-pod on every reply")?;
        let expected = format!("team-{header}/llm");
        ensure!(
            stack.pool_of(pod) == Some(expected.as_str()),
            "x-team: {header} served by {pod} of {:?}",
            stack.pool_of(pod)
        );
        *served.entry(expected).or_default() += 1;
    }
    assert_eq!(
        served.values().copied().collect::<Vec<_>>(),
        vec![REQUESTS_PER_TEAM; 2],
        "{served:?}"
    );

    // A bare name both namespaces have: OpenAI-shaped 503 naming them.
    let reply = stack
        .post("/v1/chat/completions", &[], body(0))
        .await
        .context("bare-name request")?;
    ensure_openai_error(&reply, 503)?;
    assert_eq!(
        reply
            .headers
            .get("x-gateway-error")
            .and_then(|v| v.to_str().ok()),
        Some("ambiguous_pool")
    );
    let message = reply.json()?["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("team-a, team-b") && message.contains("namespace/name"),
        "{message}"
    );

    // Envoy stats: one pool label per namespace.
    let stats = HttpClient::new()
        .get(&format!("http://{}/stats", stack.envoy.admin))
        .await?
        .text();
    let requests = |label: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.contains(&format!("llmgw_requests_total.pool.{label}.model.")))
            .filter_map(|l| {
                l.rsplit_once(": ")
                    .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            })
            .sum()
    };
    // The probes of wait_routable count too.
    assert!(
        requests("team-a_llm") >= REQUESTS_PER_TEAM as u64
            && requests("team-b_llm") >= REQUESTS_PER_TEAM as u64,
        "per-namespace request stats missing:\n{}",
        stats
            .lines()
            .filter(|l| l.contains("llmgw_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stats
            .lines()
            .any(|l| l.contains("llmgw_errors_total.reason.ambiguous_pool") && !l.ends_with(": 0")),
        "no ambiguous_pool error stat"
    );

    // The filter logged the ambiguity.
    wait_until(
        "the ambiguous_pool log line",
        Duration::from_secs(5),
        || async { Ok(stack.envoy.log_tail().contains("ambiguous_pool")) },
    )
    .await
    .with_context(|| stack.diagnostics())?;

    // Prefix reports name the namespace: each pool learned its own placement
    // for every conversation sent to it, on its own pods.
    let collector = stack.collector.as_ref().context("collector running")?;
    wait_until(
        "both pools to learn every conversation's placement",
        Duration::from_secs(10),
        || async {
            let snapshot = collector.snapshot().await?;
            let mut learned = Vec::new();
            for team in TEAMS {
                let pool = snapshot
                    .pools
                    .iter()
                    .find(|p| p.namespace == team && p.name == "llm")
                    .context("pool in snapshot")?;
                learned.push(pool_state::placements::records(&pool.prefix_placements).count());
            }
            Ok(learned == vec![CONVERSATIONS; 2])
        },
    )
    .await
    .with_context(|| stack.diagnostics())?;
    Ok(())
}
