//! Starting the three kinds of processes the gateway needs — simulated pods,
//! the sidecar-collector, Envoy — each waited on until it is ready, each killed
//! when its handle drops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pool_state::pool_state_client::PoolStateClient;
use pool_state::{GetRequest, Snapshot};

use super::artifacts;
use super::http::HttpClient;
use super::pods::SimPod;
use super::process::ManagedProcess;
use super::wait::wait_until;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The simulated pods: one `vllm-sim` process per group of pods with the same
/// arguments.
pub struct SimFleet {
    pub pods: Vec<SimPod>,
    processes: Vec<ManagedProcess>,
}

impl SimFleet {
    /// Starts every pod, adding `extra_args` (e.g. `--time-scale 0.01`) to all,
    /// and waits until each answers `/health`.
    pub async fn start(pods: Vec<SimPod>, extra_args: &[String], log_dir: &Path) -> Result<Self> {
        let binary = artifacts::native_binary("vllm-sim")?;
        let mut groups: BTreeMap<Vec<String>, Vec<&SimPod>> = BTreeMap::new();
        for pod in &pods {
            groups.entry(pod.sim_args.clone()).or_default().push(pod);
        }
        let mut processes = Vec::new();
        for (index, (sim_args, members)) in groups.iter().enumerate() {
            let mut args = Vec::new();
            for pod in members {
                args.push("--pod".to_string());
                args.push(format!("{}={}", pod.name, pod.addr()));
            }
            args.extend(sim_args.iter().cloned());
            args.extend(extra_args.iter().cloned());
            let name = format!("vllm-sim-{index}-{}", members[0].name);
            processes.push(ManagedProcess::spawn(&name, &binary, &args, log_dir)?);
        }
        let mut fleet = Self { pods, processes };
        fleet.wait_healthy().await?;
        Ok(fleet)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let client = HttpClient::new();
        for pod in &self.pods {
            let url = format!("{}/health", pod.url());
            let waited = wait_until(
                &format!("pod {} at {url}", pod.name),
                START_TIMEOUT,
                || async { Ok(client.get(&url).await?.status.is_success()) },
            )
            .await;
            if let Err(e) = waited {
                bail!("{e:#}\n{}", self.logs());
            }
        }
        Ok(())
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> &SimPod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Sets fault injection on one pod (`POST /admin/faults`), e.g.
    /// `{"pause_engine": true}` to hold its queue.
    pub async fn set_faults(&self, pod: &str, faults: serde_json::Value) -> Result<()> {
        let url = format!("{}/admin/faults", self.pod(pod).url());
        let reply = HttpClient::new()
            .post(&url, &[], faults.to_string())
            .await?;
        anyhow::ensure!(
            reply.status.is_success(),
            "{url}: {} {}",
            reply.status,
            reply.text()
        );
        Ok(())
    }

    /// Tails of every simulator log, for failure messages.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name(), p.log_tail(2000)))
            .collect()
    }
}

/// A running sidecar-collector in file mode.
pub struct Collector {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    process: ManagedProcess,
}

impl Collector {
    /// The collector process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Starts the collector over `manifest_dir` and waits for `/readyz`.
    pub async fn start(
        manifest_dir: &Path,
        grpc: SocketAddr,
        http: SocketAddr,
        log_dir: &Path,
    ) -> Result<Self> {
        let binary = artifacts::native_binary("sidecar-collector")?;
        let args: Vec<String> = [
            "--source",
            "file",
            "--dir",
            &manifest_dir.display().to_string(),
            "--grpc-listen",
            &grpc.to_string(),
            "--http-listen",
            &http.to_string(),
            "--scrape-interval",
            "50ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = ManagedProcess::spawn("sidecar-collector", &binary, &args, log_dir)?;
        let collector = Self {
            grpc,
            http,
            process,
        };
        let client = HttpClient::new();
        let url = format!("http://{http}/readyz");
        if let Err(e) = wait_until("collector /readyz", START_TIMEOUT, || async {
            Ok(client.get(&url).await?.status.is_success())
        })
        .await
        {
            bail!("{e:#}\n{}", collector.process.log_tail(3000));
        }
        Ok(collector)
    }

    /// The collector's current snapshot (gRPC `PoolState.Get`).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        fetch_snapshot(self.grpc).await
    }

