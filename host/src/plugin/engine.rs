//! The one wasmtime `Engine`: epoch interruption, pooling allocator when the
//! machine allows it, where plugins are compiled and cached, and the epoch
//! ticker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::compile::Compiler;

/// How often the epoch advances: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most instance slots the pooling allocator reserves: each reserves a 4 GiB
/// address range, and a process may run several servers (tests do).
pub const MAX_POOL_SLOTS: u32 = 1024;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Keep compiled components on disk between runs, by content hash.
    pub cache: bool,
    /// Where; `None`: `compile::default_cache_dir()` (none without a home).
    pub cache_dir: Option<PathBuf>,
    /// Where plugins are compiled: the `wasftp` binary uses a child process
    /// (bounded); the library's default is this process (unbounded).
    pub compiler: Compiler,
    /// Most instances alive at once (the server sets it from the configured
    /// caps); past `MAX_POOL_SLOTS` the on-demand allocator is used.
    pub max_instances: u32,
    /// Try the pooling allocator (falls back to on-demand if the probe fails).
    pub pooling: bool,
    /// Most guest threads, server-wide: guest calls computing at once (a
    /// call waiting in a host call holds none; see `executor`).
    pub max_guest_threads: usize,
    /// Bytes of linear memory all live instances may hold together; a
    /// `memory.grow` past it is refused (-1) as past an instance's own cap.
    pub guest_memory_total: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache: true,
            cache_dir: None,
            compiler: Compiler::InProcess,
            max_instances: 256,
            pooling: true,
            max_guest_threads: 256,
            guest_memory_total: u64::MAX,
        }
    }
}

pub struct PluginEngine {
    pub engine: Engine,
    pub pooling: bool,
    stop_ticker: Arc<AtomicBool>,
}

impl PluginEngine {
    pub fn new(options: &EngineOptions) -> anyhow::Result<Self> {
        let (engine, pooling) = if options.pooling && options.max_instances > MAX_POOL_SLOTS {
            tracing::info!(
                instances = options.max_instances,
                "the configured caps allow more instances than the pooling allocator keeps slots for \
                 ({MAX_POOL_SLOTS}); using on-demand allocation"
            );
            (Engine::new(&base_config(None)?)?, false)
        } else if options.pooling {
            match Engine::new(&base_config(Some(pooling_config(options)))?) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::info!("pooling allocator unavailable ({e}); using on-demand allocation");
                    (Engine::new(&base_config(None)?)?, false)
                }
            }
        } else {
            (Engine::new(&base_config(None)?)?, false)
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.weak(), stop_ticker.clone());
        Ok(Self { engine, pooling, stop_ticker })
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// What decides the compiled code: the server and the compiler child
/// (`compile::child_main`) build their engines from this one function, so
/// an artefact of one loads in the other.
pub fn codegen_config() -> anyhow::Result<Config> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Bounded guest stack: deep recursion traps instead of growing.
    config.max_wasm_stack(1 << 20);
    // Only the wasm features plugins need (Rust, componentize-js and
    // componentize-py output, measured): each proposal left on is runtime
    // surface a hostile plugin can reach. Off: a GC heap (and the
    // exceptions and typed function references built on it), 64-bit
    // memories, shared memories and threads, stack switching, and the
    // component model's async ABI (the host calls plugins synchronously).
    config
        .wasm_gc(false)
        .wasm_exceptions(false)
        .wasm_function_references(false)
        .wasm_memory64(false)
        .wasm_threads(false)
        .wasm_stack_switching(false)
        .wasm_component_model_async(false);
    Ok(config)
}

fn base_config(pool: Option<PoolingAllocationConfig>) -> anyhow::Result<Config> {
    let mut config = codegen_config()?;
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(config)
}

fn pooling_config(options: &EngineOptions) -> PoolingAllocationConfig {
    let n = options.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n)
        .total_tables(n * 8)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_core_instances_per_component(32)
        // Per-plugin caps are enforced by StoreLimits; a slot can hold the
        // largest 32-bit memory.
        .max_memory_size(4 << 30);
    pool
}

/// Advances the epoch every `EPOCH_TICK` until the engine is gone.
fn spawn_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("wasftp-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}
