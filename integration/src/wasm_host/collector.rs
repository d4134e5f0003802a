//! The fake sidecar-collector behind the collector cluster: it records every
//! gRPC stream and unary call the VMs open, and lets a test push
//! `pool_state::Snapshot` messages into the open `Watch` streams or close them.

use prost::Message;

use super::abi::grpc_status;
use super::headers::HeaderMap;
use super::state::{Event, HostState};
use super::Host;

/// Default name of the collector cluster (the filter's `collector_cluster` default).
pub const DEFAULT_COLLECTOR_CLUSTER: &str = "llmgw_collector";

/// Why a stream is no longer open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    Open,
    /// The collector (or the test) closed it with this gRPC status.
    ClosedByServer {
        status: u32,
    },
    /// The VM called `proxy_grpc_close`.
    ClosedByClient,
    /// The VM called `proxy_grpc_cancel`.
    CancelledByClient,
    /// The worker that opened it was killed.
    WorkerGone,
}

/// One gRPC stream a VM opened, as the collector saw it.
#[derive(Debug, Clone)]
pub struct GrpcStream {
    pub id: u64,
    pub worker: u32,
    pub(crate) token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: HeaderMap,
    /// Messages the VM sent on the stream (e.g. the encoded `WatchRequest`).
    pub sent: Vec<Vec<u8>>,
    /// The VM ended its side with `end_stream`.
    pub half_closed: bool,
    /// Messages the collector delivered into it.
    pub delivered: usize,
    pub state: StreamState,
    /// Host time the stream was opened, ns since the host's epoch start.
    pub opened_at_ns: u64,
}

impl GrpcStream {
    pub fn is_open(&self) -> bool {
        self.state == StreamState::Open
    }

    /// Whether this is the pool-state `Watch` call.
    pub fn is_watch(&self) -> bool {
        self.service == pool_state::SERVICE_NAME && self.method == pool_state::WATCH_METHOD
    }
}

/// One unary gRPC call a VM made.
#[derive(Debug, Clone)]
pub struct UnaryCall {
    pub worker: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct CollectorState {
    pub cluster: String,
    pub available: bool,
    pub streams: Vec<GrpcStream>,
    pub unary_calls: Vec<UnaryCall>,
    /// What a unary `Get` answers.
    pub current: Option<Vec<u8>>,
}

impl Default for CollectorState {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_COLLECTOR_CLUSTER.to_string(),
            available: true,
            streams: Vec::new(),
            unary_calls: Vec::new(),
            current: None,
        }
    }
}

/// Where a new stream or call goes, as Envoy would route it.
pub(crate) struct OpenRequest {
    pub worker: u32,
    pub token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: HeaderMap,
}

impl HostState {
    /// Registers a stream; when nothing serves it, its close is queued at once
    /// (Envoy reports connect failures asynchronously, as `Unavailable`).
    pub(crate) fn open_grpc_stream(&mut self, request: OpenRequest) -> u64 {
        let id = self.collector.streams.len() as u64 + 1;
        let reachable = request.cluster == self.collector.cluster && self.collector.available;
        let (worker, token) = (request.worker, request.token);
        self.collector.streams.push(GrpcStream {
            id,
            worker,
            token,
            cluster: request.cluster,
            service: request.service,
            method: request.method,
            initial_metadata: request.initial_metadata,
            sent: Vec::new(),
            half_closed: false,
            delivered: 0,
            state: StreamState::Open,
            opened_at_ns: self.now_ns,
        });
        if !reachable {
            self.close_stream(id, grpc_status::UNAVAILABLE, "upstream connect error");
        }
        id
    }

    /// Queues the answer to a unary call: the current snapshot for `Get`, an
    /// acknowledgement for `ReportPrefixes` (the test reads what was reported
    /// from [`Collector::prefix_reports`]).
    pub(crate) fn start_unary_call(&mut self, request: OpenRequest, message: Vec<u8>) {
        let reachable = request.cluster == self.collector.cluster && self.collector.available;
        let report = (request.service == pool_state::SERVICE_NAME
            && request.method == pool_state::REPORT_PREFIXES_METHOD)
            .then(|| pool_state::PrefixReport::decode(message.as_slice()));
        let event = if !reachable {
            Event::GrpcClose {
                token: request.token,
                status: grpc_status::UNAVAILABLE,
                message: "upstream connect error".into(),
            }
        } else if let Some(report) = &report {
            match report {
                Ok(report) => Event::GrpcMessage {
                    token: request.token,
                    message: pool_state::PrefixReportAck {
                        accepted: report.seen.len() as u32,
                    }
                    .encode_to_vec(),
                },
                Err(e) => Event::GrpcClose {
                    token: request.token,
                    status: 3,
                    message: format!("undecodable PrefixReport: {e}"),
                },
            }
        } else if request.service != pool_state::SERVICE_NAME
            || request.method != pool_state::GET_METHOD
        {
            Event::GrpcClose {
                token: request.token,
                status: 12,
                message: format!("unknown method {}/{}", request.service, request.method),
            }
        } else {
            match &self.collector.current {
                Some(snapshot) => Event::GrpcMessage {
                    token: request.token,
                    message: snapshot.clone(),
                },
                None => Event::GrpcClose {
                    token: request.token,
                    status: grpc_status::UNAVAILABLE,
                    message: "no snapshot yet".into(),
                },
            }
        };
        self.push_event(request.worker, event);
        self.collector.unary_calls.push(UnaryCall {
            worker: request.worker,
            cluster: request.cluster,
            service: request.service,
            method: request.method,
            message,
        });
    }

