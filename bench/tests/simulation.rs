//! Properties of the whole simulation, with the real engine and the filter's
//! real scheduler.

use routing_bench::metrics::{summarize, Slo};
use routing_bench::policy::PolicyKind;
use routing_bench::simulation::{run, RunResult, SimConfig};
use routing_bench::workload::{Workload, WorkloadGenerator, WorkloadKind, WorkloadParams};

fn tokenize(s: &str) -> Vec<u32> {
    vllm_sim::engine::tokenizer::tokenize(s)
}

fn small_params() -> WorkloadParams {
    WorkloadParams {
        prefix_groups: 6,
        prefix_system_tokens: 800,
        ..WorkloadParams::default()
    }
}

fn workload(kind: WorkloadKind, rate: f64, seed: u64) -> Workload {
    WorkloadGenerator::new(small_params(), &tokenize).generate(kind, rate, 12.0, seed)
}

fn sim(pods: usize, seed: u64) -> SimConfig {
    let mut s = SimConfig::new(pods, seed);
    s.warmup_s = 2.0;
    s.drain_limit_s = 30.0;
    s
}

/// Everything a run produced except the policy's name.
fn outcome(r: &RunResult) -> String {
    format!(
        "{:?} {:?} {} {} {} {} {} {:?}",
        r.records,
        r.window,
        r.tokens_in_window,
        r.end_s,
        r.engine_steps,
        r.preemptions,
        r.prefix_hits_tokens,
        r.pod_request_counts
    )
}

#[test]
fn with_one_pod_every_policy_gives_the_same_result() {
    for kind in [WorkloadKind::Bursty, WorkloadKind::MultiLora] {
        let w = workload(kind, 3.0, 5);
        let mut outcomes = Vec::new();
        for policy in PolicyKind::baselines_and_ours() {
            let mut r = run(&sim(1, 5), &w, &policy).unwrap();
            assert!(r.records.iter().all(|x| x.pod == 0));
            // Everything finished, so the stop time (the first event after the
            // last finish, e.g. the shared picker's own per-pod scrapes) is
            // bookkeeping, not an outcome.
            assert!(r.records.iter().all(|x| x.finished()));
            r.end_s = 0.0;
            outcomes.push((policy.name(), outcome(&r)));
        }
        for (name, o) in &outcomes[1..] {
            assert!(
                o == &outcomes[0].1,
                "{kind}: {name} differs from {}",
                outcomes[0].0
            );
        }
    }
}

#[test]
fn a_seed_reproduces_the_numbers_exactly() {
    for policy in [
        PolicyKind::Random,
        PolicyKind::GieDefault,
        "ours".parse().unwrap(),
    ] {
        let mut cfg = sim(4, 9);
        cfg.replicas = 2;
        let a = run(&cfg, &workload(WorkloadKind::Bursty, 6.0, 9), &policy).unwrap();
        let b = run(&cfg, &workload(WorkloadKind::Bursty, 6.0, 9), &policy).unwrap();
        assert_eq!(outcome(&a), outcome(&b), "{policy}");
        assert_eq!(summarize(&a, Slo::default()), summarize(&b, Slo::default()));
        let mut other = cfg.clone();
        other.seed = 10;
        let c = run(&other, &workload(WorkloadKind::Bursty, 6.0, 10), &policy).unwrap();
        assert_ne!(
            outcome(&a),
            outcome(&c),
            "{policy}: another seed, other numbers"
        );
    }
}

#[test]
fn every_request_is_served_in_causal_order() {
    let w = workload(WorkloadKind::SharedPrefix, 4.0, 3);
    let r = run(&sim(3, 3), &w, &"ours".parse().unwrap()).unwrap();
    assert!(!r.records.is_empty());
    for (rec, spec) in r.records.iter().zip(&w.requests) {
        assert!(rec.finished(), "light load: everything finishes");
        assert!(!rec.rejected);
        assert!(rec.arrival_s <= rec.first_token_s);
        assert!(rec.first_token_s <= rec.last_token_s);
        assert!(rec.last_token_s <= rec.finished_s);
        assert!(rec.finished_s <= r.end_s);
        assert_eq!(
            rec.tokens, spec.max_tokens,
            "ignore_eos: every token generated"
        );
    }
    let s = summarize(&r, Slo::default());
    assert!(
        s.prefix_hit_rate > 0.3,
        "shared system prompts hit the cache: {}",
        s.prefix_hit_rate
    );
}

