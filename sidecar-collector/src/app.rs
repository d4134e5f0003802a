//! Wires the parts together:
//!
//! ```text
//! discovery ─Inventory─▶ model::build ─DesiredState─▶ scrape::run ─▶ Observations
//!                                     └──────────────▶ snapshot::run ◀─────┘
//!                                    placement ◀─reports─ grpc  └─Snapshot─▶ grpc + http
//! ```
//! Each arrow is a `tokio::sync::watch` channel: consumers always see the
//! latest complete value and never queue up stale ones.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use pool_state::Snapshot;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{Cli, Scheme, Source};
use crate::discovery::{self, Inventory};
use crate::last_valid::LastValid;
use crate::model::{self, DesiredState};
use crate::observations::Observations;
use crate::placement::{PlacementConfig, Placements};
use crate::scrape::{self, BearerToken, ScrapeConfig};
use crate::snapshot::{self, PublishConfig};
use crate::telemetry::Telemetry;
use crate::{grpc, http};

/// Runs the collector until `shutdown` resolves.
pub async fn run(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let collector_id = cli
        .collector_id
        .clone()
        .unwrap_or_else(default_collector_id);
    // Bind first: a taken port is a start-up error, not a silent background failure.
    let grpc_listener = TcpListener::bind(cli.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC listener {}", cli.grpc_listen))?;
    let http_listener = TcpListener::bind(cli.http_listen)
        .await
        .with_context(|| format!("binding HTTP listener {}", cli.http_listen))?;

    let (inventory_tx, inventory_rx) = watch::channel(Arc::new(Inventory::default()));
    match cli.source {
        Source::File => {
            let dir = cli
                .dir
                .clone()
                .context("--dir is required with --source file")?;
            let mut source = discovery::file::FileSource::new(dir.clone());
            let first = source
                .poll()
                .with_context(|| format!("reading manifests from {}", dir.display()))?
                .unwrap_or_default();
            inventory_tx.send_replace(Arc::new(Inventory {
                synced: true,
                ..first
            }));
            tokio::spawn(source.run(cli.poll_interval, inventory_tx));
        }
        Source::Kubernetes => {
            let client = kube::Client::try_default()
                .await
                .context("creating the Kubernetes client (in-cluster config or KUBECONFIG)")?;
            tokio::spawn(discovery::kube::run(
                client,
                cli.namespace.clone(),
                inventory_tx,
            ));
        }
    }

    let telemetry = Arc::new(Telemetry::default());
    let mut last_valid = LastValid::default();
    let initial = Arc::new(checked_build(
        &mut last_valid,
        &inventory_rx.borrow(),
        &telemetry,
    ));
    let (desired_tx, desired_rx) = watch::channel(initial.clone());
    log_problems(&BTreeSet::new(), &initial);
    tokio::spawn(follow_inventory(
        inventory_rx,
        desired_tx,
        initial,
        last_valid,
        telemetry.clone(),
    ));

    let token = match &cli.metrics_token_file {
        Some(path) => Some(BearerToken::from_file(
            path.clone(),
            std::time::Duration::from_secs(10),
        )?),
        None => None,
    };
    let pace = Arc::new(crate::pace::Pace::new(cli.scrape_interval));
    let scrape_config = ScrapeConfig {
        pace: pace.clone(),
        timeout: cli.scrape_timeout,
        scheme: match cli.metrics_scheme {
            Scheme::Http => "http".into(),
            Scheme::Https => "https".into(),
        },
        path: cli.metrics_path.clone(),
        max_body_bytes: cli.max_metrics_bytes,
        unready_after_failures: cli.unready_after_failures,
        token_file: cli.metrics_token_file.clone(),
        token_reload: std::time::Duration::from_secs(10),
        ca_file: cli.metrics_ca_file.clone(),
        insecure_skip_verify: cli.metrics_insecure_skip_verify,
    };
    let observations = Arc::new(Observations::new());
    telemetry.scrape_interval_ns.store(
        u64::try_from(cli.scrape_interval.as_nanos()).unwrap_or(u64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
    if let Some(budget) = cli.scrape_cpu_budget {
        tokio::spawn(crate::pace::follow_cpu_budget(
            pace.clone(),
            budget,
            std::time::Duration::from_secs(1),
            telemetry.clone(),
        ));
    }
    // Fail fast on a bad CA file instead of inside the background task.
    scrape::http_client(&scrape_config)?;
    tokio::spawn({
        let (desired, observations) = (desired_rx.clone(), observations.clone());
        async move {
            if let Err(err) = scrape::run(desired, observations, scrape_config, token).await {
                tracing::error!(error = %format!("{err:#}"), "scraper stopped");
            }
        }
    });

    let placements = Arc::new(Placements::new(
        PlacementConfig {
            ttl_ms: u64::try_from(cli.placement_ttl.as_millis()).unwrap_or(u64::MAX),
            max_keys: cli.placement_max_keys as usize,
            ..PlacementConfig::default()
        },
        !cli.no_prefix_placement,
    ));
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let publish_config = PublishConfig {
        collector_id: collector_id.clone(),
        min_interval: cli.publish_interval,
        refresh_interval: cli.refresh_interval,
        unready_after_failures: cli.unready_after_failures,
    };
    tokio::spawn(snapshot::run(
        desired_rx.clone(),
        observations.clone(),
        placements.clone(),
        snapshot_tx,
        publish_config,
        telemetry.clone(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let service = grpc::PoolStateService::new(
        snapshot_rx.clone(),
        cli.publish_interval,
        telemetry.clone(),
        placements,
        desired_rx.clone(),
    )
    .with_peers(&cli.placement_peers)?;
    let grpc_addr = grpc_listener.local_addr()?;
    let grpc_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stopped(stop_rx.clone()),
        );
    let router = http::router(http::HttpState {
        snapshots: snapshot_rx,
        desired: desired_rx,
        observations,
        telemetry,
    });
    let http_addr = http_listener.local_addr()?;
    let http_server = axum::serve(http_listener, router).with_graceful_shutdown(stopped(stop_rx));
    tracing::info!(%collector_id, grpc = %grpc_addr, http = %http_addr, source = ?cli.source, "collector started");

    let grpc_task = tokio::spawn(grpc_server);
    let http_task = tokio::spawn(async move { http_server.await });
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        result = async { tokio::try_join!(grpc_task, http_task) } => {
            // A server ending on its own is an error (the listener failed).
            return match result {
                Ok((Err(err), _)) => Err(err).context("gRPC server failed"),
                Ok((_, Err(err))) => Err(err).context("HTTP server failed"),
                Ok(_) => Err(anyhow::anyhow!("servers stopped unexpectedly")),
                Err(err) => Err(err).context("server task panicked"),
            };
        }
    }
    let _ = stop_tx.send(true);
    // Watch streams end when the servers stop; give them a moment, then exit.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

/// Recomputes the desired state for every new inventory.
async fn follow_inventory(
    mut inventory: watch::Receiver<Arc<Inventory>>,
    desired: watch::Sender<Arc<DesiredState>>,
    mut last: Arc<DesiredState>,
    mut last_valid: LastValid,
    telemetry: Arc<Telemetry>,
) {
    while inventory.changed().await.is_ok() {
        let next = checked_build(&mut last_valid, &inventory.borrow_and_update(), &telemetry);
        if next == *last {
            continue;
        }
        let before: BTreeSet<String> = last.problems.iter().map(|p| p.to_string()).collect();
        log_problems(&before, &next);
        log_pool_changes(&last, &next);
        last = Arc::new(next);
        if desired.send(last.clone()).is_err() {
            return;
        }
    }
}

/// The desired state with rejected edits replaced by last valid versions;
/// each newly rejected edit is logged and counted once.
fn checked_build(
    last_valid: &mut LastValid,
    inventory: &Inventory,
    telemetry: &Telemetry,
) -> DesiredState {
    let checked = last_valid.apply(inventory);
    for problem in &checked.newly_rejected {
        telemetry
            .rejected_edits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(object = %problem.object, problem = %problem.message, "rejected live edit");
    }
    model::build(&checked.inventory)
}

/// Logs problems that are new since the last state (each once, not per poll).
fn log_problems(before: &BTreeSet<String>, state: &DesiredState) {
    for problem in &state.problems {
        let text = problem.to_string();
        if !before.contains(&text) {
            tracing::warn!(object = %problem.object, problem = %problem.message, "skipping invalid object");
        }
    }
}

fn log_pool_changes(before: &DesiredState, after: &DesiredState) {
    for pool in &after.pools {
        let old = before
            .pools
            .iter()
            .find(|p| p.name == pool.name && p.namespace == pool.namespace);
        if old != Some(pool) {
            tracing::info!(
                pool = %format!("{}/{}", pool.namespace, pool.name),
                endpoints = pool.endpoints.len(),
                ready_pods = pool.endpoints.iter().filter(|e| e.pod_ready).count(),
                model_rules = pool.model_rules.len(),
                objectives = pool.objectives.len(),
                "pool updated"
            );
        }
    }
    for pool in &before.pools {
        if !after
            .pools
            .iter()
            .any(|p| p.name == pool.name && p.namespace == pool.namespace)
        {
            tracing::info!(pool = %format!("{}/{}", pool.namespace, pool.name), "pool removed");
        }
    }
}

fn default_collector_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".into());
    format!("{host}-{}", std::process::id())
}
