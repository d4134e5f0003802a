//! Reading an OpenAI request body without building a DOM.
//!
//! Prompts can be hundreds of KB; the filter needs three top-level fields:
//! `model` (to route and rewrite), `stream`, and the prompt (completions
//! `prompt` or chat `messages`, whose raw JSON text feeds prefix affinity). A
//! single pass over the bytes validates the JSON and records where each
//! top-level value lies; every other byte stays exactly as the client sent it.

use std::borrow::Cow;
use std::ops::Range;

/// Containers deeper than this are refused (Python's json, behind vLLM, stops
/// near 1,000 too).
pub const MAX_DEPTH: usize = 512;

/// Why a body cannot be routed; every variant becomes a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    NotUtf8 {
        offset: usize,
    },
    InvalidJson {
        offset: usize,
        expected: &'static str,
    },
    TooDeep {
        offset: usize,
    },
    NotAnObject,
    MissingModel,
    ModelNotString,
    EmptyModel,
    /// Two top-level `model` keys: backends take the last, so routing on either
    /// would let a client smuggle a model past the rules.
    DuplicateModel,
}

impl BodyError {
    /// Short, stable name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Empty => "empty_body",
            BodyError::NotUtf8 { .. } => "not_utf8",
            BodyError::InvalidJson { .. } | BodyError::TooDeep { .. } | BodyError::NotAnObject => {
                "invalid_json"
            }
            BodyError::MissingModel => "missing_model",
            BodyError::ModelNotString | BodyError::EmptyModel => "invalid_model",
            BodyError::DuplicateModel => "duplicate_model",
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Empty => write!(f, "request body is empty; expected a JSON object"),
            BodyError::NotUtf8 { offset } => {
                write!(f, "request body is not valid UTF-8 (byte {offset})")
            }
            BodyError::InvalidJson { offset, expected } => {
                write!(
                    f,
                    "request body is not valid JSON: expected {expected} at byte {offset}"
                )
            }
            BodyError::TooDeep { offset } => write!(
                f,
                "request body nests deeper than {MAX_DEPTH} levels (byte {offset})"
            ),
            BodyError::NotAnObject => write!(f, "request body must be a JSON object"),
            BodyError::MissingModel => write!(f, "request body has no \"model\" field"),
            BodyError::ModelNotString => write!(f, "\"model\" must be a string"),
            BodyError::EmptyModel => write!(f, "\"model\" must not be empty"),
            BodyError::DuplicateModel => {
                write!(f, "request body has more than one \"model\" field")
            }
        }
    }
}

/// What the filter reads from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// The decoded `model` string.
    pub model: String,
    /// Byte range of the `model` value token, quotes included.
    pub model_span: Range<usize>,
    /// `"stream": true` at top level.
    pub stream: bool,
    /// Byte range of the raw `messages` value, else of `prompt`.
    pub prompt_span: Option<Range<usize>>,
}

impl RequestBody {
    /// The raw JSON text of the prompt (empty when there is none).
    pub fn prompt<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        self.prompt_span
            .clone()
            .and_then(|span| body.get(span))
            .unwrap_or_default()
    }
}

/// Parses an OpenAI completions/chat request body.
pub fn parse_request(body: &[u8]) -> Result<RequestBody, BodyError> {
    let fields = scan_top_level(body)?;
    let (model_span, decoded) = match fields.model.as_slice() {
        [] => return Err(BodyError::MissingModel),
        [one] => one.clone(),
        _ => return Err(BodyError::DuplicateModel),
    };
    let model = decoded.ok_or(BodyError::ModelNotString)?;
    if model.is_empty() {
        return Err(BodyError::EmptyModel);
    }
    let stream = fields
        .stream
        .and_then(|span| body.get(span))
        .is_some_and(|v| v == b"true");
    Ok(RequestBody {
        model,
        model_span,
        stream,
        prompt_span: fields.messages.or(fields.prompt),
    })
}

