//! The one TOML config file. Every field has a default; an unknown field is
//! an error that names where it is (serde + toml report line and column).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where generated host keys are kept.
    pub state_dir: Option<PathBuf>,
    /// Host private keys (OpenSSH format). Empty: generate ed25519 in `state_dir` once.
    pub host_keys: Vec<PathBuf>,
    pub limits: Limits,
    pub sftp: SftpOptions,
    /// Plugins by name. `memory` (bundled) is always available.
    pub plugins: BTreeMap<String, PluginConfig>,
    pub users: Vec<UserConfig>,
    /// The admin HTTP API (health, metrics, reloads, sessions); off unless
    /// `listen` is set.
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin API listens (e.g. `127.0.0.1:9180`); unset: no admin API.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request but `/healthz` and `/readyz` must
    /// carry; `${NAME}` is taken from the environment. Unset: the
    /// environment variable `WASFTP_ADMIN_TOKEN`. At least 16 characters.
    pub token: Option<String>,
    /// Listen on an address other than loopback. The API speaks plain
    /// HTTP: put it behind a TLS proxy or a private network first.
    pub allow_remote: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2222".parse().expect("valid default address"),
            state_dir: None,
            host_keys: Vec::new(),
            limits: Limits::default(),
            sftp: SftpOptions::default(),
            plugins: BTreeMap::new(),
            users: Vec::new(),
            admin: AdminConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most authenticated SSH connections at once; a login past it is
    /// disconnected with "too many connections".
    pub max_sessions: usize,
    /// Most of them one user may hold, so one user cannot take them all; a
    /// login past it is disconnected with "too many connections for this
    /// user". Above `max_sessions` it changes nothing.
    pub max_sessions_per_user: usize,
    /// Most of them the users of one tenant may hold together; a login past
    /// it is disconnected with "too many connections for this tenant".
    pub max_sessions_per_tenant: usize,
    /// Session channels (each SFTP channel is a storage session of its own)
    /// one connection may have open at once (OpenSSH's MaxSessions); one
    /// more is refused at channel open.
    pub max_channels_per_session: usize,
    /// A connection that has not authenticated after this long is closed
    /// (sshd's LoginGraceTime).
    pub login_grace_secs: u64,
    /// Most connections not yet authenticated, from all addresses (sshd's
    /// MaxStartups). When full, a new connection displaces the oldest one
    /// of the address holding the most.
    pub max_unauthenticated: usize,
    /// Most connections not yet authenticated from one address (sshd's
    /// PerSourceMaxStartups); more from it are refused. Clients that open
    /// many connections at once (rclone: transfers + checkers) need room.
    pub max_unauthenticated_per_ip: usize,
    /// Failed logins from one address, within `auth_ban_secs`, after which
    /// the address is refused for `auth_ban_secs`. 0 = never.
    pub max_auth_failures_per_ip: u32,
    /// How long failures are remembered and an address is refused.
    pub auth_ban_secs: u64,
    /// Password verifications (argon2, ~19 MiB each) running at once; the
    /// rest wait within the login grace time. 0 = the number of cores, at most 4.
    pub password_check_threads: usize,
    /// Linear memory all plugin instances together may hold, in MiB; a
    /// `memory.grow` past it is refused as past an instance's own cap.
    /// 0 = three quarters of the machine's memory.
    pub guest_memory_total_mib: u64,
    /// A session with no traffic for this long is closed.
    pub idle_timeout_secs: u64,
    /// Most open file and directory handles per SFTP session.
    pub max_handles: usize,
    /// Most open files all sessions together may hold. Each may hold what
    /// its plugin keeps open for it (a local folder: a file descriptor of
    /// this process, which every tenant shares); one more OPEN is refused.
    pub max_open_files: usize,
    /// Most of them the sessions of one tenant may hold together, so one
    /// tenant cannot leave the others none.
    pub max_open_files_per_tenant: usize,
    /// Most requests on open handles handled at once per SFTP session
    /// (requests naming paths run one at a time beside them).
    pub max_inflight: usize,
    /// Authentication attempts allowed per connection.
    pub max_auth_attempts: usize,
    /// On shutdown, how long in-flight operations may take to finish.
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            // Room for a parallel client (rclone's transfers and checkers,
            // lftp's mirror) several times over, yet 1/16 of the server.
            max_sessions_per_user: 64,
            // A quarter of the server: a few tenants at their cap still
            // leave most slots to the others.
            max_sessions_per_tenant: 256,
            max_channels_per_session: 10,
            login_grace_secs: 30,
            max_unauthenticated: 100,
            max_unauthenticated_per_ip: 32,
            max_auth_failures_per_ip: 10,
            auth_ban_secs: 600,
            password_check_threads: 0,
            guest_memory_total_mib: 0,
            idle_timeout_secs: 600,
            max_handles: 256,
            // Well below the usual 1 Mi descriptors (the soft limit is
            // raised to the hard one at start), a tenant an eighth of it.
            max_open_files: 16384,
            max_open_files_per_tenant: 2048,
            max_inflight: 64,
            max_auth_attempts: 6,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SetstatPolicy {
    /// Answer OK when the plugin cannot set attributes (WinSCP and `sftp -p` need this).
    #[default]
    Ignore,
    /// Answer OP_UNSUPPORTED.
    Strict,
}

