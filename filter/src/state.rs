//! Pool state as the picker reads it: the collector's `Snapshot`, decoded once
//! per version into an indexed, allocation-free-to-query view.
//!
//! Every Envoy worker decodes the snapshot bytes only when the version in shared
//! data changes; requests then look pools up by namespace and name and walk plain vectors.

use std::collections::HashMap;

use pool_state::{Criticality, FailureMode};
use prost::Message;

use crate::pool_id::PoolRef;

/// What a pool does when the filter has no usable state for it (GIE's
/// `failureMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolFailureMode {
    /// Refuse with 503 (GIE default).
    FailClose,
    /// Pick among the last known endpoints, ignoring their metrics.
    FailOpen,
}

/// How much a request matters when the pool is saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCriticality {
    Critical,
    Standard,
    Sheddable,
}

impl RequestCriticality {
    fn from_proto(value: i32) -> Self {
        match Criticality::try_from(value) {
            Ok(Criticality::Critical) => Self::Critical,
            Ok(Criticality::Sheddable) => Self::Sheddable,
            _ => Self::Standard,
        }
    }
}

/// One target of a model rule; its share is `weight / sum(weights)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetModel {
    pub model: String,
    pub weight: u32,
}

/// An InferenceModel or InferenceModelRewrite rule, in the collector's
/// precedence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRuleView {
    /// Exact public model name; `None` matches every request.
    pub model: Option<String>,
    pub targets: Vec<TargetModel>,
    /// `None` when the rule does not say (rewrite rules): Standard unless an
    /// objective says otherwise.
    pub criticality: Option<RequestCriticality>,
    pub source: String,
}

/// One model-server endpoint with the metrics the scorers use.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    /// `ip:port`, the value of `x-gateway-destination-endpoint`.
    pub address: String,
    /// Stable hash of `address`, the endpoint's identity in rendezvous hashing.
    pub address_hash: u64,
    pub pod: String,
    pub ready: bool,
    /// Age of the metrics when the snapshot was built; `u32::MAX` = never scraped.
    pub metrics_age_ms: u32,
    pub waiting: u32,
    pub running: u32,
    /// KV-cache usage, clamped to 0..1.
    pub kv_cache_usage: f32,
    /// Indices into [`PoolView::adapter_names`], sorted for binary search.
    pub running_adapters: Vec<u32>,
    pub waiting_adapters: Vec<u32>,
    pub max_loras: u32,
}

impl EndpointView {
    /// Metrics age as seen now: the age at snapshot time plus how long the
    /// snapshot has been sitting in shared data.
    pub fn metrics_age_now_ms(&self, snapshot_age_ms: u32) -> u32 {
        self.metrics_age_ms.saturating_add(snapshot_age_ms)
    }

    pub fn has_running_adapter(&self, adapter: u32) -> bool {
        self.running_adapters.binary_search(&adapter).is_ok()
    }

    pub fn has_waiting_adapter(&self, adapter: u32) -> bool {
        self.waiting_adapters.binary_search(&adapter).is_ok()
    }

    /// Whether another adapter can be loaded without evicting one.
    pub fn has_free_lora_slot(&self) -> bool {
        self.max_loras > 0 && (self.running_adapters.len() as u64) < u64::from(self.max_loras)
    }
}

/// One InferencePool, indexed for per-request lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    pub name: String,
    pub namespace: String,
    /// `namespace/name` ([`crate::pool_id::pool_id`]): what shared-data keys,
    /// stats and prefix reports name the pool by.
    pub id: String,
    pub failure_mode: PoolFailureMode,
    pub endpoints: Vec<EndpointView>,
    pub adapter_names: Vec<String>,
    adapter_index: HashMap<String, u32>,
    pub rules: Vec<ModelRuleView>,
    /// InferenceObjective name → priority (negative = sheddable).
    pub objectives: HashMap<String, i32>,
    /// The collector's learned prefix placements as it sent them
    /// (`pool_state::placements` records); empty when not well formed.
    placements: Vec<u8>,
    /// The collector learns placements (and so wants the keys reported).
    pub learns_placements: bool,
}

