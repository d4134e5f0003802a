//! Many seeds per cell: the simulation is deterministic per seed, so the
//! spread over seeds (arrival times, prompts, tie-breaks) is the noise a
//! single number hides. Cells report the mean and its 95% confidence
//! interval (Student's t over the per-seed values); comparisons between two
//! policies are paired by seed (same request stream), which is what decides
//! "better", "worse" or "tie".

use std::fmt::Write;

use crate::sweep::SweepPoint;

/// Parses `101-116`, `1,2,7` or a mix (`1-4,9`) into a list of seeds.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u64 = a
            .parse()
            .map_err(|_| format!("seed `{a}` is not a number"))?;
        let b: u64 = b
            .parse()
            .map_err(|_| format!("seed `{b}` is not a number"))?;
        if b < a || b - a >= 10_000 {
            return Err(format!("seed range `{part}` is empty or too long"));
        }
        for s in a..=b {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    if out.is_empty() {
        return Err("no seeds given".into());
    }
    Ok(out)
}

/// Two-sided 95% Student's t quantile for `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 30 => T[d - 1],
        d if d <= 60 => 2.000 + (2.042 - 2.000) * (60 - d) as f64 / 30.0,
        _ => 1.96,
    }
}

/// Mean and 95% CI half-width of per-seed values.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MeanCi {
    pub mean: f64,
    /// NaN with one value.
    pub half_width: f64,
    pub n: usize,
}

impl MeanCi {
    pub fn of(values: &[f64]) -> MeanCi {
        let n = values.len();
        if n == 0 {
            return MeanCi {
                mean: f64::NAN,
                half_width: f64::NAN,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let half_width = if n < 2 {
            f64::NAN
        } else {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t95(n - 1) * (var / n as f64).sqrt()
        };
        MeanCi {
            mean,
            half_width,
            n,
        }
    }

    pub fn lo(&self) -> f64 {
        self.mean - self.half_width
    }

    pub fn hi(&self) -> f64 {
        self.mean + self.half_width
    }
}

/// One (workload, load, replicas, policy) over every seed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Cell {
    pub workload: String,
    pub load_fraction: f64,
    pub rate: f64,
    pub replicas: usize,
    pub policy: String,
    pub seeds: Vec<u64>,
    /// Per-seed p90 TTFT in seconds, in `seeds` order.
    pub ttft_p90_s: Vec<f64>,
    pub ttft_p90: MeanCi,
    pub ttft_p50: MeanCi,
    pub prefix_hit_rate: MeanCi,
    pub goodput_rps: MeanCi,
    pub output_tok_s: MeanCi,
    /// Seeds on which some measured requests were unfinished at the stop
    /// (their p90 is then a lower bound).
    pub censored_seeds: usize,
}

/// Groups points by (workload, load, replicas, policy), keeping first-seen order.
pub fn cells(points: &[SweepPoint]) -> Vec<Cell> {
    let mut out: Vec<Cell> = Vec::new();
    let mut members: Vec<Vec<&SweepPoint>> = Vec::new();
    for p in points {
        let i = out.iter().position(|c| {
            c.workload == p.workload
                && c.load_fraction == p.load_fraction
                && c.replicas == p.replicas
                && c.policy == p.summary.policy
        });
        let i = match i {
            Some(i) => i,
            None => {
                out.push(Cell {
                    workload: p.workload.clone(),
                    load_fraction: p.load_fraction,
                    rate: p.rate,
                    replicas: p.replicas,
                    policy: p.summary.policy.clone(),
                    seeds: Vec::new(),
                    ttft_p90_s: Vec::new(),
                    ttft_p90: MeanCi::of(&[]),
                    ttft_p50: MeanCi::of(&[]),
                    prefix_hit_rate: MeanCi::of(&[]),
                    goodput_rps: MeanCi::of(&[]),
                    output_tok_s: MeanCi::of(&[]),
                    censored_seeds: 0,
                });
                members.push(Vec::new());
                out.len() - 1
            }
        };
        members[i].push(p);
    }
    for (c, ps) in out.iter_mut().zip(&members) {
        let vals = |f: &dyn Fn(&SweepPoint) -> f64| ps.iter().map(|p| f(p)).collect::<Vec<f64>>();
        c.seeds = ps.iter().map(|p| p.seed).collect();
        c.ttft_p90_s = vals(&|p| p.summary.ttft_p90_s);
        c.ttft_p90 = MeanCi::of(&c.ttft_p90_s);
        c.ttft_p50 = MeanCi::of(&vals(&|p| p.summary.ttft_p50_s));
        c.prefix_hit_rate = MeanCi::of(&vals(&|p| p.summary.prefix_hit_rate));
        c.goodput_rps = MeanCi::of(&vals(&|p| p.summary.goodput_rps));
        c.output_tok_s = MeanCi::of(&vals(&|p| p.summary.output_tok_s));
        c.censored_seeds = ps
            .iter()
            .filter(|p| p.summary.unfinished_share > 0.1)
            .count();
    }
    out
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.0}", v * 1000.0)
    }
}

