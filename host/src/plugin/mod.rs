//! The sandboxed plugin runtime. The rest of the host sees `Runtime`,
//! `Plugin` and the async handles in `handles`; wasmtime stays in here.

mod admission;
mod bindings;
mod breaker;
mod compile;
mod engine;
mod error;
mod executor;
mod grants;
mod guest_clock;
mod guest_output;
mod handles;
mod handover;
mod init_config;
mod instance;
mod limits;
mod outbound;
mod pool;
mod tenant_gate;
mod timeouts;
pub mod bundled;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::error::Context as _;
use wasmtime::Engine;

pub use breaker::BreakerLimits;
pub use compile::{CompileLimits, Compiler, child_main as compile_child_main, default_cache_dir};
pub use bindings::{
    Capabilities, DirEntry, DirPage, FileInfo, FileKind, InstanceScope, SessionContext, SetAttrs,
    SpaceInfo, WriteOptions,
};
pub use engine::{EPOCH_TICK, EngineOptions};
pub use error::StorageError;
pub use grants::{Grants, HttpLimits, Origin, Preopen, UngrantedImport, tenant_folder_name};
pub use guest_output::LogLimits;
pub use handles::{Reader, Session, Writer};
pub use handover::{Handover, HandoverReport};
pub use limits::{GuestMemory, HostBounds};
pub use pool::{PoolLimits, default_guest_threads_per_tenant};
pub use timeouts::{CallKind, CallTimeouts};

use engine::PluginEngine;
use executor::GuestThreads;
use guest_output::LogBudget;
use instance::{Instance, StoreState};
use outbound::Outbound;
use pool::Pools;

/// Per-plugin sandbox settings and the configuration handed to `init`.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Cap on the instance's linear memory, in bytes.
    pub memory_limit: usize,
    /// How long one call may compute (wall time outside host calls).
    pub call_deadline: Duration,
    /// How long one call may take in all, by kind.
    pub timeouts: CallTimeouts,
    /// How instances are shared and bounded.
    pub pools: PoolLimits,
    /// How often `maintain` runs after the one at load; `None`: only at load.
    pub maintain_every: Option<Duration>,
    /// Key/value configuration passed to the plugin's `init`.
    pub config: Vec<(String, String)>,
    /// What the plugin may reach beyond the contract (HTTP origins, a directory).
    pub grants: Grants,
    /// What one tenant's instances may write to the host's log.
    pub log: LogLimits,
    /// The largest plugin file admitted.
    pub max_component_bytes: usize,
    /// What compiling it may cost (in a child process; see `compile`).
    pub compile: CompileLimits,
    /// What its calls may make the host hold (outputs, host tables).
    pub bounds: HostBounds,
    /// When a tenant's failing calls are refused for a while.
    pub breaker: BreakerLimits,
    /// Named tenants' own bounds in place of the ones above.
    pub tenants: BTreeMap<String, TenantBounds>,
}

/// What one tenant's instances get instead of the plugin's settings; what
/// is `None` is the plugin's. (Its guest threads are in `pools`, its HTTP
/// requests in `grants.http_limits`.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantBounds {
    pub memory_limit: Option<usize>,
    pub call_deadline: Option<Duration>,
    pub log_lines_per_sec: Option<u32>,
    pub log_bytes_per_sec: Option<u32>,
}

impl PluginSettings {
    fn tenant(&self, tenant: &str) -> TenantBounds {
        self.tenants.get(tenant).copied().unwrap_or_default()
    }

    /// `tenant`'s instances' memory cap.
    pub fn memory_limit_for(&self, tenant: &str) -> usize {
        self.tenant(tenant).memory_limit.unwrap_or(self.memory_limit)
    }

    /// How long one of `tenant`'s calls may compute.
    pub fn call_deadline_for(&self, tenant: &str) -> Duration {
        self.tenant(tenant).call_deadline.unwrap_or(self.call_deadline)
    }