impl PoolView {
    /// Builds the view of one pool message. Out-of-range adapter indices (a
    /// collector bug) are dropped rather than trusted.
    pub fn from_pool(pool: &pool_state::Pool) -> Self {
        let adapter_count = pool.adapter_names.len();
        let known = |ids: &[u32]| -> Vec<u32> {
            let mut ids: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|&id| (id as usize) < adapter_count)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let endpoints = pool
            .endpoints
            .iter()
            .map(|e| EndpointView {
                address: e.address.clone(),
                address_hash: crate::prefix::hash_bytes(e.address.as_bytes()),
                pod: e.pod.clone(),
                ready: e.ready,
                metrics_age_ms: e.metrics_age_ms,
                waiting: e.waiting,
                running: e.running,
                kv_cache_usage: if e.kv_cache_usage.is_finite() {
                    e.kv_cache_usage.clamp(0.0, 1.0)
                } else {
                    1.0
                },
                running_adapters: known(&e.running_adapters),
                waiting_adapters: known(&e.waiting_adapters),
                max_loras: e.max_loras,
            })
            .collect();
        let mut adapter_index = HashMap::with_capacity(adapter_count);
        for (i, name) in pool.adapter_names.iter().enumerate() {
            if let Ok(i) = u32::try_from(i) {
                adapter_index.entry(name.clone()).or_insert(i);
            }
        }
        let rules = pool
            .model_rules
            .iter()
            .map(|r| ModelRuleView {
                model: (!r.model.is_empty()).then(|| r.model.clone()),
                targets: r
                    .targets
                    .iter()
                    .map(|t| TargetModel {
                        model: t.model.clone(),
                        weight: t.weight,
                    })
                    .collect(),
                criticality: (r.criticality != Criticality::Unspecified as i32)
                    .then(|| RequestCriticality::from_proto(r.criticality)),
                source: r.source.clone(),
            })
            .collect();
        let objectives = pool
            .objectives
            .iter()
            .map(|o| (o.name.clone(), o.priority))
            .collect();
        // Kept as bytes and binary-searched per request: decoding thousands of
        // records on every snapshot would cost each worker far more.
        let placements = if pool_state::placements::well_formed(&pool.prefix_placements) {
            pool.prefix_placements.clone()
        } else {
            Vec::new()
        };
        PoolView {
            name: pool.name.clone(),
            namespace: pool.namespace.clone(),
            id: crate::pool_id::pool_id(&pool.namespace, &pool.name),
            failure_mode: match FailureMode::try_from(pool.failure_mode) {
                Ok(FailureMode::FailOpen) => PoolFailureMode::FailOpen,
                _ => PoolFailureMode::FailClose,
            },
            endpoints,
            adapter_names: pool.adapter_names.clone(),
            adapter_index,
            rules,
            objectives,
            placements,
            learns_placements: pool.learns_prefix_placements,
        }
    }

    /// The endpoint (index) the collector placed an affinity key on, if any
    /// (an index out of range is ignored).
    pub fn placed_endpoint(&self, key: u64) -> Option<usize> {
        pool_state::placements::lookup(&self.placements, key)
            .map(|e| e as usize)
            .filter(|&e| e < self.endpoints.len())
    }

    /// The interned id of an adapter some endpoint of this pool runs or waits
    /// for; `None` for base models and adapters no pod has seen.
    pub fn adapter_id(&self, model: &str) -> Option<u32> {
        self.adapter_index.get(model).copied()
    }

    pub fn endpoint_index(&self, address: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e.address == address)
    }
}

/// Why snapshot bytes could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDecodeError(pub String);

impl std::fmt::Display for SnapshotDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pool state snapshot does not decode: {}", self.0)
    }
}

/// Why a pool reference found no pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolLookupError {
    /// The collector knows no such pool.
    Unknown,
    /// A bare name that pools in several namespaces have (sorted).
    Ambiguous(Vec<String>),
}

/// Every pool of one snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateView {
    /// The shared-data version this view was decoded from.
    pub version: u64,
    pub collector_id: String,
    pools: Vec<PoolView>,
    /// Bare name → indices of the pools of that name, one per namespace (the
    /// first if a collector sent a namespace/name twice). A request's lookup
    /// is one hash probe and a scan of one or two entries, without allocating.
    by_name: HashMap<String, Vec<usize>>,
}