/// A copy of `body` with the value at `model_span` replaced by `new_model` as
/// a JSON string; every other byte is kept.
pub fn rewrite_model(body: &[u8], model_span: &Range<usize>, new_model: &str) -> Vec<u8> {
    let encoded = json_string(new_model);
    let head = body.get(..model_span.start).unwrap_or_default();
    let tail = body.get(model_span.end..).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len() + encoded.len() + tail.len());
    out.extend_from_slice(head);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(tail);
    out
}

/// For responses: the span of a top-level string `model` equal to `served`,
/// so the filter can put the public name back. `None` for anything else
/// (not JSON, no such field, a different value).
pub fn find_response_model(body: &[u8], served: &str) -> Option<Range<usize>> {
    let fields = scan_top_level(body).ok()?;
    match fields.model.as_slice() {
        [(span, Some(model))] if model == served => Some(span.clone()),
        _ => None,
    }
}

/// Encodes a string as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Top-level fields of interest: every `model` occurrence (span, decoded
/// string if it is a string), and the last `stream`, `prompt`, `messages`.
#[derive(Default)]
struct TopLevelFields {
    model: Vec<(Range<usize>, Option<String>)>,
    stream: Option<Range<usize>>,
    prompt: Option<Range<usize>>,
    messages: Option<Range<usize>>,
}

fn scan_top_level(body: &[u8]) -> Result<TopLevelFields, BodyError> {
    if let Err(offset) = validate_utf8(body) {
        return Err(BodyError::NotUtf8 { offset });
    }
    let mut s = Scanner {
        bytes: body,
        pos: 0,
    };
    s.skip_ws();
    match s.peek() {
        None => return Err(BodyError::Empty),
        Some(b'{') => s.pos += 1,
        Some(_) => {
            // Valid JSON that is not an object is a different error from junk.
            s.skip_value()?;
            s.skip_ws();
            return Err(if s.peek().is_none() {
                BodyError::NotAnObject
            } else {
                s.error("end of input")
            });
        }
    }
    let mut fields = TopLevelFields::default();
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            s.skip_ws();
            let key = s.string_span()?;
            let key = decode_string(body.get(key.clone()).unwrap_or_default());
            s.skip_ws();
            s.expect(b':', "':'")?;
            s.skip_ws();
            let start = s.pos;
            s.skip_value()?;
            let span = start..s.pos;
            match key.as_deref() {
                Some("model") => {
                    let value = body.get(span.clone()).unwrap_or_default();
                    let decoded = if value.first() == Some(&b'"') {
                        decode_string(value).map(Cow::into_owned)
                    } else {
                        None
                    };
                    fields.model.push((span, decoded));
                }
                Some("stream") => fields.stream = Some(span),
                Some("prompt") => fields.prompt = Some(span),
                Some("messages") => fields.messages = Some(span),
                _ => {}
            }
            s.skip_ws();
            match s.peek() {
                Some(b',') => s.pos += 1,
                Some(b'}') => {
                    s.pos += 1;
                    break;
                }
                _ => return Err(s.error("',' or '}'")),
            }
        }
    }
    s.skip_ws();
    if s.peek().is_some() {
        return Err(s.error("end of input"));
    }
    Ok(fields)
}

/// Decodes a JSON string token (quotes included): borrowed when it has no
/// escapes (every key of a real request), built otherwise. `None` when an
/// escape is invalid or names a lone surrogate.
fn decode_string(token: &[u8]) -> Option<Cow<'_, str>> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    let mut out = String::with_capacity(inner.len());
    let text = std::str::from_utf8(inner).ok()?;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&hi) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let lo = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        };
        out.push(decoded);
    }
    Some(Cow::Owned(out))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0u32;
    for _ in 0..4 {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// Bytes per step of the ASCII and string-stop scans.
const BLOCK: usize = 64;

/// Checks that `bytes` are UTF-8; `Err` holds the offset of the first invalid
/// byte. Bodies are mostly ASCII, so their ASCII head is skipped 64 bytes per
/// step (wasm SIMD, or word arithmetic), and std's validator takes over at the
/// first non-ASCII block (its own ASCII fast path uses 4-byte words on wasm32).
fn validate_utf8(bytes: &[u8]) -> Result<(), usize> {
    let (blocks, _) = bytes.as_chunks::<BLOCK>();
    let ascii = blocks
        .iter()
        .position(|block| !is_ascii_block(block))
        .unwrap_or(blocks.len())
        * BLOCK;
    let rest = bytes.get(ascii..).unwrap_or_default();
    std::str::from_utf8(rest)
        .map(|_| ())
        .map_err(|e| ascii + e.valid_up_to())
}

/// A block as four 16-byte SIMD vectors.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn lanes(block: &[u8; BLOCK]) -> [core::arch::wasm32::v128; 4] {
    use core::arch::wasm32::v128_load;
    let p = block.as_ptr();
    // SAFETY: the block is 64 readable bytes, so offsets 0, 16, 32 and 48
    // each start 16 readable bytes; v128.load has no alignment requirement.
    unsafe {
        [
            v128_load(p.cast()),
            v128_load(p.add(16).cast()),
            v128_load(p.add(32).cast()),
            v128_load(p.add(48).cast()),
        ]
    }
}

