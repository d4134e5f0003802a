//! Picking one endpoint of a pool for one request, in GIE's vocabulary: a
//! pipeline of *filters* that narrow the candidates, weighted *scorers* that
//! rate each candidate in 0..1, and a max-score *picker* with a seeded random
//! tie-break.
//!
//! This is plain Rust: the filter calls [`Scheduler::pick`] per request and the
//! routing benchmark links the same code natively.

use serde::Deserialize;

use crate::placement::PlacementState;
use crate::prefix::{self, CandidateLoad, OwnerRule, PrefixConfig};
use crate::priority::SaturationThresholds;
use crate::state::{EndpointView, PoolView};

/// Weights of the scorers; 0 turns a scorer off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerWeights {
    /// Fewer waiting requests is better (GIE queue-scorer, default 2).
    pub queue: f64,
    /// Lower KV-cache use is better (GIE kv-cache-utilization-scorer, default 2).
    pub kv_cache: f64,
    /// Adapter resident 1.0 > free slot 0.8 > adapter waiting 0.6 > 0 (default 1).
    pub lora: f64,
    /// Owner of the request's prefix-affinity key (default 6). It exceeds the
    /// load scorers' combined weight (queue + kv + in-flight = 5) on purpose:
    /// their min-max normalisation turns one waiting request into a full
    /// point, which would otherwise hand a conversation to another pod at low
    /// load. When to give way is the bounded-load check's decision (an owner
    /// over its limit is no owner); measured in BENCHMARKS.md, routing quality.
    pub prefix: f64,
    /// Fewer requests this Envoy sent and not yet finished is better: keeps a
    /// burst between two scrapes from herding onto one pod (default 1).
    pub inflight: f64,
}

impl Default for ScorerWeights {
    fn default() -> Self {
        ScorerWeights {
            queue: 2.0,
            kv_cache: 2.0,
            lora: 1.0,
            prefix: 6.0,
            inflight: 1.0,
        }
    }
}

impl ScorerWeights {
    pub fn validate(&self) -> Result<(), String> {
        for (name, w) in [
            ("queue", self.queue),
            ("kv_cache", self.kv_cache),
            ("lora", self.lora),
            ("prefix", self.prefix),
            ("inflight", self.inflight),
        ] {
            if !w.is_finite() || !(0.0..=1000.0).contains(&w) {
                return Err(format!(
                    "scorers.{name} must be a number in 0..=1000, got {w}"
                ));
            }
        }
        Ok(())
    }
}

/// Everything the scheduler needs besides the request and the pool. The
/// default is the plugin configuration's default.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub weights: ScorerWeights,
    /// Endpoints whose metrics are older are filtered out (when fresher ones
    /// exist) and count as saturated.
    pub metrics_stale_ms: u32,
    pub saturation: SaturationThresholds,
    pub prefix: PrefixConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        crate::config::PluginConfig::default().scheduler_config()
    }
}

/// What the scheduler knows about a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFeatures {
    /// Interned id (in the pool) of the LoRA adapter the request targets;
    /// `None` for base models and adapters no pod has reported.
    pub adapter: Option<u32>,
    /// Chained 64-byte block hashes of the prompt's first
    /// `affinity_depth_blocks` blocks ([`prefix::block_hashes`]): all the
    /// affinity key needs, so a long prompt is not hashed past them.
    pub prefix_hashes: Vec<u64>,
    /// The prompt's affinity key ([`prefix::affinity_key`]); `None` for
    /// prompts shorter than one block.
    pub affinity_key: Option<u64>,
    /// Where this Envoy sent the key while the collector has not placed it,
    /// as an address hash ([`Scheduler::follow_unplaced`] sets it).
    pub sent_to: Option<u64>,
}

impl RequestFeatures {
    /// Features of a request for `target_model` whose prompt text (raw JSON of
    /// `prompt` or `messages`) is `prompt`.
    pub fn new(pool: &PoolView, target_model: &str, prompt: &[u8], config: &PrefixConfig) -> Self {
        let prefix_hashes = prefix::block_hashes(prompt, config.affinity_depth_blocks);
        RequestFeatures {
            adapter: pool.adapter_id(target_model),
            affinity_key: prefix::affinity_key(&prefix_hashes, config.affinity_depth_blocks),
            prefix_hashes,
            sent_to: None,
        }
    }
}

