//! The Envoy Gateway recipe (EG >= v1.5.5): pool Services, the HTTPRoute
//! rewritten to them with a backendRef filter on each (so EG gives each
//! backend its own cluster `httproute/<ns>/<route>/rule/<i>/backend/<j>`),
//! an EnvoyExtensionPolicy loading the filter from its OCI image, a
//! BackendTrafficPolicy (override_host on the destination header via
//! `loadBalancer.endpointOverride`, buffer limit, timeout), a
//! ClientTrafficPolicy (listener buffer limit) and one EnvoyPatchPolicy
//! (`allow_on_headers_stop_iteration` on the filter, the collector's cluster).

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::input::{is_pool_ref, route_id, Inputs};
use super::yaml::write_documents;
use super::{
    buffer_limit, plugin_config, pool_service, ClusterPools, File, Options, DESTINATION_HEADER,
};

/// The name of the EnvoyExtensionPolicy (one per route's namespace).
pub const POLICY: &str = "llm-gateway";
/// The informational header each pool backendRef sets; its real job is to
/// give the backendRef a filter, which makes EG build one cluster per backend.
pub const POOL_REF_HEADER: &str = "x-gateway-inference-pool";

/// The HCM filter name EG gives entry `index` of an EnvoyExtensionPolicy.
pub fn wasm_filter_name(namespace: &str, policy: &str, index: usize) -> String {
    format!("envoy.filters.http.wasm/envoyextensionpolicy/{namespace}/{policy}/wasm/{index}")
}

/// The cluster EG builds for backendRef `j` of rule `i` when it has a filter.
pub fn backend_cluster(namespace: &str, route: &str, rule: usize, backend: usize) -> String {
    format!("httproute/{namespace}/{route}/rule/{rule}/backend/{backend}")
}

/// The rewritten HTTPRoutes and the `(cluster, pool)` pairs they produce.
pub fn rewrite_routes(inputs: &Inputs, options: &Options) -> Result<(Vec<Value>, ClusterPools)> {
    let mut routes = Vec::new();
    let mut cluster_pools = Vec::new();
    for route in &inputs.routes {
        let (namespace, name) = route_id(route)?;
        let mut route = route.clone();
        if let Some(meta) = route["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            meta.insert("namespace".into(), json!(namespace));
        }
        let rules = route["spec"]["rules"].as_array_mut();
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let backends = rule["backendRefs"].as_array_mut();
            for (j, backend) in backends.into_iter().flatten().enumerate() {
                if !is_pool_ref(backend) {
                    continue;
                }
                let pool = inputs.pool(backend, &namespace)?;
                if pool.namespace != namespace {
                    bail!("HTTPRoute {namespace}/{name}: pool {} in another namespace needs a ReferenceGrant; not supported", pool.reference());
                }
                let weight = backend.get("weight").cloned().unwrap_or(json!(1));
                *backend = json!({
                    "group": "",
                    "kind": "Service",
                    "name": pool.service_name(),
                    "port": pool.target_port,
                    "weight": weight,
                    "filters": [{
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {
                            "set": [{"name": POOL_REF_HEADER, "value": pool.reference()}],
                        },
                    }],
                });
                cluster_pools.push((
                    backend_cluster(&namespace, &name, i, j),
                    pool.reference_for(options),
                ));
            }
        }
        routes.push(route);
    }
    Ok((routes, cluster_pools))
}

fn route_refs(routes: &[Value]) -> Result<Vec<Value>> {
    routes
        .iter()
        .map(|r| {
            let (_, name) = route_id(r)?;
            Ok(json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}))
        })
        .collect()
}

fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1024 * 1024))
}

