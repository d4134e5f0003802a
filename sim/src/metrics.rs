//! vLLM's `/metrics` for one simulated pod: the same family names, help texts,
//! label sets, histogram buckets and number formatting as vLLM V1 exports with
//! `prometheus_client` (see ../shared/reference/vllm-metrics-sample.txt).

use std::fmt::Write;

use crate::engine::{EngineStats, FinishReason};

/// vLLM's time-to-first-token buckets (seconds).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's inter-token latency buckets (seconds).
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's end-to-end latency buckets (seconds).
pub const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A cumulative Prometheus histogram with fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative count per bucket; the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// Request-level metrics the server records from engine events.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub e2e: Histogram,
    /// Finished requests by reason, in [`FinishReason`] order stop, length, abort.
    pub finished: [u64; 3],
    /// `lora_requests_info` series ever exported: (running, waiting, last unix time).
    /// vLLM never removes an old label combination; we keep the newest
    /// [`MAX_LORA_SERIES`].
    lora_series: Vec<(String, String, f64)>,
}

/// Bound on lingering `lora_requests_info` series.
pub const MAX_LORA_SERIES: usize = 64;

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            ttft: Histogram::new(TTFT_BUCKETS),
            inter_token: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            finished: [0; 3],
            lora_series: Vec::new(),
        }
    }
}

impl RequestMetrics {
    pub fn record_finished(&mut self, reason: FinishReason) {
        let i = match reason {
            FinishReason::Stop => 0,
            FinishReason::Length => 1,
            FinishReason::Abort => 2,
        };
        self.finished[i] += 1;
    }

    /// Marks the current adapter combination as seen at `unix_time` (vLLM
    /// sets the gauge of the current label set to the time of each update).
    pub fn touch_lora_series(&mut self, stats: &EngineStats, unix_time: f64) {
        let running = stats.running_adapters.join(",");
        let waiting = stats.waiting_adapters.join(",");
        if let Some(s) = self
            .lora_series
            .iter_mut()
            .find(|(r, w, _)| *r == running && *w == waiting)
        {
            s.2 = s.2.max(unix_time);
            return;
        }
        if self.lora_series.len() >= MAX_LORA_SERIES {
            let oldest = self
                .lora_series
                .iter()
                .enumerate()
                .min_by(|a, b| a.1 .2.total_cmp(&b.1 .2))
                .map(|(i, _)| i)
                .expect("non-empty");
            self.lora_series.swap_remove(oldest);
        }
        self.lora_series.push((running, waiting, unix_time));
    }
}

/// What a `/metrics` page shows besides the engine's stats.
pub struct Exposition<'a> {
    pub model_name: &'a str,
    pub legacy_kv_metric: bool,
    pub lora_enabled: bool,
    pub enable_prefix_caching: bool,
}

