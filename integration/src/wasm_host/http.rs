//! HTTP streams through a worker VM, with Envoy's buffering rules:
//! `Pause` on request headers holds them back; `Pause` on a body chunk buffers
//! it, and the next callback sees everything buffered so far; `Continue`
//! releases headers and buffered data upstream. A local reply ends the
//! request side and travels back through the response callbacks, as Envoy's
//! local replies pass the encoder filters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::abi::Action;
use super::context::LocalReply;
use super::headers::HeaderMap;
use super::worker::{HttpCallback, Worker};

/// What reached the upstream (the pod), if the filter let the request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl DownstreamResponse {
    pub fn status(&self) -> Option<u32> {
        self.headers.get(":status").and_then(|s| s.parse().ok())
    }
}

/// The complete record of one request through the filter.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Every callback and what the filter answered, in order.
    pub actions: Vec<(&'static str, Action)>,
    pub local_reply: Option<LocalReply>,
    pub upstream: Option<UpstreamRequest>,
    pub response: Option<DownstreamResponse>,
    /// The filter reset the stream (`proxy_close_stream`).
    pub reset: bool,
    /// The filter paused the request and never let it go nor answered it:
    /// in Envoy the client would hang until a timeout.
    pub stalled: bool,
    /// Fuel the VM spent on this exchange (≈ wasm instructions).
    pub fuel: u64,
    /// The stream's properties when it ended, including what the filter set
    /// (`proxy_set_property`; Envoy keeps those as filter state `wasm.<path>`).
    pub properties: HashMap<Vec<String>, Vec<u8>>,
}

impl Exchange {
    pub fn forwarded(&self) -> bool {
        self.upstream.is_some()
    }

    /// A property the filter set on this stream (one-element path).
    pub fn property(&self, name: &str) -> Option<&[u8]> {
        self.properties
            .get(&vec![name.to_string()])
            .map(Vec::as_slice)
    }

    /// A header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream.as_ref().and_then(|u| u.headers.get(name))
    }

    pub fn upstream_body(&self) -> Option<&[u8]> {
        self.upstream.as_ref().map(|u| u.body.as_slice())
    }

    /// The upstream body parsed as JSON.
    pub fn upstream_json(&self) -> Option<serde_json::Value> {
        self.upstream_body()
            .and_then(|body| serde_json::from_slice(body).ok())
    }

    /// The HTTP status the client saw.
    pub fn status(&self) -> Option<u32> {
        self.response.as_ref().and_then(DownstreamResponse::status)
    }

    /// The response body the client saw, parsed as JSON.
    pub fn response_json(&self) -> Option<serde_json::Value> {
        self.response
            .as_ref()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
    }
}

/// One HTTP stream, driven phase by phase. [`Request::send`] drives a whole
/// exchange; use this directly to stop halfway (a client that goes away).
pub struct HttpStream<'w> {
    worker: &'w Worker,
    context: u32,
    actions: Vec<(&'static str, Action)>,
    upstream_headers: Option<HeaderMap>,
    upstream_body: Vec<u8>,
    request_ended: bool,
    local_reply: Option<LocalReply>,
    reset: bool,
    downstream_headers: Option<HeaderMap>,
    downstream_body: Vec<u8>,
    fuel_at_start: u64,
    finished: bool,
}

impl<'w> HttpStream<'w> {
    pub(crate) fn open(
        worker: &'w Worker,
        headers: HeaderMap,
        properties: HashMap<Vec<String>, Vec<u8>>,
    ) -> anyhow::Result<Self> {
        let fuel_at_start = worker.fuel_used();
        let context = worker.lock().new_http_context()?;
        {
            let mut core = worker.lock();
            let http = core
                .state()
                .http
                .get_mut(&context)
                .expect("context just created");
            http.request_headers = headers;
            http.properties = properties;
        }
        Ok(HttpStream {
            worker,
            context,
            actions: Vec::new(),
            upstream_headers: None,
            upstream_body: Vec::new(),
            request_ended: false,
            local_reply: None,
            reset: false,
            downstream_headers: None,
            downstream_body: Vec::new(),
            fuel_at_start,
            finished: false,
        })
    }

