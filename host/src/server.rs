//! Start and stop a wasftp server from Rust: load the config's plugins and
//! users, bind, serve, shut down gracefully.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Users;
use crate::config::{Config, PluginConfig};
use crate::live::{FileWatch, PluginVersions, ReloadFrom};
use crate::plugin::{EngineOptions, Runtime};
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
        engine.guest_memory_total = engine.guest_memory_total.min(guest_memory_total(&config.limits));
        let runtime = Runtime::new(&engine)?;
        let versions = Arc::new(PluginVersions::new(runtime.clone()));
        for (name, plugin) in &config.plugins {
            // Only plugins some user needs are loaded.
            if config.users.iter().any(|u| &u.plugin == name) {
                warn_of_unknown_tenants(&config, name, plugin);
                versions.load(name, plugin).await?;
            }
        }
        let admin_token = config.admin.listen.map(|_| crate::admin::token(config.admin.token.as_deref())).transpose()?;

        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let admin_listener = match config.admin.listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding the admin API to {addr}"))?),
            None => None,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (force_tx, force_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(&config, users, versions.clone(), keys, shutdown_rx, force_rx));
        let accept = tokio::spawn(ssh::accept_loop(shared.clone(), listener));
        tracing::info!(%local_addr, "wasftp listening");
        let admin_addr = match (admin_listener, admin_token) {
            (Some(listener), Some(token)) => {
                let addr = listener.local_addr()?;
                crate::admin::spawn(listener, shared.clone(), &token);
                tracing::info!(%addr, "admin API listening");
                Some(addr)
            }
            _ => None,
        };
        let file_watch = crate::live::watch_plugin_files(versions.clone())?;
        tokio::spawn(close_overdue_sessions(Arc::downgrade(&shared)));
        Ok(RunningServer {
            local_addr,
            admin_addr,
            fingerprints,
            shared,
            runtime,
            config: tokio::sync::Mutex::new(config.clone()),
            _file_watch: file_watch,
            shutdown_tx,
            force_tx,
            accept,
            grace: Duration::from_secs(config.limits.shutdown_grace_secs),
        })
    }
}

/// Instances the allocator needs room for, from the configured caps, for
/// each plugin some user has: a tenant-scoped plugin holds one per tenant;
/// a stateless one up to `instances_per_session` per storage session and as
/// many idle per tenant (the scope is known only once the plugin is loaded,
/// so the larger of the two counts); and each its load probe, maintenance
/// and orphan-abort instances. A storage session is one SFTP channel: a
/// connection may have `max_channels_per_session` of them. Never below
/// `floor`. Past the pooling allocator's slots the engine allocates on
/// demand (and says so in the log).
///
/// Every count here is a cap enforced at login (sessions of the server,
/// tenant and user; tenants of the plugin) or at channel open, so a client
/// who would need more is refused there, never by a full allocator
/// mid-session.
fn instance_slots(config: &Config, floor: u32) -> u32 {
    const PER_PLUGIN: usize = 3;
    let limits = &config.limits;
    let mut slots = 0usize;
    for (name, plugin) in &config.plugins {
        let users: Vec<_> = config.users.iter().filter(|u| &u.plugin == name).collect();
        if users.is_empty() {
            continue;
        }
        let tenants = users.iter().map(|u| u.tenant()).collect::<HashSet<_>>().len();
        // Users are fixed by the config, so their shares bound the plugin's
        // connections too (an authenticator making users up would not).
        let connections = limits
            .max_sessions
            .min(users.len().saturating_mul(limits.max_sessions_per_user))
            .min(tenants.saturating_mul(limits.max_sessions_per_tenant));
        let sessions = connections.saturating_mul(limits.max_channels_per_session);
        let tenants = tenants.min(plugin.max_tenants);
        // Stateless: the sessions' instances, and one session's worth idle per tenant.
        let stateless = sessions.saturating_add(tenants).saturating_mul(plugin.instances_per_session);
        slots = slots.saturating_add(tenants.max(stateless)).saturating_add(PER_PLUGIN);
    }
    slots.clamp(floor as usize, u32::MAX as usize) as u32
}

