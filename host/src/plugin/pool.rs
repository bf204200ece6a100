//! The instances of one plugin version, kept per tenant.
//!
//! A `tenant` plugin keeps its state in its instance: every session of the
//! tenant shares that one instance, which is never evicted. A `stateless`
//! plugin's instances are interchangeable: a session leases up to
//! `instances_per_session` of them at once (see `handles::Session`), and
//! gives them back when it ends; idle ones serve the tenant's next sessions
//! and are dropped after `idle_evict`. Instances never cross tenants.
//!
//! At most `max_tenants` tenants hold instances of one plugin; a login past
//! it is refused with "tenant capacity reached" (logged once), instead of
//! failing later when the instance allocator runs out of slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::PluginShared;
use super::bindings::InstanceScope;
use super::error::StorageError;
use super::instance::Instance;
use super::tenant_gate::{Entry, Passing, TenantGate};

/// How a plugin's instances are shared and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLimits {
    /// Tenants holding instances at once.
    pub max_tenants: usize,
    /// Instances one session of a stateless plugin may use at once.
    pub instances_per_session: usize,
    /// An idle stateless instance is dropped after this long.
    pub idle_evict: Duration,
    /// A tenant's calls computing on guest threads at once; more wait for
    /// the tenant's own calls (a call waiting in a host call holds no thread).
    pub guest_threads_per_tenant: usize,
    /// Tenants with a cap of their own instead.
    pub guest_threads_by_tenant: std::collections::BTreeMap<String, usize>,
}

impl PoolLimits {
    /// `tenant`'s cap of calls on guest threads at once.
    pub fn guest_threads_for(&self, tenant: &str) -> usize {
        self.guest_threads_by_tenant.get(tenant).copied().unwrap_or(self.guest_threads_per_tenant)
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_tenants: 256,
            instances_per_session: 4,
            idle_evict: Duration::from_secs(60),
            guest_threads_per_tenant: default_guest_threads_per_tenant(),
            guest_threads_by_tenant: Default::default(),
        }
    }
}

/// Twice the cores, at least 4: a tenant can keep every core busy, and
/// other tenants still find threads free.
pub fn default_guest_threads_per_tenant() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(2).max(4)
}

pub(crate) struct Pools {
    shared: Arc<PluginShared>,
    scope: InstanceScope,
    /// A tenant's pool; after a hand-over that failed, the pool of the
    /// version before, where the tenant stayed.
    tenants: Mutex<HashMap<String, Arc<TenantPool>>>,
    refusal_logged: AtomicBool,
    /// Set once a newer version serves: no tenant is new here any more.
    replaced: AtomicBool,
}

/// One tenant's instances.
pub(crate) struct TenantPool {
    shared: Arc<PluginShared>,
    tenant: String,
    /// The tenant-scoped instance, shared by all sessions.
    stateful: Option<Arc<Instance>>,
    /// Stateless instances no session holds, with when they were given back.
    idle: Mutex<Vec<(Arc<Instance>, Instant)>>,
    sessions: AtomicUsize,
    made: AtomicUsize,
    /// In front of the tenant-scoped instance: held while the state moves.
    gate: Option<Arc<TenantGate>>,
}

impl TenantPool {
    /// The tenant-scoped instance.
    pub fn stateful(&self) -> Option<&Arc<Instance>> {
        self.stateful.as_ref()
    }

    pub fn gate(&self) -> Option<&Arc<TenantGate>> {
        self.gate.as_ref()
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Pools {
    pub fn new(shared: Arc<PluginShared>, scope: InstanceScope) -> Self {
        Self {
            shared,
            scope,
            tenants: Mutex::default(),
            refusal_logged: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
        }
    }

    /// A pool for `tenant` that no session has joined yet.
    pub fn new_pool(&self, tenant: &str) -> Arc<TenantPool> {
        let stateful = match self.scope {
            InstanceScope::Tenant => Some(Instance::new(self.shared.clone(), tenant, format!("tenant:{tenant}"))),
            InstanceScope::Stateless => None,
        };
        let gate = stateful.as_ref().map(|_| Arc::new(TenantGate::default()));
        Arc::new(TenantPool {
            shared: self.shared.clone(),
            tenant: tenant.to_string(),
            stateful,
            idle: Mutex::default(),
            sessions: AtomicUsize::new(0),
            made: AtomicUsize::new(0),
            gate,
        })
    }

    /// The tenants with a tenant-scoped instance here, and their pools.
    pub fn stateful_tenants(&self) -> Vec<Arc<TenantPool>> {
        let tenants = self.tenants.lock().expect("tenant pools lock");
        tenants.values().filter(|pool| pool.stateful.is_some()).cloned().collect()
    }

    /// From now on a newer version serves: a tenant not here yet goes there.
    pub fn replaced(&self) {
        self.replaced.store(true, Ordering::SeqCst);
    }

    /// The tenant's state is in `pool` (the version before's until it has
    /// moved, or for good when its hand-over failed): its sessions go
    /// there, and follow it when it moves.
    pub fn arrived(&self, tenant: &str, pool: Arc<TenantPool>) {
        self.tenants.lock().expect("tenant pools lock").insert(tenant.to_string(), pool);
    }

    /// The tenant's pool, with one more session counted on it; refused when
    /// the plugin already serves `max_tenants` other tenants.
    pub fn join(&self, tenant: &str) -> Result<SessionSeat, StorageError> {
        let mut tenants = self.tenants.lock().expect("tenant pools lock");
        if !tenants.contains_key(tenant) && self.replaced.load(Ordering::SeqCst) {
            return Err(StorageError::PluginFailed(format!(
                "plugin {} was replaced by a newer version while this session opened",
                self.shared.name
            )));
        }
        if !tenants.contains_key(tenant) {
            let limit = self.shared.settings.pools.max_tenants;
            if tenants.len() >= limit {
                // Stateless tenants without sessions only hold idle
                // instances: let them go to make room.
                tenants.retain(|_, pool| pool.stateful.is_some() || pool.sessions.load(Ordering::SeqCst) > 0);
            }
            if tenants.len() >= limit {
                if !self.refusal_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        plugin = &*self.shared.name,
                        max_tenants = limit,
                        "tenant capacity reached: logins of further tenants are refused (logged once)"
                    );
                }
                return Err(StorageError::PluginFailed(format!(
                    "tenant capacity reached ({limit} tenants on plugin {})",
                    self.shared.name
                )));
            }
            let pool = self.new_pool(tenant);
            tenants.insert(tenant.to_string(), pool);
        }
        Ok(SessionSeat::on(tenants[tenant].clone()))
    }

