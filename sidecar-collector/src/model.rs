//! The desired state: which pools exist, which endpoints each selects, and the
//! model rules and objectives that apply to it.
//!
//! [`build`] is a pure function of the [`Inventory`]. Every object that does not
//! make sense (bad weights, unknown pool, duplicate model names, ...) becomes a
//! [`Problem`] and is skipped; everything else keeps working.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use pool_state::{Criticality, FailureMode, ModelRule, Objective, WeightedTarget};

use crate::discovery::{Inventory, Stored};
use crate::metrics_parse::Engine;
use crate::resources::{
    LabelSelector, ObjectMeta, Pod, PoolRef, Resource, ENGINE_TYPE_LABEL, GROUP_LLMD, GROUP_V1,
    GROUP_X, PORT_MAP_ANNOTATION,
};

/// Upper bound of a target weight, as in the GIE CRDs.
const MAX_WEIGHT: i64 = 1_000_000;
/// InferencePool v1 allows at most this many target ports.
const MAX_TARGET_PORTS: usize = 8;

/// An object that was skipped (or partly skipped) and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `Kind/namespace/name`, or a file location for unreadable input.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredState {
    /// Sorted by (namespace, name).
    pub pools: Vec<DesiredPool>,
    pub problems: Vec<Problem>,
    /// Discovery has completed its initial load.
    pub synced: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPool {
    pub name: String,
    pub namespace: String,
    pub failure_mode: FailureMode,
    /// Sorted by (pod, address).
    pub endpoints: Vec<DesiredEndpoint>,
    /// In precedence order (see `ModelRule` in pool_state.proto).
    pub model_rules: Vec<ModelRule>,
    pub objectives: Vec<Objective>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DesiredEndpoint {
    /// `ip:port` (or `[ip]:port`) to scrape and to route to.
    pub address: String,
    pub pod: String,
    /// Pod Ready and not terminating.
    pub pod_ready: bool,
    pub engine: Engine,
}

/// A pool after validation, before endpoints are attached.
struct ValidPool<'a> {
    stored: &'a Stored,
    group: &'static str,
    name: String,
    namespace: String,
    selector: LabelSelector,
    ports: Vec<u16>,
    failure_mode: FailureMode,
}

/// Computes the desired state from everything discovery knows.
pub fn build(inventory: &Inventory) -> DesiredState {
    let mut problems = inventory.problems.clone();
    let mut objects: Vec<&Stored> = inventory.objects.iter().map(|s| s.as_ref()).collect();
    // Oldest first: creationTimestamp, then order of first sight, then name.
    objects.sort_by(|a, b| age_key(a).cmp(&age_key(b)));

    let pools = valid_pools(&objects, &mut problems);
    let pool_index: HashMap<(&str, &str), usize> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.namespace.as_str(), p.name.as_str()), i))
        .collect();
    let mut desired: Vec<DesiredPool> = pools
        .iter()
        .map(|p| DesiredPool {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            failure_mode: p.failure_mode,
            endpoints: Vec::new(),
            model_rules: Vec::new(),
            objectives: Vec::new(),
        })
        .collect();

    let pods: Vec<&Pod> = objects
        .iter()
        .filter_map(|s| match &s.resource {
            Resource::Pod(p) => Some(p),
            _ => None,
        })
        .collect();
    for (pool, out) in pools.iter().zip(desired.iter_mut()) {
        out.endpoints = select_endpoints(pool, &pods, &mut problems);
    }

    let resolve = |meta: &ObjectMeta, pool_ref: &PoolRef| -> Result<usize, String> {
        resolve_pool(meta, pool_ref, &pool_index)
    };
    let mut rules: Vec<Vec<ModelRule>> = vec![Vec::new(); pools.len()];
    let mut generic: Vec<Vec<ModelRule>> = vec![Vec::new(); pools.len()];
    let mut model_owner: HashMap<(usize, String), String> = HashMap::new();
    let mut objective_owner: HashMap<(usize, String), String> = HashMap::new();
    let shadowed = shadowed_across_groups(&objects, &mut problems);
    for stored in &objects {
        if shadowed.contains(&std::ptr::from_ref::<Stored>(stored)) {
            continue;
        }
        let resource = &stored.resource;
        let source = resource.display_name();
        let mut report = |message: String| {
            problems.push(Problem {
                object: source.clone(),
                message,
            })
        };
        match resource {
            Resource::Model(model) => {
                let pool = match resolve(&model.metadata, &model.spec.pool_ref) {
                    Ok(pool) => pool,
                    Err(msg) => {
                        report(msg);
                        continue;
                    }
                };
                let rule = match model_rule(&model.spec, &source) {
                    Ok(rule) => rule,
                    Err(msg) => {
                        report(msg);
                        continue;
                    }
                };
                let key = (pool, rule.model.clone());
                if let Some(owner) = model_owner.get(&key) {
                    report(format!(
                        "duplicate modelName {:?} in pool {}: the older {owner} wins",
                        rule.model, pools[pool].name
                    ));
                    continue;
                }
                model_owner.insert(key, source.clone());
                rules[pool].push(rule);
            }
            Resource::Rewrite(_, rewrite) => {
                let pool = match resolve(&rewrite.metadata, &rewrite.spec.pool_ref) {
                    Ok(pool) => pool,
                    Err(msg) => {
                        report(msg);
                        continue;
                    }
                };
                for (index, rule) in rewrite.spec.rules.iter().enumerate() {
                    match rewrite_rules(rule, &source) {
                        Ok(converted) => {
                            for r in converted {
                                if r.model.is_empty() {
                                    generic[pool].push(r);
                                } else {
                                    rules[pool].push(r);
                                }
                            }
                        }
                        Err(msg) => report(format!("rules[{index}] skipped: {msg}")),
                    }
                }
            }
            Resource::Objective(_, objective) => {
                let pool = match resolve(&objective.metadata, &objective.spec.pool_ref) {
                    Ok(pool) => pool,
                    Err(msg) => {
                        report(msg);
                        continue;
                    }
                };
                let priority = objective.spec.priority.unwrap_or(0);
                let Ok(priority) = i32::try_from(priority) else {
                    report(format!("priority {priority} does not fit in 32 bits"));
                    continue;
                };
                let name = objective.metadata.name.clone();
                let key = (pool, name.clone());
                if let Some(owner) = objective_owner.get(&key) {
                    report(format!(
                        "duplicate objective name {name:?} in pool {}: the older {owner} wins",
                        pools[pool].name
                    ));
                    continue;
                }
                objective_owner.insert(key, source.clone());
                desired[pool].objectives.push(Objective { name, priority });
            }
            _ => {}
        }
    }
    for (i, pool) in desired.iter_mut().enumerate() {
        // Exact rules first (oldest first), then generic ones (oldest first):
        // the filter takes the first exact match, else the first generic rule.
        pool.model_rules = std::mem::take(&mut rules[i]);
        pool.model_rules.append(&mut generic[i]);
        pool.objectives.sort_by(|a, b| a.name.cmp(&b.name));
    }
    problems.sort();
    problems.dedup();
    DesiredState {
        pools: desired,
        problems,
        synced: inventory.synced,
    }
}

