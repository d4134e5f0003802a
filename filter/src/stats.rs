//! Names of the filter's Envoy stats. Labels are folded into the stat name
//! (`<metric>.<tag>.<value>...`, Envoy's hierarchical style) and every value
//! is sanitised and bounded: client-chosen strings never become stat names
//! unless the pool state knows them, so a client cannot explode cardinality.

use crate::prefix::{hash_bytes, mix64};
use crate::state::PoolView;

pub const REQUESTS_TOTAL: &str = "llmgw_requests_total";
pub const PICKS_TOTAL: &str = "llmgw_picks_total";
pub const PREFIX_AFFINITY_TOTAL: &str = "llmgw_prefix_affinity_picks_total";
pub const SHED_TOTAL: &str = "llmgw_shed_total";
pub const ERRORS_TOTAL: &str = "llmgw_errors_total";
pub const FAIL_OPEN_TOTAL: &str = "llmgw_fail_open_total";
pub const DECISION_TIME_US: &str = "llmgw_decision_time_us";
pub const SNAPSHOTS_RECEIVED_TOTAL: &str = "llmgw_snapshots_received_total";
pub const COLLECTOR_STREAM_CLOSED_TOTAL: &str = "llmgw_collector_stream_closed_total";
/// Affinity keys sent to the collector (ReportPrefixes), and failed sends.
pub const PREFIX_REPORTS_TOTAL: &str = "llmgw_prefix_reports_total";
pub const PREFIX_REPORT_ERRORS_TOTAL: &str = "llmgw_prefix_report_errors_total";
/// Per endpoint: requests it actually served (read back from
/// `upstream.address`; differs from picks when a retry went to a fallback).
pub const SERVED_TOTAL: &str = "llmgw_served_total";
/// Per endpoint: refused or reset connections attributed to it (each one
/// (re)marks it in the failure table).
pub const ENDPOINT_FAILURES_TOTAL: &str = "llmgw_endpoint_failures_total";
/// Per pool: requests a fallback (not the first pick) served.
pub const FALLBACK_SERVED_TOTAL: &str = "llmgw_fallback_served_total";

/// Longest label value kept; longer ones are cut (names stay readable).
const MAX_LABEL: usize = 64;
/// Longest pool label: a namespace (63) + `_` + a pool name (253) is never
/// cut, so two pools never share a label by truncation.
const MAX_POOL_LABEL: usize = 320;

/// `[A-Za-z0-9_-]` kept, everything else (dots would split Envoy's stat
/// hierarchy, slashes and colons confuse Prometheus export) becomes `_`.
pub fn label(value: &str) -> String {
    label_within(value, MAX_LABEL)
}

/// The pool label: the pool's id `namespace/name` sanitised like [`label`]
/// (`team-a/llm` → `team-a_llm`). Namespaces hold no `_`, so the first `_`
/// still separates namespace and name.
pub fn pool_label(pool_id: &str) -> String {
    label_within(pool_id, MAX_POOL_LABEL)
}

