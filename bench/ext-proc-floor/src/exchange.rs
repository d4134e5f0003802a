//! One request's ext_proc exchange, as GIE's endpoint picker conducts it with
//! `request_body_mode: FULL_DUPLEX_STREAMED`: the request headers are held
//! (no answer yet), the body chunks are collected until `end_of_stream` (or
//! the trailers), `model` is read, then the headers answer carries the
//! destination header and the body answer hands the whole body back to Envoy
//! (in this mode Envoy forwards what the processor returns, not what it sent).

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, BodyMutation, BodyResponse,
    CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse, ProcessingRequest,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse,
};
use gateway_filter::errors::GatewayError;

/// Header the picker sets and the pool cluster routes on.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// Where one request's exchange stands.
#[derive(Debug, Default)]
pub struct Exchange {
    /// The request headers arrived and are waiting for the answer.
    headers_held: bool,
    /// The body so far.
    body: Vec<u8>,
    /// The answer went out (the rest of the stream is ignored).
    answered: bool,
}

impl Exchange {
    /// The answers to one message from Envoy; `pick` names the destination.
    pub fn on(
        &mut self,
        message: ProcessingRequest,
        pick: impl FnOnce() -> String,
    ) -> Vec<ProcessingResponse> {
        if self.answered {
            return Vec::new();
        }
        match message.request {
            Some(processing_request::Request::RequestHeaders(headers)) => {
                if headers.end_of_stream {
                    // No body (a GET): route it without one, as GIE does.
                    self.answered = true;
                    return vec![headers_answer(&pick(), None)];
                }
                self.headers_held = true;
                Vec::new()
            }
            Some(processing_request::Request::RequestBody(chunk)) => {
                if self.body.is_empty() {
                    self.body = chunk.body;
                } else {
                    self.body.extend_from_slice(&chunk.body);
                }
                if chunk.end_of_stream {
                    self.finish(pick, false)
                } else {
                    Vec::new()
                }
            }
            Some(processing_request::Request::RequestTrailers(_)) => self.finish(pick, true),
            // The floor asks for nothing on the response path.
            _ => Vec::new(),
        }
    }

