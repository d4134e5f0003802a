//! A step-based model of vLLM V1's continuous-batching engine: the scheduler,
//! the paged KV cache with prefix caching, LoRA slots and a step-time model.
//!
//! The engine is pure: no I/O, no threads, no clock. A caller (the HTTP
//! server's per-pod task, or a discrete-event benchmark in virtual time) calls
//! [`Engine::step`] with the current time and learns how long the step took and
//! what happened at its end. Given the same seed and the same calls, the same
//! events come out.
//!
//! Each step, like vLLM V1's scheduler:
//! 1. running requests (in admission order) get their next prefill chunk or one
//!    decode token within the token budget (`max_num_batched_tokens`); when one
//!    cannot get a KV block, the most recently admitted request is preempted
//!    (its blocks are freed and it is recomputed later);
//! 2. if nothing was preempted, waiting requests are admitted first-come
//!    first-served while `running < max_num_seqs`, the budget has room, KV
//!    blocks exist for the uncached part of the prompt and the number of
//!    distinct adapters in the batch stays <= `max_loras` (a request whose
//!    adapter has no slot is passed over and keeps its place);
//! 3. every request whose computed tokens reach its length samples one token.

pub mod hash;
pub mod kv_cache;
pub mod profile;
pub mod tokenizer;

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use hash::{combine, draw, mix64, BuildPrehashed};
use kv_cache::{BlockId, BlockPool};
pub use profile::{PerfProfile, StepWork};

/// Engine limits and cache geometry. `Default` is Llama-3.1-8B-Instruct
/// on one H100 80 GB with vLLM V1's defaults for that GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most sequences in one batch (vLLM's default on H100: 1024).
    pub max_num_seqs: u32,
    /// Token budget of one step; prompts longer than this are prefilled in
    /// chunks (vLLM V1 default with chunked prefill: 8192).
    pub max_num_batched_tokens: u32,
    /// Tokens per KV block (vLLM: 16).
    pub block_size: u32,
    /// KV blocks on the GPU: (80 GB * 0.9 - 16 GB weights - activations)
    /// / (128 KiB/token * 16) ≈ 27,500 for Llama-3.1-8B on H100.
    pub num_gpu_blocks: u32,
    /// Context limit: prompt + completion tokens (Llama-3.1: 131,072).
    pub max_model_len: u32,
    /// Distinct adapters allowed in one batch, i.e. GPU LoRA slots (vLLM default 1).
    pub max_loras: u32,
    /// Reuse cached KV blocks of identical prefixes (vLLM V1 default: on).
    pub enable_prefix_caching: bool,
    /// Time to load an adapter into a free GPU slot, added to the step that
    /// first runs it (rank-16 adapter of an 8B model from host memory: ~25 ms).
    pub lora_load_s: f64,
    /// The step-time model.
    pub profile: PerfProfile,
    /// Chance that a request not marked `ignore_eos` samples end-of-sequence at
    /// each token (finish reason `stop`). 0 means every request generates
    /// exactly `max_tokens`.
    pub eos_probability: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_num_seqs: 1024,
            max_num_batched_tokens: 8192,
            block_size: 16,
            num_gpu_blocks: 27_500,
            max_model_len: 131_072,
            max_loras: 1,
            enable_prefix_caching: true,
            lora_load_s: 0.025,
            profile: PerfProfile::default(),
            eos_probability: 0.0,
        }
    }
}

impl EngineConfig {
    /// Rejects configurations the engine cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_num_seqs == 0 {
            return Err("max_num_seqs must be >= 1".into());
        }
        if self.block_size == 0 {
            return Err("block_size must be >= 1".into());
        }
        if self.num_gpu_blocks == 0 {
            return Err("num_gpu_blocks must be >= 1".into());
        }
        if self.max_model_len < 2 {
            return Err("max_model_len must be >= 2".into());
        }
        if self.max_num_batched_tokens == 0 {
            return Err("max_num_batched_tokens must be >= 1".into());
        }
        if !self.lora_load_s.is_finite() || self.lora_load_s < 0.0 {
            return Err("lora_load_s must be a finite number >= 0".into());
        }
        if !(0.0..=1.0).contains(&self.eos_probability) {
            return Err("eos_probability must be within [0, 1]".into());
        }
        self.profile.validate()
    }
}