    /// What `tenant`'s instances may write to the log.
    pub fn log_for(&self, tenant: &str) -> LogLimits {
        let own = self.tenant(tenant);
        LogLimits {
            lines_per_sec: own.log_lines_per_sec.unwrap_or(self.log.lines_per_sec),
            bytes_per_sec: own.log_bytes_per_sec.unwrap_or(self.log.bytes_per_sec),
        }
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            memory_limit: 256 << 20,
            call_deadline: Duration::from_secs(5),
            timeouts: CallTimeouts::default(),
            pools: PoolLimits::default(),
            maintain_every: Some(Duration::from_secs(3600)),
            config: Vec::new(),
            grants: Grants::default(),
            log: LogLimits::default(),
            max_component_bytes: admission::DEFAULT_MAX_COMPONENT_BYTES,
            compile: CompileLimits::default(),
            bounds: HostBounds::default(),
            breaker: BreakerLimits::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// Counters of what the sandbox had to do.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Plugins compiled, and taken compiled from the cache.
    pub components_compiled: AtomicU64,
    pub components_from_cache: AtomicU64,
    pub instances_created: AtomicU64,
    /// Instances dropped after a trap or timeout.
    pub poisoned: AtomicU64,
    /// Calls abandoned on the wall clock (guest stuck in a host call).
    pub timeouts: AtomicU64,
    /// Outputs rejected by validation.
    pub invalid_outputs: AtomicU64,
    /// Guest `memory.grow` calls refused at the memory cap (answered -1).
    pub memory_grow_refused: AtomicU64,
    /// Those refused because all instances together hold the server's
    /// guest memory (`EngineOptions::guest_memory_total`).
    pub memory_grow_refused_server: AtomicU64,
    /// Calls that computed long enough for their thread to be lowered in
    /// priority (see `executor`).
    pub demoted_calls: AtomicU64,
    /// Outgoing HTTP requests refused by a plugin's allow list.
    pub http_denied: AtomicU64,
    /// Outgoing HTTP requests refused with too many in flight.
    pub http_refused_busy: AtomicU64,
    /// Uploads aborted on a fresh instance after their own was lost.
    pub orphans_aborted: AtomicU64,
    /// Lines of guest log and stderr written, and dropped over a tenant's rate.
    pub log_lines: AtomicU64,
    pub log_lines_dropped: AtomicU64,
    /// The host's warnings about plugins written, and left out over a
    /// tenant's rate (`guest_output::HOST_WARNING_LIMITS`).
    pub host_warnings: AtomicU64,
    pub host_warnings_dropped: AtomicU64,
    /// Calls that trapped copying an output past `HostBounds::output_bytes`.
    pub outputs_too_large: AtomicU64,
    /// Times a tenant's breaker opened, and calls it refused.
    pub breaker_trips: AtomicU64,
    pub breaker_refusals: AtomicU64,
}

impl RuntimeStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The engine, the linkers (one per grant set), the threads guest code runs
/// on, and the counters.
pub struct Runtime {
    engine: PluginEngine,
    guest_memory: Arc<GuestMemory>,
    compiler: Compiler,
    cache_dir: Option<std::path::PathBuf>,
    linkers: grants::Linkers<StoreState>,
    threads: Arc<GuestThreads>,
    stats: Arc<RuntimeStats>,
}

impl Runtime {
    pub fn new(options: &EngineOptions) -> anyhow::Result<Arc<Self>> {
        let engine = PluginEngine::new(options)?;
        let linkers = grants::Linkers::new(&engine.engine, |linker| {
            bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |state| state)
                .map_err(|e| anyhow::anyhow!("linking the host imports: {e:#}"))
        })?;
        let threads = Arc::new(GuestThreads::new(options.max_guest_threads));
        let cache_dir = options.cache.then(|| options.cache_dir.clone().or_else(default_cache_dir)).flatten();
        let guest_memory = Arc::new(GuestMemory::new(options.guest_memory_total));
        Ok(Arc::new(Self {
            engine,
            guest_memory,
            compiler: options.compiler.clone(),
            cache_dir,
            linkers,
            threads,
            stats: Arc::default(),
        }))
    }

    /// Guest threads alive now.
    pub fn guest_threads(&self) -> usize {
        self.threads.threads()
    }

    /// Whether the pooling allocator is in use (the start-up probe passed).
    pub fn pooling(&self) -> bool {
        self.engine.pooling
    }

    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The linear memory of all live instances, and its server-wide bound.
    pub fn guest_memory(&self) -> &GuestMemory {
        &self.guest_memory
    }

