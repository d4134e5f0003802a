//! The edge-proxy sections of the gateway's Envoy configuration, kept apart
//! from the routing so both change on their own: the bounds on slow and
//! greedy clients (timeouts, header and connection limits, HTTP/2 windows, an
//! overload manager on heap memory) and the `local_reply_config` that gives
//! every answer Envoy itself makes the OpenAI error shape the filter uses.
//!
//! Every value lives in [`EdgeLimits`]; docs/ARCHITECTURE.md "Answers" lists
//! what each bound answers.

use std::fmt::Write as _;

/// The bounds, in one place. Defaults follow Envoy's edge-proxy guidance,
/// except where an LLM gateway must differ (bodies of tens of MiB are
/// buffered whole; responses stream for minutes).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLimits {
    /// The one body limit: the filter's `max_body_bytes`, the 413 Envoy's
    /// buffer answers with the same body, and the HTTP/2 windows that let a
    /// body this large arrive.
    pub body_limit_bytes: u64,
    /// Whole request headers must arrive within this (408).
    pub request_headers_timeout_s: u32,
    /// The whole request (headers and body) must arrive within this (408).
    /// Envoy disarms it once the request has gone upstream or the response
    /// has started, so it never cuts a streamed generation.
    pub request_timeout_s: u32,
    /// A stream with no activity either way for this long is reset (408 if
    /// nothing was answered yet). Bounds a generation that stalls.
    pub stream_idle_timeout_s: u32,
    /// A connection with no stream for this long is closed.
    pub connection_idle_timeout_s: u32,
    /// Request header bytes (KiB) and count per request (431 above).
    pub max_request_headers_kb: u32,
    pub max_headers_count: u32,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Downstream connections across all listeners (overload manager).
    pub max_downstream_connections: u64,
    /// Heap the overload manager measures against (`fixed_heap`): it frees
    /// memory from 90 %, resets the largest streams from 90-95 % and stops
    /// accepting requests at 98 %.
    pub max_heap_bytes: u64,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            body_limit_bytes: 20 * 1024 * 1024,
            request_headers_timeout_s: 10,
            request_timeout_s: 60,
            stream_idle_timeout_s: 300,
            connection_idle_timeout_s: 900,
            max_request_headers_kb: 60,
            max_headers_count: 100,
            max_concurrent_streams: 100,
            max_downstream_connections: 10_000,
            max_heap_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl EdgeLimits {
    /// Envoy's per-connection (and per-stream) buffer: above the body limit,
    /// so the filter sees and answers an oversized body itself; when Envoy's
    /// buffer answers first (a large chunk), the 413 reads the same.
    pub fn buffer_limit_bytes(&self) -> u64 {
        self.body_limit_bytes + 1024 * 1024
    }

    /// HTTP/2 stream window: a whole body fits, so HTTP/2 clients hit the
    /// same limit as HTTP/1.1 (Envoy's default stops a stream near 16 MiB
    /// while the filter holds the body).
    pub fn http2_stream_window_bytes(&self) -> u64 {
        self.buffer_limit_bytes().min((1 << 31) - 1)
    }

    /// The HCM fields: timeouts, header limits, HTTP/2 options and path
    /// normalisation (indented for the HCM's typed_config).
    pub fn render_hcm(&self, y: &mut String) {
        let i = "          ";
        let _ = writeln!(
            y,
            "{i}# Slow and greedy clients are bounded (integration/src/e2e/edge.rs)."
        );
        let _ = writeln!(
            y,
            "{i}request_headers_timeout: {}s",
            self.request_headers_timeout_s
        );
        let _ = writeln!(
            y,
            "{i}# Covers receiving the request only, never a streamed response."
        );
        let _ = writeln!(y, "{i}request_timeout: {}s", self.request_timeout_s);
        let _ = writeln!(y, "{i}stream_idle_timeout: {}s", self.stream_idle_timeout_s);
        let _ = writeln!(
            y,
            "{i}max_request_headers_kb: {}",
            self.max_request_headers_kb
        );
        let _ = writeln!(y, "{i}common_http_protocol_options:");
        let _ = writeln!(y, "{i}  idle_timeout: {}s", self.connection_idle_timeout_s);
        let _ = writeln!(y, "{i}  max_headers_count: {}", self.max_headers_count);
        let _ = writeln!(y, "{i}http2_protocol_options:");
        let _ = writeln!(
            y,
            "{i}  max_concurrent_streams: {}",
            self.max_concurrent_streams
        );
        let window = self.http2_stream_window_bytes();
        let _ = writeln!(y, "{i}  initial_stream_window_size: {window}");
        let _ = writeln!(y, "{i}  initial_connection_window_size: {window}");
        let _ = writeln!(y, "{i}normalize_path: true");
        let _ = writeln!(y, "{i}merge_slashes: true");
        let _ = writeln!(y, "{i}path_with_escaped_slashes_action: REJECT_REQUEST");
    }

    /// `local_reply_config`: Envoy's own answers (codec errors, 404 without a
    /// route, 408, 413, 426, 431, 503 upstream connect error, overload ...)
    /// become `{"error":{"message","type","param":null,"code"}}`. The
    /// filter's replies carry `x-gateway-error` and are left as they are.
    pub fn render_local_reply(&self, y: &mut String) {
        let i = "          ";
        let _ = writeln!(
            y,
            "{i}# Envoy's own answers in the OpenAI error shape; the filter's (marked"
        );
        let _ = writeln!(y, "{i}# x-gateway-error) pass unchanged.");
        let _ = writeln!(y, "{i}local_reply_config:");
        let _ = writeln!(y, "{i}  mappers:");
        for (status, kind, message) in envoy_answers(self.body_limit_bytes) {
            let _ = writeln!(y, "{i}  - filter:");
            let _ = writeln!(y, "{i}      and_filter:");
            let _ = writeln!(y, "{i}        filters:");
            let _ = writeln!(y, "{i}        - {}", not_from_the_filter());
            match status {
                Some(code) => {
                    let _ = writeln!(y, "{i}        - status_code_filter: {{ comparison: {{ op: EQ, value: {{ default_value: {code}, runtime_key: llmgw.local_reply.{code} }} }} }}");
                }
                None => {
                    let _ = writeln!(y, "{i}        - status_code_filter: {{ comparison: {{ op: GE, value: {{ default_value: 400, runtime_key: llmgw.local_reply.any }} }} }}");
                }
            }
            let reason = status.map_or("envoy".to_string(), |c| format!("envoy_{c}"));
            let reason = if status == Some(413) {
                "body_too_large".to_string()
            } else {
                reason
            };
            let _ = writeln!(y, "{i}    headers_to_add:");
            let _ = writeln!(
                y,
                "{i}    - header: {{ key: x-gateway-error, value: {reason} }}"
            );
            let _ = writeln!(y, "{i}      append_action: OVERWRITE_IF_EXISTS_OR_ADD");
            if matches!(status, Some(429 | 503)) {
                let _ = writeln!(y, "{i}    - header: {{ key: retry-after, value: \"1\" }}");
                let _ = writeln!(y, "{i}      append_action: ADD_IF_ABSENT");
            }
            let _ = writeln!(y, "{i}    body_format_override:");
            let _ = writeln!(y, "{i}      json_format:");
            let _ = writeln!(y, "{i}        error:");
            let _ = writeln!(y, "{i}          message: {}", yaml_string(&message));
            let _ = writeln!(y, "{i}          type: {kind}");
            let _ = writeln!(y, "{i}          param: null");
            let _ = writeln!(y, "{i}          code: \"%RESPONSE_CODE%\"");
        }
    }

    /// Top-level `overload_manager` (and the buffer accounting that lets it
    /// reset the streams holding the most memory).
    pub fn render_overload_manager(&self, y: &mut String) {
        let _ = write!(
            y,
            r#"# Bounds on the whole Envoy (integration/src/e2e/edge.rs): heap and connections.
overload_manager:
  refresh_interval: 0.25s
  buffer_factory_config:
    # Track streams holding >= 1 MiB so the overload manager can reset the largest.
    minimum_account_to_track_power_of_two: 20
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: {heap}
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: {connections}
  actions:
  - name: envoy.overload_actions.shrink_heap
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: {{ value: 0.90 }}
  - name: envoy.overload_actions.reset_high_memory_stream
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      scaled: {{ scaling_threshold: 0.90, saturation_threshold: 0.95 }}
  - name: envoy.overload_actions.stop_accepting_requests
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: {{ value: 0.98 }}
"#,
            heap = self.max_heap_bytes,
            connections = self.max_downstream_connections,
        );
    }
}