/// Whether 64 bytes are all ASCII (high bits clear). A `false` only sends
/// the rest of the body to std's validator, so it is always safe.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn is_ascii_block(block: &[u8; BLOCK]) -> bool {
    use core::arch::wasm32::{u8x16_bitmask, v128_or};
    let [a, b, c, d] = lanes(block);
    u8x16_bitmask(v128_or(v128_or(a, b), v128_or(c, d))) == 0
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn is_ascii_block(block: &[u8; BLOCK]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let (words, _) = block.as_chunks::<8>();
    words.iter().fold(0, |acc, &w| acc | u64::from_le_bytes(w)) & HIGH == 0
}

/// [`string_stop`] with wasm SIMD (the filter's release build enables
/// `simd128`; Envoy's V8 and wasmtime run it): 64 bytes per step while
/// nothing stops (one test for four vectors), then 16 per step.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn string_stop(bytes: &[u8]) -> Option<usize> {
    use core::arch::wasm32::{
        u8x16_bitmask, u8x16_eq, u8x16_lt, u8x16_splat, v128, v128_any_true, v128_load, v128_or,
    };
    let (quote, backslash, space) = (u8x16_splat(b'"'), u8x16_splat(b'\\'), u8x16_splat(0x20));
    let stops_in = |v: v128| {
        v128_or(
            v128_or(u8x16_eq(v, quote), u8x16_eq(v, backslash)),
            u8x16_lt(v, space),
        )
    };
    let (wide, rest) = bytes.as_chunks::<BLOCK>();
    for (i, block) in wide.iter().enumerate() {
        let stops = lanes(block).map(stops_in);
        let [a, b, c, d] = stops;
        if v128_any_true(v128_or(v128_or(a, b), v128_or(c, d))) {
            for (j, lane) in stops.into_iter().enumerate() {
                let mask = u8x16_bitmask(lane);
                if mask != 0 {
                    return Some(i * BLOCK + j * 16 + mask.trailing_zeros() as usize);
                }
            }
        }
    }
    let done = wide.len() * BLOCK;
    let (blocks, tail) = rest.as_chunks::<16>();
    for (i, block) in blocks.iter().enumerate() {
        // SAFETY: `block` is 16 readable bytes, and v128.load has no
        // alignment requirement.
        let v = unsafe { v128_load(block.as_ptr().cast()) };
        let mask = u8x16_bitmask(stops_in(v));
        if mask != 0 {
            return Some(done + i * 16 + mask.trailing_zeros() as usize);
        }
    }
    string_stop_words(tail).map(|i| done + blocks.len() * 16 + i)
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn string_stop(bytes: &[u8]) -> Option<usize> {
    string_stop_words(bytes)
}

