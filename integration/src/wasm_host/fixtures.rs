//! Pool-state snapshots and request bodies for the host's tests and for
//! `bench-wasm`, so both feed the filter the same realistic shapes.

use pool_state::{Endpoint, FailureMode, Pool, Snapshot};

/// A ready endpoint scraped 10 ms before the snapshot, with `waiting`
/// queued requests and `kv` cache use; LoRA-capable (4 slots).
pub fn endpoint(address: &str, waiting: u32, kv: f32) -> Endpoint {
    Endpoint {
        address: address.to_string(),
        pod: format!("pod-{}", address.replace([':', '.'], "-")),
        ready: true,
        metrics_age_ms: 10,
        consecutive_scrape_failures: 0,
        waiting,
        running: waiting.min(8),
        kv_cache_usage: kv,
        running_adapters: Vec::new(),
        waiting_adapters: Vec::new(),
        max_loras: 4,
        block_size: 16,
        num_gpu_blocks: 8192,
    }
}

/// A pool named `name` with these endpoints and no model rules.
pub fn pool(name: &str, failure_mode: FailureMode, endpoints: Vec<Endpoint>) -> Pool {
    Pool {
        name: name.to_string(),
        namespace: "default".to_string(),
        failure_mode: failure_mode as i32,
        adapter_names: Vec::new(),
        endpoints,
        model_rules: Vec::new(),
        objectives: Vec::new(),
        prefix_placements: Vec::new(),
        learns_prefix_placements: false,
    }
}

/// A pool of `size` endpoints `10.<i/250>.<i%250>.1:8000` with a spread of
/// load, so the picker has real work to do at every size.
pub fn pool_of_size(name: &str, size: usize) -> Pool {
    let endpoints = (0..size)
        .map(|i| {
            let address = format!("10.{}.{}.1:8000", i / 250, i % 250);
            endpoint(&address, (i % 7) as u32, ((i % 10) as f32) / 20.0)
        })
        .collect();
    pool(name, FailureMode::FailClose, endpoints)
}

pub fn snapshot(version: u64, pools: Vec<Pool>) -> Snapshot {
    Snapshot {
        version,
        collector_id: "fake-collector".to_string(),
        generated_unix_ms: 1_767_225_600_000,
        pools,
    }
}

/// A `/v1/completions` body for `model` whose prompt makes the body about
/// `total_bytes` long (at least the JSON around it).
pub fn completion_body(model: &str, total_bytes: usize) -> Vec<u8> {
    let frame = format!(r#"{{"model":"{model}","prompt":"","max_tokens":64,"temperature":"0"}}"#);
    let prompt_len = total_bytes.saturating_sub(frame.len());
    let words = [
        "the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dogs ",
    ];
    let mut prompt = String::with_capacity(prompt_len + 8);
    let mut i = 0;
    while prompt.len() < prompt_len {
        prompt.push_str(words[i % words.len()]);
        i += 1;
    }
    prompt.truncate(prompt_len);
    format!(r#"{{"model":"{model}","prompt":"{prompt}","max_tokens":64,"temperature":"0"}}"#)
        .into_bytes()
}

/// A multi-turn `/v1/chat/completions` body for `model`: a system prompt,
/// then user/assistant turns until the body is about `total_bytes` long (at
/// least the JSON around one turn).
pub fn chat_body(model: &str, total_bytes: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"model":"{model}","max_tokens":64,"messages":[{{"role":"system","content":"You are a careful travel assistant. Answer briefly."}}"#
    );
    let close = "]}";
    let mut turn = 0;
    while body.len() + close.len() < total_bytes {
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        let room = total_bytes - body.len() - close.len();
        let frame = format!(r#",{{"role":"{role}","content":""}}"#).len();
        let text_len = room.saturating_sub(frame).min(2_000);
        let text: String = "where should we go next and why "
            .chars()
            .cycle()
            .take(text_len)
            .collect();
        body.push_str(&format!(r#",{{"role":"{role}","content":"{text}"}}"#));
        turn += 1;
        if text_len == 0 {
            break;
        }
    }
    body.push_str(close);
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_requested_size_and_parse() {
        for size in [100, 1024, 200 * 1024] {
            let body = completion_body("m", size);
            assert_eq!(body.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["model"], "m");
        }
        for size in [1024, 200 * 1024] {
            let body = chat_body("m", size);
            assert!(body.len().abs_diff(size) < 64, "{} vs {size}", body.len());
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["model"], "m");
            assert!(value["messages"].as_array().unwrap().len() > 1);
        }
    }

    #[test]
    fn pools_of_any_size_have_distinct_addresses() {
        let pool = pool_of_size("p", 1024);
        let mut addresses: Vec<_> = pool.endpoints.iter().map(|e| &e.address).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), 1024);
    }
}
