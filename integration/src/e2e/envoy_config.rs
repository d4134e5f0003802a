//! Renders Envoy bootstrap configurations for the gateway: one listener with the
//! wasm filter, routes whose backends are ORIGINAL_DST pool clusters (weights =
//! an HTTPRoute's backendRef weights), the collector's HTTP/2 gRPC cluster and
//! the admin port. The top-level `envoy.yaml` is [`EnvoyConfig::demo`] rendered
//! (a test checks they match), so tests run the same configuration users read.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::edge::EdgeLimits;

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

/// How the filter holds a request until its body names the model (the
/// filter's `body_routing` setting and the HTTP filters around it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyRouting {
    /// `allow_on_headers_stop_iteration: true`; the filter writes the header.
    #[default]
    StopIteration,
    /// Flag-free: a buffer filter after the wasm filter holds the headers and
    /// a header_mutation copies the filter's filter state into the header.
    BufferFilter,
    /// Negative control: the filter in buffer-filter mode with neither the
    /// buffer nor the header_mutation filter behind it.
    BufferFilterMissing,
}

impl BodyRouting {
    /// The filter's `body_routing` value for this mode.
    pub fn plugin_value(self) -> &'static str {
        match self {
            BodyRouting::StopIteration => "stop_iteration",
            BodyRouting::BufferFilter | BodyRouting::BufferFilterMissing => "buffer_filter",
        }
    }
}

/// The HTTP filters that follow the wasm filter in buffer-filter mode: a
/// stock buffer holding the request until its body is complete (limit =
/// `max_request_bytes`) and a header_mutation writing the destination the
/// filter left in filter state `wasm.<key_prefix>.destination` into
/// [`DESTINATION_HEADER`]. Indented for a list at `indent` spaces.
pub fn buffer_filter_chain(key_prefix: &str, max_request_bytes: u64, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        r#"{pad}# Holds the headers until the body is complete (the filter continues
{pad}# from its headers callback; the body callback decides).
{pad}- name: envoy.filters.http.buffer
{pad}  typed_config:
{pad}    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
{pad}    max_request_bytes: {max_request_bytes}
{pad}# Copies the filter's pick (filter state) into the destination header.
{pad}- name: envoy.filters.http.header_mutation
{pad}  typed_config:
{pad}    "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
{pad}    mutations:
{pad}      request_mutations:
{pad}      - append:
{pad}          header:
{pad}            key: {DESTINATION_HEADER}
{pad}            value: "%FILTER_STATE(wasm.{key_prefix}.destination:PLAIN)%"
{pad}          append_action: OVERWRITE_IF_EXISTS_OR_ADD
"#
    )
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
    /// Timeouts, limits, overload manager and Envoy's OpenAI-shaped local
    /// replies (integration/src/e2e/edge.rs). Its body limit also becomes the
    /// filter's `max_body_bytes` unless `plugin_config` sets one.
    pub limits: EdgeLimits,
    /// How the filter waits for the body (the demo: stop_iteration).
    pub body_routing: BodyRouting,
}

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
            // examples/llm-d/ has a pool of the GKE pool's name in namespace
            // llm-d, so the GKE route names its pool's namespace.
            plugin_config: serde_json::json!({
                "collector_cluster": COLLECTOR_CLUSTER,
                "cluster_pools": {"vllm-llama3.1-8b-instruct": "default/vllm-llama3.1-8b-instruct"},
            }),
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
            buffer_limit_bytes: EdgeLimits::default().buffer_limit_bytes(),
            limits: EdgeLimits::default(),
            body_routing: BodyRouting::StopIteration,
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
        let mut plugin = self.plugin_config.clone();
        if let Some(map) = plugin.as_object_mut() {
            map.entry("max_body_bytes")
                .or_insert(self.limits.body_limit_bytes.into());
            if self.body_routing != BodyRouting::StopIteration {
                map.insert(
                    "body_routing".into(),
                    self.body_routing.plugin_value().into(),
                );
            }
        }
        let key_prefix = plugin
            .get("key_prefix")
            .and_then(|v| v.as_str())
            .unwrap_or("llmgw")
            .to_string();
        let plugin_config =
            serde_json::to_string(&plugin.to_string()).expect("a string serializes");
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
{hcm_limits}          route_config:
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
            hcm_limits = {
                let mut hcm = String::new();
                self.limits.render_hcm(&mut hcm);
                hcm
            },
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
        self.limits.render_local_reply(&mut y);
        let _ = writeln!(y, "          http_filters:");
        if self.wasm_filter {
            let _ = write!(
                y,
                r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: llm_gateway
{stop_iteration}                vm_config:
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
                stop_iteration = if self.body_routing == BodyRouting::StopIteration {
                    "                # The filter pauses in on_http_request_headers until it has read `model`.\n                allow_on_headers_stop_iteration: true\n"
                } else {
                    ""
                },
            );
            if self.body_routing == BodyRouting::BufferFilter {
                y.push_str(&buffer_filter_chain(
                    &key_prefix,
                    self.buffer_limit_bytes,
                    10,
                ));
            }
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
        self.limits.render_overload_manager(&mut y);
        y
    }
}
