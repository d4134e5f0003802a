//! Counters and histograms about the collector itself, rendered by
//! [`crate::http`]. Lock-free atomics: they are bumped on the scrape path.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A Prometheus histogram with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts; the last slot is +Inf.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(value.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes `name_bucket`, `name_sum`, `name_count` lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 1.0, 2.5, 5.0,
];

/// Everything the collector measures about itself.
#[derive(Debug)]
pub struct Telemetry {
    /// From a scrape that changed an endpoint's state to the publish of the
    /// first snapshot carrying it.
    pub scrape_to_publish: Histogram,
    /// Time to build one snapshot.
    pub snapshot_build: Histogram,
    pub snapshots_published: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    pub snapshot_version: AtomicU64,
    pub watch_streams: AtomicI64,
    /// Prefix reports (keys) applied, and ignored (unknown pool or endpoint).
    pub prefix_reports: AtomicU64,
    pub prefix_reports_ignored: AtomicU64,
    pub prefix_forward_errors: AtomicU64,
    /// Live edits rejected: the object's last valid version kept serving.
    pub rejected_edits: AtomicU64,
    /// Keys in the last snapshot's placement tables.
    pub placement_keys: AtomicU64,
    /// Discovery synced and every Ready endpoint scraped once.
    pub ready: AtomicBool,
    /// The scrape interval in force (see [`crate::pace`]).
    pub scrape_interval_ns: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            scrape_to_publish: Histogram::new(LATENCY_BUCKETS),
            snapshot_build: Histogram::new(LATENCY_BUCKETS),
            snapshots_published: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            snapshot_version: AtomicU64::new(0),
            watch_streams: AtomicI64::new(0),
            prefix_reports: AtomicU64::new(0),
            prefix_reports_ignored: AtomicU64::new(0),
            prefix_forward_errors: AtomicU64::new(0),
            rejected_edits: AtomicU64::new(0),
            placement_keys: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            scrape_interval_ns: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "test");
        assert!(out.contains("x_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_seconds_count 3\n"));
        assert!(out.contains("x_seconds_sum 1.055\n"), "{out}");
    }
}
