//! Markdown tables and goal checks from sweep results.

use std::fmt::Write;

use crate::metrics::Summary;
use crate::sweep::SweepPoint;

fn secs(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 1.0 {
        format!("{:.0} ms", v * 1000.0)
    } else {
        format!("{v:.2} s")
    }
}

/// A percentile that unfinished requests reach into is a lower bound: "≥".
fn pct(v: f64, q: f64, s: &Summary) -> String {
    let bound = if s.unfinished_share > 1.0 - q {
        "≥"
    } else {
        ""
    };
    format!("{bound}{}", secs(v))
}

/// The per-load table of one workload (all policies, one replica count).
pub fn workload_table(points: &[&SweepPoint]) -> String {
    let mut out = String::new();
    out.push_str(
        "| load | req/s | policy | TTFT p50 | TTFT p90 | TTFT p99 | ITL p50 | ITL p90 | e2e p90 | out tok/s | goodput req/s | SLO met | preempt | prefix hit | max pod share | unfinished |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in points {
        let s = &p.summary;
        let _ = writeln!(
            out,
            "| {:.0}% | {:.2} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.0}% | {} | {:.0}% | {:.2} | {} |",
            p.load_fraction * 100.0,
            p.rate,
            s.policy,
            pct(s.ttft_p50_s, 0.5, s),
            pct(s.ttft_p90_s, 0.9, s),
            pct(s.ttft_p99_s, 0.99, s),
            secs(s.itl_p50_s),
            secs(s.itl_p90_s),
            pct(s.e2e_p90_s, 0.9, s),
            s.output_tok_s,
            s.goodput_rps,
            s.slo_attainment * 100.0,
            s.preemptions,
            s.prefix_hit_rate * 100.0,
            s.max_pod_share,
            s.unfinished,
        );
    }
    out
}

/// Checks the goals for ours on one workload and says where it loses.
/// Returns markdown bullet lines.
pub fn goal_check(workload: &str, points: &[&SweepPoint], ours: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut fractions: Vec<f64> = points.iter().map(|p| p.load_fraction).collect();
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    for f in fractions {
        let at: Vec<&&SweepPoint> = points.iter().filter(|p| p.load_fraction == f).collect();
        let Some(o) = at.iter().find(|p| p.summary.policy == ours) else {
            continue;
        };
        let best_other = at
            .iter()
            .filter(|p| !p.summary.policy.starts_with("ours"))
            .min_by(|a, b| a.summary.ttft_p90_s.total_cmp(&b.summary.ttft_p90_s));
        let Some(b) = best_other else { continue };
        let (ov, bv) = (o.summary.ttft_p90_s, b.summary.ttft_p90_s);
        if f <= 1.0 + 1e-9 && ov > bv * 1.0001 {
            lines.push(format!(
                "- {workload} at {:.0}% load: {ours} p90 TTFT {} is worse than {} ({}), {:.2}x",
                f * 100.0,
                secs(ov),
                b.summary.policy,
                secs(bv),
                ov / bv
            ));
        }
        if (f - 0.8).abs() < 1e-9 {
            if let Some(rr) = at.iter().find(|p| p.summary.policy == "round-robin") {
                lines.push(format!(
                    "- {workload} at 80% load: round-robin / {ours} p90 TTFT = {} / {} = {:.2}x",
                    secs(rr.summary.ttft_p90_s),
                    secs(ov),
                    rr.summary.ttft_p90_s / ov
                ));
            }
            if let Some(g) = at.iter().find(|p| p.summary.policy == "gie-default") {
                lines.push(format!(
                    "- {workload} at 80% load: gie-default / {ours} p90 TTFT = {} / {} = {:.2}x",
                    secs(g.summary.ttft_p90_s),
                    secs(ov),
                    g.summary.ttft_p90_s / ov
                ));
            }
        }
    }
    lines
}
