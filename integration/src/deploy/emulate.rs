//! What Envoy Gateway would send its Envoy for the rendered EG recipe, built
//! without a cluster: the xDS shapes of EG v1.9's translator (its golden
//! output in ../shared/reference/gateways/envoy-gateway-v1.9.0/xds-golden/:
//! the wasm filter disabled on the listener and enabled per route, one
//! cluster per filtered backendRef, override_host from endpointOverride),
//! then the EnvoyPatchPolicy applied with EG's semantics (RFC 6902 JSONPatch
//! over snake_case JSON, a JSONPath selecting where `path` applies, `add`
//! with an empty path adding a resource). The result is a static bootstrap
//! whose pool clusters point at the given pods and whose collector cluster
//! points at the given collector (stand-ins for EDS and the Service's DNS).

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use jsonpath_rust::JsonPath;
use serde_json::{json, Value};

use super::envoy_gateway::{self, POLICY};
use super::input::{is_pool_ref, route_id, Inputs};
use super::Options;

/// Where the emulated gateway runs and what its clusters reach.
#[derive(Debug, Clone)]
pub struct Environment {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub collector: SocketAddr,
    /// The filter as a local file (EG serves the image's wasm from its cache).
    pub wasm_path: String,
    /// Pod addresses by pool name.
    pub pods: HashMap<String, Vec<SocketAddr>>,
    /// Leave out `allow_on_headers_stop_iteration` (the negative control):
    /// EG without the EnvoyPatchPolicy's Listener patches, Istio's filter
    /// without the field (as istiod < 1.28 delivers it).
    pub skip_listener_patches: bool,
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind} rendered"))
}

fn socket(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

/// Bytes of a Kubernetes quantity as the recipes write it (`24Mi`).
fn quantity(value: &Value) -> Result<u64> {
    let text = value.as_str().context("a quantity")?;
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number.parse().context("quantity number")?;
    Ok(number
        * match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            other => bail!("unit {other}"),
        })
}

