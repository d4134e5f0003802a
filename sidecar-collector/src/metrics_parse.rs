//! Prometheus text exposition → the handful of numbers a router needs.
//!
//! This runs for every endpoint on every scrape (256 endpoints × 20 Hz in the
//! benchmark), so it is a single pass over the body that allocates only for the
//! winning LoRA series. Every line is still validated: a body with one malformed
//! line fails the whole scrape, because half-parsed numbers are worse than none.

use std::borrow::Cow;
use std::fmt;

/// Which model server produced the text; chosen by the pod label
/// `inference.networking.k8s.io/engine-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
    TrtLlm,
}

impl Engine {
    /// Reads the engine-type label value; `None` for values we cannot scrape.
    pub fn from_label(value: &str) -> Option<Engine> {
        match value.trim().to_ascii_lowercase().as_str() {
            "vllm" => Some(Engine::Vllm),
            "sglang" => Some(Engine::Sglang),
            "trtllm" | "trt-llm" | "tensorrt-llm" | "tensorrt_llm" => Some(Engine::TrtLlm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::TrtLlm => "trtllm",
        }
    }
}

/// What one good scrape tells about an endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineMetrics {
    pub waiting: u32,
    pub running: u32,
    /// 0..1.
    pub kv_cache_usage: f32,
    pub running_adapters: Vec<String>,
    pub waiting_adapters: Vec<String>,
    pub max_loras: u32,
    pub block_size: u32,
    pub num_gpu_blocks: u32,
}

/// Why a body could not be turned into [`EngineMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Malformed { line: usize, reason: &'static str },
    Missing(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed { line, reason } => {
                write!(f, "malformed metrics text at line {line}: {reason}")
            }
            ParseError::Missing(name) => write!(f, "required metric {name} is missing"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Metric names per engine. vLLM renamed its KV gauge in v0.12; both count.
struct Names {
    waiting: &'static [&'static str],
    running: &'static [&'static str],
    kv: &'static [&'static str],
    lora_info: Option<&'static str>,
    cache_info: Option<(&'static str, &'static str, &'static str)>,
}

const VLLM: Names = Names {
    waiting: &["vllm:num_requests_waiting"],
    running: &["vllm:num_requests_running"],
    kv: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    lora_info: Some("vllm:lora_requests_info"),
    cache_info: Some(("vllm:cache_config_info", "block_size", "num_gpu_blocks")),
};
const SGLANG: Names = Names {
    waiting: &["sglang:num_queue_reqs"],
    running: &["sglang:num_running_reqs"],
    kv: &["sglang:token_usage"],
    lora_info: None,
    cache_info: Some(("sglang:cache_config_info", "page_size", "num_pages")),
};
const TRTLLM: Names = Names {
    waiting: &["trtllm_num_requests_waiting"],
    running: &["trtllm_num_requests_running"],
    kv: &["trtllm_kv_cache_utilization"],
    lora_info: None,
    cache_info: None,
};

/// Sums gauges across series (one series per data-parallel engine) and
/// averages the KV usage, which is a ratio.
#[derive(Default)]
struct Accumulator {
    waiting: Option<f64>,
    running: Option<f64>,
    kv_sum: f64,
    kv_series: u32,
    lora_best: Option<(f64, LoraSeries)>,
    block_size: u32,
    num_gpu_blocks: u32,
}

#[derive(Default)]
struct LoraSeries {
    max_lora: u32,
    running: String,
    waiting: String,
}

/// Parses a whole `/metrics` body for `engine`.
pub fn parse(engine: Engine, body: &str) -> Result<EngineMetrics, ParseError> {
    let names = match engine {
        Engine::Vllm => &VLLM,
        Engine::Sglang => &SGLANG,
        Engine::TrtLlm => &TRTLLM,
    };
    let mut acc = Accumulator::default();
    for (index, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let sample = parse_line(trimmed).map_err(|reason| ParseError::Malformed {
            line: index + 1,
            reason,
        })?;
        accumulate(names, &sample, &mut acc).map_err(|reason| ParseError::Malformed {
            line: index + 1,
            reason,
        })?;
    }
    finish(names, acc)
}

