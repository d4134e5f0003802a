//! Builds the compact `pool_state::Snapshot` from the desired state and the
//! scrape observations, and publishes it when something changed.
//!
//! Publishing is rate-bounded (`min_interval`). A snapshot is published when
//! the desired state changed or a scrape changed what a router would see; when
//! only freshness improved (identical metrics), a snapshot still goes out every
//! `refresh_interval`, so `metrics_age_ms` never makes a quiet pool look stale.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pool_state::{Endpoint, Pool, Snapshot};
use prost::Message;
use tokio::sync::watch;

use crate::model::DesiredState;
use crate::observations::{Observation, Observations};
use crate::placement::Placements;
use crate::telemetry::Telemetry;

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub collector_id: String,
    pub min_interval: Duration,
    pub refresh_interval: Duration,
    pub unready_after_failures: u32,
}

/// Builds one snapshot, with each pool's learned prefix placements. Clears
/// the observations' publish bookkeeping and records each pending change's
/// scrape-to-publish delay.
pub fn build(
    desired: &DesiredState,
    observations: &mut HashMap<String, Observation>,
    placements: &Placements,
    version: u64,
    config: &PublishConfig,
    telemetry: &Telemetry,
) -> Snapshot {
    let now = Instant::now();
    let generated_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for obs in observations.values_mut() {
        if let Some(since) = obs.unpublished_since.take() {
            telemetry
                .scrape_to_publish
                .observe(now.saturating_duration_since(since));
        }
        obs.fresh = false;
    }
    let empty = Observation::default();
    let pools = desired
        .pools
        .iter()
        .map(|pool| {
            let mut adapter_index: HashMap<String, u32> = HashMap::new();
            let mut adapter_names: Vec<String> = Vec::new();
            let mut intern = |name: &str| -> u32 {
                if let Some(i) = adapter_index.get(name) {
                    return *i;
                }
                let i = adapter_names.len() as u32;
                adapter_names.push(name.to_owned());
                adapter_index.insert(name.to_owned(), i);
                i
            };
            let mut interned: Vec<(Vec<u32>, Vec<u32>)> = Vec::with_capacity(pool.endpoints.len());
            for endpoint in &pool.endpoints {
                let obs = observations.get(&endpoint.address).unwrap_or(&empty);
                let (running, waiting) = match &obs.last_good {
                    Some(good) => (
                        good.metrics
                            .running_adapters
                            .iter()
                            .map(|a| intern(a))
                            .collect(),
                        good.metrics
                            .waiting_adapters
                            .iter()
                            .map(|a| intern(a))
                            .collect(),
                    ),
                    None => (Vec::new(), Vec::new()),
                };
                interned.push((running, waiting));
            }
            let endpoints = pool
                .endpoints
                .iter()
                .zip(interned)
                .map(|(endpoint, (running_adapters, waiting_adapters))| {
                    let obs = observations.get(&endpoint.address).unwrap_or(&empty);
                    let metrics = obs
                        .last_good
                        .as_ref()
                        .map(|g| g.metrics.clone())
                        .unwrap_or_default();
                    Endpoint {
                        address: endpoint.address.clone(),
                        pod: endpoint.pod.clone(),
                        ready: endpoint.pod_ready && obs.healthy(config.unready_after_failures),
                        metrics_age_ms: obs.age_ms(now),
                        consecutive_scrape_failures: obs.consecutive_failures,
                        waiting: metrics.waiting,
                        running: metrics.running,
                        kv_cache_usage: metrics.kv_cache_usage,
                        running_adapters,
                        waiting_adapters,
                        max_loras: metrics.max_loras,
                        block_size: metrics.block_size,
                        num_gpu_blocks: metrics.num_gpu_blocks,
                    }
                })
                .collect();
            Pool {
                name: pool.name.clone(),
                namespace: pool.namespace.clone(),
                failure_mode: pool.failure_mode as i32,
                adapter_names,
                endpoints,
                model_rules: pool.model_rules.clone(),
                objectives: pool.objectives.clone(),
                prefix_placements: placements.table(pool),
                learns_prefix_placements: placements.enabled(),
            }
        })
        .collect();
    Snapshot {
        version,
        collector_id: config.collector_id.clone(),
        generated_unix_ms,
        pools,
    }
}

