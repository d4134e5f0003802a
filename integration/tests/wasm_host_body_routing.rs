//! The two body-routing modes through the real `gateway_filter.wasm` in the
//! fake host, which refuses request header writes once the headers went on
//! (as Envoy does: the SDK's setters then trap the VM). In `buffer_filter`
//! mode the filter continues from its headers callback, drops
//! `content-length`, and names the pod in filter state, never in a header.

use std::time::Duration;

use integration::wasm_host::fixtures::{completion_body, endpoint, pool, snapshot};
use integration::wasm_host::{Action, FilterModule, Host, Worker};
use pool_state::{Criticality, FailureMode, ModelRule, Pool, WeightedTarget};

const DESTINATION: &str = "x-gateway-destination-endpoint";
const FILTER_STATE: &str = "llmgw.destination";

fn started(config: &str, pools: Vec<Pool>) -> (Host, Worker) {
    let filter = FilterModule::gateway_filter().expect("target/gateway_filter.wasm (make wasm)");
    let host = Host::new();
    let worker = host.start_worker(&filter, config).unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(host.collector().push(&snapshot(1, pools)).unwrap(), 1);
    (host, worker)
}

fn canary_pool() -> Pool {
    let mut p = pool(
        "pool-a",
        FailureMode::FailClose,
        vec![
            endpoint("10.0.0.1:8000", 30, 0.9),
            endpoint("10.0.0.3:8000", 0, 0.1),
        ],
    );
    p.model_rules = vec![ModelRule {
        model: "travelhelper".into(),
        targets: vec![WeightedTarget {
            model: "travel-helper-v1".into(),
            weight: 1,
        }],
        criticality: Criticality::Critical as i32,
        source: "InferenceModel/default/loramodel".into(),
    }];
    p
}

#[test]
fn buffer_filter_mode_names_the_pod_in_filter_state_and_never_writes_headers_late() {
    let (_host, worker) = started(
        r#"{"body_routing":"buffer_filter","upstream_info_headers":true}"#,
        vec![canary_pool()],
    );
    let body = completion_body("travelhelper", 5_000);
    let exchange = worker
        .request()
        .cluster("pool-a")
        .header(DESTINATION, "6.6.6.6:1")
        .body(body)
        .chunked(1000)
        .send()
        .unwrap();
    assert_eq!(exchange.actions[0], ("request_headers", Action::Continue));
    assert!(!exchange.stalled, "{exchange:?}");
    assert!(exchange.forwarded(), "{exchange:?}");
    // The pick, then the fallbacks (`fallbacks`, default 2).
    let named = exchange
        .property(FILTER_STATE)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        named.as_deref().and_then(|v| v.split(',').next()),
        Some("10.0.0.3:8000"),
        "{named:?}"
    );
    assert_eq!(
        exchange.upstream_header(DESTINATION),
        None,
        "the client's value is removed; the header_mutation filter writes the pick"
    );
    assert_eq!(
        exchange.upstream_header("content-length"),
        None,
        "the body is rewritten after the headers went on"
    );
    assert_eq!(exchange.upstream_header("x-gateway-target-model"), None);
    let sent = exchange.upstream_json().expect("JSON body upstream");
    assert_eq!(sent["model"], "travel-helper-v1");
}

#[test]
fn buffer_filter_mode_answers_errors_from_the_body_callback() {
    let (_host, worker) = started(r#"{"body_routing":"buffer_filter"}"#, vec![canary_pool()]);
    let exchange = worker
        .request()
        .cluster("pool-a")
        .body(b"{not json".to_vec())
        .send()
        .unwrap();
    let reply = exchange.local_reply.as_ref().expect("a local reply");
    assert_eq!(reply.status, 400);
    assert_eq!(exchange.property(FILTER_STATE), None);
}

#[test]
fn stop_iteration_mode_pauses_and_writes_the_header() {
    let (_host, worker) = started("{}", vec![canary_pool()]);
    let exchange = worker
        .request()
        .cluster("pool-a")
        .body(completion_body("travelhelper", 5_000))
        .send()
        .unwrap();
    assert_eq!(exchange.actions[0], ("request_headers", Action::Pause));
    assert_eq!(
        exchange
            .upstream_header(DESTINATION)
            .and_then(|v| v.split(',').next()),
        Some("10.0.0.3:8000")
    );
    assert_eq!(exchange.property(FILTER_STATE), None);
    let length = exchange
        .upstream_header("content-length")
        .map(str::to_owned);
    let sent = exchange
        .upstream_body()
        .unwrap_or_default()
        .len()
        .to_string();
    assert_eq!(length, Some(sent), "content-length follows the rewrite");
}
