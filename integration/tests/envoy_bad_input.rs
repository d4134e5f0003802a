//! Hostile clients through the real Envoy with the collector and simulated
//! pods: malformed HTTP/1.1 (raw TCP), HTTP/1.0, oversized bodies on every
//! protocol, the model servers' admin API, wrong methods. Every answer is
//! OpenAI-shaped JSON, whether the filter or Envoy (local_reply_config) makes
//! it, and Envoy keeps serving afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration::e2e::envoy_config::Route;
use integration::e2e::load::ensure_openai_error;
use integration::e2e::scenarios::{self, GKE_POOL};
use integration::e2e::stack::{Stack, StackSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const BODY_LIMIT: usize = 20 * 1024 * 1024;

async fn stack() -> Result<Stack> {
    let stack = Stack::start(StackSpec {
        pods: scenarios::gke_pods(2)?,
        sim_args: ["--time-scale", "0.01"].map(String::from).to_vec(),
        manifests: scenarios::gke_manifests(),
        routes: vec![Route::to_pool("GKE", None, GKE_POOL)],
        ..Default::default()
    })
    .await?;
    stack
        .wait_routable("/v1/completions", &[], &probe())
        .await?;
    Ok(stack)
}

fn probe() -> String {
    serde_json::json!({"model": MODEL, "prompt": "hello", "max_tokens": 1}).to_string()
}

/// One raw exchange: writes `request` (ignoring a write the server cut
/// short) and reads until the server closes or `limit` passes.
async fn raw(addr: SocketAddr, request: &[u8], limit: Duration) -> Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 65536];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if complete_response(&out) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    write.abort();
    Ok(out)
}

