//! One live plugin instance: its own `Store` with limits, one call at a
//! time, each run on a guest thread (`executor`) under two clocks: an epoch
//! deadline on the guest's computing time, and a wall-clock limit per kind
//! of call (`timeouts`). A trap, or a call that reaches its wall-clock limit
//! (it is interrupted there, so it cannot change data after its client was
//! answered), poisons the instance: it is dropped and the next call builds
//! a fresh one. A call that never got to start fails without touching it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::bindings::{self, BackendExports, LogLevel};
use super::error::StorageError;
use super::executor::{Share, demote_current_thread, poll_cpu_time};
use super::guest_clock::GuestClock;
use super::outbound::{HttpState, Requester};
use super::guest_output::{self, GuestStderr};
use super::limits::{HostBounds, StoreCaps, is_output_bound};
use super::timeouts::{CallKind, may_change_data};
use super::PluginShared;

/// A guest that computes this long (CPU time) in one poll yields its thread's priority
/// to everyone else (see `executor`).
const DEMOTE_AFTER: Duration = Duration::from_millis(20);

/// What a call does with the instance, boxed so it can run on a guest thread.
pub type GuestFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreCaps,
    plugin: Arc<str>,
    /// The log rate this instance's tenant shares.
    log: Arc<super::LogBudget>,
    clock: Arc<GuestClock>,
    stats: Arc<super::RuntimeStats>,
    bounds: HostBounds,
    /// Used only when the plugin is granted `wasi:http` (see `grants`).
    http: HttpState,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http.ctx, table: &mut self.table, hooks: &mut self.http.hooks }
    }
}

impl bindings::wasftp::storage::log::Host for StoreState {
    fn log(&mut self, level: LogLevel, message: String) {
        guest_output::log(&self.plugin, &self.log, level, message);
    }
}

impl bindings::wasftp::storage::types::Host for StoreState {}

/// A running instance and its generated export bindings.
pub struct Live {
    store: Store<StoreState>,
    bindings: bindings::Plugin,
    /// For the exports outside the generated bindings (`handover`).
    instance: wasmtime::component::Instance,
}

impl Live {
    /// The store and the backend exports, borrowed together for one call.
    pub fn parts(&mut self) -> (&mut Store<StoreState>, &BackendExports) {
        (&mut self.store, self.bindings.wasftp_storage_backend())
    }

    /// The store and the component instance, for exports looked up by name.
    pub fn instance_parts(&mut self) -> (&mut Store<StoreState>, wasmtime::component::Instance) {
        (&mut self.store, self.instance)
    }

    /// Lets this call's output hold the `asked` bytes of a read (see
    /// `HostBounds::for_read`); the next call starts from the plugin's bound.
    pub fn expect_read(&mut self, asked: u32) {
        let bytes = self.store.data().bounds.for_read(asked);
        self.store.set_hostcall_fuel(bytes);
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
    /// Whose HTTP places its requests take.
    requester: Requester,
    /// The tenant whose data it holds ("" for the host's own instances).
    tenant: Arc<str>,
    /// What its calls are charged to on the guest threads.
    share: Share,
    slot: Arc<tokio::sync::Mutex<Slot>>,
    /// The generation now live, 0 when none is: lets a session see without
    /// waiting that resources it made here are gone.
    live_generation: AtomicU64,
    /// A call past its wall-clock limit still holds the instance.
    running_late: AtomicBool,
    /// Open after the tenant's instances failed repeatedly.
    breaker: Arc<super::breaker::Breaker>,
    clock: Arc<GuestClock>,
    /// Readers and writers open on it.
    children: AtomicUsize,
    /// Its tenant's state moved to a newer version: the store goes as soon
    /// as no reader needs it.
    retired: AtomicBool,
}

impl Instance {
    /// An instance for `tenant`'s data; `label` names it in logs. The
    /// host's own instances (probe, maintenance) pass an empty tenant.
    pub fn new(shared: Arc<PluginShared>, tenant: &str, label: String) -> Arc<Self> {
        Self::with_requester(shared, tenant, label, Requester::Tenant)
    }

