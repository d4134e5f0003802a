//! Learned prefix placements through the real collector binary: a gateway's
//! ReportPrefixes on one collector replica shows up in the snapshots of that
//! replica and of its peer (`--placement-peer`), bad reports get clear gRPC
//! errors, and `--no-prefix-placement` turns learning off.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pool_state::pool_state_client::PoolStateClient;
use pool_state::{GetRequest, Pool, PrefixReport, PrefixSeen};
use support::{collector_bin, free_port, ChildGuard};
use tonic::transport::Channel;

const POOL: &str = "vllm-llama3.1-8b-instruct";

/// A manifest directory with the GKE example pool and two Ready pods whose
/// ports nothing listens on (placement needs the pods, not their metrics).
fn manifests() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gke-deploy");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut addresses = Vec::new();
    for name in ["pod-a", "pod-b"] {
        let port = free_port();
        addresses.push(format!("127.0.0.1:{port}"));
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {POOL}\n  annotations:\n    llm-gateway.io/port-map: \"8000={port}\"\nstatus:\n  podIP: 127.0.0.1\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), manifest).unwrap();
    }
    (dir, addresses)
}

fn start(dir: &Path, grpc_port: u16, extra: &[String]) -> ChildGuard {
    let child = Command::new(collector_bin())
        .args(["--source", "file", "--dir"])
        .arg(dir)
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    ChildGuard {
        child,
        name: "sidecar-collector",
    }
}

async fn client(port: u16) -> PoolStateClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PoolStateClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("collector on {port} not reachable: {e}"),
        }
    }
}

/// Polls `Get` until the pool satisfies `accept`.
async fn wait_for_pool(
    client: &mut PoolStateClient<Channel>,
    what: &str,
    accept: impl Fn(&Pool) -> bool,
) -> Pool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(reply) = client.get(GetRequest::default()).await {
            if let Some(pool) = reply
                .into_inner()
                .pools
                .into_iter()
                .find(|p| p.name == POOL)
            {
                if accept(&pool) {
                    return pool;
                }
                last = Some(pool);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; last pool: {last:#?}")
}

fn placed_on(pool: &Pool, key: u64) -> Option<&str> {
    pool_state::placements::lookup(&pool.prefix_placements, key)
        .and_then(|endpoint| pool.endpoints.get(endpoint as usize))
        .map(|e| e.address.as_str())
}

fn seen(pool: &str, key: u64, endpoint: &str) -> PrefixSeen {
    PrefixSeen {
        pool: pool.into(),
        key,
        endpoint: endpoint.into(),
        namespace: "default".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_to_one_replica_places_the_key_on_both() {
    let (dir, pods) = manifests();
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start(
        dir.path(),
        port_a,
        &[format!("--placement-peer=127.0.0.1:{port_b}")],
    );
    let _b = start(
        dir.path(),
        port_b,
        &[format!("--placement-peer=127.0.0.1:{port_a}")],
    );
    let (mut a, mut b) = (client(port_a).await, client(port_b).await);
    for c in [&mut a, &mut b] {
        wait_for_pool(c, "the pool with both pods", |p| p.endpoints.len() == 2).await;
    }

    let ack = a
        .report_prefixes(PrefixReport {
            seen: vec![
                seen(POOL, 42, &pods[1]),
                seen("no-such-pool", 43, &pods[1]),
                seen(POOL, 44, "10.9.9.9:1"),
            ],
            forwarded: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1, "unknown pools and endpoints are ignored");
    for (name, c) in [("a", &mut a), ("b (the peer)", &mut b)] {
        let pool = wait_for_pool(c, "key 42 placed", |p| placed_on(p, 42).is_some()).await;
        assert!(pool.learns_prefix_placements, "{name}");
        assert_eq!(placed_on(&pool, 42), Some(pods[1].as_str()), "{name}");
        assert_eq!(
            pool.prefix_placements.len(),
            pool_state::placements::RECORD,
            "{name}: one key"
        );
    }

    let too_many = PrefixReport {
        seen: vec![seen(POOL, 1, &pods[0]); 20_000],
        forwarded: false,
    };
    let status = a.report_prefixes(too_many).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    // The collector keeps serving after a bad report.
    a.get(GetRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prefix_placement_ignores_reports() {
    let (dir, pods) = manifests();
    let port = free_port();
    let _c = start(dir.path(), port, &["--no-prefix-placement".to_string()]);
    let mut c = client(port).await;
    let pool = wait_for_pool(&mut c, "the pool", |p| p.endpoints.len() == 2).await;
    assert!(!pool.learns_prefix_placements);
    let ack = c
        .report_prefixes(PrefixReport {
            seen: vec![seen(POOL, 42, &pods[0])],
            forwarded: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pool = wait_for_pool(&mut c, "the pool", |_| true).await;
    assert!(pool.prefix_placements.is_empty());
}
