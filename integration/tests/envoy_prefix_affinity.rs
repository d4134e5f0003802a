//! Prefix affinity through Envoy with two workers: every turn of a multi-turn
//! chat (the `messages` grow by the previous turns) lands on the same simulated
//! pod while that pod has capacity, different conversations spread over the
//! pods, and a conversation whose pod has its queue held high moves to another
//! pod — the same one for every following turn — and comes back once the queue
//! drains.
//!
//! Both workers are exercised *and checked*: every request goes over its own
//! new connection (a fresh client), the conversations' turns are sent
//! concurrently, and the test asserts that Envoy's per-worker listener stats
//! (`listener.<addr>.worker_<n>.downstream_cx_total`) counted connections on
//! worker 0 and worker 1. Affinity therefore holds across workers, not just
//! within one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use integration::e2e::http::HttpClient;
use integration::e2e::scenarios;
use integration::e2e::stack::Stack;
use integration::e2e::wait::wait_until;
use serde_json::{json, Value};

const BASE_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const PODS: usize = 4;
const CONVERSATIONS: usize = 8;
/// Requests a turn may take before it counts as stuck on a paused pod.
const TURN_TIMEOUT: Duration = Duration::from_secs(3);

/// One chat: its own system prompt (longer than the filter's affinity depth of
/// 4 × 64 bytes, so every turn shares the affinity key) and the turns so far.
struct Conversation {
    messages: Vec<Value>,
}

impl Conversation {
    fn new(id: usize) -> Self {
        let system = format!(
            "Conversation {id}: you are a support assistant for product line {id}. {}",
            "Answer briefly, cite the manual section, and never invent part numbers. ".repeat(6)
        );
        Conversation {
            messages: vec![json!({"role": "system", "content": system})],
        }
    }

    /// The request body of the next turn (previous turns + a new question).
    fn next_turn(&mut self, turn: usize) -> String {
        self.messages.push(json!({
            "role": "user",
            "content": format!("Question {turn}: how do I reset the device?"),
        }));
        json!({"model": BASE_MODEL, "messages": self.messages, "max_tokens": 4}).to_string()
    }

    /// Appends the assistant's answer, as a chat client would.
    fn record_answer(&mut self, reply: &Value) {
        let content = reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.messages
            .push(json!({"role": "assistant", "content": content}));
    }
}

/// Sends one turn of every conversation concurrently, each over a new
/// connection, and returns the pod that served each (`None`: no reply within
/// [`TURN_TIMEOUT`], i.e. stuck on a paused pod).
async fn send_turn(
    stack: &Stack,
    conversations: &mut [Conversation],
    turn: usize,
) -> Result<Vec<Option<String>>> {
    let url = stack.url("/v1/chat/completions");
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conversation) in conversations.iter_mut().enumerate() {
        let body = conversation.next_turn(turn);
        let url = url.clone();
        tasks.spawn(async move {
            // A fresh client: a new TCP connection, which the kernel hands to
            // either worker.
            let client = HttpClient::new();
            let reply = tokio::time::timeout(TURN_TIMEOUT, client.post(&url, &[], body)).await;
            (i, reply)
        });
    }
    let mut served = vec![None; conversations.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, reply) = joined?;
        let Ok(reply) = reply else { continue };
        let reply = reply?;
        ensure!(
            reply.status == 200,
            "turn {turn} of conversation {i}: {} {}\n{}",
            reply.status,
            reply.text(),
            stack.diagnostics()
        );
        let pod = reply
            .served_by()
            .ok_or_else(|| anyhow!("reply without x-sim-pod"))?
            .to_string();
        conversations[i].record_answer(&reply.json()?);
        served[i] = Some(pod);
    }
    Ok(served)
}

/// Connections each Envoy worker accepted on the gateway listener.
async fn connections_per_worker(stack: &Stack) -> Result<HashMap<String, u64>> {
    let url = format!("http://{}/stats", stack.envoy.admin);
    let stats = HttpClient::new().get(&url).await?.text();
    let listener = format!("listener.{}_{}.", stack.gateway.ip(), stack.gateway.port());
    let mut per_worker = HashMap::new();
    for line in stats.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if let Some(worker) = name
            .strip_prefix(&listener)
            .and_then(|rest| rest.strip_suffix(".downstream_cx_total"))
            .filter(|w| w.starts_with("worker_"))
        {
            per_worker.insert(worker.to_string(), value.trim().parse()?);
        }
    }
    Ok(per_worker)
}

