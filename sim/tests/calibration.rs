//! The default profile reproduces the Llama-3.1-8B / H100 shape of
//! ../shared/reference/FACTS.md.

use vllm_sim::engine::{Engine, EngineConfig, EngineEvent, EngineRequest};

fn req(id: u64, len: usize, max_tokens: u32) -> EngineRequest {
    EngineRequest {
        id,
        prompt_tokens: (0..len as u32)
            .map(|i| (id as u32 * 100_003 + i * 17) % 128_000)
            .collect(),
        max_tokens,
        adapter: None,
        ignore_eos: true,
    }
}

fn in_range(what: &str, v: f64, lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&v),
        "{what}: {:.2} ms not in [{:.1}, {:.1}] ms",
        v * 1e3,
        lo * 1e3,
        hi * 1e3
    );
}

#[test]
fn defaults_match_an_h100_serving_llama_3_1_8b() {
    let c = EngineConfig::default();
    assert_eq!(c.block_size, 16);
    assert!((26_000..=28_000).contains(&c.num_gpu_blocks));
    assert_eq!(c.max_num_batched_tokens, 8192);
    assert_eq!(c.max_num_seqs, 1024);
    assert!(c.enable_prefix_caching);
}

#[test]
fn prefill_of_1k_tokens_takes_35_to_60_ms() {
    let mut e = Engine::new(EngineConfig::default(), 0);
    e.add_request(req(1, 1024, 4)).unwrap();
    let r = e.step(0.0);
    assert!(r
        .events
        .iter()
        .any(|ev| matches!(ev, EngineEvent::FirstToken { id: 1 })));
    in_range("1k prefill", r.duration_s, 0.035, 0.060);
    let decode = e.step(r.duration_s);
    in_range("decode at batch 1", decode.duration_s, 0.0065, 0.008);
}

#[test]
fn decode_at_batch_64_with_1k_context_takes_12_to_15_ms() {
    let mut e = Engine::new(EngineConfig::default(), 0);
    for id in 0..64 {
        e.add_request(req(id, 1000, 100)).unwrap();
    }
    // 64k prompt tokens prefill in 8 chunks; then everyone decodes.
    let mut now = 0.0;
    for _ in 0..9 {
        now += e.step(now).duration_s;
    }
    let r = e.step(now);
    assert_eq!(
        r.events
            .iter()
            .filter(|ev| matches!(ev, EngineEvent::Token { .. }))
            .count(),
        64
    );
    in_range("decode batch 64 @1k", r.duration_s, 0.012, 0.015);

    // A new prompt's chunk sharing the step: 20-50 ms.
    e.add_request(req(1000, 512, 10)).unwrap();
    let mixed = e.step(now + r.duration_s);
    in_range("mixed prefill+decode", mixed.duration_s, 0.020, 0.050);
}