    /// Waits until every pod appears, ready and freshly scraped, in the pool
    /// the caller expects it in (`namespace/name`, or a name in any namespace;
    /// `None`: in any pool).
    pub async fn wait_for_pods(&self, expected: &[(&str, SocketAddr)]) -> Result<()> {
        let expected: Vec<(Option<&str>, SocketAddr)> = expected
            .iter()
            .map(|(pool, addr)| (Some(*pool), *addr))
            .collect();
        self.wait_for_endpoints(&expected).await
    }

    /// Like [`Collector::wait_for_pods`], with the pool optional.
    pub async fn wait_for_endpoints(&self, expected: &[(Option<&str>, SocketAddr)]) -> Result<()> {
        let waited = wait_until("collector to publish every pod", START_TIMEOUT, || async {
            let snapshot = self.snapshot().await?;
            for (pool, addr) in expected {
                let address = addr.to_string();
                let ready = snapshot
                    .pools
                    .iter()
                    .filter(|p| {
                        pool.is_none_or(|pool| {
                            p.name == pool || format!("{}/{}", p.namespace, p.name) == pool
                        })
                    })
                    .flat_map(|p| &p.endpoints)
                    .any(|e| e.address == address && e.ready && e.metrics_age_ms < 1000);
                if !ready {
                    bail!("{address} not (yet) a ready endpoint of pool {pool:?}");
                }
            }
            Ok(true)
        })
        .await;
        waited.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.process.log_tail(3000)))
    }

    /// Tail of the collector's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(3000)
    }

    /// Stops the collector (SIGTERM, then SIGKILL).
    pub fn stop(mut self) {
        self.process.stop(Duration::from_secs(2));
    }
}

/// One gRPC `PoolState.Get` against a collector.
pub async fn fetch_snapshot(grpc: SocketAddr) -> Result<Snapshot> {
    let call = async {
        let mut client = PoolStateClient::connect(format!("http://{grpc}")).await?;
        let reply = client.get(GetRequest { pools: Vec::new() }).await?;
        Ok::<_, anyhow::Error>(reply.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .context("collector gRPC Get timed out")?
}

/// A running Envoy.
pub struct Envoy {
    pub admin: SocketAddr,
    process: ManagedProcess,
}

impl Envoy {
    /// The Envoy process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Starts Envoy with two workers on `config` (a file) and waits for the
    /// admin `/ready`. Relative paths in the config resolve against the current
    /// directory (the demo runs from the repository root).
    pub async fn start(config: &Path, admin: SocketAddr, log_dir: &Path) -> Result<Self> {
        let binary = artifacts::envoy_binary()?;
        let args: Vec<String> = [
            "-c",
            &config.display().to_string(),
            "--concurrency",
            "2",
            // Several Envoys (tests, demos) may share the machine.
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--component-log-level",
            "wasm:info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = ManagedProcess::spawn("envoy", &binary, &args, log_dir)?;
        let mut envoy = Self { admin, process };
        let client = HttpClient::new();
        let url = format!("http://{admin}/ready");
        let ready = wait_until("Envoy admin /ready", START_TIMEOUT, || {
            let exited = envoy.process.has_exited();
            let client = client.clone();
            let url = url.clone();
            async move {
                if exited {
                    bail!("Envoy exited");
                }
                Ok(client.get(&url).await?.status.is_success())
            }
        })
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\n{}", envoy.process.log_tail(4000));
        }
        Ok(envoy)
    }

    /// The value of one counter or gauge from the admin `/stats` (0 if absent,
    /// as Envoy creates cluster stats lazily).
    pub async fn stat(&self, name: &str) -> Result<u64> {
        let url = format!("http://{}/stats", self.admin);
        let reply = HttpClient::new().get(&url).await?;
        anyhow::ensure!(reply.status.is_success(), "{url}: {}", reply.status);
        for line in reply.text().lines() {
            if let Some((stat, value)) = line.split_once(": ") {
                if stat == name {
                    return Ok(value.trim().parse()?);
                }
            }
        }
        Ok(0)
    }

    /// Whether Envoy is still running.
    pub fn is_running(&mut self) -> bool {
        !self.process.has_exited()
    }

    /// Tail of Envoy's log (includes the filter's log lines).
    pub fn log_tail(&self) -> String {
        self.process.log_tail(4000)
    }

    /// Envoy's log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }
}
