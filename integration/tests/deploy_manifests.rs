//! The gateway recipes in deploy/: the checked-in files are the renderer's
//! output for the worked case (examples/ack-canary/), every rendered manifest
//! validates against the real CRD schemas in ../shared/reference/gateways/
//! (skipped, loudly, when that folder is absent), and the cluster names the
//! filter is told about have the shapes the gateways generate.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration::deploy::{envoy_gateway, istio, render_all, worked_case_files, Inputs, Options};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rendered() -> Vec<integration::deploy::File> {
    let inputs = Inputs::read(&worked_case_files()).unwrap();
    render_all(&inputs, &Options::default()).unwrap()
}

#[test]
fn the_checked_in_deploy_files_are_the_rendered_worked_case() {
    for file in rendered() {
        let path = root().join("deploy").join(&file.path);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == file.text,
            "{} differs from the renderer's output; run `cargo run -p integration --bin render-deploy`",
            path.display()
        );
    }
}

#[test]
fn cluster_pools_name_the_clusters_each_gateway_generates() {
    let inputs = Inputs::read(&worked_case_files()).unwrap();
    let (_, eg) = envoy_gateway::rewrite_routes(&inputs, &Options::default()).unwrap();
    assert_eq!(
        eg,
        vec![
            (
                "httproute/default/inference-route/rule/0/backend/0".to_string(),
                "default/mymodel-pool-v1".to_string()
            ),
            (
                "httproute/default/inference-route/rule/0/backend/1".to_string(),
                "default/mymodel-pool-v2".to_string()
            ),
        ]
    );
    let (_, is) = istio::rewrite_routes(&inputs, &Options::default()).unwrap();
    assert_eq!(
        is[0].0,
        "outbound|8000||mymodel-pool-v1-llmgw.default.svc.cluster.local"
    );
    // EG's own golden output names per-backend clusters this way when a
    // backendRef has a filter (which the rewritten route gives each pool).
    let golden = root().join(
        "../shared/reference/gateways/envoy-gateway-v1.9.0/xds-golden/credential-injection-backend-filter.clusters.yaml",
    );
    match std::fs::read_to_string(&golden) {
        Ok(text) => assert!(
            text.contains(&envoy_gateway::backend_cluster(
                "default",
                "httproute-1",
                1,
                0
            )),
            "EG's golden clusters no longer use httproute/<ns>/<route>/rule/<i>/backend/<j>"
        ),
        Err(_) => eprintln!(
            "NOT RUN: the EG golden-name check ({} is absent)",
            golden.display()
        ),
    }
}

/// Runs scripts/validate-crds.py; None when the reference CRDs are absent.
fn validate(files: &[PathBuf]) -> Option<(bool, String)> {
    let crds = root().join("../shared/reference/gateways");
    if !crds.is_dir() {
        return None;
    }
    let python = root().join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(root().join("scripts/validate-crds.py"))
        .arg(&crds)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn every_rendered_manifest_validates_against_the_real_crd_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for file in rendered() {
        let path = dir.path().join(file.path.replace('/', "-"));
        std::fs::write(&path, &file.text).unwrap();
        files.push(path);
    }
    let Some((ok, report)) = validate(&files) else {
        eprintln!(
            "NOT RUN: CRD schema validation ({} is absent)",
            root().join("../shared/reference/gateways").display()
        );
        return;
    };
    assert!(ok, "{report}");
    assert!(report.contains("valid"), "{report}");
    for kind in [
        "EnvoyExtensionPolicy",
        "BackendTrafficPolicy",
        "ClientTrafficPolicy",
        "EnvoyPatchPolicy",
        "EnvoyFilter",
        "HTTPRoute",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("valid ") && l.contains(&format!(": {kind} "))),
            "{kind} not validated:\n{report}"
        );
    }

    // Negative control: the validator rejects what the apiserver would.
    let bad = dir.path().join("bad.yaml");
    let policies = std::fs::read_to_string(dir.path().join("envoy-gateway-policies.yaml")).unwrap();
    std::fs::write(
        &bad,
        policies.replace("type: LeastRequest", "type: Fastest"),
    )
    .unwrap();
    let (ok, report) = validate(&[bad]).unwrap();
    assert!(!ok && report.contains("INVALID"), "{report}");
}
