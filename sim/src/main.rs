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
        // Handlers go in before the startup lines: whoever reads them may
        // signal us right away.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vllm-sim: cannot install signal handlers: {e}");
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
        let signal = signals.wait().await;
        eprintln!("vllm-sim: {signal}, shutting down {} pod(s)", handles.len());
        for h in handles {
            h.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}

/// SIGINT and SIGTERM listeners.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal and names it.
    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
