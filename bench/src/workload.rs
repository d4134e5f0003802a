//! The request streams the benchmark offers: what users send and when.
//!
//! Four shapes, each a pure function of (parameters, rate, duration, seed):
//! - `sharegpt`: chat-like prompt/output lengths, Poisson arrivals;
//! - `shared-prefix`: groups of prompts sharing a long system prompt (the
//!   GIE/llm-d benchmark shape), Poisson arrivals;
//! - `multi-lora`: ShareGPT lengths, most requests for one of many LoRA
//!   adapters with Zipf popularity, pods with few adapter slots;
//! - `bursty`: a mix of the three under on/off-modulated arrivals.
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
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::ShareGpt,
        WorkloadKind::SharedPrefix,
        WorkloadKind::MultiLora,
        WorkloadKind::Bursty,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::ShareGpt => "sharegpt",
            WorkloadKind::SharedPrefix => "shared-prefix",
            WorkloadKind::MultiLora => "multi-lora",
            WorkloadKind::Bursty => "bursty",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workload `{s}`; expected one of: {}",
                    WorkloadKind::ALL.map(|k| k.name()).join(", ")
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

    /// Requests arriving over `duration_s` at mean `rate` req/s.
    pub fn generate(&self, kind: WorkloadKind, rate: f64, duration_s: f64, seed: u64) -> Workload {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be > 0");
        assert!(duration_s > 0.0, "duration must be > 0");
        let mut arrivals_rng = Rng::derive(seed, &format!("{kind}/arrivals"));
        let mut content_rng = Rng::derive(seed, &format!("{kind}/content"));
        // System prompts depend on the seed only, not on the rate, so the same
        // groups appear at every load.
        let mut prefix_rng = Rng::derive(seed, "system-prompts");
        let uses_prefix = matches!(kind, WorkloadKind::SharedPrefix | WorkloadKind::Bursty);
        let system_prompts: Vec<String> = if uses_prefix {
            (0..self.params.prefix_groups)
                .map(|g| {
                    let body = self
                        .synth
                        .text_of_tokens(&mut prefix_rng, self.params.prefix_system_tokens);
                    format!("System prompt {g}. {body} ")
                })
                .collect()
        } else {
            Vec::new()
        };
        let uses_lora = matches!(kind, WorkloadKind::MultiLora | WorkloadKind::Bursty);
        let adapters = if uses_lora {
            self.adapter_names()
        } else {
            Vec::new()
        };
        let popularity =
            WeightedIndex::zipf(self.params.lora_adapters.max(1), self.params.lora_zipf_s);

        let arrivals = match kind {
            WorkloadKind::Bursty => self.modulated_arrivals(&mut arrivals_rng, rate, duration_s),
            _ => poisson_arrivals(&mut arrivals_rng, rate, duration_s),
        };
        let requests = arrivals
            .into_iter()
            .map(|arrival_s| {
                let shape = match kind {
                    WorkloadKind::ShareGpt => Shape::ShareGpt,
                    WorkloadKind::SharedPrefix => Shape::SharedPrefix,
                    WorkloadKind::MultiLora => Shape::Lora,
                    WorkloadKind::Bursty => match content_rng.f64() {
                        x if x < 0.5 => Shape::ShareGpt,
                        x if x < 0.8 => Shape::SharedPrefix,
                        _ => Shape::Lora,
                    },
                };
                self.request(
                    shape,
                    arrival_s,
                    &mut content_rng,
                    &system_prompts,
                    &adapters,
                    &popularity,
                )
            })
            .collect();
        Workload {
            kind,
            rate,
            duration_s,
            requests,
            adapters,
            max_loras: if uses_lora { self.params.max_loras } else { 0 },
        }
    }

    fn request(
        &self,
        shape: Shape,
        arrival_s: f64,
        rng: &mut Rng,
        system_prompts: &[String],
        adapters: &[String],
        popularity: &WeightedIndex,
    ) -> RequestSpec {
        let p = &self.params;
        let (prompt, max_tokens, adapter, group) = match shape {
            Shape::ShareGpt => {
                let len = p.sharegpt_prompt.sample(rng);
                let prompt = self.synth.text_of_tokens(rng, len);
                (prompt, p.sharegpt_output.sample(rng), None, None)
            }
            Shape::SharedPrefix => {
                let g = rng.below(system_prompts.len());
                let len = p.prefix_question.sample(rng);
                let question = self.synth.text_of_tokens(rng, len);
                let prompt = format!("{}User: {question}", system_prompts[g]);
                (prompt, p.prefix_output.sample(rng), None, Some(g as u32))
            }
            Shape::Lora => {
                let adapter = (rng.f64() < p.lora_share && !adapters.is_empty())
                    .then(|| adapters[popularity.sample(rng)].clone());
                let len = p.sharegpt_prompt.sample(rng);
                let prompt = self.synth.text_of_tokens(rng, len);
                (prompt, p.sharegpt_output.sample(rng), adapter, None)
            }
        };
        let prompt_tokens = (self.tokenize)(&prompt);
        RequestSpec {
            arrival_s,
            prompt,
            prompt_tokens,
            max_tokens,
            adapter,
            group,
        }
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
