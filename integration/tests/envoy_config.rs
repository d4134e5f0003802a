//! The checked-in configuration is the one the tests exercise, and Envoy
//! accepts it; the demo's pods describe the guides' scenarios.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::Result;
use integration::e2e::artifacts::{envoy_binary, filter_wasm, workspace_root};
use integration::e2e::envoy_config::EnvoyConfig;
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

#[test]
fn envoy_validates_the_demo_config_with_the_real_filter() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = EnvoyConfig::demo();
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
