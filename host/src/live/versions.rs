//! Each plugin name points at its current version, swapped atomically: a
//! new SFTP session takes the version current when it opens and keeps it to
//! its end, so a reload cuts no session. A reload compiles and admits the
//! new version while the old one serves; only a version that passed
//! replaces it. The replaced version drains: it is dropped when its last
//! session ends, or its sessions are closed at the plugin's drain deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use sha2::Digest as _;

use super::source::{plugin_bytes, plugin_settings};
use crate::config::PluginConfig;
use crate::plugin::{Plugin, Runtime};

/// One loaded version of a plugin.
pub struct Version {
    plugin: Arc<Plugin>,
    /// 1 for the version loaded at start, then one more per swap.
    number: u64,
    /// SHA-256 of the component, hex.
    hash: String,
    loaded_at: SystemTime,
    source: Source,
    /// SFTP sessions on this version now.
    sessions: AtomicUsize,
    /// Their holds, so a hand-over can move them with their tenant.
    holds: Mutex<Vec<std::sync::Weak<OnVersion>>>,
}

/// What a version was loaded from: enough to load it again (a rollback).
#[derive(Clone)]
struct Source {
    bytes: Arc<[u8]>,
    config: PluginConfig,
}

impl Version {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Counts a session of `tenant` on this version until the hold is dropped.
    pub fn enter(self: &Arc<Self>, tenant: &str) -> Arc<OnVersion> {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        let hold = Arc::new(OnVersion { version: Mutex::new(self.clone()), tenant: tenant.into() });
        let mut holds = self.holds.lock().expect("holds lock");
        holds.retain(|hold| hold.strong_count() > 0);
        holds.push(Arc::downgrade(&hold));
        hold
    }

    /// The sessions of `tenants` are on `to` now (their state moved there).
    fn move_sessions(self: &Arc<Self>, tenants: &std::collections::HashSet<&str>, to: &Arc<Version>) {
        let holds: Vec<_> = self.holds.lock().expect("holds lock").iter().filter_map(std::sync::Weak::upgrade).collect();
        for hold in holds.into_iter().filter(|hold| tenants.contains(hold.tenant.as_str())) {
            let mut on = hold.version.lock().expect("hold lock");
            if Arc::ptr_eq(&on, self) {
                to.sessions.fetch_add(1, Ordering::SeqCst);
                self.sessions.fetch_sub(1, Ordering::SeqCst);
                to.holds.lock().expect("holds lock").push(Arc::downgrade(&hold));
                *on = to.clone();
            }
        }
    }

    fn summary(&self, drain_deadline: Option<Instant>) -> VersionSummary {
        let caps = self.plugin.capabilities();
        VersionSummary {
            number: self.number,
            backend: caps.name.clone(),
            version: caps.version.clone(),
            hash: self.hash.clone(),
            loaded_at: unix_secs(self.loaded_at),
            sessions: self.sessions(),
            tenants: self.plugin.tenants(),
            idle_instances: self.plugin.idle_instances(),
            traps: self.plugin.traps(),
            drain_deadline_in_secs: drain_deadline.map(|at| at.saturating_duration_since(Instant::now()).as_secs()),
        }
    }
}

/// A session's hold on its version: the version is kept (and counted as in
/// use) while it lives. A hand-over moves it to the next version with its
/// tenant.
pub struct OnVersion {
    version: Mutex<Arc<Version>>,
    tenant: String,
}

impl OnVersion {
    pub fn version(&self) -> Arc<Version> {
        self.version.lock().expect("hold lock").clone()
    }
}

