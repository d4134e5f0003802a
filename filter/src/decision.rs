//! One request's routing decision, end to end but without the host: body →
//! pool → state freshness and failure mode → model rewrite → priority and
//! shedding → pick. The host feeds it what it read from Envoy and applies the
//! result (headers, body, local reply, stats).

use crate::config::PluginConfig;
use crate::errors::GatewayError;
use crate::placement::PlacementState;
use crate::pool_id::PoolRef;
use crate::random::Draws;
use crate::request::{parse_request, rewrite_model};
use crate::rewrite::choose_target;
use crate::scheduling::{RequestFeatures, Scheduler};
use crate::state::{PoolFailureMode, PoolLookupError, PoolView, StateView};
use crate::{priority::RequestPriority, stats};

/// What the host read for this request.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// `xds.cluster_name`: the cluster Envoy routed to (weighted clusters
    /// already applied).
    pub cluster: Option<&'a str>,
    /// `x-gateway-inference-objective`.
    pub objective: Option<&'a str>,
    /// The decoded pool state and its age, if any has arrived.
    pub state: Option<(&'a StateView, u32)>,
    /// Host milliseconds (for the placement memory's report intervals).
    pub now_ms: u64,
}

/// A routed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The pool's id, `namespace/name` (`PoolView::id`).
    pub pool: String,
    /// `ip:port` for `x-gateway-destination-endpoint`.
    pub endpoint: String,
    /// `EndpointView::address_hash` of `endpoint` (keys the in-flight table).
    pub endpoint_hash: u64,
    /// The next-best distinct endpoints (`ip:port`, address hash), best
    /// first: the header's later entries, which Envoy's override_host policy
    /// tries on retries. At most `PluginConfig::fallbacks`.
    pub fallbacks: Vec<(String, u64)>,
    /// The model the client asked for (`None` for body-less requests).
    pub public_model: Option<String>,
    /// The model sent upstream.
    pub target_model: Option<String>,
    /// The rewritten body when the model changed.
    pub new_body: Option<Vec<u8>>,
    pub stream: bool,
    /// Picked under FailOpen without usable state.
    pub fail_open: bool,
    pub prefix_owner: bool,
    /// The request's affinity key, when the collector should hear that it
    /// went to `endpoint` (`placement::PlacementMemory::record`).
    pub report_key: Option<u64>,
    /// Stat labels (bounded: unknown models are `other`).
    pub model_label: String,
    pub target_label: String,
}

/// A request answered locally, with the pool when it was known (for stats):
/// its id, or the reference that named no single pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub error: GatewayError,
    pub pool: Option<String>,
}

impl Rejection {
    fn new(error: GatewayError, pool: Option<&str>) -> Self {
        Rejection {
            error,
            pool: pool.map(str::to_owned),
        }
    }
}

/// Decides where a request goes. `body` is `None` for requests without one
/// (e.g. `GET /v1/models`), which are balanced by load alone. `inflight`
/// returns this Envoy's in-flight counts aligned with the pool's endpoints;
/// `placement` is this worker's memory of the affinity keys it routed.
pub fn decide(
    config: &PluginConfig,
    scheduler: &Scheduler,
    ctx: RequestContext<'_>,
    body: Option<&[u8]>,
    inflight: impl FnOnce(&PoolView) -> Vec<u32>,
    placement: &mut dyn PlacementState,
    draws: &mut Draws,
) -> Result<Decision, Rejection> {
    decide_avoiding(
        config,
        scheduler,
        ctx,
        body,
        inflight,
        |_| Vec::new(),
        placement,
        draws,
    )
}