/// Index of the first byte that ends a plain run inside a JSON string: `"`,
/// `\\` or a control character (< 0x20). Prompts are almost all plain string
/// bytes, so this loop is the scanner's cost: it tests eight bytes per step
/// with word arithmetic (wasm has 64-bit integers; no SIMD needed), then
/// finishes the tail byte by byte.
fn string_stop_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const SPACES: u64 = ONES * 0x20;
    let (words, tail) = bytes.as_chunks::<8>();
    for (i, &word) in words.iter().enumerate() {
        let w = u64::from_le_bytes(word);
        // A byte's high bit is set in `(x - ONES) & !x` when that byte of x is
        // zero (and, by the borrow, possibly in higher bytes above a zero), and
        // in `(w - SPACES) & !w` when that byte of w is below 0x20: the lowest
        // set bit always marks a real match.
        let quote = w ^ QUOTES;
        let backslash = w ^ BACKSLASHES;
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(SPACES) & !w))
            & HIGH;
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| words.len() * 8 + i)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, expected: &'static str) -> BodyError {
        BodyError::InvalidJson {
            offset: self.pos,
            expected,
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), BodyError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Validates a string token and returns its span (quotes included).
    fn string_span(&mut self) -> Result<Range<usize>, BodyError> {
        let start = self.pos;
        self.expect(b'"', "a string")?;
        loop {
            let rest = self.bytes.get(self.pos..).unwrap_or_default();
            let Some(i) = string_stop(rest) else {
                self.pos = self.bytes.len();
                return Err(self.error("'\"' closing the string"));
            };
            self.pos += i;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(start..self.pos);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                                    return Err(self.error("4 hex digits after \\u"));
                                }
                                self.pos += 1;
                            }
                        }
                        _ => return Err(self.error("a valid escape")),
                    }
                }
                _ => return Err(self.error("no control characters in strings")),
            }
        }
    }

    fn literal(&mut self, word: &'static [u8], what: &'static str) -> Result<(), BodyError> {
        if self
            .bytes
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(word))
        {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), BodyError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("a digit after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("a digit in the exponent"));
            }
        }
        Ok(())
    }

    /// Skips one JSON value, validating it. Iterative: nesting costs heap, not
    /// stack, and is capped at [`MAX_DEPTH`].
    fn skip_value(&mut self) -> Result<(), BodyError> {
        // true = object, false = array
        let mut stack: Vec<bool> = Vec::new();
        loop {
            // A value is expected here.
            self.skip_ws();
            match self.peek() {
                Some(b'{') | Some(b'[') => {
                    let object = self.peek() == Some(b'{');
                    self.pos += 1;
                    self.skip_ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        if stack.len() >= MAX_DEPTH {
                            return Err(BodyError::TooDeep { offset: self.pos });
                        }
                        stack.push(object);
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string_span()?;
                }
                Some(b't') => self.literal(b"true", "a value")?,
                Some(b'f') => self.literal(b"false", "a value")?,
                Some(b'n') => self.literal(b"null", "a value")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.error("a value")),
            }
            // A value just ended: close finished containers.
            loop {
                let Some(&object) = stack.last() else {
                    return Ok(());
                };
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.skip_ws();
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        stack.pop();
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => {
                        return Err(self.error(if object { "',' or '}'" } else { "',' or ']'" }));
                    }
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn member_key(&mut self) -> Result<(), BodyError> {
        self.string_span()?;
        self.skip_ws();
        self.expect(b':', "':'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestBody, BodyError> {
        parse_request(s.as_bytes())
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn reads_model_stream_and_prompt() {
        let body = r#"{"model":"food-review","prompt":"PROMPT","max_tokens":100,"temperature":"0","stream":true}"#;
        let r = parse(body).unwrap();
        assert_eq!(r.model, "food-review");
        assert_eq!(&body[r.model_span.clone()], "\"food-review\"");
        assert!(r.stream);
        assert_eq!(r.prompt(body.as_bytes()), b"\"PROMPT\"");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn chat_messages_are_the_prompt_and_nested_model_keys_do_not_match() {
        let body = r#" { "messages" : [ {"role":"user","content":"hi","model":"evil"} ],
            "meta": {"model": "nested", "x": [1, {"model": 2}]}, "model" : "travelhelper" , "stream": "true" } "#;
        let r = parse(body).unwrap();
        assert_eq!(r.model, "travelhelper");
        assert!(!r.stream, "only the literal true streams");
        assert_eq!(
            std::str::from_utf8(r.prompt(body.as_bytes())).unwrap(),
            r#"[ {"role":"user","content":"hi","model":"evil"} ]"#
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn escapes_in_keys_and_values_are_decoded() {
        let r = parse(r#"{"mod\u0065l":"a\"b\\c\/d\u00e9\ud83d\ude00"}"#).unwrap();
        assert_eq!(r.model, "a\"b\\c/dé😀");
        // An escaped quote inside another string does not end it.
        let r = parse(r#"{"prompt":"say \"model\": \"x\"","model":"m"}"#).unwrap();
        assert_eq!(r.model, "m");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn model_errors() {
        assert_eq!(parse(r#"{"prompt":"x"}"#), Err(BodyError::MissingModel));
        assert_eq!(parse(r#"{}"#), Err(BodyError::MissingModel));
        assert_eq!(parse(r#"{"model":7}"#), Err(BodyError::ModelNotString));
        assert_eq!(parse(r#"{"model":null}"#), Err(BodyError::ModelNotString));
        assert_eq!(parse(r#"{"model":["a"]}"#), Err(BodyError::ModelNotString));
        assert_eq!(parse(r#"{"model":""}"#), Err(BodyError::EmptyModel));
        assert_eq!(
            parse(r#"{"model":"\ud800"}"#),
            Err(BodyError::ModelNotString)
        );
        assert_eq!(
            parse(r#"{"model":"a","model":"b"}"#),
            Err(BodyError::DuplicateModel)
        );
        assert_eq!(
            parse(r#"{"model":"a","mod\u0065l":"b"}"#),
            Err(BodyError::DuplicateModel)
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn invalid_json_is_rejected_with_an_offset() {
        for bad in [
            r#"{"model":"a""#,
            r#"{"model":"a",}"#,
            r#"{"model":"a"} x"#,
            r#"{"model":"a" "x":1}"#,
            r#"{"model":"a","x":[1,]}"#,
            r#"{"model":"a","x":[1 2]}"#,
            r#"{"model":"a","x":01}"#,
            r#"{"model":"a","x":1.}"#,
            r#"{"model":"a","x":1e}"#,
            r#"{"model":"a","x":tru}"#,
            r#"{"model":"a","x":"\q"}"#,
            r#"{"model":"a","x":"\u12"}"#,
            r#"{"model":"a","x":{"k" 1}}"#,
            r#"{"model":"a","x":{1:1}}"#,
            r#"{"model":"a","x":]"#,
            "{\"model\":\"a\",\"x\":\"tab\tinside\"}",
            r#"{model:"a"}"#,
            "{",
        ] {
            match parse(bad) {
                Err(BodyError::InvalidJson { .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(parse(""), Err(BodyError::Empty));
        assert_eq!(parse("  \n"), Err(BodyError::Empty));
        assert_eq!(parse("[1,2]"), Err(BodyError::NotAnObject));
        assert_eq!(parse("\"model\""), Err(BodyError::NotAnObject));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn valid_json_of_every_shape_is_accepted() {
        let body = r#"{"a":[],"b":{},"c":[[],[{}]],"d":-0.5e+10,"e":0,"f":1E-2,"g":true,"h":false,
            "i":null,"j":"\u0000\t","model":"m","k":{"l":{"m":[1,"2",{"n":null}]}}}"#;
        assert_eq!(parse(body).unwrap().model, "m");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn truncated_bodies_never_panic() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9llo \"x\""}],"n":-1.5e3,"t":true}"#;
        for end in 0..body.len() {
            assert!(
                parse_request(&body.as_bytes()[..end]).is_err(),
                "prefix {end}"
            );
        }
        assert!(parse(body).is_ok());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn invalid_utf8_is_rejected() {
        let mut body = br#"{"model":"m","prompt":"x"}"#.to_vec();
        body[22] = 0xff;
        assert_eq!(parse_request(&body), Err(BodyError::NotUtf8 { offset: 22 }));
        assert_eq!(
            parse_request(&[0xc3]),
            Err(BodyError::NotUtf8 { offset: 0 })
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(parse(&deep), Err(BodyError::TooDeep { .. })));
        let ok = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(500),
            "]".repeat(500)
        );
        assert!(parse(&ok).is_ok());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn string_stop_finds_the_first_stop_byte_at_every_position() {
        // scripts/test-wasm32.sh builds as the release does, so the SIMD
        // scanner is the one under test there.
        #[cfg(target_arch = "wasm32")]
        assert!(cfg!(target_feature = "simd128"));
        let naive = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        };
        // Bytes around every edge the word test has: the stop bytes, their
        // neighbours, 0x1f/0x20, and UTF-8 lead/continuation bytes.
        let alphabet = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, b'!', b'#', b'[', b']', b'a', 0x7f, 0x80, 0xa2,
            0xc3, 0xe9, 0xff,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            for _ in 0..100 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        // Mostly plain bytes, so stops land anywhere in a word.
                        if state.is_multiple_of(5) {
                            alphabet[(state >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (state >> 16) as u8 % 26
                        }
                    })
                    .collect();
                assert_eq!(string_stop(&bytes), naive(&bytes), "{bytes:?}");
                assert_eq!(string_stop_words(&bytes), naive(&bytes), "{bytes:?}");
            }
        }
        for stop in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..150 {
                let mut bytes = vec![b'x'; 150];
                bytes[at] = stop;
                assert_eq!(string_stop(&bytes), Some(at));
                bytes[at..].fill(stop);
                assert_eq!(string_stop(&bytes), Some(at), "a run of stops");
            }
        }
        assert_eq!(string_stop("é€😀 plain".repeat(9).as_bytes()), None);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn utf8_errors_are_found_at_their_offset_past_any_ascii_head() {
        for at in 0..100 {
            let mut bytes = vec![b'a'; 100];
            bytes[at] = 0xff;
            assert_eq!(validate_utf8(&bytes), Err(at));
            // A valid two-byte character first, then a truncated one.
            let mut bytes = vec![b'a'; 100];
            bytes[at / 2..at / 2 + 2].copy_from_slice("é".as_bytes());
            if at / 2 + 2 < 100 {
                bytes[99] = 0xc3;
                assert_eq!(validate_utf8(&bytes), Err(99), "at {at}");
            }
        }
        assert_eq!(validate_utf8("é".repeat(40).as_bytes()), Ok(()));
        assert_eq!(validate_utf8(&[b'x'; 64]), Ok(()));
        assert!(is_ascii_block(&[0x7f; BLOCK]));
        let mut block = [b'a'; BLOCK];
        for at in 0..BLOCK {
            block[at] = 0x80;
            assert!(!is_ascii_block(&block), "{at}");
            block[at] = b'a';
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_200kb_prompt_is_scanned_and_spanned() {
        let prompt = "lorem ipsum \\\"quoted\\\" é ".repeat(8_000);
        let body =
            format!(r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"model":"m"}}"#);
        assert!(body.len() > 200_000);
        let r = parse(&body).unwrap();
        assert_eq!(r.model, "m");
        assert!(r.prompt(body.as_bytes()).len() > 200_000);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn rewrite_keeps_every_other_byte() {
        let body = "{ \"temperature\": \"0\",\n  \"model\" :\"travelhelper\" ,\"prompt\":\"é\\n\"}";
        let r = parse(body).unwrap();
        let out = rewrite_model(body.as_bytes(), &r.model_span, "travel-helper-v1");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{ \"temperature\": \"0\",\n  \"model\" :\"travel-helper-v1\" ,\"prompt\":\"é\\n\"}"
        );
        let out = rewrite_model(body.as_bytes(), &r.model_span, "we\"ird\\");
        assert_eq!(parse_request(&out).unwrap().model, "we\"ird\\");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn response_model_is_found_only_when_it_is_the_served_one() {
        let body =
            br#"{"id":"x","object":"text_completion","model":"travel-helper-v1","choices":[]}"#;
        let span = find_response_model(body, "travel-helper-v1").unwrap();
        let out = rewrite_model(body, &span, "travelhelper");
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains(r#""model":"travelhelper""#));
        assert_eq!(find_response_model(body, "other"), None);
        assert_eq!(find_response_model(b"data: {}", "x"), None);
        assert_eq!(find_response_model(br#"{"model":1}"#, "1"), None);
    }
}
