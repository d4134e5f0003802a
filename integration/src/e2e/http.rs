//! A small HTTP/1.1 client over hyper for talking to the gateway, the simulated
//! pods and the admin endpoints: whole replies for most checks, and replies with
//! the arrival time of every body chunk for the streaming checks.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Header the simulator sets on every response: the pod that served it.
pub const SIM_POD_HEADER: &str = "x-sim-pod";

/// Upper bound on one request, so a hung component fails a test instead of
/// blocking it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A pooled HTTP client (cheap to clone).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

/// A complete reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A reply whose body was read chunk by chunk, with the time each chunk arrived
/// (measured from when the request was sent).
#[derive(Debug)]
pub struct TimedReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub chunks: Vec<(Duration, Bytes)>,
}

impl Reply {
    /// The pod that served the request (`x-sim-pod`), if a simulated pod did.
    pub fn served_by(&self) -> Option<&str> {
        self.headers.get(SIM_POD_HEADER)?.to_str().ok()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "status {} body is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }

    /// The body as (lossy) text, for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { inner }
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Result<Reply> {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    /// POST a JSON (or any) body with extra headers.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply> {
        self.send(Method::POST, url, headers, body.into()).await
    }

    /// Sends one request and reads the whole reply, within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply> {
        let request = build_request(method, url, headers, body)?;
        let work = async {
            let response = self.inner.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| anyhow!("{url}: no complete reply within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("request to {url}"))
    }

    /// POSTs and records when each body chunk arrives.
    pub async fn post_timed(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<TimedReply> {
        let request = build_request(Method::POST, url, headers, body.into())?;
        let started = Instant::now();
        let work = async {
            let response = self.inner.request(request).await?;
            let (parts, mut body) = response.into_parts();
            let mut chunks = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    chunks.push((started.elapsed(), data));
                }
            }
            Ok::<_, anyhow::Error>(TimedReply {
                status: parts.status,
                headers: parts.headers,
                chunks,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| anyhow!("{url}: no complete reply within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("request to {url}"))
    }
}

fn build_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>> {
    let mut request = Request::builder().method(method).uri(url);
    let has_content_type = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !has_content_type {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        request = request.header(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    Ok(request.body(Full::new(body))?)
}
