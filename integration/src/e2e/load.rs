//! Sending many requests with bounded concurrency, and the checks the tests
//! share on what comes back.

use std::future::Future;
use std::sync::Arc;

use anyhow::{ensure, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::http::Reply;

/// Runs `make(i)` for `i in 0..count`, at most `concurrency` at a time, and
/// returns the results in index order.
pub async fn run_concurrently<F, Fut, T>(count: usize, concurrency: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let work = make(i);
        tasks.spawn(async move {
            let result = work.await;
            drop(permit);
            (i, result)
        });
    }
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("request task panicked");
        results[i] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.expect("every task reports"))
        .collect()
}

/// Checks that a reply is an OpenAI-shaped error with `status`:
/// `{"error":{"message":"…","type":"…","param":null,"code":status}}`.
pub fn ensure_openai_error(reply: &Reply, status: u16) -> Result<()> {
    ensure!(
        reply.status.as_u16() == status,
        "expected status {status}, got {} with body {}",
        reply.status,
        reply.text()
    );
    let body = reply.json()?;
    let error = &body["error"];
    ensure!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message missing or empty: {body}"
    );
    ensure!(error["type"].is_string(), "error.type missing: {body}");
    ensure!(
        error["code"].as_u64() == Some(u64::from(status)),
        "error.code is not {status}: {body}"
    );
    ensure!(
        error.get("param").is_some(),
        "error.param missing (null expected): {body}"
    );
    Ok(())
}

/// The share (0..1) of `part` in `total`.
pub fn share(part: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}