    /// Sets a property of this stream from now on, as Envoy does once it
    /// picked an upstream host (`upstream.address`) or knows the outcome
    /// (`response.flags`).
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) {
        let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
        self.with_http(|h| {
            h.properties.insert(path, value.to_vec());
        });
    }

    /// Whether the request side is over (answered locally or reset).
    pub fn request_stopped(&self) -> bool {
        self.local_reply.is_some() || self.reset
    }

    pub fn local_reply(&self) -> Option<&LocalReply> {
        self.local_reply.as_ref()
    }

    /// The request headers as released upstream so far.
    pub fn upstream_headers(&self) -> Option<&HeaderMap> {
        self.upstream_headers.as_ref()
    }

    fn run(
        &mut self,
        callback: HttpCallback,
        size: usize,
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        let name = match callback {
            HttpCallback::RequestHeaders => "request_headers",
            HttpCallback::RequestBody => "request_body",
            HttpCallback::ResponseHeaders => "response_headers",
            HttpCallback::ResponseBody => "response_body",
        };
        let action =
            self.worker
                .lock()
                .http_callback(callback, self.context, size, end_of_stream)?;
        self.actions.push((name, action));
        Ok(action)
    }

    /// Applies what the filter did during the last request callback.
    fn settle_request(&mut self, action: Action) {
        let mut core = self.worker.lock();
        let http = core
            .state()
            .http
            .get_mut(&self.context)
            .expect("context lives until finish");
        if let Some(reply) = http.local_reply.clone() {
            self.local_reply = Some(reply);
        }
        self.reset |= http.reset;
        if self.local_reply.is_some() || self.reset {
            return;
        }
        if action == Action::Continue || http.resume_request {
            http.resume_request = false;
            if self.upstream_headers.is_none() {
                self.upstream_headers = Some(http.request_headers.clone());
                http.request_headers_released = true;
            }
            self.upstream_body.append(&mut http.request_body);
        }
    }

    /// Applies what the filter did to this stream outside its own callbacks
    /// (a root context that made it effective and resumed or answered it, as
    /// the filter does for requests held until the first pool state).
    pub fn settle(&mut self) -> anyhow::Result<()> {
        let had_reply = self.local_reply.is_some();
        self.settle_request(Action::Pause);
        if !had_reply && self.local_reply.is_some() {
            self.replay_local_reply()?;
        }
        Ok(())
    }

    /// Delivers the request headers (`end_of_stream`: no body follows).
    pub fn request_headers(&mut self, end_of_stream: bool) -> anyhow::Result<Action> {
        anyhow::ensure!(self.actions.is_empty(), "request headers already sent");
        let count = self.with_http(|h| h.request_headers.len());
        let action = self.run(HttpCallback::RequestHeaders, count, end_of_stream)?;
        self.request_ended = end_of_stream;
        self.settle_request(action);
        Ok(action)
    }

    /// Delivers one request body chunk. Returns `None` when the filter had
    /// already ended the request (Envoy no longer calls it).
    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> anyhow::Result<Option<Action>> {
        anyhow::ensure!(!self.request_ended, "request body after end of stream");
        self.request_ended = end_of_stream;
        if self.request_stopped() {
            return Ok(None);
        }
        let buffered = self.with_http(|h| {
            h.request_body.extend_from_slice(chunk);
            h.request_body.len()
        });
        let action = self.run(HttpCallback::RequestBody, buffered, end_of_stream)?;
        self.settle_request(action);
        Ok(Some(action))
    }

    fn with_http<R>(&self, f: impl FnOnce(&mut super::context::HttpContextState) -> R) -> R {
        let mut core = self.worker.lock();
        f(core
            .state()
            .http
            .get_mut(&self.context)
            .expect("context lives until finish"))
    }

    fn settle_response(&mut self, action: Action) {
        let (reply, reset, release, body) = self.with_http(|http| {
            let release = action == Action::Continue || http.resume_response;
            http.resume_response = false;
            let body = if release {
                std::mem::take(&mut http.response_body)
            } else {
                Vec::new()
            };
            (
                http.local_reply.clone(),
                http.reset,
                release.then(|| http.response_headers.clone()),
                body,
            )
        });
        self.reset |= reset;
        if let (Some(reply), None) = (reply, &self.local_reply) {
            // A local reply from a response callback replaces the response.
            self.local_reply = Some(reply.clone());
            self.downstream_headers = Some(local_reply_headers(&reply));
            self.downstream_body = reply.body;
            return;
        }
        if let Some(headers) = release {
            self.downstream_headers.get_or_insert(headers);
        }
        self.downstream_body.extend_from_slice(&body);
    }

    /// Delivers the response headers from upstream (`:status` included).
    pub fn response_headers(
        &mut self,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        let count = headers.len();
        self.with_http(|h| h.response_headers = headers);
        let action = self.run(HttpCallback::ResponseHeaders, count, end_of_stream)?;
        self.settle_response(action);
        Ok(action)
    }

    /// Delivers one response body chunk.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        let buffered = self.with_http(|h| {
            h.response_body.extend_from_slice(chunk);
            h.response_body.len()
        });
        let action = self.run(HttpCallback::ResponseBody, buffered, end_of_stream)?;
        self.settle_response(action);
        Ok(action)
    }

    /// Sends a local reply back through the response callbacks, as Envoy does.
    fn replay_local_reply(&mut self) -> anyhow::Result<()> {
        let Some(reply) = self.local_reply.clone() else {
            return Ok(());
        };
        self.response_headers(local_reply_headers(&reply), reply.body.is_empty())?;
        if !reply.body.is_empty() {
            self.response_body(&reply.body, true)?;
        }
        if self.downstream_headers.is_none() {
            // Envoy sends a local reply even if an encoder filter paused it.
            self.downstream_headers = Some(local_reply_headers(&reply));
            self.downstream_body = reply.body;
        }
        Ok(())
    }

    /// Ends the stream (done, log, delete) and returns its record.
    pub fn finish(mut self) -> anyhow::Result<Exchange> {
        self.finished = true;
        let properties = {
            let mut core = self.worker.lock();
            core.state()
                .http
                .get(&self.context)
                .map(|http| http.properties.clone())
                .unwrap_or_default()
        };
        let result = self.worker.lock().end_http_context(self.context);
        result?;
        self.worker.host.pump()?;
        let stalled = self.request_ended
            && self.upstream_headers.is_none()
            && self.local_reply.is_none()
            && !self.reset;
        Ok(Exchange {
            actions: std::mem::take(&mut self.actions),
            local_reply: self.local_reply.take(),
            upstream: self.upstream_headers.take().map(|headers| UpstreamRequest {
                headers,
                body: std::mem::take(&mut self.upstream_body),
            }),
            response: self
                .downstream_headers
                .take()
                .map(|headers| DownstreamResponse {
                    headers,
                    body: std::mem::take(&mut self.downstream_body),
                }),
            reset: self.reset,
            stalled,
            fuel: self.worker.fuel_used() - self.fuel_at_start,
            properties,
        })
    }
}

