//! Serves simulated pods over HTTP: one engine, one listener and one stepping
//! task per pod. Handlers turn OpenAI requests into engine requests; the
//! stepping task advances the engine in (scaled) real time and hands each
//! event to the request that waits for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::PodConfig;
use crate::engine::hash::draw;
use crate::engine::tokenizer::{self, VOCAB_SIZE};
use crate::engine::{
    generated_token, Engine, EngineError, EngineEvent, EngineRequest, FinishReason,
};
use crate::faults::{Faults, FaultsPatch};
use crate::metrics::{self, Exposition, RequestMetrics};
use crate::openai::{self, ApiError, ChoiceResult, ChunkDelta, Endpoint, Prompt, Usage};

/// Header naming the pod that answered, on every response.
pub const POD_HEADER: &str = "x-sim-pod";

/// Largest request body accepted (the gateway allows 20 MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Llama-3's `<|begin_of_text|>`, prepended to text prompts as vLLM's tokenizer does.
const BOS_TOKEN: u32 = 128_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An engine event for one choice of one HTTP request.
#[derive(Debug)]
struct Delivery {
    choice: usize,
    event: EngineEvent,
}

struct Subscriber {
    tx: mpsc::UnboundedSender<Delivery>,
    choice: usize,
    /// Simulated arrival time.
    arrival: f64,
    last_token: Option<f64>,
}

/// Everything behind the pod's lock: the engine and who waits for what.
struct Core {
    engine: Engine,
    subscribers: HashMap<u64, Subscriber>,
    metrics: RequestMetrics,
    lora_paths: HashMap<String, String>,
    /// Simulated time when `time_scale` is 0 (steps run back to back).
    virtual_now: f64,
}

/// Shared state of one pod.
pub struct PodState {
    config: PodConfig,
    core: Mutex<Core>,
    faults: Mutex<Faults>,
    wake: Notify,
    next_id: AtomicU64,
    fault_draws: AtomicU64,
    started: Instant,
    created_unix: u64,
    stop: watch::Sender<bool>,
    crashed: AtomicBool,
    /// Wall-clock microseconds of simulated steps, and of simulated time the
    /// loop gave up because it fell too far behind: their ratio says whether
    /// this process keeps up with the simulated GPU.
    step_wall_us: AtomicU64,
    lost_wall_us: AtomicU64,
}

impl PodState {
    fn new(config: PodConfig) -> Result<Self, String> {
        config.engine.validate()?;
        let mut engine = Engine::new(config.engine.clone(), config.seed);
        let mut lora_paths = HashMap::new();
        for m in &config.lora_modules {
            engine
                .register_adapter(&m.name)
                .map_err(|e| format!("adapter {:?}: {e}", m.name))?;
            lora_paths.insert(m.name.clone(), m.path.clone());
        }
        let (stop, _) = watch::channel(false);
        Ok(PodState {
            faults: Mutex::new(config.faults.clone()),
            core: Mutex::new(Core {
                engine,
                subscribers: HashMap::new(),
                metrics: RequestMetrics::default(),
                lora_paths,
                virtual_now: 0.0,
            }),
            config,
            wake: Notify::new(),
            next_id: AtomicU64::new(0),
            fault_draws: AtomicU64::new(0),
            started: Instant::now(),
            created_unix: unix_now() as u64,
            stop,
            crashed: AtomicBool::new(false),
            step_wall_us: AtomicU64::new(0),
            lost_wall_us: AtomicU64::new(0),
        })
    }

    fn sim_now(&self, core: &Core) -> f64 {
        if self.config.time_scale > 0.0 {
            self.started.elapsed().as_secs_f64() / self.config.time_scale
        } else {
            core.virtual_now
        }
    }

    fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Queues engine requests and subscribes to their events. On error nothing
    /// stays queued.
    fn submit(
        self: &Arc<Self>,
        requests: Vec<EngineRequest>,
    ) -> Result<(mpsc::UnboundedReceiver<Delivery>, RequestGuard), EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut guard = RequestGuard {
            pod: Arc::clone(self),
            ids: Vec::with_capacity(requests.len()),
        };
        let mut core = lock(&self.core);
        let arrival = self.sim_now(&core);
        for (choice, req) in requests.into_iter().enumerate() {
            let id = req.id;
            core.engine.add_request(req)?;
            guard.ids.push(id);
            core.subscribers.insert(
                id,
                Subscriber {
                    tx: tx.clone(),
                    choice,
                    arrival,
                    last_token: None,
                },
            );
        }
        drop(core);
        self.wake.notify_one();
        Ok((rx, guard))
    }

    /// Hands a step's events to their requests and records latency metrics.
    fn deliver(&self, at: f64, events: Vec<EngineEvent>) {
        let mut guard = lock(&self.core);
        let core = &mut *guard;
        for event in events {
            let id = match &event {
                EngineEvent::FirstToken { id }
                | EngineEvent::Token { id, .. }
                | EngineEvent::Finished { id, .. }
                | EngineEvent::Preempted { id }
                | EngineEvent::Rejected { id, .. } => *id,
            };
            let subscriber = match &event {
                EngineEvent::Finished { reason, .. } => {
                    core.metrics.record_finished(*reason);
                    if let Some(s) = core.subscribers.remove(&id) {
                        core.metrics.e2e.observe(at - s.arrival);
                        let _ = s.tx.send(Delivery {
                            choice: s.choice,
                            event,
                        });
                    }
                    continue;
                }
                _ => core.subscribers.get_mut(&id),
            };
            let Some(s) = subscriber else { continue };
            match &event {
                EngineEvent::FirstToken { .. } => core.metrics.ttft.observe(at - s.arrival),
                EngineEvent::Token { .. } => {
                    if let Some(last) = s.last_token {
                        core.metrics.inter_token.observe(at - last);
                    }
                    s.last_token = Some(at);
                }
                _ => {}
            }
            let _ = s.tx.send(Delivery {
                choice: s.choice,
                event,
            });
        }
        if self.config.enable_lora {
            let stats = core.engine.stats();
            core.metrics.touch_lora_series(&stats, unix_now());
        }
    }

    /// Applies per-request faults: delay, hang, injected error.
    async fn request_faults(&self) -> Result<(), Response> {
        let faults = self.faults();
        if faults.extra_latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.extra_latency_ms)).await;
        }
        // Hang until the fault is lifted (or the client gives up).
        while self.faults().hang {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let faults = self.faults();
        if faults.error_rate > 0.0 {
            let n = self.fault_draws.fetch_add(1, Ordering::Relaxed);
            let x = draw(self.config.seed ^ 0xFA17, n, 0);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            if u < faults.error_rate {
                let code = faults.error_codes[(x % faults.error_codes.len() as u64) as usize];
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Err(ApiError::with_status(
                    status,
                    format!("Injected fault on pod {}", self.config.name),
                )
                .into_response());
            }
        }
        Ok(())
    }

    /// The adapter a `model` field selects (`None` = base model).
    fn resolve_model(&self, model: &str) -> Result<Option<String>, ApiError> {
        if model == self.config.served_model_name {
            return Ok(None);
        }
        if lock(&self.core).engine.has_adapter(model) {
            return Ok(Some(model.to_string()));
        }
        Err(ApiError::unknown_model(model))
    }

    fn engine_error(&self, e: EngineError) -> ApiError {
        match e {
            EngineError::UnknownAdapter(m) => ApiError::unknown_model(&m),
            e => ApiError::bad_request(e.to_string()),
        }
    }

    /// `/v1/completions` and `/v1/chat/completions`.
    async fn handle_inference(self: Arc<Self>, endpoint: Endpoint, body: Bytes) -> Response {
        if let Err(resp) = self.request_faults().await {
            return resp;
        }
        match self.start_inference(endpoint, &body) {
            Ok(started) if started.stream => stream_response(started),
            Ok(started) => collect_response(started).await,
            Err(e) => e.into_response(),
        }
    }

    fn start_inference(
        self: &Arc<Self>,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Started, ApiError> {
        let req = openai::parse_request(endpoint, body)?;
        let adapter = self.resolve_model(&req.model)?;
        let max_model_len = self.config.engine.max_model_len;
        let mut prompts = Vec::with_capacity(req.prompts.len());
        for p in &req.prompts {
            let tokens = match p {
                Prompt::Text(s) => {
                    let mut t = vec![BOS_TOKEN];
                    t.extend(tokenizer::tokenize(s));
                    t
                }
                Prompt::Tokens(t) => {
                    if let Some(bad) = t.iter().find(|&&t| t >= VOCAB_SIZE) {
                        return Err(ApiError::bad_request(format!(
                            "Token id {bad} is out of vocabulary"
                        )));
                    }
                    t.clone()
                }
                Prompt::Chat(m) => tokenizer::tokenize(&tokenizer::render_chat(m)),
            };
            prompts.push(tokens);
        }
        let mut engine_requests = Vec::new();
        let mut natural = Vec::new();
        let mut usage = Usage::default();
        for tokens in &prompts {
            usage.prompt_tokens += tokens.len() as u64;
            let remaining = (max_model_len as usize).saturating_sub(tokens.len()).max(1) as u32;
            for _ in 0..req.n {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let (max_tokens, natural_end) = match (req.max_tokens, endpoint) {
                    (Some(m), _) => (m, false),
                    // OpenAI's (and vLLM's) completions default.
                    (None, Endpoint::Completions) => (16.min(remaining), false),
                    // Chat without a limit ends where the "model" would stop: a
                    // deterministic natural length of 16..=256 tokens.
                    (None, Endpoint::ChatCompletions) => {
                        let n = 16 + (draw(self.config.seed, id, 0xC4A7) % 241) as u32;
                        (n.min(remaining), n <= remaining)
                    }
                };
                natural.push(natural_end);
                engine_requests.push(EngineRequest {
                    id,
                    prompt_tokens: tokens.clone(),
                    max_tokens,
                    adapter: adapter.clone(),
                    ignore_eos: req.ignore_eos,
                });
            }
        }
        let (rx, guard) = self
            .submit(engine_requests)
            .map_err(|e| self.engine_error(e))?;
        let prefix = match endpoint {
            Endpoint::Completions => "cmpl",
            Endpoint::ChatCompletions => "chatcmpl",
        };
        let exchange = Exchange {
            endpoint,
            id: format!(
                "{prefix}-{:016x}{:016x}",
                draw(self.config.seed, guard.ids[0], 1),
                draw(self.config.seed, guard.ids[0], 2)
            ),
            created: unix_now() as u64,
            model: req.model.clone(),
            seed: self.config.seed,
            n: req.n as usize,
            natural,
            usage,
        };
        Ok(Started {
            exchange,
            stream: req.stream,
            include_usage: req.include_usage,
            rx,
            guard,
        })
    }
}