    /// Compiles a component (once per plugin version), checks that it
    /// instantiates and accepts its configuration, and reads its capabilities.
    pub async fn load(&self, name: &str, wasm: &[u8], settings: PluginSettings) -> anyhow::Result<Arc<Plugin>> {
        admission::check_file(name, wasm, settings.max_component_bytes)?;
        let compile_started = std::time::Instant::now();
        let (component, how) = compile::compile(
            &self.engine.engine,
            &self.compiler,
            self.cache_dir.as_deref(),
            name,
            wasm,
            settings.compile,
        )
        .await?;
        match how {
            compile::Compiled::Compiled => &self.stats.components_compiled,
            compile::Compiled::FromCache => &self.stats.components_from_cache,
        }
        .fetch_add(1, Ordering::Relaxed);
        let compiled = Compilation { from_cache: how == compile::Compiled::FromCache, took: compile_started.elapsed() };
        let component_type = component.component_type();
        let imports: Vec<String> = component_type.imports(&self.engine.engine).map(|(name, _)| name.to_string()).collect();
        let exports: Vec<String> = component_type.exports(&self.engine.engine).map(|(name, _)| name.to_string()).collect();
        if let Some(theirs) = other_contract_version(&imports, &exports) {
            anyhow::bail!(
                "plugin {name} was built against the contract {theirs}; this wasftp speaks {}: \
                 rebuild it against this wasftp's wit/storage.wit",
                contract_package()
            );
        }
        grants::check_load(name, &component, &self.engine.engine, &settings.grants)?;
        let ungranted = grants::ungranted_imports(name, &component, &self.engine.engine, &settings.grants);
        for import in &ungranted {
            tracing::info!(plugin = name, imports = ?import.interfaces, "the plugin links interfaces it is not granted; it finds {}", import.finds);
        }
        let pre = self.linkers.for_grants(&settings.grants).instantiate_pre(&component).with_context(|| {
            format!(
                "plugin {name} needs imports wasftp does not provide (the storage contract, logging, WASI \
                 without authority, and wasi:http when granted)"
            )
        })?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| not_the_contract(name, &exports, anyhow::Error::from(e)))?;
        let handover_exports = handover::HandoverExports::find(&component);
        let init_config = anyhow::Context::with_context(init_config::build(&settings), || format!("plugin {name}"))?;
        let outbound =
            Outbound::new(name.into(), settings.grants.http_allow.clone(), settings.grants.http_limits.clone(), self.stats.clone());
        let shared = Arc::new(PluginShared {
            name: name.into(),
            pre,
            engine: self.engine.engine.clone(),
            guest_memory: self.guest_memory.clone(),
            settings,
            init_config,
            outbound,
            threads: self.threads.clone(),
            stats: self.stats.clone(),
            orphan_aborters: Default::default(),
            log_budgets: Default::default(),
            warning_budgets: Default::default(),
            breakers: Default::default(),
            traps: AtomicU64::new(0),
            handover: handover_exports,
            caps: std::sync::OnceLock::new(),
        });
        let probe_started = std::time::Instant::now();
        let probe = Instance::for_host_work(shared.clone(), "", "probe".into());
        let described = probe
            .call(None, "describe", |live: &mut instance::Live| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.call_describe(store).await
                })
            })
            .await;
        let (mut caps, _) = anyhow::Context::with_context(described, || format!("starting plugin {name}"))?;
        let first_instance = probe_started.elapsed();
        anyhow::Context::with_context(validate::capabilities(&mut caps), || format!("plugin {name}"))?;
        let _ = shared.caps.set(caps.clone());
        let hands_over = caps.scope == InstanceScope::Tenant && handover::supported(&probe, shared.handover.as_ref()).await;
        // Housekeeping left by an earlier run (object storage: uploads a
        // crashed host started); a failure is logged, the plugin still loads.
        maintain(&probe).await;
        drop(probe);
        tracing::info!(
            plugin = name,
            backend = %caps.name,
            version = %caps.version,
            scope = ?caps.scope,
            "plugin loaded"
        );
        let component = ComponentSummary { bytes: wasm.len(), imports, exports, compiled, first_instance };
        let plugin = Arc::new(Plugin {
            pools: Pools::new(shared.clone(), caps.scope),
            shared,
            caps,
            ungranted,
            component,
            handover: hands_over,
        });
        tokio::spawn(housekeeping(Arc::downgrade(&plugin)));
        Ok(plugin)
    }
}

/// The contract this host speaks: the package line of `wit/storage.wit`.
pub fn contract_package() -> &'static str {
    static PACKAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PACKAGE.get_or_init(|| {
        include_str!("../../../wit/storage.wit")
            .lines()
            .find_map(|line| line.trim().strip_prefix("package ")?.strip_suffix(';').map(str::to_string))
            .expect("wit/storage.wit names its package")
    })
}

/// The contract package a component's imports or exports name, when it is
/// not this host's (`wasftp:storage@0.1.0` against `@0.2.0`).
fn other_contract_version(imports: &[String], exports: &[String]) -> Option<String> {
    let ours = contract_package();
    let (package, _) = ours.split_once('@').unwrap_or((ours, ""));
    imports.iter().chain(exports).find_map(|name| {
        let (interface, version) = name.strip_prefix(package)?.strip_prefix('/')?.split_once('@')?;
        let theirs = format!("{package}@{version}");
        (!interface.is_empty() && theirs != ours).then_some(theirs)
    })
}