fn expect_served(served: &[Option<String>], turn: usize) -> Result<Vec<String>> {
    served
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            pod.clone()
                .ok_or_else(|| anyhow!("turn {turn} of conversation {i} got no reply"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_sticks_to_its_pod_across_workers_and_moves_when_the_pod_is_full() -> Result<()> {
    const HELD: usize = 20;
    let started = std::time::Instant::now();
    let stack = Stack::start(scenarios::gke_spec(
        PODS,
        &["--time-scale", "0.02", "--seed", "7"],
    )?)
    .await?;
    let probe = format!(r#"{{"model":"{BASE_MODEL}","prompt":"hi","max_tokens":1}}"#);
    stack.wait_routable("/v1/completions", &[], &probe).await?;

    // Phase 1: every pod has capacity. Each conversation's turns stay on the
    // pod its first turn went to.
    let mut conversations: Vec<Conversation> = (0..CONVERSATIONS).map(Conversation::new).collect();
    let home = expect_served(&send_turn(&stack, &mut conversations, 0).await?, 0)?;
    for turn in 1..4 {
        let served = expect_served(&send_turn(&stack, &mut conversations, turn).await?, turn)?;
        for (i, (pod, home)) in served.iter().zip(&home).enumerate() {
            ensure!(
                pod == home,
                "conversation {i} moved from {home} to {pod} at turn {turn} with every pod idle"
            );
        }
    }
    let spread: BTreeSet<&String> = home.iter().collect();
    ensure!(
        spread.len() >= 2,
        "{CONVERSATIONS} conversations all landed on {spread:?}: affinity does not spread"
    );
    // The filter reported every conversation's affinity key, and the
    // collector (a report tick and a publish later) placed each on the pod
    // the conversation lives on.
    let mut expected: Vec<String> = home
        .iter()
        .map(|pod| stack.fleet.pod(pod).addr().to_string())
        .collect();
    expected.sort();
    let collector = stack
        .collector
        .as_ref()
        .ok_or_else(|| anyhow!("collector stopped"))?;
    let placed_on = || async {
        let snapshot = collector.snapshot().await?;
        let pool = &snapshot.pools[0];
        let mut placed: Vec<String> = pool_state::placements::records(&pool.prefix_placements)
            .filter_map(|(_, endpoint)| pool.endpoints.get(endpoint as usize))
            .map(|e| e.address.clone())
            .collect();
        placed.sort();
        anyhow::Ok((pool.learns_prefix_placements, placed))
    };
    let learned = wait_until(
        "the collector to place every conversation",
        Duration::from_secs(5),
        || async { Ok(placed_on().await?.1.len() >= CONVERSATIONS) },
    )
    .await;
    let (learns, placed) = placed_on().await?;
    ensure!(
        learned.is_ok() && learns && placed == expected,
        "placements {placed:?}, conversations on {expected:?}\n{}",
        stack.diagnostics()
    );

    // Phase 2: the first conversation's pod is paused with a long queue.
    let full = stack.fleet.pod(&home[0]).clone();
    let mut held = stack.hold_queue(&full, HELD, BASE_MODEL).await?;
    let mut moved_to = None;
    for turn in 4..7 {
        let served = send_turn(&stack, &mut conversations, turn).await?;
        for (i, pod) in served.iter().enumerate() {
            let pod = pod.as_deref();
            if home[i] == full.name {
                ensure!(
                    pod.is_some() && pod != Some(full.name.as_str()),
                    "conversation {i} stayed on its full pod {} at turn {turn} ({pod:?})",
                    full.name
                );
                if i == 0 {
                    // Every worker agrees on the next pod in rendezvous order.
                    let first = moved_to.get_or_insert_with(|| pod.map(str::to_string));
                    ensure!(
                        first.as_deref() == pod,
                        "conversation 0 left {} but wandered: {first:?} then {pod:?}",
                        full.name
                    );
                }
            } else {
                ensure!(
                    pod == Some(home[i].as_str()),
                    "conversation {i} left its idle pod {} at turn {turn} ({pod:?})",
                    home[i]
                );
            }
        }
    }

    // Phase 3: the queue drains; the conversation goes back to its owner.
    stack
        .fleet
        .set_faults(&full.name, json!({"pause_engine": false}))
        .await?;
    while let Some(done) = held.join_next().await {
        let reply = done??;
        ensure!(reply.status == 200, "held request: {}", reply.status);
    }
    stack
        .wait_for_endpoint("the held pod's queue drained", full.addr(), |e, _| {
            e.waiting == 0 && e.running == 0
        })
        .await?;
    let served = expect_served(&send_turn(&stack, &mut conversations, 7).await?, 7)?;
    ensure!(
        served[0] == full.name,
        "conversation 0 did not return to {} once it drained (went to {})",
        full.name,
        served[0]
    );

    // Both workers accepted connections (each request used its own).
    let per_worker = connections_per_worker(&stack).await?;
    for worker in ["worker_0", "worker_1"] {
        let accepted = per_worker.get(worker).copied().unwrap_or(0);
        ensure!(
            accepted > 0,
            "Envoy {worker} accepted no connection: {per_worker:?}"
        );
    }
    ensure!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}
