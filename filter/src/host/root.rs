//! The root context of one Envoy worker: configuration, the lease that elects
//! one worker per Envoy to hold the collector's Watch stream, and that stream.
//!
//! Every worker ticks; the one holding `<prefix>.lease` keeps a gRPC Watch
//! stream open to `collector_cluster` and copies each snapshot into shared
//! data. A holder that dies or stalls stops renewing, and another worker takes
//! the lease within `LEASE_TTL_MS`. Every worker also drains the shared queue
//! `<prefix>.prefix_reports` on its tick, where all workers' HTTP contexts put
//! the affinity keys the collector should learn, and sends what it took in one
//! `ReportPrefixes` call.

use std::rc::Rc;
use std::time::Duration;

use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::config::PluginConfig;
use crate::lease::{Lease, LeaseDecision};
use crate::state::SnapshotMeta;
use crate::stats::{self, Stat};

use super::http::{release_held, GatewayHttp, SharedHttp};
use super::worker::Worker;
use super::{log, now_ms, now_nanos, shared};

const TICK_MS: u64 = 100;
/// The first tick comes this soon after `on_configure`, so a worker takes the
/// lease and opens the stream quickly without doing so inside `on_configure`
/// (Envoy also configures a root context on the main thread, which never
/// ticks: a lease taken there was never renewed, and workers waited for it to
/// expire before any state flowed).
const FIRST_TICK_MS: u64 = 10;
const LEASE_TTL_MS: u64 = 800;
const BACKOFF_MIN_MS: u64 = 100;
/// Short: reconnecting to a local collector is cheap, and a restarted
/// collector should be picked up within a few hundred ms.
const BACKOFF_MAX_MS: u64 = 250;
/// Reports sent per tick at most (the rest wait for the next tick).
const MAX_REPORTS_PER_TICK: usize = 4_096;
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct GatewayRoot {
    context_id: u32,
    worker: Option<Rc<Worker>>,
    /// Unique among this Envoy's workers (a shared-data counter).
    holder_id: String,
    holding: bool,
    stream: Option<u32>,
    /// Host ms of the last stream message (or of opening it).
    last_message_ms: u64,
    next_connect_ms: u64,
    backoff_ms: u64,
    /// The outstanding ReportPrefixes call and how many keys it carries.
    report_call: Option<(u32, usize)>,
    /// Whether the tick period is already the steady `TICK_MS`.
    steady_ticks: bool,
}

impl GatewayRoot {
    pub fn new(context_id: u32) -> Self {
        GatewayRoot {
            context_id,
            worker: None,
            holder_id: String::new(),
            holding: false,
            stream: None,
            last_message_ms: 0,
            next_connect_ms: 0,
            backoff_ms: BACKOFF_MIN_MS,
            report_call: None,
            steady_ticks: false,
        }
    }

    fn config(&self) -> Option<&PluginConfig> {
        self.worker.as_deref().map(|w| &w.config)
    }

    fn count(&self, name: &'static str) {
        if let Some(worker) = &self.worker {
            worker.metrics.borrow_mut().increment(Stat::Plain(name));
        }
    }

    /// A process-unique id for this worker's root context.
    fn allocate_holder_id(config: &PluginConfig, context_id: u32) -> String {
        let key = format!("{}.workers", config.key_prefix);
        let mut assigned = None;
        shared::update(&key, |current| {
            let n = current
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                .wrapping_add(1);
            assigned = Some(n);
            Some(n.to_string().into_bytes())
        });
        match assigned {
            Some(n) => format!("w{n}"),
            // Shared data unavailable: fall back to something that is very
            // likely unique (time and context id).
            None => format!("t{}c{context_id}", now_nanos()),
        }
    }

    fn renew_lease(&mut self, now: u64) {
        let Some(config) = self.config() else { return };
        let key = config.lease_key();
        let me = self.holder_id.clone();
        let mut decision = LeaseDecision::Other;
        let written = shared::update(&key, |current| {
            decision = Lease::decide(current, &me, now);
            match decision {
                LeaseDecision::Other => None,
                LeaseDecision::Renew | LeaseDecision::Take => Some(
                    Lease {
                        holder: me.clone(),
                        expires_ms: now.saturating_add(LEASE_TTL_MS),
                    }
                    .encode(),
                ),
            }
        });
        let holding = written && decision != LeaseDecision::Other;
        if holding && !self.holding {
            log(
                LogLevel::Info,
                &format!("llmgw: worker {} holds the collector lease", self.holder_id),
            );
        }
        if !holding && self.holding {
            log(
                LogLevel::Info,
                &format!("llmgw: worker {} lost the collector lease", self.holder_id),
            );
            self.close_stream();
        }
        self.holding = holding;
    }

