//! Which request paths the gateway forwards: the model servers' inference API
//! by default, never their admin API (`/v1/load_lora_adapter`,
//! `/v1/unload_lora_adapter`, SGLang's `/flush_cache` ...), which would let any
//! client change what every pod serves.
//!
//! A path the gateway does not forward gets an OpenAI-shaped 404; a known path
//! with the wrong method gets 405 with `allow`. Operators open more paths with
//! `api_paths.open` in the plugin configuration, each optionally limited to
//! callers that present a header value (the header is removed before the
//! request goes upstream).

use serde::Deserialize;

use crate::errors::GatewayError;

/// The inference API forwarded by default: `(path, methods)`. A path ending
/// in `/*` also matches one more segment (`/v1/models/{id}`).
pub const INFERENCE_PATHS: [(&str, &str); 8] = [
    ("/v1/completions", "POST"),
    ("/v1/chat/completions", "POST"),
    ("/v1/embeddings", "POST"),
    ("/v1/responses", "POST"),
    ("/v1/rerank", "POST"),
    ("/v1/score", "POST"),
    ("/v1/models", "GET, HEAD"),
    ("/v1/models/*", "GET, HEAD"),
];

/// `api_paths` in the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiPaths {
    /// `false` forwards every path (the behaviour before this check existed).
    pub inference_only: bool,
    /// Extra paths an operator opens (admin or vendor APIs).
    pub open: Vec<OpenPath>,
}

impl Default for ApiPaths {
    fn default() -> Self {
        ApiPaths {
            inference_only: true,
            open: Vec::new(),
        }
    }
}

/// One path an operator opens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenPath {
    /// Exact path, or a prefix ending in `/*` (one more segment).
    pub path: String,
    /// Allowed methods (default `["POST"]`).
    #[serde(default = "post_only")]
    pub methods: Vec<String>,
    /// Only callers that send this header with this exact value.
    #[serde(default)]
    pub caller_header: Option<CallerHeader>,
}

fn post_only() -> Vec<String> {
    vec!["POST".to_owned()]
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerHeader {
    pub name: String,
    pub value: String,
}

/// What the gateway does with a request's path and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathVerdict {
    /// One of the inference API paths: routed with the model rules.
    Inference,
    /// A path an operator opened: balanced by load, body not read; the
    /// caller header (if any) is removed before forwarding.
    Open { strip_header: Option<String> },
    /// Answer with this error (and `allow` for 405).
    Refuse {
        error: GatewayError,
        allow: Option<String>,
    },
}

fn matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|segment| !segment.is_empty() && !segment.contains('/')),
        None => pattern == path,
    }
}

fn method_allowed(methods: &[&str], method: &str) -> bool {
    methods.iter().any(|m| m.eq_ignore_ascii_case(method))
}

