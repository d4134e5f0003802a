//! What one Envoy worker's root context shares with its HTTP contexts: the
//! configuration, the decoded pool state (refreshed once per version), stats,
//! the placement memory and the queue that carries prefix reports to the
//! root contexts (every worker drains it on its tick).

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use crate::config::PluginConfig;
use crate::placement::PlacementMemory;
use crate::scheduling::Scheduler;
use crate::state::{SnapshotMeta, StateView};

use super::http::GatewayHttp;
use super::metrics::Metrics;
use super::{log, now_ms, shared};

/// A request held while this Envoy has never received pool state; the root
/// context releases it (`http::release_held`) once state arrives or the
/// configured wait is over.
pub(crate) struct Held {
    pub context_id: u32,
    pub http: Rc<RefCell<GatewayHttp>>,
}

pub(crate) struct Worker {
    pub config: PluginConfig,
    pub scheduler: Scheduler,
    pub metrics: RefCell<Metrics>,
    pub placement: RefCell<PlacementMemory>,
    /// The Envoy-wide shared queue of encoded `PrefixSeen` reports (`None`
    /// when it could not be registered); every worker's root context drains
    /// it on its tick.
    pub report_queue: Option<u32>,
    state: RefCell<CachedState>,
    /// Host ms when this worker was configured (starts the initial wait).
    pub started_ms: u64,
    /// Requests waiting for the first pool state.
    pub held: RefCell<Vec<Held>>,
}

#[derive(Default)]
struct CachedState {
    meta: Option<SnapshotMeta>,
    view: Option<Rc<StateView>>,
    /// Version whose bytes failed to decode: not retried on every request.
    failed_version: Option<u64>,
    /// Host ms of the last `snapshot.meta` read.
    checked_ms: Option<u64>,
}

/// The pool state as of now.
pub(crate) struct CurrentState {
    pub view: Rc<StateView>,
    pub age_ms: u32,
}

impl Worker {
    pub fn new(config: PluginConfig, report_queue: Option<u32>) -> Self {
        Worker {
            scheduler: Scheduler::new(config.scheduler_config()),
            metrics: RefCell::new(Metrics::default()),
            placement: RefCell::new(PlacementMemory::new()),
            report_queue,
            state: RefCell::new(CachedState::default()),
            started_ms: now_ms(),
            held: RefCell::new(Vec::new()),
            config,
        }
    }

    /// Whether a request that finds no state at `now_ms` waits for the first
    /// one: no state was ever decoded here and the initial wait is not over.
    pub fn may_hold(&self, now_ms: u64) -> bool {
        let wait = u64::from(self.config.initial_state_wait_ms);
        wait > 0
            && now_ms < self.started_ms.saturating_add(wait)
            && self.state.borrow().view.is_none()
    }

    /// Reads `snapshot.meta` (one small shared-data read) at most once per
    /// host millisecond, and decodes `snapshot` only when the version moved.
    /// A busy worker thus sees a new snapshot up to 1 ms late (snapshots come
    /// every 25 ms or more) and saves a host call on most requests. `None`
    /// until a first snapshot has arrived in this Envoy.
    pub fn current_state(&self, now_ms: u64) -> Option<CurrentState> {
        let mut cache = self.state.borrow_mut();
        let checked_now = cache.checked_ms == Some(now_ms) && cache.view.is_some();
        cache.checked_ms = Some(now_ms);
        let latest = if checked_now {
            None
        } else {
            shared::read(&self.config.snapshot_meta_key())
                .and_then(|bytes| SnapshotMeta::parse(&bytes))
        };
        if let Some(latest) = latest {
            let known = cache.meta.map(|m| m.version) == Some(latest.version);
            if known {
                cache.meta = Some(latest);
            } else if cache.failed_version != Some(latest.version) {
                match shared::read(&self.config.snapshot_key())
                    .map(|b| StateView::decode(&b, latest.version))
                {
                    Some(Ok(view)) => {
                        cache.view = Some(Rc::new(view));
                        cache.meta = Some(latest);
                        cache.failed_version = None;
                    }
                    Some(Err(e)) => {
                        log(
                            LogLevel::Warn,
                            &format!("llmgw: snapshot v{}: {e}", latest.version),
                        );
                        cache.failed_version = Some(latest.version);
                    }
                    None => cache.failed_version = Some(latest.version),
                }
            }
        }
        let meta = cache.meta?;
        let view = cache.view.clone()?;
        Some(CurrentState {
            view,
            age_ms: meta.age_ms(now_ms),
        })
    }
}