/// The chosen endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Index into `PoolView::endpoints`.
    pub endpoint: usize,
    /// Weighted score of the winner (0 for fail-open picks).
    pub score: f64,
    /// Whether the winner owns the request's prefix-affinity key.
    pub prefix_owner: bool,
    /// Set when the pool's collector learns prefix placements and the request
    /// has an affinity key: what the worker remembers and reports.
    pub learning: Option<PlacementLearning>,
    /// Candidates left after the filters.
    pub candidates: usize,
    /// False when no candidate had fresh metrics and scoring used stale ones.
    pub metrics_fresh: bool,
}

/// A request's part in learned prefix placement
/// ([`crate::placement::PlacementMemory::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementLearning {
    pub key: u64,
    /// The snapshot places the key.
    pub placed: bool,
}

/// Why no endpoint could be picked (the filter answers 503 with this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// The pool has no endpoints at all.
    EmptyPool,
    /// Endpoints exist but none is ready.
    NoneReady,
}

impl NoEndpoint {
    pub fn reason(&self) -> &'static str {
        match self {
            NoEndpoint::EmptyPool => "the pool has no endpoints",
            NoEndpoint::NoneReady => "no endpoint of the pool is ready",
        }
    }
}

/// Per-candidate facts gathered once and shared by the scorers.
struct Candidate<'a> {
    index: usize,
    endpoint: &'a EndpointView,
    inflight: u32,
    saturated: bool,
}

/// The picking pipeline. Cheap to build; holds only configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
}