/// One generation request as the engine sees it (already tokenized).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    /// Caller-chosen id, unique among live requests; events carry it.
    pub id: u64,
    pub prompt_tokens: Vec<u32>,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Registered adapter to run with, `None` for the base model.
    pub adapter: Option<String>,
    /// Generate exactly `max_tokens` even if EOS would be sampled.
    pub ignore_eos: bool,
}

/// Why a request finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-sequence sampled.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// Aborted by the caller, or its adapter was unloaded while it waited.
    Abort,
}

impl FinishReason {
    /// The `finish_reason` / `finished_reason` string vLLM uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// Something that happened to a request at the end of a step.
///
/// Per accepted request the order is: zero or more `Preempted`, `FirstToken`
/// right before `Token { index: 0 }`, `Token` for every generated token
/// (indices 0, 1, 2, ...), and exactly one `Finished` (also after an abort or
/// a `Rejected`). A `Rejected` request is then `Finished` with `Abort`.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The first output token exists (time to first token ends here).
    FirstToken { id: u64 },
    /// Output token number `index` (0-based) was generated; its id is
    /// [`generated_token`]`(seed, id, index)`.
    Token { id: u64, index: u32 },
    /// The request left the engine and freed its KV blocks.
    Finished {
        id: u64,
        reason: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
        /// Prompt tokens served from the prefix cache at first admission.
        cached_tokens: u32,
    },
    /// The request lost its KV blocks and went back to the waiting queue.
    Preempted { id: u64 },
    /// The request was accepted earlier but can no longer run.
    Rejected { id: u64, reason: String },
}

/// What one [`Engine::step`] did. Events happen at `now_s + duration_s`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepResult {
    pub duration_s: f64,
    pub events: Vec<EngineEvent>,
}

/// A snapshot of the engine for `/metrics`, `/admin/state` and benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineStats {
    pub running: u32,
    pub waiting: u32,
    /// Share of KV blocks in use, 0..=1.
    pub kv_cache_usage: f64,
    /// Adapters of running requests, sorted by name.
    pub running_adapters: Vec<String>,
    /// Adapters of waiting requests, sorted by name.
    pub waiting_adapters: Vec<String>,
    pub max_loras: u32,
    pub block_size: u32,
    pub num_gpu_blocks: u32,
    /// Prompt tokens looked up in the prefix cache (vLLM counts every admission).
    pub prefix_queries_tokens: u64,
    /// Of those, tokens found cached.
    pub prefix_hits_tokens: u64,
    pub preemptions: u64,
    pub max_num_seqs: u32,
    pub max_model_len: u32,
    pub free_blocks: u32,
    /// Blocks holding a reusable cached prefix (in use or free).
    pub cached_blocks: u32,
    /// Adapters that requests may name, sorted.
    pub registered_adapters: Vec<String>,
    /// Adapters loaded in GPU slots, sorted.
    pub resident_adapters: Vec<String>,
    /// Prompt tokens of admitted requests (first admission only).
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub steps: u64,
}

/// Why a request or an adapter operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("This model's maximum context length is {max_model_len} tokens. However, you requested {total} tokens ({prompt} in the messages, {completion} in the completion). Please reduce the length of the messages or completion.")]
    ContextTooLong {
        max_model_len: u32,
        total: u64,
        prompt: u32,
        completion: u32,
    },
    #[error("The prompt needs {needed} KV blocks but the cache has only {capacity}.")]
    ExceedsKvCapacity { needed: u64, capacity: u32 },
    #[error("The model `{0}` does not exist.")]
    UnknownAdapter(String),
    #[error("The lora adapter '{0}' has already been loaded.")]
    AdapterAlreadyRegistered(String),
    #[error("LoRA adapters need max_loras >= 1.")]
    LoraDisabled,
    #[error("Invalid adapter name {0:?}.")]
    InvalidAdapterName(String),
    #[error("The prompt is empty.")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1, got 0.")]
    InvalidMaxTokens,
    #[error("Request id {0} is already in use.")]
    DuplicateId(u64),
}