/// Largest server-wide total of upload buffers or read-ahead, in MiB (1 TiB):
/// a bound on typos, not a sizing advice.
const MAX_TOTAL_MIB: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftpOptions {
    /// What SETSTAT/FSETSTAT answer when the plugin says unsupported.
    pub setstat_unsupported: SetstatPolicy,
    /// Upload data one SSH connection may hold in the server's buffers, in
    /// MiB; past it a WRITE goes to the plugin as it is, unbuffered.
    pub upload_buffer_mib: usize,
    /// Upload data all connections together may hold, in MiB; past it, as
    /// past a connection's own budget.
    pub upload_buffer_total_mib: usize,
    /// Upload data the connections of one tenant may hold together, in MiB;
    /// default a quarter of the total.
    pub upload_buffer_tenant_mib: Option<usize>,
    /// Largest file a read-write handle may open, in MiB (it is spooled to
    /// a temporary file under `state_dir`).
    pub spool_max_mib: u64,
    /// What all spool files of the server may hold together, in MiB; past
    /// it a spooling request fails ("spool space is full").
    pub spool_total_mib: u64,
    /// What the spool files of one tenant may hold together, in MiB; past
    /// it its spooling requests fail ("this tenant's spool share (N MiB) is
    /// full"), other tenants' do not. Default a quarter of the total.
    pub spool_tenant_mib: Option<u64>,
    /// Read-ahead chunks one SSH connection may hold, in MiB (a handle read
    /// sequentially holds the chunks its READs in flight touch, up to 16 MiB
    /// either side of the furthest, and one more); 0 turns read-ahead off.
    pub read_ahead_mib: usize,
    /// Read-ahead all connections together may hold, in MiB; past it READs
    /// go straight to the plugin.
    pub read_ahead_total_mib: usize,
    /// Read-ahead the connections of one tenant may hold together, in MiB;
    /// default a quarter of the total.
    pub read_ahead_tenant_mib: Option<usize>,
    /// Most entries a plugin may give one directory listing while its
    /// cursor goes on; past it the listing ends with an error (a plugin
    /// whose listing never ends cannot keep a client reading).
    pub max_listing_entries: u64,
}

impl SftpOptions {
    /// One tenant's share of the server's upload buffers, in MiB.
    pub fn upload_buffer_tenant_share_mib(&self) -> usize {
        self.upload_buffer_tenant_mib.unwrap_or((self.upload_buffer_total_mib / 4).max(1))
    }

    /// One tenant's share of the server's spool space, in MiB.
    pub fn spool_tenant_share_mib(&self) -> u64 {
        self.spool_tenant_mib.unwrap_or((self.spool_total_mib / 4).max(1))
    }

    /// One tenant's share of the server's read-ahead, in MiB.
    pub fn read_ahead_tenant_share_mib(&self) -> usize {
        self.read_ahead_tenant_mib.unwrap_or(self.read_ahead_total_mib / 4)
    }
}

