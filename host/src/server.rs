//! Start and stop a wasftp server from Rust: load the config's plugins and
//! users, bind, serve, shut down gracefully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Users;
use crate::config::{Config, PluginConfig, PreopenMode};
use crate::plugin::{
    CallTimeouts, EngineOptions, Grants, Origin, Plugin, PluginSettings, PoolLimits, Preopen, Runtime, bundled,
};
use crate::ssh::{self, Shared, host_keys};

/// Builds a server from a config.
pub struct ServerBuilder {
    config: Config,
    engine: EngineOptions,
}

impl ServerBuilder {
    pub fn new(config: Config) -> Self {
        Self { config, engine: EngineOptions::default() }
    }

    /// Engine settings (cache, pooling); the defaults suit most uses.
    pub fn engine_options(mut self, engine: EngineOptions) -> Self {
        self.engine = engine;
        self
    }

    /// Loads plugins, users and host keys, binds the listener and starts serving.
    pub async fn start(self) -> anyhow::Result<RunningServer> {
        let mut config = self.config;
        config.normalize()?;
        config.validate()?;
        let users = Users::from_config(&config)?;
        anyhow::ensure!(!users.is_empty(), "no users are configured; nobody could log in");
        let keys = host_keys::load(&config.host_keys, &config.state_dir())?;
        let fingerprints = keys.iter().map(host_keys::fingerprint).collect();

        let mut engine = self.engine;
        engine.max_instances = instance_slots(&config, engine.max_instances);
        let runtime = Runtime::new(&engine)?;
        let mut plugins = HashMap::new();
        for (name, plugin) in &config.plugins {
            // Only plugins some user needs are loaded.
            if config.users.iter().any(|u| &u.plugin == name) {
                plugins.insert(name.clone(), load_plugin(&runtime, name, plugin).await?);
            }
        }

        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (force_tx, force_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(&config, users, plugins, keys, shutdown_rx, force_rx));
        let accept = tokio::spawn(ssh::accept_loop(shared.clone(), listener));
        tracing::info!(%local_addr, "wasftp listening");
        Ok(RunningServer {
            local_addr,
            fingerprints,
            shared,
            runtime,
            shutdown_tx,
            force_tx,
            accept,
            grace: Duration::from_secs(config.limits.shutdown_grace_secs),
        })
    }
}

/// Instances the allocator needs room for, from the configured caps: a
/// tenant-scoped plugin holds one per tenant, a stateless one up to
/// `instances_per_session` per session and as many idle per tenant (the
/// scope is known only once the plugin is loaded, so the larger of the two
/// counts), plus its load probe, maintenance and orphan-abort instances.
/// Never below `floor`. Past the pooling allocator's slots the engine
/// allocates on demand (and says so in the log).
fn instance_slots(config: &Config, floor: u32) -> u32 {
    const PER_PLUGIN: usize = 3;
    let sessions = config.limits.max_sessions;
    let mut slots = 0usize;
    for (name, plugin) in &config.plugins {
        if config.users.iter().any(|u| &u.plugin == name) {
            // Stateless: the sessions' instances, and one session's worth idle per tenant.
            let stateless = sessions.saturating_add(plugin.max_tenants).saturating_mul(plugin.instances_per_session);
            slots = slots.saturating_add(plugin.max_tenants.max(stateless)).saturating_add(PER_PLUGIN);
        }
    }
    slots.clamp(floor as usize, u32::MAX as usize) as u32
}

async fn load_plugin(runtime: &Runtime, name: &str, plugin: &PluginConfig) -> anyhow::Result<Arc<Plugin>> {
    let bytes = match plugin.source.strip_prefix("bundled:") {
        Some(bundled_name) => bundled::get(bundled_name)
            .with_context(|| {
                let known: Vec<_> = bundled::names().collect();
                format!("plugin {name}: no bundled plugin {bundled_name:?} (bundled: {known:?})")
            })?
            .to_vec(),
        None => std::fs::read(&plugin.source).with_context(|| format!("plugin {name}: reading {}", plugin.source))?,
    };
    let settings = PluginSettings {
        memory_limit: plugin.memory_limit_mib << 20,
        call_deadline: Duration::from_millis(plugin.call_deadline_ms),
        timeouts: CallTimeouts {
            metadata: Duration::from_secs(plugin.timeouts.metadata_secs),
            data: Duration::from_secs(plugin.timeouts.data_secs),
            commit: Duration::from_secs(plugin.timeouts.commit_secs),
        },
        pools: PoolLimits {
            max_tenants: plugin.max_tenants,
            instances_per_session: plugin.instances_per_session,
            idle_evict: Duration::from_secs(plugin.idle_evict_secs),
            guest_threads_per_tenant: plugin.guest_threads_per_tenant,
        },
        maintain_every: (plugin.maintain_every_secs > 0).then(|| Duration::from_secs(plugin.maintain_every_secs)),
        config: plugin.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        grants: Grants {
            http_allow: plugin
                .http_allow
                .iter()
                .map(|origin| Origin::parse(origin).map_err(|e| anyhow::anyhow!("plugin {name}: http_allow: {e}")))
                .collect::<anyhow::Result<_>>()?,
            preopen: plugin
                .preopen
                .as_ref()
                .map(|p| Preopen { dir: p.dir.clone(), writable: p.mode == PreopenMode::Rw }),
        },
    };
    runtime.load(name, &bytes, settings).await
}

/// A server that is accepting connections.
pub struct RunningServer {
    local_addr: SocketAddr,
    fingerprints: Vec<String>,
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    shutdown_tx: watch::Sender<bool>,
    force_tx: watch::Sender<bool>,
    accept: JoinHandle<()>,
    grace: Duration,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 fingerprints of the host keys.
    pub fn fingerprints(&self) -> &[String] {
        &self.fingerprints
    }

    /// Open SSH connections right now, logged in or not.
    pub fn active_sessions(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Connections that have not logged in yet.
    pub fn unauthenticated_connections(&self) -> usize {
        self.shared.gate.unauthenticated()
    }

    /// Logged-in connections (what `max_sessions` bounds).
    pub fn authenticated_sessions(&self) -> usize {
        self.shared.gate.authenticated()
    }

    /// Threads verifying passwords; each keeps one argon2 buffer.
    pub fn password_check_threads(&self) -> usize {
        self.shared.users.password_check_threads()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Stops accepting, lets in-flight requests finish within the grace
    /// period (unfinished uploads are aborted), then closes what remains.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        let _ = (&mut self.accept).await;
        let deadline = tokio::time::Instant::now() + self.grace + Duration::from_secs(1);
        while self.active_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.force_tx.send(true);
        let cut = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.active_sessions() > 0 && tokio::time::Instant::now() < cut {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!("wasftp stopped");
    }
}
