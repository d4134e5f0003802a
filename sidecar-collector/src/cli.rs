//! Command-line interface. Every flag also reads an environment variable
//! (`LLMGW_COLLECTOR_*`), which is how a Deployment usually configures it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// A directory of YAML manifests (pools, models, objectives, rewrites, pods).
    File,
    /// The Kubernetes API (in-cluster config or KUBECONFIG).
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    Http,
    Https,
}

/// Discover inference pools and their model-server pods, scrape each pod's
/// /metrics, and serve the pool state to gateway filters over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "sidecar-collector", version, about, long_about = None,
    after_help = "Examples:\n  sidecar-collector --source file --dir ./manifests\n  sidecar-collector --source kubernetes --namespace inference --metrics-token-file /var/run/secrets/kubernetes.io/serviceaccount/token\n\nLog verbosity: RUST_LOG (default info), e.g. RUST_LOG=sidecar_collector=debug.")]
pub struct Cli {
    /// Where pools and pods come from.
    #[arg(
        long,
        value_enum,
        default_value = "file",
        env = "LLMGW_COLLECTOR_SOURCE"
    )]
    pub source: Source,

    /// Manifest directory (file source); read recursively, changes apply live.
    #[arg(long, required_if_eq("source", "file"), env = "LLMGW_COLLECTOR_DIR")]
    pub dir: Option<PathBuf>,

    /// Watch only this namespace (kubernetes source); default: all namespaces.
    #[arg(long, env = "LLMGW_COLLECTOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// gRPC (PoolState) listen address.
    #[arg(
        long,
        default_value = "127.0.0.1:9002",
        env = "LLMGW_COLLECTOR_GRPC_LISTEN"
    )]
    pub grpc_listen: SocketAddr,

    /// HTTP listen address for /metrics, /healthz, /readyz.
    #[arg(
        long,
        default_value = "127.0.0.1:9090",
        env = "LLMGW_COLLECTOR_HTTP_LISTEN"
    )]
    pub http_listen: SocketAddr,

    /// Time between two scrapes of one endpoint.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, env = "LLMGW_COLLECTOR_SCRAPE_INTERVAL")]
    pub scrape_interval: Duration,

    /// Keep the collector's CPU use within this many cores by lengthening the
    /// scrape interval (never below --scrape-interval) when scraping every
    /// endpoint that often would need more, or when scrapes fall behind the
    /// interval (the machine gives less); re-checked every second. Unset: the
    /// interval stays fixed, whatever it costs.
    #[arg(long, value_parser = parse_cpu_budget, env = "LLMGW_COLLECTOR_SCRAPE_CPU_BUDGET")]
    pub scrape_cpu_budget: Option<f64>,

    /// Give up on a scrape after this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration, env = "LLMGW_COLLECTOR_SCRAPE_TIMEOUT")]
    pub scrape_timeout: Duration,

    /// Path scraped on every endpoint.
    #[arg(long, default_value = "/metrics", env = "LLMGW_COLLECTOR_METRICS_PATH")]
    pub metrics_path: String,

    /// Scheme used to scrape endpoints.
    #[arg(
        long,
        value_enum,
        default_value = "http",
        env = "LLMGW_COLLECTOR_METRICS_SCHEME"
    )]
    pub metrics_scheme: Scheme,

    /// Send `Authorization: Bearer <file content>`; the file is re-read when it changes.
    #[arg(long, env = "LLMGW_COLLECTOR_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Extra PEM CA bundle trusted for https scrapes.
    #[arg(long, env = "LLMGW_COLLECTOR_METRICS_CA_FILE")]
    pub metrics_ca_file: Option<PathBuf>,

    /// Do not verify model servers' TLS certificates.
    #[arg(long, env = "LLMGW_COLLECTOR_METRICS_INSECURE_SKIP_VERIFY")]
    pub metrics_insecure_skip_verify: bool,

    /// Largest /metrics body accepted, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024, env = "LLMGW_COLLECTOR_MAX_METRICS_BYTES")]
    pub max_metrics_bytes: usize,

    /// An endpoint is marked not ready after this many failed scrapes in a row.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), env = "LLMGW_COLLECTOR_UNREADY_AFTER_FAILURES")]
    pub unready_after_failures: u32,

    /// Least time between two published snapshots (server default for Watch).
    #[arg(long, default_value = "25ms", value_parser = parse_duration, env = "LLMGW_COLLECTOR_PUBLISH_INTERVAL")]
    pub publish_interval: Duration,

    /// Publish at least this often while scrapes succeed, so metric ages stay fresh.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, env = "LLMGW_COLLECTOR_REFRESH_INTERVAL")]
    pub refresh_interval: Duration,

    /// How often the manifest directory is checked for changes (file source).
    #[arg(long, default_value = "250ms", value_parser = parse_duration, env = "LLMGW_COLLECTOR_POLL_INTERVAL")]
    pub poll_interval: Duration,

    /// Do not learn prefix placements: ignore gateways' ReportPrefixes, and
    /// let filters own prefix groups by rendezvous hashing alone.
    #[arg(long, env = "LLMGW_COLLECTOR_NO_PREFIX_PLACEMENT")]
    pub no_prefix_placement: bool,
    /// A placed prefix group no gateway has reported for this long is forgotten.
    #[arg(long, default_value = "120s", value_parser = parse_duration, env = "LLMGW_COLLECTOR_PLACEMENT_TTL")]
    pub placement_ttl: Duration,
    /// Prefix groups placed per pool at most (the one seen longest ago goes).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65536), env = "LLMGW_COLLECTOR_PLACEMENT_MAX_KEYS")]
    pub placement_max_keys: u32,
    /// Another collector replica (`host:port` of its gRPC listener) to forward
    /// gateway prefix reports to, so replicas learn the same placements.
    /// Repeatable, or comma-separated in the environment variable.
    #[arg(
        long = "placement-peer",
        value_delimiter = ',',
        env = "LLMGW_COLLECTOR_PLACEMENT_PEERS"
    )]
    pub placement_peers: Vec<String>,
    /// Identifies this replica in snapshots; default: hostname-pid.
    #[arg(long, env = "LLMGW_COLLECTOR_ID")]
    pub collector_id: Option<String>,

    /// Log line format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "LLMGW_COLLECTOR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// A CPU budget in cores: a positive number (`0.5`, `2`).
