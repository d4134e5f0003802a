//! `make image` through a real registry: the OCI layout scripts/build-image.sh
//! writes is pushed to Debian's `docker-registry` on a free loopback port and
//! pulled back with `skopeo`; the registry serves one manifest (not an index)
//! whose digest is the one the build printed, with one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer whose `plugin.wasm` is
//! the filter byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration::e2e::ports::free_local_addr;
use integration::e2e::process::ManagedProcess;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("{program} (scripts/setup.sh installs it)"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn the_image_round_trips_through_a_loopback_registry() -> Result<()> {
    let wasm = std::fs::read(root().join("target/gateway_filter.wasm"))
        .context("target/gateway_filter.wasm (make wasm)")?;
    let digest = run("./scripts/build-image.sh", &[])?;
    ensure!(digest.starts_with("sha256:"), "{digest}");

    let dir = tempfile::tempdir()?;
    let addr = free_local_addr()?;
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )?;
    let _registry = ManagedProcess::spawn(
        "docker-registry",
        Path::new("/usr/bin/docker-registry"),
        &["serve".to_string(), config.display().to_string()],
        dir.path(),
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the registry did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let reference = format!("docker://{addr}/llm-gateway/gateway-filter:test");
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "oci:target/oci/gateway-filter:latest",
            &reference,
        ],
    )?;
    let raw = run(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &reference],
    )?;
    let manifest: serde_json::Value = serde_json::from_str(&raw)?;
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{raw}"
    );
    let layers = manifest["layers"].as_array().context("layers")?;
    assert_eq!(layers.len(), 1, "{raw}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let served = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &reference,
        ],
    )?;
    assert_eq!(
        served, digest,
        "the registry's digest is the one the manifests pin"
    );

    let pulled = dir.path().join("pulled");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &reference,
            &format!("dir:{}", pulled.display()),
        ],
    )?;
    let layer_digest = layers[0]["digest"].as_str().context("layer digest")?;
    let layer = pulled.join(layer_digest.trim_start_matches("sha256:"));
    let out = dir.path().join("layer");
    std::fs::create_dir_all(&out)?;
    run(
        "tar",
        &[
            "-xzf",
            &layer.display().to_string(),
            "-C",
            &out.display().to_string(),
        ],
    )?;
    let entries: Vec<_> = std::fs::read_dir(&out)?.collect();
    assert_eq!(entries.len(), 1, "the layer holds plugin.wasm only");
    assert!(
        std::fs::read(out.join("plugin.wasm"))? == wasm,
        "plugin.wasm differs from the filter"
    );
    Ok(())
}
