//! Kubernetes mode: one kube-rs watcher per resource kind (InferencePool in
//! both groups, InferenceModel, InferenceObjective and InferenceModelRewrite in
//! each of their groups, Pod), namespace-scoped or cluster-wide.
//!
//! A custom kind is watched only where the API server serves it: API
//! discovery (`GET /apis/<group>/<version>`) says whether its CRD is
//! installed. A kind that is not served counts as empty (not an error; one
//! log line) and is looked for again every [`DISCOVERY_RECHECK`], so a CRD
//! installed later is picked up, and one removed later (the watch gets 404)
//! goes back to that state.
//!
//! Watchers re-list after a watch expires (410 Gone) and resume after a
//! dropped connection, with kube's default backoff. Each kind keeps its own
//! map; a re-list replaces the map atomically at `InitDone`, so objects deleted
//! while the watch was down disappear.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::{mpsc, watch};

use super::{Inventory, Stored};
use crate::model::Problem;
use crate::resources::{Kind, Parsed, Resource};

/// What one kind's watcher reports to the aggregator.
enum Update {
    Init,
    InitApply(String, Converted),
    InitDone,
    Apply(String, Converted),
    Delete(String),
    /// The API server does not serve this kind (404).
    Unavailable,
}

enum Converted {
    Object(Box<Resource>),
    Invalid(Problem),
}

/// Objects (and invalid ones) of one kind by `namespace/name`.
type Objects = (HashMap<String, Arc<Stored>>, HashMap<String, Problem>);

#[derive(Default)]
struct KindState {
    live: HashMap<String, Arc<Stored>>,
    invalid: HashMap<String, Problem>,
    /// Collects a re-list until `InitDone` replaces `live` with it.
    buffer: Option<Objects>,
    synced: bool,
}

/// How often a kind the API server does not serve is looked for again.
pub const DISCOVERY_RECHECK: Duration = Duration::from_secs(30);

/// Watches every kind with `client` (in `namespace`, or all namespaces) and
/// publishes the combined inventory on `out` until it closes.
pub async fn run(client: Client, namespace: Option<String>, out: watch::Sender<Arc<Inventory>>) {
    run_with_recheck(client, namespace, out, DISCOVERY_RECHECK).await
}

/// [`run`], looking for kinds that are not served every `recheck`.
pub async fn run_with_recheck(
    client: Client,
    namespace: Option<String>,
    out: watch::Sender<Arc<Inventory>>,
    recheck: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Kind, Update)>(1024);
    let mut tasks = Vec::new();
    for kind in Kind::ALL {
        tasks.push(tokio::spawn(watch_kind(
            client.clone(),
            namespace.clone(),
            kind,
            tx.clone(),
            recheck,
        )));
    }
    drop(tx);
    let mut states: HashMap<Kind, KindState> = Kind::ALL
        .iter()
        .map(|k| (*k, KindState::default()))
        .collect();
    let mut seen_order = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for (kind, update) in batch {
            apply(
                states.get_mut(&kind).expect("every kind has a state"),
                kind,
                update,
                &mut seen_order,
            );
        }
        let inventory = Inventory {
            objects: states
                .values()
                .flat_map(|s| s.live.values().cloned())
                .collect(),
            problems: states
                .values()
                .flat_map(|s| s.invalid.values().cloned())
                .collect(),
            synced: states.values().all(|s| s.synced),
        };
        if out.send(Arc::new(inventory)).is_err() {
            break;
        }
    }
    for task in tasks {
        task.abort();
    }
}

