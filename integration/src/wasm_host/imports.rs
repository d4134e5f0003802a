//! The host functions of proxy-wasm ABI 0.2.1 (module `env`), with Envoy's
//! semantics where a filter could observe them. A call that Envoy would
//! reject with a status the SDK turns into a panic, or that this host does not
//! model, traps with a message naming the call: a test then fails loudly
//! instead of running on behaviour Envoy would not have.

use wasmtime::{Caller, ExternType, Linker, Module};

use super::abi::{self, status, BufferType, LogLevel, MapType, MetricType, StreamType};
use super::collector::{OpenRequest, StreamState};
use super::context::{CalloutData, GrpcToken, LocalReply, WorkerState};
use super::headers::HeaderMap;
use super::state::Event;

type Ctx<'a> = Caller<'a, WorkerState>;
type HostResult = wasmtime::Result<i32>;

fn bug(message: impl std::fmt::Display) -> wasmtime::Error {
    wasmtime::format_err!("wasm host: {message}")
}

fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| bug("no memory export"))?;
    let mut buf = vec![0u8; len as u32 as usize];
    memory
        .read(&*caller, ptr as u32 as usize, &mut buf)
        .map_err(|_| bug(format!("guest passed out-of-bounds buffer {ptr:#x}+{len}")))?;
    Ok(buf)
}

fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| bug("guest passed a non-UTF-8 name"))
}

fn write(caller: &mut Ctx<'_>, ptr: i32, data: &[u8]) -> wasmtime::Result<()> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| bug("no memory export"))?;
    memory
        .write(&mut *caller, ptr as u32 as usize, data)
        .map_err(|_| {
            bug(format!(
                "guest passed out-of-bounds return pointer {ptr:#x}"
            ))
        })
}

fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> wasmtime::Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `data` into memory the guest allocates with its `malloc`, and
/// stores pointer and size at the return pointers. Empty data is returned as
/// a null pointer, which the SDK reads as "no value" or "empty".
fn return_bytes(caller: &mut Ctx<'_>, data: &[u8], ptr_out: i32, size_out: i32) -> HostResult {
    let address = if data.is_empty() {
        0
    } else {
        let malloc = caller
            .data()
            .malloc
            .clone()
            .ok_or_else(|| bug("module exports neither malloc nor proxy_on_memory_allocate"))?;
        let address = malloc.call(&mut *caller, data.len() as i32)?;
        if address == 0 {
            return Err(bug(format!("guest malloc({}) returned null", data.len())));
        }
        write(caller, address, data)?;
        address as u32
    };
    write_u32(caller, ptr_out, address)?;
    write_u32(caller, size_out, data.len() as u32)?;
    Ok(status::OK)
}

fn map_type(raw: i32) -> wasmtime::Result<MapType> {
    MapType::from_raw(raw).ok_or_else(|| bug(format!("unknown map type {raw}")))
}

/// The header map `map` of the current context, for reading.
fn map_ref(caller: &mut Ctx<'_>, map: MapType, call: &str) -> wasmtime::Result<HeaderMap> {
    let state = caller.data_mut();
    match map {
        MapType::GrpcReceiveInitialMetadata
        | MapType::GrpcReceiveTrailingMetadata
        | MapType::HttpCallResponseHeaders
        | MapType::HttpCallResponseTrailers => {
            let callout = state
                .callout
                .as_ref()
                .ok_or_else(|| bug(format!("{call}({map:?}) outside a callout callback")))?;
            Ok(match map {
                MapType::GrpcReceiveTrailingMetadata | MapType::HttpCallResponseTrailers => {
                    callout.trailers.clone()
                }
                _ => callout.headers.clone(),
            })
        }
        _ => Ok(http_map_mut(state, map, call)?.clone()),
    }
}

fn http_map_mut<'s>(
    state: &'s mut WorkerState,
    map: MapType,
    call: &str,
) -> wasmtime::Result<&'s mut HeaderMap> {
    let context = state.effective_context;
    let http = state.current_http().ok_or_else(|| {
        bug(format!(
            "{call}({map:?}) outside an HTTP context (context {context})"
        ))
    })?;
    Ok(match map {
        MapType::HttpRequestHeaders => &mut http.request_headers,
        MapType::HttpRequestTrailers => &mut http.request_trailers,
        MapType::HttpResponseHeaders => &mut http.response_headers,
        MapType::HttpResponseTrailers => &mut http.response_trailers,
        other => {
            return Err(bug(format!(
                "{call}({other:?}) cannot modify a callout map"
            )))
        }
    })
}

