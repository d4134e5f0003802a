//! The HTTP server in-process: OpenAI API, errors, admin faults, metrics.

mod common;

use std::time::Duration;

use common::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use vllm_sim::engine::tokenizer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_has_requested_length_usage_and_pod_header() {
    let pod = start(pod_config("pod-a", &["sql-lora"])).await;
    let r = post(
        pod.addr(),
        "/v1/completions",
        r#"{"model":"sql-lora","prompt":"The quick brown fox","max_tokens":12,"temperature":"0"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.pod.as_deref(), Some("pod-a"));
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "sql-lora");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(tokenizer::count_tokens(text), 12);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt_tokens = 1 + tokenizer::count_tokens("The quick brown fox") as u64;
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 12);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_prompts_and_n_give_one_choice_each() {
    let pod = start(pod_config("p", &[])).await;
    let r = post(
        pod.addr(),
        "/v1/completions",
        &json!({"model": MODEL, "prompt": ["a b c", "d"], "n": 2, "max_tokens": 3}).to_string(),
    )
    .await;
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(
        v["usage"]["prompt_tokens"],
        (1 + tokenizer::count_tokens("a b c") + 2) as u64
    );
    let r = post(
        pod.addr(),
        "/v1/completions",
        &json!({"model": MODEL, "prompt": [[1, 2, 3], [4]], "max_tokens": 1}).to_string(),
    )
    .await;
    assert_eq!(r.json()["usage"]["prompt_tokens"], 4);
    let r = post(
        pod.addr(),
        "/v1/completions",
        &json!({"model": MODEL, "prompt": ["a", [1]], "max_tokens": 1}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_sends_role_tokens_finish_usage_and_done() {
    let pod = start(pod_config("p", &[])).await;
    let body = json!({
        "model": MODEL, "messages": [{"role": "user", "content": "hello there"}],
        "max_completion_tokens": 5, "stream": true, "stream_options": {"include_usage": true}
    });
    let r = post(pod.addr(), "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .content_type
        .clone()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&r.text());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(tokenizer::count_tokens(&content), 5);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_without_limit_stops_naturally() {
    let pod = start(pod_config("p", &[])).await;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let v = post(pod.addr(), "/v1/chat/completions", &body.to_string())
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((16..=256).contains(&n), "{n}");
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_look_like_vllm() {
    let mut cfg = pod_config("p", &[]);
    cfg.engine.max_model_len = 64;
    let pod = start(cfg).await;
    let a = pod.addr();
    let r = post(a, "/v1/completions", r#"{"model":"gpt-nope","prompt":"x"}"#).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json(),
        json!({"error":{"message":"The model `gpt-nope` does not exist.","type":"NotFoundError","param":null,"code":404}})
    );
    assert_eq!(r.pod.as_deref(), Some("p"));
    for bad in [
        "{not json",
        r#"{"prompt":"x"}"#,
        &format!(r#"{{"model":"{MODEL}"}}"#),
        &format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":0}}"#),
        &format!(r#"{{"model":"{MODEL}","prompt":[1,"x"]}}"#),
        "[]",
    ] {
        let r = post(a, "/v1/completions", bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json()["error"]["type"], "BadRequestError");
        assert_eq!(r.json()["error"]["code"], 400);
    }
    let long = "word ".repeat(100);
    let r = post(
        a,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": long, "max_tokens": 5}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length is 64 tokens"));
    let r = post(
        a,
        "/v1/chat/completions",
        &format!(r#"{{"model":"{MODEL}","messages":[]}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(a, "/no/such/path").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.pod.as_deref(), Some("p"));
    // Still serving after all that.
    let r = post(
        a,
        "/v1/completions",
        &format!(r#"{{"model":"{MODEL}","prompt":"ok","max_tokens":2}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_runtime_lora_loading() {
    let pod = start(pod_config("p", &["food-review"])).await;
    let a = pod.addr();
    let ids = |v: Value| -> Vec<(String, Value)> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_str().unwrap().to_string(), m["parent"].clone()))
            .collect()
    };
    let models = ids(get(a, "/v1/models").await.json());
    assert_eq!(models[0], (MODEL.to_string(), Value::Null));
    assert_eq!(models[1], ("food-review".to_string(), json!(MODEL)));

    let r = post(
        a,
        "/v1/load_lora_adapter",
        r#"{"lora_name":"cad","lora_path":"/x/cad"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = post(
        a,
        "/v1/load_lora_adapter",
        r#"{"lora_name":"cad","lora_path":"/x/cad"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(a, "/v1/load_lora_adapter", r#"{"lora_path":"/x"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(ids(get(a, "/v1/models").await.json()).len(), 3);
    let r = post(
        a,
        "/v1/completions",
        r#"{"model":"cad","prompt":"x","max_tokens":2}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["model"], "cad");

    let r = post(a, "/v1/unload_lora_adapter", r#"{"lora_name":"cad"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post(a, "/v1/unload_lora_adapter", r#"{"lora_name":"cad"}"#).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post(
        a,
        "/v1/completions",
        r#"{"model":"cad","prompt":"x","max_tokens":2}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_engine_piles_requests_up_in_waiting() {
    let pod = start(pod_config("p", &["sql-lora"])).await;
    let a = pod.addr();
    let r = post(a, "/admin/faults", r#"{"pause_engine":true}"#).await;
    assert_eq!(r.json()["pause_engine"], true);
    let mut clients = Vec::new();
    for i in 0..5 {
        let model = if i % 2 == 0 { "sql-lora" } else { MODEL };
        let body =
            json!({"model": model, "prompt": format!("request {i}"), "max_tokens": 3}).to_string();
        clients.push(tokio::spawn(async move {
            post(a, "/v1/completions", &body).await
        }));
    }
    let s = wait_state(a, "5 waiting", |s| s["waiting"] == 5).await;
    assert_eq!(s["running"], 0);
    assert_eq!(s["waiting_adapters"], json!(["sql-lora"]));
    let metrics = get(a, "/metrics").await.text();
    assert!(metrics.contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 5.0"));
    assert!(metrics.contains("waiting_lora_adapters=\"sql-lora\""));
    post(a, "/admin/faults", r#"{"pause_engine":false}"#).await;
    for c in clients {
        assert_eq!(c.await.unwrap().status, StatusCode::OK);
    }
    wait_state(a, "drained", |s| s["waiting"] == 0 && s["running"] == 0).await;
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_health_metrics_and_latency_faults() {
    let pod = start(pod_config("p", &[])).await;
    let a = pod.addr();
    let req = format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":1}}"#);

    let r = post(
        a,
        "/admin/faults",
        r#"{"error_rate":1.0,"error_codes":[503]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post(a, "/v1/completions", &req).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], 503);
    assert_eq!(r.pod.as_deref(), Some("p"));
    post(a, "/admin/faults", r#"{"error_rate":0.0}"#).await;

    assert_eq!(get(a, "/health").await.status, StatusCode::OK);
    post(
        a,
        "/admin/faults",
        r#"{"health_fail":true,"metrics_fail":true}"#,
    )
    .await;
    assert_eq!(
        get(a, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(a, "/metrics").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    post(a, "/admin/faults", r#"{"health_fail":false,"metrics_fail":false,"metrics_delay_ms":300,"extra_latency_ms":300}"#).await;
    let t = std::time::Instant::now();
    assert_eq!(get(a, "/metrics").await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert_eq!(
        post(a, "/v1/completions", &req).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Bad fault updates are refused whole.
    let r = post(a, "/admin/faults", r#"{"error_rate":3,"hang":true}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(a, "/admin/faults", r#"{"bogus":1}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(state(a).await["faults"]["hang"], false);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_holds_requests_until_lifted() {
    let pod = start(pod_config("p", &[])).await;
    let a = pod.addr();
    post(a, "/admin/faults", r#"{"hang":true}"#).await;
    let body = format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":1}}"#);
    let pending = tokio::spawn(async move { post(a, "/v1/completions", &body).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "a hung pod must not answer");
    post(a, "/admin/faults", r#"{"hang":false}"#).await;
    assert_eq!(pending.await.unwrap().status, StatusCode::OK);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_aborts_the_engine_request() {
    let mut cfg = pod_config("p", &[]);
    cfg.time_scale = 1.0;
    let pod = start(cfg).await;
    let a = pod.addr();
    let body = json!({"model": MODEL, "prompt": "long one", "max_tokens": 5000, "stream": true})
        .to_string();
    let req = hyper::Request::post(format!("http://{a}/v1/completions"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(TIMEOUT, client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    wait_state(a, "running request", |s| s["running"] == 1).await;
    drop(resp);
    let s = wait_state(a, "abort after disconnect", |s| {
        s["running"] == 0 && s["waiting"] == 0
    })
    .await;
    assert_eq!(s["kv_cache_usage"], 0.0);
    // The abort's Finished event is delivered by the next engine step.
    let aborted = "finished_reason=\"abort\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 1.0";
    let mut seen = false;
    for _ in 0..200 {
        if get(a, "/metrics").await.text().contains(aborted) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "abort counted in request_success_total");
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_stops_listening() {
    let pod = start(pod_config("p", &[])).await;
    let a = pod.addr();
    let r = post(a, "/admin/crash", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut refused = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::net::TcpStream::connect(a).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a crashed pod must refuse connections");
    assert!(pod.crashed());
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_prefix_hits_the_cache_and_shows_in_metrics() {
    let pod = start(pod_config("p", &[])).await;
    let a = pod.addr();
    let prompt = "You are a helpful assistant for a shop. ".repeat(20);
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 2}).to_string();
    let first = post(a, "/v1/completions", &body).await.json();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let second = post(a, "/v1/completions", &body).await.json();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt_tokens = second["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(cached, (prompt_tokens - 1) / 16 * 16);
    let s = state(a).await;
    assert_eq!(s["prefix_hits_tokens"], cached);
    assert_eq!(s["prefix_queries_tokens"], 2 * prompt_tokens);
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_serves_several_pods() {
    let a = start(pod_config("pod-a", &[])).await;
    let b = start(pod_config("pod-b", &["x"])).await;
    let body = format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":1}}"#);
    assert_eq!(
        post(a.addr(), "/v1/completions", &body)
            .await
            .pod
            .as_deref(),
        Some("pod-a")
    );
    assert_eq!(
        post(b.addr(), "/v1/completions", &body)
            .await
            .pod
            .as_deref(),
        Some("pod-b")
    );
    assert_eq!(state(b.addr()).await["registered_adapters"], json!(["x"]));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_metric_name_on_request() {
    let mut cfg = pod_config("p", &[]);
    cfg.legacy_kv_metric = true;
    let pod = start(cfg).await;
    let m = get(pod.addr(), "/metrics").await.text();
    assert!(m.contains("vllm:gpu_cache_usage_perc{"));
    assert!(!m.contains("vllm:kv_cache_usage_perc"));
    pod.shutdown().await;
}

/// e2e latency sum from /metrics (simulated seconds).
async fn e2e_sum(addr: std::net::SocketAddr) -> f64 {
    let text = get(addr, "/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with("vllm:e2e_request_latency_seconds_sum{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("e2e sum")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_scale_stretches_wall_clock_but_not_simulated_latency() {
    let mut cfg = pod_config("p", &[]);
    cfg.time_scale = 4.0;
    let pod = start(cfg).await;
    let body = json!({"model": MODEL, "prompt": "x", "max_tokens": 30}).to_string();
    let t = std::time::Instant::now();
    assert_eq!(
        post(pod.addr(), "/v1/completions", &body).await.status,
        StatusCode::OK
    );
    let wall = t.elapsed().as_secs_f64();
    let sim = e2e_sum(pod.addr()).await;
    // 30 decode steps of ~6.9 ms each on the model's clock.
    assert!((0.15..0.5).contains(&sim), "simulated e2e {sim}");
    assert!(
        wall >= 3.0 * sim,
        "wall {wall} should be ~4x simulated {sim}"
    );
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_scale_zero_runs_on_a_virtual_clock() {
    let mut cfg = pod_config("p", &[]);
    cfg.time_scale = 0.0;
    let pod = start(cfg).await;
    let body = json!({"model": MODEL, "prompt": "x", "max_tokens": 2000}).to_string();
    let t = std::time::Instant::now();
    let r = post(pod.addr(), "/v1/completions", &body).await;
    assert_eq!(r.json()["usage"]["completion_tokens"], 2000);
    let sim = e2e_sum(pod.addr()).await;
    assert!(
        sim > 10.0,
        "2000 decode steps take > 10 simulated s, got {sim}"
    );
    assert!(
        t.elapsed().as_secs_f64() < sim / 2.0,
        "virtual time must run faster than real time"
    );
    pod.shutdown().await;
}
