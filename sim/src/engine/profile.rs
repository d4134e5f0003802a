//! The step-time model: how long one continuous-batching step takes on the
//! simulated GPU, as a function of what the step contains.
//!
//! `step = overhead + weight_read + prefill_tokens * prefill_token
//!         + prefill_pairs * prefill_attention_pair
//!         + decode_context_tokens * decode_context_token
//!         + sequences * per_sequence + adapter_loads * lora_load`
//!
//! Memory-bound decode reads all weights once per step (the batch shares that
//! read) plus every scheduled sequence's KV cache; compute-bound prefill pays
//! per prompt token. The defaults (`llama-3.1-8b-h100`) are derived below and
//! land in the ranges of ../shared/reference/FACTS.md; see docs/SIMULATOR.md.

use serde::{Deserialize, Serialize};

/// Step-time constants of one model on one accelerator. All times in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerfProfile {
    /// Name shown in logs and `/admin/state`.
    pub name: String,
    /// Per-step fixed cost: scheduler, input preparation, kernel launches,
    /// sampling. ~2 ms is what vLLM V1 spends outside the GEMMs at small batch.
    pub step_overhead_s: f64,
    /// Reading all weights once per step: 16.06 GB of BF16 weights at the
    /// H100 SXM's ~3.35 TB/s HBM bandwidth = 4.8 ms.
    pub weight_read_s: f64,
    /// Compute per prefill token: 2 * 8.03e9 FLOP per token at ~400 TFLOP/s
    /// achieved (about 40% of 989 TFLOP/s dense BF16) = 40 us.
    pub prefill_token_s: f64,
    /// Attention compute per (prefill token, earlier context token) pair:
    /// 4 * 4096 hidden * 32 layers FLOP = 524 kFLOP at ~400 TFLOP/s = 1.3 ns.
    /// Makes long prompts super-linear as in real prefill.
    pub prefill_attention_pair_s: f64,
    /// KV-cache read per context token of each decoding sequence: 128 KiB per
    /// token (32 layers * 8 KV heads * 128 dims * 2 (K,V) * 2 bytes) at
    /// 3.35 TB/s = 39 ns.
    pub decode_context_token_s: f64,
    /// Per scheduled sequence: sampling, detokenisation and bookkeeping,
    /// ~50 us per sequence in vLLM V1.
    pub per_sequence_s: f64,
}

impl PerfProfile {
    /// Llama-3.1-8B-Instruct, BF16, one H100 SXM 80 GB. Derivations are on the
    /// fields; the resulting shape (checked by `tests/calibration.rs`):
    /// 1k-token prefill alone ≈ 48 ms, decode batch 1 ≈ 6.9 ms, decode batch 64
    /// at 1k context ≈ 12.5 ms, batch 64 plus a 512-token chunk ≈ 33 ms.
    pub fn llama_3_1_8b_h100() -> Self {
        PerfProfile {
            name: "llama-3.1-8b-h100".to_string(),
            step_overhead_s: 0.002,
            weight_read_s: 0.0048,
            prefill_token_s: 40e-6,
            prefill_attention_pair_s: 1.3e-9,
            decode_context_token_s: 39e-9,
            per_sequence_s: 50e-6,
        }
    }

    /// Llama-3.1-70B, FP8, on 4 H100 with tensor parallelism 4: 70 GB of
    /// weights over 4 x 3.35 TB/s = 5.2 ms, plus all-reduce overhead; 2 * 70e9
    /// FLOP per token over 4 GPUs at ~400 TFLOP/s each = 88 us; KV 320 KiB per
    /// token spread over 4 GPUs.
    pub fn llama_3_1_70b_4xh100() -> Self {
        PerfProfile {
            name: "llama-3.1-70b-4xh100".to_string(),
            step_overhead_s: 0.004,
            weight_read_s: 0.0052,
            prefill_token_s: 88e-6,
            prefill_attention_pair_s: 2.0e-9,
            decode_context_token_s: 24e-9,
            per_sequence_s: 60e-6,
        }
    }

    /// Names accepted by `--profile`.
    pub const BUILTIN_NAMES: [&'static str; 2] = ["llama-3.1-8b-h100", "llama-3.1-70b-4xh100"];

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "llama-3.1-8b-h100" => Some(Self::llama_3_1_8b_h100()),
            "llama-3.1-70b-4xh100" => Some(Self::llama_3_1_70b_4xh100()),
            _ => None,
        }
    }

    /// Rejects constants that would make time run backwards or stand still.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("step_overhead_s", self.step_overhead_s),
            ("weight_read_s", self.weight_read_s),
            ("prefill_token_s", self.prefill_token_s),
            ("prefill_attention_pair_s", self.prefill_attention_pair_s),
            ("decode_context_token_s", self.decode_context_token_s),
            ("per_sequence_s", self.per_sequence_s),
        ];
        for (name, v) in fields {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "profile field {name} must be a finite number >= 0, got {v}"
                ));
            }
        }
        if self.step_overhead_s + self.weight_read_s <= 0.0 {
            return Err("profile must have step_overhead_s + weight_read_s > 0".to_string());
        }
        Ok(())
    }

    /// Duration of a step with the given content.
    pub fn step_time(&self, work: &StepWork) -> f64 {
        self.step_overhead_s
            + self.weight_read_s
            + work.prefill_tokens as f64 * self.prefill_token_s
            + work.prefill_attention_pairs as f64 * self.prefill_attention_pair_s
            + work.decode_context_tokens as f64 * self.decode_context_token_s
            + work.sequences as f64 * self.per_sequence_s
    }
}

impl Default for PerfProfile {
    fn default() -> Self {
        Self::llama_3_1_8b_h100()
    }
}

/// What one step computes; the input of [`PerfProfile::step_time`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepWork {
    /// Prompt (or recompute) tokens processed this step.
    pub prefill_tokens: u64,
    /// Sum over prefill chunks of chunk_len * (tokens before the chunk + chunk_len / 2).
    pub prefill_attention_pairs: u64,
    /// Sum of context lengths of the sequences decoding one token.
    pub decode_context_tokens: u64,
    /// Sequences scheduled (prefilling or decoding).
    pub sequences: u64,
}

impl StepWork {
    /// Adds one prefill chunk of `len` tokens after `done` already-computed tokens.
    pub fn add_prefill(&mut self, done: u64, len: u64) {
        self.prefill_tokens += len;
        self.prefill_attention_pairs += len * (done + len / 2);
        self.sequences += 1;
    }

    /// Adds one decoding sequence whose context is `context` tokens.
    pub fn add_decode(&mut self, context: u64) {
        self.decode_context_tokens += context;
        self.sequences += 1;
    }
}