    /// An instance of the host's own work (orphan aborts, `maintain`, the
    /// load's probe): its HTTP requests take places of their own.
    pub fn for_host_work(shared: Arc<PluginShared>, tenant: &str, label: String) -> Arc<Self> {
        Self::with_requester(shared, tenant, label, Requester::HostWork)
    }

    fn with_requester(shared: Arc<PluginShared>, tenant: &str, label: String, requester: Requester) -> Arc<Self> {
        let slot = Arc::new(tokio::sync::Mutex::new(Slot { live: None, generation: 0 }));
        let clock = Arc::new(GuestClock::new(shared.settings.call_deadline_for(tenant)));
        // A tenant's calls share one queue over all its instances; the
        // host's own work has a queue of its own.
        let key = if tenant.is_empty() { format!("{}#host", shared.name) } else { format!("{}/{tenant}", shared.name) };
        let share = Share { key: key.into(), cap: shared.settings.pools.guest_threads_for(tenant) };
        Arc::new(Self {
            label,
            requester,
            tenant: tenant.into(),
            share,
            slot,
            live_generation: AtomicU64::new(0),
            running_late: AtomicBool::new(false),
            breaker: shared.breaker(tenant),
            clock,
            shared,
            children: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        })
    }

    /// Whether resources made in `generation` still exist.
    pub fn is_live(&self, generation: u64) -> bool {
        self.live_generation.load(Ordering::SeqCst) == generation
    }

    /// Whether a call that ran past its wall-clock limit still holds the
    /// instance: the next caller would wait for it.
    pub fn running_late(&self) -> bool {
        self.running_late.load(Ordering::SeqCst)
    }

    /// Whether a call holds this instance right now (calls queued for it are not seen).
    pub fn busy(&self) -> bool {
        self.slot.try_lock().is_err()
    }

    /// Runs `f` against this instance. With `pinned`, the call only runs in
    /// that generation (the one that created the resource being used).
    /// Returns the result and the generation it ran in. The wall-clock limit
    /// counts the wait for the instance too: the client is waiting.
    pub async fn call<R>(
        self: &Arc<Self>,
        pinned: Option<u64>,
        op: &'static str,
        f: impl for<'a> FnOnce(&'a mut Live) -> GuestFuture<'a, R> + Send + 'static,
    ) -> Result<(R, u64), StorageError>
    where
        R: Send + 'static,
    {
        self.call_queued(pinned, op, Queue::Bounded, f).await
    }