impl Drop for OnVersion {
    fn drop(&mut self) {
        self.version.lock().expect("hold lock").sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A version as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VersionSummary {
    pub number: u64,
    /// What the plugin says it is (`describe`).
    pub backend: String,
    pub version: String,
    pub hash: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    pub sessions: usize,
    pub tenants: usize,
    pub idle_instances: usize,
    pub traps: u64,
    /// A draining version: seconds until its sessions are closed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drain_deadline_in_secs: Option<u64>,
}

/// What one reload did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// Reloads of this plugin tried so far, this one included.
    pub attempt: u64,
    /// `file`, `signal`, `admin`, `upload`, `rollback`.
    pub trigger: String,
    /// `swapped`, `unchanged` or `refused`.
    pub result: String,
    /// Why it was refused, or what it swapped.
    pub message: String,
    /// The version current after it.
    pub number: u64,
    pub hash: String,
    /// From the start of the reload to the swap (or the refusal).
    pub took_ms: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no plugin {0} is loaded")]
    NoSuchPlugin(String),
    #[error("plugin {0} has no earlier version to roll back to")]
    NoPrevious(String),
    /// Reading, admission, compilation or the smoke run refused it: the
    /// old version goes on serving.
    #[error("{0}")]
    Refused(String),
}

/// Where the bytes of a reload come from.
pub enum ReloadFrom {
    /// The plugin's `source`, as configured (now).
    Configured,
    /// A new table for the plugin (SIGHUP): its `source`, loaded with it;
    /// it becomes the plugin's table only if the load is admitted.
    Table(PluginConfig),
    /// A component sent to the admin API.
    Upload(Vec<u8>),
    /// The version before the current one.
    Previous,
}

struct Draining {
    version: Arc<Version>,
    deadline: Option<Instant>,
}

/// One plugin name: its current version, the one a rollback returns to,
/// and those still draining.
pub struct PluginSlot {
    name: String,
    current: ArcSwap<Version>,
    /// The configuration reloads use (SIGHUP may replace it).
    config: Mutex<PluginConfig>,
    /// The hash of what the configured source held when a version was last
    /// loaded from it, and the table it was loaded with.
    configured: Mutex<(String, PluginConfig)>,
    previous: Mutex<Option<Source>>,
    draining: Mutex<Vec<Draining>>,
    last_reload: Mutex<Option<ReloadReport>>,
    /// One reload of a plugin at a time; the next waits for it.
    reloading: tokio::sync::Mutex<()>,
    numbers: AtomicU64,
    attempts: AtomicU64,
}

impl PluginSlot {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version a session opening now gets.
    pub fn current(&self) -> Arc<Version> {
        self.current.load_full()
    }

    pub fn config(&self) -> PluginConfig {
        self.config.lock().expect("plugin config lock").clone()
    }

    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload.lock().expect("last reload lock").clone()
    }

    /// Versions replaced and not yet gone (sessions still on them).
    pub fn draining(&self) -> Vec<Arc<Version>> {
        self.prune();
        self.draining.lock().expect("draining lock").iter().map(|d| d.version.clone()).collect()
    }

    /// Draining versions past their deadline: their sessions must close.
    pub fn overdue(&self) -> Vec<Arc<Version>> {
        self.prune();
        let now = Instant::now();
        let draining = self.draining.lock().expect("draining lock");
        draining.iter().filter(|d| d.deadline.is_some_and(|at| at <= now)).map(|d| d.version.clone()).collect()
    }

    /// Forgets versions no session is on: dropping the last hold frees
    /// their instances and compiled code.
    fn prune(&self) {
        self.draining.lock().expect("draining lock").retain(|d| d.version.sessions() > 0);
    }

    pub fn summary(&self) -> PluginSummary {
        self.prune();
        let draining = self.draining.lock().expect("draining lock");
        PluginSummary {
            name: self.name.clone(),
            current: self.current().summary(None),
            draining: draining.iter().map(|d| d.version.summary(d.deadline)).collect(),
            rollback_available: self.previous.lock().expect("previous lock").is_some(),
            last_reload: self.last_reload(),
        }
    }

    /// Loads a new version and, if it is admitted, makes it current. The
    /// old one drains; on any failure it stays current and the report
    /// says why. It runs to its end on a task of its own: a caller that
    /// stops waiting (an admin client gone) never leaves a swap half-done.
    pub async fn reload(self: &Arc<Self>, runtime: &Arc<Runtime>, from: ReloadFrom, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let (slot, runtime, trigger) = (self.clone(), runtime.clone(), trigger.to_string());
        tokio::spawn(async move { slot.reload_here(&runtime, from, &trigger).await })
            .await
            .unwrap_or_else(|e| Err(ReloadError::Refused(format!("the reload failed: {e}"))))
    }