/// InferenceObjectives and InferenceModelRewrites exist in several API
/// groups (`llm-d.ai/v1alpha2` today; `inference.networking.x-k8s.io/v1alpha2`
/// and `inference.networking.k8s.io/v1alpha1` before GIE v1.6). When one
/// object (kind, namespace, name) exists in more than one, one copy is used:
/// the `llm-d.ai` one, else the oldest (then the group name, so the choice
/// never depends on the order objects arrived in). The others are reported,
/// naming the copy and group that won, and skipped.
fn shadowed_across_groups(
    objects: &[&Stored],
    problems: &mut Vec<Problem>,
) -> HashSet<*const Stored> {
    // (kind, namespace, name) → the copies, each with its group.
    type Copies<'a> = HashMap<(&'a str, &'a str, &'a str), Vec<(&'a str, &'a Stored)>>;
    let mut copies: Copies<'_> = HashMap::new();
    for stored in objects {
        let (group, kind) = match &stored.resource {
            Resource::Objective(group, _) => (group.as_str(), "InferenceObjective"),
            Resource::Rewrite(group, _) => (group.as_str(), "InferenceModelRewrite"),
            _ => continue,
        };
        let meta = stored.resource.meta();
        copies
            .entry((kind, namespace(meta), meta.name.as_str()))
            .or_default()
            .push((group, stored));
    }
    let mut shadowed = HashSet::new();
    for (_, mut copies) in copies.into_iter().filter(|(_, c)| c.len() > 1) {
        copies.sort_by_key(|(group, stored)| {
            (
                *group != GROUP_LLMD,
                stored
                    .resource
                    .meta()
                    .creation_timestamp
                    .clone()
                    .unwrap_or_default(),
                *group,
            )
        });
        let (winner_group, winner) = copies[0];
        for (_, loser) in &copies[1..] {
            shadowed.insert(std::ptr::from_ref::<Stored>(loser));
            problems.push(Problem {
                object: loser.resource.qualified_name(),
                message: format!(
                    "the same object exists in API group {winner_group}: {} is used ({GROUP_LLMD} first, then the oldest)",
                    winner.resource.qualified_name()
                ),
            });
        }
    }
    shadowed
}

/// Why a pool, model, rewrite or objective object cannot be used as it
/// stands (`None`: it can), by the same checks [`build`] applies; `last_valid`
/// uses it to keep an object's last valid version instead of dropping the object.
pub fn edit_error(stored: &Stored) -> Option<String> {
    if let Some(pool) = checked_pool(stored) {
        return pool.err();
    }
    match &stored.resource {
        Resource::Model(model) => model_rule(&model.spec, "").err(),
        Resource::Rewrite(_, rewrite) => {
            rewrite
                .spec
                .rules
                .iter()
                .enumerate()
                .find_map(|(index, rule)| {
                    rewrite_rules(rule, "")
                        .err()
                        .map(|msg| format!("rules[{index}]: {msg}"))
                })
        }
        Resource::Objective(_, objective) => {
            let priority = objective.spec.priority.unwrap_or(0);
            i32::try_from(priority)
                .err()
                .map(|_| format!("priority {priority} does not fit in 32 bits"))
        }
        _ => None,
    }
}