    fn close_stream(&mut self) {
        if let Some(token) = self.stream.take() {
            let _ = hostcalls::cancel_grpc_stream(token);
        }
    }

    fn connect(&mut self, now: u64) {
        let Some(config) = self.config() else { return };
        let cluster = config.collector_cluster.clone();
        match hostcalls::open_grpc_stream(
            &cluster,
            pool_state::SERVICE_NAME,
            pool_state::WATCH_METHOD,
            vec![],
        ) {
            Ok(token) => {
                let request = pool_state::WatchRequest::default().encode_to_vec();
                // Half-close: Watch is server-streaming, and a tonic server
                // only starts the handler once the request stream has ended.
                match hostcalls::send_grpc_stream_message(token, Some(&request), true) {
                    Ok(()) => {
                        self.stream = Some(token);
                        self.last_message_ms = now;
                    }
                    Err(status) => {
                        let _ = hostcalls::cancel_grpc_stream(token);
                        self.schedule_reconnect(now, &format!("sending WatchRequest: {status:?}"));
                    }
                }
            }
            Err(status) => {
                self.schedule_reconnect(
                    now,
                    &format!("opening Watch on cluster {cluster}: {status:?}"),
                );
            }
        }
    }

    /// Sends the queued prefix reports in one ReportPrefixes call (one call
    /// in flight at a time; reports wait in the queue meanwhile).
    fn send_prefix_reports(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let Some(queue) = worker.report_queue else {
            return;
        };
        if self.report_call.is_some() {
            return;
        }
        let mut report = pool_state::PrefixReport::default();
        while report.seen.len() < MAX_REPORTS_PER_TICK {
            match hostcalls::dequeue_shared_queue(queue) {
                Ok(Some(bytes)) => match pool_state::PrefixSeen::decode(bytes.as_slice()) {
                    Ok(seen) => report.seen.push(seen),
                    Err(e) => log(
                        LogLevel::Warn,
                        &format!("llmgw: dropping an undecodable prefix report: {e}"),
                    ),
                },
                Ok(None) => break,
                Err(status) => {
                    log(
                        LogLevel::Warn,
                        &format!("llmgw: reading the prefix report queue: {status:?}"),
                    );
                    break;
                }
            }
        }
        if report.seen.is_empty() {
            return;
        }
        let keys = report.seen.len();
        match hostcalls::dispatch_grpc_call(
            &worker.config.collector_cluster,
            pool_state::SERVICE_NAME,
            pool_state::REPORT_PREFIXES_METHOD,
            vec![],
            Some(&report.encode_to_vec()),
            REPORT_TIMEOUT,
        ) {
            Ok(token) => self.report_call = Some((token, keys)),
            Err(status) => {
                // Dropped, not retried: each worker reports the keys again
                // within a second while they stay unplaced.
                self.count(stats::PREFIX_REPORT_ERRORS_TOTAL);
                log(
                    LogLevel::Warn,
                    &format!("llmgw: sending {keys} prefix reports: {status:?}"),
                );
            }
        }
    }

    fn schedule_reconnect(&mut self, now: u64, why: &str) {
        self.next_connect_ms = now.saturating_add(self.backoff_ms);
        log(
            LogLevel::Warn,
            &format!(
                "llmgw: collector stream: {why}; retrying in {} ms",
                self.backoff_ms
            ),
        );
        self.backoff_ms = self.backoff_ms.saturating_mul(2).min(BACKOFF_MAX_MS);
    }

    fn publish_snapshot(&mut self, bytes: &[u8]) {
        let Some(config) = self.config() else { return };
        // Never hand workers bytes they cannot decode.
        if let Err(e) = pool_state::Snapshot::decode(bytes) {
            log(
                LogLevel::Warn,
                &format!("llmgw: dropping undecodable snapshot: {e}"),
            );
            return;
        }
        let (snapshot_key, meta_key) = (config.snapshot_key(), config.snapshot_meta_key());
        if !shared::write(&snapshot_key, bytes) {
            return;
        }
        // The version counts publications in this Envoy, so a restarted
        // collector (whose own version restarts at 1) still moves it on.
        let now = now_ms();
        shared::update(&meta_key, |current| {
            let previous = current
                .and_then(SnapshotMeta::parse)
                .map_or(0, |m| m.version);
            Some(
                SnapshotMeta {
                    version: previous.wrapping_add(1),
                    received_ms: now,
                }
                .encode()
                .into_bytes(),
            )
        });
        self.count(stats::SNAPSHOTS_RECEIVED_TOTAL);
        // This worker's held requests go at once; other workers' on their tick.
        if let Some(worker) = &self.worker {
            release_held(worker, now, self.context_id);
        }
    }
}

