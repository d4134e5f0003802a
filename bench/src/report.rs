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

/// A compact view of one metric: one row per load, one column per policy.
pub fn pivot_table(
    points: &[&SweepPoint],
    metric: &str,
    value: impl Fn(&Summary) -> String,
) -> String {
    let mut policies: Vec<&str> = Vec::new();
    let mut loads: Vec<(f64, f64)> = Vec::new();
    for p in points {
        if !policies.contains(&p.summary.policy.as_str()) {
            policies.push(&p.summary.policy);
        }
        if !loads.iter().any(|(f, _)| *f == p.load_fraction) {
            loads.push((p.load_fraction, p.rate));
        }
    }
    loads.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = format!("| load (req/s) | {} |\n", policies.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(policies.len()));
    for (f, rate) in loads {
        let cells: Vec<String> = policies
            .iter()
            .map(|name| {
                points
                    .iter()
                    .find(|p| p.load_fraction == f && p.summary.policy == *name)
                    .map_or_else(|| "-".to_string(), |p| value(&p.summary))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {:.0}% ({rate:.1}) | {} |",
            f * 100.0,
            cells.join(" | ")
        );
    }
    format!("{metric}:\n\n{out}")
}

/// p90 TTFT cell (with "≥" when censored).
pub fn ttft_p90_cell(s: &Summary) -> String {
    pct(s.ttft_p90_s, 0.9, s)
}

/// Goodput cell: requests/s within the SLO and the share that met it.
pub fn goodput_cell(s: &Summary) -> String {
    format!("{:.1} ({:.0}%)", s.goodput_rps, s.slo_attainment * 100.0)
}

/// Machine description for the report: CPU model and core count (Linux).
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

/// Current UTC date and time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian).
pub fn format_utc(unix_s: u64) -> String {
    let t = i64::try_from(unix_s)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
