//! The oracle: a router that sees every pod's exact queue and prefix-cache
//! contents at the moment a request arrives (read straight from the simulated
//! engines, no scrape, no staleness) and sends the request where its estimated
//! time to first token is smallest. No real router can see this much; it is
//! the bound the others are measured against.
//!
//! The estimator, per pod (all constants from the pod's own step-time profile):
//!
//! ```text
//! uncached = prompt tokens - tokens this pod's prefix cache holds for it
//! backlog  = prefill tokens already admitted or queued on the pod + uncached
//! steps    = max(1, ceil(backlog / max_num_batched_tokens))
//! per_step = overhead + weight_read + running x per_sequence
//!            + running context tokens x decode_context_token
//! ttft     = backlog x prefill_token + steps x per_step
//!            + uncached x (cached + uncached / 2) x prefill_attention_pair
//!            + lora_load if the request's adapter is not in a GPU slot
//! ```
//!
//! It ignores what decode does to the queue over the wait, chunking order,
//! and KV-capacity stalls (a pod whose free blocks cannot hold the uncached
//! prompt gets one extra step per missing 8192 tokens instead). Ties go to a
//! random pod among the best.

use vllm_sim::engine::Engine;

use crate::rng::Rng;
use crate::workload::RequestSpec;

/// Estimated seconds until `req`'s first token if it were sent to `engine` now.
pub fn estimate_ttft_s(engine: &Engine, req: &RequestSpec) -> f64 {
    let cfg = engine.config();
    let p = &cfg.profile;
    let len = req.prompt_tokens.len() as u64;
    let cached =
        u64::from(engine.cached_prefix_tokens(&req.prompt_tokens, req.adapter.as_deref())).min(len);
    let uncached = len - cached;
    let load = engine.load();
    let backlog = load.pending_prefill_tokens + uncached;
    let batch = u64::from(cfg.max_num_batched_tokens.max(1));
    let mut steps = backlog.div_ceil(batch).max(1);
    let need_blocks = uncached.div_ceil(u64::from(cfg.block_size.max(1)));
    if need_blocks > u64::from(load.free_blocks) {
        steps +=
            (need_blocks - u64::from(load.free_blocks)) * u64::from(cfg.block_size) / batch + 1;
    }
    let per_step = p.step_overhead_s
        + p.weight_read_s
        + f64::from(load.running) * p.per_sequence_s
        + load.running_context_tokens as f64 * p.decode_context_token_s;
    let attention =
        uncached as f64 * (cached as f64 + uncached as f64 / 2.0) * p.prefill_attention_pair_s;
    let lora = match req.adapter.as_deref() {
        Some(a) if !engine.adapter_resident(a) => cfg.lora_load_s,
        _ => 0.0,
    };
    backlog as f64 * p.prefill_token_s + steps as f64 * per_step + attention + lora
}

/// The pod with the smallest estimate (random among exact ties).
pub fn pick(engines: &[&Engine], req: &RequestSpec, rng: &mut Rng) -> usize {
    let mut best: Vec<usize> = Vec::new();
    let mut best_t = f64::INFINITY;
    for (i, e) in engines.iter().enumerate() {
        let t = estimate_ttft_s(e, req);
        if t < best_t - 1e-12 {
            best_t = t;
            best.clear();
            best.push(i);
        } else if (t - best_t).abs() <= 1e-12 {
            best.push(i);
        }
    }
    match best.len() {
        0 => 0,
        1 => best[0],
        n => best[rng.below(n)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vllm_sim::engine::{EngineConfig, EngineRequest};

    fn spec(tokens: Vec<u32>) -> RequestSpec {
        RequestSpec {
            arrival_s: 0.0,
            prompt: String::new(),
            prompt_tokens: tokens,
            max_tokens: 4,
            adapter: None,
            group: None,
            messages: None,
        }
    }

    #[test]
    fn prefers_the_pod_holding_the_prefix_then_the_idle_one() {
        let mut warm = Engine::new(EngineConfig::default(), 1);
        let cold = Engine::new(EngineConfig::default(), 2);
        let prompt: Vec<u32> = (0..4000).map(|i| i % 500 + 10).collect();
        warm.add_request(EngineRequest {
            id: 1,
            prompt_tokens: prompt.clone(),
            max_tokens: 1,
            adapter: None,
            ignore_eos: true,
        })
        .unwrap();
        let mut now = 0.0;
        while warm.has_work() {
            now += warm.step(now).duration_s;
        }
        let mut rng = Rng::new(3);
        let req = spec(prompt.clone());
        assert!(warm.cached_prefix_tokens(&prompt, None) >= 3984);
        assert!(estimate_ttft_s(&warm, &req) < estimate_ttft_s(&cold, &req) / 5.0);
        assert_eq!(pick(&[&cold, &warm], &req, &mut rng), 1);
        // a different prompt: both cold, the idle one (no backlog) wins over a busy one
        let mut busy = Engine::new(EngineConfig::default(), 4);
        busy.add_request(EngineRequest {
            id: 2,
            prompt_tokens: vec![7; 20_000],
            max_tokens: 1,
            adapter: None,
            ignore_eos: true,
        })
        .unwrap();
        let other = spec((0..3000).map(|i| i % 300 + 900).collect());
        assert_eq!(pick(&[&busy, &cold], &other, &mut rng), 1);
    }
}