impl StateView {
    pub fn from_snapshot(snapshot: &pool_state::Snapshot, version: u64) -> Self {
        let pools: Vec<PoolView> = snapshot.pools.iter().map(PoolView::from_pool).collect();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(pools.len());
        for (i, pool) in pools.iter().enumerate() {
            let same_name = by_name.entry(pool.name.clone()).or_default();
            if !same_name
                .iter()
                .any(|&j| pools.get(j).is_some_and(|p| p.namespace == pool.namespace))
            {
                same_name.push(i);
            }
        }
        StateView {
            version,
            collector_id: snapshot.collector_id.clone(),
            pools,
            by_name,
        }
    }

    /// The pool a reference names: `namespace/name` exactly; a bare name
    /// while exactly one namespace has a pool of that name.
    pub fn resolve(&self, reference: PoolRef<'_>) -> Result<&PoolView, PoolLookupError> {
        let (name, namespace) = match reference {
            PoolRef::Qualified { namespace, name } => (name, Some(namespace)),
            PoolRef::Bare(name) => (name, None),
        };
        let same_name = self.by_name.get(name).map_or(&[][..], Vec::as_slice);
        let mut candidates = same_name.iter().filter_map(|&i| self.pools.get(i));
        match namespace {
            Some(namespace) => candidates
                .find(|p| p.namespace == namespace)
                .ok_or(PoolLookupError::Unknown),
            None => match same_name {
                [] => Err(PoolLookupError::Unknown),
                [_] => candidates.next().ok_or(PoolLookupError::Unknown),
                _ => {
                    let mut namespaces: Vec<String> =
                        candidates.map(|p| p.namespace.clone()).collect();
                    namespaces.sort();
                    Err(PoolLookupError::Ambiguous(namespaces))
                }
            },
        }
    }

    /// Decodes the encoded `Snapshot` bytes exactly as the collector sent them.
    pub fn decode(bytes: &[u8], version: u64) -> Result<Self, SnapshotDecodeError> {
        let snapshot =
            pool_state::Snapshot::decode(bytes).map_err(|e| SnapshotDecodeError(e.to_string()))?;
        Ok(Self::from_snapshot(&snapshot, version))
    }

    /// The pool a `cluster_pools`-style reference (`namespace/name` or a
    /// bare name) names, if it names exactly one.
    pub fn pool(&self, reference: &str) -> Option<&PoolView> {
        PoolRef::parse(reference)
            .ok()
            .and_then(|r| self.resolve(r).ok())
    }

    pub fn pools(&self) -> &[PoolView] {
        &self.pools
    }
}

/// `snapshot.meta` in shared data: which version is there and when the lease
/// holder received it (host milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub version: u64,
    pub received_ms: u64,
}

