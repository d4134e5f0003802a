//! `bench-routing`: the routing-quality benchmark in virtual time.
//!
//! Finds each workload's saturation rate (the rate round-robin just sustains,
//! on the first seed), runs every policy at fractions of it on identical
//! request streams for every seed, models 4 gateway replicas on the
//! shared-prefix workload, and writes markdown tables (mean and 95% CI over
//! seeds), JSON and SVG plots. See docs/ROUTING.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use routing_bench::metrics::Slo;
use routing_bench::ours::OursConfig;
use routing_bench::plot::{render, Chart, Series};
use routing_bench::policy::PolicyKind;
use routing_bench::report::{
    goal_check, goodput_cell, machine_description, pivot_table, ttft_p90_cell, utc_now,
    workload_table,
};
use routing_bench::simulation::SimConfig;
use routing_bench::sweep::{
    find_saturation, run_tasks, RunSettings, SweepPoint, SweepTask, REFERENCE_POLICY,
};
use routing_bench::workload::{WorkloadGenerator, WorkloadKind, WorkloadParams};

#[derive(Parser, Debug)]
#[command(
    name = "bench-routing",
    about = "Routing-quality benchmark: simulated vLLM pods in virtual time, policies side by side"
)]
struct Args {
    /// Simulated pods (each a vllm-sim engine).
    #[arg(long, default_value_t = 8)]
    pods: usize,
    /// Seed of everything random; the same seed gives the same numbers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Several seeds (e.g. `101-116` or `1,5,9`): every cell is run once per
    /// seed and reported as mean ± 95% CI. Overrides --seed.
    #[arg(long)]
    seeds: Option<String>,
    /// Workloads to run (comma-separated): sharegpt, shared-prefix, multi-lora,
    /// bursty, preamble-N (N-token common preamble), chat, multi-turn,
    /// cache-pressure, ladder, lora-prefix. Default: all (--quick: the first four).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<WorkloadKind>,
    /// Policies (comma-separated): random, round-robin, least-request,
    /// gie-default, gie+lora, gie+inflight, oracle, ours.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<PolicyKind>,
    /// Extra variants of ours with scorer weights / prefix settings overridden,
    /// e.g. `--variant prefix=5,queue=1` (repeatable).
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// Offered loads as fractions of the saturation rate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    loads: Vec<f64>,
    /// Seconds of arrivals per run (virtual time).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds at the start of a run that warm caches and are not measured.
    #[arg(long)]
    warmup: Option<f64>,
    /// Gateway replicas for the main sweep.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Replica counts compared on the shared-prefix workload at 80% load (issue 7).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    replica_study: Vec<usize>,
    /// Skip the replica study.
    #[arg(long)]
    no_replica_study: bool,
    /// Skip the saturation search and use these rates (req/s) for 100% load,
    /// e.g. `--saturation shared-prefix=14.2,sharegpt=120`.
    #[arg(long, value_delimiter = ',')]
    saturation: Vec<String>,
    /// LoRA adapter slots per pod for multi-lora, bursty and lora-prefix (2-4 is typical).
    #[arg(long)]
    max_loras: Option<usize>,
    /// Shared-prefix groups per 8 pods (default 150).
    #[arg(long)]
    prefix_groups: Option<usize>,
    /// Tokens of each group's system prompt (default 6000).
    #[arg(long)]
    system_tokens: Option<u32>,
    /// Chat and multi-turn: tokens of common instructions at the start of
    /// every system message (default 60).
    #[arg(long)]
    chat_preamble_tokens: Option<u32>,
    /// Multi-turn: turns per conversation as MIN-MAX (default 2-8).
    #[arg(long)]
    turns: Option<String>,
    /// Multi-turn: mean think time between turns, seconds (default 6).
    #[arg(long)]
    think_s: Option<f64>,
    /// Cache pressure: groups per 8 pods (default 400).
    #[arg(long)]
    pressure_groups: Option<usize>,
    /// Cache pressure: KV blocks per pod (default 8000, 16 tokens each).
    #[arg(long)]
    pressure_kv_blocks: Option<u32>,
    /// Cache pressure: the larger model's step-time profile (default llama-3.1-70b-4xh100).
    #[arg(long)]
    pressure_profile: Option<String>,
    /// Ladder stages in req/s at 100% load (default 3,10,15,...,60 per 8 pods).
    #[arg(long, value_delimiter = ',')]
    ladder_rates: Vec<f64>,
    /// Runs in parallel (the machine is shared: keep it small).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Smoke mode for tests/CI: 4 pods, short runs, two loads; < 60 s.
    #[arg(long)]
    quick: bool,
    /// Where to write routing.md, routing.json and the SVG plots. Default:
    /// docs/bench (full runs) or target/bench-routing-quick (--quick).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench-routing: error: {e:#}");
        std::process::exit(1);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let quick = args.quick;
    let pods = if quick && args.pods == 8 {
        4
    } else {
        args.pods
    };
    anyhow::ensure!((1..=4096).contains(&pods), "--pods must be in 1..=4096");
    anyhow::ensure!(
        (1..=64).contains(&args.replicas),
        "--replicas must be in 1..=64"
    );
    anyhow::ensure!(
        args.replica_study.iter().all(|r| (1..=64).contains(r)),
        "--replica-study counts must be in 1..=64"
    );
    let duration = args.duration.unwrap_or(if quick { 20.0 } else { 120.0 });
    anyhow::ensure!(
        duration.is_finite() && duration >= 5.0,
        "--duration must be >= 5 s"
    );
    let warmup = args.warmup.unwrap_or(if quick { 4.0 } else { 15.0 });
    anyhow::ensure!(
        warmup >= 0.0 && warmup < duration,
        "--warmup must be in [0, duration)"
    );
    let seeds: Vec<u64> = match &args.seeds {
        Some(spec) => {
            routing_bench::seeds::parse_seeds(spec).map_err(|e| anyhow::anyhow!("--seeds: {e}"))?
        }
        None => vec![args.seed],
    };
    let workloads = if args.workloads.is_empty() {
        if quick {
            WorkloadKind::ALL.to_vec()
        } else {
            WorkloadKind::EVERY.to_vec()
        }
    } else {
        args.workloads.clone()
    };
    let mut policies = if args.policies.is_empty() {
        PolicyKind::baselines_and_ours()
    } else {
        args.policies.clone()
    };
    for v in &args.variants {
        let cfg =
            OursConfig::parse_variant(v).map_err(|e| anyhow::anyhow!("--variant {v}: {e}"))?;
        policies.push(PolicyKind::Ours(cfg));
    }
    let loads = if !args.loads.is_empty() {
        args.loads.clone()
    } else if quick {
        vec![0.5, 0.9]
    } else {
        vec![0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.2]
    };
    anyhow::ensure!(
        loads
            .iter()
            .all(|l| l.is_finite() && *l > 0.0 && *l <= 10.0),
        "--loads must be in (0, 10]"
    );
    let mut fixed_saturation = BTreeMap::new();
    for s in &args.saturation {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--saturation `{s}`: expected WORKLOAD=RATE"))?;
        let kind: WorkloadKind = k.parse().map_err(anyhow::Error::msg)?;
        let rate: f64 = v
            .parse()
            .with_context(|| format!("--saturation `{s}`: bad rate"))?;
        anyhow::ensure!(
            rate > 0.0 && rate.is_finite(),
            "--saturation rate must be > 0"
        );
        fixed_saturation.insert(kind, rate);
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        if quick {
            workspace_root().join("target/bench-routing-quick")
        } else {
            workspace_root().join("docs/bench")
        }
    });
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;

    // Workload shapes scale with the pool: the shared-prefix footprint stays
    // ~2x one pod's KV cache per 8 pods, as in the llm-d benchmark.
    let mut params = WorkloadParams::default();
    if let Some(g) = args.prefix_groups {
        anyhow::ensure!(
            (1..=100_000).contains(&g),
            "--prefix-groups must be in 1..=100000"
        );
        params.prefix_groups = g;
    }
    if let Some(t) = args.system_tokens {
        anyhow::ensure!(
            (1..=100_000).contains(&t),
            "--system-tokens must be in 1..=100000"
        );
        params.prefix_system_tokens = t;
    }
    if let Some(t) = args.chat_preamble_tokens {
        anyhow::ensure!(t <= 100_000, "--chat-preamble-tokens must be <= 100000");
        params.chat_preamble_tokens = t;
    }
    if let Some(t) = &args.turns {
        let (a, b) = t.split_once('-').unwrap_or((t, t));
        let (a, b): (u32, u32) = (
            a.trim().parse().context("--turns: expected MIN-MAX")?,
            b.trim().parse().context("--turns: expected MIN-MAX")?,
        );
        anyhow::ensure!(
            1 <= a && a <= b && b <= 1000,
            "--turns must be MIN-MAX with 1 <= MIN <= MAX <= 1000"
        );
        params.turns_min = a;
        params.turns_max = b;
    }
    if let Some(t) = args.think_s {
        anyhow::ensure!(t.is_finite() && t > 0.0, "--think-s must be > 0");
        params.think_s = t;
    }
    if let Some(g) = args.pressure_groups {
        anyhow::ensure!(
            (1..=100_000).contains(&g),
            "--pressure-groups must be in 1..=100000"
        );
        params.pressure_groups = g;
    }
    if let Some(b) = args.pressure_kv_blocks {
        anyhow::ensure!(
            (64..=10_000_000).contains(&b),
            "--pressure-kv-blocks must be in 64..=10000000"
        );
        params.pressure_kv_blocks = b;
    }
    if let Some(name) = &args.pressure_profile {
        anyhow::ensure!(
            vllm_sim::engine::PerfProfile::builtin(name).is_some(),
            "--pressure-profile: unknown profile `{name}`; expected one of {}",
            vllm_sim::engine::PerfProfile::BUILTIN_NAMES.join(", ")
        );
        params.pressure_profile = name.clone();
    }
    if !args.ladder_rates.is_empty() {
        anyhow::ensure!(
            args.ladder_rates.iter().all(|r| r.is_finite() && *r > 0.0),
            "--ladder-rates must be > 0"
        );
        params.ladder_rates = args.ladder_rates.clone();
    }
    params.prefix_groups = (params.prefix_groups * pods).div_ceil(8).max(2);
    params.pressure_groups = (params.pressure_groups * pods).div_ceil(8).max(2);
    if quick {
        params.prefix_groups = (params.prefix_groups / 4).max(2);
        params.pressure_groups = (params.pressure_groups / 4).max(2);
        params.prefix_system_tokens = params.prefix_system_tokens.min(3000);
    }
    if let Some(m) = args.max_loras {
        anyhow::ensure!((1..=64).contains(&m), "--max-loras must be in 1..=64");
        params.max_loras = m;
    }
    let tokenize = |s: &str| vllm_sim::engine::tokenizer::tokenize(s);
    let generator = WorkloadGenerator::new(params.clone(), &tokenize);
    let mut sim = SimConfig::new(pods, seeds[0]);
    sim.warmup_s = warmup;
    sim.drain_limit_s = if quick { 20.0 } else { 60.0 };
    let slo = Slo::default();

    // 1. Saturation rate of each workload.
    let mut saturation = BTreeMap::new();
    for &kind in &workloads {
        let rate = match fixed_saturation.get(&kind) {
            Some(r) => *r,
            // The ladder's 100% is its last stage, past saturation by design.
            None if kind == WorkloadKind::Ladder => {
                params.ladder_rates.last().copied().unwrap_or(60.0) * pods as f64 / 8.0
            }
            None => {
                let t = Instant::now();
                // Probes as long as the runs: a rate that only looks
                // sustainable for a shorter time (KV cache still filling) is not.
                let guess = 2.0 * pods as f64;
                let r = find_saturation(&generator, kind, &sim, duration, guess)?;
                eprintln!(
                    "saturation of {kind}: {r:.2} req/s ({REFERENCE_POLICY} keeps up), found in {:.1?}",
                    t.elapsed()
                );
                r
            }
        };
        saturation.insert(kind, rate);
    }

    // 2. The sweep.
    let tasks: Vec<SweepTask> = workloads
        .iter()
        .flat_map(|&kind| loads.iter().map(move |&f| (kind, f)))
        .flat_map(|(kind, f)| seeds.iter().map(move |&seed| (kind, f, seed)))
        .map(|(kind, f, seed)| SweepTask {
            kind,
            load_fraction: f,
            rate: saturation[&kind] * f,
            replicas: args.replicas,
            seed,
        })
        .collect();
    let progress = |p: &SweepPoint| {
        let s = &p.summary;
        eprintln!(
            "{:>14} s{:<4} {:>4.0}% {:>7.2} req/s r={} {:<24} TTFT p90 {:>8.3} s  tok/s {:>7.0}  goodput {:>6.2}  hit {:>3.0}%",
            p.workload,
            p.seed,
            p.load_fraction * 100.0,
            p.rate,
            p.replicas,
            s.policy,
            s.ttft_p90_s,
            s.output_tok_s,
            s.goodput_rps,
            s.prefix_hit_rate * 100.0
        );
    };
    let settings = RunSettings {
        sim: &sim,
        duration_s: duration,
        slo,
        jobs: args.jobs,
    };
    let points = run_tasks(&generator, &tasks, &policies, &settings, &progress)?;

    // 3. Gateway replicas on shared-prefix at 80% load (issue 7).
    let mut replica_points = Vec::new();
    if !args.no_replica_study && workloads.contains(&WorkloadKind::SharedPrefix) {
        let rate = saturation[&WorkloadKind::SharedPrefix] * 0.8;
        let study_policies: Vec<PolicyKind> = policies
            .iter()
            .filter(|p| p.is_gie() || matches!(p, PolicyKind::Ours(_)))
            .cloned()
            .collect();
        let tasks: Vec<SweepTask> = args
            .replica_study
            .iter()
            .flat_map(|&r| seeds.iter().map(move |&seed| (r, seed)))
            .map(|(r, seed)| SweepTask {
                kind: WorkloadKind::SharedPrefix,
                load_fraction: 0.8,
                rate,
                replicas: r,
                seed,
            })
            .collect();
        replica_points = run_tasks(&generator, &tasks, &study_policies, &settings, &progress)?;
    }

    // 4. Report.
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = build_report(&ReportInput {
        command: &command,
        pods,
        seeds: &seeds,
        duration,
        warmup,
        params: &params,
        saturation: &saturation,
        points: &points,
        replica_points: &replica_points,
        wall_s: started.elapsed().as_secs_f64(),
        out_dir: &out_dir,
    })?;
    std::fs::write(out_dir.join("routing.md"), &report)?;
    let json = serde_json::json!({
        "command": command,
        "pods": pods,
        "seeds": seeds,
        "cells": routing_bench::seeds::cells(&points),
        "replica_cells": routing_bench::seeds::cells(&replica_points),
        "duration_s": duration,
        "warmup_s": warmup,
        "saturation_req_s": saturation.iter().map(|(k, v)| (k.name().to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "points": points,
        "replica_study": replica_points,
    });
    std::fs::write(
        out_dir.join("routing.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("{report}");
    eprintln!(
        "wrote {}/routing.md, routing.json and plots in {:.1?}",
        out_dir.display(),
        started.elapsed()
    );
    Ok(())
}

struct ReportInput<'a> {
    command: &'a str,
    pods: usize,
    seeds: &'a [u64],
    duration: f64,
    warmup: f64,
    params: &'a WorkloadParams,
    saturation: &'a BTreeMap<WorkloadKind, f64>,
    points: &'a [SweepPoint],
    replica_points: &'a [SweepPoint],
    wall_s: f64,
    out_dir: &'a Path,
}

fn seeds_label(seeds: &[u64]) -> String {
    match seeds {
        [one] => format!("seed {one}"),
        [first, .., last] if seeds.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("{} seeds ({first}-{last})", seeds.len())
        }
        _ => format!(
            "{} seeds ({})",
            seeds.len(),
            seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn build_report(input: &ReportInput<'_>) -> anyhow::Result<String> {
    use routing_bench::seeds::{cells, headline_table, hit_rate_table, verdicts, Cell};
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(md, "# Routing quality (virtual time)\n");
    let _ = writeln!(
        md,
        "Date: {}. Machine: {}.  ",
        utc_now(),
        machine_description()
    );
    let _ = writeln!(
        md,
        "Command: `{}`  \nPods: {} (Llama-3.1-8B / H100 profile of vllm-sim unless the workload says otherwise), {}, {} s of arrivals per run ({} s warm-up not measured), scrape interval 50 ms.  \n\
         SLO for goodput: TTFT < 1 s and mean ITL < 50 ms. 100% load = the rate round-robin just sustains on the first seed (ladder: its last stage).  \n\
         Cells: p90 TTFT, mean ± 95% CI over the seeds (Student's t); \"≥\" = on some seed over 10% of requests were unfinished, so the p90 is a lower bound. Verdicts pair the seeds (same request stream): better/worse only when the paired 95% CI excludes zero, else tie.  \n\
         Run took {:.0} s of wall time.\n",
        input.command, input.pods, seeds_label(input.seeds), input.duration, input.warmup, input.wall_s
    );
    let p = input.params;
    let _ = writeln!(
        md,
        "Workloads: sharegpt (prompt median {:.0} / output median {:.0} tokens, log-normal); shared-prefix ({} groups, {}-token system prompt, ~{:.0}-token question, ~{:.0}-token answer); multi-lora ({} adapters, Zipf s={}, {:.0}% adapter requests, max_loras {}); bursty (mix, {}x bursts); preamble-N (shared-prefix behind one common N-token preamble); chat (shared-prefix as chat `messages`, {}-token common instructions); multi-turn ({} apps x {}-token system prompts, {}-{} turns, {} s mean think time); cache-pressure ({} groups, {} KV blocks per pod, {} profile); ladder ({:?} req/s stages at 100%); lora-prefix (shared-prefix groups each served with one adapter).\n",
        p.sharegpt_prompt.median,
        p.sharegpt_output.median,
        p.prefix_groups,
        p.prefix_system_tokens,
        p.prefix_question.median,
        p.prefix_output.median,
        p.lora_adapters,
        p.lora_zipf_s,
        p.lora_share * 100.0,
        p.max_loras,
        p.burst_factor,
        p.chat_preamble_tokens,
        p.turn_system_prompts,
        p.turn_system_tokens,
        p.turns_min,
        p.turns_max,
        p.think_s,
        p.pressure_groups,
        p.pressure_kv_blocks,
        p.pressure_profile,
        p.ladder_rates,
    );
    let all_cells = cells(input.points);
    let mut workloads: Vec<&str> = Vec::new();
    for p in input.points {
        if !workloads.contains(&p.workload.as_str()) {
            workloads.push(&p.workload);
        }
    }
    let first_seed = input.seeds.first().copied().unwrap_or(1);
    let mut goals = Vec::new();
    for w in &workloads {
        let wc: Vec<&Cell> = all_cells.iter().filter(|c| c.workload == *w).collect();
        let kind: WorkloadKind = w.parse().map_err(anyhow::Error::msg)?;
        let _ = writeln!(
            md,
            "## {w}\n\nSaturation (100% load): {:.2} req/s.\n",
            input.saturation[&kind]
        );
        let _ = writeln!(
            md,
            "p90 TTFT ({}):\n\n{}",
            seeds_label(input.seeds),
            headline_table(&wc)
        );
        let _ = writeln!(
            md,
            "Prefix-cache hit rate (mean):\n\n{}",
            hit_rate_table(&wc)
        );
        for line in verdicts(&wc, "ours") {
            let _ = writeln!(md, "{line}");
        }
        md.push('\n');
        for (file, chart) in write_plots(w, &wc, input.out_dir)? {
            let _ = writeln!(md, "![{chart}]({file})\n");
        }
        let pts: Vec<&SweepPoint> = input
            .points
            .iter()
            .filter(|p| p.workload == *w && p.seed == first_seed)
            .collect();
        let goodput = pivot_table(
            &pts,
            "Goodput, req/s within the SLO (share of requests)",
            goodput_cell,
        );
        let _ = writeln!(
            md,
            "Seed {first_seed} alone:\n\n{}",
            pivot_table(&pts, "p90 TTFT", ttft_p90_cell)
        );
        let _ = writeln!(md, "{goodput}");
        md.push_str("All metrics (seed ");
        let _ = write!(md, "{first_seed}");
        md.push_str("):\n\n");
        md.push_str(&workload_table(&pts));
        md.push('\n');
        goals.extend(goal_check(w, &pts, "ours"));
    }
    if !input.replica_points.is_empty() {
        let _ = writeln!(md, "## Gateway replicas (shared-prefix, 80% load)\n");
        let _ = writeln!(
            md,
            "GIE runs as deployed: one picker per pool serves every replica, so its numbers do not depend on the replica count (only the spread of requests over replicas changes). Ours runs in every replica.\n"
        );
        md.push_str("| policy | replicas | TTFT p90 (mean ± 95% CI) | prefix hit | goodput req/s | p90 vs 1 replica |\n|---|---|---|---|---|---|\n");
        let rc = cells(input.replica_points);
        for c in &rc {
            let base = rc.iter().find(|b| b.replicas == 1 && b.policy == c.policy);
            let ratio = base.map_or(f64::NAN, |b| c.ttft_p90.mean / b.ttft_p90.mean);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0}% | {:.2} | {:.2}x |",
                c.policy,
                c.replicas,
                routing_bench::seeds::mean_ci_cell(c),
                c.prefix_hit_rate.mean * 100.0,
                c.goodput_rps.mean,
                ratio
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Goal check (ours, seed {first_seed})\n");
    if goals.is_empty() {
        md.push_str("- no comparison points\n");
    }
    for g in goals {
        let _ = writeln!(md, "{g}");
    }
    Ok(md)
}

/// Writes the p90-TTFT and throughput charts of one workload (means over
/// seeds); returns (file name, description) pairs.
fn write_plots(
    workload: &str,
    cells: &[&routing_bench::seeds::Cell],
    dir: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut policies: Vec<&str> = Vec::new();
    for c in cells {
        if !policies.contains(&c.policy.as_str()) {
            policies.push(&c.policy);
        }
    }
    let series = |f: &dyn Fn(&routing_bench::seeds::Cell) -> f64| -> Vec<Series> {
        policies
            .iter()
            .map(|name| Series {
                name: name.to_string(),
                points: cells
                    .iter()
                    .filter(|c| c.policy == *name)
                    .map(|c| (c.rate, f(c)))
                    .collect(),
            })
            .collect()
    };
    let ttft = series(&|c| c.ttft_p90.mean);
    let tput = series(&|c| c.output_tok_s.mean);
    let mut out: Vec<(String, String)> = Vec::new();
    for (file, title, y, log, s) in [
        (
            format!("routing-{workload}-ttft-p90.svg"),
            format!("{workload}: p90 time to first token"),
            "seconds (log)",
            true,
            &ttft,
        ),
        (
            format!("routing-{workload}-throughput.svg"),
            format!("{workload}: output throughput"),
            "output tokens/s",
            false,
            &tput,
        ),
    ] {
        let svg = render(&Chart {
            title: &title,
            x_label: "offered load (requests/s)",
            y_label: y,
            log_y: log,
            series: s,
        });
        std::fs::write(dir.join(&file), svg).with_context(|| format!("writing {file}"))?;
        out.push((file, title));
    }
    Ok(out)
}
