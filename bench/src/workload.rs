//! The request streams the benchmark offers: what users send and when.
//!
//! Each shape is a pure function of (parameters, rate, duration, seed):
//! - `sharegpt`: chat-like prompt/output lengths, Poisson arrivals;
//! - `shared-prefix`: groups of prompts sharing a long system prompt (the
//!   GIE/llm-d benchmark shape), Poisson arrivals;
//! - `multi-lora`: ShareGPT lengths, most requests for one of many LoRA
//!   adapters with Zipf popularity, pods with few adapter slots;
//! - `bursty`: a mix of the three under on/off-modulated arrivals;
//! - `preamble-N`: shared-prefix with one common N-token preamble ahead of
//!   every group's system prompt (instructions every request starts with);
//! - `chat`: shared-prefix groups sent as OpenAI chat requests (`messages`
//!   with a system and a user message; the engine sees the chat template);
//! - `multi-turn`: chat conversations whose history grows each turn;
//! - `cache-pressure`: shared-prefix on a larger-model profile with fewer KV
//!   blocks per pod and more groups than the pool's caches hold;
//! - `ladder`: shared-prefix arrivals stepping from 3 to 60 req/s (llm-d's
//!   ladder, scaled by the offered rate), past saturation;
//! - `lora-prefix`: LoRA adapters mixed with shared prefixes (each group is
//!   an application served with one adapter).
//!
//! Length distributions are log-normal fits documented in docs/ROUTING.md.

use std::fmt;
use std::str::FromStr;

use crate::rng::{Rng, WeightedIndex};
use crate::text::TextSynth;

/// The base model name requests use when they do not ask for an adapter.
pub const BASE_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    ShareGpt,
    SharedPrefix,
    MultiLora,
    Bursty,
    /// Shared-prefix with a common preamble of this many tokens.
    Preamble(u32),
    Chat,
    MultiTurn,
    CachePressure,
    Ladder,
    LoraPrefix,
}

impl WorkloadKind {
    /// The four original shapes (the default of `--workloads`).
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::ShareGpt,
        WorkloadKind::SharedPrefix,
        WorkloadKind::MultiLora,
        WorkloadKind::Bursty,
    ];

    /// Every shape, preambles at 100, 1000 and 4000 tokens.
    pub const EVERY: [WorkloadKind; 12] = [
        WorkloadKind::ShareGpt,
        WorkloadKind::SharedPrefix,
        WorkloadKind::MultiLora,
        WorkloadKind::Bursty,
        WorkloadKind::Preamble(100),
        WorkloadKind::Preamble(1000),
        WorkloadKind::Preamble(4000),
        WorkloadKind::Chat,
        WorkloadKind::MultiTurn,
        WorkloadKind::CachePressure,
        WorkloadKind::Ladder,
        WorkloadKind::LoraPrefix,
    ];

    pub fn name(self) -> String {
        match self {
            WorkloadKind::ShareGpt => "sharegpt".into(),
            WorkloadKind::SharedPrefix => "shared-prefix".into(),
            WorkloadKind::MultiLora => "multi-lora".into(),
            WorkloadKind::Bursty => "bursty".into(),
            WorkloadKind::Preamble(n) => format!("preamble-{n}"),
            WorkloadKind::Chat => "chat".into(),
            WorkloadKind::MultiTurn => "multi-turn".into(),
            WorkloadKind::CachePressure => "cache-pressure".into(),
            WorkloadKind::Ladder => "ladder".into(),
            WorkloadKind::LoraPrefix => "lora-prefix".into(),
        }
    }

    /// Whether requests come from groups sharing a system prompt.
    fn uses_groups(self) -> bool {
        !matches!(
            self,
            WorkloadKind::ShareGpt | WorkloadKind::MultiLora | WorkloadKind::MultiTurn
        )
    }

    fn uses_lora(self) -> bool {
        matches!(
            self,
            WorkloadKind::MultiLora | WorkloadKind::Bursty | WorkloadKind::LoraPrefix
        )
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(n) = s.strip_prefix("preamble-") {
            return match n.parse::<u32>() {
                Ok(n) if (1..=100_000).contains(&n) => Ok(WorkloadKind::Preamble(n)),
                _ => Err(format!(
                    "workload `{s}`: the preamble length must be 1..=100000 tokens"
                )),
            };
        }
        WorkloadKind::EVERY
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workload `{s}`; expected one of: {} (any preamble-N)",
                    WorkloadKind::EVERY.map(|k| k.name()).join(", ")
                )
            })
    }
}