/// The access-log filter that matches replies the gateway filter did not
/// make (they carry `x-gateway-error`).
fn not_from_the_filter() -> &'static str {
    r#"extension_filter: { name: envoy.access_loggers.extension_filters.cel, typed_config: { "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter, expression: "!('x-gateway-error' in response.headers)" } }"#
}

fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `(status or None for any other >= 400, OpenAI error type, message)` for
/// each answer Envoy itself can give, in mapper order.
pub fn envoy_answers(body_limit: u64) -> Vec<(Option<u16>, &'static str, String)> {
    let details = "(%RESPONSE_CODE_DETAILS%)";
    vec![
        (
            Some(400),
            "BadRequestError",
            format!("malformed HTTP request {details}"),
        ),
        (
            Some(404),
            "NotFoundError",
            "the gateway does not serve this path".to_string(),
        ),
        (
            Some(408),
            "RequestTimeoutError",
            format!("the request did not arrive in time {details}"),
        ),
        (
            Some(413),
            "RequestTooLargeError",
            format!("request body exceeds the gateway limit of {body_limit} bytes"),
        ),
        (
            Some(426),
            "UpgradeRequiredError",
            "HTTP/1.0 is not supported; use HTTP/1.1 or HTTP/2".to_string(),
        ),
        (
            Some(431),
            "RequestHeaderFieldsTooLargeError",
            format!("request headers too large or too many {details}"),
        ),
        (
            Some(503),
            "ServiceUnavailableError",
            format!("the gateway could not reach a model server {details}"),
        ),
        (
            Some(504),
            "TimeoutError",
            format!("the model server did not answer in time {details}"),
        ),
        (
            None,
            "APIError",
            format!("the gateway could not serve the request {details}"),
        ),
    ]
}
