//! `make demo`: simulated pods for the GKE and ACK guides, the collector over
//! `examples/`, Envoy with `envoy.yaml` and the filter, then a stream of mixed
//! requests and a live table of who served what. Ctrl-C stops everything.
//! With `--requests N` it stops after N requests, prints a summary and exits
//! (0 when no request failed), so it also runs without a terminal.

mod table;
mod traffic;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use integration::e2e::artifacts::workspace_root;
use integration::e2e::components::{fetch_snapshot, Collector, Envoy, SimFleet};
use integration::e2e::envoy_config::EnvoyConfig;
use integration::e2e::http::HttpClient;
use integration::e2e::pods::parse_pods;
use integration::e2e::wait::wait_until;
use pool_state::Snapshot;
use tokio::sync::Semaphore;

use traffic::{Mixer, Tally};

/// Requests run without a terminal when none were asked for.
const DEFAULT_UNATTENDED_REQUESTS: usize = 500;

#[derive(Parser)]
#[command(name = "demo", about = "Model-aware routing through Envoy, live")]
struct Args {
    /// Requests to send; 0 = until Ctrl-C (without a terminal: 500).
    #[arg(long, default_value_t = 0)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Simulator pace (1 = a real GPU's pace, 0.1 = ten times faster).
    #[arg(long, default_value = "1")]
    time_scale: String,
    /// Print the Envoy configuration the demo (and envoy.yaml) uses, and exit.
    #[arg(long)]
    print_envoy_config: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_envoy_config {
        print!("{}", EnvoyConfig::demo().render());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(args))?;
    if failed > 0 {
        eprintln!("demo: {failed} request(s) failed (see above and .run/demo/logs/)");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: Args) -> Result<usize> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    let config = EnvoyConfig::demo();
    let interactive = std::io::stdout().is_terminal();
    let requests = match (args.requests, interactive) {
        (0, false) => {
            println!("demo: no terminal, sending {DEFAULT_UNATTENDED_REQUESTS} requests");
            Some(DEFAULT_UNATTENDED_REQUESTS)
        }
        (0, true) => None,
        (n, _) => Some(n),
    };

    let log_dir = root.join(".run/demo/logs");
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let pods = parse_pods(&std::fs::read_to_string("examples/demo/pods.yaml")?)
        .context("reading examples/demo/pods.yaml")?;
    let collector_http: SocketAddr = "127.0.0.1:9090".parse()?;
    let mut fixed: Vec<SocketAddr> = vec![
        config.listen,
        config.admin,
        config.collector_grpc,
        collector_http,
    ];
    fixed.extend(pods.iter().map(|p| p.addr()));
    ensure_free(&fixed)?;

