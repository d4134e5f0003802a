//! Invariants of the engine model, checked on the public API.

use vllm_sim::engine::{
    generated_token, Engine, EngineConfig, EngineError, EngineEvent, EngineRequest, FinishReason,
};

fn small_config() -> EngineConfig {
    EngineConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 256,
        block_size: 16,
        num_gpu_blocks: 64,
        max_model_len: 1024,
        max_loras: 1,
        ..EngineConfig::default()
    }
}

fn req(id: u64, prompt: Vec<u32>, max_tokens: u32) -> EngineRequest {
    EngineRequest {
        id,
        prompt_tokens: prompt,
        max_tokens,
        adapter: None,
        ignore_eos: true,
    }
}

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (seed * 7919 + i * 31) % 100_000)
        .collect()
}

/// Steps until idle (bounded), checking the KV invariant after every step;
/// returns (time, event) pairs.
fn run(engine: &mut Engine, max_steps: usize) -> Vec<(f64, EngineEvent)> {
    let mut now = 0.0;
    let mut out = Vec::new();
    for _ in 0..max_steps {
        if !engine.has_work() {
            return out;
        }
        let r = engine.step(now);
        assert!(r.duration_s >= 0.0 && r.duration_s.is_finite());
        now += r.duration_s;
        let s = engine.stats();
        assert!(engine.used_blocks() <= s.num_gpu_blocks, "KV over capacity");
        assert!((0.0..=1.0).contains(&s.kv_cache_usage));
        assert!(s.running <= engine.config().max_num_seqs);
        assert!(
            s.running_adapters.len() as u32 <= s.max_loras,
            "max_loras exceeded"
        );
        out.extend(r.events.into_iter().map(|e| (now, e)));
    }
    panic!("engine still busy after {max_steps} steps");
}

fn finished(events: &[(f64, EngineEvent)]) -> Vec<(u64, FinishReason, u32, u32, u32)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            EngineEvent::Finished {
                id,
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => Some((
                *id,
                *reason,
                *prompt_tokens,
                *completion_tokens,
                *cached_tokens,
            )),
            _ => None,
        })
        .collect()
}

