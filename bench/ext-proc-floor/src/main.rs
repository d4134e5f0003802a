//! `ext-proc-floor`: the least an ext_proc endpoint picker does, for
//! `make bench-overhead`'s ext_proc arm. Envoy streams it each request's
//! headers and body (`FULL_DUPLEX_STREAMED`, as GIE configures its EPP); it
//! collects the body, reads `model` with the gateway filter's own scanner,
//! names the next endpoint in round robin in `x-gateway-destination-endpoint`
//! and hands the body back. No state, no scoring, no metrics: whatever a real
//! picker (GIE's EPP, llm-d's, AIBrix's) adds is on top of this.
//!
//! A benchmark fixture, never deployed.

mod exchange;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Parser;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use exchange::Exchange;

#[derive(Parser)]
#[command(
    name = "ext-proc-floor",
    about = "The least an ext_proc endpoint picker does: body in, destination header out (round robin)"
)]
struct Args {
    /// gRPC address to serve the ExternalProcessor service on.
    #[arg(long)]
    listen: SocketAddr,
    /// An endpoint (`IP:port`) to route to; repeat for each.
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<String>,
}

/// Round robin over the endpoints.
struct RoundRobin {
    endpoints: Vec<String>,
    next: AtomicUsize,
}

impl RoundRobin {
    fn pick(&self) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints[i % self.endpoints.len()].clone()
    }
}

struct Floor {
    endpoints: Arc<RoundRobin>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Floor {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let endpoints = self.endpoints.clone();
        let (answers, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut exchange = Exchange::default();
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => {
                        for answer in exchange.on(message, || endpoints.pick()) {
                            if answers.send(Ok(answer)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Envoy closed the stream (the request is over) or reset it.
                    Ok(None) | Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let floor = Floor {
        endpoints: Arc::new(RoundRobin {
            endpoints: args.endpoints,
            next: AtomicUsize::new(0),
        }),
    };
    println!("ext-proc-floor: serving on {}", args.listen);
    tonic::transport::Server::builder()
        .add_service(ExternalProcessorServer::new(floor))
        .serve(args.listen)
        .await?;
    Ok(())
}