impl Drop for HttpStream<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // A trap here is recorded as the worker's failure and reported by
            // its next call; a destructor cannot return it.
            let _ = self.worker.lock().end_http_context(self.context);
        }
    }
}

fn local_reply_headers(reply: &LocalReply) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.add(":status", reply.status.to_string().as_bytes());
    for (key, value) in reply.headers.pairs() {
        headers.add(key, value);
    }
    if !reply.body.is_empty() {
        if headers.get("content-type").is_none() {
            headers.add("content-type", b"text/plain");
        }
        headers.replace("content-length", reply.body.len().to_string().as_bytes());
    }
    headers
}

/// A request to send through a worker, built step by step.
pub struct Request<'w> {
    worker: &'w Worker,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    chunk_size: Option<usize>,
    properties: HashMap<Vec<String>, Vec<u8>>,
    response_headers: HeaderMap,
    response_chunks: Vec<Vec<u8>>,
}

impl Worker {
    /// A `POST /v1/completions` with Envoy's usual headers (`x-request-id`
    /// included), no body, cluster unset; the upstream answers 200 JSON.
    pub fn request(&self) -> Request<'_> {
        static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);
        let request_id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
        let headers = HeaderMap::from_pairs([
            (":method", "POST".to_string()),
            (":scheme", "http".to_string()),
            (":authority", "gateway.local".to_string()),
            (":path", "/v1/completions".to_string()),
            ("content-type", "application/json".to_string()),
            (
                "x-request-id",
                format!("00000000-0000-4000-8000-{request_id:012x}"),
            ),
        ]);
        Request {
            worker: self,
            headers,
            body: None,
            chunk_size: None,
            properties: HashMap::new(),
            response_headers: HeaderMap::from_pairs([
                (":status", "200"),
                ("content-type", "application/json"),
            ]),
            response_chunks: vec![
                br#"{"id":"cmpl-1","object":"text_completion","choices":[]}"#.to_vec(),
            ],
        }
    }

    /// Opens a stream with exactly these request headers.
    pub fn stream(
        &self,
        headers: HeaderMap,
        cluster: Option<&str>,
    ) -> anyhow::Result<HttpStream<'_>> {
        let mut properties = HashMap::new();
        if let Some(cluster) = cluster {
            properties.insert(cluster_path(), cluster.as_bytes().to_vec());
        }
        HttpStream::open(self, headers, properties)
    }
}