/// [`decide`], avoiding the endpoints whose address hashes `avoided` returns
/// (known to have just failed, `crate::failures`) for the primary pick and
/// the fallbacks alike, unless every endpoint is avoided (then the best of
/// them is tried anyway).
#[allow(clippy::too_many_arguments)]
pub fn decide_avoiding(
    config: &PluginConfig,
    scheduler: &Scheduler,
    ctx: RequestContext<'_>,
    body: Option<&[u8]>,
    inflight: impl FnOnce(&PoolView) -> Vec<u32>,
    avoided: impl FnOnce(&PoolView) -> Vec<u64>,
    placement: &mut dyn PlacementState,
    draws: &mut Draws,
) -> Result<Decision, Rejection> {
    if let Some(body) = body {
        if body.len() as u64 > config.max_body_bytes {
            return Err(Rejection::new(
                GatewayError::body_too_large(config.max_body_bytes),
                None,
            ));
        }
    }
    let parsed = body
        .map(parse_request)
        .transpose()
        .map_err(|e| Rejection::new(e.into(), None))?;
    let cluster = ctx.cluster.ok_or_else(|| {
        Rejection::new(
            GatewayError::unavailable(
                "no_cluster",
                "the route has no upstream cluster for the gateway to pick in",
            ),
            None,
        )
    })?;
    let pool_ref = config.pool_ref_for_cluster(cluster);
    let Some((state, age_ms)) = ctx.state else {
        return Err(Rejection::new(
            GatewayError::unavailable("no_state", "no pool state received from the collector yet"),
            Some(&pool_ref.display()),
        ));
    };
    let pool = state
        .resolve(pool_ref)
        .map_err(|e| pool_lookup_rejection(cluster, pool_ref, e))?;
    let pool_name = pool.id.as_str();

    let public_model = parsed.as_ref().map(|p| p.model.as_str());
    let choice = public_model.map(|m| choose_target(pool, m, draws.next_u64()));
    let target_model = choice.as_ref().map(|c| c.target_model.clone());
    let stale = age_ms > config.state_timeout_ms;
    let counts = inflight(pool);
    let mut excluded = avoided(pool);
    let fallback_rand = draws.next_u64();

    let (pick, fallbacks, fail_open) = if stale {
        if pool.failure_mode == PoolFailureMode::FailClose {
            return Err(Rejection::new(
                GatewayError::unavailable(
                    "stale_state",
                    format!("pool state is {age_ms} ms old and pool {pool_name:?} fails closed"),
                ),
                Some(pool_name),
            ));
        }
        let rand = draws.next_u64();
        let pick = scheduler
            .pick_fail_open_excluding(pool, &counts, rand, &excluded)
            .or_else(|_| scheduler.pick_fail_open(pool, &counts, rand));
        let mut fallbacks = Vec::new();
        if let Ok(first) = &pick {
            push_hash(pool, first.endpoint, &mut excluded);
            for i in 0..config.fallbacks {
                let rand = fallback_rand.wrapping_add(i as u64);
                match scheduler.pick_fail_open_excluding(pool, &counts, rand, &excluded) {
                    Ok(next) => {
                        push_hash(pool, next.endpoint, &mut excluded);
                        fallbacks.push(next.endpoint);
                    }
                    Err(_) => break,
                }
            }
        }
        (pick, fallbacks, true)
    } else {
        let priority =
            RequestPriority::resolve(pool, ctx.objective, choice.as_ref().and_then(|c| c.rule));
        if priority.is_sheddable() {
            let saturation = scheduler.config().saturation.pool_saturation(
                pool,
                age_ms,
                scheduler.config().metrics_stale_ms,
            );
            if saturation >= 1.0 {
                return Err(Rejection::new(GatewayError::shed(), Some(pool_name)));
            }
        }
        let prompt = match (&parsed, body) {
            (Some(p), Some(b)) => p.prompt(b),
            _ => &[],
        };
        let mut features = RequestFeatures::new(
            pool,
            target_model.as_deref().unwrap_or_default(),
            prompt,
            &scheduler.config().prefix,
        );
        scheduler.follow_unplaced(pool, &mut features, placement, ctx.now_ms);
        let rand = draws.next_u64();
        let pick = scheduler
            .pick_excluding(pool, &features, &counts, age_ms, rand, &excluded)
            .or_else(|_| scheduler.pick(pool, &features, &counts, age_ms, rand));
        let mut fallbacks = Vec::new();
        if let Ok(first) = &pick {
            push_hash(pool, first.endpoint, &mut excluded);
            for i in 0..config.fallbacks {
                let rand = fallback_rand.wrapping_add(i as u64);
                match scheduler.pick_excluding(pool, &features, &counts, age_ms, rand, &excluded) {
                    Ok(next) => {
                        push_hash(pool, next.endpoint, &mut excluded);
                        fallbacks.push(next.endpoint);
                    }
                    Err(_) => break,
                }
            }
        }
        (pick, fallbacks, false)
    };
    let pick = pick.map_err(|e| {
        Rejection::new(
            GatewayError::unavailable("no_endpoint", format!("pool {pool_name:?}: {}", e.reason())),
            Some(pool_name),
        )
    })?;
    let (endpoint, endpoint_hash) = pool
        .endpoints
        .get(pick.endpoint)
        .map(|e| (e.address.clone(), e.address_hash))
        .ok_or_else(|| {
            Rejection::new(
                GatewayError::unavailable(
                    "no_endpoint",
                    format!("pool {pool_name:?}: no endpoint"),
                ),
                Some(pool_name),
            )
        })?;

    let fallbacks = fallbacks
        .iter()
        .filter_map(|&i| pool.endpoints.get(i))
        .map(|e| (e.address.clone(), e.address_hash))
        .collect();

    let report_key = scheduler.record_pick(pool, &pick, endpoint_hash, placement, ctx.now_ms);

    let new_body = match (&parsed, body, &choice) {
        (Some(p), Some(b), Some(c)) if c.rewritten(&p.model) => {
            Some(rewrite_model(b, &p.model_span, &c.target_model))
        }
        _ => None,
    };
    Ok(Decision {
        pool: pool_name.to_owned(),
        endpoint,
        endpoint_hash,
        fallbacks,
        model_label: public_model
            .map_or_else(|| "none".into(), |m| stats::model_label(Some(pool), m)),
        target_label: target_model
            .as_deref()
            .map_or_else(|| "none".into(), |m| stats::model_label(Some(pool), m)),
        public_model: public_model.map(str::to_owned),
        target_model,
        new_body,
        stream: parsed.as_ref().is_some_and(|p| p.stream),
        fail_open,
        prefix_owner: pick.prefix_owner,
        report_key,
    })
}

