//! One live plugin instance: its own `Store` with limits, calls serialised
//! through a mutex, every call under an epoch deadline and a wall-clock
//! timeout. A trap or timeout poisons the instance: it is dropped and the next
//! call builds a fresh one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, BackendExports, LogLevel};
use super::error::StorageError;
use super::guest_output::{self, GuestStderr};
use super::limits::StoreCaps;
use super::PluginShared;

/// Extra wall-clock time past the epoch deadline before a call is abandoned:
/// epochs cannot interrupt a guest that is blocked inside a host call.
const WALL_CLOCK_GRACE: Duration = Duration::from_secs(1);

pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreCaps,
    plugin: Arc<str>,
    call_started: Instant,
    call_budget: Duration,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::wasftp::storage::log::Host for StoreState {
    fn log(&mut self, level: LogLevel, message: String) {
        guest_output::log(&self.plugin, level, message);
    }
}

impl bindings::wasftp::storage::types::Host for StoreState {}

/// A running instance and its generated export bindings.
pub struct Live {
    store: Store<StoreState>,
    bindings: bindings::Plugin,
}

impl Live {
    /// The store and the backend exports, borrowed together for one call.
    pub fn parts(&mut self) -> (&mut Store<StoreState>, &BackendExports) {
        (&mut self.store, self.bindings.wasftp_storage_backend())
    }
}

struct Slot {
    live: Option<Live>,
    /// Counts instantiations; a resource handle is valid only in the
    /// generation that created it.
    generation: u64,
}

pub struct Instance {
    shared: Arc<PluginShared>,
    label: String,
    slot: tokio::sync::Mutex<Slot>,
}

impl Instance {
    pub fn new(shared: Arc<PluginShared>, label: String) -> Arc<Self> {
        Arc::new(Self { shared, label, slot: tokio::sync::Mutex::new(Slot { live: None, generation: 0 }) })
    }

    /// Runs `f` against this instance. With `pinned`, the call only runs in
    /// that generation (the one that created the resource being used).
    /// Returns the result and the generation it ran in.
    pub async fn call<R>(
        &self,
        pinned: Option<u64>,
        op: &'static str,
        f: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<(R, u64), StorageError> {
        let mut slot = self.slot.lock().await;
        match pinned {
            Some(generation) if generation != slot.generation || slot.live.is_none() => {
                return Err(StorageError::PluginFailed(
                    "the plugin instance was restarted after a failure; this handle is gone".into(),
                ));
            }
            _ => {}
        }
        if slot.live.is_none() {
            let live = self.instantiate().await?;
            slot.live = Some(live);
            slot.generation += 1;
        }
        let generation = slot.generation;
        let live = slot.live.as_mut().expect("instance is live");
        live.store.data_mut().call_started = Instant::now();
        live.store.data_mut().limits.take_refused();
        live.store.set_epoch_deadline(1);
        let budget = self.shared.settings.call_deadline + WALL_CLOCK_GRACE;
        let outcome = tokio::time::timeout(budget, f(live)).await;
        match outcome {
            Ok(Ok(value)) => Ok((value, generation)),
            Ok(Err(error)) => {
                let why = describe_trap(&error, &mut live.store.data_mut().limits);
                slot.live = None;
                Err(self.poisoned(op, why))
            }
            Err(_) => {
                slot.live = None;
                self.shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(self.poisoned(op, format!("no answer within {budget:?} (blocked in a host call)")))
            }
        }
    }

    /// Drops a guest resource, if the generation that made it is still live.
    pub fn drop_resource(self: &Arc<Self>, generation: u64, resource: ResourceAny) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let this = self.clone();
        runtime.spawn(async move {
            let _ = this
                .call(Some(generation), "drop", async |live: &mut Live| {
                    resource.resource_drop_async(&mut live.store).await
                })
                .await;
        });
    }

    fn poisoned(&self, op: &str, why: String) -> StorageError {
        self.shared.stats.poisoned.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("wasftp_plugin_instances_poisoned_total", "plugin" => self.shared.name.to_string())
            .increment(1);
        tracing::warn!(
            plugin = &*self.shared.name,
            instance = %self.label,
            op,
            "plugin instance dropped: {why}"
        );
        StorageError::PluginFailed(format!("{op}: {why}"))
    }

    async fn instantiate(&self) -> Result<Live, StorageError> {
        let shared = &self.shared;
        let mut wasi = WasiCtxBuilder::new();
        // No ambient authority: no preopens, env, args or network.
        wasi.stderr(GuestStderr { plugin: shared.name.clone() })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // A refused memory.grow answers -1 to the guest, never a trap.
        let limits = StoreCaps::new(shared.settings.memory_limit, shared.stats.clone());
        let state = StoreState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            plugin: shared.name.clone(),
            call_started: Instant::now(),
            call_budget: shared.settings.call_deadline,
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.call_started.elapsed() >= state.call_budget {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Yield so a busy guest never holds a runtime thread for long.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);

        let budget = shared.settings.call_deadline + WALL_CLOCK_GRACE;
        let started = async {
            let bindings = shared.pre.instantiate_async(&mut store).await?;
            store.data_mut().call_started = Instant::now();
            let init = bindings.wasftp_storage_backend().call_init(&mut store, &shared.init_config).await?;
            wasmtime::Result::Ok((bindings, init))
        };
        let (bindings, init) = match tokio::time::timeout(budget, started).await {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => return Err(self.poisoned("instantiate", describe_trap(&error, &mut store.data_mut().limits))),
            Err(_) => return Err(self.poisoned("instantiate", format!("no answer within {budget:?}"))),
        };
        if let Err(message) = init {
            let message = super::error::bounded(message);
            tracing::warn!(plugin = &*shared.name, "plugin init refused its configuration: {message}");
            return Err(StorageError::PluginFailed(format!("init: {message}")));
        }
        shared.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(plugin = &*shared.name, instance = %self.label, "plugin instance started");
        Ok(Live { store, bindings })
    }
}

/// Why a call failed, for logs. A trap right after a refused `memory.grow` is
/// the guest giving up on a failed allocation: say it ran out of memory.
fn describe_trap(error: &wasmtime::Error, limits: &mut StoreCaps) -> String {
    let out_of_memory = limits.take_refused();
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded (interrupted)".into(),
        Some(trap) if out_of_memory => {
            format!("out of memory (growth past the {} MiB cap refused), then trapped: {trap}", limits.memory_limit() >> 20)
        }
        Some(trap) => format!("trapped: {trap}"),
        None => {
            let text = format!("{error:#}");
            if out_of_memory || (text.contains("memory") && text.contains("limit")) {
                "memory limit reached".into()
            } else {
                format!("trapped: {}", super::error::bounded(text))
            }
        }
    }
}

impl Instance {
    pub(super) fn stats(&self) -> &super::RuntimeStats {
        &self.shared.stats
    }
}
