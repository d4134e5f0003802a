//! The filter's pick reacts to pod state: a pod whose queue is held high is
//! avoided, and requests for a LoRA adapter go to the pod that has it resident.

use std::time::Duration;

use anyhow::{ensure, Result};
use integration::e2e::load::{run_concurrently, share};
use integration::e2e::scenarios;
use integration::e2e::stack::Stack;

const BASE_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

async fn gke_stack(time_scale: &str) -> Result<Stack> {
    let stack = Stack::start(scenarios::gke_spec(
        3,
        &["--time-scale", time_scale, "--seed", "11"],
    )?)
    .await?;
    let probe = format!(r#"{{"model":"{BASE_MODEL}","prompt":"hi","max_tokens":1}}"#);
    stack.wait_routable("/v1/completions", &[], &probe).await?;
    Ok(stack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_its_queue_held_high_gets_under_5_percent() -> Result<()> {
    const HELD: usize = 20;
    const REQUESTS: usize = 200;
    let stack = gke_stack("0.02").await?;
    let busy = stack.fleet.pods[0].clone();
    let mut held = stack.hold_queue(&busy, HELD, BASE_MODEL).await?;

    // A request the gateway sends to the paused pod cannot finish while it is
    // paused: count a timeout as a request sent there.
    let replies = run_concurrently(REQUESTS, 4, |i| {
        let client = stack.client.clone();
        let url = stack.url("/v1/completions");
        let body = format!(r#"{{"model":"{BASE_MODEL}","prompt":"gateway {i}","max_tokens":2}}"#);
        async move {
            match tokio::time::timeout(Duration::from_secs(2), client.post(&url, &[], body)).await {
                Ok(reply) => reply.map(Some),
                Err(_) => Ok(None),
            }
        }
    })
    .await;
    let mut to_busy = 0;
    for reply in replies {
        match reply? {
            None => to_busy += 1,
            Some(reply) => {
                ensure!(
                    reply.status == 200,
                    "{} {}\n{}",
                    reply.status,
                    reply.text(),
                    stack.diagnostics()
                );
                if reply.served_by() == Some(busy.name.as_str()) {
                    to_busy += 1;
                }
            }
        }
    }
    stack
        .fleet
        .set_faults(&busy.name, serde_json::json!({"pause_engine": false}))
        .await?;
    held.abort_all();
    let away = share(REQUESTS - to_busy, REQUESTS);
    assert!(
        away >= 0.95,
        "only {away:.3} of requests avoided the pod with {HELD} queued ({to_busy} went there)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_an_adapter_go_to_the_pod_where_it_is_resident() -> Result<()> {
    const ADAPTER: &str = "food-review";
    const REQUESTS: usize = 20;
    // Real-time pace, so the long requests below stay running for the test.
    let stack = gke_stack("1").await?;
    let resident = stack.fleet.pods[1].clone();
    // Every pod gets one long request, so load is equal; only the pod whose long
    // request is for the adapter has it resident.
    let mut long = tokio::task::JoinSet::new();
    for pod in &stack.fleet.pods {
        let model = if pod.name == resident.name {
            ADAPTER
        } else {
            BASE_MODEL
        };
        let client = stack.client.clone();
        let url = format!("{}/v1/completions", pod.url());
        let body = format!(r#"{{"model":"{model}","prompt":"a long story","max_tokens":3000}}"#);
        long.spawn(async move { client.post(&url, &[], body).await });
    }
    for pod in &stack.fleet.pods {
        stack
            .wait_for_endpoint("a running request on every pod", pod.addr(), |e, _| {
                e.running >= 1
            })
            .await?;
    }
    stack
        .wait_for_endpoint(
            "the adapter resident on one pod",
            resident.addr(),
            |e, pool| {
                e.running_adapters.iter().any(|&i| {
                    pool.adapter_names.get(i as usize).map(String::as_str) == Some(ADAPTER)
                })
            },
        )
        .await?;

    let mut served = Vec::new();
    for i in 0..REQUESTS {
        let body = format!(
            r#"{{"model":"{ADAPTER}","prompt":"review {i}: the soup was cold","max_tokens":1}}"#
        );
        let reply = stack.post("/v1/completions", &[], body).await?;
        ensure!(
            reply.status == 200,
            "{} {}\n{}",
            reply.status,
            reply.text(),
            stack.diagnostics()
        );
        served.push(reply.served_by().unwrap_or("?").to_string());
    }
    long.abort_all();
    let at_resident = served.iter().filter(|p| **p == resident.name).count();
    assert_eq!(
        at_resident, REQUESTS,
        "requests for {ADAPTER} should go to {} where it is resident; served by {served:?}",
        resident.name
    );
    Ok(())
}