fn label_within(value: &str, max: usize) -> String {
    let mut out: String = value
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// The model as a label: itself when the pool's rules name or target it
/// (InferenceModel / InferenceModelRewrite), else `other`. Only rules count:
/// which adapters pods report running changes with every scrape, and a label
/// that followed it would count one model under two names.
pub fn model_label(pool: Option<&PoolView>, model: &str) -> String {
    let known = pool.is_some_and(|p| {
        p.rules.iter().any(|r| {
            r.model.as_deref() == Some(model) || r.targets.iter().any(|t| t.model == model)
        })
    });
    if known {
        label(model)
    } else {
        "other".into()
    }
}

pub fn requests(pool: &str, model: &str, target_model: &str) -> String {
    format!(
        "{REQUESTS_TOTAL}.pool.{}.model.{model}.target_model.{target_model}",
        pool_label(pool)
    )
}

pub fn picks(pool: &str, address: &str) -> String {
    format!(
        "{PICKS_TOTAL}.pool.{}.endpoint.{}",
        pool_label(pool),
        label(address)
    )
}

pub fn per_pool(metric: &str, pool: &str) -> String {
    format!("{metric}.pool.{}", pool_label(pool))
}

pub fn errors(reason: &str) -> String {
    format!("{ERRORS_TOTAL}.reason.{}", label(reason))
}

/// One stat the filter emits, named by its parts. The host caches metric ids
/// by [`Stat::key`], computed from the parts without building the name, so a
/// request formats no stat names once its stats exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat<'a> {
    Requests {
        pool: &'a str,
        model: &'a str,
        target_model: &'a str,
    },
    Picks {
        pool: &'a str,
        endpoint: &'a str,
    },
    PerPool {
        metric: &'static str,
        pool: &'a str,
    },
    Errors {
        reason: &'a str,
    },
    PerEndpoint {
        metric: &'static str,
        pool: &'a str,
        endpoint: &'a str,
    },
    Plain(&'static str),
}

impl Stat<'_> {
    /// The Envoy stat name.
    pub fn name(&self) -> String {
        match *self {
            Stat::Requests {
                pool,
                model,
                target_model,
            } => requests(pool, model, target_model),
            Stat::Picks { pool, endpoint } => picks(pool, endpoint),
            Stat::PerPool { metric, pool } => per_pool(metric, pool),
            Stat::Errors { reason } => errors(reason),
            Stat::PerEndpoint {
                metric,
                pool,
                endpoint,
            } => format!("{metric}.pool.{}.endpoint.{}", label(pool), label(endpoint)),
            Stat::Plain(name) => name.to_string(),
        }
    }

    /// A 64-bit identity of the stat's parts. Distinct stats collide with
    /// probability ~n²/2⁶⁵: about 3·10⁻¹² for a worker's 10,000 names at most.
    pub fn key(&self) -> u64 {
        let chain = |parts: &[&str]| {
            parts.iter().fold(0x5354_4154_u64, |h, part| {
                mix64(h.rotate_left(17) ^ hash_bytes(part.as_bytes()))
            })
        };
        match *self {
            Stat::Requests {
                pool,
                model,
                target_model,
            } => chain(&[REQUESTS_TOTAL, pool, model, target_model]),
            Stat::Picks { pool, endpoint } => chain(&[PICKS_TOTAL, pool, endpoint]),
            Stat::PerPool { metric, pool } => chain(&[metric, pool]),
            Stat::Errors { reason } => chain(&[ERRORS_TOTAL, reason]),
            Stat::PerEndpoint {
                metric,
                pool,
                endpoint,
            } => chain(&[metric, pool, endpoint]),
            Stat::Plain(name) => chain(&[name]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::pool;
    use pool_state::{ModelRule, WeightedTarget};

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn labels_are_sanitised_and_bounded() {
        assert_eq!(label("10.0.0.1:8000"), "10_0_0_1_8000");
        assert_eq!(label("meta-llama/Llama-3.1-8B"), "meta-llama_Llama-3_1-8B");
        assert_eq!(label(""), "none");
        assert_eq!(label(&"x".repeat(500)).len(), 64);
        assert_eq!(
            picks("p", "1.2.3.4:5"),
            "llmgw_picks_total.pool.p.endpoint.1_2_3_4_5"
        );
        assert_eq!(
            errors("invalid_json"),
            "llmgw_errors_total.reason.invalid_json"
        );
        // The pool label carries the namespace, sanitised, and is never cut.
        assert_eq!(
            per_pool(SHED_TOTAL, "team-a/llm.v1"),
            "llmgw_shed_total.pool.team-a_llm_v1"
        );
        assert_ne!(
            picks("team-a/llm", "1.2.3.4:5"),
            picks("team-b/llm", "1.2.3.4:5")
        );
        let long = format!("{}/{}", "n".repeat(63), "p".repeat(253));
        assert_eq!(pool_label(&long).len(), long.len());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn stat_keys_tell_every_stat_apart_and_names_match_the_builders() {
        let stats = [
            Stat::Requests {
                pool: "p",
                model: "m",
                target_model: "t",
            },
            Stat::Requests {
                pool: "p",
                model: "mt",
                target_model: "",
            },
            Stat::Requests {
                pool: "p",
                model: "t",
                target_model: "m",
            },
            Stat::Picks {
                pool: "p",
                endpoint: "1.2.3.4:5",
            },
            Stat::Picks {
                pool: "p",
                endpoint: "1.2.3.4:6",
            },
            Stat::PerPool {
                metric: SHED_TOTAL,
                pool: "p",
            },
            Stat::PerPool {
                metric: FAIL_OPEN_TOTAL,
                pool: "p",
            },
            Stat::Errors { reason: "p" },
            Stat::Plain(DECISION_TIME_US),
        ];
        let mut keys: Vec<u64> = stats.iter().map(Stat::key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), stats.len());
        assert_eq!(stats[0].key(), stats[0].key(), "stable");
        assert_eq!(stats[3].name(), picks("p", "1.2.3.4:5"));
        assert_eq!(stats[5].name(), "llmgw_shed_total.pool.p");
        assert_eq!(stats[8].name(), DECISION_TIME_US);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn unknown_models_fold_into_other() {
        let mut p = pool("p", vec![]);
        p.adapter_names = vec!["food-review".into()];
        p.model_rules = vec![ModelRule {
            model: "travelhelper".into(),
            targets: vec![WeightedTarget {
                model: "travel-helper-v1".into(),
                weight: 1,
            }],
            ..Default::default()
        }];
        let p = crate::state::PoolView::from_pool(&p);
        assert_eq!(model_label(Some(&p), "travelhelper"), "travelhelper");
        assert_eq!(
            model_label(Some(&p), "travel-helper-v1"),
            "travel-helper-v1"
        );
        // An adapter a pod serves but no rule names: `other`, whatever the
        // last scrape saw running.
        assert_eq!(model_label(Some(&p), "food-review"), "other");
        assert_eq!(model_label(Some(&p), "random-junk-123"), "other");
        assert_eq!(model_label(None, "x"), "other");
    }
}