/// Every manifest of the recipe, by file.
pub fn manifests(inputs: &Inputs, options: &Options) -> Result<Vec<(String, Vec<Value>)>> {
    let (routes, cluster_pools) = rewrite_routes(inputs, options)?;
    let Some(first) = routes.first() else {
        bail!("no HTTPRoute references an InferencePool");
    };
    let (namespace, _) = route_id(first)?;
    if routes
        .iter()
        .any(|r| route_id(r).map(|id| id.0 != namespace).unwrap_or(true))
    {
        bail!("every HTTPRoute must be in one namespace ({namespace})");
    }
    let limit = mebibytes(buffer_limit(options));
    let config = plugin_config(&cluster_pools, options, json!({"key_prefix": "llmgw"}));
    let extension = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {
            "targetRefs": route_refs(&routes)?,
            "wasm": [{
                "name": "llm-gateway",
                "code": {"type": "Image", "image": {"url": options.image}},
                "config": config,
                "failOpen": false,
            }],
        },
    });
    let backend = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {
            "targetRefs": route_refs(&routes)?,
            "loadBalancer": {
                "type": "LeastRequest",
                "endpointOverride": {"extractFrom": [{"header": DESTINATION_HEADER}]},
            },
            "connection": {"bufferLimit": limit},
            "timeout": {"http": {"requestTimeout": "86400s"}},
        },
    });
    let mut gateways: Vec<(String, String)> = Vec::new();
    let mut listeners = Vec::new();
    for route in &routes {
        for l in inputs.listeners_of(route) {
            if !gateways.contains(&(l.namespace.clone(), l.gateway.clone())) {
                gateways.push((l.namespace.clone(), l.gateway.clone()));
            }
            let name = format!("{}/{}/{}", l.namespace, l.gateway, l.section);
            if !listeners.contains(&name) {
                listeners.push(name);
            }
        }
    }
    if listeners.is_empty() {
        bail!("the HTTPRoutes attach to no Gateway listener in the inputs");
    }
    let mut policies = vec![extension, backend];
    for (gw_namespace, gateway) in &gateways {
        policies.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "ClientTrafficPolicy",
            "metadata": {"name": POLICY, "namespace": gw_namespace},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}],
                "connection": {"bufferLimit": limit},
            },
        }));
        let mut patches: Vec<Value> = listeners
            .iter()
            .filter(|l| l.starts_with(&format!("{gw_namespace}/{gateway}/")))
            .map(|listener| {
                json!({
                    "type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                    "name": listener,
                    "operation": {
                        "op": "add",
                        "jsonPath": format!(
                            "..http_filters[?(@.name=='{}')].typed_config.config",
                            wasm_filter_name(&namespace, POLICY, 0)
                        ),
                        "path": "/allow_on_headers_stop_iteration",
                        "value": true,
                    },
                })
            })
            .collect();
        patches.push(json!({
            "type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "llmgw_collector",
            "operation": {"op": "add", "path": "", "value": collector_cluster(options)},
        }));
        policies.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyPatchPolicy",
            "metadata": {"name": POLICY, "namespace": gw_namespace},
            "spec": {
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway},
                "type": "JSONPatch",
                "jsonPatches": patches,
            },
        }));
    }
    let services = inputs.pools.iter().map(pool_service).collect();
    Ok(vec![
        ("pool-services.yaml".into(), services),
        ("httproute.yaml".into(), routes),
        ("policies.yaml".into(), policies),
    ])
}

/// The collector's HTTP/2 cluster (snake_case xDS JSON, as EG patches it).
pub fn collector_cluster(options: &Options) -> Value {
    let (host, port) = &options.collector;
    json!({
        "name": "llmgw_collector",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": "llmgw_collector",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port},
            }}}]}],
        },
    })
}

const HEADER: &str = "Rendered by `cargo run -p integration --bin render-deploy` from the manifests
in examples/ack-canary/ (see deploy/envoy-gateway/README.md). Do not edit:
a test checks this file equals the renderer's output.";

pub fn render(inputs: &Inputs, options: &Options) -> Result<Vec<File>> {
    manifests(inputs, options)?
        .into_iter()
        .map(|(name, docs)| {
            Ok(File {
                path: format!("envoy-gateway/{name}"),
                text: write_documents(HEADER, &docs)?,
            })
        })
        .collect()
}
