//! The floor for `make bench-overhead`: the least a proxy-wasm filter that
//! routes on the request body must do in Envoy. It holds the headers, lets
//! Envoy buffer the body, copies the body into the VM once, and sets the
//! destination header (to the value the client sent, so it picks nothing).
//! Envoy with this filter against Envoy with none is the cost of the wasm
//! plumbing alone; the gateway filter against this one is the cost of its
//! own work (parsing, state, picking, stats).
//!
//! A benchmark fixture, never deployed.
//!
//! Built with `FLOOR_PROBE=<call>` in the environment, it also makes
//! [`PROBE_CALLS`] extra host calls of one kind per request (`property`,
//! `shared_get`, `shared_set`, `counter`, `histogram`, `time`), so that
//! bench-overhead (`--compare`) measures what one such call costs in Envoy:
//! the price list behind the gateway filter's cost above this floor.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// Which host call a probe build repeats (see the crate docs).
const PROBE: Option<&str> = option_env!("FLOOR_PROBE");
/// How many times per request.
const PROBE_CALLS: usize = 16;

/// The probe's extra host calls; results are ignored.
fn probe() {
    let Some(kind) = PROBE else { return };
    for i in 0..PROBE_CALLS {
        match kind {
            "property" => {
                let _ = hostcalls::get_property(vec!["xds", "cluster_name"]);
            }
            "shared_get" => {
                let _ = hostcalls::get_shared_data("floor.probe");
            }
            "shared_set" => {
                let _ = hostcalls::set_shared_data("floor.probe", Some(&[0u8; 24]), None);
            }
            "counter" => {
                if let Ok(id) = metric(MetricType::Counter, "floor_probe_total") {
                    let _ = hostcalls::increment_metric(id, 1);
                }
            }
            "histogram" => {
                if let Ok(id) = metric(MetricType::Histogram, "floor_probe_us") {
                    let _ = hostcalls::record_metric(id, i as u64);
                }
            }
            "time" => {
                let _ = hostcalls::get_current_time();
            }
            _ => return,
        }
    }
}

/// A metric's id, defined on first use (cached per VM).
fn metric(kind: MetricType, name: &str) -> Result<u32, proxy_wasm::types::Status> {
    thread_local! {
        static IDS: std::cell::RefCell<Vec<(String, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if let Some(id) = IDS.with(|ids| {
        ids.borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }) {
        return Ok(id);
    }
    let id = hostcalls::define_metric(kind, name)?;
    IDS.with(|ids| ids.borrow_mut().push((name.to_string(), id)));
    Ok(id)
}

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
        probe();
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