/// Aborts a request's engine work when its HTTP exchange ends early (client
/// disconnect drops the handler future or the response body).
struct RequestGuard {
    pod: Arc<PodState>,
    ids: Vec<u64>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut core = lock(&self.pod.core);
        for &id in &self.ids {
            core.engine.abort(id);
        }
        drop(core);
        self.pod.wake.notify_one();
    }
}

/// Facts of one HTTP inference exchange needed to write its answer.
struct Exchange {
    endpoint: Endpoint,
    id: String,
    created: u64,
    /// The model or adapter that serves it, as the client named it.
    model: String,
    seed: u64,
    /// Choices per prompt.
    n: usize,
    /// Per choice: its length is the "model's" natural end (finish "stop").
    natural: Vec<bool>,
    /// Prompt tokens so far; completion and cached tokens are added as choices finish.
    usage: Usage,
}

impl Exchange {
    fn finish_reason(&self, choice: usize, reason: FinishReason) -> &'static str {
        if reason == FinishReason::Length && self.natural[choice] {
            "stop"
        } else {
            reason.as_str()
        }
    }

    /// Accounts a finished choice in `usage` (cached tokens once per prompt).
    fn account(&mut self, choice: usize, completion_tokens: u32, cached_tokens: u32) {
        self.usage.completion_tokens += u64::from(completion_tokens);
        if choice.is_multiple_of(self.n) {
            self.usage.cached_tokens += u64::from(cached_tokens);
        }
    }
}

/// An accepted inference request whose engine work is under way.
struct Started {
    exchange: Exchange,
    stream: bool,
    include_usage: bool,
    rx: mpsc::UnboundedReceiver<Delivery>,
    guard: RequestGuard,
}

