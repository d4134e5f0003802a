//! Puts the public model name back into a streamed (server-sent events)
//! response, chunk by chunk: every complete `data: {json}` line whose
//! top-level `model` is the served name gets the public name. A line split
//! across chunks is held back (the part after the last newline) and sent at
//! the front of the next chunk; a held tail over [`MAX_CARRY_BYTES`] or the
//! end of the stream releases it unchanged.

use crate::request::{find_response_model, rewrite_model};

/// Longest incomplete line held between chunks.
pub const MAX_CARRY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseRewriter {
    served: String,
    public: String,
    carry: Vec<u8>,
}

impl SseRewriter {
    pub fn new(served: &str, public: &str) -> Self {
        SseRewriter {
            served: served.to_owned(),
            public: public.to_owned(),
            carry: Vec::new(),
        }
    }

    /// The bytes to send in place of `chunk` (`end`: the stream's last).
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        let mut pending = std::mem::take(&mut self.carry);
        pending.extend_from_slice(chunk);
        let complete = if end {
            pending.len()
        } else {
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(at) => at + 1,
                None if pending.len() > MAX_CARRY_BYTES => pending.len(),
                None => {
                    self.carry = pending;
                    return Vec::new();
                }
            }
        };
        let tail = pending.split_off(complete);
        if tail.len() > MAX_CARRY_BYTES {
            pending.extend_from_slice(&tail);
        } else {
            self.carry = tail;
        }
        let mut out = Vec::with_capacity(pending.len() + 16);
        for line in pending.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(&self.rewrite_line(line));
        }
        out
    }

    fn rewrite_line(&self, line: &[u8]) -> Vec<u8> {
        let Some(rest) = line.strip_prefix(b"data:") else {
            return line.to_vec();
        };
        let start = 5 + rest.iter().take_while(|b| **b == b' ').count();
        let end = line.len()
            - line
                .iter()
                .rev()
                .take_while(|b| matches!(b, b'\n' | b'\r'))
                .count();
        let Some(payload) = line.get(start..end) else {
            return line.to_vec();
        };
        match find_response_model(payload, &self.served) {
            Some(span) => {
                let mut out = line[..start].to_vec();
                out.extend_from_slice(&rewrite_model(payload, &span, &self.public));
                out.extend_from_slice(&line[end..]);
                out
            }
            None => line.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str =
        "data: {\"id\":\"1\",\"model\":\"adapter-v2\",\"choices\":[{\"text\":\"a\"}]}\n\n\
data: {\"id\":\"1\",\"model\":\"adapter-v2\",\"choices\":[{\"text\":\"b\"}]}\r\n\r\n\
data: [DONE]\n\n";

    fn expected() -> String {
        STREAM.replace("adapter-v2", "travelhelper")
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn every_split_of_the_stream_gives_the_same_rewrite() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut r = SseRewriter::new("adapter-v2", "travelhelper");
            let mut out = r.push(&bytes[..cut], false);
            out.extend(r.push(&bytes[cut..], true));
            assert_eq!(String::from_utf8(out).unwrap(), expected(), "cut at {cut}");
        }
        // One byte at a time.
        let mut r = SseRewriter::new("adapter-v2", "travelhelper");
        let mut out = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            out.extend(r.push(&[*b], i + 1 == bytes.len()));
        }
        assert_eq!(String::from_utf8(out).unwrap(), expected());
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn other_models_comments_and_junk_pass_unchanged() {
        let input = ": ping\n\ndata: {\"model\":\"base\"}\n\ndata: not json\n\nevent: x\n";
        let mut r = SseRewriter::new("adapter-v2", "travelhelper");
        assert_eq!(r.push(input.as_bytes(), true), input.as_bytes());
        let mut r = SseRewriter::new("adapter-v2", "travelhelper");
        let huge = vec![b'x'; MAX_CARRY_BYTES + 1];
        assert_eq!(r.push(&huge, false), huge);
    }
}
