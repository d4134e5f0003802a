//! The demo's table: per pool, each pod with what it served (through the
//! gateway) beside its live state from the collector (queue, running, KV use,
//! adapters), and how the two canaries are splitting.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use pool_state::{FailureMode, Snapshot};

use crate::traffic::Tally;

/// Renders the whole table as text (no terminal control codes).
pub fn render(
    tally: &Tally,
    snapshot: Option<&Snapshot>,
    gateway: &str,
    in_flight: usize,
) -> String {
    let mut out = String::new();
    let elapsed = tally.started.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "llm-gateway demo: clients -> Envoy {gateway} -> wasm filter -> simulated vLLM pods    {elapsed:6.1} s"
    );
    let _ = writeln!(
        out,
        "requests: {} sent, {} ok, {} shed (429), {} failed, {} in flight, {:.1} req/s",
        tally.sent,
        tally.ok,
        tally.shed,
        tally.failed,
        in_flight,
        tally.ok as f64 / elapsed.max(0.001)
    );
    let pool_of_pod: BTreeMap<&str, &str> = snapshot
        .map(|s| {
            s.pools
                .iter()
                .flat_map(|p| {
                    p.endpoints
                        .iter()
                        .map(move |e| (e.pod.as_str(), p.name.as_str()))
                })
                .collect()
        })
        .unwrap_or_default();

    let mut split: BTreeMap<&str, usize> = BTreeMap::new();
    for (pod, n) in &tally.split_pods {
        *split
            .entry(pool_of_pod.get(pod.as_str()).copied().unwrap_or("?"))
            .or_default() += n;
    }
    let _ = writeln!(
        out,
        "\nACK base-model canary (default route, HTTPRoute 90/10):   {}",
        shares(split.iter().map(|(k, v)| (*k, *v)))
    );
    let _ = writeln!(
        out,
        "ACK LoRA canary (x-route: ack-lora, InferenceModel 90/10): {}",
        shares(tally.lora_models.iter().map(|(k, v)| (k.as_str(), *v)))
    );

    let Some(snapshot) = snapshot else {
        let _ = writeln!(out, "\n(waiting for the collector's pool state)");
        return out;
    };
    for pool in snapshot.pools.iter().filter(|p| !p.endpoints.is_empty()) {
        let mode = if pool.failure_mode == FailureMode::FailOpen as i32 {
            "FailOpen"
        } else {
            "FailClose"
        };
        let served: usize = pool
            .endpoints
            .iter()
            .filter_map(|e| tally.by_pod.get(&e.pod))
            .flat_map(|models| models.values())
            .sum();
        let _ = writeln!(
            out,
            "\nPOOL {}  ({mode}, {} pods, {served} served)",
            pool.name,
            pool.endpoints.len()
        );
        let _ = writeln!(
            out,
            "  {:<27} {:<17} {:>6} {:>5} {:>4} {:>6}  {:<34} TARGET MODELS SERVED",
            "POD", "ADDRESS", "SERVED", "QUEUE", "RUN", "KV", "ADAPTERS running [waiting]",
        );
        for endpoint in &pool.endpoints {
            let models = tally.by_pod.get(&endpoint.pod);
            let count: usize = models.map(|m| m.values().sum()).unwrap_or(0);
            let name = |i: &u32| {
                pool.adapter_names
                    .get(*i as usize)
                    .cloned()
                    .unwrap_or_default()
            };
            let mut adapters: Vec<String> = endpoint.running_adapters.iter().map(name).collect();
            let waiting: Vec<String> = endpoint.waiting_adapters.iter().map(name).collect();
            if !waiting.is_empty() {
                adapters.push(format!("[{}]", waiting.join(",")));
            }
            let state = if endpoint.ready { "" } else { " (not ready)" };
            let _ = writeln!(
                out,
                "  {:<27} {:<17} {:>6} {:>5} {:>4} {:>5.1}%  {:<34} {}",
                format!("{}{state}", endpoint.pod),
                endpoint.address,
                count,
                endpoint.waiting,
                endpoint.running,
                endpoint.kv_cache_usage * 100.0,
                truncate(&adapters.join(","), 34),
                models.map(counts).unwrap_or_default()
            );
        }
    }
    if !tally.recent_errors.is_empty() {
        let _ = writeln!(out, "\nrecent errors:");
        for error in &tally.recent_errors {
            let _ = writeln!(out, "  {error}");
        }
    }
    out
}

fn shares<'a>(parts: impl Iterator<Item = (&'a str, usize)>) -> String {
    let parts: Vec<(&str, usize)> = parts.collect();
    let total: usize = parts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "(no requests yet)".to_string();
    }
    parts
        .iter()
        .map(|(name, n)| format!("{name} {:.1}% ({n})", 100.0 * *n as f64 / total as f64))
        .collect::<Vec<_>>()
        .join("  |  ")
}

fn counts(models: &BTreeMap<String, usize>) -> String {
    let mut sorted: Vec<(&String, &usize)> = models.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1));
    sorted
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}