/// Token id that request `id` generates at output position `index`.
pub fn generated_token(seed: u64, id: u64, index: u32) -> u32 {
    (draw(seed, id, u64::from(index)) % u64::from(tokenizer::VOCAB_SIZE)) as u32
}

#[derive(Debug)]
struct Request {
    id: u64,
    /// Prompt followed by the tokens generated so far.
    tokens: Vec<u32>,
    prompt_len: u32,
    max_tokens: u32,
    adapter: Option<u32>,
    ignore_eos: bool,
    /// Tokens whose KV is in `blocks`.
    num_computed: u32,
    blocks: Vec<BlockId>,
    /// Chained hashes of the full blocks of `tokens`.
    block_hashes: Vec<u64>,
    /// Leading blocks already registered in the prefix cache.
    num_cached_blocks: u32,
    cached_tokens: Option<u32>,
    /// Tokens scheduled in the current step.
    scheduled: u32,
}

impl Request {
    fn outputs(&self) -> u32 {
        self.tokens.len() as u32 - self.prompt_len
    }
}

#[derive(Debug)]
struct Adapter {
    name: String,
    registered: bool,
    running: u32,
    waiting: u32,
}

/// An exact view of an engine's load ([`Engine::load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineLoad {
    pub running: u32,
    pub waiting: u32,
    /// Prompt tokens admitted or queued whose KV is not computed yet
    /// (a waiting request's prefix now in the cache does not count).
    pub pending_prefill_tokens: u64,
    /// Tokens of context of the running sequences (what decode reads).
    pub running_context_tokens: u64,
    pub free_blocks: u32,
}

/// The simulated engine of one pod.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    seed: u64,
    pool: BlockPool,
    running: Vec<Request>,
    /// Empty buffer swapped with `running` each step (avoids reallocating).
    running_spare: Vec<Request>,
    waiting: VecDeque<Request>,
    live_ids: HashSet<u64, BuildPrehashed>,
    adapters: Vec<Adapter>,
    adapter_index: HashMap<String, u32>,
    /// Adapters in GPU slots with the time a request of theirs was last admitted.
    resident: Vec<(u32, f64)>,
    active_adapters: u32,
    pending_events: Vec<EngineEvent>,
    skipped: Vec<Request>,
    hit_scratch: Vec<BlockId>,
    prefix_queries_tokens: u64,
    prefix_hits_tokens: u64,
    preemptions: u64,
    prompt_tokens_total: u64,
    generation_tokens_total: u64,
    steps: u64,
}