/// "123 ± 4 ms" (or "1.23 ± 0.05 s" from one second up); "≥" when some
/// seeds' p90 is censored by unfinished requests.
pub fn mean_ci_cell(c: &Cell) -> String {
    let m = c.ttft_p90;
    let bound = if c.censored_seeds > 0 { "≥" } else { "" };
    if m.mean >= 1.0 {
        if m.half_width.is_nan() {
            format!("{bound}{:.2} s", m.mean)
        } else {
            format!("{bound}{:.2} ± {:.2} s", m.mean, m.half_width)
        }
    } else if m.half_width.is_nan() {
        format!("{bound}{} ms", ms(m.mean))
    } else {
        format!("{bound}{} ± {} ms", ms(m.mean), ms(m.half_width))
    }
}

/// Paired comparison of policy `a` against `b` on the same seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Paired {
    /// a - b per seed, mean and CI, seconds.
    pub diff: MeanCi,
    /// Seeds where a's p90 is lower than b's.
    pub a_wins: usize,
    pub n: usize,
    /// mean(a) / mean(b).
    pub ratio: f64,
}

impl Paired {
    pub fn of(a: &Cell, b: &Cell) -> Paired {
        let mut diffs = Vec::new();
        let mut a_wins = 0;
        for (s, va) in a.seeds.iter().zip(&a.ttft_p90_s) {
            if let Some(j) = b.seeds.iter().position(|x| x == s) {
                let vb = b.ttft_p90_s[j];
                diffs.push(va - vb);
                if va < &vb {
                    a_wins += 1;
                }
            }
        }
        Paired {
            n: diffs.len(),
            diff: MeanCi::of(&diffs),
            a_wins,
            ratio: a.ttft_p90.mean / b.ttft_p90.mean,
        }
    }

    /// "better" / "worse" when the paired CI excludes zero, else "tie".
    pub fn verdict(&self) -> &'static str {
        if self.diff.half_width.is_nan() {
            if self.diff.mean < 0.0 {
                "better (one seed)"
            } else if self.diff.mean > 0.0 {
                "worse (one seed)"
            } else {
                "tie (one seed)"
            }
        } else if self.diff.hi() < 0.0 {
            "better"
        } else if self.diff.lo() > 0.0 {
            "worse"
        } else {
            "tie"
        }
    }
}