    println!(
        "demo: starting {} simulated pods (logs in .run/demo/logs/)",
        pods.len()
    );
    let sim_args = vec!["--time-scale".to_string(), args.time_scale.clone()];
    let fleet = SimFleet::start(pods, &sim_args, &log_dir).await?;
    println!("demo: starting the sidecar-collector over examples/");
    let collector = Collector::start(
        &root.join("examples"),
        config.collector_grpc,
        collector_http,
        &log_dir,
    )
    .await?;
    let expected: Vec<(Option<&str>, SocketAddr)> =
        fleet.pods.iter().map(|p| (None, p.addr())).collect();
    collector.wait_for_endpoints(&expected).await?;
    println!(
        "demo: starting Envoy with envoy.yaml (listener {}, admin {})",
        config.listen, config.admin
    );
    let envoy = Envoy::start(&root.join("envoy.yaml"), config.admin, &log_dir).await?;
    let client = HttpClient::new();
    let gateway = format!("http://{}", config.listen);
    wait_until(
        "the gateway to route every demo route",
        Duration::from_secs(20),
        || async {
            for (route, model) in [
                ("gke", "food-review"),
                ("ack-lora", "travelhelper"),
                ("", "mymodel"),
            ] {
                let body = format!(r#"{{"model":"{model}","prompt":"hi","max_tokens":1}}"#);
                let reply = client
                    .post(
                        &format!("{gateway}/v1/completions"),
                        &[("x-route", route)],
                        body,
                    )
                    .await?;
                if !reply.status.is_success() {
                    bail!("route {route:?}: {} {}", reply.status, reply.text());
                }
            }
            Ok(true)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n--- envoy ---\n{}", envoy.log_tail()))?;

    let tally = Arc::new(Mutex::new(Tally::new()));
    let snapshot: Arc<Mutex<Option<Snapshot>>> = Arc::default();
    let poller = tokio::spawn(poll_state(config.collector_grpc, snapshot.clone()));
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let traffic = tokio::spawn(drive(
        requests,
        client.clone(),
        gateway.clone(),
        tally.clone(),
        permits.clone(),
    ));
    let in_flight = |permits: &Semaphore| args.concurrency.max(1) - permits.available_permits();

    let frame = || {
        let tally = tally.lock().expect("tally lock");
        let snapshot = snapshot.lock().expect("snapshot lock");
        table::render(&tally, snapshot.as_ref(), &gateway, in_flight(&permits))
    };
    let mut traffic = traffic;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if interactive {
        print!("\x1b[?25l");
    }
    let mut last_progress = 0;
    let stopped_by_signal = loop {
        tokio::select! {
            _ = &mut traffic => break false,
            _ = tokio::signal::ctrl_c() => break true,
            _ = terminate.recv() => break true,
            _ = ticker.tick() => {
                if interactive {
                    print!("\x1b[H\x1b[2J{}\n(Ctrl-C to stop)", frame());
                    let _ = std::io::stdout().flush();
                } else {
                    let sent = tally.lock().expect("tally lock").sent;
                    if sent >= last_progress + 100 {
                        last_progress = sent - sent % 100;
                        println!("demo: {sent} requests sent");
                    }
                }
            }
        }
    };
    traffic.abort();
    // Let requests already on the wire finish, briefly.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        permits.acquire_many(args.concurrency.max(1) as u32),
    )
    .await;
    if let Ok(s) = fetch_snapshot(config.collector_grpc).await {
        *snapshot.lock().expect("snapshot lock") = Some(s);
    }
    poller.abort();
    if interactive {
        print!("\x1b[H\x1b[2J\x1b[?25h");
    }
    println!("{}", frame());
    println!(
        "demo: {}; stopping Envoy, the collector and the pods",
        if stopped_by_signal {
            "interrupted"
        } else {
            "done"
        }
    );
    drop(envoy);
    drop(collector);
    drop(fleet);
    let failed = tally.lock().expect("tally lock").failed;
    Ok(if stopped_by_signal { 0 } else { failed })
}

/// Sends `requests` requests (or until aborted), `permits` bounding concurrency.
async fn drive(
    requests: Option<usize>,
    client: HttpClient,
    gateway: String,
    tally: Arc<Mutex<Tally>>,
    permits: Arc<Semaphore>,
) {
    let mut mixer = Mixer::new(0x11f9_a7e5);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    while requests.is_none_or(|n| sent < n) {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (kind, body) = mixer.next_request();
        tally.lock().expect("tally lock").sent += 1;
        sent += 1;
        let (client, gateway, tally) = (client.clone(), gateway.clone(), tally.clone());
        tasks.spawn(async move {
            let outcome = traffic::send(&client, &gateway, kind, body).await;
            tally.lock().expect("tally lock").record(kind, outcome);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Keeps `latest` at the collector's current snapshot.
async fn poll_state(grpc: SocketAddr, latest: Arc<Mutex<Option<Snapshot>>>) {
    loop {
        if let Ok(snapshot) = fetch_snapshot(grpc).await {
            *latest.lock().expect("snapshot lock") = Some(snapshot);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Fails with a clear message when a fixed demo address is taken (another demo?).
fn ensure_free(addrs: &[SocketAddr]) -> Result<()> {
    for addr in addrs {
        TcpListener::bind(addr).with_context(|| {
            format!("{addr} is in use (is another `make demo` running?); the demo needs it free")
        })?;
    }
    Ok(())
}
