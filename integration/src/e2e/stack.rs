//! A whole gateway for one test: simulated pods, the collector over a temporary
//! manifest directory and Envoy with the filter, all on free loopback ports,
//! all stopped when the [`Stack`] drops.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tempfile::TempDir;
use tokio::task::JoinSet;

use super::artifacts;
use super::components::{Collector, Envoy, SimFleet};
use super::edge::EdgeLimits;
use super::envoy_config::{BodyRouting, DataPath, EnvoyConfig, Route};
use super::http::{HttpClient, Reply};
use super::pods::{manifests, SimPod};
use super::ports::free_local_addr;
use super::wait::wait_until;

/// A pod and the InferencePool its labels put it in (its name, or
/// `namespace/name` where two namespaces have pools of that name).
#[derive(Debug, Clone)]
pub struct PoolPod {
    pub pool: String,
    pub pod: SimPod,
}

/// The pods of each route's cluster, found as the filter finds a cluster's pool:
/// its `cluster_pools` entry (`namespace/name` or a bare name), else a pool of
/// the cluster's own name. A pod's `pool` is `name` or `namespace/name`.
fn cluster_endpoints(config: &EnvoyConfig, pods: &[PoolPod]) -> BTreeMap<String, Vec<SocketAddr>> {
    let mut out: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for (cluster, _) in config.routes.iter().flat_map(|r| &r.backends) {
        let target = config
            .plugin_config
            .get("cluster_pools")
            .and_then(|m| m.get(cluster))
            .and_then(|v| v.as_str())
            .unwrap_or(cluster);
        let (want_ns, want_name) = match target.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, target),
        };
        let addrs = pods.iter().filter(|p| {
            let (ns, name) = match p.pool.split_once('/') {
                Some((ns, name)) => (ns, name),
                None => (p.pod.namespace.as_str(), p.pool.as_str()),
            };
            name == want_name && want_ns.is_none_or(|w| w == ns)
        });
        out.entry(cluster.clone())
            .or_default()
            .extend(addrs.map(|p| p.pod.addr()));
    }
    out
}

/// Renders a test's Envoy bootstrap itself (e.g. a gateway emulation) from
/// the ports and paths the stack chose and the pods it started.
pub type CustomEnvoy = fn(&EnvoyConfig, &[PoolPod]) -> Result<String>;

/// What a test's gateway consists of.
#[derive(Debug, Clone, Default)]
pub struct StackSpec {
    pub pods: Vec<PoolPod>,
    /// Added to every `vllm-sim` command line (`--time-scale`, `--seed`).
    pub sim_args: Vec<String>,
    /// `(file name, YAML)` written beside the pods for the collector:
    /// InferencePools, InferenceModels, InferenceObjectives.
    pub manifests: Vec<(String, String)>,
    pub routes: Vec<Route>,
    /// The filter's plugin configuration; `null` means the demo's.
    pub plugin_config: serde_json::Value,
    /// How the filter waits for the body (default: stop_iteration).
    pub body_routing: BodyRouting,
    /// Replaces the rendered [`EnvoyConfig`] when set.
    pub custom_envoy: Option<CustomEnvoy>,
    /// The pool clusters' shape (override_host unless a test says otherwise).
    pub data_path: DataPath,
}

/// A running gateway.
pub struct Stack {
    pub envoy: Envoy,
    pub collector: Option<Collector>,
    pub fleet: SimFleet,
    pub client: HttpClient,
    /// The listener clients send requests to.
    pub gateway: SocketAddr,
    collector_grpc: SocketAddr,
    collector_http: SocketAddr,
    pool_of_pod: HashMap<String, String>,
    dir: TempDir,
    /// The Envoy configuration the stack runs (for a second Envoy).
    envoy_config: EnvoyConfig,
}

impl Stack {
    /// Starts pods, collector and Envoy and waits until the collector publishes
    /// every pod ready.
    pub async fn start(spec: StackSpec) -> Result<Self> {
        Self::start_with_limits(spec, EdgeLimits::default()).await
    }

    /// Like [`Stack::start`] with Envoy's edge bounds set by the test.
    pub async fn start_with_limits(spec: StackSpec, limits: EdgeLimits) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("llmgw-e2e-").tempdir()?;
        let log_dir = dir.path().join("logs");
        let manifest_dir = dir.path().join("manifests");
        std::fs::create_dir_all(&log_dir)?;
        std::fs::create_dir_all(&manifest_dir)?;

        let pods: Vec<SimPod> = spec.pods.iter().map(|p| p.pod.clone()).collect();
        std::fs::write(manifest_dir.join("pods.yaml"), manifests(&pods))?;
        for (name, yaml) in &spec.manifests {
            std::fs::write(manifest_dir.join(name), yaml)?;
        }
        let fleet = SimFleet::start(pods, &spec.sim_args, &log_dir).await?;

        let collector_grpc = free_local_addr()?;
        let collector_http = free_local_addr()?;
        let collector =
            Collector::start(&manifest_dir, collector_grpc, collector_http, &log_dir).await?;
        let expected: Vec<(&str, SocketAddr)> = spec
            .pods
            .iter()
            .map(|p| (p.pool.as_str(), p.pod.addr()))
            .collect();
        collector.wait_for_pods(&expected).await?;

        let gateway = free_local_addr()?;
        let admin = free_local_addr()?;
        let mut config = EnvoyConfig::demo();
        config.listen = gateway;
        config.admin = admin;
        config.collector_grpc = collector_grpc;
        config.wasm_path = artifacts::filter_wasm()?.display().to_string();
        config.routes = spec.routes.clone();
        config.data_path = spec.data_path;
        if !spec.plugin_config.is_null() {
            config.plugin_config = spec.plugin_config.clone();
        }
        config.pool_endpoints = cluster_endpoints(&config, &spec.pods);
        config.buffer_limit_bytes = limits.buffer_limit_bytes();
        config.limits = limits;
        config.body_routing = spec.body_routing;
        let config_path = dir.path().join("envoy.yaml");
        let text = match spec.custom_envoy {
            Some(render) => render(&config, &spec.pods)?,
            None => config.render(),
        };
        std::fs::write(&config_path, text)?;
        let envoy = Envoy::start(&config_path, admin, &log_dir).await?;

