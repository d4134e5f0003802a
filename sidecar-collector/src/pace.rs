//! The scrape interval, fixed or kept within a CPU budget.
//!
//! Scraping costs the collector CPU in proportion to endpoints / interval.
//! Past what its cores can do at the configured interval, ticks fall behind
//! and every change waits longer to be published. With a budget
//! (`--scrape-cpu-budget`, in cores) the collector measures, every second,
//! its own CPU use and how many scrapes it managed against how many the
//! interval asks for, and lengthens the interval just enough to stay within
//! the budget and to keep up (below 90% of the scrapes asked for, it is
//! falling behind: the machine gives it less than the budget). It shortens
//! the interval again, never below the configured one, when the load goes:
//! every endpoint is scraped less often, but evenly, and a scraped change is
//! still published at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::telemetry::Telemetry;

/// Longest interval the budget may stretch to, as a multiple of the configured one.
const MAX_STRETCH: u64 = 20;
/// Within this band around the budget the interval is left alone.
const BAND: (f64, f64) = (0.85, 1.05);
/// The interval moves at most by this factor per adjustment.
const MAX_STEP: f64 = 2.0;

/// Below this share of the scrapes the interval asks for, the collector is
/// falling behind.
const KEEPING_UP: f64 = 0.9;

/// The interval every scrape task reads before it sleeps, and the count of
/// scrapes done and of tasks scraping.
#[derive(Debug)]
pub struct Pace {
    base_ns: u64,
    current_ns: AtomicU64,
    scrapes: AtomicU64,
    tasks: AtomicU64,
}

/// Counts one scrape task while it lives.
#[derive(Debug)]
pub struct TaskGuard(Arc<Pace>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pace {
    pub fn new(interval: Duration) -> Self {
        let ns = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            base_ns: ns,
            current_ns: AtomicU64::new(ns),
            scrapes: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
        }
    }

    /// Registers a scrape task (until the guard drops).
    pub fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::Relaxed);
        TaskGuard(self.clone())
    }

    /// Counts one scrape done.
    pub fn scraped(&self) {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
    }

    /// The configured interval.
    pub fn base(&self) -> Duration {
        Duration::from_nanos(self.base_ns)
    }

    /// The interval in force.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.current_ns.load(Ordering::Relaxed))
    }

    /// Sets the interval for `used` cores against a `budget`, with `kept_up`
    /// the share of the scrapes asked for that were done, and returns it.
    pub fn adjust(&self, used: f64, budget: f64, kept_up: f64) -> Duration {
        let current = self.current_ns.load(Ordering::Relaxed);
        let next = next_interval(self.base_ns, current, used, budget, kept_up);
        self.current_ns.store(next, Ordering::Relaxed);
        Duration::from_nanos(next)
    }
}

/// CPU use scales with 1 / interval: scale the interval by used / budget when
/// outside the band (aiming just under the budget when shrinking), or by the
/// shortfall when scrapes fall behind, a step at most [`MAX_STEP`], within
/// [base, base × MAX_STRETCH].
fn next_interval(base: u64, current: u64, used: f64, budget: f64, kept_up: f64) -> u64 {
    if !(used.is_finite() && kept_up.is_finite() && budget > 0.0) {
        return current;
    }
    let ratio = used / budget;
    let behind = if kept_up < KEEPING_UP && kept_up > 0.0 {
        1.0 / kept_up
    } else {
        1.0
    };
    let over = ratio.max(behind);
    let factor = if over > BAND.1 {
        over.min(MAX_STEP)
    } else if ratio < BAND.0 && kept_up >= 0.97 && current > base {
        (ratio / 0.95).max(1.0 / MAX_STEP)
    } else {
        return current;
    };
    let next = (current as f64 * factor) as u64;
    next.clamp(base, base.saturating_mul(MAX_STRETCH))
}

/// CPU time (user + system, every thread) this process has used, from
/// `/proc/self/stat`; `None` where there is no procfs.
pub fn own_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces); utime and stime
    // are fields 14 and 15 of the line, in USER_HZ (100 on Linux) ticks.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Every `period`, measures this process's CPU use and adjusts `pace` to the