    /// Like `call`, but waits for the instance as long as it takes; the
    /// limit starts once the call holds it. For the host's own background
    /// work (resource drops, orphan aborts), which no client waits for and
    /// which must not give up just because the instance is busy.
    async fn call_when_free<R>(
        self: &Arc<Self>,
        pinned: Option<u64>,
        op: &'static str,
        f: impl for<'a> FnOnce(&'a mut Live) -> GuestFuture<'a, R> + Send + 'static,
    ) -> Result<(R, u64), StorageError>
    where
        R: Send + 'static,
    {
        self.call_queued(pinned, op, Queue::Unbounded, f).await
    }

    /// A call, timed for the operator's metrics by kind (the time it
    /// waited for the instance and in all).
    async fn call_queued<R>(
        self: &Arc<Self>,
        pinned: Option<u64>,
        op: &'static str,
        queue: Queue,
        f: impl for<'a> FnOnce(&'a mut Live) -> GuestFuture<'a, R> + Send + 'static,
    ) -> Result<(R, u64), StorageError>
    where
        R: Send + 'static,
    {
        let started = std::time::Instant::now();
        let done = self.call_queued_untimed(pinned, op, queue, f, started).await;
        let kind = match CallKind::of(op) {
            CallKind::Metadata => "metadata",
            CallKind::Data => "data",
            CallKind::Commit => "commit",
        };
        metrics::histogram!("wasftp_plugin_call_seconds", "plugin" => self.shared.name.to_string(), "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        done
    }

    async fn call_queued_untimed<R>(
        self: &Arc<Self>,
        pinned: Option<u64>,
        op: &'static str,
        queue: Queue,
        f: impl for<'a> FnOnce(&'a mut Live) -> GuestFuture<'a, R> + Send + 'static,
        queued_at: std::time::Instant,
    ) -> Result<(R, u64), StorageError>
    where
        R: Send + 'static,
    {
        if let (Queue::Bounded, Some(left)) = (queue, self.breaker.refusing()) {
            // Answered at once: the instance would likely fail again, after
            // a fresh instantiation and `init` paid for nothing.
            self.shared.stats.breaker_refusals.fetch_add(1, Ordering::Relaxed);
            let limits = self.breaker.limits();
            return Err(StorageError::Io(format!(
                "{op}: the storage failed {} times within {:?}; its calls are refused for {left:.0?} more",
                limits.failures, limits.window
            )));
        }
        let limit = self.shared.settings.timeouts.limit(CallKind::of(op));
        let deadline = tokio::time::Instant::now() + limit;
        let waiting = self.slot.clone().lock_owned();
        let slot = match queue {
            Queue::Bounded => match tokio::time::timeout_at(deadline, waiting).await {
                Ok(slot) => slot,
                // Never started: the call holding the instance is someone else's.
                Err(_) => return Err(self.no_answer(op, limit, Started::No)),
            },
            Queue::Unbounded => waiting.await,
        };
        metrics::histogram!("wasftp_plugin_queue_wait_seconds", "plugin" => self.shared.name.to_string())
            .record(queued_at.elapsed().as_secs_f64());
        // Background work (drops, orphan aborts) gets its whole limit from
        // when it starts running, and is never withdrawn: a drop given up
        // would leak the resource and skip the orphan abort.
        let deadline = match queue {
            Queue::Bounded => Some(deadline),
            Queue::Unbounded => None,
        };
        if let Some(generation) = pinned
            && (generation != slot.generation || slot.live.is_none())
        {
            return Err(StorageError::PluginFailed(
                "the plugin instance was restarted after a failure; this handle is gone".into(),
            ));
        }
        let run = self.clone().run_on_guest_thread(slot, op, limit, deadline, f);
        // Dropped unstarted (this caller gone, or out of time), the call
        // never runs; once started it runs to its end or its deadline.
        let mut call = self.shared.threads.spawn(&self.share, run);
        enum Waited<T> {
            Done(Option<T>),
            PastBudget,
            PastDeadline,
        }
        let past_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let waited = tokio::select! {
            done = call.output() => Waited::Done(done),
            () = self.computed_past_budget() => Waited::PastBudget,
            () = past_deadline => Waited::PastDeadline,
        };
        let answer = match waited {
            Waited::Done(done) => {
                return done.unwrap_or_else(|| {
                    Err(StorageError::PluginFailed(format!("{op}: the host failed while running the call")))
                });
            }
            Waited::PastBudget => Err(StorageError::PluginFailed(format!("{op}: deadline exceeded (interrupted)"))),
            // It waited for a guest thread all along (its tenant's calls
            // were using its share): nothing happened.
            Waited::PastDeadline if call.withdraw() => return Err(self.no_answer(op, limit, Started::No)),
            Waited::PastDeadline => {
                // The call interrupts itself at the deadline; its thread,
                // lowered in priority, may wait for a CPU to say so.
                match tokio::time::timeout(ANSWER_GRACE, call.output()).await {
                    Ok(Some(done)) => return done,
                    // Counted and logged by the call itself when it stops.
                    Ok(None) | Err(_) => Err(no_answer_error(op, limit, Started::Yes)),
                }
            }
        };
        // Answered before the call let go of the instance.
        self.running_late.store(true, Ordering::SeqCst);
        if !self.busy() {
            // It finished meanwhile, after its own reset.
            self.running_late.store(false, Ordering::SeqCst);
        }
        answer
    }

    fn no_answer(&self, op: &str, limit: Duration, started: Started) -> StorageError {
        self.shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("wasftp_plugin_call_timeouts_total", "plugin" => self.shared.name.to_string()).increment(1);
        let started_text = if matches!(started, Started::Yes) { "started" } else { "never started" };
        self.shared.warnings(&self.tenant).warn(format_args!(
            "plugin instance {}: no answer to {op} ({started_text}) within {limit:?}; the request failed",
            self.label
        ));
        no_answer_error(op, limit, started)
    }

    /// Resolves once the running call has computed past its budget. The
    /// guest's thread stops it at its next epoch tick; this answers the
    /// caller even when that thread, lowered in priority, waits for a CPU.
    async fn computed_past_budget(&self) {
        loop {
            let left = self.clock.budget().saturating_sub(self.clock.guest_time());
            if left.is_zero() {
                // A grace of one tick lets the guest's own interrupt win
                // when its thread is running.
                tokio::time::sleep(super::EPOCH_TICK).await;
                if self.clock.past_budget() {
                    return;
                }
                continue;
            }
            tokio::time::sleep(left.max(super::EPOCH_TICK)).await;
        }
    }

    /// The part of a call that runs on a guest thread, holding the instance.
    /// At `deadline` the call is interrupted wherever it is: waiting in a
    /// host call (its future is dropped, which unwinds the guest) or
    /// computing (the epoch callback traps it). The instance is dropped
    /// then, so the call cannot change anything after its caller was
    /// answered.
    async fn run_on_guest_thread<R>(
        self: Arc<Self>,
        slot: tokio::sync::OwnedMutexGuard<Slot>,
        op: &'static str,
        limit: Duration,
        deadline: Option<tokio::time::Instant>,
        f: impl for<'a> FnOnce(&'a mut Live) -> GuestFuture<'a, R> + Send + 'static,
    ) -> Result<(R, u64), StorageError> {
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + limit);
        let mut held = SlotHeld { instance: &self, slot: Some(slot), settled: false };
        let slot = held.slot.as_mut().expect("held until dropped");
        if slot.live.is_none() {
            let live = self.instantiate().await?;
            slot.live = Some(live);
            slot.generation += 1;
            self.live_generation.store(slot.generation, Ordering::SeqCst);
        }
        if deadline.saturating_duration_since(tokio::time::Instant::now()) < least_time_to_start(limit) {
            // Waiting (for the instance, a thread, or its instantiation)
            // took most of the call's time: started now, it would likely be
            // interrupted, dropping a healthy instance and, for a
            // tenant-scoped plugin, the tenant's state. Nothing happens.
            held.settled = true;
            return Err(self.no_answer(op, limit, Started::No));
        }
        let generation = slot.generation;
        let live = slot.live.as_mut().expect("instance is live");
        self.clock.start(deadline.into_std());
        live.store.data_mut().limits.take_refused();
        live.store.set_hostcall_fuel(self.shared.settings.bounds.output_bytes);
        live.store.set_epoch_deadline(1);
        let outcome = tokio::time::timeout_at(deadline, f(live)).await;
        let past_wall_clock = self.clock.past_wall_deadline();
        self.clock.stop();
        held.settled = true;
        let slot = held.slot.as_mut().expect("held until dropped");
        match outcome {
            Ok(Ok(value)) => Ok((value, generation)),
            Ok(Err(_)) if past_wall_clock => {
                self.poison(slot, op, format!("interrupted computing at its wall-clock limit ({limit:?})"));
                Err(self.no_answer(op, limit, Started::Yes))
            }
            Ok(Err(error)) if is_output_bound(&error) => {
                self.shared.stats.outputs_too_large.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.invalid_outputs.fetch_add(1, Ordering::Relaxed);
                let live = slot.live.as_mut().expect("instance is live");
                let bytes = live.store.hostcall_fuel();
                let why = format!(
                    "invalid plugin output: larger than the {bytes} bytes this call may return (max_output_kib); \
                     refused before it was copied"
                );
                Err(self.poison(slot, op, why))
            }
            Ok(Err(error)) => {
                let live = slot.live.as_mut().expect("instance is live");
                let why = describe_trap(&error, &mut live.store.data_mut().limits);
                Err(self.poison(slot, op, why))
            }
            Err(_) => {
                self.poison(slot, op, format!("interrupted in a host call at its wall-clock limit ({limit:?})"));
                Err(self.no_answer(op, limit, Started::Yes))
            }
        }
    }

    /// One call of a backend function (no resource), its contract error
    /// flattened into ours.
    pub async fn call_backend<R: Send + 'static>(
        self: &Arc<Self>,
        op: &'static str,
        f: impl for<'a> FnOnce(&'a mut Live) -> GuestFuture<'a, Result<R, bindings::WitError>> + Send + 'static,
    ) -> Result<R, StorageError> {
        let (result, _) = self.call(None, op, f).await?;
        result.map_err(StorageError::from)
    }

    /// Drops a guest resource, if the generation that made it is still live.
    /// An unfinished writer's recovery token comes along (`abort-orphans`):
    /// while the instance lives, dropping the writer lets the plugin clean
    /// up itself; if the instance is gone by the time the drop gets to run
    /// (it trapped, or a call it waited behind was stuck), the upload left
    /// outside it (a multipart upload) is aborted on another instance.
    pub fn drop_resource(self: &Arc<Self>, generation: u64, resource: ResourceAny, orphan: Option<String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let this = self.clone();
        runtime.spawn(async move {
            let dropped = if this.is_live(generation) {
                this.call_when_free(Some(generation), "drop", move |live: &mut Live| {
                    Box::pin(async move { resource.resource_drop_async(&mut live.store).await })
                })
                .await
                .map(drop)
            } else {
                Err(StorageError::PluginFailed("the instance is gone".into()))
            };
            if let (Err(_), Some(token)) = (dropped, orphan)
                && !this.is_live(generation)
            {
                this.abort_orphan(token).await;
            }
        });
    }

    /// Aborts an upload whose writer was lost with this instance's
    /// generation, on the tenant's orphan-abort instance: one bounded call
    /// (the commit timeout); a failure is logged.
    async fn abort_orphan(&self, token: String) {
        let aborter = self.shared.orphan_aborter(&self.tenant);
        let aborted = aborter
            .call_when_free(None, "abort-orphan", move |live: &mut Live| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.call_abort_orphan(store, &token).await
                })
            })
            .await
            .and_then(|(result, _)| result.map_err(StorageError::from));
        let plugin = &*self.shared.name;
        match aborted {
            Ok(()) => {
                self.shared.stats.orphans_aborted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(plugin, "aborted an upload left by a lost instance");
            }
            Err(e) => {
                self.shared.warnings(&self.tenant).warn(format_args!("aborting an upload left by a lost instance failed: {e}"))
            }
        }
    }

    /// A reader or writer was made on it.
    pub(super) fn child_opened(&self) {
        self.children.fetch_add(1, Ordering::SeqCst);
    }

    /// A reader or writer made on it went away.
    pub(super) fn child_closed(self: &Arc<Self>) {
        if self.children.fetch_sub(1, Ordering::SeqCst) == 1 && self.retired.load(Ordering::SeqCst) {
            self.release();
        }
    }

    /// Its tenant's state is on a newer version now: the store (and the
    /// memory it holds) goes once its last reader has closed. Nothing
    /// reaches it meanwhile but those readers (see `tenant_gate`).
    pub(super) fn retire(self: &Arc<Self>) {
        self.retired.store(true, Ordering::SeqCst);
        if self.children.load(Ordering::SeqCst) == 0 {
            self.release();
        }
    }

    fn release(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let this = self.clone();
        runtime.spawn(async move {
            let mut slot = this.slot.clone().lock_owned().await;
            slot.live = None;
            this.live_generation.store(0, Ordering::SeqCst);
            tracing::debug!(plugin = &*this.shared.name, instance = %this.label, "retired instance released");
        });
    }

    /// Drops the live instance of `slot` after a trap or a stuck call.
    fn poison(&self, slot: &mut Slot, op: &str, fault: impl Into<Fault>) -> StorageError {
        slot.live = None;
        self.live_generation.store(0, Ordering::SeqCst);
        self.poisoned(op, fault)
    }

    fn poisoned(&self, op: &str, fault: impl Into<Fault>) -> StorageError {
        let Fault { why, tenants_own } = fault.into();
        self.shared.stats.poisoned.fetch_add(1, Ordering::Relaxed);
        self.shared.traps.fetch_add(1, Ordering::Relaxed);
        if tenants_own && self.breaker.failed() {
            // Logged once per trip, not once per refused call.
            self.shared.stats.breaker_trips.fetch_add(1, Ordering::Relaxed);
            let limits = self.breaker.limits();
            tracing::warn!(
                plugin = &*self.shared.name,
                tenant = &*self.tenant,
                "{} failures within {:?}: this tenant's calls are refused for {:?}",
                limits.failures,
                limits.window,
                limits.cooldown
            );
        }
        metrics::counter!("wasftp_plugin_instances_poisoned_total", "plugin" => self.shared.name.to_string())
            .increment(1);
        self.shared.warnings(&self.tenant).warn(format_args!("plugin instance {} dropped in {op}: {why}", self.label));
        StorageError::PluginFailed(format!("{op}: {why}"))
    }

    async fn instantiate(&self) -> Result<Live, StorageError> {
        let shared = &self.shared;
        let mut wasi = WasiCtxBuilder::new();
        // No ambient authority: no env, args, sockets or stdin; a directory
        // only when granted (HTTP goes through `wasi:http`, see `grants`).
        let log = shared.log_budget(&self.tenant);
        wasi.stderr(GuestStderr { plugin: shared.name.clone(), budget: log.clone() })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(preopen) = &shared.settings.grants.preopen {
            let perms = if preopen.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            let dir = preopen.dir_for(&self.tenant).map_err(StorageError::PluginFailed)?;
            wasi.preopened_dir(&dir, "/", perms).map_err(|e| {
                StorageError::PluginFailed(format!("opening the granted directory {}: {e}", dir.display()))
            })?;
        }
        // A refused memory.grow answers -1 to the guest, never a trap.
        let memory_limit = shared.settings.memory_limit_for(&self.tenant);
        let limits = StoreCaps::new(memory_limit, shared.guest_memory.clone(), shared.stats.clone());
        let bounds = shared.settings.bounds;
        let mut table = ResourceTable::new();
        table.set_max_capacity(bounds.host_resources);
        let state = StoreState {
            wasi: wasi.build(),
            table,
            bounds,
            limits,
            plugin: shared.name.clone(),
            log,
            clock: self.clock.clone(),
            stats: shared.stats.clone(),
            http: HttpState::new(shared.outbound.clone(), &self.tenant, self.requester, shared.warnings(&self.tenant)),
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_hostcall_fuel(bounds.output_bytes);
        store.set_max_component_handles(bounds.component_handles);
        store.call_hook(|ctx, hook| {
            ctx.data().clock.hook(hook);
            Ok(())
        });
        // Runs on the guest's thread at each epoch tick while it computes.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.clock.past_wall_deadline() {
                return Ok(UpdateDeadline::Interrupt);
            }
            let computed = state.clock.guest_time();
            if computed >= state.clock.budget() {
                return Ok(UpdateDeadline::Interrupt);
            }
            // CPU time, not the guest clock: a short call that waited for a
            // CPU behind spinners would be demoted, then starve among them
            // (a login waited 750 ms for its instance behind 4 spinners).
            if poll_cpu_time() >= DEMOTE_AFTER && demote_current_thread() {
                state.stats.demoted_calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);

        let budget = shared.settings.call_deadline_for(&self.tenant) + shared.settings.timeouts.metadata;
        let wall_deadline = std::time::Instant::now() + budget;
        let started = async {
            self.clock.start(wall_deadline);
            let instance = shared.pre.instance_pre().instantiate_async(&mut store).await?;
            let bindings = bindings::Plugin::new(&mut store, &instance)?;
            self.clock.start(wall_deadline);
            let init_config = super::init_config::with_memory_limit(&shared.init_config, memory_limit);
            let init = bindings.wasftp_storage_backend().call_init(&mut store, &init_config).await?;
            wasmtime::Result::Ok(((bindings, instance), init))
        };
        let started = tokio::time::timeout(budget, started).await;
        self.clock.stop();
        let ((bindings, instance), init) = match started {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => return Err(self.poisoned("instantiate", describe_trap(&error, &mut store.data_mut().limits))),
            Err(_) => return Err(self.poisoned("instantiate", format!("no answer within {budget:?}"))),
        };
        if let Err(message) = init {
            let message = super::error::bounded(message);
            shared.warnings(&self.tenant).warn(format_args!("plugin init refused its configuration: {message}"));
            return Err(StorageError::PluginFailed(format!("init: {message}")));
        }
        shared.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(plugin = &*shared.name, instance = %self.label, "plugin instance started");
        Ok(Live { store, bindings, instance })
    }
}

