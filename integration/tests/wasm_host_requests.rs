//! Every request outcome of the filter, through the real `gateway_filter.wasm`
//! (build it with `make wasm`): pick, model rewrite, shed (429), bad request
//! (400), body too large (413), no endpoint / no state (503), FailOpen and
//! FailClose on stale state, in-flight accounting across workers.

use std::time::Duration;

use integration::wasm_host::fixtures::{completion_body, endpoint, pool, snapshot};
use integration::wasm_host::{Exchange, FilterModule, Host, Worker};
use pool_state::{Criticality, FailureMode, ModelRule, Objective, Pool, WeightedTarget};
use serde_json::json;

const DESTINATION: &str = "x-gateway-destination-endpoint";

/// The pick: the header's first entry (fallbacks follow, comma-separated).
fn first_entry(value: &str) -> &str {
    value.split(',').next().unwrap_or(value)
}

fn filter() -> FilterModule {
    FilterModule::gateway_filter().expect("target/gateway_filter.wasm (run `make wasm`)")
}

/// A host with one configured worker that holds the lease and has received
/// `pools` from the collector.
fn started(config: &str, pools: Vec<Pool>) -> (Host, Worker) {
    let host = Host::new();
    let worker = host.start_worker(&filter(), config).unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(host.collector().push(&snapshot(1, pools)).unwrap(), 1);
    (host, worker)
}

fn send_completion(worker: &Worker, cluster: &str, body: &[u8]) -> Exchange {
    worker
        .request()
        .cluster(cluster)
        .body(body.to_vec())
        .send()
        .unwrap()
}

