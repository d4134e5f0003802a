//! `bench-sim`: how many concurrent token streams one `vllm-sim` process
//! sustains. Starts `vllm-sim` (the binary next to this one) with several pods,
//! then for each concurrency level keeps that many streaming completions open
//! (each client re-issues as soon as its stream ends) and compares the
//! inter-token latency clients observe on the wall clock with the latency the
//! engine model intended (`vllm:inter_token_latency_seconds` at time scale 1).
//! A level is sustained when there are no errors and clients see at most 10%
//! more latency than the model.
//!
//!   bench-sim [--pods 8] [--levels 64,128,256,384,512,1024] [--seconds 8] [--max-tokens 128]
//!
//! `bench-sim --engine-only` instead measures the engine library alone in
//! virtual time (what the routing benchmark runs): one engine, a steady
//! arrival stream, wall time per simulated step and request.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;

#[derive(Parser)]
struct Args {
    /// Simulated pods in the one vllm-sim process.
    #[arg(long, default_value_t = 8)]
    pods: usize,
    /// Concurrent streams to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,384,512,1024")]
    levels: Vec<usize>,
    /// Measurement time per level.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Tokens per streamed completion.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Measure the engine library in virtual time instead of the server.
    #[arg(long)]
    engine_only: bool,
    /// Requests for --engine-only.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Arrival rate (requests per simulated second) for --engine-only.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
}