/// Why a component of this contract's version is still not a plugin, in
/// words for its author: no contract at all, or the contract with a part
/// missing or of another shape (wasmtime's words).
fn not_the_contract(name: &str, exports: &[String], cause: anyhow::Error) -> anyhow::Error {
    let ours = contract_package();
    let (package, version) = ours.split_once('@').unwrap_or((ours, ""));
    let backend = format!("{package}/backend@{version}");
    if exports.contains(&backend) {
        cause.context(format!("plugin {name} exports {backend}, but not as the contract says"))
    } else {
        anyhow::anyhow!(
            "plugin {name} does not export the {ours} contract ({backend}); it exports: {}",
            if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
        )
    }
}

/// One `maintain` call; a failure is logged.
async fn maintain(instance: &Arc<Instance>) {
    let maintained = instance
        .call_backend("maintain", |live: &mut instance::Live| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.call_maintain(store).await
            })
        })
        .await;
    if let Err(e) = maintained {
        tracing::warn!(plugin = instance.plugin_name(), "maintenance failed: {e}");
    }
}

/// While the plugin is loaded: drops idle instances, and runs `maintain`
/// on a fresh instance every `maintain_every`.
async fn housekeeping(plugin: std::sync::Weak<Plugin>) {
    const SWEEP_EVERY: Duration = Duration::from_secs(5);
    let mut last_maintained = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(plugin) = plugin.upgrade() else { return };
        plugin.pools.evict_idle();
        if let Some(every) = plugin.shared.settings.maintain_every
            && last_maintained.elapsed() >= every
        {
            last_maintained = tokio::time::Instant::now();
            maintain(&Instance::for_host_work(plugin.shared.clone(), "", "maintenance".into())).await;
        }
    }
}

/// What every instance of one plugin version shares.
pub(crate) struct PluginShared {
    name: Arc<str>,
    pre: bindings::PluginPre<StoreState>,
    engine: Engine,
    /// The server-wide guest memory every store is charged to.
    guest_memory: Arc<GuestMemory>,
    settings: PluginSettings,
    /// What `init` gets: `settings.config` plus the host's reserved keys.
    init_config: Vec<(String, String)>,
    /// Where its `wasi:http` requests go (`settings.grants.http_allow`),
    /// and their connection pool, shared by every store.
    outbound: Arc<Outbound>,
    threads: Arc<GuestThreads>,
    stats: Arc<RuntimeStats>,
    /// Per tenant, the instance aborting uploads lost with their own,
    /// while in use.
    orphan_aborters: std::sync::Mutex<HashMap<Arc<str>, std::sync::Weak<Instance>>>,
    /// Per tenant, the log rate its instances share. Kept after the last
    /// instance goes until it has refilled: a trap must not buy a tenant a
    /// fresh burst.
    log_budgets: PerTenant<LogBudget>,
    /// The host's warnings about each tenant's plugin (see `guest_output`).
    warning_budgets: PerTenant<LogBudget>,
    /// Per tenant, its circuit breaker; kept while it remembers a failure.
    breakers: PerTenant<breaker::Breaker>,
    /// Instances of this version dropped after a trap or timeout.
    traps: AtomicU64,
    /// Where its `handover` export is, if it has one.
    handover: Option<handover::HandoverExports>,
    /// What it said it can do at load.
    caps: std::sync::OnceLock<Capabilities>,
}

/// One value per tenant, shared by its instances: made at first use, and
/// forgotten once no instance holds it and `keep` says it remembers nothing.
struct PerTenant<T>(std::sync::Mutex<HashMap<Arc<str>, Arc<T>>>);

impl<T> Default for PerTenant<T> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<T> PerTenant<T> {
    fn get(&self, tenant: &str, keep: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> Arc<T> {
        let mut values = self.0.lock().expect("per-tenant values lock");
        if let Some(value) = values.get(tenant) {
            return value.clone();
        }
        values.retain(|_, value| Arc::strong_count(value) > 1 || keep(value));
        let value = Arc::new(make());
        values.insert(tenant.into(), value.clone());
        value
    }
}

impl PluginShared {
    /// The log rate `tenant`'s instances share (the host's own instances
    /// share the empty tenant's).
    fn log_budget(&self, tenant: &str) -> Arc<LogBudget> {
        // One entry per tenant with instances or a recent flood.
        self.log_budgets.get(tenant, |budget| !budget.is_full(), || {
            LogBudget::new(self.settings.log_for(tenant), guest_output::BudgetOf::Guest, self.stats.clone())
        })
    }

