//! One Envoy worker thread's VM: a wasmtime instance with its own root
//! context, tick timer and callouts. Every call into the VM goes through
//! [`WorkerCore::call`], which meters fuel and turns a trap into a
//! permanent, loud failure of that worker.

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context as _};
use wasmtime::{Instance, Store, TypedFunc};

use super::abi::{Action, LogLevel};
use super::context::{CalloutData, GrpcToken, WorkerState};
use super::module::{FilterModule, FUEL_PER_CALLBACK};
use super::state::Event;
use super::Host;

type Export<P, R> = Option<TypedFunc<P, R>>;

/// The VM's exported callbacks; optional ones may be absent from a module.
struct Exports {
    context_create: TypedFunc<(i32, i32), ()>,
    vm_start: TypedFunc<(i32, i32), i32>,
    configure: TypedFunc<(i32, i32), i32>,
    tick: Export<i32, ()>,
    request_headers: Export<(i32, i32, i32), i32>,
    request_body: Export<(i32, i32, i32), i32>,
    response_headers: Export<(i32, i32, i32), i32>,
    response_body: Export<(i32, i32, i32), i32>,
    done: Export<i32, i32>,
    log: Export<i32, ()>,
    delete: Export<i32, ()>,
    grpc_receive: Export<(i32, i32, i32), ()>,
    grpc_close: Export<(i32, i32, i32), ()>,
    http_call_response: Export<(i32, i32, i32, i32, i32), ()>,
    queue_ready: Export<(i32, i32), ()>,
}

impl Exports {
    fn find(store: &mut Store<WorkerState>, instance: &Instance) -> anyhow::Result<Self> {
        macro_rules! optional {
            ($name:literal) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        macro_rules! required {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut *store, $name)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("the module must export {}", $name))?
            };
        }
        Ok(Exports {
            context_create: required!("proxy_on_context_create"),
            vm_start: required!("proxy_on_vm_start"),
            configure: required!("proxy_on_configure"),
            tick: optional!("proxy_on_tick"),
            request_headers: optional!("proxy_on_request_headers"),
            request_body: optional!("proxy_on_request_body"),
            response_headers: optional!("proxy_on_response_headers"),
            response_body: optional!("proxy_on_response_body"),
            done: optional!("proxy_on_done"),
            log: optional!("proxy_on_log"),
            delete: optional!("proxy_on_delete"),
            grpc_receive: optional!("proxy_on_grpc_receive"),
            grpc_close: optional!("proxy_on_grpc_close"),
            http_call_response: optional!("proxy_on_http_call_response"),
            queue_ready: optional!("proxy_on_queue_ready"),
        })
    }
}

fn missing(name: &str) -> wasmtime::Error {
    wasmtime::format_err!("wasm host: the module does not export {name}")
}

/// Which HTTP callback to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpCallback {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
}

pub(crate) struct WorkerCore {
    store: Store<WorkerState>,
    exports: Exports,
    failure: Option<String>,
    fuel_used: u64,
    next_context_id: u32,
    killed: bool,
    /// A stalled worker thread runs no ticks and no callouts.
    stalled: bool,
}

impl WorkerCore {
    /// Runs `f` in the VM as `context`. A trap kills the worker: Envoy would
    /// reload the VM and drop its in-flight requests, a test must not go on.
    fn call<R>(
        &mut self,
        what: &str,
        context: u32,
        f: impl FnOnce(&Exports, &mut Store<WorkerState>) -> wasmtime::Result<R>,
    ) -> anyhow::Result<R> {
        if self.killed {
            bail!("worker {} was killed", self.store.data().worker_id);
        }
        if let Some(failure) = &self.failure {
            bail!("worker {} is dead: {failure}", self.store.data().worker_id);
        }
        self.store.data_mut().effective_context = context;
        self.store.set_fuel(FUEL_PER_CALLBACK)?;
        let result = f(&self.exports, &mut self.store);
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_used += FUEL_PER_CALLBACK - left;
        self.store.data_mut().callout = None;
        result.map_err(|error| {
            let worker = self.store.data().worker_id;
            let panic = self
                .store
                .data()
                .host()
                .logs
                .iter()
                .rev()
                .find(|l| l.worker == worker && l.level == LogLevel::Critical)
                .map(|l| format!("\nlast critical log (the panic message): {}", l.message))
                .unwrap_or_default();
            let message = format!("{what} on worker {worker} trapped: {error:?}{panic}");
            self.failure = Some(message.clone());
            anyhow!(message)
        })
    }

    pub(crate) fn state(&mut self) -> &mut WorkerState {
        self.store.data_mut()
    }

    pub(crate) fn new_http_context(&mut self) -> anyhow::Result<u32> {
        let id = self.next_context_id;
        self.next_context_id += 1;
        self.store.data_mut().http.insert(id, Default::default());
        let root = self.store.data().root_context_id;
        self.call("proxy_on_context_create", id, |e, s| {
            e.context_create.call(s, (id as i32, root as i32))
        })?;
        Ok(id)
    }