/// The local reply is OpenAI-shaped with `code` equal to the status.
fn assert_error(exchange: &Exchange, status: u32) -> serde_json::Value {
    assert!(
        !exchange.forwarded(),
        "expected a local reply, got {exchange:?}"
    );
    let reply = exchange.local_reply.as_ref().expect("local reply");
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(exchange.status(), Some(status));
    let body = reply.json().expect("JSON error body");
    assert_eq!(body["error"]["code"], json!(status), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    body
}

fn busy_and_idle_pool(name: &str, mode: FailureMode) -> Pool {
    pool(
        name,
        mode,
        vec![
            endpoint("10.0.0.1:8000", 30, 0.9),
            endpoint("10.0.0.2:8000", 25, 0.85),
            endpoint("10.0.0.3:8000", 0, 0.1),
        ],
    )
}

#[test]
fn picks_the_idle_endpoint_and_overrides_a_client_supplied_destination() {
    let (host, worker) = started(
        "{}",
        vec![busy_and_idle_pool("pool-a", FailureMode::FailClose)],
    );
    let body = completion_body("base", 300);
    let exchange = worker
        .request()
        .cluster("pool-a")
        .header(DESTINATION, "6.6.6.6:1")
        .header("x-gateway-pool", "evil")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(
        exchange.upstream_header(DESTINATION).map(first_entry),
        Some("10.0.0.3:8000")
    );
    assert_eq!(
        exchange.upstream_header("x-gateway-pool"),
        None,
        "the client's value is removed, and info headers are off by default"
    );
    assert_eq!(
        exchange
            .upstream
            .as_ref()
            .unwrap()
            .headers
            .get_all(DESTINATION)
            .len(),
        1
    );
    assert_eq!(
        exchange.upstream_body(),
        Some(body.as_slice()),
        "body untouched"
    );
    assert_eq!(exchange.status(), Some(200));
    assert!(!exchange.stalled);
    let picks: i64 = host
        .metrics()
        .iter()
        .filter(|m| m.name.starts_with("llmgw_picks_total") && m.name.contains("10_0_0_3"))
        .map(|m| m.value)
        .sum();
    assert_eq!(picks, 1, "{:?}", host.metrics());
}

#[test]
fn a_body_in_many_chunks_is_routed_once_it_is_complete() {
    let (_host, worker) = started(
        "{}",
        vec![busy_and_idle_pool("pool-a", FailureMode::FailClose)],
    );
    let body = completion_body("base", 10_000);
    let exchange = worker
        .request()
        .cluster("pool-a")
        .body(body.clone())
        .chunked(1000)
        .send()
        .unwrap();
    assert_eq!(
        exchange.upstream_header(DESTINATION).map(first_entry),
        Some("10.0.0.3:8000")
    );
    assert_eq!(exchange.upstream_body(), Some(body.as_slice()));
    let request_actions: Vec<_> = exchange
        .actions
        .iter()
        .filter(|(name, _)| name.starts_with("request"))
        .map(|(_, action)| format!("{action:?}"))
        .collect();
    assert_eq!(request_actions.len(), 11);
    assert!(request_actions[..10].iter().all(|a| a == "Pause"));
    assert_eq!(request_actions[10], "Continue");
}

#[test]
fn rewrites_the_model_by_weight_and_keeps_every_other_byte() {
    let mut canary = busy_and_idle_pool("llm", FailureMode::FailClose);
    canary.model_rules = vec![ModelRule {
        model: "travelhelper".into(),
        targets: vec![
            WeightedTarget {
                model: "travel-helper-v1".into(),
                weight: 90,
            },
            WeightedTarget {
                model: "travel-helper-v2".into(),
                weight: 10,
            },
        ],
        criticality: Criticality::Critical as i32,
        source: "InferenceModel/default/loramodel".into(),
    }];
    let (_host, worker) = started(
        r#"{"cluster_pools":{"llm-cluster":"llm"},"upstream_info_headers":true}"#,
        vec![canary],
    );
    let body = br#"{"model":"travelhelper","temperature":"0","messages":[{"role":"user","content":"hi"}]}"#;
    let mut v1 = 0;
    let requests = 400;
    for _ in 0..requests {
        let exchange = send_completion(&worker, "llm-cluster", body);
        let target = exchange
            .upstream_header("x-gateway-target-model")
            .unwrap()
            .to_string();
        let sent = exchange.upstream_body().unwrap();
        let expected = String::from_utf8_lossy(body).replace("travelhelper", &target);
        assert_eq!(String::from_utf8_lossy(sent), expected);
        assert_eq!(
            exchange.upstream_header("content-length"),
            Some(sent.len().to_string().as_str())
        );
        if target == "travel-helper-v1" {
            v1 += 1;
        } else {
            assert_eq!(target, "travel-helper-v2");
        }
    }
    let share = v1 as f64 / requests as f64;
    assert!((0.84..=0.96).contains(&share), "v1 share {share}");
}

#[test]
fn sheds_sheddable_requests_only_while_the_pool_is_saturated() {
    let mut saturated = pool(
        "pool-a",
        FailureMode::FailClose,
        vec![
            endpoint("10.0.0.1:8000", 50, 0.95),
            endpoint("10.0.0.2:8000", 40, 0.9),
        ],
    );
    saturated.objectives = vec![
        Objective {
            name: "batch".into(),
            priority: -1,
        },
        Objective {
            name: "chat".into(),
            priority: 10,
        },
    ];
    let (host, worker) = started("{}", vec![saturated.clone()]);
    let body = completion_body("base", 200);
    let shed = worker
        .request()
        .cluster("pool-a")
        .header("x-gateway-inference-objective", "batch")
        .body(body.clone())
        .send()
        .unwrap();
    let error = assert_error(&shed, 429);
    assert_eq!(
        error["error"]["message"],
        "system saturated, sheddable request dropped"
    );
    let chat = worker
        .request()
        .cluster("pool-a")
        .header("x-gateway-inference-objective", "chat")
        .body(body.clone())
        .send()
        .unwrap();
    assert!(chat.forwarded(), "critical traffic still flows: {chat:?}");
    let shed_total: i64 = host
        .metrics()
        .iter()
        .filter(|m| m.name.starts_with("llmgw_shed_total"))
        .map(|m| m.value)
        .sum();
    assert_eq!(shed_total, 1);

    // Load drains: the same sheddable request goes through.
    saturated.endpoints = vec![
        endpoint("10.0.0.1:8000", 0, 0.1),
        endpoint("10.0.0.2:8000", 1, 0.2),
    ];
    host.collector()
        .push(&snapshot(2, vec![saturated]))
        .unwrap();
    let batch = worker
        .request()
        .cluster("pool-a")
        .header("x-gateway-inference-objective", "batch")
        .body(body)
        .send()
        .unwrap();
    assert!(batch.forwarded(), "{batch:?}");
}

#[test]
fn malformed_bodies_get_400_and_the_worker_keeps_serving() {
    let (_host, worker) = started(
        "{}",
        vec![busy_and_idle_pool("pool-a", FailureMode::FailClose)],
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", br#"{"model":"base","prompt":"#.to_vec()),
        ("not JSON", b"model=base".to_vec()),
        ("missing model", br#"{"prompt":"hi"}"#.to_vec()),
        (
            "model is a number",
            br#"{"model":42,"prompt":"hi"}"#.to_vec(),
        ),
        ("model is null", br#"{"model":null,"prompt":"hi"}"#.to_vec()),
        ("array body", br#"[{"model":"base"}]"#.to_vec()),
        (
            "non-UTF-8",
            b"{\"model\":\"\xff\xfe\",\"prompt\":\"x\"}".to_vec(),
        ),
    ];
    for (what, body) in cases {
        let exchange = send_completion(&worker, "pool-a", &body);
        assert!(exchange.local_reply.is_some(), "{what}: {exchange:?}");
        let error = assert_error(&exchange, 400);
        assert_eq!(error["error"]["type"], "BadRequestError", "{what}");
        let ok = send_completion(&worker, "pool-a", &completion_body("base", 100));
        assert!(ok.forwarded(), "after {what}: {ok:?}");
    }
    let empty = worker.request().cluster("pool-a").send().unwrap();
    assert_error(&empty, 400);
    assert!(worker.failure().is_none());
}

#[test]
fn bodies_over_the_limit_get_413_whether_declared_or_streamed() {
    let (_host, worker) = started(
        r#"{"max_body_bytes":4096}"#,
        vec![busy_and_idle_pool("pool-a", FailureMode::FailClose)],
    );
    let body = completion_body("base", 10_000);
    let declared = send_completion(&worker, "pool-a", &body);
    assert_error(&declared, 413);
    assert_eq!(
        declared.actions.len(),
        3,
        "answered at the headers: {:?}",
        declared.actions
    );

    let streamed = worker
        .request()
        .cluster("pool-a")
        .without_header("content-length")
        .header("transfer-encoding", "chunked")
        .body(body)
        .chunked(1024)
        .send()
        .unwrap();
    assert_error(&streamed, 413);

    let fits = send_completion(&worker, "pool-a", &completion_body("base", 4000));
    assert!(fits.forwarded());
}

#[test]
fn no_state_unknown_pool_and_no_ready_endpoint_get_503() {
    let host = Host::new();
    // No initial wait: without state the failure answers at once (the wait
    // itself: wasm_host_startup.rs).
    let worker = host
        .start_worker(&filter(), r#"{"initial_state_wait_ms": 0}"#)
        .unwrap();
    let body = completion_body("base", 200);
    let no_state = send_completion(&worker, "pool-a", &body);
    assert_error(&no_state, 503);
    // The first tick takes the lease and opens the stream.
    host.advance(Duration::from_millis(100)).unwrap();

    let mut down = busy_and_idle_pool("pool-down", FailureMode::FailClose);
    for e in &mut down.endpoints {
        e.ready = false;
    }
    host.collector()
        .push(&snapshot(
            1,
            vec![busy_and_idle_pool("pool-a", FailureMode::FailClose), down],
        ))
        .unwrap();
    assert!(send_completion(&worker, "pool-a", &body).forwarded());
    assert_error(&send_completion(&worker, "no-such-pool", &body), 503);
    assert_error(&send_completion(&worker, "pool-down", &body), 503);
}

#[test]
fn stale_state_fails_open_or_closed_per_pool_and_recovers() {
    let pools = vec![
        busy_and_idle_pool("open-pool", FailureMode::FailOpen),
        busy_and_idle_pool("closed-pool", FailureMode::FailClose),
    ];
    let (host, worker) = started("{}", pools.clone());
    let body = completion_body("base", 200);
    assert!(send_completion(&worker, "open-pool", &body).forwarded());
    assert!(send_completion(&worker, "closed-pool", &body).forwarded());

    // The collector goes away and nothing new arrives for longer than
    // state_timeout_ms (3 s).
    host.collector().set_available(false);
    host.collector().close_all(14).unwrap();
    host.advance(Duration::from_millis(3_500)).unwrap();

    let open = send_completion(&worker, "open-pool", &body);
    assert!(
        open.forwarded(),
        "FailOpen serves from last known state: {open:?}"
    );
    assert!(open
        .upstream_header(DESTINATION)
        .map(first_entry)
        .unwrap()
        .starts_with("10.0.0."));
    let fail_open: i64 = host
        .metrics()
        .iter()
        .filter(|m| m.name.starts_with("llmgw_fail_open_total"))
        .map(|m| m.value)
        .sum();
    assert_eq!(fail_open, 1);
    assert_error(&send_completion(&worker, "closed-pool", &body), 503);

    // The collector returns: the holder reconnects (backoff <= 2 s) and the
    // next snapshot brings both pools back.
    host.collector().set_available(true);
    host.advance(Duration::from_millis(2_100)).unwrap();
    assert_eq!(host.collector().push(&snapshot(2, pools)).unwrap(), 1);
    assert!(send_completion(&worker, "closed-pool", &body).forwarded());
}

#[test]
fn in_flight_requests_spread_a_burst_across_workers() {
    let equal = pool(
        "pool-a",
        FailureMode::FailClose,
        vec![
            endpoint("10.0.0.1:8000", 0, 0.1),
            endpoint("10.0.0.2:8000", 0, 0.1),
        ],
    );
    // Prefix affinity off: rendezvous hashing would send both prompts to
    // their owner pod, whatever is in flight.
    let config = r#"{"scorers":{"prefix":0}}"#;
    let host = Host::new();
    let a = host.start_worker(&filter(), config).unwrap();
    let b = host.start_worker(&filter(), config).unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    host.collector().push(&snapshot(1, vec![equal])).unwrap();

    let body_a = json!({"model": "base", "prompt": "alpha ".repeat(50)}).to_string();
    let body_b = json!({"model": "base", "prompt": "omega ".repeat(50)}).to_string();
    let headers = |worker: &Worker| {
        let mut h = integration::wasm_host::HeaderMap::from_pairs([
            (":method", "POST"),
            (":path", "/v1/completions"),
            ("content-type", "application/json"),
        ]);
        h.add("x-request-id", format!("req-{}", worker.id()).as_bytes());
        h
    };
    let mut first = a.stream(headers(&a), Some("pool-a")).unwrap();
    first.request_headers(false).unwrap();
    first.request_body(body_a.as_bytes(), true).unwrap();
    let picked_first = first
        .upstream_headers()
        .unwrap()
        .get(DESTINATION)
        .unwrap()
        .to_string();

    let mut second = b.stream(headers(&b), Some("pool-a")).unwrap();
    second.request_headers(false).unwrap();
    second.request_body(body_b.as_bytes(), true).unwrap();
    let picked_second = second
        .upstream_headers()
        .unwrap()
        .get(DESTINATION)
        .unwrap()
        .to_string();
    assert_ne!(
        picked_first, picked_second,
        "the second request saw the first in flight"
    );
    assert!(
        host.shared_data("llmgw.inflight.default/pool-a").is_some(),
        "the in-flight table is keyed by the pool's namespace and name"
    );

    first.finish().unwrap();
    second.finish().unwrap();
}

#[test]
fn streaming_responses_pass_through_chunk_by_chunk() {
    let (_host, worker) = started(
        "{}",
        vec![busy_and_idle_pool("pool-a", FailureMode::FailClose)],
    );
    let chunks: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("data: {{\"choices\":[{{\"text\":\"t{i}\"}}]}}\n\n").into_bytes())
        .chain([b"data: [DONE]\n\n".to_vec()])
        .collect();
    let exchange = worker
        .request()
        .cluster("pool-a")
        .body(br#"{"model":"base","prompt":"x","stream":true}"#.to_vec())
        .upstream_response(
            200,
            &[("content-type", "text/event-stream")],
            chunks.clone(),
        )
        .send()
        .unwrap();
    let response_body_actions: Vec<_> = exchange
        .actions
        .iter()
        .filter(|(name, _)| *name == "response_body")
        .map(|(_, a)| format!("{a:?}"))
        .collect();
    assert_eq!(response_body_actions, vec!["Continue"; 6]);
    assert_eq!(exchange.response.unwrap().body, chunks.concat());
}

#[test]
fn invalid_plugin_configurations_are_rejected_with_a_reason() {
    let host = Host::new();
    for (config, needle) in [
        (r#"{"max_body_bytes":0}"#, "max_body_bytes"),
        (r#"{"no_such_field":1}"#, "no_such_field"),
        ("[1,2]", "JSON object"),
        (r#"{"state_timeout_ms":0}"#, "state_timeout_ms"),
    ] {
        let error = host.start_worker(&filter(), config).err().expect(config);
        assert!(format!("{error:#}").contains(needle), "{config}: {error:#}");
    }
}

/// A pool whose collector learns prefix placements, with these placements.
fn learning_pool(placements: &[(u64, u32)]) -> Pool {
    let mut p = pool(
        "pool-a",
        FailureMode::FailClose,
        vec![
            endpoint("10.0.0.1:8000", 0, 0.1),
            endpoint("10.0.0.2:8000", 0, 0.1),
            endpoint("10.0.0.3:8000", 0, 0.1),
        ],
    );
    p.learns_prefix_placements = true;
    p.prefix_placements = pool_state::placements::encode(placements);
    p
}

#[test]
fn affinity_keys_are_reported_to_the_collector_and_its_placement_is_followed() {
    let (host, worker) = started("{}", vec![learning_pool(&[])]);
    let body = completion_body("base", 600);
    let first = send_completion(&worker, "pool-a", &body);
    let routed = first
        .upstream_header(DESTINATION)
        .map(first_entry)
        .unwrap()
        .to_string();
    // The same worker keeps an unplaced group where it sent it, and reports
    // the key once (not once per request).
    for _ in 0..3 {
        let again = send_completion(&worker, "pool-a", &body);
        assert_eq!(
            again.upstream_header(DESTINATION).map(first_entry),
            Some(routed.as_str())
        );
    }
    host.advance(Duration::from_millis(100)).unwrap();
    let reports = host.collector().prefix_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (
            reports[0].namespace.as_str(),
            reports[0].pool.as_str(),
            reports[0].endpoint.as_str()
        ),
        ("default", "pool-a", routed.as_str())
    );

    // The collector places the key elsewhere: every request follows it.
    let key = reports[0].key;
    let elsewhere = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]
        .iter()
        .position(|a| *a != routed)
        .unwrap();
    host.collector()
        .push(&snapshot(
            2,
            vec![learning_pool(&[(key, elsewhere as u32)])],
        ))
        .unwrap();
    for _ in 0..3 {
        let placed = send_completion(&worker, "pool-a", &body);
        assert_eq!(
            placed.upstream_header(DESTINATION).map(first_entry),
            Some(["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"][elsewhere])
        );
    }
}

#[test]
fn a_collector_that_does_not_learn_placements_gets_no_reports() {
    let mut p = learning_pool(&[]);
    p.learns_prefix_placements = false;
    let (host, worker) = started("{}", vec![p]);
    let body = completion_body("base", 600);
    let first = send_completion(&worker, "pool-a", &body);
    let owner = first
        .upstream_header(DESTINATION)
        .map(first_entry)
        .unwrap()
        .to_string();
    for _ in 0..3 {
        let again = send_completion(&worker, "pool-a", &body);
        assert_eq!(
            again.upstream_header(DESTINATION).map(first_entry),
            Some(owner.as_str()),
            "rendezvous owner"
        );
    }
    host.advance(Duration::from_millis(300)).unwrap();
    assert!(host.collector().prefix_reports().is_empty());
}