const TIE_EPSILON: f64 = 1e-9;

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler { config }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Picks an endpoint from fresh-enough state.
    ///
    /// `inflight[i]` is the number of requests this Envoy sent to
    /// `pool.endpoints[i]` and not yet finished (missing entries count 0);
    /// `snapshot_age_ms` is how old the snapshot is now; `rand` breaks ties, so
    /// the same inputs always give the same pick.
    pub fn pick(
        &self,
        pool: &PoolView,
        request: &RequestFeatures,
        inflight: &[u32],
        snapshot_age_ms: u32,
        rand: u64,
    ) -> Result<Pick, NoEndpoint> {
        self.pick_excluding(pool, request, inflight, snapshot_age_ms, rand, &[])
    }

    /// [`Scheduler::pick`] among the endpoints whose address hash is not in
    /// `excluded` (known-failed endpoints, picks already made); `NoneReady`
    /// when that leaves none.
    pub fn pick_excluding(
        &self,
        pool: &PoolView,
        request: &RequestFeatures,
        inflight: &[u32],
        snapshot_age_ms: u32,
        rand: u64,
        excluded: &[u64],
    ) -> Result<Pick, NoEndpoint> {
        let stale_ms = self.config.metrics_stale_ms;
        let fresh = |e: &EndpointView| e.metrics_age_now_ms(snapshot_age_ms) <= stale_ms;

        // Filter: ready, not excluded.
        let mut candidates: Vec<Candidate> = pool
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ready && !excluded.contains(&e.address_hash))
            .map(|(index, endpoint)| Candidate {
                index,
                endpoint,
                inflight: inflight.get(index).copied().unwrap_or(0),
                saturated: false,
            })
            .collect();
        if candidates.is_empty() {
            return Err(if pool.endpoints.is_empty() && excluded.is_empty() {
                NoEndpoint::EmptyPool
            } else {
                NoEndpoint::NoneReady
            });
        }
        // Filter: fresh metrics, unless none is fresh (then score what we have).
        let metrics_fresh = candidates.iter().any(|c| fresh(c.endpoint));
        if metrics_fresh {
            candidates.retain(|c| fresh(c.endpoint));
        }
        // Saturation by the metrics at hand: when every candidate is stale,
        // staleness no longer tells them apart, so it is not held against any.
        let judged_stale_after = if metrics_fresh { stale_ms } else { u32::MAX };
        for c in &mut candidates {
            c.saturated = self.config.saturation.endpoint_saturation(
                c.endpoint,
                snapshot_age_ms,
                judged_stale_after,
            ) >= 1.0;
        }
        // Filter (LoRA affinity, as GIE's): pods with the adapter resident and
        // spare capacity; else pods that can load it without evicting; else all.
        // Saturated resident pods do not count, so a popular adapter spreads to
        // free slots instead of piling onto the one pod that has it.
        if let Some(adapter) = request.adapter {
            let resident = |c: &Candidate| c.endpoint.has_running_adapter(adapter) && !c.saturated;
            let capable = |c: &Candidate| lora_affinity(c.endpoint, adapter) >= 0.8;
            if candidates.iter().any(resident) {
                candidates.retain(resident);
            } else if candidates.iter().any(capable) {
                candidates.retain(capable);
            }
        }

        let mut scores = vec![0.0f64; candidates.len()];
        let w = &self.config.weights;
        if w.queue > 0.0 {
            add_min_max_scores(
                &mut scores,
                w.queue,
                candidates.iter().map(|c| c.endpoint.waiting),
            );
        }
        if w.kv_cache > 0.0 {
            for (s, c) in scores.iter_mut().zip(&candidates) {
                *s += w.kv_cache * (1.0 - f64::from(c.endpoint.kv_cache_usage));
            }
        }
        if w.lora > 0.0 {
            if let Some(adapter) = request.adapter {
                for (s, c) in scores.iter_mut().zip(&candidates) {
                    *s += w.lora * lora_affinity(c.endpoint, adapter);
                }
            }
        }
        if w.inflight > 0.0 {
            add_min_max_scores(
                &mut scores,
                w.inflight,
                candidates.iter().map(|c| c.inflight),
            );
        }
        let (owner, learning) = match request.affinity_key {
            Some(key) if w.prefix > 0.0 => self.prefix_owner(pool, request, key, &candidates),
            _ => (None, None),
        };
        if let Some(s) = owner.and_then(|i| scores.get_mut(i)) {
            *s += w.prefix;
        }

        let winner = pick_max(&scores, rand).unwrap_or(0);
        let chosen = candidates.get(winner).ok_or(NoEndpoint::NoneReady)?;
        Ok(Pick {
            endpoint: chosen.index,
            score: scores.get(winner).copied().unwrap_or(0.0),
            prefix_owner: owner == Some(winner),
            learning,
            candidates: candidates.len(),
            metrics_fresh,
        })
    }

    /// Whether learned prefix placement applies to `pool`: on in the config,
    /// and the pool's collector learns placements.
    fn learns_placements(&self, pool: &PoolView) -> bool {
        self.config.prefix.learned_placement && pool.learns_placements
    }

    /// Sets `request.sent_to` from `state` when the pick will use it: learned
    /// placement applies and the snapshot has not placed the request's key
    /// (so a placed group costs no lookup).
    pub fn follow_unplaced(
        &self,
        pool: &PoolView,
        request: &mut RequestFeatures,
        state: &mut dyn PlacementState,
        now_ms: u64,
    ) {
        request.sent_to = request
            .affinity_key
            .filter(|&key| self.learns_placements(pool) && pool.placed_endpoint(key).is_none())
            .and_then(|key| state.sent_to(&pool.id, key, now_ms));
    }

    /// Records `pick` (to the endpoint with `endpoint_hash`) in `state`; the
    /// request's affinity key when the collector should hear of it now.
    pub fn record_pick(
        &self,
        pool: &PoolView,
        pick: &Pick,
        endpoint_hash: u64,
        state: &mut dyn PlacementState,
        now_ms: u64,
    ) -> Option<u64> {
        pick.learning
            .filter(|l| state.record(&pool.id, l.key, endpoint_hash, l.placed, now_ms))
            .map(|l| l.key)
    }

    /// The candidate (index) owning the request's affinity `key`, and the
    /// request's part in learned placement when the pool's collector learns.
    fn prefix_owner(
        &self,
        pool: &PoolView,
        request: &RequestFeatures,
        key: u64,
        candidates: &[Candidate],
    ) -> (Option<usize>, Option<PlacementLearning>) {
        let learned = self.learns_placements(pool);
        let placed = learned.then(|| pool.placed_endpoint(key)).flatten();
        let (preferred, rule) = match placed {
            Some(e) => (
                candidates.iter().position(|c| c.index == e),
                OwnerRule::Rendezvous,
            ),
            None if learned => (
                request
                    .sent_to
                    .and_then(|h| candidates.iter().position(|c| c.endpoint.address_hash == h)),
                OwnerRule::Learning,
            ),
            None => (None, OwnerRule::Rendezvous),
        };
        let loads: Vec<CandidateLoad> = candidates
            .iter()
            .map(|c| CandidateLoad {
                endpoint_hash: c.endpoint.address_hash,
                queue: f64::from(affinity_queue(c.endpoint, c.inflight)),
                saturated: c.saturated,
            })
            .collect();
        let owner = prefix::affinity_owner(key, &loads, preferred, rule, &self.config.prefix);
        let learning = learned.then_some(PlacementLearning {
            key,
            placed: placed.is_some(),
        });
        (owner, learning)
    }

    /// FailOpen with no usable state: the last known endpoints, ignoring their
    /// (too old) metrics. Prefers endpoints last known ready, then fewest
    /// in-flight requests from this Envoy, ties broken by `rand`.
    pub fn pick_fail_open(
        &self,
        pool: &PoolView,
        inflight: &[u32],
        rand: u64,
    ) -> Result<Pick, NoEndpoint> {
        self.pick_fail_open_excluding(pool, inflight, rand, &[])
    }

    /// [`Scheduler::pick_fail_open`] among the endpoints whose address hash
    /// is not in `excluded`; `NoneReady` when that leaves none.
    pub fn pick_fail_open_excluding(
        &self,
        pool: &PoolView,
        inflight: &[u32],
        rand: u64,
        excluded: &[u64],
    ) -> Result<Pick, NoEndpoint> {
        if pool.endpoints.is_empty() {
            return Err(NoEndpoint::EmptyPool);
        }
        let allowed = |i: usize| {
            pool.endpoints
                .get(i)
                .is_some_and(|e| !excluded.contains(&e.address_hash))
        };
        let any_ready = pool
            .endpoints
            .iter()
            .enumerate()
            .any(|(i, e)| e.ready && allowed(i));
        let candidates: Vec<usize> = (0..pool.endpoints.len())
            .filter(|&i| allowed(i))
            .filter(|&i| !any_ready || pool.endpoints.get(i).is_some_and(|e| e.ready))
            .collect();
        if candidates.is_empty() {
            return Err(NoEndpoint::NoneReady);
        }
        let scores: Vec<f64> = candidates
            .iter()
            .map(|&i| -f64::from(inflight.get(i).copied().unwrap_or(0)))
            .collect();
        let winner = pick_max(&scores, rand).unwrap_or(0);
        let endpoint = candidates
            .get(winner)
            .copied()
            .ok_or(NoEndpoint::EmptyPool)?;
        Ok(Pick {
            endpoint,
            score: 0.0,
            prefix_owner: false,
            learning: None,
            candidates: candidates.len(),
            metrics_fresh: false,
        })
    }
}

