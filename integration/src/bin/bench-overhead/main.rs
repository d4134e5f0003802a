//! `make bench-overhead`: what the gateway filter adds to a request in Envoy.
//! Envoys run side by side on the same trivial upstream pods — one with the
//! filter picking the pod, optionally more with other builds of it
//! (`--compare`), one with the floor filter (reads the body, the client names
//! the pod: the cost of Envoy's wasm plumbing alone), and one without any
//! filter routing the same requests to the pod the client names — and rounds
//! of closed-loop load rotate between them, for each body size. Reports
//! latency and throughput of each, and the Envoy process's CPU time per
//! request, the figure least disturbed by how the machine's cores are shared.

mod cpu;
mod decision_time;
mod ext_proc;
mod load;
mod report;
mod upstream;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use integration::e2e::artifacts::{filter_wasm, workspace_root};
use integration::e2e::components::{Collector, Envoy};
use integration::e2e::envoy_config::{DataPath, EnvoyConfig, Route, DESTINATION_HEADER};
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
    /// Give every request its own prompt (a new prefix group each: the
    /// filter's most expensive learned-placement path) instead of one prompt.
    #[arg(long)]
    unique_prompts: bool,
    /// Rounds per arm and size (the arms alternate round by round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests per round.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Another build of the gateway filter to run side by side (e.g. the
    /// previous commit's), as one more arm; repeatable.
    #[arg(long, value_name = "WASM")]
    compare: Vec<PathBuf>,
    /// The floor filter (default target/floor_filter.wasm, from
    /// `scripts/build-wasm.sh floor-filter`); its arm is skipped when missing.
    #[arg(long, value_name = "WASM")]
    floor: Option<PathBuf>,
    /// Render the pool cluster as ORIGINAL_DST on the header instead of the
    /// default STATIC cluster under override_host (to compare the two).
    #[arg(long)]
    original_dst: bool,
    /// Another floor-like filter (the client names the pod; e.g. a
    /// `FLOOR_PROBE` build of the floor filter), as one more arm; repeatable.
    #[arg(long, value_name = "WASM")]
    compare_floor: Vec<PathBuf>,
    /// Leave out the ext_proc arm (Envoy + `ext-proc-floor`).
    #[arg(long)]
    no_ext_proc: bool,
}