/// 503 for a cluster whose pool is unknown, or named by a bare name that
/// pools in several namespaces have.
fn pool_lookup_rejection(
    cluster: &str,
    pool_ref: PoolRef<'_>,
    error: PoolLookupError,
) -> Rejection {
    let shown = pool_ref.display();
    let error = match error {
        PoolLookupError::Unknown => GatewayError::unavailable(
            "unknown_pool",
            format!("cluster {cluster:?} maps to pool {shown:?}, which the collector does not know"),
        ),
        PoolLookupError::Ambiguous(namespaces) => GatewayError::unavailable(
            "ambiguous_pool",
            format!(
                "cluster {cluster:?} maps to pool {shown:?}, which exists in namespaces {}: name it as \"namespace/name\" in cluster_pools",
                namespaces.join(", ")
            ),
        ),
    };
    Rejection::new(error, Some(&shown))
}

/// Adds the address hash of `pool.endpoints[index]` to `hashes`.
fn push_hash(pool: &PoolView, index: usize, hashes: &mut Vec<u64>) {
    if let Some(e) = pool.endpoints.get(index) {
        hashes.push(e.address_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::PlacementMemory;
    use crate::request::parse_request;
    use crate::state::tests::{endpoint, pool};
    use pool_state::{FailureMode, ModelRule, Objective, Snapshot, WeightedTarget};

    fn state(failure_mode: FailureMode) -> StateView {
        let mut p = pool(
            "llm",
            vec![
                endpoint("10.0.0.1:8000", 0, 0.1),
                endpoint("10.0.0.2:8000", 2, 0.4),
            ],
        );
        p.failure_mode = failure_mode as i32;
        p.model_rules = vec![ModelRule {
            model: "travelhelper".into(),
            targets: vec![
                WeightedTarget {
                    model: "travel-helper-v1".into(),
                    weight: 90,
                },
                WeightedTarget {
                    model: "travel-helper-v2".into(),
                    weight: 10,
                },
            ],
            ..Default::default()
        }];
        p.objectives = vec![Objective {
            name: "batch".into(),
            priority: -1,
        }];
        StateView::from_snapshot(
            &Snapshot {
                pools: vec![p],
                ..Default::default()
            },
            1,
        )
    }

    fn run(
        state: Option<(&StateView, u32)>,
        cluster: &str,
        objective: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Decision, Rejection> {
        let config = PluginConfig::parse(br#"{"cluster_pools":{"pool-cluster":"llm"}}"#).unwrap();
        let scheduler = Scheduler::new(config.scheduler_config());
        let ctx = RequestContext {
            cluster: Some(cluster),
            objective,
            state,
            now_ms: 0,
        };
        decide(
            &config,
            &scheduler,
            ctx,
            body,
            |p| vec![0; p.endpoints.len()],
            &mut PlacementMemory::new(),
            &mut Draws::new(3),
        )
    }

    fn three_pods(failure_mode: FailureMode) -> StateView {
        let mut p = pool(
            "llm",
            vec![
                endpoint("10.0.0.1:8000", 0, 0.1),
                endpoint("10.0.0.2:8000", 1, 0.2),
                endpoint("10.0.0.3:8000", 3, 0.5),
            ],
        );
        p.failure_mode = failure_mode as i32;
        StateView::from_snapshot(
            &Snapshot {
                pools: vec![p],
                ..Default::default()
            },
            1,
        )
    }

    fn run_avoiding(
        state: &StateView,
        age_ms: u32,
        avoided: &[&str],
        fallbacks: usize,
    ) -> Result<Decision, Rejection> {
        let config = PluginConfig {
            fallbacks,
            ..Default::default()
        };
        let scheduler = Scheduler::new(config.scheduler_config());
        let ctx = RequestContext {
            cluster: Some("llm"),
            objective: None,
            state: Some((state, age_ms)),
            now_ms: 0,
        };
        decide_avoiding(
            &config,
            &scheduler,
            ctx,
            Some(BODY),
            |p| vec![0; p.endpoints.len()],
            |p| {
                p.endpoints
                    .iter()
                    .filter(|e| avoided.contains(&e.address.as_str()))
                    .map(|e| e.address_hash)
                    .collect()
            },
            &mut PlacementMemory::new(),
            &mut Draws::new(3),
        )
    }

    fn addresses(d: &Decision) -> Vec<&str> {
        std::iter::once(d.endpoint.as_str())
            .chain(d.fallbacks.iter().map(|(a, _)| a.as_str()))
            .collect()
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn names_the_next_best_distinct_pods_as_fallbacks() {
        let s = three_pods(FailureMode::FailClose);
        let d = run_avoiding(&s, 10, &[], 2).unwrap();
        assert_eq!(
            addresses(&d),
            ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]
        );
        assert_eq!(
            d.fallbacks[0].1,
            s.pool("llm").unwrap().endpoints[1].address_hash
        );
        assert_eq!(addresses(&run_avoiding(&s, 10, &[], 1).unwrap()).len(), 2);
        assert_eq!(addresses(&run_avoiding(&s, 10, &[], 0).unwrap()).len(), 1);
        // More fallbacks asked than pods: every pod once.
        assert_eq!(addresses(&run_avoiding(&s, 10, &[], 8).unwrap()).len(), 3);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn known_failed_pods_are_neither_picked_nor_fallbacks() {
        let s = three_pods(FailureMode::FailClose);
        let d = run_avoiding(&s, 10, &["10.0.0.1:8000"], 2).unwrap();
        assert_eq!(addresses(&d), ["10.0.0.2:8000", "10.0.0.3:8000"]);
        // Every pod failed: the best is still tried, with no fallbacks.
        let all = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];
        assert_eq!(
            addresses(&run_avoiding(&s, 10, &all, 2).unwrap()),
            ["10.0.0.1:8000"]
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn fail_open_picks_avoid_failed_pods_and_carry_fallbacks() {
        let s = three_pods(FailureMode::FailOpen);
        let d = run_avoiding(&s, 60_000, &["10.0.0.2:8000"], 2).unwrap();
        assert!(d.fail_open);
        let picked = addresses(&d);
        assert_eq!(picked.len(), 2);
        assert!(!picked.contains(&"10.0.0.2:8000"), "{picked:?}");
        let d = run_avoiding(&s, 60_000, &[], 2).unwrap();
        let mut picked = addresses(&d);
        picked.sort_unstable();
        assert_eq!(picked, ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]);
    }

    const BODY: &[u8] =
        br#"{"model":"travelhelper","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn routes_rewrites_and_labels() {
        let s = state(FailureMode::FailClose);
        let d = run(Some((&s, 10)), "pool-cluster", None, Some(BODY)).unwrap();
        assert_eq!(d.pool, "llm");
        assert_eq!(d.endpoint, "10.0.0.1:8000");
        assert_eq!(d.public_model.as_deref(), Some("travelhelper"));
        let target = d.target_model.clone().unwrap();
        assert!(target.starts_with("travel-helper-v"));
        let new_body = d.new_body.unwrap();
        assert_eq!(parse_request(&new_body).unwrap().model, target);
        assert_eq!(
            new_body.len(),
            BODY.len() + target.len() - "travelhelper".len()
        );
        assert_eq!(
            (d.model_label.as_str(), d.target_label.as_str()),
            ("travelhelper", target.as_str())
        );
        assert!(!d.fail_open && !d.stream);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn unmatched_model_passes_unchanged_and_bodiless_requests_route_by_load() {
        let s = state(FailureMode::FailClose);
        let d = run(
            Some((&s, 10)),
            "llm",
            None,
            Some(br#"{"model":"base","prompt":"x"}"#),
        )
        .unwrap();
        assert_eq!((d.new_body, d.model_label.as_str()), (None, "other"));
        let d = run(Some((&s, 10)), "llm", None, None).unwrap();
        assert_eq!(
            (d.endpoint.as_str(), d.public_model),
            ("10.0.0.1:8000", None)
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn rejections_carry_status_and_reason() {
        let s = state(FailureMode::FailClose);
        let status = |r: Result<Decision, Rejection>| {
            r.map(|_| ()).map_err(|e| (e.error.status, e.error.reason))
        };
        assert_eq!(
            status(run(Some((&s, 10)), "llm", None, Some(b"{"))),
            Err((400, "invalid_json"))
        );
        assert_eq!(
            status(run(Some((&s, 10)), "llm", None, Some(b""))),
            Err((400, "empty_body"))
        );
        assert_eq!(
            status(run(Some((&s, 10)), "nope", None, Some(BODY))),
            Err((503, "unknown_pool"))
        );
        assert_eq!(
            status(run(None, "llm", None, Some(BODY))),
            Err((503, "no_state"))
        );
        assert_eq!(
            status(run(Some((&s, 10_000)), "llm", None, Some(BODY))),
            Err((503, "stale_state"))
        );
        let big = vec![b' '; 21 * 1024 * 1024];
        assert_eq!(
            status(run(Some((&s, 10)), "llm", None, Some(&big))),
            Err((413, "body_too_large"))
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn fail_open_serves_from_stale_state() {
        let s = state(FailureMode::FailOpen);
        let d = run(Some((&s, 60_000)), "llm", None, Some(BODY)).unwrap();
        assert!(d.fail_open);
        assert!(d.endpoint.starts_with("10.0.0."));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn sheddable_requests_are_shed_only_when_saturated() {
        let mut s = state(FailureMode::FailClose);
        assert!(run(Some((&s, 10)), "llm", Some("batch"), Some(BODY)).is_ok());
        let snapshot = Snapshot {
            pools: vec![pool(
                "llm",
                vec![
                    endpoint("10.0.0.1:8000", 9, 0.1),
                    endpoint("10.0.0.2:8000", 7, 0.9),
                ],
            )],
            ..Default::default()
        };
        let mut p = snapshot.pools[0].clone();
        p.objectives = vec![Objective {
            name: "batch".into(),
            priority: -1,
        }];
        s = StateView::from_snapshot(
            &Snapshot {
                pools: vec![p],
                ..Default::default()
            },
            2,
        );
        let shed = run(Some((&s, 10)), "llm", Some("batch"), Some(BODY)).unwrap_err();
        assert_eq!(
            (shed.error.status, shed.pool.as_deref()),
            (429, Some("llm"))
        );
        assert!(
            run(Some((&s, 10)), "llm", None, Some(BODY)).is_ok(),
            "standard requests still go"
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_200kb_chat_routes_with_affinity_and_keeps_its_bytes() {
        let s = state(FailureMode::FailClose);
        let content = "Explain this log line by line. \\n é ".repeat(6_000);
        let body = format!(
            r#"{{"messages":[{{"role":"system","content":"{content}"}}],"stream":true,"model":"travelhelper"}}"#
        );
        assert!(body.len() > 200_000);
        let first = run(Some((&s, 10)), "llm", None, Some(body.as_bytes())).unwrap();
        assert!(first.prefix_owner && first.stream);
        let new_body = first.new_body.unwrap();
        let target = first.target_model.unwrap();
        let expected = body.replacen("\"travelhelper\"", &format!("\"{target}\""), 1);
        assert_eq!(new_body, expected.into_bytes());
        // Same conversation, one more turn: same owner.
        let next = body.replacen("}],", "},{\"role\":\"user\",\"content\":\"and?\"}],", 1);
        let second = run(Some((&s, 10)), "llm", None, Some(next.as_bytes())).unwrap();
        assert_eq!(second.endpoint, first.endpoint);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn no_ready_endpoint_is_503() {
        let mut e = endpoint("10.0.0.1:8000", 0, 0.0);
        e.ready = false;
        let s = StateView::from_snapshot(
            &Snapshot {
                pools: vec![pool("llm", vec![e])],
                ..Default::default()
            },
            1,
        );
        let r = run(Some((&s, 10)), "llm", None, Some(BODY)).unwrap_err();
        assert_eq!((r.error.status, r.error.reason), (503, "no_endpoint"));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn same_named_pools_in_two_namespaces_route_by_namespace() {
        let in_ns = |ns: &str, address: &str| pool_state::Pool {
            namespace: ns.into(),
            ..pool("llm", vec![endpoint(address, 0, 0.0)])
        };
        let s = StateView::from_snapshot(
            &Snapshot {
                pools: vec![
                    in_ns("team-a", "10.0.0.1:8000"),
                    in_ns("team-b", "10.0.0.2:8000"),
                ],
                ..Default::default()
            },
            1,
        );
        let config = PluginConfig::parse(
            br#"{"cluster_pools":{"a":"team-a/llm","b":"team-b/llm","bare":"llm"}}"#,
        )
        .unwrap();
        let scheduler = Scheduler::new(config.scheduler_config());
        let route = |cluster: &str| {
            decide(
                &config,
                &scheduler,
                RequestContext {
                    cluster: Some(cluster),
                    objective: None,
                    state: Some((&s, 10)),
                    now_ms: 0,
                },
                Some(BODY),
                |p| vec![0; p.endpoints.len()],
                &mut PlacementMemory::new(),
                &mut Draws::new(3),
            )
        };
        let a = route("a").unwrap();
        let b = route("b").unwrap();
        assert_eq!(
            (a.pool.as_str(), a.endpoint.as_str()),
            ("team-a/llm", "10.0.0.1:8000")
        );
        assert_eq!(
            (b.pool.as_str(), b.endpoint.as_str()),
            ("team-b/llm", "10.0.0.2:8000")
        );
        for cluster in ["bare", "llm"] {
            let r = route(cluster).unwrap_err();
            assert_eq!((r.error.status, r.error.reason), (503, "ambiguous_pool"));
            assert!(
                r.error.message.contains("team-a, team-b")
                    && r.error.message.contains("namespace/name"),
                "{}",
                r.error.message
            );
            assert_eq!(r.pool.as_deref(), Some("llm"));
        }
    }
}