/// Renders the Prometheus text exposition (format 0.0.4).
pub fn render(view: &Exposition<'_>, stats: &EngineStats, m: &RequestMetrics) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let base = format!(
        "engine=\"0\",model_name=\"{}\"",
        escape_label(view.model_name)
    );
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{{base}}} {}", fmt_value(v));
    };
    gauge(
        &mut out,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        "gauge",
        f64::from(stats.running),
    );
    gauge(
        &mut out,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        "gauge",
        f64::from(stats.waiting),
    );
    if view.legacy_kv_metric {
        gauge(
            &mut out,
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage.",
            "gauge",
            stats.kv_cache_usage,
        );
    } else {
        gauge(
            &mut out,
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            "gauge",
            stats.kv_cache_usage,
        );
    }
    gauge(
        &mut out,
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        "counter",
        stats.prefix_queries_tokens as f64,
    );
    gauge(
        &mut out,
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        "counter",
        stats.prefix_hits_tokens as f64,
    );
    gauge(
        &mut out,
        "vllm:num_preemptions_total",
        "Cumulative number of preemption from the engine.",
        "counter",
        stats.preemptions as f64,
    );
    gauge(
        &mut out,
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        "counter",
        stats.prompt_tokens_total as f64,
    );
    gauge(
        &mut out,
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        "counter",
        stats.generation_tokens_total as f64,
    );

    let _ = writeln!(
        out,
        "# HELP vllm:request_success_total Count of successfully processed requests."
    );
    let _ = writeln!(out, "# TYPE vllm:request_success_total counter");
    for (reason, n) in ["stop", "length", "abort"].iter().zip(m.finished) {
        let _ = writeln!(
            out,
            "vllm:request_success_total{{engine=\"0\",finished_reason=\"{reason}\",model_name=\"{}\"}} {}",
            escape_label(view.model_name),
            fmt_value(n as f64)
        );
    }

    histogram(
        &mut out,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        view.model_name,
        &m.ttft,
    );
    histogram(
        &mut out,
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        view.model_name,
        &m.inter_token,
    );
    histogram(
        &mut out,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        view.model_name,
        &m.e2e,
    );

    if view.lora_enabled {
        let _ = writeln!(
            out,
            "# HELP vllm:lora_requests_info Running stats on lora requests."
        );
        let _ = writeln!(out, "# TYPE vllm:lora_requests_info gauge");
        for (running, waiting, ts) in &m.lora_series {
            let _ = writeln!(
                out,
                "vllm:lora_requests_info{{max_lora=\"{}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"{}\"}} {}",
                stats.max_loras,
                escape_label(running),
                escape_label(waiting),
                fmt_value(*ts)
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig"
    );
    let _ = writeln!(out, "# TYPE vllm:cache_config_info gauge");
    let _ = writeln!(
        out,
        "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",cpu_offload_gb=\"0\",enable_prefix_caching=\"{}\",engine=\"0\",gpu_memory_utilization=\"0.9\",num_cpu_blocks=\"None\",num_gpu_blocks=\"{}\",prefix_caching_hash_algo=\"sha256\",sliding_window=\"None\"}} 1.0",
        stats.block_size,
        if view.enable_prefix_caching { "True" } else { "False" },
        stats.num_gpu_blocks
    );
    out
}

fn histogram(out: &mut String, name: &str, help: &str, model: &str, h: &Histogram) {
    let model = escape_label(model);
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(
            out,
            "{name}_bucket{{engine=\"0\",le=\"{}\",model_name=\"{model}\"}} {}",
            fmt_value(*bound),
            fmt_value(cumulative as f64)
        );
    }
    cumulative += h.counts[h.bounds.len()];
    let _ = writeln!(
        out,
        "{name}_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"{model}\"}} {}",
        fmt_value(cumulative as f64)
    );
    let _ = writeln!(
        out,
        "{name}_count{{engine=\"0\",model_name=\"{model}\"}} {}",
        fmt_value(h.count as f64)
    );
    let _ = writeln!(
        out,
        "{name}_sum{{engine=\"0\",model_name=\"{model}\"}} {}",
        fmt_value(h.sum)
    );
}

/// `prometheus_client`'s `floatToGoString`, which vLLM's exposition uses:
/// Python's `repr` (`23.0`, `0.4172`), but positive values with more than six
/// integer digits in Go's exponent form (`1.843e+06`, `1.7557102131e+09`).
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = format!("{v:?}");
    match s.find('.') {
        Some(dot) if v > 0.0 && dot > 6 => {
            let mantissa = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => s,
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::new(TTFT_BUCKETS);
        h.observe(0.001);
        h.observe(0.0011);
        h.observe(5000.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[TTFT_BUCKETS.len()], 1);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn values_print_like_prometheus_client() {
        assert_eq!(fmt_value(23.0), "23.0");
        assert_eq!(fmt_value(0.4172), "0.4172");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(27500.0), "27500.0");
        assert_eq!(fmt_value(1_843_000.0), "1.843e+06");
        assert_eq!(fmt_value(1_755_710_213.1), "1.7557102131e+09");
        assert_eq!(fmt_value(1_000_000.0), "1e+06");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