impl Engine {
    /// An idle engine. Panics only on a config that fails
    /// [`EngineConfig::validate`]; callers taking user input validate first.
    pub fn new(config: EngineConfig, seed: u64) -> Engine {
        if let Err(e) = config.validate() {
            panic!("invalid engine config: {e}");
        }
        Engine {
            pool: BlockPool::new(config.num_gpu_blocks, config.enable_prefix_caching),
            config,
            seed,
            running: Vec::new(),
            running_spare: Vec::new(),
            waiting: VecDeque::new(),
            live_ids: HashSet::default(),
            adapters: Vec::new(),
            adapter_index: HashMap::new(),
            resident: Vec::new(),
            active_adapters: 0,
            pending_events: Vec::new(),
            skipped: Vec::new(),
            hit_scratch: Vec::new(),
            prefix_queries_tokens: 0,
            prefix_hits_tokens: 0,
            preemptions: 0,
            prompt_tokens_total: 0,
            generation_tokens_total: 0,
            steps: 0,
        }
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The seed that drives token sampling.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Queues a request after checking it can ever run.
    pub fn add_request(&mut self, req: EngineRequest) -> Result<(), EngineError> {
        if self.live_ids.contains(&req.id) {
            return Err(EngineError::DuplicateId(req.id));
        }
        if req.prompt_tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if req.max_tokens == 0 {
            return Err(EngineError::InvalidMaxTokens);
        }
        let prompt = u32::try_from(req.prompt_tokens.len()).unwrap_or(u32::MAX);
        let total = u64::from(prompt) + u64::from(req.max_tokens);
        if total > u64::from(self.config.max_model_len) {
            return Err(EngineError::ContextTooLong {
                max_model_len: self.config.max_model_len,
                total,
                prompt,
                completion: req.max_tokens,
            });
        }
        let needed = total.div_ceil(u64::from(self.config.block_size));
        if needed > u64::from(self.config.num_gpu_blocks) {
            return Err(EngineError::ExceedsKvCapacity {
                needed,
                capacity: self.config.num_gpu_blocks,
            });
        }
        let adapter = match &req.adapter {
            None => None,
            Some(name) => match self.adapter_index.get(name) {
                Some(&i) if self.adapters[i as usize].registered => Some(i),
                _ => return Err(EngineError::UnknownAdapter(name.clone())),
            },
        };
        let mut request = Request {
            id: req.id,
            prompt_len: prompt,
            tokens: req.prompt_tokens,
            max_tokens: req.max_tokens,
            adapter,
            ignore_eos: req.ignore_eos,
            num_computed: 0,
            blocks: Vec::new(),
            block_hashes: Vec::new(),
            num_cached_blocks: 0,
            cached_tokens: None,
            scheduled: 0,
        };
        self.extend_block_hashes(&mut request);
        if let Some(a) = adapter {
            self.adapters[a as usize].waiting += 1;
        }
        self.live_ids.insert(request.id);
        self.waiting.push_back(request);
        Ok(())
    }

    /// Drops a request wherever it is (the client went away) and frees its
    /// blocks. Its `Finished { reason: Abort }` comes with the next step.
    /// Unknown or finished ids are ignored.
    pub fn abort(&mut self, id: u64) {
        if !self.live_ids.contains(&id) {
            return;
        }
        if let Some(pos) = self.waiting.iter().position(|r| r.id == id) {
            let req = self.waiting.remove(pos).expect("position is valid");
            self.finish_waiting(req, FinishReason::Abort, None);
        } else if let Some(pos) = self.running.iter().position(|r| r.id == id) {
            let req = self.running.remove(pos);
            let event = self.release_running(req, FinishReason::Abort);
            self.pending_events.push(event);
        }
    }

    /// Whether stepping would do anything (requests or undelivered events).
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty() || !self.pending_events.is_empty()
    }

    /// Runs one continuous-batching step that starts at `now_s` (the caller's
    /// clock; the engine uses it to order LoRA slot evictions by recency).
    pub fn step(&mut self, now_s: f64) -> StepResult {
        let mut events = std::mem::take(&mut self.pending_events);
        if self.running.is_empty() && self.waiting.is_empty() {
            return StepResult {
                duration_s: 0.0,
                events,
            };
        }
        self.steps += 1;
        let mut budget = self.config.max_num_batched_tokens;
        let preempted = self.schedule_running(&mut budget, &mut events);
        let mut adapter_loads = 0u32;
        if !preempted {
            adapter_loads = self.admit_waiting(&mut budget, now_s);
        }

        let mut work = StepWork::default();
        for req in &self.running {
            if req.scheduled == 0 {
                continue;
            }
            let is_decode = req.outputs() > 0
                && req.scheduled == 1
                && req.num_computed + 1 == req.tokens.len() as u32;
            if is_decode {
                work.add_decode(u64::from(req.num_computed) + 1);
            } else {
                work.add_prefill(u64::from(req.num_computed), u64::from(req.scheduled));
            }
        }
        let duration_s = if work.sequences == 0 {
            // Nothing could run (cannot happen for validated requests, but
            // never let a caller spin in zero time).
            self.config.profile.step_overhead_s.max(1e-3)
        } else {
            self.config.profile.step_time(&work)
                + f64::from(adapter_loads) * self.config.lora_load_s
        };

        self.advance(&mut events);
        StepResult { duration_s, events }
    }

