//! One task per endpoint scrapes `/metrics` on a fixed interval.
//!
//! Tasks are independent, so one hanging model server only delays its own
//! next scrape (bounded by the timeout). [`run`] follows the desired state:
//! it starts tasks for new Ready endpoints and stops tasks for departed ones.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use reqwest::header::HeaderValue;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics_parse::{self, Engine};
use crate::model::DesiredState;
use crate::observations::Observations;
use crate::pace::Pace;

#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// The interval between two scrapes of one endpoint (fixed, or kept
    /// within a CPU budget).
    pub pace: Arc<Pace>,
    pub timeout: Duration,
    /// `http` or `https`.
    pub scheme: String,
    pub path: String,
    pub max_body_bytes: usize,
    pub unready_after_failures: u32,
    pub token_file: Option<PathBuf>,
    /// How often the token file is checked for a new token (rotation).
    pub token_reload: Duration,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// A bearer token read from a file and re-read when the file changes, as
/// projected service-account tokens rotate.
#[derive(Clone, Default)]
pub struct BearerToken {
    header: Arc<RwLock<Option<HeaderValue>>>,
}

impl BearerToken {
    /// Reads the file now (an unreadable file is an error at start-up) and
    /// keeps re-reading it every `reload` in the background.
    pub fn from_file(path: PathBuf, reload: Duration) -> anyhow::Result<Self> {
        let token = Self::default();
        let (header, mut stamp) = read_token(&path)?;
        *token.header.write().unwrap_or_else(|e| e.into_inner()) = Some(header);
        let shared = token.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(reload);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let now_stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if now_stamp == stamp {
                    continue;
                }
                match read_token(&path) {
                    Ok((header, new_stamp)) => {
                        *shared.header.write().unwrap_or_else(|e| e.into_inner()) = Some(header);
                        stamp = new_stamp;
                        tracing::info!(path = %path.display(), "metrics bearer token reloaded");
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %format!("{err:#}"), "keeping the previous metrics token")
                    }
                }
            }
        });
        Ok(token)
    }

    fn current(&self) -> Option<HeaderValue> {
        self.header
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read_token(path: &PathBuf) -> anyhow::Result<(HeaderValue, Option<SystemTime>)> {
    let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading metrics token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "metrics token file {} is empty",
        path.display()
    );
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .with_context(|| format!("token in {} is not a valid header value", path.display()))?;
    header.set_sensitive(true);
    Ok((header, stamp))
}

/// Builds the HTTP client all scrape tasks share (connections are kept alive
/// per endpoint, proxies from the environment are ignored).
pub fn http_client(config: &ScrapeConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tcp_nodelay(true)
        .connect_timeout(config.timeout)
        .pool_max_idle_per_host(2)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading CA file {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing CA file {}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if config.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().context("building the scrape HTTP client")
}

struct Task {
    engine: Engine,
    handle: JoinHandle<()>,
}

/// Keeps one scrape task per Ready endpoint of the latest desired state until
/// `desired` closes.
pub async fn run(
    mut desired: watch::Receiver<Arc<DesiredState>>,
    observations: Arc<Observations>,
    config: ScrapeConfig,
    token: Option<BearerToken>,
) -> anyhow::Result<()> {
    let client = http_client(&config)?;
    let config = Arc::new(config);
    let mut tasks: HashMap<String, Task> = HashMap::new();
    loop {
        let state = desired.borrow_and_update().clone();
        // Every listed endpoint keeps an observation (its age keeps growing
        // when it is not scraped); only Ready ones are scraped.
        observations.retain_addresses(
            state
                .pools
                .iter()
                .flat_map(|p| p.endpoints.iter().map(|e| e.address.as_str())),
        );
        let mut wanted: HashMap<&str, Engine> = HashMap::new();
        for endpoint in state.pools.iter().flat_map(|p| &p.endpoints) {
            if endpoint.pod_ready {
                wanted.insert(endpoint.address.as_str(), endpoint.engine);
            }
        }
        tasks.retain(|address, task| {
            let keep = wanted.get(address.as_str()) == Some(&task.engine);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (address, engine) in wanted {
            if tasks.contains_key(address) {
                continue;
            }
            let handle = tokio::spawn(scrape_loop(
                address.to_owned(),
                engine,
                client.clone(),
                config.clone(),
                token.clone(),
                observations.clone(),
            ));
            tasks.insert(address.to_owned(), Task { engine, handle });
        }
        if desired.changed().await.is_err() {
            break;
        }
    }
    for task in tasks.into_values() {
        task.handle.abort();
    }
    Ok(())
}

async fn scrape_loop(
    address: String,
    engine: Engine,
    client: reqwest::Client,
    config: Arc<ScrapeConfig>,
    token: Option<BearerToken>,
    observations: Arc<Observations>,
) {
    let url = match reqwest::Url::parse(&format!("{}://{}{}", config.scheme, address, config.path))
    {
        Ok(url) => url,
        Err(err) => {
            observations.record(
                &address,
                Err(format!("bad scrape URL: {err}")),
                Duration::ZERO,
                config.unready_after_failures,
            );
            return;
        }
    };
    // Spread endpoints over the interval so scrapes (and snapshot changes)
    // arrive evenly instead of in one burst per interval.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    address.hash(&mut hasher);
    let interval_ns = config.pace.base().as_nanos().max(1) as u64;
    let offset = Duration::from_nanos(hasher.finish() % interval_ns);
    let mut next = tokio::time::Instant::now() + offset;
    let _counted = config.pace.task();
    let mut body = Vec::with_capacity(16 * 1024);
    loop {
        tokio::time::sleep_until(next).await;
        // The interval in force now; a late tick is not made up with a burst.
        next = (next + config.pace.interval()).max(tokio::time::Instant::now());
        let started = Instant::now();
        let outcome = scrape_once(&client, &url, engine, &config, token.as_ref(), &mut body).await;
        if let Err(err) = &outcome {
            tracing::debug!(%address, error = %err, "scrape failed");
        }
        observations.record(
            &address,
            outcome,
            started.elapsed(),
            config.unready_after_failures,
        );
        config.pace.scraped();
    }
}

/// One GET of `/metrics`, bounded in time and size, parsed for `engine`.
pub async fn scrape_once(
    client: &reqwest::Client,
    url: &reqwest::Url,
    engine: Engine,
    config: &ScrapeConfig,
    token: Option<&BearerToken>,
    body: &mut Vec<u8>,
) -> Result<metrics_parse::EngineMetrics, String> {
    let fetch = async {
        let mut request = client.get(url.clone());
        if let Some(header) = token.and_then(BearerToken::current) {
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        let mut response = request.send().await.map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > config.max_body_bytes as u64)
        {
            return Err(format!("body larger than {} bytes", config.max_body_bytes));
        }
        body.clear();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > config.max_body_bytes {
                return Err(format!("body larger than {} bytes", config.max_body_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(config.timeout, fetch).await {
        Err(_) => return Err(format!("timed out after {:?}", config.timeout)),
        Ok(Err(err)) => return Err(err),
        Ok(Ok(())) => {}
    }
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
    metrics_parse::parse(engine, text).map_err(|e| e.to_string())
}

/// reqwest's Display hides the cause ("error sending request"); keep the chain short but useful.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
