//! Pod configuration from the command line and from a pods file. Command-line
//! values are defaults for every pod; a pods file's per-pod fields override them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::engine::{EngineConfig, PerfProfile};
use crate::faults::{Faults, FaultsPatch};

/// Model served when none is given.
pub const DEFAULT_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// `vllm-sim`: serve one or more simulated vLLM pods.
#[derive(Debug, Clone, Parser)]
#[command(name = "vllm-sim", version, about = "A vLLM-compatible model-server simulator", long_about = None)]
pub struct Cli {
    /// A pod to serve: NAME=IP:PORT (repeatable).
    #[arg(long = "pod", value_name = "NAME=ADDR")]
    pub pods: Vec<String>,
    /// YAML file listing pods (`pods: [{name, listen, ...}]`); see docs/SIMULATOR.md.
    #[arg(long, value_name = "FILE")]
    pub pods_file: Option<PathBuf>,
    #[command(flatten)]
    pub defaults: PodFlags,
}

/// Per-pod settings; on the command line they apply to every pod.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PodFlags {
    /// Base model name.
    #[arg(long)]
    pub model: Option<String>,
    /// Name the API and metrics use for the base model (default: --model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// LoRA adapters available at start: NAME or NAME=PATH.
    #[arg(long, num_args = 1.., value_name = "NAME[=PATH]")]
    pub lora_modules: Option<Vec<String>>,
    /// Accept LoRA adapters (implied by --lora-modules); adds `lora_requests_info`.
    #[arg(long)]
    pub enable_lora: bool,
    /// Distinct adapters per batch (GPU LoRA slots).
    #[arg(long)]
    pub max_loras: Option<u32>,
    /// Performance profile: a built-in name or a YAML/JSON file of PerfProfile fields.
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// Wall-clock seconds per simulated second (2 = everything twice as slow; 0 = no waiting).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Seed of generated tokens and injected-error draws.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Export `vllm:gpu_cache_usage_perc` (vLLM < 0.12) instead of `vllm:kv_cache_usage_perc`.
    #[arg(long)]
    pub legacy_kv_metric: bool,
    #[arg(long)]
    pub max_model_len: Option<u32>,
    #[arg(long)]
    pub num_gpu_blocks: Option<u32>,
    #[arg(long)]
    pub max_num_seqs: Option<u32>,
    #[arg(long)]
    pub max_num_batched_tokens: Option<u32>,
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Turn prefix caching off (vLLM: --no-enable-prefix-caching).
    #[arg(long)]
    pub no_enable_prefix_caching: bool,
    /// Cost of loading an adapter into a GPU slot, in milliseconds.
    #[arg(long)]
    pub lora_load_ms: Option<f64>,
    /// Per-token chance of end-of-sequence for requests without ignore_eos.
    #[arg(long)]
    pub eos_probability: Option<f64>,
    /// Fault: share of inference requests answered with an error.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Fault: status codes for injected errors, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub error_codes: Option<Vec<u16>>,
    /// Fault: delay before each inference request is handled.
    #[arg(long)]
    pub extra_latency_ms: Option<u64>,
    /// Fault: never answer inference requests.
    #[arg(long)]
    pub hang: bool,
    /// Fault: delay before /metrics answers.
    #[arg(long)]
    pub metrics_delay_ms: Option<u64>,
    /// Fault: /metrics answers 500.
    #[arg(long)]
    pub metrics_fail: bool,
    /// Fault: /health answers 503.
    #[arg(long)]
    pub health_fail: bool,
    /// Fault: start with the engine paused (requests queue up).
    #[arg(long)]
    pub pause_engine: bool,
}