    /// Schedules running requests; returns whether any was preempted.
    fn schedule_running(&mut self, budget: &mut u32, events: &mut Vec<EngineEvent>) -> bool {
        let mut preempted = false;
        let block_size = self.config.block_size;
        let mut i = 0;
        while i < self.running.len() {
            let req = &mut self.running[i];
            let want = req.tokens.len() as u32 - req.num_computed;
            let n = want.min(*budget);
            if n == 0 {
                req.scheduled = 0;
                i += 1;
                continue;
            }
            loop {
                let req = &mut self.running[i];
                let need = (req.num_computed + n).div_ceil(block_size) - req.blocks.len() as u32;
                if self.pool.allocate(need, &mut req.blocks) {
                    req.scheduled = n;
                    *budget -= n;
                    i += 1;
                    break;
                }
                let victim = self.running.pop().expect("running is not empty");
                let was_self = self.running.len() == i;
                self.preempt(victim, events);
                preempted = true;
                if was_self {
                    break;
                }
            }
        }
        preempted
    }

    fn preempt(&mut self, mut req: Request, events: &mut Vec<EngineEvent>) {
        self.pool.release(&req.blocks);
        req.blocks.clear();
        req.num_computed = 0;
        req.num_cached_blocks = 0;
        req.scheduled = 0;
        if let Some(a) = req.adapter {
            let adapter = &mut self.adapters[a as usize];
            adapter.running -= 1;
            adapter.waiting += 1;
            if adapter.running == 0 {
                self.active_adapters -= 1;
            }
        }
        self.preemptions += 1;
        events.push(EngineEvent::Preempted { id: req.id });
        self.waiting.push_front(req);
    }

    /// Admits waiting requests FCFS; returns how many adapters were loaded.
    fn admit_waiting(&mut self, budget: &mut u32, now_s: f64) -> u32 {
        let block_size = self.config.block_size;
        let mut loads = 0;
        while *budget > 0 && (self.running.len() as u32) < self.config.max_num_seqs {
            let Some(req) = self.waiting.front() else {
                break;
            };
            if let Some(a) = req.adapter {
                if self.adapters[a as usize].running == 0
                    && self.active_adapters >= self.config.max_loras
                {
                    let req = self.waiting.pop_front().expect("front exists");
                    self.skipped.push(req);
                    continue;
                }
            }
            // Longest cached chain of full blocks, leaving at least the last
            // token to compute (it produces the next token's logits).
            self.hit_scratch.clear();
            let len = req.tokens.len() as u32;
            let max_hit_blocks = ((len - 1) / block_size) as usize;
            let mut hits_free = 0;
            for &h in req.block_hashes.iter().take(max_hit_blocks) {
                match self.pool.lookup(h) {
                    Some(b) => {
                        if self.pool.ref_count(b) == 0 {
                            hits_free += 1;
                        }
                        self.hit_scratch.push(b);
                    }
                    None => break,
                }
            }
            let hit_tokens = self.hit_scratch.len() as u32 * block_size;
            let n = (len - hit_tokens).min(*budget);
            let need = (hit_tokens + n).div_ceil(block_size) - self.hit_scratch.len() as u32;
            if self.pool.free_blocks() < need + hits_free {
                break;
            }
            let mut req = self.waiting.pop_front().expect("front exists");
            for &b in &self.hit_scratch {
                self.pool.touch(b);
            }
            req.blocks.extend_from_slice(&self.hit_scratch);
            let ok = self.pool.allocate(need, &mut req.blocks);
            debug_assert!(ok, "free blocks were checked");
            req.num_computed = hit_tokens;
            req.num_cached_blocks = self.hit_scratch.len() as u32;
            req.scheduled = n;
            *budget -= n;
            self.prefix_queries_tokens += u64::from(len);
            self.prefix_hits_tokens += u64::from(hit_tokens);
            if req.cached_tokens.is_none() {
                req.cached_tokens = Some(hit_tokens);
                self.prompt_tokens_total += u64::from(req.prompt_len);
            }
            if let Some(a) = req.adapter {
                let adapter = &mut self.adapters[a as usize];
                adapter.waiting -= 1;
                adapter.running += 1;
                if adapter.running == 1 {
                    self.active_adapters += 1;
                }
                if self.make_resident(a, now_s) {
                    loads += 1;
                }
            }
            self.running.push(req);
        }
        while let Some(req) = self.skipped.pop() {
            self.waiting.push_front(req);
        }
        loads
    }

