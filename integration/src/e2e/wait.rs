//! Bounded polling: every wait in the e2e layer has a deadline and says what it
//! was waiting for when it gives up.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Polls `check` every `interval` until it returns `Ok(true)` or `timeout`
/// passes; the error names `what` and the last failure seen.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let interval = Duration::from_millis(50);
    loop {
        let last = match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => String::from("condition not met"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}
