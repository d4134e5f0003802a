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
    /// `:method` (lossy UTF-8; empty when absent).
    pub method: String,
    /// `:path` including any query (lossy UTF-8; empty when absent).
    pub path: String,
}

/// The `(name, value)` pairs of a header map as proxy-wasm serialises it:
/// a u32 LE count, then a u32 LE name length and value length per pair, then
/// each name and value followed by a NUL. `None` when the bytes do not hold
/// that shape (nothing is trusted: every length is checked).
pub fn parse_header_map(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let word = bytes.get(at..at.checked_add(4)?)?.first_chunk::<4>()?;
        usize::try_from(u32::from_le_bytes(*word)).ok()
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let name_len = u32_at(4 + i * 8)?;
        let value_len = u32_at(8 + i * 8)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

impl RequestHeaders {
    /// Reads `(name, value)` pairs as the host lists them. Names compare
    /// without case (and need not be UTF-8); for a repeated header the first
    /// value counts, as for Envoy's single-header lookups.
    pub fn read<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut headers = RequestHeaders::default();
        let mut seen_request_id = false;
        let mut seen_method = false;
        for (name, value) in pairs {
            if let Some(&control) = CONTROL_HEADERS
                .iter()
                .find(|c| c.as_bytes().eq_ignore_ascii_case(name))
            {
                if !headers.control_headers.contains(&control) {
                    headers.control_headers.push(control);
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                if headers.content_length.is_none() {
                    headers.content_length = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok()),
                    );
                }
            } else if name.eq_ignore_ascii_case(OBJECTIVE_HEADER.as_bytes()) {
                if headers.objective.is_none() {
                    headers.objective = Some(String::from_utf8_lossy(value).into_owned());
                }
            } else if name.eq_ignore_ascii_case(REQUEST_ID_HEADER.as_bytes()) {
                if !seen_request_id {
                    seen_request_id = true;
                    headers.request_id = value.to_vec();
                }
            } else if name == b":path" {
                if headers.path.is_empty() {
                    headers.path = String::from_utf8_lossy(value).into_owned();
                }
            } else if name == b":method" && !seen_method {
                seen_method = true;
                headers.method = String::from_utf8_lossy(value).into_owned();
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
        RequestHeaders::read(pairs.iter().map(|(n, v)| (n.as_bytes(), *v)))
    }

    /// Serialises pairs the way the proxy-wasm host does.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend_from_slice(n);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn header_maps_parse_and_bad_ones_are_refused() {
        let pairs: [(&[u8], &[u8]); 3] = [
            (b":method", b"POST"),
            (b"x-odd-\xff-name", b"\xfe value"),
            (b"empty", b""),
        ];
        let bytes = serialize(&pairs);
        assert_eq!(parse_header_map(&bytes).unwrap(), pairs.to_vec());
        assert_eq!(parse_header_map(&[]).unwrap(), Vec::<(&[u8], &[u8])>::new());
        // Every truncation, and lengths pointing past the end, are refused.
        for end in 1..bytes.len() - 1 {
            assert_eq!(parse_header_map(&bytes[..end]), None, "cut at {end}");
        }
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_header_map(&huge), None);
        let mut long_name = bytes.clone();
        long_name[4..8].copy_from_slice(&(u32::MAX - 2).to_le_bytes());
        assert_eq!(parse_header_map(&long_name), None);
        // A non-UTF-8 name is read, not a trap.
        let h = RequestHeaders::read(parse_header_map(&bytes).unwrap());
        assert!(!h.bodyless_method);
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
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("POST", "/v1/completions")
        );
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
