//! Closed-loop load: `concurrency` clients each sending their next request as
//! soon as the previous one is answered, recording each request's latency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;
use integration::e2e::http::HttpClient;

/// Latencies of one round and how long it took.
pub struct Round {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
}

/// The body of request `i`.
pub type BodyFor = Arc<dyn Fn(usize) -> Bytes + Send + Sync>;

/// Sends `requests` POSTs of `body_for(i)` to `url` with `headers_for(i)`.
pub async fn round(
    client: &HttpClient,
    url: &str,
    body_for: BodyFor,
    requests: usize,
    concurrency: usize,
    headers_for: Arc<dyn Fn(usize) -> Vec<(String, String)> + Send + Sync>,
) -> Result<Round> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, body_for, next, headers_for) = (
            client.clone(),
            url.to_string(),
            body_for.clone(),
            next.clone(),
            headers_for.clone(),
        );
        clients.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let headers = headers_for(i);
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let sent = Instant::now();
                let body = body_for(i);
                let reply = client.post(&url, &headers, body).await?;
                latencies.push(sent.elapsed());
                ensure!(
                    reply.status == 200,
                    "{url}: {} {}",
                    reply.status,
                    reply.text()
                );
            }
        });
    }
    let mut latencies = Vec::with_capacity(requests);
    while let Some(joined) = clients.join_next().await {
        latencies.extend(joined??);
    }
    Ok(Round {
        latencies,
        wall: started.elapsed(),
    })
}

/// The `q` quantile (0..1) of `sorted`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}