/// `budget` (cores), showing the interval in `telemetry`. Runs until the
/// process ends.
pub async fn follow_cpu_budget(
    pace: Arc<Pace>,
    budget: f64,
    period: Duration,
    telemetry: Arc<Telemetry>,
) {
    let Some(mut cpu_before) = own_cpu() else {
        tracing::warn!("no /proc/self/stat: the scrape interval stays fixed");
        return;
    };
    let mut scrapes_before = pace.scrapes.load(Ordering::Relaxed);
    let mut at = Instant::now();
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(cpu) = own_cpu() else { return };
        let now = Instant::now();
        let elapsed = now.duration_since(at).as_secs_f64().max(1e-3);
        let used = cpu.saturating_sub(cpu_before).as_secs_f64() / elapsed;
        let scrapes = pace.scrapes.load(Ordering::Relaxed);
        let before = pace.interval();
        let asked = pace.tasks.load(Ordering::Relaxed) as f64 * elapsed / before.as_secs_f64();
        let kept_up = if asked >= 1.0 {
            scrapes.saturating_sub(scrapes_before) as f64 / asked
        } else {
            1.0
        };
        let after = pace.adjust(used, budget, kept_up);
        if after != before {
            telemetry.scrape_interval_ns.store(
                u64::try_from(after.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            tracing::info!(
                cores = format!("{used:.2}"),
                kept_up = format!("{kept_up:.2}"),
                budget,
                interval_ms = after.as_secs_f64() * 1e3,
                "scrape interval adjusted to the CPU budget"
            );
        }
        cpu_before = cpu;
        scrapes_before = scrapes;
        at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn over_budget_stretches_in_proportion_at_most_twice_per_step() {
        assert_eq!(next_interval(50 * MS, 50 * MS, 1.5, 1.0, 1.0), 75 * MS);
        assert_eq!(next_interval(50 * MS, 50 * MS, 5.0, 1.0, 1.0), 100 * MS);
        // Never past 20x the configured interval.
        assert_eq!(next_interval(50 * MS, 900 * MS, 2.0, 1.0, 1.0), 1000 * MS);
    }

    #[test]
    fn falling_behind_stretches_by_the_shortfall_even_under_budget() {
        // Half the scrapes asked for were done: the machine gives less than
        // the budget, so the interval doubles.
        assert_eq!(next_interval(50 * MS, 50 * MS, 0.2, 1.0, 0.5), 100 * MS);
        assert_eq!(next_interval(50 * MS, 50 * MS, 0.2, 1.0, 0.8), 62_500_000);
        // 92% is keeping up (ticks jitter); it neither stretches nor shrinks.
        assert_eq!(next_interval(50 * MS, 80 * MS, 0.2, 1.0, 0.92), 80 * MS);
    }

    #[test]
    fn within_the_band_nothing_moves() {
        assert_eq!(next_interval(50 * MS, 80 * MS, 1.0, 1.0, 1.0), 80 * MS);
        assert_eq!(next_interval(50 * MS, 80 * MS, 0.9, 1.0, 1.0), 80 * MS);
    }

    #[test]
    fn under_budget_shrinks_back_but_never_below_the_configured_interval() {
        assert_eq!(next_interval(50 * MS, 100 * MS, 0.475, 1.0, 1.0), 50 * MS);
        assert_eq!(next_interval(50 * MS, 200 * MS, 0.1, 1.0, 1.0), 100 * MS);
        assert_eq!(next_interval(50 * MS, 50 * MS, 0.1, 1.0, 1.0), 50 * MS);
    }

    #[test]
    fn nonsense_measurements_change_nothing() {
        assert_eq!(next_interval(50 * MS, 70 * MS, f64::NAN, 1.0, 1.0), 70 * MS);
        assert_eq!(next_interval(50 * MS, 70 * MS, 1.0, 0.0, 1.0), 70 * MS);
        assert_eq!(next_interval(50 * MS, 70 * MS, 1.0, 1.0, f64::NAN), 70 * MS);
    }

    #[test]
    fn pace_starts_at_the_configured_interval_and_follows_adjustments() {
        let pace = Arc::new(Pace::new(Duration::from_millis(50)));
        let task = pace.task();
        assert_eq!(pace.tasks.load(Ordering::Relaxed), 1);
        drop(task);
        assert_eq!(pace.tasks.load(Ordering::Relaxed), 0);
        assert_eq!(pace.interval(), Duration::from_millis(50));
        assert_eq!(pace.adjust(2.0, 1.0, 1.0), Duration::from_millis(100));
        assert_eq!(pace.interval(), Duration::from_millis(100));
        assert_eq!(pace.base(), Duration::from_millis(50));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(own_cpu().is_some());
    }
}
