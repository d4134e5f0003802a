//! Helpers shared by the HTTP tests: in-process pods on free loopback ports
//! and a small HTTP client with timeouts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::Value;
use vllm_sim::config::{LoraModule, PodConfig};
use vllm_sim::server::{start_pod, PodHandle};

pub const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A pod config on a free port, with adapters, running 10x faster than real time.
pub fn pod_config(name: &str, adapters: &[&str]) -> PodConfig {
    let mut c = PodConfig::new(name, "127.0.0.1:0".parse().unwrap());
    c.lora_modules = adapters
        .iter()
        .map(|a| LoraModule {
            name: a.to_string(),
            path: format!("/adapters/{a}"),
        })
        .collect();
    c.enable_lora = !adapters.is_empty();
    c.engine.max_loras = 2;
    c.time_scale = 0.1;
    c
}

pub async fn start(config: PodConfig) -> PodHandle {
    start_pod(config).await.expect("pod starts")
}

pub struct Reply {
    pub status: StatusCode,
    pub pod: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

pub async fn send(addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let fut = async {
        let resp = client().request(req).await.expect("request sent");
        let status = resp.status();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let pod = header("x-sim-pod");
        let content_type = header("content-type");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            pod,
            content_type,
            body,
        }
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("reply in time")
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    send(addr, Method::POST, path, body).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::GET, path, "").await
}

pub async fn state(addr: SocketAddr) -> Value {
    get(addr, "/admin/state").await.json()
}

/// Polls `cond` on `/admin/state` until it holds (bounded).
pub async fn wait_state(addr: SocketAddr, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let s = state(addr).await;
        if cond(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}: {}", state(addr).await);
}

/// `data:` payloads of an SSE body.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad frame {f:?}"))
                .to_string()
        })
        .collect()
}