/// A tenant given bounds of its own that no user of the plugin belongs to
/// is most likely a typo, which would leave the real tenant on the
/// plugin's bounds: said at start.
fn warn_of_unknown_tenants(config: &Config, name: &str, plugin: &PluginConfig) {
    let known: std::collections::HashSet<&str> = config
        .users
        .iter()
        .filter(|u| u.plugin == name)
        .map(|u| u.tenant.as_deref().unwrap_or(&u.name))
        .collect();
    for tenant in plugin.tenants.keys().chain(plugin.guest_threads_by_tenant.keys()) {
        if !known.contains(tenant.as_str()) {
            tracing::warn!(plugin = name, tenant = %tenant, "bounds are set for a tenant no user of this plugin belongs to");
        }
    }
}

/// The server-wide guest memory: as configured, or three quarters of the
/// memory this process may use (the machine's `MemTotal`, or its cgroup's
/// limit if lower; unbounded where neither can be read).
fn guest_memory_total(limits: &crate::config::Limits) -> u64 {
    if limits.guest_memory_total_mib > 0 {
        return limits.guest_memory_total_mib.saturating_mul(1 << 20);
    }
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    // cgroup v2, then v1 ("max" or a huge number: no limit).
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok());
    match (machine, cgroup) {
        (None, None) => u64::MAX,
        (a, b) => a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX)) / 4 * 3,
    }
}

/// Closes the sessions of plugin versions past their drain deadline, while
/// the server runs.
async fn close_overdue_sessions(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(shared) = shared.upgrade() else { return };
        if *shared.shutdown.borrow() {
            return;
        }
        for slot in shared.versions.all() {
            for version in slot.overdue() {
                let why = format!(
                    "plugin {} version {} was replaced and its drain time is over; reconnect to continue",
                    slot.name(),
                    version.number()
                );
                shared.sessions.close_on_version(&version, &why);
            }
        }
    }
}

/// A server that is accepting connections.
pub struct RunningServer {
    local_addr: SocketAddr,
    /// Where the admin API listens, if it does.
    admin_addr: Option<SocketAddr>,
    fingerprints: Vec<String>,
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    /// The configuration in force (SIGHUP replaces parts of it).
    config: tokio::sync::Mutex<Config>,
    _file_watch: Option<FileWatch>,
    shutdown_tx: watch::Sender<bool>,
    force_tx: watch::Sender<bool>,
    accept: JoinHandle<()>,
    grace: Duration,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The configuration in force.
    pub async fn config(&self) -> Config {
        self.config.lock().await.clone()
    }

    /// Each plugin's versions (reload and rollback go through it).
    pub fn versions(&self) -> &Arc<PluginVersions> {
        &self.shared.versions
    }

    /// Takes a new configuration (SIGHUP): its users and keys from now on;
    /// each plugin whose table changed is reloaded with it (one that is
    /// refused keeps its version and its old table); a plugin it adds is
    /// loaded, and if that fails nothing changes. Listen addresses, host
    /// keys, limits and the admin settings take effect at a restart: what
    /// differs is logged. Returns one line per change.
    pub async fn reload_config(&self, mut new: Config) -> anyhow::Result<Vec<String>> {
        new.normalize()?;
        new.validate()?;
        let mut running = self.config.lock().await;
        let users = Users::from_config(&new)?;
        anyhow::ensure!(!users.is_empty(), "no users are configured; nobody could log in");
        let versions = &self.shared.versions;
        let used = |name: &str| new.users.iter().any(|u| u.plugin == name);
        let mut changes = Vec::new();
        // New plugins first: a failure there leaves everything as it was.
        let mut added = Vec::new();
        for (name, plugin) in new.plugins.iter().filter(|(name, _)| used(name) && versions.get(name).is_none()) {
            added.push((name.clone(), plugin.clone()));
        }
        let mut prepared = Vec::new();
        for (name, plugin) in &added {
            match versions.prepare(name, plugin).await {
                Ok(slot) => prepared.push(slot),
                Err(e) => anyhow::bail!("plugin {name} of the new configuration was not admitted, nothing changed: {e:#}"),
            }
        }
        for slot in prepared {
            changes.push(format!("plugin {}: loaded", slot.name()));
            versions.insert(slot);
        }
        for (name, plugin) in new.plugins.iter().filter(|(name, _)| used(name)) {
            let Some(slot) = versions.get(name) else { continue };
            // Its file may have changed even where its table did not. The
            // table becomes the plugin's only if its load is admitted.
            match slot.reload(versions.runtime(), ReloadFrom::Table(plugin.clone()), "signal").await {
                Ok(report) => changes.push(format!("plugin {name}: {}: {}", report.result, report.message)),
                Err(e) => changes.push(format!("plugin {name}: refused, the running version stays: {e}")),
            }
        }
        self.shared.users.store(users);
        changes.push(format!("users: {} configured", new.users.len()));
        let at_restart = [
            ("listen", running.listen != new.listen),
            ("host_keys", running.host_keys != new.host_keys),
            ("state_dir", running.state_dir != new.state_dir),
            ("limits", format!("{:?}", running.limits) != format!("{:?}", new.limits)),
            ("sftp", format!("{:?}", running.sftp) != format!("{:?}", new.sftp)),
            ("admin", running.admin != new.admin),
        ];
        for (section, _) in at_restart.iter().filter(|(_, differs)| *differs) {
            tracing::warn!("configuration reloaded, but `{section}` changes only at a restart");
            changes.push(format!("{section}: changed, takes effect at a restart"));
        }
        // What applies now is what is in force; the rest waits for a restart.
        let mut in_force = running.clone();
        in_force.users = new.users;
        in_force.plugins = new.plugins;
        *running = in_force;
        for change in &changes {
            tracing::info!("configuration reloaded: {change}");
        }
        Ok(changes)
    }