    pub(crate) fn http_callback(
        &mut self,
        callback: HttpCallback,
        context: u32,
        size: usize,
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        let (name, raw) = match callback {
            HttpCallback::RequestHeaders => ("proxy_on_request_headers", 0),
            HttpCallback::RequestBody => ("proxy_on_request_body", 1),
            HttpCallback::ResponseHeaders => ("proxy_on_response_headers", 2),
            HttpCallback::ResponseBody => ("proxy_on_response_body", 3),
        };
        let args = (context as i32, size as i32, end_of_stream as i32);
        let raw_action = self.call(name, context, |e, s| {
            let f = match raw {
                0 => &e.request_headers,
                1 => &e.request_body,
                2 => &e.response_headers,
                _ => &e.response_body,
            };
            f.as_ref().ok_or_else(|| missing(name))?.call(s, args)
        })?;
        Action::from_raw(raw_action).map_err(|e| {
            let message = format!("{name}: {e}");
            self.failure = Some(message.clone());
            anyhow!(message)
        })
    }

    /// Envoy's stream teardown: done, log, delete.
    pub(crate) fn end_http_context(&mut self, context: u32) -> anyhow::Result<()> {
        let c = context as i32;
        let result = self
            .call("proxy_on_done", context, |e, s| match &e.done {
                Some(f) => f.call(&mut *s, c).map(|_| ()),
                None => Ok(()),
            })
            .and_then(|()| {
                self.call("proxy_on_log", context, |e, s| match &e.log {
                    Some(f) => f.call(s, c),
                    None => Ok(()),
                })
            })
            .and_then(|()| {
                self.call("proxy_on_delete", context, |e, s| match &e.delete {
                    Some(f) => f.call(s, c),
                    None => Ok(()),
                })
            });
        self.store.data_mut().http.remove(&context);
        result
    }

    fn tick(&mut self) -> anyhow::Result<()> {
        let state = self.store.data_mut();
        let now = state.host().now_ns;
        let period = state.tick_period_ms as u64 * 1_000_000;
        state.next_tick_ns = (period > 0).then_some(now + period);
        let root = state.root_context_id;
        self.call("proxy_on_tick", root, |e, s| match &e.tick {
            Some(f) => f.call(s, root as i32),
            None => Err(missing("proxy_on_tick")),
        })
    }

    fn deliver(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::GrpcMessage { token, message } => {
                let Some(kind) = self.state().grpc_tokens.get(&token).copied() else {
                    return Ok(()); // cancelled before delivery
                };
                if let GrpcToken::Unary { .. } = kind {
                    self.state().grpc_tokens.remove(&token);
                }
                let context = kind.context();
                let size = message.len() as i32;
                self.state().callout = Some(CalloutData {
                    body: message,
                    is_grpc: true,
                    ..Default::default()
                });
                self.call("proxy_on_grpc_receive", context, |e, s| {
                    let f = e
                        .grpc_receive
                        .as_ref()
                        .ok_or_else(|| missing("proxy_on_grpc_receive"))?;
                    f.call(s, (context as i32, token as i32, size))
                })
            }
            Event::GrpcClose {
                token,
                status,
                message,
            } => {
                let Some(kind) = self.state().grpc_tokens.remove(&token) else {
                    return Ok(());
                };
                let context = kind.context();
                self.state().callout = Some(CalloutData {
                    status,
                    message,
                    is_grpc: true,
                    ..Default::default()
                });
                self.call("proxy_on_grpc_close", context, |e, s| {
                    let f = e
                        .grpc_close
                        .as_ref()
                        .ok_or_else(|| missing("proxy_on_grpc_close"))?;
                    f.call(s, (context as i32, token as i32, status as i32))
                })
            }
            Event::HttpCallResponse { token, response } => {
                let Some(context) = self.state().http_call_tokens.remove(&token) else {
                    return Ok(());
                };
                let response = response.unwrap_or_else(|| super::state::HttpCallResponse {
                    headers: Default::default(),
                    body: Vec::new(),
                });
                let (headers, body) = (response.headers.len() as i32, response.body.len() as i32);
                self.state().callout = Some(CalloutData {
                    body: response.body,
                    headers: response.headers,
                    is_grpc: false,
                    ..Default::default()
                });
                self.call("proxy_on_http_call_response", context, |e, s| {
                    let f = e
                        .http_call_response
                        .as_ref()
                        .ok_or_else(|| missing("proxy_on_http_call_response"))?;
                    f.call(s, (context as i32, token as i32, headers, body, 0))
                })
            }
            Event::QueueReady { queue_id } => {
                let root = self.state().root_context_id;
                self.call("proxy_on_queue_ready", root, |e, s| {
                    let f = e
                        .queue_ready
                        .as_ref()
                        .ok_or_else(|| missing("proxy_on_queue_ready"))?;
                    f.call(s, (root as i32, queue_id as i32))
                })
            }
        }
    }
}

