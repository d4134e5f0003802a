//! Kubernetes mode against a local HTTP server that replays recorded
//! list/watch responses: a dropped watch connection (resume from the last
//! resourceVersion), a 410 Gone (re-list, objects missing from it vanish),
//! terminating pods, API discovery (only kinds whose CRD is installed are
//! listed; one installed later is picked up), and llm-d.ai objects beside
//! the older groups.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sidecar_collector::discovery::{self, Inventory};
use sidecar_collector::model::{self, DesiredState};
use tokio::sync::watch;

enum WatchEnd {
    /// Abort the connection mid-body, as a crashed API server or LB would.
    Drop,
    /// Keep the stream open (until the test ends).
    Hold,
}

#[derive(Default)]
struct Script {
    lists: VecDeque<Value>,
    watches: VecDeque<(Vec<Value>, WatchEnd)>,
}

#[derive(Default)]
struct ApiServer {
    scripts: HashMap<String, Script>,
    /// Every request as "path?query", in order.
    log: Vec<String>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, value: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(value.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// API discovery of `/apis/<group>/<version>`: the resources some script
/// serves under it (as if their CRDs were installed); 404 when none.
fn discovery(server: &ApiServer, path: &str) -> Option<Response<Body>> {
    let group_version = path.strip_prefix("/apis/")?;
    if group_version.split('/').count() != 2 {
        return None;
    }
    let mut plurals: Vec<&str> = server
        .scripts
        .keys()
        .filter(|p| p.starts_with(&format!("{path}/")))
        .filter_map(|p| p.rsplit('/').next())
        .collect();
    plurals.sort_unstable();
    plurals.dedup();
    let resources: Vec<Value> = plurals
        .iter()
        .map(|plural| {
            json!({"name":plural,"singularName":"","namespaced":true,"kind":"Custom",
                "verbs":["get","list","watch"]})
        })
        .collect();
    (!resources.is_empty()).then(|| {
        full(
            200,
            json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":group_version,
                "resources":resources}),
        )
    })
}

fn handle(server: &Arc<Mutex<ApiServer>>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let mut server = server.lock().unwrap();
    server.log.push(format!("{path}?{query}"));
    if let Some(response) = discovery(&server, &path) {
        return response;
    }
    let Some(script) = server.scripts.get_mut(&path) else {
        return full(
            404,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"the server could not find the requested resource","reason":"NotFound","code":404}),
        );
    };
    if !query.contains("watch=true") {
        let list = if script.lists.len() > 1 {
            script.lists.pop_front()
        } else {
            script.lists.front().cloned()
        };
        return full(200, list.expect("a scripted list"));
    }
    let (events, end) = script
        .watches
        .pop_front()
        .unwrap_or((Vec::new(), WatchEnd::Hold));
    let frames = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("{e}\n"))))),
    );
    let body: Body = match end {
        WatchEnd::Hold => BodyExt::boxed(StreamBody::new(frames.chain(futures::stream::pending()))),
        WatchEnd::Drop => BodyExt::boxed(StreamBody::new(frames.chain(futures::stream::once(
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("connection dropped"))
            },
        )))),
    };
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

async fn serve(server: Arc<Mutex<ApiServer>>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = handle(&server, req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, task)
}

fn pod(name: &str, ip: &str, ready: bool, rv: &str) -> Value {
    json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"namespace":"default","resourceVersion":rv,
        "creationTimestamp":"2025-01-01T00:00:00Z","labels":{"app":"vllm"}},
        "spec":{"containers":[{"name":"vllm","image":"vllm/vllm-openai"}]},
        "status":{"podIP":ip,"conditions":[{"type":"Ready","status":if ready {"True"} else {"False"}}]}})
}

fn list(kind: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion":"v1","kind":kind,"metadata":{"resourceVersion":rv},"items":items})
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type":kind,"object":object})
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<Inventory>>,
    what: &str,
    mut accept: impl FnMut(&DesiredState) -> bool,
) -> DesiredState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = model::build(&rx.borrow_and_update());
        if accept(&state) {
            return state;
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}; last state: {state:#?}");
        }
    }
}

