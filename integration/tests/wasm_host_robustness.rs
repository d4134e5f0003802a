//! Hostile and heavy traffic through the real `.wasm`: thousands of random
//! bodies and headers never trap the VM and always get a sane outcome, and
//! 100k requests leave the VM's linear memory within a stated bound.

use std::time::Duration;

use integration::wasm_host::fixtures::{completion_body, endpoint, pool, snapshot};
use integration::wasm_host::{Exchange, FilterModule, Host, LogLevel, Worker};
use pool_state::{FailureMode, Objective};

/// A small deterministic PRNG (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn started(config: &str) -> (Host, Worker) {
    let host = Host::new();
    let worker = host
        .start_worker(
            &FilterModule::gateway_filter().expect("target/gateway_filter.wasm (run `make wasm`)"),
            config,
        )
        .unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    let mut p = pool(
        "pool-a",
        FailureMode::FailOpen,
        (1..=8)
            .map(|i| endpoint(&format!("10.0.0.{i}:8000"), i % 4, i as f32 / 10.0))
            .collect(),
    );
    p.objectives = vec![Objective {
        name: "batch".into(),
        priority: -5,
    }];
    host.collector().push(&snapshot(1, vec![p])).unwrap();
    (host, worker)
}

const MODELS: &[&str] = &["base", "", "a\"b", "\u{1F600}", "x\\u0000y", "travelhelper"];
const HEADER_NAMES: &[&str] = &[
    "x-gateway-destination-endpoint",
    "x-gateway-inference-objective",
    "x-gateway-target-model",
    "x-gateway-pool",
    "content-length",
    "content-type",
    "x-request-id",
    ":method",
    "x-random",
];

/// A body that is valid, nearly valid, or garbage, in the proportions that
/// find parser bugs: mutations of valid JSON more than pure noise.
fn random_body(rng: &mut Rng) -> Vec<u8> {
    let model = rng.pick(MODELS).replace('"', "\\\"");
    let valid = completion_body(&model, 50 + rng.below(3000));
    match rng.below(10) {
        0 => Vec::new(),
        1 => {
            let len = rng.below(2000);
            rng.bytes(len)
        }
        2 => {
            let cut = rng.below(valid.len());
            valid[..cut].to_vec()
        }
        3 => {
            let mut body = valid;
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(body.len());
                body[at] = rng.next() as u8;
            }
            body
        }
        4 => {
            let depth = rng.below(5000);
            let mut body = "[".repeat(depth).into_bytes();
            body.extend_from_slice(&valid);
            body
        }
        5 => format!(
            r#"{{"model":{},"prompt":"x"}}"#,
            rng.pick(&["1", "null", "[]", "{}", "true", "\"\"", "1e999"])
        )
        .into_bytes(),
        6 => format!(
            r#"{{"prompt":"x","model":"base","model":"{}","stream":{}}}"#,
            model,
            rng.pick(&["true", "\"yes\"", "1"])
        )
        .into_bytes(),
        _ => valid,
    }
}

fn random_request<'w>(rng: &mut Rng, worker: &'w Worker) -> integration::wasm_host::Request<'w> {
    let mut request = worker
        .request()
        .cluster(rng.pick(&["pool-a", "pool-a", "pool-a", "unknown", ""]));
    if rng.below(4) == 0 {
        request = request.header(":method", rng.pick(&["GET", "PUT", "DELETE", "POST"]));
    }
    for _ in 0..rng.below(6) {
        let name = rng.pick(HEADER_NAMES);
        let value: Vec<u8> = match rng.below(4) {
            // Printable ASCII: what every Envoy codec lets through. Non-UTF-8
            // values (obs-text) have their own test below.
            0 => {
                let len = rng.below(40);
                (0..len).map(|_| b' ' + rng.below(95) as u8).collect()
            }
            1 => b"batch".to_vec(),
            2 => (rng.next() % 100_000).to_string().into_bytes(),
            _ => b"10.9.9.9:1".to_vec(),
        };
        request = request.add_header(name, &value);
    }
    let body = random_body(rng);
    let chunk = 1 + rng.below(body.len().max(1));
    request.body(body).chunked(chunk)
}

fn assert_sane(exchange: &Exchange, iteration: usize) {
    assert!(!exchange.stalled, "#{iteration}: stalled {exchange:?}");
    match &exchange.local_reply {
        Some(reply) => {
            assert!(
                // 404/405: paths and methods outside the inference API.
                [400, 404, 405, 413, 429, 503].contains(&reply.status),
                "#{iteration}: status {}",
                reply.status
            );
            let body = reply
                .json()
                .unwrap_or_else(|| panic!("#{iteration}: non-JSON error"));
            assert_eq!(body["error"]["code"], serde_json::json!(reply.status));
        }
        None => {
            let destination = exchange
                .upstream_header("x-gateway-destination-endpoint")
                .unwrap_or_else(|| panic!("#{iteration}: forwarded without a pick: {exchange:?}"));
            assert!(
                destination.starts_with("10.0.0."),
                "#{iteration}: {destination}"
            );
            let upstream = exchange.upstream.as_ref().unwrap();
            assert_eq!(
                upstream
                    .headers
                    .get_all("x-gateway-destination-endpoint")
                    .len(),
                1
            );
        }
    }
}

