//! Who gets dropped first: request priority (InferenceObjective or model
//! criticality) and pool saturation, per the GIE rules.

use serde::Deserialize;

use crate::state::{EndpointView, ModelRuleView, PoolView, RequestCriticality};

/// Where a pod counts as full (GIE saturation detector defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaturationThresholds {
    /// Waiting requests at which a pod is saturated.
    pub queue_threshold: f64,
    /// KV-cache usage (0..1) at which a pod is saturated.
    pub kv_threshold: f64,
}

impl Default for SaturationThresholds {
    fn default() -> Self {
        SaturationThresholds {
            queue_threshold: 5.0,
            kv_threshold: 0.8,
        }
    }
}

impl SaturationThresholds {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.queue_threshold.is_finite() && self.queue_threshold > 0.0) {
            return Err("saturation.queue_threshold must be a number > 0".into());
        }
        if !(self.kv_threshold.is_finite() && self.kv_threshold > 0.0 && self.kv_threshold <= 1.0) {
            return Err("saturation.kv_threshold must be in (0, 1]".into());
        }
        Ok(())
    }

    /// One pod's saturation: `max(waiting/queue_threshold, kv/kv_threshold)`;
    /// 1.0 (saturated) when its metrics are older than `metrics_stale_ms`.
    pub fn endpoint_saturation(
        &self,
        endpoint: &EndpointView,
        snapshot_age_ms: u32,
        metrics_stale_ms: u32,
    ) -> f64 {
        if endpoint.metrics_age_now_ms(snapshot_age_ms) > metrics_stale_ms {
            return 1.0;
        }
        let queue = f64::from(endpoint.waiting) / self.queue_threshold;
        let kv = f64::from(endpoint.kv_cache_usage) / self.kv_threshold;
        queue.max(kv)
    }

    /// Pool saturation: the average over ready endpoints, `>= 1.0` meaning
    /// saturated. A pool with no ready endpoint is saturated.
    pub fn pool_saturation(
        &self,
        pool: &PoolView,
        snapshot_age_ms: u32,
        metrics_stale_ms: u32,
    ) -> f64 {
        let (sum, count) =
            pool.endpoints
                .iter()
                .filter(|e| e.ready)
                .fold((0.0, 0u32), |(sum, n), e| {
                    (
                        sum + self.endpoint_saturation(e, snapshot_age_ms, metrics_stale_ms),
                        n + 1,
                    )
                });
        if count == 0 {
            f64::INFINITY
        } else {
            sum / f64::from(count)
        }
    }
}

/// The priority a request runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPriority {
    /// The InferenceObjective named by the request header, when the pool has it.
    pub objective: Option<String>,
    pub criticality: RequestCriticality,
}

impl RequestPriority {
    /// A known objective decides (negative priority = sheddable, GIE); without
    /// one the matching model rule's criticality does; otherwise Standard.
    /// Unknown objective names are ignored rather than refused, as GIE does.
    pub fn resolve(
        pool: &PoolView,
        objective_header: Option<&str>,
        rule: Option<&ModelRuleView>,
    ) -> Self {
        if let Some((name, &priority)) =
            objective_header.and_then(|name| pool.objectives.get_key_value(name.trim()))
        {
            return RequestPriority {
                objective: Some(name.clone()),
                criticality: if priority < 0 {
                    RequestCriticality::Sheddable
                } else {
                    RequestCriticality::Standard
                },
            };
        }
        RequestPriority {
            objective: None,
            criticality: rule
                .and_then(|r| r.criticality)
                .unwrap_or(RequestCriticality::Standard),
        }
    }

    pub fn is_sheddable(&self) -> bool {
        self.criticality == RequestCriticality::Sheddable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{endpoint, pool};
    use pool_state::Objective;

    fn view(endpoints: Vec<pool_state::Endpoint>) -> PoolView {
        PoolView::from_pool(&pool("p", endpoints))
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn pod_saturation_is_the_worse_of_queue_and_kv() {
        let t = SaturationThresholds::default();
        let p = view(vec![endpoint("a:1", 10, 0.1), endpoint("b:1", 0, 0.4)]);
        assert_eq!(t.endpoint_saturation(&p.endpoints[0], 0, 200), 2.0);
        assert!((t.endpoint_saturation(&p.endpoints[1], 0, 200) - 0.5).abs() < 1e-6);
        // average of 2.0 and 0.5
        assert!((t.pool_saturation(&p, 0, 200) - 1.25).abs() < 1e-6);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn stale_metrics_count_as_saturated() {
        let t = SaturationThresholds::default();
        let p = view(vec![endpoint("a:1", 0, 0.0), endpoint("b:1", 0, 0.0)]);
        assert_eq!(t.pool_saturation(&p, 0, 200), 0.0);
        // metrics_age_ms 10 + snapshot age 191 > 200
        assert_eq!(t.pool_saturation(&p, 191, 200), 1.0);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn no_ready_endpoint_is_saturated() {
        let t = SaturationThresholds::default();
        let mut e = endpoint("a:1", 0, 0.0);
        e.ready = false;
        assert!(t.pool_saturation(&view(vec![e]), 0, 200) >= 1.0);
        assert!(t.pool_saturation(&view(vec![]), 0, 200) >= 1.0);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn objective_beats_criticality_and_unknown_objectives_are_ignored() {
        let mut p = pool("p", vec![]);
        p.objectives = vec![
            Objective {
                name: "batch".into(),
                priority: -5,
            },
            Objective {
                name: "chat".into(),
                priority: 10,
            },
        ];
        let p = PoolView::from_pool(&p);
        let sheddable_rule = ModelRuleView {
            model: Some("m".into()),
            targets: vec![],
            criticality: Some(RequestCriticality::Sheddable),
            source: String::new(),
        };
        let r = RequestPriority::resolve(&p, Some("batch"), None);
        assert!(r.is_sheddable());
        assert_eq!(r.objective.as_deref(), Some("batch"));
        assert!(!RequestPriority::resolve(&p, Some("chat"), Some(&sheddable_rule)).is_sheddable());
        assert!(RequestPriority::resolve(&p, Some("nope"), Some(&sheddable_rule)).is_sheddable());
        assert!(!RequestPriority::resolve(&p, None, None).is_sheddable());
        assert_eq!(
            RequestPriority::resolve(&p, None, None).criticality,
            RequestCriticality::Standard
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn thresholds_are_validated() {
        assert!(SaturationThresholds::default().validate().is_ok());
        for (q, kv) in [(0.0, 0.8), (5.0, 0.0), (5.0, 1.5), (f64::NAN, 0.8)] {
            let t = SaturationThresholds {
                queue_threshold: q,
                kv_threshold: kv,
            };
            assert!(t.validate().is_err(), "{q} {kv}");
        }
    }
}
