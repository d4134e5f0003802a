//! End to end in file mode: real `vllm-sim` pods, the real collector binary
//! over a directory holding the GKE example manifests plus Pod manifests, and
//! a gRPC Watch client observing what a gateway filter would see.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pool_state::pool_state_client::PoolStateClient;
use pool_state::{Pool, Snapshot, WatchRequest};
use support::{collector_bin, free_port, start_sims, ChildGuard};
use tonic::Streaming;

const POOL: &str = "vllm-llama3.1-8b-instruct";
const BASE_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

fn pod_manifest(name: &str, app: &str, address: &str) -> String {
    let port = address.rsplit_once(':').unwrap().1;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {app}\n  annotations:\n    llm-gateway.io/port-map: \"8000={port}\"\nstatus:\n  podIP: 127.0.0.1\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}

fn copy_examples(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Writes a file so the collector's poller sees a complete new version.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for(
    stream: &mut Streaming<Snapshot>,
    what: &str,
    timeout: Duration,
    mut accept: impl FnMut(&Pool) -> bool,
) -> Snapshot {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(snapshot))) => {
                if let Some(pool) = snapshot.pools.iter().find(|p| p.name == POOL) {
                    if accept(pool) {
                        return snapshot;
                    }
                }
                last = Some(snapshot);
            }
            Ok(Ok(None)) => panic!("watch stream ended while waiting for {what}"),
            Ok(Err(status)) => panic!("watch failed while waiting for {what}: {status}"),
            Err(_) => panic!("timed out waiting for {what}; last snapshot: {last:#?}"),
        }
    }
}