/// A log-normal length distribution, clipped to `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LengthDist {
    /// Median of the distribution (exp(mu)).
    pub median: f64,
    /// Standard deviation of log(length).
    pub sigma: f64,
    pub min: u32,
    pub max: u32,
}

impl LengthDist {
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let x = rng.lognormal(self.median.ln(), self.sigma).round();
        (x as u32).clamp(self.min, self.max)
    }

    /// Mean of the unclipped distribution.
    pub fn mean(&self) -> f64 {
        self.median * (self.sigma * self.sigma / 2.0).exp()
    }
}

/// Every knob of the workload shapes, with defaults for an 8-pod pool of
/// Llama-3.1-8B on H100 (see docs/ROUTING.md for where the numbers come from).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadParams {
    /// ShareGPT prompt tokens: mean ~161 (vLLM paper, SOSP'23).
    pub sharegpt_prompt: LengthDist,
    /// ShareGPT output tokens: mean ~338.
    pub sharegpt_output: LengthDist,
    /// Shared-prefix: number of groups (each a distinct system prompt).
    pub prefix_groups: usize,
    pub prefix_system_tokens: u32,
    pub prefix_question: LengthDist,
    pub prefix_output: LengthDist,
    /// Multi-LoRA: adapters, Zipf exponent of their popularity, share of
    /// requests that name an adapter (the rest use the base model).
    pub lora_adapters: usize,
    pub lora_zipf_s: f64,
    pub lora_share: f64,
    /// Adapter slots per pod (vLLM `--max-loras`).
    pub max_loras: usize,
    /// Bursty: mean seconds in the high and low arrival state; the high state
    /// runs at `burst_factor` x the mean rate, the low state at whatever keeps
    /// the mean equal to the offered rate.
    pub burst_high_s: f64,
    pub burst_low_s: f64,
    pub burst_factor: f64,
    /// Chat and multi-turn: tokens of instructions every system message
    /// starts with (the same for all groups/conversations).
    pub chat_preamble_tokens: u32,
    /// Multi-turn: distinct application system prompts and their length,
    /// turns per conversation (uniform in [min, max]), mean think time
    /// between turns (exponential), user message lengths.
    pub turn_system_prompts: usize,
    pub turn_system_tokens: u32,
    pub turns_min: u32,
    pub turns_max: u32,
    pub think_s: f64,
    pub turn_user: LengthDist,
    /// Cache pressure: groups (more than the pool's KV holds), KV blocks per
    /// pod and the step-time profile of the larger model.
    pub pressure_groups: usize,
    pub pressure_kv_blocks: u32,
    pub pressure_profile: String,
    /// Ladder: stage rates in req/s at 100% load (scaled by the offered rate
    /// / the last stage), each held for an equal share of the run.
    pub ladder_rates: Vec<f64>,
}

