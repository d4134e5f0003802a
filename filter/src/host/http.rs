//! The per-request HTTP context: strip client control headers, buffer the
//! body, let `decision::decide` route it, apply the result; on the way back,
//! optionally restore the public model name and always release the in-flight
//! count.

use std::cell::RefCell;
use std::rc::Rc;

use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::config::BodyRouting;
use crate::decision::{decide_avoiding, Decision, Rejection, RequestContext};
use crate::errors::GatewayError;
use crate::failures::{self, FailureTable};
use crate::headers::{
    parse_header_map, RequestHeaders, DESTINATION_HEADER, POOL_HEADER, TARGET_MODEL_HEADER,
};
use crate::inflight;
use crate::paths::PathVerdict;
use crate::random::Draws;
use crate::request::{find_response_model, rewrite_model};
use crate::sse::SseRewriter;
use crate::stats::{self, Stat};

use super::worker::{Held, Worker};
use super::{log, now_nanos, shared};

/// Responses larger than this are passed on without restoring the model name.
const MAX_RESPONSE_REWRITE_BYTES: usize = 4 * 1024 * 1024;

enum ResponseMode {
    PassThrough,
    /// Put `public` back where the pod answered with `served`.
    RestoreModel {
        served: String,
        public: String,
    },
    /// The same for a streamed (SSE) response, event by event.
    RestoreStream(SseRewriter),
}

pub(crate) struct GatewayHttp {
    context_id: u32,
    worker: Option<Rc<Worker>>,
    /// Set once a local reply was sent, so later callbacks do nothing.
    replied: bool,
    /// (shared-data key, endpoint address hash) to decrement when the
    /// request ends.
    inflight: Option<(String, u64)>,
    response: ResponseMode,
    last_body_size: usize,
    /// Read once, in `on_http_request_headers`.
    headers: RequestHeaders,
    /// Set when the request waits for the first pool state; `SharedHttp`
    /// hands it to the worker's held list. The value is the body size to
    /// route when released (`None`: a request without a body).
    wants_hold: Option<Option<usize>>,
    /// The request waits in the worker's held list.
    holding: Option<Option<usize>>,
    /// Routed at the headers (an opened path): the body streams through.
    routed_at_headers: bool,
    /// The headers went on (buffer-filter mode): Envoy refuses request
    /// header writes from here on, and the SDK's setters would trap on that.
    headers_released: bool,
    /// What was sent upstream, for the response and log phases.
    sent: Option<Sent>,
}

/// The endpoints a routed request named, and what follows the one that
/// actually serves it.
struct Sent {
    pool: String,
    /// `(ip:port, address hash)`: the pick, then the fallbacks.
    listed: Vec<(String, u64)>,
    /// The affinity key to report once the serving endpoint is known.
    report_key: Option<u64>,
    /// Set once the serving endpoint was read back (response headers).
    served_read: bool,
}

impl GatewayHttp {
    pub fn new(context_id: u32, worker: Option<Rc<Worker>>) -> Self {
        GatewayHttp {
            context_id,
            worker,
            replied: false,
            inflight: None,
            response: ResponseMode::PassThrough,
            last_body_size: 0,
            headers: RequestHeaders::default(),
            wants_hold: None,
            holding: None,
            routed_at_headers: false,
            headers_released: false,
            sent: None,
        }
    }

    fn body_routing(&self) -> BodyRouting {
        self.worker
            .as_ref()
            .map_or(BodyRouting::StopIteration, |w| w.config.body_routing)
    }

    /// Names the pod: a request header in stop-iteration mode, filter state
    /// (copied into the header by a `header_mutation` filter) in
    /// buffer-filter mode. False if the host refused.
    fn name_destination(&self, worker: &Worker, endpoint: &str) -> bool {
        match worker.config.body_routing {
            BodyRouting::StopIteration => {
                self.set_header(DESTINATION_HEADER, Some(endpoint));
                true
            }
            BodyRouting::BufferFilter => {
                let path = worker.config.destination_property();
                match super::set_property(&path, endpoint.as_bytes()) {
                    Ok(()) => true,
                    Err(status) => {
                        log(
                            LogLevel::Error,
                            &format!("llmgw: setting filter state {path}: status {status}"),
                        );
                        false
                    }
                }
            }
        }
    }