#[test]
fn prefix_aware_policies_beat_round_robin_on_shared_prefixes() {
    // A sanity check of the whole chain (workload text -> hashes -> picks ->
    // engine prefix cache), not a benchmark claim.
    let w = workload(WorkloadKind::SharedPrefix, 6.0, 4);
    let hit = |p: PolicyKind| {
        summarize(&run(&sim(4, 4), &w, &p).unwrap(), Slo::default()).prefix_hit_rate
    };
    let rr = hit(PolicyKind::RoundRobin);
    assert!(hit(PolicyKind::GieDefault) > rr);
    assert!(hit("ours".parse().unwrap()) > rr);
}

#[test]
fn bad_configurations_are_errors_not_panics() {
    let w = workload(WorkloadKind::ShareGpt, 1.0, 1);
    assert!(run(&sim(0, 1), &w, &PolicyKind::Random).is_err());
    let mut cfg = sim(2, 1);
    cfg.replicas = 0;
    assert!(run(&cfg, &w, &PolicyKind::Random).is_err());
    let mut cfg = sim(2, 1);
    cfg.engine.num_gpu_blocks = 0;
    assert!(run(&cfg, &w, &PolicyKind::Random).is_err());
}

#[test]
fn gie_is_one_picker_for_all_replicas() {
    // As deployed, one EPP serves every gateway replica: how requests spread
    // over replicas changes nothing about where GIE sends them.
    let w = workload(WorkloadKind::SharedPrefix, 6.0, 7);
    for policy in [PolicyKind::GieDefault, PolicyKind::GieInflight] {
        let pods = |replicas: usize| {
            let mut cfg = sim(4, 7);
            cfg.replicas = replicas;
            let r = run(&cfg, &w, &policy).unwrap();
            r.records.iter().map(|x| x.pod).collect::<Vec<_>>()
        };
        assert_eq!(pods(1), pods(4), "{policy}");
    }
}

#[test]
fn the_oracle_bounds_the_others_on_shared_prefixes() {
    let w = workload(WorkloadKind::SharedPrefix, 6.0, 4);
    let s = |p: PolicyKind| summarize(&run(&sim(4, 4), &w, &p).unwrap(), Slo::default());
    let oracle = s(PolicyKind::Oracle);
    let rr = s(PolicyKind::RoundRobin);
    assert!(oracle.prefix_hit_rate > rr.prefix_hit_rate);
    assert!(oracle.ttft_p90_s < rr.ttft_p90_s);
}

#[test]
fn every_new_workload_runs_under_every_policy() {
    let params = WorkloadParams {
        prefix_groups: 6,
        prefix_system_tokens: 400,
        pressure_groups: 12,
        pressure_kv_blocks: 400,
        turn_system_tokens: 200,
        ladder_rates: vec![1.0, 4.0],
        ..WorkloadParams::default()
    };
    let generator = WorkloadGenerator::new(params, &tokenize);
    for kind in [
        WorkloadKind::Preamble(300),
        WorkloadKind::Chat,
        WorkloadKind::MultiTurn,
        WorkloadKind::CachePressure,
        WorkloadKind::Ladder,
        WorkloadKind::LoraPrefix,
    ] {
        let w = generator.generate(kind, 4.0, 10.0, 3);
        assert!(!w.requests.is_empty(), "{kind}");
        for policy in PolicyKind::baselines_and_ours() {
            let r = run(&sim(3, 3), &w, &policy).unwrap();
            let s = summarize(&r, Slo::default());
            assert!(s.measured > 0 && s.finished > 0, "{kind} {policy}");
        }
    }
}