/// Mean ± CI p90 TTFT, one row per load, one column per policy.
pub fn headline_table(cells: &[&Cell]) -> String {
    let mut policies: Vec<&str> = Vec::new();
    let mut loads: Vec<(f64, f64)> = Vec::new();
    for c in cells {
        if !policies.contains(&c.policy.as_str()) {
            policies.push(&c.policy);
        }
        if !loads.iter().any(|(f, _)| *f == c.load_fraction) {
            loads.push((c.load_fraction, c.rate));
        }
    }
    loads.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = format!("| load (req/s) | {} |\n", policies.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(policies.len()));
    for (f, rate) in loads {
        let row: Vec<String> = policies
            .iter()
            .map(|name| {
                cells
                    .iter()
                    .find(|c| c.load_fraction == f && c.policy == *name)
                    .map_or_else(|| "-".into(), |c| mean_ci_cell(c))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {:.0}% ({rate:.1}) | {} |",
            f * 100.0,
            row.join(" | ")
        );
    }
    out
}

/// Mean prefix-cache hit rate per load and policy.
pub fn hit_rate_table(cells: &[&Cell]) -> String {
    let mut policies: Vec<&str> = Vec::new();
    let mut loads: Vec<f64> = Vec::new();
    for c in cells {
        if !policies.contains(&c.policy.as_str()) {
            policies.push(&c.policy);
        }
        if !loads.contains(&c.load_fraction) {
            loads.push(c.load_fraction);
        }
    }
    loads.sort_by(f64::total_cmp);
    let mut out = format!("| load | {} |\n", policies.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(policies.len()));
    for f in loads {
        let row: Vec<String> = policies
            .iter()
            .map(|name| {
                cells
                    .iter()
                    .find(|c| c.load_fraction == f && c.policy == *name)
                    .map_or_else(
                        || "-".into(),
                        |c| format!("{:.0}%", c.prefix_hit_rate.mean * 100.0),
                    )
            })
            .collect();
        let _ = writeln!(out, "| {:.0}% | {} |", f * 100.0, row.join(" | "));
    }
    out
}

/// Paired verdicts of `ours` against the best GIE profile, round-robin and
/// the oracle at every load: markdown bullet lines.
pub fn verdicts(cells: &[&Cell], ours: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut loads: Vec<f64> = cells.iter().map(|c| c.load_fraction).collect();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    for f in loads {
        let at: Vec<&&Cell> = cells.iter().filter(|c| c.load_fraction == f).collect();
        let Some(o) = at.iter().find(|c| c.policy == ours) else {
            continue;
        };
        let best_gie = at
            .iter()
            .filter(|c| c.policy.starts_with("gie"))
            .min_by(|a, b| a.ttft_p90.mean.total_cmp(&b.ttft_p90.mean));
        let mut parts = Vec::new();
        for other in [
            best_gie.copied(),
            at.iter().find(|c| c.policy == "round-robin").copied(),
        ]
        .into_iter()
        .flatten()
        {
            let p = Paired::of(o, other);
            parts.push(format!(
                "vs {}: {} ({:.2}x; paired diff {:+.0} ± {:.0} ms; ours lower on {}/{} seeds)",
                other.policy,
                p.verdict(),
                p.ratio,
                p.diff.mean * 1000.0,
                p.diff.half_width * 1000.0,
                p.a_wins,
                p.n
            ));
        }
        if let Some(or) = at.iter().find(|c| c.policy == "oracle") {
            parts.push(format!(
                "oracle / ours = {:.2}x",
                or.ttft_p90.mean / o.ttft_p90.mean
            ));
        }
        if !parts.is_empty() {
            lines.push(format!(
                "- {:.0}% load, {ours} {}",
                f * 100.0,
                parts.join("; ")
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_and_ranges() {
        assert_eq!(parse_seeds("101-104").unwrap(), vec![101, 102, 103, 104]);
        assert_eq!(parse_seeds("1,3, 2-3").unwrap(), vec![1, 3, 2]);
        assert!(parse_seeds("5-1").is_err());
        assert!(parse_seeds("x").is_err());
        assert!(parse_seeds("").is_err());
    }

    #[test]
    fn mean_and_confidence_interval() {
        // mean 5, sample sd sqrt(2.5), n = 5: half = 2.776 * sqrt(2.5 / 5)
        let m = MeanCi::of(&[3.0, 4.0, 5.0, 6.0, 7.0]);
        assert!((m.mean - 5.0).abs() < 1e-12);
        assert!((m.half_width - 2.776 * 0.5f64.sqrt()).abs() < 1e-9);
        assert!(MeanCi::of(&[1.0]).half_width.is_nan());
        assert_eq!(t95(15), 2.131);
        assert_eq!(t95(1000), 1.96);
    }

    fn cell(policy: &str, seeds: &[u64], p90: &[f64]) -> Cell {
        Cell {
            workload: "w".into(),
            load_fraction: 0.8,
            rate: 1.0,
            replicas: 1,
            policy: policy.into(),
            seeds: seeds.to_vec(),
            ttft_p90_s: p90.to_vec(),
            ttft_p90: MeanCi::of(p90),
            ttft_p50: MeanCi::of(p90),
            prefix_hit_rate: MeanCi::of(&[0.5]),
            goodput_rps: MeanCi::of(&[1.0]),
            output_tok_s: MeanCi::of(&[1.0]),
            censored_seeds: 0,
        }
    }

    #[test]
    fn paired_verdicts_follow_the_seeds() {
        let a = cell("ours", &[1, 2, 3, 4], &[1.0, 2.0, 3.0, 4.0]);
        let b = cell("gie-default", &[1, 2, 3, 4], &[1.1, 2.1, 3.1, 4.2]);
        let p = Paired::of(&a, &b);
        assert_eq!((p.a_wins, p.n), (4, 4));
        assert_eq!(p.verdict(), "better");
        assert_eq!(Paired::of(&b, &a).verdict(), "worse");
        let c = cell("round-robin", &[1, 2, 3, 4], &[0.9, 2.1, 2.9, 4.1]);
        assert_eq!(Paired::of(&a, &c).verdict(), "tie");
        let cells = [&a, &b, &c];
        let lines = verdicts(&cells, "ours");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("vs gie-default: better"), "{}", lines[0]);
        assert!(lines[0].contains("vs round-robin: tie"), "{}", lines[0]);
        assert!(
            headline_table(&cells).contains("| 2.50 ± 2.05 s |"),
            "{}",
            headline_table(&cells)
        );
    }
}