    fn set_header(&self, name: &str, value: Option<&str>) {
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
            log(
                LogLevel::Warn,
                &format!("llmgw: setting header {name}: {status:?}"),
            );
        }
    }

    fn reply(&mut self, error: &GatewayError) -> Action {
        self.reply_with(error, None)
    }

    /// A local reply; 429 and 503 carry `retry-after` (seconds, rounded up)
    /// and `retry-after-ms`, which the OpenAI SDKs honour (up to 60 s),
    /// 405 carries `allow`.
    fn reply_with(&mut self, error: &GatewayError, allow: Option<&str>) -> Action {
        self.replied = true;
        if let Some(worker) = &self.worker {
            worker.metrics.borrow_mut().increment(Stat::Errors {
                reason: error.reason,
            });
        }
        let body = error.body();
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-gateway-error", error.reason),
        ];
        let retry_ms = self.worker.as_ref().map_or(0, |w| w.config.retry_after_ms);
        let (retry_s, retry_ms_text) = (retry_ms.div_ceil(1000).to_string(), retry_ms.to_string());
        if retry_ms > 0 && matches!(error.status, 429 | 503) {
            headers.push(("retry-after", &retry_s));
            headers.push(("retry-after-ms", &retry_ms_text));
        }
        if let Some(allow) = allow {
            headers.push(("allow", allow));
        }
        if let Err(status) = hostcalls::send_http_response(error.status, headers, Some(&body)) {
            log(
                LogLevel::Error,
                &format!("llmgw: sending local reply: {status:?}"),
            );
        }
        Action::Pause
    }

    fn route(&mut self, body: Option<&[u8]>) -> Action {
        let started = now_nanos();
        let now = started / 1_000_000;
        let Some(worker) = self.worker.clone() else {
            return self.reply(&GatewayError::unavailable(
                "not_configured",
                "the gateway filter is not configured",
            ));
        };
        let cluster = hostcalls::get_property(vec!["xds", "cluster_name"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        let current = worker.current_state(now);
        if current.is_none() && self.holding.is_none() && worker.may_hold(now) {
            // No state has ever arrived: wait for it (bounded) rather than
            // apply the failure mode to an Envoy that just started.
            self.wants_hold = Some(body.map(<[u8]>::len));
            return Action::Pause;
        }
        let ctx = RequestContext {
            cluster: cluster.as_deref(),
            objective: self.headers.objective.as_deref(),
            state: current.as_ref().map(|c| (c.view.as_ref(), c.age_ms)),
            now_ms: now,
        };
        let key_prefix = &worker.config.key_prefix;
        let mut draws = Draws::for_request(&self.headers.request_id, started, self.context_id);
        let mut inflight_read = None;
        let age_ms = current.as_ref().map_or(0, |c| c.age_ms);
        let outcome = decide_avoiding(
            &worker.config,
            &worker.scheduler,
            ctx,
            body,
            |pool| {
                let read = shared::read_inflight(inflight::shared_key(key_prefix, &pool.id));
                let counts = read.table.counts_for(pool);
                inflight_read = Some(read);
                counts
            },
            |pool| {
                shared::read(&failures::shared_key(key_prefix, &pool.id))
                    .map(FailureTable::from_bytes)
                    .map(|table| table.avoided(pool, now, age_ms))
                    .unwrap_or_default()
            },
            &mut shared::EnvoyPlacement {
                memory: &mut worker.placement.borrow_mut(),
                key_prefix,
            },
            &mut draws,
        );
        let action = match outcome {
            Ok(decision) => self.apply(&worker, decision, body, inflight_read),
            Err(rejection) => self.reject(&worker, rejection),
        };
        let elapsed_us = now_nanos().saturating_sub(started) / 1_000;
        worker
            .metrics
            .borrow_mut()
            .record(Stat::Plain(stats::DECISION_TIME_US), elapsed_us);
        action
    }

    fn reject(&mut self, worker: &Worker, rejection: Rejection) -> Action {
        if rejection.error.status == 429 {
            if let Some(pool) = &rejection.pool {
                worker.metrics.borrow_mut().increment(Stat::PerPool {
                    metric: stats::SHED_TOTAL,
                    pool,
                });
            }
        }
        if rejection.error.status >= 500 {
            log(
                LogLevel::Warn,
                &format!(
                    "llmgw: {}: {}",
                    rejection.error.reason, rejection.error.message
                ),
            );
        }
        self.reply(&rejection.error)
    }

    fn apply(
        &mut self,
        worker: &Worker,
        decision: Decision,
        body: Option<&[u8]>,
        inflight_read: Option<shared::InflightRead>,
    ) -> Action {
        if let (Some(new_body), Some(old)) = (&decision.new_body, body) {
            if let Err(status) =
                hostcalls::set_buffer(BufferType::HttpRequestBody, 0, old.len(), new_body)
            {
                log(
                    LogLevel::Error,
                    &format!("llmgw: rewriting the request body: {status:?}"),
                );
                return self.reply(&GatewayError::unavailable(
                    "rewrite_failed",
                    "the gateway could not rewrite the request",
                ));
            }
            if self.headers.content_length.is_some() && !self.headers_released {
                self.set_header("content-length", Some(&new_body.len().to_string()));
            }
        }
        let destination = if decision.fallbacks.is_empty() {
            decision.endpoint.clone()
        } else {
            failures::join_endpoints(
                std::iter::once(decision.endpoint.as_str())
                    .chain(decision.fallbacks.iter().map(|(a, _)| a.as_str())),
            )
        };
        if !self.name_destination(worker, &destination) {
            return self.reply(&GatewayError::unavailable(
                "routing_failed",
                "the gateway could not name the chosen endpoint",
            ));
        }
        if worker.config.upstream_info_headers && !self.headers_released {
            self.set_header(POOL_HEADER, Some(&decision.pool));
            if let Some(target) = &decision.target_model {
                self.set_header(TARGET_MODEL_HEADER, Some(target));
            }
        }
        self.sent = Some(Sent {
            pool: decision.pool.clone(),
            listed: std::iter::once((decision.endpoint.clone(), decision.endpoint_hash))
                .chain(decision.fallbacks.iter().cloned())
                .collect(),
            report_key: decision.report_key,
            served_read: false,
        });
        let mut read = inflight_read.unwrap_or_else(|| {
            shared::read_inflight(inflight::shared_key(
                &worker.config.key_prefix,
                &decision.pool,
            ))
        });
        if shared::increment_inflight(&mut read, decision.endpoint_hash) {
            self.inflight = Some((read.key, decision.endpoint_hash));
        }
        if worker.config.restore_public_model_name {
            if let (Some(public), Some(served)) = (&decision.public_model, &decision.target_model) {
                if public != served {
                    self.response = if decision.stream {
                        ResponseMode::RestoreStream(SseRewriter::new(served, public))
                    } else {
                        ResponseMode::RestoreModel {
                            served: served.clone(),
                            public: public.clone(),
                        }
                    };
                }
            }
        }
        let mut metrics = worker.metrics.borrow_mut();
        let pool = decision.pool.as_str();
        metrics.increment(Stat::Requests {
            pool,
            model: &decision.model_label,
            target_model: &decision.target_label,
        });
        metrics.increment(Stat::Picks {
            pool,
            endpoint: &decision.endpoint,
        });
        if decision.fail_open {
            metrics.increment(Stat::PerPool {
                metric: stats::FAIL_OPEN_TOTAL,
                pool,
            });
        }
        if decision.prefix_owner {
            metrics.increment(Stat::PerPool {
                metric: stats::PREFIX_AFFINITY_TOTAL,
                pool,
            });
        }
        Action::Continue
    }

    /// Methods that carry no OpenAI body (`GET /v1/models`) are balanced by
    /// load alone; anything else needs a body naming the model.
    fn route_without_body(&mut self) -> Action {
        if self.headers.bodyless_method {
            self.route(None)
        } else {
            self.reply(&crate::request::BodyError::Empty.into())
        }
    }

    fn route_buffered_body(&mut self, size: usize) -> Action {
        if size == 0 {
            return self.route_without_body();
        }
        match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
            Ok(body) => {
                let body = body.unwrap_or_default();
                self.route(Some(&body))
            }
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("llmgw: reading the request body: {status:?}"),
                );
                self.reply(&GatewayError::bad_request(
                    "unreadable_body",
                    "the request body could not be read",
                ))
            }
        }
    }

    fn max_body_bytes(&self) -> u64 {
        self.worker
            .as_ref()
            .map_or(u64::MAX, |w| w.config.max_body_bytes)
    }
}