fn endpoint<'a>(pool: &'a Pool, pod: &str) -> Option<&'a pool_state::Endpoint> {
    pool.endpoints.iter().find(|e| e.pod == pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_follows_pods_load_and_manifests() {
    let (_sims, addresses) = start_sims(
        &["sim-a", "sim-b", "sim-c"],
        &[
            "--model",
            BASE_MODEL,
            "--lora-modules",
            "food-review",
            "cad-fabricator",
            "--max-loras",
            "2",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gke-deploy");
    copy_examples(&examples, dir.path());
    let pods = ["sim-a", "sim-b", "sim-c"];
    for (pod, address) in pods.iter().zip(&addresses) {
        std::fs::write(
            dir.path().join(format!("pod-{pod}.yaml")),
            pod_manifest(pod, POOL, address),
        )
        .unwrap();
    }

    let (grpc_port, http_port) = (free_port(), free_port());
    let child = Command::new(collector_bin())
        .args(["--source", "file", "--dir"])
        .arg(dir.path())
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .args([
            "--scrape-interval",
            "50ms",
            "--scrape-timeout",
            "500ms",
            "--poll-interval",
            "100ms",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    let mut collector = ChildGuard {
        child,
        name: "sidecar-collector",
    };

    let mut client = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.is_none() && Instant::now() < deadline {
        match PoolStateClient::connect(format!("http://127.0.0.1:{grpc_port}")).await {
            Ok(c) => client = Some(c),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut client = client.expect("collector gRPC port opened");
    let mut stream = client
        .watch(WatchRequest {
            pools: vec![POOL.into()],
            min_interval_ms: 0,
        })
        .await
        .expect("watch")
        .into_inner();

    // 1. Every pod shows up ready with metrics, plus the example objectives.
    let snapshot = wait_for(
        &mut stream,
        "three ready endpoints",
        Duration::from_secs(15),
        |pool| {
            pool.endpoints.len() == 3
                && pool
                    .endpoints
                    .iter()
                    .all(|e| e.ready && e.metrics_age_ms < 1000)
        },
    )
    .await;
    let pool = &snapshot.pools[0];
    assert_eq!(snapshot.pools.len(), 1, "Watch was filtered to one pool");
    for (pod, address) in pods.iter().zip(&addresses) {
        let e = endpoint(pool, pod).unwrap();
        assert_eq!(&e.address, address);
        assert_eq!(e.max_loras, 2, "{e:?}");
        assert!(e.block_size > 0 && e.num_gpu_blocks > 0, "{e:?}");
    }
    let objectives: Vec<(&str, i32)> = pool
        .objectives
        .iter()
        .map(|o| (o.name.as_str(), o.priority))
        .collect();
    assert_eq!(
        objectives,
        vec![
            ("cad-fabricator", 10),
            ("food-review", 10),
            ("llama3-base-model", 20)
        ]
    );
    assert_eq!(pool.failure_mode, pool_state::FailureMode::FailClose as i32);

    // The collector's own endpoints agree.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = http
        .get(format!("http://127.0.0.1:{http_port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://127.0.0.1:{http_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "inference_pool_ready_pods{{name=\"{POOL}\",namespace=\"default\"}} 3"
        )),
        "{metrics}"
    );

    // 2. Pause sim-b's engine and queue requests on it: its waiting count rises.
    let sim_b = &addresses[1];
    let paused = http
        .post(format!("http://{sim_b}/admin/faults"))
        .header("content-type", "application/json")
        .body(r#"{"pause_engine": true}"#)
        .send()
        .await
        .unwrap();
    assert!(paused.status().is_success(), "{}", paused.status());
    let mut requests = Vec::new();
    for _ in 0..5 {
        let (http, url) = (http.clone(), format!("http://{sim_b}/v1/completions"));
        requests.push(tokio::spawn(async move {
            let body = serde_json::json!({"model": BASE_MODEL, "prompt": "hello", "max_tokens": 4})
                .to_string();
            let request = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send();
            let _ = tokio::time::timeout(Duration::from_secs(30), request).await;
        }));
    }
    wait_for(
        &mut stream,
        "sim-b waiting >= 5",
        Duration::from_secs(10),
        |pool| {
            endpoint(pool, "sim-b").is_some_and(|e| e.waiting >= 5)
                && endpoint(pool, "sim-a").is_some_and(|e| e.waiting == 0)
        },
    )
    .await;

    // 3. Manifest edits apply live: a new InferenceModel and a relabelled pod.
    std::fs::write(
        dir.path().join("model.yaml"),
        format!("apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModel\nmetadata:\n  name: food\nspec:\n  modelName: food-review\n  criticality: Critical\n  poolRef:\n    name: {POOL}\n  targetModels:\n  - name: food-review\n    weight: 100\n"),
    )
    .unwrap();
    let snapshot = wait_for(
        &mut stream,
        "the new InferenceModel",
        Duration::from_secs(10),
        |pool| pool.model_rules.iter().any(|r| r.model == "food-review"),
    )
    .await;
    let rule = &snapshot.pools[0].model_rules[0];
    assert_eq!(rule.source, "InferenceModel/default/food");
    assert_eq!(rule.criticality, pool_state::Criticality::Critical as i32);
    assert_eq!(rule.targets[0].weight, 100);

    write_atomically(
        &dir.path().join("pod-sim-c.yaml"),
        &pod_manifest("sim-c", "something-else", &addresses[2]),
    );
    wait_for(
        &mut stream,
        "sim-c to leave after its label changed",
        Duration::from_secs(10),
        |pool| pool.endpoints.len() == 2 && endpoint(pool, "sim-c").is_none(),
    )
    .await;

    // 4. A crashed pod stops being ready (its scrapes fail); the others stay.
    let sim_a = &addresses[0];
    let _ = http
        .post(format!("http://{sim_a}/admin/crash"))
        .send()
        .await;
    let snapshot = wait_for(
        &mut stream,
        "sim-a not ready after its crash",
        Duration::from_secs(10),
        |pool| {
            endpoint(pool, "sim-a").is_some_and(|e| !e.ready && e.consecutive_scrape_failures >= 3)
        },
    )
    .await;
    assert!(endpoint(&snapshot.pools[0], "sim-b").unwrap().ready);

    // 5. Unary Get sees the same state; SIGTERM shuts the collector down cleanly.
    let got = client
        .get(pool_state::GetRequest { pools: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert!(got.version >= snapshot.version);
    assert!(got.pools.iter().any(|p| p.name == POOL));
    for request in requests {
        request.abort();
    }
    assert_eq!(
        collector.terminate(Duration::from_secs(10)),
        Some(0),
        "collector exits 0 on SIGTERM"
    );
}

#[test]
fn collector_rejects_a_missing_directory_with_a_clear_error() {
    let output = Command::new(collector_bin())
        .args(["--source", "file", "--dir", "/nonexistent/llmgw-test-dir"])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/llmgw-test-dir"), "{stderr}");
}

#[test]
fn help_reads_like_a_unix_tool() {
    let output = Command::new(collector_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--source",
        "--dir",
        "--namespace",
        "--grpc-listen",
        "--http-listen",
        "--scrape-interval",
        "--metrics-token-file",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
