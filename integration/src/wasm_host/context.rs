//! Per-VM state the host functions work on: which context is current, the
//! HTTP streams in flight, outstanding gRPC and HTTP callouts, the tick timer.
//! One `WorkerState` lives in each wasmtime `Store`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Memory, TypedFunc};

use super::headers::HeaderMap;
use super::state::HostState;

/// A reply the filter produced itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// -1 when the reply is plain HTTP.
    pub grpc_status: i32,
}

impl LocalReply {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The state Envoy keeps for one HTTP stream through the filter.
#[derive(Debug, Default)]
pub(crate) struct HttpContextState {
    pub request_headers: HeaderMap,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_trailers: HeaderMap,
    /// Request body data the filter has buffered (the current chunk when it
    /// continued after the previous one).
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub properties: HashMap<Vec<String>, Vec<u8>>,
    pub local_reply: Option<LocalReply>,
    /// `proxy_continue_stream` was called for the request / response.
    pub resume_request: bool,
    pub resume_response: bool,
    /// `proxy_close_stream` was called: Envoy resets the stream.
    pub reset: bool,
    /// The request headers went on upstream; writing them now is refused.
    pub request_headers_released: bool,
}

/// What a gRPC token a VM holds refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcToken {
    /// A stream, by its id in the fake collector.
    Stream { context: u32, stream_id: u64 },
    /// A unary call; answered once, then forgotten.
    Unary { context: u32 },
}

impl GrpcToken {
    pub fn context(self) -> u32 {
        match self {
            GrpcToken::Stream { context, .. } | GrpcToken::Unary { context } => context,
        }
    }
}

/// Data a callout callback may read back through host calls while it runs.
#[derive(Debug, Default)]
pub(crate) struct CalloutData {
    pub status: u32,
    pub message: String,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
    pub trailers: HeaderMap,
    /// `GrpcReceiveBuffer` (true) or `HttpCallResponseBody` (false).
    pub is_grpc: bool,
}

/// The store data of one worker VM.
pub(crate) struct WorkerState {
    pub host: Arc<Mutex<HostState>>,
    pub worker_id: u32,
    pub root_context_id: u32,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    pub effective_context: u32,
    pub http: HashMap<u32, HttpContextState>,
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    pub grpc_tokens: HashMap<u32, GrpcToken>,
    pub http_call_tokens: HashMap<u32, u32>,
    pub next_token: u32,
    pub callout: Option<CalloutData>,
    /// Contexts that called `proxy_done` after `proxy_on_done` returned false.
    pub done_contexts: Vec<u32>,
    pub memory: Option<Memory>,
    pub malloc: Option<TypedFunc<i32, i32>>,
}

impl WorkerState {
    pub fn new(
        host: Arc<Mutex<HostState>>,
        worker_id: u32,
        vm_configuration: Vec<u8>,
        plugin_configuration: Vec<u8>,
    ) -> Self {
        Self {
            host,
            worker_id,
            root_context_id: 1,
            vm_configuration,
            plugin_configuration,
            effective_context: 1,
            http: HashMap::new(),
            tick_period_ms: 0,
            next_tick_ns: None,
            grpc_tokens: HashMap::new(),
            http_call_tokens: HashMap::new(),
            next_token: 1,
            callout: None,
            done_contexts: Vec::new(),
            memory: None,
            malloc: None,
        }
    }

    /// The shared host state. A poisoned lock means a host bug already
    /// panicked; carrying on with its data is the most useful thing to do.
    pub fn host(&self) -> MutexGuard<'_, HostState> {
        self.host.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_token(&mut self) -> u32 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// The HTTP context the VM is currently acting for, if it is one.
    pub fn current_http(&mut self) -> Option<&mut HttpContextState> {
        self.http.get_mut(&self.effective_context)
    }
}
