//! The Istio recipe (Istio >= 1.28, Gateway API gateways): pool Services, the
//! HTTPRoute rewritten to them (Istio gives every Service port its own
//! cluster `outbound|<port>||<svc>.<ns>.svc.cluster.local`) and one
//! EnvoyFilter on the gateway's pods: the Wasm config as an ECDS resource
//! (EXTENSION_CONFIG, with `allow_on_headers_stop_iteration`, which a
//! WasmPlugin cannot set), the HTTP filter before the router pointing at it,
//! the collector's cluster, override_host on each pool cluster and the
//! listener's buffer limit.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::envoy_gateway::collector_cluster;
use super::input::{is_pool_ref, route_id, Inputs};
use super::yaml::write_documents;
use super::{
    buffer_limit, plugin_config, pool_service, ClusterPools, File, Options, DESTINATION_HEADER,
};

/// The ECDS resource and HTTP filter name (no `|`: see the collector cluster).
pub const FILTER: &str = "llm-gateway";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const HCM: &str = "envoy.filters.network.http_connection_manager";

/// The outbound cluster Istio builds for a Service port.
pub fn service_cluster(service: &str, namespace: &str, port: u16) -> String {
    format!("outbound|{port}||{service}.{namespace}.svc.cluster.local")
}

/// The HTTPRoutes pointed at the pool Services, and `(cluster, pool)` pairs.
pub fn rewrite_routes(inputs: &Inputs, options: &Options) -> Result<(Vec<Value>, ClusterPools)> {
    let mut routes = Vec::new();
    let mut cluster_pools: Vec<(String, String)> = Vec::new();
    for route in &inputs.routes {
        let (namespace, _) = route_id(route)?;
        let mut route = route.clone();
        if let Some(meta) = route["metadata"].as_object_mut() {
            meta.insert("namespace".into(), json!(namespace));
        }
        let rules = route["spec"]["rules"].as_array_mut();
        for rule in rules.into_iter().flatten() {
            for backend in rule["backendRefs"].as_array_mut().into_iter().flatten() {
                if !is_pool_ref(backend) {
                    continue;
                }
                let pool = inputs.pool(backend, &namespace)?;
                let weight = backend.get("weight").cloned().unwrap_or(json!(1));
                let mut service = json!({
                    "group": "",
                    "kind": "Service",
                    "name": pool.service_name(),
                    "port": pool.target_port,
                    "weight": weight,
                });
                if pool.namespace != namespace {
                    service["namespace"] = json!(pool.namespace);
                }
                *backend = service;
                let cluster =
                    service_cluster(&pool.service_name(), &pool.namespace, pool.target_port);
                if !cluster_pools.iter().any(|(c, _)| *c == cluster) {
                    cluster_pools.push((cluster, pool.reference_for(options)));
                }
            }
        }
        routes.push(route);
    }
    Ok((routes, cluster_pools))
}

fn wasm_config(cluster_pools: &[(String, String)], options: &Options) -> Value {
    let config = plugin_config(cluster_pools, options, json!({"key_prefix": "llmgw"}));
    json!({
        "name": FILTER,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": FILTER,
                // The filter pauses in its headers callback until the body named the model.
                "allow_on_headers_stop_iteration": true,
                "fail_open": false,
                "vm_config": {
                    "vm_id": "llmgw",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"remote": {"http_uri": {
                        "uri": format!("oci://{}", options.image),
                        "cluster": "llmgw_unused",
                        "timeout": "30s",
                    }}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string(),
                },
            },
        },
    })
}

/// Every manifest of the recipe, by file.
pub fn manifests(inputs: &Inputs, options: &Options) -> Result<Vec<(String, Vec<Value>)>> {
    let (routes, cluster_pools) = rewrite_routes(inputs, options)?;
    let limit = buffer_limit(options);
    let mut filters = Vec::new();
    let mut gateways: Vec<(String, String, Vec<u16>)> = Vec::new();
    for route in &routes {
        for l in inputs.listeners_of(route) {
            match gateways
                .iter_mut()
                .find(|(ns, gw, _)| *ns == l.namespace && *gw == l.gateway)
            {
                Some((_, _, ports)) if !ports.contains(&l.port) => ports.push(l.port),
                Some(_) => {}
                None => gateways.push((l.namespace.clone(), l.gateway.clone(), vec![l.port])),
            }
        }
    }
    if gateways.is_empty() {
        bail!("the HTTPRoutes attach to no Gateway listener in the inputs");
    }
    for (namespace, gateway, ports) in &gateways {
        let mut patches = vec![json!({
            "applyTo": "EXTENSION_CONFIG",
            "patch": {"operation": "ADD", "value": wasm_config(&cluster_pools, options)},
        })];
        for port in ports {
            patches.push(json!({
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": {
                        "portNumber": port,
                        "filterChain": {"filter": {
                            "name": HCM,
                            "subFilter": {"name": "envoy.filters.http.router"},
                        }},
                    },
                },
                "patch": {"operation": "INSERT_BEFORE", "value": {
                    "name": FILTER,
                    "config_discovery": {
                        "config_source": {"ads": {}},
                        "type_urls": [WASM_TYPE],
                    },
                }},
            }));
            patches.push(json!({
                "applyTo": "LISTENER",
                "match": {"context": "GATEWAY", "listener": {"portNumber": port}},
                "patch": {"operation": "MERGE", "value": {"per_connection_buffer_limit_bytes": limit}},
            }));
        }
        patches.push(json!({
            "applyTo": "CLUSTER",
            "match": {"context": "GATEWAY"},
            "patch": {"operation": "ADD", "value": collector_cluster(options)},
        }));
        for pool in &inputs.pools {
            patches.push(json!({
                "applyTo": "CLUSTER",
                "match": {"context": "GATEWAY", "cluster": {
                    "service": format!("{}.{}.svc.cluster.local", pool.service_name(), pool.namespace),
                    "portNumber": pool.target_port,
                }},
                "patch": {"operation": "MERGE", "value": {
                    "per_connection_buffer_limit_bytes": limit,
                    "load_balancing_policy": override_host_policy(),
                }},
            }));
        }
        filters.push(json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": FILTER, "namespace": namespace},
            "spec": {
                "workloadSelector": {"labels": {"gateway.networking.k8s.io/gateway-name": gateway}},
                "configPatches": patches,
            },
        }));
    }
    let services = inputs.pools.iter().map(pool_service).collect();
    Ok(vec![
        ("pool-services.yaml".into(), services),
        ("httproute.yaml".into(), routes),
        ("envoyfilter.yaml".into(), filters),
    ])
}

/// override_host on the destination header, least-request when it is absent
/// or names no host of the pool.
pub fn override_host_policy() -> Value {
    json!({"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
            "override_host_sources": [{"header": DESTINATION_HEADER}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.least_request",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                },
            }}]},
        },
    }}]})
}

const HEADER: &str = "Rendered by `cargo run -p integration --bin render-deploy` from the manifests
in examples/ack-canary/ (see deploy/istio/README.md). Do not edit: a test
checks this file equals the renderer's output.";

pub fn render(inputs: &Inputs, options: &Options) -> Result<Vec<File>> {
    manifests(inputs, options)?
        .into_iter()
        .map(|(name, docs)| {
            Ok(File {
                path: format!("istio/{name}"),
                text: write_documents(HEADER, &docs)?,
            })
        })
        .collect()
}