#[test]
fn thousands_of_random_requests_never_trap_the_vm() {
    let (host, worker) = started(r#"{"max_body_bytes":65536}"#);
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for iteration in 0..4_000 {
        let exchange = random_request(&mut rng, &worker)
            .send()
            .unwrap_or_else(|e| panic!("#{iteration}: {e:#}"));
        assert_sane(&exchange, iteration);
        let outcome = exchange
            .local_reply
            .as_ref()
            .map_or("forwarded".to_string(), |r| r.status.to_string());
        *outcomes.entry(outcome).or_default() += 1;
        if iteration % 500 == 0 {
            host.advance(Duration::from_millis(100)).unwrap();
        }
    }
    assert!(worker.failure().is_none());
    assert!(
        host.logs_at_least(LogLevel::Critical).is_empty(),
        "{:?}",
        host.logs_at_least(LogLevel::Critical)
    );
    // The generator reaches every outcome; a filter answering everything
    // with one code would not pass.
    for outcome in ["forwarded", "400", "413", "503"] {
        assert!(
            outcomes.get(outcome).copied().unwrap_or(0) > 20,
            "{outcomes:?}"
        );
    }
    // In-flight counts all came back down (`addr=count` lines, zeros dropped).
    let inflight = host
        .shared_data("llmgw.inflight.default/pool-a")
        .map(|(v, _)| v)
        .expect("forwarded requests wrote the pool's in-flight table");
    assert!(
        String::from_utf8_lossy(&inflight).trim().is_empty(),
        "in-flight table not drained: {}",
        String::from_utf8_lossy(&inflight)
    );
}

/// Envoy's HTTP/1 codec accepts obs-text (bytes 0x80-0xFF) in header values,
/// so a client can send a header the filter reads that is not UTF-8.
#[test]
fn non_utf8_header_values_do_not_trap_the_vm() {
    for name in [
        "x-gateway-inference-objective",
        "x-request-id",
        "content-length",
        ":method",
    ] {
        let (_host, worker) = started("{}");
        let exchange = worker
            .request()
            .cluster("pool-a")
            .without_header(name)
            .add_header(name, b"caf\xe9\xff")
            .body(completion_body("base", 200))
            .send()
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_sane(&exchange, 0);
    }
}

/// Linear memory may grow while the allocator finds its working set (first
/// 1,000 requests), then must stay within this much more.
const MEMORY_GROWTH_BOUND: usize = 2 << 20;
/// And never exceed this in total.
const MEMORY_TOTAL_BOUND: usize = 32 << 20;

#[test]
fn a_hundred_thousand_requests_do_not_grow_vm_memory() {
    let (host, worker) = started("{}");
    let valid = completion_body("base", 2_000);
    let invalid = br#"{"model":42}"#.to_vec();
    let mut warm = 0;
    for i in 0..100_000 {
        let body = if i % 10 == 9 {
            invalid.clone()
        } else {
            valid.clone()
        };
        let objective = if i % 7 == 0 { "batch" } else { "none" };
        let exchange = worker
            .request()
            .cluster("pool-a")
            .header("x-gateway-inference-objective", objective)
            .body(body)
            .send()
            .unwrap();
        assert!(exchange.forwarded() || exchange.local_reply.is_some());
        if i % 5_000 == 0 {
            // Fresh snapshots keep arriving, as in production.
            host.advance(Duration::from_millis(100)).unwrap();
            let mut p = pool(
                "pool-a",
                FailureMode::FailClose,
                (1..=8)
                    .map(|n| endpoint(&format!("10.0.0.{n}:8000"), (n + i) % 5, 0.2))
                    .collect(),
            );
            p.objectives = vec![Objective {
                name: "batch".into(),
                priority: -5,
            }];
            host.collector()
                .push(&snapshot(2 + i as u64, vec![p]))
                .unwrap();
        }
        if i == 1_000 {
            warm = worker.memory_bytes();
        }
    }
    let end = worker.memory_bytes();
    println!("VM memory: {warm} bytes after 1k requests, {end} bytes after 100k");
    assert!(
        end <= warm + MEMORY_GROWTH_BOUND,
        "grew from {warm} to {end}"
    );
    assert!(end <= MEMORY_TOTAL_BOUND, "{end} bytes");
    assert!(worker.failure().is_none());
}