impl ApiPaths {
    pub fn validate(&self) -> Result<(), String> {
        for (i, open) in self.open.iter().enumerate() {
            if !open.path.starts_with('/') {
                return Err(format!("api_paths.open[{i}].path must start with '/'"));
            }
            if open.methods.is_empty() || open.methods.iter().any(|m| m.trim().is_empty()) {
                return Err(format!("api_paths.open[{i}].methods must name methods"));
            }
            if let Some(h) = &open.caller_header {
                if h.name.is_empty() || h.name.starts_with(':') || h.value.is_empty() {
                    return Err(format!(
                        "api_paths.open[{i}].caller_header needs a name and a value"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The verdict for `method` on `path` (query string included or not);
    /// `header` looks a request header up by lower-case name.
    pub fn check<'h>(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> PathVerdict {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut allow: Option<String> = None;
        for (pattern, methods) in INFERENCE_PATHS {
            if matches(pattern, path) {
                let list: Vec<&str> = methods.split(", ").collect();
                if method_allowed(&list, method) {
                    return PathVerdict::Inference;
                }
                allow = Some(methods.to_owned());
            }
        }
        for open in &self.open {
            if !matches(&open.path, path) {
                continue;
            }
            let list: Vec<&str> = open.methods.iter().map(String::as_str).collect();
            if let Some(h) = &open.caller_header {
                let name = h.name.to_ascii_lowercase();
                if header(&name) != Some(h.value.as_bytes()) {
                    // Not a trusted caller: the path does not exist for it.
                    continue;
                }
            }
            if method_allowed(&list, method) {
                return PathVerdict::Open {
                    strip_header: open
                        .caller_header
                        .as_ref()
                        .map(|h| h.name.to_ascii_lowercase()),
                };
            }
            allow = Some(list.join(", "));
        }
        if !self.inference_only {
            return PathVerdict::Inference;
        }
        match allow {
            Some(allow) => PathVerdict::Refuse {
                error: GatewayError::method_not_allowed(method, &allow),
                allow: Some(allow),
            },
            None => PathVerdict::Refuse {
                error: GatewayError::not_found(path),
                allow: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_headers(_: &str) -> Option<&'static [u8]> {
        None
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn inference_paths_pass_and_admin_paths_are_404() {
        let p = ApiPaths::default();
        for (m, path) in [
            ("POST", "/v1/completions"),
            ("POST", "/v1/chat/completions?x=1"),
            ("POST", "/v1/embeddings"),
            ("GET", "/v1/models"),
            ("HEAD", "/v1/models"),
            ("GET", "/v1/models/llama"),
        ] {
            assert_eq!(
                p.check(m, path, no_headers),
                PathVerdict::Inference,
                "{m} {path}"
            );
        }
        for path in [
            "/v1/load_lora_adapter",
            "/v1/unload_lora_adapter",
            "/v1/completions/",
            "/v1//completions",
            "/v1/%63ompletions",
            "/v1/models/a/b",
            "/metrics",
            "/v1/../admin",
        ] {
            let PathVerdict::Refuse { error, allow } = p.check("POST", path, no_headers) else {
                panic!("{path} passed");
            };
            assert_eq!(
                (error.status, error.reason, allow),
                (404, "unknown_path", None)
            );
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn wrong_method_is_405_with_allow() {
        let p = ApiPaths::default();
        let PathVerdict::Refuse { error, allow } =
            p.check("GET", "/v1/chat/completions", no_headers)
        else {
            panic!("passed");
        };
        assert_eq!((error.status, allow.as_deref()), (405, Some("POST")));
        let PathVerdict::Refuse { error, allow } = p.check("POST", "/v1/models", no_headers) else {
            panic!("passed");
        };
        assert_eq!((error.status, allow.as_deref()), (405, Some("GET, HEAD")));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn operators_open_paths_for_trusted_callers() {
        let p: ApiPaths = serde_json::from_str(
            r#"{"open":[{"path":"/v1/load_lora_adapter",
                "caller_header":{"name":"X-Admin-Key","value":"s3cret"}},
               {"path":"/tokenize"}]}"#,
        )
        .unwrap();
        p.validate().unwrap();
        let key = |name: &str| (name == "x-admin-key").then_some(&b"s3cret"[..]);
        assert_eq!(
            p.check("POST", "/v1/load_lora_adapter", key),
            PathVerdict::Open {
                strip_header: Some("x-admin-key".into())
            }
        );
        let wrong = |name: &str| (name == "x-admin-key").then_some(&b"guess"[..]);
        assert!(matches!(
            p.check("POST", "/v1/load_lora_adapter", wrong),
            PathVerdict::Refuse { error, .. } if error.status == 404
        ));
        assert_eq!(
            p.check("POST", "/tokenize", no_headers),
            PathVerdict::Open { strip_header: None }
        );
        assert!(matches!(
            p.check("GET", "/tokenize", no_headers),
            PathVerdict::Refuse { error, .. } if error.status == 405
        ));
        let everything = ApiPaths {
            inference_only: false,
            open: vec![],
        };
        assert_eq!(
            everything.check("POST", "/v1/unload_lora_adapter", no_headers),
            PathVerdict::Inference
        );
        let bad: ApiPaths = serde_json::from_str(r#"{"open":[{"path":"x"}]}"#).unwrap();
        assert!(bad.validate().is_err());
    }
}
