//! Renders Envoy bootstrap configurations for the gateway: one listener with the
//! wasm filter, routes whose backends are ORIGINAL_DST pool clusters (weights =
//! an HTTPRoute's backendRef weights), the collector's HTTP/2 gRPC cluster and
//! the admin port. The top-level `envoy.yaml` is [`EnvoyConfig::demo`] rendered
//! (a test checks they match), so tests run the same configuration users read.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Header the filter sets and the pool clusters route on.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// Name of the collector's gRPC cluster (the filter's default `collector_cluster`).
pub const COLLECTOR_CLUSTER: &str = "llmgw_collector";

/// One route: requests under `/v1/` (optionally only those carrying a header)
/// go to one of `backends` by weight.
#[derive(Debug, Clone)]
pub struct Route {
    /// Shown as a comment above the route.
    pub comment: String,
    /// `(name, exact value)` the request must carry; `None` matches every request.
    pub header: Option<(String, String)>,
    /// `(pool cluster, weight)`; one backend renders as a plain `cluster`.
    pub backends: Vec<(String, u32)>,
}

impl Route {
    /// A route to a single pool.
    pub fn to_pool(comment: &str, header: Option<(&str, &str)>, pool: &str) -> Self {
        Self::split(comment, header, &[(pool, 1)])
    }

    /// A weighted split across pools.
    pub fn split(comment: &str, header: Option<(&str, &str)>, backends: &[(&str, u32)]) -> Self {
        Self {
            comment: comment.to_string(),
            header: header.map(|(n, v)| (n.to_string(), v.to_string())),
            backends: backends.iter().map(|(c, w)| (c.to_string(), *w)).collect(),
        }
    }
}

/// Everything that differs between the demo and a test's Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub collector_grpc: SocketAddr,
    /// Whether the gateway filter runs; without it (the overhead benchmark's
    /// baseline) the client names the pod in `x-gateway-destination-endpoint`.
    pub wasm_filter: bool,
    /// Path to `gateway_filter.wasm` as Envoy should open it.
    pub wasm_path: String,
    /// The filter's plugin configuration (see docs/ARCHITECTURE.md).
    pub plugin_config: serde_json::Value,
    /// Routes in match order (put header-matched routes before catch-alls).
    pub routes: Vec<Route>,
    /// Request buffer limit per connection; must exceed the filter's
    /// `max_body_bytes` so that the filter, not Envoy, answers oversized bodies
    /// (with an OpenAI-shaped 413).
    pub buffer_limit_bytes: u64,
    /// An external processor (gRPC address) to run as Envoy's ext_proc filter,
    /// configured the way GIE configures its endpoint picker: the
    /// architecture the overhead benchmark compares the filter with. `None`
    /// (the gateway's own configurations) renders no ext_proc filter.
    pub ext_proc: Option<SocketAddr>,
}

/// Name of the external processor's gRPC cluster (bench-overhead's ext_proc arm).
pub const EXT_PROC_CLUSTER: &str = "llmgw_ext_proc";

