//! The connections being served, as an operator sees them (who, from where,
//! since when, how many bytes, on which plugin version), and closing one:
//! by an administrator, or because the plugin version it is on reached its
//! drain deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::live::{OnVersion, Version};
use crate::sftp::Traffic;

/// Every connection open now, by id.
#[derive(Default)]
pub struct SessionTable {
    connections: Mutex<BTreeMap<u64, Arc<ConnectionRecord>>>,
}

/// One connection.
pub struct ConnectionRecord {
    id: u64,
    peer: SocketAddr,
    started: SystemTime,
    /// Set at login.
    login: OnceLock<Login>,
    traffic: Arc<Traffic>,
    /// The plugin version each of its SFTP channels is on, while they run.
    channels: Mutex<Vec<Weak<OnVersion>>>,
    /// Turns to `Some(why)` when the connection must close.
    close: watch::Sender<Option<String>>,
}

struct Login {
    user: String,
    tenant: String,
    plugin: String,
}

/// A logged-in connection as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub tenant: String,
    pub plugin: String,
    pub peer: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
    /// SFTP payload: bytes written by the client, and read.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The plugin version of each SFTP channel open on it.
    pub plugin_versions: Vec<u64>,
}

impl SessionTable {
    pub fn register(&self, id: u64, peer: SocketAddr) -> Arc<ConnectionRecord> {
        let record = Arc::new(ConnectionRecord {
            id,
            peer,
            started: SystemTime::now(),
            login: OnceLock::new(),
            traffic: Arc::default(),
            channels: Mutex::default(),
            close: watch::channel(None).0,
        });
        self.connections.lock().expect("session table lock").insert(id, record.clone());
        record
    }

    pub fn remove(&self, id: u64) {
        self.connections.lock().expect("session table lock").remove(&id);
    }

    fn records(&self) -> Vec<Arc<ConnectionRecord>> {
        self.connections.lock().expect("session table lock").values().cloned().collect()
    }

    /// Logged-in connections.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.records().iter().filter_map(|record| record.info()).collect()
    }

    /// Asks a logged-in connection to close; false if there is none by that id.
    pub fn close(&self, id: u64, why: &str) -> bool {
        let record = self.connections.lock().expect("session table lock").get(&id).cloned();
        match record {
            Some(record) if record.login.get().is_some() => {
                record.close(why);
                true
            }
            _ => false,
        }
    }

    /// Closes every connection with an SFTP channel on `version`; how many.
    pub fn close_on_version(&self, version: &Arc<Version>, why: &str) -> usize {
        let mut closed = 0;
        for record in self.records() {
            if record.versions().iter().any(|on| Arc::ptr_eq(on, version)) {
                record.close(why);
                closed += 1;
            }
        }
        closed
    }
}

impl ConnectionRecord {
    pub fn logged_in(&self, user: &str, tenant: &str, plugin: &str) {
        let _ = self.login.set(Login { user: user.into(), tenant: tenant.into(), plugin: plugin.into() });
    }

    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }

    /// An SFTP channel on a plugin version, while `on` lives.
    pub fn add_channel(&self, on: &Arc<OnVersion>) {
        let mut channels = self.channels.lock().expect("channels lock");
        channels.retain(|channel| channel.strong_count() > 0);
        channels.push(Arc::downgrade(on));
    }

    fn versions(&self) -> Vec<Arc<Version>> {
        let channels = self.channels.lock().expect("channels lock");
        channels.iter().filter_map(Weak::upgrade).map(|on| on.version()).collect()
    }

    fn close(&self, why: &str) {
        let first = self.close.send_if_modified(|reason| {
            let first = reason.is_none();
            if first {
                *reason = Some(why.to_string());
            }
            first
        });
        if first {
            tracing::info!(session = self.id, peer = %self.peer, "closing the connection: {why}");
        }
    }

    /// Resolves with the reason once the connection must close.
    pub async fn closed(&self) -> String {
        let mut close = self.close.subscribe();
        // The record (and its sender) outlives the connection's task, so
        // the wait ends only with a reason.
        let reason = close.wait_for(Option::is_some).await.map(|reason| reason.clone());
        reason.ok().flatten().unwrap_or_default()
    }

    fn info(&self) -> Option<SessionInfo> {
        let login = self.login.get()?;
        use std::sync::atomic::Ordering::Relaxed;
        Some(SessionInfo {
            id: self.id,
            user: login.user.clone(),
            tenant: login.tenant.clone(),
            plugin: login.plugin.clone(),
            peer: self.peer.to_string(),
            started: self.started.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            bytes_in: self.traffic.bytes_in.load(Relaxed),
            bytes_out: self.traffic.bytes_out.load(Relaxed),
            plugin_versions: self.versions().iter().map(|v| v.number()).collect(),
        })
    }
}
