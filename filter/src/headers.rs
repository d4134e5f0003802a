//! The request headers the filter owns or reads, gathered in one pass.
//!
//! Every host call costs about as much as a small decision inside the VM, so
//! the host fetches the whole request header map once and this module picks
//! out what the filter needs: the gateway's own control headers a client
//! tried to send (they are removed, so no client picks a host), the declared
//! body length, the objective, the request id (it seeds the tie-breaks) and
//! whether the method carries a body.

/// Header that carries the pick to the ORIGINAL_DST cluster.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// Names an InferenceObjective for the request's priority.
pub const OBJECTIVE_HEADER: &str = "x-gateway-inference-objective";
/// Set by the filter on the upstream request: the model sent upstream.
pub const TARGET_MODEL_HEADER: &str = "x-gateway-target-model";
/// Set by the filter on the upstream request: the pool it picked in.
pub const POOL_HEADER: &str = "x-gateway-pool";
/// Headers only the gateway may set; client values are removed.
pub const CONTROL_HEADERS: [&str; 3] = [DESTINATION_HEADER, TARGET_MODEL_HEADER, POOL_HEADER];
const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the filter takes from one request's headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHeaders {
    /// Control headers present in the request, each named once.
    pub control_headers: Vec<&'static str>,
    /// `content-length` when present: `Some(None)` when it does not parse.
    pub content_length: Option<Option<u64>>,
    /// `x-gateway-inference-objective`; invalid UTF-8 becomes U+FFFD, so such
    /// a value matches no objective.
    pub objective: Option<String>,
    /// `x-request-id` bytes (empty when absent).
    pub request_id: Vec<u8>,
    /// `GET`, `HEAD`, `DELETE` or `OPTIONS`: routed without a body.
    pub bodyless_method: bool,
}

impl RequestHeaders {
    /// Reads `(name, value)` pairs as the host lists them. Names compare
    /// without case; for a repeated header the first value counts, as for
    /// Envoy's single-header lookups.
    pub fn read<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut headers = RequestHeaders::default();
        let mut seen_objective = false;
        let mut seen_request_id = false;
        let mut seen_method = false;
        for (name, value) in pairs {
            if let Some(&control) = CONTROL_HEADERS
                .iter()
                .find(|c| c.eq_ignore_ascii_case(name))
            {
                if !headers.control_headers.contains(&control) {
                    headers.control_headers.push(control);
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                if headers.content_length.is_none() {
                    headers.content_length = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok()),
                    );
                }
            } else if name.eq_ignore_ascii_case(OBJECTIVE_HEADER) {
                if !seen_objective {
                    seen_objective = true;
                    headers.objective = Some(String::from_utf8_lossy(value).into_owned());
                }
            } else if name.eq_ignore_ascii_case(REQUEST_ID_HEADER) {
                if !seen_request_id {
                    seen_request_id = true;
                    headers.request_id = value.to_vec();
                }
            } else if name == ":method" && !seen_method {
                seen_method = true;
                headers.bodyless_method =
                    matches!(value, b"GET" | b"HEAD" | b"DELETE" | b"OPTIONS");
            }
        }
        headers
    }

    /// The declared body length, when it parses.
    pub fn declared_length(&self) -> Option<u64> {
        self.content_length.flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &[u8])]) -> RequestHeaders {
        RequestHeaders::read(pairs.iter().copied())
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn reads_what_the_filter_needs_in_one_pass() {
        let h = read(&[
            (":method", b"POST"),
            (":path", b"/v1/completions"),
            ("content-length", b" 1234 "),
            ("x-request-id", b"abc"),
            ("x-gateway-inference-objective", b"critical"),
            ("x-gateway-inference-objective", b"second"),
            ("user-agent", b"curl"),
        ]);
        assert_eq!(h.declared_length(), Some(1234));
        assert_eq!(h.objective.as_deref(), Some("critical"));
        assert_eq!(h.request_id, b"abc");
        assert!(!h.bodyless_method);
        assert!(h.control_headers.is_empty());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn control_headers_are_found_in_any_case_and_named_once() {
        let h = read(&[
            ("X-Gateway-Destination-Endpoint", b"10.0.0.1:8000"),
            ("x-gateway-destination-endpoint", b"10.0.0.2:8000"),
            ("x-gateway-pool", b"evil"),
            (":method", b"GET"),
        ]);
        assert_eq!(h.control_headers, vec![DESTINATION_HEADER, POOL_HEADER]);
        assert!(h.bodyless_method);
        assert_eq!(h.content_length, None);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn odd_values_never_fail() {
        let h = read(&[
            ("content-length", b"12x"),
            ("x-gateway-inference-objective", b"\xff\xfe"),
        ]);
        assert_eq!(h.content_length, Some(None));
        assert_eq!(h.declared_length(), None);
        assert_eq!(h.objective.as_deref(), Some("\u{fffd}\u{fffd}"));
        assert_eq!(read(&[]), RequestHeaders::default());
    }
}