fn age_key(stored: &Stored) -> (&str, u64, String) {
    (
        stored
            .resource
            .meta()
            .creation_timestamp
            .as_deref()
            .unwrap_or(""),
        stored.seen_order,
        stored.resource.display_name(),
    )
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// An InferencePool object checked (`None`: not a pool).
fn checked_pool(stored: &Stored) -> Option<Result<ValidPool<'_>, String>> {
    let result = match &stored.resource {
        Resource::PoolV1(p) => {
            let ports: Vec<Option<i64>> = p.spec.target_ports.iter().map(|t| t.number).collect();
            let mode = p
                .spec
                .endpoint_picker_ref
                .as_ref()
                .and_then(|r| r.failure_mode.clone());
            validate_pool(
                stored,
                GROUP_V1,
                &p.metadata,
                p.spec.selector.clone(),
                &ports,
                mode,
            )
        }
        Resource::PoolV1Alpha2(p) => {
            let selector = LabelSelector {
                match_labels: p.spec.selector.clone(),
                match_expressions: Vec::new(),
            };
            let mode = p
                .spec
                .extension_ref
                .as_ref()
                .and_then(|r| r.failure_mode.clone());
            validate_pool(
                stored,
                GROUP_X,
                &p.metadata,
                selector,
                &[p.spec.target_port_number],
                mode,
            )
        }
        _ => return None,
    };
    Some(result)
}

fn valid_pools<'a>(objects: &[&'a Stored], problems: &mut Vec<Problem>) -> Vec<ValidPool<'a>> {
    let mut pools: Vec<ValidPool<'a>> = Vec::new();
    for stored in objects {
        let Some(result) = checked_pool(stored) else {
            continue;
        };
        match result {
            Ok(pool) => pools.push(pool),
            Err(message) => problems.push(Problem {
                object: stored.resource.display_name(),
                message,
            }),
        }
    }
    // One pool per namespace/name: the v1 object wins over v1alpha2, then the older one.
    pools.sort_by_key(|p| (p.group != GROUP_V1, age_key(p.stored)));
    let mut seen = HashSet::new();
    pools.retain(|p| {
        let fresh = seen.insert((p.namespace.clone(), p.name.clone()));
        if !fresh {
            problems.push(Problem {
                object: p.stored.resource.display_name(),
                message: format!(
                    "another InferencePool named {}/{} takes precedence (v1 over v1alpha2, then oldest)",
                    p.namespace, p.name
                ),
            });
        }
        fresh
    });
    pools.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pools
}

fn validate_pool<'a>(
    stored: &'a Stored,
    group: &'static str,
    meta: &ObjectMeta,
    selector: LabelSelector,
    ports: &[Option<i64>],
    failure_mode: Option<String>,
) -> Result<ValidPool<'a>, String> {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return Err("selector is empty (it would select every pod)".into());
    }
    for req in &selector.match_expressions {
        match req.operator.as_str() {
            "In" | "NotIn" if !req.values.is_empty() => {}
            "Exists" | "DoesNotExist" if req.values.is_empty() => {}
            op => {
                return Err(format!(
                    "unsupported selector requirement {op:?} on key {:?}",
                    req.key
                ))
            }
        }
    }
    if ports.is_empty() {
        return Err("no target port".into());
    }
    if ports.len() > MAX_TARGET_PORTS {
        return Err(format!(
            "{} target ports, at most {MAX_TARGET_PORTS} allowed",
            ports.len()
        ));
    }
    let mut valid_ports = Vec::new();
    for port in ports {
        match port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
            Some(p) if valid_ports.contains(&p) => {
                return Err(format!("target port {p} listed twice"))
            }
            Some(p) => valid_ports.push(p),
            None => return Err(format!("target port {port:?} is not in 1..65535")),
        }
    }
    let failure_mode = match failure_mode.as_deref() {
        None | Some("FailClose") => FailureMode::FailClose,
        Some("FailOpen") => FailureMode::FailOpen,
        Some(other) => {
            return Err(format!(
                "failureMode {other:?} is neither FailOpen nor FailClose"
            ))
        }
    };
    Ok(ValidPool {
        stored,
        group,
        name: meta.name.clone(),
        namespace: namespace(meta).to_owned(),
        selector,
        ports: valid_ports,
        failure_mode,
    })
}

/// True when `labels` satisfy `selector` (Kubernetes label selector semantics).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| req.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

