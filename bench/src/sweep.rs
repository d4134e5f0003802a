//! Load sweeps: find each workload's saturation rate, then run every policy at
//! fractions of it on the very same request stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::metrics::{summarize, Slo, Summary};
use crate::policy::PolicyKind;
use crate::simulation::{run, SimConfig};
use crate::workload::{WorkloadGenerator, WorkloadKind};

/// The policy whose sustainable rate defines "100% load": plain round-robin,
/// the baseline the goals are stated against.
pub const REFERENCE_POLICY: PolicyKind = PolicyKind::RoundRobin;

/// A run keeps up when requests get their first token at >= this share of
/// the rate they arrive.
const KEEPS_UP_SHARE: f64 = 0.97;

/// Requests getting their first token inside the measurement window / requests
/// arriving in it. Near 1 when the pods keep up (what arrives is admitted a
/// TTFT later); the pods' admission capacity / the offered rate when a queue
/// builds. First tokens rather than completions, because long outputs finish
/// tens of seconds after they arrive and would bias a short probe; actual
/// arrival counts rather than rate x window, to keep Poisson noise out.
fn admission_ratio(result: &crate::simulation::RunResult) -> f64 {
    let (start, end) = result.window;
    let inside = |t: f64| t >= start && t < end;
    let admitted = result
        .records
        .iter()
        .filter(|r| !r.rejected && inside(r.first_token_s))
        .count();
    let arrived = result
        .records
        .iter()
        .filter(|r| inside(r.arrival_s))
        .count();
    admitted as f64 / arrived.max(1) as f64
}

/// Highest rate (req/s) at which the reference policy still keeps up, by
/// doubling then bisection (relative precision ~3%).
pub fn find_saturation(
    generator: &WorkloadGenerator<'_>,
    kind: WorkloadKind,
    sim: &SimConfig,
    duration_s: f64,
    initial_guess: f64,
) -> anyhow::Result<f64> {
    let mut probe_sim = sim.clone();
    probe_sim.drain_limit_s = 0.0;
    let keeps_up = |rate: f64| -> anyhow::Result<bool> {
        let workload = generator.generate(kind, rate, duration_s, sim.seed);
        let result = run(&probe_sim, &workload, &REFERENCE_POLICY)?;
        Ok(admission_ratio(&result) >= KEEPS_UP_SHARE)
    };
    let (mut lo, mut hi) = (0.0f64, initial_guess.max(0.1));
    while keeps_up(hi)? {
        lo = hi;
        hi *= 2.0;
        anyhow::ensure!(hi < 1e6, "{kind}: no saturation found below 1e6 req/s");
    }
    if lo == 0.0 {
        // Even the guess saturates: walk down.
        while !keeps_up(hi / 2.0)? {
            hi /= 2.0;
            anyhow::ensure!(hi > 1e-3, "{kind}: saturates even at 0.001 req/s");
        }
        lo = hi / 2.0;
    }
    while (hi - lo) / hi > 0.03 {
        let mid = 0.5 * (lo + hi);
        if keeps_up(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// One cell of the result grid.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepPoint {
    pub workload: String,
    pub seed: u64,
    pub load_fraction: f64,
    pub rate: f64,
    pub replicas: usize,
    pub summary: Summary,
}

/// One (workload, rate) to run under every policy.
#[derive(Clone, Debug)]
pub struct SweepTask {
    pub kind: WorkloadKind,
    pub load_fraction: f64,
    pub rate: f64,
    pub replicas: usize,
    /// Seed of the request stream and of everything random in the run.
    pub seed: u64,
}

/// How every run of a sweep is set up.
pub struct RunSettings<'a> {
    pub sim: &'a SimConfig,
    /// Seconds of arrivals per run.
    pub duration_s: f64,
    pub slo: Slo,
    /// Tasks run in parallel.
    pub jobs: usize,
}

/// Runs every task under every policy, `settings.jobs` tasks at a time. Results
/// come back in task order (then policy order) whatever the parallelism.
pub fn run_tasks(
    generator: &WorkloadGenerator<'_>,
    tasks: &[SweepTask],
    policies: &[PolicyKind],
    settings: &RunSettings<'_>,
    progress: &(dyn Fn(&SweepPoint) + Sync),
) -> anyhow::Result<Vec<SweepPoint>> {
    let jobs = settings.jobs;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Vec<SweepPoint>>>>> =
        Mutex::new((0..tasks.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(tasks.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(task) = tasks.get(i) else { break };
                let outcome = run_task(generator, task, policies, settings, progress);
                results.lock().expect("results lock")[i] = Some(outcome);
            });
        }
    });
    let mut out = Vec::new();
    for r in results.into_inner().expect("results lock") {
        out.extend(r.expect("every task ran")?);
    }
    Ok(out)
}

/// One (workload, rate) under every policy, on one generated request stream.
fn run_task(
    generator: &WorkloadGenerator<'_>,
    task: &SweepTask,
    policies: &[PolicyKind],
    settings: &RunSettings<'_>,
    progress: &(dyn Fn(&SweepPoint) + Sync),
) -> anyhow::Result<Vec<SweepPoint>> {
    let workload = generator.generate(task.kind, task.rate, settings.duration_s, task.seed);
    let mut cfg = settings.sim.clone();
    cfg.replicas = task.replicas;
    cfg.seed = task.seed;
    policies
        .iter()
        .map(|policy| {
            let result = run(&cfg, &workload, policy)?;
            let point = SweepPoint {
                workload: task.kind.name(),
                seed: task.seed,
                load_fraction: task.load_fraction,
                rate: task.rate,
                replicas: task.replicas,
                summary: summarize(&result, settings.slo),
            };
            progress(&point);
            Ok(point)
        })
        .collect()
}
