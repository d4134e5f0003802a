//! `vllm-sim`: serve simulated vLLM pods. See docs/SIMULATOR.md.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use vllm_sim::config::{pods_from_cli, Cli};
use vllm_sim::server::start_pods;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pods = match pods_from_cli(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vllm-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vllm-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handles = match start_pods(pods).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("vllm-sim: {e}");
                return ExitCode::FAILURE;
            }
        };
        {
            let mut out = std::io::stdout().lock();
            for h in &handles {
                let _ = writeln!(out, "{}", h.describe());
            }
            let _ = out.flush();
        }
        let signal = wait_for_signal().await;
        eprintln!("vllm-sim: {signal}, shutting down {} pod(s)", handles.len());
        for h in handles {
            h.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}

/// Waits for SIGINT or SIGTERM and names it.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}