impl EnvoyConfig {
    /// The configuration of `make demo` (and the checked-in `envoy.yaml`): the
    /// GKE pool behind header `x-route: gke`, the ACK LoRA canary route behind
    /// `x-route: ack-lora`, and by default the ACK base-model canary (90/10
    /// across `mymodel-pool-v1` and `mymodel-pool-v2`).
    pub fn demo() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal"),
            admin: "127.0.0.1:9901".parse().expect("literal"),
            collector_grpc: "127.0.0.1:9002".parse().expect("literal"),
            wasm_filter: true,
            wasm_path: "target/gateway_filter.wasm".to_string(),
            plugin_config: serde_json::json!({ "collector_cluster": COLLECTOR_CLUSTER }),
            routes: vec![
                Route::to_pool(
                    "GKE guide: one InferencePool with LoRA adapters and InferenceObjectives.",
                    Some(("x-route", "gke")),
                    "vllm-llama3.1-8b-instruct",
                ),
                Route::to_pool(
                    "ACK scenario 2 (LoRA canary): every request to mymodel-pool-v1; its InferenceModel splits travelhelper 90/10 across adapters.",
                    Some(("x-route", "ack-lora")),
                    "mymodel-pool-v1",
                ),
                Route::split(
                    "ACK scenario 1 (base-model canary): HTTPRoute weights 90/10 across two pools.",
                    None,
                    &[("mymodel-pool-v1", 90), ("mymodel-pool-v2", 10)],
                ),
            ],
            buffer_limit_bytes: 32 * 1024 * 1024,
            ext_proc: None,
        }
    }

    /// The pool clusters the routes reference, in first-use order.
    pub fn pool_clusters(&self) -> Vec<String> {
        let mut clusters: Vec<String> = Vec::new();
        for (cluster, _) in self.routes.iter().flat_map(|r| &r.backends) {
            if !clusters.contains(cluster) {
                clusters.push(cluster.clone());
            }
        }
        clusters
    }

    /// The bootstrap YAML.
    pub fn render(&self) -> String {
        let mut y = String::new();
        let plugin_config =
            serde_json::to_string(&self.plugin_config.to_string()).expect("a string serializes");
        let _ = write!(
            y,
            r#"# Envoy 1.40 in front of simulated (or real) vLLM pods, with the llm-gateway
# wasm filter picking the pod for every request.
#
# Generated by `cargo run -p integration --bin demo -- --print-envoy-config`
# from integration/src/e2e/envoy_config.rs (the e2e tests render the same
# configuration with their own ports; tests/envoy_config.rs checks this file
# matches). Run it from the repository root: `make demo`, or by hand
#   .venv/bin/envoy -c envoy.yaml --concurrency 2
#
# Routing (one listener, {listen}):
#   -H 'x-route: gke'       -> InferencePool vllm-llama3.1-8b-instruct (GKE guide)
#   -H 'x-route: ack-lora'  -> InferencePool mymodel-pool-v1 (ACK LoRA canary)
#   anything else under /v1/ -> mymodel-pool-v1 90 / mymodel-pool-v2 10 (ACK base-model canary)
# The filter reads the chosen cluster (xds.cluster_name), maps it to the pool of the
# same name, picks an endpoint from the collector's pool state and sets
# {dest}; each pool cluster is ORIGINAL_DST on that header.
admin:
  address:
    socket_address: {{ address: {admin_ip}, port_value: {admin_port} }}
static_resources:
  listeners:
  - name: llm_gateway
    address:
      socket_address: {{ address: {listen_ip}, port_value: {listen_port} }}
    # Requests are buffered while the filter reads `model`; above the filter's
    # max_body_bytes the filter answers 413 itself, so this limit sits above it.
    per_connection_buffer_limit_bytes: {buffer_limit}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: llm_gateway
          # Generations can run for minutes; the per-route timeout below bounds them.
          stream_idle_timeout: 300s
          route_config:
            name: llm_routes
            virtual_hosts:
            - name: llm
              domains: ["*"]
              routes:
"#,
            listen = self.listen,
            dest = DESTINATION_HEADER,
            admin_ip = self.admin.ip(),
            admin_port = self.admin.port(),
            listen_ip = self.listen.ip(),
            listen_port = self.listen.port(),
            buffer_limit = self.buffer_limit_bytes,
        );
        for route in &self.routes {
            let _ = writeln!(y, "              # {}", route.comment);
            let _ = writeln!(y, "              - match:");
            let _ = writeln!(y, "                  prefix: /v1/");
            if let Some((name, value)) = &route.header {
                let _ = writeln!(
                    y,
                    "                  headers: [{{ name: {name}, string_match: {{ exact: {value} }} }}]"
                );
            }
            let _ = writeln!(y, "                route:");
            let _ = writeln!(y, "                  timeout: 86400s");
            if let [(cluster, _)] = route.backends.as_slice() {
                let _ = writeln!(y, "                  cluster: {cluster}");
            } else {
                let _ = writeln!(y, "                  weighted_clusters:");
                let _ = writeln!(y, "                    clusters:");
                for (cluster, weight) in &route.backends {
                    let _ = writeln!(
                        y,
                        "                    - {{ name: {cluster}, weight: {weight} }}"
                    );
                }
            }
        }
        let _ = writeln!(y, "          http_filters:");
        if self.wasm_filter {
            let _ = write!(
                y,
                r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: llm_gateway
                # The filter pauses in on_http_request_headers until it has read `model`.
                allow_on_headers_stop_iteration: true
                vm_config:
                  # One vm_id: the workers share pool state and the collector lease.
                  vm_id: llmgw
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local: {{ filename: {wasm} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {plugin_config}
"#,
                wasm = self.wasm_path,
            );
        }
        if self.ext_proc.is_some() {
            y.push_str(EXT_PROC_FILTER);
        }
        let _ = write!(
            y,
            r#"          # No buffer filter: responses (SSE streams) pass through as they arrive.
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
"#
        );
        for cluster in self.pool_clusters() {
            let _ = write!(
                y,
                r#"  # InferencePool {cluster}: the filter names the pod in {dest}.
  - name: {cluster}
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    per_connection_buffer_limit_bytes: {buffer_limit}
    original_dst_lb_config:
      use_http_header: true
      http_header_name: {dest}
"#,
                dest = DESTINATION_HEADER,
                buffer_limit = self.buffer_limit_bytes,
            );
        }
        let _ = write!(
            y,
            r#"  # The sidecar-collector's gRPC PoolState service (HTTP/2, plaintext).
  - name: {COLLECTOR_CLUSTER}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: {COLLECTOR_CLUSTER}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
            ip = self.collector_grpc.ip(),
            port = self.collector_grpc.port(),
        );
        if let Some(ext_proc) = self.ext_proc {
            let _ = write!(
                y,
                r#"  # The external processor (HTTP/2 gRPC, plaintext).
  - name: {EXT_PROC_CLUSTER}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: {EXT_PROC_CLUSTER}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
                ip = ext_proc.ip(),
                port = ext_proc.port(),
            );
        }
        y
    }
}

/// The ext_proc filter as GIE's endpoint picker is configured (the
/// inferencepool chart's standalone Envoy; EG's InferencePool translation
/// sends the request the same way): request headers, then the body streamed
/// full-duplex (the processor returns the body Envoy forwards), trailers
/// (required by that mode). GIE also streams the response headers and body
/// to the picker (for usage accounting); a picker need not, so this floor
/// does not.
const EXT_PROC_FILTER: &str = r#"          # ext_proc: every request's headers and body go to the external processor.
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service:
                envoy_grpc: { cluster_name: llmgw_ext_proc }
                timeout: 10s
              failure_mode_allow: false
              message_timeout: 10s
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SKIP
                request_body_mode: FULL_DUPLEX_STREAMED
                response_body_mode: NONE
                request_trailer_mode: SEND
                response_trailer_mode: SKIP
"#;
