//! Server-sent events pass through Envoy and the filter as they are produced.

use anyhow::Result;
use integration::e2e::envoy_config::Route;
use integration::e2e::scenarios::{self, GKE_POOL};
use integration::e2e::stack::{Stack, StackSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_chunks_arrive_one_by_one() -> Result<()> {
    const TOKENS: usize = 40;
    let stack = Stack::start(StackSpec {
        pods: scenarios::gke_pods(2)?,
        // Real-time pace: ~7 ms per token, so a stream lasts a few hundred ms.
        sim_args: ["--time-scale", "1"].map(String::from).to_vec(),
        manifests: scenarios::gke_manifests(),
        routes: vec![Route::to_pool("GKE pool", None, GKE_POOL)],
        ..Default::default()
    })
    .await?;
    let probe = r#"{"model":"food-review","prompt":"hi","max_tokens":1}"#;
    stack.wait_routable("/v1/completions", &[], probe).await?;

    let requests = [
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "food-review", "stream": true, "max_tokens": TOKENS,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Describe a great ramen"}]}),
        ),
        (
            "/v1/completions",
            serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "stream": true,
                "max_tokens": TOKENS, "prompt": "Once upon a time"}),
        ),
    ];
    for (path, body) in requests {
        let reply = stack
            .client
            .post_timed(&stack.url(path), &[], body.to_string())
            .await?;
        assert_eq!(reply.status, 200, "{path}\n{}", stack.diagnostics());
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{path}: content-type {content_type}"
        );
        let text: String = reply
            .chunks
            .iter()
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
            .collect();
        let events = text.matches("data: ").count();
        assert!(events > TOKENS / 2, "{path}: only {events} events: {text}");
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "{path}: stream does not end with [DONE]"
        );
        let first = reply.chunks.first().expect("a chunk").0;
        let last = reply.chunks.last().expect("a chunk").0;
        assert!(
            reply.chunks.len() >= TOKENS / 4,
            "{path}: the body arrived in {} chunks for {events} events (buffered?)",
            reply.chunks.len()
        );
        assert!(
            first * 3 < last,
            "{path}: first chunk at {first:?}, last at {last:?}: not streamed"
        );
    }
    Ok(())
}