impl Default for SftpOptions {
    fn default() -> Self {
        Self {
            setstat_unsupported: SetstatPolicy::Ignore,
            upload_buffer_mib: 64,
            // Sized for ~1000 sessions on a machine with a few GiB to spare:
            // see the README (Configuration) for why.
            upload_buffer_total_mib: 2048,
            upload_buffer_tenant_mib: None,
            spool_max_mib: 1024,
            spool_total_mib: 8192,
            spool_tenant_mib: None,
            read_ahead_mib: 64,
            read_ahead_total_mib: 1024,
            read_ahead_tenant_mib: None,
            max_listing_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// `bundled:<name>` or a path to a `.wasm` component.
    pub source: String,
    /// Reload the plugin when its file changes (a file `source` only).
    pub watch: bool,
    /// After a reload, how long sessions may stay on the version they
    /// started on, in seconds; then they are closed (open uploads aborted,
    /// never committed half-done). 0: as long as they last.
    pub drain_secs: u64,
    /// A tenant-scoped plugin that hands its state to the next version:
    /// how long a tenant's open uploads may take to end before its state
    /// moves (new uploads wait meanwhile), in seconds. Past it, the tenant
    /// stays on the old version until the next swap.
    pub handover_wait_secs: u64,
    /// Memory cap of one instance, in MiB.
    pub memory_limit_mib: usize,
    /// How long one call may compute, in milliseconds (time the guest
    /// waits in host calls, e.g. on the network, does not count).
    pub call_deadline_ms: u64,
    /// How long one call may take in all, waiting included, by kind.
    pub timeouts: TimeoutsConfig,
    /// Tenants with instances of this plugin at once; a login of one more
    /// is refused ("tenant capacity reached").
    pub max_tenants: usize,
    /// Instances one session of a stateless plugin may use at once (calls
    /// on different instances run in parallel).
    pub instances_per_session: usize,
    /// A stateless instance idle this long is dropped, in seconds.
    pub idle_evict_secs: u64,
    /// Calls of one tenant computing on guest threads at once (calls that
    /// wait in a host call hold none); more wait behind the tenant's own.
    /// Default: twice the cores, at least 4.
    pub guest_threads_per_tenant: usize,
    /// Tenants with a cap of their own, by tenant name (a large tenant
    /// given more, an untrusted one less).
    pub guest_threads_by_tenant: BTreeMap<String, usize>,
    /// How often the plugin's `maintain` runs after the one at load, in
    /// seconds; 0 = only at load.
    pub maintain_every_secs: u64,
    /// Lines per second one tenant's instances may write to the server's
    /// log (its `log` calls and stderr together); past it, lines are dropped
    /// and counted. Bursts of two seconds' worth pass.
    pub log_lines_per_sec: u32,
    /// Bytes per second likewise, in KiB.
    pub log_kib_per_sec: u32,
    /// The largest plugin file admitted, in MiB.
    pub max_component_mib: usize,
    /// How long compiling the plugin may take (wall clock; its CPU time
    /// is limited to a second more), in seconds.
    pub compile_timeout_secs: u64,
    /// How much memory the compiler process may take, in MiB.
    pub compile_memory_mib: u64,
    /// The most one call may copy out of the plugin (its result, or the
    /// arguments of one host call it makes), in KiB; a read may return
    /// what it asked for on top. Past it the call fails before the host
    /// allocates anything, and the instance is replaced.
    pub max_output_kib: usize,
    /// Entries one instance may keep in the host's WASI tables (streams,
    /// pollables, HTTP requests); past it, the call traps.
    pub max_host_resources: usize,
    /// Origins (`scheme://host:port`) the plugin may send HTTP requests to;
    /// anything else is refused. Empty: no `wasi:http` at all, and a plugin
    /// that imports it is refused at start.
    pub http_allow: Vec<String>,
    /// Requests of one tenant's instances in flight at once (until their
    /// response is read or dropped); past it a request is answered
    /// `connection-limit-reached`.
    pub http_requests_per_tenant: usize,
    /// The same for all the plugin's tenants together.
    pub http_requests: usize,
    /// The longest a request waits for its response's head, or between two
    /// pieces of its body, in seconds, whatever the plugin asks for.
    pub http_timeout_secs: u64,
    /// The largest request body, and the largest response body, one
    /// request may carry, in MiB; past it the request fails with
    /// `http-request-body-size` or `http-response-body-size`.
    pub http_body_mib: u64,
    /// Failures (traps, interrupted calls, outputs past their bound) of one
    /// tenant's instances within `breaker_window_secs` that open its
    /// circuit breaker: its calls are then refused at once for
    /// `breaker_cooldown_secs`. 0 turns it off.
    pub breaker_failures: u32,
    pub breaker_window_secs: u64,
    pub breaker_cooldown_secs: u64,
    /// A host directory the plugin sees as `/`.
    pub preopen: Option<PreopenConfig>,
    /// Passed to the plugin's `init`.
    pub config: BTreeMap<String, String>,
    /// Bounds of their own for named tenants (`[plugins.NAME.tenants.T]`):
    /// a large tenant given more, an untrusted one less.
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// What one tenant of a plugin gets instead of the plugin's own setting of
/// the same name; what is not set is the plugin's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub memory_limit_mib: Option<usize>,
    pub call_deadline_ms: Option<u64>,
    pub log_lines_per_sec: Option<u32>,
    pub log_kib_per_sec: Option<u32>,
    pub http_requests_per_tenant: Option<usize>,
    pub guest_threads: Option<usize>,
}

impl PluginConfig {
    /// Replaces `${NAME}` in the plugin's config values, `http_allow` and
    /// its preopen's `dir` with the environment variable NAME, so
    /// credentials, endpoints and folders need not be written in the file.
    fn expand_env(&mut self) -> anyhow::Result<()> {
        for (key, value) in &mut self.config {
            *value = expand_env(value).with_context(|| format!("config key `{key}`"))?;
        }
        for origin in &mut self.http_allow {
            *origin = expand_env(origin).context("http_allow")?;
        }
        if let Some(preopen) = &mut self.preopen {
            let dir = preopen.dir.to_str().context("preopen dir is not UTF-8")?;
            preopen.dir = expand_env(dir).context("preopen dir")?.into();
        }
        Ok(())
    }
}

/// `text` with every `${NAME}` replaced by the environment variable NAME;
/// an unset one is an error naming it (never a value: it may be a secret).
pub fn expand_env(text: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').context("`${` without its closing `}`")?;
        let name = &after[..end];
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "`${{{name}}}` is not an environment variable name"
        );
        let value = std::env::var(name).map_err(|_| anyhow::anyhow!("the environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreopenConfig {
    pub dir: PathBuf,
    #[serde(default)]
    pub mode: PreopenMode,
    /// Each tenant gets `dir/<tenant>` (made on first use) instead of `dir`.
    #[serde(default)]
    pub per_tenant: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PreopenMode {
    /// Read only.
    #[default]
    Ro,
    /// Read and write.
    Rw,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            source: String::new(),
            watch: true,
            drain_secs: 3600,
            handover_wait_secs: 30,
            memory_limit_mib: 256,
            call_deadline_ms: 5000,
            timeouts: TimeoutsConfig::default(),
            max_tenants: 256,
            instances_per_session: 4,
            idle_evict_secs: 60,
            guest_threads_per_tenant: crate::plugin::default_guest_threads_per_tenant(),
            guest_threads_by_tenant: BTreeMap::new(),
            maintain_every_secs: 3600,
            log_lines_per_sec: 100,
            log_kib_per_sec: 64,
            max_component_mib: 64,
            compile_timeout_secs: crate::plugin::CompileLimits::default().timeout.as_secs(),
            compile_memory_mib: crate::plugin::CompileLimits::default().memory_bytes >> 20,
            max_output_kib: crate::plugin::HostBounds::default().output_bytes >> 10,
            max_host_resources: crate::plugin::HostBounds::default().host_resources,
            http_allow: Vec::new(),
            http_requests_per_tenant: crate::plugin::HttpLimits::default().requests_per_tenant,
            http_requests: crate::plugin::HttpLimits::default().requests,
            http_timeout_secs: crate::plugin::HttpLimits::default().timeout.as_secs(),
            http_body_mib: crate::plugin::HttpLimits::default().body_bytes >> 20,
            breaker_failures: crate::plugin::BreakerLimits::default().failures,
            breaker_window_secs: crate::plugin::BreakerLimits::default().window.as_secs(),
            breaker_cooldown_secs: crate::plugin::BreakerLimits::default().cooldown.as_secs(),
            preopen: None,
            config: BTreeMap::new(),
            tenants: BTreeMap::new(),
        }
    }
}

/// Wall-clock limits of plugin calls, in seconds. Past one, the request
/// fails; a call that had started is interrupted there, and its instance
/// dropped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Lookups, listings, opening files, small changes.
    pub metadata_secs: u64,
    /// One read or write of content.
    pub data_secs: u64,
    /// Completing an upload, renaming, copying (object storage: minutes).
    pub commit_secs: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self { metadata_secs: 30, data_secs: 120, commit_secs: 600 }
    }
}