/// Whether `bytes` hold a whole response with a content-length body.
fn complete_response(bytes: &[u8]) -> bool {
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= head_end + 4 + length
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Response headers, names lower-cased.
type Headers = Vec<(String, String)>;

/// Parses a raw HTTP/1.1 response: status, headers, body.
fn parse(raw: &[u8]) -> Result<(u16, Headers, Vec<u8>)> {
    let head_end = find(raw, b"\r\n\r\n").with_context(|| {
        format!(
            "no complete response head: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, raw[head_end + 4..].to_vec()))
}

/// Checks an OpenAI-shaped error body with `status` and returns it.
fn openai_error(status: u16, body: &[u8]) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(body).with_context(|| {
        format!(
            "not JSON: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    let e = &v["error"];
    anyhow::ensure!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    anyhow::ensure!(e["type"].is_string(), "{v}");
    anyhow::ensure!(e.get("param") == Some(&serde_json::Value::Null), "{v}");
    anyhow::ensure!(e["code"].as_u64() == Some(u64::from(status)), "{v}");
    Ok(v)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_openai_shaped_answers_and_envoy_keeps_serving() -> Result<()> {
    let stack = stack().await?;
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big_header = format!("x-big: {}\r\n", "a".repeat(70_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("junk request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "NUL in a header",
            b"GET /v1/models HTTP/1.1\r\nhost: a\r\nx-a: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "transfer-encoding and content-length",
            b"POST /v1/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bad chunk size",
            b"POST /v1/completions HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "duplicate content-length",
            b"POST /v1/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello".to_vec(),
            400,
        ),
        (
            "too many headers",
            format!("GET /v1/models HTTP/1.1\r\nhost: a\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "a header too large",
            format!("GET /v1/models HTTP/1.1\r\nhost: a\r\n{big_header}\r\n").into_bytes(),
            431,
        ),
        (
            "HTTP/1.0",
            b"GET /v1/models HTTP/1.0\r\n\r\n".to_vec(),
            426,
        ),
        (
            "escaped slash",
            b"GET /v1/models%2Fx HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "admin API: unload a LoRA adapter",
            b"POST /v1/unload_lora_adapter HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: 25\r\n\r\n{\"lora_name\":\"food-revi\"}".to_vec(),
            404,
        ),
        (
            "admin API: load a LoRA adapter",
            b"POST /v1/load_lora_adapter HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            404,
        ),
        (
            "a path outside the API",
            b"GET /metrics HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
            404,
        ),
        (
            "GET on a POST-only path",
            b"GET /v1/chat/completions HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
            405,
        ),
        (
            "DELETE on a POST-only path",
            b"DELETE /v1/completions HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
            405,
        ),
        (
            "POST without a body",
            b"POST /v1/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "body that is not JSON",
            b"POST /v1/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello".to_vec(),
            400,
        ),
        (
            "declared body over the limit",
            format!("POST /v1/completions HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n{{", BODY_LIMIT + 1).into_bytes(),
            413,
        ),
    ];
    for (name, request, status) in cases {
        let reply = raw(stack.gateway, &request, Duration::from_secs(10)).await?;
        let (got, headers, body) = parse(&reply).with_context(|| name.to_string())?;
        anyhow::ensure!(
            got == status,
            "{name}: expected {status}, got {got}: {}",
            String::from_utf8_lossy(&body)
        );
        openai_error(status, &body).with_context(|| name.to_string())?;
        anyhow::ensure!(
            header(&headers, "content-type") == Some("application/json"),
            "{name}: {headers:?}"
        );
        anyhow::ensure!(header(&headers, "x-gateway-error").is_some(), "{name}");
        if status == 405 {
            anyhow::ensure!(
                header(&headers, "allow") == Some("POST"),
                "{name}: {headers:?}"
            );
        }
    }
    // Still serving.
    let ok = stack.post("/v1/completions", &[], probe()).await?;
    assert_eq!(ok.status, 200, "{}", ok.text());
    Ok(())
}

/// Writes a chunked body of `total` bytes in 1 MiB chunks and returns the
/// answer.
async fn chunked_body(addr: SocketAddr, total: usize) -> Result<Vec<u8>> {
    let mut request =
        b"POST /v1/completions HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    let prefix = format!("{{\"model\":\"{MODEL}\",\"prompt\":\"");
    let mut body = prefix.into_bytes();
    body.resize(total - 2, b'a');
    body.extend_from_slice(b"\"}");
    for chunk in body.chunks(1024 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    raw(addr, &request, Duration::from_secs(30)).await
}

async fn h2_post(addr: SocketAddr, body: Vec<u8>) -> Result<(u16, Vec<u8>)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("http://{addr}/v1/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .context("HTTP/2 answer within 30 s")??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

fn completion_of(total: usize) -> Vec<u8> {
    let mut body = format!("{{\"model\":\"{MODEL}\",\"max_tokens\":1,\"prompt\":\"").into_bytes();
    body.resize(total - 2, b'a');
    body.extend_from_slice(b"\"}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_body_limit_with_one_answer_on_every_protocol() -> Result<()> {
    let stack = stack().await?;
    let limit_message = format!("request body exceeds the gateway limit of {BODY_LIMIT} bytes");
    // HTTP/1.1 chunked, just over the limit and far over Envoy's buffer.
    for total in [BODY_LIMIT + 1024, BODY_LIMIT + 12 * 1024 * 1024] {
        let reply = chunked_body(stack.gateway, total).await?;
        let (status, _, body) = parse(&reply).with_context(|| format!("chunked {total}"))?;
        assert_eq!(
            status,
            413,
            "chunked {total}: {}",
            String::from_utf8_lossy(&body)
        );
        let v = openai_error(413, &body)?;
        assert_eq!(
            v["error"]["message"],
            limit_message.as_str(),
            "chunked {total}"
        );
    }
    // HTTP/2: over the limit gets the same answer; a body between Envoy's
    // default 16 MiB stream window and the limit reaches a pod.
    let (status, body) = h2_post(stack.gateway, completion_of(BODY_LIMIT + 1024)).await?;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let v = openai_error(413, &body)?;
    assert_eq!(v["error"]["message"], limit_message.as_str());
    let (status, body) = h2_post(stack.gateway, completion_of(18 * 1024 * 1024)).await?;
    assert_ne!(
        status,
        413,
        "18 MiB over HTTP/2: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    // The pod answered (a completion, or its own context-length error).
    assert!(
        v.get("choices").is_some() || v.get("error").is_some() || v.get("object").is_some(),
        "{v}"
    );
    let ok = stack.post("/v1/completions", &[], probe()).await?;
    ensure_not_error(&ok)?;
    Ok(())
}

fn ensure_not_error(reply: &integration::e2e::http::Reply) -> Result<()> {
    anyhow::ensure!(reply.status == 200, "{} {}", reply.status, reply.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_closed_paths_through_the_http_client() -> Result<()> {
    let stack = stack().await?;
    let get = stack.client.get(&stack.url("/v1/chat/completions")).await?;
    ensure_openai_error(&get, 405)?;
    assert_eq!(
        get.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let models = stack.client.get(&stack.url("/v1/models")).await?;
    assert_eq!(models.status, 200, "{}", models.text());
    let admin = stack
        .post(
            "/v1/load_lora_adapter",
            &[],
            r#"{"lora_name":"evil","lora_path":"/tmp/evil"}"#,
        )
        .await?;
    ensure_openai_error(&admin, 404)?;
    assert!(admin.served_by().is_none(), "reached a pod");
    Ok(())
}
