//! `bench-routing`: the routing-quality benchmark in virtual time.
//!
//! Finds each workload's saturation rate (the rate round-robin just sustains),
//! runs every policy at fractions of it on identical request streams, models 4
//! gateway replicas on the shared-prefix workload, and writes markdown tables,
//! JSON and SVG plots. See docs/ROUTING.md.

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
    /// Workloads to run (comma-separated): sharegpt, shared-prefix, multi-lora, bursty.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<WorkloadKind>,
    /// Policies (comma-separated): random, round-robin, least-request, gie-default, ours.
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
    /// LoRA adapter slots per pod for multi-lora and bursty (2-4 is typical).
    #[arg(long)]
    max_loras: Option<usize>,
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
    let workloads = if args.workloads.is_empty() {
        WorkloadKind::ALL.to_vec()
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
    params.prefix_groups = (params.prefix_groups * pods).div_ceil(8).max(2);
    if quick {
        params.prefix_groups = (params.prefix_groups / 4).max(2);
        params.prefix_system_tokens = 3000;
    }
    if let Some(m) = args.max_loras {
        anyhow::ensure!((1..=64).contains(&m), "--max-loras must be in 1..=64");
        params.max_loras = m;
    }
    let tokenize = |s: &str| vllm_sim::engine::tokenizer::tokenize(s);
    let generator = WorkloadGenerator::new(params.clone(), &tokenize);
    let mut sim = SimConfig::new(pods, args.seed);
    sim.warmup_s = warmup;
    sim.drain_limit_s = if quick { 20.0 } else { 60.0 };
    let slo = Slo::default();

    // 1. Saturation rate of each workload.
    let mut saturation = BTreeMap::new();
    for &kind in &workloads {
        let rate = match fixed_saturation.get(&kind) {
            Some(r) => *r,
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
        .map(|(kind, f)| SweepTask {
            kind,
            load_fraction: f,
            rate: saturation[&kind] * f,
            replicas: args.replicas,
        })
        .collect();
    let progress = |p: &SweepPoint| {
        let s = &p.summary;
        eprintln!(
            "{:>13} {:>4.0}% {:>7.2} req/s r={} {:<24} TTFT p90 {:>8.3} s  tok/s {:>7.0}  goodput {:>6.2}  hit {:>3.0}%",
            p.workload,
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
            .filter(|p| matches!(p, PolicyKind::GieDefault | PolicyKind::Ours(_)))
            .cloned()
            .collect();
        let tasks: Vec<SweepTask> = args
            .replica_study
            .iter()
            .map(|&r| SweepTask {
                kind: WorkloadKind::SharedPrefix,
                load_fraction: 0.8,
                rate,
                replicas: r,
            })
            .collect();
        replica_points = run_tasks(&generator, &tasks, &study_policies, &settings, &progress)?;
    }

    // 4. Report.
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = build_report(&ReportInput {
        command: &command,
        pods,
        seed: args.seed,
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
        "seed": args.seed,
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
    seed: u64,
    duration: f64,
    warmup: f64,
    params: &'a WorkloadParams,
    saturation: &'a BTreeMap<WorkloadKind, f64>,
    points: &'a [SweepPoint],
    replica_points: &'a [SweepPoint],
    wall_s: f64,
    out_dir: &'a Path,
}

fn build_report(input: &ReportInput<'_>) -> anyhow::Result<String> {
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
        "Command: `{}`  \nPods: {} (Llama-3.1-8B / H100 profile of vllm-sim), seed {}, {} s of arrivals per run ({} s warm-up not measured), scrape interval 50 ms.  \n\
         SLO for goodput: TTFT < 1 s and mean ITL < 50 ms. 100% load = the rate round-robin just sustains.  \n\
         Run took {:.0} s of wall time.\n",
        input.command, input.pods, input.seed, input.duration, input.warmup, input.wall_s
    );
    let p = input.params;
    let _ = writeln!(
        md,
        "Workloads: sharegpt (prompt median {:.0} / output median {:.0} tokens, log-normal); shared-prefix ({} groups, {}-token system prompt, ~{:.0}-token question, ~{:.0}-token answer); multi-lora ({} adapters, Zipf s={}, {:.0}% adapter requests, max_loras {}); bursty (mix, {}x bursts).\n",
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
        p.burst_factor
    );
    let mut workloads: Vec<&str> = input.points.iter().map(|p| p.workload.as_str()).collect();
    workloads.dedup();
    let mut goals = Vec::new();
    for w in &workloads {
        let pts: Vec<&SweepPoint> = input.points.iter().filter(|p| p.workload == *w).collect();
        let kind: WorkloadKind = w.parse().map_err(anyhow::Error::msg)?;
        let _ = writeln!(
            md,
            "## {w}\n\nSaturation (100% load): {:.2} req/s.\n",
            input.saturation[&kind]
        );
        let ttft = pivot_table(&pts, "p90 TTFT", ttft_p90_cell);
        let goodput = pivot_table(
            &pts,
            "Goodput, req/s within the SLO (share of requests)",
            goodput_cell,
        );
        let _ = writeln!(md, "{ttft}\n{goodput}");
        for (file, chart) in write_plots(w, &pts, input.out_dir)? {
            let _ = writeln!(md, "![{chart}]({file})\n");
        }
        md.push_str("All metrics:\n\n");
        md.push_str(&workload_table(&pts));
        md.push('\n');
        goals.extend(goal_check(w, &pts, "ours"));
    }
    if !input.replica_points.is_empty() {
        let _ = writeln!(md, "## Gateway replicas (shared-prefix, 80% load)\n");
        md.push_str("| policy | replicas | TTFT p50 | TTFT p90 | prefix hit | goodput req/s | p90 vs 1 replica |\n|---|---|---|---|---|---|---|\n");
        for p in input.replica_points {
            let base = input
                .replica_points
                .iter()
                .find(|b| b.replicas == 1 && b.summary.policy == p.summary.policy);
            let ratio = base.map_or(f64::NAN, |b| p.summary.ttft_p90_s / b.summary.ttft_p90_s);
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} s | {:.3} s | {:.0}% | {:.2} | {:.2}x |",
                p.summary.policy,
                p.replicas,
                p.summary.ttft_p50_s,
                p.summary.ttft_p90_s,
                p.summary.prefix_hit_rate * 100.0,
                p.summary.goodput_rps,
                ratio
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Goal check (ours)\n");
    if goals.is_empty() {
        md.push_str("- no comparison points\n");
    }
    for g in goals {
        let _ = writeln!(md, "{g}");
    }
    Ok(md)
}

/// Writes the p90-TTFT and throughput charts of one workload; returns
/// (file name, description) pairs.
fn write_plots(
    workload: &str,
    points: &[&SweepPoint],
    dir: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut policies: Vec<&str> = Vec::new();
    for p in points {
        if !policies.contains(&p.summary.policy.as_str()) {
            policies.push(&p.summary.policy);
        }
    }
    let series = |f: &dyn Fn(&SweepPoint) -> f64| -> Vec<Series> {
        policies
            .iter()
            .map(|name| Series {
                name: name.to_string(),
                points: points
                    .iter()
                    .filter(|p| p.summary.policy == *name)
                    .map(|p| (p.rate, f(p)))
                    .collect(),
            })
            .collect()
    };
    let ttft = series(&|p| p.summary.ttft_p90_s);
    let tput = series(&|p| p.summary.output_tok_s);
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
