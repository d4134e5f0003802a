//! The OpenAI-compatible request and response shapes as vLLM serves them.
//! Requests are read leniently where vLLM (pydantic) is lenient — unknown
//! fields are ignored, numbers may arrive as numeric strings — and strictly
//! where a wrong value would change the answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// An error answered in vLLM's JSON shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// `The model `x` does not exist.` (404), as vLLM words it.
    pub fn unknown_model(model: &str) -> Self {
        Self::not_found(format!("The model `{model}` does not exist."))
    }

    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// `{"error":{"message","type","param":null,"code"}}`.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": error_type(self.status),
            "param": null,
            "code": self.status.as_u16(),
        }})
    }
}

/// The exception class name vLLM reports for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        408 => "RequestTimeoutError",
        413 => "RequestEntityTooLargeError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        501 => "NotImplementedError",
        503 => "ServiceUnavailableError",
        s if s >= 500 => "InternalServerError",
        _ => "BadRequestError",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    ChatCompletions,
}

/// The prompt of a request, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    /// Chat messages as (role, text content).
    Chat(Vec<(String, String)>),
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceRequest {
    pub endpoint: Endpoint,
    pub model: String,
    /// One entry per prompt (`/v1/completions` accepts a batch).
    pub prompts: Vec<Prompt>,
    /// `max_tokens` (or chat's `max_completion_tokens`), if given.
    pub max_tokens: Option<u32>,
    pub n: u32,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
}

/// Most choices per request (`n` times prompts), to bound one request's work.
pub const MAX_CHOICES: usize = 256;

/// Parses a request body.
pub fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<InferenceRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request("Field required: model"))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "model: Input should be a valid string",
            ))
        }
    };
    let prompts = match endpoint {
        Endpoint::Completions => parse_prompt(obj.get("prompt"))?,
        Endpoint::ChatCompletions => vec![Prompt::Chat(parse_messages(obj.get("messages"))?)],
    };
    let max_tokens = match endpoint {
        Endpoint::ChatCompletions => match opt_u32(&obj, "max_completion_tokens")? {
            Some(v) => Some(v),
            None => opt_u32(&obj, "max_tokens")?,
        },
        Endpoint::Completions => opt_u32(&obj, "max_tokens")?,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::bad_request(
            "max_tokens must be at least 1, got 0.",
        ));
    }
    let n = opt_u32(&obj, "n")?.unwrap_or(1);
    if n == 0 {
        return Err(ApiError::bad_request("n must be at least 1, got 0."));
    }
    if prompts.len() * n as usize > MAX_CHOICES {
        return Err(ApiError::bad_request(format!(
            "At most {MAX_CHOICES} choices per request (prompts x n)."
        )));
    }
    let stream = opt_bool(&obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => opt_bool(o, "include_usage")?.unwrap_or(false),
        Some(_) => return Err(ApiError::bad_request("stream_options must be an object")),
    };
    if include_usage && !stream {
        return Err(ApiError::bad_request(
            "Stream options can only be defined when `stream=True`.",
        ));
    }
    Ok(InferenceRequest {
        endpoint,
        model,
        prompts,
        max_tokens,
        n,
        stream,
        include_usage,
        ignore_eos: opt_bool(&obj, "ignore_eos")?.unwrap_or(false),
    })
}

fn parse_prompt(v: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "prompt must be a string, an array of strings, an array of tokens, or an array of token arrays",
        )
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::bad_request("Field required: prompt")),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::bad_request("prompt must not be empty"))
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(|s| Prompt::Text(s.to_string()))
                        .ok_or_else(invalid)
                })
                .collect(),
            Value::Number(_) => Ok(vec![Prompt::Tokens(
                token_array(items).ok_or_else(invalid)?,
            )]),
            Value::Array(_) => items
                .iter()
                .map(|i| match i {
                    Value::Array(toks) if !toks.is_empty() => {
                        token_array(toks).map(Prompt::Tokens).ok_or_else(invalid)
                    }
                    _ => Err(invalid()),
                })
                .collect(),
            _ => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

fn token_array(items: &[Value]) -> Option<Vec<u32>> {
    items
        .iter()
        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
        .collect()
}

fn parse_messages(v: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let items = match v {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Field required: messages")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::bad_request("messages must be an array")),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::bad_request(format!(
                "messages[{i}] must be an object"
            )));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.clone(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role is required"
                )))
            }
        };
        let content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match part.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        None => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content parts must be text parts"
                            )))
                        }
                    }
                }
                text
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].content must be a string or an array of parts"
                )))
            }
        };
        out.push((role, content));
    }
    Ok(out)
}

fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, ApiError> {
    let bad = || ApiError::bad_request(format!("{key}: Input should be a valid integer"));
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(u32::try_from(v).unwrap_or(u32::MAX)))
            } else if n.as_i64().is_some() {
                Err(ApiError::bad_request(format!("{key} must be at least 1")))
            } else {
                Err(bad())
            }
        }
        Some(Value::String(s)) => s.trim().parse::<u32>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key}: Input should be a valid boolean"
        ))),
    }
}

/// Token counts of a finished request, summed over choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