/// Queues one affinity-key report; a root context sends it on its next tick.
/// `pool_id` is the pool's `namespace/name`.
fn report_prefix(worker: &Worker, pool_id: &str, key: u64, endpoint: &str) {
    let Some(queue) = worker.report_queue else {
        return;
    };
    let (namespace, name) = crate::pool_id::split(pool_id);
    let seen = pool_state::PrefixSeen {
        pool: name.to_owned(),
        key,
        endpoint: endpoint.to_owned(),
        namespace: namespace.to_owned(),
    };
    if let Err(status) = hostcalls::enqueue_shared_queue(queue, Some(&seen.encode_to_vec())) {
        log(
            LogLevel::Warn,
            &format!("llmgw: queueing a prefix report: {status:?}"),
        );
    }
}

/// `upstream.address`: the host Envoy last sent this request to.
fn upstream_address() -> Option<String> {
    hostcalls::get_property(vec!["upstream", "address"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// `response.flags` (Envoy's response-flag bits, u64 little-endian).
fn response_flags() -> u64 {
    hostcalls::get_property(vec!["response", "flags"])
        .ok()
        .flatten()
        .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
        .map_or(0, u64::from_le_bytes)
}

impl GatewayHttp {
    /// Once response headers arrive: which listed endpoint serves. The
    /// in-flight count moves to it and the affinity key is reported for it.
    fn follow_served(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let Some(sent) = self.sent.as_mut() else {
            return;
        };
        if sent.served_read {
            return;
        }
        sent.served_read = true;
        // Without the property (a host that does not provide it) the pick
        // is taken to have served, unless the response flags say otherwise.
        let served = match upstream_address() {
            Some(host) => sent.listed.iter().position(|(a, _)| *a == host),
            None => Some(0),
        };
        let Some((address, hash)) = served.and_then(|i| sent.listed.get(i)).cloned() else {
            return;
        };
        let needs_check = served != Some(0) || sent.report_key.is_some();
        if needs_check && response_flags() & failures::UPSTREAM_FAILURE_FLAGS != 0 {
            // Envoy's own reply after the last attempt failed: nobody served.
            return;
        }
        if served != Some(0) {
            if let Some((key, first)) = self.inflight.take() {
                shared::release_inflight(&key, first);
                let mut read = shared::read_inflight(key);
                if shared::increment_inflight(&mut read, hash) {
                    self.inflight = Some((read.key, hash));
                }
            }
        }
        if let Some(key) = sent.report_key.take() {
            report_prefix(&worker, &sent.pool, key, &address);
        }
    }

    /// At the end of the request: marks the endpoints that refused or reset
    /// the connection as failed (for every worker), clears the one that
    /// served, counts what happened.
    fn record_outcome(&mut self) {
        let (Some(worker), Some(sent)) = (self.worker.clone(), self.sent.take()) else {
            return;
        };
        let host = upstream_address();
        let connection_failed = response_flags() & failures::UPSTREAM_FAILURE_FLAGS != 0;
        let listed: Vec<&str> = sent.listed.iter().map(|(a, _)| a.as_str()).collect();
        let feedback = failures::feedback(&listed, host.as_deref(), connection_failed);
        let failed: Vec<u64> = feedback
            .failed
            .iter()
            .filter_map(|&i| sent.listed.get(i).map(|(_, h)| *h))
            .collect();
        let served = feedback.served.and_then(|i| sent.listed.get(i));
        let key = failures::shared_key(&worker.config.key_prefix, &sent.pool);
        let now = now_nanos() / 1_000_000;
        let known_failed = !failed.is_empty()
            || served.is_some_and(|(_, hash)| {
                shared::read(&key)
                    .map(FailureTable::from_bytes)
                    .is_some_and(|t| t.failed_at(*hash).is_some())
            });
        if known_failed {
            shared::update(&key, |current| {
                let mut table = FailureTable::from_bytes(current.unwrap_or_default().to_vec());
                let mut changed = false;
                for &hash in &failed {
                    table.mark(hash, now);
                    changed = true;
                }
                if let Some((_, hash)) = served {
                    changed |= table.clear(*hash);
                }
                changed.then(|| table.into_bytes())
            });
        }
        let mut metrics = worker.metrics.borrow_mut();
        for &i in &feedback.failed {
            if let Some((address, _)) = sent.listed.get(i) {
                metrics.increment(Stat::PerEndpoint {
                    metric: stats::ENDPOINT_FAILURES_TOTAL,
                    pool: &sent.pool,
                    endpoint: address,
                });
            }
        }
        if let Some((address, _)) = served {
            metrics.increment(Stat::PerEndpoint {
                metric: stats::SERVED_TOTAL,
                pool: &sent.pool,
                endpoint: address,
            });
            if feedback.retried {
                metrics.increment(Stat::PerPool {
                    metric: stats::FALLBACK_SERVED_TOTAL,
                    pool: &sent.pool,
                });
            }
        }
    }

    fn release_inflight(&mut self) {
        if let Some((key, endpoint_hash)) = self.inflight.take() {
            shared::release_inflight(&key, endpoint_hash);
        }
    }
}

impl Context for GatewayHttp {
    fn on_done(&mut self) -> bool {
        self.record_outcome();
        self.release_inflight();
        true
    }
}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // One host call for the whole map instead of one per header read.
        let map = super::request_header_map();
        let pairs = parse_header_map(&map).unwrap_or_default();
        self.headers = RequestHeaders::read(pairs.iter().copied());
        let verdict = self.worker.as_ref().map(|w| {
            w.config
                .api_paths
                .check(&self.headers.method, &self.headers.path, |name| {
                    pairs
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                        .map(|(_, v)| *v)
                })
        });
        for name in &self.headers.control_headers {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
                log(
                    LogLevel::Warn,
                    &format!("llmgw: removing {name}: {status:?}"),
                );
            }
        }
        match verdict {
            Some(PathVerdict::Refuse { error, allow }) => {
                return self.reply_with(&error, allow.as_deref());
            }
            Some(PathVerdict::Open { strip_header }) => {
                if let Some(name) = strip_header {
                    if let Err(status) =
                        hostcalls::remove_map_value(MapType::HttpRequestHeaders, &name)
                    {
                        log(
                            LogLevel::Warn,
                            &format!("llmgw: removing {name}: {status:?}"),
                        );
                    }
                }
                // An opened (admin) path: balanced by load, body untouched.
                self.routed_at_headers = true;
                return self.route(None);
            }
            Some(PathVerdict::Inference) | None => {}
        }
        let limit = self.max_body_bytes();
        if self
            .headers
            .declared_length()
            .is_some_and(|len| len > limit)
        {
            return self.reply(&GatewayError::body_too_large(limit));
        }
        if end_of_stream {
            return self.route_without_body();
        }
        if self.body_routing() == BodyRouting::BufferFilter {
            // The buffer filter after this one holds the headers until the
            // body is complete; the body may change length on the way.
            if self.headers.content_length.is_some() {
                if let Err(status) =
                    hostcalls::remove_map_value(MapType::HttpRequestHeaders, "content-length")
                {
                    log(
                        LogLevel::Warn,
                        &format!("llmgw: removing content-length: {status:?}"),
                    );
                }
            }
            self.headers_released = true;
            return Action::Continue;
        }
        // Hold the headers until the body decides (needs
        // `allow_on_headers_stop_iteration: true` in the filter config).
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Pause;
        }
        if self.routed_at_headers {
            // Held for the first state: the body waits with the headers.
            return if self.holding.is_some() {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        self.last_body_size = body_size;
        if body_size as u64 > self.max_body_bytes() {
            return self.reply(&GatewayError::body_too_large(self.max_body_bytes()));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.route_buffered_body(body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.replied {
            return Action::Pause;
        }
        if self.routed_at_headers {
            // Held for the first state: the body waits with the headers.
            return if self.holding.is_some() {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        self.route_buffered_body(self.last_body_size)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.follow_served();
        if let ResponseMode::RestoreStream(_) = self.response {
            let content_type =
                header_value(MapType::HttpResponseHeaders, "content-type").unwrap_or_default();
            if end_of_stream || !content_type.contains("text/event-stream") {
                self.response = ResponseMode::PassThrough;
            } else {
                let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, "content-length");
            }
        }
        if let ResponseMode::RestoreModel { .. } = self.response {
            let content_type =
                header_value(MapType::HttpResponseHeaders, "content-type").unwrap_or_default();
            if end_of_stream || !content_type.contains("application/json") {
                self.response = ResponseMode::PassThrough;
            } else {
                // The body may change length.
                let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, "content-length");
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let ResponseMode::RestoreStream(rewriter) = &mut self.response {
            let chunk = match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
                Ok(chunk) => chunk.unwrap_or_default(),
                Err(status) => {
                    log(
                        LogLevel::Warn,
                        &format!("llmgw: reading a streamed response: {status:?}"),
                    );
                    return Action::Continue;
                }
            };
            let out = rewriter.push(&chunk, end_of_stream);
            if out != chunk {
                if let Err(status) =
                    hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out)
                {
                    log(
                        LogLevel::Warn,
                        &format!("llmgw: restoring the model name in a stream: {status:?}"),
                    );
                }
            }
            return Action::Continue;
        }
        let ResponseMode::RestoreModel { served, public } = &self.response else {
            // Streaming and everything else: straight through, unbuffered.
            return Action::Continue;
        };
        if body_size > MAX_RESPONSE_REWRITE_BYTES {
            self.response = ResponseMode::PassThrough;
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if let Ok(Some(body)) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
            if let Some(span) = find_response_model(&body, served) {
                let restored = rewrite_model(&body, &span, public);
                if let Err(status) =
                    hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &restored)
                {
                    log(
                        LogLevel::Warn,
                        &format!("llmgw: restoring the model name: {status:?}"),
                    );
                }
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.follow_served();
        self.record_outcome();
        self.release_inflight();
    }
}

/// A header's value, read as bytes: the SDK's string getter unwraps the UTF-8
/// conversion and would trap the VM on a client's non-UTF-8 value. Invalid
/// bytes become U+FFFD, so such a value matches no objective name or number.
fn header_value(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(map, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

impl GatewayHttp {
    /// Routes a request that waited for the first pool state; runs with this
    /// context made effective by the root context.
    fn release_hold(&mut self) {
        let Some(body_size) = self.holding.take() else {
            return;
        };
        if self.replied {
            return;
        }
        let action = match body_size {
            Some(size) => self.route_buffered_body(size),
            None => self.route(None),
        };
        if action == Action::Continue {
            if let Err(status) = hostcalls::resume_http_request() {
                log(
                    LogLevel::Warn,
                    &format!("llmgw: resuming a held request: {status:?}"),
                );
            }
        }
    }
}

/// Releases the worker's held requests once state has arrived or the
/// initial wait is over: each is routed (or answered) with its own context
/// made effective, then the root context is made effective again.
pub(crate) fn release_held(worker: &Worker, now: u64, root_context_id: u32) {
    if worker.held.borrow().is_empty() {
        return;
    }
    if worker.current_state(now).is_none() && worker.may_hold(now) {
        return;
    }
    let held = std::mem::take(&mut *worker.held.borrow_mut());
    for Held { context_id, http } in held {
        if hostcalls::set_effective_context(context_id).is_err() {
            continue; // the request is gone
        }
        match http.try_borrow_mut() {
            Ok(mut http) => http.release_hold(),
            Err(_) => log(
                LogLevel::Warn,
                &format!("llmgw: held request {context_id} is busy; not released"),
            ),
        }
    }
    let _ = hostcalls::set_effective_context(root_context_id);
}

/// The HTTP context Envoy drives: the request's state behind an `Rc`, so the
/// root context can route a held request when the first state arrives.
pub(crate) struct SharedHttp {
    context_id: u32,
    inner: Rc<RefCell<GatewayHttp>>,
}

impl SharedHttp {
    pub fn new(context_id: u32, http: GatewayHttp) -> Self {
        SharedHttp {
            context_id,
            inner: Rc::new(RefCell::new(http)),
        }
    }

    /// Runs one callback; a context already borrowed (only possible if the
    /// host re-entered it) lets the stream go on.
    fn with(&self, f: impl FnOnce(&mut GatewayHttp) -> Action) -> Action {
        let Ok(mut http) = self.inner.try_borrow_mut() else {
            return Action::Continue;
        };
        let action = f(&mut http);
        if let Some(body_size) = http.wants_hold.take() {
            if let Some(worker) = http.worker.clone() {
                http.holding = Some(body_size);
                worker.held.borrow_mut().push(Held {
                    context_id: self.context_id,
                    http: Rc::clone(&self.inner),
                });
            }
        }
        action
    }

    fn unhold(&self) {
        let worker = self.inner.try_borrow().ok().and_then(|h| h.worker.clone());
        if let Some(worker) = worker {
            if let Ok(mut held) = worker.held.try_borrow_mut() {
                held.retain(|h| h.context_id != self.context_id);
            }
        }
    }
}

impl Context for SharedHttp {
    fn on_done(&mut self) -> bool {
        self.unhold();
        self.inner
            .try_borrow_mut()
            .map_or(true, |mut http| http.on_done())
    }
}

impl HttpContext for SharedHttp {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|h| h.on_http_request_headers(num_headers, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(|h| h.on_http_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.with(|h| h.on_http_request_trailers(num_trailers))
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|h| h.on_http_response_headers(num_headers, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(|h| h.on_http_response_body(body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.unhold();
        if let Ok(mut http) = self.inner.try_borrow_mut() {
            http.on_log();
        }
    }
}
