//! The collector's own HTTP endpoints: Prometheus `/metrics` (GIE pool metric
//! names where they exist), `/healthz` (the process serves) and `/readyz`
//! (discovery synced and every Ready endpoint scraped once).

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use pool_state::Snapshot;
use tokio::sync::watch;

use crate::model::DesiredState;
use crate::observations::Observations;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct HttpState {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub observations: Arc<Observations>,
    pub telemetry: Arc<Telemetry>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.telemetry.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: discovery or first scrape round pending\n",
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let snapshot = state.snapshots.borrow().clone();
    let desired = state.desired.borrow().clone();
    let body = render(&snapshot, &desired, &state.observations, &state.telemetry);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `name="…",namespace="…"`: pools are identified by both (two namespaces
/// may hold pools of the same name; without the namespace their series
/// would collide).
fn pool_labels(pool: &pool_state::Pool) -> String {
    format!(
        "name=\"{}\",namespace=\"{}\"",
        label(&pool.name),
        label(&pool.namespace)
    )
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn render(
    snapshot: &Snapshot,
    desired: &DesiredState,
    observations: &Observations,
    telemetry: &Telemetry,
) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "inference_pool_average_kv_cache_utilization",
        "gauge",
        "Average KV-cache utilization of the pool's ready endpoints (0..1).",
    );
    for pool in &snapshot.pools {
        let ready: Vec<_> = pool.endpoints.iter().filter(|e| e.ready).collect();
        let avg = if ready.is_empty() {
            0.0
        } else {
            ready
                .iter()
                .map(|e| f64::from(e.kv_cache_usage))
                .sum::<f64>()
                / ready.len() as f64
        };
        let _ = writeln!(
            out,
            "inference_pool_average_kv_cache_utilization{{{}}} {avg}",
            pool_labels(pool)
        );
    }
    family(
        &mut out,
        "inference_pool_average_queue_size",
        "gauge",
        "Average number of waiting requests over the pool's ready endpoints.",
    );
    for pool in &snapshot.pools {
        let ready: Vec<_> = pool.endpoints.iter().filter(|e| e.ready).collect();
        let avg = if ready.is_empty() {
            0.0
        } else {
            ready.iter().map(|e| f64::from(e.waiting)).sum::<f64>() / ready.len() as f64
        };
        let _ = writeln!(
            out,
            "inference_pool_average_queue_size{{{}}} {avg}",
            pool_labels(pool)
        );
    }
    family(
        &mut out,
        "inference_pool_ready_pods",
        "gauge",
        "Number of ready endpoints in the pool.",
    );
    for pool in &snapshot.pools {
        let ready = pool.endpoints.iter().filter(|e| e.ready).count();
        let _ = writeln!(
            out,
            "inference_pool_ready_pods{{{}}} {ready}",
            pool_labels(pool)
        );
    }
    family(
        &mut out,
        "inference_pool_per_pod_queue_size",
        "gauge",
        "Waiting requests per endpoint.",
    );
    for pool in &snapshot.pools {
        for e in &pool.endpoints {
            let _ = writeln!(out, "inference_pool_per_pod_queue_size{{{},model_server_pod=\"{}\",endpoint=\"{}\"}} {}",
                pool_labels(pool), label(&e.pod), label(&e.address), e.waiting);
        }
    }

    // Per-endpoint scrape health, once per address even if two pools share it
    // (labelled with the pod's namespace, that of the first such pool).
    let mut seen = HashSet::new();
    let endpoints: Vec<(&str, String)> = snapshot
        .pools
        .iter()
        .flat_map(|p| p.endpoints.iter().map(move |e| (p, e)))
        .filter(|(_, e)| seen.insert(e.address.as_str()))
        .map(|(p, e)| {
            (
                e.address.as_str(),
                format!(
                    "pod=\"{}\",namespace=\"{}\"",
                    label(&e.pod),
                    label(&p.namespace)
                ),
            )
        })
        .collect();
    observations.with(|map| {
        family(
            &mut out,
            "llmgw_collector_scrapes_total",
            "counter",
            "Scrapes finished per endpoint.",
        );
        for (address, pod_labels) in &endpoints {
            if let Some(o) = map.get(*address) {
                let _ = writeln!(
                    out,
                    "llmgw_collector_scrapes_total{{endpoint=\"{}\",{pod_labels}}} {}",
                    label(address),
                    o.scrapes_total
                );
            }
        }
        family(
            &mut out,
            "llmgw_collector_scrape_errors_total",
            "counter",
            "Failed scrapes per endpoint.",
        );
        for (address, pod_labels) in &endpoints {
            if let Some(o) = map.get(*address) {
                let _ = writeln!(
                    out,
                    "llmgw_collector_scrape_errors_total{{endpoint=\"{}\",{pod_labels}}} {}",
                    label(address),
                    o.errors_total
                );
            }
        }
        family(
            &mut out,
            "llmgw_collector_scrape_duration_seconds",
            "gauge",
            "Duration of the endpoint's last scrape.",
        );
        for (address, pod_labels) in &endpoints {
            if let Some(o) = map.get(*address).filter(|o| o.attempted) {
                let _ = writeln!(
                    out,
                    "llmgw_collector_scrape_duration_seconds{{endpoint=\"{}\",{pod_labels}}} {}",
                    label(address),
                    o.last_duration.as_secs_f64()
                );
            }
        }
        family(
            &mut out,
            "llmgw_collector_consecutive_scrape_failures",
            "gauge",
            "Failed scrapes since the last good one.",
        );
        for (address, pod_labels) in &endpoints {
            if let Some(o) = map.get(*address) {
                let _ = writeln!(
                    out,
                    "llmgw_collector_consecutive_scrape_failures{{endpoint=\"{}\",{pod_labels}}} {}",
                    label(address),
                    o.consecutive_failures
                );
            }
        }
    });

    telemetry.scrape_to_publish.render(
        &mut out,
        "llmgw_collector_scrape_to_publish_seconds",
        "Delay from a scrape that changed state to the publish of a snapshot carrying it.",
    );
    telemetry.snapshot_build.render(
        &mut out,
        "llmgw_collector_snapshot_build_seconds",
        "Time to build one snapshot.",
    );
    family(
        &mut out,
        "llmgw_collector_snapshots_published_total",
        "counter",
        "Snapshots published.",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_snapshots_published_total {}",
        telemetry.snapshots_published.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "llmgw_collector_snapshot_bytes",
        "gauge",
        "Encoded size of the latest snapshot.",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_snapshot_bytes {}",
        telemetry.snapshot_bytes.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "llmgw_collector_snapshot_version",
        "gauge",
        "Version of the latest snapshot.",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_snapshot_version {}",
        telemetry.snapshot_version.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "llmgw_collector_watch_streams",
        "gauge",
        "Open gRPC Watch streams.",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_watch_streams {}",
        telemetry.watch_streams.load(Ordering::Relaxed)
    );
    for (name, kind, help, value) in [
        (
            "llmgw_collector_prefix_reports_total",
            "counter",
            "Affinity-key reports from gateways applied to the placement tables.",
            telemetry.prefix_reports.load(Ordering::Relaxed),
        ),
        (
            "llmgw_collector_prefix_reports_ignored_total",
            "counter",
            "Affinity-key reports naming an unknown pool or endpoint.",
            telemetry.prefix_reports_ignored.load(Ordering::Relaxed),
        ),
        (
            "llmgw_collector_rejected_edits_total",
            "counter",
            "Live edits that made an object invalid; its last valid version kept serving.",
            telemetry.rejected_edits.load(Ordering::Relaxed),
        ),
        (
            "llmgw_collector_prefix_forward_errors_total",
            "counter",
            "Reports that could not be forwarded to a peer collector.",
            telemetry.prefix_forward_errors.load(Ordering::Relaxed),
        ),
        (
            "llmgw_collector_prefix_placements",
            "gauge",
            "Affinity keys placed in the latest snapshot, over all pools.",
            telemetry.placement_keys.load(Ordering::Relaxed),
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "llmgw_collector_invalid_objects",
        "gauge",
        "Objects skipped (or partly skipped) because they are invalid.",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_invalid_objects {}",
        desired.problems.len()
    );
    family(
        &mut out,
        "llmgw_collector_scrape_interval_seconds",
        "gauge",
        "Interval between two scrapes of one endpoint now (longer than configured when kept within --scrape-cpu-budget).",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_scrape_interval_seconds {}",
        telemetry.scrape_interval_ns.load(Ordering::Relaxed) as f64 / 1e9
    );
    family(
        &mut out,
        "llmgw_collector_ready",
        "gauge",
        "1 when /readyz answers 200.",
    );
    let _ = writeln!(
        out,
        "llmgw_collector_ready {}",
        u8::from(telemetry.ready.load(Ordering::Relaxed))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_parse::{parse, Engine};
    use pool_state::{Endpoint, Pool};

    #[test]
    fn renders_gie_pool_metrics_that_parse_as_prometheus_text() {
        let endpoint = |address: &str, ready: bool, waiting: u32, kv: f32| Endpoint {
            address: address.into(),
            pod: format!("pod-{address}"),
            ready,
            waiting,
            kv_cache_usage: kv,
            ..Endpoint::default()
        };
        let snapshot = Snapshot {
            version: 1,
            pools: vec![Pool {
                name: "p\"q".into(),
                namespace: "ns".into(),
                endpoints: vec![
                    endpoint("a:1", true, 4, 0.5),
                    endpoint("b:1", true, 2, 0.25),
                    endpoint("c:1", false, 99, 1.0),
                ],
                ..Pool::default()
            }],
            ..Snapshot::default()
        };
        let desired = DesiredState {
            pools: vec![],
            problems: vec![],
            synced: true,
        };
        let obs = Observations::new();
        obs.retain_addresses(["a:1", "b:1", "c:1"]);
        let text = render(&snapshot, &desired, &obs, &Telemetry::default());
        assert!(
            text.contains(
                "inference_pool_average_kv_cache_utilization{name=\"p\\\"q\",namespace=\"ns\"} 0.375\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("inference_pool_average_queue_size{name=\"p\\\"q\",namespace=\"ns\"} 3\n"));
        assert!(text.contains("inference_pool_ready_pods{name=\"p\\\"q\",namespace=\"ns\"} 2\n"));
        assert!(text.contains("model_server_pod=\"pod-c:1\",endpoint=\"c:1\"} 99\n"));
        assert!(text.contains(
            "llmgw_collector_scrape_errors_total{endpoint=\"a:1\",pod=\"pod-a:1\",namespace=\"ns\"} 0\n"
        ));
        // Our own parser accepts every line of it (it needs vLLM names to succeed,
        // so check for the "missing metric" outcome rather than a syntax error).
        match parse(Engine::Vllm, &text) {
            Err(crate::metrics_parse::ParseError::Missing(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_named_pools_in_two_namespaces_get_distinct_series() {
        let pool = |namespace: &str, address: &str| Pool {
            name: "llm".into(),
            namespace: namespace.into(),
            endpoints: vec![Endpoint {
                address: address.into(),
                pod: "vllm-0".into(),
                ready: true,
                ..Endpoint::default()
            }],
            ..Pool::default()
        };
        let snapshot = Snapshot {
            pools: vec![pool("team-a", "a:1"), pool("team-b", "b:1")],
            ..Snapshot::default()
        };
        let desired = DesiredState {
            pools: vec![],
            problems: vec![],
            synced: true,
        };
        let obs = Observations::new();
        obs.retain_addresses(["a:1", "b:1"]);
        let text = render(&snapshot, &desired, &obs, &Telemetry::default());
        // Every series (metric name + label set) appears once.
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
            .collect();
        let mut unique = series.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), series.len(), "duplicate series:\n{text}");
        for ns in ["team-a", "team-b"] {
            assert!(
                text.contains(&format!(
                    "inference_pool_ready_pods{{name=\"llm\",namespace=\"{ns}\"}} 1\n"
                )),
                "{text}"
            );
        }
        assert!(text.contains(
            "llmgw_collector_scrapes_total{endpoint=\"b:1\",pod=\"vllm-0\",namespace=\"team-b\"}"
        ));
    }
}