impl PluginConfig {
    /// The bundled memory plugin; it holds whole files, so it gets a larger cap.
    pub fn bundled_memory() -> Self {
        Self { source: "bundled:memory".into(), memory_limit_mib: 2048, ..Self::default() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Argon2 PHC string (`wasftp hash-password` prints one).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// authorized_keys lines.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// A file of authorized_keys lines.
    #[serde(default)]
    pub authorized_keys_file: Option<PathBuf>,
    /// The user's root inside the plugin's namespace; `..` never leaves it.
    /// Normalised when the config is read (`/data//` is `/data`).
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_plugin")]
    pub plugin: String,
    /// Defaults to the user name.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Passed to the plugin in the session context.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default = "default_id")]
    pub uid: u32,
    #[serde(default = "default_id")]
    pub gid: u32,
}

fn default_home() -> String {
    "/".into()
}
fn default_plugin() -> String {
    "memory".into()
}
fn default_id() -> u32 {
    1000
}

impl UserConfig {
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.name)
    }
}

/// `home` as the plugin contract wants paths: absolute, with no empty or
/// `.` segments (a trailing `/`, `//` or `/./` would make some). A `..` is
/// refused, not resolved: such a home was surely meant to be elsewhere.
pub fn normalize_home(home: &str) -> anyhow::Result<String> {
    anyhow::ensure!(home.starts_with('/'), "home {home:?} must be an absolute path");
    anyhow::ensure!(!home.contains('\0'), "home {home:?} contains NUL");
    let mut segments = Vec::new();
    for segment in home.split('/') {
        match segment {
            "" | "." => {}
            ".." => anyhow::bail!("home {home:?} must not contain `..`"),
            name => segments.push(name),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

impl Config {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let mut config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.plugins.entry("memory".into()).or_insert_with(PluginConfig::bundled_memory);
        for (name, plugin) in &mut config.plugins {
            plugin.expand_env().with_context(|| format!("plugin {name}"))?;
        }
        if let Some(token) = &mut config.admin.token {
            *token = expand_env(token).context("admin token")?;
        }
        config.normalize()?;
        config.validate()?;
        Ok(config)
    }

    /// Puts what may be written several ways in its one form: users' homes
    /// (see [`normalize_home`]). `from_toml` does it; the server does it
    /// again for a config built in code.
    pub fn normalize(&mut self) -> anyhow::Result<()> {
        for user in &mut self.users {
            user.home = normalize_home(&user.home).with_context(|| format!("user {}", user.name))?;
        }
        Ok(())
    }

    /// Checks what serde cannot: references between sections and ranges.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for user in &self.users {
            anyhow::ensure!(!user.name.is_empty(), "a user has an empty name");
            anyhow::ensure!(names.insert(&user.name), "user {} is defined twice", user.name);
            // The empty tenant is the host's own (probe, maintenance): its
            // queue and log rate must not be a user's.
            anyhow::ensure!(user.tenant.as_deref() != Some(""), "user {}: tenant must not be empty", user.name);
            anyhow::ensure!(
                self.plugins.contains_key(&user.plugin),
                "user {}: plugin {:?} is not defined in [plugins]",
                user.name,
                user.plugin
            );
            if self.plugins[&user.plugin].preopen.as_ref().is_some_and(|p| p.per_tenant) {
                crate::plugin::tenant_folder_name(user.tenant())
                    .map_err(|e| anyhow::anyhow!("user {}: plugin {} gives each tenant a folder: {e}", user.name, user.plugin))?;
            }
            let home = normalize_home(&user.home).with_context(|| format!("user {}", user.name))?;
            anyhow::ensure!(home == user.home, "user {}: home {:?} is not normalised (Config::normalize)", user.name, user.home);
        }
        if let Some(listen) = self.admin.listen {
            anyhow::ensure!(
                listen.ip().is_loopback() || self.admin.allow_remote,
                "admin listen {listen} is not a loopback address: the admin API speaks plain HTTP; \
                 set admin.allow_remote = true once a TLS proxy or a private network is in front of it"
            );
        }
        for (name, plugin) in &self.plugins {
            anyhow::ensure!(!plugin.source.is_empty(), "plugin {name}: `source` is required");
            if let Some(preopen) = &plugin.preopen {
                // Not whatever folder the server happens to be started in.
                anyhow::ensure!(preopen.dir.is_absolute(), "plugin {name}: preopen dir {:?} must be absolute", preopen.dir);
            }
            if plugin.preopen.as_ref().is_some_and(|p| p.per_tenant) {
                // On a case-insensitive filesystem two such tenants would share one folder.
                let mut folders = std::collections::HashMap::new();
                for user in self.users.iter().filter(|u| &u.plugin == name) {
                    let tenant = user.tenant();
                    if let Some(other) = folders.insert(tenant.to_lowercase(), tenant) {
                        anyhow::ensure!(
                            other == tenant,
                            "plugin {name} gives each tenant a folder: tenants {other:?} and {tenant:?} differ only in case"
                        );
                    }
                }
            }
            anyhow::ensure!(
                (1..=4096).contains(&plugin.memory_limit_mib),
                "plugin {name}: memory_limit_mib must be 1..=4096"
            );
            anyhow::ensure!(
                (10..=3_600_000).contains(&plugin.call_deadline_ms),
                "plugin {name}: call_deadline_ms must be 10..=3600000"
            );
            let t = &plugin.timeouts;
            anyhow::ensure!(
                t.metadata_secs > 0 && t.data_secs > 0 && t.commit_secs > 0,
                "plugin {name}: timeouts must be at least 1 second"
            );
            anyhow::ensure!((1..=65_536).contains(&plugin.max_tenants), "plugin {name}: max_tenants must be 1..=65536");
            anyhow::ensure!(
                (1..=64).contains(&plugin.instances_per_session),
                "plugin {name}: instances_per_session must be 1..=64"
            );
            anyhow::ensure!(
                (1..=4096).contains(&plugin.guest_threads_per_tenant),
                "plugin {name}: guest_threads_per_tenant must be 1..=4096"
            );
            anyhow::ensure!(
                (1..=1_000_000).contains(&plugin.log_lines_per_sec),
                "plugin {name}: log_lines_per_sec must be 1..=1000000"
            );
            anyhow::ensure!((1..=65_536).contains(&plugin.log_kib_per_sec), "plugin {name}: log_kib_per_sec must be 1..=65536");
            anyhow::ensure!((1..=4096).contains(&plugin.max_component_mib), "plugin {name}: max_component_mib must be 1..=4096");
            anyhow::ensure!((1..=3600).contains(&plugin.compile_timeout_secs), "plugin {name}: compile_timeout_secs must be 1..=3600");
            anyhow::ensure!((256..=65536).contains(&plugin.compile_memory_mib), "plugin {name}: compile_memory_mib must be 256..=65536");
            anyhow::ensure!(
                (1024..=1 << 20).contains(&plugin.max_output_kib),
                "plugin {name}: max_output_kib must be 1024..=1048576 (a listing page and an HTTP body chunk must fit)"
            );
            anyhow::ensure!(
                (1..=plugin.http_requests).contains(&plugin.http_requests_per_tenant) && plugin.http_requests <= 100_000,
                "plugin {name}: http_requests_per_tenant must be 1..=http_requests, and http_requests at most 100000"
            );
            anyhow::ensure!(
                plugin.breaker_failures <= 100_000
                    && (1..=86_400).contains(&plugin.breaker_window_secs)
                    && (1..=86_400).contains(&plugin.breaker_cooldown_secs),
                "plugin {name}: breaker_failures must be 0..=100000, breaker_window_secs and breaker_cooldown_secs 1..=86400"
            );
            anyhow::ensure!(
                (1..=3600).contains(&plugin.http_timeout_secs),
                "plugin {name}: http_timeout_secs must be 1..=3600"
            );
            anyhow::ensure!(
                (1..=1 << 20).contains(&plugin.http_body_mib),
                "plugin {name}: http_body_mib must be 1..=1048576"
            );
            anyhow::ensure!(
                (64..=1_000_000).contains(&plugin.max_host_resources),
                "plugin {name}: max_host_resources must be 64..=1000000"
            );
            for (tenant, cap) in &plugin.guest_threads_by_tenant {
                anyhow::ensure!(
                    (1..=4096).contains(cap),
                    "plugin {name}: guest_threads_by_tenant.{tenant} must be 1..=4096"
                );
            }
            for (tenant, t) in &plugin.tenants {
                let at = format!("plugin {name}: tenants.{tenant}");
                anyhow::ensure!(!tenant.is_empty(), "plugin {name}: a tenant's name is empty");
                anyhow::ensure!(t.memory_limit_mib.is_none_or(|v| (1..=4096).contains(&v)), "{at}.memory_limit_mib must be 1..=4096");
                anyhow::ensure!(
                    t.call_deadline_ms.is_none_or(|v| (10..=3_600_000).contains(&v)),
                    "{at}.call_deadline_ms must be 10..=3600000"
                );
                anyhow::ensure!(t.log_lines_per_sec.is_none_or(|v| (1..=1_000_000).contains(&v)), "{at}.log_lines_per_sec must be 1..=1000000");
                anyhow::ensure!(t.log_kib_per_sec.is_none_or(|v| (1..=65_536).contains(&v)), "{at}.log_kib_per_sec must be 1..=65536");
                anyhow::ensure!(
                    t.http_requests_per_tenant.is_none_or(|v| (1..=plugin.http_requests).contains(&v)),
                    "{at}.http_requests_per_tenant must be 1..=http_requests"
                );
                anyhow::ensure!(t.guest_threads.is_none_or(|v| (1..=4096).contains(&v)), "{at}.guest_threads must be 1..=4096");
                anyhow::ensure!(
                    t.guest_threads.is_none() || !plugin.guest_threads_by_tenant.contains_key(tenant),
                    "{at}.guest_threads and guest_threads_by_tenant.{tenant} are both set; keep one"
                );
            }
            for origin in &plugin.http_allow {
                crate::plugin::Origin::parse(origin).map_err(|e| anyhow::anyhow!("plugin {name}: http_allow: {e}"))?;
            }
        }
        let l = &self.limits;
        anyhow::ensure!(l.max_sessions > 0, "limits.max_sessions must be at least 1");
        // Above max_sessions a share is simply not the tighter cap, so a
        // config that only lowers max_sessions keeps working.
        anyhow::ensure!(l.max_sessions_per_user > 0, "limits.max_sessions_per_user must be at least 1");
        anyhow::ensure!(l.max_sessions_per_tenant > 0, "limits.max_sessions_per_tenant must be at least 1");
        anyhow::ensure!(
            (1..=1024).contains(&l.max_channels_per_session),
            "limits.max_channels_per_session must be 1..=1024"
        );
        anyhow::ensure!(l.max_handles > 0, "limits.max_handles must be at least 1");
        anyhow::ensure!(
            l.max_open_files > 0 && l.max_open_files_per_tenant > 0,
            "limits.max_open_files and max_open_files_per_tenant must be at least 1"
        );
        anyhow::ensure!((1..=1024).contains(&l.max_inflight), "limits.max_inflight must be 1..=1024");
        anyhow::ensure!(l.idle_timeout_secs > 0, "limits.idle_timeout_secs must be at least 1");
        anyhow::ensure!(l.max_auth_attempts > 0, "limits.max_auth_attempts must be at least 1");
        anyhow::ensure!(l.login_grace_secs > 0, "limits.login_grace_secs must be at least 1");
        // The gate scans the waiting connections when it is full.
        anyhow::ensure!(
            (1..=65_536).contains(&l.max_unauthenticated),
            "limits.max_unauthenticated must be 1..=65536"
        );
        anyhow::ensure!(
            (1..=l.max_unauthenticated).contains(&l.max_unauthenticated_per_ip),
            "limits.max_unauthenticated_per_ip must be 1..=max_unauthenticated"
        );
        anyhow::ensure!(l.auth_ban_secs > 0, "limits.auth_ban_secs must be at least 1");
        anyhow::ensure!(l.password_check_threads <= 64, "limits.password_check_threads must be 0..=64");
        anyhow::ensure!(
            l.guest_memory_total_mib == 0 || (64..=1 << 30).contains(&l.guest_memory_total_mib),
            "limits.guest_memory_total_mib must be 0 (three quarters of the machine's memory) or 64..=1073741824"
        );
        anyhow::ensure!(
            (1..=4096).contains(&self.sftp.upload_buffer_mib),
            "sftp.upload_buffer_mib must be 1..=4096"
        );
        let sftp = &self.sftp;
        anyhow::ensure!(
            (1..=MAX_TOTAL_MIB).contains(&sftp.upload_buffer_total_mib),
            "sftp.upload_buffer_total_mib must be 1..={MAX_TOTAL_MIB}"
        );
        anyhow::ensure!(
            (1..=sftp.upload_buffer_total_mib).contains(&sftp.upload_buffer_tenant_share_mib()),
            "sftp.upload_buffer_tenant_mib must be 1..=upload_buffer_total_mib"
        );
        anyhow::ensure!(sftp.spool_max_mib > 0, "sftp.spool_max_mib must be at least 1");
        anyhow::ensure!(sftp.spool_total_mib > 0, "sftp.spool_total_mib must be at least 1");
        anyhow::ensure!(
            (1..=sftp.spool_total_mib).contains(&sftp.spool_tenant_share_mib()),
            "sftp.spool_tenant_mib must be 1..=spool_total_mib"
        );
        anyhow::ensure!(sftp.read_ahead_mib <= 4096, "sftp.read_ahead_mib must be 0..=4096");
        anyhow::ensure!(
            sftp.read_ahead_total_mib <= MAX_TOTAL_MIB,
            "sftp.read_ahead_total_mib must be 0..={MAX_TOTAL_MIB}"
        );
        anyhow::ensure!(
            sftp.read_ahead_tenant_share_mib() <= sftp.read_ahead_total_mib,
            "sftp.read_ahead_tenant_mib must be 0..=read_ahead_total_mib"
        );
        anyhow::ensure!(
            (1..=100_000_000).contains(&sftp.max_listing_entries),
            "sftp.max_listing_entries must be 1..=100000000"
        );
        Ok(())
    }

    /// The state directory: configured, or `$XDG_STATE_HOME/wasftp`, or `~/.local/state/wasftp`.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(dir).join("wasftp");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".local/state/wasftp"),
            None => PathBuf::from(".wasftp-state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_values_take_environment_variables() {
        let home = std::env::var("HOME").expect("HOME is set");
        assert_eq!(expand_env("at ${HOME}/x and ${HOME}").unwrap(), format!("at {home}/x and {home}"));
        assert_eq!(expand_env("no variables").unwrap(), "no variables");
        let unset = expand_env("${WASFTP_TEST_SURELY_UNSET_VARIABLE}").unwrap_err().to_string();
        assert!(unset.contains("WASFTP_TEST_SURELY_UNSET_VARIABLE is not set"), "{unset}");
        assert!(expand_env("${HOME").is_err());
        assert!(expand_env("${not a name}").is_err());
        let text = "[plugins.p]\nsource = \"bundled:memory\"\nhttp_allow = [\"http://127.0.0.1:${WASFTP_TEST_SURELY_UNSET_VARIABLE}\"]\n";
        let refused = format!("{:#}", Config::from_toml(text).unwrap_err());
        assert!(refused.contains("plugin p") && refused.contains("http_allow"), "{refused}");
        let text = "[plugins.p]\nsource = \"bundled:localfs\"\npreopen = { dir = \"${HOME}/sftp\", mode = \"rw\" }\n";
        assert_eq!(Config::from_toml(text).unwrap().plugins["p"].preopen.as_ref().unwrap().dir, Path::new(&home).join("sftp"));
    }

    #[test]
    fn empty_config_has_defaults_and_memory_plugin() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(config.limits.max_sessions, 1024);
        assert_eq!(config.limits.login_grace_secs, 30);
        assert!(config.plugins.contains_key("memory"));
    }

    #[test]
    fn unknown_field_is_an_error_naming_where() {
        let err = Config::from_toml("[limits]\nmax_sesions = 3\n").unwrap_err().to_string();
        assert!(err.contains("max_sesions"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn connection_limits_are_validated() {
        let err = Config::from_toml("[limits]\nlogin_grace_secs = 0\n").unwrap_err().to_string();
        assert!(err.contains("login_grace_secs"), "{err}");
        let err = Config::from_toml("[limits]\nmax_unauthenticated = 5\nmax_unauthenticated_per_ip = 6\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_unauthenticated_per_ip"), "{err}");
        let config = Config::from_toml("[limits]\nmax_auth_failures_per_ip = 0\nauth_ban_secs = 5\n").unwrap();
        assert_eq!(config.limits.max_auth_failures_per_ip, 0);
    }

    #[test]
    fn session_shares_have_defaults_below_max_sessions_and_are_validated() {
        let limits = Config::from_toml("").unwrap().limits;
        assert_eq!((limits.max_sessions_per_user, limits.max_sessions_per_tenant), (64, 256));
        assert!(limits.max_sessions_per_user < limits.max_sessions_per_tenant);
        assert!(limits.max_sessions_per_tenant < limits.max_sessions);
        assert_eq!(limits.max_channels_per_session, 10);
        for field in ["max_sessions_per_user", "max_sessions_per_tenant", "max_channels_per_session"] {
            let err = Config::from_toml(&format!("[limits]\n{field} = 0\n")).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        // Lowering only max_sessions leaves the shares valid (they stop binding).
        let config = Config::from_toml("[limits]\nmax_sessions = 8\n").unwrap();
        assert_eq!(config.limits.max_sessions_per_user, 64);
    }

    #[test]
    fn grants_are_parsed_and_checked() {
        let config = Config::from_toml(
            "[plugins.s3]\nsource = \"x.wasm\"\nhttp_allow = [\"http://127.0.0.1:3900\"]\n\
             preopen = { dir = \"/srv\", mode = \"rw\" }\n",
        )
        .unwrap();
        let s3 = &config.plugins["s3"];
        assert_eq!(s3.http_allow, ["http://127.0.0.1:3900"]);
        assert_eq!(s3.preopen.as_ref().unwrap().mode, PreopenMode::Rw);
        let err = Config::from_toml("[plugins.s3]\nsource = \"x.wasm\"\nhttp_allow = [\"http://h:1/bucket\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_allow") && err.contains("without a path"), "{err}");
        let err = Config::from_toml("[plugins.s3]\nsource = \"x.wasm\"\npreopen = { dir = \"/srv\", mode = \"rwx\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rwx"), "{err}");
    }

    #[test]
    fn a_folder_per_tenant_needs_tenants_that_name_one() {
        let plugin = "[plugins.files]\nsource = \"bundled:localfs\"\npreopen = { dir = \"/srv/sftp\", mode = \"rw\", per_tenant = true }\n";
        let user = |tenant: &str| format!("{plugin}[[users]]\nname = \"a\"\nplugin = \"files\"\ntenant = {tenant:?}\n");
        let config = Config::from_toml(&user("acme")).unwrap();
        assert!(config.plugins["files"].preopen.as_ref().unwrap().per_tenant);
        for bad in ["..", "a/b", "."] {
            let err = format!("{:#}", Config::from_toml(&user(bad)).unwrap_err());
            assert!(err.contains("gives each tenant a folder") && err.contains("cannot name a folder"), "{bad:?}: {err}");
        }
        // Without per_tenant the tenant names no folder.
        let shared = user("a/b").replace(", per_tenant = true", "");
        assert!(Config::from_toml(&shared).is_ok());
        // Two tenants that one case-insensitive folder name would join.
        let twins = format!("{}[[users]]\nname = \"b\"\nplugin = \"files\"\ntenant = \"ACME\"\n", user("acme"));
        let err = format!("{:#}", Config::from_toml(&twins).unwrap_err());
        assert!(err.contains("differ only in case"), "{err}");
        // A relative folder would be wherever the server was started.
        let relative = user("acme").replace("/srv/sftp", "srv/sftp");
        let err = format!("{:#}", Config::from_toml(&relative).unwrap_err());
        assert!(err.contains("must be absolute"), "{err}");
    }

    #[test]
    fn homes_are_normalised_and_may_not_climb() {
        let home = |home: &str| Config::from_toml(&format!("[[users]]\nname = \"a\"\nhome = {home:?}\n"));
        for (written, normal) in [
            ("/data/", "/data"),
            ("/data//", "/data"),
            ("//data/./x/", "/data/x"),
            ("/./", "/"),
            ("/", "/"),
        ] {
            assert_eq!(home(written).unwrap().users[0].home, normal, "home {written:?}");
        }
        for climbing in ["/data/..", "/../data", "/a/../b"] {
            let err = format!("{:#}", home(climbing).unwrap_err());
            assert!(err.contains("user a") && err.contains("`..`"), "{climbing}: {err}");
        }
        let err = format!("{:#}", home("data").unwrap_err());
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn tenant_shares_default_to_a_quarter_and_fit_in_their_total() {
        let sftp = Config::from_toml("").unwrap().sftp;
        assert_eq!(
            (sftp.upload_buffer_tenant_share_mib(), sftp.read_ahead_tenant_share_mib(), sftp.spool_tenant_share_mib()),
            (512, 256, 2048)
        );
        let sftp = Config::from_toml("[sftp]\nspool_total_mib = 100\nspool_tenant_mib = 100\n").unwrap().sftp;
        assert_eq!((sftp.spool_tenant_share_mib(), sftp.upload_buffer_tenant_share_mib()), (100, 512));
        for (text, field) in [
            ("spool_total_mib = 100\nspool_tenant_mib = 101", "spool_tenant_mib"),
            ("spool_tenant_mib = 0", "spool_tenant_mib"),
            ("upload_buffer_total_mib = 10\nupload_buffer_tenant_mib = 11", "upload_buffer_tenant_mib"),
            ("upload_buffer_total_mib = 0", "upload_buffer_total_mib"),
            ("read_ahead_total_mib = 0\nread_ahead_tenant_mib = 1", "read_ahead_tenant_mib"),
        ] {
            let err = Config::from_toml(&format!("[sftp]\n{text}\n")).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let off = Config::from_toml("[sftp]\nread_ahead_total_mib = 0\n").unwrap().sftp;
        assert_eq!(off.read_ahead_tenant_share_mib(), 0, "no read-ahead at all is allowed");
    }

    #[test]
    fn a_tenant_may_have_bounds_of_its_own() {
        let base = "[plugins.p]\nsource = \"bundled:memory\"\n";
        let text = format!(
            "{base}[plugins.p.tenants.big]\nmemory_limit_mib = 4096\ncall_deadline_ms = 20000\nlog_lines_per_sec = 1000\n\
             http_requests_per_tenant = 128\nguest_threads = 16\n[plugins.p.tenants.small]\nmemory_limit_mib = 16\n"
        );
        let config = Config::from_toml(&text).unwrap();
        let tenants = &config.plugins["p"].tenants;
        assert_eq!(tenants["big"].memory_limit_mib, Some(4096));
        assert_eq!(tenants["big"].guest_threads, Some(16));
        assert_eq!(tenants["small"], TenantConfig { memory_limit_mib: Some(16), ..TenantConfig::default() });
        for (line, field) in [
            ("memory_limit_mib = 0", "tenants.t.memory_limit_mib"),
            ("call_deadline_ms = 1", "tenants.t.call_deadline_ms"),
            ("log_kib_per_sec = 0", "tenants.t.log_kib_per_sec"),
            ("http_requests_per_tenant = 100000", "tenants.t.http_requests_per_tenant"),
            ("guest_threads = 0", "tenants.t.guest_threads"),
            ("max_tenants = 3", "unknown field"),
        ] {
            let err = Config::from_toml(&format!("{base}[plugins.p.tenants.t]\n{line}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(field), "{line}: {err:#}");
        }
        let both = format!("{base}guest_threads_by_tenant = {{ t = 2 }}\n[plugins.p.tenants.t]\nguest_threads = 3\n");
        assert!(Config::from_toml(&both).unwrap_err().to_string().contains("both set"));
    }

    #[test]
    fn a_tenant_may_have_a_guest_thread_cap_of_its_own() {
        let base = "[plugins.p]\nsource = \"bundled:memory\"\nguest_threads_per_tenant = 4\n";
        let config = Config::from_toml(&format!("{base}guest_threads_by_tenant = {{ acme = 1, big = 16 }}\n")).unwrap();
        let plugin = &config.plugins["p"];
        assert_eq!(plugin.guest_threads_by_tenant.get("acme"), Some(&1));
        assert_eq!(plugin.guest_threads_by_tenant.get("big"), Some(&16));
        let err = Config::from_toml(&format!("{base}guest_threads_by_tenant = {{ acme = 0 }}\n")).unwrap_err().to_string();
        assert!(err.contains("guest_threads_by_tenant.acme"), "{err}");
    }

    #[test]
    fn an_empty_tenant_is_refused() {
        let err = Config::from_toml("[[users]]\nname = \"a\"\nplugin = \"memory\"\ntenant = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("user a: tenant must not be empty"), "{err}");
    }

    #[test]
    fn user_with_unknown_plugin_is_rejected() {
        let err = Config::from_toml("[[users]]\nname = \"a\"\nplugin = \"nope\"\n").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
