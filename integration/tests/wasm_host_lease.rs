//! The collector lease between worker VMs through shared data with real CAS:
//! exactly one holder keeps the Watch stream; when it dies, stalls or loses
//! its stream, a worker has a stream again within a second of host time; a
//! snapshot nobody refreshes ages out.

use std::time::Duration;

use integration::wasm_host::fixtures::{completion_body, endpoint, pool, snapshot};
use integration::wasm_host::{FilterModule, Host, Worker};
use pool_state::{FailureMode, Pool};

const STEP: Duration = Duration::from_millis(50);

fn filter() -> FilterModule {
    FilterModule::gateway_filter().expect("target/gateway_filter.wasm (run `make wasm`)")
}

fn pools() -> Vec<Pool> {
    vec![pool(
        "pool-a",
        FailureMode::FailClose,
        vec![
            endpoint("10.0.0.1:8000", 0, 0.1),
            endpoint("10.0.0.2:8000", 2, 0.3),
        ],
    )]
}

fn workers(host: &Host, n: usize) -> Vec<Worker> {
    (0..n)
        .map(|_| host.start_worker(&filter(), "{}").unwrap())
        .collect()
}

/// Advances in small steps until exactly one Watch stream is open (other
/// than `except`) and returns it with the host time that took.
fn wait_for_new_stream(host: &Host, except: Option<u64>, limit: Duration) -> (u32, u64, Duration) {
    let mut waited = Duration::ZERO;
    loop {
        let open: Vec<_> = host
            .collector()
            .open_streams()
            .into_iter()
            .filter(|s| s.is_watch() && Some(s.id) != except)
            .collect();
        assert!(open.len() <= 1, "two holders at once: {open:?}");
        if let Some(stream) = open.first() {
            return (stream.worker, stream.id, waited);
        }
        assert!(waited < limit, "no worker took over within {limit:?}");
        host.advance(STEP).unwrap();
        waited += STEP;
    }
}

fn lease_holder_value(host: &Host) -> String {
    String::from_utf8(host.shared_data("llmgw.lease").expect("lease key").0).unwrap()
}

fn routes(worker: &Worker) -> bool {
    worker
        .request()
        .cluster("pool-a")
        .body(completion_body("base", 200))
        .send()
        .unwrap()
        .forwarded()
}

#[test]
fn exactly_one_worker_holds_the_stream_and_everyone_routes_from_its_snapshot() {
    let host = Host::new();
    let all = workers(&host, 4);
    for _ in 0..20 {
        host.advance(Duration::from_millis(100)).unwrap();
        let open: Vec<_> = host.collector().open_streams();
        assert_eq!(open.len(), 1, "{open:?}");
    }
    let stream = &host.collector().open_streams()[0];
    assert!(stream.is_watch());
    assert!(stream.half_closed, "the WatchRequest ends the client side");
    let request: pool_state::WatchRequest =
        prost::Message::decode(stream.sent[0].as_slice()).unwrap();
    assert!(request.pools.is_empty());
    assert_eq!(host.collector().streams().len(), 1, "no reconnect churn");
    assert!(lease_holder_value(&host).contains(':'));

    host.collector().push(&snapshot(1, pools())).unwrap();
    for worker in &all {
        assert!(routes(worker), "worker {} routes", worker.id());
    }
    assert!(host.shared_data("llmgw.snapshot").is_some());
    assert!(host.shared_data("llmgw.snapshot.meta").is_some());
}

#[test]
fn when_the_holder_dies_another_worker_takes_over_within_a_second() {
    let host = Host::new();
    let mut all = workers(&host, 3);
    let (holder, stream, _) = wait_for_new_stream(&host, None, Duration::from_secs(1));
    host.collector().push(&snapshot(1, pools())).unwrap();
    let before = lease_holder_value(&host);

    let index = all.iter().position(|w| w.id() == holder).unwrap();
    drop(all.remove(index));
    let (new_holder, _, waited) = wait_for_new_stream(&host, Some(stream), Duration::from_secs(1));
    assert_ne!(new_holder, holder);
    assert!(waited <= Duration::from_secs(1), "took {waited:?}");
    assert_ne!(lease_holder_value(&host), before);

    host.collector().push(&snapshot(2, pools())).unwrap();
    for worker in &all {
        assert!(routes(worker));
    }
}

#[test]
fn a_stalled_holder_loses_the_lease_and_drops_its_stream_when_it_wakes() {
    let host = Host::new();
    let all = workers(&host, 2);
    let (holder, stream, _) = wait_for_new_stream(&host, None, Duration::from_secs(1));
    let stalled = all.iter().find(|w| w.id() == holder).unwrap();
    stalled.set_stalled(true);
    let (new_holder, _, waited) = wait_for_new_stream(&host, Some(stream), Duration::from_secs(1));
    assert_ne!(new_holder, holder);
    assert!(waited <= Duration::from_secs(1), "took {waited:?}");

    // The old holder wakes up, sees someone else's live lease, and lets go.
    stalled.set_stalled(false);
    host.advance(Duration::from_millis(300)).unwrap();
    let open = host.collector().open_streams();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].worker, new_holder);
}

#[test]
fn a_closed_stream_is_reopened_within_a_second() {
    let host = Host::new();
    let _all = workers(&host, 2);
    let (_, stream, _) = wait_for_new_stream(&host, None, Duration::from_secs(1));
    host.collector().close_stream(stream, 14).unwrap();
    let (_, _, waited) = wait_for_new_stream(&host, Some(stream), Duration::from_secs(1));
    assert!(waited <= Duration::from_secs(1), "took {waited:?}");
    let closes: i64 = host
        .metrics()
        .iter()
        .filter(|m| m.name.starts_with("llmgw_collector_stream_closed_total"))
        .map(|m| m.value)
        .sum();
    assert_eq!(closes, 1);
}

#[test]
fn a_snapshot_nobody_refreshes_ages_out() {
    let host = Host::new();
    let all = workers(&host, 2);
    wait_for_new_stream(&host, None, Duration::from_secs(1));
    host.collector().push(&snapshot(1, pools())).unwrap();
    assert!(routes(&all[0]) && routes(&all[1]));

    // The stream stays open but silent (a wedged collector).
    host.advance(Duration::from_millis(2_500)).unwrap();
    assert!(routes(&all[0]), "still within state_timeout_ms");
    host.advance(Duration::from_millis(1_000)).unwrap();
    for worker in &all {
        let exchange = worker
            .request()
            .cluster("pool-a")
            .body(completion_body("base", 200))
            .send()
            .unwrap();
        assert_eq!(exchange.status(), Some(503), "{exchange:?}");
    }
    // A fresh push (on whatever stream is open now) revives routing.
    let delivered = host.collector().push(&snapshot(2, pools())).unwrap();
    if delivered == 0 {
        wait_for_new_stream(&host, None, Duration::from_secs(3));
        host.collector().push(&snapshot(3, pools())).unwrap();
    }
    assert!(routes(&all[0]) && routes(&all[1]));
}