/// The bootstrap (JSON) of an Envoy configured as EG would configure it.
pub fn envoy_gateway_bootstrap(
    inputs: &Inputs,
    options: &Options,
    env: &Environment,
) -> Result<Value> {
    let files = envoy_gateway::manifests(inputs, options)?;
    let docs: Vec<Value> = files.into_iter().flat_map(|(_, d)| d).collect();
    let extension = find(&docs, "EnvoyExtensionPolicy")?;
    let backend_policy = find(&docs, "BackendTrafficPolicy")?;
    let client_policy = find(&docs, "ClientTrafficPolicy")?;
    let patch_policy = find(&docs, "EnvoyPatchPolicy")?;
    let namespace = extension["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let filter_name = envoy_gateway::wasm_filter_name(namespace, POLICY, 0);
    let wasm = &extension["spec"]["wasm"][0];
    let wasm_filter = json!({
        "name": filter_name,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": wasm["name"],
                "fail_open": wasm["failOpen"].as_bool().unwrap_or(false),
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": wasm["config"].to_string(),
                },
                "vm_config": {
                    "vm_id": format!("envoyextensionpolicy/{namespace}/{POLICY}/wasm/0"),
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": env.wasm_path}},
                },
            },
        },
    });
    let header = backend_policy["spec"]["loadBalancer"]["endpointOverride"]["extractFrom"][0]
        ["header"]
        .clone();
    let cluster_buffer = quantity(&backend_policy["spec"]["connection"]["bufferLimit"])?;
    let timeout = backend_policy["spec"]["timeout"]["http"]["requestTimeout"].clone();

    let (routes, _) = envoy_gateway::rewrite_routes(inputs, options)?;
    let mut envoy_routes = Vec::new();
    let mut clusters = Vec::new();
    for (original, route) in inputs.routes.iter().zip(&routes) {
        let (route_ns, route_name) = route_id(route)?;
        let rules = route["spec"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let mut weighted = Vec::new();
            let backends = rule["backendRefs"].as_array().cloned().unwrap_or_default();
            for (j, backend) in backends.iter().enumerate() {
                let name = envoy_gateway::backend_cluster(&route_ns, &route_name, i, j);
                let headers: Vec<Value> = backend["filters"][0]["requestHeaderModifier"]["set"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| json!({"header": {"key": h["name"], "value": h["value"]}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}))
                    .collect();
                weighted.push(json!({"name": name, "weight": backend["weight"], "request_headers_to_add": headers}));
                let pool_ref = &original["spec"]["rules"][i]["backendRefs"][j];
                if !is_pool_ref(pool_ref) {
                    bail!("the emulation covers InferencePool backends only");
                }
                let pool = inputs.pool(pool_ref, &route_ns)?;
                let endpoints: Vec<Value> = env
                    .pods
                    .get(&pool.name)
                    .into_iter()
                    .flatten()
                    .map(|addr| json!({"endpoint": {"address": socket(*addr)}}))
                    .collect();
                clusters.push(json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "10s",
                    "per_connection_buffer_limit_bytes": cluster_buffer,
                    "load_balancing_policy": {"policies": [{"typed_extension_config": {
                        "name": "envoy.load_balancing_policies.override_host",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                            "override_host_sources": [{"header": header}],
                            "fallback_policy": {"policies": [{"typed_extension_config": {
                                "name": "envoy.load_balancing_policies.least_request",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest"},
                            }}]},
                        },
                    }}]},
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
                }));
            }
            let matches = rule["matches"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![json!({})]);
            for (m, matched) in matches.iter().enumerate() {
                let prefix = matched["path"]["value"].as_str().unwrap_or("/");
                envoy_routes.push(json!({
                    "name": format!("httproute/{route_ns}/{route_name}/rule/{i}/match/{m}/*"),
                    "match": {"prefix": prefix},
                    "route": {"weighted_clusters": {"clusters": weighted}, "timeout": timeout},
                    "typed_per_filter_config": {filter_name.clone(): {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "config": {},
                    }},
                }));
            }
        }
    }
    let gateway = inputs.listeners_of(&inputs.routes[0]);
    let listener = gateway.first().context("a listener")?;
    let listener_name = format!(
        "{}/{}/{}",
        listener.namespace, listener.gateway, listener.section
    );
    let mut listeners = vec![json!({
        "name": listener_name,
        "address": socket(env.listen),
        "per_connection_buffer_limit_bytes": quantity(&client_policy["spec"]["connection"]["bufferLimit"])?,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "http-8080",
                "route_config": {"name": listener_name, "virtual_hosts": [{
                    "name": format!("{listener_name}/*"),
                    "domains": ["*"],
                    "routes": envoy_routes,
                }]},
                "http_filters": [wasm_filter, {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    })];
    let mut policy = patch_policy.clone();
    if env.skip_listener_patches {
        if let Some(patches) = policy["spec"]["jsonPatches"].as_array_mut() {
            patches.retain(|p| !p["type"].as_str().unwrap_or_default().ends_with("Listener"));
        }
    }
    apply_patches(&policy, &mut listeners, &mut clusters)?;
    // The collector Service's DNS name stands for the local collector.
    for cluster in clusters
        .iter_mut()
        .filter(|c| c["name"] == "llmgw_collector")
    {
        cluster["type"] = json!("STATIC");
        cluster["load_assignment"]["endpoints"] =
            json!([{"lb_endpoints": [{"endpoint": {"address": socket(env.collector)}}]}]);
    }
    Ok(json!({
        "admin": {"address": socket(env.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }))
}

/// EG's EnvoyPatchPolicy semantics on the emulated resources.
pub fn apply_patches(
    policy: &Value,
    listeners: &mut [Value],
    clusters: &mut Vec<Value>,
) -> Result<()> {
    for patch in policy["spec"]["jsonPatches"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = patch["name"].as_str().unwrap_or_default();
        let op = &patch["operation"];
        let resources: &mut [Value] = match patch["type"].as_str().unwrap_or_default() {
            "type.googleapis.com/envoy.config.listener.v3.Listener" => listeners,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster" => {
                if op["op"] == "add" && op["path"] == "" && op.get("jsonPath").is_none() {
                    clusters.push(op["value"].clone());
                    continue;
                }
                clusters.as_mut_slice()
            }
            other => bail!("patch type {other} not emulated"),
        };
        let Some(resource) = resources.iter_mut().find(|r| r["name"] == name) else {
            bail!("EnvoyPatchPolicy: no resource {name} (EG would report it as not programmed)");
        };
        let path = op["path"].as_str().unwrap_or_default();
        let targets = match op["jsonPath"].as_str() {
            Some(selector) => json_path_pointers(resource, selector)?,
            None => vec![String::new()],
        };
        if targets.is_empty() {
            bail!(
                "EnvoyPatchPolicy {name}: jsonPath {} selects nothing",
                op["jsonPath"]
            );
        }
        for target in targets {
            let mut operation = op.clone();
            if let Some(map) = operation.as_object_mut() {
                map.remove("jsonPath");
                map.insert("path".into(), json!(format!("{target}{path}")));
            }
            let patch: json_patch::Patch = serde_json::from_value(json!([operation]))?;
            json_patch::patch(resource, &patch).with_context(|| format!("patch on {name}"))?;
        }
    }
    Ok(())
}

/// JSON pointers of the nodes `selector` picks (EG prefixes `$` when absent).
pub fn json_path_pointers(doc: &Value, selector: &str) -> Result<Vec<String>> {
    let selector = if selector.starts_with('$') {
        selector.to_string()
    } else {
        format!("${selector}")
    };
    let paths = doc
        .query_only_path(&selector)
        .map_err(|e| anyhow::anyhow!("jsonPath {selector}: {e:?}"))?;
    paths.iter().map(|p| normalized_to_pointer(p)).collect()
}

/// `$['a'][0]['b']` -> `/a/0/b`.
fn normalized_to_pointer(path: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = path.strip_prefix('$').context("a normalized path")?;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        let inner = rest.strip_prefix('[').context("a segment")?;
        let end = if let Some(quoted) = inner.strip_prefix('\'') {
            quoted
                .find("']")
                .map(|e| e + 3)
                .context("a closing quote")?
        } else {
            inner
                .find(']')
                .map(|e| e + 1)
                .context("a closing bracket")?
        };
        let segment = inner[..end - 1].trim_matches('\'');
        out.push('/');
        out.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        rest = &inner[end..];
    }
    Ok(out)
}

/// What istiod would send a Gateway API gateway's Envoy for the rendered
/// Istio recipe: listener `0.0.0.0_<port>` with the HCM and router, one
/// outbound cluster per Service port (`outbound|<port>||<svc>.<ns>.svc.cluster.local`,
/// least-request), the route's weighted clusters; then the EnvoyFilter applied
/// with Istio's semantics (EXTENSION_CONFIG ADD, HTTP_FILTER INSERT_BEFORE the
/// router, LISTENER / CLUSTER MERGE as a protobuf merge, CLUSTER ADD). A static
/// bootstrap has no ECDS, so the filter's `config_discovery` is resolved by
/// inlining the EXTENSION_CONFIG resource it names, as ECDS would deliver it
/// (with the code as a local file: istio-agent fetches the oci:// image).
pub fn istio_bootstrap(inputs: &Inputs, options: &Options, env: &Environment) -> Result<Value> {
    let files = super::istio::manifests(inputs, options)?;
    let docs: Vec<Value> = files.into_iter().flat_map(|(_, d)| d).collect();
    let envoy_filter = find(&docs, "EnvoyFilter")?;
    let (routes, _) = super::istio::rewrite_routes(inputs, options)?;
    let mut clusters: Vec<Value> = Vec::new();
    let mut envoy_routes = Vec::new();
    for (original, route) in inputs.routes.iter().zip(&routes) {
        let (route_ns, route_name) = route_id(route)?;
        let rules = route["spec"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let mut weighted = Vec::new();
            let backends = rule["backendRefs"].as_array().cloned().unwrap_or_default();
            for (j, backend) in backends.iter().enumerate() {
                let pool =
                    inputs.pool(&original["spec"]["rules"][i]["backendRefs"][j], &route_ns)?;
                let name = super::istio::service_cluster(
                    &pool.service_name(),
                    &pool.namespace,
                    pool.target_port,
                );
                weighted.push(json!({"name": name, "weight": backend["weight"]}));
                if clusters.iter().any(|c| c["name"] == name) {
                    continue;
                }
                let endpoints: Vec<Value> = env
                    .pods
                    .get(&pool.name)
                    .into_iter()
                    .flatten()
                    .map(|addr| json!({"endpoint": {"address": socket(*addr)}}))
                    .collect();
                clusters.push(json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "10s",
                    "lb_policy": "LEAST_REQUEST",
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
                }));
            }
            let matches = rule["matches"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![json!({})]);
            for matched in &matches {
                envoy_routes.push(json!({
                    "name": format!("{route_ns}.{route_name}.{i}"),
                    "match": {"prefix": matched["path"]["value"].as_str().unwrap_or("/")},
                    "route": {"weighted_clusters": {"clusters": weighted}, "timeout": "0s"},
                }));
            }
        }
    }
    let port = inputs
        .listeners_of(&inputs.routes[0])
        .first()
        .context("a listener")?
        .port;
    let mut listener = json!({
        "name": format!("0.0.0.0_{port}"),
        "address": socket(env.listen),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("outbound_0.0.0.0_{port}"),
                "route_config": {"name": format!("http.{port}"), "virtual_hosts": [{
                    "name": "*:*", "domains": ["*"], "routes": envoy_routes,
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    });
    let mut extension_configs: Vec<Value> = Vec::new();
    for patch in envoy_filter["spec"]["configPatches"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let value = patch["patch"]["value"].clone();
        let operation = patch["patch"]["operation"].as_str().unwrap_or_default();
        let matched = &patch["match"];
        match (patch["applyTo"].as_str().unwrap_or_default(), operation) {
            ("EXTENSION_CONFIG", "ADD") => extension_configs.push(value),
            ("HTTP_FILTER", "INSERT_BEFORE") => {
                if matched["listener"]["portNumber"] != json!(port) {
                    continue;
                }
                let anchor =
                    matched["listener"]["filterChain"]["filter"]["subFilter"]["name"].clone();
                let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]
                    ["http_filters"]
                    .as_array_mut()
                    .context("http_filters")?;
                let at = filters
                    .iter()
                    .position(|f| f["name"] == anchor)
                    .context("the anchor filter")?;
                filters.insert(at, value);
            }
            ("LISTENER", "MERGE") => {
                if matched["listener"]["portNumber"] == json!(port) {
                    proto_merge(&mut listener, &value);
                }
            }
            ("CLUSTER", "ADD") => clusters.push(value),
            ("CLUSTER", "MERGE") => {
                let service = matched["cluster"]["service"].as_str().unwrap_or_default();
                let port = matched["cluster"]["portNumber"]
                    .as_u64()
                    .unwrap_or_default();
                let name = format!("outbound|{port}||{service}");
                for cluster in clusters.iter_mut().filter(|c| c["name"] == name) {
                    proto_merge(cluster, &value);
                }
            }
            (apply, op) => bail!("EnvoyFilter {apply} {op} not emulated"),
        }
    }
    // ECDS: the HTTP filter's config_discovery gets the named resource.
    for filter in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if filter.get("config_discovery").is_none() {
            continue;
        }
        let resource = extension_configs
            .iter()
            .find(|c| c["name"] == filter["name"])
            .context("config_discovery names no EXTENSION_CONFIG")?;
        let mut typed = resource["typed_config"].clone();
        typed["config"]["vm_config"]["code"] = json!({"local": {"filename": env.wasm_path}});
        if env.skip_listener_patches {
            if let Some(config) = typed["config"].as_object_mut() {
                config.remove("allow_on_headers_stop_iteration");
            }
        }
        *filter = json!({"name": filter["name"], "typed_config": typed});
    }
    // The collector Service's DNS name stands for the local collector.
    for cluster in clusters
        .iter_mut()
        .filter(|c| c["name"] == "llmgw_collector")
    {
        cluster["type"] = json!("STATIC");
        cluster["load_assignment"]["endpoints"] =
            json!([{"lb_endpoints": [{"endpoint": {"address": socket(env.collector)}}]}]);
    }
    Ok(json!({
        "admin": {"address": socket(env.admin)},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }))
}

/// Protobuf merge semantics on JSON: messages merge field by field, repeated
/// fields append, scalars replace.
fn proto_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                proto_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(t), Value::Array(p)) => t.extend(p.iter().cloned()),
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_selects_the_named_filter_as_eg_does() {
        let doc = json!({"a": [{"http_filters": [{"name": "x"}, {"name": "w/1", "typed_config": {"config": {}}}]}]});
        let pointers =
            json_path_pointers(&doc, "..http_filters[?(@.name=='w/1')].typed_config.config")
                .unwrap();
        assert_eq!(
            pointers,
            vec!["/a/0/http_filters/1/typed_config/config".to_string()]
        );
    }
}