    pub(crate) fn close_stream(&mut self, id: u64, status: u32, message: &str) -> bool {
        let Some(stream) = self.collector.streams.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        if !stream.is_open() {
            return false;
        }
        stream.state = StreamState::ClosedByServer { status };
        let (worker, token) = (stream.worker, stream.token);
        self.push_event(
            worker,
            Event::GrpcClose {
                token,
                status,
                message: message.to_string(),
            },
        );
        true
    }

    pub(crate) fn stream_mut(&mut self, id: u64) -> Option<&mut GrpcStream> {
        self.collector.streams.iter_mut().find(|s| s.id == id)
    }

    /// A worker died: its streams end, its undelivered events vanish.
    pub(crate) fn forget_worker(&mut self, worker: u32) {
        for stream in &mut self.collector.streams {
            if stream.worker == worker && stream.is_open() {
                stream.state = StreamState::WorkerGone;
            }
        }
        self.pending.remove(&worker);
    }
}

/// A test's handle on the fake collector. Every action is delivered to the
/// VMs before it returns, as Envoy would on the workers' next loop turn.
pub struct Collector<'h> {
    pub(crate) host: &'h Host,
}

impl Collector<'_> {
    /// Sends `snapshot` into every open `Watch` stream and makes it the answer
    /// to unary `Get` calls. Returns how many streams received it.
    pub fn push(&self, snapshot: &pool_state::Snapshot) -> anyhow::Result<usize> {
        self.push_bytes(&snapshot.encode_to_vec())
    }

    /// Like [`Collector::push`] with raw bytes, so tests can send garbage.
    /// Delivery takes 1 ms of host time, as a hop through Envoy does: the
    /// filter reads `snapshot.meta` at most once per host millisecond, so a
    /// request in the same millisecond as the one before may not see it yet.
    pub fn push_bytes(&self, message: &[u8]) -> anyhow::Result<usize> {
        self.host.advance(std::time::Duration::from_millis(1))?;
        let delivered = {
            let mut state = self.host.lock_state();
            state.collector.current = Some(message.to_vec());
            let mut targets = Vec::new();
            for stream in &mut state.collector.streams {
                if stream.is_open() && stream.is_watch() {
                    stream.delivered += 1;
                    targets.push((stream.worker, stream.token));
                }
            }
            for (worker, token) in &targets {
                state.push_event(
                    *worker,
                    Event::GrpcMessage {
                        token: *token,
                        message: message.to_vec(),
                    },
                );
            }
            targets.len()
        };
        self.host.pump()?;
        Ok(delivered)
    }

    /// Closes one stream from the server side with a gRPC status.
    pub fn close_stream(&self, id: u64, status: u32) -> anyhow::Result<()> {
        let closed = self
            .host
            .lock_state()
            .close_stream(id, status, "closed by test");
        anyhow::ensure!(closed, "stream {id} is not open");
        self.host.pump()
    }

    /// Closes every open stream (a collector restart). Returns how many.
    pub fn close_all(&self, status: u32) -> anyhow::Result<usize> {
        let closed = {
            let mut state = self.host.lock_state();
            let open: Vec<u64> = state
                .collector
                .streams
                .iter()
                .filter(|s| s.is_open())
                .map(|s| s.id)
                .collect();
            for id in &open {
                state.close_stream(*id, status, "collector went away");
            }
            open.len()
        };
        self.host.pump()?;
        Ok(closed)
    }

    /// While unavailable, new streams and calls fail with `Unavailable`.
    pub fn set_available(&self, available: bool) {
        self.host.lock_state().collector.available = available;
    }

    /// The cluster name the collector answers on (default `llmgw_collector`).
    pub fn set_cluster(&self, cluster: &str) {
        self.host.lock_state().collector.cluster = cluster.to_string();
    }

    /// Every stream ever opened, oldest first.
    pub fn streams(&self) -> Vec<GrpcStream> {
        self.host.lock_state().collector.streams.clone()
    }

    /// The streams open right now.
    pub fn open_streams(&self) -> Vec<GrpcStream> {
        self.streams().into_iter().filter(|s| s.is_open()).collect()
    }

    pub fn unary_calls(&self) -> Vec<UnaryCall> {
        self.host.lock_state().collector.unary_calls.clone()
    }

    /// Every affinity key the VMs reported (ReportPrefixes calls), in order.
    pub fn prefix_reports(&self) -> Vec<pool_state::PrefixSeen> {
        self.unary_calls()
            .iter()
            .filter(|c| c.method == pool_state::REPORT_PREFIXES_METHOD)
            .filter_map(|c| pool_state::PrefixReport::decode(c.message.as_slice()).ok())
            .flat_map(|r| r.seen)
            .collect()
    }
}
