//! The SSH front end: russh configuration, the accept loop with its session
//! limit, and per-connection watchdogs.

mod handler;
pub mod host_keys;
mod watchdog;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::auth::Users;
use crate::config::Config;
use crate::plugin::Plugin;
use crate::sftp::SftpSettings;
use crate::vfs::{FileSettings, TenantTables};

/// What every connection shares.
pub struct Shared {
    pub users: Arc<Users>,
    pub plugins: HashMap<String, Arc<Plugin>>,
    pub sftp: SftpSettings,
    pub files: FileSettings,
    /// Bytes of upload data one connection may hold in the server.
    pub upload_buffer_per_connection: usize,
    /// Files being uploaded, per tenant.
    pub pending_uploads: TenantTables,
    pub ssh: Arc<russh::server::Config>,
    pub idle_timeout: Duration,
    /// Turns true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Turns true when remaining connections must be cut (grace is over).
    pub force_close: watch::Receiver<bool>,
    pub active: AtomicUsize,
    next_session: AtomicU64,
}

impl Shared {
    pub fn new(
        config: &Config,
        users: Arc<Users>,
        plugins: HashMap<String, Arc<Plugin>>,
        keys: Vec<russh::keys::PrivateKey>,
        shutdown: watch::Receiver<bool>,
        force_close: watch::Receiver<bool>,
    ) -> Self {
        let limits = &config.limits;
        let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
        let ssh = russh::server::Config {
            server_id: russh::SshId::Standard(format!("SSH-2.0-wasftp_{}", env!("CARGO_PKG_VERSION")).into()),
            methods: handler::allowed_methods(),
            // OpenSSH probes with "none" first: answer it at once.
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            keys,
            max_auth_attempts: limits.max_auth_attempts,
            // Large enough that 64 in-flight 255 KiB reads never fill it (the
            // default of 100 deadlocks OpenSSH downloads).
            channel_buffer_size: 1024,
            window_size: 8 << 20,
            maximum_packet_size: 65535,
            inactivity_timeout: Some(idle_timeout),
            keepalive_interval: None,
            nodelay: true,
            ..Default::default()
        };
        Self {
            users,
            plugins,
            sftp: SftpSettings {
                max_handles: limits.max_handles,
                max_inflight: limits.max_inflight,
                setstat_unsupported: config.sftp.setstat_unsupported,
                backend_delay: Duration::from_millis(config.sftp.backend_delay_ms),
                shutdown_grace: Duration::from_secs(limits.shutdown_grace_secs),
            },
            files: FileSettings {
                spool_dir: config.state_dir().join("spool"),
                max_spool_bytes: config.sftp.spool_max_mib << 20,
                backend_delay: Duration::from_millis(config.sftp.backend_delay_ms),
            },
            upload_buffer_per_connection: config.sftp.upload_buffer_mib << 20,
            pending_uploads: TenantTables::default(),
            ssh: Arc::new(ssh),
            idle_timeout,
            shutdown,
            force_close,
            active: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
        }
    }
}

/// Accepts connections until shutdown; at most `max_sessions` at once.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, max_sessions: usize) {
    let sessions = Arc::new(Semaphore::new(max_sessions));
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refused connection: {max_sessions} sessions already open");
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(shared, tcp, peer).await;
            drop(permit);
        });
    }
    tracing::info!("stopped accepting connections");
}

async fn serve_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let session_id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let (stream, liveness) = watchdog::WatchedStream::new(tcp);
    let watchdog = tokio::spawn(watchdog::watch(liveness.clone(), shared.idle_timeout, shared.force_close.clone()));
    shared.active.fetch_add(1, Ordering::SeqCst);
    metrics::gauge!("wasftp_sessions_active").increment(1.0);
    // SFTP sessions running on this connection; at shutdown the connection
    // is closed as soon as they have finished.
    let (sftp_running, _) = watch::channel(0usize);
    let sftp_running = Arc::new(sftp_running);
    let handler = handler::Connection::new(shared.clone(), Some(peer), session_id, sftp_running.clone());
    match russh::server::run_stream(shared.ssh.clone(), stream, handler).await {
        Ok(mut session) => {
            let handle = session.handle();
            let mut shutdown = shared.shutdown.clone();
            let mut running = sftp_running.subscribe();
            let drained = async {
                stopped(&mut shutdown).await;
                let _ = running.wait_for(|n| *n == 0).await;
            };
            tokio::select! {
                ended = &mut session => {
                    if let Err(e) = ended {
                        tracing::debug!(session = session_id, "connection ended: {e}");
                    }
                }
                _ = drained => {
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), String::new())
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), session).await;
                }
            }
        }
        Err(e) => tracing::debug!(session = session_id, %peer, "handshake failed: {e}"),
    }
    liveness.kill();
    watchdog.abort();
    shared.active.fetch_sub(1, Ordering::SeqCst);
    metrics::gauge!("wasftp_sessions_active").decrement(1.0);
    tracing::debug!(session = session_id, "connection closed");
}

/// Resolves once `flag` turns true (or its sender is gone).
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