fn endpoints(state: &DesiredState) -> Vec<(String, String, bool)> {
    state
        .pools
        .iter()
        .flat_map(|p| &p.endpoints)
        .map(|e| (e.pod.clone(), e.address.clone(), e.pod_ready))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_follow_pods_through_a_drop_and_a_410() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut server = ApiServer::default();
    let pools = "/apis/inference.networking.k8s.io/v1/namespaces/default/inferencepools";
    server.scripts.insert(
        pools.into(),
        Script {
            lists: VecDeque::from([list(
                "InferencePoolList",
                "10",
                vec![json!({
            "apiVersion":"inference.networking.k8s.io/v1","kind":"InferencePool",
            "metadata":{"name":"pool","namespace":"default","resourceVersion":"10"},
            "spec":{"selector":{"matchLabels":{"app":"vllm"}},"targetPorts":[{"number":8000}],
                    "endpointPickerRef":{"name":"epp","failureMode":"FailOpen"}}})],
            )]),
            watches: VecDeque::new(),
        },
    );
    let objectives =
        "/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/default/inferenceobjectives";
    server.scripts.insert(
        objectives.into(),
        Script {
            lists: VecDeque::from([list(
                "InferenceObjectiveList",
                "20",
                vec![json!({
            "metadata":{"name":"batch","namespace":"default","resourceVersion":"20"},
            "spec":{"priority":-1,"poolRef":{"name":"pool"}}})],
            )]),
            watches: VecDeque::new(),
        },
    );
    // The same objective in llm-d.ai (newer, priority -3): the llm-d.ai copy wins.
    let llmd_objectives = "/apis/llm-d.ai/v1alpha2/namespaces/default/inferenceobjectives";
    server.scripts.insert(
        llmd_objectives.into(),
        Script {
            lists: VecDeque::from([list(
                "InferenceObjectiveList",
                "30",
                vec![json!({
            "metadata":{"name":"batch","namespace":"default","resourceVersion":"30",
                        "creationTimestamp":"2025-06-01T00:00:00Z"},
            "spec":{"priority":-3,"poolRef":{"name":"pool","group":"inference.networking.k8s.io"}}})],
            )]),
            watches: VecDeque::new(),
        },
    );
    let pods = "/api/v1/namespaces/default/pods";
    let mut terminating = pod("c", "10.0.0.3", true, "201");
    terminating["metadata"]["deletionTimestamp"] = json!("2025-01-02T00:00:00Z");
    server.scripts.insert(
        pods.into(),
        Script {
            lists: VecDeque::from([
                list("PodList", "100", vec![pod("a", "10.0.0.1", true, "100")]),
                list(
                    "PodList",
                    "200",
                    vec![
                        pod("a", "10.0.0.1", true, "200"),
                        pod("c", "10.0.0.3", true, "200"),
                    ],
                ),
            ]),
            watches: VecDeque::from([
                (
                    vec![
                        event("ADDED", pod("b", "10.0.0.2", true, "101")),
                        event("MODIFIED", pod("a", "10.0.0.1", false, "102")),
                    ],
                    WatchEnd::Drop,
                ),
                (
                    vec![event(
                        "ERROR",
                        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"too old resource version: 102 (150)","reason":"Expired","code":410}),
                    )],
                    WatchEnd::Hold,
                ),
                (vec![event("MODIFIED", terminating)], WatchEnd::Hold),
            ]),
        },
    );
    let server = Arc::new(Mutex::new(server));
    let (url, server_task) = serve(server.clone()).await;

    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(Inventory::default()));
    let discovery = tokio::spawn(discovery::kube::run_with_recheck(
        client,
        Some("default".into()),
        tx,
        Duration::from_millis(200),
    ));

    let state = wait_for(&mut rx, "the initial lists", |s| {
        s.synced && !s.pools.is_empty()
    })
    .await;
    assert_eq!(
        state.pools[0].failure_mode,
        pool_state::FailureMode::FailOpen
    );
    // The llm-d.ai copy of "batch" wins over the x-k8s.io one, and says so.
    assert_eq!(state.pools[0].objectives.len(), 1);
    assert_eq!(state.pools[0].objectives[0].priority, -3);
    assert!(
        state.problems.iter().any(|p| p.object
            == "InferenceObjective.inference.networking.x-k8s.io/default/batch"
            && p.message
                .contains("InferenceObjective.llm-d.ai/default/batch is used")),
        "{:?}",
        state.problems
    );

    wait_for(&mut rx, "watch events (b added, a not ready)", |s| {
        endpoints(s)
            == vec![
                ("a".into(), "10.0.0.1:8000".into(), false),
                ("b".into(), "10.0.0.2:8000".into(), true),
            ]
    })
    .await;

    // After the drop the watch resumes from rv 102, gets 410, re-lists: b is
    // gone (not in the new list), c arrives and then starts terminating.
    wait_for(&mut rx, "re-list after 410, terminating c dropped", |s| {
        endpoints(s) == vec![("a".into(), "10.0.0.1:8000".into(), true)]
            && server.lock().unwrap().scripts[pods].watches.is_empty()
    })
    .await;
    let log = server.lock().unwrap().log.clone();
    let pod_requests: Vec<&String> = log.iter().filter(|l| l.starts_with(pods)).collect();
    let lists = pod_requests
        .iter()
        .filter(|l| !l.contains("watch=true"))
        .count();
    assert_eq!(
        lists, 2,
        "one initial list and one re-list after 410: {pod_requests:#?}"
    );
    let watches: Vec<&&String> = pod_requests
        .iter()
        .filter(|l| l.contains("watch=true"))
        .collect();
    assert!(watches[0].contains("resourceVersion=100"), "{watches:#?}");
    assert!(
        watches[1].contains("resourceVersion=102"),
        "resumed after the drop: {watches:#?}"
    );
    assert!(
        watches[2].contains("resourceVersion=200"),
        "watch after the re-list: {watches:#?}"
    );
    // Kinds whose CRD is not installed were asked about (API discovery) but
    // never listed or watched, and did not block the sync.
    assert!(
        log.iter()
            .any(|l| l == "/apis/inference.networking.x-k8s.io/v1alpha2?"),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("inferencemodelrewrites")
            || l.contains("inferencemodels")
            || l.contains("/apis/inference.networking.k8s.io/v1alpha1/")),
        "an uninstalled kind was listed: {log:#?}"
    );

    // A CRD installed later (llm-d.ai InferenceModelRewrite) is found by the
    // next discovery round and its objects apply.
    let rewrites = "/apis/llm-d.ai/v1alpha2/namespaces/default/inferencemodelrewrites";
    server.lock().unwrap().scripts.insert(
        rewrites.into(),
        Script {
            lists: VecDeque::from([list(
                "InferenceModelRewriteList",
                "40",
                vec![json!({
            "metadata":{"name":"canary","namespace":"default","resourceVersion":"40"},
            "spec":{"poolRef":{"name":"pool"},"rules":[{"matches":[{"model":{"type":"Exact","value":"m"}}],
                    "targets":[{"modelRewrite":"m-v1","weight":90},{"modelRewrite":"m-v2","weight":10}]}]}})],
            )]),
            watches: VecDeque::new(),
        },
    );
    let state = wait_for(&mut rx, "the llm-d.ai rewrite installed later", |s| {
        s.pools.first().is_some_and(|p| !p.model_rules.is_empty())
    })
    .await;
    let rule = &state.pools[0].model_rules[0];
    assert_eq!(
        (rule.model.as_str(), rule.source.as_str()),
        ("m", "InferenceModelRewrite/default/canary")
    );
    assert_eq!(
        rule.targets
            .iter()
            .map(|t| (t.model.as_str(), t.weight))
            .collect::<Vec<_>>(),
        vec![("m-v1", 90), ("m-v2", 10)]
    );

    discovery.abort();
    server_task.abort();
}