    /// The host's warnings about `tenant`'s plugin, rate-limited.
    fn warnings(&self, tenant: &str) -> guest_output::HostWarnings {
        let budget = self.warning_budgets.get(tenant, |budget| !budget.is_full(), || {
            LogBudget::new(guest_output::HOST_WARNING_LIMITS, guest_output::BudgetOf::HostWarnings, self.stats.clone())
        });
        guest_output::HostWarnings { plugin: self.name.clone(), tenant: tenant.into(), budget }
    }

    /// The circuit breaker `tenant`'s instances share.
    fn breaker(&self, tenant: &str) -> Arc<breaker::Breaker> {
        self.breakers.get(tenant, |breaker| !breaker.is_clear(), || breaker::Breaker::new(self.settings.breaker))
    }

    /// One instance per tenant for the tenant's orphan aborts (they queue
    /// on it, behind none of another tenant's), made when needed and
    /// dropped when idle.
    fn orphan_aborter(self: &Arc<Self>, tenant: &Arc<str>) -> Arc<Instance> {
        let mut aborters = self.orphan_aborters.lock().expect("orphan aborters lock");
        if let Some(instance) = aborters.get(tenant).and_then(std::sync::Weak::upgrade) {
            return instance;
        }
        aborters.retain(|_, aborter| aborter.strong_count() > 0);
        let instance = Instance::for_host_work(self.clone(), tenant, format!("orphan-abort:{tenant}"));
        aborters.insert(tenant.clone(), Arc::downgrade(&instance));
        instance
    }
}

/// One compiled, validated plugin version.
pub struct Plugin {
    shared: Arc<PluginShared>,
    caps: Capabilities,
    /// Instances per tenant; never shared across tenants.
    pools: Pools,
    /// What it imports and finds empty (told at load).
    ungranted: Vec<UngrantedImport>,
    component: ComponentSummary,
    /// Whether it hands its tenants' state to its next version.
    handover: bool,
}

/// What a plugin file is, as `wasftp plugin info` shows it.
#[derive(Debug, Clone)]
pub struct ComponentSummary {
    /// The file's size.
    pub bytes: usize,
    /// Interfaces it imports and exports, with their versions.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub compiled: Compilation,
    /// The first instance's start at load: instantiation, `init`, `describe`.
    pub first_instance: Duration,
}

/// How its compiled code was had at load.
#[derive(Debug, Clone, Copy)]
pub struct Compilation {
    pub from_cache: bool,
    pub took: Duration,
}

impl Plugin {
    /// The component behind it (size, interfaces, compilation).
    pub fn component(&self) -> &ComponentSummary {
        &self.component
    }

    /// Linked imports its grants leave empty (see `grants::UngrantedImport`).
    pub fn ungranted_imports(&self) -> &[UngrantedImport] {
        &self.ungranted
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Opens a session for `context` on the tenant's instances (see `pool`).
    /// A tenant left on the version before by a hand-over that failed runs
    /// there, with that version's capabilities.
    pub async fn open_session(&self, context: SessionContext) -> Result<Session, StorageError> {
        let seat = self.pools.join(&context.tenant)?;
        let caps = seat.capabilities().unwrap_or_else(|| self.caps.clone());
        Session::open(seat, caps, context).await
    }

    /// Whether it hands its tenants' state to its next version.
    pub fn hands_over_state(&self) -> bool {
        self.handover
    }

    /// Tenants whose circuit breaker refuses their calls now.
    pub fn open_breakers(&self) -> usize {
        let breakers = self.shared.breakers.0.lock().expect("per-tenant values lock");
        breakers.values().filter(|breaker| breaker.refusing().is_some()).count()
    }

    /// Instances of this version dropped after a trap or timeout.
    pub fn traps(&self) -> u64 {
        self.shared.traps.load(Ordering::Relaxed)
    }

    /// Tenants holding instances of this plugin now.
    pub fn tenants(&self) -> usize {
        self.pools.tenants()
    }

    /// Stateless instances kept idle for the tenants' next sessions.
    pub fn idle_instances(&self) -> usize {
        self.pools.idle_instances()
    }

    /// Drops idle instances past their time now (the plugin's housekeeping task does it every few seconds).
    pub fn evict_idle(&self) {
        self.pools.evict_idle();
    }
}
