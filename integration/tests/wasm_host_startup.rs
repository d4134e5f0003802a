//! A starting Envoy, through the real `gateway_filter.wasm`: no worker takes
//! the collector lease inside `on_configure` (Envoy's main-thread root context
//! never ticks, so a lease taken there was never renewed), requests that come
//! before the first pool state wait for it (bounded by
//! `initial_state_wait_ms`) instead of getting 503 `no_state`, and a client
//! that leaves while held is forgotten. Also: the inference API only (admin
//! paths 404, wrong methods 405 with `allow`), `retry-after` on 429/503, and
//! the public model name restored in streamed responses.

use std::time::Duration;

use integration::wasm_host::fixtures::{completion_body, endpoint, pool, snapshot};
use integration::wasm_host::{Exchange, FilterModule, Host, HttpStream, Worker};
use pool_state::{Criticality, FailureMode, ModelRule, Pool, WeightedTarget};
use serde_json::json;

const DESTINATION: &str = "x-gateway-destination-endpoint";

fn filter() -> FilterModule {
    FilterModule::gateway_filter().expect("target/gateway_filter.wasm (run `make wasm`)")
}

fn pools() -> Vec<Pool> {
    vec![pool(
        "pool-a",
        FailureMode::FailOpen,
        vec![
            endpoint("10.0.0.1:8000", 0, 0.1),
            endpoint("10.0.0.2:8000", 2, 0.3),
        ],
    )]
}

fn assert_openai_error(exchange: &Exchange, status: u32) -> serde_json::Value {
    let reply = exchange.local_reply.as_ref().expect("a local reply");
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json().expect("JSON error body");
    assert_eq!(body["error"]["code"], json!(status), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert_eq!(body["error"]["param"], json!(null), "{body}");
    body
}

/// A completion request sent whole, left open for the test to settle.
fn held_request(worker: &Worker) -> HttpStream<'_> {
    let body = completion_body("base", 300);
    let mut headers = integration::wasm_host::HeaderMap::from_pairs([
        (":method", "POST".to_string()),
        (":scheme", "http".to_string()),
        (":authority", "gateway.local".to_string()),
        (":path", "/v1/completions".to_string()),
        ("content-type", "application/json".to_string()),
    ]);
    headers.add("content-length", body.len().to_string().as_bytes());
    let mut stream = worker.stream(headers, Some("pool-a")).unwrap();
    stream.request_headers(false).unwrap();
    stream.request_body(&body, true).unwrap();
    stream
}

#[test]
fn on_configure_takes_no_lease_and_a_root_that_never_ticks_holds_nothing() {
    let host = Host::new();
    // Envoy's main thread: configured, then never ticks.
    let main_thread = host.start_worker(&filter(), "{}").unwrap();
    main_thread.set_stalled(true);
    assert_eq!(
        host.shared_data("llmgw.lease"),
        None,
        "lease taken in on_configure"
    );
    let workers: Vec<Worker> = (0..2)
        .map(|_| host.start_worker(&filter(), "{}").unwrap())
        .collect();
    host.advance(Duration::from_millis(20)).unwrap();
    let open = host.collector().open_streams();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        workers.iter().any(|w| w.id() == open[0].worker),
        "a ticking worker holds the stream within 20 ms: {open:?}"
    );
}

#[test]
fn requests_before_the_first_state_wait_for_it_and_then_route() {
    let host = Host::new();
    let worker = host.start_worker(&filter(), "{}").unwrap();
    let mut early = held_request(&worker);
    assert!(!early.request_stopped(), "answered instead of held");
    assert!(
        early.upstream_headers().is_none(),
        "forwarded without state"
    );
    host.advance(Duration::from_millis(50)).unwrap();
    early.settle().unwrap();
    assert!(early.upstream_headers().is_none(), "released without state");
    assert_eq!(host.collector().push(&snapshot(1, pools())).unwrap(), 1);
    early.settle().unwrap();
    let upstream = early.upstream_headers().expect("released upstream");
    assert!(upstream
        .get(DESTINATION)
        .is_some_and(|d| d.starts_with("10.0.0.")));
    let exchange = early.finish().unwrap();
    assert!(!exchange.stalled && exchange.forwarded());
    // Later requests route at once.
    let now = worker
        .request()
        .cluster("pool-a")
        .body(completion_body("base", 300))
        .send()
        .unwrap();
    assert!(now.forwarded());
}