fn select_endpoints(
    pool: &ValidPool<'_>,
    pods: &[&Pod],
    problems: &mut Vec<Problem>,
) -> Vec<DesiredEndpoint> {
    let mut endpoints = Vec::new();
    for pod in pods {
        let meta = &pod.metadata;
        if namespace(meta) != pool.namespace || !selector_matches(&pool.selector, &meta.labels) {
            continue;
        }
        // Terminating pods drop out at once; pods without an IP are not running yet.
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = pod.status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let pod_name = format!("Pod/{}/{}", namespace(meta), meta.name);
        let ip: IpAddr = match ip.parse() {
            Ok(ip) => ip,
            Err(_) => {
                problems.push(Problem {
                    object: pod_name,
                    message: format!("status.podIP {ip:?} is not an IP address"),
                });
                continue;
            }
        };
        let port_map = match meta.annotations.get(PORT_MAP_ANNOTATION) {
            Some(text) => match parse_port_map(text) {
                Ok(map) => map,
                Err(msg) => {
                    problems.push(Problem {
                        object: pod_name,
                        message: format!("annotation {PORT_MAP_ANNOTATION}: {msg}"),
                    });
                    continue;
                }
            },
            None => HashMap::new(),
        };
        let engine = match meta.labels.get(ENGINE_TYPE_LABEL) {
            None => Engine::Vllm,
            Some(label) => Engine::from_label(label).unwrap_or_else(|| {
                problems.push(Problem {
                    object: pod_name.clone(),
                    message: format!(
                        "label {ENGINE_TYPE_LABEL}={label:?} is not vllm, sglang or trtllm; scraping it as vllm"
                    ),
                });
                Engine::Vllm
            }),
        };
        for port in &pool.ports {
            let port = port_map.get(port).copied().unwrap_or(*port);
            endpoints.push(DesiredEndpoint {
                address: std::net::SocketAddr::new(ip, port).to_string(),
                pod: meta.name.clone(),
                pod_ready: pod.is_ready(),
                engine,
            });
        }
    }
    endpoints.sort_by(|a, b| (&a.pod, &a.address).cmp(&(&b.pod, &b.address)));
    endpoints.dedup_by(|a, b| a.address == b.address);
    endpoints
}

/// Parses `"8000=18001,8001=18002"`.
pub fn parse_port_map(text: &str) -> Result<HashMap<u16, u16>, String> {
    let mut map = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(from, to)| {
            Some((
                from.trim().parse::<u16>().ok()?,
                to.trim().parse::<u16>().ok()?,
            ))
        });
        match parsed {
            Some((from, to)) if from > 0 && to > 0 => {
                map.insert(from, to);
            }
            _ => {
                return Err(format!(
                    "entry {entry:?} is not TARGET=LOCAL with ports in 1..65535"
                ))
            }
        }
    }
    Ok(map)
}

fn resolve_pool(
    meta: &ObjectMeta,
    pool_ref: &PoolRef,
    index: &HashMap<(&str, &str), usize>,
) -> Result<usize, String> {
    if pool_ref.name.is_empty() {
        return Err("poolRef.name is empty".into());
    }
    if let Some(kind) = pool_ref.kind.as_deref().filter(|k| !k.is_empty()) {
        if kind != "InferencePool" {
            return Err(format!("poolRef.kind {kind:?} is not InferencePool"));
        }
    }
    if let Some(group) = pool_ref.group.as_deref().filter(|g| !g.is_empty()) {
        if group != GROUP_V1 && group != GROUP_X {
            return Err(format!(
                "poolRef.group {group:?} is not an inference pool group"
            ));
        }
    }
    // Pools are referenced by name within the referrer's namespace; a group,
    // when given, is not enforced because the guides mix the two API groups.
    index
        .get(&(namespace(meta), pool_ref.name.as_str()))
        .copied()
        .ok_or_else(|| {
            format!(
                "InferencePool {}/{} not found (waiting for it to appear)",
                namespace(meta),
                pool_ref.name
            )
        })
}

/// Checks weights: all set or all unset (then equal), each in 1..=1e6.
fn weights(weights: &[Option<i64>]) -> Result<Vec<u32>, String> {
    let set = weights.iter().filter(|w| w.is_some()).count();
    if set == 0 {
        return Ok(vec![1; weights.len()]);
    }
    if set != weights.len() {
        return Err("weights must be set on all targets or on none".into());
    }
    weights
        .iter()
        .map(|w| {
            let w = w.unwrap_or_default();
            if (1..=MAX_WEIGHT).contains(&w) {
                Ok(w as u32)
            } else {
                Err(format!("weight {w} is not in 1..{MAX_WEIGHT}"))
            }
        })
        .collect()
}

fn model_rule(
    spec: &crate::resources::InferenceModelSpec,
    source: &str,
) -> Result<ModelRule, String> {
    if spec.model_name.trim().is_empty() {
        return Err("modelName is empty".into());
    }
    let criticality = match spec.criticality.as_deref() {
        None => Criticality::Unspecified,
        Some("Critical") => Criticality::Critical,
        Some("Standard") => Criticality::Standard,
        Some("Sheddable") => Criticality::Sheddable,
        Some(other) => {
            return Err(format!(
                "criticality {other:?} is not Critical, Standard or Sheddable"
            ))
        }
    };
    if let Some(t) = spec.target_models.iter().find(|t| t.name.trim().is_empty()) {
        return Err(format!(
            "a target model has an empty name (weight {:?})",
            t.weight
        ));
    }
    let w = weights(
        &spec
            .target_models
            .iter()
            .map(|t| t.weight)
            .collect::<Vec<_>>(),
    )?;
    Ok(ModelRule {
        model: spec.model_name.clone(),
        targets: spec
            .target_models
            .iter()
            .zip(w)
            .map(|(t, weight)| WeightedTarget {
                model: t.name.clone(),
                weight,
            })
            .collect(),
        criticality: criticality as i32,
        source: source.to_owned(),
    })
}