    /// The whole body is in: read `model`, answer headers then body.
    fn finish(&mut self, pick: impl FnOnce() -> String, trailers: bool) -> Vec<ProcessingResponse> {
        self.answered = true;
        if let Err(error) = gateway_filter::request::parse_request(&self.body) {
            return vec![bad_request(error.into())];
        }
        let body = std::mem::take(&mut self.body);
        let mut answers = Vec::with_capacity(3);
        if self.headers_held {
            answers.push(headers_answer(&pick(), Some(body.len())));
        }
        answers.push(ProcessingResponse {
            response: Some(processing_response::Response::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    body_mutation: Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::StreamedResponse(
                            StreamedBodyResponse {
                                body,
                                end_of_stream: !trailers,
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        });
        if trailers {
            answers.push(ProcessingResponse {
                response: Some(processing_response::Response::RequestTrailers(
                    TrailersResponse::default(),
                )),
                ..Default::default()
            });
        }
        answers
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// The request-headers answer: the destination (overwriting whatever the
/// client sent) and, with a body, its length, as GIE's picker sets them.
fn headers_answer(destination: &str, body_len: Option<usize>) -> ProcessingResponse {
    let mut set_headers = vec![header(DESTINATION_HEADER, destination)];
    if let Some(len) = body_len {
        set_headers.push(header("content-length", &len.to_string()));
    }
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(CommonResponse {
                    header_mutation: Some(HeaderMutation {
                        set_headers,
                        ..Default::default()
                    }),
                    clear_route_cache: true,
                    ..Default::default()
                }),
            },
        )),
        ..Default::default()
    }
}

/// The filter's own OpenAI-shaped reply for a body without a usable `model`.
fn bad_request(error: GatewayError) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(
            ImmediateResponse {
                status: Some(HttpStatus {
                    code: error.status as i32,
                }),
                headers: Some(HeaderMutation {
                    set_headers: vec![header("content-type", "application/json")],
                    ..Default::default()
                }),
                body: error.body(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, HttpTrailers};

    fn headers(end_of_stream: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                end_of_stream,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn chunk(body: &[u8], end_of_stream: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(processing_request::Request::RequestBody(HttpBody {
                body: body.to_vec(),
                end_of_stream,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn set_headers(answer: &ProcessingResponse) -> Vec<(String, String)> {
        let Some(processing_response::Response::RequestHeaders(h)) = &answer.response else {
            panic!("not a headers answer: {answer:?}");
        };
        let mutation = h
            .response
            .as_ref()
            .unwrap()
            .header_mutation
            .as_ref()
            .unwrap();
        mutation
            .set_headers
            .iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                (
                    h.key.clone(),
                    String::from_utf8(h.raw_value.clone()).unwrap(),
                )
            })
            .collect()
    }

    fn streamed_body(answer: &ProcessingResponse) -> (Vec<u8>, bool) {
        let Some(processing_response::Response::RequestBody(b)) = &answer.response else {
            panic!("not a body answer: {answer:?}");
        };
        let mutation = b.response.as_ref().unwrap().body_mutation.as_ref().unwrap();
        let Some(body_mutation::Mutation::StreamedResponse(s)) = &mutation.mutation else {
            panic!("not streamed: {mutation:?}");
        };
        (s.body.clone(), s.end_of_stream)
    }

    #[test]
    fn holds_the_headers_until_the_body_is_complete_then_names_the_pod_and_returns_the_body() {
        let mut exchange = Exchange::default();
        let pick = || "10.0.0.7:8000".to_string();
        assert!(exchange.on(headers(false), pick).is_empty());
        assert!(exchange
            .on(chunk(br#"{"model":"m","#, false), pick)
            .is_empty());
        let answers = exchange.on(chunk(br#""prompt":"hi"}"#, true), pick);
        assert_eq!(answers.len(), 2);
        assert_eq!(
            set_headers(&answers[0]),
            vec![
                (DESTINATION_HEADER.to_string(), "10.0.0.7:8000".to_string()),
                ("content-length".to_string(), "27".to_string()),
            ]
        );
        let (body, end) = streamed_body(&answers[1]);
        assert_eq!(body, br#"{"model":"m","prompt":"hi"}"#);
        assert!(end);
        // Anything after the answer (response messages) is ignored.
        assert!(exchange.on(chunk(b"x", true), pick).is_empty());
    }

    #[test]
    fn a_request_without_a_body_is_routed_at_once() {
        let mut exchange = Exchange::default();
        let answers = exchange.on(headers(true), || "10.0.0.1:8000".to_string());
        assert_eq!(
            set_headers(&answers[0]),
            vec![(DESTINATION_HEADER.to_string(), "10.0.0.1:8000".to_string())]
        );
    }

    #[test]
    fn trailers_end_the_body() {
        let mut exchange = Exchange::default();
        let pick = || "10.0.0.2:8000".to_string();
        exchange.on(headers(false), pick);
        exchange.on(chunk(br#"{"model":"m"}"#, false), pick);
        let answers = exchange.on(
            ProcessingRequest {
                request: Some(processing_request::Request::RequestTrailers(
                    HttpTrailers::default(),
                )),
                ..Default::default()
            },
            pick,
        );
        assert_eq!(answers.len(), 3);
        assert_eq!(
            streamed_body(&answers[1]),
            (br#"{"model":"m"}"#.to_vec(), false)
        );
        assert!(matches!(
            answers[2].response,
            Some(processing_response::Response::RequestTrailers(_))
        ));
    }

    #[test]
    fn a_body_without_model_gets_an_openai_shaped_400() {
        let mut exchange = Exchange::default();
        let pick = || unreachable!("no pick for a bad request");
        exchange.on(headers(false), pick);
        let answers = exchange.on(chunk(br#"{"prompt":"hi"}"#, true), pick);
        let Some(processing_response::Response::ImmediateResponse(reply)) = &answers[0].response
        else {
            panic!("not an immediate response: {answers:?}");
        };
        assert_eq!(reply.status.as_ref().unwrap().code, 400);
        let body = String::from_utf8(reply.body.clone()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["type"], "BadRequestError");
        assert_eq!(json["error"]["code"], 400);
    }
}
