//! What a client cannot do: choose the pod, or take the gateway down with a
//! bad request body.

use anyhow::Result;
use integration::e2e::components::SimFleet;
use integration::e2e::load::ensure_openai_error;
use integration::e2e::pods::SimPod;
use integration::e2e::ports::free_port;
use integration::e2e::scenarios::{self, GKE_POOL, LLAMA_SIM_ARGS};
use integration::e2e::stack::{Stack, StackSpec};

const BASE_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
/// The filter's body limit in these tests (default 20 MiB; smaller is faster).
const MAX_BODY_BYTES: usize = 1024 * 1024;

async fn gke_stack() -> Result<Stack> {
    let stack = Stack::start(StackSpec {
        plugin_config: serde_json::json!({
            "collector_cluster": "llmgw_collector",
            "max_body_bytes": MAX_BODY_BYTES,
        }),
        ..scenarios::gke_spec(3, &["--time-scale", "0.01"])?
    })
    .await?;
    stack
        .wait_routable("/v1/completions", &[], &valid_completion("probe"))
        .await?;
    Ok(stack)
}

fn valid_completion(prompt: &str) -> String {
    serde_json::json!({"model": BASE_MODEL, "prompt": prompt, "max_tokens": 1}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_supplied_destination_header_never_decides_the_pod() -> Result<()> {
    let stack = gke_stack().await?;
    // A server that is not in any pool: the pod an attacker would like to reach.
    let log_dir = tempfile::tempdir()?;
    let rogue = SimPod::local(
        "rogue",
        &[("app", "rogue")],
        free_port(std::net::Ipv4Addr::LOCALHOST)?,
        LLAMA_SIM_ARGS,
    );
    let rogue_addr = rogue.addr().to_string();
    let _rogue = SimFleet::start(vec![rogue], &[], log_dir.path()).await?;
    let pool_pod = stack.fleet.pods[0].addr().to_string();
    let attempts = [
        rogue_addr.clone(),
        format!("{rogue_addr},{pool_pod}"),
        format!(" {rogue_addr} "),
        "not-an-address".to_string(),
    ];
    for (i, value) in attempts.iter().cycle().take(40).enumerate() {
        let reply = stack
            .post(
                "/v1/completions",
                &[("x-gateway-destination-endpoint", value)],
                valid_completion(&format!("steer {i}")),
            )
            .await?;
        assert_eq!(
            reply.status,
            200,
            "header {value:?}: {}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply.served_by().unwrap_or("?");
        assert_eq!(
            stack.pool_of(pod),
            Some(GKE_POOL),
            "header {value:?} sent the request to {pod}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_openai_errors_and_envoy_keeps_serving() -> Result<()> {
    let mut stack = gke_stack().await?;
    let huge_prompt = "x".repeat(MAX_BODY_BYTES + 512 * 1024);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "malformed JSON",
            br#"{"model": "food-review", "prompt": "#.to_vec(),
            400,
        ),
        (
            "not an object",
            br#"["model", "food-review"]"#.to_vec(),
            400,
        ),
        (
            "missing model",
            br#"{"prompt": "hello", "max_tokens": 1}"#.to_vec(),
            400,
        ),
        (
            "model of the wrong type",
            br#"{"model": 42, "prompt": "hello"}"#.to_vec(),
            400,
        ),
        (
            "model null",
            br#"{"model": null, "prompt": "hello"}"#.to_vec(),
            400,
        ),
        ("empty body", Vec::new(), 400),
        (
            "non-UTF-8",
            b"{\"model\": \"food-\xff\xfereview\", \"prompt\": \"hello\"}".to_vec(),
            400,
        ),
        (
            "body over max_body_bytes",
            serde_json::json!({"model": BASE_MODEL, "prompt": huge_prompt})
                .to_string()
                .into_bytes(),
            413,
        ),
    ];
    for (what, body, status) in cases {
        let reply = stack.post("/v1/completions", &[], body).await?;
        if let Err(e) = ensure_openai_error(&reply, status) {
            panic!("{what}: {e:#}\n{}", stack.diagnostics());
        }
        assert!(reply.served_by().is_none(), "{what} reached a pod");
        let next = stack
            .post("/v1/completions", &[], valid_completion(what))
            .await?;
        assert_eq!(
            next.status,
            200,
            "request after {what}: {}\n{}",
            next.text(),
            stack.diagnostics()
        );
    }
    assert!(stack.envoy.is_running(), "Envoy exited");

    // What the gateway must not reject: fields it does not own with odd types
    // (the GKE guide sends temperature as a string) and big prompts under the limit.
    let gke_guide = r#"{"model":"food-review","prompt":"Write as if you were a critic: San Francisco","max_tokens":2,"temperature":"0"}"#;
    let reply = stack.post("/v1/completions", &[], gke_guide).await?;
    assert_eq!(reply.status, 200, "GKE guide request: {}", reply.text());
    let big =
        serde_json::json!({"model": BASE_MODEL, "prompt": "y".repeat(200 * 1024), "max_tokens": 1});
    let reply = stack.post("/v1/completions", &[], big.to_string()).await?;
    assert_eq!(reply.status, 200, "200 KB prompt: {}", reply.text());
    Ok(())
}
