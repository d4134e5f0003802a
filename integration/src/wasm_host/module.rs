//! Compiling and linking a proxy-wasm module once per process: cranelift
//! takes seconds on the filter, a worker instantiates in microseconds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use wasmtime::{Config, Engine, InstancePre, Linker, Module};

use super::context::WorkerState;
use super::imports;

/// Fuel (≈ wasm instructions) one callback may burn before it traps, so a
/// filter stuck in a loop fails its test instead of hanging it.
pub const FUEL_PER_CALLBACK: u64 = 20_000_000_000;

/// A compiled and linked proxy-wasm module, cheap to clone.
#[derive(Clone)]
pub struct FilterModule {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    pre: InstancePre<WorkerState>,
    unimplemented: Vec<String>,
    source: String,
}

/// One engine per process, with fuel metering on: fuel is how the bench
/// counts the cost of a decision, and how tests bound a runaway callback.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.consume_fuel(true);
        Engine::new(&config).expect("wasmtime engine with fuel metering")
    })
}

/// Where the filter build (`make wasm`) leaves the module: `$GATEWAY_FILTER_WASM`,
/// else `target/gateway_filter.wasm` in the workspace.
pub fn gateway_filter_path() -> PathBuf {
    match std::env::var_os("GATEWAY_FILTER_WASM") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("gateway_filter.wasm"),
    }
}

impl FilterModule {
    /// The real filter, compiled once per process.
    pub fn gateway_filter() -> anyhow::Result<FilterModule> {
        static FILTER: OnceLock<Result<FilterModule, String>> = OnceLock::new();
        FILTER
            .get_or_init(|| Self::from_file(&gateway_filter_path()).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<FilterModule> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading the filter module {} (build it with `make wasm` or ./scripts/build-wasm.sh)",
                path.display()
            )
        })?;
        Self::compile(&bytes, path.display().to_string())
    }

    /// From wasm bytes or WAT text (host self-tests use small WAT modules).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<FilterModule> {
        Self::compile(bytes, "<bytes>".to_string())
    }

    fn compile(bytes: &[u8], source: String) -> anyhow::Result<FilterModule> {
        let module = Module::new(engine(), bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {source}"))?;
        let mut linker = Linker::new(engine());
        imports::add_to_linker(&mut linker)?;
        let unimplemented = imports::link_unimplemented(&mut linker, &module)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("linking {source} against the proxy-wasm host"))?;
        Ok(FilterModule {
            inner: Arc::new(ModuleInner {
                pre,
                unimplemented,
                source,
            }),
        })
    }

    /// Imports this host does not implement; calling one traps.
    pub fn unimplemented_imports(&self) -> &[String] {
        &self.inner.unimplemented
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<WorkerState> {
        &self.inner.pre
    }

    pub(crate) fn engine(&self) -> &Engine {
        engine()
    }

    /// Where the module came from, for error messages.
    pub fn source(&self) -> &str {
        &self.inner.source
    }
}