/// LoRA affinity of an endpoint for an adapter: resident 1.0, free slot 0.8,
/// queued for it 0.6, otherwise 0 (it would have to evict).
pub fn lora_affinity(endpoint: &EndpointView, adapter: u32) -> f64 {
    if endpoint.has_running_adapter(adapter) {
        1.0
    } else if endpoint.has_free_lora_slot() {
        0.8
    } else if endpoint.has_waiting_adapter(adapter) {
        0.6
    } else {
        0.0
    }
}

/// The queue the bounded-load check holds against an affinity owner: waiting
/// requests plus this Envoy's requests the last scrape cannot have seen yet
/// (in flight beyond what the pod reports running or waiting). Requests that
/// are already running do not count: an owner busy decoding its own group's
/// requests is exactly where the next one should go.
pub fn affinity_queue(endpoint: &EndpointView, inflight: u32) -> u32 {
    let reported = endpoint.running.saturating_add(endpoint.waiting);
    endpoint
        .waiting
        .saturating_add(inflight.saturating_sub(reported))
}

/// `(max - v) / (max - min)`: the least loaded scores 1, the most 0; all equal
/// scores 1 each.
fn add_min_max_scores(scores: &mut [f64], weight: f64, values: impl Iterator<Item = u32> + Clone) {
    let min = values.clone().min().unwrap_or(0);
    let max = values.clone().max().unwrap_or(0);
    let range = f64::from(max.saturating_sub(min));
    for (s, v) in scores.iter_mut().zip(values) {
        *s += if range > 0.0 {
            weight * f64::from(max.saturating_sub(v)) / range
        } else {
            weight
        };
    }
}

