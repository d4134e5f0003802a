//! Simulated pods as Kubernetes `Pod` manifests. A pod's only container runs
//! `vllm-sim` with the pod's arguments, so one manifest says both what the
//! collector discovers (labels, IP, Ready, port) and how to start the pod
//! locally. Tests build pods in code; the demo reads them from `examples/demo/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{anyhow, bail, Context, Result};

/// Annotation that serves a pod's target port on another local port
/// (docs/ARCHITECTURE.md, collector).
pub const PORT_MAP_ANNOTATION: &str = "llm-gateway.io/port-map";

/// One simulated model-server pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPod {
    pub name: String,
    /// `metadata.namespace` (InferencePools select pods in their own namespace).
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub pod_ip: Ipv4Addr,
    /// The port the InferencePool targets (the manifests use 8000).
    pub target_port: u16,
    /// The local port actually served, when it differs from `target_port`
    /// (written as the port-map annotation).
    pub host_port: Option<u16>,
    /// `vllm-sim` arguments other than `--pod` (model, adapters, ...).
    pub sim_args: Vec<String>,
}

impl SimPod {
    /// A pod on 127.0.0.1 serving target port 8000 on `host_port`.
    pub fn local(name: &str, labels: &[(&str, &str)], host_port: u16, sim_args: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            namespace: "default".to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pod_ip: Ipv4Addr::LOCALHOST,
            target_port: 8000,
            host_port: Some(host_port),
            sim_args: sim_args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Where the pod listens; also the endpoint address the collector publishes
    /// and the filter writes into `x-gateway-destination-endpoint`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.pod_ip, self.host_port.unwrap_or(self.target_port)))
    }

    /// Base URL of the pod's own HTTP server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The same pod in another namespace.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// The pod as a `kind: Pod` manifest, Ready, in its namespace.
    pub fn manifest(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "apiVersion: v1\nkind: Pod\nmetadata:");
        let _ = writeln!(
            y,
            "  name: {}\n  namespace: {}\n  labels:",
            self.name, self.namespace
        );
        for (key, value) in &self.labels {
            let _ = writeln!(y, "    {key}: {value}");
        }
        if let Some(host_port) = self.host_port {
            let _ = writeln!(
                y,
                "  annotations:\n    {PORT_MAP_ANNOTATION}: \"{}={host_port}\"",
                self.target_port
            );
        }
        let _ = writeln!(y, "spec:\n  containers:\n  - name: vllm-sim");
        let _ = writeln!(y, "    command: [vllm-sim]");
        let args: Vec<String> = self
            .sim_args
            .iter()
            .map(|a| serde_json::to_string(a).expect("strings serialize"))
            .collect();
        let _ = writeln!(y, "    args: [{}]", args.join(", "));
        let _ = writeln!(y, "    ports:\n    - containerPort: {}", self.target_port);
        let _ = writeln!(y, "status:\n  phase: Running\n  podIP: {}", self.pod_ip);
        let _ = writeln!(y, "  conditions:\n  - type: Ready\n    status: \"True\"");
        y
    }
}

/// Renders several pods as one multi-document YAML file.
pub fn manifests(pods: &[SimPod]) -> String {
    pods.iter()
        .map(SimPod::manifest)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Reads every `kind: Pod` document of a (multi-document) YAML file whose first
/// container runs `vllm-sim`; other documents are ignored.
pub fn parse_pods(yaml: &str) -> Result<Vec<SimPod>> {
    use serde::Deserialize as _;
    let mut pods = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document).context("parsing YAML")?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
            continue;
        }
        pods.push(parse_pod(&value)?);
    }
    Ok(pods)
}

fn parse_pod(pod: &serde_yaml::Value) -> Result<SimPod> {
    let str_at = |v: &serde_yaml::Value, path: &[&str]| -> Option<String> {
        let mut cur = v;
        for key in path {
            cur = cur.get(*key)?;
        }
        cur.as_str().map(str::to_string)
    };
    let name =
        str_at(pod, &["metadata", "name"]).ok_or_else(|| anyhow!("Pod without metadata.name"))?;
    let context = || format!("Pod {name}");
    let namespace =
        str_at(pod, &["metadata", "namespace"]).unwrap_or_else(|| "default".to_string());
    let labels = match pod.get("metadata").and_then(|m| m.get("labels")) {
        Some(map) => serde_yaml::from_value(map.clone()).with_context(context)?,
        None => BTreeMap::new(),
    };
    let pod_ip: Ipv4Addr = str_at(pod, &["status", "podIP"])
        .ok_or_else(|| anyhow!("Pod {name} has no status.podIP"))?
        .parse()
        .with_context(context)?;
    let container = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(|c| c.get(0))
        .ok_or_else(|| anyhow!("Pod {name} has no container"))?;
    let command: Vec<String> = container
        .get("command")
        .map(|c| serde_yaml::from_value(c.clone()))
        .transpose()
        .with_context(context)?
        .unwrap_or_default();
    if command.first().map(String::as_str) != Some("vllm-sim") {
        bail!("Pod {name}: its container's command is not [vllm-sim]");
    }
    let sim_args: Vec<String> = container
        .get("args")
        .map(|a| serde_yaml::from_value(a.clone()))
        .transpose()
        .with_context(context)?
        .unwrap_or_default();
    let target_port = container
        .get("ports")
        .and_then(|p| p.get(0))
        .and_then(|p| p.get("containerPort"))
        .and_then(|p| p.as_u64())
        .map(|p| u16::try_from(p).with_context(context))
        .transpose()?
        .unwrap_or(8000);
    let host_port = match str_at(pod, &["metadata", "annotations", PORT_MAP_ANNOTATION]) {
        Some(map) => port_map_lookup(&map, target_port).with_context(context)?,
        None => None,
    };
    Ok(SimPod {
        name,
        namespace,
        labels,
        pod_ip,
        target_port,
        host_port,
        sim_args,
    })
}

/// The local port `target_port` is mapped to in a `"8000=18001,8001=18002"` annotation.
fn port_map_lookup(map: &str, target_port: u16) -> Result<Option<u16>> {
    for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (from, to) = entry
            .split_once('=')
            .ok_or_else(|| anyhow!("port-map entry {entry:?} is not TARGET=LOCAL"))?;
        if from.trim().parse::<u16>()? == target_port {
            return Ok(Some(to.trim().parse()?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_pod_parses_back_to_itself() {
        let pod = SimPod::local(
            "qwen-0",
            &[("app", "custom-serving"), ("release", "qwen")],
            18001,
            &[
                "--model",
                "Qwen/Qwen2.5-7B-Instruct",
                "--lora-modules",
                "a",
                "b",
            ],
        );
        let elsewhere = pod.clone().in_namespace("team-b");
        assert_eq!(
            parse_pods(&manifests(&[pod.clone(), elsewhere.clone()])).unwrap(),
            vec![pod, elsewhere]
        );
    }

    #[test]
    fn port_map_picks_the_target_port_entry() {
        assert_eq!(
            port_map_lookup("8001=1, 8000=18001", 8000).unwrap(),
            Some(18001)
        );
        assert_eq!(port_map_lookup("8001=1", 8000).unwrap(), None);
        assert!(port_map_lookup("8000", 8000).is_err());
    }
}