/// One pod as written in a pods file. Every field but `name` and `listen` is
/// optional and defaults to the command line's value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    pub listen: String,
    pub model: Option<String>,
    pub served_model_name: Option<String>,
    pub lora_modules: Option<Vec<String>>,
    pub enable_lora: Option<bool>,
    pub max_loras: Option<u32>,
    pub profile: Option<String>,
    pub time_scale: Option<f64>,
    pub seed: Option<u64>,
    pub legacy_kv_metric: Option<bool>,
    pub max_model_len: Option<u32>,
    pub num_gpu_blocks: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub max_num_batched_tokens: Option<u32>,
    pub block_size: Option<u32>,
    pub enable_prefix_caching: Option<bool>,
    pub lora_load_ms: Option<f64>,
    pub eos_probability: Option<f64>,
    pub faults: Option<FaultsPatch>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PodsFile {
    Wrapped { pods: Vec<PodSpec> },
    List(Vec<PodSpec>),
}

/// A LoRA adapter available at start.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    pub name: String,
    /// Shown as the adapter's `root` in `/v1/models`.
    pub path: String,
}

/// Everything needed to run one simulated pod.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// Base model.
    pub model: String,
    /// Public name of the base model (API and metrics).
    pub served_model_name: String,
    pub lora_modules: Vec<LoraModule>,
    pub enable_lora: bool,
    pub engine: EngineConfig,
    pub seed: u64,
    pub time_scale: f64,
    pub legacy_kv_metric: bool,
    pub faults: Faults,
}

impl PodConfig {
    /// A pod with default settings (tests and embedding).
    pub fn new(name: &str, listen: SocketAddr) -> Self {
        PodConfig {
            name: name.to_string(),
            listen,
            model: DEFAULT_MODEL.to_string(),
            served_model_name: DEFAULT_MODEL.to_string(),
            lora_modules: Vec::new(),
            enable_lora: false,
            engine: EngineConfig::default(),
            seed: 0,
            time_scale: 1.0,
            legacy_kv_metric: false,
            faults: Faults::default(),
        }
    }
}

/// Resolves the command line (and pods file) into pod configurations.
pub fn pods_from_cli(cli: &Cli) -> Result<Vec<PodConfig>, String> {
    let mut specs = Vec::new();
    for pod in &cli.pods {
        let (name, addr) = pod
            .split_once('=')
            .ok_or_else(|| format!("--pod {pod:?}: expected NAME=IP:PORT"))?;
        specs.push(PodSpec {
            name: name.to_string(),
            listen: addr.to_string(),
            ..PodSpec::default()
        });
    }
    if let Some(path) = &cli.pods_file {
        specs.extend(read_pods_file(path)?);
    }
    if specs.is_empty() {
        return Err("no pods given: use --pod NAME=IP:PORT or --pods-file FILE".into());
    }
    let base_dir = cli
        .pods_file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let mut pods = Vec::with_capacity(specs.len());
    for spec in &specs {
        let pod = resolve(spec, &cli.defaults, base_dir.as_deref())
            .map_err(|e| format!("pod {:?}: {e}", spec.name))?;
        pods.push(pod);
    }
    for (i, a) in pods.iter().enumerate() {
        for b in &pods[i + 1..] {
            if a.name == b.name {
                return Err(format!("pod name {:?} is used twice", a.name));
            }
            if a.listen == b.listen && a.listen.port() != 0 {
                return Err(format!(
                    "pods {:?} and {:?} both listen on {}",
                    a.name, b.name, a.listen
                ));
            }
        }
    }
    Ok(pods)
}

/// Reads and parses a pods file.
pub fn read_pods_file(path: &Path) -> Result<Vec<PodSpec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pods file {}: {e}", path.display()))?;
    parse_pods_file(&text).map_err(|e| format!("pods file {}: {e}", path.display()))
}