/// Waits for every choice and answers with one JSON body.
async fn collect_response(started: Started) -> Response {
    let Started {
        mut exchange,
        mut rx,
        guard,
        ..
    } = started;
    let choices = guard.ids.len();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); choices];
    let mut finish: Vec<&'static str> = vec!["abort"; choices];
    let mut rejected = None;
    let mut open = choices;
    while open > 0 {
        let Some(d) = rx.recv().await else { break };
        match d.event {
            EngineEvent::Token { id, index } => {
                tokens[d.choice].push(generated_token(exchange.seed, id, index))
            }
            EngineEvent::Finished {
                reason,
                completion_tokens,
                cached_tokens,
                ..
            } => {
                finish[d.choice] = exchange.finish_reason(d.choice, reason);
                exchange.account(d.choice, completion_tokens, cached_tokens);
                open -= 1;
            }
            EngineEvent::Rejected { reason, .. } => rejected = Some(reason),
            EngineEvent::FirstToken { .. } | EngineEvent::Preempted { .. } => {}
        }
    }
    drop(guard);
    if let Some(reason) = rejected {
        return ApiError::not_found(reason).into_response();
    }
    if open > 0 {
        return ApiError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "The pod stopped before the request finished.",
        )
        .into_response();
    }
    let results: Vec<ChoiceResult> = tokens
        .iter()
        .zip(finish)
        .map(|(t, finish_reason)| ChoiceResult {
            text: tokenizer::detokenize(t),
            finish_reason,
        })
        .collect();
    let ex = &exchange;
    axum::Json(openai::response_body(
        ex.endpoint,
        &ex.id,
        ex.created,
        &ex.model,
        &results,
        ex.usage,
    ))
    .into_response()
}

/// State of an SSE answer; dropping it (client gone) drops the guard, which
/// aborts the engine work.
struct SseStream {
    exchange: Exchange,
    include_usage: bool,
    rx: mpsc::UnboundedReceiver<Delivery>,
    _guard: RequestGuard,
    frames: std::collections::VecDeque<Bytes>,
    open: usize,
    ended: bool,
}

impl SseStream {
    fn push(&mut self, v: &Value) {
        self.frames.push_back(openai::sse_frame(v));
    }

    fn chunk(&mut self, choice: usize, delta: ChunkDelta<'_>) {
        let ex = &self.exchange;
        let v = openai::chunk_body(ex.endpoint, &ex.id, ex.created, &ex.model, choice, delta);
        self.push(&v);
    }

    fn on_delivery(&mut self, d: Delivery) {
        match d.event {
            EngineEvent::Token { id, index } => {
                let text = tokenizer::token_text(generated_token(self.exchange.seed, id, index));
                self.chunk(d.choice, ChunkDelta::Text(text));
            }
            EngineEvent::Finished {
                reason,
                completion_tokens,
                cached_tokens,
                ..
            } => {
                let finish = self.exchange.finish_reason(d.choice, reason);
                self.exchange
                    .account(d.choice, completion_tokens, cached_tokens);
                self.chunk(d.choice, ChunkDelta::Finish(finish));
                self.open -= 1;
                if self.open == 0 {
                    self.finish();
                }
            }
            EngineEvent::Rejected { reason, .. } => {
                self.push(&ApiError::not_found(reason).body());
            }
            EngineEvent::FirstToken { .. } | EngineEvent::Preempted { .. } => {}
        }
    }

    fn finish(&mut self) {
        if self.include_usage {
            let ex = &self.exchange;
            let v = openai::usage_chunk(ex.endpoint, &ex.id, ex.created, &ex.model, ex.usage);
            self.push(&v);
        }
        self.frames.push_back(Bytes::from_static(openai::SSE_DONE));
        self.ended = true;
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Some(f);
            }
            if self.ended {
                return None;
            }
            match self.rx.recv().await {
                Some(d) => self.on_delivery(d),
                None => {
                    let err = ApiError::with_status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The pod stopped before the request finished.",
                    );
                    self.push(&err.body());
                    self.frames.push_back(Bytes::from_static(openai::SSE_DONE));
                    self.ended = true;
                }
            }
        }
    }
}

