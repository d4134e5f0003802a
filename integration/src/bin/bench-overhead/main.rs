//! `make bench-overhead`: what the gateway filter adds to a request in Envoy.
//! Two Envoys run side by side on the same trivial upstream pods — one with the
//! filter picking the pod, one routing the same requests with the pod named by
//! the client (the filter's only job removed) — and rounds of closed-loop load
//! alternate between them, for each body size. Reports median and p99 latency
//! of both, the difference, and the throughput ratio.

mod load;
mod upstream;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use integration::e2e::artifacts::filter_wasm;
use integration::e2e::components::{Collector, Envoy};
use integration::e2e::envoy_config::{EnvoyConfig, Route, DESTINATION_HEADER};
use integration::e2e::http::HttpClient;
use integration::e2e::pods::{manifests, SimPod};
use integration::e2e::ports::{free_local_addr, free_port};
use integration::e2e::process::ManagedProcess;
use integration::e2e::wait::wait_until;

use load::{quantile, Round};

const POOL: &str = "bench-pool";
const POOL_MANIFEST: &str = "apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: bench-pool
spec:
  selector:
    matchLabels:
      app: bench
  targetPorts:
  - number: 8000
";

#[derive(Parser)]
#[command(
    name = "bench-overhead",
    about = "Latency and throughput Envoy's gateway filter adds"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Request body sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,204800")]
    sizes: Vec<usize>,
    /// Rounds per arm and size (the arms alternate round by round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests per round.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the trivial model-server pods (started by the benchmark itself).
    Upstream {
        #[arg(long = "listen", required = true)]
        listen: Vec<SocketAddr>,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Some(Command::Upstream { listen }) => runtime.block_on(upstream::serve(listen)),
        None => runtime.block_on(run(&args)),
    }
}

struct Arm {
    name: &'static str,
    url: String,
    headers_for: Arc<dyn Fn(usize) -> Vec<(String, String)> + Send + Sync>,
    rounds: Vec<Round>,
}

