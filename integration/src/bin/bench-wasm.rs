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
use integration::wasm_host::fixtures::{
    chat_body, completion_body, endpoint, pool, pool_of_size, snapshot,
};
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

/// (endpoints, pools) of the scale curve (`--scale`): endpoints spread evenly.
const SCALE: [(usize, usize); 6] = [
    (8, 1),
    (64, 4),
    (256, 16),
    (1024, 64),
    (2048, 64),
    (4096, 64),
];

/// One point of the scale curve: `endpoints` spread over `pools` pools, a 1 KB
/// completion routed to the first pool. Returns (decision fuel, fuel of the
/// first request after a new snapshot, snapshot bytes, shared-data bytes,
/// wasmtime wall time per decision).
fn scale_point(
    module: &FilterModule,
    endpoints: usize,
    pools: usize,
    requests: usize,
) -> anyhow::Result<(u64, u64, usize, usize, Duration)> {
    let host = Host::new();
    let worker = host.start_worker(module, "{}")?;
    host.advance(Duration::from_millis(100))?;
    let per_pool = endpoints / pools;
    let pool_list: Vec<_> = (0..pools)
        .map(|p| {
            let members = (0..per_pool)
                .map(|i| {
                    let n = p * per_pool + i;
                    let address =
                        format!("10.{}.{}.{}:8000", n / 62500, (n / 250) % 250, n % 250 + 1);
                    endpoint(&address, (n % 7) as u32, ((n % 10) as f32) / 20.0)
                })
                .collect();
            pool(
                &format!("pool-{p}"),
                pool_state::FailureMode::FailClose,
                members,
            )
        })
        .collect();
    let message = snapshot(1, pool_list);
    let snapshot_bytes = prost::Message::encoded_len(&message);
    let delivered = host.collector().push(&message)?;
    anyhow::ensure!(delivered == 1, "no worker holds the collector stream");
    let body = completion_body("base", 1024);
    let exchange = |worker: &Worker| -> anyhow::Result<(u64, Duration)> {
        let started = Instant::now();
        let fuel_at_start = worker.fuel_used();
        let headers = HeaderMap::from_pairs([
            (":method", "POST".to_string()),
            (":path", "/v1/completions".to_string()),
            (":authority", "gateway.local".to_string()),
            ("content-type", "application/json".to_string()),
            ("content-length", body.len().to_string()),
            ("x-request-id", format!("scale-{fuel_at_start}")),
        ]);
        let mut stream = worker.stream(headers, Some("pool-0"))?;
        stream.request_headers(false)?;
        stream.request_body(&body, true)?;
        let fuel = worker.fuel_used() - fuel_at_start;
        let elapsed = started.elapsed();
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
        stream.finish()?;
        Ok((fuel, elapsed))
    };
    let (first, _) = exchange(&worker)?;
    for _ in 0..WARMUP {
        exchange(&worker)?;
    }
    let mut fuel = Vec::with_capacity(requests);
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let (f, t) = exchange(&worker)?;
        fuel.push(f);
        times.push(t);
    }
    let shared_bytes = host
        .shared_data_keys()
        .iter()
        .filter_map(|key| {
            host.shared_data(key)
                .map(|(value, _)| key.len() + value.len())
        })
        .sum();
    Ok((
        median(fuel),
        first,
        snapshot_bytes,
        shared_bytes,
        median(times),
    ))
}

fn scale_curve(module: &FilterModule, requests: usize) -> anyhow::Result<()> {
    println!();
    println!("Scale curve: endpoints spread evenly over pools, a 1 KB completion routed to one pool (median of {requests} requests).");
    println!();
    println!("| endpoints | pools | decision fuel | first request after a new snapshot | decode (first − decision) | snapshot bytes | shared-data bytes per Envoy | wasmtime time / decision |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (endpoints, pools) in SCALE {
        let (steady, first, snapshot_bytes, shared_bytes, time) =
            scale_point(module, endpoints, pools, requests)
                .with_context(|| format!("{endpoints} endpoints in {pools} pools"))?;
        println!(
            "| {endpoints} | {pools} | {steady} | {first} | {} | {snapshot_bytes} | {shared_bytes} | {:.1} µs |",
            first.saturating_sub(steady),
            time.as_secs_f64() * 1e6
        );
    }
    Ok(())
}

struct Options {
    requests: usize,
    scale: bool,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut requests = 50;
    let mut scale = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => scale = true,
            "--requests" => {
                requests = args
                    .next()
                    .context("--requests needs a number")?
                    .parse()
                    .context("--requests needs a number")?;
                anyhow::ensure!(requests > 0, "--requests must be > 0");
            }
            "-h" | "--help" => {
                println!("bench-wasm [--requests N] [--scale]   (N measured requests per cell, default 50; --scale: only the endpoints x pools curve)");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Options { requests, scale })
}

fn main() -> anyhow::Result<()> {
    let Options { requests, scale } = parse_options()?;
    let module = FilterModule::gateway_filter()?;
    println!(
        "Filter cost in wasmtime fuel (≈ wasm instructions), {} (median of {requests} requests per row)",
        gateway_filter_path().display()
    );
    if scale {
        return scale_curve(&module, requests);
    }
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
