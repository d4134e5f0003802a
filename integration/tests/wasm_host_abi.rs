//! The host itself, checked against a small hand-written proxy-wasm module:
//! buffering rules, local replies, properties, ticks, shared data, the fake
//! collector's streams, and loud failure on an import the host lacks.
//! These run without the filter build.

use std::sync::OnceLock;
use std::time::Duration;

use integration::wasm_host::{Action, FilterModule, Host, StreamState};

/// Memory layout: strings from 16, return slots at 1024.., bump heap from 4096.
const MODULE: &str = r#"
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $not_in_host (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $metric (mut i32) (i32.const 0))
  (data (i32.const 16) "x-reject")
  (data (i32.const 32) "x-seen")
  (data (i32.const 40) "yes")
  (data (i32.const 48) "ticks")
  (data (i32.const 64) "llmgw_collector")
  (data (i32.const 80) "llmgw.poolstate.v1.PoolState")
  (data (i32.const 112) "Watch")
  (data (i32.const 120) "last")
  (data (i32.const 128) "forbidden")
  (data (i32.const 144) "xds\00cluster_name")
  (data (i32.const 160) "x-cluster")
  (data (i32.const 176) "replaced")
  (data (i32.const 192) "x-trap")
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (if (i32.eqz (local.get $size)) (then (return (i32.const 0))))
    (drop (call $set_tick (i32.const 100)))
    (drop (call $define_metric (i32.const 0) (i32.const 48) (i32.const 5) (i32.const 1032)))
    (global.set $metric (i32.load (i32.const 1032)))
    (drop (call $grpc_stream (i32.const 64) (i32.const 15) (i32.const 80) (i32.const 28)
      (i32.const 112) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1036)))
    (drop (call $grpc_send (i32.load (i32.const 1036)) (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $increment_metric (global.get $metric) (i64.const 1))))
  (func (export "proxy_on_grpc_receive") (param $ctx i32) (param $token i32) (param $size i32)
    (drop (call $get_buffer (i32.const 5) (i32.const 0) (local.get $size) (i32.const 1024) (i32.const 1028)))
    (drop (call $set_shared (i32.const 120) (i32.const 4)
      (i32.load (i32.const 1024)) (i32.load (i32.const 1028)) (i32.const 0))))
  (func (export "proxy_on_grpc_close") (param i32 i32 i32))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $replace_header (i32.const 0) (i32.const 32) (i32.const 6) (i32.const 40) (i32.const 3)))
    (if (i32.eqz (call $get_property (i32.const 144) (i32.const 16) (i32.const 1024) (i32.const 1028)))
      (then (drop (call $replace_header (i32.const 0) (i32.const 160) (i32.const 9)
        (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))))
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 1024) (i32.const 1028)))
      (then
        (drop (call $local_response (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 128) (i32.const 9)
          (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (if (result i32) (local.get $eos) (then (i32.const 0)) (else (i32.const 1))))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (drop (call $set_buffer (i32.const 0) (i32.const 0) (local.get $size) (i32.const 176) (i32.const 8)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 192) (i32.const 6) (i32.const 1024) (i32.const 1028)))
      (then (drop (call $not_in_host (i32.const 2) (i32.const 1024)))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"#;

fn module() -> FilterModule {
    static MODULE_CACHE: OnceLock<FilterModule> = OnceLock::new();
    MODULE_CACHE
        .get_or_init(|| FilterModule::from_bytes(MODULE.as_bytes()).expect("test module compiles"))
        .clone()
}

#[test]
fn body_is_buffered_while_paused_and_released_with_headers() {
    let host = Host::new();
    let worker = host.start_worker(&module(), "{}").unwrap();
    let exchange = worker
        .request()
        .cluster("pool-a")
        .body("0123456789")
        .chunked(4)
        .send()
        .unwrap();
    let actions: Vec<_> = exchange.actions.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        &actions[..4],
        &[
            Action::Pause,
            Action::Pause,
            Action::Pause,
            Action::Continue
        ],
        "{:?}",
        exchange.actions
    );
    assert_eq!(exchange.upstream_header("x-seen"), Some("yes"));
    assert_eq!(exchange.upstream_header("x-cluster"), Some("pool-a"));
    assert_eq!(exchange.upstream_body(), Some(b"replaced".as_slice()));
    assert_eq!(exchange.status(), Some(200));
    assert!(!exchange.stalled);
    assert!(exchange.fuel > 0);
}

#[test]
fn local_reply_stops_the_request_and_passes_the_response_callbacks() {
    let host = Host::new();
    let worker = host.start_worker(&module(), "{}").unwrap();
    let exchange = worker
        .request()
        .header("x-reject", "1")
        .body("{}")
        .send()
        .unwrap();
    assert!(!exchange.forwarded());
    let reply = exchange.local_reply.as_ref().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"forbidden");
    assert_eq!(exchange.status(), Some(403));
    assert_eq!(
        exchange.actions.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec!["request_headers", "response_headers", "response_body"]
    );
}

#[test]
fn a_half_sent_request_is_neither_forwarded_nor_stalled() {
    let host = Host::new();
    let worker = host.start_worker(&module(), "{}").unwrap();
    let mut stream = worker
        .stream(
            integration::wasm_host::HeaderMap::from_pairs([(":path", "/")]),
            None,
        )
        .unwrap();
    stream.request_headers(false).unwrap();
    assert_eq!(
        stream.request_body(b"x", false).unwrap(),
        Some(Action::Pause)
    );
    assert!(stream.upstream_headers().is_none());
    let exchange = stream.finish().unwrap();
    assert!(!exchange.forwarded());
    assert!(
        !exchange.stalled,
        "the body never ended, so nothing is stalled yet"
    );
}

#[test]
fn ticks_follow_the_host_clock_and_stats_are_process_wide() {
    let host = Host::new();
    let a = host.start_worker(&module(), "{}").unwrap();
    let b = host.start_worker(&module(), "{}").unwrap();
    assert_eq!(a.tick_period_ms(), 100);
    host.advance(Duration::from_millis(1_050)).unwrap();
    assert_eq!(host.metric("ticks").unwrap().value, 20);
    drop(b);
    host.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(host.metric("ticks").unwrap().value, 25);
}

#[test]
fn collector_streams_carry_pushed_messages_into_shared_data() {
    let host = Host::new();
    let a = host.start_worker(&module(), "{}").unwrap();
    let _b = host.start_worker(&module(), "{}").unwrap();
    let streams = host.collector().open_streams();
    assert_eq!(streams.len(), 2);
    assert!(streams.iter().all(|s| s.is_watch() && s.sent.len() == 1));
    assert_eq!(host.collector().push_bytes(b"hello").unwrap(), 2);
    let (value, cas) = host.shared_data("last").unwrap();
    assert_eq!(value, b"hello");
    assert_ne!(cas, 0);

    drop(a);
    let streams = host.collector().streams();
    assert_eq!(streams[0].state, StreamState::WorkerGone);
    assert!(streams[1].is_open());
    assert_eq!(host.collector().push_bytes(b"again").unwrap(), 1);
    assert_eq!(host.shared_data("last").unwrap().0, b"again");
    assert_eq!(host.collector().close_all(14).unwrap(), 1);
    assert!(host.collector().open_streams().is_empty());
}

#[test]
fn an_unreachable_collector_closes_new_streams_as_unavailable() {
    let host = Host::new();
    host.collector().set_available(false);
    let _worker = host.start_worker(&module(), "{}").unwrap();
    let streams = host.collector().streams();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].state, StreamState::ClosedByServer { status: 14 });
}

#[test]
fn a_rejected_configuration_is_an_error() {
    let host = Host::new();
    let error = host
        .start_worker(&module(), "")
        .err()
        .expect("empty config is rejected");
    assert!(format!("{error:#}").contains("rejected"), "{error:#}");
}

#[test]
fn calling_an_import_the_host_lacks_fails_loudly_and_kills_the_worker() {
    assert_eq!(
        module().unimplemented_imports(),
        &["env.proxy_get_header_map_size".to_string()]
    );
    let host = Host::new();
    let worker = host.start_worker(&module(), "{}").unwrap();
    let error = worker
        .request()
        .header("x-trap", "1")
        .send()
        .expect_err("the call traps");
    assert!(
        format!("{error:#}").contains("proxy_get_header_map_size"),
        "{error:#}"
    );
    let again = worker
        .request()
        .send()
        .expect_err("a dead worker refuses work");
    assert!(format!("{again:#}").contains("is dead"), "{again:#}");
    assert!(worker.failure().is_some());
}
