//! The floor for `make bench-overhead`: the least a proxy-wasm filter that
//! routes on the request body must do in Envoy. It holds the headers, lets
//! Envoy buffer the body, copies the body into the VM once, and sets the
//! destination header (to the value the client sent, so it picks nothing).
//! Envoy with this filter against Envoy with none is the cost of the wasm
//! plumbing alone; the gateway filter against this one is the cost of its
//! own work (parsing, state, picking, stats).
//!
//! A benchmark fixture, never deployed.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(FloorRoot));
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorRequest { destination: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FloorRequest {
    destination: Option<Vec<u8>>,
}

impl Context for FloorRequest {}

impl HttpContext for FloorRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.destination =
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, DESTINATION_HEADER)
                .ok()
                .flatten();
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Look at the body, as a router must before it picks.
        if body.first() == Some(&b'{') {
            if let Some(destination) = &self.destination {
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    DESTINATION_HEADER,
                    Some(destination),
                );
            }
        }
        Action::Continue
    }
}