fn accumulate(
    names: &Names,
    sample: &Sample<'_>,
    acc: &mut Accumulator,
) -> Result<(), &'static str> {
    let name = sample.name;
    if names.waiting.contains(&name) {
        acc.waiting = Some(acc.waiting.unwrap_or(0.0) + gauge(sample.value)?);
    } else if names.running.contains(&name) {
        acc.running = Some(acc.running.unwrap_or(0.0) + gauge(sample.value)?);
    } else if names.kv.contains(&name) {
        acc.kv_sum += gauge(sample.value)?;
        acc.kv_series += 1;
    } else if Some(name) == names.lora_info {
        let newer = acc
            .lora_best
            .as_ref()
            .is_none_or(|(best, _)| sample.value > *best);
        if newer {
            let mut series = LoraSeries::default();
            for_each_label(sample.labels, |key, value| {
                match key {
                    "max_lora" => series.max_lora = parse_count(&value),
                    "running_lora_adapters" => series.running = value.into_owned(),
                    "waiting_lora_adapters" => series.waiting = value.into_owned(),
                    _ => {}
                }
                Ok(())
            })?;
            acc.lora_best = Some((sample.value, series));
        }
    } else if let Some((info, block_key, blocks_key)) = names.cache_info {
        if name == info {
            for_each_label(sample.labels, |key, value| {
                if key == block_key {
                    acc.block_size = parse_count(&value);
                } else if key == blocks_key {
                    acc.num_gpu_blocks = parse_count(&value);
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn finish(names: &Names, acc: Accumulator) -> Result<EngineMetrics, ParseError> {
    let waiting = acc.waiting.ok_or(ParseError::Missing(names.waiting[0]))?;
    let running = acc.running.ok_or(ParseError::Missing(names.running[0]))?;
    if acc.kv_series == 0 {
        return Err(ParseError::Missing(names.kv[0]));
    }
    let kv = (acc.kv_sum / f64::from(acc.kv_series)).clamp(0.0, 1.0);
    let mut metrics = EngineMetrics {
        waiting: saturating_u32(waiting),
        running: saturating_u32(running),
        kv_cache_usage: kv as f32,
        block_size: acc.block_size,
        num_gpu_blocks: acc.num_gpu_blocks,
        ..EngineMetrics::default()
    };
    if let Some((_, lora)) = acc.lora_best {
        metrics.max_loras = lora.max_lora;
        metrics.running_adapters = split_adapters(&lora.running);
        metrics.waiting_adapters = split_adapters(&lora.waiting);
    }
    Ok(metrics)
}

fn gauge(value: f64) -> Result<f64, &'static str> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err("gauge value is negative or not finite")
    }
}

fn saturating_u32(value: f64) -> u32 {
    value.round().min(f64::from(u32::MAX)) as u32
}

/// Label values such as `"2"`, `"27500"` or `"None"`; anything not a count is 0.
fn parse_count(value: &str) -> u32 {
    value.trim().parse::<u32>().unwrap_or(0)
}

fn split_adapters(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One sample line, borrowed from the body. `labels` is the raw text between
/// the braces, already validated, decoded lazily by [`for_each_label`].
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn skip_blanks(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
        at += 1;
    }
    at
}

fn parse_line(line: &str) -> Result<Sample<'_>, &'static str> {
    let bytes = line.as_bytes();
    if !is_name_start(bytes[0]) {
        return Err("metric name must start with a letter, '_' or ':'");
    }
    let mut at = 1;
    while at < bytes.len() && is_name_char(bytes[at]) {
        at += 1;
    }
    let name = &line[..at];
    let mut labels = "";
    at = skip_blanks(bytes, at);
    if at < bytes.len() && bytes[at] == b'{' {
        let end = scan_labels(bytes, at + 1)?;
        labels = &line[at + 1..end];
        at = skip_blanks(bytes, end + 1);
    }
    let value_start = at;
    while at < bytes.len() && bytes[at] != b' ' && bytes[at] != b'\t' {
        at += 1;
    }
    if value_start == at {
        return Err("sample has no value");
    }
    let value = parse_value(&line[value_start..at])?;
    at = skip_blanks(bytes, at);
    if at < bytes.len() {
        let timestamp = line[at..].trim_end_matches([' ', '\t']);
        if timestamp.parse::<i64>().is_err() {
            return Err("timestamp is not an integer");
        }
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Result<f64, &'static str> {
    // Rust accepts "inf"/"infinity"/"nan" in any case, which covers the
    // exposition format's "+Inf", "-Inf" and "NaN".
    text.parse::<f64>().map_err(|_| "value is not a number")
}

/// Validates `name="value",...}` starting at `at`; returns the index of `}`.
fn scan_labels(bytes: &[u8], mut at: usize) -> Result<usize, &'static str> {
    loop {
        at = skip_blanks(bytes, at);
        match bytes.get(at) {
            None => return Err("unterminated label set"),
            Some(b'}') => return Ok(at),
            Some(&b) if is_label_start(b) => {}
            Some(_) => return Err("bad label name"),
        }
        while at < bytes.len() && is_label_char(bytes[at]) {
            at += 1;
        }
        at = skip_blanks(bytes, at);
        if bytes.get(at) != Some(&b'=') {
            return Err("label name not followed by '='");
        }
        at = skip_blanks(bytes, at + 1);
        if bytes.get(at) != Some(&b'"') {
            return Err("label value not quoted");
        }
        at += 1;
        loop {
            match bytes.get(at) {
                None => return Err("unterminated label value"),
                Some(b'"') => break,
                Some(b'\\') => {
                    match bytes.get(at + 1) {
                        Some(b'\\' | b'"' | b'n') => {}
                        _ => return Err("bad escape in label value"),
                    }
                    at += 2;
                }
                Some(_) => at += 1,
            }
        }
        at = skip_blanks(bytes, at + 1);
        match bytes.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => return Ok(at),
            _ => return Err("expected ',' or '}' after label value"),
        }
    }
}

/// Calls `visit` with each decoded label of a set that [`scan_labels`] accepted.
fn for_each_label<'a>(
    labels: &'a str,
    mut visit: impl FnMut(&'a str, Cow<'a, str>) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let bytes = labels.as_bytes();
    let mut at = 0;
    loop {
        at = skip_blanks(bytes, at);
        if at >= bytes.len() {
            return Ok(());
        }
        let key_start = at;
        while at < bytes.len() && is_label_char(bytes[at]) {
            at += 1;
        }
        let key = &labels[key_start..at];
        at = skip_blanks(bytes, at);
        at = skip_blanks(bytes, at + 1); // '='
        at += 1; // opening quote
        let value_start = at;
        let mut escaped = false;
        while at < bytes.len() && bytes[at] != b'"' {
            if bytes[at] == b'\\' {
                escaped = true;
                at += 1;
            }
            at += 1;
        }
        let raw = &labels[value_start..at.min(labels.len())];
        let value = if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        visit(key, value)?;
        at = skip_blanks(bytes, at + 1);
        if at < bytes.len() && bytes[at] == b',' {
            at += 1;
        }
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/fixtures/vllm-metrics-sample.txt");

    #[test]
    fn reads_the_vllm_reference_sample() {
        let m = parse(Engine::Vllm, SAMPLE).unwrap();
        assert_eq!(m.running, 23);
        assert_eq!(m.waiting, 4);
        assert!((m.kv_cache_usage - 0.4172).abs() < 1e-6);
        // The lora series with the largest timestamp wins, whatever its position.
        assert_eq!(m.running_adapters, vec!["sql-lora", "tweet-lora"]);
        assert_eq!(m.waiting_adapters, vec!["tweet-lora"]);
        assert_eq!(m.max_loras, 2);
        assert_eq!(m.block_size, 16);
        assert_eq!(m.num_gpu_blocks, 27500);
    }

    #[test]
    fn accepts_the_pre_v012_kv_name_and_any_label_order() {
        let body = "vllm:num_requests_waiting{model_name=\"m\",engine=\"0\"} 7\n\
                    vllm:num_requests_running{engine=\"0\"} 1.0 1712345678000\n\
                    vllm:gpu_cache_usage_perc 0.25\n";
        let m = parse(Engine::Vllm, body).unwrap();
        assert_eq!((m.waiting, m.running), (7, 1));
        assert_eq!(m.kv_cache_usage, 0.25);
        assert_eq!(m.max_loras, 0);
        assert!(m.running_adapters.is_empty());
    }

    #[test]
    fn lora_series_picked_by_largest_value_not_position() {
        let body = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n\
            vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\" a , b \",waiting_lora_adapters=\"\"} 300\n\
            vllm:lora_requests_info{waiting_lora_adapters=\"c\",max_lora=\"4\",running_lora_adapters=\"\"} 100\n";
        let m = parse(Engine::Vllm, body).unwrap();
        assert_eq!(m.running_adapters, vec!["a", "b"]);
        assert!(m.waiting_adapters.is_empty());
        assert_eq!(m.max_loras, 4);
    }

    #[test]
    fn data_parallel_engines_are_summed_and_kv_averaged() {
        let body = "vllm:num_requests_waiting{engine=\"0\"} 2\nvllm:num_requests_waiting{engine=\"1\"} 3\n\
            vllm:num_requests_running{engine=\"0\"} 4\nvllm:num_requests_running{engine=\"1\"} 5\n\
            vllm:kv_cache_usage_perc{engine=\"0\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\"} 0.6\n";
        let m = parse(Engine::Vllm, body).unwrap();
        assert_eq!((m.waiting, m.running), (5, 9));
        assert!((m.kv_cache_usage - 0.4).abs() < 1e-6);
    }

    #[test]
    fn reads_sglang() {
        let body = "# HELP sglang:num_queue_reqs x\n# TYPE sglang:num_queue_reqs gauge\n\
            sglang:num_queue_reqs{model_name=\"q\"} 12.0\n\
            sglang:num_running_reqs{model_name=\"q\"} 30.0\n\
            sglang:token_usage{model_name=\"q\"} 0.81\n\
            sglang:cache_config_info{page_size=\"1\",num_pages=\"400000\"} 1\n\
            vllm:num_requests_waiting 99\n";
        let m = parse(Engine::Sglang, body).unwrap();
        assert_eq!((m.waiting, m.running), (12, 30));
        assert!((m.kv_cache_usage - 0.81).abs() < 1e-6);
        assert_eq!((m.block_size, m.num_gpu_blocks), (1, 400000));
    }

    #[test]
    fn reads_trtllm() {
        let body = "trtllm_num_requests_waiting 3\r\ntrtllm_num_requests_running 8\r\n\
            trtllm_kv_cache_utilization 0.5\r\n";
        let m = parse(Engine::TrtLlm, body).unwrap();
        assert_eq!((m.waiting, m.running), (3, 8));
        assert_eq!(m.kv_cache_usage, 0.5);
    }

    #[test]
    fn wrong_engine_reports_the_missing_metric() {
        let err = parse(Engine::Sglang, SAMPLE).unwrap_err();
        assert_eq!(err, ParseError::Missing("sglang:num_queue_reqs"));
        assert!(err.to_string().contains("sglang:num_queue_reqs"));
    }

    #[test]
    fn malformed_text_fails_with_the_line_number() {
        let cases = [
            (
                "vllm:num_requests_waiting{engine=\"0\" 4\n",
                "after label value",
            ),
            ("vllm:num_requests_waiting four\n", "not a number"),
            ("vllm:num_requests_waiting\n", "no value"),
            ("9lives 1\n", "metric name"),
            ("x{a=b} 1\n", "not quoted"),
            ("x{a=\"\\q\"} 1\n", "escape"),
            ("x 1 soon\n", "timestamp"),
            ("vllm:num_requests_waiting -3\n", "negative"),
        ];
        for (body, reason) in cases {
            let text = format!("# ok\n{body}");
            match parse(Engine::Vllm, &text) {
                Err(ParseError::Malformed { line, reason: got }) => {
                    assert_eq!(line, 2, "{body:?}");
                    assert!(got.contains(reason), "{body:?}: {got}");
                }
                other => panic!("{body:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn escaped_label_values_are_decoded() {
        let body = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n\
            vllm:lora_requests_info{max_lora=\"1\",running_lora_adapters=\"a\\\"q,b\\\\c\",waiting_lora_adapters=\"\",} 5\n";
        let m = parse(Engine::Vllm, body).unwrap();
        assert_eq!(m.running_adapters, vec!["a\"q", "b\\c"]);
    }

    #[test]
    fn special_float_values_parse() {
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("1.1024e+06").unwrap(), 1_102_400.0);
        // Histograms with +Inf buckets are fine; only the gauges we read must be finite.
        assert!(parse(Engine::Vllm, SAMPLE).is_ok());
    }

    /// Tiny xorshift so the randomized test needs no extra crate and is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn randomized_inputs_never_panic() {
        let alphabet: &[u8] = b"{}=\",\\ \t\n#:_aZ09.e+-InfNa\r";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seed = SAMPLE.as_bytes();
        let mut ok = 0;
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                seed.to_vec()
            } else {
                (0..rng.below(200))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            };
            for _ in 0..rng.below(8) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            for engine in [Engine::Vllm, Engine::Sglang, Engine::TrtLlm] {
                if let Ok(m) = parse(engine, &text) {
                    assert!((0.0..=1.0).contains(&m.kv_cache_usage));
                    ok += 1;
                }
            }
        }
        // The unmutated sample rounds must have parsed: the test exercises both paths.
        assert!(ok > 100, "only {ok} inputs parsed");
    }
}