impl Default for WorkloadParams {
    fn default() -> Self {
        WorkloadParams {
            sharegpt_prompt: LengthDist {
                median: 98.0,
                sigma: 1.0,
                min: 4,
                max: 4096,
            },
            sharegpt_output: LengthDist {
                median: 205.0,
                sigma: 1.0,
                min: 4,
                max: 2048,
            },
            prefix_groups: 150,
            prefix_system_tokens: 6000,
            prefix_question: LengthDist {
                median: 1200.0,
                sigma: 0.2,
                min: 200,
                max: 3000,
            },
            prefix_output: LengthDist {
                median: 150.0,
                sigma: 0.5,
                min: 16,
                max: 1000,
            },
            lora_adapters: 16,
            lora_zipf_s: 1.0,
            lora_share: 0.9,
            max_loras: 2,
            burst_high_s: 4.0,
            burst_low_s: 8.0,
            burst_factor: 2.0,
            chat_preamble_tokens: 60,
            turn_system_prompts: 8,
            turn_system_tokens: 1500,
            turns_min: 2,
            turns_max: 8,
            think_s: 6.0,
            turn_user: LengthDist {
                median: 120.0,
                sigma: 0.6,
                min: 8,
                max: 2000,
            },
            pressure_groups: 400,
            pressure_kv_blocks: 8_000,
            pressure_profile: "llama-3.1-70b-4xh100".into(),
            ladder_rates: vec![
                3.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0,
            ],
        }
    }
}

/// One request as the client sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSpec {
    pub arrival_s: f64,
    /// The prompt text (completions `prompt`).
    pub prompt: String,
    /// Prompt length in the engine's tokens.
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: u32,
    /// LoRA adapter name, or `None` for the base model.
    pub adapter: Option<String>,
    /// Shared-prefix group (for analysis only; routers never see it).
    pub group: Option<u32>,
    /// Chat requests: the `messages` as (role, content); `prompt` then holds
    /// their JSON text (what GIE's prefix scorer hashes) and the engine sees
    /// them through the chat template.
    pub messages: Option<Vec<(String, String)>>,
}

impl RequestSpec {
    /// The OpenAI `model` field of this request.
    pub fn model(&self) -> &str {
        self.adapter.as_deref().unwrap_or(BASE_MODEL)
    }
}

/// A generated request stream plus what the pods must be configured with.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub rate: f64,
    pub duration_s: f64,
    pub requests: Vec<RequestSpec>,
    /// Adapters every pod must know (registered like `--lora-modules`).
    pub adapters: Vec<String>,
    /// Adapter slots per pod; 0 = LoRA off.
    pub max_loras: usize,
    /// Engine override for this workload: (step-time profile, KV blocks per pod).
    pub engine: Option<(vllm_sim::engine::PerfProfile, u32)>,
}

/// Builds request streams; owns the calibrated text generator and tokenizer.
pub struct WorkloadGenerator<'t> {
    pub params: WorkloadParams,
    synth: TextSynth,
    tokenize: &'t (dyn Fn(&str) -> Vec<u32> + Sync),
}

enum Shape {
    ShareGpt,
    SharedPrefix,
    Lora,
    /// Shared prefix sent as a chat request.
    ChatPrefix,
    /// A group whose application runs with an adapter.
    LoraPrefix,
}

