//! bench-overhead's tables: each arm's figures, each arm against Envoy without
//! a filter (the last arm), and the goals of issue 17 as ratios within the run.

use std::time::Duration;

/// One arm's figures for one body size.
pub struct ArmStats {
    pub name: String,
    pub requests: usize,
    pub median: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub rps: f64,
    /// Envoy's CPU time per request, µs.
    pub envoy_us: f64,
    /// The external processor's CPU time per request, µs (ext_proc arm only).
    pub processor_us: Option<f64>,
    /// The shared collector's CPU time per request during this arm's rounds, µs.
    pub collector_us: f64,
}

impl ArmStats {
    /// CPU per request of the request path: Envoy plus any external processor.
    pub fn path_us(&self) -> f64 {
        self.envoy_us + self.processor_us.unwrap_or(0.0)
    }

    pub fn print(&self, size: usize) {
        println!(
            "| {} | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} req/s | {:.1} µs | {} | {:.1} µs | {:.1} µs |",
            human_size(size),
            self.name,
            self.requests,
            ms(self.median),
            ms(self.p90),
            ms(self.p99),
            ms(self.mean),
            self.rps,
            self.envoy_us,
            self.processor_us
                .map_or_else(|| "".to_string(), |us| format!("{us:.1} µs")),
            self.path_us(),
            self.collector_us
        );
    }
}

pub fn header() {
    println!("\n| body | setup | requests | median | p90 | p99 | mean | throughput | Envoy CPU / request | processor CPU / request | Envoy + processor CPU / request | collector CPU / request |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

/// Each arm against the last (Envoy without a filter).
pub fn against_baseline(summary: &[(usize, Vec<ArmStats>)]) {
    println!(
        "\nAgainst Envoy without a filter (the last arm). CPU is Envoy's plus the external processor's; the CPU ratio is the throughput ratio the request path would reach on cores of its own.\n"
    );
    println!(
        "| body | setup | added median | added p99 | throughput ratio | added CPU / request | CPU ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (size, stats) in summary {
        let Some((base, arms)) = stats.split_last() else {
            continue;
        };
        for arm in arms {
            println!(
                "| {} | {} | {:+.3} ms | {:+.3} ms | {:.2} | {:+.1} µs | {:.2} |",
                human_size(*size),
                arm.name,
                ms(arm.median) - ms(base.median),
                ms(arm.p99) - ms(base.p99),
                arm.rps / base.rps,
                arm.path_us() - base.path_us(),
                base.path_us() / arm.path_us()
            );
        }
    }
}

/// The filter's own decision time in V8 (its `llmgw_decision_time_us`
/// histogram), mean per body size; warm-up requests included.
pub fn decision_times(rows: &[(usize, String, f64)]) {
    if rows.is_empty() {
        return;
    }
    println!("\nDecision time inside V8 (the filter's llmgw_decision_time_us, mean; includes the host calls it makes while deciding):\n");
    println!("| body | setup | decision time |");
    println!("|---|---|---:|");
    for (size, name, mean_us) in rows {
        println!("| {} | {name} | {mean_us:.1} µs |", human_size(*size));
    }
}

/// Issue 17's goals, where the run has the arms they compare.
pub fn goals(summary: &[(usize, Vec<ArmStats>)]) {
    println!("\nGoals (issue 17), within this run:\n");
    println!("| body | goal | figure | met |");
    println!("|---|---|---:|---|");
    for (size, stats) in summary {
        let find = |prefix: &str| stats.iter().find(|a| a.name.starts_with(prefix));
        let (Some(filter), Some(base)) = (find("Envoy + filter"), stats.last()) else {
            continue;
        };
        if let Some(floor) = find("Envoy + floor filter") {
            let ratio = filter.path_us() / floor.path_us();
            println!(
                "| {} | filter CPU / request <= 1.15x the floor filter's | {ratio:.2}x | {} |",
                human_size(*size),
                yes_no(ratio <= 1.15)
            );
        }
        if let Some(ext_proc) = find("Envoy + ext_proc floor") {
            let added_ms = |arm: &ArmStats| ms(arm.median) - ms(base.median);
            let added_us = |arm: &ArmStats| arm.path_us() - base.path_us();
            for (what, theirs, ours) in [
                ("added median", added_ms(ext_proc), added_ms(filter)),
                ("added CPU / request", added_us(ext_proc), added_us(filter)),
            ] {
                // When the filter adds nothing measurable, any cost of the
                // ext_proc arm meets the goal.
                let (figure, met) = if ours > 0.0 {
                    (format!("{:.1}x", theirs / ours), theirs / ours >= 3.0)
                } else {
                    ("filter adds none".to_string(), theirs > 0.0)
                };
                println!(
                    "| {} | ext_proc floor's {what} >= 3x the filter's | {figure} | {} |",
                    human_size(*size),
                    yes_no(met)
                );
            }
        }
    }
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn human_size(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}
