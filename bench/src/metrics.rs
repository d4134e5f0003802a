//! The numbers reported per policy and load, computed from a run's records.

use serde::Serialize;

use crate::simulation::RunResult;
use crate::stats::Distribution;

/// The service-level objective goodput counts against.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Slo {
    pub ttft_s: f64,
    /// Mean inter-token latency of the request.
    pub itl_s: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            ttft_s: 1.0,
            itl_s: 0.050,
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub policy: String,
    /// Requests arriving in the measurement window.
    pub measured: usize,
    pub finished: usize,
    /// Measured requests still running (or never started) when the run stopped;
    /// their TTFT/e2e count as (stop time - arrival), a lower bound.
    pub unfinished: usize,
    pub rejected: usize,
    pub ttft_p50_s: f64,
    pub ttft_p90_s: f64,
    pub ttft_p99_s: f64,
    /// Per-request mean inter-token latency, p50 and p90.
    pub itl_p50_s: f64,
    pub itl_p90_s: f64,
    pub e2e_p90_s: f64,
    /// Output tokens per second emitted during the window (all requests).
    pub output_tok_s: f64,
    /// Measured requests per second that finished within the SLO.
    pub goodput_rps: f64,
    /// Share of measured requests that met the SLO.
    pub slo_attainment: f64,
    pub preemptions: u64,
    /// Prompt tokens served from the prefix cache / prompt tokens, over
    /// measured finished requests.
    pub prefix_hit_rate: f64,
    /// Largest share of requests any one pod received (1/pods = perfectly even).
    pub max_pod_share: f64,
    /// Unfinished share of measured requests: a percentile q whose top (1-q)
    /// this reaches is only a lower bound.
    pub unfinished_share: f64,
}

pub fn summarize(result: &RunResult, slo: Slo) -> Summary {
    let (start, end) = result.window;
    let measured: Vec<_> = result
        .records
        .iter()
        .filter(|r| r.arrival_s >= start && r.arrival_s < end)
        .collect();
    let stop = result.end_s;
    let mut ttft = Vec::with_capacity(measured.len());
    let mut itl = Vec::with_capacity(measured.len());
    let mut e2e = Vec::with_capacity(measured.len());
    let (mut finished, mut unfinished, mut rejected, mut good) = (0, 0, 0, 0);
    let (mut prompt, mut cached) = (0u64, 0u64);
    for r in &measured {
        if r.rejected {
            rejected += 1;
            continue;
        }
        let first = if r.first_token_s.is_nan() {
            stop
        } else {
            r.first_token_s
        };
        ttft.push(first - r.arrival_s);
        if r.finished() {
            finished += 1;
            e2e.push(r.finished_s - r.arrival_s);
            prompt += u64::from(r.prompt_tokens);
            cached += u64::from(r.cached_tokens);
            let mean_itl = r.mean_itl_s();
            if let Some(x) = mean_itl {
                itl.push(x);
            }
            let ttft_ok = r.first_token_s - r.arrival_s < slo.ttft_s;
            if ttft_ok && mean_itl.is_none_or(|x| x < slo.itl_s) {
                good += 1;
            }
        } else {
            unfinished += 1;
            e2e.push(stop - r.arrival_s);
        }
    }
    let n = measured.len().max(1);
    let ttft = Distribution::new(ttft);
    let itl = Distribution::new(itl);
    let e2e = Distribution::new(e2e);
    let window_s = (end - start).max(1e-9);
    let total: u32 = result.pod_request_counts.iter().sum();
    let max_pod = result.pod_request_counts.iter().copied().max().unwrap_or(0);
    Summary {
        policy: result.policy.clone(),
        measured: measured.len(),
        finished,
        unfinished,
        rejected,
        ttft_p50_s: ttft.quantile(0.5),
        ttft_p90_s: ttft.quantile(0.9),
        ttft_p99_s: ttft.quantile(0.99),
        itl_p50_s: itl.quantile(0.5),
        itl_p90_s: itl.quantile(0.9),
        e2e_p90_s: e2e.quantile(0.9),
        output_tok_s: result.tokens_in_window as f64 / window_s,
        goodput_rps: good as f64 / window_s,
        slo_attainment: good as f64 / n as f64,
        preemptions: result.preemptions,
        prefix_hit_rate: if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        },
        max_pod_share: if total == 0 {
            0.0
        } else {
            f64::from(max_pod) / f64::from(total)
        },
        unfinished_share: unfinished as f64 / n as f64,
    }
}