/// True once every endpoint that should be scraped has been tried once.
fn first_round_done(desired: &DesiredState, observations: &HashMap<String, Observation>) -> bool {
    desired
        .pools
        .iter()
        .flat_map(|p| &p.endpoints)
        .filter(|e| e.pod_ready)
        .all(|e| observations.get(&e.address).is_some_and(|o| o.attempted))
}

/// Publishes snapshots on `out` until `desired` closes.
pub async fn run(
    mut desired: watch::Receiver<Arc<DesiredState>>,
    observations: Arc<Observations>,
    placements: Arc<Placements>,
    out: watch::Sender<Arc<Snapshot>>,
    config: PublishConfig,
    telemetry: Arc<Telemetry>,
) {
    use tokio::time::Instant as TokioInstant;
    let mut version = 0u64;
    let mut desired_changed = true;
    let mut last_publish = TokioInstant::now() - config.min_interval;
    let mut refresh_at = TokioInstant::now() + config.refresh_interval;
    loop {
        // Wait for a reason to publish (the first round publishes at once).
        if !desired_changed {
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    desired_changed = true;
                }
                _ = observations.changed.notified() => {}
                _ = placements.notify.notified() => {}
                _ = tokio::time::sleep_until(refresh_at) => {}
            }
        }
        tokio::time::sleep_until(last_publish + config.min_interval).await;
        if desired.has_changed().unwrap_or(false) {
            desired_changed = true;
        }
        let state = desired.borrow_and_update().clone();
        let started = TokioInstant::now();
        let refresh_due = started >= refresh_at;
        if refresh_due {
            // Checked (and maybe published) now; the next check is one interval away.
            refresh_at = started + config.refresh_interval;
        }
        if desired_changed {
            placements.retain_pools(&state);
        }
        let placed = placements.take_changed();
        let snapshot = observations.with(|map| {
            let pending = map.values().any(|o| o.unpublished_since.is_some());
            let fresher = refresh_due && map.values().any(|o| o.fresh);
            if !(desired_changed || pending || fresher || placed) {
                return None;
            }
            if !telemetry.ready.load(Ordering::Relaxed)
                && state.synced
                && first_round_done(&state, map)
            {
                telemetry.ready.store(true, Ordering::Relaxed);
                tracing::info!("discovery synced and every ready endpoint scraped once: ready");
            }
            version += 1;
            Some(build(
                &state,
                map,
                &placements,
                version,
                &config,
                &telemetry,
            ))
        });
        desired_changed = false;
        let Some(snapshot) = snapshot else {
            continue;
        };
        telemetry.snapshot_build.observe(started.elapsed());
        telemetry
            .snapshot_bytes
            .store(snapshot.encoded_len() as u64, Ordering::Relaxed);
        let placed: usize = snapshot
            .pools
            .iter()
            .map(|p| p.prefix_placements.len() / pool_state::placements::RECORD)
            .sum();
        telemetry
            .placement_keys
            .store(placed as u64, Ordering::Relaxed);
        telemetry.snapshot_version.store(version, Ordering::Relaxed);
        telemetry
            .snapshots_published
            .fetch_add(1, Ordering::Relaxed);
        last_publish = TokioInstant::now();
        refresh_at = last_publish + config.refresh_interval;
        if out.send(Arc::new(snapshot)).is_err() {
            // No receivers can exist only at shutdown; keep state current anyway.
            tracing::trace!("snapshot published with no watchers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_parse::{Engine, EngineMetrics};
    use crate::model::{DesiredEndpoint, DesiredPool};
    use crate::placement::PlacementConfig;
    use pool_state::FailureMode;

    fn desired() -> DesiredState {
        let endpoint = |address: &str, pod: &str, pod_ready: bool| DesiredEndpoint {
            address: address.into(),
            pod: pod.into(),
            pod_ready,
            engine: Engine::Vllm,
        };
        DesiredState {
            pools: vec![DesiredPool {
                name: "p".into(),
                namespace: "default".into(),
                failure_mode: FailureMode::FailOpen,
                endpoints: vec![
                    endpoint("10.0.0.1:8000", "a", true),
                    endpoint("10.0.0.2:8000", "b", true),
                    endpoint("10.0.0.3:8000", "c", false),
                ],
                model_rules: vec![],
                objectives: vec![],
            }],
            problems: vec![],
            synced: true,
        }
    }

    fn config() -> PublishConfig {
        PublishConfig {
            collector_id: "test".into(),
            min_interval: Duration::from_millis(1),
            refresh_interval: Duration::from_millis(100),
            unready_after_failures: 3,
        }
    }

    #[test]
    fn adapters_are_interned_per_pool_and_readiness_combines_pod_and_scrapes() {
        let obs = Observations::new();
        obs.retain_addresses(["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]);
        let with_adapters = |running: &[&str], waiting: &[&str]| EngineMetrics {
            waiting: 3,
            running: 2,
            kv_cache_usage: 0.5,
            running_adapters: running.iter().map(|s| s.to_string()).collect(),
            waiting_adapters: waiting.iter().map(|s| s.to_string()).collect(),
            max_loras: 2,
            block_size: 16,
            num_gpu_blocks: 1000,
        };
        obs.record(
            "10.0.0.1:8000",
            Ok(with_adapters(&["x", "y"], &["z"])),
            Duration::ZERO,
            3,
        );
        obs.record(
            "10.0.0.2:8000",
            Ok(with_adapters(&["z"], &["x"])),
            Duration::ZERO,
            3,
        );
        let telemetry = Telemetry::default();
        let placements = Placements::new(PlacementConfig::default(), true);
        let state = desired();
        let seen = |key: u64, endpoint: &str| pool_state::PrefixSeen {
            pool: state.pools[0].name.clone(),
            key,
            endpoint: endpoint.into(),
            namespace: state.pools[0].namespace.clone(),
        };
        placements.report(
            &[seen(5, "10.0.0.2:8000"), seen(2, "10.0.0.1:8000")],
            &state,
        );
        let snapshot = obs.with(|map| build(&state, map, &placements, 7, &config(), &telemetry));
        assert_eq!(snapshot.version, 7);
        let pool = &snapshot.pools[0];
        assert!(pool.learns_prefix_placements);
        let placed: Vec<(u64, u32)> =
            pool_state::placements::records(&pool.prefix_placements).collect();
        assert_eq!(
            placed,
            vec![(2, 0), (5, 1)],
            "sorted, indices into endpoints"
        );
        assert_eq!(pool.adapter_names, vec!["x", "y", "z"]);
        assert_eq!(pool.failure_mode, FailureMode::FailOpen as i32);
        let [a, b, c] = &pool.endpoints[..] else {
            panic!()
        };
        assert_eq!(
            (a.running_adapters.clone(), a.waiting_adapters.clone()),
            (vec![0, 1], vec![2])
        );
        assert_eq!(
            (b.running_adapters.clone(), b.waiting_adapters.clone()),
            (vec![2], vec![0])
        );
        assert!(a.ready && b.ready);
        assert!(a.metrics_age_ms < 1000);
        assert_eq!(
            (
                a.waiting,
                a.running,
                a.max_loras,
                a.block_size,
                a.num_gpu_blocks
            ),
            (3, 2, 2, 16, 1000)
        );
        assert!(!c.ready, "pod not Ready");
        assert_eq!(c.metrics_age_ms, u32::MAX, "never scraped");
        // Publishing cleared the pending changes and measured their delay.
        obs.with(|map| assert!(map.values().all(|o| o.unpublished_since.is_none())));
        let mut text = String::new();
        telemetry.scrape_to_publish.render(&mut text, "d", "d");
        assert!(text.contains("d_count 2"), "{text}");
    }

    #[test]
    fn snapshot_of_1000_endpoints_stays_compact() {
        let mut state = desired();
        state.pools[0].endpoints = (0..1000)
            .map(|i| DesiredEndpoint {
                address: format!("10.1.{}.{}:8000", i / 250, i % 250),
                pod: format!("vllm-llama3-8b-instruct-6d4f9c7b8-{i:05}"),
                pod_ready: true,
                engine: Engine::Vllm,
            })
            .collect();
        let obs = Observations::new();
        obs.retain_addresses(state.pools[0].endpoints.iter().map(|e| e.address.as_str()));
        for e in &state.pools[0].endpoints {
            let m = EngineMetrics {
                waiting: 12,
                running: 40,
                kv_cache_usage: 0.73,
                running_adapters: vec!["food-review".into()],
                waiting_adapters: vec![],
                max_loras: 2,
                block_size: 16,
                num_gpu_blocks: 27500,
            };
            obs.record(&e.address, Ok(m), Duration::ZERO, 3);
        }
        let placements = Placements::new(PlacementConfig::default(), true);
        let snapshot = obs.with(|map| {
            build(
                &state,
                map,
                &placements,
                1,
                &config(),
                &Telemetry::default(),
            )
        });
        let bytes = snapshot.encoded_len();
        // ~40 bytes of pod name dominate; everything else is a few varints.
        assert!(bytes < 100 * 1024, "{bytes} bytes");
        assert_eq!(snapshot.pools[0].adapter_names, vec!["food-review"]);
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_on_change_and_refreshes_when_only_fresher() {
        let (desired_tx, desired_rx) = watch::channel(Arc::new(desired()));
        let obs = Arc::new(Observations::new());
        obs.retain_addresses(["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]);
        let (out_tx, mut out_rx) = watch::channel(Arc::new(Snapshot::default()));
        let telemetry = Arc::new(Telemetry::default());
        let placements = Arc::new(Placements::new(PlacementConfig::default(), true));
        let task = tokio::spawn(run(
            desired_rx,
            obs.clone(),
            placements.clone(),
            out_tx,
            config(),
            telemetry.clone(),
        ));
        out_rx.changed().await.unwrap();
        assert_eq!(
            out_rx.borrow_and_update().version,
            1,
            "first snapshot at once"
        );

        obs.record(
            "10.0.0.1:8000",
            Ok(EngineMetrics::default()),
            Duration::ZERO,
            3,
        );
        out_rx.changed().await.unwrap();
        assert_eq!(
            out_rx.borrow_and_update().version,
            2,
            "a changed endpoint publishes"
        );

        // Same values again: only fresher, so no publish before the refresh interval.
        let before = tokio::time::Instant::now();
        obs.record(
            "10.0.0.1:8000",
            Ok(EngineMetrics::default()),
            Duration::ZERO,
            3,
        );
        out_rx.changed().await.unwrap();
        assert_eq!(out_rx.borrow_and_update().version, 3);
        assert!(
            before.elapsed() >= Duration::from_millis(90),
            "{:?}",
            before.elapsed()
        );

        // Nothing new at all: nothing is published.
        let quiet = tokio::time::timeout(Duration::from_secs(1), out_rx.changed()).await;
        assert!(quiet.is_err(), "published without a reason");

        // A gateway report that places a key publishes it.
        let seen = pool_state::PrefixSeen {
            pool: "p".into(),
            key: 42,
            endpoint: "10.0.0.2:8000".into(),
            namespace: String::new(),
        };
        assert_eq!(placements.report(&[seen], &desired()), 1);
        out_rx.changed().await.unwrap();
        let placed = out_rx.borrow_and_update().pools[0]
            .prefix_placements
            .clone();
        assert_eq!(pool_state::placements::lookup(&placed, 42), Some(1));

        let mut next = desired();
        next.pools[0].endpoints.pop();
        desired_tx.send(Arc::new(next)).unwrap();
        out_rx.changed().await.unwrap();
        assert_eq!(out_rx.borrow_and_update().pools[0].endpoints.len(), 2);
        drop(desired_tx);
        task.await.unwrap();
    }
}
