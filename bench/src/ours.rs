//! "Ours": the gateway filter's own picking code (`gateway_filter::scheduling`),
//! linked natively — the same `Scheduler::pick` the wasm filter runs in Envoy.
//!
//! Like a filter worker, the picker decodes the pool snapshot into a `PoolView`
//! once per snapshot version and keeps it until the next one arrives, and reads
//! each request from the JSON body a client would send, with the filter's own
//! body scanner (`request::parse_request`), so the prefix hashes cover exactly
//! the bytes they cover in Envoy (a chat request's `messages` JSON, a
//! completion's `prompt`).

use gateway_filter::placement::PlacementMemory;
use gateway_filter::prefix::PrefixConfig;
use gateway_filter::request::parse_request;
use gateway_filter::scheduling::{RequestFeatures, Scheduler, SchedulerConfig, ScorerWeights};
use gateway_filter::state::PoolView;

use crate::policy::{PickInput, Policy};
use crate::rng::Rng;

/// The filter's plugin-configuration defaults that matter for picking.
pub const METRICS_STALE_MS: u32 = 200;

/// Scheduler configuration of a variant of ours (the plugin's `scorers` and
/// prefix settings), with a label for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct OursConfig {
    /// `None` = the filter's defaults, reported as plain "ours".
    pub variant: Option<String>,
    pub scheduler: SchedulerConfig,
}

impl Default for OursConfig {
    fn default() -> Self {
        OursConfig {
            variant: None,
            scheduler: default_scheduler_config(),
        }
    }
}

/// The scheduler configuration the filter uses when the plugin config is empty.
pub fn default_scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        metrics_stale_ms: METRICS_STALE_MS,
        ..SchedulerConfig::default()
    }
}

impl OursConfig {
    pub fn label(&self) -> String {
        match &self.variant {
            None => "ours".into(),
            Some(v) => format!("ours[{v}]"),
        }
    }

    /// Parses a variant spec such as `prefix=5,queue=1,depth=8,load_factor=2`:
    /// scorer weights by their plugin-config names plus prefix settings.
    pub fn parse_variant(spec: &str) -> Result<Self, String> {
        let mut scheduler = default_scheduler_config();
        let w: &mut ScorerWeights = &mut scheduler.weights;
        let p: &mut PrefixConfig = &mut scheduler.prefix;
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("variant part `{part}` is not key=value"))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("variant `{key}`: `{value}` is not a number"))?;
            match key.trim() {
                "queue" => w.queue = value,
                "kv_cache" => w.kv_cache = value,
                "lora" => w.lora = value,
                "prefix" => w.prefix = value,
                "inflight" => w.inflight = value,
                "depth" => p.affinity_depth_blocks = value as usize,
                "load_factor" => p.load_factor = value,
                "load_slack" => p.load_slack = value,
                "placement" => p.learned_placement = value != 0.0,
                other => {
                    return Err(format!(
                        "unknown variant key `{other}`; expected queue, kv_cache, lora, prefix, inflight, depth, load_factor, load_slack, placement"
                    ))
                }
            }
        }
        scheduler.weights.validate()?;
        scheduler.prefix.validate()?;
        Ok(OursConfig {
            variant: Some(spec.to_string()),
            scheduler,
        })
    }
}

/// One replica's instance of the filter's scheduler, with the worker's
/// placement memory (where it sent unplaced keys, what it reported).
pub struct OursPicker {
    scheduler: Scheduler,
    view: Option<(u64, PoolView)>,
    memory: PlacementMemory,
    report: Option<u64>,
}

impl OursPicker {
    pub fn new(config: OursConfig) -> Self {
        OursPicker {
            scheduler: Scheduler::new(config.scheduler),
            view: None,
            memory: PlacementMemory::new(),
            report: None,
        }
    }
}

impl Policy for OursPicker {
    fn pick(&mut self, input: &PickInput<'_>, rng: &mut Rng) -> anyhow::Result<usize> {
        if self.view.as_ref().map(|(v, _)| *v) != Some(input.snapshot_version) {
            self.view = Some((input.snapshot_version, PoolView::from_pool(input.pool)));
        }
        let (_, view) = self.view.as_ref().expect("view just set");
        let spec = input.request;
        let body = match &spec.messages {
            Some(list) => {
                let messages: Vec<serde_json::Value> = list
                    .iter()
                    .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                    .collect();
                serde_json::json!({
                    "model": spec.model(),
                    "messages": messages,
                    "max_tokens": spec.max_tokens,
                    "stream": true,
                })
            }
            None => serde_json::json!({
                "model": spec.model(),
                "prompt": spec.prompt,
                "max_tokens": spec.max_tokens,
                "stream": true,
            }),
        }
        .to_string();
        // The body is built by serde_json above, so a scanner error is a filter
        // bug: stop the run with it rather than route without the request's features.
        let parsed = parse_request(body.as_bytes())
            .map_err(|e| anyhow::anyhow!("the filter's body scanner rejected a valid body: {e}"))?;
        let mut features = RequestFeatures::new(
            view,
            &parsed.model,
            parsed.prompt(body.as_bytes()),
            &self.scheduler.config().prefix,
        );
        self.scheduler
            .follow_unplaced(view, &mut features, &mut self.memory, input.now_ms);
        let pick = self
            .scheduler
            .pick(
                view,
                &features,
                input.inflight,
                input.snapshot_age_ms,
                rng.next_u64(),
            )
            .map_err(|e| anyhow::anyhow!("the filter found no endpoint: {}", e.reason()))?;
        let endpoint_hash = view.endpoints[pick.endpoint].address_hash;
        self.report =
            self.scheduler
                .record_pick(view, &pick, endpoint_hash, &mut self.memory, input.now_ms);
        Ok(pick.endpoint)
    }

    fn take_prefix_report(&mut self) -> Option<u64> {
        self.report.take()
    }
}