impl Usage {
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// One finished choice of a non-streaming answer.
#[derive(Debug, Clone)]
pub struct ChoiceResult {
    pub text: String,
    pub finish_reason: &'static str,
}

/// The non-streaming response body.
pub fn response_body(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    choices: &[ChoiceResult],
    usage: Usage,
) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| match endpoint {
            Endpoint::Completions => json!({
                "index": i, "text": c.text, "logprobs": null,
                "finish_reason": c.finish_reason, "stop_reason": null, "prompt_logprobs": null,
            }),
            Endpoint::ChatCompletions => json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text, "refusal": null,
                            "tool_calls": [], "reasoning_content": null},
                "logprobs": null, "finish_reason": c.finish_reason, "stop_reason": null,
            }),
        })
        .collect();
    json!({
        "id": id,
        "object": match endpoint {
            Endpoint::Completions => "text_completion",
            Endpoint::ChatCompletions => "chat.completion",
        },
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage.to_json(),
        "prompt_logprobs": null,
    })
}

/// One streamed chunk for choice `index`: a text delta and/or a finish reason.
pub fn chunk_body(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    index: usize,
    delta: ChunkDelta<'_>,
) -> Value {
    let (text, finish) = match delta {
        ChunkDelta::Role => (None, None),
        ChunkDelta::Text(t) => (Some(t), None),
        ChunkDelta::Finish(r) => (None, Some(r)),
    };
    let choice = match endpoint {
        Endpoint::Completions => json!({
            "index": index, "text": text.unwrap_or(""), "logprobs": null,
            "finish_reason": finish, "stop_reason": null,
        }),
        Endpoint::ChatCompletions => {
            let delta = match delta {
                ChunkDelta::Role => json!({"role": "assistant", "content": ""}),
                ChunkDelta::Text(t) => json!({"content": t}),
                ChunkDelta::Finish(_) => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": null,
                   "finish_reason": finish, "stop_reason": null})
        }
    };
    json!({
        "id": id, "object": chunk_object(endpoint), "created": created, "model": model,
        "choices": [choice],
    })
}

/// The final usage chunk of a stream (`stream_options.include_usage`).
pub fn usage_chunk(endpoint: Endpoint, id: &str, created: u64, model: &str, usage: Usage) -> Value {
    json!({
        "id": id, "object": chunk_object(endpoint), "created": created, "model": model,
        "choices": [], "usage": usage.to_json(),
    })
}

fn chunk_object(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Completions => "text_completion",
        Endpoint::ChatCompletions => "chat.completion.chunk",
    }
}

/// What a streamed chunk carries.
#[derive(Debug, Clone, Copy)]
pub enum ChunkDelta<'a> {
    /// Chat's opening `{"role":"assistant"}` delta.
    Role,
    Text(&'a str),
    Finish(&'a str),
}

/// An SSE frame: `data: <json>\n\n`.
pub fn sse_frame(v: &Value) -> bytes::Bytes {
    let mut s = String::with_capacity(256);
    s.push_str("data: ");
    s.push_str(&v.to_string());
    s.push_str("\n\n");
    bytes::Bytes::from(s)
}

/// The stream terminator.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_in_every_openai_shape() {
        let p = |b: &str| parse_request(Endpoint::Completions, b.as_bytes());
        assert_eq!(
            p(r#"{"model":"m","prompt":"hi"}"#).unwrap().prompts,
            vec![Prompt::Text("hi".into())]
        );
        assert_eq!(
            p(r#"{"model":"m","prompt":["a","b"]}"#)
                .unwrap()
                .prompts
                .len(),
            2
        );
        assert_eq!(
            p(r#"{"model":"m","prompt":[1,2,3]}"#).unwrap().prompts,
            vec![Prompt::Tokens(vec![1, 2, 3])]
        );
        assert_eq!(
            p(r#"{"model":"m","prompt":[[1],[2,3]]}"#)
                .unwrap()
                .prompts
                .len(),
            2
        );
        assert!(p(r#"{"model":"m","prompt":[]}"#).is_err());
        assert!(p(r#"{"model":"m","prompt":[1,"a"]}"#).is_err());
        assert!(p(r#"{"model":"m"}"#)
            .unwrap_err()
            .message
            .contains("prompt"));
        assert!(p(r#"{"prompt":"x"}"#)
            .unwrap_err()
            .message
            .contains("model"));
        assert!(p("{nope").unwrap_err().message.contains("Invalid JSON"));
        // Odd types in fields the simulator does not own are fine, as in vLLM.
        let r = p(r#"{"model":"m","prompt":"x","max_tokens":"7","temperature":"0"}"#).unwrap();
        assert_eq!(r.max_tokens, Some(7));
    }

    #[test]
    fn chat_prefers_max_completion_tokens() {
        let r = parse_request(
            Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_completion_tokens":9}"#,
        )
        .unwrap();
        assert_eq!(r.max_tokens, Some(9));
        assert!(parse_request(
            Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[{"content":"x"}]}"#
        )
        .is_err());
    }

    #[test]
    fn error_body_matches_vllm() {
        let e = ApiError::unknown_model("x");
        assert_eq!(
            e.body(),
            json!({"error":{"message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}})
        );
    }
}