/// Index of the highest score; among scores within [`TIE_EPSILON`] of it, the
/// `rand`-th.
fn pick_max(scores: &[f64], rand: u64) -> Option<usize> {
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ties: Vec<usize> = scores
        .iter()
        .enumerate()
        .filter(|(_, &s)| s >= best - TIE_EPSILON)
        .map(|(i, _)| i)
        .collect();
    let n = ties.len() as u64;
    if n == 0 {
        return None;
    }
    ties.get((rand % n) as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{endpoint, pool};

    fn scheduler() -> Scheduler {
        Scheduler::new(SchedulerConfig {
            metrics_stale_ms: 200,
            ..Default::default()
        })
    }

    fn view(endpoints: Vec<pool_state::Endpoint>) -> PoolView {
        PoolView::from_pool(&pool("p", endpoints))
    }

    fn no_prompt() -> RequestFeatures {
        RequestFeatures::default()
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn picks_the_shortest_queue_and_lowest_kv() {
        let p = view(vec![
            endpoint("a:1", 8, 0.5),
            endpoint("b:1", 0, 0.1),
            endpoint("c:1", 4, 0.3),
        ]);
        for rand in 0..20 {
            let pick = scheduler().pick(&p, &no_prompt(), &[], 0, rand).unwrap();
            assert_eq!(pick.endpoint, 1);
            assert!(pick.metrics_fresh);
            assert_eq!(pick.candidates, 3);
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn ties_are_broken_by_the_draw_and_cover_all_tied() {
        let p = view(vec![
            endpoint("a:1", 0, 0.0),
            endpoint("b:1", 0, 0.0),
            endpoint("c:1", 0, 0.0),
        ]);
        let mut seen = [0u32; 3];
        for rand in 0..300u64 {
            let pick = scheduler()
                .pick(&p, &no_prompt(), &[], 0, crate::prefix::mix64(rand))
                .unwrap();
            seen[pick.endpoint] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let a = scheduler().pick(&p, &no_prompt(), &[], 0, 5).unwrap();
        let b = scheduler().pick(&p, &no_prompt(), &[], 0, 5).unwrap();
        assert_eq!(a, b, "deterministic for a given draw");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn inflight_requests_since_the_scrape_spread_a_burst() {
        let p = view(vec![
            endpoint("a:1", 0, 0.0),
            endpoint("b:1", 0, 0.0),
            endpoint("c:1", 0, 0.0),
        ]);
        let mut inflight = vec![0u32; 3];
        for rand in 0..30 {
            let pick = scheduler()
                .pick(&p, &no_prompt(), &inflight, 0, rand)
                .unwrap();
            inflight[pick.endpoint] += 1;
        }
        assert_eq!(inflight, vec![10, 10, 10]);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn not_ready_endpoints_are_never_picked() {
        let mut down = endpoint("a:1", 0, 0.0);
        down.ready = false;
        let p = view(vec![down.clone(), endpoint("b:1", 20, 0.9)]);
        for rand in 0..20 {
            assert_eq!(
                scheduler()
                    .pick(&p, &no_prompt(), &[], 0, rand)
                    .unwrap()
                    .endpoint,
                1
            );
        }
        assert_eq!(
            scheduler().pick(&view(vec![down]), &no_prompt(), &[], 0, 0),
            Err(NoEndpoint::NoneReady)
        );
        assert_eq!(
            scheduler().pick(&view(vec![]), &no_prompt(), &[], 0, 0),
            Err(NoEndpoint::EmptyPool)
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn stale_endpoints_are_filtered_while_fresh_ones_exist() {
        let mut stale = endpoint("a:1", 0, 0.0);
        stale.metrics_age_ms = 5_000;
        let p = view(vec![stale.clone(), endpoint("b:1", 3, 0.5)]);
        let pick = scheduler().pick(&p, &no_prompt(), &[], 0, 0).unwrap();
        assert_eq!((pick.endpoint, pick.candidates), (1, 1));
        // All stale: still picks (by stale metrics) and says so.
        let mut stale_b = endpoint("b:1", 3, 0.5);
        stale_b.metrics_age_ms = 5_000;
        let p = view(vec![stale, stale_b]);
        let pick = scheduler().pick(&p, &no_prompt(), &[], 0, 0).unwrap();
        assert_eq!(pick.endpoint, 0);
        assert!(!pick.metrics_fresh);
    }

    fn lora_pool() -> PoolView {
        // adapters: 0 = "food-review", 1 = "cad"
        let mut resident = endpoint("a:1", 1, 0.3);
        resident.running_adapters = vec![0];
        resident.max_loras = 1;
        let mut free = endpoint("b:1", 0, 0.1);
        free.max_loras = 2;
        free.running_adapters = vec![1];
        let mut full = endpoint("c:1", 0, 0.0);
        full.max_loras = 1;
        full.running_adapters = vec![1];
        let mut p = pool("p", vec![resident, free, full]);
        p.adapter_names = vec!["food-review".into(), "cad".into()];
        PoolView::from_pool(&p)
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn lora_affinity_tiers() {
        let p = lora_pool();
        assert_eq!(lora_affinity(&p.endpoints[0], 0), 1.0);
        assert_eq!(lora_affinity(&p.endpoints[1], 0), 0.8);
        assert_eq!(lora_affinity(&p.endpoints[2], 0), 0.0);
        let mut waiting = p.endpoints[2].clone();
        waiting.waiting_adapters = vec![0];
        assert_eq!(lora_affinity(&waiting, 0), 0.6);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn adapter_requests_avoid_pods_that_would_have_to_evict() {
        let mut p = lora_pool();
        // The resident pod is saturated: it no longer wins by residency alone.
        p.endpoints[0].waiting = 5;
        let req = RequestFeatures::new(&p, "food-review", b"", &PrefixConfig::default());
        assert_eq!(req.adapter, Some(0));
        for rand in 0..20 {
            let pick = scheduler().pick(&p, &req, &[], 0, rand).unwrap();
            // a stays a candidate (it has the adapter) but loses on load.
            assert_eq!((pick.endpoint, pick.candidates), (1, 2), "c would evict");
        }
        // Base model: c (idle, empty kv) wins on load.
        let base = RequestFeatures::new(
            &p,
            "meta-llama/Llama-3.1-8B-Instruct",
            b"",
            &PrefixConfig::default(),
        );
        assert_eq!(base.adapter, None);
        assert_eq!(scheduler().pick(&p, &base, &[], 0, 0).unwrap().endpoint, 2);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn resident_adapter_with_capacity_wins_even_when_others_are_idler() {
        let p = lora_pool(); // a: resident, 1 waiting, kv 0.3; b and c idler
        let req = RequestFeatures::new(&p, "food-review", b"", &PrefixConfig::default());
        for rand in 0..20 {
            let pick = scheduler().pick(&p, &req, &[], 0, rand).unwrap();
            assert_eq!((pick.endpoint, pick.candidates), (0, 1));
        }
        // A stale resident pod is filtered out while others are fresh...
        let mut stale = p.clone();
        stale.endpoints[0].metrics_age_ms = 10_000;
        assert_eq!(
            scheduler().pick(&stale, &req, &[], 0, 0).unwrap().endpoint,
            1
        );
        // ... but when every pod is stale, residency still decides.
        let pick = scheduler().pick(&p, &req, &[], 5_000, 0).unwrap();
        assert_eq!((pick.endpoint, pick.metrics_fresh), (0, false));
    }

    fn prompt(group: u32, turn: u32) -> Vec<u8> {
        let mut text = format!("[{{\"role\":\"system\",\"content\":\"You are assistant #{group}. ");
        text.push_str(&"Be helpful and precise. ".repeat(20));
        for t in 0..=turn {
            text.push_str(&format!(
                "\"}},{{\"role\":\"user\",\"content\":\"question {t} of group {group}"
            ));
        }
        text.push_str("\"}]");
        text.into_bytes()
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_conversation_sticks_to_one_pod_while_it_has_capacity() {
        let eps: Vec<_> = (0..8)
            .map(|i| endpoint(&format!("10.0.0.{i}:8000"), 1, 0.2))
            .collect();
        let p = view(eps);
        let cfg = PrefixConfig::default();
        for group in 0..10 {
            let first = scheduler()
                .pick(
                    &p,
                    &RequestFeatures::new(&p, "m", &prompt(group, 0), &cfg),
                    &[],
                    0,
                    1,
                )
                .unwrap();
            assert!(first.prefix_owner);
            for turn in 1..6 {
                let req = RequestFeatures::new(&p, "m", &prompt(group, turn), &cfg);
                for rand in [0, 7, 99] {
                    let pick = scheduler().pick(&p, &req, &[], 0, rand).unwrap();
                    assert_eq!(pick.endpoint, first.endpoint, "group {group} turn {turn}");
                }
            }
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_hot_prefix_moves_off_a_saturated_pod() {
        let eps: Vec<_> = (0..4)
            .map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0.1))
            .collect();
        let mut p = view(eps);
        let cfg = PrefixConfig::default();
        let req = RequestFeatures::new(&p, "m", &prompt(1, 0), &cfg);
        let owner = scheduler().pick(&p, &req, &[], 0, 0).unwrap().endpoint;
        p.endpoints[owner].waiting = 6; // saturated: 6/5 >= 1
        let moved = scheduler().pick(&p, &req, &[], 0, 0).unwrap();
        assert_ne!(moved.endpoint, owner);
        assert!(
            moved.prefix_owner,
            "the next in rendezvous order takes the key"
        );
        // ... and the in-flight burst from this Envoy counts as load too.
        p.endpoints[owner].waiting = 0;
        let mut inflight = vec![0u32; 4];
        inflight[owner] = 30;
        assert_ne!(
            scheduler()
                .pick(&p, &req, &inflight, 0, 0)
                .unwrap()
                .endpoint,
            owner
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn running_requests_do_not_push_a_prefix_off_its_owner() {
        let eps: Vec<_> = (0..4)
            .map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0.1))
            .collect();
        let mut p = view(eps);
        let req = RequestFeatures::new(&p, "m", &prompt(3, 0), &PrefixConfig::default());
        let owner = scheduler().pick(&p, &req, &[], 0, 0).unwrap().endpoint;
        // The owner runs 6 requests this Envoy sent, all visible in the scrape.
        p.endpoints[owner].running = 6;
        let mut inflight = vec![0u32; 4];
        inflight[owner] = 6;
        assert_eq!(affinity_queue(&p.endpoints[owner], 6), 0);
        let pick = scheduler().pick(&p, &req, &inflight, 0, 0).unwrap();
        assert!(pick.prefix_owner);
        assert_eq!(pick.endpoint, owner);
        // Twelve more sent since the scrape: the unseen burst counts.
        inflight[owner] = 18;
        assert_eq!(affinity_queue(&p.endpoints[owner], 18), 12);
        assert_ne!(
            scheduler()
                .pick(&p, &req, &inflight, 0, 0)
                .unwrap()
                .endpoint,
            owner
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn fail_open_ignores_metrics_and_prefers_fewest_inflight() {
        let mut stale_busy = endpoint("a:1", 100, 1.0);
        stale_busy.metrics_age_ms = u32::MAX;
        let p = view(vec![stale_busy, endpoint("b:1", 0, 0.0)]);
        let s = scheduler();
        assert_eq!(s.pick_fail_open(&p, &[0, 3], 0).unwrap().endpoint, 0);
        let mut seen = [0; 2];
        for rand in 0..40 {
            seen[s.pick_fail_open(&p, &[], rand).unwrap().endpoint] += 1;
        }
        assert!(seen[0] > 5 && seen[1] > 5, "{seen:?}");
        assert_eq!(
            s.pick_fail_open(&view(vec![]), &[], 0),
            Err(NoEndpoint::EmptyPool)
        );
        let mut down = endpoint("c:1", 0, 0.0);
        down.ready = false;
        assert_eq!(
            s.pick_fail_open(&view(vec![down]), &[], 0)
                .unwrap()
                .endpoint,
            0
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn weights_are_validated() {
        assert!(ScorerWeights::default().validate().is_ok());
        let mut w = ScorerWeights {
            queue: -1.0,
            ..Default::default()
        };
        assert!(w.validate().is_err());
        w.queue = f64::INFINITY;
        assert!(w.validate().is_err());
    }

    /// Four idle endpoints whose collector learns placements.
    fn learning_view(placements: &[(u64, u32)]) -> PoolView {
        let mut p = pool(
            "p",
            (0..4)
                .map(|i| endpoint(&format!("10.0.0.{i}:8000"), 0, 0.1))
                .collect(),
        );
        p.learns_prefix_placements = true;
        p.prefix_placements = pool_state::placements::encode(placements);
        PoolView::from_pool(&p)
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_placed_group_goes_to_its_placement_and_spills_by_rendezvous() {
        let cfg = PrefixConfig::default();
        let unplaced = learning_view(&[]);
        let req = RequestFeatures::new(&unplaced, "m", &prompt(1, 0), &cfg);
        let key = req.affinity_key.unwrap();
        for placed_on in 0..4u32 {
            let mut p = learning_view(&[(key, placed_on)]);
            for rand in [0, 5, 11] {
                let pick = scheduler().pick(&p, &req, &[], 0, rand).unwrap();
                assert_eq!(pick.endpoint, placed_on as usize);
                assert!(pick.prefix_owner);
                assert_eq!(pick.learning, Some(PlacementLearning { key, placed: true }));
            }
            // Saturated: the next fitting endpoint in rendezvous order owns it.
            p.endpoints[placed_on as usize].waiting = 6;
            let spilled = scheduler().pick(&p, &req, &[], 0, 0).unwrap();
            assert_ne!(spilled.endpoint, placed_on as usize);
            assert!(spilled.prefix_owner);
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn an_unplaced_group_is_placed_by_load_then_follows_this_worker() {
        let cfg = PrefixConfig::default();
        let mut p = learning_view(&[]);
        for (i, e) in p.endpoints.iter_mut().enumerate() {
            e.waiting = if i == 2 { 0 } else { 3 };
        }
        let mut req = RequestFeatures::new(&p, "m", &prompt(4, 0), &cfg);
        let first = scheduler().pick(&p, &req, &[], 0, 0).unwrap();
        assert_eq!(first.endpoint, 2, "no owner yet: the shortest queue wins");
        assert!(!first.prefix_owner);
        assert!(matches!(
            first.learning,
            Some(PlacementLearning { placed: false, .. })
        ));
        // This worker remembers where it sent the group; the next request
        // follows it even though another pod is now idler.
        req.sent_to = Some(p.endpoints[2].address_hash);
        p.endpoints[2].waiting = 2;
        p.endpoints[0].waiting = 0;
        let next = scheduler().pick(&p, &req, &[], 0, 0).unwrap();
        assert_eq!((next.endpoint, next.prefix_owner), (2, true));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn learned_placement_off_keeps_rendezvous_and_reports_nothing() {
        let mut config = SchedulerConfig::default();
        config.prefix.learned_placement = false;
        let scheduler = Scheduler::new(config.clone());
        let p = learning_view(&[]);
        let req = RequestFeatures::new(&p, "m", &prompt(5, 0), &config.prefix);
        let pick = scheduler.pick(&p, &req, &[], 0, 0).unwrap();
        assert!(pick.prefix_owner, "rendezvous owner");
        assert_eq!(pick.learning, None);
    }
}