impl SnapshotMeta {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.version, self.received_ms)
    }

    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (version, received) = text.split_once(':')?;
        Some(SnapshotMeta {
            version: version.parse().ok()?,
            received_ms: received.parse().ok()?,
        })
    }

    /// Milliseconds since the snapshot arrived, saturating (host clocks of
    /// different workers may disagree by a little).
    pub fn age_ms(&self, now_ms: u64) -> u32 {
        u32::try_from(now_ms.saturating_sub(self.received_ms)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pool_state::{Endpoint, ModelRule, Objective, Pool, Snapshot, WeightedTarget};

    pub fn endpoint(address: &str, waiting: u32, kv: f32) -> Endpoint {
        Endpoint {
            address: address.to_string(),
            pod: format!("pod-{address}"),
            ready: true,
            metrics_age_ms: 10,
            waiting,
            kv_cache_usage: kv,
            ..Default::default()
        }
    }

    pub fn pool(name: &str, endpoints: Vec<Endpoint>) -> Pool {
        Pool {
            name: name.to_string(),
            endpoints,
            ..Default::default()
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn decodes_pools_rules_objectives_and_adapters() {
        let mut e = endpoint("10.0.0.1:8000", 3, 0.5);
        e.running_adapters = vec![1, 0, 7];
        e.waiting_adapters = vec![1];
        e.max_loras = 2;
        let mut p = pool("llm", vec![e]);
        p.failure_mode = FailureMode::FailOpen as i32;
        p.adapter_names = vec!["a".into(), "b".into()];
        p.model_rules = vec![
            ModelRule {
                model: "pub".into(),
                targets: vec![WeightedTarget {
                    model: "a".into(),
                    weight: 9,
                }],
                criticality: Criticality::Sheddable as i32,
                source: "InferenceModel/ns/pub".into(),
            },
            ModelRule::default(),
        ];
        p.objectives = vec![Objective {
            name: "batch".into(),
            priority: -1,
        }];
        let bytes = Snapshot {
            version: 4,
            pools: vec![p],
            ..Default::default()
        }
        .encode_to_vec();
        let state = StateView::decode(&bytes, 9).unwrap();
        assert_eq!(state.version, 9);
        let pool = state.pool("llm").unwrap();
        assert!(state.pool("other").is_none());
        assert_eq!(pool.failure_mode, PoolFailureMode::FailOpen);
        let ep = &pool.endpoints[0];
        assert_eq!(ep.running_adapters, vec![0, 1], "out-of-range 7 dropped");
        assert!(ep.has_running_adapter(1));
        assert!(ep.has_waiting_adapter(1));
        assert!(!ep.has_free_lora_slot());
        assert_eq!(pool.adapter_id("b"), Some(1));
        assert_eq!(pool.adapter_id("base"), None);
        assert_eq!(
            pool.rules[0].criticality,
            Some(RequestCriticality::Sheddable)
        );
        assert_eq!(pool.rules[1].model, None);
        assert_eq!(pool.rules[1].criticality, None);
        assert_eq!(pool.objectives.get("batch"), Some(&-1));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn same_named_pools_resolve_by_namespace_and_bare_names_while_unique() {
        let in_ns = |ns: &str, name: &str, address: &str| Pool {
            namespace: ns.into(),
            ..pool(name, vec![endpoint(address, 0, 0.0)])
        };
        let state = StateView::from_snapshot(
            &Snapshot {
                pools: vec![
                    in_ns("team-b", "llm", "10.0.0.2:8000"),
                    in_ns("team-a", "llm", "10.0.0.1:8000"),
                    in_ns("team-a", "solo", "10.0.0.3:8000"),
                ],
                ..Default::default()
            },
            1,
        );
        let qualified = |namespace, name| PoolRef::Qualified { namespace, name };
        let a = state.resolve(qualified("team-a", "llm")).unwrap();
        let b = state.resolve(qualified("team-b", "llm")).unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("team-a/llm", "team-b/llm"));
        assert_eq!(a.endpoints[0].address, "10.0.0.1:8000");
        assert_eq!(b.endpoints[0].address, "10.0.0.2:8000");
        assert_eq!(
            state.resolve(PoolRef::Bare("llm")),
            Err(PoolLookupError::Ambiguous(vec![
                "team-a".into(),
                "team-b".into()
            ]))
        );
        assert_eq!(
            state.resolve(PoolRef::Bare("solo")).unwrap().id,
            "team-a/solo"
        );
        assert_eq!(
            state.resolve(qualified("team-c", "llm")),
            Err(PoolLookupError::Unknown)
        );
        assert_eq!(
            state.resolve(PoolRef::Bare("none")),
            Err(PoolLookupError::Unknown)
        );
        assert_eq!(state.pool("team-b/llm").unwrap().id, "team-b/llm");
        assert!(state.pool("llm").is_none(), "ambiguous");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn garbage_bytes_are_an_error_not_a_panic() {
        assert!(StateView::decode(&[0xff, 0xff, 0xff], 1).is_err());
        let empty = StateView::decode(&[], 1).unwrap();
        assert!(empty.pools().is_empty());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn kv_usage_is_sanitised() {
        let p = pool(
            "p",
            vec![endpoint("a:1", 0, f32::NAN), endpoint("b:1", 0, 7.0)],
        );
        let view = PoolView::from_pool(&p);
        assert_eq!(view.endpoints[0].kv_cache_usage, 1.0);
        assert_eq!(view.endpoints[1].kv_cache_usage, 1.0);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn snapshot_meta_round_trips_and_rejects_junk() {
        let meta = SnapshotMeta {
            version: 12,
            received_ms: 1_700_000_000_000,
        };
        assert_eq!(SnapshotMeta::parse(meta.encode().as_bytes()), Some(meta));
        assert_eq!(SnapshotMeta::parse(b"12"), None);
        assert_eq!(SnapshotMeta::parse(b"x:1"), None);
        assert_eq!(SnapshotMeta::parse(&[0xff, b':', b'1']), None);
        assert_eq!(meta.age_ms(1_700_000_000_250), 250);
        assert_eq!(meta.age_ms(0), 0, "clock behind: age 0, not underflow");
    }
}