/// Envoy refuses request header writes once the headers went on to the next
/// filter (the router has already picked the host): BadArgument, which the
/// proxy-wasm SDK's setters turn into a panic (a VM trap here).
fn request_headers_released(state: &mut WorkerState, map: i32) -> bool {
    MapType::from_raw(map) == Some(MapType::HttpRequestHeaders)
        && state
            .current_http()
            .is_some_and(|http| http.request_headers_released)
}

/// Registers every host function. Imports the module has beyond these are
/// linked by [`link_unimplemented`] to a trap.
pub(crate) fn add_to_linker(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, out: i32| {
        write_u32(&mut c, out, LogLevel::Trace as u32)?;
        Ok(status::OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, out: i32| {
            let now = c.data().host().now_ns;
            write(&mut c, out, &now.to_le_bytes())?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, period: i32| {
            let state = c.data_mut();
            let now = state.host().now_ns;
            state.tick_period_ms = period as u32;
            state.next_tick_ns = (period != 0).then(|| now + period as u32 as u64 * 1_000_000);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr_out: i32, size_out: i32| {
            let map = map_ref(&mut c, map_type(map)?, "proxy_get_header_map_pairs")?;
            return_bytes(&mut c, &abi::serialize_map(map.pairs()), ptr_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr: i32, len: i32| {
            if request_headers_released(c.data_mut(), map) {
                return Ok(status::BAD_ARGUMENT);
            }
            let pairs = abi::deserialize_map(&read(&mut c, ptr, len)?).map_err(bug)?;
            let target = http_map_mut(c.data_mut(), map_type(map)?, "proxy_set_header_map_pairs")?;
            *target = HeaderMap::from_pairs(pairs);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, key: i32, key_len: i32, ptr_out: i32, size_out: i32| {
            let key = read_string(&mut c, key, key_len)?;
            let map = map_ref(&mut c, map_type(map)?, "proxy_get_header_map_value")?;
            match map.get_bytes(&key) {
                Some(value) => return_bytes(&mut c, value, ptr_out, size_out),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map: i32, key: i32, key_len: i32, value: i32, value_len: i32| {
            if request_headers_released(c.data_mut(), map) {
                return Ok(status::BAD_ARGUMENT);
            }
            let key = read_string(&mut c, key, key_len)?;
            let value = read(&mut c, value, value_len)?;
            http_map_mut(
                c.data_mut(),
                map_type(map)?,
                "proxy_replace_header_map_value",
            )?
            .replace(&key, &value);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map: i32, key: i32, key_len: i32, value: i32, value_len: i32| {
            if request_headers_released(c.data_mut(), map) {
                return Ok(status::BAD_ARGUMENT);
            }
            let key = read_string(&mut c, key, key_len)?;
            let value = read(&mut c, value, value_len)?;
            http_map_mut(c.data_mut(), map_type(map)?, "proxy_add_header_map_value")?
                .add(&key, &value);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: i32, key: i32, key_len: i32| {
            if request_headers_released(c.data_mut(), map) {
                return Ok(status::BAD_ARGUMENT);
            }
            let key = read_string(&mut c, key, key_len)?;
            http_map_mut(
                c.data_mut(),
                map_type(map)?,
                "proxy_remove_header_map_value",
            )?
            .remove(&key);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, path: i32, path_len: i32, value: i32, value_len: i32| {
            let path = abi::split_property_path(&read(&mut c, path, path_len)?);
            let value = read(&mut c, value, value_len)?;
            let state = c.data_mut();
            match state.current_http() {
                Some(http) => {
                    http.properties.insert(path, value);
                }
                None => {
                    state.host().properties.insert(path, value);
                }
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, key: i32, key_len: i32, value: i32, value_len: i32, cas: i32| {
            let key = read_string(&mut c, key, key_len)?;
            let value = read(&mut c, value, value_len)?;
            let result = c.data().host().shared_set(&key, value, cas as u32);
            Ok(match result {
                Ok(()) => status::OK,
                Err(_) => status::CAS_MISMATCH,
            })
        },
    )?;
    add_queue_functions(linker)?;
    add_stream_functions(linker)?;
    add_callout_functions(linker)?;
    add_metric_functions(linker)?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, id: i32| {
            let state = c.data_mut();
            let id = id as u32;
            if id == state.root_context_id || state.http.contains_key(&id) {
                state.effective_context = id;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut c: Ctx<'_>| {
        let state = c.data_mut();
        let context = state.effective_context;
        state.done_contexts.push(context);
        Ok(status::OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>,
         name: i32,
         name_len: i32,
         _a: i32,
         _al: i32,
         _r: i32,
         _rl: i32|
         -> HostResult {
            let name = read_string(&mut c, name, name_len)?;
            Err(bug(format!(
                "proxy_call_foreign_function({name:?}): this host provides no foreign functions"
            )))
        },
    )?;
    Ok(())
}

fn proxy_log(mut c: Ctx<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    let level =
        LogLevel::from_raw(level).ok_or_else(|| bug(format!("unknown log level {level}")))?;
    let message = String::from_utf8_lossy(&read(&mut c, ptr, len)?).into_owned();
    let worker = c.data().worker_id;
    c.data().host().log(worker, level, message);
    Ok(status::OK)
}

fn buffer_type(raw: i32) -> wasmtime::Result<BufferType> {
    BufferType::from_raw(raw).ok_or_else(|| bug(format!("unknown buffer type {raw}")))
}

/// Reads the whole buffer of `kind` in the current context, or `None` when
/// this context has no such buffer (Envoy answers `NotFound`).
fn buffer_contents(state: &mut WorkerState, kind: BufferType) -> wasmtime::Result<Option<Vec<u8>>> {
    Ok(match kind {
        BufferType::HttpRequestBody => state.current_http().map(|h| h.request_body.clone()),
        BufferType::HttpResponseBody => state.current_http().map(|h| h.response_body.clone()),
        BufferType::VmConfiguration => Some(state.vm_configuration.clone()),
        BufferType::PluginConfiguration => Some(state.plugin_configuration.clone()),
        BufferType::GrpcReceiveBuffer => state
            .callout
            .as_ref()
            .filter(|c| c.is_grpc)
            .map(|c| c.body.clone()),
        BufferType::HttpCallResponseBody => state
            .callout
            .as_ref()
            .filter(|c| !c.is_grpc)
            .map(|c| c.body.clone()),
        BufferType::DownstreamData | BufferType::UpstreamData | BufferType::CallData => {
            return Err(bug(format!(
                "buffer {kind:?} belongs to network filters / foreign calls, which this host does not model"
            )))
        }
    })
}

fn proxy_get_buffer_bytes(
    mut c: Ctx<'_>,
    kind: i32,
    start: i32,
    max_size: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let kind = buffer_type(kind)?;
    let Some(buffer) = buffer_contents(c.data_mut(), kind)? else {
        return Ok(status::NOT_FOUND);
    };
    let start = (start as u32 as usize).min(buffer.len());
    let end = start
        .saturating_add(max_size as u32 as usize)
        .min(buffer.len());
    return_bytes(&mut c, &buffer[start..end], ptr_out, size_out)
}

/// Envoy's `setBuffer`: `start == 0` with `size == 0` prepends, `start == 0`
/// with `size >= len` replaces, `start >= len` appends; anything else is
/// unsupported there (`BadArgument`, which the SDK turns into a panic).
fn proxy_set_buffer_bytes(
    mut c: Ctx<'_>,
    kind: i32,
    start: i32,
    size: i32,
    ptr: i32,
    len: i32,
) -> HostResult {
    let kind = buffer_type(kind)?;
    let data = read(&mut c, ptr, len)?;
    let state = c.data_mut();
    let context = state.effective_context;
    let http = state.current_http().ok_or_else(|| {
        bug(format!(
            "proxy_set_buffer_bytes({kind:?}) outside an HTTP context ({context})"
        ))
    })?;
    let buffer = match kind {
        BufferType::HttpRequestBody => &mut http.request_body,
        BufferType::HttpResponseBody => &mut http.response_body,
        other => {
            return Err(bug(format!(
                "proxy_set_buffer_bytes({other:?}) is not writable"
            )))
        }
    };
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    if start == 0 && size == 0 {
        buffer.splice(0..0, data);
    } else if start == 0 && size >= buffer.len() {
        *buffer = data;
    } else if start >= buffer.len() {
        buffer.extend_from_slice(&data);
    } else {
        return Err(bug(format!(
            "proxy_set_buffer_bytes({kind:?}, start={start}, size={size}) on {} bytes: Envoy supports only prepend, replace-all and append",
            buffer.len()
        )));
    }
    Ok(status::OK)
}

fn proxy_get_property(
    mut c: Ctx<'_>,
    path: i32,
    path_len: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let path = abi::split_property_path(&read(&mut c, path, path_len)?);
    let state = c.data_mut();
    let value = state
        .current_http()
        .and_then(|http| http.properties.get(&path).cloned())
        .or_else(|| state.host().properties.get(&path).cloned());
    match value {
        Some(value) => return_bytes(&mut c, &value, ptr_out, size_out),
        None => Ok(status::NOT_FOUND),
    }
}

fn proxy_get_shared_data(
    mut c: Ctx<'_>,
    key: i32,
    key_len: i32,
    ptr_out: i32,
    size_out: i32,
    cas_out: i32,
) -> HostResult {
    let key = read_string(&mut c, key, key_len)?;
    let found = c
        .data()
        .host()
        .shared_get(&key)
        .map(|(value, cas)| (value.to_vec(), cas));
    match found {
        Some((value, cas)) => {
            write_u32(&mut c, cas_out, cas)?;
            return_bytes(&mut c, &value, ptr_out, size_out)
        }
        None => Ok(status::NOT_FOUND),
    }
}

fn add_queue_functions(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, name: i32, name_len: i32, id_out: i32| {
            let name = read_string(&mut c, name, name_len)?;
            let worker = c.data().worker_id;
            let id = {
                let mut host = c.data().host();
                let existing = host.queue_ids.get(&name).copied();
                match existing {
                    Some(id) => {
                        host.queues[id as usize - 1].owner_worker = worker;
                        id
                    }
                    None => {
                        host.queues.push(super::state::SharedQueue {
                            owner_worker: worker,
                            items: Default::default(),
                        });
                        let id = host.queues.len() as u32;
                        host.queue_ids.insert(name, id);
                        id
                    }
                }
            };
            write_u32(&mut c, id_out, id)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, _vm: i32, _vm_len: i32, name: i32, name_len: i32, id_out: i32| {
            let name = read_string(&mut c, name, name_len)?;
            let id = c.data().host().queue_ids.get(&name).copied();
            match id {
                Some(id) => {
                    write_u32(&mut c, id_out, id)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, value: i32, value_len: i32| {
            let value = read(&mut c, value, value_len)?;
            let mut host = c.data().host();
            let Some(queue) = (id as usize)
                .checked_sub(1)
                .and_then(|i| host.queues.get_mut(i))
            else {
                return Ok(status::NOT_FOUND);
            };
            queue.items.push_back(value);
            let owner = queue.owner_worker;
            host.push_event(
                owner,
                Event::QueueReady {
                    queue_id: id as u32,
                },
            );
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ptr_out: i32, size_out: i32| {
            let item = {
                let mut host = c.data().host();
                match (id as usize)
                    .checked_sub(1)
                    .and_then(|i| host.queues.get_mut(i))
                {
                    None => return Ok(status::NOT_FOUND),
                    Some(queue) => queue.items.pop_front(),
                }
            };
            match item {
                Some(item) => return_bytes(&mut c, &item, ptr_out, size_out),
                None => Ok(status::EMPTY),
            }
        },
    )?;
    Ok(())
}

fn add_stream_functions(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Ctx<'_>, stream: i32| {
            let stream = StreamType::from_raw(stream)
                .ok_or_else(|| bug(format!("unknown stream type {stream}")))?;
            let http = c.data_mut().current_http().ok_or_else(|| {
                bug(format!(
                    "proxy_continue_stream({stream:?}) outside an HTTP context"
                ))
            })?;
            match stream {
                StreamType::HttpRequest => http.resume_request = true,
                StreamType::HttpResponse => http.resume_response = true,
                other => {
                    return Err(bug(format!(
                        "proxy_continue_stream({other:?}): network streams are not modelled"
                    )))
                }
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Ctx<'_>, stream: i32| {
            let stream = StreamType::from_raw(stream)
                .ok_or_else(|| bug(format!("unknown stream type {stream}")))?;
            let http = c.data_mut().current_http().ok_or_else(|| {
                bug(format!(
                    "proxy_close_stream({stream:?}) outside an HTTP context"
                ))
            })?;
            match stream {
                StreamType::HttpRequest | StreamType::HttpResponse => http.reset = true,
                other => {
                    return Err(bug(format!(
                        "proxy_close_stream({other:?}): network streams are not modelled"
                    )))
                }
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         code: i32,
         details: i32,
         details_len: i32,
         body: i32,
         body_len: i32,
         headers: i32,
         headers_len: i32,
         grpc_status: i32| {
            let details =
                String::from_utf8_lossy(&read(&mut c, details, details_len)?).into_owned();
            let body = read(&mut c, body, body_len)?;
            let headers =
                abi::deserialize_map(&read(&mut c, headers, headers_len)?).map_err(bug)?;
            let http = c
                .data_mut()
                .current_http()
                .ok_or_else(|| bug("proxy_send_local_response outside an HTTP context"))?;
            if let Some(previous) = &http.local_reply {
                return Err(bug(format!(
                    "second proxy_send_local_response ({code}) after {} on the same stream",
                    previous.status
                )));
            }
            http.local_reply = Some(LocalReply {
                status: code as u32,
                details,
                headers: HeaderMap::from_pairs(headers),
                body,
                grpc_status,
            });
            Ok(status::OK)
        },
    )?;
    Ok(())
}

fn open_request(
    c: &mut Ctx<'_>,
    upstream: (i32, i32),
    service: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
    token: u32,
) -> wasmtime::Result<OpenRequest> {
    let cluster = read_string(c, upstream.0, upstream.1)?;
    let service = read_string(c, service.0, service.1)?;
    let method = read_string(c, method.0, method.1)?;
    let metadata = abi::deserialize_map(&read(c, metadata.0, metadata.1)?).map_err(bug)?;
    Ok(OpenRequest {
        worker: c.data().worker_id,
        token,
        cluster,
        service,
        method,
        initial_metadata: HeaderMap::from_pairs(metadata),
    })
}

fn add_callout_functions(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: Ctx<'_>,
         up: i32,
         up_len: i32,
         svc: i32,
         svc_len: i32,
         m: i32,
         m_len: i32,
         md: i32,
         md_len: i32,
         token_out: i32| {
            let token = c.data_mut().next_token();
            let request = open_request(
                &mut c,
                (up, up_len),
                (svc, svc_len),
                (m, m_len),
                (md, md_len),
                token,
            )?;
            let stream_id = c.data().host().open_grpc_stream(request);
            let context = c.data().effective_context;
            c.data_mut()
                .grpc_tokens
                .insert(token, GrpcToken::Stream { context, stream_id });
            write_u32(&mut c, token_out, token)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up: i32,
         up_len: i32,
         svc: i32,
         svc_len: i32,
         m: i32,
         m_len: i32,
         md: i32,
         md_len: i32,
         msg: i32,
         msg_len: i32,
         _timeout_ms: i32,
         token_out: i32| {
            let token = c.data_mut().next_token();
            let request = open_request(
                &mut c,
                (up, up_len),
                (svc, svc_len),
                (m, m_len),
                (md, md_len),
                token,
            )?;
            let message = read(&mut c, msg, msg_len)?;
            c.data().host().start_unary_call(request, message);
            let context = c.data().effective_context;
            c.data_mut()
                .grpc_tokens
                .insert(token, GrpcToken::Unary { context });
            write_u32(&mut c, token_out, token)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: Ctx<'_>, token: i32, msg: i32, msg_len: i32, end_stream: i32| {
            let message = read(&mut c, msg, msg_len)?;
            let Some(GrpcToken::Stream { stream_id, .. }) =
                c.data().grpc_tokens.get(&(token as u32)).copied()
            else {
                return Ok(status::NOT_FOUND);
            };
            let mut host = c.data().host();
            let stream = host
                .stream_mut(stream_id)
                .ok_or_else(|| bug(format!("stream {stream_id} vanished")))?;
            if stream.half_closed {
                return Err(bug(format!(
                    "proxy_grpc_send on stream {stream_id} after end_stream"
                )));
            }
            if stream.is_open() {
                stream.sent.push(message);
                stream.half_closed = end_stream != 0;
            }
            Ok(status::OK)
        },
    )?;
    for (name, final_state) in [
        ("proxy_grpc_cancel", StreamState::CancelledByClient),
        ("proxy_grpc_close", StreamState::ClosedByClient),
    ] {
        linker.func_wrap("env", name, move |mut c: Ctx<'_>, token: i32| {
            let Some(kind) = c.data_mut().grpc_tokens.remove(&(token as u32)) else {
                return Ok(status::NOT_FOUND);
            };
            if let GrpcToken::Stream { stream_id, .. } = kind {
                let mut host = c.data().host();
                if let Some(stream) = host.stream_mut(stream_id) {
                    if stream.is_open() {
                        stream.state = final_state.clone();
                    }
                }
            }
            Ok(status::OK)
        })?;
    }
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Ctx<'_>, code_out: i32, ptr_out: i32, size_out: i32| {
            let (code, message) = match &c.data().callout {
                Some(CalloutData {
                    status, message, ..
                }) => (*status, message.clone()),
                None => return Err(bug("proxy_get_status outside a callout callback")),
            };
            write_u32(&mut c, code_out, code)?;
            return_bytes(&mut c, message.as_bytes(), ptr_out, size_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         up_len: i32,
         _h: i32,
         _hl: i32,
         _b: i32,
         _bl: i32,
         _t: i32,
         _tl: i32,
         _timeout_ms: i32,
         token_out: i32| {
            let cluster = read_string(&mut c, up, up_len)?;
            let response = c.data().host().http_upstreams.get(&cluster).cloned();
            let Some(response) = response else {
                // Envoy rejects calls to clusters it does not know.
                return Ok(status::BAD_ARGUMENT);
            };
            let token = c.data_mut().next_token();
            let context = c.data().effective_context;
            c.data_mut().http_call_tokens.insert(token, context);
            let worker = c.data().worker_id;
            c.data()
                .host()
                .push_event(worker, Event::HttpCallResponse { token, response });
            write_u32(&mut c, token_out, token)?;
            Ok(status::OK)
        },
    )?;
    Ok(())
}

fn add_metric_functions(linker: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, kind: i32, name: i32, name_len: i32, id_out: i32| {
            let kind = MetricType::from_raw(kind)
                .ok_or_else(|| bug(format!("unknown metric type {kind}")))?;
            let name = read_string(&mut c, name, name_len)?;
            let id = c.data().host().define_metric(kind, &name).map_err(bug)?;
            write_u32(&mut c, id_out, id)?;
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Ctx<'_>, id: i32, offset: i64| {
            let mut host = c.data().host();
            let metric = host
                .metric_mut(id as u32)
                .ok_or_else(|| bug(format!("proxy_increment_metric on undefined metric {id}")))?;
            match metric.kind {
                MetricType::Counter if offset < 0 => {
                    return Err(bug(format!(
                        "counter {:?} incremented by {offset}",
                        metric.name
                    )))
                }
                MetricType::Histogram => {
                    return Err(bug(format!(
                        "histogram {:?} incremented; use record",
                        metric.name
                    )))
                }
                _ => metric.value += offset,
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Ctx<'_>, id: i32, value: i64| {
            let mut host = c.data().host();
            let metric = host
                .metric_mut(id as u32)
                .ok_or_else(|| bug(format!("proxy_record_metric on undefined metric {id}")))?;
            match metric.kind {
                MetricType::Histogram => metric.samples.push(value as u64),
                _ => metric.value = value,
            }
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, out: i32| {
            let value = {
                let mut host = c.data().host();
                let metric = host
                    .metric_mut(id as u32)
                    .ok_or_else(|| bug(format!("proxy_get_metric on undefined metric {id}")))?;
                if metric.kind == MetricType::Histogram {
                    return Err(bug(format!(
                        "proxy_get_metric on histogram {:?}",
                        metric.name
                    )));
                }
                metric.value as u64
            };
            write(&mut c, out, &value.to_le_bytes())?;
            Ok(status::OK)
        },
    )?;
    Ok(())
}

/// Links every import of `module` that the host does not provide to a
/// function that traps with the import's name, so a filter that starts
/// using a new host call fails its tests with a message saying which.
pub(crate) fn link_unimplemented(
    linker: &mut Linker<WorkerState>,
    module: &Module,
) -> wasmtime::Result<Vec<String>> {
    linker.allow_shadowing(false);
    let mut missing = Vec::new();
    for import in module.imports() {
        let (module_name, name) = (import.module().to_string(), import.name().to_string());
        let ExternType::Func(ty) = import.ty() else {
            continue; // memories and tables fail at instantiation with their own error
        };
        let label = format!("{module_name}.{name}");
        let trap_label = label.clone();
        // Defining a name twice fails without shadowing: that import is implemented.
        if linker
            .func_new(&module_name, &name, ty, move |_, _, _| {
                Err(bug(format!(
                    "the filter called {trap_label}, which this host does not implement"
                )))
            })
            .is_ok()
        {
            missing.push(label);
        }
    }
    Ok(missing)
}
