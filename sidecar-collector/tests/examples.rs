//! Every manifest under examples/ loads as it is, and each guide's scenario
//! turns into the pools, rules and objectives the guide describes.

use std::path::{Path, PathBuf};

use pool_state::{Criticality, FailureMode};
use sidecar_collector::discovery::file::FileSource;
use sidecar_collector::model::{self, DesiredPool, DesiredState};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn load(dir: &Path) -> DesiredState {
    let mut source = FileSource::new(dir.to_path_buf());
    let inventory = source
        .poll()
        .expect("examples directory readable")
        .unwrap_or_default();
    model::build(&inventory)
}

fn pool<'a>(state: &'a DesiredState, name: &str) -> &'a DesiredPool {
    state
        .pools
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("pool {name} missing: {state:#?}"))
}

/// (public model, [(target, weight)], criticality) per rule.
type RuleSummary = (String, Vec<(String, u32)>, i32);

fn rules(pool: &DesiredPool) -> Vec<RuleSummary> {
    pool.model_rules
        .iter()
        .map(|r| {
            (
                r.model.clone(),
                r.targets
                    .iter()
                    .map(|t| (t.model.clone(), t.weight))
                    .collect(),
                r.criticality,
            )
        })
        .collect()
}

#[test]
fn every_example_file_parses() {
    // The whole tree at once and each scenario alone: nothing fails to parse
    // or type-check (references to pools the scenario does not ship are fine).
    let mut dirs = vec![examples()];
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    assert!(dirs.len() >= 5, "{dirs:?}");
    for dir in dirs {
        let state = load(&dir);
        for problem in &state.problems {
            assert!(
                problem.message.contains("not found") || problem.message.contains("more than once"),
                "{}: {problem}",
                dir.display()
            );
        }
    }
}

#[test]
fn gke_deploy_gives_one_pool_with_objectives() {
    let state = load(&examples().join("gke-deploy"));
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    let p = pool(&state, "vllm-llama3.1-8b-instruct");
    assert_eq!(p.namespace, "default");
    assert_eq!(p.failure_mode, FailureMode::FailClose);
    let objectives: Vec<(&str, i32)> = p
        .objectives
        .iter()
        .map(|o| (o.name.as_str(), o.priority))
        .collect();
    assert_eq!(
        objectives,
        vec![
            ("cad-fabricator", 10),
            ("food-review", 10),
            ("llama3-base-model", 20)
        ]
    );
}

#[test]
fn ack_canary_gives_two_pools_and_the_lora_split() {
    let state = load(&examples().join("ack-canary"));
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    let critical = Criticality::Critical as i32;
    let v1 = pool(&state, "mymodel-pool-v1");
    assert_eq!(
        rules(v1),
        vec![
            ("mymodel".into(), vec![("mymodel".into(), 100)], critical),
            (
                "travelhelper".into(),
                vec![
                    ("travel-helper-v1".into(), 90),
                    ("travel-helper-v2".into(), 10)
                ],
                critical
            ),
        ]
    );
    let v2 = pool(&state, "mymodel-pool-v2");
    assert_eq!(
        rules(v2),
        vec![("mymodel".into(), vec![("mymodel".into(), 100)], critical)]
    );
}

#[test]
fn llm_d_gives_the_gke_pool_in_its_namespace_with_llm_d_objects() {
    let state = load(&examples().join("llm-d"));
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    let p = pool(&state, "vllm-llama3.1-8b-instruct");
    assert_eq!(p.namespace, "llm-d");
    // No endpointPickerRef (optional since GIE v1.6): FailClose.
    assert_eq!(p.failure_mode, FailureMode::FailClose);
    let objectives: Vec<(&str, i32)> = p
        .objectives
        .iter()
        .map(|o| (o.name.as_str(), o.priority))
        .collect();
    assert_eq!(
        objectives,
        vec![
            ("cad-fabricator", 10),
            ("food-review", 10),
            ("llama3-base-model", 20)
        ]
    );
    assert_eq!(
        rules(p),
        vec![(
            "llm".into(),
            vec![("llm-v1".into(), 90), ("llm-v2".into(), 10)],
            Criticality::Unspecified as i32
        )]
    );
}

#[test]
fn the_whole_tree_has_the_gke_pool_in_two_namespaces() {
    // examples/ as the demo loads it: gke-deploy's pool in `default` and the
    // same pool name in `llm-d`, each with its own objectives.
    let state = load(&examples());
    let gke: Vec<(&str, usize)> = state
        .pools
        .iter()
        .filter(|p| p.name == "vllm-llama3.1-8b-instruct")
        .map(|p| (p.namespace.as_str(), p.objectives.len()))
        .collect();
    assert_eq!(gke, vec![("default", 3), ("llm-d", 3)]);
}

#[test]
fn gke_rollout_model_waits_for_its_pool() {
    let state = load(&examples().join("gke-rollout"));
    assert!(state.pools.is_empty());
    assert_eq!(state.problems.len(), 1, "{:?}", state.problems);
    assert!(state.problems[0].object.contains("inferencemodel-sample"));
    assert!(state.problems[0].message.contains("llm-pool"));
}

#[test]
fn deploy_rbac_grants_every_watched_kind() {
    use sidecar_collector::discovery::file::parse_documents;
    use sidecar_collector::resources::Kind;
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rbac =
        parse_documents(&std::fs::read_to_string(deploy.join("rbac.yaml")).unwrap()).unwrap();
    let role = rbac
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    for kind in Kind::ALL {
        let (group, _, _, plural) = kind.api();
        let granted = role["rules"].as_array().unwrap().iter().any(|rule| {
            let has = |field: &str, want: &str| {
                rule[field]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x == want))
            };
            has("apiGroups", group)
                && has("resources", plural)
                && ["get", "list", "watch"].iter().all(|v| has("verbs", v))
        });
        assert!(
            granted,
            "rbac.yaml does not grant get/list/watch on {plural}.{group}"
        );
    }
    let collector =
        parse_documents(&std::fs::read_to_string(deploy.join("collector.yaml")).unwrap()).unwrap();
    let deployment = collector
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let args: Vec<&str> = args.iter().filter_map(|a| a.as_str()).collect();
    // The manifest's flags must be ones the binary accepts.
    let mut argv = vec!["sidecar-collector"];
    argv.extend(args);
    <sidecar_collector::cli::Cli as clap::Parser>::try_parse_from(&argv)
        .expect("deploy/collector.yaml args parse");
}