/// A test's handle on one worker VM. Dropping it kills the worker (its
/// streams end as if the worker thread died).
pub struct Worker {
    pub(crate) core: Arc<Mutex<WorkerCore>>,
    pub(crate) host: Host,
    id: u32,
}

impl Worker {
    pub(crate) fn start(
        host: &Host,
        module: &FilterModule,
        vm_configuration: &[u8],
        plugin_configuration: &[u8],
    ) -> anyhow::Result<Worker> {
        let id = {
            let mut state = host.lock_state();
            let id = state.next_worker_id;
            state.next_worker_id += 1;
            id
        };
        let state = WorkerState::new(
            host.shared_state(),
            id,
            vm_configuration.to_vec(),
            plugin_configuration.to_vec(),
        );
        let mut store = Store::new(module.engine(), state);
        store.set_fuel(FUEL_PER_CALLBACK)?;
        let instance = module
            .instance_pre()
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("instantiating {}", module.source()))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .context("the module must export its memory as `memory`")?;
        let malloc = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .or_else(|_| {
                instance.get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            })
            .ok();
        store.data_mut().memory = Some(memory);
        store.data_mut().malloc = malloc;
        let exports = Exports::find(&mut store, &instance)?;
        let initialize = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .or_else(|_| instance.get_typed_func::<(), ()>(&mut store, "_start"))
            .ok();
        let mut core = WorkerCore {
            store,
            exports,
            failure: None,
            fuel_used: 0,
            next_context_id: 2,
            killed: false,
            stalled: false,
        };
        let root = core.state().root_context_id;
        if let Some(initialize) = initialize {
            core.call("_initialize", root, |_, s| initialize.call(s, ()))?;
        }
        core.call("proxy_on_context_create", root, |e, s| {
            e.context_create.call(s, (root as i32, 0))
        })?;
        let vm_len = vm_configuration.len() as i32;
        if core.call("proxy_on_vm_start", root, |e, s| {
            e.vm_start.call(s, (root as i32, vm_len))
        })? == 0
        {
            bail!(
                "worker {id}: proxy_on_vm_start returned false{}",
                host.error_logs_of(id)
            );
        }
        let config_len = plugin_configuration.len() as i32;
        if core.call("proxy_on_configure", root, |e, s| {
            e.configure.call(s, (root as i32, config_len))
        })? == 0
        {
            bail!(
                "worker {id}: proxy_on_configure rejected the plugin configuration{}",
                host.error_logs_of(id)
            );
        }
        let core = Arc::new(Mutex::new(core));
        host.register_worker(id, &core);
        let worker = Worker {
            core,
            host: host.clone(),
            id,
        };
        host.pump()?;
        Ok(worker)
    }

    /// The worker's id, as logs and streams name it.
    pub fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, WorkerCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fuel (≈ wasm instructions executed) this VM has used so far.
    pub fn fuel_used(&self) -> u64 {
        self.lock().fuel_used
    }

    /// Current size of the VM's linear memory in bytes (it never shrinks).
    pub fn memory_bytes(&self) -> usize {
        let mut core = self.lock();
        let memory = core.state().memory.expect("memory export checked at start");
        memory.data_size(&core.store)
    }

    /// The tick period the filter asked for, if any.
    pub fn tick_period_ms(&self) -> u32 {
        self.lock().state().tick_period_ms
    }

    /// Why the VM died, if it trapped.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Stalls the worker thread (a long GC, a blocked syscall): while stalled
    /// it runs no ticks and receives no callouts; they queue until resumed.
    pub fn set_stalled(&self, stalled: bool) {
        self.lock().stalled = stalled;
    }

    /// Kills the worker now (same as dropping the handle).
    pub fn kill(self) {}

    /// Runs one tick now, whatever the timer says.
    pub fn tick(&self) -> anyhow::Result<()> {
        self.lock().tick()?;
        self.host.pump()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.lock().killed = true;
        self.host.forget_worker(self.id);
    }
}

/// Called by the host with a worker's core: delivers its pending events.
pub(crate) fn deliver_pending(
    host: &Host,
    worker: u32,
    core: &Mutex<WorkerCore>,
) -> anyhow::Result<usize> {
    let mut delivered = 0;
    loop {
        let event = host
            .lock_state()
            .pending
            .get_mut(&worker)
            .and_then(|q| q.pop_front());
        let Some(event) = event else {
            return Ok(delivered);
        };
        let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
        if core.killed {
            return Ok(delivered);
        }
        core.deliver(event)?;
        delivered += 1;
    }
}

/// Runs one tick on the worker if it is due at `now_ns`.
pub(crate) fn tick_if_due(core: &Mutex<WorkerCore>, now_ns: u64) -> anyhow::Result<bool> {
    let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
    if core.killed || core.stalled || core.state().next_tick_ns.is_none_or(|t| t > now_ns) {
        return Ok(false);
    }
    core.tick()?;
    Ok(true)
}

pub(crate) fn next_tick_of(core: &Mutex<WorkerCore>) -> Option<u64> {
    let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
    if core.killed || core.stalled {
        return None;
    }
    core.state().next_tick_ns
}