/// The floor filter's module: the one given (which must exist), else the
/// default one if built.
fn floor_wasm(given: Option<&Path>) -> Result<Option<PathBuf>> {
    match given {
        Some(path) if path.is_file() => Ok(Some(path.to_path_buf())),
        Some(path) => anyhow::bail!("--floor {}: no such file", path.display()),
        None => {
            let path = workspace_root().join("target/floor_filter.wasm");
            Ok(path.is_file().then_some(path))
        }
    }
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

/// The headers the client sends with request `i`.
pub(crate) type HeadersFor = Arc<dyn Fn(usize) -> Vec<(String, String)> + Send + Sync>;

pub(crate) struct Arm {
    name: String,
    url: String,
    headers_for: HeadersFor,
    /// The Envoy serving this arm (stopped when the arm is dropped); its CPU
    /// time is charged to the arm's rounds.
    envoy: Envoy,
    rounds: Vec<Round>,
    /// Envoy CPU time used during this arm's rounds.
    envoy_cpu: Duration,
    /// The (shared) collector's CPU time during this arm's rounds: its
    /// scraping, plus the prefix reports this arm's filter sends.
    collector_cpu: Duration,
    /// The external processor this arm's Envoy consults (the ext_proc arm).
    processor: Option<ManagedProcess>,
    /// Its CPU time during this arm's rounds.
    processor_cpu: Duration,
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
    config.routes = vec![Route::to_pool("the benchmark pool", None, POOL)];
    if args.original_dst {
        // ORIGINAL_DST takes one address: the filter names no fallbacks.
        config.data_path = DataPath::OriginalDst;
        config.plugin_config["fallbacks"] = serde_json::json!(0);
    }
    config.pool_endpoints = [(POOL.to_string(), pods.iter().map(|p| p.addr()).collect())].into();
    let addrs: Arc<Vec<String>> = Arc::new(pods.iter().map(|p| p.addr().to_string()).collect());
    let client_picks: HeadersFor = Arc::new(move |i| {
        vec![(
            DESTINATION_HEADER.to_string(),
            addrs[i % addrs.len()].clone(),
        )]
    });
    let filter_picks: HeadersFor = Arc::new(|_| Vec::new());
    // (arm name, wasm filter if any, who picks the pod). The baseline is last.
    let mut setups: Vec<(String, Option<PathBuf>, HeadersFor)> = vec![(
        "Envoy + filter".into(),
        Some(filter_wasm()?),
        filter_picks.clone(),
    )];
    for path in &args.compare {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        setups.push((
            format!("Envoy + {name}"),
            Some(path.clone()),
            filter_picks.clone(),
        ));
    }
    match floor_wasm(args.floor.as_deref())? {
        Some(path) => setups.push((
            "Envoy + floor filter (reads the body, client picks)".into(),
            Some(path),
            client_picks.clone(),
        )),
        None => println!(
            "(no floor arm: target/floor_filter.wasm is missing; `./scripts/build-wasm.sh floor-filter` builds it)"
        ),
    }
    for path in &args.compare_floor {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        setups.push((
            format!("Envoy + {name} (client picks)"),
            Some(path.clone()),
            client_picks.clone(),
        ));
    }
    setups.push(("Envoy, client picks the pod".into(), None, client_picks));

    let mut arms = Vec::new();
    for (index, (name, wasm, headers_for)) in setups.into_iter().enumerate() {
        config.listen = free_local_addr()?;
        config.admin = free_local_addr()?;
        config.wasm_filter = wasm.is_some();
        if let Some(wasm) = &wasm {
            config.wasm_path = wasm.display().to_string();
        }
        let path = dir.path().join(format!("envoy-{index}.yaml"));
        std::fs::write(&path, config.render())?;
        let envoy = Envoy::start(&path, config.admin, &log_dir).await?;
        arms.push(Arm {
            name,
            url: format!("http://{}/v1/completions", config.listen),
            headers_for,
            envoy,
            rounds: Vec::new(),
            envoy_cpu: Duration::ZERO,
            collector_cpu: Duration::ZERO,
            processor: None,
            processor_cpu: Duration::ZERO,
        });
    }
    if !args.no_ext_proc {
        // Before the baseline, which stays last.
        let arm = ext_proc::arm(&config, &pods, dir.path(), &log_dir, filter_picks.clone()).await?;
        arms.insert(arms.len() - 1, arm);
    }

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
    report::header();
    let mut summary = Vec::new();
    let mut decision_times = Vec::new();
    for &size in &args.sizes {
        let mut decision_before = Vec::new();
        tokio::time::sleep(decision_time::FLUSH).await;
        for arm in &arms {
            decision_before.push(decision_time::read(&client, arm.envoy.admin).await?);
        }
        let body = body_of_size(size);
        let unique = args.unique_prompts;
        // Numbered across rounds and arms, so no prompt is ever sent twice.
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(size << 32));
        let body_for: load::BodyFor = Arc::new(move |_| {
            if unique {
                let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                with_unique_prompt(&body, n)
            } else {
                body.clone()
            }
        });
        for arm in arms.iter_mut() {
            arm.rounds.clear();
            arm.envoy_cpu = Duration::ZERO;
            arm.collector_cpu = Duration::ZERO;
            arm.processor_cpu = Duration::ZERO;
            // Warm-up: connections, the filter's VMs, caches.
            load::round(
                &client,
                &arm.url,
                body_for.clone(),
                200,
                args.concurrency,
                arm.headers_for.clone(),
            )
            .await?;
        }
        for r in 0..args.rounds {
            // Every round visits the arms in a different order (forward,
            // backward, shifted), so none is always first or last.
            let n = arms.len();
            let order: Vec<usize> = (0..n)
                .map(|k| {
                    if r % 2 == 0 {
                        (k + r / 2) % n
                    } else {
                        (n - 1 - k + r / 2) % n
                    }
                })
                .collect();
            for index in order {
                let arm = &mut arms[index];
                let cpu_before = cpu::process_cpu(arm.envoy.pid())?;
                let collector_before = cpu::process_cpu(collector.pid())?;
                let processor_before = match &arm.processor {
                    Some(p) => cpu::process_cpu(p.pid())?,
                    None => Duration::ZERO,
                };
                let round = load::round(
                    &client,
                    &arm.url,
                    body_for.clone(),
                    args.requests,
                    args.concurrency,
                    arm.headers_for.clone(),
                )
                .await?;
                arm.envoy_cpu += cpu::process_cpu(arm.envoy.pid())?.saturating_sub(cpu_before);
                arm.collector_cpu +=
                    cpu::process_cpu(collector.pid())?.saturating_sub(collector_before);
                if let Some(p) = &arm.processor {
                    arm.processor_cpu +=
                        cpu::process_cpu(p.pid())?.saturating_sub(processor_before);
                }
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
            let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / all.len().max(1) as f64;
            let row = report::ArmStats {
                name: arm.name.clone(),
                requests: all.len(),
                median: quantile(&all, 0.5),
                p90: quantile(&all, 0.9),
                p99: quantile(&all, 0.99),
                mean: all.iter().sum::<Duration>() / all.len().max(1) as u32,
                rps: all.len() as f64 / wall.as_secs_f64(),
                envoy_us: per_request(arm.envoy_cpu),
                processor_us: arm
                    .processor
                    .as_ref()
                    .map(|_| per_request(arm.processor_cpu)),
                collector_us: per_request(arm.collector_cpu),
            };
            row.print(size);
            stats.push(row);
        }
        summary.push((size, stats));
        tokio::time::sleep(decision_time::FLUSH).await;
        for (arm, (sum, count)) in arms.iter().zip(decision_before) {
            let (sum_after, count_after) = decision_time::read(&client, arm.envoy.admin).await?;
            if count_after > count {
                decision_times.push((
                    size,
                    arm.name.clone(),
                    (sum_after - sum) / (count_after - count),
                ));
            }
        }
    }
    report::against_baseline(&summary);
    report::decision_times(&decision_times);
    report::goals(&summary);
    drop(arms);
    Ok(())
}

/// `body` with its prompt's first bytes replaced by `i` in decimal (same size,
/// its own prefix group).
fn with_unique_prompt(body: &Bytes, i: usize) -> Bytes {
    let marker = br#""prompt":""#;
    let mut out = body.to_vec();
    if let Some(at) = out.windows(marker.len()).position(|w| w == marker) {
        let digits = format!("{i:012}");
        let start = at + marker.len();
        if let Some(slot) = out.get_mut(start..start + digits.len()) {
            slot.copy_from_slice(digits.as_bytes());
        }
    }
    Bytes::from(out)
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
