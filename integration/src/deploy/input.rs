//! The user's manifests: Gateways, HTTPRoutes and InferencePools (GIE v1
//! `inference.networking.k8s.io` and v1alpha2 `inference.networking.x-k8s.io`).
//! Other kinds (InferenceModel, InferenceObjective, ...) are the collector's
//! business and pass through untouched.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::yaml::parse_documents;

const POOL_GROUPS: [&str; 2] = [
    "inference.networking.k8s.io",
    "inference.networking.x-k8s.io",
];

/// An InferencePool as both gateways need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub target_port: u16,
}

impl Pool {
    /// The Service the rewritten HTTPRoute sends this pool's traffic to.
    pub fn service_name(&self) -> String {
        format!("{}-llmgw", self.name)
    }

    /// The filter's pool reference as `options` asks for it.
    pub fn reference_for(&self, options: &super::Options) -> String {
        if options.namespaced_pools {
            self.reference()
        } else {
            self.name.clone()
        }
    }

    /// `namespace/name`, the filter's pool reference.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Gateway listener an HTTPRoute attaches to.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub gateway: String,
    pub namespace: String,
    pub section: String,
    pub port: u16,
}

/// Everything read from the user's files.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub listeners: Vec<Listener>,
    /// HTTPRoutes that reference at least one InferencePool, as written.
    pub routes: Vec<Value>,
    pub pools: Vec<Pool>,
}

fn namespace_of(doc: &Value) -> String {
    doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string()
}

fn name_of(doc: &Value) -> Result<String> {
    doc["metadata"]["name"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{} without metadata.name", doc["kind"]))
}

/// Whether a backendRef names an InferencePool.
pub fn is_pool_ref(backend: &Value) -> bool {
    backend["kind"] == "InferencePool"
        && backend["group"]
            .as_str()
            .is_some_and(|g| POOL_GROUPS.contains(&g))
}

fn pool_of(doc: &Value) -> Result<Pool> {
    let name = name_of(doc)?;
    let spec = &doc["spec"];
    // v1: selector.matchLabels + targetPorts[].number; v1alpha2: selector + targetPortNumber.
    let selector = spec["selector"]
        .get("matchLabels")
        .unwrap_or(&spec["selector"]);
    let selector: BTreeMap<String, String> = serde_json::from_value(selector.clone())
        .with_context(|| format!("InferencePool {name}: selector labels"))?;
    if selector.is_empty() {
        bail!("InferencePool {name}: empty selector");
    }
    let port = spec["targetPorts"][0]["number"]
        .as_u64()
        .or_else(|| spec["targetPortNumber"].as_u64())
        .with_context(|| format!("InferencePool {name}: no target port"))?;
    let pool = Pool {
        name,
        namespace: namespace_of(doc),
        selector,
        target_port: u16::try_from(port).context("target port")?,
    };
    if pool.service_name().len() > 63 {
        bail!("InferencePool {}: name too long for its Service", pool.name);
    }
    Ok(pool)
}

impl Inputs {
    /// Reads every document of `texts`.
    pub fn parse(texts: &[String]) -> Result<Self> {
        let mut inputs = Inputs::default();
        for text in texts {
            for doc in parse_documents(text)? {
                let group = doc["apiVersion"].as_str().unwrap_or_default();
                let group = group.split('/').next().unwrap_or_default();
                match doc["kind"].as_str().unwrap_or_default() {
                    "Gateway" => {
                        let gateway = name_of(&doc)?;
                        for listener in doc["spec"]["listeners"].as_array().into_iter().flatten() {
                            inputs.listeners.push(Listener {
                                gateway: gateway.clone(),
                                namespace: namespace_of(&doc),
                                section: listener["name"].as_str().unwrap_or_default().into(),
                                port: u16::try_from(listener["port"].as_u64().unwrap_or(0))
                                    .context("listener port")?,
                            });
                        }
                    }
                    "HTTPRoute" => {
                        let uses_pool = doc["spec"]["rules"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
                            .any(is_pool_ref);
                        if uses_pool {
                            inputs.routes.retain(|r: &Value| {
                                (name_of(r).ok(), namespace_of(r))
                                    != (name_of(&doc).ok(), namespace_of(&doc))
                            });
                            inputs.routes.push(doc);
                        }
                    }
                    "InferencePool" if POOL_GROUPS.contains(&group) => {
                        let pool = pool_of(&doc)?;
                        inputs.pools.retain(|p| p.reference() != pool.reference());
                        inputs.pools.push(pool);
                    }
                    _ => {}
                }
            }
        }
        Ok(inputs)
    }

    /// Reads the files (a later file's HTTPRoute of the same name replaces an
    /// earlier one, as `kubectl apply` would).
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<Self> {
        let texts = paths
            .iter()
            .map(|p| {
                std::fs::read_to_string(p.as_ref())
                    .with_context(|| format!("reading {}", p.as_ref().display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::parse(&texts)
    }

    /// The pool a backendRef of a route in `namespace` names.
    pub fn pool(&self, backend: &Value, namespace: &str) -> Result<&Pool> {
        let name = backend["name"].as_str().unwrap_or_default();
        let ns = backend["namespace"].as_str().unwrap_or(namespace);
        self.pools
            .iter()
            .find(|p| p.name == name && p.namespace == ns)
            .with_context(|| format!("backendRef to InferencePool {ns}/{name}, not in the inputs"))
    }

    /// The listeners a route attaches to (`parentRefs`; no sectionName = all).
    pub fn listeners_of(&self, route: &Value) -> Vec<&Listener> {
        let namespace = namespace_of(route);
        let mut out = Vec::new();
        for parent in route["spec"]["parentRefs"].as_array().into_iter().flatten() {
            let gw = parent["name"].as_str().unwrap_or_default();
            let ns = parent["namespace"].as_str().unwrap_or(&namespace);
            let section = parent["sectionName"].as_str();
            for l in &self.listeners {
                if l.gateway == gw
                    && l.namespace == ns
                    && section.is_none_or(|s| s == l.section)
                    && !out.contains(&l)
                {
                    out.push(l);
                }
            }
        }
        out
    }
}

/// `metadata.namespace` (default `default`) and `metadata.name` of a manifest.
pub fn route_id(route: &Value) -> Result<(String, String)> {
    Ok((namespace_of(route), name_of(route)?))
}