    async fn reload_here(&self, runtime: &Runtime, from: ReloadFrom, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let started = Instant::now();
        let current = self.current();
        let from_configured = matches!(from, ReloadFrom::Configured | ReloadFrom::Table(_));
        let source = match from {
            ReloadFrom::Configured | ReloadFrom::Table(_) => {
                let config = match from {
                    ReloadFrom::Table(config) => config,
                    _ => self.config(),
                };
                match plugin_bytes(&self.name, &config) {
                    Ok(bytes) => Source { bytes: bytes.into(), config },
                    Err(e) => return Err(self.refused(trigger, started, &current, format!("{e:#}"))),
                }
            }
            ReloadFrom::Upload(bytes) => Source { bytes: bytes.into(), config: self.config() },
            ReloadFrom::Previous => match self.previous.lock().expect("previous lock").clone() {
                Some(previous) => previous,
                None => return Err(ReloadError::NoPrevious(self.name.clone())),
            },
        };
        let hash = content_hash(&source.bytes);
        // A file event or SIGHUP finding the configured file as it was when
        // last loaded leaves an uploaded or rolled-back version in place
        // (an operator's explicit reload does not).
        if from_configured && trigger != "admin" {
            let configured = self.configured.lock().expect("configured lock").clone();
            let is_configured = configured == (hash.clone(), source.config.clone());
            if is_configured && (hash.clone(), source.config.clone()) != (current.hash.clone(), current.source.config.clone()) {
                let message = "the configured file is the one loaded from it before; the running version stays";
                return Ok(self.unrecorded(trigger, "unchanged", message, started, &current));
            }
        }
        if hash == current.hash && source.config == current.source.config {
            let message = "the component and its configuration are those of the current version";
            // A file event of the same content (a rename, a touch) is noise:
            // it leaves the last reload's report as it was.
            if trigger == "file" {
                return Ok(self.unrecorded(trigger, "unchanged", message, started, &current));
            }
            return Ok(self.report(trigger, "unchanged", message.into(), started, &current));
        }
        let loaded = match plugin_settings(&self.name, &source.config) {
            Ok(settings) => runtime.load(&self.name, &source.bytes, settings).await,
            Err(e) => Err(e),
        };
        let plugin = match loaded {
            Ok(plugin) => plugin,
            Err(e) => return Err(self.refused(trigger, started, &current, format!("{e:#}"))),
        };
        let number = self.numbers.fetch_add(1, Ordering::SeqCst) + 1;
        // A tenant-scoped plugin that hands its state over: the new
        // version's sessions of the old one's tenants wait for their state.
        let wait = Duration::from_secs(current.source.config.handover_wait_secs);
        let handover = current.plugin.hands_over_to(&plugin).then(|| current.plugin.prepare_handover(&plugin, wait));
        if handover.is_none() && current.plugin.capabilities().scope == crate::plugin::InstanceScope::Tenant {
            tracing::warn!(
                plugin = %self.name,
                "the new version takes no state from the old one: every tenant starts empty on it (its open sessions stay on the old one)"
            );
        }
        let new = Arc::new(Version {
            plugin,
            number,
            hash,
            loaded_at: SystemTime::now(),
            source,
            sessions: AtomicUsize::new(0),
            holds: Mutex::default(),
        });
        if from_configured {
            *self.configured.lock().expect("configured lock") = (new.hash.clone(), new.source.config.clone());
            self.set_config(new.source.config.clone());
        }
        let old = self.current.swap(new.clone());
        let handed_over = match handover {
            Some(handover) => {
                let report = handover.run().await;
                let moved: std::collections::HashSet<&str> = report.moved.iter().map(|(t, _)| t.as_str()).collect();
                old.move_sessions(&moved, &new);
                Some(report)
            }
            None => None,
        };
        let drain = old.source.config.drain_secs;
        let deadline = (drain > 0).then(|| Instant::now() + Duration::from_secs(drain));
        *self.previous.lock().expect("previous lock") = Some(old.source.clone());
        self.draining.lock().expect("draining lock").push(Draining { version: old.clone(), deadline });
        self.prune();
        let caps = new.plugin.capabilities();
        let mut message = format!(
            "version {} ({} {}) replaces version {} ({} {}); {} sessions drain on the old one",
            new.number,
            caps.name,
            caps.version,
            old.number,
            old.plugin.capabilities().name,
            old.plugin.capabilities().version,
            old.sessions()
        );
        if let Some(report) = &handed_over {
            let bytes: u64 = report.moved.iter().map(|(_, b)| b).sum();
            message.push_str(&format!(
                "; {} tenants moved with their state ({bytes} bytes in {} ms)",
                report.moved.len(),
                report.took.as_millis()
            ));
            for (tenant, why) in &report.stayed {
                message.push_str(&format!("; tenant {tenant} stays on version {}: {why}", old.number));
            }
        } else if caps.scope == crate::plugin::InstanceScope::Tenant {
            message.push_str("; no state is handed over: each tenant starts empty on the new version");
        }
        tracing::info!(plugin = %self.name, trigger, hash = %new.hash, "plugin swapped: {message}");
        Ok(self.report(trigger, "swapped", message, started, &new))
    }