#[test]
fn the_wait_is_bounded_and_then_the_failure_mode_answers() {
    let host = Host::new();
    let worker = host
        .start_worker(&filter(), r#"{"initial_state_wait_ms": 300}"#)
        .unwrap();
    let mut early = held_request(&worker);
    host.advance(Duration::from_millis(200)).unwrap();
    early.settle().unwrap();
    assert!(!early.request_stopped(), "answered before the bound");
    host.advance(Duration::from_millis(200)).unwrap();
    early.settle().unwrap();
    let exchange = early.finish().unwrap();
    let body = assert_openai_error(&exchange, 503);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no pool state"));
    let reply = exchange.local_reply.as_ref().unwrap();
    assert_eq!(reply.headers.get("x-gateway-error"), Some("no_state"));
    assert_eq!(reply.headers.get("retry-after"), Some("1"));
    assert_eq!(reply.headers.get("retry-after-ms"), Some("1000"));
    // After the bound nobody waits: 503 at once.
    let late = worker
        .request()
        .cluster("pool-a")
        .body(completion_body("base", 300))
        .send()
        .unwrap();
    assert_openai_error(&late, 503);
    // 0 turns the wait off.
    let host = Host::new();
    let worker = host
        .start_worker(&filter(), r#"{"initial_state_wait_ms": 0}"#)
        .unwrap();
    let at_once = worker
        .request()
        .cluster("pool-a")
        .body(completion_body("base", 300))
        .send()
        .unwrap();
    assert_openai_error(&at_once, 503);
}

#[test]
fn a_client_that_leaves_while_held_is_forgotten() {
    let host = Host::new();
    let worker = host.start_worker(&filter(), "{}").unwrap();
    let gone = held_request(&worker);
    drop(gone);
    let kept = held_request(&worker);
    host.advance(Duration::from_millis(50)).unwrap();
    assert_eq!(host.collector().push(&snapshot(1, pools())).unwrap(), 1);
    let mut kept = kept;
    kept.settle().unwrap();
    assert!(kept.upstream_headers().is_some());
    kept.finish().unwrap();
    assert!(worker.failure().is_none(), "{:?}", worker.failure());
}

fn started(config: &str) -> (Host, Worker) {
    let host = Host::new();
    let worker = host.start_worker(&filter(), config).unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(host.collector().push(&snapshot(1, pools())).unwrap(), 1);
    (host, worker)
}

#[test]
fn only_the_inference_api_is_forwarded() {
    let (_host, worker) = started("{}");
    for path in [
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
        "/v1/completions/",
        "/v1/%63ompletions",
        "/flush_cache",
    ] {
        let e = worker
            .request()
            .cluster("pool-a")
            .path(path)
            .json_body(&json!({"lora_name": "x", "lora_path": "/tmp/x", "model": "base"}))
            .send()
            .unwrap();
        let body = assert_openai_error(&e, 404);
        assert_eq!(body["error"]["type"], "NotFoundError", "{path}");
        assert!(!e.forwarded(), "{path}");
    }
    let get_chat = worker
        .request()
        .cluster("pool-a")
        .path("/v1/chat/completions")
        .header(":method", "GET")
        .send()
        .unwrap();
    assert_openai_error(&get_chat, 405);
    let reply = get_chat.local_reply.as_ref().unwrap();
    assert_eq!(reply.headers.get("allow"), Some("POST"));
    let models = worker
        .request()
        .cluster("pool-a")
        .path("/v1/models")
        .header(":method", "GET")
        .send()
        .unwrap();
    assert!(models.forwarded());
}

#[test]
fn an_operator_opens_an_admin_path_for_a_trusted_caller() {
    let (_host, worker) = started(
        r#"{"api_paths":{"open":[{"path":"/v1/load_lora_adapter",
            "caller_header":{"name":"x-llmgw-admin-key","value":"s3cret"}}]}}"#,
    );
    let body = json!({"lora_name": "x", "lora_path": "/tmp/x"});
    let anonymous = worker
        .request()
        .cluster("pool-a")
        .path("/v1/load_lora_adapter")
        .json_body(&body)
        .send()
        .unwrap();
    assert_openai_error(&anonymous, 404);
    let trusted = worker
        .request()
        .cluster("pool-a")
        .path("/v1/load_lora_adapter")
        .header("x-llmgw-admin-key", "s3cret")
        .json_body(&body)
        .send()
        .unwrap();
    assert!(trusted.forwarded(), "{trusted:?}");
    assert_eq!(
        trusted.upstream_header("x-llmgw-admin-key"),
        None,
        "key forwarded"
    );
    assert_eq!(trusted.upstream_json(), Some(body));
}