        Ok(Self {
            envoy,
            collector: Some(collector),
            fleet,
            client: HttpClient::new(),
            gateway,
            collector_grpc,
            collector_http,
            pool_of_pod: spec
                .pods
                .iter()
                .map(|p| (p.pod.name.clone(), p.pool.clone()))
                .collect(),
            dir,
            envoy_config: config,
        })
    }

    /// The directory the collector reads manifests from (live edits).
    pub fn manifest_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("manifests")
    }

    /// The collector's own `/metrics` text.
    pub async fn collector_metrics(&self) -> Result<String> {
        let reply = self
            .client
            .get(&format!("http://{}/metrics", self.collector_http))
            .await?;
        Ok(reply.text())
    }

    /// Starts another Envoy with the same configuration on new listener and
    /// admin ports (a rolling restart's new instance); returns it once its
    /// admin `/ready` answers, with its listener address.
    pub async fn start_another_envoy(&self, name: &str) -> Result<(Envoy, SocketAddr)> {
        let mut config = self.envoy_config.clone();
        config.listen = free_local_addr()?;
        config.admin = free_local_addr()?;
        let log_dir = self.dir.path().join(format!("logs-{name}"));
        std::fs::create_dir_all(&log_dir)?;
        let path = self.dir.path().join(format!("envoy-{name}.yaml"));
        std::fs::write(&path, config.render())?;
        let envoy = Envoy::start(&path, config.admin, &log_dir).await?;
        Ok((envoy, config.listen))
    }

    /// URL of `path` on the gateway listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// POSTs `body` to the gateway.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply> {
        self.client.post(&self.url(path), headers, body).await
    }

    /// Holds `pod`'s queue high: pauses its engine, sends it `count` requests
    /// for `model` directly (not through the gateway) and returns once the
    /// collector publishes them waiting. The requests finish when the pod is
    /// resumed; dropping or aborting the set abandons them.
    pub async fn hold_queue(
        &self,
        pod: &SimPod,
        count: usize,
        model: &str,
    ) -> Result<JoinSet<Result<Reply>>> {
        self.fleet
            .set_faults(&pod.name, serde_json::json!({"pause_engine": true}))
            .await?;
        let mut held = JoinSet::new();
        for i in 0..count {
            let client = self.client.clone();
            let url = format!("{}/v1/completions", pod.url());
            let body =
                serde_json::json!({"model": model, "prompt": format!("held {i}"), "max_tokens": 4})
                    .to_string();
            held.spawn(async move { client.post(&url, &[], body).await });
        }
        self.wait_for_endpoint(
            "the held pod's queue in the collector",
            pod.addr(),
            |e, _| e.waiting as usize >= count,
        )
        .await?;
        Ok(held)
    }

    /// Waits until the collector publishes `check` true for the endpoint at `addr`.
    pub async fn wait_for_endpoint(
        &self,
        what: &str,
        addr: SocketAddr,
        check: impl Fn(&pool_state::Endpoint, &pool_state::Pool) -> bool,
    ) -> Result<()> {
        let collector = self
            .collector
            .as_ref()
            .context("the collector is stopped")?;
        let address = addr.to_string();
        wait_until(what, Duration::from_secs(10), || async {
            let snapshot = collector.snapshot().await?;
            Ok(snapshot.pools.iter().any(|pool| {
                pool.endpoints
                    .iter()
                    .any(|e| e.address == address && check(e, pool))
            }))
        })
        .await
    }

    /// The pool a pod belongs to, by pod name (`x-sim-pod`).
    pub fn pool_of(&self, pod: &str) -> Option<&str> {
        self.pool_of_pod.get(pod).map(String::as_str)
    }

    /// Sends `probe` until the gateway answers 200 (the filter has pool state),
    /// within a bound.
    pub async fn wait_routable(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<()> {
        let result = super::wait::wait_until(
            &format!("the gateway to route {body}"),
            std::time::Duration::from_secs(20),
            || async {
                let reply = self.post(path, headers, body.to_string()).await?;
                if reply.status.is_success() {
                    Ok(true)
                } else {
                    anyhow::bail!("{} {}", reply.status, reply.text())
                }
            },
        )
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.diagnostics()))
    }

    /// Stops the collector (the gateway keeps running).
    pub fn stop_collector(&mut self) {
        if let Some(collector) = self.collector.take() {
            collector.stop();
        }
    }

    /// Starts the collector again on the same ports and manifests.
    pub async fn restart_collector(&mut self) -> Result<()> {
        self.stop_collector();
        let log_dir = self.dir.path().join("logs");
        let manifest_dir = self.dir.path().join("manifests");
        let collector = Collector::start(
            &manifest_dir,
            self.collector_grpc,
            self.collector_http,
            &log_dir,
        )
        .await
        .context("restarting the collector")?;
        self.collector = Some(collector);
        Ok(())
    }

    /// Log tails of Envoy and the collector, to attach to assertion failures.
    pub fn diagnostics(&self) -> String {
        let collector = self
            .collector
            .as_ref()
            .map(Collector::log_tail)
            .unwrap_or_else(|| "(stopped)".to_string());
        format!(
            "--- envoy ({}) ---\n{}\n--- collector ---\n{collector}",
            self.envoy.log_path().display(),
            self.envoy.log_tail()
        )
    }
}