fn cluster_path() -> Vec<String> {
    vec!["xds".to_string(), "cluster_name".to_string()]
}

impl<'w> Request<'w> {
    /// Replaces a header (pseudo-headers such as `:path` included).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.replace(name, value.as_bytes());
        self
    }

    /// Adds a header, keeping earlier values of the same name.
    pub fn add_header(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.add(name, value);
        self
    }

    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    pub fn path(self, path: &str) -> Self {
        self.header(":path", path)
    }

    /// The cluster Envoy routed to (property `xds.cluster_name`).
    pub fn cluster(self, cluster: &str) -> Self {
        self.property(&["xds", "cluster_name"], cluster.as_bytes())
    }

    pub fn property(mut self, path: &[&str], value: &[u8]) -> Self {
        self.properties
            .insert(path.iter().map(|p| p.to_string()).collect(), value.to_vec());
        self
    }

    /// The request body; `content-length` is set to match unless already set.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn json_body(self, body: &serde_json::Value) -> Self {
        self.body(body.to_string())
    }

    /// Delivers the body in chunks of this size (Envoy's network reads).
    pub fn chunked(mut self, chunk_size: usize) -> Self {
        self.chunk_size = Some(chunk_size.max(1));
        self
    }

    /// What the upstream answers, if the request reaches it.
    pub fn upstream_response(
        mut self,
        status: u32,
        headers: &[(&str, &str)],
        chunks: Vec<Vec<u8>>,
    ) -> Self {
        self.response_headers = HeaderMap::from_pairs(headers.iter().copied());
        self.response_headers
            .replace(":status", status.to_string().as_bytes());
        self.response_chunks = chunks;
        self
    }

    /// Runs the whole exchange: request headers, body chunks, the upstream's
    /// response if the request was let through, or the local reply.
    pub fn send(mut self) -> anyhow::Result<Exchange> {
        if let Some(body) = &self.body {
            if self.headers.get("content-length").is_none() {
                self.headers
                    .add("content-length", body.len().to_string().as_bytes());
            }
        }
        let mut stream = HttpStream::open(self.worker, self.headers, self.properties)?;
        let body = self.body.unwrap_or_default();
        stream.request_headers(body.is_empty())?;
        if !body.is_empty() && !stream.request_stopped() {
            let size = self.chunk_size.unwrap_or(body.len());
            let chunks: Vec<&[u8]> = body.chunks(size).collect();
            for (index, chunk) in chunks.iter().enumerate() {
                if stream
                    .request_body(chunk, index + 1 == chunks.len())?
                    .is_none()
                {
                    break;
                }
            }
        }
        if stream.local_reply.is_some() {
            stream.replay_local_reply()?;
        } else if stream.upstream_headers.is_some() && !stream.reset {
            let chunks = std::mem::take(&mut self.response_chunks);
            stream.response_headers(self.response_headers, chunks.is_empty())?;
            for (index, chunk) in chunks.iter().enumerate() {
                if stream.local_reply.is_some() || stream.reset {
                    break;
                }
                stream.response_body(chunk, index + 1 == chunks.len())?;
            }
        }
        stream.finish()
    }
}
