//! The cost of one routing decision of the real filter, counted in wasmtime
//! fuel (one unit per wasm instruction executed, independent of the machine
//! and of other load on it): pools of 8, 64 and 1,024 endpoints, completions
//! bodies of 1 KB and 200 KB and a 200 KB multi-turn chat. This is the
//! repeatable cost figure the team tracks;
//! wall-clock times are printed alongside for orientation only.
//!
//! `cargo run --release -p integration --bin bench-wasm [-- --requests N]`
//! (needs `make wasm`; the module path comes from `$GATEWAY_FILTER_WASM`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use integration::wasm_host::fixtures::{chat_body, completion_body, pool_of_size, snapshot};
use integration::wasm_host::{gateway_filter_path, FilterModule, HeaderMap, Host, Worker};

const ENDPOINTS: [usize; 3] = [8, 64, 1024];
/// (size, label, chat?): completions bodies, and a multi-turn chat (the
/// prefix-affinity case: `messages` are hashed).
/// How the collector treats the requests' prefix groups.
#[derive(Clone, Copy, PartialEq)]
enum Groups {
    /// It does not learn placements (rendezvous hashing, no reports).
    NotLearned,
    /// It has placed the request's group among this many.
    Placed(usize),
    /// Every request starts a new group (unique prompts): each one is
    /// unplaced, looked up in the pending table, recorded there and reported.
    EveryRequestNew,
}

/// (body bytes, label, chat, groups).
const BODIES: [(usize, &str, bool, Groups); 5] = [
    (1024, "1 KB", false, Groups::NotLearned),
    (200 * 1024, "200 KB", false, Groups::NotLearned),
    (200 * 1024, "200 KB chat", true, Groups::NotLearned),
    (
        200 * 1024,
        "200 KB chat, 4,096 placed groups",
        true,
        Groups::Placed(4096),
    ),
    (
        1024,
        "1 KB, a new group per request",
        false,
        Groups::EveryRequestNew,
    ),
];
const WARMUP: usize = 5;

struct Row {
    endpoints: usize,
    body: &'static str,
    first_request_fuel: u64,
    request_fuel: u64,
    exchange_fuel: u64,
    exchange_time: Duration,
    memory_bytes: usize,
}

fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values[values.len() / 2]
}

