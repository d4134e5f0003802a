//! Renders deploy/envoy-gateway/ and deploy/istio/ from a user's Gateway,
//! HTTPRoute and InferencePool manifests.
//!
//!   cargo run -p integration --bin render-deploy -- \
//!     --image ghcr.io/me/gateway-filter@sha256:... --out deploy my/*.yaml
//!
//! Without files it renders the worked case (examples/ack-canary/) into the
//! repository's deploy/ folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use integration::deploy::{render_all, Inputs, Options};

#[derive(Parser)]
struct Args {
    /// The filter's OCI image reference (`make image`).
    #[arg(long)]
    image: Option<String>,
    /// Output folder (envoy-gateway/ and istio/ are written under it).
    #[arg(long, default_value = "deploy")]
    out: PathBuf,
    /// Instead: write Envoy bootstraps to this folder for `envoy --mode
    /// validate` (scripts/envoy-versions.sh): the EG and Istio emulations of
    /// the recipe and the local config in buffer-filter mode.
    #[arg(long)]
    emulated: Option<PathBuf>,
    /// The user's manifests (default: the worked case in examples/ack-canary/).
    files: Vec<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let files = if args.files.is_empty() {
        integration::deploy::worked_case_files()
    } else {
        args.files
    };
    let inputs = Inputs::read(&files)?;
    let mut options = Options::default();
    if let Some(image) = args.image {
        options.image = image;
    }
    if let Some(dir) = args.emulated {
        return write_emulated(&inputs, &options, &dir);
    }
    for file in render_all(&inputs, &options)? {
        let path = args.out.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &file.text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn write_emulated(inputs: &Inputs, options: &Options, dir: &std::path::Path) -> Result<()> {
    use integration::deploy::emulate::{envoy_gateway_bootstrap, istio_bootstrap, Environment};
    use integration::e2e::envoy_config::{BodyRouting, EnvoyConfig};
    std::fs::create_dir_all(dir)?;
    let mut local = EnvoyConfig::demo();
    local.wasm_path = std::path::absolute("target/gateway_filter.wasm")?
        .display()
        .to_string();
    let pods = inputs
        .pools
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                vec!["127.0.0.1:8000".parse().expect("literal")],
            )
        })
        .collect();
    let env = Environment {
        listen: local.listen,
        admin: local.admin,
        collector: local.collector_grpc,
        wasm_path: local.wasm_path.clone(),
        pods,
        skip_listener_patches: false,
    };
    let eg = serde_yaml::to_string(&envoy_gateway_bootstrap(inputs, options, &env)?)?;
    let istio = serde_yaml::to_string(&istio_bootstrap(inputs, options, &env)?)?;
    local.body_routing = BodyRouting::BufferFilter;
    for (name, text) in [
        ("envoy-gateway.yaml", eg),
        ("istio.yaml", istio),
        ("buffer-filter.yaml", local.render()),
    ] {
        std::fs::write(dir.join(name), text)?;
        println!("wrote {}", dir.join(name).display());
    }
    Ok(())
}
