//! The failure-feedback path through the real `gateway_filter.wasm`: the
//! header names fallbacks, the filter reads back which host served
//! (`upstream.address`, `response.flags`), marks the endpoints that refused or
//! reset in the shared failure table so every worker avoids them, clears them
//! when they serve again or the collector reports them scraped, and moves the
//! in-flight count to the host that served.

use std::time::Duration;

use integration::wasm_host::fixtures::{completion_body, endpoint, pool, snapshot};
use integration::wasm_host::{Exchange, FilterModule, HeaderMap, Host, Worker};
use pool_state::{FailureMode, Pool};

const DESTINATION: &str = "x-gateway-destination-endpoint";
const FAILED_KEY: &str = "llmgw.failed.default/pool-a";
const INFLIGHT_KEY: &str = "llmgw.inflight.default/pool-a";
/// Envoy's UF response flag (upstream connection failure).
const UF: u64 = 0x20;

fn filter() -> FilterModule {
    FilterModule::gateway_filter().expect("target/gateway_filter.wasm (run `make wasm`)")
}

/// 10.0.0.3 idle, then 10.0.0.2, then 10.0.0.1 busiest.
fn pool_a(mode: FailureMode) -> Pool {
    pool(
        "pool-a",
        mode,
        vec![
            endpoint("10.0.0.1:8000", 30, 0.9),
            endpoint("10.0.0.2:8000", 20, 0.5),
            endpoint("10.0.0.3:8000", 0, 0.1),
        ],
    )
}

fn started(mode: FailureMode) -> (Host, Worker, Worker) {
    let host = Host::new();
    let w1 = host.start_worker(&filter(), "{}").unwrap();
    let w2 = host.start_worker(&filter(), "{}").unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    assert!(
        host.collector()
            .push(&snapshot(1, vec![pool_a(mode)]))
            .unwrap()
            >= 1
    );
    host.pump().unwrap();
    (host, w1, w2)
}

/// A request Envoy sent to `served` (the last attempt) with `flags`.
fn send(worker: &Worker, served: Option<&str>, flags: u64) -> Exchange {
    let mut request = worker
        .request()
        .cluster("pool-a")
        .body(completion_body("base", 200))
        .property(&["response", "flags"], &flags.to_le_bytes());
    if let Some(served) = served {
        request = request.property(&["upstream", "address"], served.as_bytes());
    }
    request.send().unwrap()
}