    /// Reloads every plugin from its configured source (SIGHUP without a
    /// configuration file to read).
    pub async fn reload_plugins(&self) {
        for slot in self.shared.versions.all() {
            let _ = slot.reload(self.shared.versions.runtime(), ReloadFrom::Configured, "signal").await;
        }
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
        self.shared.users.load().password_check_threads()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn user(name: &str, tenant: &str, plugin: &str) -> UserConfig {
        UserConfig {
            name: name.into(),
            password_hash: None,
            authorized_keys: Vec::new(),
            authorized_keys_file: None,
            home: "/".into(),
            plugin: plugin.into(),
            tenant: Some(tenant.into()),
            attributes: Default::default(),
            uid: 1000,
            gid: 1000,
        }
    }

    /// Three users of `memory` in two tenants, default limits.
    fn config() -> Config {
        let mut config = Config::from_toml("").unwrap();
        config.users =
            vec![user("alice", "acme", "memory"), user("bob", "acme", "memory"), user("carol", "globex", "memory")];
        config
    }

    #[test]
    fn every_channel_of_every_connection_counts() {
        let mut config = config();
        // Connections: 3 users x 64 (below 2 tenants x 256 and 1024); 10
        // channels each; 4 instances per channel, and 4 idle per tenant.
        assert_eq!(instance_slots(&config, 0), (3 * 64 * 10 + 2) * 4 + 3);
        config.limits.max_channels_per_session = 1;
        assert_eq!(instance_slots(&config, 0), (3 * 64 + 2) * 4 + 3);
        config.plugins.get_mut("memory").unwrap().instances_per_session = 1;
        assert_eq!(instance_slots(&config, 0), 3 * 64 + 2 + 3);
    }

    #[test]
    fn the_tightest_session_cap_bounds_the_connections() {
        let mut config = config();
        config.limits.max_channels_per_session = 1;
        config.plugins.get_mut("memory").unwrap().instances_per_session = 1;
        config.limits.max_sessions_per_tenant = 50;
        assert_eq!(instance_slots(&config, 0), 2 * 50 + 2 + 3, "two tenants of 50");
        config.limits.max_sessions = 20;
        assert_eq!(instance_slots(&config, 0), 20 + 2 + 3, "the server's 20");
        config.plugins.get_mut("memory").unwrap().max_tenants = 1;
        assert_eq!(instance_slots(&config, 0), 20 + 1 + 3, "one tenant at a time keeps idle instances");
    }

    #[test]
    fn plugins_are_counted_apart_and_only_when_used() {
        let mut config = config();
        config.limits.max_channels_per_session = 2;
        let one = instance_slots(&config, 0);
        config.plugins.insert("s3".into(), PluginConfig { source: "x.wasm".into(), ..PluginConfig::default() });
        assert_eq!(instance_slots(&config, 0), one, "a plugin nobody uses gets no instances");
        config.users.push(user("dave", "initech", "s3"));
        assert_eq!(instance_slots(&config, 0), one + (64 * 2 + 1) * 4 + 3);
    }

    #[test]
    fn never_below_the_floor() {
        let mut config = config();
        config.users.truncate(1);
        config.limits.max_sessions = 1;
        config.limits.max_channels_per_session = 1;
        config.plugins.get_mut("memory").unwrap().instances_per_session = 1;
        assert_eq!(instance_slots(&config, 0), 1 + 1 + 3);
        assert_eq!(instance_slots(&config, 256), 256);
    }
}
