//! One run: a workload offered to N simulated pods through R gateway replicas
//! under one policy, in virtual time.
//!
//! Each pod is a `vllm_sim::engine::Engine`. A pod steps whenever it has work:
//! `step(now)` returns the step's duration and the events that happen at its
//! end, which are applied when the clock reaches that time. Arrivals, scrapes
//! and snapshot deliveries interleave with the steps through one event queue.
//!
//! Where the policy runs follows [`Deployment`]: per gateway replica on the
//! collector's snapshots (ours, Envoy's balancers); as one shared picker (GIE's
//! EPP) that refreshes each pod's metrics every scrape interval at the pod's
//! own random phase and counts every replica's in-flight requests; or as the
//! oracle, on the engines themselves.

use std::sync::Arc;

use pool_state::Pool;
use vllm_sim::engine::{
    Engine, EngineConfig, EngineEvent, EngineRequest, FinishReason, StepResult,
};

use sidecar_collector::placement::{PlacementConfig, PrefixPlacements};

use crate::collector::{pod_addresses, pool_from_scrape, CollectorTiming};
use crate::des::EventQueue;
use crate::policy::{Deployment, PickInput, Policy, PolicyKind};
use crate::rng::Rng;
use crate::workload::Workload;

/// Everything about the modelled deployment except the workload and policy.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub pods: usize,
    /// Gateway replicas (Envoys); each has its own in-flight counts and policy state.
    pub replicas: usize,
    pub collector: CollectorTiming,
    /// Requests arriving before this time warm caches up and are not measured.
    pub warmup_s: f64,
    /// How long after the last arrival unfinished requests may still complete.
    pub drain_limit_s: f64,
    pub seed: u64,
    /// Template for every pod's engine; LoRA slots come from the workload.
    pub engine: EngineConfig,
}

impl SimConfig {
    pub fn new(pods: usize, seed: u64) -> Self {
        SimConfig {
            pods,
            replicas: 1,
            collector: CollectorTiming::default(),
            warmup_s: 10.0,
            drain_limit_s: 60.0,
            seed,
            engine: EngineConfig::default(),
        }
    }
}

/// What happened to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    pub arrival_s: f64,
    pub pod: u32,
    pub replica: u32,
    /// NaN until the first token.
    pub first_token_s: f64,
    pub last_token_s: f64,
    pub tokens: u32,
    /// NaN until finished.
    pub finished_s: f64,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub rejected: bool,
    pub preemptions: u32,
}

impl RequestRecord {
    fn new(arrival_s: f64) -> Self {
        RequestRecord {
            arrival_s,
            pod: u32::MAX,
            replica: u32::MAX,
            first_token_s: f64::NAN,
            last_token_s: f64::NAN,
            tokens: 0,
            finished_s: f64::NAN,
            prompt_tokens: 0,
            cached_tokens: 0,
            rejected: false,
            preemptions: 0,
        }
    }

    pub fn finished(&self) -> bool {
        !self.finished_s.is_nan()
    }

    /// Mean time between output tokens after the first (a.k.a. TPOT).
    pub fn mean_itl_s(&self) -> Option<f64> {
        (self.tokens >= 2 && !self.first_token_s.is_nan())
            .then(|| (self.last_token_s - self.first_token_s) / f64::from(self.tokens - 1))
    }
}

/// The raw outcome of a run; [`crate::metrics`] turns it into the reported numbers.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub policy: String,
    pub records: Vec<RequestRecord>,
    /// Measurement window: arrivals in [start, end) are measured, and output
    /// throughput counts tokens emitted inside it.
    pub window: (f64, f64),
    pub tokens_in_window: u64,
    /// Virtual time when the run stopped (all done, or the drain limit).
    pub end_s: f64,
    pub engine_steps: u64,
    /// Whole-run engine counters, summed over pods.
    pub preemptions: u64,
    pub prefix_queries_tokens: u64,
    pub prefix_hits_tokens: u64,
    /// Share of requests each pod received (to see herding).
    pub pod_request_counts: Vec<u32>,
}

enum Event {
    Arrival(usize),
    StepDone(usize),
    Scrape,
    /// The shared picker refreshes its view of one pod.
    PodScrape(usize),
    /// A replica's batch of affinity-key reports (sent on its root tick)
    /// reaches the collector.
    Report(usize),
    Deliver {
        replica: usize,
        version: u64,
        pool: Arc<Pool>,
        generated_s: f64,
    },
}