fn apply(state: &mut KindState, kind: Kind, update: Update, seen_order: &mut u64) {
    let mut store = |map: &mut HashMap<String, Arc<Stored>>,
                     invalid: &mut HashMap<String, Problem>,
                     key: String,
                     converted: Converted| {
        match converted {
            Converted::Object(resource) => {
                *seen_order += 1;
                invalid.remove(&key);
                map.insert(
                    key,
                    Arc::new(Stored {
                        resource: *resource,
                        seen_order: *seen_order,
                        origin: "api".into(),
                    }),
                );
            }
            Converted::Invalid(problem) => {
                map.remove(&key);
                invalid.insert(key, problem);
            }
        }
    };
    match update {
        Update::Init => state.buffer = Some(Default::default()),
        Update::InitApply(key, converted) => {
            let (map, invalid) = state.buffer.get_or_insert_with(Default::default);
            store(map, invalid, key, converted);
        }
        Update::InitDone => {
            let (map, invalid) = state.buffer.take().unwrap_or_default();
            state.live = map;
            state.invalid = invalid;
            if !state.synced {
                tracing::info!(kind = ?kind, objects = state.live.len(), "initial list done");
            }
            state.synced = true;
        }
        Update::Apply(key, converted) => store(&mut state.live, &mut state.invalid, key, converted),
        Update::Delete(key) => {
            state.live.remove(&key);
            state.invalid.remove(&key);
        }
        Update::Unavailable => {
            state.live.clear();
            state.invalid.clear();
            state.buffer = None;
            state.synced = true;
        }
    }
}

fn api_resource(kind: Kind) -> ApiResource {
    let (group, version, kind_name, plural) = kind.api();
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind_name), plural)
}

fn convert(kind: Kind, object: DynamicObject) -> (String, Converted) {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let (group, version, kind_name, _) = kind.api();
    let mut value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(err) => {
            return (
                key.clone(),
                Converted::Invalid(Problem {
                    object: format!("{kind_name}/{key}"),
                    message: err.to_string(),
                }),
            )
        }
    };
    // List items may omit apiVersion/kind; the watch says what they are.
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    value["apiVersion"] = api_version.into();
    value["kind"] = kind_name.into();
    let converted = match Resource::from_value(value) {
        Parsed::Ok(resource) => Converted::Object(resource),
        Parsed::Invalid(message) | Parsed::NotOurs { kind: message, .. } => {
            Converted::Invalid(Problem {
                object: format!("{kind_name}/{key}"),
                message,
            })
        }
    };
    (key, converted)
}

/// Whether the API server serves a kind.
enum Served {
    Yes,
    No,
    /// Discovery itself failed (not a 404); the reason.
    Unknown(String),
}

/// API discovery for one kind: its group/version lists its plural. Core
/// kinds (Pod) are always served.
async fn served(client: &Client, kind: Kind) -> Served {
    let (group, version, _, plural) = kind.api();
    if group.is_empty() {
        return Served::Yes;
    }
    match client
        .list_api_group_resources(&format!("{group}/{version}"))
        .await
    {
        Ok(list) if list.resources.iter().any(|r| r.name == plural) => Served::Yes,
        Ok(_) => Served::No,
        Err(kube::Error::Api(status)) if status.code == 404 => Served::No,
        Err(err) => Served::Unknown(err.to_string()),
    }
}

/// How one watch of a served kind ended.
enum WatchEnded {
    /// The aggregator is gone: stop.
    Closed,
    /// The API server stopped serving the kind (404: CRD removed).
    NotServed,
}

async fn watch_kind(
    client: Client,
    namespace: Option<String>,
    kind: Kind,
    tx: mpsc::Sender<(Kind, Update)>,
    recheck: Duration,
) {
    let (group, version, kind_name, _) = kind.api();
    loop {
        let mut absent = false;
        loop {
            match served(&client, kind).await {
                Served::Yes => break,
                Served::No => {
                    if !absent {
                        tracing::info!(kind = %kind_name, group = %group, version = %version,
                            "not served by the API server (CRD not installed): not watched, treated as empty; checking again every {recheck:?}");
                        if tx.send((kind, Update::Unavailable)).await.is_err() {
                            return;
                        }
                        absent = true;
                    }
                    tokio::time::sleep(recheck).await;
                }
                Served::Unknown(err) => {
                    tracing::warn!(kind = %kind_name, group = %group, version = %version, error = %err,
                        "API discovery failed; watching the kind anyway");
                    break;
                }
            }
        }
        if absent {
            tracing::info!(kind = %kind_name, group = %group, version = %version, "now served; watching");
        }
        match watch_served(&client, &namespace, kind, &tx).await {
            WatchEnded::Closed => return,
            WatchEnded::NotServed => tokio::time::sleep(recheck).await,
        }
    }
}