/// JSON text of chat messages as a client sends them (and GIE hashes them).
pub fn messages_json(messages: &[(String, String)]) -> String {
    let list: Vec<serde_json::Value> = messages
        .iter()
        .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

impl<'t> WorkloadGenerator<'t> {
    pub fn new(params: WorkloadParams, tokenize: &'t (dyn Fn(&str) -> Vec<u32> + Sync)) -> Self {
        let synth = TextSynth::new(|s| tokenize(s).len());
        WorkloadGenerator {
            params,
            synth,
            tokenize,
        }
    }

    pub fn adapter_names(&self) -> Vec<String> {
        (0..self.params.lora_adapters)
            .map(|i| format!("adapter-{i:02}"))
            .collect()
    }

    /// Requests arriving over `duration_s` at mean `rate` req/s (the ladder:
    /// `rate` is its last stage).
    pub fn generate(&self, kind: WorkloadKind, rate: f64, duration_s: f64, seed: u64) -> Workload {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be > 0");
        assert!(duration_s > 0.0, "duration must be > 0");
        let p = &self.params;
        let name = kind.name();
        let mut arrivals_rng = Rng::derive(seed, &format!("{name}/arrivals"));
        let mut content_rng = Rng::derive(seed, &format!("{name}/content"));
        // System prompts depend on the seed only, not on the rate, so the same
        // groups appear at every load.
        let mut prefix_rng = Rng::derive(seed, "system-prompts");
        let preamble = match kind {
            WorkloadKind::Preamble(n) => {
                let mut rng = Rng::derive(seed, "preamble");
                format!("{} ", self.synth.text_of_tokens(&mut rng, n))
            }
            _ => String::new(),
        };
        let groups = match kind {
            WorkloadKind::CachePressure => p.pressure_groups,
            _ => p.prefix_groups,
        };
        let system_prompts: Vec<String> = if kind.uses_groups() {
            (0..groups)
                .map(|g| {
                    let body = self
                        .synth
                        .text_of_tokens(&mut prefix_rng, p.prefix_system_tokens);
                    format!("{preamble}System prompt {g}. {body} ")
                })
                .collect()
        } else {
            Vec::new()
        };
        let adapters = if kind.uses_lora() {
            self.adapter_names()
        } else {
            Vec::new()
        };
        let popularity = WeightedIndex::zipf(p.lora_adapters.max(1), p.lora_zipf_s);
        let engine = match kind {
            WorkloadKind::CachePressure => {
                let profile = vllm_sim::engine::PerfProfile::builtin(&p.pressure_profile)
                    .unwrap_or_else(vllm_sim::engine::PerfProfile::llama_3_1_70b_4xh100);
                Some((profile, p.pressure_kv_blocks))
            }
            _ => None,
        };
        if kind == WorkloadKind::MultiTurn {
            let requests =
                self.conversations(&mut arrivals_rng, &mut content_rng, rate, duration_s, seed);
            return Workload {
                kind,
                rate,
                duration_s,
                requests,
                adapters,
                max_loras: 0,
                engine,
            };
        }

        let arrivals = match kind {
            WorkloadKind::Bursty => self.modulated_arrivals(&mut arrivals_rng, rate, duration_s),
            WorkloadKind::Ladder => {
                ladder_arrivals(&mut arrivals_rng, &p.ladder_rates, rate, duration_s)
            }
            _ => poisson_arrivals(&mut arrivals_rng, rate, duration_s),
        };
        let chat_preamble = if kind == WorkloadKind::Chat {
            let mut rng = Rng::derive(seed, "chat-preamble");
            self.synth
                .text_of_tokens(&mut rng, p.chat_preamble_tokens.max(1))
        } else {
            String::new()
        };
        let requests = arrivals
            .into_iter()
            .map(|arrival_s| {
                let shape = match kind {
                    WorkloadKind::ShareGpt => Shape::ShareGpt,
                    WorkloadKind::MultiLora => Shape::Lora,
                    WorkloadKind::Chat => Shape::ChatPrefix,
                    WorkloadKind::LoraPrefix => Shape::LoraPrefix,
                    WorkloadKind::Bursty => match content_rng.f64() {
                        x if x < 0.5 => Shape::ShareGpt,
                        x if x < 0.8 => Shape::SharedPrefix,
                        _ => Shape::Lora,
                    },
                    _ => Shape::SharedPrefix,
                };
                self.request(
                    shape,
                    arrival_s,
                    &mut content_rng,
                    &Groups {
                        system_prompts: &system_prompts,
                        chat_preamble: &chat_preamble,
                        adapters: &adapters,
                        popularity: &popularity,
                    },
                )
            })
            .collect();
        Workload {
            kind,
            rate,
            duration_s,
            requests,
            max_loras: if kind.uses_lora() { p.max_loras } else { 0 },
            adapters,
            engine,
        }
    }

    fn request(&self, shape: Shape, arrival_s: f64, rng: &mut Rng, g: &Groups<'_>) -> RequestSpec {
        let p = &self.params;
        let mut messages = None;
        let (prompt, max_tokens, adapter, group) = match shape {
            Shape::ShareGpt => {
                let len = p.sharegpt_prompt.sample(rng);
                let prompt = self.synth.text_of_tokens(rng, len);
                (prompt, p.sharegpt_output.sample(rng), None, None)
            }
            Shape::SharedPrefix => {
                let i = rng.below(g.system_prompts.len());
                let len = p.prefix_question.sample(rng);
                let question = self.synth.text_of_tokens(rng, len);
                let prompt = format!("{}User: {question}", g.system_prompts[i]);
                (prompt, p.prefix_output.sample(rng), None, Some(i as u32))
            }
            Shape::ChatPrefix => {
                let i = rng.below(g.system_prompts.len());
                let len = p.prefix_question.sample(rng);
                let question = self.synth.text_of_tokens(rng, len);
                let list = vec![
                    (
                        "system".to_string(),
                        format!("{}\n\n{}", g.chat_preamble, g.system_prompts[i]),
                    ),
                    ("user".to_string(), question),
                ];
                let json = messages_json(&list);
                messages = Some(list);
                (json, p.prefix_output.sample(rng), None, Some(i as u32))
            }
            Shape::Lora => {
                let adapter = (rng.f64() < p.lora_share && !g.adapters.is_empty())
                    .then(|| g.adapters[g.popularity.sample(rng)].clone());
                let len = p.sharegpt_prompt.sample(rng);
                let prompt = self.synth.text_of_tokens(rng, len);
                (prompt, p.sharegpt_output.sample(rng), adapter, None)
            }
            Shape::LoraPrefix => {
                // Group i belongs to adapter i % A; base-model requests use any group.
                let n = g.system_prompts.len();
                let a_count = g.adapters.len().max(1);
                let (adapter, i) = if rng.f64() < p.lora_share && !g.adapters.is_empty() {
                    let a = g.popularity.sample(rng) % a_count;
                    // the groups g < n with g % A == a (fewer groups than adapters: share)
                    let i = if a < n {
                        let own = (n - a).div_ceil(a_count);
                        rng.below(own) * a_count + a
                    } else {
                        a % n
                    };
                    (Some(g.adapters[a].clone()), i)
                } else {
                    (None, rng.below(n))
                };
                let len = p.prefix_question.sample(rng);
                let question = self.synth.text_of_tokens(rng, len);
                let prompt = format!("{}User: {question}", g.system_prompts[i]);
                (prompt, p.prefix_output.sample(rng), adapter, Some(i as u32))
            }
        };
        let engine_text = match &messages {
            Some(list) => vllm_sim::engine::tokenizer::render_chat(list),
            None => prompt.clone(),
        };
        let prompt_tokens = (self.tokenize)(&engine_text);
        RequestSpec {
            arrival_s,
            prompt,
            prompt_tokens,
            max_tokens,
            adapter,
            group,
            messages,
        }
    }

    /// Multi-turn chat: conversations start as a Poisson process (at `rate` /
    /// mean turns, so requests arrive at ~`rate`); each sends its turns one
    /// think time apart, every turn carrying the whole history so far (the
    /// assistant's earlier replies as synthetic text of their lengths).
    fn conversations(
        &self,
        arrivals: &mut Rng,
        content: &mut Rng,
        rate: f64,
        duration_s: f64,
        seed: u64,
    ) -> Vec<RequestSpec> {
        let p = &self.params;
        let (lo, hi) = (p.turns_min.max(1), p.turns_max.max(p.turns_min.max(1)));
        let mean_turns = f64::from(lo + hi) / 2.0;
        let mut sys_rng = Rng::derive(seed, "turn-system-prompts");
        let preamble = self.synth.text_of_tokens(
            &mut Rng::derive(seed, "chat-preamble"),
            p.chat_preamble_tokens.max(1),
        );
        let apps: Vec<String> = (0..p.turn_system_prompts.max(1))
            .map(|a| {
                let body = self
                    .synth
                    .text_of_tokens(&mut sys_rng, p.turn_system_tokens);
                format!("{preamble}\n\nAssistant {a}. {body}")
            })
            .collect();
        let mut out = Vec::new();
        let starts = poisson_arrivals(arrivals, rate / mean_turns, duration_s);
        for (c, start) in starts.into_iter().enumerate() {
            let turns = lo + content.below((hi - lo + 1) as usize) as u32;
            let app = content.below(apps.len());
            let mut history = vec![("system".to_string(), apps[app].clone())];
            let mut t = start;
            for _ in 0..turns {
                if t >= duration_s {
                    break;
                }
                let user_len = p.turn_user.sample(content);
                history.push((
                    "user".to_string(),
                    self.synth.text_of_tokens(content, user_len),
                ));
                let max_tokens = p.sharegpt_output.sample(content);
                let engine_text = vllm_sim::engine::tokenizer::render_chat(&history);
                out.push(RequestSpec {
                    arrival_s: t,
                    prompt: messages_json(&history),
                    prompt_tokens: (self.tokenize)(&engine_text),
                    max_tokens,
                    adapter: None,
                    group: Some(c as u32),
                    messages: Some(history.clone()),
                });
                let reply = self.synth.text_of_tokens(content, max_tokens);
                history.push(("assistant".to_string(), reply));
                t += arrivals.exponential(1.0 / p.think_s.max(1e-3));
            }
        }
        out.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        out
    }

    /// Two-state Markov-modulated Poisson arrivals with mean `rate`.
    fn modulated_arrivals(&self, rng: &mut Rng, rate: f64, duration_s: f64) -> Vec<f64> {
        let p = &self.params;
        let high_share = p.burst_high_s / (p.burst_high_s + p.burst_low_s);
        let high_rate = rate * p.burst_factor;
        let low_rate = ((rate - high_share * high_rate) / (1.0 - high_share)).max(rate * 0.05);
        let mut out = Vec::new();
        let mut t = 0.0;
        let mut high = false;
        while t < duration_s {
            let (state_rate, mean_len) = if high {
                (high_rate, p.burst_high_s)
            } else {
                (low_rate, p.burst_low_s)
            };
            let end = (t + rng.exponential(1.0 / mean_len)).min(duration_s);
            let mut a = t + rng.exponential(state_rate);
            while a < end {
                out.push(a);
                a += rng.exponential(state_rate);
            }
            t = end;
            high = !high;
        }
        out
    }
}

/// What the request builder picks groups and adapters from.
struct Groups<'a> {
    system_prompts: &'a [String],
    chat_preamble: &'a str,
    adapters: &'a [String],
    popularity: &'a WeightedIndex,
}

