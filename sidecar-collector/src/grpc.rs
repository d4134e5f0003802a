//! The `llmgw.poolstate.v1.PoolState` gRPC service: a server-streaming Watch
//! and a unary Get over the latest published snapshot, and ReportPrefixes,
//! which feeds the learned prefix placements (and forwards each gateway
//! report once to the peer collectors).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pool_state::pool_state_client::PoolStateClient;
use pool_state::pool_state_server::{PoolState, PoolStateServer};
use pool_state::{GetRequest, PrefixReport, PrefixReportAck, Snapshot, WatchRequest};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::model::DesiredState;
use crate::placement::Placements;
use crate::telemetry::Telemetry;

/// Most affinity keys one report may carry (a filter sends a few per tick).
pub const MAX_REPORT_KEYS: usize = 16_384;
/// How long a forward to a peer collector may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves the snapshots the publisher sends on its watch channel, and takes
/// the gateways' prefix reports.
#[derive(Clone)]
pub struct PoolStateService {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    default_min_interval: Duration,
    telemetry: Arc<Telemetry>,
    placements: Arc<Placements>,
    desired: watch::Receiver<Arc<DesiredState>>,
    peers: Vec<PoolStateClient<Channel>>,
}

impl PoolStateService {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        default_min_interval: Duration,
        telemetry: Arc<Telemetry>,
        placements: Arc<Placements>,
        desired: watch::Receiver<Arc<DesiredState>>,
    ) -> Self {
        Self {
            snapshots,
            default_min_interval,
            telemetry,
            placements,
            desired,
            peers: Vec::new(),
        }
    }

    /// Collectors this one forwards gateway reports to (`host:port` of their
    /// gRPC listeners). Connections are made lazily and re-made on failure.
    pub fn with_peers(mut self, peers: &[String]) -> anyhow::Result<Self> {
        for peer in peers {
            let uri = format!("http://{peer}");
            let channel = tonic::transport::Endpoint::from_shared(uri)
                .map_err(|e| anyhow::anyhow!("--placement-peer {peer:?} is not host:port: {e}"))?
                .connect_timeout(FORWARD_TIMEOUT)
                .timeout(FORWARD_TIMEOUT)
                .connect_lazy();
            self.peers.push(PoolStateClient::new(channel));
        }
        Ok(self)
    }

    fn forward(&self, report: &PrefixReport) {
        for peer in &self.peers {
            let mut peer = peer.clone();
            let message = PrefixReport {
                seen: report.seen.clone(),
                forwarded: true,
            };
            let telemetry = self.telemetry.clone();
            tokio::spawn(async move {
                if let Err(status) = peer.report_prefixes(message).await {
                    telemetry
                        .prefix_forward_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %status, "forwarding a prefix report to a peer failed");
                }
            });
        }
    }

    pub fn into_server(self) -> PoolStateServer<Self> {
        PoolStateServer::new(self)
    }
}

/// The snapshot restricted to `pools` (all pools when empty), each given as
/// `namespace/name` or a bare name (that name in every namespace).
fn filtered(snapshot: &Snapshot, pools: &[String]) -> Snapshot {
    if pools.is_empty() {
        return snapshot.clone();
    }
    Snapshot {
        version: snapshot.version,
        collector_id: snapshot.collector_id.clone(),
        generated_unix_ms: snapshot.generated_unix_ms,
        pools: snapshot
            .pools
            .iter()
            .filter(|p| {
                pools.iter().any(|wanted| match wanted.split_once('/') {
                    Some((namespace, name)) => p.namespace == namespace && p.name == name,
                    None => &p.name == wanted,
                })
            })
            .cloned()
            .collect(),
    }
}

/// Counts open Watch streams; decrements when the stream is dropped.
struct StreamGuard(Arc<Telemetry>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.watch_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl PoolState for PoolStateService {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let min_interval = match request.min_interval_ms {
            0 => self.default_min_interval,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let mut rx = self.snapshots.clone();
        rx.mark_changed(); // the current snapshot goes out at once
        self.telemetry.watch_streams.fetch_add(1, Ordering::Relaxed);
        let guard = StreamGuard(self.telemetry.clone());
        let state = (rx, request.pools, None::<tokio::time::Instant>, guard);
        let stream =
            futures::stream::unfold(state, move |(mut rx, pools, last_sent, guard)| async move {
                loop {
                    if let Some(last) = last_sent {
                        tokio::time::sleep_until(last + min_interval).await;
                    }
                    if rx.changed().await.is_err() {
                        return None; // the collector is shutting down
                    }
                    let snapshot = rx.borrow_and_update().clone();
                    if snapshot.version == 0 {
                        continue; // nothing published yet
                    }
                    let message = filtered(&snapshot, &pools);
                    let now = tokio::time::Instant::now();
                    return Some((Ok(message), (rx, pools, Some(now), guard)));
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_prefixes(
        &self,
        request: Request<PrefixReport>,
    ) -> Result<Response<PrefixReportAck>, Status> {
        let report = request.into_inner();
        if report.seen.len() > MAX_REPORT_KEYS {
            return Err(Status::invalid_argument(format!(
                "a report carries at most {MAX_REPORT_KEYS} keys, this one {}",
                report.seen.len()
            )));
        }
        let desired = self.desired.borrow().clone();
        let accepted = self.placements.report(&report.seen, &desired);
        let ignored = report.seen.len() - accepted;
        self.telemetry
            .prefix_reports
            .fetch_add(accepted as u64, Ordering::Relaxed);
        self.telemetry
            .prefix_reports_ignored
            .fetch_add(ignored as u64, Ordering::Relaxed);
        if !report.forwarded && self.placements.enabled() {
            self.forward(&report);
        }
        Ok(Response::new(PrefixReportAck {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Snapshot>, Status> {
        let snapshot = self.snapshots.borrow().clone();
        if snapshot.version == 0 {
            return Err(Status::unavailable("no snapshot published yet"));
        }
        Ok(Response::new(filtered(
            &snapshot,
            &request.into_inner().pools,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_state::Pool;

    #[test]
    fn filter_keeps_named_pools_only() {
        let snapshot = Snapshot {
            version: 3,
            collector_id: "c".into(),
            generated_unix_ms: 1,
            pools: ["a", "b", "c"]
                .iter()
                .map(|n| Pool {
                    name: n.to_string(),
                    ..Pool::default()
                })
                .collect(),
        };
        let names = |s: &Snapshot| s.pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&filtered(&snapshot, &[])), vec!["a", "b", "c"]);
        assert_eq!(
            names(&filtered(&snapshot, &["c".into(), "zz".into()])),
            vec!["c"]
        );
        assert_eq!(filtered(&snapshot, &["c".into()]).version, 3);
        let mut two = snapshot.clone();
        for (pool, ns) in two.pools.iter_mut().zip(["x", "y", "y"]) {
            pool.name = "p".into();
            pool.namespace = ns.into();
        }
        let namespaces = |s: &Snapshot| {
            s.pools
                .iter()
                .map(|p| p.namespace.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(namespaces(&filtered(&two, &["x/p".into()])), vec!["x"]);
        assert_eq!(namespaces(&filtered(&two, &["p".into()])).len(), 3);
    }
}