async fn watch_served(
    client: &Client,
    namespace: &Option<String>,
    kind: Kind,
    tx: &mpsc::Sender<(Kind, Update)>,
) -> WatchEnded {
    let resource = api_resource(kind);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(item) = stream.next().await {
        let update = match item {
            Ok(Event::Init) => Update::Init,
            Ok(Event::InitApply(object)) => {
                let (key, converted) = convert(kind, object);
                Update::InitApply(key, converted)
            }
            Ok(Event::InitDone) => Update::InitDone,
            Ok(Event::Apply(object)) => {
                let (key, converted) = convert(kind, object);
                Update::Apply(key, converted)
            }
            Ok(Event::Delete(object)) => {
                let (key, _) = convert(kind, object);
                Update::Delete(key)
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if status.code == 404 =>
            {
                tracing::info!(kind = ?kind, "the API server stopped serving this kind (CRD removed?); treating it as empty");
                if tx.send((kind, Update::Unavailable)).await.is_err() {
                    return WatchEnded::Closed;
                }
                return WatchEnded::NotServed;
            }
            Err(err) => {
                let hint = match &err {
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                    | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        if s.code == 403 =>
                    {
                        " (forbidden: apply deploy/rbac.yaml for the collector's service account)"
                    }
                    _ => "",
                };
                tracing::warn!(kind = ?kind, error = %err, "watch error{hint}; retrying");
                continue;
            }
        };
        if tx.send((kind, update)).await.is_err() {
            return WatchEnded::Closed;
        }
    }
    WatchEnded::Closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn relist_replaces_objects_at_init_done() {
        let mut state = KindState::default();
        let mut order = 0;
        let pod = |name: &str| {
            convert(
                Kind::Pod,
                dynamic(
                    json!({"metadata":{"name":name,"namespace":"ns"},"status":{"podIP":"10.0.0.1"}}),
                ),
            )
        };
        let (k, c) = pod("a");
        apply(&mut state, Kind::Pod, Update::Init, &mut order);
        apply(&mut state, Kind::Pod, Update::InitApply(k, c), &mut order);
        assert!(
            !state.synced && state.live.is_empty(),
            "nothing live before InitDone"
        );
        apply(&mut state, Kind::Pod, Update::InitDone, &mut order);
        assert!(state.synced && state.live.contains_key("ns/a"));
        // A re-list without "a" removes it at InitDone.
        let (k, c) = pod("b");
        apply(&mut state, Kind::Pod, Update::Init, &mut order);
        apply(&mut state, Kind::Pod, Update::InitApply(k, c), &mut order);
        assert!(
            state.live.contains_key("ns/a"),
            "old state serves until the re-list completes"
        );
        apply(&mut state, Kind::Pod, Update::InitDone, &mut order);
        assert_eq!(state.live.keys().collect::<Vec<_>>(), vec!["ns/b"]);
        apply(
            &mut state,
            Kind::Pod,
            Update::Delete("ns/b".into()),
            &mut order,
        );
        assert!(state.live.is_empty());
    }

    #[test]
    fn invalid_objects_become_problems() {
        let (key, converted) = convert(
            Kind::Model,
            dynamic(json!({"metadata":{"name":"m","namespace":"ns"},"spec":{"targetModels":7}})),
        );
        assert_eq!(key, "ns/m");
        match converted {
            Converted::Invalid(p) => assert_eq!(p.object, "InferenceModel/ns/m"),
            Converted::Object(o) => panic!("{o:?}"),
        }
    }
}
