//! What the scrapers learned about each endpoint, shared with the snapshot
//! publisher and the collector's own `/metrics`.
//!
//! One mutex around one map: a scrape holds it for a few hundred nanoseconds
//! to store its result, the publisher for one pass per snapshot. Scrapes that
//! change something wake the publisher through [`Observations::changed`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics_parse::EngineMetrics;

/// The last good scrape of an endpoint.
#[derive(Debug, Clone)]
pub struct GoodScrape {
    pub at: Instant,
    pub metrics: EngineMetrics,
}

#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub last_good: Option<GoodScrape>,
    pub consecutive_failures: u32,
    /// At least one scrape (good or bad) finished.
    pub attempted: bool,
    pub last_error: Option<String>,
    pub last_duration: Duration,
    pub scrapes_total: u64,
    pub errors_total: u64,
    /// Set when a scrape changed what a snapshot would say; cleared when a
    /// snapshot carrying it is published (its age is the scrape-to-publish delay).
    pub unpublished_since: Option<Instant>,
    /// A good scrape happened since the last publish (ages got fresher).
    pub fresh: bool,
}

impl Observation {
    /// Scrapes succeed recently enough for the endpoint to take traffic.
    pub fn healthy(&self, unready_after_failures: u32) -> bool {
        self.last_good.is_some() && self.consecutive_failures < unready_after_failures
    }

    /// Milliseconds since the last good scrape; `u32::MAX` when there was none.
    pub fn age_ms(&self, now: Instant) -> u32 {
        match &self.last_good {
            Some(good) => {
                let ms = now.saturating_duration_since(good.at).as_millis();
                u32::try_from(ms).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
            }
            None => u32::MAX,
        }
    }
}

#[derive(Debug, Default)]
pub struct Observations {
    map: Mutex<HashMap<String, Observation>>,
    /// Wakes the publisher after a scrape changed something.
    pub changed: Notify,
}

impl Observations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with the map locked. Keep `f` short: scrapers wait meanwhile.
    pub fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Observation>) -> R) -> R {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut map)
    }

    /// Keeps exactly the `addresses` given, adding empty entries for new ones.
    pub fn retain_addresses<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) {
        let wanted: std::collections::HashSet<&str> = addresses.into_iter().collect();
        self.with(|map| {
            map.retain(|address, _| wanted.contains(address.as_str()));
            for address in wanted {
                if !map.contains_key(address) {
                    map.insert(address.to_owned(), Observation::default());
                }
            }
        });
    }

    /// Stores one scrape result and wakes the publisher if it matters.
    pub fn record(
        &self,
        address: &str,
        outcome: Result<EngineMetrics, String>,
        duration: Duration,
        unready_after_failures: u32,
    ) {
        let now = Instant::now();
        let changed = self.with(|map| {
            let Some(obs) = map.get_mut(address) else {
                return false; // the endpoint left while we were scraping it
            };
            obs.attempted = true;
            obs.scrapes_total += 1;
            obs.last_duration = duration;
            let changed = match outcome {
                Ok(metrics) => {
                    let changed = obs.consecutive_failures > 0
                        || obs.last_good.as_ref().is_none_or(|g| g.metrics != metrics);
                    obs.last_good = Some(GoodScrape { at: now, metrics });
                    obs.consecutive_failures = 0;
                    obs.last_error = None;
                    obs.fresh = true;
                    changed
                }
                Err(err) => {
                    obs.consecutive_failures = obs.consecutive_failures.saturating_add(1);
                    obs.errors_total += 1;
                    obs.last_error = Some(err);
                    // Past the threshold more failures change nothing a router acts on.
                    obs.consecutive_failures <= unready_after_failures
                }
            };
            if changed && obs.unpublished_since.is_none() {
                obs.unpublished_since = Some(now);
            }
            changed
        });
        if changed {
            self.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(waiting: u32) -> EngineMetrics {
        EngineMetrics {
            waiting,
            ..EngineMetrics::default()
        }
    }

    #[test]
    fn staleness_and_readiness_follow_scrape_results() {
        let obs = Observations::new();
        obs.retain_addresses(["a:1"]);
        obs.with(|m| {
            let o = &m["a:1"];
            assert_eq!(o.age_ms(Instant::now()), u32::MAX);
            assert!(!o.healthy(3), "never scraped is not healthy");
        });
        obs.record("a:1", Ok(metrics(1)), Duration::from_millis(2), 3);
        let later = Instant::now() + Duration::from_millis(150);
        obs.with(|m| {
            let o = &m["a:1"];
            assert!(o.healthy(3));
            assert!((150..160).contains(&o.age_ms(later)), "{}", o.age_ms(later));
            assert!(o.unpublished_since.is_some() && o.fresh);
        });
        for _ in 0..2 {
            obs.record("a:1", Err("refused".into()), Duration::ZERO, 3);
        }
        obs.with(|m| assert!(m["a:1"].healthy(3), "two failures are tolerated"));
        obs.record("a:1", Err("refused".into()), Duration::ZERO, 3);
        obs.with(|m| {
            let o = &m["a:1"];
            assert!(!o.healthy(3));
            assert_eq!(o.consecutive_failures, 3);
            assert_eq!(
                o.last_good.as_ref().unwrap().metrics.waiting,
                1,
                "last good values are kept"
            );
            assert_eq!(o.errors_total, 3);
        });
        obs.record("a:1", Ok(metrics(1)), Duration::ZERO, 3);
        obs.with(|m| assert!(m["a:1"].healthy(3)));
    }

    #[test]
    fn unchanged_metrics_do_not_mark_the_endpoint_dirty() {
        let obs = Observations::new();
        obs.retain_addresses(["a:1"]);
        obs.record("a:1", Ok(metrics(1)), Duration::ZERO, 3);
        obs.with(|m| m.get_mut("a:1").unwrap().unpublished_since = None);
        obs.record("a:1", Ok(metrics(1)), Duration::ZERO, 3);
        obs.with(|m| assert!(m["a:1"].unpublished_since.is_none()));
        obs.record("a:1", Ok(metrics(2)), Duration::ZERO, 3);
        obs.with(|m| assert!(m["a:1"].unpublished_since.is_some()));
    }

    #[test]
    fn removed_endpoints_ignore_late_results() {
        let obs = Observations::new();
        obs.retain_addresses(["a:1", "b:2"]);
        obs.retain_addresses(["b:2"]);
        obs.record("a:1", Ok(metrics(1)), Duration::ZERO, 3);
        obs.with(|m| {
            assert!(!m.contains_key("a:1"));
            assert!(m.contains_key("b:2"));
        });
    }
}