fn parse_cpu_budget(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(cores) if cores.is_finite() && cores > 0.0 => Ok(cores),
        _ => Err(format!("{text:?} is not a number of cores like 0.5 or 2")),
    }
}

/// Parses `250ms`, `1s`, `2m`, `1.5s` (a bare number means milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 50ms, 1s or 2m"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    let duration = Duration::from_secs_f64(value * scale);
    if duration.is_zero() {
        return Err(format!("{text:?} must be greater than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_millis(20));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn cli_is_consistent_and_file_mode_needs_a_dir() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["sidecar-collector", "--source", "file"]).is_err());
        let cli = Cli::try_parse_from([
            "sidecar-collector",
            "--dir",
            "/tmp/x",
            "--scrape-interval",
            "20ms",
        ])
        .unwrap();
        assert_eq!(cli.scrape_interval, Duration::from_millis(20));
        assert_eq!(cli.scrape_cpu_budget, None);
        let budgeted = Cli::try_parse_from([
            "sidecar-collector",
            "--dir",
            "/tmp/x",
            "--scrape-cpu-budget",
            "0.5",
        ])
        .unwrap();
        assert_eq!(budgeted.scrape_cpu_budget, Some(0.5));
        for bad in ["0", "-1", "lots", "NaN"] {
            assert!(Cli::try_parse_from([
                "sidecar-collector",
                "--dir",
                "/tmp/x",
                "--scrape-cpu-budget",
                bad
            ])
            .is_err());
        }
        assert_eq!(cli.source, Source::File);
        assert!(Cli::try_parse_from(["sidecar-collector", "--source", "kubernetes"]).is_ok());
    }
}