#[test]
fn shed_answers_tell_clients_when_to_come_back() {
    let host = Host::new();
    let worker = host
        .start_worker(&filter(), r#"{"retry_after_ms": 2500}"#)
        .unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    let mut saturated = pool(
        "pool-a",
        FailureMode::FailClose,
        vec![endpoint("10.0.0.1:8000", 50, 0.99)],
    );
    saturated.model_rules = vec![ModelRule {
        model: "batch".into(),
        targets: vec![WeightedTarget {
            model: "base".into(),
            weight: 1,
        }],
        criticality: Criticality::Sheddable as i32,
        ..Default::default()
    }];
    host.collector()
        .push(&snapshot(1, vec![saturated]))
        .unwrap();
    let shed = worker
        .request()
        .cluster("pool-a")
        .body(completion_body("batch", 200))
        .send()
        .unwrap();
    assert_openai_error(&shed, 429);
    let reply = shed.local_reply.as_ref().unwrap();
    assert_eq!(reply.headers.get("retry-after"), Some("3"));
    assert_eq!(reply.headers.get("retry-after-ms"), Some("2500"));
}

#[test]
fn the_public_model_name_is_restored_in_streamed_chunks() {
    let host = Host::new();
    let worker = host
        .start_worker(&filter(), r#"{"restore_public_model_name": true}"#)
        .unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    let mut p = pools().remove(0);
    p.model_rules = vec![ModelRule {
        model: "travelhelper".into(),
        targets: vec![WeightedTarget {
            model: "travel-helper-v1".into(),
            weight: 1,
        }],
        ..Default::default()
    }];
    host.collector().push(&snapshot(1, vec![p])).unwrap();
    let events = "data: {\"id\":\"c1\",\"model\":\"travel-helper-v1\",\"choices\":[{\"text\":\"Hi\"}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"travel-helper-v1\",\"choices\":[{\"text\":\" there\"}]}\n\ndata: [DONE]\n\n";
    // Chunks cut mid-event, as a pod's writes may be.
    let chunks: Vec<Vec<u8>> = events.as_bytes().chunks(37).map(<[u8]>::to_vec).collect();
    let e = worker
        .request()
        .cluster("pool-a")
        .json_body(&json!({"model": "travelhelper", "prompt": "hi", "stream": true}))
        .upstream_response(200, &[("content-type", "text/event-stream")], chunks)
        .send()
        .unwrap();
    assert_eq!(e.upstream_json().unwrap()["model"], "travel-helper-v1");
    let seen = String::from_utf8(e.response.as_ref().unwrap().body.clone()).unwrap();
    assert_eq!(seen, events.replace("travel-helper-v1", "travelhelper"));
}
