//! The checked-in configuration is the one the tests exercise, and Envoy
//! accepts it; the demo's pods describe the guides' scenarios.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::Result;
use integration::e2e::artifacts::{envoy_binary, filter_wasm, workspace_root};
use integration::e2e::envoy_config::{DataPath, EnvoyConfig};
use integration::e2e::pods::parse_pods;

#[test]
fn the_checked_in_envoy_yaml_is_the_rendered_demo_config() {
    let checked_in =
        std::fs::read_to_string(workspace_root().join("envoy.yaml")).expect("envoy.yaml");
    assert!(
        checked_in == EnvoyConfig::demo().render(),
        "envoy.yaml differs from EnvoyConfig::demo(); regenerate it with \
         `cargo run -p integration --bin demo -- --print-envoy-config > envoy.yaml`"
    );
}

fn envoy_validates(config: &mut EnvoyConfig) -> Result<()> {
    let dir = tempfile::tempdir()?;
    config.wasm_path = filter_wasm()?.display().to_string();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config.render())?;
    let output = Command::new(envoy_binary()?)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()?;
    assert!(
        output.status.success(),
        "envoy --mode validate failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn envoy_validates_the_demo_config_with_the_real_filter() -> Result<()> {
    envoy_validates(&mut EnvoyConfig::demo())
}

/// The documented alternative (`bench-overhead --original-dst`) stays a
/// configuration Envoy accepts.
#[test]
fn envoy_validates_the_original_dst_alternative() -> Result<()> {
    let mut config = EnvoyConfig::demo();
    config.data_path = DataPath::OriginalDst;
    config.plugin_config =
        serde_json::json!({ "collector_cluster": "llmgw_collector", "fallbacks": 0 });
    let yaml = config.render();
    assert!(yaml.contains("type: ORIGINAL_DST") && !yaml.contains("override_host"));
    envoy_validates(&mut config)
}

#[test]
fn the_demo_pool_clusters_list_their_pods_under_override_host() {
    let yaml = EnvoyConfig::demo().render();
    assert!(!yaml.contains("ORIGINAL_DST"));
    assert_eq!(
        yaml.matches("envoy.load_balancing_policies.override_host")
            .count(),
        3
    );
    for pod in ["127.0.10.1", "127.0.10.3", "127.0.11.2", "127.0.12.2"] {
        assert!(
            yaml.contains(&format!("address: {pod}, port_value: 8000")),
            "{pod} missing"
        );
    }
    assert_eq!(
        yaml.matches("envoy.retry_host_predicates.previous_hosts")
            .count(),
        3,
        "every route retries elsewhere"
    );
    assert_eq!(
        yaml.matches("retry_budget").count(),
        3,
        "every pool has a retry budget"
    );
}

#[test]
fn the_demo_pods_cover_every_demo_pool_on_distinct_addresses() -> Result<()> {
    let yaml = std::fs::read_to_string(workspace_root().join("examples/demo/pods.yaml"))?;
    let pods = parse_pods(&yaml)?;
    let addrs: BTreeSet<_> = pods.iter().map(|p| p.addr()).collect();
    assert_eq!(addrs.len(), pods.len(), "two demo pods share an address");
    let release = |r: &str| {
        pods.iter()
            .filter(|p| p.labels.get("release").map(String::as_str) == Some(r))
            .count()
    };
    let gke = pods
        .iter()
        .filter(|p| p.labels.get("app").map(String::as_str) == Some("vllm-llama3.1-8b-instruct"))
        .count();
    assert_eq!(gke, 3, "the GKE guide runs 3 replicas");
    assert!(release("qwen") >= 2 && release("deepseek-r1") >= 1);
    Ok(())
}