/// The least of its limit a call must have left to start (a quarter, at
/// most 5 s).
fn least_time_to_start(limit: Duration) -> Duration {
    (limit / 4).min(Duration::from_secs(5))
}

/// After its deadline, how long a caller waits for a started call to say
/// it was interrupted before answering for it.
const ANSWER_GRACE: Duration = Duration::from_millis(500);

/// What the client is told of a call that got no answer in time.
fn no_answer_error(op: &str, limit: Duration, started: Started) -> StorageError {
    let outcome = match started {
        Started::Yes if may_change_data(op) => "; the call was interrupted and whether it took effect is unknown",
        Started::Yes => "; the call was interrupted",
        Started::No => "; it was never started",
    };
    StorageError::Io(format!("{op}: no answer from the storage within {limit:?}{outcome}"))
}

/// Whether a call that got no answer in time had started.
#[derive(Clone, Copy)]
enum Started {
    Yes,
    No,
}

/// Whether the wall-clock limit of a call counts the wait for the instance.
#[derive(Clone, Copy)]
enum Queue {
    Bounded,
    Unbounded,
}

/// The instance held by one call. A call that never settles (it panicked,
/// a host bug) leaves a store stopped half-way through guest code: it is
/// dropped, never used again. The slot is freed before `running_late` is
/// cleared, so a caller that sees the flag set still finds the slot busy.
struct SlotHeld<'a> {
    instance: &'a Instance,
    slot: Option<tokio::sync::OwnedMutexGuard<Slot>>,
    settled: bool,
}