/// One rewrite rule → one model rule per exact match, or one generic rule.
fn rewrite_rules(
    rule: &crate::resources::RewriteRule,
    source: &str,
) -> Result<Vec<ModelRule>, String> {
    if let Some(t) = rule
        .targets
        .iter()
        .find(|t| t.model_rewrite.trim().is_empty())
    {
        return Err(format!(
            "a target has an empty modelRewrite (weight {:?})",
            t.weight
        ));
    }
    let w = weights(&rule.targets.iter().map(|t| t.weight).collect::<Vec<_>>())?;
    let targets: Vec<WeightedTarget> = rule
        .targets
        .iter()
        .zip(w)
        .map(|(t, weight)| WeightedTarget {
            model: t.model_rewrite.clone(),
            weight,
        })
        .collect();
    let mut models = Vec::new();
    for m in &rule.matches {
        match &m.model {
            None => models.push(String::new()),
            Some(model) => {
                match model.match_type.as_deref() {
                    None | Some("Exact") => {}
                    Some(other) => {
                        return Err(format!(
                            "match type {other:?} is not supported (only Exact)"
                        ))
                    }
                }
                if model.value.is_empty() {
                    return Err("an Exact match has an empty value".into());
                }
                models.push(model.value.clone());
            }
        }
    }
    if models.is_empty() || models.iter().any(String::is_empty) {
        models = vec![String::new()];
    }
    Ok(models
        .into_iter()
        .map(|model| ModelRule {
            model,
            targets: targets.clone(),
            criticality: Criticality::Unspecified as i32,
            source: source.to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn inventory(values: Vec<serde_json::Value>) -> Inventory {
        let objects = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let crate::resources::Parsed::Ok(resource) = Resource::from_value(v) else {
                    panic!("bad fixture {i}")
                };
                Arc::new(Stored {
                    resource: *resource,
                    seen_order: i as u64,
                    origin: format!("test#{i}"),
                })
            })
            .collect();
        Inventory {
            objects,
            problems: vec![],
            synced: true,
        }
    }

    fn pool_v1(name: &str, labels: serde_json::Value, ports: &[u16]) -> serde_json::Value {
        json!({"apiVersion":"inference.networking.k8s.io/v1","kind":"InferencePool",
            "metadata":{"name":name},
            "spec":{"selector":{"matchLabels":labels},
                    "targetPorts": ports.iter().map(|p| json!({"number":p})).collect::<Vec<_>>()}})
    }

    fn pod(name: &str, ip: &str, labels: serde_json::Value, ready: bool) -> serde_json::Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"labels":labels},
            "status":{"podIP":ip,"conditions":[{"type":"Ready","status": if ready {"True"} else {"False"}}]}})
    }

    fn model(
        name: &str,
        pool: &str,
        model: &str,
        created: &str,
        targets: serde_json::Value,
    ) -> serde_json::Value {
        json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferenceModel",
            "metadata":{"name":name,"creationTimestamp":created},
            "spec":{"modelName":model,"poolRef":{"name":pool},"targetModels":targets}})
    }

    #[test]
    fn selects_pods_by_labels_namespace_and_ports() {
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000, 8001]),
            pod("a-1", "10.0.0.1", json!({"app":"a","x":"y"}), true),
            pod("a-2", "10.0.0.2", json!({"app":"a"}), false),
            pod("b-1", "10.0.0.3", json!({"app":"b"}), true),
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a-other-ns","namespace":"other","labels":{"app":"a"}},
                   "status":{"podIP":"10.0.0.4","conditions":[{"type":"Ready","status":"True"}]}}),
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a-pending","labels":{"app":"a"}}}),
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a-dying","labels":{"app":"a"},
                   "deletionTimestamp":"2025-01-01T00:00:00Z"},
                   "status":{"podIP":"10.0.0.5","conditions":[{"type":"Ready","status":"True"}]}}),
        ]));
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        let eps: Vec<(&str, &str, bool)> = state.pools[0]
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.pod.as_str(), e.pod_ready))
            .collect();
        assert_eq!(
            eps,
            vec![
                ("10.0.0.1:8000", "a-1", true),
                ("10.0.0.1:8001", "a-1", true),
                ("10.0.0.2:8000", "a-2", false),
                ("10.0.0.2:8001", "a-2", false),
            ]
        );
    }

    #[test]
    fn port_map_annotation_and_engine_label_apply() {
        let mut p = pod(
            "s",
            "127.0.0.1",
            json!({"app":"a", ENGINE_TYPE_LABEL: "sglang"}),
            true,
        );
        p["metadata"]["annotations"] = json!({PORT_MAP_ANNOTATION: "8000=18001, 8001=18002"});
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000, 8001]),
            p,
        ]));
        let eps = &state.pools[0].endpoints;
        assert_eq!(eps[0].address, "127.0.0.1:18001");
        assert_eq!(eps[1].address, "127.0.0.1:18002");
        assert_eq!(eps[0].engine, Engine::Sglang);
        assert!(parse_port_map("8000").is_err());
        assert!(parse_port_map("8000=0").is_err());
        assert_eq!(parse_port_map("").unwrap().len(), 0);
    }

    #[test]
    fn match_expressions_follow_kubernetes_semantics() {
        let sel: LabelSelector = serde_json::from_value(json!({"matchExpressions":[
            {"key":"tier","operator":"In","values":["gpu","tpu"]},
            {"key":"canary","operator":"DoesNotExist"}]}))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(&sel, &labels(&[("tier", "gpu")])));
        assert!(!selector_matches(&sel, &labels(&[("tier", "cpu")])));
        assert!(!selector_matches(
            &sel,
            &labels(&[("tier", "gpu"), ("canary", "1")])
        ));
    }

    #[test]
    fn v1alpha2_pool_and_failure_modes() {
        let state = build(&inventory(vec![
            json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferencePool",
                "metadata":{"name":"old"},"spec":{"selector":{"app":"a"},"targetPortNumber":8000,
                "extensionRef":{"name":"x","failureMode":"FailOpen"}}}),
            json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferencePool",
                "metadata":{"name":"bad"},"spec":{"selector":{"app":"a"},"targetPortNumber":8000,
                "extensionRef":{"name":"x","failureMode":"FailSometimes"}}}),
            json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferencePool",
                "metadata":{"name":"noport"},"spec":{"selector":{"app":"a"}}}),
            pod("a-1", "10.0.0.1", json!({"app":"a"}), true),
        ]));
        assert_eq!(state.pools.len(), 1);
        assert_eq!(state.pools[0].failure_mode, FailureMode::FailOpen);
        assert_eq!(state.pools[0].endpoints[0].address, "10.0.0.1:8000");
        let msgs: Vec<String> = state.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("InferencePool/default/bad") && m.contains("FailSometimes")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(
                |m| m.contains("InferencePool/default/noport") && m.contains("not in 1..65535")
            ),
            "{msgs:?}"
        );
    }

    #[test]
    fn v1_pool_shadows_v1alpha2_of_the_same_name() {
        let state = build(&inventory(vec![
            json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferencePool",
                "metadata":{"name":"p"},"spec":{"selector":{"app":"a"},"targetPortNumber":9000}}),
            pool_v1("p", json!({"app":"a"}), &[8000]),
            pod("a-1", "10.0.0.1", json!({"app":"a"}), true),
        ]));
        assert_eq!(state.pools.len(), 1);
        assert_eq!(state.pools[0].endpoints[0].address, "10.0.0.1:8000");
        assert_eq!(state.problems.len(), 1);
    }

    #[test]
    fn rule_precedence_exact_before_generic_oldest_first() {
        let rewrite = |name: &str, created: &str, rules: serde_json::Value| {
            json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferenceModelRewrite",
                "metadata":{"name":name,"creationTimestamp":created},
                "spec":{"poolRef":{"name":"p"},"rules":rules}})
        };
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000]),
            rewrite(
                "generic-new",
                "2025-03-01T00:00:00Z",
                json!([{"targets":[{"modelRewrite":"base-v2"}]}]),
            ),
            rewrite(
                "generic-old",
                "2025-02-01T00:00:00Z",
                json!([{"matches":[],"targets":[{"modelRewrite":"base-v1"}]}]),
            ),
            rewrite(
                "exact-new",
                "2025-04-01T00:00:00Z",
                json!([{"matches":[{"model":{"type":"Exact","value":"chat"}},{"model":{"value":"talk"}}],
                        "targets":[{"modelRewrite":"chat-v2","weight":10},{"modelRewrite":"chat-v3","weight":30}]}]),
            ),
            model(
                "chat-model",
                "p",
                "chat",
                "2025-01-01T00:00:00Z",
                json!([{"name":"chat-v1","weight":100}]),
            ),
        ]));
        let rules: Vec<(&str, &str)> = state.pools[0]
            .model_rules
            .iter()
            .map(|r| (r.model.as_str(), r.source.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("chat", "InferenceModel/default/chat-model"),
                ("chat", "InferenceModelRewrite/default/exact-new"),
                ("talk", "InferenceModelRewrite/default/exact-new"),
                ("", "InferenceModelRewrite/default/generic-old"),
                ("", "InferenceModelRewrite/default/generic-new"),
            ]
        );
        let talk = &state.pools[0].model_rules[2];
        assert_eq!(
            talk.targets.iter().map(|t| t.weight).collect::<Vec<_>>(),
            vec![10, 30]
        );
        assert!(state.problems.is_empty(), "{:?}", state.problems);
    }

    #[test]
    fn invalid_models_are_reported_and_skipped() {
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000]),
            model(
                "good",
                "p",
                "m",
                "2025-01-01T00:00:00Z",
                json!([{"name":"m-v1","weight":90},{"name":"m-v2","weight":10}]),
            ),
            model("dup", "p", "m", "2025-02-01T00:00:00Z", json!([])),
            model(
                "zero",
                "p",
                "z",
                "2025-01-01T00:00:00Z",
                json!([{"name":"z1","weight":0}]),
            ),
            model(
                "mixed",
                "p",
                "x",
                "2025-01-01T00:00:00Z",
                json!([{"name":"x1","weight":5},{"name":"x2"}]),
            ),
            model("orphan", "nope", "o", "2025-01-01T00:00:00Z", json!([])),
            model(
                "equal",
                "p",
                "e",
                "2025-01-01T00:00:00Z",
                json!([{"name":"e1"},{"name":"e2"}]),
            ),
        ]));
        let models: Vec<&str> = state.pools[0]
            .model_rules
            .iter()
            .map(|r| r.model.as_str())
            .collect();
        assert_eq!(models, vec!["m", "e"]);
        assert_eq!(
            state.pools[0].model_rules[1]
                .targets
                .iter()
                .map(|t| t.weight)
                .collect::<Vec<_>>(),
            vec![1, 1]
        );
        let msgs: Vec<String> = state.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs
            .iter()
            .any(|m| m.contains("dup") && m.contains("duplicate modelName") && m.contains("good")));
        assert!(msgs
            .iter()
            .any(|m| m.contains("zero") && m.contains("weight 0")));
        assert!(msgs
            .iter()
            .any(|m| m.contains("mixed") && m.contains("all targets")));
        assert!(msgs
            .iter()
            .any(|m| m.contains("orphan") && m.contains("not found")));
    }

    #[test]
    fn objectives_from_both_groups_deduplicated_by_age() {
        let objective = |group_version: &str, name: &str, priority: i64, created: &str| {
            json!({"apiVersion":group_version,"kind":"InferenceObjective",
                "metadata":{"name":name,"creationTimestamp":created},
                "spec":{"priority":priority,"poolRef":{"name":"p","kind":"InferencePool"}}})
        };
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000]),
            objective(
                "inference.networking.k8s.io/v1alpha1",
                "food",
                10,
                "2025-01-01T00:00:00Z",
            ),
            objective(
                "inference.networking.x-k8s.io/v1alpha2",
                "food",
                99,
                "2025-02-01T00:00:00Z",
            ),
            objective(
                "inference.networking.x-k8s.io/v1alpha2",
                "batch",
                -5,
                "2025-02-01T00:00:00Z",
            ),
            json!({"apiVersion":"inference.networking.k8s.io/v1alpha1","kind":"InferenceObjective",
                "metadata":{"name":"plain"},"spec":{"poolRef":{"name":"p"}}}),
        ]));
        let objectives: Vec<(&str, i32)> = state.pools[0]
            .objectives
            .iter()
            .map(|o| (o.name.as_str(), o.priority))
            .collect();
        assert_eq!(objectives, vec![("batch", -5), ("food", 10), ("plain", 0)]);
        assert_eq!(state.problems.len(), 1);
        assert_eq!(
            state.problems[0].object,
            "InferenceObjective.inference.networking.x-k8s.io/default/food"
        );
        assert!(
            state.problems[0]
                .message
                .contains("InferenceObjective.inference.networking.k8s.io/default/food is used"),
            "{}",
            state.problems[0]
        );
    }

    fn rewrite_in(
        group_version: &str,
        name: &str,
        created: &str,
        rules: serde_json::Value,
    ) -> serde_json::Value {
        json!({"apiVersion":group_version,"kind":"InferenceModelRewrite",
            "metadata":{"name":name,"creationTimestamp":created},
            "spec":{"poolRef":{"name":"p"},"rules":rules}})
    }

    #[test]
    fn llm_d_objects_join_the_older_groups_under_the_same_precedence() {
        const LLMD: &str = "llm-d.ai/v1alpha2";
        const X: &str = "inference.networking.x-k8s.io/v1alpha2";
        let objective = |group_version: &str, name: &str, priority: i64, created: &str| {
            json!({"apiVersion":group_version,"kind":"InferenceObjective",
                "metadata":{"name":name,"creationTimestamp":created},
                "spec":{"priority":priority,"poolRef":{"name":"p","group":"inference.networking.k8s.io"}}})
        };
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000]),
            // Exact rules: the InferenceModel (oldest), then the llm-d.ai
            // rewrite, then the x-k8s.io one; generic rules after them.
            rewrite_in(
                X,
                "exact-x",
                "2025-03-01T00:00:00Z",
                json!([{"matches":[{"model":{"value":"chat"}}],"targets":[{"modelRewrite":"chat-x"}]}]),
            ),
            rewrite_in(
                LLMD,
                "exact-llmd",
                "2025-02-01T00:00:00Z",
                json!([{"matches":[{"model":{"type":"Exact","value":"chat"}}],
                        "targets":[{"modelRewrite":"chat-v1","weight":90},{"modelRewrite":"chat-v2","weight":10}]}]),
            ),
            rewrite_in(
                LLMD,
                "generic-llmd",
                "2025-01-15T00:00:00Z",
                json!([{"targets":[{"modelRewrite":"base"}]}]),
            ),
            model(
                "chat-model",
                "p",
                "chat",
                "2025-01-01T00:00:00Z",
                json!([{"name":"chat-im","weight":1}]),
            ),
            objective(LLMD, "batch", -1, "2025-01-01T00:00:00Z"),
            objective(X, "interactive", 5, "2025-01-01T00:00:00Z"),
        ]));
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        let rules: Vec<(&str, &str)> = state.pools[0]
            .model_rules
            .iter()
            .map(|r| (r.model.as_str(), r.source.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("chat", "InferenceModel/default/chat-model"),
                ("chat", "InferenceModelRewrite/default/exact-llmd"),
                ("chat", "InferenceModelRewrite/default/exact-x"),
                ("", "InferenceModelRewrite/default/generic-llmd"),
            ]
        );
        assert_eq!(
            state.pools[0].model_rules[1]
                .targets
                .iter()
                .map(|t| (t.model.as_str(), t.weight))
                .collect::<Vec<_>>(),
            vec![("chat-v1", 90), ("chat-v2", 10)]
        );
        let objectives: Vec<(&str, i32)> = state.pools[0]
            .objectives
            .iter()
            .map(|o| (o.name.as_str(), o.priority))
            .collect();
        assert_eq!(objectives, vec![("batch", -1), ("interactive", 5)]);
    }

    #[test]
    fn the_same_object_in_two_groups_is_used_once_and_llm_d_wins() {
        const LLMD: &str = "llm-d.ai/v1alpha2";
        const X: &str = "inference.networking.x-k8s.io/v1alpha2";
        const V1ALPHA1: &str = "inference.networking.k8s.io/v1alpha1";
        let objective = |group_version: &str, priority: i64, created: &str| {
            json!({"apiVersion":group_version,"kind":"InferenceObjective",
                "metadata":{"name":"food","creationTimestamp":created},
                "spec":{"priority":priority,"poolRef":{"name":"p"}}})
        };
        let canary = |group_version: &str, target: &str, created: &str| {
            rewrite_in(
                group_version,
                "canary",
                created,
                json!([{"matches":[{"model":{"value":"m"}}],"targets":[{"modelRewrite":target}]}]),
            )
        };
        // Whatever order they arrive in, the llm-d.ai copies win, although
        // they are the newest.
        let objects = vec![
            pool_v1("p", json!({"app":"a"}), &[8000]),
            objective(X, 1, "2025-01-01T00:00:00Z"),
            objective(LLMD, 3, "2025-03-01T00:00:00Z"),
            objective(V1ALPHA1, 2, "2025-01-01T00:00:00Z"),
            canary(X, "m-x", "2025-01-01T00:00:00Z"),
            canary(LLMD, "m-llmd", "2025-02-01T00:00:00Z"),
        ];
        let mut reversed = objects.clone();
        reversed[1..].reverse();
        for objects in [objects, reversed] {
            let state = build(&inventory(objects));
            let pool = &state.pools[0];
            assert_eq!(
                pool.objectives
                    .iter()
                    .map(|o| (o.name.as_str(), o.priority))
                    .collect::<Vec<_>>(),
                vec![("food", 3)]
            );
            assert_eq!(pool.model_rules.len(), 1);
            assert_eq!(pool.model_rules[0].targets[0].model, "m-llmd");
            let msgs: Vec<String> = state.problems.iter().map(|p| p.to_string()).collect();
            assert_eq!(
                msgs,
                vec![
                    "InferenceModelRewrite.inference.networking.x-k8s.io/default/canary: the same object exists in API group llm-d.ai: InferenceModelRewrite.llm-d.ai/default/canary is used (llm-d.ai first, then the oldest)",
                    "InferenceObjective.inference.networking.k8s.io/default/food: the same object exists in API group llm-d.ai: InferenceObjective.llm-d.ai/default/food is used (llm-d.ai first, then the oldest)",
                    "InferenceObjective.inference.networking.x-k8s.io/default/food: the same object exists in API group llm-d.ai: InferenceObjective.llm-d.ai/default/food is used (llm-d.ai first, then the oldest)",
                ]
            );
        }
    }

    #[test]
    fn same_named_pools_in_two_namespaces_keep_their_pods_and_objects() {
        let in_ns = |mut value: serde_json::Value, ns: &str| {
            value["metadata"]["namespace"] = json!(ns);
            value
        };
        let objective = |priority: i64| {
            json!({"apiVersion":"llm-d.ai/v1alpha2","kind":"InferenceObjective",
                "metadata":{"name":"batch"},"spec":{"priority":priority,"poolRef":{"name":"llm"}}})
        };
        let state = build(&inventory(vec![
            in_ns(pool_v1("llm", json!({"app":"vllm"}), &[8000]), "team-a"),
            in_ns(pool_v1("llm", json!({"app":"vllm"}), &[8000]), "team-b"),
            in_ns(
                pod("vllm-0", "10.0.0.1", json!({"app":"vllm"}), true),
                "team-a",
            ),
            in_ns(
                pod("vllm-0", "10.0.1.1", json!({"app":"vllm"}), true),
                "team-b",
            ),
            in_ns(objective(-1), "team-a"),
            in_ns(objective(7), "team-b"),
        ]));
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        let pools: Vec<(&str, &str, &str, i32)> = state
            .pools
            .iter()
            .map(|p| {
                (
                    p.namespace.as_str(),
                    p.name.as_str(),
                    p.endpoints[0].address.as_str(),
                    p.objectives[0].priority,
                )
            })
            .collect();
        assert_eq!(
            pools,
            vec![
                ("team-a", "llm", "10.0.0.1:8000", -1),
                ("team-b", "llm", "10.0.1.1:8000", 7)
            ]
        );
    }

    #[test]
    fn a_v1_pool_without_endpoint_picker_ref_fails_closed() {
        // GIE v1.6 made endpointPickerRef optional; its failureMode defaults
        // to FailClose.
        let state = build(&inventory(vec![
            pool_v1("p", json!({"app":"a"}), &[8000]),
            pod("a-1", "10.0.0.1", json!({"app":"a"}), true),
        ]));
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        assert_eq!(state.pools[0].failure_mode, FailureMode::FailClose);
        assert_eq!(state.pools[0].endpoints[0].address, "10.0.0.1:8000");
    }
}