    /// Puts an adapter in a GPU slot (evicting the least recently used idle
    /// one); returns whether it had to be loaded.
    fn make_resident(&mut self, adapter: u32, now_s: f64) -> bool {
        if let Some(slot) = self.resident.iter_mut().find(|(a, _)| *a == adapter) {
            slot.1 = now_s;
            return false;
        }
        if self.resident.len() as u32 >= self.config.max_loras {
            let victim = self
                .resident
                .iter()
                .enumerate()
                .filter(|(_, (a, _))| self.adapters[*a as usize].running == 0)
                .min_by(|(_, (_, x)), (_, (_, y))| x.total_cmp(y))
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    self.resident.swap_remove(i);
                }
                None => debug_assert!(false, "max_loras check admits only with a free slot"),
            }
        }
        self.resident.push((adapter, now_s));
        true
    }

    /// Applies the scheduled work: computed tokens advance, full blocks are
    /// cached, finished prefills and decodes sample a token, done requests leave.
    fn advance(&mut self, events: &mut Vec<EngineEvent>) {
        let block_size = self.config.block_size;
        let mut running = std::mem::take(&mut self.running);
        let mut kept = std::mem::take(&mut self.running_spare);
        for mut req in running.drain(..) {
            let mut done = None;
            if req.scheduled > 0 {
                req.num_computed += req.scheduled;
                req.scheduled = 0;
                while (req.num_cached_blocks + 1) * block_size <= req.num_computed {
                    let k = req.num_cached_blocks as usize;
                    self.pool
                        .cache_full_block(req.blocks[k], req.block_hashes[k]);
                    req.num_cached_blocks += 1;
                }
                if req.num_computed == req.tokens.len() as u32 {
                    let index = req.outputs();
                    req.tokens.push(generated_token(self.seed, req.id, index));
                    self.generation_tokens_total += 1;
                    if index == 0 {
                        events.push(EngineEvent::FirstToken { id: req.id });
                    }
                    events.push(EngineEvent::Token { id: req.id, index });
                    if req.outputs() >= req.max_tokens
                        || req.tokens.len() as u32 >= self.config.max_model_len
                    {
                        done = Some(FinishReason::Length);
                    } else if !req.ignore_eos && self.samples_eos(req.id, index) {
                        done = Some(FinishReason::Stop);
                    }
                }
            }
            match done {
                Some(reason) => {
                    let event = self.release_running(req, reason);
                    events.push(event);
                }
                None => {
                    if req.tokens.len().is_multiple_of(block_size as usize) {
                        Self::extend_hashes(self.seed_hash_base(req.adapter), block_size, &mut req);
                    }
                    kept.push(req);
                }
            }
        }
        // Keep both buffers' capacity: no allocation per step once warmed up.
        self.running = kept;
        self.running_spare = running;
    }

    fn samples_eos(&self, id: u64, index: u32) -> bool {
        if self.config.eos_probability <= 0.0 {
            return false;
        }
        let x = draw(self.seed ^ 0xE05, id, u64::from(index)) >> 11;
        (x as f64 / (1u64 << 53) as f64) < self.config.eos_probability
    }

    /// Frees a request that was running and makes its `Finished` event.
    fn release_running(&mut self, req: Request, reason: FinishReason) -> EngineEvent {
        self.pool.release(&req.blocks);
        if let Some(a) = req.adapter {
            let adapter = &mut self.adapters[a as usize];
            adapter.running -= 1;
            if adapter.running == 0 {
                self.active_adapters -= 1;
            }
        }
        self.live_ids.remove(&req.id);
        EngineEvent::Finished {
            id: req.id,
            reason,
            prompt_tokens: req.prompt_len,
            completion_tokens: req.outputs(),
            cached_tokens: req.cached_tokens.unwrap_or(0),
        }
    }

    /// Removes a waiting request, queueing its `Rejected` (if any) and `Finished`.
    fn finish_waiting(&mut self, req: Request, reason: FinishReason, rejected: Option<String>) {
        if let Some(a) = req.adapter {
            self.adapters[a as usize].waiting -= 1;
        }
        self.live_ids.remove(&req.id);
        if let Some(reason) = rejected {
            self.pending_events
                .push(EngineEvent::Rejected { id: req.id, reason });
        }
        self.pending_events.push(EngineEvent::Finished {
            id: req.id,
            reason,
            prompt_tokens: req.prompt_len,
            completion_tokens: req.outputs(),
            cached_tokens: req.cached_tokens.unwrap_or(0),
        });
    }

    fn seed_hash_base(&self, adapter: Option<u32>) -> u64 {
        // The adapter is part of the key: KV computed with one adapter is not
        // valid for another. Names (not indices) keep keys stable across
        // unload/reload.
        match adapter {
            None => mix64(0x5EED),
            Some(a) => {
                let mut h = mix64(0xADA);
                for b in self.adapters[a as usize].name.bytes() {
                    h = combine(h, u64::from(b));
                }
                h
            }
        }
    }

    fn extend_block_hashes(&self, req: &mut Request) {
        let base = self.seed_hash_base(req.adapter);
        Self::extend_hashes(base, self.config.block_size, req);
    }

    fn extend_hashes(base: u64, block_size: u32, req: &mut Request) {
        let bs = block_size as usize;
        let full = req.tokens.len() / bs;
        while req.block_hashes.len() < full {
            let k = req.block_hashes.len();
            let mut h = if k == 0 {
                base
            } else {
                req.block_hashes[k - 1]
            };
            for &t in &req.tokens[k * bs..(k + 1) * bs] {
                h = combine(h, u64::from(t));
            }
            req.block_hashes.push(h);
        }
    }

    /// Current state for metrics and tests.
    pub fn stats(&self) -> EngineStats {
        let mut running_adapters = Vec::new();
        let mut waiting_adapters = Vec::new();
        let mut registered_adapters = Vec::new();
        for a in &self.adapters {
            if a.running > 0 {
                running_adapters.push(a.name.clone());
            }
            if a.waiting > 0 {
                waiting_adapters.push(a.name.clone());
            }
            if a.registered {
                registered_adapters.push(a.name.clone());
            }
        }
        let mut resident_adapters: Vec<String> = self
            .resident
            .iter()
            .map(|(a, _)| self.adapters[*a as usize].name.clone())
            .collect();
        running_adapters.sort();
        waiting_adapters.sort();
        registered_adapters.sort();
        resident_adapters.sort();
        EngineStats {
            running: self.running.len() as u32,
            waiting: self.waiting.len() as u32,
            kv_cache_usage: self.pool.usage(),
            running_adapters,
            waiting_adapters,
            max_loras: self.config.max_loras,
            block_size: self.config.block_size,
            num_gpu_blocks: self.config.num_gpu_blocks,
            prefix_queries_tokens: self.prefix_queries_tokens,
            prefix_hits_tokens: self.prefix_hits_tokens,
            preemptions: self.preemptions,
            max_num_seqs: self.config.max_num_seqs,
            max_model_len: self.config.max_model_len,
            free_blocks: self.pool.free_blocks(),
            cached_blocks: self.pool.cached_blocks() as u32,
            registered_adapters,
            resident_adapters,
            prompt_tokens_total: self.prompt_tokens_total,
            generation_tokens_total: self.generation_tokens_total,
            steps: self.steps,
        }
    }

    /// Leading prompt tokens (whole blocks) a request for `adapter` with these
    /// tokens would find in the prefix cache if admitted now. Read-only: for
    /// routing studies that need the exact cache contents (the routing
    /// benchmark's oracle), not something a real router can see.
    pub fn cached_prefix_tokens(&self, tokens: &[u32], adapter: Option<&str>) -> u32 {
        if !self.config.enable_prefix_caching || tokens.len() < 2 {
            return 0;
        }
        let base = match adapter {
            None => self.seed_hash_base(None),
            Some(name) => match self.adapter_index.get(name) {
                Some(&a) => self.seed_hash_base(Some(a)),
                None => return 0,
            },
        };
        let bs = self.config.block_size as usize;
        let max_blocks = (tokens.len() - 1) / bs;
        let mut h = base;
        let mut hit = 0u32;
        for block in tokens.chunks_exact(bs).take(max_blocks) {
            for &t in block {
                h = combine(h, u64::from(t));
            }
            if self.pool.lookup(h).is_none() {
                break;
            }
            hit += 1;
        }
        hit * self.config.block_size
    }

    /// The engine's load right now, exactly (for routing studies).
    pub fn load(&self) -> EngineLoad {
        let backlog = |r: &Request| u64::from(r.prompt_len.saturating_sub(r.num_computed));
        // A waiting request will reuse the cached blocks of its prefix that
        // are in the cache now (as admission would find them).
        let waiting_backlog = |r: &Request| {
            let cached = if self.config.enable_prefix_caching {
                let max_blocks =
                    (r.tokens.len().saturating_sub(1)) / self.config.block_size as usize;
                r.block_hashes
                    .iter()
                    .take(max_blocks)
                    .take_while(|h| self.pool.lookup(**h).is_some())
                    .count() as u32
                    * self.config.block_size
            } else {
                0
            };
            u64::from(r.prompt_len.saturating_sub(r.num_computed.max(cached)))
        };
        EngineLoad {
            running: self.running.len() as u32,
            waiting: self.waiting.len() as u32,
            pending_prefill_tokens: self.running.iter().map(backlog).sum::<u64>()
                + self.waiting.iter().map(waiting_backlog).sum::<u64>(),
            running_context_tokens: self.running.iter().map(|r| r.tokens.len() as u64).sum(),
            free_blocks: self.pool.free_blocks(),
        }
    }

    /// Whether `adapter` is in a GPU slot now.
    pub fn adapter_resident(&self, adapter: &str) -> bool {
        self.adapter_index
            .get(adapter)
            .is_some_and(|a| self.resident.iter().any(|(r, _)| r == a))
    }

    /// Blocks referenced by requests: for invariant checks.
    pub fn used_blocks(&self) -> u32 {
        self.pool.used_blocks()
    }

    /// Whether `name` is a registered adapter.
    pub fn has_adapter(&self, name: &str) -> bool {
        self.adapter_index
            .get(name)
            .is_some_and(|&i| self.adapters[i as usize].registered)
    }

    /// Makes an adapter available to requests (`/v1/load_lora_adapter`).
    pub fn register_adapter(&mut self, name: &str) -> Result<(), EngineError> {
        if self.config.max_loras == 0 {
            return Err(EngineError::LoraDisabled);
        }
        if name.is_empty() || name.len() > 256 || name.contains(',') {
            return Err(EngineError::InvalidAdapterName(name.to_string()));
        }
        match self.adapter_index.get(name) {
            Some(&i) if self.adapters[i as usize].registered => {
                Err(EngineError::AdapterAlreadyRegistered(name.to_string()))
            }
            Some(&i) => {
                self.adapters[i as usize].registered = true;
                Ok(())
            }
            None => {
                self.adapter_index
                    .insert(name.to_string(), self.adapters.len() as u32);
                self.adapters.push(Adapter {
                    name: name.to_string(),
                    registered: true,
                    running: 0,
                    waiting: 0,
                });
                Ok(())
            }
        }
    }

    /// Removes an adapter (`/v1/unload_lora_adapter`). New requests naming it
    /// are refused; waiting ones are rejected (and finished with `Abort`) at
    /// the next step; running ones complete.
    pub fn unregister_adapter(&mut self, name: &str) -> Result<(), EngineError> {
        let idx = match self.adapter_index.get(name) {
            Some(&i) if self.adapters[i as usize].registered => i,
            _ => return Err(EngineError::UnknownAdapter(name.to_string())),
        };
        self.adapters[idx as usize].registered = false;
        if self.adapters[idx as usize].waiting > 0 {
            let waiting = std::mem::take(&mut self.waiting);
            for req in waiting {
                if req.adapter == Some(idx) {
                    self.finish_waiting(
                        req,
                        FinishReason::Abort,
                        Some(format!("The lora adapter '{name}' was unloaded.")),
                    );
                } else {
                    self.waiting.push_back(req);
                }
            }
        }
        Ok(())
    }
}