/// Parses a pods file: `pods: [...]` or a bare list.
pub fn parse_pods_file(text: &str) -> Result<Vec<PodSpec>, String> {
    match serde_yaml::from_str::<PodsFile>(text) {
        Ok(PodsFile::Wrapped { pods }) | Ok(PodsFile::List(pods)) => Ok(pods),
        Err(_) => {
            // The untagged error says little; re-parse the usual shape for a precise message.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            #[allow(dead_code)]
            struct Strict {
                pods: Vec<PodSpec>,
            }
            match serde_yaml::from_str::<Strict>(text) {
                Ok(_) => Err("invalid pods file".into()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

fn resolve(spec: &PodSpec, cli: &PodFlags, base_dir: Option<&Path>) -> Result<PodConfig, String> {
    if spec.name.is_empty() {
        return Err("empty pod name".into());
    }
    if spec.name.chars().any(|c| c.is_control() || c == ',') {
        return Err("pod name must not contain control characters or commas".into());
    }
    let listen: SocketAddr = spec
        .listen
        .parse()
        .map_err(|_| format!("listen address {:?} is not IP:PORT", spec.listen))?;
    let model = spec
        .model
        .clone()
        .or_else(|| cli.model.clone())
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    if model.is_empty() {
        return Err("empty model name".into());
    }
    let served_model_name = spec
        .served_model_name
        .clone()
        .or_else(|| cli.served_model_name.clone())
        .unwrap_or_else(|| model.clone());
    let lora_modules = spec
        .lora_modules
        .clone()
        .or_else(|| cli.lora_modules.clone())
        .unwrap_or_default()
        .iter()
        .map(|m| parse_lora_module(m))
        .collect::<Result<Vec<_>, _>>()?;
    let enable_lora = spec.enable_lora.unwrap_or(cli.enable_lora) || !lora_modules.is_empty();

    let mut engine = EngineConfig::default();
    if let Some(v) = spec.max_loras.or(cli.max_loras) {
        engine.max_loras = v;
    }
    if let Some(v) = spec.max_model_len.or(cli.max_model_len) {
        engine.max_model_len = v;
    }
    if let Some(v) = spec.num_gpu_blocks.or(cli.num_gpu_blocks) {
        engine.num_gpu_blocks = v;
    }
    if let Some(v) = spec.max_num_seqs.or(cli.max_num_seqs) {
        engine.max_num_seqs = v;
    }
    if let Some(v) = spec.max_num_batched_tokens.or(cli.max_num_batched_tokens) {
        engine.max_num_batched_tokens = v;
    }
    if let Some(v) = spec.block_size.or(cli.block_size) {
        engine.block_size = v;
    }
    engine.enable_prefix_caching = spec
        .enable_prefix_caching
        .unwrap_or(!cli.no_enable_prefix_caching);
    if let Some(ms) = spec.lora_load_ms.or(cli.lora_load_ms) {
        engine.lora_load_s = ms / 1000.0;
    }
    if let Some(p) = spec.eos_probability.or(cli.eos_probability) {
        engine.eos_probability = p;
    }
    if let Some(profile) = spec.profile.as_deref().or(cli.profile.as_deref()) {
        engine.profile = load_profile(profile, base_dir)?;
    }
    if enable_lora && engine.max_loras == 0 {
        return Err("LoRA adapters need --max-loras >= 1".into());
    }
    if lora_modules.iter().any(|m| m.name == served_model_name) {
        return Err("an adapter may not have the base model's name".into());
    }
    engine.validate()?;

    let time_scale = spec.time_scale.or(cli.time_scale).unwrap_or(1.0);
    if !time_scale.is_finite() || !(0.0..=1000.0).contains(&time_scale) {
        return Err(format!(
            "time scale must be within [0, 1000], got {time_scale}"
        ));
    }

    let mut faults = Faults::default();
    let cli_faults = FaultsPatch {
        error_rate: cli.error_rate,
        error_codes: cli.error_codes.clone(),
        extra_latency_ms: cli.extra_latency_ms,
        hang: cli.hang.then_some(true),
        metrics_delay_ms: cli.metrics_delay_ms,
        metrics_fail: cli.metrics_fail.then_some(true),
        health_fail: cli.health_fail.then_some(true),
        pause_engine: cli.pause_engine.then_some(true),
    };
    cli_faults.apply(&mut faults)?;
    if let Some(patch) = &spec.faults {
        patch.apply(&mut faults)?;
    }

    Ok(PodConfig {
        name: spec.name.clone(),
        listen,
        model,
        served_model_name,
        lora_modules,
        enable_lora,
        engine,
        seed: spec.seed.or(cli.seed).unwrap_or(0),
        time_scale,
        legacy_kv_metric: spec.legacy_kv_metric.unwrap_or(cli.legacy_kv_metric),
        faults,
    })
}

/// `NAME` or `NAME=PATH` (vLLM's `--lora-modules` syntax).
pub fn parse_lora_module(s: &str) -> Result<LoraModule, String> {
    let (name, path) = match s.split_once('=') {
        Some((n, p)) => (n, p),
        None => (s, s),
    };
    if name.is_empty() || name.contains(',') || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid LoRA module {s:?}: expected NAME or NAME=PATH"
        ));
    }
    Ok(LoraModule {
        name: name.to_string(),
        path: path.to_string(),
    })
}

/// A built-in profile by name, or a YAML/JSON file (relative paths are tried
/// against the pods file's directory, then the working directory).
pub fn load_profile(name_or_file: &str, base_dir: Option<&Path>) -> Result<PerfProfile, String> {
    if let Some(p) = PerfProfile::builtin(name_or_file) {
        return Ok(p);
    }
    let mut path = PathBuf::from(name_or_file);
    if path.is_relative() {
        if let Some(dir) = base_dir {
            let candidate = dir.join(&path);
            if candidate.exists() {
                path = candidate;
            }
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "profile {name_or_file:?} is neither a built-in ({}) nor a readable file: {e}",
            PerfProfile::BUILTIN_NAMES.join(", ")
        )
    })?;
    let profile: PerfProfile =
        serde_yaml::from_str(&text).map_err(|e| format!("profile file {}: {e}", path.display()))?;
    profile.validate()?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["vllm-sim"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    #[test]
    fn command_line_pods_share_defaults() {
        let pods = pods_from_cli(&cli(&[
            "--pod",
            "a=127.0.0.1:18001",
            "--pod",
            "b=127.0.0.2:18001",
            "--lora-modules",
            "x",
            "y=/p/y",
            "--max-loras",
            "2",
            "--time-scale",
            "3",
        ]))
        .unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[1].name, "b");
        assert_eq!(
            pods[0].lora_modules[1],
            LoraModule {
                name: "y".into(),
                path: "/p/y".into()
            }
        );
        assert!(pods[0].enable_lora);
        assert_eq!(pods[1].engine.max_loras, 2);
        assert_eq!(pods[1].time_scale, 3.0);
    }

    #[test]
    fn pods_file_overrides_command_line() {
        let specs = parse_pods_file(
            "pods:\n  - name: a\n    listen: 127.0.0.1:1\n    max_loras: 4\n    faults: {hang: true}\n",
        )
        .unwrap();
        let pod = resolve(&specs[0], &cli(&["--max-loras", "2"]).defaults, None).unwrap();
        assert_eq!(pod.engine.max_loras, 4);
        assert!(pod.faults.hang);
        assert!(
            parse_pods_file("pods:\n  - name: a\n    listen: x\n    bogus: 1\n")
                .unwrap_err()
                .contains("bogus")
        );
    }

    #[test]
    fn bad_input_is_explained() {
        assert!(pods_from_cli(&cli(&[])).unwrap_err().contains("no pods"));
        assert!(pods_from_cli(&cli(&["--pod", "a"]))
            .unwrap_err()
            .contains("NAME=IP:PORT"));
        assert!(pods_from_cli(&cli(&["--pod", "a=nowhere"]))
            .unwrap_err()
            .contains("not IP:PORT"));
        assert!(
            pods_from_cli(&cli(&["--pod", "a=127.0.0.1:1", "--profile", "nope"]))
                .unwrap_err()
                .contains("built-in")
        );
        assert!(
            pods_from_cli(&cli(&["--pod", "a=127.0.0.1:1", "--pod", "a=127.0.0.1:2"]))
                .unwrap_err()
                .contains("twice")
        );
    }
}