/// The ladder: equal-length stages at `stages` req/s scaled so the last
/// stage runs at `peak`, each stage a Poisson process.
pub fn ladder_arrivals(rng: &mut Rng, stages: &[f64], peak: f64, duration_s: f64) -> Vec<f64> {
    let last = stages.last().copied().unwrap_or(1.0).max(1e-9);
    let n = stages.len().max(1);
    let stage_s = duration_s / n as f64;
    let mut out = Vec::new();
    for (i, r) in stages.iter().enumerate() {
        let rate = (r / last * peak).max(1e-6);
        let start = i as f64 * stage_s;
        let mut t = start + rng.exponential(rate);
        while t < start + stage_s {
            out.push(t);
            t += rng.exponential(rate);
        }
    }
    out
}

/// Poisson arrival times in [0, duration).
pub fn poisson_arrivals(rng: &mut Rng, rate: f64, duration_s: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity((rate * duration_s * 1.1) as usize + 8);
    let mut t = rng.exponential(rate);
    while t < duration_s {
        out.push(t);
        t += rng.exponential(rate);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<u32> {
        s.split_whitespace().map(|w| w.len() as u32).collect()
    }

    fn small_params() -> WorkloadParams {
        WorkloadParams {
            prefix_groups: 4,
            prefix_system_tokens: 300,
            ..WorkloadParams::default()
        }
    }

    #[test]
    fn poisson_rate_and_order() {
        let mut rng = Rng::new(9);
        let a = poisson_arrivals(&mut rng, 20.0, 500.0);
        assert!((a.len() as f64 / 500.0 - 20.0).abs() < 0.6, "{}", a.len());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn sharegpt_lengths_match_the_fit() {
        let tok = words;
        let g = WorkloadGenerator::new(WorkloadParams::default(), &tok);
        let w = g.generate(WorkloadKind::ShareGpt, 50.0, 100.0, 1);
        let n = w.requests.len() as f64;
        let mean_out = w
            .requests
            .iter()
            .map(|r| f64::from(r.max_tokens))
            .sum::<f64>()
            / n;
        let mean_in = w
            .requests
            .iter()
            .map(|r| r.prompt_tokens.len() as f64)
            .sum::<f64>()
            / n;
        assert!((mean_out - 338.0).abs() < 25.0, "{mean_out}");
        assert!((mean_in - 161.0).abs() < 15.0, "{mean_in}");
        assert!(w.adapters.is_empty() && w.max_loras == 0);
    }

    #[test]
    fn shared_prefix_groups_share_their_text() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::SharedPrefix, 10.0, 20.0, 2);
        let same_group: Vec<&RequestSpec> =
            w.requests.iter().filter(|r| r.group == Some(0)).collect();
        assert!(same_group.len() >= 2);
        let head = &same_group[0].prompt[..1000];
        assert!(same_group.iter().all(|r| r.prompt.starts_with(head)));
        let other = w.requests.iter().find(|r| r.group == Some(1)).unwrap();
        assert!(!other.prompt.starts_with(head));
        // the same groups at another rate
        let w2 = g.generate(WorkloadKind::SharedPrefix, 5.0, 20.0, 2);
        let g0 = w2.requests.iter().find(|r| r.group == Some(0)).unwrap();
        assert!(g0.prompt.starts_with(head));
    }

    #[test]
    fn multi_lora_popularity_is_skewed() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::MultiLora, 50.0, 100.0, 3);
        let count = |name: &str| {
            w.requests
                .iter()
                .filter(|r| r.adapter.as_deref() == Some(name))
                .count()
        };
        assert!(count("adapter-00") > 3 * count("adapter-07"));
        let base = w.requests.iter().filter(|r| r.adapter.is_none()).count() as f64;
        assert!((base / w.requests.len() as f64 - 0.1).abs() < 0.03);
        assert_eq!(w.max_loras, 2);
        assert_eq!(w.adapters.len(), 16);
    }

    #[test]
    fn bursty_keeps_the_mean_rate_and_is_burstier_than_poisson() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::Bursty, 10.0, 800.0, 4);
        let rate = w.requests.len() as f64 / 800.0;
        assert!((rate - 10.0).abs() < 1.0, "{rate}");
        // variance of per-second counts: Poisson has var = mean
        let mut per_s = vec![0f64; 800];
        for r in &w.requests {
            per_s[r.arrival_s as usize] += 1.0;
        }
        let var = per_s.iter().map(|c| (c - rate).powi(2)).sum::<f64>() / 800.0;
        assert!(var > 2.0 * rate, "var {var} not bursty");
    }

    #[test]
    fn a_preamble_is_common_to_every_group() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::Preamble(200), 10.0, 20.0, 2);
        let a = w.requests.iter().find(|r| r.group == Some(0)).unwrap();
        let b = w.requests.iter().find(|r| r.group == Some(1)).unwrap();
        let common = a
            .prompt
            .bytes()
            .zip(b.prompt.bytes())
            .take_while(|(x, y)| x == y)
            .count();
        // ~200 tokens of preamble: far more than ours' 256-byte affinity key
        assert!(common > 600, "{common}");
        assert!("preamble-4000".parse::<WorkloadKind>().unwrap() == WorkloadKind::Preamble(4000));
        assert!("preamble-x".parse::<WorkloadKind>().is_err());
    }

    #[test]
    fn chat_requests_carry_messages_and_the_engine_sees_the_template() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::Chat, 10.0, 10.0, 2);
        let r = &w.requests[0];
        let m = r.messages.as_ref().unwrap();
        assert_eq!(m[0].0, "system");
        assert_eq!(m[1].0, "user");
        let v: serde_json::Value = serde_json::from_str(&r.prompt).unwrap();
        assert_eq!(v[1]["role"], "user");
        let rendered = vllm_sim::engine::tokenizer::render_chat(m);
        assert_eq!(r.prompt_tokens, words(&rendered));
    }

    #[test]
    fn multi_turn_history_grows_each_turn() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::MultiTurn, 5.0, 60.0, 2);
        let conv = w.requests.iter().find_map(|r| r.group).unwrap();
        let turns: Vec<&RequestSpec> = w
            .requests
            .iter()
            .filter(|r| r.group == Some(conv))
            .collect();
        assert!(turns.len() >= 2);
        for pair in turns.windows(2) {
            let (a, b) = (
                pair[0].messages.as_ref().unwrap(),
                pair[1].messages.as_ref().unwrap(),
            );
            assert_eq!(b.len(), a.len() + 2, "a reply and a new user message");
            assert_eq!(&b[..a.len()], &a[..]);
            assert!(pair[0].arrival_s < pair[1].arrival_s);
        }
    }

    #[test]
    fn cache_pressure_ladder_and_lora_prefix_shapes() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let w = g.generate(WorkloadKind::CachePressure, 10.0, 10.0, 2);
        let (profile, blocks) = w.engine.clone().unwrap();
        assert_eq!(profile.name, "llama-3.1-70b-4xh100");
        assert_eq!(blocks, 8_000);
        assert!(
            w.requests.iter().any(|r| r.group.unwrap() >= 4),
            "more groups than shared-prefix"
        );
        let w = g.generate(WorkloadKind::Ladder, 60.0, 120.0, 2);
        let first = w.requests.iter().filter(|r| r.arrival_s < 10.0).count();
        let last = w.requests.iter().filter(|r| r.arrival_s >= 110.0).count();
        assert!(first < 80 && last > 450, "{first} {last}");
        let g = WorkloadGenerator::new(
            WorkloadParams {
                prefix_groups: 150,
                prefix_system_tokens: 50,
                ..WorkloadParams::default()
            },
            &tok,
        );
        let w = g.generate(WorkloadKind::LoraPrefix, 20.0, 30.0, 2);
        let a = g.adapter_names().len() as u32;
        for r in &w.requests {
            if let Some(ad) = &r.adapter {
                let idx: u32 = ad.trim_start_matches("adapter-").parse().unwrap();
                assert_eq!(
                    r.group.unwrap() % a,
                    idx,
                    "a group is served with its adapter"
                );
            }
        }
        assert_eq!(w.max_loras, 2);
    }

    #[test]
    fn same_seed_same_workload() {
        let tok = words;
        let g = WorkloadGenerator::new(small_params(), &tok);
        let a = g.generate(WorkloadKind::Bursty, 5.0, 30.0, 8);
        let b = g.generate(WorkloadKind::Bursty, 5.0, 30.0, 8);
        assert_eq!(a.requests, b.requests);
        let c = g.generate(WorkloadKind::Bursty, 5.0, 30.0, 9);
        assert_ne!(a.requests, c.requests);
    }
}