    /// Drops stateless instances idle for longer than `idle_evict`, and
    /// tenants left with nothing.
    pub fn evict_idle(&self) {
        // None kept while the server's guest memory is short: others need it.
        let max_idle = if self.shared.guest_memory.is_short() { Duration::ZERO } else { self.shared.settings.pools.idle_evict };
        let mut tenants = self.tenants.lock().expect("tenant pools lock");
        for pool in tenants.values() {
            pool.idle.lock().expect("idle instances lock").retain(|(_, since)| since.elapsed() < max_idle);
        }
        tenants.retain(|_, pool| {
            pool.stateful.is_some()
                || pool.sessions.load(Ordering::SeqCst) > 0
                || !pool.idle.lock().expect("idle instances lock").is_empty()
        });
    }

    /// Tenants holding instances now.
    pub fn tenants(&self) -> usize {
        self.tenants.lock().expect("tenant pools lock").len()
    }

    /// Stateless instances kept idle, over all tenants.
    pub fn idle_instances(&self) -> usize {
        let tenants = self.tenants.lock().expect("tenant pools lock");
        tenants.values().map(|pool| pool.idle.lock().expect("idle instances lock").len()).sum()
    }
}

/// A session's place in its tenant's pool; gives it up when dropped.
pub(crate) struct SessionSeat {
    pool: Arc<TenantPool>,
}

impl SessionSeat {
    /// One more session on `pool`.
    pub fn on(pool: Arc<TenantPool>) -> Self {
        pool.sessions.fetch_add(1, Ordering::SeqCst);
        Self { pool }
    }

    /// Passes the tenant's gate (at once for a stateless plugin).
    pub async fn enter(&self, passing: Passing) -> Entry {
        match &self.pool.gate {
            Some(gate) => gate.enter(passing).await,
            None => Entry::Open(None),
        }
    }

    /// Whether the tenant's state went to a newer version.
    pub fn moved(&self) -> bool {
        self.pool.gate.as_ref().is_some_and(|gate| gate.moved_to().is_some())
    }

    /// What the plugin said it can do (of the version whose instances these are).
    pub fn capabilities(&self) -> Option<super::Capabilities> {
        self.pool.shared.caps.get().cloned()
    }

    /// How many instances this session may use at once.
    pub fn max_instances(&self) -> usize {
        match self.pool.stateful {
            Some(_) => 1,
            None => self.pool.shared.settings.pools.instances_per_session.max(1),
        }
    }

    /// An instance for this session: the tenant's own, or an idle stateless
    /// one, or a new one.
    pub fn lease(&self) -> Arc<Instance> {
        if let Some(instance) = &self.pool.stateful {
            return instance.clone();
        }
        // An instance still running a call that timed out would make this
        // session wait for it: take a free one.
        let idle = {
            let mut idle = self.pool.idle.lock().expect("idle instances lock");
            idle.iter().rposition(|(instance, _)| !instance.running_late()).map(|i| idle.remove(i))
        };
        match idle {
            Some((instance, _)) => instance,
            None => {
                let n = self.pool.made.fetch_add(1, Ordering::Relaxed);
                Instance::new(self.pool.shared.clone(), &self.pool.tenant, format!("tenant:{}#{n}", self.pool.tenant))
            }
        }
    }

    /// Gives a stateless instance back for the tenant's next sessions. A
    /// tenant keeps at most one session's worth idle, so the instances alive
    /// stay within what the instance allocator was sized for (see
    /// `server::instance_slots`); the oldest goes first.
    pub fn give_back(&self, instance: Arc<Instance>) {
        if self.pool.stateful.is_none() && !self.pool.shared.guest_memory.is_short() {
            let mut idle = self.pool.idle.lock().expect("idle instances lock");
            if idle.len() >= self.max_instances() {
                // One still busy with a timed-out call goes first, else the oldest.
                let gone = idle.iter().position(|(instance, _)| instance.running_late()).unwrap_or(0);
                idle.remove(gone);
            }
            idle.push((instance, Instant::now()));
        }
    }
}

impl SessionSeat {
    /// A warning of the host's about this tenant's plugin, rate-limited.
    pub fn warn(&self, message: std::fmt::Arguments<'_>) {
        self.pool.shared.warnings(&self.pool.tenant).warn(message);
    }

    /// Counts a plugin output that broke the contract.
    pub fn note_invalid_output(&self) {
        self.pool.shared.stats.invalid_outputs.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for SessionSeat {
    fn drop(&mut self) {
        self.pool.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}