impl Drop for SlotHeld<'_> {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            if !self.settled && slot.live.is_some() {
                self.instance.clock.stop();
                self.instance.poison(&mut slot, "call", String::from("the host failed while running the call"));
            }
            drop(slot);
        }
        self.instance.running_late.store(false, Ordering::SeqCst);
    }
}

/// Why an instance is dropped, and whether it counts toward its tenant's
/// circuit breaker (memory that other tenants hold does not).
struct Fault {
    why: String,
    tenants_own: bool,
}

impl From<String> for Fault {
    fn from(why: String) -> Self {
        Self { why, tenants_own: true }
    }
}

/// Why a call failed, for logs. A trap right after a refused `memory.grow` is
/// the guest giving up on a failed allocation: say it ran out of memory.
fn describe_trap(error: &wasmtime::Error, limits: &mut StoreCaps) -> Fault {
    let out_of_memory = limits.take_refused();
    if out_of_memory && limits.take_refused_by_server() {
        let why = format!(
            "the server's guest memory is all in use (guest_memory_total_mib): {}",
            super::error::bounded(format!("{error:#}"))
        );
        return Fault { why, tenants_own: false };
    }
    Fault::from(match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded (interrupted)".into(),
        Some(trap) if out_of_memory => {
            format!("out of memory (growth past the {} MiB cap refused), then trapped: {trap}", limits.memory_limit() >> 20)
        }
        Some(trap) => format!("trapped: {trap}"),
        // wasmtime checks strings as it copies them out; it leaves the
        // instance unusable, so this costs the instance, like a trap.
        None if error.downcast_ref::<std::str::Utf8Error>().is_some()
            || error.downcast_ref::<std::char::DecodeUtf16Error>().is_some() =>
        {
            format!("invalid plugin output: a string that is not UTF-8 ({error})")
        }
        None => {
            let text = format!("{error:#}");
            if out_of_memory || (text.contains("memory") && text.contains("limit")) {
                "memory limit reached".into()
            } else {
                format!("trapped: {}", super::error::bounded(text))
            }
        }
    })
}

