//! The benchmark's model server: answers every inference request at once with
//! a fixed small completion and serves a static, idle vLLM `/metrics`, so that
//! the collector sees ready pods and any latency difference is Envoy's.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const METRICS: &str = "# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine=\"0\",model_name=\"bench-model\"} 0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"bench-model\"} 0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"bench-model\"} 0.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"27000\"} 1.0
";

const COMPLETION: &str = r#"{"id":"cmpl-bench","object":"text_completion","created":0,"model":"bench-model","choices":[{"index":0,"text":"ok","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

/// Serves every address until the process is killed.
pub async fn serve(addrs: Vec<SocketAddr>) -> anyhow::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr).await?;
        servers.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                        .await;
                });
            }
        });
    }
    while servers.join_next().await.is_some() {}
    Ok(())
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    // Read the whole body, as a model server would.
    let _ = request.into_body().collect().await;
    let (content_type, body) = match path.as_str() {
        "/metrics" => ("text/plain; version=0.0.4", METRICS),
        "/health" => ("text/plain", ""),
        _ => ("application/json", COMPLETION),
    };
    Ok(Response::builder()
        .header("content-type", content_type)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response"))
}