/// The message of the gRPC status the host just reported (empty if none).
fn grpc_status_detail() -> String {
    hostcalls::get_grpc_status()
        .ok()
        .and_then(|(_, message)| message)
        .unwrap_or_default()
}

impl Context for GatewayRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        let Some((token, keys)) = self.report_call else {
            return;
        };
        if token != token_id {
            return;
        }
        self.report_call = None;
        if status_code == 0 {
            if let Some(worker) = &self.worker {
                worker.metrics.borrow_mut().add(
                    Stat::Plain(stats::PREFIX_REPORTS_TOTAL),
                    i64::try_from(keys).unwrap_or(i64::MAX),
                );
            }
        } else {
            self.count(stats::PREFIX_REPORT_ERRORS_TOTAL);
            log(
                LogLevel::Warn,
                &format!(
                    "llmgw: ReportPrefixes failed with gRPC status {status_code} {}",
                    grpc_status_detail()
                ),
            );
        }
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        if self.stream != Some(token_id) {
            return;
        }
        self.last_message_ms = now_ms();
        self.backoff_ms = BACKOFF_MIN_MS;
        match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, message_size) {
            Ok(Some(bytes)) => self.publish_snapshot(&bytes),
            Ok(None) => self.publish_snapshot(&[]),
            Err(status) => log(
                LogLevel::Warn,
                &format!("llmgw: reading snapshot: {status:?}"),
            ),
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        if self.stream != Some(token_id) {
            return;
        }
        self.stream = None;
        self.count(stats::COLLECTOR_STREAM_CLOSED_TOTAL);
        self.schedule_reconnect(
            now_ms(),
            &format!(
                "closed with gRPC status {status_code} {}",
                grpc_status_detail()
            ),
        );
    }
}

impl RootContext for GatewayRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let config = match PluginConfig::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log(LogLevel::Error, &format!("llmgw: {e}"));
                return false;
            }
        };
        self.close_stream();
        self.holding = false;
        self.holder_id = Self::allocate_holder_id(&config, self.context_id);
        let report_queue = match hostcalls::register_shared_queue(&config.prefix_reports_queue()) {
            Ok(id) => Some(id),
            Err(status) => {
                // Routing works without it; the collector just learns nothing.
                log(
                    LogLevel::Warn,
                    &format!("llmgw: cannot register the prefix report queue: {status:?}"),
                );
                None
            }
        };
        self.worker = Some(Rc::new(Worker::new(config, report_queue)));
        self.steady_ticks = false;
        if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(FIRST_TICK_MS)) {
            log(
                LogLevel::Error,
                &format!("llmgw: cannot set tick period: {status:?}"),
            );
            return false;
        }
        log(
            LogLevel::Info,
            &format!("llmgw: configured, worker {}", self.holder_id),
        );
        // No lease here: the first tick (FIRST_TICK_MS) takes it, on a
        // context that keeps ticking and renewing it.
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        if !self.steady_ticks {
            self.steady_ticks = true;
            if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(TICK_MS)) {
                log(
                    LogLevel::Warn,
                    &format!("llmgw: cannot set tick period: {status:?}"),
                );
            }
        }
        self.renew_lease(now);
        if let Some(worker) = &self.worker {
            release_held(worker, now, self.context_id);
        }
        // Every worker drains the report queue, so it never waits on (or grows
        // without) a lease holder; one tick's reports still go in one call.
        self.send_prefix_reports();
        if !self.holding {
            return;
        }
        let silence_limit = self
            .config()
            .map_or(3_000, |c| u64::from(c.state_timeout_ms));
        if self.stream.is_some() && now.saturating_sub(self.last_message_ms) > silence_limit {
            self.close_stream();
            self.schedule_reconnect(now, "no snapshot within state_timeout_ms");
        }
        if self.stream.is_none() && now >= self.next_connect_ms {
            self.connect(now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None` (the SDK would panic): an unconfigured filter answers 503.
        Some(Box::new(SharedHttp::new(
            context_id,
            GatewayHttp::new(context_id, self.worker.clone()),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