impl Instance {
    pub(super) fn plugin_name(&self) -> &str {
        &self.shared.name
    }

    pub(super) fn stats(&self) -> &super::RuntimeStats {
        &self.shared.stats
    }

    /// Whether a store is running (it may hold state).
    pub(super) fn has_live(&self) -> bool {
        self.live_generation.load(Ordering::SeqCst) != 0
    }

    /// How long a commit-kind call may take.
    pub(super) fn commit_limit(&self) -> Duration {
        self.shared.settings.timeouts.limit(CallKind::Commit)
    }

    /// The cap on its linear memory.
    pub(super) fn memory_limit(&self) -> usize {
        self.shared.settings.memory_limit_for(&self.tenant)
    }

    /// Where its version's `handover` functions are, if it has them.
    pub(super) fn handover_exports(&self) -> Option<super::handover::HandoverExports> {
        self.shared.handover.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{EngineOptions, PluginSettings, Runtime, bundled};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_panics_leaves_no_live_instance_behind() {
        let runtime = Runtime::new(&EngineOptions::default()).unwrap();
        let memory = bundled::get("memory").expect("the memory plugin is bundled");
        let plugin = runtime.load("memory", memory, PluginSettings::default()).await.unwrap();
        let instance = Instance::new(plugin.shared.clone(), "", "test".into());
        fn describe(live: &mut Live) -> GuestFuture<'_, ()> {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.call_describe(store).await.map(drop)
            })
        }
        let ((), first) = instance.call(None, "describe", describe).await.unwrap();
        assert!(instance.is_live(first));

        // A host bug in the middle of a call (here: before the guest returns).
        let panicked = instance
            .call(None, "describe", |live: &mut Live| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    let _ = api.call_describe(store).await;
                    if true {
                        panic!("a host bug while the instance is in use");
                    }
                    Ok(())
                }) as GuestFuture<'_, ()>
            })
            .await;
        assert!(matches!(panicked, Err(StorageError::PluginFailed(_))), "{panicked:?}");
        assert!(!instance.is_live(first), "resources of the instance the panic left half-way are gone");
        assert!(!instance.running_late() && !instance.busy());
        let ((), next) = instance.call(None, "describe", describe).await.unwrap();
        assert!(next > first, "the next call runs on a fresh instance");
    }
}