fn listed(exchange: &Exchange) -> Vec<String> {
    exchange
        .upstream_header(DESTINATION)
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn metric(host: &Host, prefix: &str, endpoint: &str) -> i64 {
    host.metrics()
        .iter()
        .filter(|m| m.name.starts_with(prefix) && m.name.contains(endpoint))
        .map(|m| m.value)
        .sum()
}

fn failed_records(host: &Host) -> usize {
    host.shared_data(FAILED_KEY)
        .map_or(0, |(v, _)| v.len() / 16)
}

#[test]
fn the_header_names_the_pick_then_the_next_best_distinct_pods() {
    let (_host, w1, _w2) = started(FailureMode::FailClose);
    let exchange = send(&w1, Some("10.0.0.3:8000"), 0);
    assert_eq!(
        listed(&exchange),
        ["10.0.0.3:8000", "10.0.0.2:8000", "10.0.0.1:8000"]
    );
}

#[test]
fn a_pod_that_refused_is_avoided_by_every_worker_until_it_serves_or_is_scraped() {
    let (host, w1, w2) = started(FailureMode::FailClose);
    // The primary refused; Envoy's retry went to the first fallback.
    let first = send(&w1, Some("10.0.0.2:8000"), 0);
    assert_eq!(listed(&first)[0], "10.0.0.3:8000");
    assert_eq!(failed_records(&host), 1);
    assert_eq!(
        metric(&host, "llmgw_endpoint_failures_total", "10_0_0_3"),
        1
    );
    assert_eq!(metric(&host, "llmgw_served_total", "10_0_0_2"), 1);
    assert_eq!(metric(&host, "llmgw_fallback_served_total", "pool-a"), 1);

    // The other worker neither picks it nor names it as a fallback.
    let second = send(&w2, Some("10.0.0.2:8000"), 0);
    assert_eq!(listed(&second), ["10.0.0.2:8000", "10.0.0.1:8000"]);
    assert_eq!(metric(&host, "llmgw_picks_total", "10_0_0_3"), 1);

    // A fresh scrape (a snapshot built after the failure) clears it.
    host.advance(Duration::from_millis(50)).unwrap();
    assert!(
        host.collector()
            .push(&snapshot(2, vec![pool_a(FailureMode::FailClose)]))
            .unwrap()
            >= 1
    );
    host.pump().unwrap();
    let third = send(&w2, Some("10.0.0.3:8000"), 0);
    assert_eq!(listed(&third)[0], "10.0.0.3:8000");
    // It served: the record is gone.
    assert_eq!(failed_records(&host), 0);
}

#[test]
fn a_connection_failure_on_the_last_attempt_marks_that_pod_too() {
    let (host, w1, _w2) = started(FailureMode::FailClose);
    let exchange = send(&w1, Some("10.0.0.2:8000"), UF);
    assert_eq!(listed(&exchange).len(), 3);
    assert_eq!(failed_records(&host), 2, "the pick and the fallback tried");
    assert_eq!(metric(&host, "llmgw_served_total", "10_0_0"), 0);
    let next = send(&w1, Some("10.0.0.1:8000"), 0);
    assert_eq!(listed(&next), ["10.0.0.1:8000"]);
}

#[test]
fn fail_open_picks_avoid_failed_pods_and_carry_fallbacks() {
    let (host, w1, w2) = started(FailureMode::FailOpen);
    host.collector().set_available(false);
    host.collector().close_all(14).unwrap();
    host.advance(Duration::from_millis(3_500)).unwrap();
    let first = send(&w1, None, UF);
    let picks = listed(&first);
    assert_eq!(picks.len(), 3, "{picks:?}");
    assert_eq!(failed_records(&host), 1);
    for _ in 0..10 {
        // Still in flight as far as Envoy knows (no host read back yet).
        let next = send(&w2, None, 0);
        let entries = listed(&next);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert!(
            !entries.contains(&picks[0]),
            "{entries:?} names the failed {}",
            picks[0]
        );
    }
}

#[test]
fn the_in_flight_count_moves_to_the_pod_that_served() {
    let (host, w1, _w2) = started(FailureMode::FailClose);
    let body = completion_body("base", 200);
    let mut headers = HeaderMap::from_pairs([
        (":method", "POST"),
        (":path", "/v1/completions"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
    ]);
    headers.add("content-length", body.len().to_string().as_bytes());
    let mut stream = w1.stream(headers, Some("pool-a")).unwrap();
    stream.request_headers(false).unwrap();
    stream.request_body(&body, true).unwrap();
    let picked = host.shared_data(INFLIGHT_KEY).unwrap().0;
    assert_eq!(picked.len(), 12, "one endpoint in flight");
    stream.set_property(&["upstream", "address"], b"10.0.0.2:8000");
    stream
        .response_headers(HeaderMap::from_pairs([(":status", "200")]), false)
        .unwrap();
    let served = host.shared_data(INFLIGHT_KEY).unwrap().0;
    assert_eq!(served.len(), 12, "still one endpoint in flight");
    assert_ne!(
        picked[..8],
        served[..8],
        "the count moved to the pod that served"
    );
    stream.response_body(b"{}", true).unwrap();
    stream.finish().unwrap();
    assert!(host.shared_data(INFLIGHT_KEY).unwrap().0.is_empty());
    assert_eq!(metric(&host, "llmgw_served_total", "10_0_0_2"), 1);
}
