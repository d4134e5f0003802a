//! `restore_public_model_name` through the real Envoy: the public name the
//! client sent comes back in both a JSON response and every event of a
//! streamed (SSE) response, which still arrives chunk by chunk.

use anyhow::Result;
use integration::e2e::envoy_config::Route;
use integration::e2e::scenarios::{self, ACK_POOL_V1};
use integration::e2e::stack::{Stack, StackSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_model_name_comes_back_in_json_and_in_every_streamed_event() -> Result<()> {
    let stack = Stack::start(StackSpec {
        pods: scenarios::ack_qwen_pods(2)?,
        sim_args: ["--time-scale", "0.2"].map(String::from).to_vec(),
        manifests: scenarios::ack_manifests(),
        routes: vec![Route::to_pool("LoRA canary", None, ACK_POOL_V1)],
        plugin_config: serde_json::json!({
            "collector_cluster": "llmgw_collector",
            "restore_public_model_name": true,
        }),
        ..Default::default()
    })
    .await?;
    let chat =
        r#"{"model":"travelhelper","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    stack
        .wait_routable("/v1/chat/completions", &[], chat)
        .await?;
    let plain = stack.post("/v1/chat/completions", &[], chat).await?;
    assert_eq!(plain.json()?["model"], "travelhelper", "{}", plain.text());

    for i in 0..10 {
        let body = serde_json::json!({"model": "travelhelper", "stream": true, "max_tokens": 20,
            "messages": [{"role": "user", "content": format!("Plan a trip {i}")}]});
        let reply = stack
            .client
            .post_timed(&stack.url("/v1/chat/completions"), &[], body.to_string())
            .await?;
        assert_eq!(reply.status, 200, "{}", stack.diagnostics());
        let text: String = reply
            .chunks
            .iter()
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
            .collect();
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .collect();
        assert!(events.len() >= 10, "only {} events: {text}", events.len());
        for event in &events {
            let v: serde_json::Value = serde_json::from_str(event)?;
            assert_eq!(v["model"], "travelhelper", "{event}");
        }
        assert!(text.contains("data: [DONE]"), "{text}");
        assert!(
            !text.contains("travel-helper-v"),
            "served name leaked: {text}"
        );
        assert!(
            reply.chunks.len() >= 5,
            "buffered: {} chunks",
            reply.chunks.len()
        );
    }
    Ok(())
}