struct PodState {
    engine: Engine,
    busy: bool,
    pending: Vec<EngineEvent>,
}

struct ReplicaState {
    policy: Box<dyn Policy>,
    rng: Rng,
    inflight: Vec<u32>,
    pool: Arc<Pool>,
    version: u64,
    generated_s: f64,
    /// Reports queued since the replica's last root tick.
    queued_reports: Vec<(u64, usize)>,
    /// Phase of the replica's root tick within `report_tick_s`.
    tick_phase_s: f64,
}

/// Runs `workload` under `policy` and returns what every request experienced.
/// Deterministic: the same inputs give the same result, bit for bit.
pub fn run(
    config: &SimConfig,
    workload: &Workload,
    policy: &PolicyKind,
) -> anyhow::Result<RunResult> {
    anyhow::ensure!(config.pods > 0, "need at least one pod");
    anyhow::ensure!(config.replicas > 0, "need at least one gateway replica");
    anyhow::ensure!(
        config.collector.scrape_interval_s > 0.0,
        "scrape interval must be > 0"
    );
    let mut engine_config = config.engine.clone();
    if workload.max_loras > 0 {
        engine_config.max_loras = workload.max_loras as u32;
    }
    if let Some((profile, blocks)) = &workload.engine {
        engine_config.profile = profile.clone();
        engine_config.num_gpu_blocks = *blocks;
    }
    engine_config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid engine configuration: {e}"))?;
    let mut pods = Vec::with_capacity(config.pods);
    for i in 0..config.pods {
        let seed = Rng::derive(config.seed, &format!("pod/{i}")).next_u64();
        let mut engine = Engine::new(engine_config.clone(), seed);
        for adapter in &workload.adapters {
            engine
                .register_adapter(adapter)
                .map_err(|e| anyhow::anyhow!("registering adapter {adapter} on pod {i}: {e}"))?;
        }
        pods.push(PodState {
            engine,
            busy: false,
            pending: Vec::new(),
        });
    }

    let timing = &config.collector;
    // The collector's placement table, fed by the replicas' reports.
    let mut placements = PrefixPlacements::new(PlacementConfig::default());
    let addresses = pod_addresses(config.pods);
    let address_refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let initial = Arc::new(pool_from_scrape(
        &pods.iter().map(|p| p.engine.stats()).collect::<Vec<_>>(),
        &address_refs,
        0,
        &placements,
    ));
    let mut replicas: Vec<ReplicaState> = (0..config.replicas)
        .map(|r| {
            let mut rng = Rng::derive(config.seed, &format!("policy/{r}"));
            ReplicaState {
                policy: policy.instantiate(config.pods, &mut rng),
                rng,
                inflight: vec![0; config.pods],
                pool: initial.clone(),
                version: 0,
                generated_s: 0.0,
                queued_reports: Vec::new(),
                tick_phase_s: Rng::derive(config.seed, &format!("root-tick/{r}")).f64()
                    * timing.report_tick_s,
            }
        })
        .collect();
    let mut spread_rng = Rng::derive(config.seed, "replica-spread");
    let deployment = policy.deployment();
    // The one picker every replica asks (GIE as deployed), its view of the
    // pods and the in-flight counts of all replicas together.
    let mut shared_rng = Rng::derive(config.seed, "policy/shared");
    let mut shared: Option<Box<dyn Policy>> = (deployment == Deployment::SharedPicker)
        .then(|| policy.instantiate(config.pods, &mut shared_rng));
    let mut shared_view: Pool = (*initial).clone();
    shared_view.adapter_names = workload.adapters.clone();
    let mut shared_view = Arc::new(shared_view);
    let adapter_index: std::collections::HashMap<&str, u32> = workload
        .adapters
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i as u32))
        .collect();
    let mut total_inflight = vec![0u32; config.pods];

    let arrivals_end = workload.duration_s;
    let window = (config.warmup_s.min(arrivals_end * 0.5), arrivals_end);
    let stop_at = arrivals_end + config.drain_limit_s;
    let mut records: Vec<RequestRecord> = workload
        .requests
        .iter()
        .map(|r| RequestRecord::new(r.arrival_s))
        .collect();
    let mut queue: EventQueue<Event> = EventQueue::new();
    for (i, r) in workload.requests.iter().enumerate() {
        queue.schedule_at(r.arrival_s, Event::Arrival(i));
    }
    queue.schedule_at(timing.scrape_interval_s, Event::Scrape);
    if deployment == Deployment::SharedPicker {
        for i in 0..config.pods {
            let phase = Rng::derive(config.seed, &format!("picker-scrape/{i}")).f64()
                * timing.scrape_interval_s;
            queue.schedule_at(phase, Event::PodScrape(i));
        }
    }

    let mut outstanding = workload.requests.len();
    let mut next_version = 1u64;
    let mut tokens_in_window = 0u64;
    let mut engine_steps = 0u64;
    let mut pod_request_counts = vec![0u32; config.pods];
    let mut preempted_events = 0u64;

    while let Some((now, event)) = queue.pop() {
        if now > stop_at || outstanding == 0 {
            break;
        }
        match event {
            Event::Arrival(i) => {
                let spec = &workload.requests[i];
                let replica_idx = spread_rng.below(replicas.len());
                let replica = &mut replicas[replica_idx];
                let pod_idx = match (deployment, shared.as_mut()) {
                    (Deployment::Oracle, _) => {
                        let engines: Vec<&Engine> = pods.iter().map(|p| &p.engine).collect();
                        crate::oracle::pick(&engines, spec, &mut shared_rng)
                    }
                    (Deployment::SharedPicker, Some(picker)) => {
                        let input = PickInput {
                            pool: &shared_view,
                            snapshot_version: 0,
                            snapshot_age_ms: 0,
                            inflight: &total_inflight,
                            request: spec,
                            now_ms: (now * 1000.0) as u64,
                        };
                        picker.pick(&input, &mut shared_rng)?
                    }
                    _ => {
                        let age_ms = ((now - replica.generated_s) * 1000.0).round().max(0.0) as u32;
                        let input = PickInput {
                            pool: &replica.pool,
                            snapshot_version: replica.version,
                            snapshot_age_ms: age_ms,
                            inflight: &replica.inflight,
                            request: spec,
                            now_ms: (now * 1000.0) as u64,
                        };
                        replica.policy.pick(&input, &mut replica.rng)?
                    }
                };
                anyhow::ensure!(
                    pod_idx < config.pods,
                    "policy picked endpoint {pod_idx} of {}",
                    config.pods
                );
                if let Some(key) = replica.policy.take_prefix_report() {
                    if replica.queued_reports.is_empty() {
                        // The root context's next tick sends the batch.
                        let tick = timing.report_tick_s;
                        let ticks = ((now - replica.tick_phase_s) / tick).floor() + 1.0;
                        queue.schedule_at(
                            replica.tick_phase_s + ticks * tick + timing.report_delay_s,
                            Event::Report(replica_idx),
                        );
                    }
                    replica.queued_reports.push((key, pod_idx));
                }
                replica.inflight[pod_idx] += 1;
                total_inflight[pod_idx] += 1;
                pod_request_counts[pod_idx] += 1;
                let rec = &mut records[i];
                rec.pod = pod_idx as u32;
                rec.replica = replica_idx as u32;
                rec.prompt_tokens = spec.prompt_tokens.len() as u32;
                let request = EngineRequest {
                    id: i as u64,
                    prompt_tokens: spec.prompt_tokens.clone(),
                    max_tokens: spec.max_tokens,
                    adapter: spec.adapter.clone(),
                    ignore_eos: true,
                };
                let pod = &mut pods[pod_idx];
                if pod.engine.add_request(request).is_err() {
                    rec.rejected = true;
                    rec.finished_s = now;
                    replica.inflight[pod_idx] -= 1;
                    total_inflight[pod_idx] -= 1;
                    outstanding -= 1;
                } else if !pod.busy {
                    start_step(pod, pod_idx, now, &mut queue, &mut engine_steps);
                }
            }
            Event::StepDone(pod_idx) => {
                let pod = &mut pods[pod_idx];
                for ev in std::mem::take(&mut pod.pending) {
                    match ev {
                        EngineEvent::FirstToken { id, .. } => {
                            let rec = &mut records[id as usize];
                            rec.first_token_s = now;
                            rec.last_token_s = now;
                            rec.tokens = rec.tokens.max(1);
                        }
                        EngineEvent::Token { id, index, .. } => {
                            let rec = &mut records[id as usize];
                            if rec.first_token_s.is_nan() {
                                rec.first_token_s = now;
                            }
                            rec.last_token_s = now;
                            rec.tokens = rec.tokens.max(index + 1);
                            if now >= window.0 && now < window.1 {
                                tokens_in_window += 1;
                            }
                        }
                        EngineEvent::Finished {
                            id,
                            cached_tokens,
                            reason,
                            ..
                        } => {
                            let rec = &mut records[id as usize];
                            rec.finished_s = now;
                            rec.cached_tokens = cached_tokens;
                            // Every request runs to max_tokens (ignore_eos), so
                            // an abort means the engine gave up on it.
                            rec.rejected |= reason == FinishReason::Abort;
                            replicas[rec.replica as usize].inflight[pod_idx] -= 1;
                            total_inflight[pod_idx] -= 1;
                            outstanding -= 1;
                        }
                        EngineEvent::Preempted { id, .. } => {
                            records[id as usize].preemptions += 1;
                            preempted_events += 1;
                        }
                        // Followed by `Finished` (reason abort), which settles it.
                        EngineEvent::Rejected { id, .. } => records[id as usize].rejected = true,
                    }
                }
                start_step(pod, pod_idx, now, &mut queue, &mut engine_steps);
            }
            Event::Report(replica) => {
                let now_ms = (now * 1000.0) as u64;
                for (key, pod) in std::mem::take(&mut replicas[replica].queued_reports) {
                    placements.observe(key, &addresses[pod], &address_refs, now_ms);
                }
            }
            Event::Scrape => {
                let stats: Vec<_> = pods.iter().map(|p| p.engine.stats()).collect();
                let age_ms = (timing.publish_delay_s * 1000.0).round() as u32;
                placements.expire(&address_refs, (now * 1000.0) as u64);
                let pool = Arc::new(pool_from_scrape(&stats, &address_refs, age_ms, &placements));
                let version = next_version;
                next_version += 1;
                let generated_s = now + timing.publish_delay_s;
                for replica in 0..replicas.len() {
                    queue.schedule_at(
                        generated_s + timing.delivery_delay_s,
                        Event::Deliver {
                            replica,
                            version,
                            pool: pool.clone(),
                            generated_s,
                        },
                    );
                }
                queue.schedule_in(timing.scrape_interval_s, Event::Scrape);
            }
            Event::PodScrape(i) => {
                let stats = pods[i].engine.stats();
                let view = Arc::make_mut(&mut shared_view);
                if let Some(e) = view.endpoints.get_mut(i) {
                    e.waiting = stats.waiting;
                    e.running = stats.running;
                    e.kv_cache_usage = stats.kv_cache_usage as f32;
                    let ids = |names: &[String]| -> Vec<u32> {
                        names
                            .iter()
                            .filter_map(|n| adapter_index.get(n.as_str()).copied())
                            .collect()
                    };
                    e.running_adapters = ids(&stats.running_adapters);
                    e.waiting_adapters = ids(&stats.waiting_adapters);
                }
                queue.schedule_in(timing.scrape_interval_s, Event::PodScrape(i));
            }
            Event::Deliver {
                replica,
                version,
                pool,
                generated_s,
            } => {
                let r = &mut replicas[replica];
                if version > r.version {
                    r.pool = pool;
                    r.version = version;
                    r.generated_s = generated_s;
                }
            }
        }
    }

    let end_s = queue.now();
    let mut preemptions = 0;
    let mut prefix_queries_tokens = 0;
    let mut prefix_hits_tokens = 0;
    for p in &pods {
        let s = p.engine.stats();
        preemptions += s.preemptions;
        prefix_queries_tokens += s.prefix_queries_tokens;
        prefix_hits_tokens += s.prefix_hits_tokens;
    }
    debug_assert!(preemptions >= preempted_events || preempted_events == 0);
    Ok(RunResult {
        policy: policy.name(),
        records,
        window,
        tokens_in_window,
        end_s,
        engine_steps,
        preemptions,
        prefix_queries_tokens,
        prefix_hits_tokens,
        pod_request_counts,
    })
}

/// Starts the pod's next engine step if it has work; otherwise marks it idle.
fn start_step(
    pod: &mut PodState,
    idx: usize,
    now: f64,
    queue: &mut EventQueue<Event>,
    steps: &mut u64,
) {
    if !pod.engine.has_work() {
        pod.busy = false;
        return;
    }
    let StepResult { duration_s, events } = pod.engine.step(now);
    *steps += 1;
    if duration_s <= 0.0 && events.is_empty() {
        // Nothing schedulable right now; the next arrival wakes the pod.
        pod.busy = false;
        return;
    }
    pod.busy = true;
    pod.pending = events;
    queue.schedule_in(duration_s.max(1e-6), Event::StepDone(idx));
}