async fn run(args: &Args) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("llmgw-bench-overhead-")
        .tempdir()?;
    let log_dir = dir.path().join("logs");
    let manifest_dir = dir.path().join("manifests");
    std::fs::create_dir_all(&log_dir)?;
    std::fs::create_dir_all(&manifest_dir)?;

    let pods: Vec<SimPod> = (0..2)
        .map(|i| {
            Ok(SimPod::local(
                &format!("upstream-{i}"),
                &[("app", "bench")],
                free_port(Ipv4Addr::LOCALHOST)?,
                &[],
            ))
        })
        .collect::<Result<_>>()?;
    let mut upstream_args = vec!["upstream".to_string()];
    for pod in &pods {
        upstream_args.extend(["--listen".to_string(), pod.addr().to_string()]);
    }
    let _upstream = ManagedProcess::spawn(
        "upstream",
        &std::env::current_exe()?,
        &upstream_args,
        &log_dir,
    )?;
    let client = HttpClient::new();
    for pod in &pods {
        let url = format!("{}/health", pod.url());
        wait_until("the upstream", Duration::from_secs(10), || async {
            Ok(client.get(&url).await?.status.is_success())
        })
        .await?;
    }
    std::fs::write(manifest_dir.join("pods.yaml"), manifests(&pods))?;
    std::fs::write(manifest_dir.join("pool.yaml"), POOL_MANIFEST)?;
    let collector = Collector::start(
        &manifest_dir,
        free_local_addr()?,
        free_local_addr()?,
        &log_dir,
    )
    .await?;
    let expected: Vec<(&str, SocketAddr)> = pods.iter().map(|p| (POOL, p.addr())).collect();
    collector.wait_for_pods(&expected).await?;

    let mut config = EnvoyConfig::demo();
    config.collector_grpc = collector.grpc;
    config.wasm_path = filter_wasm()?.display().to_string();
    config.routes = vec![Route::to_pool("the benchmark pool", None, POOL)];
    let mut envoys = Vec::new();
    let mut urls = Vec::new();
    for (name, with_filter) in [("with-filter", true), ("without-filter", false)] {
        config.listen = free_local_addr()?;
        config.admin = free_local_addr()?;
        config.wasm_filter = with_filter;
        let path = dir.path().join(format!("envoy-{name}.yaml"));
        std::fs::write(&path, config.render())?;
        envoys.push(Envoy::start(&path, config.admin, &log_dir).await?);
        urls.push(format!("http://{}/v1/completions", config.listen));
    }
    let addrs: Arc<Vec<String>> = Arc::new(pods.iter().map(|p| p.addr().to_string()).collect());
    let mut arms = [
        Arm {
            name: "Envoy + filter",
            url: urls[0].clone(),
            headers_for: Arc::new(|_| Vec::new()),
            rounds: Vec::new(),
        },
        Arm {
            name: "Envoy, client picks the pod",
            url: urls[1].clone(),
            headers_for: Arc::new(move |i| {
                vec![(
                    DESTINATION_HEADER.to_string(),
                    addrs[i % addrs.len()].clone(),
                )]
            }),
            rounds: Vec::new(),
        },
    ];

    for arm in &arms {
        let headers = (arm.headers_for)(0);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        wait_until(
            &format!("{} to route", arm.name),
            Duration::from_secs(20),
            || async {
                Ok(client
                    .post(&arm.url, &headers, body_of_size(1024))
                    .await?
                    .status
                    == 200)
            },
        )
        .await?;
    }
    println!(
        "bench-overhead: {} rounds x {} requests per arm and size, concurrency {}, 2 upstream pods, Envoy --concurrency 2",
        args.rounds, args.requests, args.concurrency
    );
    println!("\n| body | setup | requests | median | p90 | p99 | mean | throughput |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    for &size in &args.sizes {
        let body = body_of_size(size);
        for arm in arms.iter_mut() {
            arm.rounds.clear();
            // Warm-up: connections, the filter's VMs, caches.
            load::round(
                &client,
                &arm.url,
                body.clone(),
                200,
                args.concurrency,
                arm.headers_for.clone(),
            )
            .await?;
        }
        for r in 0..args.rounds {
            let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let arm = &mut arms[index];
                let round = load::round(
                    &client,
                    &arm.url,
                    body.clone(),
                    args.requests,
                    args.concurrency,
                    arm.headers_for.clone(),
                )
                .await?;
                arm.rounds.push(round);
            }
        }
        let mut stats = Vec::new();
        for arm in &arms {
            let mut all: Vec<Duration> = arm
                .rounds
                .iter()
                .flat_map(|r| r.latencies.iter().copied())
                .collect();
            all.sort();
            let wall: Duration = arm.rounds.iter().map(|r| r.wall).sum();
            let rps = all.len() as f64 / wall.as_secs_f64();
            let (median, p90, p99) = (
                quantile(&all, 0.5),
                quantile(&all, 0.9),
                quantile(&all, 0.99),
            );
            let mean = all.iter().sum::<Duration>() / all.len().max(1) as u32;
            println!(
                "| {} | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} req/s |",
                human_size(size),
                arm.name,
                all.len(),
                ms(median),
                ms(p90),
                ms(p99),
                ms(mean),
                rps
            );
            stats.push((median, p99, rps));
        }
        summary.push((size, stats[0], stats[1]));
    }
    println!("\n| body | added median | added p99 | throughput with / without filter |");
    println!("|---|---:|---:|---:|");
    for (size, with, without) in summary {
        println!(
            "| {} | {:+.3} ms | {:+.3} ms | {:.2} |",
            human_size(size),
            ms(with.0) - ms(without.0),
            ms(with.1) - ms(without.1),
            with.2 / without.2
        );
    }
    drop(envoys);
    Ok(())
}

/// A completion request of exactly `size` bytes (the prompt pads it).
fn body_of_size(size: usize) -> Bytes {
    let empty = r#"{"model":"bench-model","max_tokens":1,"prompt":""}"#;
    let pad = size.saturating_sub(empty.len());
    let body = format!(
        r#"{{"model":"bench-model","max_tokens":1,"prompt":"{}"}}"#,
        "x".repeat(pad)
    );
    Bytes::from(body)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}