    fn refused(&self, trigger: &str, started: Instant, current: &Version, why: String) -> ReloadError {
        tracing::warn!(plugin = %self.name, trigger, "reload refused, version {} goes on serving: {why}", current.number);
        self.report(trigger, "refused", why.clone(), started, current);
        ReloadError::Refused(why)
    }

    fn report(&self, trigger: &str, result: &str, message: String, started: Instant, current: &Version) -> ReloadReport {
        metrics::counter!("wasftp_plugin_reloads_total", "plugin" => self.name.clone(), "result" => result.to_string())
            .increment(1);
        let report = ReloadReport {
            attempt: self.attempts.fetch_add(1, Ordering::SeqCst) + 1,
            ..self.unrecorded(trigger, result, &message, started, current)
        };
        *self.last_reload.lock().expect("last reload lock") = Some(report.clone());
        report
    }

    fn unrecorded(&self, trigger: &str, result: &str, message: &str, started: Instant, current: &Version) -> ReloadReport {
        ReloadReport {
            attempt: self.attempts.load(Ordering::SeqCst),
            trigger: trigger.into(),
            result: result.into(),
            message: message.into(),
            number: current.number,
            hash: current.hash.clone(),
            took_ms: started.elapsed().as_millis() as u64,
            at: unix_secs(SystemTime::now()),
        }
    }

    /// A new configuration for later reloads (SIGHUP).
    pub fn set_config(&self, config: PluginConfig) {
        *self.config.lock().expect("plugin config lock") = config;
    }
}

/// A plugin as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PluginSummary {
    pub name: String,
    pub current: VersionSummary,
    pub draining: Vec<VersionSummary>,
    pub rollback_available: bool,
    pub last_reload: Option<ReloadReport>,
}

/// Every loaded plugin by name.
pub struct PluginVersions {
    runtime: Arc<Runtime>,
    slots: RwLock<BTreeMap<String, Arc<PluginSlot>>>,
}

impl PluginVersions {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime, slots: RwLock::default() }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Loads a plugin's first version (at start, or a plugin a new
    /// configuration adds) and serves it.
    pub async fn load(&self, name: &str, config: &PluginConfig) -> anyhow::Result<Arc<PluginSlot>> {
        let slot = self.prepare(name, config).await?;
        self.insert(slot.clone());
        Ok(slot)
    }

    /// Serves a plugin `prepare` loaded.
    pub fn insert(&self, slot: Arc<PluginSlot>) {
        self.slots.write().expect("plugin slots lock").insert(slot.name.clone(), slot);
    }

    /// Loads a plugin's first version without serving it yet.
    pub async fn prepare(&self, name: &str, config: &PluginConfig) -> anyhow::Result<Arc<PluginSlot>> {
        let bytes: Arc<[u8]> = plugin_bytes(name, config)?.into();
        let plugin = self.runtime.load(name, &bytes, plugin_settings(name, config)?).await?;
        let hash = content_hash(&bytes);
        let version = Version {
            plugin,
            number: 1,
            hash: hash.clone(),
            loaded_at: SystemTime::now(),
            source: Source { bytes, config: config.clone() },
            sessions: AtomicUsize::new(0),
            holds: Mutex::default(),
        };
        let slot = Arc::new(PluginSlot {
            name: name.into(),
            current: ArcSwap::from_pointee(version),
            config: Mutex::new(config.clone()),
            configured: Mutex::new((hash, config.clone())),
            previous: Mutex::default(),
            draining: Mutex::default(),
            last_reload: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
            numbers: AtomicU64::new(1),
            attempts: AtomicU64::new(0),
        });
        Ok(slot)
    }

    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.read().expect("plugin slots lock").get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<PluginSlot>> {
        self.slots.read().expect("plugin slots lock").values().cloned().collect()
    }

    /// The version a session of plugin `name` opening now gets.
    pub fn current(&self, name: &str) -> Option<Arc<Version>> {
        self.get(name).map(|slot| slot.current())
    }

    pub async fn reload(&self, name: &str, from: ReloadFrom, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let slot = self.get(name).ok_or_else(|| ReloadError::NoSuchPlugin(name.into()))?;
        slot.reload(&self.runtime, from, trigger).await
    }
}

pub fn content_hash(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