/// The engine alone, in virtual time: 512-token prompts sharing a 256-token
/// prefix, `--max-tokens` outputs, evenly spaced arrivals.
fn engine_only(args: &Args) {
    use vllm_sim::engine::{Engine, EngineConfig, EngineEvent, EngineRequest};
    let mut engine = Engine::new(EngineConfig::default(), 1);
    let shared: Vec<u32> = (0..256).map(|i| i * 13 % 128_000).collect();
    let gap = 1.0 / args.rate;
    let (mut now, mut next_id, mut finished, mut steps, mut tokens) =
        (0.0f64, 0u64, 0u64, 0u64, 0u64);
    let wall = Instant::now();
    while finished < args.requests {
        while next_id < args.requests && next_id as f64 * gap <= now {
            let mut prompt = shared.clone();
            prompt.extend((0..256).map(|i| (next_id as u32 * 7919 + i) % 128_000));
            engine
                .add_request(EngineRequest {
                    id: next_id,
                    prompt_tokens: prompt,
                    max_tokens: args.max_tokens,
                    adapter: None,
                    ignore_eos: true,
                })
                .expect("valid request");
            next_id += 1;
        }
        if !engine.has_work() {
            now = next_id as f64 * gap;
            continue;
        }
        let r = engine.step(now);
        steps += 1;
        now += r.duration_s;
        for e in r.events {
            match e {
                EngineEvent::Finished { .. } => finished += 1,
                EngineEvent::Token { .. } => tokens += 1,
                _ => {}
            }
        }
    }
    let secs = wall.elapsed().as_secs_f64();
    let s = engine.stats();
    println!(
        "engine-only: {} requests, {steps} steps, {tokens} tokens, {now:.1} simulated s in {secs:.2} wall s: \
         {:.2} us/step, {:.1} us/request, {:.0}x real time (prefix hits {:.0}%)",
        args.requests,
        secs / steps as f64 * 1e6,
        secs / args.requests as f64 * 1e6,
        now / secs,
        100.0 * s.prefix_hits_tokens as f64 / s.prefix_queries_tokens.max(1) as f64
    );
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    errors: AtomicU64,
    tokens: AtomicU64,
    /// Sum of per-request mean inter-token gaps, in microseconds.
    itl_us_sum: AtomicU64,
    itl_samples: AtomicU64,
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Sum over pods of (simulated step wall time, wall time given up) from /admin/state.
async fn loop_times(client: &HttpClient, addrs: &[String]) -> (f64, f64) {
    let mut t = (0.0, 0.0);
    for a in addrs {
        let v: serde_json::Value =
            serde_json::from_str(&get_text(client, format!("http://{a}/admin/state")).await)
                .unwrap_or_default();
        t.0 += v["step_wall_s"].as_f64().unwrap_or(0.0);
        t.1 += v["lost_wall_s"].as_f64().unwrap_or(0.0);
    }
    t
}

fn metric_sum_count(text: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_{suffix}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (value("sum"), value("count"))
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn get_text(client: &HttpClient, url: String) -> String {
    match client.get(url.parse().expect("url")).await {
        Ok(r) => r
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Streams one completion; returns (tokens, mean inter-token gap) or None on error.
async fn one_stream(client: &HttpClient, addr: &str, body: Bytes) -> Option<(u64, Duration)> {
    let req = hyper::Request::post(format!("http://{addr}/v1/completions"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut body = resp.into_body();
    let (mut frames, mut prev_nl) = (0u64, false);
    let (mut first, mut last) = (None, Instant::now());
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        for &b in data.iter() {
            if b == b'\n' && prev_nl {
                frames += 1;
                if frames == 1 {
                    first = Some(now);
                }
                last = now;
            }
            prev_nl = b == b'\n';
        }
    }
    // Frames: one per token, then the finish chunk and [DONE].
    let tokens = frames.saturating_sub(2);
    let gap = match first {
        Some(f) if tokens > 1 => last.duration_since(f) / (tokens as u32 - 1).max(1),
        _ => Duration::ZERO,
    };
    Some((tokens, gap))
}

fn main() {
    let args = Args::parse();
    if args.engine_only {
        engine_only(&args);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let sim = exe.with_file_name("vllm-sim");
    assert!(
        sim.exists(),
        "{} not found: build it with `cargo build --release -p vllm-sim`",
        sim.display()
    );
    let mut cmd = Command::new(&sim);
    for i in 0..args.pods {
        cmd.arg("--pod").arg(format!("bench-{i}=127.0.0.1:0"));
    }
    let mut child = KillOnDrop(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vllm-sim starts"),
    );
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let addrs: Vec<String> = (0..args.pods)
        .map(|_| {
            let line = lines.next().expect("startup line").expect("utf-8");
            line.split_whitespace().nth(4).expect("address").to_string()
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .build_http();
        let prompt = "Summarise the state of the pool and pick the best pod. ".repeat(16);
        let body = Bytes::from(
            serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt,
                "max_tokens": args.max_tokens, "ignore_eos": true, "stream": true})
            .to_string(),
        );
        println!(
            "bench-sim: {} pods in one vllm-sim process (pid {pid}), {} s per level, {} tokens per stream",
            args.pods, args.seconds, args.max_tokens
        );
        println!("| streams | requests | errors | tokens/s | client ITL ms | sim ITL ms | loop lag | total lag | sim CPU % | sustained |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let mut best = 0;
        for &level in &args.levels {
            let totals = Arc::new(Totals::default());
            let mut before = (0.0, 0.0);
            for a in &addrs {
                let (s, c) = metric_sum_count(&get_text(&client, format!("http://{a}/metrics")).await, "vllm:inter_token_latency_seconds");
                before = (before.0 + s, before.1 + c);
            }
            let loop0 = loop_times(&client, &addrs).await;
            let cpu0 = cpu_seconds(pid);
            let start = Instant::now();
            let deadline = start + Duration::from_secs(args.seconds);
            let mut tasks = Vec::new();
            for i in 0..level {
                let (client, totals, body) = (client.clone(), Arc::clone(&totals), body.clone());
                let addr = addrs[i % addrs.len()].clone();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline {
                        match one_stream(&client, &addr, body.clone()).await {
                            Some((tokens, gap)) => {
                                totals.requests.fetch_add(1, Ordering::Relaxed);
                                totals.tokens.fetch_add(tokens, Ordering::Relaxed);
                                if tokens > 1 {
                                    totals.itl_us_sum.fetch_add(gap.as_micros() as u64, Ordering::Relaxed);
                                    totals.itl_samples.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            None => {
                                totals.errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(args.seconds + 120), t).await;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100.0;
            let loop1 = loop_times(&client, &addrs).await;
            let (busy, lost) = (loop1.0 - loop0.0, loop1.1 - loop0.1);
            let mut after = (0.0, 0.0);
            for a in &addrs {
                let (s, c) = metric_sum_count(&get_text(&client, format!("http://{a}/metrics")).await, "vllm:inter_token_latency_seconds");
                after = (after.0 + s, after.1 + c);
            }
            let model_itl = if after.1 > before.1 { (after.0 - before.0) / (after.1 - before.1) } else { f64::NAN };
            let samples = totals.itl_samples.load(Ordering::Relaxed).max(1);
            let client_itl = totals.itl_us_sum.load(Ordering::Relaxed) as f64 / samples as f64 / 1e6;
            // The simulated ITL includes time the loop gave up when it fell
            // behind; add that back to compare with what the model intended.
            let loop_lag = if busy > 0.0 { 1.0 + lost / busy } else { 1.0 };
            let lag = client_itl / model_itl * loop_lag;
            let errors = totals.errors.load(Ordering::Relaxed);
            let ok = errors == 0 && lag <= 1.10;
            if ok {
                best = best.max(level);
            }
            println!(
                "| {level} | {} | {errors} | {:.0} | {:.2} | {:.2} | {:.3} | {:.2} | {:.0} | {} |",
                totals.requests.load(Ordering::Relaxed),
                totals.tokens.load(Ordering::Relaxed) as f64 / elapsed,
                client_itl * 1e3,
                model_itl * 1e3,
                loop_lag,
                lag,
                cpu,
                if ok { "yes" } else { "no" }
            );
        }
        println!("bench-sim: one process sustained {best} concurrent streams (lag <= 1.10, no errors)");
    });
}