fn stream_response(started: Started) -> Response {
    let Started {
        exchange,
        include_usage,
        rx,
        guard,
        ..
    } = started;
    let mut state = SseStream {
        include_usage,
        rx,
        open: guard.ids.len(),
        _guard: guard,
        frames: Default::default(),
        ended: false,
        exchange,
    };
    if state.exchange.endpoint == Endpoint::ChatCompletions {
        for choice in 0..state.open {
            state.chunk(choice, ChunkDelta::Role);
        }
    }
    let stream = futures::stream::unfold(state, |mut s| async move {
        s.next_frame()
            .await
            .map(|f| (Ok::<Bytes, Infallible>(f), s))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// How far (in wall-clock time) the engine loop may run behind and still keep
/// the simulated clock continuous. Timer wake-ups are late by up to a
/// millisecond or so; starting each step exactly where the previous one ended
/// keeps those delays from adding up. Beyond this window the process is
/// overloaded and the simulated time it cannot keep up with is given up
/// (counted in `lost_wall_s`).
const CATCH_UP_WALL_S: f64 = 0.025;

/// Steps the engine while it has work and is not paused, sleeping until each
/// step's end (times the time scale) and then delivering its events.
async fn engine_loop(pod: Arc<PodState>) {
    let mut stop = pod.stop.subscribe();
    let scale = pod.config.time_scale;
    // End of the previous step while the engine has stayed busy since.
    let mut prev_end: Option<f64> = None;
    loop {
        loop {
            if *stop.borrow() {
                return;
            }
            let ready = !pod.faults().pause_engine && lock(&pod.core).engine.has_work();
            if ready {
                break;
            }
            prev_end = None;
            tokio::select! {
                _ = pod.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        let (end, duration, events) = {
            let mut core = lock(&pod.core);
            let now = pod.sim_now(&core);
            let start = match prev_end {
                Some(p) if scale > 0.0 => {
                    let floor = now - CATCH_UP_WALL_S / scale;
                    if p >= floor {
                        p
                    } else {
                        pod.lost_wall_us
                            .fetch_add(((floor - p) * scale * 1e6) as u64, Ordering::Relaxed);
                        floor
                    }
                }
                _ => now,
            };
            let result = core.engine.step(start);
            let end = start + result.duration_s;
            if scale <= 0.0 {
                core.virtual_now = end;
            }
            (end, result.duration_s, result.events)
        };
        if scale > 0.0 {
            let deadline = pod.started + Duration::from_secs_f64(end * scale);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = stop.changed() => return,
            }
            pod.step_wall_us
                .fetch_add((duration * scale * 1e6) as u64, Ordering::Relaxed);
        } else {
            tokio::task::yield_now().await;
        }
        prev_end = Some(end);
        pod.deliver(end, events);
    }
}

type PodRef = State<Arc<PodState>>;

async fn completions(State(pod): PodRef, body: Bytes) -> Response {
    pod.handle_inference(Endpoint::Completions, body).await
}

async fn chat_completions(State(pod): PodRef, body: Bytes) -> Response {
    pod.handle_inference(Endpoint::ChatCompletions, body).await
}

async fn models(State(pod): PodRef) -> Response {
    let core = lock(&pod.core);
    let c = &pod.config;
    let created = pod.created_unix;
    let mut data = vec![json!({
        "id": c.served_model_name, "object": "model", "created": created, "owned_by": "vllm",
        "root": c.model, "parent": null, "max_model_len": c.engine.max_model_len,
        "permission": [],
    })];
    for name in core.engine.stats().registered_adapters {
        let root = core
            .lora_paths
            .get(&name)
            .cloned()
            .unwrap_or_else(|| name.clone());
        data.push(json!({
            "id": name, "object": "model", "created": created, "owned_by": "vllm",
            "root": root, "parent": c.served_model_name, "max_model_len": null,
            "permission": [],
        }));
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::bad_request(format!("Invalid JSON body: {e}"))),
    }
}

fn lora_name(obj: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match obj.get("lora_name") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ApiError::bad_request("Field required: lora_name")),
    }
}

async fn load_lora(State(pod): PodRef, body: Bytes) -> Response {
    let result = (|| -> Result<String, ApiError> {
        let obj = json_object(&body)?;
        let name = lora_name(&obj)?;
        let path = match obj.get("lora_path") {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            _ => return Err(ApiError::bad_request("Field required: lora_path")),
        };
        if !pod.config.enable_lora {
            return Err(ApiError::bad_request(
                "LoRA is not enabled on this pod (start it with --enable-lora or --lora-modules).",
            ));
        }
        if name == pod.config.served_model_name {
            return Err(ApiError::bad_request(
                "An adapter may not have the base model's name.",
            ));
        }
        let mut core = lock(&pod.core);
        core.engine
            .register_adapter(&name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        core.lora_paths.insert(name.clone(), path);
        Ok(name)
    })();
    match result {
        Ok(name) => (
            StatusCode::OK,
            format!("Success: LoRA adapter '{name}' added successfully."),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn unload_lora(State(pod): PodRef, body: Bytes) -> Response {
    let result = (|| -> Result<String, ApiError> {
        let obj = json_object(&body)?;
        let name = lora_name(&obj)?;
        let mut core = lock(&pod.core);
        core.engine.unregister_adapter(&name).map_err(|_| {
            ApiError::not_found(format!("The lora adapter '{name}' cannot be found."))
        })?;
        core.lora_paths.remove(&name);
        Ok(name)
    })();
    pod.wake.notify_one();
    match result {
        Ok(name) => (
            StatusCode::OK,
            format!("Success: LoRA adapter '{name}' removed successfully."),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn health(State(pod): PodRef) -> StatusCode {
    if pod.faults().health_fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn metrics_page(State(pod): PodRef) -> Response {
    let faults = pod.faults();
    if faults.metrics_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.metrics_delay_ms)).await;
    }
    if pod.faults().metrics_fail {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected /metrics failure
",
        )
            .into_response();
    }
    let mut guard = lock(&pod.core);
    let core = &mut *guard;
    let stats = core.engine.stats();
    if pod.config.enable_lora {
        core.metrics.touch_lora_series(&stats, unix_now());
    }
    let view = Exposition {
        model_name: &pod.config.served_model_name,
        legacy_kv_metric: pod.config.legacy_kv_metric,
        lora_enabled: pod.config.enable_lora,
        enable_prefix_caching: pod.config.engine.enable_prefix_caching,
    };
    let text = metrics::render(&view, &stats, &core.metrics);
    drop(guard);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn admin_state(State(pod): PodRef) -> Response {
    let core = lock(&pod.core);
    let stats = core.engine.stats();
    let sim_time = pod.sim_now(&core);
    drop(core);
    let mut v = serde_json::to_value(&stats).unwrap_or_else(|_| json!({}));
    if let Value::Object(o) = &mut v {
        o.insert("pod".into(), json!(pod.config.name));
        o.insert("model".into(), json!(pod.config.served_model_name));
        o.insert("profile".into(), json!(pod.config.engine.profile.name));
        o.insert("time_scale".into(), json!(pod.config.time_scale));
        o.insert("sim_time_s".into(), json!(sim_time));
        o.insert("faults".into(), json!(pod.faults()));
        o.insert(
            "step_wall_s".into(),
            json!(pod.step_wall_us.load(Ordering::Relaxed) as f64 / 1e6),
        );
        o.insert(
            "lost_wall_s".into(),
            json!(pod.lost_wall_us.load(Ordering::Relaxed) as f64 / 1e6),
        );
    }
    axum::Json(v).into_response()
}

async fn get_faults(State(pod): PodRef) -> Response {
    axum::Json(pod.faults()).into_response()
}

async fn set_faults(State(pod): PodRef, body: Bytes) -> Response {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(format!("Invalid faults: {e}")).into_response(),
    };
    let result = patch.apply(&mut lock(&pod.faults));
    pod.wake.notify_one();
    match result {
        Ok(()) => axum::Json(pod.faults()).into_response(),
        Err(e) => ApiError::bad_request(e).into_response(),
    }
}

async fn crash(State(pod): PodRef) -> Response {
    tracing::warn!(pod = %pod.config.name, "crash requested: closing listener and connections");
    pod.crashed.store(true, Ordering::SeqCst);
    let pod2 = Arc::clone(&pod);
    tokio::spawn(async move {
        // Let this answer reach the client first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        pod2.stop.send_replace(true);
    });
    axum::Json(json!({"crashed": pod.config.name})).into_response()
}

async fn not_found() -> Response {
    ApiError::not_found("Not Found").into_response()
}

/// The pod's routes, every response tagged with [`POD_HEADER`].
fn router(pod: Arc<PodState>) -> Router {
    let name = HeaderValue::from_bytes(pod.config.name.as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-pod-name"));
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/load_lora_adapter", post(load_lora))
        .route("/v1/unload_lora_adapter", post(unload_lora))
        .route("/health", get(health))
        .route("/metrics", get(metrics_page))
        .route("/admin/state", get(admin_state))
        .route("/admin/faults", get(get_faults).post(set_faults))
        .route("/admin/crash", post(crash))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(move |mut res: Response| {
            let name = name.clone();
            async move {
                res.headers_mut().insert(POD_HEADER, name);
                res
            }
        }))
        .with_state(pod)
}

/// A pod that is serving.
pub struct PodHandle {
    state: Arc<PodState>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl PodHandle {
    /// The bound address (useful when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.state.config.name
    }

    pub fn config(&self) -> &PodConfig {
        &self.state.config
    }

    /// Whether `/admin/crash` (or [`crash`](Self::crash)) stopped the pod.
    pub fn crashed(&self) -> bool {
        self.state.crashed.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection at once.
    pub fn crash(&self) {
        self.state.crashed.store(true, Ordering::SeqCst);
        self.state.stop.send_replace(true);
    }

    /// The startup line: "pod NAME listening on ADDR model M adapters [...]".
    pub fn describe(&self) -> String {
        let c = &self.state.config;
        let adapters: Vec<&str> = c.lora_modules.iter().map(|m| m.name.as_str()).collect();
        format!(
            "pod {} listening on {} model {} adapters [{}]",
            c.name,
            self.addr,
            c.served_model_name,
            adapters.join(", ")
        )
    }

    /// Stops the pod and waits for its tasks.
    pub async fn shutdown(self) {
        self.state.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds a pod's listener; the error names the pod and the address.
pub async fn bind_pod(config: &PodConfig) -> Result<TcpListener, String> {
    TcpListener::bind(config.listen).await.map_err(|e| {
        format!(
            "pod {}: cannot listen on {}: {e}",
            config.name, config.listen
        )
    })
}

/// Starts a pod on an already bound listener.
pub fn start_pod_on(config: PodConfig, listener: TcpListener) -> Result<PodHandle, String> {
    let name = config.name.clone();
    let addr = listener
        .local_addr()
        .map_err(|e| format!("pod {name}: {e}"))?;
    let state = Arc::new(PodState::new(config).map_err(|e| format!("pod {name}: {e}"))?);
    let engine = tokio::spawn(engine_loop(Arc::clone(&state)));
    let accept = tokio::spawn(accept_loop(Arc::clone(&state), listener));
    Ok(PodHandle {
        state,
        addr,
        tasks: vec![engine, accept],
    })
}

/// Binds and starts one pod.
pub async fn start_pod(config: PodConfig) -> Result<PodHandle, String> {
    let listener = bind_pod(&config).await?;
    start_pod_on(config, listener)
}

/// Binds every pod first (so a busy port fails before anything serves), then
/// starts them all.
pub async fn start_pods(configs: Vec<PodConfig>) -> Result<Vec<PodHandle>, String> {
    let mut listeners = Vec::with_capacity(configs.len());
    for c in &configs {
        listeners.push(bind_pod(c).await?);
    }
    configs
        .into_iter()
        .zip(listeners)
        .map(|(c, l)| start_pod_on(c, l))
        .collect()
}

async fn accept_loop(pod: Arc<PodState>, listener: TcpListener) {
    let app = router(Arc::clone(&pod));
    let mut stop = pod.stop.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(pod = %pod.config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = wait_stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut conn_stop = pod.stop.subscribe();
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection closes the socket: a crash or shutdown.
                _ = wait_stopped(&mut conn_stop) => {}
            }
        });
    }
    drop(listener);
}

/// Resolves once the pod is told to stop (crash or shutdown).
async fn wait_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
