//! The ext_proc arm: Envoy without the wasm filter, consulting `ext-proc-floor`
//! (bench/ext-proc-floor) over ext_proc for every request, the architecture of
//! GIE, AIBrix and Envoy AI Gateway reduced to its floor: the processor gets
//! the headers and the streamed body, reads `model`, names the next pod in
//! round robin and hands the body back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use integration::e2e::artifacts::native_binary;
use integration::e2e::components::Envoy;
use integration::e2e::envoy_config::EnvoyConfig;
use integration::e2e::pods::SimPod;
use integration::e2e::ports::free_local_addr;
use integration::e2e::process::ManagedProcess;
use integration::e2e::wait::wait_until;

use crate::{Arm, HeadersFor};

/// Starts the processor and its Envoy (the other arms' `config`, with the
/// ext_proc filter instead of the wasm filter).
pub async fn arm(
    config: &EnvoyConfig,
    pods: &[SimPod],
    dir: &Path,
    log_dir: &Path,
    headers_for: HeadersFor,
) -> Result<Arm> {
    let grpc = free_local_addr()?;
    let mut args = vec!["--listen".to_string(), grpc.to_string()];
    for pod in pods {
        args.extend(["--endpoint".to_string(), pod.addr().to_string()]);
    }
    let processor = ManagedProcess::spawn(
        "ext-proc-floor",
        &native_binary("ext-proc-floor")?,
        &args,
        log_dir,
    )?;
    wait_until("ext-proc-floor to listen", Duration::from_secs(10), || {
        let grpc: SocketAddr = grpc;
        async move { Ok(tokio::net::TcpStream::connect(grpc).await.is_ok()) }
    })
    .await?;
    let mut config = config.clone();
    config.listen = free_local_addr()?;
    config.admin = free_local_addr()?;
    config.wasm_filter = false;
    config.ext_proc = Some(grpc);
    let path = dir.join("envoy-ext-proc.yaml");
    std::fs::write(&path, config.render())?;
    let envoy = Envoy::start(&path, config.admin, log_dir).await?;
    Ok(Arm {
        name: "Envoy + ext_proc floor (processor picks, round robin)".into(),
        url: format!("http://{}/v1/completions", config.listen),
        headers_for,
        envoy,
        rounds: Vec::new(),
        envoy_cpu: Duration::ZERO,
        collector_cpu: Duration::ZERO,
        processor: Some(processor),
        processor_cpu: Duration::ZERO,
    })
}
