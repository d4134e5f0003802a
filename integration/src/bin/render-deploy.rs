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
