//! The filter's local replies, shaped like OpenAI / vLLM errors so clients'
//! SDKs surface them as ordinary API errors.

use serde_json::json;

/// A request the filter answers itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u32,
    /// Short, stable reason for metrics and logs (`invalid_json`, `shed`, ...).
    pub reason: &'static str,
    pub message: String,
}

impl GatewayError {
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            status: 400,
            reason,
            message: message.into(),
        }
    }

    pub fn body_too_large(limit: u64) -> Self {
        GatewayError {
            status: 413,
            reason: "body_too_large",
            message: format!("request body exceeds the gateway limit of {limit} bytes"),
        }
    }

    /// 429 for a sheddable request while the pool is saturated (GIE wording).
    pub fn shed() -> Self {
        GatewayError {
            status: 429,
            reason: "shed",
            message: "system saturated, sheddable request dropped".into(),
        }
    }

    /// 404 for a path the gateway does not forward (see `paths`).
    pub fn not_found(path: &str) -> Self {
        let shown: String = path.chars().take(200).collect();
        GatewayError {
            status: 404,
            reason: "unknown_path",
            message: format!("the gateway does not serve {shown:?}"),
        }
    }

    /// 405 for a known path and the wrong method (`allow` lists the right ones).
    pub fn method_not_allowed(method: &str, allow: &str) -> Self {
        let shown: String = method.chars().take(32).collect();
        GatewayError {
            status: 405,
            reason: "method_not_allowed",
            message: format!("method {shown} is not allowed here; use {allow}"),
        }
    }

    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            status: 503,
            reason,
            message: message.into(),
        }
    }

    /// The OpenAI error `type` for the status.
    pub fn error_type(&self) -> &'static str {
        match self.status {
            400 => "BadRequestError",
            404 => "NotFoundError",
            405 => "MethodNotAllowedError",
            413 => "RequestTooLargeError",
            429 => "RateLimitError",
            503 => "ServiceUnavailableError",
            _ => "InternalServerError",
        }
    }

    /// `{"error":{"message":…,"type":…,"param":null,"code":N}}`
    pub fn body(&self) -> Vec<u8> {
        json!({
            "error": {
                "message": self.message,
                "type": self.error_type(),
                "param": null,
                "code": self.status,
            }
        })
        .to_string()
        .into_bytes()
    }
}

impl From<crate::request::BodyError> for GatewayError {
    fn from(e: crate::request::BodyError) -> Self {
        GatewayError::bad_request(e.reason(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::BodyError;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn bodies_are_openai_shaped() {
        let e = GatewayError::shed();
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v,
            json!({"error":{"message":"system saturated, sheddable request dropped",
                "type":"RateLimitError","param":null,"code":429}})
        );
        let e: GatewayError = BodyError::ModelNotString.into();
        assert_eq!((e.status, e.reason), (400, "invalid_model"));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "\"model\" must be a string");
        assert_eq!(GatewayError::body_too_large(10).status, 413);
        assert_eq!(
            GatewayError::unavailable("no_endpoint", "x").error_type(),
            "ServiceUnavailableError"
        );
    }
}