/// Fuel of the request path (headers + body, where the decision happens) and
/// of the whole exchange (plus response and teardown), with its wall time.
fn one_exchange(worker: &Worker, path: &str, body: &[u8]) -> anyhow::Result<(u64, u64, Duration)> {
    let started = Instant::now();
    let fuel_at_start = worker.fuel_used();
    let headers = HeaderMap::from_pairs([
        (":method", "POST".to_string()),
        (":path", path.to_string()),
        (":authority", "gateway.local".to_string()),
        ("content-type", "application/json".to_string()),
        ("content-length", body.len().to_string()),
        ("x-request-id", format!("bench-{fuel_at_start}")),
    ]);
    let mut stream = worker.stream(headers, Some("pool-a"))?;
    stream.request_headers(false)?;
    stream.request_body(body, true)?;
    let request_fuel = worker.fuel_used() - fuel_at_start;
    anyhow::ensure!(
        stream.upstream_headers().is_some(),
        "the filter did not route the request: {:?}",
        stream.local_reply()
    );
    stream.response_headers(
        HeaderMap::from_pairs([(":status", "200"), ("content-type", "application/json")]),
        false,
    )?;
    stream.response_body(br#"{"choices":[]}"#, true)?;
    let exchange = stream.finish()?;
    Ok((request_fuel, exchange.fuel, started.elapsed()))
}

/// Learns the request's affinity key the way the collector does (from the
/// filter's report) and publishes a table of `groups` placements holding it.
fn place_groups(
    host: &Host,
    worker: &Worker,
    endpoints: usize,
    groups: usize,
    path: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    one_exchange(worker, path, body)?;
    host.advance(Duration::from_millis(100))?;
    let reports = host.collector().prefix_reports();
    let key = reports
        .first()
        .context("the filter reported no affinity key")?
        .key;
    let mut pool = pool_of_size("pool-a", endpoints);
    pool.learns_prefix_placements = true;
    let mut filler = key;
    let pairs: Vec<(u64, u32)> = (0..groups)
        .map(|i| {
            filler = filler.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
            (if i == 0 { key } else { filler }, (i % endpoints) as u32)
        })
        .collect();
    pool.prefix_placements = pool_state::placements::encode(&pairs);
    host.collector().push(&snapshot(2, vec![pool]))?;
    Ok(())
}

/// `body` with its first prompt bytes replaced by `n` in decimal: the same
/// size, a different affinity key per `n`.
fn with_unique_prompt(body: &[u8], n: usize) -> Vec<u8> {
    let mut body = body.to_vec();
    let marker = b"\"prompt\":\"";
    if let Some(at) = body.windows(marker.len()).position(|w| w == marker) {
        let digits = format!("{n:08}");
        let start = at + marker.len();
        body[start..start + digits.len()].copy_from_slice(digits.as_bytes());
    }
    body
}

fn measure(
    module: &FilterModule,
    endpoints: usize,
    (body_size, chat, groups): (usize, bool, Groups),
    requests: usize,
) -> anyhow::Result<(u64, u64, u64, Duration, usize)> {
    let host = Host::new();
    let worker = host.start_worker(module, "{}")?;
    host.advance(Duration::from_millis(100))?;
    let mut pool = pool_of_size("pool-a", endpoints);
    pool.learns_prefix_placements = groups != Groups::NotLearned;
    let delivered = host.collector().push(&snapshot(1, vec![pool]))?;
    anyhow::ensure!(delivered == 1, "no worker holds the collector stream");
    let path = if chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let body = if chat {
        chat_body("base", body_size)
    } else {
        completion_body("base", body_size)
    };
    if let Groups::Placed(groups) = groups {
        place_groups(&host, &worker, endpoints, groups, path, &body)?;
    }
    let mut sent = 0;
    let mut next_body = || {
        sent += 1;
        if groups == Groups::EveryRequestNew {
            with_unique_prompt(&body, sent)
        } else {
            body.clone()
        }
    };
    // The first request after a new snapshot version also decodes it.
    let (first, _, _) = one_exchange(&worker, path, &next_body())?;
    for _ in 0..WARMUP {
        one_exchange(&worker, path, &next_body())?;
    }
    let mut request_fuel = Vec::with_capacity(requests);
    let mut exchange_fuel = Vec::with_capacity(requests);
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let (request, exchange, time) = one_exchange(&worker, path, &next_body())?;
        request_fuel.push(request);
        exchange_fuel.push(exchange);
        times.push(time);
    }
    Ok((
        first,
        median(request_fuel),
        median(exchange_fuel),
        median(times),
        worker.memory_bytes(),
    ))
}

fn parse_requests() -> anyhow::Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut requests = 50;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => {
                requests = args
                    .next()
                    .context("--requests needs a number")?
                    .parse()
                    .context("--requests needs a number")?;
                anyhow::ensure!(requests > 0, "--requests must be > 0");
            }
            "-h" | "--help" => {
                println!("bench-wasm [--requests N]   (N measured requests per cell, default 50)");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(requests)
}

fn main() -> anyhow::Result<()> {
    let requests = parse_requests()?;
    let module = FilterModule::gateway_filter()?;
    println!(
        "Filter cost in wasmtime fuel (≈ wasm instructions), {} (median of {requests} requests per row)",
        gateway_filter_path().display()
    );
    let mut rows = Vec::new();
    for endpoints in ENDPOINTS {
        for (body_size, body, chat, groups) in BODIES {
            let (first, request, exchange, time, memory) =
                measure(&module, endpoints, (body_size, chat, groups), requests)
                    .with_context(|| format!("{endpoints} endpoints, {body} body"))?;
            rows.push(Row {
                endpoints,
                body,
                first_request_fuel: first,
                request_fuel: request,
                exchange_fuel: exchange,
                exchange_time: time,
                memory_bytes: memory,
            });
        }
    }
    println!();
    println!("| endpoints | body | decision (request path) fuel | whole exchange fuel | first request after a new snapshot | wall time / exchange | VM memory |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} µs | {} KiB |",
            row.endpoints,
            row.body,
            row.request_fuel,
            row.exchange_fuel,
            row.first_request_fuel,
            row.exchange_time.as_secs_f64() * 1e6,
            row.memory_bytes / 1024
        );
    }
    Ok(())
}