fn first_token_order(events: &[(f64, EngineEvent)]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            EngineEvent::FirstToken { id } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn every_accepted_request_finishes_once_with_all_its_tokens() {
    let mut e = Engine::new(small_config(), 1);
    for id in 0..40 {
        e.add_request(req(
            id,
            prompt(id as u32, 20 + (id as usize * 13) % 200),
            1 + (id as u32 * 7) % 60,
        ))
        .unwrap();
    }
    let events = run(&mut e, 100_000);
    let fin = finished(&events);
    assert_eq!(fin.len(), 40);
    for id in 0..40u64 {
        let f: Vec<_> = fin.iter().filter(|f| f.0 == id).collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1, FinishReason::Length);
        assert_eq!(f[0].3, 1 + (id as u32 * 7) % 60);
        // Token indices 0..n, each exactly once, in order.
        let idx: Vec<u32> = events
            .iter()
            .filter_map(|(_, ev)| match ev {
                EngineEvent::Token { id: i, index } if *i == id => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(idx, (0..f[0].3).collect::<Vec<_>>());
    }
    let s = e.stats();
    assert_eq!((s.running, s.waiting), (0, 0));
    assert_eq!(e.used_blocks(), 0, "all blocks returned");
}

#[test]
fn admission_is_first_come_first_served() {
    let cfg = EngineConfig {
        max_num_seqs: 2,
        ..small_config()
    };
    let mut e = Engine::new(cfg, 1);
    for id in 0..10 {
        e.add_request(req(id, prompt(id as u32, 40), 5)).unwrap();
    }
    let events = run(&mut e, 10_000);
    assert_eq!(first_token_order(&events), (0..10).collect::<Vec<_>>());
}

#[test]
fn kv_pressure_preempts_the_newest_and_recomputes_it() {
    // 24 blocks; 4 requests of 64 prompt tokens (4 blocks) growing by 100
    // tokens each cannot all stay resident.
    let cfg = EngineConfig {
        num_gpu_blocks: 24,
        max_num_batched_tokens: 1024,
        ..small_config()
    };
    let mut e = Engine::new(cfg, 3);
    for id in 0..4 {
        e.add_request(req(id, prompt(id as u32, 64), 100)).unwrap();
    }
    let events = run(&mut e, 100_000);
    let preempted: Vec<u64> = events
        .iter()
        .filter_map(|(_, ev)| match ev {
            EngineEvent::Preempted { id } => Some(*id),
            _ => None,
        })
        .collect();
    assert!(!preempted.is_empty(), "expected preemptions");
    assert_eq!(
        preempted[0], 3,
        "the most recently admitted request goes first"
    );
    assert_eq!(e.stats().preemptions, preempted.len() as u64);
    let fin = finished(&events);
    assert_eq!(fin.len(), 4);
    assert!(
        fin.iter().all(|f| f.3 == 100),
        "recomputed requests still complete"
    );
}

#[test]
fn max_loras_limits_distinct_adapters_in_a_batch() {
    let cfg = EngineConfig {
        max_loras: 2,
        ..small_config()
    };
    let mut e = Engine::new(cfg, 1);
    for a in ["a", "b", "c"] {
        e.register_adapter(a).unwrap();
    }
    for id in 0..9u64 {
        let mut r = req(id, prompt(id as u32, 30), 20);
        r.adapter = Some(["a", "b", "c"][(id % 3) as usize].to_string());
        e.add_request(r).unwrap();
    }
    let first = e.step(0.0);
    let s = e.stats();
    assert_eq!(s.running_adapters, vec!["a", "b"]);
    assert_eq!(s.waiting_adapters, vec!["c"]);
    assert_eq!(s.waiting, 3);
    // Adapter loads cost time in the step that loads them.
    assert!(first.duration_s >= 2.0 * e.config().lora_load_s);
    let events = run(&mut e, 10_000);
    assert_eq!(finished(&events).len(), 9);
    assert_eq!(e.stats().resident_adapters.len(), 2);
}

#[test]
fn prefix_hits_only_cover_full_cached_blocks() {
    let mut e = Engine::new(small_config(), 1);
    let base = prompt(9, 40);
    e.add_request(req(0, base.clone(), 1)).unwrap();
    run(&mut e, 100);
    let hit = |e: &mut Engine, id: u64, p: Vec<u32>, adapter: Option<&str>| {
        let mut r = req(id, p, 1);
        r.adapter = adapter.map(str::to_string);
        e.add_request(r).unwrap();
        finished(&run(e, 100))[0].4
    };
    // 40 tokens cached as 2 full blocks (32 tokens) + a partial block.
    assert_eq!(hit(&mut e, 1, base.clone(), None), 32);
    let mut longer = base.clone();
    longer.extend(prompt(5, 30));
    assert_eq!(hit(&mut e, 2, longer, None), 32);
    assert_eq!(hit(&mut e, 3, base[..33].to_vec(), None), 32);
    // 32 tokens exactly: the last token must be computed, so one block hits.
    assert_eq!(hit(&mut e, 4, base[..32].to_vec(), None), 16);
    assert_eq!(hit(&mut e, 5, base[..31].to_vec(), None), 16);
    let mut diverging = base.clone();
    diverging[5] += 1;
    assert_eq!(hit(&mut e, 6, diverging, None), 0);
    // KV computed for the base model is not valid for an adapter.
    e.register_adapter("x").unwrap();
    assert_eq!(hit(&mut e, 7, base.clone(), Some("x")), 0);
    let s = e.stats();
    assert!(s.prefix_hits_tokens == 32 * 3 + 16 * 2);
    assert!(s.prefix_queries_tokens > s.prefix_hits_tokens);
}

#[test]
fn freed_cached_blocks_are_evicted_lru_under_pressure() {
    let cfg = EngineConfig {
        num_gpu_blocks: 10,
        ..small_config()
    };
    let mut e = Engine::new(cfg, 1);
    e.add_request(req(0, prompt(1, 64), 1)).unwrap();
    run(&mut e, 100);
    // Fill the cache with other prompts so the first one is evicted.
    e.add_request(req(1, prompt(2, 150), 1)).unwrap();
    run(&mut e, 100);
    e.add_request(req(2, prompt(1, 64), 1)).unwrap();
    let fin = finished(&run(&mut e, 100));
    assert_eq!(fin[0].4, 0);
}

#[test]
fn same_seed_gives_the_same_trace() {
    let trace = |seed: u64| {
        let mut e = Engine::new(small_config(), seed);
        e.register_adapter("a").unwrap();
        for id in 0..30u64 {
            let mut r = req(
                id,
                prompt(id as u32 % 4, 50 + id as usize),
                10 + id as u32 % 17,
            );
            if id % 4 == 0 {
                r.adapter = Some("a".into());
            }
            e.add_request(r).unwrap();
        }
        let ev = run(&mut e, 100_000);
        format!("{ev:?}")
    };
    assert_eq!(trace(7), trace(7));
    assert_ne!(generated_token(7, 1, 0), generated_token(8, 1, 0));
}

#[test]
fn long_prompts_are_prefilled_in_chunks() {
    let mut e = Engine::new(EngineConfig::default(), 1);
    e.add_request(req(0, prompt(1, 20_000), 2)).unwrap();
    let mut steps_to_first = 0;
    loop {
        steps_to_first += 1;
        let r = e.step(0.0);
        if r.events
            .iter()
            .any(|ev| matches!(ev, EngineEvent::FirstToken { .. }))
        {
            break;
        }
        assert!(steps_to_first < 10);
    }
    assert_eq!(steps_to_first, 3, "20,000 tokens at 8,192 per step");
}

#[test]
fn abort_frees_blocks_and_still_reports_finished() {
    let mut e = Engine::new(small_config(), 1);
    e.add_request(req(0, prompt(1, 100), 50)).unwrap();
    e.add_request(req(1, prompt(2, 100), 50)).unwrap();
    e.step(0.0);
    assert!(e.used_blocks() > 0);
    e.abort(0);
    e.abort(1);
    e.abort(99); // unknown ids are ignored
    assert_eq!(e.used_blocks(), 0);
    let fin = finished(&run(&mut e, 10));
    assert_eq!(fin.len(), 2);
    assert!(fin.iter().all(|f| f.1 == FinishReason::Abort));
    assert!(!e.has_work());
}

#[test]
fn invalid_requests_are_refused_with_reasons() {
    let mut e = Engine::new(small_config(), 1);
    assert!(matches!(
        e.add_request(req(0, prompt(1, 1000), 100)),
        Err(EngineError::ContextTooLong {
            max_model_len: 1024,
            total: 1100,
            ..
        })
    ));
    assert_eq!(
        e.add_request(req(0, vec![], 1)),
        Err(EngineError::EmptyPrompt)
    );
    assert_eq!(
        e.add_request(req(0, vec![1], 0)),
        Err(EngineError::InvalidMaxTokens)
    );
    let mut r = req(0, vec![1], 1);
    r.adapter = Some("ghost".into());
    assert_eq!(
        e.add_request(r),
        Err(EngineError::UnknownAdapter("ghost".into()))
    );
    e.add_request(req(5, vec![1], 1)).unwrap();
    assert_eq!(
        e.add_request(req(5, vec![1], 1)),
        Err(EngineError::DuplicateId(5))
    );
    let big = EngineConfig {
        num_gpu_blocks: 4,
        ..small_config()
    };
    let mut e = Engine::new(big, 1);
    assert!(matches!(
        e.add_request(req(0, prompt(1, 100), 1)),
        Err(EngineError::ExceedsKvCapacity { .. })
    ));
}

#[test]
fn unloading_an_adapter_rejects_its_waiting_requests() {
    let mut e = Engine::new(small_config(), 1);
    e.register_adapter("a").unwrap();
    assert_eq!(
        e.register_adapter("a"),
        Err(EngineError::AdapterAlreadyRegistered("a".into()))
    );
    let mut r = req(0, prompt(1, 20), 5);
    r.adapter = Some("a".into());
    e.add_request(r).unwrap();
    e.unregister_adapter("a").unwrap();
    let events = run(&mut e, 10);
    assert!(matches!(events[0].1, EngineEvent::Rejected { id: 0, .. }));
    assert_eq!(finished(&events)[0].1, FinishReason::Abort);
    assert!(e.unregister_adapter("a").is_err());
}

#[test]
fn eos_sampling_ends_requests_early_unless_ignored() {
    let cfg = EngineConfig {
        eos_probability: 0.2,
        ..small_config()
    };
    let mut e = Engine::new(cfg, 1);
    for id in 0..20u64 {
        let mut r = req(id, prompt(1, 20), 200);
        r.ignore_eos = id % 2 == 0;
        e.add_request(r).unwrap();
    }
    let fin = finished(&run(&mut e, 100_000));
    for f in fin {
        if f.0 % 2 == 0 {
            assert_eq!((f.1, f.3), (FinishReason::Length, 200));
        } else {
            assert_eq!(f.1, FinishReason::Stop);
            assert!(f.3 < 200);
        }
    }
}
